"""Gating families against the references, and their invariances (identifiability)."""

import re

import _reference as ref
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

import gmoe
from gmoe.gates import (
    ActivationGating,
    SoftmaxGating,
    TemperatureGating,
    TopKGating,
    compute_topk_mask,
    make_gating,
)

_finite = dict(allow_nan=False, allow_infinity=False)


def _family(options):
    return make_gating(options["gating"], top_k=options.get("top_k"),
                       topk_selection=options.get("topk_selection", "affine"),
                       activation=options.get("activation"), n_experts=3)


# ---------------------------------------------------------------- against the reference
@pytest.mark.parametrize("options", ref.FAMILY_OPTIONS, ids=ref.family_id)
@pytest.mark.parametrize("shape", [(1, 1), (1, 3), (60, 1), (60, 3)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("gate_scale", [2.0, 500.0], ids=["ordinary", "logits_1e3"])
def test_log_gate_matches_reference(options, shape, gate_scale, global_random_seed):
    # gate_scale=500 on standard normal X gives logits of order +-1e3 (and beyond with tau).
    rng = np.random.default_rng(global_random_seed)
    n, d = shape
    params = ref.random_params(rng, 3, d, options, gate_scale=gate_scale)
    X = rng.standard_normal((n, d))
    gate_args = (params["gate_coef"], params["gate_intercept"], options.get("temperature"))
    got = _family(options).log_gate(X, *gate_args)
    kw = ref.gate_options(options)
    expected = ref.log_gate(X, params["gate_coef"], params["gate_intercept"], **kw)
    s = ref.logits(X, *gate_args[:2], kw["gating"], kw["temperature"], kw["activation_name"])
    ref.assert_log_gate_close(got, expected, s)
    measure = gmoe.MixingMeasure(**params, **options)
    assert_array_equal(measure.log_gate(X), got)
    if options["gating"] == "topk":
        assert_array_equal(np.sum(np.isfinite(got), axis=1), options["top_k"])


def test_topk_with_k_equal_n_experts_is_softmax(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    params = ref.random_params(rng, 4, 2, dict(gating="softmax"))
    X = rng.standard_normal((100, 2))
    args = (X, params["gate_coef"], params["gate_intercept"])
    dense = SoftmaxGating().log_gate(*args)
    for selection in ("affine", "linear"):
        ref.assert_log_gate_close(TopKGating(4, selection).log_gate(*args), dense, dense)


def test_top1_log_gate_is_zero_on_the_selected_expert(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    gate_coef = rng.standard_normal((5, 2))
    gate_intercept = rng.standard_normal(5)
    X = rng.standard_normal((200, 2))
    got = TopKGating(1).log_gate(X, gate_coef, gate_intercept)
    winner = np.argmax(X @ gate_coef.T + gate_intercept, axis=1)
    expected = np.full(got.shape, -np.inf)
    expected[np.arange(200), winner] = 0.0
    assert_array_equal(got, expected)


def test_linear_selection_ignores_intercept_for_selection_only():
    # Scores x*beta1 = (0, 1, 2) at x=1 select experts 1, 2; beta0 = (9, 0, 0) would have
    # selected expert 0 under affine selection. Within the selection beta0 still counts.
    X = np.array([[1.0]])
    gate_coef = np.array([[0.0], [1.0], [2.0]])
    gate_intercept = np.array([9.0, 0.5, 0.0])
    linear = TopKGating(2, "linear").log_gate(X, gate_coef, gate_intercept)
    assert_array_equal(np.isfinite(linear), [[False, True, True]])
    expected = [[-np.inf, -np.log1p(np.exp(0.5)), 0.5 - np.log1p(np.exp(0.5))]]
    ref.assert_log_gate_close(linear, np.array(expected), linear)
    affine = TopKGating(2, "affine").log_gate(X, gate_coef, gate_intercept)
    assert_array_equal(np.isfinite(affine), [[True, False, True]])


# --------------------------------------------------------------------- top-K properties
@st.composite
def integer_gates(draw):
    # Small integers make exact ties in the selection scores frequent.
    n = draw(st.integers(1, 20))
    k = draw(st.integers(1, 6))
    d = draw(st.integers(1, 2))
    ints = st.integers(-2, 2).map(float)
    X = draw(hnp.arrays(np.float64, (n, d), elements=ints))
    gate_coef = draw(hnp.arrays(np.float64, (k, d), elements=ints))
    gate_intercept = draw(hnp.arrays(np.float64, k, elements=ints))
    top_k = draw(st.integers(1, k))
    selection = draw(st.sampled_from(["affine", "linear"]))
    return X, gate_coef, gate_intercept, top_k, selection


@settings(max_examples=80, deadline=None)
@given(case=integer_gates())
def test_topk_active_set_properties(case):
    X, gate_coef, gate_intercept, top_k, selection = case
    got = TopKGating(top_k, selection).log_gate(X, gate_coef, gate_intercept)
    assert not np.isnan(got).any()
    assert np.all(np.isneginf(got) | np.isfinite(got))  # -inf exactly, never NaN or +inf
    assert_array_equal(np.sum(np.isfinite(got), axis=1), top_k)
    scores = X @ gate_coef.T + (gate_intercept if selection == "affine" else 0.0)
    expected_mask = ref.topk_mask(scores, top_k)  # ranks: ties to the lower index
    assert_array_equal(np.isfinite(got), expected_mask)
    assert_array_equal(compute_topk_mask(scores, top_k), expected_mask)
    assert np.allclose(np.exp(got).sum(axis=1), 1.0, rtol=0, atol=1e-14)


@pytest.mark.parametrize("top_k", [1, 2, 3])
def test_topk_ties_go_to_the_lower_index(top_k):
    # All four scores equal: the first top_k experts are active.
    X = np.array([[0.3], [-1.0]])
    gate = TopKGating(top_k).log_gate(X, np.zeros((4, 1)), np.zeros(4))
    expected = np.arange(4) < top_k
    assert_array_equal(np.isfinite(gate), np.vstack([expected, expected]))
    # Experts 1 and 3 tie for the lead: expert 1 wins a single slot.
    gate = TopKGating(1).log_gate(np.array([[1.0]]), np.array([[0.0], [1.0], [0.5], [1.0]]),
                                  np.zeros(4))
    assert_array_equal(gate, [[-np.inf, 0.0, -np.inf, -np.inf]])


# ------------------------------------------------------------------- family invariances
@st.composite
def gate_inputs(draw, *, max_value=10.0):
    n = draw(st.integers(1, 20))
    k = draw(st.integers(1, 5))
    d = draw(st.integers(1, 3))
    el = st.floats(-max_value, max_value, **_finite)
    X = draw(hnp.arrays(np.float64, (n, d), elements=el))
    gate_coef = draw(hnp.arrays(np.float64, (k, d), elements=el))
    gate_intercept = draw(hnp.arrays(np.float64, k, elements=el))
    return X, gate_coef, gate_intercept


def _linear_scale(X, gate_coef, gate_intercept):
    """Max over a row of sum_f |x_f beta1_f| + |beta0|: what the logits' rounding scales with."""
    return np.abs(X) @ np.abs(gate_coef).T + np.abs(gate_intercept)


@settings(max_examples=50, deadline=None)
@given(case=gate_inputs(),
       shift_coef=hnp.arrays(np.float64, 3, elements=st.floats(-10, 10, **_finite)),
       shift_intercept=st.floats(-10, 10, **_finite))
def test_softmax_gate_invariant_to_common_shift(case, shift_coef, shift_intercept):
    X, gate_coef, gate_intercept = case
    t1 = shift_coef[:X.shape[1]]
    base = SoftmaxGating().log_gate(X, gate_coef, gate_intercept)
    shifted = SoftmaxGating().log_gate(X, gate_coef + t1, gate_intercept + shift_intercept)
    scale = _linear_scale(X, np.abs(gate_coef) + np.abs(t1), np.abs(gate_intercept)
                          + abs(shift_intercept))
    ref.assert_log_gate_close(shifted, base, scale)


@settings(max_examples=50, deadline=None)
@given(case=gate_inputs(), temperature=st.floats(1e-2, 1e2, **_finite))
def test_identity_activation_equals_temperature_gate(case, temperature):
    X, gate_coef, gate_intercept = case
    got = ActivationGating("identity").log_gate(X, gate_coef, gate_intercept, temperature)
    expected = TemperatureGating().log_gate(X, gate_coef, gate_intercept, temperature)
    ref.assert_log_gate_close(got, expected, _linear_scale(*case) / temperature)


@settings(max_examples=50, deadline=None)
@given(case=gate_inputs(), temperature=st.floats(1e-2, 1e2, **_finite))
def test_sigmoid_gate_is_reparametrised_tanh_gate(case, temperature):
    # sigmoid(z) = (1 + tanh(z/2)) / 2  =>  (beta1, beta0, tau) with sigmoid equals
    # (beta1/2, 2 beta0, 2 tau) with tanh: the logits differ by the constant 1/(2 tau).
    X, gate_coef, gate_intercept = case
    sigmoid = ActivationGating("sigmoid").log_gate(X, gate_coef, gate_intercept, temperature)
    tanh = ActivationGating("tanh").log_gate(X, gate_coef / 2, 2 * gate_intercept,
                                             2 * temperature)
    scale = (1.0 + np.abs(gate_intercept)) / temperature * np.ones((X.shape[0], 1))
    ref.assert_log_gate_close(sigmoid, tanh, scale)


def test_activation_values():
    u = np.array([-3.0, -0.5, 0.0, 0.5, 3.0])
    X = u[:, None]
    gate_coef = np.array([[1.0], [0.0]])
    for name in ("tanh", "sigmoid", "gelu", "identity"):
        got = ActivationGating(name).logits(X, gate_coef, np.zeros(2), 1.0)
        expected = ref.activation(X @ gate_coef.T, name)
        np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-15)


# ------------------------------------------------------------------------- bad options
@pytest.mark.parametrize("kwargs, message", [
    (dict(gating="sparse"),
     "gating must be one of ['activation', 'softmax', 'temperature', 'topk'] or a "
         "GatingFamily instance, "
     "got gating='sparse'."),
    (dict(gating="topk"), "top_k must be an integer in [1, n_experts] for gating='topk', "
                          "got top_k=None."),
    (dict(gating="topk", top_k=0, n_experts=3), "top_k must be an integer in [1, 3], "
                                                "got top_k=0."),
    (dict(gating="topk", top_k=4, n_experts=3), "top_k must be an integer in [1, 3], "
                                                "got top_k=4."),
    (dict(gating="topk", top_k=1.5, n_experts=3), "top_k must be an integer in [1, 3], "
                                                  "got 1.5."),
    (dict(gating="topk", top_k=1, topk_selection="bias"),
     "topk_selection must be one of ['affine', 'linear'], got topk_selection='bias'."),
    (dict(gating="activation"), "activation must be one of ['tanh', 'sigmoid', 'gelu', "
                                "'identity'] for gating='activation', got activation=None."),
    (dict(gating="activation", activation="relu"),
     "activation must be one of ['gelu', 'identity', 'sigmoid', 'tanh'], "
     "got activation='relu'."),
])
def test_make_gating_bad_options(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        make_gating(**kwargs)


@pytest.mark.parametrize("args, message", [
    ((0,), "top_k must be an integer >= 1, got top_k=0."),
    ((-1, "affine"), "top_k must be an integer >= 1, got top_k=-1."),
    ((1.5,), "top_k must be an integer >= 1, got top_k=1.5."),
    ((True,), "top_k must be an integer >= 1, got top_k=True."),
    (("2",), "top_k must be an integer >= 1, got top_k='2'."),
    ((1, "x"), "selection must be one of ['affine', 'linear'], got selection='x'."),
])
def test_topk_instance_checks_its_options(args, message):
    # An instance reaches the fit without from_options: 'x' used to fit linear selection,
    # 0 to end in a FloatingPointError about the start, 1.5 in a bare TypeError.
    with pytest.raises(ValueError, match=re.escape(message)):
        TopKGating(*args)


def test_topk_instance_top_k_is_a_python_int():
    family = TopKGating(np.int64(2), "linear")
    assert type(family.top_k) is int and family == TopKGating(2, "linear")


@pytest.mark.parametrize("n_experts", [2, 3])
def test_topk_instance_is_checked_against_n_experts_as_the_name_is(n_experts):
    with pytest.raises(ValueError) as by_name:
        make_gating("topk", top_k=n_experts + 1, n_experts=n_experts)
    with pytest.raises(ValueError) as by_instance:
        make_gating(TopKGating(n_experts + 1), n_experts=n_experts)
    assert str(by_instance.value) == str(by_name.value) == (
        f"top_k must be an integer in [1, {n_experts}], got top_k={n_experts + 1}.")
    assert make_gating(TopKGating(n_experts), n_experts=n_experts) == TopKGating(n_experts)
    assert make_gating(TopKGating(n_experts + 1)) == TopKGating(n_experts + 1)  # k unknown


def test_topk_instance_meets_the_number_of_experts_in_fit_and_measure():
    X = np.linspace(0.0, 1.0, 40)[:, None]
    y = np.sin(6.0 * X[:, 0])
    message = re.escape("top_k must be an integer in [1, 3], got top_k=4.")
    with pytest.raises(ValueError, match=message):
        gmoe.GaussianMoERegressor(3, gating=TopKGating(4), n_init=1).fit(X, y)
    message = re.escape("top_k must be an integer in [1, 2], got top_k=3.")
    with pytest.raises(ValueError, match=message):
        gmoe.MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]], [1.0, -1.0],
                           [0.05, 0.05], gating=TopKGating(3))


def test_topk_instance_fits_as_the_name_does():
    # The gate's boundary at x = 0: linear selection can place it.
    truth = gmoe.MixingMeasure([[4.0], [0.0]], [0.0, 0.0], [[-2.0], [2.0]], [1.0, -1.0],
                               [0.05, 0.05])
    X = gmoe.make_design(200, "uniform", low=-1.0, high=1.0, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    common = dict(n_init=1, random_state=0, max_iter=50)
    by_name = gmoe.GaussianMoERegressor(2, gating="topk", top_k=1, topk_selection="linear",
                                        **common).fit(X, y)
    by_instance = gmoe.GaussianMoERegressor(2, gating=TopKGating(1, "linear"),
                                            **common).fit(X, y)
    assert by_instance.mixing_measure_.topk_selection == "linear"
    assert_array_equal(by_instance.mixing_measure_.to_vector(),
                       by_name.mixing_measure_.to_vector())
