import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import PolyCollection  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from numpy.testing import assert_allclose  # noqa: E402

from gmoe.simulation.plots import plot_parameter_rates, plot_rate, write_report  # noqa: E402
from gmoe.simulation.rates import fit_rate, format_rate_table  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _table(seed=0):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(100, 1e5, 8).round(), 10)

    def noisy(C, s):
        return C * n**s * np.exp(0.2 * rng.standard_normal(n.size))

    return {"n": n, "D1": noisy(33.1, -0.6), "hellinger": noisy(0.5, -0.5),
            "gate_coef": noisy(4.0, -0.125), "expert_var": noisy(1.0, -0.25)}


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_plot_rate_artists():
    table = _table()
    fit = fit_rate(table, "D1")
    ax = plot_rate(table, "D1", theory=-0.5)
    assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
    assert len(ax.get_lines()) == 3  # mean curve, fitted line, theory reference
    mean_line, fit_line, theory_line = ax.get_lines()
    assert theory_line.get_linestyle() == "--"
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # fill_between band
    texts = _legend_texts(ax)
    assert texts == ["D1", fit.legend, "theory n^-0.5"]
    assert sum("n^" in t for t in texts) == 2
    # the fitted line is C n^slope; the theory line starts on it with the theory slope
    x, y = fit_line.get_data()
    assert_allclose(y, fit.C * x**fit.slope, rtol=1e-12)
    tx, ty = theory_line.get_data()
    assert_allclose(ty[0], fit.predict(tx[0]), rtol=1e-12)
    assert_allclose(np.diff(np.log(ty)) / np.diff(np.log(tx)), -0.5, rtol=1e-10)
    assert_allclose(mean_line.get_xdata(), np.unique(table["n"]))


def test_plot_rate_band_clipped_positive_and_options():
    n = np.repeat([100.0, 1000.0, 10000.0], 2)
    table = {"n": n, "L": np.array([0.01, 2.0, 0.1, 0.2, 0.01, 0.02])}  # SE > mean / 2
    fig = Figure()
    ax = fig.add_subplot()
    out = plot_rate(table, "L", fit=False, theory=-1.0, ax=ax, label="my loss")
    assert out is ax
    assert _legend_texts(ax) == ["my loss", "theory n^-1"]
    (band,) = [c for c in ax.collections if isinstance(c, PolyCollection)]
    vertices = np.concatenate([p.vertices for p in band.get_paths()])
    assert np.all(vertices[:, 1] > 0)  # the lower edge stays on the log axis
    theory_line = ax.get_lines()[1]
    assert_allclose(theory_line.get_ydata()[0], np.mean([0.01, 2.0]))  # anchored at the mean


def test_plot_rate_given_fit_restricts_the_line():
    table = _table()
    fit = fit_rate(table, "D1", min_n=1000)
    ax = plot_rate(table, "D1", fit=fit, theory=-0.5)
    x = ax.get_lines()[1].get_xdata()
    assert_allclose([x[0], x[-1]], [fit.n_min, fit.n_max])
    assert fit.legend in _legend_texts(ax)


def test_plot_parameter_rates_panels():
    losses = ["D1", "hellinger", "gate_coef"]
    fig = plot_parameter_rates(_table(), losses, setting="softmax-over")
    axes = fig.get_axes()
    assert len(axes) == 3  # the unused fourth cell is removed
    assert [ax.get_title() for ax in axes] == losses
    for ax in axes:
        assert ax.get_xscale() == "log" and ax.get_yscale() == "log"
        assert any("n^" in t for t in _legend_texts(ax))
    assert "theory n^-0.125" in _legend_texts(axes[2])


def test_plot_parameter_rates_given_fig_and_no_slope_setting():
    fig = Figure()
    out = plot_parameter_rates(_table(), ["gate_coef", "hellinger"], setting="temperature-raw",
                               ncols=1, fig=fig)
    assert out is fig and len(fig.get_axes()) == 2
    gate_ax, hel_ax = fig.get_axes()
    assert _legend_texts(gate_ax) == ["gate_coef"]  # not consistent: curve only
    assert len(_legend_texts(hel_ax)) == 3


def test_write_report(tmp_path):
    table = _table()
    report = write_report(table, ["D1", "hellinger", "gate_coef", "expert_var"],
                          tmp_path / "out", setting="softmax-exact", name="exact")
    for path in (report.rate_plot, report.panels):
        assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.rate_plot.name == "exact_rate.png"
    text = report.slope_table.read_text()
    assert format_rate_table(report.rows) in text
    assert "Sensitivity of the D1 slope" in text and "drop  50%" in text
    assert [r["loss"] for r in report.rows] == ["D1", "hellinger", "gate_coef", "expert_var"]
    assert plt.get_fignums() == []  # no pyplot figure left behind


def test_import_does_not_load_pyplot():
    code = ("import sys, gmoe.simulation.plots, gmoe.simulation.rates; "
            "print('matplotlib.pyplot' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_plot_bad_input():
    table = _table()
    with pytest.raises(ValueError, match="table has no column 'D9'"):
        plot_rate(table, "D9")
    with pytest.raises(ValueError, match="fit must be a RateFit, False or None"):
        plot_rate(table, "D1", fit="yes")
    with pytest.raises(ValueError, match="ncols must be a positive integer"):
        plot_parameter_rates(table, ["D1"], ncols=0)
    with pytest.raises(ValueError, match="losses must name at least one loss column"):
        plot_parameter_rates(table, [])
    with pytest.raises(ValueError, match="table has no column 'D9'"):
        plot_parameter_rates(table, ["D1", "D9"], fig=Figure())


def test_plot_rate_refuses_a_fit_of_the_other_summary():
    # A mean fit drawn over the geometric-mean curve would mislabel the plot.
    from gmoe.simulation.rates import fit_rate

    n = np.repeat([100.0, 200.0, 400.0], 2)
    table = {"n": n, "L": np.array([1.0, 3.0, 0.6, 2.0, 0.4, 1.5])}
    fig = Figure()
    with pytest.raises(ValueError, match="summary='geometric'.*summary='mean'"):
        plot_rate(table, "L", fit=fit_rate(table, "L"), summary="geometric",
                  ax=fig.add_subplot())
    ax = plot_rate(table, "L", fit=fit_rate(table, "L", summary="geometric"),
                   summary="geometric", ax=fig.add_subplot())
    assert ax.get_ylabel() == "L (geometric mean)"
