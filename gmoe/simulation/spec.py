"""Experiment files: a rate study as data (TOML), validated into an :class:`Experiment`.

An experiment file declares the true model, the design of ``X``, the fitted model, the
start, the EM settings, the sample-size grid, the replications, the metrics to record and a
master seed (see :ref:`theory-protocols`)::

    description = "Paper 1's reference protocol, exact-specified"
    seed = 20230501                       # master seed of every task's SeedSequence

    [truth]                               # a MixingMeasure; the last expert is the reference
    gating = "softmax"                    # softmax | topk | temperature | activation
    gate_coef = [[25.0], [0.0]]           # (k*, d)
    gate_intercept = [-8.0, 0.0]          # (k*,)
    expert_coef = [[-20.0], [20.0]]       # (k*, d)
    expert_intercept = [15.0, -5.0]       # (k*,)
    expert_var = [0.09, 0.16]             # (k*,) variances, not standard deviations
    # temperature = 0.25; top_k = 2; topk_selection = "affine"; activation = "tanh"

    [design]                              # X of every task
    kind = "grid"                         # grid (linspace(low, high, n)) | uniform | normal
    low = 0.0
    high = 1.0

    [fit]                                 # the estimator (GaussianMoERegressor)
    n_experts = 2
    gating = "softmax"                    # default: the truth's (top_k, activation, ... too)
    tol = 1e-4                            # Newton decrement of L (total log-likelihood units)
    max_iter = 2000
    reg_var = 1e-6

    [start]
    kind = "near_truth"                   # or "data" (init_params = "kmeans" | "random", n_init)
    n_starts = 1                          # near-truth starts per task, best log-likelihood kept
    # data_starts = { kmeans = 10, random = 10 }   # optional: data-driven starts too, best kept

    [sizes]
    n = [{ linspace = [100, 900, 5] }, { linspace = [1000, 100000, 195] }]
    replications = 40

    [metrics]
    voronoi = ["exact"]                   # "exact" -> column d1, "over" -> column d2
    parameter_errors = true
    hellinger = true
    total_variation = true

    [metrics.evaluation]                  # the design the density distances average over
    kind = "grid"
    n = 1000

    [quick]                               # what --quick runs instead
    n = [{ logspace = [100, 10000, 8] }]
    replications = 4

Sample sizes: integers, and tables ``{linspace = [start, stop, num]}`` (evenly spaced) or
``{logspace = [start, stop, num]}`` (geometrically spaced between the *values* start and
stop, not exponents), rounded to the nearest integer; several segments may be listed; the
grid is the sorted set of the values (duplicates after rounding count once).

Every error raised while reading a file is an :class:`ExperimentError` whose message names
the file and the key (``[fit] max_iter``) and says what was expected and what was found.

What defines a task
-------------------
:meth:`Experiment.task_definition` holds everything that determines the result of one
``(n, replication)`` task: truth, design, fit, start (with ``n_starts``), metrics, master
seed, with every default filled in. Its SHA-256 (:attr:`Experiment.task_sha256`) guards a
result store: the sample sizes, the replications, ``[quick]`` and ``description`` are not
part of it, so growing the grid or the replications keeps every stored task valid, while
any change to what a task computes is refused (see :mod:`gmoe.simulation.store`). The hash
of the file's bytes (:attr:`Experiment.file_sha256`) is recorded as well, for provenance.
"""

import copy
import dataclasses
import hashlib
import json
import math
import tomllib
from pathlib import Path

import numpy as np

from ..estimator import GaussianMoERegressor
from ..gates import available_gatings, gating_class, gating_options, make_gating
from ..model import MixingMeasure, make_design
from ..theory import DEFAULT_RBAR
from . import distances as _distances
from ._toml import LARGEST_STORABLE_INTEGER, ExperimentError, _describe, _Table, parse_sizes
from .columns import build_columns
from .start import START_PROTOCOLS

__all__ = ["Experiment", "ExperimentError", "TASK_FORMAT_VERSION", "load_experiment",
           "parse_sizes"]

#: Bumped only when the harness changes what a task computes (a new draw order, say), so
#: that stores written by an older harness are refused instead of silently mixed.
TASK_FORMAT_VERSION = 2

_DESIGN_KINDS = ("grid", "uniform", "normal")
_START_KINDS = ("near_truth", "data")
_VORONOI_KINDS = ("exact", "over")
_SCALES = ("identifiable", "raw")
_TRANSLATIONS = ("infimum", "none")
_VAR_CENTERS = ("truth", "published")

_TOP_KEYS = ("description", "seed", "truth", "design", "fit", "start", "sizes", "metrics",
             "quick")


# ------------------------------------------------------------------------ experiment
@dataclasses.dataclass(frozen=True)
class Experiment:
    """A validated rate study (read with :func:`load_experiment`).

    Attributes
    ----------
    name : str
        The file's stem.
    path : pathlib.Path
        The file.
    description : str
    seed : int
        Master seed: task ``(n, rep)`` draws from ``SeedSequence(seed, spawn_key=(n, rep))``.
    truth : MixingMeasure
        The true model.
    design : dict
        ``kind``, ``low``, ``high``, ``n_features``.
    fit : dict
        Estimator settings: ``n_experts``, ``gating``, ``top_k``, ``topk_selection``,
        ``activation``, ``temperature``, ``learn_temperature``, ``tol``, ``max_iter``,
        ``reg_var``.
    start : dict
        ``kind`` ('near_truth' or 'data') and its options.
    sizes : tuple of int
        The sample-size grid.
    replications : int
    metrics : dict
        What each task records (see :meth:`metric_schema`).
    quick : dict or None
        The ``[quick]`` overrides.
    file_sha256 : str
        SHA-256 of the file's bytes.
    is_quick : bool
        Whether the ``[quick]`` overrides are applied.
    """

    name: str
    path: Path
    description: str
    seed: int
    truth: MixingMeasure
    design: dict
    fit: dict
    start: dict
    sizes: tuple
    replications: int
    metrics: dict
    quick: dict | None
    file_sha256: str
    is_quick: bool = False

    # ---------------------------------------------------------------- variants
    def quick_variant(self):
        """Return the experiment with its ``[quick]`` overrides applied.

        Returns
        -------
        Experiment
            A copy with ``sizes``, ``replications`` and (when given) ``n_starts`` or
            ``n_init`` replaced, and ``is_quick=True``.

        Raises
        ------
        ExperimentError
            The file has no ``[quick]`` table.
        """
        if self.quick is None:
            raise ExperimentError(f"{self.path}: [quick]: missing; --quick needs a [quick] "
                                  "table with n and replications.")
        start = dict(self.start)
        for key in ("n_starts", "n_init"):
            if key in self.quick:
                start[key] = self.quick[key]
        return dataclasses.replace(self, sizes=self.quick["sizes"],
                                   replications=self.quick["replications"], start=start,
                                   is_quick=True)

    # ------------------------------------------------------------------- tasks
    def tasks(self):
        """Every ``(n, replication)`` pair of the grid, replications numbered from 0.

        Returns
        -------
        list of tuple of (int, int)
        """
        return [(n, rep) for n in self.sizes for rep in range(self.replications)]

    def task_definition(self):
        """Everything that determines one task's result, with defaults filled in.

        Returns
        -------
        dict
            JSON-serialisable: ``format``, ``seed``, ``truth``, ``design``, ``fit``,
            ``start``, ``metrics``. Not in it: the sizes, the replications, ``[quick]``
            and the description.
        """
        truth = self.truth
        truth_dict = {
            "gating": truth.gating,
            "gate_coef": truth.gate_coef.tolist(),
            "gate_intercept": truth.gate_intercept.tolist(),
            "expert_coef": truth.expert_coef.tolist(),
            "expert_intercept": truth.expert_intercept.tolist(),
            "expert_var": truth.expert_var.tolist(),
            "temperature": truth.temperature,
            "top_k": truth.top_k,
            "topk_selection": truth.topk_selection,
            "activation": truth.activation,
        }
        for key, value in truth.family.options().items():  # a registered family's own
            truth_dict.setdefault(key, value)
        metrics = copy.deepcopy(self.metrics)
        metrics["rbar"] = {str(k): v for k, v in sorted(metrics["rbar"].items())}
        return {"format": TASK_FORMAT_VERSION, "seed": self.seed, "truth": truth_dict,
                "design": dict(self.design), "fit": dict(self.fit),
                "start": dict(self.start), "metrics": metrics}

    @property
    def task_sha256(self):
        """SHA-256 of the canonical JSON of :meth:`task_definition`."""
        text = json.dumps(self.task_definition(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    def metric_schema(self):
        """The metric columns each task records, with what the theory says of each.

        Returns
        -------
        tuple of MetricColumn
            In store order; see :mod:`gmoe.simulation.columns` for the names.
        """
        return build_columns(self)

    def metric_columns(self):
        """Names of the metric columns each task records, in order.

        Returns
        -------
        list of str
            The names of :meth:`metric_schema` (see :mod:`gmoe.simulation.columns`).
        """
        return [column.name for column in self.metric_schema()]

    def summary_columns(self):
        """The metric columns a report shows by default (losses and distances).

        Returns
        -------
        list of str
            Every metric column except the per-cell parameter errors.
        """
        return [c.name for c in self.metric_schema() if not c.is_parameter_error]

    def fit_family(self):
        """The gating family the fits use, with its options.

        Returns
        -------
        GatingFamily
        """
        return _fit_family(self.fit)

    def estimator_params(self):
        """Keyword arguments of :class:`~gmoe.GaussianMoERegressor` shared by every fit.

        Returns
        -------
        dict
            Without ``init_params``, ``n_init`` and ``random_state``, which each task sets.
        """
        fit = self.fit
        params = dict(n_experts=fit["n_experts"], gating=fit["gating"], tol=fit["tol"],
                      max_iter=fit["max_iter"], reg_var=fit["reg_var"],
                      on_degenerate="warn")
        family_class = gating_class(fit["gating"])
        if set(family_class.OPTIONS) <= _ESTIMATOR_PARAMETERS:
            params.update({key: fit[key] for key in family_class.OPTIONS})
        else:  # a family registered with options of its own: given as an instance
            params["gating"] = self.fit_family()
        if family_class.uses_temperature:
            params["temperature"] = fit["temperature"]
        if fit["learn_temperature"] is not None:  # the family can learn tau
            params["learn_temperature"] = fit["learn_temperature"]
        return params


# ------------------------------------------------------------------------ loading
def load_experiment(path):
    """Read and validate an experiment file.

    Parameters
    ----------
    path : str or pathlib.Path
        A TOML file (see the module documentation for its layout).

    Returns
    -------
    Experiment

    Raises
    ------
    ExperimentError
        The file is missing, is not TOML, or a key is missing, unknown, of the wrong type
        or inconsistent with another; the message names the file and the key.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ExperimentError(f"{path}: cannot read the experiment file: {err}.") from err
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ExperimentError(f"{path}: not a valid TOML file: {err}.") from err

    top = _Table(path, "", doc)
    top.check_keys(_TOP_KEYS)
    description = top.string("description", "")
    seed = top.integer("seed", low=0)
    truth_table = top.sub("truth")
    truth = _read_truth(truth_table)
    design = _read_design(top.sub("design", required=False), truth)
    _check_truth_identifiable(truth_table, truth, design)
    fit = _read_fit(top.sub("fit"), truth)
    start = _read_start(top.sub("start"), truth, fit)
    sizes_table = top.sub("sizes")
    sizes_table.check_keys(("n", "replications"))
    sizes = parse_sizes(sizes_table.raw("n"), where="[sizes] n", path=str(path))
    _check_min_size(sizes_table, sizes, fit)
    replications = sizes_table.integer("replications", low=1,
                                        high=LARGEST_STORABLE_INTEGER + 1)
    metrics = _read_metrics(top.sub("metrics"), truth, fit, design)
    quick = None
    if top.has("quick"):
        quick = _read_quick(top.sub("quick"), fit, start)
    return Experiment(name=path.stem, path=path.resolve(), description=description,
                      seed=seed, truth=truth, design=design, fit=fit, start=start,
                      sizes=sizes, replications=replications, metrics=metrics, quick=quick,
                      file_sha256=hashlib.sha256(data).hexdigest())


def _check_min_size(table, sizes, fit):
    if sizes[0] < fit["n_experts"]:
        raise table.error("n", f"every sample size must be >= [fit] n_experts = "
                               f"{fit['n_experts']}, got n = {sizes[0]}.")


def _read_truth(t):
    t.check_keys(("gating", "gate_coef", "gate_intercept", "expert_coef", "expert_intercept",
                  "expert_var", "temperature", *gating_options()))
    gating = t.string("gating", "softmax", options=available_gatings())
    expert_coef = t.matrix("expert_coef")
    k, d = expert_coef.shape
    gate_coef = t.matrix("gate_coef")
    if gate_coef.shape != (k, d):
        raise t.error("gate_coef", f"expected shape ({k}, {d}) like [truth] expert_coef "
                                   f"({k} experts, {d} features), got {gate_coef.shape}.")
    vectors = {}
    for key in ("gate_intercept", "expert_intercept", "expert_var"):
        vectors[key] = t.vector(key)
        if vectors[key].shape != (k,):
            raise t.error(key, f"expected {k} entries (one per expert, like [truth] "
                               f"expert_coef), got {vectors[key].shape[0]}.")
    options = _read_gate_options(t, gating, k)
    try:
        truth = MixingMeasure(gate_coef, vectors["gate_intercept"], expert_coef,
                              vectors["expert_intercept"], vectors["expert_var"],
                              gating=gating, **options)
    except ValueError as err:
        raise ExperimentError(f"{t.path}: [truth]: {err}") from err
    if truth.is_symmetric_fixed_point():
        raise t.error("gate_coef", "a two-expert tanh/sigmoid truth with gate_coef[0] = "
                                   "-gate_coef[1] is a fixed point of the gate's symmetry "
                                   "(singular Fisher information; see Identifiability on the "
                                   "documentation's theory page); choose another.")
    return truth


#: Design points on which every expert of a truth must have positive gate weight.
_ACTIVITY_POINTS = 4096


def _check_truth_identifiable(t, truth, design):
    """Refuse a truth outside the rate theorems: equal experts, or an expert never seen.

    The theorems the report quotes assume pairwise distinct experts ``(a_i, b_i, nu_i)``.
    An expert whose gate weight is 0 wherever the design puts rows (a top-K expert never
    selected) does not enter the density, so nothing identifies it. The design's law is
    probed on ``_ACTIVITY_POINTS`` points (a grid, or draws from a fixed seed, so the check
    is the same on every run): an expert selected on less than about 1/4096 of it is
    refused too, as one the studied samples would almost never show.
    """
    experts = np.column_stack([truth.expert_coef, truth.expert_intercept, truth.expert_var])
    for i in range(truth.n_experts):
        for j in range(i + 1, truth.n_experts):
            if np.array_equal(experts[i], experts[j]):
                raise t.error("expert_coef", f"experts {i} and {j} are equal (the same "
                                             "expert_coef, expert_intercept and expert_var): "
                                             "the rates the report quotes assume distinct "
                                             "experts (see Identifiability on the "
                                             "documentation's theory page); make them "
                                             "differ.")
    X = make_design(_ACTIVITY_POINTS, design["kind"], low=design["low"], high=design["high"],
                    n_features=design["n_features"], random_state=0)
    try:
        log_gate = truth.log_gate(X)
    except (ValueError, TypeError) as err:  # a family of one's own that does not validate
        raise t.error("gating", f"the truth's gate cannot be evaluated on the design "
                                f"({type(err).__name__}: {err}); check its options.") from err
    silent = np.flatnonzero(~np.any(np.isfinite(log_gate), axis=0))
    if silent.size:
        raise t.error("gate_coef", f"expert(s) {silent.tolist()} have gate weight 0 at every "
                                   f"one of {_ACTIVITY_POINTS} points of the design "
                                   f"({design['kind']}): (almost) never selected, the data "
                                   "cannot identify them (see Identifiability on the "
                                   "documentation's theory page); change the gate or the "
                                   "design.")


def _read_gate_options(t, gating, n_experts, *, inherit=None):
    """Read the options of one gate: its temperature, if it has one, and its family's own.

    The family says which options it reads (``GatingFamily.OPTIONS``) and validates them
    (``from_options``); an option of another family is an error.
    """
    inherit = inherit or {}
    family_class = gating_class(gating)
    applicable = set(family_class.OPTIONS)
    if family_class.uses_temperature:
        applicable.add("temperature")
    for key in ("temperature", *gating_options()):
        if t.has(key) and key not in applicable:
            raise t.error(key, f"does not apply to gating={gating!r}; remove it.")
    out = {}
    if family_class.uses_temperature:
        out["temperature"] = t.number("temperature", inherit.get("temperature"), low=0.0,
                                     strict_low=True)
        if out["temperature"] is None:
            raise t.error("temperature", f"missing; required for gating={gating!r} (a "
                                         "number > 0).")
    given = {key: t.raw(key, inherit.get(key)) for key in family_class.OPTIONS}
    try:
        family = make_gating(gating, n_experts=n_experts,
                             **{k: v for k, v in given.items() if v is not None})
    except (ValueError, TypeError) as err:  # TypeError: a family's constructor refused
        key = next((k for k in family_class.OPTIONS if str(err).startswith(k)), "gating")
        raise t.error(key, str(err)) from err
    out.update(family.options())
    return out


#: The estimator's constructor arguments: a family's options among them are passed by name.
_ESTIMATOR_PARAMETERS = frozenset(GaussianMoERegressor().get_params())

#: Gating options every parsed ``[fit]`` records, None where they do not apply.
_RECORDED_OPTIONS = ("top_k", "topk_selection", "activation")


def _fit_family(fit):
    """The gating family of a parsed ``[fit]`` table."""
    options = {key: fit[key] for key in gating_class(fit["gating"]).OPTIONS
               if fit.get(key) is not None}
    return make_gating(fit["gating"], n_experts=fit["n_experts"], **options)


def _read_design(t, truth):
    t.check_keys(("kind", "low", "high", "n_features"))
    kind = t.string("kind", "grid", options=_DESIGN_KINDS)
    _refuse_bounds_of_normal(t, kind)
    low = t.number("low", 0.0)
    high = t.number("high", 1.0)
    if kind != "normal" and not low < high:
        raise t.error("high", f"expected low < high, got low={low!r}, high={high!r}.")
    n_features = t.integer("n_features", truth.n_features, low=1)
    if n_features != truth.n_features:
        raise t.error("n_features", f"expected the truth's number of features "
                                    f"{truth.n_features} ([truth] expert_coef has "
                                    f"{truth.n_features} columns), got {n_features}.")
    if kind == "grid" and n_features != 1:
        raise t.error("kind", f"'grid' makes one feature, but the truth has {n_features}; "
                              "use 'uniform' or 'normal'.")
    return {"kind": kind, "low": low, "high": high, "n_features": n_features}


def _read_fit(t, truth):
    t.check_keys(("n_experts", "gating", *gating_options(), "temperature",
                  "learn_temperature", "tol", "max_iter", "reg_var"))
    n_experts = t.integer("n_experts", low=1)
    if n_experts < truth.n_experts:
        raise t.error("n_experts", f"expected at least the truth's {truth.n_experts} experts "
                                   "(exact- or over-specified fits), got "
                                   f"{n_experts}.")
    gating = t.string("gating", truth.gating, options=available_gatings())
    family_class = gating_class(gating)
    inherit = {}
    if gating == truth.gating:
        inherit = {"temperature": truth.temperature, **truth.family.options()}
    elif family_class.uses_temperature:
        inherit = {"temperature": truth.temperature or 1.0}
    options = _read_gate_options(t, gating, n_experts, inherit=inherit)
    family = family_class.from_options(n_experts=n_experts, **options)
    held = options.get("temperature")
    if family.uses_temperature and held is not None \
            and held < family.smallest_fitted_temperature:
        raise t.error("temperature", f"expected at least {family.smallest_fitted_temperature:g} "
                                     f"for gating={gating!r} (the fit's curvature scales as "
                                     f"1/temperature**2), got {held!r}"
                                     + ("" if t.has("temperature") else " (the truth's)")
                                     + ".")
    if t.has("learn_temperature") and not family.learns_temperature:
        raise t.error("learn_temperature", f"does not apply to gating={gating!r}"
                      + "".join(f", {key}={value!r}" for key, value in family.options().items())
                      + ", which does not learn a temperature; remove it.")
    return {
        "n_experts": n_experts,
        "gating": gating,
        # The built-in families' options always (as in the first stores), and the family's
        # own: registering a family leaves the other studies' task definitions.
        **{key: options.get(key) for key in _RECORDED_OPTIONS},
        **{key: options[key] for key in family_class.OPTIONS},
        "temperature": options.get("temperature"),
        "learn_temperature": t.boolean("learn_temperature", True)
        if family.learns_temperature else None,
        "tol": t.number("tol", 1e-4, low=0.0),
        "max_iter": t.integer("max_iter", 500, low=1),
        "reg_var": t.number("reg_var", 1e-6, low=0.0),
    }


_NEAR_TRUTH_DEFAULTS = {
    "gate_noise": 0.005, "expert_noise": 0.05, "var_noise": 0.005,
    "noise_exponent": 0.083, "var_noise_exponent": 0.25,
}


def _read_start(t, truth, fit):
    near_keys = ("n_starts", "assignment", "var_center", "protocol", "temperature_noise",
                 "temperature_noise_exponent", "data_starts", *_NEAR_TRUTH_DEFAULTS)
    data_keys = ("init_params", "n_init")
    t.check_keys(("kind", *near_keys, *data_keys))
    kind = t.string("kind", options=_START_KINDS)
    wrong = data_keys if kind == "near_truth" else near_keys
    for key in wrong:
        if t.has(key):
            raise t.error(key, f"does not apply to kind={kind!r}; remove it.")
    if kind == "data":
        return {"kind": kind,
                "init_params": t.string("init_params", "kmeans",
                                        options=("kmeans", "random", "short_em")),
                "n_init": t.integer("n_init", 5, low=1)}
    if fit["gating"] != truth.gating:
        raise ExperimentError(
            f"{t.path}: [start] kind: 'near_truth' starts from the truth's parameters, so "
            f"[fit] gating must be the truth's {truth.gating!r}, got {fit['gating']!r}.")
    # The start is made of the truth's parameters: the fit's gate options must be the
    # truth's, except those the family lets a fit choose (top-K's top_k).
    for key, value in truth.family.options().items():
        if key not in truth.family.FIT_MAY_CHANGE and fit[key] != value:
            raise ExperimentError(
                f"{t.path}: [fit] {key}: 'near_truth' starts need the truth's "
                f"{key}={value!r}, got {fit[key]!r}.")
    # A near-truth start carries the truth's temperature (perturbed by temperature_noise),
    # which the fit holds or learns from: another [fit] temperature would be ignored by
    # those starts and used only by any data-driven ones, which then fit another model.
    if truth.family.uses_temperature and fit["temperature"] != truth.temperature:
        raise ExperimentError(
            f"{t.path}: [fit] temperature: 'near_truth' starts take the truth's "
            f"temperature={truth.temperature!r}, got {fit['temperature']!r}; remove it (it "
            "defaults to the truth's).")
    out = {"kind": kind, "n_starts": t.integer("n_starts", 1, low=1),
           "var_center": t.string("var_center", "truth", options=_VAR_CENTERS),
           "protocol": t.string("protocol", "even", options=START_PROTOCOLS)}
    for key, default in _NEAR_TRUTH_DEFAULTS.items():
        out[key] = t.number(key, default, low=0.0)
    for key in ("temperature_noise", "temperature_noise_exponent"):
        if t.has(key) and not truth.family.uses_temperature:
            raise t.error(key, f"does not apply to gating={truth.gating!r}, which has no "
                               "temperature; remove it.")
    out["temperature_noise"] = t.number("temperature_noise", 0.0, low=0.0)
    out["temperature_noise_exponent"] = t.number("temperature_noise_exponent",
                                                 out["noise_exponent"], low=0.0)
    out["assignment"] = _read_assignment(t, truth.n_experts, fit["n_experts"])
    if t.has("data_starts"):
        # Only when given: the task definition (and the hash) of every other study stays.
        out["data_starts"] = _read_data_starts(t)
    return out


def _read_data_starts(t):
    """``{strategy: n_init}`` of ``[start] data_starts``, in the order k-means, random, short EM.

    The estimator's data-driven starts fitted besides the near-truth ones; the best
    log-likelihood of all is kept.
    """
    value = t.raw("data_starts")
    strategies = ("kmeans", "random", "short_em")
    if not isinstance(value, dict) or not value:
        raise t.error("data_starts", f"expected a table of initialisations and their numbers "
                                     f"of starts, e.g. {{ kmeans = 10, random = 10 }}, got "
                                     f"{_describe(value)}.")
    for key, count in value.items():
        if key not in strategies:
            raise t.error("data_starts", f"expected initialisations among "
                                         f"{', '.join(map(repr, strategies))}, got {key!r}.")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise t.error("data_starts", f"expected a number of starts >= 1 for {key!r}, "
                                         f"got {_describe(count)}.")
    # In a fixed order: the task hash ignores the file's, and the order decides which of
    # two fits of equal likelihood is kept.
    return {key: value[key] for key in strategies if key in value}


def _read_assignment(t, k_true, k_fit):
    if not t.has("assignment"):
        return None
    value = t.raw("assignment")
    if not isinstance(value, list) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise t.error("assignment", f"expected an array of integers (the true atom of each "
                                    f"fitted atom), got {_describe(value)}.")
    if len(value) != k_fit:
        raise t.error("assignment", f"expected {k_fit} entries (one per fitted expert, [fit] "
                                    f"n_experts), got {len(value)}.")
    if any(v < 0 or v >= k_true for v in value):
        raise t.error("assignment", f"expected true-atom indices in 0..{k_true - 1}, got "
                                    f"{value}.")
    if set(value) != set(range(k_true)):
        raise t.error("assignment", f"every true atom 0..{k_true - 1} needs at least one "
                                    f"fitted atom, got {value}.")
    if value[-1] != k_true - 1:
        raise t.error("assignment", f"the last fitted atom must go to the true reference "
                                    f"{k_true - 1}, got {value[-1]}.")
    return list(value)


#: The keys of [metrics] besides the distances of gmoe.simulation.distances.
_METRIC_KEYS = ("voronoi", "rbar", "translation", "scales", "parameter_errors",
                "boundary_error", "evaluation")


def _read_metrics(t, truth, fit, design):
    t.check_keys((*_METRIC_KEYS, *(d.key for d in _distances.DESIGN_DISTANCES)))
    voronoi = t.raw("voronoi", [])
    if isinstance(voronoi, str):
        voronoi = [voronoi]
    if not isinstance(voronoi, list) or any(v not in _VORONOI_KINDS for v in voronoi) \
            or len(set(voronoi)) != len(voronoi):
        raise t.error("voronoi", f"expected an array of distinct kinds among "
                                 f"{', '.join(map(repr, _VORONOI_KINDS))}, got "
                                 f"{_describe(voronoi)}.")
    k, k_true = fit["n_experts"], truth.n_experts
    if "exact" in voronoi and k != k_true:
        raise t.error("voronoi", f"'exact' (D1) needs [fit] n_experts equal to the truth's "
                                 f"{k_true}, got {k}; use 'over' (D2).")
    if "over" in voronoi and k == k_true:
        raise t.error("voronoi", f"'over' (D2) is for over-specified fits ([fit] n_experts > "
                                 f"{k_true}), got n_experts={k}; use 'exact' (D1).")
    rbar = _read_rbar(t)
    if rbar and "over" not in voronoi:
        raise t.error("rbar", "applies to voronoi 'over' (D2, an over-specified fit), got "
                              f"voronoi={_describe(voronoi)}; remove it.")
    if "over" in voronoi:
        _check_rbar_covers_the_cells(t, rbar, truth, fit)
    if "over" in voronoi and not _fit_family(fit).over_specified_exponents_known() \
            and not rbar:
        raise t.error("rbar", f"required with voronoi 'over' for gating={fit['gating']!r}: "
                              "its exponents are not established (see the Voronoi losses "
                              "of the documentation's theory page); give e.g. "
                              "rbar = { 2 = 4.0 }.")
    parameter_errors = t.boolean("parameter_errors", False)
    if (voronoi or parameter_errors) and fit["gating"] != truth.gating:
        raise t.error("voronoi" if voronoi else "parameter_errors",
                      f"Voronoi losses and parameter errors compare models of one gating "
                      f"family, but [fit] gating={fit['gating']!r} differs from [truth] "
                      f"gating={truth.gating!r}; record "
                      f"{' / '.join(d.key for d in _distances.DESIGN_DISTANCES)} only.")
    scales = t.raw("scales", ["identifiable"])
    if not isinstance(scales, list) or not scales or any(s not in _SCALES for s in scales) \
            or len(set(scales)) != len(scales):
        raise t.error("scales", f"expected a non-empty array of distinct scales among "
                                f"{', '.join(map(repr, _SCALES))}, got {_describe(scales)}.")
    # true (the fraction of design rows selected differently) or a boundary_error kind.
    boundary = t.raw("boundary_error", False)
    if boundary is True:
        boundary = "fraction"
    if boundary is not False and boundary not in ("fraction", "hausdorff"):
        raise t.error("boundary_error", "expected true, false, 'fraction' or 'hausdorff', got "
                                        f"{_describe(boundary)}.")
    if boundary and fit["gating"] != truth.gating:
        raise t.error("boundary_error", "needs the fit and the truth in one gating family.")
    evaluation = _read_evaluation(t.sub("evaluation", required=False), design)
    distances = {key: t.boolean(key, False) for key in _distances.distance_keys(_METRIC_KEYS)}
    if not (voronoi or parameter_errors or any(distances.values()) or boundary):
        raise ExperimentError(
            f"{t.path}: [metrics]: records nothing; set at least one of voronoi, "
            f"parameter_errors, {', '.join(distances)}, boundary_error.")
    return {"voronoi": list(voronoi), "rbar": rbar,
            "translation": t.string("translation", "infimum", options=_TRANSLATIONS),
            "scales": list(scales), "parameter_errors": parameter_errors,
            # The first two always (as in the first stores), others when recorded: a new
            # distance leaves the task definition of a study that does not record it.
            **{key: value for key, value in distances.items()
               if value or key in ("hellinger", "total_variation")},
            "boundary_error": boundary, "evaluation": evaluation}


def _read_rbar(t):
    value = t.raw("rbar", {})
    if not isinstance(value, dict):
        raise t.error("rbar", f"expected a table {{cell size = exponent}}, e.g. "
                              f"rbar = {{ 4 = 8.0 }}, got {_describe(value)}.")
    out = {}
    for key, exponent in value.items():
        try:
            m = int(key)
        except ValueError:
            m = None
        if m is None or m < 2 or str(m) != key.strip():
            raise t.error("rbar", f"expected integer cell sizes >= 2 as keys, got {key!r}.")
        if isinstance(exponent, bool) or not isinstance(exponent, int | float) \
                or not math.isfinite(exponent) or exponent <= 0:
            raise t.error("rbar", f"expected a positive exponent for cell size {m}, got "
                                  f"{_describe(exponent)}.")
        out[m] = float(exponent)
    return out


def _refuse_bounds_of_normal(t, kind):
    """``low`` and ``high`` bound a grid or uniform design; normal draws have none."""
    for key in ("low", "high"):
        if kind == "normal" and t.has(key):
            raise t.error(key, "does not apply to kind='normal' (standard normal draws); "
                               "remove it.")


def _check_rbar_covers_the_cells(t, rbar, truth, fit):
    """The cell sizes a fit near the truth forms need an exponent rbar(m), given or known.

    Without one the loss of a fit that forms such a cell cannot be computed: its task
    would fail, and the means over n would rest on the others. A fit near the truth has
    every true atom's cell non-empty, so up to k - k* + 1 atoms in one; a fit that
    leaves a cell empty can put more in another, and where that size has no exponent
    its task is stored as a failed metric (the report counts it).
    """
    k, k_true = fit["n_experts"], truth.n_experts
    sizes = set(range(2, k - k_true + 2))
    known = DEFAULT_RBAR if _fit_family(fit).over_specified_exponents_known() else {}
    missing = sorted(m for m in sizes if m >= 2 and m not in rbar and m not in known)
    if missing and (known or rbar):  # none at all, unknown family: the error below
        raise t.error("rbar", f"needs an exponent for every cell size a fit can form: "
                              f"{k} fitted experts for {k_true} true ones can put "
                              f"{max(sizes)} in one cell, and rbar has none for "
                              f"{missing}; give e.g. rbar = {{ {missing[0]} = "
                              f"{2.0 * missing[0]:.1f} }}.")


def _read_evaluation(t, design):
    t.check_keys(("kind", "n", "low", "high"))
    # By default the design's own law (a grid for one feature on a bounded design): a
    # normal design's unused bounds would otherwise make a grid on [0, 1]. Bounds given
    # without a kind ask for a bounded evaluation design, as they always did.
    if design["kind"] == "normal" and "low" not in t.table and "high" not in t.table:
        default_kind = "normal"
    else:
        default_kind = "grid" if design["n_features"] == 1 else "uniform"
    kind = t.string("kind", default_kind, options=_DESIGN_KINDS)
    _refuse_bounds_of_normal(t, kind)
    low = t.number("low", design["low"])
    high = t.number("high", design["high"])
    if kind != "normal" and not low < high:
        raise t.error("high", f"expected low < high, got low={low!r}, high={high!r}.")
    if kind == "grid" and design["n_features"] != 1:
        raise t.error("kind", "'grid' makes one feature; use 'uniform' or 'normal'.")
    return {"kind": kind, "n": t.integer("n", 1000, low=1), "low": low, "high": high}


def _read_quick(t, fit, start):
    t.check_keys(("n", "replications", "n_starts", "n_init"))
    out = {"sizes": parse_sizes(t.raw("n"), where="[quick] n", path=str(t.path)),
           "replications": t.integer("replications", low=1,
                                           high=LARGEST_STORABLE_INTEGER + 1)}
    _check_min_size(t, out["sizes"], fit)
    for key, kind in (("n_starts", "near_truth"), ("n_init", "data")):
        if t.has(key):
            if start["kind"] != kind:
                raise t.error(key, f"applies to [start] kind={kind!r}, got "
                                   f"{start['kind']!r}; remove it.")
            out[key] = t.integer(key, low=1)
    return out
