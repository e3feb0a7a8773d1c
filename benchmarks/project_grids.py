"""Per-task times of every study and the projected wall time of its full grid on 2 cores.

For each study, runs its ``[quick]`` grid (``gmoe-sim run NAME --quick``, one worker, into
a temporary store), fits the per-task time (fit + metrics) as ``a + b n`` by least squares
over the quick tasks (scaled by the full grid's starts per task over the quick grid's), and
sums that model over the study's full grid of sizes and replications, divided by the number
of workers. The table it prints is the one in
``benchmarks/README.md``; a study whose full grid has been run (``paper_figures/results``)
also shows its measured wall time.

The quick grids stop at small sizes, and a fit's EM steps can grow with ``n`` faster than
the line assumes (the over-specified top-K fits: tens of steps at n = 2e4, hundreds at
1e5). ``--sampled-tasks K`` times K tasks of the full grid itself instead (in this
process, one thread, each time printed as it is measured): sizes evenly spread over the
grid's list of sizes, the i-th with replication i (modulo the grid's replications), so
that the sample spans the grid's sizes and several replications. The projection is their
mean time times the grid's tasks over the workers, with the t-interval of the mean (which
covers the choice of tasks, not the machine's load).

Usage::

    python benchmarks/project_grids.py                 # every study
    python benchmarks/project_grids.py softmax-exact topk-over --workers 2
    python benchmarks/project_grids.py topk-over --sampled-tasks 10
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

from gmoe.simulation import load_experiment, read_rows, run_task

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "paper_figures"))

from committed_results import read_results  # noqa: E402
from make_figures import grid_time  # noqa: E402


def quick_times(name, tmp):
    """(n, seconds) of every task of the study's quick grid, run on one worker."""
    db = Path(tmp) / f"{name}.sqlite"
    subprocess.run([sys.executable, "-m", "gmoe.simulation.cli", "run", name, "--quick",
                    "--n-jobs", "1", "--db", str(db), "--out", str(Path(tmp) / name),
                    "--no-progress"], check=True, cwd=ROOT, capture_output=True)
    rows, _ = read_rows(db)
    n = np.array([r["n"] for r in rows], dtype=float)
    seconds = np.array([(r["fit_seconds"] or 0.0) + (r["metric_seconds"] or 0.0)
                        for r in rows])
    return n, seconds


def sampled_times(experiment, k, log=None):
    """(n, rep, seconds) of ``k`` tasks of the full grid, timed one after the other.

    The sizes are evenly spread over the grid's list of sizes; the i-th sampled task takes
    replication ``i`` (modulo the grid's replications). A task's seconds are its fit's and
    its metrics' (as the grid's stores record them; drawing the data is not counted). A
    task whose fit failed stops the sampling; one whose metrics failed still counts, as
    it would in the grid.

    Raises
    ------
    ValueError
        If ``k`` exceeds the grid's number of sizes.
    """
    sizes = np.asarray(experiment.sizes)
    if k > sizes.size:
        raise ValueError(f"sampled tasks: expected at most the grid's {sizes.size} sizes, "
                         f"got {k}")
    picked = np.round(np.linspace(0, sizes.size - 1, k)).astype(int)
    times = []
    for i, index in enumerate(picked):
        n, rep = int(sizes[index]), i % experiment.replications
        row = run_task(experiment, n, rep)
        if row["status"] == "fit_failed":
            raise SystemExit(f"{experiment.name}: task ({n}, {rep}) failed: {row['error']}")
        times.append((n, rep, (row["fit_seconds"] or 0.0) + (row["metric_seconds"] or 0.0)))
        if log is not None:
            log(f"  {experiment.name} n={n:>6} rep={rep:>2}: {times[-1][2]:8.2f} s")
    return times


def project_from_sample(name, k, workers):
    """Print the sampled tasks' times and the full grid's projected wall time.

    The interval is the t-interval of the mean task time, read as if the sampled tasks
    were drawn at random from the grid: it covers which tasks were timed, not the machine's
    load or two workers sharing it.
    """
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    times = sampled_times(experiment, k, log=lambda line: print(line, flush=True))
    seconds = np.array([t for _, _, t in times])
    tasks = len(experiment.sizes) * experiment.replications
    half = (stats.t.ppf(0.975, seconds.size - 1) * seconds.std(ddof=1)
            / np.sqrt(seconds.size))
    scale = tasks / workers / 3600
    low, high = max(seconds.mean() - half, 0.0) * scale, (seconds.mean() + half) * scale
    print(f"{name}: mean {seconds.mean():.3g} s per task over {seconds.size} sampled tasks; "
          f"{tasks} tasks on {workers} workers: {seconds.mean() * scale:.3g} h "
          f"[{low:.3g}, {high:.3g}] (95 % t-interval of the mean, floored at 0)", flush=True)
    return seconds.mean() * scale, (low, high)


def _starts_per_task(experiment):
    """Fits per task: near-truth starts, or the estimator's ``n_init`` for a data start."""
    return experiment.start.get("n_starts") or experiment.start.get("n_init") or 1


def _measured_seconds(name):
    """The committed grid's run time (``make_figures.grid_time``), or None."""
    rows, info = read_results(ROOT / "paper_figures" / "results", name)
    return None if rows is None else grid_time(rows, info)[0]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="*")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sampled-tasks", type=int, metavar="K",
                        help="time K tasks of each full grid instead of its quick grid")
    args = parser.parse_args(argv)
    names = args.studies or sorted(p.stem for p in (ROOT / "simulations").glob("*.toml"))
    if args.sampled_tasks is not None:
        if args.sampled_tasks < 2:
            parser.error(f"--sampled-tasks: expected at least 2 (an interval needs two), got "
                         f"{args.sampled_tasks}")
        for name in names:
            try:
                project_from_sample(name, args.sampled_tasks, args.workers)
            except ValueError as err:
                parser.error(f"--sampled-tasks: {name}: {err}")
        return
    print(f"{'study':<24} {'tasks':>6} {'s/task @1e4':>11} {'s/task @1e5':>11} "
          f"{'projected':>10} {'measured':>9}")
    total = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            n, seconds = quick_times(name, tmp)
            slope, intercept = np.polyfit(n, seconds, 1)
            experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
            # A [quick] grid may fit fewer starts per task than the full one; a task's time
            # is about proportional to its starts.
            starts = _starts_per_task(experiment) / _starts_per_task(
                experiment.quick_variant())
            slope, intercept = slope * starts, intercept * starts
            grid = np.repeat(np.asarray(experiment.sizes, dtype=float),
                             experiment.replications)
            projected = float(np.sum(np.maximum(intercept + slope * grid, 0.0))) / args.workers
            total += projected
            measured = _measured_seconds(name)
            print(f"{name:<24} {grid.size:>6} {intercept + slope * 1e4:>11.3f} "
                  f"{intercept + slope * 1e5:>11.3f} {projected / 60:>8.1f} m "
                  f"{'-' if measured is None else f'{measured / 60:.1f} m':>9}", flush=True)
    print(f"all studies: {total / 3600:.2f} h projected on {args.workers} workers")


if __name__ == "__main__":
    main()
