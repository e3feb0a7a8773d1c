"""Rebuild a result store from its exported rows, so that a grid goes on elsewhere.

A full-scale grid can take longer than a machine lives. Its rows, exported with
:func:`~gmoe.simulation.export_csv` (plain or gzipped CSV, NULL as an empty field; the
store keeps no empty text, so an empty field is always NULL), hold everything a store
holds about a task; :func:`restore_store` writes them back into a new store, which the
runner then resumes like any other: only the missing tasks run.

Rows are only worth continuing where this machine and build compute the same numbers:
another build of gmoe, another NumPy or BLAS, or an edited experiment file (whose task
definition the CSV does not record) may compute others. :func:`rerun_differences`
re-runs a task and lists the columns where the new row differs from the stored one (the
timings and the worker's process aside); :func:`verify_rows` re-runs a sample and raises
unless every row is reproduced. The tasks' seeds depend only on ``(seed, n, rep)``, so
the same code on the same numerical stack gives the same row bit for bit.
"""

import csv
import gzip
import io
import json
import os
import zlib
from pathlib import Path

import numpy as np

from .columns import BASE_COLUMNS, TIMING_COLUMNS
from .lock import LockBusyError, WriterLock, describe_owner, store_lock_path
from .store import (
    ResultStore,
    StoreBusyError,
    StoreError,
    _sql_value,
    describe_changes,
    task_path,
)
from .tasks import run_task

__all__ = ["RestoreError", "read_csv_rows", "rerun_differences", "restore_store",
           "verify_rows"]


class RestoreError(StoreError):
    """Rows that cannot be restored: a damaged file, not the experiment's, other numbers."""


#: Base columns a row may lack because an earlier store lacked them: ``convergence_gap``
#: came before the store had format numbers, ``metric_seconds`` with format 2, ``fitted``
#: with format 3. A store resumed gains them (NULL in the old rows).
_ADDED_SINCE = ("convergence_gap", "metric_seconds", "fitted")
#: Columns every row has a value in (NOT NULL in the store).
_REQUIRED = tuple(name for name, sql in BASE_COLUMNS if "NOT NULL" in sql)


def _sql_types(experiment):
    types = {name: sql.split()[0] for name, sql in BASE_COLUMNS}
    types.update({c: "REAL" for c in experiment.metric_columns()})
    return types


def _typed(text, sql_type, *, column, where):
    if text == "":
        return None
    try:
        if sql_type == "INTEGER":
            return int(text)
        if sql_type == "REAL":
            return float(text)
    except ValueError:
        raise RestoreError(f"{where}: column {column!r} expected a number ({sql_type}), "
                           f"got {text!r}.") from None
    return text


def _read_text(path):
    """The file's text (gunzipped when it ends in .gz); a damaged file is a RestoreError."""
    try:
        data = path.read_bytes()
        if path.name.endswith(".gz"):
            data = gzip.decompress(data)
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as err:
        raise RestoreError(f"{path}: expected a CSV file of result rows (gzipped when its "
                           f"name ends in .gz), got an unreadable file ({err}).") from None
    if text and not text.endswith("\n"):  # export_csv ends every row with a line break
        raise RestoreError(f"{path}: the file ends inside a row (no line break at its "
                           "end): it was cut short; export it again.")
    return text


def _check_exported_task(path, experiment):
    """Refuse rows exported from a store of another task definition than ``experiment``.

    :func:`~gmoe.simulation.export_csv` writes the definition beside the CSV; a CSV
    without one (an earlier export, a file written by hand) is checked row by row only.
    """
    sidecar = task_path(path)
    if not sidecar.is_file() and path.suffix == ".gz":  # gzipped after the export
        sidecar = task_path(path.with_suffix(""))
    if not sidecar.is_file():
        return
    try:
        task = json.loads(sidecar.read_text(encoding="utf-8"))
        stored = task["task_sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise RestoreError(f"{sidecar.name}: not the task definition export_csv writes "
                           f"({err}).") from None
    if stored != experiment.task_sha256:
        changes = describe_changes(task.get("task_definition", {}),
                                   experiment.task_definition())
        quick = ""
        if not experiment.is_quick:
            try:
                if experiment.quick_variant().task_sha256 == stored:
                    quick = " (these are the rows of its --quick grid: add --quick)"
            except ValueError:  # the study has no quick grid
                pass
        raise RestoreError(
            f"{path.name}: its rows were computed under another task definition than "
            f"{experiment.path.name}{' [quick]' if experiment.is_quick else ''} (task hash "
            f"{stored[:12]} in {sidecar.name}, {experiment.task_sha256[:12]} in the file; "
            f"changed: {'; '.join(changes) or '?'}){quick}.")


def _quick_hint(experiment, row):
    """A hint when a row that the full grid refuses is a task of the study's quick grid.

    Only for a row whose seed and spawn key are right: its size or replication alone put
    it outside the grid.
    """
    if experiment.is_quick or row["seed_entropy"] != str(experiment.seed) \
            or row["spawn_key"] != f"{row['n']},{row['rep']}":
        return ""
    try:
        quick = experiment.quick_variant()
    except ValueError:  # the study has no quick grid
        return ""
    if row["n"] in set(quick.sizes) and 0 <= row["rep"] < quick.replications:
        return " (a task of the study's --quick grid: restore these rows with --quick)"
    return ""


def read_csv_rows(csv_path, experiment):
    """The typed rows of a CSV of a store's rows (``export_csv``'s format, or gzipped).

    Parameters
    ----------
    csv_path : str or pathlib.Path
        The CSV (``.csv`` or ``.csv.gz``, UTF-8): a header, then one task per row.
    experiment : Experiment
        The experiment the rows belong to: its columns, seed, sizes and replications.

    Returns
    -------
    list of dict
        One dict per task with a value for every column of the file, typed as the store
        types them (integers, floats, text); an empty field is None.

    Raises
    ------
    FileNotFoundError
        If there is no file at ``csv_path``.
    RestoreError
        If the file cannot be read (not gzip, truncated, not UTF-8 or not CSV), its header
        lacks a column of the experiment (other than one an earlier store lacked:
        ``convergence_gap``, ``metric_seconds``, ``fitted``) or has one the experiment
        does not, a row has too few or too many fields, no value where every row has one
        (``n``, ``rep``, ``seed_entropy``, ``spawn_key``, ``status``), a field that is not
        a number where one is expected, or a row is not a task of the experiment (another
        seed, a sample size or replication outside its grid, a spawn key other than
        ``"n,rep"``, a task twice). The message names the file and the line.
    """
    path = Path(csv_path)
    _check_exported_task(path, experiment)
    types = _sql_types(experiment)
    reader = csv.DictReader(io.StringIO(_read_text(path), newline=""))
    try:
        header = reader.fieldnames or []
        unknown = [c for c in header if c not in types]
        missing = [c for c in types if c not in header and c not in _ADDED_SINCE]
        if unknown or missing:
            raise RestoreError(
                f"{path.name}: expected the columns of experiment {experiment.name!r}, got "
                f"a header with unknown columns [{', '.join(unknown) or 'none'}] and without "
                f"[{', '.join(missing) or 'none'}].")
        rows, sizes, seen = [], set(experiment.sizes), set()
        for raw in reader:
            where = f"{path.name}, line {reader.line_num}"
            if None in raw or None in raw.values():
                raise RestoreError(f"{where}: expected {len(header)} fields (the header's), "
                                   "got " + ("more" if None in raw else "fewer") + ".")
            row = {c: _typed(text, types[c], column=c, where=where)
                   for c, text in raw.items()}
            empty = [c for c in _REQUIRED if row[c] is None]
            if empty:
                raise RestoreError(f"{where}: expected a value in every row's "
                                   f"{', '.join(map(repr, empty))}, got an empty field.")
            key = (row["n"], row["rep"])
            if (row["seed_entropy"] != str(experiment.seed) or row["n"] not in sizes
                    or not 0 <= row["rep"] < experiment.replications
                    or row["spawn_key"] != f"{row['n']},{row['rep']}" or key in seen):
                raise RestoreError(
                    f"{where}: expected a task of experiment {experiment.name!r} (seed "
                    f"{experiment.seed}, one of its {len(sizes)} sample sizes, replication "
                    f"below {experiment.replications}, spawn key 'n,rep', each task once), "
                    f"got seed {row['seed_entropy']}, n = {row['n']}, replication "
                    f"{row['rep']}, spawn key {row['spawn_key']!r}"
                    + (" again" if key in seen else _quick_hint(experiment, row)) + ".")
            seen.add(key)
            rows.append(row)
    except csv.Error as err:
        raise RestoreError(f"{path.name}, line {reader.line_num}: not CSV ({err}).") from None
    return rows


def restore_store(db_path, experiment, rows, *, runs=(), source):
    """Write exported rows into a new result store for ``experiment``.

    The store is built in a temporary file beside ``db_path`` and moved there only once
    every row is stored: a restore that fails leaves no store behind (a half-made one
    would be resumed as if the grid had not begun). Throughout, the restore holds the
    destination's writer lock (:mod:`gmoe.simulation.lock`), so that no run starts a
    store there meanwhile, and the final step is a hard link, which fails rather than
    replace a file that appeared there all the same (written by another program); where
    the file system has no hard links, the lock alone guards that step.

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
        What the rows came from (the file's name, the build that computed them, the rows
        re-run), kept as JSON under ``restored_from`` in the store's metadata.

    Returns
    -------
    int
        The number of rows in the new store.

    Raises
    ------
    FileExistsError
        If ``db_path`` exists, or appears while the rows are restored (it is left as it
        is).
    StoreBusyError
        If a run holds the destination's writer lock.
    StoreError
        If the store cannot be written, or a row cannot be stored (a task twice, no value
        where the store needs one); nothing is left at ``db_path``.
    """
    db_path = Path(db_path)
    lock = WriterLock(store_lock_path(db_path))
    try:
        lock.acquire(experiment=experiment.name, store=str(db_path), purpose="restore")
    except LockBusyError as err:
        raise StoreBusyError(f"{db_path} is in use by a run ({describe_owner(err.owner)}): "
                             "restoring writes a new store and never merges into one; let "
                             "the run finish and keep its store, or give another "
                             "path.") from None
    except OSError as err:
        raise StoreError(f"cannot open {lock.path} ({getattr(err, 'strerror', None) or err}), "
                         "the lock file of the result store: check that its directory is "
                         "writable, or give another path.") from None
    try:
        return _restore_locked(db_path, experiment, rows, runs, source)
    finally:
        lock.release()


def _restore_locked(db_path, experiment, rows, runs, source):
    """:func:`restore_store` once the destination's writer lock is held."""
    exists = (f"{db_path} exists: restoring writes a new store and never merges into "
              "one; move it aside or give another path.")
    if db_path.exists():
        raise FileExistsError(exists)
    target = db_path.resolve()  # the file a symbolic link leads to, as a run writes it
    partial = target.with_name(f".{target.name}.restoring-{os.getpid()}")
    try:
        with ResultStore(partial, experiment) as store:
            count = store.restore(rows, runs=runs, source=source)
        try:
            # Unlike os.replace, a link never overwrites: a store another program made
            # meanwhile stays as it is.
            os.link(partial, target)
        except FileExistsError:
            raise FileExistsError(exists.replace(" exists:", " appeared while the rows were "
                                                 "restored (it is left as it is):")) from None
        except OSError:  # no hard links here (some network or FAT file systems)
            if target.exists():  # only a program that ignores the lock could have made it
                raise FileExistsError(exists) from None
            os.replace(partial, target)
    finally:
        for leftover in (partial, store_lock_path(partial)):
            leftover.unlink(missing_ok=True)
    return count


def _missing(value):
    """NULL in the store: None, an empty text or a NaN (the store keeps each as NULL)."""
    return _sql_value(value) is None


def _same(a, b):
    if _missing(a) or _missing(b):
        return _missing(a) and _missing(b)
    if isinstance(a, float | np.floating) or isinstance(b, float | np.floating):
        try:
            return float(a) == float(b)
        except (TypeError, ValueError):
            return False
    if isinstance(a, bool | int | np.integer) or isinstance(b, bool | int | np.integer):
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
        process aside, whose value differs: floats compared exactly; None, an empty text
        and NaN are all the store's NULL and equal one another. A column an earlier
        store format lacked is not compared where the stored row has no value in it: the
        row was computed before the column existed (a grid begun by an older build and
        resumed by a newer one holds both kinds of rows). Empty when the row is
        reproduced.
    """
    fresh = run_task(experiment, row["n"], row["rep"])
    return [(c, row[c], fresh.get(c)) for c in row
            if c not in TIMING_COLUMNS
            and not (c in _ADDED_SINCE and _missing(row[c]))
            and not _same(row[c], fresh.get(c))]


def _gap_text(row, differences):
    """How far the recomputed total log-likelihood is from the stored one, as text.

    It tells a fit of the same point rounded otherwise (a hair apart) from a fit of
    another point, though not why the fit moved; a fit that failed on one side gives the
    two statuses instead.
    """
    changed = {c: b for c, _, b in differences}
    if "status" in changed:
        return f"; the fit's status: {row['status']} stored, {changed['status']} here"
    fresh, stored = changed.get("mean_log_likelihood"), row.get("mean_log_likelihood")
    if fresh is None or _missing(fresh) or _missing(stored):
        return ""
    return (f"; the total log-likelihood, n times the mean, moved by "
            f"{row['n'] * (fresh - stored):+.3g}")


def verify_rows(experiment, rows, count=6, *, seed=0, log=None):
    """Re-run a sample of stored rows; raise unless every one is reproduced.

    The sample is the largest sample size's last ``max(1, count // 2)`` replications
    (the longest fits, where two builds' fits part first) and a draw of the rest from
    ``seed``: the same rows for the same file.

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
    ValueError
        If ``count`` is negative.
    RestoreError
        At the first row not reproduced, naming the task and up to four columns that
        differ.
    """
    if count < 0:
        raise ValueError(f"count: expected a number of rows >= 0, got {count!r}.")
    sample = []
    if count and rows:
        largest = max(r["n"] for r in rows)
        top = sorted((i for i, r in enumerate(rows) if r["n"] == largest),
                     key=lambda i: rows[i]["rep"])[-max(1, count // 2):][:count]
        chosen = set(top)
        rest = [i for i in range(len(rows)) if i not in chosen]
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
                f"task (n = {row['n']}, replication {row['rep']}) gives other numbers here "
                f"({listed}{_gap_text(row, differences)}): another build of gmoe, another "
                "numerical stack (another machine's BLAS can round otherwise) or another "
                "task definition computed the rows, and resuming would mix two kinds of "
                "results. Rerun the grid from scratch, or resume where the rows were "
                "computed; where only the machine changed, --verify 0 (count=0) goes on, "
                "pooling two machines' roundings.")
        checked.append((row["n"], row["rep"]))
        if log is not None:
            log(f"  n = {row['n']}, replication {row['rep']}: reproduced")
    return checked
