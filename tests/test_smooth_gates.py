"""The smooth gates' M-step derivatives on expert-major arrays against their dense form.

The dense form builds the full (n_samples, n_experts, n_parameters) Jacobian of the logits
from the family's row-major :meth:`logit_derivatives` and contracts it with ``einsum``; the
M-step works expert by expert with one weighted matrix product per pair of experts.
"""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import log_softmax

import gmoe
from gmoe.gates import ActivationGating, GateData, GateLayout, GateParams, SmoothGatingFamily


class _SquaredFeatureSoftmax(SmoothGatingFamily):
    """A family with row-major derivatives only: the M-step transposes them."""

    name = "squared-feature-test"

    def logit_derivatives(self, X, params, learn_temperature=False):
        phi = X ** 2
        n, k = X.shape[0], params.intercept.shape[0]
        logits = phi @ params.coef.T + params.intercept
        d_coef = np.broadcast_to(phi[:, None, :], (n, k, X.shape[1]))
        return logits, d_coef, np.ones((n, k)), None, None


def _dense_derivatives(family, data, params, layout):
    """``Q``, gradient and Hessian through the dense Jacobian (row-major, einsum)."""
    X = data.ZT[:-1].T
    rw = data.weighted_resp.T
    logits, d_coef, d_intercept, d_tau, curvature = family.logit_derivatives(
        X, params, layout.tau_idx is not None)
    log_gate = log_softmax(logits, axis=1)
    gate = np.exp(log_gate)
    total = rw.sum(axis=1)
    objective = np.sum(rw * log_gate)
    resid = rw - gate * total[:, None]
    E = layout.jacobian(d_coef, d_intercept, d_tau)
    grad = np.einsum("ij,ijp->p", resid, E)
    E_bar = np.einsum("ij,ijp->ip", gate, E)
    hess = -(np.einsum("ij,ijp,ijq->pq", total[:, None] * gate, E, E)
             - np.einsum("i,ip,iq->pq", total, E_bar, E_bar))
    if curvature is not None:
        hess += layout.curvature_matrix(curvature(resid))
    return objective, grad, hess


def _case(family, learn, rng, n=200, d=2, k=3):
    X = rng.normal(size=(n, d))
    resp = rng.dirichlet(np.ones(k), size=n) * rng.uniform(0.0, 2.0, size=(n, 1))
    resp[:5] = 0.0  # rows of weight 0
    data = GateData.from_rows(X, resp, learn_temperature=learn)
    layout = GateLayout(family, k, d, learn)
    params = layout.unpack(rng.normal(size=layout.size), 0.7)
    if learn:
        params = GateParams(params.coef, params.intercept, 0.6)
    return data, layout, params


@pytest.mark.parametrize("family", [ActivationGating("tanh"), ActivationGating("sigmoid"),
                                    ActivationGating("gelu"), ActivationGating("identity"),
                                    _SquaredFeatureSoftmax()],
                         ids=["tanh", "sigmoid", "gelu", "identity", "row-major family"])
@pytest.mark.parametrize("learn", [True, False])
def test_expert_major_derivatives_equal_the_dense_form(family, learn, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    data, layout, params = _case(family, learn and family.learns_temperature, rng)
    objective, grad, hess = family.gate_derivatives(data, params, layout)
    expected = _dense_derivatives(family, data, params, layout)
    # Sums over 200 rows in other orders: 1e-12 of the largest entry.
    assert objective == pytest.approx(expected[0], rel=1e-12)
    assert_allclose(grad, expected[1], rtol=1e-12, atol=1e-12 * np.abs(expected[1]).max())
    assert_allclose(hess, expected[2], rtol=1e-12, atol=1e-12 * np.abs(expected[2]).max())
    assert np.array_equal(hess, hess.T)
    # The line search's objective is the same number to the bit.
    assert family.gate_objective(data, params) == objective


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "identity"])
def test_activation_logit_derivatives_columns_are_the_transposed_rows(activation,
                                                                      global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    family = ActivationGating(activation)
    n, d, k = 150, 3, 4
    X = rng.normal(size=(n, d))
    ZT = np.vstack([X.T, np.ones(n)])
    params = GateParams(rng.normal(size=(k, d)), rng.normal(size=k), 0.8)
    rows = family.logit_derivatives(X, params, True)
    columns = family.logit_derivatives_columns(ZT, params, True)
    # One product of d terms in another order: 1e-14 relative.
    assert_allclose(columns[0], rows[0].T, rtol=1e-13, atol=1e-14)
    assert_allclose(columns[1], np.transpose(rows[1], (1, 2, 0)), rtol=1e-13, atol=1e-14)
    assert_allclose(columns[2], rows[2].T, rtol=1e-15)
    assert_allclose(columns[3], rows[3].T, rtol=1e-13, atol=1e-14)
    assert_allclose(family.compute_logits_columns(ZT, params), columns[0], rtol=0, atol=0)
    c = rng.normal(size=(n, k))
    for got, expected in zip(columns[4](c.T), rows[4](c), strict=True):
        # Weighted sums over 150 rows in another order.
        assert_allclose(got, expected, rtol=1e-12, atol=1e-12 * np.max(np.abs(expected)))


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu", "identity"])
def test_activation_and_derivatives_share_work_to_the_bit(activation):
    from gmoe.gates.activation import (
        _activation_and_derivatives,
        compute_activation,
        compute_activation_derivatives,
    )

    u = np.random.default_rng(0).normal(0.0, 3.0, size=(3, 500))
    value, d1, d2 = _activation_and_derivatives(u, activation)
    assert np.array_equal(value, compute_activation(u, activation))
    expected_d1, expected_d2 = compute_activation_derivatives(u, activation)
    assert np.array_equal(d1, expected_d1) and np.array_equal(d2, expected_d2)


def test_a_trial_step_out_of_the_domain_is_rejected_without_numpy_warnings():
    # The gate M-step's step halving tries log tau + t * step; a long step makes tau
    # underflow to 0 and the logits divide by it. The non-finite objective rejects that
    # trial; numpy's divide-by-zero warning about it would only alarm the user.
    import warnings

    from gmoe.gates.base import backtrack

    temperatures = {1.0: 0.0, 0.5: 0.0, 0.25: 0.5}

    def evaluate(t):
        logits = np.array([1.0, -1.0]) / temperatures[t]
        return -float(np.sum(logits * logits)), t

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert backtrack(evaluate, -100.0) == (-8.0, 0.25)
    # Every trial below the objective: none accepted.
    assert backtrack(lambda t: (-np.inf, t), 0.0, max_halvings=3) is None


def test_a_long_trial_step_in_log_tau_raises_no_numpy_warning():
    # The stopping rule's curvature search tries long steps; one in log tau overflowed
    # exp and leaked numpy's bare "overflow encountered in exp" (constant y, 12 rows).
    X = np.random.default_rng(0).uniform(-1.0, 1.0, size=(12, 1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gmoe.GaussianMoERegressor(2, gating="activation", random_state=0).fit(
            X, np.full(12, 3.0))
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert caught  # the constant y is reported, by gmoe's own warnings


def test_a_learned_temperature_far_from_its_start_fits_without_numpy_errors():
    # gelu started at tau = 1e6: a SQUAREM extrapolation took log tau to 1e-272, below
    # the gate's smallest fitted temperature, where its curvature overflowed and the
    # M-step's eigendecomposition raised LinAlgError (after numpy's overflow warnings).
    truth = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]],
                               [15.0, -5.0], [0.09, 0.16])
    X = np.linspace(0.0, 1.0, 300)[:, None]
    y = gmoe.sample_moe(truth, X, random_state=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = gmoe.GaussianMoERegressor(2, gating="activation", activation="gelu",
                                        temperature=1e6, n_init=2, random_state=0).fit(X, y)
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    softmax = gmoe.GaussianMoERegressor(2, n_init=2, random_state=0).fit(X, y)
    # The gelu gate is as flexible as the truth's here: the same maximum, to EM's tol.
    assert est.lower_bound_ == pytest.approx(softmax.lower_bound_, abs=1e-3)


def test_gelu_derivatives_stay_finite_far_out():
    from gmoe.gates.activation import compute_activation_derivatives

    u = np.array([-1e200, -50.0, 50.0, 1e200])
    d1, d2 = compute_activation_derivatives(u, "gelu")
    assert_allclose(d1, [0.0, 0.0, 1.0, 1.0], atol=1e-300)
    assert_allclose(d2, 0.0, atol=1e-300)


def _step_responsibilities(x, centre, sharpness=8.0):
    # Two experts' responsibilities switching at ``centre``: what a start's labels give.
    right = 1.0 / (1.0 + np.exp(-sharpness * (x - centre)))
    return np.column_stack([right, 1.0 - right])


def _gain_share(family, data, params, softmax):
    """The share of the softmax fit's gate objective over a constant gate's that
    ``params`` has (1: as good as the softmax fit; below 0: worse than no gate at all)."""
    from gmoe.gates import SoftmaxGating

    weights = data.weighted_resp.sum(axis=1)
    constant = float(np.sum(weights * np.log(weights / weights.sum())))
    best = SoftmaxGating().gate_objective(data, softmax)
    return (family.gate_objective(data, params) - constant) / (best - constant)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
def test_the_start_on_a_design_far_from_zero_keeps_the_softmax_fits_gain(activation):
    # On x in [30, 31] the softmax fit mapped through sigma'(0) put every row in the
    # activation's tails (or moved the logits by far more than their spread): the start's
    # gate fitted the labels worse than a constant gate. Scaled towards the linear regime,
    # it keeps at least half of what the softmax fit's gate gains over a constant one.
    from gmoe.gates import SoftmaxGating
    from gmoe.gates.activation import compute_activation_derivatives

    x = np.linspace(30.0, 31.0, 400)
    X = x[:, None]
    resp = _step_responsibilities(x, 30.5)
    family = ActivationGating(activation)
    data = GateData.from_rows(X, resp, learn_temperature=True)
    start = family.initial_gate(data, 1.0)
    softmax = SoftmaxGating().initial_gate(GateData.from_rows(X, resp))
    slope = compute_activation_derivatives(np.zeros(1), activation)[0][0]
    plain = GateParams(softmax.coef / slope, softmax.intercept, 1.0)
    assert _gain_share(family, data, plain, softmax) < 0.0
    assert _gain_share(family, data, start, softmax) >= 0.5
    assert start.temperature < 1e-3
    # With tau held the start keeps it, and is no worse than the plain linearisation
    # (tanh(30 beta) saturates unless beta ~ 0: little of the gain can be had).
    held_data = GateData.from_rows(X, resp, learn_temperature=False)
    held = family.initial_gate(held_data, 1.0)
    assert held.temperature == 1.0
    assert _gain_share(family, held_data, held, softmax) > \
        _gain_share(family, held_data, plain, softmax)


def test_a_start_better_than_a_constant_gate_is_kept_as_it_is():
    # x ~ N(0, 1) with a sharp switch: the linearised start saturates in the tails, but
    # fits the labels better than a constant gate; it is not scaled (fits on such designs
    # are those of the plain linearisation, to the bit).
    from gmoe.gates import SoftmaxGating

    x = np.random.default_rng(0).normal(size=400)
    resp = _step_responsibilities(x, 0.0, sharpness=4.0)
    data = GateData.from_rows(x[:, None], resp, learn_temperature=True)
    start = ActivationGating("tanh").initial_gate(data, 1.0)
    softmax = SoftmaxGating().initial_gate(GateData.from_rows(x[:, None], resp))
    assert np.max(np.abs(start.coef @ data.ZT[:-1])) > 5.0  # deep in tanh's tails
    assert start.temperature == 1.0
    assert_allclose(start.coef, softmax.coef, rtol=1e-12)  # tanh'(0) = 1
    assert_allclose(start.intercept, softmax.intercept, rtol=1e-12)


def test_an_activation_start_at_a_huge_temperature_does_not_overflow():
    # temperature=1e160 gave slopes of 1e160: the scan's bound squared them
    # (OverflowError). A learned tau that large is scaled down in at most 64 steps.
    rng = np.random.default_rng(0)
    X = rng.normal(0.0, 1.0, (500, 1))
    y = np.where(X[:, 0] > 0, 2.0 * X[:, 0], 1.0 - X[:, 0]) + rng.normal(0.0, 0.3, 500)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        huge = gmoe.GaussianMoERegressor(2, gating="activation", temperature=1e160,
                                         random_state=0).fit(X, y)
    plain = gmoe.GaussianMoERegressor(2, gating="activation", random_state=0).fit(X, y)
    # Both stop within tol (1e-4 in total log-likelihood) of the same maximum.
    assert huge.lower_bound_ == pytest.approx(plain.lower_bound_, abs=1e-6)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "gelu"])
def test_an_activation_gate_fits_a_design_far_from_zero(activation):
    # x in [30, 31]: every start's gate was constant on the design and EM collapsed an
    # expert in two steps (mean log-likelihood -1.25 against the softmax fit's -0.56).
    rng = np.random.default_rng(0)
    x = rng.uniform(30.0, 31.0, 2000)
    right = rng.random(x.size) < 1.0 / (1.0 + np.exp(-8.0 * (x - 30.5)))
    y = np.where(right, 2.0 * (x - 30.5) + 1.0, -1.5 * (x - 30.5) - 1.0)
    y = y + rng.normal(0.0, 0.3, x.size)
    X = x[:, None]
    softmax = gmoe.GaussianMoERegressor(2, n_init=2, random_state=0).fit(X, y)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = gmoe.GaussianMoERegressor(2, gating="activation", activation=activation,
                                        n_init=2, max_iter=2000, random_state=0).fit(X, y)
    assert not [w for w in caught if "collapsed" in str(w.message)]
    # The activation gate contains the softmax gate as its limit tau -> 0, along a ridge
    # EM climbs slowly: at least the softmax maximum, less what is left of that climb
    # (observed within 3e-6).
    assert est.lower_bound_ > softmax.lower_bound_ - 1e-5


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_a_learned_temperature_started_far_too_high_reaches_the_maximum(activation):
    # temperature=1e6: the linearised start's slopes (c tau / sigma'(0)) saturated every
    # row, and EM stopped at a flat gate (mean log-likelihood -0.878 against -0.634).
    truth = gmoe.MixingMeasure([[4.0], [-1.0]], [-0.9, 0.0], [[-20.0], [20.0]],
                               [15.0, -5.0], [0.09, 0.16], gating="activation",
                               activation="tanh", temperature=0.25)
    X = np.linspace(0.0, 1.0, 1000)[:, None]
    y = gmoe.sample_moe(truth, X, random_state=1)

    def fit(temperature):
        return gmoe.GaussianMoERegressor(2, gating="activation", activation=activation,
                                         temperature=temperature, random_state=0).fit(X, y)

    # Both stop within tol (1e-4 in total log-likelihood) of the same maximum.
    assert fit(1e6).lower_bound_ == pytest.approx(fit(1.0).lower_bound_, abs=1e-6)
