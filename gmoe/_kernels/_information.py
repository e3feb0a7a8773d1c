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


@numba.njit(**NJIT)
def linear_gate_information_weights_into(ZT, y, w, gate, resp, expert_theta, expert_var, free,
                                         start, out_u, out_v, out_weights):
    """Per-row weights whose Gram matrices give the score and Hessian (linear-logit gates).

    For a softmax gate whose logits are ``theta_j^T z`` (``z = (x, 1)``) and Gaussian
    linear experts, every block of the Hessian of ``L`` is a weighted sum of ``z z^T``
    (or of ``z``, or of 1, which are the last column and corner of ``z z^T``), and so is
    the score. The parameters come in groups: the gate row of each free expert, each
    expert's coefficients (slopes and intercept), each expert's variance. With ``u_j =
    e_j / nu_j``, ``v_j = (e_j u_j - 1) / (2 nu_j)`` (``e_j = y - mean_j``), the weight of
    the pair of groups ``(A, B)`` in a row is ``w`` times the covariance, under the
    responsibilities ``r``, of the two groups' score coefficients, plus the expected second
    derivative:

    ==================  ======================================================
    gate a, gate b      ``r_a (d_ab - r_b) - g_a (d_ab - g_b)``
    gate a, expert j    ``r_j c_j (d_aj - r_a)``, ``c_j`` = ``u_j`` or ``v_j``
    coef j, coef l      ``u_j u_l r_j (d_jl - r_l) - d_jl r_j / nu_j``
    coef j, var l       ``u_j v_l r_j (d_jl - r_l) - d_jl r_j u_j / nu_j``
    var j, var l        ``v_j v_l r_j (d_jl - r_l) + d_jl r_j (1/2 - e_j u_j) / nu_j^2``
    ==================  ======================================================

    and the score's weights are ``w (r_a - g_a)``, ``w r_j u_j``, ``w r_j v_j``.

    Parameters
    ----------
    ZT : float64 (n_cols, n_samples), the design with intercept (last row), transposed
    y, w : float64 (n_samples,)
    gate, resp : float64 (n_experts, n_samples), gate probabilities and responsibilities
    expert_theta : float64 (n_experts, n_cols), the experts' slopes and intercept
    expert_var : float64 (n_experts,)
    free : int64 (n_free,), the experts whose gate row is free
    start : int
        The weights are those of the samples ``start .. start + n_rows``.
    out_u, out_v : float64 (n_experts, n_rows), written: ``u`` and ``v``
    out_weights : float64 (n_pairs + n_groups, n_rows), written
        Groups in the order: gate rows of ``free``, coefficients of each expert,
        variances of each expert; the pairs ``A <= B`` in row-major order of the upper
        triangle, then the score's weight of each group.
    """
    k, n_cols = expert_theta.shape
    n_rows = out_weights.shape[1]
    ZT = ZT[:, start:start + n_rows]
    y = y[start:start + n_rows]
    w = w[start:start + n_rows]
    gate = gate[:, start:start + n_rows]
    resp = resp[:, start:start + n_rows]
    n_free = free.shape[0]
    n_groups = n_free + 2 * k
    for j in range(k):
        u = out_u[j]
        v = out_v[j]
        nu = expert_var[j]
        for i in range(n_rows):
            u[i] = 0.0
        for col in range(n_cols):
            coef = expert_theta[j, col]
            z = ZT[col]
            for i in range(n_rows):
                u[i] += coef * z[i]
        for i in range(n_rows):
            e = y[i] - u[i]
            u[i] = e / nu
            v[i] = (e * u[i] - 1.0) / (2.0 * nu)
    row = 0
    for A in range(n_groups):
        for B in range(A, n_groups):
            out = out_weights[row]
            row += 1
            if B < n_free:  # gate a, gate b
                ja, jb = free[A], free[B]
                same = 1.0 if ja == jb else 0.0
                ra, rb, ga, gb = resp[ja], resp[jb], gate[ja], gate[jb]
                for i in range(n_rows):
                    out[i] = w[i] * (ra[i] * (same - rb[i]) - ga[i] * (same - gb[i]))
            elif A < n_free:  # gate a, coefficients or variance of expert j
                ja = free[A]
                j = (B - n_free) % k
                c = out_u[j] if B < n_free + k else out_v[j]
                same = 1.0 if ja == j else 0.0
                ra, rj = resp[ja], resp[j]
                for i in range(n_rows):
                    out[i] = w[i] * (rj[i] * c[i] * (same - ra[i]))
            else:
                j = (A - n_free) % k
                m = (B - n_free) % k
                same = 1.0 if j == m else 0.0
                rj, rm = resp[j], resp[m]
                nu = expert_var[j]
                uj, vj, um, vm = out_u[j], out_v[j], out_u[m], out_v[m]
                if B < n_free + k:  # coef j, coef m
                    for i in range(n_rows):
                        out[i] = w[i] * (uj[i] * um[i] * rj[i] * (same - rm[i])
                                         - same * rj[i] / nu)
                elif A < n_free + k:  # coef j, var m
                    for i in range(n_rows):
                        out[i] = w[i] * (uj[i] * vm[i] * rj[i] * (same - rm[i])
                                         - same * rj[i] * uj[i] / nu)
                else:  # var j, var m
                    for i in range(n_rows):
                        second = rj[i] * (0.5 - uj[i] * uj[i] * nu) / (nu * nu)
                        out[i] = w[i] * (vj[i] * vm[i] * rj[i] * (same - rm[i])
                                         + same * second)
    for A in range(n_groups):
        out = out_weights[row]
        row += 1
        if A < n_free:
            ja = free[A]
            ra, ga = resp[ja], gate[ja]
            for i in range(n_rows):
                out[i] = w[i] * (ra[i] - ga[i])
        else:
            j = (A - n_free) % k
            c = out_u[j] if A < n_free + k else out_v[j]
            rj = resp[j]
            for i in range(n_rows):
                out[i] = w[i] * (rj[i] * c[i])
