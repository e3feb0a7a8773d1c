"""Refit a study's tasks from data-driven starts: do its near-truth starts reach the best maximum?

A study's starts lie near the truth (the papers' protocol). Where the log-likelihood has a
higher maximum elsewhere, or rises towards a supremum that no finite parameter attains, a
fit from such a start can stay at the local maximum near it, and its errors are then
those of that point, not of the maximum-likelihood estimate. This script refits tasks of
the grid (their own data, regenerated) from the estimator's data-driven starts, which know
nothing of the truth (``init_params='kmeans'`` and ``'random'``, ``--n-init`` starts each),
and, for a gate with a temperature, from the grid's own fit with its gate made hard (its
temperature divided by 100); it keeps the best of them, and compares its log-likelihood and
its errors with the grid's fit (refitted by this build, whose metrics the refits share;
the report says where it is not at the committed row's maximum).
The tasks are those of the grid's smallest and largest sizes (5 % of the sizes at each end,
the ends the asymptotic check averages over; ``--replications`` of each at the largest,
where a refit costs most).

It writes ``paper_figures/results/NAME.startcheck.json``, which ``make_figures.py``
quotes.

Usage::

    python paper_figures/start_check.py activation
    python paper_figures/start_check.py activation --summarise-only   # re-summarise only
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from asymptotic_check import end_sizes  # noqa: E402
from committed_results import committed_rows  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402

from gmoe import GaussianMoERegressor  # noqa: E402
from gmoe.simulation import fitted_measure, load_experiment, run_task  # noqa: E402
from gmoe.simulation.store import code_sha256  # noqa: E402
from gmoe.simulation.tasks import (  # noqa: E402
    _fit_or_error,
    make_evaluation_design,
    task_data,
    task_metrics,
)

#: The data-driven initialisations tried, each with ``--n-init`` starts.
STRATEGIES = ("kmeans", "random")
#: A refit counts as a higher maximum when its total log-likelihood exceeds the grid fit's
#: by more than this: both stop where the Newton decrement is at most the study's tol
#: (1e-4 in every study), so two fits of one maximum differ by about 2e-4 at most.
HIGHER = 1e-3
#: The grid fit's temperature is divided by this for the sharpened start.
SHARPEN = 100.0
#: A fitted temperature below this fraction of the truth's is a hard gate: the fit is
#: heading for the boundary tau -> 0 of the parameter space.
HARD_GATE = 1e-3


def checked_tasks(rows, replications_at_large):
    """The (end, n, rep) of the checked tasks: every task of the smallest sizes, the first
    ``replications_at_large`` of each of the largest (the asymptotic check's ends)."""
    small, large = (set(end.tolist()) for end in end_sizes(sorted({r["n"] for r in rows})))
    tasks = [("small", int(r["n"]), int(r["rep"])) for r in rows if r["n"] in small]
    tasks += [("large", int(r["n"]), int(r["rep"])) for r in rows
              if r["n"] in large and r["rep"] < replications_at_large]
    return sorted(tasks, key=lambda t: (t[0] != "small", t[1], t[2]))


def _fit_from(experiment, X, y, init, n_init, seed):
    """One estimator fitted from ``init`` (a strategy or a measure); (estimator, note)."""
    with warnings.catch_warnings():
        # Whether the kept start met the stopping rule is recorded by the caller.
        warnings.simplefilter("ignore", ConvergenceWarning)
        est, _, err = _fit_or_error(GaussianMoERegressor(
            **experiment.estimator_params(), init_params=init, n_init=n_init,
            random_state=seed), X, y)
    return est, None if err is None else f"{type(err).__name__}: {err}"


def refit(experiment, n, rep, n_init, grid_fit):
    """The best data-driven fit of task ``(n, rep)``: (estimator or None, strategy, notes).

    Each strategy's starts are seeded from the task's own fit seed, so a rerun draws the
    same starts. For a gate with a temperature, one more start is the grid's own fit with
    its temperature divided by :data:`SHARPEN` (the switch where it was, made hard): from
    there EM either returns to a maximum inside the parameter space or keeps sharpening
    the gate towards a supremum at tau -> 0.
    """
    X, y, streams = task_data(experiment, n, rep)
    starts = [(strategy, strategy, n_init) for strategy in STRATEGIES]
    if grid_fit is not None and grid_fit.temperature is not None:
        starts.append(("sharpened", grid_fit.replace(
            temperature=grid_fit.temperature / SHARPEN), 1))
    best, best_strategy, notes = None, None, []
    for label, init, count in starts:
        est, note = _fit_from(experiment, X, y, init, count, streams.fit_seed)
        if note:
            notes.append(f"{label}: {note}")
        elif best is None or est.lower_bound_ > best.lower_bound_:
            best, best_strategy = est, label
    return best, best_strategy, notes


def check(name, rows, n_init, replications_at_large, log=print):
    """Refit the checked tasks; per task the grid's and the refit's numbers.

    Returns
    -------
    dict
        ``tasks``: per task its end, n, rep, the grid fit's and the refit's total
        log-likelihood, the refit's strategy, convergence and temperature (None for a gate
        without one) and every error column of both; ``columns``: those columns.
    """
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    if experiment.start["kind"] != "near_truth":
        raise SystemExit(f"{name}: its starts are data-driven already; nothing to compare.")
    by_task = {(int(r["n"]), int(r["rep"])): r for r in rows}
    columns = [c for c in rows[0] if c.startswith("pe_") or c in ("d1", "d2", "hellinger")]
    X_eval = make_evaluation_design(experiment)
    report, started = [], time.perf_counter()
    tasks = checked_tasks(rows, replications_at_large)
    for i, (end, n, rep) in enumerate(tasks):
        row = by_task[n, rep]
        # The grid's fit, refitted by this build (the committed rows of older stores do
        # not keep it): the same maximum as the committed row's, or the check says so.
        again = run_task(experiment, n, rep)
        reproduced = (again["mean_log_likelihood"] is not None
                      and row["mean_log_likelihood"] is not None
                      and abs(again["mean_log_likelihood"] - row["mean_log_likelihood"]) * n
                      <= HIGHER)
        grid_fit = fitted_measure(experiment, again)
        est, strategy, notes = refit(experiment, n, rep, n_init, grid_fit)
        # The grid's numbers as this build computes them (the same fit where reproduced;
        # the metrics of this build, which the refits' share).
        entry = {"end": end, "n": n, "rep": rep,
                 "grid_log_likelihood": None if again["mean_log_likelihood"] is None
                 else again["mean_log_likelihood"] * n,
                 "grid": {c: again.get(c) for c in columns}, "grid_reproduced": reproduced,
                 "grid_temperature": None if grid_fit is None or grid_fit.temperature is None
                 else float(grid_fit.temperature),
                 "notes": notes}
        if est is not None:
            values, metric_notes = task_metrics(experiment, est.mixing_measure_, X_eval)
            temperature = est.mixing_measure_.temperature
            entry.update(refit_log_likelihood=float(est.lower_bound_ * n), strategy=strategy,
                         converged=bool(est.converged_),
                         temperature=None if temperature is None else float(temperature),
                         refit={c: values.get(c) for c in columns})
            entry["notes"] += metric_notes
        report.append(entry)
        if (i + 1) % 20 == 0 or i + 1 == len(tasks):
            log(f"{name}: {i + 1} of {len(tasks)} tasks refitted "
                f"({time.perf_counter() - started:.0f} s)")
    return {"study": name, "result_rows": len(rows), "code_sha256": code_sha256(),
            "strategies": list(STRATEGIES), "n_init": n_init, "higher": HIGHER,
            "hard_gate": HARD_GATE,
            "truth_temperature": experiment.truth.temperature, "columns": columns,
            "tasks": report}


def summarise(report, rows=None):
    """Per end: tasks, refits at a higher maximum, their gains, hard gates, errors.

    A hard gate is a temperature below :data:`HARD_GATE` times the truth's, counted among
    the higher refits and among the grid's own fits (this build's refit of them).

    The errors' means and medians are over the tasks refitted, of the grid's fits and of
    the best point found (the refit where it is higher, else the grid's fit). With the
    study's committed ``rows``, each task's ``grid_reproduced`` is first recomputed
    against them.
    """
    tau = report.get("truth_temperature")
    if rows is not None:
        # Against the committed rows as they are now (they may have been exported again
        # since the refits ran).
        committed = {(int(r["n"]), int(r["rep"])): r["mean_log_likelihood"] for r in rows}
        for t in report["tasks"]:
            mean = committed.get((t["n"], t["rep"]))
            t["grid_reproduced"] = (mean is not None and t["grid_log_likelihood"] is not None
                                    and abs(mean * t["n"] - t["grid_log_likelihood"])
                                    <= report["higher"])
    summary = {}
    for end in ("small", "large"):
        tasks = [t for t in report["tasks"] if t["end"] == end
                 and t.get("refit_log_likelihood") is not None
                 and t["grid_log_likelihood"] is not None]
        if not tasks:
            continue
        gains = np.array([t["refit_log_likelihood"] - t["grid_log_likelihood"] for t in tasks])
        higher = [t for t, g in zip(tasks, gains, strict=True) if g > report["higher"]]
        def is_hard(temperature):
            return tau is not None and temperature is not None and temperature < HARD_GATE * tau

        hard = [t for t in higher if is_hard(t.get("temperature"))]
        best = [t["refit"] if g > report["higher"] else t["grid"]
                for t, g in zip(tasks, gains, strict=True)]

        def mean(values):
            values = [v for v in values if v is not None]
            return float(np.mean(values)) if values else None

        def median(values):
            values = [v for v in values if v is not None]
            return float(np.median(values)) if values else None

        summary[end] = {
            "tasks": len(tasks),
            "not_reproduced": sum(1 for t in tasks if not t.get("grid_reproduced", True)),
            "n_from": min(t["n"] for t in tasks),
            "n_to": max(t["n"] for t in tasks), "higher": len(higher),
            "largest_gain": float(gains.max()),
            "median_higher_gain": float(np.median(gains[gains > report["higher"]]))
            if higher else None,
            "lowest_gain": float(gains.min()), "hard_gate": len(hard),
            "grid_hard_gate": sum(1 for t in tasks if is_hard(t.get("grid_temperature"))),
            "not_converged": sum(1 for t in higher if not t["converged"]),
            "grid_mean": {c: mean(t["grid"][c] for t in tasks) for c in report["columns"]},
            "best_mean": {c: mean(b[c] for b in best) for c in report["columns"]},
            "grid_median": {c: median(t["grid"][c] for t in tasks)
                            for c in report["columns"]},
            "best_median": {c: median(b[c] for b in best) for c in report["columns"]}}
    return summary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--n-init", type=int, default=10,
                        help="starts of each data-driven initialisation (default 10)")
    parser.add_argument("--replications", type=int, default=2,
                        help="replications refitted at each of the largest sizes (default 2)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--summarise-only", action="store_true",
                        help="summarise the committed report again, without refitting")
    args = parser.parse_args(argv)
    for name in args.studies:
        rows = committed_rows(args.results, name)
        if args.summarise_only:
            report = json.loads((args.results / f"{name}.startcheck.json").read_text())
            report["result_rows"] = len(rows)
        else:
            report = check(name, rows, args.n_init, args.replications)
        report["summary"] = summarise(report, rows)
        (args.results / f"{name}.startcheck.json").write_text(json.dumps(report, indent=1)
                                                              + "\n")
        for end, s in report["summary"].items():
            print(f"{name} {end} sizes (n {s['n_from']} to {s['n_to']}): {s['higher']} of "
                  f"{s['tasks']} refits at a higher maximum (largest gain "
                  f"{s['largest_gain']:.3g}); {s['hard_gate']} of them with a hard gate")
    return 0


if __name__ == "__main__":
    sys.exit(main())
