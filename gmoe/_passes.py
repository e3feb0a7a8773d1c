"""The passes of one fit over its data: the E-step, the M-step and the starts' partitions.

The EM loop (:mod:`gmoe._em`) and the starts (:mod:`gmoe._starts`) see the data only
through one of these two objects:

:class:`BlockPasses`
    For gating families that fit on blocks of rows (:attr:`GatingFamily.fits_on_blocks`:
    softmax, temperature). The data stay as the user gave them (:class:`gmoe._blocks.RowBlocks`
    centres and scales each block as it reads it); the fit holds one (n_experts, n_samples)
    array of weighted responsibilities and a few n-vectors. The E-step's pass also sums what
    the next M-step needs (the experts' Gram matrices and right-hand sides, the gate's
    ``Q``, gradient and information), block by block in a fixed order, so the result is
    the same on any number of threads.
:class:`ArrayPasses`
    For the other families, whose M-step needs every row at once: the complete transposed
    design and expert-major arrays in a shared workspace (:mod:`gmoe._expert_major`).

Both offer the same methods. An E-step returns a *state*, what the next M-step reads
besides the stored responsibilities; the M-step returns a *hint* for the next E-step (the
log-gate at the new gate, when it computed it).
"""

import numpy as np

from ._blocks import RowBlocks
from ._conditioning import Conditioning, check_spread_representable, finite_moments
from ._em import _Params
from ._expert_major import Workspace, e_step_columns, transposed_design
from ._starts import standardised_data
from .experts import GAUSSIAN_LINEAR, ExpertParams, compute_var_floor
from .gates import GateData

__all__ = ["ArrayPasses", "BlockPasses", "StandardisedRows", "prepare"]


class ArrayPasses:
    """The passes on complete expert-major arrays (families that need every row at once).

    Parameters
    ----------
    family : GatingFamily
    Z : ndarray of shape (n_samples, n_features)
        The design in the fit's internal units.
    y, sample_weight : ndarray of shape (n_samples,)
    learn_temperature : bool
    gate_steps : int
        Newton steps of the gate per M-step.
    """

    def __init__(self, family, Z, y, sample_weight, n_experts, learn_temperature, gate_steps):
        self.family = family
        self.n_experts = n_experts
        self.ZT = transposed_design(Z)
        self.y = y
        self.sample_weight = sample_weight
        self.total_weight = float(sample_weight.sum())
        self.learn_temperature = learn_temperature
        self.gate_steps = gate_steps
        # The passes' sample-sized arrays, reused from start to start and pass to pass.
        self.workspace = Workspace()
        self._saved = {}

    def close(self):
        """Nothing to release."""

    def rows(self):
        """``(X, y, sample_weight)`` for the stopping rule (internal units)."""
        return self.ZT[:-1].T, self.y, self.sample_weight

    def standardised(self):
        """The standardised ``(x, y)`` the starts' partitions are drawn from."""
        return standardised_data(self.ZT, self.y)

    def start_from_labels(self, labels, var_floor, temperature, smoothing):
        """The start of a partition: smoothed responsibilities, experts, the first gate."""
        k, n_samples = self.n_experts, self.ZT.shape[1]
        # Smoothed one-hot responsibilities of the labels, expert-major, times the weights.
        weighted_resp = np.full((k, n_samples), smoothing / k)
        weighted_resp[labels, np.arange(n_samples)] += 1.0 - smoothing
        weighted_resp *= self.sample_weight
        experts, _ = GAUSSIAN_LINEAR.m_step(self.ZT, self.y, weighted_resp, var_floor,
                                            self.workspace)
        data = GateData(self.ZT, self.sample_weight, weighted_resp,
                        learn_temperature=self.learn_temperature, workspace=self.workspace)
        return _Params(self.family.initial_gate(data, temperature), experts.coef,
                       experts.intercept, experts.var)

    def e_step(self, params, hint=None):
        """Responsibilities and the weighted log-likelihood; ``hint`` is the log-gate."""
        log_gate = hint
        if log_gate is None:
            log_gate = self.family.log_gate_columns(self.ZT, params.gate,
                                                    workspace=self.workspace)
        resp, log_lik = e_step_columns(self.ZT, self.y, log_gate, params.expert_coef,
                                       params.expert_intercept, params.expert_var,
                                       self.workspace)
        return (resp, log_gate), float(np.dot(self.sample_weight, log_lik))

    def weight_sums(self, state):
        """Each expert's total weight ``sum_i w_i r_ij`` in an E-step's state."""
        resp, _ = state
        return resp @ self.sample_weight

    def m_step(self, params, state, var_floor):
        """The experts' and the gate's M-step; returns ``(params, weight_sums, hint)``."""
        resp, log_gate = state
        workspace = self.workspace
        weighted_resp = np.multiply(resp, self.sample_weight,
                                    out=workspace.get("weighted_resp", resp.shape))
        experts, weight_sums = GAUSSIAN_LINEAR.m_step(self.ZT, self.y, weighted_resp,
                                                      var_floor, workspace)
        params = params._replace(expert_coef=experts.coef, expert_intercept=experts.intercept,
                                 expert_var=experts.var)
        ZT, y = self.ZT, self.y

        def expert_log_density():
            return GAUSSIAN_LINEAR.log_density_columns(
                ZT, y, ExpertParams(params.expert_coef, params.expert_intercept,
                                    params.expert_var))

        data = GateData(ZT, self.sample_weight, weighted_resp, expert_log_density,
                        learn_temperature=self.learn_temperature, max_iter=self.gate_steps,
                        workspace=workspace, log_gate=log_gate)
        gate, log_gate = self.family.m_step(data, params.gate)
        return params._replace(gate=gate), weight_sums, log_gate

    def save(self, state):
        """Copies of a state (the next passes reuse the workspace's arrays)."""
        copies = []
        for name, array in zip(("resp", "log_gate"), state, strict=True):
            if array is None:
                copies.append(None)
                continue
            buffer = self._saved.get(name)
            if buffer is None or buffer.shape != array.shape:
                buffer = self._saved[name] = np.empty_like(array)
            if buffer is not array:
                np.copyto(buffer, array)
            copies.append(buffer)
        return tuple(copies)

    def restore(self, saved):
        """The state :meth:`save` returned, current again."""
        return saved


class BlockPasses:
    """The passes block by block (:mod:`gmoe._blocks`), for families that fit on blocks.

    Parameters
    ----------
    family : GatingFamily
        ``family.fits_on_blocks`` is True.
    rows : RowBlocks
        The data, conditioned (:meth:`gmoe._blocks.RowBlocks.condition`).
    learn_temperature : bool
    gate_steps : int
        Newton steps of the gate per M-step.
    """

    def __init__(self, family, rows, learn_temperature, gate_steps):
        self.family = family
        self.blocks = rows
        self.total_weight = rows.total_weight
        self.learn_temperature = learn_temperature
        self.gate_steps = gate_steps

    def close(self):
        """Stop the pass threads."""
        self.blocks.close()

    def rows(self):
        """The row source for the stopping rule (it sums block by block, or chunk by chunk)."""
        return self.blocks, None, None

    def standardised(self):
        """The standardised ``(x, y)``, read block by block (see :class:`StandardisedRows`)."""
        return StandardisedRows(self.blocks)

    def start_from_labels(self, labels, var_floor, temperature, smoothing):
        """The start of a partition: smoothed responsibilities, experts, the first gate."""
        self.blocks.set_label_responsibilities(labels, smoothing)
        experts, _ = GAUSSIAN_LINEAR.m_step_blocks(self.blocks, var_floor)
        data = GateData(None, None, None, blocks=self.blocks)
        return _Params(self.family.initial_gate(data, temperature), experts.coef,
                       experts.intercept, experts.var)

    def e_step(self, params, hint=None):
        """Store the responsibilities; the next M-step's sums and the log-likelihood."""
        statistics = [GAUSSIAN_LINEAR.block_statistics()]
        gate_statistics = self.family.block_statistics(params.gate)
        if gate_statistics is not None:
            statistics.append(gate_statistics)
        log_lik, sums = self.blocks.e_step(self.family, params.gate, params.expert_coef,
                                           params.expert_intercept, params.expert_var,
                                           statistics)
        return (sums[0], sums[1] if gate_statistics is not None else None), float(log_lik)

    def weight_sums(self, state):
        """Each expert's total weight ``sum_i w_i r_ij``, which the E-step's pass summed."""
        _, weight_sums, _ = state[0]
        return weight_sums

    def m_step(self, params, state, var_floor):
        """The experts' and the gate's M-step; returns ``(params, weight_sums, None)``."""
        experts, weight_sums = GAUSSIAN_LINEAR.m_step_blocks(self.blocks, var_floor, state[0])
        params = params._replace(expert_coef=experts.coef, expert_intercept=experts.intercept,
                                 expert_var=experts.var)
        data = GateData(None, None, None, learn_temperature=self.learn_temperature,
                        max_iter=self.gate_steps, blocks=self.blocks, statistics=state[1])
        gate, _ = self.family.m_step(data, params.gate)
        return params._replace(gate=gate), weight_sums, None

    def save(self, state):
        """Keep the stored responsibilities (the next E-step overwrites them) and ``state``."""
        return state, self.blocks.save_responsibilities()

    def restore(self, saved):
        """The saved responsibilities stored again; returns the saved state."""
        state, kept = saved
        self.blocks.restore_responsibilities(kept)
        return state


class StandardisedRows:
    """``(z, y)`` standardised column by column, read from a block source.

    What the starts' partitions need of the data (:func:`gmoe._starts.draw_labels`),
    without a standardised copy of every row: rows picked by rank among those of positive
    weight, and every row's nearest centre.

    Parameters
    ----------
    rows : RowBlocks or gmoe._dask.DaskRowBlocks
    """

    def __init__(self, rows):
        self.rows = rows
        self.mean, spread = rows.column_moments()
        self.scale = np.where(spread > 0, spread, 1.0)
        self.n_dims = rows.n_features + 1
        self.n_positive = rows.n_positive

    def take_positive(self, ranks, weights=None):
        """Standardised rows by rank among the positive-weight rows, and their weights."""
        data, sample_weight = self.rows.take_positive(ranks, self.mean, self.scale)
        return (data if weights is None else data * weights[:, None]), sample_weight

    def nearest(self, centres, weights=None):
        """Every row's nearest centre (first on ties), its coordinates times ``weights``."""
        return self.rows.nearest_centre(self.mean, self.scale, centres, weights)


def _range_block(block):
    """Each column's least and greatest value of ``[Z, y]`` over the rows of positive weight."""
    used = np.vstack([block.ZT[:-1], block.y])[:, block.w > 0]
    if used.shape[1] == 0:
        return np.full(used.shape[0], np.inf), np.full(used.shape[0], -np.inf)
    return used.min(axis=1), used.max(axis=1)


def _block_ranges(rows):
    """The range of every column of ``[X, y]`` over the rows of positive weight.

    Read from a block source before it is conditioned: its blocks hold the user's units.
    """
    parts = rows.map_blocks(_range_block)
    return (np.max([part[1] for part in parts], axis=0)
            - np.min([part[0] for part in parts], axis=0))


def _positive_ranges(X, y, sample_weight):
    """The range of every column of ``[X, y]`` over the rows of positive weight."""
    used = sample_weight > 0
    data = np.column_stack([X, y]) if used.all() else np.column_stack([X[used], y[used]])
    return np.ptp(data, axis=0)


def prepare(family, X, y, sample_weight, n_experts, *, n_threads, learn_temperature,
            gate_steps, rows=None):
    """The conditioning and the passes of a fit.

    Families that fit on blocks get :class:`BlockPasses`: the conditioning's moments, the
    rank check and every pass read ``X`` block by block (no copy of it). The others get
    :class:`ArrayPasses` on the conditioned design. A rank-deficient design is reported to
    the caller's caller (the estimator's user).

    Parameters
    ----------
    family : GatingFamily
    X : ndarray of shape (n_samples, n_features) or None
    y, sample_weight : ndarray of shape (n_samples,) or None
    n_experts : int
    n_threads : int
    learn_temperature : bool
    gate_steps : int
    rows : block source, optional
        The data already as a block source (``gmoe._dask.DaskRowBlocks``); ``X``, ``y``
        and ``sample_weight`` are then None.

    Returns
    -------
    passes : BlockPasses or ArrayPasses
    conditioning : gmoe._conditioning.Conditioning
    y_variance : float
        The weighted variance of ``y`` in the internal units (1 when it is 0).
    """
    # A lone expert's gate is 1 whatever x is: its design is centred and scaled in every
    # family (its experts' means absorb both).
    alone = n_experts == 1
    centre_x = family.centres_design or alone
    scale_x = family.scales_design or alone
    if rows is not None or family.fits_on_blocks:
        if rows is None:
            rows = RowBlocks(X, y, sample_weight, n_experts, n_threads)
        mean, std = rows.weighted_moments()
        if X is not None:
            mean, std = finite_moments(mean, std, lambda: np.vstack([X.T, y]),
                                       sample_weight)
        conditioning = Conditioning.from_moments(mean[:-1], std[:-1], mean[-1], std[-1],
                                                 centre_x=centre_x, scale_x=scale_x)
        check_spread_representable(conditioning, lambda: _block_ranges(rows))
        rows.condition(conditioning.x_offset, conditioning.x_scale, conditioning.y_offset,
                       conditioning.y_scale)
        conditioning.report_rank(*rows.design_gram(), stacklevel=4)
        return (BlockPasses(family, rows, learn_temperature, gate_steps), conditioning,
                rows.target_variance())
    conditioning = Conditioning.from_data(X, y, sample_weight, centre_x=centre_x,
                                          scale_x=scale_x)
    check_spread_representable(conditioning, lambda: _positive_ranges(X, y, sample_weight))
    Z = conditioning.transform_X(X)
    y_internal = conditioning.transform_y(y)
    conditioning.check_rank(Z, sample_weight, stacklevel=4)
    passes = ArrayPasses(family, Z, y_internal, sample_weight, n_experts, learn_temperature,
                         gate_steps)
    return passes, conditioning, compute_var_floor(y_internal, sample_weight, 1.0)
