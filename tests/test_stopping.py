"""The stopping rule: the Newton decrement of the log-likelihood below an absolute tol."""

import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning

import gmoe
import gmoe._em
from gmoe._stopping import (
    TOPK_WINDOW,
    Decrement,
    StoppingRule,
    _active_set_derivatives,
    _gate_scale_shifts,
    _held_selection_derivatives,
    compute_newton_decrement,
    smooth_decrement,
)
from gmoe.inference import _compute_log_likelihood_derivatives, _Parametrisation
from gmoe.simulation.start import make_near_truth_start

# The softmax studies' truth (expert 2 the reference).
TRUTH = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                           [0.09, 0.16])


def _log_lik(param, vec, X, y):
    """Reference: the total log-likelihood at a parameter vector, by the public density."""
    return float(gmoe.conditional_log_density(param.to_measure(vec), X, y).sum())


def _central_gradient(f, x, h):
    return np.array([(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))])


def _reference_decrement(measure, X, y, h=1e-5):
    """0.5 g' (-H)^-1 g with g and H by central differences of the public density."""
    param = _Parametrisation(measure)
    v0 = param.to_vector(measure)

    def f(v):
        return _log_lik(param, v, X, y)

    grad = _central_gradient(f, v0, h)
    hess = np.array([_central_gradient(lambda v, i=i: _central_gradient(f, v, h)[i], v0, h)
                     for i in range(len(v0))])
    hess = 0.5 * (hess + hess.T)
    return 0.5 * grad @ np.linalg.solve(-hess, grad), np.linalg.eigvalsh(-hess)


def _data(measure, n, seed):
    X = gmoe.make_design(n, "uniform", n_features=measure.n_features, random_state=seed)
    return X, gmoe.sample_moe(measure, X, random_state=seed + 1)


# --------------------------------------------------------------------- the decrement
def test_decrement_matches_finite_differences_of_the_density():
    X, y = _data(TRUTH, 300, 0)
    point = TRUTH.replace(expert_intercept=[15.05, -5.03], gate_intercept=[-7.9, 0.0],
                          expert_var=[0.1, 0.15])
    expected, eig = _reference_decrement(point, X, y)
    assert np.all(eig > 0)  # concave there: no clipping involved
    got = compute_newton_decrement(point, X, y, np.ones(300))
    # Second central differences with h = 1e-5 of a sum of 300 log-densities: ~1e-5.
    assert got.gap == pytest.approx(expected, rel=1e-4)
    assert got.min_curvature > 0 and got.curvature_gain == 0.0
    # Not at the maximum: the Newton step (halved until L rises) is proposed.
    assert got.move_gain > 0
    moved = gmoe.conditional_log_density(got.move, X, y).sum()
    assert moved - gmoe.conditional_log_density(point, X, y).sum() == pytest.approx(
        got.move_gain, rel=1e-8)


def test_decrement_predicts_the_gain_to_the_maximum():
    # Near a regular maximum L is quadratic: the decrement is the remaining gain.
    X, y = _data(TRUTH, 2000, 1)
    fit = gmoe.GaussianMoERegressor(2, init_params=TRUTH, tol=1e-10).fit(X, y)
    best = fit.log_likelihood(X, y)
    m = fit.mixing_measure_
    for scale in (1e-3, 3e-3):
        point = m.replace(expert_intercept=m.expert_intercept + scale,
                          gate_coef=m.gate_coef * (1 + scale), expert_var=m.expert_var * 1.01)
        gap = best - gmoe.conditional_log_density(point, X, y).sum()
        got = compute_newton_decrement(point, X, y, np.ones(len(y))).gap
        # The cubic term is O(scale) relative to the quadratic one.
        assert got == pytest.approx(gap, rel=0.05)


def test_variance_at_the_floor_is_left_out():
    X, y = _data(TRUTH, 300, 2)
    fit = gmoe.GaussianMoERegressor(2, init_params=TRUTH, tol=1e-10).fit(X, y)
    m = fit.mixing_measure_
    floor = 0.7 * m.expert_var[0]  # a bound below the MLE: the score of nu_0 is not 0
    point = m.replace(expert_var=[floor, m.expert_var[1]])
    param = _Parametrisation(point)
    v0 = param.to_vector(point)
    keep = np.setdiff1d(np.arange(param.size), [param.expert_idx[0, -1]])

    def f(sub):
        v = v0.copy()
        v[keep] = sub
        return _log_lik(param, v, X, y)

    # The gradient is small here (near the conditional optimum) and one direction is flat
    # (eigenvalue ~0.02): h = 1e-6 keeps its truncation error ~1e-8; the Hessian's h = 1e-4
    # balances truncation (~1e-8) and rounding (~1e-16 * |L| / h^2 ~ 1e-6).
    grad = _central_gradient(f, v0[keep], 1e-6)
    hess = np.array([_central_gradient(lambda v, i=i: _central_gradient(f, v, 1e-4)[i],
                                       v0[keep], 1e-4) for i in range(len(keep))])
    expected = 0.5 * grad @ np.linalg.solve(-0.5 * (hess + hess.T), grad)
    held = compute_newton_decrement(point, X, y, np.ones(300), var_floor=floor)
    free = compute_newton_decrement(point, X, y, np.ones(300), var_floor=0.0)
    assert held.gap == pytest.approx(expected, rel=1e-3)
    assert free.gap > 10 * held.gap  # nu_0's own pull is most of the gap


def _symmetric_saddle(X, y):
    """Two identical experts with equal gates: a fixed point of EM where the score is 0."""
    coef, intercept = np.polyfit(X[:, 0], y, 1)
    var = float(np.var(y - (coef * X[:, 0] + intercept)))
    return gmoe.MixingMeasure([[0.0], [0.0]], [0.0, 0.0], [[coef], [coef]],
                              [intercept, intercept], [var, var])


def test_symmetric_saddle_is_not_converged_and_is_left():
    # L curves upward along the directions that separate the two experts: the quadratic
    # model predicts no gain (the score is 0), the search along that curvature does.
    X, y = _data(TRUTH, 400, 3)
    saddle = _symmetric_saddle(X, y)
    at_saddle = gmoe.conditional_log_density(saddle, X, y).sum()
    decrement = compute_newton_decrement(saddle, X, y, np.ones(400))
    assert decrement.gap < 1e-8
    assert decrement.min_curvature < 0
    assert decrement.curvature_gain > 1.0 and not decrement.converged(1e-4)
    escaped = gmoe.conditional_log_density(decrement.move, X, y).sum()
    assert escaped - at_saddle == pytest.approx(decrement.curvature_gain, rel=1e-10)
    # Plain EM never leaves the saddle; with the step along the curvature the fit leaves
    # it for a maximum (a local one: which one depends on where the step lands).
    est = gmoe.GaussianMoERegressor(2, init_params=saddle, acceleration=None,
                                    max_iter=2000).fit(X, y)
    assert est.converged_
    assert 400 * est.lower_bound_ > at_saddle + decrement.curvature_gain
    assert est.convergence_gap_ <= est.tol


@pytest.mark.parametrize("point", ["saddle", "near_maximum"])
def test_decrement_on_blocks_is_the_decrement_on_arrays(point):
    # The estimator hands the rule its rows as blocks (softmax and temperature gates: the
    # derivatives and the searches' L block by block); the arrays take the general path.
    from gmoe._blocks import RowBlocks

    X, y = _data(TRUTH, 400, 3)
    w = np.ones(400)
    measure = (_symmetric_saddle(X, y) if point == "saddle" else
               TRUTH.replace(expert_intercept=[15.05, -5.03], gate_intercept=[-7.9, 0.0]))
    on_arrays = compute_newton_decrement(measure, X, y, w)
    with RowBlocks(X, y.copy(), w, 2, 2) as rows:
        on_blocks = compute_newton_decrement(measure, rows, None, None)
    # Two summation orders of the same derivatives and log-likelihoods.
    assert on_blocks.gap == pytest.approx(on_arrays.gap, rel=1e-8, abs=1e-12)
    assert on_blocks.min_curvature == pytest.approx(on_arrays.min_curvature, rel=1e-6,
                                                    abs=1e-12)
    assert on_blocks.curvature_gain == pytest.approx(on_arrays.curvature_gain, rel=1e-8,
                                                     abs=1e-10)
    assert on_blocks.move_gain == pytest.approx(on_arrays.move_gain, rel=1e-8, abs=1e-10)
    assert (on_blocks.move is None) == (on_arrays.move is None)
    if on_blocks.move is not None:
        # Entries that are 0 up to rounding (a gate coefficient at the saddle) differ by
        # rounding: absolute tolerance relative to the vector's size.
        vector = on_arrays.move.to_vector()
        assert_allclose(on_blocks.move.to_vector(), vector, rtol=1e-8,
                        atol=1e-12 * np.max(np.abs(vector)))


def test_search_does_not_count_rounding_as_curvature():
    # At a regular maximum every eigenvalue is positive: no search, no curvature gain.
    X, y = _data(TRUTH, 400, 3)
    fit = gmoe.GaussianMoERegressor(2, init_params=TRUTH, tol=1e-10).fit(X, y)
    decrement = compute_newton_decrement(fit.mixing_measure_, X, y, np.ones(400))
    assert decrement.min_curvature > 0
    assert decrement.converged(1e-8)


# ------------------------------------------------------------------------ top-K
def _held_log_lik(measure, active, X, y, vec, param):
    """Reference: the top-K log-likelihood with the active sets ``active`` held."""
    m = param.to_measure(vec)
    logits = X @ m.gate_coef.T + m.gate_intercept
    logits = np.where(active, logits, -np.inf)
    log_gate = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    resid = y[:, None] - (X @ m.expert_coef.T + m.expert_intercept)
    log_dens = -0.5 * (np.log(2 * np.pi * m.expert_var) + resid ** 2 / m.expert_var)
    return float(np.logaddexp.reduce(log_gate + log_dens, axis=1).sum())


@pytest.mark.parametrize("top_k,selection", [(1, "affine"), (2, "affine"), (2, "linear")])
def test_held_selection_score_and_hessian_match_finite_differences(top_k, selection):
    measure = gmoe.MixingMeasure(
        [[3.0, -1.0], [-2.0, 1.5], [0.0, 0.0]], [0.4, -0.2, 0.0],
        [[1.0, 0.5], [-1.0, 2.0], [0.5, -1.5]], [1.0, -1.0, 0.3], [0.3, 0.2, 0.4],
        gating="topk", top_k=top_k, topk_selection=selection)
    X = gmoe.make_design(200, "normal", n_features=2, random_state=4)
    y = gmoe.sample_moe(measure, X, random_state=5)
    active = measure.family.active_mask(X, measure.gate_coef, measure.gate_intercept)
    param, log_lik, score, hessian = _held_selection_derivatives(measure, X, y, np.ones(200))
    assert log_lik == pytest.approx(gmoe.conditional_log_density(measure, X, y).sum(),
                                    rel=1e-12)
    softmax = gmoe.MixingMeasure(measure.gate_coef, measure.gate_intercept, measure.expert_coef,
                                 measure.expert_intercept, measure.expert_var)
    v0 = param.to_vector(softmax)

    def f(v):
        return _held_log_lik(measure, active, X, y, v, param)

    # Central differences, h = 1e-6: ~1e-8 relative error on these sums.
    assert_allclose(score, _central_gradient(f, v0, 1e-6), rtol=1e-6, atol=1e-6)
    if top_k == 1:
        # One active expert per row: the held log-likelihood does not see the gate.
        assert_allclose(score[:param.n_gate], 0.0, atol=1e-12)

    def score_at(v):
        # The same active sets: no row sits within 1e-5 of a selection boundary here.
        return _held_selection_derivatives(param.to_measure(v).replace(
            gating="topk", top_k=top_k, topk_selection=selection), X, y, np.ones(200))[2]

    h = 1e-5
    fd_hess = np.array([(score_at(v0 + h * e) - score_at(v0 - h * e)) / (2 * h)
                        for e in np.eye(len(v0))])
    # The score is checked above; its central differences (h = 1e-5) are good to ~1e-8.
    assert_allclose(hessian, 0.5 * (fd_hess + fd_hess.T), rtol=1e-6,
                    atol=1e-6 * np.abs(hessian).max())


@pytest.mark.parametrize("k,top_k,d,selection", [(2, 1, 1, "affine"), (3, 2, 1, "affine"),
                                                 (3, 2, 3, "linear"), (4, 3, 1, "affine"),
                                                 (5, 3, 2, "affine")])
def test_active_sets_take_the_compiled_derivatives(k, top_k, d, selection, monkeypatch):
    # Each active set's softmax mixture goes through the compiled information pass: the
    # general derivatives to round-off, zero weights included.
    rng = np.random.default_rng(k * 10 + d)
    gate_coef = np.vstack([3.0 * rng.normal(size=(k - 1, d)), np.zeros((1, d))])
    measure = gmoe.MixingMeasure(gate_coef, np.r_[rng.normal(size=k - 1), 0.0],
                                 2.0 * rng.normal(size=(k, d)), rng.normal(size=k),
                                 rng.uniform(0.2, 1.0, size=k), gating="topk", top_k=top_k,
                                 topk_selection=selection)
    X = rng.normal(size=(1500, d))
    y = gmoe.sample_moe(measure, X, random_state=1)
    w = rng.uniform(0.0, 2.0, size=1500)
    w[:40] = 0.0
    active = measure.family.active_mask(X, measure.gate_coef, measure.gate_intercept)
    codes = active @ (1 << np.arange(k))
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        experts = np.flatnonzero((int(code) >> np.arange(k)) & 1)
        ref = experts[-1]
        sub = gmoe.MixingMeasure(gate_coef[experts] - gate_coef[ref],
                                 measure.gate_intercept[experts] - measure.gate_intercept[ref],
                                 measure.expert_coef[experts], measure.expert_intercept[experts],
                                 measure.expert_var[experts])
        param = _Parametrisation(sub)
        general = _compute_log_likelihood_derivatives(param, param.to_vector(sub), X[rows],
                                                      y[rows], w[rows])
        with monkeypatch.context() as patch:  # the compiled pass, never the fallback
            patch.setattr(gmoe._stopping, "_compute_log_likelihood_derivatives", None)
            compiled = _active_set_derivatives(param, sub, X[rows], y[rows], w[rows])
        for a, b in zip(general, compiled, strict=True):
            # Sums of ~1e3 rows in different orders: a few ulp of the largest entry.
            assert_allclose(b, a, rtol=1e-12, atol=1e-12 * np.max(np.abs(a)))


def test_gate_scale_shifts_scale_every_gate_or_a_pair_against_each_other_expert():
    measure = gmoe.MixingMeasure([[2.0], [4.0], [0.0]], [-1.0, 3.0, 0.0], [[1.0], [2.0], [3.0]],
                                 [0.0, 0.0, 0.0], [1.0, 1.0, 1.0], gating="topk", top_k=2)
    theta, shifts = _gate_scale_shifts(measure)
    assert_allclose(theta, [[2.0, -1.0], [4.0, 3.0], [0.0, 0.0]])
    assert len(shifts) == 4  # the temperature, then the pairs (0, 1), (0, 2), (1, 2)
    assert_allclose(shifts[0], theta)
    # Pair (0, 1) against expert 2: their mean row (3, 1) on both.
    assert_allclose(shifts[1], [[3.0, 1.0], [3.0, 1.0], [0.0, 0.0]])
    # Pair (0, 2) against expert 1: (1, -0.5) - (4, 3) on both, re-referenced: expert 1
    # moves by the opposite, the same gaps in the reference's frame.
    assert_allclose(shifts[2], [[0.0, 0.0], [3.0, 3.5], [0.0, 0.0]])
    # Pair (1, 2) against expert 0: (2, 1.5) - (2, -1), re-referenced.
    assert_allclose(shifts[3], [[0.0, -2.5], [0.0, 0.0], [0.0, 0.0]])


_TOP1_TRUTH = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                                 [0.3, 0.4], gating="topk", top_k=1)
# The truth's first cell doubled (the over-specified top-1 study's setting); the same
# model with its experts relabelled so that the reference is one of the doubled pair.
_DOUBLED_STARTS = {
    "pair first": gmoe.MixingMeasure([[25.0], [25.0], [0.0]], [-7.8, -8.2, 0.0],
                                     [[-20.0], [-20.0], [20.0]], [15.1, 14.9, -5.0],
                                     [0.3, 0.3, 0.4], gating="topk", top_k=2),
    "pair with the reference": gmoe.MixingMeasure([[-25.0], [0.0], [0.0]], [8.2, 0.4, 0.0],
                                                  [[20.0], [-20.0], [-20.0]],
                                                  [-5.0, 15.1, 14.9], [0.4, 0.3, 0.3],
                                                  gating="topk", top_k=2)}


@pytest.mark.parametrize("start", list(_DOUBLED_STARTS))
def test_top_k_fit_does_not_stop_below_a_ridge_of_its_gate_scale(start):
    # Without the gate-scale moves, the first fit stopped, converged, where sharpening the
    # doubled cell's pair against the other expert still raised L by 30.7 (a kink: no
    # fraction of the Newton step rose); with moves measured from the reference only, the
    # relabelled one stopped 0.85 below. Now neither gains more than tol along the ridge.
    X = gmoe.make_design(3000, "normal", random_state=1)
    y = gmoe.sample_moe(_TOP1_TRUTH, X, random_state=11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = gmoe.GaussianMoERegressor(3, gating="topk", top_k=2,
                                        init_params=_DOUBLED_STARTS[start], n_init=1,
                                        random_state=0).fit(X, y)
    assert est.converged_
    m = est.mixing_measure_
    log_lik = gmoe.conditional_log_density(m, X, y).sum()
    theta = np.column_stack([m.gate_coef, m.gate_intercept])
    # The doubled pair: the two experts nearest the truth's first expert.
    pair = np.argsort(np.abs(m.expert_coef[:, 0] + 20.0))[:2]
    other = int(np.setdiff1d(np.arange(3), pair)[0])
    for c in (2.0, 4.0, 16.0, 100.0, 1e4):
        moved = theta.copy()
        moved[pair] += (c - 1.0) * (theta[pair].mean(axis=0) - theta[other])
        moved -= moved[-1]
        point = m.replace(gate_coef=moved[:, :1], gate_intercept=moved[:, 1])
        assert gmoe.conditional_log_density(point, X, y).sum() - log_lik <= est.tol


def test_top_k_equal_to_n_experts_is_the_softmax_decrement():
    X, y = _data(TRUTH, 300, 6)
    point = TRUTH.replace(expert_intercept=[15.05, -5.03])
    dense = compute_newton_decrement(point, X, y, np.ones(300))
    topk = compute_newton_decrement(point.replace(gating="topk", top_k=2), X, y, np.ones(300))
    assert topk.gap == pytest.approx(dense.gap, rel=1e-10)


# --------------------------------------------------------------------- the schedule
class _Recorder:
    def __init__(self, gaps):
        self.gaps = list(gaps)
        self.calls = []

    def __call__(self, params):
        self.calls.append(params)
        return Decrement(self.gaps.pop(0) if self.gaps else 0.0, 0.0)


def test_rule_checks_only_after_small_gains_and_backs_off():
    evaluate = _Recorder([1.0] * 10)
    rule = StoppingRule(1e-3, evaluate)
    log_lik = 0.0
    assert not rule.update(log_lik, 0)
    for it in range(1, 8):  # gains above tol: never checked
        log_lik += 1.0
        assert not rule.update(log_lik, it)
    assert evaluate.calls == []
    for it in range(8, 60):  # small gains: checked at 8, then after 1, 2, 4, 8, 16, 16, ...
        log_lik += 1e-4
        rule.update(log_lik, it)
    assert evaluate.calls == [8, 9, 11, 15, 23, 39, 55]
    assert rule.n_checks == 7


def test_rule_stops_when_the_decrement_is_below_tol_and_concave():
    rule = StoppingRule(1e-3, lambda params: Decrement(5e-4, 1e-3))
    assert not rule.update(0.0, 0)
    assert rule.update(1e-4, 1)
    # Upward curvature that gains more than tol: not converged, and the move is offered once.
    upward = StoppingRule(1e-3, lambda params: Decrement(5e-4, -1e-2, 0.5, "move", 0.5))
    upward.update(0.0, 0)
    assert not upward.update(1e-5, 1)
    assert upward.take_move() == "move" and upward.take_move() is None
    # Upward curvature that gains at most tol: a flat direction, converged.
    flat = StoppingRule(1e-3, lambda params: Decrement(5e-4, -1e-2, 5e-4, "move", 5e-4))
    flat.update(0.0, 0)
    assert flat.update(1e-5, 1)


def test_rule_stops_only_once_a_step_raises_l_by_at_most_tol():
    # The decrement meets the rule, but EM has just gained more than tol: where EM keeps
    # gaining more than the quadratic model predicts (a crawl along flat directions), the
    # model is wrong about the gap. Stop once a step raises L by at most tol. (L ~ -1e4:
    # the filter lets checks through after rises up to 1e-6 |L| = 1e-2.)
    checks = []

    def evaluate(params):
        checks.append(params)
        return Decrement(5e-5, 1e-3)

    base = -1e4
    rule = StoppingRule(1e-4, evaluate)
    assert not rule.update(base, 0)
    assert not rule.update(base + 5e-3, 1)   # met, not settled: EM gained 5e-3
    assert not rule.update(base + 1e-2, 2)   # still gaining: no check (it could not stop)
    assert rule.update(base + 1e-2 + 5e-5, 3)  # a step that gains at most tol: converged
    assert checks == [1, 3]


def test_newton_move_is_trusted_where_the_model_predicted_it():
    # Near a maximum the halved Newton step gains what the quadratic model predicts; the
    # move of a curvature search has no prediction, so a saddle's move is never trusted.
    X, y = _data(TRUTH, 400, 3)
    w = np.ones(400)
    near = TRUTH.replace(expert_intercept=[15.05, -5.03], gate_intercept=[-7.9, 0.0])
    decrement = compute_newton_decrement(near, X, y, w)
    assert decrement.move is not None and decrement.move_predicted is not None
    assert decrement.move_gain == pytest.approx(decrement.move_predicted, rel=0.1)
    assert decrement.model_holds
    saddle = compute_newton_decrement(_symmetric_saddle(X, y), X, y, w)
    assert saddle.move is not None and saddle.move_predicted is None
    assert not saddle.model_holds


def test_max_iter_warning_says_em_was_still_crawling(monkeypatch):
    # The decrement meets the rule at every check, but every step still gains more than
    # tol: the run ends at max_iter, not converged, and the warning says why.
    monkeypatch.setattr(gmoe._em, "compute_newton_decrement",
                        lambda *args, **kwargs: Decrement(1e-9, 1.0))
    X, y = _data(TRUTH, 300, 0)
    start = TRUTH.replace(expert_intercept=[14.0, -4.0], gate_intercept=[-6.0, 0.0])
    est = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=3, tol=1e-9)
    with pytest.warns(ConvergenceWarning, match="still raised the log-likelihood by more "
                                                "than tol"):
        est.fit(X, y)
    assert not est.converged_


def _newton_move_decrement(gain, predicted, min_curvature):
    decrement = Decrement(2e-3, min_curvature, move="move", move_gain=gain)
    decrement.move_predicted = predicted
    return decrement


@pytest.mark.parametrize(("gain", "min_curvature", "stops_at_once"),
                         [(1.0e-3, 0.2, True),     # the model predicted the move: trusted
                          (2.0e-3, 0.2, False),    # it gained twice the prediction
                          (1.0e-3, 1e-12, False)])  # a flat direction the move cannot test
def test_rule_trusts_the_decrement_after_a_newton_move_the_model_predicted(
        gain, min_curvature, stops_at_once):
    results = iter([_newton_move_decrement(gain, 1e-3, min_curvature),
                    Decrement(1e-6, min_curvature), Decrement(1e-6, min_curvature)])
    base = -1e4
    rule = StoppingRule(1e-4, lambda params: next(results))
    rule.update(base, 0)
    assert not rule.update(base + 5e-3, 1)   # fails; offers the Newton move
    assert rule.take_move() == "move"
    # The move's own rise (more than tol) is the last step; the decrement meets the rule.
    assert rule.update(base + 5e-3 + gain, 2) == stops_at_once
    if not stops_at_once:
        assert rule.update(base + 5e-3 + gain + 5e-5, 3)  # an EM step gaining <= tol


def test_top_k_rule_also_waits_for_the_log_likelihood_to_settle():
    evaluate = _Recorder([])
    rule = StoppingRule(1e-3, evaluate, window=TOPK_WINDOW)
    rule.update(0.0, 0)
    # A boundary move raises L by 0.5 at iteration 3: no stop until 5 quiet iterations.
    gains = [1e-4, 1e-4, 0.5, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4, 1e-4]
    log_lik, stopped = 0.0, None
    for it, gain in enumerate(gains, start=1):
        log_lik += gain
        if rule.update(log_lik, it):
            stopped = it
            break
    assert stopped == 3 + TOPK_WINDOW  # the first 5 quiet iterations after the move
    # Checked at the first small gain (the rule met, L not settled); again after the move
    # (L rose past that check: out of date); then once L settled.
    assert evaluate.calls == [1, 4, stopped]


def test_top_k_rule_moves_before_the_log_likelihood_settles():
    # While EM crawls (small gains, L not settled over the window), a failed check still
    # proposes its move, so that the moves can follow each other.
    def evaluate(params):
        return Decrement(1.0, 0.0, move="move", move_gain=0.5)

    rule = StoppingRule(1e-3, evaluate, window=TOPK_WINDOW)
    rule.update(0.0, 0)
    assert not rule.update(1e-4, 1)  # 1 < TOPK_WINDOW iterations: cannot have settled
    assert rule.n_checks == 1 and rule.take_move() == "move"


def test_top_k_rule_never_offers_a_move_of_an_earlier_check():
    # A check fails and proposes a move; EM goes on, and a later check (before L settled)
    # meets the rule: the earlier move is stale and must not be offered then.
    decrements = [Decrement(1.0, 0.0, move="old move", move_gain=0.5), Decrement(0.0, 0.0)]
    rule = StoppingRule(1e-3, lambda params: decrements.pop(0), window=TOPK_WINDOW)
    rule.update(0.0, 0)
    assert not rule.update(1e-4, 1)  # the failed check: its move is left untaken
    assert not rule.update(2e-4, 2)  # meets the rule, L not settled
    assert rule.n_checks == 2 and rule.take_move() is None


def test_top_k_rule_checks_again_once_l_rises_past_a_check_that_met_it():
    calls = []

    def evaluate(params):
        calls.append(params)
        return Decrement(0.0, 0.0)

    rule = StoppingRule(1e-3, evaluate, window=TOPK_WINDOW)
    rule.update(0.0, 0)
    assert not rule.update(1e-4, 1)  # meets the rule early: waits for L to settle
    assert not rule.update(9e-4, 2)  # L rose by 8e-4 <= tol since: no new check
    assert not rule.update(1.7e-3, 3)  # by 1.6e-3 > tol since: out of date, checked
    assert calls == [1, 3]


# ------------------------------------------------------------------- the estimator
def test_converged_only_when_the_criterion_holds():
    X, y = _data(TRUTH, 400, 7)
    est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)
    assert est.converged_ and est.convergence_gap_ <= est.tol
    with pytest.warns(ConvergenceWarning, match=re.escape("max_iter=1")):
        short = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, max_iter=1).fit(X, y)
    assert short.converged_ is False and short.convergence_gap_ > short.tol


def test_gap_is_in_total_log_likelihood_units():
    # Weighting every row by c multiplies L, so its gap too, by c: tol is absolute.
    X, y = _data(TRUTH, 300, 8)
    point = TRUTH.replace(expert_intercept=[15.05, -5.03])
    one = compute_newton_decrement(point, X, y, np.ones(300)).gap
    many = compute_newton_decrement(point, X, y, np.full(300, 50.0)).gap
    assert many == pytest.approx(50.0 * one, rel=1e-10)


def _over_specified_fit(n, seed, **params):
    rng = np.random.default_rng(seed)
    X = gmoe.make_design(n, "grid")
    y = gmoe.sample_moe(TRUTH, X, random_state=rng)
    start = make_near_truth_start(TRUTH, 3, n, rng)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", gmoe.DegenerateExpertWarning)
        fit = gmoe.GaussianMoERegressor(3, init_params=start, max_iter=20000, **params)
        return fit.fit(X, y), X, y


def test_over_specified_fit_reaches_the_maximum():
    """Non-regression test for the issue "Fits that reach the maximum likelihood".

    The relative-change rule stopped over-specified fits after 2-4 iterations at large n
    (|L| grows like n, so the threshold loosened with it); continuing EM raised L by 2-3
    units.
    """
    fit, X, y = _over_specified_fit(3000, 1)
    tight, _, _ = _over_specified_fit(3000, 1, tol=fit.tol / 1000)
    assert fit.converged_ and fit.n_iter_ > 10
    total = len(y) * (tight.lower_bound_ - fit.lower_bound_)
    assert total < 0.01
    assert fit.convergence_gap_ <= fit.tol


@pytest.mark.slow
@pytest.mark.parametrize("n_experts", [3, 4])
def test_over_specified_fit_reaches_the_maximum_at_large_n(n_experts):
    """Non-regression test for the issue "Fits that reach the maximum likelihood" (n = 1e5)."""
    rng = np.random.default_rng(0)
    n = 100_000
    X = gmoe.make_design(n, "grid")
    y = gmoe.sample_moe(TRUTH, X, random_state=rng)
    start = make_near_truth_start(TRUTH, n_experts, n, rng)
    fits = []
    for tol in (1e-4, 1e-7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gmoe.DegenerateExpertWarning)
            est = gmoe.GaussianMoERegressor(n_experts, init_params=start, max_iter=50000, tol=tol)
            fits.append(est.fit(X, y))
    default, tight = fits
    assert default.converged_ and default.n_iter_ > 10
    assert n * (tight.lower_bound_ - default.lower_bound_) < 0.01
    d_default = gmoe.metrics.voronoi_loss(default, TRUTH, kind="over")
    d_tight = gmoe.metrics.voronoi_loss(tight, TRUTH, kind="over")
    assert d_default == pytest.approx(d_tight, rel=0.05)


@pytest.mark.slow
def test_over_specified_fit_stops_where_em_no_longer_gains():
    # benchmarks/bench_convergence.py's k = 4, n = 1e5, replication 1: two extra experts'
    # gates sharpen without bound (slopes ~1e5 and growing) while L creeps towards a
    # supremum; the Newton decrement there fell below tol while each EM step still gained
    # ~1e-3, and the fit stopped 0.12 below the tight one. With the rule that a step must
    # also gain at most tol, it stops within 0.01 of it.
    rng = np.random.default_rng(np.random.SeedSequence(20230502, spawn_key=(4, 100_000, 1)))
    X = gmoe.make_design(100_000, "grid")
    y = gmoe.sample_moe(TRUTH, X, random_state=rng)
    start = make_near_truth_start(TRUTH, 4, 100_000, rng)
    fits = []
    for tol in (1e-4, 1e-7):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", gmoe.DegenerateExpertWarning)
            est = gmoe.GaussianMoERegressor(4, init_params=start, tol=tol, max_iter=2000,
                                            reg_var=1e-6)
            fits.append(est.fit(X, y))
    default, tight = fits
    assert default.converged_ and tight.converged_
    assert 100_000 * (tight.lower_bound_ - default.lower_bound_) < 0.01


def test_moves_keep_em_monotone(monkeypatch):
    # The over-specified fit of the non-regression test crawls along flat directions; the
    # failed checks' Newton and curvature moves are taken, and L still never decreases.
    taken = []
    original = StoppingRule.take_move

    def spy(self):
        move = original(self)
        if move is not None:
            taken.append(move)
        return move

    monkeypatch.setattr(StoppingRule, "take_move", spy)
    fit, X, y = _over_specified_fit(3000, 1)
    assert taken
    trace = fit.lower_bounds_
    assert len(trace) == fit.n_iter_ + 1
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))


def test_top_k_fit_converges_at_a_maximum_on_a_selection_boundary():
    # The truth of the top-K study: the reference always selected, a switch at x = 1/2.
    truth = gmoe.MixingMeasure([[6.0], [-6.0], [0.0]], [-4.0, 2.0, 0.0],
                               [[-10.0], [10.0], [3.0]], [8.0, -4.0, 2.0], [0.09, 0.16, 0.04],
                               gating="topk", top_k=2)
    rng = np.random.default_rng(0)
    X = gmoe.make_design(2000, "grid")
    y = gmoe.sample_moe(truth, X, random_state=rng)
    start = make_near_truth_start(truth, 3, 2000, rng)
    est = gmoe.GaussianMoERegressor(3, gating="topk", top_k=2, init_params=start,
                                    max_iter=2000).fit(X, y)
    assert est.converged_ and est.convergence_gap_ <= est.tol
    # There the gradient in the gate, the active sets held, does not vanish: the Newton
    # step crosses a boundary and never raises L; the experts' decrement is what is left.
    decrement = compute_newton_decrement(est.mixing_measure_, X, y, np.ones(2000))
    assert decrement.gap > est.tol and decrement.kink
    assert decrement.smooth_gap <= est.tol
    # And no small move of the gate raises L: the maximum of the piecewise likelihood.
    m = est.mixing_measure_
    at_fit = gmoe.conditional_log_density(m, X, y).sum()
    for step in (1e-4, -1e-4):
        moved = m.replace(gate_intercept=m.gate_intercept + [step, 0.0, 0.0])
        assert gmoe.conditional_log_density(moved, X, y).sum() <= at_fit + est.tol


def test_kink_uses_the_smooth_part():
    decrement = Decrement(0.5, 1e-2, smooth_gap=1e-5)
    assert not decrement.converged(1e-4)
    decrement.kink = True
    assert decrement.converged(1e-4) and decrement.predicted_gain == 1e-5


@pytest.mark.parametrize("gating", ["softmax", "activation"])  # blocked and array passes
def test_a_move_that_ends_the_run_is_checked_for_empty_experts(monkeypatch, gating):
    # A move that meets the rule ends the run before any EM step has looked at it: a move
    # that empties an expert must still be reported (and restarted on request).
    options = {"activation": "tanh", "temperature": 1.0} if gating == "activation" else {}
    truth = gmoe.MixingMeasure([[2.0], [0.0]], [0.0, 0.0], [[1.0], [-1.0]], [1.0, -1.0],
                               [0.25, 0.25], gating=gating, **options)
    X = gmoe.make_design(500, "uniform", low=-2.0, high=2.0, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    emptied = truth.replace(gate_intercept=[-800.0, 0.0])  # expert 0's gate weight ~ 0
    original_update = StoppingRule.update
    moved = []

    def take_move(self):
        if moved:
            return None
        moved.append(True)
        return emptied

    def update(self, log_lik, params):
        return True if moved else original_update(self, log_lik, params)

    monkeypatch.setattr(StoppingRule, "take_move", take_move)
    monkeypatch.setattr(StoppingRule, "update", update)
    with pytest.warns(gmoe.DegenerateExpertWarning):
        est = gmoe.GaussianMoERegressor(2, init_params=truth, n_init=1, gating=gating,
                                        **options).fit(X, y)
    assert moved and est.converged_ and est.degenerate_experts_ == [0]


def test_smooth_decrement_sees_a_top_k_gate_short_of_its_within_selection_optimum():
    # A top-2 fit's gate rows place the selection boundary and weigh the selected experts;
    # moving experts 0 and 1 alike against the reference keeps the boundary (their
    # difference) and changes only the weights. At the fit the decrement along such moves
    # is ~0; moved off it, the decrement predicts what L lost (a quadratic model of a
    # smooth function), which the experts' decrement alone does not see.
    truth = gmoe.MixingMeasure([[6.0], [-6.0], [0.0]], [-4.0, 2.0, 0.0],
                               [[-10.0], [10.0], [3.0]], [8.0, -4.0, 2.0],
                               [0.09, 0.16, 0.04], gating="topk", top_k=2)
    X = gmoe.make_design(5000, "grid")
    y = gmoe.sample_moe(truth, X, random_state=3)
    weights = np.ones(5000)
    fit = gmoe.GaussianMoERegressor(3, gating="topk", top_k=2, init_params=truth,
                                    n_init=1, random_state=0).fit(X, y).mixing_measure_
    assert smooth_decrement(fit, X, y, weights) <= 1e-4
    moved = fit.replace(gate_intercept=fit.gate_intercept + [0.05, 0.05, 0.0])
    lost = (gmoe.conditional_log_density(fit, X, y).sum()
            - gmoe.conditional_log_density(moved, X, y).sum())
    assert lost > 1.0
    # Quadratic model against the exact loss: third-order terms of a 0.05 move.
    assert smooth_decrement(moved, X, y, weights) == pytest.approx(lost, rel=0.05)
    experts_only = compute_newton_decrement(moved, X, y, weights)
    assert experts_only.smooth_gap < 1e-3 * lost
    # A softmax gate has no boundary: the smooth decrement is the ordinary one.
    dense = moved.replace(gating="softmax")
    assert smooth_decrement(dense, X, y, weights) == \
        compute_newton_decrement(dense, X, y, weights).gap



@pytest.mark.slow  # ~50 s: the search comes late in one start's long crawl
def test_a_search_step_out_of_the_domain_leaks_no_numpy_warning():
    # An activation gate fitted on 100 rows of the activation study from random starts:
    # a curvature search tries a long step on which the temperature underflows and the
    # logits overflow. L there is not finite, so it is no gain; numpy's overflow warning
    # about that trial point would only alarm the user. (Found by refitting the study's
    # tasks from data-driven starts.)
    from pathlib import Path

    from gmoe.simulation import load_experiment
    from gmoe.simulation.tasks import task_data

    experiment = load_experiment(Path(__file__).resolve().parents[1] / "simulations"
                                 / "activation.toml")
    X, y, streams = task_data(experiment, 100, 14)
    est = gmoe.GaussianMoERegressor(**experiment.estimator_params(), init_params="random",
                                    n_init=10, random_state=streams.fit_seed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    assert np.isfinite(est.lower_bound_)
