"""Voronoi losses between a fitted mixing measure and a truth (SPEC 4).

A fit ``G = sum_i w_i delta_{theta_i}`` (k atoms) is compared with a truth
``G* = sum_j w*_j delta_{theta*_j}`` (k* atoms) through the Voronoi cells
``A_j = {i : theta_i is closest to theta*_j}``: the exact-specified loss D1, the
over-specified loss D2, their top-K and top-1 variants, and per-parameter errors.

Which representation, which side translated. The gate parameters are identified only up
to a common translation ``(t1, t2)`` of every ``(beta1_i, beta0_i)`` (SPEC 2.2), so both the
fit and the truth come in a whole orbit of representations. We proceed in two steps.

1. The fit's intercepts are fixed label-free: its weights are normalised to the truth's total
   mass, ``w_i <- w_i M / sum_l w_l`` with ``M = sum_j w*_j`` (``w_i = M softmax(beta0 /
   tau)_i``). A common shift of the fitted ``beta0`` (rebasing the fit onto another reference
   expert, relabelling it) leaves these weights unchanged, and they multiply the parameter
   terms as they are.
2. The **truth** is translated, as paper 1 writes its infimum: ``log w*_j -> log w*_j + t2``
   (``w*_j -> s w*_j``, ``s = e^{t2}``) and the fit's slopes are compared after ``t1``
   (``beta1_i + t1``, cells recomputed), the infimum taken over ``(t1, t2)``.

This departs from SPEC 4's literal reading, which compares the fit in its reference-convention
representation (``beta0 = 0`` for the last expert): there the weights ``w_i = exp(beta0_i)``
depend on which fitted expert is the reference, and translating the truth alone would not
be label-free (a common shift ``u`` of the fitted ``beta0`` multiplies every ``w_i`` by
``e^u``). Translating the fit's intercepts instead (``s W_j`` against ``w*_j``) is label-free
but lets ``s -> 0``, which caps the loss at ``M``: a bad fit saturates at ``M`` and the rate
curves flatten. With the normalisation the loss is label-free (a function of the fit's
density class, up to the ``t1`` search's tolerance) and not capped: it is at least the
summed parameter terms ``C``, which grow without bound as the fit moves away.

Closed form of ``t2`` (proof). For fixed ``t1`` the cells, the normalised cell masses ``W_j``
(``sum_j W_j = M``) and ``C_j = sum_{i in A_j} w_i rho_i`` (``rho_i`` the atom's parameter
terms) are fixed and

    F(s) = sum_j |W_j - s w*_j| + C,      C = sum_j C_j,  s = e^{t2} in (0, inf).

Each term is convex and piecewise linear in ``s`` with a single kink at ``c_j = W_j / w*_j``
(``w*_j > 0``; an empty cell has ``c_j = 0``). ``F`` is therefore convex and piecewise linear
on ``[0, inf)``; its right derivative at ``s`` is ``sum_{c_l <= s} w*_l - sum_{c_l > s} w*_l``,
so the minimiser is the w*-weighted median of the ``W_j / w*_j`` (SPEC 4), attained at a kink
(at ``c_j = 0``, i.e. the limit ``s -> 0``, when the empty cells carry at least half of
``M``), and evaluating ``F`` on ``{0} U {c_j}`` gives the infimum exactly. The weight part
lies in ``[0, M]`` (``F(0) = M + C``); ``C`` does not depend on ``s``. When the median is an
interval, the ``s`` closest to 1 (the untranslated truth) is reported. For the top-K loss (a
sum of the K largest per-cell terms ``|W_j - s w*_j| + C_j``, still convex and piecewise
linear in ``s``) the crossing points of the per-cell pieces are added to the candidates.

``t1`` enters the ``beta1`` terms and the cells. It is searched numerically: the loss is
evaluated at ``t1 = 0`` and at every candidate ``beta1*_j - beta1_i`` (carrying fitted atom
``i``'s slope onto true atom ``j``'s), then Nelder-Mead is run from the best two.
``translation='none'`` evaluates the same normalised fit at ``t1 = 0``, ``s = 1``, so the
infimum is never above it.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

from .._validation import check_float_array, check_option
from ..model import MixingMeasure
from ..theory import DEFAULT_RBAR

__all__ = [
    "ParameterErrors",
    "boundary_error",
    "parameter_errors",
    "voronoi_cells",
    "voronoi_loss",
]

_KINDS = ("auto", "exact", "over")
_TRANSLATIONS = ("infimum", "none")
_SCALES = ("identifiable", "raw")


# ----------------------------------------------------------------------------- inputs
def _as_measure(obj, name):
    """``obj`` as a MixingMeasure: itself, or a fitted estimator's ``mixing_measure_``."""
    if isinstance(obj, MixingMeasure):
        return obj
    measure = getattr(obj, "mixing_measure_", None)
    if isinstance(measure, MixingMeasure):
        return measure
    hint = " Fit the estimator first." if hasattr(obj, "fit") else ""
    raise ValueError(
        f"{name} must be a MixingMeasure or a fitted estimator with a mixing_measure_ "
        f"attribute, got {type(obj).__name__}.{hint}"
    )


def _check_same_features(fit, true):
    if fit.n_features != true.n_features:
        raise ValueError(
            "fitted and true must have the same number of features: expected "
            f"n_features={true.n_features} (the truth's), got n_features={fit.n_features} "
            "(the fit's)."
        )


def _check_pair(fit, true):
    """A Voronoi loss compares two models of one gating family (SPEC 4)."""
    _check_same_features(fit, true)
    if fit.gating != true.gating:
        raise ValueError(
            "fitted and true must share the gating family for a Voronoi loss: expected "
            f"gating={true.gating!r} (the truth's), got gating={fit.gating!r} (the fit's). "
            "hellinger and total_variation compare models of any families."
        )
    for option in ("activation", "topk_selection"):
        want, got = getattr(true, option), getattr(fit, option)
        if want != got:
            raise ValueError(
                f"fitted and true must share {option} for a Voronoi loss: expected "
                f"{option}={want!r} (the truth's), got {option}={got!r} (the fit's)."
            )


def _truth_images(true):
    """The truth and, for a two-expert tanh/sigmoid gate, its symmetric image (SPEC 2.2)."""
    if not (true.gating == "activation" and true.activation in ("tanh", "sigmoid")
            and true.n_experts == 2):
        return [true]
    if true.is_symmetric_fixed_point():
        raise ValueError(
            f"true is a symmetric fixed point of the {true.activation} gate: expected "
            "gate_coef[0] != -gate_coef[1], got gate_coef="
            f"{true.gate_coef.tolist()}. The Fisher information is singular there "
            "(SPEC 2.2); choose another truth."
        )
    image = true.replace(gate_coef=-true.gate_coef[::-1])
    return [true, image]


def _linear_logits(measure):
    return measure.gating in ("softmax", "topk", "temperature") or (
        measure.gating == "activation" and measure.activation == "identity")


@dataclass(frozen=True)
class _Side:
    """One model on the compared scale (private)."""

    beta1: np.ndarray        # (k, d) gate slopes
    beta0: np.ndarray        # (k,) gate intercepts
    intercept_scale: float   # beta0 = intercept_scale * log-weight (tau, or 1)
    a: np.ndarray            # (k, d)
    b: np.ndarray            # (k,)
    nu: np.ndarray           # (k,)
    tau: float | None        # compared temperature, None when not part of the atom
    translatable: bool       # beta1 has the translation symmetry

    @property
    def weights(self):
        return np.exp(self.beta0 / self.intercept_scale)

    @property
    def k(self):
        return self.beta1.shape[0]


def _side(measure, scale):
    """Parameters of ``measure`` on the identifiable (gamma) or raw scale."""
    beta1, beta0 = measure.gate_coef, measure.gate_intercept
    tau = measure.temperature if measure.family.uses_temperature else None
    linear = _linear_logits(measure)
    if scale == "identifiable" and tau is not None and linear:
        # temperature (and identity activation): the model is the softmax model in
        # gamma = (beta1, beta0) / tau; tau itself is not identifiable (SPEC 2.2).
        beta1, beta0, tau = beta1 / tau, beta0 / tau, 1.0
    return _Side(beta1=np.asarray(beta1), beta0=np.asarray(beta0),
                 intercept_scale=1.0 if tau is None else float(tau),
                 a=measure.expert_coef, b=measure.expert_intercept, nu=measure.expert_var,
                 tau=tau, translatable=linear)


def _resolve_rbar(rbar, gating):
    """A function m -> rbar(m) (m >= 2) that raises a ValueError when unknown."""
    if rbar is not None and not (callable(rbar) or isinstance(rbar, Mapping)):
        raise ValueError(
            "rbar must be None, a dict {cell size m: exponent} or a callable m -> exponent, "
            f"got {type(rbar).__name__}: {rbar!r}."
        )
    defaults = {} if gating == "activation" else DEFAULT_RBAR
    table = dict(defaults)
    if isinstance(rbar, Mapping):
        table.update(rbar)

    def exponent(m):
        if callable(rbar):
            value = rbar(m)
        elif m in table:
            value = table[m]
        elif gating == "activation":
            raise ValueError(
                "rbar is required for gating='activation' with kind='over': the exponents "
                "of the over-specified loss are not established for the activation gate "
                f"(SPEC 4). Expected rbar to give a cell of m={m} atoms its exponent, got "
                f"rbar={rbar!r}; pass e.g. rbar={{{m}: ...}}."
            )
        else:
            raise ValueError(
                f"rbar({m}) is unknown for a cell of m={m} fitted atoms (SPEC 4 knows "
                f"rbar(2)=4 and rbar(3)=6): expected rbar to give m={m} an exponent, got "
                f"rbar={rbar!r}; pass e.g. rbar={{{m}: ...}}."
            )
        try:
            value = float(value)
        except (TypeError, ValueError) as err:
            raise ValueError(f"rbar({m}) must be a positive number, got {value!r}.") from err
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"rbar({m}) must be a positive number, got {value!r}.")
        return value

    return exponent


# ---------------------------------------------------------------------- the loss core
def _minimise_scale(W, wstar, C, n_sub):
    """Infimum over ``s > 0`` of the sum of the ``n_sub`` largest ``|W_j - s w*_j| + C_j``.

    Exact: the objective is convex and piecewise linear in ``s`` (module docstring), so it
    is evaluated on ``{0}``, the kinks ``W_j / w*_j`` and, for ``n_sub < k*``, the
    crossings of the per-cell linear pieces. Among tied minimisers (an interval: the
    objective is convex) the ``s`` closest to 1 is returned. Returns ``(value, s)``.
    """
    n_true = W.shape[0]
    if not np.all(np.isfinite(C)):   # a cell of unknown exponent: configuration excluded
        return np.inf, 1.0
    candidates = [np.array([0.0, 1.0]), W / wstar]
    if n_sub < n_true:
        # Pieces of T_j: W_j + C_j - s w*_j left of its kink, -W_j + C_j + s w*_j right.
        slopes = np.concatenate([-wstar, wstar])
        offsets = np.concatenate([W + C, C - W])
        ds = slopes[:, None] - slopes[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = (offsets[None, :] - offsets[:, None]) / ds
        cross = cross[np.isfinite(cross) & (cross > 0)]
        candidates.append(cross)
    s = np.unique(np.concatenate(candidates))
    terms = np.abs(W - s[:, None] * wstar) + C
    if n_sub < n_true:
        values = np.sort(terms, axis=1)[:, n_true - n_sub:].sum(axis=1)
    else:
        values = terms.sum(axis=1)
    best = float(values.min())
    tied = s[values <= best + 1e-12 * max(1.0, abs(best))]
    s_best = float(np.clip(1.0, tied.min(), tied.max()))
    return best, s_best


class _Problem:
    """The loss of one fit against one truth as a function of the slope shift ``t1``."""

    def __init__(self, fit, true, *, exponent=None, n_sub=None, unit_weights=False):
        self.fit, self.true = fit, true
        self.exponent = exponent          # None: every term to the power 1 (D1 form)
        self.n_sub = true.k if n_sub is None else min(n_sub, true.k)
        self.unit_weights = unit_weights
        self.da = np.linalg.norm(fit.a[:, None, :] - true.a[None, :, :], axis=2)
        self.db = np.abs(fit.b[:, None] - true.b[None, :])
        self.dnu = np.abs(fit.nu[:, None] - true.nu[None, :])
        self.dtau = 0.0 if fit.tau is None else abs(fit.tau - true.tau)
        self.expert_dist = self.da + self.db + self.dnu
        self.wstar = true.weights
        # The fit's weights normalised to the truth's total mass (label-free, module doc).
        self.w = np.ones(fit.k) if unit_weights else _normalised_weights(fit, self.wstar.sum())
        self.rows = np.arange(fit.k)

    @property
    def log_factor(self):
        """``log(M / sum_i w_i)``: the normalisation's shift of the fit's log-weights."""
        return float(np.log(self.wstar.sum()) - logsumexp(self.fit.beta0
                                                          / self.fit.intercept_scale))

    def dbeta1(self, shifted_beta1):
        diff = shifted_beta1[:, None, :] - self.true.beta1[None, :, :]
        return np.sqrt(np.einsum("ijk,ijk->ij", diff, diff))

    def cells(self, shifted_beta1):
        dbeta1 = self.dbeta1(shifted_beta1)
        # np.argmin returns the first minimum: ties go to the lower true index (SPEC 4).
        return np.argmin(dbeta1 + self.expert_dist + self.dtau, axis=1), dbeta1

    def atom_terms(self, shifted_beta1):
        """Cells and each atom's parameter term ``rho_i`` (+inf where rbar is unknown)."""
        cells, dbeta1 = self.cells(shifted_beta1)
        rows = self.rows
        g, a, b, nu = (dbeta1[rows, cells], self.da[rows, cells], self.db[rows, cells],
                       self.dnu[rows, cells])
        rho = g + a + b + nu + self.dtau
        if self.exponent is not None:
            counts = np.bincount(cells, minlength=self.true.k)
            if counts.max() == 1:
                return cells, rho
            sizes = counts[cells]
            for m in set(counts[counts > 1].tolist()):
                r = self.exponent(m)
                sel = sizes == m
                rho[sel] = (g[sel] ** r + b[sel] ** r + self.dtau ** r
                            + a[sel] ** (r / 2) + nu[sel] ** (r / 2))
        return cells, rho

    def masses(self, t1):
        cells, rho = self.atom_terms(self.fit.beta1 + t1)
        W = np.bincount(cells, weights=self.w, minlength=self.true.k)
        C = np.bincount(cells, weights=self.w * rho, minlength=self.true.k)
        return cells, W, C

    def value(self, t1, *, scale_free=True):
        """Loss at slope shift ``t1``, minimised over ``t2`` when ``scale_free``."""
        _, W, C = self.masses(t1)
        if scale_free:
            return _minimise_scale(W, self.wstar, C, self.n_sub)
        terms = np.abs(W - self.wstar) + C
        return float(np.sort(terms)[self.true.k - self.n_sub:].sum()), 1.0


def _normalised_weights(side, mass):
    """The fit's weights rescaled to total ``mass``: ``mass * softmax(beta0 / tau)``.

    The raw weights are rescaled when representable (exact when their sum is already
    ``mass``, e.g. a fit equal to the truth), the softmax is taken otherwise.
    """
    raw = side.weights
    total = raw.sum()
    if np.isfinite(total) and total > 1e-300:
        return raw * (mass / total)
    return mass * softmax(side.beta0 / side.intercept_scale)


#: Nelder-Mead runs of the t1 search, from the best candidates.
_N_STARTS = 2


def _search_t1(objective, fit, true):
    """Minimise ``objective(t1)`` from the candidates ``beta1*_j - beta1_i`` and 0."""
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


def _solve(problem, translation):
    """Infimum (or untranslated value) of a problem: ``(value, t1, s)``."""
    d = problem.fit.beta1.shape[1]
    zero = np.zeros(d)
    if translation == "none":
        value, s = problem.value(zero, scale_free=False)
        return value, zero, s
    if not problem.fit.translatable:
        value, s = problem.value(zero)
        return value, zero, s
    t1, value = _search_t1(lambda t: problem.value(t)[0], problem.fit, problem.true)
    value, s = problem.value(t1)
    return value, t1, s


# ------------------------------------------------------------------ top-1 alignment
def _top1_alignment(fit, true, translation, linear):
    """Least-squares alignment of a fit's gate on a top-1 truth's (SPEC 4).

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
    return measure.gating == "topk" and measure.top_k == 1


def _top1(fit_m, true_m, translation):
    fit, true = _side(fit_m, "raw"), _side(true_m, "raw")
    linear = true_m.topk_selection == "linear"
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
    fit = _side(fit_m, scale)
    best = None
    for image, truth in enumerate(_truth_images(true_m)):
        true = _side(truth, scale)
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


# -------------------------------------------------------------------------- public
def voronoi_cells(fitted, true, *, translation="infimum", scale="identifiable"):
    """Voronoi cell of each fitted atom: the index of its closest true atom.

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit ``G`` (k atoms); an estimator contributes its ``mixing_measure_``.
    true : MixingMeasure or fitted estimator
        The truth ``G*`` (k* atoms), same gating family and features.
    translation : {'infimum', 'none'}, default='infimum'
        'infimum': the cells after the gate translation that minimises the exponent-1
        (D1-form) loss, so that they do not depend on how the fit is labelled or which
        expert it uses as reference. 'none': the cells of the parameters as given.
    scale : {'identifiable', 'raw'}, default='identifiable'
        Temperature gates: compare ``gamma = (beta1, beta0) / tau`` or the raw parameters.

    Returns
    -------
    cells : ndarray of int of shape (k,)
        ``cells[i] = j`` when fitted atom ``i`` lies in ``A_j``.

    Notes
    -----
    SPEC 4: ``dist(theta_i, theta*_j) = ||d beta1|| + ||d a|| + |d b| + |d nu|`` (``+ |d tau|``
    for the temperature families); ``beta0`` never enters; ties go to the lower ``j``. A true
    atom may have an empty cell. For a top-1 truth the fit's gate is first aligned on the
    truth's by the least-squares scale (see :func:`voronoi_loss`). For a two-expert
    tanh/sigmoid truth the cells are taken against whichever of the truth and its symmetric
    image is closer (SPEC 2.2).

    Examples
    --------
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import voronoi_cells
    >>> true = MixingMeasure([[2.0], [0.0]], [0.0, 0.0], [[1.0], [0.0]], [0.0, 1.0],
    ...                      [1.0, 1.0])
    >>> voronoi_cells(true, true).tolist()
    [0, 1]
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(translation, "translation", _TRANSLATIONS)
    check_option(scale, "scale", _SCALES)
    return _align(fit_m, true_m, translation, scale).cells.astype(np.intp)


def voronoi_loss(fitted, true, *, kind="auto", rbar=None, translation="infimum",
                 scale="identifiable"):
    r"""Voronoi loss between a fit and a truth: D1 (exact-specified) or D2 (over-specified).

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit ``G`` with k atoms.
    true : MixingMeasure or fitted estimator
        The truth ``G*`` with k* atoms, same gating family (and activation / top-K
        selection) and number of features.
    kind : {'auto', 'exact', 'over'}, default='auto'
        'exact': D1, requires ``k == k*``. 'over': D2, requires ``k >= k*``. 'auto': 'exact'
        when ``k == k*``, 'over' when ``k > k*``; ``k < k*`` is an error.
    rbar : dict or callable, optional
        Exponents ``rbar(m)`` of D2 for a cell of ``m >= 2`` atoms, as ``{m: exponent}`` or
        ``m -> exponent``. Defaults ``rbar(2) = 4``, ``rbar(3) = 6`` (a dict extends them);
        larger cells need it. Required for the activation gate.
    translation : {'infimum', 'none'}, default='infimum'
        'infimum': the infimum over a common translation of the gate parameters (the
        fit's slopes by ``t1``, the truth's log-weights by ``t2``). 'none': the slopes as
        given and the truth's weights untranslated. Both use the fit's weights normalised
        to the truth's total mass (see Notes).
    scale : {'identifiable', 'raw'}, default='identifiable'
        Temperature gate (and the identity activation): losses on
        ``gamma = (beta1, beta0) / tau`` or, on request, on the raw ``(beta1, beta0, tau)``,
        which are not identifiable (where a fit ends on their orbit is set by its start).

    Returns
    -------
    float
        The loss, >= 0 and 0 at the truth.

    Raises
    ------
    ValueError
        Different feature counts or gating families, ``k < k*``, ``kind='exact'`` with
        ``k != k*``, a cell of unknown exponent, a symmetric fixed-point truth.

    See Also
    --------
    parameter_errors : per-cell, per-parameter errors.
    hellinger, total_variation : distances between the conditional densities.

    Notes
    -----
    SPEC 4, with cells ``A_j`` from :func:`voronoi_cells`, ``W_j = sum_{i in A_j} w_i`` and
    the fit's weights normalised to the truth's total mass,
    ``w_i = (sum_j w*_j) exp(beta0_i) / sum_l exp(beta0_l)``:

    .. math::

        D_1 = \sum_j \Big[ |W_j - w^*_j| + \sum_{i \in A_j} w_i
              (\|\Delta\beta_{1}\| + \|\Delta a\| + |\Delta b| + |\Delta\nu|) \Big]

        D_2 = \sum_j |W_j - w^*_j| + \sum_{|A_j| = 1} \sum_{i \in A_j} w_i (\cdots)
              + \sum_{|A_j| > 1} \sum_{i \in A_j} w_i (\|\Delta\beta_1\|^{\bar r}
              + |\Delta b|^{\bar r} + \|\Delta a\|^{\bar r / 2} + |\Delta\nu|^{\bar r / 2})

    with ``rbar = rbar(|A_j|)``; ``|d tau|`` is added with the exponent of ``d beta1``.

    * Translation: the fit is normalised to the truth's total mass and the truth is
      translated, as in paper 1: ``|W_j - e^{t2} w*_j|`` with the fit's slopes compared
      after ``beta1_i + t1``, and the infimum taken over ``(t1, t2)``. ``e^{t2}`` has a
      closed form, the w*-weighted median of ``W_j / w*_j`` (the proof is in the module
      source); ``t1`` is searched from the candidates that carry each fitted slope onto
      each true slope, then refined by Nelder-Mead with the cells recomputed. The
      activation gate has no slope translation (except the identity activation): only
      ``t2``. 'none' is the same normalised fit at ``t1 = 0``, ``e^{t2} = 1``, so the
      infimum is never above it.
    * The loss is label-free (relabelling or rebasing a fit changes its ``beta0`` by a
      common shift, which the normalisation removes) and not capped: it is at least the
      summed parameter terms, which grow without bound as the fit moves away (the weight
      terms alone lie in ``[0, sum_j w*_j]``). This departs from SPEC 4's literal
      "reference convention" representation of the fit, ``w_i = exp(beta0_i)`` with the
      last expert's ``beta0 = 0``: those weights depend on which fitted expert is the
      reference, so translating the truth against them is not label-free, while
      translating the fit's weights instead (``e^{t2} W_j`` against ``w*_j``) lets
      ``e^{t2} -> 0`` and caps the loss at ``sum_j w*_j``, where bad fits saturate.
    * Top-K truth: the maximum over the K-subsets of true atoms of the per-cell terms
      restricted to them, i.e. the sum of the K largest per-cell terms.
    * Top-1 truth: the fit's gate vectors ``(beta1_i, beta0_i)`` are mapped to
      ``c (beta1_i, beta0_i) + t`` with the scale ``c >= 0`` and translation ``t``
      (``t = 0`` without translation) that best match the truth's gate in least squares;
      the weight terms are dropped and every atom counts with weight 1 (the selected
      weight is always 1, so the ``w_i`` carry no mass); the loss is the largest per-cell
      term. Here 'infimum' means this least-squares translation (label-free, but not the
      minimiser of the loss, so it is not bounded by the untranslated value). Report
      :func:`boundary_error` as the gate's metric.
    * Two-expert tanh/sigmoid truth: the minimum over the truth and its symmetric image
      ``(beta1_1, beta1_2) -> (-beta1_2, -beta1_1)``; a truth that is its own image is
      rejected.

    References
    ----------
    .. [1] Nguyen, Nguyen & Ho (2023). Demystifying softmax gating function in Gaussian
       mixture of experts. NeurIPS.
    .. [2] Nguyen, Akbarian, Yan & Ho (2024). Statistical perspective of top-K sparse
       softmax gating mixture of experts. ICLR.

    Examples
    --------
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import voronoi_loss
    >>> true = MixingMeasure([[2.0], [0.0]], [0.0, 0.0], [[1.0], [0.0]], [0.0, 1.0],
    ...                      [1.0, 1.0])
    >>> voronoi_loss(true, true)
    0.0
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(kind, "kind", _KINDS)
    check_option(translation, "translation", _TRANSLATIONS)
    check_option(scale, "scale", _SCALES)
    _check_pair(fit_m, true_m)
    k, k_true = fit_m.n_experts, true_m.n_experts
    if kind == "auto":
        if k < k_true:
            raise ValueError(
                f"kind='auto' needs fitted.n_experts >= true.n_experts: expected n_experts >= "
                f"{k_true}, got n_experts={k}. Voronoi losses are defined for exact- and "
                "over-specified fits only."
            )
        kind = "exact" if k == k_true else "over"
    elif kind == "exact" and k != k_true:
        raise ValueError(
            f"kind='exact' (D1) needs fitted.n_experts == true.n_experts: expected "
            f"n_experts={k_true}, got n_experts={k}."
            + (" Use kind='over' (D2)." if k > k_true else "")
        )
    elif kind == "over" and k < k_true:
        raise ValueError(
            f"kind='over' (D2) needs fitted.n_experts >= true.n_experts: expected n_experts "
            f">= {k_true}, got n_experts={k}."
        )
    if kind == "exact":
        exponent = None
    else:
        exponent = _resolve_rbar(rbar, fit_m.gating)
        if rbar is None and fit_m.gating == "activation" and k > 1:
            raise ValueError(
                "rbar is required for gating='activation' with kind='over': the exponents "
                "of the over-specified loss are not established for the activation gate "
                "(SPEC 4). Expected a dict {m: exponent} or a callable, got rbar=None."
            )
        # The fit's own cells (those of voronoi_cells) must have known exponents;
        # translations under which a cell of unknown exponent would form are left out of
        # the infimum.
        if not _all_known(exponent, k):
            sizes = np.bincount(_align(fit_m, true_m, translation, scale).cells)
            for m in np.unique(sizes[sizes > 1]):
                exponent(int(m))
            exponent = _guarded(exponent)

    if _is_top1(true_m):
        fit, true_side, (cells, beta1, _, _, _) = _top1(fit_m, true_m, translation)
        problem = _Problem(fit, true_side, exponent=exponent, unit_weights=True)
        _, rho = problem.atom_terms(beta1)
        per_cell = np.bincount(cells, weights=rho, minlength=true_side.k)
        return _finite(float(per_cell.max()))

    n_sub = true_m.top_k if true_m.gating == "topk" else None
    fit = _side(fit_m, scale)
    best = np.inf
    for truth in _truth_images(true_m):
        problem = _Problem(fit, _side(truth, scale), exponent=exponent, n_sub=n_sub)
        best = min(best, _solve(problem, translation)[0])
    return _finite(best)


def _all_known(exponent, k):
    try:
        for m in range(2, k + 1):
            exponent(m)
    except ValueError:
        return False
    return True


def _guarded(exponent):
    """Wrap ``exponent`` so that an unknown ``rbar(m)`` makes the configuration infinite."""
    def wrapped(m):
        try:
            return exponent(m)
        except ValueError:
            return np.inf
    return wrapped


def _finite(value):
    if not np.isfinite(value):  # pragma: no cover - guarded by the check of the fit's cells
        raise ValueError("Every translation forms a cell of unknown exponent; pass rbar.")
    return float(value)


@dataclass(frozen=True)
class ParameterErrors:
    """Per-cell, per-parameter errors of a fit against a truth (SPEC 4).

    Every per-cell array has shape ``(k*,)``, entry ``j`` is the maximum over the fitted
    atoms of cell ``A_j`` (NaN for an empty cell).

    Attributes
    ----------
    cells : ndarray of int of shape (k,)
        Voronoi cell of each fitted atom (after the alignment).
    weight : ndarray of shape (k*,)
        ``|W_j - s w*_j|``: the cell mass of the fit's weights normalised to the truth's
        total mass against the truth's weight translated by ``s = e^{t2}`` of the
        alignment (``s = 1`` without translation); NaN for a top-1 truth (no weights).
    gate_coef : ndarray of shape (k*,)
        ``max ||d beta1||``.
    gate_intercept : ndarray of shape (k*,)
        ``max |d beta0|`` between the normalised fit and the translated truth (NaN where
        ``beta0`` is not identified: top-1 truth with linear selection).
    expert_coef : ndarray of shape (k*,)
        ``max ||d a||``.
    expert_intercept : ndarray of shape (k*,)
        ``max |d b|``.
    expert_var : ndarray of shape (k*,)
        ``max |d nu|``.
    temperature : float or None
        ``|tau - tau*|`` on the compared scale (0 on the identifiable scale of the
        temperature gate), None for the families without temperature.
    symmetric_image : bool
        Whether the truth's symmetric image (two-expert tanh/sigmoid gate) was used.
    """

    cells: np.ndarray
    weight: np.ndarray
    gate_coef: np.ndarray
    gate_intercept: np.ndarray
    expert_coef: np.ndarray
    expert_intercept: np.ndarray
    expert_var: np.ndarray
    temperature: float | None
    symmetric_image: bool


def _cell_max(values, cells, n_cells):
    out = np.full(n_cells, np.nan)
    for j in range(n_cells):
        sel = cells == j
        if np.any(sel):
            out[j] = np.max(values[sel])
    return out


def parameter_errors(fitted, true, *, translation="infimum", scale="identifiable"):
    """Per-cell errors of each parameter and of the cell masses (SPEC 4).

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit (any number of experts).
    true : MixingMeasure or fitted estimator
        The truth, same gating family and features.
    translation : {'infimum', 'none'}, default='infimum'
        Align the fit's gate by the translation that minimises the exponent-1 (D1-form)
        loss summed over all cells, or compare the parameters as given.
    scale : {'identifiable', 'raw'}, default='identifiable'
        Temperature gate: errors on ``gamma = (beta1, beta0) / tau`` or raw.

    Returns
    -------
    ParameterErrors
        Cells, ``|W_j - s w*_j|`` and the maxima over each cell of ``||d beta1||``,
        ``|d beta0|``, ``||d a||``, ``|d b|``, ``|d nu|``.

    See Also
    --------
    voronoi_cells, voronoi_loss

    Notes
    -----
    The alignment is that of :func:`voronoi_cells`: for a top-1 truth, the least-squares
    scale and translation of the gate (weights are then not defined and reported as NaN);
    for a two-expert tanh/sigmoid truth, the closer of the truth and its symmetric image.
    As in :func:`voronoi_loss`, the fit's weights are normalised to the truth's total mass
    and the truth's weights translated by ``s = e^{t2}`` (when the weighted median defining
    ``s`` is an interval, the ``s`` closest to 1). ``weight`` is ``|W_j - s w*_j|`` with the
    normalised cell masses ``W_j``; ``d beta0`` compares the normalised fitted log-weight
    ``tau log w_i`` with the translated true one ``tau log(s w*_j)``, so a cell split into
    ``m`` atoms of equal weight shows ``|d beta0| = log m`` (``tau log m`` on a temperature
    scale), and ``inf`` when ``s = 0`` (empty cells holding at least half of the truth's
    mass).
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(translation, "translation", _TRANSLATIONS)
    check_option(scale, "scale", _SCALES)
    al = _align(fit_m, true_m, translation, scale)
    fit, true_side, cells = al.fit, al.true, al.cells
    n_true = true_side.k
    gate_coef = np.linalg.norm(al.beta1 - true_side.beta1[cells], axis=1)
    expert_coef = np.linalg.norm(fit.a - true_side.a[cells], axis=1)
    expert_intercept = np.abs(fit.b - true_side.b[cells])
    expert_var = np.abs(fit.nu - true_side.nu[cells])
    if al.beta0 is None:
        gate_intercept = np.full(fit.k, np.nan)
    else:
        gate_intercept = np.abs(al.beta0 - true_side.beta0[cells])
    if al.s is None:
        weight = np.full(n_true, np.nan)
    else:
        W = np.bincount(cells, weights=al.w, minlength=n_true)
        weight = np.abs(W - al.s * true_side.weights)
    return ParameterErrors(
        cells=cells.astype(np.intp),
        weight=weight,
        gate_coef=_cell_max(gate_coef, cells, n_true),
        gate_intercept=_cell_max(gate_intercept, cells, n_true),
        expert_coef=_cell_max(expert_coef, cells, n_true),
        expert_intercept=_cell_max(expert_intercept, cells, n_true),
        expert_var=_cell_max(expert_var, cells, n_true),
        temperature=None if fit.tau is None else abs(fit.tau - true_side.tau),
        symmetric_image=al.symmetric_image,
    )


_BOUNDARY_KINDS = ("fraction", "hausdorff")


def _selection_lines(measure):
    """Slopes and intercepts of the scores whose argmax selects the top expert (d = 1)."""
    if not _linear_logits(measure):
        raise ValueError(
            "kind='hausdorff' needs linear selection scores: expected gating in "
            "['softmax', 'temperature', 'topk'] or the identity activation, got "
            f"gating={measure.gating!r}, activation={measure.activation!r}. Use "
            "kind='fraction'."
        )
    slopes = measure.gate_coef[:, 0]
    if measure.gating == "topk" and measure.topk_selection == "linear":
        return slopes, np.zeros(measure.n_experts)
    return slopes, measure.gate_intercept


def _boundary_points(slopes, intercepts, labels, low, high):
    """Points of ``(low, high)`` where the label of the top-scored line changes."""
    ds = slopes[:, None] - slopes[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        cross = -(intercepts[:, None] - intercepts[None, :]) / ds
    cross = cross[np.isfinite(cross) & (cross > low) & (cross < high)]
    points = np.unique(np.concatenate([[low, high], cross]))
    mids = 0.5 * (points[:-1] + points[1:])
    seg = labels[np.argmax(mids[:, None] * slopes + intercepts, axis=1)]
    return points[1:-1][seg[:-1] != seg[1:]]


def boundary_error(fitted, true, X, *, kind="fraction"):
    """Distance between the fitted and the true selection boundaries over a design.

    The gate's metric for a top-1 truth (SPEC 4), where only the selection regions are
    identifiable; defined for any gating family through the most-weighted expert.

    Parameters
    ----------
    fitted : MixingMeasure or fitted estimator
        The fit, same gating family and features as the truth.
    true : MixingMeasure or fitted estimator
        The truth.
    X : array-like of shape (n_samples, n_features)
        The design.
    kind : {'fraction', 'hausdorff'}, default='fraction'
        'fraction': the fraction of design rows whose selected expert differs, the fit's
        experts mapped to true experts by their Voronoi cells (:func:`voronoi_cells`).
        'hausdorff' (one feature, linear selection scores): the Hausdorff distance between
        the fitted and the true boundary locations inside ``[min X, max X]``, both sets
        augmented with the two ends of that range.

    Returns
    -------
    float
        0 when the selections agree; 'fraction' is in [0, 1], 'hausdorff' in
        ``[0, max X - min X]``.

    Notes
    -----
    The selected expert at ``x`` is the one of largest gate (ties to the lower index),
    i.e. the top-1 selection. A fit's boundary between two of its experts of the same
    Voronoi cell is not a boundary. On a one-feature grid or a uniform design, 'fraction'
    estimates the length of the set where the selections differ over the range length:
    when the boundaries correspond one to one, the sum of the boundary shifts divided by
    the range. 'hausdorff' is the largest shift; the range ends make it finite when the
    fit and the truth have different numbers of boundaries.

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe import MixingMeasure
    >>> from gmoe.metrics import boundary_error
    >>> true = MixingMeasure([[25.0], [0.0]], [-8.1, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
    ...                      [0.09, 0.16], gating="topk", top_k=1)
    >>> fit = true.replace(gate_intercept=[-9.1, 0.0])
    >>> X = np.linspace(0, 1, 101)[:, None]
    >>> round(boundary_error(fit, true, X, kind="hausdorff"), 12)
    0.04
    """
    fit_m, true_m = _as_measure(fitted, "fitted"), _as_measure(true, "true")
    check_option(kind, "kind", _BOUNDARY_KINDS)
    _check_pair(fit_m, true_m)
    X = check_float_array(X, "X", ndim=2, shape=(None, true_m.n_features))
    if X.shape[0] == 0:
        raise ValueError("X must hold at least one row, got 0 rows.")
    cells = voronoi_cells(fit_m, true_m)
    if kind == "fraction":
        selected_true = np.argmax(true_m.log_gate(X), axis=1)
        selected_fit = cells[np.argmax(fit_m.log_gate(X), axis=1)]
        return float(np.mean(selected_fit != selected_true))
    if true_m.n_features != 1:
        raise ValueError(
            "kind='hausdorff' locates boundaries on one feature: expected n_features=1, got "
            f"n_features={true_m.n_features}. Use kind='fraction'."
        )
    true_lines, fit_lines = _selection_lines(true_m), _selection_lines(fit_m)
    low, high = float(X.min()), float(X.max())
    if not high > low:
        return 0.0
    true_points = _boundary_points(*true_lines, np.arange(true_m.n_experts), low, high)
    fit_points = _boundary_points(*fit_lines, cells, low, high)
    a = np.concatenate([[low, high], true_points])
    b = np.concatenate([[low, high], fit_points])
    gaps = np.abs(a[:, None] - b[None, :])
    return float(max(gaps.min(axis=1).max(), gaps.min(axis=0).max()))
