r"""The observed log-likelihood's gradient and Hessian, assembled from the families.

:class:`Parametrisation` orders the free parameters of a model on the identifiable scale
(the gate family's :class:`~gmoe.gates.GateLayout`, then each expert's parameters in the
expert family's order). :func:`compute_log_likelihood_derivatives` evaluates

.. math::

    L(\theta) = \sum_i w_i \log \sum_j g_{ij}\, f_j(y_i \mid x_i),

its score and its analytic Hessian, by the exact identity (``l_ij = log g_ij + log f_ij``,
``s_ij`` its gradient, ``r_ij`` the responsibilities)

.. math::

    \nabla^2 L = \sum_i w_i \Big[ \sum_j r_{ij} \nabla^2 l_{ij}
        + \sum_j r_{ij} s_{ij} s_{ij}^\top
        - \Big(\sum_j r_{ij} s_{ij}\Big)\Big(\sum_j r_{ij} s_{ij}\Big)^\top \Big],

with the gate's pieces from :meth:`gmoe.gates.GatingFamily.logit_derivatives` and the
experts' from :meth:`gmoe.experts.ExpertFamily.log_density_derivatives`; a compiled
pass writes the rows whose Gram matrices (BLAS) give the outer-product terms
(``gmoe._kernels._information``). Used by
:class:`gmoe.MoEResults` (standard errors) and by the estimator's stopping rule.
"""

import numpy as np

from ._expert_major import compute_log_softmax
from ._kernels._information import information_rows_into
from .gates import GateLayout

__all__ = ["Parametrisation", "compute_log_likelihood_derivatives"]

# Rows per block of the logits' Jacobian, shape (rows, n_experts, n_gate parameters).
_CHUNK_ROWS = 8192


class Parametrisation:
    """Free parameters of a model on the identifiable scale, in a fixed order.

    Order: the gate block first (the family's :class:`~gmoe.gates.GateLayout`: expert by
    expert, slopes then intercept; then ``log tau`` for a family that learns it), then
    expert by expert ``coef..., intercept, var``. Index arrays hold -1 for pinned entries.
    """

    def __init__(self, like, learn_temperature=False, feature_names=None):
        k, d = like.n_experts, like.n_features
        self.like = like
        self.family = like.family
        self.layout = GateLayout(self.family, k, d, learn_temperature)
        self.learn_temperature = self.layout.tau_idx is not None
        if feature_names is None:
            feature_names = [str(m) for m in range(d)]
        feature_names = [str(f) for f in feature_names]
        prefix = self.family.parameter_prefix
        names = [None] * self.layout.size
        for j in range(k):
            for m in range(d):
                if self.layout.coef_idx[j, m] >= 0:
                    names[self.layout.coef_idx[j, m]] = f"{prefix}[{j}].coef[{feature_names[m]}]"
            if self.layout.intercept_idx[j] >= 0:
                names[self.layout.intercept_idx[j]] = f"{prefix}[{j}].intercept"
        if self.learn_temperature:
            names[self.layout.tau_idx] = "gate.log_temperature"
        self.gate_coef_idx = self.layout.coef_idx
        self.gate_int_idx = self.layout.intercept_idx
        self.tau_idx = self.layout.tau_idx
        self.n_gate = len(names)
        # Expert blocks: expert by expert, the expert family's parameters in its order.
        self.experts = like.experts
        q = self.experts.n_parameters_per_expert(d)
        self.expert_idx = len(names) + np.arange(k * q).reshape(k, q)
        for j in range(k):
            names += [f"expert[{j}].{p}" for p in self.experts.parameter_names(feature_names)]
        self.names = names
        self.size = len(names)

    def to_vector(self, measure):
        """The free parameters of ``measure`` (same shape and family as ``like``)."""
        m = measure.identifiable()
        vec = np.empty(self.size)
        vec[:self.n_gate] = self.layout.pack(m.gate_params)
        vec[self.expert_idx] = self.experts.pack(m.expert_params)
        return vec

    def identifiable_gate(self, vec):
        """The gate (on the identifiable scale) at a parameter vector."""
        held = self.like.identifiable().temperature
        return self.layout.unpack(np.asarray(vec[:self.n_gate], dtype=np.float64), held)

    def to_measure(self, vec):
        """The model at a parameter vector, with the options (and held ``tau``) of ``like``."""
        vec = np.asarray(vec, dtype=np.float64)
        gate = self.family.from_identifiable_gate(self.identifiable_gate(vec),
                                                  self.like.gate_params)
        experts = self.experts.unpack(vec[self.expert_idx])
        return self.like.replace(gate_coef=gate.coef, gate_intercept=gate.intercept,
                                 expert_coef=experts.coef, expert_intercept=experts.intercept,
                                 expert_var=experts.var, temperature=gate.temperature)


def _gate_logits_and_jacobian(param, vec, X):
    """Gate logits ``eta`` (n, k), their Jacobian ``E`` (n, k, n_gate) and a curvature map.

    The curvature map takes weights ``c`` of shape (n, k) and returns
    ``sum_ij c_ij d^2 eta_ij / d phi^2`` (n_gate, n_gate), the second derivatives of the
    logits themselves (None for logits linear in the parameters). Everything comes from
    the gating family's :meth:`~gmoe.gates.GatingFamily.logit_derivatives`.
    """
    eta, d_coef, d_intercept, d_tau, curvature = param.family.logit_derivatives(
        X, param.identifiable_gate(vec), param.learn_temperature)
    E = param.layout.jacobian(d_coef, d_intercept, d_tau)
    if curvature is None:
        return eta, E, None
    return eta, E, lambda c: param.layout.curvature_matrix(curvature(c))


def compute_log_likelihood_derivatives(param, vec, X, y, sample_weight):
    """Observed log-likelihood, its gradient and its Hessian at a parameter vector.

    Parameters
    ----------
    param : Parametrisation
    vec : ndarray of shape (n_params,)
    X : ndarray of shape (n_samples, n_features)
    y, sample_weight : ndarray of shape (n_samples,)

    Returns
    -------
    log_lik : float
    score : ndarray of shape (n_params,)
    hessian : ndarray of shape (n_params, n_params)
    """
    p, pg = param.size, param.n_gate
    k, q = param.expert_idx.shape
    # Each expert's parameters are consecutive (the kernel addresses them by an offset).
    offsets = np.ascontiguousarray(param.expert_idx[:, 0], dtype=np.int64)
    experts = param.experts.unpack(vec[param.expert_idx])
    log_lik = 0.0
    score = np.zeros(p)
    hess = np.zeros((p, p))
    for start in range(0, X.shape[0], _CHUNK_ROWS):
        rows = slice(start, start + _CHUNK_ROWS)
        Xc, yc, wc = X[rows], y[rows], np.ascontiguousarray(sample_weight[rows])
        n = Xc.shape[0]
        eta, E, curvature = _gate_logits_and_jacobian(param, vec, Xc)
        log_gate = compute_log_softmax(eta)
        log_dens, expert_grad, expert_hessian = param.experts.log_density_derivatives(
            Xc, yc, experts)
        resp = np.empty(log_gate.shape)
        S, M, G = np.empty((n * k, p)), np.empty((n, p)), np.empty((n * k, pg))
        log_lik += information_rows_into(
            np.ascontiguousarray(E, dtype=np.float64),
            np.ascontiguousarray(log_gate, dtype=np.float64),
            np.ascontiguousarray(log_dens, dtype=np.float64),
            np.ascontiguousarray(expert_grad, dtype=np.float64), offsets, wc, resp, score,
            S, M, G)
        # sum_j r_ij s_ij s_ij^T - sbar_i sbar_i^T, and the gate's own -Cov_g(E_i).
        hess += S.T @ S - M.T @ M
        hess[:pg, :pg] -= G.T @ G
        # Gate block: sum_j (r_ij - g_ij) D2 eta_ij, for logits nonlinear in the parameters.
        if curvature is not None:
            hess[:pg, :pg] += curvature(wc[:, None] * (resp - np.exp(log_gate)))
        # Expert blocks: the expert family's own second derivatives.
        blocks = expert_hessian(wc[:, None] * resp)
        for j in range(k):
            hess[np.ix_(param.expert_idx[j], param.expert_idx[j])] += blocks[j]
    hess = 0.5 * (hess + hess.T)
    return log_lik, score, hess


