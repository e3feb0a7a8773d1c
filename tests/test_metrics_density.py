"""Tests of gmoe.metrics.density: expected Hellinger and total-variation distances.

Independent references: closed forms for two Gaussians, scipy's adaptive quadrature for
mixtures, and the previous numpy implementation (``tests/_metrics_oracle.py``).
"""

import re
import warnings
from types import SimpleNamespace

import _metrics_oracle as oracle
import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import norm

from gmoe import MixingMeasure, make_design
from gmoe.metrics import hellinger, total_variation
from gmoe.metrics.density import _Components, _pointwise_hellinger_sq, _pointwise_tv


def col(values):
    return np.asarray(values, dtype=float)[:, None]


def spec52_truth(**options):
    return MixingMeasure(col([25.0, 0.0]), [-8.0, 0.0], col([-20.0, 20.0]), [15.0, -5.0],
                         [0.09, 0.16], **options)


def three_expert_fit():
    return MixingMeasure(col([24.0, 0.0, 1.0]), [-7.5, 0.0, 0.3], col([-20.5, 20.0, 19.0]),
                         [15.2, -5.0, -4.0], [0.1, 0.16, 0.3], rebase=True)


def one_expert(slope, intercept, var):
    """A single Gaussian expert: p(y | x) = N(y | slope x + intercept, var)."""
    return MixingMeasure([[0.0]], [0.0], [[slope]], [intercept], [var])


def options(measure):
    return dict(gating=measure.gating, temperature=measure.temperature, top_k=measure.top_k,
                topk_selection=measure.topk_selection, activation=measure.activation)


def permuted(measure, order):
    order = list(order)
    return MixingMeasure(measure.gate_coef[order], measure.gate_intercept[order],
                         measure.expert_coef[order], measure.expert_intercept[order],
                         measure.expert_var[order], rebase=True, **options(measure))


def pointwise(g1, g2, X):
    first, second = _Components(g1, X), _Components(g2, X)
    return _pointwise_hellinger_sq(first, second), _pointwise_tv(first, second)


def models():
    yield spec52_truth()
    yield three_expert_fit()
    yield spec52_truth(gating="topk", top_k=1)
    yield MixingMeasure(col([6.25, 0.0]), [-2.0, 0.0], col([-20.0, 20.0]), [15.0, -5.0],
                        [0.09, 0.16], gating="temperature", temperature=0.25)
    yield MixingMeasure(col([4.0, -1.0]), [-0.9, 0.0], col([-20.0, 20.0]), [15.0, -5.0],
                        [0.09, 0.16], gating="activation", temperature=0.25, activation="tanh")


GRID = np.linspace(0, 1, 21)[:, None]


# ------------------------------------------------------------------------ identities
@pytest.mark.parametrize("model", list(models()), ids=lambda m: m.gating)
def test_zero_between_a_model_and_itself(model):
    assert hellinger(model, model, GRID) == 0.0
    assert total_variation(model, model, GRID) == 0.0


@pytest.mark.parametrize("order", [(1, 0, 2), (2, 1, 0), (1, 2, 0)])
def test_invariant_to_relabelling(order):
    true, fit = spec52_truth(), three_expert_fit()
    relabelled = permuted(fit, order)
    assert relabelled != fit
    # Same density: the distance to the original is 0 up to rounding.
    assert hellinger(fit, relabelled, GRID) == pytest.approx(0.0, abs=1e-7)
    assert total_variation(fit, relabelled, GRID) == pytest.approx(0.0, abs=1e-12)
    assert hellinger(relabelled, true, GRID) == pytest.approx(hellinger(fit, true, GRID),
                                                              rel=1e-12)
    assert total_variation(relabelled, true, GRID) == pytest.approx(
        total_variation(fit, true, GRID), rel=1e-12)


def test_models_of_different_families_and_sizes_with_one_density():
    true = spec52_truth()
    # The temperature gate with (beta1, beta0) = tau * gamma is the softmax model in gamma.
    temperature = MixingMeasure(0.25 * true.gate_coef, 0.25 * true.gate_intercept,
                                true.expert_coef, true.expert_intercept, true.expert_var,
                                gating="temperature", temperature=0.25)
    identity = MixingMeasure(0.25 * true.gate_coef, 0.25 * true.gate_intercept,
                             true.expert_coef, true.expert_intercept, true.expert_var,
                             gating="activation", temperature=0.25, activation="identity")
    split = MixingMeasure(col([25.0, 0.0, 0.0]), [-8.0, np.log(0.5), np.log(0.5)],
                          col([-20.0, 20.0, 20.0]), [15.0, -5.0, -5.0], [0.09, 0.16, 0.16],
                          rebase=True)
    for other in (temperature, identity, split):
        assert hellinger(true, other, GRID) == pytest.approx(0.0, abs=1e-7)
        assert total_variation(true, other, GRID) == pytest.approx(0.0, abs=1e-12)


def test_symmetric_bounded_and_ordered():
    true, fit = spec52_truth(), three_expert_fit()
    h2, tv = pointwise(true, fit, GRID)
    h2_rev, tv_rev = pointwise(fit, true, GRID)
    assert_allclose(h2, h2_rev, rtol=1e-12, atol=1e-15)
    assert_allclose(tv, tv_rev, rtol=1e-12, atol=1e-15)
    assert np.all((h2 > 0) & (h2 < 1) & (tv > 0) & (tv < 1))
    # h^2 <= TV <= sqrt(2) h for h^2 = 1/2 int (sqrt p - sqrt q)^2.
    assert np.all(h2 <= tv) and np.all(tv <= np.sqrt(2 * h2))
    assert hellinger(true, fit, GRID) == pytest.approx(np.mean(np.sqrt(h2)), rel=1e-14)
    assert total_variation(true, fit, GRID) == pytest.approx(np.mean(tv), rel=1e-14)


def test_disjoint_densities_are_at_distance_one():
    g1, g2 = one_expert(0.0, 0.0, 1e-4), one_expert(0.0, 5.0, 1e-4)
    X = np.zeros((2, 1))
    assert hellinger(g1, g2, X) == pytest.approx(1.0, abs=1e-12)
    assert total_variation(g1, g2, X) == pytest.approx(1.0, abs=1e-12)


# ---------------------------------------------------------------------- closed forms
GAUSSIAN_PAIRS = [
    # (a1, b1, s1, a2, b2, s2): N(a1 x + b1, s1^2) against N(a2 x + b2, s2^2)
    (0.0, 0.0, 1.0, 0.0, 1.0, 1.0),
    (1.0, 0.0, 1.0, -1.0, 0.5, 1.0),
    (0.0, 0.0, 1.0, 0.0, 0.0, 2.0),
    (2.0, 0.3, 0.3, -1.0, -1.0, 0.7),
    (0.0, 0.0, 1.0, 0.0, 1e-3, 1.0001),
    (0.0, 0.0, 1e-3, 0.5, 0.0, 2e-3),
    (0.0, 0.0, 5.0, 0.0, 3.0, 0.05),
]


def hellinger_sq_closed_form(m1, s1, m2, s2):
    return 1 - np.sqrt(2 * s1 * s2 / (s1 ** 2 + s2 ** 2)) * np.exp(
        -(m1 - m2) ** 2 / (4 * (s1 ** 2 + s2 ** 2)))


def tv_closed_form(m1, s1, m2, s2):
    """TV of two normals: equal variances 2 Phi(|m1 - m2| / (2 s)) - 1; otherwise
    sup_A P(A) - Q(A) over the set between the two crossing points of the densities."""
    if s1 == s2:
        return 2 * norm.cdf(abs(m1 - m2) / (2 * s1)) - 1
    # log N(y; m1, s1) = log N(y; m2, s2)  <=>  A y^2 + B y + C = 0 with
    A = 1 / (2 * s2 ** 2) - 1 / (2 * s1 ** 2)
    B = m1 / s1 ** 2 - m2 / s2 ** 2
    C = m2 ** 2 / (2 * s2 ** 2) - m1 ** 2 / (2 * s1 ** 2) + np.log(s2 / s1)
    disc = np.sqrt(B ** 2 - 4 * A * C)
    u, v = sorted([(-B - disc) / (2 * A), (-B + disc) / (2 * A)])
    # The narrower density is the larger one between the crossings.
    (mn, sn), (mw, sw) = ((m1, s1), (m2, s2)) if s1 < s2 else ((m2, s2), (m1, s1))
    def mass(m, s):
        return norm.cdf((v - m) / s) - norm.cdf((u - m) / s)
    return mass(mn, sn) - mass(mw, sw)


@pytest.mark.parametrize("pair", GAUSSIAN_PAIRS)
def test_hellinger_of_two_gaussians_matches_the_closed_form(pair):
    a1, b1, s1, a2, b2, s2 = pair
    X = np.linspace(-1, 1, 5)[:, None]
    m1, m2 = a1 * X[:, 0] + b1, a2 * X[:, 0] + b2
    expected_sq = hellinger_sq_closed_form(m1, s1, m2, s2)
    g1, g2 = one_expert(a1, b1, s1 ** 2), one_expert(a2, b2, s2 ** 2)
    h2, _ = pointwise(g1, g2, X)
    assert_allclose(h2, expected_sq, rtol=1e-8, atol=1e-12)
    assert hellinger(g1, g2, X) == pytest.approx(np.mean(np.sqrt(expected_sq)), rel=1e-8,
                                                 abs=1e-10)


@pytest.mark.parametrize("pair", GAUSSIAN_PAIRS)
def test_total_variation_of_two_gaussians_matches_the_closed_form(pair):
    a1, b1, s1, a2, b2, s2 = pair
    X = np.linspace(-1, 1, 5)[:, None]
    expected = np.array([tv_closed_form(a1 * x + b1, s1, a2 * x + b2, s2) for x in X[:, 0]])
    g1, g2 = one_expert(a1, b1, s1 ** 2), one_expert(a2, b2, s2 ** 2)
    _, tv = pointwise(g1, g2, X)
    assert_allclose(tv, expected, rtol=1e-8, atol=1e-12)
    assert total_variation(g1, g2, X) == pytest.approx(np.mean(expected), rel=1e-8,
                                                       abs=1e-12)


def test_equal_variance_tv_by_hand():
    # Means 0 and 1, unit variances: TV = 2 Phi(1/2) - 1 = 0.38292492254802624.
    g1, g2 = one_expert(0.0, 0.0, 1.0), one_expert(0.0, 1.0, 1.0)
    assert total_variation(g1, g2, np.zeros((1, 1))) == pytest.approx(0.38292492254802624,
                                                                      abs=1e-14)
    # h^2 = 1 - exp(-1/8).
    assert hellinger(g1, g2, np.zeros((1, 1))) == pytest.approx(np.sqrt(1 - np.exp(-1 / 8)),
                                                                abs=1e-14)


def mixture_density(measure, x, y):
    gate = np.exp(measure.log_gate(np.array([[x]]))[0])
    means = measure.expert_coef[:, 0] * x + measure.expert_intercept
    return float(np.sum(gate * norm.pdf(y, means, np.sqrt(measure.expert_var))))


@pytest.mark.parametrize("x", [0.1, 0.9])
def test_mixtures_agree_with_adaptive_quadrature(x):
    true, fit = spec52_truth(), three_expert_fit()
    means = np.concatenate([m.expert_coef[:, 0] * x + m.expert_intercept for m in (true, fit)])
    points = np.sort(means)
    kwargs = dict(points=points, limit=500, epsabs=1e-14, epsrel=1e-12)
    h2_ref = quad(lambda y: 0.5 * (np.sqrt(mixture_density(true, x, y))
                                   - np.sqrt(mixture_density(fit, x, y))) ** 2,
                  points[0] - 12, points[-1] + 12, **kwargs)[0]
    tv_ref = quad(lambda y: 0.5 * abs(mixture_density(true, x, y) - mixture_density(fit, x, y)),
                  points[0] - 12, points[-1] + 12, **kwargs)[0]
    h2, tv = pointwise(true, fit, np.array([[x]]))
    # quad's own accuracy at these tolerances is ~1e-12.
    assert h2[0] == pytest.approx(h2_ref, abs=1e-9)
    assert tv[0] == pytest.approx(tv_ref, abs=1e-9)


def test_topk_gates_with_inactive_experts():
    # Top-1: p(. | x) is a single Gaussian, the selected expert's: closed forms apply.
    top1 = spec52_truth(gating="topk", top_k=1)
    single = one_expert(-20.0, 15.0, 0.09)
    X = np.array([[0.5], [0.9]])          # 25 x - 8 > 0: expert 0 is selected
    assert hellinger(top1, single, X) == pytest.approx(0.0, abs=1e-7)
    other = one_expert(20.0, -5.0, 0.16)
    expected = np.mean([np.sqrt(hellinger_sq_closed_form(-20 * x + 15, 0.3, 20 * x - 5, 0.4))
                        for x in X[:, 0]])
    assert hellinger(top1, other, X) == pytest.approx(expected, rel=1e-8)


# ------------------------------------------------ against the previous quadrature
def random_measure(rng, k, d, var_range=(0.05, 2.0), **options):
    low, high = np.log(var_range[0]), np.log(var_range[1])
    return MixingMeasure(np.vstack([rng.normal(0, 3, (k - 1, d)), np.zeros((1, d))]),
                         np.append(rng.normal(0, 1.5, k - 1), 0.0), rng.normal(0, 3, (k, d)),
                         rng.normal(0, 3, k), np.exp(rng.uniform(low, high, k)), **options)


def nudged(measure, rng, scale):
    k, d = measure.gate_coef.shape
    return measure.replace(
        gate_coef=measure.gate_coef + scale * rng.normal(size=(k, d)),
        gate_intercept=measure.gate_intercept + scale * rng.normal(size=k),
        expert_coef=measure.expert_coef + scale * rng.normal(size=(k, d)),
        expert_intercept=measure.expert_intercept + scale * rng.normal(size=k),
        expert_var=measure.expert_var * np.exp(scale * rng.normal(size=k)), rebase=True)


def model_pair(case, rng):
    """Two models of the kind ``case`` (each a range of situations the rule must handle)."""
    d, k1, k2 = int(rng.integers(1, 3)), int(rng.integers(1, 5)), int(rng.integers(1, 5))
    if case == "nearly equal":
        g1 = random_measure(rng, k1, d)
        return g1, nudged(g1, rng, float(10 ** rng.uniform(-9, -1)))
    if case == "one mean moved by 1e-7":
        g1 = random_measure(rng, k1, d)
        return g1, g1.replace(expert_intercept=g1.expert_intercept + 1e-7 * np.eye(k1)[0])
    if case == "random":
        return random_measure(rng, k1, d), random_measure(rng, k2, d)
    if case == "very different variances":      # sd from 1e-3 to 3: narrow inside wide
        return (random_measure(rng, k1, d, (1e-6, 10.0)),
                random_measure(rng, k2, d, (1e-6, 10.0)))
    if case == "top-K zero gates":
        k = max(k1, 2)
        g1 = random_measure(rng, k, d, gating="topk", top_k=int(rng.integers(1, k)))
        return g1, nudged(g1, rng, 0.05)
    assert case == "far-apart components"        # sd 0.03 to 0.1, means spread over +-100
    g1, g2 = (random_measure(rng, k, d, (1e-3, 1e-2)) for k in (k1, k2))
    return (g1.replace(expert_intercept=30 * g1.expert_intercept),
            g2.replace(expert_intercept=30 * g2.expert_intercept))


CASES = ["nearly equal", "one mean moved by 1e-7", "random", "very different variances",
         "top-K zero gates", "far-apart components"]


def mixture_reference(g1, g2, x):
    """``h^2`` and TV at one row by scipy's adaptive quadrature, cut at every component's
    mean +- k sd (k = 0, 3, ..., 12) so that no narrow feature is skipped."""
    def parts(m):
        row = np.atleast_2d(x)
        return (np.exp(m.log_gate(row)[0]), (row @ m.expert_coef.T + m.expert_intercept)[0],
                np.sqrt(m.expert_var))
    (w1, m1, s1), (w2, m2, s2) = parts(g1), parts(g2)

    def p(y):
        return float(np.sum(w1 * norm.pdf(y, m1, s1)))

    def q(y):
        return float(np.sum(w2 * norm.pdf(y, m2, s2)))
    means, sds = np.concatenate([m1, m2]), np.concatenate([s1, s2])
    # Rounded: cuts a few ulp apart would make intervals quad cannot handle.
    cuts = np.unique(np.round(means[:, None] + np.arange(-12, 13, 3) * sds[:, None], 12))
    kwargs = dict(epsabs=1e-17, epsrel=1e-13, limit=200)
    h2 = sum(quad(lambda y: 0.5 * (np.sqrt(p(y)) - np.sqrt(q(y))) ** 2, a, b, **kwargs)[0]
             for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    # |p - q| has kinks where p = q (quad alone is off by ~1e-10 there): cut there too, at
    # the sign changes on a grid of 1e5 points refined by brentq.
    grid = np.linspace(cuts[0], cuts[-1], 100_001)
    gap = (np.sum(w1 * norm.pdf(grid[:, None], m1, s1), axis=1)
           - np.sum(w2 * norm.pdf(grid[:, None], m2, s2), axis=1))
    changes = np.flatnonzero(np.sign(gap[1:]) * np.sign(gap[:-1]) < 0)
    crossings = [brentq(lambda y: p(y) - q(y), grid[j], grid[j + 1], xtol=1e-15)
                 for j in changes]
    cuts = np.unique(np.concatenate([cuts, crossings]))
    tv = sum(quad(lambda y: 0.5 * abs(p(y) - q(y)), a, b, **kwargs)[0]
             for a, b in zip(cuts[:-1], cuts[1:], strict=True))
    return h2, tv


@pytest.mark.parametrize("case", CASES)
def test_matches_the_previous_quadrature(global_random_seed, case):
    rng = np.random.default_rng(global_random_seed)
    for _ in range(8):
        g1, g2 = model_pair(case, rng)
        X = rng.uniform(-1, 1, (40, g1.n_features))
        h2, tv = pointwise(g1, g2, X)
        first, second = oracle.Components.of(g1, X), oracle.Components.of(g2, X)
        h2_old = oracle.pointwise_hellinger_sq(first, second)
        tv_old = oracle.pointwise_tv(first, second)
        assert_allclose(np.sqrt(h2), np.sqrt(h2_old), rtol=0, atol=1e-8)
        # The previous rule brackets the crossings of p and q on its nodes only and misses
        # a pair closer than their spacing (up to 4e-7 of TV in such rows); where the two
        # disagree, adaptive quadrature decides.
        for i in np.flatnonzero(np.abs(tv - tv_old) > 1e-8):
            h2_ref, tv_ref = mixture_reference(g1, g2, X[i])
            assert tv[i] == pytest.approx(tv_ref, abs=1e-10)
            assert abs(tv_old[i] - tv_ref) > 1e-8


@pytest.mark.parametrize("case", CASES)
def test_agrees_with_adaptive_quadrature(global_random_seed, case):
    rng = np.random.default_rng(global_random_seed + 1000)
    for _ in range(2):
        g1, g2 = model_pair(case, rng)
        X = rng.uniform(-1, 1, (2, g1.n_features))
        h2, tv = pointwise(g1, g2, X)
        for i in range(X.shape[0]):
            h2_ref, tv_ref = mixture_reference(g1, g2, X[i])
            # quad at these tolerances: ~1e-13 absolute; h to 1e-10 relative or 1e-9.
            assert np.sqrt(h2[i]) == pytest.approx(np.sqrt(h2_ref), rel=1e-9, abs=1e-9)
            assert tv[i] == pytest.approx(tv_ref, abs=1e-10)


def test_overlapping_components_exchanging_dominance():
    # p's two components 6 sd apart: between them sqrt(p) has complex branch points close
    # to the real line, where a fixed rule loses accuracy (the previous one by ~1e-10
    # relative); the refined lattice keeps h^2 to 1e-12 relative.
    p = MixingMeasure([[0.0], [0.0]], [0.3, 0.0], [[0.0], [0.0]], [0.0, 1.8], [0.09, 0.09])
    q = p.replace(expert_intercept=[0.01, 1.8], expert_var=[0.0905, 0.09])
    X = np.zeros((1, 1))
    h2_ref, tv_ref = mixture_reference(p, q, X[0])
    h2, tv = pointwise(p, q, X)
    assert h2[0] == pytest.approx(h2_ref, rel=1e-12)
    assert tv[0] == pytest.approx(tv_ref, abs=1e-14)


def close_crossings(shift, half_width):
    """``p = N(0, 1)`` and ``q = w N(shift, 0.99) + (1 - w) N(40, 1)`` with ``w`` chosen so
    that ``p = w N(shift, 0.99)`` exactly at ``y0 -+ half_width``, ``y0 = shift / 0.01``:
    ``log p - log(w N(shift, 0.99))`` is the quadratic ``a y^2 + b y + c`` below."""
    var = 0.99
    a, b = 0.5 * (1 / var - 1), -shift / var
    c = (b * b - 4 * a * a * half_width ** 2) / (4 * a)       # roots y0 -+ half_width
    w = np.sqrt(var) * np.exp(shift ** 2 / (2 * var) - c)
    p = MixingMeasure([[0.0]], [0.0], [[0.0]], [0.0], [1.0])
    q = MixingMeasure([[0.0], [0.0]], [np.log(w), np.log1p(-w)], [[0.0], [0.0]],
                      [shift, 40.0], [var, 1.0], rebase=True)
    y0 = -b / (2 * a)
    y1, y2 = y0 - half_width, y0 + half_width
    # TV = int (q - p)_+: between the crossings, and the far component's mass (p is below
    # 1e-80 of it wherever it matters).
    inside = (w * (norm.cdf((y2 - shift) / np.sqrt(var)) - norm.cdf((y1 - shift) / np.sqrt(var)))
              - (norm.cdf(y2) - norm.cdf(y1)))
    return p, q, (1 - w) + inside


@pytest.mark.parametrize("shift", np.linspace(0.0, 0.01, 11))
def test_a_pair_of_close_crossings_is_not_missed(shift):
    # p - q changes sign at y0 -+ 0.05, y0 = 100 shift in [0, 1]: as y0 moves, the pair
    # falls between two nodes of the sign lattice (half a standard deviation apart), where
    # only the check of the extremum of p - q between the nodes finds it; the pair holds
    # about 3e-7 of TV.
    p, q, expected = close_crossings(shift, 0.05)
    X = np.zeros((1, 1))
    assert total_variation(p, q, X) == pytest.approx(expected, abs=1e-13)
    assert total_variation(q, p, X) == pytest.approx(expected, abs=1e-13)


def test_rows_that_miss_the_tolerance_are_reported(monkeypatch):
    # A negative tolerance cannot be met (a zero one can: two levels may agree exactly):
    # every row refines to the finest level, is flagged, and the distance still comes back
    # (from the finest lattice).
    import gmoe.metrics.density as density
    g1, g2 = one_expert(0.0, 0.0, 1.0), one_expert(0.0, 1.0, 1.0)
    X = np.zeros((2, 1))
    monkeypatch.setattr(density, "_RTOL", -1.0)
    monkeypatch.setattr(density, "_ATOL", -1.0)
    with pytest.warns(RuntimeWarning, match="did not reach its tolerance on 2 of 2"):
        value = hellinger(g1, g2, X)
    assert value == pytest.approx(np.sqrt(1 - np.exp(-1 / 8)), abs=1e-14)


@pytest.mark.parametrize("metric", [hellinger, total_variation])
def test_components_too_narrow_for_their_mean_are_reported(metric):
    # sd 1e-18 at mean 4, where float64 numbers are 8.9e-16 apart (888 sds): the window
    # mu +- 10 sd collapses and the spike drops out of the integrals (h came back 0.71 and
    # TV 0.63 instead of about 1, without a warning).
    wide, spike = one_expert(0.0, 4.0, 0.05), one_expert(0.0, 4.0, 1e-36)
    X = np.zeros((3, 1))
    message = f"{metric.__name__}: on 3 of 3 design rows .* rounded by up to 888 of its"
    with pytest.warns(RuntimeWarning, match=message):
        metric(wide, spike, X)
    with pytest.warns(RuntimeWarning, match=message):
        metric(spike, wide, X)


@pytest.mark.parametrize("metric", [hellinger, total_variation])
def test_narrow_components_are_reported_past_the_threshold_only(metric):
    # At mean 4 the numbers are 8.88e-16 apart: 2e-6 sds warns, 8.9e-7 does not.
    X = np.zeros((1, 1))
    with pytest.warns(RuntimeWarning, match="rounded by up to 2e-06 of its"):
        metric(one_expert(0.0, 4.0, 1.0), one_expert(0.0, 4.0, (np.spacing(4.0) / 2e-6) ** 2),
               X)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        metric(one_expert(0.0, 4.0, 1.0), one_expert(0.0, 4.0, 1e-18), X)


@pytest.mark.parametrize("metric", [hellinger, total_variation])
def test_small_variances_alone_are_not_reported(metric):
    # Near mean 0 the numbers are as fine as the component: the distances are scale-free.
    X = np.zeros((2, 1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tiny = metric(one_expert(0.0, 0.0, 1e-36), one_expert(0.0, 1e-18, 4e-36), X)
        # A component outside the top-K selection is dropped, however narrow.
        unselected = MixingMeasure(col([0.0, 0.0]), [-1.0, 0.0], col([0.0, 0.0]), [4.0, 4.0],
                                   [1e-36, 0.05], gating="topk", top_k=1)
        assert metric(unselected, one_expert(0.0, 4.0, 0.05), X) == 0.0
    assert tiny == pytest.approx(metric(one_expert(0.0, 0.0, 1.0), one_expert(0.0, 1.0, 4.0),
                                        X), rel=1e-9)


# ----------------------------------------------------------------- design handling
def test_monte_carlo_design():
    true, fit = spec52_truth(), three_expert_fit()
    X = make_design(50, "uniform", random_state=3)
    assert hellinger(true, fit, n_mc=50, random_state=3) == pytest.approx(
        hellinger(true, fit, X), rel=1e-14)
    assert total_variation(true, fit, n_mc=50, random_state=3) == pytest.approx(
        total_variation(true, fit, X), rel=1e-14)
    grid = make_design(11, "grid")
    assert hellinger(true, fit, n_mc=11, design="grid") == pytest.approx(
        hellinger(true, fit, grid), rel=1e-14)


def test_accepts_fitted_estimators():
    true, fit = spec52_truth(), three_expert_fit()
    estimator = SimpleNamespace(mixing_measure_=fit)
    assert hellinger(estimator, true, GRID) == hellinger(fit, true, GRID)
    assert total_variation(true, estimator, GRID) == total_variation(true, fit, GRID)


def test_bad_input():
    true = spec52_truth()
    two_features = MixingMeasure(np.zeros((1, 2)), [0.0], np.zeros((1, 2)), [0.0], [1.0])
    with pytest.raises(ValueError, match=re.escape(
            "expected n_features=1 (g1's), got n_features=2 (g2's)")):
        hellinger(true, two_features, GRID)
    with pytest.raises(ValueError, match="Pass exactly one of X"):
        total_variation(true, true)
    with pytest.raises(ValueError, match="Pass exactly one of X"):
        total_variation(true, true, GRID, n_mc=10)
    with pytest.raises(ValueError, match="X must be a 2-D array"):
        hellinger(true, true, np.linspace(0, 1, 5))
    with pytest.raises(ValueError, match=re.escape("axis 1 is 2, expected 1")):
        hellinger(true, true, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="g2 must be a MixingMeasure or a fitted estimator"):
        hellinger(true, "model", GRID)
    with pytest.raises(ValueError, match="n_mc must be an integer"):
        hellinger(true, true, n_mc=0)
