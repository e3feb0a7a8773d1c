"""Gates that are the softmax of logits smooth in their parameters, with a generic M-step.

:class:`SmoothGatingFamily` needs only :meth:`~SmoothGatingFamily.logit_derivatives`:
the logits, their first derivatives and (for logits that are not linear in the
parameters) the curvature. From these it builds the log-gate, the gate's M-step (Newton
ascent of ``Q = sum_i sum_j rw_ij log g_ij`` with the Hessian's eigenvalues clipped to make
it negative definite, since ``Q`` need not be concave, and step halving so that ``Q`` never
falls) and, in :mod:`gmoe.inference`, the gate's part of the observed information.

:class:`GateLayout` is the order in which the gate's free parameters are packed into one
vector: every free slope (expert by expert, feature by feature), every free intercept,
then ``log tau`` when the temperature is a parameter.
"""

import numpy as np

from .._expert_major import log_softmax_columns
from .base import GateParams, GatingFamily, backtrack

__all__ = ["GateLayout", "SmoothGatingFamily", "clipped_newton_direction"]

# Eigenvalues of -H are clipped below at this fraction of the largest one.
_EIG_FLOOR = 1e-8


class GateLayout:
    """Positions of the gate's free parameters in a packed vector.

    Parameters
    ----------
    family : GatingFamily
    n_experts, n_features : int
    learn_temperature : bool, default=False
        Whether ``log tau`` is a parameter (only for families that learn it).
    """

    def __init__(self, family, n_experts, n_features, learn_temperature=False):
        coef_free, intercept_free = family.free_parameters(n_experts, n_features)
        self.coef_idx = np.full((n_experts, n_features), -1, dtype=np.intp)
        self.intercept_idx = np.full(n_experts, -1, dtype=np.intp)
        # Expert by expert: slopes, then intercept (the order of the summary tables).
        pos = 0
        for j in range(n_experts):
            for m in range(n_features):
                if coef_free[j, m]:
                    self.coef_idx[j, m] = pos
                    pos += 1
            if intercept_free[j]:
                self.intercept_idx[j] = pos
                pos += 1
        self.tau_idx = None
        if learn_temperature and family.learns_temperature:
            self.tau_idx = pos
            pos += 1
        self.size = pos

    def pack(self, params):
        """The free parameters of ``params`` as a vector (``log tau`` last, if free)."""
        vec = np.empty(self.size)
        free = self.coef_idx >= 0
        vec[self.coef_idx[free]] = params.coef[free]
        free = self.intercept_idx >= 0
        vec[self.intercept_idx[free]] = params.intercept[free]
        if self.tau_idx is not None:
            vec[self.tau_idx] = np.log(params.temperature)
        return vec

    def unpack(self, vec, temperature=None):
        """:class:`GateParams` from a vector; pinned entries are 0, a held ``tau`` is kept."""
        coef = np.zeros(self.coef_idx.shape)
        intercept = np.zeros(self.intercept_idx.shape)
        free = self.coef_idx >= 0
        coef[free] = vec[self.coef_idx[free]]
        free = self.intercept_idx >= 0
        intercept[free] = vec[self.intercept_idx[free]]
        if self.tau_idx is not None:
            temperature = float(np.exp(vec[self.tau_idx]))
        return GateParams(coef, intercept, temperature)

    def jacobian(self, d_coef, d_intercept, d_log_temperature):
        """The logits' Jacobian in packed form, shape (n_samples, n_experts, size)."""
        n, k, _ = d_coef.shape
        E = np.zeros((n, k, self.size))
        for j in range(k):
            free = self.coef_idx[j] >= 0
            E[:, j, self.coef_idx[j, free]] = d_coef[:, j, free]
            if self.intercept_idx[j] >= 0:
                E[:, j, self.intercept_idx[j]] = d_intercept[:, j]
            if self.tau_idx is not None:
                E[:, j, self.tau_idx] = d_log_temperature[:, j]
        return E

    def curvature_matrix(self, blocks):
        """Assemble :meth:`SmoothGatingFamily.logit_derivatives`' curvature blocks, (size, size)."""
        coef_coef, coef_tau, intercept_tau, tau_tau = blocks
        out = np.zeros((self.size, self.size))
        t = self.tau_idx
        for j in range(self.coef_idx.shape[0]):
            free = self.coef_idx[j] >= 0
            cols = self.coef_idx[j, free]
            out[np.ix_(cols, cols)] += coef_coef[j][np.ix_(free, free)]
            if t is not None:
                out[cols, t] += coef_tau[j, free]
                out[t, cols] += coef_tau[j, free]
                if self.intercept_idx[j] >= 0:
                    out[self.intercept_idx[j], t] += intercept_tau[j]
                    out[t, self.intercept_idx[j]] += intercept_tau[j]
        if t is not None:
            out[t, t] += tau_tau
        return out


def _gram(A, weights):
    """``sum_r weights_r A_r A_r^T`` for rows ``A_r`` (weights >= 0)."""
    B = A * np.sqrt(weights)[:, None]
    return B.T @ B


def clipped_newton_direction(grad, hess):
    """Ascent direction ``(-H)_+^{-1} grad`` with ``-H``'s eigenvalues clipped positive.

    Parameters
    ----------
    grad : ndarray of shape (p,)
    hess : ndarray of shape (p, p)

    Returns
    -------
    ndarray of shape (p,)
    """
    eigval, eigvec = np.linalg.eigh(-0.5 * (hess + hess.T))
    top = max(float(np.max(np.abs(eigval))), 1e-300)
    eigval = np.maximum(np.abs(eigval), _EIG_FLOOR * top)
    return eigvec @ ((eigvec.T @ grad) / eigval)


class SmoothGatingFamily(GatingFamily):
    """Softmax of logits that are smooth in the gate parameters (over all experts).

    A subclass implements :meth:`logit_derivatives` (and may override :meth:`logits` with
    a cheaper version); the log-gate, the M-step, the free-parameter count and the
    observed information follow.
    """

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
            Temperature ``tau`` (the families without one ignore it).

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        return self.compute_logits(np.asarray(X, dtype=np.float64),
                                   GateParams(np.asarray(gate_coef, dtype=np.float64),
                                              np.asarray(gate_intercept, dtype=np.float64),
                                              temperature))

    def compute_logits(self, X, params):
        """:meth:`logits` from :class:`GateParams` (subclasses may override it with a cheaper form).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        params : GateParams

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        return self.logit_derivatives(X, params)[0]

    def log_gate_columns(self, ZT, params, workspace=None):  # noqa: D102 (inherited)
        log_gate = np.array(self.compute_logits(ZT[:-1].T, params).T, order="C")
        # A fresh workspace: the caller's "probs" may be in use.
        log_softmax_columns(log_gate)
        return log_gate

    def initial_gate(self, data, temperature=None):  # noqa: D102 (inherited)
        k, d = data.weighted_resp.shape[0], data.ZT.shape[0] - 1
        start = GateParams(np.zeros((k, d)), np.zeros(k), temperature)
        return self.m_step(data, start)[0]

    # ------------------------------------------------------------------ M-step
    def gate_objective(self, data, params):
        """``Q = sum_i sum_j rw_ij log g_ij`` at ``params``.

        Parameters
        ----------
        data : GateData
        params : GateParams

        Returns
        -------
        float
        """
        log_gate = self.log_gate_columns(data.ZT, params)
        used = data.weighted_resp > 0
        return float(np.sum(data.weighted_resp[used] * log_gate[used]))

    def gate_derivatives(self, data, params, layout):
        """``Q``, its gradient and Hessian in the packed parameters of ``layout``.

        Parameters
        ----------
        data : GateData
        params : GateParams
        layout : GateLayout

        Returns
        -------
        objective : float
        grad : ndarray of shape (layout.size,)
        hess : ndarray of shape (layout.size, layout.size)
        """
        X = data.X
        rw = data.weighted_resp.T
        learn = layout.tau_idx is not None
        logits, d_coef, d_intercept, d_tau, curvature = self.logit_derivatives(X, params, learn)
        log_gate = np.array(logits.T, order="C")
        log_softmax_columns(log_gate)
        gate = np.exp(log_gate.T)
        row_total = data.row_total
        used = rw > 0
        objective = float(np.sum(rw[used] * log_gate.T[used]))
        resid = rw - gate * row_total[:, None]  # dQ / ds_ij
        E = layout.jacobian(d_coef, d_intercept, d_tau)
        n, k, p = E.shape
        grad = np.einsum("ij,ijp->p", resid, E)
        E_bar = np.einsum("ij,ijp->ip", gate, E)
        hess = -(_gram(E.reshape(n * k, p), (row_total[:, None] * gate).ravel())
                 - _gram(E_bar, row_total))
        if curvature is not None:
            hess += layout.curvature_matrix(curvature(resid))
        return objective, grad, 0.5 * (hess + hess.T)

    def m_step(self, data, params, *, tol=1e-10):  # noqa: D102 (inherited)
        k, d = data.weighted_resp.shape[0], data.ZT.shape[0] - 1
        layout = GateLayout(self, k, d, data.learn_temperature)
        held_tau = params.temperature
        vector = layout.pack(params)
        objective, grad, hess = self.gate_derivatives(data, params, layout)
        for _ in range(data.max_iter):
            step = clipped_newton_direction(grad, hess)

            def evaluate(t, start=vector, step=step):
                candidate = start + t * step
                return self.gate_objective(data, layout.unpack(candidate, held_tau)), candidate

            accepted = backtrack(evaluate, objective)
            if accepted is None:
                break
            value, vector = accepted
            gain = value - objective
            objective = value
            if gain <= tol * (1.0 + abs(value)):
                break
            objective, grad, hess = self.gate_derivatives(
                data, layout.unpack(vector, held_tau), layout)
        return layout.unpack(vector, held_tau), None
