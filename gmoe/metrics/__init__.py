"""Metrics between a fitted model and a truth.

* Voronoi losses (:mod:`gmoe.metrics.voronoi`): :func:`voronoi_cells`,
  :func:`voronoi_loss` (D1, D2, top-K, top-1, translation infimum),
  :func:`parameter_errors`; the selection-boundary error of a top-1 truth
  (:mod:`gmoe.metrics.boundary`): :func:`boundary_error`.
* Density distances (:mod:`gmoe.metrics.density`): :func:`hellinger`,
  :func:`total_variation`, expected over a design.

Every function accepts a :class:`~gmoe.MixingMeasure` or a fitted estimator.
"""

from .boundary import boundary_error
from .density import hellinger, total_variation
from .voronoi import ParameterErrors, parameter_errors, voronoi_cells, voronoi_loss

__all__ = [
    "ParameterErrors",
    "boundary_error",
    "hellinger",
    "parameter_errors",
    "total_variation",
    "voronoi_cells",
    "voronoi_loss",
]
