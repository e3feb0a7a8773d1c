"""SQUAREM: the S3 extrapolation, its global safeguard, and monotone EM."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning

import gmoe
import gmoe._em
from gmoe._acceleration import Squarem, pack, unpack
from gmoe.estimator import _Params
from gmoe.exceptions import DegenerateExpertWarning
from gmoe.gates import GateParams
from gmoe.simulation.start import make_near_truth_start

TRUTH = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                           [0.09, 0.16])


def _params(rng, k=3, d=2, temperature=None):
    gate_coef = rng.normal(size=(k, d))
    gate_coef[-1] = 0.0
    gate_intercept = np.append(rng.normal(size=k - 1), 0.0)
    return _Params(GateParams(gate_coef, gate_intercept, temperature),
                   rng.normal(size=(k, d)), rng.normal(size=k), rng.uniform(0.1, 1.0, size=k))


@pytest.mark.parametrize("learn,scale", [(False, 1.0), (True, 1.0), (False, 0.25)])
def test_pack_unpack_round_trip(learn, scale):
    rng = np.random.default_rng(0)
    params = _params(rng, temperature=0.7)
    vector = pack(params, learn, scale)
    back = unpack(vector, params, learn, 0.0, scale)
    for name in ("gate_coef", "gate_intercept", "temperature", "expert_coef",
                 "expert_intercept", "expert_var"):
        assert_allclose(getattr(back, name), getattr(params, name), rtol=1e-14)
    # The variances are on the log scale, the gate divided by the scale.
    assert_allclose(vector[-3:], np.log(params.expert_var), rtol=1e-14)
    assert_allclose(vector[:6], params.gate_coef.ravel() / scale, rtol=1e-14)


def test_unpack_floors_the_variances():
    rng = np.random.default_rng(1)
    params = _params(rng)
    vector = pack(params, False)
    vector[-3:] = np.log([1e-9, 0.5, 1e-12])
    back = unpack(vector, params, False, 1e-6)
    assert_allclose(back.expert_var, [1e-6, 0.5, 1e-6])


def test_s3_extrapolation_on_a_linear_map():
    # For F(u) = A u + b with A = a I, the S3 step solves the fixed point exactly.
    rng = np.random.default_rng(2)
    p0 = _params(rng, k=2, d=1)
    a = 0.9
    u0 = pack(p0, False)
    fixed = rng.normal(size=u0.size)
    fixed[[1, 3]] = 0.0  # the reference's gate entries stay 0

    def em_map(params):
        u = pack(params, False)
        return unpack(fixed + a * (u - fixed), params, False, 0.0)

    p1 = em_map(p0)
    p2 = em_map(p1)
    squarem = Squarem(False, 0.0)
    squarem.step_max = 1e6
    result = squarem.extrapolate(p0, p1, p2)
    # r = (a - 1) e0, v = (a - 1)^2 e0, alpha = -1 / (1 - a), u' = fixed.
    assert squarem._alpha == pytest.approx(-1.0 / (1.0 - a), rel=1e-10)
    assert_allclose(pack(result, False), fixed, rtol=1e-9, atol=1e-9)
    assert_allclose(pack(p0, False), u0)  # the inputs are not modified


def test_step_length_bounds_and_adaptation():
    rng = np.random.default_rng(3)
    p0 = _params(rng, k=2, d=1)
    u0 = pack(p0, False)
    p1 = unpack(u0 + 1.0, p0, False, 0.0)
    p2 = unpack(u0 + 1.999, p0, False, 0.0)  # ||v|| << ||r||: a long step wanted
    squarem = Squarem(False, 0.0)
    squarem.extrapolate(p0, p1, p2)
    assert squarem._alpha == -1.0  # step_max starts at 1: the plain iterate u2
    squarem.accept()
    assert squarem.step_max == 4.0
    squarem.extrapolate(p0, p1, p2)
    assert squarem._alpha == -4.0
    squarem.fall_back()
    assert squarem.step_max == 1.0 and squarem.n_fallbacks == 1
    p2_short = unpack(u0 + 1.5, p0, False, 0.0)  # ||v|| = ||r|| / 2: alpha = -2
    squarem.step_max = 10.0
    squarem.extrapolate(p0, p1, p2_short)
    assert squarem._alpha == pytest.approx(-2.0)
    p2_far = unpack(u0 + 4.0, p0, False, 0.0)  # ||v|| > ||r||: alpha held at -1
    squarem.extrapolate(p0, p1, p2_far)
    assert squarem._alpha == -1.0


class _SpySquarem(Squarem):
    """Records every cycle's step length and outcome."""

    cycles = []

    def accept(self):
        self.cycles.append((self._alpha, True))
        super().accept()

    def fall_back(self):
        self.cycles.append((self._alpha, False))
        super().fall_back()


@pytest.mark.parametrize("always", [False, True])
def test_em_is_monotone_with_accelerated_steps(always, global_random_seed, monkeypatch):
    # With the default rule (cycles while EM is slow) and with cycles at every step.
    rng = np.random.default_rng(global_random_seed)
    k = int(rng.integers(2, 4))
    d = int(rng.integers(1, 3))
    truth = gmoe.MixingMeasure(
        np.vstack([rng.normal(0, 3, (k - 1, d)), np.zeros((1, d))]),
        np.append(rng.normal(0, 1, k - 1), 0.0), rng.normal(0, 2, (k, d)),
        rng.normal(0, 2, k), rng.uniform(0.1, 1.0, k))
    X = gmoe.make_design(300, "normal", n_features=d, random_state=global_random_seed)
    y = gmoe.sample_moe(truth, X, random_state=global_random_seed)
    _SpySquarem.cycles = []
    monkeypatch.setattr(gmoe._em, "Squarem", _SpySquarem)
    if always:
        monkeypatch.setattr(gmoe._em, "SQUAREM_MIN_RATE", -np.inf)
    # One more expert than the truth: the slow, over-specified regime SQUAREM is for.
    est = gmoe.GaussianMoERegressor(k + 1, n_init=1, init_params="random",
                                    random_state=global_random_seed, max_iter=90, tol=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", (ConvergenceWarning, DegenerateExpertWarning))
        est.fit(X, y)
    trace = est.lower_bounds_
    assert len(trace) == est.n_iter_ + 1
    # Monotone up to the round-off of a mean log-likelihood.
    assert np.all(np.diff(trace) >= -1e-12 * np.abs(trace[1:])), np.diff(trace).min()
    accepted = [alpha for alpha, ok in _SpySquarem.cycles if ok]
    # Cycles of three steps, plain steps and the stopping rule's one-step moves between
    # them; over-specified EM is slow for long stretches (the default rule ran 6 to 28
    # cycles over 100 seeds).
    assert 3 * len(_SpySquarem.cycles) <= est.n_iter_
    assert len(_SpySquarem.cycles) >= (10 if always else 3)
    assert any(alpha < -1.0 for alpha in accepted)  # extrapolated steps were taken


def test_global_safeguard_keeps_the_plain_iterate(monkeypatch):
    # A sabotaged extrapolation (far along -r) must fall back to the plain EM iterate:
    # the run then equals plain EM, step for step.
    X = gmoe.make_design(300, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH, X, random_state=1)
    start = TRUTH.replace(expert_intercept=[14.0, -4.0], gate_intercept=[-6.0, 0.0])

    class Sabotaged(_SpySquarem):
        def extrapolate(self, params0, params1, params2):
            self.n_cycles += 1
            self._alpha = -1.0
            u = pack(params0, False) - 50.0 * (pack(params1, False) - pack(params0, False))
            return unpack(u, params2, False, self.var_floor)

    _SpySquarem.cycles = []
    monkeypatch.setattr(gmoe._em, "Squarem", Sabotaged)
    # Cycles whatever the rate (this EM converges fast, where they would not run).
    monkeypatch.setattr(gmoe._em, "SQUAREM_MIN_RATE", -np.inf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fast = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=8, tol=0).fit(X, y)
        plain = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=6, tol=0,
                                          acceleration=None).fit(X, y)
    assert [ok for _, ok in _SpySquarem.cycles] == [False, False]
    # Two plain steps measure the rate; each fallen-back cycle then keeps its two plain EM
    # steps: 2 + 2 cycles x 2 = 6 EM steps.
    assert_allclose(fast.mixing_measure_.to_vector(), plain.mixing_measure_.to_vector(),
                    rtol=1e-12, atol=1e-12)
    assert_allclose(fast.lower_bounds_[[2, 5, 8]], plain.lower_bounds_[[2, 4, 6]], rtol=1e-13)


def test_squarem_cycles_run_only_where_em_is_slow(monkeypatch):
    # Cycles start once plain EM's rises of L shrink by less than SQUAREM_MIN_RATE a step:
    # with an unreachable rate the run is plain EM, step for step; with any rate, the first
    # two steps are plain (they measure it) and cycles follow.
    X = gmoe.make_design(2000, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH, X, random_state=1)
    start = TRUTH.replace(expert_intercept=[14.0, -4.0], gate_intercept=[-6.0, 0.0])
    plain = gmoe.GaussianMoERegressor(2, init_params=start, acceleration=None).fit(X, y)
    for rate, expect_cycles in ((np.inf, False), (-np.inf, True)):
        _SpySquarem.cycles = []
        monkeypatch.setattr(gmoe._em, "Squarem", _SpySquarem)
        monkeypatch.setattr(gmoe._em, "SQUAREM_MIN_RATE", rate)
        fit = gmoe.GaussianMoERegressor(2, init_params=start).fit(X, y)
        assert bool(_SpySquarem.cycles) == expect_cycles
        if not expect_cycles:
            assert_array_equal(fit.lower_bounds_, plain.lower_bounds_)
            assert_array_equal(fit.mixing_measure_.to_vector(),
                               plain.mixing_measure_.to_vector())
        else:
            assert_array_equal(fit.lower_bounds_[:3], plain.lower_bounds_[:3])


def test_acceleration_reaches_the_plain_em_optimum_in_fewer_steps():
    rng = np.random.default_rng(0)
    n = 2000
    X = gmoe.make_design(n, "grid")
    y = gmoe.sample_moe(TRUTH, X, random_state=rng)
    start = make_near_truth_start(TRUTH, 3, n, rng)
    fits = {}
    for acceleration in ("squarem", None):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", (ConvergenceWarning, DegenerateExpertWarning))
            est = gmoe.GaussianMoERegressor(3, init_params=start, max_iter=100000,
                                            acceleration=acceleration)
            fits[acceleration] = est.fit(X, y)
    fast, plain = fits["squarem"], fits[None]
    assert fast.converged_
    # Both stop within tol (1e-4 total) of the same maximum (a flat, over-specified one).
    assert n * abs(fast.lower_bound_ - plain.lower_bound_) < 0.01
    assert fast.n_iter_ * 3 < plain.n_iter_


def test_plain_em_when_fewer_than_three_steps_remain():
    X = gmoe.make_design(300, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH, X, random_state=1)
    start = TRUTH.replace(expert_intercept=[14.0, -4.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        fast = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=2, tol=0).fit(X, y)
        plain = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=2, tol=0,
                                          acceleration=None).fit(X, y)
    assert_allclose(fast.mixing_measure_.to_vector(), plain.mixing_measure_.to_vector(),
                    rtol=0, atol=0)


def test_bad_acceleration_raises():
    X = gmoe.make_design(50, "uniform", random_state=0)
    with pytest.raises(ValueError, match="acceleration must be 'squarem' or None, got "
                                         "acceleration='anderson'"):
        gmoe.GaussianMoERegressor(acceleration="anderson").fit(X, X[:, 0])
