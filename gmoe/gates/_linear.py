r"""The linear-logit softmax gate's passes and Newton ascent, on expert-major arrays.

Shared by the families whose logits are ``theta_j^T z`` (``z = (x, 1)``): softmax,
temperature (on ``gamma = theta / tau``) and top-K (with the active sets held). The gate
objective

.. math::

    Q(\theta) = \sum_i \sum_j rw_{ij} \log g_j(z_i; \theta),\qquad rw_{ij} = w_i r_{ij},

is concave in the free rows of ``theta`` (the reference row is pinned to 0): Newton with
the exact Hessian, step halving and a warm start never decreases it. One pass over the
rows (:func:`gate_pass`) gives ``Q``, its gradient and its information.
"""

import numpy as np

from .. import _kernels
from .._expert_major import Workspace, log_softmax_columns
from .base import backtrack, solve_newton_direction


def linear_log_gate_columns(ZT, theta, inactive=None, workspace=None, *,
                            log_gate_name="log_gate"):
    """Log-gate and gate probabilities of the linear-logit softmax gate, expert-major.

    Parameters
    ----------
    ZT : ndarray of shape (n_cols, n_samples)
        :func:`transposed_design` of ``X``.
    theta : ndarray of shape (n_experts, n_cols)
        Slopes and intercept (last column) of every expert.
    inactive : ndarray of bool of shape (n_experts, n_samples), optional
        Experts held out of the softmax (top-K): log-gate ``-inf``, probability 0.
    workspace : Workspace, optional
        Where the outputs and temporaries live; a fresh one by default.
    log_gate_name : str, default="log_gate"
        The workspace name of the returned log-gate.

    Returns
    -------
    log_gate, probs : ndarray of shape (n_experts, n_samples)
    """
    workspace = Workspace() if workspace is None else workspace
    log_gate = workspace.get(log_gate_name, (theta.shape[0], ZT.shape[1]))
    np.matmul(theta, ZT, out=log_gate)
    if inactive is not None:
        np.copyto(log_gate, -np.inf, where=inactive)
    probs, _ = log_softmax_columns(log_gate, workspace)
    return log_gate, probs


def gate_pass(ZT, theta, weighted_resp, row_total, free, inactive=None, want_info=True,
              workspace=None, *, log_gate_name="log_gate", log_gate=None):
    """Gate objective ``Q``, its gradient and (optionally) information, in one pass.

    ``Q(theta) = sum_ij rw_ij log g_ij``; its gradient over the free experts is
    ``sum_i (rw_ij - t_i g_ij) z_i`` and its information (minus the Hessian) has blocks
    ``sum_i t_i g_ij (delta_jl - g_il) z_i z_i^T``, with ``t_i = sum_j rw_ij``.

    Parameters
    ----------
    ZT : ndarray of shape (n_cols, n_samples)
        :func:`transposed_design` of ``X``.
    theta : ndarray of shape (n_experts, n_cols)
    weighted_resp : ndarray of shape (n_experts, n_samples), C-contiguous
        Sample weight times responsibility; zero wherever ``inactive``.
    row_total : ndarray of shape (n_samples,)
        ``weighted_resp.sum(axis=0)``.
    free : ndarray of int
        The experts (rows of ``theta``) whose gradient and information are wanted.
    inactive : ndarray of bool of shape (n_experts, n_samples), optional
    want_info : bool, default=True
    workspace : Workspace, optional
        Where the outputs and temporaries live; a fresh one by default.
    log_gate_name : str, default="log_gate"
        The workspace name of the returned log-gate.
    log_gate : ndarray of shape (n_experts, n_samples), optional
        The log-gate at ``theta`` when it is already known (the E-step's): the pass then
        only exponentiates it, and returns it as it is.

    Returns
    -------
    objective : float
    log_gate : ndarray of shape (n_experts, n_samples)
    grad : ndarray of shape (len(free) * n_cols,)
    info : ndarray of shape (len(free) * n_cols, len(free) * n_cols) or None
    """
    workspace = Workspace() if workspace is None else workspace
    n_cols, n_samples = ZT.shape
    if log_gate is None:
        log_gate, probs = linear_log_gate_columns(ZT, theta, inactive, workspace,
                                                  log_gate_name=log_gate_name)
    else:
        probs = np.exp(log_gate, out=workspace.get("probs", log_gate.shape))
    parts = workspace.get("parts", (n_samples,))
    _kernels.weighted_column_sums_into(weighted_resp, log_gate, parts)
    objective = float(np.sum(parts))
    # Rows of the free experts: t_i g_ij, then rw_ij - t_i g_ij.
    weighted_probs = workspace.get("weighted_probs", (len(free), n_samples))
    residual = workspace.get("gate_residual", (len(free), n_samples))
    for a, j in enumerate(free):
        np.multiply(probs[j], row_total, out=weighted_probs[a])
        np.subtract(weighted_resp[j], weighted_probs[a], out=residual[a])
    grad = (residual @ ZT.T).ravel()
    info = None
    if want_info:
        info = np.empty((len(free) * n_cols, len(free) * n_cols))
        h = workspace.get("info_weight", (n_samples,))
        weighted_design = workspace.get("weighted_design", (n_cols, n_samples))
        for a, j in enumerate(free):
            for b in range(a, len(free)):
                other = free[b]
                # h = t g_j (delta_jl - g_l)
                if other == j:
                    np.subtract(1.0, probs[other], out=h)
                else:
                    np.negative(probs[other], out=h)
                h *= weighted_probs[a]
                np.multiply(ZT, h, out=weighted_design)
                block = weighted_design @ ZT.T
                info[a * n_cols:(a + 1) * n_cols, b * n_cols:(b + 1) * n_cols] = block
                info[b * n_cols:(b + 1) * n_cols, a * n_cols:(a + 1) * n_cols] = block.T
        # BLAS rounds the (u, v) and (v, u) entries of a diagonal block differently.
        info += info.T
        info *= 0.5
    return objective, log_gate, grad, info


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
