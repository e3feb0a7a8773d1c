"""Inference: analytic score/Hessian, observed-information SEs, flexmix refit parity, bootstrap."""

import json
import re
import warnings
from pathlib import Path

import joblib
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import stats
from sklearn.base import clone

import gmoe
from gmoe.exceptions import DegenerateExpertWarning, SingularInformationWarning
from gmoe.inference import (
    BootstrapResults,
    MoEResults,
    _compute_log_likelihood_derivatives,
    _invert_information,
    _Parametrisation,
    bootstrap,
    fit_results,
)

DATA = Path(__file__).parent / "data" / "flexmix_refit"

TRUTH_2 = gmoe.MixingMeasure([[2.0], [0.0]], [0.5, 0.0], [[2.0], [-1.5]], [1.0, -1.0],
                             [0.25, 0.49])


def _random_measure(rng, gating, k=3, d=2, **options):
    gate_coef = rng.normal(size=(k, d))
    gate_intercept = rng.normal(size=k)
    if gating != "activation":
        gate_coef[-1] = 0.0
    gate_intercept[-1] = 0.0
    return gmoe.MixingMeasure(gate_coef, gate_intercept, rng.normal(size=(k, d)),
                              rng.normal(size=k), rng.uniform(0.2, 1.0, size=k),
                              gating=gating, **options)


def _data(truth, n, seed, low=-2.0, high=2.0):
    X = gmoe.make_design(n, "uniform", low=low, high=high, n_features=truth.n_features,
                         random_state=seed)
    return X, gmoe.sample_moe(truth, X, random_state=seed + 1)


def _fit(truth, X, y, **kwargs):
    params = dict(init_params=truth, tol=1e-12, max_iter=3000)
    params.update(kwargs)
    return gmoe.GaussianMoERegressor(truth.n_experts, **params).fit(X, y)


# ---------------------------------------------------------------------- derivatives
GATE_CASES = [
    ("softmax", {}, False),
    ("temperature", {"temperature": 0.7}, False),
    ("activation", {"activation": "tanh", "temperature": 0.7}, True),
    ("activation", {"activation": "tanh", "temperature": 0.7}, False),
    ("activation", {"activation": "gelu", "temperature": 1.3}, True),
    ("activation", {"activation": "gelu", "temperature": 1.3}, False),
    ("activation", {"activation": "sigmoid", "temperature": 0.5}, True),
]


@pytest.mark.parametrize(("gating", "options", "learn"), GATE_CASES)
def test_score_and_hessian_match_central_differences(gating, options, learn,
                                                      global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    measure = _random_measure(rng, gating, **options)
    n = 150
    X = rng.normal(size=(n, measure.n_features))
    # Off-model noise so that the point is not a maximum (the score is not zero).
    y = gmoe.sample_moe(measure, X, random_state=rng) + 0.3 * rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    param = _Parametrisation(measure, learn)
    v = param.to_vector(measure)

    def loglik(vec):
        # Independent path: the numba E-step of the model rebuilt from the vector.
        return float(w @ gmoe.conditional_log_density(param.to_measure(vec), X, y))

    log_lik, score, hess = _compute_log_likelihood_derivatives(param, v, X, y, w)
    assert_allclose(log_lik, loglik(v), rtol=1e-12)

    p = v.size
    h = 1e-5
    eye = np.eye(p)
    score_fd = np.array([(loglik(v + h * e) - loglik(v - h * e)) / (2 * h) for e in eye])
    # Central differences: error ~ h^2 L''' + eps |L| / h, ~1e-8 relative here.
    assert_allclose(score, score_fd, rtol=0, atol=1e-6 * np.max(np.abs(score)))

    hess_fd_score = np.array([
        (_compute_log_likelihood_derivatives(param, v + h * e, X, y, w)[1]
         - _compute_log_likelihood_derivatives(param, v - h * e, X, y, w)[1]) / (2 * h)
        for e in eye])
    assert_allclose(hess, hess_fd_score, rtol=0, atol=1e-6 * np.max(np.abs(hess)))

    # Second central differences of L itself: error ~ eps |L| / h^2 ~ 1e-5 relative.
    h2 = 1e-4
    hess_fd = np.empty((p, p))
    for a in range(p):
        for b in range(a, p):
            ea, eb = h2 * eye[a], h2 * eye[b]
            hess_fd[a, b] = hess_fd[b, a] = (
                loglik(v + ea + eb) - loglik(v + ea - eb) - loglik(v - ea + eb)
                + loglik(v - ea - eb)) / (4 * h2 * h2)
    assert_allclose(hess, hess_fd, rtol=0, atol=1e-4 * np.max(np.abs(hess)))


def test_parametrisation_round_trip(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    for gating, options, learn in GATE_CASES:
        measure = _random_measure(rng, gating, **options)
        param = _Parametrisation(measure, learn)
        v = param.to_vector(measure)
        assert v.size == len(param.names) == len(set(param.names))
        back = param.to_measure(v)
        assert_allclose(param.to_vector(back), v, rtol=1e-14, atol=1e-14)
        X = rng.normal(size=(20, measure.n_features))
        assert_allclose(back.log_gate(X), measure.log_gate(X), rtol=1e-12, atol=1e-12)


def test_parameter_names_and_counts():
    k, d = 3, 2
    rng = np.random.default_rng(0)
    soft = _Parametrisation(_random_measure(rng, "softmax", k, d))
    assert soft.names[:3] == ["gate[0].coef[0]", "gate[0].coef[1]", "gate[0].intercept"]
    assert soft.n_gate == (k - 1) * (d + 1)
    assert soft.names[soft.n_gate:soft.n_gate + 4] == [
        "expert[0].coef[0]", "expert[0].coef[1]", "expert[0].intercept", "expert[0].var"]
    assert soft.size == (k - 1) * (d + 1) + k * (d + 2)
    temp = _Parametrisation(_random_measure(rng, "temperature", k, d, temperature=0.5))
    assert temp.names[0] == "gamma[0].coef[0]"
    act = _Parametrisation(_random_measure(rng, "activation", k, d, activation="tanh",
                                           temperature=0.5), learn_temperature=True)
    assert act.n_gate == k * d + k - 1 + 1
    assert "gate[2].coef[0]" in act.names and "gate[2].intercept" not in act.names
    assert act.names[act.n_gate - 1] == "gate.log_temperature"
    fixed = _Parametrisation(act.like, learn_temperature=False)
    assert fixed.n_gate == k * d + k - 1


# ---------------------------------------------------------------------- MoEResults
@pytest.fixture(scope="module")
def softmax_fit():
    X, y = _data(TRUTH_2, 400, 3)
    return _fit(TRUTH_2, X, y), X, y


def test_results_attributes(softmax_fit):
    est, X, y = softmax_fit
    res = fit_results(est, X, y)
    assert isinstance(res, MoEResults)
    p = len(res.param_names)
    assert p == est._n_parameters() == res.df_model
    assert res.params.shape == res.bse.shape == res.zvalues.shape == res.pvalues.shape == (p,)
    assert not res.is_singular and np.all(res.bse > 0)
    assert_allclose(res.bse, np.sqrt(np.diag(res.cov_params())))
    assert_allclose(res.cov_params() @ res.information, np.eye(p), atol=1e-8)
    assert_allclose(res.zvalues, res.params / res.bse)
    assert_array_equal(res.tvalues, res.zvalues)
    assert_allclose(res.pvalues, 2 * stats.norm.sf(np.abs(res.zvalues)))
    ci = res.conf_int()
    assert_allclose(ci, np.column_stack([res.params - 1.959963984540054 * res.bse,
                                         res.params + 1.959963984540054 * res.bse]))
    assert np.all(np.diff(res.conf_int(0.5), axis=1) < np.diff(ci, axis=1))
    # Same numbers as the estimator (unweighted fit).
    assert res.nobs == X.shape[0] and res.wnobs == X.shape[0]
    assert_allclose(res.llf, est.log_likelihood(X, y), rtol=1e-12)
    assert_allclose(res.aic, est.aic(X, y), rtol=1e-12)
    assert_allclose(res.bic, est.bic(X, y), rtol=1e-12)
    # Estimates in the names' places.
    m = est.mixing_measure_
    assert res.params[res.param_names.index("gate[0].coef[0]")] == m.gate_coef[0, 0]
    assert res.params[res.param_names.index("expert[1].var")] == m.expert_var[1]
    # A converged tight fit sits at a maximum.
    assert np.max(np.abs(res.score)) < 1e-3
    text = str(res.summary())
    for name in res.param_names:
        assert name in text
    assert "std err" in text and "P>|z|" in text and "BIC" in text
    assert res.summary().rows[0]["parameter"] == "gate[0].coef[0]"
    assert "MoEResults(" in repr(res)


def test_results_use_feature_names():
    pd = pytest.importorskip("pandas")  # a test dependency; optional for users
    X, y = _data(TRUTH_2, 300, 5)
    frame = pd.DataFrame({"dose": X[:, 0]})
    est = _fit(TRUTH_2, frame, y)
    res = MoEResults(est, frame, y)
    assert "gate[0].coef[dose]" in res.param_names
    assert "expert[1].coef[dose]" in res.param_names


def test_sample_weight_is_a_frequency_weight(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y = _data(TRUTH_2, 200, global_random_seed)
    w = rng.integers(1, 3, size=200)
    rows = np.repeat(np.arange(200), w)
    with warnings.catch_warnings():
        # At the truth (not the MLE) a small sample can make the information indefinite.
        warnings.simplefilter("ignore", SingularInformationWarning)
        weighted = MoEResults(TRUTH_2, X, y, sample_weight=w)
        repeated = MoEResults(TRUTH_2, X[rows], y[rows])
    assert_allclose(weighted.llf, repeated.llf, rtol=1e-12)
    assert_allclose(weighted.score, repeated.score, rtol=1e-9, atol=1e-9)
    assert_allclose(weighted.hessian, repeated.hessian, rtol=1e-9, atol=1e-9)
    assert_allclose(weighted.bse, repeated.bse, rtol=1e-9)
    assert weighted.wnobs == w.sum() and weighted.nobs == 200
    assert_allclose(weighted.bic, repeated.bic, rtol=1e-12)


def test_temperature_results_are_the_softmax_results_on_gamma():
    X, y = _data(TRUTH_2, 300, 7)
    tau = 0.4
    temp = TRUTH_2.replace(gating="temperature", temperature=tau,
                           gate_coef=TRUTH_2.gate_coef * tau,
                           gate_intercept=TRUTH_2.gate_intercept * tau)
    soft = MoEResults(TRUTH_2, X, y)
    res = MoEResults(temp, X, y)
    assert res.param_names[:2] == ["gamma[0].coef[0]", "gamma[0].intercept"]
    assert_allclose(res.params, soft.params, rtol=1e-12)
    assert_allclose(res.bse, soft.bse, rtol=1e-9)
    assert_allclose(res.llf, soft.llf, rtol=1e-12)


def test_activation_results_from_a_fit():
    truth = gmoe.MixingMeasure([[4.0], [-1.0]], [-0.9, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                               [0.09, 0.16], gating="activation", activation="tanh",
                               temperature=0.25)
    X, y = _data(truth, 500, 11, low=0.0, high=1.0)
    for learn in (True, False):
        est = _fit(truth, X, y, gating="activation", activation="tanh",
                   learn_temperature=learn, temperature=0.25)
        res = MoEResults(est, X, y)
        assert len(res.params) == est._n_parameters()
        assert ("gate.log_temperature" in res.param_names) is learn
        assert np.all(np.isfinite(res.bse)) and np.all(res.bse > 0)


def test_the_identity_activations_singular_information_names_its_cause():
    # Its logits are the temperature gate's with every slope free: a common translation of
    # the slopes is a flat direction, and the warning says so and what to fit instead.
    X, y = _data(TRUTH_2, 500, 11)
    est = gmoe.GaussianMoERegressor(2, gating="activation", activation="identity",
                                    random_state=0).fit(X, y)
    with pytest.warns(SingularInformationWarning, match=re.escape(
            "a common translation of its gate slopes leaves the density unchanged; fit "
            "gating='temperature'")):
        res = MoEResults(est, X, y)
    assert res.is_singular and "gate.log_temperature" not in res.param_names
    # BIC counts the identified parameters: the temperature gate's, one slope fewer.
    assert res.df_model == est._n_parameters() == len(res.params) - 1
    temp = gmoe.GaussianMoERegressor(2, gating="temperature", random_state=0).fit(X, y)
    assert est._n_parameters() == temp._n_parameters()


@pytest.mark.parametrize(("options", "flat"), [
    ({"top_k": 1}, 2),                              # 4 gate parameters, 2 boundaries
    ({"top_k": 1, "topk_selection": "linear"}, 4),  # regions x < 0, x > 0: nothing
    ({"top_k": 2}, 0),
])
def test_a_top1_gates_flat_directions_are_not_counted(options, flat):
    # With one selected expert only the regions count; in one feature they are intervals,
    # identified by their boundary points. The directions along which no density changes
    # (a common scale, checked here, and each boundary's own) are left out of BIC's count.
    X, y = _data(TRUTH_2, 300, 5)
    est = gmoe.GaussianMoERegressor(3, gating="topk", random_state=0, **options).fit(X, y)
    measure = est.mixing_measure_
    free = 2 * (1 + 1) + 3 * (1 + 2)  # softmax's: 2 gate slopes and intercepts, 3 experts
    assert est._n_parameters() == free - flat
    if options["top_k"] == 1:
        scaled = measure.replace(gate_coef=7.0 * measure.gate_coef,
                                 gate_intercept=7.0 * measure.gate_intercept)
        assert_array_equal(gmoe.conditional_log_density(scaled, X, y),
                           gmoe.conditional_log_density(measure, X, y))


def test_topk_has_no_analytic_standard_errors():
    truth = gmoe.MixingMeasure([[2.0], [0.0]], [0.5, 0.0], [[2.0], [-1.5]], [1.0, -1.0],
                               [0.25, 0.49], gating="topk", top_k=1)
    X, y = _data(truth, 200, 1)
    with pytest.raises(ValueError, match=re.escape("gmoe.inference.bootstrap(est, X, y)")):
        MoEResults(truth, X, y)


def test_a_topk_gate_selecting_every_expert_has_the_softmax_standard_errors():
    # top_k = n_experts selects every expert everywhere: the softmax gate, differentiable.
    X, y = _data(TRUTH_2, 400, 1)
    dense = gmoe.GaussianMoERegressor(2, tol=1e-10, random_state=0).fit(X, y)
    topk = gmoe.GaussianMoERegressor(2, gating="topk", top_k=2, tol=1e-10,
                                     random_state=0).fit(X, y).align_to(dense)
    res, expected = MoEResults(topk, X, y), MoEResults(dense, X, y)
    assert res.param_names == expected.param_names
    # Two fits to tol 1e-10 of one maximum: their parameters agree to ~1e-6.
    assert_allclose(res.params, expected.params, rtol=1e-5, atol=1e-6)
    assert_allclose(res.bse, expected.bse, rtol=1e-5)


def test_bad_input():
    X, y = _data(TRUTH_2, 50, 1)
    with pytest.raises(ValueError, match="rcond must be"):
        MoEResults(TRUTH_2, X, y, rcond=2.0)
    with pytest.raises(ValueError, match=re.escape("y must have shape (50,)")):
        MoEResults(TRUTH_2, X, y[:10])
    with pytest.raises(ValueError, match="sample_weight must be"):
        MoEResults(TRUTH_2, X, y, sample_weight=-np.ones(50))
    with pytest.raises(ValueError, match="alpha must be"):
        MoEResults(TRUTH_2, X, y).conf_int(alpha=1.5)
    with pytest.raises(ValueError, match="not fitted"):
        MoEResults(gmoe.GaussianMoERegressor(), X, y)


# ---------------------------------------------------------------------- singular cases
def test_over_specified_fit_with_duplicate_experts_warns_and_gives_nan():
    X, y = _data(TRUTH_2, 400, 21)
    m = _fit(TRUTH_2, X, y).mixing_measure_
    # Split expert 0 of the 2-expert MLE into two near-duplicates, each with half its
    # gate weight: a stationary point of the 3-expert likelihood (a saddle, which EM
    # leaves under the Newton-decrement stopping rule, so the information is taken there).
    half = m.gate_intercept[0] - np.log(2.0)
    eps = 1e-6
    start = gmoe.MixingMeasure(
        np.vstack([m.gate_coef[0], m.gate_coef]), [half, half + eps, 0.0],
        np.vstack([m.expert_coef[0], m.expert_coef]),
        [m.expert_intercept[0] + eps, m.expert_intercept[0] - eps, m.expert_intercept[1]],
        np.r_[m.expert_var[0], m.expert_var])
    with pytest.warns(SingularInformationWarning, match="over-specified model"):
        res = MoEResults(start, X, y)
    assert res.is_singular
    assert np.all(np.isnan(res.bse)) and np.all(np.isnan(res.cov_params()))
    assert np.all(np.isnan(res.conf_int())) and np.all(np.isnan(res.pvalues))
    assert np.all(np.isfinite(res.params)) and np.isfinite(res.llf)
    assert "singular (NaN)" in str(res.summary())


def test_over_specified_fit_near_its_optimum_has_finite_invalid_errors():
    # What the Notes say: a 3-expert fit of 2-expert data stops near the singular point
    # (an extra expert of small weight), so the information passes the rcond test and the
    # standard errors come out finite, and several times the 2-expert fit's.
    truth = gmoe.MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]], [1.0, -1.0],
                               [0.05, 0.05])
    X = gmoe.make_design(500, "uniform", random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    common = dict(n_init=3, random_state=1, tol=1e-8, max_iter=3000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        over = gmoe.GaussianMoERegressor(3, **common).fit(X, y)
        exact = gmoe.GaussianMoERegressor(2, **common).fit(X, y)
        res_over, res_exact = MoEResults(over, X, y), MoEResults(exact, X, y)
    assert over.converged_ and np.min(over.predict_proba(X).mean(axis=0)) < 0.1
    assert not res_over.is_singular and res_over.min_eigenvalue > res_over.rcond
    assert np.all(np.isfinite(res_over.bse))
    assert np.max(res_over.bse) > 3.0 * np.max(res_exact.bse)


def test_symmetric_activation_point_is_singular():
    # tanh, k = 2, beta1_1 = -beta1_2: the gate is its own symmetric image and
    # the Fisher information is singular; the observed one need not be, so it is checked.
    truth = gmoe.MixingMeasure([[3.0], [-3.0]], [0.3, 0.0], [[2.0], [-1.5]], [1.0, -1.0],
                               [0.25, 0.49], gating="activation", activation="tanh",
                               temperature=0.5)
    X, y = _data(truth, 300, 0)
    with pytest.warns(SingularInformationWarning, match="symmetric point"):
        res = MoEResults(truth, X, y)
    assert res.is_singular and np.all(np.isnan(res.bse))
    # A fit to data from a symmetric truth: here EM ends exactly on the symmetric point.
    start = truth.replace(gate_coef=[[3.1], [-2.9]])
    est = gmoe.GaussianMoERegressor(2, gating="activation", activation="tanh",
                                    init_params=start, tol=1e-10).fit(X, y)
    assert est.mixing_measure_.is_symmetric_fixed_point(atol=1e-9)
    with pytest.warns(SingularInformationWarning, match="symmetric point"):
        res = MoEResults(est, X, y)
    assert res.is_singular and np.all(np.isnan(res.bse))
    # Off the symmetric point: finite standard errors.
    with warnings.catch_warnings():
        warnings.simplefilter("error", SingularInformationWarning)
        res = MoEResults(truth.replace(gate_coef=[[3.0], [-1.0]]), X, y)
    assert np.all(np.isfinite(res.bse))


def test_invert_information_edge_cases():
    names = ["a", "b"]
    cov, singular, _, why = _invert_information(np.array([[1.0, 0.0], [0.0, -1.0]]), names,
                                                1e-10)
    assert singular and np.all(np.isnan(cov)) and "['b']" in why
    cov, singular, min_eig, why = _invert_information(np.array([[1.0, 2.0], [2.0, 1.0]]),
                                                      names, 1e-10)
    assert singular and min_eig == pytest.approx(-1.0) and "not positive definite" in why
    cov, singular, _, why = _invert_information(np.array([[np.inf, 0], [0, 1.0]]), names, 0.1)
    assert singular and "non-finite" in why
    cov, singular, _, why = _invert_information(np.array([[4.0, 1.0], [1.0, 1.0]]), names,
                                                1e-10)
    assert not singular and why is None
    assert_allclose(cov, np.linalg.inv([[4.0, 1.0], [1.0, 1.0]]))


# ---------------------------------------------------------------------- flexmix refit
def _flexmix_refit():
    with open(DATA / "refit.json") as f:
        ref = json.load(f)
    data = np.loadtxt(DATA / ref["csv"], delimiter=",", skiprows=1)
    return ref, data[:, :1], data[:, 1]


def test_standard_errors_match_flexmix_refit():
    """SEs agree with flexmix 2.3-18 ``refit(m)`` (committed data): asked 5%, seen 1e-4.

    flexmix: gate = logit of component 2 against component 1 (baseline), experts on
    ``log(sigma)``. Ours: the last expert is the reference, experts on the variance. So
    flexmix component 2 is our expert 0, component 1 our expert 1, and
    ``se(log sigma) = se(nu) / (2 nu)`` (delta method).
    """
    ref, X, y = _flexmix_refit()
    fx = dict(zip(ref["refit"]["names"], ref["refit"]["coef"], strict=True))
    fx_se = dict(zip(ref["refit"]["names"], ref["refit"]["se"], strict=True))

    def comp(j, what):
        return fx[f"model.1_Comp.{j}_{what}"]

    start = gmoe.MixingMeasure(
        [[fx["concomitant_Comp.2.x1"]], [0.0]], [fx["concomitant_Comp.2.(Intercept)"], 0.0],
        [[comp(2, "coef.x1")], [comp(1, "coef.x1")]],
        [comp(2, "coef.(Intercept)"), comp(1, "coef.(Intercept)")],
        [np.exp(2 * comp(2, "log(sigma)")), np.exp(2 * comp(1, "log(sigma)"))])
    est = gmoe.GaussianMoERegressor(2, init_params=start, tol=1e-14, max_iter=5000).fit(X, y)
    res = MoEResults(est, X, y)
    # Our EM reaches the exact MLE; refit's BFGS ends within a small fraction of an SE.
    assert res.llf >= ref["refit"]["loglik_at_coef"] - 1e-6

    ours_to_flexmix = {
        "gate[0].coef[0]": "concomitant_Comp.2.x1",
        "gate[0].intercept": "concomitant_Comp.2.(Intercept)",
        "expert[0].coef[0]": "model.1_Comp.2_coef.x1",
        "expert[0].intercept": "model.1_Comp.2_coef.(Intercept)",
        "expert[0].var": "model.1_Comp.2_log(sigma)",
        "expert[1].coef[0]": "model.1_Comp.1_coef.x1",
        "expert[1].intercept": "model.1_Comp.1_coef.(Intercept)",
        "expert[1].var": "model.1_Comp.1_log(sigma)",
    }
    assert sorted(ours_to_flexmix) == sorted(res.param_names)
    jac = np.ones(len(res.params))  # d(flexmix scale) / d(our scale)
    for i, name in enumerate(res.param_names):
        if name.endswith(".var"):
            jac[i] = 1.0 / (2.0 * res.params[i])
    ours_se = res.bse * jac
    ours_est = np.array([0.5 * np.log(v) if n.endswith(".var") else v
                         for n, v in zip(res.param_names, res.params, strict=True)])
    order = [ref["refit"]["names"].index(ours_to_flexmix[n]) for n in res.param_names]
    their_se = np.array([fx_se[ours_to_flexmix[n]] for n in res.param_names])
    their_est = np.array([fx[ours_to_flexmix[n]] for n in res.param_names])
    # refit's Hessian is a finite difference (optim's ndeps = 1e-3) of flexmix's gradient.
    # Asked: within 5%; observed: within 1e-4. Allow 0.5%.
    assert_allclose(ours_se, their_se, rtol=0.005)
    assert np.all(np.abs(ours_est - their_est) < 0.05 * their_se)
    # The whole covariance, as correlations.
    their_cov = np.asarray(ref["refit"]["vcov"])[np.ix_(order, order)]
    ours_cov = res.cov_params() * np.outer(jac, jac)

    def corr(c):
        s = np.sqrt(np.diag(c))
        return c / np.outer(s, s)

    assert_allclose(corr(ours_cov), corr(their_cov), rtol=0, atol=0.02)


# ---------------------------------------------------------------------- bootstrap
@pytest.fixture(scope="module")
def small_fit():
    X, y = _data(TRUTH_2, 250, 31)
    return _fit(TRUTH_2, X, y, tol=1e-8), X, y


def test_bootstrap_nonparametric(small_fit):
    est, X, y = small_fit
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateExpertWarning)
        boot = bootstrap(est, X, y, n_boot=24, random_state=0)
    res = MoEResults(est, X, y)
    assert isinstance(boot, BootstrapResults)
    assert boot.n_degenerate == 0 and boot.degenerate.shape == (24,)
    assert boot.param_names == res.param_names
    assert_array_equal(boot.params, res.params)
    assert boot.replicates.shape == (24, len(res.params)) and boot.n_failed == 0
    # 24 replicates: the SD is known to ~15%; generous factor for small n.
    assert np.all(boot.bse > 0.4 * res.bse) and np.all(boot.bse < 2.5 * res.bse)
    # Labels are aligned with the fit: no replicate swaps the two experts.
    i = res.param_names.index("expert[0].coef[0]")
    assert np.all(np.abs(boot.replicates[:, i] - res.params[i]) < 6 * res.bse[i])
    ci = boot.conf_int(0.1)
    assert np.all(ci[:, 0] <= ci[:, 1])
    assert_allclose(ci, np.quantile(boot.replicates, [0.05, 0.95], axis=0).T)
    text = str(boot.summary())
    assert "boot se" in text and "expert[1].var" in text
    again = bootstrap(est, X, y, n_boot=24, random_state=0)
    assert_array_equal(again.replicates, boot.replicates)


def test_bootstrap_parametric_and_parallel(small_fit):
    est, X, y = small_fit
    serial = bootstrap(est, X, y, n_boot=6, kind="parametric", random_state=1)
    with joblib.parallel_config(backend="threading"):
        parallel = bootstrap(est, X, y, n_boot=6, kind="parametric", random_state=1,
                             n_jobs=2)
    assert serial.kind == "parametric"
    assert_allclose(parallel.replicates, serial.replicates, rtol=1e-12)
    assert np.all(np.isfinite(serial.bse))


def test_bootstrap_counts_and_reports_collapsed_replicates():
    # Constant y: every refit's variances sit at the floor, so the replicates agree to
    # ~1e-16 and the intervals have zero width; the refits' warnings are silenced, so
    # only the count and one warning tell.
    X, _ = _data(TRUTH_2, 120, 51)
    y = np.full(X.shape[0], 3.0)
    with pytest.warns(DegenerateExpertWarning):
        est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)
    message = (r"3 of 3 bootstrap replicates have collapsed experts \(.*replicate 0: "
               r"experts \[0, 1\]\)")
    with pytest.warns(DegenerateExpertWarning, match=message):
        serial = bootstrap(est, X, y, n_boot=3, random_state=0)
    assert serial.n_degenerate == 3 and serial.degenerate.tolist() == [True] * 3
    assert serial.n_failed == 0 and np.all(serial.bse < 1e-8)
    assert "degenerate: 3" in str(serial.summary()) and "n_degenerate=3" in repr(serial)
    with joblib.parallel_config(backend="threading"), pytest.warns(DegenerateExpertWarning):
        parallel = bootstrap(est, X, y, n_boot=3, random_state=0, n_jobs=2)
    assert_array_equal(parallel.replicates, serial.replicates)
    assert_array_equal(parallel.degenerate, serial.degenerate)


def test_bootstrap_topk():
    truth = gmoe.MixingMeasure([[3.0], [0.0]], [-0.5, 0.0], [[2.0], [-1.5]], [1.0, -1.0],
                               [0.25, 0.49], gating="topk", top_k=1)
    X, y = _data(truth, 200, 41)
    est = gmoe.GaussianMoERegressor(2, gating="topk", top_k=1, init_params=truth,
                                    max_iter=50).fit(X, y)
    boot = bootstrap(est, X, y, n_boot=5, random_state=0)
    assert boot.n_failed == 0 and np.all(np.isfinite(boot.bse))
    # Top-1: the gate is read at unit norm (its scale is not identifiable).
    g = boot.replicates[:, :2]
    assert_allclose(np.hypot(g[:, 0], g[:, 1]), 1.0, rtol=1e-12)


def test_bootstrap_bad_input(small_fit):
    est, X, y = small_fit
    with pytest.raises(ValueError, match="kind must be one of"):
        bootstrap(est, X, y, kind="jackknife")
    with pytest.raises(ValueError, match="n_boot must be an integer >= 2"):
        bootstrap(est, X, y, n_boot=1)
    with pytest.raises(ValueError, match="needs a fitted estimator"):
        bootstrap(est.mixing_measure_, X, y)
    with pytest.raises(ValueError, match=re.escape("verbose must be an integer >= 0, got "
                                                   "verbose=-1.")):
        bootstrap(est, X, y, verbose=-1)


@pytest.mark.parametrize("kind", ["nonparametric", "parametric"])
def test_a_weighted_bootstrap_resamples_the_rows_its_weights_count(small_fit, kind):
    # Weights of 2 are every row seen twice: the fit's standard errors shrink by sqrt(2),
    # and so must the bootstrap's (it kept them, drawing n rows whatever their weights).
    est, X, y = small_fit
    twice = clone(est).fit(X, y, sample_weight=np.full(len(y), 2.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        once = bootstrap(est, X, y, n_boot=60, kind=kind, random_state=0)
        doubled = bootstrap(twice, X, y, n_boot=60, kind=kind, random_state=0,
                            sample_weight=np.full(len(y), 2.0))
    ratio = np.median(doubled.bse / once.bse)
    # The median over 8 parameters of a ratio of two 60-replicate SDs: about 1/sqrt(2)
    # give or take 10%.
    assert 0.6 < ratio < 0.82, ratio


def test_a_weighted_bootstrap_needs_weights_that_count_enough_rows(small_fit):
    # Weights summing to 1 (probabilities) would refit every replicate on one row.
    est, X, y = small_fit
    with pytest.raises(ValueError, match=re.escape(
            "sample_weight must sum to at least n_experts (2) for a bootstrap")):
        bootstrap(est, X, y, sample_weight=np.full(len(y), 1.0 / len(y)))


def test_one_expert_has_no_gate_parameter_in_either_count():
    X, y = _data(TRUTH_2, 200, 2)
    for options in ({"gating": "activation", "activation": "tanh"},
                    {"gating": "activation", "activation": "identity"}, {}):
        est = gmoe.GaussianMoERegressor(1, **options).fit(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert MoEResults(est, X, y).df_model == est._n_parameters() == 3


def test_one_experts_standard_errors_are_the_same_under_every_gate():
    # A lone expert's gate is 1 whatever its parameters: none is in the table (the
    # activation gate's free slope and learned temperature were, with a zero information
    # that set every standard error to NaN), and every gate gives the linear regression's.
    X, y = _data(TRUTH_2, 200, 3)
    tables = []
    for options in ({}, {"gating": "activation", "activation": "tanh"},
                    {"gating": "activation", "activation": "identity"},
                    {"gating": "temperature", "temperature": 0.5}):
        est = gmoe.GaussianMoERegressor(1, **options).fit(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            results = MoEResults(est, X, y)
        tables.append((results.param_names, results.bse))
    for names, bse in tables:
        assert names == ["expert[0].coef[0]", "expert[0].intercept", "expert[0].var"]
        assert np.all(np.isfinite(bse))
        # The fits differ only in their EM's rounding.
        assert_allclose(bse, tables[0][1], rtol=1e-6)


def test_a_parametric_bootstrap_needs_whole_number_weights(small_fit):
    est, X, y = small_fit
    with pytest.raises(ValueError, match=re.escape(
            "sample_weight must hold whole numbers for kind='parametric' (a row of weight w "
            "is w observations, each drawn anew), got 0.5.")):
        bootstrap(est, X, y, kind="parametric", sample_weight=np.full(len(y), 0.5))


def test_bootstrap_shows_its_progress(small_fit, capfd):
    # A bootstrap refits n_boot times: with verbose it says how far it has got.
    est, X, y = small_fit
    quiet = bootstrap(est, X, y, n_boot=4, random_state=0)
    assert capfd.readouterr().err == ""
    loud = bootstrap(est, X, y, n_boot=4, random_state=0, verbose=10)
    assert "Done   4 out of   4" in capfd.readouterr().err
    np.testing.assert_array_equal(loud.replicates, quiet.replicates)


# ---------------------------------------------------------------------- slow acceptance
def _replicate_se_study(truth, n, n_rep, estimator_params, low, high):
    estimates, ses = [], []
    rng = np.random.default_rng(12345)
    for _ in range(n_rep):
        X = gmoe.make_design(n, "uniform", low=low, high=high, random_state=rng)
        y = gmoe.sample_moe(truth, X, random_state=rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = _fit(truth, X, y, **estimator_params)
            res = MoEResults(est, X, y)
        estimates.append(res.params)
        ses.append(res.bse)
    return np.array(estimates), np.array(ses), res.param_names


@pytest.mark.slow
@pytest.mark.parametrize("case", ["softmax", "activation"])
def test_standard_errors_match_replication_spread(case):
    """Mean analytic SE vs the SD of the estimates over R = 400 replications (n = 1000).

    The SD of R normal draws has relative standard error 1/sqrt(2R): allow three.
    """
    if case == "softmax":
        truth, params, low, high = TRUTH_2, {}, -2.0, 2.0
    else:
        # the temperature study's activation truth, tau held.
        truth = gmoe.MixingMeasure([[4.0], [-1.0]], [-0.9, 0.0], [[-20.0], [20.0]],
                                   [15.0, -5.0], [0.09, 0.16], gating="activation",
                                   activation="tanh", temperature=0.25)
        params = dict(gating="activation", activation="tanh", learn_temperature=False,
                      temperature=0.25)
        low, high = 0.0, 1.0
    n_rep = 400
    estimates, ses, names = _replicate_se_study(truth, 1000, n_rep, params, low, high)
    # With tanh, the MLE of a replicate can sit exactly on the symmetric point
    # beta1_1 = -beta1_2 (2 of 400 here): SEs are NaN there by design. Drop those.
    ok = np.all(np.isfinite(ses), axis=1)
    assert ok.sum() >= 0.98 * n_rep
    spread = estimates[ok].std(axis=0, ddof=1)
    mean_se = ses[ok].mean(axis=0)
    assert_allclose(mean_se, spread, rtol=3 / np.sqrt(2 * n_rep), err_msg=str(names))


def test_derivatives_add_up_over_blocks_of_rows():
    # The rows are summed block by block (8192 at a time): data of three blocks give the
    # sums of the derivatives of their parts.
    from gmoe._observed_information import _CHUNK_ROWS

    rng = np.random.default_rng(5)
    measure = _random_measure(rng, "softmax")
    n = 2 * _CHUNK_ROWS + 37
    X = rng.normal(size=(n, measure.n_features))
    y = gmoe.sample_moe(measure, X, random_state=rng) + 0.3 * rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    param = _Parametrisation(measure, False)
    v = param.to_vector(measure)
    whole = _compute_log_likelihood_derivatives(param, v, X, y, w)
    cut = _CHUNK_ROWS + 11
    parts = [_compute_log_likelihood_derivatives(param, v, X[s], y[s], w[s])
             for s in (slice(0, cut), slice(cut, n))]
    for total, first, second in zip(whole, *parts, strict=True):
        assert_allclose(total, np.add(first, second), rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(("gating", "options"), [("softmax", {}),
                                                 ("temperature", {"temperature": 0.7})])
@pytest.mark.parametrize(("k", "d"), [(1, 1), (2, 1), (3, 2), (4, 3), (3, 5)])
def test_linear_gate_derivatives_match_the_general_ones(gating, options, k, d,
                                                         global_random_seed):
    # The block-by-block pass of the softmax and temperature gates (weights whose Gram
    # matrices are the Hessian's blocks) against the general assembly from the families
    # (rows of p derivatives): two derivations of the same three numbers. Zero weights,
    # several blocks and a short last slice included; d = 5 takes the Gram products'
    # stacked branch.
    from gmoe._blocks import RowBlocks
    from gmoe._observed_information import (
        compute_linear_gate_derivatives,
        linear_gate_log_likelihood,
    )

    rng = np.random.default_rng(global_random_seed)
    measure = _random_measure(rng, gating, k=k, d=d, **options)
    n = 70_003
    X = rng.normal(size=(n, d))
    y = gmoe.sample_moe(measure, X, random_state=rng) + 0.3 * rng.normal(size=n)
    w = rng.uniform(0.0, 2.0, size=n)
    w[::11] = 0.0
    param = _Parametrisation(measure, False)
    expected = _compute_log_likelihood_derivatives(param, param.to_vector(measure), X, y, w)
    for n_threads in (1, 2):
        with RowBlocks(X, y, w, k, n_threads) as rows:
            got = compute_linear_gate_derivatives(param, measure, rows)
        if n_threads == 1:
            first = got
        # The blocks are summed in a fixed order: the same bits on any number of threads.
        for a, b in zip(got, first, strict=True):
            assert_array_equal(a, b)
    # Sums of 7e4 rows in different orders: rounding ~1e-16 times the terms' sizes.
    assert_allclose(got[0], expected[0], rtol=1e-12)
    # L alone, the stopping rule's searches: the same pass's numbers, bit for bit, and
    # the model's conditional density (an independent path) to rounding.
    with RowBlocks(X, y, w, k, 2) as rows:
        assert linear_gate_log_likelihood(measure, rows) == got[0]
    independent = float(w @ gmoe.conditional_log_density(measure, X, y))
    assert_allclose(got[0], independent, rtol=1e-12)
    assert_allclose(got[1], expected[1], rtol=0, atol=1e-10 * np.max(np.abs(expected[1])))
    assert_allclose(got[2], expected[2], rtol=0, atol=1e-10 * np.max(np.abs(expected[2])))


def test_linear_gate_derivatives_decline_other_models():
    from gmoe._blocks import RowBlocks
    from gmoe._observed_information import (
        compute_linear_gate_derivatives,
        linear_gate_log_likelihood,
    )

    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 1))
    y = rng.normal(size=200)
    w = np.ones(200)
    cases = [(_random_measure(rng, "topk", top_k=1), False),
             (_random_measure(rng, "activation", activation="tanh", temperature=0.7), False),
             (_random_measure(rng, "activation", activation="tanh", temperature=0.7), True)]
    for measure, learn in cases:
        with RowBlocks(X, y, w, measure.n_experts) as rows:
            assert compute_linear_gate_derivatives(_Parametrisation(measure, learn), measure,
                                                   rows) is None
            assert linear_gate_log_likelihood(measure, rows) is None


def test_a_design_far_from_zero_is_not_taken_for_a_singular_model():
    # X = u + 1e5: the same model as on u, reparametrised (intercepts beta0 - beta1 1e5).
    # Its raw slopes and intercepts are nearly collinear; the test for singularity must
    # not see that, and the slopes' standard errors are the offset-free fit's.
    truth = gmoe.MixingMeasure([[3.0], [0.0]], [0.3, 0.0], [[2.0], [-1.5]], [1.0, -1.0],
                               [0.25, 0.3])
    rng = np.random.default_rng(21)
    u = rng.uniform(-2, 2, (800, 1))
    y = gmoe.sample_moe(truth, u, random_state=rng)
    results = []
    for X in (u, u + 1e5, u + 1e7):
        est = gmoe.GaussianMoERegressor(2, n_init=3, random_state=0, tol=1e-10).fit(X, y)
        with warnings.catch_warnings():
            warnings.simplefilter("error", SingularInformationWarning)
            results.append(gmoe.fit_results(est, X, y))
    plain, offset, far = results
    assert not offset.is_singular and not far.is_singular
    slopes = [i for i, name in enumerate(plain.param_names) if ".coef[" in name]
    # rtol: the fits stop at 1e-10 from the same maximum by different rounding. (At 1e7
    # an information formed on the raw design and centred afterwards was off by half.)
    # Sorted: a fit may find the two experts in the other order.
    for fit in (offset, far):
        assert_allclose(np.sort(fit.bse[slopes]), np.sort(plain.bse[slopes]), rtol=1e-4)
    # An intercept's error at the offset is the slope's error times the offset, as the
    # delta method of beta0 = beta0_c - 1e5 beta1 gives (the centred intercept's is small).
    gate = plain.param_names.index("gate[0].intercept")
    assert offset.bse[gate] == pytest.approx(1e5 * offset.bse[gate - 1], rel=1e-3)


def test_a_parameter_the_data_do_not_identify_is_named_with_its_likely_cause():
    X, y = _data(TRUTH_2, 300, 5)
    X = np.column_stack([X, np.full(300, 2.0)])  # a constant column: no information
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)
    with pytest.warns(SingularInformationWarning, match=re.escape(
            "The parameter is not identified by the data (the coefficient of a constant "
            "column of X")) as caught:
        results = MoEResults(est, X, y)
    assert "coef[1]" in str(caught[0].message)
    assert np.all(np.isnan(results.bse))


def test_a_fit_at_the_tanh_gates_symmetric_point_says_so_and_bootstrap_names_why_it_fails():
    # A held temperature of 1 and one start: EM ends on the invariant set
    # gate_coef[0] = -gate_coef[1] of a two-expert tanh gate. It was reported as a plain
    # converged fit, and bootstrap() returned NaN rows without a word.
    truth = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]],
                               [15.0, -5.0], [0.09, 0.16])
    X = np.linspace(0.0, 1.0, 300)[:, None]
    y = gmoe.sample_moe(truth, X, random_state=1)
    est = gmoe.GaussianMoERegressor(2, gating="activation", activation="tanh",
                                    temperature=1.0, learn_temperature=False, n_init=1,
                                    random_state=1)
    with pytest.warns(gmoe.GMoEWarning, match="at the symmetric point of its two-expert "
                                              r"activation \(tanh\) gate"):
        est.fit(X, y)
    assert est.mixing_measure_.is_symmetric_fixed_point()
    with pytest.warns(gmoe.GMoEWarning, match=re.escape(
            "3 of 3 bootstrap replicates failed to fit and are NaN rows of replicates "
            "(left out of bse and conf_int); the first: ValueError: init_params is a "
            "two-expert tanh/sigmoid gate")):
        boot = bootstrap(est, X, y, n_boot=3, random_state=0)
    assert boot.n_failed == 3
