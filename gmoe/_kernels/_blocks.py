"""Kernels of the passes over blocks of rows (``gmoe/_blocks.py``).

A block holds a few thousand rows, so that its arrays stay in the core's cache while a
pass works on it. The kernels here are the non-BLAS parts of those passes: building a
block's transposed design, the products ``z_u z_v`` whose weighted sums are the Gram
matrices, and the per-row weights and sums of the gate's and the experts' statistics.

Sums over the rows of a block run in :data:`LANES` interleaved partial sums, combined in
a fixed order at the end: LLVM vectorises that loop (a single running sum waits on each
addition), and the result is a fixed function of the block's values, so it does not depend
on which thread computes it.
"""

import numba
import numpy as np

from ._config import NJIT

#: Interleaved partial sums of the row reductions.
LANES = 8


@numba.njit(**NJIT)
def design_block_into(X, start, offset, inverse_scale, out):
    """Rows ``start .. start + out.shape[1]`` of ``X``, centred, scaled, transposed, with ones.

    ``out[u, i] = (X[start + i, u] - offset[u]) * inverse_scale[u]`` (the same two
    roundings as numpy's ``(X - offset) * inverse_scale``) and ``out[-1] = 1``; multiplying
    by the reciprocal is a third faster than dividing by the scale.

    Parameters
    ----------
    X : float64 (n_samples, n_features), C-contiguous
    start : int
    offset, inverse_scale : float64 (n_features,)
    out : float64 (n_features + 1, n_rows), written
    """
    n_features = X.shape[1]
    n_rows = out.shape[1]
    if n_features == 1:
        # One feature: X's column is contiguous, and read as such the loop vectorises
        # (a quarter faster than through the 2-D index, whose stride is unknown).
        column = X.reshape(X.shape[0])
        row = out[0]
        m = offset[0]
        s = inverse_scale[0]
        for i in range(n_rows):
            row[i] = (column[start + i] - m) * s
    else:
        # Feature by feature: contiguous writes (strided reads) measured twice as fast.
        for u in range(n_features):
            row = out[u]
            m = offset[u]
            s = inverse_scale[u]
            for i in range(n_rows):
                row[i] = (X[start + i, u] - m) * s
    last = out[n_features]
    for i in range(n_rows):
        last[i] = 1.0


@numba.njit(**NJIT)
def lane_sum(values):
    """Sum of a 1-D array in :data:`LANES` interleaved partial sums (a fixed order)."""
    n = values.shape[0]
    acc = np.zeros(LANES)
    body = n - n % LANES
    for i in range(0, body, LANES):
        for lane in range(LANES):
            acc[lane] += values[i + lane]
    for i in range(body, n):
        acc[i - body] += values[i]
    total = 0.0
    for lane in range(LANES):
        total += acc[lane]
    return total


@numba.njit(**NJIT)
def lane_dot(a, b):
    """``sum_i a_i b_i`` in :data:`LANES` interleaved partial sums (a fixed order)."""
    n = a.shape[0]
    acc = np.zeros(LANES)
    body = n - n % LANES
    for i in range(0, body, LANES):
        for lane in range(LANES):
            acc[lane] += a[i + lane] * b[i + lane]
    for i in range(body, n):
        acc[i - body] += a[i] * b[i]
    total = 0.0
    for lane in range(LANES):
        total += acc[lane]
    return total


@numba.njit(**NJIT)
def weighted_gram_into(weights, height, ZT, offset, slice_rows, weights_buffer,
                       products_buffer, part, out):
    """``out[a]`` = upper triangle of ``sum_i W_ai z_i z_i^T``, a slice of rows at a time.

    ``W`` is the arrays of ``weights`` stacked, then zero rows up to ``height`` (BLAS runs a
    product of fewer than 8 rows one caller thread at a time).

    Each slice's products ``z_u z_v`` (``u <= v``, one row per pair in the row-major order
    of the upper triangle, ``np.triu_indices(n_cols)``) and weights are copied into
    contiguous buffers and multiplied by BLAS (numba's ``np.dot``): ``W @ products.T``. The
    slices' results are added to ``out`` in slice order. One call per block: the whole loop runs
    without the GIL, where a loop in Python took it back a few times per slice and two
    threads waited on each other.

    Parameters
    ----------
    weights : tuple of float64 (m_k, n_rows), C-contiguous
    height : int, at least ``sum m_k``
    ZT : float64 (n_cols, n_samples); ``z_i`` is its column ``offset + i``
    offset, slice_rows : int
    weights_buffer : float64 (height * slice_rows,), scratch
    products_buffer : float64 (n_cols * (n_cols + 1) // 2 * slice_rows,), scratch
    part : float64 (height, n_cols * (n_cols + 1) // 2), scratch
    out : float64 (height, n_cols * (n_cols + 1) // 2), written
    """
    n_rows = weights[0].shape[1]
    n_cols = ZT.shape[0]
    n_pairs = out.shape[1]
    for a in range(height):
        for r in range(n_pairs):
            out[a, r] = 0.0
    for start in range(0, n_rows, slice_rows):
        stop = min(start + slice_rows, n_rows)
        length = stop - start
        # Contiguous (m, length) and (n_pairs, length) views, as BLAS needs them.
        slice_weights = weights_buffer[:height * length].reshape((height, length))
        products = products_buffer[:n_pairs * length].reshape((n_pairs, length))
        a = 0
        for array in weights:
            for b in range(array.shape[0]):
                source = array[b, start:stop]
                target = slice_weights[a]
                for i in range(length):
                    target[i] = source[i]
                a += 1
        for b in range(a, height):
            slice_weights[b, :] = 0.0
        r = 0
        for u in range(n_cols):
            zu = ZT[u, offset + start:offset + stop]
            for v in range(u, n_cols):
                zv = ZT[v, offset + start:offset + stop]
                q = products[r]
                for i in range(length):
                    q[i] = zu[i] * zv[i]
                r += 1
        np.dot(slice_weights, products.T, part)
        for a in range(height):
            for r in range(n_pairs):
                out[a, r] += part[a, r]


@numba.njit(**NJIT)
def weighted_log_softmax_sum(weights, shifted, log_rest):
    """``sum_ji weights_ji (shifted_ji - log_rest_i)``: weights times the log-softmax, summed.

    With ``shifted`` the values less their column maximum and ``log_rest`` the column's
    ``log1p(rest)``, ``shifted - log_rest`` is the log-softmax. Entries of zero weight add
    nothing (an inactive expert's ``-inf`` meets a zero weight). Summed in ``LANES``
    interleaved partial sums, combined in a fixed order.

    Parameters
    ----------
    weights, shifted : float64 (n_experts, n_samples)
    log_rest : float64 (n_samples,)

    Returns
    -------
    float
    """
    n_rows, n_cols = weights.shape
    acc = np.zeros(LANES)
    body = n_cols - n_cols % LANES
    for j in range(n_rows):
        wj = weights[j]
        sj = shifted[j]
        for i in range(0, body, LANES):
            for lane in range(LANES):
                w = wj[i + lane]
                term = w * (sj[i + lane] - log_rest[i + lane])
                acc[lane] += 0.0 if w == 0.0 else term
        for i in range(body, n_cols):
            w = wj[i]
            term = w * (sj[i] - log_rest[i])
            acc[i - body] += 0.0 if w == 0.0 else term
    total = 0.0
    for lane in range(LANES):
        total += acc[lane]
    return total


@numba.njit(**NJIT)
def gate_terms_into(rw, shifted, log_rest, probs, free, want_info, out_row_total, out_resid,
                    out_weights):
    """The gate objective's per-row terms on one block; returns the block's ``Q``.

    With ``t_i = sum_j rw_ji`` and ``g`` the gate probabilities: ``Q = sum rw_ji log g_ji``
    over the entries with ``rw_ji != 0`` (an inactive expert's ``-inf`` meets a zero
    weight), the gradient's residual ``rw_ji - t_i g_ji`` of every free expert, and the
    information's weights ``t_i g_ai (delta_ab - g_bi)`` of every pair ``a <= b`` of free
    experts (in row-major order of the upper triangle).

    Parameters
    ----------
    rw : float64 (n_experts, n_rows), sample weight times responsibility
    shifted : float64 (n_experts, n_rows), the logits minus their column maximum
    log_rest : float64 (n_rows,), ``log1p`` of the column's rest (``log g = shifted - log_rest``)
    probs : float64 (n_experts, n_rows), the gate probabilities
    free : int64 (n_free,)
    want_info : bool
    out_row_total : float64 (n_rows,), written: ``t``
    out_resid : float64 (n_free, n_rows), written
    out_weights : float64 (n_free * (n_free + 1) // 2, n_rows), written if ``want_info``
    """
    n_experts, n_rows = rw.shape
    for i in range(n_rows):
        out_row_total[i] = 0.0
    for j in range(n_experts):
        for i in range(n_rows):
            out_row_total[i] += rw[j, i]
    objective = weighted_log_softmax_sum(rw, shifted, log_rest)
    n_free = free.shape[0]
    for a in range(n_free):
        ja = free[a]
        for i in range(n_rows):
            out_resid[a, i] = rw[ja, i] - out_row_total[i] * probs[ja, i]
    if want_info:
        r = 0
        for a in range(n_free):
            ja = free[a]
            for b in range(a, n_free):
                jb = free[b]
                same = 1.0 if ja == jb else 0.0
                for i in range(n_rows):
                    out_weights[r, i] = out_row_total[i] * probs[ja, i] * (same - probs[jb, i])
                r += 1
    return objective


@numba.njit(**NJIT)
def weighted_residual_squares(rw, y, means, out):
    """``out_j = sum_i rw_ji (y_i - means_ji)^2``, in a fixed order.

    Parameters
    ----------
    rw : float64 (n_experts, n_rows)
    y : float64 (n_rows,)
    means : float64 (n_experts, n_rows)
    out : float64 (n_experts,), written
    """
    n_experts, n_rows = rw.shape
    acc = np.zeros(LANES)
    body = n_rows - n_rows % LANES
    for j in range(n_experts):
        rwj = rw[j]
        mj = means[j]
        for lane in range(LANES):
            acc[lane] = 0.0
        for i in range(0, body, LANES):
            for lane in range(LANES):
                resid = y[i + lane] - mj[i + lane]
                acc[lane] += rwj[i + lane] * (resid * resid)
        for i in range(body, n_rows):
            resid = y[i] - mj[i]
            acc[i - body] += rwj[i] * (resid * resid)
        total = 0.0
        for lane in range(LANES):
            total += acc[lane]
        out[j] = total


@numba.njit(**NJIT)
def weight_responsibilities_into(resp, w, out):
    """``out_ji = resp_ji w_i`` (the weighted responsibilities).

    Parameters
    ----------
    resp : float64 (n_experts, n_rows)
    w : float64 (n_rows,)
    out : float64 (n_experts, n_rows), written (may be ``resp``)
    """
    n_experts, n_rows = resp.shape
    for j in range(n_experts):
        for i in range(n_rows):
            out[j, i] = resp[j, i] * w[i]


@numba.njit(**NJIT)
def row_sums_into(values, out):
    """``out_j = sum_i values_ji`` for every row ``j``, in a fixed order.

    Parameters
    ----------
    values : float64 (n_experts, n_rows)
    out : float64 (n_experts,), written
    """
    for j in range(values.shape[0]):
        out[j] = lane_sum(values[j])
