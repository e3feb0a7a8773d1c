"""Convergence rates from a tidy table of simulation results.

Every function here is pure: it takes a *table* of finished tasks and returns numbers. A
table is either a mapping of equal-length 1-D arrays (a ``dict``, a pandas ``DataFrame``)
or a sequence of rows (``dict`` or ``sqlite3.Row``), with a sample-size column ``n`` (or
``n_samples``) and one or more numeric loss columns, one row per
``(n, replication)`` task. Nothing here reads the result store.

A loss entry that is not finite (NaN for a failed fit, SQL ``NULL``, ``inf``) is dropped
for that loss only; the number dropped is reported (:attr:`RateFit.n_dropped`, the
``n_dropped`` column of :func:`rate_table`). A negative loss is an error. The rate is the
least-squares slope of ``log(mean loss over replications)`` on ``log n``, with
the t-interval of statsmodels' OLS; :func:`bootstrap_slope` resamples the replications
instead. The slopes the theory predicts come from :mod:`gmoe.theory`
(:ref:`theory-rates`).
"""

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from ..theory import NO_THEORY, theory
from ..utils import check_random_state

__all__ = [
    "BootstrapSlope",
    "LossByN",
    "RateFit",
    "bootstrap_slope",
    "fit_rate",
    "format_rate_table",
    "mean_loss_by_n",
    "rate_table",
    "slope_sensitivity",
]

_N_COLUMNS = ("n", "n_samples")


# --------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------


def _as_columns(table):
    """A table (mapping of 1-D arrays or sequence of rows) as a dict of 1-D arrays."""
    if isinstance(table, Mapping) or (hasattr(table, "keys") and hasattr(table, "columns")):
        columns = {str(key): np.asarray(table[key]) for key in table.keys()}
    elif isinstance(table, (list, tuple)):
        rows = []
        for i, row in enumerate(table):
            try:
                rows.append(dict(row))
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"table rows must be mappings (dict or sqlite3.Row), got row {i} of type "
                    f"{type(row).__name__}: {row!r}."
                ) from err
        names = list(dict.fromkeys(key for row in rows for key in row))
        columns = {
            str(name): np.asarray([row.get(name, np.nan) for row in rows]) for name in names
        }
    else:
        raise ValueError(
            "table must be a mapping of equal-length 1-D arrays or a list of dict rows, got "
            f"{type(table).__name__}."
        )
    lengths = {name: col.shape for name, col in columns.items()}
    bad = {name: shape for name, shape in lengths.items() if len(shape) != 1}
    if bad:
        raise ValueError(f"table columns must be 1-D, got shapes {bad}.")
    if len({shape[0] for shape in lengths.values()}) > 1:
        raise ValueError(
            "table columns must have equal lengths, got "
            + ", ".join(f"{name}: {shape[0]}" for name, shape in lengths.items())
            + "."
        )
    return columns


def _restrict(table, min_n):
    """The table's rows with ``n >= min_n`` (the table itself when None)."""
    if min_n is None:
        return table
    columns = _as_columns(table)
    keep = _sizes(columns) >= min_n
    return {key: col[keep] for key, col in columns.items()}


def _numeric(columns, name):
    """Column ``name`` as float64, with an error naming it when absent or not numeric."""
    if name not in columns:
        raise ValueError(
            f"table has no column {name!r}; available columns: {sorted(columns)}."
        )
    try:
        return np.asarray(columns[name], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"column {name!r} must be numeric, got values of dtype {columns[name].dtype}."
        ) from err


def _sizes(columns):
    """The sample-size column (``n``, else ``n_samples``), checked."""
    for name in _N_COLUMNS:
        if name in columns:
            n = _numeric(columns, name)
            if not np.all(np.isfinite(n)) or np.any(n <= 0):
                raise ValueError(
                    f"column {name!r} (sample size) must hold positive finite numbers, got "
                    f"{n[~(np.isfinite(n) & (n > 0))][:5]}."
                )
            return n
    raise ValueError(
        f"table has no sample-size column 'n' (or 'n_samples'); available columns: "
        f"{sorted(columns)}."
    )


def _loss_values(table, loss):
    """(n, values, n_dropped): the finite entries of column ``loss`` and their sizes."""
    if not isinstance(loss, str):
        raise ValueError(f"loss must be a column name (str), got {loss!r}.")
    columns = _as_columns(table)
    values = _numeric(columns, loss)
    n = _sizes(columns)
    keep = np.isfinite(values)
    return n[keep], values[keep], int(np.count_nonzero(~keep))


class LossByN(NamedTuple):
    """Per-sample-size summary of one loss column (see :func:`mean_loss_by_n`).

    Inside the geometric rate fits, ``mean`` holds the geometric means and ``se`` the
    standard errors of the mean logs.
    """

    n: np.ndarray
    mean: np.ndarray
    se: np.ndarray
    count: np.ndarray


def _group(n, values):
    sizes, inverse = np.unique(n, return_inverse=True)
    count = np.bincount(inverse, minlength=sizes.size)
    scale = np.ones(sizes.size)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.bincount(inverse, weights=values, minlength=sizes.size) / count
        sq = np.bincount(inverse, weights=(values - mean[inverse]) ** 2, minlength=sizes.size)
    if not (np.all(np.isfinite(mean)) and np.all(np.isfinite(sq))):
        # Finite values near the float maximum overflow their sum (a diverged fit's loss):
        # sum them in units of each size's largest |value| instead.
        np.maximum.at(scale, inverse, np.abs(values))
        scale[scale == 0] = 1.0
        unit = values / scale[inverse]
        mean_unit = np.bincount(inverse, weights=unit, minlength=sizes.size) / count
        mean = mean_unit * scale
        sq = np.bincount(inverse, weights=(unit - mean_unit[inverse]) ** 2,
                         minlength=sizes.size)
    se = np.full(sizes.size, np.nan)
    many = count > 1
    se[many] = scale[many] * np.sqrt(sq[many] / (count[many] - 1) / count[many])
    return LossByN(sizes, mean, se, count)


def mean_loss_by_n(table, loss, *, summary="mean"):
    """Mean loss over replications at each sample size, with its standard error.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        One row per ``(n, replication)`` task, with a column ``n`` (or ``n_samples``) and
        the column ``loss``.
    loss : str
        Name of the loss column. Non-finite entries (failed fits) are dropped.
    summary : {'mean', 'geometric'}, default='mean'
        'geometric': the geometric mean ``exp(mean log(loss))`` in place of the mean, and
        the standard error of the mean ``log(loss)`` in place of the mean's (as
        :func:`fit_rate` fits them).

    Returns
    -------
    LossByN
        Named tuple ``(n, mean, se, count)`` of 1-D arrays, sorted by ``n``: the distinct
        sample sizes, the mean of the loss, its standard error ``SD / sqrt(count)`` (``SD``
        with ``ddof=1``; NaN where ``count == 1``) and the number of finite entries.

    Raises
    ------
    ValueError
        If the column is missing or not numeric, or no finite entry is left; for the
        geometric summary, if an entry is 0 or negative.
    """
    _check_summary(summary)
    n, values, _ = _loss_values(table, loss)
    if n.size == 0:
        raise ValueError(f"column {loss!r} has no finite entry (every fit failed?).")
    if summary == "geometric":
        return _geometric_group(loss, n, values)
    return _group(n, values)


def _geometric_group(loss, n, values):
    """Per-size geometric means, with the standard errors of the mean logs."""
    if np.any(values <= 0):
        raise ValueError(
            f"column {loss!r} has {np.count_nonzero(values <= 0)} entries <= 0; its "
            "geometric mean needs positive entries (log of 0 is undefined). Use "
            "summary='mean'."
        )
    logs = _group(n, np.log(values))
    return LossByN(logs.n, np.exp(logs.mean), logs.se, logs.count)


# --------------------------------------------------------------------------------------
# Slope fits
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RateFit:
    """Fitted rate ``mean loss ~ C n^slope`` (or geometric mean) of one loss column.

    Attributes
    ----------
    loss : str
        Name of the loss column.
    slope : float
        Least-squares slope of ``log(mean loss)`` (geometric summary: of the mean
        ``log(loss)``) on ``log n``.
    intercept : float
        Intercept of that fit, ``log C``.
    conf_int : tuple of float
        ``(low, high)``: the ``1 - alpha`` t-interval of the slope (NaN with two points).
    r_squared : float
        Coefficient of determination of the log-log fit.
    n_points : int
        Number of distinct sample sizes fitted.
    n_min, n_max : float
        Smallest and largest sample size fitted.
    n_dropped : int
        Entries of the column dropped as not finite (failed fits), over the whole table.
    alpha : float
        Level of the interval.
    summary : str
        ``'mean'`` (the mean loss at each size is fitted) or ``'geometric'`` (its
        geometric mean).
    """

    loss: str
    slope: float
    intercept: float
    conf_int: tuple
    r_squared: float
    n_points: int
    n_min: float
    n_max: float
    n_dropped: int = 0
    alpha: float = 0.05
    summary: str = "mean"

    @property
    def C(self):  # the papers' name for the constant
        """The constant ``C = exp(intercept)`` (inf beyond the largest float)."""
        try:
            return math.exp(self.intercept)
        except OverflowError:
            return math.inf

    @property
    def legend(self):
        """Legend text in the papers' style, e.g. ``"33.1 n^-0.638"``."""
        return f"{self.C:.3g} n^{self.slope:.3f}"

    def covers(self, slope):
        """Whether ``slope`` lies in the confidence interval (False if it is NaN).

        Parameters
        ----------
        slope : float
            The slope to test, e.g. a theoretical rate.

        Returns
        -------
        bool
        """
        low, high = self.conf_int
        return bool(low <= slope <= high)

    def predict(self, n):
        """The fitted curve ``C n^slope`` at sample sizes ``n``.

        Parameters
        ----------
        n : float or array-like
            Sample sizes.

        Returns
        -------
        float or ndarray
            ``C n^slope``, the shape of ``n``.
        """
        return np.exp(self.intercept) * np.asarray(n, dtype=np.float64) ** self.slope

    def __str__(self):
        low, high = self.conf_int
        level = f"{100 * (1 - self.alpha):g}%"
        dropped = f", {self.n_dropped} failed fits dropped" if self.n_dropped else ""
        return (
            f"{self.loss}: {self.legend} ({level} CI of the slope [{low:.3f}, {high:.3f}], "
            f"R^2 = {self.r_squared:.3f}, {self.n_points} sample sizes in "
            f"[{self.n_min:g}, {self.n_max:g}]{dropped})"
        )


def _check_alpha(alpha):
    if not (isinstance(alpha, float | int) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a number in (0, 1), got alpha={alpha!r}.")


SUMMARIES = ("mean", "geometric")


def _check_summary(summary):
    if summary not in SUMMARIES:
        raise ValueError(f"summary must be one of {SUMMARIES}, got summary={summary!r}.")


def _summary_for_fit(table, loss, min_n, summary="mean"):
    """Grouped summaries of ``loss`` restricted to ``n >= min_n``, checked for the log fit.

    ``summary='geometric'``: the ``mean`` field holds each size's geometric mean.
    """
    _check_summary(summary)
    n, values, n_dropped = _loss_values(table, loss)
    if np.any(values < 0):
        raise ValueError(
            f"column {loss!r} has negative entries ({np.count_nonzero(values < 0)}, e.g. "
            f"{values[values < 0][0]!r}); a loss must be >= 0."
        )
    if min_n is not None:
        keep = n >= min_n
        n, values = n[keep], values[keep]
    if summary == "geometric":
        grouped = _geometric_group(loss, n, values)
    else:
        grouped = _group(n, values)
    if grouped.n.size < 2:
        where = "" if min_n is None else f" with n >= min_n={min_n!r}"
        raise ValueError(
            f"column {loss!r} has finite entries at {grouped.n.size} distinct sample "
            f"size(s){where}; a rate needs at least 2."
        )
    if np.any(grouped.mean <= 0):
        zeros = grouped.n[grouped.mean <= 0]
        raise ValueError(
            f"column {loss!r} has mean 0 at n = {zeros.tolist()}; log(mean loss) is undefined "
            "there. Exclude those sample sizes (min_n) or fit another loss."
        )
    return grouped, n_dropped


def _ols(log_n, log_mean, alpha):
    """(slope, intercept, conf_int, r_squared) of statsmodels OLS, two points handled."""
    import statsmodels.api as sm

    if log_n.size == 2:
        slope = (log_mean[1] - log_mean[0]) / (log_n[1] - log_n[0])
        return float(slope), float(log_mean[0] - slope * log_n[0]), (np.nan, np.nan), 1.0
    results = sm.OLS(log_mean, sm.add_constant(log_n, has_constant="add")).fit()
    low, high = results.conf_int(alpha=alpha)[1]
    tss = np.sum((log_mean - log_mean.mean()) ** 2)
    r_squared = 1.0 - results.ssr / tss if tss != 0 else 1.0  # NaN stays NaN
    return float(results.params[1]), float(results.params[0]), (float(low), float(high)), float(
        r_squared
    )


def fit_rate(table, loss, *, min_n=None, alpha=0.05, summary="mean"):
    r"""Fit ``mean loss = C n^slope`` (or the geometric mean) by least squares, log-log.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        One row per ``(n, replication)`` task, with a column ``n`` (or ``n_samples``) and
        the column ``loss``.
    loss : str
        Name of the loss column. Non-finite entries (failed fits) are dropped and counted.
    min_n : float, default=None
        Fit only the sample sizes ``n >= min_n``.
    alpha : float, default=0.05
        The slope's interval has level ``1 - alpha``.
    summary : {'mean', 'geometric'}, default='mean'
        What is fitted at each size: the mean loss over the replications (the papers'
        choice), or their geometric mean ``exp(mean(log loss))``, which a few very large
        losses cannot dominate (an over-specified fit's D2 raises a gate's error to the
        power ``rbar``; its replications spread over orders of magnitude). For a loss
        ``C n^s`` times noise whose distribution does not depend on ``n``, both estimate
        the same slope ``s``.

    Returns
    -------
    RateFit
        Slope, intercept (``C = exp(intercept)``), confidence interval, ``R^2``, the
        range fitted and the summary.

    Raises
    ------
    ValueError
        If the column is missing, not numeric or has a negative entry, if fewer than two
        distinct sample sizes have a finite entry, if the mean loss is 0 at some size, or
        (geometric) if an entry is 0.

    See Also
    --------
    slope_sensitivity, bootstrap_slope, rate_table

    Notes
    -----
    The model is the OLS regression

    .. math:: \log \bar L_n = \log C + s \log n + \varepsilon_n

    over the distinct sample sizes, ``\bar L_n`` the mean loss over the replications at
    ``n``, with the t-interval of statsmodels for ``s``. With two sample sizes the line
    passes through both points and the interval is NaN.

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe.simulation.rates import fit_rate
    >>> n = np.repeat([100, 1000, 10000], 2)
    >>> print(fit_rate({"n": n, "D1": 3.0 * n ** -0.5}, "D1").legend)
    3 n^-0.500
    """
    _check_alpha(alpha)
    grouped, n_dropped = _summary_for_fit(table, loss, min_n, summary)
    slope, intercept, conf_int, r_squared = _ols(
        np.log(grouped.n), np.log(grouped.mean), alpha
    )
    return RateFit(
        summary=summary,
        loss=loss,
        slope=slope,
        intercept=intercept,
        conf_int=conf_int,
        r_squared=r_squared,
        n_points=int(grouped.n.size),
        n_min=float(grouped.n[0]),
        n_max=float(grouped.n[-1]),
        n_dropped=n_dropped,
        alpha=float(alpha),
    )


def slope_sensitivity(table, loss, drop_fractions=(0, 0.1, 0.25, 0.5), *, alpha=0.05,
                      summary="mean"):
    """Refit the rate after dropping the smallest sample sizes.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        As in :func:`fit_rate`.
    loss : str
        Name of the loss column.
    drop_fractions : sequence of float, default=(0, 0.1, 0.25, 0.5)
        For each fraction ``f`` in ``[0, 1)``, the ``floor(f * N)`` smallest of the ``N``
        distinct sample sizes (those with a finite entry) are dropped before the fit.
    alpha : float, default=0.05
        Level of the intervals.
    summary : {'mean', 'geometric'}, default='mean'
        As in :func:`fit_rate`.

    Returns
    -------
    list of RateFit
        One fit per fraction, in the order given; ``n_min`` says where each starts.

    Raises
    ------
    ValueError
        If a fraction is outside ``[0, 1)`` or leaves fewer than two sample sizes, and in
        the cases of :func:`fit_rate`.
    """
    _check_summary(summary)
    sizes = mean_loss_by_n(table, loss).n
    fits = []
    for fraction in drop_fractions:
        if not (0 <= fraction < 1):
            raise ValueError(
                f"drop_fractions must lie in [0, 1), got {fraction!r} in {drop_fractions!r}."
            )
        n_drop = int(math.floor(fraction * sizes.size + 1e-9))
        if sizes.size - n_drop < 2:
            raise ValueError(
                f"dropping the fraction {fraction!r} of the {sizes.size} sample sizes of column "
                f"{loss!r} leaves {sizes.size - n_drop}; a rate needs at least 2."
            )
        fits.append(fit_rate(table, loss, min_n=sizes[n_drop], alpha=alpha, summary=summary))
    return fits


@dataclass(frozen=True)
class BootstrapSlope:
    """Bootstrap distribution of the log-log slope (see :func:`bootstrap_slope`).

    Attributes
    ----------
    loss : str
        Name of the loss column.
    slope : float
        Slope of the original data (as :func:`fit_rate`).
    conf_int : tuple of float
        Percentile interval ``(alpha/2, 1 - alpha/2)`` of the bootstrap slopes.
    slopes : ndarray of shape (n_valid,)
        The bootstrap slopes (resamples whose mean is 0 at some size are left out).
    alpha : float
        Level of the interval.
    """

    loss: str
    slope: float
    conf_int: tuple
    slopes: np.ndarray
    alpha: float = 0.05


def bootstrap_slope(table, loss, n_boot=1000, *, min_n=None, alpha=0.05, random_state=None,
                    summary="mean"):
    """Percentile-bootstrap interval of the slope, resampling replications within each ``n``.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        As in :func:`fit_rate`.
    loss : str
        Name of the loss column.
    n_boot : int, default=1000
        Number of bootstrap resamples.
    min_n : float, default=None
        Use only the sample sizes ``n >= min_n``.
    alpha : float, default=0.05
        The interval has level ``1 - alpha``.
    random_state : None, int, SeedSequence or Generator, default=None
        Seeds the resampling.
    summary : {'mean', 'geometric'}, default='mean'
        As in :func:`fit_rate`.

    Returns
    -------
    BootstrapSlope
        The slope, the percentile interval and the bootstrap slopes.

    Notes
    -----
    Each resample draws, at every sample size, as many replications as it has (with
    replacement) and refits the least-squares slope of ``log(mean)`` (or of the mean log,
    for the geometric summary) on ``log n``. Unlike
    the OLS interval, it reflects the spread of the replications rather than the scatter
    of the means about the line.
    """
    _check_alpha(alpha)
    if not (isinstance(n_boot, int) and n_boot >= 1):
        raise ValueError(f"n_boot must be a positive integer, got n_boot={n_boot!r}.")
    grouped, _ = _summary_for_fit(table, loss, min_n, summary)
    geometric = summary == "geometric"
    rng = check_random_state(random_state)
    n, values, _ = _loss_values(table, loss)
    if min_n is not None:
        n, values = n[n >= min_n], values[n >= min_n]
    if geometric:
        values = np.log(values)  # all positive (checked above)
    means = np.empty((n_boot, grouped.n.size))
    for j, size in enumerate(grouped.n):
        group = values[n == size]
        draws = group[rng.integers(0, group.size, size=(n_boot, group.size))]
        with np.errstate(over="ignore", divide="ignore"):
            mean = draws.mean(axis=1)
            if geometric:
                means[:, j] = mean  # of the logs already
            elif np.all(np.isfinite(mean)):
                means[:, j] = np.log(mean)  # a resample of zeros only: -inf, dropped below
            else:
                # Values near the float maximum (a diverged fit's loss) overflow their
                # sum: average them in units of the size's largest value instead.
                scale = float(np.max(group))
                means[:, j] = np.log(scale) + np.log((draws / scale).mean(axis=1))
    # The log means of the resamples; those with a mean of 0 somewhere have no slope.
    log_means = means if geometric else means[np.all(np.isfinite(means), axis=1)]
    x = np.log(grouped.n) - np.log(grouped.n).mean()
    slopes = (log_means - log_means.mean(axis=1, keepdims=True)) @ x / (x @ x)
    if slopes.size:
        low, high = np.quantile(slopes, [alpha / 2, 1 - alpha / 2])
    else:  # pragma: no cover - needs every resample to hit a zero mean
        low = high = np.nan
    slope = float(x @ (np.log(grouped.mean) - np.log(grouped.mean).mean()) / (x @ x))
    return BootstrapSlope(
        loss=loss, slope=slope, conf_int=(float(low), float(high)), slopes=slopes,
        alpha=float(alpha),
    )


# --------------------------------------------------------------------------------------
# Slope tables
# --------------------------------------------------------------------------------------


def _as_list(losses):
    return [losses] if isinstance(losses, str) else list(losses)


def _theory_or_none(setting, loss, m, rbar):
    """Theory for a column, or a None slope when the column is not a theoretical loss."""
    if setting is None:
        return NO_THEORY
    try:
        return theory(setting, loss, m=m, rbar=rbar)
    except ValueError as err:
        if "has no theoretical rate" in str(err):
            return NO_THEORY._replace(reason="no theoretical rate for this column")
        raise


def rate_table(table, losses, setting=None, *, min_n=None, alpha=0.05, m=None, rbar=None,
               theories=None, summary="mean"):
    """Fitted and theoretical slopes of several loss columns.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        As in :func:`fit_rate`.
    losses : str or sequence of str
        Loss columns, one row each.
    setting : str, default=None
        A setting of :func:`gmoe.theory.theoretical_slope`, whose theory is looked up by
        the loss's name; None reports no theory.
    min_n : float, default=None
        Fit only the sample sizes ``n >= min_n``.
    alpha : float, default=0.05
        Level of the intervals.
    m, rbar : int or float, default=None
        Passed to :func:`gmoe.theory.theoretical_slope`.
    theories : mapping of str to gmoe.theory.Theory, optional
        The theory of the losses it names, in place of the lookup by name (a study's
        metric columns carry theirs: :mod:`gmoe.simulation.columns`).
    summary : {'mean', 'geometric'}, default='mean'
        What is fitted at each size (:func:`fit_rate`).

    Returns
    -------
    list of dict
        One row per loss with keys ``loss``, ``slope``, ``ci_low``, ``ci_high``, ``C``,
        ``r_squared``, ``n_points``, ``n_dropped``, ``theory`` (float or None),
        ``within_ci`` (bool; None without a theoretical slope or without an interval, as
        with two sample sizes) and ``note`` (why there is no theory or no fitted slope).
        Where the theory says a slope would be meaningless (an estimate that is not
        consistent, as on ``'temperature-raw'``) no slope is fitted and the fitted entries
        are NaN.

    See Also
    --------
    format_rate_table
    """
    _check_summary(summary)
    theories = {} if theories is None else theories
    rows = []
    for loss in _as_list(losses):
        expected = theories.get(loss) or _theory_or_none(setting, loss, m, rbar)
        if expected.fit_slope:
            fit = fit_rate(table, loss, min_n=min_n, alpha=alpha, summary=summary)
            slope, (low, high), C = fit.slope, fit.conf_int, fit.C
            r_squared, n_points, n_dropped = fit.r_squared, fit.n_points, fit.n_dropped
        else:
            by_n = mean_loss_by_n(_restrict(table, min_n), loss)
            slope = low = high = C = r_squared = np.nan
            n_points = int(by_n.n.size)
            n_dropped = _loss_values(table, loss)[2]
        within = None
        if expected.slope is not None and np.isfinite(low) and np.isfinite(high):
            within = bool(low <= expected.slope <= high)
        rows.append(
            {
                "loss": loss,
                "slope": slope,
                "ci_low": low,
                "ci_high": high,
                "C": C,
                "r_squared": r_squared,
                "n_points": n_points,
                "n_dropped": n_dropped,
                "theory": expected.slope,
                "within_ci": within,
                "note": "" if expected.slope is not None else expected.reason,
            }
        )
    return rows


def _fmt(value, spec):
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and np.isnan(value):
        return "-"
    if isinstance(value, float) and np.isinf(value):
        return "inf" if value > 0 else "-inf"  # e.g. a C beyond the largest float
    return format(value, spec)


def format_rate_table(rows):
    """Render the rows of :func:`rate_table` as a plain-text table.

    Parameters
    ----------
    rows : list of dict
        As returned by :func:`rate_table`.

    Returns
    -------
    str
        One line per loss (``-`` for a missing value), then the notes.
    """
    header = ("loss", "slope", "CI low", "CI high", "C", "R^2", "sizes", "dropped", "theory",
              "in CI")
    specs = ("", ".3f", ".3f", ".3f", ".3g", ".3f", "d", "d", ".3f", "")
    keys = ("loss", "slope", "ci_low", "ci_high", "C", "r_squared", "n_points", "n_dropped",
            "theory", "within_ci")
    body = [[_fmt(row[key], spec) for key, spec in zip(keys, specs, strict=True)]
            for row in rows]
    widths = [max(len(cell) for cell in column) for column in zip(header, *body, strict=True)]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w)
                       for i, (cell, w) in enumerate(zip(line, widths, strict=True))).rstrip()
             for line in [header, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"{row['loss']}: {row['note']}" for row in rows if row.get("note")]
    if notes:
        lines += ["", *notes]
    return "\n".join(lines) + "\n"
