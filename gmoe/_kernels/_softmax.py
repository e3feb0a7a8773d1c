"""Row-wise log-softmax."""

import math

import numba
import numpy as np

from ._config import NJIT


def _log_softmax(logits, out):
    """Max-shifted log-softmax of every row (no validation).

    Parameters
    ----------
    logits : float64 (n_samples, n_experts); ``-inf`` entries are inactive experts
    out : float64 (n_samples, n_experts), written (may alias ``logits``)
    """
    n_samples, n_experts = logits.shape
    for i in numba.prange(n_samples):
        row_max = -np.inf
        for j in range(n_experts):
            if logits[i, j] > row_max:
                row_max = logits[i, j]
        if row_max == -np.inf:
            # No active expert: cannot happen for a valid gate; never produce NaN.
            for j in range(n_experts):
                out[i, j] = -np.inf
            continue
        total = 0.0
        for j in range(n_experts):
            total += math.exp(logits[i, j] - row_max)
        log_norm = row_max + math.log(total)
        for j in range(n_experts):
            out[i, j] = logits[i, j] - log_norm


log_softmax_into = numba.njit(parallel=True, **NJIT)(_log_softmax)
log_softmax_serial_into = numba.njit(parallel=False, **NJIT)(_log_softmax)
