"""The observed log-likelihood, its score and the rows of its Hessian's outer products.

With ``l_ij = log g_ij + log f_ij`` (gate and expert density of row ``i``, expert ``j``),
``s_ij`` its gradient and ``r_ij`` the responsibilities, the Hessian of
``L = sum_i w_i log sum_j g_ij f_ij`` is

    sum_i w_i [ sum_j r_ij D2 l_ij + sum_j r_ij s_ij s_ij^T - sbar_i sbar_i^T ],
    sbar_i = sum_j r_ij s_ij.

For a gate whose logits ``eta_ij`` have the Jacobian ``E_ij`` (the gate block of the
parameters), ``s_ij = (E_ij - Ebar_i, the expert's own gradient in block j)`` with
``Ebar_i = sum_j g_ij E_ij``, and the gate block of ``D2 l_ij`` is ``D2 eta_ij - sum_l
g_il D2 eta_il - sum_l g_il (E_il - Ebar_i)(E_il - Ebar_i)^T``.

This kernel writes, for a block of rows, the rows of three matrices whose Gram matrices
give everything but the second derivatives of the logits themselves and of the experts'
log-densities (the caller adds those: they belong to the families)::

    S[i k + j] = sqrt(w_i r_ij) s_ij          (n k, p)
    M[i]       = sqrt(w_i) sbar_i             (n, p)
    G[i k + j] = sqrt(w_i g_ij) (E_ij - Ebar_i)   (n k, pg)

so that the sum above, less those second derivatives, is ``S^T S - M^T M - G^T G`` (the
last in the gate block): three products that BLAS computes at full speed, where a per-row
accumulation of outer products is bound by its loads and stores.
"""

import math

import numba
import numpy as np

from ._config import NJIT


@numba.njit(**NJIT)
def information_rows_into(E, log_gate, log_dens, expert_grad, expert_offset, weight,
                          resp, score, S, M, G):
    """Write one block of rows' ``S``, ``M`` and ``G``, add to the score, return ``L``.

    Parameters
    ----------
    E : float64 (n, k, pg), the logits' Jacobian in the gate block
    log_gate : float64 (n, k), normalised log-gates
    log_dens : float64 (n, k), the experts' log-densities
    expert_grad : float64 (n, k, q), each expert's log-density gradient in its own block
    expert_offset : int64 (k,), index of expert ``j``'s first parameter
    weight : float64 (n,), sample weights (>= 0)
    resp : float64 (n, k), written: the responsibilities
    score : float64 (p,), added to
    S : float64 (n k, p), written
    M : float64 (n, p), written
    G : float64 (n k, pg), written

    Returns
    -------
    float
        ``sum_i w_i log sum_j g_ij f_ij`` over the block (``-inf`` or NaN propagate).
    """
    n, k, pg = E.shape
    q = expert_grad.shape[2]
    p = score.shape[0]
    gate = np.empty(k)
    e_bar = np.empty(pg)
    log_lik = 0.0
    for i in range(n):
        w = weight[i]
        top = -np.inf
        for j in range(k):
            top = max(top, log_gate[i, j] + log_dens[i, j])
        total = 0.0
        for j in range(k):
            resp[i, j] = math.exp(log_gate[i, j] + log_dens[i, j] - top)
            total += resp[i, j]
        log_lik += w * (top + math.log(total))
        for a in range(pg):
            e_bar[a] = 0.0
        for j in range(k):
            resp[i, j] /= total
            gate[j] = math.exp(log_gate[i, j])
            for a in range(pg):
                e_bar[a] += gate[j] * E[i, j, a]
        for a in range(p):
            M[i, a] = 0.0
        root_w = math.sqrt(w)
        for j in range(k):
            row = i * k + j
            r = resp[i, j]
            root_wr = math.sqrt(w * r)
            root_wg = math.sqrt(w * gate[j])
            off = expert_offset[j]
            for a in range(p):
                S[row, a] = 0.0
            for a in range(pg):
                dev = E[i, j, a] - e_bar[a]
                S[row, a] = root_wr * dev
                G[row, a] = root_wg * dev
                M[i, a] += r * dev
            for t in range(q):
                S[row, off + t] = root_wr * expert_grad[i, j, t]
                M[i, off + t] += r * expert_grad[i, j, t]
        for a in range(p):
            score[a] += w * M[i, a]
            M[i, a] *= root_w
    return log_lik
