"""Numba kernels: arrays in, arrays out, no validation.

Each kernel is checked against an independent numpy computation (``tests/test_kernels.py``,
``tests/_reference.py``; the top-K search's in ``tests/test_topk_search.py``). The passes
over the samples work on expert-major arrays, shape (n_experts, n_samples) (``_columns.py``,
``_topk.py``); the passes over blocks of rows use ``_blocks.py``.
"""

from ._blocks import (
    design_block_into,
    gate_terms_into,
    lane_dot,
    lane_sum,
    row_sums_into,
    weight_responsibilities_into,
    weighted_gram_into,
    weighted_log_softmax_sum,
    weighted_residual_squares,
)
from ._columns import (
    EXP_UNDERFLOW,  # noqa: F401 (a constant, not a kernel: not in __all__)
    column_rest_into,
    count_underflow,
    exp_of_underflow_into,
    joint_log_density_into,
    normalise_columns_into,
    normalise_pair_into,
    pair_other_into,
    shift_by_column_max_into,
    topk_columns_into,
    underflow_to_normal_into,
    weighted_column_sums_into,
)
from ._information import linear_gate_information_weights_into
from ._topk import (
    active_terms_into,
    deactivate_into,
    exact_log_ratio_into,
    nearest_breakpoints_into,
    pair_max_gap_into,
    selected_ratio_into,
    step_gaps_into,
    step_terms_into,
    top_others_into,
)

__all__ = [
    "active_terms_into",
    "column_rest_into",
    "count_underflow",
    "deactivate_into",
    "design_block_into",
    "exact_log_ratio_into",
    "exp_of_underflow_into",
    "gate_terms_into",
    "joint_log_density_into",
    "lane_dot",
    "lane_sum",
    "linear_gate_information_weights_into",
    "nearest_breakpoints_into",
    "normalise_columns_into",
    "normalise_pair_into",
    "pair_max_gap_into",
    "pair_other_into",
    "row_sums_into",
    "selected_ratio_into",
    "shift_by_column_max_into",
    "step_gaps_into",
    "step_terms_into",
    "top_others_into",
    "topk_columns_into",
    "underflow_to_normal_into",
    "weight_responsibilities_into",
    "weighted_column_sums_into",
    "weighted_gram_into",
    "weighted_log_softmax_sum",
    "weighted_residual_squares",
]
