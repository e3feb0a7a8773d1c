"""The runner on a Dask cluster (joblib's Dask backend) stores what the local run stores."""

import pytest
from _study import DROP, write_study

from gmoe.simulation import load_experiment, read_rows, run_experiment
from gmoe.simulation.cli import main
from gmoe.simulation.tasks import TIMING_COLUMNS

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


def test_a_dask_parallel_config_is_recorded_as_dask(tmp_path, cluster, experiment):
    from joblib import parallel_config

    with distributed.Client(cluster) as client, parallel_config(backend="dask",
                                                                client=client):
        summary = run_experiment(experiment, tmp_path / "config.sqlite", progress=False)
    assert summary.backend == "dask" and summary.tasks_stored == 6


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


def test_a_killed_dask_worker_stops_the_cli_with_one_line(tmp_path, experiment, monkeypatch,
                                                          capsys):
    # dask.distributed gives up on a task whose workers keep dying (killed, or out of
    # memory) with KilledWorker; the command says so in one line, as for joblib's workers.
    from distributed.scheduler import KilledWorker

    import gmoe.simulation.cli as cli

    def killed(*args, **kwargs):
        raise KilledWorker(task="run_task-1", last_worker=None, allowed_failures=3)

    monkeypatch.setattr(cli, "run_experiment", killed)
    db = tmp_path / "killed.sqlite"
    assert main(["run", str(experiment.path), "--db", str(db), "--scheduler",
                 "tcp://127.0.0.1:1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert ("gmoe-sim: error: 4 Dask workers died running one task of the run (killed, or "
            f"out of memory); the run stopped. The rows stored in {db} are kept: running the "
            "command again resumes (with more memory per worker if it ran out).") in err
    # Any other error is not taken for it.
    monkeypatch.setattr(cli, "run_experiment", lambda *a, **k: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        main(["run", str(experiment.path), "--db", str(db), "--no-progress"])
