"""Compare a study's fits with the truth's own log-likelihood.

Where the fitted model contains the truth (every exact-specified study; the
over-specified softmax ones, an atom split in two; and an over-specified top-K fit whose
selection still picks exactly the split truth's atoms on every row, which the script
verifies on each checked task's data), the maximum-likelihood estimate's
log-likelihood is at least the truth's on the same data, so a fit whose total
log-likelihood is below the truth's has not reached the maximum: its losses measure where
the optimiser stopped, not the estimator. This script regenerates each task's data (the
grid's own draws), evaluates the truth's log-likelihood on it and compares it with the
fit's (``mean_log_likelihood`` times n) at four sizes of the grid (the smallest, the first
quartile, the median and the largest). It writes
``paper_figures/results/NAME.truthcheck.json``, which ``make_figures.py`` quotes. With
``--refit`` it also refits those tasks with this build (the study's own starts) and counts
the refits below the truth's log-likelihood, to see whether a change of the estimator
reaches the maximum where the grid's build did not.

Usage::

    python paper_figures/truth_check.py topk-exact softmax-exact
    python paper_figures/truth_check.py topk-exact --refit
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import committed_rows  # noqa: E402

import gmoe  # noqa: E402
from gmoe.simulation import load_experiment, run_task  # noqa: E402
from gmoe.simulation.start import make_near_truth_start  # noqa: E402
from gmoe.simulation.store import code_sha256  # noqa: E402
from gmoe.simulation.tasks import task_data  # noqa: E402


def checked_sizes(rows):
    """The sizes a check covers: the grid's smallest, first quartile, median and largest."""
    sizes = sorted({r["n"] for r in rows})
    return sorted({sizes[0], sizes[len(sizes) // 4], sizes[len(sizes) // 2], sizes[-1]})


def _refit_log_likelihood(experiment, n, rep):
    """The task's total log-likelihood refitted by this build (-inf if its fit failed)."""
    mean = run_task(experiment, n, rep)["mean_log_likelihood"]
    return -np.inf if mean is None else mean * n


#: Largest difference, per row, between the truth's log density and that of the truth split
#: into the fit's atoms that still counts as equal: splitting an intercept by log m leaves
#: round-off (~1e-15), while a selection that picks another expert moves a row by O(1).
_SAME_DENSITY = 1e-9


def _why_the_model_may_miss_the_truth(experiment):
    """Why the fitted model cannot hold the truth, or None when it may.

    The comparison holds only where the truth is one of the fitted model's points. That
    needs the truth's family and selection rule and at least its number of experts; whether
    an over-specified fit holds it is then decided on the data (:func:`embedded_truth`).
    """
    fit, truth = experiment.fit, experiment.truth
    if fit["gating"] != truth.gating:
        return f"the fit's gate ({fit['gating']}) is not the truth's ({truth.gating})"
    if fit["n_experts"] < truth.n_experts:
        return (f"the fit has fewer experts ({fit['n_experts']}) than the truth "
                f"({truth.n_experts})")
    if fit["gating"] == "topk" and fit["topk_selection"] != truth.family.selection:
        return (f"the fit selects by {fit['topk_selection']!r}, the truth by "
                f"{truth.family.selection!r}")
    return None


def embedded_truth(experiment):
    """The truth as a point of the fitted model, and the assignment that gives it.

    Each true atom is copied onto the fitted atoms assigned to it (the study's start
    assignment where it gives one, else the extra atoms on the last true atom), every copy
    with the true expert and gate slope and the true gate intercept minus ``c log m``
    (``m`` the copies, ``c`` the temperature where the gate has one): a near-truth start
    without noise. For a dense gate its density is the truth's everywhere. For a top-K gate
    it is where the fit's ``K`` selections pick, on each row, every copy of the truth's
    selected atoms and nothing else (an over-specified top-K fit whose added atom is always
    selected with its twin); elsewhere the selection picks another expert and the density
    differs. :func:`check` compares the two on every checked task's data.

    Returns
    -------
    (MixingMeasure, list of int)
    """
    fit, truth = experiment.fit, experiment.truth
    k, k_true = fit["n_experts"], truth.n_experts
    assignment = experiment.start.get("assignment") or (
        list(range(k_true)) + [k_true - 1] * (k - k_true))
    measure = make_near_truth_start(
        truth, k, 1, random_state=0, assignment=assignment, gate_noise=0.0,
        expert_noise=0.0, var_noise=0.0, protocol="even",
        top_k=fit["top_k"] if fit["gating"] == "topk" else None)
    return measure, [int(a) for a in assignment]


def check(name, rows, refit=False):
    """Per checked size: the fits' log-likelihood minus the truth's, task by task.

    Parameters
    ----------
    name : str
        A study whose fitted model contains the truth: exact-specified, an
        over-specified softmax fit, or an over-specified top-K fit whose selection picks
        the split truth's atoms on every checked task's data (else SystemExit).
    rows : list of dict
        Its committed rows.
    refit : bool, default=False
        Also refit each checked task with this build (the grid's own protocol).

    Returns
    -------
    dict
        ``sizes``: per checked n, the tasks, how many fits are below the truth's
        log-likelihood, and the differences' least, median and largest; with ``refit``,
        ``refit_below`` and ``refit_least`` for this build's fits, and ``refit_code_sha256``;
        ``assignment`` (:func:`embedded_truth`) and ``largest_density_difference``, the
        largest per-row difference of its log density from the truth's.
    """
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    reason = _why_the_model_may_miss_the_truth(experiment)
    if reason:
        raise SystemExit(f"{name}: not checked: {reason}, so its maximum can be below the "
                         "truth's log-likelihood.")
    held, assignment = embedded_truth(experiment)
    checked = checked_sizes(rows)
    report, largest_difference = [], 0.0
    for n in checked:
        gaps, refit_gaps = [], []
        for row in (r for r in rows if r["n"] == n and r["mean_log_likelihood"] is not None):
            X, y, _ = task_data(experiment, n, int(row["rep"]))
            truth_rows = gmoe.conditional_log_density(experiment.truth, X, y)
            difference = float(np.max(np.abs(gmoe.conditional_log_density(held, X, y)
                                              - truth_rows)))
            if not difference <= _SAME_DENSITY:
                raise SystemExit(
                    f"{name}: not checked: the fitted model does not hold the truth on the "
                    f"data of n = {n}, rep = {row['rep']}: the truth split into the fit's "
                    f"atoms (assignment {assignment}, each copy's gate intercept lowered by "
                    f"log m) differs from the truth's log density by {difference:.3g} on a "
                    "row (its selection picks another expert there), so the maximum can be "
                    "below the truth's log-likelihood.")
            largest_difference = max(largest_difference, difference)
            truth = float(truth_rows.sum())
            gaps.append(row["mean_log_likelihood"] * n - truth)
            if refit:
                refit_gaps.append(_refit_log_likelihood(experiment, n, int(row["rep"]))
                                  - truth)
        if not gaps:
            raise SystemExit(f"{name}: no task at n = {n} has a fit (every fit failed); "
                             "nothing to compare with the truth there.")
        gaps = np.array(gaps)
        size = {"n": int(n), "tasks": int(gaps.size), "below": int(np.sum(gaps < 0)),
                "least": float(gaps.min()), "median": float(np.median(gaps)),
                "largest": float(gaps.max())}
        if refit:
            size.update(refit_below=int(np.sum(np.array(refit_gaps) < 0)),
                        refit_least=float(np.min(refit_gaps)))
        report.append(size)
    result = {"study": name, "result_rows": len(rows), "sizes": report,
              "assignment": assignment, "largest_density_difference": largest_difference}
    if refit:
        result["refit_code_sha256"] = code_sha256()
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--refit", action="store_true",
                        help="also refit the checked tasks with this build")
    args = parser.parse_args(argv)
    for name in args.studies:
        rows = committed_rows(args.results, name)
        report = check(name, rows, refit=args.refit)
        (args.results / f"{name}.truthcheck.json").write_text(json.dumps(report, indent=1)
                                                              + "\n")
        for size in report["sizes"]:
            print(f"{name} n = {size['n']}: {size['below']} of {size['tasks']} fits below "
                  f"the truth's log-likelihood; fit minus truth {size['least']:.1f} to "
                  f"{size['largest']:.1f} (median {size['median']:.2f})"
                  + (f"; refitted by this build: {size['refit_below']} below (least "
                     f"{size['refit_least']:.1f})" if "refit_below" in size else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
