"""paper_figures/coselected_gates.py: a top-K gate measured where its truth selects two cells."""

import csv
import gzip
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from gmoe.simulation import load_experiment, make_evaluation_design

ROOT = Path(__file__).resolve().parent.parent
TOPK_OVER = ROOT / "simulations/topk-over.toml"


@pytest.fixture(scope="module")
def modules():
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import coselected_gates
        import fit_texts
        yield coselected_gates, fit_texts
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))


def _embedded_truth(truth, delta=0.0, spread=0.0):
    """topk-over's truth as its k = 4 fit: cell 2 copied twice, each copy's weight halved.

    The gate is translated so that the last atom's logit is 0 (the fit's convention), which
    leaves every log-ratio of two atoms' weights as it was. ``delta`` is added to the gate
    intercepts of cell 0 and (twice it) of cell 1; ``spread`` tilts the copies' gate slopes
    apart by 2 spread, which bends cell 2's log-weight into log cosh(spread x) plus a line.
    """
    c, d = truth.gate_coef[:, 0] + spread, truth.gate_intercept + np.log(2)
    gate_coef = [c[0], c[1], 2 * spread, 0.0]
    gate_intercept = [d[0] + delta, d[1] + 2 * delta, 0.0, 0.0]
    atoms = [0, 1, 2, 2]
    return (gate_coef + gate_intercept + [truth.expert_coef[j, 0] for j in atoms]
            + [truth.expert_intercept[j] for j in atoms] + [truth.expert_var[j] for j in atoms])


def _rows(truth, sizes, replications, deltas, columns):
    """Result rows holding ``_embedded_truth`` fits, off by ``deltas[n]`` at size n."""
    return [{"n": n, "rep": rep, "fitted": json.dumps(_embedded_truth(truth, deltas[n])),
             **{name: value(n) for name, value in columns.items()}}
            for n in sizes for rep in range(replications)]


def test_the_truth_selects_each_pair_where_both_are_in_its_top_k(modules):
    # topk-over's truth: logits 6x - 4, -6x + 2 and 0 on [0, 1]; top 2 always holds cell 2
    # (logit 0), with cell 0 where 6x - 4 > -6x + 2 (x > 1/2) and cell 1 below.
    coselected_gates, _ = modules
    experiment = load_experiment(TOPK_OVER)
    X = make_evaluation_design(experiment)
    pairs = coselected_gates.coselected_pairs(experiment, X)
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}
    assert not pairs[(0, 1)].any()
    np.testing.assert_array_equal(pairs[(0, 2)], X[:, 0] > 0.5)
    np.testing.assert_array_equal(pairs[(1, 2)], X[:, 0] < 0.5)
    assert coselected_gates.reference_cell(experiment) == 1


def _errors(coselected_gates, experiment, vector):
    from gmoe.simulation import fitted_measure
    X = make_evaluation_design(experiment)
    measure = fitted_measure(experiment, {"n": 1, "rep": 0, "fitted": json.dumps(vector)})
    return coselected_gates.pair_errors(
        experiment, measure, X, coselected_gates.coselected_pairs(experiment, X),
        coselected_gates.truth_logits(experiment, X))


def test_the_truth_embedded_has_no_error_and_a_shifted_intercept_is_measured(modules):
    coselected_gates, _ = modules
    experiment = load_experiment(TOPK_OVER)
    truth = experiment.truth
    exact = _errors(coselected_gates, experiment, _embedded_truth(truth))
    assert set(exact) == {"0-2", "1-2"}  # never selected together: no entry for 0-1
    # The copies' log-sum-exp is the true line again, to round-off.
    assert max(exact.values()) < 1e-12
    # Cell 0's intercept off by 0.3 and cell 1's by 0.6: each pair sees its own cell's.
    shifted = _errors(coselected_gates, experiment, _embedded_truth(truth, delta=0.3))
    assert shifted["0-2"] == pytest.approx(0.3, abs=1e-12)
    assert shifted["1-2"] == pytest.approx(0.6, abs=1e-12)
    # Copies' slopes 2s apart: cell 2's log-weight is log cosh(s x) plus the true line, and
    # each pair's error is the mean of log cosh(s x) over its half of the design.
    bent = _errors(coselected_gates, experiment, _embedded_truth(truth, spread=3.0))
    x = make_evaluation_design(experiment)[:, 0]
    assert bent["0-2"] == pytest.approx(np.log(np.cosh(3.0 * x[x > 0.5])).mean(), rel=1e-12)
    assert bent["1-2"] == pytest.approx(np.log(np.cosh(3.0 * x[x < 0.5])).mean(), rel=1e-12)


def test_a_fit_that_leaves_a_cell_empty_has_no_error_for_its_pairs(modules):
    # All four atoms on cells 1 and 2 (cell 0's atom moved onto cell 1's expert): the pair
    # (0, 2) has no log-weight for cell 0 and is NaN, not an infinite or made-up number.
    coselected_gates, _ = modules
    experiment = load_experiment(TOPK_OVER)
    truth = experiment.truth
    vector = _embedded_truth(truth)
    vector[8], vector[12] = truth.expert_coef[1, 0], truth.expert_intercept[1]
    errors = _errors(coselected_gates, experiment, vector)
    assert np.isnan(errors["0-2"]) and np.isfinite(errors["1-2"])


def _report(coselected_gates, experiment, empty_at=None):
    # Cell 0's intercept error falls as n^-1/2 (times a factor per size, so the fitted
    # slope has a real interval); a weight column that falls as n^-0.3 and an intercept
    # column at n^-1/2, as a grid would hold them; one row without its fit, one without
    # its weight column and (``empty_at``) one fit whose cell 0 is empty.
    sizes = [1000, 4000, 16000, 64000]
    factor = dict(zip(sizes, [1.1, 0.9, 1.05, 0.95], strict=True))
    deltas = {n: factor[n] * n ** -0.5 for n in sizes}
    rows = _rows(experiment.truth, sizes, 2, deltas,
                 {"pe_weight_0": lambda n: 0.02 * factor[n] * n ** -0.3,
                  "pe_gate_intercept_0": lambda n: factor[n] * n ** -0.5,
                  "pe_gate_coef_0": lambda n: None})
    rows.append({"n": 1000, "rep": 7, "fitted": None})
    rows[1]["pe_weight_0"] = None
    if empty_at is not None:
        vector = _embedded_truth(experiment.truth, deltas[empty_at])
        vector[8], vector[12] = experiment.truth.expert_coef[1, 0], \
            experiment.truth.expert_intercept[1]
        rows.append({"n": empty_at, "rep": 8, "fitted": json.dumps(vector)})
    return coselected_gates.analyse(experiment, rows)


def test_the_rates_of_the_pairs_and_of_the_reference_columns(modules):
    coselected_gates, _ = modules
    experiment = load_experiment(TOPK_OVER)
    report = _report(coselected_gates, experiment, empty_at=64000)
    assert report["tasks"] == 9 and report["without_fit"] == 1 and report["result_rows"] == 10
    assert report["reference"] == 1 and report["upper_from"] == 16000
    by_pair = {tuple(e["cells"]): e for e in report["coselected"]}
    assert "all" not in by_pair[(0, 1)] and by_pair[(0, 1)]["fraction"] == 0
    pair = by_pair[(0, 2)]
    assert pair["fraction"] == pytest.approx(0.5, abs=1e-3)
    assert pair["all"]["low"] < -0.5 < pair["all"]["high"] and pair["all"]["sizes"] == 4
    # The fit with an empty cell 0 is left out of (0, 2), counted, and kept in (1, 2).
    assert pair["left_out"] == 1 and by_pair[(1, 2)]["left_out"] == 0
    assert pair["low"] == pytest.approx(1.1 * 1000 ** -0.5, rel=1e-9)
    assert pair["high"] == pytest.approx(0.95 * 64000 ** -0.5, rel=1e-9)
    # Two sizes in the upper half: a slope without an interval (None, not NaN, in JSON).
    assert pair["upper"]["sizes"] == 2 and pair["upper"]["low"] is None
    assert by_pair[(1, 2)]["low"] == pytest.approx(2 * pair["low"], rel=1e-9)
    # The columns of cell 0 (never selected with the reference), those that hold a value;
    # the row without its weight and the added fit (no columns) are left out of its rate.
    assert set(report["columns"]) == {"pe_weight_0", "pe_gate_intercept_0"}
    weight = report["columns"]["pe_weight_0"]
    assert weight["left_out"] == 2 and weight["all"]["slope"] == pytest.approx(-0.3, abs=0.05)
    # Per fit, weight over intercept error is 0.02 n^0.2 exactly: both summaries' rate.
    ratio = weight["per_fit_ratio"]
    assert ratio["of"] == "pe_gate_intercept_0" and ratio["left_out"] == 2
    for summary in ("mean", "geometric"):
        assert ratio[summary]["slope"] == pytest.approx(0.2, abs=1e-9)
    assert "per_fit_ratio" not in report["columns"]["pe_gate_intercept_0"]
    json.dumps(report, allow_nan=False)  # the report is valid JSON


def test_the_page_reports_the_pairs_and_explains_the_slower_weight(modules):
    coselected_gates, fit_texts = modules
    experiment = load_experiment(TOPK_OVER)
    report = _report(coselected_gates, experiment)
    section = {"name": "topk-over", "n_rows": 9, "coselected": report}
    text = "\n".join(fit_texts.coselected_text(section))
    assert "(`python paper_figures/coselected_gates.py topk-over`, on the 8 stored fits; " \
           "1 row without a stored fit left out)" in text
    assert "STALE" not in text
    assert ("the truth selects cells 0 and 2 together at 50 % of the points, cells 1 and 2 "
            "together at 50 % of the points, and never cells 0 and 1.") in text
    assert "so those of cell 0 compare it with a cell the truth never selects" in text
    assert ("| what | rate over all sizes | n >= 16000 | mean at n = 1000 / 64000 | left out |"
            in text)
    slope = report["coselected"][1]["all"]
    assert (f"| cells 0 and 2 | {slope['slope']:+.3f} [{slope['low']:+.3f}, "
            f"{slope['high']:+.3f}] | ") in text
    weight, intercept = (report["columns"][c] for c in ("pe_weight_0", "pe_gate_intercept_0"))
    assert "| `pe_weight_0` (against cell 1) | " in text and " | 1 |" in text
    assert ("Every pair the truth selects together converges at a rate whose interval holds "
            "-1/2") in text
    # The weight column is slower than -1/2 and its intercept column is not: the page
    # names the one error both measure and the drift of their per-fit ratio.
    assert ("`pe_weight_0` is, per fit, s w*_0 |e^d - 1|, where |d| is the error "
            "`pe_gate_intercept_0` reports") in text
    assert "Per fit their ratio, s w*_0 |e^d - 1| / |d|, rises at +0.200 [" in text
    gap = weight["all"]["slope"] - intercept["all"]["slope"]
    # Here the gap is the ratio's own drift (no spread): the factor accounts for it.
    assert f"The means' gap, {gap:+.3f}, is within the interval of that drift in mean" in text
    # With the section's geometric-mean rates, the page gives their gap, which the
    # per-fit ratio's geometric rate equals.
    geometric = {"pe_weight_0": {"slope": -0.45, "ci_low": -0.5, "ci_high": -0.4},
                 "pe_gate_intercept_0": {"slope": -0.49, "ci_low": -0.55, "ci_high": -0.43}}
    text = "\n".join(fit_texts.coselected_text({**section, "geometric": geometric}))
    # Here fits are left out of the weight's column and of the ratio: the rates rest on
    # other fits, and the identity is not claimed.
    assert "geometric-mean slopes" not in text
    columns = {c: dict(e, left_out=0) for c, e in report["columns"].items()}
    columns["pe_weight_0"]["per_fit_ratio"] = dict(
        columns["pe_weight_0"]["per_fit_ratio"], left_out=0)
    text = "\n".join(fit_texts.coselected_text({
        **section, "geometric": geometric,
        "coselected": {**report, "columns": columns}}))
    assert "(the gap between the two columns' geometric-mean slopes, +0.040, which it " \
           "equals" in text
    # A report written before the per-fit ratio was kept: no explanation.
    old = {**report, "columns": {c: {k: v for k, v in e.items() if k != "per_fit_ratio"}
                                 for c, e in report["columns"].items()}}
    assert "|e^d - 1|" not in "\n".join(fit_texts.coselected_text(
        {**section, "coselected": old}))
    # A pair whose interval misses -1/2, or is too wide to tell, keeps the sentence (and
    # the weight's explanation) off the page.
    for rate in ({"slope": -0.3, "low": -0.35, "high": -0.25, "sizes": 4},
                 {"slope": 7.3, "low": -10.8, "high": 25.5, "sizes": 4}):
        pairs = [dict(e, all=rate) if "all" in e else e for e in report["coselected"]]
        text = "\n".join(fit_texts.coselected_text(
            {**section, "coselected": {**report, "coselected": pairs}}))
        assert "Every pair the truth selects together" not in text
        assert "|e^d - 1|" not in text and f"{rate['slope']:+.3f} [" in text
    assert "STALE" in "\n".join(fit_texts.coselected_text({**section, "n_rows": 10}))
    assert fit_texts.coselected_text({"name": "x"}) == []
    with pytest.raises(SystemExit, match="coselected_gates.py topk-over"):
        fit_texts.coselected_text({**section, "coselected": {**report, "format": 0}})


def test_a_study_without_a_top_k_truth_of_two_is_refused(modules):
    coselected_gates, _ = modules
    for name in ("softmax-over-k3", "paper2-top1-exact"):
        with pytest.raises(SystemExit, match="top-K truth with K >= 2"):
            coselected_gates.check_study(load_experiment(ROOT / f"simulations/{name}.toml"))


def _assert_same_numbers(a, b, path="report"):
    """``a`` equals ``b`` in structure and text, and in every number to 1e-9 relative."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for key in a:
            _assert_same_numbers(a[key], b[key], f"{path}[{key!r}]")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_same_numbers(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and not isinstance(b, bool):
        assert b == pytest.approx(a, rel=1e-9, abs=1e-12, nan_ok=True), path
    else:
        assert a == b, path


def test_the_committed_report_is_what_the_script_writes(tmp_path, modules):
    # The committed topk-over report, recomputed from the committed results: the page's
    # numbers are the script's on the results beside them.
    coselected_gates, _ = modules
    results = ROOT / "paper_figures/results"
    shutil.copy(results / "topk-over.csv.gz", tmp_path)
    coselected_gates.main(["topk-over", "--results", str(tmp_path)])
    written = json.loads((tmp_path / "topk-over.coselected.json").read_text())
    # To 1e-9, not to the bit: the slopes are least-squares fits through LAPACK, whose
    # kernels (chosen by processor) round the last digits otherwise on another machine.
    _assert_same_numbers(written,
                         json.loads((results / "topk-over.coselected.json").read_text()))
    with gzip.open(results / "topk-over.csv.gz", "rt") as f:
        assert written["result_rows"] == len(list(csv.DictReader(f)))


def test_the_means_gap_is_read_against_the_per_fit_ratios_drift(modules):
    _, fit_texts = modules
    drift = {"slope": 0.02, "low": 0.01, "high": 0.03, "sizes": 20}
    assert "within the interval of that drift" in fit_texts._gap_sentence(0.025, drift)
    larger = fit_texts._gap_sentence(0.121, drift)
    assert "+0.121, is larger than that factor's drift in mean: the rest" in larger
    assert "is smaller than" in fit_texts._gap_sentence(-0.05, drift)
