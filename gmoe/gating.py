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
from scipy.special import expit, ndtr

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
    row_max = np.max(logits, axis=1, keepdims=True)
    shifted = logits - row_max
    log_norm = np.log(np.sum(np.exp(shifted), axis=1, keepdims=True))
    return shifted - log_norm


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
    n_samples, n_experts = scores.shape
    if top_k >= n_experts:
        return np.ones(scores.shape, dtype=bool)
    # A stable sort of the negated scores lists tied experts in index order.
    order = np.argsort(-scores, axis=1, kind="stable")[:, :top_k]
    mask = np.zeros(scores.shape, dtype=bool)
    np.put_along_axis(mask, order, True, axis=1)
    return mask


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

    def logits(self, X, gate_coef, gate_intercept, temperature=None):
        """Logits ``s(x)``, shape (n_samples, n_experts)."""
        return X @ gate_coef.T + gate_intercept

    def log_gate(self, X, gate_coef, gate_intercept, temperature=None):
        """Log-gates ``log g(x)``, shape (n_samples, n_experts)."""
        return compute_log_softmax(self.logits(X, gate_coef, gate_intercept, temperature))

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
        """Logits ``s(x)``, shape (n_samples, n_experts)."""
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

    def __init__(self, top_k, selection="affine"):
        self.top_k = top_k
        self.selection = selection

    def selection_scores(self, X, gate_coef, gate_intercept):
        """Scores that choose the active set, shape (n_samples, n_experts)."""
        scores = X @ gate_coef.T
        if self.selection == "affine":
            scores = scores + gate_intercept
        return scores

    def active_mask(self, X, gate_coef, gate_intercept):
        """Boolean active set of each row, shape (n_samples, n_experts)."""
        return compute_topk_mask(self.selection_scores(X, gate_coef, gate_intercept), self.top_k)

    def log_gate(self, X, gate_coef, gate_intercept, temperature=None):
        """Log-gates, exactly ``-inf`` outside the active set."""
        logits = self.logits(X, gate_coef, gate_intercept)
        mask = self.active_mask(X, gate_coef, gate_intercept)
        return compute_log_softmax(np.where(mask, logits, -np.inf))


class ActivationGating(SoftmaxGating):
    """Activation dense-to-sparse gate: logits ``(sigma(beta1_i^T x) + beta0_i) / tau``.

    Parameters
    ----------
    activation : {'tanh', 'sigmoid', 'gelu', 'identity'}
    """

    name = "activation"
    uses_temperature = True
    pins_reference_coef = False

    def __init__(self, activation="tanh"):
        self.activation = activation

    def logits(self, X, gate_coef, gate_intercept, temperature=None):
        """Logits ``s(x)``, shape (n_samples, n_experts)."""
        return (compute_activation(X @ gate_coef.T, self.activation) + gate_intercept) / temperature


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
