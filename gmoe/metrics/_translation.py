"""The translation of a Voronoi loss: the infimum over the slope shift ``t1`` (private).

The loss of a fit against a truth depends on a common translation ``(t1, t2)`` of the gate
parameters; ``t2`` has a closed form (:func:`._cells._minimise_scale`), ``t1`` is searched
here, and the top-1 truth's least-squares alignment lives here too.

One feature (``d = 1``): an exact search. Let ``c_ij = beta1*_j - beta1_i`` (the shift that
carries fitted slope ``i`` onto true slope ``j``) and ``e_ij`` the expert part of the
distance. Fitted atom ``i`` changes cell where ``|t - c_ij| + e_ij = |t - c_il| + e_il``,
i.e. at ``t = (c_ij + c_il +- (e_il - e_ij)) / 2``, and its slope term has its kink at
``c_{i, cell}``. Between consecutive points of this finite set the cells are constant and
the loss is a convex function of ``t1``: each ``beta1`` term is ``w_i |t - c_i|^r`` with
``r >= 1``, the rest does not depend on ``t1``, the top-K sum of convex terms is convex, and
minimising a jointly convex function over ``s`` leaves a convex function. So the infimum is
the smallest of

* the loss at each special point;
* on each interval, the limits of the loss (with the interval's cells) at its two ends,
  which is where the infimum lies when the cells change and the loss jumps (it is then
  approached from inside the interval, and the reported shift is a point within
  ``~1e-12 (1 + |t1|)`` of the end);
* for D2 and the top-K loss, the minimum inside each interval (for D1 the loss is linear
  between the points: no interior minimum). D2: only the ``beta1`` terms move, so the
  minimum is the root of the loss's derivative, found by Newton's method where the
  derivative changes sign over the interval. Top-K (whose derivative also depends on which
  cells are the K largest and on the optimal ``s``): by refining a grid of ``_GRID``
  points around its best point, with the convexity bound ``f_b - max(f_{b-1} - f_b,
  f_{b+1} - f_b)`` on the bracket's minimum to discard intervals that cannot beat the best
  value and to stop within ``_GAP`` relative.

Outside the outermost points every term grows with ``|t1|``: no minimum there.

Among tied minima (within ``_TIE`` relative) an attained one is preferred to a limit, then
the smallest ``|t1|`` (the least translation). Exponents below 1 (a user's ``rbar(m) <
1``) break the convexity; the search is then exact at the points and limits only.

Several features (``d >= 2``): the loss is evaluated at ``t1 = 0`` and at every candidate
``c_ij``, then Nelder-Mead runs from the best two (a local search: it can stop above the
infimum when the loss has several basins, as it did for one feature before the exact
search). Its objective, :meth:`_Problem.objective`, is the loss bit for bit.
"""

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from ._cells import _check_pair, _pairings, _Problem, _Side, _side

#: Grid points per interval and round of the search inside the intervals.
_GRID = 17
#: The search inside an interval stops when the bracket's minimum can be at most this much
#: (relative) below its best value.
_GAP = 1e-13
#: Relative difference under which two candidate values tie.
_TIE = 1e-12


# --------------------------------------------------------------- one feature: exact
def _special_points(problem):
    """Every ``c_ij``, every shift where a cell changes, and 0: sorted, unique."""
    c = problem.true.beta1[None, :, 0] - problem.fit.beta1[:, None, 0]      # (k, k*)
    e = problem.expert_dist
    points = [np.zeros(1), c.ravel()]
    for j in range(problem.true.k):
        for m in range(j + 1, problem.true.k):
            gap, total = e[:, m] - e[:, j], c[:, j] + c[:, m]
            points += [0.5 * (total + gap), 0.5 * (total - gap)]
    points = np.unique(np.concatenate(points))
    return points[np.isfinite(points)]


def _interval_minima(problem, lo, hi, cells, bound):
    """Minima of the loss with fixed ``cells`` (M, k) on ``[lo, hi]`` (M,): values, shifts.

    The loss is convex there (module docstring). Each round evaluates ``_GRID`` points per
    interval and keeps the two grid steps around the best one; an interval stops when its
    convexity bound cannot beat ``bound`` (the best value known) or is within ``_GAP`` of
    its best value.
    """
    best_v, best_t = np.full(lo.size, np.inf), lo.copy()
    a, b = lo.copy(), hi.copy()
    active = np.arange(lo.size)
    frac = np.linspace(0.0, 1.0, _GRID)
    last = _GRID - 1
    while active.size:
        ts = a[active, None] + (b - a)[active, None] * frac                     # (A, G)
        v = problem.values(ts.reshape(-1, 1),
                           np.repeat(cells[active], _GRID, axis=0)).reshape(-1, _GRID)
        r = np.arange(active.size)
        ib = np.argmin(v, axis=1)
        vb = v[r, ib]
        better = vb < best_v[active]
        best_v[active[better]], best_t[active[better]] = vb[better], ts[r, ib][better]
        bound = min(bound, float(best_v.min()))
        left, right = v[r, np.maximum(ib - 1, 0)], v[r, np.minimum(ib + 1, last)]
        a[active] = ts[r, np.maximum(ib - 1, 0)]
        b[active] = ts[r, np.minimum(ib + 1, last)]
        with np.errstate(invalid="ignore"):     # inf - inf where a configuration is excluded
            # Convexity: above the secants through the best point and its neighbours.
            lower = np.where(ib == 0, 2.0 * v[:, 1] - v[:, 2],
                             np.where(ib == last, 2.0 * v[:, last - 1] - v[:, last - 2],
                                      vb - np.maximum(left - vb, right - vb)))
            keep = (np.isfinite(vb) & (lower < bound - _GAP * max(1.0, abs(bound)))
                    & (vb - lower > _GAP * np.maximum(1.0, np.abs(vb)))
                    & (b[active] > a[active]))
        active = active[keep]
    return best_v, best_t


def _slope_minima(problem, lo, hi, cells, scale):
    """Minima of the loss (all cells counted) inside the intervals ``(lo, hi)``.

    ``lo``, ``hi`` of shape (M,), ``cells`` (M, k) the intervals' cells; returns the rows
    with a minimum inside and its shift. With the cells fixed only the ``beta1`` terms move:
    the loss is ``sum_i w_i |t - c_i|^r_i`` plus a constant, ``r_i`` the exponent of atom
    ``i``'s cell, and its derivative ``sum_i w_i r_i |t - c_i|^(r_i - 1) sign(t - c_i)``
    increases (the loss is convex). A root exists where the derivative is negative at
    ``lo`` and positive at ``hi``; Newton's method, safeguarded by bisection, finds it. It
    stops when ``|F'(t)|`` times three Newton steps (an overestimate of the distance to the
    root, also where Newton converges only linearly, at a root of ``F''``) is below
    ``_GAP * scale``: by convexity the loss at ``t`` is then that close to the minimum.
    """
    k_true = problem.true.k
    c = problem.true.beta1[:, 0][cells] - problem.fit.beta1[:, 0][None, :]          # (M, k)
    sizes = np.take_along_axis((cells[:, :, None] == np.arange(k_true)).sum(axis=1), cells,
                               axis=1)
    r = np.ones(c.shape)
    for m in np.unique(sizes[sizes > 1]).tolist():
        r[sizes == m] = problem.exponent(int(m))
    usable = np.all(np.isfinite(r), axis=1)        # else the loss is infinite there
    side = np.sign(0.5 * (lo + hi)[:, None] - c)    # no kink inside an interval
    w = problem.w

    def slope(t, rows):
        gap = np.abs(t[:, None] - c[rows])
        return np.sum(w * r[rows] * gap ** (r[rows] - 1.0) * side[rows], axis=1)

    rows = np.flatnonzero(usable)
    rows = rows[(slope(lo[rows], rows) < 0) & (slope(hi[rows], rows) > 0)]
    a, b = lo[rows], hi[rows]
    t = 0.5 * (a + b)
    tol = _GAP * max(scale, np.finfo(float).tiny)
    for _ in range(200):
        d = slope(t, rows)
        a, b = np.where(d < 0, t, a), np.where(d < 0, b, t)
        gap = np.abs(t[:, None] - c[rows])
        with np.errstate(divide="ignore", invalid="ignore"):
            curvature = np.sum(np.where(r[rows] > 1.0, w * r[rows] * (r[rows] - 1.0)
                                        * gap ** (r[rows] - 2.0), 0.0), axis=1)
            step = t - d / curvature
        step = np.where((step > a) & (step < b), step, 0.5 * (a + b))
        done = ((np.abs(d) * 3.0 * np.abs(step - t) <= tol)
                | (b - a <= 4 * np.finfo(float).eps * np.maximum(1.0, np.abs(t))))
        t = np.where(done, t, step)
        if np.all(done):
            break
    return rows, t


def _inside(problem, t, cells, middle):
    """``t``, or a shift near it, whose cells are ``cells`` (an interval's).

    ``t`` is in the interval or at its end; ``middle`` is a point of the interval. From the
    end, steps of growing size towards ``middle`` until the cells are the interval's.
    """
    if np.array_equal(problem.cells_many(np.array([[t]]))[0], cells):
        return t
    step = 2.0 ** -40 * max(1.0, abs(t))
    while step < abs(middle - t):
        x = t + np.sign(middle - t) * step
        if np.array_equal(problem.cells_many(np.array([[x]]))[0], cells):
            return x
        step *= 4.0
    return middle


def _search_line(problem):
    """Exact infimum over ``t1`` for one feature: ``(t1 of shape (1,), value)``."""
    P = _special_points(problem)
    n = P.size
    inside = np.concatenate([[P[0] - 1.0], 0.5 * (P[:-1] + P[1:]), [P[-1] + 1.0]])
    cells = problem.cells_many(inside[:, None])         # interval m is (P[m-1], P[m])
    at = P[:, None]
    index = np.arange(n)
    # Candidates: value, shift, interval (-1: the point's own cells), preference.
    values = [problem.values(at),                        # the points, with their own cells
              problem.values(at, cells[:-1]),            # limits from the left interval
              problem.values(at, cells[1:])]             # limits from the right interval
    shifts = [P, P, P]
    intervals = [np.full(n, -1), index, index + 1]
    preference = [np.zeros(n), np.full(n, 2.0), np.full(n, 2.0)]
    if problem.n_sub < problem.true.k and n > 1:             # top-K: search the intervals
        bound = float(min(v.min() for v in values))
        v, t = _interval_minima(problem, P[:-1], P[1:], cells[1:-1], bound)
        values.append(v)
        shifts.append(t)
        intervals.append(index[1:])
        preference.append(np.ones(n - 1))
    elif problem.exponent is not None and n > 1:             # D2: the derivative's roots
        bound = float(min(v.min() for v in values))
        rows, t = _slope_minima(problem, P[:-1], P[1:], cells[1:-1], bound)
        values.append(problem.values(t[:, None], cells[1:-1][rows]))
        shifts.append(t)
        intervals.append(rows + 1)
        preference.append(np.ones(rows.size))
    values, shifts, intervals, preference = (np.concatenate(x) for x in
                                             (values, shifts, intervals, preference))
    best = float(values.min())
    if not np.isfinite(best):
        return np.zeros(1), best
    tied = np.flatnonzero(values <= best + _TIE * max(1.0, abs(best)))
    pick = tied[np.lexsort((np.abs(shifts[tied]), preference[tied]))[0]]
    t, interval = float(shifts[pick]), int(intervals[pick])
    if interval >= 0:       # a limit, or a minimum inside an interval (maybe at its end)
        t = _inside(problem, t, cells[interval], inside[interval])
    return np.array([t]), best


# ------------------------------------------------------- several features: Nelder-Mead
#: Nelder-Mead runs of the t1 search, from the best candidates.
_N_STARTS = 2


def _search_nelder_mead(objective, fit, true):
    """Minimise ``objective(t1)`` from the candidates ``beta1*_j - beta1_i`` and 0 (d >= 2)."""
    d = fit.beta1.shape[1]
    candidates = np.vstack([np.zeros((1, d)),
                            (true.beta1[None, :, :] - fit.beta1[:, None, :]).reshape(-1, d)])
    candidates = np.unique(candidates, axis=0)
    values = np.array([objective(t) for t in candidates])
    order = np.argsort(values, kind="stable")
    best_t, best_v = candidates[order[0]], float(values[order[0]])
    if best_v == 0.0 or not np.isfinite(best_v):
        return best_t, best_v
    spread = np.ptp(candidates, axis=0) if len(candidates) > 1 else np.zeros(d)
    step = 0.05 * np.maximum(spread, 1e-3)
    for idx in order[:_N_STARTS]:
        start = candidates[idx]
        simplex = np.vstack([start, start + np.diag(step)])
        res = minimize(objective, start, method="Nelder-Mead",
                       options=dict(initial_simplex=simplex, xatol=1e-10, fatol=1e-15,
                                    maxiter=200 * (d + 1), maxfev=200 * (d + 1)))
        if res.fun < best_v:
            best_t, best_v = np.asarray(res.x, dtype=np.float64), float(res.fun)
    return best_t, best_v


def _search_t1(problem):
    """The minimising slope shift and the loss there: ``(t1 of shape (d,), value)``."""
    if problem.fit.beta1.shape[1] == 1:
        return _search_line(problem)
    return _search_nelder_mead(problem.objective, problem.fit, problem.true)


def _solve(problem, translation):
    """Infimum (or untranslated value) of a problem: ``(value, t1, s)``."""
    d = problem.fit.beta1.shape[1]
    zero = np.zeros(d)
    if translation == "none":
        value, s = problem.value(zero, scale_free=False)
        return value, zero, s
    # A lone true atom's slope means nothing, as a lone fitted atom's does.
    if not (problem.fit.translatable or problem.true.k == 1):
        value, s = problem.value(zero)
        return value, zero, s
    t1, value = _search_t1(problem)
    value, s = problem.value(t1)
    return value, t1, s


# ------------------------------------------------------------------ top-1 alignment
def _top1_alignment(fit, true, translation, linear):
    """Least-squares alignment of a fit's gate on a top-1 truth's.

    The fit's gate vectors ``gamma_i = (beta1_i, beta0_i)`` (``beta1_i`` alone for linear
    selection) are mapped to ``c gamma_i + t`` with ``c >= 0`` and ``t`` minimising
    ``sum_i ||c gamma_i + t - gamma*_{j(i)}||^2`` (``t = 0`` with ``translation='none'``),
    ``j(i)`` the Voronoi cell of atom ``i``; cells start from the expert parameters and are
    recomputed with the aligned slopes until they no longer change.

    Returns ``cells, aligned_beta1, aligned_beta0 (None for linear selection), c, t``.
    """
    d = fit.beta1.shape[1]
    G = fit.beta1 if linear else np.hstack([fit.beta1, fit.beta0[:, None]])
    Gstar = true.beta1 if linear else np.hstack([true.beta1, true.beta0[:, None]])
    problem = _Problem(fit, true)
    cells = np.argmin(problem.expert_dist, axis=1)
    c, t = 1.0, np.zeros(G.shape[1])
    for _ in range(50):
        target = Gstar[cells]
        if translation == "infimum":
            gc, tc = G - G.mean(axis=0), target - target.mean(axis=0)
            den = float(np.sum(gc * gc))
            c = float(np.sum(gc * tc)) / den if den > 0 else 1.0
            c = max(c, 0.0)
            t = target.mean(axis=0) - c * G.mean(axis=0)
        else:
            den = float(np.sum(G * G))
            c = max(float(np.sum(G * target)) / den, 0.0) if den > 0 else 1.0
        aligned = c * G + t
        new_cells, _ = problem.cells(aligned[:, :d])
        if np.array_equal(new_cells, cells):
            break
        cells = new_cells
    aligned = c * G + t
    beta0 = None if linear else aligned[:, d]
    return cells, aligned[:, :d], beta0, c, t


def _is_top1(measure):
    return measure.family.selection_only()


def _top1(fit_m, true_m, translation):
    fit, true = _side(fit_m, "raw"), _side(true_m, "raw")
    linear = not true_m.family.selection_uses_intercept
    return fit, true, _top1_alignment(fit, true, translation, linear)


# ------------------------------------------------------------------ shared alignment
@dataclass(frozen=True)
class _Alignment:
    fit: _Side
    true: _Side
    cells: np.ndarray
    beta1: np.ndarray          # the fit's aligned gate slopes
    beta0: np.ndarray | None   # the fit's aligned gate intercepts (None: not identified)
    s: float | None            # the truth's weight factor e^{t2} (None for a top-1 truth)
    w: np.ndarray | None       # the fit's normalised weights (None for a top-1 truth)
    symmetric_image: bool


def _align(fit_m, true_m, translation, scale):
    """Cells and translation of the D1-form (all cells, exponent 1) infimum."""
    _check_pair(fit_m, true_m)
    if _is_top1(true_m):
        fit, true, (cells, beta1, beta0, _, _) = _top1(fit_m, true_m, translation)
        return _Alignment(fit, true, cells, beta1, beta0, None, None, False)
    best = None
    for fitted, truth, image in _pairings(fit_m, true_m):
        fit, true = _side(fitted, scale), _side(truth, scale)
        problem = _Problem(fit, true)
        value, t1, s = _solve(problem, translation)
        if best is None or value < best[0]:
            cells = problem.masses(t1)[0]
            # The normalised fit against the truth translated by s, as a shift of the fit.
            beta0 = (fit.beta0 + fit.intercept_scale * (problem.log_factor - np.log(s))
                     if s > 0 else np.full(fit.k, np.inf))
            best = (value, _Alignment(fit, true, cells, fit.beta1 + t1, beta0, s, problem.w,
                                      bool(image)))
    return best[1]
