"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

import csv

import numpy as np


def write_csv(path, rows):
    """Write ``rows`` (dicts with the same keys, in order) to ``path`` with a header."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def simulate_peer(n, seed):
    """The 2-expert model of ``peer_flexmix_bench.R``, simulated once.

    x ~ U(-2, 2); expert 2 with probability logistic(3 x); experts 1 + 2 x and -1 - 1.5 x,
    noise sd 0.5. Returns ``X`` of shape (n, 1) and ``y``.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    second = rng.random(n) < 1 / (1 + np.exp(-3 * x))
    mean = np.where(second, -1 - 1.5 * x, 1 + 2 * x)
    return x[:, None], mean + rng.normal(0, 0.5, n)
