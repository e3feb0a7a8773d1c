"""Experiment files: parsing, validation messages, sample-size grids, task hashes."""

import re
from pathlib import Path

import pytest
from _study import DROP, study_text

from gmoe.simulation import ExperimentError, load_experiment, parse_sizes

REPO_SIMULATIONS = Path(__file__).resolve().parents[1] / "simulations"

# The fixture study with a sample-size grid mixing an integer and a linspace segment.
BASE = study_text(seed=123, sizes=[60, {"linspace": [100, 200, 3]}], replications=2,
                  quick={"n": [60], "replications": 1})


def write(tmp_path, text, name="exp.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_text(tmp_path, text):
    return load_experiment(write(tmp_path, text))


# ------------------------------------------------------------------------- sizes
@pytest.mark.parametrize("design, expected", [
    ({"kind": "normal", "low": DROP, "high": DROP}, {"kind": "normal", "low": 0.0,
                                                     "high": 1.0}),
    ({"kind": "uniform", "low": -2.0, "high": 2.0}, {"kind": "grid", "low": -2.0,
                                                      "high": 2.0}),
])
def test_the_evaluation_design_defaults_to_the_designs_law(tmp_path, design, expected):
    # A normal design without [metrics.evaluation] was scored on a grid over [0, 1], the
    # bounds a normal design does not use.
    text = study_text(design=design, metrics={"evaluation": DROP})
    evaluation = load_text(tmp_path, text).metrics["evaluation"]
    assert {key: evaluation[key] for key in expected} == expected


def test_parse_sizes_spec_grid():
    # paper 1's reference protocol: 5 values from 100 to 900, then 195 from 1000 to 100000.
    sizes = parse_sizes([{"linspace": [100, 900, 5]}, {"linspace": [1000, 100000, 195]}])
    assert len(sizes) == 200
    assert sizes[:6] == (100, 300, 500, 700, 900, 1000)
    assert sizes[-1] == 100000
    assert all(isinstance(n, int) for n in sizes)


def test_parse_sizes_logspace_rounding_and_dedupe():
    assert parse_sizes({"logspace": [100, 10000, 3]}) == (100, 1000, 10000)
    # 1e4 is a TOML float; integral values are accepted. Duplicates count once.
    assert parse_sizes([1e4, 10000, 5, {"linspace": [5, 6, 2]}]) == (5, 6, 10000)
    assert parse_sizes({"logspace": [10, 11, 5]}) == (10, 11)


@pytest.mark.parametrize("value, match", [
    ([], "at least one"),
    ([{"linspace": [100, 900]}], r"linspace expects \[start, stop, num\]"),
    ([{"linspace": [100, 900, 2.5]}], "integer num"),
    ([{"geomspace": [1, 10, 3]}], "exactly one of 'linspace', 'logspace'"),
    ([{"logspace": [0, 10, 3]}], "1 <= start <= stop"),
    ([10.5], "entry 0: expected an integer >= 1"),
    (["100"], "entry 0"),
    ([0], "entry 0"),
])
def test_parse_sizes_errors(value, match):
    with pytest.raises(ExperimentError, match=match):
        parse_sizes(value, where="[sizes] n", path="f.toml")


# --------------------------------------------------------------------- loading
def test_load_tiny(tmp_path):
    exp = load_text(tmp_path, BASE)
    assert exp.name == "exp"
    assert exp.sizes == (60, 100, 150, 200)
    assert exp.replications == 2
    assert len(exp.tasks()) == 8
    assert exp.fit["gating"] == "softmax" and exp.fit["max_iter"] == 100
    assert exp.fit["tol"] == 1e-4  # default: the estimator's (a Newton decrement)
    assert exp.start == {"kind": "near_truth", "n_starts": 1, "var_center": "truth",
                         "gate_noise": 0.005, "expert_noise": 0.05, "var_noise": 0.005,
                         "noise_exponent": 0.083, "var_noise_exponent": 0.25,
                         "assignment": None, "protocol": "even", "temperature_noise": 0.0,
                         "temperature_noise_exponent": 0.083}
    assert exp.metric_columns()[:2] == ["d1", "pe_weight_0"]
    assert exp.metric_columns()[-2:] == ["hellinger", "tv"]
    assert exp.metrics["evaluation"] == {"kind": "uniform", "n": 40, "low": 0.0, "high": 1.0}
    quick = exp.quick_variant()
    assert quick.is_quick and quick.sizes == (60,) and quick.replications == 1
    assert quick.task_sha256 == exp.task_sha256  # [quick] did not change n_starts


def test_parameter_error_columns_and_scales(tmp_path):
    text = study_text(metrics={"scales": ["identifiable", "raw"]})
    cols = load_text(tmp_path, text).metric_columns()
    assert cols[:2] == ["d1", "pe_weight_0"]
    assert "pe_expert_var_1" in cols and "d1_raw" in cols and "pe_gate_coef_0_raw" in cols
    assert cols[-2:] == ["hellinger", "tv"]


MALFORMED = [
    # (old, new, substrings the message must contain)
    ("expert_var = [0.09, 0.16]\n", "", ["[truth] expert_var", "missing required key"]),
    ("max_iter = 100", 'max_iter = "many"', ["[fit] max_iter", "expected an integer",
                                            "str 'many'"]),
    ('gating = "softmax"', 'gating = "sofmax"', ["[truth] gating", "'sofmax'",
                                                 "did you mean 'softmax'"]),
    ("gate_coef = [[25.0], [0.0]]", "gate_coef = [[25.0], [0.0], [1.0]]",
     ["[truth] gate_coef", "expected shape (2, 1)", "got (3, 1)"]),
    ("gate_intercept = [-8.0, 0.0]", "gate_intercept = [-8.0]",
     ["[truth] gate_intercept", "expected 2 entries", "got 1"]),
    ("expert_coef = [[-20.0], [20.0]]", "expert_coef = [[-20.0], [20.0, 1.0]]",
     ["[truth] expert_coef", "common, non-zero length"]),
    ("max_iter = 100", "max_iters = 100", ["unknown key 'max_iters' in [fit]",
                                         "did you mean 'max_iter'"]),
    ("[quick]", "[quik]", ["unknown key 'quik' in the top level"]),
    ("seed = 123", "seed = -1", ["seed", "expected a value >= 0"]),
    ("seed = 123\n", "", ["seed", "missing required key"]),
    ("n_experts = 2", "n_experts = 3", ["[metrics] voronoi", "'exact' (D1)",
                                        "use 'over'"]),
    ("n_experts = 2", "n_experts = 1", ["[fit] n_experts", "at least the truth's 2"]),
    ('kind = "near_truth"', 'kind = "near"', ["[start] kind", "'near_truth'"]),
    ('kind = "near_truth"', 'kind = "data"\nn_starts = 2',
     ["[start] n_starts", "does not apply to kind='data'"]),
    ("[quick]\nn = [60]", "[quick]\nn = [60]\nn_init = 3",
     ["[quick] n_init", "applies to [start] kind='data'"]),
    ('kind = "near_truth"', 'kind = "near_truth"\ndata_starts = { kmeans = 0 }',
     ["[start] data_starts", "number of starts >= 1 for 'kmeans'", "int 0"]),
    ('kind = "near_truth"', 'kind = "near_truth"\ndata_starts = { kmean = 3 }',
     ["[start] data_starts", "'kmeans', 'random', 'short_em'", "got 'kmean'"]),
    ('kind = "near_truth"', 'kind = "near_truth"\ndata_starts = 3',
     ["[start] data_starts", "expected a table of initialisations", "int 3"]),
    ('kind = "near_truth"', 'kind = "data"\ndata_starts = { kmeans = 3 }',
     ["[start] data_starts", "does not apply to kind='data'"]),
    ("replications = 2", "replications = 0", ["[sizes] replications", ">= 1"]),
    ("n = [60, {", "n = [1, {", ["[sizes] n", ">= [fit] n_experts = 2"]),
    ('gating = "softmax"', 'gating = "temperature"',
     ["[truth] temperature", "required for gating='temperature'"]),
    ('[design]\nkind = "uniform"', '[design]\nkind = "uniform"\nlow = 2.0',
     ["[design] high", "low < high"]),
    ("hellinger = true", "hellinger = 1", ["[metrics] hellinger", "expected true or false"]),
    ("voronoi = [\"exact\"]", "voronoi = [\"D1\"]", ["[metrics] voronoi"]),
    ('[truth]\ngating = "softmax"', '[truth]\ngating = "softmax"\ntop_k = 1',
     ["[truth] top_k", "does not apply to gating='softmax'"]),
    ("gate_intercept = [-8.0, 0.0]", "gate_intercept = [-8.0, 1.0]",
     ["[truth]", "gate_intercept[-1]"]),
    ('[metrics.evaluation]\nkind = "uniform"\nn = 40', "evaluation = 3",
     ["[metrics.evaluation]", "expected a table", "int 3"]),
    # Settings that would be ignored (and still change the task hash) are refused.
    ('[design]\nkind = "uniform"', '[design]\nkind = "normal"\nlow = 5.0',
     ["[design] low", "does not apply to kind='normal'"]),
    ('[metrics.evaluation]\nkind = "uniform"',
     '[metrics.evaluation]\nkind = "normal"\nhigh = 2.0',
     ["[metrics.evaluation] high", "does not apply to kind='normal'"]),
    ('kind = "near_truth"', 'kind = "near_truth"\ntemperature_noise_exponent = 0.5',
     ["[start] temperature_noise_exponent", "does not apply to gating='softmax'"]),
    ("hellinger = true", "hellinger = true\nrbar = { 2 = 4.0 }",
     ["[metrics] rbar", "applies to voronoi 'over'"]),
    ("max_iter = 100", 'max_iter = 100\ngating = "activation"\nactivation = "identity"\n'
                       "learn_temperature = true",
     ["[fit] learn_temperature", "does not apply to gating='activation', "
      "activation='identity', which does not learn a temperature"]),
    # A truth of fewer experts than it lists used to load, and the report quoted the
    # rates of its number of experts: two equal experts, or a top-1 expert never selected.
    ("expert_coef = [[-20.0], [20.0]]\nexpert_intercept = [15.0, -5.0]\n"
     "expert_var = [0.09, 0.16]",
     "expert_coef = [[-20.0], [-20.0]]\nexpert_intercept = [15.0, 15.0]\n"
     "expert_var = [0.09, 0.09]",
     ["[truth] expert_coef", "experts 0 and 1 are equal", "assume distinct experts"]),
    ('gating = "softmax"\ngate_coef = [[25.0], [0.0]]\ngate_intercept = [-8.0, 0.0]',
     'gating = "topk"\ntop_k = 1\ngate_coef = [[25.0], [0.0]]\n'
     "gate_intercept = [-30.0, 0.0]",
     ["[truth] gate_coef", "expert(s) [0] have gate weight 0 at every one of 4096 points "
      "of the design (uniform)", "cannot identify them"]),
    ("max_iter = 100", 'max_iter = 100\ngating = "activation"\nactivation = "tanh"\n'
                       "temperature = 1e-120",
     ["[fit] temperature", "expected at least 1e-100 for gating='activation'",
      "got 1e-120."]),
]


@pytest.mark.parametrize("old, new, parts", MALFORMED, ids=[m[2][0] for m in MALFORMED])
def test_malformed_files_name_the_file_and_key(tmp_path, old, new, parts):
    assert old in BASE
    path = write(tmp_path, BASE.replace(old, new, 1))
    with pytest.raises(ExperimentError) as info:
        load_experiment(path)
    message = str(info.value)
    assert str(path) in message
    for part in parts:
        assert part in message, message


def test_invalid_toml_and_missing_file(tmp_path):
    path = write(tmp_path, "seed = \n")
    with pytest.raises(ExperimentError, match=re.escape(f"{path}: not a valid TOML file")):
        load_experiment(path)
    with pytest.raises(ExperimentError, match="cannot read"):
        load_experiment(tmp_path / "absent.toml")


def test_assignment_validation(tmp_path):
    text = BASE.replace("n_experts = 2", "n_experts = 3").replace(
        '"exact"', '"over"').replace('kind = "near_truth"', 'kind = "near_truth"\n'
                                     'assignment = [0, 0, 1]')
    assert load_text(tmp_path, text).start["assignment"] == [0, 0, 1]
    for bad, part in [("[0, 1, 0]", "last fitted atom must go to the true reference 1"),
                      ("[1, 1, 1]", "every true atom 0..1"),
                      ("[0, 1]", "expected 3 entries"),
                      ("[0, 2, 1]", "indices in 0..1")]:
        with pytest.raises(ExperimentError, match=re.escape(part)):
            load_text(tmp_path, text.replace("[0, 0, 1]", bad))


def test_fit_options_inherit_from_truth(tmp_path):
    text = BASE.replace('gating = "softmax"', 'gating = "topk"\ntop_k = 1')
    exp = load_text(tmp_path, text)
    assert exp.fit["gating"] == "topk" and exp.fit["top_k"] == 1
    assert exp.fit["topk_selection"] == "affine"
    assert exp.estimator_params()["top_k"] == 1


# ----------------------------------------------------------------------- hashes
def test_task_hash_ignores_grid_replications_quick_and_comments(tmp_path):
    ref = load_text(tmp_path, BASE)
    grown = BASE.replace("n = [60, {", "n = [60, 70, 80, {").replace(
        "replications = 2", "replications = 5").replace(
        "[quick]\nn = [60]", "[quick]\nn = [70]").replace(
        'description = "tiny harness study"', 'description = "bigger"\n# a comment')
    other = load_experiment(write(tmp_path, grown, "other.toml"))
    assert other.file_sha256 != ref.file_sha256
    assert other.task_sha256 == ref.task_sha256
    # Spelling out a default changes the bytes, not the task definition.
    explicit = load_experiment(write(tmp_path, BASE.replace(
        "max_iter = 100", "max_iter = 100\ntol = 1e-4\nreg_var = 1e-6"), "explicit.toml"))
    assert explicit.task_sha256 == ref.task_sha256


@pytest.mark.parametrize("old, new", [
    ("max_iter = 100", "max_iter = 101"),
    ("seed = 123", "seed = 124"),
    ("expert_var = [0.09, 0.16]", "expert_var = [0.09, 0.17]"),
    ('kind = "near_truth"', 'kind = "near_truth"\nn_starts = 2'),
    ("[metrics.evaluation]\nkind = \"uniform\"\nn = 40",
     "[metrics.evaluation]\nkind = \"uniform\"\nn = 41"),
    ('[design]\nkind = "uniform"', '[design]\nkind = "grid"'),
])
def test_task_hash_changes_with_what_a_task_computes(tmp_path, old, new):
    ref = load_text(tmp_path, BASE)
    changed = load_experiment(write(tmp_path, BASE.replace(old, new), "changed.toml"))
    assert changed.task_sha256 != ref.task_sha256


# --------------------------------------------------------------- shipped studies
STUDIES = ["softmax-exact", "softmax-over-k3", "softmax-over-k4", "topk-exact", "topk-over",
           "temperature", "activation"]


@pytest.mark.parametrize("name", STUDIES)
def test_shipped_studies_load(name):
    exp = load_experiment(REPO_SIMULATIONS / f"{name}.toml")
    quick = exp.quick_variant()
    assert len(quick.tasks()) < len(exp.tasks())
    assert exp.metric_columns()
    if name == "topk-over":
        # Our own study: two decades at 20 x 20 (its large-n fits take minutes each).
        assert exp.replications == 20
        assert exp.sizes == parse_sizes({"logspace": [1000, 100000, 20]})
        assert exp.start["n_starts"] == 5 and "d2" in exp.metric_columns()
        return
    assert exp.replications == 40
    if name.startswith("softmax-over"):
        assert exp.sizes == parse_sizes({"linspace": [10000, 100000, 200]})
        assert exp.start["n_starts"] == 5 and "d2" in exp.metric_columns()
    else:
        assert len(exp.sizes) == 200 and exp.sizes[0] == 100 and exp.sizes[-1] == 100000
        assert exp.start["n_starts"] == 1 and "d1" in exp.metric_columns()


def test_the_data_starts_study_is_activation_with_more_starts_on_its_own_tasks():
    # Same truth, design, fit, seed and near-truth start: each task has activation's data
    # and its near-truth fit among the 21, so the kept fit is at least as high. Its sizes
    # and replications are some of activation's.
    activation = load_experiment(REPO_SIMULATIONS / "activation.toml")
    more = load_experiment(REPO_SIMULATIONS / "activation-data-starts.toml")
    assert more.truth == activation.truth and more.design == activation.design
    assert more.fit == activation.fit and more.seed == activation.seed
    assert more.metrics == activation.metrics
    assert {k: v for k, v in more.start.items() if k != "data_starts"} == activation.start
    assert more.start["data_starts"] == {"kmeans": 10, "random": 10}
    assert set(more.sizes) <= set(activation.sizes)
    assert more.replications <= activation.replications


def test_the_density_study_is_paper2_top1_over_on_other_sizes_with_densities_only():
    # Its rate must be the over-specified top-1 fit's: the same truth, fit and starts.
    over = load_experiment(REPO_SIMULATIONS / "paper2-top1-over.toml")
    density = load_experiment(REPO_SIMULATIONS / "paper2-top1-over-density.toml")
    assert density.truth == over.truth
    assert density.fit == over.fit and density.start == over.start
    assert density.design == over.design
    assert density.metric_columns() == ["hellinger", "tv"]
    assert density.sizes[0] == 1000 and density.sizes[-1] == 100000
    assert density.seed != over.seed  # its own data


def test_softmax_exact_is_spec_5_2():
    exp = load_experiment(REPO_SIMULATIONS / "softmax-exact.toml")
    t = exp.truth
    assert t.gate_coef.ravel().tolist() == [25.0, 0.0]
    assert t.gate_intercept.tolist() == [-8.0, 0.0]
    assert t.expert_coef.ravel().tolist() == [-20.0, 20.0]
    assert t.expert_intercept.tolist() == [15.0, -5.0]
    assert t.expert_var.tolist() == [0.09, 0.16]
    assert exp.fit["tol"] == 1e-4 and exp.fit["max_iter"] == 2000


def test_evaluation_bounds_without_a_kind_keep_a_bounded_design_for_a_normal_design(tmp_path):
    # Bounds given without a kind ask for a bounded evaluation design (they always did):
    # the normal default applies only when the table gives none.
    text = study_text(design={"kind": "normal", "low": DROP, "high": DROP},
                      metrics={"evaluation": {"kind": DROP, "low": -2.0, "high": 2.0}})
    evaluation = load_text(tmp_path, text).metrics["evaluation"]
    assert (evaluation["kind"], evaluation["low"], evaluation["high"]) == ("grid", -2.0, 2.0)
