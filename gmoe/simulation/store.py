"""The SQLite result store: one row per finished task, committed as it arrives.

Tables
------
``results``
    One row per finished task, primary key ``(n, rep)``: the task's seed (``seed_entropy``,
    ``spawn_key``), ``status`` and ``error``, the fit's mean log-likelihood, iterations,
    convergence, timings, then one REAL column per metric of the experiment
    (:meth:`Experiment.metric_columns`). NaN is stored as NULL.
``meta``
    Key/value pairs: the experiment's name and path, the SHA-256 of the file's bytes
    (``file_sha256``), the SHA-256 and canonical JSON of its task definition
    (``task_sha256``, ``task_definition``), the column list, the gmoe version, the hash of
    gmoe's sources (``code_sha256``; resuming with other sources warns), times.
``runs``
    One row per invocation of the runner: start and end time, status, workers, tasks
    planned and stored, wall time, the file hash at the time.

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

Rows are inserted with ``INSERT OR IGNORE`` and committed one by one, so a run killed at
any point loses at most the tasks in flight and a resumed run neither duplicates nor
drops a row.
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
from pathlib import Path

import numpy as np

from ..exceptions import GMoEWarning
from .tasks import BASE_COLUMNS

__all__ = ["ResultStore", "StoreMismatchError", "export_csv", "read_rows"]

SCHEMA_VERSION = 1


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


class StoreMismatchError(RuntimeError):
    """A result store that belongs to another task definition than the experiment's."""


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
    if value is None:
        return None
    if isinstance(value, bool | np.bool_):
        return int(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        value = float(value)
        return None if math.isnan(value) else value
    return value


class ResultStore:
    """The result store of one experiment (a SQLite file).

    Parameters
    ----------
    path : str or pathlib.Path
        The database file; created (with its directory) when missing.
    experiment : Experiment
        The experiment whose results it holds.
    force_new : bool, default=False
        When the file holds another task definition, move it aside (to
        ``<path>.replaced-<time>``) and start a new store instead of raising.

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

    Raises
    ------
    StoreMismatchError
        The file holds results of another task definition (and ``force_new`` is False).
    """

    def __init__(self, path, experiment, *, force_new=False):
        self.path = Path(path)
        self.experiment = experiment
        self.columns = [name for name, _ in BASE_COLUMNS] + experiment.metric_columns()
        self.file_changed = False
        self.moved_to = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            problem = self._check_existing()
            if problem is not None:
                if not force_new:
                    raise StoreMismatchError(problem)
                self.moved_to = self.path.with_name(
                    f"{self.path.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
                self.path.rename(self.moved_to)
        self.conn = sqlite3.connect(self.path, timeout=60.0)
        self._create()

    # ------------------------------------------------------------- set-up
    def _check_existing(self):
        """None when the existing file may be resumed, else the reason it may not."""
        exp = self.experiment
        advice = ("Run with --force-new to move the old results aside and start again, or "
                  "give another --db PATH to keep both.")
        try:
            conn = sqlite3.connect(self.path, timeout=60.0)
            try:
                tables = {r[0] for r in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'")}
                if not tables:
                    return None  # an empty database: nothing to protect
                meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            finally:
                conn.close()
        except sqlite3.DatabaseError as err:
            return f"{self.path} is not a gmoe result store ({err}). {advice}"
        if meta.get("task_sha256") == exp.task_sha256:
            self.file_changed = meta.get("file_sha256") != exp.file_sha256
            stored_code = meta.get("code_sha256")
            if stored_code is not None and stored_code != code_sha256():
                # The seeds make every task reproducible only for one build of gmoe.
                warnings.warn(
                    f"{self.path} holds rows computed by another build of gmoe (code hash "
                    f"{stored_code[:12]}, now {code_sha256()[:12]}); resuming mixes results "
                    "of two code versions. Use --force-new to recompute every task.",
                    GMoEWarning, stacklevel=3)
            return None
        try:
            old = json.loads(meta.get("task_definition", "{}"))
        except json.JSONDecodeError:
            old = {}
        changes = describe_changes(old, exp.task_definition())
        return (
            f"{self.path} holds results of experiment {meta.get('experiment_name', '?')!r} "
            f"with another task definition than {exp.path} (task hash "
            f"{meta.get('task_sha256', '?')[:12]} in the store, {exp.task_sha256[:12]} in the "
            "file). Changed since the stored run:\n  " + "\n  ".join(changes or ["?"])
            + "\nResuming would mix results of two experiments. Only the sample sizes, the "
            "replications, [quick] and the description may change between runs. " + advice)

    def _create(self):
        from .. import __version__

        exp = self.experiment
        metric_types = [(c, "REAL") for c in exp.metric_columns()]
        cols = ",\n  ".join(f'"{n}" {t}' for n, t in [*BASE_COLUMNS, *metric_types])
        with self.conn:
            self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                              "value TEXT NOT NULL)")
            self.conn.execute(f"CREATE TABLE IF NOT EXISTS results (\n  {cols},\n  "
                              "PRIMARY KEY (n, rep))")
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS runs (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                "started_at REAL, finished_at REAL, status TEXT, file_sha256 TEXT, "
                "n_jobs INTEGER, tasks_planned INTEGER, tasks_stored INTEGER, "
                "wall_seconds REAL, n_sizes INTEGER, replications INTEGER, quick INTEGER, "
                "host TEXT, gmoe_version TEXT)")
            now = repr(time.time())
            fresh = self.conn.execute("SELECT COUNT(*) FROM meta").fetchone()[0] == 0
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
            self.conn.executemany("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                                  list(values.items()))
        stored = [r[1] for r in self.conn.execute("PRAGMA table_info(results)")]
        if stored != self.columns:  # pragma: no cover - the task hash covers the columns
            raise StoreMismatchError(f"{self.path}: the results table has columns {stored}, "
                                     f"expected {self.columns}.")

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

        Parameters
        ----------
        row : dict
            A value for every column (missing ones are stored as NULL).

        Returns
        -------
        bool
            Whether the row was new.
        """
        names = ", ".join(f'"{c}"' for c in self.columns)
        marks = ", ".join("?" for _ in self.columns)
        with self.conn:
            cur = self.conn.execute(f"INSERT OR IGNORE INTO results ({names}) VALUES ({marks})",
                                    [_sql_value(row.get(c)) for c in self.columns])
        return cur.rowcount == 1

    def rows(self):
        """Every stored row, ordered by ``(n, rep)``, as dicts.

        Returns
        -------
        list of dict
        """
        return _fetch(self.conn)

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
        with self.conn:
            cur = self.conn.execute(
                "INSERT INTO runs (started_at, status, file_sha256, n_jobs, tasks_planned, "
                "tasks_stored, n_sizes, replications, quick, host, gmoe_version) VALUES "
                "(?, 'running', ?, ?, ?, 0, ?, ?, ?, ?, ?)",
                (time.time(), exp.file_sha256, n_jobs, tasks_planned, len(exp.sizes),
                 exp.replications, int(exp.is_quick), socket.gethostname(), __version__))
        return cur.lastrowid

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
        with self.conn:
            self.conn.execute(
                "UPDATE runs SET finished_at = ?, status = ?, tasks_stored = ?, "
                "wall_seconds = ? WHERE id = ?",
                (time.time(), status, tasks_stored, wall_seconds, run_id))

    def close(self):
        """Close the connection."""
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _fetch(conn):
    cur = conn.execute("SELECT * FROM results ORDER BY n, rep")
    names = [d[0] for d in cur.description]
    return [dict(zip(names, values, strict=True)) for values in cur.fetchall()]


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
    """
    db_path = Path(db_path)
    if not db_path.exists():
        raise FileNotFoundError(f"No result store at {db_path}; run the experiment first.")
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=60.0)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        return _fetch(conn), meta
    finally:
        conn.close()


def export_csv(db_path, csv_path):
    """Write every row of a result store to a CSV file (NULL as an empty field).

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
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({c: "" if row.get(c) is None else row[c] for c in columns})
    return len(rows)
