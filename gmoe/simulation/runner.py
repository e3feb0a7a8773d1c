"""Run an experiment's tasks in parallel (joblib) and store each row as it arrives.

Locally the tasks run in joblib's default (loky) worker processes; given a
:class:`dask.distributed.Client` or a scheduler address they run on that Dask cluster,
one future per task. Either way the rows come back to this process, which writes
them to the same SQLite store, and each task draws from its own seed, so the stored numbers
do not depend on the backend.
"""

import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from joblib import Parallel, delayed, effective_n_jobs
from tqdm.auto import tqdm

from .store import ResultStore
from .tasks import run_task

__all__ = ["RunSummary", "TaskTimes", "default_db_path", "run_experiment"]


def default_db_path(experiment, *, root=None):
    """``results/NAME.sqlite`` (``NAME-quick.sqlite`` for a quick run) under ``root``.

    Parameters
    ----------
    experiment : Experiment
    root : str or pathlib.Path, optional
        Default: the current directory.

    Returns
    -------
    pathlib.Path
    """
    root = Path.cwd() if root is None else Path(root)
    suffix = "-quick" if experiment.is_quick else ""
    return root / "results" / f"{experiment.name}{suffix}.sqlite"


@dataclass(frozen=True)
class TaskTimes:
    """Per-task medians of where a task's time went (seconds).

    Medians, not means: one slow task (a fit that hit ``max_iter``) does not hide what a
    typical task costs. The three medians are taken separately, so ``fit + metrics`` need
    not equal ``task``; the rest of a task (data, starts) is small.

    Attributes
    ----------
    tasks : int
        Tasks the medians are over (those with the timing recorded).
    fit, metrics, task : float
        Median fit time (every start of the task), metric time (every metric column and
        its evaluation design), whole task time; NaN when no task recorded it.
    """

    tasks: int
    fit: float
    metrics: float
    task: float

    @classmethod
    def of(cls, rows):
        """The medians over ``rows`` (dicts with the timing columns of a result row).

        Parameters
        ----------
        rows : iterable of dict

        Returns
        -------
        TaskTimes
        """
        rows = list(rows)

        def median(column):
            values = [r[column] for r in rows if r.get(column) is not None]
            return float(np.median(values)) if values else float("nan")

        return cls(tasks=len(rows), fit=median("fit_seconds"),
                   metrics=median("metric_seconds"), task=median("task_seconds"))


@dataclass(frozen=True)
class RunSummary:
    """What one call to :func:`run_experiment` did.

    Attributes
    ----------
    db_path : pathlib.Path
    tasks_total : int
        Tasks of the grid.
    tasks_before : int
        Of them, already stored when the run began.
    tasks_stored : int
        Rows stored by this run.
    failures : int
        Of them, rows whose status is not 'ok'.
    wall_seconds : float
        Wall time of the parallel section (workers start, tasks, stores).
    fit_seconds : float
        Sum of the stored rows' fit times (this run's rows).
    task_seconds : float
        Sum of the stored rows' task times (data, fits, metrics).
    metric_seconds : float
        Sum of the stored rows' metric times.
    n_jobs : int
        Workers used (with Dask: the cluster's worker threads when the run began).
    backend : str
        ``'loky'`` (local joblib workers), ``'dask'``, or the joblib backend that a
        caller's ``parallel_config`` chose (``'threading'``, ...).
    times : TaskTimes or None
        Per-task medians of this run's rows (None when it stored none).
    times_by_n : dict of int to TaskTimes
        The same for each sample size of this run's rows.
    """

    db_path: Path
    tasks_total: int
    tasks_before: int
    tasks_stored: int
    failures: int
    wall_seconds: float
    fit_seconds: float
    task_seconds: float
    n_jobs: int
    backend: str = "loky"
    metric_seconds: float = 0.0
    times: TaskTimes | None = None
    times_by_n: dict | None = None


def _active_backend_name():
    """The joblib backend the tasks will run on: 'loky' unless a parallel_config says else.

    A caller's ``with parallel_config(backend="dask")`` sends the tasks to Dask without
    ``client``; the run's summary should say so.
    """
    from joblib.parallel import get_active_backend

    name = type(get_active_backend()[0]).__name__.removesuffix("Backend").lower()
    return "dask" if name.startswith("dask") else name


def _client_of_a_dask_parallel_config():
    """The client of a caller's ``parallel_config(backend="dask")``, or None.

    The run then submits its tasks to that client one future per task, as with
    ``client=``, rather than through joblib's Dask backend, which waits forever when a
    worker dies.
    """
    from joblib.parallel import get_active_backend

    if _active_backend_name() != "dask":
        return None
    return getattr(get_active_backend()[0], "client", None)


def _dask_client(stack, client, scheduler):
    """The client to run on: ``client``, or a new one connected to ``scheduler``."""
    if client is not None and scheduler is not None:
        raise ValueError("give either client or scheduler, not both.")
    if client is not None:
        return client
    try:
        from distributed import Client
    except ImportError as err:  # pragma: no cover - the [dask] extra
        raise ImportError("running on a Dask scheduler needs dask.distributed: "
                          "pip install 'gmoe[dask]'") from err
    return stack.enter_context(Client(scheduler))


def _dask_rows(client, experiment, todo):
    """The tasks' rows as they finish on the cluster: one future per task, in ``todo``'s order.

    Submitted to the client directly rather than through joblib's Dask backend, which
    waits forever when a worker dies: a future re-raises the cluster's ``KilledWorker``
    instead. The tasks still queued are cancelled when the caller stops reading.
    """
    from distributed import as_completed

    # The experiment goes with each task (it is small): data scattered to a worker would be
    # lost with it, and every task still queued would fail on its loss.
    futures = [client.submit(run_task, experiment, n, rep, pure=False) for n, rep in todo]
    try:
        # On the client's own loop: a client made with set_as_default=False (joblib's, for
        # a parallel_config's scheduler_host) is not the default client as_completed finds.
        for future in as_completed(futures, loop=client.loop):
            yield future.result()
    finally:
        client.cancel(futures)


def progress_line(name, done, total, stored, seconds, failures=0):
    """One line on a run's progress: tasks stored, this run's pace, the time left at it.

    Parameters
    ----------
    name : str
        The experiment.
    done, total : int
        Tasks of the grid stored, and in all.
    stored : int
        Of them, stored by this run.
    seconds : float
        This run's time so far.
    failures : int, default=0
        This run's rows whose status is not 'ok'.

    Returns
    -------
    str
        ``"topk-exact: 2808 of 8000 tasks (35.1%); this run 200 in 11.8 min (17.0 per
        min); about 5.1 h left at this pace"``.
    """
    pace = stored / (seconds / 60.0) if seconds > 0 else float("inf")
    left = (total - done) / pace if pace > 0 else float("inf")
    when = f"{left:.0f} min" if left < 90 else f"{left / 60:.1f} h"
    return (f"{name}: {done} of {total} tasks ({100.0 * done / total:.1f}%); this run "
            f"{stored} in {seconds / 60:.1f} min ({pace:.1f} per min); about {when} left "
            "at this pace" + (f"; {failures} not ok" if failures else ""))


def run_experiment(experiment, db_path=None, *, n_jobs=-1, progress=True, force_new=False,
                   log=None, client=None, scheduler=None, progress_every=None):
    """Run every task of ``experiment`` not yet in the store at ``db_path``.

    Tasks run in ``n_jobs`` joblib workers, or on a Dask cluster (``client`` or
    ``scheduler``), each task pinned to one BLAS and numba thread, and
    their rows are written by this process as they finish (``generator_unordered``), one
    commit per row: a run stopped at any point resumes with the same call, recomputing
    only the tasks in flight. Tasks are started replication by replication (all sizes of
    replication 0, largest first, then replication 1, ...), so a grid stopped part way
    holds whole sweeps of the sizes. Task ``(n, rep)`` depends only on the experiment's task
    definition, its seed and ``(n, rep)``, so the stored numbers do not depend on
    ``n_jobs``, on the order the tasks finish in, or on interruptions.

    Parameters
    ----------
    experiment : Experiment
        From :func:`~gmoe.simulation.load_experiment` (``.quick_variant()`` for --quick).
    db_path : str or pathlib.Path, optional
        The SQLite store; default :func:`default_db_path`.
    n_jobs : int, default=-1
        Workers (joblib convention: -1 is every core).
    progress : bool, default=True
        Show a tqdm progress bar over finished tasks.
    force_new : bool, default=False
        Move aside a store that holds another task definition instead of raising.
    log : callable, optional
        Called with one-line messages (resuming, file changed, moved store).
    client : dask.distributed.Client, optional
        Run the tasks on this client's cluster (one future per task) instead of local
        workers; ``n_jobs`` is then ignored. The client is left open. A task whose
        workers died (killed, or out of memory) stops the run with the cluster's
        ``KilledWorker``, the rows stored kept. A caller's
        ``parallel_config(backend="dask")`` runs the tasks the same way, on its client.
    scheduler : str, optional
        Address of a Dask scheduler (``tcp://host:8786``): as ``client``, with a client
        connected for the run and closed afterwards.
    progress_every : float, optional
        Also pass ``log`` a line at most this often (seconds), after a task is stored: the
        tasks stored of the grid, this run's pace and the time left at that pace. For
        runs whose output goes to a file, where a progress bar is unreadable.

    Returns
    -------
    RunSummary

    Raises
    ------
    StoreMismatchError
        The store holds another task definition, or is damaged (see
        :mod:`gmoe.simulation.store`; ``force_new`` moves it aside instead).
    StoreBusyError
        Another live run is writing the store.
    StoreError
        The store cannot be created or written.
    """
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ValueError(f"n_jobs must be a non-zero integer (-1: every core), got "
                         f"n_jobs={n_jobs!r}.")
    if progress_every is not None and (isinstance(progress_every, bool) or not (
            isinstance(progress_every, int | float) and progress_every > 0)):
        raise ValueError(f"progress_every must be a number of seconds > 0, got "
                         f"progress_every={progress_every!r}.")
    log = log or (lambda message: None)
    db_path = default_db_path(experiment) if db_path is None else Path(db_path)
    store = ResultStore(db_path, experiment, force_new=force_new)
    if store.moved_to is not None:
        log(f"moved the previous store (another task definition) to {store.moved_to}")
    if store.interrupted_runs:
        log(f"marked {store.interrupted_runs} earlier run(s) of {db_path} as interrupted: "
            "recorded as running, but their process is gone")
    if store.added_columns:
        log(f"{db_path} was written by an older gmoe: added the column(s) "
            f"{', '.join(store.added_columns)} (empty in the rows stored before)")
    if store.file_changed:
        log(f"{experiment.path.name} changed since the stored run, but not what a task "
            "computes (grid, replications, [quick] or description): stored tasks are kept")
    tasks = experiment.tasks()
    done = store.completed_keys()
    todo = [task for task in tasks if task not in done]
    # Replication by replication, so that a grid stopped part way holds whole sweeps of
    # the sizes (a rate can be fitted from them); within a sweep the largest samples
    # first, so the longest tasks start early, which balances the workers.
    todo.sort(key=lambda task: (task[1], -task[0]))
    before = len(tasks) - len(todo)
    if before:
        log(f"resuming {db_path}: {before} of {len(tasks)} tasks already stored")
    if client is None and scheduler is None:
        client = _client_of_a_dask_parallel_config()
    use_dask = client is not None or scheduler is not None
    stack = ExitStack()
    try:
        if use_dask:
            dask_client = _dask_client(stack, client, scheduler)
            cores = sum(dask_client.ncores().values())
            log(f"running on the Dask cluster at {dask_client.scheduler.address} "
                f"({cores} worker threads)")
            workers = max(1, cores)
        else:
            workers = max(1, min(effective_n_jobs(n_jobs), len(todo)))
        backend = "dask" if use_dask else _active_backend_name()
    except BaseException:
        stack.close()
        store.close()
        raise
    run_id = store.begin_run(n_jobs=workers, tasks_planned=len(todo))
    stored = failures = 0
    fit_seconds = task_seconds = metric_seconds = 0.0
    timings = []
    status = "failed"
    started = last_line = time.perf_counter()
    rows = None
    try:
        if todo:
            if use_dask:
                rows = _dask_rows(dask_client, experiment, todo)
            else:
                parallel = Parallel(n_jobs=workers, return_as="generator_unordered",
                                    batch_size=1)
                rows = parallel(delayed(run_task)(experiment, n, rep) for n, rep in todo)
            with tqdm(total=len(todo), disable=not progress, unit="task", mininterval=1.0,
                      desc=experiment.name + (" (quick)" if experiment.is_quick else "")) \
                    as bar:
                for row in rows:
                    if store.insert(row):
                        stored += 1
                        failures += row["status"] != "ok"
                        fit_seconds += row["fit_seconds"] or 0.0
                        task_seconds += row["task_seconds"] or 0.0
                        metric_seconds += row["metric_seconds"] or 0.0
                        timings.append({c: row[c] for c in
                                        ("n", "fit_seconds", "metric_seconds", "task_seconds")})
                    bar.update(1)
                    if failures:
                        bar.set_postfix(failed=failures, refresh=False)
                    now = time.perf_counter()
                    if progress_every is not None and now - last_line >= progress_every:
                        last_line = now
                        log(progress_line(experiment.name, before + stored, len(tasks),
                                          stored, now - started, failures))
        status = "finished"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        if use_dask and rows is not None:
            # Cancels the tasks still queued on the cluster, whatever stopped the loop,
            # and before the client it needs is closed.
            rows.close()
        wall = time.perf_counter() - started
        store.end_run(run_id, status=status, tasks_stored=stored, wall_seconds=wall)
        store.close()
        stack.close()
    return RunSummary(db_path=db_path, tasks_total=len(tasks), tasks_before=before,
                      tasks_stored=stored, failures=failures, wall_seconds=wall,
                      fit_seconds=fit_seconds, task_seconds=task_seconds, n_jobs=workers,
                      backend=backend, metric_seconds=metric_seconds,
                      times=TaskTimes.of(timings) if timings else None,
                      times_by_n={n: TaskTimes.of(r for r in timings if r["n"] == n)
                                  for n in sorted({r["n"] for r in timings})})
