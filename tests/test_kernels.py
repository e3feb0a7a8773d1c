"""Numba kernels against the numpy/scipy references of ``_reference.py``.

The E-step (``gmoe.compute_e_step``), the log-softmax, and the expert-major column kernels
they are built from, on ordinary and extreme inputs and on edge shapes.
"""

import _reference as ref
import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import scipy.stats
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import log_softmax, logsumexp

import gmoe
from gmoe import _kernels
from gmoe._expert_major import (
    Workspace,
    compute_log_softmax,
    exp_into,
    exponentiate_shifted,
    log_softmax_columns,
)
from gmoe.gates._linear import gate_pass

# ------------------------------------------------------------------------------ inputs
CASES = ["ordinary", "logits_1e3", "tiny_var", "huge_var", "huge_y", "inactive", "mixed"]
SHAPES = [(1, 1, 1), (1, 3, 2), (200, 1, 1), (200, 4, 3)]  # (n_samples, n_experts, n_features)


def _make_case(case, n, k, d, rng):
    """Inputs of the E-step: X, y, log_gate, expert_coef, expert_intercept, expert_var."""
    X = rng.standard_normal((n, d))
    coef = 3.0 * rng.standard_normal((k, d))
    intercept = 3.0 * rng.standard_normal(k)
    var = np.exp(rng.uniform(-2.0, 1.0, k))
    logit_values = 2.0 * rng.standard_normal((n, k))
    if case in ("logits_1e3", "mixed"):
        logit_values = rng.choice([-1e3, 1e3], size=(n, k)) * rng.uniform(0.5, 1.0, (n, k))
        logit_values[0, 0] = 1e3
    if case == "tiny_var":
        var = np.where(np.arange(k) % 2 == 0, 1e-10, var)
    if case == "huge_var":
        var = np.where(np.arange(k) % 2 == 0, 1e10, var)
    if case == "mixed":
        var = rng.permutation(np.resize([1e-10, 1.0, 1e10], k))
    if case in ("huge_y", "mixed"):
        intercept = rng.choice([-1e8, 1e8], size=k) + rng.uniform(-10.0, 10.0, k)
    if case in ("inactive", "mixed"):
        active = rng.random((n, k)) < 0.5
        active[np.arange(n), rng.integers(0, k, n)] = True  # a gate has >= 1 active expert
        logit_values = np.where(active, logit_values, -np.inf)
    log_gate = log_softmax(logit_values, axis=1)
    # y from a random expert, so that small variances meet small residuals somewhere.
    labels = rng.integers(0, k, n)
    means = X @ coef.T + intercept
    y = means[np.arange(n), labels] + np.sqrt(var[labels]) * rng.standard_normal(n)
    if case == "tiny_var":
        y[0] = means[0, 0]  # exactly on a 1e-10-variance expert's mean
    return X, y, log_gate, coef, intercept, var


# ------------------------------------------------------------------------------ E-step
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", CASES)
def test_e_step_matches_reference(case, shape, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    args = _make_case(case, *shape, rng)
    resp, log_lik = gmoe.compute_e_step(*args)
    assert resp.shape == shape[:2] and log_lik.shape == shape[:1]
    ref.assert_e_step_close(resp, log_lik, *args)


@pytest.mark.parametrize("top_k", [1, 2, 4])
def test_e_step_topk_log_gate(top_k, global_random_seed):
    # top-K with K = 1 (one-hot responsibilities), 1 < K < k, and K = k (dense).
    rng = np.random.default_rng(global_random_seed)
    n, k, d = 300, 4, 2
    X, y, _, coef, intercept, var = _make_case("ordinary", n, k, d, rng)
    gate_coef = rng.standard_normal((k, d))
    gate_intercept = rng.standard_normal(k)
    log_gate = ref.log_gate(X, gate_coef, gate_intercept, gating="topk", top_k=top_k)
    resp, log_lik = gmoe.compute_e_step(X, y, log_gate, coef, intercept, var)
    ref.assert_e_step_close(resp, log_lik, X, y, log_gate, coef, intercept, var)
    assert_array_equal(np.sum(np.isfinite(log_gate), axis=1), top_k)
    assert_array_equal(resp[np.isneginf(log_gate)], 0.0)  # active ones may underflow to 0 too
    if top_k == 1:
        assert_array_equal(resp, np.isfinite(log_gate).astype(float))
        selected = np.argmax(log_gate, axis=1)
        log_dens = ref.expert_log_density(X, y, coef, intercept, var)
        assert_allclose(log_lik, log_dens[np.arange(n), selected], rtol=1e-12, atol=1e-12)


def test_e_step_single_expert(global_random_seed):
    # k = 1: the gate is 1, responsibilities are exactly 1, log_lik is the expert's density.
    rng = np.random.default_rng(global_random_seed)
    X, y, log_gate, coef, intercept, var = _make_case("ordinary", 50, 1, 2, rng)
    assert_array_equal(log_gate, 0.0)
    resp, log_lik = gmoe.compute_e_step(X, y, log_gate, coef, intercept, var)
    assert_array_equal(resp, 1.0)
    assert_allclose(log_lik, ref.expert_log_density(X, y, coef, intercept, var)[:, 0],
                    rtol=1e-12, atol=1e-12)


def test_e_step_row_without_active_expert_is_not_nan():
    # Not a valid gate, but the kernel must not produce NaN (documented: resp 0, log_lik -inf).
    X = np.zeros((2, 1))
    log_gate = np.array([[-np.inf, -np.inf], [0.0, -np.inf]])
    resp, log_lik = gmoe.compute_e_step(X, np.zeros(2), log_gate, np.zeros((2, 1)),
                                        np.zeros(2), np.ones(2))
    assert_array_equal(resp, [[0.0, 0.0], [1.0, 0.0]])
    assert log_lik[0] == -np.inf and np.isfinite(log_lik[1])


def test_e_step_accepts_non_contiguous_input(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y, log_gate, coef, intercept, var = _make_case("ordinary", 40, 3, 2, rng)
    X_f = np.asfortranarray(X)
    log_gate_strided = np.repeat(log_gate, 2, axis=1)[:, ::2]
    resp, log_lik = gmoe.compute_e_step(X_f, y, log_gate_strided, coef, intercept, var)
    ref.assert_e_step_close(resp, log_lik, X, y, log_gate, coef, intercept, var)


def _valid_e_step_args():
    """Five rows, two experts, one feature: compute_e_step's six arguments."""
    X = np.linspace(0.0, 1.0, 5)[:, None]
    y = np.array([0.1, -0.2, 0.3, 0.0, 1.0])
    return dict(X=X, y=y, log_gate=np.log(np.full((5, 2), 0.5)),
                expert_coef=np.array([[1.0], [2.0]]), expert_intercept=np.zeros(2),
                expert_var=np.ones(2))


# Each bad argument replaces one of _valid_e_step_args(); the kernels index every array by
# the shapes of X and expert_coef, so a short array was read past its end (garbage such as
# 3e+169) and a short intercept was broadcast.
BAD_E_STEP_ARGS = [
    ("y", np.zeros(3), r"y must have shape \(5,\), got shape \(3,\)"),
    ("y", np.zeros(8), r"y must have shape \(5,\), got shape \(8,\)"),
    ("y", np.zeros((5, 1)), r"y must be a 1-D array, got a 2-D array of shape \(5, 1\)"),
    ("y", [np.nan, 0.0, 0.0, 0.0, 0.0], "y must contain only finite values, got nan"),
    ("log_gate", np.log(np.full((3, 2), 0.5)),
     r"log_gate must have shape \(5, 2\), got shape \(3, 2\)"),
    ("log_gate", np.log(np.full((5, 3), 1 / 3)),
     r"log_gate must have shape \(5, 2\), got shape \(5, 3\)"),
    ("log_gate", np.full((5, 2), np.nan), r"log_gate must hold log-probabilities .* got nan"),
    ("log_gate", np.full((5, 2), np.inf), r"log_gate must hold log-probabilities .* got inf"),
    ("expert_coef", np.ones((2, 2)),
     r"expert_coef must have shape \(\?, 1\), got shape \(2, 2\)"),
    ("expert_coef", np.ones((0, 1)), "expert_coef must have shape .* n_experts >= 1"),
    ("expert_intercept", np.zeros(1),
     r"expert_intercept must have shape \(2,\), got shape \(1,\)"),
    ("expert_intercept", [0.0, np.inf], "expert_intercept must contain only finite values"),
    ("expert_var", np.ones(1), r"expert_var must have shape \(2,\), got shape \(1,\)"),
    ("expert_var", [-1.0, 1.0], r"expert_var must hold variances > 0, got expert_var\[0\]=-1.0"),
    ("expert_var", [1.0, 0.0], r"expert_var must hold variances > 0, got expert_var\[1\]=0.0"),
    ("expert_var", [1.0, np.nan], "expert_var must contain only finite values, got nan"),
    ("X", np.zeros(5), "X must be a 2-D array, got a 1-D array"),
    ("X", np.full((5, 1), np.inf), "X must contain only finite values, got inf"),
]


@pytest.mark.parametrize(("name", "value", "match"), BAD_E_STEP_ARGS,
                         ids=[f"{name}-{i}" for i, (name, _, _) in enumerate(BAD_E_STEP_ARGS)])
def test_e_step_rejects_bad_arguments(name, value, match):
    args = _valid_e_step_args() | {name: value}
    with pytest.raises(ValueError, match=match):
        gmoe.compute_e_step(**args)


def test_e_step_checks_leave_the_result_unchanged(global_random_seed):
    # The checks keep each array's layout: the public function's bits are the kernels'
    # on the same (here strided and Fortran-ordered) arrays.
    from gmoe.model import _e_step_arrays
    rng = np.random.default_rng(global_random_seed)
    X, y, log_gate, coef, intercept, var = _make_case("mixed", 40, 3, 2, rng)
    args = (np.asfortranarray(X), y, np.repeat(log_gate, 2, axis=1)[:, ::2], coef, intercept,
            var)
    for checked, unchecked in zip(gmoe.compute_e_step(*args), _e_step_arrays(*args),
                                  strict=True):
        assert_array_equal(checked, unchecked)


# --------------------------------------------------------------- E-step: properties
_finite = dict(allow_nan=False, allow_infinity=False)


@st.composite
def e_step_inputs(draw):
    n = draw(st.integers(1, 25))
    k = draw(st.integers(1, 5))
    d = draw(st.integers(1, 3))
    X = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(-1e3, 1e3, **_finite)))
    y = draw(hnp.arrays(np.float64, n, elements=st.floats(-1e8, 1e8, **_finite)))
    logit_values = draw(hnp.arrays(np.float64, (n, k), elements=st.floats(-1e3, 1e3, **_finite)))
    active = draw(hnp.arrays(np.bool_, (n, k)))
    active[np.arange(n), np.argmax(logit_values, axis=1)] = True
    coef = draw(hnp.arrays(np.float64, (k, d), elements=st.floats(-1e3, 1e3, **_finite)))
    intercept = draw(hnp.arrays(np.float64, k, elements=st.floats(-1e8, 1e8, **_finite)))
    log10_var = draw(hnp.arrays(np.float64, k, elements=st.floats(-10, 10, **_finite)))
    log_gate = log_softmax(np.where(active, logit_values, -np.inf), axis=1)
    return X, y, log_gate, coef, intercept, 10.0**log10_var


@settings(max_examples=80, deadline=None)
@given(args=e_step_inputs())
def test_e_step_properties(args):
    resp, log_lik = gmoe.compute_e_step(*args)
    log_gate = args[2]
    assert np.all(np.isfinite(resp)) and np.all(np.isfinite(log_lik))
    assert np.all(resp >= 0.0) and np.all(resp <= 1.0)
    # Sum-type: k <= 5 terms, each rounded once after the division: a few ulp.
    assert_allclose(resp.sum(axis=1), 1.0, rtol=0, atol=1e-14)
    assert_array_equal(resp[np.isneginf(log_gate)], 0.0)
    ref.assert_e_step_close(resp, log_lik, *args)


# ------------------------------------------------------------------------ log-softmax
@pytest.mark.parametrize("shape", [(1, 1), (1, 4), (30, 1), (100, 5)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", ["ordinary", "logits_1e3", "inactive"])
def test_log_softmax_matches_reference(case, shape, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    values = 3.0 * rng.standard_normal(shape)
    if case == "logits_1e3":
        values = rng.choice([-1e3, 1e3], size=shape) * rng.uniform(0.5, 1.0, shape)
    if case == "inactive":
        active = rng.random(shape) < 0.5
        active[np.arange(shape[0]), rng.integers(0, shape[1], shape[0])] = True
        values = np.where(active, values, -np.inf)
    got = compute_log_softmax(values)
    ref.assert_log_gate_close(got, log_softmax(values, axis=1), values)


def test_log_softmax_columns_in_place_and_all_inactive_column():
    values = np.array([[1.0, -np.inf], [-np.inf, -np.inf], [3.0, -np.inf]])
    expected = log_softmax(values[:, :1], axis=0)[:, 0]
    probs, log_norm = log_softmax_columns(values)
    assert_allclose(values[:, 0], expected, rtol=1e-12)
    assert_allclose(probs[:, 0], np.exp(expected), rtol=1e-12)
    assert_allclose(log_norm[0], np.logaddexp(1.0, 3.0), rtol=1e-15)
    # A column without an active expert: never NaN.
    assert_array_equal(values[:, 1], -np.inf)
    assert_array_equal(probs[:, 1], 0.0)
    assert log_norm[1] == -np.inf


# ------------------------------------------------------------ column kernels, one by one
def test_shift_by_column_max_matches_numpy(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    values = rng.choice([-1e3, 1.0, 1e3], size=(5, 301)) * rng.standard_normal((5, 301))
    values[rng.random(values.shape) < 0.3] = -np.inf
    values[:, :3] = [[2.0, -np.inf, 7.0]] * 5  # ties: the first row wins
    values[:, 3] = -np.inf
    expected_max = values.max(axis=0)
    expected_arg = values.argmax(axis=0)
    with np.errstate(invalid="ignore"):
        expected = np.where(np.isneginf(expected_max), -np.inf, values - expected_max)
    out_max, out_arg = np.empty(301), np.empty(301, dtype=np.int64)
    _kernels.shift_by_column_max_into(values, out_max, out_arg)
    assert_array_equal(out_max, expected_max)
    assert_array_equal(out_arg[np.isfinite(expected_max)], expected_arg[np.isfinite(expected_max)])
    assert_array_equal(values, expected)  # one subtraction each: exact


def test_normalise_columns_matches_numpy(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    exps = rng.random((4, 200))
    arg = rng.integers(0, 4, 200)
    exps[arg, np.arange(200)] = 1.0
    exps[:, 0] = [1.0, 1e-300, 0.0, 1e-17]  # rest tiny: log1p(rest) must keep it
    arg[0] = 0
    expected_rest = exps.sum(axis=0) - 1.0
    expected_rest[0] = 1e-300 + 1e-17
    expected = exps / exps.sum(axis=0)
    rest = np.empty(200)
    _kernels.normalise_columns_into(exps, arg, rest)
    # rest adds k - 1 terms in another order than numpy: a few ulp.
    assert_allclose(rest, expected_rest, rtol=1e-14, atol=0)
    assert_allclose(exps, expected, rtol=1e-14, atol=0)


def test_two_expert_exponentiation_equals_the_general_one_to_the_bit(global_random_seed):
    # Two experts exponentiate only each column's non-maximum entry; the probabilities and
    # rest must be the general steps 2 and 3's exactly (ties, huge gaps, zeros included).
    rng = np.random.default_rng(global_random_seed)
    values = rng.choice([1e-3, 1.0, 1e3], size=(2, 257)) * rng.standard_normal((2, 257))
    values[:, 0] = [3.0, 3.0]  # a tie: the first row is the maximum
    values[:, 1] = [-800.0, 0.0]  # exp of the other underflows to 0
    shifted = values.copy()
    arg = np.empty(257, dtype=np.int64)
    _kernels.shift_by_column_max_into(shifted, np.empty(257), arg)
    general, general_rest = np.exp(shifted), np.empty(257)
    _kernels.normalise_columns_into(general, arg, general_rest)
    rest, probs = np.empty(257), np.empty((2, 257))
    _kernels.pair_other_into(shifted, arg, rest)
    np.exp(rest, out=rest)
    _kernels.normalise_pair_into(rest, arg, probs)
    assert_array_equal(rest, general_rest)
    assert_array_equal(probs, general)
    assert_allclose(probs, np.exp(values - logsumexp(values, axis=0)), rtol=1e-14, atol=0)


@pytest.mark.parametrize("shape", [(1000,), (3, 400)])
def test_exp_into_is_numpys_exp_where_it_underflows(shape, global_random_seed):
    # Entries whose exp is subnormal or 0 (numpy's slow path) are exponentiated apart; the
    # result must be numpy's exp, in place or not, counted or not: to the bit, but for the
    # subnormal results, computed as exp(x + 64 log 2) * 2**-64 (x + 64 log 2 rounds: ~1e-13
    # relative, then the subnormal grid's rounding).
    rng = np.random.default_rng(global_random_seed)
    values = rng.choice([-1e5, -800.0, -745.5, -740.0, -708.0, -20.0, 0.0, 3.0],
                        size=shape) + rng.uniform(-1.0, 1.0, size=shape)
    values.reshape(-1)[:3] = [-np.inf, -745.13, -708.3964185322641]
    expected = np.exp(values)
    assert np.any((expected > 0) & (expected < np.finfo(np.float64).tiny))  # subnormals
    count = _kernels.count_underflow(values.reshape(-1, shape[-1]))
    assert count == np.sum(values < _kernels.EXP_UNDERFLOW)
    subnormal = (expected > 0) & (expected < np.finfo(np.float64).tiny)
    for n_underflow in (None, count):
        out = np.empty(shape)
        exp_into(values, out, Workspace(), n_underflow)
        in_place = values.copy()
        exp_into(in_place, in_place, Workspace(), n_underflow)
        for result in (out, in_place):
            assert_array_equal(result[~subnormal], expected[~subnormal])  # 0s exactly
            assert_allclose(result[subnormal], expected[subnormal], rtol=1e-12, atol=5e-324)
    # Nothing below: numpy's exp itself. No samples: nothing to do.
    assert _kernels.count_underflow(np.zeros((2, 5))) == 0
    assert exp_into(np.empty((3, 0)), np.empty((3, 0)), Workspace()).shape == (3, 0)
    assert exp_into(np.empty(0), np.empty(0), Workspace(), 0).shape == (0,)


@pytest.mark.parametrize("n_experts", [2, 3])
def test_e_step_and_log_softmax_of_no_samples(n_experts):
    resp, log_lik = gmoe.compute_e_step(np.empty((0, 2)), np.empty(0),
                                        np.empty((0, n_experts)), np.zeros((n_experts, 2)),
                                        np.zeros(n_experts), np.ones(n_experts))
    assert resp.shape == (0, n_experts) and log_lik.shape == (0,)
    assert compute_log_softmax(np.empty((0, n_experts))).shape == (0, n_experts)


@pytest.mark.parametrize("n_experts", [2, 3])
@pytest.mark.parametrize("inactive", [False, True])
@pytest.mark.parametrize("spread", [5.0, 500.0])  # 500: half the entries' exp underflow
def test_exponentiate_shifted_matches_numpy(n_experts, inactive, spread, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    values = spread * rng.standard_normal((n_experts, 300))
    if inactive:
        values[rng.integers(0, n_experts, 300)[:150], np.arange(150)] = -np.inf
    expected = np.exp(values - logsumexp(values, axis=0))
    arg = np.empty(300, dtype=np.int64)
    col_max = np.empty(300)
    for normalise in (True, False):
        shifted = values.copy()
        n_underflow = _kernels.shift_by_column_max_into(shifted, col_max, arg)
        rest, out = np.empty(300), np.empty_like(values)
        exponentiate_shifted(shifted, arg, n_underflow, rest, out, Workspace(),
                             normalise=normalise)
        assert_array_equal(shifted[np.isfinite(shifted)],
                           (values - col_max)[np.isfinite(shifted)])  # left as shifted
        # In place: the softmax overwrites shifted; without normalise shifted survives.
        in_place = values.copy()
        n_underflow = _kernels.shift_by_column_max_into(in_place, col_max, arg)
        shifted_copy, in_place_rest = in_place.copy(), np.empty(300)
        exponentiate_shifted(in_place, arg, n_underflow, in_place_rest, in_place, Workspace(),
                             normalise=normalise)
        assert_array_equal(in_place_rest, rest)
        if normalise:
            assert_array_equal(in_place, out)
        else:
            assert_array_equal(in_place, shifted_copy)
        # rest sums the non-maximum entries in another order than numpy: a few ulp.
        assert_allclose(col_max + np.log1p(rest), logsumexp(values, axis=0), rtol=1e-14)
        if normalise:
            # The reference exp(v - logsumexp) is itself off by ~|v| eps relative.
            rtol = 1e-13 + 4 * np.finfo(np.float64).eps * np.abs(values[np.isfinite(values)]).max()
            assert_allclose(out, expected, rtol=rtol, atol=1e-300)


def test_weighted_column_sums_skip_zero_weights():
    weights = np.array([[1.0, 0.0, 2.0], [0.5, 3.0, 0.0]])
    values = np.array([[-1.0, -np.inf, 4.0], [2.0, -0.5, -np.inf]])
    out = np.empty(3)
    _kernels.weighted_column_sums_into(weights, values, out)
    assert_array_equal(out, [-1.0 + 1.0, -1.5, 8.0])


def test_joint_log_density_matches_scipy(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    y = 3.0 * rng.standard_normal(50)
    means = rng.standard_normal((3, 50))
    var = np.array([1e-6, 1.0, 1e6])
    log_gate = log_softmax(rng.standard_normal((3, 50)), axis=0)
    log_gate[1, :5] = -np.inf
    expected = log_gate + scipy.stats.norm.logpdf(y, means, np.sqrt(var)[:, None])
    _kernels.joint_log_density_into(y, log_gate, var, means)
    assert_array_equal(np.isneginf(means), np.isneginf(expected))
    finite = np.isfinite(expected)
    assert_allclose(means[finite], expected[finite], rtol=1e-13)


@settings(max_examples=40, deadline=None)
@given(values=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
                         elements=st.floats(-1e3, 1e3, **_finite)),
       shift=st.floats(-1e3, 1e3, **_finite))
def test_log_softmax_properties(values, shift):
    got = compute_log_softmax(values)
    assert np.all(np.isfinite(got)) and np.all(got <= 0.0)
    assert_allclose(np.exp(got).sum(axis=1), 1.0, rtol=0, atol=1e-13)
    ref.assert_log_gate_close(got, log_softmax(values, axis=1), values)
    ref.assert_log_gate_close(compute_log_softmax(values + shift), got, values + shift)


# --------------------------------------------------------------------- gate M-step pass
@pytest.mark.parametrize("masked", [False, True], ids=["dense", "topk_mask"])
def test_gate_pass_matches_reference(masked, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    n, d, k = 500, 2, 4
    Z = np.column_stack([rng.normal(size=(n, d)), np.ones(n)])
    theta = 2.0 * rng.normal(size=(k, d + 1))
    theta[-1] = 0.0
    active = None
    weighted_resp = rng.dirichlet(np.ones(k), size=n) * rng.uniform(0.5, 2.0, size=(n, 1))
    if masked:
        active = gmoe.gates.compute_topk_mask(Z @ theta.T, 2)
        weighted_resp = np.where(active, weighted_resp, 0.0)
    free = np.array([0, 2])
    q_ref, grad_ref, info_ref = ref.softmax_gate_terms(theta, Z, weighted_resp, free, active)
    ZT = np.ascontiguousarray(Z.T)
    wr = np.ascontiguousarray(weighted_resp.T)
    inactive = None if active is None else np.ascontiguousarray(~active.T)
    q, log_gate, grad, info = gate_pass(ZT, theta, wr, wr.sum(axis=0), free, inactive)
    # Sums of n = 500 terms of size ~1, in different orders: relative 1e-12 is ample.
    assert q == pytest.approx(q_ref, rel=1e-12)
    assert_allclose(grad, grad_ref, rtol=1e-10, atol=1e-10 * np.abs(grad_ref).max())
    assert_allclose(info, info_ref, rtol=1e-10, atol=1e-10 * np.abs(info_ref).max())
    assert_array_equal(info, info.T)
    expected_log_gate = ref.log_gate(Z[:, :-1], theta[:, :-1], theta[:, -1]) if not masked \
        else log_softmax(np.where(active, Z @ theta.T, -np.inf), axis=1)
    ref.assert_log_gate_close(log_gate.T, expected_log_gate, Z @ theta.T)
    _, _, grad_only, no_info = gate_pass(ZT, theta, wr, wr.sum(axis=0), free, inactive,
                                         want_info=False)
    assert no_info is None
    assert_array_equal(grad_only, grad)
