"""benchmarks/: the projection of a full grid's run time from sampled tasks of the grid."""

import sys
from pathlib import Path

import pytest

from gmoe.simulation import load_experiment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def project_grids():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import project_grids
        yield project_grids
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_sampled_tasks_spread_over_the_grid_with_their_own_replications(project_grids):
    # softmax-exact: 200 sizes from 100 to 100000, 40 replications. Three samples take the
    # first, middle (index 100 after rounding 99.5) and last size, replications 0, 1, 2.
    experiment = load_experiment(ROOT / "simulations" / "softmax-exact.toml")
    times = project_grids.sampled_times(experiment, 3)
    sizes = experiment.sizes
    assert [(n, rep) for n, rep, _ in times] == [(sizes[0], 0), (sizes[100], 1),
                                                  (sizes[-1], 2)]
    assert all(seconds > 0 for _, _, seconds in times)


def test_fewer_than_two_sampled_tasks_are_refused(project_grids, capsys):
    with pytest.raises(SystemExit):
        project_grids.main(["softmax-exact", "--sampled-tasks", "1"])
    assert "--sampled-tasks: expected at least 2" in capsys.readouterr().err
