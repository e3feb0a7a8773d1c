"""Numba kernels: arrays in, arrays out, no validation.

Each kernel has an independent numpy twin in ``tests/_reference.py``.
"""

from ._estep import e_step_into, e_step_serial_into
from ._softmax import log_softmax_into, log_softmax_serial_into
from ._topk import topk_mask_into, weighted_log_likelihood

# Below this many rows a kernel runs serially: starting threads costs more than it saves,
# and spinning worker threads stall badly when the cores are shared with other processes.
PARALLEL_MIN_ROWS = 50_000

__all__ = [
    "PARALLEL_MIN_ROWS",
    "e_step_into",
    "e_step_serial_into",
    "log_softmax_into",
    "log_softmax_serial_into",
    "topk_mask_into",
    "weighted_log_likelihood",
]
