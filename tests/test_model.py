"""MixingMeasure, the density, the E-step wrapper, the sampler and bad input (the model)."""

import copy
import pickle
import re

import _reference as ref
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import gmoe
from gmoe import MixingMeasure

# Paper 1's reference truth (expert 2 the reference) and the temperature study's tanh truth.
EXPERTS_52 = dict(expert_coef=[[-20.0], [20.0]], expert_intercept=[15.0, -5.0],
                  expert_var=[0.09, 0.16])
TRUTH_52 = MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], **EXPERTS_52)
TRUTH_53_TANH = MixingMeasure([[4.0], [-1.0]], [-0.9, 0.0], **EXPERTS_52, gating="activation",
                              temperature=0.25, activation="tanh")
TRUTH_TOP2 = MixingMeasure([[6.0], [-6.0], [0.0]], [-2.0, 3.0, 0.0], [[-10.0], [0.0], [10.0]],
                           [5.0, 0.0, -5.0], [0.04, 0.25, 1.0], gating="topk", top_k=2)


def _random_measure(rng, options, n_experts=3, n_features=2, **kwargs):
    return MixingMeasure(**ref.random_params(rng, n_experts, n_features, options, **kwargs),
                         **options)


def _data(rng, measure, n=200):
    X = rng.standard_normal((n, measure.n_features))
    return X, gmoe.sample_moe(measure, X, random_state=rng)


def _reference_log_density(measure, X, y):
    return ref.e_step(X, y, ref.measure_log_gate(measure, X), measure.expert_coef,
                      measure.expert_intercept, measure.expert_var)[1]


# ------------------------------------------------------------------- density / E-step
@pytest.mark.parametrize("options", ref.FAMILY_OPTIONS, ids=ref.family_id)
@pytest.mark.parametrize("gate_scale", [2.0, 500.0], ids=["ordinary", "logits_1e3"])
def test_e_step_matches_reference(options, gate_scale, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    measure = _random_measure(rng, options, gate_scale=gate_scale)
    X, y = _data(rng, measure)
    resp, log_lik = gmoe.e_step(measure, X, y)
    ref.assert_e_step_close(resp, log_lik, X, y, ref.measure_log_gate(measure, X),
                            measure.expert_coef, measure.expert_intercept, measure.expert_var)
    assert_array_equal(gmoe.conditional_log_density(measure, X, y), log_lik)
    # Accepts lists (array-like) as well as arrays.
    assert_array_equal(gmoe.e_step(measure, X.tolist(), y.tolist())[1], log_lik)


def test_e_step_single_row_single_expert():
    measure = MixingMeasure([[0.0]], [0.0], [[2.0]], [1.0], [0.5])
    resp, log_lik = gmoe.e_step(measure, [[3.0]], [6.5])
    assert_array_equal(resp, [[1.0]])
    assert_allclose(log_lik, [-0.5 * np.log(2 * np.pi * 0.5) - 0.5**2 / (2 * 0.5)], rtol=1e-14)


# ------------------------------------------------------------------ MixingMeasure API
@pytest.mark.parametrize("options", ref.FAMILY_OPTIONS, ids=ref.family_id)
def test_vector_round_trip(options, global_random_seed):
    measure = _random_measure(np.random.default_rng(global_random_seed), options)
    vector = measure.to_vector()
    k, d = measure.n_experts, measure.n_features
    assert vector.shape == (2 * k * d + 3 * k + measure.family.uses_temperature,)
    back = MixingMeasure.from_vector(vector, like=measure)
    assert back == measure
    assert_array_equal(back.to_vector(), vector)
    assert back.family == measure.family and back._options() == measure._options()
    # The documented order: gate_coef, gate_intercept, expert_coef, expert_intercept, var, tau.
    parts = [measure.gate_coef.ravel(), measure.gate_intercept, measure.expert_coef.ravel(),
             measure.expert_intercept, measure.expert_var]
    if measure.family.uses_temperature:
        parts.append([measure.temperature])
    assert_array_equal(vector, np.concatenate(parts))


@pytest.mark.parametrize("options", ref.FAMILY_OPTIONS, ids=ref.family_id)
def test_weights_and_atoms(options, global_random_seed):
    # Mixing measure: w_i = exp(beta0_i) or exp(beta0_i / tau); theta_i = (beta1_i, a_i, b_i, nu_i
    # [, tau]); beta0 is carried by the weight only.
    measure = _random_measure(np.random.default_rng(global_random_seed), options)
    tau = measure.temperature if options["gating"] in ("temperature", "activation") else None
    expected_weights = np.exp(measure.gate_intercept / (tau if tau is not None else 1.0))
    assert_allclose(measure.weights, expected_weights, rtol=1e-15)
    assert measure.weights[-1] == 1.0  # the reference expert
    atoms = measure.atoms
    d = measure.n_features
    assert atoms.shape == (3, 2 * d + 2 + (tau is not None))
    assert_array_equal(atoms[:, :d], measure.gate_coef)
    assert_array_equal(atoms[:, d:2 * d], measure.expert_coef)
    assert_array_equal(atoms[:, 2 * d], measure.expert_intercept)
    assert_array_equal(atoms[:, 2 * d + 1], measure.expert_var)
    if tau is not None:
        assert_array_equal(atoms[:, -1], tau)


def test_weights_of_spec_truth():
    assert_allclose(TRUTH_52.weights, [np.exp(-8.0), 1.0], rtol=1e-15)
    assert_allclose(TRUTH_53_TANH.weights, [np.exp(-0.9 / 0.25), 1.0], rtol=1e-15)
    assert_array_equal(TRUTH_52.atoms, [[25.0, -20.0, 15.0, 0.09], [0.0, 20.0, -5.0, 0.16]])


@pytest.mark.parametrize("scale", [0.1, 3.7])
def test_identifiable_temperature(scale, global_random_seed):
    # Identifiability: only gamma = (beta1, beta0) / tau is identifiable; c (beta1, beta0, tau)
    # is the same model for every c > 0 and maps to the same representative.
    rng = np.random.default_rng(global_random_seed)
    measure = _random_measure(rng, dict(gating="temperature", temperature=0.25))
    X, y = _data(rng, measure)
    gamma = measure.identifiable()
    assert gamma.gating == "temperature" and gamma.temperature == 1.0
    assert_allclose(gamma.gate_coef, measure.gate_coef / 0.25, rtol=1e-15)
    assert_allclose(gamma.gate_intercept, measure.gate_intercept / 0.25, rtol=1e-15)
    assert_array_equal(gamma.expert_var, measure.expert_var)
    rescaled = measure.replace(gate_coef=scale * measure.gate_coef,
                               gate_intercept=scale * measure.gate_intercept,
                               temperature=scale * 0.25)
    assert_allclose(rescaled.identifiable().to_vector(), gamma.to_vector(), rtol=1e-14)
    log_density = gmoe.conditional_log_density(measure, X, y)
    for other in (gamma, rescaled):
        assert_allclose(gmoe.conditional_log_density(other, X, y), log_density, rtol=1e-12,
                        atol=1e-12)


@pytest.mark.parametrize("selection", ["affine", "linear"])
@pytest.mark.parametrize("scale", [0.01, 5.0])
def test_identifiable_top1(selection, scale, global_random_seed):
    # Identifiability: with K = 1 only the selection regions matter; c (beta1, beta0), c > 0, is the
    # same model ("linear": beta0 does not enter at all).
    rng = np.random.default_rng(global_random_seed)
    measure = _random_measure(rng, dict(gating="topk", top_k=1, topk_selection=selection))
    X, y = _data(rng, measure)
    canonical = measure.identifiable()
    theta = np.column_stack([canonical.gate_coef, canonical.gate_intercept])
    if selection == "linear":
        assert_array_equal(canonical.gate_intercept, 0.0)
        assert_allclose(np.linalg.norm(canonical.gate_coef), 1.0, rtol=1e-14)
    else:
        assert_allclose(np.linalg.norm(theta), 1.0, rtol=1e-14)
    rescaled = measure.replace(gate_coef=scale * measure.gate_coef,
                               gate_intercept=scale * measure.gate_intercept)
    assert_allclose(rescaled.identifiable().to_vector(), canonical.to_vector(), rtol=1e-13,
                    atol=1e-15)
    log_density = gmoe.conditional_log_density(measure, X, y)
    for other in (canonical, rescaled):
        assert_allclose(gmoe.conditional_log_density(other, X, y), log_density, rtol=1e-12,
                        atol=1e-12)


@pytest.mark.parametrize("options", [dict(gating="softmax"), dict(gating="topk", top_k=2),
                                     dict(gating="activation", temperature=1.0,
                                          activation="tanh")], ids=ref.family_id)
def test_identifiable_is_identity_elsewhere(options, global_random_seed):
    measure = _random_measure(np.random.default_rng(global_random_seed), options)
    assert measure.identifiable() == measure


@pytest.mark.parametrize("options", ref.FAMILY_OPTIONS, ids=ref.family_id)
def test_rebase_keeps_the_density(options, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    params = ref.random_params(rng, 3, 2, options)
    params["gate_coef"][-1] = rng.standard_normal(2)
    params["gate_intercept"][-1] = 1.5
    with pytest.raises(ValueError, match=re.escape("Pass rebase=True")):
        MixingMeasure(**params, **options)
    measure = MixingMeasure(**params, **options, rebase=True)
    assert measure.gate_intercept[-1] == 0.0
    pinned = options["gating"] != "activation"  # the activation gate pins beta0_k only
    if pinned:
        assert_array_equal(measure.gate_coef[-1], 0.0)
    else:
        assert_array_equal(measure.gate_coef, params["gate_coef"])
    X = rng.standard_normal((200, 2))
    y = gmoe.sample_moe(measure, X, random_state=rng)
    raw = ref.measure_log_density(X, y, **params, **ref.gate_options(options))
    assert_allclose(gmoe.conditional_log_density(measure, X, y), raw, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("options", ref.FAMILY_OPTIONS, ids=ref.family_id)
def test_pickle_round_trip(options, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    measure = _random_measure(rng, options)
    X, y = _data(rng, measure, n=20)
    for back in (pickle.loads(pickle.dumps(measure)), copy.deepcopy(measure)):
        assert back == measure and back is not measure
        assert repr(back) == repr(measure)
        assert not back.gate_coef.flags.writeable and not back.expert_var.flags.writeable
        assert_array_equal(gmoe.conditional_log_density(back, X, y),
                           gmoe.conditional_log_density(measure, X, y))


def test_parameters_are_frozen_copies():
    gate_coef = np.array([[1.0], [0.0]])
    measure = MixingMeasure(gate_coef, [0.5, 0.0], [[1.0], [2.0]], [0.0, 1.0], [1.0, 1.0])
    gate_coef[0, 0] = 99.0
    assert measure.gate_coef[0, 0] == 1.0
    with pytest.raises(ValueError, match="read-only"):
        measure.expert_var[0] = 2.0


# ----------------------------------------------------------------------------- sampling
def _count_tolerance(variance):
    # Bernstein: P(|S - ES| >= t) <= 2 exp(-t^2 / (2 (V + t/3))); t = 6 sqrt(V) + 20 keeps
    # the exponent >= 18 for every V >= 0, i.e. a false failure < 4e-8 per count.
    return 6.0 * np.sqrt(variance) + 20.0


@pytest.mark.parametrize("truth", [TRUTH_52, TRUTH_53_TANH, TRUTH_TOP2],
                         ids=["spec52_softmax", "spec53_tanh", "top2_of_3"])
def test_sample_matches_model(truth, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    n = 100_000
    X = gmoe.make_design(n, "uniform", random_state=rng)
    y, labels = gmoe.sample_moe(truth, X, random_state=rng, return_labels=True)
    gate = np.exp(ref.measure_log_gate(truth, X))
    assert labels.shape == (n,) and labels.min() >= 0 and labels.max() < truth.n_experts
    assert np.all(gate[np.arange(n), labels] > 0)  # never an inactive (top-K) expert

    # Gate frequencies per x-bin: the count of label j in a bin is a sum of independent
    # Bernoulli(g_j(x_i)), with mean sum g_j and variance sum g_j (1 - g_j).
    bins = np.minimum((X[:, 0] * 20).astype(int), 19)
    for b in range(20):
        in_bin = bins == b
        for j in range(truth.n_experts):
            g = gate[in_bin, j]
            count = np.sum(labels[in_bin] == j)
            assert abs(count - g.sum()) <= _count_tolerance(np.sum(g * (1 - g))), (b, j)

    # Per expert: y | x, label j ~ N(a_j x + b_j, nu_j).
    for j in range(truth.n_experts):
        mine = labels == j
        n_j = int(mine.sum())
        assert n_j > 1000
        x_j, y_j = X[mine, 0], y[mine]
        nu = truth.expert_var[j]
        # OLS of y on (x, 1): coefficients ~ N(truth, nu (Z^T Z)^-1); 6 SE (false failure
        # 2e-9 each).
        Z = np.column_stack([x_j, np.ones(n_j)])
        coef, *_ = np.linalg.lstsq(Z, y_j, rcond=None)
        se = np.sqrt(nu * np.diag(np.linalg.inv(Z.T @ Z)))
        truth_coef = [truth.expert_coef[j, 0], truth.expert_intercept[j]]
        assert np.all(np.abs(coef - truth_coef) <= 6 * se), (j, coef, truth_coef, se)
        resid = y_j - (x_j * truth.expert_coef[j, 0] + truth.expert_intercept[j])
        # Mean of resid: SE sqrt(nu / n_j); 6 SE.
        assert abs(resid.mean()) <= 6 * np.sqrt(nu / n_j)
        # Sample variance of normal data: SE nu sqrt(2 / (n_j - 1)); 6 SE (nu is a
        # variance: taking it for a standard deviation would miss by far more).
        assert abs(resid.var(ddof=1) - nu) <= 6 * nu * np.sqrt(2 / (n_j - 1))
        # Gaussian shape, z standardised by the true moments: Var z^3 = E z^6 = 15 and
        # Var z^4 = E z^8 - 9 = 96; 6 SE.
        z = resid / np.sqrt(nu)
        assert abs(np.mean(z**3)) <= 6 * np.sqrt(15 / n_j)
        assert abs(np.mean(z**4) - 3) <= 6 * np.sqrt(96 / n_j)


def test_sample_is_reproducible(global_random_seed):
    X = gmoe.make_design(50, "grid")
    y1, l1 = gmoe.sample_moe(TRUTH_52, X, random_state=global_random_seed, return_labels=True)
    y2, l2 = gmoe.sample_moe(TRUTH_52, X, random_state=np.random.default_rng(global_random_seed),
                             return_labels=True)
    assert_array_equal(y1, y2)
    assert_array_equal(l1, l2)
    assert_array_equal(gmoe.sample_moe(TRUTH_52, X, random_state=global_random_seed), y1)


class _ConstantUniformGenerator(np.random.Generator):
    """A Generator whose ``random`` returns one constant (for the inverse-CDF edges)."""

    def __init__(self, value):
        super().__init__(np.random.PCG64(0))
        self.value = value

    def random(self, size=None, dtype=np.float64, out=None):
        return np.full(size, self.value)


@pytest.mark.parametrize("u", [0.0, np.nextafter(1.0, 0.0)], ids=["u=0", "u=1-2^-53"])
@pytest.mark.parametrize("active", [0, 1, 2])
def test_sample_never_draws_an_inactive_expert(active, u):
    # The inverse-CDF edges: Generator.random() returns values in [0, 1), 0 included.
    # Non-regression: u = 0 used to draw expert 0 even when its top-K gate was 0.
    gate_intercept = np.where(np.arange(3) == active, 5.0, 0.0) - 5.0 * (active == 2)
    measure = MixingMeasure(np.zeros((3, 1)), gate_intercept, np.zeros((3, 1)),
                            [0.0, 10.0, 20.0], [1.0, 1.0, 1.0], gating="topk", top_k=1)
    X = np.ones((4, 1))
    assert_array_equal(np.isfinite(measure.log_gate(X)[0]), np.arange(3) == active)
    _, labels = gmoe.sample_moe(measure, X, random_state=_ConstantUniformGenerator(u),
                                return_labels=True)
    assert_array_equal(labels, active)


# ------------------------------------------------------------------------------ designs
def test_make_design(global_random_seed):
    assert_array_equal(gmoe.make_design(7), np.linspace(0, 1, 7)[:, None])
    assert_array_equal(gmoe.make_design(1, low=-2.0, high=3.0), [[-2.0]])
    U = gmoe.make_design(1000, "uniform", low=-2.0, high=3.0, n_features=3,
                         random_state=global_random_seed)
    assert U.shape == (1000, 3) and U.min() >= -2.0 and U.max() < 3.0
    assert_array_equal(U, gmoe.make_design(1000, "uniform", low=-2.0, high=3.0, n_features=3,
                                           random_state=global_random_seed))
    N = gmoe.make_design(5000, "normal", n_features=2, random_state=global_random_seed)
    # Sample mean of N(0, 1) over 5000 rows: SE 0.014; 6 SE.
    assert N.shape == (5000, 2) and np.all(np.abs(N.mean(axis=0)) < 6 / np.sqrt(5000))


# ---------------------------------------------------------------------------- bad input
def _params(**changes):
    params = dict(gate_coef=[[25.0], [0.0]], gate_intercept=[-8.0, 0.0], **EXPERTS_52)
    params.update(changes)
    return params


_RESHAPE_HINT = ("X must be a 2-D array, got a 1-D array of shape (5,). Reshape your data "
                 "with X.reshape(-1, 1)")


@pytest.mark.parametrize("kwargs, message", [
    # shapes
    (_params(gate_coef=[[25.0, 1.0], [0.0, 0.0]]),
     "gate_coef must have shape (2, 1), got shape (2, 2) (axis 1 is 2, expected 1)."),
    (_params(gate_intercept=[-8.0, 0.0, 0.0]),
     "gate_intercept must have shape (2,), got shape (3,) (axis 0 is 3, expected 2)."),
    (_params(expert_coef=[-20.0, 20.0]),
     "expert_coef must be a 2-D array, got a 1-D array of shape (2,)."),
    (_params(expert_coef=np.zeros((0, 1))),
     "expert_coef must have shape (n_experts, n_features) with both >= 1, got shape (0, 1)."),
    (_params(expert_var=[[0.09, 0.16]]),
     "expert_var must be a 1-D array, got a 2-D array of shape (1, 2)."),
    (_params(expert_intercept="abc"), "expert_intercept must be an array of real numbers"),
    # non-finite values
    (_params(expert_intercept=[15.0, np.nan]),
     "expert_intercept must contain only finite values, got nan at index (1,)."),
    (_params(gate_coef=[[np.inf], [0.0]]),
     "gate_coef must contain only finite values, got inf at index (0, 0)."),
    # variances
    pytest.param(_params(expert_var=[0.09, 0.0]),
                 "expert_var must hold variances > 0, got expert_var[1]=0.0."),
    pytest.param(_params(expert_var=[-0.09, 0.16]),
                 "expert_var must hold variances > 0, got expert_var[0]=-0.09."),
    (_params(expert_var=[0.09, 0.0]), r"expert_var must hold variances > 0, got expert_var[1]="),
    # temperature
    (_params(gating="temperature"),
     "temperature must be a positive number for gating='temperature', got temperature=None."),
    (_params(gating="temperature", temperature=0.0),
     "temperature must be a positive finite number, got temperature=0.0."),
    (_params(gating="activation", activation="tanh", temperature=-1.0),
     "temperature must be a positive finite number, got temperature=-1.0."),
    (_params(gating="temperature", temperature=np.nan),
     "temperature must be a positive finite number, got temperature=nan."),
    (_params(gating="temperature", temperature="hot"),
     "temperature must be a positive finite number, got str: 'hot'."),
    (_params(temperature=1.0),
     "temperature applies only to gating families with a temperature, got temperature=1.0 "
     "with gating='softmax'."),
    (_params(gating="topk", top_k=1, temperature=0.5),
     "temperature applies only to gating families with a temperature, got temperature=0.5 "
     "with gating='topk'."),
    # top_k
    (_params(gating="topk", top_k=0), "top_k must be an integer in [1, 2], got top_k=0."),
    (_params(gating="topk", top_k=3), "top_k must be an integer in [1, 2], got top_k=3."),
    (_params(gating="topk", top_k=1.0), "top_k must be an integer in [1, 2], got 1.0."),
    (_params(gating="topk", top_k=True), "top_k must be an integer in [1, 2], got True."),
    (_params(gating="topk"),
     "top_k must be an integer in [1, n_experts] for gating='topk', got top_k=None."),
    # unknown options
    (_params(gating="sparsemax"),
     "gating must be one of ['activation', 'softmax', 'temperature', 'topk'] or a "
         "GatingFamily instance, "
     "got gating='sparsemax'."),
    (_params(gating="activation", temperature=1.0, activation="relu"),
     "activation must be one of ['gelu', 'identity', 'sigmoid', 'tanh'], "
     "got activation='relu'."),
    (_params(gating="activation", temperature=1.0),
     "activation must be one of ['tanh', 'sigmoid', 'gelu', 'identity'] for "
     "gating='activation', got activation=None."),
    (_params(gating="topk", top_k=1, topk_selection="bias"),
     "topk_selection must be one of ['affine', 'linear'], got topk_selection='bias'."),
    # identifiability convention
    pytest.param(_params(gate_intercept=[-8.0, 1.0]),
                 "The last expert is the gate's reference for gating='softmax': expected "
                 "gate_coef[-1] = 0 and gate_intercept[-1] = 0, got gate_coef[-1]=[0.0], "
                 "gate_intercept[-1]=1.0. Pass rebase=True"),
    pytest.param(_params(gate_coef=[[25.0], [1.0]], gate_intercept=[-8.0, 1.0],
                         gating="activation", temperature=1.0, activation="tanh"),
                 "The last expert is the gate's reference for gating='activation': expected "
                 "gate_intercept[-1] = 0, got gate_coef[-1]=[1.0], gate_intercept[-1]=1.0."),
    (_params(gate_intercept=[-8.0, 1.0]),
     "The last expert is the gate's reference for gating='softmax': expected "
     "gate_coef[-1] = 0 and gate_intercept[-1] = 0, got gate_coef[-1]=[0.0], "
     "gate_intercept[-1]="),
])
def test_mixing_measure_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        MixingMeasure(**kwargs)


def _call_log_gate(X, y):
    return TRUTH_52.log_gate(X)


def _call_e_step(X, y):
    return gmoe.e_step(TRUTH_52, X, y)


def _call_log_density(X, y):
    return gmoe.conditional_log_density(TRUTH_52, X, y)


def _call_sample(X, y):
    return gmoe.sample_moe(TRUTH_52, X)


_X = np.linspace(0, 1, 5)[:, None]
_y = np.arange(5.0)


@pytest.mark.parametrize("call", [_call_log_gate, _call_e_step, _call_log_density, _call_sample])
@pytest.mark.parametrize("X, y, message", [
    (_X[:, 0], _y, _RESHAPE_HINT),
    (np.hstack([_X, _X]), _y, "X must have shape (?, 1), got shape (5, 2) (axis 1 is 2, "
                              "expected 1)."),
    (np.where(np.arange(5)[:, None] == 2, np.nan, _X), _y,
     "X must contain only finite values, got nan at index (2, 0)."),
    (np.where(np.arange(5)[:, None] == 4, -np.inf, _X), _y,
     "X must contain only finite values, got -inf at index (4, 0)."),
], ids=["1d", "n_features", "nan", "inf"])
def test_bad_X(call, X, y, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(X, y)


@pytest.mark.parametrize("call", [_call_e_step, _call_log_density])
@pytest.mark.parametrize("y, message", [
    (_y[:4], "y must have shape (5,), got shape (4,) (axis 0 is 4, expected 5)."),
    (_y[:, None], "y must be a 1-D array, got a 2-D array of shape (5, 1)."),
    (np.where(np.arange(5) == 1, np.nan, _y), "y must contain only finite values, got nan at "
                                               "index (1,)."),
], ids=["length", "2d", "nan"])
def test_bad_y(call, y, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call(_X, y)


@pytest.mark.parametrize("call, message", [
    (lambda: gmoe.sample_moe("truth", _X), "measure must be a MixingMeasure, got str."),
    (lambda: gmoe.sample_moe(TRUTH_52, _X, random_state=-1),
     "random_state must be a non-negative integer, got random_state=-1."),
    (lambda: MixingMeasure.from_vector(np.zeros(9), like=TRUTH_52),
     "vector must have shape (10,), got shape (9,) (axis 0 is 9, expected 10)."),
    (lambda: gmoe.make_design(0), "n must be an integer >= 1, got n=0."),
    (lambda: gmoe.make_design(2.5), "n must be an integer >= 1, got n=2.5."),
    (lambda: gmoe.make_design(5, "sobol"),
     "kind must be one of ['grid', 'normal', 'uniform'], got kind='sobol'."),
    (lambda: gmoe.make_design(5, n_features=2),
     "kind='grid' makes a single feature, got n_features=2"),
    (lambda: gmoe.make_design(5, "uniform", n_features=0),
     "n_features must be an integer >= 1, got n_features=0."),
    (lambda: gmoe.make_design(5, low=1.0, high=1.0),
     "low and high must be finite with low < high, got low=1.0, high=1.0."),
], ids=["measure", "random_state", "from_vector", "n0", "n_float", "kind", "grid_d",
        "n_features", "low_high"])
def test_other_bad_input(call, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        call()
