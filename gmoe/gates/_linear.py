r"""The linear-logit softmax gate's passes and Newton ascent, on expert-major arrays.

Shared by the families whose logits are ``theta_j^T z`` (``z = (x, 1)``): softmax,
temperature (on ``gamma = theta / tau``) and top-K (with the active sets held). The gate
objective

.. math::

    Q(\theta) = \sum_i \sum_j rw_{ij} \log g_j(z_i; \theta),\qquad rw_{ij} = w_i r_{ij},

is concave in the free rows of ``theta`` (the reference row is pinned to 0): Newton with
the exact Hessian, step halving and a warm start never decreases it. One pass over the
rows gives ``Q``, its gradient and its information: :func:`gate_pass` on complete
expert-major arrays, :func:`gate_statistics` block by block (:func:`gate_block`, summed by
a block source of :mod:`gmoe._blocks` in a fixed block order); :func:`gate_objective` gives
``Q`` alone, what the last Newton step's acceptance needs.
"""

import numpy as np

from .. import _kernels
from .._blocks import unpack_upper, weighted_gram_upper
from .._expert_major import Workspace, exp_into, exponentiate_shifted, log_softmax_columns
from .base import backtrack, solve_newton_direction

# Relative size of the rounding error of a computed Q (a sum of non-positive terms).
_ROUNDOFF_GAIN = 4 * np.finfo(np.float64).eps


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
        probs = exp_into(log_gate, workspace.get("probs", log_gate.shape), workspace)
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
                                  max_iter=20, tol=1e-10, workspace=None, log_gate=None,
                                  directions=None):
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
    directions : ndarray of shape (len(free) * (n_features + 1), m), optional
        A basis of the moves allowed (of the free rows of ``theta``, flattened row by
        row): each Newton step maximises the quadratic model of ``Q`` over their span.
        By default every move is allowed.

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
        if directions is None:
            step = solve_newton_direction(info, grad)
        else:
            step = directions @ solve_newton_direction(directions.T @ info @ directions,
                                                       directions.T @ grad)
        step = step.reshape(len(free), -1)
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


# ------------------------------------------------------------------ block by block
def _shifted_logits(block, theta):
    """A block's logits ``theta z`` less their column maximum, and the maximum's row.

    Experts held out (``block.inactive``) get ``-inf``. Both arrays live in the block's
    workspace (``"gate_shifted"``, ``"gate_arg"``). Also returns how many entries' ``exp``
    underflows (``-inf`` included).
    """
    workspace = block.workspace
    n_experts, n_rows = theta.shape[0], block.ZT.shape[1]
    shifted = workspace.get("gate_shifted", (n_experts, n_rows))
    np.matmul(theta, block.ZT, out=shifted)
    if block.inactive is not None:
        np.copyto(shifted, -np.inf, where=block.inactive)
    col_max = workspace.get("gate_max", (n_rows,))
    arg = workspace.get("gate_arg", (n_rows,), np.int64)
    n_underflow = _kernels.shift_by_column_max_into(shifted, col_max, arg)
    return shifted, arg, n_underflow


def gate_block(block, theta, free, want_info):
    """The gate objective's partial sums on one block of rows.

    Parameters
    ----------
    block : gmoe._blocks.Block
        Reads ``ZT``, ``rw`` and ``inactive``.
    theta : ndarray of shape (n_experts, n_cols)
    free : ndarray of int64
    want_info : bool

    Returns
    -------
    objective : float
    grad : ndarray of shape (len(free), n_cols)
    info : ndarray of shape (len(free) * (len(free) + 1) // 2, n_cols * (n_cols + 1) // 2) or None
        Upper triangles of the information's blocks, for the pairs of free experts
        ``a <= b`` in row-major order (see :func:`gmoe._blocks.weighted_gram_upper`).
    """
    workspace = block.workspace
    ZT = block.ZT
    n_experts, n_rows = theta.shape[0], ZT.shape[1]
    n_free = free.shape[0]
    shifted, arg, n_underflow = _shifted_logits(block, theta)
    probs = workspace.get("gate_probs", (n_experts, n_rows))
    log_rest = workspace.get("gate_rest", (n_rows,))
    exponentiate_shifted(shifted, arg, n_underflow, log_rest, probs, workspace, normalise=True)
    np.log1p(log_rest, out=log_rest)
    row_total = workspace.get("gate_row_total", (n_rows,))
    resid = workspace.get("gate_resid", (n_free, n_rows))
    weights = workspace.get("gate_info_weights", (n_free * (n_free + 1) // 2, n_rows))
    objective = _kernels.gate_terms_into(block.rw, shifted, log_rest, probs, free, want_info,
                                         row_total, resid, weights)
    grad = resid @ ZT.T
    info = weighted_gram_upper(weights, ZT, workspace) if want_info else None
    return objective, grad, info


def gate_objective_block(block, theta):
    """The gate objective ``Q`` alone on one block of rows (no gradient, no information).

    What a Newton step's acceptance needs: the logits, their column maximum, ``exp`` and
    each column's ``log1p(rest)``, then ``sum rw_ij (s_ij - log1p(rest_i))``.

    Parameters
    ----------
    block : gmoe._blocks.Block
        Reads ``ZT``, ``rw`` and ``inactive``.
    theta : ndarray of shape (n_experts, n_cols)

    Returns
    -------
    float
    """
    workspace = block.workspace
    n_experts, n_rows = theta.shape[0], block.ZT.shape[1]
    shifted, arg, n_underflow = _shifted_logits(block, theta)
    scratch = workspace.get("gate_probs", (n_experts, n_rows))
    log_rest = workspace.get("gate_rest", (n_rows,))
    exponentiate_shifted(shifted, arg, n_underflow, log_rest, scratch, workspace,
                         normalise=False)
    np.log1p(log_rest, out=log_rest)
    return _kernels.weighted_log_softmax_sum(block.rw, shifted, log_rest)


def gate_objective(blocks, theta):
    """The gate objective ``Q`` at ``theta``, summed over a block source in block order.

    Parameters
    ----------
    blocks : block source of :mod:`gmoe._blocks`
    theta : ndarray of shape (n_experts, n_cols)

    Returns
    -------
    float
    """
    return float(blocks.reduce(gate_objective_block,
                               np.ascontiguousarray(theta, dtype=np.float64)))


def gate_block_sums(block, log_gate, free):
    """:func:`gate_block` at the E-step's gate, from its log-gate, as an E-step statistic.

    Parameters
    ----------
    block : gmoe._blocks.Block
        Reads ``ZT``, the new ``rw`` and ``gate_probs`` (``exp(log_gate)`` when None).
    log_gate : ndarray of shape (n_experts, n_rows)
        The gate's log-gate on the block.
    free : ndarray of int64

    Returns
    -------
    sums : tuple
        ``(objective, grad)``.
    gram_weights : ndarray
        The information's weights (the pass appends their Gram matrices).
    """
    workspace = block.workspace
    n_experts, n_rows = log_gate.shape
    n_free = free.shape[0]
    probs = block.gate_probs
    if probs is None:
        probs = exp_into(log_gate, workspace.get("gate_probs", (n_experts, n_rows)), workspace)
    no_rest = workspace.get("gate_no_rest", (n_rows,))
    no_rest.fill(0.0)
    row_total = workspace.get("gate_row_total", (n_rows,))
    resid = workspace.get("gate_resid", (n_free, n_rows))
    weights = workspace.get("gate_info_weights", (n_free * (n_free + 1) // 2, n_rows))
    objective = _kernels.gate_terms_into(block.rw, log_gate, no_rest, probs, free, True,
                                         row_total, resid, weights)
    return (objective, resid @ block.ZT.T), weights


def _assemble(sums, n_cols, n_free):
    """``(objective, grad, info)`` from the summed partials of :func:`gate_block`."""
    objective, grad, upper = sums
    info = None
    if upper is not None:
        pair_blocks = unpack_upper(upper, n_cols)
        info = np.empty((n_free * n_cols, n_free * n_cols))
        r = 0
        for a in range(n_free):
            for b in range(a, n_free):
                info[a * n_cols:(a + 1) * n_cols, b * n_cols:(b + 1) * n_cols] = pair_blocks[r]
                info[b * n_cols:(b + 1) * n_cols, a * n_cols:(a + 1) * n_cols] = pair_blocks[r]
                r += 1
    return float(objective), grad.ravel(), info


def gate_statistics(blocks, theta, free, want_info=True):
    """``Q``, its gradient and (optionally) its information, summed over a block source.

    The formulas of :func:`gate_pass`, block by block; the partial sums are added in
    block order, so the result does not depend on the number of threads.

    Parameters
    ----------
    blocks : block source of :mod:`gmoe._blocks`
        The rows, with their weighted responsibilities (zero wherever ``inactive``).
    theta : ndarray of shape (n_experts, n_cols)
    free : ndarray of int
        The experts (rows of ``theta``) whose gradient and information are wanted.
    want_info : bool, default=True

    Returns
    -------
    objective : float
    grad : ndarray of shape (len(free) * n_cols,)
    info : ndarray of shape (len(free) * n_cols, len(free) * n_cols) or None
    """
    theta = np.ascontiguousarray(theta, dtype=np.float64)
    free = np.asarray(free, dtype=np.int64)
    return _assemble(blocks.reduce(gate_block, theta, free, want_info), theta.shape[1],
                     len(free))


def maximise_softmax_gate(theta, blocks, free, *, max_iter=20, tol=1e-10, statistics=None):
    """Newton ascent of the gate objective ``Q`` from ``theta``, over a block source.

    Each Newton step costs one pass over the rows (:func:`gate_statistics`): the
    candidate's ``Q`` decides acceptance, and the same pass gives the gradient and
    information of the next step; the last step's pass computes ``Q`` alone
    (:func:`gate_objective`).

    Parameters
    ----------
    theta : ndarray of shape (n_experts, n_features + 1)
    blocks : block source of :mod:`gmoe._blocks`
        The rows and their weighted responsibilities.
    free : ndarray of int
    max_iter : int, default=20
    tol : float, default=1e-10
    statistics : tuple, optional
        :func:`gate_block_sums` at ``theta`` summed over the blocks (the E-step's pass
        computes them): they save the first pass.

    Returns
    -------
    ndarray of shape (n_experts, n_features + 1)
    """
    theta = np.array(theta, dtype=np.float64, copy=True)
    if len(free) == 0 or max_iter <= 0:
        return theta
    if statistics is not None:
        objective, grad, info = _assemble(statistics, theta.shape[1], len(free))
    else:
        objective, grad, info = gate_statistics(blocks, theta, free, True)
    for iteration in range(max_iter):
        step = solve_newton_direction(info, grad)
        # The quadratic model's gain of the full step, grad.step / 2, within Q's rounding
        # error: no evaluation can confirm a rise, and step halving would spend up to 40
        # passes over the rows finding that out.
        if 0.5 * float(grad @ step) <= _ROUNDOFF_GAIN * (1.0 + abs(objective)):
            break
        step = step.reshape(len(free), -1)
        # The information at the new point is needed only if another step follows.
        want_info = iteration + 1 < max_iter

        def evaluate(t, start=theta, step=step, want_info=want_info):
            candidate = start.copy()
            candidate[free] += t * step
            if not want_info:
                # The last step: its Q decides acceptance, nothing else is needed.
                return gate_objective(blocks, candidate), None, None, candidate
            return (*gate_statistics(blocks, candidate, free, want_info), candidate)

        accepted = backtrack(evaluate, objective)
        if accepted is None:
            break
        value, grad, info, theta = accepted
        gain = value - objective
        objective = value
        if gain <= tol * (1.0 + abs(objective)) or info is None:
            break
    return theta
