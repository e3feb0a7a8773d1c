"""The four gating families as stateless strategy objects.

A family turns gate parameters ``(gate_coef, gate_intercept, temperature)`` and a design
``X`` into logits ``s(x)`` and log-gates ``log g(x)`` (SPEC 2.1). Everything is computed in
the log domain with a max-shifted log-softmax; experts outside a top-K active set get a
log-gate of exactly ``-inf`` (weight 0), never NaN.

The families hold only structural options (``top_k``, ``selection``, ``activation``); the
parameters are passed to every method, so that restarts, finite-difference tests and
simulation sweeps never mutate a family.
"""

import numpy as np
import scipy.linalg
from scipy.special import expit, ndtr

from . import _kernels
from ._expert_major import (
    Workspace,
    gate_pass,
    linear_log_gate_columns,
    log_softmax_columns,
    transposed_design,
)
from ._validation import check_int_in_range, check_option

GATINGS = ("softmax", "topk", "temperature", "activation")
ACTIVATIONS = ("tanh", "sigmoid", "gelu", "identity")
TOPK_SELECTIONS = ("affine", "linear")

_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)


def compute_log_softmax(logits):
    """Row-wise log-softmax with a max shift; ``-inf`` entries stay ``-inf``.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_experts)
        Each row must hold at least one finite entry.

    Returns
    -------
    ndarray of shape (n_samples, n_experts)
    """
    log_gate = np.array(np.asarray(logits, dtype=np.float64).T, order="C")
    log_softmax_columns(log_gate)
    return log_gate.T


def compute_topk_mask(scores, top_k):
    """Boolean mask of the ``top_k`` largest scores of each row, ties to the lower index.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_experts)
    top_k : int

    Returns
    -------
    ndarray of bool, shape (n_samples, n_experts)
    """
    return compute_topk_mask_columns(np.array(np.asarray(scores, dtype=np.float64).T,
                                              order="C"), top_k).T


def compute_topk_mask_columns(scores, top_k):
    """:func:`compute_topk_mask` of expert-major scores, shape (n_experts, n_samples).

    Parameters
    ----------
    scores : ndarray of shape (n_experts, n_samples), C-contiguous float64
    top_k : int

    Returns
    -------
    ndarray of bool, shape (n_experts, n_samples)
        True for the ``top_k`` best experts of each column (ties to the lower index).
    """
    if top_k >= scores.shape[0]:
        return np.ones(scores.shape, dtype=bool)
    active = np.empty(scores.shape, dtype=bool)
    _kernels.topk_columns_into(scores, int(top_k), active)
    return active


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
        phi = _INV_SQRT_2PI * np.exp(-0.5 * u * u)
        return ndtr(u) + u * phi, phi * (2.0 - u * u)
    if activation == "identity":
        return np.ones_like(u), np.zeros_like(u)
    raise ValueError(f"activation must be one of {list(ACTIVATIONS)}, got {activation!r}.")


class SoftmaxGating:
    """Softmax gate: logits ``beta1_i^T x + beta0_i`` over all experts."""

    name = "softmax"
    uses_temperature = False
    #: The last expert's slope is pinned to 0 by the identifiability convention.
    pins_reference_coef = True
    #: Whether :meth:`m_step_expert_major` and :meth:`log_gate_expert_major` hold for
    #: this family (the linear-logit softmax gates); subclasses that change the gate's
    #: form set it to False.
    expert_major_em = True

    def logits(self, X, gate_coef, gate_intercept, temperature=None):
        """Logits ``s(x)``, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.
        temperature : float or None, default=None
            Ignored by this family; accepted for a common signature.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        return X @ gate_coef.T + gate_intercept

    def log_gate(self, X, gate_coef, gate_intercept, temperature=None):
        """Log-gates ``log g(x)``, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.
        temperature : float or None, default=None
            Temperature ``tau``; used only by the temperature families.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            Row-wise log-softmax of :meth:`logits`.
        """
        return compute_log_softmax(self.logits(X, gate_coef, gate_intercept, temperature))

    def n_free_parameters(self, n_experts, n_features, learn_temperature=False):
        """Number of free gate parameters under the identifiability convention.

        Parameters
        ----------
        n_experts : int
            Number of experts ``k``.
        n_features : int
            Number of features ``d``.
        learn_temperature : bool, default=False
            Whether ``tau`` is a free parameter.

        Returns
        -------
        int
            ``(n_experts - 1) * (n_features + 1)``; ``learn_temperature`` is ignored.
        """
        return (n_experts - 1) * (n_features + 1)

    def initial_gate(self, X, weighted_resp, temperature=None):
        """A first gate for given responsibilities: the softmax fit from zero.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        weighted_resp : ndarray of shape (n_samples, n_experts)
            Sample weight times responsibility.
        temperature : float or None, default=None
            Temperature ``tau`` the gate is fitted at; used only by the temperature
            families.

        Returns
        -------
        gate_coef : ndarray of shape (n_experts, n_features)
        gate_intercept : ndarray of shape (n_experts,)
        """
        weighted_resp_t, _ = _expert_major_weights(weighted_resp)
        return self.initial_gate_expert_major(transposed_design(X), weighted_resp_t,
                                              temperature)

    def initial_gate_expert_major(self, ZT, weighted_resp, temperature=None, workspace=None):
        """:meth:`initial_gate` on the transposed design and expert-major responsibilities.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        weighted_resp : ndarray of shape (n_experts, n_samples), C-contiguous
            Sample weight times responsibility.
        temperature : float or None, default=None
            As for :meth:`initial_gate`.
        workspace : gmoe._expert_major.Workspace, optional
            Where the passes' arrays live; a fresh one by default.

        Returns
        -------
        gate_coef : ndarray of shape (n_experts, n_features)
        gate_intercept : ndarray of shape (n_experts,)
        """
        n_experts = weighted_resp.shape[0]
        theta, _ = maximise_softmax_gate_columns(
            np.zeros((n_experts, ZT.shape[0])), ZT, weighted_resp, weighted_resp.sum(axis=0),
            np.arange(n_experts - 1), max_iter=20, workspace=workspace)
        if self.uses_temperature:
            theta *= temperature
        return np.ascontiguousarray(theta[:, :-1]), np.ascontiguousarray(theta[:, -1])

    def m_step(self, X, weighted_resp, gate_coef, gate_intercept, temperature=None, *,
               max_iter=20):
        """Gate M-step: Newton ascent of ``Q`` from the current parameters.

        For the temperature gate the ascent runs on ``gamma = (beta1, beta0) / tau`` and
        ``tau`` is held (the data cannot determine it, SPEC 2.2).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        weighted_resp : ndarray of shape (n_samples, n_experts)
            Sample weight times responsibility.
        gate_coef : ndarray of shape (n_experts, n_features)
        gate_intercept : ndarray of shape (n_experts,)
        temperature : float or None
        max_iter : int, default=20
            Newton steps at most.

        Returns
        -------
        gate_coef, gate_intercept, temperature
            ``Q`` is no lower than at the given parameters.
        """
        weighted_resp_t, row_total = _expert_major_weights(weighted_resp)
        return self.m_step_expert_major(transposed_design(X), weighted_resp_t, row_total, gate_coef,
                                        gate_intercept, temperature, max_iter=max_iter)[:3]

    def m_step_expert_major(self, ZT, weighted_resp, row_total, gate_coef, gate_intercept,
                            temperature=None, *, max_iter=20, workspace=None, log_gate=None):
        """:meth:`m_step` on expert-major arrays, returning the new log-gate as well.

        Used by the estimator's EM, which keeps responsibilities expert-major and hands the
        log-gate on to the next E-step.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        weighted_resp : ndarray of shape (n_experts, n_samples), C-contiguous
            Sample weight times responsibility.
        row_total : ndarray of shape (n_samples,)
            ``weighted_resp.sum(axis=0)``.
        gate_coef, gate_intercept, temperature, max_iter
            As for :meth:`m_step`.
        workspace : gmoe._expert_major.Workspace, optional
            Where the passes' arrays live; a fresh one by default.
        log_gate : ndarray of shape (n_experts, n_samples), optional
            The log-gate at the given parameters, if known (it saves a pass).

        Returns
        -------
        gate_coef, gate_intercept, temperature
            As for :meth:`m_step`.
        log_gate : ndarray of shape (n_experts, n_samples)
            The log-gate at the returned parameters (a workspace array).
        """
        scale = temperature if self.uses_temperature else 1.0
        theta = np.column_stack([gate_coef, gate_intercept]) / scale
        theta, log_gate = maximise_softmax_gate_columns(
            theta, ZT, weighted_resp, row_total, np.arange(theta.shape[0] - 1),
            max_iter=max_iter, workspace=workspace, log_gate=log_gate)
        theta *= scale
        return (np.ascontiguousarray(theta[:, :-1]), np.ascontiguousarray(theta[:, -1]),
                temperature, log_gate)

    def log_gate_expert_major(self, ZT, gate_coef, gate_intercept, temperature=None,
                              workspace=None):
        """Log-gates, expert-major: shape (n_experts, n_samples), C-contiguous.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        gate_coef, gate_intercept, temperature
            As for :meth:`log_gate`.
        workspace : gmoe._expert_major.Workspace, optional
            Where the result lives; a fresh one by default.

        Returns
        -------
        ndarray of shape (n_experts, n_samples)
            The workspace's ``"log_gate"``.
        """
        scale = temperature if self.uses_temperature else 1.0
        theta = np.column_stack([gate_coef, gate_intercept]) / scale
        return linear_log_gate_columns(ZT, theta, workspace=workspace)[0]

    def __eq__(self, other):
        return type(self) is type(other) and vars(self) == vars(other)

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


class TemperatureGating(SoftmaxGating):
    """Dense-to-sparse gate: logits ``(beta1_i^T x + beta0_i) / tau``."""

    name = "temperature"
    uses_temperature = True

    def logits(self, X, gate_coef, gate_intercept, temperature=None):
        """Logits ``s(x)``, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.
        temperature : float
            Temperature ``tau > 0``.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        return (X @ gate_coef.T + gate_intercept) / temperature


class TopKGating(SoftmaxGating):
    """Top-K sparse softmax: softmax of the logits over the ``top_k`` best-scored experts.

    Parameters
    ----------
    top_k : int
        Number of active experts per input, ``1 <= top_k``.
    selection : {'affine', 'linear'}, default='affine'
        Selection score: ``beta1^T x + beta0`` or ``beta1^T x`` (ties to the lower index).
    """

    name = "topk"
    expert_major_em = False

    def __init__(self, top_k, selection="affine"):
        self.top_k = top_k
        self.selection = selection

    def selection_scores(self, X, gate_coef, gate_intercept):
        """Scores that choose the active set, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.
            Added to the scores only for ``selection='affine'``.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        scores = X @ gate_coef.T
        if self.selection == "affine":
            scores = scores + gate_intercept
        return scores

    def active_mask(self, X, gate_coef, gate_intercept):
        """Boolean active set of each row, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.

        Returns
        -------
        ndarray of bool, shape (n_samples, n_experts)
            True for the ``top_k`` experts of each row (ties to the lower index).
        """
        return compute_topk_mask(self.selection_scores(X, gate_coef, gate_intercept), self.top_k)

    def log_gate(self, X, gate_coef, gate_intercept, temperature=None):
        """Log-gates, exactly ``-inf`` outside the active set.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.
        temperature : float or None, default=None
            Ignored by this family; accepted for a common signature.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        logits = self.logits(X, gate_coef, gate_intercept)
        mask = self.active_mask(X, gate_coef, gate_intercept)
        return compute_log_softmax(np.where(mask, logits, -np.inf))

    def m_step(self, X, weighted_resp, gate_coef, gate_intercept, temperature=None, *,
               expert_log_density, sample_weight, max_iter=20):
        """Gate M-step: held-selection Newton, then a search over the selection boundaries.

        Unlike the other families, the step needs the experts' log-densities
        ``(n_samples, n_experts)`` and the sample weights, because the boundaries are
        moved by maximising the log-likelihood itself (SPEC 3); the log-likelihood never
        falls.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        weighted_resp : ndarray of shape (n_samples, n_experts)
            Sample weight times responsibility.
        gate_coef : ndarray of shape (n_experts, n_features)
            Current gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Current gate intercepts ``beta0``.
        temperature : float or None, default=None
            Ignored by this family; accepted for a common signature.
        expert_log_density : ndarray of shape (n_samples, n_experts)
            Log-density of ``y_i`` under each expert.
        sample_weight : ndarray of shape (n_samples,)
            Weight of each row.
        max_iter : int, default=20
            Newton steps at most.

        Returns
        -------
        gate_coef : ndarray of shape (n_experts, n_features)
        gate_intercept : ndarray of shape (n_experts,)
        temperature : None
        """
        from . import _gate_topk

        coef, intercept = _gate_topk.m_step(self, X, weighted_resp, gate_coef, gate_intercept,
                                            expert_log_density, sample_weight,
                                            max_iter=max_iter)
        return coef, intercept, None


class ActivationGating(SoftmaxGating):
    """Activation dense-to-sparse gate: logits ``(sigma(beta1_i^T x) + beta0_i) / tau``.

    Parameters
    ----------
    activation : {'tanh', 'sigmoid', 'gelu', 'identity'}
    """

    name = "activation"
    uses_temperature = True
    expert_major_em = False
    pins_reference_coef = False

    def __init__(self, activation="tanh"):
        self.activation = activation

    def logits(self, X, gate_coef, gate_intercept, temperature=None):
        """Logits ``s(x)``, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.
        temperature : float
            Temperature ``tau > 0``.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        return (compute_activation(X @ gate_coef.T, self.activation) + gate_intercept) / temperature

    def initial_gate_expert_major(self, ZT, weighted_resp, temperature=None, workspace=None):
        """A first gate: the softmax fit mapped through the activation's slope at 0.

        Starting every ``beta1`` at 0 would sit on the symmetric fixed point
        ``beta1_1 = -beta1_2`` of tanh/sigmoid, which EM never leaves; the linearisation
        ``sigma(u) ~ sigma(0) + sigma'(0) u`` of the fitted softmax gate is a start off it.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        weighted_resp : ndarray of shape (n_experts, n_samples), C-contiguous
            Sample weight times responsibility.
        temperature : float or None, default=None
            Temperature ``tau`` the gate is fitted at.
        workspace : gmoe._expert_major.Workspace, optional
            Where the passes' arrays live; a fresh one by default.

        Returns
        -------
        gate_coef : ndarray of shape (n_experts, n_features)
        gate_intercept : ndarray of shape (n_experts,)
        """
        coef, intercept = SoftmaxGating.initial_gate_expert_major(self, ZT, weighted_resp,
                                                                  temperature, workspace)
        slope_at_zero = compute_activation_derivatives(np.zeros(1), self.activation)[0][0]
        return coef / slope_at_zero, intercept

    def n_free_parameters(self, n_experts, n_features, learn_temperature=False):
        """Every slope, all intercepts but the reference's, and ``tau`` when learned.

        Parameters
        ----------
        n_experts : int
            Number of experts ``k``.
        n_features : int
            Number of features ``d``.
        learn_temperature : bool, default=False
            Whether ``tau`` is a free parameter.

        Returns
        -------
        int
            ``n_experts * n_features + n_experts - 1``, plus 1 when ``learn_temperature``.
        """
        return n_experts * n_features + n_experts - 1 + (1 if learn_temperature else 0)

    def m_step(self, X, weighted_resp, gate_coef, gate_intercept, temperature=None, *,
               learn_temperature=True, max_iter=20):
        """Gate M-step: damped Newton with an eigenvalue-clipped Hessian (SPEC 3).

        ``Q`` is not concave in ``beta1``; steps are accepted only when ``Q`` rises.
        ``tau`` is learned on the log scale when ``learn_temperature`` is True.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        weighted_resp : ndarray of shape (n_samples, n_experts)
            Sample weight times responsibility.
        gate_coef : ndarray of shape (n_experts, n_features)
            Current gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Current gate intercepts ``beta0``.
        temperature : float
            Current temperature ``tau > 0``.
        learn_temperature : bool, default=True
            Update ``tau`` too; otherwise it is held.
        max_iter : int, default=20
            Newton steps at most.

        Returns
        -------
        gate_coef : ndarray of shape (n_experts, n_features)
        gate_intercept : ndarray of shape (n_experts,)
        temperature : float
            The updated ``tau``, or the given one when it is held.
        """
        from . import _gate_activation

        vector = _gate_activation.pack(gate_coef, gate_intercept, temperature,
                                       learn_temperature)
        vector = _gate_activation.maximise(vector, X, weighted_resp, self.activation,
                                           temperature, learn_temperature, max_iter=max_iter)
        return _gate_activation.unpack(vector, gate_coef.shape[0], X.shape[1], temperature,
                                       learn_temperature)


def make_gating(gating="softmax", *, top_k=None, topk_selection="affine", activation=None,
                n_experts=None):
    """Build the gating family named ``gating``, validating its options.

    Parameters
    ----------
    gating : {'softmax', 'topk', 'temperature', 'activation'}
    top_k : int, optional
        Required for ``'topk'``: ``1 <= top_k <= n_experts``.
    topk_selection : {'affine', 'linear'}, default='affine'
    activation : {'tanh', 'sigmoid', 'gelu', 'identity'}, optional
        Required for ``'activation'``.
    n_experts : int, optional
        When given, ``top_k`` is checked against it.

    Returns
    -------
    SoftmaxGating, TopKGating, TemperatureGating or ActivationGating
    """
    check_option(gating, "gating", GATINGS)
    if gating == "softmax":
        return SoftmaxGating()
    if gating == "temperature":
        return TemperatureGating()
    if gating == "topk":
        check_option(topk_selection, "topk_selection", TOPK_SELECTIONS)
        if top_k is None:
            raise ValueError("top_k must be an integer in [1, n_experts] for gating='topk', "
                             "got top_k=None.")
        high = n_experts if n_experts is not None else np.iinfo(np.int64).max
        check_int_in_range(top_k, "top_k", 1, high)
        return TopKGating(int(top_k), topk_selection)
    if activation is None:
        raise ValueError(f"activation must be one of {list(ACTIVATIONS)} for "
                         "gating='activation', got activation=None.")
    check_option(activation, "activation", ACTIVATIONS)
    return ActivationGating(activation)


# --------------------------------------------------------------------------------------
# Gate M-step of the linear-logit (softmax) gate: maximise
#     Q(theta) = sum_i sum_j rw_ij log g_j(z_i; theta),   rw_ij = w_i r_ij,
# over the free rows of theta (the reference row is pinned to 0). Q is concave; Newton
# with the exact Hessian, step halving and a warm start never decreases it.


def _check_gate_inputs(Z, weighted_resp):
    """Transposed design, expert-major weighted responsibilities and their row totals."""
    ZT = np.ascontiguousarray(np.asarray(Z, dtype=np.float64).T)
    return (ZT, *_expert_major_weights(weighted_resp))


def _expert_major_weights(weighted_resp):
    """``weighted_resp`` (n_samples, n_experts) expert-major and C-contiguous, with row totals."""
    weighted_resp_t = np.ascontiguousarray(np.asarray(weighted_resp, dtype=np.float64).T)
    return weighted_resp_t, weighted_resp_t.sum(axis=0)


def compute_softmax_gate_objective(theta, Z, weighted_resp):
    """Gate objective ``Q`` of the linear-logit softmax gate.

    Parameters
    ----------
    theta : ndarray of shape (n_experts, n_features + 1)
        Gate slopes and intercept (last column) of every expert.
    Z : ndarray of shape (n_samples, n_features + 1)
        Design with a trailing column of ones.
    weighted_resp : ndarray of shape (n_samples, n_experts)
        Sample weight times responsibility.

    Returns
    -------
    float
    """
    ZT, weighted_resp_t, row_total = _check_gate_inputs(Z, weighted_resp)
    return gate_pass(ZT, theta, weighted_resp_t, row_total, np.arange(0), want_info=False)[0]


def compute_softmax_gate_gradient(theta, Z, weighted_resp):
    """Gradient of :func:`compute_softmax_gate_objective`, shape of ``theta``."""
    ZT, weighted_resp_t, row_total = _check_gate_inputs(Z, weighted_resp)
    n_experts = weighted_resp_t.shape[0]
    grad = gate_pass(ZT, theta, weighted_resp_t, row_total, np.arange(n_experts),
                     want_info=False)[2]
    return grad.reshape(n_experts, Z.shape[1])


def compute_softmax_gate_hessian(theta, Z, weighted_resp, free):
    """Hessian of the gate objective over the free rows of ``theta``.

    Parameters
    ----------
    theta, Z, weighted_resp
        As for :func:`compute_softmax_gate_objective`.
    free : ndarray of int
        Indices of the free experts (rows of ``theta``).

    Returns
    -------
    ndarray of shape (len(free) * (n_features + 1), len(free) * (n_features + 1))
        Blocks in the order of ``free``, each over ``(slopes..., intercept)``.
    """
    ZT, weighted_resp_t, row_total = _check_gate_inputs(Z, weighted_resp)
    return -gate_pass(ZT, theta, weighted_resp_t, row_total, free)[3]


def backtrack(evaluate, objective, max_halvings=40):
    """Step halving: the first of ``t = 1, 1/2, 1/4, ...`` that does not lower ``objective``.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(t)`` returns a tuple whose first item is the objective at step ``t``.
    objective : float
        The objective at ``t = 0``.
    max_halvings : int, default=40
        Steps tried at most.

    Returns
    -------
    tuple or None
        ``evaluate``'s result at the accepted step, or None if every step lowered the
        objective (or gave a non-finite value).
    """
    t = 1.0
    for _ in range(max_halvings):
        result = evaluate(t)
        if np.isfinite(result[0]) and result[0] >= objective:
            return result
        t *= 0.5
    return None


def solve_newton_direction(neg_hess, grad):
    """Solve ``neg_hess @ step = grad`` for a positive (semi)definite ``neg_hess``.

    Cholesky first; a rank-deficient system (a gate slope the data cannot see, such as a
    constant feature) is regularised by an increasing ridge.
    """
    scale = max(float(np.max(np.abs(np.diag(neg_hess)))), 1e-300)
    ridge = 0.0
    for _ in range(30):
        try:
            factor = scipy.linalg.cho_factor(neg_hess + ridge * np.eye(len(grad)),
                                             check_finite=False)
            step = scipy.linalg.cho_solve(factor, grad, check_finite=False)
            if np.all(np.isfinite(step)):
                return step
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            pass
        ridge = scale * 1e-12 if ridge == 0.0 else ridge * 10.0
    return grad / scale


def maximise_softmax_gate(theta, Z, weighted_resp, free, *, mask=None, max_iter=20, tol=1e-10):
    """Newton ascent of the softmax gate objective from a warm start.

    Parameters
    ----------
    theta : ndarray of shape (n_experts, n_features + 1)
        Starting point; rows not in ``free`` are kept as they are.
    Z : ndarray of shape (n_samples, n_features + 1)
    weighted_resp : ndarray of shape (n_samples, n_experts)
        Zero wherever ``mask`` is False.
    free : ndarray of int
        The rows of ``theta`` that move.
    mask : ndarray of bool of shape (n_samples, n_experts), optional
        Active sets held fixed (top-K): the softmax runs over each row's active experts.
    max_iter : int, default=20
        Newton steps at most.
    tol : float, default=1e-10
        Stop when a step raises ``Q`` by less than ``tol * (1 + |Q|)``.

    Returns
    -------
    theta : ndarray of shape (n_experts, n_features + 1)
        A point with ``Q`` no lower than at the start.
    """
    ZT, weighted_resp_t, row_total = _check_gate_inputs(Z, weighted_resp)
    inactive = None if mask is None else np.array(~np.asarray(mask, dtype=bool).T, order="C")
    return maximise_softmax_gate_columns(theta, ZT, weighted_resp_t, row_total, free,
                                         inactive=inactive, max_iter=max_iter, tol=tol)[0]


def maximise_softmax_gate_columns(theta, ZT, weighted_resp, row_total, free, *, inactive=None,
                                  max_iter=20, tol=1e-10, workspace=None, log_gate=None):
    """:func:`maximise_softmax_gate` on expert-major arrays; also returns the final log-gate.

    Each Newton step costs one pass over the rows (:func:`gmoe._expert_major.gate_pass`):
    the candidate's ``Q`` decides acceptance, and the same pass gives the gradient and
    information of the next step.

    Parameters
    ----------
    theta : ndarray of shape (n_experts, n_features + 1)
    ZT : ndarray of shape (n_features + 1, n_samples)
        The design with intercept, transposed (``gmoe._expert_major.transposed_design``).
    weighted_resp : ndarray of shape (n_experts, n_samples), C-contiguous
    row_total : ndarray of shape (n_samples,)
        ``weighted_resp.sum(axis=0)``.
    free : ndarray of int
    inactive : ndarray of bool of shape (n_experts, n_samples), optional
        Experts held out of each row's softmax (top-K).
    max_iter : int, default=20
    tol : float, default=1e-10
    workspace : gmoe._expert_major.Workspace, optional
        Where the passes' arrays live; a fresh one by default.
    log_gate : ndarray of shape (n_experts, n_samples), optional
        The log-gate at ``theta``, if known (it saves a pass). It is not written to unless
        it is one of the workspace's ``"log_gate_a"``, ``"log_gate_b"``.

    Returns
    -------
    theta : ndarray of shape (n_experts, n_features + 1)
    log_gate : ndarray of shape (n_experts, n_samples)
        The log-gate at the returned ``theta`` (a workspace array, or the one given).
    """
    workspace = Workspace() if workspace is None else workspace
    theta = np.array(theta, dtype=np.float64, copy=True)
    # The accepted point's log-gate and the candidate's live in two buffers that swap;
    # a given log-gate that is one of them is the accepted point's.
    names = ["log_gate_a", "log_gate_b"]
    if log_gate is not None and log_gate is workspace.get(names[1], log_gate.shape):
        names.reverse()
    want_info = len(free) > 0 and max_iter > 0
    objective, log_gate, grad, info = gate_pass(ZT, theta, weighted_resp, row_total, free,
                                                inactive, want_info, workspace,
                                                log_gate_name=names[0], log_gate=log_gate)
    if not want_info:
        return theta, log_gate
    for iteration in range(max_iter):
        step = solve_newton_direction(info, grad).reshape(len(free), -1)
        # The information at the new point is needed only if another step follows.
        want_info = iteration + 1 < max_iter

        def evaluate(t, start=theta, step=step, want_info=want_info, name=names[1]):
            candidate = start.copy()
            candidate[free] += t * step
            return (*gate_pass(ZT, candidate, weighted_resp, row_total, free, inactive,
                               want_info, workspace, log_gate_name=name), candidate)

        accepted = backtrack(evaluate, objective)
        if accepted is None:
            break
        value, log_gate, grad, info, theta = accepted
        gain = value - objective
        objective = value
        names.reverse()
        if gain <= tol * (1.0 + abs(objective)) or info is None:
            break
    return theta, log_gate
