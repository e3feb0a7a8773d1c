"""Numba kernels: arrays in, arrays out, no validation.

Each kernel has an independent numpy twin in ``tests/_reference.py``. The row-wise passes
work on expert-major arrays, shape (n_experts, n_samples) (``_columns.py``).
"""

from ._columns import (
    joint_log_density_into,
    normalise_columns_into,
    shift_by_column_max_into,
    weighted_column_sums_into,
)
from ._topk import topk_mask_into

__all__ = [
    "joint_log_density_into",
    "normalise_columns_into",
    "shift_by_column_max_into",
    "topk_mask_into",
    "weighted_column_sums_into",
]
