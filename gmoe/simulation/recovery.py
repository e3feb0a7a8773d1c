"""Reading a store that a killed run left mid-commit (SQLite's hot journal).

A run commits each row in a transaction; SQLite first copies the pages it will change to
a rollback journal (``<store>-journal``) and deletes it once the commit is complete. A run
killed inside a commit leaves the journal behind ("hot"), and the store must be rolled
back to its last complete commit before anyone reads it. A read-write connection does
that on its first read, so the next run recovers the store as it opens it; a read-only
connection (how ``report`` and ``export`` read) cannot, and fails with SQLite's
``SQLITE_READONLY_ROLLBACK`` ("attempt to write a readonly database").

:func:`connect_read_only` therefore rolls such a journal back itself, as the next run
would, under the store's writer lock (:mod:`gmoe.simulation.lock`): holding it means no
live run is writing the store, so the journal belongs to a dead one. Only the unfinished
commit is undone; every row committed before it stays. When the rollback cannot be done
here (a read-only directory or file, a run starting at that moment) it raises
:class:`RecoveryError`, saying what to do.
"""

import sqlite3
from pathlib import Path

from .lock import LockBusyError, WriterLock, describe_owner, store_lock_path

__all__ = ["RecoveryError", "connect_read_only"]


class RecoveryError(RuntimeError):
    """A store left mid-commit that cannot be rolled back here (a one-line message)."""


def _is_hot_journal(err):
    """Whether a read failed only because a hot journal needs rolling back."""
    return getattr(err, "sqlite_errorname", None) == "SQLITE_READONLY_ROLLBACK"


def connect_read_only(db_path):
    """A read-only connection to the store at ``db_path``, rolled back first if need be.

    Parameters
    ----------
    db_path : pathlib.Path
        An existing file.

    Returns
    -------
    sqlite3.Connection
        Opened with ``mode=ro``; any other problem with the file (not a database, no
        permission to read it) is left for the caller's first query to report.

    Raises
    ------
    sqlite3.Error
        The file cannot be opened at all.
    RecoveryError
        A killed run's unfinished commit is in the way and cannot be rolled back here.
    """
    uri = f"{Path(db_path).resolve().as_uri()}?mode=ro"
    conn = sqlite3.connect(uri, uri=True, timeout=60.0)
    try:
        conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as err:
        if not _is_hot_journal(err):
            return conn  # the caller's checks name the problem
        conn.close()
        roll_back(db_path)
        conn = sqlite3.connect(uri, uri=True, timeout=60.0)
    return conn


def roll_back(db_path):
    """Undo the unfinished commit a killed run left in the store at ``db_path``.

    Parameters
    ----------
    db_path : pathlib.Path

    Raises
    ------
    RecoveryError
        The store's writer lock is held (a run is opening the store, which rolls the
        commit back itself), or the lock file or the store cannot be written here.
    """
    db_path = Path(db_path)
    journal = db_path.resolve().name + "-journal"
    what = (f"{db_path} holds the unfinished commit of a run that was killed (its "
            f"journal {journal} is beside it), which a read-only reader cannot undo")
    rerun = ("run `gmoe-sim run` on the store again where it can be written (opening it "
             "rolls that commit back, keeping every committed row, and resumes the grid), "
             "then read it again")
    lock = WriterLock(store_lock_path(db_path))
    try:
        lock.acquire(store=str(db_path), purpose="rolling back a killed run's commit")
    except LockBusyError as err:
        raise RecoveryError(f"{what}, and a run ({describe_owner(err.owner)}) holds the "
                            "store now; opening it rolls the commit back: read it again "
                            "in a moment.") from None
    except OSError as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise RecoveryError(f"{what}; rolling it back needs the store's lock file, which "
                            f"cannot be opened here ({reason}): {rerun}.") from None
    try:
        conn = sqlite3.connect(db_path.resolve(), timeout=60.0)
        try:
            # A read-write connection's first read rolls the hot journal back: the store
            # returns to its last complete commit, as when the next run opens it.
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        finally:
            conn.close()
    except sqlite3.Error as err:
        raise RecoveryError(f"{what}, and rolling it back here failed ({err}): "
                            f"{rerun}.") from None
    finally:
        lock.release()
