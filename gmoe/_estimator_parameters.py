"""The checks of :class:`~gmoe.GaussianMoERegressor`'s constructor parameters.

scikit-learn estimators store their parameters as given and check them when they fit;
every message names the parameter, what it must be and what it got.
"""

import numbers

import numpy as np

from ._starts import STRATEGIES
from ._validation import check_option
from .gates import make_gating
from .model import MixingMeasure

__all__ = ["check_fitted_temperature", "check_parameters"]


# Beyond this the gate's parameters (the temperature gate's beta = tau * gamma, the
# activation gate's intercepts) overflow float64 for any gamma of order 1e8.
LARGEST_FITTED_TEMPERATURE = 1e300


def check_fitted_temperature(family, temperature, name):
    """Refuse a temperature outside the range ``family`` can fit at.

    Parameters
    ----------
    family : GatingFamily
    temperature : float
    name : str
        What the temperature is called in the message.

    Raises
    ------
    ValueError
        When ``temperature < family.smallest_fitted_temperature`` or above
        :data:`LARGEST_FITTED_TEMPERATURE`.
    """
    smallest = family.smallest_fitted_temperature
    if temperature < smallest:
        raise ValueError(
            f"{name} must be at least {smallest:g} for gating={family.name!r} (below "
            "that the fit's arithmetic breaks down: a subnormal temperature drops the "
            "gate's digits, and the activation gate's curvature, which scales as "
            f"1/temperature**2, overflows), got {name}={temperature!r}.")
    if temperature > LARGEST_FITTED_TEMPERATURE:
        raise ValueError(
            f"{name} must be at most {LARGEST_FITTED_TEMPERATURE:g} for "
            f"gating={family.name!r} (the gate's parameters scale with it and overflow "
            f"float64 beyond that), got {name}={temperature!r}.")


def check_parameters(estimator):
    """Check every constructor parameter of ``estimator``; return its gating family.

    Parameters
    ----------
    estimator : GaussianMoERegressor

    Returns
    -------
    GatingFamily
        The family that ``gating`` and its options name, checked against ``n_experts``.

    Raises
    ------
    ValueError
        Naming the first parameter found wrong, what was expected and what was received.
    """

    def check_int(name, low):
        value = getattr(estimator, name)
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}.")

    def check_real(name, *, positive):
        value = getattr(estimator, name)
        ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
            and np.isfinite(value) and (value > 0 if positive else value >= 0)
        if not ok:
            what = "> 0" if positive else ">= 0"
            raise ValueError(f"{name} must be a finite number {what}, got {name}={value!r}.")

    def check_bool(name):
        value = getattr(estimator, name)
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {name}={value!r}.")

    check_int("n_experts", 1)
    check_int("max_iter", 1)
    check_int("n_init", 1)
    check_bool("learn_temperature")
    check_bool("warm_start")
    # verbose=True is the common spelling of verbose=1.
    if not isinstance(estimator.verbose, (numbers.Integral, np.bool_)) or estimator.verbose < 0:
        raise ValueError(f"verbose must be an integer >= 0, got verbose={estimator.verbose!r}.")
    check_real("tol", positive=False)
    check_real("reg_var", positive=False)
    check_option(estimator.on_degenerate, "on_degenerate", ("warn", "restart"))
    if estimator.acceleration is not None and estimator.acceleration != "squarem":
        raise ValueError("acceleration must be 'squarem' or None, got "
                         f"acceleration={estimator.acceleration!r}.")
    family = make_gating(estimator.gating, top_k=estimator.top_k,
                         topk_selection=estimator.topk_selection,
                         activation=estimator.activation, n_experts=estimator.n_experts)
    if family.uses_temperature:
        check_real("temperature", positive=True)
        check_fitted_temperature(family, estimator.temperature, "temperature")
    if isinstance(estimator.init_params, str):
        check_option(estimator.init_params, "init_params", STRATEGIES)
    elif not isinstance(estimator.init_params, MixingMeasure):
        raise ValueError("init_params must be 'random', 'kmeans', 'short_em' or a "
                         "MixingMeasure, got "
                         f"{type(estimator.init_params).__name__}: {estimator.init_params!r}.")
    return family
