"""What the theory predicts: the exponents ``rbar(m)`` and the convergence rates.

One place for the theory that the metrics and the rate studies use:

* :data:`DEFAULT_RBAR` and :func:`rbar_of`: the exponent ``rbar(m)`` that the over-specified
  Voronoi loss D2 gives a cell of ``m`` fitted atoms (:func:`gmoe.metrics.voronoi_loss`);
* :func:`theory` and :func:`theoretical_slope`: the slope of ``loss ~ n^slope`` predicted
  for each setting (gating family, exact- or over-specified) and each loss, the table of
  :ref:`theory-rates`.

This module imports nothing from gmoe, so that both :mod:`gmoe.metrics` and
:mod:`gmoe.simulation` can read it.
"""

from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

__all__ = [
    "DEFAULT_RBAR",
    "NO_THEORY",
    "SETTINGS",
    "THEORY_LOSSES",
    "Theory",
    "rbar_of",
    "theoretical_slope",
    "theory",
]

#: ``rbar(m)`` for the linear softmax gate (paper 1: the solvability of its polynomial
#: system), by cell size ``m``. Larger cells are unknown and need a user-supplied value; for
#: the activation gate no value is established.
DEFAULT_RBAR = MappingProxyType({2: 4.0, 3: 6.0})


def rbar_of(m, supplied=None):
    """The exponent ``rbar(m)`` of a Voronoi cell holding ``m`` fitted atoms.

    Parameters
    ----------
    m : int
        Fitted atoms in the cell, ``>= 1``.
    supplied : mapping of int to float, optional
        User-supplied exponents ``{m: rbar(m)}``; they take precedence over (and extend)
        :data:`DEFAULT_RBAR`.

    Returns
    -------
    float
        1 for a singleton cell (parametric rates), else ``supplied[m]`` or
        ``DEFAULT_RBAR[m]``.

    Raises
    ------
    ValueError
        If ``m`` is not a positive integer, if ``rbar(m)`` is unknown (``m >= 4`` and not
        supplied) or a supplied value is not a positive number.

    Examples
    --------
    >>> rbar_of(2), rbar_of(3), rbar_of(1)
    (4.0, 6.0, 1.0)
    >>> rbar_of(4, {4: 8.0})
    8.0
    """
    if isinstance(m, bool) or not isinstance(m, int) or m < 1:
        raise ValueError(f"m (atoms in the cell) must be a positive integer, got m={m!r}.")
    if supplied is not None and not isinstance(supplied, Mapping):
        raise ValueError(f"supplied must be a mapping {{m: rbar(m)}} or None, got "
                         f"{type(supplied).__name__}: {supplied!r}.")
    if m == 1:
        return 1.0
    if supplied is not None and m in supplied:
        value = supplied[m]
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ValueError(f"rbar({m}) must be a positive number, got {value!r}.")
        return float(value)
    if m not in DEFAULT_RBAR:
        known = ", ".join(f"rbar({k}) = {v:g}" for k, v in DEFAULT_RBAR.items())
        raise ValueError(f"rbar({m}) is unknown for a cell of m={m} fitted atoms (the theory "
                         f"gives {known}); it must be supplied.")
    return DEFAULT_RBAR[m]


SETTINGS = (
    "softmax-exact",
    "softmax-over",
    "topk-exact",
    "topk-over",
    "temperature",
    "temperature-raw",
    "activation-exact",
    "activation-over",
)
"""The settings known to :func:`theory`."""

THEORY_LOSSES = (
    "voronoi",
    "D1",
    "D2",
    "hellinger",
    "tv",
    "weights",
    "gate_coef",
    "gate_intercept",
    "expert_intercept",
    "expert_coef",
    "expert_var",
    "temperature",
    "boundary",
)
"""The losses known to :func:`theory` (aliases in the Notes of :func:`theoretical_slope`)."""

_LOSS_ALIASES = {
    "voronoi": "voronoi", "voronoi_loss": "voronoi", "d1": "d1", "d2": "d2",
    "hellinger": "hellinger",
    "tv": "tv", "total_variation": "tv",
    "weights": "weights", "weight": "weights", "cell_weights": "weights",
    "gate_coef": "gate_coef", "beta1": "gate_coef",
    "gate_intercept": "gate_intercept", "beta0": "gate_intercept",
    "expert_intercept": "expert_intercept", "b": "expert_intercept",
    "expert_coef": "expert_coef", "a": "expert_coef",
    "expert_var": "expert_var", "nu": "expert_var",
    "temperature": "temperature", "tau": "temperature",
    "boundary": "boundary", "boundary_error": "boundary",
}


class Theory(NamedTuple):
    """What the theory says about one loss in one setting (see :func:`theory`).

    Attributes
    ----------
    slope : float or None
        The predicted slope ``s`` of ``loss ~ n^s``, up to log factors; None where the
        theory states no polynomial rate.
    reason : str
        Why, in a sentence ('' where nothing needs saying).
    fit_slope : bool
        False where a fitted slope would be meaningless (an estimate that is not
        consistent, a value fixed by construction): report the curve, fit nothing.
    """

    slope: float | None
    reason: str
    fit_slope: bool


#: A column the theory says nothing about: fit its slope, compare it with nothing.
NO_THEORY = Theory(None, "", True)

_HALF = -0.5


def _canonical_loss(loss):
    key = str(loss).lower()
    for prefix in ("err_", "error_"):
        key = key.removeprefix(prefix)
    for suffix in ("_error", "_err"):
        key = key.removesuffix(suffix)
    if key not in _LOSS_ALIASES:
        raise ValueError(
            f"loss {loss!r} has no theoretical rate; expected one of {list(THEORY_LOSSES)} "
            "(or an alias: beta1, beta0, b, a, nu, tau, weight, total_variation, with an "
            "optional '_error' suffix)."
        )
    return _LOSS_ALIASES[key]


def _canonical_setting(setting):
    key = str(setting).lower().replace("_", "-")
    if key not in SETTINGS:
        raise ValueError(f"setting must be one of {list(SETTINGS)}, got setting={setting!r}.")
    return key


def _cell_exponent(m, rbar):
    """``rbar`` as given (checked), else ``rbar(m)`` with ``m`` defaulting to 2."""
    if rbar is not None:
        if isinstance(rbar, bool) or not (isinstance(rbar, int | float) and rbar >= 1):
            raise ValueError(f"rbar must be a number >= 1, got rbar={rbar!r}.")
        return rbar
    return rbar_of(2 if m is None else m)


def theory(setting, loss, *, m=None, rbar=None):
    """The theory's rate for a loss in a setting, with the reason and whether to fit one.

    Parameters
    ----------
    setting, loss, m, rbar
        As in :func:`theoretical_slope`.

    Returns
    -------
    Theory
        ``(slope, reason, fit_slope)``.

    Raises
    ------
    ValueError
        For an unknown setting or loss, or an unknown ``rbar(m)``.

    Examples
    --------
    >>> theory("temperature-raw", "gate_coef").fit_slope
    False
    """
    setting = _canonical_setting(setting)
    kind = _canonical_loss(loss)
    base, _, variant = setting.partition("-")
    if kind in ("hellinger", "tv"):
        return Theory(_HALF, "density rate n^-1/2", True)
    if kind == "boundary":
        if setting != "topk-exact":
            return NO_THEORY._replace(reason=f"{setting}: no stated rate for the boundaries")
        # A top-1 truth's conditional density jumps at each boundary: a change point,
        # located to within the spacing of the design's points there. (With more experts
        # selected the density is continuous there: the boundary loss is top-1's.)
        return Theory(-1.0, "top-1 exact: the selection boundaries are change points, "
                            "estimated at n^-1", True)
    if setting == "temperature-raw":
        if kind in ("weights", "expert_intercept", "expert_coef", "expert_var"):
            # The gate's scale symmetry moves (beta1, beta0, tau) only: the weights
            # exp(beta0 / tau) = exp(gamma0) and the experts are the identifiable model's.
            # The raw Voronoi cells use the raw beta1, so they are gamma's (and these
            # errors the same numbers) while tau stays near the truth's scale.
            same = theory("temperature", kind, m=m, rbar=rbar)
            return same._replace(reason=same.reason + " (raw scale: the weights and experts "
                                 "are gamma's while the raw cells are)")
        return Theory(
            None,
            "raw (beta1, beta0, tau) are not identified: the estimate is set by the start and "
            "is not consistent; report the curve, fit no slope",
            False,
        )
    if kind in ("gate_intercept", "temperature"):
        return NO_THEORY  # the rate table states no rate for beta0 or tau
    if setting == "activation-over":
        return Theory(
            None,
            "over-specified activation gate: polynomial, but the exponents are not "
            "established",
            True,
        )
    if base == "temperature":
        over = m is not None and m >= 2 or rbar is not None
    else:
        over = variant == "over"
    if not over:
        return Theory(_HALF, f"{setting}: parametric rate n^-1/2", True)
    r = _cell_exponent(m, rbar)
    if kind in ("voronoi", "d2", "weights"):
        what = "cell weights" if kind == "weights" else "D2"
        return Theory(_HALF, f"{setting}: {what} decays as n^-1/2", True)
    if r == 1:
        return Theory(_HALF, f"{setting}: a cell of one fitted atom: parametric rate n^-1/2",
                      True)
    slow = -1.0 / (2 * r)
    if kind in ("gate_coef", "expert_intercept", "d1"):
        reason = f"{setting}: beta1 and b in a cell with rbar = {r:g}: n^-1/(2 rbar)"
        if kind == "d1":
            reason = (
                f"{setting}: D1 (exponent 1) is dominated by its beta1 and b terms, "
                f"n^-1/(2 rbar) with rbar = {r:g}"
            )
        return Theory(slow, reason, True)
    return Theory(-1.0 / r, f"{setting}: a and nu, rbar = {r:g}: n^-1/rbar", True)


def theoretical_slope(setting, loss, *, m=None, rbar=None):
    """The rate exponent that the theory predicts, or None where it has none.

    Parameters
    ----------
    setting : str
        One of ``'softmax-exact'``, ``'softmax-over'``, ``'topk-exact'``, ``'topk-over'``,
        ``'temperature'`` (losses on the identifiable scale ``gamma``), ``'temperature-raw'``
        (losses on the raw ``(beta1, beta0, tau)``), ``'activation-exact'``,
        ``'activation-over'`` (underscores are accepted for hyphens).
    loss : str
        ``'voronoi'`` (the setting's own loss: D1 exact, D2 over-specified), ``'D1'``,
        ``'D2'``, ``'hellinger'``, ``'tv'``, ``'weights'`` (``|W_j - w*_j|``),
        ``'gate_coef'`` (``beta1``), ``'gate_intercept'`` (``beta0``),
        ``'expert_intercept'`` (``b``), ``'expert_coef'`` (``a``), ``'expert_var'``
        (``nu``), ``'temperature'`` (``tau``) or ``'boundary'`` (the boundary error of a
        top-1 gate), case-insensitive.
    m : int, default=None
        Number of fitted atoms in the cell studied, for the over-specified settings
        (default 2). For ``'temperature'``, ``m >= 2`` selects the over-specified rates.
    rbar : float, default=None
        The exponent ``rbar(m)``; by default :func:`rbar_of`: ``rbar(1) = 1`` (a singleton
        cell: parametric rates), ``rbar(2) = 4``, ``rbar(3) = 6``, an error for ``m >= 4``.

    Returns
    -------
    float or None
        The slope ``s`` of ``loss ~ n^s``, up to log factors; None where the theory gives
        no polynomial rate (see Notes).

    Raises
    ------
    ValueError
        For an unknown setting or loss, or ``m >= 4`` without ``rbar``.

    Notes
    -----
    ================================= ============= ========== ============== ==========
    setting                           hellinger, tv weights    beta1, b       a, nu
    ================================= ============= ========== ============== ==========
    softmax-, topk-, activation-exact -1/2          -1/2       -1/2           -1/2
    softmax-, topk-over (cell of m)   -1/2          -1/2       -1/(2 rbar(m)) -1/rbar(m)
    temperature (on gamma)            -1/2          as softmax as softmax     as softmax
    temperature-raw                   -1/2          as softmax beta1: None;   as softmax
                                                               b as softmax
    activation-over                   -1/2          None       None           None
    ================================= ============= ========== ============== ==========

    ``voronoi`` and ``D2`` decay as ``n^-1/2`` wherever the theory holds; ``D1`` in an
    over-specified setting is dominated by its exponent-1 ``beta1`` and ``b`` terms,
    ``n^-1/(2 rbar)``. None means: for ``temperature-raw``, the raw gate parameters
    (and so D1 and D2 on that scale) are not identified, so their estimates are set by the
    start and not consistent (report the curve, fit no slope), while the weights
    ``exp(beta0 / tau)`` and the experts are the identifiable model's (their errors are
    the same numbers while the raw Voronoi cells, which use the raw ``beta1``, are
    gamma's: for a ``tau`` near the truth's scale); for
    ``activation-over``, the rates are polynomial but their exponents are not established.
    The table states no rate for ``beta0`` and ``tau`` (None, except that on the raw
    temperature scale they are not consistent either). The boundary error of a top-1
    gate, exact-specified, decays as ``n^-1``: a boundary is a change point of the
    conditional density (the loss bounds the rescaled gate at ``n^-1/2`` only); the
    boundary loss is that of a top-1 gate. For
    ``topk-over`` the density rate holds only if the fitted ``K`` covers the selected true
    cells. Aliases of the losses: ``beta1``, ``beta0``, ``b``, ``a``, ``nu``, ``tau``,
    ``weight``, ``total_variation``, with an optional ``_error`` suffix.

    Examples
    --------
    >>> from gmoe.theory import theoretical_slope
    >>> theoretical_slope("softmax-over", "gate_coef", m=2)
    -0.125
    >>> theoretical_slope("temperature-raw", "gate_coef") is None
    True
    """
    return theory(setting, loss, m=m, rbar=rbar).slope
