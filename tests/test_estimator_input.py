"""Input the estimator must refuse, or warn about, rather than fit silently wrong."""

import pickle
import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.exceptions import ConvergenceWarning, NotFittedError

import gmoe
from gmoe.exceptions import DegenerateExpertWarning
from gmoe.selection import select_n_experts

TRUTH = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                           [0.09, 0.16])


@pytest.fixture(scope="module")
def data():
    X = gmoe.make_design(300, "uniform", random_state=0)
    return X, gmoe.sample_moe(TRUTH, X, random_state=1)


def _fit(X, y, sample_weight=None, **params):
    return gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, **params).fit(
        X, y, sample_weight=sample_weight)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")  # tol=0
def test_weights_scaled_far_below_counts_keep_em_monotone_and_reach_the_same_maximum(data):
    # With tol=0 and enough steps the fit's maximum does not depend on the weights' scale;
    # an absolute guard on the experts' weight sums used to outweigh weights of 1e-20 and
    # make the log-likelihood fall.
    X, y = data
    plain = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, tol=0.0,
                                      max_iter=60).fit(X, y)
    with pytest.warns(DegenerateExpertWarning, match="sample_weight sums to 3e-18"):
        tiny = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, tol=0.0,
                                         max_iter=60).fit(X, y, sample_weight=np.full(300, 1e-20))
    assert np.all(np.diff(tiny.lower_bounds_) >= -1e-12)
    assert_allclose(tiny.lower_bound_, plain.lower_bound_, rtol=1e-9)
    assert_allclose(tiny.mixing_measure_.to_vector(), plain.mixing_measure_.to_vector(),
                    rtol=1e-5, atol=1e-6)  # both stopped by max_iter on the same path


def test_weights_on_the_scale_of_counts_do_not_warn(data):
    X, y = data
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateExpertWarning)
        _fit(X, y, sample_weight=np.full(300, 0.5))  # 150 "rows": well above 8 parameters


def test_a_warning_raised_as_an_error_keeps_the_finished_fit(data):
    X, y = data
    est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning):
            est.fit(X, y)
    assert est.n_iter_ == 2 and np.isfinite(est.lower_bound_)


def test_a_column_whose_spread_underflows_is_refused(data):
    X, y = data
    with pytest.raises(ValueError, match="column 0 of X varies by only 9.97e-301"):
        _fit(X * 1e-300, y)


@pytest.mark.parametrize("gating", ["softmax", "topk"])
@pytest.mark.parametrize(("scale", "message"), [
    (1e155, r"y has a standard deviation of 3.98e\+155, whose square"),
    (1e-300, "y varies by only")])
def test_a_response_beyond_float64s_squares_is_refused(data, gating, scale, message):
    # 'softmax' scales block by block, top-K on the whole array: both paths check. The
    # experts' variances are in y's units squared: beyond about 1e154 they overflow.
    X, y = data
    with pytest.raises(ValueError, match=message):
        _fit(X, y * scale, gating=gating, top_k=1)


# Top-1 on this truth collapses an expert, alike at every scale: the test compares fits.
@pytest.mark.filterwarnings("ignore::gmoe.exceptions.DegenerateExpertWarning")
@pytest.mark.parametrize("gating", ["softmax", "topk"])
@pytest.mark.parametrize(("x_scale", "y_scale", "weight"), [
    (1e155, 1.0, 1.0),    # X's squares overflow: its moments are recomputed scaled
    (1e150, 1.0, 1e8),    # so do weighted sums of squares well below 1e154
    (1.0, 1e153, 1.0)])   # y's sum of squares overflows, its variance does not
def test_large_but_representable_scales_fit_as_the_original(data, gating, x_scale, y_scale,
                                                             weight):
    X, y = data
    w = np.full(300, weight)
    base = _fit(X, y, sample_weight=w, gating=gating, top_k=1)
    scaled = _fit(X * x_scale, y * y_scale, sample_weight=w, gating=gating, top_k=1)
    # The fit is invariant to the scales up to rounding: the log-likelihood shifts by
    # -log(y_scale) per row.
    assert_allclose(scaled.lower_bound_ + np.log(y_scale), base.lower_bound_, rtol=1e-7)


def test_a_huge_constant_column_is_fitted_as_a_constant(data):
    X, y = data
    base = _fit(X, y)
    with pytest.warns(UserWarning, match=r"column\(s\) \[1\] are constant"):
        wide = _fit(np.column_stack([X, np.full(300, 1e300)]), y)
    assert_allclose(wide.lower_bound_, base.lower_bound_, rtol=1e-9)


def test_a_spread_on_rows_of_zero_weight_only_is_ignored(data):
    # Rows of zero weight do not enter the likelihood; neither may they enter the scaling
    # checks (the column is constant over the rows that count).
    X, y = data
    X_odd, w = np.column_stack([X, np.full(300, 0.5)]), np.ones(300)
    X_odd[0, 1], w[0] = 0.5 + 1e-170, 0.0
    with pytest.warns(UserWarning, match=r"column\(s\) \[1\] are constant"):
        kept = _fit(X_odd, y, sample_weight=w)
    dropped = _fit(X[1:], y[1:])
    assert_allclose(kept.lower_bound_, dropped.lower_bound_, rtol=1e-9)


def test_a_row_of_weight_zero_is_left_out_whatever_its_values(data):
    # A row of weight 0 is not in the likelihood: the fit and its standard errors are
    # those of the other rows, bit for bit, even where its values (1e300) would overflow
    # every sum they entered (it made the start's log-likelihood infinite).
    X, y = data
    X_odd = np.vstack([[[1e300]], X[:1], X])
    y_odd = np.r_[y[0], 1e300, y]
    w = np.r_[0.0, 0.0, np.ones(300)]
    kept, dropped = _fit(X_odd, y_odd, sample_weight=w), _fit(X, y)
    assert_array_equal(kept.mixing_measure_.to_vector(), dropped.mixing_measure_.to_vector())
    assert kept.lower_bound_ == dropped.lower_bound_
    results = gmoe.fit_results(kept, X_odd, y_odd, sample_weight=w)
    expected = gmoe.fit_results(dropped, X, y)
    assert np.all(np.isfinite(results.bse))
    assert_array_equal(results.bse, expected.bse)
    assert (results.nobs, results.wnobs) == (302, 300.0)
    # So is every number the package computes from weighted rows.
    assert kept.log_likelihood(X_odd, y_odd, w) == dropped.log_likelihood(X, y)
    assert gmoe.log_likelihood_scorer(kept, X_odd, y_odd, sample_weight=w) == \
        gmoe.log_likelihood_scorer(dropped, X, y, sample_weight=np.ones(300))
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # none about the rows of weight 0...
        warnings.simplefilter("ignore", DegenerateExpertWarning)  # ... but the fits' own
        warnings.simplefilter("ignore", ConvergenceWarning)
        chosen = select_n_experts(X_odd, y_odd, [1, 2], sample_weight=w, n_init=1,
                                  random_state=0, criterion="icl")
        plain = select_n_experts(X, y, [1, 2], n_init=1, random_state=0, criterion="icl")
    icl = [row["icl"] for row in chosen.table]
    assert np.all(np.isfinite(icl))
    assert_array_equal(icl, [row["icl"] for row in plain.table])


def test_responsibilities_of_a_y_beyond_every_experts_reach_are_nan_and_said(data):
    # Its density underflows to 0 under every expert: no posterior to normalise (the rows
    # came back as zeros that did not sum to 1).
    X, y = data
    est = _fit(X, y)
    with pytest.warns(UserWarning, match=re.escape(
            "1 row(s) have no responsibilities (NaN), the first y[1] = 1e+160: its log density "
            "is -inf under every expert (beyond float64's reach of all of them).")):
        resp = est.predict_responsibilities(X[:3], np.r_[y[0], 1e160, y[2]])
    assert np.all(np.isnan(resp[1]))
    assert_allclose(resp[[0, 2]].sum(axis=1), 1.0)
    assert_array_equal(resp[[0, 2]], est.predict_responsibilities(X[[0, 2]], y[[0, 2]]))


def test_bic_and_aic_take_frequency_weights(data):
    # A weight of 2 is a row seen twice: the criteria of the data written out twice.
    X, y = data
    est = _fit(X, y)
    twice = np.vstack([X, X]), np.r_[y, y]
    w = np.full(len(y), 2.0)
    assert est.bic(X, y, w) == pytest.approx(est.bic(*twice), rel=1e-12)
    assert est.aic(X, y, w) == pytest.approx(est.aic(*twice), rel=1e-12)
    assert est.bic(X, y) == est.bic(X, y, np.ones(len(y)))


def test_fewer_rows_of_positive_weight_than_experts_is_refused(data):
    X, y = data
    w = np.zeros(300)
    w[:2] = 1.0
    with pytest.raises(ValueError, match=re.escape(
            "Expected at least n_experts rows of positive weight, got n_experts=3 and 2 "
            "such rows.")):
        gmoe.GaussianMoERegressor(3, init_params="kmeans").fit(X, y, sample_weight=w)


@pytest.mark.parametrize(("param", "value", "message"), [
    ("learn_temperature", "no", "learn_temperature must be True or False, got "
                                "learn_temperature='no'"),
    ("warm_start", "yes", "warm_start must be True or False"),
    ("verbose", -1, "verbose must be an integer >= 0, got verbose=-1"),
    ("verbose", "x", "verbose must be an integer >= 0"),
])
def test_flags_of_the_wrong_type_are_refused(data, param, value, message):
    X, y = data
    with pytest.raises(ValueError, match=message):
        _fit(X, y, **{param: value})


def test_verbose_true_means_one(data, capsys):
    X, y = data
    _fit(X, y, verbose=True)
    assert "start 1: mean log-likelihood" in capsys.readouterr().out


@pytest.mark.parametrize("method", ["sample", "predict_distribution"])
def test_unfitted_estimator_raises_not_fitted(data, method):
    with pytest.raises(NotFittedError):
        getattr(gmoe.GaussianMoERegressor(2), method)(data[0])


def test_a_refit_that_raises_keeps_the_previous_fit(data):
    X, y = data
    est = _fit(X, y)
    before = pickle.dumps(est)
    two_columns = np.column_stack([X, X ** 2])
    with pytest.raises(ValueError, match="n_samples >= n_experts"):
        est.fit(two_columns[:1], y[:1])
    with pytest.raises(ValueError, match="sample_weight must be"):
        est.fit(two_columns, y, sample_weight=-np.ones(300))
    assert est.n_features_in_ == 1
    assert pickle.dumps(est) == before
    assert_array_equal(est.predict(X), pickle.loads(before).predict(X))


@pytest.mark.parametrize(("change", "message"), [
    ({"gating": "temperature"}, "must use the estimator's gating TemperatureGating"),
    ({"gating": "activation"}, "must use the estimator's gating ActivationGating"),
    ({"n_experts": 3}, r"must have n_experts .* expected \(3, 1\), got \(2, 1\)"),
])
def test_warm_start_from_an_incompatible_fit_is_refused(data, change, message):
    X, y = data
    est = _fit(X, y, warm_start=True)
    est.set_params(**change)
    with pytest.raises(ValueError, match="warm_start=True's start .the previous fit. " + message):
        est.fit(X, y)
    assert est.mixing_measure_.n_experts == 2  # the previous fit is kept


def test_warm_start_on_new_features_is_refused(data):
    X, y = data
    est = _fit(X, y, warm_start=True)
    with pytest.raises(ValueError, match=r"expected \(2, 2\), got \(2, 1\)"):
        est.fit(np.column_stack([X, X ** 2]), y)
    assert est.n_features_in_ == 1


@pytest.mark.parametrize(("weights", "received"), [
    (np.zeros(300), "all zeros"), (np.full(300, np.nan), "non-finite values"),
    (-np.ones(300), "a negative value"), (np.ones(3), r"an array of shape \(3,\)")])
def test_scorer_checks_its_weights(data, weights, received):
    X, y = data
    est = _fit(X, y)
    with pytest.raises(ValueError, match=r"sample_weight must be an array of shape \(300,\) "
                                         r".*got " + received):
        gmoe.log_likelihood_scorer(est, X, y, sample_weight=weights)


def test_selection_warns_of_a_candidate_that_could_not_be_fitted(data):
    X, y = data
    too_many = X.shape[0] + 1  # more experts than rows: the fit refuses
    with pytest.warns(UserWarning, match=rf"left out of the choice: n_experts={too_many}: "):
        result = select_n_experts(X, y, [2, too_many], n_init=1, random_state=0,
                                  gating="topk", top_k=2)
    assert result.n_experts == 2
    assert result.table[1]["error"] is not None
