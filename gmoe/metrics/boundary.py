"""The selection-boundary error: the gate's metric for a top-1 truth.

Only the selection regions of a top-1 truth are identifiable; the error compares where the
fit and the truth select their experts.
"""

import numpy as np

from .._validation import check_float_array, check_option
from ..model import check_design_of
from ._cells import _as_measure, _check_pair, _linear_logits
from .voronoi import voronoi_cells

__all__ = ["boundary_error"]

_BOUNDARY_KINDS = ("fraction", "hausdorff")


def _selection_lines(measure):
    """Slopes and intercepts of the scores whose argmax selects the top expert (d = 1)."""
    if not _linear_logits(measure):
        raise ValueError(
            "kind='hausdorff' needs linear selection scores (logits beta1^T x + beta0), "
            f"got gating {measure.family.describe()}. Use kind='fraction'."
        )
    slopes = measure.gate_coef[:, 0]
    if not measure.family.selection_uses_intercept:
        return slopes, np.zeros(measure.n_experts)
    return slopes, measure.gate_intercept


def _boundary_points(slopes, intercepts, labels, low, high):
    """Points of ``(low, high)`` where the label of the top-scored line changes."""
    ds = slopes[:, None] - slopes[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = -(intercepts[:, None] - intercepts[None, :]) / ds
    cross = cross[np.isfinite(cross) & (cross > low) & (cross < high)]
    points = np.unique(np.concatenate([[low, high], cross]))
    mids = 0.5 * (points[:-1] + points[1:])
    seg = labels[np.argmax(mids[:, None] * slopes + intercepts, axis=1)]
    return points[1:-1][seg[:-1] != seg[1:]]


def boundary_error(fitted, true, X, *, kind="fraction"):
    """Distance between the fitted and the true selection boundaries over a design.

    The gate's metric for a top-1 truth, where only the selection regions are
    identifiable; defined for any gating family through the most-weighted expert.

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit, same gating family and features as the truth.
    true : MixingMeasure or fitted estimator
        The truth.
    X : array-like of shape (n_samples, n_features)
        The design.
    kind : {'fraction', 'hausdorff'}, default='fraction'
        'fraction': the fraction of design rows whose selected expert differs, the fit's
        experts mapped to true experts by their Voronoi cells (:func:`voronoi_cells`).
        'hausdorff' (one feature, linear selection scores): the Hausdorff distance between
        the fitted and the true boundary locations inside ``[min X, max X]``, both sets
        augmented with the two ends of that range.

    Returns
    -------
    float
        0 when the selections agree; 'fraction' is in [0, 1], 'hausdorff' in
        ``[0, max X - min X]``.

    Notes
    -----
    The selected expert at ``x`` is the one of largest gate (ties to the lower index),
    i.e. the top-1 selection. A fit's boundary between two of its experts of the same
    Voronoi cell is not a boundary. On a one-feature grid or a uniform design, 'fraction'
    estimates the length of the set where the selections differ over the range length:
    when the boundaries correspond one to one, the sum of the boundary shifts divided by
    the range. 'hausdorff' is the largest shift; the range ends make it finite when the
    fit and the truth have different numbers of boundaries.

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import boundary_error
    >>> true = MixingMeasure([[25.0], [0.0]], [-8.1, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
    ...                      [0.09, 0.16], gating="topk", top_k=1)
    >>> fit = true.replace(gate_intercept=[-9.1, 0.0])
    >>> X = np.linspace(0, 1, 101)[:, None]
    >>> round(boundary_error(fit, true, X, kind="hausdorff"), 12)
    0.04
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(kind, "kind", _BOUNDARY_KINDS)
    _check_pair(fit_m, true_m)
    for model in (fitted, true):  # a fitted estimator checks its feature names too
        check_design_of(model, X)
    X = check_float_array(X, "X", ndim=2, shape=(None, true_m.n_features))
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one row, got 0 rows.")
    cells = voronoi_cells(fit_m, true_m)
    if kind == "fraction":
        selected_true = np.argmax(true_m.log_gate(X), axis=1)
        selected_fit = cells[np.argmax(fit_m.log_gate(X), axis=1)]
        return float(np.mean(selected_fit != selected_true))
    if true_m.n_features != 1:
        raise ValueError(
            "kind='hausdorff' locates boundaries on one feature: expected n_features=1, got "
            f"n_features={true_m.n_features}. Use kind='fraction'."
        )
    true_lines, fit_lines = _selection_lines(true_m), _selection_lines(fit_m)
    low, high = float(X.min()), float(X.max())
    if not high > low:
        return 0.0
    true_points = _boundary_points(*true_lines, np.arange(true_m.n_experts), low, high)
    fit_points = _boundary_points(*fit_lines, cells, low, high)
    a = np.concatenate([[low, high], true_points])
    b = np.concatenate([[low, high], fit_points])
    gaps = np.abs(a[:, None] - b[None, :])
    return float(max(gaps.min(axis=1).max(), gaps.min(axis=0).max()))
