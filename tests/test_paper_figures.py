"""paper_figures/: a stored study exported and turned into REPRODUCTION.md and its figures."""

import dataclasses
import json
import sqlite3
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import gmoe
from gmoe.simulation import load_experiment, read_meta, read_rows, run_experiment
from gmoe.simulation.store import code_sha256

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import make_figures
        import run_studies
        import supremum_check
        yield run_studies, make_figures, supremum_check
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))


@pytest.fixture
def pages(scripts):
    """The modules of the reproduction's pages (paper_figures/), by responsibility."""
    import build_texts
    import committed_results
    import fit_texts
    import page_format
    import study_claims
    import supremum_report
    return SimpleNamespace(build_texts=build_texts, committed_results=committed_results,
                           fit_texts=fit_texts, page_format=page_format,
                           study_claims=study_claims, supremum_report=supremum_report)


@pytest.mark.slow
def test_an_over_specified_study_is_exported_and_reported(tmp_path, scripts, pages):
    # A small grid of the k = 3 over-specified study (3 sizes x 2 replications, 2 starts):
    # the pipeline a full run goes through, from the store to the markdown page.
    run_studies, make_figures, _ = scripts
    experiment = dataclasses.replace(load_experiment(ROOT / "simulations/softmax-over-k3.toml")
                                     .quick_variant(), sizes=[1000, 2000, 4000],
                                     replications=2)
    db = tmp_path / "softmax-over-k3.sqlite"
    run_experiment(experiment, db, n_jobs=1, progress=False)
    results = tmp_path / "results"
    info = run_studies.export("softmax-over-k3", db, results)
    assert info["rows"] == 6 and (results / "softmax-over-k3.csv.gz").is_file()

    make_figures.main(["--results", str(results), "--out", str(tmp_path), "--docs",
                       str(tmp_path / "reproduction.rst")])
    page = (tmp_path / "REPRODUCTION.md").read_text()
    rows, _ = pages.committed_results.read_results(results, "softmax-over-k3")
    section = make_figures.study_section("softmax-over-k3",
                                         pages.study_claims.STUDIES["softmax-over-k3"], rows, info,
                                         tmp_path / "figures")
    # The summary row holds both slopes of the headline loss, as the rate functions give
    # them, and the grid is marked partial (6 of its 8000 tasks).
    headline = section["headline"]
    assert headline == "d2"
    line = next(li for li in page.splitlines() if li.startswith("| softmax-over-k3 |"))
    assert pages.page_format.fmt_slope(section["by_loss"]["d2"]) in line
    assert pages.page_format.fmt_slope(section["geometric"]["d2"]) in line
    assert "PARTIAL" in line
    # Over-specified: the geometric-mean rate table follows the mean's.
    assert "fitted to the geometric mean of the replications" in page
    assert (tmp_path / "figures" / "softmax-over-k3_rate.png").stat().st_size > 0
    assert "softmax-over-k3" in (tmp_path / "reproduction.rst").read_text()


def _doubled_cell_fit(truth, gap, reference_doubled=False):
    """paper2-top1-over's truth matched by k = 3, top-2: a cell doubled, its two atoms'
    gates ``gap`` apart in intercept and their experts slightly apart. With
    ``reference_doubled`` the doubled cell is the truth's reference (the last atoms)."""
    if reference_doubled:
        # The first cell alone, then the reference twice: the last row must stay 0.
        return gmoe.MixingMeasure(
            gate_coef=[[25.0], [0.0], [0.0]], gate_intercept=[-8.0, gap, 0.0],
            expert_coef=[[-20.0], [20.0], [20.0]], expert_intercept=[15.0, -4.9, -5.1],
            expert_var=[0.3, 0.4, 0.4], gating="topk", top_k=2, topk_selection="affine")
    return gmoe.MixingMeasure(
        gate_coef=[[25.0], [25.0], [0.0]], gate_intercept=[-8.0 + gap, -8.0 - gap, 0.0],
        expert_coef=[[-20.0], [-20.0], [20.0]], expert_intercept=[15.1, 14.9, -5.0],
        expert_var=[0.3, 0.3, 0.4], gating="topk", top_k=2, topk_selection="affine")


def test_a_doubled_top1_cell_rises_along_its_ridge_to_a_limit(scripts):
    # The mechanism of paper2-top1-over's section: multiplying the doubled cell's common
    # gate part by c (its internal difference held) raises L at every step, to a limit
    # that no finite c attains.
    _, _, check = scripts
    experiment = load_experiment(ROOT / "simulations/paper2-top1-over.toml")
    truth = experiment.truth
    X = gmoe.make_design(3000, "normal", random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    fit = _doubled_cell_fit(truth, 0.2)
    scales, values, groups = check.ridge(fit, truth, X, y)
    assert [g.tolist() for g in groups] == [[0, 1], [2]]
    assert scales == list(check.RIDGE_SCALES)  # gate entries up to 2.5e7 < 1e8
    rises = np.diff(values)
    scales = np.asarray(scales)
    # Strictly rising up to c = 1e3, by tens of units, then flat to round-off (~1e-12 of
    # L): a limit that the finite multipliers approach.
    assert np.all(rises[scales[1:] <= 1e3] > 0) and values[-1] - values[0] > 10
    assert np.all(np.abs(rises[scales[1:] > 1e4]) < 1e-10 * abs(values[-1]))
    assert check.ridge_shape(values, values[0]) == "rises to its end"
    # At c = 1 the point is the fit itself.
    at_one = check.ridge_point(fit, groups, 1.0)
    np.testing.assert_array_equal(at_one.gate_coef, fit.gate_coef)
    np.testing.assert_array_equal(at_one.gate_intercept, fit.gate_intercept)


def test_a_ridge_point_is_re_referenced_to_the_last_expert():
    # With the reference cell doubled, scaling its group's mean moves the last row too;
    # the rows are shifted back so that it is 0, which changes no selection or weight
    # (a common shift of every logit).
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import supremum_check as check
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))
    truth = load_experiment(ROOT / "simulations/paper2-top1-over.toml").truth
    fit = _doubled_cell_fit(truth, 0.3, reference_doubled=True)
    groups = check.cell_groups(fit, truth)
    assert [g.tolist() for g in groups] == [[0], [1, 2]]
    far = check.ridge_point(fit, groups, 10.0)
    assert far.gate_coef[2, 0] == 0.0 and far.gate_intercept[2] == 0.0
    # Every cell's mean row times 10 (group [0] is its own row; group [1, 2]'s mean
    # intercept 0.15 becomes 1.5, the last row 1.35), then all shifted by -1.35.
    np.testing.assert_allclose(far.gate_intercept, [-80.0 - 1.35, 0.3, 0.0])
    np.testing.assert_allclose(far.gate_coef[:, 0], [250.0, 0.0, 0.0])
    X = gmoe.make_design(500, "normal", random_state=2)
    np.testing.assert_array_equal(
        far.family.active_mask(X, far.gate_coef, far.gate_intercept),
        far.family.active_mask(X, far.gate_coef, far.gate_intercept + 5.0))


def test_the_d2_breakdown_weighs_each_atom_by_its_share(scripts):
    # A doubled cell whose second atom's gate is 6 below its partner's (so it holds about
    # e^-6 of the cell) and whose line is 3 off in slope. The top-1 D2 counts that atom
    # with weight 1: its term exceeds its partner's by exactly 3^2 (rbar(2) / 2 = 2 on the
    # expert slope; the gates and intercepts are off alike) and sets the doubled cell's
    # sum; weighted by its share, that term nearly vanishes.
    _, _, check = scripts
    experiment = load_experiment(ROOT / "simulations/paper2-top1-over.toml")
    truth, cfg = experiment.truth, experiment.metrics
    fit = _doubled_cell_fit(truth, 3.0).replace(expert_coef=[[-20.0], [-23.0], [20.0]])
    X_eval = check.make_evaluation_design(experiment)
    atoms = check.atom_breakdown(experiment, fit, X_eval)
    assert atoms["d2"] == pytest.approx(gmoe.metrics.voronoi_loss(
        fit, truth, kind="over", rbar=cfg["rbar"] or None, translation=cfg["translation"]),
        rel=1e-12)
    assert atoms["cells"] == [0, 0, 1] and atoms["d2_cell"] == 0
    shares, terms = np.asarray(atoms["shares"]), np.asarray(atoms["terms"])
    np.testing.assert_allclose([shares[:2].sum(), shares[2]], [1.0, 1.0])
    assert shares[1] < 0.01
    assert terms[1] - terms[0] == pytest.approx(3.0 ** 2, rel=1e-9)
    assert atoms["d2"] == pytest.approx(terms[0] + terms[1])
    assert shares[1] * terms[1] < 0.1
    assert atoms["d2_share_weighted"] == pytest.approx(max(shares[:2] @ terms[:2], terms[2]))
    # Only a top-1 truth has this loss.
    assert check.atom_breakdown(load_experiment(ROOT / "simulations/topk-over.toml"), fit,
                                X_eval) is None


def test_a_cell_the_fit_never_selects_still_counts_in_the_weighted_d2(scripts):
    # The singleton cell's atom is outscored everywhere on the design by the doubled
    # pair (top-2 of 3 always selects the pair): its cell's mass is 0, and its atoms share
    # equally (here: share 1) instead of dropping out.
    _, _, check = scripts
    experiment = load_experiment(ROOT / "simulations/paper2-top1-over.toml")
    fit = _doubled_cell_fit(experiment.truth, 0.0).replace(
        gate_coef=[[0.0], [0.0], [0.0]], gate_intercept=[5.0, 5.0, 0.0])
    X_eval = check.make_evaluation_design(experiment)
    atoms = check.atom_breakdown(experiment, fit, X_eval)
    assert atoms["cells"] == [0, 0, 1]
    assert atoms["shares"][2] == 1.0
    assert np.isfinite(atoms["d2_share_weighted"])
    assert atoms["d2_share_weighted"] >= atoms["terms"][2]


def test_the_supremum_check_is_reported(tmp_path, scripts, pages):
    # One small task of paper2-top1-over through the check, into the JSON the script
    # writes, and from there into both pages' sections and the figure.
    _, make_figures, check = scripts
    experiment = load_experiment(ROOT / "simulations/paper2-top1-over.toml")
    task = check.check_task(experiment, 400, 0, check.make_evaluation_design(experiment))
    starts = task["starts"]
    assert [s["start"] for s in starts] == list(range(experiment.start["n_starts"]))
    best = starts[task["best"]]
    assert best["log_lik"] == task["best_log_lik"] == max(s["log_lik"] for s in starts)
    assert task["highest_log_lik"] >= task["best_log_lik"]
    assert task["losses_at_fit"] == best["losses"]
    assert all(s["ridge_shape"] == check.ridge_shape(s["ridge"], s["log_lik"])
               for s in starts)
    assert {"gap", "kink", "smooth_gap"} <= set(best["final_check"])
    report = {"study": "paper2-top1-over", "sizes": [400], "replications": 2,
              "n_starts": experiment.start["n_starts"], "rise": check.RISE,
              "max_gate_entry": check.MAX_GATE_ENTRY,
              "revision": "test", "ridge_scales": list(check.RIDGE_SCALES),
              "tasks": [task, task]}
    results = tmp_path / "results"
    results.mkdir()
    (results / "paper2-top1-over.supremum.json").write_text(json.dumps(report))
    checks = pages.supremum_report.read_supremum_checks(results)
    assert list(checks) == ["paper2-top1-over"]
    markdown = tmp_path / "REPRODUCTION.md"
    make_figures.write_markdown([], {}, markdown, {}, checks)
    page = markdown.read_text()
    assert "`paper2-top1-over` is not run at full scale" in page
    assert "## paper2-top1-over: where its fits stop" in page
    spread = task["best_log_lik"] - task["worst_log_lik"]
    row = next(li for li in page.splitlines() if li.startswith("| 400 |"))
    assert f"| 400 | {spread:.2f} / {spread:.2f} |" in row
    shapes = [s["ridge_shape"] for s in starts]
    counts = " / ".join(str(2 * shapes.count(shape)) for shape in
                        ("rises to its end", "rises then falls", "flat"))
    assert f"| {counts} of {2 * len(starts)} |" in row
    rst = tmp_path / "reproduction.rst"
    make_figures.write_rst([], {}, rst, {}, checks)
    assert ".. list-table::" in rst.read_text() and "   * - 400" in rst.read_text()
    # Markdown's code spans become reStructuredText literals; literals stay as they are.
    assert pages.page_format.rst_literals("`a.csv` and ``b``") == "``a.csv`` and ``b``"
    # Counts of things read as English: one task, no tasks, many tasks.
    assert [pages.page_format.count_of(k, "task") for k in (1, 0, 3)] == [
        "1 task", "0 tasks", "3 tasks"]
    # The third table: what the kept fit's largest D2 terms are.
    atoms = best["atoms"]
    in_cell = [i for i, c in enumerate(atoms["cells"]) if c == atoms["d2_cell"]]
    share = atoms["shares"][max(in_cell, key=lambda i: atoms["terms"][i])]
    weighted = atoms["d2_share_weighted"]
    smaller = int(weighted > min(s["atoms"]["d2_share_weighted"] for s in starts))
    rows = [li for li in page.splitlines() if li.startswith("| 400 |")]
    assert len(rows) == 3
    assert rows[2].startswith(f"| 400 | {share:.2g} ({share:.2g}) | {weighted:.3g} - "
                              f"{weighted:.3g} ({weighted:.3g}) | {2 * smaller} / ")
    assert f"a discarded start still has a smaller one in {2 * smaller} of 2 tasks" in page
    pages.supremum_report.supremum_figure(report, tmp_path / "starts.png")
    assert (tmp_path / "starts.png").stat().st_size > 0


def test_the_tail_of_an_over_specified_loss_is_described(scripts, pages):
    # 200 tasks at two sizes, cell 1 split in all but the first 50 (cell 0 split there);
    # the two largest D2 (the top 1 %) have split-cell gate slope errors 80 and 90 and
    # expert slope errors 7 and 9, every other task 1 and 0.5. The text quotes the tail's
    # split cells, medians and ranges against all tasks', and the tail's Hellinger against
    # its own size's median.
    _, make_figures, _ = scripts
    rows = []
    for i in range(200):
        tail, split = i >= 198, 0 if i < 50 else 1
        rows.append({"n": 1000 if i % 2 else 2000, "d2": 1e6 + i if tail else 0.1 + 1e-3 * i,
                     "atoms_0": 2 - split, "atoms_1": 1 + split,
                     f"pe_gate_coef_{1 - split}": 0.2,
                     f"pe_gate_coef_{split}": (80.0 if i == 198 else 90.0) if tail else 1.0,
                     f"pe_expert_coef_{1 - split}": 0.1,
                     f"pe_expert_coef_{split}": (7.0 if i == 198 else 9.0) if tail else 0.5,
                     "hellinger": (0.02 if i == 198 else 0.03) if tail else 0.01})
    text = pages.fit_texts._tail_text({"headline": "d2"}, rows)
    assert ("the largest 1 % by d2 (2 tasks) split cell 1 in 2 (all 200: cell 0 in 50, "
            "cell 1 in 150)") in text
    assert "gate slope is off by a median 85 (range 80 - 90; all tasks: 1)" in text
    assert "expert slope by 8 (7 - 9; all tasks: 0.5)" in text
    assert "a median 2.50 times the median of all tasks at the same n (range 2.00 - 3.00)" \
        in text
    # A NaN loss or Hellinger distance leaves its row out; rows without parameter errors
    # leave nothing to say.
    rows[0] = dict(rows[0], hellinger=float("nan"))
    assert "(all 199: cell 0 in 49," in pages.fit_texts._tail_text({"headline": "d2"}, rows)
    assert pages.fit_texts._tail_text({"headline": "d2"},
                                   [{"n": 1, "d2": 1.0, "hellinger": 0.1}] * 200) == ""
    # A fit that splits both cells counts in both: the overlap is said.
    rows[1] = dict(rows[1], atoms_0=2, atoms_1=2)
    assert ("(all 199: cell 0 in 49, cell 1 in 151; 1 task split more than one)"
            in pages.fit_texts._tail_text({"headline": "d2"}, rows))


def test_the_spread_text_says_what_the_tail_does_to_the_mean(pages):
    # One task of 100 holding nearly all of D2's sum moves a size's mean by orders of
    # magnitude; a spread of about 5 with no such task only weighs the larger values more.
    section = {"spread_headline": True, "headline": "d2", "replications": 5,
               "min_replications": 5}
    ruled = [{"n": 100, "d2": 1e9 if i == 0 else 1.0 + i % 10} for i in range(100)]
    text = " ".join(pages.fit_texts.spread_text(section, ruled))
    assert "largest 1 % of the tasks hold 100 % of the sum" in text
    assert "a single large one moves it by orders of magnitude" in text
    # Within each of two sizes the values spread 1.9 to 9.1 (a 4.79-fold); the second
    # size's are 100 times smaller, which the pooled quantiles would count as spread.
    even = [{"n": n, "d2": (1.0 + i % 10) * (1.0 if n == 100 else 0.01)}
            for n in (100, 10_000) for i in range(100)]
    text = " ".join(pages.fit_texts.spread_text(section, even))
    assert "orders of magnitude" not in text
    assert ("which at a size spread a median 4.79-fold (from 4.79 to 4.79 over the sizes) "
            "from their 10 % to their 90 % quantile") in text
    assert "of the same rate as long as the spread keeps its shape as n grows" in text


def test_another_builds_fits_of_the_same_tasks_are_compared(scripts, pages):
    # 20 sizes x 10 replications. This grid: L = -1, d2 = n^-1/2 (1 + 0.001 (9 - rep)).
    # The other build reaches another point in replication 0 (2 log-likelihood units
    # lower, d2 100 (n/1000)^1/2 times larger, Hellinger 1.2 times) and in replication 1
    # (0.5 units higher, d2 twice as large); elsewhere it is 1e-4 units away (the same
    # point) with the same losses. Geometric slope of the other build:
    # -1/2 + (1/2) / 10 = -0.45.
    _, make_figures, _ = scripts
    sizes = np.unique(np.round(np.logspace(3, 5, 20)).astype(int))
    rows, other = [], []
    for n in sizes:
        for rep in range(10):
            d2 = n ** -0.5 * (1 + 0.001 * (9 - rep))
            rows.append({"n": int(n), "rep": float(rep), "status": "ok", "converged": 1.0,
                         "mean_log_likelihood": -1.0, "d2": d2, "hellinger": 0.01})
            gap, factor, h = {0: (-2.0, 100 * (n / 1000) ** 0.5, 0.012),
                              1: (0.5, 2.0, 0.01)}.get(rep, (1e-4, 1.0, 0.01))
            other.append({"n": int(n), "rep": float(rep), "status": "ok", "converged": 1.0,
                          "mean_log_likelihood": -1.0 + gap / n, "d2": d2 * factor,
                          "hellinger": h})
    section = {"name": "softmax-over-k3", "headline": "d2",
               "meta": {"task_sha256": "t" * 64, "code_sha256": "a" * 64},
               "other_builds": [{"label": "abc1234", "rows": other,
                                 "info": {"reference_code_sha256": "a" * 64,
                                          "task_sha256": "t" * 64}}]}

    def text():
        return " ".join(pages.build_texts.other_build_text(section, rows))

    page = text()
    assert "of 200 tasks that both fitted to the stopping rule, the two kept fits are " \
        "different points" in page
    assert "apart) in 40; this grid's is higher in 20 (by up to 2) and build abc1234's " \
        "in 20 (by up to 0.5)." in page
    assert "d2 differs by a factor of median 51 (largest 1e+03)" in page
    # Replication 1: the other build's L is higher and so is its d2; replication 0: this
    # grid's L is higher and its d2 smaller.
    assert "the larger d2 in 20 of 40" in page
    assert "Hellinger distance by a factor of median 1.1 (largest 1.2)" in page
    # The two largest d2 of this grid are replications 0 and 1 at n = 1000.
    assert "(2 tasks), 2 are different points" in page
    # The higher of each task's two fits: this grid's in replication 0, the other build's
    # elsewhere (d2 twice as large in replication 1, the same in 2-9): a constant factor
    # at every n, so the geometric slope is -1/2 again.
    assert "geometric d2: -0.500 [-0.500, -0.500] from this grid's fits, -0.450 " \
        "[-0.450, -0.450] from build abc1234's, -0.500 [-0.500, -0.500] from the higher of " \
        "each task's two" in page
    assert "exported against another build" not in page
    # One start a task (as the section defaults to): the lower of two points is not the
    # maximum; several: each build keeps the best of the points its starts reached.
    assert "the one start of the task led the two builds' EM to different points" in page
    section["starts"] = 5
    assert "the task's starts lead to at least two points" in text()
    section["starts"] = 1
    assert "the one start of the task led the two builds' EM to different points" in text()
    assert "the task's starts lead" not in text()
    section["starts"] = 5
    # A task failed or unconverged on either side is left out and counted.
    rows[3] = dict(rows[3], status="fit_failed", d2=None)
    other[5] = dict(other[5], converged=0.0)
    assert "of 198 tasks that both fitted to the stopping rule (2 more in both left out" \
        in text()
    # A task the other build did not run is neither compared nor counted as left out.
    del other[7]
    assert "of 197 tasks that both fitted to the stopping rule (2 more in both left out" \
        in text()
    # Files exported against another build of this grid are flagged; another task
    # definition is not compared at all.
    section["meta"]["code_sha256"] = "b" * 64
    assert "exported against another build of this grid (code hash aaaaaaaaaaaa) than " \
        "the committed rows (bbbbbbbbbbbb)" in text()
    section["meta"] = {"task_sha256": "u" * 64, "code_sha256": "a" * 64}
    assert text().startswith("Build abc1234's rows come from another task definition")
    assert "Slopes" not in text()
    # Fewer than 10 common tasks: nothing to say.
    section["meta"] = {"task_sha256": "t" * 64}
    section["other_builds"][0]["rows"] = other[:5]
    assert pages.build_texts.other_build_text(section, rows) == []


def test_the_build_comparison_survives_zero_losses_and_small_grids(scripts, pages):
    # 12 common tasks (no 1 % tail to speak of), one loss of 0 on each side: the ratio of
    # two zeros is 1, and the geometric slope has no rate rather than stopping the page.
    _, make_figures, _ = scripts
    rows = [{"n": 1000 * (i + 1), "rep": 0.0, "status": "ok", "mean_log_likelihood": -1.0,
             "d2": 0.0 if i == 0 else 1.0 / (i + 1), "hellinger": 0.01} for i in range(12)]
    other = [dict(r, mean_log_likelihood=-1.0 - (1.0 / r["n"] if i == 0 else 0.0))
             for i, r in enumerate(rows)]
    section = {"name": "s", "headline": "d2", "other_builds": [{"label": "x", "rows": other}]}
    page = " ".join(pages.build_texts.other_build_text(section, rows))
    assert "in 1; this grid's is higher in 1" in page
    assert "d2 differs by a factor of median 1 (largest 1)" in page
    assert "largest 1 %" not in page
    assert "geometric d2: no rate (" in page
    assert pages.build_texts._ratio(0.0, 2.0) == np.inf


def test_another_builds_store_is_exported_only_for_the_same_tasks(tmp_path, scripts, pages):
    run_studies, make_figures, _ = scripts
    experiment = dataclasses.replace(load_experiment(ROOT / "simulations/softmax-exact.toml")
                                     .quick_variant(), sizes=[200, 300], replications=1)
    ours, theirs, results = tmp_path / "ours.sqlite", tmp_path / "theirs.sqlite", \
        tmp_path / "results"
    run_experiment(experiment, ours, n_jobs=1, progress=False)
    run_experiment(experiment, theirs, n_jobs=1, progress=False)
    # The same build twice: nothing to compare.
    with pytest.raises(SystemExit, match="same build of gmoe"):
        run_studies.export_other_build("softmax-exact", theirs, "x1", ours, results)
    # The store as another build of gmoe would have left it (its code hash).
    with sqlite3.connect(theirs) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'code_sha256'", ("f" * 64,))
    info = run_studies.export_other_build("softmax-exact", theirs, "x1", ours, results)
    assert info["rows"] == 2 and info["code_sha256"] == "f" * 64
    assert not (results / "softmax-exact.csv.gz").exists()  # only the other build's files
    kept = pages.committed_results.read_result_rows(results / "softmax-exact.build-x1.csv.gz")
    assert [r["n"] for r in kept] == [200, 300]
    assert set(kept[0]) == {"n", "rep", "status", "mean_log_likelihood", "n_iter",
                            "converged", "convergence_gap", "d1", "hellinger"}
    # Another seed draws other data: the fits are not comparable task by task.
    reseeded = dataclasses.replace(experiment, seed=experiment.seed + 1)
    run_experiment(reseeded, tmp_path / "reseeded.sqlite", n_jobs=1, progress=False)
    with pytest.raises(SystemExit, match="holds other tasks than ours.sqlite"):
        run_studies.export_other_build("softmax-exact", tmp_path / "reseeded.sqlite", "x2",
                                       ours, results)
    with pytest.raises(SystemExit, match="no store at absent.sqlite"):
        run_studies.export_other_build("softmax-exact", tmp_path / "absent.sqlite", "x3",
                                       ours, results)


def test_a_fit_check_on_another_build_than_the_grid_is_flagged(tmp_path, scripts, pages):
    # The check records the build that refitted; the page flags a check whose build is
    # not the grid's and says nothing when they agree (or either is unknown).
    _, make_figures, _ = scripts
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import check_fits
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))
    from gmoe.simulation.store import code_sha256
    experiment = dataclasses.replace(load_experiment(ROOT / "simulations/softmax-exact.toml"),
                                     sizes=[300])
    report = check_fits.check(experiment, [300], 1, 1000.0, log=lambda line: None)
    assert report["code_sha256"] == code_sha256()
    # A softmax fit is smooth everywhere: its smooth decrement is the stopping rule's.
    assert 0.0 <= report["max_smooth_gap"] <= experiment.fit["tol"]
    section = {"name": "softmax-exact", "fitcheck": report,
               "meta": {"code_sha256": code_sha256()}}
    assert "another build" not in pages.fit_texts.fitcheck_text(section)
    assert (f"is at most {report['max_smooth_gap']:.1e}."
            in pages.fit_texts.fitcheck_text(section))
    # A decrement above the tolerance is read against what the longer run gained there:
    # far less (a move EM does not make), or as much (a fit stopped short).
    ridge = json.loads(json.dumps(report))
    ridge["tasks"][0].update(smooth_gap=0.18, log_likelihood_gain=6e-4)
    text = pages.fit_texts._smooth_gap_text(ridge)
    assert ("above the tolerance (0.0001) in 1 of 1 tasks (the largest at n = 300, "
            "replication 0); in 1 of them the longer run gained at most 6.0e-04 in "
            "log-likelihood, far less than the decrement promises") in text
    # Each task is read by its own decrement: a small one that the longer run realised is
    # a fit stopped short, beside a large one that it did not.
    ridge["tasks"].append(dict(ridge["tasks"][0], rep=1, smooth_gap=1.04e-4,
                               log_likelihood_gain=1.47e-4))
    text = pages.fit_texts._smooth_gap_text(ridge)
    assert "in 2 of 2 tasks" in text and "in 1 of them the longer run gained at most 6.0e-04" \
        in text
    assert ("in 1 of them the longer run gained at least a tenth of the decrement (up to "
            "1.5e-04): there the default fit stopped short") in text
    # The page's command reruns exactly the checked tasks.
    assert pages.fit_texts.fitcheck_text(section).startswith(
        "Fit check (`python paper_figures/check_fits.py softmax-exact --sizes 300 "
        "--replications 1 --factor 1000`): 1 task (n = 300)")
    section["meta"]["code_sha256"] = "0" * 64
    assert (f"The check ran on another build of gmoe (code hash {code_sha256()[:12]}) than "
            "the grid (000000000000).") in pages.fit_texts.fitcheck_text(section)
    section["meta"]["code_sha256"] = None
    assert "another build" not in pages.fit_texts.fitcheck_text(section)
    # Against the grid's own rows: the same fits, or how far the grid's are from the long.
    task = report["tasks"][0]
    row = {"n": 300, "rep": 0.0, "d1": task["loss_default"]}
    assert ("Its default fits are the grid's own: d1 equal to the last bit in all 1 tasks."
            in pages.fit_texts.fitcheck_text(section, [row]))
    off = task["loss_tight"] * (1 + 2e-3)
    said = pages.fit_texts.fitcheck_text(section, [dict(row, d1=off)])
    assert ("None of its default fits is the grid's (d1 equal to the last bit in 0 of 1 "
            "tasks: another build refitted); the grid's own d1 differs from the longer runs' "
            "by at most 2.0e-03 relative.") in said
    assert "grid's own" not in pages.fit_texts.fitcheck_text(section, [dict(row, n=400)])
    # A longer run that ended lower than the default fit: another maximum, said so.
    assert "ended lower" not in pages.fit_texts.fitcheck_text(section)
    lower = dict(report, tasks=[dict(task, log_likelihood_gain=-2.18,
                                     relative_loss_change=0.19)])
    said = pages.fit_texts.fitcheck_text(dict(section, fitcheck=lower))
    assert ("In 1 of 1 tasks the longer runs ended lower (by up to 2.2, at n = 300): from "
            "the same starts they stopped at another maximum that the stopping rule "
            "certifies" in said and "d1 moved by up to 1.9e-01 relative there." in said)
    lower["tasks"][0]["converged"] = [True, False]
    said = pages.fit_texts.fitcheck_text(dict(section, fitcheck=lower))
    assert "at n = 300), 1 of them without meeting the stopping rule; d1 moved" in said


# ------------------------------------------------------------------ split cells (k = 3)
@pytest.fixture(scope="module")
def split_cells():
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import split_cells
        yield split_cells
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))


K3 = ROOT / "simulations/softmax-over-k3.toml"


def _split_fit(truth, share, light_error, heavy_error, light_intercept=None):
    """softmax-over-k3's truth fitted with its reference cell split in two: the reference
    atom (share ``1 - share``) off by ``heavy_error`` in its expert slope, intercept and
    variance, the other atom (``share``) off by ``light_error``; gate slopes exact."""
    intercept = np.log(share / (1 - share)) if light_intercept is None else light_intercept
    a, b, nu = truth.expert_coef[1][0], truth.expert_intercept[1], truth.expert_var[1]
    return gmoe.MixingMeasure(
        gate_coef=[truth.gate_coef[0], [0.0], [0.0]],
        gate_intercept=[truth.gate_intercept[0], intercept, 0.0],
        expert_coef=[truth.expert_coef[0], [a + light_error], [a + heavy_error]],
        expert_intercept=[truth.expert_intercept[0], b + light_error, b + heavy_error],
        expert_var=[truth.expert_var[0], nu + light_error, nu + heavy_error])


def test_a_split_cells_atoms_are_the_parameter_errors_before_their_maximum(split_cells):
    experiment = load_experiment(K3)
    fit = _split_fit(experiment.truth, 0.1, 2.0, 0.01)
    atoms = split_cells.atom_records(experiment, fit)
    assert [a["cell"] for a in atoms] == [0, 1, 1]
    assert [a["atoms_in_cell"] for a in atoms] == [1, 2, 2]
    np.testing.assert_allclose([a["share"] for a in atoms], [1.0, 0.1, 0.9], rtol=1e-12)
    np.testing.assert_allclose([a["expert_coef"] for a in atoms[1:]], [2.0, 0.01], rtol=1e-9)
    # Every gate slope is exact: the alignment's is round-off and flagged.
    assert all(a["gate_aligned"] for a in atoms)
    # The public per-cell errors are the largest of these over each cell.
    pe = gmoe.metrics.parameter_errors(fit, experiment.truth,
                                       translation=experiment.metrics["translation"])
    for name in split_cells.PARAMETERS:
        expected = [max(a[name] for a in atoms if a["cell"] == j) for j in (0, 1)]
        np.testing.assert_array_equal(getattr(pe, name), expected)
    # A gate slope off the truth's is an error, not the alignment's.
    moved = split_cells.atom_records(experiment, fit.replace(gate_coef=[[25.0], [1.5], [0.0]]))
    assert moved[1]["gate_coef"] == pytest.approx(1.5) and not moved[1]["gate_aligned"]


def test_the_shares_of_a_cell_whose_weights_underflow(split_cells):
    # Cell 0 split in two, its atoms' weights e^-1000 and e^-1001 (0 in floating point):
    # their shares are still e / (1 + e) and 1 / (1 + e).
    experiment = load_experiment(K3)
    truth = experiment.truth
    fit = gmoe.MixingMeasure(
        gate_coef=[truth.gate_coef[0], truth.gate_coef[0], [0.0]],
        gate_intercept=[-1000.0, -1001.0, 0.0],
        expert_coef=[truth.expert_coef[0], truth.expert_coef[0], truth.expert_coef[1]],
        expert_intercept=[truth.expert_intercept[0]] * 2 + [truth.expert_intercept[1]],
        expert_var=[truth.expert_var[0]] * 2 + [truth.expert_var[1]])
    atoms = split_cells.atom_records(experiment, fit)
    assert [a["cell"] for a in atoms] == [0, 0, 1]
    e = np.e
    np.testing.assert_allclose([a["share"] for a in atoms], [e / (1 + e), 1 / (1 + e), 1.0],
                               rtol=1e-12)


def _synthetic_tasks(truth, sizes=(1000, 4000, 16000, 64000), replications=3):
    """Tasks whose reference cell is split: the heavier atom's errors fall as n^-1/2, the
    lighter one keeps an error of 1 while its share falls as n^-1/2."""
    return [{"n": n, "rep": rep, "fit": "refitted", "same_as_grid": True,
             "fitted": _split_fit(truth, n ** -0.5, 1.0, n ** -0.5).to_vector().tolist()}
            for n in sizes for rep in range(replications)]


def test_the_split_cell_rates_separate_the_two_atoms(split_cells):
    # The cell's largest error (the lighter atom's) has rate 0, the heavier atom's -1/2, the
    # lighter's 0; weighted by s^(1/p) the lighter atom's error falls as n^(-1/(2p)), which
    # sets the largest weighted error. Every replication of a size is the same fit, so the
    # rates are exact.
    experiment = load_experiment(K3)
    tasks = _synthetic_tasks(experiment.truth)
    tasks.append({"n": 1000, "rep": 9, "fit": "refitted", "same_as_grid": False,
                  "fitted": tasks[0]["fitted"]})
    tasks.append({"n": 1000, "rep": 10, "fit": "failed"})
    summary = split_cells.summarise(experiment, tasks)
    assert summary["tasks"] == {"used": 12, "not_the_grids": 1, "failed": 1}
    assert list(summary["cells"]) == ["1"]
    entry = summary["cells"]["1"]
    assert entry["count"] == 12
    # Both gate slopes are exact: no gate rates.
    gate = entry["parameters"]["gate_coef"]
    assert gate["largest"]["cells"] == 0 and np.isnan(gate["largest"]["slope"])
    for name in ("expert_coef", "expert_intercept", "expert_var"):
        e = entry["parameters"][name]
        p = e["exponent"]
        assert p == {"expert_coef": 2, "expert_intercept": 4, "expert_var": 2}[name]
        assert e["theory"] == -1 / (2 * p)
        assert e["largest"]["slope"] == pytest.approx(0.0, abs=1e-9)
        assert e["smaller_share"]["slope"] == pytest.approx(0.0, abs=1e-9)
        assert e["larger_share"]["slope"] == pytest.approx(-0.5, rel=1e-6)
        assert e["share_weighted"]["slope"] == pytest.approx(-1 / (2 * p), rel=1e-6)
        assert e["share_weighted"]["cells"] == 12
        assert (e["largest_is_smaller_share"], e["both_measured"]) == (12, 12)
        assert e["median_error"]["smaller_share"] == pytest.approx(1.0)
    share = entry["smaller_share"]
    assert share["quantiles"]["50%"] == pytest.approx(np.median([4000 ** -0.5,
                                                                 16000 ** -0.5]))
    assert share["below_0.1"] == 12


def test_the_split_cell_check_is_reported(scripts, split_cells, pages):
    _, make_figures, _ = scripts
    experiment = load_experiment(K3)
    tasks = _synthetic_tasks(experiment.truth)
    report = {"format": split_cells.FORMAT, "sizes": [1000, 4000, 16000, 64000],
              "replications": 3, "code_sha256": "abc", "tasks": tasks,
              "summary": split_cells.summarise(experiment, tasks)}
    section = {"name": "softmax-over-k3", "meta": {"code_sha256": "abc"},
               "split_cells": report}
    text = "\n".join(pages.fit_texts.split_cells_text(section))
    assert ("`python paper_figures/split_cells.py softmax-over-k3 --sizes 4 --replications 3`:"
            " 12 tasks, 12 refitted; sizes 1000 to 64000, replications 0-2; 12 of the 12 "
            "refits that the grid holds reproduce its D2 exactly, 0 do not") in text
    assert "not the grid's" not in text
    assert "| 1 | gate_coef (4) | -0.125 | - (0) | - (0), - | - (0), - | - (0) | 0 of 0 |" \
        in text
    assert ("| 1 | expert_coef (2) | -0.250 | -0.000 [-0.000, -0.000] (12) | -0.500 [-0.500, "
            "-0.500] (12), 0.0119 | -0.000 [-0.000, -0.000] (12), 1 | -0.250 [-0.250, -0.250] "
            "(12) | 12 of 12 |") in text.replace("+0.000", "-0.000")
    assert "cell 1: 10 %, 50 % and 90 % quantiles" in text and "below 0.1 in 12 of 12" in text
    section["meta"]["code_sha256"] = "def"
    assert "; build abc, not the grid's;" in "\n".join(pages.fit_texts.split_cells_text(section))
    assert pages.fit_texts.split_cells_text({"name": "x", "meta": {}}) == []
    with pytest.raises(SystemExit, match="--summarise-only"):
        pages.fit_texts.split_cells_text({**section, "split_cells": {**report, "format": 1}})


def test_the_split_cell_summary_is_recomputed_from_its_fits(tmp_path, split_cells):
    experiment = load_experiment(K3)
    tasks = _synthetic_tasks(experiment.truth, sizes=(1000, 3000, 9000), replications=1)
    path = tmp_path / "softmax-over-k3.splitcells.json"
    path.write_text(json.dumps({"tasks": tasks, "summary": "stale"}))
    assert split_cells.main(["softmax-over-k3", "--summarise-only",
                             "--results", str(tmp_path)]) == 0
    report = json.loads(path.read_text())
    assert report["format"] == split_cells.FORMAT
    assert report["summary"] == json.loads(json.dumps(split_cells.summarise(experiment,
                                                                              tasks)))
    with pytest.raises(SystemExit, match="no report at softmax-over-k4.splitcells.json"):
        split_cells.main(["softmax-over-k4", "--summarise-only", "--results", str(tmp_path)])
    with pytest.raises(SystemExit):  # argparse's error: a rate needs two sizes
        split_cells.main(["softmax-over-k3", "--sizes", "1", "--results", str(tmp_path)])
    for other in ("softmax-exact", "topk-over"):
        with pytest.raises(SystemExit, match="only over-specified softmax studies of one "
                                             "feature with near-truth starts"):
            split_cells.main([other, "--results", str(tmp_path)])


def test_a_split_cell_run_keeps_its_finished_tasks_and_resumes(tmp_path, split_cells,
                                                                 monkeypatch):
    # Each task is written as it finishes: a run that fails on its third task keeps two,
    # and the rerun does only the rest.
    experiment = load_experiment(K3)
    fitted = _synthetic_tasks(experiment.truth, sizes=(1000,), replications=1)[0]["fitted"]
    calls = []

    def fake(experiment, n, rep, X_eval, grid_row):
        calls.append((n, rep))
        if len(calls) == 3 and failing:
            raise RuntimeError("interrupted")
        return {"n": n, "rep": rep, "fit": "refitted", "same_as_grid": None,
                "fitted": fitted}

    monkeypatch.setattr(split_cells, "check_task", fake)
    args = ["softmax-over-k3", "--sizes", "2", "--replications", "2",
            "--results", str(tmp_path)]
    failing = True
    with pytest.raises(RuntimeError, match="interrupted"):
        split_cells.main(args)
    path = tmp_path / "softmax-over-k3.splitcells.json"
    assert len(json.loads(path.read_text())["tasks"]) == 2
    failing, calls[:] = False, []
    assert split_cells.main(args) == 0
    report = json.loads(path.read_text())
    assert len(calls) == 2 and len(report["tasks"]) == 4
    assert report["summary"]["tasks"]["used"] == 4
    # A grid grown by a replication: only the new replication's tasks are computed.
    calls[:] = []
    assert split_cells.main(args[:-4] + ["--replications", "3", "--results",
                                         str(tmp_path)]) == 0
    assert sorted(rep for _, rep in calls) == [2, 2]
    assert len(json.loads(path.read_text())["tasks"]) == 6


def test_a_split_cell_rerun_keeps_only_the_tasks_it_would_compute_alike(split_cells):
    report = {"format": split_cells.FORMAT, "sizes": [1000, 2000], "replications": 2,
              "code_sha256": "abc"}
    tasks = [{"n": n, "rep": rep, "grid_d2": d2}
             for n, rep, d2 in [(1000, 0, 0.5), (1000, 1, None), (2000, 0, 0.25),
                                (2000, 2, 0.125)]]
    old = {**report, "replications": 3, "tasks": tasks}
    rows = {(1000, 0): {"d2": 0.5}, (2000, 0): {"d2": 0.3}}
    # Replication 2 is outside the sample; (2000, 0)'s grid row changed its D2.
    assert split_cells.reusable_tasks(old, report, rows) == tasks[:2]
    for key, other in (("sizes", [1000]), ("code_sha256", "def"),
                       ("format", split_cells.FORMAT - 1)):
        assert split_cells.reusable_tasks({**old, key: other}, report, rows) == []


def test_a_split_cell_check_reads_the_fits_the_grid_stored(split_cells):
    # A row with a stored fit is not refitted, and its D2 is checked against the row's.
    from gmoe.simulation import make_evaluation_design, run_task

    base = load_experiment(K3)
    experiment = dataclasses.replace(base, start={**base.start, "n_starts": 1})
    row = run_task(experiment, 2000, 0)
    X_eval = make_evaluation_design(experiment)
    task = split_cells.check_task(experiment, 2000, 0, X_eval, row)
    assert task["fit"] == "stored" and task["same_as_grid"] is True
    assert task["fitted"] == gmoe.simulation.fitted_measure(experiment,
                                                            row).to_vector().tolist()
    # Without a stored fit the task is refitted, to the same point.
    refitted = split_cells.check_task(experiment, 2000, 0, X_eval, {**row, "fitted": None})
    assert refitted["fit"] == "refitted" and refitted["same_as_grid"] is True
    assert refitted["fitted"] == task["fitted"]
    # A grid value the fit does not reproduce, even by a relative 1e-10, is another point.
    other = split_cells.check_task(experiment, 2000, 0, X_eval,
                                   {**row, "d2": row["d2"] * (1 + 1e-10)})
    assert other["same_as_grid"] is False


def _tiny_grid(tmp_path):
    """A checkout holding a tiny study (2 sizes x 2 replications) and its grid's store."""
    from _study import write_study

    root = tmp_path / "checkout"
    (root / "simulations").mkdir(parents=True)
    toml = write_study(root / "simulations", "tiny.toml", seed=3, sizes=[60, 90],
                       replications=2)
    experiment = load_experiment(toml)
    db = tmp_path / "tiny.sqlite"
    run_experiment(experiment, db, n_jobs=1, progress=False)
    return root, experiment, db


def test_a_grid_is_restored_from_its_committed_results(tmp_path, scripts, monkeypatch, pages):
    # A machine's stores do not outlive it: --restore rebuilds one from the committed rows
    # after re-running a sample of them, and refuses rows of another task definition,
    # a count that is not the run record's, or a row this machine does not reproduce.
    run_studies, make_figures, _ = scripts
    root, experiment, db = _tiny_grid(tmp_path)
    results = root / "results"
    run_studies.export("tiny", db, results)
    monkeypatch.setattr(run_studies, "ROOT", root)
    said = []

    def log(*parts, **_):
        said.append(" ".join(map(str, parts)))

    # Rows of another build that this one reproduces: two re-run, then restored.
    run_json = results / "tiny.run.json"
    info = json.loads(run_json.read_text())
    assert info["meta"]["task_sha256"] == experiment.task_sha256
    assert [r["code_sha256"] for r in info["runs"]] == [code_sha256()]
    info["meta"]["code_sha256"] = "f" * 64
    info["runs"][0]["code_sha256"] = "f" * 64
    run_json.write_text(json.dumps(info))
    assert run_studies.restore("tiny", tmp_path / "b.sqlite", results, 2, log=log) == 4
    assert said[0].startswith("tiny: 4 rows (4 of build ffffffffffff; this is ")
    assert said[0].endswith("): re-running 2 of them")
    # The largest size's last task, then one drawn from the rest.
    assert said[1] == "  n = 90, replication 1: reproduced"
    assert len(said) == 3 and said[2].endswith(": reproduced") and said[2] != said[1]
    restored = json.loads(read_meta(tmp_path / "b.sqlite")["restored_from"])
    assert restored == {"file": "tiny.csv.gz", "rows": 4, "code_sha256": "f" * 64,
                        "verified_rows": 2}
    # The page says where a restored grid's rows came from and what was checked.
    exported = run_studies.export("tiny", tmp_path / "b.sqlite", results)
    page = pages.build_texts.restored_text({"name": "tiny", "meta": exported["meta"],
                                            "runs": exported["runs"]})[0]
    assert page == ("The grid was continued from its committed results once (`python "
                    "paper_figures/run_studies.py tiny --restore`); the continuing build first "
                    "recomputed 2 of the earlier rows (the largest size's last ones and a "
                    "seeded random draw) and matched every number to the last bit. All its "
                    "rows were computed by one build of gmoe.")
    # The restored store kept the run that computed the rows, with its build: the page
    # names it once the grid goes on.
    assert [r["code_sha256"] for r in exported["runs"]] == ["f" * 64]
    more = [*exported["runs"], {"tasks_stored": 3, "code_sha256": code_sha256()}]
    page = pages.build_texts.restored_text({"name": "tiny", "meta": exported["meta"],
                                            "runs": more})[0]
    assert ("Its rows were computed by 2 builds of gmoe: the first 4 by build ffffffffffff, "
            f"the rest by build {code_sha256()[:12]}.") in page
    # Its one change of build came with the restore's check: no unchecked resume. A third
    # build that resumed the store is one change no recomputation checked.
    assert "resumed from its own store" not in page
    third = [*more, {"tasks_stored": 2, "code_sha256": "9" * 64}]
    page = pages.build_texts.restored_text({"name": "tiny", "meta": exported["meta"],
                                            "runs": third})[0]
    assert ("At 1 or more of its 2 changes of build the grid was resumed from its own "
            "store, which recomputes no earlier row") in page
    # Without run records, the restores' account.
    page = pages.build_texts.restored_text({"name": "tiny", "meta": exported["meta"]})[0]
    assert (f"the first 4 by build ffffffffffff, the rest by build "
            f"{exported['meta']['code_sha256'][:12]}.") in page
    same = dict(exported["meta"], restored_from=dict(
        restored, code_sha256=exported["meta"]["code_sha256"], verified_rows=0))
    page = pages.build_texts.restored_text({"name": "tiny", "meta": same})[0]
    assert ("no earlier row was recomputed before the grid went on. All its rows were "
            "computed by one build of gmoe.") in page
    unknown = dict(exported["meta"], restored_from=dict(restored, code_sha256=None))
    assert "a build that the committed results do not record" in \
        pages.build_texts.restored_text({"name": "tiny", "meta": unknown})[0]
    assert pages.build_texts.restored_text({"name": "tiny", "meta": {}}) == []

    # Restored again (another machine, another build): the record keeps the earlier
    # restore, so the page still says which build computed which rows.
    said.clear()
    run_json.write_text(json.dumps(dict(exported, meta=dict(exported["meta"],
                                                            code_sha256="e" * 64))))
    assert run_studies.restore("tiny", tmp_path / "again.sqlite", results, 1, log=log) == 4
    # (Build e computed none of them: it is not named.)
    assert said[0].startswith("tiny: 4 rows (4 of build ffffffffffff; this is ")
    again = json.loads(read_meta(tmp_path / "again.sqlite")["restored_from"])
    assert again == {"file": "tiny.csv.gz", "rows": 4, "code_sha256": "e" * 64,
                     "verified_rows": 1, "earlier": restored}
    (tmp_path / "again.sqlite").unlink()
    run_json.write_text(json.dumps(exported))

    # Refusals: each leaves no store behind.
    def refused(match, target="c.sqlite"):
        with pytest.raises(SystemExit, match=match):
            run_studies.restore("tiny", tmp_path / target, results, 2, log=log)
        assert not (tmp_path / target).exists()

    # A stored number this machine does not reproduce.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE results SET d1 = d1 * 2 WHERE n = 90 AND rep = 1")
    run_studies.export("tiny", db, results)
    refused(r"task \(n = 90, replication 1\) gives other numbers here \(d1: ")
    # ... which names the way on when only the machine changed.
    refused(r"where only the machine changed, --verify 0 \(count=0\) goes on, pooling two "
            r"machines' roundings. Having gone on so, measure what that pools with `python "
            r"paper_figures/build_check.py tiny --machine`")
    # Rows of another task definition than the study file's.
    info = json.loads(run_json.read_text())
    run_json.write_text(json.dumps(dict(info, meta=dict(info["meta"],
                                                        task_sha256="e" * 64))))
    refused("belong to another task definition \\(task hash eeeeeeeeeeee\\)")
    # Fewer rows than the run record counts (a file cut short, say).
    run_json.write_text(json.dumps(dict(info, rows=5)))
    refused("expected the 5 rows that tiny.run.json counts in tiny.csv.gz, got 4")
    run_json.write_text(json.dumps(info))
    with pytest.raises(SystemExit, match="no committed results at results/absent.csv.gz"):
        run_studies.restore("absent", tmp_path / "d.sqlite", results, 2, log=log)


def test_the_page_names_every_build_that_computed_a_grid_continued_twice(scripts, pages):
    _, make_figures, _ = scripts
    first = {"rows": 2608, "code_sha256": "a" * 64, "verified_rows": 6}
    second = {"rows": 6240, "code_sha256": "b" * 64, "verified_rows": 6, "earlier": first}
    meta = {"code_sha256": "c" * 64, "restored_from": second}
    assert pages.committed_results.row_builds(meta) == [(2608, "a" * 64), (3632, "b" * 64),
                                             (None, "c" * 64)]
    page = pages.build_texts.restored_text({"name": "g", "meta": meta})[0]
    assert ("The grid was continued from its committed results twice (`python "
            "paper_figures/run_studies.py g --restore`); before going on, the continuing "
            "build recomputed earlier rows (the largest size's last ones and a seeded random "
            "draw): 6 the first time, 6 the second time. Every row recomputed matched to "
            "the last bit. Its rows were computed by 3 builds of gmoe: the first 2608 by "
            "build aaaaaaaaaaaa, the next 3632 by build bbbbbbbbbbbb, the rest by build "
            "cccccccccccc.") in page
    # One build continuing its own rows is one share, not three.
    same = {"code_sha256": "b" * 64, "restored_from": second}
    assert pages.committed_results.row_builds(same) == [(2608, "a" * 64), (None, "b" * 64)]
    assert "2 builds of gmoe: the first 2608 by build aaaaaaaaaaaa, the rest by build bbbb" \
        in pages.build_texts.restored_text({"name": "g", "meta": same})[0]
    # A build restored and exported before any task ran computed nothing: not named, and
    # the builds either side of it, one and the same, are one share.
    idle = {"rows": 2608, "code_sha256": "e" * 64, "verified_rows": 0, "earlier": first}
    resumed = {"code_sha256": "a" * 64, "restored_from": idle}
    assert pages.committed_results.row_builds(resumed) == [(None, "a" * 64)]
    page = pages.build_texts.restored_text({"name": "g", "meta": resumed})[0]
    assert "All its rows were computed by one build of gmoe" in page
    assert "6 the first time, none the second time" in page
    assert pages.committed_results.row_builds({"code_sha256": "c" * 64}) == [(None, "c" * 64)]
    assert pages.build_texts.restored_text({"name": "g", "meta": {"code_sha256": "c" * 64}}) \
        == []


def test_each_run_s_build_names_its_rows_where_the_restores_cannot(pages):
    # A store holds one code hash, rewritten by every build that resumes it; each run
    # records its own, so rows of builds that resumed one store between two restores
    # are each their build's. Runs recorded before keep the restores' account.
    first = {"rows": 420, "code_sha256": "a" * 64, "verified_rows": 6}
    meta = {"code_sha256": "d" * 64, "restored_from": first}
    runs = [{"tasks_stored": 420}, {"tasks_stored": 332, "code_sha256": "b" * 64},
            {"tasks_stored": 0, "code_sha256": "e" * 64},
            {"tasks_stored": 88, "code_sha256": "c" * 64},
            {"tasks_stored": 446, "code_sha256": "c" * 64},
            {"tasks_stored": 10, "code_sha256": "d" * 64}]
    assert pages.committed_results.row_builds(meta, runs) == [
        (420, "a" * 64), (332, "b" * 64), (534, "c" * 64), (None, "d" * 64)]
    page = pages.build_texts.restored_text({"name": "g", "meta": meta, "runs": runs})[0]
    assert ("4 builds of gmoe: the first 420 by build aaaaaaaaaaaa, the next 332 by build "
            "bbbbbbbbbbbb, the next 534 by build cccccccccccc, the rest by build dddd") in page
    # Without run builds, the old account: the rows past the restore are the store's build.
    legacy = [{"tasks_stored": r["tasks_stored"]} for r in runs]
    assert pages.committed_results.row_builds(meta, legacy) == [(420, "a" * 64),
                                                                (None, "d" * 64)]
    # A run before the build was kept that spans a restore's bound is split at it.
    spanning = [{"tasks_stored": 500}, {"tasks_stored": 40, "code_sha256": "b" * 64}]
    assert pages.committed_results.row_builds(meta, spanning) == [
        (420, "a" * 64), (80, "d" * 64), (None, "b" * 64)]
    # Rows restored from an export that kept no run records: the runs count only the
    # rows computed since, and the restore names the earlier rows' build.
    since = [{"tasks_stored": 10, "code_sha256": "d" * 64}]
    assert pages.committed_results.row_builds(meta, since, 430) == [(420, "a" * 64),
                                                                    (None, "d" * 64)]
    assert pages.committed_results.row_builds(meta, since, 10) == [(None, "d" * 64)]
    # A grid never restored but resumed by two builds says so; by one, nothing.
    two = [{"tasks_stored": 7, "code_sha256": "a" * 64},
           {"tasks_stored": 3, "code_sha256": "b" * 64}]
    page = pages.build_texts.restored_text({"name": "g", "meta": {"code_sha256": "b" * 64},
                                            "runs": two})
    assert page[0] == ("The grid was resumed from its store after gmoe changed. Its rows were "
                       "computed by 2 builds of gmoe: the first 7 by build aaaaaaaaaaaa, the "
                       "rest by build bbbbbbbbbbbb. Resuming recomputes no earlier row: "
                       "those builds share the task definition and the stopping rule, but "
                       "whether they reach the same maximum from the same start is not "
                       "checked on these rows.")
    assert pages.build_texts.restored_text(
        {"name": "g", "meta": {"code_sha256": "b" * 64}, "runs": two[1:]}) == []


def test_committed_rows_are_never_lost(tmp_path, scripts, monkeypatch):
    # On a new machine, a run without --restore would start the grid again and its export
    # overwrite the committed rows with fewer: both are refused.
    run_studies, _, _ = scripts
    from _study import write_study

    root = tmp_path / "checkout"
    (root / "simulations").mkdir(parents=True)
    experiment = load_experiment(write_study(root / "simulations", "tiny.toml", seed=3,
                                             sizes=[60, 90], replications=2))
    full, part, results = tmp_path / "full.sqlite", tmp_path / "part.sqlite", root / "results"
    run_experiment(experiment, full, n_jobs=1, progress=False)
    run_experiment(dataclasses.replace(experiment, replications=1), part, n_jobs=1,
                   progress=False)
    run_studies.export("tiny", full, results)
    before = (results / "tiny.csv.gz").read_bytes()
    with pytest.raises(SystemExit, match=r"results/tiny.csv.gz holds 2 tasks that the store "
                                         r"part.sqlite lacks; exporting would lose them"):
        run_studies.export("tiny", part, results)
    assert (results / "tiny.csv.gz").read_bytes() == before
    assert run_studies.export("tiny", full, results)["rows"] == 4  # a superset is fine
    monkeypatch.setattr(run_studies, "ROOT", root)
    monkeypatch.setattr(run_studies, "HERE", root / "paper_figures")
    with pytest.raises(SystemExit, match="no store here, but results/tiny.csv.gz holds the "
                                         "grid's committed rows: continue them with "
                                         "--restore"):
        run_studies.main(["tiny", "--results", str(results)])
    assert not list((root / "paper_figures" / "stores").iterdir())  # nothing ran


@pytest.mark.parametrize("argv, expected", [
    (["tiny", "--restore", "--quick"], "it takes no --quick"),
    (["tiny", "--restore", "--verify", "-1"], "--verify: expected a number of rows >= 0"),
])
def test_run_studies_refuses_a_restore_it_cannot_do(scripts, capsys, argv, expected):
    run_studies, _, _ = scripts
    with pytest.raises(SystemExit) as exit_:
        run_studies.main(argv)
    assert exit_.value.code == 2 and expected in capsys.readouterr().err


def test_every_committed_grid_can_be_restored(scripts, pages):
    # A grid goes on, on a new machine, only from its committed rows: each must read back
    # as its study's tasks, as many as its run record counts.
    _, make_figures, _ = scripts
    from gmoe.simulation import read_csv_rows

    results = ROOT / "paper_figures" / "results"
    checked = 0
    for name in pages.study_claims.STUDIES:
        path = results / f"{name}.csv.gz"
        if not path.exists():
            continue
        rows = read_csv_rows(path, load_experiment(ROOT / "simulations" / f"{name}.toml"))
        info = json.loads((results / f"{name}.run.json").read_text())
        assert len(rows) == info["rows"], name
        checked += 1
    assert checked >= 7  # every study with committed results (two are not run yet)


def test_the_truth_check_runs_only_where_the_fitted_model_holds_the_truth(scripts):
    # The truth split onto the fit's atoms (each copy's intercept lowered by log m) is a
    # point of an over-specified softmax fit, and of topk-over's top-3-of-4 fit (its added
    # atom is always selected with its twin): their maximum is at least the truth's
    # log-likelihood. paper2-top1-over's top-2 fit of a top-1 truth selects a second expert
    # where the truth has one: refused on the data. Another family, selection rule or
    # activation, fewer experts, or an activation gate held at another temperature are
    # refused before any data.
    import truth_check

    def experiment(name):
        return load_experiment(ROOT / "simulations" / f"{name}.toml")

    def split_truth_difference(exp, n=2000):
        held, _, _ = truth_check.embedded_truth(exp)
        X, y, _ = truth_check.task_data(exp, n, 0)
        return np.max(np.abs(gmoe.conditional_log_density(held, X, y)
                             - gmoe.conditional_log_density(exp.truth, X, y)))

    def reason(exp):
        return truth_check._why_the_model_may_miss_the_truth(exp)

    for name in ("topk-exact", "softmax-exact", "softmax-over-k3", "softmax-over-k4",
                 "topk-over", "paper2-top1-over", "activation", "temperature"):
        assert reason(experiment(name)) is None, name
    # topk-over's own start assignment; softmax-over-k4's starts draw theirs.
    assert truth_check.embedded_truth(experiment("topk-over"))[1:] == ([0, 1, 2, 2], True)
    assert truth_check.embedded_truth(experiment("softmax-over-k4"))[1:] == ([0, 1, 1, 1],
                                                                             False)
    for name in ("softmax-over-k4", "topk-over", "activation", "temperature"):
        assert split_truth_difference(experiment(name)) <= truth_check._SAME_DENSITY, name
    assert split_truth_difference(experiment("paper2-top1-over")) > 0.5
    # The assignment is the start's: topk-over's extra atom in cell 0 instead of the
    # always-selected reference cell is selected where cell 0 is not.
    topk = experiment("topk-over")
    moved = dataclasses.replace(topk, start=dict(topk.start, assignment=[0, 0, 1, 2]))
    assert truth_check.embedded_truth(moved)[1] == [0, 0, 1, 2]
    assert split_truth_difference(moved) > 0.5
    rows = [{"n": 1000, "rep": 0, "mean_log_likelihood": 0.0}]
    with pytest.raises(SystemExit, match="paper2-top1-over: not checked: the fitted model "
                                         "does not hold the truth on the data of n = 1000"):
        truth_check.check("paper2-top1-over", rows)
    top1 = experiment("paper2-top1-over")
    assert "fewer experts (1)" in reason(dataclasses.replace(
        top1, fit=dict(top1.fit, n_experts=1)))
    assert "the fit's gate (softmax)" in reason(dataclasses.replace(
        top1, fit=dict(top1.fit, gating="softmax")))
    assert "the fit selects by 'linear', the truth 'affine'" in reason(dataclasses.replace(
        top1, fit=dict(top1.fit, topk_selection="linear")))
    act = experiment("activation")
    assert "the fit has the activation 'sigmoid', the truth 'tanh'" in reason(
        dataclasses.replace(act, fit=dict(act.fit, activation="sigmoid")))
    held_at = dict(act.fit, learn_temperature=False, temperature=0.5)
    assert "holds its temperature (at 0.5" in reason(dataclasses.replace(act, fit=held_at))
    noisy = dataclasses.replace(act, fit=dict(act.fit, learn_temperature=False),
                                start=dict(act.start, temperature_noise=0.05))
    assert "start noise 0.05" in reason(noisy)
    # Held at the truth's own temperature, the activation gate still holds the truth.
    at_truth = dataclasses.replace(act, fit=dict(act.fit, learn_temperature=False))
    assert reason(at_truth) is None
    assert split_truth_difference(at_truth) <= truth_check._SAME_DENSITY


def test_the_truth_check_page_says_how_an_over_specified_fit_holds_the_truth(pages):
    check = {"result_rows": 3, "assignment": [0, 1, 1], "assignment_from_start": False,
             "largest_density_difference": 2.7e-15,
             "sizes": [{"n": 100, "tasks": 3, "below": 0, "least": 1.0, "median": 2.0,
                        "largest": 3.0}]}
    text = " ".join(pages.fit_texts.truth_check_text(
        {"name": "over", "truth_check": check, "n_rows": 3}))
    assert "here a = [0, 1, 1] (for instance; the study's starts draw their own)" in text
    assert "within 3e-15 per row" in text and "intercept by log m, m the copies" in text
    tempered = " ".join(pages.fit_texts.truth_check_text(
        {"name": "over", "truth_check": dict(check, intercept_temperature=0.25),
         "n_rows": 3}))
    assert "intercept by tau log m (tau = 0.25, the truth's)" in tempered
    own = " ".join(pages.fit_texts.truth_check_text(
        {"name": "over", "truth_check": dict(check, assignment_from_start=True),
         "n_rows": 3}))
    assert "(the study's start assignment)" in own
    exact = " ".join(pages.fit_texts.truth_check_text(
        {"name": "exact", "truth_check": dict(check, assignment=[0, 1]), "n_rows": 3}))
    assert "contains the truth" not in exact


def test_the_truth_check_finds_a_fit_below_the_truths_likelihood(tmp_path, scripts,
                                                                  monkeypatch, pages):
    # A maximum-likelihood fit is at least as likely as the truth on its own data: the
    # check recomputes the truth's log-likelihood on each task's data and counts the fits
    # below it; the page says so in bold.
    _, make_figures, _ = scripts
    import truth_check

    root, _, db = _tiny_grid(tmp_path)
    rows = read_rows(db)[0]
    monkeypatch.setattr(truth_check, "ROOT", root)
    report = truth_check.check("tiny", rows)
    assert [s["n"] for s in report["sizes"]] == [60, 90]
    assert all(s["below"] == 0 and s["tasks"] == 2 and s["least"] > 0 for s in report["sizes"])
    # The same rows with one fit's log-likelihood lowered by 1 nat per row.
    lowered = [dict(r, mean_log_likelihood=r["mean_log_likelihood"] - 1.0)
               if (r["n"], r["rep"]) == (90, 1) else r for r in rows]
    worse = truth_check.check("tiny", lowered)
    assert [s["below"] for s in worse["sizes"]] == [0, 1]
    page = " ".join(pages.fit_texts.truth_check_text(
        {"name": "tiny", "truth_check": worse, "n_rows": len(rows)}))
    assert "n = 90: 1 of 2" in page
    assert "**1 checked fits are below the truth's own log-likelihood**" in page
    assert "STALE" not in page
    assert "Every checked fit is at or above" in pages.fit_texts.truth_check_text(
        {"name": "tiny", "truth_check": report, "n_rows": len(rows)})[0]
    assert pages.fit_texts.truth_check_text({"name": "tiny", "n_rows": 4}) == []
    # --refit: this build refits the same tasks and reaches the grid's own fits again.
    again = truth_check.check("tiny", lowered, refit=True)
    assert [s["refit_below"] for s in again["sizes"]] == [0, 0]
    # (the same build, the same draws: the refits are the grid's fits, not the lowered ones)
    assert [s["refit_least"] for s in again["sizes"]] == \
        pytest.approx([s["least"] for s in report["sizes"]], rel=0, abs=1e-6)
    page = pages.fit_texts.truth_check_text({"name": "tiny", "truth_check": again,
                                          "n_rows": len(rows)})[0]
    assert f"refitted by build {again['refit_code_sha256'][:12]}" in page
    assert "n = 90: 0 (least " in page


def test_the_asymptotic_check_re_references_the_gate_and_holds_a_top_k_boundary(scripts):
    # topk-exact's alignment fixes cell 1, not the last: the truth is rewritten relative
    # to it with the same density, and its one selection switch (x = 1/2, where scores
    # 6x - 4 and -6x + 2 tie) is found and held in the normal limit.
    import asymptotic_check

    from gmoe._observed_information import Parametrisation

    truth = load_experiment(ROOT / "simulations" / "topk-exact.toml").truth
    reference, order = asymptotic_check.reference_cell_last(truth, 1)
    assert order == [0, 2, 1]
    assert (reference.gate_coef[-1, 0], reference.gate_intercept[-1]) == (0.0, 0.0)
    X = gmoe.make_design(2000, "grid", low=0.0, high=1.0, n_features=1, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    np.testing.assert_allclose(gmoe.conditional_log_density(reference, X, y),
                               gmoe.conditional_log_density(truth, X, y), rtol=0, atol=1e-12)

    param = Parametrisation(reference)
    vec = param.to_vector(reference)
    boundaries, gradient = asymptotic_check.selection_boundaries(param, vec, 0.0, 1.0)
    assert [(order[b["leaves"]], order[b["enters"]]) for b in boundaries] == [(1, 0)]
    assert boundaries[0]["x"] == pytest.approx(0.5, abs=1e-12)
    # x* = -c0 / c1 for expert 0's score c1 x + c0 relative to cell 1 (12x - 6):
    # dx*/dc1 = c0 / c1^2 = -1/24, dx*/dc0 = -1/c1 = -1/12, nothing else moves it.
    expected = np.zeros(vec.size)
    expected[param.names.index("gate[0].coef[0]")] = -1.0 / 24.0
    expected[param.names.index("gate[0].intercept")] = -1.0 / 12.0
    np.testing.assert_allclose(gradient[0], expected, atol=1e-6)

    info = np.diag(np.arange(1.0, vec.size + 1.0))
    plain, same = asymptotic_check.limit_covariance(info, np.empty((0, vec.size)))
    np.testing.assert_allclose(plain, np.linalg.inv(info))
    held, restricted = asymptotic_check.limit_covariance(info, gradient)
    assert restricted.shape == (vec.size - 1, vec.size - 1)
    # The held position has no variance; a parameter that does not move it keeps I^-1's.
    assert gradient[0] @ held @ gradient[0] == pytest.approx(0.0, abs=1e-12)
    k = param.names.index("expert[0].var")
    assert held[k, k] == pytest.approx(1.0 / info[k, k])


def test_the_asymptotic_check_refuses_a_reference_the_gate_cannot_take(scripts):
    # The activation gate pins only the last expert's intercept: its slopes cannot be
    # re-referenced to another cell.
    import asymptotic_check

    truth = load_experiment(ROOT / "simulations" / "activation.toml").truth
    with pytest.raises(SystemExit, match="cannot take as its reference"):
        asymptotic_check.reference_cell_last(truth, 0)
    assert asymptotic_check.reference_cell_last(truth, truth.n_experts - 1)[0] is truth


def test_the_information_leaves_out_rows_straddling_a_selection_boundary(scripts):
    # A difference quotient across the density's jump is ~ jump / h, not a derivative:
    # left in, it makes an eigenvalue that grows as the step shrinks (~2e4 per row on the
    # study's 2e6-row design); the smooth information's largest is ~1.2e2.
    import asymptotic_check

    from gmoe._observed_information import Parametrisation

    truth = load_experiment(ROOT / "simulations" / "topk-exact.toml").truth
    reference, _ = asymptotic_check.reference_cell_last(truth, 1)
    param = Parametrisation(reference)
    # A grid with rows packed around the switch, so that some lie within a step of it.
    X = np.concatenate([np.linspace(0.0, 1.0, 20_001),
                        np.linspace(0.5 - 1e-5, 0.5 + 1e-5, 20_001)])[:, None]
    y = gmoe.sample_moe(truth, X, random_state=1)
    info = asymptotic_check._score_outer_product(param, param.to_vector(reference), X, y)
    assert np.linalg.eigvalsh(info)[-1] < 1e3


def test_a_theory_inside_an_interval_that_holds_zero_too_is_no_evidence_of_decay(pages):
    def row(low, high, theory=-0.5):
        return {"slope": (low + high) / 2, "ci_low": low, "ci_high": high, "theory": theory,
                "within_ci": None if theory is None else low <= theory <= high, "note": ""}

    verdict = pages.page_format.verdict
    assert verdict(row(-0.6, -0.4)) == "inside the CI"
    assert verdict(row(-1.6, 0.8)) == ("inside the CI of the mean, which holds 0 too: no "
                                       "decay shown by it")
    assert verdict(row(-0.45, -0.3)) == "outside the CI"
    assert verdict(row(-0.6, -0.4, theory=None)) == "no stated rate"


def test_dropping_small_sizes_is_read_against_the_slopes_intervals(pages):
    bullet = pages.fit_texts._sensitivity_bullet
    row = {"slope": -0.32, "theory": -0.5}

    def drop(fraction, slope, low, high):
        return {"fraction": fraction, "slope": slope, "low": low, "high": high,
                "n_min": 1000 * fraction}

    # Every interval holds the slope over all sizes: no movement beyond the noise.
    still = bullet(row, [drop(0.25, -0.31, -0.35, -0.27), drop(0.5, -0.40, -0.50, -0.30)])
    assert "-0.310 [-0.350, -0.270] without the smallest 25% of sizes (n >= 250)" in still
    assert "does not move it beyond its noise" in still
    # One interval excludes it, on the theory's side: towards the theory.
    towards = bullet(row, [drop(0.25, -0.31, -0.35, -0.27), drop(0.5, -0.42, -0.52, -0.33)])
    assert "moves towards the theory's beyond its noise" in towards
    # Away from the theory beyond the noise.
    away = bullet(row, [drop(0.25, -0.20, -0.25, -0.15)])
    assert "moves away from the theory's" in away and "does not point" in away
    # A drop that leaves two sizes has no interval: shown as such, and no reading.
    bare = bullet(row, [drop(0.5, -0.40, float("nan"), float("nan"))])
    assert bare == ("* the slope over all sizes is -0.320; -0.400 (no interval) without the "
                    "smallest 50% of sizes (n >= 500);")


def test_the_asymptotic_check_reads_the_identifiable_columns_of_a_temperature_gate(scripts):
    # The temperature gate's information holds gamma = (beta1, beta0) / tau under the
    # family's prefix; its raw columns measure parameters that are not identified.
    import asymptotic_check

    from gmoe._observed_information import Parametrisation

    truth = load_experiment(ROOT / "simulations" / "temperature.toml").truth
    param = Parametrisation(truth)
    names, prefix = param.names, param.family.parameter_prefix
    assert prefix == "gamma"
    assert asymptotic_check._parameter_of("pe_gate_coef_0", names, [0, 1], prefix) == \
        ("gamma[0].coef[0]", False)
    assert asymptotic_check._parameter_of("pe_gate_coef_0_raw", names, [0, 1], prefix) is None
    assert asymptotic_check._parameter_of("pe_expert_var_1", names, [0, 1], prefix) == \
        ("expert[1].var", False)
    # With the softmax prefix the gate's names are not the temperature gate's.
    assert asymptotic_check._parameter_of("pe_gate_coef_0", names, [0, 1]) is None


def test_the_whole_model_columns_noise_and_paragraph(scripts, pages):
    import asymptotic_check

    # 400 rows of one size: the mean's relative error is cv / sqrt(400); with sizes 100
    # and 400 (one row each) the larger error of the smaller size weighs more:
    # sqrt(1/100 + 1/400) / (1/10 + 1/20).
    rel = asymptotic_check._relative_se_of_mean
    assert rel([{"n": 100}] * 400, 0.5) == pytest.approx(0.5 / 20)
    assert rel([{"n": 100}, {"n": 400}], 1.0) == pytest.approx(
        np.sqrt(1 / 100 + 1 / 400) / (1 / 10 + 1 / 20))

    def end(n, observed):
        return {"n_from": n, "n_to": 2 * n, "rows": 40, "mean_log_n": float(np.log(n)),
                "relative_se": 0.01, "observed_mean": observed, "predicted_mean": observed}

    columns = [{"column": c, "limit_mc_relative_se": mc, "small": end(100, 0.1),
                "large": end(10_000, 0.01)} for c, mc in (("d1", 0.011), ("hellinger", 0.004))]
    check = {"information_eigenvalues": [1e-3, 10.0], "columns": columns, "result_rows": 80,
             "whole_model": {"draws": 4000, "limit_size": 1e8,
                             "columns": ["d1", "hellinger"]}}
    text = "\n".join(pages.fit_texts.asymptotic_text({"name": "s", "asymptotic": check,
                                                      "n_rows": 80}))
    assert "| d1 | 0.1 | 0.1 | 0.01 | 0.01 |" in text
    assert ("`d1`, `hellinger` depend on every parameter at once: their prediction is the mean "
            "of the grid's own metric over 4000 parameter vectors drawn from the normal limit "
            "at n = 1e8, times sqrt(1e8 / n)") in text
    # The Monte Carlo's noise: the worst column's, two standard errors.
    assert "leaves each constant known to 2.2% or better" in text
    # A check without whole-model columns has no such paragraph.
    plain = dict(check, whole_model={"draws": 0, "limit_size": 1e8, "columns": []})
    assert "every parameter at once" not in "\n".join(
        pages.fit_texts.asymptotic_text({"name": "s", "asymptotic": plain, "n_rows": 80}))


def test_the_normal_limits_monte_carlo_meets_the_closed_form_and_is_linear(scripts):
    # The Monte Carlo that predicts d1 and the density distances, run on a per-cell column
    # whose limit has a closed form (E|N(0, s^2)| = s sqrt(2 / pi)), must find it; and the
    # limit size must be within the columns' linear regime: the same draws scored at sizes
    # a hundredfold apart give the same constant.
    import asymptotic_check

    from gmoe._observed_information import Parametrisation

    experiment = load_experiment(ROOT / "simulations" / "softmax-exact.toml")
    truth = experiment.truth
    param = Parametrisation(truth)  # its last expert is the cell the alignment fixes
    vec = param.to_vector(truth)
    X = np.linspace(0.0, 1.0, 200_000)[:, None]
    y = gmoe.sample_moe(truth, X, random_state=1)
    info = asymptotic_check._score_outer_product(param, vec, X, y)
    covariance, _ = asymptotic_check.limit_covariance(info, np.empty((0, vec.size)))
    columns = ["pe_expert_coef_0", "pe_expert_var_1", "hellinger"]
    draws = 1000
    limits = asymptotic_check.whole_model_limits(experiment, param, vec, covariance,
                                                 columns, draws, 1e8, seed=0)
    for column, name in (("pe_expert_coef_0", "expert[0].coef[0]"),
                         ("pe_expert_var_1", "expert[1].var")):
        i = param.names.index(name)
        exact = np.sqrt(covariance[i, i] * 2.0 / np.pi)
        # Four of the Monte Carlo mean's standard errors (about 2.4% at 1000 draws).
        assert limits[column]["constant"] == pytest.approx(
            exact, rel=4 * limits[column]["mc_relative_se"])
        assert limits[column]["cv"] == pytest.approx(np.sqrt(np.pi / 2 - 1), rel=0.1)
    nearer = asymptotic_check.whole_model_limits(experiment, param, vec, covariance,
                                                 ["hellinger"], draws, 1e6, seed=0)
    # The same draws: only the distance's curvature in the error separates the two.
    assert nearer["hellinger"]["constant"] == pytest.approx(
        limits["hellinger"]["constant"], rel=0.01)


def test_the_boundary_check_places_top1_fits_in_the_flat_interval_around_the_truth(scripts,
                                                                                  pages):
    # paper2-top1-exact at two small sizes: the rows are this build's own fits, so every
    # refit is the grid's; one committed boundary altered is found elsewhere.
    import boundary_check

    from gmoe.simulation import run_task

    experiment = load_experiment(ROOT / "simulations" / "paper2-top1-exact.toml")
    rows = [run_task(experiment, n, rep) for n in (150, 400) for rep in (0, 1)]
    report = boundary_check.check("paper2-top1-exact", rows)
    assert report["true_boundary"] == pytest.approx(0.32, rel=1e-12)
    assert [s["n"] for s in report["sizes"]] == [150, 400]
    for s in report["sizes"]:
        assert s["tasks"] == 2 and s["skipped"] == 0 and s["elsewhere_than_grid"] == 0
        # Well-separated experts: each fit's boundary is in the interval around the truth's,
        # so its error is below the interval's width.
        assert s["fit_inside"] == 2 and s["mean_error"] < s["mean_width"]
        assert 0 <= s["kept_start"] <= s["tasks"] and 0 <= s["error_over_width"] < 1
    altered = [dict(r, boundary=r["boundary"] * 1.5) if (r["n"], r["rep"]) == (400, 1) else r
               for r in rows]
    moved = boundary_check.check("paper2-top1-exact", altered)["sizes"]
    assert [s["elsewhere_than_grid"] for s in moved] == [0, 1]
    assert moved[1]["elsewhere_inside"] == 1
    assert moved[1]["elsewhere_log_likelihood_change"] == 0.0
    assert pages.fit_texts.boundary_check_text({"name": "x", "n_rows": 1}) == []
    # Studies other than a two-expert affine top-1 truth are refused, with the reason.
    with pytest.raises(SystemExit, match="not a top-1 gate"):
        boundary_check.check("topk-exact", [])


def test_the_boundary_text_states_only_what_its_numbers_bear_out(pages):
    def size(n, width, error, midpoint, kept, elsewhere=0, change=None):
        return {"n": n, "tasks": 40, "skipped": 0, "fit_inside": 40, "start_inside": kept,
                "kept_start": kept, "elsewhere_than_grid": elsewhere,
                "elsewhere_inside": elsewhere, "elsewhere_log_likelihood_change": change,
                "mean_width": width, "mean_error": error, "mean_midpoint_error": midpoint,
                "error_over_width": error / width, "error_over_width_kept": 0.01,
                "error_over_width_moved": 0.3}

    # Anchored at the small size: most fits keep a start nearer the truth than the midpoint.
    anchored = {"true_boundary": 0.32, "code_sha256": "a" * 64, "result_rows": 8,
                "sizes": [size(100, 0.05, 0.005, 0.0125, 37),
                          size(100000, 5e-5, 1.3e-5, 1.25e-5, 2, elsewhere=3, change=4e-11)],
                "slopes": {"width": -1.0, "midpoint_error": -1.0, "error": -0.85}}
    section = {"name": "s", "n_rows": 8, "boundary_check": anchored,
               "by_loss": {"boundary": {"slope": -0.87}}}
    text = "\n".join(pages.fit_texts.boundary_check_text(section))
    assert "| 100 | 0.05 | 0.005 | 0.10 | 0.0125 | 37 of 40 | 37 of 40 |" in text
    assert "the change-point rate n^-1" in text
    assert "(37 of 40 at n = 100, 2 of 40 at n = 100000)" in text
    assert "slope over the whole grid (-0.870) is shallower than -1" in text
    assert "3 of the 80 boundaries are not where" in text and "the same maximum" in text
    assert "STALE" not in text
    # Not anchored (few fits keep their start), a steep column, a refit at another maximum,
    # a width off n^-1, and another export of the results: none of those clauses, and the
    # note.
    loose = dict(anchored, result_rows=9,
                 sizes=[size(100, 0.05, 0.02, 0.0125, 5),
                        size(100000, 5e-5, 1.3e-5, 1.25e-5, 2, elsewhere=1, change=0.5)],
                 slopes={"width": -0.7, "midpoint_error": -0.7, "error": -0.85})
    text = "\n".join(pages.fit_texts.boundary_check_text(
        dict(section, boundary_check=loose, by_loss={"boundary": {"slope": -1.1}})))
    for absent in ("change-point rate", "falls more slowly", "shallower than -1",
                   "the same maximum"):
        assert absent not in text
    assert "changed by at most 5.0e-01." in text and "STALE" in text


def test_a_top1_likelihood_is_flat_between_neighbouring_design_points(scripts):
    # The premise of the boundary check: moving a top-1 boundary inside the interval of
    # design points around it leaves L unchanged; past a design point, L changes.
    import boundary_check

    experiment = load_experiment(ROOT / "simulations" / "paper2-top1-exact.toml")
    truth = experiment.truth
    rng = np.random.default_rng(5)
    X = np.sort(rng.normal(size=(300, 1)), axis=0)
    y = gmoe.sample_moe(truth, X, random_state=6)
    right = int(np.searchsorted(X[:, 0], 0.32))
    low, high = X[right - 1, 0], X[right, 0]

    def at(boundary):
        # Expert 1's logit 25 x + c is 0 at x = boundary (expert 2's is 0 everywhere).
        moved = truth.replace(gate_intercept=[-25.0 * boundary, 0.0])
        assert boundary_check.selection_boundary(moved) == pytest.approx(boundary)
        return float(gmoe.conditional_log_density(moved, X, y).sum())

    inside = [at(low + f * (high - low)) for f in (0.1, 0.5, 0.9)]
    assert inside[0] == inside[1] == inside[2]
    assert at(high + 0.5 * (X[right + 1, 0] - high)) != inside[0]


def test_a_shallow_headline_is_read_against_the_normal_limit(pages):
    # A headline slope shallower than the theory's: the slow columns' errors against the
    # normal limit at both ends of the grid decide whether the regime is pre-asymptotic.
    def rate(loss, slope, theory, within):
        return {"loss": loss, "slope": slope, "theory": theory, "within_ci": within}

    rows = [rate("d1", -0.31, -0.5, False), rate("pe_gate_coef_1", -0.27, -0.5, False),
            rate("pe_temperature", -0.29, None, None),
            rate("pe_gate_intercept_0", -0.3, None, None),
            rate("pe_expert_var_0", -0.50, -0.5, True)]

    def column(name, large, small):
        return {"column": name,
                "large": {"n_from": 95, "n_to": 100, "observed_mean": large,
                          "predicted_mean": 1.0},
                "small": {"n_from": 1, "n_to": 3, "observed_mean": small,
                          "predicted_mean": 1.0}}

    section = {"by_loss": {r["loss"]: r for r in rows}, "rows": rows, "headline": "d1",
               "fitcheck": None, "sensitivity": [],
               "asymptotic": {"columns": [column("pe_gate_coef_1", 0.8, 0.26),
                                          column("pe_temperature", 0.5, 0.2),
                                          column("pe_gate_intercept_0", 1.6, 1.0),
                                          column("pe_expert_var_0", 1.0, 1.0)]}}
    text = "\n".join(pages.fit_texts.disagreement_text(section))
    assert "**The headline slope is shallower than the theory's** (-0.310" in text
    # Within the factor 1.25 at the end (0.8 is its edge), below the limit at the start:
    # the approach from below.
    assert "`pe_gate_coef_1` 0.80 and 0.26. Within a factor 1.25" in text
    # Above the limit at the end: worse than the MLE's, said apart.
    assert "exceed the normal limit at the largest sizes by more than a factor 1.25, worse " \
           "than the maximum-likelihood estimate's (fractions of its prediction at the " \
           "largest and at the smallest sizes): `pe_gate_intercept_0` 1.60 and 1.00;" in text
    # Far below the limit at the end too: listed apart, not called an approach.
    assert "below the normal limit at the largest sizes by more than a factor 1.25, or not " \
           "below it at the smallest (fractions of its prediction at the largest and at " \
           "the smallest sizes): `pe_temperature` 0.50 and 0.20;" in text
    # A column at its theory is not among the slow ones.
    assert "`pe_expert_var_0` 1.00" not in text
    # Without the check, or for a steep headline, no such bullet.
    assert "normal limit" not in "\n".join(pages.fit_texts.disagreement_text(
        dict(section, asymptotic=None)))
    steep = dict(section, by_loss=dict(section["by_loss"], d1=rate("d1", -0.6, -0.5, False)))
    assert "normal limit" not in "\n".join(pages.fit_texts.disagreement_text(steep))


def test_a_steep_headline_is_read_against_the_normal_limit(pages, scripts):
    # A headline slope steeper than the theory's: a fast column above the normal limit at
    # the smallest sizes (by more than two standard errors of its mean) and within noise
    # of it at the largest approaches its curve from above; the fractions' change implies
    # the slope between the ends.
    import asymptotic_check

    def rate(loss, slope, theory, within):
        return {"loss": loss, "slope": slope, "theory": theory, "within_ci": within}

    rows = [rate("d1", -0.517, -0.5, False), rate("pe_expert_coef_0", -0.518, -0.5, False),
            rate("pe_expert_var_0", -0.52, -0.5, False),
            rate("pe_expert_coef_1", -0.50, -0.5, True)]

    def end(n, observed):
        # relative_se: that of a mean of 400 errors of one normal law, sqrt(pi/2 - 1) / 20.
        return {"n_from": n, "n_to": 2 * n, "rows": 400, "mean_log_n": float(np.log(n)),
                "relative_se": float(np.sqrt(np.pi / 2 - 1) / 20.0),
                "observed_mean": observed, "predicted_mean": 1.0}

    def column(name, small, large):
        entry = {"column": name, "small": end(100, small), "large": end(100_000, large)}
        entry["implied_slope"] = asymptotic_check.implied_slope(entry["small"],
                                                                entry["large"])
        return entry

    coef = column("pe_expert_coef_0", 1.11, 0.97)
    # log(0.97 / 1.11) over three decades, on top of -1/2.
    assert coef["implied_slope"] == pytest.approx(-0.5 + np.log(0.97 / 1.11)
                                                  / np.log(1000.0))
    section = {"by_loss": {r["loss"]: r for r in rows}, "rows": rows, "headline": "d1",
               "fitcheck": None, "sensitivity": [],
               "asymptotic": {"columns": [coef, column("pe_expert_var_0", 1.05, 0.97),
                                          column("pe_expert_coef_1", 1.2, 1.0)]}}
    text = "\n".join(pages.fit_texts.disagreement_text(section))
    assert "**The headline slope is steeper than the theory's** (-0.517" in text
    assert ("these fractions of its prediction, with the slope between the two ends that "
            "the change of the fraction implies: `pe_expert_coef_0` 1.11 and 0.97 (slope "
            "-0.520), `pe_expert_var_0` 1.05 and 0.97 (slope -0.511); each mean known, at "
            "the smallest and at the largest sizes, to about 8% and 8% (two standard errors "
            "of a mean of 400 and 400 errors in the normal limit);") in text
    # 1.05 is within the noise of the limit at the smallest sizes: not an approach from
    # above. A column at its theory is not among the fast ones.
    assert "* `pe_expert_coef_0`: above the limit at the smallest sizes by more than " \
           "that, and within it at the largest, they approach their n^-1/2 curve from " \
           "above" in text
    assert "`pe_expert_coef_1`" not in text.split("columns whose CI contains")[0]
    # A column of another spread (a whole-model column, predicted by Monte Carlo) is given
    # its own noise: each group of columns is named with its own.
    density = column("hellinger", 1.06, 0.98)
    for e in ("small", "large"):
        density[e]["relative_se"] = 0.015
    rows_with_density = rows + [rate("hellinger", -0.516, -0.5, False)]
    mixed = dict(section, rows=rows_with_density,
                 by_loss={r["loss"]: r for r in rows_with_density},
                 asymptotic={"columns": [density, coef]})
    text = "\n".join(pages.fit_texts.disagreement_text(mixed))
    assert ("each mean known, at the smallest and at the largest sizes, to about "
            "`hellinger` 3% and 3%; `pe_expert_coef_0` 8% and 8%") in text
    assert "* `hellinger`, `pe_expert_coef_0`: above the limit" in text
    # Beyond the noise at the largest sizes too: the numbers only, no approach.
    far = dict(section, asymptotic={"columns": [column("pe_expert_coef_0", 1.3, 1.2)]})
    text = "\n".join(pages.fit_texts.disagreement_text(far))
    assert "1.30 and 1.20" in text and "curve from above" not in text
    # Without the check, no such bullet.
    assert "normal limit" not in "\n".join(pages.fit_texts.disagreement_text(
        dict(section, asymptotic=None)))


def test_the_asymptotic_check_compares_a_top_1_study_s_experts_only(scripts):
    # A top-1 truth: the boundary's position is held, the gate's scale is a direction the
    # density does not see (one expert selected, weight 1), so the gate has no normal
    # limit; the experts keep theirs.
    import asymptotic_check

    from gmoe._observed_information import Parametrisation

    truth = load_experiment(ROOT / "simulations" / "paper2-top1-exact.toml").truth
    param = Parametrisation(truth)
    vec = param.to_vector(truth)
    X = gmoe.make_design(20_000, "normal", n_features=1, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    info = asymptotic_check._score_outer_product(param, vec, X, y)
    boundaries, gradient = asymptotic_check.selection_boundaries(
        param, vec, float(X.min()), float(X.max()))
    assert [b["x"] for b in boundaries] == [pytest.approx(0.32, abs=1e-12)]
    covariance, held = asymptotic_check.limit_covariance(info, gradient)
    gate = [i for i, name in enumerate(param.names) if name.startswith("gate")]
    experts = [i for i, name in enumerate(param.names) if name.startswith("expert")]
    assert len(gate) == 2 and len(experts) == 6
    assert np.all(np.isnan(covariance[gate][:, gate]))
    assert np.all(np.isfinite(covariance[np.ix_(experts, experts)]))
    # The experts' limit is their information's inverse: the gate does not enter it.
    np.testing.assert_allclose(covariance[np.ix_(experts, experts)],
                               np.linalg.inv(info[np.ix_(experts, experts)]), rtol=1e-8)
    # A full-rank information is inverted as it is.
    full = np.diag([1.0, 2.0, 4.0])
    np.testing.assert_allclose(asymptotic_check.limit_covariance(
        full, np.empty((0, 3)))[0], np.diag([1.0, 0.5, 0.25]))


def test_the_fit_check_follows_each_studys_headline_loss(scripts):
    import check_fits

    def headline(name):
        return check_fits.headline_loss(load_experiment(ROOT / "simulations" / f"{name}.toml"))

    assert headline("softmax-exact") == "d1"
    assert headline("softmax-over-k3") == "d2"
    # A density study has no Voronoi loss: its Hellinger distance is the headline.
    assert headline("paper2-top1-over-density") == "hellinger"


def _start_check_report(scripts):
    """A start check's report of four small-size tasks and one large, built by hand."""
    import start_check

    def task(end, n, rep, grid_l, refit_l, temperature, converged=True, errors=(0.1, 0.2),
             grid_temperature=0.2):
        return {"end": end, "n": n, "rep": rep, "grid_log_likelihood": grid_l,
                "grid_temperature": grid_temperature,
                "refit_log_likelihood": refit_l, "strategy": "kmeans", "converged": converged,
                "temperature": temperature, "notes": [], "grid_reproduced": True,
                "grid": {"d1": errors[0], "pe_temperature": errors[0]},
                "refit": {"d1": errors[1], "pe_temperature": errors[1]}}

    report = {"study": "s", "result_rows": 10, "strategies": ["kmeans", "random"],
              "n_init": 10, "higher": start_check.HIGHER, "hard_gate": start_check.HARD_GATE,
              "truth_temperature": 0.25, "columns": ["d1", "pe_temperature"],
              "tasks": [task("small", 100, 0, -50.0, -47.0, 1e-6, converged=False),
                        task("small", 100, 1, -50.0, -49.5, 0.2),
                        # The same maximum (within 1e-3), and a lower one: the grid's kept.
                        task("small", 200, 0, -80.0, -80.0 + 5e-4, 0.2),
                        task("small", 200, 1, -80.0, -81.0, 0.2, grid_temperature=1e-7),
                        task("large", 90000, 0, -4e4, -4e4, 0.25)]}
    report["summary"] = start_check.summarise(report)
    return start_check, report


def test_the_start_check_counts_higher_maxima_and_hard_gates(scripts):
    start_check, report = _start_check_report(scripts)
    small, large = report["summary"]["small"], report["summary"]["large"]
    assert (small["tasks"], small["higher"], small["hard_gate"], small["not_converged"],
            small["grid_hard_gate"]) == (4, 2, 1, 1, 1)
    assert large["grid_hard_gate"] == 0
    assert small["largest_gain"] == 3.0 and small["median_higher_gain"] == 1.75
    assert small["lowest_gain"] == -1.0
    # The best point's errors: the refit's where it is higher, else the grid's.
    assert small["grid_mean"]["d1"] == pytest.approx(0.1)
    assert small["best_mean"]["d1"] == pytest.approx((0.2 + 0.2 + 0.1 + 0.1) / 4)
    assert (large["tasks"], large["higher"]) == (1, 0)
    # Every task of the smallest and largest 5 % of the sizes at the small end; the
    # first replications only at the large end.
    rows = [{"n": n, "rep": rep} for n in range(100, 4100, 100) for rep in range(3)]
    tasks = start_check.checked_tasks(rows, 1)
    assert tasks == [("small", 100, 0), ("small", 100, 1), ("small", 100, 2),
                     ("small", 200, 0), ("small", 200, 1), ("small", 200, 2),
                     ("large", 3900, 0), ("large", 4000, 0)]


def test_the_page_says_what_the_start_check_found(scripts, pages):
    _, report = _start_check_report(scripts)

    def rate(loss, slope, theory, within):
        return {"loss": loss, "slope": slope, "theory": theory, "within_ci": within}

    rows = [rate("d1", -0.31, -0.5, False), rate("pe_temperature", -0.29, None, None)]
    section = {"name": "s", "n_rows": 10, "rows": rows, "headline": "d1",
               "start_check": report}
    text = pages.fit_texts.start_check_text(section)[0]
    assert text.startswith("Start check (`python paper_figures/start_check.py s`): the grid's "
                           "tasks refitted on their own data from the estimator's "
                           "data-driven starts, which know nothing of the truth (k-means and "
                           "random, 10 each), the best of them kept: at the smallest sizes "
                           "(n 100 to 200), 2 of 4 refits reach a higher log-likelihood than "
                           "the grid's fit (by up to 3, median 1.75, in total "
                           "log-likelihood), 1 of them with a "
                           "temperature below 0.001 of the truth's and 1 still rising when "
                           "the refit stopped; 1 of the grid's own fits there already have "
                           "such a hard gate; at the largest sizes (n 90000 to 90000), 0 of "
                           "1 refits reach a higher log-likelihood than the grid's fit.")
    assert ("the mean errors of the grid's fits and of the best point found (the refit where "
            "it is higher, else the grid's fit): `d1` 0.1 and 0.15 (medians 0.1 and 0.15), "
            "`pe_temperature` 0.1 and 0.15 (medians 0.1 and 0.15).") in text
    assert "in such tasks the maximum-likelihood estimate may not exist" in text
    # No hard gate: no such sentence; no check: no paragraph; a stale one says so.
    calm = json.loads(json.dumps(report))
    calm["summary"]["small"].update(hard_gate=0, grid_hard_gate=0)
    assert "may not exist" not in pages.fit_texts.start_check_text(
        dict(section, start_check=calm))[0]
    # A grid fit this build does not reproduce is counted.
    calm["summary"]["small"]["not_reproduced"] = 1
    assert ("(1 of the grid's fits, refitted by this build, not at the committed row's "
            "maximum)") in pages.fit_texts.start_check_text(dict(section, start_check=calm))[0]
    calm["summary"]["small"]["not_reproduced"] = 0
    # The grid's own fits with a hard gate are counted too.
    calm["summary"]["large"]["grid_hard_gate"] = 1
    text = pages.fit_texts.start_check_text(dict(section, start_check=calm))[0]
    assert ("0 of 1 refits reach a higher log-likelihood than the grid's fit; 1 of the "
            "grid's own fits there already have such a hard gate.") in text
    assert "may not exist" in text
    assert pages.fit_texts.start_check_text(dict(section, start_check=None)) == []
    assert "(STALE" in pages.fit_texts.start_check_text(dict(section, n_rows=11))[0]

    # The shallow headline's bullet reads the start check against the normal limit.
    def column(name, small):
        return {"column": name,
                "large": {"n_from": 95, "n_to": 100, "observed_mean": 1.0,
                          "predicted_mean": 1.0},
                "small": {"n_from": 1, "n_to": 3, "observed_mean": small,
                          "predicted_mean": 0.5}}

    shallow = dict(section, by_loss={r["loss"]: r for r in rows}, fitcheck=None,
                   sensitivity=[],
                   asymptotic={"columns": [column("pe_temperature", 0.05)]})
    text = "\n".join(pages.fit_texts.disagreement_text(shallow))
    assert ("the start check below bears on this: refitted from data-driven starts, 2 of "
            "4 tasks there reach a higher maximum than the grid's fit, and at the best points "
            "found the mean errors are these fractions of the limit's prediction: "
            "`pe_temperature` 0.30 (the grid's 0.20 over the same tasks) (means, which a few "
            "hard gates, heading for tau -> 0 with unbounded gate slopes, can dominate: the "
            "start check gives medians too). Still below the limit") in text
    assert "At the largest sizes" not in text.split("bears on this")[1].split(";")[0]
    # Higher maxima at the largest sizes too: their fractions are given.
    both = json.loads(json.dumps(report))
    both["summary"]["large"].update(higher=1, best_mean={"pe_temperature": 1.2},
                                    grid_mean={"pe_temperature": 0.9})
    text = "\n".join(pages.fit_texts.disagreement_text(dict(shallow, start_check=both)))
    # Over the tasks refitted there (fewer than the grid's at that end): said so.
    assert ("estimator. At the largest sizes, where the check refits 1 task, 1 of them "
            "reach a higher maximum, and over those 1 the fractions are `pe_temperature` "
            "1.20 (the grid's 0.90 over the same tasks);") in text
    reached = json.loads(json.dumps(report))
    reached["summary"]["small"]["best_mean"]["pe_temperature"] = 0.45
    text = "\n".join(pages.fit_texts.disagreement_text(dict(shallow, start_check=reached)))
    assert "`pe_temperature` 0.90 (the grid's 0.20 over the same tasks) (means, " in text
    assert "medians too). At the limit there" in text
    text = "\n".join(pages.fit_texts.disagreement_text(dict(shallow, start_check=None)))
    assert "this check does not tell the two apart;" in text


def test_the_page_compares_a_study_refitted_with_more_starts_task_by_task(pages):
    # activation-data-starts refits activation's tasks (same data, same near-truth start)
    # with more starts: the page counts the tasks where more starts reached a higher
    # maximum and fits the headline's slope over the common tasks from either study's fits.
    rng = np.random.default_rng(0)

    def row(n, rep, log_lik, d1):
        return {"n": n, "rep": rep, "status": "ok", "converged": 1.0,
                "mean_log_likelihood": log_lik, "d1": d1, "hellinger": 0.01}

    base, more = [], []
    for n in (100, 1000, 10000):
        for rep in range(6):
            d1 = float(n ** -0.5 * rng.uniform(0.5, 1.5))
            base.append(row(n, rep, -1.0, d1))
            # At n = 100 two tasks reach a higher maximum (by 0.5 in total), with larger d1.
            higher = n == 100 and rep < 2
            more.append(row(n, rep, -1.0 + (0.5 / n if higher else 0.0),
                            d1 * 3 if higher else d1))
    section = {"name": "more", "headline": "d1"}
    text = pages.build_texts.more_starts_text(section, {"more": more, "base": base},
                                              "base")[0]
    assert text.startswith("Against `base`'s fits of the same tasks (the same data and "
                           "near-truth start; 18 tasks that both fitted to the stopping "
                           "rule): the best of this study's starts is higher (by more than "
                           "0.001) in 2, by up to 0.5 in total log-likelihood; per size, "
                           "n = 100: 2 of 6, n = 1000: "
                           "0 of 6, n = 10000: 0 of 6.")
    assert "near-truth fit alone is higher" not in text
    # Three times the error at n = 100 in a third of the tasks: a steeper slope, read
    # paired (the same tasks on both sides): the slope of the log of the ratio of the two
    # means at each n, whose interval on three sizes still holds 0.
    sizes = [100, 1000, 10000]
    ratio = [np.mean([r["d1"] for r in more if r["n"] == n])
             / np.mean([r["d1"] for r in base if r["n"] == n]) for n in sizes]
    paired = np.polyfit(np.log(sizes), np.log(ratio), 1)[0]
    assert paired < 0
    assert (f"the slope of the log of the ratio of this study's mean to `base`'s at each n "
            f"is {paired:+.3f} [") in text
    assert text.endswith("More starts do not move the mean slope beyond that interval's "
                         "noise.")
    # The same errors times n^0.05 at every size: a difference the pairing pins exactly,
    # though each side's own interval is wide.
    drift = [dict(r, d1=r["d1"] * r["n"] ** 0.05) for r in base]
    text = pages.build_texts.more_starts_text(section, {"more": drift, "base": base},
                                              "base")[0]
    assert "at each n is +0.050 [+0.050, +0.050]. More starts leave the mean slope " \
           "shallower" in text
    # The slopes: from the base's fits and from this study's, which are steeper here.
    slopes = text.split("Slopes over these tasks: ")[1]
    assert slopes.startswith("mean d1: ") and "from `base`'s fits" in slopes
    assert "from this study's; geometric d1: " in slopes
    # Without the base's rows, or too few common tasks, nothing.
    assert pages.build_texts.more_starts_text(section, {"more": more}, "base") == []
    assert pages.build_texts.more_starts_text(section, {"more": more[:5], "base": base},
                                              "base") == []


def test_density_distances_outside_their_rate_are_reported(pages):
    # Hellinger 2 n^-0.6 (times a replication's factor): sqrt(n) times its mean falls, and
    # the page quotes it over the smallest and the largest quarter of the sizes, with its
    # noise, and the slopes without small n with their intervals.
    sizes, factors = [1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000], [0.9, 1.0, 1.1]
    rows = [{"n": n, "hellinger": 2 * f * n ** -0.6, "tv": 2 * f * n ** -0.4}
            for n in sizes for f in factors]

    def rate(loss, slope, low, high, theory=-0.5):
        return {"loss": loss, "slope": slope, "ci_low": low, "ci_high": high,
                "theory": theory, "within_ci": low <= theory <= high, "note": None}

    section = {"headline": "d2", "by_loss": {"d2": rate("d2", -0.5, -0.6, -0.4),
                                             "hellinger": rate("hellinger", -0.6, -0.61, -0.59),
                                             "tv": rate("tv", -0.5, -0.52, -0.48)}}
    text = "\n".join(pages.fit_texts.density_text(section, rows))
    assert "**The `hellinger` slope excludes n^-1/2 on the fast side** (`hellinger` -0.600 " \
        "[-0.610, -0.590])." in text
    assert "`tv`" not in text  # its interval holds -1/2
    first = np.mean([np.sqrt(n) * 2 * n ** -0.6 for n in sizes[:2]])
    last = np.mean([np.sqrt(n) * 2 * n ** -0.6 for n in sizes[-2:]])
    # Each size's standard error: the factors' standard deviation 0.1 over sqrt(3).
    noise = [2 * np.sqrt(sum((np.sqrt(n) * 2 * n ** -0.6 * 0.1 / np.sqrt(3)) ** 2
                             for n in part)) / 2 for part in (sizes[:2], sizes[-2:])]
    assert (f"* `hellinger`: sqrt(n) times the mean is {first:.3g} ± {noise[0]:.2g} over the "
            f"smallest quarter of sizes (n = 1000 to 2000) and {last:.3g} ± {noise[1]:.2g} over "
            "the largest (n = 64000 to 128000; two standard errors): a change beyond their "
            "noise; without the smallest 25 % and 50 % of sizes -0.600 [-0.600, -0.600] "
            "(n >= 4000; excludes -0.5) and -0.600 [-0.600, -0.600] (n >= 16000; excludes "
            "-0.5).") in text
    # Ten times less spread: the errors are 0.0079 and 0.0052, and the two ends are printed
    # to the errors' second digit (the fourth decimal), not to three significant digits.
    tight = [{"n": n, "hellinger": 2 * (1 + (f - 1) / 10) * n ** -0.6, "tv": 2 * f * n ** -0.4}
             for n in sizes for f in factors]
    tight_text = "\n".join(pages.fit_texts.density_text(section, tight))
    assert (f"sqrt(n) times the mean is {first:.4f} ± 0.0079 over the smallest quarter of "
            f"sizes (n = 1000 to 2000) and {last:.4f} ± 0.0052 over the largest") in tight_text
    assert f"{first:.4f}" == "0.9688"  # the value the line above checks, which .3g rounds
    # A slower density is a disagreement, said as such; a fast and a slow one get a
    # paragraph each.
    section["by_loss"]["tv"] = rate("tv", -0.4, -0.41, -0.39)
    text = "\n".join(pages.fit_texts.density_text(section, rows))
    assert "on the fast side** (`hellinger` -0.600 [-0.610, -0.590]). The maximum" in text
    assert "on the slow side** (`tv` -0.400 [-0.410, -0.390]): a slower decay" in text
    # One replication a size: no noise to quote, and no NaN on the page.
    single = [r for r in rows if r["hellinger"] == 2 * r["n"] ** -0.6]
    text = "\n".join(pages.fit_texts.density_text(section, single))
    assert "nan" not in text and "two standard errors" not in text
    # Nothing when every density holds -1/2, or when the headline's own disagreement
    # paragraph already lists the columns.
    section["by_loss"]["tv"] = rate("tv", -0.5, -0.52, -0.48)
    section["by_loss"]["hellinger"] = rate("hellinger", -0.5, -0.51, -0.49)
    assert pages.fit_texts.density_text(section, rows) == []
    section["by_loss"]["hellinger"] = rate("hellinger", -0.6, -0.61, -0.59)
    section["by_loss"]["d2"] = rate("d2", -0.7, -0.75, -0.65)
    assert pages.fit_texts.density_text(section, rows) == []


def test_a_fit_check_keeps_its_finished_tasks_and_resumes(tmp_path, scripts):
    # Each finished task is saved as it ends; a rerun of the same plan takes them from the
    # partial file instead of refitting, another plan starts afresh, and the finished
    # check replaces the partial file.
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import check_fits
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))
    from gmoe.simulation.store import code_sha256
    plan = {"study": "softmax-exact", "sizes": [300], "replications": 2, "factor": 1000.0,
            "code_sha256": code_sha256()}
    kept = {"n": 300, "rep": 0, "log_likelihood_gain": 123.0, "loss": "d1",
            "loss_default": 1.0, "loss_tight": 2.0, "relative_loss_change": 0.5,
            "smooth_gap": 0.25, "n_iter": [1, 2], "converged": [True, True]}
    partial = tmp_path / "softmax-exact.fitcheck.partial.json"
    partial.write_text(json.dumps({**plan, "tasks": [kept]}))
    args = ["softmax-exact", "--sizes", "300", "--replications", "2", "--results",
            str(tmp_path)]
    check_fits.main(args)
    report = json.loads((tmp_path / "softmax-exact.fitcheck.json").read_text())
    assert report["tasks"][0] == kept  # taken from the partial file, not refitted
    assert report["tasks"][1]["rep"] == 1 and report["tasks"][1]["log_likelihood_gain"] < 1
    assert report["max_log_likelihood_gain"] == 123.0 and not partial.exists()
    # Another plan (here another factor) does not resume the partial file's tasks.
    partial.write_text(json.dumps({**plan, "factor": 10.0, "tasks": [kept]}))
    assert check_fits.resumable_tasks(partial, plan) == []
    partial.write_text("{not json")
    assert check_fits.resumable_tasks(partial, plan) == []
    # check() hands the finished tasks to keep() after each task.
    experiment = dataclasses.replace(load_experiment(ROOT / "simulations/softmax-exact.toml"),
                                     sizes=[300])
    snapshots = []
    check_fits.check(experiment, [300], 2, 1000.0, log=lambda line: None,
                     keep=lambda tasks: snapshots.append([t["rep"] for t in tasks]))
    assert snapshots == [[0], [0, 1]]


def test_the_temperature_discussion_reads_its_numbers(scripts):
    # Exact power laws with a small alternating factor (so every interval is real): the
    # raw temperature follows the schedule, the fixed-noise one drifts just off flat, the
    # identifiable D1 and the activation D1 fall at -1/2 and -0.32.
    _, make_figures, _ = scripts
    sizes = np.unique(np.round(np.logspace(2, 5, 12)).astype(int))

    def rows(column, slope, scale=1.0):
        return [{"n": int(n), column: scale * n ** slope * (1.02 if i % 2 else 0.98)}
                for i, n in enumerate(sizes)]

    results = {"temperature": rows("pe_temperature_raw", -0.083, 0.05)
               + rows("d1", -0.5),
               "temperature-fixed-noise": rows("pe_temperature_raw", -0.01, 0.05),
               "activation": rows("d1", -0.32)}
    text = "\n".join(make_figures.temperature_text(results))
    assert "its CI contains the schedule (-0.083)" in text
    # Off flat beyond the interval: said, and why it is no trend.
    assert "its CI does NOT contain a flat curve (+0.000) (by " in text
    assert "flat by construction, and a 95 % interval misses it 1 time in 20" in text
    assert "gamma = (beta1, beta0) / tau: slope -0.499 [" in text
    assert "an interval that excludes the parametric rate; its section below" in text
    # An activation D1 at -1/2 and a flat fixed-noise curve: neither remark.
    results["activation"] = rows("d1", -0.5)
    results["temperature-fixed-noise"] = rows("pe_temperature_raw", 0.0, 0.05)
    text = "\n".join(make_figures.temperature_text(results))
    assert "excludes the parametric rate" not in text and "by construction" not in text
    assert "its D1's fitted slope over the grid is -0.499 [" in text


def test_the_normal_limit_figure_is_drawn_for_whole_model_columns_only(tmp_path, scripts):
    _, make_figures, _ = scripts
    # Rows exactly at the limit (sqrt(n) x value = constant) give ratio 1 and no spread in
    # every bin; sizes a decade apart in 3 bins put each size in its own bin, and in 1 bin
    # pool at their geometric mean.
    rows = [{"n": n, "rep": r, "hellinger": 1.02 / np.sqrt(n), "d1": None}
            for n in (100, 1000, 10000) for r in range(4)]
    centre, mean, error = make_figures.limit_ratio_bins(rows, "hellinger", 1.02, bins=3)
    assert centre == pytest.approx([100, 1000, 10000])
    assert mean == pytest.approx([1.0] * 3) and error == pytest.approx([0.0] * 3, abs=1e-12)
    centre, _, _ = make_figures.limit_ratio_bins(rows, "hellinger", 1.02, bins=1)
    assert centre == pytest.approx([1000])
    # Twice the limit at n = 100 only: that bin's mean is 2, the others' 1.
    doubled = [dict(r, hellinger=2 * r["hellinger"]) if r["n"] == 100 else r for r in rows]
    _, mean, _ = make_figures.limit_ratio_bins(doubled, "hellinger", 1.02, bins=3)
    assert mean == pytest.approx([2.0, 1.0, 1.0])
    assert [a.size for a in make_figures.limit_ratio_bins(rows, "d1", 1.0)] == [0, 0, 0]
    check = {"study": "s", "columns": [
        {"column": "hellinger", "limit_constant": 1.02, "limit_mc_relative_se": 0.004},
        {"column": "d1", "limit_constant": 6.9},
        {"column": "pe_expert_var_0", "asymptotic_sd_per_row": 0.1}],
        "whole_model": {"columns": ["hellinger", "d1"]}}
    out = tmp_path / "s_normal_limit.png"
    assert make_figures.normal_limit_figure(rows, check, out)
    assert out.stat().st_size > 0
    # Only the whole-model columns are drawn: with none holding a value, no figure (a d1
    # of no finite value, a parameter column that is not whole-model).
    only = dict(check, whole_model={"columns": ["d1"]})
    assert not make_figures.normal_limit_figure(rows, only, tmp_path / "none.png")
    assert not make_figures.normal_limit_figure(rows, {"study": "s", "columns": []},
                                                tmp_path / "none.png")
    assert not (tmp_path / "none.png").exists()


def test_the_page_opens_with_the_density_errors_against_their_normal_limits(pages):
    def section(name, observed, se=0.01, constant=1.0, d1=None, rows=80):
        def entry(column, value):
            end = {"observed_mean": value, "predicted_mean": 1.0, "relative_se": se,
                   "n_from": 95407, "n_to": 100000}
            return {"column": column, "limit_constant": constant, "large": end}

        columns = [entry("hellinger", observed)] + ([entry("d1", d1)] if d1 else [])
        columns.append({"column": "pe_expert_var_0", "large": {}})  # no limit constant
        return {"name": name, "n_rows": 80, "headline": "d1",
                "asymptotic": {"result_rows": rows, "columns": columns}}

    overview = pages.fit_texts.normal_limit_overview
    text = overview([section("a", 1.01), section("b", 0.99, constant=2.0, d1=0.87),
                     {"name": "c", "headline": "d1"}, {"name": "o", "headline": "d2"}])[0]
    assert ("the mean Hellinger distance at the largest sizes (n 95407 to 100000) is these "
            "fractions of the limit's prediction, constant included: `a` 1.01 (± 0.02), "
            "`b` 0.99 (± 0.02); every one of them within the noise of 1") in text
    # Any whole-model column outside its noise is named; an exact study without a check
    # is named (an over-specified one is not); distinct constants share nothing.
    assert "Columns outside their noise at the largest sizes: `b` d1 0.87 (± 0.02)." in text
    assert "Exact-specified studies without this check: `c`." in text and "`o`" not in text
    assert "share one truth" not in text
    # Two studies of one constant share one prediction; one beyond its noise is counted.
    text = overview([section("a", 1.01), section("b", 1.10)])[0]
    assert "1 of 2 within the noise of 1" in text
    assert "`a`, `b` share one truth" in text
    assert "No d1, Hellinger or TV column" not in text and "`b` hellinger 1.10" in text
    # A check computed from another export of the results is marked stale here too.
    assert "`a` (STALE" in overview([section("a", 1.0, rows=79)])[0]
    assert "within the noise of 1 (two" in overview([section("a", 1.0)])[0]
    assert overview([{"name": "c"}, {"name": "d", "asymptotic": {"columns": []}}]) == []

