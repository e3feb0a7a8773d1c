"""The metrics' previous implementations, kept as test oracles (not part of the package).

* Density distances: the composite Gauss-Legendre quadrature that ``gmoe.metrics.density``
  used before its compiled kernels (panel edges every standard deviation of every component
  over +-12 of them, 8 nodes a panel, log-domain densities; total variation through the
  mixture CDFs at crossings found by 60 bisection steps). It works on arrays (log-gates,
  means, variances) and imports nothing from ``gmoe``, so the benchmark can use it too.
* Voronoi translation infimum: the slope-translation search that ``gmoe.metrics`` used
  before its exact search (every candidate ``beta1*_j - beta1_i`` and 0 evaluated, then
  Nelder-Mead from the best two). It takes the objective and the two sides, so a test can
  substitute it for the package's search and compare the losses.
"""

import numpy as np
from scipy.optimize import minimize
from scipy.special import ndtr

# ------------------------------------------------------------------ density distances
_GL_ORDER = 8
_GL_NODES, _GL_WEIGHTS = np.polynomial.legendre.leggauss(_GL_ORDER)
_EDGE_Z = np.linspace(-12.0, 12.0, 25)
_LOG_2PI = np.log(2.0 * np.pi)
_CHUNK = 2_000_000
_SIGN_TOL = 1e-12
_BISECTION_STEPS = 60


class Components:
    """Gate, means and variances of one model on a set of design rows."""

    def __init__(self, log_gate, mean, var):
        self.log_gate = np.asarray(log_gate, dtype=float)      # (n, k)
        self.mean = np.asarray(mean, dtype=float)              # (n, k)
        self.var = np.asarray(var, dtype=float)                # (k,)
        self.sd = np.sqrt(self.var)

    @classmethod
    def of(cls, measure, X):
        """From any object with ``log_gate(X)``, ``expert_coef``, ``expert_intercept``,
        ``expert_var`` (a MixingMeasure)."""
        return cls(measure.log_gate(X), X @ measure.expert_coef.T + measure.expert_intercept,
                   measure.expert_var)

    def rows(self, sel):
        return Components(self.log_gate[sel], self.mean[sel], self.var)

    def log_density(self, Y):
        offset = self.log_gate - 0.5 * (_LOG_2PI + np.log(self.var))
        terms = [offset[:, i:i + 1] - (0.5 / self.var[i]) * (Y - self.mean[:, i:i + 1]) ** 2
                 for i in range(self.var.size)]
        top = np.maximum.reduce(terms) if len(terms) > 1 else terms[0]
        top = np.where(np.isfinite(top), top, 0.0)
        total = np.zeros_like(Y)
        for term in terms:
            total += np.exp(term - top)
        return top + np.log(total)

    def cdf(self, u):
        return np.sum(np.exp(self.log_gate) * ndtr((u[:, None] - self.mean) / self.sd),
                      axis=1)


def _nodes(first, second):
    means = np.hstack([first.mean, second.mean])
    sds = np.concatenate([first.sd, second.sd])
    edges = (means[:, :, None] + sds[None, :, None] * _EDGE_Z).reshape(means.shape[0], -1)
    edges.sort(axis=1)
    low, high = edges[:, :-1], edges[:, 1:]
    half = 0.5 * (high - low)
    mid = 0.5 * (high + low)
    Y = (mid[:, :, None] + half[:, :, None] * _GL_NODES).reshape(means.shape[0], -1)
    weights = (half[:, :, None] * _GL_WEIGHTS).reshape(means.shape[0], -1)
    return Y, weights


def _chunks(n_rows, first, second):
    n_nodes = (first.sd.size + second.sd.size) * (_EDGE_Z.size - 1) * _GL_ORDER
    size = max(1, _CHUNK // (n_nodes * max(first.sd.size, second.sd.size)))
    for start in range(0, n_rows, size):
        yield slice(start, min(start + size, n_rows))


def pointwise_hellinger_sq(first, second):
    """``h^2(x)`` of every row: ``1/2 int (sqrt p - sqrt q)^2 dy``."""
    out = np.empty(first.mean.shape[0])
    for sel in _chunks(out.size, first, second):
        p, q = first.rows(sel), second.rows(sel)
        Y, w = _nodes(p, q)
        diff = np.exp(0.5 * p.log_density(Y)) - np.exp(0.5 * q.log_density(Y))
        out[sel] = 0.5 * np.sum(w * diff * diff, axis=1)
    return np.clip(out, 0.0, 1.0)


def pointwise_tv(first, second):
    """``TV(x)`` of every row: ``1/2 int |p - q| dy``."""
    out = np.zeros(first.mean.shape[0])
    for sel in _chunks(out.size, first, second):
        p, q = first.rows(sel), second.rows(sel)
        Y, _ = _nodes(p, q)
        positive = (p.log_density(Y) - q.log_density(Y)) > _SIGN_TOL
        row, col = np.nonzero(positive[:, :-1] != positive[:, 1:])
        if row.size == 0:
            continue
        sign = np.where(positive[row, col], 1.0, -1.0)
        lo, hi = Y[row, col], Y[row, col + 1]
        p_rows, q_rows = p.rows(row), q.rows(row)
        left_positive = positive[row, col]
        for _ in range(_BISECTION_STEPS):
            mid = 0.5 * (lo + hi)
            mid_positive = (p_rows.log_density(mid[:, None])[:, 0]
                            - q_rows.log_density(mid[:, None])[:, 0]) > _SIGN_TOL
            same = mid_positive == left_positive
            lo = np.where(same, mid, lo)
            hi = np.where(same, hi, mid)
        u = 0.5 * (lo + hi)
        contribution = sign * (p_rows.cdf(u) - q_rows.cdf(u))
        block = np.zeros(sel.stop - sel.start)
        np.add.at(block, row, contribution)
        out[sel] = block
    return np.clip(out, 0.0, 1.0)


def hellinger(g1, g2, X):
    """The previous ``gmoe.metrics.hellinger`` on design rows ``X``."""
    first, second = Components.of(g1, X), Components.of(g2, X)
    return float(np.mean(np.sqrt(pointwise_hellinger_sq(first, second))))


def total_variation(g1, g2, X):
    """The previous ``gmoe.metrics.total_variation`` on design rows ``X``."""
    first, second = Components.of(g1, X), Components.of(g2, X)
    return float(np.mean(pointwise_tv(first, second)))


# ------------------------------------------------------ Voronoi translation infimum
_N_STARTS = 2


def search_t1(objective, fit, true):
    """Minimise ``objective(t1)`` from the candidates ``beta1*_j - beta1_i`` and 0, then
    Nelder-Mead from the best two; ``fit`` and ``true`` carry ``beta1`` (k, d)."""
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


def previous_search(problem):
    """The previous search as a drop-in for ``gmoe.metrics._translation._search_t1``."""
    return search_t1(lambda t: problem.value(t)[0], problem.fit, problem.true)
