"""Model selection: BIC/AIC/ICL bookkeeping, cross-validation, and choosing k* by BIC."""

import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.stats import entropy
from sklearn.exceptions import ConvergenceWarning

import gmoe
from gmoe.gates import TopKGating
from gmoe.selection import SelectionResult, select_n_experts

TRUTH_2 = gmoe.MixingMeasure([[2.0], [0.0]], [0.5, 0.0], [[2.0], [-1.5]], [1.0, -1.0],
                             [0.25, 0.49])
TRUTH_3 = gmoe.MixingMeasure([[3.0], [-3.0], [0.0]], [0.0, 0.0, 0.0], [[2.0], [-2.0], [0.5]],
                             [1.0, -1.0, 3.0], [0.1, 0.1, 0.1])


def _data(truth, n, seed):
    X = gmoe.make_design(n, "uniform", low=-2.0, high=2.0, random_state=seed)
    return X, gmoe.sample_moe(truth, X, random_state=seed + 1)


@pytest.fixture(scope="module")
def selection():
    X, y = _data(TRUTH_2, 400, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # over-specified candidates warn (degenerate, slow EM)
        result = select_n_experts(X, y, n_experts=[1, 2, 3], n_init=2, random_state=0,
                                  max_iter=200)
    return result, X, y


def test_table_and_choice(selection):
    result, X, y = selection
    assert isinstance(result, SelectionResult)
    assert result.criterion == "bic" and result.n_experts == 2
    assert [row["n_experts"] for row in result.table] == [1, 2, 3]
    assert result.best_estimator is result.estimators[2]
    assert result.best_estimator.n_experts == 2
    scores = result.scores()
    assert min(scores, key=scores.get) == 2
    for row in result.table:
        assert row["error"] is None and np.isnan(row["cv_log_lik"])
    text = str(result)
    assert "criterion='bic'" in text and "chosen n_experts=2" in text and "<-" in text
    assert "cv_log_lik" not in text


def test_criteria_are_consistent(selection):
    result, X, y = selection
    n = X.shape[0]
    for row in result.table:
        k, p, log_lik = row["n_experts"], row["n_params"], row["log_lik"]
        est = result.estimators[k]
        assert p == (3 if k == 1 else est._n_parameters())
        assert_allclose(log_lik, est.log_likelihood(X, y), rtol=1e-12)
        assert_allclose(row["aic"], -2 * log_lik + 2 * p, rtol=1e-12)
        assert_allclose(row["bic"], -2 * log_lik + p * np.log(n), rtol=1e-12)
        if k > 1:
            assert_allclose(row["bic"], est.bic(X, y), rtol=1e-12)
        # ICL = BIC + 2 * entropy of the responsibilities: it penalises overlap.
        resp = est.predict_responsibilities(X, y)
        ent = float(np.sum(entropy(resp, axis=1)))
        assert_allclose(row["entropy"], ent, rtol=1e-10, atol=1e-10)
        assert_allclose(row["icl"], row["bic"] + 2 * ent, rtol=1e-12)
        assert row["icl"] >= row["bic"]
    assert result.table[0]["entropy"] == 0.0 and result.table[0]["icl"] == result.table[0]["bic"]


@pytest.mark.parametrize("criterion", ["aic", "icl"])
def test_other_criteria_choose_the_minimum(criterion):
    X, y = _data(TRUTH_2, 300, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = select_n_experts(X, y, n_experts=[1, 2], criterion=criterion, n_init=1,
                                  random_state=1)
    values = {row["n_experts"]: row[criterion] for row in result.table}
    assert result.n_experts == min(values, key=values.get) == 2


def test_cross_validation():
    X, y = _data(TRUTH_2, 300, 2)
    kwargs = dict(n_experts=[1, 2], criterion="cv", n_init=1, cv=3, random_state=3)
    result = select_n_experts(X, y, **kwargs)
    cv = [row["cv_log_lik"] for row in result.table]
    assert np.all(np.isfinite(cv))
    assert result.n_experts == 2 and cv[1] > cv[0]
    assert "cv_log_lik" in str(result) and "highest cv_log_lik wins" in str(result)
    again = select_n_experts(X, y, **kwargs)
    assert [row["cv_log_lik"] for row in again.table] == cv


def test_sample_weight_enters_the_criteria():
    X, y = _data(TRUTH_2, 200, 5)
    w = np.full(200, 2.0)
    result = select_n_experts(X, y, n_experts=[1], sample_weight=w, random_state=0)
    row = result.table[0]
    assert_allclose(row["log_lik"], 2 * result.best_estimator.log_likelihood(X, y))
    assert_allclose(row["bic"], -2 * row["log_lik"] + 3 * np.log(400.0))


def test_estimator_params_are_passed():
    X, y = _data(TRUTH_2, 200, 6)
    with pytest.warns(ConvergenceWarning, match="max_iter=5"):
        result = select_n_experts(X, y, n_experts=[2], n_init=1, random_state=0,
                                  gating="temperature", temperature=0.5, max_iter=5)
    est = result.best_estimator
    assert est.gating == "temperature" and est.temperature == 0.5 and est.max_iter == 5


def test_a_top_k_larger_than_a_candidate_is_capped_at_its_experts():
    # top_k=2 with one expert was refused ("top_k must be ... in [1, 1]"), so the default
    # candidates range(1, 6) always lost k = 1.
    X, y = _data(TRUTH_2, 200, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = select_n_experts(X, y, n_experts=[1, 3], n_init=1, random_state=0,
                                  gating="topk", top_k=2, max_iter=50)
    assert [row["error"] for row in result.table] == [None, None]
    assert [row["n_params"] for row in result.table][0] == 3  # no gate parameter
    assert result.best_estimator.top_k == (1 if result.n_experts == 1 else 2)


def test_failed_candidate_is_reported():
    X, y = _data(TRUTH_2, 30, 7)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = select_n_experts(X, y, n_experts=[1, 40], n_init=1, random_state=0)
    assert result.n_experts == 1
    failed = result.table[1]
    assert "n_samples >= n_experts" in failed["error"] and np.isnan(failed["bic"])
    assert "error:" in str(result)


def test_a_candidate_whose_criterion_is_not_finite_is_named(monkeypatch):
    # A fit whose criterion cannot be computed is named with what went wrong, not "None".
    import gmoe.selection as selection

    monkeypatch.setattr(selection, "_entropy", lambda *args: np.nan)
    X, y = _data(TRUTH_2, 200, 0)
    with pytest.raises(ValueError, match=re.escape(
            "Every candidate fit failed; see the errors: n_experts=1: the fit's icl is nan, "
            "not a finite number; n_experts=2: the fit's icl is nan")):
        select_n_experts(X, y, [1, 2], criterion="icl", n_init=1, random_state=0)


def test_cross_validation_skips_folds_that_hold_only_rows_of_weight_0():
    # 8 rows of positive weight among 200: some folds score nothing (0 / 0 raised).
    X, y = _data(TRUTH_2, 200, 0)
    w = np.zeros(200)
    w[::25] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for seed in (1, 2):
            result = select_n_experts(X, y, [1], criterion="cv", cv=5, sample_weight=w,
                                      n_init=1, random_state=seed)
            assert np.isfinite(result.table[0]["cv_log_lik"])


def test_bad_input():
    X, y = _data(TRUTH_2, 50, 8)
    with pytest.raises(ValueError, match=re.escape("criterion must be one of")):
        select_n_experts(X, y, criterion="waic")
    with pytest.raises(ValueError, match="distinct integers >= 1"):
        select_n_experts(X, y, n_experts=[0, 1])
    with pytest.raises(ValueError, match="distinct integers >= 1"):
        select_n_experts(X, y, n_experts=[2, 2])
    with pytest.raises(ValueError, match="distinct integers >= 1"):
        select_n_experts(X, y, n_experts=[])
    with pytest.raises(ValueError, match="cv must be an integer >= 2"):
        select_n_experts(X, y, criterion="cv", cv=1)
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        select_n_experts(X[:, 0], y)
    with pytest.raises(ValueError, match="Every candidate fit failed"):
        select_n_experts(X, y, n_experts=[60, 70])


@pytest.mark.slow
@pytest.mark.parametrize("truth", [TRUTH_2, TRUTH_3], ids=["k*=2", "k*=3"])
def test_bic_picks_the_true_number_of_experts(truth):
    """At n = 1e4 BIC chooses k* among 1..5 (about 10-20 s per truth)."""
    X, y = _data(truth, 10_000, 10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = select_n_experts(X, y, n_experts=range(1, 6), n_init=3, random_state=0)
    assert result.n_experts == truth.n_experts, str(result)


def test_a_candidates_warnings_name_it_and_point_at_the_callers_line():
    X = gmoe.make_design(300, "uniform", random_state=0)
    y = X[:, 0] + np.random.default_rng(0).normal(scale=0.1, size=300)
    with pytest.warns(ConvergenceWarning, match=r"^n_experts=2: EM did not converge") as rec:
        select_n_experts(X, y, [1, 2], n_init=1, random_state=0, max_iter=2)
    assert {w.filename for w in rec} == {__file__}


def test_bad_sample_weight_is_named_once():
    X = gmoe.make_design(300, "uniform", random_state=0)
    y = X[:, 0]
    with pytest.raises(ValueError, match=r"sample_weight must be an array of shape \(300,\)"
                                         r".*got an array of shape \(3,\)"):
        select_n_experts(X, y, [1, 2], n_init=1, random_state=0, sample_weight=np.ones(3))


def test_a_top_k_gate_instance_is_capped_too():
    # gating=TopKGating(2) with a one-expert candidate was refused ("top_k must be ... in
    # [1, 1]"): only the top_k= keyword was capped.
    X, y = _data(TRUTH_2, 200, 8)
    gate = TopKGating(2, selection="linear")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = select_n_experts(X, y, n_experts=[1, 3], n_init=1, random_state=0,
                                  gating=gate, max_iter=50)
    assert [row["error"] for row in result.table] == [None, None]
    assert result.estimators[1].mixing_measure_.family.top_k == 1
    assert result.estimators[1].mixing_measure_.family.selection == "linear"
    assert result.estimators[3].mixing_measure_.family.top_k == 2
    assert gate.top_k == 2  # the caller's instance is not changed


def test_a_candidates_row_does_not_depend_on_the_other_candidates():
    # Seeds were drawn by position and each candidate had its own folds: the k = 2 row
    # changed with the list around it, and the cross-validated comparison was unpaired.
    X, y = _data(TRUTH_2, 150, 12)
    kwargs = dict(criterion="cv", n_init=1, cv=3, random_state=4, max_iter=60)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = select_n_experts(X, y, n_experts=[1, 2, 3], **kwargs)
        other = select_n_experts(X, y, n_experts=[3, 2], **kwargs)
    rows = [{r["n_experts"]: r for r in result.table} for result in (one, other)]
    for k in (2, 3):
        for key in ("log_lik", "bic", "cv_log_lik"):
            assert rows[0][k][key] == rows[1][k][key], (k, key)
