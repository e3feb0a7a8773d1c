"""The page's paragraphs on builds: where a grid's rows came from, and other builds' fits.

A grid continued from its committed results, or resumed from its store after a change of
gmoe, holds rows of several builds (:func:`restored_text`); another build's fits of the
same tasks can be committed beside it and compared (:func:`other_build_text`).
"""

import numpy as np
from committed_results import build_name, restore_chain, restore_link, row_builds
from page_format import count_of, fmt_fit

from gmoe.simulation.rates import fit_rate

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")


def restored_text(s):
    """Which builds computed a grid's rows, when more than one did or it was restored."""
    meta = s.get("meta", {})
    shares = row_builds(meta, s.get("runs", []), s.get("n_rows"))
    restores = restore_chain(meta)
    if not restores and len(shares) < 2:
        return []
    checked_text, covered = _build_check_text(s, shares)
    checked_builds = len({build for _, build in shares} & covered)
    if len(shares) == 1:
        origin = "All its rows were computed by one build of gmoe."
    else:
        said = [f"the first {shares[0][0]} by {build_name(shares[0][1])}"]
        said += [f"the next {rows} by {build_name(build)}" for rows, build in shares[1:-1]]
        said.append(f"the rest by {build_name(shares[-1][1])}")
        origin = f"Its rows were computed by {len(shares)} builds of gmoe: {', '.join(said)}."
    origin += checked_text
    if not restores:
        return [f"The grid was resumed from its store after gmoe changed. {origin}"
                + _unchecked_resumes(len(shares) - 1, 0, checked_builds), ""]
    checked = [r.get("verified_rows", 0) for r in restores]
    times = {1: "once", 2: "twice"}.get(len(checked), f"{len(checked)} times")
    how = "(the largest size's last ones and a seeded random draw)"
    if not any(checked):
        check = "no earlier row was recomputed before the grid went on."
    elif len(checked) == 1:
        check = (f"the continuing build first recomputed {checked[0]} of the earlier rows "
                 f"{how} and matched every number to the last bit.")
    else:
        each = [f"{count or 'none'} the {_ORDINALS[i] if i < len(_ORDINALS) else f'{i + 1}th'}"
                f" time" for i, count in enumerate(checked)]
        check = (f"before going on, the continuing build recomputed earlier rows {how}: "
                 f"{', '.join(each)}. Every row recomputed matched to the last bit.")
    return [f"The grid was continued from its committed results {times} (`python "
            f"paper_figures/run_studies.py {s['name']} --restore`); {check} {origin}"
            + _unchecked_resumes(len(shares) - 1, sum(bool(c) for c in checked),
                                 checked_builds, unverified=not all(checked))
            + _machine_check_text(s, restores[-1], len(restores)), ""]


def _build_check_text(s, shares):
    """What ``build_check.py`` found, and the builds whose rows it covers (with its own).

    Returns ``("", set())`` when the study has no build check, and covers nothing when
    the check is out of date: a build it checked now holds fewer rows, or none (a build
    that computed more rows since is still the build that was checked).
    """
    report = s.get("build_check")
    if not report or not report["builds"]:
        return "", set()
    # Share by share (a build can compute rows twice, around another), the last share
    # being the rest of the rows.
    known = sum(rows for rows, _ in shares if rows is not None)
    now, then = {}, {}
    for rows, build in shares:
        rest = s["n_rows"] - known if s.get("n_rows") is not None else np.inf
        now.setdefault(build, []).append(rest if rows is None else rows)
    for build in report["builds"]:
        then.setdefault(build["code_sha256"], []).append(build["rows"])
    if any(len(now.get(build, ())) < len(rows)
           or any(a < b for a, b in zip(now[build], rows, strict=False))
           for build, rows in then.items()):
        return (f" The build check (`python paper_figures/build_check.py {s['name']}`) is "
                f"out of date: it split {report['result_rows']} rows among the builds, "
                "and the grid's rows have changed since; it does not cover them."), set()
    checked = [row for build in report["builds"] for row in build["checked"]]
    covered = {report["code_sha256"]} | {build["code_sha256"] for build in report["builds"]}
    per_build = sorted({len(build["checked"]) for build in report["builds"]})
    each = (f"{per_build[0]} rows" if len(per_build) == 1
            else f"{per_build[0]} to {per_build[-1]} rows")
    differ = [(build["code_sha256"], row) for build in report["builds"]
              for row in build["checked"] if row["differences"]]
    if not differ:
        found = f"all {len(checked)} reproduced every number to the last bit."
    else:
        listed = "; ".join(
            f"{build_name(build)}'s n = {row['n']}, replication {row['rep']} "
            f"({', '.join(column for column, _, _ in row['differences'][:4])})"
            for build, row in differ)
        found = f"{len(differ)} of the {len(checked)} differ: {listed}."
    later = [build for _, build in shares if build not in covered]
    since = (f" Rows of {count_of(len(later), 'later build')} came after the check."
             if later else "")
    return (f" A build check (`python paper_figures/build_check.py {s['name']}`) reran "
            f"{each} of each of the {len(report['builds'])} other builds with "
            f"{build_name(report['code_sha256'])} (the last replication at the largest size "
            f"the build reached, and a seeded draw of the rest): {found}{since}"), covered


def _machine_check_text(s, restore, restores):
    """What ``build_check.py --machine`` found: a build's earlier rows rerun elsewhere.

    ``restore`` is the grid's last restore (``restored_from``) and ``restores`` their
    number. Empty without a machine check; out of date when the check measured the rows
    before another restore than that one.
    """
    report = s.get("machine_check")
    if not report:
        return ""
    command = f"`python paper_figures/build_check.py {s['name']} --machine`"
    if report["restore"] != restore_link(restore) or report["restores"] != restores:
        return (f" The machine check ({command}) is out of date: it measured the rows from "
                "before another restore than the grid's last one, and does not cover "
                "those.")
    machine = report["machine"]
    checked = report["checked"]
    differ = [row for row in checked if row["differences"]]
    rows = "the row" if report["build_rows"] == 1 else f"{len(checked)} of the " \
        f"{report['build_rows']} rows"
    earlier = "an earlier machine" if restores == 1 else "earlier machines"
    said = (f" A machine check ({command}) reran {rows} that "
            f"{build_name(report['code_sha256'])} computed before the last restore (on "
            f"{earlier}), with that build, on {machine['processor']} with "
            f"{machine['blas']} (the last replication at the largest size they reached, and "
            "a seeded draw of the rest): ")
    if not differ:
        return said + ("it reproduced every number to the last bit." if len(checked) == 1
                       else f"all {len(checked)} reproduced every number to the last bit.")
    reproduced = len(checked) - len(differ)
    said += (f"{reproduced or 'none'} reproduced every number to the last bit and "
             f"{len(differ)} did not. ")
    failed = [row for row in differ if row["log_likelihood_gap"] is None]
    elsewhere = [row for row in differ if row not in failed
                 and abs(row["log_likelihood_gap"]) > SAME_POINT_GAP]
    same = [row for row in differ if row not in failed and row not in elsewhere]
    if failed:
        said += (f"{len(failed)} gave no log-likelihood to compare: " + "; ".join(
            f"n = {row['n']}, replication {row['rep']} ("
            + (f"{row['status'][0]} stored, {row['status'][1]} here"
               if row["status"][0] != row["status"][1] else "a log-likelihood missing")
            + ")" for row in failed) + ". ")
    if elsewhere:
        said += (f"{len(elsewhere)} reached another point (total log-likelihoods more than "
                 f"{SAME_POINT_GAP:g} apart): " + "; ".join(
                     f"n = {row['n']}, replication {row['rep']} "
                     f"({row['log_likelihood_gap']:+.3g})" for row in elsewhere) + ". ")
    if same:
        gap = max(abs(row["log_likelihood_gap"]) for row in same)
        who = ("It" if len(differ) == 1 else "All of them" if len(same) == len(differ)
               else f"{len(same)} of them")
        said += (f"{who} reached the same log-likelihood within {SAME_POINT_GAP:g} ("
                 + (f"at most {gap:.2g} apart" if gap else "the same to the last bit")
                 + "), the machines rounding otherwise")
        largest = _largest_relative(same, report["loss_columns"])
        if largest:
            said += ("; the losses differ by at most " + ", ".join(
                f"{value:.2g} ({column})" for column, value in largest) + " relative")
            spread = report.get("loss_spread", {})
            known = [(column, spread[column]) for column, _ in largest
                     if spread.get(column) is not None]
            if known:
                said += (", against a spread across replications of " + ", ".join(
                    f"{value:.2g} ({column})" for column, value in known)
                    + " (the median over sizes of the standard deviation over the mean)")
        steps = sum(any(c == "n_iter" for c, _, _ in row["differences"]) for row in same)
        said += (f"; {steps} of {len(same)} stopped after another number of EM steps: the "
                 "stopping rule ends a fit near, not at, its maximum, and two roundings of "
                 "one fit can stop a step apart, where the likelihood is flat at different "
                 "parameters." if steps else ".")
    return said.rstrip()


def _largest_relative(rows, losses):
    """The largest relative difference of each loss (the numbers the figures are of).

    The fitted parameters' differences stay in the report: on a flat likelihood a
    parameter near 0 can change sign between two roundings of one fit, which a relative
    difference makes look large and the losses do not feel.
    """
    largest = {}
    for row in rows:
        for column, value in row["relative"].items():
            if column in losses and value is not None:
                largest[column] = max(value, largest.get(column, 0.0))
    return [(column, largest[column]) for column in losses if column in largest]


def _unchecked_resumes(changes, restores, checked_builds=0, unverified=False):
    """A sentence on the changes of build that no recomputation checked.

    A restore recomputes some earlier rows before going on (``restores`` counts those that
    did); a grid resumed from its own store after gmoe changed, or restored with
    ``--verify 0``, recomputes none, so its builds' rows are pooled unchecked,
    but for the builds a build check reran rows of (``checked_builds``, with the checking
    one: each of them but one accounts for a change of build). ``unverified`` says
    whether a restore recomputed none.
    """
    # A restore need not change the build: at least this many changes had no check.
    unchecked = changes - max(restores, checked_builds - 1)
    if unchecked <= 0:
        return ""
    caveat = ("those builds share the task definition and the stopping rule, but whether "
              "they reach the same maximum from the same start is not checked on these rows.")
    how = ("resumed from its own store or restored with --verify 0, which recompute"
           if unverified else "resumed from its own store, which recomputes")
    if not restores and not unverified:
        return f" Resuming recomputes no earlier row: {caveat}"
    if changes == 1:
        return f" At its one change of build the grid was {how} no earlier row: {caveat}"
    return (f" At {unchecked} or more of its {changes} changes of build the grid was {how} "
            f"no earlier row: {caveat}")


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
        return fmt_fit(fit_rate(table, loss, summary=summary))
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


def _why_points_differ(s):
    """Where two builds' kept fits of a task differ, what that says (one start or several)."""
    if s.get("starts", 1) > 1:
        return ("Where they differ, the task's starts lead to at least two points that meet "
                "the stopping rule, and each build keeps the best of those its own fits "
                "reached.")
    return ("Where they differ, the one start of the task led the two builds' EM to "
            "different points, each meeting its build's stopping rule: the lower one is "
            "not the maximum.")


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
                + ". " + _why_points_differ(s))
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
            text += (f" Of the largest 1 % of this grid's {loss} among them ("
                     f"{count_of(len(tail), 'task')}), {int(moved[tail].sum())} are "
                     "different points.")
        slopes = [f"{summary} {loss}: {_slope_text(pairs, loss, 1, summary)} from this "
                  f"grid's fits, {_slope_text(pairs, loss, 2, summary)} from build "
                  f"{other['label']}'s, {_slope_text(pairs, loss, None, summary)} from the "
                  "higher of each task's two" for summary in ("mean", "geometric")]
        text += f" Slopes over these tasks: {'; '.join(slopes)}."
        lines += [" ".join([text, *caveats]), ""]
    return lines


def paired_slope_difference(pairs, loss):
    """The difference of the two sides' mean slopes over the same tasks, with its interval.

    The two slopes share their tasks, so their intervals are not independent: the
    difference is the slope, on log n, of the log of the ratio of the two means at each n
    (this side's over the other's), fitted as a rate with its own 95 % interval.

    Returns
    -------
    (slope, low, high) or None
        None with fewer than three sizes or a size whose mean is not positive.
    """
    sizes = sorted({n for n, _, _ in pairs})
    ratio = []
    for n in sizes:
        this = np.mean([p[1][loss] for p in pairs if p[0] == n])
        other = np.mean([p[2][loss] for p in pairs if p[0] == n])
        ratio.append(this / other if other > 0 and this > 0 else np.nan)
    if len(sizes) < 3 or not np.all(np.isfinite(ratio)):
        return None
    fit = fit_rate({"n": np.array(sizes, dtype=float), "ratio": np.array(ratio)}, "ratio")
    return fit.slope, float(fit.conf_int[0]), float(fit.conf_int[1])


def more_starts_text(s, results, base):
    """Against a study whose tasks these are, with fewer starts: how often more starts
    reached a higher maximum, and the headline's slopes over the common tasks.

    ``base`` is the study with the same truth, data and near-truth start (the same task
    seeds) whose kept fit is among this study's fits, so this study's is at least as high.
    """
    rows, base_rows = results.get(s["name"]), results.get(base)
    if not rows or not base_rows:
        return []
    loss = s["headline"]
    pairs, left_out = _paired_tasks(rows, base_rows, loss)
    if len(pairs) < 10:
        return []
    gaps = np.array([n * (a["mean_log_likelihood"] - b["mean_log_likelihood"])
                     for n, a, b in pairs])
    higher = gaps > SAME_POINT_GAP
    sizes = sorted({n for n, _, _ in pairs})
    per_size = ", ".join(
        f"n = {n}: {int(sum(h for (m, _, _), h in zip(pairs, higher, strict=True) if m == n))}"
        f" of {sum(1 for m, _, _ in pairs if m == n)}" for n in sizes)
    lower = int(np.sum(gaps < -SAME_POINT_GAP))
    text = (f"Against `{base}`'s fits of the same tasks (the same data and near-truth start; "
            f"{len(pairs)} tasks that both fitted to the stopping rule"
            + (f", {left_out} more left out" if left_out else "")
            + f"): the best of this study's starts is higher (by more than "
            f"{SAME_POINT_GAP:g}) in {int(higher.sum())}"
            + (f", by up to {gaps.max():.3g} in total log-likelihood" if higher.any() else "")
            + f"; per size, {per_size}.")
    if lower:
        text += (f" In {lower} the near-truth fit alone is higher than the kept one: a fit "
                 "from the same start that this run's EM took elsewhere.")
    slopes = [f"{summary} {loss}: {_slope_text(pairs, loss, 2, summary)} from `{base}`'s fits, "
              f"{_slope_text(pairs, loss, 1, summary)} from this study's"
              for summary in ("mean", "geometric")]
    text += f" Slopes over these tasks: {'; '.join(slopes)}."
    difference = paired_slope_difference(pairs, loss)
    if difference is None:
        return [text, ""]
    slope, low, high = difference
    text += (" The two mean slopes come from the same tasks, so their difference is read "
             "paired: the slope of the log of the ratio of this study's mean to "
             f"`{base}`'s at each n is {slope:+.3f} [{low:+.3f}, {high:+.3f}].")
    if low > 0:
        text += (" More starts leave the mean slope shallower: the near-truth start's "
                 "staying near the truth does not explain a shallow slope here.")
    elif high < 0:
        text += (" More starts make the mean slope steeper: the near-truth start's staying "
                 "near the truth shapes the slope.")
    else:
        text += " More starts do not move the mean slope beyond that interval's noise."
    return [text, ""]
