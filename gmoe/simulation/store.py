"""The SQLite result store: one row per finished task, committed as it arrives.

Tables
------
``results``
    One row per finished task, primary key ``(n, rep)``: the task's seed (``seed_entropy``,
    ``spawn_key``), ``status`` and ``error``, the fit's mean log-likelihood, iterations,
    convergence, timings (``fit_seconds``, ``metric_seconds``, ``task_seconds``), the kept
    fit's parameters (``fitted``, a JSON list: :func:`~gmoe.simulation.fitted_measure`),
    then one REAL column per metric of the experiment (:meth:`Experiment.metric_columns`).
    NaN is stored as NULL.
``meta``
    Key/value pairs: the experiment's name and path, the SHA-256 of the file's bytes
    (``file_sha256``), the SHA-256 and canonical JSON of its task definition
    (``task_sha256``, ``task_definition``), the column list, the store format
    (``schema_version``), the gmoe version, the hash of gmoe's sources (``code_sha256``;
    resuming with other sources warns), times; for a store rebuilt from exported rows
    (:mod:`gmoe.simulation.restore`), what they came from (``restored_from``).
``runs``
    One row per invocation of the runner: start and end time, status (``'running'``,
    ``'finished'``, ``'failed'``, ``'interrupted'``), workers, tasks planned and stored
    (counted as they are stored), wall time, the file hash and the build of gmoe
    (``code_sha256``) at the time, so that a grid resumed by several builds says which
    computed which rows (NULL in runs recorded before it was kept). A restored store
    keeps the records of the runs that computed its rows elsewhere
    (:meth:`ResultStore.restore`, one transaction with the rows).

One writer at a time
--------------------
A :class:`ResultStore` holds the store's writer lock (:mod:`gmoe.simulation.lock`, the
file ``<store>.lock`` beside it, symbolic links resolved) from the moment it opens until
it closes. A second run on
a store in use is refused at once with :class:`StoreBusyError`, whatever its experiment,
before it reads or creates anything. Under the lock, checking the stored task
definition, creating the tables and marking dead runs are one SQLite transaction
(``BEGIN IMMEDIATE``). The lock is released by the operating system when its process
ends, however it ends, so a ``runs`` record still ``'running'`` when the next run opens
the store belongs to a process that is gone: it is marked ``'interrupted'``. Readers
(:func:`read_rows`, :func:`read_meta`, :func:`export_csv`) take no lock; SQLite lets them
read while a run writes. A reader that finds the unfinished commit of a killed run rolls
it back under the writer lock, as the next run would (:mod:`gmoe.simulation.recovery`).

Resume and the two hashes
-------------------------
A store belongs to one task definition (truth, design, fit, start, metrics, seed: see
:mod:`gmoe.simulation.spec`). Opening it for an experiment whose ``task_sha256`` differs
raises :class:`StoreMismatchError`, which lists what changed and offers ``--force-new``
(move the old file aside, start afresh) or another ``--db``. A file whose bytes changed
but whose task definition did not (more sample sizes, more replications, a new
``[quick]``, comments) is accepted: the stored tasks are still exactly what the file
asks for, their seeds depend only on ``(seed, n, rep)``, and only the missing tasks run.
``file_sha256`` is updated and the change recorded in ``runs``.

Rows are inserted with ``ON CONFLICT (n, rep) DO NOTHING`` and committed one by one, so
a run killed at any point loses at most the tasks in flight and a resumed run neither
duplicates nor drops a row; a row that breaks another constraint (a NULL status, say)
raises instead of vanishing, as ``INSERT OR IGNORE`` would let it.

Older stores and errors
-----------------------
A store of an earlier format (``schema_version`` 1 lacks ``metric_seconds``, 2 lacks
``fitted``; the first stores of format 1 also lack ``convergence_gap``) is read as it is
and, when a run resumes it, gains the missing columns (NULL in its old rows); from then
on it is of the current format, which an older gmoe refuses to read or resume. A store
of a later format is refused. Every failure to open, read or write a store (a read-only
directory, a truncated, corrupted or foreign file) raises :class:`StoreError` with a
one-line message naming the file; reading a missing store raises
:class:`FileNotFoundError`.
"""

import csv
import functools
import hashlib
import json
import math
import socket
import sqlite3
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from ..exceptions import GMoEWarning
from ._toml import LARGEST_STORABLE_INTEGER
from .columns import BASE_COLUMNS
from .lock import LockBusyError, WriterLock, describe_owner, store_lock_path
from .recovery import RecoveryError, connect_read_only
from .spec import ExperimentError

__all__ = ["ResultStore", "StoreBusyError", "StoreError", "StoreMismatchError", "export_csv",
           "read_meta", "read_rows", "read_runs"]

#: Format of the store; 2 added ``results.metric_seconds``, 3 ``results.fitted``.
SCHEMA_VERSION = 3
_ADVICE = ("Run with --force-new to move the old results aside and start again, or give "
           "another --db PATH to keep both.")


@functools.cache
def code_sha256():
    """SHA-256 of gmoe's Python sources: identifies the build that computed a row.

    Returns
    -------
    str
        Hex digest over every ``*.py`` file of the installed package, in path order.
    """
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for source in sorted(root.rglob("*.py")):
        digest.update(source.relative_to(root).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


class StoreError(RuntimeError):
    """A result store that cannot be opened, read or written (a one-line message)."""


class StoreMismatchError(StoreError):
    """A result store that belongs to another task definition than the experiment's."""


class StoreBusyError(StoreError):
    """A result store that another live run is writing."""


def _reason(err):
    """The OS's words for an OSError (``Permission denied``), else its text."""
    return getattr(err, "strerror", None) or str(err)


def _damaged(path, err):
    return (f"{path} is not a readable gmoe result store ({err}): the file is truncated, "
            "corrupted or not a store.")


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for key, sub in value.items():
            out.update(_flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def describe_changes(old, new, limit=8):
    """Human-readable differences between two task definitions (dicts).

    Parameters
    ----------
    old, new : dict
    limit : int, default=8
        At most this many differences are listed.

    Returns
    -------
    list of str
        Lines ``"fit.max_iter: 2000 -> 1000"``.
    """
    a, b = _flatten(old), _flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            lines.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    if len(lines) > limit:
        lines = lines[:limit] + [f"... and {len(lines) - limit} more"]
    return lines


def _sql_value(value):
    """A row's value as the store keeps it: NaN and an empty text as NULL, flags as 0/1."""
    if value is None or (isinstance(value, str) and not value):
        return None  # an exported CSV cannot tell an empty text from NULL: keep only NULL
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return None if math.isnan(value) else value
    return value


class ResultStore:
    """The result store of one experiment (a SQLite file), open for writing.

    Opening takes the store's writer lock (released by :meth:`close`, or by the operating
    system when the process ends); see the module documentation.

    Parameters
    ----------
    path : str or pathlib.Path
        The database file; created (with its directory) when missing.
    experiment : Experiment
        The experiment whose results it holds.
    force_new : bool, default=False
        When the file holds another task definition, or is not a readable store, move it
        aside (to ``<path>.replaced-<time>``, beside the file a symbolic link leads to) and
        start a new store instead of raising.

    Attributes
    ----------
    path : pathlib.Path
    columns : list of str
        Every column of ``results``, in order.
    file_changed : bool
        The experiment file changed since the store was last used, but not its task
        definition (a grown grid, say).
    moved_to : pathlib.Path or None
        Where ``force_new`` moved the previous file.
    interrupted_runs : int
        Run records found ``'running'`` with no live writer, marked ``'interrupted'``.
    added_columns : list of str
        Columns an older store lacked and gained on opening.

    Raises
    ------
    StoreBusyError
        Another live run holds the store.
    StoreMismatchError
        The file holds results of another task definition, or is not a readable store
        (and ``force_new`` is False).
    StoreError
        The store cannot be created or written (a read-only directory, say).
    """

    def __init__(self, path, experiment, *, force_new=False):
        _check_storable(experiment)
        self.path = Path(path)
        self.experiment = experiment
        self.columns = [name for name, _ in BASE_COLUMNS] + experiment.metric_columns()
        self.file_changed = False
        self.moved_to = None
        self.interrupted_runs = 0
        self.added_columns = []
        self.conn = None
        self._run_id = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"cannot create the directory {self.path.parent} of the result "
                             f"store ({_reason(err)}); give another --db PATH.") from None
        if self.path.is_dir():
            raise StoreError(f"{self.path} is a directory, not a result store; give a file "
                             "path to --db.")
        # The file the path leads to: its lock, opened and moved aside through any link.
        self._file = self.path.resolve()
        self._lock = WriterLock(store_lock_path(self.path))
        try:
            self._lock.acquire(experiment=experiment.name, store=str(self.path))
        except LockBusyError as err:
            theirs = err.owner.get("experiment")
            raise StoreBusyError(
                f"{self.path} is in use by another run ("
                + (f"experiment {theirs!r}, " if theirs else "")
                + f"{describe_owner(err.owner)}); one run at a time writes a store: wait "
                "for it to finish, or give another --db PATH.") from None
        except OSError as err:
            raise StoreError(f"cannot open {self._lock.path} ({_reason(err)}), the lock file "
                             "of the result store: check that it and its directory are "
                             "writable, or give another --db PATH.") from None
        try:
            self._open(force_new)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------- set-up
    def _open(self, force_new):
        """Check and create the store in one transaction; move it aside when asked."""
        for attempt in range(2):
            try:
                self.conn = sqlite3.connect(self._file, timeout=60.0)
                # IMMEDIATE takes SQLite's write lock before the first read: what the check
                # sees is what the creation builds on (the writer lock already keeps other
                # runs out; this also covers any other program writing the file).
                self.conn.execute("BEGIN IMMEDIATE")
                problem = self._check_existing()
                if problem is None:
                    self._create()
                    self.conn.commit()
                    return
            except sqlite3.OperationalError as err:  # I/O: permissions, disk, locks
                raise StoreError(f"cannot write the result store {self.path} ({err}); give "
                                 "another --db PATH.") from None
            except sqlite3.DatabaseError as err:  # not a database, malformed
                problem = f"{_damaged(self.path, err)} {_ADVICE}"
            self.conn.close()  # rolls back
            self.conn = None
            if not force_new or attempt:
                raise StoreMismatchError(problem)
            self.file_changed = False
            self.moved_to = self._file.with_name(
                f"{self._file.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
            self._file.rename(self.moved_to)

    def _check_existing(self):
        """None when the file may be resumed (or is empty), else the reason it may not."""
        exp, conn = self.experiment, self.conn
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables:
            return None  # a new or empty database: nothing to protect
        if not {"meta", "results"} <= tables:
            return (f"{self.path} is an SQLite file but not a gmoe result store (no meta or "
                    f"results table). {_ADVICE}")
        _check_integrity(conn)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        version = _schema_version(meta)
        if version > SCHEMA_VERSION:
            return (f"{self.path} was written by a newer gmoe (store format {version}; this "
                    f"gmoe knows formats up to {SCHEMA_VERSION}): upgrade gmoe to resume it. "
                    + _ADVICE)
        if meta.get("task_sha256") == exp.task_sha256:
            stored = [r[1] for r in conn.execute("PRAGMA table_info(results)")]
            base = {name for name, _ in BASE_COLUMNS}
            unknown = [c for c in stored if c not in self.columns]
            absent = [c for c in self.columns if c not in stored and c not in base]
            if unknown or absent:  # the task hash covers the metric columns
                return (f"{self.path}: its results table does not match the experiment's "
                        f"columns (unknown: {', '.join(unknown) or 'none'}; missing: "
                        f"{', '.join(absent) or 'none'}). " + _ADVICE)
            self.file_changed = meta.get("file_sha256") != exp.file_sha256
            stored_code = meta.get("code_sha256")
            if stored_code is not None and stored_code != code_sha256():
                # The seeds make every task reproducible only for one build of gmoe.
                warnings.warn(
                    f"{self.path} holds rows computed by another build of gmoe (code hash "
                    f"{stored_code[:12]}, now {code_sha256()[:12]}); resuming mixes results "
                    "of two code versions. Use --force-new to recompute every task.",
                    GMoEWarning, stacklevel=4)
            return None
        try:
            old = json.loads(meta.get("task_definition", "{}"))
        except json.JSONDecodeError:
            old = {}
        changes = describe_changes(old, exp.task_definition())
        return (
            f"{self.path} holds results of experiment {meta.get('experiment_name', '?')!r} "
            f"with another task definition than {exp.path} (task hash "
            f"{meta.get('task_sha256', '?')[:12]} in the store, {exp.task_sha256[:12]} in "
            f"the file; changed: {'; '.join(changes or ['?'])}). Resuming would mix results "
            "of two experiments: only the sample sizes, the replications, [quick] and the "
            "description may change between runs. " + _ADVICE)

    def _create(self):
        """Create or update the tables and the metadata (inside the open transaction)."""
        from .. import __version__

        exp, conn = self.experiment, self.conn
        metric_types = [(c, "REAL") for c in exp.metric_columns()]
        cols = ",\n  ".join(f'"{n}" {t}' for n, t in [*BASE_COLUMNS, *metric_types])
        conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                     "value TEXT NOT NULL)")
        conn.execute(f"CREATE TABLE IF NOT EXISTS results (\n  {cols},\n  "
                     "PRIMARY KEY (n, rep))")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
            "started_at REAL, finished_at REAL, status TEXT, file_sha256 TEXT, "
            "n_jobs INTEGER, tasks_planned INTEGER, tasks_stored INTEGER, "
            "wall_seconds REAL, n_sizes INTEGER, replications INTEGER, quick INTEGER, "
            "host TEXT, gmoe_version TEXT, code_sha256 TEXT)")
        # Runs recorded before the build was kept have none (NULL): which build computed
        # their rows is known only as far as the restores recorded it.
        if "code_sha256" not in [r[1] for r in conn.execute("PRAGMA table_info(runs)")]:
            conn.execute("ALTER TABLE runs ADD COLUMN code_sha256 TEXT")
        # An older store lacks the base columns added since (metric_seconds, fitted): add them,
        # NULL in the old rows; _check_existing refused every other difference.
        stored = [r[1] for r in conn.execute("PRAGMA table_info(results)")]
        for name, sql_type in BASE_COLUMNS:
            if name not in stored:
                conn.execute(f'ALTER TABLE results ADD COLUMN "{name}" {sql_type}')
                self.added_columns.append(name)
        # We hold the writer lock, so no live process is writing this store: a run still
        # recorded as running died without recording its end (see gmoe.simulation.lock).
        self.interrupted_runs = conn.execute(
            "UPDATE runs SET status = 'interrupted' WHERE status = 'running'").rowcount
        now = repr(time.time())
        fresh = conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0
        values = {
            "schema_version": str(SCHEMA_VERSION),
            "experiment_name": exp.name,
            "experiment_path": str(exp.path),
            "file_sha256": exp.file_sha256,
            "task_sha256": exp.task_sha256,
            "task_definition": json.dumps(exp.task_definition(), sort_keys=True),
            "columns": json.dumps(self.columns),
            "gmoe_version": __version__,
            "code_sha256": code_sha256(),
            "updated_at": now,
        }
        if fresh:
            values["created_at"] = now
        conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         list(values.items()))

    @contextmanager
    def _writing(self):
        """One committed transaction; SQLite failures become one-line StoreErrors."""
        try:
            with self.conn:
                yield self.conn
        except sqlite3.DatabaseError as err:
            raise StoreError(f"cannot write the result store {self.path} ({err}).") from None

    # ------------------------------------------------------------- access
    def metadata(self):
        """The ``meta`` table as a dict.

        Returns
        -------
        dict of str to str
            Hashes, file path and format version recorded with the store.
        """
        return dict(self.conn.execute("SELECT key, value FROM meta").fetchall())

    def completed_keys(self):
        """The ``(n, rep)`` of every stored task, as a set.

        Returns
        -------
        set of tuple of int
        """
        return {(int(n), int(r)) for n, r in self.conn.execute("SELECT n, rep FROM results")}

    def count(self):
        """Number of stored rows.

        Returns
        -------
        int
        """
        return self.conn.execute("SELECT COUNT(*) FROM results").fetchone()[0]

    def insert(self, row):
        """Store one task's row and commit; a row already there is kept (returns False).

        During a run (:meth:`begin_run`) the run's ``tasks_stored`` is counted in the same
        transaction, and its ``wall_seconds`` set to the time since it began, so that the
        record of a killed run still says how many rows it stored and how long it ran to
        its last one (:meth:`end_run` sets the final values).

        Parameters
        ----------
        row : dict
            A value for every column (missing ones are stored as NULL).

        Returns
        -------
        bool
            Whether the row was new.
        """
        with self._writing() as conn:
            # Only a task already stored is skipped; any other broken constraint raises.
            cur = conn.execute(self._insert_sql + " ON CONFLICT (n, rep) DO NOTHING",
                               self._values(row))
            new = cur.rowcount == 1
            if new and self._run_id is not None:
                conn.execute("UPDATE runs SET tasks_stored = tasks_stored + 1, "
                             "wall_seconds = ? - started_at WHERE id = ?",
                             (time.time(), self._run_id))
        return new

    @property
    def _insert_sql(self):
        """``INSERT INTO results`` of every column, one placeholder each."""
        names = ", ".join(f'"{c}"' for c in self.columns)
        return f"INSERT INTO results ({names}) VALUES ({', '.join('?' * len(self.columns))})"

    def _values(self, row):
        """A row's values in column order, as the store keeps them."""
        return [_sql_value(row.get(c)) for c in self.columns]

    def rows(self):
        """Every stored row, ordered by ``(n, rep)``, as dicts.

        Returns
        -------
        list of dict
        """
        return _fetch(self.conn)

    def restore(self, rows, *, runs=(), source):
        """Store rows computed elsewhere (an exported grid) with the runs that computed them.

        Used by :func:`gmoe.simulation.restore_store` to rebuild a store from its
        exported rows, so that a grid goes on where it stopped on another machine. The
        rows, the run records and the ``restored_from`` metadata are one transaction:
        a failure stores none of them.

        Parameters
        ----------
        rows : list of dict
            Typed rows (:func:`gmoe.simulation.read_csv_rows`), none of them stored yet.
        runs : iterable of dict, default=()
            The earlier runs' records (``status``, ``n_jobs``, ``tasks_stored``,
            ``wall_seconds``, ``gmoe_version``; others optional, ``code_sha256`` among
            them), kept so that the grid's run time stays the sum of all its runs and
            each run's rows keep their build.
        source : dict
            What the rows came from (file name, the build that computed them); stored as
            JSON under ``restored_from`` in ``meta``.

        Returns
        -------
        int
            Rows stored.

        Raises
        ------
        StoreError
            If a row cannot be stored (a task already stored, a NULL where the store needs
            a value): nothing is stored.
        """
        run_fields = ("started_at", "finished_at", "status", "file_sha256", "n_jobs",
                      "tasks_planned", "tasks_stored", "wall_seconds", "n_sizes",
                      "replications", "quick", "host", "gmoe_version", "code_sha256")
        with self._writing() as conn:
            # Plain INSERT: the store is new, so any conflict is a broken row, never a skip.
            conn.executemany(self._insert_sql, [self._values(row) for row in rows])
            conn.executemany(
                f"INSERT INTO runs ({', '.join(run_fields)}) VALUES "
                f"({', '.join('?' for _ in run_fields)})",
                [[_sql_value(run.get(f)) for f in run_fields] for run in runs])
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                         ("restored_from", json.dumps(source, sort_keys=True)))
        return len(rows)

    # --------------------------------------------------------------- runs
    def begin_run(self, *, n_jobs, tasks_planned):
        """Record the start of a run.

        Parameters
        ----------
        n_jobs : int or None
            Workers of the run (as given).
        tasks_planned : int
            Tasks the run will attempt (those not stored yet).

        Returns
        -------
        int
            The run's id in the ``runs`` table.
        """
        from .. import __version__

        exp = self.experiment
        with self._writing() as conn:
            cur = conn.execute(
                "INSERT INTO runs (started_at, status, file_sha256, n_jobs, tasks_planned, "
                "tasks_stored, n_sizes, replications, quick, host, gmoe_version, "
                "code_sha256) VALUES (?, 'running', ?, ?, ?, 0, ?, ?, ?, ?, ?, ?)",
                (time.time(), exp.file_sha256, n_jobs, tasks_planned, len(exp.sizes),
                 exp.replications, int(exp.is_quick), socket.gethostname(), __version__,
                 code_sha256()))
        self._run_id = cur.lastrowid
        return self._run_id

    def end_run(self, run_id, *, status, tasks_stored, wall_seconds):
        """Record the end of run ``run_id``.

        Parameters
        ----------
        run_id : int
            From :meth:`begin_run`.
        status : str
            How the run ended (for example ``"finished"`` or ``"interrupted"``).
        tasks_stored : int
            Rows the run stored.
        wall_seconds : float
            Wall time of the run.
        """
        with self._writing() as conn:
            conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, tasks_stored = ?, "
                "wall_seconds = ? WHERE id = ?",
                (time.time(), status, tasks_stored, wall_seconds, run_id))
        if run_id == self._run_id:
            self._run_id = None

    def close(self):
        """Close the connection and release the writer lock."""
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        self._lock.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _check_storable(experiment):
    """Raise ExperimentError when a task's ``(n, rep)`` does not fit SQLite's INTEGER.

    A loaded study file has been checked already; this guards an experiment built in code.
    Checked before the store is opened: otherwise the first such row would raise only
    once its task had run (OverflowError at the insert), after every task before it.
    """
    largest = max(experiment.sizes, default=0)
    if largest > LARGEST_STORABLE_INTEGER:
        key = "[quick] n" if experiment.is_quick else "[sizes] n"
        raise ExperimentError(f"{experiment.path}: {key}: expected sample sizes of at most "
                              f"{LARGEST_STORABLE_INTEGER} (2**63 - 1, what the result store can "
                              f"hold), got {largest}.")
    if experiment.replications - 1 > LARGEST_STORABLE_INTEGER:
        key = "[quick] replications" if experiment.is_quick else "[sizes] replications"
        raise ExperimentError(f"{experiment.path}: {key}: expected at most "
                              f"{LARGEST_STORABLE_INTEGER + 1} (what the result store can "
                              f"hold), got {experiment.replications}.")


def _check_integrity(conn):
    """Raise sqlite3.DatabaseError when SQLite's quick check finds damage (truncation)."""
    problems = [r[0] for r in conn.execute("PRAGMA quick_check").fetchall()]
    if problems != ["ok"]:
        raise sqlite3.DatabaseError(problems[0] if problems else "integrity check failed")


def _schema_version(meta):
    try:
        return int(meta.get("schema_version", "1"))
    except ValueError:
        return SCHEMA_VERSION + 1  # unreadable: treat as unknown (newer) and refuse


def _fetch(conn):
    cur = conn.execute("SELECT * FROM results ORDER BY n, rep")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


@contextmanager
def _reading(db_path):
    """A read-only connection to a checked store; failures become one-line errors."""
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"No result store at {db_path}; run the experiment first.")
    if db_path.is_dir():
        raise StoreError(f"{db_path} is a directory, not a result store.")
    try:
        conn = connect_read_only(db_path)  # a killed run's unfinished commit rolled back
    except sqlite3.Error as err:
        raise StoreError(f"cannot open the result store {db_path} ({err}).") from None
    except RecoveryError as err:
        raise StoreError(str(err)) from None
    try:
        tables = {r[0] for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not {"meta", "results"} <= tables:
            raise StoreError(f"{db_path} is not a gmoe result store (no meta or results "
                             "table): the file is empty, truncated or another database.")
        _check_integrity(conn)
        yield conn
    except sqlite3.OperationalError as err:  # permissions, I/O
        raise StoreError(f"cannot read the result store {db_path} ({err}).") from None
    except sqlite3.DatabaseError as err:
        raise StoreError(_damaged(db_path, err)) from None
    finally:
        conn.close()


def read_rows(db_path):
    """Every row of a result store, ordered by ``(n, rep)``.

    Parameters
    ----------
    db_path : str or pathlib.Path

    Returns
    -------
    rows : list of dict
        NULL values are None.
    meta : dict
        The ``meta`` table.

    Raises
    ------
    FileNotFoundError
        No file at ``db_path``.
    StoreError
        The file is not a readable result store (truncated, corrupted, another database,
        a later store format) or cannot be read.
    """
    with _reading(db_path) as conn:
        meta = _checked_meta(conn, db_path)  # before the rows: a newer format may lack them
        return _fetch(conn), meta


def read_meta(db_path):
    """The ``meta`` table of a result store, without reading its rows.

    What a caller needs to compare two stores (task hash, code hash, columns) before it
    reads either's results.

    Parameters
    ----------
    db_path : str or pathlib.Path

    Returns
    -------
    dict
        The ``meta`` table, as :func:`read_rows` returns it.

    Raises
    ------
    FileNotFoundError, StoreError
        As :func:`read_rows`.
    """
    with _reading(db_path) as conn:
        return _checked_meta(conn, db_path)


def _checked_meta(conn, db_path):
    """The meta table of an open store, refused if its format is newer or incomplete."""
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    version = _schema_version(meta)
    if version > SCHEMA_VERSION:
        raise StoreError(f"{db_path} was written by a newer gmoe (store format "
                         f"{version}; this gmoe reads formats up to {SCHEMA_VERSION}).")
    missing = [k for k in ("columns", "task_sha256") if k not in meta]
    if missing:
        raise StoreError(f"{db_path} is not a gmoe result store (no {', '.join(missing)} "
                         "in its meta table).")
    return meta


def read_runs(db_path):
    """The ``runs`` table of a result store, oldest first.

    Parameters
    ----------
    db_path : str or pathlib.Path

    Returns
    -------
    list of dict
        One dict per run: ``id``, ``started_at``, ``finished_at``, ``status``, ``quick``,
        ``tasks_planned``, ``tasks_stored``, ... (empty for a store without runs).

    Raises
    ------
    FileNotFoundError, StoreError
        As :func:`read_rows`.
    """
    with _reading(db_path) as conn:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND "
                            "name = 'runs'").fetchone():
            return []
        cur = conn.execute("SELECT * FROM runs ORDER BY id")
        names = [d[0] for d in cur.description]
        return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


def export_csv(db_path, csv_path):
    """Write every row of a result store to a CSV file (NULL as an empty field).

    Beside it, ``<csv>.task.json`` holds the store's task definition and hash, which
    :func:`~gmoe.simulation.read_csv_rows` compares with the experiment it restores into.

    Parameters
    ----------
    db_path : str or pathlib.Path
        The SQLite store.
    csv_path : str or pathlib.Path
        The CSV file to write (its directory is created).

    Returns
    -------
    int
        Number of rows written.
    """
    rows, meta = read_rows(db_path)
    columns = json.loads(meta["columns"])
    csv_path = Path(csv_path)
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    task = {"task_sha256": meta["task_sha256"],
            "task_definition": json.loads(meta.get("task_definition", "{}"))}
    task_path(csv_path).write_text(json.dumps(task, indent=1, sort_keys=True) + "\n",
                                   encoding="utf-8")
    return len(rows)


def task_path(csv_path):
    """Where :func:`export_csv` writes the task definition of a CSV's rows."""
    return Path(f"{csv_path}.task.json")
