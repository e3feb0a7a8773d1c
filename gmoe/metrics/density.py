"""Expected Hellinger and total-variation distances between conditional densities.

Both compare ``p(. | x)`` and ``q(. | x)`` of two mixtures of experts of any families and
any numbers of experts, row by row of a design, and average over the rows. For each row,
both are finite Gaussian mixtures in y and the distances are computed by compiled kernels
(``gmoe._kernels._density``, which documents the method):

* Hellinger: ``h^2(x) = 1/2 int (sqrt p - sqrt q)^2 dy``, the squared difference integrated
  directly (a small ``h`` keeps its relative accuracy: no ``1 - int sqrt(pq)``
  cancellation), by a trapezoidal rule on a lattice scaled to the components (composite
  Gauss-Legendre where a narrow component sits inside a wide one), each stretch refined
  until the estimated error of ``2 h^2`` is below ``max(_RTOL 2 h^2, _ATOL)``.
* Total variation: ``TV(x) = int (p - q)_+ dy``, exactly through the mixture CDFs between
  the crossings of ``p`` and ``q``, located by Newton's method.

Both place points ``y`` in float64: a component whose standard deviation is below a
million times the spacing of float64 numbers at its mean cannot be resolved there, and a
RuntimeWarning says so (the distances are computed as for any other input).

See the Theory and conventions page of the documentation (``theory-density``).
"""

import warnings

import numpy as np

from .._kernels._density import (
    _LOG_WEIGHT_FLOOR,
    _WINDOW,
    hellinger_sq_rows_into,
    total_variation_rows_into,
)
from .._validation import check_float_array, check_int_in_range
from ..model import check_design_of, make_design
from ._cells import _as_measure

__all__ = ["hellinger", "total_variation"]

#: Target for the estimated error of ``S = int (sqrt p - sqrt q)^2 = 2 h^2``:
#: ``max(_RTOL S, _ATOL)``. The estimate compares two lattice levels; it can understate the
#: error where the two coarsest levels alias a narrow feature alike (twentyfold in the
#: worst design row we found), so h is accurate to about 1e-9 relative rather than 1e-10
#: (1e-9 absolute when h is below 1e-5: the floor sits above the integrand's rounding
#: noise, about 1e-15 h).
_RTOL = 1e-10
_ATOL = 1e-18
#: ``log p - log q`` at or below this counts as ``p = q`` when locating the crossings.
_SIGN_TOL = 1e-12
#: Largest spacing of float64 numbers across a component's window, in its standard
#: deviations, at which both distances keep their accuracy. The kernels place quadrature
#: nodes, window edges and TV crossings at float64 positions ``y``, rounded by that
#: spacing ``r`` (in standard deviations). Measured: TV moves by about ``0.2 r^2`` (a
#: crossing off by ``r``), ``h`` by about ``0.01 r^2`` relative where a narrow component
#: sits inside a wide one (Gauss-Legendre nodes), and at ``r`` of 1 or more the window
#: ``mu +- 10 sd`` holds a handful of numbers or none and the component drops out (h = 0.71
#: instead of 1 for ``expert_var = 1e-36`` at ``|mu|`` near 4). At 1e-6 both stay within
#: their documented accuracies; ordinary models are many orders below it (a fit's variance
#: floor ``reg_var var(y)`` keeps ``r`` near ``1e-13 |mu| / sd(y)``).
_MAX_POSITION_ROUNDING = 1e-6


class _Components:
    """Log-gates, means and standard deviations of one model on design rows (private)."""

    def __init__(self, measure, X):
        self.log_gate = np.ascontiguousarray(measure.log_gate(X), dtype=np.float64)   # (n, k)
        self.mean = np.ascontiguousarray(X @ measure.expert_coef.T + measure.expert_intercept,
                                         dtype=np.float64)                            # (n, k)
        self.sd = np.ascontiguousarray(np.sqrt(measure.expert_var), dtype=np.float64)  # (k,)

    def arrays(self):
        return self.mean, self.log_gate, self.sd

    def position_rounding(self):
        """Spacing of float64 numbers across each component's window, in its sds (n, k).

        0 for the components that the kernels drop (gate below their floor); NaN for an
        infinite mean.
        """
        rounding = np.spacing(np.abs(self.mean) + _WINDOW * self.sd) / self.sd
        return np.where(self.log_gate > _LOG_WEIGHT_FLOOR, rounding, 0.0)


def _warn_unresolved(metric, first, second):
    """Warn when a component is too narrow for float64 positions at its mean.

    Reads the components only: the distances' arithmetic is that of every other input.
    """
    rounding = np.concatenate([first.position_rounding(), second.position_rounding()],
                              axis=1)
    unresolved = ~(rounding <= _MAX_POSITION_ROUNDING)     # NaN counts as unresolved
    rows = unresolved.any(axis=1)
    if not rows.any():
        return
    worst = float(np.max(np.where(np.isnan(rounding), np.inf, rounding)))
    warnings.warn(
        f"{metric}: on {int(rows.sum())} of {rows.size} design rows a component's standard "
        "deviation is too small for float64 numbers at its mean: positions y there are "
        f"rounded by up to {worst:.3g} of its standard deviations (more than "
        f"{_MAX_POSITION_ROUNDING:g}), so the distance's accuracy is not guaranteed there "
        "(at 1 or more the component drops out of the integral and the distance can be "
        "off by up to 1). Centre and scale y, or compare models whose expert_var is not "
        "this small relative to their means.",
        RuntimeWarning, stacklevel=3)


def _pointwise_hellinger_sq(first, second):
    """``h^2(x)`` of every row, shape (n_samples,)."""
    out = np.empty(first.mean.shape[0])
    flag = np.empty(first.mean.shape[0], dtype=np.int64)
    hellinger_sq_rows_into(*first.arrays(), *second.arrays(), _RTOL, _ATOL, out, flag)
    if flag.any():
        # Not seen on any model: it needs features 4096 times narrower than the smallest
        # standard deviation where the integrand matters.
        warnings.warn(
            f"hellinger: the quadrature did not reach its tolerance on {int(flag.sum())} of "
            f"{flag.size} design rows (a relative error of about {_RTOL:g} is not "
            "guaranteed there).", RuntimeWarning, stacklevel=3)
    return out


def _pointwise_tv(first, second):
    """``TV(x)`` of every row, shape (n_samples,)."""
    out = np.empty(first.mean.shape[0])
    total_variation_rows_into(*first.arrays(), *second.arrays(), _SIGN_TOL, out)
    return out


def _prepare(g1, g2, X, n_mc, design, random_state):
    first, second = _as_measure(g1, "g1"), _as_measure(g2, "g2")
    if first.n_features != second.n_features:
        raise ValueError(
            "g1 and g2 must have the same number of features: expected "
            f"n_features={first.n_features} (g1's), got n_features={second.n_features} "
            "(g2's)."
        )
    d = first.n_features
    if (X is None) == (n_mc is None):
        raise ValueError(
            "Pass exactly one of X (the design rows) and n_mc (a Monte Carlo design size), "
            f"got X={'None' if X is None else 'an array'}, n_mc={n_mc!r}."
        )
    if X is None:
        n_mc = check_int_in_range(n_mc, "n_mc", 1, np.iinfo(np.int64).max)
        X = make_design(n_mc, design, n_features=d, random_state=random_state)
    else:
        for model in (g1, g2):  # a fitted estimator checks its feature names too
            check_design_of(model, X)
    X = check_float_array(X, "X", ndim=2, shape=(None, d))
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one row, got 0 rows.")
    return _Components(first, X), _Components(second, X)


def hellinger(g1, g2, X=None, *, n_mc=None, design="uniform", random_state=None):
    r"""Expected Hellinger distance between two conditional densities.

    .. math::

        E_X\, h(p(\cdot \mid X), q(\cdot \mid X)), \qquad
        h^2 = \tfrac12 \int (\sqrt p - \sqrt q)^2 \, dy

    averaged over the design rows (an empirical or Monte Carlo expectation in ``x``).

    Parameters
    ----------
    g1, g2 : MixingMeasure or fitted estimator
        The two models; any gating families and numbers of experts, the same features.
    X : array-like of shape (n_samples, n_features), optional
        The design rows the distance is averaged over.
    n_mc : int, optional
        Instead of ``X``: draw a design of ``n_mc`` rows with :func:`gmoe.make_design`.
    design : {'uniform', 'grid', 'normal'}, default='uniform'
        Kind of the drawn design (``make_design``'s ``kind``, on [0, 1] for 'uniform'
        and 'grid').
    random_state : int, Generator, RandomState or None, default=None
        Seed of the drawn design.

    Returns
    -------
    float
        In [0, 1]; 0 when the densities agree at every row.

    See Also
    --------
    total_variation, gmoe.metrics.voronoi_loss

    Notes
    -----
    The y-integral of each row is a trapezoidal rule on a lattice scaled to the
    components' standard deviations over their means +- 10 of them (composite
    Gauss-Legendre where a narrow component sits inside a wide one), refined until its
    error estimate meets the tolerance: ``h`` is accurate to about 1e-9 relative (1e-9
    absolute below ``h = 1e-5``). Computing ``(sqrt p - sqrt q)^2`` directly keeps small
    distances accurate. The distance is invariant to relabelling either model's experts
    and accepts models of different families: only the densities matter. See the Theory
    and conventions page of the documentation. A component whose standard deviation is
    below 1e6 times the spacing of float64 numbers at its mean is not resolved (the
    nodes' positions are rounded): a RuntimeWarning says so.

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import hellinger
    >>> g = MixingMeasure([[0.0]], [0.0], [[1.0]], [0.0], [1.0])
    >>> hellinger(g, g, np.zeros((1, 1)))
    0.0
    """
    first, second = _prepare(g1, g2, X, n_mc, design, random_state)
    _warn_unresolved("hellinger", first, second)
    return float(np.mean(np.sqrt(_pointwise_hellinger_sq(first, second))))


def total_variation(g1, g2, X=None, *, n_mc=None, design="uniform", random_state=None):
    r"""Expected total-variation distance between two conditional densities.

    .. math::

        E_X\, \mathrm{TV}(p(\cdot \mid X), q(\cdot \mid X)), \qquad
        \mathrm{TV} = \tfrac12 \int |p - q| \, dy

    Parameters
    ----------
    g1, g2 : MixingMeasure or fitted estimator
        The two models; any gating families and numbers of experts, the same features.
    X : array-like of shape (n_samples, n_features), optional
        The design rows the distance is averaged over.
    n_mc : int, optional
        Instead of ``X``: draw a design of ``n_mc`` rows with :func:`gmoe.make_design`.
    design : {'uniform', 'grid', 'normal'}, default='uniform'
        Kind of the drawn design (``make_design``'s ``kind``, on [0, 1] for 'uniform'
        and 'grid').
    random_state : int, Generator, RandomState or None, default=None
        Seed of the drawn design.

    Returns
    -------
    float
        In [0, 1]; 0 when the densities agree at every row.

    See Also
    --------
    hellinger

    Notes
    -----
    Computed exactly through the mixture CDFs between the crossing points of ``p`` and
    ``q`` (``TV = int (p - q)_+``), the crossings bracketed on a lattice of half standard
    deviations (with a check of the extrema of ``p - q`` between its nodes) and refined by
    Newton's method; accurate to about 1e-12. As for :func:`hellinger`, a component whose
    standard deviation is below 1e6 times the spacing of float64 numbers at its mean is
    not resolved (the crossings' positions are rounded): a RuntimeWarning says so.

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import total_variation
    >>> g = MixingMeasure([[0.0]], [0.0], [[0.0]], [0.0], [1.0])
    >>> h = g.replace(expert_intercept=[1.0])
    >>> round(total_variation(g, h, np.zeros((1, 1))), 10)  # 2 Phi(1/2) - 1
    0.3829249225
    """
    first, second = _prepare(g1, g2, X, n_mc, design, random_state)
    _warn_unresolved("total_variation", first, second)
    return float(np.mean(_pointwise_tv(first, second)))
