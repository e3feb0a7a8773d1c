"""A gating family defined here alone is registered, fitted, given standard errors and
compared with its truth by a Voronoi loss, without editing any gmoe module.

This is the contributor page's example ("Adding a gating family"): a softmax over the fixed
feature map ``phi(x) = x**2`` (elementwise). Nothing below touches gmoe's internals.
"""

import inspect

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.optimize import approx_fprime

import gmoe
from gmoe.gates import SmoothGatingFamily, make_gating, register_gating


class SquaredFeatureSoftmax(SmoothGatingFamily):
    """Softmax gate over ``phi(x) = x**2``: logits ``beta1_j^T phi(x) + beta0_j``."""

    name = "squared-softmax"
    # Logits are linear in (beta1, beta0): a common translation leaves the gate unchanged,
    # so the reference expert's slope is pinned, as for the softmax gate. A shift of x is
    # not absorbed by the intercepts (phi is not affine), so centres_design stays False.
    pins_reference_coef = True

    def logit_derivatives(self, X, params, learn_temperature=False):
        phi = X ** 2
        n, k = X.shape[0], params.intercept.shape[0]
        logits = phi @ params.coef.T + params.intercept
        d_coef = np.broadcast_to(phi[:, None, :], (n, k, X.shape[1]))
        return logits, d_coef, np.ones((n, k)), None, None


@pytest.fixture
def registered():
    register_gating(SquaredFeatureSoftmax.name, SquaredFeatureSoftmax)
    try:
        yield SquaredFeatureSoftmax.name
    finally:
        gmoe.gates._REGISTRY.pop(SquaredFeatureSoftmax.name)


def _truth(gating):
    return gmoe.MixingMeasure(gate_coef=[[6.0], [0.0]], gate_intercept=[-1.5, 0.0],
                              expert_coef=[[-3.0], [3.0]], expert_intercept=[1.0, -1.0],
                              expert_var=[0.09, 0.16], gating=gating)


def test_a_family_defined_in_a_test_file_is_fitted_end_to_end(registered):
    truth = _truth(registered)
    assert isinstance(truth.family, SquaredFeatureSoftmax)
    X = gmoe.make_design(4000, "uniform", low=-1.0, high=1.0, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    # The gate depends on x**2 only: expert 0 owns |x| > 0.5, expert 1 the middle.
    g = np.exp(truth.log_gate(np.array([[0.0], [0.9], [-0.9]])))
    assert g[0, 1] > 0.8 and g[1, 0] > 0.8 and g[2, 0] > 0.8

    est = gmoe.GaussianMoERegressor(2, gating=registered, n_init=3, random_state=0).fit(X, y)
    assert est.converged_
    fitted = est.align_to(truth).mixing_measure_
    # n = 4000: parameter errors ~ n^-1/2 times O(1-10) constants, far below these.
    assert_allclose(fitted.expert_coef, truth.expert_coef, atol=0.15)
    assert_allclose(fitted.expert_var, truth.expert_var, rtol=0.15)
    assert abs(fitted.gate_coef[0, 0] - 6.0) < 1.5
    # The fit is at least as likely as the truth on its own data (it is the MLE).
    assert est.log_likelihood(X, y) >= gmoe.conditional_log_density(truth, X, y).sum()

    # Standard errors from the family's logit derivatives: the observed information is
    # minus the Hessian of the log-likelihood, checked by finite differences of the score.
    res = gmoe.fit_results(est, X, y)
    assert res.param_names[:2] == ["gate[0].coef[0]", "gate[0].intercept"]
    assert np.all(np.isfinite(res.bse)) and np.all(res.bse > 0)
    param = res._param

    def score(v):
        return gmoe.inference._compute_log_likelihood_derivatives(
            param, v, X, y, np.ones(len(y)))[1]

    fd = np.array([approx_fprime(res.params, lambda v, i=i: score(v)[i], 1e-6)
                   for i in range(len(res.params))])
    # Forward differences of O(1e4) scores with h = 1e-6: relative error ~1e-4.
    assert_allclose(res.hessian, fd, rtol=2e-3, atol=2e-3 * np.abs(fd).max())

    # A Voronoi loss against the truth, and it falls with the sample size.
    loss = gmoe.metrics.voronoi_loss(est, truth)
    assert 0 <= loss < 0.5
    small = gmoe.make_design(300, "uniform", low=-1.0, high=1.0, random_state=2)
    est_small = gmoe.GaussianMoERegressor(2, gating=registered, n_init=3, random_state=0).fit(
        small, gmoe.sample_moe(truth, small, random_state=3))
    assert gmoe.metrics.voronoi_loss(est_small, truth) > loss


def test_a_family_instance_works_without_registration():
    family = SquaredFeatureSoftmax()
    assert make_gating(family) is family
    truth = _truth(family)
    X = gmoe.make_design(500, "uniform", low=-1.0, high=1.0, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    est = gmoe.GaussianMoERegressor(2, gating=family, n_init=1, random_state=0).fit(X, y)
    assert est.mixing_measure_.family == family
    # The estimator's free-parameter count comes from the family: 2 gate + 2 * 3 experts.
    assert est._n_parameters() == 2 + 2 * 3


def test_register_gating_checks_its_arguments():
    with pytest.raises(ValueError, match="subclass of gmoe.gates.GatingFamily"):
        register_gating("x", object)
    with pytest.raises(ValueError, match="must equal the registered name 'other'"):
        register_gating("other", SquaredFeatureSoftmax)


def test_a_relabelled_fit_of_a_new_family_has_the_same_voronoi_loss(registered):
    # Relabelling the experts re-pins the gate at another reference expert: a common
    # translation of the slopes, which this family's gate does not see. The loss must
    # not see it either (it once did for families without linear logits in x).
    from gmoe.alignment import permute_experts

    truth = _truth(registered)
    relabelled = permute_experts(truth, [1, 0])
    assert not np.array_equal(relabelled.gate_coef, truth.gate_coef)
    assert gmoe.metrics.voronoi_loss(relabelled, truth) == pytest.approx(0.0, abs=1e-12)
    assert gmoe.metrics.voronoi_loss(relabelled, truth, translation="none") > 1.0


def test_a_lone_expert_of_a_family_that_neither_centres_nor_scales_is_least_squares():
    # A lone expert's gate is 1 whatever x is: its design is centred and scaled whatever
    # the family says (this one does neither). At x ~ 1e8 it fitted a slope of 7e-17 for
    # the least squares' 1.99, reported as converged.
    rng = np.random.default_rng(0)
    u = rng.uniform(-1.0, 1.0, size=(300, 1))
    y = 2.0 * u[:, 0] + 1.0 + rng.normal(0.0, 0.1, size=300)
    X = u + 1e8
    stored = X[:, 0] - 1e8  # exact (Sterbenz): the u that X holds
    slope = np.linalg.lstsq(np.column_stack([stored, np.ones(300)]), y, rcond=None)[0][0]
    est = gmoe.GaussianMoERegressor(1, gating=SquaredFeatureSoftmax(), n_init=1,
                                    random_state=0).fit(X, y)
    # x ~ 1e8 leaves the slope about 8 of its 16 digits (the mean's cancellation).
    assert est.expert_coef_[0, 0] == pytest.approx(slope, rel=1e-7)


class PowerFeatureSoftmax(SmoothGatingFamily):
    """Softmax gate over ``phi(x) = x**power``: a family with a structural option."""

    name = "power-softmax"
    pins_reference_coef = True
    OPTIONS = ("power",)

    def __init__(self, power=2):
        self.power = power

    def logit_derivatives(self, X, params, learn_temperature=False):
        phi = X ** self.power
        n, k = X.shape[0], params.intercept.shape[0]
        logits = phi @ params.coef.T + params.intercept
        d_coef = np.broadcast_to(phi[:, None, :], (n, k, X.shape[1]))
        return logits, d_coef, np.ones((n, k)), None, None


@pytest.fixture
def registered_with_option():
    register_gating(PowerFeatureSoftmax.name, PowerFeatureSoftmax)
    try:
        yield PowerFeatureSoftmax.name
    finally:
        gmoe.gates._REGISTRY.pop(PowerFeatureSoftmax.name)


def _power_truth(**options):
    return gmoe.MixingMeasure(gate_coef=[[6.0], [0.0]], gate_intercept=[-1.5, 0.0],
                              expert_coef=[[-3.0], [3.0]], expert_intercept=[1.0, -1.0],
                              expert_var=[0.09, 0.16], **options)


def test_a_family_option_is_part_of_the_family_by_its_declaration_alone(
        registered_with_option):
    # Declared in OPTIONS and stored under its name, the option is given to the measure by
    # name, built by the default from_options, and compared by the default options():
    # two powers are two families, not one (a Voronoi loss across them was computed).
    square = _power_truth(gating=registered_with_option, power=2)
    quartic = square.replace(power=4)
    assert square.family == PowerFeatureSoftmax(2) != quartic.family
    assert quartic.family.power == 4
    with pytest.raises(ValueError, match="share power"):
        gmoe.metrics.voronoi_loss(quartic, square)
    with pytest.raises(TypeError, match="unexpected keyword argument 'powr'"):
        _power_truth(gating=registered_with_option, powr=2)


def test_an_option_without_its_attribute_is_refused_not_ignored():
    class Forgetful(PowerFeatureSoftmax):
        def __init__(self, power=2):
            self.exponent = power

    with pytest.raises(AttributeError, match="no attribute 'power'.*override options"):
        _ = Forgetful(2) == Forgetful(4)


_POWER_STUDY = """
seed = 1
[truth]
gating = "{gating}"
power = 2
gate_coef = [[6.0], [0.0]]
gate_intercept = [-1.5, 0.0]
expert_coef = [[-3.0], [3.0]]
expert_intercept = [1.0, -1.0]
expert_var = [0.09, 0.16]
[design]
kind = "uniform"
low = -1.0
high = 1.0
[fit]
n_experts = 2
[start]
kind = "near_truth"
[sizes]
n = [200, 400]
replications = 1
[metrics]
voronoi = ["exact"]
"""


def test_a_study_of_a_family_with_an_option_runs(registered_with_option, tmp_path):
    from gmoe.simulation import load_experiment, run_experiment

    path = tmp_path / "power.toml"
    path.write_text(_POWER_STUDY.format(gating=registered_with_option))
    experiment = load_experiment(path)
    # The fit inherits the truth's option; the estimator, which has no 'power' argument,
    # is given the family itself; the task definition holds the option.
    assert experiment.fit["power"] == 2
    assert experiment.estimator_params()["gating"] == PowerFeatureSoftmax(2)
    assert experiment.task_definition()["truth"]["power"] == 2
    quartic = tmp_path / "quartic.toml"
    quartic.write_text(path.read_text().replace("power = 2", "power = 4"))
    assert load_experiment(quartic).fit_family() == PowerFeatureSoftmax(4)
    assert load_experiment(quartic).task_sha256 != experiment.task_sha256
    # A start near the truth is made of the truth's gate: its option too.
    quartic.write_text(path.read_text().replace("n_experts = 2", "n_experts = 2\npower = 4"))
    with pytest.raises(gmoe.simulation.ExperimentError, match="need the truth's power=2"):
        load_experiment(quartic)

    summary = run_experiment(experiment, tmp_path / "power.sqlite", n_jobs=1, progress=False)
    assert summary.failures == 0 and summary.tasks_stored == 2
    rows, _ = gmoe.simulation.read_rows(tmp_path / "power.sqlite")
    report = gmoe.simulation.study_report(rows, experiment)
    # No rate theorem covers this gate: the report says so, not that a setting is invalid.
    assert "no stated rates for the 'power-softmax-exact' setting" in report
    assert "must be one of" not in report


def test_an_option_is_never_dropped_silently(registered_with_option):
    # Given to a family that does not read it, or beside an instance (which holds its
    # own), it was ignored: MixingMeasure(gating="softmax", power=3) was a softmax gate.
    with pytest.raises(ValueError, match="power does not apply to gating='softmax'"):
        _power_truth(gating="softmax", power=3)
    with pytest.raises(ValueError, match="a family instance holds its own options"):
        _power_truth(gating=PowerFeatureSoftmax(3), power=4)


def test_a_study_with_a_bad_option_value_names_the_file_and_the_table(
        registered_with_option, tmp_path):
    # A family that does not validate its options: the study's loading still reports the
    # failure as an ExperimentError of the file and its [truth] (it leaked numpy's
    # TypeError), and a constructor that refuses the options names the key.
    from gmoe.simulation import ExperimentError, load_experiment

    text = f"""
seed = 1
[truth]
gating = "{registered_with_option}"
power = "abc"
gate_coef = [[6.0], [0.0]]
gate_intercept = [-1.5, 0.0]
expert_coef = [[-3.0], [3.0]]
expert_intercept = [1.0, -1.0]
expert_var = [0.09, 0.16]
[fit]
n_experts = 2
[start]
kind = "near_truth"
[sizes]
n = [200]
replications = 1
[metrics]
voronoi = ["exact"]
"""
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ExperimentError, match=r"bad.toml: \[truth\] gating: the truth's gate "
                                              r"cannot be evaluated .*TypeError"):
        load_experiment(path)

    class Strict(PowerFeatureSoftmax):
        def __init__(self, power):
            if not isinstance(power, int):
                raise TypeError(f"power must be an integer, got {power!r}")
            self.power = power

    gmoe.gates._REGISTRY[registered_with_option] = type(
        "StrictPower", (Strict,), {"name": registered_with_option})
    with pytest.raises(ExperimentError, match=r"\[truth\] power: power must be an integer"):
        load_experiment(path)


def test_gmoe_sim_runs_a_study_of_a_family_registered_by_an_imported_module(
        tmp_path, monkeypatch, capsys):
    # gmoe-sim knew only gmoe's families: a study file naming one of one's own was refused.
    # --import loads the module that registers it (from the current directory); the
    # worker processes find the family by importing that module again.
    import sys

    from joblib.externals.loky import get_reusable_executor

    from gmoe.simulation.cli import main

    (tmp_path / "cube_gates.py").write_text(
        "from tests_power import PowerFeatureSoftmax\n"
        "from gmoe.gates import register_gating\n\n\n"
        "class CubeSoftmax(PowerFeatureSoftmax):\n"
        "    name = 'cube-softmax'\n\n\n"
        "register_gating(CubeSoftmax.name, CubeSoftmax)\n")
    (tmp_path / "tests_power.py").write_text(
        "import numpy as np\nfrom gmoe.gates import SmoothGatingFamily\n\n\n"
        + inspect.getsource(PowerFeatureSoftmax))
    (tmp_path / "cube.toml").write_text(_POWER_STUDY.format(gating="cube-softmax"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    # Workers left by earlier tests were started without this directory on their path;
    # gmoe-sim's own process starts its workers after the import.
    get_reusable_executor().shutdown(wait=True)
    try:
        assert main(["run", "cube.toml", "--n-jobs", "1", "--no-progress"]) == 2
        assert "unknown key 'power' in [truth]" in capsys.readouterr().err
        assert main(["run", "cube.toml", "--import", "cube_gates", "--n-jobs", "2",
                     "--no-progress"]) == 0
        out = capsys.readouterr().out
        assert "2 tasks over 2 sample sizes; 0 not ok" in out
        assert main(["report", "cube.toml", "--import", "no_such_module"]) == 2
        assert "--import no_such_module: ModuleNotFoundError" in capsys.readouterr().err
    finally:
        gmoe.gates._REGISTRY.pop("cube-softmax", None)
        for name in ("cube_gates", "tests_power"):
            sys.modules.pop(name, None)


def test_gmoe_sim_says_why_a_worker_could_not_read_its_task(tmp_path, monkeypatch, capsys):
    # Workers started before a family's module was on their path cannot unpickle a task
    # of its study: loky's BrokenProcessPool. It was reported as a worker killed or out
    # of memory; the worker's own error and what to do are said instead.
    from joblib.externals.loky.process_executor import BrokenProcessPool

    from gmoe.simulation import cli

    def unreadable(*args, **kwargs):
        error = BrokenProcessPool("A task has failed to un-serialize. Please ensure that "
                                  "the arguments of the function are all picklable.")
        error.__cause__ = RuntimeError('\n"""\nTraceback (most recent call last):\n'
                                       "  File \"queues.py\", line 122, in get\n"
                                       "ModuleNotFoundError: No module named 'my_gates'\n"
                                       '"""')
        raise error

    monkeypatch.setattr(cli, "run_experiment", unreadable)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "study.toml").write_text(_POWER_STUDY.format(gating="softmax")
                                         .replace("power = 2\n", ""))
    assert cli.main(["run", "study.toml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "could not read its task (ModuleNotFoundError: No module named 'my_gates')" in err
    assert "register it in a module given with --import" in err
