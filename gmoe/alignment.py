"""Expert labels: a canonical order, permutations, and alignment with a reference model.

Experts are exchangeable (:ref:`theory-identifiability`): permuting them, with the gate
re-based so that the last expert stays the reference, gives the same conditional density.
These functions
choose a labelling; they never change the model.

* :func:`canonical_order` -- a deterministic order of the experts of one model.
* :func:`permute_experts` -- the same model with its experts relabelled.
* :func:`align_to` -- relabel a model to match a reference model's experts one to one
  (optimal assignment).

Parameter *errors* against a truth go through Voronoi cells (:ref:`theory-voronoi`), not
through these labels; alignment is for reading, plotting and comparing two fits side by side.
"""

import numpy as np
from scipy.optimize import linear_sum_assignment

from .model import as_measure

__all__ = ["align_to", "canonical_order", "permute_experts"]


def canonical_order(measure):
    """A deterministic order of the experts: by intercept, then slopes, variance and gate.

    Experts are sorted lexicographically by ``expert_intercept``, then the columns of
    ``expert_coef`` in order, then ``expert_var``, then the columns of ``gate_coef`` and
    finally ``gate_intercept``; exact ties keep the current order. The gate keys are
    compared after the reference convention, which shifts every expert's gate parameters
    by the same amount, so the order does not depend on which expert is the reference.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator

    Returns
    -------
    perm : ndarray of int of shape (n_experts,)
        ``permute_experts(measure, perm)`` lists the experts in canonical order.

    Examples
    --------
    >>> from gmoe import MixingMeasure
    >>> from gmoe.alignment import canonical_order
    >>> g = MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
    ...                   [0.09, 0.16])
    >>> canonical_order(g).tolist()
    [1, 0]
    """
    m = as_measure(measure)
    keys = [m.expert_intercept, *m.expert_coef.T, m.expert_var, *m.gate_coef.T,
            m.gate_intercept]
    # np.lexsort sorts by its LAST key first and is stable.
    return np.lexsort(keys[::-1]).astype(np.intp)


def _check_permutation(perm, n_experts):
    arr = np.asarray(perm)
    if arr.shape != (n_experts,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"perm must be an integer array of shape ({n_experts},), got "
                         f"{arr.dtype} array of shape {arr.shape}.")
    if not np.array_equal(np.sort(arr), np.arange(n_experts)):
        raise ValueError(f"perm must be a permutation of 0..{n_experts - 1}, got "
                         f"{arr.tolist()}.")
    return arr.astype(np.intp)


def permute_experts(measure, perm):
    """The same model with its experts relabelled: new expert ``i`` is old expert ``perm[i]``.

    The gate is re-based so that the new last expert is the reference
    (:ref:`theory-identifiability`): the families that pin the reference's slope
    (softmax, top-K, temperature) subtract its gate slope and intercept from every
    expert's, the activation gate its intercept only. Each is a common shift of the
    logits (of the top-K selection scores too), so the conditional density is unchanged;
    the one exception is a top-K input at an exact tie of selection scores, which goes to
    the lower index and so follows the labels.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
    perm : array-like of int of shape (n_experts,)
        A permutation of ``0..n_experts-1``.

    Returns
    -------
    MixingMeasure
    """
    m = as_measure(measure)
    perm = _check_permutation(perm, m.n_experts)
    return m.replace(gate_coef=m.gate_coef[perm], gate_intercept=m.gate_intercept[perm],
                     expert_coef=m.expert_coef[perm],
                     expert_intercept=m.expert_intercept[perm],
                     expert_var=m.expert_var[perm], rebase=True)


def _atom_features(m, include_gate):
    """Label-free features of every expert, shape (n_experts, n_columns)."""
    cols = [m.expert_coef, m.expert_intercept[:, None], m.expert_var[:, None]]
    if include_gate:
        ident = m.identifiable()
        scale = ident.temperature if ident.family.uses_temperature else 1.0
        coef = ident.gate_coef / scale
        intercept = ident.gate_intercept / scale
        if ident.family.pins_reference_coef:
            # Only differences of gate slopes are identifiable: remove the common
            # translation by centring over the experts.
            coef = coef - coef.mean(axis=0)
        cols += [coef, (intercept - intercept.mean())[:, None]]
    return np.hstack(cols)


def compute_alignment_cost(measure, reference):
    """Cost of matching each reference expert with each expert of ``measure``.

    Parameters
    ----------
    measure, reference : MixingMeasure or fitted estimator
        Same ``n_experts`` and ``n_features``.

    Returns
    -------
    cost : ndarray of shape (n_experts, n_experts)
        ``cost[j, i]``: squared standardised distance between reference expert ``j`` and
        expert ``i`` of ``measure`` (see :func:`align_to`).
    """
    m, ref = as_measure(measure), as_measure(reference)
    if m.n_experts != ref.n_experts or m.n_features != ref.n_features:
        raise ValueError(
            "measure and reference must have the same n_experts and n_features, got "
            f"({m.n_experts}, {m.n_features}) and ({ref.n_experts}, {ref.n_features})."
        )
    same_gate = m.family == ref.family
    feats = _atom_features(m, same_gate)
    ref_feats = _atom_features(ref, same_gate)
    pooled = np.vstack([feats, ref_feats])
    scale = pooled.std(axis=0)
    scale[~(scale > 0)] = 1.0
    diff = (ref_feats[:, None, :] - feats[None, :, :]) / scale
    return np.sum(diff * diff, axis=2)


def align_to(measure, reference):
    r"""Relabel the experts of ``measure`` to match those of ``reference`` one to one.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
        The model to relabel.
    reference : MixingMeasure or fitted estimator
        The labelling to follow; same ``n_experts`` and ``n_features``.

    Returns
    -------
    aligned : MixingMeasure
        ``permute_experts(measure, perm)``: the same conditional density, expert ``j``
        matched with the reference's expert ``j``.
    perm : ndarray of int of shape (n_experts,)
        ``aligned`` expert ``j`` is expert ``perm[j]`` of ``measure``.

    Notes
    -----
    The matching minimises the total cost :math:`\sum_j C_{j, \pi(j)}` over permutations
    :math:`\pi` (:func:`scipy.optimize.linear_sum_assignment`), with :math:`C_{ji}` the
    squared Euclidean distance between standardised label-free features of reference
    expert ``j`` and expert ``i``:

    * the expert slope ``a``, intercept ``b`` and variance ``nu``;
    * when both models have the same gating family, the gate slope and intercept on the
      identifiable scale (:meth:`~gmoe.MixingMeasure.identifiable`: ``gamma = beta / tau``
      for the temperature families, the unit-norm gate for top-1). For the families whose
      gate is determined up to a common translation (softmax, top-K, temperature) the
      slopes are centred over the experts, which removes the translation; the activation
      gate's slopes are free and used as they are. Intercepts are always centred.

    When the gate has an exact symmetry (the two-expert tanh/sigmoid activation gate:
    ``(beta1_1, beta1_2) -> (-beta1_2, -beta1_1)``), ``measure`` and its symmetric image
    describe the same density; the one whose matching costs less is returned.

    Each feature is divided by its standard deviation over the ``2 n_experts`` pooled
    experts of both models (1 where that is 0), so that features on different scales
    (a variance of 0.1 next to a gate slope of 25) weigh alike. A feature that is equal
    across the reference's experts then carries only noise; it blurs, but with well
    separated experts does not decide, the matching.

    Examples
    --------
    >>> from gmoe import MixingMeasure
    >>> from gmoe.alignment import align_to, permute_experts
    >>> g = MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
    ...                   [0.09, 0.16])
    >>> aligned, perm = align_to(permute_experts(g, [1, 0]), g)
    >>> perm.tolist()
    [1, 0]
    """
    m = as_measure(measure)
    best = None
    # A gate with an exact symmetry (the two-expert tanh/sigmoid mirror) has other
    # parameter vectors of the same density: match whichever lies closest to the reference.
    for candidate in [m, *m.symmetric_images()]:
        cost = compute_alignment_cost(candidate, reference)
        _, perm = linear_sum_assignment(cost)
        total = float(cost[np.arange(len(perm)), perm].sum())
        if best is None or total < best[0]:
            best = (total, candidate, perm.astype(np.intp))
    _, candidate, perm = best
    return permute_experts(candidate, perm), perm
