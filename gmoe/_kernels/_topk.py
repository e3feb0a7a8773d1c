"""Kernels of the top-K gate's boundary search: one expert's gate coordinate moved at a time.

Moving a coordinate of expert ``j``'s gate by ``t`` shifts row ``j`` of the logits (and of
the selection scores) by ``t * z`` and leaves the other rows alone. The search therefore
describes every sample once per expert by the other experts' part (the K-th best of their
scores, the log-sum-exps over their best ones) and evaluates the log-likelihood at a
candidate ``t`` from row ``j`` alone (``gmoe.gates._topk_search``).

As in ``_columns.py``, arrays are expert-major, loops run over samples innermost, and the
exponentials and logarithms are left to numpy's vectorised ufuncs between the kernels.
"""

import numba
import numpy as np

from ._columns import EXP_UNDERFLOW
from ._config import NJIT


@numba.njit(**NJIT)
def pair_max_gap_into(values, out_max, out_gap):
    """Each column's larger entry and the other minus it, for two rows (no validation).

    ``out_max + log1p(exp(out_gap))`` is then the column log-sum-exp as
    :func:`shift_by_column_max_into` and :func:`normalise_columns_into` form it, to the bit
    (the first row wins a tie).

    Parameters
    ----------
    values : float64 (2, n_samples), finite
    out_max, out_gap : float64 (n_samples,), written

    Returns
    -------
    int
        How many gaps lie below :data:`EXP_UNDERFLOW` (their ``exp`` underflows).
    """
    n_underflow = 0
    for i in range(values.shape[1]):
        first, second = values[0, i], values[1, i]
        larger = second > first
        top = second if larger else first
        out_max[i] = top
        gap = (first if larger else second) - top
        out_gap[i] = gap
        n_underflow += gap < EXP_UNDERFLOW
    return n_underflow


@numba.njit(**NJIT)
def deactivate_into(active, out_values):
    """Set ``out_values`` to ``-inf`` wherever ``active`` is False (no validation).

    Parameters
    ----------
    active : bool (n_experts, n_samples)
    out_values : float64 (n_experts, n_samples), modified
    """
    n_rows, n_cols = active.shape
    for j in range(n_rows):
        for i in range(n_cols):
            value = out_values[j, i]
            out_values[j, i] = value if active[j, i] else -np.inf


@numba.njit(**NJIT)
def active_terms_into(scores, logits, log_density, out_logits, out_joint):
    """The logits and logits plus log-densities of each column's ``top_k`` best experts.

    Selected by score, ties to the lower index (as :func:`topk_columns_into`), and stored in
    the experts' order, so that a column log-sum-exp of ``out_logits`` adds the same terms
    in the same order as one of the full column with ``-inf`` for the unselected. No
    validation.

    Parameters
    ----------
    scores, logits, log_density : float64 (n_experts, n_samples)
    out_logits : float64 (top_k, n_samples), written
    out_joint : float64 (top_k, n_samples), written
    """
    n_rows, n_cols = scores.shape
    top_k = out_logits.shape[0]
    # slot[j, i]: where expert j goes in column i (its place among the selected), or -1.
    slot = np.empty((n_rows, n_cols), dtype=np.int64)
    beaten_by = np.empty(n_cols, dtype=np.int64)
    filled = np.zeros(n_cols, dtype=np.int64)
    for j in range(n_rows):
        _count_beating(scores, j, -1, beaten_by)
        for i in range(n_cols):
            active = beaten_by[i] < top_k
            slot[j, i] = filled[i] if active else -1
            filled[i] += active
    _gather_slots(slot, logits, log_density, out_logits, out_joint)


@numba.njit(**NJIT)
def _gather_slots(slot, logits, log_density, out_logits, out_joint):
    """``out[slot[j, i], i] = logits[j, i]`` (and the joint), as selects rather than stores.

    A store to a data-dependent row defeats vectorisation; every output entry instead looks
    at every expert, loading both candidates before choosing.
    """
    n_rows, n_cols = logits.shape
    for s in range(out_logits.shape[0]):
        for j in range(n_rows):
            for i in range(n_cols):
                here = slot[j, i] == s
                logit, kept = logits[j, i], out_logits[s, i]
                out_logits[s, i] = logit if here else kept
                joint, kept = logit + log_density[j, i], out_joint[s, i]
                out_joint[s, i] = joint if here else kept


@numba.njit(**NJIT)
def _count_beating(scores, o, skip, out_count):
    """How many experts other than ``o`` and ``skip`` beat expert ``o`` in each column."""
    n_rows, n_cols = scores.shape
    for i in range(n_cols):
        out_count[i] = 0
    for m in range(n_rows):
        if m == o or m == skip:
            continue
        if m < o:
            for i in range(n_cols):
                out_count[i] += scores[m, i] >= scores[o, i]
        else:
            for i in range(n_cols):
                out_count[i] += scores[m, i] > scores[o, i]


@numba.njit(**NJIT)
def top_others_into(scores, logits, log_density, j, out_top_logits, out_top_joint, out_kth,
                    out_kth_arg):
    """The ``top_k`` best of the experts other than ``j`` in every column (no validation).

    Ranked by score, ties to the lower index (as :func:`topk_columns_into`): expert ``o``
    is preceded by every other ``m != j`` with a larger score, or an equal score and
    ``m < o``.

    Parameters
    ----------
    scores, logits, log_density : float64 (n_experts, n_samples)
    j : int, the expert left out
    out_top_logits : float64 (top_k, n_samples), written: the logits of the others' best
        ``top_k``, best first
    out_top_joint : float64 (top_k, n_samples), written: their logits plus log-densities
    out_kth : float64 (n_samples,), written: the ``top_k``-th best score of the others
    out_kth_arg : int64 (n_samples,), written: the expert holding it
    """
    n_rows, n_cols = scores.shape
    top_k = out_top_logits.shape[0]
    # slot[o, i]: expert o's rank among the others in column i if within the best top_k.
    slot = np.empty((n_rows, n_cols), dtype=np.int64)
    rank = np.empty(n_cols, dtype=np.int64)
    for o in range(n_rows):
        if o == j:
            for i in range(n_cols):
                slot[o, i] = -1
            continue
        _count_beating(scores, o, j, rank)
        for i in range(n_cols):
            slot[o, i] = rank[i] if rank[i] < top_k else -1
    _gather_slots(slot, logits, log_density, out_top_logits, out_top_joint)
    last = top_k - 1
    for o in range(n_rows):
        for i in range(n_cols):
            here = slot[o, i] == last
            score, kept, kept_arg = scores[o, i], out_kth[i], out_kth_arg[i]
            out_kth[i] = score if here else kept
            out_kth_arg[i] = o if here else kept_arg


@numba.njit(**NJIT)
def _insert_distinct(buffer, count, value, keep_largest):
    """Insert ``value`` into the sorted ``buffer[:count]`` unless present; returns the count.

    A full buffer keeps its ``len(buffer)`` largest (``keep_largest``) or smallest values.
    """
    for a in range(count):
        if buffer[a] == value:
            return count
    size = buffer.shape[0]
    if count == size:
        if keep_largest:
            if value <= buffer[0]:
                return count
            # Drop the smallest, then insert into the ascending buffer.
            a = 0
            while a + 1 < size and buffer[a + 1] < value:
                buffer[a] = buffer[a + 1]
                a += 1
            buffer[a] = value
            return count
        if value >= buffer[size - 1]:
            return count
        count -= 1
    a = count
    while a > 0 and buffer[a - 1] > value:
        buffer[a] = buffer[a - 1]
        a -= 1
    buffer[a] = value
    return count + 1


@numba.njit(**NJIT)
def nearest_breakpoints_into(kth, scores_j, col, out_below, out_above, out_counts, out_range):
    """The distinct breakpoints nearest 0 on each side, and the range of all of them.

    Sample ``i`` changes its selection of expert ``j`` where ``scores_j[i] + t col[i]``
    crosses ``kth[i]``: at ``t = (kth[i] - scores_j[i]) / col[i]`` (samples with
    ``col[i] = 0`` have none). No validation.

    Parameters
    ----------
    kth : float64 (n_samples,), the K-th best score of the other experts
    scores_j : float64 (n_samples,), expert j's selection scores
    col : float64 (n_samples,), the moved coordinate's design column
    out_below : float64 (n_side,), written: the ``n_side`` largest distinct breakpoints
        below 0, ascending (the first ``out_counts[0]`` entries are set)
    out_above : float64 (n_side,), written: the ``n_side`` smallest distinct breakpoints
        at or above 0, ascending (the first ``out_counts[1]`` entries are set)
    out_counts : int64 (2,), written
    out_range : float64 (2,), written: the smallest and largest breakpoint (NaN if none)
    """
    n_side = out_below.shape[0]
    n_below = 0
    n_above = 0
    low = np.inf
    high = -np.inf
    found = False
    for i in range(kth.shape[0]):
        # Branch-free but for the rare insertions: the signs of the breakpoints are as
        # good as random, and a branch on them mispredicts half the time.
        moving = col[i] != 0.0
        b = (kth[i] - scores_j[i]) / col[i] if moving else 0.0
        found |= moving
        low = b if moving & (b < low) else low
        high = b if moving & (b > high) else high
        to_below = moving & (b < 0.0) & ((n_below < n_side) | (b > out_below[0]))
        to_above = moving & (b >= 0.0) & ((n_above < n_side) | (b < out_above[n_side - 1]))
        if to_below | to_above:
            if to_below:
                n_below = _insert_distinct(out_below, n_below, b, True)
            else:
                n_above = _insert_distinct(out_above, n_above, b, False)
    out_counts[0] = n_below
    out_counts[1] = n_above
    out_range[0] = low if found else np.nan
    out_range[1] = high if found else np.nan


# exp() of less than about -708 is subnormal, where numpy's vectorised exp is a hundred times
# slower. Flooring the gap at -700 changes a ratio by 1e-304 at most: nothing beside a ratio
# above exp(-650), and the ratios below that are recomputed (exact_log_ratio_into).
_GAP_FLOOR = -700.0


@numba.njit(**NJIT)
def step_gaps_into(step_logits, log_norm, out_gap):
    """``max(-|x|, -700)``, ``x = step_logits - log_norm``, at every step and sample.

    No validation.

    Parameters
    ----------
    step_logits : float64 (n_steps, n_samples)
        Expert j's logits at each step.
    log_norm : float64 (n_samples,)
        The log-sum-exp of the logits of the other experts ``j`` would be selected with.
    out_gap : float64 (n_steps, n_samples), written
    """
    n_steps, n_cols = step_logits.shape
    for s in range(n_steps):
        for i in range(n_cols):
            out_gap[s, i] = max(-abs(step_logits[s, i] - log_norm[i]), _GAP_FLOOR)


@numba.njit(**NJIT)
def selected_ratio_into(step_logits, log_norm, alpha, beta, floor, out_ratio):
    """The selected samples' likelihood ratio, from ``v = exp(-|x|)`` in place (no validation).

    With ``x = step_logits - log_norm`` (expert j's logit against the others it is selected
    with), a selected sample's likelihood term is ``shift + log(ratio)`` with
    ``ratio = (alpha + e^x beta) / (1 + e^x)``, computed as ``(alpha + v beta) / (1 + v)``
    for ``x <= 0`` and ``(v alpha + beta) / (1 + v)`` otherwise, so nothing overflows.

    Parameters
    ----------
    step_logits : float64 (n_steps, n_samples)
    log_norm, alpha, beta : float64 (n_samples,)
        ``alpha = exp(a - shift)`` and ``beta = exp(l_j - shift)``: the others' mixture
        density and expert j's density, relative to the larger of the two.
    floor : float
        Ratios below it are counted.
    out_ratio : float64 (n_steps, n_samples), ``exp`` of :func:`step_gaps_into`'s output;
        overwritten by the ratio

    Returns
    -------
    int
        How many ratios fell below ``floor``.
    """
    n_steps, n_cols = step_logits.shape
    n_below = 0
    for s in range(n_steps):
        for i in range(n_cols):
            # Every operand loaded before the choice: a select, not a branch.
            v, a, b = out_ratio[s, i], alpha[i], beta[i]
            below = step_logits[s, i] - log_norm[i] <= 0.0
            if_below, if_above = a + v * b, v * a + b
            ratio = (if_below if below else if_above) / (1.0 + v)
            out_ratio[s, i] = ratio
            n_below += ratio < floor
    return n_below


@numba.njit(**NJIT)
def exact_log_ratio_into(step_logits, log_norm, log_mix, log_density_j, shift, floor,
                         out_log_ratio):
    """Recompute the log-ratios below ``floor`` (a subnormal ratio) from the log-sum-exps.

    ``log ratio = log(e^a + e^(x + l_j)) - log(1 + e^x) - shift``. No validation.

    Parameters
    ----------
    step_logits : float64 (n_steps, n_samples)
    log_norm, log_mix, log_density_j, shift : float64 (n_samples,)
        As in :func:`selected_ratio_into`; ``log_mix`` is ``a``.
    floor : float
    out_log_ratio : float64 (n_steps, n_samples), ``log`` of :func:`selected_ratio_into`'s
        output; the entries below ``floor`` are overwritten
    """
    n_steps, n_cols = step_logits.shape
    for s in range(n_steps):
        for i in range(n_cols):
            if out_log_ratio[s, i] >= floor:
                continue
            x = step_logits[s, i] - log_norm[i]
            a = log_mix[i]
            b = x + log_density_j[i]
            top = max(a, b)
            softplus = x + np.log1p(np.exp(-x)) if x > 0.0 else np.log1p(np.exp(x))
            out_log_ratio[s, i] = top + np.log1p(np.exp(min(a, b) - top)) - softplus - shift[i]


@numba.njit(**NJIT)
def step_terms_into(step_scores, kth, kth_arg, shift, unselected, sample_weight, j,
                    out_terms):
    """Each sample's log-likelihood term at every step, from the log-ratios in place.

    A sample selects expert ``j`` iff ``j``'s score beats ``kth`` (an equal score wins iff
    ``j < kth_arg``); its term is then ``shift + log(ratio)`` (:func:`selected_ratio_into`),
    otherwise ``unselected``. A sample of weight 0 gets 0. No validation.

    Parameters
    ----------
    step_scores : float64 (n_steps, n_samples), expert j's selection scores at each step
    kth : float64 (n_samples,), the K-th best score of the other experts
    kth_arg : int64 (n_samples,), the expert holding it
    shift, unselected, sample_weight : float64 (n_samples,)
    j : int
    out_terms : float64 (n_steps, n_samples), the log-ratios; overwritten by the terms
    """
    n_steps, n_cols = step_scores.shape
    for s in range(n_steps):
        for i in range(n_cols):
            # Every operand loaded before the choices: selects, not branches.
            score, threshold, wins_tie = step_scores[s, i], kth[i], j < kth_arg[i]
            selected = (score > threshold) | ((score == threshold) & wins_tie)
            if_selected, if_not = shift[i] + out_terms[s, i], unselected[i]
            term = if_selected if selected else if_not
            out_terms[s, i] = term if sample_weight[i] != 0.0 else 0.0
