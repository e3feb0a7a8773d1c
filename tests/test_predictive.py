import re
import time
import types
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import integrate, special, stats
from sklearn.exceptions import NotFittedError

import gmoe.predictive as predictive_module
from gmoe import MixingMeasure, conditional_log_density, sample_moe
from gmoe.predictive import PredictiveMixture, predictive_distribution

# --------------------------------------------------------------------------- models


def _softmax():
    # The reference truth of paper 1's reference protocol.
    return MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                         [0.09, 0.16])


def _topk(top_k, selection="affine"):
    return MixingMeasure([[4.0], [-3.0], [0.0]], [-1.0, 0.5, 0.0], [[2.0], [-1.0], [0.5]],
                         [1.0, -2.0, 4.0], [0.3, 0.5, 0.2], gating="topk", top_k=top_k,
                         topk_selection=selection)


def _temperature():
    return MixingMeasure([[6.25], [0.0]], [-2.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                         [0.09, 0.16], gating="temperature", temperature=0.25)


def _activation():
    # The activation truth of the temperature study.
    return MixingMeasure([[4.0], [-1.0]], [-0.9, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                         [0.09, 0.16], gating="activation", temperature=0.25,
                         activation="tanh")


def _two_features():
    return MixingMeasure([[1.0, -2.0], [0.5, 1.0], [0.0, 0.0]], [0.2, -0.3, 0.0],
                         [[1.0, 0.0], [-1.0, 2.0], [0.0, 0.5]], [0.0, 3.0, -2.0],
                         [1.0, 0.25, 0.5])


MODELS = {
    "softmax": _softmax,
    "topk1": lambda: _topk(1),
    "topk2": lambda: _topk(2),
    "topk1_linear": lambda: _topk(1, "linear"),
    "temperature": _temperature,
    "activation": _activation,
    "two_features": _two_features,
}


@pytest.fixture(params=sorted(MODELS))
def measure(request):
    return MODELS[request.param]()


def _design(measure, n, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.5, 1.5, size=(n, measure.n_features))


def _reference_gate(m, X):
    """Gate probabilities written out from the gate definitions, independently of gmoe.gates."""
    linear = X @ m.gate_coef.T
    if m.gating == "activation":
        logits = (np.tanh(linear) + m.gate_intercept) / m.temperature
    elif m.gating == "temperature":
        logits = (linear + m.gate_intercept) / m.temperature
    else:
        logits = linear + m.gate_intercept
    if m.gating == "topk":
        scores = linear + (m.gate_intercept if m.topk_selection == "affine" else 0.0)
        keep = np.argsort(-scores, axis=1, kind="stable")[:, :m.top_k]
        mask = np.zeros(scores.shape, dtype=bool)
        np.put_along_axis(mask, keep, True, axis=1)
        logits = np.where(mask, logits, -np.inf)
    return special.softmax(logits, axis=1)


# ---------------------------------------------------------------------- moments


def test_mean_and_variance_match_closed_form(measure):
    X = _design(measure, 300)
    mix = predictive_distribution(measure, X)
    gate = _reference_gate(measure, X)
    mu = X @ measure.expert_coef.T + measure.expert_intercept
    mean = np.sum(gate * mu, axis=1)
    # E[y^2] - E[y]^2, a different formula from the implementation's.
    var = np.sum(gate * (measure.expert_var + mu ** 2), axis=1) - mean ** 2
    assert_allclose(mix.weights, gate, rtol=1e-12, atol=1e-15)
    assert_allclose(mix.mean, mean, rtol=1e-12, atol=1e-12)
    # cancellation in E[y^2] - E[y]^2 with |mu| ~ 30: absolute error ~ 1e3 * eps.
    assert_allclose(mix.var, var, rtol=1e-10, atol=1e-10)
    assert_allclose(mix.std, np.sqrt(mix.var))


def test_single_expert_is_the_normal_distribution():
    mix = PredictiveMixture(np.zeros((3, 1)), [[0.0], [1.0], [-2.0]], [4.0])
    loc, scale = np.array([0.0, 1.0, -2.0]), 2.0
    q = np.array([[1e-12, 0.025, 0.5, 0.9, 1 - 1e-9]])
    assert_allclose(mix.ppf(q), stats.norm.ppf(q, loc[:, None], scale), rtol=1e-9, atol=1e-9)
    y = np.array([[-3.0, 0.0, 2.5]])
    assert_allclose(mix.logpdf(y), stats.norm.logpdf(y, loc[:, None], scale), rtol=1e-13)
    assert_allclose(mix.cdf(y), stats.norm.cdf(y, loc[:, None], scale), rtol=1e-13)
    assert_allclose(mix.var, 4.0)


# -------------------------------------------------------------------- densities


def test_logpdf_matches_conditional_log_density(measure):
    X = _design(measure, 200)
    y = sample_moe(measure, X, random_state=1)
    mix = predictive_distribution(measure, X)
    assert_allclose(mix.logpdf(y), conditional_log_density(measure, X, y), rtol=1e-12)
    assert_allclose(mix.pdf(y), np.exp(mix.logpdf(y)))


def test_logpdf_far_in_the_tails_is_finite(measure):
    X = _design(measure, 20)
    mix = predictive_distribution(measure, X)
    out = mix.logpdf(np.array([[-1e4, 1e4]]))
    assert np.all(np.isfinite(out)) and np.all(out < -1e5)


def test_logpdf_beyond_float64s_reach_is_minus_infinity(measure):
    # A squared residual that overflows: the density is 0 and its log -inf, as
    # conditional_log_density says, not NaN from -inf - -inf.
    X = _design(measure, 2)
    y = np.array([1e160, -1e200])
    mix = predictive_distribution(measure, X)
    assert_array_equal(mix.logpdf(y), [-np.inf, -np.inf])
    assert_array_equal(mix.pdf(y), [0.0, 0.0])
    assert_array_equal(conditional_log_density(measure, X, y), [-np.inf, -np.inf])


def test_pdf_integrates_to_one(measure):
    X = _design(measure, 5, seed=3)
    mix = predictive_distribution(measure, X)
    for i in range(X.shape[0]):
        row = PredictiveMixture(mix.log_weights[i:i + 1], mix.means[i:i + 1],
                                mix.variances[i:i + 1])
        # Integrate around every component's centre so quad sees every (narrow) peak.
        points = np.sort(mix.means[i])
        lo, hi = points[0] - 12 * mix.std[i] - 5, points[-1] + 12 * mix.std[i] + 5
        total, err = integrate.quad(lambda t, r=row: r.pdf(t)[0], lo, hi, points=points,
                                    limit=200, epsabs=1e-12)
        assert total == pytest.approx(1.0, abs=1e-8)
        # and the CDF is the integral of the density
        y0 = float(np.median(points))
        part, _ = integrate.quad(lambda t, r=row: r.pdf(t)[0], lo, y0,
                                 points=points[points < y0], limit=200, epsabs=1e-12)
        assert row.cdf(y0)[0] == pytest.approx(part, abs=1e-8)


def test_cdf_is_monotone_with_the_right_limits(measure):
    X = _design(measure, 50)
    mix = predictive_distribution(measure, X)
    grid = np.linspace(-60, 60, 4001)[None, :]
    F = mix.cdf(grid)
    assert F.shape == (50, 4001)
    assert np.all(np.diff(F, axis=1) >= 0)
    assert np.all((F >= 0) & (F <= 1))
    assert_array_equal(mix.cdf(-np.inf), 0.0)
    assert_array_equal(mix.cdf(np.inf), 1.0)


def test_inactive_topk_experts_have_weight_exactly_zero():
    m = _topk(1)
    X = _design(m, 500)
    mix = predictive_distribution(m, X)
    assert_array_equal(np.sum(mix.weights > 0, axis=1), 1)
    assert set(np.unique(mix.weights)) == {0.0, 1.0}
    q = np.random.default_rng(0).random(500)
    for values in (mix.mean, mix.var, mix.logpdf(0.0), mix.cdf(0.0), mix.ppf(q),
                   mix.rvs(random_state=0)):
        assert np.all(np.isfinite(values))
    # one active expert: the predictive is that expert's normal distribution
    active = np.argmax(mix.weights, axis=1)
    rows = np.arange(500)
    expected = stats.norm.ppf(q, mix.means[rows, active], np.sqrt(mix.variances[rows, active]))
    assert_allclose(mix.ppf(q), expected, rtol=1e-9, atol=1e-9)


# -------------------------------------------------------------------- quantiles


def test_ppf_inverts_cdf(measure, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X = rng.uniform(-0.5, 1.5, size=(400, measure.n_features))
    mix = predictive_distribution(measure, X)
    q = rng.random(400)
    x = mix.ppf(q)
    assert np.max(np.abs(mix.cdf(x) - q)) <= 1e-10
    grid = np.array([[1e-15, 1e-6, 0.05, 0.5, 0.95, 1 - 1e-6, 1 - 1e-12]])
    xs = mix.ppf(grid)
    assert xs.shape == (400, 7)
    assert np.max(np.abs(mix.cdf(xs) - grid)) <= 1e-10
    assert np.all(np.diff(xs, axis=1) > 0)


def test_ppf_resolves_tail_probabilities():
    # One expert: the quantiles are scipy's, far into both tails.
    mix = PredictiveMixture(np.zeros((2, 1)), [[0.0], [3.0]], [0.25])
    q = np.array([[1e-200, 1e-20, 0.3, 1 - 1e-12]])
    expected = stats.norm.ppf(q, [[0.0], [3.0]], 0.5)
    expected[:, -1] = stats.norm.isf(1 - q[0, -1], [0.0, 3.0], 0.5)
    assert_allclose(mix.ppf(q), expected, rtol=1e-10)
    # A mixture: relative precision of the tail probability on both sides.
    m = _softmax()
    mix = predictive_distribution(m, _design(m, 50))
    lower = np.array([[1e-250, 1e-30, 1e-8]])
    assert_allclose(mix.cdf(mix.ppf(lower)) / lower, 1.0, rtol=1e-10)
    upper = np.array([[1 - 1e-8, 1 - 1e-14]])
    assert_allclose(mix.sf(mix.ppf(upper)) / (1 - upper), 1.0, rtol=1e-10)


def test_sf_is_one_minus_cdf(measure):
    mix = predictive_distribution(measure, _design(measure, 30))
    grid = np.linspace(-40, 40, 81)[None, :]
    assert_allclose(mix.sf(grid), 1 - mix.cdf(grid), atol=1e-15)


def test_ppf_across_a_gap_between_separated_experts():
    # Two experts 200 sd apart: the CDF is flat at 0.3 between them, where Newton stalls.
    mix = PredictiveMixture(np.log([[0.3, 0.7]]), [[-100.0, 100.0]], [1.0, 1.0])
    q = np.array([[0.3, 0.3 - 1e-9, 0.3 + 1e-9, 1e-300, 0.999999]])
    x = mix.ppf(q)
    assert np.max(np.abs(mix.cdf(x) - q)) <= 1e-10
    assert x[0, 1] < 0 < x[0, 2]


def test_ppf_of_zero_and_one_and_median():
    m = _softmax()
    mix = predictive_distribution(m, _design(m, 10))
    assert_array_equal(mix.ppf(0.0), -np.inf)
    assert_array_equal(mix.ppf(1.0), np.inf)
    assert_allclose(mix.cdf(mix.median()), 0.5, atol=1e-10)


def test_ppf_is_fast_for_ten_thousand_rows():
    m = _softmax()
    mix = predictive_distribution(m, np.linspace(0, 1, 10_000)[:, None])
    q = np.random.default_rng(0).random(10_000)
    start = time.perf_counter()
    x = mix.ppf(q)
    elapsed = time.perf_counter() - start
    assert np.max(np.abs(mix.cdf(x) - q)) <= 1e-10
    # about 0.04 s here; the bound leaves room for a slow CI machine
    assert elapsed < 1.0


def test_interval_is_central():
    m = _activation()
    mix = predictive_distribution(m, _design(m, 100))
    lower, upper = mix.interval(0.8)
    assert np.all(lower < upper)
    assert_allclose(mix.cdf(lower), 0.1, atol=1e-10)
    assert_allclose(mix.cdf(upper), 0.9, atol=1e-10)


@pytest.mark.parametrize("name", ["softmax", "topk1", "topk2", "temperature", "activation"])
def test_interval_coverage_on_simulated_data(name, global_random_seed):
    m = MODELS[name]()
    n, level = 20_000, 0.9
    rng = np.random.default_rng(global_random_seed)
    X = rng.uniform(-0.5, 1.5, size=(n, m.n_features))
    y = sample_moe(m, X, random_state=rng)
    lower, upper = predictive_distribution(m, X).interval(level)
    covered = (lower <= y) & (y <= upper)
    # Given X, the indicators are independent Bernoulli(level): binomial standard error
    # sqrt(0.9 * 0.1 / 2e4) = 0.0021; 4.5 standard errors -> a false alarm rate of 7e-6
    # per check, under 1% over the 1000 checks of GMOE_TESTS_GLOBAL_RANDOM_SEED=all.
    se = np.sqrt(level * (1 - level) / n)
    assert abs(covered.mean() - level) < 4.5 * se
    below = np.mean(y < lower)
    se_tail = np.sqrt(0.05 * 0.95 / n)
    assert abs(below - 0.05) < 4.5 * se_tail


# ------------------------------------------------------------------------ samples


@pytest.mark.parametrize("name", ["softmax", "topk1", "topk2", "activation"])
def test_rvs_moments(name, global_random_seed):
    m = MODELS[name]()
    X = np.array([[0.0], [0.3], [0.45], [1.0]])
    mix = predictive_distribution(m, X)
    draws = mix.rvs(size=40_000, random_state=global_random_seed)
    assert draws.shape == (4, 40_000)
    n = draws.shape[1]
    # CLT: the sample mean is off by ~ sd / sqrt(n), the sample variance by
    # ~ sqrt((mu4 - var^2) / n); 5 standard errors per row (8 checks in all).
    se_mean = np.sqrt(mix.var / n)
    assert np.all(np.abs(draws.mean(axis=1) - mix.mean) < 5 * se_mean)
    centred = draws - draws.mean(axis=1, keepdims=True)
    mu4 = np.mean(centred ** 4, axis=1)
    se_var = np.sqrt(np.maximum(mu4 - mix.var ** 2, 0) / n)
    assert np.all(np.abs(draws.var(axis=1) - mix.var) < 5 * se_var + 1e-12)


def test_rvs_shapes_and_reproducibility():
    m = _softmax()
    mix = predictive_distribution(m, _design(m, 7))
    assert mix.rvs(random_state=0).shape == (7,)
    assert mix.rvs(size=3, random_state=0).shape == (7, 3)
    assert mix.rvs(size=0).shape == (7, 0)
    assert_array_equal(mix.rvs(size=5, random_state=4), mix.rvs(size=5, random_state=4))
    # The block size is a memory bound: the same seed gives the same draws (it did not).
    small = PredictiveMixture(mix.log_weights, mix.means, mix.variances, chunk_size=2)
    assert_array_equal(small.rvs(size=5, random_state=1), mix.rvs(size=5, random_state=1))
    assert_array_equal(small.rvs(random_state=2), mix.rvs(random_state=2))


# ----------------------------------------------------------------------- chunking


def test_chunking_does_not_change_results(monkeypatch):
    m = _topk(2)
    X = _design(m, 301)
    full = predictive_distribution(m, X)
    chunked = predictive_distribution(m, X, chunk_size=7)
    grid = np.linspace(-10, 10, 13)[None, :]
    q = np.random.default_rng(0).random((301, 3))
    for method, arg in (("logpdf", grid), ("cdf", grid), ("ppf", q)):
        assert_allclose(getattr(chunked, method)(arg), getattr(full, method)(arg),
                        rtol=1e-13, atol=1e-13)
    # the default block size adapts to the grid: force tiny blocks
    monkeypatch.setattr(predictive_module, "_BLOCK_ELEMENTS", 10)
    assert_allclose(full.logpdf(grid), chunked.logpdf(grid), rtol=1e-13)


def test_a_million_rows():
    m = _softmax()
    X = np.linspace(0, 1, 1_000_000)[:, None]
    mix = predictive_distribution(m, X)
    assert mix.mean.shape == (1_000_000,)
    out = mix.logpdf(np.array([[0.0, 5.0]]))
    assert out.shape == (1_000_000, 2) and np.all(np.isfinite(out))


# ---------------------------------------------------------------------- accepting


def test_accepts_a_fitted_estimator_like_object():
    m = _softmax()
    X = _design(m, 5)
    est = types.SimpleNamespace(mixing_measure_=m)
    assert_allclose(predictive_distribution(est, X).mean, predictive_distribution(m, X).mean)


def test_variances_per_row():
    mix = PredictiveMixture(np.log([[0.5, 0.5], [0.25, 0.75]]), [[0.0, 1.0], [0.0, 1.0]],
                            [[1.0, 2.0], [3.0, 4.0]])
    assert_allclose(mix.var, [0.5 * 1 + 0.5 * 2 + 0.25, 0.25 * 3 + 0.75 * 4 + 0.1875])


# --------------------------------------------------------------------- validation


@pytest.fixture
def mix():
    return PredictiveMixture(np.log([[0.5, 0.5], [0.2, 0.8]]), [[0.0, 1.0], [2.0, 3.0]],
                             [1.0, 2.0])


@pytest.mark.parametrize("level", [0.0, 1.0, -0.1, 1.5, np.nan])
def test_interval_rejects_bad_level(mix, level):
    with pytest.raises(ValueError, match=re.escape("level must be a number in (0, 1)")):
        mix.interval(level)


def test_interval_rejects_non_number(mix):
    with pytest.raises(ValueError, match="level must be a number"):
        mix.interval("high")


@pytest.mark.parametrize("q", [-0.1, 1.1, np.nan, [0.5, 2.0]])
def test_ppf_rejects_bad_probabilities(mix, q):
    with pytest.raises(ValueError, match=re.escape("q must hold probabilities in [0, 1]")):
        mix.ppf(q)


@pytest.mark.parametrize("y, match", [
    ([0.0, 1.0, 2.0], r"y must be a scalar, an array of shape \(n_samples,\)"),
    (np.zeros((3, 2)), "must have rows = n_samples = 2 or 1"),
    (np.zeros((2, 2, 2)), "at most 2 dimensions"),
    ([np.nan, 0.0], "must not contain NaN"),
])
def test_logpdf_rejects_bad_points(mix, y, match):
    with pytest.raises(ValueError, match=match):
        mix.logpdf(y)


def test_logpdf_rejects_infinite_points_cdf_accepts_them(mix):
    with pytest.raises(ValueError, match="NaN or infinite"):
        mix.logpdf(np.inf)
    with pytest.raises(ValueError, match="must not contain NaN"):
        mix.cdf(np.nan)


@pytest.mark.parametrize("kwargs, match", [
    (dict(log_gate=np.log([[0.5, 0.4]])), "must sum to 1 in every row"),
    (dict(log_gate=[[-np.inf, -np.inf]]), "row 0 is all -inf"),
    (dict(log_gate=[[np.nan, 0.0]]), "got NaN or \\+inf"),
    (dict(log_gate=[0.0, 0.0]), "log_gate must be a 2-D array"),
    (dict(means=[[0.0, 1.0, 2.0]]), "means must have shape"),
    (dict(variances=[1.0, 0.0]), "variances must all be > 0"),
    (dict(variances=[1.0, 2.0, 3.0]), "variances must have shape"),
    (dict(chunk_size=0), "chunk_size must be None or an integer >= 1"),
])
def test_constructor_validation(kwargs, match):
    args = dict(log_gate=np.log([[0.5, 0.5]]), means=[[0.0, 1.0]], variances=[1.0, 2.0])
    args.update(kwargs)
    log_gate, means, variances = args.pop("log_gate"), args.pop("means"), args.pop("variances")
    with pytest.raises(ValueError, match=match):
        PredictiveMixture(log_gate, means, variances, **args)


def test_rvs_rejects_bad_size(mix):
    with pytest.raises(ValueError, match="size must be None or an integer >= 0"):
        mix.rvs(size=-1)
    with pytest.raises(ValueError, match="size must be None or an integer >= 0"):
        mix.rvs(size=(2, 3))


def test_predictive_distribution_validation():
    with pytest.raises(ValueError, match="must be a MixingMeasure or a fitted estimator"):
        predictive_distribution(object(), np.zeros((2, 1)))
    with pytest.raises(ValueError, match="Reshape your data"):
        predictive_distribution(_softmax(), np.zeros(3))
    with pytest.raises(ValueError, match=re.escape("X must have shape (?, 1)")):
        predictive_distribution(_softmax(), np.zeros((3, 2)))


def test_unfitted_estimator_message():
    class Estimator:
        def fit(self, X, y):
            return self

    with pytest.raises(NotFittedError, match="is not fitted yet"):
        predictive_distribution(Estimator(), np.zeros((2, 1)))


def test_every_function_given_an_estimator_checks_its_feature_names():
    # An estimator fitted on a DataFrame refuses swapped columns in its own methods, but
    # these functions checked only the number of columns: the predictive means, standard
    # errors and bootstrap were silently those of the features swapped.
    pd = pytest.importorskip("pandas")  # a test dependency; optional for users
    from gmoe import GaussianMoERegressor, e_step, make_design
    from gmoe.inference import MoEResults, bootstrap
    from gmoe.metrics import boundary_error, hellinger, total_variation
    from gmoe.plotting import plot_experts, plot_predictive, plot_responsibilities

    truth = MixingMeasure([[3.0, -2.0], [0.0, 0.0]], [0.5, 0.0], [[2.0, 1.0], [0.3, -2.0]],
                          [3.0, 0.0], [0.25, 0.36])
    X = make_design(200, "uniform", n_features=2, random_state=0)
    y = sample_moe(truth, X, random_state=1)
    frame = pd.DataFrame(X, columns=["a", "b"])
    swapped = frame[["b", "a"]]
    est = GaussianMoERegressor(2, random_state=0, max_iter=50).fit(frame, y)
    calls = {
        "predictive_distribution": lambda Z: predictive_distribution(est, Z),
        "conditional_log_density": lambda Z: conditional_log_density(est, Z, y),
        "e_step": lambda Z: e_step(est, Z, y),
        "MoEResults": lambda Z: MoEResults(est, Z, y),
        "bootstrap": lambda Z: bootstrap(est, Z, y, n_boot=2, random_state=0),
        "hellinger": lambda Z: hellinger(truth, est, Z),
        "total_variation": lambda Z: total_variation(est, truth, Z),
        "boundary_error": lambda Z: boundary_error(est, truth, Z),
        "plot_experts": lambda Z: plot_experts(est, Z, y, feature=0),
        "plot_predictive": lambda Z: plot_predictive(est, Z, y, feature=0),
        "plot_responsibilities": lambda Z: plot_responsibilities(est, Z, y, feature=0),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="feature names should match"):
            call(swapped)
            pytest.fail(f"{name} accepted swapped columns")
    # As the estimator's predict: an array without names warns; a measure has no names.
    with pytest.warns(UserWarning, match="does not have valid feature names"):
        predictive_distribution(est, X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictive_distribution(est.mixing_measure_, swapped)
        MoEResults(est.mixing_measure_, frame, y)
    # With the columns in order the functions agree with the estimator's own methods.
    assert_allclose(conditional_log_density(est, frame, y), est.score_samples(frame, y),
                    rtol=1e-12)
    assert_allclose(predictive_distribution(est, frame).mean, est.predict(frame), rtol=1e-12)


def test_a_pipeline_is_refused_with_what_to_pass_instead():
    # A fitted Pipeline was called "not fitted yet" (it has no mixing_measure_ itself).
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from gmoe import GaussianMoERegressor, make_design

    truth = MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]], [1.0, -1.0],
                          [0.05, 0.05])
    X = make_design(200, "uniform", random_state=0)
    y = sample_moe(truth, X, random_state=1)
    pipe = make_pipeline(StandardScaler(), GaussianMoERegressor(2, random_state=0,
                                                                max_iter=30)).fit(X, y)
    with pytest.raises(ValueError, match=r"got a Pipeline: pass its last step"):
        predictive_distribution(pipe, X)
    mix = predictive_distribution(pipe[-1], pipe[:-1].transform(X))
    assert_allclose(mix.mean, pipe.predict(X), rtol=1e-12)
