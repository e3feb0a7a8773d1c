"""Centring and scaling of the design and the response inside a fit.

EM runs on ``z = (x - m) / s`` (column by column) and ``y_z = (y - m_y) / s_y``; the fitted
parameters are mapped back. Any affine rescaling of a column of ``X`` (or of ``y``) then
gives the same fit, up to rounding, and a design such as ``x = 1.7e9 + 86400 u`` (a Unix
time) is fitted as well as ``u`` itself.

The maps, for ``x = m + s * z`` and ``y = m_y + s_y * y_z``:

* experts: ``a_z = a * s / s_y``, ``b_z = (b + a . m - m_y) / s_y``, ``nu_z = nu / s_y^2``;
* gate: the logits ``beta1 . x + beta0`` become ``(beta1 * s) . z + (beta0 + beta1 . m)``;
  the temperature is unchanged;
* log-likelihood: ``log p(y | x) = log p_z(y_z | z) - log s_y`` row by row.

The gate's map moves ``beta1 . m`` into the intercept, which only gates whose every
``beta1 . x`` is followed by ``+ beta0`` allow. The activation gate ``sigma(beta1 . x)``
(but for the identity ``sigma``) and the top-K selection score ``beta1 . x``
(``topk_selection='linear'``) have no intercept there: for them ``m = 0`` (the design is
scaled, not centred). Each gating family says which it is
(:attr:`gmoe.gates.GatingFamily.centres_design`); a lone expert, whose gate is 1
whatever ``x`` is, is centred in every family.

The reference expert (the last) keeps its gate intercept at 0 in both units: where its
slope is free (the identity activation), the map gives it ``beta1_ref . m``, and every
intercept is re-based by that common shift, which the softmax absorbs. Where the
reference's slope is pinned to 0 the shift is 0 and the re-basing changes no bit.
"""

import warnings

import numpy as np

from ._blocks import inverse_scale
from .exceptions import RankDeficientDesignWarning

__all__ = ["Conditioning", "check_spread_representable", "finite_moments"]

# The weighted Gram matrix of the internal design (unit diagonal) is called numerically
# rank-deficient when its condition number exceeds this: least squares through the normal
# equations then keeps fewer than about 6 of the 16 significant digits.
_MAX_GRAM_CONDITION = 1e10


def _rebased(gate_intercept):
    """The gate's intercepts shifted together so that the reference's (the last) is 0.

    A common shift of every logit leaves the softmax (and a top-K selection) unchanged.
    """
    return gate_intercept - gate_intercept[-1]


def _weighted_moments(values, sample_weight, total):
    """Weighted mean and standard deviation of every row of ``values`` (d, n).

    Elementwise sums, not a BLAS matrix-vector product: for a few rows BLAS gains nothing,
    and its threads can cost milliseconds on a busy machine.
    """
    # Values beyond about 1e154 overflow here: Conditioning.from_moments reports them.
    with np.errstate(over="ignore", invalid="ignore"):
        mean = np.sum(values * sample_weight, axis=1) / total
        centred = values - mean[:, None]
        var = np.sum(centred * centred * sample_weight, axis=1) / total
        return mean, np.sqrt(np.maximum(var, 0.0))


def finite_moments(mean, std, values, sample_weight):
    """``mean`` and ``std`` of the rows of ``values()`` (d, n), recomputed where not finite.

    The plain moments square the data: beyond about 1e154 (less for many rows or large
    weights) the sums overflow, and a zero-weight row holding a huge value makes them NaN.
    Such rows are recomputed over the rows of positive weight, scaled by their largest
    magnitude before squaring; the others are returned as they are, bit for bit.

    Parameters
    ----------
    mean, std : ndarray of shape (d,)
        The plain weighted moments.
    values : callable
        Returns the data, an ndarray of shape (d, n); called only when a moment is not
        finite (on the block path it is a copy of the design).
    sample_weight : ndarray of shape (n,)

    Returns
    -------
    mean, std : ndarray of shape (d,)
    """
    bad = ~(np.isfinite(mean) & np.isfinite(std))
    if not bad.any():
        return mean, std
    mean, std = mean.copy(), std.copy()
    values = values()
    used = sample_weight > 0
    q = sample_weight[used] / np.sum(sample_weight[used])
    for j in np.flatnonzero(bad):
        v = values[j, used]
        scale = float(np.max(np.abs(v))) or 1.0
        u = v / scale
        centred = u - np.dot(q, u)
        mean[j] = np.dot(q, u) * scale
        std[j] = np.sqrt(np.dot(q, centred * centred)) * scale
    return mean, std


def check_spread_representable(conditioning, positive_ranges):
    """Raise when a column of ``X``, or ``y``, has a spread float64 cannot scale by.

    A spread below about 1e-154 squares to less than the smallest normal number, so that
    a varying column would look constant (or be scaled by a rounded-off deviation) and
    the fit would be silently wrong; a ``y`` whose standard deviation is beyond about
    1e154 has variances that overflow. Only the columns whose scale is suspect (below
    about 1e-154, or 1: the stand-in for a zero deviation) have their ranges computed.

    Parameters
    ----------
    conditioning : Conditioning
    positive_ranges : callable
        Returns the range of every column of ``[X, y]`` over the rows of positive weight,
        an ndarray of shape (n_features + 1,).
    """
    # Square roots of float64's extremes: a scale beyond them squares out of range.
    smallest, largest = np.sqrt(np.finfo(np.float64).tiny), np.sqrt(np.finfo(np.float64).max)
    if conditioning.y_scale > largest:
        raise ValueError(
            f"y has a standard deviation of {conditioning.y_scale:.3g}, whose square (the "
            "scale of the experts' variances) overflows float64: rescale y (by a power of "
            "ten, say) before fitting.")
    scales = np.r_[conditioning.x_scale, conditioning.y_scale]
    if not np.any((scales < smallest) | (scales == 1.0)):
        return
    for j, spread in enumerate(positive_ranges()):
        if 0 < spread < smallest:
            which = "y" if j == scales.size - 1 else f"column {j} of X"
            raise ValueError(
                f"{which} varies by only {spread:.3g} over the rows of positive weight, a "
                "spread whose square underflows float64: rescale it (by a power of ten, "
                "say) before fitting.")


class Conditioning:
    """The affine maps between the user's units and the fit's internal units.

    Parameters
    ----------
    x_offset, x_scale : ndarray of shape (n_features,)
        ``m`` and ``s`` of ``x = m + s * z`` (``s > 0``).
    y_offset, y_scale : float
        ``m_y`` and ``s_y`` of ``y = m_y + s_y * y_z`` (``s_y > 0``).
    centred : bool, default=True
        Whether the design was allowed to be centred (the gating family's
        ``centres_design``); only the wording of the rank warning depends on it.
    """

    def __init__(self, x_offset, x_scale, y_offset, y_scale, *, centred=True):
        self.x_offset = np.asarray(x_offset, dtype=np.float64)
        self.centred = bool(centred)
        self.x_scale = np.asarray(x_scale, dtype=np.float64)
        self.y_offset = float(y_offset)
        self.y_scale = float(y_scale)

    @classmethod
    def from_data(cls, X, y, sample_weight, *, centre_x=True, scale_x=True):
        """Offsets and scales from the (weighted) data.

        With ``centre_x``, ``m`` is the weighted mean and ``s`` the weighted standard
        deviation of each column; without, ``m = 0`` and ``s`` is the weighted root mean
        square. ``y`` is always centred and scaled by its weighted mean and standard
        deviation. A zero scale (a constant column, a constant ``y``) is replaced by 1.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        y, sample_weight : ndarray of shape (n_samples,)
        centre_x : bool, default=True
            See :attr:`gmoe.gates.GatingFamily.centres_design`.
        scale_x : bool, default=True
            See :attr:`gmoe.gates.GatingFamily.scales_design`; without it ``X`` is left as
            it is (``m = 0``, ``s = 1``) and only ``y`` is standardised.

        Returns
        -------
        Conditioning
        """
        total = float(np.sum(sample_weight))
        x_mean, x_std = finite_moments(*_weighted_moments(X.T, sample_weight, total),
                                       lambda: X.T, sample_weight)
        y_mean, y_std = finite_moments(*_weighted_moments(y[None, :], sample_weight, total),
                                       lambda: y[None, :], sample_weight)
        return cls.from_moments(x_mean, x_std, float(y_mean[0]), float(y_std[0]),
                                centre_x=centre_x, scale_x=scale_x)

    @classmethod
    def from_moments(cls, x_mean, x_std, y_mean, y_std, *, centre_x=True, scale_x=True):
        """:meth:`from_data` from the data's weighted means and standard deviations.

        Parameters
        ----------
        x_mean, x_std : ndarray of shape (n_features,)
        y_mean, y_std : float
        centre_x, scale_x : bool, default=True
            See :meth:`from_data`.

        Returns
        -------
        Conditioning
        """
        x_mean = np.asarray(x_mean, dtype=np.float64)
        x_std = np.asarray(x_std, dtype=np.float64)
        # Moments that overflowed (from_data recomputes them; a Dask array's are refused
        # here): the scaling, and so the fit, would be silently wrong.
        overflowing = [f"column {j} of X" for j in range(x_mean.size)
                       if not (np.isfinite(x_mean[j]) and np.isfinite(x_std[j]))]
        if not (np.isfinite(y_mean) and np.isfinite(y_std)):
            overflowing.append("y")
        if overflowing:
            verb, pronoun = ("holds", "it") if len(overflowing) == 1 else ("hold", "them")
            raise ValueError(
                f"{', '.join(overflowing)} {verb} values whose squares overflow float64 "
                f"(beyond about 1e154 in magnitude): rescale {pronoun} (by a power of ten, "
                "say) before fitting, or fit the data as NumPy arrays.")
        if centre_x:
            x_offset, x_scale = x_mean, x_std
        else:
            x_offset = np.zeros_like(x_mean)
            x_scale = np.sqrt(x_mean * x_mean + x_std * x_std)
        x_scale = np.where(x_scale > 0, x_scale, 1.0)
        if not scale_x:
            x_offset, x_scale = np.zeros_like(x_mean), np.ones_like(x_mean)
        y_scale = float(y_std) if y_std > 0 else 1.0
        return cls(x_offset, x_scale, float(y_mean), y_scale, centred=centre_x and scale_x)

    # ------------------------------------------------------------------ data
    def transform_X(self, X):
        """``z = (x - m) * (1 / s)``, C-contiguous (the block passes' own numbers)."""
        return np.ascontiguousarray((X - self.x_offset) * inverse_scale(self.x_scale))

    def transform_y(self, y):
        """``y_z = (y - m_y) / s_y``."""
        return (y - self.y_offset) / self.y_scale

    @property
    def log_lik_shift(self):
        """What to add to an internal per-row log-likelihood: ``-log s_y``."""
        return -np.log(self.y_scale)

    # ------------------------------------------------------------ parameters
    def to_internal(self, params):
        """The parameters in the fit's units.

        ``params`` has ``_replace`` and the fields ``gate_coef``, ``gate_intercept``,
        ``expert_coef``, ``expert_intercept`` and ``expert_var`` (the temperature is
        unchanged).
        """
        m, s, my, sy = self.x_offset, self.x_scale, self.y_offset, self.y_scale
        coef = params.expert_coef * s / sy
        intercept = (params.expert_intercept + params.expert_coef @ m - my) / sy
        return params._replace(
            gate_coef=params.gate_coef * s,
            gate_intercept=_rebased(params.gate_intercept + params.gate_coef @ m),
            expert_coef=coef, expert_intercept=intercept,
            expert_var=params.expert_var / (sy * sy))

    def to_original(self, params):
        """The inverse of :meth:`to_internal`."""
        m, s, my, sy = self.x_offset, self.x_scale, self.y_offset, self.y_scale
        gate_coef = params.gate_coef / s
        coef = params.expert_coef * sy / s
        return params._replace(
            gate_coef=gate_coef,
            gate_intercept=_rebased(params.gate_intercept - gate_coef @ m),
            expert_coef=coef,
            expert_intercept=sy * params.expert_intercept + my - coef @ m,
            expert_var=params.expert_var * (sy * sy))

    # ------------------------------------------------------------ diagnostics
    def check_rank(self, Z, sample_weight, *, stacklevel=3):
        """Warn when the internal design with intercept is numerically rank-deficient.

        The test is on the weighted Gram matrix of ``[Z, 1]`` scaled to unit diagonal,
        which is what the experts' least squares and the gate's Newton steps solve with.

        Parameters
        ----------
        Z : ndarray of shape (n_samples, n_features)
            The internal design (:meth:`transform_X`).
        sample_weight : ndarray of shape (n_samples,)
        stacklevel : int, default=3

        Returns
        -------
        float
            The condition number of that matrix (``inf`` when singular).
        """
        n_features = Z.shape[1]
        total = float(np.sum(sample_weight))
        design = np.column_stack([Z, np.ones(Z.shape[0])])
        gram = (design * sample_weight[:, None]).T @ design / total
        constant = [j for j in range(n_features) if not self._varies(Z[:, j], sample_weight)]
        return self.report_rank(gram, constant, stacklevel=stacklevel + 1)

    def report_rank(self, gram, constant, *, stacklevel=3):
        """:meth:`check_rank` from the weighted Gram matrix and the constant columns.

        Parameters
        ----------
        gram : ndarray of shape (n_features + 1, n_features + 1)
            ``sum_i w_i z_i z_i^T / sum_i w_i`` of the internal design with intercept.
        constant : list of int
            Columns constant over the rows of positive weight.
        stacklevel : int, default=3

        Returns
        -------
        float
            The condition number of the scaled Gram matrix (``inf`` when singular).
        """
        diag = np.diag(gram).copy()
        diag[diag <= 0] = 1.0
        scaled = gram / np.sqrt(np.outer(diag, diag))
        eig = np.linalg.eigvalsh(scaled)
        condition = np.inf if eig[0] <= 0 else float(eig[-1] / eig[0])
        if constant and self.centred:
            warnings.warn(
                f"X is rank-deficient: column(s) {constant} are constant over the rows with "
                "positive weight, so they are collinear with the intercepts; their "
                "coefficients are not determined by the data (the fit sets them to 0). "
                "Drop those columns.", RankDeficientDesignWarning, stacklevel=stacklevel)
        elif constant:
            # Uncentred, a constant column is no longer 0: where the gate cannot absorb a
            # shift of x (an activation, a linear selection score), it can act as the
            # gate's only intercept there.
            warnings.warn(
                f"X is rank-deficient: column(s) {constant} are constant over the rows with "
                "positive weight. In the experts' means they are collinear with the "
                "intercepts (the fit splits the two by least squares' minimum-norm "
                "solution), but this gate does not absorb a shift of x in its intercepts "
                "(X is not centred for it), and such a column can act as an intercept "
                "inside it (the activation gate's, a linear selection score's): keep it "
                "if that is meant, else drop it.", RankDeficientDesignWarning,
                stacklevel=stacklevel)
        elif condition > _MAX_GRAM_CONDITION:
            if self.centred:
                why = ("some columns of X are (nearly) linear combinations of the others; drop "
                       "or combine them")
            else:
                why = ("some columns of X are (nearly) linear combinations of the others or of "
                       "the constant. A large offset against the spread counts: this gate "
                       "has no intercept inside its activation or selection score, so the "
                       "design is scaled but not centred internally. Drop or combine columns, "
                       "or centre X yourself if the model allows it")
            warnings.warn(
                f"X is numerically rank-deficient: the weighted Gram matrix of the design "
                f"with intercept has condition number {condition:.3g} (above "
                f"{_MAX_GRAM_CONDITION:g}) even after scaling: {why}. The fit's "
                "coefficients may be inaccurate.", RankDeficientDesignWarning,
                stacklevel=stacklevel)
        return condition

    @staticmethod
    def _varies(column, sample_weight):
        used = column[sample_weight > 0]
        return used.size > 0 and np.ptp(used) > 0
