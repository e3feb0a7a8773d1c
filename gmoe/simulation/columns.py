"""The columns of a study's result rows, read by the spec, the tasks, the store and reports.

Every result row starts with the bookkeeping of :data:`BASE_COLUMNS` (the task, its
status, the fit's log-likelihood and parameters, timings).

Every value a task records beyond its bookkeeping is a :class:`MetricColumn`: its name in
the result store, the quantity it holds (``field``), the true cell and the parameter scale
it refers to, and what the theory predicts for it in the study's setting. The list is built
once from the experiment (:func:`build_columns`, or :meth:`Experiment.metric_schema
<gmoe.simulation.spec.Experiment.metric_schema>`); the tasks fill it, the store creates its
table from it and the reports read the theory from it, so no one parses a column's name.

The columns, in order, for each scale of ``[metrics] scales`` (the raw scale's names end
in ``_raw``):

* ``d1`` / ``d2``: the Voronoi loss, exact- / over-specified;
* ``pe_<field>_<j>``: the parameter errors of true cell ``j`` (0-based), fields ``weight,
  gate_coef, gate_intercept, expert_coef, expert_intercept, expert_var``
  (:class:`gmoe.metrics.ParameterErrors`; a top-1 truth has no ``weight``, nor
  ``gate_intercept`` with linear selection: they are not identified), and
  ``pe_temperature`` for the gates with a temperature;

then, for over-specified fits with parameter errors, ``atoms_<j>``: how many fitted atoms
the fit put in true cell ``j`` (its Voronoi cell), so that each per-cell error can be
fitted over the replications whose cell holds ``m`` atoms against ``rbar(m)``; then
``hellinger``, ``tv`` (expected distances over the evaluation design) and ``boundary``
(the boundary error over the evaluation design).

Columns fixed by the alignment
------------------------------
The identifiability convention leaves a common translation ``(t1, t2)`` of the gate free
(see :ref:`theory-rates` and :mod:`gmoe.metrics.voronoi`), and the losses take the one that
matches the fit best. ``t2`` is the truth-weighted median of the cells' mass ratios: when
one true atom holds more than half of the truth's mass (the reference expert of the
shipped studies), the median is always its ratio, so its cell's weight error is 0 and, when
the cell holds a single fitted atom, so is its gate-intercept error; ``t1`` likewise carries
that atom's gate slope onto the truth's (gates with linear logits). These columns hold 0 up
to rounding whatever the fit; they carry no rate and get no fitted slope.
"""

from dataclasses import dataclass

import numpy as np

from ..theory import NO_THEORY, SETTINGS, THEORY_LOSSES, Theory, theory
from . import distances as _distances

__all__ = ["BASE_COLUMNS", "PARAMETER_FIELDS", "TIMING_COLUMNS", "MetricColumn",
           "build_columns", "cell_theory", "study_setting"]

#: Columns every result row has, before the experiment's metric columns (name, SQL type).
BASE_COLUMNS = (
    ("n", "INTEGER NOT NULL"),
    ("rep", "INTEGER NOT NULL"),
    ("seed_entropy", "TEXT NOT NULL"),
    ("spawn_key", "TEXT NOT NULL"),
    ("status", "TEXT NOT NULL"),
    ("error", "TEXT"),
    ("mean_log_likelihood", "REAL"),
    ("n_iter", "INTEGER"),
    ("converged", "INTEGER"),
    ("convergence_gap", "REAL"),  # the fit's predicted gain to the maximum (total L units)
    ("n_starts", "INTEGER"),  # near-truth starts fitted, or the estimator's n_init
    ("degenerate_experts", "TEXT"),
    ("warnings", "TEXT"),
    ("fit_seconds", "REAL"),
    ("metric_seconds", "REAL"),  # the metrics and their evaluation design
    ("task_seconds", "REAL"),
    ("worker_pid", "INTEGER"),
    ("finished_at", "REAL"),
    # The kept fit's parameters (MixingMeasure.to_vector order) as a JSON list of floats,
    # exact to the bit: a metric added later is computed from the stored fits
    # (fitted_measure) instead of refitting the grid.
    ("fitted", "TEXT"),
)
#: Columns that vary from run to run (timings, process): excluded when comparing results.
TIMING_COLUMNS = ("fit_seconds", "metric_seconds", "task_seconds", "worker_pid",
                  "finished_at")

#: The per-cell fields of :class:`gmoe.metrics.ParameterErrors` recorded as columns.
PARAMETER_FIELDS = ("weight", "gate_coef", "gate_intercept", "expert_coef",
                    "expert_intercept", "expert_var")

_VORONOI_FIELDS = {"exact": "d1", "over": "d2"}


@dataclass(frozen=True)
class MetricColumn:
    """One metric column of a study.

    Attributes
    ----------
    name : str
        The column's name in the result rows and the store.
    field : str
        What it holds: ``'d1'``, ``'d2'`` (Voronoi losses), a field of
        :data:`PARAMETER_FIELDS` or ``'temperature'`` (a parameter error),
        the column of a distance of :data:`~gmoe.simulation.distances.DESIGN_DISTANCES`
        (``'hellinger'``, ``'tv'``) or ``'boundary'``.
    cell : int or None
        The true cell of a per-cell parameter error, else None.
    scale : {'identifiable', 'raw'} or None
        The parameter scale of a Voronoi loss or a parameter error, else None.
    theory : gmoe.theory.Theory
        What the theory predicts for this column in the study's setting: the slope (None
        where it states none), the reason, and whether a slope is to be fitted at all.
    """

    name: str
    field: str
    cell: int | None
    scale: str | None
    theory: Theory

    @property
    def is_parameter_error(self):
        """Whether the column is filled from one ParameterErrors (errors, atom counts)."""
        return self.field in PARAMETER_FIELDS or self.field in ("temperature", "atoms")

    @property
    def is_atom_count(self):
        """Whether the column counts the fitted atoms of a true cell (not a loss)."""
        return self.field == "atoms"

    @property
    def is_voronoi(self):
        """Whether the column is a Voronoi loss (D1 or D2)."""
        return self.field in ("d1", "d2")


def study_setting(experiment):
    """The theory's setting of an experiment and the atoms per true cell of its starts.

    The family is the truth's gate; the setting is over-specified when more experts are
    fitted than the truth has. The temperature family has no -exact/-over names: its
    over-specified rates are selected by ``m >= 2``.

    Parameters
    ----------
    experiment : Experiment

    Returns
    -------
    setting : str
        A name of :data:`gmoe.theory.SETTINGS` (identifiable scale).
    cell_atoms : list of int
        Fitted atoms in each true cell: from ``[start] assignment`` when the file fixes it,
        else ``k - k* + 1`` for every cell (the largest cell a random start can make, so
        the theory quoted is the slowest one).
    """
    k_true, k_fit = experiment.truth.n_experts, experiment.fit["n_experts"]
    setting = experiment.truth.family.theory_setting(k_fit > k_true)
    assignment = experiment.start.get("assignment")
    if assignment is not None:
        cell_atoms = [int(np.sum(np.asarray(assignment) == j)) for j in range(k_true)]
    else:
        cell_atoms = [k_fit - k_true + 1] * k_true
    return setting, cell_atoms


def _defined_fields(truth):
    """The parameter-error fields defined for the truth's gate.

    A top-1 truth has no weights (the selected expert's weight is always 1: only the
    selection regions are identified), and with linear selection no intercepts either.
    """
    undefined = truth.family.undefined_parameter_errors()
    return tuple(f for f in PARAMETER_FIELDS if f not in undefined)


def _aligned_fields(experiment, cell_atoms, scale):
    """``(cell, fields)``: the errors the alignment sets to 0 on ``scale`` (module doc)."""
    truth = experiment.truth
    if experiment.metrics["translation"] != "infimum" or (
            truth.family.selection_only()):  # top-1: least-squares alignment
        return None, ()
    weights = truth.weights
    j = int(np.argmax(weights))
    if not weights[j] > weights.sum() / 2 or cell_atoms[j] != 1:
        return None, ()
    fields = ["weight"]
    # The intercepts compare tau log w on each side: equal once the weights are, when the
    # compared scale has no temperature or the true intercept is 0 (the reference's).
    no_temperature = not truth.family.uses_temperature or (
        scale == "identifiable" and truth.family.linear_logits)
    if no_temperature or truth.gate_intercept[j] == 0:
        fields.append("gate_intercept")
    if truth.family.linear_logits:
        fields.append("gate_coef")
    return j, tuple(fields)


_ALIGNED = Theory(None, "0 by construction: the alignment's translation fixes this cell "
                        "(the one holding most of the truth's mass); no rate", False)
_ATOM_COUNT = Theory(None, "the number of fitted atoms in the cell, not a loss; per-cell "
                           "errors are fitted by it", False)
_TEMPERATURE_IDENTIFIABLE = Theory(None, "0 by construction: the identifiable scale divides "
                                         "tau out; no rate", False)


def _column_theory(experiment, field, cell, scale, setting, cell_atoms):
    """The theory of one column in the study's setting (never raises)."""
    recorded_distances = [d.column for d in _distances.DESIGN_DISTANCES]
    if field in recorded_distances and field not in THEORY_LOSSES:
        return NO_THEORY._replace(reason=f"no theory: no stated rate for {field}")
    if setting not in SETTINGS:  # a registered family the rate theorems do not cover
        return NO_THEORY._replace(reason=f"no theory: no stated rates for the {setting!r} "
                                         "setting")
    if field == "boundary":
        # A change point only where one expert is selected: with more, the density is
        # continuous where the largest gate changes hands.
        if not experiment.truth.family.selection_only():
            return NO_THEORY._replace(reason="no stated rate for the boundary of a gate "
                                             "that selects several experts")
        return theory(setting, "boundary")
    if scale == "raw" and setting == "temperature":
        setting = "temperature-raw"
    over = max(cell_atoms) > 1
    if cell is None:
        m = max(cell_atoms) if over else None
    else:
        m = cell_atoms[cell] if over else None
        if setting == "temperature" and m == 1:
            m = None
    user_rbar = experiment.metrics["rbar"].get(m) if m is not None else None
    try:
        return theory(setting, field, m=m, rbar=user_rbar)
    except ValueError as err:  # an unknown rbar(m): fit the slope, quote no theory
        return NO_THEORY._replace(reason=f"no theory: {err}")


def build_columns(experiment):
    """The metric columns of an experiment, in the order the store keeps them.

    Parameters
    ----------
    experiment : Experiment

    Returns
    -------
    tuple of MetricColumn
        See the module documentation for the names and their order.
    """
    metrics, truth = experiment.metrics, experiment.truth
    setting, cell_atoms = study_setting(experiment)

    def column(name, field, cell=None, scale=None, expected=None):
        if expected is None:
            expected = _column_theory(experiment, field, cell, scale, setting, cell_atoms)
        return MetricColumn(name, field, cell, scale, expected)

    columns = []
    for scale in metrics["scales"]:
        suffix = "" if scale == "identifiable" else "_raw"
        for kind in metrics["voronoi"]:
            field = _VORONOI_FIELDS[kind]
            columns.append(column(field + suffix, field, scale=scale))
        if metrics["parameter_errors"]:
            aligned_cell, aligned = _aligned_fields(experiment, cell_atoms, scale)
            for field in _defined_fields(truth):
                for j in range(truth.n_experts):
                    fixed = j == aligned_cell and field in aligned
                    columns.append(column(f"pe_{field}_{j}{suffix}", field, j, scale,
                                          _ALIGNED if fixed else None))
            if truth.family.uses_temperature and truth.n_experts > 1:  # a lone one's: none
                fixed = scale == "identifiable" and truth.family.linear_logits
                columns.append(column(f"pe_temperature{suffix}", "temperature", None, scale,
                                      _TEMPERATURE_IDENTIFIABLE if fixed else None))
            if scale == metrics["scales"][0] and experiment.fit["n_experts"] > truth.n_experts:
                columns += [column(f"atoms_{j}", "atoms", j, scale, _ATOM_COUNT)
                            for j in range(truth.n_experts)]
    columns += [column(d.column, d.column) for d in _distances.DESIGN_DISTANCES
                if metrics.get(d.key, False)]
    if metrics["boundary_error"]:
        columns.append(column("boundary", "boundary"))
    # A distance of gmoe.simulation.distances named like another column, or like a row's
    # bookkeeping ("status", "fitted"...), would overwrite it in the rows and the store;
    # SQLite's column names ignore case, so "Status" would too.
    names = [name.lower() for name, _ in BASE_COLUMNS] + [c.name.lower() for c in columns]
    repeated = sorted({c.name for c in columns if names.count(c.name.lower()) > 1})
    if repeated:
        raise ValueError(f"the study's result columns repeat {repeated}: each entry of "
                         "gmoe.simulation.distances.DESIGN_DISTANCES needs a column of its "
                         "own, distinct in any case of its letters from the other metrics' "
                         "and from gmoe.simulation.columns.BASE_COLUMNS.")
    return tuple(columns)


def cell_theory(experiment, column, m):
    """The theory of a per-cell column over the replications whose cell holds ``m`` atoms.

    Parameters
    ----------
    experiment : Experiment
    column : MetricColumn
        A per-cell parameter error (``column.cell`` is not None).
    m : int
        Fitted atoms in the column's true cell.

    Returns
    -------
    gmoe.theory.Theory
        ``rbar(m)``'s rate for the column's parameter (the parametric rate for ``m = 1``);
        no rate where the alignment fixes the error when the cell holds ``m`` atoms (the
        reference cell's weight and intercept errors with ``m = 1``: rounding noise).
    """
    setting, cell_atoms = study_setting(experiment)
    cell_atoms = list(cell_atoms)
    cell_atoms[column.cell] = int(m)
    aligned_cell, aligned = _aligned_fields(experiment, cell_atoms, column.scale)
    if column.cell == aligned_cell and column.field in aligned:
        return _ALIGNED
    return _column_theory(experiment, column.field, column.cell, column.scale, setting,
                          cell_atoms)
