"""Where a top-1 fit puts its selection boundary, against the design points around the truth's.

With one selected expert a row's density depends on the gate only through which expert it
selects, so the log-likelihood is constant while the boundary moves between two
neighbouring design points: the maximum-likelihood boundary is an interval between
neighbouring design points, not a point. With well-separated experts it is nearly always
the interval around the true boundary, whose width is on average ``2 / (n f(x*))`` for a
design density ``f`` (twice the mean spacing there: the interval that covers a given point
is length-biased), the change-point rate ``n^-1``; where in the interval a fit stops is
left to its start and its path.

For a study with a two-expert top-1 truth on one feature, this script refits the tasks of
four sizes of the grid (the smallest, the first quartile's, the median's and the largest)
from their own data and starts, and records for each: the interval of design points
around the true boundary, whether the fitted boundary and the start's lie in it, whether
the fit kept its start's boundary, and the fit's boundary error against the interval's
width (and against the error of the interval's midpoint). It compares each refit's
boundary error and log-likelihood with the committed ones (a build other than the grid's
can stop at another point of the same interval) and writes
``paper_figures/results/NAME.boundarycheck.json``, which ``make_figures.py`` quotes.

Usage::

    python paper_figures/boundary_check.py paper2-top1-exact
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
from truth_check import checked_sizes  # noqa: E402

from gmoe.metrics import boundary_error  # noqa: E402
from gmoe.simulation import load_experiment  # noqa: E402
from gmoe.simulation.rates import fit_rate  # noqa: E402
from gmoe.simulation.store import code_sha256  # noqa: E402
from gmoe.simulation.tasks import fit_near_truth_starts, make_evaluation_design, task_data  # noqa: E402

#: A refit's boundary is the grid's when its boundary error matches the committed one this
#: closely (relative): the same parameters give the same error up to a build's rounding.
_SAME_FIT_RTOL = 1e-6


def _why_not_checked(experiment):
    """Why the study's boundary cannot be checked here, or None when it can."""
    truth, fit = experiment.truth, experiment.fit
    if truth.gating != "topk" or truth.family.top_k != 1:
        return "its truth is not a top-1 gate"
    if truth.n_experts != 2 or fit["n_experts"] != 2 or fit["gating"] != "topk" \
            or fit["top_k"] != 1:
        return "the check covers a two-expert top-1 truth fitted by a two-expert top-1 model"
    if experiment.design["n_features"] != 1:
        return "the check locates boundaries on one feature"
    if experiment.start["kind"] != "near_truth":
        return "the check reads the start of a near-truth study"
    if truth.family.selection != "affine" or fit["topk_selection"] != "affine":
        return "the check locates the boundary of an affine selection (beta1 x + beta0)"
    return None


def selection_boundary(measure):
    """Where a two-expert top-1 gate switches experts on one feature.

    Parameters
    ----------
    measure : MixingMeasure
        Two experts, one feature, an affine top-1 selection.

    Returns
    -------
    float
        The point where the two selection scores ``beta1_j x + beta0_j`` tie (infinite
        when their slopes are equal: no boundary).
    """
    slope = measure.gate_coef[0, 0] - measure.gate_coef[1, 0]
    intercept = measure.gate_intercept[0] - measure.gate_intercept[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(-intercept / slope)


def check_task(experiment, n, rep, X_eval, true_boundary):
    """One task refitted: the interval around the true boundary and where the fit sits.

    Parameters
    ----------
    experiment : Experiment
    n, rep : int
        The task.
    X_eval : ndarray
        The evaluation design of the study's boundary column.
    true_boundary : float

    Returns
    -------
    dict or None
        The interval's width, the fit's and the midpoint's errors, whether the fit's and
        the start's boundaries lie in the interval, whether the fit kept its start's, the
        fit's boundary column and log-likelihood; None when every start failed, the fit
        has no boundary, or no design point lies on one side of the truth's.
    """
    X, y, streams = task_data(experiment, n, rep)
    results = fit_near_truth_starts(experiment, X, y, streams, n)
    fits = [est for est, _, _ in results if est is not None]
    if not fits:
        return None
    best = max(fits, key=lambda e: e.lower_bound_)
    fitted, start = best.mixing_measure_, best.init_params
    at_fit, at_start = selection_boundary(fitted), selection_boundary(start)
    x = np.sort(X[:, 0])
    right = int(np.searchsorted(x, true_boundary))
    if right == 0 or right == x.size or not np.isfinite(at_fit):
        return None
    low, high = float(x[right - 1]), float(x[right])
    return {"rep": int(rep), "width": high - low,
            "error": abs(at_fit - true_boundary),
            "midpoint_error": abs(0.5 * (low + high) - true_boundary),
            "fit_inside": bool(low < at_fit < high),
            "start_inside": bool(low < at_start < high),
            # Kept: equal but for the rounding of a gate the fit rescaled (top-1 leaves
            # the gate's scale free).
            "kept_start": bool(np.isclose(at_fit, at_start, rtol=1e-12, atol=0.0)),
            "metric": boundary_error(fitted, experiment.truth, X_eval, kind="hausdorff"),
            "log_likelihood": float(best.lower_bound_) * n}


def _summary(n, tasks, skipped):
    """One checked size's counts and means (error over width: the mean of the ratios)."""
    kept = [t for t in tasks if t["kept_start"]]
    moved = [t for t in tasks if not t["kept_start"]]
    elsewhere = [t for t in tasks if not t["same_as_grid"]]

    def mean(key):
        return float(np.mean([t[key] for t in tasks]))

    def mean_ratio(among):
        return float(np.mean([t["error"] / t["width"] for t in among])) if among else None

    return {
        "n": int(n), "tasks": len(tasks), "skipped": skipped,
        "fit_inside": sum(t["fit_inside"] for t in tasks),
        "start_inside": sum(t["start_inside"] for t in tasks),
        "kept_start": len(kept),
        "elsewhere_than_grid": len(elsewhere),
        "elsewhere_inside": sum(t["fit_inside"] for t in elsewhere),
        "elsewhere_log_likelihood_change": (
            float(max(abs(t["log_likelihood_change"]) for t in elsewhere))
            if elsewhere else None),
        "mean_width": mean("width"), "mean_error": mean("error"),
        "mean_midpoint_error": mean("midpoint_error"),
        "error_over_width": mean_ratio(tasks),
        "error_over_width_kept": mean_ratio(kept),
        "error_over_width_moved": mean_ratio(moved),
    }


def check(name, rows):
    """Per checked size, the fits' boundaries against the design points around the truth's.

    Parameters
    ----------
    name : str
        A study with a two-expert top-1 truth on one feature.
    rows : list of dict
        Its committed rows (their ``boundary`` column is compared with the refits').

    Returns
    -------
    dict
        ``sizes``: per checked n, the tasks checked and skipped, how many fitted and
        start boundaries lie in the interval around the truth's, how many fits kept their
        start's, the means of the interval's width, the fit's error, the midpoint's error
        and the error over the width, and the refits whose boundary error is not the
        grid's (how many of them lie in the interval, and the largest change of the
        log-likelihood among them); ``slopes``: log-log slopes over the checked sizes of
        the mean width, error and midpoint error.
    """
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    reason = _why_not_checked(experiment)
    if reason:
        raise SystemExit(f"{name}: not checked: {reason}.")
    if experiment.metrics.get("boundary_error") != "hausdorff":
        raise SystemExit(f"{name}: not checked: its boundary column is not the 'hausdorff' "
                         "distance this check compares with.")
    true_boundary = selection_boundary(experiment.truth)
    X_eval = make_evaluation_design(experiment)
    committed = {(r["n"], int(r["rep"])): r for r in rows}
    checked = checked_sizes(rows)
    report, checked_tasks = [], []
    for n in checked:
        tasks, skipped = [], 0
        for rep in sorted(rep for size, rep in committed if size == n):
            task = check_task(experiment, n, rep, X_eval, true_boundary)
            grid = committed[(n, rep)]
            if task is None or grid.get("boundary") is None:
                skipped += 1
                continue
            task["same_as_grid"] = bool(np.isclose(task["metric"], grid["boundary"],
                                                   rtol=_SAME_FIT_RTOL, atol=0.0))
            task["log_likelihood_change"] = (task["log_likelihood"]
                                             - grid["mean_log_likelihood"] * n)
            tasks.append(task)
            checked_tasks.append(dict(task, n=int(n)))
        if not tasks:
            raise SystemExit(f"{name}: no task at n = {n} could be checked.")
        report.append(_summary(n, tasks, skipped))
    # The rate of each mean over the checked sizes (least squares, log-log).
    slopes = {key: fit_rate(checked_tasks, key).slope
              for key in ("width", "error", "midpoint_error")}
    return {"study": name, "result_rows": len(rows), "true_boundary": float(true_boundary),
            "code_sha256": code_sha256(), "sizes": report, "slopes": slopes}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    for name in args.studies:
        rows = committed_rows(args.results, name)
        report = check(name, rows)
        (args.results / f"{name}.boundarycheck.json").write_text(
            json.dumps(report, indent=1) + "\n")
        for s in report["sizes"]:
            print(f"{name} n = {s['n']}: fitted boundary inside the truth's interval in "
                  f"{s['fit_inside']} of {s['tasks']}, start inside in {s['start_inside']}, "
                  f"start kept in {s['kept_start']}; mean width {s['mean_width']:.3g}, mean "
                  f"error {s['mean_error']:.3g} ({s['error_over_width']:.2f} of the width), "
                  f"midpoint error {s['mean_midpoint_error']:.3g}; refits whose boundary is not "
                  f"the grid's: {s['elsewhere_than_grid']}"
                  + (f" (log-likelihood changed by at most "
                     f"{s['elsewhere_log_likelihood_change']:.2g})"
                     if s["elsewhere_than_grid"] else ""))
        print(f"{name}: slopes over the checked sizes: "
              + ", ".join(f"{k} {v:+.3f}" for k, v in report["slopes"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
