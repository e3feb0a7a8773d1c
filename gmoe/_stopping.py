r"""When EM stops: the Newton decrement of the log-likelihood below an absolute ``tol``.

The gap to the optimum predicted by the quadratic model of the total log-likelihood ``L``
at the current point is the Newton decrement

.. math::

    \Delta = \tfrac12\, g^\top I^{-1} g, \qquad g = \nabla L, \quad I = -\nabla^2 L,

in total log-likelihood units: what a full Newton step would still gain. Unlike a change of
``L`` relative to ``|L|`` (which grows like ``n``, so that the absolute threshold loosens as
``n`` grows), its meaning does not depend on ``n``.

``I`` is taken in its correlation form ``D^{-1/2} I D^{-1/2}`` (``D`` its diagonal), so that
nothing depends on the parameters' units, and its eigenvalues are clipped from below at
``1e-10`` times the largest, in absolute value: an over-specified fit is singular at the
optimum (two experts estimating one component), and a flat direction then gets a large
rather than an infinite predicted gain. A variance held at its floor is a bound, not a
stationary point: it is left out.

Where ``I`` has negative eigenvalues ``L`` curves upward (a saddle, or the plateaus that
over-specified fits cross) and the quadratic model predicts nothing. There ``L`` itself is
searched along each such eigenvector (at most three), both ways, with steps of 1/2, 2, 8,
... correlation units while it rises; the best gain found is the *curvature gain*. A run has
converged when the decrement and the curvature gain are both at most ``tol``, and the last
step (an EM step or a SQUAREM cycle) raised ``L`` by at most ``tol`` or was a Newton move
that the quadratic model
predicted (its rise within 10 % of the prediction, on an information with no direction
flatter than 1e-6): an EM step that gains more than ``tol`` is itself a lower bound on the
gap, and along the flat directions of an over-specified fit (a gate sharpening without
bound towards a supremum of ``L``) the model can predict ``1e-4`` where EM still gains
``1e-3`` a step, for a hundred steps.

A check that fails has the derivatives in hand, so it also proposes a move: the
(clipped) Newton step, halved until ``L`` rises, and the best point of the curvature
search. The better of the two is taken when it raises ``L`` (so EM stays monotone). Along
the flat directions of an over-specified fit EM's steps shrink faster than the remaining
gap, and it can crawl for thousands of iterations; these moves cross such stretches, and
leave saddles that EM never leaves.

The derivatives are the analytic score and observed information of
:mod:`gmoe.inference` (summed block by block in one compiled pass for the softmax and
temperature gates, and for each active set of a sparse top-K gate). They cost a few EM
iterations, so a cheap filter comes first: the decrement is computed only when the last
iteration raised ``L`` by at most ``max(tol, 1e-6 |L|)`` (a relative change of ``L``, only
a filter here), and after a failed check the next one waits 1, 2, 4, ... up to 16
iterations (1 again after a move that gained more than ``tol``).

Top-K gates with ``top_k < n_experts`` are not differentiable in the gate: the active sets
jump, and a maximum can sit on a selection boundary, where the gradient in the gate (the
active sets held) need not vanish. The experts never move the active sets, and ``L`` is
smooth in them. The decrement is taken with every row's active set held (the rows grouped
by active set, each group a softmax mixture of its experts). The rule: ``L`` risen by at
most ``tol`` over the last 5 iterations (which covers the gate's moves across the
selection), and either that decrement at most ``tol``, or, when the Newton step halved
down to 1/4096 never raises the true top-K ``L`` (a kink: the gate sits on a boundary),
the decrement of the experts alone at most ``tol``; and no gate-scale move (every gate
times a factor, or the gap between a pair of experts' mean gate and another expert's
times a factor, from 1/2 to 4096) raises ``L`` by more than ``tol``: a pair selected
together can sharpen against the others where every short step of one gate coordinate
crosses a boundary. Only stopping waits for the window:
the checks and their moves do not (after a check that meets the rule early, the next one
waits until ``L`` has settled, or has risen by more than ``tol`` since that check, which
puts it out of date). EM on a top-K gate can gain almost nothing per step
while a joint move of gate and experts still gains a lot; waiting for the window between
moves made such fits crawl (~19 EM steps between moves that each gained ~0.1, hundreds of
steps in all).
"""

import numpy as np

from ._blocks import ColumnBlocks
from ._expert_major import transposed_design
from ._observed_information import (
    compute_linear_gate_derivatives,
    linear_gate_log_likelihood,
)
from .inference import _compute_log_likelihood_derivatives, _Parametrisation
from .model import MixingMeasure, conditional_log_density

__all__ = ["TOPK_WINDOW", "Decrement", "StoppingRule", "compute_newton_decrement"]

# Eigenvalues of the information's correlation form are clipped at this times the largest;
# below minus this times the largest they are negative curvature (rounding leaves the
# eigenvalues of a singular information within ~1e-13 of it).
_EIGEN_FLOOR = 1e-10
# Negative-curvature directions searched, at most; the search's steps (correlation units).
_MAX_DIRECTIONS = 3
_FIRST_STEP, _STEP_GROWTH, _MAX_STEP = 0.5, 4.0, 1e4
# Halvings of the Newton step before it is given up.
_MAX_HALVINGS = 12
#: Top-K gate-scale moves (:func:`_search_gate_scales`): the factors tried, sharper then
#: softer, and the largest gate entry tried (beyond it the logits' differences, and so
#: ``L``, are left to round-off).
_GATE_SCALE_FACTORS = (2.0, 4.0, 16.0, 256.0, 4096.0, 0.5)
_MAX_GATE_ENTRY = 1e8
# The decrement is checked again after at most this many iterations.
_MAX_CHECK_INTERVAL = 16
# The filter: the last iteration raised L by at most max(tol, this times |L|).
FILTER_RTOL = 1e-6
# Top-K (K < k): L must have risen by at most tol over this many iterations.
TOPK_WINDOW = 5
# A Newton move whose rise of L is within this fraction of the quadratic model's
# prediction, on an information whose smallest eigenvalue (correlation form) is at least
# MODEL_MIN_CURVATURE, shows the model holding where it lands: its decrement is trusted
# there without an EM step to confirm it.
MODEL_AGREEMENT = 0.1
MODEL_MIN_CURVATURE = 1e-6
# Bytes of one (rows, n_experts, n_params) array of the derivatives, per chunk of a row
# source (the derivatives hold a few such arrays at once), and the fewest rows of a chunk.
_CHUNK_BYTES = 1 << 19
_MIN_CHUNK_ROWS = 256


class Decrement:
    """The Newton decrement at one point, and what ``L`` gains along upward curvature.

    Attributes
    ----------
    gap : float
        ``g' I^{-1} g / 2`` (clipped), total log-likelihood units; ``inf`` when the
        derivatives are not finite.
    min_curvature : float
        Smallest eigenvalue of the information's correlation form (< 0: not concave).
    curvature_gain : float
        The largest rise of ``L`` found along the directions of negative curvature (0 when
        there are none) or, for a top-K gate at a point that otherwise meets the rule,
        along a gate-scale move when that rise exceeds ``tol``.
    move : MixingMeasure or None
        The best point proposed (Newton step, curvature search or a top-K gate-scale
        move) when it raises ``L``.
    move_gain : float
        Its rise of ``L`` (0 without a move).
    move_predicted : float or None
        The quadratic model's rise for the move when it is the (halved) Newton step, else
        None.
    smooth_gap : float
        The decrement of the parameters in which ``L`` is smooth: the experts' for a top-K
        gate with ``top_k < n_experts``, else ``gap``.
    kink : bool
        Top-K: the Newton step, halved down to 1/4096, never raised ``L``: the gate sits
        on a selection boundary, where its held gradient need not vanish.
    """

    def __init__(self, gap, min_curvature, curvature_gain=0.0, move=None, move_gain=0.0,
                 smooth_gap=None):
        self.gap = float(gap)
        self.min_curvature = float(min_curvature)
        self.curvature_gain = float(curvature_gain)
        self.move = move
        self.move_gain = float(move_gain)
        self.move_predicted = None
        self.smooth_gap = self.gap if smooth_gap is None else float(smooth_gap)
        self.kink = False

    @property
    def model_holds(self):
        """Whether the quadratic model can be trusted where the move lands.

        The move is a Newton step whose rise of ``L`` the model predicted within
        :data:`MODEL_AGREEMENT` (the trust-region ratio near 1), and the information has
        no direction flatter than :data:`MODEL_MIN_CURVATURE` (correlation form): along
        such a direction the step tests nothing, and ``L`` can keep rising far beyond
        the model's reach (an over-specified fit's gate sharpening without bound).
        """
        return (self.move is not None and self.move_predicted is not None
                and self.move_predicted > 0 and self.min_curvature >= MODEL_MIN_CURVATURE
                and abs(self.move_gain / self.move_predicted - 1.0) <= MODEL_AGREEMENT)

    @property
    def predicted_gain(self):
        """The larger of the decrement (the smooth part's at a kink) and the curvature gain."""
        return max(self.smooth_gap if self.kink else self.gap, self.curvature_gain)

    def converged(self, tol):
        """Whether :attr:`predicted_gain` is at most ``tol``."""
        return self.predicted_gain <= tol

    def __repr__(self):
        kink = f", smooth_gap={self.smooth_gap:.4g}, kink=True" if self.kink else ""
        return (f"Decrement(gap={self.gap:.4g}, min_curvature={self.min_curvature:.3g}, "
                f"curvature_gain={self.curvature_gain:.3g}, "
                f"move_gain={self.move_gain:.3g}{kink})")


def _eigen_decrement(score, info):
    """Clipped decrement and Newton step, and the correlation form's eigen-decomposition.

    Returns ``(gap, step, eigval, eigvec, scale, floor)``; ``step`` is in parameter units.
    """
    scale = np.sqrt(np.abs(np.diag(info)))
    scale[scale == 0] = 1.0
    corr = info / np.outer(scale, scale)
    eigval, eigvec = np.linalg.eigh(0.5 * (corr + corr.T))
    floor = _EIGEN_FLOOR * max(float(np.max(np.abs(eigval))), np.finfo(np.float64).tiny)
    clipped = np.maximum(np.abs(eigval), floor)
    coords = eigvec.T @ (score / scale)
    step = (eigvec @ (coords / clipped)) / scale
    return (0.5 * float(np.sum(coords * coords / clipped)), step, eigval, eigvec, scale,
            floor)


def _free_indices(param, measure, var_floor):
    """Parameter indices left in the decrement: all but the variances at the floor."""
    at_floor = measure.expert_var <= var_floor * (1.0 + 1e-9)
    drop = param.expert_idx[at_floor, param.experts.variance_position]
    return np.setdiff1d(np.arange(param.size), drop)


def compute_newton_decrement(measure, X, y, sample_weight, *, learn_temperature=False,
                             var_floor=0.0, tol=None):
    """The Newton decrement of the total log-likelihood at ``measure``, and a move.

    Parameters
    ----------
    measure : MixingMeasure
    X : ndarray of shape (n_samples, n_features), or a row source
        A row source (``gmoe._blocks.RowBlocks``) has ``row_chunks()``, yielding the
        design, targets and weights a block of rows at a time; ``y`` and
        ``sample_weight`` are then None, and the sums run block by block for the softmax
        and temperature gates (:func:`gmoe._observed_information.compute_linear_gate_derivatives`),
        chunk by chunk for the others (bounded memory either way). The held-selection
        derivatives of a sparse top-K gate need arrays.
    y, sample_weight : ndarray of shape (n_samples,) or None
    learn_temperature : bool, default=False
        Whether an activation gate's ``log tau`` is a parameter.
    var_floor : float, default=0.0
        Variances at this floor are left out; the searches stay above it.
    tol : float, optional
        When given and the point meets the rule (decrement and curvature gain at most
        ``tol``), no Newton move is searched for; a sparse top-K gate's point is first
        tried along the gate-scale moves (:func:`_search_gate_scales`), and a rise above
        ``tol`` there is its curvature gain and its move. Without ``tol`` those moves are
        not tried.

    Returns
    -------
    Decrement
    """
    selected = measure.family.selected_experts()
    sparse = (not measure.family.differentiable and selected is not None
              and selected < measure.n_experts)
    if sparse:
        param, log_lik, score, hessian = _held_selection_derivatives(measure, X, y,
                                                                     sample_weight)
        on_linear_blocks = False

        def rebuild(softmax):
            return softmax.replace(gating=measure.family)

    else:
        param = _Parametrisation(measure, learn_temperature)
        derivatives = None
        if hasattr(X, "row_chunks"):
            # Softmax and temperature gates: one compiled pass per block, on its threads.
            derivatives = compute_linear_gate_derivatives(param, measure, X)
        on_linear_blocks = derivatives is not None
        if derivatives is None:
            chunks = _row_chunks(X, y, sample_weight, measure.n_experts * param.size)
            derivatives = _summed_derivatives(param, param.to_vector(measure), chunks)
        log_lik, score, hessian = derivatives

        def rebuild(same):
            return same
    keep = _free_indices(param, measure, var_floor)
    if keep.size == 0:
        return Decrement(0.0, 0.0)
    score, info = score[keep], -hessian[np.ix_(keep, keep)]
    if not (np.isfinite(log_lik) and np.all(np.isfinite(score)) and np.all(np.isfinite(info))):
        return Decrement(np.inf, np.nan)
    gap, step, eigval, eigvec, scale, floor = _eigen_decrement(score, info)
    smooth_gap = gap
    if sparse:
        # The gate moves the active sets, and a maximum can sit on a selection boundary;
        # the experts never move them.
        experts = keep >= param.n_gate
        smooth_gap = _eigen_decrement(score[experts], info[np.ix_(experts, experts)])[0]
    vec = _vector(param, measure)
    if on_linear_blocks:
        def value_of(point):
            # By the pass that gave log_lik (gains are exact zeros where a search returns).
            return linear_gate_log_likelihood(point, X)
    else:
        # L alone holds only the design's and (rows, n_experts) arrays: its chunks can be
        # that much longer.
        value_chunks = _row_chunks(X, y, sample_weight,
                                   measure.n_features + 1 + measure.n_experts)

        def value_of(point):
            return sum(float(np.dot(wc, conditional_log_density(point, Xc, yc)))
                       for Xc, yc, wc in value_chunks())

    def gain_at(candidate):
        """Rise of L at a parameter vector, and its measure (-inf when not allowed)."""
        try:
            # (A long step in log tau overflows its exp: the measure then refuses tau.)
            with np.errstate(over="ignore"):
                point = rebuild(param.to_measure(candidate))
        except ValueError:  # a variance through 0, a temperature out of range
            return -np.inf, None
        if np.any(point.expert_var < var_floor):
            return -np.inf, None
        # The searches try long steps, which can leave the parameters' domain (a
        # temperature underflowing to 0, logits overflowing): a non-finite L is no gain,
        # and numpy's warnings about such a trial point would only alarm the user.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            value = value_of(point)
        return (value - log_lik if np.isfinite(value) else -np.inf), point

    negative = np.flatnonzero(eigval < -floor)[:_MAX_DIRECTIONS]
    directions = np.zeros((negative.size, param.size))
    directions[:, keep] = (eigvec[:, negative] / scale[:, None]).T
    curvature_gain, move = _search_upward(gain_at, vec, directions)
    result = Decrement(gap, eigval[0], curvature_gain, move, curvature_gain, smooth_gap)

    def verified(result):
        # A top-K point meets the rule locally (its decrement, or at a kink its experts'
        # alone). The gate-scale moves keep each moved pair's order (their difference is
        # held) and can rise where every short step in the gate crosses a selection
        # boundary: try them before the point counts as converged.
        if sparse and tol is not None and result.converged(tol):
            gain, point = _search_gate_scales(gain_at, vec, param, measure)
            if gain > tol:
                result.curvature_gain = max(result.curvature_gain, gain)
                if gain > result.move_gain:
                    result.move, result.move_gain, result.move_predicted = point, gain, None
        return result

    if tol is not None and result.converged(tol):
        return verified(result)
    full_step = np.zeros(param.size)
    full_step[keep] = step
    newton_gain, newton_point, fraction = _backtrack(gain_at, vec, full_step)
    if newton_gain > result.move_gain:
        result.move, result.move_gain = newton_point, newton_gain
        # The quadratic model's gain along the step: gap (2 t - t^2) at fraction t.
        result.move_predicted = gap * fraction * (2.0 - fraction)
    result.kink = sparse and newton_gain == 0.0
    return verified(result)


def _smooth_directions(param, measure, X):
    """A top-K fit's moves along which ``L`` is smooth, as columns in ``param``'s layout.

    The experts' parameters (unit columns), and the gate moves that hold every selection
    boundary that the rows cross (:meth:`~gmoe.gates.TopKGating.boundary_holding_directions`,
    mapped from the free gate rows to ``param``'s gate entries).
    """
    experts = np.eye(param.size)[:, param.n_gate:]
    # The layout's gate is relative to the last expert (the selection's order and the
    # gate's differences do not change when every row moves alike); a layout pinned
    # elsewhere keeps the experts' part alone.
    if list(np.flatnonzero(param.gate_int_idx < 0)) != [measure.n_experts - 1]:
        return experts
    theta = np.column_stack([measure.gate_coef, measure.gate_intercept])
    theta = theta - theta[-1]
    basis = measure.family.boundary_holding_directions(theta, transposed_design(X))
    if basis is None:
        return experts
    # The basis moves the free rows; the reference's row of each move is 0.
    rows = np.zeros((measure.n_experts, theta.shape[1], basis.shape[1]))
    rows[:-1] = basis.reshape(measure.n_experts - 1, theta.shape[1], -1)
    return np.column_stack([_in_layout(param, rows), experts])


def _in_layout(param, gate_rows):
    """Moves of the gate rows ``(beta1, beta0)``, shape (k, d + 1, ...), in ``param``'s layout.

    Entries the layout pins are dropped; the result has shape (param.size, ...), 0 off the
    gate.
    """
    index = np.column_stack([param.gate_coef_idx, param.gate_int_idx])
    free = index >= 0
    moves = np.zeros((param.size, *gate_rows.shape[2:]))
    moves[index[free]] = gate_rows[free]
    return moves


def smooth_decrement(measure, X, y, sample_weight):
    """The Newton decrement along the moves in which ``L`` is smooth, a check of a fit.

    For a top-K gate with ``top_k < n_experts``: along the experts' parameters and the
    gate moves that hold every selection boundary the rows cross, with every row's
    selection held (:func:`_held_selection_derivatives`); for the other gates, the
    ordinary decrement. A fit whose gate stopped short of the within-selection optimum
    (the boundaries in place, the selected experts' weights not) has a large one, which
    the experts' decrement of the stopping rule does not see. The rule does not use it:
    an over-specified top-K fit whose gate sharpens along a ridge towards a supremum can
    keep a decrement above ``tol`` along the scale of a held pair that no EM step
    realises.

    Parameters
    ----------
    measure : MixingMeasure
    X : ndarray of shape (n_samples, n_features)
    y, sample_weight : ndarray of shape (n_samples,)

    Returns
    -------
    float
        Total log-likelihood units.
    """
    selected = measure.family.selected_experts()
    if measure.family.differentiable or selected is None or selected >= measure.n_experts:
        return compute_newton_decrement(measure, X, y, sample_weight).gap
    param, _, score, hessian = _held_selection_derivatives(measure, X, y, sample_weight)
    smooth = _smooth_directions(param, measure, X)
    return _eigen_decrement(smooth.T @ score, -(smooth.T @ hessian @ smooth))[0]


def _gate_scale_shifts(measure):
    """Gate rows ``theta`` and the shifts ``D`` of the gate-scale moves ``theta + (f - 1) D``.

    ``D`` is ``theta`` itself (every row times ``f``: a temperature), and, for every pair
    of experts and every other expert, the pair's mean row minus the other's, on the
    pair's rows (the gap between the pair and that expert times ``f``, the pair's
    difference held). Each is re-referenced to the last expert, so the reference gate
    stays 0 and no move depends on which expert is the reference.
    """
    k = measure.n_experts
    theta = np.column_stack([measure.gate_coef, measure.gate_intercept])
    theta = theta - theta[-1]
    shifts = [theta]
    for i in range(k):
        for j in range(i + 1, k):
            mean = 0.5 * (theta[i] + theta[j])
            for other in (o for o in range(k) if o not in (i, j)):
                shift = np.zeros_like(theta)
                shift[[i, j]] = mean - theta[other]
                shifts.append(shift - shift[-1])
    return theta, [shift for shift in shifts if np.any(shift)]


def _search_gate_scales(gain_at, vec, param, measure):
    """The best rise of ``L`` over the gate-scale moves, and its point.

    Every factor of :data:`_GATE_SCALE_FACTORS` is tried along every shift of
    :func:`_gate_scale_shifts` (a ridge can dip before it rises), except where a gate
    entry would exceed :data:`_MAX_GATE_ENTRY`. A top-K fit with more selected experts
    than a cell needs can rise along them towards a limit (a pair selected together
    sharpening against the others) where every short step of one gate coordinate
    crosses a selection boundary.
    """
    theta, shifts = _gate_scale_shifts(measure)
    best_gain, best = 0.0, None
    for shift in shifts:
        direction = _in_layout(param, shift)
        for factor in _GATE_SCALE_FACTORS:
            if np.max(np.abs(theta + (factor - 1.0) * shift)) > _MAX_GATE_ENTRY:
                continue
            gain, point = gain_at(vec + (factor - 1.0) * direction)
            if gain > best_gain:
                best_gain, best = gain, point
    return best_gain, best


def _row_chunks(X, y, sample_weight, width):
    """A function returning the rows' chunks ``(X, y, sample_weight)``, in order.

    Arrays are one chunk; a row source's chunks are short enough that the derivatives'
    (rows, n_experts, n_params) arrays (``width = n_experts * n_params`` per row) take
    about :data:`_CHUNK_BYTES` each.
    """
    if not hasattr(X, "row_chunks"):
        return lambda: [(X, y, sample_weight)]
    rows = max(_MIN_CHUNK_ROWS, _CHUNK_BYTES // (8 * width))
    return lambda: X.row_chunks(rows)


def _summed_derivatives(param, vec, chunks):
    """Log-likelihood, score and Hessian summed over the row chunks, in their order."""
    total = None
    for Xc, yc, wc in chunks():
        part = _compute_log_likelihood_derivatives(param, vec, Xc, yc, wc)
        total = part if total is None else tuple(a + b for a, b in zip(total, part,
                                                                        strict=True))
    return total


def _backtrack(gain_at, vec, step):
    """The first of the steps ``step, step / 2, ...`` that raises ``L``.

    Returns ``(gain, measure, fraction)``; ``(0.0, None, 0.0)`` when none does.
    """
    fraction = 1.0
    for _ in range(_MAX_HALVINGS):
        gain, point = gain_at(vec + fraction * step)
        if gain > 0:
            return gain, point, fraction
        fraction *= 0.5
    return 0.0, None, 0.0


def _vector(param, measure):
    """The parameter vector of ``measure`` in ``param``'s layout (softmax for top-K)."""
    if param.family != measure.family:  # the held-selection layout is a softmax gate's
        measure = MixingMeasure(measure.gate_coef, measure.gate_intercept, measure.expert_coef,
                                measure.expert_intercept, measure.expert_var)
    return param.to_vector(measure)


def _search_upward(gain_at, vec, directions):
    """The best rise of ``L`` along ``directions`` (both ways) and its point."""
    best_gain, best = 0.0, None
    for direction in directions:
        for sign in (1.0, -1.0):
            step, previous = _FIRST_STEP, 0.0
            while step <= _MAX_STEP:
                gain, point = gain_at(vec + sign * step * direction)
                if not gain > previous:
                    break
                previous = gain
                if gain > best_gain:
                    best_gain, best = gain, point
                step *= _STEP_GROWTH
    return best_gain, best


def _held_selection_derivatives(measure, X, y, sample_weight):
    """Score and Hessian of a top-K log-likelihood with every row's active set held.

    The rows sharing an active set ``S`` follow a softmax mixture of the experts of ``S``
    alone, whose gate, relative to the last expert of ``S``, is a difference of the full
    gate's rows. Each group's derivatives (:func:`_active_set_derivatives`) are mapped
    onto the parameters of the full gate (the last expert the reference) by that linear
    map. Returns the layout (a softmax :class:`~gmoe.inference._Parametrisation`), the
    log-likelihood, the score and the Hessian.
    """
    k = measure.n_experts
    softmax = MixingMeasure(measure.gate_coef, measure.gate_intercept, measure.expert_coef,
                            measure.expert_intercept, measure.expert_var)
    full = _Parametrisation(softmax)
    log_lik = 0.0
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
        sub_log_lik, sub_score, sub_hessian = _active_set_derivatives(
            param, sub, X[rows], y[rows], sample_weight[rows])
        log_lik += sub_log_lik
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
    return full, log_lik, score, hessian


def _active_set_derivatives(param, sub, X, y, sample_weight):
    """Log-likelihood, score and Hessian of one active set's softmax mixture on its rows.

    The compiled block pass of the softmax gate's information where it applies (a
    softmax of linear logits with Gaussian linear experts), the general derivatives
    otherwise; the two agree to round-off.
    """
    # The pass reads no responsibilities: a zero view stands in for them.
    rows = ColumnBlocks(transposed_design(X), np.broadcast_to(0.0, (sub.n_experts, len(y))),
                        y=y, sample_weight=sample_weight)
    derivatives = compute_linear_gate_derivatives(param, sub, rows)
    if derivatives is None:
        derivatives = _compute_log_likelihood_derivatives(param, param.to_vector(sub), X, y,
                                                          sample_weight)
    return derivatives


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
        most ``tol`` over the last ``window`` iterations to stop. When 0, the last step
        must have raised ``L`` by at most ``tol``, or have been a Newton move the model
        predicted (:attr:`Decrement.model_holds`). The checks and their moves do not wait
        for either, except after a check that met the rule: the next one waits until
        ``L`` has settled or has risen by more than ``tol`` since.
    enabled : bool, default=True
        When False the rule only records: it never checks, never stops, never moves.
    filter_rtol : float, default=1e-6
        The filter lets a check through when the last iteration raised ``L`` by at most
        ``max(tol, filter_rtol * |L|)``.

    Attributes
    ----------
    decrement : Decrement or None
        The last one computed.
    n_checks : int
        Decrements computed.
    """

    def __init__(self, tol, evaluate, *, window=0, enabled=True, filter_rtol=FILTER_RTOL):
        self.enabled = bool(enabled)
        self.filter_rtol = float(filter_rtol)
        self.tol = float(tol)
        self.evaluate = evaluate
        self.window = int(window)
        self.decrement = None
        self.n_checks = 0
        self._history = []
        self._wait = 1
        self._next_check = 0
        self._evaluated_at = -1
        self._move = None
        # L at the last check that met the rule before L settled, else None.
        self._met_at = None
        # Whether the latest iterate is a Newton move whose rise the model predicted.
        self._moved_where_model_holds = False

    def update(self, log_lik, params):
        """Record the total log-likelihood of a new iterate; True when converged."""
        history = self._history
        history.append(float(log_lik))
        n = len(history) - 1  # iterations so far (the first entry is the start)
        # Whether this iterate is a Newton move whose rise the model predicted.
        moved_where_model_holds, self._moved_where_model_holds = (
            self._moved_where_model_holds, False)
        threshold = max(self.tol, self.filter_rtol * abs(history[-1]))
        if not self.enabled or n < 1 or history[-1] - history[-2] > threshold \
                or n < self._next_check:
            return False
        if self.window:
            settled = n >= self.window and history[-1] - history[-1 - self.window] <= self.tol
        else:
            # The last step raised L by at most tol, or was a Newton move the quadratic
            # model predicted: where EM still gains more than tol a step while the model
            # predicts less (a crawl along an over-specified fit's flat directions), the
            # model is wrong about the gap, and EM's own rises decide.
            settled = history[-1] - history[-2] <= self.tol or moved_where_model_holds
        if not settled and self._met_at is not None and (
                not self.window or history[-1] - self._met_at <= self.tol):
            # A check met the rule; only L's settling is missing. Smooth gates wait for a
            # step that gains at most tol (checks meanwhile would meet the rule again and
            # could not stop the run); top-K checks again once L has risen by more than
            # tol since (that check is then out of date: its moves can follow each other).
            return False
        self.decrement = self.evaluate(params)
        self.n_checks += 1
        self._evaluated_at = len(history)
        # A move of an earlier check is stale now, whatever this one finds.
        self._move = None
        if self.decrement.converged(self.tol):
            # Checked before L settled (so that the moves can follow each other while EM
            # crawls): stop only once it has.
            self._met_at = None if settled else history[-1]
            return settled
        self._met_at = None
        self._move = self.decrement.move
        if self.decrement.move_gain > self.tol:
            # The move does what EM could not: check (and move) again soon.
            self._wait = 1
        self._next_check = n + self._wait
        self._wait = min(2 * self._wait, _MAX_CHECK_INTERVAL)
        return False

    def take_move(self):
        """The move proposed by a check of the latest iterate (once), or None.

        It raises ``L``: the run continues from there.
        """
        move, self._move = self._move, None
        # Only a move proposed at the latest iterate: an older one is stale.
        if self._evaluated_at != len(self._history):
            return None
        self._moved_where_model_holds = move is not None and self.decrement.model_holds
        return move

    def final(self, params):
        """The decrement at the run's last iterate (computed if not already)."""
        if self.decrement is None or self._evaluated_at != len(self._history):
            self.decrement = self.evaluate(params)
            self.n_checks += 1
            self._evaluated_at = len(self._history)
        return self.decrement
