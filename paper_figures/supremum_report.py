"""The report of ``supremum_check.py``: where an over-specified study's starts stop.

Reads ``NAME.supremum.json`` and writes its table, figure and findings for the page.
"""

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from study_claims import STUDIES  # noqa: E402

from gmoe.simulation import load_experiment  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


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
