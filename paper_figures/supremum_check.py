"""Does an over-specified top-K study's log-likelihood attain its supremum?

A top-1 truth fitted with K = 2 selected experts (``paper2-top1-over``) can be matched only
in the limit: where the truth's singleton cell is selected, the fit selects a second atom
whose weight must vanish, and a weight of a top-K softmax vanishes only as the gap between
the selected logits grows without bound. Two atoms of the doubled cell are selected
together, so their gates differ by a bounded amount (which sets how they split their cell)
while their common part sets how sharply the pair is switched off in the other cell.

This script measures that on the study's own tasks (the harness's data and near-truth
starts). For every start's fit it moves along the *ridge*: the common part of each group
of fitted atoms that share a true cell (the mean of their gate rows) is multiplied by
``c``, their differences held, the experts held, and ``L(c)`` is evaluated for ``c`` from
1 to 1e6. If ``L`` keeps rising to a limit that no finite ``c`` reaches, the fit's point is
not a maximum and the likelihood has none there: the limit bounds the supremum from below.
It writes ``paper_figures/results/NAME.supremum.json``: per task, every start's ``L``, its
ridge, the best start's gate scale, and the study's losses at the best fit and at the
highest point found along the ridges, which ``make_figures.py`` quotes.

Usage::

    python paper_figures/supremum_check.py paper2-top1-over
    python paper_figures/supremum_check.py paper2-top1-over --sizes 1000 10000 --replications 4
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

import gmoe  # noqa: E402
from gmoe.simulation import load_experiment  # noqa: E402
from gmoe.simulation.tasks import (  # noqa: E402
    fit_near_truth_starts,
    make_evaluation_design,
    task_data,
    task_metrics,
)

#: Multipliers of the groups' common gate part along the ridge.
RIDGE_SCALES = (1.0, 2.0, 4.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6)
#: A ridge still rises at its end when its last two points differ by more than this,
#: relative (the limit's own round-off is ~1e-12 relative).
SETTLED = 1e-9
#: A rise of ``L`` that counts (total log-likelihood units): far above the round-off
#: that separates fits of two builds with the same iterations (~1e-6).
_RISE = 1e-3


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
    """The largest norm of a group's mean gate row (slopes and intercept)."""
    theta = np.column_stack([measure.gate_coef, measure.gate_intercept])
    return max(float(np.linalg.norm(theta[g].mean(axis=0) - theta[-1])) for g in groups)


def ridge(measure, truth, X, y):
    """``L`` along the ridge of ``measure``: (values at :data:`RIDGE_SCALES`, groups)."""
    groups = cell_groups(measure, truth)
    values = [float(gmoe.conditional_log_density(ridge_point(measure, groups, c), X, y).sum())
              for c in RIDGE_SCALES]
    return values, groups


def check_task(experiment, n, rep, X_eval):
    """One task: every start's fit, its ridge, and the losses at the best fit and beyond.

    Returns
    -------
    dict
        ``starts``: per start its ``L``, its EM steps, ``L`` along its ridge and the groups;
        ``best``: the start the study keeps (largest ``L``); ``highest``: the largest ``L``
        found, over every start's ridge (at least the best start's); the losses at the best
        fit and at the highest point.
    """
    X, y, streams = task_data(experiment, n, rep)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = fit_near_truth_starts(experiment, X, y, streams, n)
    seconds = time.perf_counter() - started
    fits = [est for est, _, _ in results if est is not None]
    if not fits:
        return {"n": n, "rep": rep, "failed": [str(err) for _, _, err in results]}
    starts = []
    for est in fits:
        values, groups = ridge(est.mixing_measure_, experiment.truth, X, y)
        log_lik = float(est.lower_bound_ * n)
        losses, _ = task_metrics(experiment, est.mixing_measure_, X_eval)
        starts.append({"log_lik": log_lik, "n_iter": int(est.n_iter_), "ridge": values,
                       "groups": [g.tolist() for g in groups],
                       "losses": {k: float(v) for k, v in losses.items()},
                       # L rises along the ridge to its end: its highest value there is a
                       # limit that no finite multiplier attains.
                       "limit_only": bool(values[-1] >= max(values) - SETTLED * abs(values[-1])
                                          and values[-1] > log_lik + _RISE)})
    best = max(range(len(fits)), key=lambda j: starts[j]["log_lik"])
    top_start, top_c = max(((j, i) for j in range(len(fits))
                            for i in range(len(RIDGE_SCALES))),
                           key=lambda ji: starts[ji[0]]["ridge"][ji[1]])
    highest = max(starts[best]["log_lik"], starts[top_start]["ridge"][top_c])
    measure = fits[best].mixing_measure_
    top_measure = ridge_point(fits[top_start].mixing_measure_,
                              [np.array(g) for g in starts[top_start]["groups"]],
                              RIDGE_SCALES[top_c])
    at_top, _ = task_metrics(experiment, top_measure, X_eval)
    return {
        "n": n, "rep": rep, "fit_seconds": seconds, "starts": starts, "best": best,
        "truth_log_lik": float(gmoe.conditional_log_density(experiment.truth, X, y).sum()),
        "best_log_lik": starts[best]["log_lik"],
        "worst_log_lik": min(s["log_lik"] for s in starts),
        # c = 1 is the fit itself: a rise below 0 is round-off.
        "best_ridge_gain": max(0.0, max(starts[best]["ridge"]) - starts[best]["log_lik"]),
        "largest_ridge_gain": max(0.0, *(max(s["ridge"]) - s["log_lik"] for s in starts)),
        "highest_log_lik": highest,
        "highest_at": {"start": top_start, "multiplier": RIDGE_SCALES[top_c]},
        "starts_limit_only": sum(s["limit_only"] for s in starts),
        "best_gate_scale": common_scale(measure, [np.array(g) for g in starts[best]["groups"]]),
        "losses_at_fit": starts[best]["losses"],
        "losses_at_highest": {k: float(v) for k, v in at_top.items()},
    }


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
            if "failed" in task:
                print(f"n={n} rep={rep}: every start failed", flush=True)
                continue
            gain = task["highest_log_lik"] - task["best_log_lik"]
            d2_fit, d2_top = (task[k].get("d2", np.nan) for k in ("losses_at_fit",
                                                                  "losses_at_highest"))
            print(f"n={n:>6} rep={rep}: starts {task['worst_log_lik'] - task['best_log_lik']:+.2f}"
                  f" below the best; along the ridges: best start "
                  f"+{task['best_ridge_gain']:.3f}, any start +{task['largest_ridge_gain']:.3f}, "
                  f"highest +{gain:.3f} over the best; {task['starts_limit_only']} of "
                  f"{len(task['starts'])} rise to the end (x{RIDGE_SCALES[-1]:g}); gate scale "
                  f"{task['best_gate_scale']:.3g}; D2 {d2_fit:.4g} -> {d2_top:.4g}; "
                  f"{task['fit_seconds']:.1f} s", flush=True)
    report = {"study": args.study, "ridge_scales": list(RIDGE_SCALES), "sizes": args.sizes,
              "replications": args.replications, "gmoe_version": gmoe.__version__,
              "tasks": tasks}
    out = args.results / f"{args.study}.supremum.json"
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
