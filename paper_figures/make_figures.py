"""Build the reproduction's figures, REPRODUCTION.md and the documentation page.

Reads the committed compact results (``paper_figures/results/NAME.csv.gz``, one row per
task, and ``NAME.run.json``, the run's wall time), written by ``run_studies.py``. Every
slope, interval and time in the outputs is computed here from those files; nothing is
typed by hand. Runs in seconds.

This script draws the figures and assembles the pages; the parts it assembles have their
own modules: ``study_claims`` (the studies and the papers' claims), ``committed_results``
(reading the results and which builds computed them), ``fit_texts`` (the checks of the
fits), ``build_texts`` (restores and other builds' fits), ``supremum_report`` (where an
over-specified study's starts stop) and ``page_format`` (how numbers are written).

Usage::

    python paper_figures/make_figures.py                 # figures/, REPRODUCTION.md, docs page
    python paper_figures/make_figures.py --results DIR   # e.g. quick results, to check
"""

import argparse
import sys
from collections import Counter
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from build_texts import more_starts_text, other_build_text, restored_text  # noqa: E402
from committed_results import read_results  # noqa: E402
from fit_texts import (  # noqa: E402
    asymptotic_text,
    boundary_check_text,
    coselected_text,
    density_text,
    disagreement_text,
    fitcheck_text,
    normal_limit_overview,
    split_cells_text,
    spread_text,
    start_check_text,
    truth_check_text,
)
from page_format import fmt_slope, loss_table, rst_literals, verdict  # noqa: E402
from study_claims import MORE_STARTS_OF, PUBLISHED_D1, STUDIES, headline_column  # noqa: E402
from supremum_report import (  # noqa: E402
    read_supremum_checks,
    supremum_figure,
    supremum_markdown,
    supremum_rst,
)

from gmoe.simulation import load_experiment  # noqa: E402
from gmoe.simulation.rates import (  # noqa: E402
    fit_rate,
    format_rate_table,
    mean_loss_by_n,
    slope_sensitivity,
)
from gmoe.simulation.report import (  # noqa: E402
    study_rate_rows,
    study_setting,
    write_study_plots,
)


def published_figure(rows, out):
    """softmax-exact: our mean D1, our fit and the published fit, on one log-log plot."""
    table = loss_table(rows, "d1")
    means = mean_loss_by_n(table, "d1")
    fit = fit_rate(table, "d1")
    n = means.n
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.loglog(n, means.mean, ".", ms=3, color="0.3", label="mean D1 over replications")
    ax.loglog(n, fit.C * n ** fit.slope, "-", color="C0",
              label=f"gmoe fit {fit.C:.3g} n^{fit.slope:.3f}")
    C, slope = PUBLISHED_D1
    ax.loglog(n, C * n ** slope, "--", color="C3",
              label=f"published fit e^3.5 n^{slope} (paper 1's code)")
    ax.loglog(n, fit.C * n[0] ** (fit.slope + 0.5) * n ** -0.5, ":", color="0.5",
              label="theory slope -1/2")
    ax.set_xlabel("n")
    ax.set_ylabel("D1")
    ax.set_title("Softmax gate, exact-specified: D1 against n")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def temperature_figure(results, out):
    """Raw tau error of the temperature gate (both noise variants) beside the losses that
    decay: D1 on gamma and the activation gate's D1."""
    panels = [("temperature", "pe_temperature_raw", "raw |tau - tau*|, published schedule"),
              ("temperature-fixed-noise", "pe_temperature_raw", "raw |tau - tau*|, fixed noise"),
              ("temperature", "d1", "D1 on gamma = beta / tau"),
              ("activation", "d1", "activation gate (tanh): D1")]
    present = [p for p in panels if results.get(p[0]) is not None]
    if not present:
        return False
    fig, axes = plt.subplots(1, len(present), figsize=(3.6 * len(present), 3.4))
    for ax, (study, loss, title) in zip(np.atleast_1d(axes), present, strict=True):
        rows = results[study]
        table = loss_table(rows, loss)
        means = mean_loss_by_n(table, loss)
        ax.loglog(means.n, means.mean, ".", ms=3, color="0.3")
        fit = fit_rate(table, loss)
        ax.loglog(means.n, fit.C * means.n ** fit.slope, "-", color="C0",
                  label=f"slope {fit.slope:+.3f}")
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("n")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def limit_ratio_bins(rows, column, constant, bins=20):
    """sqrt(n) x ``column`` / ``constant`` pooled into bins even in log n.

    Each task is an independent draw, and in the normal limit sqrt(n) x value has one law
    at every n, so a bin's rows can be pooled (a trend within a bin, which spans a factor
    of about 1.4 in n for a grid of two decades, only widens its error).

    Returns
    -------
    centre, mean, error : ndarray
        Per non-empty bin: the geometric mean of its sizes, the mean ratio and two standard
        errors of it (NaN for a bin of one row). Empty arrays without a finite value.
    """
    kept = [r for r in rows if r.get(column) is not None and np.isfinite(r[column])]
    if not kept:
        return np.empty(0), np.empty(0), np.empty(0)
    n = np.array([r["n"] for r in kept], dtype=float)
    scaled = np.array([r[column] for r in kept]) * np.sqrt(n) / constant
    edges = np.linspace(np.log(n.min()), np.log(n.max()), bins + 1)
    which = np.clip(np.searchsorted(edges, np.log(n), side="right") - 1, 0, bins - 1)
    centre, mean, error = [], [], []
    for b in np.unique(which):
        values = scaled[which == b]
        centre.append(np.exp(np.log(n[which == b]).mean()))
        mean.append(values.mean())
        error.append(2 * values.std(ddof=1) / np.sqrt(values.size) if values.size > 1
                     else np.nan)
    return np.array(centre), np.array(mean), np.array(error)


def normal_limit_figure(rows, check, out, bins=20):
    """sqrt(n) times each whole-model column's mean over its normal limit's constant, by n.

    A curve at 1 has met the maximum-likelihood estimate's limit, constant and rate; one
    that climbs towards it from below approaches from below (a shallower slope over the
    grid), one that falls towards it from above approaches from above. The sizes are
    pooled into at most ``bins`` bins even in log n (:func:`limit_ratio_bins`; a grid of
    200 sizes would hide the curve under its bars), with two standard errors; the shaded
    band is the Monte Carlo's own two standard errors of the constant. Returns False (no
    figure) without such a column holding a value.
    """
    entries = {c["column"]: c for c in check["columns"]}
    columns = [c for c in (check.get("whole_model") or {}).get("columns", []) if c in entries]
    drawn = []
    for column in columns:
        centre, mean, error = limit_ratio_bins(rows, column, entries[column]["limit_constant"],
                                               bins)
        if centre.size:
            drawn.append((column, centre, mean, error))
    if not drawn:
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for i, (column, centre, mean, error) in enumerate(drawn):
        entry = entries[column]
        ax.errorbar(centre, mean, yerr=error, fmt="o-", ms=3, lw=0.8, capsize=2,
                    color=f"C{i}", label=f"{column} (limit sqrt(n) x mean = "
                                         f"{entry['limit_constant']:.3g})")
        band = 2 * entry.get("limit_mc_relative_se", 0.0)
        ax.axhspan(1 - band, 1 + band, color=f"C{i}", alpha=0.08, lw=0)
    ax.axhline(1.0, color="0.3", lw=0.8, ls="--", label="normal limit of the MLE")
    ax.set_xscale("log")
    ax.set_xlabel("n")
    ax.set_ylabel("sqrt(n) x mean / limit")
    ax.set_title(f"{check['study']}: mean errors against the normal limit", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def study_section(name, claim, rows, info, fig_dir):
    """The numbers and figure files of one study."""
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    rate_rows = study_rate_rows(rows, None, experiment)
    by_loss = {r["loss"]: r for r in rate_rows}
    # The same rates fitted to the geometric mean over the replications: over-specified
    # losses spread over orders of magnitude, and a few replications set their mean.
    geometric_rows = study_rate_rows(rows, None, experiment, summary="geometric")
    headline = headline_column(by_loss)
    over_specified = max(study_setting(experiment)[1]) > 1
    write_study_plots(rows, experiment, fig_dir, name=name)
    table = loss_table(rows, headline)
    sensitivity = []
    if np.isfinite(by_loss[headline]["slope"]):
        for frac, fit in zip((0.25, 0.5), slope_sensitivity(table, headline, (0.25, 0.5)),
                             strict=True):
            sensitivity.append({"fraction": frac, "slope": fit.slope,
                                "low": float(fit.conf_int[0]), "high": float(fit.conf_int[1]),
                                "n_min": fit.n_min})
    planned = len(experiment.sizes) * experiment.replications
    per_size = Counter(r["n"] for r in rows)
    return {"name": name, "claim": claim, "rows": rate_rows, "by_loss": by_loss,
            "geometric_rows": geometric_rows,
            "geometric": {r["loss"]: r for r in geometric_rows},
            "over_specified": over_specified,
            # An over-specified fit's D2 spreads over orders of magnitude across the
            # replications (a split cell's gate error raised to rbar); a density does not.
            "spread_headline": over_specified and headline == "d2",
            "starts": experiment.start.get("n_starts", 1),
            "headline": headline, "sensitivity": sensitivity, "planned": planned,
            "n_min": min(per_size), "n_max": max(per_size),
            "planned_sizes": len(experiment.sizes),
            "n_rows": len(rows), "time": grid_time(rows, info, complete=len(rows) >= planned),
            "n_sizes": len(per_size),
            "replications": max(per_size.values()),
            "min_replications": min(per_size.values()),
            "fitcheck": info.get("fitcheck"), "asymptotic": info.get("asymptotic"),
            "split_cells": info.get("split_cells"), "truth_check": info.get("truth_check"),
            "coselected": info.get("coselected"),
            "boundary_check": info.get("boundary_check"),
            "start_check": info.get("start_check"),
            "build_check": info.get("build_check"),
            "machine_check": info.get("machine_check"),
            "other_builds": info.get("other_builds", []),
            "meta": info.get("meta", {}), "runs": info.get("runs", [])}


def _grid(s):
    """The grid run: full, or the part of it that was run (a partial grid says so)."""
    if s["n_rows"] >= s["planned"]:
        return f"{s['n_sizes']} sizes x {s['replications']}"
    reps = (str(s["replications"]) if s["min_replications"] == s["replications"]
            else f"{s['min_replications']}-{s['replications']}")
    return (f"PARTIAL: {s['n_rows']} of {s['planned']} tasks; {s['n_sizes']} of "
            f"{s['planned_sizes']} sizes (n {s['n_min']} to {s['n_max']}) x {reps} "
            "replications")


def grid_time(rows, info, *, complete=True):
    """A grid's run time in seconds, and the workers it was divided by (None: measured).

    The runs' wall time when the grid is ``complete`` and every run finished; else (a run
    stopped by a kill records its time only to its last stored row, the work in flight
    lost, and a partial grid's runs did other work) the tasks' summed time over the runs'
    workers.
    """
    runs = info.get("runs", [])
    if complete and info.get("wall_seconds") and all(r.get("status") == "finished"
                                                      for r in runs):
        return float(info["wall_seconds"]), None
    workers = max([r.get("n_jobs") or 1 for r in runs] or [1])
    return sum(float(r.get("task_seconds") or 0.0) for r in rows) / workers, workers


def _run_time(s):
    seconds, workers = s["time"]
    if workers is None:
        return f"{seconds / 60:.1f} min"
    return f"~{seconds / 60:.1f} min (task time / {workers} workers)"


def _slope_of(results, study, loss):
    """(slope, CI low, CI high) of one column of one study, or None."""
    rows = results.get(study)
    if not rows or all(r.get(loss) is None for r in rows):
        return None
    try:
        fit = fit_rate(loss_table(rows, loss), loss)
    except ValueError:
        return None
    low, high = fit.conf_int
    return fit.slope, low, high


def _flat_by_construction(value):
    """Why an interval that misses 0 for the fixed-noise raw temperature is no trend.

    The estimator holds tau at its start, whose noise has one law at every n: the raw
    error's expected curve is flat by construction, so a 95 % interval that misses 0 is
    one of the misses such an interval makes 1 time in 20.
    """
    if value is None or not np.isfinite(value[1]) or value[1] <= 0.0 <= value[2]:
        return ""
    miss = value[1] if value[1] > 0 else -value[2]
    return (f" (by {miss:.1g}; but the estimator holds tau at a start whose noise has one "
            "law at every n, so the expected curve is flat by construction, and a 95 % "
            "interval misses it 1 time in 20)")


def temperature_text(results):
    """The temperature-against-activation discussion, its numbers computed here."""
    def show(value):
        if value is None:
            return "not run"
        slope, low, high = value
        return f"{slope:+.3f} [{low:+.3f}, {high:+.3f}]"

    def against(value, target, what):
        if value is None:
            return ""
        _, low, high = value
        inside = np.isfinite(low) and low <= target <= high
        return f"; its CI {'contains' if inside else 'does NOT contain'} {what} ({target:+.3f})"

    raw_schedule = _slope_of(results, "temperature", "pe_temperature_raw")
    raw_fixed = _slope_of(results, "temperature-fixed-noise", "pe_temperature_raw")
    gamma = _slope_of(results, "temperature", "d1")
    activation = _slope_of(results, "activation", "d1")
    return [
        "### Temperature against activation gating (paper 3)", "",
        "The linear temperature gate's logits are (beta1 x + beta0) / tau: multiplying "
        "(beta1, beta0, tau) by any c > 0 leaves the density unchanged, exactly. The "
        "likelihood cannot see where on that ray a fit sits, so the estimator holds tau at "
        "its start, and the raw errors carry only what the start put in:", "",
        f"* raw |tau - tau*|, start noise 0.05 n^-0.083 (the published schedule): slope "
        f"{show(raw_schedule)}{against(raw_schedule, -0.083, 'the schedule')};",
        f"* raw |tau - tau*|, start noise 0.05 fixed: slope {show(raw_fixed)}"
        f"{against(raw_fixed, 0.0, 'a flat curve')}{_flat_by_construction(raw_fixed)};",
        f"* D1 on the identifiable scale gamma = (beta1, beta0) / tau: slope {show(gamma)}"
        f"{against(gamma, -0.5, 'the parametric rate')};",
        f"* the activation (tanh) gate, which has no such symmetry: D1 slope "
        f"{show(activation)}{against(activation, -0.5, 'the parametric rate')}.", "",
        "So the raw parameters of the linear temperature gate do not converge at any rate, "
        "polynomial or logarithmic: they are not identified, and an error curve of them "
        "measures the start. What is identified, gamma, converges at n^-1/2 like the "
        "softmax gate it is. The claim that the temperature gate's parameters converge "
        "\"slower than any polynomial\" therefore holds for the raw parameters only in the "
        "trivial sense that they do not converge at all, and it does not hold for the "
        "identifiable ones. The activation gate has no such symmetry: its parameters are "
        f"identified, and its D1's fitted slope over the grid is {show(activation)}"
        + ("" if activation is None or not np.isfinite(activation[1])
           or activation[1] <= -0.5 <= activation[2] else
           ", an interval that excludes the parametric rate; its section below reads that "
           "slope against the normal limit of its maximum-likelihood estimate")
        + ".", ""]


def write_markdown(sections, extra_figures, path, results, checks=None):
    lines = ["# Reproducing the papers' convergence-rate figures", "",
             "Generated by `python paper_figures/make_figures.py` from the committed results "
             "in `paper_figures/results/` (written by `python paper_figures/run_studies.py`, "
             "which runs every study's full grid with `gmoe-sim run NAME --n-jobs 2` on the "
             "2-core machine; a grid stopped part way goes on with `python "
             "paper_figures/run_studies.py NAME --restore`, on a machine that rounds "
             "otherwise with `--verify 0` and then `python paper_figures/build_check.py NAME "
             "--machine` to measure what that pools). No number below is typed by hand.", "",
             "| study | source | setting | claim | loss | our slope [95% CI] | theory | "
             "drop 25% / 50% of sizes | geometric-mean slope | grid | run time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sections:
        row = s["by_loss"][s["headline"]]
        sens = " / ".join(f"{d['slope']:+.3f}" for d in s["sensitivity"]) or "-"
        theory = "-" if row["theory"] is None else f"{row['theory']:+.3f} ({verdict(row)})"
        lines.append(f"| {s['name']} | {s['claim'].source} | {s['claim'].setting} | "
                     f"{s['claim'].claim} | {s['headline']} | {fmt_slope(row)} | {theory} | "
                     f"{sens} | {fmt_slope(s['geometric'].get(s['headline']))} | "
                     f"{_grid(s)} | {_run_time(s)} |")
    overview = normal_limit_overview(sections)
    if overview:
        lines += ["", overview[0]]
    run = {s["name"] for s in sections}
    missing = [name for name in STUDIES if name not in run]
    waiting = [name for name in missing if name not in (checks or {})]
    if waiting:
        lines += ["", "Not run at full scale yet (no committed results): "
                  + ", ".join(f"`{name}`" for name in waiting) + "."]
    for name in (name for name in missing if name in (checks or {})):
        density = (f" Its density rate is measured on a grid of its own, `{name}-density`."
                   if f"{name}-density" in run else "")
        lines += ["", f"`{name}` is not run at full scale: the section '{name}: where "
                  f"its fits stop' below says why.{density}"]
    lines.append("")
    for s in sections:
        lines += [f"## {s['name']}", "", f"*{s['claim'].source}*: {s['claim'].setting}. "
                  f"Claim: {s['claim'].claim}.", "",
                  f"![{s['name']}](figures/{s['name']}_rate.png)", "",
                  "Every metric column (the per-cell rows `[m=...]` are fitted over the "
                  "replications whose cell held m fitted atoms):", "", "```",
                  format_rate_table(s["rows"]).rstrip("\n"), "```", ""]
        if s["spread_headline"]:
            lines += ["The same rates fitted to the geometric mean of the replications at "
                      "each n (an over-specified fit's D2 raises the gate's error in a split "
                      "cell to the power rbar, so its replications spread over orders of "
                      "magnitude and a few of them set the mean; for a loss C n^s times "
                      "noise whose distribution does not depend on n both summaries "
                      "estimate the same s):", "", "```",
                      format_rate_table(s["geometric_rows"]).rstrip("\n"), "```", ""]
        lines += restored_text(s)
        lines += spread_text(s, results[s["name"]]) + density_text(s, results[s["name"]])
        lines += other_build_text(s, results[s["name"]])
        if s["name"] in MORE_STARTS_OF:
            lines += more_starts_text(s, results, MORE_STARTS_OF[s["name"]])
        lines += split_cells_text(s) + coselected_text(s)
        lines += [fitcheck_text(s, results[s["name"]]), ""] + truth_check_text(s) \
            + disagreement_text(s) + boundary_check_text(s) + asymptotic_text(s) \
            + start_check_text(s)
        for title, figure in extra_figures.get(s["name"], []):
            lines += [f"{title}", "", f"![{title}](figures/{figure})", ""]
        if s["name"] == "temperature":
            lines += temperature_text(results)
    for report in (checks or {}).values():
        lines += supremum_markdown(report)
    path.write_text("\n".join(lines) + "\n")


def write_rst(sections, extra_figures, path, results, checks=None):
    title = "Reproducing the published rate figures"
    lines = [".. _reproduction:", "", title, "=" * len(title), "",
             "The convergence-rate studies of the three papers, run at full scale on a "
             "2-core machine, and gmoe's own top-K studies. Generated by "
             "``paper_figures/make_figures.py`` from the committed results; the same "
             "content as ``paper_figures/REPRODUCTION.md``. The theory's rates are on "
             ":ref:`theory-rates`; the protocols on :ref:`theory-protocols`.", "",
             ".. list-table::", "   :header-rows: 1", "",
             "   * - study", "     - claim", "     - loss", "     - our slope [95% CI]",
             "     - geometric-mean slope", "     - theory", "     - run time"]
    for s in sections:
        row = s["by_loss"][s["headline"]]
        theory = "-" if row["theory"] is None else f"{row['theory']:+.3f} ({verdict(row)})"
        lines += [f"   * - ``{s['name']}``",
                  f"     - {s['claim'].source}: {s['claim'].claim} ({_grid(s)})",
                  f"     - {s['headline']}", f"     - {fmt_slope(row)}",
                  f"     - {fmt_slope(s['geometric'].get(s['headline']))}",
                  f"     - {theory}",
                  f"     - {_run_time(s)}"]
    lines.append("")
    lines += [rst_literals(line) for line in normal_limit_overview(sections)]
    for s in sections:
        title = f"{s['name']}"
        lines += [title, "-" * len(title), "", f"{s['claim'].setting}. Claim: "
                  f"{s['claim'].claim}.", "",
                  f".. image:: ../paper_figures/figures/{s['name']}_rate.png",
                  f"   :alt: {s['name']} rate plot", ""]
        for caption, figure in extra_figures.get(s["name"], []):
            lines += [f".. figure:: ../paper_figures/figures/{figure}", "",
                      f"   {caption}", ""]
        more_starts = (more_starts_text(s, results, MORE_STARTS_OF[s["name"]])
                       if s["name"] in MORE_STARTS_OF else [])
        lines += [rst_literals(line) for line in restored_text(s)
                  + other_build_text(s, results[s["name"]]) + more_starts]
    for report in (checks or {}).values():
        lines += supremum_rst(report)
    path.write_text("\n".join(lines) + "\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--out", type=Path, default=HERE,
                        help="where figures/ and REPRODUCTION.md go (default paper_figures/)")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "reproduction.rst",
                        help="the documentation page to write ('-' for none)")
    args = parser.parse_args(argv)
    fig_dir = args.out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    results, sections = {}, []
    for name, claim in STUDIES.items():
        rows, info = read_results(args.results, name)
        results[name] = rows
        if rows:
            sections.append(study_section(name, claim, rows, info, fig_dir))
            print(f"{name}: {len(rows)} rows", flush=True)
    if not sections:
        sys.exit(f"no results in {args.results}: run paper_figures/run_studies.py first")
    extra = {}
    if results.get("softmax-exact"):
        published_figure(results["softmax-exact"], fig_dir / "softmax-exact_published.png")
        extra["softmax-exact"] = [("Our fit beside the published one",
                                   "softmax-exact_published.png")]
    if temperature_figure(results, fig_dir / "temperature_vs_activation.png"):
        extra["temperature"] = [("Temperature against activation gate",
                                 "temperature_vs_activation.png")]
    for s in sections:
        out = fig_dir / f"{s['name']}_normal_limit.png"
        if s.get("asymptotic") and normal_limit_figure(results[s["name"]], s["asymptotic"],
                                                        out):
            extra.setdefault(s["name"], []).append(("Mean errors against the normal limit",
                                                   out.name))
    checks = read_supremum_checks(args.results)
    for name, report in checks.items():
        supremum_figure(report, fig_dir / f"{name}_starts.png")
    write_markdown(sections, extra, args.out / "REPRODUCTION.md", results, checks)
    if str(args.docs) != "-":
        write_rst(sections, extra, args.docs, results, checks)
    print(f"wrote {args.out / 'REPRODUCTION.md'} and {len(list(fig_dir.glob('*.png')))} "
          "figures", flush=True)


if __name__ == "__main__":
    main()
