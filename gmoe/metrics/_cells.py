"""The two models of a Voronoi loss, their cells and per-cell terms (private).

A fit ``G = sum_i w_i delta_{theta_i}`` (k atoms) is compared with a truth
``G* = sum_j w*_j delta_{theta*_j}`` (k* atoms) on the compared scale (:class:`_Side`);
:class:`_Problem` holds the atom-to-atom distances and evaluates the loss at a slope
translation ``t1``: the Voronoi cells ``A_j`` (each fitted atom in the cell of its closest
true atom, ties to the lower ``j``), each atom's parameter term ``rho_i`` (exponent 1, or
``rbar(|A_j|)`` in the cells of several atoms), the normalised cell masses ``W_j`` and
``C_j = sum_{i in A_j} w_i rho_i``, and the infimum over the intercept translation ``t2``.

Closed form of ``t2`` (proof). For fixed ``t1`` the cells, the normalised cell masses ``W_j``
(``sum_j W_j = M``) and ``C_j`` are fixed and

    F(s) = sum_j |W_j - s w*_j| + C,      C = sum_j C_j,  s = e^{t2} in (0, inf).

Each term is convex and piecewise linear in ``s`` with a single kink at ``c_j = W_j / w*_j``
(``w*_j > 0``; an empty cell has ``c_j = 0``). ``F`` is therefore convex and piecewise linear
on ``[0, inf)``; its right derivative at ``s`` is ``sum_{c_l <= s} w*_l - sum_{c_l > s} w*_l``,
so the minimiser is the w*-weighted median of the ``W_j / w*_j``, attained at a kink
(at ``c_j = 0``, i.e. the limit ``s -> 0``, when the empty cells carry at least half of
``M``), and evaluating ``F`` on ``{0} U {c_j}`` gives the infimum exactly. The weight part
lies in ``[0, M]`` (``F(0) = M + C``); ``C`` does not depend on ``s``. When the median is an
interval, the ``s`` closest to 1 (the untranslated truth) is reported. For the top-K loss (a
sum of the K largest per-cell terms ``|W_j - s w*_j| + C_j``, still convex and piecewise
linear in ``s``) the crossing points of the per-cell pieces are added to the candidates.
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.special import logsumexp, softmax

from ..model import as_measure
from ..theory import DEFAULT_RBAR


# ----------------------------------------------------------------------------- inputs
def _as_measure(obj, name):
    """``obj`` as a MixingMeasure: itself, or a fitted estimator's ``mixing_measure_``."""
    return as_measure(obj, name)


def _check_same_features(fit, true):
    if fit.n_features != true.n_features:
        raise ValueError(
            "fitted and true must have the same number of features: expected "
            f"n_features={true.n_features} (the truth's), got n_features={fit.n_features} "
            "(the fit's)."
        )


def _check_pair(fit, true):
    """A Voronoi loss compares two models of one gating family."""
    _check_same_features(fit, true)
    if fit.gating != true.gating:
        raise ValueError(
            "fitted and true must share the gating family for a Voronoi loss: expected "
            f"gating={true.gating!r} (the truth's), got gating={fit.gating!r} (the fit's). "
            "hellinger and total_variation compare models of any families."
        )
    # The options that shape the gate must agree; those a fit may choose (top-K's top_k)
    # need not.
    for option, want in true.family.options().items():
        got = fit.family.options().get(option)
        if option not in true.family.FIT_MAY_CHANGE and want != got:
            raise ValueError(
                f"fitted and true must share {option} for a Voronoi loss: expected "
                f"{option}={want!r} (the truth's), got {option}={got!r} (the fit's)."
            )


def _check_truth(true):
    """The truth, refused at a symmetric fixed point of its gate (two-expert tanh/sigmoid)."""
    if true.is_symmetric_fixed_point():
        raise ValueError(
            f"true is a symmetric fixed point of its gate ({true.family.describe()}): "
            "expected gate_coef[0] != -gate_coef[1], got gate_coef="
            f"{true.gate_coef.tolist()}. The Fisher information is singular there "
            "(see the Theory and conventions page of the documentation); choose another "
            "truth."
        )
    return true


def _pairings(fit, true):
    """The (fit, truth, mirrored) pairs a loss takes its minimum over.

    A two-expert tanh/sigmoid gate has a mirror image of exactly the same density. A loss
    must not depend on which of the two the optimiser returned, so a fit that has an
    image is compared through whichever of it and its image is closer to the truth as
    given. Not the other way round (the truth's images against the fit as returned): the
    mirror does not move whole atoms (it swaps the experts' gate slopes, not their
    weights), so a loss is not unchanged when fit and truth are mirrored together, and a
    minimum over the truth's images would still depend on the fit's representation; and
    against the truth as given each per-cell error keeps naming the truth's own
    parameter. A fit without an image (more experts than two) is compared with the truth
    and the truth's image, either of which it may approximate.
    """
    _check_truth(true)
    fit_images = fit.symmetric_images()
    if fit_images:
        return [(fit, true, False), *((image, true, True) for image in fit_images)]
    return [(fit, true, False), *((fit, image, True) for image in true.symmetric_images())]


def _linear_logits(measure):
    return measure.family.linear_logits


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
    translatable: bool       # beta1 has the translation symmetry (or means nothing)

    @property
    def weights(self):
        return np.exp(self.beta0 / self.intercept_scale)

    @property
    def k(self):
        return self.beta1.shape[0]


def _side(measure, scale):
    """Parameters of ``measure`` on the identifiable (gamma) or raw scale."""
    beta1, beta0 = measure.gate_coef, measure.gate_intercept
    # A lone expert's gate is 1 whatever its slope and temperature: its temperature is
    # left out, and its slope is free to translate (under translation='infimum').
    alone = measure.n_experts == 1
    uses_tau = measure.family.uses_temperature and not alone
    tau = measure.temperature if uses_tau else None
    linear = _linear_logits(measure)
    if scale == "identifiable" and tau is not None and linear:
        # temperature (and identity activation): the model is the softmax model in
        # gamma = (beta1, beta0) / tau; tau itself is not identifiable.
        beta1, beta0, tau = beta1 / tau, beta0 / tau, 1.0
    return _Side(beta1=np.asarray(beta1), beta0=np.asarray(beta0),
                 intercept_scale=1.0 if tau is None else float(tau),
                 a=measure.expert_coef, b=measure.expert_intercept, nu=measure.expert_var,
                 tau=tau,
                 # A family that pins the reference slope says a common translation of
                 # the slopes leaves its gate unchanged (a softmax over any fixed feature
                 # map); linear logits have the symmetry whether they pin it or not.
                 translatable=linear or measure.family.pins_reference_coef or alone)


def _check_true_masses(true, wstar):
    """The truth's masses ``exp(beta0 / tau)`` must be positive float64 numbers.

    Every term of a Voronoi loss is weighted by a mass, and the cells' scale infimum
    divides by them: a mass that underflows to 0 or overflows makes the loss undefined.
    """
    # Subnormal masses lose digits and overflow the divisions: the normal range only.
    bad = np.flatnonzero(~(np.isfinite(wstar) & (wstar >= np.finfo(np.float64).tiny)))
    if bad.size:
        logs = true.beta0 / true.intercept_scale
        raise ValueError(
            "the truth's masses exp(beta0 / tau) weigh every term of a Voronoi loss, but "
            + ", ".join(f"atom {j}'s is exp({logs[j]:.6g})" for j in bad)
            + ", beyond float64's normal range (an exponent outside about -708 to 709). "
            "Re-base the truth "
            "on another reference expert if that brings every exponent into range, or "
            "compare the densities (hellinger, total_variation).")


def _resolve_rbar(rbar, family):
    """A function m -> rbar(m) (m >= 2) that raises a ValueError when unknown."""
    if rbar is not None and not (callable(rbar) or isinstance(rbar, Mapping)):
        raise ValueError(
            "rbar must be None, a dict {cell size m: exponent} or a callable m -> exponent, "
            f"got {type(rbar).__name__}: {rbar!r}."
        )
    known = family.over_specified_exponents_known()
    defaults = DEFAULT_RBAR if known else {}
    table = dict(defaults)
    if isinstance(rbar, Mapping):
        table.update(rbar)

    def exponent(m):
        if callable(rbar):
            value = rbar(m)
        elif m in table:
            value = table[m]
        elif not known:
            raise ValueError(
                f"rbar is required for gating={family.name!r} with kind='over': the "
                "exponents of the over-specified loss are not established for this gate. "
                f"Expected rbar to give a cell of m={m} atoms its exponent, got "
                f"rbar={rbar!r}; pass e.g. rbar={{{m}: ...}}."
            )
        else:
            raise ValueError(
                f"rbar({m}) is unknown for a cell of m={m} fitted atoms (the defaults are "
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




def _minimise_scale_value(W, wstar, C, n_sub):
    """:func:`_minimise_scale`'s value alone, in Python floats.

    The same candidates and the same operations in the same order (numpy too sums fewer
    than 8 terms left to right), so the same bits, at a fraction of the array overhead.
    Falls back to :func:`_minimise_scale` for 8 or more true atoms.
    """
    n_true = W.shape[0]
    if n_true >= 8:
        return _minimise_scale(W, wstar, C, n_sub)[0]
    W, wstar, C = W.tolist(), wstar.tolist(), C.tolist()
    if not all(np.isfinite(C)):
        return np.inf
    candidates = [0.0, 1.0] + [W[j] / wstar[j] for j in range(n_true)]
    if n_sub < n_true:
        slopes = [-x for x in wstar] + wstar
        offsets = [W[j] + C[j] for j in range(n_true)] + [C[j] - W[j] for j in range(n_true)]
        for a in range(2 * n_true):
            for b in range(2 * n_true):
                ds = slopes[a] - slopes[b]
                if ds != 0.0:
                    cross = (offsets[b] - offsets[a]) / ds
                    if cross > 0 and np.isfinite(cross):
                        candidates.append(cross)
    best = np.inf
    for s in candidates:
        terms = [abs(W[j] - s * wstar[j]) + C[j] for j in range(n_true)]
        if n_sub < n_true:
            terms = sorted(terms)[n_true - n_sub:]
        total = 0.0
        for term in terms:
            total += term
        best = min(best, total)
    return best

def _minimise_scale_many(W, wstar, C, n_sub):
    """:func:`_minimise_scale`'s value for many configurations at once.

    ``W`` and ``C`` of shape (T, k*); returns the T infima over ``s`` (``inf`` where a ``C``
    is not finite). The same candidates ``s`` (with some duplicates and some zeros, which
    change nothing: 0 is a candidate anyway).
    """
    n_true = W.shape[1]
    candidates = [np.zeros((W.shape[0], 1)), np.ones((W.shape[0], 1)), W / wstar]
    if n_sub < n_true:
        slopes = np.concatenate([-wstar, wstar])
        offsets = np.concatenate([W + C, C - W], axis=1)                # (T, 2 k*)
        a, b = np.triu_indices(slopes.size, 1)                          # each pair once
        with np.errstate(divide="ignore", invalid="ignore"):
            cross = (offsets[:, b] - offsets[:, a]) / (slopes[a] - slopes[b])
        candidates.append(np.where(np.isfinite(cross) & (cross > 0), cross, 0.0))
    s = np.concatenate(candidates, axis=1)                                 # (T, n_s)
    terms = np.abs(W[:, None, :] - s[:, :, None] * wstar) + C[:, None, :]
    if n_sub == n_true:
        values = terms.sum(axis=2)
    elif n_sub == n_true - 1:           # the K largest: all but the smallest
        values = terms.sum(axis=2) - terms.min(axis=2)
    else:
        values = np.sort(terms, axis=2)[:, :, n_true - n_sub:].sum(axis=2)
    return values.min(axis=1)

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
        self.dtau = 0.0 if fit.tau is None or true.tau is None else abs(fit.tau - true.tau)
        self.expert_dist = self.da + self.db + self.dnu
        self.wstar = true.weights
        _check_true_masses(true, self.wstar)
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
        # np.argmin returns the first minimum: ties go to the lower true index.
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
                self._raise_terms(rho, sizes == m, self.exponent(m), g, a, b, nu)
        return cells, rho

    def _raise_terms(self, rho, sel, r, g, a, b, nu):
        """Set ``rho = g^r + b^r + dtau^r + a^(r/2) + nu^(r/2)`` where ``sel``.

        An unknown exponent (``r = inf``) excludes the configuration: ``rho = inf``, also
        where every difference is below 1 (where ``x ** inf`` would be 0).
        """
        if not np.isfinite(r):
            rho[sel] = np.inf
            return
        rho[sel] = (g[sel] ** r + b[sel] ** r + self.dtau ** r
                    + a[sel] ** (r / 2) + nu[sel] ** (r / 2))

    def dbeta1_many(self, t1):
        """``||beta1_i + t1 - beta1*_j||`` at each shift ``t1`` (T, d): shape (T, k, k*)."""
        diff = (self.fit.beta1[None, :, None, :] + t1[:, None, None, :]
                - self.true.beta1[None, None, :, :])
        return np.sqrt(np.einsum("tijk,tijk->tij", diff, diff))

    def cells_many(self, t1):
        """Cells at each slope shift ``t1`` (T, d): shape (T, k)."""
        return np.argmin(self.dbeta1_many(t1) + self.expert_dist + self.dtau, axis=2)

    def values(self, t1, cells=None):
        """The loss minimised over ``t2`` at each slope shift ``t1`` (T, d): shape (T,).

        The cells are those of each shift, or the given ``cells`` (T, k): with cells held
        fixed, the value on an interval of shifts extends continuously to its ends (the
        one-sided limits of the loss where the cells change).
        """
        dbeta1 = self.dbeta1_many(t1)
        if cells is None:
            cells = np.argmin(dbeta1 + self.expert_dist + self.dtau, axis=2)
        rows = self.rows[None, :]
        g = np.take_along_axis(dbeta1, cells[:, :, None], axis=2)[:, :, 0]
        a, b, nu = self.da[rows, cells], self.db[rows, cells], self.dnu[rows, cells]
        rho = g + a + b + nu + self.dtau
        member = (cells[:, :, None] == np.arange(self.true.k)).astype(np.float64)  # (T,k,k*)
        if self.exponent is not None:
            sizes = np.take_along_axis(member.sum(axis=1), cells, axis=1)          # (T, k)
            for m in np.unique(sizes[sizes > 1]).tolist():
                self._raise_terms(rho, sizes == m, self.exponent(int(m)), g, a, b, nu)
        excluded = ~np.all(np.isfinite(rho), axis=1)
        rho[excluded] = 0.0
        W = np.einsum("tij,i->tj", member, self.w)
        C = np.einsum("tij,ti->tj", member, self.w * rho)
        out = _minimise_scale_many(W, self.wstar, C, self.n_sub)
        out[excluded] = np.inf
        return out

    def masses(self, t1):
        cells, rho = self.atom_terms(self.fit.beta1 + t1)
        W = np.bincount(cells, weights=self.w, minlength=self.true.k)
        C = np.bincount(cells, weights=self.w * rho, minlength=self.true.k)
        return cells, W, C

    def objective(self, t1):
        """``value(t1)[0]``, bit for bit, with less overhead (the ``d >= 2`` search)."""
        _, W, C = self.masses(t1)
        return _minimise_scale_value(W, self.wstar, C, self.n_sub)

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
    with np.errstate(over="ignore"):  # an overflowing weight takes the softmax below
        raw = side.weights
    total = raw.sum()
    if np.isfinite(total) and total > 1e-300:
        return raw * (mass / total)
    return mass * softmax(side.beta0 / side.intercept_scale)


