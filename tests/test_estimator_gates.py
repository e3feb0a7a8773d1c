"""GaussianMoERegressor with the temperature, activation and top-K gates (issue 5)."""

import re
import warnings

import _reference as ref
import numpy as np
import pytest
from numpy.testing import assert_allclose
from sklearn.exceptions import ConvergenceWarning

import gmoe
from gmoe.exceptions import DegenerateExpertWarning
from gmoe.gates import ActivationGating, GateData, GateLayout

EXPERTS_52 = dict(expert_coef=[[-20.0], [20.0]], expert_intercept=[15.0, -5.0],
                  expert_var=[0.09, 0.16])
# the temperature study: gamma* = the softmax truth of paper 1's reference protocol.
TEMPERATURE_TRUTH = gmoe.MixingMeasure([[6.25], [0.0]], [-2.0, 0.0], **EXPERTS_52,
                                       gating="temperature", temperature=0.25)
TANH_TRUTH = gmoe.MixingMeasure([[4.0], [-1.0]], [-0.9, 0.0], **EXPERTS_52,
                                gating="activation", activation="tanh", temperature=0.25)
# Three selection regions on [0, 1]: expert 1 below 1/3, expert 0 above 2/3, the
# reference between.
TOP1_TRUTH = gmoe.MixingMeasure([[6.0], [-6.0], [0.0]], [-4.0, 2.0, 0.0], [[-5.0], [5.0], [0.0]],
                                [3.0, -2.0, 1.0], [0.09, 0.16, 0.04], gating="topk", top_k=1)


def _data(truth, n, seed):
    X = gmoe.make_design(n, "uniform", n_features=truth.n_features, random_state=seed)
    return X, gmoe.sample_moe(truth, X, random_state=seed + 1)


def _quiet():
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("ignore", (ConvergenceWarning, DegenerateExpertWarning))
    return ctx


# ------------------------------------------------------------------------ temperature
def test_temperature_with_fixed_tau_equals_softmax_on_gamma():
    X, y = _data(TEMPERATURE_TRUTH, 3000, 0)
    temp = gmoe.GaussianMoERegressor(2, gating="temperature", temperature=0.5, n_init=2,
                                     random_state=3).fit(X, y)
    soft = gmoe.GaussianMoERegressor(2, gating="softmax", n_init=2, random_state=3).fit(X, y)
    assert temp.temperature_ == 0.5  # held at the user's value
    gamma = temp.mixing_measure_.identifiable()
    # The same EM path on gamma = beta / tau, up to round-off of the rescaling.
    assert_allclose(gamma.gate_coef, soft.gate_coef_, rtol=1e-7, atol=1e-7)
    assert_allclose(gamma.gate_intercept, soft.gate_intercept_, rtol=1e-7, atol=1e-7)
    assert_allclose(temp.expert_coef_, soft.expert_coef_, rtol=1e-9)
    assert temp.lower_bound_ == pytest.approx(soft.lower_bound_, rel=1e-12)


def test_temperature_tau_is_the_start_s_and_gamma_is_recovered():
    X, y = _data(TEMPERATURE_TRUTH, 20000, 1)
    start = TEMPERATURE_TRUTH.replace(temperature=0.8, gate_coef=[[0.8 * 25.0], [0.0]],
                                      gate_intercept=[-0.8 * 8.0, 0.0])
    est = gmoe.GaussianMoERegressor(2, gating="temperature", init_params=start).fit(X, y)
    assert est.temperature_ == 0.8  # the data cannot determine tau: it stays the start's
    gamma = est.mixing_measure_.identifiable()
    # gamma's SDs at n = 2e4 are ~0.5 (slope) and ~0.16 (intercept), as for the softmax
    # truth of paper 1's reference protocol (test_estimator): about 6 SD.
    assert abs(gamma.gate_coef[0, 0] - 25.0) < 3.0
    assert abs(gamma.gate_intercept[0] + 8.0) < 1.0
    assert_allclose(est.expert_coef_, TEMPERATURE_TRUTH.expert_coef, atol=0.1)


# ------------------------------------------------------------------------- activation
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "identity"])
@pytest.mark.parametrize("learn", [True, False])
def test_activation_gate_derivatives_match_finite_differences(activation, learn):
    rng = np.random.default_rng(0)
    n, d, k = 50, 2, 3
    X = rng.normal(size=(n, d))
    resp = rng.dirichlet(np.ones(k), size=n) * rng.uniform(0.5, 2.0, size=(n, 1))
    family = ActivationGating(activation)
    if activation == "identity":
        # It holds tau (the temperature gate's, redundant with a common scale of the gate
        # parameters): asked to learn it, its layout has no tau.
        assert GateLayout(family, k, d, learn).tau_idx is None
        learn = False
    data = GateData.from_rows(X, resp, learn_temperature=learn)
    layout = GateLayout(family, k, d, learn)
    assert layout.size == k * d + k - 1 + (1 if learn else 0)
    vector = rng.normal(size=layout.size)
    if learn:
        vector[layout.tau_idx] = np.log(0.7)

    def objective(v):
        return family.gate_objective(data, layout.unpack(v, 0.7))

    def derivatives(v):
        return family.gate_derivatives(data, layout.unpack(v, 0.7), layout)

    value, grad, hess = derivatives(vector)
    assert value == pytest.approx(objective(vector), rel=1e-14)
    h = 1e-6
    basis = np.eye(len(vector))
    fd_grad = np.array([(objective(vector + h * e) - objective(vector - h * e)) / (2 * h)
                        for e in basis])
    fd_hess = np.array([(derivatives(vector + h * e)[1] - derivatives(vector - h * e)[1])
                        / (2 * h) for e in basis])
    # Central differences with h = 1e-6 on O(10) values: truncation + round-off ~1e-8.
    assert_allclose(grad, fd_grad, rtol=1e-6, atol=1e-6)
    assert_allclose(hess, fd_hess, rtol=1e-6, atol=1e-6)


def _symmetric_image(measure):
    """(beta1_1, beta1_2) -> (-beta1_2, -beta1_1) for a two-expert tanh gate."""
    return measure.replace(gate_coef=-measure.gate_coef[::-1])


def test_tanh_recovers_truth_or_its_symmetric_image():
    X, y = _data(TANH_TRUTH, 20000, 0)
    est = gmoe.GaussianMoERegressor(2, gating="activation", activation="tanh",
                                    temperature=1.0, n_init=3, random_state=0).fit(X, y)
    fitted = est.mixing_measure_
    # Put the fitted experts in the truth's order (the expert lines are well apart).
    if fitted.expert_coef[0, 0] > 0:
        fitted = fitted.replace(gate_coef=fitted.gate_coef[::-1],
                                gate_intercept=fitted.gate_intercept[::-1],
                                expert_coef=fitted.expert_coef[::-1],
                                expert_intercept=fitted.expert_intercept[::-1],
                                expert_var=fitted.expert_var[::-1], rebase=True)
    errors = [np.abs(fitted.gate_coef - cand.gate_coef).max()
              for cand in (TANH_TRUTH, _symmetric_image(TANH_TRUTH))]
    # The tanh gate's raw parameters are weakly determined (beta1 trades off against tau):
    # over 8 data seeds at n = 2e4 the slopes' SD was 0.6, beta0's 0.09 and tau's 0.03.
    # About 3 SD each.
    assert min(errors) < 2.0
    assert abs(fitted.gate_intercept[0] + 0.9) < 0.3
    assert abs(fitted.temperature - 0.25) < 0.1
    assert_allclose(fitted.expert_coef, TANH_TRUTH.expert_coef, atol=0.1)
    # What the data do determine well is the gate itself (the truth and its image share it).
    grid = np.linspace(0, 1, 201)[:, None]
    gate_error = np.abs(np.exp(fitted.log_gate(grid)) - np.exp(TANH_TRUTH.log_gate(grid)))
    assert gate_error.max() < 0.05
    # The MLE is at least as likely as the truth.
    truth_mean = gmoe.conditional_log_density(TANH_TRUTH, X, y).mean()
    assert est.lower_bound_ >= truth_mean


def test_sigmoid_fit_equals_the_mapped_tanh_fit():
    X, y = _data(TANH_TRUTH, 3000, 2)
    start_tanh = TANH_TRUTH.replace(gate_coef=[[3.0], [-0.5]], gate_intercept=[-0.5, 0.0],
                                    temperature=0.4)
    # sigmoid (b1, b0, tau) is tanh (b1 / 2, 2 b0, 2 tau): map the start the other way.
    start_sigmoid = start_tanh.replace(activation="sigmoid",
                                       gate_coef=2 * start_tanh.gate_coef,
                                       gate_intercept=start_tanh.gate_intercept / 2,
                                       temperature=start_tanh.temperature / 2)
    # A tight tol: the gate slopes are compared to 1e-4, and the flat directions of L move
    # them by more than that while L changes by less than 1e-6 relative.
    fit_tanh = gmoe.GaussianMoERegressor(2, gating="activation", activation="tanh",
                                         init_params=start_tanh, tol=1e-9).fit(X, y)
    fit_sig = gmoe.GaussianMoERegressor(2, gating="activation", activation="sigmoid",
                                        init_params=start_sigmoid, tol=1e-9).fit(X, y)
    assert fit_sig.lower_bound_ == pytest.approx(fit_tanh.lower_bound_, rel=1e-8)
    # Newton is affine-invariant, so both runs follow the same path up to round-off and
    # the eigenvalue clipping (inactive here); EM's tol bounds the rest.
    assert_allclose(fit_sig.gate_coef_ / 2, fit_tanh.gate_coef_, rtol=1e-4, atol=1e-4)
    assert_allclose(2 * fit_sig.gate_intercept_, fit_tanh.gate_intercept_, rtol=1e-4,
                    atol=1e-4)
    assert 2 * fit_sig.temperature_ == pytest.approx(fit_tanh.temperature_, rel=1e-4)


def test_identity_activation_equals_temperature_gate():
    X, y = _data(TEMPERATURE_TRUTH, 3000, 3)
    temp = gmoe.GaussianMoERegressor(2, gating="temperature", temperature=0.25, n_init=2,
                                     random_state=0).fit(X, y)
    # learn_temperature=True (the default) is ignored: the identity's tau is redundant
    # with a common scale of the gate parameters, and learned it drifted along that ridge.
    ident = gmoe.GaussianMoERegressor(2, gating="activation", activation="identity",
                                      temperature=0.25, n_init=2, random_state=0).fit(X, y)
    assert "log_temperature" not in gmoe.fit_results(ident, X, y).param_names
    # The same family of densities (identity adds a redundant translation of beta1):
    # the same maximum likelihood and the same fitted conditional density.
    assert ident.lower_bound_ == pytest.approx(temp.lower_bound_, rel=1e-6)
    ident.align_to(temp)  # the experts are exchangeable: compare gates label for label
    assert_allclose(ident.predict_proba(X), temp.predict_proba(X), atol=1e-3)
    assert ident.temperature_ == 0.25


def test_activation_rejects_a_symmetric_fixed_point_start():
    start = TANH_TRUTH.replace(gate_coef=[[2.0], [-2.0]])
    X, y = _data(TANH_TRUTH, 200, 0)
    est = gmoe.GaussianMoERegressor(2, gating="activation", activation="tanh",
                                    init_params=start)
    with pytest.raises(ValueError, match=re.escape("gate_coef[0] = -gate_coef[1]")):
        est.fit(X, y)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("gating, options", [
    ("temperature", {"temperature": 0.5}),
    ("activation", {"activation": "tanh"}),
    ("activation", {"activation": "gelu", "learn_temperature": False}),
])
def test_log_likelihood_never_decreases_for_dense_gates(seed, gating, options):
    truth = TANH_TRUTH if gating == "activation" else TEMPERATURE_TRUTH
    X, y = _data(truth, 400, seed)
    ctx = _quiet()
    try:
        est = gmoe.GaussianMoERegressor(2, gating=gating, n_init=1, init_params="random",
                                        random_state=seed, max_iter=100, tol=0,
                                        **options).fit(X, y)
    finally:
        ctx.__exit__(None, None, None)
    steps = np.diff(est.lower_bounds_)
    assert np.all(steps >= -1e-12 * np.abs(est.lower_bounds_[1:])), steps.min()


# ------------------------------------------------------------------------------ top-K
def _selected(measure, grid):
    return np.argmax(measure.log_gate(grid), axis=1)


def test_top1_moves_boundaries_started_away_to_the_truth():
    X, y = _data(TOP1_TRUTH, 4000, 0)
    # Boundaries at 0.25 and 0.8 instead of 1/3 and 2/3.
    start = TOP1_TRUTH.replace(gate_coef=[[5.0], [-8.0], [0.0]], gate_intercept=[-4.0, 2.0, 0.0])
    grid = np.linspace(0, 1, 2001)[:, None]
    start_disagreement = np.mean(_selected(start, grid) != _selected(TOP1_TRUTH, grid))
    assert start_disagreement > 0.15  # the test would fail for a gate that never moves
    est = gmoe.GaussianMoERegressor(3, gating="topk", top_k=1, init_params=start).fit(X, y)
    disagreement = np.mean(_selected(est.mixing_measure_, grid) != _selected(TOP1_TRUTH, grid))
    # A boundary is a change point: its error is O(1/n) ~ 1e-3 per boundary here.
    assert disagreement < 0.01
    assert_allclose(est.expert_coef_, TOP1_TRUTH.expert_coef, atol=0.15)
    assert est.lower_bound_ >= est.lower_bounds_[0]


def test_top1_from_kmeans_recovers_regions_and_experts():
    X, y = _data(TOP1_TRUTH, 4000, 5)
    est = gmoe.GaussianMoERegressor(3, gating="topk", top_k=1, n_init=3, init_params="kmeans",
                                    random_state=0).fit(X, y)
    fitted = est.mixing_measure_
    grid = np.linspace(0, 1, 2001)[:, None]
    fitted_sel = _selected(fitted, grid)
    true_sel = _selected(TOP1_TRUTH, grid)
    # Match labels by majority over the grid, then compare regions.
    mapping = {j: np.bincount(true_sel[fitted_sel == j], minlength=3).argmax()
               for j in np.unique(fitted_sel)}
    relabelled = np.array([mapping[j] for j in fitted_sel])
    assert np.mean(relabelled != true_sel) < 0.01
    for j, t in mapping.items():
        # Expert slopes: ~1300 points per region, SD ~0.03; 5 SD.
        assert abs(fitted.expert_coef[j, 0] - TOP1_TRUTH.expert_coef[t, 0]) < 0.15


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("top_k, selection", [(1, "affine"), (2, "affine"), (1, "linear"),
                                              (2, "linear")])
def test_topk_log_likelihood_never_decreases(seed, top_k, selection):
    truth = TOP1_TRUTH.replace(top_k=top_k)
    X, y = _data(truth, 600, seed)
    ctx = _quiet()
    try:
        est = gmoe.GaussianMoERegressor(3, gating="topk", top_k=top_k, topk_selection=selection,
                                        n_init=1, random_state=seed, max_iter=40).fit(X, y)
    finally:
        ctx.__exit__(None, None, None)
    trace = est.lower_bounds_
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:]))
    # Converged iterates differ in the last bits of L: the last is the best up to round-off.
    assert est.lower_bound_ == pytest.approx(trace.max(), rel=1e-14, abs=0)
    assert est.lower_bound_ >= trace[0]


def test_topk_with_k_equal_to_n_experts_is_softmax():
    X, y = _data(TEMPERATURE_TRUTH, 2000, 4)
    # Both run to a tight tol (their paths differ: the families' passes round differently
    # and take different M-steps), so that both reach the one maximum.
    topk = gmoe.GaussianMoERegressor(2, gating="topk", top_k=2, n_init=2, tol=1e-9,
                                     random_state=1).fit(X, y)
    soft = gmoe.GaussianMoERegressor(2, n_init=2, tol=1e-9, random_state=1).fit(X, y)
    assert topk.lower_bound_ == pytest.approx(soft.lower_bound_, rel=1e-12)
    # The maximum is flat along the steep gate (slope ~27), where the parameters differ by
    # ~1e-8 relative.
    assert_allclose(topk.mixing_measure_.to_vector(), soft.mixing_measure_.to_vector(),
                    rtol=1e-6, atol=1e-6)


def test_topk_log_likelihood_matches_logsumexp(global_random_seed):
    from scipy.special import logsumexp

    from gmoe.gates.topk import compute_log_likelihood

    rng = np.random.default_rng(global_random_seed)
    n, d, k = 300, 2, 4
    X = rng.normal(size=(n, d))
    coef, intercept = rng.normal(size=(k, d)), rng.normal(size=k)
    coef[-1], intercept[-1] = 0.0, 0.0
    density = rng.normal(0, 30, size=(n, k))
    weights = rng.uniform(0, 2, size=n)
    weights[:10] = 0.0
    for top_k, selection in [(1, "affine"), (2, "affine"), (2, "linear"), (4, "affine")]:
        family = gmoe.gates.make_gating("topk", top_k=top_k, topk_selection=selection,
                                         n_experts=k)
        log_gate = ref.log_gate(X, coef, intercept, gating="topk", top_k=top_k,
                                topk_selection=selection)
        expected = np.dot(weights, logsumexp(log_gate + density, axis=1))
        got = compute_log_likelihood(family, X, coef, intercept, density, weights)
        # n = 300 terms of size ~30-100, summed in another order: relative 1e-12.
        assert got == pytest.approx(expected, rel=1e-12)
