"""The convergence-rate simulation harness (see :ref:`theory-protocols`).

An experiment is a TOML file in ``simulations/`` (:mod:`gmoe.simulation.spec`): truth,
design, fit, start, sample sizes, replications, metrics, master seed. Each
``(n, replication)`` task draws its own data from
``SeedSequence(seed, spawn_key=(n, rep))`` (:mod:`gmoe.simulation.seeds`), fits, measures
(:mod:`gmoe.simulation.tasks`), and its row goes to a SQLite store as soon as it finishes
(:mod:`gmoe.simulation.store`); runs resume where they stopped. The ``gmoe-sim`` command
(:mod:`gmoe.simulation.cli`) lists, runs, reports and exports the studies.

Examples
--------
>>> from gmoe.simulation import load_experiment, run_experiment  # doctest: +SKIP
>>> exp = load_experiment("simulations/softmax-exact.toml").quick_variant()  # doctest: +SKIP
>>> run_experiment(exp, "results/softmax-exact-quick.sqlite", n_jobs=2)  # doctest: +SKIP

On a Dask cluster (same seeds, same store):

>>> from dask.distributed import Client  # doctest: +SKIP
>>> with Client("tcp://scheduler:8786") as client:  # doctest: +SKIP
...     run_experiment(exp, "results/softmax-exact-quick.sqlite", client=client)
"""

from .report import (
    format_report,
    study_report,
    study_setting,
    summarize,
    write_study_plots,
)
from .restore import (
    RestoreError,
    read_csv_rows,
    rerun_differences,
    restore_store,
    verify_rows,
)
from .runner import RunSummary, TaskTimes, default_db_path, run_experiment
from .seeds import task_seed_sequence, task_streams
from .spec import Experiment, ExperimentError, load_experiment, parse_sizes
from .start import draw_assignment, make_near_truth_start
from .store import (
    ResultStore,
    StoreBusyError,
    StoreError,
    StoreMismatchError,
    export_csv,
    read_meta,
    read_rows,
    read_runs,
)
from .tasks import (
    TaskMemoryError,
    fit_near_truth_starts,
    fitted_measure,
    make_evaluation_design,
    run_task,
    single_threaded,
    task_data,
    task_metrics,
)

__all__ = [
    "Experiment",
    "ExperimentError",
    "RestoreError",
    "ResultStore",
    "RunSummary",
    "StoreBusyError",
    "StoreError",
    "StoreMismatchError",
    "TaskMemoryError",
    "TaskTimes",
    "default_db_path",
    "draw_assignment",
    "export_csv",
    "fit_near_truth_starts",
    "fitted_measure",
    "format_report",
    "load_experiment",
    "make_evaluation_design",
    "make_near_truth_start",
    "parse_sizes",
    "read_csv_rows",
    "read_meta",
    "read_rows",
    "read_runs",
    "rerun_differences",
    "restore_store",
    "run_experiment",
    "run_task",
    "single_threaded",
    "study_report",
    "study_setting",
    "summarize",
    "task_data",
    "task_metrics",
    "task_seed_sequence",
    "task_streams",
    "verify_rows",
    "write_study_plots",
]
