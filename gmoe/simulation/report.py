"""Tables of mean losses by sample size and rough log-log slopes.

Part 1 of the rate analysis: the slope is the least-squares fit of ``log(mean loss)`` on
``log n`` (numpy), without confidence intervals; statsmodels intervals, the sensitivity to
the smallest sizes and plots are to come (DESIGN "The simulation harness").
"""

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["Slope", "fit_slope", "format_report", "summarize"]

#: The rate SPEC 5.1 predicts for these columns wherever its theory holds.
THEORY_SLOPES = {"d1": -0.5, "d2": -0.5, "hellinger": -0.5, "tv": -0.5}


def summarize(rows, columns):
    """Mean of each column by sample size.

    Parameters
    ----------
    rows : list of dict
        Rows of a result store.
    columns : list of str
        Metric columns to average (over the rows where they are not NULL).

    Returns
    -------
    list of dict
        One per sample size, ascending: ``n``, ``tasks`` (rows), ``ok`` (status 'ok'),
        ``converged``, ``fit_seconds`` (mean), and the mean of every column (NaN when no
        row has a value).
    """
    by_n = {}
    for row in rows:
        by_n.setdefault(row["n"], []).append(row)
    table = []
    for n in sorted(by_n):
        group = by_n[n]
        entry = {"n": n, "tasks": len(group),
                 "ok": sum(r["status"] == "ok" for r in group),
                 "converged": sum(bool(r["converged"]) for r in group)}
        fit_times = [r["fit_seconds"] for r in group if r["fit_seconds"] is not None]
        entry["fit_seconds"] = float(np.mean(fit_times)) if fit_times else math.nan
        for col in columns:
            values = [r[col] for r in group if r.get(col) is not None]
            entry[col] = float(np.mean(values)) if values else math.nan
        table.append(entry)
    return table


@dataclass(frozen=True)
class Slope:
    """A log-log least-squares fit ``mean loss ~ C n^slope``.

    Attributes
    ----------
    slope : float
    constant : float
        ``C``.
    n_sizes : int
        Sample sizes used (those with a positive finite mean).
    n_min, n_max : int
    """

    slope: float
    constant: float
    n_sizes: int
    n_min: int
    n_max: int


def fit_slope(sizes, means):
    """Least squares of ``log(mean)`` on ``log(n)``.

    Parameters
    ----------
    sizes : array-like of shape (m,)
    means : array-like of shape (m,)
        Sizes whose mean is not positive and finite are left out.

    Returns
    -------
    Slope or None
        None with fewer than two usable sizes.

    Examples
    --------
    >>> s = fit_slope([100, 10000], [1.0, 0.1])
    >>> round(s.slope, 6), round(s.constant, 6)
    (-0.5, 10.0)
    """
    sizes = np.asarray(sizes, dtype=np.float64)
    means = np.asarray(means, dtype=np.float64)
    keep = np.isfinite(means) & (means > 0)
    if np.count_nonzero(keep) < 2 or np.ptp(sizes[keep]) == 0:
        return None
    A = np.column_stack([np.log(sizes[keep]), np.ones(np.count_nonzero(keep))])
    (slope, intercept), *_ = np.linalg.lstsq(A, np.log(means[keep]), rcond=None)
    return Slope(slope=float(slope), constant=float(np.exp(intercept)),
                 n_sizes=int(np.count_nonzero(keep)), n_min=int(sizes[keep].min()),
                 n_max=int(sizes[keep].max()))


def _fmt(value, width):
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4g}"
    else:
        text = str(value)
    return text.rjust(width)


def format_report(rows, columns, *, title="", no_slope=()):
    """A text table of mean losses by ``n`` followed by one slope line per column.

    Parameters
    ----------
    rows : list of dict
        Rows of a result store.
    columns : list of str
        Metric columns to show.
    title : str, optional
        First line.
    no_slope : collection of str, optional
        Columns shown without a fitted slope (with the reason in the mapping's value when
        a dict is given).

    Returns
    -------
    str
    """
    table = summarize(rows, columns)
    heads = ["n", "tasks", "ok", "conv", *columns, "fit_s"]
    keys = ["n", "tasks", "ok", "converged", *columns, "fit_seconds"]
    widths = [max(len(h), 10 if i >= 4 else 6) for i, h in enumerate(heads)]
    lines = [title] if title else []
    lines.append("  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True)))
    for entry in table:
        lines.append("  ".join(_fmt(entry[k], w) for k, w in zip(keys, widths, strict=True)))
    total = sum(e["tasks"] for e in table)
    bad = total - sum(e["ok"] for e in table)
    lines.append(f"{total} tasks over {len(table)} sample sizes; {bad} not ok "
                 f"(fit or metric failed).")
    sizes = [e["n"] for e in table]
    for col in columns:
        if col in no_slope:
            reason = no_slope[col] if isinstance(no_slope, dict) else "not fitted"
            lines.append(f"slope {col}: {reason}")
            continue
        fit = fit_slope(sizes, [e[col] for e in table])
        if fit is None:
            lines.append(f"slope {col}: needs two sample sizes with a positive mean")
            continue
        theory = THEORY_SLOPES.get(col)
        ref = f"; theory {theory:+.2f}" if theory is not None else ""
        lines.append(f"slope {col}: {fit.slope:+.3f}  (mean {col} ~ {fit.constant:.3g} "
                     f"n^{fit.slope:.3f} over {fit.n_sizes} sizes, n = {fit.n_min}.."
                     f"{fit.n_max}{ref}; least squares on log-log, no interval yet)")
    return "\n".join(lines)
