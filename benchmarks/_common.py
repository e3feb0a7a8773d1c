"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``)."""

import csv


def write_csv(path, rows):
    """Write ``rows`` (dicts with the same keys, in order) to ``path`` with a header."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
