"""Check that a study's fits reached the maximum likelihood: rerun some tasks much longer.

A rate is only as good as its fits. For each study named, this reruns a few of its tasks
(the same data and starts: a task depends only on the study's seed and ``(n, rep)``) twice:
with the study's own settings, and with ``tol`` divided by ``--factor`` (default 1000) and
``max_iter`` multiplied by it. It reports, per task, the rise of the total log-likelihood
the longer run found, the relative change of the study's headline loss (D1 or D2) and the
Newton decrement of the default fit along every move in which the log-likelihood is smooth
(for a top-K gate, the experts' and the gate's that hold its selection boundaries), and
writes ``paper_figures/results/NAME.fitcheck.json``, which ``make_figures.py`` quotes.

A longer run can take long (an over-specified top-K fit on a ridge may use all of its
``max_iter``), so every finished task is kept in ``NAME.fitcheck.partial.json`` beside it;
a rerun with the same sizes, replications, factor and build resumes from there, and the
finished check replaces it.

Usage::

    python paper_figures/check_fits.py activation softmax-exact
    python paper_figures/check_fits.py softmax-over-k3 --replications 3 --sizes 10000 100000
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from study_claims import headline_column  # noqa: E402

from gmoe._stopping import smooth_decrement  # noqa: E402
from gmoe.simulation import load_experiment, run_task  # noqa: E402
from gmoe.simulation.store import code_sha256  # noqa: E402
from gmoe.simulation.tasks import fitted_measure, task_data  # noqa: E402


def headline_loss(experiment):
    """The study's headline column (:func:`study_claims.headline_column`)."""
    return headline_column(experiment.metric_columns())


def tightened(experiment, factor):
    """The study with ``tol / factor`` and ``max_iter * factor``."""
    fit = dict(experiment.fit, tol=experiment.fit["tol"] / factor,
               max_iter=int(experiment.fit["max_iter"] * factor))
    return dataclasses.replace(experiment, fit=fit)


def smooth_gap(experiment, n, rep, row):
    """The decrement of a task's fit along every move in which ``L`` is smooth.

    For a top-K fit those are the experts' and the gate's that hold the selection
    boundaries in place (:func:`gmoe._stopping.smooth_decrement`), which the stopping
    rule's certificate at a boundary leaves out: a gate that stopped short of the
    within-selection optimum shows here, where a longer run of the same M-step may not
    move at all.
    """
    X, y, _ = task_data(experiment, n, rep)
    return float(smooth_decrement(fitted_measure(experiment, row), X, y, np.ones(n)))


def check(experiment, sizes, replications, factor, log=print, done=(), keep=None):
    """Rerun ``sizes x replications`` tasks at the study's and at the tight settings.

    ``done`` holds tasks already checked (a resumed check's), which are not rerun; ``keep``
    is called with the list of finished tasks after each one (to save them).
    """
    loss = headline_loss(experiment)
    tight = tightened(experiment, factor)
    finished = {(t["n"], t["rep"]): t for t in done}
    tasks = []
    for n in sizes:
        for rep in range(replications):
            if (int(n), rep) in finished:
                tasks.append(finished[(int(n), rep)])
                continue
            started = time.perf_counter()
            default, longer = run_task(experiment, n, rep), run_task(tight, n, rep)
            failed = [r for r in (default, longer) if r["status"] != "ok"]
            if failed:
                raise SystemExit(f"{experiment.name}: task ({n}, {rep}) failed: "
                                 f"{failed[0]['error']}")
            gain = (longer["mean_log_likelihood"] - default["mean_log_likelihood"]) * n
            change = abs(longer[loss] - default[loss]) / max(abs(longer[loss]), 1e-300)
            task = {"n": int(n), "rep": rep, "log_likelihood_gain": gain,
                    "loss": loss, "loss_default": default[loss], "loss_tight": longer[loss],
                    "relative_loss_change": change,
                    "smooth_gap": smooth_gap(experiment, n, rep, default),
                    "n_iter": [default["n_iter"], longer["n_iter"]],
                    "converged": [default["converged"], longer["converged"]]}
            tasks.append(task)
            if keep is not None:
                keep(tasks)
            log(f"  n={n:>6} rep={rep}: L gain {gain:+.2e}, {loss} {default[loss]:.5g} -> "
                f"{longer[loss]:.5g} ({change:.1e} relative), smooth decrement "
                f"{task['smooth_gap']:.1e}, EM steps {task['n_iter']}, "
                f"{time.perf_counter() - started:.1f} s")
    # The build that refitted: the page says so when it is not the grid's.
    return {"study": experiment.name, "factor": factor, "tol": experiment.fit["tol"],
            "loss": loss, "tasks": tasks, "code_sha256": code_sha256(),
            "max_log_likelihood_gain": max(t["log_likelihood_gain"] for t in tasks),
            "max_relative_loss_change": max(t["relative_loss_change"] for t in tasks),
            "max_smooth_gap": max(t["smooth_gap"] for t in tasks)}


def resumable_tasks(partial, plan):
    """The tasks a stopped check of the same plan (sizes, replications, factor, build) kept.

    A partial file of another plan is not resumed (its tasks answer another question, or
    were fitted by another build); it is replaced as the new check goes on.
    """
    if not partial.exists():
        return []
    try:
        kept = json.loads(partial.read_text())
    except ValueError:  # not JSON: a file this script did not finish writing
        return []
    if any(kept.get(key) != value for key, value in plan.items()):
        return []
    return kept.get("tasks", [])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+", help="study names (simulations/NAME.toml)")
    parser.add_argument("--sizes", type=int, nargs="+",
                        help="sizes to rerun (default: the grid's smallest, middle, largest)")
    parser.add_argument("--replications", type=int, default=4)
    parser.add_argument("--factor", type=float, default=1000.0)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    for name in args.studies:
        experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
        grid = experiment.sizes
        sizes = args.sizes or sorted({grid[0], grid[len(grid) // 2], grid[-1]})
        print(f"{name}: {len(sizes)} sizes x {args.replications} replications, tol "
              f"{experiment.fit['tol']:g} against {experiment.fit['tol'] / args.factor:g}",
              flush=True)
        args.results.mkdir(parents=True, exist_ok=True)
        partial = args.results / f"{name}.fitcheck.partial.json"
        plan = {"study": name, "sizes": [int(n) for n in sizes],
                "replications": args.replications, "factor": args.factor,
                "code_sha256": code_sha256()}
        done = resumable_tasks(partial, plan)
        if done:
            print(f"{name}: resuming from {partial.name}: {len(done)} task(s) already checked",
                  flush=True)

        def keep(tasks, plan=plan, partial=partial):
            # Written whole to a temporary file and renamed, so a stop mid-write keeps the
            # previous state.
            temporary = partial.with_suffix(".tmp")
            temporary.write_text(json.dumps({**plan, "tasks": tasks}, indent=1) + "\n")
            temporary.replace(partial)

        report = check(experiment, sizes, args.replications, args.factor,
                       log=lambda line: print(line, flush=True), done=done, keep=keep)
        (args.results / f"{name}.fitcheck.json").write_text(json.dumps(report, indent=1) + "\n")
        partial.unlink(missing_ok=True)
        print(f"{name}: largest L gain {report['max_log_likelihood_gain']:.2e}, largest "
              f"relative change of {report['loss']} {report['max_relative_loss_change']:.1e}",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
