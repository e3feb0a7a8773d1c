"""The EM's passes over the data, block by block of rows, on one or several threads.

Every pass of EM is a sum over the rows: of the log-likelihood, of the experts' weighted
Gram matrices, of the gate objective, its gradient and its information. A pass here walks
the rows in blocks (:func:`block_rows`: 8192 rows for ten features and four experts), so
that a block's temporaries stay in the core's cache, computes each block's partial sums,
and adds them up **in block order**. The block size depends on the data's shape, never on
the number of threads, and each block's partial sums are a fixed function of its rows, so
a fit is bit for bit the same on one thread or many.

A block function takes a :class:`Block` (the block's transposed design, targets, sample
weights and weighted responsibilities, and a scratch :class:`Workspace` of the thread
running it) and returns a partial sum: an array, a float, None, or a tuple of these.

:class:`RowBlocks` holds in-memory data as the user gave it: each block's design is
centred and scaled (the fit's conditioning) as it is built, so no whole-data copy of ``X``
exists. :class:`ColumnBlocks` walks arrays that are already expert-major and complete.
"""

import functools
import itertools
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from . import _kernels
from ._expert_major import Workspace, e_step_columns

__all__ = ["BLOCK_ROWS", "CHUNK_ROWS", "Block", "ColumnBlocks", "RowBlocks", "add_partials",
           "block_bounds", "block_rows", "evaluate_in_chunks", "resolve_n_threads",
           "weighted_gram_upper"]

#: Rows per block of the usual shapes (see :func:`block_rows`).
BLOCK_ROWS = 8192


def inverse_scale(scale):
    """``1 / scale``: every pass computes the design as ``(x - offset) * (1 / scale)``.

    Multiplying is a third faster than dividing in the compiled block pass, and every path
    through the data (blocks, chunks, the conditioning's own transform) uses this one
    reciprocal, so that they give the same numbers bit for bit.
    """
    return 1.0 / np.asarray(scale, dtype=np.float64)


def block_bounds(n_rows, rows):
    """``(start, stop)`` of each block: about ``rows`` long, an even number of them.

    Up to a quarter block more than ``rows`` is one block (10000 rows are one block of
    10000, not two); more rows are split into the even number of blocks nearest to
    ``n_rows / rows``, so that two threads share them equally (three blocks on two threads
    took as long as four), each 0.6 to 1.5 times ``rows`` long, their lengths differing by
    at most one. The bounds depend on the rows alone, never on the thread count: sums in
    block order are the same for any.
    """
    if n_rows <= 0:
        return []
    blocks = n_rows / rows
    n_blocks = 1 if blocks < 1.25 else max(2, 2 * round(blocks / 2))
    edges = [n_rows * b // n_blocks for b in range(n_blocks + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def block_rows(n_features, n_experts):
    """Rows per block for data of this shape (never dependent on the thread count).

    A block's design (``n_features + 1`` rows) and its (``n_experts``, rows) arrays should
    fit in a core's cache; narrower data take longer blocks, so that the fixed cost of a
    block (a few dozen calls from Python) stays small next to its arithmetic.

    Parameters
    ----------
    n_features, n_experts : int

    Returns
    -------
    int
    """
    width = n_features + 1 + 2 * n_experts
    return BLOCK_ROWS if width >= 16 else 2 * BLOCK_ROWS if width >= 8 else 4 * BLOCK_ROWS


# Bytes of pair products formed at once: ~512 kB stays within a core's L2 cache (1024 rows
# of the 66 products of d = 10; longer slices for fewer features).
_PRODUCT_BYTES = 1 << 19
# Fewest rows of the weights' BLAS product. OpenBLAS runs a product of fewer than 8 rows
# (these shapes: ~1024 long, ~66 wide) one caller thread at a time, so that the
# block-parallel passes did not scale; from 8 rows on two threads run side by side
# (numpy's OpenBLAS; numba's np.dot calls SciPy's, which the thread limits hold too).
_MIN_GEMM_ROWS = 8
# Stacked (and padded) only from this many products (4 features): below, the products are
# a small part of a pass, and the copies and zero rows would cost more than they save.
_STACK_MIN_PAIRS = 15

#: Rows per chunk of the prediction methods: their (rows, k) temporaries stay a few MB.
CHUNK_ROWS = 16384


def evaluate_in_chunks(function, arrays, chunk_rows=CHUNK_ROWS):
    """``function(*arrays)`` computed on chunks of rows, into preallocated outputs.

    Parameters
    ----------
    function : callable
        Maps row chunks of ``arrays`` to an array whose first axis is the rows, or a
        tuple of such arrays.
    arrays : sequence of ndarray
        Arrays with the same number of rows.
    chunk_rows : int, default=CHUNK_ROWS

    Returns
    -------
    ndarray or tuple of ndarray
        What ``function(*arrays)`` returns, without its temporaries for every row at once.
    """
    n_rows = arrays[0].shape[0]
    if n_rows <= chunk_rows:
        return function(*arrays)
    outputs = None
    for start in range(0, n_rows, chunk_rows):
        stop = min(start + chunk_rows, n_rows)
        parts = function(*(a[start:stop] for a in arrays))
        several = isinstance(parts, tuple)
        parts = parts if several else (parts,)
        if outputs is None:
            outputs = tuple(np.empty((n_rows, *p.shape[1:]), dtype=p.dtype) for p in parts)
        for out, part in zip(outputs, parts, strict=True):
            out[start:stop] = part
    return outputs if several else outputs[0]


def is_dask_array(X):
    """Whether ``X`` is a Dask array (without importing Dask: none exists unless it was)."""
    module = sys.modules.get("dask.array")
    return module is not None and isinstance(X, module.Array)


def resolve_n_threads(n_threads):
    """The number of threads a fit uses.

    Parameters
    ----------
    n_threads : int or None
        A positive count; a negative one counts back from the number of usable cores
        (``-1`` is all of them); None is all usable cores, capped by the thread limit of
        the BLAS and OpenMP libraries (so ``threadpoolctl.threadpool_limits``,
        ``OMP_NUM_THREADS`` and joblib's worker limits are respected).

    Returns
    -------
    int
    """
    if n_threads is not None and (isinstance(n_threads, bool)
                                  or not isinstance(n_threads, (int, np.integer))
                                  or n_threads == 0):
        raise ValueError("n_threads must be None or a nonzero integer (negative counts back "
                         f"from the number of cores), got n_threads={n_threads!r}.")
    cores = _usable_cores()
    if n_threads is None:
        return max(1, min(cores, _library_thread_limit(cores)))
    if n_threads < 0:
        return max(1, cores + 1 + int(n_threads))
    return int(n_threads)


def _usable_cores():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover (not Linux)
        return os.cpu_count() or 1


_CONTROLLER = None


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


def _library_thread_limit(default):
    """The smallest thread count the loaded BLAS and OpenMP libraries are set to."""
    counts = [lib.num_threads for lib in _controller().lib_controllers
              if lib.user_api in ("blas", "openmp")]
    return min(counts) if counts else default


def add_partials(total, part):
    """``total + part`` for partial sums: arrays, floats, None, or tuples of these.

    ``total`` may be updated in place (it must be a sum this module made, not an input).
    """
    if total is None:
        return None
    if isinstance(total, tuple):
        return tuple(add_partials(a, b) for a, b in zip(total, part, strict=True))
    if isinstance(total, np.ndarray):
        total += part
        return total
    return total + part


def _copy_partial(part):
    if isinstance(part, tuple):
        return tuple(_copy_partial(p) for p in part)
    if isinstance(part, np.ndarray):
        return part.copy()
    return part


def sum_in_order(parts):
    """The sum of a list of partial sums, added in list order."""
    total = _copy_partial(parts[0])
    for part in parts[1:]:
        total = add_partials(total, part)
    return total


def weighted_gram_upper(weights, ZT, workspace, offset=0):
    """``sum_i weights_ai z_i z_i^T`` for every row ``a`` of ``weights``: upper triangles.

    The products ``z_u z_v`` are formed a slice of rows at a time (cache-sized) and
    weighted by BLAS, one product per slice, in one compiled call
    (:func:`gmoe._kernels.weighted_gram_into`): all weight arrays stacked into one matrix of
    at least :data:`_MIN_GEMM_ROWS` rows (zero rows added) when there are at least
    :data:`_STACK_MIN_PAIRS` products (a single array that tall is used as it is), else one
    call per weight array.

    Parameters
    ----------
    weights : ndarray of shape (m, n_rows), or a list of such arrays
        Several arrays share the products.
    ZT : ndarray of shape (n_cols, n_samples), C-contiguous
        ``z_i`` is its column ``offset + i``.
    workspace : Workspace
    offset : int, default=0

    Returns
    -------
    ndarray of shape (m, n_cols * (n_cols + 1) // 2), or a list of them
        Row ``a`` holds the upper triangle of the ``a``-th Gram matrix, in the order of
        ``np.triu_indices(n_cols)``.
    """
    several = isinstance(weights, list)
    weights = weights if several else [weights]
    n_cols, n_rows = ZT.shape[0], weights[0].shape[1]
    n_pairs = n_cols * (n_cols + 1) // 2
    # A power of two from 1024 rows (the slices depend on the data's shape only), and no
    # longer than the rows.
    slice_rows = max(1, min(1 << max(10, (_PRODUCT_BYTES // (8 * n_pairs)).bit_length() - 1),
                            n_rows))
    heights = [w.shape[0] for w in weights]
    products = workspace.get(f"pair_products_{n_pairs}_{slice_rows}", (n_pairs * slice_rows,))
    arrays = tuple(np.ascontiguousarray(w, dtype=np.float64) for w in weights)
    stack = n_pairs >= _STACK_MIN_PAIRS and (len(weights) > 1 or heights[0] < _MIN_GEMM_ROWS)
    # The kernel stacks a group's arrays slice by slice, zero rows added up to its height.
    groups = ([(arrays, max(sum(heights), _MIN_GEMM_ROWS))] if stack
              else [((w,), h) for w, h in zip(arrays, heights, strict=True)])
    totals = []
    for group, h in groups:
        total = np.empty((h, n_pairs))
        _kernels.weighted_gram_into(group, h, ZT, offset, slice_rows,
                                    workspace.get(f"gram_slice_{h}_{slice_rows}",
                                                  (h * slice_rows,)),
                                    products, workspace.get(f"gram_part_{h}", (h, n_pairs)),
                                    total)
        totals.append(total)
    if stack:
        total, totals, row = totals[0], [], 0
        for h in heights:
            totals.append(total[row:row + h])
            row += h
    return totals if several else totals[0]


@functools.lru_cache(maxsize=32)
def _upper_indices(n_cols):
    return np.triu_indices(n_cols)


def unpack_upper(upper, n_cols):
    """Symmetric matrices from :func:`weighted_gram_upper`'s rows: shape (m, n_cols, n_cols)."""
    rows, cols = _upper_indices(n_cols)
    out = np.empty((upper.shape[0], n_cols, n_cols))
    out[:, rows, cols] = upper
    out[:, cols, rows] = upper
    return out


class Block:
    """One block of rows, as a block function sees it.

    Attributes
    ----------
    ZT : ndarray of shape (n_features + 1, n_rows), C-contiguous
        The block's design with intercept, transposed (in the fit's internal units).
    y, w : ndarray of shape (n_rows,)
        Targets and sample weights (None where the source has none).
    rw : ndarray of shape (n_experts, n_rows), C-contiguous
        Sample weight times responsibility (written by the E-step).
    inactive : ndarray of bool of shape (n_experts, n_rows) or None
        Experts held out of each row's gate, when the caller holds them fixed.
    workspace : Workspace
        Scratch arrays of the thread running the block (valid during the call only).
    gate_probs : ndarray of shape (n_experts, n_rows) or None
        During an E-step's statistics (:func:`e_step_block`): the gate probabilities at
        the E-step's gate, when the family computed them with the log-gate; else None.
    """

    __slots__ = ("ZT", "y", "w", "rw", "inactive", "workspace", "gate_probs")

    def __init__(self, ZT, y, w, rw, inactive, workspace):
        self.ZT = ZT
        self.y = y
        self.w = w
        self.rw = rw
        self.inactive = inactive
        self.workspace = workspace
        self.gate_probs = None


class _Threads:
    """Runs ``fn(item, worker)`` for every item on ``n_threads`` threads (this one included).

    Items are handed out in order as threads become free; results are returned in item
    order. The pool's threads live as long as this object (one fit).
    """

    def __init__(self, n_threads):
        self.n_threads = n_threads
        self._executor = None

    def map(self, fn, n_items):
        if self.n_threads == 1 or n_items == 1:
            return [fn(item, 0) for item in range(n_items)]
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.n_threads - 1,
                                                thread_name_prefix="gmoe-block")
        results = [None] * n_items
        items = itertools.count()
        failed = []

        def work(worker):
            while not failed:
                # next() on an itertools.count is atomic under the GIL.
                item = next(items)
                if item >= n_items:
                    return
                try:
                    results[item] = fn(item, worker)
                except BaseException:
                    failed.append(True)
                    raise

        helpers = [self._executor.submit(work, worker)
                   for worker in range(1, min(self.n_threads, n_items))]
        try:
            work(0)
        finally:
            for helper in helpers:
                helper.result()
        return results

    def close(self):
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None


class _BlockSource:
    """What every block source offers: sizes, and block functions mapped and summed."""

    n_samples = n_features = n_experts = None

    def map_blocks(self, fn, *args):
        """``[fn(block, *args) for every block]``, in block order."""
        raise NotImplementedError

    def reduce(self, fn, *args):
        """The sum of ``fn(block, *args)`` over the blocks, added in block order."""
        return sum_in_order(self.map_blocks(fn, *args))

    # ---------------------------------------------------------------- conditioning
    def weighted_moments(self):
        """Weighted mean and standard deviation of every column of ``[X, y]`` (two passes).

        Returns
        -------
        mean, std : ndarray of shape (n_features + 1,)
        """
        total = self.total_weight
        mean = self.reduce(_weighted_column_sums_block, None) / total
        var = self.reduce(_weighted_column_sums_block, mean) / total
        return mean, np.sqrt(np.maximum(var, 0.0))

    def design_gram(self):
        """The weighted Gram matrix of the design with intercept, and its constant columns.

        Returns
        -------
        gram : ndarray of shape (n_features + 1, n_features + 1)
            ``sum_i w_i z_i z_i^T / sum_i w_i``.
        constant : list of int
            Columns of ``X`` constant over the rows of positive weight.
        """
        parts = self.map_blocks(_gram_and_range_block)
        upper = sum_in_order([part[0] for part in parts])
        # Not a sum of the blocks' ranges: that calls a column constant if each block is.
        low = np.min([part[1] for part in parts], axis=0)
        high = np.max([part[2] for part in parts], axis=0)
        gram = unpack_upper(upper[None], self.n_features + 1)[0] / self.total_weight
        return gram, [j for j in range(self.n_features) if not high[j] > low[j]]

    def column_moments(self):
        """Mean and standard deviation of every column of ``[Z, y]`` (unweighted; two passes).

        Returns
        -------
        mean, std : ndarray of shape (n_features + 1,)
        """
        total = self.reduce(_column_sums_block, None)
        mean = total / self.n_samples
        return mean, np.sqrt(self.reduce(_column_sums_block, mean) / self.n_samples)


class RowBlocks(_BlockSource):
    """In-memory data, in blocks of :func:`block_rows` rows, and the EM's responsibilities.

    ``X`` is read in place (copied only if it is not C-contiguous); each block's design is
    ``(x - offset) * (1 / scale)`` (the fit's conditioning, :meth:`condition`). The weighted
    responsibilities are stored block by block, each block a C-contiguous (n_experts,
    n_rows) array, so that no pass copies them.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), C-contiguous float64
    y : ndarray of shape (n_samples,), contiguous float64
    sample_weight : ndarray of shape (n_samples,), contiguous float64
    n_experts : int
    n_threads : int, default=1
        Threads the passes run on (see :func:`resolve_n_threads`).
    storage : ndarray of shape (n_experts * n_samples,), optional
        Weighted responsibilities stored by another instance on the same rows
        (:attr:`storage`); fresh by default.
    """

    def __init__(self, X, y, sample_weight, n_experts, n_threads=1, storage=None):
        # The block kernel reads X as C-contiguous (no copy when it already is).
        self.X = np.ascontiguousarray(X, dtype=np.float64)
        self.y = y
        self.sample_weight = sample_weight
        self.n_samples, self.n_features = X.shape
        self.n_experts = n_experts
        self.offset = np.zeros(self.n_features)
        self.scale = np.ones(self.n_features)
        self.inverse_scale = np.ones(self.n_features)
        self._bounds = block_bounds(self.n_samples, block_rows(self.n_features, n_experts))
        self._rw, self._spare = storage, None
        self._threads = _Threads(max(1, min(int(n_threads), len(self._bounds))))
        # One workspace per thread and block length (the lengths differ by at most one).
        self._workspaces = {}

    def condition(self, offset, scale, y_offset, y_scale):
        """From now on the blocks are ``z = (x - offset) * (1 / scale)`` and ``y`` standardised.

        The targets become ``(y - y_offset) / y_scale``.

        Parameters
        ----------
        offset, scale : ndarray of shape (n_features,)
        y_offset, y_scale : float
        """
        self.offset = np.ascontiguousarray(offset, dtype=np.float64)
        self.scale = np.ascontiguousarray(scale, dtype=np.float64)
        self.inverse_scale = inverse_scale(self.scale)
        self.y = (self.y - y_offset) / y_scale

    @property
    def total_weight(self):
        """``sum_i w_i``."""
        return float(np.sum(self.sample_weight))

    def target_variance(self):
        """The weighted variance of the targets (1 when it is 0)."""
        w = self.sample_weight
        total = np.sum(w)
        mean = np.dot(w, self.y) / total
        variance = np.dot(w, (self.y - mean) ** 2) / total
        return float(variance) if variance > 0 else 1.0

    def save_responsibilities(self):
        """Keep a copy of the stored responsibilities (the next E-step overwrites them).

        Returns
        -------
        object
            What :meth:`restore_responsibilities` takes.
        """
        storage = self.storage
        if self._spare is None:
            self._spare = np.empty_like(storage)
        np.copyto(self._spare, storage)
        return None

    def restore_responsibilities(self, saved):
        """The responsibilities :meth:`save_responsibilities` kept, stored again (swapped in)."""
        self._spare, self._rw = self._rw, self._spare

    @property
    def n_threads(self):
        """Threads the passes run on."""
        return self._threads.n_threads

    @property
    def storage(self):
        """The weighted responsibilities as stored: block after block, each expert-major."""
        if self._rw is None:
            self._rw = np.empty(self.n_experts * self.n_samples)
        return self._rw

    def close(self):
        """Stop the pass threads (the object stays usable: they restart when needed)."""
        self._threads.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _rw_block(self, start, stop):
        k = self.n_experts
        return self.storage[k * start:k * stop].reshape(k, stop - start)

    def _block(self, index, worker):
        start, stop = self._bounds[index]
        key = (worker, stop - start)
        workspace = self._workspaces.get(key)
        if workspace is None:
            workspace = self._workspaces[key] = Workspace()
        ZT = workspace.get("block_design", (self.n_features + 1, stop - start))
        _kernels.design_block_into(self.X, start, self.offset, self.inverse_scale, ZT)
        return Block(ZT, self.y[start:stop], self.sample_weight[start:stop],
                     self._rw_block(start, stop), None, workspace)

    def map_blocks(self, fn, *args):  # noqa: D102 (inherited)
        return self._threads.map(lambda index, worker: fn(self._block(index, worker), *args),
                                 len(self._bounds))

    def row_chunks(self, rows):
        """The design (internal units), targets and weights, ``rows`` rows at a time.

        Parameters
        ----------
        rows : int

        Yields
        ------
        X : ndarray of shape (n_rows, n_features)
        y, sample_weight : ndarray of shape (n_rows,)
        """
        for start in range(0, self.n_samples, rows):
            stop = min(start + rows, self.n_samples)
            yield ((self.X[start:stop] - self.offset) * self.inverse_scale, self.y[start:stop],
                   self.sample_weight[start:stop])

    @property
    def n_positive(self):
        """Number of rows with a positive sample weight."""
        return int(np.count_nonzero(self.sample_weight))

    def take_positive(self, ranks, mean, scale):
        """Standardised rows of ``[Z, y]`` by rank among the rows of positive weight.

        Parameters
        ----------
        ranks : ndarray of int
            ``r`` is the ``r``-th row (from 0) of positive weight; any order.
        mean, scale : ndarray of shape (n_features + 1,)
            The rows are ``([z, y] - mean) / scale``.

        Returns
        -------
        data : ndarray of shape (n_features + 1, len(ranks))
            One column per row.
        weights : ndarray of shape (len(ranks),)
        """
        indices = np.flatnonzero(self.sample_weight > 0)[ranks]
        data = np.vstack([((self.X[indices] - self.offset) * self.inverse_scale).T,
                          self.y[indices]])
        data -= mean[:, None]
        data /= scale[:, None]
        return data, self.sample_weight[indices]

    def nearest_centre(self, mean, scale, centres, weights=None):
        """Index of the nearest centre of every standardised row of ``[Z, y]`` (first on ties).

        Parameters
        ----------
        mean, scale : ndarray of shape (n_features + 1,)
            The rows are ``([z, y] - mean) / scale``.
        centres : ndarray of shape (n_centres, n_features + 1)
        weights : ndarray of shape (n_features + 1,), optional
            Coordinate weights applied to the standardised rows first.

        Returns
        -------
        ndarray of int of shape (n_samples,)
        """
        return np.concatenate(self.map_blocks(_nearest_centre_block, mean, scale, centres,
                                              weights))

    # ----------------------------------------------------------- responsibilities
    def e_step(self, family, gate, expert_coef, expert_intercept, expert_var, statistics=()):
        """Store the weighted responsibilities of the given parameters, and sum statistics.

        Parameters
        ----------
        family : GatingFamily
        gate : GateParams
        expert_coef : ndarray of shape (n_experts, n_features)
        expert_intercept, expert_var : ndarray of shape (n_experts,)
        statistics : sequence of (function, args)
            Sums of the new responsibilities that the next M-step needs, computed in the
            same pass (see :func:`e_step_block`).

        Returns
        -------
        log_lik : float
            ``sum_i w_i log p(y_i | x_i)``.
        statistics : tuple of tuple
            The sums of each of ``statistics``.
        """
        return self.reduce(e_step_block, family, gate, expert_coef, expert_intercept,
                           expert_var, tuple(statistics))

    def set_label_responsibilities(self, labels, smoothing):
        """Store smoothed one-hot responsibilities of ``labels``, times the sample weights.

        Parameters
        ----------
        labels : ndarray of int of shape (n_samples,)
        smoothing : float
            Each row's responsibility is ``smoothing / k`` everywhere, plus
            ``1 - smoothing`` at its label.
        """
        k = self.n_experts
        for start, stop in self._bounds:
            rw = self._rw_block(start, stop)
            rw.fill(smoothing / k)
            rw[labels[start:stop], np.arange(stop - start)] += 1.0 - smoothing
            rw *= self.sample_weight[start:stop]

    def weighted_resp(self):
        """The weighted responsibilities as one (n_experts, n_samples) array (a copy)."""
        out = np.empty((self.n_experts, self.n_samples))
        for start, stop in self._bounds:
            out[:, start:stop] = self._rw_block(start, stop)
        return out


def _weighted_column_sums_block(block, mean):
    """Weighted column sums of ``[Z, y]``, or of ``([Z, y] - mean)^2`` given ``mean``."""
    data = np.vstack([block.ZT[:-1], block.y])
    # Values beyond about 1e154 overflow here: the caller's conditioning reports them.
    with np.errstate(over="ignore", invalid="ignore"):
        if mean is not None:
            data -= mean[:, None]
            data *= data
        data *= block.w
        return data.sum(axis=1)


def _gram_and_range_block(block):
    """Upper triangle of ``sum_i w_i z_i z_i^T`` and each column's range (positive weights)."""
    upper = weighted_gram_upper(block.w[None, :], block.ZT, block.workspace)[0]
    used = block.ZT[:-1, block.w > 0]
    if used.shape[1] == 0:
        return upper, np.full(used.shape[0], np.inf), np.full(used.shape[0], -np.inf)
    return upper, used.min(axis=1), used.max(axis=1)


def _column_sums_block(block, mean):
    """Column sums of ``[Z, y]`` on one block, or of ``([Z, y] - mean)^2`` given ``mean``."""
    data = np.vstack([block.ZT[:-1], block.y])
    if mean is not None:
        data -= mean[:, None]
        data *= data
    return data.sum(axis=1)


def _nearest_centre_block(block, mean, scale, centres, weights):
    data = np.vstack([block.ZT[:-1], block.y])
    data -= mean[:, None]
    data /= scale[:, None]
    if weights is not None:
        data *= weights[:, None]
    dist = np.stack([((data - centre[:, None]) ** 2).sum(axis=0) for centre in centres])
    return np.argmin(dist, axis=0)


def e_step_block(block, family, gate, expert_coef, expert_intercept, expert_var,
                 statistics=()):
    """E-step on one block, with the next M-step's sums of its new responsibilities.

    Writes ``block.rw``.

    Parameters
    ----------
    block : Block
    family : GatingFamily
    gate : GateParams
    expert_coef : ndarray of shape (n_experts, n_features)
    expert_intercept, expert_var : ndarray of shape (n_experts,)
    statistics : tuple of (function, args)
        ``function(block, log_gate, *args)``, called once ``block.rw`` holds the new
        responsibilities (``log_gate`` is the gate's at ``gate``, ``block.gate_probs``
        its probabilities when the family computed them), returns ``(sums,
        gram_weights)``: a tuple of partial sums and an (m, n_rows) array whose weighted
        Gram matrices (:func:`weighted_gram_upper`) are appended to them. All the Gram
        matrices of a block share one set of pair products.

    Returns
    -------
    log_lik : float
    statistics : tuple of tuple
    """
    workspace = block.workspace
    log_gate, gate_probs = family.gate_columns(block.ZT, gate, workspace=workspace)
    # The E-step's own arrays are other workspace names: the gate probabilities survive it.
    resp, log_lik = e_step_columns(block.ZT, block.y, log_gate, expert_coef, expert_intercept,
                                   expert_var, workspace)
    _kernels.weight_responsibilities_into(resp, block.w, block.rw)
    log_lik = _kernels.lane_dot(block.w, log_lik)
    if not statistics:
        return log_lik, ()
    block.gate_probs = gate_probs
    sums, gram_weights = zip(*(function(block, log_gate, *args)
                               for function, args in statistics), strict=True)
    grams = weighted_gram_upper(list(gram_weights), block.ZT, workspace)
    return log_lik, tuple((*s, g) for s, g in zip(sums, grams, strict=True))


class ColumnBlocks(_BlockSource):
    """Complete expert-major arrays, walked in blocks of :func:`block_rows` columns.

    Each block's columns are copied into contiguous scratch arrays; one thread.

    Parameters
    ----------
    ZT : ndarray of shape (n_features + 1, n_samples)
    weighted_resp : ndarray of shape (n_experts, n_samples)
    inactive : ndarray of bool of shape (n_experts, n_samples), optional
    y, sample_weight : ndarray of shape (n_samples,), optional
    """

    def __init__(self, ZT, weighted_resp, inactive=None, y=None, sample_weight=None):
        self.ZT = ZT
        self.rw = weighted_resp
        self.inactive = inactive
        self.y = y
        self.sample_weight = sample_weight
        self.n_samples = ZT.shape[1]
        self.n_features = ZT.shape[0] - 1
        self.n_experts = weighted_resp.shape[0]
        # One workspace per block length (the lengths differ by at most one).
        self._workspaces = {}

    def map_blocks(self, fn, *args):  # noqa: D102 (inherited)
        results = []
        rows = block_rows(self.n_features, self.n_experts)
        bounds = block_bounds(self.n_samples, rows)
        for start, stop in bounds:
            workspace = self._workspaces.setdefault(stop - start, Workspace())
            if len(bounds) == 1:
                ZT, rw, inactive = self.ZT, self.rw, self.inactive
            else:
                ZT = _copy_columns(self.ZT, start, stop, workspace, "block_design")
                rw = _copy_columns(self.rw, start, stop, workspace, "block_rw")
                inactive = None if self.inactive is None else _copy_columns(
                    self.inactive, start, stop, workspace, "block_inactive")
            y = None if self.y is None else self.y[start:stop]
            w = None if self.sample_weight is None else self.sample_weight[start:stop]
            results.append(fn(Block(np.ascontiguousarray(ZT), y, w, np.ascontiguousarray(rw),
                                    inactive, workspace), *args))
        return results


def _copy_columns(array, start, stop, workspace, name):
    out = workspace.get(name, (array.shape[0], stop - start), array.dtype)
    np.copyto(out, array[:, start:stop])
    return out
