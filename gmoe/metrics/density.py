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

See the Theory and conventions page of the documentation (``theory-density``).
"""

import warnings

import numpy as np

from .._kernels._density import hellinger_sq_rows_into, total_variation_rows_into
from .._validation import check_float_array, check_int_in_range
from ..model import make_design
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


class _Components:
    """Log-gates, means and standard deviations of one model on design rows (private)."""

    def __init__(self, measure, X):
        self.log_gate = np.ascontiguousarray(measure.log_gate(X), dtype=np.float64)   # (n, k)
        self.mean = np.ascontiguousarray(X @ measure.expert_coef.T + measure.expert_intercept,
                                         dtype=np.float64)                            # (n, k)
        self.sd = np.ascontiguousarray(np.sqrt(measure.expert_var), dtype=np.float64)  # (k,)

    def arrays(self):
        return self.mean, self.log_gate, self.sd


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
    and conventions page of the documentation.

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
    Newton's method; accurate to about 1e-12.

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
    return float(np.mean(_pointwise_tv(first, second)))
