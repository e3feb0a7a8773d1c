"""Shared pytest configuration: the ``global_random_seed`` fixture.

A test that takes ``global_random_seed`` must pass for every seed in 0..99. Which seeds
run is set by the environment variable ``GMOE_TESTS_GLOBAL_RANDOM_SEED``:

* unset: one seed, 42;
* an integer ``s`` in 0..99: that seed;
* a range ``a-b`` (inclusive, within 0..99): those seeds;
* ``all``: every seed 0..99.

Build generators locally with ``np.random.default_rng(global_random_seed)``; never seed at
module level.
"""

import importlib
import os
import sys
from pathlib import Path

import pytest

_SEED_ENV = "GMOE_TESTS_GLOBAL_RANDOM_SEED"
_DEFAULT_SEEDS = [42]
_ALL_SEEDS = list(range(100))


def _parse_seeds(value):
    if value is None or value == "":
        return list(_DEFAULT_SEEDS)
    if value == "all":
        return list(_ALL_SEEDS)
    try:
        if "-" in value:
            start, stop = (int(part) for part in value.split("-"))
            seeds = list(range(start, stop + 1))
        else:
            seeds = [int(value)]
    except ValueError:
        seeds = []
    if not seeds or min(seeds) < 0 or max(seeds) > 99:
        raise pytest.UsageError(
            f"{_SEED_ENV} must be 'all', an integer in 0..99 or a range 'a-b' within 0..99, "
            f"got {_SEED_ENV}={value!r}."
        )
    return seeds


def pytest_report_header(config):
    seeds = _parse_seeds(os.environ.get(_SEED_ENV))
    shown = "all (0..99)" if seeds == _ALL_SEEDS else ", ".join(map(str, seeds[:10]))
    return f"gmoe: global_random_seed = {shown} (set {_SEED_ENV} to change)"


def pytest_generate_tests(metafunc):
    # Parametrising here (as scikit-learn does) rather than in a fixture lets one env var
    # turn a single test into 100 test items, each reported with its seed.
    if "global_random_seed" in metafunc.fixturenames:
        seeds = _parse_seeds(os.environ.get(_SEED_ENV))
        metafunc.parametrize("global_random_seed", seeds)


@pytest.fixture(scope="module")
def paper_figures_import():
    """``import_module`` for paper_figures/'s scripts, on the path while a module's tests run."""
    path = str(Path(__file__).resolve().parent.parent / "paper_figures")
    sys.path.insert(0, path)
    try:
        yield importlib.import_module
    finally:
        sys.path.remove(path)
