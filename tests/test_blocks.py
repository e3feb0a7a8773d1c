"""The EM's passes over blocks of rows (gmoe/_blocks.py) against numpy references.

Sizes span several blocks of two lengths, so that the sums over blocks, the per-thread
scratch arrays and the block bounds are all exercised.
"""

import tracemalloc
import warnings

import _reference as ref
import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import log_softmax

import gmoe
from gmoe._blocks import (
    ColumnBlocks,
    RowBlocks,
    block_bounds,
    block_rows,
    resolve_n_threads,
    weighted_gram_upper,
)
from gmoe._expert_major import Workspace
from gmoe.experts import (
    GAUSSIAN_LINEAR,
    expert_block_statistics,
    fit_experts_blocks,
)
from gmoe.gates import GateParams, make_gating
from gmoe.gates._linear import gate_block_sums, gate_objective, gate_statistics


def _n_rows(d, k):
    return 3 * block_rows(d, k) + block_rows(d, k) // 2 + 1  # four blocks, of two lengths


def _data(rng, n=None, d=3, k=4):
    n = _n_rows(d, k) if n is None else n
    X = rng.normal(size=(n, d))
    y = rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, size=n)
    resp = rng.dirichlet(np.ones(k), size=n)
    return X, y, w, resp


def _with_resp(X, y, w, resp, n_threads=1):
    """RowBlocks holding ``w * resp`` (written through the E-step's storage)."""
    rows = RowBlocks(X, y, w, resp.shape[1], n_threads)
    weighted = (resp * w[:, None]).T
    for start, stop in rows._bounds:
        rows._rw_block(start, stop)[...] = weighted[:, start:stop]
    return rows


# Two experts take their own path through the column softmax (one exp per row).
@pytest.mark.parametrize("n_experts", [2, 4])
def test_gate_statistics_match_the_textbook_formulas(n_experts, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y, w, resp = _data(rng, k=n_experts)
    k = resp.shape[1]
    theta = rng.normal(size=(k, X.shape[1] + 1))
    theta[-1] = 0.0
    free = np.arange(k - 1)
    Z = np.column_stack([X, np.ones(len(y))])
    q_ref, grad_ref, info_ref = ref.softmax_gate_terms(theta, Z, resp * w[:, None], free)
    rows = _with_resp(X, y, w, resp)
    q, grad, info = gate_statistics(rows, theta, free, True)
    # Sums of ~2e4 terms of size ~1 in different orders: 1e-11 relative is ample.
    assert q == pytest.approx(q_ref, rel=1e-11)
    assert_allclose(grad, grad_ref, rtol=1e-9, atol=1e-11 * np.abs(grad_ref).max())
    assert_allclose(info, info_ref, rtol=1e-9, atol=1e-11 * np.abs(info_ref).max())
    assert_array_equal(info, info.T)
    # Without the information the pass reads the rows as stored: the same Q and gradient.
    q2, grad2, none = gate_statistics(rows, theta, free, False)
    assert none is None
    assert q2 == pytest.approx(q, rel=1e-13)
    assert_allclose(grad2, grad, rtol=1e-11, atol=1e-13 * np.abs(grad).max())
    # Complete expert-major arrays walked in column blocks: the same sums.
    columns = ColumnBlocks(np.ascontiguousarray(Z.T), np.ascontiguousarray((resp * w[:, None]).T))
    q3, grad3, info3 = gate_statistics(columns, theta, free, True)
    assert q3 == pytest.approx(q, rel=1e-13)
    assert_allclose(info3, info, rtol=1e-12, atol=1e-14 * np.abs(info).max())
    # The objective alone (a Newton step's acceptance): the same Q.
    assert gate_objective(rows, theta) == pytest.approx(q_ref, rel=1e-11)
    assert gate_objective(columns, theta) == pytest.approx(q, rel=1e-13)


@pytest.mark.parametrize("n_experts", [2, 4])
def test_gate_objective_with_experts_held_out(n_experts, global_random_seed):
    # Top-K holds experts out of rows' softmax: their logits are -inf, their weights 0.
    rng = np.random.default_rng(global_random_seed)
    X, y, w, resp = _data(rng, k=n_experts)
    k = resp.shape[1]
    inactive = rng.uniform(size=resp.shape) < 0.3
    inactive[np.arange(len(y)), rng.integers(k, size=len(y))] = False  # one stays active
    rw = np.where(inactive, 0.0, resp * w[:, None])
    theta = rng.normal(size=(k, X.shape[1] + 1))
    Z = np.column_stack([X, np.ones(len(y))])
    logits = np.where(inactive, -np.inf, Z @ theta.T)
    log_gate = log_softmax(logits, axis=1)
    expected = np.sum(rw[~inactive] * log_gate[~inactive])
    columns = ColumnBlocks(np.ascontiguousarray(Z.T), np.ascontiguousarray(rw.T),
                           np.ascontiguousarray(inactive.T))
    assert gate_objective(columns, theta) == pytest.approx(expected, rel=1e-11)
    q, _, _ = gate_statistics(columns, theta, np.arange(k - 1), True)
    assert gate_objective(columns, theta) == pytest.approx(q, rel=1e-13)


@pytest.mark.parametrize("heights", [[1], [3], [6, 4], [1, 2, 3], [9]])
@pytest.mark.parametrize("n_cols", [2, 5])
def test_weighted_gram_upper_of_stacked_weights_is_each_arrays_gram(heights, n_cols,
                                                                  global_random_seed):
    # With 5 columns (15 products) the weight arrays are stacked into one BLAS product of
    # at least 8 rows (zero rows added), with 2 each has its own; either way each array's
    # Gram matrices must be its own (to rounding: BLAS may round a row differently with
    # another stack height). 10000 rows: with 5 columns, slices of 4096 rows and a short
    # last one.
    rng = np.random.default_rng(global_random_seed)
    n_rows = 10_000
    ZT = np.ascontiguousarray(rng.normal(size=(n_cols, n_rows)))
    weights = [rng.uniform(size=(h, n_rows)) for h in heights]
    upper = np.triu_indices(n_cols)
    workspace = Workspace()
    for _ in range(2):  # the second call reuses the workspace's (stale) buffers
        grams = weighted_gram_upper(weights, ZT, workspace)
        for w, gram in zip(weights, grams, strict=True):
            expected = np.einsum("ai,ui,vi->auv", w, ZT, ZT)[:, upper[0], upper[1]]
            # Sums of 10000 terms of size ~1 in different orders.
            assert_allclose(gram, expected, rtol=1e-12, atol=1e-12 * n_rows)
    single = weighted_gram_upper(weights[0], ZT, workspace)
    assert_allclose(single, grams[0], rtol=1e-13)
    # Columns from an offset, and weights that are a strided view (the kernel copies them).
    strided = np.asfortranarray(weights[0][:, :4000])
    offset_gram = weighted_gram_upper(strided, ZT, workspace, offset=6000)
    expected = np.einsum("ai,ui,vi->auv", strided, ZT[:, 6000:], ZT[:, 6000:])
    assert_allclose(offset_gram, expected[:, upper[0], upper[1]], rtol=1e-12,
                    atol=1e-12 * 4000)


@pytest.mark.parametrize(("n_features", "n_experts"), [(1, 2), (3, 3)])
def test_e_step_pass_matches_the_reference_and_its_statistics(n_features, n_experts,
                                                              global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y, w, _ = _data(rng, d=n_features, k=n_experts)
    k, d = n_experts, n_features
    gate = GateParams(rng.normal(size=(k, d)) * (np.arange(k) < k - 1)[:, None],
                      np.append(rng.normal(size=k - 1), 0.0))
    coef, intercept = rng.normal(size=(k, d)), rng.normal(size=k)
    var = rng.uniform(0.3, 2.0, size=k)
    family = make_gating("softmax")
    rows = RowBlocks(X, y, w, k)
    statistics = [GAUSSIAN_LINEAR.block_statistics(),
                  family.block_statistics(gate)]
    log_lik, (experts, gate_sums) = rows.e_step(family, gate, coef, intercept, var, statistics)
    log_gate = ref.log_gate(X, gate.coef, gate.intercept)
    resp_ref, log_lik_ref = ref.e_step(X, y, log_gate, coef, intercept, var)
    assert log_lik == pytest.approx(np.dot(w, log_lik_ref), rel=1e-12)
    assert_allclose(rows.weighted_resp().T, resp_ref * w[:, None], rtol=1e-12, atol=1e-300)
    # The statistics computed in the E-step's pass equal the M-step's own passes.
    assert_allclose(experts[0], rows.reduce(expert_block_statistics)[0], rtol=1e-13)
    assert_allclose(experts[2], rows.reduce(expert_block_statistics)[2], rtol=1e-13)
    theta = np.column_stack([gate.coef, gate.intercept])
    q, grad, info = gate_statistics(rows, theta, np.arange(k - 1), True)
    from gmoe.gates._linear import _assemble

    q_e, grad_e, info_e = _assemble(gate_sums, d + 1, k - 1)
    assert q_e == pytest.approx(q, rel=1e-12)
    assert_allclose(grad_e, grad, rtol=1e-10, atol=1e-12 * np.abs(grad).max())
    assert_allclose(info_e, info, rtol=1e-10, atol=1e-12 * np.abs(info).max())
    assert gate_block_sums is statistics[1][0]


@pytest.mark.parametrize("n_features", [1, 3])
def test_block_design_is_the_conditioned_design(n_features, global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y, w, resp = _data(rng, d=n_features, k=2)
    X = 1e3 + 50.0 * X
    rows = RowBlocks(X, y, w, 2)
    offset, scale = X.mean(axis=0), X.std(axis=0)
    rows.condition(offset, scale, 0.0, 1.0)
    expected = np.column_stack([(X - offset) * (1.0 / scale), np.ones(len(y))]).T
    for index, (start, stop) in enumerate(rows._bounds):
        block = rows._block(index, 0)
        assert_array_equal(block.ZT, expected[:, start:stop])  # the same two roundings


def test_a_column_constant_within_each_block_is_not_called_constant(monkeypatch):
    # Sorted data with as many repeats as a block holds: each block sees one value. The
    # column's range is the blocks' least minimum to greatest maximum, not a sum of ranges.
    import gmoe._blocks as blocks_module

    monkeypatch.setattr(blocks_module, "block_rows", lambda n_features, n_experts: 50)
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(size=200), np.repeat([0.0, 1.0, 2.0, 3.0], 50)])
    rows = RowBlocks(X, rng.normal(size=200), np.ones(200), 2)
    assert len(rows._bounds) == 4
    assert rows.design_gram()[1] == []
    X[:, 1] = 5.0
    assert RowBlocks(X, rng.normal(size=200), np.ones(200), 2).design_gram()[1] == [1]


def test_experts_m_step_is_weighted_least_squares(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y, w, resp = _data(rng)
    rows = _with_resp(X, y, w, resp)
    coef, intercept, var, weight_sums = fit_experts_blocks(rows, var_floor=1e-12)
    Z = np.column_stack([X, np.ones(len(y))])
    for j in range(resp.shape[1]):
        sw = np.sqrt(w * resp[:, j])
        theta = np.linalg.lstsq(Z * sw[:, None], y * sw, rcond=None)[0]
        assert_allclose(coef[j], theta[:-1], rtol=1e-9, atol=1e-12)
        assert intercept[j] == pytest.approx(theta[-1], rel=1e-9, abs=1e-12)
        resid = y - Z @ theta
        assert var[j] == pytest.approx(np.sum(w * resp[:, j] * resid ** 2)
                                       / np.sum(w * resp[:, j]), rel=1e-10)
    assert_allclose(weight_sums, (w[:, None] * resp).sum(axis=0), rtol=1e-12)


def test_rank_deficient_expert_takes_the_minimum_norm_solution(global_random_seed):
    # Two identical columns: the Gram matrix is singular, the blocks' QR factors give
    # numpy's minimum-norm least squares on the whole design.
    rng = np.random.default_rng(global_random_seed)
    X, y, w, resp = _data(rng, d=2)
    X[:, 1] = X[:, 0]
    rows = _with_resp(X, y, w, resp)
    coef, intercept, _, _ = fit_experts_blocks(rows, var_floor=1e-12)
    Z = np.column_stack([X, np.ones(len(y))])
    for j in range(resp.shape[1]):
        sw = np.sqrt(w * resp[:, j])
        theta = np.linalg.lstsq(Z * sw[:, None], y * sw, rcond=None)[0]
        assert_allclose(np.append(coef[j], intercept[j]), theta, rtol=1e-8, atol=1e-10)
        assert coef[j, 0] == pytest.approx(coef[j, 1], rel=1e-10)


def test_column_sums_and_nearest_centres(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y, w, _ = _data(rng)
    rows = RowBlocks(X, y, w, 3)
    data = np.column_stack([X, y])
    mean, std = rows.column_moments()
    assert_allclose(mean, data.mean(axis=0), rtol=1e-12, atol=1e-15)
    assert_allclose(std, data.std(axis=0), rtol=1e-12)
    centres = rng.normal(size=(3, data.shape[1]))
    labels = rows.nearest_centre(mean, std, centres)
    standardised = (data - mean) / std
    dist = ((standardised[:, None, :] - centres[None]) ** 2).sum(axis=2)
    assert_array_equal(labels, np.argmin(dist, axis=1))


@pytest.mark.parametrize("gating, n_features", [("softmax", 3), ("softmax", 4),
                                               ("temperature", 2), ("topk", 1),
                                               ("activation", 1)])
def test_fits_are_bit_identical_on_one_and_two_threads(gating, n_features):
    rng = np.random.default_rng(0)
    truth = gmoe.MixingMeasure(rng.normal(size=(2, n_features)) * [[3.0], [0.0]], [-1.0, 0.0],
                               rng.normal(size=(2, n_features)), [1.0, -1.0], [0.05, 0.05])
    X = gmoe.make_design(_n_rows(n_features, 2), "uniform", n_features=n_features,
                         random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    fits = []
    for n_threads in (1, 2):
        est = gmoe.GaussianMoERegressor(2, gating=gating, top_k=1, n_init=1, max_iter=15,
                                        random_state=0, n_threads=n_threads)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fits.append(est.fit(X, y))
    one, two = fits
    assert_array_equal(one.mixing_measure_.to_vector(), two.mixing_measure_.to_vector())
    assert_array_equal(one.lower_bounds_, two.lower_bounds_)


def test_n_threads_is_validated_and_respects_thread_limits():
    from threadpoolctl import threadpool_limits

    assert resolve_n_threads(3) == 3
    assert resolve_n_threads(-1) >= 1
    with threadpool_limits(limits=1):
        assert resolve_n_threads(None) == 1
    for bad in (0, 1.5, "2", True):
        with pytest.raises(ValueError, match="n_threads must be None or a nonzero integer"):
            resolve_n_threads(bad)
    X = np.random.default_rng(0).normal(size=(50, 1))
    with pytest.raises(ValueError, match="n_threads"):
        gmoe.GaussianMoERegressor(n_threads=0).fit(X, X[:, 0])


def test_fit_memory_is_bounded_by_the_data():
    # Traced allocations of one fit (numpy reports its buffers to tracemalloc): within
    # the design plus two (n, k) arrays and the per-block scratch arrays.
    rng = np.random.default_rng(0)
    n, d, k = 60_000, 10, 4
    X = rng.normal(size=(n, d))
    y = X[:, 0] + rng.normal(size=n)
    est = gmoe.GaussianMoERegressor(k, n_init=1, max_iter=3, random_state=0, n_threads=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X[:2000], y[:2000])  # compile outside the traced region
        tracemalloc.start()
        est.fit(X, y)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    # The (n, k) responsibilities and the copy a SQUAREM cycle keeps of them, labels and a
    # few n-vectors, plus ~6 MB of block scratch arrays and ~2 MB for the stopping rule's
    # chunks; a fit holding a centred or transposed copy of X would exceed 0.5 X.nbytes.
    assert peak < 0.5 * X.nbytes + 2 * n * k * 8 + 8e6, peak / 1e6


def test_log_softmax_of_blocks_is_the_reference(global_random_seed):
    rng = np.random.default_rng(global_random_seed)
    X, y, w, resp = _data(rng, d=2)
    k = resp.shape[1]
    theta = 3 * rng.normal(size=(k, 3))
    rows = _with_resp(X, y, w, resp)
    q, _, _ = gate_statistics(rows, theta, np.arange(k - 1), False)
    Z = np.column_stack([X, np.ones(len(y))])
    expected = np.sum(resp * w[:, None] * log_softmax(Z @ theta.T, axis=1))
    assert q == pytest.approx(expected, rel=1e-12)


def test_prediction_methods_in_chunks_equal_row_by_row_evaluation():
    from gmoe._blocks import CHUNK_ROWS

    rng = np.random.default_rng(0)
    truth = gmoe.MixingMeasure([[2.0, -1.0], [0.0, 0.0]], [0.5, 0.0], [[1.0, 2.0], [-1.0, 0.5]],
                               [0.3, -0.2], [0.2, 0.4])
    small = gmoe.make_design(500, "uniform", n_features=2, random_state=0)
    est = gmoe.GaussianMoERegressor(2, n_init=1, max_iter=5, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(small, gmoe.sample_moe(truth, small, random_state=1))
    n = CHUNK_ROWS + 1000  # two chunks, the second short
    X = rng.normal(size=(n, 2))
    y = gmoe.sample_moe(truth, X, random_state=2)
    halves = [slice(0, n // 2), slice(n // 2, n)]  # each within one chunk
    for method, args in [("predict", (X,)), ("predict_proba", (X,)),
                         ("score_samples", (X, y)), ("predict_responsibilities", (X, y))]:
        whole = getattr(est, method)(*args)
        parts = np.concatenate([getattr(est, method)(*(a[h] for a in args)) for h in halves])
        assert_allclose(whole, parts, rtol=1e-14, atol=1e-300, err_msg=method)
    mixture = est.predict_distribution(X)
    assert_allclose(mixture.mean, est.predict(X), rtol=1e-12)
    assert est.log_likelihood(X, y) == pytest.approx(np.sum(est.score_samples(X, y)),
                                                     rel=1e-14)


def test_predict_memory_is_bounded_by_the_output():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(2000, 10))
    est = gmoe.GaussianMoERegressor(4, n_init=1, max_iter=2, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        est.fit(X, X[:, 0] + rng.normal(size=2000))
    X = rng.normal(size=(300_000, 10))
    est.predict(X[:10])
    tracemalloc.start()
    est.predict(X)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # The output (2.4 MB) and one chunk's temporaries (a 16384-row transposed design is
    # 1.4 MB); whole-array temporaries would be several times X's 24 MB.
    assert peak < 0.5 * X.nbytes, peak / 1e6


def test_importing_gmoe_compiles_no_kernel_and_imports_no_clustering_or_model_selection():
    # Kernels compile (or load from numba's cache) on their first call, and only then;
    # scikit-learn's clustering (~0.15 s to import) waits for a k-means start, its model
    # selection (~0.1 s) for a cross-validated criterion.
    import subprocess
    import sys

    code = ("import sys\n"
            "import gmoe\n"
            "from gmoe import _kernels\n"
            "print(sum(len(getattr(_kernels, k).signatures) for k in _kernels.__all__),\n"
            "      'sklearn.cluster' in sys.modules, 'sklearn.model_selection' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.split() == ["0", "False", "False"]


def test_block_bounds_split_the_rows_evenly_into_an_even_number_of_blocks():
    assert block_bounds(0, 8192) == []
    assert block_bounds(5, 8192) == [(0, 5)]
    assert block_bounds(10_000, 8192) == [(0, 10_000)]  # a quarter longer: one block
    assert block_bounds(10_241, 8192) == [(0, 5120), (5120, 10_241)]
    for n_rows in [10_241, 18_432, 24_575, 24_576, 100_000, 1_000_003]:
        bounds = block_bounds(n_rows, 8192)
        starts, stops = zip(*bounds, strict=True)
        assert starts[0] == 0 and stops[-1] == n_rows and starts[1:] == stops[:-1]
        lengths = np.diff([0, *stops])
        assert len(bounds) % 2 == 0
        assert lengths.max() - lengths.min() <= 1
        assert 0.6 * 8192 <= lengths.min() and lengths.max() <= 1.5 * 8192
