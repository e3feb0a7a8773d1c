"""Kernels on expert-major arrays: shape (n_experts, n_samples), one column per sample.

Every loop runs over samples innermost (contiguous memory, in EM) with selects instead of
branches, so LLVM vectorises it; no loop reassociates a floating-point sum, so results
are exactly those of the scalar loops. The transcendental functions are left to numpy's
vectorised ``exp`` and ``log1p`` (scalar libm calls from numba cost 5 to 10 times more),
which splits a column log-sum-exp into three steps (``gmoe._expert_major``):

1. :func:`shift_by_column_max_into`: subtract each column's maximum, note where it is;
2. numpy's ``exp``; where an entry lies below :data:`EXP_UNDERFLOW` (``-inf`` included),
   of a copy moved into the normal range (:func:`underflow_to_normal_into`), scaled back
   after (:func:`exp_of_underflow_into`): numpy's vectorised ``exp`` takes a slow path for
   results below the smallest normal number, 7 times slower for those that are 0 and 45
   times for subnormal ones (so is a scalar ``exp``), and the gates of over-specified fits
   sharpen until half their entries are there;
3. :func:`normalise_columns_into`: ``rest`` = the column's sum without the maximum's entry
   (which is exactly 1), and divide the column by ``1 + rest``; numpy's ``log1p(rest)``
   then gives ``logsumexp = max + log1p(rest)``, accurate even when ``rest`` is tiny.

A column with no finite value (no active expert) never makes a NaN: its maximum is
``-inf``, it is left at ``-inf``, its exponentials and ``rest`` are 0.
"""

import numba
import numpy as np

from ._config import NJIT

#: ``log`` of the smallest normal float64: below it ``exp`` is subnormal or 0.
EXP_UNDERFLOW = float(np.log(np.finfo(np.float64).tiny))
# Below this exp is exactly 0 (it rounds to 0 below -745.13..., half the smallest
# subnormal, exp(-744.44...)).
_EXP_ZERO = -746.0
# Subnormal exponentials are computed as exp(x + 64 log 2) * 2**-64 (a normal exp).
_SUBNORMAL_SHIFT = 64.0 * float(np.log(2.0))
_SUBNORMAL_SCALE = 2.0 ** -64


@numba.njit(**NJIT)
def shift_by_column_max_into(values, out_max, out_arg):
    """Subtract each column's maximum from ``values`` in place (no validation).

    Parameters
    ----------
    values : float64 (n_experts, n_samples); ``-inf`` marks an inactive expert
    out_max : float64 (n_samples,), written: the column maxima
    out_arg : int64 (n_samples,), written: the first row holding the maximum

    Returns
    -------
    int
        The number of entries left below :data:`EXP_UNDERFLOW` (``-inf`` included: an
        inactive expert); they call for :func:`underflow_to_normal_into` and
        :func:`exp_of_underflow_into`.
    """
    n_rows, n_cols = values.shape
    # Rows as 1-D views and the entries in locals: LLVM then vectorises both loops
    # (indexing values[j, i] in place measured 1.3-1.8x slower).
    first = values[0]
    for i in range(n_cols):
        out_max[i] = first[i]
        out_arg[i] = 0
    for j in range(1, n_rows):
        row = values[j]
        for i in range(n_cols):
            value = row[i]
            current = out_max[i]
            larger = value > current
            out_arg[i] = j if larger else out_arg[i]
            out_max[i] = value if larger else current
    n_underflow = 0
    for j in range(n_rows):
        row = values[j]
        for i in range(n_cols):
            value = row[i]
            current = out_max[i]
            # An all -inf column stays -inf (subtracting -inf would give NaN).
            shifted = value - (0.0 if current == -np.inf else current)
            n_underflow += shifted < EXP_UNDERFLOW
            row[i] = shifted
    return n_underflow


@numba.njit(**NJIT)
def column_rest_into(exps, arg, out_rest):
    """``rest`` = each column's sum without its maximum's entry (step 3 without the division).

    Parameters
    ----------
    exps : float64 (n_experts, n_samples), ``exp`` of step 1's output
    arg : int64 (n_samples,), step 1's ``out_arg``
    out_rest : float64 (n_samples,), written
    """
    n_rows, n_cols = exps.shape
    for i in range(n_cols):
        out_rest[i] = 0.0
    for j in range(n_rows):
        for i in range(n_cols):
            out_rest[i] += 0.0 if arg[i] == j else exps[j, i]


@numba.njit(**NJIT)
def normalise_columns_into(exps, arg, out_rest):
    """``rest`` = column sum without the maximum's entry; divide each column by ``1 + rest``.

    Parameters
    ----------
    exps : float64 (n_experts, n_samples), ``exp`` of step 1's output; normalised in place
    arg : int64 (n_samples,), step 1's ``out_arg``
    out_rest : float64 (n_samples,), written
    """
    column_rest_into(exps, arg, out_rest)
    n_rows, n_cols = exps.shape
    for j in range(n_rows):
        for i in range(n_cols):
            exps[j, i] /= 1.0 + out_rest[i]


@numba.njit(**NJIT)
def pair_other_into(shifted, arg, out_other):
    """Two experts: each column's entry that is not its maximum (step 1's output).

    With two experts the maximum's entry of a shifted column is 0 and ``rest`` is the
    ``exp`` of the other entry alone: exponentiating this one row instead of both halves
    step 2, and :func:`normalise_pair_into` does step 3 without a sum.

    Parameters
    ----------
    shifted : float64 (2, n_samples), step 1's output
    arg : int64 (n_samples,), step 1's ``out_arg``
    out_other : float64 (n_samples,), written: ``shifted[1 - arg_i, i]``
    """
    first = shifted[0]
    second = shifted[1]
    for i in range(shifted.shape[1]):
        out_other[i] = second[i] if arg[i] == 0 else first[i]


@numba.njit(**NJIT)
def normalise_pair_into(rest, arg, out_probs):
    """Two experts: the probabilities ``1 / (1 + rest)`` and ``rest / (1 + rest)``.

    ``rest`` is the ``exp`` of :func:`pair_other_into`'s output; the result is
    :func:`normalise_columns_into`'s to the bit (``exp(0)`` is exactly 1, and the column's
    rest is its one other entry).

    Parameters
    ----------
    rest : float64 (n_samples,)
    arg : int64 (n_samples,), step 1's ``out_arg``
    out_probs : float64 (2, n_samples), written
    """
    first = out_probs[0]
    second = out_probs[1]
    for i in range(rest.shape[0]):
        total = 1.0 + rest[i]
        top = 1.0 / total
        other = rest[i] / total
        first[i] = top if arg[i] == 0 else other
        second[i] = other if arg[i] == 0 else top


@numba.njit(**NJIT)
def joint_log_density_into(y, log_gate, expert_var, means):
    """``log g_ij + log N(y_i | mean_ij, nu_j)`` over ``means`` in place (no validation).

    Parameters
    ----------
    y : float64 (n_samples,)
    log_gate : float64 (n_experts, n_samples); ``-inf`` for an inactive expert (the joint
        is then ``-inf``)
    expert_var : float64 (n_experts,)
    means : float64 (n_experts, n_samples), the expert means; overwritten by the joint
    """
    n_rows, n_cols = means.shape
    for j in range(n_rows):
        log_norm_const = -0.5 * (np.log(2.0 * np.pi) + np.log(expert_var[j]))
        half_precision = 0.5 / expert_var[j]
        for i in range(n_cols):
            resid = y[i] - means[j, i]
            means[j, i] = log_gate[j, i] + log_norm_const - resid * resid * half_precision


@numba.njit(**NJIT)
def weighted_column_sums_into(weights, values, out):
    """``out_i = sum_j weights_ji * values_ji`` over the entries with a nonzero weight.

    A zero weight meeting a ``-inf`` value (an inactive expert) contributes 0, not NaN.

    Parameters
    ----------
    weights, values : float64 (n_experts, n_samples)
    out : float64 (n_samples,), written
    """
    n_rows, n_cols = values.shape
    for i in range(n_cols):
        out[i] = 0.0
    for j in range(n_rows):
        for i in range(n_cols):
            out[i] += 0.0 if weights[j, i] == 0.0 else weights[j, i] * values[j, i]


@numba.njit(**NJIT)
def topk_columns_into(scores, top_k, out_active):
    """Mark the ``top_k`` largest scores of every column, ties to the lower row.

    Expert ``j`` is selected iff fewer than ``top_k`` experts beat it: a larger score, or an
    equal score at a lower index.

    Parameters
    ----------
    scores : float64 (n_experts, n_samples)
    top_k : int, 1 <= top_k <= n_experts
    out_active : bool (n_experts, n_samples), written
    """
    n_rows, n_cols = scores.shape
    beaten_by = np.empty(n_cols, dtype=np.int64)
    for j in range(n_rows):
        for i in range(n_cols):
            beaten_by[i] = 0
        for m in range(n_rows):
            if m < j:
                for i in range(n_cols):
                    beaten_by[i] += 1 if scores[m, i] >= scores[j, i] else 0
            elif m > j:
                for i in range(n_cols):
                    beaten_by[i] += 1 if scores[m, i] > scores[j, i] else 0
        for i in range(n_cols):
            out_active[j, i] = beaten_by[i] < top_k


@numba.njit(**NJIT)
def count_underflow(values):
    """How many entries of ``values`` lie below :data:`EXP_UNDERFLOW` (``-inf`` included).

    Parameters
    ----------
    values : float64 (n_rows, n_cols)

    Returns
    -------
    int
    """
    n_rows, n_cols = values.shape
    count = 0
    for j in range(n_rows):
        row = values[j]
        for i in range(n_cols):
            count += row[i] < EXP_UNDERFLOW
    return count


@numba.njit(**NJIT)
def underflow_to_normal_into(values, out):
    """``out = values``, moved where ``exp`` underflows, so that numpy's ``exp`` runs fast.

    Entries below :data:`EXP_UNDERFLOW` whose ``exp`` is subnormal (above -746) are raised by
    ``64 log 2`` (their ``exp`` becomes normal), the others (``exp`` 0, ``-inf`` included)
    replaced by 0: numpy's vectorised ``exp`` is 7 to 45 times slower on such entries.
    :func:`exp_of_underflow_into` then scales the exponentials back. No validation.

    Parameters
    ----------
    values : float64 (n_rows, n_cols)
    out : float64 (n_rows, n_cols), written
    """
    n_rows, n_cols = values.shape
    for j in range(n_rows):
        source = values[j]
        target = out[j]
        for i in range(n_cols):
            value = source[i]
            raised = value + _SUBNORMAL_SHIFT if value > _EXP_ZERO else 0.0
            target[i] = raised if value < EXP_UNDERFLOW else value


@numba.njit(**NJIT)
def exp_of_underflow_into(values, exps, out):
    """``exp(values)`` from the exponentials of :func:`underflow_to_normal_into`'s copy.

    ``out = exps`` where ``values`` is at least :data:`EXP_UNDERFLOW`; ``exps * 2**-64``
    where ``exp(values)`` is subnormal (to ~1e-13 relative, as ``x + 64 log 2`` rounds,
    then to the subnormal grid); 0 below. No validation.

    Parameters
    ----------
    values : float64 (n_rows, n_cols)
    exps : float64 (n_rows, n_cols), finite: the copy exponentiated
    out : float64 (n_rows, n_cols), written; may be ``values`` or ``exps``
    """
    n_rows, n_cols = values.shape
    for j in range(n_rows):
        source = values[j]
        computed = exps[j]
        target = out[j]
        for i in range(n_cols):
            value = source[i]
            # Products rather than a branch: vectorised, and exact where the factor is 1.
            low = _SUBNORMAL_SCALE if value > _EXP_ZERO else 0.0
            target[i] = computed[i] * (1.0 if value >= EXP_UNDERFLOW else low)
