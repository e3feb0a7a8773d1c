"""Per-task times of every study and the projected wall time of its full grid on 2 cores.

For each study, runs its ``[quick]`` grid (``gmoe-sim run NAME --quick``, one worker, into
a temporary store), fits the per-task time (fit + metrics) as ``a + b n`` by least squares
over the quick tasks (scaled by the full grid's starts per task over the quick grid's), and
sums that model over the study's full grid of sizes and replications, divided by the number
of workers. The table it prints is the one in
``benchmarks/README.md``; a study whose full grid has been run (``paper_figures/results``)
also shows its measured wall time.

Usage::

    python benchmarks/project_grids.py                 # every study
    python benchmarks/project_grids.py softmax-exact topk-over --workers 2
"""

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from gmoe.simulation import load_experiment, read_rows

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "paper_figures"))

from make_figures import grid_time, read_results  # noqa: E402


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
    args = parser.parse_args(argv)
    names = args.studies or sorted(p.stem for p in (ROOT / "simulations").glob("*.toml"))
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
