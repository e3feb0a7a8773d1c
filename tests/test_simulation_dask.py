"""The runner on a Dask cluster stores what the local run stores."""

import subprocess
import sys
import time

import pytest
from _study import DROP, write_study

from gmoe.simulation import load_experiment, read_rows, run_experiment
from gmoe.simulation.cli import main
from gmoe.simulation.columns import TIMING_COLUMNS

distributed = pytest.importorskip("distributed")

# The fixture study with one near-truth start per task, 3 sizes x 2 replications, and no
# total variation.
STUDY = dict(seed=11, sizes=[60, 120, 240], replications=2,
             metrics={"total_variation": DROP})


def _comparable(rows):
    return sorted(({k: v for k, v in row.items() if k not in TIMING_COLUMNS} for row in rows),
                  key=lambda row: (row["n"], row["rep"]))


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return load_experiment(write_study(tmp_path_factory.mktemp("dask"), "tiny.toml", **STUDY))


def test_dask_client_stores_the_joblib_numbers(tmp_path, cluster, experiment):
    local = run_experiment(experiment, tmp_path / "local.sqlite", n_jobs=1, progress=False)
    messages = []
    with distributed.Client(cluster) as client:
        remote = run_experiment(experiment, tmp_path / "dask.sqlite", client=client,
                                progress=False, log=messages.append)
        # Tasks ran in the workers, which are not this process.
        pids = set(client.run(lambda: __import__("os").getpid()).values())
    assert remote.backend == "dask" and local.backend == "loky"
    assert remote.n_jobs == 2 and remote.tasks_stored == local.tasks_stored == 6
    assert any("Dask cluster" in m for m in messages)
    rows_local, _ = read_rows(tmp_path / "local.sqlite")
    rows_dask, meta = read_rows(tmp_path / "dask.sqlite")
    assert _comparable(rows_dask) == _comparable(rows_local)
    assert {row["worker_pid"] for row in rows_dask} <= pids
    assert meta["task_sha256"] == experiment.task_sha256


def test_a_dask_parallel_config_by_scheduler_address_runs_on_its_own_client(tmp_path,
                                                                              cluster,
                                                                              experiment):
    # joblib makes that client with set_as_default=False: not the default client that
    # distributed's as_completed falls back to.
    from joblib import parallel_config

    local = run_experiment(experiment, tmp_path / "local.sqlite", n_jobs=1, progress=False)
    with parallel_config(backend="dask", scheduler_host=cluster.scheduler_address):
        summary = run_experiment(experiment, tmp_path / "host.sqlite", progress=False)
    assert summary.backend == "dask" and summary.tasks_stored == local.tasks_stored == 6
    assert _comparable(read_rows(tmp_path / "host.sqlite")[0]) == \
        _comparable(read_rows(tmp_path / "local.sqlite")[0])


def test_a_dask_parallel_config_is_recorded_as_dask(tmp_path, cluster, experiment):
    from joblib import parallel_config

    messages = []
    with distributed.Client(cluster) as client, parallel_config(backend="dask",
                                                                client=client):
        summary = run_experiment(experiment, tmp_path / "config.sqlite", progress=False,
                                 log=messages.append)
    assert summary.backend == "dask" and summary.tasks_stored == 6
    # Its client runs the tasks one future per task, as client= does (joblib's Dask
    # backend would wait forever for a task whose worker died).
    assert any(m.startswith("running on the Dask cluster at ") for m in messages)


def test_cli_scheduler_address_resumes(tmp_path, cluster, experiment, capsys):
    db = tmp_path / "cli.sqlite"
    # Part of the grid locally, the rest on the cluster by address: one store, no duplicate.
    small = write_study(tmp_path, "small.toml", **{**STUDY, "sizes": [60, 120]})
    run_experiment(load_experiment(small), db, n_jobs=1, progress=False)
    assert main(["run", str(experiment.path), "--db", str(db), "--scheduler",
                 cluster.scheduler_address, "--no-progress", "--out",
                 str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "resuming" in out and cluster.scheduler_address in out
    rows, _ = read_rows(db)
    assert len(rows) == 6


def test_client_and_scheduler_are_exclusive(tmp_path, cluster, experiment):
    with distributed.Client(cluster) as client, pytest.raises(ValueError, match="either"):
        run_experiment(experiment, tmp_path / "x.sqlite", client=client,
                       scheduler=cluster.scheduler_address, progress=False)


KILLING_CLUSTER = """
import os, signal, sys
import dask, distributed
from gmoe.simulation.cli import main

def kill_the_worker_at_one_task():
    import gmoe.simulation.tasks as tasks
    original = tasks.run_task
    def dies(experiment, n, rep):
        if (n, rep) == (240, 1):  # killed, as the kernel kills for memory
            os.kill(os.getpid(), signal.SIGKILL)
        return original(experiment, n, rep)
    tasks.run_task = dies

if __name__ == "__main__":
    # No failures allowed: the scheduler gives up on the task when its worker dies.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}), \\
            distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                     dashboard_address=None) as cluster, \\
            distributed.Client(cluster) as client:
        client.run(kill_the_worker_at_one_task)
        sys.exit(main([*sys.argv[1:], "--scheduler", cluster.scheduler_address]))
"""


def test_a_killed_dask_worker_stops_the_run_with_one_line_and_the_rows_kept(tmp_path,
                                                                            experiment):
    # dask.distributed gives up on a task whose workers died (KilledWorker); the command
    # stops in one line with the rows kept, as for joblib's workers. In a process of its
    # own with a timeout: joblib's Dask backend, which the runner no longer uses there,
    # waited forever in this case.
    db = tmp_path / "killed.sqlite"
    script = tmp_path / "killing.py"
    script.write_text(KILLING_CLUSTER)
    proc = subprocess.run([sys.executable, str(script), "run", str(experiment.path), "--db",
                           str(db), "--no-progress"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=180)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if x.startswith("gmoe-sim: error:")]
    assert line == ("gmoe-sim: error: 1 Dask workers died running one task of the run "
                    "(killed, or out of memory); the run stopped. The rows stored in "
                    f"{db} are kept: running the command again resumes (with more memory "
                    "per worker if it ran out).")
    rows, _ = read_rows(db)
    assert 0 < len(rows) < 6 and (240, 1) not in {(r["n"], r["rep"]) for r in rows}
    summary = run_experiment(experiment, db, n_jobs=1, progress=False)
    assert summary.tasks_before + summary.tasks_stored == 6


def test_a_run_stopped_by_an_error_cancels_the_tasks_left_on_the_cluster(tmp_path, experiment,
                                                                         monkeypatch):
    # Every task is submitted at once: an error while storing a row (a full disk) must not
    # leave the rest of the grid computing on the cluster while its traceback is alive.
    import gmoe.simulation.runner as runner

    calls, original = [], runner.ResultStore.insert

    def full_disk(self, row):
        calls.append(row)
        if len(calls) == 2:
            raise OSError("No space left on device")
        return original(self, row)

    monkeypatch.setattr(runner.ResultStore, "insert", full_disk)
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        with pytest.raises(OSError, match="No space left") as kept:  # its traceback lives
            run_experiment(experiment, tmp_path / "full.sqlite", client=client,
                           progress=False)
        # Cancelling is a message to the scheduler: give it a moment.
        deadline = time.monotonic() + 10.0
        while cluster.scheduler.tasks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert kept.value is not None and len(cluster.scheduler.tasks) == 0
