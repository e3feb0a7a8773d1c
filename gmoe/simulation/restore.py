"""Rebuild a result store from its exported rows, so that a grid goes on elsewhere.

A full-scale grid can take longer than a machine lives. Its rows, exported with
:func:`~gmoe.simulation.export_csv` (plain or gzipped CSV, NULL as an empty field), hold
everything a store holds about a task; :func:`restore_store` writes them back into a new
store, which the runner then resumes like any other: only the missing tasks run.

Rows computed by another build of gmoe are only worth continuing if this build computes
the same numbers. :func:`rerun_differences` re-runs a task and lists the columns where the
new row differs from the stored one (the timings and the worker's process aside), so a
caller can check a sample of the rows before resuming (:func:`verify_rows` draws and
checks one); the tasks' seeds depend only on ``(seed, n, rep)``, so the same build gives
the same row bit for bit.
"""

import csv
import gzip
import math
from pathlib import Path

import numpy as np

from .store import ResultStore, StoreError
from .tasks import BASE_COLUMNS, TIMING_COLUMNS, run_task

__all__ = ["RestoreError", "read_csv_rows", "rerun_differences", "restore_store",
           "verify_rows"]


class RestoreError(StoreError):
    """Rows that cannot be restored: not the experiment's, or not this build's numbers."""

#: Base columns a row may lack because an earlier store format had no such column.
_ADDED_SINCE = ("metric_seconds", "fitted")


def _sql_types(experiment):
    types = {name: sql.split()[0] for name, sql in BASE_COLUMNS}
    types.update({c: "REAL" for c in experiment.metric_columns()})
    return types


def _typed(text, sql_type, *, column, line, path):
    if text == "":
        return None
    try:
        if sql_type == "INTEGER":
            return int(text)
        if sql_type == "REAL":
            return float(text)
    except ValueError:
        raise RestoreError(f"{path.name}, line {line}: column {column!r} expected a number "
                         f"({sql_type}), got {text!r}.") from None
    return text


def read_csv_rows(csv_path, experiment):
    """The typed rows of a CSV of a store's rows (``export_csv``'s format, or gzipped).

    Parameters
    ----------
    csv_path : str or pathlib.Path
        The CSV (``.csv`` or ``.csv.gz``): a header, then one task per line.
    experiment : Experiment
        The experiment the rows belong to: its columns, seed, sizes and replications.

    Returns
    -------
    list of dict
        One dict per task with a value for every column of the file, typed as the store
        types them (integers, floats, text); an empty field is None.

    Raises
    ------
    RestoreError
        If the header lacks a column of the experiment (other than a column an earlier
        store format lacked), has one the experiment does not, a field is not a number
        where one is expected, or a row is not a task of the experiment (another seed, a
        sample size or replication outside its grid, a task twice).
    """
    path = Path(csv_path)
    types = _sql_types(experiment)
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        unknown = [c for c in header if c not in types]
        missing = [c for c in types if c not in header and c not in _ADDED_SINCE]
        if unknown or missing:
            raise RestoreError(
                f"{path.name}: expected the columns of experiment {experiment.name!r}, got "
                f"a header with unknown columns [{', '.join(unknown) or 'none'}] and without "
                f"[{', '.join(missing) or 'none'}].")
        rows = [{c: _typed(text, types[c], column=c, line=line, path=path)
                 for c, text in raw.items()}
                for line, raw in enumerate(reader, start=2)]
    sizes, seen = set(experiment.sizes), set()
    for line, row in enumerate(rows, start=2):
        key = (row["n"], row["rep"])
        if (row["seed_entropy"] != str(experiment.seed) or row["n"] not in sizes
                or not 0 <= row["rep"] < experiment.replications or key in seen):
            raise RestoreError(
                f"{path.name}, line {line}: expected a task of experiment "
                f"{experiment.name!r} (seed {experiment.seed}, one of its "
                f"{len(sizes)} sample sizes, replication below {experiment.replications}, "
                f"each task once), got seed {row['seed_entropy']}, n = {row['n']}, "
                f"replication {row['rep']}" + (" again" if key in seen else "") + ".")
        seen.add(key)
    return rows


def restore_store(db_path, experiment, rows, *, runs=(), source):
    """Write exported rows into a new result store for ``experiment``.

    Parameters
    ----------
    db_path : str or pathlib.Path
        The store to create; it must not exist (restoring never merges into a store).
    experiment : Experiment
    rows : list of dict
        From :func:`read_csv_rows`.
    runs : iterable of dict, default=()
        The runs that computed the rows (``status``, ``n_jobs``, ``tasks_stored``,
        ``wall_seconds``, ``gmoe_version``), kept in the store's ``runs`` table.
    source : dict
        What the rows came from (the file's name, the build that computed them), kept
        under ``restored_from`` in the store's metadata.

    Returns
    -------
    int
        Rows stored.

    Raises
    ------
    FileExistsError
        If ``db_path`` exists.
    """
    db_path = Path(db_path)
    if db_path.exists():
        raise FileExistsError(f"{db_path} exists: restoring writes a new store and never "
                              "merges into one; move it aside or give another path.")
    with ResultStore(db_path, experiment) as store:
        return store.restore(rows, runs=runs, source=source)


def _same(a, b):
    if a in (None, "") and b in (None, ""):
        return True
    if isinstance(a, float) or isinstance(b, float):
        try:
            a, b = float(a), float(b)
        except (TypeError, ValueError):
            return False
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, bool | int) or isinstance(b, bool | int):
        try:
            return int(a) == int(b)
        except (TypeError, ValueError):
            return False
    return a == b


def rerun_differences(experiment, row):
    """Re-run a stored task and list the columns where the new row differs.

    Parameters
    ----------
    experiment : Experiment
    row : dict
        A stored row (:func:`read_csv_rows`, :func:`~gmoe.simulation.read_rows`).

    Returns
    -------
    list of tuple
        ``(column, stored, recomputed)`` for every column, timings and the worker's
        process aside, whose value differs (floats compared exactly; NaN equals NaN; an
        empty field equals None). A column the stored row lacks (an earlier store
        format) is not compared. Empty when this build reproduces the row.
    """
    fresh = run_task(experiment, row["n"], row["rep"])
    return [(c, row[c], fresh.get(c)) for c in row
            if c not in TIMING_COLUMNS and not _same(row[c], fresh.get(c))]


def verify_rows(experiment, rows, count=6, *, seed=0, log=None):
    """Re-run a sample of stored rows; raise unless every one is reproduced.

    The sample is the largest sample size's last ``count // 2`` replications (the longest
    fits, where two builds' fits part first) and a draw of the rest from ``seed``.

    Parameters
    ----------
    experiment : Experiment
    rows : list of dict
        Stored rows (:func:`read_csv_rows`).
    count : int, default=6
        Rows to re-run (all of them when there are fewer); 0 checks nothing.
    seed : int, default=0
        Seed of the random part of the sample.
    log : callable, optional
        Called with one line per row checked.

    Returns
    -------
    list of tuple of int
        The ``(n, rep)`` of the rows checked, in the order they were run.

    Raises
    ------
    RestoreError
        At the first row this build does not reproduce, naming the task and up to four
        columns that differ.
    """
    if count < 0:
        raise ValueError(f"count: expected a number of rows >= 0, got {count!r}.")
    sample = []
    if count and rows:
        largest = max(r["n"] for r in rows)
        top = sorted((i for i, r in enumerate(rows) if r["n"] == largest),
                     key=lambda i: rows[i]["rep"])[-max(1, count // 2):]
        rest = [i for i in range(len(rows)) if i not in set(top)]
        drawn = np.random.default_rng(seed).choice(
            len(rest), size=min(count - len(top), len(rest)), replace=False)
        sample = top + [rest[j] for j in sorted(drawn)]
    checked = []
    for i in sample:
        row = rows[i]
        differences = rerun_differences(experiment, row)
        if differences:
            listed = "; ".join(f"{c}: {a!r} -> {b!r}" for c, a, b in differences[:4])
            raise RestoreError(
                f"task (n = {row['n']}, replication {row['rep']}) gives other numbers on "
                f"this build of gmoe ({listed}); resuming would mix two builds' results. "
                "Rerun the grid from scratch, or resume with the build that computed it.")
        checked.append((row["n"], row["rep"]))
        if log is not None:
            log(f"  n = {row['n']}, replication {row['rep']}: reproduced")
    return checked
