"""Fitting on Dask arrays: the passes run on a LocalCluster and give the in-memory fit."""

import subprocess
import sys
import warnings

import numpy as np
import pytest
from numpy.testing import assert_allclose

import gmoe

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

TRUTH = gmoe.MixingMeasure([[2.0, -1.0], [0.0, 0.0]], [0.5, 0.0], [[1.0, 2.0], [-1.0, 0.5]],
                           [1.3, -1.2], [0.2, 0.4])


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        yield client


def _data(n=12_000, seed=0):
    X = gmoe.make_design(n, "uniform", n_features=2, random_state=seed)
    return X, gmoe.sample_moe(TRUTH, X, random_state=seed + 1)


@pytest.mark.parametrize("weighted", [False, True, "zeros"],
                         ids=["unweighted", "weighted", "rows of weight 0"])
def test_dask_fit_equals_the_in_memory_fit(client, weighted):
    X, y = _data()
    w = np.random.default_rng(3).uniform(0.5, 2.0, len(y)) if weighted else None
    if weighted == "zeros":
        # Rows of weight 0 are left out, whatever their values (these would overflow),
        # and so is the third chunk, all of whose rows weigh 0.
        w[[10, 4999, 11000]] = 0.0
        w[9000:12000] = 0.0
        X[10, 0], y[4999], X[11000, 1] = 1e300, -1e300, 1e300
    options = dict(n_init=1, tol=1e-10, max_iter=300, random_state=0)
    memory = gmoe.GaussianMoERegressor(2, **options).fit(X, y, sample_weight=w)
    # Chunks of different sizes, none a multiple of the in-memory block.
    chunks = (5000, 4000, 3000)
    dX, dy = da.from_array(X, chunks=(chunks, 2)), da.from_array(y, chunks=(chunks,))
    dw = None if w is None else da.from_array(w, chunks=(chunks,))
    on_dask = gmoe.GaussianMoERegressor(2, **options).fit(dX, dy, sample_weight=dw)
    assert on_dask.converged_ and memory.converged_
    # Sums over different blocks (chunk boundaries): round-off apart, then EM to tol 1e-10.
    assert on_dask.lower_bound_ == pytest.approx(memory.lower_bound_, rel=1e-10)
    assert_allclose(on_dask.mixing_measure_.to_vector(), memory.mixing_measure_.to_vector(),
                    rtol=1e-6, atol=1e-6)  # parameters: ~sqrt(tol) from the optimum
    assert on_dask.n_features_in_ == 2
    # Predictions take NumPy arrays as usual.
    assert_allclose(on_dask.predict(X[:5]), memory.predict(X[:5]), rtol=1e-5)


def test_dask_y_may_be_numpy_and_x_column_chunked(client):
    X, y = _data(n=3000)
    options = dict(n_init=1, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = gmoe.GaussianMoERegressor(2, **options).fit(X, y)
        on_dask = gmoe.GaussianMoERegressor(2, **options).fit(
            da.from_array(X, chunks=(1000, 1)), y)
    assert on_dask.lower_bound_ == pytest.approx(memory.lower_bound_, rel=1e-12)


@pytest.mark.parametrize("make, match", [
    (lambda X, y: (da.from_array(X[:, 0], chunks=500), y), "X must be a 2-D Dask array"),
    (lambda X, y: (da.from_array(X, chunks=(500, 2)), y[:-1]), "y must be 1-D with 3000 rows"),
    (lambda X, y: (da.from_array(np.where(X > 0.5, np.nan, X), chunks=(500, 2)), y),
     "must be finite"),
    # Scales float64 cannot square: refused as on NumPy arrays, not fitted silently wrong.
    (lambda X, y: (da.from_array(X * 1e-300, chunks=(500, 2)), y),
     "column 0 of X varies by only"),
    (lambda X, y: (da.from_array(X, chunks=(500, 2)), y * 1e-300), "y varies by only"),
    (lambda X, y: (da.from_array(X * 1e155, chunks=(500, 2)), y),
     "column 0 of X, column 1 of X hold values whose squares overflow"),
])
def test_dask_bad_input_raises(client, make, match):
    X, y = _data(n=3000)
    with pytest.raises(ValueError, match=match):
        gmoe.GaussianMoERegressor(2).fit(*make(X, y))


def test_dask_rejects_a_family_that_needs_every_row(client):
    X, y = _data(n=3000)
    with pytest.raises(ValueError, match="gating='topk' needs every row in memory"):
        gmoe.GaussianMoERegressor(2, gating="topk", top_k=1).fit(
            da.from_array(X, chunks=(1000, 2)), da.from_array(y, chunks=1000))


def test_in_memory_fits_never_import_dask():
    code = ("import sys, numpy as np, gmoe\n"
            "X = np.random.default_rng(0).normal(size=(300, 1))\n"
            "est = gmoe.GaussianMoERegressor(2, n_init=1, max_iter=3).fit(X, X[:, 0])\n"
            "est.predict(X)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('dask', 'distributed')))")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_dask_fit_without_a_cluster_uses_the_local_scheduler():
    import dask

    X, y = _data(n=3000)
    options = dict(n_init=1, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        memory = gmoe.GaussianMoERegressor(2, **options).fit(X, y)
        with dask.config.set(scheduler="threads"):
            local = gmoe.GaussianMoERegressor(2, **options).fit(
                da.from_array(X, chunks=(1000, 2)), da.from_array(y, chunks=1000))
    assert local.lower_bound_ == pytest.approx(memory.lower_bound_, rel=1e-12)
