"""paper_figures/build_check.py: another build's rows of a grid rerun by this one."""

import csv
import gzip
import json
from pathlib import Path

import pytest

from gmoe.simulation import load_experiment, run_experiment
from gmoe.simulation.store import code_sha256

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def modules(paper_figures_import):
    return tuple(paper_figures_import(name)
                 for name in ("build_check", "build_texts", "run_studies"))


def _two_build_grid(tmp_path, run_studies):
    """A tiny grid's committed results whose first 3 of 6 rows claim another build."""
    from _study import write_study

    root = tmp_path / "checkout"
    (root / "simulations").mkdir(parents=True)
    toml = write_study(root / "simulations", "tiny.toml", seed=3, sizes=[60, 75, 90],
                       replications=2)
    db = tmp_path / "tiny.sqlite"
    run_experiment(load_experiment(toml), db, n_jobs=1, progress=False)
    results = root / "results"
    run_studies.export("tiny", db, results)
    run_json = results / "tiny.run.json"
    info = json.loads(run_json.read_text())
    info["runs"] = [{"tasks_stored": 3, "code_sha256": "f" * 64},
                    {"tasks_stored": 3, "code_sha256": code_sha256()}]
    run_json.write_text(json.dumps(info))
    return root, results


def test_another_builds_rows_are_rerun_and_a_changed_number_is_found(tmp_path, modules,
                                                                     monkeypatch):
    build_check, _, run_studies = modules
    root, results = _two_build_grid(tmp_path, run_studies)
    monkeypatch.setattr(build_check, "ROOT", root)
    with gzip.open(results / "tiny.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    first_three = sorted(rows, key=lambda r: float(r["finished_at"]))[:3]
    said = []
    report = build_check.check("tiny", results, per_build=2, log=said.append)
    # Only the other build's rows are rerun: its row at the largest size it reached, then
    # one drawn from the rest of its rows.
    assert report["code_sha256"] == code_sha256() and report["result_rows"] == 6
    [other] = report["builds"]
    assert other["code_sha256"] == "f" * 64 and other["rows"] == 3
    own_rows = {(int(r["n"]), int(r["rep"])) for r in first_three}
    checked = [(c["n"], c["rep"]) for c in other["checked"]]
    assert len(checked) == 2 and set(checked) <= own_rows
    assert checked[0][0] == max(n for n, _ in own_rows)
    assert all(c["differences"] == [] for c in other["checked"])
    assert len(said) == 2 and all(line.endswith(": reproduced") for line in said)
    # A stored number that this build does not compute is found and named.
    for row in rows:
        if (int(row["n"]), int(row["rep"])) == checked[0]:
            row["mean_log_likelihood"] = repr(float(row["mean_log_likelihood"]) + 1e-12)
    with gzip.open(results / "tiny.csv.gz", "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    report = build_check.check("tiny", results, per_build=1, log=said.append)
    [changed] = report["builds"][0]["checked"]
    assert [column for column, _, _ in changed["differences"]] == ["mean_log_likelihood"]
    assert said[-1].startswith(f"tiny: build ffffffffffff, n = {checked[0][0]}, ")
    assert "1 columns differ (mean_log_likelihood:" in said[-1]


ROWS = {"a" * 64: 4, "b" * 64: 3, "c" * 64: 3}


def _report(own, *others, differ=None):
    return {"code_sha256": own, "result_rows": 10,
            "builds": [{"code_sha256": build, "rows": ROWS[build],
                        "checked": [{"n": 100, "rep": 1,
                                     "differences": ([["d2", "1.0", "2.0"]]
                                                     if build == differ else [])},
                                    {"n": 50, "rep": 0, "differences": []}]}
                       for build in others]}


def test_the_page_says_what_the_build_check_found(modules):
    _, build_texts, _ = modules
    runs = [{"tasks_stored": 4, "code_sha256": "a" * 64},
            {"tasks_stored": 3, "code_sha256": "b" * 64},
            {"tasks_stored": 3, "code_sha256": "c" * 64}]
    study = {"name": "g", "meta": {"code_sha256": "c" * 64}, "runs": runs}
    unchecked = build_texts.restored_text(study)[0]
    assert "Resuming recomputes no earlier row" in unchecked
    # Every build's rows rerun by the grid's last build, all reproduced: no caveat left.
    page = build_texts.restored_text(
        dict(study, build_check=_report("c" * 64, "a" * 64, "b" * 64)))[0]
    assert ("A build check (`python paper_figures/build_check.py g`) reran 2 rows of each "
            "of the 2 other builds with build cccccccccccc (the last replication at the "
            "largest size the build reached, and a seeded draw of the rest): all 4 "
            "reproduced every number to the last bit.") in page
    assert "recomputes no earlier row" not in page
    # A difference is named, with its build, task and columns.
    page = build_texts.restored_text(
        dict(study, build_check=_report("c" * 64, "a" * 64, "b" * 64,
                                        differ="b" * 64)))[0]
    assert ("1 of the 4 differ: build bbbbbbbbbbbb's n = 100, replication 1 (d2).") in page
    # A check by a build that computed no rows covers all three.
    page = build_texts.restored_text(
        dict(study, build_check=_report("e" * 64, "a" * 64, "b" * 64, "c" * 64)))[0]
    assert "each of the 3 other builds with build eeeeeeeeeeee" in page
    assert "recomputes no earlier row" not in page
    # A build that resumed the grid after the check is not covered by it.
    later = dict(study, runs=[*runs, {"tasks_stored": 2, "code_sha256": "d" * 64}],
                 meta={"code_sha256": "d" * 64},
                 build_check=_report("c" * 64, "a" * 64, "b" * 64))
    page = build_texts.restored_text(later)[0]
    assert "Rows of 1 later build came after the check." in page
    assert "Resuming recomputes no earlier row" in page
    # A check of other rows than a build now holds (a grid restored or rerun since) is
    # out of date and covers nothing; a check with no other build says nothing.
    stale = _report("c" * 64, "a" * 64, "b" * 64)
    stale["builds"][0]["rows"] = 5
    page = build_texts.restored_text(dict(study, build_check=stale))[0]
    assert ("The build check (`python paper_figures/build_check.py g`) is out of date: it "
            "split 10 rows among the builds") in page
    assert "Resuming recomputes no earlier row" in page
    assert build_texts.restored_text(dict(study, build_check=_report("c" * 64)))[0] == \
        build_texts.restored_text(study)[0]
    # A build that computed rows twice, around another, is compared share by share; the
    # last share is the rest of the grid's rows.
    again = dict(study, runs=[*runs, {"tasks_stored": 2, "code_sha256": "a" * 64}],
                 meta={"code_sha256": "a" * 64}, n_rows=12)
    report = _report("a" * 64, "b" * 64, "c" * 64)
    page = build_texts.restored_text(dict(again, build_check=report))[0]
    assert "all 4 reproduced" in page and "out of date" not in page
    shrunk = dict(again, n_rows=11, runs=[*runs[:2], {"tasks_stored": 2, "code_sha256": "c" * 64},
                                          {"tasks_stored": 2, "code_sha256": "a" * 64}])
    assert "is out of date" in build_texts.restored_text(dict(shrunk, build_check=report))[0]


def _restored_grid(tmp_path, run_studies, restored_rows):
    """A tiny grid whose first 3 rows claim another build and the first few were restored.

    Of the ``restored_rows`` rows computed before the restore, the ones past the third are
    this build's.
    """
    root, results = _two_build_grid(tmp_path, run_studies)
    run_json = results / "tiny.run.json"
    info = json.loads(run_json.read_text())
    info["meta"]["restored_from"] = {"rows": restored_rows, "code_sha256": code_sha256(),
                                     "verified_rows": 0, "file": "tiny.csv.gz"}
    run_json.write_text(json.dumps(info))
    return root, results


def _rewrite_rows(results, change):
    """Apply ``change(row)`` to every committed row of the tiny grid."""
    with gzip.open(results / "tiny.csv.gz", "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        change(row)
    with gzip.open(results / "tiny.csv.gz", "wt", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return rows


def test_this_build_s_rows_from_before_the_last_restore_are_rerun_and_measured(
        tmp_path, modules, monkeypatch):
    build_check, _, run_studies = modules
    root, results = _restored_grid(tmp_path, run_studies, restored_rows=5)
    monkeypatch.setattr(build_check, "ROOT", root)
    rows = _rewrite_rows(results, lambda row: None)
    order = sorted(rows, key=lambda r: float(r["finished_at"]))
    # Rows 4 and 5 of 6: this build's, before the restore (the first 3 are another's).
    mine = {(int(r["n"]), int(r["rep"])) for r in order[3:5]}
    said = []
    report = build_check.check_machine("tiny", results, count=3, log=said.append)
    assert report["build_rows"] == 2 and report["result_rows"] == 6
    assert report["restore"] == {"rows": 5, "code_sha256": code_sha256(), "verified_rows": 0}
    assert report["restores"] == 1 and report["loss_columns"] == ["d1", "hellinger", "tv"]
    # The losses' spread across replications, from every row (3 sizes x 2 replications:
    # too few per size for a spread).
    assert report["loss_spread"] == {"d1": None, "hellinger": None, "tv": None}
    assert set(report["machine"]) == {"processor", "architecture", "numpy", "blas"}
    assert {(c["n"], c["rep"]) for c in report["checked"]} == mine
    assert all(c["differences"] == [] and c["relative"] == {} and c["status"] == ["ok", "ok"]
               and c["log_likelihood_gap"] == 0.0 for c in report["checked"])
    assert len(said) == 2 and all(line.endswith(": reproduced") for line in said)
    # Stored numbers the machine does not compute: each difference is measured.
    first = (report["checked"][0]["n"], report["checked"][0]["rep"])

    def moved(row):
        if (int(row["n"]), int(row["rep"])) == first:
            row["mean_log_likelihood"] = repr(float(row["mean_log_likelihood"]) * (1 + 1e-9))
            row["d1"] = repr(float(row["d1"]) * (1 + 1e-6))

    stored = {(int(r["n"]), int(r["rep"])): float(r["mean_log_likelihood"]) for r in rows}
    _rewrite_rows(results, moved)
    changed = build_check.check_machine("tiny", results, count=2,
                                        log=said.append)["checked"][0]
    assert [c for c, _, _ in changed["differences"]] == ["mean_log_likelihood", "d1"]
    assert changed["log_likelihood_gap"] == pytest.approx(-first[0] * stored[first] * 1e-9,
                                                          rel=1e-3)
    assert changed["relative"]["d1"] == pytest.approx(1e-6, rel=1e-3)
    assert "2 columns differ, the total log-likelihood by " in said[-2]
    # A fit stored as failed (no log-likelihood): no gap, and the statuses say why.
    _rewrite_rows(results, lambda row: row.update(status="fit_failed", mean_log_likelihood="")
                  if (int(row["n"]), int(row["rep"])) == first else None)
    failed = build_check.check_machine("tiny", results, count=2, log=said.append)["checked"][0]
    assert failed["log_likelihood_gap"] is None and failed["status"] == ["fit_failed", "ok"]
    assert "the total log-likelihood by an unknown amount" in said[-2]


def test_the_machine_check_needs_rows_of_its_own_build_from_before_a_restore(
        tmp_path, modules, monkeypatch):
    build_check, _, run_studies = modules
    # Only the other build's rows came before the restore: a difference would be a build's.
    root, results = _restored_grid(tmp_path / "other", run_studies, restored_rows=3)
    monkeypatch.setattr(build_check, "ROOT", root)
    with pytest.raises(SystemExit, match=f"{code_sha256()[:12]} computed none of the rows "
                                         r"before the last restore \(or the records do not "
                                         "say.*run the check with the build that did"):
        build_check.check_machine("tiny", results, count=2)
    # A grid never restored, or restored before any row, has no earlier machine's rows.
    _, plain = _two_build_grid(tmp_path / "plain", run_studies)
    with pytest.raises(SystemExit, match="no rows were restored"):
        build_check.check_machine("tiny", plain, count=2)
    _, empty = _restored_grid(tmp_path / "empty", run_studies, restored_rows=0)
    with pytest.raises(SystemExit, match="no rows were restored"):
        build_check.check_machine("tiny", empty, count=2)


def test_the_machine_check_s_command_writes_the_report_the_page_reads(
        tmp_path, modules, monkeypatch, capsys):
    build_check, _, run_studies = modules
    root, results = _restored_grid(tmp_path, run_studies, restored_rows=5)
    monkeypatch.setattr(build_check, "ROOT", root)
    assert build_check.main(["tiny", "--machine", "--rows", "1", "--results",
                             str(results)]) == 0
    report = json.loads((results / "tiny.machinecheck.json").read_text())
    assert len(report["checked"]) == 1 and report["build_rows"] == 2
    assert "tiny: 1 of the 2 rows" in capsys.readouterr().out
    for wrong, message in ((["--machine", "--per-build", "2"],
                            "--per-build counts other builds' rows: --machine takes --rows"),
                           (["--rows", "3"], "--rows counts the rows of --machine")):
        with pytest.raises(SystemExit):
            build_check.main(["tiny", *wrong, "--results", str(results)])
        assert message in capsys.readouterr().err


def test_relative_differences_of_numbers_parameter_lists_and_text(modules):
    build_check, _, _ = modules
    assert build_check.relative_difference(2.0, 2.002) == pytest.approx(1e-3, rel=1e-3)
    assert build_check.relative_difference(5, 6) == pytest.approx(1 / 6)
    # The fitted parameters element by element: a small variance moved by half counts
    # as much as it moved, beside a gate slope of 1e6.
    assert build_check.relative_difference("[1e6, 0.002]", "[1e6, 0.003]") == \
        pytest.approx(1 / 3)
    assert build_check.relative_difference("[0.0, 1.0]", "[0.0, 1.0]") == 0.0
    assert build_check.relative_difference("[1.0]", "[1.0, 2.0]") is None
    assert build_check.relative_difference("overflow", "") is None
    assert build_check.relative_difference(None, 1.0) is None
    assert build_check.relative_difference(1.0, float("nan")) is None


def _machine_report(gaps=(0.0, 2e-5, 7e-5), steps=(False, False, True), **restore):
    checked = []
    for i, (gap, step) in enumerate(zip(gaps, steps, strict=True)):
        differences = [] if gap == 0.0 else [["mean_log_likelihood", "-0.4", "-0.41"],
                                            ["d2", "1.0", "1.0004"],
                                            ["fitted", "[1.0]", "[1.001]"]]
        if step:
            differences.append(["n_iter", "140", "141"])
        checked.append({"n": 100 * (i + 1), "rep": i, "differences": differences,
                        "status": ["ok", "ok"], "log_likelihood_gap": gap,
                        "relative": {} if gap == 0.0 else {"d2": 4e-4 * (i + 1),
                                                           "fitted": 1e-3,
                                                           "mean_log_likelihood": 1e-9}})
    return {"code_sha256": "c" * 64, "result_rows": 60, "build_rows": 25,
            "restore": {"rows": 40, "code_sha256": "c" * 64, "verified_rows": 0, **restore},
            "restores": 1, "loss_columns": ["d2", "hellinger"], "checked": checked,
            "loss_spread": {"d2": 4.6, "hellinger": None},
            "machine": {"processor": "AMD EPYC", "architecture": "x86_64", "numpy": "2.4.6",
                        "blas": "openblas 0.3.31 (Haswell kernels)"}}


def test_the_page_says_what_the_machine_check_found(modules):
    _, build_texts, _ = modules
    meta = {"code_sha256": "c" * 64,
            "restored_from": {"rows": 40, "code_sha256": "c" * 64, "verified_rows": 0}}
    study = {"name": "g", "meta": meta}
    assert "machine check" not in build_texts.restored_text(study)[0]
    page = build_texts.restored_text(dict(study, machine_check=_machine_report()))[0]
    assert ("A machine check (`python paper_figures/build_check.py g --machine`) reran 3 of "
            "the 25 rows that build cccccccccccc computed before the last restore (on an "
            "earlier machine), with that build, on AMD EPYC with openblas 0.3.31 (Haswell "
            "kernels) (the last replication at the largest size they reached, and a seeded "
            "draw of the rest): 1 reproduced every number to the last bit and 2 did not. "
            "All of them reached the same log-likelihood within 0.001 (at most 7e-05 "
            "apart), the machines rounding otherwise; the losses differ by at most 0.0012 "
            "(d2) relative, against a spread across replications of 4.6 (d2) (the median "
            "over sizes of the standard deviation over the mean); 1 of 2 stopped after "
            "another number of EM steps") in page
    # No step changed: no word on the stopping rule; no loss differs: no loss named.
    calm = _machine_report(steps=(False, False, False))
    page = build_texts.restored_text(dict(study, machine_check=calm))[0]
    assert "EM steps" not in page and page.endswith("standard deviation over the mean).")
    for row in calm["checked"]:
        row["relative"].pop("d2", None)
    page = build_texts.restored_text(dict(study, machine_check=calm))[0]
    assert page.endswith("(at most 7e-05 apart), the machines rounding otherwise.")
    # One row rerun, which differs only in its parameters: singular, "the same to the bit".
    one = _machine_report(gaps=(0.0,), steps=(False,))
    one["build_rows"] = 1
    one["checked"][0]["differences"] = [["fitted", "[1.0]", "[1.001]"]]
    page = build_texts.restored_text(dict(study, machine_check=one))[0]
    assert "reran the row that build cccccccccccc computed" in page
    assert ("none reproduced every number to the last bit and 1 did not. It reached the "
            "same log-likelihood within 0.001 (the same to the last bit), the machines "
            "rounding otherwise.") in page
    # A fit that landed elsewhere is named with its gap, a failed one with its statuses.
    far = _machine_report(gaps=(0.5, 2e-5, -0.5), steps=(False, False, False))
    far["checked"][0]["log_likelihood_gap"] = None
    far["checked"][0]["status"] = ["ok", "fit_failed"]
    page = build_texts.restored_text(dict(study, machine_check=far))[0]
    assert ("none reproduced every number to the last bit and 3 did not. 1 gave no "
            "log-likelihood to compare: n = 100, replication 0 (ok stored, fit_failed here). "
            "1 reached another point (total log-likelihoods more than 0.001 apart): n = 300, "
            "replication 2 (-0.5). 1 of them reached the same log-likelihood within 0.001") \
        in page
    # Both fits ok, but no log-likelihood on one side: said so, not as a failure.
    far["checked"][0]["status"] = ["ok", "ok"]
    page = build_texts.restored_text(dict(study, machine_check=far))[0]
    assert "n = 100, replication 0 (a log-likelihood missing)" in page
    # Every row reproduced.
    same = _machine_report(gaps=(0.0, 0.0), steps=(False, False))
    page = build_texts.restored_text(dict(study, machine_check=same))[0]
    assert page.endswith("seeded draw of the rest): all 2 reproduced every number to the "
                         "last bit.")
    # After two restores the rows before the last may come from several machines.
    twice = {"name": "g", "meta": {"code_sha256": "c" * 64, "restored_from": dict(
        meta["restored_from"], earlier={"rows": 10, "code_sha256": "c" * 64,
                                        "verified_rows": 6})}}
    page = build_texts.restored_text(dict(twice, machine_check=dict(same, restores=2)))[0]
    assert "computed before the last restore (on earlier machines)" in page
    # Restored again since (another restore, or the same count by another build).
    for stale in (_machine_report(rows=30), _machine_report(code_sha256="d" * 64),
                  dict(_machine_report(), restores=2)):
        page = build_texts.restored_text(dict(study, machine_check=stale))[0]
        assert ("The machine check (`python paper_figures/build_check.py g --machine`) is "
                "out of date: it measured the rows from before another restore than the "
                "grid's last one") in page


def test_a_restore_that_recomputed_nothing_checks_no_change_of_build(modules):
    _, build_texts, _ = modules
    # The build changed at a restore with --verify 0: nothing checked that change.
    meta = {"code_sha256": "c" * 64,
            "restored_from": {"rows": 40, "code_sha256": "b" * 64, "verified_rows": 0}}
    page = build_texts.restored_text({"name": "g", "meta": meta})[0]
    assert ("At its one change of build the grid was resumed from its own store or "
            "restored with --verify 0, which recompute no earlier row") in page
    verified = dict(meta, restored_from=dict(meta["restored_from"], verified_rows=6))
    assert "recomputes no earlier row" not in \
        build_texts.restored_text({"name": "g", "meta": verified})[0]


def test_a_loss_s_spread_is_the_median_over_sizes_of_its_coefficient_of_variation(modules):
    build_check, _, _ = modules
    rows = ([{"n": 10, "d2": v} for v in (1.0, 2.0, 3.0)]          # cv 0.5
            + [{"n": 20, "d2": v} for v in (2.0, 2.0, 2.0, None)]   # cv 0, None left out
            + [{"n": 30, "d2": v} for v in (1.0, 1.0, 4.0)]         # cv 0.87
            + [{"n": 40, "d2": v} for v in (5.0, 6.0)])             # too few
    assert build_check.loss_spread(rows, ["d2"]) == {"d2": pytest.approx(0.5)}
