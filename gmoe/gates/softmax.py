"""The softmax gate and the dense-to-sparse temperature gate (linear logits).

* ``"softmax"``: logits ``beta1_j^T x + beta0_j`` (see :ref:`theory-softmax`).
* ``"temperature"``: logits ``(beta1_j^T x + beta0_j) / tau``; the data determine only
  ``gamma = (beta1, beta0) / tau``, so the M-step runs on ``gamma`` and holds ``tau`` at
  its start (see :ref:`theory-temperature`).

Both run their passes on the expert-major arrays of :mod:`gmoe.gates._linear`.
"""

import numpy as np

from ._linear import (
    gate_block_sums,
    linear_log_gate_columns,
    maximise_softmax_gate,
    maximise_softmax_gate_columns,
)
from .base import GateParams
from .smooth import SmoothGatingFamily

__all__ = ["SoftmaxGating", "TemperatureGating"]


def _theta(params, scale):
    """Slopes and intercept (last column) over ``scale``: shape (n_experts, n_features + 1)."""
    return np.column_stack([params.coef, params.intercept]) / scale


class SoftmaxGating(SmoothGatingFamily):
    """Softmax gate: logits ``beta1_i^T x + beta0_i`` over all experts.

    The last expert is the reference: its slope and intercept are 0.

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe.gates import SoftmaxGating
    >>> SoftmaxGating().log_gate(np.zeros((1, 1)), np.zeros((2, 1)), np.zeros(2))
    array([[-0.69314718, -0.69314718]])
    """

    name = "softmax"
    centres_design = True
    scales_design = True
    linear_logits = True
    fits_on_blocks = True
    # One warm-started step per iteration: a second (a pass over the rows) bought fewer EM
    # iterations than it cost (benchmarks/bench_convergence.py, k = 3 and 4 at n = 1e4:
    # 0.15 -> 0.12 s and 0.44 -> 0.41 s a fit; the flexmix peer at 1e5: 125 -> 113 ms;
    # the same log-likelihoods).
    newton_steps_per_iteration = 1

    def _scale(self, params):
        return 1.0

    def log_gate_columns(self, ZT, params, workspace=None):  # noqa: D102 (inherited)
        return self.gate_columns(ZT, params, workspace)[0]

    def gate_columns(self, ZT, params, workspace=None):  # noqa: D102 (inherited)
        return linear_log_gate_columns(ZT, _theta(params, self._scale(params)),
                                       workspace=workspace)

    def logit_derivatives(self, X, params, learn_temperature=False):  # noqa: D102 (inherited)
        scale = self._scale(params)
        n, k = X.shape[0], params.intercept.shape[0]
        logits = (X @ params.coef.T + params.intercept) / scale
        d_coef = np.broadcast_to((X / scale)[:, None, :], (n, k, X.shape[1]))
        d_intercept = np.full((n, k), 1.0 / scale)
        return logits, d_coef, d_intercept, None, None

    def block_statistics(self, params):  # noqa: D102 (inherited)
        free = np.arange(params.intercept.shape[0] - 1)
        return (gate_block_sums, (free,)) if len(free) else None

    def dense_linear_logits(self, params):  # noqa: D102 (inherited)
        return _theta(params, self._scale(params))

    def initial_gate(self, data, temperature=None):
        """The softmax fit from zero (20 Newton steps at most).

        Parameters
        ----------
        data : GateData
        temperature : float or None, default=None
            The temperature the gate is fitted at (temperature gate).

        Returns
        -------
        GateParams
        """
        if data.blocks is not None:
            blocks = data.blocks
            n_experts = blocks.n_experts
            theta = maximise_softmax_gate(np.zeros((n_experts, blocks.n_features + 1)), blocks,
                                          np.arange(n_experts - 1), max_iter=20)
        else:
            n_experts = data.weighted_resp.shape[0]
            theta, _ = maximise_softmax_gate_columns(
                np.zeros((n_experts, data.ZT.shape[0])), data.ZT, data.weighted_resp,
                data.row_total, np.arange(n_experts - 1), max_iter=20,
                workspace=data.workspace)
        if self.uses_temperature:
            theta *= temperature
        return GateParams(np.ascontiguousarray(theta[:, :-1]),
                          np.ascontiguousarray(theta[:, -1]), temperature)

    def m_step(self, data, params):
        """Newton ascent of the concave ``Q`` from ``params`` (warm start).

        Parameters
        ----------
        data : GateData
        params : GateParams

        Returns
        -------
        params : GateParams
        log_gate : ndarray of shape (n_experts, n_samples) or None
            The log-gate at the new parameters (a workspace array); None when the
            M-step ran on ``data.blocks``.
        """
        scale = self._scale(params)
        free = np.arange(params.intercept.shape[0] - 1)
        if data.blocks is not None:
            theta = maximise_softmax_gate(_theta(params, scale), data.blocks, free,
                                          max_iter=data.max_iter, statistics=data.statistics)
            log_gate = None
        else:
            theta, log_gate = maximise_softmax_gate_columns(
                _theta(params, scale), data.ZT, data.weighted_resp, data.row_total, free,
                max_iter=data.max_iter, workspace=data.workspace, log_gate=data.log_gate)
        theta *= scale
        return GateParams(np.ascontiguousarray(theta[:, :-1]),
                          np.ascontiguousarray(theta[:, -1]), params.temperature), log_gate


class TemperatureGating(SoftmaxGating):
    """Dense-to-sparse gate: logits ``(beta1_i^T x + beta0_i) / tau``.

    Only ``gamma = (beta1, beta0) / tau`` is identifiable: the M-step fits ``gamma`` and
    holds ``tau`` at its start, and comparisons use ``gamma`` (:meth:`identifiable_gate`).
    """

    name = "temperature"
    uses_temperature = True
    parameter_prefix = "gamma"
    # beta = tau * gamma: a subnormal tau keeps fewer digits of the gate than float64's.
    smallest_fitted_temperature = float(np.finfo(np.float64).tiny)

    def _scale(self, params):
        return params.temperature

    def identifiable_gate(self, params):
        """``gamma = (beta1, beta0) / tau``, returned with ``temperature=1``.

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        GateParams
        """
        tau = params.temperature
        return GateParams(params.coef / tau, params.intercept / tau, 1.0)

    def theory_setting(self, over_specified):
        """``'temperature'``: its rates on ``gamma`` are the softmax ones, per cell.

        Parameters
        ----------
        over_specified : bool
            Unused: the rate table selects the over-specified rates by the cell's atoms.

        Returns
        -------
        str
        """
        return "temperature"

    def from_identifiable_gate(self, identifiable, reference):
        """``beta = tau * gamma`` at ``reference``'s temperature.

        Parameters
        ----------
        identifiable : GateParams
            ``gamma`` (temperature 1).
        reference : GateParams

        Returns
        -------
        GateParams
        """
        tau = reference.temperature
        return GateParams(identifiable.coef * tau, identifiable.intercept * tau, tau)
