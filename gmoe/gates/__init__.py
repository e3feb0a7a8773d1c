"""Gating families: one module per family on one abstract :class:`GatingFamily`.

A registry maps names to families: ``gating="softmax"`` anywhere in gmoe means
``make_gating("softmax", ...)``, and ``gating=`` also takes a family instance directly (as
:class:`~sklearn.gaussian_process.GaussianProcessRegressor` takes a kernel). A new family
is one subclass and one :func:`register_gating` call; see :ref:`adding-a-gate`.

=================  ===============================================  ====================
name               logits ``s_j(x)``                                active set
=================  ===============================================  ====================
``"softmax"``      ``beta1_j^T x + beta0_j``                        all experts
``"topk"``         ``beta1_j^T x + beta0_j``                        the ``top_k`` best
``"temperature"``  ``(beta1_j^T x + beta0_j) / tau``                all experts
``"activation"``   ``(sigma(beta1_j^T x) + beta0_j) / tau``         all experts
=================  ===============================================  ====================
"""

from .activation import (
    ACTIVATIONS,
    ActivationGating,
    compute_activation,
    compute_activation_derivatives,
)
from .base import GateData, GateParams, GatingFamily
from .smooth import GateLayout, SmoothGatingFamily
from .softmax import SoftmaxGating, TemperatureGating
from .topk import TOPK_SELECTIONS, TopKGating, compute_topk_mask

__all__ = [
    "ACTIVATIONS",
    "TOPK_SELECTIONS",
    "ActivationGating",
    "GateData",
    "GateLayout",
    "GateParams",
    "GatingFamily",
    "SmoothGatingFamily",
    "SoftmaxGating",
    "TemperatureGating",
    "TopKGating",
    "available_gatings",
    "gating_class",
    "gating_options",
    "compute_activation",
    "compute_activation_derivatives",
    "compute_topk_mask",
    "make_gating",
    "register_gating",
]

_REGISTRY = {}


def register_gating(name, family_class):
    """Register a gating family under ``name`` (``gating=name`` then builds it).

    Parameters
    ----------
    name : str
        The name users pass as ``gating=``.
    family_class : type
        A subclass of :class:`GatingFamily`; ``family_class.from_options(n_experts=...,
        **options)`` builds it.

    Returns
    -------
    type
        ``family_class``, so that this can decorate a class definition.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}.")
    if not (isinstance(family_class, type) and issubclass(family_class, GatingFamily)):
        raise ValueError("family_class must be a subclass of gmoe.gates.GatingFamily, got "
                         f"{family_class!r}.")
    if family_class.name != name:
        raise ValueError(f"family_class.name must equal the registered name {name!r}, got "
                         f"{family_class.name!r}.")
    _REGISTRY[name] = family_class
    return family_class


def gating_class(name):
    """The family class registered under ``name``.

    Parameters
    ----------
    name : str

    Returns
    -------
    type
    """
    if name not in _REGISTRY:
        raise ValueError(f"gating must be one of {sorted(_REGISTRY)}, got gating={name!r}.")
    return _REGISTRY[name]


def gating_options():
    """Every structural option name of the registered families (``top_k``, ...).

    Returns
    -------
    tuple of str
    """
    names = []
    for family_class in _REGISTRY.values():
        names += [o for o in family_class.OPTIONS if o not in names]
    return tuple(names)


def available_gatings():
    """The registered family names, in registration order.

    Returns
    -------
    tuple of str
    """
    return tuple(_REGISTRY)


def make_gating(gating="softmax", *, n_experts=None, **options):
    """The gating family named ``gating`` (or ``gating`` itself, if it is a family).

    Parameters
    ----------
    gating : str or GatingFamily, default='softmax'
        A registered name (:func:`available_gatings`) or a family instance.
    n_experts : int, optional
        When given, options are checked against it (``top_k <= n_experts``), those of an
        instance too (:meth:`GatingFamily.check_n_experts`).
    **options
        The gating options of :class:`~gmoe.GaussianMoERegressor` (``top_k``,
        ``topk_selection``, ``activation``); each family reads those it uses. Ignored
        when ``gating`` is an instance.

    Returns
    -------
    GatingFamily
    """
    if isinstance(gating, GatingFamily):
        if n_experts is not None:
            gating.check_n_experts(n_experts)
        return gating
    if not isinstance(gating, str) or gating not in _REGISTRY:
        raise ValueError(f"gating must be one of {sorted(_REGISTRY)} or a GatingFamily instance, "
                         f"got gating={gating!r}.")
    return _REGISTRY[gating].from_options(n_experts=n_experts, **options)


for _family in (SoftmaxGating, TopKGating, TemperatureGating, ActivationGating):
    register_gating(_family.name, _family)
del _family
