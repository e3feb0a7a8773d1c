"""Build the reproduction's figures, REPRODUCTION.md and the documentation page.

Reads the committed compact results (``paper_figures/results/NAME.csv.gz``, one row per
task, and ``NAME.run.json``, the run's wall time), written by ``run_studies.py``. Every
slope, interval and time in the outputs is computed here from those files; nothing is
typed by hand. Runs in seconds.

Usage::

    python paper_figures/make_figures.py                 # figures/, REPRODUCTION.md, docs page
    python paper_figures/make_figures.py --results DIR   # e.g. quick results, to check
"""

import argparse
import csv
import gzip
import json
import re
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

from gmoe.simulation import load_experiment  # noqa: E402
from gmoe.simulation.rates import (  # noqa: E402
    fit_rate,
    format_rate_table,
    mean_loss_by_n,
    slope_sensitivity,  # noqa: E402
)
from gmoe.simulation.report import (  # noqa: E402
    study_rate_rows,
    study_setting,
    write_study_plots,
)


@dataclass(frozen=True)
class Claim:
    """What a paper (or our own study) claims for one setting."""

    source: str
    setting: str
    claim: str


PAPER1 = "Nguyen, Nguyen & Ho (2023), softmax gating"
PAPER2 = "Nguyen, Akbarian, Yan & Ho (2024), top-K sparse gating"
PAPER3 = "Nguyen, Akbarian & Ho (2024), temperature"
OURS = "gmoe's own study"

#: The studies of the reproduction, in the order of REPRODUCTION.md.
STUDIES = {
    "softmax-exact": Claim(PAPER1, "softmax gate, exact-specified (k = k* = 2)",
                           "D1 decays as n^-1/2; the published code's fit was "
                           "e^3.5 n^-0.638"),
    "softmax-over-k3": Claim(PAPER1, "softmax gate, over-specified (k = 3, k* = 2)",
                             "D2 decays as n^-1/2 (rbar(2) = 4); a cell of m = 2 atoms "
                             "estimates beta1, b at n^-1/8 and a, nu at n^-1/4"),
    "softmax-over-k4": Claim(PAPER1, "softmax gate, over-specified (k = 4, k* = 2)",
                             "D2 decays as n^-1/2 (rbar(2) = 4, rbar(3) = 6)"),
    "paper2-top1-exact": Claim(PAPER2, "top-1 gate, exact-specified (k = k* = 2), "
                                       "X ~ N(0, 1)",
                               "D1 decays as n^-1/2; the selection boundary is estimated "
                               "fast"),
    "paper2-top1-over": Claim(PAPER2, "top-1 truth, over-specified fit (k = 3, K = 2)",
                              "densities converge at n^-1/2 when the fitted K covers the "
                              "selected cells; D2 at n^-1/2"),
    "topk-exact": Claim(OURS, "top-2 of 3 experts, exact-specified",
                        "D1 decays as n^-1/2 (as the softmax gate)"),
    "topk-over": Claim(OURS, "top-2 truth, over-specified fit (k = 4, K = 3)",
                       "D2 decays as n^-1/2 when the fitted K covers the selected cells"),
    "temperature": Claim(PAPER3, "temperature gate (tau held at its start), tau start "
                                 "noise 0.05 n^-0.083",
                         "parameters converge slower than any polynomial"),
    "temperature-fixed-noise": Claim(PAPER3, "temperature gate, tau start noise 0.05 "
                                             "(fixed)",
                                     "parameters converge slower than any polynomial"),
    "activation": Claim(PAPER3, "activation (tanh) dense-to-sparse gate, exact-specified",
                        "polynomial rates restored: D1 at n^-1/2"),
}

#: Paper 1's published fit of D1 on the exact grid: e^3.5 n^-0.638.
PUBLISHED_D1 = (np.exp(3.5), -0.638)


def _read_rows(path):
    """The rows of a gzipped CSV of results: numbers as floats, empty fields as None."""
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                try:
                    row[key] = None if value == "" else float(value)
                except ValueError:
                    row[key] = value
            row["n"] = int(row["n"])
            rows.append(row)
    return rows


def read_results(directory, name):
    """Rows (numbers as floats, empty fields as None) and run info of one study."""
    path = directory / f"{name}.csv.gz"
    if not path.exists():
        return None, None
    rows = _read_rows(path)
    info_path = directory / f"{name}.run.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    for key, suffix in (("fitcheck", "fitcheck"), ("asymptotic", "asymptotic"),
                        ("split_cells", "splitcells"), ("truth_check", "truthcheck")):
        extra = directory / f"{name}.{suffix}.json"
        if extra.exists():
            info[key] = json.loads(extra.read_text())
    info["other_builds"] = []
    for path in sorted(directory.glob(f"{name}.build-*.csv.gz")):
        label = path.name[len(f"{name}.build-"):-len(".csv.gz")]
        about = directory / f"{name}.build-{label}.json"
        info["other_builds"].append({"label": label, "rows": _read_rows(path),
                                     "info": json.loads(about.read_text())
                                     if about.exists() else {}})
    return rows, info


def _fmt_slope(row):
    if row is None or not np.isfinite(row["slope"]):
        return "no rate" if row is None else (row["note"] or "no rate")
    ci = (f" [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"
          if np.isfinite(row["ci_low"]) else " (no CI)")
    return f"{row['slope']:+.3f}{ci}"


def _verdict(row):
    if row is None or row["theory"] is None or not np.isfinite(row["slope"]):
        return "no stated rate"
    return {True: "inside the CI", False: "outside the CI", None: "no CI"}[row["within_ci"]]


def _table(rows, loss):
    values = np.array([np.nan if r.get(loss) is None else r[loss] for r in rows])
    return {"n": np.array([r["n"] for r in rows], dtype=float), loss: values}


def published_figure(rows, out):
    """softmax-exact: our mean D1, our fit and the published fit, on one log-log plot."""
    table = _table(rows, "d1")
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
        table = _table(rows, loss)
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


def study_section(name, claim, rows, info, fig_dir):
    """The numbers and figure files of one study."""
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    rate_rows = study_rate_rows(rows, None, experiment)
    by_loss = {r["loss"]: r for r in rate_rows}
    # The same rates fitted to the geometric mean over the replications: over-specified
    # losses spread over orders of magnitude, and a few replications set their mean.
    geometric_rows = study_rate_rows(rows, None, experiment, summary="geometric")
    headline = next((c for c in ("d1", "d2") if c in by_loss), rate_rows[0]["loss"])
    write_study_plots(rows, experiment, fig_dir, name=name)
    table = _table(rows, headline)
    sensitivity = []
    if np.isfinite(by_loss[headline]["slope"]):
        for frac, fit in zip((0.25, 0.5), slope_sensitivity(table, headline, (0.25, 0.5)),
                             strict=True):
            sensitivity.append((frac, fit.slope, fit.n_min))
    planned = len(experiment.sizes) * experiment.replications
    per_size = Counter(r["n"] for r in rows)
    return {"name": name, "claim": claim, "rows": rate_rows, "by_loss": by_loss,
            "geometric_rows": geometric_rows,
            "geometric": {r["loss"]: r for r in geometric_rows},
            "over_specified": max(study_setting(experiment)[1]) > 1,
            "headline": headline, "sensitivity": sensitivity, "planned": planned,
            "n_min": min(per_size), "n_max": max(per_size),
            "planned_sizes": len(experiment.sizes),
            "n_rows": len(rows), "time": grid_time(rows, info, complete=len(rows) >= planned),
            "n_sizes": len(per_size),
            "replications": max(per_size.values()),
            "min_replications": min(per_size.values()),
            "fitcheck": info.get("fitcheck"), "asymptotic": info.get("asymptotic"),
            "split_cells": info.get("split_cells"), "truth_check": info.get("truth_check"),
            "other_builds": info.get("other_builds", []),
            "meta": info.get("meta", {})}


def asymptotic_text(s):
    """What ``asymptotic_check.py`` found: predicted (I^-1 / n) against observed errors."""
    check = s["asymptotic"]
    if check is None:
        return []
    eig = check["information_eigenvalues"]
    first = check["columns"][0]
    small, large = first["small"], first["large"]
    stale = ("" if check.get("result_rows") == s["n_rows"] else
             " (STALE: computed from another export of the results; rerun it)")
    lines = [f"Asymptotic check (`python paper_figures/asymptotic_check.py {s['name']}`)"
             f"{stale}: "
             f"the Fisher information per row at the truth has eigenvalues from {eig[0]:.1e} "
             f"to {eig[-1]:.1e}. Mean errors observed against those of the normal limit "
             f"N(0, I^-1 / n), at the smallest sizes (n {small['n_from']} to "
             f"{small['n_to']}) and at the largest (n {large['n_from']} to {large['n_to']}):",
             "", "| column | smallest n: observed | predicted | largest n: observed | "
             "predicted |", "|---|---|---|---|---|"]
    for c in check["columns"]:
        lines.append(f"| {c['column']} | {c['small']['observed_mean']:.3g} | "
                     f"{c['small']['predicted_mean']:.3g} | {c['large']['observed_mean']:.3g} "
                     f"| {c['large']['predicted_mean']:.3g} |")
    for b in check.get("boundaries", []):
        lines += ["", f"The top-K selection changes at x = {b['x']:.4g} (expert {b['leaves']} "
                  f"leaves the selected set, expert {b['enters']} enters): the density jumps "
                  "there, and the jump's position is estimated at the faster rate n^-1 of a "
                  "change-point. The prediction is the normal limit with that position held "
                  "(the information restricted to the parameters that keep it), and the "
                  "rows where a difference quotient straddles it are left out of the "
                  "information."]
    lines += ["", "A column that meets its prediction at the largest sizes but stays below it "
              "at the smallest approaches the n^-1/2 curve from below: over the grid its "
              "fitted slope is shallower than -1/2 although its limit is -1/2. A column "
              "below its prediction at the largest sizes too is smaller than the "
              "maximum-likelihood estimate's error: its fits stopped nearer their start "
              "than the maximum (the likelihood check above says whether they reached it).",
              ""]
    return lines


def truth_check_text(s):
    """What ``truth_check.py`` found: fits whose log-likelihood is below the truth's."""
    check = s.get("truth_check")
    if not check:
        return []
    stale = ("" if check.get("result_rows") == s["n_rows"] else
             " (STALE: computed from another export of the results; rerun it)")
    parts = [f"n = {c['n']}: {c['below']} of {c['tasks']} (fit minus truth {c['least']:.1f} "
             f"to {c['largest']:.1f}, median {c['median']:.2f})" for c in check["sizes"]]
    below = sum(c["below"] for c in check["sizes"])
    verdict = ("Every checked fit is at or above the truth's log-likelihood." if not below else
               f"**{below} checked fits are below the truth's own log-likelihood**: they are "
               "not maximum-likelihood estimates, and the losses of such fits measure where "
               "the optimiser stopped.")
    refit = ""
    if "refit_code_sha256" in check:
        redone = "; ".join(f"n = {c['n']}: {c['refit_below']} (least {c['refit_least']:.1f})"
                           for c in check["sizes"])
        refit = (f" The same tasks refitted by build {check['refit_code_sha256'][:12]} "
                 f"(`--refit`), below the truth's per size: {redone}.")
    return [f"Likelihood against the truth's (`python paper_figures/truth_check.py "
            f"{s['name']}`){stale}: the maximum-likelihood estimate's log-likelihood is at "
            "least the truth's on the same data. Fits below it, per size: "
            f"{'; '.join(parts)}. {verdict}{refit}", ""]


def fitcheck_text(s, rows=None):
    """What ``check_fits.py`` found for the study (a line), or a note that it was not run.

    With the grid's ``rows``, also whether the check's default fits are the grid's own
    rows of the same tasks, and if not, how far the grid's rows are from the longer runs.
    """
    check = s["fitcheck"]
    if check is None:
        return ("Fits not checked against longer runs yet (`python paper_figures/"
                f"check_fits.py {s['name']}`).")
    tasks = check["tasks"]
    sizes = sorted({t["n"] for t in tasks})
    steps = max(t["n_iter"][1] for t in tasks)
    gains = [t["log_likelihood_gain"] for t in tasks]
    return (f"Fit check (`python paper_figures/check_fits.py {s['name']}`): "
            f"{len(tasks)} tasks (n = {', '.join(map(str, sizes))}) rerun from the same "
            f"data and starts with tol {check['tol'] / check['factor']:g} instead of "
            f"{check['tol']:g} (up to {steps} EM steps): the total log-likelihood changed "
            f"by {min(gains):+.1e} to {max(gains):+.1e}, and {check['loss']} by at most "
            f"{check['max_relative_loss_change']:.1e} relative. This shows where the "
            "stopping rule left each fit; it cannot show that a start found the best "
            "maximum." + _other_build_warning(check, s) + _against_grid(check, rows))


def _against_grid(check, rows):
    """A sentence comparing the fit check's default fits with the grid's rows of its tasks.

    Equal headline losses (to the last bit) mean the check refitted exactly the grid's
    fits; otherwise (another build refitted) the grid's own loss is compared with the
    longer runs', which is what the check is for.
    """
    if not rows:
        return ""
    loss = check["loss"]
    grid = {(r["n"], r["rep"]): r for r in rows}
    pairs = [(t, grid[t["n"], t["rep"]]) for t in check["tasks"]
             if grid.get((t["n"], t["rep"]), {}).get(loss) is not None]
    if not pairs:
        return ""
    same = sum(row[loss] == task["loss_default"] for task, row in pairs)
    if same == len(pairs):
        return (f" Its default fits are the grid's own: {loss} equal to the last bit in all "
                f"{len(pairs)} tasks.")
    worst = max(abs(row[loss] - task["loss_tight"]) / max(abs(task["loss_tight"]), 1e-300)
                for task, row in pairs)
    return (f" Its default fits are not all the grid's ({loss} equal to the last bit in "
            f"{same} of {len(pairs)} tasks: another build refitted); the grid's own {loss} "
            f"differs from the longer runs' by at most {worst:.1e} relative.")


def _other_build_warning(check, s):
    """A sentence when a fit check ran on another build of gmoe than the study's grid."""
    checked, grid = check.get("code_sha256"), s.get("meta", {}).get("code_sha256")
    if checked is None or grid is None or checked == grid:
        return ""
    return (f" The check ran on another build of gmoe (code hash {checked[:12]}) than the "
            f"grid ({grid[:12]}).")


def _restores(meta):
    """A grid's restores, oldest first (each ``restored_from`` keeps the one before it)."""
    chain, source = [], meta.get("restored_from")
    while source:
        chain.insert(0, source)
        source = source.get("earlier")
    return chain


def row_builds(meta):
    """Which build computed which of a grid's rows, for a grid continued from its results.

    Each restore's ``restored_from`` record keeps the one before it (``earlier``), so a
    grid continued several times, on several builds, keeps every build's share. A share
    is the rows a store gained between two restores, under the code hash the store held
    when it was exported: a store records one hash, so rows of two builds that resumed one
    store between two restores count as the later build's.

    Parameters
    ----------
    meta : dict
        A grid's metadata (``run.json``'s ``meta``, or a store's with ``restored_from``
        decoded).

    Returns
    -------
    list of tuple
        ``(rows, code_sha256)`` in the order the rows were computed; a build that
        computed no rows (restored, then exported before any task ran) is left out and
        consecutive rows of one build are merged. The last entry's ``rows`` is None: the
        rest, by the grid's own build. Empty when the grid was never restored.
    """
    chain = _restores(meta)
    if not chain:
        return []
    shares, before = [], 0
    for link in chain:
        if link["rows"] > before:
            shares.append([link["rows"] - before, link.get("code_sha256")])
        before = link["rows"]
    merged = []
    for rows, build in [*shares, [None, meta.get("code_sha256")]]:
        if merged and build is not None and build == merged[-1][1]:
            merged[-1][0] = None if rows is None else merged[-1][0] + rows
        else:
            merged.append([rows, build])
    return [tuple(share) for share in merged]


def build_name(build):
    """A code hash as the page and the logs name it (its first 12 digits)."""
    return f"build {build[:12]}" if build else "a build that the committed results do not record"


_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def restored_text(s):
    """Where a grid's rows came from when it was continued from its committed results."""
    meta = s.get("meta", {})
    shares = row_builds(meta)
    if not shares:
        return []
    restores = _restores(meta)
    if len(shares) == 1:
        origin = f"its first {restores[-1]['rows']} rows were computed by the same build of gmoe"
    else:
        said = [f"its first {shares[0][0]} rows were computed by {build_name(shares[0][1])}"]
        said += [f"the next {rows} by {build_name(build)}" for rows, build in shares[1:-1]]
        said.append(f"the rest by {build_name(shares[-1][1])}")
        origin = ", ".join(said)
    checked = [r.get("verified_rows", 0) for r in restores]
    how = "(the largest size's last ones and a seeded random draw)"
    if not any(checked):
        check = "No earlier row was recomputed before the grid went on."
    elif len(checked) == 1:
        check = (f"The continuing build first recomputed {checked[0]} of the earlier rows "
                 f"{how} and matched every number to the last bit.")
    else:
        each = [f"{count or 'none'} the {_ORDINALS[i] if i < len(_ORDINALS) else f'{i + 1}th'}"
                f" time" for i, count in enumerate(checked)]
        times = "twice" if len(checked) == 2 else f"{len(checked)} times"
        check = (f"It was continued {times}; before going on, the continuing build "
                 f"recomputed earlier rows {how}: {', '.join(each)}. Every row recomputed "
                 "matched to the last bit.")
    return [f"The grid was continued from its committed results (`python paper_figures/"
            f"run_studies.py {s['name']} --restore`): {origin}. {check}", ""]


def spread_text(s, rows):
    """For an over-specified study: how far its headline loss spreads over replications."""
    if not s["over_specified"]:
        return []
    values = np.array([r[s["headline"]] for r in rows if r.get(s["headline"]) is not None],
                      dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    if values.size < 10:
        return []
    low, median, high = np.quantile(values, [0.1, 0.5, 0.9])
    share = float(np.sort(values)[-max(1, values.size // 100):].sum() / values.sum())
    per_size = s["replications"] if s["replications"] == s["min_replications"] else \
        f"{s['min_replications']}-{s['replications']}"
    return [f"How the {s['headline']} of single fits spread: over all {values.size} tasks "
            f"the 10 %, 50 % and 90 % quantiles are {low:.3g}, {median:.3g} and {high:.3g} "
            f"(largest {values.max():.3g}), and the largest 1 % of the tasks hold "
            f"{100 * share:.0f} % of the sum. The mean at each n averages {per_size} such "
            "values, so a single large one moves it by orders of magnitude: the "
            "mean's slope has a wide interval, and the geometric mean's (above) is the "
            "steadier estimate of the same rate. The density distances (Hellinger, TV) do "
            "not depend on how the atoms are arranged and are the stable rates here."
            + _tail_text(s, rows), ""]


def _split_cells(row):
    """The cells of a row that hold two or more fitted atoms (from its ``atoms_j`` columns)."""
    return [int(key.rsplit("_", 1)[1]) for key, value in row.items()
            if key.startswith("atoms_") and value is not None and value >= 2]


def _split_cell_error(row, field):
    """The largest finite error of ``field`` over a row's split cells (None if none)."""
    errors = [row.get(f"pe_{field}_{j}") for j in _split_cells(row)]
    errors = [e for e in errors if e is not None and np.isfinite(e)]
    return max(errors) if errors else None


def _tail_text(s, rows):
    """What the fits of the largest 1 % of an over-specified study's headline loss are.

    Which cells they split, their split cells' gate and expert slope errors against all
    tasks', and their Hellinger distances against the median of their sample size; from
    the rows' parameter errors (empty when the rows lack them).
    """
    def usable(r):
        return all(r.get(key) is not None and np.isfinite(r[key])
                   for key in (s["headline"], "hellinger")) \
            and _split_cell_error(r, "gate_coef") is not None \
            and _split_cell_error(r, "expert_coef") is not None

    rows = sorted((r for r in rows if usable(r)), key=lambda r: r[s["headline"]])
    if len(rows) < 100:
        return ""
    tail = rows[-(len(rows) // 100):]
    median_hellinger = {n: float(np.median([r["hellinger"] for r in rows if r["n"] == n]))
                        for n in {r["n"] for r in tail}}
    ratios = [r["hellinger"] / median_hellinger[r["n"]] for r in tail]

    def errors(group, field):
        values = [_split_cell_error(r, field) for r in group]
        return float(np.median(values)), min(values), max(values)

    def split_counts(group):
        cells = sorted({j for r in group for j in _split_cells(r)})
        return ", ".join(f"cell {j} in {sum(j in _split_cells(r) for r in group)}"
                         for j in cells)

    gate, expert = errors(tail, "gate_coef"), errors(tail, "expert_coef")
    return (f" Of the fits with a split cell, the largest 1 % by {s['headline']} "
            f"({len(tail)} tasks) split {split_counts(tail)} (all {len(rows)}: "
            f"{split_counts(rows)}). Their split cells' gate slope is off by a median "
            f"{gate[0]:.3g} (range {gate[1]:.3g} - {gate[2]:.3g}; all tasks: "
            f"{errors(rows, 'gate_coef')[0]:.3g}) and their expert slope by {expert[0]:.3g} "
            f"({expert[1]:.3g} - {expert[2]:.3g}; all tasks: "
            f"{errors(rows, 'expert_coef')[0]:.3g}); their Hellinger distance is a median "
            f"{np.median(ratios):.2f} times the median of all tasks at the same n (range "
            f"{min(ratios):.2f} - {max(ratios):.2f}).")


#: Two fits of one task count as the same point when their total log-likelihoods agree
#: within this. Both builds stop only where the Newton decrement (the rise to the maximum
#: the quadratic model predicts) is at most the study's tol, 1e-4 here (part of the task
#: definition both share), so two fits of one maximum lie about 2e-4 apart at most; and
#: rerun with a 1000 times tighter tol the fits rise by less than that (the fit checks).
SAME_POINT_GAP = 1e-3


def _paired_tasks(rows, other_rows, loss):
    """The tasks both builds fitted to the stopping rule: (n, this row, the other's row).

    Returns the pairs and the number of tasks in both left out because a fit failed, has
    no finite log-likelihood, loss or Hellinger distance, or did not meet the rule.
    """
    def usable(r):
        return r.get("status") == "ok" and r.get("converged") in (None, 1.0) and all(
            r.get(key) is not None and np.isfinite(r[key])
            for key in ("mean_log_likelihood", loss, "hellinger"))

    other = {(r["n"], r["rep"]): r for r in other_rows}
    both = [(r, other[r["n"], r["rep"]]) for r in rows if (r["n"], r["rep"]) in other]
    pairs = [(a["n"], a, b) for a, b in both if usable(a) and usable(b)]
    return pairs, len(both) - len(pairs)


def _ratio(a, b):
    """How many times the larger of two non-negative numbers is the smaller.

    1 when both are 0, inf when only one is.
    """
    low, high = sorted((a, b))
    if high == 0:
        return 1.0
    return high / low if low > 0 else np.inf


def _slope_text(pairs, loss, side, summary):
    """The slope of ``loss`` over the pairs from one side's fits, or 'no rate' (why).

    ``side`` is 1 (this grid), 2 (the other build) or None: the fit of each pair with the
    higher log-likelihood.
    """
    def pick(pair):
        if side is not None:
            return pair[side]
        return max(pair[1:], key=lambda row: row["mean_log_likelihood"])

    table = {"n": np.array([n for n, _, _ in pairs], dtype=float),
             loss: np.array([pick(pair)[loss] for pair in pairs])}
    try:
        return _fmt_fit(fit_rate(table, loss, summary=summary))
    except ValueError as err:  # e.g. a loss of 0 has no geometric mean
        return f"no rate ({err})"


def _other_build_caveats(s, other):
    """Whether another build's rows are comparable with the grid, and sentences if amiss.

    Returns
    -------
    comparable : bool
        False when they come from another task definition.
    caveats : list of str
    """
    info, grid_meta = other.get("info") or {}, s.get("meta") or {}
    caveats, comparable = [], True
    if info.get("reference_code_sha256") and grid_meta.get("code_sha256") \
            and info["reference_code_sha256"] != grid_meta["code_sha256"]:
        caveats.append(f"Build {other['label']}'s file was exported against another build "
                       f"of this grid (code hash {info['reference_code_sha256'][:12]}) than "
                       f"the committed rows ({grid_meta['code_sha256'][:12]}).")
    if info.get("task_sha256") and grid_meta.get("task_sha256") \
            and info["task_sha256"] != grid_meta["task_sha256"]:
        comparable = False
        caveats.append(f"Build {other['label']}'s rows come from another task definition "
                       f"(task hash {info['task_sha256'][:12]}, this grid's "
                       f"{grid_meta['task_sha256'][:12]}): not comparable.")
    return comparable, caveats


def other_build_text(s, rows):
    """Where another build's fits of the same tasks differ from the grid's.

    For every ``NAME.build-LABEL.csv.gz`` committed beside the study: of the tasks both
    builds fitted to the stopping rule, those whose two fits are different points (total
    log-likelihoods more than :data:`SAME_POINT_GAP` apart), which build's is higher, how
    far the headline loss and the Hellinger distance move with the point, how many of the
    largest 1 % are among them (from 100 common tasks), and the headline's slopes over the
    common tasks from either build's fits.
    """
    loss, lines = s["headline"], []
    for other in s["other_builds"]:
        comparable, caveats = _other_build_caveats(s, other)
        if not comparable:
            lines += [" ".join(caveats), ""]
            continue
        pairs, left_out = _paired_tasks(rows, other["rows"], loss)
        if len(pairs) < 10:
            continue
        gaps = np.array([n * (a["mean_log_likelihood"] - b["mean_log_likelihood"])
                         for n, a, b in pairs])
        moved = np.abs(gaps) > SAME_POINT_GAP
        higher_here, higher_there = gaps[gaps > SAME_POINT_GAP], -gaps[gaps < -SAME_POINT_GAP]
        differing = [pair for pair, m in zip(pairs, moved, strict=True) if m]
        text = (f"The same tasks fitted by build {other['label']} (the same task definition: "
                f"experiment file and seeds; `{s['name']}.build-{other['label']}.csv.gz`): "
                f"of {len(pairs)} tasks that both fitted to the stopping rule"
                + (f" ({left_out} more in both left out: a fit failed or did not meet the "
                   "rule)" if left_out else "")
                + f", the two kept fits are different points (total log-likelihoods more "
                f"than {SAME_POINT_GAP:g} apart) in {int(moved.sum())}; this grid's is higher "
                f"in {higher_here.size}"
                + (f" (by up to {higher_here.max():.3g})" if higher_here.size else "")
                + f" and build {other['label']}'s in {higher_there.size}"
                + (f" (by up to {higher_there.max():.3g})" if higher_there.size else "")
                + ". Where they differ, the task's starts lead to at least two points that "
                "meet the stopping rule, and each build keeps the best of those its own "
                "fits reached.")
        if differing:
            loss_ratios = [_ratio(a[loss], b[loss]) for _, a, b in differing]
            density_ratios = [_ratio(a["hellinger"], b["hellinger"]) for _, a, b in differing]
            # The fit with the higher log-likelihood has the strictly larger loss.
            larger_at_higher = sum(
                (a[loss] > b[loss]) if a["mean_log_likelihood"] > b["mean_log_likelihood"]
                else (b[loss] > a[loss]) for _, a, b in differing)
            text += (f" There {loss} differs by a factor of median "
                     f"{np.median(loss_ratios):.3g} (largest {max(loss_ratios):.3g}), the "
                     f"higher log-likelihood having the larger {loss} in {larger_at_higher} "
                     f"of {len(differing)}, and the Hellinger distance by a factor of median "
                     f"{np.median(density_ratios):.3g} (largest {max(density_ratios):.3g}).")
        if len(pairs) >= 100:
            ranked = sorted(range(len(pairs)), key=lambda i: pairs[i][1][loss])
            tail = ranked[-(len(pairs) // 100):]
            text += (f" Of the largest 1 % of this grid's {loss} among them ({len(tail)} "
                     f"task{'s' if len(tail) > 1 else ''}), {int(moved[tail].sum())} are "
                     "different points.")
        slopes = [f"{summary} {loss}: {_slope_text(pairs, loss, 1, summary)} from this "
                  f"grid's fits, {_slope_text(pairs, loss, 2, summary)} from build "
                  f"{other['label']}'s, {_slope_text(pairs, loss, None, summary)} from the "
                  "higher of each task's two" for summary in ("mean", "geometric")]
        text += f" Slopes over these tasks: {'; '.join(slopes)}."
        lines += [" ".join([text, *caveats]), ""]
    return lines


#: The layout of split_cells.py's report that split_cells_text reads.
SPLIT_CELLS_FORMAT = 2


def _fmt_sample_slope(fit):
    """A ``split_cells.py`` rate: slope, interval and the cells it rests on."""
    if not np.isfinite(fit["slope"]):
        return f"- ({fit['cells']})"
    if not np.isfinite(fit["low"]):  # two sizes: no interval
        return f"{fit['slope']:+.3f} ({fit['cells']})"
    return f"{fit['slope']:+.3f} [{fit['low']:+.3f}, {fit['high']:+.3f}] ({fit['cells']})"


def _fmt_median(value):
    return "-" if value is None else f"{value:.3g}"


def split_cells_text(s):
    """What ``split_cells.py`` found: each atom's error in a two-atom cell, and its share."""
    check = s.get("split_cells")
    if check is None:
        return []
    if check.get("format") != SPLIT_CELLS_FORMAT or check.get("summary") is None:
        raise SystemExit(f"{s['name']}.splitcells.json is not a finished report of the "
                         f"layout this page reads (format {SPLIT_CELLS_FORMAT}): run "
                         f"`python paper_figures/split_cells.py {s['name']} "
                         "--summarise-only` (or finish its run).")
    summary, tasks, sizes = check["summary"], check["tasks"], check["sizes"]
    counts = summary["tasks"]
    stored = sum(t.get("fit") == "stored" for t in tasks)
    refitted = sum(t.get("fit") == "refitted" for t in tasks)
    build = ("" if check.get("code_sha256") == s["meta"].get("code_sha256") else
             f"; build {check['code_sha256'][:12]}, not the grid's")
    compared = [t for t in tasks if t.get("same_as_grid") is not None]
    agree = sum(t["same_as_grid"] for t in compared)
    origin = [f"{refitted} refitted"] if refitted else []
    origin += [f"{stored} read from the grid's stored fits"] if stored else []
    origin += [f"{counts['failed']} whose every start failed"] if counts["failed"] else []
    check_text = (f"; {agree} of the {len(compared)} refits that the grid holds reproduce its "
                  f"D2 exactly, {counts['not_the_grids']} do not and are left out"
                  if refitted and compared else "")
    lines = [f"Where a split cell's parameter errors come from (`python paper_figures/"
             f"split_cells.py {s['name']} --sizes {len(sizes)} --replications "
             f"{check['replications']}`: {len(tasks)} tasks, {', '.join(origin)}; sizes "
             f"{sizes[0]} to {sizes[-1]}, replications 0-{check['replications'] - 1}"
             f"{build}{check_text}). A `[m=2]` column above is the larger of the two atoms' "
             "errors. The theory bounds each atom's error only through D2, where the atom's "
             "term is weighted by its gate weight, so an atom that holds little of its cell "
             "may keep a large error. Per true cell split in two, the geometric-mean rate of "
             "each error (the geometric mean over the cells of each size, fitted on log n, "
             "with its 95% interval and the number of cells; the gate slope of the atom the "
             "alignment's translation carries onto the truth's is round-off and left out) "
             "and its median:", "",
             "| cell | parameter (p) | theory | largest (the [m=2] column) | atom with the "
             "larger share: rate, median | atom with the smaller share: rate, median | "
             "largest share-weighted, s^(1/p) x error | cells where the largest is the "
             "smaller share's (of those where both are measured) |",
             "|---|---|---|---|---|---|---|---|"]
    for cell, entry in summary["cells"].items():
        for name, e in entry["parameters"].items():
            median = e["median_error"]
            lines.append(f"| {cell} | {name} ({e['exponent']:g}) | {e['theory']:+.3f} | "
                         f"{_fmt_sample_slope(e['largest'])} | "
                         f"{_fmt_sample_slope(e['larger_share'])}, "
                         f"{_fmt_median(median['larger_share'])} | "
                         f"{_fmt_sample_slope(e['smaller_share'])}, "
                         f"{_fmt_median(median['smaller_share'])} | "
                         f"{_fmt_sample_slope(e['share_weighted'])} | "
                         f"{e['largest_is_smaller_share']} of {e['both_measured']} |")
    shares = []
    for cell, entry in summary["cells"].items():
        share = entry["smaller_share"]
        low, mid, high = (share["quantiles"][q] for q in ("10%", "50%", "90%"))
        shares.append(f"cell {cell}: 10 %, 50 % and 90 % quantiles {low:.3g}, {mid:.3g} and "
                      f"{high:.3g}, below 0.1 in {share['below_0.1']} of {entry['count']}")
    lines += ["", "The smaller atom's share of its cell: " + "; ".join(shares) + ". The "
              "share-weighted column weighs each atom's error by its share s of the cell to "
              "the power 1/p, p the parameter's exponent in D2: the atom's part of D2 in the "
              "parameter's units, which D2's rate bounds (up to constants) by n^(-1/(2p)) "
              "whatever the shares are.", ""]
    return lines


def _fmt_fit(fit):
    """A :class:`~gmoe.simulation.rates.RateFit`'s slope and interval, as in the tables."""
    low, high = fit.conf_int
    return f"{fit.slope:+.3f} [{low:+.3f}, {high:+.3f}]"


def disagreement_text(s):
    """For a headline slope whose CI excludes the theory: the numbers that bear on why.

    The theory's rates bound the error from above (a loss is at most of order n^r): a
    slope steeper than the theory's is within the guarantee, a shallower one is not.
    """
    row = s["by_loss"][s["headline"]]
    if row["theory"] is None or row["within_ci"] is not False:
        return []

    def listed(rows):
        return ", ".join(f"`{r['loss']}` {r['slope']:+.3f}" for r in rows)

    outside = [r for r in s["rows"] if r["theory"] is not None and r["within_ci"] is False
               and r["loss"] != s["headline"]]
    slower = [r for r in outside if r["slope"] > r["theory"]]
    faster = [r for r in outside if r["slope"] < r["theory"]]
    agree = [r["loss"] for r in s["rows"] if r["within_ci"] is True]
    if row["slope"] < row["theory"]:
        lines = [f"**The headline slope is steeper than the theory's** ({row['slope']:+.3f} "
                 f"against {row['theory']:+.3f}): the theory's rates bound the error from "
                 "above, so a faster decay over these sizes is within the guarantee (higher-"
                 "order terms of a small-n error, or a part of the loss that converges "
                 "faster, can steepen a fitted slope). What the numbers say:", ""]
    else:
        lines = [f"**The headline slope is shallower than the theory's** ({row['slope']:+.3f} "
                 f"against {row['theory']:+.3f}): a slower decay than the theory bounds. "
                 "What the numbers say:", ""]
    check = s["fitcheck"]
    if check is None:
        lines.append("* the fits: not checked against longer runs yet;")
    else:
        lines.append(f"* the fits: the fit check above moved {check['loss']} by at most "
                     f"{check['max_relative_loss_change']:.1e} relative: the stopping rule "
                     "is not what shapes the slope (a start in another basin would not show "
                     "there);")
    if s["sensitivity"]:
        parts = ", ".join(f"{slope:+.3f} without the smallest {frac:.0%} of sizes (n >= "
                          f"{n_min:g})" for frac, slope, n_min in s["sensitivity"])
        lines.append(f"* the slope over all sizes is {row['slope']:+.3f}; {parts}: a "
                     "slope that moves towards the theory's as small n are dropped points to "
                     "a pre-asymptotic regime, one that stays put or moves away does not;")
    if slower:
        lines.append("* other columns slower than their theory (CI excludes it): "
                     + listed(slower) + ";")
    if faster:
        lines.append("* columns faster than their theory (CI excludes it): " + listed(faster)
                     + ";")
    unstated = [r for r in s["rows"] if r["theory"] is None and np.isfinite(r["slope"])]
    if unstated:
        lines.append("* the columns with no stated rate: " + listed(unstated) + ";")
    if agree:
        lines.append("* the columns whose CI contains their theory: "
                     + ", ".join(f"`{name}`" for name in agree) + ".")
    lines.append("")
    return lines


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
        fit = fit_rate(_table(rows, loss), loss)
    except ValueError:
        return None
    low, high = fit.conf_int
    return fit.slope, low, high


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
        f"{against(raw_fixed, 0.0, 'a flat curve')};",
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
        "identifiable ones; the activation gate's polynomial rates are those of a gate "
        "without the scale symmetry.", ""]


def read_supremum_checks(directory):
    """``supremum_check.py``'s reports, by study (those that have one)."""
    checks = {}
    for name in STUDIES:
        path = directory / f"{name}.supremum.json"
        if path.exists():
            checks[name] = json.loads(path.read_text())
    return checks


def _fitted_starts(task):
    return [s for s in task["starts"] if "error" not in s]


def _kept_start(task):
    """The start the study keeps (the largest L)."""
    return next(s for s in task["starts"] if s.get("start") == task["best"])


def _waived(start):
    """Whether a fit's last check predicted a gain above 1 and waived it as a kink."""
    return start["final_check"]["kink"] and start["final_check"]["gap"] > 1.0


def _supremum_rows(report):
    """Per sample size: where the fits stop, and what the study would report from them."""
    rows = []
    tasks = [t for t in report["tasks"] if "best" in t]
    for n in sorted({t["n"] for t in tasks}):
        at_n = [t for t in tasks if t["n"] == n]
        starts = [s for t in at_n for s in _fitted_starts(t)]
        kept = [_kept_start(t) for t in at_n]
        spread = [t["best_log_lik"] - t["worst_log_lik"] for t in at_n]
        kept_d2 = [t["losses_at_fit"]["d2"] for t in at_n]

        def shapes(group):
            return tuple(sum(s["ridge_shape"] == shape for s in group)
                         for shape in ("rises to its end", "rises then falls", "flat"))

        rows.append({
            "n": n, "tasks": len(at_n), "starts": len(starts),
            "spread_median": float(np.median(spread)), "spread_max": max(spread),
            "ridge_any_max": max(t["largest_ridge_gain"] for t in at_n),
            "ridge_kept_max": max(t["best_ridge_gain"] for t in at_n),
            "shapes": shapes(starts), "kept_shapes": shapes(kept),
            "kept_waived": sum(map(_waived, kept)),
            "kept_gap_max": max(s["final_check"]["gap"] for s in kept),
            "highest_is_a_limit": sum(t["highest_is_a_limit"] for t in at_n),
            "d2_min": min(kept_d2), "d2_max": max(kept_d2),
            **dict(zip(("not_least_d2", "ten_times_closer"),
                       _discarded_smaller(at_n, kept, lambda s: s["losses"]["d2"]),
                       strict=True)),
            "d2_change_along_ridge": max(
                abs(t["losses_at_ridge_top"]["d2"] / t["losses_at_fit"]["d2"] - 1.0)
                for t in at_n),
            **_breakdown_summary(at_n, kept),
            "hellinger_median": float(np.median(
                [t["losses_at_fit"]["hellinger"] for t in at_n])),
            "hellinger_ratio_max": max(
                t["losses_at_fit"]["hellinger"]
                / min(s["losses"]["hellinger"] for s in _fitted_starts(t)) for t in at_n)})
    return rows


def _discarded_smaller(at_n, kept, value):
    """Tasks where a start the study discards has a smaller ``value``, and a ten times
    smaller one, than the kept start (``kept[i]`` of task ``at_n[i]``)."""
    pairs = [(value(k), min(value(s) for s in _fitted_starts(t)))
             for t, k in zip(at_n, kept, strict=True)]
    return sum(v > least for v, least in pairs), sum(least < 0.1 * v for v, least in pairs)


def _breakdown_summary(at_n, kept):
    """Where the D2 of one sample size's tasks comes from (:func:`atom_breakdown` of the check).

    ``kept`` holds each task's kept start.

    In the cell that sets each kept fit's D2, the largest atom term's share of the cell;
    the kept fits' D2 with every term weighted by its atom's share, and the tasks where a
    discarded start has a smaller (ten times smaller) such D2. Empty when the report has
    no breakdown (a truth that is not top-1, a report from before it was recorded, or a
    breakdown that failed).
    """
    starts = [s for t in at_n for s in _fitted_starts(t)]
    if any(s.get("atoms") is None or "d2_cell" not in s["atoms"] for s in starts):
        return {}

    def largest_term_share(atoms):
        in_cell = [i for i, c in enumerate(atoms["cells"]) if c == atoms["d2_cell"]]
        return atoms["shares"][max(in_cell, key=lambda i: atoms["terms"][i])]

    shares = [largest_term_share(s["atoms"]) for s in kept]
    weighted = [s["atoms"]["d2_share_weighted"] for s in kept]
    smaller, ten_times = _discarded_smaller(at_n, kept,
                                            lambda s: s["atoms"]["d2_share_weighted"])
    return {
        "largest_term_share_median": float(np.median(shares)),
        "largest_term_share_min": min(shares),
        "weighted_d2_min": min(weighted), "weighted_d2_max": max(weighted),
        "weighted_d2_median": float(np.median(weighted)),
        "weighted_not_least": smaller, "weighted_ten_times_closer": ten_times}


def supremum_figure(report, out):
    """Every start's fit: its L below the task's best start against its D2."""
    tasks = [t for t in report["tasks"] if "best" in t]
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for i, n in enumerate(sorted({t["n"] for t in tasks})):
        gaps, d2 = [], []
        for t in (t for t in tasks if t["n"] == n):
            for s in _fitted_starts(t):
                gaps.append(t["best_log_lik"] - s["log_lik"])
                d2.append(s["losses"]["d2"])
        ax.scatter(np.maximum(gaps, 1e-3), d2, s=14, color=f"C{i}", alpha=0.8,
                   label=f"n = {n}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("L of the task's best start minus this start's L (clipped at 1e-3)")
    ax.set_ylabel("D2 of this start's fit")
    ax.set_title(f"{report['study']}: {report['n_starts']} near-truth starts per task")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


_STOP_COLUMNS = ("n", "L below the best start: median / max",
                 "rise along a ridge: any start / kept start",
                 "ridges (all starts): to the end / then falling / flat",
                 "ridges (kept starts): to the end / then falling / flat",
                 "kept fits whose last check waived a gain above 1 as a kink (largest gap)",
                 "tasks whose highest L found is a limit")
_LOSS_COLUMNS = ("n", "kept D2: min - max", "tasks where the kept fit's D2 is not the least",
                 "tasks with a discarded start 10x closer in D2",
                 "kept D2 along its ridge: largest relative change",
                 "kept Hellinger: median / ratio to the task's least (max)")
_BREAKDOWN_COLUMNS = ("n", "kept D2's cell: its largest term's atom's share of the cell, "
                      "median (least)", "kept D2, each term weighted by its atom's share: "
                      "min - max (median)", "tasks where a discarded start has a smaller / "
                      "10x smaller such D2")


def _two_point_slope(first, last):
    """The log-log slope of the median Hellinger distance between two sample sizes."""
    return (np.log(last["hellinger_median"] / first["hellinger_median"])
            / np.log(last["n"] / first["n"]))


def supremum_findings(report):
    """``supremum_check.py``'s findings: (intro, tables, figure, bullets), all from the report."""
    name = report["study"]
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    rows = _supremum_rows(report)
    tasks = sum(r["tasks"] for r in rows)
    first, last = rows[0], rows[-1]
    c_max, max_entry = (f"{value:.0e}".replace("e+0", "e")
                        for value in (report["ridge_scales"][-1], report["max_gate_entry"]))
    true_k, fit_k = experiment.truth.family.top_k, experiment.fit["top_k"]
    intro = (f"``python paper_figures/supremum_check.py {name}`` (sizes "
             f"{', '.join(str(n) for n in report['sizes'])}, {report['replications']} "
             f"replications each, the study's own data and {report['n_starts']} starts; "
             f"revision {report.get('revision')}) asks whether the fits reach a maximum of "
             f"the log-likelihood. A top-{true_k} truth fitted with K = {fit_k} selected "
             "experts is matched only in a limit: where a true cell of fewer atoms than K "
             "is selected, the fit selects more atoms and the extra ones' weights must "
             "vanish, which a softmax weight does only as the gap between the selected "
             "logits grows without bound. The atoms of a doubled cell are selected "
             "together, so their gates can differ by a bounded amount (how they share "
             "their cell) while their common part grows. The check moves every start's fit "
             "along that ridge (the common part of each cell's gate rows multiplied by c, "
             f"differences and experts held) and evaluates L for c from 1 to {c_max} "
             f"while no gate entry exceeds {max_entry} (beyond it L's "
             "evaluation is round-off). A "
             f"ridge is flat (L within {report['rise']:g} of the fit's: the fit already "
             "lies far along it), rises to its end (L approaches a limit no finite c "
             "attains) or rises and then falls (the fit stopped below a higher point).")
    stop_table = [(str(r["n"]), f"{r['spread_median']:.2f} / {r['spread_max']:.2f}",
                   f"{r['ridge_any_max']:.2f} / {r['ridge_kept_max']:.2f}",
                   " / ".join(map(str, r["shapes"])) + f" of {r['starts']}",
                   " / ".join(map(str, r["kept_shapes"])) + f" of {r['tasks']}",
                   f"{r['kept_waived']} of {r['tasks']} ({r['kept_gap_max']:.3g})",
                   f"{r['highest_is_a_limit']} of {r['tasks']}") for r in rows]
    loss_table = [(str(r["n"]), f"{r['d2_min']:.3g} - {r['d2_max']:.3g}",
                   f"{r['not_least_d2']} of {r['tasks']}",
                   f"{r['ten_times_closer']} of {r['tasks']}",
                   f"{r['d2_change_along_ridge']:.2g}",
                   f"{r['hellinger_median']:.3g} / {r['hellinger_ratio_max']:.2f}")
                  for r in rows]
    breakdown = all("weighted_d2_min" in r for r in rows)
    breakdown_table = [(str(r["n"]), f"{r['largest_term_share_median']:.2g} "
                                     f"({r['largest_term_share_min']:.2g})",
                        f"{r['weighted_d2_min']:.3g} - {r['weighted_d2_max']:.3g} "
                        f"({r['weighted_d2_median']:.3g})",
                        f"{r['weighted_not_least']} / {r['weighted_ten_times_closer']} of "
                        f"{r['tasks']}")
                       for r in rows] if breakdown else None
    total = {key: sum(r[key] for r in rows) for key in
             ("starts", "highest_is_a_limit", "kept_waived", "not_least_d2",
              "ten_times_closer")}
    shapes = [sum(r["shapes"][i] for r in rows) for i in range(3)]
    kept_scales = [t["best_gate_scale"] for t in report["tasks"] if "best" in t]
    largest_spread = max(r["spread_max"] for r in rows)
    slope = _two_point_slope(first, last) if last["n"] > first["n"] else None
    bullets = [
        f"Along the ridge, {shapes[2]} of {total['starts']} fits are flat: they lie where "
        "L no longer rises (the kept fits' common gate scale is "
        f"{min(kept_scales):.3g} to {max(kept_scales):.3g}); {shapes[0]} rise to the end "
        f"and {shapes[1]} rise and then fall. In {total['highest_is_a_limit']} of "
        f"{tasks} tasks the highest L found is a limit that no finite parameter attains. "
        f"In {total['kept_waived']} of {tasks} tasks the kept fit's last check took a "
        "predicted gain above 1 for a kink of the likelihood.",
        f"The starts end up to {largest_spread:.3g} log-likelihood units apart (medians in "
        f"the first table), at points the stopping rule certifies. The kept fit's D2 "
        f"spans orders of magnitude at every n, and in {total['not_least_d2']} of {tasks} "
        "tasks a start the study discards (a lower L) has a smaller D2, ten times smaller "
        f"in {total['ten_times_closer']}. D2 barely moves along the kept fit's ridge (the "
        "last-but-one column): what sets it is which of these nearby points a start "
        "reaches, not how far along the ridge. A rate fitted to D2 would measure that "
        "choice, so the full grid (its projection is in benchmarks/README.md) is not run "
        "in this form.",
        "The density is estimated well all the same: the kept fit's Hellinger distance is "
        "within the last column's ratio of the smallest over its task's starts"
        + (f", and its median falls as n^{slope:.2f} from n = {first['n']} to "
           f"{last['n']} (two points, no interval; paper 2's density rate is n^-1/2)."
           if slope is not None else ".")]
    tables = [(_STOP_COLUMNS, stop_table), (_LOSS_COLUMNS, loss_table)]
    if breakdown:
        tables.append((_BREAKDOWN_COLUMNS, breakdown_table))
        shares = [r["largest_term_share_median"] for r in rows]
        closer = {key: sum(r[key] for r in rows)
                  for key in ("weighted_not_least", "weighted_ten_times_closer")}
        bullets.insert(2, (
            "What the largest D2 terms are (the third table): the top-1 D2 counts every "
            "fitted atom with weight 1, as an exact top-1 fit's selected weight is always "
            "1. In the cell that sets the kept fit's D2, the atom with the largest term holds "
            f"a median {min(shares):.2g} to {max(shares):.2g} of the cell's selected gate "
            "mass over the evaluation design (per n; "
            f"{min(r['largest_term_share_min'] for r in rows):.2g} at the least), so the "
            "data weigh its line little. Weighting every atom's term by its share gives the "
            f"kept fits a D2 of {min(r['weighted_d2_min'] for r in rows):.3g} - "
            f"{max(r['weighted_d2_max'] for r in rows):.3g}; a discarded start still has a "
            f"smaller one in {closer['weighted_not_least']} of {tasks} tasks, ten times "
            f"smaller in {closer['weighted_ten_times_closer']} (against "
            f"{total['ten_times_closer']} unweighted)."))
    bullets.append(
        "A well-posed parameter study needs a loss that does not depend on which of these "
        "points a fit reaches, or a fitted class in which the truth is matched at finite "
        "parameters. Which of paper 2's conditions this setting meets is left open here.")
    return (intro, *tables, f"{name}_starts.png", bullets)


def _title(report):
    return f"{report['study']}: where its fits stop"


def supremum_markdown(report):
    """:func:`supremum_findings` as a REPRODUCTION.md section."""
    intro, *tables, figure, bullets = supremum_findings(report)
    lines = [f"## {_title(report)}", "", intro.replace("``", "`"), ""]
    for columns, table in tables:
        lines += ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        lines += ["| " + " | ".join(row) + " |" for row in table] + [""]
    lines += [f"![{report['study']} starts](figures/{figure})", "",
              "What this means for the study:", ""]
    return lines + [f"* {b}" for b in bullets] + [""]


def _rst_literals(text):
    """Markdown's `code` spans as reStructuredText's ``literals`` (those left as they are)."""
    return re.sub(r"(?<!`)`([^`]+)`(?!`)", r"``\1``", text)


def supremum_rst(report):
    """:func:`supremum_findings` as a section of the documentation page."""
    intro, *tables, figure, bullets = supremum_findings(report)
    title = _title(report)
    lines = [title, "-" * len(title), "", intro, ""]
    for columns, table in tables:
        lines += [".. list-table::", "   :header-rows: 1", ""]
        for row in [columns] + table:
            lines += [f"   * - {row[0]}"] + [f"     - {cell}" for cell in row[1:]]
        lines.append("")
    lines += [f".. image:: ../paper_figures/figures/{figure}",
              f"   :alt: {report['study']}: every start's L against its D2", ""]
    return lines + [f"* {b}" for b in bullets] + [""]


def write_markdown(sections, extra_figures, path, results, checks=None):
    lines = ["# Reproducing the papers' convergence-rate figures", "",
             "Generated by `python paper_figures/make_figures.py` from the committed results "
             "in `paper_figures/results/` (written by `python paper_figures/run_studies.py`, "
             "which runs every study's full grid with `gmoe-sim run NAME --n-jobs 2` on the "
             "2-core machine; a grid stopped part way goes on, on any machine, with "
             "`python paper_figures/run_studies.py NAME --restore`). No number below is "
             "typed by hand.", "",
             "| study | source | setting | claim | loss | our slope [95% CI] | theory | "
             "drop 25% / 50% of sizes | geometric-mean slope | grid | run time |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in sections:
        row = s["by_loss"][s["headline"]]
        sens = " / ".join(f"{slope:+.3f}" for _, slope, _ in s["sensitivity"]) or "-"
        theory = "-" if row["theory"] is None else f"{row['theory']:+.3f} ({_verdict(row)})"
        lines.append(f"| {s['name']} | {s['claim'].source} | {s['claim'].setting} | "
                     f"{s['claim'].claim} | {s['headline']} | {_fmt_slope(row)} | {theory} | "
                     f"{sens} | {_fmt_slope(s['geometric'].get(s['headline']))} | "
                     f"{_grid(s)} | {_run_time(s)} |")
    missing = [name for name in STUDIES if name not in {s["name"] for s in sections}]
    waiting = [name for name in missing if name not in (checks or {})]
    if waiting:
        lines += ["", "Not run at full scale yet (no committed results): "
                  + ", ".join(f"`{name}`" for name in waiting) + "."]
    for name in (name for name in missing if name in (checks or {})):
        lines += ["", f"`{name}` is not run at full scale: the section '{name}: where "
                  "its fits stop' below says why."]
    lines.append("")
    for s in sections:
        lines += [f"## {s['name']}", "", f"*{s['claim'].source}*: {s['claim'].setting}. "
                  f"Claim: {s['claim'].claim}.", "",
                  f"![{s['name']}](figures/{s['name']}_rate.png)", "",
                  "Every metric column (the per-cell rows `[m=...]` are fitted over the "
                  "replications whose cell held m fitted atoms):", "", "```",
                  format_rate_table(s["rows"]).rstrip("\n"), "```", ""]
        if s["over_specified"]:
            lines += ["The same rates fitted to the geometric mean of the replications at "
                      "each n (an over-specified fit's D2 raises the gate's error in a split "
                      "cell to the power rbar, so its replications spread over orders of "
                      "magnitude and a few of them set the mean; for a loss C n^s times "
                      "noise whose distribution does not depend on n both summaries "
                      "estimate the same s):", "", "```",
                      format_rate_table(s["geometric_rows"]).rstrip("\n"), "```", ""]
        lines += restored_text(s)
        lines += spread_text(s, results[s["name"]])
        lines += other_build_text(s, results[s["name"]])
        lines += split_cells_text(s)
        lines += [fitcheck_text(s, results[s["name"]]), ""] + truth_check_text(s) \
            + disagreement_text(s) + asymptotic_text(s)
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
        theory = "-" if row["theory"] is None else f"{row['theory']:+.3f} ({_verdict(row)})"
        lines += [f"   * - ``{s['name']}``",
                  f"     - {s['claim'].source}: {s['claim'].claim} ({_grid(s)})",
                  f"     - {s['headline']}", f"     - {_fmt_slope(row)}",
                  f"     - {_fmt_slope(s['geometric'].get(s['headline']))}",
                  f"     - {theory}",
                  f"     - {_run_time(s)}"]
    lines.append("")
    for s in sections:
        title = f"{s['name']}"
        lines += [title, "-" * len(title), "", f"{s['claim'].setting}. Claim: "
                  f"{s['claim'].claim}.", "",
                  f".. image:: ../paper_figures/figures/{s['name']}_rate.png",
                  f"   :alt: {s['name']} rate plot", ""]
        for caption, figure in extra_figures.get(s["name"], []):
            lines += [f".. figure:: ../paper_figures/figures/{figure}", "",
                      f"   {caption}", ""]
        lines += [_rst_literals(line) for line in restored_text(s)
                  + other_build_text(s, results[s["name"]])]
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
