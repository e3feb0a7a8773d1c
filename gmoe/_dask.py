"""EM on Dask arrays: every pass runs on the chunks where they live, and only sums move.

:class:`DaskRowBlocks` is a block source of :mod:`gmoe._blocks` for data chunked by rows
on a Dask cluster (or Dask's local scheduler). A pass sends the same block function as in
memory to every chunk, where an in-memory :class:`~gmoe._blocks.RowBlocks` walks the
chunk's rows in blocks (centred and scaled as the fit's conditioning says); each chunk's
partial sums come back and are added in chunk order. The weighted responsibilities of each
chunk stay on the cluster (persisted) from the E-step to the M-step's passes, and so do
the starts' labels. The scheduling is Dask's own: ``dask.compute`` and ``dask.persist`` on
``dask.delayed`` tasks, so a ``distributed.Client`` in scope is used.

The stopping rule's derivatives read the chunks one at a time on the client
(:meth:`DaskRowBlocks.row_chunks`).

This module imports Dask; only a fit on Dask arrays imports it.
"""

import dask
import dask.array as da
import numpy as np

from ._blocks import RowBlocks, _BlockSource, sum_in_order
from ._validation import rows_with_weight

__all__ = ["DaskRowBlocks"]


def _chunk_rows(X, y, w, storage, n_experts, transform):
    """An in-memory block source on one chunk's rows of positive weight (one thread).

    Dask runs the chunks in parallel; rows of weight 0 are left out, as in memory.
    """
    X = np.ascontiguousarray(X, dtype=np.float64)
    y = np.ascontiguousarray(y, dtype=np.float64)
    w = np.ones(y.shape[0]) if w is None else np.ascontiguousarray(w, dtype=np.float64)
    rows = RowBlocks(*rows_with_weight(X, y, w), n_experts, 1, storage=storage)
    rows.condition(*transform)
    return rows


def _chunk_reduce(X, y, w, storage, n_experts, transform, fn, args):
    return _chunk_rows(X, y, w, storage, n_experts, transform).reduce(fn, *args)


def _chunk_map(X, y, w, storage, n_experts, transform, fn, args):
    return _chunk_rows(X, y, w, storage, n_experts, transform).map_blocks(fn, *args)


def _chunk_e_step(X, y, w, n_experts, transform, family, gate, coef, intercept, var,
                  statistics):
    rows = _chunk_rows(X, y, w, None, n_experts, transform)
    sums = rows.e_step(family, gate, coef, intercept, var, statistics)
    return rows.storage, sums


def _chunk_labels(X, y, w, n_experts, transform, mean, scale, centres, weights):
    return _chunk_rows(X, y, w, None, n_experts, transform).nearest_centre(mean, scale,
                                                                           centres, weights)


def _chunk_label_responsibilities(X, y, w, labels, n_experts, transform, smoothing):
    rows = _chunk_rows(X, y, w, None, n_experts, transform)
    rows.set_label_responsibilities(labels, smoothing)
    return rows.storage


def _chunk_take_positive(X, y, w, transform, ranks, mean, scale):
    return _chunk_rows(X, y, w, None, 1, transform).take_positive(ranks, mean, scale)


def _chunk_summary(y, w):
    """Partial sums of the fit's first checks on one chunk."""
    w = np.ones(y.shape[0]) if w is None else w
    y = y[w > 0]
    if y.size == 0:
        return np.array([0.0, 0.0, np.inf, -np.inf])
    return np.array([y.size, w.sum(), y.min(), y.max()])


def _chunk_target_sums(X, y, w, transform, mean):
    """``(sum w, sum w y)`` of the internal targets, or ``sum w (y - mean)^2`` given ``mean``."""
    rows = _chunk_rows(X, y, w, None, 1, transform)
    if mean is None:
        return np.array([np.sum(rows.sample_weight), np.dot(rows.sample_weight, rows.y)])
    return np.dot(rows.sample_weight, (rows.y - mean) ** 2)


class DaskRowBlocks(_BlockSource):
    """Rows of Dask arrays chunked by rows, with the EM's responsibilities on the cluster.

    Parameters
    ----------
    X : dask.array.Array of shape (n_samples, n_features)
        Chunked by rows (column chunks are merged).
    y : dask.array.Array or array-like of shape (n_samples,)
    sample_weight : dask.array.Array, array-like or None
        Non-negative weights; None weighs every row 1.
    n_experts : int
    family : GatingFamily
        Must fit on blocks (``family.fits_on_blocks``).
    """

    def __init__(self, X, y, sample_weight, n_experts, family):
        if not family.fits_on_blocks:
            raise ValueError(
                f"gating={family.name!r} needs every row in memory at once: fit it on NumPy "
                "arrays. On Dask arrays, use a gating family that fits block by block "
                "('softmax' or 'temperature').")
        if X.ndim != 2:
            raise ValueError(f"X must be a 2-D Dask array, got {X.ndim} dimensions.")
        X = X.astype(np.float64).rechunk({1: -1})
        row_chunks = X.chunks[0]
        self.n_samples, self.n_features = (int(n) for n in X.shape)
        if any(np.isnan(c) for c in row_chunks):
            raise ValueError("X must have known chunk sizes; call X.compute_chunk_sizes().")
        y = self._as_column(y, "y", row_chunks)
        w = None if sample_weight is None else self._as_column(sample_weight, "sample_weight",
                                                               row_chunks)
        self.n_experts = n_experts
        # Identity until the fit's conditioning is known (condition()).
        self._transform = (np.zeros(self.n_features), np.ones(self.n_features), 0.0, 1.0)
        # EM passes over the data dozens of times: the chunks are computed once and held on
        # the cluster for the fit (as its responsibilities are).
        X, y = dask.persist(X, y)
        w = None if w is None else dask.persist(w)[0]
        self._persisted = (X, y, w)  # their chunks live while this object holds them
        self._X = list(X.to_delayed().ravel())
        self._y = list(y.to_delayed().ravel())
        self._w = [None] * len(self._X) if w is None else list(w.to_delayed().ravel())
        self._storage = [None] * len(self._X)
        self._check_values(X, y, w)

    def _as_column(self, values, name, row_chunks):
        if not isinstance(values, da.Array):
            values = np.asarray(values, dtype=np.float64)
        if values.ndim != 1 or values.shape[0] != self.n_samples:
            raise ValueError(f"{name} must be 1-D with {self.n_samples} rows (X's), got shape "
                             f"{values.shape}.")
        if not isinstance(values, da.Array):
            return da.from_array(values, chunks=(row_chunks,))
        return values.astype(np.float64).rechunk((row_chunks,))

    def _check_values(self, X, y, w):
        finite_x, finite_y, finite_w, negative_w = dask.compute(
            da.isfinite(X).all(), da.isfinite(y).all(),
            True if w is None else da.isfinite(w).all(), False if w is None else (w < 0).any())
        if not (finite_x and finite_y):
            raise ValueError("Input X and y must be finite (no NaN or infinity).")
        if not finite_w or negative_w:
            raise ValueError("sample_weight must be an array of finite non-negative weights "
                             "with a positive sum.")
        parts = dask.compute(*(dask.delayed(_chunk_summary)(y, w)
                               for y, w in zip(self._y, self._w, strict=True)))
        self._positive_per_chunk = [int(p[0]) for p in parts]
        self.n_positive = sum(self._positive_per_chunk)
        # A chunk of weight 0 throughout has no row in the fit (rows of weight 0 are left
        # out): its passes would be empty, so the chunk is left out with them.
        keep = [i for i, count in enumerate(self._positive_per_chunk) if count > 0]
        if len(keep) < len(parts):
            self._X, self._y, self._w, self._storage, self._positive_per_chunk = (
                [column[i] for i in keep] for column in (
                    self._X, self._y, self._w, self._storage, self._positive_per_chunk))
        if self.n_positive == 0:
            raise ValueError("sample_weight must be an array of finite non-negative weights "
                             "with a positive sum, got all zeros.")
        self.total_weight = float(sum_in_order([p[1] for p in parts]))
        self.y_range = float(max(p[3] for p in parts) - min(p[2] for p in parts))

    def condition(self, offset, scale, y_offset, y_scale):
        """:meth:`gmoe._blocks.RowBlocks.condition`, applied as each chunk is read."""
        self._transform = (np.asarray(offset, dtype=np.float64),
                           np.asarray(scale, dtype=np.float64), float(y_offset), float(y_scale))

    def target_variance(self):
        """The weighted variance of the internal targets (1 when it is 0)."""
        def summed(mean):
            return sum_in_order(dask.compute(*(
                dask.delayed(_chunk_target_sums)(X, y, w, self._transform, mean)
                for X, y, w, _ in self._chunks())))

        total, weighted = summed(None)
        variance = float(summed(weighted / total)) / total
        return variance if variance > 0 else 1.0

    # ------------------------------------------------------------------ passes
    def _chunks(self):
        return zip(self._X, self._y, self._w, self._storage, strict=True)

    def map_blocks(self, fn, *args):  # noqa: D102 (inherited)
        tasks = [dask.delayed(_chunk_map)(X, y, w, s, self.n_experts, self._transform, fn,
                                          args) for X, y, w, s in self._chunks()]
        return [part for chunk in dask.compute(*tasks) for part in chunk]

    def reduce(self, fn, *args):  # noqa: D102 (inherited)
        tasks = [dask.delayed(_chunk_reduce)(X, y, w, s, self.n_experts, self._transform, fn,
                                             args) for X, y, w, s in self._chunks()]
        return sum_in_order(dask.compute(*tasks))

    def row_chunks(self, rows):
        """:meth:`gmoe._blocks.RowBlocks.row_chunks`: the chunks brought over one at a time."""
        for X, y, w, _ in self._chunks():
            X, y, w = dask.compute(X, y, w)
            yield from _chunk_rows(X, y, w, None, 1, self._transform).row_chunks(rows)

    def e_step(self, family, gate, expert_coef, expert_intercept, expert_var, statistics=()):
        """:meth:`gmoe._blocks.RowBlocks.e_step`, chunk by chunk on the cluster."""
        tasks = [dask.delayed(_chunk_e_step, nout=2)(
            X, y, w, self.n_experts, self._transform, family, gate, expert_coef,
            expert_intercept, expert_var, tuple(statistics)) for X, y, w, _ in self._chunks()]
        storage = [task[0] for task in tasks]
        sums = [task[1] for task in tasks]
        # Each chunk's responsibilities stay on the cluster; only the sums come back.
        persisted = dask.persist(*storage, *sums)
        self._storage = list(persisted[:len(storage)])
        return sum_in_order(dask.compute(*persisted[len(storage):]))

    def save_responsibilities(self):
        """The current responsibilities (an E-step replaces them, never overwrites)."""
        return list(self._storage)

    def restore_responsibilities(self, saved):
        """Make ``saved`` the current responsibilities again."""
        self._storage = list(saved)

    # ------------------------------------------------------------------ starts
    def take_positive(self, ranks, mean, scale):  # noqa: D102 (as RowBlocks)
        ranks = np.asarray(ranks)
        offsets = np.cumsum([0, *self._positive_per_chunk])
        chunk_of = np.searchsorted(offsets, ranks, side="right") - 1
        data = np.empty((self.n_features + 1, len(ranks)))
        weights = np.empty(len(ranks))
        wanted = np.unique(chunk_of)
        parts = dask.compute(*(dask.delayed(_chunk_take_positive)(
            self._X[c], self._y[c], self._w[c], self._transform, ranks[chunk_of == c]
            - offsets[c], mean, scale) for c in wanted))
        for c, (chunk_data, chunk_weights) in zip(wanted, parts, strict=True):
            data[:, chunk_of == c] = chunk_data
            weights[chunk_of == c] = chunk_weights
        return data, weights

    def nearest_centre(self, mean, scale, centres, weights=None):
        """Nearest-centre labels, left on the cluster (one persisted task per chunk)."""
        return list(dask.persist(*(dask.delayed(_chunk_labels)(
            X, y, w, self.n_experts, self._transform, mean, scale, centres, weights)
            for X, y, w, _ in self._chunks())))

    def set_label_responsibilities(self, labels, smoothing):  # noqa: D102 (as RowBlocks)
        self._storage = list(dask.persist(*(dask.delayed(_chunk_label_responsibilities)(
            X, y, w, chunk_labels, self.n_experts, self._transform, smoothing)
            for (X, y, w, _), chunk_labels in zip(self._chunks(), labels, strict=True))))

    def close(self):
        """Release what the fit holds on the cluster: the data and the responsibilities."""
        self._storage = [None] * len(self._X)
        self._X = self._y = self._w = self._persisted = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
