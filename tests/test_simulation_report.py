"""`gmoe-sim report`: mean table, rate table with theory, sensitivity, plots; the quick study."""

import numpy as np
import pytest
from _study import write_study

from gmoe.simulation import (
    load_experiment,
    read_rows,
    run_experiment,
    study_report,
    study_setting,
)
from gmoe.simulation.cli import _REPO_SIMULATIONS, main
from gmoe.simulation.rates import fit_rate

# The fixture study with one near-truth start per task, 4 sizes x 2 replications.
STUDY = dict(seed=5, sizes=[60, 120, 240, 480], replications=2)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    sims = tmp / "simulations"
    sims.mkdir()
    exp = load_experiment(write_study(sims, "mini.toml", **STUDY))
    run_experiment(exp, tmp / "results" / "mini.sqlite", n_jobs=1, progress=False)
    return tmp, exp


def test_cli_report_fits_the_geometric_mean_on_request(stored, monkeypatch, capsys):
    tmp, exp = stored
    monkeypatch.chdir(tmp)
    assert main(["report", "mini", "--summary", "geometric"]) == 0
    out = capsys.readouterr().out
    assert "OLS of log(geometric mean of the losses) on log n" in out
    rows, _ = read_rows(tmp / "results" / "mini.sqlite")
    table = {"n": np.array([r["n"] for r in rows], dtype=float),
             "d1": np.array([r["d1"] for r in rows], dtype=float)}
    slope = fit_rate(table, "d1", summary="geometric").slope
    assert f"slope d1: {slope:+.3f}" in out and "geometric mean ~" in out
    with pytest.raises(ValueError, match="summary must be one of"):
        study_report(rows, exp, summary="median")
    # The slope table written beside it fits the geometric mean too (it used to hold the
    # mean's slopes, unlabelled, next to a printed report of the geometric ones).
    assert main(["report", "mini", "--summary", "geometric", "--out", "geometric"]) == 0
    capsys.readouterr()
    text = (tmp / "geometric" / "mini_slopes.txt").read_text()
    assert "Slopes of the geometric mean of each loss" in text
    [d1_row] = [line for line in text.splitlines() if line.split()[:1] == ["d1"]]
    assert float(d1_row.split()[1]) == pytest.approx(slope, abs=5e-4)
    assert slope != pytest.approx(fit_rate(table, "d1").slope, abs=5e-3)  # a real check


def test_cli_report_writes_plots_and_slope_table(stored, monkeypatch, capsys):
    tmp, _ = stored
    monkeypatch.chdir(tmp)
    assert main(["report", "mini"]) == 0
    out = capsys.readouterr().out
    outdir = tmp / "results" / "mini"
    pngs = [outdir / "mini_rate.png", outdir / "mini_panels.png"]
    for path in [*pngs, outdir / "mini_slopes.txt"]:
        assert path.is_file() and path.stat().st_size > 0
        assert str(path) in out
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    lines = out.splitlines()
    # Mean table, then the rate table: one line per loss, with the theory beside it.
    assert "8 tasks over 4 sample sizes; 0 not ok (fit or metric failed)." in lines
    assert any("setting softmax-exact" in line for line in lines)
    header = next(line for line in lines if line.startswith("loss "))
    assert all(h in header for h in ("slope", "CI low", "CI high", "theory", "in CI"))
    for loss in ("d1", "hellinger", "tv", "pe_expert_var_0", "pe_expert_coef_1"):
        row = next(line for line in lines if line.split()[:1] == [loss])
        assert row.split()[-2] == "-0.500" and row.split()[-1] in ("yes", "no")
    assert any(line.startswith("slope d1: ") and "theory -0.500" in line for line in lines)
    assert "Sensitivity of the d1 slope" in out and "drop  25%" in out
    assert "mini" in (outdir / "mini_slopes.txt").read_text()


def test_report_out_dir_and_numbers_match_rates(stored, monkeypatch, capsys):
    tmp, exp = stored
    monkeypatch.chdir(tmp)
    assert main(["report", "mini", "--out", "elsewhere", "--all"]) == 0
    out = capsys.readouterr().out
    assert (tmp / "elsewhere" / "mini_rate.png").is_file()
    rows, _ = read_rows(tmp / "results" / "mini.sqlite")
    fit = fit_rate(rows, "d1")
    assert f"slope d1: {fit.slope:+.3f}, 95% CI [{fit.conf_int[0]:+.3f}" in out
    assert "slope pe_expert_var_1: " in out  # --all: a line per column


def test_report_without_store_is_an_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "simulations").mkdir()
    write_study(tmp_path / "simulations", "mini.toml", **STUDY)
    assert main(["report", "mini"]) == 2
    assert "run the experiment first" in capsys.readouterr().err
    assert not (tmp_path / "results" / "mini").exists()


def test_report_refuses_a_store_of_another_experiment(stored, tmp_path, capsys):
    # Another experiment's rows would be printed and plotted under this file's theory.
    tmp, exp = stored
    other = write_study(tmp_path, "other.toml", **{**STUDY, "fit": {"max_iter": 99}})
    out = tmp_path / "plots"
    assert main(["report", str(other), "--db", str(tmp / "results" / "mini.sqlite"),
                 "--out", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1
    err = captured.err
    assert "holds results of another task definition than" in err
    assert f"task hash {exp.task_sha256[:12]} in the store" in err
    assert f"{load_experiment(other).task_sha256[:12]} in the file" in err
    assert "changed: fit.max_iter: 100 -> 99)" in err and str(exp.path) in err
    assert not out.exists()  # no plots of the wrong study


def test_report_shows_the_other_grid_of_the_same_file(tmp_path, capsys):
    # [quick] may change the starts, hence the task hash: a store of the full grid read
    # with --quick is the same study, shown as before with a note.
    path = write_study(tmp_path, "grids.toml", seed=5, sizes=[60, 120], replications=1,
                       n_starts=2, quick={"n": [60, 120], "replications": 1, "n_starts": 1})
    full = load_experiment(path)
    assert full.task_sha256 != full.quick_variant().task_sha256
    db = tmp_path / "full.sqlite"
    run_experiment(full, db, n_jobs=1, progress=False)
    assert main(["report", str(path), "--quick", "--db", str(db), "--out",
                 str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    assert f"note: {db} was written by the full grid of {path}" in out
    assert "2 tasks over 2 sample sizes" in out and (tmp_path / "p").is_dir()


@pytest.mark.parametrize("name, setting, cells", [
    ("softmax-exact", "softmax-exact", [1, 1]),
    ("softmax-over-k3", "softmax-over", [2, 2]),
    ("topk-over", "topk-over", [1, 1, 2]),
    ("temperature", "temperature", [1, 1]),
    ("activation", "activation-exact", [1, 1]),
])
def test_study_setting(name, setting, cells):
    assert study_setting(load_experiment(_REPO_SIMULATIONS / f"{name}.toml")) == (setting,
                                                                                 cells)


def test_temperature_raw_columns_get_no_slope():
    exp = load_experiment(_REPO_SIMULATIONS / "temperature.toml")
    rng = np.random.default_rng(0)
    rows = [{"n": n, "status": "ok", "converged": 1, "fit_seconds": 0.1,
             **{c: float(rng.uniform(0.5, 1.5) * n ** -0.5) for c in exp.metric_columns()}}
            for n in (100, 400, 1600, 6400) for _ in range(3)]
    text = study_report(rows, exp)
    raw = next(line for line in text.splitlines() if line.startswith("d1_raw "))
    assert raw.split()[1] == "-"  # not fitted: the raw parameters are not identified
    assert "not identified" in text


def test_the_plots_draw_a_raw_column_equal_to_its_identifiable_twin_once(tmp_path):
    from gmoe.simulation.report import write_study_plots

    exp = load_experiment(_REPO_SIMULATIONS / "temperature.toml")
    rng = np.random.default_rng(0)
    rows = [{"n": n, "status": "ok", "converged": 1, "fit_seconds": 0.1,
             **{c: float(rng.uniform(0.5, 1.5) * n ** -0.5) for c in exp.metric_columns()}}
            for n in (100, 400, 1600, 6400) for _ in range(3)]
    for row in rows:  # the experts' raw columns equal their twins, the weight's does not
        for c in exp.metric_columns():
            if c.startswith("pe_expert_") and c.endswith("_raw"):
                row[c] = row[c.removesuffix("_raw")]
    report = write_study_plots(rows, exp, tmp_path)
    drawn = [r["loss"] for r in report.rows]
    assert "pe_expert_coef_0" in drawn and "pe_expert_coef_0_raw" not in drawn
    assert "pe_weight_0_raw" in drawn  # its own numbers here, so its own panel
    assert not any(name.startswith(("d1_raw", "pe_gate_coef_0_raw")) for name in drawn)


def test_columns_fixed_by_the_alignment_get_no_slope(stored):
    # pe_gate_intercept_1 holds rounding noise (~1e-17): its "rate" would be noise.
    tmp, exp = stored
    rows, _ = read_rows(tmp / "results" / "mini.sqlite")
    assert max(abs(r["pe_gate_intercept_1"]) for r in rows) < 1e-12
    text = study_report(rows, exp)
    for column in ("pe_weight_1", "pe_gate_coef_1", "pe_gate_intercept_1"):
        line = next(line for line in text.splitlines() if line.split()[:1] == [column])
        assert line.split()[1] == "-" and line.split()[-2:] == ["-", "-"]
        assert f"{column}: 0 by construction" in text
    line = next(line for line in text.splitlines() if line.startswith("pe_gate_intercept_0 "))
    assert line.split()[1] != "-"  # the other cell's intercept is estimated: fitted


def test_two_sizes_have_no_interval_to_compare(tmp_path):
    exp = load_experiment(write_study(tmp_path, **STUDY))
    rows = [{"n": n, "status": "ok", "converged": 1, "fit_seconds": 0.1,
             **{c: 2.0 * n ** -0.5 for c in exp.metric_columns()}}
            for n in (100, 400) for _ in range(2)]
    text = study_report(rows, exp)
    assert "slope d1: -0.500, no CI (2 sizes), mean ~ 2 n^-0.500 over 2 sizes; theory -0.500 " \
           "(no CI to compare with)" in text.splitlines()
    assert "OUTSIDE" not in text and "nan" not in text


@pytest.mark.slow
def test_quick_softmax_exact_d1_rate(tmp_path):
    """The README's quick study: D1's 95% CI holds -1/2 and is at most 0.15 wide each side."""
    exp = load_experiment(_REPO_SIMULATIONS / "softmax-exact.toml").quick_variant()
    summary = run_experiment(exp, tmp_path / "quick.sqlite", n_jobs=2, progress=False)
    assert summary.failures == 0
    rows, _ = read_rows(tmp_path / "quick.sqlite")
    fit = fit_rate(rows, "d1")
    low, high = fit.conf_int
    assert low <= -0.5 <= high, (fit.slope, fit.conf_int)
    assert fit.slope - low <= 0.15 and high - fit.slope <= 0.15, (fit.slope, fit.conf_int)


def test_per_cell_slopes_are_fitted_per_number_of_atoms():
    """Each per-cell error gets one slope per number m of atoms its cell held, over those
    replications only, against rbar(m)'s rate."""
    from types import SimpleNamespace

    from gmoe.simulation.columns import MetricColumn
    from gmoe.simulation.report import study_rate_rows
    from gmoe.theory import theory

    rng = np.random.default_rng(0)
    sizes = np.repeat(np.geomspace(1e3, 1e5, 8), 20)
    atoms = rng.integers(1, 3, sizes.size)  # the cell held 1 or 2 fitted atoms
    # A cell of one atom converges as n^-1/2, of two as n^-1/8 (rbar(2) = 4, gate slope).
    error = np.where(atoms == 1, 3 * sizes ** -0.5, 3 * sizes ** -0.125)
    rows = [dict(n=int(n), pe_gate_coef_0=float(e * np.exp(rng.normal(0, 0.05))),
                 atoms_0=float(a)) for n, e, a in zip(sizes, error, atoms, strict=True)]
    mixed = theory("softmax-over", "gate_coef", m=2)
    schema = (MetricColumn("pe_gate_coef_0", "gate_coef", 0, "identifiable", mixed),
              MetricColumn("atoms_0", "atoms", 0, "identifiable", mixed._replace(
                  fit_slope=False)))
    experiment = SimpleNamespace(metric_schema=lambda: schema)

    def cell_theory(experiment, column, m):
        return theory("softmax-over", column.field, m=int(m))

    import gmoe.simulation.report as report

    original = report.cell_theory
    report.cell_theory = cell_theory
    try:
        out = {r["loss"]: r for r in study_rate_rows(rows, None, experiment)}
    finally:
        report.cell_theory = original
    assert "atoms_0" not in out
    assert out["pe_gate_coef_0[m=1]"]["slope"] == pytest.approx(-0.5, abs=0.03)
    assert out["pe_gate_coef_0[m=2]"]["slope"] == pytest.approx(-0.125, abs=0.03)
    assert out["pe_gate_coef_0[m=1]"]["theory"] == -0.5
    assert out["pe_gate_coef_0[m=2]"]["theory"] == -0.125
    # The pooled column's mean is dominated by the slow replications: it hides the
    # parametric rate of the single-atom ones.
    assert out["pe_gate_coef_0"]["slope"] > -0.3


def test_the_mean_table_says_when_a_mean_rests_on_fewer_tasks():
    from gmoe.simulation.report import format_report

    def row(status, d2, hellinger):
        return {"n": 100, "status": status, "converged": 1, "fit_seconds": 0.1, "d2": d2,
                "hellinger": hellinger}

    # A failed metric keeps the others' values; an ok row can lack one (NaN stored NULL).
    rows = [row("ok", 1.0, 0.1), row("ok", None, 0.2), row("metric_failed", 3.0, 0.3)]
    text = format_report(rows, ["d2", "hellinger"])
    assert "Without a value in some tasks, so averaged over fewer than 'tasks' at some " \
           "sizes: d2." in text
    table_row = text.splitlines()[1].split()
    assert table_row[:3] == ["100", "3", "2"] and float(table_row[4]) == 2.0  # (1 + 3) / 2
    full = format_report([row("ok", 1.0, 0.1), row("ok", 3.0, 0.2)], ["d2", "hellinger"])
    assert "Without a value" not in full


def test_a_row_without_a_slope_still_counts_its_sizes_and_dropped_entries():
    # Such rows said "sizes 0, dropped 0" whatever their values (the committed
    # reproduction page showed it for a weight error with values at every size).
    from gmoe.simulation.report import _rate_row
    from gmoe.theory import NO_THEORY

    n = np.repeat([100.0, 200.0, 400.0], 3)
    zeros = np.array([0, 0, np.nan, 0, 0, 0, 0, 0, np.nan])
    row = _rate_row(n, zeros, "x", NO_THEORY, 0.05)
    assert np.isnan(row["slope"]) and row["note"] == "no rate: identically 0"
    assert (row["n_points"], row["n_dropped"]) == (3, 2)
    some_zero = np.array([1e-3, 2e-3, 0, 1e-3, 1e-3, np.nan, 5e-4, 4e-4, 3e-4])
    row = _rate_row(n, some_zero, "x", NO_THEORY, 0.05, summary="geometric")
    assert np.isnan(row["slope"]) and "some entries are 0" in row["note"]
    assert (row["n_points"], row["n_dropped"]) == (3, 1)
