"""Numba kernels: arrays in, arrays out, no validation.

Each kernel is checked against an independent numpy computation (``tests/test_kernels.py``,
``tests/_reference.py``). The passes over the samples work on expert-major arrays, shape
(n_experts, n_samples) (``_columns.py``); the passes over blocks of rows use ``_blocks.py``.
"""

from ._blocks import (
    design_block_into,
    gate_terms_into,
    lane_dot,
    lane_sum,
    pair_products_into,
    row_sums_into,
    weight_responsibilities_into,
    weighted_residual_squares,
)
from ._columns import (
    joint_log_density_into,
    normalise_columns_into,
    shift_by_column_max_into,
    topk_columns_into,
    weighted_column_sums_into,
)

__all__ = [
    "design_block_into",
    "gate_terms_into",
    "lane_dot",
    "lane_sum",
    "pair_products_into",
    "row_sums_into",
    "weight_responsibilities_into",
    "weighted_residual_squares",
    "joint_log_density_into",
    "normalise_columns_into",
    "shift_by_column_max_into",
    "topk_columns_into",
    "weighted_column_sums_into",
]
