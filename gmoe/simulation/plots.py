"""Rate plots in the papers' style (log-log axes, mean curve, "C n^slope" fit, theory slope).

The functions take the same tidy tables as :mod:`gmoe.simulation.rates`. Each plotting
function draws on the given Axes (a new pyplot figure when None) and returns it;
:func:`write_report` draws on bare :class:`matplotlib.figure.Figure` objects, so it needs no
display, leaves pyplot's state untouched and works whatever backend is selected. Importing
this module does not import pyplot nor select a backend.
"""

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .rates import (
    RateFit,
    _as_list,
    _restrict,
    _theory_or_none,
    fit_rate,
    format_rate_table,
    mean_loss_by_n,
    rate_table,
    slope_sensitivity,
)

__all__ = ["RateReport", "plot_parameter_rates", "plot_rate", "write_report"]

_DROP_FRACTIONS = (0, 0.1, 0.25, 0.5)
_BAND_FLOOR = 1e-2  # the band's lower edge is clipped at mean * _BAND_FLOOR (log axis)


def _get_ax(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _slope_label(slope):
    return f"n^{slope:.3g}"


def plot_rate(table, loss, *, fit=None, theory=None, ax=None, label=None, summary="mean"):
    """Mean loss against sample size on log-log axes, with the fitted and theoretical rates.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        One row per ``(n, replication)`` task (see :mod:`gmoe.simulation.rates`).
    loss : str
        Name of the loss column.
    fit : RateFit, False or None, default=None
        The fitted line to draw; None fits it with :func:`~gmoe.simulation.rates.fit_rate`,
        False draws none (a loss without a consistent estimate).
    theory : float, default=None
        Theoretical slope, drawn dashed over the fitted range through the fitted line's
        value at its smallest sample size (through the mean at the smallest sample size
        when no fit is drawn); None draws no reference.
    ax : matplotlib Axes, default=None
        Where to draw; a new figure's Axes when None.
    label : str, default=None
        Label of the mean curve; defaults to ``loss``.
    summary : {'mean', 'geometric'}, default='mean'
        The curve and the fitted line of the mean loss, or of its geometric mean (see
        :func:`~gmoe.simulation.rates.fit_rate`).

    Returns
    -------
    matplotlib.axes.Axes

    Notes
    -----
    The band is mean +- 2 standard errors over the replications; its lower edge is clipped
    at 1/100 of the mean so that it stays on the log axis. For the geometric mean it is
    ``exp(mean log +- 2 SE)``. Sizes with one replication have no band.
    """
    by_n = mean_loss_by_n(table, loss, summary=summary)
    if fit is None:
        fit = fit_rate(table, loss, summary=summary)
    elif fit is not False and not isinstance(fit, RateFit):
        raise ValueError(f"fit must be a RateFit, False or None, got {fit!r}.")
    elif fit is not False and fit.summary != summary:
        raise ValueError(f"fit must be a fit of the curve drawn (summary={summary!r}), got a "
                         f"fit with summary={fit.summary!r}.")
    ax = _get_ax(ax)
    n, mean = by_n.n, by_n.mean
    positive = mean > 0  # log axis: a zero mean cannot be drawn
    se = np.nan_to_num(by_n.se)
    (mean_line,) = ax.plot(n[positive], mean[positive], marker="o", markersize=3,
                           label=label if label is not None else loss)
    color = mean_line.get_color()
    if summary == "geometric":  # se is the standard error of the mean log
        lower, upper = mean * np.exp(-2 * se), mean * np.exp(2 * se)
    else:
        lower, upper = np.maximum(mean - 2 * se, _BAND_FLOOR * mean), mean + 2 * se
    ax.fill_between(n[positive], lower[positive], upper[positive], color=color, alpha=0.2,
                    linewidth=0)
    grid = np.geomspace(n[0], n[-1], 100)
    anchor = mean[positive][0] if np.any(positive) else None
    if fit is not False:
        grid = np.geomspace(fit.n_min, fit.n_max, 100)
        ax.plot(grid, fit.predict(grid), color=color, linestyle="-", linewidth=2, alpha=0.7,
                label=fit.legend)
        anchor = float(fit.predict(grid[0]))
    if theory is not None and anchor is not None:
        ax.plot(grid, anchor * (grid / grid[0]) ** theory, color="0.3", linestyle="--",
                linewidth=1, label=f"theory {_slope_label(theory)}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sample size n")
    ax.set_ylabel(loss if summary == "mean" else f"{loss} (geometric mean)")
    ax.legend(loc="best", fontsize="small")
    return ax


def _panel_theory(setting, loss, m, rbar, theories):
    theory = (theories or {}).get(loss) or _theory_or_none(setting, loss, m, rbar)
    return theory.slope, theory.fit_slope


def plot_parameter_rates(table, losses, *, setting=None, ncols=2, fig=None, min_n=None,
                         m=None, rbar=None, theories=None, summary="mean"):
    """One rate panel per loss (per-parameter rates), as :func:`plot_rate` draws them.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        One row per ``(n, replication)`` task.
    losses : str or sequence of str
        Loss columns, one panel each, row by row.
    setting : str, default=None
        A setting of :func:`~gmoe.theory.theoretical_slope`: each panel then
        shows its theoretical slope, and no slope is fitted where the theory says the
        estimate is not consistent. None draws no theory.
    ncols : int, default=2
        Panels per row.
    fig : matplotlib Figure, default=None
        Where to draw (its existing axes are cleared); a new pyplot figure when None.
    min_n : float, default=None
        Fit only the sample sizes ``n >= min_n``.
    m, rbar : int or float, default=None
        Passed to :func:`~gmoe.theory.theoretical_slope`.
    theories : mapping of str to gmoe.theory.Theory, optional
        The theory of the losses it names, in place of the setting's lookup by name.
    summary : {'mean', 'geometric'}, default='mean'
        As in :func:`plot_rate`.

    Returns
    -------
    matplotlib.figure.Figure
        With ``len(losses)`` Axes.
    """
    losses = _as_list(losses)
    if not losses:
        raise ValueError("losses must name at least one loss column, got an empty list.")
    if not (isinstance(ncols, int) and ncols >= 1):
        raise ValueError(f"ncols must be a positive integer, got ncols={ncols!r}.")
    ncols = min(ncols, len(losses))
    nrows = math.ceil(len(losses) / ncols)
    if fig is None:
        import matplotlib.pyplot as plt

        fig = plt.figure(figsize=(4.5 * ncols, 3.5 * nrows))
    else:
        fig.clear()
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, loss in zip(axes, losses, strict=False):
        theory, fit_slope = _panel_theory(setting, loss, m, rbar, theories)
        fit = fit_rate(table, loss, min_n=min_n, summary=summary) if fit_slope else False
        plot_rate(table, loss, fit=fit, theory=theory, ax=ax, summary=summary)
        ax.set_title(loss)
    for ax in axes[len(losses):]:
        fig.delaxes(ax)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class RateReport:
    """Files written by :func:`write_report` and the slope table.

    Attributes
    ----------
    rate_plot : pathlib.Path
        PNG of the headline loss (the first one).
    panels : pathlib.Path
        PNG with one panel per loss.
    slope_table : pathlib.Path
        Text file: the slope table and the headline slope's sensitivity to dropping the
        smallest sample sizes.
    rows : list of dict
        The rows of :func:`~gmoe.simulation.rates.rate_table`.
    """

    rate_plot: Path
    panels: Path
    slope_table: Path
    rows: list


def write_report(table, losses, outdir, *, setting=None, name="study", min_n=None, m=None,
                 rbar=None, theories=None, dpi=150, summary="mean"):
    """Write the rate plots and the slope table of a study.

    Parameters
    ----------
    table : mapping of 1-D arrays or list of dict rows
        One row per ``(n, replication)`` task.
    losses : str or sequence of str
        Loss columns; the first is the headline loss (its own plot).
    outdir : str or path-like
        Directory of the outputs (created if needed).
    setting : str, default=None
        A setting of :func:`~gmoe.theory.theoretical_slope` (theory slopes).
    name : str, default="study"
        Stem of the file names: ``{name}_rate.png``, ``{name}_panels.png``,
        ``{name}_slopes.txt``.
    min_n : float, default=None
        Fit only the sample sizes ``n >= min_n``.
    m, rbar : int or float, default=None
        Passed to :func:`~gmoe.theory.theoretical_slope`.
    theories : mapping of str to gmoe.theory.Theory, optional
        The theory of the losses it names, in place of the setting's lookup by name (see
        :func:`~gmoe.simulation.rates.rate_table`).
    dpi : int, default=150
        Resolution of the PNGs.
    summary : {'mean', 'geometric'}, default='mean'
        Fit and draw the mean loss or its geometric mean (see
        :func:`~gmoe.simulation.rates.fit_rate`); the slope table's second line names it.

    Returns
    -------
    RateReport
        The three paths and the rows of the slope table.
    """
    from matplotlib.figure import Figure

    losses = _as_list(losses)
    if not losses:
        raise ValueError("losses must name at least one loss column, got an empty list.")
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    rows = rate_table(table, losses, setting, min_n=min_n, m=m, rbar=rbar, theories=theories,
                      summary=summary)

    headline = losses[0]
    theory, fit_slope = _panel_theory(setting, headline, m, rbar, theories)
    fit = fit_rate(table, headline, min_n=min_n, summary=summary) if fit_slope else False
    figure = Figure(figsize=(6, 4.5))
    ax = plot_rate(table, headline, fit=fit, theory=theory, ax=figure.add_subplot(),
                   summary=summary)
    ax.set_title(name if setting is None else f"{name} ({setting})")
    figure.tight_layout()
    rate_plot = outdir / f"{name}_rate.png"
    figure.savefig(rate_plot, dpi=dpi)

    ncols = min(2, len(losses))
    panels_fig = Figure(figsize=(4.5 * ncols, 3.5 * math.ceil(len(losses) / ncols)))
    plot_parameter_rates(table, losses, setting=setting, ncols=ncols, fig=panels_fig,
                         min_n=min_n, m=m, rbar=rbar, theories=theories, summary=summary)
    panels = outdir / f"{name}_panels.png"
    panels_fig.savefig(panels, dpi=dpi)

    what = "mean" if summary == "mean" else "geometric mean"
    text = [f"{name}" + ("" if setting is None else f" (setting: {setting})"),
            f"Slopes of the {what} of each loss over the replications, on log n.", "",
            format_rate_table(rows)]
    if fit_slope:
        text.append(f"Sensitivity of the {headline} slope to dropping the smallest sample sizes:")
        restricted = _restrict(table, min_n)
        n_sizes = mean_loss_by_n(restricted, headline).n.size
        fractions = [f for f in _DROP_FRACTIONS if n_sizes - math.floor(f * n_sizes) >= 2]
        for frac, sfit in zip(fractions, slope_sensitivity(restricted, headline, fractions,
                                                           summary=summary), strict=True):
            low, high = sfit.conf_int
            interval = (f"[{low:.3f}, {high:.3f}]" if np.isfinite(low) and np.isfinite(high)
                        else "no CI")  # two sizes: the line fits them exactly
            text.append(f"  drop {frac:>4.0%}: n >= {sfit.n_min:<8g} slope {sfit.slope:.3f} "
                        f"{interval} ({sfit.n_points} sizes)")
    slope_table = outdir / f"{name}_slopes.txt"
    slope_table.write_text("\n".join(text) + "\n")
    return RateReport(rate_plot=rate_plot, panels=panels, slope_table=slope_table, rows=rows)
