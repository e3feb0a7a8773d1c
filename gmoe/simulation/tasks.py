"""One simulation task: draw data, fit, measure; returns one row of the result store.

A task never raises for a failed fit or metric: the row's ``status`` says what happened
(``'ok'``, ``'fit_failed'``, ``'metric_failed'``) and ``error`` holds the error text, so
that one bad replication cannot stop a run of thousands. Running out of memory is the
exception: it says nothing about the task's numbers (the same task fits on a machine with
more memory, or with fewer workers beside it), so it is never stored as a result; the
task raises :class:`TaskMemoryError` and the run stops, keeping the rows stored so far.
"""

import json
import os
import time
import traceback
import warnings
from contextlib import contextmanager

import numpy as np

from ..estimator import GaussianMoERegressor
from ..metrics import boundary_error, parameter_errors, voronoi_loss
from ..model import MixingMeasure, make_design, sample_moe
from . import distances as _distances
from .columns import BASE_COLUMNS
from .seeds import evaluation_seed_sequence, task_streams
from .start import make_near_truth_start

__all__ = ["TaskMemoryError", "fit_near_truth_starts",
           "fitted_measure", "make_evaluation_design", "run_task", "single_threaded",
           "task_data", "task_metrics"]

_MAX_TEXT = 2000


class TaskMemoryError(MemoryError):
    """Task ``(n, rep)`` ran out of memory; raised, never stored as a failed row.

    A row stored for it would be kept for good (a resumed run never recomputes a stored
    task), although the task may well succeed where more memory is free.

    Parameters
    ----------
    n : int
        The task's sample size.
    rep : int
        The task's replication.
    detail : str
        The original error's text (type, message and where it was raised).

    Attributes
    ----------
    n, rep : int
    detail : str
    """

    def __init__(self, n, rep, detail):
        self.n, self.rep, self.detail = int(n), int(rep), str(detail)
        super().__init__(f"task (n = {self.n}, replication {self.rep}) ran out of memory "
                         f"({self.detail})")

    def __reduce__(self):
        # Raised in a worker process and pickled back to the runner: rebuild it from its
        # fields (the default would call __init__ with the message alone).
        return type(self), (self.n, self.rep, self.detail)


@contextmanager
def single_threaded():
    """A context: BLAS/OpenMP (threadpoolctl) and numba on one thread, as a task runs."""
    import numba
    from threadpoolctl import threadpool_limits

    previous = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with threadpool_limits(limits=1):
            yield
    finally:
        numba.set_num_threads(previous)


def _error_text(err):
    """``Type: message (file:line in function)`` of the innermost frame."""
    text = "".join(traceback.format_exception_only(type(err), err)).strip()
    frames = traceback.extract_tb(err.__traceback__)
    if frames:
        last = frames[-1]
        text += f" ({os.path.basename(last.filename)}:{last.lineno} in {last.name})"
    return text[:_MAX_TEXT]


def make_evaluation_design(experiment):
    """The design the density distances and the boundary error average over.

    Parameters
    ----------
    experiment : Experiment

    Returns
    -------
    ndarray of shape (n_eval, n_features)
        Drawn, when random, from :func:`~gmoe.simulation.seeds.evaluation_seed_sequence`.
    """
    ev = experiment.metrics["evaluation"]
    return make_design(ev["n"], ev["kind"], low=ev["low"], high=ev["high"],
                       n_features=experiment.design["n_features"],
                       random_state=evaluation_seed_sequence(experiment.seed))


def task_data(experiment, n, rep):
    """The data of task ``(n, rep)``: the design, the responses and the task's streams.

    The same draws as :func:`run_task`, so that a task can be refitted or inspected alone.

    Parameters
    ----------
    experiment : Experiment
    n : int
    rep : int

    Returns
    -------
    X : ndarray of shape (n, n_features)
    y : ndarray of shape (n,)
    streams : TaskStreams
        The task's random streams; their ``start`` stream has not been drawn from yet.
    """
    streams = task_streams(experiment.seed, n, rep)
    d = experiment.design
    X = make_design(int(n), d["kind"], low=d["low"], high=d["high"],
                    n_features=d["n_features"], random_state=streams.data)
    y = sample_moe(experiment.truth, X, random_state=streams.data)
    return X, y, streams


def fit_near_truth_starts(experiment, X, y, streams, n):
    """Fit from each of the experiment's near-truth starts, in order.

    Parameters
    ----------
    experiment : Experiment
        With ``start.kind = "near_truth"``.
    X, y : ndarray
    streams : TaskStreams
        The task's streams (:func:`task_data`); its ``start`` stream is drawn from.
    n : int
        The sample size the start's noise schedule reads.

    Returns
    -------
    list of (GaussianMoERegressor or None, float, Exception or None)
        Per start: the fitted estimator (None if the fit raised), the fit's seconds and
        the exception the fit raised.

    Raises
    ------
    ValueError
        If the experiment's starts are not near-truth starts.
    """
    start = experiment.start
    if start["kind"] != "near_truth":
        raise ValueError(f"fit_near_truth_starts: the experiment's start kind is "
                         f"{start['kind']!r}; expected 'near_truth'.")
    params = experiment.estimator_params()
    results = []
    for _ in range(start["n_starts"]):
        # Each start's noise is drawn before its fit, so start j's noise never depends on
        # whether an earlier fit failed.
        init = make_near_truth_start(
            experiment.truth, params["n_experts"], n, streams.start,
            top_k=experiment.fit["top_k"], assignment=start["assignment"],
            gate_noise=start["gate_noise"], expert_noise=start["expert_noise"],
            var_noise=start["var_noise"], noise_exponent=start["noise_exponent"],
            var_noise_exponent=start["var_noise_exponent"], var_center=start["var_center"],
            protocol=start["protocol"], temperature_noise=start["temperature_noise"],
            temperature_noise_exponent=start["temperature_noise_exponent"])
        results.append(_fit_or_error(
            GaussianMoERegressor(**params, init_params=init, n_init=1,
                                 random_state=streams.fit_seed), X, y))
    return results


def _fit_or_error(est, X, y):
    """Fit ``est``; an error is returned, never raised.

    So that one failed start costs a task nothing while another fit stands.

    Parameters
    ----------
    est : GaussianMoERegressor
        Not fitted yet.
    X, y : ndarray

    Returns
    -------
    tuple
        ``(est, fit seconds, None)``, or ``(None, seconds spent, the exception)``.
    """
    t0 = time.perf_counter()
    try:
        est.fit(X, y)
    except MemoryError:
        raise  # not a property of this start: see TaskMemoryError
    except Exception as err:  # returned, never raised
        # The traceback stays (for the error's text), its frames' arrays do not.
        traceback.clear_frames(err.__traceback__)
        return None, time.perf_counter() - t0, err
    return est, est.fit_time_, None


def _fit(experiment, X, y, streams, n):
    """Fit from the experiment's start(s); the best log-likelihood wins.

    Returns (estimator or None, summed fit seconds, number of fits, failure notes).
    """
    start = experiment.start
    if start["kind"] == "data":
        est = GaussianMoERegressor(**experiment.estimator_params(),
                                   init_params=start["init_params"],
                                   n_init=start["n_init"], random_state=streams.fit_seed)
        est.fit(X, y)
        return est, est.fit_time_, start["n_init"], []
    results = fit_near_truth_starts(experiment, X, y, streams, n)
    data_starts = start.get("data_starts") or {}
    if start["n_starts"] == 1 and not data_starts and results[0][2] is not None:
        raise results[0][2]
    for strategy, count in data_starts.items():
        # The estimator's own starts, which know nothing of the truth: where the
        # likelihood has a higher maximum away from the near-truth one, they can reach it.
        results.append(_fit_or_error(
            GaussianMoERegressor(**experiment.estimator_params(), init_params=strategy,
                                 n_init=count, random_state=streams.fit_seed), X, y))
    labels = [f"start {j}" for j in range(start["n_starts"])] + [
        f"the {strategy} starts" for strategy in data_starts]
    notes = [f"{label} failed: {_error_text(error)}"
             for label, (_, _, error) in zip(labels, results, strict=True) if error is not None]
    fits = [est for est, _, _ in results if est is not None]
    if not fits:
        raise RuntimeError("every start failed: " + "; ".join(notes))
    best = max(fits, key=lambda e: e.lower_bound_)
    return (best, sum(seconds for _, seconds, _ in results),
            start["n_starts"] + sum(data_starts.values()), notes)


def task_metrics(experiment, fitted, X_eval):
    """Every metric column of the experiment for one fitted model.

    Parameters
    ----------
    experiment : Experiment
    fitted : MixingMeasure
    X_eval : ndarray
        The evaluation design (:func:`make_evaluation_design`).

    Returns
    -------
    values : dict
        Column name -> value; NaN for a metric that failed.
    notes : list of str
        One note per failed metric.
    """
    truth, cfg = experiment.truth, experiment.metrics
    values, notes = {}, []

    def attempt(columns, compute):
        names = [c.name for c in columns]
        try:
            values.update(compute())
        except MemoryError:
            raise  # not a property of this fit: see TaskMemoryError
        except Exception as err:  # recorded in the row, never raised
            values.update({name: np.nan for name in names})
            notes.append(f"{', '.join(names)}: {_error_text(err)}")

    def parameter_errors_of(columns, scale):
        pe = parameter_errors(fitted, truth, translation=cfg["translation"], scale=scale)

        def value(c):
            if c.is_atom_count:
                return float(np.sum(pe.cells == c.cell))
            field = getattr(pe, c.field) if c.cell is None else getattr(pe, c.field)[c.cell]
            return np.nan if field is None else float(field)  # a fit's lone expert: no tau

        return {c.name: value(c) for c in columns}

    rbar = cfg["rbar"] or None
    schema = experiment.metric_schema()
    for scale in cfg["scales"]:
        for col in (c for c in schema if c.is_voronoi and c.scale == scale):
            kind = "exact" if col.field == "d1" else "over"
            attempt([col], lambda kind=kind, scale=scale, col=col: {col.name: voronoi_loss(
                fitted, truth, kind=kind, rbar=rbar, translation=cfg["translation"],
                scale=scale)})
        cells = [c for c in schema if c.is_parameter_error and c.scale == scale]
        if cells:
            attempt(cells, lambda cells=cells, scale=scale: parameter_errors_of(cells, scale))
    boundary_kind = cfg["boundary_error"] or "fraction"
    distances = {d.column: d.function for d in _distances.DESIGN_DISTANCES}
    distances["boundary"] = lambda f, t, X: boundary_error(f, t, X, kind=boundary_kind)
    for col in (c for c in schema if c.field in distances):
        attempt([col], lambda col=col: {col.name: distances[col.field](fitted, truth, X_eval)})
    return values, notes


def fitted_measure(experiment, row):
    """The fit a result row stored, as a :class:`~gmoe.MixingMeasure` (None without one).

    Every metric of the row can be recomputed from it (:func:`task_metrics`): the stored
    parameters are exact to the bit.

    Parameters
    ----------
    experiment : Experiment
        The study the row belongs to (its fitted family and number of experts).
    row : dict
        A result row (:func:`run_task`, :func:`~gmoe.simulation.read_rows`).

    Returns
    -------
    MixingMeasure or None
        None when the row holds no fit: its fit failed, or an older gmoe (store format 2
        or earlier) computed it.

    Raises
    ------
    ValueError
        If the row's ``fitted`` value is not a list of the fitted family's parameters.
    """
    stored = row.get("fitted")
    # A missing fit: None from the store, NaN or '' from a CSV read by pandas or csv.
    if stored is None or stored == "" or (isinstance(stored, float) and np.isnan(stored)):
        return None
    params = experiment.estimator_params()
    k, d = params["n_experts"], experiment.design["n_features"]
    family = experiment.fit_family()
    # A template of the fit's shape and family; from_vector takes every value from the row.
    like = MixingMeasure(np.zeros((k, d)), np.zeros(k), np.zeros((k, d)), np.zeros(k),
                         np.ones(k), gating=family,
                         temperature=1.0 if family.uses_temperature else None)
    expected = like.to_vector().size
    shown = repr(stored if len(str(stored)) <= 60 else str(stored)[:57] + "...")

    def refuse(what):
        return ValueError(f"row ({row.get('n')}, {row.get('rep')}): its 'fitted' value must be "
                          f"a JSON list of the {expected} parameters of a {k}-expert "
                          f"{params['gating']} fit; got {shown} ({what}).")

    try:
        vector = json.loads(stored)
    except (TypeError, ValueError):
        raise refuse("not JSON") from None
    if not isinstance(vector, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in vector):
        raise refuse("not a list of numbers")
    if len(vector) != expected:
        raise refuse(f"{len(vector)} values")
    try:
        return MixingMeasure.from_vector(np.asarray(vector, dtype=np.float64), like)
    except ValueError as err:  # e.g. a variance <= 0, a reference gate off its convention
        raise refuse(str(err).rstrip(".")) from None


def run_task(experiment, n, rep):
    """Run task ``(n, rep)`` of ``experiment`` and return its result row.

    Draws ``X`` and ``y`` from the truth, fits from the experiment's start(s) (the best
    log-likelihood of ``n_starts`` near-truth starts and of any ``data_starts``, or the
    estimator's own ``n_init`` data-driven starts), and computes every metric column.
    BLAS and numba run on one thread. Fit and metric failures are recorded in the row,
    never raised; running out of memory is raised (:class:`TaskMemoryError`).

    Parameters
    ----------
    experiment : Experiment
    n : int
        Sample size.
    rep : int
        Replication index.

    Returns
    -------
    dict
        One value per column of :data:`~gmoe.simulation.columns.BASE_COLUMNS` and of
        ``experiment.metric_columns()``; NaN where undefined.

    Raises
    ------
    TaskMemoryError
        The task ran out of memory anywhere (data, fits, metrics); nothing is returned,
        so that the task stays to be run rather than stored as failed.
    """
    try:
        return _run_task(experiment, n, rep)
    except TaskMemoryError:
        raise
    except MemoryError as err:
        # The bare error does not say which task of thousands; its frames go (from None)
        # so that what the failed task allocated is freed before the run stops.
        raise TaskMemoryError(n, rep, _error_text(err)) from None


def _run_task(experiment, n, rep):
    """:func:`run_task` without the naming of a memory error."""
    started = time.perf_counter()
    row = {name: None for name, _ in BASE_COLUMNS}
    row.update({c: np.nan for c in experiment.metric_columns()})
    row.update(n=int(n), rep=int(rep), seed_entropy=str(experiment.seed),
               spawn_key=f"{int(n)},{int(rep)}", worker_pid=os.getpid())
    with single_threaded(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            X, y, streams = task_data(experiment, n, rep)
            est, fit_seconds, n_fits, notes = _fit(experiment, X, y, streams, int(n))
        except MemoryError:
            raise  # not a property of the task: run_task raises TaskMemoryError
        except Exception as err:  # recorded in the row, never raised
            row.update(status="fit_failed", error=_error_text(err))
            est = None
        if est is not None:
            row.update(mean_log_likelihood=float(est.lower_bound_), n_iter=int(est.n_iter_),
                       converged=int(bool(est.converged_)),
                       convergence_gap=float(est.convergence_gap_), n_starts=n_fits,
                       fit_seconds=float(fit_seconds),
                       degenerate_experts=",".join(map(str, est.degenerate_experts_)) or None,
                       fitted=json.dumps(est.mixing_measure_.to_vector().tolist()))
            measured = time.perf_counter()
            values, metric_notes = task_metrics(experiment, est.mixing_measure_,
                                                make_evaluation_design(experiment))
            row["metric_seconds"] = time.perf_counter() - measured
            row.update(values)
            row["status"] = "metric_failed" if metric_notes else "ok"
            all_notes = notes + metric_notes
            row["error"] = "; ".join(all_notes)[:_MAX_TEXT] if all_notes else None
    messages = sorted({f"{w.category.__name__}: {w.message}" for w in caught})
    row["warnings"] = " | ".join(messages)[:_MAX_TEXT] if messages else None
    row["task_seconds"] = time.perf_counter() - started
    row["finished_at"] = time.time()
    return row
