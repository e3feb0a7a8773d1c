"""The ``gmoe-sim`` command line: list, run, report and export rate studies.

::

    gmoe-sim list
    gmoe-sim run NAME [--quick] [--n-jobs N | --scheduler ADDR] [--db PATH] [--out DIR]
                      [--force-new] [--no-progress] [--progress-every SECONDS]
                      [--import MODULE]
    gmoe-sim report NAME [--quick] [--db PATH] [--out DIR] [--all] [--summary geometric]
    gmoe-sim export NAME [--quick] [--db PATH] [--csv PATH]
    gmoe-sim restore NAME --csv PATH [--quick] [--db PATH] [--verify K]

``NAME`` is a path to a TOML file, or the stem of a file in ``./simulations/`` (the
current directory's, searched first) or among the studies shipped with gmoe
(:func:`builtin_studies_dir`). The store defaults to ``results/NAME.sqlite``
(``results/NAME-quick.sqlite`` with ``--quick``) under the current directory, and the
plots and slope table go to the directory of the same name (``results/NAME[-quick]/``).
Without ``--quick``, ``report`` and ``export`` use the quick store when it is the only
one, and report the grid of the run that wrote the store (quick or full). ``restore``
rebuilds a missing store from an exported CSV (plain or gzipped) after re-running ``K``
of its rows (default 6; ``--verify 0`` skips the check, for rows this very build
computed, on this machine or on one that rounds otherwise), so that ``run`` goes on where
the grid stopped on another machine. Every study command takes ``--import MODULE``
(repeatable): a module to import first, such as one that registers a gating family of
one's own, whose name the study file then uses.

Every error (a bad experiment file, a store in use, of another experiment, truncated or
unreadable, a directory that cannot be written) is one line on standard error and exit
status 2; nothing is run or written when a store or an output directory cannot be used.
"""

import argparse
import importlib
import json
import os
import re
import sqlite3
import sys
import tempfile
import time
from concurrent.futures import BrokenExecutor
from importlib import resources
from pathlib import Path

from .report import study_report, write_study_plots
from .restore import read_csv_rows, restore_store, verify_rows
from .runner import default_db_path, run_experiment
from .spec import ExperimentError, load_experiment
from .store import (
    StoreError,
    StoreMismatchError,
    describe_changes,
    export_csv,
    read_rows,
    read_runs,
)
from .tasks import TaskMemoryError

__all__ = ["builtin_studies_dir", "find_experiment", "main", "search_dirs"]

# In a source checkout (or an editable install) the studies are the repository's
# simulations/; a wheel carries a copy in the package, made at build time (setup.py).
_REPO_SIMULATIONS = Path(__file__).resolve().parents[2] / "simulations"
_PACKAGED_STUDIES = "studies"


class _CommandError(Exception):
    """A one-line error of the command line itself (an output that cannot be written)."""


def builtin_studies_dir():
    """The directory of the studies shipped with gmoe, or None.

    An installed gmoe carries them as package data, ``gmoe/simulation/studies/`` (copied
    at build time from the repository's ``simulations/``, their only source); a source
    checkout or an editable install reads the repository's ``simulations/`` directly.

    Returns
    -------
    pathlib.Path or None
    """
    packaged = resources.files(__package__) / _PACKAGED_STUDIES
    if packaged.is_dir():
        return Path(str(packaged))
    return _REPO_SIMULATIONS if _REPO_SIMULATIONS.is_dir() else None


def search_dirs():
    """The directories searched for ``NAME.toml``: ``./simulations``, then the built-in.

    Returns
    -------
    list of pathlib.Path
        The existing ones, without duplicates.
    """
    out = []
    for d in (Path.cwd() / "simulations", builtin_studies_dir()):
        if d is not None and d.is_dir() and d.resolve() not in [o.resolve() for o in out]:
            out.append(d)
    return out


def find_experiment(name):
    """Resolve ``name`` to an experiment file.

    Parameters
    ----------
    name : str
        A path to a file, or the stem of a ``.toml`` file in :func:`search_dirs`.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ExperimentError
        Nothing matches; the message lists the known names.
    """
    path = Path(name)
    if path.is_file():
        return path
    if not (path.suffix == ".toml" or len(path.parts) > 1):
        for d in search_dirs():
            candidate = d / f"{name}.toml"
            if candidate.is_file():
                return candidate
    known = sorted({p.stem for d in search_dirs() for p in d.glob("*.toml")})
    raise ExperimentError(
        f"No experiment {name!r}: not a file, and no {name}.toml in "
        f"{', '.join(str(d) for d in search_dirs()) or 'any simulations/ directory'}. "
        f"Known: {', '.join(known) or 'none'}.")


def _load(args):
    experiment = load_experiment(find_experiment(args.name))
    return experiment.quick_variant() if args.quick else experiment


def _db_path(args, experiment):
    return Path(args.db) if args.db else default_db_path(experiment)


def _stored_study(args):
    """The experiment variant and store of ``report`` and ``export``.

    ``--quick`` chooses the quick variant. Without it, the default store is
    ``results/NAME.sqlite``, or ``results/NAME-quick.sqlite`` when only that one exists;
    the variant is the one of the last run that wrote the store, so a store written by
    ``run NAME --quick`` is reported on its own grid.
    """
    full = load_experiment(find_experiment(args.name))
    if args.quick:
        return full.quick_variant(), _db_path(args, full.quick_variant())
    if args.db:
        db_path = Path(args.db)
    else:
        db_path = default_db_path(full)
        if not db_path.exists() and full.quick is not None:
            quick_path = default_db_path(full.quick_variant())
            db_path = quick_path if quick_path.exists() else db_path
    try:
        runs = read_runs(db_path)
    except (FileNotFoundError, StoreError):
        runs = []  # reading the rows reports the problem
    if runs and runs[-1]["quick"] and full.quick is not None:
        return full.quick_variant(), db_path
    return full, db_path


def _out_dir(args, db_path):
    """``--out``, else the store's path without ``.sqlite`` (``results/NAME[-quick]/``)."""
    return Path(args.out) if getattr(args, "out", None) else db_path.with_suffix("")


def _check_writable(directory, what, option):
    """Raise _CommandError unless ``directory`` exists and takes files, or can be created.

    A file is created and removed (or, for a missing directory, a directory in its
    nearest existing parent): permission bits alone do not tell (root, read-only mounts,
    immutable directories).
    """
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(f"{existing} is not a directory")
        if existing == directory:
            with tempfile.TemporaryFile(dir=directory):
                pass
        else:
            Path(tempfile.mkdtemp(dir=existing)).rmdir()
    except OSError as err:
        reason = getattr(err, "strerror", None) or str(err)
        raise _CommandError(f"cannot write {what} in {directory} ({reason}); give "
                            f"{option} elsewhere.") from None


def _seconds(value):
    if value != value:  # NaN: no task recorded it
        return "-"
    return f"{value:.3f} s" if value < 10 else f"{value:.1f} s"


def _time_lines(summary):
    """Where the run's time went: per-task medians of fit and metrics, then by n."""
    t = summary.times
    if t is None:
        return []
    share = ""
    if summary.task_seconds > 0:
        share = (f"; of the {summary.task_seconds:.1f} s the tasks took, fits "
                 f"{100 * summary.fit_seconds / summary.task_seconds:.0f}%, metrics "
                 f"{100 * summary.metric_seconds / summary.task_seconds:.0f}%")
    lines = [f"time per task (median of {t.tasks}): fit {_seconds(t.fit)}, metrics "
             f"{_seconds(t.metrics)}, whole task {_seconds(t.task)}{share}."]
    sizes = sorted(summary.times_by_n or {})
    if len(sizes) > 1:
        # A full study has hundreds of sizes: the smallest, middle and largest tell the trend.
        shown = sizes if len(sizes) <= 4 else [sizes[0], sizes[len(sizes) // 2], sizes[-1]]
        lines.append("  median by n: " + "; ".join(
            f"n={n}: fit {_seconds(summary.times_by_n[n].fit)}, metrics "
            f"{_seconds(summary.times_by_n[n].metrics)}" for n in shown))
    return lines


def _other_grid(experiment, meta):
    """The file's other grid (full or quick) when the store holds its task definition.

    The two grids of one file may differ in what a task computes (``[quick]`` can set
    ``n_starts`` or ``n_init``), so a store run with ``--quick`` has another task hash than
    the full grid, yet holds the same study. Returns ``"full"`` or ``"quick"``, or None
    when the store belongs to neither.
    """
    try:
        full = load_experiment(experiment.path)
    except ExperimentError:
        return None  # the file changed or vanished since: no grid to match
    grids = {"full": full, "quick": full.quick_variant() if full.quick is not None else None}
    for name, grid in grids.items():
        if grid is not None and grid.task_sha256 == meta.get("task_sha256"):
            return name
    return None


def _foreign_store(experiment, db_path, meta):
    """The refusal of a store of another experiment: both hashes and what changed."""
    try:
        stored = json.loads(meta.get("task_definition") or "{}")
    except json.JSONDecodeError:
        stored = {}
    changes = (describe_changes(stored, experiment.task_definition()) if stored else [])
    return StoreMismatchError(
        f"{db_path} holds results of another task definition than {experiment.path} "
        f"(task hash {meta['task_sha256'][:12]} in the store, "
        f"{experiment.task_sha256[:12]} in the file; changed: "
        f"{'; '.join(changes or ['not recorded in the store'])}): its rates would be "
        "reported under this file's truth and theory. Report it with the experiment file "
        f"that wrote it ({meta.get('experiment_path', 'recorded nowhere')}), or give "
        "this experiment's store with --db PATH.")


def _report_text(experiment, db_path, show_all=False, out_dir=None, summary="mean"):
    rows, meta = read_rows(db_path)
    notes = []
    if meta["task_sha256"] != experiment.task_sha256:
        # Only the file's other grid may be shown (as before, every stored row): another
        # experiment's numbers would be printed and plotted against this file's theory.
        grid = _other_grid(experiment, meta)
        if grid is None:
            raise _foreign_store(experiment, db_path, meta)
        notes.append(f"note: {db_path} was written by the {grid} grid of {experiment.path}, "
                     "whose tasks differ from this one's only in the [quick] starts; "
                     "showing the stored rows.")
        keep = rows
    else:
        grid = set(experiment.tasks())
        keep = [r for r in rows if (r["n"], r["rep"]) in grid]
        if len(keep) < len(rows):
            notes.append(f"note: {len(rows) - len(keep)} stored rows lie outside the current "
                         "grid and are not shown.")
        missing = len(grid) - len(keep)
        if missing:
            notes.append(f"note: {missing} of {len(grid)} tasks are not stored yet.")
    columns = experiment.metric_columns() if show_all else experiment.summary_columns()
    title = (f"{experiment.name}{' (quick)' if experiment.is_quick else ''}: mean over "
             f"replications by n  [{db_path}]")
    text = study_report(keep, experiment, columns=columns, title=title, summary=summary)
    parts = [text, *notes]
    if out_dir is not None and keep:
        written = write_study_plots(keep, experiment, out_dir, summary=summary)
        if written is None:
            parts.append("no plot: a rate needs two sample sizes with a value.")
        else:
            parts.append("wrote:")
            parts += [f"  {path}" for path in (written.rate_plot, written.panels,
                                               written.slope_table)]
    return "\n".join(parts)


def _cmd_list(args):
    dirs = search_dirs()
    if not dirs:
        print("No simulations/ directory and no built-in studies found.")
        return 0
    seen = {}
    for d in dirs:
        print(f"{d}:")
        for path in sorted(d.glob("*.toml")):
            if path.stem in seen:
                print(f"  {path.stem:<20} (hidden by {seen[path.stem]})")
                continue
            seen[path.stem] = path
            try:
                exp = load_experiment(path)
            except ExperimentError as err:
                print(f"  {path.stem:<20} INVALID: {err}")
                continue
            quick = exp.quick_variant() if exp.quick else None
            fit = exp.fit
            what = (f"{exp.truth.gating} k*={exp.truth.n_experts} -> {fit['gating']} "
                    f"k={fit['n_experts']}, {len(exp.sizes)} sizes x {exp.replications} reps "
                    f"= {len(exp.tasks())} tasks")
            if quick is not None:
                what += f" (quick: {len(quick.tasks())})"
            print(f"  {path.stem:<20} {what}")
            if exp.description:
                print(f"  {'':<20} {exp.description.strip().splitlines()[0]}")
    return 0


def _cmd_run(args):
    experiment = _load(args)
    db_path = _db_path(args, experiment)
    out_dir = _out_dir(args, db_path)
    # Before hours of fits: the store and the plots must be writable.
    _check_writable(db_path.parent, "the result store", "--db PATH")
    _check_writable(out_dir, "the plots", "--out DIR")
    print(f"{experiment.name}{' (quick)' if experiment.is_quick else ''}: "
          f"{len(experiment.tasks())} tasks ({len(experiment.sizes)} sizes x "
          f"{experiment.replications} replications) -> {db_path}", flush=True)
    started = time.perf_counter()
    try:
        summary = run_experiment(experiment, db_path, n_jobs=args.n_jobs,
                                 progress=not args.no_progress, force_new=args.force_new,
                                 progress_every=args.progress_every,
                                 log=lambda m: print(m, flush=True),
                                 scheduler=args.scheduler)
    except TaskMemoryError as err:
        raise _CommandError(
            f"{err}; the run stopped. The rows stored in {db_path} are kept and running "
            "the command again resumes, but this task needs that memory: free it (fewer "
            f"--n-jobs, another machine) or take n = {err.n} out of "
            f"{'[quick] n' if experiment.is_quick else '[sizes] n'} first.") from None
    except BrokenExecutor as err:
        if "un-serialize" in str(err):  # loky: a worker could not unpickle a task
            # The worker's traceback, as text: its last line naming an error says why.
            cause = [line.strip() for line in str(err.__cause__ or "").splitlines()
                     if re.match(r"\s*\w+(Error|Exception)\b", line)]
            raise _CommandError(
                "a worker process could not read its task"
                + (f" ({cause[-1]})" if cause else "")
                + "; the run stopped. A gating family of one's own must be importable by "
                "the workers: register it in a module given with --import. The rows "
                f"stored in {db_path} are kept.") from None
        # joblib's TerminatedWorkerError: a worker was killed (often by the kernel, for
        # memory); its own message is a paragraph on tracebacks, not what to do next.
        codes = re.search(r"exit codes of the workers are (\{.*?\})", str(err))
        raise _CommandError(
            "a worker process of the run died"
            + (f" (exit codes {codes.group(1)})" if codes else "")
            + f", killed or out of memory; the run stopped. The rows stored in {db_path} "
            "are kept: running the command again resumes (with fewer --n-jobs if memory "
            "ran out).") from None
    except Exception as err:
        if not _is_killed_dask_worker(err):
            raise
        raise _CommandError(
            f"{err.allowed_failures + 1} Dask workers died running one task of the run "
            "(killed, or out of memory); the run stopped. The rows stored in "
            f"{db_path} are kept: running the command again resumes (with more memory per "
            "worker if it ran out).") from None
    wall = time.perf_counter() - started
    where = "Dask worker threads" if summary.backend == "dask" else "workers"
    print(f"stored {summary.tasks_stored} rows ({summary.failures} not ok) with "
          f"{summary.n_jobs} {where} in {wall:.1f} s.")
    for line in _time_lines(summary):
        print(line)
    print(_report_text(experiment, db_path, out_dir=out_dir))
    return 0


def _is_killed_dask_worker(err):
    """Whether ``err`` is dask.distributed's ``KilledWorker`` (a task's workers all died).

    Looked up among the modules already imported: only a run on a Dask cluster, which
    imported ``distributed``, can raise it, and importing it for every command is slow.
    """
    killed = getattr(sys.modules.get("distributed"), "KilledWorker", None)
    return killed is not None and isinstance(err, killed)


def _cmd_report(args):
    experiment, db_path = _stored_study(args)
    out_dir = _out_dir(args, db_path)
    if db_path.exists():  # a missing store is reported by reading it
        _check_writable(out_dir, "the plots", "--out DIR")
    print(_report_text(experiment, db_path, show_all=args.all, out_dir=out_dir,
                       summary=args.summary))
    return 0


def _cmd_export(args):
    experiment, db_path = _stored_study(args)
    csv_path = Path(args.csv) if args.csv else db_path.with_suffix(".csv")
    if db_path.exists():
        _check_writable(csv_path.parent, "the CSV file", "--csv PATH")
    count = export_csv(db_path, csv_path)
    print(f"wrote {count} rows to {csv_path}")
    return 0


def _cmd_restore(args):
    experiment = _load(args)
    db_path = _db_path(args, experiment)
    if db_path.exists():
        raise _CommandError(f"{db_path} exists: restore writes a new store and never merges "
                            "into one; move it aside or give another --db PATH.")
    _check_writable(db_path.parent, "the result store", "--db PATH")
    csv_path = Path(args.csv)
    if not csv_path.is_file():
        raise FileNotFoundError(f"No CSV file at {csv_path} (--csv).")
    rows = read_csv_rows(csv_path, experiment)
    print(f"{experiment.name}: {len(rows)} rows in {csv_path}; re-running "
          f"{min(args.verify, len(rows))} of them", flush=True)
    verified = verify_rows(experiment, rows, args.verify,
                           log=lambda line: print(line, flush=True))
    count = restore_store(db_path, experiment, rows,
                          source={"file": csv_path.name, "rows": len(rows),
                                  "verified_rows": len(verified)})
    print(f"restored {count} rows into {db_path}; `gmoe-sim run` resumes it.")
    return 0


def _positive_seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def _verify_count(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number of rows >= 0, got {value}")
    return value


def _n_jobs(text):
    value = int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be a non-zero integer (-1: every core)")
    return value


def _parser():
    parser = argparse.ArgumentParser(
        prog="gmoe-sim", description="Run and inspect the convergence-rate studies of "
        "simulations/*.toml and of the studies shipped with gmoe.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiment files")

    def study(name, help_):
        p = sub.add_parser(name, help=help_)
        p.add_argument("name", metavar="NAME",
                       help="experiment: simulations/NAME.toml, a built-in study (see "
                            "`gmoe-sim list`) or a path to a TOML file")
        p.add_argument("--quick", action="store_true",
                       help="use the file's [quick] grid and replications (report and "
                            "export: the default when the store was written by a quick run)")
        p.add_argument("--db", metavar="PATH",
                       help="result store (default results/NAME[-quick].sqlite)")
        p.add_argument("--import", dest="imports", action="append", default=[],
                       metavar="MODULE",
                       help="import this Python module first (the current directory is "
                            "searched): one that registers a gating family of your own, "
                            "say; repeatable")
        return p

    def plots(p):
        p.add_argument("--out", metavar="DIR",
                       help="directory of the plots and slope table (default: the store's "
                            "path without .sqlite, results/NAME[-quick]/)")

    run = study("run", "run the tasks not yet stored, then print the report and write "
                "the plots")
    where = run.add_mutually_exclusive_group()
    where.add_argument("--n-jobs", type=_n_jobs, default=-1, metavar="N",
                       help="local parallel workers (default -1: every core)")
    where.add_argument("--scheduler", metavar="ADDR",
                       help="run on the Dask cluster of this scheduler (tcp://host:8786)")
    plots(run)
    run.add_argument("--force-new", action="store_true",
                     help="move aside a store of another task definition and start afresh")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--progress-every", type=_positive_seconds, metavar="SECONDS",
                     help="also print a line on the progress at most this often (tasks "
                          "stored, pace, time left): for output to a log file")
    report = study("report", "print mean losses by n, rates with intervals and theory; "
                   "write the plots")
    plots(report)
    report.add_argument("--all", action="store_true",
                        help="every metric column (per-cell parameter errors too)")
    report.add_argument("--summary", choices=("mean", "geometric"), default="mean",
                        help="fit the rates to the mean loss at each n (default, the "
                             "papers' choice) or to its geometric mean, which a few huge "
                             "losses cannot dominate (over-specified D2)")
    export = study("export", "write the stored rows to CSV")
    export.add_argument("--csv", metavar="PATH",
                        help="output file (default: the store's path with .csv)")
    restore = study("restore", "rebuild a missing store from its exported rows (the CSV of "
                    "`export`), re-running a sample of them first")
    restore.add_argument("--csv", metavar="PATH", required=True,
                         help="the exported rows (.csv or .csv.gz)")
    restore.add_argument("--verify", type=_verify_count, default=6, metavar="K",
                         help="rows re-run before restoring; any difference from the stored "
                              "row refuses the restore (default 6)")
    return parser


def main(argv=None):
    """Entry point of ``gmoe-sim``.

    Parameters
    ----------
    argv : list of str, optional
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status: 0 on success, 2 on an error in the experiment, the store or an output,
        or when a run stops because a task ran out of memory or a worker process died (one
        line on standard error, no traceback), 130 when interrupted.
    """
    args = _parser().parse_args(argv)
    command = {"list": _cmd_list, "run": _cmd_run, "report": _cmd_report,
               "export": _cmd_export, "restore": _cmd_restore}[args.command]
    try:
        _import_modules(getattr(args, "imports", []))
        return command(args)
    except (ExperimentError, StoreError, FileNotFoundError, _CommandError) as err:
        return _fail(err)
    except BrokenPipeError:
        # The reader went away (`gmoe-sim list | head`): stop quietly, as other tools do;
        # stdout goes to devnull so that the interpreter's final flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except sqlite3.Error as err:  # a store that broke after it was opened
        return _fail(f"result store: {err}")
    except MemoryError as err:  # a task that `restore` re-runs, say (TaskMemoryError)
        return _fail(str(err) or "out of memory")
    except OSError as err:  # an output that failed after the checks (disk full, say)
        where = f": {err.filename}" if err.filename else ""
        return _fail(f"{err.strerror or err}{where}")
    except KeyboardInterrupt:
        print("gmoe-sim: interrupted; finished tasks are stored, run again to resume.",
              file=sys.stderr)
        return 130


def _import_modules(names):
    """Import the ``--import`` modules, the current directory first on the path.

    A module that registers a gating family at import makes the family's name known to
    the study file; the worker processes import it again when they unpickle the study.
    """
    if names and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as `python -m` does
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # noqa: BLE001 (any failure of the user's module: one line)
            raise _CommandError(f"--import {name}: {type(err).__name__}: {err}") from err


def _fail(message):
    print(f"gmoe-sim: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
