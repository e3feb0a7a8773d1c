"""Store safety: one writer at a time, killed runs, clear errors, older stores, timings."""

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gmoe.simulation import (
    ResultStore,
    StoreMismatchError,
    fitted_measure,
    load_experiment,
    read_meta,
    read_rows,
    run_experiment,
)
from gmoe.simulation.cli import builtin_studies_dir, main, search_dirs
from gmoe.simulation.lock import WriterLock, store_lock_path
from gmoe.simulation.store import (
    SCHEMA_VERSION,
    StoreBusyError,
    StoreError,
    code_sha256,
    read_runs,
)

# Small and quick: one start, the Voronoi loss and the Hellinger distance on 30 points.
MINI = """\
description = "store safety test"
seed = SEED

[truth]
gating = "softmax"
gate_coef = [[25.0], [0.0]]
gate_intercept = [-8.0, 0.0]
expert_coef = [[-20.0], [20.0]]
expert_intercept = [15.0, -5.0]
expert_var = [0.09, 0.16]

[design]
kind = "uniform"

[fit]
n_experts = 2
tol = 1e-6
max_iter = 60

[start]
kind = "near_truth"
n_starts = 1

[sizes]
n = SIZES
replications = REPS

[metrics]
voronoi = ["exact"]
hellinger = true

[metrics.evaluation]
kind = "uniform"
n = 30

[quick]
n = [60, 100]
replications = 2
"""


def mini(directory, name="mini", seed=7, sizes="[60, 100]", reps=2):
    path = directory / f"{name}.toml"
    path.write_text(MINI.replace("SEED", str(seed)).replace("SIZES", sizes)
                    .replace("REPS", str(reps)))
    return path


def one_error_line(err):
    """The CLI's error output: exactly one line, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gmoe-sim: error: "), err
    return lines[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A finished store of MINI (2 sizes x 2 replications)."""
    tmp = tmp_path_factory.mktemp("store")
    path = mini(tmp)
    run_experiment(load_experiment(path), tmp / "mini.sqlite", n_jobs=1, progress=False)
    return path, tmp / "mini.sqlite"


# ------------------------------------------------------------------ one writer at a time
# A racer imports gmoe once (two seconds of imports would dominate every trial), then forks
# one fresh process per trial: the child waits for the start signal, runs `gmoe-sim run`
# and exits with its status, which the racer reports. Two racers, two processes per trial.
RACER = """
import json, os, sys, time
from pathlib import Path
from gmoe.simulation.cli import main
for line in sys.stdin:
    trial = json.loads(line)
    pid = os.fork()
    if pid == 0:
        for fd, name in ((1, "stdout"), (2, "stderr")):
            os.dup2(os.open(trial[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        Path(trial["ready"]).touch()
        while not Path(trial["go"]).exists():
            time.sleep(0.0005)
        try:
            code = main(trial["argv"])
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def _race(racers, tmp):
    """Start runs of two task definitions on one new store at the same moment."""
    db = tmp / "shared.sqlite"
    go = tmp / "go"
    # Different seeds (the task definition) and sizes: a row tells which run wrote it.
    specs = [mini(tmp, "first", seed=7, sizes="[60]", reps=2),
             mini(tmp, "second", seed=8, sizes="[70]", reps=2)]
    for i, (racer, spec) in enumerate(zip(racers, specs, strict=True)):
        trial = {"stdout": str(tmp / f"out{i}.txt"), "stderr": str(tmp / f"err{i}.txt"),
                 "ready": str(tmp / f"ready{i}"), "go": str(go),
                 "argv": ["run", str(spec), "--db", str(db), "--out", str(tmp / f"plots{i}"),
                          "--n-jobs", "1", "--no-progress"]}
        racer.stdin.write(json.dumps(trial) + "\n")
        racer.stdin.flush()
    deadline = time.monotonic() + 120
    while not all((tmp / f"ready{i}").exists() for i in range(2)):
        assert all(r.poll() is None for r in racers), "a racer died"
        assert time.monotonic() < deadline, "the racers did not start in 120 s"
        time.sleep(0.005)
    go.touch()
    codes = [int(r.stdout.readline()) for r in racers]
    errors = [(tmp / f"err{i}.txt").read_text() for i in range(2)]
    return db, specs, codes, errors


@pytest.mark.skipif(not hasattr(os, "fork"), reason="the racers fork (POSIX)")
@pytest.mark.parametrize("trials", [3, pytest.param(20, marks=pytest.mark.slow)])
def test_two_definitions_started_together_on_a_new_store(tmp_path, trials):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    racers = [subprocess.Popen([sys.executable, "-c", RACER], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                               cwd=tmp_path, env=env) for _ in range(2)]
    try:
        for trial in range(trials):
            tmp = tmp_path / f"trial{trial}"
            tmp.mkdir()
            db, specs, codes, errors = _race(racers, tmp)
            assert sorted(codes) == [0, 2], (codes, errors)
            winner = codes.index(0)
            assert errors[winner] == ""
            line = one_error_line(errors[1 - winner])
            assert str(db) in line
            # Refused because the store is in use, or (if the winner was already done)
            # because it holds the other definition: both say so on one line.
            assert "in use by another run" in line or "another task definition" in line
            exp = load_experiment(specs[winner])
            rows, meta = read_rows(db)
            assert meta["task_sha256"] == exp.task_sha256
            assert meta["experiment_name"] == exp.name
            assert sorted((r["n"], r["rep"]) for r in rows) == exp.tasks()
            assert {r["seed_entropy"] for r in rows} == {str(exp.seed)}
            assert len(read_runs(db)) == 1  # the refused run recorded nothing
    finally:
        for racer in racers:
            racer.stdin.close()
            racer.wait(timeout=60)


SLOW_RUN = """
import sys, time
import gmoe.simulation.runner as runner
from gmoe.simulation.cli import main

def slow(*args, _task=runner.run_task):
    time.sleep(0.5)
    return _task(*args)

runner.run_task = slow
sys.exit(main(sys.argv[1:]))
"""


@contextlib.contextmanager
def running(tmp, spec, db):
    """A `gmoe-sim run` (tasks slowed down) that has stored one row; SIGKILLed on exit."""
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_RUN, "run", str(spec), "--db", str(db), "--n-jobs", "1",
         "--no-progress", "--out", str(tmp / "out")], stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, cwd=tmp, env={**os.environ, "PYTHONPATH": os.pathsep.join(
            sys.path)})
    deadline = time.monotonic() + 120
    try:
        while not db.exists() or not read_rows_quietly(db):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run stored nothing in 120 s"
            time.sleep(0.02)
        yield proc
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()


def read_rows_quietly(db):
    try:
        return read_rows(db)[0]
    except StoreError:
        return []  # tables not created yet


def test_a_store_in_use_is_refused_and_a_killed_run_is_marked_interrupted(tmp_path, capsys):
    spec = mini(tmp_path, sizes="[60, 70, 80, 90, 100]", reps=4)
    db = tmp_path / "busy.sqlite"
    with running(tmp_path, spec, db) as proc:
        # The same definition too: two runs would compute the same tasks twice.
        assert main(["run", str(spec), "--db", str(db), "--no-progress"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{db} is in use by another run (experiment 'mini', pid {proc.pid}" in line
        assert "--db PATH" in line
        with pytest.raises(StoreBusyError):
            ResultStore(db, load_experiment(spec))
        # Readers need no lock: report and export work during the run.
        assert main(["report", str(spec), "--db", str(db), "--out",
                     str(tmp_path / "plots")]) == 0
        assert "not stored yet" in capsys.readouterr().out
        assert [r["status"] for r in read_runs(db)] == ["running"]
    killed_rows = len(read_rows(db)[0])
    assert 1 <= killed_rows < 20
    [record] = read_runs(db)
    assert record["status"] == "running" and record["finished_at"] is None
    assert record["tasks_stored"] == killed_rows  # counted as the rows were stored
    # ... and timed: the run's wall time to its last stored row.
    assert 0 < record["wall_seconds"] < time.time() - record["started_at"]
    # The process is gone: the next writer takes the lock and marks its record.
    with ResultStore(db, load_experiment(spec)) as reopened:
        assert reopened.interrupted_runs == 1
    [record] = read_runs(db)
    assert record["status"] == "interrupted" and record["tasks_stored"] == killed_rows
    assert main(["run", str(spec), "--db", str(db), "--no-progress", "--n-jobs", "1",
                 "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert f"resuming {db}: {killed_rows} of 20 tasks already stored" in out
    assert [r["status"] for r in read_runs(db)] == ["interrupted", "finished"]


def test_a_closed_store_is_free_again(tmp_path):
    exp = load_experiment(mini(tmp_path))
    db = tmp_path / "free.sqlite"
    first = ResultStore(db, exp)
    with pytest.raises(StoreBusyError, match="in use by another run"):
        ResultStore(db, exp)
    first.close()
    with ResultStore(db, exp) as second:
        assert second.interrupted_runs == 0 and second.count() == 0
    assert (tmp_path / "free.sqlite.lock").exists()  # kept: deleting it would be a race


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges")
def test_every_path_to_one_store_takes_one_lock(tmp_path):
    # Locking the path as typed let a run on link.sqlite write s.sqlite beside a live run
    # on s.sqlite, and mark that live run interrupted.
    exp = load_experiment(mini(tmp_path))
    db = tmp_path / "s.sqlite"
    (tmp_path / "link.sqlite").symlink_to("s.sqlite")
    (tmp_path / "dir-link").symlink_to(tmp_path, target_is_directory=True)
    with ResultStore(db, exp) as first:
        first.begin_run(n_jobs=1, tasks_planned=4)
        for other in (tmp_path / "link.sqlite", tmp_path / "dir-link" / "s.sqlite"):
            with pytest.raises(StoreBusyError, match="in use by another run"):
                ResultStore(other, exp)
        assert [r["status"] for r in read_runs(db)] == ["running"]  # not marked
    assert not (tmp_path / "link.sqlite.lock").exists()
    # Through the link, the store is the same file, resumed, its lock the same.
    with ResultStore(tmp_path / "link.sqlite", exp) as second:
        assert second.interrupted_runs == 1  # the first never recorded its end
        with pytest.raises(StoreBusyError):
            ResultStore(db, exp)
    # --force-new through the link moves the store aside, and the link leads to the new one.
    other = load_experiment(mini(tmp_path, "other", seed=8))
    with ResultStore(tmp_path / "link.sqlite", other, force_new=True) as third:
        assert third.moved_to.parent == tmp_path and third.moved_to.name.startswith(
            "s.sqlite.replaced-")
    assert (tmp_path / "link.sqlite").is_symlink()
    assert read_meta(db)["task_sha256"] == other.task_sha256


# ------------------------------------------------------------------------------ errors
@contextlib.contextmanager
def read_only(path):
    """Make a directory refuse new files, or a file refuse writes; skip when impossible."""

    def writable():
        try:
            if path.is_dir():
                (path / ".probe").touch()
                (path / ".probe").unlink()
            else:
                path.open("ab").close()
        except OSError:
            return False
        return True

    mode = path.stat().st_mode & 0o777
    path.chmod(0o555 if path.is_dir() else 0o444)
    immutable = False
    if writable() and shutil.which("chattr"):
        # Root ignores permission bits; an immutable file or directory stops it too.
        immutable = subprocess.run(["chattr", "+i", str(path)],
                                   capture_output=True).returncode == 0
    try:
        if writable():
            pytest.skip("cannot make a read-only file or directory as this user here")
        yield path
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        path.chmod(mode)


def test_run_into_a_read_only_store_directory(tmp_path, capsys):
    spec = mini(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    with read_only(locked):
        assert main(["run", str(spec), "--db", str(locked / "s.sqlite"), "--n-jobs", "1",
                     "--no-progress", "--out", str(tmp_path / "plots")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write the result store in {locked}" in line and "--db PATH" in line
        # And in a new directory below it.
        assert main(["run", str(spec), "--db", str(locked / "sub" / "s.sqlite"),
                     "--no-progress"]) == 2
        assert f"in {locked / 'sub'}" in one_error_line(capsys.readouterr().err)
        # The API says the same when it is used directly.
        with pytest.raises(StoreError, match="lock file of the result store.*directory"):
            ResultStore(locked / "s.sqlite", load_experiment(spec))
    assert list(locked.iterdir()) == []


def test_run_on_a_read_only_store_file(tmp_path, store, capsys):
    spec, source = store
    db = tmp_path / "frozen.sqlite"
    shutil.copy(source, db)
    with read_only(db):
        assert main(["run", str(spec), "--db", str(db), "--n-jobs", "1", "--no-progress",
                     "--out", str(tmp_path / "plots")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write the result store {db} (attempt to write a readonly " in line
        # Reading it is fine.
        assert main(["export", str(spec), "--db", str(db), "--csv",
                     str(tmp_path / "rows.csv")]) == 0
    assert db.read_bytes() == source.read_bytes()


def test_run_with_a_read_only_out_is_refused_before_any_task(tmp_path, capsys):
    spec = mini(tmp_path)
    plots = tmp_path / "plots"
    plots.mkdir()
    with read_only(plots):
        assert main(["run", str(spec), "--db", str(tmp_path / "s.sqlite"), "--n-jobs", "1",
                     "--no-progress", "--out", str(plots)]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write the plots in {plots}" in line and "--out DIR" in line
    assert not (tmp_path / "s.sqlite").exists()  # nothing ran


def test_report_and_export_from_a_read_only_directory(tmp_path, store, capsys):
    spec, source = store
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    shutil.copy(source, shelf / "mini.sqlite")
    with read_only(shelf):
        db = str(shelf / "mini.sqlite")
        # Reading needs no write access ...
        assert main(["report", str(spec), "--db", db, "--out", str(tmp_path / "p")]) == 0
        assert "slope d1:" in capsys.readouterr().out
        assert main(["export", str(spec), "--db", db, "--csv", str(tmp_path / "r.csv")]) == 0
        assert "wrote 4 rows" in capsys.readouterr().out
        # ... but the default outputs sit beside the store.
        assert main(["report", str(spec), "--db", db]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write the plots in {shelf / 'mini'}" in line and "--out DIR" in line
        assert main(["export", str(spec), "--db", db]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"cannot write the CSV file in {shelf}" in line and "--csv PATH" in line


# A process killed inside a commit, after SQLite wrote changed pages to the store itself
# (a one-page cache spills them): the store and its hot journal, as a killed run leaves them.
KILLED_IN_A_COMMIT = """
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("PRAGMA cache_size = 1")
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE results SET d1 = -1.0, error = hex(randomblob(300))")
conn.execute("INSERT INTO runs (status) VALUES ('half-written')")
os.kill(os.getpid(), signal.SIGKILL)
"""


def _killed_in_a_commit(source, db):
    shutil.copy(source, db)
    proc = subprocess.run([sys.executable, "-c", KILLED_IN_A_COMMIT, str(db)])
    assert proc.returncode == -signal.SIGKILL
    journal = db.with_name(db.name + "-journal")
    assert journal.stat().st_size > 0
    return journal


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_store_left_mid_commit_is_rolled_back_by_its_reader(tmp_path, store, capsys):
    # A read-only connection cannot undo a hot journal ("attempt to write a readonly
    # database"): report and export failed until a run opened the store.
    spec, source = store
    db = tmp_path / "hot.sqlite"
    journal = _killed_in_a_commit(source, db)
    assert main(["export", str(spec), "--db", str(db), "--csv", str(tmp_path / "r.csv")]) == 0
    assert not journal.exists()
    # Rolled back to the last complete commit: every committed row, nothing half-written.
    assert read_rows(db)[0] == read_rows(source)[0]
    assert read_runs(db) == read_runs(source)
    assert main(["report", str(spec), "--db", str(db), "--out", str(tmp_path / "p")]) == 0


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_store_left_mid_commit_that_cannot_be_rolled_back_here(tmp_path, store, capsys):
    spec, source = store
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    db = shelf / "hot.sqlite"
    journal = _killed_in_a_commit(source, db)
    with read_only(shelf):
        assert main(["report", str(spec), "--db", str(db), "--out", str(tmp_path / "p")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert f"{db} holds the unfinished commit of a run that was killed" in line
        assert "hot.sqlite-journal" in line and "run `gmoe-sim run` on the store again" in line
        assert journal.exists()  # left as it was
    # A run holds the store (it rolls the commit back as it opens it): read again later.
    lock = WriterLock(store_lock_path(db))
    lock.acquire(experiment="mini")
    try:
        assert main(["export", str(spec), "--db", str(db), "--csv", str(tmp_path / "r.csv")]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert "unfinished commit" in line and "read it again in a moment" in line
        assert journal.exists()
    finally:
        lock.release()
    assert read_rows(db)[0] == read_rows(source)[0]  # the lock free: rolled back now
    assert not journal.exists()


def _damage(source, target, how):
    data = source.read_bytes()
    if how == "truncated":
        data = data[:len(data) // 2]
    elif how == "emptied":
        data = b""
    elif how == "corrupted":  # the schema page overwritten past the file header
        rng = np.random.default_rng(0)
        data = data[:100] + rng.bytes(2000) + data[2100:]
    elif how == "not sqlite":
        data = b"n,rep\n60,0\n" * 100
    target.write_bytes(data)
    return target


@pytest.mark.parametrize("how", ["truncated", "emptied", "corrupted", "not sqlite"])
@pytest.mark.parametrize("command", ["report", "export"])
def test_reading_a_damaged_store(tmp_path, store, capsys, how, command):
    spec, source = store
    db = _damage(source, tmp_path / "bad.sqlite", how)
    assert main([command, str(spec), "--db", str(db)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(db) in line
    assert "truncated" in line and ("corrupted" in line or "empty" in line), line
    for read in (read_rows, read_meta):
        with pytest.raises(StoreError):
            read(db)


@pytest.mark.parametrize("how", ["truncated", "corrupted", "not sqlite"])
def test_running_on_a_damaged_store(tmp_path, store, capsys, how):
    spec, source = store
    db = _damage(source, tmp_path / "bad.sqlite", how)
    args = ["run", str(spec), "--db", str(db), "--n-jobs", "1", "--no-progress",
            "--out", str(tmp_path / "plots")]
    assert main(args) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(db) in line and "truncated, corrupted" in line and "--force-new" in line
    # --force-new keeps the damaged file aside and starts afresh.
    assert main([*args, "--force-new"]) == 0
    assert "moved the previous store" in capsys.readouterr().out
    assert len(read_rows(db)[0]) == 4
    [aside] = tmp_path.glob("bad.sqlite.replaced-*")
    assert aside.read_bytes() == _damage(source, tmp_path / "again", how).read_bytes()


def test_an_empty_file_becomes_a_store(tmp_path, capsys):
    spec = mini(tmp_path)
    db = tmp_path / "empty.sqlite"
    db.touch()  # nothing to protect: a run starts the store in it
    assert main(["run", str(spec), "--db", str(db), "--n-jobs", "1", "--no-progress",
                 "--out", str(tmp_path / "plots")]) == 0
    assert len(read_rows(db)[0]) == 4


@pytest.mark.parametrize("command", ["report", "export"])
def test_reading_a_missing_store(tmp_path, capsys, command):
    spec = mini(tmp_path)
    assert main([command, str(spec), "--db", str(tmp_path / "none.sqlite")]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"No result store at {tmp_path / 'none.sqlite'}; run the experiment first." in line


def test_another_sqlite_file_is_not_a_store(tmp_path, store, capsys):
    spec, _ = store
    db = tmp_path / "other.sqlite"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE things (x)")
    conn.close()
    assert main(["report", str(spec), "--db", str(db)]) == 2
    assert "not a gmoe result store" in one_error_line(capsys.readouterr().err)
    assert main(["run", str(spec), "--db", str(db), "--no-progress"]) == 2
    assert "not a gmoe result store" in one_error_line(capsys.readouterr().err)


# ---------------------------------------------------------------------- store formats
def _older_store(source, db, column, version):
    """A copy of ``source`` as an older gmoe wrote it: without ``column``, at ``version``."""
    shutil.copy(source, db)
    with sqlite3.connect(db) as conn:
        conn.execute(f"ALTER TABLE results DROP COLUMN {column}")
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (version,))
    conn.close()
    return db


def test_a_format_1_store_is_read_and_resumed(tmp_path, store, capsys):
    spec, source = store
    # What gmoe wrote before metric_seconds existed.
    db = _older_store(source, tmp_path / "old.sqlite", "metric_seconds", "1")
    old_rows, _ = read_rows(db)
    assert len(old_rows) == 4 and "metric_seconds" not in old_rows[0]
    assert main(["report", str(spec), "--db", str(db), "--out", str(tmp_path / "p")]) == 0
    assert "slope d1:" in capsys.readouterr().out
    # A grown grid resumes it: the column is added, empty in the old rows.
    grown = load_experiment(mini(tmp_path, sizes="[60, 100, 140]"))
    logs = []
    summary = run_experiment(grown, db, n_jobs=1, progress=False, log=logs.append)
    assert summary.tasks_before == 4 and summary.tasks_stored == 2
    assert any("older gmoe: added the column(s) metric_seconds" in m for m in logs)
    rows, meta = read_rows(db)
    assert meta["schema_version"] == str(SCHEMA_VERSION)
    assert [r["metric_seconds"] is None for r in rows] == [True] * 4 + [False] * 2
    assert [r["d1"] for r in rows[:4]] == [r["d1"] for r in old_rows]


def test_a_format_2_store_gains_the_stored_fits_on_resume(tmp_path, store):
    # Format 2 had no fitted column: its rows keep no fit (fitted_measure gives None), the
    # rows a resumed run adds have theirs.
    _, source = store
    db = _older_store(source, tmp_path / "v2.sqlite", "fitted", "2")
    grown = load_experiment(mini(tmp_path, sizes="[60, 100, 140]"))
    logs = []
    run_experiment(grown, db, n_jobs=1, progress=False, log=logs.append)
    assert any("older gmoe: added the column(s) fitted" in m for m in logs)
    rows, meta = read_rows(db)
    assert meta["schema_version"] == str(SCHEMA_VERSION) == "3"
    assert [fitted_measure(grown, r) is None for r in rows] == [True] * 4 + [False] * 2


def test_each_run_records_its_build_and_older_run_records_gain_the_column(tmp_path, store):
    # The store's meta holds the latest build only; a run records the build that computed
    # its rows. Runs recorded before that was kept stay NULL.
    _, source = store
    db = tmp_path / "runs.sqlite"
    db.write_bytes(source.read_bytes())
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE runs DROP COLUMN code_sha256")
    grown = load_experiment(mini(tmp_path, sizes="[60, 100, 140]"))
    run_experiment(grown, db, n_jobs=1, progress=False)
    runs = read_runs(db)
    assert [(r["tasks_stored"], r["code_sha256"]) for r in runs] == [(4, None),
                                                                     (2, code_sha256())]


def test_a_store_of_a_later_format_is_refused(tmp_path, store, capsys):
    spec, source = store
    db = tmp_path / "new.sqlite"
    shutil.copy(source, db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'",
                     (str(SCHEMA_VERSION + 1),))
    conn.close()
    assert main(["report", str(spec), "--db", str(db)]) == 2
    assert "written by a newer gmoe" in one_error_line(capsys.readouterr().err)
    with pytest.raises(StoreMismatchError, match="newer gmoe"):
        ResultStore(db, load_experiment(spec))
    for read in (read_rows, read_meta):
        with pytest.raises(StoreError, match="written by a newer gmoe"):
            read(db)
    # A later format may lay its rows out otherwise: the format is checked before them.
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE results RENAME COLUMN n TO sample_size")
    conn.close()
    for read in (read_rows, read_meta):
        with pytest.raises(StoreError, match="written by a newer gmoe"):
            read(db)


def test_read_meta_is_the_meta_table_read_rows_returns(tmp_path, store):
    _, db = store
    meta = read_meta(db)
    assert meta == read_rows(db)[1]
    assert {"columns", "task_sha256", "code_sha256"} <= set(meta)
    with pytest.raises(FileNotFoundError, match="No result store"):
        read_meta(tmp_path / "none.sqlite")


def test_a_stored_task_is_kept_and_a_broken_row_raises(tmp_path, store):
    # A task stored twice keeps its first row; a row the store cannot hold (no status)
    # raises rather than being dropped without a word.
    path, db = store
    copy = tmp_path / "copy.sqlite"
    shutil.copy(db, copy)
    rows = read_rows(copy)[0]
    with ResultStore(copy, load_experiment(path)) as result_store:
        assert result_store.insert(dict(rows[0], mean_log_likelihood=0.0)) is False
        with pytest.raises(StoreError, match="NOT NULL constraint failed: results.status"):
            result_store.insert(dict(rows[0], n=10**6, status=None))
        assert result_store.count() == len(rows)
    assert read_rows(copy)[0] == rows


# ----------------------------------------------------------------------- run summary
def test_the_run_summary_says_where_the_time_went(tmp_path, capsys):
    spec = mini(tmp_path, sizes="[60, 100, 140]")
    db = tmp_path / "t.sqlite"
    assert main(["run", str(spec), "--db", str(db), "--n-jobs", "1", "--no-progress",
                 "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    rows, _ = read_rows(db)
    for row in rows:
        assert 0 < row["metric_seconds"] and 0 < row["fit_seconds"]
        assert row["fit_seconds"] + row["metric_seconds"] <= row["task_seconds"]

    def shown(seconds):
        return f"{seconds:.3f} s"

    fit = np.median([r["fit_seconds"] for r in rows])
    metrics = np.median([r["metric_seconds"] for r in rows])
    task = np.median([r["task_seconds"] for r in rows])
    assert (f"time per task (median of 6): fit {shown(fit)}, metrics {shown(metrics)}, "
            f"whole task {shown(task)}") in out
    share = 100 * sum(r["fit_seconds"] for r in rows) / sum(r["task_seconds"] for r in rows)
    assert f"fits {share:.0f}%" in out
    by_n = {n: np.median([r["fit_seconds"] for r in rows if r["n"] == n])
            for n in (60, 100, 140)}
    assert f"median by n: n=60: fit {shown(by_n[60])}" in out
    assert f"n=140: fit {shown(by_n[140])}" in out


# ---------------------------------------------------------------- studies and variants
def test_report_and_export_find_the_quick_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "simulations").mkdir()
    mini(tmp_path / "simulations", sizes="[60, 100, 140, 180]", reps=3)
    assert main(["run", "mini", "--quick", "--n-jobs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    # No --quick: the only store is the quick one, reported on its own grid.
    assert main(["report", "mini"]) == 0
    out = capsys.readouterr().out
    assert "mini (quick)" in out and "results/mini-quick.sqlite" in out
    assert "4 tasks over 2 sample sizes" in out and "not stored yet" not in out
    assert main(["export", "mini"]) == 0
    out = capsys.readouterr().out.strip()
    assert out.startswith("wrote 4 rows to ") and out.endswith("results/mini-quick.csv")
    # A store named by --db is reported on the grid of the run that wrote it.
    shutil.copy("results/mini-quick.sqlite", "copy.sqlite")
    assert main(["report", "mini", "--db", "copy.sqlite", "--out", "p"]) == 0
    out = capsys.readouterr().out
    assert "mini (quick)" in out and "not stored yet" not in out


def test_built_in_studies_are_found_in_a_checkout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./simulations here
    built_in = builtin_studies_dir()
    assert search_dirs() == [built_in]
    names = sorted(p.stem for p in built_in.glob("*.toml"))
    repository = Path(__file__).resolve().parent.parent / "simulations"
    assert names == sorted(p.stem for p in repository.glob("*.toml"))
    assert "softmax-exact" in names
