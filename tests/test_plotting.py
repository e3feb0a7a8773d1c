import types

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PathCollection, PolyCollection  # noqa: E402
from numpy.testing import assert_allclose  # noqa: E402

from gmoe import MixingMeasure, make_design, sample_moe  # noqa: E402
from gmoe.plotting import (  # noqa: E402
    plot_experts,
    plot_gates,
    plot_log_likelihood_trace,
    plot_predictive,
    plot_responsibilities,
)
from gmoe.predictive import predictive_distribution  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _truth():
    return MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                         [0.09, 0.16])


def _topk():
    return MixingMeasure([[4.0], [-3.0], [0.0]], [-1.0, 0.5, 0.0], [[2.0], [-1.0], [0.5]],
                         [1.0, -2.0, 4.0], [0.3, 0.5, 0.2], gating="topk", top_k=1)


def _two_features():
    return MixingMeasure([[1.0, -2.0], [0.0, 0.0]], [0.2, 0.0], [[1.0, 0.0], [-1.0, 2.0]],
                         [0.0, 3.0], [1.0, 0.25])


@pytest.fixture
def data():
    m = _truth()
    X = make_design(100)
    return m, X, sample_moe(m, X, random_state=0)


def _labels(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _polys(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def _scatters(ax):
    return [c for c in ax.collections if isinstance(c, PathCollection)]


def test_plot_experts(data):
    m, X, y = data
    ax = plot_experts(m, X, y)
    assert len(ax.lines) == 2
    assert len(_polys(ax)) == 2
    assert len(_scatters(ax)) == 1
    assert _labels(ax) == ["data", "expert 1", "expert 2"]
    assert ax.get_xlabel() == "x" and ax.get_ylabel() == "y"
    # the line of expert 1 is a x + b on the range of X
    x_line, y_line = ax.lines[0].get_data()
    assert x_line[0] == 0.0 and x_line[-1] == 1.0
    assert_allclose(y_line, -20.0 * x_line + 15.0)


def test_plot_experts_without_data_on_given_axes(data):
    m, X, _ = data
    fig, ax = plt.subplots()
    out = plot_experts(m, X, ax=ax, n_grid=11)
    assert out is ax
    assert len(ax.lines) == 2 and len(ax.lines[0].get_xdata()) == 11
    assert not _scatters(ax)
    assert _labels(ax) == ["expert 1", "expert 2"]


def test_plot_gates(data):
    m, _, _ = data
    ax = plot_gates(m)
    assert len(ax.lines) == 2
    assert _labels(ax) == ["gate 1", "gate 2"]
    gates = np.array([line.get_ydata() for line in ax.lines])
    assert_allclose(gates.sum(axis=0), 1.0)
    assert len(ax.lines[0].get_xdata()) == 201


def test_plot_gates_topk_draws_zero_for_inactive_experts():
    ax = plot_gates(_topk(), np.linspace(-1, 2, 50))
    gates = np.array([line.get_ydata() for line in ax.lines])
    assert gates.shape == (3, 50)
    assert set(np.unique(gates)) <= {0.0, 1.0}
    assert_allclose(gates.sum(axis=0), 1.0)


def test_plot_predictive(data):
    m, X, y = data
    ax = plot_predictive(m, X, y, level=0.8)
    assert len(ax.lines) == 1
    assert len(_polys(ax)) == 1 and len(_scatters(ax)) == 1
    assert _labels(ax) == ["data", "predictive mean", "80% interval"]
    # the band is the central interval of the predictive at the line's points
    mean_x, mean_y = ax.lines[0].get_data()
    mix = predictive_distribution(m, mean_x[:, None])
    assert_allclose(mean_y, mix.mean)
    lower, upper = mix.interval(0.8)
    band = _polys(ax)[0].get_paths()[0].vertices
    assert_allclose(band[:, 1].min(), lower.min(), rtol=1e-12)
    assert_allclose(band[:, 1].max(), upper.max(), rtol=1e-12)
    assert _labels(plot_predictive(m, X, level=0.975))[-1] == "97.5% interval"


def test_plot_predictive_rejects_bad_level(data):
    m, X, _ = data
    with pytest.raises(ValueError, match="level must be a number in"):
        plot_predictive(m, X, level=1.5)


def test_plot_log_likelihood_trace():
    trace = [-3.0, -2.0, -1.5, -1.4]
    ax = plot_log_likelihood_trace(trace)
    assert len(ax.lines) == 1
    x, yv = ax.lines[0].get_data()
    assert_allclose(x, [0, 1, 2, 3])  # the start, then each EM step
    assert_allclose(yv, trace)
    assert ax.get_xlabel() == "EM iteration"
    est = types.SimpleNamespace(lower_bounds_=np.array(trace))
    assert_allclose(plot_log_likelihood_trace(est).lines[0].get_ydata(), trace)
    with pytest.raises(ValueError, match="at least one value"):
        plot_log_likelihood_trace([])


def test_plot_responsibilities(data):
    m, X, y = data
    ax = plot_responsibilities(m, X, y)
    assert len(_scatters(ax)) == 1
    colors = _scatters(ax)[0].get_facecolors()
    assert colors.shape == (100, 4)
    assert _labels(ax) == ["expert 1", "expert 2"]
    # points far from the gate's switch (x = 0.32) belong to one expert and take its
    # colour: expert 2 (C1) at x = 0, expert 1 (C0) at x = 1
    c0 = np.array(matplotlib.colors.to_rgb("C0"))
    c1 = np.array(matplotlib.colors.to_rgb("C1"))
    assert_allclose(colors[0, :3], c1, atol=1e-6)
    assert_allclose(colors[-1, :3], c0, atol=1e-6)
    with pytest.raises(ValueError, match="y is required"):
        plot_responsibilities(m, X, None)


def test_accepts_a_fitted_estimator(data):
    m, X, y = data
    est = types.SimpleNamespace(mixing_measure_=m)
    for ax in (plot_experts(est, X, y), plot_gates(est), plot_predictive(est, X, y),
               plot_responsibilities(est, X, y)):
        assert ax.lines or ax.collections


def test_several_features_need_a_feature_and_fixed_values():
    m = _two_features()
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 2))
    y = sample_moe(m, X, random_state=1)
    with pytest.raises(ValueError, match="n_features=2.*Pass feature="):
        plot_experts(m, X, y)
    with pytest.raises(ValueError, match="pass fixed="):
        plot_experts(m, X, y, feature=1)
    with pytest.raises(ValueError, match="Pass feature="):
        plot_gates(m)
    with pytest.raises(ValueError, match="feature must be an integer in"):
        plot_predictive(m, X, y, feature=2, fixed=[0.0, 0.0])
    with pytest.raises(ValueError, match=r"fixed must have shape \(2,\)"):
        plot_gates(m, feature=0, fixed=[0.0])
    ax = plot_experts(m, X, y, feature=1, fixed=[0.5, 0.0])
    assert len(ax.lines) == 2 and ax.get_xlabel() == "x[1]"
    # expert 1 at x0 = 0.5: mean 1 * 0.5 + 0 * x1 + 0
    assert_allclose(ax.lines[0].get_ydata(), 0.5)
    assert len(plot_gates(m, np.linspace(-2, 2, 9), feature=0, fixed=[0, 1]).lines) == 2
    assert len(plot_predictive(m, X, y, feature=0, fixed=[0, 1]).lines) == 1
    assert len(_scatters(plot_responsibilities(m, X, y, feature=0))) == 1


def test_plotting_validates_data(data):
    m, X, y = data
    with pytest.raises(ValueError, match="Reshape your data"):
        plot_experts(m, X.ravel(), y)
    with pytest.raises(ValueError, match=r"y must have shape"):
        plot_experts(m, X, y[:-1])
    with pytest.raises(ValueError, match="must be a MixingMeasure or a fitted estimator"):
        plot_gates(object())
