r"""Standard errors, confidence intervals and the bootstrap for a Gaussian mixture of experts.

:class:`MoEResults` (statsmodels' model/results split: it is built from a fitted estimator
and never mixed into it) holds the maximum-likelihood estimates on the identifiable scale
(:ref:`theory-identifiability`), their covariance from the observed information, Wald
confidence intervals, z-tests, information criteria and a printable summary.
:func:`bootstrap` refits on resampled data and reports bootstrap standard errors and
percentile intervals; it is the only option for a top-K gate that selects fewer than all
its experts, whose log-likelihood is not differentiable in the gate.

The observed information is the negative of the **analytic** Hessian of the observed
log-likelihood

.. math::

    L(\theta) = \sum_i \omega_i \log \sum_j g_{ij} \, \mathcal{N}(y_i \mid \mu_{ij}, \nu_j),

computed by the exact identity (``l_ij = log g_ij + log N_ij``, ``s_ij`` its gradient,
``r_ij`` the responsibilities)

.. math::

    \nabla^2 L = \sum_i \omega_i \Big[ \sum_j r_{ij} \nabla^2 l_{ij}
        + \sum_j r_{ij} s_{ij} s_{ij}^\top
        - \Big(\sum_j r_{ij} s_{ij}\Big)\Big(\sum_j r_{ij} s_{ij}\Big)^\top \Big].

Parameters (their names in :attr:`MoEResults.param_names`):

* the gate's free parameters: for ``'softmax'`` ``gate[j].coef[m]`` and
  ``gate[j].intercept`` for every expert but the last (the reference, pinned to 0); for
  ``'temperature'`` the same on the identifiable scale ``gamma = (beta1, beta0) / tau``,
  named ``gamma[j].coef[m]`` and ``gamma[j].intercept`` (``tau`` itself is not
  identifiable); for ``'activation'`` every slope ``gate[j].coef[m]``, the intercepts
  of all experts but the last, and ``gate.log_temperature`` when the temperature is
  learned (``se(tau) = tau * se(log tau)`` by the delta method; the identity activation
  holds ``tau``, and a common translation of its slopes leaves its density unchanged, so
  its information is singular: fit ``'temperature'`` for its standard errors);
* every expert's ``expert[j].coef[m]``, ``expert[j].intercept`` and variance
  ``expert[j].var``. The variance is parametrised directly (``nu`` is a variance
  everywhere). At a maximum the score is zero, so the information on ``log nu`` is
  exactly ``J^T I J``: the delta method from either scale gives the same standard error.
"""

import numbers
import warnings

import numpy as np
import scipy.linalg
from scipy import stats

from ._fit_warnings import at_symmetric_point
from ._observed_information import Parametrisation as _Parametrisation
from ._observed_information import (
    compute_log_likelihood_derivatives as _compute_log_likelihood_derivatives,
)
from ._validation import check_sample_weight, rows_with_weight
from .exceptions import DegenerateExpertWarning, GMoEWarning, SingularInformationWarning
from .model import MixingMeasure, check_design_of, count_parameters
from .utils import check_random_state

__all__ = ["BootstrapResults", "MoEResults", "bootstrap", "fit_results"]

# The information is called singular when the smallest eigenvalue of its correlation form
# (unit diagonal, so the test does not depend on the parameters' units) is below this.
_DEFAULT_RCOND = 1e-10

# --------------------------------------------------------------------------------------
# Inputs.


def _check_fitted_estimator(estimator):
    from sklearn.utils.validation import check_is_fitted

    if isinstance(estimator, MixingMeasure):
        return estimator, None
    check_is_fitted(estimator, "mixing_measure_")
    return estimator.mixing_measure_, estimator


def _check_data(model, X, y, sample_weight):
    X = check_design_of(model, X)  # an estimator's feature names are checked too
    y = np.asarray(y, dtype=np.float64)
    if y.shape != (X.shape[0],):
        raise ValueError(f"y must have shape ({X.shape[0]},) to match X, got shape {y.shape}.")
    if not np.all(np.isfinite(y)):
        raise ValueError("y must hold finite values only, got NaN or infinite entries.")
    return X, y, check_sample_weight(sample_weight, X.shape[0])


def _feature_names(estimator, n_features):
    names = getattr(estimator, "feature_names_in_", None)
    if names is None or len(names) != n_features:
        return None
    return [str(f) for f in names]


def _not_differentiable_message(what, gating):
    return (f"{what} for gating={gating!r}: its log-likelihood is not differentiable in "
            "the gate (for top-K, the active sets jump), so the observed information does "
            "not exist. Use gmoe.inference.bootstrap(est, X, y) for bootstrap standard "
            "errors and percentile intervals.")


# --------------------------------------------------------------------------------------
# Results.


class MoESummary:
    """A printable summary table of :class:`MoEResults` or :class:`BootstrapResults`.

    Attributes
    ----------
    title : str
    info : list of (str, str)
        Model-level lines (name, value).
    columns : list of str
        Column headers of the parameter table.
    rows : list of dict
        One dict per parameter: ``'parameter'`` and one key per column.
    """

    def __init__(self, title, info, columns, rows):
        self.title = title
        self.info = info
        self.columns = columns
        self.rows = rows

    def as_text(self):
        """The summary as a plain-text table."""
        width = max([len("parameter")] + [len(r["parameter"]) for r in self.rows])
        cells = [[_fmt(r[c]) for c in self.columns] for r in self.rows]
        widths = [max([len(c)] + [len(row[i]) for row in cells])
                  for i, c in enumerate(self.columns)]
        header = "parameter".ljust(width) + "".join(
            "  " + c.rjust(w) for c, w in zip(self.columns, widths, strict=True))
        rule = "=" * len(header)
        lines = [self.title.center(len(header)).rstrip(), rule]
        pairs = [f"{name}: {value}" for name, value in self.info]
        for i in range(0, len(pairs), 2):
            left = pairs[i].ljust(len(header) // 2)
            lines.append((left + (pairs[i + 1] if i + 1 < len(pairs) else "")).rstrip())
        lines += [rule, header, "-" * len(header)]
        for r, row in zip(self.rows, cells, strict=True):
            lines.append(r["parameter"].ljust(width) + "".join(
                "  " + s.rjust(w) for s, w in zip(row, widths, strict=True)))
        lines.append(rule)
        return "\n".join(lines)

    def __str__(self):
        return self.as_text()

    def __repr__(self):
        return self.as_text()


def _fmt(value):
    if isinstance(value, str):
        return value
    if value is None or not np.isfinite(value):
        return "nan"
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}"


class MoEResults:
    r"""Maximum-likelihood inference for a fitted Gaussian mixture of experts.

    Standard errors come from the observed information, the negative analytic Hessian
    of the observed log-likelihood at the fitted parameters, on the identifiable scale
    (:ref:`theory-identifiability`; see the module documentation for the parameters and
    their names).

    Parameters
    ----------
    model : GaussianMoERegressor or MixingMeasure
        A fitted estimator (any gating family but a 'topk' gate that selects fewer than
        all its experts), or a model to evaluate the
        information at (for instance a truth, to get its Fisher information on a design).
    X : array-like of shape (n_samples, n_features)
        The data the model was fitted to.
    y : array-like of shape (n_samples,)
    sample_weight : array-like of shape (n_samples,), default=None
        The weights used in the fit, treated as frequency weights:
        ``L = sum_i omega_i log p(y_i | x_i)``.
    learn_temperature : bool, default=None
        Whether ``log tau`` of an activation gate is a parameter (never for the identity
        activation, whose ``tau`` is held). None: the estimator's ``learn_temperature``
        (True for a MixingMeasure).
    rcond : float, default=1e-10
        The information is treated as singular when the smallest eigenvalue of its
        correlation form (``D^{-1/2} I D^{-1/2}``, ``D`` its diagonal) is below ``rcond``.

    Attributes
    ----------
    params : ndarray of shape (n_params,)
        Estimates on the identifiable scale.
    param_names : list of str
        ``'gate[0].coef[0]'``, ``'gate[0].intercept'``, ..., ``'expert[1].var'``.
    bse : ndarray of shape (n_params,)
        Standard errors; all NaN when the information is singular or not positive
        definite (with a :class:`~gmoe.exceptions.SingularInformationWarning`).
    zvalues : ndarray of shape (n_params,)
        ``params / bse`` (alias ``tvalues``, as in statsmodels).
    pvalues : ndarray of shape (n_params,)
        Two-sided normal p-values of ``params = 0``.
    score : ndarray of shape (n_params,)
        Gradient of the log-likelihood at ``params`` (near 0 at a converged fit).
    hessian : ndarray of shape (n_params, n_params)
        Its Hessian; ``information = -hessian``.
    information : ndarray of shape (n_params, n_params)
        The observed information.
    is_singular : bool
        Whether the information was found singular or not positive definite.
    min_eigenvalue : float
        Smallest eigenvalue of the information's correlation form, with the intercepts
        of a centred design where the family allows it (so that a design far from 0 is
        not taken for a singular model; see Notes).
    llf : float
        The (weighted) log-likelihood.
    nobs : int
        Number of rows (those of weight 0 too, which enter no other number).
    wnobs : float
        Sum of the sample weights (``nobs`` without weights); used by :attr:`bic`.
    df_model : int
        Number of free parameters ``p`` (as the estimator's BIC counts them).
    aic, bic : float
        ``-2 llf + 2 p`` and ``-2 llf + p log(wnobs)``.
    measure : MixingMeasure
        The model.
    gating : str

    See Also
    --------
    bootstrap : Bootstrap standard errors and percentile intervals (also for 'topk').

    Notes
    -----
    The Hessian uses the exact identity, with ``l_ij = log g_ij + log N_ij``,
    ``s_ij = \nabla l_ij`` and responsibilities ``r_ij``:

    .. math::

        \nabla^2 L = \sum_i \omega_i \Big[ \sum_j r_{ij} \nabla^2 l_{ij}
            + \sum_j r_{ij} s_{ij} s_{ij}^\top - \bar s_i \bar s_i^\top \Big],
        \qquad \bar s_i = \sum_j r_{ij} s_{ij}.

    The covariance is its inverse, through a Cholesky factorisation, taken with the
    intercepts of the design centred at its weighted mean ``m`` (``beta0_c = beta0 +
    beta1 . m``, a map of determinant 1, undone on the covariance; the gate's only where
    its family absorbs a shift of ``x``): far from 0 the raw slopes and intercepts are
    nearly collinear, and the ``rcond`` test would flag a regular model. It is meaningful at
    a maximum: fit with a tight ``tol`` (``max |score|`` is in the summary). Standard
    errors are NaN only when the information is found singular or not positive definite
    (``rcond``; a collapsed expert gives non-finite entries). An over-specified model
    (more experts than components) is singular only at its exact over-specified optimum
    (two experts equal, or one of weight 0). A fit of finite data stops near that point,
    not on it (typically an extra expert of small weight and variance on a few rows):
    its information is nearly singular yet passes the ``rcond`` test, and the standard
    errors are finite, large and invalid, because the normal limit they rest on does not
    hold for over-specified models (the estimates converge more slowly than
    ``n^{-1/2}``). Nothing cheap in the information flags this reliably (fitting 3
    experts to 2-expert data on four seeds, ``min_eigenvalue`` ranged over 7e-3 to 0.24,
    against 0.40 to 0.49 for the 2-expert fits), so choose the number of experts first
    (:func:`gmoe.selection.select_n_experts`). At the symmetric point
    ``beta1_1 = -beta1_2`` of a two-expert tanh/sigmoid gate the *Fisher* information is
    singular while the observed one can look healthy (its curvature along
    ``beta1_1 = beta1_2`` is a mean-zero sum): that point is detected explicitly
    (``MixingMeasure.is_symmetric_fixed_point``) and also gives NaN. EM can end exactly
    there even when the truth is not symmetric.

    Examples
    --------
    >>> import gmoe
    >>> from gmoe.inference import MoEResults
    >>> truth = gmoe.MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]],
    ...                            [1.0, -1.0], [0.05, 0.05])
    >>> X = gmoe.make_design(1000, "uniform", random_state=0)
    >>> y = gmoe.sample_moe(truth, X, random_state=1)
    >>> est = gmoe.GaussianMoERegressor(n_experts=2, tol=1e-10, random_state=0).fit(X, y)
    >>> res = MoEResults(est, X, y)
    >>> res.param_names[:3]
    ['gate[0].coef[0]', 'gate[0].intercept', 'expert[0].coef[0]']
    >>> bool(all(res.bse > 0))
    True
    """

    def __init__(self, model, X, y, sample_weight=None, *, learn_temperature=None,
                 rcond=_DEFAULT_RCOND):
        measure, estimator = _check_fitted_estimator(model)
        selected = measure.family.selected_experts()
        # A top-K gate that selects every expert is the softmax gate: differentiable.
        if not measure.family.differentiable and (selected is None
                                                  or selected < measure.n_experts):
            raise ValueError(_not_differentiable_message(
                "MoEResults has no analytic standard errors", measure.gating))
        if not (isinstance(rcond, numbers.Real) and 0 <= rcond < 1):
            raise ValueError(f"rcond must be a number in [0, 1), got rcond={rcond!r}.")
        if learn_temperature is None:
            learn_temperature = True if estimator is None else bool(
                getattr(estimator, "learn_temperature", True))
        X, y, sw = _check_data(model, X, y, sample_weight)
        param = _Parametrisation(measure, learn_temperature,
                                 _feature_names(estimator, measure.n_features))
        self.measure = measure
        self.gating = measure.gating
        self.param_names = list(param.names)
        self.params = param.to_vector(measure)
        self._param = param
        self.nobs = int(X.shape[0])
        self.wnobs = float(sw.sum())
        X, y, sw = rows_with_weight(X, y, sw)
        # The parameters the data identify, as the estimator's BIC counts them.
        self.df_model = count_parameters(measure.family, measure.n_experts,
                                         measure.n_features, param.learn_temperature)
        self.converged = None if estimator is None else bool(estimator.converged_)
        self.rcond = float(rcond)
        # The derivatives, the singularity test and the inverse are computed on a centred
        # design (the same model with re-based intercepts, a map of determinant 1): far
        # from 0 the raw intercepts and slopes are nearly collinear, so that a test in the
        # raw coordinates takes a regular model for a singular one, and an information
        # formed there and centred afterwards has lost its digits to cancellation.
        centre = _design_centre(measure, X, sw)
        J = _centring_jacobian(param, centre)
        gate_shift = 0 if measure.n_experts == 1 else measure.gate_coef @ centre  # alone: 1
        centred = measure.replace(
            gate_intercept=measure.gate_intercept + gate_shift,
            expert_intercept=measure.expert_intercept + measure.expert_coef @ centre)
        self.llf, score_c, hessian_c = _compute_log_likelihood_derivatives(
            param, param.to_vector(centred), X - centre, y, sw)
        cov, self.is_singular, self.min_eigenvalue, why = _invert_information(
            -hessian_c, self.param_names, rcond)
        if why is not None and measure.family.linear_logits \
                and not measure.family.pins_reference_coef:
            # The identity activation: free slopes, but a common translation is flat.
            why += (" Here the cause is the model's: the identity activation's logits are "
                    "linear, so a common translation of its gate slopes leaves the density "
                    "unchanged; fit gating='temperature', which pins the last expert's slope.")
        # Back to the raw parameters: theta = J theta_c, so the gradient is J^-T g_c, the
        # Hessian J^-T H_c J^-1 and the covariance J C_c J^T.
        J_inv = 2.0 * np.eye(J.shape[0]) - J  # J = I + N with N^2 = 0
        self.score = J_inv.T @ score_c
        self.hessian = J_inv.T @ hessian_c @ J_inv
        self.information = -self.hessian
        self._cov = J @ cov @ J.T
        if at_symmetric_point(measure):
            # The observed information can be positive definite there, but the Fisher
            # information is singular: the direction beta1_1 = beta1_2 changes the
            # density only at second order, so Wald standard errors are not valid.
            self._cov = np.full_like(self.information, np.nan)
            self.is_singular = True
            why = (
                "The two-expert tanh/sigmoid gate is at its symmetric point "
                "beta1_1 = -beta1_2 (see the documentation's Theory and conventions page, "
                "'Identifiability'), where the Fisher information is singular: "
                "moving both slopes by the same amount changes the density only at second "
                "order, so observed-information standard errors are not valid. They are "
                "set to NaN. Refit from another start, or use bootstrap().")
        if why is not None:
            warnings.warn(why, SingularInformationWarning, stacklevel=2)
        self.bse = np.sqrt(np.diag(self._cov))
        with np.errstate(divide="ignore", invalid="ignore"):
            self.zvalues = self.params / self.bse
        self.pvalues = 2.0 * stats.norm.sf(np.abs(self.zvalues))

    @property
    def tvalues(self):
        """Alias of :attr:`zvalues` (statsmodels' name)."""
        return self.zvalues

    @property
    def aic(self):
        """Akaike information criterion ``-2 llf + 2 p`` (lower is better)."""
        return -2.0 * self.llf + 2.0 * self.df_model

    @property
    def bic(self):
        """Bayesian information criterion ``-2 llf + p log(wnobs)`` (lower is better)."""
        return -2.0 * self.llf + self.df_model * np.log(self.wnobs)

    def cov_params(self):
        """Covariance matrix of :attr:`params`: the inverse observed information.

        Returns
        -------
        ndarray of shape (n_params, n_params)
            All NaN when the information is singular or not positive definite.
        """
        return self._cov.copy()

    def conf_int(self, alpha=0.05):
        """Wald confidence intervals ``params -/+ z_{1 - alpha/2} bse``.

        Parameters
        ----------
        alpha : float, default=0.05
            One minus the coverage.

        Returns
        -------
        ndarray of shape (n_params, 2)
            Lower and upper bounds. For a variance the interval can reach below 0 when
            ``bse`` is large; exponentiate ``log nu -/+ z bse / nu`` for a positive one.
        """
        _check_alpha(alpha)
        z = stats.norm.ppf(1.0 - alpha / 2.0)
        return np.column_stack([self.params - z * self.bse, self.params + z * self.bse])

    def summary(self, alpha=0.05):
        """A printable table of estimates, standard errors, z-tests and intervals.

        Parameters
        ----------
        alpha : float, default=0.05
            One minus the coverage of the intervals.

        Returns
        -------
        MoESummary
            ``print(res.summary())`` shows it; ``.rows`` holds the numbers.
        """
        ci = self.conf_int(alpha)
        lo, hi = f"[{alpha / 2:g}", f"{1 - alpha / 2:g}]"
        columns = ["coef", "std err", "z", "P>|z|", lo, hi]
        rows = [dict(zip(["parameter", *columns], [name, *vals], strict=True))
                for name, vals in zip(self.param_names, zip(
                    self.params, self.bse, self.zvalues, self.pvalues, ci[:, 0], ci[:, 1],
                    strict=True), strict=True)]
        info = [("gating", self.measure.family.describe()),
                ("n_experts", str(self.measure.n_experts)),
                ("nobs", str(self.nobs)), ("log-likelihood", f"{self.llf:.6g}"),
                ("AIC", f"{self.aic:.6g}"), ("BIC", f"{self.bic:.6g}"),
                ("converged", str(self.converged)),
                ("max |score|", f"{np.max(np.abs(self.score)):.3g}"),
                ("covariance", "singular (NaN)" if self.is_singular
                 else "observed information")]
        return MoESummary("Gaussian mixture of experts: maximum-likelihood results", info,
                          columns, rows)

    def __repr__(self):
        return (f"MoEResults(gating={self.gating!r}, n_experts={self.measure.n_experts}, "
                f"nobs={self.nobs}, llf={self.llf:.6g}, singular={self.is_singular})")


def _check_alpha(alpha):
    if not (isinstance(alpha, numbers.Real) and 0 < alpha < 1):
        raise ValueError(f"alpha must be a number in (0, 1), got alpha={alpha!r}.")


def _design_centre(measure, X, sample_weight):
    """The weighted mean of ``X``, where the gate absorbs a shift of ``x``; else 0.

    The experts' means always do, but the gate and the experts share one design: a
    family whose gate cannot be re-based (the activation gate) is not centred, nor one
    whose reference slope is free (the identity activation: its reference's intercept
    would leave 0, and its information is singular anyway). A lone expert, with no gate
    parameter, is centred in every family.
    """
    family = measure.family
    if not (measure.n_experts == 1 or (family.centres_design and family.pins_reference_coef)):
        return np.zeros(X.shape[1])
    return np.asarray(sample_weight @ X / np.sum(sample_weight), dtype=np.float64)


def _centring_jacobian(param, m):
    """``J`` with ``theta = J theta_c``: the parameters in terms of those of a centred design.

    With ``x = m + x_c`` an affine predictor ``beta1 . x + beta0`` is
    ``beta1 . x_c + (beta0 + beta1 . m)``: only the intercepts change,
    ``beta0 = beta0_c - beta1 . m``, for every expert's mean and the gate's logits (a
    family that centres the design; :func:`_design_centre`). ``J`` is the identity plus
    those ``-m`` entries, which never multiply one another (``(J - I)^2 = 0``), so
    ``J^-1 = 2 I - J``.
    """
    J = np.eye(len(param.names))
    if not np.any(m):
        return J
    pairs = []
    for block in param.expert_idx:  # the expert family's names: coef[f]..., intercept, ...
        names = [param.names[i] for i in block]
        pairs.append((next(i for i, name in zip(block, names, strict=True)
                            if name.endswith(".intercept")),
                      [i for i, name in zip(block, names, strict=True) if ".coef[" in name]))
    pairs += [(param.gate_int_idx[j], param.gate_coef_idx[j])
              for j in range(param.gate_int_idx.shape[0])]
    for intercept, coefs in pairs:
        for f, coef in enumerate(coefs):
            if intercept >= 0 and coef >= 0:
                J[intercept, coef] = -m[f]
    return J


def _invert_information(info, names, rcond):
    """Covariance (or NaN), singular flag, smallest correlation eigenvalue, warning text."""
    p = info.shape[0]
    nan = np.full((p, p), np.nan)
    if not np.all(np.isfinite(info)):
        return nan, True, np.nan, (
            "The observed information has non-finite entries (a collapsed expert variance "
            "or an overflowing gate); standard errors are set to NaN. Refit with a larger "
            "reg_var or fewer experts.")
    diag = np.diag(info)
    if np.any(diag <= 0):
        bad = [names[i] for i in np.flatnonzero(diag <= 0)]
        return nan, True, np.nan, (
            f"The observed information is not positive definite: its diagonal is <= 0 for "
            f"{bad} (the log-likelihood does not curve down along them). Standard errors "
            "are set to NaN. The parameter is not identified by the data (the coefficient "
            "of a constant column of X; an expert whose variance sits at its floor, see "
            "degenerate_experts_), or the fit is not at a maximum (check converged_ and "
            "refit with a smaller tol).")
    scale = 1.0 / np.sqrt(diag)
    corr = info * scale[:, None] * scale[None, :]
    eigval, eigvec = np.linalg.eigh(corr)
    min_eig = float(eigval[0])
    if min_eig < rcond:
        direction = np.abs(eigvec[:, 0])
        top = np.argsort(-direction)[:4]
        loads = ", ".join(f"{names[i]} ({direction[i]:.2f})" for i in top
                          if direction[i] > 0.1)
        kind = "singular" if min_eig > -1e-8 else "not positive definite"
        return nan, True, min_eig, (
            f"The observed information is {kind}: the smallest eigenvalue of its "
            f"correlation form is {min_eig:.3g} (below rcond={rcond:g}); standard errors "
            f"are set to NaN. Its eigenvector loads on {loads} (intercepts of the design "
            "centred at its mean, where the gate allows). Typical causes: an "
            "over-specified model (two experts estimating the same component: fit fewer "
            "experts, see gmoe.selection.select_n_experts), a two-expert tanh/sigmoid "
            "gate at its symmetric point beta1_1 = -beta1_2, a collapsed expert, or a fit "
            "that is not at a maximum (refit with a smaller tol). Use bootstrap() for "
            "resampling intervals.")
    try:
        factor = scipy.linalg.cho_factor(corr, lower=True, check_finite=False)
        cov_corr = scipy.linalg.cho_solve(factor, np.eye(p), check_finite=False)
    except np.linalg.LinAlgError:  # pragma: no cover - guarded by the eigenvalue test
        return nan, True, min_eig, (
            "The observed information is not positive definite (Cholesky failed); "
            "standard errors are set to NaN.")
    cov = cov_corr * scale[:, None] * scale[None, :]
    return 0.5 * (cov + cov.T), False, min_eig, None


def fit_results(estimator, X, y, sample_weight=None, **kwargs):
    """Inference for a fitted estimator: ``MoEResults(estimator, X, y, sample_weight)``.

    Parameters
    ----------
    estimator : GaussianMoERegressor
        Fitted (any gating but a 'topk' gate that selects fewer than all its experts).
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    sample_weight : array-like of shape (n_samples,), default=None
    **kwargs
        Passed to :class:`MoEResults` (``learn_temperature``, ``rcond``).

    Returns
    -------
    MoEResults
    """
    return MoEResults(estimator, X, y, sample_weight, **kwargs)


# --------------------------------------------------------------------------------------
# Bootstrap.


class BootstrapResults:
    """Bootstrap standard errors and percentile intervals.

    Attributes
    ----------
    params : ndarray of shape (n_params,)
        The original estimates on the identifiable scale.
    param_names : list of str
        As in :class:`MoEResults`; for 'topk' the gate block is the softmax one
        (rescaled to unit norm for ``top_k=1``, whose scale is not identifiable).
    replicates : ndarray of shape (n_boot, n_params)
        Estimates of every replicate after label alignment; NaN rows for failed fits.
    converged : ndarray of bool of shape (n_boot,)
        Whether each replicate's EM met ``tol``.
    n_failed : int
        Replicates whose fit raised (their rows are NaN).
    degenerate : ndarray of bool of shape (n_boot,)
        Whether each replicate's refit has collapsed experts (variance at the floor or
        weight near 0: a non-empty ``degenerate_experts_``, which its
        :class:`~gmoe.exceptions.DegenerateExpertWarning` names). Such rows are kept in
        ``replicates``, ``bse`` and :meth:`conf_int`, which they can shrink (a collapsed
        variance barely moves between replicates).
    n_degenerate : int
        ``degenerate.sum()``; :func:`bootstrap` warns when it is positive.
    bse : ndarray of shape (n_params,)
        Standard deviation of the replicates (ddof=1), over the successful ones.
    kind : {'nonparametric', 'parametric'}
    seeds : ndarray of int of shape (n_boot,)
        The seed of each replicate's resample.
    """

    def __init__(self, params, param_names, replicates, converged, n_failed, kind, seeds,
                 degenerate=None):
        self.params = params
        self.param_names = param_names
        self.replicates = replicates
        self.converged = converged
        self.n_failed = int(n_failed)
        self.degenerate = (np.zeros(replicates.shape[0], dtype=bool) if degenerate is None
                           else np.asarray(degenerate, dtype=bool))
        self.n_degenerate = int(self.degenerate.sum())
        self.kind = kind
        self.seeds = seeds
        ok = np.all(np.isfinite(replicates), axis=1)
        good = replicates[ok]
        self.n_boot = replicates.shape[0]
        self.bse = good.std(axis=0, ddof=1) if len(good) > 1 else np.full(len(params), np.nan)

    def conf_int(self, alpha=0.05):
        """Percentile intervals: the ``alpha/2`` and ``1 - alpha/2`` replicate quantiles.

        Parameters
        ----------
        alpha : float, default=0.05

        Returns
        -------
        ndarray of shape (n_params, 2)
        """
        _check_alpha(alpha)
        ok = np.all(np.isfinite(self.replicates), axis=1)
        if ok.sum() < 2:
            return np.full((len(self.params), 2), np.nan)
        return np.quantile(self.replicates[ok], [alpha / 2.0, 1.0 - alpha / 2.0], axis=0).T

    def summary(self, alpha=0.05):
        """A printable table of estimates, bootstrap standard errors and percentile intervals.

        Parameters
        ----------
        alpha : float, default=0.05
            The intervals have coverage ``1 - alpha``.

        Returns
        -------
        MoESummary
        """
        ci = self.conf_int(alpha)
        lo, hi = f"[{alpha / 2:g}", f"{1 - alpha / 2:g}]"
        columns = ["coef", "boot se", lo, hi]
        rows = [dict(zip(["parameter", *columns], [name, *vals], strict=True))
                for name, vals in zip(self.param_names, zip(
                    self.params, self.bse, ci[:, 0], ci[:, 1], strict=True), strict=True)]
        info = [("bootstrap", self.kind), ("replicates", str(self.n_boot)),
                ("failed", str(self.n_failed)),
                ("not converged", str(int(np.sum(~self.converged)))),
                ("degenerate", str(self.n_degenerate))]
        return MoESummary("Gaussian mixture of experts: bootstrap results", info, columns,
                          rows)

    def __repr__(self):
        return (f"BootstrapResults(kind={self.kind!r}, n_boot={self.n_boot}, "
                f"n_failed={self.n_failed}, n_degenerate={self.n_degenerate})")


def _bootstrap_one(estimator, X, y, sample_weight, kind, seed, param):
    from sklearn.base import clone

    from .alignment import align_to
    from .model import sample_moe

    reference = estimator.mixing_measure_
    rng = np.random.default_rng(seed)
    counted = np.any(sample_weight != 1.0)
    if kind == "nonparametric" and not counted:
        rows = rng.integers(0, X.shape[0], size=X.shape[0])
        Xb, yb, wb = X[rows], y[rows], sample_weight[rows]
    elif kind == "nonparametric":
        # Frequency weights: a resample of the rows they count, as counts per row.
        total = max(1, int(round(float(sample_weight.sum()))))
        Xb, yb = X, y
        wb = rng.multinomial(total, sample_weight / sample_weight.sum()).astype(np.float64)
    else:
        # A row of weight w is w observations, each with its own draw of y.
        Xb, wb = np.repeat(X, sample_weight.astype(np.int64), axis=0), None
        yb = sample_moe(reference, Xb, random_state=rng)
    refit = clone(estimator).set_params(init_params=reference, n_init=1, warm_start=False,
                                        verbose=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            refit.fit(Xb, yb, sample_weight=wb)
        aligned, perm = align_to(refit.mixing_measure_, reference)
        # The experts that the refit's DegenerateExpertWarning names, read from the fit
        # rather than from the silenced warnings (the same under any joblib backend), and
        # labelled as in the aligned replicate.
        collapsed = [j for j in range(len(perm)) if perm[j] in refit.degenerate_experts_]
        return param.to_vector(aligned), bool(refit.converged_), None, collapsed
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
        return np.full(param.size, np.nan), False, f"{type(err).__name__}: {err}", []


def bootstrap(estimator, X, y, n_boot=200, kind="nonparametric", *, sample_weight=None,
              random_state=None, n_jobs=None, verbose=0):
    """Bootstrap standard errors and percentile intervals for a fitted estimator.

    Every replicate refits a clone of ``estimator`` with ``init_params`` set to the fitted
    model (one start), then relabels its experts to match the fit
    (:func:`gmoe.alignment.align_to`) before reading its parameters on the identifiable
    scale. Works for every gating family, top-K included.

    Parameters
    ----------
    estimator : GaussianMoERegressor
        Fitted on ``(X, y)``.
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_boot : int, default=200
        Number of replicates.
    kind : {'nonparametric', 'parametric'}, default='nonparametric'
        'nonparametric' resamples rows (with their weights) with replacement;
        'parametric' keeps ``X`` and draws ``y`` from the fitted model.
    sample_weight : array-like of shape (n_samples,), default=None
        The weights used in the fit: frequency weights, as there. 'nonparametric' draws
        ``round(sum w)`` rows with probabilities ``w / sum w`` (the rows the weights
        count); 'parametric' draws ``w_i`` values of ``y`` at each ``x_i``, so it needs
        whole-number weights.
    random_state : int, RandomState instance, Generator or None, default=None
        Seeds the resamples; replicate ``b`` gets its own stream.
    n_jobs : int, default=None
        Parallel replicates through joblib (None: 1).
    verbose : int, default=0
        Progress messages on stderr, as joblib's ``Parallel(verbose=...)``: 0 none, 1 and
        up the replicates done and the time elapsed and left, more often as it grows.

    Returns
    -------
    BootstrapResults

    Notes
    -----
    Alignment matches experts by their parameters; when the experts of the fit are not
    well separated (an over-specified model) the labels of a replicate can still be
    ambiguous, and per-expert intervals mean little. Replicates whose EM does not meet
    ``tol`` are kept (see ``converged``); fits that raise give NaN rows (``n_failed``,
    with a warning quoting the first error).
    Replicates whose refit has collapsed experts are kept too and counted
    (``degenerate``, ``n_degenerate``), with one
    :class:`~gmoe.exceptions.DegenerateExpertWarning` for all of them (the refits' own
    warnings are silenced): a collapsed expert varies little between replicates, so its
    standard errors and intervals come out too small (zero-width for a constant ``y``).
    """
    from joblib import Parallel, delayed

    measure, fitted = _check_fitted_estimator(estimator)
    if fitted is None:
        raise ValueError("bootstrap needs a fitted estimator (it refits a clone), got a "
                         "MixingMeasure.")
    if kind not in ("nonparametric", "parametric"):
        raise ValueError("kind must be one of ['nonparametric', 'parametric'], got "
                         f"kind={kind!r}.")
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got n_boot={n_boot!r}.")
    if isinstance(verbose, bool) or not isinstance(verbose, numbers.Integral) or verbose < 0:
        raise ValueError(f"verbose must be an integer >= 0, got verbose={verbose!r}.")
    X, y, sw = _check_data(estimator, X, y, sample_weight)
    if np.any(sw != 1.0) and round(float(sw.sum())) < measure.n_experts:
        raise ValueError(
            f"sample_weight must sum to at least n_experts ({measure.n_experts}) for a "
            "bootstrap: frequency weights count rows, and a replicate draws as many rows "
            f"as they count; got a sum of {float(sw.sum())!r}. Scale them to counts.")
    if kind == "parametric" and np.any(sw != np.round(sw)):
        raise ValueError("sample_weight must hold whole numbers for kind='parametric' (a "
                         "row of weight w is w observations, each drawn anew), got "
                         f"{float(sw[np.flatnonzero(sw != np.round(sw))[0]])!r}.")
    learn = bool(getattr(estimator, "learn_temperature", True))
    param = _Parametrisation(measure, learn, _feature_names(estimator, measure.n_features))
    rng = check_random_state(random_state)
    seeds = rng.integers(0, np.iinfo(np.int64).max, size=int(n_boot))
    out = Parallel(n_jobs=n_jobs, verbose=int(verbose))(
        delayed(_bootstrap_one)(estimator, X, y, sw, kind, int(s), param) for s in seeds)
    replicates = np.vstack([o[0] for o in out])
    converged = np.array([o[1] for o in out], dtype=bool)
    failures = [o[2] for o in out if o[2] is not None]
    if failures:
        warnings.warn(f"{len(failures)} of {len(out)} bootstrap replicates failed to fit and "
                      "are NaN rows of replicates (left out of bse and conf_int); the first: "
                      f"{failures[0]}", GMoEWarning, stacklevel=2)
    degenerate = np.array([bool(o[3]) for o in out], dtype=bool)
    if degenerate.any():
        b = int(np.argmax(degenerate))
        warnings.warn(
            f"{int(degenerate.sum())} of {len(out)} bootstrap replicates have collapsed "
            f"experts (variance at the floor or weight near 0; replicate {b}: experts "
            f"{out[b][3]}). They are kept in replicates, bse and conf_int, which they can "
            "make too small (a collapsed expert varies little between replicates); see "
            "BootstrapResults.degenerate. Use fewer experts or a larger reg_var.",
            DegenerateExpertWarning, stacklevel=2)
    return BootstrapResults(param.to_vector(measure), list(param.names), replicates,
                            converged, len(failures), kind, seeds, degenerate)
