"""Top-K selection and the log-likelihood of fixed expert densities (serial kernels)."""

import math

import numba
import numpy as np

from ._config import NJIT


@numba.njit(**NJIT)
def topk_mask_into(scores, top_k, out_mask):
    """Mark the ``top_k`` largest scores of every row, ties to the lower index (no validation).

    Parameters
    ----------
    scores : float64 (n_samples, n_experts)
    top_k : int, 1 <= top_k <= n_experts
    out_mask : bool (n_samples, n_experts), written
    """
    n_samples, n_experts = scores.shape
    for i in range(n_samples):
        for j in range(n_experts):
            # Expert j is selected iff fewer than top_k experts beat it: a larger score,
            # or an equal score at a lower index.
            better = 0
            s = scores[i, j]
            for m in range(n_experts):
                if scores[i, m] > s or (scores[i, m] == s and m < j):
                    better += 1
            out_mask[i, j] = better < top_k


@numba.njit(**NJIT)
def weighted_log_likelihood(log_gate, expert_log_density, sample_weight):
    """``sum_i w_i log sum_j exp(log_gate_ij + expert_log_density_ij)``, serially.

    ``-inf`` log-gates (inactive experts) contribute nothing; the sum is in row order, so
    the result does not depend on the number of threads.
    """
    n_samples, n_experts = log_gate.shape
    total = 0.0
    for i in range(n_samples):
        row_max = -np.inf
        for j in range(n_experts):
            v = log_gate[i, j] + expert_log_density[i, j]
            if v > row_max:
                row_max = v
        if row_max == -np.inf:
            if sample_weight[i] > 0:
                return -np.inf
            continue
        acc = 0.0
        for j in range(n_experts):
            acc += math.exp(log_gate[i, j] + expert_log_density[i, j] - row_max)
        total += sample_weight[i] * (row_max + math.log(acc))
    return total
