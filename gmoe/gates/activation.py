"""The activation dense-to-sparse gate: logits ``(sigma(beta1_j^T x) + beta0_j) / tau``.

``sigma`` is one of tanh, sigmoid, gelu, identity (see :ref:`theory-activation`). Softmax
absorbs a common shift of the logits, so only the reference's intercept is pinned: every
slope is free. ``Q`` is not concave in ``beta1``; the generic M-step of
:class:`~gmoe.gates.smooth.SmoothGatingFamily` (eigenvalue-clipped Newton, step halving)
fits it, with ``log tau`` when the temperature is learned.

For tanh and sigmoid with two experts, ``sigma(u) + sigma(-u)`` is constant, so
``(beta1_1, beta1_2) -> (-beta1_2, -beta1_1)`` leaves the density unchanged: that image is
reported by :meth:`ActivationGating.symmetric_images`, and its fixed point
``beta1_1 = -beta1_2`` (where the information is singular) by
:meth:`ActivationGating.is_symmetric_fixed_point`.
"""

import math

import numpy as np
from scipy.special import expit, ndtr

from .._expert_major import Workspace
from .._validation import check_option
from .base import GateParams
from .smooth import SmoothGatingFamily
from .softmax import SoftmaxGating

__all__ = ["ACTIVATIONS", "ActivationGating", "compute_activation",
           "compute_activation_derivatives"]

ACTIVATIONS = ("tanh", "sigmoid", "gelu", "identity")
# Activations with sigma(u) + sigma(-u) constant: two experts have a mirror image.
_ODD_ABOUT_A_CONSTANT = ("tanh", "sigmoid")

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def compute_activation(u, activation):
    """Apply ``activation`` elementwise."""
    if activation == "tanh":
        return np.tanh(u)
    if activation == "sigmoid":
        return expit(u)
    if activation == "gelu":
        return u * ndtr(u)
    if activation == "identity":
        return np.array(u, dtype=np.float64, copy=True)
    raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}.")


def compute_activation_derivatives(u, activation):
    """First and second derivatives of ``activation`` at ``u``.

    Returns
    -------
    d1, d2 : ndarray
        ``sigma'(u)`` and ``sigma''(u)``, the shape of ``u``.
    """
    if activation == "tanh":
        t = np.tanh(u)
        d1 = 1.0 - t * t
        return d1, -2.0 * t * d1
    if activation == "sigmoid":
        s = expit(u)
        d1 = s * (1.0 - s)
        return d1, d1 * (1.0 - 2.0 * s)
    if activation == "gelu":
        # Beyond |u| ~ 39 phi is 0, and beyond ~1e154 u * u overflows: the products
        # phi * u and phi * u^2 are 0 there (0 * inf would be NaN).
        with np.errstate(over="ignore", invalid="ignore"):
            phi = _INV_SQRT_2PI * np.exp(-0.5 * u * u)
            d1 = ndtr(u) + np.where(phi > 0, u * phi, 0.0)
            d2 = np.where(phi > 0, phi * (2.0 - u * u), 0.0)
        return d1, d2
    if activation == "identity":
        return np.ones_like(u), np.zeros_like(u)
    raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}.")


def _activation_and_derivatives(u, activation, out=None):
    """``sigma(u)``, ``sigma'(u)`` and ``sigma''(u)``, sharing their common work.

    The values equal :func:`compute_activation`'s and
    :func:`compute_activation_derivatives`' to the bit. ``out``, three arrays the shape of
    ``u``, receives them (tanh and sigmoid compute in place; the others copy).
    """
    value, d1, d2 = out if out is not None else (np.empty_like(u) for _ in range(3))
    if activation == "tanh":
        np.tanh(u, out=value)
        np.multiply(value, value, out=d1)
        np.subtract(1.0, d1, out=d1)
        np.multiply(value, d1, out=d2)
        d2 *= -2.0  # -2 t d1: scaling by 2 rounds alike in either order
    elif activation == "sigmoid":
        expit(u, out=value)
        np.subtract(1.0, value, out=d1)
        d1 *= value
        np.multiply(value, 2.0, out=d2)
        np.subtract(1.0, d2, out=d2)
        d2 *= d1
    else:
        value[:] = compute_activation(u, activation)
        d1[:], d2[:] = compute_activation_derivatives(u, activation)
    return value, d1, d2


# How close to the linearised softmax fit (in logit units, on every row) the start's
# smallest scale is: well below the logits' own resolution in Q.
_LINEARISATION_ERROR = 1e-3
# The share of the softmax fit's gain over a constant gate that a scaled start must keep.
_SHARE_KEPT = 0.5
# Scales tried at most (each a pass over the rows).
_MOST_SCALES = 64


class ActivationGating(SmoothGatingFamily):
    """Activation dense-to-sparse gate: logits ``(sigma(beta1_i^T x) + beta0_i) / tau``.

    Parameters
    ----------
    activation : {'tanh', 'sigmoid', 'gelu', 'identity'}
        The activation ``sigma``.
    """

    name = "activation"
    uses_temperature = True
    pins_reference_coef = False
    scales_design = True
    # The gate's score scales as 1/tau and its curvature as 1/tau**2 (the slopes sit inside
    # sigma, so tau cannot be folded into them as the temperature gate does): below about
    # 1e-150 the curvature of the M-step's Newton steps overflows float64. 1e-100 leaves
    # that much room for the sum over rows and the design's spread.
    smallest_fitted_temperature = 1e-100
    OPTIONS = ("activation",)

    def __init__(self, activation):
        self.activation = activation

    @classmethod
    def from_options(cls, *, n_experts=None, activation=None, **ignored):
        """Build from the estimator's options; ``activation`` is required.

        Parameters
        ----------
        n_experts : int, optional
            Unused.
        activation : {'tanh', 'sigmoid', 'gelu', 'identity'}
        **ignored
            Options of other families.

        Returns
        -------
        ActivationGating
        """
        if activation is None:
            raise ValueError(f"activation must be one of {list(ACTIVATIONS)} for "
                             "gating='activation', got activation=None.")
        check_option(activation, "activation", ACTIVATIONS)
        return cls(activation)

    def describe(self):  # noqa: D102 (inherited)
        return f"activation ({self.activation})"

    def compute_logits(self, X, params):  # noqa: D102 (inherited)
        return (compute_activation(X @ params.coef.T, self.activation)
                + params.intercept) / params.temperature

    def compute_logits_columns(self, ZT, params, workspace=None):  # noqa: D102 (inherited)
        workspace = Workspace() if workspace is None else workspace
        shape = (params.coef.shape[0], ZT.shape[1])
        u = np.matmul(params.coef, ZT[:-1], out=workspace.get("activation_u", shape))
        logits = workspace.get("activation_logits", shape)
        logits[:] = compute_activation(u, self.activation)
        logits += params.intercept[:, None]
        logits /= params.temperature
        return logits

    def logit_derivatives_columns(self, ZT, params, learn_temperature=False,  # noqa: D102
                                  workspace=None):  # (inherited; computed directly here)
        workspace = Workspace() if workspace is None else workspace
        tau = params.temperature
        XT = ZT[:-1]
        shape = (params.coef.shape[0], ZT.shape[1])

        def buffer(name, buffer_shape=shape):
            # The EM's workspace: fresh sample-sized arrays page-fault on every call.
            return workspace.get("activation_" + name, buffer_shape)

        u = np.matmul(params.coef, XT, out=buffer("u"))
        value, d1, d2 = _activation_and_derivatives(
            u, self.activation, out=(buffer("value"), buffer("d1"), buffer("d2")))
        logits = np.add(value, params.intercept[:, None], out=buffer("logits"))
        logits /= tau
        d1_tau = np.divide(d1, tau, out=buffer("d1_tau"))
        d_coef = np.multiply(d1_tau[:, None, :], XT,
                             out=buffer("d_coef", (shape[0], XT.shape[0], shape[1])))
        d_intercept = np.broadcast_to(1.0 / tau, shape)
        d_log_tau = np.negative(logits, out=buffer("d_log_tau")) if learn_temperature else None

        def curvature(c):
            # Second derivatives of the logits weighted by c (n_experts, n_samples): one
            # weighted Gram matrix of the design per expert.
            weight = np.multiply(c, d2, out=buffer("curvature_weight"))
            weight /= tau
            scaled = buffer("curvature_design", XT.shape)
            coef_coef = np.stack([np.multiply(XT, w, out=scaled) @ XT.T for w in weight])
            coef_tau = -(np.multiply(c, d1_tau, out=weight) @ XT.T)
            intercept_tau = -c.sum(axis=1) / tau
            tau_tau = float(np.sum(np.multiply(c, logits, out=weight)))
            return coef_coef, coef_tau, intercept_tau, tau_tau

        return logits, d_coef, d_intercept, d_log_tau, curvature

    def logit_derivatives(self, X, params, learn_temperature=False):  # noqa: D102 (inherited)
        tau = params.temperature
        u = X @ params.coef.T
        d1, d2 = compute_activation_derivatives(u, self.activation)
        logits = (compute_activation(u, self.activation) + params.intercept) / tau
        d_coef = d1[:, :, None] * X[:, None, :] / tau
        d_intercept = np.full(logits.shape, 1.0 / tau)
        d_log_tau = -logits if learn_temperature else None

        def curvature(c):
            # Second derivatives of the logits, weighted by c (n_samples, n_experts).
            coef_coef = np.einsum("ij,im,il->jml", c * d2 / tau, X, X)
            coef_tau = -np.einsum("ij,im->jm", c * d1 / tau, X)
            intercept_tau = -c.sum(axis=0) / tau
            tau_tau = float(np.sum(c * logits))
            return coef_coef, coef_tau, intercept_tau, tau_tau

        return logits, d_coef, d_intercept, d_log_tau, curvature

    def initial_gate(self, data, temperature=None):
        """A first gate: the softmax fit mapped through the activation's slope at 0.

        Starting every ``beta1`` at 0 would sit on the symmetric fixed point
        ``beta1_1 = -beta1_2`` of tanh/sigmoid, which EM never leaves; the linearisation
        ``sigma(u) ~ sigma(0) + sigma'(0) u`` of the fitted softmax gate is a start off it.

        The linearisation holds only where ``u = beta1^T x`` is small. On a design far
        from 0 (``x`` in [30, 31], say), or with a temperature far too high, the mapped
        slopes put every row in the activation's flat tails, and the start's gate fits the
        labels worse than a constant gate: EM then collapses an expert in a few steps.
        Such a start (and only such a one: elsewhere the start is the linearisation, as it
        always was) is scaled towards the linear regime: ``(beta1, beta0)``, and ``tau``
        when it is learned, are multiplied by the largest power of 1/2 whose gate keeps
        at least half of the softmax fit's gain in ``Q`` (the responsibilities'
        log-likelihood under the gate) over a constant gate. As the scale shrinks, the
        logits tend to the softmax fit's (up to a constant common to the experts) with
        ``tau`` learned, and to the scale times them with ``tau`` held. The scales tried
        stop where every logit is within 1e-3 of that limit (by ``|sigma''| <= 1``); if
        none keeps half the gain, the best one tried is taken.

        Parameters
        ----------
        data : GateData
            With ``learn_temperature`` as the fit will have it.
        temperature : float or None, default=None
            Temperature ``tau`` the gate is fitted at (the start's, when it is learned).

        Returns
        -------
        GateParams
        """
        start = SoftmaxGating.initial_gate(self, data, temperature)
        slope_at_zero = compute_activation_derivatives(np.zeros(1), self.activation)[0][0]
        linearised = GateParams(start.coef / slope_at_zero, start.intercept, temperature)
        if self.activation == "identity":  # linear logits: nothing saturates
            return linearised
        return self._least_saturated_scale(data, linearised, start)

    def _least_saturated_scale(self, data, params, softmax_fit):
        """``params``, or ``params`` scaled towards the linear regime if they saturate."""
        constant, softmax = self._reference_objectives(data, softmax_fit)
        gain = softmax - constant

        def captured(trial):  # the share of the softmax fit's gain the trial's gate has
            return (self.gate_objective(data, trial) - constant) / gain if gain > 0 else 1.0

        if captured(params) >= 0.0:  # not worse than a constant gate: the start as it is
            return params
        # The largest |u| over the design, expert by expert (one sample-sized row at a time).
        largest_u = max((float(np.max(np.abs(coef @ data.ZT[:-1]), initial=0.0))
                         for coef in params.coef), default=0.0)
        if not 0.0 < largest_u < np.inf:
            return params
        # At scale s the logits' linearisation error is at most s * largest_u**2 / (2 tau)
        # (|sigma''| <= 1; tau scaled too, or held, which only shrinks it): the scales go
        # down until it is within _LINEARISATION_ERROR (in logs: largest_u**2 overflows
        # past 1e154), in at most _MOST_SCALES steps of a power of 1/2 each.
        halvings = math.ceil(2.0 * math.log2(largest_u) - math.log2(
            2.0 * params.temperature * _LINEARISATION_ERROR))
        step = max(1, math.ceil(halvings / _MOST_SCALES))
        scales_temperature = data.learn_temperature and self.learns_temperature
        best, best_share = params, -np.inf
        for halving in range(step, halvings + step, step):
            scale = 0.5 ** halving
            temperature = params.temperature * scale if scales_temperature \
                else params.temperature
            if temperature < self.smallest_fitted_temperature:
                break
            trial = GateParams(params.coef * scale, params.intercept * scale, temperature)
            share = captured(trial)
            if share >= _SHARE_KEPT:  # the largest such scale keeps most of sigma's curvature
                return trial
            if share > best_share:
                best, best_share = trial, share
        return best

    def _reference_objectives(self, data, softmax_fit):
        """The gate objectives of the best constant gate and of the softmax fit.

        The constant gate gives each expert its share of the weight; the softmax fit's
        logits are linear, ``(beta1^T x + beta0) / tau`` in its parameters.
        """
        weights = np.sum(data.weighted_resp, axis=1)
        shares = weights[weights > 0] / np.sum(weights)
        constant = float(np.sum(weights[weights > 0] * np.log(shares)))
        logits = softmax_fit.coef @ data.ZT[:-1]
        logits += softmax_fit.intercept[:, None]
        logits /= softmax_fit.temperature
        softmax, _ = self._objective_columns(data, logits, "gate_softmax_log_gate")
        return constant, softmax

    # ----------------------------------------------------------- identifiability
    def _has_mirror(self, params):
        return self.activation in _ODD_ABOUT_A_CONSTANT and params.coef.shape[0] == 2

    def symmetric_images(self, params):
        """The mirror image ``(beta1_1, beta1_2) -> (-beta1_2, -beta1_1)`` (tanh/sigmoid, k = 2).

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        list of GateParams
        """
        if not self._has_mirror(params):
            return []
        return [GateParams(-params.coef[::-1].copy(), params.intercept.copy(),
                           params.temperature)]

    def is_symmetric_fixed_point(self, params, atol=1e-12):
        """Whether a two-expert tanh/sigmoid gate has ``beta1_1 = -beta1_2``.

        Parameters
        ----------
        params : GateParams
        atol : float, default=1e-12
            Absolute tolerance of the comparison.

        Returns
        -------
        bool
        """
        return self._has_mirror(params) and bool(
            np.allclose(params.coef[0], -params.coef[1], rtol=0, atol=atol))

    @property
    def centres_design(self):
        """Only the identity activation's gate absorbs a shift of ``x`` in ``beta0``.

        ``sigma(beta1^T x)`` has no intercept inside ``sigma``: for a curved ``sigma`` a
        shift of ``x`` is a different model. The identity's logits are linear, so the fit
        runs on a centred design, as the temperature gate's does (its reference's free
        slope makes the intercepts re-based on the way back; see
        :mod:`gmoe._conditioning`).
        """
        return self.activation == "identity"

    @property
    def learns_temperature(self):
        """Whether ``tau`` can be learned: not with the identity activation.

        Its logits ``(beta1^T x + beta0) / tau`` are the temperature gate's, whose ``tau``
        the data cannot tell from a common scale of ``(beta1, beta0)``: learned, ``tau``
        drifts along a flat ridge of the likelihood and its information is singular. It is
        held at its start, as the temperature gate's is.
        """
        return self.activation != "identity"

    def n_flat_directions(self, n_experts, n_features):  # noqa: D102 (inherited)
        # The identity activation: a common translation of its free slopes.
        return n_features if self.activation == "identity" and n_experts > 1 else 0

    @property
    def linear_logits(self):
        """Only the identity activation has linear logits (the temperature gate's)."""
        return self.activation == "identity"
