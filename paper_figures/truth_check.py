"""Compare a study's fits with the truth's own log-likelihood.

Where the fitted model contains the truth, the maximum-likelihood estimate's
log-likelihood is at least the truth's on the same data, so a fit whose total
log-likelihood is below the truth's has not reached the maximum: its losses measure where
the optimiser stopped, not the estimator. Every exact-specified study's model contains
the truth; an over-specified one contains it where the truth split among the fitted atoms
(each true atom copied onto the atoms assigned to it, each copy's gate intercept lowered
by log m, m its copies) is a point of the fitted model with the truth's density. That
holds for a dense gate, and for a top-K gate only where the fit's selection picks exactly
the copies of the truth's selected atoms on every row: the script verifies it on each
checked task's data, and refuses a study where it fails. This script regenerates each
task's data (the grid's own draws), evaluates the truth's log-likelihood on it and
compares it with the fit's (``mean_log_likelihood`` times n) at four sizes of the grid
(the smallest, the first quartile, the median and the largest). It writes
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
from gmoe.gates import gating_options  # noqa: E402
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
    needs the truth's family, selection rule and activation, at least its number of
    experts, and, for an activation gate that holds its temperature rather than learning
    it, the truth's temperature (the gate's scale is fixed, so no other parameter makes up
    for another one). Whether an over-specified fit holds it is then decided on the data
    (:func:`embedded_truth`, :func:`check`).
    """
    fit, truth = experiment.fit, experiment.truth
    if fit["gating"] != truth.gating:
        return f"the fit's gate ({fit['gating']}) is not the truth's ({truth.gating})"
    if fit["n_experts"] < truth.n_experts:
        return (f"the fit has fewer experts ({fit['n_experts']}) than the truth "
                f"({truth.n_experts})")
    options = truth.family.options()
    for key, what in (("topk_selection", "selects by"), ("activation", "has the activation")):
        if key in options and fit[key] != options[key]:
            return f"the fit {what} {fit[key]!r}, the truth {options[key]!r}"
    if fit["learn_temperature"] is False:  # None: the fitted gate holds tau in any case
        noise = experiment.start.get("temperature_noise") or 0.0
        held = truth.temperature if fit["temperature"] is None else fit["temperature"]
        if noise > 0 or held != truth.temperature:
            return (f"the fit holds its temperature (at {held!r}, start noise {noise!r}) "
                    f"instead of learning it, and the truth's is {truth.temperature!r}")
    return None


def embedded_truth(experiment):
    """The truth as a point of the fitted model, and the assignment that gives it.

    Each true atom is copied onto the fitted atoms assigned to it, every copy with the true
    expert and gate slope and the true gate intercept minus ``c log m`` (``m`` the copies,
    ``c`` the temperature where the gate has one): a near-truth start without noise, in
    the fit's gating family. The assignment is the study's start assignment where it fixes
    one, else the extra atoms on the last true atom. For a dense gate the density is the
    truth's everywhere, whatever the assignment. For a top-K gate it is where the fit's
    ``K`` selections pick, on each row, every copy of the truth's selected atoms and
    nothing else (an over-specified top-K fit whose added atom is always selected with its
    twin); elsewhere the selection picks another expert and the density differs (another
    assignment might not: a study without one is then refused where it need not be).
    :func:`check` compares the two on every checked task's data. A linear temperature
    gate keeps the truth's temperature: the fit's held one gives the same density with
    the gate rescaled.

    Returns
    -------
    measure : MixingMeasure
    assignment : list of int
    from_start : bool
        Whether the assignment is the study's own (else one chosen here).
    """
    fit, truth = experiment.fit, experiment.truth
    k, k_true = fit["n_experts"], truth.n_experts
    assignment = experiment.start.get("assignment")
    from_start = assignment is not None
    if not from_start:
        assignment = list(range(k_true)) + [k_true - 1] * (k - k_true)
    measure = make_near_truth_start(truth, k, 1, random_state=0, assignment=assignment,
                                    gate_noise=0.0, expert_noise=0.0, var_noise=0.0,
                                    protocol="even")
    # Not Experiment.fit_family: the grid's own build, which may predate it, runs this too.
    options = {key: fit[key] for key in gating_options() if fit.get(key) is not None}
    measure = measure.replace(gating=fit["gating"], **options)
    return measure, [int(a) for a in assignment], from_start


def check(name, rows, refit=False):
    """Per checked size: the fits' log-likelihood minus the truth's, task by task.

    Parameters
    ----------
    name : str
        A study whose fitted model contains the truth (else SystemExit: see
        :func:`_why_the_model_may_miss_the_truth` and :func:`embedded_truth`).
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
        ``assignment``, ``assignment_from_start`` and ``intercept_temperature`` (the
        ``c`` of :func:`embedded_truth`, None for a gate without a temperature) and
        ``largest_density_difference``, the largest per-row difference of its log density
        from the truth's.
    """
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    reason = _why_the_model_may_miss_the_truth(experiment)
    if reason:
        raise SystemExit(f"{name}: not checked: {reason}, so its maximum can be below the "
                         "truth's log-likelihood.")
    held, assignment, from_start = embedded_truth(experiment)
    checked = checked_sizes(rows)
    report, largest_difference = [], 0.0
    for n in checked:
        gaps, refit_gaps = [], []
        for row in (r for r in rows if r["n"] == n and r["mean_log_likelihood"] is not None):
            X, y, _ = task_data(experiment, n, int(row["rep"]))
            where = f"the data of n = {n}, rep = {row['rep']}"
            floor = experiment.fit["reg_var"] * float(np.var(y))
            if np.min(experiment.truth.expert_var) < floor:
                raise SystemExit(
                    f"{name}: not checked: a true variance is below the fit's variance "
                    f"floor ({floor:.3g}, reg_var times the variance of y) on {where}, so "
                    "the truth is not a point of the fitted model.")
            truth_rows = gmoe.conditional_log_density(experiment.truth, X, y)
            difference = float(np.max(np.abs(gmoe.conditional_log_density(held, X, y)
                                              - truth_rows)))
            if not difference <= _SAME_DENSITY:
                cause = (" (the fit's selection picks another expert there)"
                         if held.gating == "topk" else "")
                raise SystemExit(
                    f"{name}: not checked: the fitted model does not hold the truth on "
                    f"{where}: the truth split onto the fit's atoms (assignment "
                    f"{assignment}, each copy's gate intercept lowered by log m, times the "
                    "temperature for a gate with one) differs from the truth's log density "
                    f"by {difference:.3g} on a row{cause}, so the maximum can be below the "
                    "truth's log-likelihood.")
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
              "assignment": assignment, "assignment_from_start": from_start,
              # The copies' intercepts are lowered by this times log m (None: by log m).
              "intercept_temperature": (float(experiment.truth.temperature)
                                        if experiment.truth.family.uses_temperature
                                        else None),
              "largest_density_difference": largest_difference}
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
