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

from .. import _kernels
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
        Whether ``log tau`` is a parameter (only for families that learn it, and never
        for a lone expert, whose gate is 1 at any ``tau``).
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
        if learn_temperature and family.learns_temperature and n_experts > 1:
            self.tau_idx = pos
            pos += 1
        self.size = pos

    def expert_rows(self, j):
        """Where expert ``j``'s logit derivatives go in the packed vector.

        Parameters
        ----------
        j : int
            The expert.

        Returns
        -------
        slopes : ndarray of int
            The free slopes' features.
        positions : ndarray of int
            The packed positions of the free slopes, then of the free intercept, then of
            ``log tau`` (the rows of :meth:`SmoothGatingFamily.gate_derivatives`' local
            design of expert ``j``).
        """
        slopes = np.flatnonzero(self.coef_idx[j] >= 0)
        positions = list(self.coef_idx[j, slopes])
        if self.intercept_idx[j] >= 0:
            positions.append(self.intercept_idx[j])
        if self.tau_idx is not None:
            positions.append(self.tau_idx)
        return slopes, np.array(positions, dtype=np.intp)

    def pack(self, params):
        """The free parameters of ``params`` as a vector (``log tau`` last, if free).

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        ndarray of shape (size,)
        """
        vec = np.empty(self.size)
        free = self.coef_idx >= 0
        vec[self.coef_idx[free]] = params.coef[free]
        free = self.intercept_idx >= 0
        vec[self.intercept_idx[free]] = params.intercept[free]
        if self.tau_idx is not None:
            vec[self.tau_idx] = np.log(params.temperature)
        return vec

    def unpack(self, vec, temperature=None):
        """:class:`GateParams` from a vector; pinned entries are 0, a held ``tau`` is kept.

        Parameters
        ----------
        vec : ndarray of shape (size,)
        temperature : float or None, default=None
            The held temperature (when ``log tau`` is not in the vector).

        Returns
        -------
        GateParams
        """
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
        """The logits' Jacobian in packed form.

        Parameters
        ----------
        d_coef, d_intercept, d_log_temperature
            As returned by :meth:`SmoothGatingFamily.logit_derivatives`.

        Returns
        -------
        ndarray of shape (n_samples, n_experts, size)
        """
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
        """Assemble the curvature blocks of :meth:`SmoothGatingFamily.logit_derivatives`.

        Parameters
        ----------
        blocks : tuple
            ``(coef_coef, coef_tau, intercept_tau, tau_tau)``.

        Returns
        -------
        ndarray of shape (size, size)
        """
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

    def compute_logits_columns(self, ZT, params, workspace=None):
        """:meth:`compute_logits`, expert-major: shape (n_experts, n_samples), C-contiguous.

        The default transposes :meth:`compute_logits`; a subclass may compute it directly.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        params : GateParams
        workspace : Workspace, optional
            Where the result may live (valid until the next call with it).

        Returns
        -------
        ndarray of shape (n_experts, n_samples)
        """
        return np.array(self.compute_logits(ZT[:-1].T, params).T, order="C")

    def logit_derivatives_columns(self, ZT, params, learn_temperature=False, workspace=None):
        """:meth:`logit_derivatives`, expert-major (the M-step's form).

        The default transposes :meth:`logit_derivatives`; a subclass may compute it directly.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        params : GateParams
        learn_temperature : bool, default=False
        workspace : Workspace, optional
            Where the results may live (valid until the next call with it).

        Returns
        -------
        logits : ndarray of shape (n_experts, n_samples)
        d_coef : ndarray of shape (n_experts, n_features, n_samples)
            ``d logits_j / d coef_jm`` in ``d_coef[j, m]``.
        d_intercept : ndarray of shape (n_experts, n_samples)
        d_log_temperature : ndarray of shape (n_experts, n_samples) or None
        curvature : callable or None
            As :meth:`logit_derivatives`' but for weights ``c`` of shape
            (n_experts, n_samples).
        """
        logits, d_coef, d_intercept, d_tau, curvature = self.logit_derivatives(
            ZT[:-1].T, params, learn_temperature)
        columns = None if curvature is None else (lambda c: curvature(np.asarray(c).T))
        return (np.array(logits.T, order="C"), np.array(np.transpose(d_coef, (1, 2, 0)),
                                                        order="C"),
                np.array(d_intercept.T, order="C"),
                None if d_tau is None else np.array(d_tau.T, order="C"), columns)

    def log_gate_columns(self, ZT, params, workspace=None):  # noqa: D102 (inherited)
        logits = self.compute_logits_columns(ZT, params, workspace=workspace)
        if workspace is None:
            log_gate = logits
        else:  # where the linear gates' log-gate lives too
            log_gate = workspace.get("log_gate", logits.shape)
            np.copyto(log_gate, logits)
        log_softmax_columns(log_gate, workspace)
        return log_gate

    def initial_gate(self, data, temperature=None):  # noqa: D102 (inherited)
        k, d = data.weighted_resp.shape[0], data.ZT.shape[0] - 1
        start = GateParams(np.zeros((k, d)), np.zeros(k), temperature)
        return self.m_step(data, start)[0]

    # ------------------------------------------------------------------ M-step
    def _objective_columns(self, data, logits, name):
        """``Q`` from expert-major logits (overwritten by the log-gate), and the gate."""
        workspace = data.workspace
        log_gate = workspace.get(name, logits.shape)
        np.copyto(log_gate, logits)
        probs, _ = log_softmax_columns(log_gate, workspace)
        parts = workspace.get("gate_parts", (logits.shape[1],))
        _kernels.weighted_column_sums_into(data.weighted_resp, log_gate, parts)
        return float(np.sum(parts)), probs

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
        logits = self.compute_logits_columns(data.ZT, params, workspace=data.workspace)
        return self._objective_columns(data, logits, "gate_trial_log_gate")[0]

    def gate_derivatives(self, data, params, layout):
        """``Q``, its gradient and Hessian in the packed parameters of ``layout``.

        Expert-major: the logits of expert ``j`` depend on its own parameters (and on
        ``log tau``) only, through the rows of its local design ``D_j`` (their
        derivatives, shape (p_j, n_samples)). With ``t_i = sum_j rw_ij`` and the gate
        ``g``, the gradient is ``sum_j D_j (rw_j - t g_j)`` and the Gauss-Newton part of
        the Hessian is ``-(sum_j D_j diag(t g_j) D_j^T - Ebar diag(t) Ebar^T)``, with
        ``Ebar = sum_j D_j diag(g_j)`` in packed rows: weighted matrix products, no
        (n_samples, n_experts, n_parameters) Jacobian. The logits' curvature adds the rest.

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
        workspace = data.workspace
        learn = layout.tau_idx is not None
        logits, d_coef, d_intercept, d_tau, curvature = self.logit_derivatives_columns(
            data.ZT, params, learn, workspace=workspace)
        objective, probs = self._objective_columns(data, logits, "gate_log_gate")
        n_experts, n_samples = probs.shape
        # t g and rw - t g (dQ / d logits).
        weighted = np.multiply(probs, data.row_total,
                               out=workspace.get("gate_weighted_probs", probs.shape))
        resid = np.subtract(data.weighted_resp, weighted,
                            out=workspace.get("gate_residual", probs.shape))
        grad = np.zeros(layout.size)
        info = np.zeros((layout.size, layout.size))
        # info = sum_i t_i (sum_j g_ij E_ij E_ij^T - Ebar_i Ebar_i^T), Ebar_i = sum_j g_ij E_ij:
        # one weighted product per expert, and one for Ebar (packed rows, shape (p, n)).
        e_bar = workspace.get("gate_mean_jacobian", (layout.size, n_samples))
        e_bar[:] = 0.0
        for j in range(n_experts):
            slopes, where = layout.expert_rows(j)
            if where.size == 0:
                continue
            design = workspace.get(f"gate_design_{j}", (where.size, n_samples))
            np.take(d_coef[j], slopes, axis=0, out=design[:slopes.size])
            row = slopes.size
            if layout.intercept_idx[j] >= 0:
                design[row] = d_intercept[j]
                row += 1
            if learn:
                design[row] = d_tau[j]
            grad[where] += design @ resid[j]
            scaled = np.multiply(design, weighted[j],
                                 out=workspace.get("gate_scaled_design", design.shape))
            info[np.ix_(where, where)] += scaled @ design.T
            np.multiply(design, probs[j], out=scaled)
            for row, position in enumerate(where):
                e_bar[position] += scaled[row]
        scaled = np.multiply(e_bar, data.row_total,
                             out=workspace.get("gate_scaled_mean", e_bar.shape))
        info -= scaled @ e_bar.T
        hess = -info
        if curvature is not None:
            hess += layout.curvature_matrix(curvature(resid))
        return objective, grad, 0.5 * (hess + hess.T)

    def m_step(self, data, params, *, tol=1e-10):  # noqa: D102 (inherited)
        k, d = data.weighted_resp.shape[0], data.ZT.shape[0] - 1
        layout = GateLayout(self, k, d, data.learn_temperature)
        if layout.size == 0:  # a lone expert: its gate is 1, nothing to fit
            return params, None
        held_tau = params.temperature
        vector = layout.pack(params)
        objective, grad, hess = self.gate_derivatives(data, params, layout)
        for iteration in range(data.max_iter):
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
            if gain <= tol * (1.0 + abs(value)) or iteration + 1 == data.max_iter:
                break
            objective, grad, hess = self.gate_derivatives(
                data, layout.unpack(vector, held_tau), layout)
        return layout.unpack(vector, held_tau), None
