"""The observed log-likelihood, its score and the first part of its Hessian, in one pass.

With ``l_ij = log g_ij + log f_ij`` (gate and expert density of row ``i``, expert ``j``),
``s_ij`` its gradient and ``r_ij`` the responsibilities, the Hessian of
``L = sum_i w_i log sum_j g_ij f_ij`` is

    sum_i w_i [ sum_j r_ij D2 l_ij + sum_j r_ij s_ij s_ij^T - sbar_i sbar_i^T ],
    sbar_i = sum_j r_ij s_ij.

For a gate whose logits ``eta_ij`` have the Jacobian ``E_ij`` (the gate block of the
parameters), ``s_ij = (E_ij - Ebar_i, the expert's own gradient in block j)`` with
``Ebar_i = sum_j g_ij E_ij``, and the gate block of ``D2 l_ij`` is ``D2 eta_ij - sum_l
g_il D2 eta_il - sum_l g_il (E_il - Ebar_i)(E_il - Ebar_i)^T``. This kernel adds, per row,
everything but the second derivatives of the logits themselves and of the experts' log
densities (the caller adds those: they belong to the families): the outer products and the
gate's ``-sum_l g_il (E_il - Ebar_i)(E_il - Ebar_i)^T``. ``s_ij`` is zero outside the gate
block and expert ``j``'s block, so each term costs only those blocks. Only the upper
triangle of the Hessian is written.
"""

import math

import numba
import numpy as np

from ._config import NJIT


@numba.njit(**NJIT)
def information_terms_into(E, log_gate, log_dens, expert_grad, expert_offset, weight,
                           resp, score, hess_upper):
    """Add one block of rows' score and outer-product Hessian terms; return their ``L``.

    Parameters
    ----------
    E : float64 (n, k, pg), the logits' Jacobian in the gate block
    log_gate : float64 (n, k), normalised log-gates
    log_dens : float64 (n, k), the experts' log-densities
    expert_grad : float64 (n, k, q), each expert's log-density gradient in its own block
    expert_offset : int64 (k,), index of expert ``j``'s first parameter
    weight : float64 (n,), sample weights
    resp : float64 (n, k), written: the responsibilities
    score : float64 (p,), added to
    hess_upper : float64 (p, p), added to (upper triangle only)

    Returns
    -------
    float
        ``sum_i w_i log sum_j g_ij f_ij`` over the block (``-inf`` or NaN propagate).
    """
    n, k, pg = E.shape
    q = expert_grad.shape[2]
    p = score.shape[0]
    e_bar = np.empty(pg)
    s_bar = np.empty(p)
    dev = np.empty(pg)
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
        for j in range(k):
            resp[i, j] /= total
        for a in range(pg):
            e_bar[a] = 0.0
        for j in range(k):
            g = math.exp(log_gate[i, j])
            for a in range(pg):
                e_bar[a] += g * E[i, j, a]
        for a in range(p):
            s_bar[a] = 0.0
        for j in range(k):
            r = resp[i, j]
            g = math.exp(log_gate[i, j])
            # sum_j (w r_ij - w g_ij) (E_ij - Ebar)(E_ij - Ebar)^T: the outer products of
            # the scores' gate parts and the gate's own curvature, in one term.
            c = w * (r - g)
            wr = w * r
            off = expert_offset[j]
            for a in range(pg):
                dev[a] = E[i, j, a] - e_bar[a]
                s_bar[a] += r * dev[a]
            for t in range(q):
                s_bar[off + t] += r * expert_grad[i, j, t]
            for a in range(pg):
                da = dev[a]
                for b in range(a, pg):
                    hess_upper[a, b] += c * da * dev[b]
                for t in range(q):
                    hess_upper[a, off + t] += wr * da * expert_grad[i, j, t]
            for t in range(q):
                gt = wr * expert_grad[i, j, t]
                for u in range(t, q):
                    hess_upper[off + t, off + u] += gt * expert_grad[i, j, u]
        for a in range(p):
            sa = w * s_bar[a]
            score[a] += sa
            for b in range(a, p):
                hess_upper[a, b] -= sa * s_bar[b]
    return log_lik
