"""How well a top-K fit's gate compares the cells its truth selects together.

A top-K truth selects ``K`` of its experts at each ``x``, and the data identify the
difference of two cells' logits only where it selects both: there the ratio of their gate
weights is ``exp(l_j(x) - l_m(x))``. Two cells the truth never selects together are
compared only through other cells.

The per-cell gate columns of a study (``pe_gate_intercept_j``, ``pe_gate_coef_j``,
``pe_weight_j``) measure each cell against the cell the alignment's translation fixes (the
one holding most of the truth's mass). When the truth never selects a cell together with
that reference, its columns measure a comparison the data make only through other cells.

This script measures the gate where the data see it, on the study's stored fits (gmoe's
store format 3 keeps every fit in the results' ``fitted`` column): for every pair of true
cells the truth selects together somewhere on the evaluation design, the mean over those
points of

    | (L_j(x) - L_m(x)) - (l*_j(x) - l*_m(x)) |,

``L_j`` the log-sum-exp of the logits of the fitted atoms in cell ``j`` (the cells of
:func:`gmoe.metrics.parameter_errors`, as in the study's columns) and ``l*_j`` the truth's
logit: the error of the fitted log-ratio of the two cells' total gate weights. It does not
depend on the alignment's translation (only on the cells). The logits are compared, not the
fitted gate: where the fit selects every atom of both cells the two are the same, and a
fitted selection boundary a little off the truth's does not count as an infinite error.
A fit that leaves a cell without an atom has no log-weight for it; the pairs of that cell
leave the fit out, and the report counts it.

It fits the rate of each pair's mean error (least squares on log n, with its 95 %
t-interval, as the rate tables' mean rows), over all sizes and over the larger half of
them, and the same for the study's gate columns of every cell the truth never selects
together with the reference, which the page sets beside them.

It writes ``paper_figures/results/NAME.coselected.json``, which ``make_figures.py``
quotes. Runs in seconds (it refits nothing).

Usage::

    python paper_figures/coselected_gates.py topk-over
"""

import argparse
import json
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import committed_rows  # noqa: E402
from page_format import fmt_report_rate  # noqa: E402

from gmoe.metrics import parameter_errors  # noqa: E402
from gmoe.simulation import fitted_measure, load_experiment, make_evaluation_design  # noqa: E402
from gmoe.simulation.columns import _aligned_fields, study_setting  # noqa: E402
from gmoe.simulation.rates import fit_rate  # noqa: E402

#: The layout of the report this script writes (make_figures refuses another).
FORMAT = 2
#: The study's per-cell gate columns, reported for the cells never selected with the
#: reference.
GATE_COLUMNS = ("pe_gate_intercept", "pe_gate_coef", "pe_weight")


def check_study(experiment):
    """Raise SystemExit unless the study's truth selects K >= 2 experts with affine logits.

    A top-1 truth selects one expert at each ``x``: no two cells are ever compared, and
    only its selection regions are identified. A dense gate selects every pair everywhere.
    """
    family = experiment.truth.family
    if family.name != "topk" or family.top_k < 2:
        raise SystemExit(f"{experiment.name}: the truth's gate is {family.describe()}; this "
                         "analysis is for a top-K truth with K >= 2 (a dense gate selects "
                         "every pair of cells everywhere, a top-1 gate none).")


def truth_logits(experiment, X):
    """The truth's gate logits on ``X``, shape ``(n_points, k*)``."""
    truth = experiment.truth
    return X @ truth.gate_coef.T + truth.gate_intercept


def coselected_pairs(experiment, X):
    """Every pair of true cells and the points of ``X`` where the truth selects both.

    Returns
    -------
    dict of (int, int) to ndarray of bool
        For every pair ``j < m``, the mask of the design points whose active set holds both.
    """
    truth = experiment.truth
    active = truth.family.active_mask(X, truth.gate_coef, truth.gate_intercept)
    return {(j, m): active[:, j] & active[:, m]
            for j, m in combinations(range(truth.n_experts), 2)}


def reference_cell(experiment):
    """The cell the alignment's translation fixes in the study's columns (None if none).

    The harness's own rule (``gmoe.simulation.columns``), so that the page names the cell
    the columns are measured against.
    """
    _, cell_atoms = study_setting(experiment)
    cell, _ = _aligned_fields(experiment, cell_atoms, experiment.metrics["scales"][0])
    return cell


def cell_log_weights(experiment, measure, X):
    """Each true cell's fitted log-weight on ``X``: the log-sum-exp of its atoms' logits.

    Parameters
    ----------
    experiment : Experiment
        The study (its truth and alignment).
    measure : MixingMeasure
        A fit of the study, with affine logits.
    X : ndarray of shape (n_points, n_features)

    Returns
    -------
    ndarray of shape (n_points, k*)
        ``-inf`` in the column of a cell that holds no fitted atom.
    """
    # The cells the study's columns use (after the alignment), so that a pair's error and
    # the columns beside it on the page speak of the same atoms.
    cells = parameter_errors(measure, experiment.truth,
                             translation=experiment.metrics["translation"]).cells
    logits = X @ measure.gate_coef.T + measure.gate_intercept
    out = np.full((X.shape[0], experiment.truth.n_experts), -np.inf)
    for j in np.unique(cells):
        out[:, j] = logsumexp(logits[:, cells == j], axis=1)
    return out


def pair_errors(experiment, measure, X, pairs, true_logits):
    """One fit's mean log-ratio error over each pair's co-selected points.

    Parameters
    ----------
    experiment : Experiment
    measure : MixingMeasure
        The fit.
    X : ndarray of shape (n_points, n_features)
        The evaluation design.
    pairs : dict of (int, int) to ndarray of bool
        :func:`coselected_pairs` on ``X``.
    true_logits : ndarray of shape (n_points, k*)
        :func:`truth_logits` on ``X``.

    Returns
    -------
    dict of str to float
        ``"j-m"`` for every pair selected together somewhere; NaN where the fit leaves
        either cell without an atom.
    """
    log_weight = cell_log_weights(experiment, measure, X)
    errors = {}
    for (j, m), mask in pairs.items():
        if not mask.any():
            continue
        if np.isinf(log_weight[0, j]) or np.isinf(log_weight[0, m]):
            errors[f"{j}-{m}"] = float("nan")  # an empty cell: no log-weight to compare
            continue
        fitted = log_weight[mask, j] - log_weight[mask, m]
        truth = true_logits[mask, j] - true_logits[mask, m]
        errors[f"{j}-{m}"] = float(np.mean(np.abs(fitted - truth)))
    return errors


def _finite_or_none(value):
    """A float for the JSON report: None for NaN (two sizes give no interval)."""
    return float(value) if np.isfinite(value) else None


def _rate(n, values, min_n=None, summary="mean"):
    """The rate of ``values`` (its slope, 95 % interval and sizes), or its absence.

    ``summary`` is the rate's summary over the replications at each n (``fit_rate``'s).
    """
    try:
        fit = fit_rate({"n": n, "v": values}, "v", min_n=min_n, summary=summary)
    except ValueError as err:  # fewer than two sizes, a zero mean: no rate
        return {"slope": None, "low": None, "high": None, "sizes": 0, "why": str(err)}
    return {"slope": fit.slope, "low": _finite_or_none(fit.conf_int[0]),
            "high": _finite_or_none(fit.conf_int[1]), "sizes": fit.n_points}


def _summary(n, values, upper):
    """Rates over all sizes and over the upper half, the means at the ends, the dropped.

    Entries that are not finite (a fit with an empty cell, a row without the column) are
    left out of every number and counted in ``left_out``.
    """
    n, values = np.asarray(n, dtype=float), np.asarray(values, dtype=float)
    kept = np.isfinite(values)
    n, values = n[kept], values[kept]
    if not kept.any():
        return {"left_out": int(kept.size)}
    low, high = n.min(), n.max()
    return {"all": _rate(n, values), "upper": _rate(n, values, min_n=upper),
            "n_low": int(low), "low": float(values[n == low].mean()),
            "n_high": int(high), "high": float(values[n == high].mean()),
            "left_out": int((~kept).sum())}


def _per_fit_ratio(n, with_fit, weight_column):
    """Rates of each fit's weight error over its intercept error, for one cell.

    For a cell of one atom the weight error is ``s w* |e^d - 1|`` and the intercept error
    ``|d|``: their ratio per fit, ``s w* |e^d - 1| / |d|``, is what bends one error into the
    other. Its rate (mean and geometric mean over the fits at each n) says how much of the
    two columns' difference in slope that factor makes; the geometric means' difference is
    exactly its geometric rate (a geometric mean of ratios is the ratio of the geometric
    means), the means' difference is not (a ratio of means is not a mean of ratios).
    """
    intercept_column = weight_column.replace("pe_weight_", "pe_gate_intercept_", 1)
    ratio = []
    for row, _ in with_fit:
        weight, intercept = row.get(weight_column), row.get(intercept_column)
        ratio.append(weight / intercept if weight is not None and intercept
                     else np.nan)
    ratio = np.asarray(ratio, dtype=float)
    kept = np.isfinite(ratio)
    return {"of": intercept_column, "left_out": int((~kept).sum()),
            "mean": _rate(np.asarray(n, dtype=float)[kept], ratio[kept]),
            "geometric": _rate(np.asarray(n, dtype=float)[kept], ratio[kept],
                               summary="geometric")}


def analyse(experiment, rows):
    """The report of a study's stored fits (see the module documentation).

    Parameters
    ----------
    experiment : Experiment
        A study whose truth is top-K with K >= 2.
    rows : list of dict
        Its committed result rows; those without a stored fit are counted and left out.

    Returns
    -------
    dict
        The JSON report.

    Raises
    ------
    SystemExit
        If the study's truth is not top-K with K >= 2, or no row holds a stored fit.
    """
    check_study(experiment)
    X = make_evaluation_design(experiment)
    pairs = coselected_pairs(experiment, X)
    true_logits = truth_logits(experiment, X)
    reference = reference_cell(experiment)
    with_fit = [(r, fitted_measure(experiment, r)) for r in rows]
    without = sum(m is None for _, m in with_fit)
    with_fit = [(r, m) for r, m in with_fit if m is not None]
    if not with_fit:
        raise SystemExit(f"{experiment.name}: none of its {len(rows)} result rows holds a "
                         "stored fit (gmoe's store format 3); rerun its grid.")
    n = np.array([r["n"] for r, _ in with_fit])
    sizes = np.unique(n)
    upper = float(sizes[len(sizes) // 2])  # the larger half of the sizes
    per_task = [pair_errors(experiment, m, X, pairs, true_logits) for _, m in with_fit]
    coselected = []
    for (j, m), mask in pairs.items():
        entry = {"cells": [j, m], "fraction": float(mask.mean())}
        if mask.any():
            entry.update(_summary(n, [task[f"{j}-{m}"] for task in per_task], upper))
        coselected.append(entry)
    columns = {}
    suffix = "" if experiment.metrics["scales"][0] == "identifiable" else "_raw"
    if reference is not None:
        for j in range(experiment.truth.n_experts):
            never = j != reference and not pairs[tuple(sorted((j, reference)))].any()
            for name in GATE_COLUMNS if never else ():
                column = f"{name}_{j}{suffix}"
                values = [np.nan if r.get(column) is None else r[column] for r, _ in with_fit]
                if np.isfinite(values).any():
                    columns[column] = _summary(n, values, upper)
        for column, entry in columns.items():
            if column.startswith("pe_weight_"):
                entry["per_fit_ratio"] = _per_fit_ratio(n, with_fit, column)
    return {"format": FORMAT, "study": experiment.name, "result_rows": len(rows),
            "without_fit": without, "tasks": len(with_fit), "sizes": len(sizes),
            "upper_from": upper, "design_points": int(X.shape[0]),
            "top_k": experiment.truth.family.top_k, "reference": reference,
            "coselected": coselected, "columns": columns}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", help="a study of simulations/ whose truth is top-K, K >= 2")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="the committed results' directory (default: %(default)s)")
    args = parser.parse_args(argv)
    experiment = load_experiment(ROOT / "simulations" / f"{args.study}.toml")
    rows = committed_rows(args.results, args.study)
    report = analyse(experiment, rows)
    out = args.results / f"{args.study}.coselected.json"
    out.write_text(json.dumps(report, indent=1, allow_nan=False) + "\n")
    print(f"{args.study}: {report['tasks']} stored fits -> {out.name}")
    for entry in report["coselected"]:
        j, m = entry["cells"]
        if "all" not in entry:
            print(f"  cells {j} and {m}: "
                  + ("never selected together" if entry["fraction"] == 0 else
                     f"no fit holds both ({entry['left_out']} left out)"))
            continue
        overall, upper = (fmt_report_rate(entry[key], "no rate") for key in ("all", "upper"))
        print(f"  cells {j} and {m}: selected together on {entry['fraction']:.0%} of the "
              f"design; slope {overall}, n >= {report['upper_from']:g}: {upper}")


if __name__ == "__main__":
    main()
