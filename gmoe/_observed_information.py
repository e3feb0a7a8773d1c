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

:func:`compute_linear_gate_derivatives` gives the same three numbers for the commonest
model, a softmax of logits linear in the parameters (softmax and temperature gates) with
Gaussian linear experts, block by block of a row source (on the fit's threads): there
every block of the Hessian is a weighted sum of ``z z^T`` (``z = (x, 1)``), so one compiled
pass writes the per-row weights and one BLAS product sums them, instead of the ``n k``
rows of ``p`` derivatives above (``p^2`` work per row). The estimator's stopping rule
checks the fits of those gates with it.
"""

import numpy as np

from . import _kernels
from ._blocks import unpack_upper, weighted_gram_upper
from ._expert_major import compute_log_softmax, e_step_columns
from ._kernels._information import information_rows_into
from .experts import GAUSSIAN_LINEAR
from .gates import GateLayout
from .gates._linear import linear_log_gate_columns

__all__ = ["Parametrisation", "compute_linear_gate_derivatives",
           "compute_log_likelihood_derivatives", "linear_gate_log_likelihood"]

# Rows per block of the logits' Jacobian, shape (rows, n_experts, n_gate parameters).
_CHUNK_ROWS = 8192
# Bytes of the per-row weights of compute_linear_gate_derivatives held at once (a slice
# of a block): within a core's cache, and bounded whatever the number of experts.
_WEIGHT_BYTES = 1 << 18


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




def _linear_gate_groups(param):
    """Each parameter group's indices: free gate rows, then coefficients, then variances.

    Returns ``(free, groups)``, or None when the gate's free parameters are not whole rows
    of the logit coefficients (then :func:`compute_linear_gate_derivatives` does not apply).
    """
    k, n_cols = param.expert_idx.shape[0], param.gate_coef_idx.shape[1] + 1
    rows = np.column_stack([param.gate_coef_idx, param.gate_int_idx])
    free = np.flatnonzero(np.all(rows >= 0, axis=1))
    if np.any(rows[np.setdiff1d(np.arange(k), free)] >= 0):
        return None
    groups = ([rows[j] for j in free] + [param.expert_idx[j, :n_cols] for j in range(k)]
              + [param.expert_idx[j, n_cols:n_cols + 1] for j in range(k)])
    return free.astype(np.int64), groups


def _linear_gate_e_step(block, theta, expert_theta, expert_var):
    """Gate probabilities, responsibilities (workspace arrays) and ``L`` on one block."""
    workspace = block.workspace
    log_gate, gate = linear_log_gate_columns(block.ZT, theta, workspace=workspace)
    resp, row_log_lik = e_step_columns(block.ZT, block.y, log_gate, expert_theta[:, :-1],
                                       expert_theta[:, -1], expert_var, workspace)
    return gate, resp, float(_kernels.lane_dot(block.w, row_log_lik))


def _linear_gate_log_likelihood_block(block, theta, expert_theta, expert_var):
    return _linear_gate_e_step(block, theta, expert_theta, expert_var)[2]


def _linear_gate_arrays(measure):
    """``(theta, expert_theta, expert_var)`` of a dense linear-logit gate, or None."""
    theta = measure.family.dense_linear_logits(measure.identifiable().gate_params)
    if theta is None or measure.experts is not GAUSSIAN_LINEAR:
        return None
    expert_theta = np.column_stack([measure.expert_coef, measure.expert_intercept])
    return (np.ascontiguousarray(theta, dtype=np.float64), np.ascontiguousarray(expert_theta),
            np.asarray(measure.expert_var, dtype=np.float64))


def linear_gate_log_likelihood(measure, rows):
    """``L`` of a softmax of linear logits with Gaussian linear experts, on a row source.

    The same numbers, block by block, as the log-likelihood of
    :func:`compute_linear_gate_derivatives` (so that a search's gains are exact zeros
    where it returns to the point).

    Parameters
    ----------
    measure : MixingMeasure
        In the units of ``rows``.
    rows : block source of ``gmoe._blocks``

    Returns
    -------
    float or None
        None when the model is not of that form.
    """
    arrays = _linear_gate_arrays(measure)
    if arrays is None:
        return None
    return float(rows.reduce(_linear_gate_log_likelihood_block, *arrays))


def _linear_gate_block(block, theta, expert_theta, expert_var, free):
    """Log-likelihood and the Gram matrices of the information's weights on one block.

    The weights (one row per pair of parameter groups) are written a slice of the block
    at a time, so that they take about :data:`_WEIGHT_BYTES` (at least 256 rows' worth).
    """
    workspace, ZT = block.workspace, block.ZT
    k, n_rows = theta.shape[0], ZT.shape[1]
    gate, resp, log_lik = _linear_gate_e_step(block, theta, expert_theta, expert_var)
    n_groups = free.shape[0] + 2 * k
    n_weights = n_groups * (n_groups + 1) // 2 + n_groups
    # A power of two from 256 rows: the slices depend on the data's shape only.
    slice_rows = 1 << max(8, (_WEIGHT_BYTES // (8 * n_weights)).bit_length() - 1)
    total = None
    u, v = workspace.get("information_u", (k, slice_rows)), workspace.get("information_v",
                                                                        (k, slice_rows))
    for start in range(0, n_rows, slice_rows):
        length = min(slice_rows, n_rows - start)
        weights = workspace.get(f"information_weights_{length}", (n_weights, length))
        _kernels.linear_gate_information_weights_into(
            ZT, block.y, block.w, gate, resp, expert_theta, expert_var, free, start,
            u[:, :length], v[:, :length], weights)
        grams = weighted_gram_upper(weights, ZT, workspace, offset=start)
        total = grams if total is None else total + grams
    return log_lik, total


def compute_linear_gate_derivatives(param, measure, rows):
    """:func:`compute_log_likelihood_derivatives` on a row source, for linear-logit gates.

    Parameters
    ----------
    param : Parametrisation
    measure : MixingMeasure
        In the units of ``rows``.
    rows : block source of ``gmoe._blocks``
        The rows, summed block by block in a fixed order (any number of threads gives the
        same numbers).

    Returns
    -------
    tuple or None
        ``(log_lik, score, hessian)``; None when the model is not a softmax of linear
        logits (:meth:`~gmoe.gates.GatingFamily.dense_linear_logits`) with Gaussian linear
        experts, or a temperature is a parameter.
    """
    arrays = _linear_gate_arrays(measure)
    grouped = _linear_gate_groups(param)
    if arrays is None or param.learn_temperature or grouped is None:
        return None
    free, groups = grouped
    log_lik, grams = rows.reduce(_linear_gate_block, *arrays, free)
    full = unpack_upper(grams, arrays[1].shape[1])
    n_groups = len(groups)
    # The variances' groups (the last k) multiply 1 in the score, the others z.
    scalar = [a >= n_groups - measure.n_experts for a in range(n_groups)]
    hess = np.empty((param.size, param.size))
    score = np.empty(param.size)
    row = 0
    for a in range(n_groups):
        for b in range(a, n_groups):
            gram = full[row]
            row += 1
            # z z^T, its last column (sums of z) or its corner (sums of 1).
            if scalar[a]:
                block = gram[-1:, -1:]
            elif scalar[b]:
                block = gram[:, -1:]
            else:
                block = gram
            hess[np.ix_(groups[a], groups[b])] = block
            hess[np.ix_(groups[b], groups[a])] = block.T
    for a in range(n_groups):
        score[groups[a]] = full[row][-1, -1:] if scalar[a] else full[row][:, -1]
        row += 1
    return log_lik, score, hess
