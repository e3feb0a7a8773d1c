"""Compare an exact-specified study's parameter errors with their asymptotic prediction.

For a study whose fit has the truth's number of experts, the MLE's error is asymptotically
normal with covariance ``I^-1 / n``, ``I`` the Fisher information per row at the truth.
This script estimates ``I`` as the mean outer product of the per-row scores of a large
sample from the truth (``--rows``, on the study's design; positive semi-definite by
construction, where the observed information at the truth is not: in a weakly determined
direction its noise exceeds the information), the scores by central differences of each
row's log-density. For every per-cell error column
``pe_<parameter>_<cell>`` that names one scalar parameter (one feature), predicts its mean
at size n: ``E|N(0, s^2)| = s sqrt(2 / pi)``, ``s = sd / sqrt(n)`` (the temperature by the
delta method from ``log tau``). It writes ``paper_figures/results/NAME.asymptotic.json``:
the information's eigenvalues, and per column the predicted and the observed mean error at
the smallest and at the largest sizes of the grid, with the slope between the two ends that
the change of their ratio implies, which ``make_figures.py`` quotes.

The columns that depend on every parameter at once (``d1`` and the density distances
``hellinger`` and ``tv``) have no closed form: their prediction is a Monte Carlo mean over
``--draws`` parameter vectors drawn from the normal limit at a size :data:`LIMIT_SIZE` far
beyond the grid, each scored by the grid's own metric code on the study's evaluation
design, and scaled by ``sqrt(LIMIT_SIZE / n)``: to first order in the parameters' error
each of these columns is a seminorm of it (a weighted sum of absolute errors, or a mean of
square roots of quadratic forms), homogeneous of degree 1, so in the limit its mean is
``c / sqrt(n)``. This tests the fits' errors in their constant, not only in their rate: by
the convolution theorem a regular estimator that is not efficient has this limit plus
independent noise, and by Anderson's lemma a seminorm's mean is then at least as large
(an efficient estimator has the same constant; a non-regular one may have a smaller).

A top-K gate's selection boundaries are held (their positions converge at n^-1). With one
expert selected (top-1) the gate matters only through its boundary: its errors, measured
after a least-squares scale and shift of the fitted gate, are not compared; the experts'
are, and the density distances (with the boundary held: its own error moves ``E_X h``
and ``E_X TV`` by at most the share of the design it passes, of order n^-1); ``d1``, whose
gate part is measured after that alignment, is not.

Where the observed errors agree with the prediction at the largest sizes but stay below it
at the small ones, the curve has not yet reached its n^-1/2 regime at the small sizes: a
weakly determined direction of the parameters (a small eigenvalue of ``I``) keeps the
asymptotic standard deviations larger than what the start and the model's nonlinearity
allow at small n.

Usage::

    python paper_figures/asymptotic_check.py activation
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy.linalg import null_space

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import committed_rows  # noqa: E402

import gmoe  # noqa: E402
from gmoe._observed_information import Parametrisation  # noqa: E402
from gmoe.simulation import load_experiment  # noqa: E402
from gmoe.simulation.tasks import make_evaluation_design, task_metrics  # noqa: E402

#: Share of the grid's sizes, at each end, over which observed errors are averaged.
_END_SHARE = 0.05
#: An eigenvalue of the held information below this times the largest is a direction the
#: density does not see (exactly 0 up to the rounding of the scores' outer product), and a
#: parameter whose unit vector loads on such a direction by more than _LOADING moves the
#: estimate along it: it is not identified by itself.
_UNSEEN = 1e-12
_LOADING = 1e-6
#: The columns that depend on every parameter at once, predicted by Monte Carlo.
WHOLE_MODEL_COLUMNS = ("d1", "hellinger", "tv")
#: The size at which the Monte Carlo draws of the normal limit are scored: far enough
#: beyond the grid that the columns are linear in the parameters' error (the constants at
#: 1e6, 1e8 and 1e10 agree within the draws' noise for softmax-exact), near enough that the
#: density distances (about 1e-4 here) stay well above their quadrature's tolerance.
LIMIT_SIZE = 1e8


def _parameter_of(column, names, order, prefix="gate"):
    """The parameter (and whether it is log tau) a ``pe_`` column measures, or None.

    ``order[p]`` is the study's cell of the parametrisation's expert ``p``; ``prefix`` the
    gating family's name of its gate parameters (``gamma`` for the temperature gate's
    identifiable ``(beta1, beta0) / tau``). Raw-scale columns (``_raw``) measure parameters
    the information does not hold (the temperature gate's raw ones are not identified).
    """
    if column.endswith("_raw"):
        return None
    if column == "pe_temperature":
        return ("gate.log_temperature", True) if "gate.log_temperature" in names else None
    for kind, template in (("gate_coef", prefix + "[{j}].coef[0]"),
                           ("gate_intercept", prefix + "[{j}].intercept"),
                           ("expert_coef", "expert[{j}].coef[0]"),
                           ("expert_intercept", "expert[{j}].intercept"),
                           ("expert_var", "expert[{j}].var")):
        prefix = f"pe_{kind}_"
        if column.startswith(prefix) and column[len(prefix):].isdigit():
            name = template.format(j=order.index(int(column[len(prefix):])))
            return (name, False) if name in names else None
    return None


def _selected(measure, X):
    """Which experts the gate selects at each row (all of them for a dense gate)."""
    return np.isfinite(measure.log_gate(X))


def _score_outer_product(param, vec, X, y):
    """``mean_i s_i s_i^T`` of the per-row scores, by central differences.

    A row whose selected experts differ between the two points of a difference lies
    within the step of a selection boundary (a top-K gate): its difference quotient is the
    density's jump over the step, not a derivative, so its score there is left at 0 (a
    share of the rows of the step's order). The boundary's own position is treated apart
    (:func:`selection_boundaries`).
    """
    scores = np.zeros((X.shape[0], vec.size))
    for a in range(vec.size):
        h = 1e-5 * max(1.0, abs(vec[a]))
        step = np.zeros(vec.size)
        step[a] = h
        above, below = param.to_measure(vec + step), param.to_measure(vec - step)
        up = gmoe.conditional_log_density(above, X, y)
        down = gmoe.conditional_log_density(below, X, y)
        smooth = np.all(_selected(above, X) == _selected(below, X), axis=1)
        scores[smooth, a] = (up[smooth] - down[smooth]) / (2.0 * h)
    return scores.T @ scores / X.shape[0]


def selection_boundaries(param, vec, low, high, points=100_001):
    """Where on the feature's range the top-K selection changes, and how that point moves.

    At such a point the selected set swaps one expert ``a`` for another ``b``: the
    conditional density jumps there, and the point solves ``s_a(x) = s_b(x)`` for the
    selection scores ``s_j(x) = beta1_j x + beta0_j``. Its position is estimated at the
    rate n^-1 of a change-point, faster than the n^-1/2 of the other directions, so the
    normal limit of the rest is that of parameters that keep it fixed.

    Parameters
    ----------
    param : Parametrisation
    vec : ndarray
        The parameters (the truth's).
    low, high : float
        The feature's range (the study's design).
    points : int, default=100001
        Grid on which the changes are found.

    Returns
    -------
    boundaries : list of dict
        ``x``, ``leaves`` and ``enters`` (expert indices of the parametrisation) for each
        point where the selection changes.
    gradient : ndarray of shape (len(boundaries), vec.size)
        The derivative of each point's position with respect to the parameters (central
        differences of the exact root).
    """
    measure = param.to_measure(vec)
    if measure.gating != "topk":
        return [], np.empty((0, vec.size))
    if measure.topk_selection != "affine":
        raise SystemExit("only an affine top-K selection's boundaries are located here.")
    grid = np.linspace(low, high, points)[:, None]
    chosen = _selected(measure, grid)
    boundaries, gradient = [], []
    for i in np.flatnonzero(np.any(chosen[1:] != chosen[:-1], axis=1)):
        [leaves] = np.flatnonzero(chosen[i] & ~chosen[i + 1])
        [enters] = np.flatnonzero(chosen[i + 1] & ~chosen[i])

        def root(v, a=leaves, b=enters):
            m = param.to_measure(v)
            return -((m.gate_intercept[a] - m.gate_intercept[b])
                     / (m.gate_coef[a, 0] - m.gate_coef[b, 0]))

        x = root(vec)
        if not grid[i, 0] <= x <= grid[i + 1, 0]:
            raise SystemExit(f"the selection changes between x = {grid[i, 0]:.6g} and "
                             f"{grid[i + 1, 0]:.6g}, but experts {leaves} and {enters} tie "
                             f"at {x:.6g}.")
        row = np.empty(vec.size)
        for a in range(vec.size):
            h = 1e-6 * max(1.0, abs(vec[a]))
            step = np.zeros(vec.size)
            step[a] = h
            row[a] = (root(vec + step) - root(vec - step)) / (2.0 * h)
        boundaries.append({"x": float(x), "leaves": int(leaves), "enters": int(enters)})
        gradient.append(row)
    return boundaries, np.array(gradient).reshape(len(boundaries), vec.size)


def limit_covariance(info, gradient):
    """Covariance per row of the normal limit, the boundaries' positions held.

    ``I^-1`` without boundaries; with them, ``N (N^T I N)^-1 N^T``, ``N`` an orthonormal
    basis of the directions that keep every boundary in place (the null space of
    ``gradient``): the model whose selection regions are known. A direction of that model
    in which the information vanishes is one the density does not see (with one expert
    selected its weight is 1, and the gate's scores matter only through the boundary): it
    is left out of the inverse, and a parameter that moves along it is not identified by
    itself: its row and column are NaN.

    Returns
    -------
    covariance : ndarray
        Per row; NaN for the parameters not identified.
    held : ndarray
        The information restricted to the directions that keep the boundaries.
    """
    basis = null_space(gradient) if gradient.shape[0] else np.eye(info.shape[0])
    held = basis.T @ info @ basis
    eigval, eigvec = np.linalg.eigh(0.5 * (held + held.T))
    seen = eigval > _UNSEEN * max(float(eigval[-1]), np.finfo(float).tiny)
    inverse = (eigvec[:, seen] / eigval[seen]) @ eigvec[:, seen].T
    covariance = basis @ inverse @ basis.T
    unseen = basis @ eigvec[:, ~seen]
    unidentified = np.any(np.abs(unseen) > _LOADING, axis=1)
    covariance[unidentified, :] = np.nan
    covariance[:, unidentified] = np.nan
    return covariance, held


def reference_cell_last(truth, cell):
    """The truth with ``cell`` as the gate's reference, and the order of its experts.

    The per-cell errors are measured after the alignment's translation of the gate, which
    fixes one cell (the one holding most of the truth's mass): they are the errors of the
    gate parameters relative to that cell's. The information's parametrisation measures
    them relative to the last expert, whose gate entries it pins. Where the family pins
    the last expert's whole gate row (slopes and intercept), subtracting one expert's row
    from every row leaves the density unchanged (softmax, top-K and temperature gates: the
    selection and the weights depend only on differences of scores), so the truth is
    rewritten with ``cell``'s row subtracted and ``cell`` moved last. Otherwise (the
    activation gate pins only the intercept) ``cell`` must already be the last expert with
    a zero intercept.

    Parameters
    ----------
    truth : MixingMeasure
    cell : int
        The cell the alignment fixes.

    Returns
    -------
    truth : MixingMeasure
        The same density, parametrised relative to ``cell``.
    order : list of int
        ``order[p]`` is the original index of the rewritten truth's expert ``p``.

    Raises
    ------
    SystemExit
        If the family's gate cannot be re-referenced to ``cell``.
    """
    k = truth.n_experts
    order = [j for j in range(k) if j != cell] + [cell]
    layout = Parametrisation(truth).layout
    whole_row_pinned = bool(np.all(layout.coef_idx[-1] < 0)) and layout.intercept_idx[-1] < 0
    if not whole_row_pinned:
        if cell != k - 1 or truth.gate_intercept[-1] != 0:
            raise SystemExit("the alignment fixes a cell that this gate's parametrisation "
                             "cannot take as its reference; not checked.")
        return truth, order
    coef = truth.gate_coef - truth.gate_coef[cell]
    intercept = truth.gate_intercept - truth.gate_intercept[cell]
    return truth.replace(gate_coef=coef[order], gate_intercept=intercept[order],
                         expert_coef=truth.expert_coef[order],
                         expert_intercept=truth.expert_intercept[order],
                         expert_var=truth.expert_var[order]), order


def end_sizes(sizes):
    """The grid's smallest and largest sizes, :data:`_END_SHARE` of them at each end.

    Parameters
    ----------
    sizes : array-like of int
        The grid's distinct sizes, ascending.

    Returns
    -------
    small, large : ndarray
    """
    sizes = np.asarray(sizes)
    m = max(1, int(round(_END_SHARE * sizes.size)))
    return sizes[:m], sizes[-m:]


def implied_slope(small, large):
    """The slope between the grid's ends that the ratios to the normal limit imply.

    The limit falls as n^-1/2; a column whose ratio of observed to predicted mean error
    goes from ``r_small`` to ``r_large`` falls as n^(-1/2 + log(r_large / r_small) /
    (log n_large - log n_small)) between the ends (``mean_log_n`` of each end's rows).
    """
    ratio = {end["n_from"]: end["observed_mean"] / end["predicted_mean"]
             for end in (small, large)}
    return float(-0.5 + np.log(ratio[large["n_from"]] / ratio[small["n_from"]])
                 / (large["mean_log_n"] - small["mean_log_n"]))


def _end_entry(rows, column, chosen, predicted_at):
    """Observed against predicted mean of ``column`` over the grid's rows at one end.

    ``predicted_at(n)`` is the prediction's mean at size ``n`` (proportional to n^-1/2); the
    standard error of the observed mean is filled in by the caller, which knows the
    column's spread.
    """
    sizes = set(chosen.tolist())
    picked = [r for r in rows if r["n"] in sizes and r.get(column) is not None]
    return {"n_from": int(chosen[0]), "n_to": int(chosen[-1]), "rows": len(picked),
            "mean_log_n": float(np.mean([np.log(r["n"]) for r in picked])),
            "observed_mean": float(np.mean([r[column] for r in picked])),
            "predicted_mean": float(np.mean([predicted_at(r["n"]) for r in picked]))}, picked


def _relative_se_of_mean(picked, cv):
    """Standard error of a mean of the rows' values, relative to its expectation.

    In the limit a row's value at size n has mean ``m / sqrt(n)`` and standard deviation
    ``cv m / sqrt(n)``; the rows' sizes differ, so the mean's standard error relative to
    its expectation is ``cv sqrt(sum 1/n) / sum n^-1/2``.
    """
    scales = np.array([1.0 / np.sqrt(r["n"]) for r in picked])
    return float(cv * np.sqrt(np.sum(scales ** 2)) / np.sum(scales))


def whole_model_limits(experiment, param, vec, covariance, columns, draws, limit_size,
                       seed):
    """The normal limit's mean of each whole-model column, by Monte Carlo.

    Draws ``draws`` parameter vectors ``vec + Z / sqrt(limit_size)``, ``Z ~ N(0,
    covariance)`` (the parameters the density does not see, NaN in ``covariance``, are
    held at ``vec``), scores each with the grid's own metrics
    (:func:`gmoe.simulation.tasks.task_metrics`) on the study's evaluation design, and
    scales by ``sqrt(limit_size)``.

    Parameters
    ----------
    experiment : Experiment
    param : Parametrisation
    vec : ndarray
        The truth's parameters.
    covariance : ndarray
        Per row, of the normal limit (:func:`limit_covariance`).
    columns : list of str
        The whole-model columns to predict.
    draws : int
    limit_size : float
    seed : int

    Returns
    -------
    dict
        Per column: ``constant`` (the mean of ``sqrt(n)`` times the column in the limit),
        ``cv`` (its draws' standard deviation over their mean) and ``mc_relative_se``
        (the constant's own Monte Carlo standard error, relative).

    Raises
    ------
    SystemExit
        If a predicted column fails on a draw.
    """
    seen = np.isfinite(np.diag(covariance))
    eigval, eigvec = np.linalg.eigh(covariance[np.ix_(seen, seen)])
    # A square root of the covariance; rank-deficient where a boundary is held.
    root = eigvec * np.sqrt(np.clip(eigval, 0.0, None))
    X_eval = make_evaluation_design(experiment)
    rng = np.random.default_rng(seed)
    values = {c: np.empty(draws) for c in columns}
    for d in range(draws):
        drawn = vec.copy()
        drawn[seen] += root @ rng.standard_normal(int(seen.sum())) / np.sqrt(limit_size)
        scored, notes = task_metrics(experiment, param.to_measure(drawn), X_eval)
        # Only the predicted columns matter (another metric failing says nothing of them).
        failed = [c for c in columns if not np.isfinite(scored[c])]
        if failed:
            raise SystemExit(f"draw {d} of the normal limit: {', '.join(failed)} failed: "
                             f"{'; '.join(notes)}")
        for c in columns:
            values[c][d] = scored[c] * np.sqrt(limit_size)
    out = {}
    for c, v in values.items():
        cv = float(np.std(v, ddof=1) / np.mean(v))
        out[c] = {"constant": float(np.mean(v)), "cv": cv,
                  "mc_relative_se": cv / float(np.sqrt(draws))}
    return out


def check(name, rows, n_rows, seed=0, draws=4000, limit_size=LIMIT_SIZE):
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    truth = experiment.truth
    if experiment.fit["n_experts"] != truth.n_experts or truth.n_features != 1:
        raise SystemExit(f"{name}: only exact-specified one-feature studies are checked.")
    # A top-1 truth's gate is aligned by a least-squares scale and shift (only its
    # selection regions are identifiable): its per-cell gate errors are not those of any
    # parametrisation's gate, and are not compared. Its experts' are.
    selection_only = truth.family.selection_only()
    pinned = [c for c in rows[0] if c.startswith("pe_gate_intercept_")
              and not c.endswith("_raw")
              and all(r[c] is not None and abs(r[c]) < 1e-12 for r in rows)]
    if selection_only:
        reference, order = truth, list(range(truth.n_experts))
    elif len(pinned) != 1:
        raise SystemExit(f"{name}: the alignment fixes no single cell ({pinned}); the "
                         "per-cell errors are not those of the information's parameters; "
                         "not checked.")
    else:
        cell = int(pinned[0].rsplit("_", 1)[1])
        try:
            reference, order = reference_cell_last(truth, cell)
        except SystemExit as err:
            raise SystemExit(f"{name}: {err}") from None
    design = experiment.design
    X = gmoe.make_design(n_rows, design["kind"], n_features=1, random_state=seed,
                         **{key: design[key] for key in ("low", "high") if key in design})
    y = gmoe.sample_moe(truth, X, random_state=seed + 1)
    learn = bool(experiment.fit.get("learn_temperature"))
    if not np.allclose(gmoe.conditional_log_density(reference, X, y),
                       gmoe.conditional_log_density(truth, X, y), rtol=0.0, atol=1e-9):
        raise SystemExit(f"{name}: the truth re-referenced to cell {order[-1]} has another "
                         "density; not checked.")
    param = Parametrisation(reference, learn_temperature=learn)
    vec = param.to_vector(reference)
    info = _score_outer_product(param, vec, X, y)
    # The boundaries are searched on the design's range, or the sample's for an unbounded
    # design (X ~ N(0, 1)): a boundary beyond it is one no row of the study crosses.
    low, high = design.get("low", float(X.min())), design.get("high", float(X.max()))
    boundaries, gradient = selection_boundaries(param, vec, low, high)
    covariance, held = limit_covariance(info, gradient)
    sd = np.sqrt(np.diag(covariance))
    # The directions the density sees (a top-1 gate's scale is not one of them).
    seen_eigenvalues = np.linalg.eigvalsh(held)
    seen_eigenvalues = seen_eigenvalues[seen_eigenvalues > _UNSEEN * seen_eigenvalues[-1]]
    sizes = np.array(sorted({r["n"] for r in rows}))
    ends = dict(zip(("small", "large"), end_sizes(sizes), strict=True))
    columns, unidentified = [], []
    aligned_gate = [c for c in rows[0] if selection_only and c.startswith("pe_gate_")]
    for column in rows[0]:
        found = _parameter_of(column, param.names, order, param.family.parameter_prefix)
        if found is None:
            continue
        if selection_only and found[0].startswith("gate"):
            continue
        pname, log_scale = found
        scale = sd[param.names.index(pname)]
        if not np.isfinite(scale):
            unidentified.append(column)
            continue
        if log_scale:  # |tau - tau*| ~ tau* |log tau - log tau*|
            scale *= truth.temperature
        entry = {"column": column, "parameter": pname, "asymptotic_sd_per_row": float(scale)}
        for end, chosen in ends.items():
            entry[end], picked = _end_entry(
                rows, column, chosen, lambda n, scale=scale: scale * np.sqrt(2.0 / np.pi / n))
            # The error is |N(0, sd^2)| in the limit: its cv is sqrt(pi / 2 - 1).
            entry[end]["relative_se"] = _relative_se_of_mean(picked, np.sqrt(np.pi / 2 - 1))
        entry["implied_slope"] = implied_slope(entry["small"], entry["large"])
        columns.append(entry)
    # d1's gate part is measured after the top-1 gate's least-squares alignment, which the
    # normal limit of no parametrisation describes (as the gate's own columns above).
    whole = [c for c in WHOLE_MODEL_COLUMNS if c in rows[0]
             and not (selection_only and c == "d1")]
    limits = whole_model_limits(experiment, param, vec, covariance, whole, draws,
                                limit_size, seed + 2) if whole else {}
    whole_entries = []
    for column, limit in limits.items():
        entry = {"column": column, "parameter": None, "limit_constant": limit["constant"],
                 "limit_cv": limit["cv"], "limit_mc_relative_se": limit["mc_relative_se"]}
        for end, chosen in ends.items():
            entry[end], picked = _end_entry(
                rows, column, chosen, lambda n, c=limit["constant"]: c / np.sqrt(n))
            # The observed mean's noise and the Monte Carlo constant's, together.
            entry[end]["relative_se"] = float(np.hypot(
                _relative_se_of_mean(picked, limit["cv"]), limit["mc_relative_se"]))
        entry["implied_slope"] = implied_slope(entry["small"], entry["large"])
        whole_entries.append(entry)
    return {"study": name, "rows_for_information": n_rows, "result_rows": len(rows),
            "information_eigenvalues": seen_eigenvalues.tolist(),
            "boundaries": [dict(b, leaves=order[b["leaves"]], enters=order[b["enters"]])
                           for b in boundaries],
            "columns": whole_entries + columns, "unidentified": unidentified,
            "aligned_gate": aligned_gate,
            "whole_model": {"draws": draws, "limit_size": limit_size,
                            "columns": [e["column"] for e in whole_entries]}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--rows", type=int, default=2_000_000,
                        help="rows of the sample the information is estimated on")
    parser.add_argument("--draws", type=int, default=4000,
                        help="draws of the normal limit that predict d1, hellinger and tv")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    if args.draws < 2:
        parser.error(f"--draws must be at least 2 (a mean and its spread); got {args.draws}")
    for name in args.studies:
        rows = committed_rows(args.results, name)
        # About a minute a study on two cores: say what runs.
        print(f"{name}: the information on {args.rows} rows, then {args.draws} draws of the "
              "normal limit for its whole-model columns ...", flush=True)
        report = check(name, rows, args.rows, draws=args.draws)
        (args.results / f"{name}.asymptotic.json").write_text(
            json.dumps(report, indent=1) + "\n")
        eig = report["information_eigenvalues"]
        print(f"{name}: information eigenvalues per row {eig[0]:.2e} .. {eig[-1]:.2e}")
        for c in report["columns"]:
            print(f"  {c['column']:24s} small n: observed {c['small']['observed_mean']:.4g} "
                  f"predicted {c['small']['predicted_mean']:.4g}; large n: observed "
                  f"{c['large']['observed_mean']:.4g} predicted "
                  f"{c['large']['predicted_mean']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
