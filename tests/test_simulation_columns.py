"""The metric columns of a study: names, fields, cells, scales and each column's theory."""

import numpy as np
import pytest
from _study import write_study

from gmoe.simulation import ExperimentError, load_experiment, run_task
from gmoe.simulation.columns import (
    BASE_COLUMNS,
    PARAMETER_FIELDS,
    MetricColumn,
    build_columns,
    cell_theory,
)
from gmoe.simulation.report import study_rate_rows

# Cell 0 holding most of the mass: w* = (e^2, 1), expert 0's gate weight 0.88 at x = 0 and
# 0.05 at x = 1 (a gate steep enough to be learnt from a few dozen points).
MAJORITY_0 = {"gate_coef": [[-5.0], [0.0]], "gate_intercept": [2.0, 0.0]}
# A two-expert tanh activation truth (expert 1's weight runs from about 0.03 to 0.97).
ACTIVATION = {"gating": "activation", "activation": "tanh", "temperature": 0.25,
              "gate_coef": [[4.0], [-1.0]], "gate_intercept": [-0.9, 0.0]}


def load(tmp_path, **overrides):
    return load_experiment(write_study(tmp_path, **overrides))


def fixed(schema):
    """Names of the loss columns that get no fitted slope (atom counts are not losses)."""
    return [c.name for c in schema if not c.theory.fit_slope and not c.is_atom_count]


def test_schema_of_the_fixture_study(tmp_path):
    exp = load(tmp_path)
    schema = exp.metric_schema()
    assert all(isinstance(c, MetricColumn) for c in schema)
    assert schema == build_columns(exp)
    names = [c.name for c in schema]
    assert names == exp.metric_columns()
    assert names[0] == "d1" and names[-2:] == ["hellinger", "tv"]
    pe = [c for c in schema if c.is_parameter_error]
    assert [(c.field, c.cell) for c in pe] == [(f, j) for f in PARAMETER_FIELDS
                                               for j in (0, 1)]
    assert all(c.name == f"pe_{c.field}_{c.cell}" and c.scale == "identifiable" for c in pe)
    assert exp.summary_columns() == ["d1", "hellinger", "tv"]
    d1 = schema[0]
    assert (d1.field, d1.cell, d1.scale, d1.theory.slope) == ("d1", None, "identifiable", -0.5)
    assert next(c for c in schema if c.name == "hellinger").scale is None


def test_task_rows_hold_exactly_the_schema(tmp_path):
    exp = load(tmp_path, metrics={"scales": ["identifiable", "raw"]})
    row = run_task(exp, 60, 0)
    assert row["status"] == "ok", row["error"]
    assert list(row) == [name for name, _ in BASE_COLUMNS] + exp.metric_columns()
    assert "pe_expert_var_1_raw" in row and "d1_raw" in row


def test_alignment_fixes_the_majority_cell(tmp_path):
    # The reference holds almost all the truth's mass (w* = (e^-8, 1)): the alignment's
    # translation pins its weight, gate slope and gate intercept errors.
    exp = load(tmp_path)
    assert fixed(exp.metric_schema()) == ["pe_weight_1", "pe_gate_coef_1",
                                          "pe_gate_intercept_1"]
    # Cell 0 holding the majority: cell 0 is pinned, not the reference.
    other = load(tmp_path, truth=MAJORITY_0)
    assert fixed(other.metric_schema()) == ["pe_weight_0", "pe_gate_coef_0",
                                            "pe_gate_intercept_0"]
    # No cell above half the mass: nothing pinned.
    even = load(tmp_path, truth={"gate_coef": [[0.0], [0.0]], "gate_intercept": [0.0, 0.0]})
    assert fixed(even.metric_schema()) == []


@pytest.mark.parametrize("overrides", [
    dict(truth=MAJORITY_0),
    dict(),
    dict(truth=ACTIVATION),
])
def test_fixed_columns_are_zero_on_a_fit_and_the_others_are_not(tmp_path, overrides):
    # Independent evidence for the schema's claim: on real fits (each true cell holding one
    # fitted atom), the pinned columns hold rounding noise only, every other gate error
    # does not.
    exp = load(tmp_path, **overrides)
    pinned = fixed(exp.metric_schema())
    assert pinned
    gate = [c.name for c in exp.metric_schema() if c.is_parameter_error
            and c.field in ("weight", "gate_coef", "gate_intercept") and c.name not in pinned]
    for n, rep in [(60, 0), (200, 1)]:
        row = run_task(exp, n, rep)
        assert row["status"] == "ok", row["error"]
        assert np.isfinite([row[c] for c in exp.metric_columns()]).all()  # no empty cell
        assert max(abs(row[c]) for c in pinned) < 1e-12, {c: row[c] for c in pinned}
        assert min(row[c] for c in gate) > 1e-9, {c: row[c] for c in gate}


def test_what_the_alignment_cannot_fix(tmp_path):
    # tanh gate slopes have no translation: only the weight and the (zero) intercept.
    act = load(tmp_path, truth=ACTIVATION)
    assert fixed(act.metric_schema()) == ["pe_weight_1", "pe_gate_intercept_1"]
    # Untranslated losses: nothing is aligned.
    none = load(tmp_path, metrics={"translation": "none"})
    assert fixed(none.metric_schema()) == []
    # Over-specified from random starts: the reference cell may hold several atoms.
    over = load(tmp_path, fit={"n_experts": 3}, metrics={"voronoi": ["over"]})
    assert fixed(over.metric_schema()) == []
    # ... unless the assignment leaves it a single atom.
    assigned = load(tmp_path, fit={"n_experts": 3}, metrics={"voronoi": ["over"]},
                    start={"assignment": [0, 0, 1]})
    assert fixed(assigned.metric_schema()) == ["pe_weight_1", "pe_gate_coef_1",
                                               "pe_gate_intercept_1"]


def test_over_specified_theory_per_cell(tmp_path):
    exp = load(tmp_path, fit={"n_experts": 3}, metrics={"voronoi": ["over"]},
               start={"assignment": [0, 0, 1]})
    theory = {c.name: c.theory.slope for c in exp.metric_schema()}
    assert theory["d2"] == -0.5
    assert theory["pe_gate_coef_0"] == -1 / 8 and theory["pe_expert_var_0"] == -1 / 4
    assert theory["pe_expert_coef_1"] == -0.5  # a cell of one atom: parametric
    assert theory["pe_gate_intercept_0"] is None  # no stated rate for beta0


def test_user_rbar_reaches_the_theory(tmp_path):
    exp = load(tmp_path, fit={"n_experts": 3}, metrics={"voronoi": ["over"], "rbar": {"2": 5.0}},
               start={"assignment": [0, 0, 1]})
    theory = {c.name: c.theory.slope for c in exp.metric_schema()}
    assert theory["pe_gate_coef_0"] == -1 / 10 and theory["pe_expert_coef_0"] == -1 / 5


def test_a_cell_size_without_an_exponent_is_refused_and_a_given_one_is_used(tmp_path):
    # Five experts for two true ones can put four in a cell, whose loss needs rbar(4):
    # without it such tasks would fail and the means rest silently on the others.
    with pytest.raises(ExperimentError, match=r"\[metrics\] rbar: .* can put 4 in one "
                                              r"cell, and rbar has none for \[4\]"):
        load(tmp_path, fit={"n_experts": 5}, metrics={"voronoi": ["over"]})
    exp = load(tmp_path, fit={"n_experts": 5}, metrics={"voronoi": ["over"],
                                                        "rbar": {"4": 8.0}},
               start={"assignment": [0, 0, 0, 0, 1]})
    gate = next(c for c in exp.metric_schema() if c.name == "pe_gate_coef_0")
    assert gate.theory.slope == -1 / 16


def test_an_unknown_familys_rbar_must_cover_every_cell_size(tmp_path):
    # Four experts for two: cells of 2 and 3 atoms; rbar(3) is not given, nor known.
    with pytest.raises(ExperimentError, match=r"rbar has none for \[3\]"):
        load(tmp_path, truth=ACTIVATION, fit={"n_experts": 4},
             metrics={"voronoi": ["over"], "rbar": {"2": 4.0}})


def test_activation_over_has_no_d2_rate(tmp_path):
    exp = load(tmp_path, truth=ACTIVATION, fit={"n_experts": 3},
               metrics={"voronoi": ["over"], "rbar": {"2": 4.0}})
    d2 = exp.metric_schema()[0]
    assert d2.name == "d2" and d2.theory.slope is None and d2.theory.fit_slope
    assert "not established" in d2.theory.reason


@pytest.mark.parametrize("truth", [
    {"gating": "temperature", "temperature": 0.25, "gate_coef": [[6.25], [0.0]],
     "gate_intercept": [-2.0, 0.0]}, ACTIVATION])
def test_a_fit_temperature_other_than_the_near_truth_starts_is_refused(tmp_path, truth):
    # The near-truth starts carry the truth's temperature; a [fit] temperature would be
    # silently ignored by them.
    with pytest.raises(ExperimentError, match=r"\[fit\] temperature: 'near_truth' starts "
                                              r"take the truth's temperature=0.25, got 1.0"):
        load(tmp_path, truth=truth, fit={"temperature": 1.0})
    assert load(tmp_path, truth=truth).fit["temperature"] == 0.25  # inherited


def test_temperature_columns(tmp_path):
    exp = load(tmp_path, truth={"gating": "temperature", "temperature": 0.25,
                                "gate_coef": [[6.25], [0.0]], "gate_intercept": [-2.0, 0.0]},
               metrics={"scales": ["identifiable", "raw"]})
    by_name = {c.name: c for c in exp.metric_schema()}
    temp = by_name["pe_temperature"]
    assert (temp.field, temp.cell, temp.scale) == ("temperature", None, "identifiable")
    assert not temp.theory.fit_slope  # tau is divided out on the identifiable scale
    raw = [c for c in exp.metric_schema() if c.scale == "raw"]
    assert raw[0].name == "d1_raw" and all(c.name.endswith("_raw") for c in raw)
    # The raw gate is not consistent; the weights and experts are the identifiable model's.
    gate = [c for c in raw if c.field in ("d1", "gate_coef", "gate_intercept", "temperature")]
    assert gate and all(not c.theory.fit_slope for c in gate)
    experts = [c for c in raw if c.field.startswith("expert_")]
    assert len(experts) == 6 and all(c.theory.slope == -0.5 for c in experts)
    weights = {c.cell: c.theory for c in raw if c.field == "weight"}
    assert weights[0].slope == -0.5  # cell 1, holding most mass, is fixed by the alignment
    assert by_name["pe_gate_coef_0"].theory.slope == -0.5


def test_top1_truth_has_no_weight_columns(tmp_path):
    affine = load(tmp_path, truth={"gating": "topk", "top_k": 1})
    fields = {c.field for c in affine.metric_schema()}
    assert "weight" not in fields and "gate_intercept" in fields
    assert fixed(affine.metric_schema()) == []  # least-squares alignment: nothing pinned
    # Linear selection scores 25 x and 0 cross at x = 0: the design spans it, so both
    # experts are selected somewhere and every cell is identified.
    linear = load(tmp_path, truth={"gating": "topk", "top_k": 1, "topk_selection": "linear"},
                  design={"low": -1.0})
    fields = {c.field for c in linear.metric_schema()}
    assert not fields & {"weight", "gate_intercept"} and "gate_coef" in fields
    row = run_task(linear, 150, 0)
    assert all(np.isfinite(row[c]) for c in linear.metric_columns())


def test_over_specified_studies_count_the_atoms_of_each_cell(tmp_path):
    over = load(tmp_path, fit={"n_experts": 3}, metrics={"voronoi": ["over"]})
    counts = [c for c in over.metric_schema() if c.is_atom_count]
    assert [(c.name, c.cell) for c in counts] == [("atoms_0", 0), ("atoms_1", 1)]
    assert not any(c.theory.fit_slope for c in counts)
    assert all(c.name not in over.summary_columns() for c in counts)
    # Exact-specified fits have one atom per cell: nothing to count.
    assert not any(c.is_atom_count for c in load(tmp_path).metric_schema())


def test_per_cell_rows_of_a_single_atom_majority_cell_fit_no_slope(tmp_path):
    # Over-specified without a fixed assignment, the majority cell (0 here) holds one or
    # two atoms. Its whole columns are real errors; over the replications where it holds
    # one atom its gate's errors are fixed by the alignment's translation (rounding
    # noise, ~1e-17): no slope, as for an exact fit.
    over = load(tmp_path, truth=MAJORITY_0, fit={"n_experts": 3},
                metrics={"voronoi": ["over"]})
    by_name = {c.name: c for c in over.metric_schema()}
    for field in ("weight", "gate_intercept", "gate_coef"):
        column = by_name[f"pe_{field}_0"]
        assert column.theory.fit_slope  # the whole column: both kinds of replications
        assert not cell_theory(over, column, 1).fit_slope
        assert "0 by construction" in cell_theory(over, column, 1).reason
        assert cell_theory(over, column, 2).fit_slope
    # The majority cell's experts, and the other cell, are fitted for every m.
    assert cell_theory(over, by_name["pe_expert_coef_0"], 1).fit_slope
    assert cell_theory(over, by_name["pe_weight_1"], 1).fit_slope


def test_a_majority_cell_column_mixing_fixed_and_free_replications_fits_per_cell(tmp_path):
    # Replications where cell 0 holds one atom carry rounding noise in its gate intercept
    # error; where it holds two, real errors ~ n^-1/2. Only the m = 2 rows get a slope.
    over = load(tmp_path, truth=MAJORITY_0, fit={"n_experts": 3},
                metrics={"voronoi": ["over"]})
    rows = []
    for n in (1000, 2000, 4000, 8000):
        rows += [{"n": n, "atoms_0": 1.0, "atoms_1": 2.0, "pe_gate_intercept_0": 1e-17},
                 {"n": n, "atoms_0": 2.0, "atoms_1": 1.0, "pe_gate_intercept_0": n ** -0.5}]
    by_loss = {r["loss"]: r for r in study_rate_rows(rows, None, over)}
    assert np.isnan(by_loss["pe_gate_intercept_0"]["slope"])
    assert "fixes this error where the cell holds m = 1 atom(s)" in \
        by_loss["pe_gate_intercept_0"]["note"]
    assert np.isnan(by_loss["pe_gate_intercept_0[m=1]"]["slope"])
    assert by_loss["pe_gate_intercept_0[m=2]"]["slope"] == pytest.approx(-0.5)


def test_a_one_expert_temperature_truth_has_parameter_errors_and_no_temperature_column(
        tmp_path):
    # A lone expert's gate is 1 whatever its temperature: the metrics leave it out, so
    # the study has no pe_temperature column (it had one, whose None failed every pe_
    # column of the row into NaN).
    truth = {"gating": "temperature", "temperature": 0.5, "gate_coef": [[0.0]],
             "gate_intercept": [0.0], "expert_coef": [[2.0]], "expert_intercept": [1.0],
             "expert_var": [0.1]}
    exp = load(tmp_path, truth=truth, fit={"n_experts": 1, "gating": "temperature",
                                           "temperature": 0.5})
    assert not [c for c in exp.metric_columns() if "temperature" in c]
    row = run_task(exp, 60, 0)
    assert row["status"] == "ok", row["error"]
    pe = {name: value for name, value in row.items() if name.startswith("pe_")}
    assert pe and all(np.isfinite(value) for value in pe.values()), pe
