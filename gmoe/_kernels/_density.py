"""Row-wise Hellinger and total-variation distances between two Gaussian mixtures in y.

Each design row ``x`` gives two finite mixtures, ``p(y) = sum_c pi_c N(y | mu_c, sd_c^2)``
and ``q`` alike (the components of both models with their gates at ``x``). The kernels
loop over the rows, serially (rows are independent, and one process per task is how the
simulations use the machines' cores), and work on each row's components only.

Shared by both kernels:

* Components of gate below ``exp(_LOG_WEIGHT_FLOOR) = 1e-30`` are dropped (top-K's zero
  gates, and weights that change ``h`` by at most ``sqrt(k 1e-30)`` and TV by ``k 1e-30``).
* Each component lives on its window ``mu_c +- _WINDOW sd_c``; outside it, it holds less
  than ``2 Phi(-10) = 1.5e-23`` of its weight and is not evaluated. The union of the
  windows splits into *runs* (connected stretches); outside the runs both densities are
  negligible. Together these neglect at most about ``1e-22`` of ``int (sqrt p - sqrt q)^2``
  and of TV.

Hellinger, ``S = int (sqrt p - sqrt q)^2 dy = 2 h^2``, computed directly (no ``1 - int
sqrt(pq)`` cancellation), with error control:

* A run whose standard deviations are within a factor ``_SCALE_RATIO`` of each other is
  integrated by the trapezoidal rule on a uniform lattice of spacing ``_LATTICE_SPACING``
  times its smallest standard deviation. The integrand is analytic and negligible at the
  run's ends, so the rule converges geometrically in ``1 / spacing`` (for a Gaussian of
  standard deviation ``s`` the error is about ``2 exp(-2 pi^2 s^2 / spacing^2)``, 1e-13 at
  0.8 s), with about three times fewer nodes than Gauss-Legendre panels for the same
  accuracy. Halving the spacing reuses every node; the difference between two successive
  levels estimates the coarser level's error, and the finer value is kept. (The estimate
  misses the finer level's own aliasing, which is usually the square of the coarser's
  but can be larger when the coarser level's aliasing cancels by chance: about 20 times
  the estimate in the worst design row we found.)
* Other runs (a narrow component inside a wide one) are cut at their windows' edges into
  segments of constant local scale (the smallest standard deviation whose window covers
  the segment), each integrated by composite 8-point Gauss-Legendre on panels of
  ``_PANEL_WIDTH`` local standard deviations; halving the panels gives the next level.
* Every item (run or segment) starts at levels 0 and 1; while the summed error estimates
  exceed ``max(rtol S, atol)``, the item with the largest estimate goes one level finer
  (narrow features, e.g. where two overlapping components of one mixture exchange
  dominance, make ``sqrt p`` vary faster than any standard deviation). A row that reaches
  ``_MAX_LEVEL`` without meeting the tolerance is flagged.

Total variation, ``TV = int (p - q)_+ dy``, exactly through the mixture CDFs: on each run,
``TV`` sums ``D(end) - D(start)`` over the intervals where ``p > q``, with
``D = F_p - F_q``. The intervals are found on a lattice of ``_SIGN_SPACING`` local standard
deviations: a change of the sign of ``g = p - e^{sign_tol} q`` between two nodes brackets a
crossing; without one, a change of the sign of ``g'`` towards zero (a minimum between
positive nodes, a maximum between non-positive ones) is followed to the extremum, and if
``g`` changes sign there the two crossings are bracketed. Crossings are refined by
Newton's method safeguarded by bisection to ``_ROOT_TOL`` local standard deviations; an
error ``e`` in a crossing changes TV by ``O(e^2)`` only, since ``p = q`` there.

On a lattice the Gaussians come from a recurrence of products (two multiplies a node
instead of an ``exp``, :func:`_lattice_sum`).
"""

import math

import numba
import numpy as np

from ._config import NJIT

#: No fastmath in these kernels: reassociated or contracted (FMA) sums round differently
#: depending on how LLVM inlines and vectorises them, which differs between a freshly
#: compiled kernel and the same kernel loaded from numba's cache, so one worker and two
#: workers stored Hellinger distances a few ulps apart. Speed comes instead from an
#: elementwise loop (exact square roots, which LLVM vectorises without reassociation) and
#: a sum over a fixed number of interleaved accumulators (:func:`_interleaved_sum`).
_N_ACCUMULATORS = 8

#: Components whose gate is below this are dropped: log(1e-30).
_LOG_WEIGHT_FLOOR = -69.07755278982137
#: Half-width of a component's window, in its standard deviations.
_WINDOW = 10.0
#: Largest ratio of standard deviations in a run integrated on one lattice.
_SCALE_RATIO = 4.0
#: Level-0 lattice spacing, in the run's smallest standard deviation.
_LATTICE_SPACING = 0.8
#: Level-0 Gauss-Legendre panel width, in local standard deviations.
_PANEL_WIDTH = 2.0
#: Finest level: the level-0 spacing or panel width divided by 2**_MAX_LEVEL.
_MAX_LEVEL = 12
#: Spacing of the sign lattice of the total variation, in local standard deviations.
_SIGN_SPACING = 0.5
#: Crossing tolerance of the total variation, in local standard deviations.
_ROOT_TOL = 1e-10
#: Lattice nodes evaluated at once (and the restart period of the recurrences).
_CHUNK = 64
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(8)
_INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
_INV_SQRT2 = 1.0 / math.sqrt(2.0)
_TRAPEZOID = 0
_GAUSS = 1
# Rows of the component table: mean, sd, 1 / sd, pi / (sd sqrt(2 pi)), pi, mixture (0: p,
# 1: q), window start and end.
_MU, _SD, _INV_SD, _AMP, _WEIGHT, _SIDE, _LO, _HI = range(8)
_N_FIELDS = 8


# ------------------------------------------------------------------ components, runs
@numba.njit(**NJIT)
def _gather_row(row, mean_p, log_gate_p, sd_p, mean_q, log_gate_q, sd_q, comps):
    """Active components of both mixtures at one row, in ``comps`` by window start.

    ``comps`` float64 (_N_FIELDS, k_p + k_q), written; returns the number of components.
    """
    n = 0
    k_p = sd_p.shape[0]
    for c in range(k_p + sd_q.shape[0]):
        if c < k_p:
            log_w, m, s, which = log_gate_p[row, c], mean_p[row, c], sd_p[c], 0.0
        else:
            log_w, m, s, which = (log_gate_q[row, c - k_p], mean_q[row, c - k_p],
                                  sd_q[c - k_p], 1.0)
        if not log_w > _LOG_WEIGHT_FLOOR:
            continue
        start = m - _WINDOW * s
        j = n                           # insertion by window start (a handful of components)
        while j > 0 and comps[_LO, j - 1] > start:
            for f in range(_N_FIELDS):
                comps[f, j] = comps[f, j - 1]
            j -= 1
        weight = math.exp(log_w)
        comps[_MU, j], comps[_SD, j], comps[_INV_SD, j] = m, s, 1.0 / s
        comps[_AMP, j], comps[_WEIGHT, j] = weight * _INV_SQRT_2PI / s, weight
        comps[_SIDE, j], comps[_LO, j], comps[_HI, j] = which, start, m + _WINDOW * s
        n += 1
    return n


@numba.njit(**NJIT)
def _split_runs(comps, n, run_start, run_end, run_lo, run_hi):
    """Connected stretches of the windows (sorted by start); returns their number."""
    n_runs = 0
    for c in range(n):
        if n_runs > 0 and comps[_LO, c] <= run_hi[n_runs - 1]:
            run_end[n_runs - 1] = c + 1
            run_hi[n_runs - 1] = max(run_hi[n_runs - 1], comps[_HI, c])
        else:
            run_start[n_runs], run_end[n_runs] = c, c + 1
            run_lo[n_runs], run_hi[n_runs] = comps[_LO, c], comps[_HI, c]
            n_runs += 1
    return n_runs


@numba.njit(**NJIT)
def _run_breaks(comps, c0, c1, out_breaks):
    """Sorted window ends of components ``c0:c1``; returns their number."""
    n = 0
    for c in range(c0, c1):
        for value in (comps[_LO, c], comps[_HI, c]):
            j = n
            while j > 0 and out_breaks[j - 1] > value:
                out_breaks[j] = out_breaks[j - 1]
                j -= 1
            out_breaks[j] = value
            n += 1
    return n


@numba.njit(**NJIT)
def _local_sd(comps, c0, c1, a, b):
    """Smallest standard deviation among the windows covering the midpoint of (a, b)."""
    mid = 0.5 * (a + b)
    best = np.inf
    for c in range(c0, c1):
        if comps[_LO, c] <= mid <= comps[_HI, c]:
            best = min(best, comps[_SD, c])
    if best == np.inf:      # not reached: a run is covered by its windows
        for c in range(c0, c1):
            best = min(best, comps[_SD, c])
    return best


@numba.njit(**NJIT)
def _window_nodes(comps, c, y0, step, count):
    """First and last (exclusive) ``j < count`` with ``y0 + j step`` in the window of ``c``."""
    first = max(0, int(math.ceil((comps[_LO, c] - y0) / step)))
    stop = min(count, int(math.floor((comps[_HI, c] - y0) / step)) + 1)
    return first, stop


# ---------------------------------------------------------------------------- Hellinger
@numba.njit(**NJIT)
def _sqrt_gap_sq(comps, c0, c1, y):
    """``(sqrt p(y) - sqrt q(y))^2`` from the components ``c0:c1`` whose window holds y."""
    p = 0.0
    q = 0.0
    for c in range(c0, c1):
        if not comps[_LO, c] <= y <= comps[_HI, c]:
            continue
        z = (y - comps[_MU, c]) * comps[_INV_SD, c]
        v = comps[_AMP, c] * math.exp(-0.5 * z * z)
        if comps[_SIDE, c] == 0.0:
            p += v
        else:
            q += v
    d = math.sqrt(p) - math.sqrt(q)
    return d * d


@numba.njit(**NJIT)
def _lattice_sum(comps, c0, c1, y0, step, count, buf_p, buf_q):
    """``sum_j (sqrt p - sqrt q)^2 (y0 + j step)``, ``j < count``, components ``c0:c1``.

    Each component on the nodes of its window, by a recurrence of products: with ``z_j =
    z_0 + j D`` and ``rho = exp(-D^2)``, ``phi_{j+1} = phi_j r_j`` and ``r_{j+1} = r_j rho``.
    It starts at the node closest to the component's mean and runs outwards, so the values
    only decrease (an underflow to 0 is final and harmless), and restarts every
    ``buf_p.size`` nodes, which bounds the accumulated rounding to about 1e-14 relative.
    """
    chunk = buf_p.shape[0]
    total = 0.0
    for first in range(0, count, chunk):
        m = min(chunk, count - first)
        y_first = y0 + first * step
        for j in range(m):
            buf_p[j] = 0.0
            buf_q[j] = 0.0
        for c in range(c0, c1):
            start, stop = _window_nodes(comps, c, y_first, step, m)
            if start >= stop:
                continue
            buf = buf_p if comps[_SIDE, c] == 0.0 else buf_q
            d = step * comps[_INV_SD, c]
            z_first = (y_first - comps[_MU, c]) * comps[_INV_SD, c]
            peak = min(max(int(round(-z_first / d)), start), stop - 1)
            z = z_first + peak * d
            rho = math.exp(-d * d)
            value = comps[_AMP, c] * math.exp(-0.5 * z * z)
            v = value
            ratio = math.exp(-z * d - 0.5 * d * d)
            for j in range(peak, stop):
                buf[j] += v
                v *= ratio
                ratio *= rho
            v = value
            ratio = math.exp(z * d - 0.5 * d * d)
            for j in range(peak - 1, start - 1, -1):
                v *= ratio
                ratio *= rho
                buf[j] += v
        for j in range(m):
            diff = math.sqrt(buf_p[j]) - math.sqrt(buf_q[j])
            buf_p[j] = diff * diff
        total += _interleaved_sum(buf_p, m)
    return total


@numba.njit(**NJIT)
def _interleaved_sum(values, m):
    """``sum(values[:m])`` over ``_N_ACCUMULATORS`` interleaved partial sums.

    The order of the additions is fixed by the code, not by the compiler, so the result
    is the same bits however the kernel was compiled; the independent partial sums still
    pipeline (and are no less accurate than one running sum).
    """
    partial = np.zeros(_N_ACCUMULATORS)
    full = m - m % _N_ACCUMULATORS
    for j in range(0, full, _N_ACCUMULATORS):
        for lane in range(_N_ACCUMULATORS):
            partial[lane] += values[j + lane]
    total = 0.0
    for lane in range(_N_ACCUMULATORS):
        total += partial[lane]
    for j in range(full, m):
        total += values[j]
    return total


@numba.njit(**NJIT)
def _item_level(comps, c0, c1, kind, a, b, n0, level, previous, buf_p, buf_q):
    """Integral of ``(sqrt p - sqrt q)^2`` over one item (run or segment) at one level."""
    if kind == _TRAPEZOID:
        if level == 0:
            # The ends are negligible: every node gets the full weight.
            h = (b - a) / n0
            return h * _lattice_sum(comps, c0, c1, a, h, n0 + 1, buf_p, buf_q)
        h = (b - a) / (n0 << level)
        # The new (odd) nodes only.
        new = _lattice_sum(comps, c0, c1, a + h, 2.0 * h, n0 << (level - 1), buf_p, buf_q)
        return 0.5 * previous + h * new
    panels = n0 << level
    width = (b - a) / panels
    half = 0.5 * width
    total = 0.0
    for i in range(panels):
        mid = a + (i + 0.5) * width
        for k in range(_GL_NODES.shape[0]):
            total += _GL_WEIGHTS[k] * _sqrt_gap_sq(comps, c0, c1, mid + half * _GL_NODES[k])
    return half * total


@numba.njit(**NJIT)
def hellinger_sq_rows_into(mean_p, log_gate_p, sd_p, mean_q, log_gate_q, sd_q, rtol, atol,
                           out_h2, out_flag):
    """``h^2(x) = 1/2 int (sqrt p - sqrt q)^2 dy`` of every row (no validation).

    Parameters
    ----------
    mean_p, log_gate_p : float64 (n_samples, k_p), the first mixture's means and log-gates
    sd_p : float64 (k_p,), its standard deviations
    mean_q, log_gate_q, sd_q : the second mixture's, with k_q components
    rtol, atol : float, target ``|error of S| <= max(rtol S, atol)``, ``S = 2 h^2``
    out_h2 : float64 (n_samples,), written, clipped to [0, 1]
    out_flag : int64 (n_samples,), written: 1 where the tolerance was not met
    """
    n_rows = mean_p.shape[0]
    k = sd_p.shape[0] + sd_q.shape[0]
    comps = np.empty((_N_FIELDS, k))
    run_start, run_end = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64)
    run_lo, run_hi = np.empty(k), np.empty(k)
    breaks = np.empty(2 * k)
    n_cap = 3 * k
    it_kind, it_run = np.empty(n_cap, dtype=np.int64), np.empty(n_cap, dtype=np.int64)
    it_n0, it_level = np.empty(n_cap, dtype=np.int64), np.empty(n_cap, dtype=np.int64)
    it_a, it_b = np.empty(n_cap), np.empty(n_cap)
    it_val, it_err = np.empty(n_cap), np.empty(n_cap)
    buf_p, buf_q = np.empty(_CHUNK), np.empty(_CHUNK)
    for row in range(n_rows):
        n = _gather_row(row, mean_p, log_gate_p, sd_p, mean_q, log_gate_q, sd_q, comps)
        n_runs = _split_runs(comps, n, run_start, run_end, run_lo, run_hi)
        n_items = 0
        for r in range(n_runs):
            c0, c1 = run_start[r], run_end[r]
            sd_min, sd_max = np.inf, 0.0
            for c in range(c0, c1):
                sd_min = min(sd_min, comps[_SD, c])
                sd_max = max(sd_max, comps[_SD, c])
            if sd_max <= _SCALE_RATIO * sd_min:
                it_kind[n_items], it_run[n_items] = _TRAPEZOID, r
                it_a[n_items], it_b[n_items] = run_lo[r], run_hi[r]
                it_n0[n_items] = max(1, int(math.ceil((run_hi[r] - run_lo[r])
                                                      / (_LATTICE_SPACING * sd_min))))
                n_items += 1
                continue
            n_breaks = _run_breaks(comps, c0, c1, breaks)
            for i in range(n_breaks - 1):
                a, b = breaks[i], breaks[i + 1]
                if not b > a:
                    continue
                local = _local_sd(comps, c0, c1, a, b)
                it_kind[n_items], it_run[n_items] = _GAUSS, r
                it_a[n_items], it_b[n_items] = a, b
                it_n0[n_items] = max(1, int(math.ceil((b - a) / (_PANEL_WIDTH * local))))
                n_items += 1
        total, error = 0.0, 0.0
        for i in range(n_items):
            c0, c1 = run_start[it_run[i]], run_end[it_run[i]]
            coarse = _item_level(comps, c0, c1, it_kind[i], it_a[i], it_b[i], it_n0[i], 0,
                                 0.0, buf_p, buf_q)
            fine = _item_level(comps, c0, c1, it_kind[i], it_a[i], it_b[i], it_n0[i], 1,
                               coarse, buf_p, buf_q)
            it_level[i], it_val[i], it_err[i] = 1, fine, abs(fine - coarse)
            total += fine
            error += it_err[i]
        flag = 0
        while error > max(rtol * total, atol):
            worst = -1
            for i in range(n_items):
                if it_level[i] < _MAX_LEVEL and (worst < 0 or it_err[i] > it_err[worst]):
                    worst = i
            if worst < 0:
                flag = 1
                break
            i = worst
            c0, c1 = run_start[it_run[i]], run_end[it_run[i]]
            finer = _item_level(comps, c0, c1, it_kind[i], it_a[i], it_b[i], it_n0[i],
                                it_level[i] + 1, it_val[i], buf_p, buf_q)
            it_level[i] += 1
            it_err[i] = abs(finer - it_val[i])
            it_val[i] = finer
            total, error = 0.0, 0.0
            for j in range(n_items):
                total += it_val[j]
                error += it_err[j]
        out_h2[row] = min(max(0.5 * total, 0.0), 1.0)
        out_flag[row] = flag


# ------------------------------------------------------------------- total variation
@numba.njit(**NJIT)
def _difference(comps, c0, c1, y, q_factor):
    """``g = p - q_factor q`` at ``y`` and its first two derivatives (windows holding y)."""
    g, g1, g2 = 0.0, 0.0, 0.0
    for c in range(c0, c1):
        if not comps[_LO, c] <= y <= comps[_HI, c]:
            continue
        inv_sd = comps[_INV_SD, c]
        z = (y - comps[_MU, c]) * inv_sd
        v = comps[_AMP, c] * math.exp(-0.5 * z * z)
        if comps[_SIDE, c] != 0.0:
            v = -q_factor * v
        g += v
        g1 -= v * z * inv_sd
        g2 += v * (z * z - 1.0) * inv_sd * inv_sd
    return g, g1, g2


@numba.njit(**NJIT)
def _bracketed_root(comps, c0, c1, derivative, lo, hi, f_lo, f_hi, xtol, q_factor):
    """A point where ``g`` (``derivative`` 0) or ``g'`` (1) changes sign in ``(lo, hi)``.

    ``f_lo > 0`` and ``f_hi > 0`` differ. Newton's method from the secant point, with
    bisection whenever a step leaves the bracket; stops when the bracket or the step is
    below ``xtol``.
    """
    positive_lo = f_lo > 0
    x = lo - f_lo * (hi - lo) / (f_hi - f_lo) if f_hi != f_lo else 0.5 * (lo + hi)
    if not lo < x < hi:
        x = 0.5 * (lo + hi)
    for _ in range(200):
        g, g1, g2 = _difference(comps, c0, c1, x, q_factor)
        f, df = (g, g1) if derivative == 0 else (g1, g2)
        if (f > 0) == positive_lo:
            lo = x
        else:
            hi = x
        if hi - lo <= xtol:
            return 0.5 * (lo + hi)
        step = x - f / df if df != 0.0 else 0.5 * (lo + hi)
        if not lo < step < hi:
            step = 0.5 * (lo + hi)
        if abs(step - x) <= xtol:
            return step
        x = step
    return 0.5 * (lo + hi)


@numba.njit(**NJIT)
def _cdf_gap(comps, c0, c1, u):
    """``F_p(u) - F_q(u)`` from components ``c0:c1``."""
    total = 0.0
    for c in range(c0, c1):
        v = 0.5 * comps[_WEIGHT, c] * math.erfc(-(u - comps[_MU, c]) * comps[_INV_SD, c]
                                                * _INV_SQRT2)
        total += v if comps[_SIDE, c] == 0.0 else -v
    return total


@numba.njit(**NJIT)
def _difference_lattice(comps, c0, c1, y0, step, count, q_factor, out_g, out_slope):
    """``g = p - q_factor q`` and ``g'`` at ``y0 + j step``, ``j < count <= out_g.size``.

    The Gaussians on their windows' nodes by the recurrence of :func:`_lattice_sum`.
    """
    for j in range(count):
        out_g[j] = 0.0
        out_slope[j] = 0.0
    for c in range(c0, c1):
        start, stop = _window_nodes(comps, c, y0, step, count)
        if start >= stop:
            continue
        inv_sd = comps[_INV_SD, c]
        d = step * inv_sd
        z0 = (y0 - comps[_MU, c]) * inv_sd
        peak = min(max(int(round(-z0 / d)), start), stop - 1)
        z = z0 + peak * d
        rho = math.exp(-d * d)
        value = comps[_AMP, c] * math.exp(-0.5 * z * z)
        if comps[_SIDE, c] != 0.0:
            value = -q_factor * value
        v = value
        ratio = math.exp(-z * d - 0.5 * d * d)
        for j in range(peak, stop):
            out_g[j] += v
            out_slope[j] -= v * (z0 + j * d) * inv_sd
            v *= ratio
            ratio *= rho
        v = value
        ratio = math.exp(z * d - 0.5 * d * d)
        for j in range(peak - 1, start - 1, -1):
            v *= ratio
            ratio *= rho
            out_g[j] += v
            out_slope[j] -= v * (z0 + j * d) * inv_sd


@numba.njit(**NJIT)
def _run_total_variation(comps, c0, c1, a_run, b_run, q_factor, breaks, buf_g, buf_slope):
    """``int (p - q)_+`` over one run (components ``c0:c1``)."""
    n_breaks = _run_breaks(comps, c0, c1, breaks)
    y0 = a_run
    g0, d0, _ = _difference(comps, c0, c1, y0, q_factor)
    positive = g0 > 0
    start = y0
    tv = 0.0
    chunk = buf_g.shape[0]
    for i in range(n_breaks - 1):
        a, b = breaks[i], breaks[i + 1]
        if not b > a:
            continue
        local = _local_sd(comps, c0, c1, a, b)
        xtol = _ROOT_TOL * local
        steps = max(1, int(math.ceil((b - a) / (_SIGN_SPACING * local))))
        step = (b - a) / steps
        for first in range(1, steps + 1, chunk):
            m = min(chunk, steps + 1 - first)
            _difference_lattice(comps, c0, c1, a + first * step, step, m, q_factor, buf_g,
                                buf_slope)
            for jj in range(m):
                y1, g1, d1 = a + (first + jj) * step, buf_g[jj], buf_slope[jj]
                now_positive = g1 > 0
                if now_positive != positive:
                    u = _bracketed_root(comps, c0, c1, 0, y0, y1, g0, g1, xtol, q_factor)
                    if positive:
                        tv += _cdf_gap(comps, c0, c1, u) - _cdf_gap(comps, c0, c1, start)
                    else:
                        start = u
                elif (d0 < 0.0 < d1) if positive else (d0 > 0.0 > d1):
                    # An extremum of g towards zero between the nodes: follow it.
                    x = _bracketed_root(comps, c0, c1, 1, y0, y1, d0, d1, xtol, q_factor)
                    gx, _, _ = _difference(comps, c0, c1, x, q_factor)
                    if (gx > 0) != positive:
                        u1 = _bracketed_root(comps, c0, c1, 0, y0, x, g0, gx, xtol, q_factor)
                        u2 = _bracketed_root(comps, c0, c1, 0, x, y1, gx, g1, xtol, q_factor)
                        if positive:
                            tv += _cdf_gap(comps, c0, c1, u1) - _cdf_gap(comps, c0, c1, start)
                            start = u2
                        else:
                            tv += _cdf_gap(comps, c0, c1, u2) - _cdf_gap(comps, c0, c1, u1)
                y0, g0, d0, positive = y1, g1, d1, now_positive
    if positive:
        tv += _cdf_gap(comps, c0, c1, b_run) - _cdf_gap(comps, c0, c1, start)
    return tv


@numba.njit(**NJIT)
def total_variation_rows_into(mean_p, log_gate_p, sd_p, mean_q, log_gate_q, sd_q, sign_tol,
                              out_tv):
    """``TV(x) = 1/2 int |p - q| dy`` of every row (no validation).

    Parameters
    ----------
    mean_p, log_gate_p : float64 (n_samples, k_p), the first mixture's means and log-gates
    sd_p : float64 (k_p,), its standard deviations
    mean_q, log_gate_q, sd_q : the second mixture's, with k_q components
    sign_tol : float, ``p > e^{sign_tol} q`` counts as ``p > q``
    out_tv : float64 (n_samples,), written, clipped to [0, 1]
    """
    n_rows = mean_p.shape[0]
    k = sd_p.shape[0] + sd_q.shape[0]
    q_factor = math.exp(sign_tol)
    comps = np.empty((_N_FIELDS, k))
    run_start, run_end = np.empty(k, dtype=np.int64), np.empty(k, dtype=np.int64)
    run_lo, run_hi = np.empty(k), np.empty(k)
    breaks = np.empty(2 * k)
    buf_g, buf_slope = np.empty(_CHUNK), np.empty(_CHUNK)
    for row in range(n_rows):
        n = _gather_row(row, mean_p, log_gate_p, sd_p, mean_q, log_gate_q, sd_q, comps)
        n_runs = _split_runs(comps, n, run_start, run_end, run_lo, run_hi)
        tv = 0.0
        for r in range(n_runs):
            tv += _run_total_variation(comps, run_start[r], run_end[r], run_lo[r], run_hi[r],
                                       q_factor, breaks, buf_g, buf_slope)
        out_tv[row] = min(max(tv, 0.0), 1.0)
