"""A store rebuilt from its exported rows holds the same rows and runs, and resumes."""

import csv
import gzip
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from _study import write_study

import gmoe.simulation.restore as restore_module
from gmoe.simulation import (
    RestoreError,
    ResultStore,
    export_csv,
    load_experiment,
    read_csv_rows,
    read_rows,
    rerun_differences,
    restore_store,
    run_experiment,
    verify_rows,
)
from gmoe.simulation.cli import main
from gmoe.simulation.columns import TIMING_COLUMNS
from gmoe.simulation.lock import WriterLock, store_lock_path
from gmoe.simulation.store import StoreBusyError, StoreError, read_runs


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A finished store of the tiny study (2 sizes x 2 replications) and its CSV export."""
    tmp = tmp_path_factory.mktemp("restore")
    path = write_study(tmp, seed=11, sizes=[60, 90], replications=2)
    experiment = load_experiment(path)
    db = tmp / "grid.sqlite"
    run_experiment(experiment, db, n_jobs=1, progress=False)
    exported = tmp / "grid.csv"
    export_csv(db, exported)
    return experiment, db, exported


def _rewrite(source, target, edit):
    """Copy the CSV ``source`` to ``target`` (gzipped when it ends in .gz), rows edited."""
    with open(source, newline="") as fh:
        reader = csv.DictReader(fh)
        header, rows = list(reader.fieldnames), list(reader)
    header, rows = edit(header, rows)
    opener = gzip.open if str(target).endswith(".gz") else open
    with opener(target, "wt", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return target


def test_a_restored_store_holds_every_row_bit_for_bit_and_its_runs(grid, tmp_path):
    experiment, db, _ = grid
    # Text columns with content a CSV must quote (commas, quotes, a line break, non-ASCII),
    # text that looks like a number, and NULLs beside them.
    source = tmp_path / "source.sqlite"
    source.write_bytes(db.read_bytes())
    with sqlite3.connect(source) as conn:
        conn.execute("UPDATE results SET warnings = ?, error = ?, degenerate_experts = '1' "
                     "WHERE n = 60 AND rep = 0",
                     ('UserWarning: a, "b"\nc | ConvergenceWarning: \u03c4 held', "0.5"))
    exported = tmp_path / "source.csv"
    export_csv(source, exported)
    gz = _rewrite(exported, tmp_path / "grid.csv.gz", lambda h, r: (h, r))
    rows = read_csv_rows(gz, experiment)
    runs = read_runs(source)
    count = restore_store(tmp_path / "back.sqlite", experiment, rows, runs=runs,
                          source={"file": gz.name, "code_sha256": "abc"})
    assert count == len(rows) == 4
    original, _ = read_rows(source)
    restored, meta = read_rows(tmp_path / "back.sqlite")
    assert restored == original  # every column, floats exact, NULLs as NULLs
    # Equal values of equal types (SQLite would turn numeric text into a number).
    assert [{c: type(v) for c, v in r.items()} for r in restored] == \
        [{c: type(v) for c, v in r.items()} for r in original]
    assert restored[0]["error"] == "0.5" and restored[0]["degenerate_experts"] == "1"
    assert "\u03c4 held" in restored[0]["warnings"] and restored[1]["warnings"] is None
    assert isinstance(restored[0]["fitted"], str) and json.loads(restored[0]["fitted"])
    assert [r["wall_seconds"] for r in read_runs(tmp_path / "back.sqlite")] == \
        [r["wall_seconds"] for r in runs]
    assert json.loads(meta["restored_from"]) == {"file": gz.name, "code_sha256": "abc"}


def test_a_restored_store_resumes_only_its_missing_tasks(grid, tmp_path):
    experiment, db, exported = grid
    partial = _rewrite(exported, tmp_path / "part.csv",
                       lambda h, r: (h, [row for row in r if row["rep"] == "0"]))
    back = tmp_path / "back.sqlite"
    restore_store(back, experiment, read_csv_rows(partial, experiment), source={})
    summary = run_experiment(experiment, back, n_jobs=1, progress=False)
    assert summary.tasks_before == 2 and summary.tasks_stored == 2  # replication 1 at both sizes
    ours, _ = read_rows(back)
    theirs, _ = read_rows(db)
    drop = set(TIMING_COLUMNS)
    assert [{k: v for k, v in r.items() if k not in drop} for r in ours] == \
        [{k: v for k, v in r.items() if k not in drop} for r in theirs]


def test_an_earlier_format_without_the_stored_fits_is_read(grid, tmp_path):
    experiment, _, exported = grid
    old = _rewrite(exported, tmp_path / "old.csv",
                   lambda h, r: ([c for c in h if c != "fitted"], r))
    rows = read_csv_rows(old, experiment)
    assert all("fitted" not in row for row in rows)
    restore_store(tmp_path / "old.sqlite", experiment, rows, source={})
    assert all(r["fitted"] is None for r in read_rows(tmp_path / "old.sqlite")[0])


@pytest.mark.parametrize("edit, expected", [
    (lambda h, r: (h + ["extra"], r), r"unknown columns \[extra\]"),
    (lambda h, r: ([c for c in h if c != "status"], r), r"without \[status\]"),
    (lambda h, r: (h, [dict(r[0], n_iter="many"), *r[1:]]),
     r"line 2: column 'n_iter' expected a number \(INTEGER\), got 'many'"),
    (lambda h, r: (h, [dict(r[0], seed_entropy="12"), *r[1:]]), r"line 2: .*got seed 12"),
    (lambda h, r: (h, [dict(r[0], n="61"), *r[1:]]), r"got seed 11, n = 61"),
    (lambda h, r: (h, [dict(r[0], rep="2"), *r[1:]]), r"replication below 2.*replication 2"),
    (lambda h, r: (h, [r[0], r[0], *r[2:]]), r"line 3: .* again"),
])
def test_a_file_that_is_not_the_experiments_rows_is_refused(grid, tmp_path, edit, expected):
    experiment, _, exported = grid
    bad = _rewrite(exported, tmp_path / "bad.csv", edit)
    with pytest.raises(RestoreError, match=expected):
        read_csv_rows(bad, experiment)


def test_rows_exported_under_another_task_definition_are_refused(grid, tmp_path):
    # export_csv writes the store's task definition beside the rows; an edited study
    # file (here max_iter) would otherwise take rows it did not compute.
    experiment, _, exported = grid
    assert json.loads(Path(f"{exported}.task.json").read_text())["task_sha256"] \
        == experiment.task_sha256
    edited = load_experiment(write_study(tmp_path, seed=11, sizes=[60, 90], replications=2,
                                         fit={"max_iter": 9}))
    with pytest.raises(RestoreError, match=r"grid.csv: its rows were computed under another "
                                           r"task definition .*changed: .*max_iter"):
        read_csv_rows(exported, edited)
    assert len(read_csv_rows(exported, experiment)) == 4
    # Gzipped after the export, the rows still find their task definition.
    zipped = tmp_path / "grid.csv.gz"
    zipped.write_bytes(gzip.compress(exported.read_bytes()))
    (tmp_path / "grid.csv.task.json").write_bytes(Path(f"{exported}.task.json").read_bytes())
    with pytest.raises(RestoreError, match="changed: .*max_iter"):
        read_csv_rows(zipped, edited)


def test_rows_of_the_quick_grid_are_named_as_such(grid, tmp_path):
    # The rows of a --quick run, restored as the full grid's: the message says how.
    experiment, _, exported = grid
    quick = experiment.quick_variant()
    n = next(n for n in quick.sizes if n not in experiment.sizes)
    bad = _rewrite(exported, tmp_path / "quick.csv",
                   lambda h, r: (h, [dict(r[0], n=str(n), spawn_key=f"{n},0"), *r[1:]]))
    with pytest.raises(RestoreError, match=fr"n = {n}, .* \(a task of the study's --quick "
                                           r"grid: restore these rows with --quick\)"):
        read_csv_rows(bad, experiment)
    # Not for a row that --quick would refuse too (another seed).
    other = _rewrite(exported, tmp_path / "other.csv", lambda h, r: (
        h, [dict(r[0], n=str(n), spawn_key=f"{n},0", seed_entropy="12"), *r[1:]]))
    with pytest.raises(RestoreError) as info:
        read_csv_rows(other, experiment)
    assert "--quick" not in str(info.value)


def _cut(text):
    return text[:-7]  # inside the last row's last field


@pytest.mark.parametrize("damage, expected", [
    ("short row", r"line 2: expected \d+ fields \(the header's\), got fewer"),
    ("extra field", r"line 2: expected \d+ fields \(the header's\), got more"),
    ("empty rep", r"line 2: expected a value in every row's 'rep', got an empty field"),
    ("empty status", r"line 2: expected a value in every row's 'status'"),
    ("spawn key", r"line 2: .*spawn key '60,1'"),
    ("cut", r"ends inside a row .* cut short"),
    ("cut gz", r"unreadable file"),
    ("not gzip", r"rows.csv.gz: expected a CSV file of result rows .* unreadable file"),
    ("not utf-8", r"unreadable file .*utf-8"),
    ("line of a quoted break", r"line 4: .*got seed 12"),
])
def test_a_damaged_file_is_refused_naming_the_file_and_line(grid, tmp_path, damage,
                                                            expected):
    experiment, _, exported = grid
    text = exported.read_text()
    header, first, *rest = text.splitlines(keepends=True)
    path = tmp_path / ("rows.csv.gz" if "gz" in damage else "rows.csv")
    if damage == "short row":
        text = header + first.rsplit(",", 1)[0] + "\n" + "".join(rest)
    elif damage == "extra field":
        text = header + first.rstrip("\n") + ",9\n" + "".join(rest)
    elif damage in ("empty rep", "empty status", "spawn key"):
        column = {"empty rep": "rep", "empty status": "status",
                  "spawn key": "spawn_key"}[damage]
        value = "60,1" if damage == "spawn key" else ""
        _rewrite(exported, path, lambda h, r: (h, [dict(r[0], **{column: value}), *r[1:]]))
        text = None
    elif damage == "cut":
        text = _cut(text)
    elif damage == "line of a quoted break":
        # Line numbers count the file's lines: a quoted line break takes one.
        _rewrite(exported, path, lambda h, r: (h, [dict(r[0], warnings="a\nb"),
                                                    dict(r[1], seed_entropy="12"), *r[2:]]))
        text = None
    if damage == "cut gz":
        path.write_bytes(gzip.compress(text.encode())[:-10])
    elif damage == "not gzip":
        path.write_text(text)
    elif damage == "not utf-8":
        path.write_bytes(text.encode() + b"\xff\n")
    elif text is not None:
        path.write_text(text)
    with pytest.raises(RestoreError, match=expected):
        read_csv_rows(path, experiment)


def test_a_column_an_older_store_lacked_may_be_missing(grid, tmp_path):
    experiment, _, exported = grid
    old = _rewrite(exported, tmp_path / "old.csv", lambda h, r: (
        [c for c in h if c not in ("convergence_gap", "metric_seconds", "fitted")], r))
    rows = read_csv_rows(old, experiment)
    assert len(rows) == 4 and all("convergence_gap" not in row for row in rows)


def test_restoring_never_merges_into_an_existing_store(grid, tmp_path):
    experiment, db, exported = grid
    target = tmp_path / "there.sqlite"
    target.write_bytes(db.read_bytes())
    with pytest.raises(FileExistsError, match="never merges"):
        restore_store(target, experiment, read_csv_rows(exported, experiment), source={})


def test_a_store_made_while_restoring_is_neither_overwritten_nor_started(grid, tmp_path,
                                                                        monkeypatch):
    # restore used to check that the store did not exist, then os.replace its file there:
    # a store made in between was overwritten. Now the destination's writer lock keeps
    # runs out, and the final hard link refuses a file another program made meanwhile.
    experiment, _, exported = grid
    rows = read_csv_rows(exported, experiment)
    target = tmp_path / "raced.sqlite"
    real_restore = ResultStore.restore
    refused = []

    def restore_while_another_writes(store, *args, **kwargs):
        with pytest.raises(StoreBusyError, match="in use by another run"):
            ResultStore(target, experiment)  # a run started now is refused
        refused.append(True)
        target.write_bytes(b"another program's file")
        return real_restore(store, *args, **kwargs)

    monkeypatch.setattr(ResultStore, "restore", restore_while_another_writes)
    with pytest.raises(FileExistsError, match="appeared while the rows were restored"):
        restore_store(target, experiment, rows, source={})
    assert refused and target.read_bytes() == b"another program's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raced.sqlite", "raced.sqlite.lock"]


def test_a_restore_is_refused_while_a_run_holds_the_destination(grid, tmp_path):
    experiment, _, exported = grid
    target = tmp_path / "busy.sqlite"
    lock = WriterLock(store_lock_path(target))
    lock.acquire(experiment="another")
    try:
        with pytest.raises(StoreBusyError, match=f"{target} is in use by a run \\(pid "):
            restore_store(target, experiment, read_csv_rows(exported, experiment), source={})
    finally:
        lock.release()
    assert not target.exists()


def test_without_hard_links_the_lock_alone_guards_the_final_step(grid, tmp_path,
                                                                 monkeypatch):
    experiment, db, exported = grid

    def no_hard_links(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(restore_module.os, "link", no_hard_links)
    target = tmp_path / "replaced.sqlite"
    assert restore_store(target, experiment, read_csv_rows(exported, experiment),
                         source={}) == 4
    assert read_rows(target)[0] == read_rows(db)[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["replaced.sqlite",
                                                          "replaced.sqlite.lock"]


def test_a_rerun_reproduces_a_stored_row_and_names_a_changed_one(grid):
    experiment, db, _ = grid
    row = read_rows(db)[0][0]
    assert rerun_differences(experiment, row) == []
    changed = dict(row, mean_log_likelihood=np.nextafter(row["mean_log_likelihood"], 0.0),
                   fit_seconds=123.0)  # one unit in the last place counts; a timing never
    assert [c for c, _, _ in rerun_differences(experiment, changed)] == \
        ["mean_log_likelihood"]


def test_a_row_not_reproduced_refuses_the_restore_saying_how_far_its_fit_moved(grid):
    experiment, db, _ = grid
    rows = read_rows(db)[0]
    # The stored fit's log-likelihood a rounding away: the message gives the total gap
    # (n times the mean's) and the way on where only the machine changed.
    moved = [dict(row, mean_log_likelihood=row["mean_log_likelihood"] + 1e-9)
             for row in rows]
    with pytest.raises(RestoreError) as info:
        verify_rows(experiment, moved, 1)
    n = max(row["n"] for row in rows)
    message = str(info.value)
    gap = float(message.split("moved by ")[1].split(")")[0])
    assert gap == pytest.approx(-n * 1e-9, rel=1e-6)
    assert "where only the machine changed, --verify 0 (count=0) goes on" in message
    # A fit that failed on one side: its statuses, not a gap.
    failed = [dict(row, status="fit_failed", mean_log_likelihood=None) for row in rows]
    with pytest.raises(RestoreError, match="the fit's status: fit_failed stored, ok here"):
        verify_rows(experiment, failed, 1)
    # Another column only: no gap to give.
    other = [dict(row, d1=row["d1"] * 2) for row in rows]
    with pytest.raises(RestoreError) as info:
        verify_rows(experiment, other, 1)
    assert "moved by" not in str(info.value) and "(d1: " in str(info.value)
    assert verify_rows(experiment, rows, 1) == [(n, max(r["rep"] for r in rows
                                                       if r["n"] == n))]


def test_a_column_added_since_is_not_compared_where_the_row_predates_it(grid):
    # A grid begun before the store had `fitted` and resumed after it exports rows with
    # and without it: the older rows' empty value is "not recorded", not a difference.
    experiment, db, _ = grid
    row = read_rows(db)[0][0]
    assert row["fitted"] is not None and row["convergence_gap"] is not None
    assert rerun_differences(experiment, dict(row, fitted=None, convergence_gap="")) == []
    # A value that is recorded is still compared, in those columns as in any other.
    assert [c for c, _, _ in rerun_differences(experiment, dict(row, fitted="[0.0]"))] == \
        ["fitted"]


def test_a_failed_restore_leaves_no_store(grid, tmp_path):
    # A half-made store would be resumed as if the grid had not begun.
    experiment, _, exported = grid
    rows = read_csv_rows(exported, experiment)
    broken = [*rows, rows[0]]  # a task twice
    target = tmp_path / "broken.sqlite"
    with pytest.raises(StoreError, match="UNIQUE constraint failed: results.n, results.rep"):
        restore_store(target, experiment, broken, runs=[{"status": "finished"}],
                      source={"file": "x"})
    # Neither the store nor its temporary files; the lock file stays, as every store's
    # does (deleting a lock file lets two processes hold "the" lock: see lock.py).
    assert [p.name for p in tmp_path.iterdir()] == ["broken.sqlite.lock"]


def test_none_an_empty_text_and_nan_are_one_missing_value(grid, monkeypatch):
    # The store keeps NaN and empty text as NULL, a fresh row has NaN: not a difference.
    experiment, db, _ = grid
    row = read_rows(db)[0][0]
    fresh = dict(row, hellinger=float("nan"), error="", tv=None)
    monkeypatch.setattr(restore_module, "run_task", lambda *_: fresh)
    assert rerun_differences(experiment, dict(row, hellinger=None, error=None,
                                              tv=float("nan"))) == []
    assert [c for c, _, _ in rerun_differences(experiment, dict(row, hellinger=0.1))] == \
        ["hellinger", "tv"]
    stored = dict(row, hellinger=None, tv=None)
    assert [c for c, _, _ in rerun_differences(
        experiment, dict(stored, error="a"))] == ["error"]


def test_an_empty_text_is_stored_as_null(grid, tmp_path):
    # An exported CSV cannot tell an empty text from NULL, so the store keeps only NULL.
    experiment, db, _ = grid
    copy = tmp_path / "copy.sqlite"
    copy.write_bytes(db.read_bytes())
    row = read_rows(copy)[0][0]
    with ResultStore(copy, experiment) as store:
        assert store.insert(dict(row, n=10**6, error="", warnings=""))
    added = next(r for r in read_rows(copy)[0] if r["n"] == 10**6)
    assert added["error"] is None and added["warnings"] is None


def test_the_command_line_restores_an_exported_grid_and_resumes_it(grid, tmp_path, capsys):
    experiment, db, exported = grid
    partial = _rewrite(exported, tmp_path / "part.csv.gz",
                       lambda h, r: (h, [row for row in r if row["rep"] == "0"]))
    back = tmp_path / "back.sqlite"
    argv = ["restore", str(experiment.path), "--db", str(back), "--csv", str(partial)]
    assert main([*argv, "--verify", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"study: 2 rows in {partial}; re-running 1 of them"
    assert out[1] == "  n = 90, replication 0: reproduced"
    assert out[2] == f"restored 2 rows into {back}; `gmoe-sim run` resumes it."
    # A second restore never merges into the store it made.
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gmoe-sim: error: ") and "exists: restore writes a new store" in err
    assert main(["run", str(experiment.path), "--db", str(back), "--n-jobs", "1",
                 "--no-progress", "--out", str(tmp_path / "plots")]) == 0
    assert "resuming" in capsys.readouterr().out
    assert len(read_rows(back)[0]) == 4


@pytest.mark.parametrize("how, expected", [
    ("missing", "No CSV file at"),
    ("foreign", "expected the columns of experiment 'study'"),
    ("verify", "--verify: expected a number of rows >= 0, got -1"),
])
def test_the_command_line_refuses_what_it_cannot_restore(grid, tmp_path, capsys, how,
                                                         expected):
    experiment, _, exported = grid
    csv_path = tmp_path / "rows.csv"
    if how == "foreign":
        csv_path.write_text("a,b\n1,2\n")
    argv = ["restore", str(experiment.path), "--db", str(tmp_path / "x.sqlite"),
            "--csv", str(csv_path), *(["--verify", "-1"] if how == "verify" else [])]
    if how == "verify":
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
    else:
        assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert expected in err
    if how != "verify":  # argparse prints its usage first
        assert err.startswith("gmoe-sim: error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "x.sqlite").exists()
