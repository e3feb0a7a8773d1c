"""Reports of a stored study: mean losses by sample size, rates with intervals, plots.

:func:`format_report` is the table of mean losses by ``n``; :func:`study_report` adds, for
every metric column, the rate of :mod:`gmoe.simulation.rates` (slope, 95% interval, ``C``)
beside the slope the theory predicts for it (the column's
:attr:`~gmoe.simulation.columns.MetricColumn.theory`, in the setting of
:func:`study_setting`), and the headline loss's sensitivity to dropping the smallest sample
sizes; :func:`write_study_plots` writes the plots of
:func:`gmoe.simulation.plots.write_report`.
"""

import math

import numpy as np

from .columns import cell_theory, study_setting
from .rates import _check_summary, fit_rate, format_rate_table, rate_table, slope_sensitivity

__all__ = ["format_report", "study_report", "study_setting", "summarize",
           "write_study_plots"]


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


def _fmt(value, width):
    if isinstance(value, float):
        text = "nan" if math.isnan(value) else f"{value:.4g}"
    else:
        text = str(value)
    return text.rjust(width)


def format_report(rows, columns, *, title=""):
    """A text table of mean losses by ``n``.

    Parameters
    ----------
    rows : list of dict
        Rows of a result store.
    columns : list of str
        Metric columns to show.
    title : str, optional
        First line.

    Returns
    -------
    str
        The table and a line counting the tasks; :func:`study_report` adds the rates.
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
    short = [c for c in columns if np.isnan(_column_values(rows, c)).any()]
    if short:
        lines.append(f"Without a value in some tasks, so averaged over fewer than 'tasks' "
                     f"at some sizes: {', '.join(short)}.")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# Rates with intervals and theory (rates.py) and plots (plots.py) of a stored study
# --------------------------------------------------------------------------------------

_SENSITIVITY = (0, 0.1, 0.25, 0.5)


def _column_values(rows, column):
    return np.array([np.nan if r.get(column) is None else float(r[column]) for r in rows],
                    dtype=np.float64)


def _nan_row(column, reason, n, values):
    """A row with no slope, but the sizes and dropped entries of its values (as fitted)."""
    finite = np.isfinite(values)
    return {"loss": column, "slope": np.nan, "ci_low": np.nan, "ci_high": np.nan,
            "C": np.nan, "r_squared": np.nan, "n_points": int(np.unique(n[finite]).size),
            "n_dropped": int(np.count_nonzero(~finite)), "theory": None, "within_ci": None,
            "note": reason}


def _schema(experiment, columns):
    """The MetricColumn of each name (every metric column when ``columns`` is None)."""
    schema = experiment.metric_schema()
    if columns is None:
        return list(schema)
    by_name = {c.name: c for c in schema}
    unknown = [name for name in columns if name not in by_name]
    if unknown:
        raise ValueError(f"columns must be metric columns of the experiment "
                         f"{list(by_name)}, got {unknown}.")
    return [by_name[name] for name in columns]


def study_rate_rows(rows, columns, experiment, *, alpha=0.05, summary="mean"):
    """One :func:`~gmoe.simulation.rates.rate_table` row per metric column of a study.

    Parameters
    ----------
    rows : list of dict
        Rows of the result store.
    columns : list of str or None
        Metric columns (None: every one of the experiment).
    experiment : Experiment
        Its :meth:`~gmoe.simulation.spec.Experiment.metric_schema` gives each column's
        theory.
    alpha : float, default=0.05
    summary : {'mean', 'geometric'}, default='mean'
        What is fitted at each size (:func:`~gmoe.simulation.rates.fit_rate`).

    Returns
    -------
    list of dict
        As :func:`~gmoe.simulation.rates.rate_table`, ``loss`` the column name; a column
        whose rate cannot be fitted (fewer than two sizes with a value, a zero mean) has
        NaN entries and the reason in ``note``. In over-specified studies each per-cell
        error is followed by one row per number ``m`` of fitted atoms its cell held,
        ``loss`` named ``<column>[m=<m>]``, fitted over those replications only against
        ``rbar(m)``'s rate.
    """
    _check_summary(summary)
    n = np.array([r["n"] for r in rows], dtype=np.float64)
    schema = _schema(experiment, columns)
    atoms = {c.cell: _column_values(rows, c.name)
             for c in experiment.metric_schema() if c.is_atom_count}
    out = []
    for column in schema:
        if column.is_atom_count:
            continue
        values = _column_values(rows, column.name)
        split = (column.cell is not None and column.cell in atoms
                 and column.theory.fit_slope)
        if not split:
            out.append(_rate_row(n, values, column.name, column.theory, alpha, summary))
            continue
        # The column mixes replications whose cell holds different numbers of fitted
        # atoms, each with its own rate: fit each m over its own replications.
        counts = atoms[column.cell]
        by_m = {m: cell_theory(experiment, column, m)
                for m in np.unique(counts[np.isfinite(counts)]).astype(int)}
        fixed = [str(m) for m, expected in by_m.items() if not expected.fit_slope]
        if fixed:
            # Where the alignment fixes the error its values are rounding noise (~1e-17):
            # a mean over both kinds of replications is no loss to fit.
            out.append(_nan_row(column.name, "no rate over all replications: the alignment "
                                f"fixes this error where the cell holds m = "
                                f"{', '.join(fixed)} atom(s); see the per-cell rows",
                                n, values))
        else:
            out.append(_rate_row(n, values, column.name, column.theory, alpha, summary))
        for m, expected in by_m.items():
            keep = counts == m
            out.append(_rate_row(n[keep], values[keep], f"{column.name}[m={m}]", expected,
                                 alpha, summary))
    return out


def _rate_row(n, values, name, expected, alpha, summary="mean"):
    """One rate-table row, or a NaN row with the reason a slope cannot be fitted."""
    finite = np.isfinite(values)
    try:
        return rate_table({"n": n, name: values}, [name], alpha=alpha,
                          theories={name: expected}, summary=summary)[0]
    except ValueError as err:
        sizes = np.unique(n[finite])
        zero = [s for s in sizes if np.mean(values[finite & (n == s)]) == 0]
        if finite.any() and not np.any(values[finite]):
            reason = "no rate: identically 0"
        elif summary == "geometric" and np.any(values[finite] == 0):
            reason = "no geometric-mean rate: some entries are 0"
        elif zero:
            reason = f"no rate: mean 0 at {len(zero)} of {sizes.size} sizes"
        else:
            reason = f"no rate: {err}"
        return _nan_row(name, reason, n, values)


def _headline(schema):
    """The first identifiable-scale Voronoi loss, else the first column (None: no column)."""
    return next((c for c in schema if c.is_voronoi and c.scale == "identifiable"),
                schema[0] if schema else None)


def _interval(low, high, n_points=None, level="95% CI "):
    """``[low, high]``, or "no CI" (two sample sizes: the line fits them exactly)."""
    if np.isfinite(low) and np.isfinite(high):
        return f"{level}[{low:+.3f}, {high:+.3f}]"
    return "no CI" if n_points is None else f"no CI ({n_points} sizes)"


def _slope_line(row, summary="mean"):
    if not np.isfinite(row["slope"]):
        return f"slope {row['loss']}: {row['note'] or 'not fitted'}"
    interval = _interval(row["ci_low"], row["ci_high"], row["n_points"])
    what = "mean" if summary == "mean" else "geometric mean"
    text = (f"slope {row['loss']}: {row['slope']:+.3f}, {interval}, {what} ~ {row['C']:.3g} "
            f"n^{row['slope']:.3f} over {row['n_points']} sizes")
    if row["theory"] is not None:
        verdict = {True: "inside the CI", False: "OUTSIDE the CI",
                   None: "no CI to compare with"}[row["within_ci"]]
        text += f"; theory {row['theory']:+.3f} ({verdict})"
    return text


def study_report(rows, experiment, *, columns=None, title="", alpha=0.05, summary="mean"):
    """The text report of a stored study.

    The table of mean losses by ``n`` (:func:`format_report`, the experiment's summary
    columns by default), the rate table of every metric column (slope, interval, ``C``,
    the theory's slope for the column and whether the interval holds it), one line per
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
    summary : {'mean', 'geometric'}, default='mean'
        What the rates fit at each size: the mean loss over the replications (the papers'
        choice) or its geometric mean (:func:`~gmoe.simulation.rates.fit_rate`).

    Returns
    -------
    str
    """
    _check_summary(summary)
    summary_cols = experiment.summary_columns() if columns is None else list(columns)
    lines = [format_report(rows, summary_cols, title=title)]
    if not rows:
        return lines[0]
    setting, cell_atoms = study_setting(experiment)
    rate_rows = study_rate_rows(rows, None, experiment, alpha=alpha, summary=summary)
    cells = "" if max(cell_atoms) == 1 else f", fitted atoms per true cell {cell_atoms}"
    what = "mean loss" if summary == "mean" else "geometric mean of the losses"
    lines += ["", f"Rates: OLS of log({what}) on log n, {1 - alpha:.0%} CI; theory: "
              f"setting {setting}{cells}", format_rate_table(rate_rows).rstrip("\n"), ""]
    by_col = {r["loss"]: r for r in rate_rows}
    lines += [_slope_line(by_col[c], summary) for c in summary_cols if c in by_col]
    by_name = {c.name: c for c in experiment.metric_schema()}
    headline = _headline([by_name[c] for c in summary_cols if c in by_name])
    headline = None if headline is None else headline.name
    if headline is not None and np.isfinite(by_col.get(headline, {}).get("slope", np.nan)):
        table = {"n": np.array([r["n"] for r in rows], dtype=np.float64),
                 headline: _column_values(rows, headline)}
        n_sizes = int(np.unique(table["n"][np.isfinite(table[headline])]).size)
        fractions = [f for f in _SENSITIVITY if n_sizes - math.floor(f * n_sizes) >= 2]
        lines.append(f"Sensitivity of the {headline} slope to dropping the smallest sizes:")
        for frac, fit in zip(fractions, slope_sensitivity(table, headline, fractions,
                                                          alpha=alpha, summary=summary),
                             strict=True):
            interval = _interval(*fit.conf_int, level="")
            lines.append(f"  drop {frac:>4.0%}: n >= {fit.n_min:<8g} slope {fit.slope:+.3f} "
                         f"{interval} ({fit.n_points} sizes)")
    return "\n".join(lines)


def write_study_plots(rows, experiment, outdir, *, name=None, summary="mean"):
    """Write the rate plots and slope table of a stored study (:func:`plots.write_report`).

    Parameters
    ----------
    rows : list of dict
        Rows of the result store.
    experiment : Experiment
    outdir : str or pathlib.Path
    name : str, optional
        File stem; default the experiment's name (``-quick`` appended for a quick run).
    summary : {'mean', 'geometric'}, default='mean'
        Fit and draw the mean loss or its geometric mean (as :func:`study_report`).

    Returns
    -------
    RateReport or None
        None when no column has a rate to plot (fewer than two sample sizes).

    Notes
    -----
    The plotted columns are those with a fitted rate, headline (D1 or D2) first; the
    columns whose theory says a slope would be meaningless (the raw-scale columns of the
    temperature gate, which are not consistent; the errors fixed by the alignment) are
    left out, and so is a raw-scale column equal to its identifiable-scale twin (the
    experts and weights, which the gate's symmetry does not move). Each column's theory
    line is the column's own
    (:attr:`~gmoe.simulation.columns.MetricColumn.theory`).
    """
    from .plots import write_report

    if name is None:
        name = experiment.name + ("-quick" if experiment.is_quick else "")
    setting, cell_atoms = study_setting(experiment)
    schema = [c for c in experiment.metric_schema() if c.theory.fit_slope]
    headline = _headline(schema)
    if headline is not None:
        schema = [headline, *(c for c in schema if c is not headline)]
    table = {"n": np.array([r["n"] for r in rows], dtype=np.float64)}
    names = {c.name for c in schema}
    plotted = []
    for column in schema:
        values = _column_values(rows, column.name)
        twin = column.name.removesuffix("_raw") if column.scale == "raw" else None
        if twin in names and np.array_equal(_column_values(rows, twin), values,
                                            equal_nan=True):
            continue  # the same numbers on both scales (the experts): drawn once
        table[column.name] = values
        try:
            fit_rate(table, column.name, summary=summary)
        except ValueError:
            continue
        plotted.append(column)
    if not plotted:
        return None
    m = max(cell_atoms) if max(cell_atoms) > 1 else None
    return write_report(table, [c.name for c in plotted], outdir, setting=setting, name=name,
                        m=m, theories={c.name: c.theory for c in plotted}, summary=summary)
