"""The top-K gate's log-likelihood with the experts held, and the search over its boundaries.

:class:`TopKLikelihood` evaluates ``L(theta)`` from scratch. :func:`move_boundaries` moves
one gate coordinate at a time; along coordinate ``c`` of expert ``j`` only row ``j`` of
the logits and selection scores moves (by ``t * z_c``), so :class:`CoordinateLikelihood`
describes each sample once per expert by the other experts' part and evaluates ``L`` at
all the candidate steps of a coordinate in one vectorised pass over row ``j``:

* sample ``i`` selects ``j`` at step ``t`` iff ``j``'s moved score beats the K-th best
  score of the others (ties to the lower index);
* if it does not, its term is that of the others' top K alone, which ``t`` does not
  change;
* if it does, its term is ``log(e^a + e^(x + l_j)) - log(1 + e^x)``, with ``a`` the log of
  the mixture density of the others' top K - 1 (normalised among them), ``l_j`` expert
  ``j``'s log-density and ``x`` expert ``j``'s moved logit against the others' log-sum-exp.
"""

import numpy as np

from .. import _kernels
from .._expert_major import Workspace, column_logsumexp, exp_into, transposed_design

__all__ = ["CoordinateLikelihood", "TopKLikelihood", "compute_log_likelihood",
           "compute_topk_mask_columns", "move_boundaries"]

# Intervals evaluated on each side of the current value when top_k > 1, counted in
# breakpoints from it: every one of the nearest four, then geometrically to 64. Near a
# selection boundary most samples may gain nothing from changing side (those the
# selected experts that stay explain alike), so L can be flat over several breakpoints
# before the ones that count: a search of the three nearest stopped fits there, up to
# hundreds of log-likelihood units below the truth's at n = 1e5.
_CANDIDATE_OFFSETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
# A boundary move must raise L by more than this, relative, to be taken.
_MIN_RELATIVE_GAIN = 1e-12
# Log-ratios below this are recomputed from the log-sum-exps (CoordinateLikelihood): the
# ratio's exponentials are floored at exp(-700), which would show next to a ratio this small.
_LOG_RATIO_FLOOR = -650.0
_RATIO_FLOOR = float(np.exp(_LOG_RATIO_FLOOR))
# Samples per chunk of CoordinateLikelihood.log_likelihood: its temporaries are a few
# (2 * len(_CANDIDATE_OFFSETS) + 1, _CHUNK) arrays, whatever the sample size. (Smaller
# chunks, to stay in a core's cache, measured no faster at n = 2e4: the passes' call
# overhead ate the gain.)
_CHUNK = 32768


def compute_topk_mask_columns(scores, top_k):
    """The ``top_k`` best experts of every sample from expert-major scores, ties to the lower index.

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


def _logsumexp_rows(values, workspace, name):
    """:func:`~gmoe._expert_major.column_logsumexp` of finite values, to the bit.

    Two rows (top-2 gates) take a shorter path, whose result is the workspace's array
    ``name``; ``values`` may be overwritten.
    """
    if values.shape[0] != 2:
        return column_logsumexp(values, workspace)
    top = workspace.get(name, (values.shape[1],))
    gap = workspace.get(name + "_gap", (values.shape[1],))
    n_underflow = _kernels.pair_max_gap_into(values, top, gap)
    exp_into(gap, gap, workspace, n_underflow)
    return np.add(top, np.log1p(gap, out=gap), out=top)


class TopKLikelihood:
    """Weighted log-likelihood ``L(theta)`` of a top-K gate with the experts held.

    ``L = sum_i w_i [logsumexp_{j in A_i}(s_ij + l_ij) - logsumexp_{j in A_i}(s_ij)]``, with
    ``A_i`` the active set, ``s`` the logits and ``l`` the expert log-densities: two column
    log-sum-exps on expert-major arrays. Rows of weight 0 do not count. The data are
    prepared once and the buffers reused.

    Parameters
    ----------
    family : TopKGating
    ZT : ndarray of shape (n_features + 1, n_samples)
        The design with intercept, transposed.
    expert_log_density : ndarray of shape (n_experts, n_samples)
    sample_weight : ndarray of shape (n_samples,)
    """

    def __init__(self, family, ZT, expert_log_density, sample_weight, workspace=None):
        self.family = family
        self.ZT = ZT
        self.expert_log_density = np.ascontiguousarray(expert_log_density)
        self.sample_weight = sample_weight
        self.used = sample_weight > 0
        self.weight = sample_weight[self.used]
        self.workspace = Workspace() if workspace is None else workspace

    def _logits_and_scores(self, theta):
        logits = np.matmul(np.ascontiguousarray(theta), self.ZT,
                           out=self.workspace.get("topk_logits", self.expert_log_density.shape))
        if self.family.selection == "affine":
            return logits, logits
        return logits, np.ascontiguousarray(theta[:, :-1]) @ self.ZT[:-1]

    def active(self, theta):
        """Active sets at ``theta``, expert-major: bool of shape (n_experts, n_samples)."""
        return compute_topk_mask_columns(self._logits_and_scores(theta)[1], self.family.top_k)

    def __call__(self, theta):
        """``L`` at gate parameters ``theta`` (slopes, then intercept), shape (k, d + 1)."""
        logits, scores = self._logits_and_scores(theta)
        # The selected experts' terms alone, in the experts' order: the log-sum-exps add
        # the same terms in the same order as over all experts with -inf for the others.
        shape = (min(self.family.top_k, logits.shape[0]), logits.shape[1])
        top_logits = self.workspace.get("topk_top_logits", shape)
        top_joint = self.workspace.get("topk_top_joint", shape)
        _kernels.active_terms_into(scores, logits, self.expert_log_density, top_logits,
                                   top_joint)
        log_lik = _logsumexp_rows(top_joint, self.workspace, "topk_log_joint")
        log_lik -= _logsumexp_rows(top_logits, self.workspace, "topk_log_norm")
        return float(np.dot(self.weight, log_lik[self.used]))


def compute_log_likelihood(family, X, gate_coef, gate_intercept, expert_log_density,
                           sample_weight):
    """Weighted log-likelihood ``L`` for a top-K gate and fixed expert log-densities.

    Parameters
    ----------
    family : TopKGating
    X : ndarray of shape (n_samples, n_features)
    gate_coef : ndarray of shape (n_experts, n_features)
    gate_intercept : ndarray of shape (n_experts,)
    expert_log_density : ndarray of shape (n_samples, n_experts)
    sample_weight : ndarray of shape (n_samples,)

    Returns
    -------
    float
    """
    likelihood = TopKLikelihood(family, transposed_design(X), np.asarray(expert_log_density).T,
                                sample_weight)
    return likelihood(np.column_stack([gate_coef, gate_intercept]))


class CoordinateLikelihood:
    """``L`` along the gate coordinates of one expert at a time, from that expert's row alone.

    :meth:`focus` describes the samples by the other experts' part (their K-th best score
    and, with ``top_k > 1``, the log-sum-exps over their best ones); :meth:`log_likelihood`
    then gives ``L(theta + t e_jc)`` at several steps ``t`` in one pass. After a move of
    expert ``j``'s parameters, :meth:`focus` on ``j`` again refreshes its row only.

    Expert ``j``'s logits and scores at the steps come from the same matrix product as in
    :class:`TopKLikelihood`, at the parameters ``theta_jc + t`` as rounded, so that a
    sample whose scores tie is decided alike by both.

    Parameters
    ----------
    likelihood : TopKLikelihood
        The data: design, experts' log-densities and sample weights.
    """

    def __init__(self, likelihood):
        self.likelihood = likelihood
        self.affine = likelihood.family.selection == "affine"
        self.top_k = likelihood.family.top_k
        self.ZT = likelihood.ZT
        self.log_density = likelihood.expert_log_density
        self.sample_weight = likelihood.sample_weight
        self.workspace = likelihood.workspace
        self.theta = None
        self.expert = None
        self._others_of = None
        n_side = _CANDIDATE_OFFSETS[-1] + 1
        self._nearest = (np.empty(n_side), np.empty(n_side), np.empty(2, dtype=np.int64),
                         np.empty(2))
        # Rows of the step buffers: the most steps asked for so far (and 2 at least).
        self._rows = 2 * len(_CANDIDATE_OFFSETS) + 1

    def _products(self, theta):
        """Logits and selection scores of the gate parameters ``theta`` (workspace arrays)."""
        shape = (theta.shape[0], self.ZT.shape[1])
        logits = np.matmul(theta, self.ZT, out=self.workspace.get("topk_focus_logits", shape))
        if self.affine:
            return logits, logits
        scores = np.matmul(np.ascontiguousarray(theta[:, :-1]), self.ZT[:-1],
                           out=self.workspace.get("topk_focus_scores", shape))
        return logits, scores

    def focus(self, theta, j):
        """Evaluate along expert ``j``'s coordinates, from gate parameters ``theta``.

        Parameters
        ----------
        theta : ndarray of shape (n_experts, n_features + 1)
            Slopes, then intercept. The other experts' part is recomputed only when their
            rows or ``j`` differ from the previous call's.
        j : int
        """
        self.theta = np.array(theta, dtype=np.float64, order="C")
        self.logits, self.scores = self._products(self.theta)
        self.expert = j
        others = np.delete(self.theta, j, axis=0)
        if self._others_of is None or self._others_of[0] != j or not np.array_equal(
                others, self._others_of[1]):
            self._describe_others(j)
            self._others_of = (j, others)

    def _describe_others(self, j):
        """The other experts' part of every sample (it does not depend on row ``j``)."""
        n_samples = self.ZT.shape[1]
        top_k = self.top_k
        ws = self.workspace

        def buffer(name, dtype=np.float64):
            return ws.get("topk_" + name, (n_samples,), dtype)

        top_logits = ws.get("topk_others_logits", (top_k, n_samples))
        top_joint = ws.get("topk_others_joint", (top_k, n_samples))
        # The K-th best of the others decides whether j is selected.
        self.kth, self.kth_arg = buffer("kth"), buffer("kth_arg", np.int64)
        _kernels.top_others_into(self.scores, self.logits, self.log_density, j, top_logits,
                                 top_joint, self.kth, self.kth_arg)
        if top_k == 1:
            return
        # Selected, j joins the others' best K - 1; not selected, the others' best K count.
        self.log_norm, self.log_mix = buffer("log_norm_others"), buffer("log_mix")
        if top_k == 2:  # the log-sum-exp of one entry is that entry, to the bit
            np.copyto(self.log_norm, top_logits[0])
            np.subtract(top_joint[0], self.log_norm, out=self.log_mix)
        else:
            np.copyto(self.log_norm, column_logsumexp(top_logits[:-1].copy(), ws))
            np.subtract(column_logsumexp(top_joint[:-1].copy(), ws), self.log_norm,
                        out=self.log_mix)
        log_density_j = self.log_density[j]
        with np.errstate(invalid="ignore", over="ignore"):  # rows of weight 0 may hold anything
            self.unselected = np.subtract(_logsumexp_rows(top_joint, ws, "topk_log_joint"),
                                          _logsumexp_rows(top_logits, ws, "topk_log_norm"),
                                          out=buffer("unselected"))
            self.shift = np.maximum(self.log_mix, log_density_j, out=buffer("shift"))
            self.alpha = exp_into(np.subtract(self.log_mix, self.shift, out=buffer("alpha")),
                                  buffer("alpha"), ws)
            self.beta = exp_into(np.subtract(log_density_j, self.shift, out=buffer("beta")),
                                 buffer("beta"), ws)

    def log_likelihood(self, c, steps):
        """``L(theta + t e_jc)`` for every step ``t``, with ``j`` the expert in focus.

        Parameters
        ----------
        c : int
            The coordinate: a column of the design with intercept.
        steps : ndarray of shape (n_steps,)

        Returns
        -------
        ndarray of shape (n_steps,)
        """
        if self.top_k == 1:
            raise ValueError("CoordinateLikelihood.log_likelihood needs top_k > 1; with "
                             "top_k = 1 use scan_top1.")
        j = self.expert
        steps = np.asarray(steps, dtype=np.float64)
        n_steps = len(steps)
        # Two rows at least: a matrix-vector product rounds unlike the likelihood's product.
        rows = np.empty((max(n_steps, 2), self.theta.shape[1]))
        rows[:] = self.theta[j]
        rows[:n_steps, c] += steps
        rows[n_steps:, c] = rows[0, c]
        n_samples = self.ZT.shape[1]
        totals = np.zeros(len(rows))
        # Chunks of samples, so that the steps' temporaries stay a bounded size.
        for start in range(0, n_samples, _CHUNK):
            chunk = slice(start, min(start + _CHUNK, n_samples))
            totals += self._chunk_terms(rows, chunk) @ self.sample_weight[chunk]
        return totals[:n_steps]

    def _chunk_terms(self, rows, chunk):
        """The samples' log-likelihood terms at the parameter rows ``rows`` of expert ``j``.

        Returns
        -------
        ndarray of shape (len(rows), chunk length)
            A workspace array; 0 for the samples of weight 0.
        """
        j = self.expert
        n_rows, width = rows.shape[0], chunk.stop - chunk.start
        self._rows = max(self._rows, n_rows)

        def buffer(name):
            # Leading rows of a C-contiguous array: contiguous, as BLAS output wants.
            return self.workspace.get(f"topk_{name}_{width}", (self._rows, width))[:n_rows]

        ZT = self.ZT[:, chunk]
        step_logits = np.matmul(rows, ZT, out=buffer("step_logits"))
        step_scores = step_logits
        if not self.affine:
            step_scores = np.matmul(np.ascontiguousarray(rows[:, :-1]), ZT[:-1],
                                    out=buffer("step_scores"))
        log_norm, shift = self.log_norm[chunk], self.shift[chunk]
        terms = buffer("terms")
        _kernels.step_gaps_into(step_logits, log_norm, terms)
        np.exp(terms, out=terms)
        n_tiny = _kernels.selected_ratio_into(step_logits, log_norm, self.alpha[chunk],
                                              self.beta[chunk], _RATIO_FLOOR, terms)
        with np.errstate(divide="ignore"):  # a ratio of 0 is recomputed below
            np.log(terms, out=terms)
        if n_tiny:
            _kernels.exact_log_ratio_into(step_logits, log_norm, self.log_mix[chunk],
                                          self.log_density[j, chunk], shift,
                                          _LOG_RATIO_FLOOR, terms)
        _kernels.step_terms_into(step_scores, self.kth[chunk], self.kth_arg[chunk], shift,
                                 self.unselected[chunk], self.sample_weight[chunk], j, terms)
        return terms

    def candidate_steps(self, c):
        """The steps the search tries along coordinate ``c`` (``top_k > 1``).

        The midpoint of the interval between breakpoints that holds the current value,
        and of the intervals :data:`_CANDIDATE_OFFSETS` breakpoints away on each side, the
        outermost intervals represented by a point a margin beyond the extreme breakpoint.

        Returns
        -------
        ndarray
            Ascending; empty if no sample's selection of ``j`` moves along ``c``.
        """
        below, above, counts, extent = self._nearest
        _kernels.nearest_breakpoints_into(self.kth, self.scores[self.expert], self.ZT[c],
                                          below, above, counts, extent)
        n_below, n_above = counts.tolist()
        breaks = below[:n_below].tolist() + above[:n_above].tolist()
        if not breaks:
            return np.empty(0)
        low, high = extent.tolist()
        margin = max(1e-3, 0.01 * (high - low), 0.01 * max(abs(low), abs(high)))
        # Interval i lies between breaks[i - 1] and breaks[i]; 0 lies in interval `here`.
        # When a side is truncated at n_side breakpoints its far end is never reached.
        here, last = n_below, len(breaks)
        steps = []
        for i in sorted({min(last, max(0, here + sign * offset))
                         for offset in (0, *_CANDIDATE_OFFSETS) for sign in (-1, 1)}):
            if i == 0:
                steps.append(low - margin)
            elif i == last:
                steps.append(high + margin)
            else:
                steps.append(0.5 * (breaks[i - 1] + breaks[i]))
        return np.array(steps)

    def best_step(self, c, current_log_lik):
        """The best candidate step along coordinate ``c`` (``top_k > 1``), if it raises ``L``.

        Returns
        -------
        step : float
            0.0 when no candidate raises ``L`` by more than the relative threshold.
        value : float
            ``L`` there.
        """
        steps = self.candidate_steps(c)
        best_step, best_value = 0.0, current_log_lik
        if steps.size == 0:
            return best_step, best_value
        for t, value in zip(steps, self.log_likelihood(c, steps), strict=True):
            if value > best_value + _MIN_RELATIVE_GAIN * abs(best_value):
                best_step, best_value = float(t), float(value)
        return best_step, best_value

    def scan_top1(self, c, current_log_lik):
        """Exact maximiser of ``L`` along coordinate ``c`` (``top_k = 1``).

        The selected weight is 1, so ``L(t)`` is piecewise constant: a sorted scan of the
        breakpoints gives it on every interval.

        Returns
        -------
        step : float
        value : float
        """
        j = self.expert
        col = self.ZT[c]
        scores_j = self.scores[j]
        threshold, other = self.kth, self.kth_arg
        sample_weight = self.sample_weight
        density_other = self.log_density[other, np.arange(len(col))]
        gain_if_selected = sample_weight * (self.log_density[j] - density_other)
        moving = col != 0
        breaks = (threshold[moving] - scores_j[moving]) / col[moving]
        # L at t -> -inf: rows with col > 0 lose j, rows with col < 0 take it; rows with
        # col = 0 keep their current selection.
        selected_now = (scores_j > threshold) | ((scores_j == threshold) & (j < other))
        static = ~moving & selected_now
        base = (np.dot(sample_weight, density_other)
                + gain_if_selected[static].sum() + gain_if_selected[moving & (col < 0)].sum())
        increments = np.where(col[moving] > 0, 1.0, -1.0) * gain_if_selected[moving]
        order = np.argsort(breaks, kind="stable")
        breaks, increments = breaks[order], increments[order]
        if breaks.size == 0:
            return 0.0, current_log_lik
        values = base + np.concatenate([[0.0], np.cumsum(increments)])
        # Intervals: (-inf, b0), (b0, b1), ..., (b_last, inf); several breakpoints may
        # coincide, and the value just after a run of equal breakpoints is the one that counts.
        last_of_run = np.append(breaks[1:] != breaks[:-1], True)
        keep = np.concatenate([[True], last_of_run])
        values = values[keep]
        points = _interval_points(breaks)
        best = int(np.argmax(values))
        if values[best] > current_log_lik + _MIN_RELATIVE_GAIN * abs(current_log_lik):
            return float(points[best]), float(values[best])
        return 0.0, current_log_lik


def _interval_points(breaks):
    """Sorted breakpoints -> one interior point per interval (including both ends)."""
    breaks = np.unique(breaks)
    span = breaks[-1] - breaks[0]
    margin = max(1e-3, 0.01 * span, 0.01 * np.max(np.abs(breaks)))
    mids = 0.5 * (breaks[:-1] + breaks[1:])
    return np.concatenate([[breaks[0] - margin], mids, [breaks[-1] + margin]])


def move_boundaries(likelihood, gate_coef, gate_intercept, log_lik=None):
    """One sweep of coordinate-wise search on L over the free gate parameters.

    Along one gate coordinate a sample's selection of expert ``j`` flips at one
    breakpoint. With ``top_k = 1``, ``L`` is piecewise constant and maximised exactly by a
    sorted scan of the breakpoints; with ``top_k > 1`` the within-selection weights vary
    too, and ``L`` is evaluated at the midpoints of the intervals up to
    ``_CANDIDATE_OFFSETS[-1]`` breakpoints from the current value
    (:meth:`CoordinateLikelihood.candidate_steps`). A move is taken only if ``L`` rises.

    Parameters
    ----------
    likelihood : TopKLikelihood
        ``L`` of these data with the experts held.
    gate_coef : ndarray of shape (n_experts, n_features)
    gate_intercept : ndarray of shape (n_experts,)
    log_lik : float, optional
        ``likelihood`` at the given parameters, if known.

    Returns
    -------
    gate_coef, gate_intercept
        ``L`` is no lower than at the given parameters.
    """
    family = likelihood.family
    n_experts, n_features = gate_coef.shape
    theta = np.column_stack([gate_coef, gate_intercept])
    # Linear selection: the intercept does not enter the selection scores.
    columns = range(n_features + 1) if family.selection == "affine" else range(n_features)
    if log_lik is None:
        log_lik = likelihood(theta)
    search = CoordinateLikelihood(likelihood)
    for j in range(n_experts - 1):
        search.focus(theta, j)
        for c in columns:
            if family.top_k == 1:
                step, _ = search.scan_top1(c, log_lik)
            else:
                step, _ = search.best_step(c, log_lik)
            if step != 0.0:
                theta[j, c] += step
                # Recompute rather than trust the search, so L never falls by round-off.
                new = likelihood(theta)
                if new >= log_lik:
                    log_lik = new
                    search.focus(theta, j)
                else:
                    theta[j, c] -= step
    return np.ascontiguousarray(theta[:, :-1]), np.ascontiguousarray(theta[:, -1])
