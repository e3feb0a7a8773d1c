"""benchmarks/: the projection of a full grid's run time from sampled tasks of the grid."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from gmoe.simulation import load_experiment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def project_grids():
    # The script puts paper_figures/ on the path for its imports: both are taken off after.
    saved = list(sys.path)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import project_grids
        yield project_grids
    finally:
        sys.path[:] = saved


def test_sampled_tasks_spread_over_the_grid_with_their_own_replications(project_grids):
    # softmax-exact: 200 sizes from 100 to 100000, 40 replications. Three samples take the
    # first, middle (index 100 after rounding 99.5) and last size, replications 0, 1, 2.
    experiment = load_experiment(ROOT / "simulations" / "softmax-exact.toml")
    times = project_grids.sampled_times(experiment, 3)
    sizes = experiment.sizes
    assert [(n, rep) for n, rep, _ in times] == [(sizes[0], 0), (sizes[100], 1),
                                                  (sizes[-1], 2)]
    assert all(seconds > 0 for _, _, seconds in times)


def test_the_projection_is_the_mean_task_time_times_the_tasks_over_the_workers(
        project_grids, monkeypatch, capsys):
    # Task times 10, 20, 30 s: mean 20 s, standard error 10 / sqrt(3) = 5.774 s;
    # softmax-exact has 8000 tasks, so 2 workers take 8000 * 20 / 2 s = 22.2 h, and the
    # interval is 20 +- 4.303 * 5.774 = 20 +- 24.84 s a task: [0 (floored), 49.8] h.
    monkeypatch.setattr(project_grids, "sampled_times",
                        lambda experiment, k, log=None: [(100, 0, 10.0), (200, 1, 20.0),
                                                         (300, 2, 30.0)])
    hours, (low, high) = project_grids.project_from_sample("softmax-exact", 3, 2)
    half = stats.t.ppf(0.975, 2) * 10.0 / np.sqrt(3) * 8000 / 2 / 3600
    assert hours == pytest.approx(8000 * 20.0 / 2 / 3600)
    assert (low, high) == (pytest.approx(max(hours - half, 0.0)), pytest.approx(hours + half))
    assert "22.2 h [0, 49.8]" in capsys.readouterr().out


def test_sampled_task_counts_out_of_range_are_refused(project_grids, capsys):
    with pytest.raises(SystemExit):
        project_grids.main(["softmax-exact", "--sampled-tasks", "1"])
    assert "--sampled-tasks: expected at least 2" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        project_grids.main(["softmax-exact", "--sampled-tasks", "201"])
    assert "expected at most the grid's 200 sizes, got 201" in capsys.readouterr().err
