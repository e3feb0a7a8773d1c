"""Row-wise log-softmax."""

import math

import numba
import numpy as np

from ._config import NJIT


@numba.njit(inline="always", **NJIT)
def _log_softmax_row(i, logits, out):
    n_experts = logits.shape[1]
    row_max = -np.inf
    arg_max = 0
    for j in range(n_experts):
        if logits[i, j] > row_max:
            row_max = logits[i, j]
            arg_max = j
    if row_max == -np.inf:
        # No active expert: cannot happen for a valid gate; never produce NaN.
        for j in range(n_experts):
            out[i, j] = -np.inf
        return
    # The largest term is exp(0) = 1: skip its exp and use log1p for the rest.
    rest = 0.0
    for j in range(n_experts):
        if j != arg_max:
            rest += math.exp(logits[i, j] - row_max)
    log_norm = row_max + math.log1p(rest)
    for j in range(n_experts):
        out[i, j] = logits[i, j] - log_norm


@numba.njit(parallel=True, **NJIT)
def log_softmax_into(logits, out):
    """Max-shifted log-softmax of every row, row-parallel (no validation).

    Parameters
    ----------
    logits : float64 (n_samples, n_experts); ``-inf`` entries are inactive experts
    out : float64 (n_samples, n_experts), written (may alias ``logits``)
    """
    for i in numba.prange(logits.shape[0]):
        _log_softmax_row(i, logits, out)


@numba.njit(**NJIT)
def log_softmax_serial_into(logits, out):
    """Serial twin of :func:`log_softmax_into`."""
    for i in range(logits.shape[0]):
        _log_softmax_row(i, logits, out)
