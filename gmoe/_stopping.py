r"""When EM stops: the Newton decrement of the log-likelihood below an absolute ``tol``.

The gap to the optimum predicted by the quadratic model of the total log-likelihood ``L``
at the current point is the Newton decrement

.. math::

    \Delta = \tfrac12\, g^\top I^{-1} g, \qquad g = \nabla L, \quad I = -\nabla^2 L,

in total log-likelihood units: what a full Newton step would still gain. Unlike a change of
``L`` relative to ``|L|`` (which grows like ``n``, so that the absolute threshold loosens as
``n`` grows), its meaning does not depend on ``n``. A run has converged when ``Delta <= tol``
and ``I`` has no direction of clearly negative curvature (there ``L`` still curves upward:
a saddle or the plateau of an over-specified fit, from which the quadratic model predicts
nothing).

``I`` is taken in its correlation form ``D^{-1/2} I D^{-1/2}`` (``D`` its diagonal), so that
nothing depends on the parameters' units, and its eigenvalues are clipped from below at
``1e-10`` times the largest, in absolute value: an over-specified fit is singular at the
optimum (two experts estimating one component), and a flat direction then gets a large
rather than an infinite predicted gain. A variance held at its floor is a bound, not a
stationary point: it is left out.

The derivatives are the analytic score and observed information of
:mod:`gmoe.inference`. They cost a few EM iterations, so a cheap filter comes first: the
decrement is computed only when the last iteration raised ``L`` by at most ``tol`` (no
step can gain more than the remaining gap), and after a failed check the next one waits
1, 2, 4, ... up to 16 iterations.

Top-K gates with ``top_k < n_experts`` are not differentiable in the gate (the active
sets jump). Their rule: the decrement with every row's active set held (the experts and
the within-selection softmax, exactly what the M-step's EM part moves) below ``tol``, and
``L`` risen by at most ``tol`` over the last 5 iterations (which covers the moves of the
selection boundaries).
"""

import numpy as np

from .inference import _compute_log_likelihood_derivatives, _Parametrisation
from .model import MixingMeasure

__all__ = ["TOPK_WINDOW", "Decrement", "StoppingRule", "compute_newton_decrement"]

# Eigenvalues of the information's correlation form are clipped at this times the largest.
_EIGEN_FLOOR = 1e-10
# An eigenvalue of the correlation form below minus this is curvature upward: not converged.
# Rounding puts the eigenvalues of a singular information within ~1e-12 of 0; the saddles
# and plateaus EM crosses in over-specified fits show -1e-3 and below.
_NEGATIVE_CURVATURE = 1e-6
# The decrement is checked again after at most this many iterations.
_MAX_CHECK_INTERVAL = 16
# Top-K (K < k): L must have risen by at most tol over this many iterations.
TOPK_WINDOW = 5


class Decrement:
    """The Newton decrement at one point.

    Attributes
    ----------
    gap : float
        ``g' I^{-1} g / 2`` (clipped), total log-likelihood units; ``inf`` when the
        derivatives are not finite.
    min_curvature : float
        Smallest eigenvalue of the information's correlation form (< 0: not concave).
    """

    def __init__(self, gap, min_curvature):
        self.gap = float(gap)
        self.min_curvature = float(min_curvature)

    @property
    def is_concave(self):
        """Whether no direction curves clearly upward."""
        return self.min_curvature >= -_NEGATIVE_CURVATURE

    def __repr__(self):
        return f"Decrement(gap={self.gap:.4g}, min_curvature={self.min_curvature:.3g})"


def _decrement_from_derivatives(score, hessian, keep):
    """Clipped decrement and smallest correlation eigenvalue over the indices ``keep``."""
    score = score[keep]
    info = -hessian[np.ix_(keep, keep)]
    if score.size == 0:
        return Decrement(0.0, 0.0)
    if not (np.all(np.isfinite(score)) and np.all(np.isfinite(info))):
        return Decrement(np.inf, np.nan)
    scale = np.sqrt(np.abs(np.diag(info)))
    scale[scale == 0] = 1.0
    corr = info / np.outer(scale, scale)
    eigval, eigvec = np.linalg.eigh(0.5 * (corr + corr.T))
    floor = _EIGEN_FLOOR * max(float(np.max(np.abs(eigval))), np.finfo(np.float64).tiny)
    clipped = np.maximum(np.abs(eigval), floor)
    coords = eigvec.T @ (score / scale)
    return Decrement(0.5 * float(np.sum(coords * coords / clipped)), eigval[0])


def _free_indices(param, measure, var_floor):
    """Parameter indices left in the decrement: all but the variances at the floor."""
    at_floor = measure.expert_var <= var_floor * (1.0 + 1e-9)
    drop = param.expert_idx[at_floor, param.experts.variance_position]
    return np.setdiff1d(np.arange(param.size), drop)


def compute_newton_decrement(measure, X, y, sample_weight, *, learn_temperature=False,
                             var_floor=0.0):
    """The Newton decrement of the total log-likelihood at ``measure``.

    Parameters
    ----------
    measure : MixingMeasure
    X : ndarray of shape (n_samples, n_features)
    y, sample_weight : ndarray of shape (n_samples,)
    learn_temperature : bool, default=False
        Whether an activation gate's ``log tau`` is a parameter.
    var_floor : float, default=0.0
        Variances at this floor are left out.

    Returns
    -------
    Decrement
    """
    selected = measure.family.selected_experts()
    if not measure.family.differentiable and selected is not None \
            and selected < measure.n_experts:
        param, score, hessian = _held_selection_derivatives(measure, X, y, sample_weight)
    else:
        param = _Parametrisation(measure, learn_temperature)
        _, score, hessian = _compute_log_likelihood_derivatives(
            param, param.to_vector(measure), X, y, sample_weight)
    return _decrement_from_derivatives(score, hessian, _free_indices(param, measure, var_floor))


def _held_selection_derivatives(measure, X, y, sample_weight):
    """Score and Hessian of a top-K log-likelihood with every row's active set held.

    The rows sharing an active set ``S`` follow a softmax mixture of the experts of ``S``
    alone, whose gate, relative to the last expert of ``S``, is a difference of the full
    gate's rows. Each group's derivatives come from :mod:`gmoe.inference` and are mapped
    onto the parameters of the full gate (the last expert the reference) by that linear
    map. Returns the layout (a softmax :class:`~gmoe.inference._Parametrisation`), the
    score and the Hessian.
    """
    k = measure.n_experts
    softmax = MixingMeasure(measure.gate_coef, measure.gate_intercept, measure.expert_coef,
                            measure.expert_intercept, measure.expert_var)
    full = _Parametrisation(softmax)
    score = np.zeros(full.size)
    hessian = np.zeros((full.size, full.size))
    mask = measure.family.active_mask(X, measure.gate_coef, measure.gate_intercept)
    codes = mask @ (1 << np.arange(k, dtype=np.int64))
    for code in np.unique(codes):
        rows = np.flatnonzero(codes == code)
        if not np.any(sample_weight[rows] > 0):
            continue
        experts = np.flatnonzero((int(code) >> np.arange(k)) & 1)
        ref = experts[-1]
        sub = MixingMeasure(measure.gate_coef[experts] - measure.gate_coef[ref],
                            measure.gate_intercept[experts] - measure.gate_intercept[ref],
                            measure.expert_coef[experts], measure.expert_intercept[experts],
                            measure.expert_var[experts])
        param = _Parametrisation(sub)
        _, sub_score, sub_hessian = _compute_log_likelihood_derivatives(
            param, param.to_vector(sub), X[rows], y[rows], sample_weight[rows])
        jac = np.zeros((param.size, full.size))
        for a, j in enumerate(experts):
            for m in range(measure.n_features):
                _add_gate_difference(jac, param.gate_coef_idx[a, m], full.gate_coef_idx[j, m],
                                     full.gate_coef_idx[ref, m])
            _add_gate_difference(jac, param.gate_int_idx[a], full.gate_int_idx[j],
                                 full.gate_int_idx[ref])
            jac[param.expert_idx[a], full.expert_idx[j]] = 1.0
        score += jac.T @ sub_score
        hessian += jac.T @ sub_hessian @ jac
    return full, score, hessian


def _add_gate_difference(jac, sub_idx, full_idx, ref_idx):
    """Row ``sub_idx`` of the map: the sub-gate entry is ``full - reference``."""
    if sub_idx < 0:
        return
    if full_idx >= 0:
        jac[sub_idx, full_idx] += 1.0
    if ref_idx >= 0:
        jac[sub_idx, ref_idx] -= 1.0


class StoppingRule:
    """The stopping rule of one EM run, fed the log-likelihood after every iteration.

    Parameters
    ----------
    tol : float
        Absolute tolerance on the Newton decrement (total log-likelihood units).
    evaluate : callable
        ``evaluate(params) -> Decrement`` at the current iterate.
    window : int, default=0
        When > 0 (top-K with ``top_k < n_experts``), ``L`` must also have risen by at
        most ``tol`` over the last ``window`` iterations.

    Attributes
    ----------
    decrement : Decrement or None
        The last one computed.
    n_checks : int
        Decrements computed.
    """

    def __init__(self, tol, evaluate, *, window=0):
        self.tol = float(tol)
        self.evaluate = evaluate
        self.window = int(window)
        self.decrement = None
        self.n_checks = 0
        self._history = []
        self._wait = 1
        self._next_check = 0
        self._evaluated_at = -1

    def update(self, log_lik, params):
        """Record the total log-likelihood of a new iterate; True when converged."""
        history = self._history
        history.append(float(log_lik))
        n = len(history) - 1  # iterations so far (the first entry is the start)
        if n < 1 or history[-1] - history[-2] > self.tol or n < self._next_check:
            return False
        if self.window and (n < self.window or history[-1] - history[-1 - self.window]
                            > self.tol):
            return False
        self.decrement = self.evaluate(params)
        self.n_checks += 1
        self._evaluated_at = len(history)
        if self.decrement.gap <= self.tol and self.decrement.is_concave:
            return True
        self._next_check = n + self._wait
        self._wait = min(2 * self._wait, _MAX_CHECK_INTERVAL)
        return False

    def final(self, params):
        """The decrement at the run's last iterate (computed if not already)."""
        if self.decrement is None or self._evaluated_at != len(self._history):
            self.decrement = self.evaluate(params)
            self.n_checks += 1
            self._evaluated_at = len(self._history)
        return self.decrement
