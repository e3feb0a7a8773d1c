import math
import re
import sqlite3
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from gmoe.simulation.rates import (
    RateFit,
    _ols,
    bootstrap_slope,
    fit_rate,
    format_rate_table,
    mean_loss_by_n,
    rate_table,
    slope_sensitivity,
)
from gmoe.theory import Theory

SIZES = np.geomspace(100, 1e5, 8).round()


def _power_law(C, s, sizes=SIZES, n_rep=3):
    n = np.repeat(sizes, n_rep)
    return {"n": n, "D1": C * n**s}


def _noisy(rng, C=2.0, s=-0.5, sigma=0.3, sizes=SIZES, n_rep=20):
    n = np.repeat(sizes, n_rep)
    return {"n": n, "D1": C * n**s * np.exp(sigma * rng.standard_normal(n.size))}


# --------------------------------------------------------------------------------------
# Tables and means
# --------------------------------------------------------------------------------------


def test_mean_loss_by_n_hand_values():
    table = {"n": [20, 10, 10, 20, 10], "L": [4.0, 1.0, 3.0, np.nan, 2.0]}
    out = mean_loss_by_n(table, "L")
    assert_array_equal(out.n, [10, 20])
    assert_allclose(out.mean, [2.0, 4.0])
    assert_allclose(out.se[0], 1.0 / math.sqrt(3))  # SD 1 (ddof=1), 3 replications
    assert np.isnan(out.se[1])  # a single finite replication: no SE
    assert_array_equal(out.count, [3, 1])
    n, mean, se, count = out  # unpacks as the four arrays
    assert_array_equal(count, out.count)


def test_rows_dict_dataframe_like_and_sqlite_rows_agree():
    table = _power_law(3.0, -0.5)
    rows = [{"n": n, "D1": v} for n, v in zip(table["n"], table["D1"], strict=True)]
    con = sqlite3.connect(":memory:")
    con.row_factory = sqlite3.Row
    con.execute("create table t (n_samples integer, D1 real)")
    con.executemany("insert into t values (?, ?)", [(int(r["n"]), r["D1"]) for r in rows])
    con.execute("insert into t values (100, NULL)")  # a failed fit
    sql_rows = con.execute("select * from t").fetchall()
    con.close()
    ref = fit_rate(table, "D1")
    for other in (fit_rate(rows, "D1"), fit_rate(sql_rows, "D1")):
        assert_allclose(other.slope, ref.slope, rtol=1e-12)
        assert_allclose(other.C, ref.C, rtol=1e-12)
    assert fit_rate(sql_rows, "D1").n_dropped == 1  # NULL -> NaN -> dropped and counted


# --------------------------------------------------------------------------------------
# fit_rate
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("C", "s"), [(3.0, -0.5), (33.1, -0.638), (0.02, -0.125)])
def test_fit_rate_exact_power_law(C, s):
    fit = fit_rate(_power_law(C, s), "D1")
    assert_allclose(fit.slope, s, rtol=1e-12)
    assert_allclose(fit.C, C, rtol=1e-10)
    assert_allclose(fit.intercept, math.log(C), rtol=1e-10, atol=1e-12)
    assert_allclose(fit.conf_int, (s, s), atol=1e-10)
    assert_allclose(fit.r_squared, 1.0)
    assert (fit.n_points, fit.n_min, fit.n_max, fit.n_dropped) == (8, 100.0, 1e5, 0)
    assert_allclose(fit.predict([100, 1e4]), C * np.array([100, 1e4]) ** s, rtol=1e-10)


def test_rate_fit_legend_and_str():
    fit = RateFit("D1", -0.638, 3.5, (-0.7, -0.58), 0.99, 200, 100.0, 1e5, n_dropped=3)
    assert fit.legend == "33.1 n^-0.638"
    text = str(fit)
    assert text.startswith("D1: 33.1 n^-0.638")
    assert "95% CI" in text and "[-0.700, -0.580]" in text and "3 failed fits" in text
    assert fit.covers(-0.6) and not fit.covers(-0.5)
    with pytest.raises(AttributeError):
        fit.slope = 0.0  # frozen


def test_fit_rate_ci_coverage(global_random_seed):
    """The 95% OLS interval covers the true slope in ~95% of synthetic studies."""
    rng = np.random.default_rng(global_random_seed)
    n_data, s = 200, -0.5
    covered, slopes = 0, []
    for _ in range(n_data):
        fit = fit_rate(_noisy(rng, s=s), "D1")
        covered += fit.covers(s)
        slopes.append(fit.slope)
    # binomial SD of the coverage over 200 studies is 0.015; 4 SD tolerance
    assert abs(covered / n_data - 0.95) <= 4 * math.sqrt(0.95 * 0.05 / n_data)
    # log(mean of exp(noise)) is a constant shift (into C): the slope is unbiased; the
    # slope SD is ~0.01 here, so the mean of 200 is within 0.005
    assert abs(np.mean(slopes) - s) < 0.005


def test_geometric_summary_resists_heavy_tails(global_random_seed):
    """A loss C n^s times Pareto noise of tail index 1.1 (mean finite, variance not): the
    mean's slope is thrown about by single huge replications, the geometric mean's is not."""
    rng = np.random.default_rng(global_random_seed)
    n = np.repeat(np.geomspace(1e4, 1e5, 40), 10)
    s = -0.5
    mean_err, geo_err = [], []
    for _ in range(50):
        loss = 3.0 * n ** s * (1.0 + rng.pareto(1.1, size=n.size))
        mean_err.append(fit_rate({"n": n, "D2": loss}, "D2").slope - s)
        geometric = fit_rate({"n": n, "D2": loss}, "D2", summary="geometric")
        assert geometric.summary == "geometric"
        geo_err.append(geometric.slope - s)
    # log(1 + Pareto(1.1)) is exponential (SD 0.91): the geometric slope's error SD is
    # 0.91 / sqrt(10) / (sqrt(40) SD(log n) = 0.66) ~ 0.07, and the RMS of 50 within 0.1.
    geo_rms, mean_rms = np.sqrt(np.mean(np.square(geo_err))), np.sqrt(np.mean(np.square(mean_err)))
    assert geo_rms < 0.1
    assert geo_rms < 0.6 * mean_rms, (geo_rms, mean_rms)


def test_geometric_summary_of_a_power_law_and_its_errors():
    table = _power_law(2.0, -0.5)
    fit = fit_rate(table, "D1", summary="geometric")
    assert_allclose(fit.slope, -0.5, rtol=1e-12)
    assert_allclose(fit.C, 2.0, rtol=1e-10)
    # Replications 1 and 4 at one size: the geometric mean is 2, the mean 2.5.
    pair = {"n": [10, 10, 20], "D1": [1.0, 4.0, 1.0]}
    assert_allclose(fit_rate(pair, "D1", summary="geometric").slope, -1.0, rtol=1e-12)
    assert_allclose(fit_rate(pair, "D1").slope, np.log(1 / 2.5) / np.log(2), rtol=1e-12)
    with pytest.raises(ValueError, match="1 entries <= 0"):
        fit_rate({"n": [10, 20, 20], "D1": [1.0, 0.0, 1.0]}, "D1", summary="geometric")
    for call in (lambda: fit_rate(table, "D1", summary="median"),
                 lambda: rate_table(table, ["D1"], summary="median"),
                 lambda: slope_sensitivity(table, "D1", summary="median"),
                 lambda: bootstrap_slope(table, "D1", summary="median")):
        with pytest.raises(ValueError, match="summary must be one of"):
            call()
    # The bootstrap of the geometric summary: an exact power law resamples to itself.
    boot = bootstrap_slope(table, "D1", n_boot=20, random_state=0, summary="geometric")
    assert_allclose(boot.slope, -0.5, rtol=1e-12)
    assert_allclose(boot.slopes, -0.5, rtol=1e-10)


def test_fit_rate_drops_nan_and_inf_per_loss():
    table = _power_law(2.0, -0.5)
    table["D2"] = table["D1"].copy()
    table["D1"][[0, 4]] = [np.nan, np.inf]
    fit = fit_rate(table, "D1")
    assert fit.n_dropped == 2
    assert fit_rate(table, "D2").n_dropped == 0
    assert_allclose(fit.slope, -0.5, rtol=1e-12)


def test_fit_rate_min_n_and_two_points():
    table = _power_law(2.0, -0.5)
    assert fit_rate(table, "D1", min_n=1000).n_min >= 1000
    two = fit_rate({"n": [100, 100, 400], "D1": [1.0, 1.0, 0.5]}, "D1")
    assert_allclose(two.slope, -0.5)
    assert two.n_points == 2 and all(np.isnan(two.conf_int))


# --------------------------------------------------------------------------------------
# Sensitivity and bootstrap
# --------------------------------------------------------------------------------------


def test_slope_sensitivity_exact_power_law():
    fits = slope_sensitivity(_power_law(5.0, -0.25, sizes=np.arange(1, 11) * 100.0), "D1")
    assert [f.n_points for f in fits] == [10, 9, 8, 5]
    assert [f.n_min for f in fits] == [100.0, 200.0, 300.0, 600.0]
    for fit in fits:
        assert_allclose(fit.slope, -0.25, rtol=1e-12)
        assert_allclose(fit.C, 5.0, rtol=1e-10)


def test_slope_sensitivity_recovers_asymptotic_slope():
    sizes = np.arange(1, 11) * 100.0
    loss = 5.0 * sizes**-0.5
    loss[:5] *= 3.0  # a pre-asymptotic regime at the five smallest sizes
    fits = slope_sensitivity({"n": sizes, "D1": loss}, "D1", drop_fractions=(0, 0.5))
    assert fits[0].slope < -0.6  # the small sizes steepen the full fit
    assert_allclose(fits[1].slope, -0.5, rtol=1e-12)
    assert_allclose(fits[1].C, 5.0, rtol=1e-10)


@pytest.mark.parametrize("fraction", [-0.1, 1.0])
def test_slope_sensitivity_bad_fraction(fraction):
    with pytest.raises(ValueError, match=re.escape("drop_fractions must lie in [0, 1)")):
        slope_sensitivity(_power_law(1.0, -0.5), "D1", drop_fractions=(fraction,))


def test_slope_sensitivity_too_few_left():
    table = _power_law(1.0, -0.5, sizes=np.array([10.0, 20.0, 30.0]))
    with pytest.raises(ValueError, match="leaves 1; a rate needs at least 2"):
        slope_sensitivity(table, "D1", drop_fractions=(0.9,))


def test_bootstrap_exact_and_deterministic(global_random_seed):
    exact = bootstrap_slope(_power_law(2.0, -0.5), "D1", n_boot=50,
                            random_state=global_random_seed)
    assert_allclose(exact.slopes, -0.5, rtol=1e-12)  # identical replications
    assert_allclose(exact.conf_int, (-0.5, -0.5), rtol=1e-12)
    table = _noisy(np.random.default_rng(global_random_seed))
    b1 = bootstrap_slope(table, "D1", n_boot=200, random_state=global_random_seed)
    b2 = bootstrap_slope(table, "D1", n_boot=200, random_state=global_random_seed)
    assert_array_equal(b1.slopes, b2.slopes)
    assert b1.slopes.shape == (200,)
    assert_allclose(b1.slope, fit_rate(table, "D1").slope, rtol=1e-10)
    assert b1.conf_int[0] <= b1.slope <= b1.conf_int[1]


def test_bootstrap_coverage(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    n_data = 100
    covered = 0
    for _ in range(n_data):
        boot = bootstrap_slope(_noisy(rng), "D1", n_boot=200, random_state=rng)
        covered += boot.conf_int[0] <= -0.5 <= boot.conf_int[1]
    # the percentile bootstrap of 20 replications under-covers a little (~0.92 observed);
    # binomial SD over 100 studies is 0.022: 0.80 is > 4 SD below 0.92
    assert 0.80 <= covered / n_data <= 1.0


# --------------------------------------------------------------------------------------
# rate_table
# --------------------------------------------------------------------------------------


def _hand_table():
    n = np.repeat(SIZES, 2)
    wiggle = np.exp(0.05 * np.resize([1.0, 1.0, -1.0, -1.0], n.size))  # deterministic scatter
    return {"n": n, "D1": 33.1 * n**-0.638, "hellinger": 0.5 * n**-0.5 * wiggle,
            "gate_coef": 4.0 * n**-0.125, "loglik": -1.0 - 0.0 * n}


def test_rate_table_values():
    rows = rate_table(_hand_table(), ["D1", "hellinger", "gate_coef"], "softmax-over")
    assert [r["loss"] for r in rows] == ["D1", "hellinger", "gate_coef"]
    d1, hel, gate = rows
    assert_allclose([d1["slope"], d1["C"]], [-0.638, 33.1], rtol=1e-10)
    assert d1["theory"] == -0.125 and d1["within_ci"] is False
    assert hel["theory"] == -0.5 and hel["within_ci"] is True
    assert hel["ci_low"] < -0.5 < hel["ci_high"]
    assert_allclose([gate["slope"], gate["C"]], [-0.125, 4.0], rtol=1e-10)
    assert all(r["n_points"] == 8 and r["n_dropped"] == 0 for r in rows)
    assert all(r["note"] == "" for r in rows)


def test_rate_table_without_setting_and_unknown_column():
    rows = rate_table(_hand_table(), "D1")
    assert rows[0]["theory"] is None and rows[0]["within_ci"] is None
    table = _hand_table()
    table["loglik"] = 1.0 / table["n"]
    row = rate_table(table, ["loglik"], "softmax-exact")[0]
    assert_allclose(row["slope"], -1.0)
    assert row["theory"] is None and "no theoretical rate" in row["note"]


def test_rate_table_temperature_raw_fits_no_slope():
    rows = rate_table(_hand_table(), ["gate_coef", "hellinger"], "temperature-raw",
                      min_n=1000)
    gate, hel = rows
    assert np.isnan(gate["slope"]) and gate["theory"] is None and gate["within_ci"] is None
    assert "not consistent" in gate["note"]
    assert gate["n_points"] == hel["n_points"] == int(np.sum(SIZES >= 1000))
    assert hel["within_ci"] is True


def test_rate_table_two_sizes_has_no_interval_to_compare():
    # Two sample sizes: the line passes through both points, the interval is NaN, and
    # whether it holds the theory is unknown (None), not False.
    two = {"n": [100, 100, 10000, 10000], "D1": [1.0, 1.0, 0.1, 0.1]}
    row = rate_table(two, ["D1"], "softmax-exact")[0]
    assert_allclose(row["slope"], -0.5)
    assert np.isnan(row["ci_low"]) and np.isnan(row["ci_high"])
    assert row["theory"] == -0.5 and row["within_ci"] is None


def test_rate_table_theories_replace_the_lookup_by_name():
    table = _hand_table()
    fixed = Theory(None, "fixed by construction", False)
    rows = rate_table(table, ["D1", "hellinger"], "softmax-exact",
                      theories={"D1": Theory(-0.638, "given", True), "hellinger": fixed})
    d1, hel = rows
    assert d1["theory"] == -0.638 and d1["within_ci"] is True
    assert np.isnan(hel["slope"]) and hel["note"] == "fixed by construction"
    assert hel["n_points"] == 8


def test_format_rate_table():
    rows = rate_table(_hand_table(), ["D1", "gate_coef"], "temperature-raw")
    text = format_rate_table(rows)
    lines = text.splitlines()
    assert lines[0].split() == ["loss", "slope", "CI", "low", "CI", "high", "C", "R^2",
                                "sizes", "dropped", "theory", "in", "CI"]
    assert set(lines[1]) <= {"-", " "}
    assert lines[2].split()[0] == "D1" and lines[2].split()[1] == "-"
    assert "gate_coef: raw (beta1, beta0, tau) are not identified" in text
    text = format_rate_table(rate_table(_hand_table(), ["D1"], "softmax-exact"))
    assert "-0.638" in text and "33.1" in text and text.splitlines()[2].endswith("no")


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------


def test_missing_loss_column_is_named():
    with pytest.raises(ValueError, match=r"table has no column 'D2'; available columns"):
        fit_rate(_power_law(1.0, -0.5), "D2")


def test_missing_n_column():
    with pytest.raises(ValueError, match="no sample-size column 'n'"):
        fit_rate({"size": [1, 2], "D1": [1.0, 2.0]}, "D1")


def test_fewer_than_two_sizes():
    with pytest.raises(ValueError, match="column 'D1' has finite entries at 1 distinct"):
        fit_rate({"n": [100, 100], "D1": [1.0, 2.0]}, "D1")
    with pytest.raises(ValueError, match=r"at 1 distinct sample size\(s\) with n >= min_n"):
        fit_rate(_power_law(1.0, -0.5), "D1", min_n=1e5)
    with pytest.raises(ValueError, match="column 'D1' has finite entries at 1 distinct"):
        fit_rate({"n": [100, 200], "D1": [1.0, np.nan]}, "D1")  # the other size failed


def test_all_failed():
    with pytest.raises(ValueError, match="column 'D1' has no finite entry"):
        mean_loss_by_n({"n": [100, 200], "D1": [np.nan, np.nan]}, "D1")


def test_non_positive_losses():
    # decision: a negative loss is an error; zeros are allowed unless a size's mean is 0
    with pytest.raises(ValueError, match="column 'D1' has negative entries"):
        fit_rate({"n": [10, 20], "D1": [1.0, -1.0]}, "D1")
    with pytest.raises(ValueError, match=re.escape("column 'D1' has mean 0 at n = [20.0]")):
        fit_rate({"n": [10, 20, 20], "D1": [1.0, 0.0, 0.0]}, "D1")
    fit = fit_rate({"n": [10, 20, 20], "D1": [1.0, 0.0, 1.0]}, "D1")
    assert_allclose(fit.slope, -1.0)


def test_malformed_tables():
    with pytest.raises(ValueError, match="equal lengths"):
        fit_rate({"n": [1, 2, 3], "D1": [1.0, 2.0]}, "D1")
    with pytest.raises(ValueError, match="column 'D1' must be numeric"):
        fit_rate({"n": [1, 2], "D1": ["a", "b"]}, "D1")
    with pytest.raises(ValueError, match="table must be a mapping"):
        fit_rate(np.ones(3), "D1")
    with pytest.raises(ValueError, match="column 'n' .* positive finite"):
        fit_rate({"n": [0, 2], "D1": [1.0, 2.0]}, "D1")
    with pytest.raises(ValueError, match="alpha must be a number in"):
        fit_rate(_power_law(1.0, -0.5), "D1", alpha=1.5)
    with pytest.raises(ValueError, match="n_boot must be a positive integer"):
        bootstrap_slope(_power_law(1.0, -0.5), "D1", n_boot=0)


def test_losses_near_the_float_maximum_keep_their_mean_slope():
    # Their sum overflowed: the mean slope came out -inf with R^2 = 1 and the bootstrap
    # interval NaN, with only RuntimeWarnings. Every value is finite, so the mean exists.
    n = np.repeat([100.0, 1000.0, 10000.0], 3)
    huge = np.array([1e308, 1.5e308, 1.2e308, 1e300, 2e300, 1.1e300, 1e290, 3e290, 1e290])
    table = {"n": n, "L": huge}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fit = fit_rate(table, "L")
        boot = bootstrap_slope(table, "L", n_boot=200, random_state=0)
    # The same losses in units of 1e-290 (exact powers of ten aside) have the same slope.
    expected = fit_rate({"n": n, "L": huge / 1e290}, "L")
    assert fit.slope == pytest.approx(expected.slope, rel=1e-12)
    assert fit.r_squared == pytest.approx(expected.r_squared, rel=1e-12) and fit.r_squared < 1
    assert fit.C == np.inf  # exp(intercept) is beyond the largest float; said as such
    [row] = rate_table(table, ["L"])
    assert format_rate_table([row]).splitlines()[2].split()[4] == "inf"  # not "-" (NaN)
    low, high = boot.conf_int
    assert np.isfinite(low) and low < fit.slope < high
    # A tss that is NaN is no perfect fit.
    assert np.isnan(_ols(np.log([1.0, 2.0, 3.0]), np.array([0.0, np.nan, 1.0]), 0.05)[3])
