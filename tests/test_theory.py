"""The theory module: rbar(m) and the rates the theory predicts for each setting and loss."""

import re

import pytest

import gmoe.metrics._cells as _cells
from gmoe import MixingMeasure
from gmoe.metrics import voronoi_loss
from gmoe.theory import DEFAULT_RBAR, SETTINGS, rbar_of, theoretical_slope, theory

_ALL_LOSSES = ("voronoi", "hellinger", "tv", "weights", "gate_coef", "expert_intercept",
               "expert_coef", "expert_var")


@pytest.mark.parametrize("setting", ["softmax-exact", "topk-exact", "temperature",
                                     "activation-exact"])
@pytest.mark.parametrize("loss", [*_ALL_LOSSES, "D1", "D2"])
def test_theory_exact_settings(setting, loss):
    assert theoretical_slope(setting, loss) == -0.5


@pytest.mark.parametrize("setting", ["softmax-over", "topk-over"])
@pytest.mark.parametrize(("m", "rbar"), [(2, 4), (3, 6)])
def test_theory_over_specified(setting, m, rbar):
    for loss in ("voronoi", "D2", "hellinger", "tv", "weights"):
        assert theoretical_slope(setting, loss, m=m) == -0.5
    for loss in ("gate_coef", "expert_intercept", "beta1", "b", "D1"):
        assert theoretical_slope(setting, loss, m=m) == -1 / (2 * rbar)
    for loss in ("expert_coef", "expert_var", "a", "nu"):
        assert theoretical_slope(setting, loss, m=m) == -1 / rbar


def test_theory_over_defaults_and_rbar():
    assert theoretical_slope("softmax-over", "gate_coef") == -1 / 8  # m = 2 by default
    assert theoretical_slope("softmax-over", "expert_var", m=1) == -0.5  # singleton cell
    assert theoretical_slope("softmax-over", "expert_coef", m=4, rbar=8) == -1 / 8
    with pytest.raises(ValueError, match=re.escape("rbar(4) is unknown")):
        theoretical_slope("softmax-over", "expert_coef", m=4)
    # temperature on gamma is softmax; m >= 2 selects the over-specified rates
    assert theoretical_slope("temperature", "gate_coef", m=3) == -1 / 12


def test_theory_none_where_no_polynomial_rate():
    for loss in ("voronoi", "weights", "gate_coef", "expert_intercept", "expert_coef",
                 "expert_var"):
        assert theoretical_slope("activation-over", loss) is None
    for loss in ("voronoi", "D1", "gate_coef", "gate_intercept", "temperature"):
        assert theoretical_slope("temperature-raw", loss) is None
    for setting in ("temperature-raw", "activation-over"):
        assert theoretical_slope(setting, "hellinger") == -0.5  # the density still converges
        assert theoretical_slope(setting, "tv") == -0.5


def test_raw_temperature_weights_and_experts_are_the_identifiable_models():
    # The gate's scale symmetry moves (beta1, beta0, tau) only: the weights exp(beta0/tau)
    # and the experts are the same numbers on either scale, and so have the same rates.
    for loss in ("weights", "expert_intercept", "expert_coef", "expert_var"):
        assert theoretical_slope("temperature-raw", loss) == -0.5
        assert theoretical_slope("temperature-raw", loss, m=3) == theoretical_slope(
            "temperature", loss, m=3)


def test_theory_aliases_and_errors():
    assert theoretical_slope("softmax_over", "gate_coef_error") == -1 / 8
    assert theoretical_slope("SOFTMAX-OVER", "err_nu") == -1 / 4
    assert len(SETTINGS) == 8
    with pytest.raises(ValueError, match="setting must be one of"):
        theoretical_slope("softmax", "voronoi")
    with pytest.raises(ValueError, match="loss 'loglik' has no theoretical rate"):
        theoretical_slope("softmax-exact", "loglik")


def test_rbar_known_supplied_and_unknown():
    assert (rbar_of(1), rbar_of(2), rbar_of(3)) == (1.0, 4.0, 6.0)
    assert rbar_of(4, {4: 8.0}) == 8.0 and rbar_of(2, {2: 5}) == 5.0  # supplied wins
    with pytest.raises(ValueError, match=re.escape("rbar(4) is unknown")):
        rbar_of(4)
    with pytest.raises(ValueError, match="m .* must be a positive integer, got m=0"):
        rbar_of(0)
    with pytest.raises(ValueError, match=re.escape("rbar(4) must be a positive number")):
        rbar_of(4, {4: -1.0})
    with pytest.raises(TypeError):
        DEFAULT_RBAR[4] = 8.0  # read-only: one table for every user


def test_voronoi_loss_reads_the_same_rbar():
    # The metric uses the theory's table, not a copy: D2 of a split cell follows rbar(2).
    assert _cells.DEFAULT_RBAR is DEFAULT_RBAR
    truth = MixingMeasure([[2.0], [0.0]], [0.0, 0.0], [[1.0], [0.0]], [0.0, 1.0], [1.0, 1.0])
    # Two atoms in cell 0 (slopes 1 +- 0.1 against 1), same mass split in half.
    fit = MixingMeasure([[2.0], [2.0], [0.0]], [-0.6931471805599453, -0.6931471805599453, 0.0],
                        [[1.1], [0.9], [0.0]], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    rbar2 = DEFAULT_RBAR[2]
    expected = 2 * 0.5 * (0.1 ** (rbar2 / 2))  # ||d a||^(rbar/2) for each half-weight atom
    assert voronoi_loss(fit, truth, kind="over", translation="none") == pytest.approx(
        expected, rel=1e-9)
    assert voronoi_loss(fit, truth, kind="over", translation="none",
                        rbar={2: 2.0}) == pytest.approx(2 * 0.5 * 0.1, rel=1e-9)


def test_intercept_and_temperature_have_no_stated_rate():
    for setting in ("softmax-exact", "softmax-over", "temperature", "activation-exact"):
        assert theory(setting, "gate_intercept") == (None, "", True)
        assert theory(setting, "tau").slope is None
    # on the raw temperature scale they are not consistent: no slope at all
    assert theory("temperature-raw", "beta0").fit_slope is False
    assert theory("temperature-raw", "temperature").fit_slope is False


def test_singleton_cell_reason_names_the_cell():
    expected = theory("softmax-over", "gate_coef", m=1)
    assert expected.slope == -0.5 and "one fitted atom" in expected.reason


def test_a_top1_boundary_is_a_change_point():
    # The conditional density jumps at a top-1 boundary: located to within the spacing of
    # the design's points, n^-1, faster than the loss's n^-1/2 bound on the rescaled gate.
    assert theoretical_slope("topk-exact", "boundary") == -1.0
    assert theoretical_slope("topk-exact", "boundary_error") == -1.0
    assert theoretical_slope("topk-exact", "gate_coef") == -0.5
    for setting in ("topk-over", "softmax-exact"):
        assert theoretical_slope(setting, "boundary") is None
        assert "no stated rate for the boundaries" in theory(setting, "boundary").reason
    # A study's boundary column quotes it for a top-1 truth only: with more experts
    # selected the density is continuous where the largest gate changes hands.
    from types import SimpleNamespace

    from gmoe.gates import TopKGating
    from gmoe.simulation.columns import _column_theory

    for top_k, slope in ((1, -1.0), (2, None)):
        study = SimpleNamespace(truth=SimpleNamespace(family=TopKGating(top_k)))
        assert _column_theory(study, "boundary", None, "identifiable", "topk-exact",
                              (1, 1, 1)).slope == slope
