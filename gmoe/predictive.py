r"""The predictive distribution of a Gaussian mixture of experts on new inputs.

At every row ``x_i`` of a design the model predicts the finite Gaussian mixture

.. math::

    p(y \mid x_i) = \sum_{j=1}^{k} g_j(x_i)\, \mathcal{N}(y \mid \mu_{ij}, \nu_{ij}),
    \qquad \mu_{ij} = a_j^\top x_i + b_j,

one mixture per row. :class:`PredictiveMixture` holds these ``n_samples`` mixtures and
evaluates their moments, densities, distribution and quantile functions, central intervals
and samples, vectorised over the rows. :func:`predictive_distribution` builds it from a
:class:`~gmoe.MixingMeasure` (or a fitted estimator) and a design.

Experts outside a top-K active set have a log-gate of exactly ``-inf`` (weight 0): they
contribute nothing and never create NaN. Work that would make an
``(n_samples, n_points, n_experts)`` array is done in blocks of rows (``chunk_size``), so a
design of a million rows costs memory linear in its size.
"""

import numpy as np
from scipy.special import ndtr, ndtri

from ._blocks import evaluate_in_chunks
from ._validation import check_float_array
from .experts import compute_expert_means
from .model import as_measure, check_design_of
from .utils import check_random_state

__all__ = ["PredictiveMixture", "predictive_distribution"]

_LOG_2PI = np.log(2.0 * np.pi)
_INV_SQRT_2PI = 1.0 / np.sqrt(2.0 * np.pi)
# Elements of one (rows, points, n_experts) block when chunk_size is not given (32 MiB).
_BLOCK_ELEMENTS = 2**22
# Root finding of the quantile function: stop when |F(x) - q| <= _CDF_RTOL * min(q, 1 - q)
# or the bracket holds no float strictly inside (a near-degenerate expert can make F rise
# by more than that from one float to the next).
_CDF_RTOL = 1e-12
_MAX_ITER = 200


def _check_chunk_size(chunk_size):
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer) \
            or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or an integer >= 1, got "
                         f"chunk_size={chunk_size!r}.")
    return int(chunk_size)


class PredictiveMixture:
    r"""Row-wise Gaussian mixtures: the predictive distribution ``p(y | x_i)`` of each row.

    Row ``i`` is the mixture ``sum_j w_ij N(mu_ij, nu_ij)``, ``w_ij = exp(log_gate[i, j])``.
    Methods taking ``y`` or ``q`` evaluate every row at its own points and broadcast in
    the scipy.stats way over a leading row axis: a scalar is used at every row, an array
    of shape ``(n_samples,)`` gives one point per row, and an array of shape
    ``(n_samples, m)`` or ``(1, m)`` gives ``m`` points per row (a shared grid).

    Parameters
    ----------
    log_gate : array-like of shape (n_samples, n_experts)
        Log-weights of the components of every row; ``-inf`` marks an inactive expert
        (weight exactly 0). Each row must hold a finite entry and sum to one on the
        probability scale (to 1e-8).
    means : array-like of shape (n_samples, n_experts)
        Component means ``mu_ij``.
    variances : array-like of shape (n_experts,) or (n_samples, n_experts)
        Component **variances** ``nu`` (not standard deviations), all > 0.
    chunk_size : int, default=None
        Rows per block in the methods that build ``(rows, points, n_experts)``
        intermediates. ``None`` picks blocks of about 4 million elements.

    Attributes
    ----------
    log_weights : ndarray of shape (n_samples, n_experts)
        The log-gates, renormalised to sum to one on the probability scale.
    weights : ndarray of shape (n_samples, n_experts)
        The gate probabilities; 0 for an inactive expert.
    means : ndarray of shape (n_samples, n_experts)
    variances : ndarray of shape (n_samples, n_experts)
    n_samples, n_experts : int

    See Also
    --------
    predictive_distribution : Build one from a model and a design.

    Notes
    -----
    Moments in closed form (the law of total variance):

    .. math::

        E[y \mid x_i] = \sum_j w_{ij} \mu_{ij}, \qquad
        \mathrm{Var}[y \mid x_i] = \sum_j w_{ij} \bigl(\nu_{ij}
            + (\mu_{ij} - E[y \mid x_i])^2\bigr).

    The quantile function has no closed form: :meth:`ppf` solves ``F(x) = q`` for every
    row at once, vectorised, inside the bracket ``[min_j Q_j(q), max_j Q_j(q)]`` of the
    active components' own quantiles (the mixture CDF at the lower end is at most ``q``
    and at the upper end at least ``q``). The iteration is Newton's method on the log of
    the smaller tail probability (``log F`` for ``q <= 1/2``, ``log(1 - F)`` above, which
    converges fast far into the Gaussian tails), falling back on bisection whenever a
    step leaves the bracket or fails to halve the error. It stops at
    ``|F(x) - q| <= 1e-12 min(q, 1 - q)``.

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe.predictive import PredictiveMixture
    >>> mix = PredictiveMixture(np.log([[0.5, 0.5]]), [[-1.0, 1.0]], [1.0, 1.0])
    >>> float(mix.mean[0]), float(mix.var[0])
    (0.0, 2.0)
    >>> float(mix.ppf(0.5)[0])
    0.0
    """

    def __init__(self, log_gate, means, variances, *, chunk_size=None):
        log_gate = check_float_array(log_gate, "log_gate", ndim=2, finite=False)
        n_samples, n_experts = log_gate.shape
        if n_experts < 1:
            raise ValueError(f"log_gate must have at least one expert (column), got shape "
                             f"{log_gate.shape}.")
        if np.any(np.isnan(log_gate)) or np.any(log_gate == np.inf):
            raise ValueError("log_gate must hold finite log-weights or -inf (an inactive "
                             "expert), got NaN or +inf.")
        row_max = log_gate.max(axis=1)
        if np.any(row_max == -np.inf):
            i = int(np.argmax(row_max == -np.inf))
            raise ValueError(f"every row of log_gate needs an active expert (a finite entry), "
                             f"row {i} is all -inf.")
        log_total = row_max + np.log(np.sum(np.exp(log_gate - row_max[:, None]), axis=1))
        if np.any(np.abs(log_total) > 1e-8):
            i = int(np.argmax(np.abs(log_total)))
            raise ValueError(
                "the weights exp(log_gate) must sum to 1 in every row, got a sum of "
                f"{np.exp(log_total[i])!r} in row {i}. Normalise with "
                "scipy.special.log_softmax(logits, axis=1)."
            )
        means = check_float_array(means, "means", ndim=2, shape=(n_samples, n_experts))
        variances = np.asarray(variances, dtype=np.float64)
        if variances.ndim == 1:
            variances = check_float_array(variances, "variances", ndim=1, shape=(n_experts,))
        else:
            variances = check_float_array(variances, "variances", ndim=2,
                                          shape=(n_samples, n_experts))
        if np.any(variances <= 0):
            raise ValueError(f"variances must all be > 0, got a minimum of "
                             f"{variances.min()!r}.")
        # One row each for shared variances: views, no (n_samples, n_experts) copies.
        variances, std, log_var = (np.broadcast_to(a, (n_samples, n_experts)) for a in
                                   (variances, np.sqrt(variances), np.log(variances)))
        # Renormalise exactly (an inactive expert stays at -inf).
        self.log_weights = log_gate - log_total[:, None]
        self.weights = np.exp(self.log_weights)
        self.means = means
        self.variances = variances
        self.chunk_size = _check_chunk_size(chunk_size)
        self._std = std
        self._log_var = log_var
        self._active = log_gate > -np.inf
        # Dividing by the (rounded) total makes the CDF exactly 1 at +inf.
        self._weight_total = self.weights.sum(axis=1)

    # ---------------------------------------------------------------- shape
    @property
    def n_samples(self):
        """Number of rows (mixtures)."""
        return self.means.shape[0]

    @property
    def n_experts(self):
        """Number of components of every mixture."""
        return self.means.shape[1]

    def __len__(self):
        return self.n_samples

    def __repr__(self):
        return f"PredictiveMixture(n_samples={self.n_samples}, n_experts={self.n_experts})"

    # -------------------------------------------------------------- moments
    @property
    def mean(self):
        """Predictive mean ``E[y | x_i]``, shape (n_samples,)."""
        return np.sum(self.weights * self.means, axis=1)

    @property
    def var(self):
        """Predictive variance ``Var[y | x_i]`` (law of total variance), shape (n_samples,)."""
        dev = self.means - self.mean[:, None]
        return np.sum(self.weights * (self.variances + dev * dev), axis=1)

    @property
    def std(self):
        """Predictive standard deviation, shape (n_samples,)."""
        return np.sqrt(self.var)

    # --------------------------------------------------------------- blocks
    def _points(self, value, name, *, allow_inf):
        """``value`` as an (n_samples or 1, m) array and the output shape to restore."""
        arr = np.asarray(value, dtype=np.float64)
        n = self.n_samples
        if arr.ndim == 0:
            grid, shape = arr.reshape(1, 1), (n,)
        elif arr.ndim == 1:
            if arr.shape[0] != n:
                raise ValueError(
                    f"{name} must be a scalar, an array of shape (n_samples,) = ({n},) or of "
                    f"shape ({n}, m) or (1, m), got shape {arr.shape}. For a grid shared by "
                    f"every row pass {name}[None, :]."
                )
            grid, shape = arr[:, None], (n,)
        elif arr.ndim == 2:
            if arr.shape[0] not in (1, n):
                raise ValueError(f"{name} of shape (rows, m) must have rows = n_samples = {n} "
                                 f"or 1, got shape {arr.shape}.")
            grid, shape = arr, (n, arr.shape[1])
        else:
            raise ValueError(f"{name} must have at most 2 dimensions, got shape {arr.shape}.")
        if np.any(np.isnan(grid)) or (not allow_inf and not np.all(np.isfinite(grid))):
            what = "NaN" if allow_inf else "NaN or infinite values"
            raise ValueError(f"{name} must not contain {what}.")
        return grid, shape

    def _blocks(self, n_points):
        """Row slices whose (rows, n_points, n_experts) intermediates stay small."""
        rows = self.chunk_size
        if rows is None:
            rows = max(1, _BLOCK_ELEMENTS // max(1, n_points * self.n_experts))
        for start in range(0, self.n_samples, rows):
            yield slice(start, min(start + rows, self.n_samples))

    def _rowwise(self, value, name, func, *, allow_inf=False):
        """Apply ``func(grid_block, rows)`` block by block; shape as documented."""
        grid, shape = self._points(value, name, allow_inf=allow_inf)
        out = np.empty((self.n_samples, grid.shape[1]))
        for rows in self._blocks(grid.shape[1]):
            block = grid if grid.shape[0] == 1 else grid[rows]
            out[rows] = func(np.broadcast_to(block, (rows.stop - rows.start, grid.shape[1])),
                             rows)
        return out.reshape(shape)

    # ------------------------------------------------------------ densities
    def _logpdf_block(self, y, rows):
        # y: (r, m); components (r, m, k) in the log domain, max-shifted log-sum-exp.
        resid = y[:, :, None] - self.means[rows, None, :]
        with np.errstate(over="ignore"):  # a squared residual beyond float64: density 0
            log_comp = self.log_weights[rows, None, :] - 0.5 * (
                _LOG_2PI + self._log_var[rows, None, :]
                + resid * resid / self.variances[rows, None, :])
        # Every row has an active expert and y is finite, so the maximum is finite unless
        # y lies so far out that every component's density underflows to 0: its log
        # density is then -inf (the shift is 0 there, not -inf - -inf).
        top = log_comp.max(axis=2)
        top = np.where(np.isfinite(top), top, 0.0)
        with np.errstate(divide="ignore"):
            return top + np.log(np.sum(np.exp(log_comp - top[:, :, None]), axis=2))

    def logpdf(self, y):
        """Log predictive density ``log p(y | x_i)``.

        Parameters
        ----------
        y : float or array-like of shape (n_samples,), (n_samples, m) or (1, m)
            Points (finite).

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, m)
        """
        return self._rowwise(y, "y", self._logpdf_block)

    def pdf(self, y):
        """Predictive density ``p(y | x_i)``; ``y`` as in :meth:`logpdf`.

        Parameters
        ----------
        y : float or array-like of shape (n_samples,), (n_samples, m) or (1, m)
            Points (finite).

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, m)
        """
        return np.exp(self.logpdf(y))

    def _cdf_block(self, y, rows):
        z = (y[:, :, None] - self.means[rows, None, :]) / self._std[rows, None, :]
        return np.sum(self.weights[rows, None, :] * ndtr(z), axis=2) \
            / self._weight_total[rows, None]

    def cdf(self, y):
        """Predictive distribution function ``P(Y <= y | x_i)``.

        Parameters
        ----------
        y : float or array-like of shape (n_samples,), (n_samples, m) or (1, m)
            Points; ``-inf`` and ``inf`` are allowed.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, m)
        """
        return np.clip(self._rowwise(y, "y", self._cdf_block, allow_inf=True), 0.0, 1.0)

    def _sf_block(self, y, rows):
        z = (self.means[rows, None, :] - y[:, :, None]) / self._std[rows, None, :]
        return np.sum(self.weights[rows, None, :] * ndtr(z), axis=2) \
            / self._weight_total[rows, None]

    def sf(self, y):
        """Predictive survival function ``P(Y > y | x_i) = 1 - cdf(y)``.

        Computed from the upper tails directly, so it keeps its relative precision
        where ``cdf`` rounds to 1. ``y`` as in :meth:`cdf`.

        Parameters
        ----------
        y : float or array-like of shape (n_samples,), (n_samples, m) or (1, m)
            Points; ``-inf`` and ``inf`` are allowed.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, m)
        """
        return np.clip(self._rowwise(y, "y", self._sf_block, allow_inf=True), 0.0, 1.0)

    # -------------------------------------------------------------- quantiles
    def _ppf_block(self, q, rows):
        r, m = q.shape
        out = np.empty((r, m))
        out[q == 0.0] = -np.inf
        out[q == 1.0] = np.inf
        inner = (q > 0.0) & (q < 1.0)
        row_idx = np.broadcast_to(np.arange(rows.start, rows.stop)[:, None], (r, m))[inner]
        out[inner] = self._solve_ppf(q[inner], row_idx)
        return out

    def _solve_ppf(self, q, row_idx):
        """Root of ``F_i(x) = q`` for the pairs ``(row_idx[t], q[t])``; 0 < q < 1."""
        if q.size == 0:
            return np.empty(0)
        w = self.weights[row_idx] / self._weight_total[row_idx, None]
        mu, sd = self.means[row_idx], self._std[row_idx]
        active = self._active[row_idx]
        # Work on the smaller tail: F(x) - q for q <= 1/2, (1 - q) - S(x) above, with
        # S = 1 - F summed from ndtr(-z). 1 - q is exact for q >= 1/2, so the tail
        # probability is resolved to a relative precision in both tails.
        sign = np.where(q > 0.5, -1.0, 1.0)
        tail = np.where(q > 0.5, 1.0 - q, q)
        tol = _CDF_RTOL * tail
        z_q = sign * ndtri(tail)
        comp_q = mu + sd * z_q[:, None]
        lo = np.where(active, comp_q, np.inf).min(axis=1)
        hi = np.where(active, comp_q, -np.inf).max(axis=1)
        # Start from the normal approximation, moved into the bracket.
        mean = np.sum(w * mu, axis=1)
        std = np.sqrt(np.sum(w * (sd * sd + (mu - mean[:, None]) ** 2), axis=1))
        x = np.clip(mean + std * z_q, lo, hi)
        todo = np.flatnonzero(lo < hi)  # lo == hi: every active component agrees
        prev_gap = np.full(q.shape, np.inf)
        for _ in range(_MAX_ITER):
            if todo.size == 0:
                break
            xt, wt, mut, sdt, st = x[todo], w[todo], mu[todo], sd[todo], sign[todo]
            z = (xt[:, None] - mut) / sdt
            # T: the tail probability on the side named by the sign; F(x) - q has the
            # sign of sign * (T - tail).
            t_prob = np.sum(wt * ndtr(st[:, None] * z), axis=1)
            diff = t_prob - tail[todo]
            dens = np.sum(wt * _INV_SQRT_2PI * np.exp(-0.5 * z * z) / sdt, axis=1)
            lo_t = np.where(st * diff <= 0.0, xt, lo[todo])
            hi_t = np.where(st * diff >= 0.0, xt, hi[todo])
            lo[todo], hi[todo] = lo_t, hi_t
            mid = 0.5 * (lo_t + hi_t)
            # Converged, or no float left strictly inside the bracket.
            done = (np.abs(diff) <= tol[todo]) | (mid <= lo_t) | (mid >= hi_t)
            # Newton on log T - log tail (fast in the Gaussian tails, where Newton on F
            # crawls), inside the bracket while it converges; bisection otherwise (a flat
            # stretch between separated experts, an underflow, or a step that did not
            # halve the gap).
            with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
                log_gap = np.log(t_prob) - np.log(tail[todo])
                newton = xt - st * log_gap * t_prob / dens
            use_newton = np.isfinite(newton) & (newton > lo_t) & (newton < hi_t) \
                & (np.abs(log_gap) <= 0.5 * prev_gap[todo])
            step = np.where(use_newton, newton, mid)
            prev_gap[todo] = np.abs(log_gap)
            keep = ~done
            x[todo[keep]] = step[keep]
            todo = todo[keep]
        return x

    def ppf(self, q):
        """Predictive quantile function, the inverse of :meth:`cdf`.

        Parameters
        ----------
        q : float or array-like of shape (n_samples,), (n_samples, m) or (1, m)
            Probabilities in [0, 1]; 0 and 1 give ``-inf`` and ``inf``.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, m)
            ``x`` with ``|F_i(x) - q| <= 1e-12 min(q, 1 - q)``, or, where the CDF rises
            by more than that from one float to the next (a near-degenerate expert), the
            float at which it crosses ``q``. Tail probabilities below the smallest normal
            float (about 2.2e-308) are subnormal and carry fewer digits: there the
            guarantee is only to the precision of ``q`` itself.
        """
        arr = np.asarray(q, dtype=np.float64)
        if np.any(np.isnan(arr)) or np.any((arr < 0.0) | (arr > 1.0)):
            bad = arr[np.isnan(arr) | (arr < 0.0) | (arr > 1.0)].ravel()[0]
            raise ValueError(f"q must hold probabilities in [0, 1], got {bad!r}.")
        return self._rowwise(arr, "q", self._ppf_block)

    def median(self):
        """Predictive median, shape (n_samples,).

        Returns
        -------
        ndarray of shape (n_samples,)
            ``ppf(0.5)``.
        """
        return self.ppf(0.5)

    def interval(self, level=0.9):
        """Central predictive interval of probability ``level``.

        Parameters
        ----------
        level : float, default=0.9
            Coverage, in (0, 1).

        Returns
        -------
        lower, upper : ndarray of shape (n_samples,)
            The ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of every row.
        """
        try:
            level_f = float(level)
        except (TypeError, ValueError) as err:
            raise ValueError(f"level must be a number in (0, 1), got {level!r}.") from err
        if not 0.0 < level_f < 1.0:
            raise ValueError(f"level must be a number in (0, 1), got level={level!r}.")
        bounds = self.ppf(np.array([[0.5 * (1.0 - level_f), 0.5 * (1.0 + level_f)]]))
        return bounds[:, 0], bounds[:, 1]

    # ---------------------------------------------------------------- samples
    def rvs(self, size=None, random_state=None):
        """Draw from the predictive distribution of every row.

        Parameters
        ----------
        size : int, default=None
            Draws per row: ``None`` gives one draw per row, shape (n_samples,); an int
            ``m`` gives shape (n_samples, m).
        random_state : int, Generator, RandomState or None, default=None

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, size)
        """
        if size is None:
            m, shape = 1, (self.n_samples,)
        elif isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 0:
            raise ValueError(f"size must be None or an integer >= 0, got size={size!r}.")
        else:
            m, shape = int(size), (self.n_samples, int(size))
        rng = check_random_state(random_state)
        # Every row's uniforms, then every row's normals (held in ``out``), drawn before
        # the blocks: the draws do not depend on chunk_size.
        uniform = rng.random((self.n_samples, m))
        out = rng.standard_normal((self.n_samples, m))
        cumulative = np.cumsum(self.weights, axis=1)
        for rows in self._blocks(m):
            cum = cumulative[rows]
            # u in (0, 1]: the first expert whose cumulative weight reaches u * total is
            # never one of weight 0 (an inactive top-K expert).
            u = (1.0 - uniform[rows]) * cum[:, -1:]
            labels = np.minimum(np.sum(cum[:, None, :] < u[:, :, None], axis=2),
                                self.n_experts - 1)
            row_idx = np.arange(rows.start, rows.stop)[:, None]
            out[rows] = self.means[row_idx, labels] + self._std[row_idx, labels] * out[rows]
        return out.reshape(shape)


def predictive_distribution(measure, X, *, chunk_size=None):
    """The predictive distribution ``p(y | x)`` of a model at every row of ``X``.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
        The model; an estimator is read through its ``mixing_measure_``.
    X : array-like of shape (n_samples, n_features)
    chunk_size : int, default=None
        Passed to :class:`PredictiveMixture`.

    Returns
    -------
    PredictiveMixture
        One Gaussian mixture per row, with the gate of ``measure`` as weights (exactly 0
        for the experts a top-K gate leaves out).

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe import MixingMeasure
    >>> from gmoe.predictive import predictive_distribution
    >>> g = MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
    ...                   [0.09, 0.16])
    >>> mix = predictive_distribution(g, np.linspace(0, 1, 5)[:, None])
    >>> lower, upper = mix.interval(0.9)
    >>> bool(np.all(lower < mix.median()) and np.all(mix.median() < upper))
    True
    """
    X = check_design_of(measure, X)  # an estimator's feature names are checked too
    measure = as_measure(measure)
    # Row chunks: the mixture's arrays are the only ones for every row at once.
    log_gate, means = evaluate_in_chunks(
        lambda rows: (measure.log_gate(rows),
                      compute_expert_means(rows, measure.expert_coef, measure.expert_intercept)),
        (X,))
    return PredictiveMixture(log_gate, means, measure.expert_var, chunk_size=chunk_size)
