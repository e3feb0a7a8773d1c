"""Starts that explore: every one of the n_init starts is a different partition."""

import re
import warnings

import numpy as np
import pytest
from numpy.testing import assert_array_equal

import gmoe
from gmoe._starts import draw_labels, standardised_data
from gmoe.exceptions import DegenerateExpertWarning


def _crossing_lines(n=600, seed=0):
    """Two crossing lines under a nearly flat gate: k-means on (x, y) cuts the cross."""
    truth = gmoe.MixingMeasure([[0.5], [0.0]], [0.0, 0.0], [[2.0], [-2.0]], [0.0, 0.0],
                               [0.09, 0.09])
    rng = np.random.default_rng(seed)
    X = rng.uniform(-1.0, 1.0, (n, 1))
    return X, gmoe.sample_moe(truth, X, random_state=rng)


def _data(X, y):
    ZT = np.vstack([X.T, np.ones(len(y))])
    return standardised_data(ZT, y)


def _same_partition(a, b):
    """Whether two labellings are the same partition (up to the names of the parts)."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def test_kmeans_starts_are_different_partitions():
    X, y = _crossing_lines()
    data = _data(X, y)
    w = np.ones(len(y))
    rng = np.random.default_rng(0)
    labels = [draw_labels("kmeans", i, data, w, 2, rng) for i in range(5)]
    distinct = sum(not any(_same_partition(a, b) for b in labels[:i])
                   for i, a in enumerate(labels))
    assert distinct == 5


def test_default_starts_leave_the_kmeans_trap():
    """Non-regression test for the issue "Fits that reach the maximum likelihood".

    The n_init k-means starts differed only by k-means' seed and found one partition, so
    on crossing lines every start ended at the same local optimum below the maximum that
    random partitions find.
    """
    X, y = _crossing_lines(seed=9)
    best = gmoe.GaussianMoERegressor(2, init_params="random", n_init=10,
                                     random_state=0).fit(X, y).lower_bound_
    # One start each: the plain k-means partition, the trap (several units below).
    trapped = [gmoe.GaussianMoERegressor(2, init_params="kmeans", n_init=1,
                                         random_state=s).fit(X, y).lower_bound_
               for s in range(4)]
    assert all(len(y) * (best - ll) > 100 for ll in trapped)
    est = gmoe.GaussianMoERegressor(2, random_state=0).fit(X, y)
    assert len(y) * (best - est.lower_bound_) < 0.01


def test_random_starts_are_different_partitions():
    X, y = _crossing_lines()
    data = _data(X, y)
    rng = np.random.default_rng(1)
    labels = [draw_labels("random", i, data, np.ones(len(y)), 3, rng) for i in range(5)]
    for i in range(5):
        for j in range(i):
            assert not _same_partition(labels[i], labels[j])


def test_first_kmeans_start_is_the_plain_kmeans():
    from sklearn.cluster import KMeans

    X, y = _crossing_lines(n=300)
    data = _data(X, y)
    rng = np.random.default_rng(2)
    labels = draw_labels("kmeans", 0, data, np.ones(300), 2, np.random.default_rng(2))
    seed = int(rng.integers(np.iinfo(np.int32).max))
    expected = KMeans(n_clusters=2, n_init=1, random_state=seed).fit(data.T).predict(data.T)
    assert _same_partition(labels, expected)


def test_rows_of_zero_weight_are_never_centres():
    X, y = _crossing_lines(n=200)
    data = _data(X, y)
    w = np.zeros(200)
    w[:3] = 1.0  # three usable rows, three experts: the centres are those rows
    labels = draw_labels("random", 0, data, w, 3, np.random.default_rng(3))
    assert_array_equal(np.sort(labels[:3]), [0, 1, 2])


@pytest.mark.parametrize("init_params", ["kmeans", "random", "short_em"])
def test_every_strategy_finds_the_crossing_lines_maximum(init_params):
    # The maximum that random partitions find; a k-means cut of the cross sits ~1 unit of
    # mean log-likelihood below it.
    X, y = _crossing_lines()
    best = gmoe.GaussianMoERegressor(2, init_params="random", n_init=10,
                                     random_state=0).fit(X, y).lower_bound_
    est = gmoe.GaussianMoERegressor(2, init_params=init_params, random_state=0).fit(X, y)
    assert len(y) * (best - est.lower_bound_) < 0.01


def test_short_em_continues_the_best_short_runs():
    X, y = _crossing_lines()
    est = gmoe.GaussianMoERegressor(2, init_params="short_em", n_init=3, random_state=4)
    est.fit(X, y)
    assert len(est.init_log_likelihoods_) == 3
    assert est.lower_bound_ == est.init_log_likelihoods_.max()
    again = gmoe.GaussianMoERegressor(2, init_params="short_em", n_init=3, random_state=4)
    assert again.fit(X, y).lower_bound_ == est.lower_bound_  # reproducible


def test_short_em_with_restart_drops_collapsing_short_runs():
    X, y = _crossing_lines(n=40)
    est = gmoe.GaussianMoERegressor(5, init_params="short_em", n_init=2, random_state=0,
                                    on_degenerate="restart", max_iter=50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, y)
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))


def test_short_em_with_restart_keeps_a_start_when_every_short_run_collapses():
    # 8 rows for 3 experts: every short run collapses. It crashed (no start to fall back
    # on); now the first short run's start is run and kept with a warning, as the other
    # kinds of start are.
    rng = np.random.default_rng(13)
    X = rng.uniform(-1.0, 1.0, size=(8, 1))
    y = X[:, 0] + rng.normal(0.0, 0.2, size=8)
    est = gmoe.GaussianMoERegressor(3, init_params="short_em", n_init=2, random_state=0,
                                    on_degenerate="restart")
    with pytest.warns(DegenerateExpertWarning, match="Every start had a collapsing"):
        est.fit(X, y)
    assert est.degenerate_experts_
    assert np.all(np.isfinite(est.mixing_measure_.to_vector()))


def test_bad_init_params_message_names_every_strategy():
    X, y = _crossing_lines(n=50)
    with pytest.raises(ValueError, match=re.escape(
            "init_params must be one of ['kmeans', 'random', 'short_em'], got "
            "init_params='pca'")):
        gmoe.GaussianMoERegressor(init_params="pca").fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateExpertWarning)
        with pytest.raises(ValueError, match="'random', 'kmeans', 'short_em' or a "
                                             "MixingMeasure"):
            gmoe.GaussianMoERegressor(init_params=3).fit(X, y)
