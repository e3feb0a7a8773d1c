"""GaussianMoERegressor with the softmax gate: recovery, EM invariants, API and bad input."""

import pickle
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.optimize import approx_fprime, linear_sum_assignment
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import gmoe
from gmoe._expert_major import transposed_design
from gmoe.exceptions import DegenerateExpertWarning
from gmoe.gates import GateData, GateParams, SoftmaxGating, TemperatureGating
from gmoe.gates._linear import gate_pass


def _gate_pass(theta, Z, resp, free):
    """Q, gradient and Hessian (over ``free``) of the softmax gate, from row-major inputs."""
    ZT = np.ascontiguousarray(Z.T)
    wr = np.ascontiguousarray(resp.T)
    objective, _, grad, info = gate_pass(ZT, theta, wr, wr.sum(axis=0), free)
    return objective, grad, -info

# Paper 1's reference truth: expert 2 is the reference.
TRUTH_52 = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                              [0.09, 0.16])

TRUTH_3x2 = gmoe.MixingMeasure(
    gate_coef=[[3.0, -2.0], [-1.0, 2.5], [0.0, 0.0]],
    gate_intercept=[0.5, -0.3, 0.0],
    expert_coef=[[2.0, 1.0], [-1.5, 0.5], [0.3, -2.0]],
    expert_intercept=[3.0, -2.0, 0.0],
    expert_var=[0.25, 0.16, 0.36],
)


def _match(fitted, truth):
    """Permutation of the fitted experts onto the true ones (optimal assignment)."""
    cost = np.abs(fitted.expert_coef[:, None, :] - truth.expert_coef[None, :, :]).sum(axis=2)
    cost += np.abs(fitted.expert_intercept[:, None] - truth.expert_intercept[None, :])
    rows, cols = linear_sum_assignment(cost)
    perm = np.empty(truth.n_experts, dtype=int)
    perm[cols] = rows
    return perm


def _rebased_gate(measure, perm):
    """Gate (slopes, intercepts) in the truth's order, re-based on the truth's reference."""
    theta = np.column_stack([measure.gate_coef, measure.gate_intercept])[perm]
    return theta - theta[-1]


def _fit(truth, n, seed, **kwargs):
    X = gmoe.make_design(n, "uniform", n_features=truth.n_features, random_state=seed)
    y = gmoe.sample_moe(truth, X, random_state=seed + 1)
    est = gmoe.GaussianMoERegressor(truth.n_experts, random_state=seed, **kwargs).fit(X, y)
    return est, X, y


# ----------------------------------------------------------------------------- recovery
def test_recovers_two_experts_of_spec_52():
    est, _, _ = _fit(TRUTH_52, 20000, 0, n_init=3)
    fitted = est.mixing_measure_
    perm = _match(fitted, TRUTH_52)
    # n = 2e4: expert slope SDs over 8 seeds were 0.009 and 0.032; 3 SD or more.
    assert_allclose(fitted.expert_coef[perm], TRUTH_52.expert_coef, atol=0.1)
    assert_allclose(fitted.expert_intercept[perm], TRUTH_52.expert_intercept, atol=0.05)
    # Variances: relative SE sqrt(2 / n_j) ~ 0.015; 5x margin.
    assert_allclose(fitted.expert_var[perm], TRUTH_52.expert_var, rtol=0.08)
    # The gate is steep (slope 25): over 8 seeds at this n the slope's SD was 0.52 and the
    # intercept's 0.16; about 6 SD.
    theta = _rebased_gate(fitted, perm)
    assert abs(theta[0, 0] - 25.0) < 3.0
    assert abs(theta[0, 1] + 8.0) < 1.0


def test_recovers_three_experts_two_features():
    est, _, _ = _fit(TRUTH_3x2, 30000, 1, n_init=3, init_params="kmeans")
    fitted = est.mixing_measure_
    perm = _match(fitted, TRUTH_3x2)
    # n = 3e4 on Uniform[0, 1]^2: expert slope SDs over 8 seeds were 0.013-0.063; 5 SD.
    assert_allclose(fitted.expert_coef[perm], TRUTH_3x2.expert_coef, atol=0.3)
    assert_allclose(fitted.expert_intercept[perm], TRUTH_3x2.expert_intercept, atol=0.08)
    assert_allclose(fitted.expert_var[perm], TRUTH_3x2.expert_var, rtol=0.08)
    theta = _rebased_gate(fitted, perm)
    true_theta = np.column_stack([TRUTH_3x2.gate_coef, TRUTH_3x2.gate_intercept])
    # Gate SDs over 8 seeds were 0.03-0.09 at this n: about 5 SD.
    assert_allclose(theta, true_theta, atol=0.5)


def test_error_shrinks_with_n():
    """The parameter error falls roughly like n^-1/2 (averaged over a few seeds)."""
    errors = []
    for n in (2000, 32000):
        errs = []
        for seed in range(3):
            est, _, _ = _fit(TRUTH_3x2, n, 10 + seed, n_init=2)
            perm = _match(est.mixing_measure_, TRUTH_3x2)
            errs.append(np.abs(est.expert_coef_[perm] - TRUTH_3x2.expert_coef).mean())
        errors.append(np.mean(errs))
    # 16x the data: the error should shrink ~4x; ask for at least 2x (3 seeds are noisy).
    assert errors[1] < errors[0] / 2


# ---------------------------------------------------------------------- EM invariants
@pytest.mark.parametrize("seed", range(12))
def test_log_likelihood_never_decreases(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 4))
    d = int(rng.integers(1, 3))
    truth = gmoe.MixingMeasure(
        np.vstack([rng.normal(0, 3, (k - 1, d)), np.zeros((1, d))]),
        np.append(rng.normal(0, 1, k - 1), 0.0), rng.normal(0, 2, (k, d)),
        rng.normal(0, 2, k), rng.uniform(0.1, 1.0, k))
    X = gmoe.make_design(400, "normal", n_features=d, random_state=seed)
    y = gmoe.sample_moe(truth, X, random_state=seed)
    est = gmoe.GaussianMoERegressor(k, n_init=1, init_params="random", random_state=seed,
                                    max_iter=200, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, DegenerateExpertWarning))
        est.fit(X, y)
    steps = np.diff(est.lower_bounds_)
    # Exact EM is monotone; allow float round-off of the mean log-likelihood.
    assert np.all(steps >= -1e-12 * np.abs(est.lower_bounds_[1:])), steps.min()


def test_gate_gradient_and_hessian_match_finite_differences():
    rng = np.random.default_rng(3)
    n, d, k = 60, 2, 3
    Z = np.column_stack([rng.normal(size=(n, d)), np.ones(n)])
    resp = rng.dirichlet(np.ones(k), size=n) * rng.uniform(0.5, 2.0, size=(n, 1))
    theta = rng.normal(size=(k, d + 1))
    theta[-1] = 0.0
    free = np.arange(k - 1)

    def objective(v):
        t = theta.copy()
        t[free] = v.reshape(len(free), -1)
        return _gate_pass(t, Z, resp, np.arange(0))[0]

    def gradient(v):
        t = theta.copy()
        t[free] = v.reshape(len(free), -1)
        return _gate_pass(t, Z, resp, free)[1]

    v0 = theta[free].ravel()
    # Central differences would do better; forward differences with h=1e-7 give ~1e-6.
    assert_allclose(gradient(v0), approx_fprime(v0, objective, 1e-7), rtol=1e-5, atol=1e-5)
    hess = _gate_pass(theta, Z, resp, free)[2]
    fd_hess = np.array([approx_fprime(v0, lambda v, i=i: gradient(v)[i], 1e-7)
                        for i in range(len(v0))])
    assert_allclose(hess, fd_hess, rtol=1e-5, atol=1e-5)
    # Concave: the Hessian is negative definite.
    assert np.all(np.linalg.eigvalsh(hess) < 0)


def test_same_random_state_gives_identical_fits():
    X = gmoe.make_design(500, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    a = gmoe.GaussianMoERegressor(2, random_state=7).fit(X, y)
    b = gmoe.GaussianMoERegressor(2, random_state=7).fit(X, y)
    assert_array_equal(a.mixing_measure_.to_vector(), b.mixing_measure_.to_vector())
    assert_array_equal(a.lower_bounds_, b.lower_bounds_)


@pytest.mark.parametrize("gating", ["softmax", "temperature"])
def test_reused_log_gate_gives_the_fresh_log_likelihood(gating):
    # EM hands the gate M-step's final log-gate to the next E-step instead of recomputing
    # it: the reported log-likelihood must be the model's, evaluated afresh.
    X = gmoe.make_design(3000, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(2, gating=gating, temperature=0.5, n_init=1,
                                    random_state=0).fit(X, y)
    assert est.lower_bound_ * len(y) == pytest.approx(est.log_likelihood(X, y), rel=1e-13)


def test_temperature_gate_m_step_is_the_softmax_m_step_on_gamma(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    n, d, k = 400, 2, 3
    X = rng.normal(size=(n, d))
    weighted_resp = rng.dirichlet(np.ones(k), size=n) * rng.uniform(0.5, 2.0, size=(n, 1))
    coef, intercept = rng.normal(size=(k, d)), rng.normal(size=k)
    coef[-1], intercept[-1] = 0.0, 0.0
    tau = 0.7
    data = GateData.from_rows(X, weighted_resp, max_iter=3)
    tempered, log_gate = TemperatureGating().m_step(data, GateParams(coef, intercept, tau))
    softmax, _ = SoftmaxGating().m_step(GateData.from_rows(X, weighted_resp, max_iter=3),
                                        GateParams(coef / tau, intercept / tau))
    assert tempered.temperature == tau  # held: the data cannot determine it
    assert_allclose(tempered.coef, tau * softmax.coef, rtol=1e-13, atol=1e-13)
    assert_allclose(tempered.intercept, tau * softmax.intercept, rtol=1e-13, atol=1e-13)
    # The log-gate the M-step hands on is the new parameters' own.
    fresh = TemperatureGating().log_gate_columns(transposed_design(X), tempered)
    assert_allclose(log_gate, fresh, rtol=1e-13, atol=1e-13)


def test_two_one_iteration_warm_fits_equal_one_two_iteration_fit():
    X = gmoe.make_design(300, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    start = TRUTH_52.replace(expert_intercept=[14.0, -4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warm = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=1, warm_start=True)
        warm.fit(X, y).fit(X, y)
        once = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=2, tol=0).fit(X, y)
    assert_allclose(warm.mixing_measure_.to_vector(), once.mixing_measure_.to_vector(),
                    rtol=1e-12, atol=1e-12)


def test_integer_sample_weight_equals_repeated_rows():
    X = gmoe.make_design(200, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    weights = np.random.default_rng(0).integers(0, 3, size=200)
    start = TRUTH_52.replace(expert_intercept=[14.0, -4.0])
    est_w = gmoe.GaussianMoERegressor(2, init_params=start).fit(X, y, sample_weight=weights)
    rows = np.repeat(np.arange(200), weights)
    est_r = gmoe.GaussianMoERegressor(2, init_params=start).fit(X[rows], y[rows])
    assert_allclose(est_w.mixing_measure_.to_vector(), est_r.mixing_measure_.to_vector(),
                    rtol=1e-8, atol=1e-8)
    assert_allclose(est_w.lower_bound_, est_r.lower_bound_, rtol=1e-10)


def test_not_converged_warns_and_reports():
    X = gmoe.make_design(300, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(2, max_iter=1, n_init=1, random_state=0)
    with pytest.warns(ConvergenceWarning, match=re.escape("max_iter=1")):
        est.fit(X, y)
    assert est.converged_ is False
    assert est.n_iter_ == 1
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))


def test_best_start_is_kept_and_reported():
    X = gmoe.make_design(400, "uniform", random_state=2)
    y = gmoe.sample_moe(TRUTH_3x2.replace(gate_coef=TRUTH_3x2.gate_coef[:, :1],
                                          expert_coef=TRUTH_3x2.expert_coef[:, :1]), X,
                        random_state=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateExpertWarning)
        est = gmoe.GaussianMoERegressor(3, n_init=4, init_params="random", random_state=0)
        est.fit(X, y)
    assert len(est.init_log_likelihoods_) == 4
    assert est.lower_bound_ == pytest.approx(est.init_log_likelihoods_.max(), rel=0, abs=0)


def test_over_specified_collapse_warns_and_stays_finite():
    X = gmoe.make_design(40, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(6, n_init=1, init_params="random", random_state=0,
                                    max_iter=300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.fit(X, y)
    assert any(issubclass(w.category, DegenerateExpertWarning) for w in caught)
    assert est.degenerate_experts_
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))


def test_on_degenerate_restart_discards_collapsed_runs():
    X = gmoe.make_design(40, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    params = dict(n_init=1, init_params="random", random_state=0, max_iter=300)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateExpertWarning)
        warned = gmoe.GaussianMoERegressor(4, **params).fit(X, y)
    assert warned.degenerate_experts_  # this start collapses ...
    est = gmoe.GaussianMoERegressor(4, on_degenerate="restart", **params)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateExpertWarning)
        est.fit(X, y)  # ... and "restart" replaces it by one that does not
    assert est.degenerate_experts_ == []
    assert len(est.init_log_likelihoods_) == 1


def test_on_degenerate_restart_falls_back_when_every_start_collapses():
    X = gmoe.make_design(12, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(6, n_init=1, init_params="random", random_state=0,
                                    max_iter=300, on_degenerate="restart")
    with pytest.warns(DegenerateExpertWarning, match="Every start had a collapsing expert"):
        est.fit(X, y)
    assert est.degenerate_experts_
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))


# ---------------------------------------------------------------------------- methods
def test_methods_match_closed_forms():
    est, X, y = _fit(TRUTH_52, 600, 4, n_init=2)
    m = est.mixing_measure_
    gate = np.exp(m.log_gate(X))
    means = X @ m.expert_coef.T + m.expert_intercept
    assert_allclose(est.predict_proba(X), gate, rtol=1e-12)
    assert_allclose(est.predict_proba(X).sum(axis=1), 1.0, rtol=1e-12)
    assert_allclose(est.predict(X), (gate * means).sum(axis=1), rtol=1e-12)
    dens = gate * np.exp(-0.5 * (y[:, None] - means) ** 2 / m.expert_var) / np.sqrt(
        2 * np.pi * m.expert_var)
    assert_allclose(est.score_samples(X, y), np.log(dens.sum(axis=1)), rtol=1e-10)
    assert_allclose(est.predict_responsibilities(X, y), dens / dens.sum(axis=1, keepdims=True),
                    rtol=1e-10, atol=1e-300)
    n_params = 1 * 2 + 2 * 2 + 2
    log_lik = np.log(dens.sum(axis=1)).sum()
    assert est.bic(X, y) == pytest.approx(-2 * log_lik + n_params * np.log(600), rel=1e-10)
    assert est.aic(X, y) == pytest.approx(-2 * log_lik + 2 * n_params, rel=1e-10)
    assert est.lower_bound_ == pytest.approx(log_lik / 600, rel=1e-9)
    assert gmoe.log_likelihood_scorer(est, X, y) == pytest.approx(log_lik / 600, rel=1e-10)
    draws = est.sample(X, random_state=0)
    assert draws.shape == (600,) and np.all(np.isfinite(draws))
    assert_array_equal(draws, est.sample(X, random_state=0))


def test_single_expert_is_ordinary_least_squares():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(100, 2))
    y = X @ [1.0, -2.0] + 0.5 + rng.normal(0, 0.3, 100)
    est = gmoe.GaussianMoERegressor(1).fit(X, y)
    coef, *_ = np.linalg.lstsq(np.column_stack([X, np.ones(100)]), y, rcond=None)
    assert_allclose(est.expert_coef_[0], coef[:2], rtol=1e-10)
    assert_allclose(est.expert_intercept_[0], coef[2], rtol=1e-10)
    resid = y - np.column_stack([X, np.ones(100)]) @ coef
    assert_allclose(est.expert_var_[0], np.mean(resid ** 2), rtol=1e-10)


def test_pickle_clone_pipeline_and_grid_search():
    X = gmoe.make_design(300, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)
    restored = pickle.loads(pickle.dumps(est))
    assert_array_equal(restored.predict(X), est.predict(X))
    fresh = clone(est)
    assert not hasattr(fresh, "mixing_measure_")
    assert fresh.get_params() == est.get_params()
    pipe = make_pipeline(StandardScaler(), gmoe.GaussianMoERegressor(2, n_init=1,
                                                                     random_state=0))
    pipe.fit(X, y)
    # Standardising X reparametrises the same model: the same fit up to EM's tolerance.
    assert_allclose(pipe.predict(X), est.predict(X), rtol=1e-3, atol=1e-3)
    search = GridSearchCV(gmoe.GaussianMoERegressor(n_init=1, random_state=0),
                          {"n_experts": [1, 2]}, scoring=gmoe.log_likelihood_scorer, cv=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    assert search.best_params_ == {"n_experts": 2}
    # A pipeline is scored by its regressor's log-likelihood of the transformed X (a
    # pipeline's own score_samples takes X alone: every candidate failed to score, and
    # the search kept the first).
    search = GridSearchCV(make_pipeline(StandardScaler(), gmoe.GaussianMoERegressor(
        n_init=1, random_state=0)), {"gaussianmoeregressor__n_experts": [1, 2]},
        scoring=gmoe.log_likelihood_scorer, cv=3, error_score="raise")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(X, y)
    assert search.best_params_ == {"gaussianmoeregressor__n_experts": 2}
    scaled = StandardScaler().fit(X)
    assert gmoe.log_likelihood_scorer(pipe, X, y) == pytest.approx(
        gmoe.log_likelihood_scorer(pipe[-1], scaled.transform(X), y), rel=1e-12)


# -------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "params, match",
    [
        ({"n_experts": 0}, "n_experts must be an integer >= 1, got n_experts=0"),
        ({"gating": "sparse"}, "gating must be one of"),
        ({"gating": "topk", "top_k": 3}, "top_k must be an integer in [1, 2], got top_k=3"),
        ({"gating": "topk", "top_k": 0}, "top_k must be an integer in [1, 2], got top_k=0"),
        ({"gating": "activation", "activation": "relu"}, "activation must be one of"),
        ({"gating": "temperature", "temperature": 0.0}, "temperature must be a finite number"),
        ({"gating": "activation", "temperature": -1.0}, "temperature must be a finite number"),
        ({"gating": "activation", "temperature": 1e-160},
         "temperature must be at least 1e-100 for gating='activation' (below that the "
         "fit's arithmetic breaks down: a subnormal temperature drops the gate's digits, "
         "and the activation gate's curvature, which scales as 1/temperature**2, "
         "overflows), got temperature=1e-160"),
        ({"gating": "temperature", "temperature": 5e-324},
         "temperature must be at least 2.22507e-308 for gating='temperature'"),
        ({"gating": "temperature", "temperature": 1e306},
         "temperature must be at most 1e+300 for gating='temperature' (the gate's "
         "parameters scale with it and overflow float64 beyond that), got "
         "temperature=1e+306"),
        ({"tol": -1.0}, "tol must be a finite number >= 0, got tol=-1.0"),
        ({"reg_var": float("nan")}, "reg_var must be a finite number"),
        ({"init_params": "pca"}, "init_params must be one of"),
        ({"init_params": 3}, "init_params must be 'random', 'kmeans', 'short_em' or a "
                             "MixingMeasure"),
        ({"on_degenerate": "ignore"}, "on_degenerate must be one of"),
        ({"max_iter": 0}, "max_iter must be an integer >= 1"),
    ],
)
def test_bad_parameters_raise_at_fit(params, match):
    X = gmoe.make_design(50, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(**params)  # __init__ never validates
    with pytest.raises(ValueError, match=re.escape(match)):
        est.fit(X, y)


def test_activation_fits_down_to_its_smallest_temperature_and_checks_a_given_start():
    # Below the bound the Newton curvature overflowed into a LinAlgError; at it, the
    # fit is the hard gate's fit, as at any small temperature.
    X = gmoe.make_design(200, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    fits = [gmoe.GaussianMoERegressor(2, gating="activation", temperature=tau,
                                      learn_temperature=False, random_state=0).fit(X, y)
            for tau in (1e-100, 1e-50)]
    assert np.isfinite(fits[0].lower_bound_)
    assert fits[0].lower_bound_ == pytest.approx(fits[1].lower_bound_, rel=1e-8)
    start = fits[0].mixing_measure_
    cold = gmoe.MixingMeasure(start.gate_coef, start.gate_intercept, start.expert_coef,
                              start.expert_intercept, start.expert_var, gating="activation",
                              activation="tanh", temperature=1e-160)
    est = gmoe.GaussianMoERegressor(2, gating="activation", init_params=cold)
    with pytest.raises(ValueError, match=re.escape(
            "init_params's temperature must be at least 1e-100 for gating='activation'")):
        est.fit(X, y)


def test_bad_data_raise():
    X = gmoe.make_design(50, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(2)
    with pytest.raises(ValueError, match="Expected 2D array"):
        est.fit(X.ravel(), y)
    bad = X.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        est.fit(bad, y)
    with pytest.raises(ValueError, match=re.escape("n_experts=60, n_samples=50")):
        gmoe.GaussianMoERegressor(60).fit(X, y)
    with pytest.raises(ValueError, match=re.escape("sample_weight must be an array of shape "
                                                   "(50,)")):
        est.fit(X, y, sample_weight=np.ones(49))
    with pytest.raises(ValueError, match=re.escape("a negative value (-1.0)")):
        est.fit(X, y, sample_weight=np.r_[-1.0, np.ones(49)])
    with pytest.raises(ValueError, match="all zeros"):
        est.fit(X, y, sample_weight=np.zeros(50))
    with pytest.raises(ValueError, match=re.escape("got the scalar -2.0")):
        est.fit(X, y, sample_weight=-2.0)
    wrong_start = gmoe.MixingMeasure(np.zeros((3, 1)), np.zeros(3), np.zeros((3, 1)),
                                     np.zeros(3), np.ones(3))
    with pytest.raises(ValueError, match=re.escape("expected (2, 1), got (3, 1)")):
        gmoe.GaussianMoERegressor(2, init_params=wrong_start).fit(X, y)
    with pytest.raises(ValueError, match="gating"):
        gmoe.GaussianMoERegressor(2, gating="temperature",
                                  init_params=TRUTH_52).fit(X, y)
    fitted = gmoe.GaussianMoERegressor(2, n_init=1).fit(X, y)
    with pytest.raises(ValueError, match="features"):
        fitted.predict(np.ones((3, 2)))


def test_small_or_degenerate_data_warn_and_fit_finitely():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(6, 2))
    y = rng.normal(size=6)
    # 2 experts, 2 features: 3 gate + 6 expert + 2 variance parameters > 6 samples.
    with pytest.warns(DegenerateExpertWarning, match="Fewer samples"):
        est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))
    with pytest.warns(DegenerateExpertWarning, match="y is constant"):
        est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(
            rng.normal(size=(50, 1)), np.full(50, 3.0))
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))
    assert_allclose(est.predict(np.zeros((2, 1))), 3.0, atol=1e-6)
    # Duplicated rows are ordinary data.
    X = gmoe.make_design(100, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH_52, X, random_state=1)
    est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(np.vstack([X, X]),
                                                                     np.r_[y, y])
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))


def test_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        gmoe.GaussianMoERegressor().predict(np.ones((2, 1)))


# -------------------------------------------------------------- scikit-learn checks
EXPECTED_FAILED_CHECKS = {
    "check_regressors_no_decision_function": (
        "predict_proba returns the gate probabilities g(x), a documented part of the "
        "mixture-of-experts API."),
    "check_methods_sample_order_invariance": (
        "score_samples is the conditional log-density log p(y | x) and needs y."),
    "check_methods_subset_invariance": (
        "score_samples is the conditional log-density log p(y | x) and needs y."),
    "check_sample_weight_equivalence_on_dense_data": (
        "the starts see rows, not weights (random rows, k-means subsamples), so starts "
        "differ; from a common start "
        "weights equal repeated rows (test_integer_sample_weight_equals_repeated_rows)."),
}


@parametrize_with_checks([gmoe.GaussianMoERegressor(n_init=2, random_state=0)],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_compatible(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, DegenerateExpertWarning))
        check(estimator)


def test_align_to_recovers_a_known_permutation_and_keeps_the_density():
    from gmoe.alignment import permute_experts

    X = gmoe.make_design(3000, "uniform", n_features=2, random_state=0)
    y = gmoe.sample_moe(TRUTH_3x2, X, random_state=1)
    est = gmoe.GaussianMoERegressor(3, n_init=2, random_state=0).fit(X, y)
    before = est.score_samples(X, y)
    perm = np.array([2, 0, 1])
    reference = permute_experts(est.mixing_measure_, perm)
    est.align_to(reference)
    assert_array_equal(est.alignment_permutation_, perm)
    assert_allclose(est.expert_coef_, reference.expert_coef, rtol=1e-12)
    assert_allclose(est.gate_coef_[-1], 0.0, atol=0)  # the reference convention still holds
    assert_allclose(est.score_samples(X, y), before, rtol=1e-10)
