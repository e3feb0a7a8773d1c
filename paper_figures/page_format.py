"""How the reproduction's pages write numbers: slopes with intervals, verdicts, literals."""

import re

import numpy as np


def fmt_slope(row):
    """A rate row's slope with its 95 % interval (or why it has none)."""
    if row is None or not np.isfinite(row["slope"]):
        return "no rate" if row is None else (row["note"] or "no rate")
    ci = (f" [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
          if np.isfinite(row["ci_low"]) else " (no CI)")
    return f"{row['slope']:+.3f}{ci}"


def verdict(row):
    """Where a rate row's theory lies against its interval, in words."""
    if row is None or row["theory"] is None or not np.isfinite(row["slope"]):
        return "no stated rate"
    if row["within_ci"] and row["ci_high"] >= 0:
        # An interval that also holds a flat curve does not show the loss decaying at all:
        # holding the theory's rate is then no evidence for it.
        return "inside the CI of the mean, which holds 0 too: no decay shown by it"
    return {True: "inside the CI", False: "outside the CI", None: "no CI"}[row["within_ci"]]


def loss_table(rows, loss):
    """The sizes and one loss of result rows, as the rate fits take them (None as NaN)."""
    values = np.array([np.nan if r.get(loss) is None else r[loss] for r in rows])
    return {"n": np.array([r["n"] for r in rows], dtype=float), loss: values}


def fmt_sample_slope(fit):
    """A ``split_cells.py`` rate: slope, interval and the cells it rests on."""
    if not np.isfinite(fit["slope"]):
        return f"- ({fit['cells']})"
    if not np.isfinite(fit["low"]):  # two sizes: no interval
        return f"{fit['slope']:+.3f} ({fit['cells']})"
    return f"{fit['slope']:+.3f} [{fit['low']:+.3f}, {fit['high']:+.3f}] ({fit['cells']})"


def fmt_report_rate(rate, missing="-"):
    """A check report's rate (``slope``, ``low``, ``high``, None where absent) as text.

    ``missing`` stands for a rate that was not fitted; a slope of two sizes has no interval.
    """
    if rate is None or rate["slope"] is None:
        return missing
    if rate["low"] is None:
        return f"{rate['slope']:+.3f}"
    return f"{rate['slope']:+.3f} [{rate['low']:+.3f}, {rate['high']:+.3f}]"


def count_of(number, noun):
    """``number`` and ``noun``, plural unless ``number`` is 1: "1 task", "3 tasks"."""
    return f"{number} {noun}{'' if number == 1 else 's'}"


def fmt_median(value):
    """A median to three digits, or a dash where there is none."""
    return "-" if value is None else f"{value:.3g}"


def fmt_fit(fit):
    """A :class:`~gmoe.simulation.rates.RateFit`'s slope and interval, as in the tables."""
    low, high = fit.conf_int
    return f"{fit.slope:+.3f} [{low:+.3f}, {high:+.3f}]"


def rst_literals(text):
    """Markdown's `code` spans as reStructuredText's ``literals`` (those left as they are)."""
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)
