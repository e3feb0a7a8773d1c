"""The runner, the SQLite store, resume after a kill, a growing grid and the CLI."""

import csv
import dataclasses
import os
import pickle
import signal
import sqlite3
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest
from _study import DROP, write_study

import gmoe.simulation.tasks as tasks_module
from gmoe.simulation import (
    ExperimentError,
    ResultStore,
    StoreMismatchError,
    export_csv,
    fitted_measure,
    load_experiment,
    read_rows,
    run_experiment,
    run_task,
    task_metrics,
)
from gmoe.simulation.cli import main
from gmoe.simulation.columns import TIMING_COLUMNS
from gmoe.simulation.store import read_runs

SIZES = [60, 90, 130, 200]
REPS = 3
#: The fits' tol: ``[fit] tol``'s default, which the fixture study does not set.
TINY_TOL = 1e-4


def tiny(tmp_path, name="tiny.toml", **overrides):
    """The fixture study as this module runs it: seed 7, two near-truth starts per task (the
    best is kept), SIZES x REPS tasks; ``overrides`` as in :func:`_study.study_text`."""
    settings = dict(seed=7, n_starts=2, sizes=SIZES, replications=REPS)
    return write_study(tmp_path, name, **{**settings, **overrides})


def comparable(rows):
    """Rows without the columns that vary between runs (timings, process id)."""
    return [{k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny experiment run once, in process, by one worker."""
    tmp = tmp_path_factory.mktemp("reference")
    exp = load_experiment(tiny(tmp))
    summary = run_experiment(exp, tmp / "ref.sqlite", n_jobs=1, progress=False)
    assert summary.tasks_stored == len(exp.tasks()) == 12
    rows, meta = read_rows(tmp / "ref.sqlite")
    return rows, meta


def test_rows_are_complete(reference):
    rows, meta = reference
    assert [(r["n"], r["rep"]) for r in rows] == [(n, r) for n in (60, 90, 130, 200)
                                                  for r in range(3)]
    for row in rows:
        assert row["status"] == "ok", row["error"]
        assert row["seed_entropy"] == "7" and row["spawn_key"] == f"{row['n']},{row['rep']}"
        assert row["n_starts"] == 2 and row["n_iter"] >= 1
        # The stopping rule's final gap is recorded; a converged fit met the study's tol.
        assert row["convergence_gap"] >= 0
        assert not row["converged"] or row["convergence_gap"] <= TINY_TOL
        assert np.isfinite(row["mean_log_likelihood"]) and row["fit_seconds"] > 0
        assert 0 <= row["hellinger"] <= 1 and row["d1"] >= 0
        assert row["pe_expert_var_1"] >= 0
    assert len({r["mean_log_likelihood"] for r in rows}) == len(rows)  # distinct data
    assert meta["experiment_name"] == "tiny" and len(meta["file_sha256"]) == 64


def _recomputed_metrics(exp, row):
    """Every metric column of ``row`` computed again from its stored fit."""
    values, notes = task_metrics(exp, fitted_measure(exp, row),
                                 tasks_module.make_evaluation_design(exp))
    assert not notes
    return {c: None if np.isnan(values[c]) else values[c] for c in exp.metric_columns()}


def test_every_metric_is_recomputed_from_the_stored_fit(tmp_path, reference):
    # The stored parameters are the fit's, to the bit: the metrics follow exactly, and a
    # metric added later needs no refit.
    rows, _ = reference
    exp = load_experiment(tiny(tmp_path))
    for row in rows:
        assert _recomputed_metrics(exp, row) == {c: row[c] for c in exp.metric_columns()}
    # The stored fit is the best start's, refitted alone.
    X, y, streams = tasks_module.task_data(exp, 130, 2)
    best = max((est for est, _, _ in tasks_module.fit_near_truth_starts(exp, X, y, streams,
                                                                         130)),
               key=lambda est: est.lower_bound_)
    stored = next(r for r in rows if (r["n"], r["rep"]) == (130, 2))
    assert fitted_measure(exp, stored) == best.mixing_measure_


def test_a_malformed_stored_fit_is_refused_by_name(tmp_path, reference):
    exp = load_experiment(tiny(tmp_path))
    row = dict(reference[0][0])
    for missing in (None, "", float("nan")):
        assert fitted_measure(exp, {**row, "fitted": missing}) is None
    prefix = (r"row \(60, 0\): its 'fitted' value must be a JSON list of the 10 parameters "
              r"of a 2-expert softmax fit; got ")
    for bad, why in (("[1.0, 2.0]", r"'\[1.0, 2.0\]' \(2 values\)"),
                     ("not json", r"'not json' \(not JSON\)"),
                     ('{"a": 1}', r"'\{\"a\": 1\}' \(not a list of numbers\)"),
                     ('["1", 2]', r".* \(not a list of numbers\)"),
                     ("[" + ", ".join(["1.0"] * 40) + "]", r"'\[1.0, .*\.\.\.' \(40 values\)"),
                     ("[0, 0, 0, 0, 0, 0, 0, 0, -1, 1]", r".*expert_var\[0\]=-1.0\)")):
        with pytest.raises(ValueError, match=prefix + why):
            fitted_measure(exp, {**row, "fitted": bad})


def test_one_and_two_workers_store_identical_numbers(tmp_path, reference):
    exp = load_experiment(tiny(tmp_path))
    summary = run_experiment(exp, tmp_path / "two.sqlite", n_jobs=2, progress=False)
    assert summary.n_jobs == 2 and summary.tasks_stored == 12
    rows, _ = read_rows(tmp_path / "two.sqlite")
    assert comparable(rows) == comparable(reference[0])
    assert os.getpid() not in {r["worker_pid"] for r in rows}  # ran in worker processes


def test_the_summary_names_a_callers_joblib_backend(tmp_path, reference):
    from joblib import parallel_config

    exp = load_experiment(tiny(tmp_path))
    with parallel_config(backend="threading"):
        summary = run_experiment(exp, tmp_path / "threads.sqlite", n_jobs=2, progress=False)
    assert summary.backend == "threading"
    rows, _ = read_rows(tmp_path / "threads.sqlite")
    assert comparable(rows) == comparable(reference[0])


def test_run_task_is_deterministic(tmp_path, reference):
    exp = load_experiment(tiny(tmp_path))
    row = run_task(exp, 90, 1)
    row = {k: None if isinstance(v, float) and np.isnan(v) else v for k, v in row.items()}
    stored = next(r for r in reference[0] if (r["n"], r["rep"]) == (90, 1))
    assert comparable([row]) == comparable([stored])


SLOW_CLI = """
import sys, time
import gmoe.simulation.runner as runner
from gmoe.simulation.cli import main

def slow(*args, _task=runner.run_task):
    time.sleep(0.1)
    return _task(*args)

runner.run_task = slow
sys.exit(main(sys.argv[1:]))
"""


def _count(db):
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.OperationalError:
        return 0


def test_killed_run_resumes_to_the_same_table(tmp_path, reference):
    path = tiny(tmp_path)
    db = tmp_path / "killed.sqlite"
    # The real command line, each task slowed by 0.1 s so that the kill lands mid-run
    # whatever the machine's speed.
    proc = subprocess.Popen(
        [sys.executable, "-c", SLOW_CLI, "run", str(path), "--db", str(db), "--n-jobs", "1",
         "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    deadline = time.monotonic() + 120
    try:
        while _count(db) < 3:
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.monotonic() < deadline, "the run stored nothing in 120 s"
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stored_at_kill = _count(db)
    assert 3 <= stored_at_kill < 12, "the kill must land mid-run"
    # One worker starts the tasks replication by replication, largest n first: what a
    # stopped run holds is whole sweeps of the sizes, then the start of the next one.
    order = sorted(((n, rep) for n in SIZES for rep in range(REPS)),
                   key=lambda task: (task[1], -task[0]))
    stored_keys = {(r["n"], r["rep"]) for r in read_rows(db)[0]}
    assert stored_keys == set(order[:stored_at_kill])
    # The killed run never recorded its end, but counted its rows as it stored them.
    [killed] = read_runs(db)
    assert killed["status"] == "running" and killed["tasks_stored"] == stored_at_kill
    exp = load_experiment(path)
    logs = []
    summary = run_experiment(exp, db, n_jobs=1, progress=False, log=logs.append)
    assert summary.tasks_before == stored_at_kill
    assert summary.tasks_stored == 12 - stored_at_kill
    assert any("marked 1 earlier run(s)" in m and "interrupted" in m for m in logs)
    rows, _ = read_rows(db)
    assert comparable(rows) == comparable(reference[0])  # no duplicates, no losses
    runs = read_runs(db)
    # Its process gone, the next run found the record 'running' and marked it.
    assert [r["status"] for r in runs] == ["interrupted", "finished"]
    assert [r["tasks_stored"] for r in runs] == [stored_at_kill, 12 - stored_at_kill]


def test_growing_the_grid_keeps_stored_tasks(tmp_path, reference):
    db = tmp_path / "grow.sqlite"
    small = load_experiment(tiny(tmp_path, sizes=[60, 130], replications=2))
    run_experiment(small, db, n_jobs=1, progress=False)
    before, _ = read_rows(db)
    # The same file, grown: more sizes and more replications.
    grown = load_experiment(tiny(tmp_path))
    assert grown.file_sha256 != small.file_sha256
    logs = []
    summary = run_experiment(grown, db, n_jobs=1, progress=False, log=logs.append)
    assert summary.tasks_before == 4 and summary.tasks_stored == 8
    assert any("stored tasks are kept" in m for m in logs)
    after, meta = read_rows(db)
    kept = [r for r in after if (r["n"], r["rep"]) in {(b["n"], b["rep"]) for b in before}]
    assert kept == before  # untouched, timings included: not recomputed
    assert comparable(after) == comparable(reference[0])  # same seeds as a fresh run
    assert meta["file_sha256"] == grown.file_sha256


def test_changed_task_definition_is_refused(tmp_path):
    db = tmp_path / "refuse.sqlite"
    run_experiment(load_experiment(tiny(tmp_path, sizes=[60], replications=1)), db, n_jobs=1,
                   progress=False)
    changed = load_experiment(tiny(tmp_path, sizes=[60], replications=1,
                                   fit={"max_iter": 99}))
    with pytest.raises(StoreMismatchError) as info:
        run_experiment(changed, db, n_jobs=1, progress=False)
    message = str(info.value)
    assert "fit.max_iter: 100 -> 99" in message
    assert "--force-new" in message and "--db" in message
    summary = run_experiment(changed, db, n_jobs=1, progress=False, force_new=True)
    assert summary.tasks_before == 0 and summary.tasks_stored == 1
    assert len(list(tmp_path.glob("refuse.sqlite.replaced-*"))) == 1


def _replace_distance(monkeypatch, key, function):
    """The harness's distance ``key`` replaced by ``function`` (its one entry)."""
    from gmoe.simulation import distances

    monkeypatch.setattr(distances, "DESIGN_DISTANCES", tuple(
        distances.DesignDistance(d.key, d.column, function) if d.key == key else d
        for d in distances.DESIGN_DISTANCES))


def test_failed_fit_and_metric_are_recorded(tmp_path, monkeypatch):
    class Failing(tasks_module.GaussianMoERegressor):
        def fit(self, X, y, sample_weight=None):
            if X.shape[0] == 90:
                raise np.linalg.LinAlgError("simulated failure")
            return super().fit(X, y, sample_weight)

    def broken_hellinger(*args, **kwargs):
        raise ValueError("simulated metric failure")

    monkeypatch.setattr(tasks_module, "GaussianMoERegressor", Failing)
    _replace_distance(monkeypatch, "hellinger", broken_hellinger)
    exp = load_experiment(tiny(tmp_path, sizes=[60, 90], replications=1))
    summary = run_experiment(exp, tmp_path / "fail.sqlite", n_jobs=1, progress=False)
    assert summary.tasks_stored == 2 and summary.failures == 2
    rows = {r["n"]: r for r in read_rows(tmp_path / "fail.sqlite")[0]}
    assert rows[90]["status"] == "fit_failed"
    assert "every start failed" in rows[90]["error"]
    assert "LinAlgError: simulated failure" in rows[90]["error"]
    assert rows[90]["d1"] is None and rows[90]["mean_log_likelihood"] is None
    assert rows[90]["fitted"] is None and fitted_measure(exp, rows[90]) is None
    assert rows[60]["status"] == "metric_failed"
    assert "hellinger: ValueError: simulated metric failure" in rows[60]["error"]
    assert rows[60]["hellinger"] is None and rows[60]["d1"] is not None


def test_running_out_of_memory_stops_the_run_and_is_never_stored(tmp_path, monkeypatch,
                                                                 capsys):
    # A MemoryError says nothing of the task's numbers: stored as 'fit_failed' it would stay
    # for good (a resumed run never recomputes a stored task). The run stops instead,
    # naming the task, keeping the rows stored before it; the next run computes it.
    calls = []

    def hellinger_out_of_memory(*args, **kwargs):
        calls.append(None)
        if len(calls) >= 2:  # from the second task on: (60, 0) after (90, 0), largest n first
            raise MemoryError("simulated: Unable to allocate 7.28 TiB")
        return real_hellinger(*args, **kwargs)

    from gmoe.metrics import hellinger as real_hellinger
    _replace_distance(monkeypatch, "hellinger", hellinger_out_of_memory)
    path = tiny(tmp_path, sizes=[60, 90], replications=2)
    db = tmp_path / "memory.sqlite"
    with pytest.raises(tasks_module.TaskMemoryError) as info:
        run_experiment(load_experiment(path), db, n_jobs=1, progress=False)
    assert (info.value.n, info.value.rep) == (60, 0)
    assert "task (n = 60, replication 0) ran out of memory" in str(info.value)
    assert "MemoryError: simulated: Unable to allocate 7.28 TiB" in str(info.value)
    assert [(r["n"], r["rep"], r["status"]) for r in read_rows(db)[0]] == [(90, 0, "ok")]
    assert [(r["status"], r["tasks_stored"]) for r in read_runs(db)] == [("failed", 1)]
    # The command line: one line naming the task and what to do, exit status 2.
    assert main(["run", str(path), "--db", str(db), "--n-jobs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith("gmoe-sim: error: task (n = 60, replication 0) ran out of memory")
    assert "are kept and running the command again resumes" in err
    assert "take n = 60 out of [sizes] n first" in err
    # With the memory back, a rerun computes the task that failed and the rest.
    _replace_distance(monkeypatch, "hellinger", real_hellinger)
    summary = run_experiment(load_experiment(path), db, n_jobs=1, progress=False)
    assert summary.tasks_before == 1 and summary.tasks_stored == 3
    assert {r["status"] for r in read_rows(db)[0]} == {"ok"}


def test_a_start_or_a_metric_out_of_memory_is_raised_not_noted(tmp_path, monkeypatch):
    # Where other errors become a note in the row (a failed start among several, a failed
    # metric), a MemoryError stops the task, pickled back intact from a worker process.
    class OutOfMemory(tasks_module.GaussianMoERegressor):
        def fit(self, X, y, sample_weight=None):
            raise MemoryError("simulated")

    exp = load_experiment(tiny(tmp_path, n_starts=3, sizes=[60], replications=1))
    with monkeypatch.context() as patch:
        patch.setattr(tasks_module, "GaussianMoERegressor", OutOfMemory)
        with pytest.raises(tasks_module.TaskMemoryError) as info:
            run_task(exp, 60, 0)
    err = pickle.loads(pickle.dumps(info.value))
    assert isinstance(err, MemoryError) and (err.n, err.rep) == (60, 0)
    assert str(err) == str(info.value) and "MemoryError: simulated" in err.detail

    def tv_out_of_memory(*args, **kwargs):
        raise MemoryError("simulated")

    _replace_distance(monkeypatch, "total_variation", tv_out_of_memory)
    with pytest.raises(tasks_module.TaskMemoryError, match=r"n = 60, replication 0"):
        run_task(exp, 60, 0)


def test_a_task_refitted_alone_keeps_its_best_start(tmp_path, reference):
    # task_data and fit_near_truth_starts draw what run_task draws: the row's fit is the
    # best of the starts refitted from them, start by start.
    exp = load_experiment(tiny(tmp_path))
    X, y, streams = tasks_module.task_data(exp, 130, 2)
    results = tasks_module.fit_near_truth_starts(exp, X, y, streams, 130)
    assert len(results) == exp.start["n_starts"] == 2
    assert all(est is not None and error is None and seconds > 0
               for est, seconds, error in results)
    stored = next(r for r in reference[0] if (r["n"], r["rep"]) == (130, 2))
    assert max(est.lower_bound_ for est, _, _ in results) == stored["mean_log_likelihood"]
    # And the draws are those of run_task before these helpers existed: its row's value at
    # the build that introduced them (rel 1e-12: another machine's BLAS may round apart).
    assert stored["mean_log_likelihood"] == pytest.approx(-0.32065214385688345, rel=1e-12)


def test_near_truth_starts_refuse_an_experiment_of_data_starts(tmp_path):
    exp = load_experiment(tiny(tmp_path))
    data_starts = dataclasses.replace(exp, start={**exp.start, "kind": "data"})
    X, y, streams = tasks_module.task_data(exp, 60, 0)
    with pytest.raises(ValueError, match="start kind is 'data'; expected 'near_truth'"):
        tasks_module.fit_near_truth_starts(data_starts, X, y, streams, 60)


def test_a_failed_start_is_noted_by_its_index_and_timed(tmp_path, monkeypatch):
    # Three starts, the second fails: the row is ok, its note names start 1, and the
    # failed start's seconds count in fit_seconds.
    calls = []

    class SecondFails(tasks_module.GaussianMoERegressor):
        def fit(self, X, y, sample_weight=None):
            calls.append(None)
            if len(calls) == 2:
                time.sleep(0.2)
                raise np.linalg.LinAlgError("simulated failure")
            return super().fit(X, y, sample_weight)

    monkeypatch.setattr(tasks_module, "GaussianMoERegressor", SecondFails)
    exp = load_experiment(tiny(tmp_path, n_starts=3, sizes=[60], replications=1))
    row = run_task(exp, 60, 0)
    assert row["status"] == "ok" and row["n_starts"] == 3
    assert row["error"].startswith("start 1 failed: ")
    assert "LinAlgError: simulated failure" in row["error"]
    assert row["fit_seconds"] >= 0.2


def test_a_single_start_failure_keeps_its_own_error(tmp_path, monkeypatch):
    # With one start, the fit's own exception is the row's error, raised where the fit
    # raised it (no "every start failed" wrapping).
    class Failing(tasks_module.GaussianMoERegressor):
        def fit(self, X, y, sample_weight=None):
            raise np.linalg.LinAlgError("simulated failure")

    monkeypatch.setattr(tasks_module, "GaussianMoERegressor", Failing)
    exp = load_experiment(tiny(tmp_path, n_starts=1, sizes=[60], replications=1))
    row = run_task(exp, 60, 0)
    assert row["status"] == "fit_failed"
    assert "every start failed" not in row["error"]
    assert "LinAlgError: simulated failure (test_simulation_runner.py" in row["error"]


def test_tasks_run_single_threaded():
    import numba
    from threadpoolctl import threadpool_info

    before = numba.get_num_threads()
    with tasks_module.single_threaded():
        assert numba.get_num_threads() == 1
        assert all(info["num_threads"] == 1 for info in threadpool_info())
    assert numba.get_num_threads() == before


def test_store_insert_never_duplicates(tmp_path, reference):
    exp = load_experiment(tiny(tmp_path))
    with ResultStore(tmp_path / "dup.sqlite", exp) as store:
        row = reference[0][0]
        assert store.insert(row) is True
        assert store.insert(row) is False
        assert store.count() == 1 and store.completed_keys() == {(60, 0)}


def test_export_csv(tmp_path, reference):
    db = tmp_path / "export.sqlite"
    exp = load_experiment(tiny(tmp_path))
    with ResultStore(db, exp) as store:
        for row in reference[0]:
            store.insert(row)
    out = tmp_path / "out" / "rows.csv"
    assert export_csv(db, out) == 12
    with out.open() as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 12 and table[0]["n"] == "60"
    assert float(table[0]["d1"]) == reference[0][0]["d1"]
    assert list(table[0])[:3] == ["n", "rep", "seed_entropy"]


def test_cli_run_report_export_list(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "simulations").mkdir()
    tiny(tmp_path / "simulations", name="mini.toml")
    assert main(["list"]) == 0
    assert "mini" in capsys.readouterr().out

    assert main(["run", "mini", "--quick", "--n-jobs", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    db = tmp_path / "results" / "mini-quick.sqlite"
    assert db.exists() and str(db) in out
    assert "slope d1:" in out and "4 tasks over 2 sample sizes" in out

    assert main(["report", "mini", "--quick", "--all"]) == 0
    out = capsys.readouterr().out
    assert "pe_expert_var_1" in out and "slope hellinger:" in out

    assert main(["export", "mini", "--quick", "--csv", "rows.csv"]) == 0
    assert "wrote 4 rows" in capsys.readouterr().out
    assert (tmp_path / "rows.csv").exists()

    # A path works as NAME; a second run has nothing left to do.
    assert main(["run", str(tmp_path / "simulations" / "mini.toml"), "--quick",
                 "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out


def test_cli_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["run", "no-such-study"]) == 2
    err = capsys.readouterr().err
    assert "No experiment 'no-such-study'" in err and "softmax-exact" in err
    bad = tmp_path / "bad.toml"
    bad.write_text("seed = 1\n")
    assert main(["report", str(bad)]) == 2
    assert f"{bad}: [truth]: missing required table." in capsys.readouterr().err
    path = tiny(tmp_path)
    assert main(["report", str(path)]) == 2
    assert "run the experiment first" in capsys.readouterr().err
    assert main(["run", str(path), "--quick", "--db", str(tmp_path / "x.sqlite"),
                 "--n-jobs", "1", "--no-progress"]) == 0
    capsys.readouterr()
    path.write_text(path.read_text().replace("max_iter = 100", "max_iter = 10"))
    assert main(["run", str(path), "--quick", "--db", str(tmp_path / "x.sqlite"),
                 "--no-progress"]) == 2
    assert "--force-new" in capsys.readouterr().err


KILLING_CLI = """
import os, signal, sys
import gmoe.simulation.runner as runner
from gmoe.simulation.cli import main

def dies(experiment, n, rep, _task=runner.run_task):
    if (n, rep) == (60, 1):  # the last task: killed as the kernel kills for memory
        os.kill(os.getpid(), signal.SIGKILL)
    return _task(experiment, n, rep)

runner.run_task = dies
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_killed_worker_stops_the_run_with_one_line_and_the_rows_kept(tmp_path):
    path = tiny(tmp_path, sizes=[60, 90], replications=2)
    db = tmp_path / "killed.sqlite"
    proc = subprocess.run(
        [sys.executable, "-c", KILLING_CLI, "run", str(path), "--db", str(db), "--n-jobs",
         "2", "--no-progress"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("gmoe-sim: error:")]
    assert "a worker process of the run died (exit codes {SIGKILL(-9)})" in line
    assert f"The rows stored in {db} are kept: running the command again resumes" in line
    [run] = read_runs(db)
    assert run["status"] == "failed" and run["tasks_stored"] == _count(db) <= 3
    summary = run_experiment(load_experiment(path), db, n_jobs=1, progress=False)
    assert summary.tasks_before + summary.tasks_stored == 4


def test_a_sample_size_too_large_for_the_store_is_refused_before_any_task(tmp_path,
                                                                        capsys):
    # SQLite's INTEGER is signed 64-bit: n = 1e19 used to raise OverflowError at its
    # row's insert, after every task before it had run. Loading the file refuses it (it
    # used to pass until a store was opened), and so does a store given it in code.
    path = tiny(tmp_path, sizes=[60, 1e19], replications=1)
    db = tmp_path / "huge.sqlite"
    message = (r"\[sizes\] n: expected sample sizes of at most 9223372036854775807 .* got "
               r"10000000000000000000\.")
    with pytest.raises(ExperimentError, match=message):
        load_experiment(path)
    built = dataclasses.replace(load_experiment(tiny(tmp_path, "ok.toml", sizes=[60],
                                                     replications=1)),
                                sizes=(60, 10**19))
    with pytest.raises(ExperimentError, match=message):
        run_experiment(built, db, n_jobs=1, progress=False)
    assert not db.exists()
    assert main(["run", str(path), "--db", str(db), "--n-jobs", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"gmoe-sim: error: {path}: [sizes] n: expected") and err.count("\n") == 1
    assert not db.exists()


FAMILIES = {
    "data-start": dict(n_starts=DROP, start={"kind": "data", "n_init": 2}),
    "temperature": dict(truth={"gating": "temperature", "temperature": 0.25,
                               "gate_coef": [[6.25], [0.0]], "gate_intercept": [-2.0, 0.0]},
                        metrics={"scales": ["identifiable", "raw"]}),
    "activation": dict(truth={"gating": "activation", "activation": "tanh",
                              "temperature": 0.25, "gate_coef": [[4.0], [-1.0]],
                              "gate_intercept": [-0.9, 0.0]}),
    "topk-over": dict(truth={"gating": "topk", "top_k": 1}, n_starts=1,
                      fit={"n_experts": 3, "top_k": 2}, start={"assignment": [0, 1, 1]},
                      metrics={"voronoi": ["over"]}),
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_run_task_other_families_and_starts(tmp_path, family):
    exp = load_experiment(tiny(tmp_path, **FAMILIES[family]))
    row = run_task(exp, 150, 0)
    assert row["status"] == "ok", row["error"]
    for col in exp.metric_columns():
        assert row[col] is not None and np.isfinite(row[col]), col
    # Every family's stored fit gives back the row's metrics.
    assert _recomputed_metrics(exp, row) == {c: row[c] for c in exp.metric_columns()}
    if family == "temperature":
        assert "d1_raw" in row and row["pe_temperature_raw"] == 0.0
    if family == "data-start":
        assert row["n_starts"] == 2


def test_data_starts_join_the_near_truth_ones_and_the_best_is_kept(tmp_path):
    # An activation gate on few rows, where the likelihood often has a higher maximum
    # than the one near the truth: the data-driven starts are fitted besides the
    # near-truth one, from the task's own seed, and the best log-likelihood is kept.
    from gmoe import GaussianMoERegressor
    from gmoe.simulation.tasks import task_data

    activation = FAMILIES["activation"]
    plain = load_experiment(tiny(tmp_path, "plain.toml", n_starts=1, **activation))
    more = load_experiment(tiny(tmp_path, "more.toml", n_starts=1, **activation,
                                start={"data_starts": {"kmeans": 3, "random": 2}}))
    assert more.start["data_starts"] == {"kmeans": 3, "random": 2}
    assert "data_starts" not in plain.start  # other studies' task hashes are unchanged
    assert plain.task_sha256 != more.task_sha256
    near = run_task(plain, 150, 0)
    row = run_task(more, 150, 0)
    assert row["status"] == "ok" and row["n_starts"] == 1 + 3 + 2
    X, y, streams = task_data(more, 150, 0)
    data = [GaussianMoERegressor(**more.estimator_params(), init_params=strategy,
                                 n_init=count, random_state=streams.fit_seed).fit(X, y)
            for strategy, count in (("kmeans", 3), ("random", 2))]
    best = max([near["mean_log_likelihood"], *(est.lower_bound_ for est in data)])
    assert row["mean_log_likelihood"] == best
    assert _recomputed_metrics(more, row) == {c: row[c] for c in more.metric_columns()}


def test_resuming_a_store_made_by_other_gmoe_sources_warns(tmp_path):
    from gmoe.exceptions import GMoEWarning
    from gmoe.simulation.store import code_sha256

    exp = load_experiment(tiny(tmp_path))
    db = tmp_path / "code.sqlite"
    ResultStore(db, exp).close()
    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT key, value FROM meta"))["code_sha256"]
        assert stored == code_sha256()
        conn.execute("UPDATE meta SET value = 'feedfacefeedface' WHERE key = 'code_sha256'")
    with pytest.warns(GMoEWarning, match="another build of gmoe"):
        ResultStore(db, exp).close()
    # The same sources resume silently.
    with warnings.catch_warnings():
        warnings.simplefilter("error", GMoEWarning)
        ResultStore(db, exp).close()


_TASK_SCRIPT = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from _study import write_study
from gmoe.simulation import load_experiment, run_task
exp = load_experiment(write_study(Path(sys.argv[2]), "tiny.toml", seed=7, n_starts=2,
                                  sizes=[60], replications=3))
print([repr(run_task(exp, 60, rep)["hellinger"]) for rep in range(3)])
"""


def test_kernels_compiled_fresh_and_loaded_from_the_cache_store_the_same_bits(tmp_path):
    # The parent process compiles the kernels and the workers load them from numba's cache;
    # both must round alike. Fastmath sums did not: the Hellinger distance of the task
    # (60, 2) came out one ulp apart, so one and two workers stored different numbers.
    cache = tmp_path / "numba-cache"
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    runs = [subprocess.run([sys.executable, "-c", _TASK_SCRIPT, tests_dir, str(tmp_path)],
                           env=env, check=True, capture_output=True, text=True).stdout
            for _ in range(2)]
    assert any(cache.iterdir()), "the first run should have filled the cache"
    assert runs[0] == runs[1]


def test_progress_lines_say_how_far_the_grid_is_and_how_long_is_left(tmp_path):
    from gmoe.simulation.runner import progress_line

    assert progress_line("topk-exact", 2808, 8000, 200, 708.0) == (
        "topk-exact: 2808 of 8000 tasks (35.1%); this run 200 in 11.8 min (16.9 per min); "
        "about 5.1 h left at this pace")
    assert progress_line("s", 90, 100, 10, 60.0, failures=2) == (
        "s: 90 of 100 tasks (90.0%); this run 10 in 1.0 min (10.0 per min); about 1 min "
        "left at this pace; 2 not ok")
    # A run logs a line after a task when the interval has passed: here, after every one.
    path = write_study(tmp_path, seed=4, sizes=[60, 90], replications=2)
    said = []
    run_experiment(load_experiment(path), tmp_path / "s.sqlite", n_jobs=1, progress=False,
                   log=said.append, progress_every=1e-9)
    lines = [line for line in said if " tasks (" in line]
    assert [line.split(";")[0] for line in lines] == [
        f"study: {k} of 4 tasks ({25.0 * k:.1f}%)" for k in (1, 2, 3, 4)]
    said.clear()
    run_experiment(load_experiment(path), tmp_path / "t.sqlite", n_jobs=1, progress=False,
                   log=said.append, progress_every=3600)
    assert not [line for line in said if " tasks (" in line]


@pytest.mark.parametrize("value", [0, -1, True, "10", float("nan")])
def test_a_progress_interval_must_be_positive_seconds(tmp_path, value):
    path = write_study(tmp_path)
    with pytest.raises(ValueError, match=r"progress_every must be a number of seconds > 0, "
                                         rf"got progress_every={value!r}"):
        run_experiment(load_experiment(path), tmp_path / "s.sqlite", progress_every=value)


def test_the_command_line_prints_progress_lines(tmp_path, capsys):
    path = write_study(tmp_path, seed=4, sizes=[60], replications=2)
    assert main(["run", str(path), "--db", str(tmp_path / "s.sqlite"), "--n-jobs", "1",
                 "--no-progress", "--progress-every", "1e-9",
                 "--out", str(tmp_path / "plots")]) == 0
    assert "study: 2 of 2 tasks (100.0%); this run 2 in" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["run", str(path), "--progress-every", "0"])
    assert "expected a number of seconds > 0, got '0'" in capsys.readouterr().err


def test_a_distance_added_in_one_entry_is_read_recorded_and_reported(tmp_path, monkeypatch):
    # One DesignDistance: its [metrics] key is accepted, its column made, computed on the
    # evaluation design for every task and reported (with no stated rate: the rate table
    # does not name it). Nothing else in the harness is told.
    from gmoe import predictive_distribution
    from gmoe.simulation import distances, study_report

    def mean_gap(fitted, truth, X):  # the mean absolute gap of the conditional means
        return float(np.mean(np.abs(predictive_distribution(fitted, X).mean
                                    - predictive_distribution(truth, X).mean)))

    monkeypatch.setattr(distances, "DESIGN_DISTANCES", (
        *distances.DESIGN_DISTANCES, distances.DesignDistance("mean_gap", "mean_gap", mean_gap)))
    exp = load_experiment(tiny(tmp_path, sizes=[60, 120], replications=1,
                               metrics={"mean_gap": True}))
    assert exp.metrics["mean_gap"] is True and "mean_gap" in exp.summary_columns()
    run_experiment(exp, tmp_path / "gap.sqlite", n_jobs=1, progress=False)
    rows = read_rows(tmp_path / "gap.sqlite")[0]
    X_eval = tasks_module.make_evaluation_design(exp)
    assert len(rows) == 2
    for row in rows:  # the stored fit's distance on the evaluation design, to the bit
        assert row["mean_gap"] == mean_gap(fitted_measure(exp, row), exp.truth, X_eval) > 0
    assert "no stated rate for mean_gap" in study_report(rows, exp)
    # Without the entry, the key is unknown.
    monkeypatch.undo()
    with pytest.raises(ExperimentError, match="unknown key 'mean_gap'"):
        load_experiment(tiny(tmp_path, name="other.toml", metrics={"mean_gap": True}))
    # Nor does the entry change the task definition of a study that does not record it.
    plain = tiny(tmp_path, name="plain.toml")
    before = load_experiment(plain).task_sha256
    monkeypatch.setattr(distances, "DESIGN_DISTANCES", (
        *distances.DESIGN_DISTANCES, distances.DesignDistance("mean_gap", "mean_gap", mean_gap)))
    assert load_experiment(plain).task_sha256 == before


def test_a_distance_named_like_a_key_a_metric_or_a_base_column_is_refused(tmp_path, monkeypatch):
    from gmoe.simulation import distances

    path = tiny(tmp_path)
    shipped = distances.DESIGN_DISTANCES
    entry = shipped[0]
    for clash, match in ((distances.DesignDistance("voronoi", "x", entry.function),
                          "repeats a key of \\[metrics\\]"),
                         (distances.DesignDistance("x", "tv", entry.function),
                          "columns repeat \\['tv'\\]"),
                         # a row's bookkeeping: the distance would overwrite its status
                         (distances.DesignDistance("x", "status", entry.function),
                          "columns repeat \\['status'\\]"),
                         # the same in the store, whose column names ignore case
                         (distances.DesignDistance("x", "Status", entry.function),
                          "columns repeat \\['Status'\\]")):
        monkeypatch.setattr(distances, "DESIGN_DISTANCES", (*shipped, clash))
        text = path.read_text() if clash.key == "voronoi" else path.read_text().replace(
            "total_variation = true", f"total_variation = true\n{clash.key} = true")
        (tmp_path / "clash.toml").write_text(text)
        with pytest.raises((ExperimentError, ValueError), match=match):
            load_experiment(tmp_path / "clash.toml").metric_schema()
