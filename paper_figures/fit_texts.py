"""The page's paragraphs on a study's fits: the checks' findings and how losses spread.

Each function takes a study's section (``make_figures.study_section``) and returns the
lines that report one check (longer runs, the truth's likelihood, the normal limit, the
split cells) or one property of the grid's losses; a check that was not run gives none.
"""

import numpy as np
from page_format import (
    count_of,
    fmt_fit,
    fmt_median,
    fmt_report_rate,
    fmt_sample_slope,
    fmt_slope,
    loss_table,
)

from gmoe.simulation.rates import mean_loss_by_n, slope_sensitivity


def _stale(check, s):
    """A note for a check computed from another export of the study's results, else ''."""
    if check.get("result_rows") == s["n_rows"]:
        return ""
    return " (STALE: computed from another export of the results; rerun it)"


def normal_limit_overview(sections):
    """One paragraph for the page's top: the exact studies' errors against their normal limits.

    For every study whose asymptotic check predicted its density distances: the observed
    mean Hellinger distance over the limit's prediction at the largest sizes, with the
    noise of that ratio; then every whole-model column (d1, tv too) outside its noise, the
    studies that share one prediction (one truth), and the exact-specified studies without
    a check. Empty when no study has such a check.
    """
    found, outside, shared, unchecked, ends = [], [], {}, [], None
    for s in sections:
        check = s.get("asymptotic") or {}
        entries = [c for c in check.get("columns", []) if "limit_constant" in c]
        hellinger = next((c for c in entries if c["column"] == "hellinger"), None)
        if hellinger is None:
            if s.get("headline") == "d1" and not check:
                unchecked.append(s["name"])
            continue
        ends = ends or hellinger["large"]  # every check averages over the same ends
        name = f"`{s['name']}`{_stale(check, s) if 'n_rows' in s else ''}"
        found.append((name, _limit_ratio(hellinger, "large"), _limit_noise(hellinger["large"])))
        shared.setdefault(round(hellinger["limit_constant"], 12), []).append(f"`{s['name']}`")
        outside += [f"`{s['name']}` {c['column']} {_limit_ratio(c, 'large'):.2f} "
                    f"(± {_limit_noise(c['large']):.2f})" for c in entries
                    if abs(_limit_ratio(c, "large") - 1) > _limit_noise(c["large"])]
    if not found:
        return []
    listed = ", ".join(f"{name} {ratio:.2f} (± {noise:.2f})" for name, ratio, noise in found)
    within = sum(abs(ratio - 1) <= noise for _, ratio, noise in found)
    verdict = ("within the noise of 1" if within == len(found) == 1 else
               "every one of them within the noise of 1" if within == len(found) else
               f"{within} of {len(found)} within the noise of 1")
    text = (f"Against the maximum-likelihood estimate's normal limit (`python paper_figures/"
            "asymptotic_check.py NAME`), the mean Hellinger distance at the largest sizes "
            f"(n {ends['n_from']} to {ends['n_to']}) is these fractions of the limit's "
            f"prediction, constant included: {listed}; {verdict} (two standard errors).")
    same = [names for names in shared.values() if len(names) > 1]
    if same:
        text += (" " + "; ".join(", ".join(names) for names in same)
                 + " share one truth (up to the gate's parametrisation) and so one "
                 "prediction.")
    text += (" In the limit no regular estimator's ratio is below 1 and a less accurate one's "
             "is above it, so a ratio below 1 at these sizes is a curve not yet at its limit, "
             "or fits that are not a regular estimator there (fits anchored to a start at "
             "the truth can be). ")
    text += ("Columns outside their noise at the largest sizes: " + ", ".join(outside) + "."
             if outside else "No d1, Hellinger or TV column is outside its noise there.")
    if unchecked:
        text += (" Exact-specified studies without this check: "
                 + ", ".join(f"`{n}`" for n in unchecked) + ".")
    text += (" Each study's check compares every parameter's error with the limit too (the "
             "figures 'Mean errors against the normal limit').")
    return [text, ""]


def asymptotic_text(s):
    """What ``asymptotic_check.py`` found: predicted (I^-1 / n) against observed errors."""
    check = s["asymptotic"]
    if check is None:
        return []
    eig = check["information_eigenvalues"]
    first = check["columns"][0]
    small, large = first["small"], first["large"]
    stale = _stale(check, s)
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
    whole = check.get("whole_model", {})
    if whole.get("columns"):
        names = ", ".join(f"`{c}`" for c in whole["columns"])
        size = f"{whole['limit_size']:.0e}".replace("e+0", "e").replace("e+", "e")
        mc = max(c["limit_mc_relative_se"] for c in check["columns"]
                 if c["column"] in whole["columns"])
        lines += ["", f"{names} depend on every parameter at once: their prediction is the "
                  f"mean of the grid's own metric over {whole['draws']} parameter vectors "
                  f"drawn from the normal limit at n = {size}, times sqrt({size} / n) (to "
                  "first order in the parameters' error each is a seminorm of it, "
                  "homogeneous of degree 1, so its limit falls as n^-1/2; the Monte Carlo "
                  f"leaves each constant known to {2 * mc:.1%} or better, two standard errors, "
                  "counted in the comparisons' noise). By the convolution theorem a regular "
                  "estimator that is not efficient has the normal limit of the "
                  "maximum-likelihood estimate plus independent noise, and by Anderson's "
                  "lemma a seminorm's mean is then at least as large: a fit whose constant "
                  "meets the prediction is, in that column, as accurate as the "
                  "maximum-likelihood estimate's limit, not only as fast."]
    for b in check.get("boundaries", []):
        lines += ["", f"The top-K selection changes at x = {b['x']:.4g} (expert {b['leaves']} "
                  f"leaves the selected set, expert {b['enters']} enters): the density jumps "
                  "there, and the jump's position is estimated at the faster rate n^-1 of a "
                  "change-point. The prediction is the normal limit with that position held "
                  "(the information restricted to the parameters that keep it), and the "
                  "rows where a difference quotient straddles it are left out of the "
                  "information."]
    if check.get("aligned_gate"):
        lines += ["", "The gate's columns ("
                  + ", ".join(f"`{c}`" for c in check["aligned_gate"])
                  + ") are not compared: with one expert selected only the selection "
                  "boundary is identifiable, and the errors are measured after a "
                  "least-squares scale and shift of the fitted gate onto the truth's, which "
                  "no parametrisation's normal limit describes."]
    if check.get("unidentified"):
        lines += ["", "Not identified by the density on their own (a direction of them that "
                  "the density does not see), so without a normal limit: "
                  + ", ".join(f"`{c}`" for c in check["unidentified"]) + "."]
    lines += ["", "A column that meets its prediction at the largest sizes but stays below it "
              "at the smallest approaches the n^-1/2 curve from below: over the grid its "
              "fitted slope is shallower than -1/2 although its limit is -1/2; one above it "
              "at the smallest sizes approaches from above, and its slope is steeper. A "
              "column below its prediction at the largest sizes too is smaller than the "
              "maximum-likelihood estimate's error: its fits may have stopped nearer their "
              "start than the maximum, or the limit may not yet describe the estimator (the "
              "likelihood check above can show only that a fit fell short of the truth's "
              "log-likelihood, not that it reached the maximum).",
              ""]
    return lines


def _start_check_columns(s):
    """The columns the start check's summary quotes: the headline and the slow ones."""
    slow = [r["loss"] for r in s["rows"] if r["loss"].startswith("pe_")
            and np.isfinite(r["slope"]) and r["slope"] > -0.5
            and (r["theory"] is None or r["within_ci"] is False)]
    return [s["headline"], *slow]


def start_check_text(s):
    """What ``start_check.py`` found: refits from data-driven starts against the grid's."""
    check = s.get("start_check")
    if not check or not check.get("summary"):
        return []
    summary, stale = check["summary"], _stale(check, s)
    kinds = " and ".join({"kmeans": "k-means", "random": "random"}.get(k, k)
                         for k in check["strategies"])
    sharpened = any(t.get("strategy") == "sharpened" or any(
        note.startswith("sharpened") for note in t.get("notes", []))
        for t in check["tasks"])
    tau = check.get("truth_temperature")
    parts = []
    for end, label in (("small", "smallest"), ("large", "largest")):
        e = summary.get(end)
        if not e:
            continue
        said = (f"at the {label} sizes (n {e['n_from']} to {e['n_to']}), {e['higher']} of "
                f"{e['tasks']} refits reach a higher log-likelihood than the grid's fit")
        if e["higher"]:
            said += (f" (by up to {e['largest_gain']:.3g}, median "
                     f"{e['median_higher_gain']:.3g}, in total log-likelihood)")
            if tau is not None:
                said += (f", {e['hard_gate']} of them with a temperature below "
                         f"{check['hard_gate']:g} of the truth's")
            if e["not_converged"]:
                said += f" and {e['not_converged']} still rising when the refit stopped"
        if e.get("not_reproduced"):
            said += (f" ({e['not_reproduced']} of the grid's fits, refitted by this build, not "
                     "at the committed row's maximum)")
        if e.get("grid_hard_gate"):
            said += (f"; {e['grid_hard_gate']} of the grid's own fits there already have such "
                     "a hard gate")
        parts.append(said)
    lines = [f"Start check (`python paper_figures/start_check.py {s['name']}`){stale}: the "
             "grid's tasks refitted on their own data from the estimator's data-driven "
             f"starts, which know nothing of the truth ({kinds}, {check['n_init']} each"
             + (", and the grid's fit with its gate made hard, its temperature divided by "
                "100" if sharpened else "")
             + "), the best of them kept: " + "; ".join(parts) + "."]
    small = summary.get("small")
    if small and small["higher"]:
        columns = [c for c in _start_check_columns(s) if small["grid_mean"].get(c) is not None
                   and small["best_mean"].get(c) is not None]
        def change(c):
            said = f"`{c}` {small['grid_mean'][c]:.3g} and {small['best_mean'][c]:.3g}"
            if "grid_median" in small:
                said += (f" (medians {small['grid_median'][c]:.3g} and "
                         f"{small['best_median'][c]:.3g})")
            return said

        lines[0] += (" At the smallest sizes, the mean errors of the grid's fits and of the "
                     "best point found (the refit where it is higher, else the grid's fit): "
                     f"{', '.join(change(c) for c in columns)}.")
    if any(e["hard_gate"] or e.get("grid_hard_gate") for e in summary.values()):
        lines[0] += (" A gate whose temperature heads for 0 is a hard switch: where the "
                     "switch can separate the two experts' rows, L rises as the gate "
                     "sharpens, towards a supremum no finite parameter attains (as a "
                     "logistic regression's with separated classes), and in such tasks the "
                     "maximum-likelihood estimate may not exist.")
    lines.append("")
    return lines


def truth_check_text(s):
    """What ``truth_check.py`` found: fits whose log-likelihood is below the truth's."""
    check = s.get("truth_check")
    if not check:
        return []
    stale = _stale(check, s)
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
    held = ""
    assignment = check.get("assignment")
    if assignment and len(set(assignment)) < len(assignment):
        # An over-specified fit: say which of its points is the truth.
        which = ("the study's start assignment" if check.get("assignment_from_start") else
                 "for instance; the study's starts draw their own")
        tau = check.get("intercept_temperature")
        lowered = "log m" if tau is None else f"tau log m (tau = {tau:g}, the truth's)"
        held = (" (the fitted model contains the truth: give fitted atom i the true atom "
                f"a_i, here a = {assignment} ({which}), and lower each copy's gate "
                f"intercept by {lowered}, m the copies of its atom; this reproduces the "
                "truth's log density on every checked task's rows, within "
                f"{check['largest_density_difference']:.1g} per row)")
    return [f"Likelihood against the truth's (`python paper_figures/truth_check.py "
            f"{s['name']}`){stale}: the maximum-likelihood estimate's log-likelihood is at "
            f"least the truth's on the same data{held}. Fits below it, per size: "
            f"{'; '.join(parts)}. {verdict}{refit}", ""]


#: An L change below this (total log-likelihood units) is rounding: a refit whose boundary
#: moved by less is at the same maximum.
_SAME_MAXIMUM = 1e-6


def boundary_check_text(s):
    """What ``boundary_check.py`` found: top-1 boundaries against the design points around.

    Every clause that reads a conclusion from the numbers is stated only where they bear
    it out.
    """
    check = s.get("boundary_check")
    if not check:
        return []
    stale = _stale(check, s)
    sizes = check["sizes"]
    first, last = sizes[0], sizes[-1]
    inside = sum(c["fit_inside"] for c in sizes)
    tasks = sum(c["tasks"] for c in sizes)
    skipped = sum(c.get("skipped", 0) for c in sizes)
    table = ["| n | interval width | fit's error | mean of error / width | midpoint's error | "
             "start inside the interval | fit kept its start's boundary |",
             "|---|---|---|---|---|---|---|"]
    table += [f"| {c['n']} | {c['mean_width']:.3g} | {c['mean_error']:.3g} | "
              f"{c['error_over_width']:.2f} | {c['mean_midpoint_error']:.3g} | "
              f"{c['start_inside']} of {c['tasks']} | {c['kept_start']} of {c['tasks']} |"
              for c in sizes]
    slopes = check["slopes"]
    lines = [f"Boundary check (`python paper_figures/boundary_check.py {s['name']}`){stale}: "
             "with one selected expert, L does not change while the boundary moves between "
             "two neighbouring design points, so the maximum-likelihood boundary is an "
             "interval between neighbouring design points, and where in it a fit stops is "
             "set by its start and its path. The fitted boundary lies in the interval "
             f"around the truth's (x = {check['true_boundary']:.4g}) in {inside} of {tasks} "
             "checked tasks"
             + (f" ({skipped} could not be checked)" if skipped else "")
             + ". Means over the replications:", ""] + table + [""]
    # The slopes come from the few checked sizes: no interval.
    text = (f"Over these {len(sizes)} sizes (least-squares slopes, no interval) the interval's "
            f"width falls as n^{slopes['width']:+.3f} and its midpoint's error as "
            f"n^{slopes['midpoint_error']:+.3f}")
    if abs(slopes["width"] + 1.0) <= 0.1:
        text += ": the change-point rate n^-1, which is how fast the boundary is estimated"
    text += f". The fits' error falls as n^{slopes['error']:+.3f}."
    anchored = (first["kept_start"] > first["tasks"] / 2
                and first["mean_error"] < first["mean_midpoint_error"]
                and slopes["error"] > slopes["width"])
    if anchored:
        text += (f" It falls more slowly because at the smallest size most fits keep their "
                 f"start's boundary ({first['kept_start']} of {first['tasks']} at "
                 f"n = {first['n']}, {last['kept_start']} of {last['tasks']} at "
                 f"n = {last['n']}): a start near the truth lies in the interval there, "
                 "nearer the truth's boundary than the interval's midpoint, and L is flat "
                 "between the design points.")
        c = first
        if c["error_over_width_kept"] is not None and c["error_over_width_moved"] is not None:
            text += (f" At n = {c['n']} the fits that kept their start's boundary are a mean "
                     f"{c['error_over_width_kept']:.2f} of the width from the truth's, the "
                     f"others {c['error_over_width_moved']:.2f}.")
        column = s["by_loss"].get("boundary")
        if column is not None and column["slope"] > -1.0:
            text += (f" This is why the `boundary` column's slope over the whole grid "
                     f"({column['slope']:+.3f}) is shallower than -1.")
    elsewhere = sum(c["elsewhere_than_grid"] for c in sizes)
    if elsewhere:
        change = max(c["elsewhere_log_likelihood_change"] for c in sizes
                     if c["elsewhere_log_likelihood_change"] is not None)
        within = sum(c.get("elsewhere_inside", 0) for c in sizes)
        text += (f" Refitted by build {check['code_sha256'][:12]}, {elsewhere} of the {tasks} "
                 f"boundaries are not where the grid's build left them ({within} of them in "
                 f"the interval around the truth's), the log-likelihood changed by at most "
                 f"{change:.1e}")
        text += (": the same maximum, another point of a flat interval." if change
                 < _SAME_MAXIMUM else ".")
    return lines + [text, ""]


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
    # The command that reruns exactly these tasks, every option spelled out (the script's
    # default sizes depend on the grid, and its defaults may change).
    command = (f"python paper_figures/check_fits.py {s['name']} --sizes "
               f"{' '.join(map(str, sizes))} --replications "
               f"{max(t['rep'] for t in tasks) + 1} --factor {check['factor']:g}")
    return (f"Fit check (`{command}`): "
            f"{count_of(len(tasks), 'task')} (n = {', '.join(map(str, sizes))}) rerun from "
            f"the same data and starts with tol {check['tol'] / check['factor']:g} instead of "
            f"{check['tol']:g} (up to {steps} EM steps): the total log-likelihood changed "
            f"by {min(gains):+.1e} to {max(gains):+.1e}, and {check['loss']} by at most "
            f"{check['max_relative_loss_change']:.1e} relative." + _smooth_gap_text(check)
            + _lower_text(check)
            + " This shows where the stopping rule left each fit; it cannot show that a "
            "start found the best maximum." + other_build_warning(check, s)
            + _against_grid(check, rows))


def _lower_text(check):
    """Tasks whose longer runs ended below the default fits: another maximum was reached."""
    lower = [t for t in check["tasks"] if t["log_likelihood_gain"] < -check["tol"]]
    if not lower:
        return ""
    worst = min(lower, key=lambda t: t["log_likelihood_gain"])
    said = (f" In {len(lower)} of {len(check['tasks'])} tasks the longer runs ended lower "
            f"(by up to {-worst['log_likelihood_gain']:.2g}, at n = {worst['n']})")
    unconverged = sum(not t["converged"][1] for t in lower)
    if unconverged:
        said += f", {unconverged} of them without meeting the stopping rule"
    else:
        said += (": from the same starts they stopped at another maximum that the stopping "
                 "rule certifies, so which of the nearby maxima a fit reaches depends on its "
                 "path, not on its start alone")
    return (f"{said}; {check['loss']} moved by up to "
            f"{max(t['relative_loss_change'] for t in lower):.1e} relative there.")


def _smooth_gap_text(check):
    """A sentence on the default fits' decrement along the moves in which L is smooth."""
    if "max_smooth_gap" not in check:
        return ""
    said = (" The default fits' Newton decrement along every move in which the "
            "log-likelihood is smooth (for a top-K gate, the experts' and the gate's that "
            "hold its selection boundaries, which a longer run of a stuck M-step does not "
            f"test) is at most {check['max_smooth_gap']:.1e}")
    above = [t for t in check["tasks"] if t.get("smooth_gap", 0.0) > check["tol"]]
    if not above:
        return said + "."
    worst = max(above, key=lambda t: t["smooth_gap"])
    # The decrement is the gain a Newton step of the local quadratic model promises: a
    # task whose longer run realised far less has a move the model sees and EM does not
    # make; one that realised a gain of its order stopped short. Each task by its own.
    unrealised = [t for t in above if t["log_likelihood_gain"] < 0.1 * t["smooth_gap"]]
    short = [t for t in above if t not in unrealised]
    parts = []
    if unrealised:
        gained = max(t["log_likelihood_gain"] for t in unrealised)
        parts.append(f"in {len(unrealised)} of them the longer run gained at most "
                     f"{gained:.1e} in log-likelihood, far less than the decrement "
                     "promises: a move the local quadratic model sees and EM does not make, "
                     "as along a ridge where a top-K gate sharpens towards a supremum")
    if short:
        parts.append(f"in {len(short)} of them the longer run gained at least a tenth of "
                     "the decrement (up to "
                     f"{max(t['log_likelihood_gain'] for t in short):.1e}): there the default "
                     "fit stopped short of the maximum by about that much")
    return (f"{said}, above the tolerance ({check['tol']:g}) in {len(above)} of "
            f"{len(check['tasks'])} tasks (the largest at n = {worst['n']}, replication "
            f"{worst['rep']}); {'; '.join(parts)}.")


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
    which = " None of its default fits is" if same == 0 else " Its default fits are not all"
    return (f"{which} the grid's ({loss} equal to the last bit in "
            f"{same} of {len(pairs)} tasks: another build refitted); the grid's own {loss} "
            f"differs from the longer runs' by at most {worst:.1e} relative.")


def other_build_warning(check, s):
    """A sentence when a fit check ran on another build of gmoe than the study's grid."""
    checked, grid = check.get("code_sha256"), s.get("meta", {}).get("code_sha256")
    if checked is None or grid is None or checked == grid:
        return ""
    return (f" The check ran on another build of gmoe (code hash {checked[:12]}) than the "
            f"grid ({grid[:12]}).")


#: A loss whose largest 1 % of tasks hold at least this share of its sum is ruled by its
#: tail: a single task can move the mean at a size by orders of magnitude.
_DOMINANT_TAIL = 0.5


def spread_text(s, rows):
    """For an over-specified study's D2: how far it spreads over the replications."""
    if not s.get("spread_headline"):
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
    # The same rate only where the replications' spread keeps its shape as n grows (the
    # geometric table's caption says so); the text carries that condition.
    same_rate = ("the steadier estimate, of the same rate as long as the spread keeps its "
                 "shape as n grows")
    if share >= _DOMINANT_TAIL:
        effect = ("so a single large one moves it by orders of magnitude: the mean's slope "
                  f"has a wide interval, and the geometric mean's (above) is {same_rate}")
    else:
        # Within a size: the pooled quantiles would add the decay across sizes.
        by_size = {}
        for r in rows:
            value = r.get(s["headline"])
            if value is not None and np.isfinite(value) and value > 0:
                by_size.setdefault(r["n"], []).append(value)
        folds = [np.divide(*np.quantile(v, [0.9, 0.1])) for v in by_size.values()
                 if len(v) >= 5]
        # Quantiles of fewer than 5 values a size say little: the spread is then not given.
        spread = ("" if not folds else
                  f"which at a size spread a median {np.median(folds):.3g}-fold (from "
                  f"{min(folds):.3g} to {max(folds):.3g} over the sizes) from their 10 % to "
                  "their 90 % quantile, ")
        effect = (f"{spread}so the larger ones weigh most in it: the geometric mean's slope "
                  f"(above) is {same_rate}")
    return [f"How the {s['headline']} of single fits spread: over all {values.size} tasks "
            f"the 10 %, 50 % and 90 % quantiles are {low:.3g}, {median:.3g} and {high:.3g} "
            f"(largest {values.max():.3g}), and the largest 1 % of the tasks hold "
            f"{100 * share:.0f} % of the sum. The mean at each n averages {per_size} such "
            f"values, {effect}. The density distances (Hellinger, TV) do not depend on how "
            "the atoms are arranged and are the stable rates here."
            + _tail_text(s, rows), ""]


#: The density distances, whose rate is n^-1/2 in the limit for every study.
DENSITY_LOSSES = ("hellinger", "tv")


def _scaled_ends(by_n):
    """sqrt(n) times the mean over the smallest and the largest quarter of the sizes.

    Returns ``((value, two standard errors, n from, n to), ...)`` for both ends: the average
    of ``sqrt(n) mean(n)`` over the quarter's sizes, whose means are independent (each size
    has its own replications); the error is NaN where a size has one replication.
    """
    scaled = np.sqrt(by_n.n) * by_n.mean
    scaled_se = np.sqrt(by_n.n) * by_n.se
    quarter = max(1, by_n.n.size // 4)
    ends = []
    for part in (slice(0, quarter), slice(by_n.n.size - quarter, by_n.n.size)):
        ends.append((float(scaled[part].mean()),
                     2 * float(np.sqrt(np.sum(scaled_se[part] ** 2))) / quarter,
                     by_n.n[part][0], by_n.n[part][-1]))
    return ends


def _density_bullet(rows, r):
    """One density column: its scaled mean at both ends, and its slopes without small n."""
    table = loss_table(rows, r["loss"])
    by_n = mean_loss_by_n(table, r["loss"])
    (low, low_err, a, b), (high, high_err, c, d) = _scaled_ends(by_n)
    head = f"* `{r['loss']}`: sqrt(n) times the mean is"
    if np.isfinite(low_err) and np.isfinite(high_err):
        beyond = abs(high - low) > np.hypot(low_err, high_err)
        # As many decimals as the errors' second digit, so that a reader can see the
        # difference that "beyond" or "within" is said of.
        smallest_err = min(low_err, high_err)
        places = (max(0, 1 - int(np.floor(np.log10(smallest_err)))) if smallest_err > 0
                  else 3)
        text = (f"{head} {low:.{places}f} ± {low_err:.2g} over the smallest quarter of sizes "
                f"(n = {a:g} to {b:g}) and {high:.{places}f} ± {high_err:.2g} over the largest "
                f"(n = {c:g} to {d:g}; two standard errors): a change "
                + ("beyond" if beyond else "within") + " their noise")
    else:
        text = (f"{head} {low:.3g} over the smallest quarter of sizes (n = {a:g} to {b:g}) and "
                f"{high:.3g} over the largest (n = {c:g} to {d:g})")
    drops = [fit for fit in slope_sensitivity(table, r["loss"], (0.25, 0.5))
             if fit.n_min > by_n.n[0]]  # a grid of few sizes may drop none
    if drops:
        text += "; without the smallest 25 % and 50 % of sizes " + " and ".join(
            f"{fmt_fit(fit)} (n >= {fit.n_min:g}; "
            + ("holds" if fit.conf_int[0] <= r["theory"] <= fit.conf_int[1] else "excludes")
            + f" {r['theory']:+.3g})" for fit in drops)
    return text + "."


def density_text(s, rows):
    """For density distances whose interval excludes n^-1/2: how their scaled mean moves.

    Where the headline slope disagrees with its theory, ``disagreement_text`` lists these
    columns with the rest, and this paragraph is not repeated.
    """
    if s["by_loss"][s["headline"]].get("within_ci") is False:
        return []
    outside = [s["by_loss"][name] for name in DENSITY_LOSSES
               if name in s["by_loss"] and s["by_loss"][name]["theory"] is not None
               and s["by_loss"][name].get("within_ci") is False]
    lines = []
    for fast in (True, False):
        side = [r for r in outside if (r["slope"] < r["theory"]) == fast]
        if not side:
            continue
        listed = ", ".join(f"`{r['loss']}` {fmt_slope(r)}" for r in side)
        subject = ("The density distances' slopes exclude" if len(side) > 1 else
                   f"The `{side[0]['loss']}` slope excludes")
        lines += [f"**{subject} n^-1/2 on the {'fast' if fast else 'slow'} side** "
                  f"({listed})"
                  + (". The maximum-likelihood estimate's expected density error does not "
                     "fall faster than n^-1/2 in the limit, so over a finite grid this says "
                     "that sqrt(n) times the error still falls at these sizes, or that the "
                     "replications' noise tilts the fit"
                     if fast else ": a slower decay than the theory's")
                  + ". What the numbers say:"]
        lines += [_density_bullet(rows, r) for r in side] + [""]
    return lines


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
        said = ", ".join(f"cell {j} in {sum(j in _split_cells(r) for r in group)}"
                         for j in cells)
        both = sum(len(_split_cells(r)) > 1 for r in group)
        # The counts per cell overlap where a fit splits several cells.
        return said + (f"; {count_of(both, 'task')} split more than one" if both else "")

    gate, expert = errors(tail, "gate_coef"), errors(tail, "expert_coef")
    return (f" Of the fits with a split cell, the largest 1 % by {s['headline']} "
            f"({count_of(len(tail), 'task')}) split {split_counts(tail)} "
            f"(all {len(rows)}: "
            f"{split_counts(rows)}). Their split cells' gate slope is off by a median "
            f"{gate[0]:.3g} (range {gate[1]:.3g} - {gate[2]:.3g}; all tasks: "
            f"{errors(rows, 'gate_coef')[0]:.3g}) and their expert slope by {expert[0]:.3g} "
            f"({expert[1]:.3g} - {expert[2]:.3g}; all tasks: "
            f"{errors(rows, 'expert_coef')[0]:.3g}); their Hellinger distance is a median "
            f"{np.median(ratios):.2f} times the median of all tasks at the same n (range "
            f"{min(ratios):.2f} - {max(ratios):.2f}).")


#: The layout of split_cells.py's report that split_cells_text reads.
SPLIT_CELLS_FORMAT = 2


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
             f"{check['replications']}`: {count_of(len(tasks), 'task')}, "
             f"{', '.join(origin)}; sizes "
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
                         f"{fmt_sample_slope(e['largest'])} | "
                         f"{fmt_sample_slope(e['larger_share'])}, "
                         f"{fmt_median(median['larger_share'])} | "
                         f"{fmt_sample_slope(e['smaller_share'])}, "
                         f"{fmt_median(median['smaller_share'])} | "
                         f"{fmt_sample_slope(e['share_weighted'])} | "
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


#: The layout of ``coselected_gates.py``'s report this page reads.
COSELECTED_FORMAT = 2
#: An interval wider than this says nothing about a rate of -1/2: it would hold the
#: neighbouring rates -1/4 and -3/4 too.
_INFORMATIVE_WIDTH = 0.5


def _holds(rate, value):
    """Whether a rate's interval holds ``value`` and is narrow enough to say so."""
    if rate is None or rate["low"] is None:
        return None
    if rate["high"] - rate["low"] > _INFORMATIVE_WIDTH:
        return None
    return rate["low"] <= value <= rate["high"]


def _pair_row(what, entry):
    """A table row: a pair's (or a column's) rates, its mean at the ends, what it left out."""
    if "all" not in entry:
        return f"| {what} | - | - | - | {entry['left_out']} |"
    return (f"| {what} | {fmt_report_rate(entry['all'])} | {fmt_report_rate(entry['upper'])} | "
            f"{entry['low']:.3g} / {entry['high']:.3g} | {entry['left_out']} |")


def _weight_clause(s, check, column):
    """Why a cell's weight column is slower than its intercept column, where it is.

    For a cell of one atom ``|W_j - s w*_j| = s w*_j |e^delta - 1|``, ``delta`` the error of
    the cell's normalised log-weight, whose size is ``pe_gate_intercept_j``: the two columns
    measure one error, bent by the exponential and scaled by the alignment's ``s``. The
    per-fit ratio of the two (``coselected_gates.py``) measures the bend: its geometric rate
    is exactly the gap between the two columns' geometric-mean slopes; the means' gap is
    the ratio's drift plus the columns' different spread over the fits.
    """
    intercept = column.replace("pe_weight_", "pe_gate_intercept_", 1)
    weight, base = check["columns"][column], check["columns"].get(intercept)
    ratio = weight.get("per_fit_ratio")
    if (base is None or "all" not in base or not _holds(base["all"], -0.5)
            or "all" not in weight or weight["all"]["slope"] is None or ratio is None
            or ratio["mean"]["slope"] is None or ratio["geometric"]["slope"] is None):
        return ""
    cell = column[len("pe_weight_"):].split("_")[0]
    # Over the same sizes, the difference of two rates is the rate of their ratio.
    gap = weight["all"]["slope"] - base["all"]["slope"]
    geometric = s.get("geometric") or {}
    geometric_gap = ""
    # The identity holds where the ratio and both geometric rates rest on the same fits.
    same_fits = ratio["left_out"] == weight.get("left_out") == base.get("left_out") == 0
    if same_fits and column in geometric and intercept in geometric:
        geometric_gap = (f" (the gap between the two columns' geometric-mean slopes, "
                         f"{geometric[column]['slope'] - geometric[intercept]['slope']:+.3f}, "
                         "which it equals: a geometric mean of ratios is the ratio of the "
                         "geometric means)")
    return (f" `{column}` is, per fit, s w*_{cell} |e^d - 1|, where |d| is the error "
            f"`{intercept}` reports and s the alignment's scale (cell {cell} holds one atom): "
            "the two columns measure one error, the weight's bent by the exponential; the "
            f"intercept's decays at {fmt_report_rate(base['all'])}, the weight's at "
            f"{fmt_report_rate(weight['all'])}. Per fit their ratio, s w*_{cell} |e^d - 1| / "
            f"|d|, rises at {fmt_report_rate(ratio['geometric'])} in geometric mean"
            f"{geometric_gap} and at {fmt_report_rate(ratio['mean'])} in mean: a factor that "
            "converges as the fit does (|e^d - 1| / |d| -> 1 as d -> 0), so it bends the "
            "weight's slope at these sizes, not its rate in the limit."
            + _gap_sentence(gap, ratio["mean"]))


def _gap_sentence(gap, drift):
    """The means' gap between the weight and intercept slopes against the ratio's drift."""
    low, high = drift["low"], drift["high"]
    if low is not None and low <= gap <= high:
        return (f" The means' gap, {gap:+.3f}, is within the interval of that drift in mean: "
                "the factor accounts for it.")
    side = "larger" if gap > drift["slope"] else "smaller"
    return (f" The means' gap, {gap:+.3f}, is {side} than that factor's drift in mean: the "
            "rest is the two columns' different spread over the fits (a ratio of means is "
            "not a mean of ratios), which these numbers do not take apart further.")


def coselected_text(s):
    """What ``coselected_gates.py`` found: the gate compared where the truth selects both."""
    check = s.get("coselected")
    if check is None:
        return []
    if check.get("format") != COSELECTED_FORMAT:
        raise SystemExit(f"{s['name']}.coselected.json is not of the layout this page reads "
                         f"(format {COSELECTED_FORMAT}): run `python paper_figures/"
                         f"coselected_gates.py {s['name']}`.")
    reference, pairs = check["reference"], check["coselected"]
    together = [e for e in pairs if e["fraction"] > 0]
    never = [e["cells"] for e in pairs if e["fraction"] == 0]
    measured = [e for e in together if "all" in e]
    without = (f"; {count_of(check['without_fit'], 'row')} without a stored fit left out"
               if check["without_fit"] else "")
    lines = [f"Which cells the truth selects together (`python paper_figures/"
             f"coselected_gates.py {s['name']}`, on the {count_of(check['tasks'], 'stored fit')}"
             f"{without}{_stale(check, s)}): the data identify the difference of two cells' "
             f"logits only where the top-{check['top_k']} gate selects both. On the "
             "evaluation design the truth selects "
             + ", ".join(f"cells {j} and {m} together at {100 * e['fraction']:.0f} % of the "
                         "points" for e in together for j, m in [e["cells"]])
             + ("" if not never else ", and never "
                + " or ".join(f"cells {j} and {m}" for j, m in never)) + "."]
    alone = sorted({j for pair in never if reference in pair for j in pair} - {reference})
    if reference is not None and alone:
        one = len(alone) == 1
        lines[-1] += (" The per-cell gate columns above measure every cell against cell "
                      f"{reference} (the one the alignment's translation fixes), so those "
                      f"of {'cell' if one else 'cells'} "
                      f"{' and '.join(str(j) for j in alone)} compare "
                      f"{'it' if one else 'each'} with a cell the truth never selects "
                      "together with it, a comparison the data make only through other "
                      "cells.")
    if not measured:
        return lines + [""]
    first = min(e["n_low"] for e in measured)
    last = max(e["n_high"] for e in measured)
    lines += ["", "Below, the mean error of the fitted log-ratio of two cells' total gate "
              "weights where the truth selects both, |(L_j - L_m) - (l*_j - l*_m)| averaged "
              "over those points (L_j the log-sum-exp of the logits of the fitted atoms in "
              "cell j, l*_j the truth's logit); it does not depend on the alignment's "
              "translation. We expect n^-1/2: a cell's total gate weight at x is its mass in "
              "the mixture at x, which the density determines (the true experts are "
              "distinct), and the density converges at n^-1/2."
              + (" Beside them, the columns of the cells never selected together with cell "
                 f"{reference}." if check["columns"] else "")
              + " A fit that leaves a cell without an atom (or a row without the column) "
              "is left out and counted:", "",
              f"| what | rate over all sizes | n >= {check['upper_from']:g} | mean at n = "
              f"{first} / {last} | left out |", "|---|---|---|---|---|"]
    for entry in together:
        j, m = entry["cells"]
        lines.append(_pair_row(f"cells {j} and {m}", entry))
    for column, entry in check["columns"].items():
        lines.append(_pair_row(f"`{column}` (against cell {reference})", entry))
    lines.append("")
    verdicts = [_holds(e["all"], -0.5) for e in measured]
    if len(measured) == len(together) and all(verdicts):
        sentence = ("Every pair the truth selects together converges at a rate whose "
                    "interval holds -1/2: the gate, where the data see it, is consistent "
                    "with n^-1/2.")
        # A weight column slower than -1/2 whose intercept column is not: say why.
        for column, entry in check["columns"].items():
            if (column.startswith("pe_weight_") and "all" in entry
                    and _holds(entry["all"], -0.5) is False and entry["all"]["low"] > -0.5):
                sentence += _weight_clause(s, check, column)
        lines += [sentence, ""]
    return lines


#: An observed mean error within this factor of the normal limit's prediction is near it:
#: the mean of a few hundred errors is known to about 4 %, and a column still approaching
#: its limit at the grid's end stays a little below it.
_MEETS_LIMIT = 1.25


def _anchoring_clause(s, below):
    """Whether near-truth starts explain errors below the normal limit at small n.

    From the start check's refits of the smallest sizes from data-driven starts: the slow
    columns' mean errors at the best points found, as fractions of the limit's prediction.
    """
    check = s.get("start_check")
    summary = (check or {}).get("summary", {})
    small = summary.get("small")
    if not small:
        return "this check does not tell the two apart;"
    columns = [c for c in below if small["best_mean"].get(c["column"]) is not None]
    if not columns:
        return "this check does not tell the two apart;"

    def fraction(c, which, end="small"):
        return summary[end][which][c["column"]] / c[end]["predicted_mean"]

    def listed(end):
        return ", ".join(f"`{c['column']}` {fraction(c, 'best_mean', end):.2f} (the grid's "
                         f"{fraction(c, 'grid_mean', end):.2f} over the same tasks)"
                         for c in columns)

    said = (f"the start check below bears on this: refitted from data-driven starts, "
            f"{small['higher']} of {small['tasks']} tasks there reach a higher maximum than "
            "the grid's fit, and at the best points found the mean errors are these "
            f"fractions of the limit's prediction: {listed('small')}")
    if small.get("hard_gate"):
        said += (" (means, which a few hard gates, heading for tau -> 0 with unbounded gate "
                 "slopes, can dominate: the start check gives medians too)")
    if all(fraction(c, "best_mean") < 1 / _MEETS_LIMIT for c in columns):
        said += (". Still below the limit, the gap is not the starts' anchoring alone, as "
                 "far as these starts find: at these sizes the normal limit does not "
                 "describe the estimator")
    elif all(1 / _MEETS_LIMIT <= fraction(c, "best_mean") <= _MEETS_LIMIT for c in columns):
        said += (". At the limit there: the grid's small errors at these sizes are those of "
                 "fits that stay near their start, not the maximum's")
    large = summary.get("large")
    if large and large["higher"]:
        said += (f". At the largest sizes, where the check refits "
                 f"{count_of(large['tasks'], 'task')}, "
                 f"{large['higher']} of them reach a higher maximum, and over those "
                 f"{large['tasks']} the fractions are {listed('large')}")
    return said + ";"


def _limit_ratio(column, end):
    """An asymptotic-check column's observed mean error over its normal limit's, at an end."""
    return column[end]["observed_mean"] / column[end]["predicted_mean"]


def _normal_limit_bullets(s, slower):
    """For slow columns: their observed mean errors against the normal limit, at both ends.

    A column whose errors meet the limit at the largest sizes but are below it at the
    smallest approaches its n^-1/2 curve from below, so its slope over the grid is
    shallower than the limit's: a pre-asymptotic regime, not a slower rate.
    """
    check = s.get("asymptotic")
    if not check:
        return []
    slow = {r["loss"] for r in slower} | {
        r["loss"] for r in s["rows"]
        if r["theory"] is None and np.isfinite(r["slope"]) and r["slope"] > -0.5}
    columns = [c for c in check["columns"] if c["column"] in slow]
    if not columns:
        return []

    near = [c for c in columns if 1 / _MEETS_LIMIT <= _limit_ratio(c, "large") <= _MEETS_LIMIT]
    below = [c for c in near if _limit_ratio(c, "small") < 1 / _MEETS_LIMIT]
    lines = []
    if below:
        large, small = below[0]["large"], below[0]["small"]
        parts = ", ".join(f"`{c['column']}` {_limit_ratio(c, 'large'):.2f} and "
                          f"{_limit_ratio(c, 'small'):.2f}" for c in below)
        # Near the limit is a factor; whether the rest of the gap is noise is said apart.
        # (Checks written before the standard errors were kept have none: no clause.)
        noise = ""
        if all("relative_se" in c["large"] for c in below):
            short = [c for c in below
                     if 1 - _limit_ratio(c, "large") > _limit_noise(c["large"])]
            short_names = ", ".join(f"`{c['column']}`" for c in short)
            noise = (f" (each mean known there to about {_noise_groups(below, ('large',))}, "
                     "two standard errors" + (f"; {short_names} still below the limit by "
                                              "more than that" if short else "") + ")")
        lines.append(
            "* against the normal limit of the maximum-likelihood estimate (the asymptotic "
            "check below), the slow columns' mean errors are, at the largest sizes (n "
            f"{large['n_from']} to {large['n_to']}) and at the smallest (n {small['n_from']} "
            f"to {small['n_to']}), these fractions of its prediction: {parts}. Within a "
            f"factor {_MEETS_LIMIT:g} of the limit at the largest sizes{noise} and further "
            "below it at the smallest, the grid's fits approach their n^-1/2 curve from "
            "below, so their slopes over the grid are shallower than the limit's. At the "
            "smallest sizes the normal limit need not describe the estimator, and fits "
            "started near the truth may also stay nearer it than the maximum does; "
            + _anchoring_clause(s, below))

    def listed(group):
        return ", ".join(f"`{c['column']}` {_limit_ratio(c, 'large'):.2f} and "
                         f"{_limit_ratio(c, 'small'):.2f}" for c in group)

    above = [c for c in columns if _limit_ratio(c, "large") > _MEETS_LIMIT]
    if above:
        lines.append("* slow columns whose errors exceed the normal limit at the largest "
                     "sizes by more than a factor "
                     f"{_MEETS_LIMIT:g}, worse than the maximum-likelihood estimate's "
                     "(fractions of its prediction at the largest and at the smallest "
                     f"sizes): {listed(above)};")
    rest = [c for c in columns if c not in below and c not in above]
    if rest:
        lines.append("* slow columns below the normal limit at the largest sizes by more "
                     f"than a factor {_MEETS_LIMIT:g}, or not below it at the smallest "
                     "(fractions of its prediction at the largest and at the smallest "
                     f"sizes): {listed(rest)};")
    return lines


def _limit_noise(end):
    """Two standard errors of an end's observed mean, relative to it (normal limit)."""
    return 2.0 * end["relative_se"]


def _noise_groups(columns, ends):
    """Two standard errors of the columns' means at ``ends``, grouped where they agree.

    The whole-model columns spread less than a parameter's |N(0, 1)| error does, so the
    columns' noise differs: "8% and 8%" for one group, "`d1` 7%; `pe_x`, `pe_y` 8%" for
    several (percentages at each end, in the order of ``ends``).
    """
    groups = {}
    for c in columns:
        key = tuple(round(_limit_noise(c[end]), 2) for end in ends)
        groups.setdefault(key, []).append(f"`{c['column']}`")

    def percents(key):
        return " and ".join(f"{value:.0%}" for value in key)

    if len(groups) == 1:
        return percents(next(iter(groups)))
    return "; ".join(f"{', '.join(names)} {percents(key)}" for key, names in groups.items())


def _fast_limit_bullets(s, faster):
    """For fast columns: their mean errors against the normal limit, at both ends.

    A column above the limit at the smallest sizes and within noise of it at the largest
    approaches its n^-1/2 curve from above: its slope over the grid is steeper than the
    limit's, a small-n excess rather than a faster rate.
    """
    check = s.get("asymptotic")
    if not check:
        return []
    fast = {r["loss"] for r in faster}
    # (Checks written before the standard errors were kept have none: no bullet.)
    columns = [c for c in check["columns"]
               if c["column"] in fast and "relative_se" in c["small"]]
    if not columns:
        return []

    def listed(group):
        return ", ".join(f"`{c['column']}` {_limit_ratio(c, 'small'):.2f} and "
                         f"{_limit_ratio(c, 'large'):.2f} (slope {c['implied_slope']:+.3f})"
                         for c in group)

    small, large = columns[0]["small"], columns[0]["large"]
    known = _noise_groups(columns, ("small", "large"))
    noise = (f"each mean known, at the smallest and at the largest sizes, to about {known} "
             f"(two standard errors of a mean of {small['rows']} and {large['rows']} errors "
             "in the normal limit)")
    lines = ["* against the normal limit of the maximum-likelihood estimate (the asymptotic "
             "check below), the fast columns' mean errors are, at the smallest sizes (n "
             f"{small['n_from']} to {small['n_to']}) and at the largest (n {large['n_from']} "
             f"to {large['n_to']}), these fractions of its prediction, with the slope "
             f"between the two ends that the change of the fraction implies: {listed(columns)}; "
             f"{noise};"]
    above = [c for c in columns
             if _limit_ratio(c, "small") - 1 > _limit_noise(c["small"])
             and abs(_limit_ratio(c, "large") - 1) <= _limit_noise(c["large"])]
    if above:
        names = ", ".join(f"`{c['column']}`" for c in above)
        lines.append(f"* {names}: above the limit at the smallest sizes by more than that, "
                     "and within it at the largest, they approach their n^-1/2 curve from "
                     "above: an excess of the error at small n, which steepens the slope "
                     "over the grid while the limit's rate stays -1/2;")
    return lines


def _sensitivity_bullet(row, sensitivity):
    """The headline's slope without its smallest sizes, with intervals, and what it says.

    A slope that moves towards the theory's beyond its noise as small n are dropped (the
    interval without them excludes the slope over all sizes) points to a pre-asymptotic
    regime; one that moves away does not; one whose intervals all hold the slope over all
    sizes has not moved beyond its noise, and says neither.
    """
    def interval(d):
        return (f" [{d['low']:+.3f}, {d['high']:+.3f}]" if np.isfinite(d["low"])
                and np.isfinite(d["high"]) else " (no interval)")

    parts = ", ".join(f"{d['slope']:+.3f}{interval(d)} without the smallest "
                      f"{d['fraction']:.0%} of sizes (n >= {d['n_min']:g})" for d in sensitivity)
    said = f"* the slope over all sizes is {row['slope']:+.3f}; {parts}"
    # A drop that leaves two sizes has no interval: it cannot show a move.
    sensitivity = [d for d in sensitivity if np.isfinite(d["low"]) and np.isfinite(d["high"])]
    if not sensitivity:
        return said + ";"
    moved = [d for d in sensitivity if not d["low"] <= row["slope"] <= d["high"]]
    if not moved:
        reading = ("each interval holds the slope over all sizes: dropping small n does not "
                   "move it beyond its noise, so this does not show a pre-asymptotic regime "
                   "(nor rule one out)")
    elif all(abs(d["slope"] - row["theory"]) < abs(row["slope"] - row["theory"])
             for d in moved):
        reading = ("without the small sizes the slope moves towards the theory's beyond its "
                   "noise: this points to a pre-asymptotic regime at small n")
    else:
        reading = ("without the small sizes the slope moves away from the theory's, or not "
                   "consistently towards it, beyond its noise: this does not point to a "
                   "pre-asymptotic regime at small n")
    return f"{said}: {reading};"


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
        lines.append(_sensitivity_bullet(row, s["sensitivity"]))
    if slower:
        lines.append("* other columns slower than their theory (CI excludes it): "
                     + listed(slower) + ";")
    # The headline itself is read against its normal limit with the other columns.
    if row["slope"] > row["theory"]:
        lines += _normal_limit_bullets(s, [row, *slower])
    if faster:
        lines.append("* columns faster than their theory (CI excludes it): " + listed(faster)
                     + ";")
    if row["slope"] < row["theory"]:
        lines += _fast_limit_bullets(s, [row, *faster])
    unstated = [r for r in s["rows"] if r["theory"] is None and np.isfinite(r["slope"])]
    if unstated:
        lines.append("* the columns with no stated rate: " + listed(unstated) + ";")
    if agree:
        lines.append("* the columns whose CI contains their theory: "
                     + ", ".join(f"`{name}`" for name in agree) + ".")
    lines.append("")
    return lines
