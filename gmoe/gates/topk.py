"""The top-K sparse softmax gate: a softmax over the ``top_k`` best-scored experts.

The selection score is ``beta1^T x + beta0`` (``selection='affine'``) or ``beta1^T x``
(``'linear'``); ties go to the lower index; the gate is exactly 0 outside the selection
(see :ref:`theory-topk`).

The gate depends on its parameters partly through the selection, which is piecewise
constant: with ``top_k = 1`` the gate objective has zero gradient and EM alone never moves
the gate. The M-step therefore has two parts:

1. the within-selection softmax by Newton with the active sets held (``top_k > 1``),
   accepted only if the log-likelihood ``L`` itself does not fall;
2. the selection boundaries moved by coordinate-wise search on ``L`` with the experts
   held. Along one gate coordinate ``t`` a row's selection of expert ``j`` flips at one
   breakpoint, so ``L(t)`` changes only at the rows' breakpoints. With ``top_k = 1`` the
   gate weight is 1 and ``L(t)`` is piecewise constant: it is maximised exactly by a
   sorted scan of the breakpoints. With ``top_k > 1`` the within-selection weights vary
   too, and ``L`` is evaluated at the midpoints of the intervals nearest the current value.
   A move is taken only if ``L`` rises.
"""

import numpy as np

from .. import _kernels
from .._expert_major import Workspace, column_logsumexp, transposed_design
from .._validation import check_int_in_range, check_option
from ._linear import linear_log_gate_columns, maximise_softmax_gate_columns
from .base import GateParams, GatingFamily
from .softmax import SoftmaxGating

__all__ = ["TOPK_SELECTIONS", "TopKGating", "compute_topk_mask", "compute_topk_mask_columns"]

TOPK_SELECTIONS = ("affine", "linear")


def compute_topk_mask(scores, top_k):
    """Boolean mask of the ``top_k`` largest scores of each row, ties to the lower index.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_experts)
    top_k : int

    Returns
    -------
    ndarray of bool, shape (n_samples, n_experts)
    """
    return compute_topk_mask_columns(np.array(np.asarray(scores, dtype=np.float64).T,
                                              order="C"), top_k).T


def compute_topk_mask_columns(scores, top_k):
    """:func:`compute_topk_mask` of expert-major scores, shape (n_experts, n_samples).

    Parameters
    ----------
    scores : ndarray of shape (n_experts, n_samples), C-contiguous float64
    top_k : int

    Returns
    -------
    ndarray of bool, shape (n_experts, n_samples)
        True for the ``top_k`` best experts of each column (ties to the lower index).
    """
    if top_k >= scores.shape[0]:
        return np.ones(scores.shape, dtype=bool)
    active = np.empty(scores.shape, dtype=bool)
    _kernels.topk_columns_into(scores, int(top_k), active)
    return active


class TopKGating(GatingFamily):
    """Top-K sparse softmax: softmax of the logits over the ``top_k`` best-scored experts.

    Parameters
    ----------
    top_k : int
        Number of active experts per input, ``1 <= top_k``.
    selection : {'affine', 'linear'}, default='affine'
        Selection score: ``beta1^T x + beta0`` or ``beta1^T x`` (ties to the lower index).
    """

    name = "topk"
    differentiable = False
    linear_logits = True
    OPTIONS = ("top_k", "topk_selection")
    FIT_MAY_CHANGE = ("top_k",)

    def __init__(self, top_k, selection="affine"):
        self.top_k = top_k
        self.selection = selection

    @property
    def selection_uses_intercept(self):
        """Affine selection scores include ``beta0``; linear ones do not."""
        return self.selection == "affine"

    @property
    def centres_design(self):
        """Affine selection absorbs a shift of ``x`` in ``beta0``; linear selection does not."""
        return self.selection == "affine"

    @classmethod
    def from_options(cls, *, n_experts=None, top_k=None, topk_selection="affine", **ignored):
        """Build from the estimator's options; ``top_k`` is required.

        Parameters
        ----------
        n_experts : int, optional
            When given, ``top_k`` is checked against it.
        top_k : int
            ``1 <= top_k <= n_experts``.
        topk_selection : {'affine', 'linear'}, default='affine'
        **ignored
            Options of other families.

        Returns
        -------
        TopKGating
        """
        check_option(topk_selection, "topk_selection", TOPK_SELECTIONS)
        if top_k is None:
            raise ValueError("top_k must be an integer in [1, n_experts] for gating='topk', "
                             "got top_k=None.")
        high = n_experts if n_experts is not None else np.iinfo(np.int64).max
        check_int_in_range(top_k, "top_k", 1, high)
        return cls(int(top_k), topk_selection)

    def options(self):  # noqa: D102 (inherited)
        return {"top_k": self.top_k, "topk_selection": self.selection}

    def describe(self):  # noqa: D102 (inherited)
        return f"topk (top_k={self.top_k}, {self.selection} selection)"

    def selection_scores(self, X, gate_coef, gate_intercept):
        """Scores that choose the active set, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``; added only for ``selection='affine'``.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        scores = X @ gate_coef.T
        if self.selection == "affine":
            scores = scores + gate_intercept
        return scores

    def active_mask(self, X, gate_coef, gate_intercept):
        """Boolean active set of each row, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.

        Returns
        -------
        ndarray of bool, shape (n_samples, n_experts)
            True for the ``top_k`` experts of each row (ties to the lower index).
        """
        return compute_topk_mask(self.selection_scores(X, gate_coef, gate_intercept), self.top_k)

    def _active_columns(self, ZT, theta):
        if self.selection == "affine":
            scores = theta @ ZT
        else:
            scores = np.ascontiguousarray(theta[:, :-1]) @ ZT[:-1]
        return compute_topk_mask_columns(scores, self.top_k)

    def log_gate_columns(self, ZT, params, workspace=None):  # noqa: D102 (inherited)
        theta = np.column_stack([params.coef, params.intercept])
        return linear_log_gate_columns(ZT, theta, ~self._active_columns(ZT, theta),
                                       workspace=workspace)[0]

    def initial_gate(self, data, temperature=None):
        """The dense softmax fit from zero: a first gate whose selection follows the labels.

        Parameters
        ----------
        data : GateData
        temperature : None
            Unused.

        Returns
        -------
        GateParams
        """
        return SoftmaxGating().initial_gate(data)

    def m_step(self, data, params):
        """Held-selection Newton, then a search over the selection boundaries.

        The boundaries are moved by maximising the log-likelihood itself, so the step
        reads the experts' log-densities from ``data``; ``L`` never falls.

        Parameters
        ----------
        data : GateData
        params : GateParams

        Returns
        -------
        params : GateParams
        log_gate : None
        """
        n_experts = params.intercept.shape[0]
        coef, intercept = params.coef, params.intercept
        likelihood = TopKLikelihood(self, data.ZT, data.get_expert_log_density(),
                                    data.sample_weight)
        if self.top_k > 1:
            start = np.column_stack([coef, intercept])
            theta, _ = maximise_softmax_gate_columns(
                start, data.ZT, data.weighted_resp, data.row_total, np.arange(n_experts - 1),
                inactive=~likelihood.active(start), max_iter=data.max_iter)
            before = likelihood(start)
            after = likelihood(theta)
            # The new parameters may also change the selection: keep them only if L holds.
            if after >= before:
                coef = np.ascontiguousarray(theta[:, :-1])
                intercept = np.ascontiguousarray(theta[:, -1])
        if self.top_k < n_experts:
            coef, intercept = move_boundaries(likelihood, coef, intercept)
        return GateParams(coef, intercept, None), None

    # ----------------------------------------------------------- identifiability
    def identifiable_gate(self, params):
        """With ``top_k = 1``, the gate rescaled to unit norm; otherwise ``params``.

        Only the selection regions are identifiable when one expert is selected: the gate
        is rescaled to unit Frobenius norm of ``(beta1, beta0)`` (of ``beta1`` alone, with
        ``beta0`` set to 0, for linear selection).

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        GateParams
        """
        if self.top_k != 1:
            return params
        if self.selection == "linear":
            scale = np.linalg.norm(params.coef)
            intercept = np.zeros_like(params.intercept)
        else:
            scale = np.sqrt(np.sum(params.coef ** 2) + np.sum(params.intercept ** 2))
            intercept = params.intercept
        if scale == 0:
            return GateParams(params.coef, intercept, params.temperature)
        return GateParams(params.coef / scale, intercept / scale, params.temperature)

    def selected_experts(self):
        """``top_k``.

        Returns
        -------
        int
        """
        return self.top_k

    def selection_only(self):
        """True with ``top_k = 1``: the selected weight is 1, only the regions count.

        Returns
        -------
        bool
        """
        return self.top_k == 1

    def undefined_parameter_errors(self):
        """With ``top_k = 1``: no weight error, and no intercept error for linear selection.

        Returns
        -------
        set of str
        """
        if self.top_k != 1:
            return set()
        return {"weight"} if self.selection == "affine" else {"weight", "gate_intercept"}


# Intervals evaluated on each side of the current value when top_k > 1.
_N_CANDIDATE_INTERVALS = 3
# A boundary move must raise L by more than this, relative, to be taken.
_MIN_RELATIVE_GAIN = 1e-12


class TopKLikelihood:
    """Weighted log-likelihood ``L(theta)`` of a top-K gate with the experts held.

    ``L = sum_i w_i [logsumexp_{j in A_i}(s_ij + l_ij) - logsumexp_{j in A_i}(s_ij)]``, with
    ``A_i`` the active set, ``s`` the logits and ``l`` the expert log-densities: two column
    log-sum-exps on expert-major arrays. Rows of weight 0 do not count. The data are
    prepared once and the buffers reused, since the boundary search evaluates ``L`` dozens
    of times per EM iteration.

    Parameters
    ----------
    family : TopKGating
    ZT : ndarray of shape (n_features + 1, n_samples)
        The design with intercept, transposed.
    expert_log_density : ndarray of shape (n_experts, n_samples)
    sample_weight : ndarray of shape (n_samples,)
    """

    def __init__(self, family, ZT, expert_log_density, sample_weight):
        self.family = family
        self.ZT = ZT
        self.expert_log_density = np.ascontiguousarray(expert_log_density)
        self.sample_weight = sample_weight
        self.used = sample_weight > 0
        self.weight = sample_weight[self.used]
        self.workspace = Workspace()

    def _logits_and_active(self, theta):
        logits = np.matmul(np.ascontiguousarray(theta), self.ZT,
                           out=self.workspace.get("topk_logits", self.expert_log_density.shape))
        if self.family.selection == "affine":
            scores = logits
        else:
            scores = np.ascontiguousarray(theta[:, :-1]) @ self.ZT[:-1]
        return logits, compute_topk_mask_columns(scores, self.family.top_k)

    def active(self, theta):
        """Active sets at ``theta``, expert-major: bool of shape (n_experts, n_samples)."""
        return self._logits_and_active(theta)[1]

    def __call__(self, theta):
        """``L`` at gate parameters ``theta`` (slopes, then intercept), shape (k, d + 1)."""
        shape = self.expert_log_density.shape
        logits, active = self._logits_and_active(theta)
        np.copyto(logits, -np.inf, where=~active)
        joint = np.add(logits, self.expert_log_density,
                       out=self.workspace.get("topk_joint", shape))
        log_lik = column_logsumexp(joint, self.workspace)
        log_lik -= column_logsumexp(logits, self.workspace)
        return float(np.dot(self.weight, log_lik[self.used]))


def compute_log_likelihood(family, X, gate_coef, gate_intercept, expert_log_density,
                           sample_weight):
    """Weighted log-likelihood ``L`` for a top-K gate and fixed expert log-densities."""
    likelihood = TopKLikelihood(family, transposed_design(X), np.asarray(expert_log_density).T,
                                sample_weight)
    return likelihood(np.column_stack([gate_coef, gate_intercept]))


def _kth_largest_of_others(scores, j, top_k):
    others = scores.copy()
    others[:, j] = -np.inf
    if top_k == 1:
        best = np.argmax(others, axis=1)  # first maximum: ties to the lower index
        return others[np.arange(len(others)), best], best
    kth = -np.partition(-others, top_k - 1, axis=1)[:, top_k - 1]
    return kth, None


def _interval_points(breaks):
    """Sorted breakpoints -> one interior point per interval (including both ends)."""
    breaks = np.unique(breaks)
    if breaks.size == 0:
        return np.zeros(1)
    span = breaks[-1] - breaks[0]
    margin = max(1e-3, 0.01 * span, 0.01 * np.max(np.abs(breaks)))
    mids = 0.5 * (breaks[:-1] + breaks[1:])
    return np.concatenate([[breaks[0] - margin], mids, [breaks[-1] + margin]])


def _scan_top1(scores, col, j, expert_log_density, sample_weight, current_log_lik):
    """Exact maximiser of L along one coordinate of expert j's selection score (K = 1)."""
    threshold, other = _kth_largest_of_others(scores, j, 1)
    rows = np.arange(scores.shape[0])
    gain_if_selected = sample_weight * (expert_log_density[:, j]
                                        - expert_log_density[rows, other])
    moving = col != 0
    breaks = (threshold[moving] - scores[moving, j]) / col[moving]
    # L at t -> -inf: rows with col > 0 lose j, rows with col < 0 take it; rows with
    # col = 0 keep their current selection.
    selected_now = (scores[:, j] > threshold) | ((scores[:, j] == threshold) & (j < other))
    static = ~moving & selected_now
    base = (np.dot(sample_weight, expert_log_density[rows, other])
            + gain_if_selected[static].sum() + gain_if_selected[moving & (col < 0)].sum())
    increments = np.where(col[moving] > 0, 1.0, -1.0) * gain_if_selected[moving]
    order = np.argsort(breaks, kind="stable")
    breaks, increments = breaks[order], increments[order]
    if breaks.size == 0:
        return 0.0, current_log_lik
    values = base + np.concatenate([[0.0], np.cumsum(increments)])
    # Intervals: (-inf, b0), (b0, b1), ..., (b_last, inf); several breakpoints may coincide,
    # and the value just after a run of equal breakpoints is the one that counts.
    last_of_run = np.append(breaks[1:] != breaks[:-1], True)
    keep = np.concatenate([[True], last_of_run])
    values = values[keep]
    points = _interval_points(breaks)
    best = int(np.argmax(values))
    if values[best] > current_log_lik + _MIN_RELATIVE_GAIN * abs(current_log_lik):
        return float(points[best]), float(values[best])
    return 0.0, current_log_lik


def move_boundaries(likelihood, gate_coef, gate_intercept):
    """One sweep of coordinate-wise search on L over the free gate parameters.

    Parameters
    ----------
    likelihood : TopKLikelihood
        ``L`` of these data with the experts held.
    gate_coef : ndarray of shape (n_experts, n_features)
    gate_intercept : ndarray of shape (n_experts,)

    Returns
    -------
    gate_coef, gate_intercept
        ``L`` is no lower than at the given parameters.
    """
    family = likelihood.family
    n_experts, n_features = gate_coef.shape
    theta = np.column_stack([gate_coef, gate_intercept])
    affine = family.selection == "affine"
    # Linear selection: the intercept does not enter the selection scores.
    columns = range(n_features + 1) if affine else range(n_features)
    X = likelihood.ZT[:-1].T
    # Row-major views of the search's inputs.
    expert_log_density = likelihood.expert_log_density.T
    sample_weight = likelihood.sample_weight
    log_lik = likelihood(theta)
    for j in range(n_experts - 1):
        for c in columns:
            scores = family.selection_scores(X, theta[:, :-1], theta[:, -1])
            col = likelihood.ZT[c]  # column c of the design with intercept
            if family.top_k == 1:
                step, value = _scan_top1(scores, col, j, expert_log_density, sample_weight,
                                         log_lik)
            else:
                step, value = _search_topk(family, theta, scores, col, j, c, likelihood,
                                           log_lik)
            if step != 0.0:
                theta[j, c] += step
                # Recompute rather than trust the scan, so L never falls by round-off.
                new = likelihood(theta)
                if new >= log_lik:
                    log_lik = new
                else:
                    theta[j, c] -= step
    return np.ascontiguousarray(theta[:, :-1]), np.ascontiguousarray(theta[:, -1])


def _search_topk(family, theta, scores, col, j, c, likelihood, current_log_lik):
    """Best of L at interval midpoints near the current value (K > 1)."""
    threshold, _ = _kth_largest_of_others(scores, j, family.top_k)
    moving = col != 0
    breaks = np.unique((threshold[moving] - scores[moving, j]) / col[moving])
    if breaks.size == 0:
        return 0.0, current_log_lik
    points = _interval_points(breaks)
    here = int(np.searchsorted(breaks, 0.0))
    lo = max(0, here - _N_CANDIDATE_INTERVALS)
    hi = min(len(points), here + _N_CANDIDATE_INTERVALS + 1)
    best_step, best_value = 0.0, current_log_lik
    for t in points[lo:hi]:
        trial = theta.copy()
        trial[j, c] += t
        value = likelihood(trial)
        if value > best_value + _MIN_RELATIVE_GAIN * abs(best_value):
            best_step, best_value = float(t), value
    return best_step, best_value


