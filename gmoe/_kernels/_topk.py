"""Top-K selection (a serial kernel)."""

import numba

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
