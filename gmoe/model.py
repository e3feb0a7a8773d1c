"""The parameters of one Gaussian mixture of experts, its density and its sampler.

:class:`MixingMeasure` holds a model ``G`` (:ref:`theory-model`): gate parameters, expert parameters
and the gating family. The module functions evaluate ``p_G(y | x)``, run the E-step and
draw data from ``G``.
"""

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.exceptions import NotFittedError
from sklearn.utils.validation import validate_data

from ._expert_major import e_step_from_means
from ._validation import (
    check_float_array,
    check_option,
    check_positive_scalar,
    check_variances,
)
from .experts import GAUSSIAN_LINEAR, ExpertParams
from .gates import GateParams, gating_options, make_gating
from .utils import check_random_state

__all__ = [
    "MixingMeasure",
    "as_measure",
    "check_design_of",
    "conditional_log_density",
    "compute_e_step",
    "e_step",
    "make_design",
    "sample_moe",
]


def _frozen(arr):
    arr = np.array(arr, dtype=np.float64, copy=True)
    arr.flags.writeable = False
    return arr


class MixingMeasure:
    r"""The parameters of a Gaussian mixture of experts (a discrete mixing measure).

    .. math::

        p_G(y \mid x) = \sum_{i=1}^{k} g_i(x)\, \mathcal{N}(y \mid a_i^\top x + b_i, \nu_i)

    with the gate ``g`` given by ``gating`` (:ref:`theory-gates`). Read as the measure
    ``G = sum_i w_i delta_{theta_i}`` with weights ``w_i = exp(beta0_i)`` (or
    ``exp(beta0_i / tau)`` for the temperature families) and atoms
    ``theta_i = (beta1_i, a_i, b_i, nu_i)`` (plus ``tau`` for the temperature families).

    Parameters
    ----------
    gate_coef : array-like of shape (n_experts, n_features)
        Gate slopes ``beta1``.
    gate_intercept : array-like of shape (n_experts,)
        Gate intercepts ``beta0``.
    expert_coef : array-like of shape (n_experts, n_features)
        Expert slopes ``a``.
    expert_intercept : array-like of shape (n_experts,)
        Expert intercepts ``b``.
    expert_var : array-like of shape (n_experts,)
        Expert **variances** ``nu`` (not standard deviations), all > 0.
    gating : str or GatingFamily, default='softmax'
        A registered gating name (``'softmax'``, ``'topk'``, ``'temperature'``,
        ``'activation'``, or one added with :func:`gmoe.gates.register_gating`) or a
        family instance.
    temperature : float, optional
        ``tau > 0``; required for the families with a temperature ('temperature',
        'activation'), not allowed otherwise.
    top_k : int, optional
        Required for 'topk': ``1 <= top_k <= n_experts``.
    topk_selection : {'affine', 'linear'}, default='affine'
        Selection score of the top-K gate.
    activation : {'tanh', 'sigmoid', 'gelu', 'identity'}, optional
        Required for 'activation'.
    rebase : bool, default=False
        Translate the gate parameters so that the identifiability convention holds
        instead of raising when it does not. The density is unchanged.
    **family_options
        Options of a gating family added with :func:`gmoe.gates.register_gating` (its
        ``OPTIONS``), for ``gating`` given by name.

    Notes
    -----
    Identifiability convention (:ref:`theory-identifiability`): the last expert is the
    reference. For 'softmax', 'topk' and 'temperature' its gate slope and intercept are 0;
    for 'activation' only its intercept is (every slope is free).
    """

    def __init__(self, gate_coef, gate_intercept, expert_coef, expert_intercept, expert_var, *,
                 gating="softmax", temperature=None, top_k=None, topk_selection="affine",
                 activation=None, rebase=False, **family_options):
        unknown = [key for key in family_options if key not in gating_options()]
        if unknown:
            raise TypeError(f"MixingMeasure got an unexpected keyword argument {unknown[0]!r} "
                            f"(the registered gating families' options are "
                            f"{list(gating_options())}; a family of your own takes its "
                            "options by name once registered with "
                            "gmoe.gates.register_gating).")
        expert_coef = check_float_array(expert_coef, "expert_coef", ndim=2)
        n_experts, n_features = expert_coef.shape
        if n_experts < 1 or n_features < 1:
            raise ValueError(
                "expert_coef must have shape (n_experts, n_features) with both >= 1, "
                f"got shape {expert_coef.shape}."
            )
        shape_k = (n_experts,)
        gate_coef = check_float_array(gate_coef, "gate_coef", ndim=2,
                                      shape=(n_experts, n_features))
        gate_intercept = check_float_array(gate_intercept, "gate_intercept", ndim=1,
                                           shape=shape_k)
        expert_intercept = check_float_array(expert_intercept, "expert_intercept", ndim=1,
                                             shape=shape_k)
        expert_var = check_variances(
            check_float_array(expert_var, "expert_var", ndim=1, shape=shape_k), "expert_var")
        family = make_gating(gating, top_k=top_k, topk_selection=topk_selection,
                             activation=activation, n_experts=n_experts, **family_options)
        for key in family_options:  # never silently dropped (an instance holds its own)
            if not isinstance(gating, str) or key not in family.OPTIONS:
                raise ValueError(f"{key} does not apply to gating={gating!r}"
                                 + ("" if isinstance(gating, str) else
                                    " (a family instance holds its own options)") + ".")
        if family.uses_temperature:
            if temperature is None:
                raise ValueError("temperature must be a positive number for "
                                 f"gating={family.name!r}, got temperature=None.")
            temperature = check_positive_scalar(temperature, "temperature")
        elif temperature is not None:
            raise ValueError(
                f"temperature applies only to gating families with a temperature, got "
                f"temperature={temperature!r} with gating={family.name!r}."
            )
        gate_coef, gate_intercept = self._apply_convention(
            family, gate_coef, gate_intercept, rebase)

        self.gate_coef = _frozen(gate_coef)
        self.gate_intercept = _frozen(gate_intercept)
        self.expert_coef = _frozen(expert_coef)
        self.expert_intercept = _frozen(expert_intercept)
        self.expert_var = _frozen(expert_var)
        self.temperature = temperature
        self.family = family

    @staticmethod
    def _apply_convention(family, gate_coef, gate_intercept, rebase):
        shift_coef = gate_coef[-1] if family.pins_reference_coef else np.zeros_like(gate_coef[-1])
        shift_intercept = gate_intercept[-1]
        if not np.any(shift_coef) and shift_intercept == 0:
            return gate_coef, gate_intercept
        if not rebase:
            what = ("gate_coef[-1] = 0 and gate_intercept[-1] = 0" if family.pins_reference_coef
                    else "gate_intercept[-1] = 0")
            raise ValueError(
                f"The last expert is the gate's reference for gating={family.name!r}: expected "
                f"{what}, got gate_coef[-1]={gate_coef[-1].tolist()}, "
                f"gate_intercept[-1]={float(gate_intercept[-1])!r}. Pass rebase=True to "
                "translate the gate parameters (the density is unchanged)."
            )
        return gate_coef - shift_coef, gate_intercept - shift_intercept

    # ------------------------------------------------------------------ shape
    @property
    def n_experts(self):
        """Number of experts ``k``."""
        return self.expert_coef.shape[0]

    @property
    def n_features(self):
        """Number of features ``d``."""
        return self.expert_coef.shape[1]

    @property
    def gating(self):
        """The gating family's name."""
        return self.family.name

    @property
    def top_k(self):
        """Experts selected per input (top-K families), else None."""
        return self.family.options().get("top_k")

    @property
    def topk_selection(self):
        """Selection score of a top-K family (``'affine'`` otherwise)."""
        return self.family.options().get("topk_selection", "affine")

    @property
    def activation(self):
        """The activation of an activation family, else None."""
        return self.family.options().get("activation")

    @property
    def experts(self):
        """The expert family (:class:`~gmoe.experts.GaussianLinearExperts`)."""
        return GAUSSIAN_LINEAR

    @property
    def expert_params(self):
        """The experts' parameters as a :class:`~gmoe.experts.ExpertParams`."""
        return ExpertParams(self.expert_coef, self.expert_intercept, self.expert_var)

    @property
    def gate_params(self):
        """The gate's parameters as a :class:`~gmoe.gates.GateParams`."""
        return GateParams(self.gate_coef, self.gate_intercept, self.temperature)

    def _options(self):
        return dict(gating=self.family, temperature=self.temperature)

    def replace(self, **changes):
        """Return a copy with some parameters or options replaced (validated again).

        Parameters
        ----------
        **changes
            New values of any :class:`MixingMeasure` constructor arguments (``gate_coef``,
            ``expert_var``, ``gating``, ``temperature``, ...); the others are kept.

        Returns
        -------
        MixingMeasure
        """
        fields = dict(gate_coef=self.gate_coef, gate_intercept=self.gate_intercept,
                      expert_coef=self.expert_coef, expert_intercept=self.expert_intercept,
                      expert_var=self.expert_var, **self._options())
        if "gating" not in changes and any(key in changes for key in gating_options()):
            # A changed family option (top_k, activation, ...) rebuilds the family by name.
            fields.update(gating=self.gating, **self.family.options())
        fields.update(changes)
        return MixingMeasure(**fields)

    # ---------------------------------------------------------- measure view
    @property
    def weights(self):
        """Atom weights ``w_i = exp(beta0_i)`` (``exp(beta0_i / tau)`` with a temperature)."""
        scale = self.temperature if self.family.uses_temperature else 1.0
        return np.exp(self.gate_intercept / scale)

    @property
    def atoms(self):
        """Atoms ``theta_i = (beta1_i, a_i, b_i, nu_i[, tau])``, shape (n_experts, n_atom).

        ``beta0`` is not part of an atom: it is carried by the weight.
        """
        cols = [self.gate_coef, self.expert_coef, self.expert_intercept[:, None],
                self.expert_var[:, None]]
        if self.family.uses_temperature:
            cols.append(np.full((self.n_experts, 1), self.temperature))
        return np.hstack(cols)

    def to_vector(self):
        """All parameters as one flat vector.

        Order: ``gate_coef`` (row-major), ``gate_intercept``, ``expert_coef`` (row-major),
        ``expert_intercept``, ``expert_var``, then ``temperature`` for the temperature
        families.

        Returns
        -------
        ndarray of shape (2 * n_experts * n_features + 3 * n_experts,)
            One entry longer for the temperature families.
        """
        parts = [self.gate_coef.ravel(), self.gate_intercept, self.expert_coef.ravel(),
                 self.expert_intercept, self.expert_var]
        if self.family.uses_temperature:
            parts.append([self.temperature])
        return np.concatenate(parts)

    @classmethod
    def from_vector(cls, vector, like, *, rebase=False):
        """Build a measure shaped like ``like`` from a vector made by :meth:`to_vector`.

        ``rebase=True`` translates the gate onto the identifiability convention (useful
        after perturbing a vector); by default a vector that breaks it is an error.

        Parameters
        ----------
        vector : array-like of shape (n_params,)
            Parameters in the order of :meth:`to_vector`.
        like : MixingMeasure
            Template that gives ``n_experts``, ``n_features`` and the gating options.
        rebase : bool, default=False
            Translate the gate onto the identifiability convention instead of raising.

        Returns
        -------
        MixingMeasure
        """
        k, d = like.n_experts, like.n_features
        size = 2 * k * d + 3 * k + (1 if like.family.uses_temperature else 0)
        vector = check_float_array(vector, "vector", ndim=1, shape=(size,))
        pos = 0

        def take(count, shape):
            nonlocal pos
            out = vector[pos:pos + count].reshape(shape)
            pos += count
            return out

        gate_coef = take(k * d, (k, d))
        gate_intercept = take(k, (k,))
        expert_coef = take(k * d, (k, d))
        expert_intercept = take(k, (k,))
        expert_var = take(k, (k,))
        options = like._options()
        if like.family.uses_temperature:
            options["temperature"] = float(vector[pos])
        return cls(gate_coef, gate_intercept, expert_coef, expert_intercept, expert_var,
                   rebase=rebase, **options)

    def identifiable(self):
        """The representative of this model on the identifiable scale.

        See :ref:`theory-identifiability`.

        * 'temperature': the gate on ``gamma = (beta1, beta0) / tau`` (returned with
          ``temperature=1``); ``(beta1, beta0, tau)`` themselves are determined only up to
          a common positive scale.
        * 'topk' with ``top_k=1``: the gate rescaled to unit Frobenius norm of
          ``(beta1, beta0)`` (of ``beta1`` alone, with ``beta0`` set to 0, for linear
          selection), since only the selection regions are identifiable.
        * otherwise the measure itself.

        Returns
        -------
        MixingMeasure
        """
        params = self.gate_params
        gate = self.family.identifiable_gate(params)
        if gate is params:
            return self
        return self.replace(gate_coef=gate.coef, gate_intercept=gate.intercept,
                            temperature=gate.temperature)

    def is_symmetric_fixed_point(self, *, atol=1e-12):
        """Whether the gate is its own symmetric image (see :ref:`theory-identifiability`).

        For a two-expert tanh/sigmoid activation gate: ``beta1_1 = -beta1_2``. At such a
        point the Fisher information is singular; such a model cannot serve as a truth or
        a start.

        Parameters
        ----------
        atol : float, default=1e-12
            Absolute tolerance of the comparison ``beta1_1 == -beta1_2``.

        Returns
        -------
        bool
        """
        return self.family.is_symmetric_fixed_point(self.gate_params, atol=atol)

    def symmetric_images(self):
        """The other measures of exactly the same density, with the experts unchanged.

        Returns
        -------
        list of MixingMeasure
            Empty unless the gate has an exact symmetry (two-expert tanh/sigmoid).
        """
        return [self.replace(gate_coef=g.coef, gate_intercept=g.intercept,
                             temperature=g.temperature)
                for g in self.family.symmetric_images(self.gate_params)]

    # --------------------------------------------------------------- density
    def log_gate(self, X):
        """Log-gate ``log g_i(x)`` for every row of ``X``, shape (n_samples, n_experts).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        X = self.check_X(X)
        return self.family.log_gate(X, self.gate_coef, self.gate_intercept, self.temperature)

    def check_X(self, X):
        """Return ``X`` as a checked float64 array of shape (n_samples, n_features).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data; ``n_features`` must match the measure's.

        Returns
        -------
        ndarray of shape (n_samples, n_features)
        """
        return check_float_array(X, "X", ndim=2, shape=(None, self.n_features))

    def __repr__(self):
        opts = [f"gating={self.gating!r}"]
        opts += [f"{k}={v!r}" for k, v in self.family.options().items()]
        if self.temperature is not None:
            opts.append(f"temperature={self.temperature!r}")
        return (f"MixingMeasure(n_experts={self.n_experts}, n_features={self.n_features}, "
                f"{', '.join(opts)})")

    def __eq__(self, other):
        if not isinstance(other, MixingMeasure):
            return NotImplemented
        return self._options() == other._options() and np.array_equal(
            self.to_vector(), other.to_vector()) and self.n_features == other.n_features

    __hash__ = None

    def __setstate__(self, state):
        for key in ("gate_coef", "gate_intercept", "expert_coef", "expert_intercept",
                    "expert_var"):
            state[key] = _frozen(state[key])
        self.__dict__.update(state)


def check_design_of(obj, X):
    """``X`` checked against a model: its columns, and a fitted estimator's feature names.

    A fitted scikit-learn estimator validates ``X`` as its ``predict`` does
    (``n_features_in_``, and the names and order of the columns when it was fitted on a
    DataFrame: swapped columns would otherwise be read as the features they replace). As
    there, an array without names given to an estimator fitted with them (or the reverse)
    warns. Unlike there, ``X`` may have 0 rows. A :class:`MixingMeasure` has no feature
    names and checks the number of columns only, as does an object that is not a
    scikit-learn estimator.

    Parameters
    ----------
    obj : MixingMeasure or fitted estimator
    X : array-like of shape (n_samples, n_features)

    Returns
    -------
    ndarray of shape (n_samples, n_features)
    """
    measure = as_measure(obj)
    if obj is not measure and isinstance(obj, BaseEstimator):
        X = validate_data(obj, X, reset=False, dtype=np.float64, ensure_min_samples=0)
    return measure.check_X(X)


def as_measure(obj, name="measure"):
    """``obj`` as a :class:`MixingMeasure`: itself, or a fitted estimator's ``mixing_measure_``.

    Parameters
    ----------
    obj : MixingMeasure or fitted estimator
    name : str, default="measure"
        The parameter's name in the error message.

    Returns
    -------
    MixingMeasure

    Raises
    ------
    sklearn.exceptions.NotFittedError
        For an estimator that is not fitted (a ValueError, as in scikit-learn).
    ValueError
        For anything else.
    """
    if isinstance(obj, MixingMeasure):
        return obj
    measure = getattr(obj, "mixing_measure_", None)
    if isinstance(measure, MixingMeasure):
        return measure
    if hasattr(obj, "steps") and hasattr(obj, "named_steps"):
        # A Pipeline, fitted or not, has no mixing_measure_ of its own.
        raise ValueError(f"{name} must be a MixingMeasure or a fitted estimator with a "
                         "mixing_measure_ attribute, got a Pipeline: pass its last step "
                         "(pipeline[-1]) and X transformed by the others "
                         "(pipeline[:-1].transform(X)).")
    if hasattr(type(obj), "fit"):
        raise NotFittedError(
            f"This {type(obj).__name__} instance is not fitted yet (it has no "
            f"mixing_measure_): call fit before passing it as {name}.")
    raise ValueError(f"{name} must be a MixingMeasure or a fitted estimator with a "
                     f"mixing_measure_ attribute, got {type(obj).__name__}.")


def _check_Xy(measure, X, y):
    X = measure.check_X(X)
    y = check_float_array(y, "y", ndim=1, shape=(X.shape[0],))
    return X, y


def compute_e_step(X, y, log_gate, expert_coef, expert_intercept, expert_var):
    """Run the E-step (numba kernels and numpy's vectorised exp) on float64 arrays.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    log_gate : array-like of shape (n_samples, n_experts)
        Log-gates; ``-inf`` marks an expert outside a row's selection (top-K).
    expert_coef : array-like of shape (n_experts, n_features)
    expert_intercept, expert_var : array-like of shape (n_experts,)
        Expert intercepts and variances (all > 0).

    Returns
    -------
    resp : ndarray of shape (n_samples, n_experts)
        Responsibilities ``r_ij``; rows sum to 1.
    log_lik : ndarray of shape (n_samples,)
        ``log p(y_i | x_i)``.

    Raises
    ------
    ValueError
        When an argument's shape does not match (``n_samples`` is read from ``X``,
        ``n_experts`` from ``expert_coef``), an entry is NaN or infinite (``log_gate`` may
        be ``-inf``), or a variance is not > 0.
    """
    return _e_step_arrays(*_check_e_step_arrays(X, y, log_gate, expert_coef,
                                                expert_intercept, expert_var))


def _check_e_step_arrays(X, y, log_gate, expert_coef, expert_intercept, expert_var):
    """:func:`compute_e_step`'s arguments as float64 arrays, checked, in their layout."""
    # The kernels index every array by the shapes of X and expert_coef without bounds
    # checks: a short array would be read past its end. The layout is kept (no
    # contiguous copy), so a checked call computes what the unchecked one does.
    as_given = dict(contiguous=False)
    X = check_float_array(X, "X", ndim=2, **as_given)
    n_samples, n_features = X.shape
    expert_coef = check_float_array(expert_coef, "expert_coef", ndim=2,
                                    shape=(None, n_features), **as_given)
    n_experts = expert_coef.shape[0]
    if n_experts < 1:
        raise ValueError("expert_coef must have shape (n_experts, n_features) with "
                         f"n_experts >= 1, got shape {expert_coef.shape}.")
    y = check_float_array(y, "y", ndim=1, shape=(n_samples,), **as_given)
    log_gate = check_float_array(log_gate, "log_gate", ndim=2, shape=(n_samples, n_experts),
                                 finite=False, **as_given)
    bad = np.isnan(log_gate) | (log_gate == np.inf)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError("log_gate must hold log-probabilities (finite, or -inf for an "
                         f"expert outside the selection), got {log_gate[where]} at index "
                         f"{where}.")
    expert_intercept = check_float_array(expert_intercept, "expert_intercept", ndim=1,
                                         shape=(n_experts,), **as_given)
    expert_var = check_variances(check_float_array(expert_var, "expert_var", ndim=1,
                                                   shape=(n_experts,), **as_given),
                                 "expert_var")
    return X, y, log_gate, expert_coef, expert_intercept, expert_var


def count_parameters(family, n_experts, n_features, learn_temperature=False):
    """The parameters the data identify in a model of this size: what BIC and AIC count.

    The gate's (:meth:`~gmoe.gates.GatingFamily.n_free_parameters`; none for one expert,
    whose gate is constant) and every expert's.

    Parameters
    ----------
    family : GatingFamily
    n_experts, n_features : int
    learn_temperature : bool, default=False
        Whether the temperature is estimated (where the family can learn it).

    Returns
    -------
    int
    """
    gate = 0 if n_experts == 1 else family.n_free_parameters(
        n_experts, n_features, learn_temperature=learn_temperature)
    return gate + n_experts * GAUSSIAN_LINEAR.n_parameters_per_expert(n_features)


def _e_step_arrays(X, y, log_gate, expert_coef, expert_intercept, expert_var):
    """:func:`compute_e_step` without the checks, for arrays already known to fit."""
    as_float = dict(dtype=np.float64)
    X = np.asarray(X, **as_float)
    # Expert-major: (n_experts, n_samples). The row-major log-gate is read through its
    # transpose, without a copy.
    means = np.asarray(expert_coef, **as_float) @ X.T
    means += np.asarray(expert_intercept, **as_float)[:, None]
    resp, log_lik = e_step_from_means(means, np.ascontiguousarray(y, **as_float),
                                      np.asarray(log_gate, **as_float).T,
                                      np.ascontiguousarray(expert_var, **as_float))
    return resp.T, log_lik


def e_step(measure, X, y):
    """Responsibilities and per-row log-likelihood of ``(X, y)`` under ``measure``.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
        The model ``G`` (an estimator is read through its ``mixing_measure_`` and checks
        ``X`` as its own methods do).
    X : array-like of shape (n_samples, n_features)
        Input data.
    y : array-like of shape (n_samples,)
        Target values.

    Returns
    -------
    resp : ndarray of shape (n_samples, n_experts)
    log_lik : ndarray of shape (n_samples,)
    """
    X = check_design_of(measure, X)
    measure = as_measure(measure)
    X, y = _check_Xy(measure, X, y)
    log_gate = measure.family.log_gate(X, measure.gate_coef, measure.gate_intercept,
                                       measure.temperature)
    # X and y are checked above and the parameters by MixingMeasure.
    return _e_step_arrays(X, y, log_gate, measure.expert_coef, measure.expert_intercept,
                          measure.expert_var)


def conditional_log_density(measure, X, y):
    """``log p_G(y_i | x_i)`` for every row, shape (n_samples,).

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
        The model ``G`` (an estimator is read through its ``mixing_measure_`` and checks
        ``X`` as its own methods do).
    X : array-like of shape (n_samples, n_features)
        Input data.
    y : array-like of shape (n_samples,)
        Target values.

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    return e_step(measure, X, y)[1]


def make_design(n, kind="grid", *, low=0.0, high=1.0, n_features=1, random_state=None):
    """Make a design matrix ``X`` of ``n`` rows.

    Parameters
    ----------
    n : int
        Number of rows, >= 1.
    kind : {'grid', 'uniform', 'normal'}, default='grid'
        'grid' is ``linspace(low, high, n)`` (one feature only, as in the papers);
        'uniform' draws from ``Uniform[low, high]^d``; 'normal' from ``N(0, I_d)``.
    low, high : float
        Range for 'grid' and 'uniform'.
    n_features : int, default=1
    random_state : int, Generator, RandomState or None

    Returns
    -------
    X : ndarray of shape (n, n_features)
    """
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got n={n!r}.")
    if isinstance(n_features, bool) or not isinstance(n_features, int | np.integer) \
            or n_features < 1:
        raise ValueError(f"n_features must be an integer >= 1, got n_features={n_features!r}.")
    check_option(kind, "kind", ("grid", "uniform", "normal"))
    if kind != "normal" and not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ValueError(f"low and high must be finite with low < high, got low={low!r}, "
                         f"high={high!r}.")
    if kind == "grid":
        if n_features != 1:
            raise ValueError(f"kind='grid' makes a single feature, got n_features={n_features}; "
                             "use kind='uniform' or 'normal' for several features.")
        return np.linspace(low, high, int(n))[:, None]
    rng = check_random_state(random_state)
    if kind == "uniform":
        return rng.uniform(low, high, size=(int(n), int(n_features)))
    return rng.standard_normal((int(n), int(n_features)))


def sample_moe(measure, X, *, random_state=None, return_labels=False):
    """Draw ``y`` from ``p_G(y | x)`` for every row of ``X``.

    Parameters
    ----------
    measure : MixingMeasure
    X : array-like of shape (n_samples, n_features)
    random_state : int, Generator, RandomState or None
        The draws' seed. Not the seed that drew ``X``: the same integer seed for
        :func:`make_design` and here makes each row's expert a function of its ``x``
        (the same uniforms choose both); use another seed, or pass one Generator to both.
    return_labels : bool, default=False
        Also return the index of the expert that generated each row.

    Returns
    -------
    y : ndarray of shape (n_samples,)
    labels : ndarray of int of shape (n_samples,)
        Only when ``return_labels`` is True.
    """
    if not isinstance(measure, MixingMeasure):
        raise ValueError(f"measure must be a MixingMeasure, got {type(measure).__name__}.")
    X = measure.check_X(X)
    rng = check_random_state(random_state)
    gate = np.exp(measure.log_gate(X))
    uniform = 1.0 - rng.random(X.shape[0])  # in (0, 1]: never selects a zero-gate expert
    cumulative = np.cumsum(gate, axis=1)
    labels = np.minimum(np.sum(cumulative < uniform[:, None] * cumulative[:, -1:], axis=1),
                        measure.n_experts - 1)
    # Inverse CDF: the first expert whose cumulative gate reaches u, never one of zero gate
    # (an inactive top-K expert); the minimum guards a rounding slip at the upper end.
    y = measure.experts.sample(X, labels, measure.expert_params, rng)
    if return_labels:
        return y, labels
    return y
