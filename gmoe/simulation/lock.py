"""The writer lock of a result store: one run at a time writes a store.

A run holds an exclusive advisory lock on ``<store>.lock`` (``flock`` on POSIX,
``msvcrt.locking`` on Windows) from the moment it opens the store until it closes it.
The operating system releases the lock when the process ends, however it ends (return,
exception, ``SIGKILL``, out-of-memory kill), so "the lock is free" means "no live process
is writing this store". That one fact serves two purposes:

* a second run on a store in use is refused at once, before it reads or creates anything;
* a run record left as ``'running'`` in a store whose lock is free belongs to a process
  that is gone, and the store marks it ``'interrupted'`` when it is next opened.

Recording a process id, host and start time instead would need the liveness check to run
on the host that wrote the record (a store can be opened from another machine, over a
shared file system or after copying it) and would be fooled by process-id reuse; the lock
needs neither. The lock file holds, as JSON, who holds the lock, only to name the owner
in the refusal message; it is never deleted (deleting a lock file while another process
waits on it lets two processes hold "the" lock on two different files). For the same
reason it lies beside the file a store's path leads to, symbolic links resolved
(:func:`store_lock_path`): every path to one store names one lock file.
"""

import json
import os
import socket
import sys
import time
from pathlib import Path

__all__ = ["LockBusyError", "WriterLock", "store_lock_path"]

if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    # Lock one byte far beyond the owner text: Windows locks are mandatory, and locking
    # the text itself would stop the refused process from reading who holds the lock.
    _LOCK_OFFSET = 1 << 30

    def _try_lock(fh):
        fh.seek(_LOCK_OFFSET)
        try:
            msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            fh.seek(0)
        return True

    def _unlock(fh):
        fh.seek(_LOCK_OFFSET)
        msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        fh.seek(0)

else:
    import fcntl

    def _try_lock(fh):
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fh):
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def store_lock_path(db_path):
    """The writer lock file of the store at ``db_path``: ``<store>.lock`` beside it.

    Symbolic links are resolved first (the store's name, or a directory on its path):
    locking ``link.sqlite.lock`` for a link to ``s.sqlite`` would let two runs write one
    store, and the second would mark the first's live run interrupted.

    Parameters
    ----------
    db_path : str or pathlib.Path
        The store, as given (it need not exist yet).

    Returns
    -------
    pathlib.Path
    """
    real = Path(db_path).resolve()
    return real.with_name(real.name + ".lock")


class LockBusyError(RuntimeError):
    """Another live process holds the lock.

    Attributes
    ----------
    owner : dict
        What the holder wrote in the lock file (``pid``, ``host``, ``started_at``,
        ``experiment``); empty when it had not written it yet.
    """

    def __init__(self, path, owner):
        self.path = Path(path)
        self.owner = owner
        super().__init__(f"{self.path} is held by {describe_owner(owner)}")


def describe_owner(owner):
    """``"pid 123 on host h, since 2024-05-01 12:00:01"`` from a lock file's content.

    Parameters
    ----------
    owner : dict

    Returns
    -------
    str
    """
    if not owner:
        return "another process"
    started = owner.get("started_at")
    when = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
            if isinstance(started, int | float) else "?")
    return f"pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, since {when}"


class WriterLock:
    """An exclusive, non-blocking lock on one file, released when its process ends.

    Parameters
    ----------
    path : str or pathlib.Path
        The lock file; created when missing, never deleted.
    """

    def __init__(self, path):
        self.path = Path(path)
        self._fh = None

    @property
    def held(self):
        """Whether this object holds the lock."""
        return self._fh is not None

    def acquire(self, **owner):
        """Take the lock at once or raise; record ``owner`` (and pid, host, time) in it.

        Parameters
        ----------
        **owner
            JSON-serialisable details shown to a process that is refused.

        Raises
        ------
        LockBusyError
            Another process holds the lock.
        OSError
            The lock file cannot be created or opened (a read-only directory, say).
        """
        if self._fh is not None:
            raise RuntimeError(f"{self.path}: this lock is already held by this object.")
        # "a+" creates the file without truncating what a current holder wrote.
        fh = open(self.path, "a+", encoding="utf-8")  # held until release()
        try:
            if not _try_lock(fh):
                raise LockBusyError(self.path, self._read(fh))
            info = {"pid": os.getpid(), "host": socket.gethostname(),
                    "started_at": time.time(), **owner}
            fh.seek(0)
            fh.truncate()
            fh.write(json.dumps(info, sort_keys=True))
            fh.flush()
        except BaseException:
            fh.close()
            raise
        self._fh = fh

    @staticmethod
    def _read(fh):
        try:
            fh.seek(0)
            return json.loads(fh.read() or "{}")
        except (OSError, ValueError):
            return {}

    def release(self):
        """Release the lock (the file stays); a no-op when not held."""
        if self._fh is None:
            return
        fh, self._fh = self._fh, None
        try:
            fh.seek(0)
            fh.truncate()  # no stale owner for the next refused process to name
            _unlock(fh)
        finally:
            fh.close()
