"""Initial partitions of the rows, one per start, each start a different one.

EM finds a local maximum, so the starts must explore. A k-means on the standardised
``(x, y)`` with another seed is not another start: on data with any structure it finds the
same partition whatever its seed. Every start here draws its own partition:

``'random'`` (the estimator's default)
    A random partition: every row goes to the nearest of ``n_experts`` random rows in the
    standardised ``(x, y)`` (a random Voronoi partition, so that each part is a region and
    the experts fitted to it differ).
``'kmeans'``
    k-means on ``(x, y)`` standardised, on a random subsample of at most 5000 rows; from the
    second start on, on a random half of the rows (at most 5000) with every coordinate
    weighted by ``exp(N(0, 0.5^2))``, so that the clusters, not only the seeds, differ.
``'short_em'``
    Many short runs from the two kinds above in turn (Biernacki, Celeux & Govaert 2003):
    the starts that lead the log-likelihood after a few EM steps are continued to
    convergence (see :class:`~gmoe.GaussianMoERegressor`).

Each partition is turned into a start by the estimator (smoothed responsibilities, the
experts' least squares, the family's first gate).
"""

import numpy as np
from threadpoolctl import ThreadpoolController

__all__ = ["STRATEGIES", "draw_labels", "standardised_data"]

STRATEGIES = ("random", "kmeans", "short_em")
# k-means starts cluster at most this many rows (then label every row by its nearest centre).
_KMEANS_MAX_ROWS = 5000
# Spread of the log of the random coordinate weights of the perturbed k-means starts.
_WEIGHT_SPREAD = 0.5

_THREADPOOLS = None


def _single_threaded_openmp():
    """Context holding OpenMP (k-means' threads) to one thread.

    A start clusters a few thousand rows; OpenMP threads buy nothing there, and on a busy
    machine their spinning made one k-means take 0.4 s instead of 0.01 s.
    """
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="openmp")


def standardised_data(ZT, y):
    """``(x, y)`` standardised, one row per variable: shape (n_features + 1, n_samples).

    Parameters
    ----------
    ZT : ndarray of shape (n_features + 1, n_samples)
        The transposed design with its intercept row last.
    y : ndarray of shape (n_samples,)
    """
    data = np.vstack([ZT[:-1], y])
    spread = data.std(axis=1)
    data -= data.mean(axis=1)[:, None]
    data /= np.where(spread > 0, spread, 1.0)[:, None]
    return data


class _StandardisedArray:
    """:func:`standardised_data` as :func:`draw_labels` reads it (rows, nearest centres)."""

    def __init__(self, data, sample_weight):
        self.data = data
        self.sample_weight = sample_weight
        self.positive = np.flatnonzero(sample_weight > 0)
        self.n_dims = data.shape[0]
        self.n_positive = len(self.positive)

    def take_positive(self, ranks, weights=None):
        rows = self.positive[ranks]
        data = self.data[:, rows]
        return (data if weights is None else data * weights[:, None]), self.sample_weight[rows]

    def nearest(self, centres, weights=None):
        data = self.data if weights is None else self.data * weights[:, None]
        # Nearest centre (the first on ties, as KMeans.predict).
        dist = np.stack([((data - centre[:, None]) ** 2).sum(axis=0) for centre in centres])
        return np.argmin(dist, axis=0)


def draw_labels(kind, index, data, sample_weight, n_experts, rng):
    """The partition of start number ``index`` (from 0), one label per row.

    Parameters
    ----------
    kind : {'kmeans', 'random'}
    index : int
        The start's number: start 0 of ``'kmeans'`` is the plain k-means.
    data : ndarray of shape (n_features + 1, n_samples), or a standardised row source
        :func:`standardised_data`, or an object with ``n_dims``, ``n_positive``,
        ``take_positive(ranks, weights)`` and ``nearest(centres, weights)``
        (``gmoe._passes.StandardisedRows``, which reads the rows block by block).
    sample_weight : ndarray of shape (n_samples,) or None
        Rows of weight 0 never serve as centres or cluster rows (None with a row source,
        which knows its weights).
    n_experts : int
    rng : numpy.random.Generator
        Draws the subsample, the weights, the centres and k-means' seed.

    Returns
    -------
    ndarray of int of shape (n_samples,)
        Or what the row source's ``nearest`` returns.
    """
    data = _StandardisedArray(data, sample_weight) if isinstance(data, np.ndarray) else data
    # Rows are drawn by rank among those of positive weight.
    n_positive = data.n_positive
    if kind == "kmeans":
        seed = int(rng.integers(np.iinfo(np.int32).max))
        if index == 0:
            weights = None
            size = min(n_positive, _KMEANS_MAX_ROWS)
        else:
            weights = np.exp(rng.normal(0.0, _WEIGHT_SPREAD, size=data.n_dims))
            size = min(max(n_positive // 2, n_experts), _KMEANS_MAX_ROWS)
        ranks = np.arange(n_positive)
        if size < n_positive:
            ranks = np.sort(rng.choice(n_positive, size=size, replace=False))
        points, point_weights = data.take_positive(ranks, weights)
        # Imported here: scikit-learn's clustering takes ~0.15 s to import, and only the
        # k-means starts need it.
        from sklearn.cluster import KMeans

        with _single_threaded_openmp():
            km = KMeans(n_clusters=n_experts, n_init=1, random_state=seed).fit(
                points.T, sample_weight=point_weights)
        return data.nearest(km.cluster_centers_, weights)
    if kind == "random":
        points, _ = data.take_positive(rng.choice(n_positive, size=min(n_experts, n_positive),
                                                  replace=False))
        return data.nearest(points.T)
    raise ValueError(f"kind must be 'kmeans' or 'random', got kind={kind!r}.")
