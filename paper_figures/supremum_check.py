"""Does an over-specified top-K study's log-likelihood attain its supremum?

A top-1 truth fitted with K = 2 selected experts (``paper2-top1-over``) can be matched only
in the limit: where the truth's singleton cell is selected, the fit selects a second atom
whose weight must vanish, and a weight of a top-K softmax vanishes only as the gap between
the selected logits grows without bound. Two atoms of the doubled cell are selected
together, so their gates differ by a bounded amount (which sets how they split their cell)
while their common part sets how sharply the pair is switched off in the other cell.

This script measures that on the study's own tasks (the harness's data and near-truth
starts, fitted on one thread as the harness fits them). For every start's fit it moves
along the *ridge*: the common part of each group of fitted atoms that share a true cell
(the mean of their gate rows) is multiplied by ``c``, their differences held, the experts
held, and ``L(c)`` is evaluated for ``c`` from 1 to 1e6 while no gate entry exceeds 1e8.
A ridge either is flat (the fit already lies far along it), or rises to its end (``L``
approaches a limit that no finite ``c`` reaches: the fit is not a maximum, and the values
above it along the ridge are approached only in that limit), or rises and then falls
(the fit stopped below a higher point). It also records, per start, the stopping rule's
decrement at the fit (its gap, and whether it waived that gap as a kink of the top-K
likelihood), the losses of the kept fit at the highest point of its ridge and, for a
top-1 truth, where each fit's D2 comes from (:func:`atom_breakdown`: every fitted atom's
term and its share of its cell's selected mass, and the D2 with each term weighted by that
share). It writes
``paper_figures/results/NAME.supremum.json``, which ``make_figures.py`` summarises (its
text explains the ridge for a study like ``paper2-top1-over``, where a selected true cell
holds fewer atoms than the fitted K; another study would need its own words).

Usage::

    python paper_figures/supremum_check.py paper2-top1-over
    python paper_figures/supremum_check.py paper2-top1-over --sizes 1000 10000 --replications 4
"""

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

import gmoe  # noqa: E402
from gmoe._stopping import compute_newton_decrement  # noqa: E402

# The per-atom terms of the top-1 D2 are not public (voronoi_loss returns their largest
# cell's sum): atom_breakdown reads them where voronoi_loss does.
from gmoe.metrics._cells import _Problem  # noqa: E402
from gmoe.metrics._translation import _top1  # noqa: E402
from gmoe.metrics.voronoi import _resolve_rbar  # noqa: E402
from gmoe.simulation import (  # noqa: E402
    fit_near_truth_starts,
    load_experiment,
    make_evaluation_design,
    single_threaded,
    task_data,
    task_metrics,
)

#: Multipliers of the groups' common gate part along the ridge.
RIDGE_SCALES = (1.0, 2.0, 4.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
#: A rise of ``L`` that counts (total log-likelihood units), far above round-off: a ridge
#: whose highest point is within this of its start is flat, and one whose end is within
#: this of its highest point rises to its end.
RISE = 1e-3
#: The largest gate entry evaluated along a ridge.
MAX_GATE_ENTRY = 1e8


def cell_groups(measure, truth):
    """Fitted atoms grouped by the true expert nearest to theirs (slopes and intercept).

    Returns
    -------
    list of ndarray
        Indices of the fitted atoms of each true cell that holds at least one.
    """
    fitted = np.column_stack([measure.expert_coef, measure.expert_intercept])
    true = np.column_stack([truth.expert_coef, truth.expert_intercept])
    nearest = np.argmin(((fitted[:, None, :] - true[None, :, :]) ** 2).sum(axis=2), axis=1)
    return [np.flatnonzero(nearest == cell) for cell in range(true.shape[0])
            if np.any(nearest == cell)]


def ridge_point(measure, groups, c):
    """``measure`` with each group's mean gate row multiplied by ``c``, differences held.

    The means are the between-cell part of the gate (a group of one atom is its own
    mean); the differences within a group say how its atoms share their cell.

    The rows are then re-referenced to the last expert's (all logits shifted alike: the
    selection and the weights do not change), so the reference gate stays 0.
    """
    theta = np.column_stack([measure.gate_coef, measure.gate_intercept])
    moved = theta.copy()
    for group in groups:
        mean = theta[group].mean(axis=0)
        moved[group] = c * mean + (theta[group] - mean)
    moved -= moved[-1]
    return measure.replace(gate_coef=moved[:, :-1], gate_intercept=moved[:, -1])


def common_scale(measure, groups):
    """The largest norm of a group's mean gate row relative to the reference expert's."""
    theta = np.column_stack([measure.gate_coef, measure.gate_intercept])
    return max(float(np.linalg.norm(theta[g].mean(axis=0) - theta[-1])) for g in groups)


def ridge(measure, truth, X, y):
    """``L`` along the ridge of ``measure``: (scales, values, groups).

    The scales are those of :data:`RIDGE_SCALES` at which no gate entry exceeds
    :data:`MAX_GATE_ENTRY` (beyond it the logits' differences, and so ``L``, are left to
    round-off: rises of a few 1e-3 appeared at entries of ~1e13).
    """
    groups = cell_groups(measure, truth)
    scales, values = [], []
    for c in RIDGE_SCALES:
        point = ridge_point(measure, groups, c)
        if max(np.max(np.abs(point.gate_coef)), np.max(np.abs(point.gate_intercept))) \
                > MAX_GATE_ENTRY:
            break
        scales.append(c)
        values.append(float(gmoe.conditional_log_density(point, X, y).sum()))
    return scales, values, groups


def ridge_shape(values, log_lik):
    """``'rises to its end'``, ``'rises then falls'`` or ``'flat'`` (within :data:`RISE`)."""
    if max(values) <= log_lik + RISE:
        return "flat"
    return "rises to its end" if values[-1] >= max(values) - RISE else "rises then falls"


def atom_breakdown(experiment, measure, X_eval):
    """Where a top-1 truth's D2 comes from: each fitted atom's cell, share and term.

    The top-1 D2 aligns the fit's gate on the truth's, counts every fitted atom with weight
    1 (an exact top-1 fit's selected weight is always 1) and is the largest cell's sum of
    its atoms' terms.

    Parameters
    ----------
    experiment : Experiment
        The study (its truth, and the ``translation`` and ``rbar`` of its metrics).
    measure : MixingMeasure
        A fit.
    X_eval : ndarray of shape (n_points, n_features)
        The study's evaluation design, over which the shares are averaged (a share of a
        few per cent rests on few of its points when the atom's mass is concentrated).

    Returns
    -------
    dict or None
        ``cells``, ``shares`` and ``terms`` per atom; ``d2`` (the study's D2 recomputed from
        them: a check of the breakdown); ``d2_cell``, the cell that sets it; and
        ``d2_share_weighted``, the same loss with every term weighted by its atom's share.
        An atom's share is its part of its cell's selected gate mass over the design (the
        shares of a cell's atoms sum to 1; a cell the fit never selects there shares
        equally, so that its terms still count). None when the truth is not top-1.
    """
    truth, cfg = experiment.truth, experiment.metrics
    if not truth.family.selection_only():
        return None
    fit, true_side, (cells, beta1, _, _, _) = _top1(measure, truth, cfg["translation"])
    exponent = _resolve_rbar(cfg["rbar"] or None, measure.family)
    _, terms = _Problem(fit, true_side, exponent=exponent, unit_weights=True).atom_terms(beta1)
    mass = np.exp(measure.log_gate(X_eval)).mean(axis=0)
    cell_mass = np.bincount(cells, weights=mass, minlength=truth.n_experts)[cells]
    cell_size = np.bincount(cells, minlength=truth.n_experts)[cells]
    shares = np.where(cell_mass > 0, mass / np.where(cell_mass > 0, cell_mass, 1.0),
                      1.0 / cell_size)

    def per_cell(weights):
        return np.bincount(cells, weights=weights, minlength=truth.n_experts)

    return {"cells": cells.tolist(), "shares": shares.tolist(), "terms": terms.tolist(),
            "d2": float(per_cell(terms).max()), "d2_cell": int(np.argmax(per_cell(terms))),
            "d2_share_weighted": float(per_cell(shares * terms).max())}


def _checked_breakdown(experiment, measure, X_eval, d2):
    """:func:`atom_breakdown`, checked against the study's D2 where that is finite.

    A breakdown that fails (as a metric of the study's row would) is recorded as its
    error, so that one fit cannot end the check.
    """
    try:
        atoms = atom_breakdown(experiment, measure, X_eval)
    except Exception as err:  # recorded, never raised
        return {"error": f"{type(err).__name__}: {err}"}
    if atoms is not None and np.isfinite(d2) and not np.isclose(atoms["d2"], d2, rtol=1e-9):
        raise RuntimeError(f"the D2 breakdown sums to {atoms['d2']!r}, the study's D2 is "
                           f"{d2!r}: the breakdown no longer mirrors voronoi_loss.")
    return atoms


def _final_check(measure, X, y):
    """The top-K stopping rule's decrement at a fit: its gap, kink flag and smooth gap."""
    decrement = compute_newton_decrement(measure, X, y, np.ones(len(y)))
    return {"gap": float(decrement.gap), "kink": bool(decrement.kink),
            "smooth_gap": float(decrement.smooth_gap)}


def check_task(experiment, n, rep, X_eval):
    """One task: every start's fit, its ridge, and the losses at the best fit and beyond.

    Returns
    -------
    dict
        ``starts``: per start (in the study's order) its ``L``, EM steps, convergence
        flags, the stopping rule's decrement at the fit, ``L`` along its ridge, the
        ridge's shape, the groups and the study's losses (or the start's error);
        ``best``: the index of the start the study keeps (largest ``L``); the losses of
        that fit at the highest point of its own ridge; ``highest_log_lik``: the largest
        ``L`` found over every start's ridge, and whether it lies on a ridge that rises
        to its end.
    """
    X, y, streams = task_data(experiment, n, rep)
    started = time.perf_counter()
    with single_threaded(), warnings.catch_warnings():  # as the harness fits a task
        warnings.simplefilter("ignore")
        results = fit_near_truth_starts(experiment, X, y, streams, n)
    seconds = time.perf_counter() - started
    starts = []
    for index, (est, _, error) in enumerate(results):
        if est is None:
            starts.append({"start": index, "error": str(error)})
            continue
        scales, values, groups = ridge(est.mixing_measure_, experiment.truth, X, y)
        log_lik = float(est.lower_bound_ * n)
        losses, _ = task_metrics(experiment, est.mixing_measure_, X_eval)
        atoms = _checked_breakdown(experiment, est.mixing_measure_, X_eval, losses["d2"])
        starts.append({"start": index, "log_lik": log_lik, "n_iter": int(est.n_iter_),
                       "converged": bool(est.converged_),
                       "convergence_gap": float(est.convergence_gap_),
                       "final_check": _final_check(est.mixing_measure_, X, y),
                       "ridge_scales": scales, "ridge": values,
                       "ridge_shape": ridge_shape(values, log_lik),
                       "groups": [g.tolist() for g in groups],
                       "losses": {k: float(v) for k, v in losses.items()},
                       "atoms": atoms})
    fitted = [s for s in starts if "error" not in s]
    if not fitted:
        return {"n": n, "rep": rep, "fit_seconds": seconds, "starts": starts}
    best = max(fitted, key=lambda s: s["log_lik"])
    top = max(fitted, key=lambda s: max(s["ridge"]))
    kept = results[best["start"]][0].mixing_measure_
    top_c = best["ridge_scales"][int(np.argmax(best["ridge"]))]
    at_ridge_top, _ = task_metrics(
        experiment, ridge_point(kept, [np.array(g) for g in best["groups"]], top_c), X_eval)
    return {
        "n": n, "rep": rep, "fit_seconds": seconds, "starts": starts, "best": best["start"],
        "truth_log_lik": float(gmoe.conditional_log_density(experiment.truth, X, y).sum()),
        "best_log_lik": best["log_lik"],
        "worst_log_lik": min(s["log_lik"] for s in fitted),
        # c = 1 is the fit itself: a rise below 0 is round-off.
        "best_ridge_gain": max(0.0, max(best["ridge"]) - best["log_lik"]),
        "largest_ridge_gain": max(0.0, *(max(s["ridge"]) - s["log_lik"] for s in fitted)),
        "highest_log_lik": max(best["log_lik"], max(top["ridge"])),
        "highest_is_a_limit": top["ridge_shape"] == "rises to its end",
        "best_gate_scale": common_scale(kept, [np.array(g) for g in best["groups"]]),
        "losses_at_fit": best["losses"],
        "losses_at_ridge_top": {k: float(v) for k, v in at_ridge_top.items()},
    }


def _revision():
    """The checkout's git revision (with ``+changes`` if its tree differs), or None."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+changes" if dirty else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="paper2-top1-over")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 30_000])
    parser.add_argument("--replications", type=int, default=8)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    experiment = load_experiment(ROOT / "simulations" / f"{args.study}.toml")
    if experiment.start["kind"] != "near_truth":
        raise SystemExit(f"{args.study}: only studies with near-truth starts are checked.")
    X_eval = make_evaluation_design(experiment)
    tasks = []
    for n in args.sizes:
        for rep in range(args.replications):
            task = check_task(experiment, n, rep, X_eval)
            tasks.append(task)
            fitted = [t for t in task["starts"] if "error" not in t]
            if not fitted:
                print(f"n={n} rep={rep}: every start failed", flush=True)
                continue
            shapes = [t["ridge_shape"] for t in fitted]
            print(f"n={n:>6} rep={rep}: starts "
                  f"{task['worst_log_lik'] - task['best_log_lik']:+.2f} below the best; "
                  f"ridges: best start +{task['best_ridge_gain']:.3f}, any start "
                  f"+{task['largest_ridge_gain']:.3f}; "
                  f"{shapes.count('rises to its end')} rise to the end, "
                  f"{shapes.count('rises then falls')} rise then fall, "
                  f"{shapes.count('flat')} flat; kept start's final check "
                  f"{task['starts'][task['best']]['final_check']}; "
                  f"{task['fit_seconds']:.1f} s", flush=True)
    report = {"study": args.study, "ridge_scales": list(RIDGE_SCALES), "sizes": args.sizes,
              "n_starts": experiment.start["n_starts"], "rise": RISE,
              "max_gate_entry": MAX_GATE_ENTRY,
              "revision": _revision(),
              "replications": args.replications, "gmoe_version": gmoe.__version__,
              "tasks": tasks}
    out = args.results / f"{args.study}.supremum.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
