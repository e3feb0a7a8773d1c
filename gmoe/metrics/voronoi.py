"""Voronoi losses between a fitted mixing measure and a truth.

A fit ``G = sum_i w_i delta_{theta_i}`` (k atoms) is compared with a truth
``G* = sum_j w*_j delta_{theta*_j}`` (k* atoms) through the Voronoi cells
``A_j = {i : theta_i is closest to theta*_j}``: the exact-specified loss D1, the
over-specified loss D2, their top-K and top-1 variants, and per-parameter errors. See the
Theory and conventions page of the documentation (``theory-voronoi``).

Which representation, which side translated. The gate parameters are identified only up
to a common translation ``(t1, t2)`` of every ``(beta1_i, beta0_i)``, so both the fit and
the truth come in a whole orbit of representations. We proceed in two steps.

1. The fit's intercepts are fixed label-free: its weights are normalised to the truth's total
   mass, ``w_i <- w_i M / sum_l w_l`` with ``M = sum_j w*_j`` (``w_i = M softmax(beta0 /
   tau)_i``). A common shift of the fitted ``beta0`` (rebasing the fit onto another reference
   expert, relabelling it) leaves these weights unchanged, and they multiply the parameter
   terms as they are.
2. The **truth** is translated, as paper 1 writes its infimum: ``log w*_j -> log w*_j + t2``
   (``w*_j -> s w*_j``, ``s = e^{t2}``) and the fit's slopes are compared after ``t1``
   (``beta1_i + t1``, cells recomputed), the infimum taken over ``(t1, t2)``.

This departs from the literal reading of the papers' loss, which compares the fit in its
reference-convention representation (``beta0 = 0`` for the last expert): there the weights
``w_i = exp(beta0_i)`` depend on which fitted expert is the reference, and translating the
truth alone would not be label-free (a common shift ``u`` of the fitted ``beta0`` multiplies
every ``w_i`` by ``e^u``). Translating the fit's intercepts instead (``s W_j`` against
``w*_j``) is label-free but lets ``s -> 0``, which caps the loss at ``M``: a bad fit
saturates at ``M`` and the rate curves flatten. With the normalisation the loss is
label-free (a function of the fit's density class) and not capped: it is at least the
summed parameter terms ``C``, which grow without bound as the fit moves away.

``t2`` has a closed form, the w*-weighted median of the ``W_j / w*_j`` (the proof is in
``gmoe/metrics/_cells.py``). ``t1`` enters the ``beta1`` terms and the cells; with one
feature its infimum is found exactly, among finitely many candidate shifts and the
intervals between them; with several, by Nelder-Mead from the best candidates
(``gmoe/metrics/_translation.py``). ``translation='none'`` evaluates the same normalised
fit at ``t1 = 0``, ``s = 1``, so the infimum is never above it.

Module layout: ``_cells`` (the two models on the compared scale, cells, per-cell terms and
the ``t2`` infimum), ``_translation`` (the ``t1`` infimum and the top-1 alignment), this
module (the public losses and per-parameter errors), ``boundary`` (the selection-boundary
error of a top-1 truth).
"""

from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp

from .._validation import check_option
from ._cells import (
    _as_measure,
    _check_pair,
    _pairings,
    _Problem,
    _resolve_rbar,
    _side,
)
from ._translation import _align, _is_top1, _solve, _top1

__all__ = [
    "ParameterErrors",
    "parameter_errors",
    "voronoi_cells",
    "voronoi_loss",
]

_KINDS = ("auto", "exact", "over")
_TRANSLATIONS = ("infimum", "none")
_SCALES = ("identifiable", "raw")


# -------------------------------------------------------------------------- public
def voronoi_cells(fitted, true, *, translation="infimum", scale="identifiable"):
    """Voronoi cell of each fitted atom: the index of its closest true atom.

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit ``G`` (k atoms); an estimator contributes its ``mixing_measure_``.
    true : MixingMeasure or fitted estimator
        The truth ``G*`` (k* atoms), same gating family and features.
    translation : {'infimum', 'none'}, default='infimum'
        'infimum': the cells after the gate translation that minimises the exponent-1
        (D1-form) loss, so that they do not depend on how the fit is labelled or which
        expert it uses as reference. 'none': the cells of the parameters as given.
    scale : {'identifiable', 'raw'}, default='identifiable'
        Temperature gates: compare ``gamma = (beta1, beta0) / tau`` or the raw parameters.

    Returns
    -------
    cells : ndarray of int of shape (k,)
        ``cells[i] = j`` when fitted atom ``i`` lies in ``A_j``.

    Notes
    -----
    ``dist(theta_i, theta*_j) = ||d beta1|| + ||d a|| + |d b| + |d nu|`` (``+ |d tau|``
    for the temperature families); ``beta0`` never enters; ties go to the lower ``j``. A true
    atom may have an empty cell. For a top-1 truth the fit's gate is first aligned on the
    truth's by the least-squares scale (see :func:`voronoi_loss`). For a two-expert
    tanh/sigmoid gate the cells are those of whichever of the fit and its symmetric image
    is closer to the truth (see the Theory and conventions page of the documentation).

    Examples
    --------
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import voronoi_cells
    >>> true = MixingMeasure([[2.0], [0.0]], [0.0, 0.0], [[1.0], [0.0]], [0.0, 1.0],
    ...                      [1.0, 1.0])
    >>> voronoi_cells(true, true).tolist()
    [0, 1]
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(translation, "translation", _TRANSLATIONS)
    check_option(scale, "scale", _SCALES)
    return _align(fit_m, true_m, translation, scale).cells.astype(np.intp)


def voronoi_loss(fitted, true, *, kind="auto", rbar=None, translation="infimum",
                 scale="identifiable"):
    r"""Voronoi loss between a fit and a truth: D1 (exact-specified) or D2 (over-specified).

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit ``G`` with k atoms.
    true : MixingMeasure or fitted estimator
        The truth ``G*`` with k* atoms, same gating family (and activation / top-K
        selection) and number of features.
    kind : {'auto', 'exact', 'over'}, default='auto'
        'exact': D1, requires ``k == k*``. 'over': D2, requires ``k >= k*``. 'auto': 'exact'
        when ``k == k*``, 'over' when ``k > k*``; ``k < k*`` is an error.
    rbar : dict or callable, optional
        Exponents ``rbar(m)`` of D2 for a cell of ``m >= 2`` atoms, as ``{m: exponent}`` or
        ``m -> exponent``. Defaults ``rbar(2) = 4``, ``rbar(3) = 6`` (a dict extends them);
        larger cells need it. Required for the activation gate.
    translation : {'infimum', 'none'}, default='infimum'
        'infimum': the infimum over a common translation of the gate parameters (the
        fit's slopes by ``t1``, the truth's log-weights by ``t2``). 'none': the slopes as
        given and the truth's weights untranslated. Both use the fit's weights normalised
        to the truth's total mass (see Notes).
    scale : {'identifiable', 'raw'}, default='identifiable'
        Temperature gate (and the identity activation): losses on
        ``gamma = (beta1, beta0) / tau`` or, on request, on the raw ``(beta1, beta0, tau)``,
        which are not identifiable (where a fit ends on their orbit is set by its start).

    Returns
    -------
    float
        The loss, >= 0 and 0 at the truth.

    Raises
    ------
    ValueError
        Different feature counts or gating families, ``k < k*``, ``kind='exact'`` with
        ``k != k*``, a cell of unknown exponent, a symmetric fixed-point truth.

    See Also
    --------
    parameter_errors : per-cell, per-parameter errors.
    hellinger, total_variation : distances between the conditional densities.

    Notes
    -----
    With cells ``A_j`` from :func:`voronoi_cells`, ``W_j = sum_{i in A_j} w_i`` and
    the fit's weights normalised to the truth's total mass,
    ``w_i = (sum_j w*_j) exp(beta0_i) / sum_l exp(beta0_l)``:

    .. math::

        D_1 = \sum_j \Big[ |W_j - w^*_j| + \sum_{i \in A_j} w_i
              (\|\Delta\beta_{1}\| + \|\Delta a\| + |\Delta b| + |\Delta\nu|) \Big]

        D_2 = \sum_j |W_j - w^*_j| + \sum_{|A_j| = 1} \sum_{i \in A_j} w_i (\cdots)
              + \sum_{|A_j| > 1} \sum_{i \in A_j} w_i (\|\Delta\beta_1\|^{\bar r}
              + |\Delta b|^{\bar r} + \|\Delta a\|^{\bar r / 2} + |\Delta\nu|^{\bar r / 2})

    with ``rbar = rbar(|A_j|)``; ``|d tau|`` is added with the exponent of ``d beta1``.

    * Translation: the fit is normalised to the truth's total mass and the truth is
      translated, as in paper 1: ``|W_j - e^{t2} w*_j|`` with the fit's slopes compared
      after ``beta1_i + t1``, and the infimum taken over ``(t1, t2)``. ``e^{t2}`` has a
      closed form, the w*-weighted median of ``W_j / w*_j`` (the proof is in the source
      of ``gmoe.metrics._cells``). With one feature the infimum over ``t1`` is exact: the
      loss is convex between finitely many shifts (where a cell changes or a slope term
      has its kink), so it is the smallest of the values at those shifts, the limits at
      the ends of each interval and, for D2 and top-K, the minima inside the intervals.
      With several features ``t1`` is searched from the candidates that carry each
      fitted slope onto each true slope, then refined by Nelder-Mead. The
      activation gate has no slope translation (except the identity activation, and a
      lone fitted or true expert, whose slope means nothing): only ``t2``. 'none' is
      the same normalised fit at ``t1 = 0``, ``e^{t2} = 1``, so the infimum is never
      above it.
    * The loss is label-free (relabelling or rebasing a fit changes its ``beta0`` by a
      common shift, which the normalisation removes) and not capped: it is at least the
      summed parameter terms, which grow without bound as the fit moves away (the weight
      terms alone lie in ``[0, sum_j w*_j]``). This departs from the papers' literal
      "reference convention" representation of the fit, ``w_i = exp(beta0_i)`` with the
      last expert's ``beta0 = 0``: those weights depend on which fitted expert is the
      reference, so translating the truth against them is not label-free, while
      translating the fit's weights instead (``e^{t2} W_j`` against ``w*_j``) lets
      ``e^{t2} -> 0`` and caps the loss at ``sum_j w*_j``, where bad fits saturate.
    * Top-K truth: the maximum over the K-subsets of true atoms of the per-cell terms
      restricted to them, i.e. the sum of the K largest per-cell terms.
    * Top-1 truth: the fit's gate vectors ``(beta1_i, beta0_i)`` are mapped to
      ``c (beta1_i, beta0_i) + t`` with the scale ``c >= 0`` and translation ``t``
      (``t = 0`` without translation) that best match the truth's gate in least squares;
      the weight terms are dropped and every atom counts with weight 1 (the selected
      weight is always 1, so the ``w_i`` carry no mass); the loss is the largest per-cell
      term. Here 'infimum' means this least-squares translation (label-free, but not the
      minimiser of the loss, so it is not bounded by the untranslated value). Report
      :func:`boundary_error` as the gate's metric. With an over-specified fit
      (``k > k*``), an atom that holds a few per cent of its cell's selected mass counts
      as fully as one that holds all of it: such fits can have a large loss and a small
      Hellinger distance (the documentation's reproduction page, ``paper2-top1-over``
      section).
    * Two-expert tanh/sigmoid gate: the minimum over the fit and its symmetric image
      ``(beta1_1, beta1_2) -> (-beta1_2, -beta1_1)`` (the same density), against the
      truth as given; a fit of more experts (no image) against the truth and the truth's
      image; a truth that is its own image is rejected.

    References
    ----------
    .. [1] Nguyen, Nguyen & Ho (2023). Demystifying softmax gating function in Gaussian
       mixture of experts. NeurIPS.
    .. [2] Nguyen, Akbarian, Yan & Ho (2024). Statistical perspective of top-K sparse
       softmax gating mixture of experts. ICLR.

    Examples
    --------
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import voronoi_loss
    >>> true = MixingMeasure([[2.0], [0.0]], [0.0, 0.0], [[1.0], [0.0]], [0.0, 1.0],
    ...                      [1.0, 1.0])
    >>> voronoi_loss(true, true)
    0.0
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(kind, "kind", _KINDS)
    check_option(translation, "translation", _TRANSLATIONS)
    check_option(scale, "scale", _SCALES)
    _check_pair(fit_m, true_m)
    k, k_true = fit_m.n_experts, true_m.n_experts
    if kind == "auto":
        if k < k_true:
            raise ValueError(
                f"kind='auto' needs fitted.n_experts >= true.n_experts: expected n_experts >= "
                f"{k_true}, got n_experts={k}. Voronoi losses are defined for exact- and "
                "over-specified fits only."
            )
        kind = "exact" if k == k_true else "over"
    elif kind == "exact" and k != k_true:
        raise ValueError(
            f"kind='exact' (D1) needs fitted.n_experts == true.n_experts: expected "
            f"n_experts={k_true}, got n_experts={k}."
            + (" Use kind='over' (D2)." if k > k_true else "")
        )
    elif kind == "over" and k < k_true:
        raise ValueError(
            f"kind='over' (D2) needs fitted.n_experts >= true.n_experts: expected n_experts "
            f">= {k_true}, got n_experts={k}."
        )
    if kind == "exact":
        exponent = None
    else:
        exponent = _resolve_rbar(rbar, fit_m.family)
        if rbar is None and not fit_m.family.over_specified_exponents_known() and k > 1:
            raise ValueError(
                f"rbar is required for gating={fit_m.gating!r} with kind='over': the "
                "exponents of the over-specified loss are not established for this gate. "
                "Expected a dict {m: exponent} or a callable, got rbar=None."
            )
        # The fit's own cells (those of voronoi_cells) must have known exponents;
        # translations under which a cell of unknown exponent would form are left out of
        # the infimum.
        if not _all_known(exponent, k):
            sizes = np.bincount(_align(fit_m, true_m, translation, scale).cells)
            for m in np.unique(sizes[sizes > 1]):
                exponent(int(m))
            exponent = _guarded(exponent)

    if _is_top1(true_m):
        fit, true_side, (cells, beta1, _, _, _) = _top1(fit_m, true_m, translation)
        problem = _Problem(fit, true_side, exponent=exponent, unit_weights=True)
        _, rho = problem.atom_terms(beta1)
        per_cell = np.bincount(cells, weights=rho, minlength=true_side.k)
        return _finite(float(per_cell.max()))

    n_sub = true_m.family.selected_experts()
    best = np.inf
    for fit, truth, _ in _pairings(fit_m, true_m):
        problem = _Problem(_side(fit, scale), _side(truth, scale), exponent=exponent,
                           n_sub=n_sub)
        best = min(best, _solve(problem, translation)[0])
    return _finite(best)


def _all_known(exponent, k):
    try:
        for m in range(2, k + 1):
            exponent(m)
    except ValueError:
        return False
    return True


def _guarded(exponent):
    """Wrap ``exponent`` so that an unknown ``rbar(m)`` makes the configuration infinite."""
    def wrapped(m):
        try:
            return exponent(m)
        except ValueError:
            return np.inf
    return wrapped


def _finite(value):
    if not np.isfinite(value):  # pragma: no cover - guarded by the check of the fit's cells
        raise ValueError("Every translation forms a cell of unknown exponent; pass rbar.")
    return float(value)


@dataclass(frozen=True)
class ParameterErrors:
    """Per-cell, per-parameter errors of a fit against a truth.

    Every per-cell array has shape ``(k*,)``, entry ``j`` is the maximum over the fitted
    atoms of cell ``A_j`` (NaN for an empty cell).

    Attributes
    ----------
    cells : ndarray of int of shape (k,)
        Voronoi cell of each fitted atom (after the alignment).
    weight : ndarray of shape (k*,)
        ``|W_j - s w*_j|``: the cell mass of the fit's weights normalised to the truth's
        total mass against the truth's weight translated by ``s = e^{t2}`` of the
        alignment (``s = 1`` without translation); NaN for a top-1 truth (no weights).
    gate_coef : ndarray of shape (k*,)
        ``max ||d beta1||``.
    gate_intercept : ndarray of shape (k*,)
        ``max |d beta0|`` between the normalised fit and the translated truth (NaN where
        ``beta0`` is not identified: top-1 truth with linear selection).
    expert_coef : ndarray of shape (k*,)
        ``max ||d a||``.
    expert_intercept : ndarray of shape (k*,)
        ``max |d b|``.
    expert_var : ndarray of shape (k*,)
        ``max |d nu|``.
    temperature : float or None
        ``|tau - tau*|`` on the compared scale (0 on the identifiable scale of the
        temperature gate), None for the families without temperature and where either
        side is a lone expert (its gate is 1 whatever its temperature).
    symmetric_image : bool
        Whether a symmetric image (two-expert tanh/sigmoid gate) was compared: the fit's
        (the errors are then those of the image, the same density) or, for a fit of
        more experts, the truth's.
    atom_errors : dict of str to ndarray of shape (k,)
        The same errors atom by atom (``'gate_coef'``, ``'gate_intercept'``,
        ``'expert_coef'``, ``'expert_intercept'``, ``'expert_var'``): fitted atom ``i``
        against the true atom of its cell ``cells[i]``. Each per-cell array is their
        maximum over the cell's atoms. With one feature and ``translation='infimum'``
        the infimum usually lies at a shift ``beta1*_j - beta1_i``, which carries atom
        ``i``'s gate slope onto the truth's: that atom's ``gate_coef`` is then 0 up to
        round-off.
    atom_log_weights : ndarray of shape (k,)
        ``log w_i`` of the fit's weights normalised to the truth's total mass (on the log
        scale, so that a weight too small for a float is still ordered and shared); NaN
        for a top-1 truth. ``exp(atom_log_weights[i] - logsumexp(atom_log_weights[cells ==
        j]))`` is atom ``i``'s share of its cell ``j``.
    """

    cells: np.ndarray
    weight: np.ndarray
    gate_coef: np.ndarray
    gate_intercept: np.ndarray
    expert_coef: np.ndarray
    expert_intercept: np.ndarray
    expert_var: np.ndarray
    temperature: float | None
    symmetric_image: bool
    atom_errors: dict
    atom_log_weights: np.ndarray


def _cell_max(values, cells, n_cells):
    out = np.full(n_cells, np.nan)
    for j in range(n_cells):
        sel = cells == j
        if np.any(sel):
            out[j] = np.max(values[sel])
    return out


def parameter_errors(fitted, true, *, translation="infimum", scale="identifiable"):
    """Per-cell errors of each parameter and of the cell masses.

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit (any number of experts).
    true : MixingMeasure or fitted estimator
        The truth, same gating family and features.
    translation : {'infimum', 'none'}, default='infimum'
        Align the fit's gate by the translation that minimises the exponent-1 (D1-form)
        loss summed over all cells, or compare the parameters as given.
    scale : {'identifiable', 'raw'}, default='identifiable'
        Temperature gate: errors on ``gamma = (beta1, beta0) / tau`` or raw.

    Returns
    -------
    ParameterErrors
        Cells, ``|W_j - s w*_j|`` and the maxima over each cell of ``||d beta1||``,
        ``|d beta0|``, ``||d a||``, ``|d b|``, ``|d nu|``; the same errors atom by atom
        (``atom_errors``) and the atoms' normalised log-weights (``atom_log_weights``).

    See Also
    --------
    voronoi_cells, voronoi_loss

    Notes
    -----
    The alignment is that of :func:`voronoi_cells`: for a top-1 truth, the least-squares
    scale and translation of the gate (weights are then not defined and reported as NaN);
    for a two-expert tanh/sigmoid gate, the closer of the fit and its symmetric image.
    As in :func:`voronoi_loss`, the fit's weights are normalised to the truth's total mass
    and the truth's weights translated by ``s = e^{t2}`` (when the weighted median defining
    ``s`` is an interval, the ``s`` closest to 1). ``weight`` is ``|W_j - s w*_j|`` with the
    normalised cell masses ``W_j``; ``d beta0`` compares the normalised fitted log-weight
    ``tau log w_i`` with the translated true one ``tau log(s w*_j)``, so a cell split into
    ``m`` atoms of equal weight shows ``|d beta0| = log m`` (``tau log m`` on a temperature
    scale), and ``inf`` when ``s = 0`` (empty cells holding at least half of the truth's
    mass).
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(translation, "translation", _TRANSLATIONS)
    check_option(scale, "scale", _SCALES)
    al = _align(fit_m, true_m, translation, scale)
    fit, true_side, cells = al.fit, al.true, al.cells
    n_true = true_side.k
    gate_coef = np.linalg.norm(al.beta1 - true_side.beta1[cells], axis=1)
    expert_coef = np.linalg.norm(fit.a - true_side.a[cells], axis=1)
    expert_intercept = np.abs(fit.b - true_side.b[cells])
    expert_var = np.abs(fit.nu - true_side.nu[cells])
    if al.beta0 is None:
        gate_intercept = np.full(fit.k, np.nan)
    else:
        gate_intercept = np.abs(al.beta0 - true_side.beta0[cells])
    if al.s is None:
        weight = np.full(n_true, np.nan)
    else:
        W = np.bincount(cells, weights=al.w, minlength=n_true)
        weight = np.abs(W - al.s * true_side.weights)
    return ParameterErrors(
        cells=cells.astype(np.intp),
        weight=weight,
        gate_coef=_cell_max(gate_coef, cells, n_true),
        gate_intercept=_cell_max(gate_intercept, cells, n_true),
        expert_coef=_cell_max(expert_coef, cells, n_true),
        expert_intercept=_cell_max(expert_intercept, cells, n_true),
        expert_var=_cell_max(expert_var, cells, n_true),
        temperature=(None if fit.tau is None or true_side.tau is None
                     else abs(fit.tau - true_side.tau)),
        symmetric_image=al.symmetric_image,
        atom_errors={"gate_coef": gate_coef, "gate_intercept": gate_intercept,
                     "expert_coef": expert_coef, "expert_intercept": expert_intercept,
                     "expert_var": expert_var},
        atom_log_weights=(np.full(fit.k, np.nan) if al.s is None else
                          fit.beta0 / fit.intercept_scale
                          + np.log(true_side.weights.sum())
                          - logsumexp(fit.beta0 / fit.intercept_scale)),
    )
