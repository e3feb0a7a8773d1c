"""Internal centring and scaling: the fit does not depend on the units of X or y."""

import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import gmoe
from gmoe._conditioning import Conditioning
from gmoe.estimator import _Params
from gmoe.exceptions import RankDeficientDesignWarning
from gmoe.gates import make_gating

# The README's model.
TRUTH = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                           [0.09, 0.16])
OFFSET, SPREAD = 1.7e9, 86400.0  # a Unix time over one day
# Two runs may stop anywhere within tol of the maximum: at the default tol their
# predictions can differ by ~1e-8, as much as the comparisons below allow. These fits go
# further, so that what is compared is the maximum, not where each run stopped.
TIGHT = 1e-10


def _shift_measure(measure, offset, scale):
    """The same conditional density on x = offset + scale * u (by hand, for the tests)."""
    gate_coef = measure.gate_coef / scale
    coef = measure.expert_coef / scale
    return measure.replace(gate_coef=gate_coef,
                           gate_intercept=measure.gate_intercept - gate_coef[:, 0] * offset,
                           expert_coef=coef,
                           expert_intercept=measure.expert_intercept - coef[:, 0] * offset)


def _data(n, seed):
    U = gmoe.make_design(n, "uniform", random_state=seed)
    return U, gmoe.sample_moe(TRUTH, U, random_state=seed + 1)


def test_large_offset_is_fitted_like_the_centred_design():
    """Non-regression test for the issue "Fits that reach the maximum likelihood".

    With ``x = 1.7e9 + 86400 u`` the README's model was fitted to a mean log-likelihood of
    -2.51 instead of -0.43, with ``converged_ = True`` and no warning: the gate's Newton
    step and the experts' least squares worked on the uncentred design.
    """
    U, y = _data(3000, 0)
    X = OFFSET + SPREAD * U
    # One start: with two, both reach the maximum and the better one, in either labelling,
    # is a coin toss of the last bits of L.
    fit_u = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, tol=TIGHT).fit(U, y)
    fit_x = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, tol=TIGHT).fit(X, y)
    assert fit_u.lower_bound_ > -0.5  # the MLE of the README's model, about -0.43
    assert fit_x.converged_
    assert fit_x.lower_bound_ == pytest.approx(fit_u.lower_bound_, rel=1e-8)
    assert fit_x.log_likelihood(X, y) == pytest.approx(fit_u.log_likelihood(U, y), rel=1e-8)
    # Predictions in user units at x ~ 1.7e9 lose about log10(1.7e9 / 2.5e4) ~ 5 of the 16
    # digits to cancellation inside beta1 x + beta0.
    assert_allclose(fit_x.predict(X), fit_u.predict(U), rtol=1e-8, atol=1e-8)
    assert_allclose(fit_x.predict_proba(X), fit_u.predict_proba(U), rtol=1e-8, atol=1e-8)


def test_first_em_step_from_the_truth_does_not_decrease_the_log_likelihood():
    """Non-regression test for the issue "Fits that reach the maximum likelihood".

    On ``x = 1.7e9 + 86400 u`` the first EM step decreased the log-likelihood even when it
    started from the truth.
    """
    U, y = _data(2000, 3)
    X = OFFSET + SPREAD * U
    start = _shift_measure(TRUTH, OFFSET, SPREAD)
    at_start = gmoe.conditional_log_density(start, X, y).mean()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # max_iter=1: ConvergenceWarning
        est = gmoe.GaussianMoERegressor(2, init_params=start, max_iter=1).fit(X, y)
    # The start's log-likelihood computed in user units loses ~5 digits (see above).
    assert est.lower_bounds_[0] == pytest.approx(at_start, rel=1e-9)
    assert est.lower_bounds_[1] >= est.lower_bounds_[0]


@pytest.mark.parametrize("transform", [
    pytest.param(lambda u: OFFSET + SPREAD * u, id="unix-time"),
    pytest.param(lambda u: u * 1e-6, id="micro"),
    pytest.param(lambda u: u * 1e6, id="mega"),
    pytest.param(lambda u: -3.0 * u + 7.0, id="reflected"),
])
@pytest.mark.parametrize("gating,options", [
    ("softmax", {}),
    ("temperature", {"temperature": 0.5}),
    ("topk", {"top_k": 1}),
    # Linear logits with a free reference slope: centred, then re-based on the way back.
    ("activation", {"activation": "identity", "temperature": 0.5}),
])
def test_affine_rescaling_of_x_gives_the_same_fit(transform, gating, options):
    U, y = _data(400, 5)
    X = transform(U)
    params = dict(gating=gating, n_init=2, random_state=1, tol=TIGHT, **options)
    fit_u = gmoe.GaussianMoERegressor(2, **params).fit(U, y)
    fit_x = gmoe.GaussianMoERegressor(2, **params).fit(X, y)
    # (Not the same iteration count: near the maximum the safeguard's and the stopping
    # rule's comparisons of nearly equal log-likelihoods can go either way.)
    assert fit_x.lower_bound_ == pytest.approx(fit_u.lower_bound_, rel=1e-8)
    # The runs' paths can part at a near-tie (a SQUAREM safeguard, the filter) and end at
    # different points of the maximum's flat directions (the steep gate's slope): L agrees
    # to ~1e-12 there, rows near the gate's boundary to ~1e-8.
    assert_allclose(fit_x.score_samples(X, y), fit_u.score_samples(U, y), rtol=1e-6,
                    atol=1e-6)
    assert_allclose(fit_x.predict(X), fit_u.predict(U), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("gating,options", [
    ("activation", {"activation": "tanh", "temperature": 0.5}),
    ("topk", {"top_k": 1, "topk_selection": "linear"}),
])
@pytest.mark.parametrize("factor", [1e-6, 1e6])
def test_scaling_x_gives_the_same_fit_where_centring_is_not_allowed(gating, options,
                                                                    factor):
    # These gates have no intercept inside sigma(beta1 x) or the selection beta1 x: a
    # shift of x is a different model, a scale is not.
    U, y = _data(400, 6)
    U = U - 0.3  # the gate needs inputs of both signs
    params = dict(gating=gating, n_init=2, random_state=2, tol=TIGHT, **options)
    fit_u = gmoe.GaussianMoERegressor(2, **params).fit(U, y)
    fit_x = gmoe.GaussianMoERegressor(2, **params).fit(U * factor, y)
    assert fit_x.lower_bound_ == pytest.approx(fit_u.lower_bound_, rel=1e-8)
    # As in the test above: the maximum's flat directions leave predictions to ~1e-8.
    assert_allclose(fit_x.predict(U * factor), fit_u.predict(U), rtol=1e-6, atol=1e-6)


def test_affine_rescaling_of_y_maps_the_fit():
    U, y = _data(400, 7)
    # One start: with two, both reach the maximum and the better one, in either labelling,
    # is a coin toss of the last bits of L.
    fit = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, tol=TIGHT).fit(U, y)
    scaled = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0,
                                       tol=TIGHT).fit(U, 1e3 * y - 5.0)
    assert_allclose(scaled.expert_coef_, 1e3 * fit.expert_coef_, rtol=1e-8)
    assert_allclose(scaled.expert_intercept_, 1e3 * fit.expert_intercept_ - 5.0, rtol=1e-8)
    assert_allclose(scaled.expert_var_, 1e6 * fit.expert_var_, rtol=1e-8)
    assert_allclose(scaled.gate_coef_, fit.gate_coef_, rtol=1e-8, atol=1e-8)
    # log p(y | x) shifts by -log(1000) per row.
    assert scaled.lower_bound_ == pytest.approx(fit.lower_bound_ - np.log(1e3), rel=1e-10)


@pytest.mark.parametrize("centre", [True, False])
def test_parameter_maps_keep_the_density_and_invert(centre):
    rng = np.random.default_rng(0)
    X = rng.normal(5.0, 3.0, size=(50, 2))
    y = rng.normal(2.0, 4.0, size=50)
    w = rng.uniform(0.5, 2.0, size=50)
    cond = Conditioning.from_data(X, y, w, centre_x=centre)
    measure = gmoe.MixingMeasure([[1.0, -2.0], [0.0, 0.0]], [0.3, 0.0],
                                 [[0.5, 1.5], [-1.0, 2.0]], [1.0, -2.0], [0.7, 1.3])
    params = _Params.from_measure(measure)
    internal = cond.to_internal(params)
    back = cond.to_original(internal)
    for name in ("gate_coef", "gate_intercept", "expert_coef", "expert_intercept",
                 "expert_var"):
        assert_allclose(getattr(back, name), getattr(params, name), rtol=1e-13, atol=1e-13)
    internal_measure = gmoe.MixingMeasure(internal.gate_coef, internal.gate_intercept,
                                          internal.expert_coef, internal.expert_intercept,
                                          internal.expert_var)
    # log p(y | x) = log p_z(y_z | z) - log s_y, row by row.
    assert_allclose(
        gmoe.conditional_log_density(measure, X, y),
        gmoe.conditional_log_density(internal_measure, cond.transform_X(X),
                                     cond.transform_y(y)) + cond.log_lik_shift,
        rtol=1e-12, atol=1e-12)
    if centre:
        Z = cond.transform_X(X)
        assert_allclose(Z.T @ w / w.sum(), 0.0, atol=1e-12)
        assert_allclose(np.sqrt((Z * Z).T @ w / w.sum()), 1.0, rtol=1e-12)
    else:
        assert_allclose(cond.x_offset, 0.0)


def test_can_centre_only_where_every_beta1_x_has_an_intercept():
    assert make_gating("softmax").centres_design
    assert make_gating("temperature").centres_design
    assert make_gating("topk", top_k=1, topk_selection="affine").centres_design
    assert not make_gating("topk", top_k=1, topk_selection="linear").centres_design
    for activation in ("tanh", "sigmoid", "gelu"):
        assert not make_gating("activation", activation=activation).centres_design
    # Its logits are the temperature gate's (with a free reference slope).
    assert make_gating("activation", activation="identity").centres_design


def test_a_free_reference_slope_keeps_the_reference_intercept_at_zero():
    # The identity activation's reference (the last expert) has a slope; centring moves
    # beta1_ref . m into its intercept, and the maps re-base every intercept by it.
    rng = np.random.default_rng(3)
    X = rng.normal(40.0, 3.0, size=(60, 2))
    y = rng.normal(2.0, 4.0, size=60)
    w = np.ones(60)
    cond = Conditioning.from_data(X, y, w, centre_x=True)
    options = dict(gating="activation", activation="identity", temperature=0.5)
    measure = gmoe.MixingMeasure([[1.0, -2.0], [0.4, 0.7]], [0.3, 0.0],
                                 [[0.5, 1.5], [-1.0, 2.0]], [1.0, -2.0], [0.7, 1.3],
                                 **options)
    params = _Params.from_measure(measure)
    internal = cond.to_internal(params)
    assert internal.gate_intercept[-1] == 0.0
    internal_measure = gmoe.MixingMeasure(internal.gate_coef, internal.gate_intercept,
                                          internal.expert_coef, internal.expert_intercept,
                                          internal.expert_var, **options)
    assert_allclose(
        gmoe.conditional_log_density(measure, X, y),
        gmoe.conditional_log_density(internal_measure, cond.transform_X(X),
                                     cond.transform_y(y)) + cond.log_lik_shift,
        rtol=1e-12, atol=1e-12)
    back = cond.to_original(internal)
    assert back.gate_intercept[-1] == 0.0
    # x ~ 40 costs about a digit and a half of the intercepts to beta1 . m's cancellation.
    assert_allclose(back.gate_intercept, params.gate_intercept, rtol=0, atol=1e-12)
    assert_allclose(back.gate_coef, params.gate_coef, rtol=1e-13)


def test_collinear_columns_warn():
    U, y = _data(300, 8)
    X = np.column_stack([U[:, 0], 2.0 * U[:, 0] + 1.0])
    with pytest.warns(RankDeficientDesignWarning, match="numerically rank-deficient"):
        est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)
    assert np.all(np.isfinite(est.predict(X)))


def test_constant_column_warns_and_gets_no_coefficient():
    U, y = _data(300, 9)
    X = np.column_stack([U[:, 0], np.full(300, 4.0)])
    with pytest.warns(RankDeficientDesignWarning, match=r"column\(s\) \[1\] are constant"):
        est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)
    assert_allclose(est.expert_coef_[:, 1], 0.0, atol=1e-12)
    assert_allclose(est.gate_coef_[:, 1], 0.0, atol=1e-12)


def test_a_constant_column_of_an_uncentred_gate_is_named_as_its_intercept():
    U, y = _data(300, 9)
    X = np.column_stack([U[:, 0] - 0.3, np.ones(300)])
    with pytest.warns(RankDeficientDesignWarning, match="can act as an intercept inside it "
                                                        r"\(the activation gate's"):
        gmoe.GaussianMoERegressor(2, gating="activation", n_init=1, random_state=0,
                                  max_iter=5).fit(X, y)


def test_uncentrable_design_with_a_large_offset_warns():
    U, y = _data(300, 10)
    with pytest.warns(RankDeficientDesignWarning, match="scaled but not centred"):
        gmoe.GaussianMoERegressor(2, gating="activation", n_init=1, random_state=0,
                                  max_iter=5).fit(OFFSET + SPREAD * U, y)


def test_well_conditioned_design_does_not_warn():
    U, y = _data(300, 11)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficientDesignWarning)
        gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(OFFSET + SPREAD * U, y)


@pytest.mark.parametrize("options", [
    {"gating": "activation", "activation": "tanh"},
    {"gating": "topk", "top_k": 1, "topk_selection": "linear"},
    {"gating": "softmax"},
], ids=["tanh", "topk-linear", "softmax"])
def test_a_lone_expert_is_centred_whatever_its_gate(options):
    # A lone expert's gate is 1 whatever x is, so its design is centred in every family:
    # uncentred at x ~ 1e8, the families that cannot centre their gate fitted a slope of
    # 0.07 for the least squares' 1.99, reported as converged.
    rng = np.random.default_rng(0)
    u = rng.uniform(-1.0, 1.0, size=(300, 1))
    y = 2.0 * u[:, 0] + 1.0 + rng.normal(0.0, 0.1, size=300)
    X = u + 1e8
    stored = X[:, 0] - 1e8  # exact (Sterbenz): the u that X holds, to its rounding
    slope, intercept = np.linalg.lstsq(np.column_stack([stored, np.ones(300)]), y,
                                       rcond=None)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficientDesignWarning)
        est = gmoe.GaussianMoERegressor(1, n_init=1, random_state=0, **options).fit(X, y)
    # x ~ 1e8 leaves the slope about 8 of its 16 digits (the mean's cancellation), and a
    # prediction a x + b in user units an absolute error of about 1e8 * 1e-16 * |a|.
    assert est.expert_coef_[0, 0] == pytest.approx(slope, rel=1e-7)
    assert_allclose(est.predict(X), slope * stored + intercept, rtol=0, atol=1e-6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        results = gmoe.fit_results(est, X, y)
    assert np.all(np.isfinite(results.bse))
