"""Gate M-step of the top-K sparse softmax gate (SPEC 3).

The gate depends on its parameters partly through the selection of the active set, which
is piecewise constant: with ``top_k = 1`` the gate objective has zero gradient and EM
alone never moves the gate. The step therefore has two parts:

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

from ._expert_major import Workspace, column_logsumexp, transposed_design
from .gating import compute_topk_mask_columns, maximise_softmax_gate_columns

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
    X : ndarray of shape (n_samples, n_features)
    expert_log_density : ndarray of shape (n_samples, n_experts)
    sample_weight : ndarray of shape (n_samples,)
    """

    def __init__(self, family, X, expert_log_density, sample_weight):
        self.family = family
        self.ZT = transposed_design(X)
        self.expert_log_density = np.array(np.asarray(expert_log_density).T, order="C")
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
    likelihood = TopKLikelihood(family, X, expert_log_density, sample_weight)
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


def move_boundaries(family, X, gate_coef, gate_intercept, expert_log_density, sample_weight,
                    likelihood=None):
    """One sweep of coordinate-wise search on L over the free gate parameters.

    ``likelihood`` is the :class:`TopKLikelihood` of these data, if one exists already.

    Returns
    -------
    gate_coef, gate_intercept
        ``L`` is no lower than at the given parameters.
    """
    n_experts, n_features = gate_coef.shape
    theta = np.column_stack([gate_coef, gate_intercept])
    affine = family.selection == "affine"
    # Linear selection: the intercept does not enter the selection scores.
    columns = range(n_features + 1) if affine else range(n_features)
    if likelihood is None:
        likelihood = TopKLikelihood(family, X, expert_log_density, sample_weight)
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


def m_step(family, X, weighted_resp, gate_coef, gate_intercept, expert_log_density,
           sample_weight, *, max_iter=20):
    """Top-K gate M-step: held-selection Newton, then boundary search (module docstring)."""
    n_experts = gate_coef.shape[0]
    coef, intercept = gate_coef, gate_intercept
    likelihood = TopKLikelihood(family, X, expert_log_density, sample_weight)
    if family.top_k > 1:
        start = np.column_stack([coef, intercept])
        weighted_resp_t = np.ascontiguousarray(weighted_resp.T)
        theta, _ = maximise_softmax_gate_columns(
            start, likelihood.ZT, weighted_resp_t, weighted_resp_t.sum(axis=0),
            np.arange(n_experts - 1), inactive=~likelihood.active(start), max_iter=max_iter)
        before = likelihood(start)
        after = likelihood(theta)
        # The new parameters may also change the selection: keep them only if L holds.
        if after >= before:
            coef = np.ascontiguousarray(theta[:, :-1])
            intercept = np.ascontiguousarray(theta[:, -1])
    if family.top_k < n_experts:
        coef, intercept = move_boundaries(family, X, coef, intercept, expert_log_density,
                                          sample_weight, likelihood)
    return coef, intercept
