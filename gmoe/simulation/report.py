"""Reports of a stored study: mean losses by sample size, rates with intervals, plots.

:func:`format_report` is the table of mean losses by ``n``; :func:`study_report` adds, for
every recorded loss, the rate of :mod:`gmoe.simulation.rates` (slope, 95% interval, ``C``)
beside the slope SPEC 5.1 predicts for the experiment's setting (:func:`study_setting`),
and the headline loss's sensitivity to dropping the smallest sample sizes;
:func:`write_study_plots` writes the plots of :func:`gmoe.simulation.plots.write_report`.
"""

import math
import re
from dataclasses import dataclass

import numpy as np

from .rates import fit_rate, format_rate_table, rate_table, slope_sensitivity

__all__ = ["Slope", "fit_slope", "format_report", "study_report", "study_setting",
           "summarize", "write_study_plots"]

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


def format_report(rows, columns, *, title="", no_slope=(), slopes=True):
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
    slopes : bool, default=True
        Follow the table with one rough (numpy, no interval) slope line per column;
        :func:`study_report` gives the rates with intervals instead.

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
    if not slopes:
        return "\n".join(lines)
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


# --------------------------------------------------------------------------------------
# Rates with intervals and theory (rates.py) and plots (plots.py) of a stored study
# --------------------------------------------------------------------------------------

#: Parameter-error fields of the metric columns and the loss names of SPEC 5.1's theory.
_THEORY_FIELDS = {"weight": "weights", "gate_coef": "gate_coef",
                  "expert_intercept": "expert_intercept", "expert_coef": "expert_coef",
                  "expert_var": "expert_var"}
_THEORY_COLUMNS = {"d1": "D1", "d2": "D2", "hellinger": "hellinger", "tv": "tv"}
_PE = re.compile(r"^pe_(?P<field>[a-z_]+?)_(?P<cell>\d+)$")
_SENSITIVITY = (0, 0.1, 0.25, 0.5)


def study_setting(experiment):
    """The SPEC 5.1 setting of an experiment and the atoms per true cell of its starts.

    The family is the truth's gate; the setting is over-specified when more experts are
    fitted than the truth has. The temperature family has no -exact/-over names: its
    over-specified rates are selected by ``m >= 2``.

    Parameters
    ----------
    experiment : Experiment

    Returns
    -------
    setting : str
        A name of :data:`gmoe.simulation.rates.SETTINGS` (identifiable scale).
    cell_atoms : list of int
        Fitted atoms in each true cell: from ``[start] assignment`` when the file fixes it,
        else ``k - k* + 1`` for every cell (the largest cell a random start can make, so
        the theory quoted is the slowest one).
    """
    family = experiment.truth.gating
    k_true, k_fit = experiment.truth.n_experts, experiment.fit["n_experts"]
    over = k_fit > k_true
    setting = family if family == "temperature" else f"{family}-{'over' if over else 'exact'}"
    assignment = experiment.start.get("assignment")
    if assignment is not None:
        cell_atoms = [int(np.sum(np.asarray(assignment) == j)) for j in range(k_true)]
    else:
        cell_atoms = [k_fit - k_true + 1] * k_true
    return setting, cell_atoms


def _column_theory(column, setting, cell_atoms):
    """(setting, theory loss name, m) of a metric column; theory name None if it has none."""
    raw = column.endswith("_raw")
    base = column.removesuffix("_raw")
    if raw and setting == "temperature":
        setting = "temperature-raw"
    over = max(cell_atoms) > 1
    m_all = max(cell_atoms) if over else None
    if base in _THEORY_COLUMNS:
        return setting, _THEORY_COLUMNS[base], m_all
    match = _PE.match(base)
    if match and match["field"] in _THEORY_FIELDS:
        cell = int(match["cell"])
        m = cell_atoms[cell] if over and cell < len(cell_atoms) else None
        if setting == "temperature" and m == 1:
            m = None
        return setting, _THEORY_FIELDS[match["field"]], m
    return setting, None, None


def _column_values(rows, column):
    return np.array([np.nan if r.get(column) is None else float(r[column]) for r in rows],
                    dtype=np.float64)


def _nan_row(column, reason):
    return {"loss": column, "slope": np.nan, "ci_low": np.nan, "ci_high": np.nan,
            "C": np.nan, "r_squared": np.nan, "n_points": 0, "n_dropped": 0, "theory": None,
            "within_ci": None, "note": reason}


def study_rate_rows(rows, columns, experiment, *, alpha=0.05):
    """One :func:`~gmoe.simulation.rates.rate_table` row per metric column of a study.

    Parameters
    ----------
    rows : list of dict
        Rows of the result store.
    columns : list of str
        Metric columns.
    experiment : Experiment
        Gives the setting (:func:`study_setting`) whose theoretical slopes are shown.
    alpha : float, default=0.05

    Returns
    -------
    list of dict
        As :func:`~gmoe.simulation.rates.rate_table`, ``loss`` the column name; a column
        whose rate cannot be fitted (fewer than two sizes with a value, a zero mean) has
        NaN entries and the reason in ``note``.
    """
    setting, cell_atoms = study_setting(experiment)
    n = np.array([r["n"] for r in rows], dtype=np.float64)
    out = []
    for column in columns:
        col_setting, theory_loss, m = _column_theory(column, setting, cell_atoms)
        name = theory_loss or column
        values = _column_values(rows, column)
        table = {"n": n, name: values}
        finite = np.isfinite(values)
        try:
            row = rate_table(table, [name], col_setting if theory_loss else None,
                             alpha=alpha, m=m)[0]
        except ValueError as err:
            sizes = np.unique(n[finite])
            zero = [s for s in sizes if np.mean(values[finite & (n == s)]) == 0]
            if finite.any() and not np.any(values[finite]):
                reason = "no rate: identically 0 (a parameter fixed by the gate's convention)"
            elif zero:
                reason = f"no rate: mean 0 at {len(zero)} of {sizes.size} sizes"
            else:
                reason = f"no rate: {err}"
            row = _nan_row(column, reason)
        row["loss"] = column
        out.append(row)
    return out


def _headline(columns):
    return next((c for c in columns if c in ("d1", "d2")), columns[0] if columns else None)


def _slope_line(row):
    if not np.isfinite(row["slope"]):
        return f"slope {row['loss']}: {row['note'] or 'not fitted'}"
    text = (f"slope {row['loss']}: {row['slope']:+.3f}, 95% CI [{row['ci_low']:+.3f}, "
            f"{row['ci_high']:+.3f}], mean ~ {row['C']:.3g} n^{row['slope']:.3f} over "
            f"{row['n_points']} sizes")
    if row["theory"] is not None:
        verdict = {True: "inside", False: "OUTSIDE", None: "no interval for"}[row["within_ci"]]
        text += f"; theory {row['theory']:+.3f} ({verdict} the CI)"
    return text


def study_report(rows, experiment, *, columns=None, title="", alpha=0.05):
    """The text report of a stored study.

    The table of mean losses by ``n`` (:func:`format_report`, the experiment's summary
    columns by default), the rate table of every metric column (slope, interval, ``C``,
    SPEC 5.1's slope for the setting and whether the interval holds it), one line per
    summary column, and the headline loss's (D1 or D2) slope after dropping the smallest
    0, 10, 25 and 50% of the sample sizes.

    Parameters
    ----------
    rows : list of dict
        Rows of the result store (already restricted to the grid).
    experiment : Experiment
    columns : list of str, optional
        Columns of the mean table (default the summary columns).
    title : str, optional
    alpha : float, default=0.05

    Returns
    -------
    str
    """
    summary_cols = experiment.summary_columns() if columns is None else list(columns)
    lines = [format_report(rows, summary_cols, title=title, slopes=False)]
    if not rows:
        return lines[0]
    setting, cell_atoms = study_setting(experiment)
    all_cols = experiment.metric_columns()
    rate_rows = study_rate_rows(rows, all_cols, experiment, alpha=alpha)
    cells = "" if max(cell_atoms) == 1 else f", fitted atoms per true cell {cell_atoms}"
    lines += ["", f"Rates: OLS of log(mean loss) on log n, {1 - alpha:.0%} CI; theory: SPEC "
              f"5.1, setting {setting}{cells}", format_rate_table(rate_rows).rstrip("\n"), ""]
    by_col = {r["loss"]: r for r in rate_rows}
    lines += [_slope_line(by_col[c]) for c in summary_cols if c in by_col]
    headline = _headline(summary_cols)
    if headline is not None and np.isfinite(by_col.get(headline, {}).get("slope", np.nan)):
        table = {"n": np.array([r["n"] for r in rows], dtype=np.float64),
                 headline: _column_values(rows, headline)}
        n_sizes = int(np.unique(table["n"][np.isfinite(table[headline])]).size)
        fractions = [f for f in _SENSITIVITY if n_sizes - math.floor(f * n_sizes) >= 2]
        lines.append(f"Sensitivity of the {headline} slope to dropping the smallest sizes:")
        for frac, fit in zip(fractions, slope_sensitivity(table, headline, fractions,
                                                          alpha=alpha), strict=True):
            low, high = fit.conf_int
            lines.append(f"  drop {frac:>4.0%}: n >= {fit.n_min:<8g} slope {fit.slope:+.3f} "
                         f"[{low:+.3f}, {high:+.3f}] ({fit.n_points} sizes)")
    return "\n".join(lines)


def write_study_plots(rows, experiment, outdir, *, name=None):
    """Write the rate plots and slope table of a stored study (:func:`plots.write_report`).

    Parameters
    ----------
    rows : list of dict
        Rows of the result store.
    experiment : Experiment
    outdir : str or pathlib.Path
    name : str, optional
        File stem; default the experiment's name (``-quick`` appended for a quick run).

    Returns
    -------
    RateReport or None
        None when no column has a rate to plot (fewer than two sample sizes).

    Notes
    -----
    The plotted columns are those with a fitted rate, headline (D1 or D2) first; the
    raw-scale columns of the temperature family are left out (not consistent, SPEC 2.2).
    Theory lines are drawn for the columns :mod:`~gmoe.simulation.rates` names (D1, D2,
    Hellinger, TV); the per-cell parameter errors' theory is in :func:`study_report`.
    """
    from .plots import write_report

    if name is None:
        name = experiment.name + ("-quick" if experiment.is_quick else "")
    setting, cell_atoms = study_setting(experiment)
    columns = [c for c in experiment.metric_columns()
               if not (setting == "temperature" and c.endswith("_raw"))]
    headline = _headline(columns)
    if headline is not None:
        columns = [headline, *(c for c in columns if c != headline)]
    table = {"n": np.array([r["n"] for r in rows], dtype=np.float64)}
    plotted = []
    for column in columns:
        table[column] = _column_values(rows, column)
        try:
            fit_rate(table, column)
        except ValueError:
            continue
        plotted.append(column)
    if not plotted:
        return None
    m = max(cell_atoms) if max(cell_atoms) > 1 else None
    return write_report(table, plotted, outdir, setting=setting, name=name, m=m)
