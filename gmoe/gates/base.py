"""The interface every gating family implements, and the pieces the families share.

A gating family turns gate parameters and a design ``X`` into log-gates ``log g(x)``
(see :ref:`theory-gates`), and knows how to fit them inside EM. Families are stateless
strategy objects: they hold only structural options (``top_k``, ``activation``, ...); the
parameters are passed to every method, so restarts, finite-difference tests and
simulation sweeps never mutate a family.

Everything the rest of gmoe needs to know about a gate goes through
:class:`GatingFamily`: no other module tests a gating family's name. Adding a family is one
subclass and one :func:`~gmoe.gates.register_gating` call (see :ref:`adding-a-gate`).
"""

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg

from .._expert_major import Workspace, transposed_design

__all__ = ["GateData", "GateParams", "GatingFamily", "backtrack", "solve_newton_direction"]


@dataclass(frozen=True, eq=False)
class GateParams:
    """The gate's parameters: slopes ``beta1``, intercepts ``beta0`` and the temperature.

    Parameters
    ----------
    coef : ndarray of shape (n_experts, n_features)
        Gate slopes ``beta1``.
    intercept : ndarray of shape (n_experts,)
        Gate intercepts ``beta0``.
    temperature : float or None, default=None
        Temperature ``tau`` of the families that have one, else None.
    """

    coef: np.ndarray
    intercept: np.ndarray
    temperature: float | None = None


@dataclass
class GateData:
    """What a gate M-step may read: the data, the responsibilities and a workspace.

    Built once per EM iteration by the estimator; expert-major throughout.

    Parameters
    ----------
    ZT : ndarray of shape (n_features + 1, n_samples)
        The design with a trailing row of ones, transposed (C-contiguous).
    sample_weight : ndarray of shape (n_samples,)
        Weight of each row.
    weighted_resp : ndarray of shape (n_experts, n_samples), C-contiguous
        Sample weight times responsibility.
    expert_log_density : callable or ndarray, optional
        The experts' log-densities ``log N(y_i | mu_ij, nu_j)``, shape
        (n_experts, n_samples), or a function of no arguments that computes them (only
        the families that maximise the log-likelihood itself, such as top-K, need them).
    learn_temperature : bool, default=False
        Whether the family may move its temperature (families without one ignore it).
    max_iter : int, default=20
        Newton steps at most.
    workspace : Workspace, optional
        Where the passes' sample-sized arrays live; a fresh one by default.
    log_gate : ndarray of shape (n_experts, n_samples), optional
        The log-gate at the M-step's starting parameters, if known (it saves a pass).
    blocks : block source of ``gmoe._blocks``, optional
        The same rows and weighted responsibilities, walked block by block. A family
        whose :attr:`GatingFamily.fits_on_blocks` is True fits from it alone (the arrays
        above are then None: no whole-data copy of the design exists).
    statistics : tuple, optional
        The sums of :meth:`GatingFamily.block_statistics` at the M-step's starting
        parameters, when the E-step's pass computed them (they save a pass).
    """

    ZT: np.ndarray | None
    sample_weight: np.ndarray | None
    weighted_resp: np.ndarray | None
    expert_log_density: object = None
    learn_temperature: bool = False
    max_iter: int = 20
    workspace: Workspace = field(default_factory=Workspace)
    log_gate: np.ndarray | None = None
    blocks: object = None
    statistics: tuple | None = None

    @classmethod
    def from_rows(cls, X, weighted_resp, sample_weight=None, **kwargs):
        """Build from row-major arrays (tests and one-off calls).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        weighted_resp : array-like of shape (n_samples, n_experts)
        sample_weight : array-like of shape (n_samples,), optional
            Ones by default.
        **kwargs
            The other fields of :class:`GateData`.

        Returns
        -------
        GateData
        """
        weighted_resp = np.ascontiguousarray(np.asarray(weighted_resp, dtype=np.float64).T)
        if sample_weight is None:
            sample_weight = np.ones(weighted_resp.shape[1])
        return cls(transposed_design(np.asarray(X, dtype=np.float64)), sample_weight,
                   weighted_resp, **kwargs)

    @property
    def X(self):
        """The design without its intercept row, as a (n_samples, n_features) view."""
        return self.ZT[:-1].T

    @property
    def row_total(self):
        """``weighted_resp.sum(axis=0)``, shape (n_samples,) (computed on first use)."""
        total = self.__dict__.get("_row_total")
        if total is None:
            total = np.sum(self.weighted_resp, axis=0,
                           out=self.workspace.get("row_total", (self.weighted_resp.shape[1],)))
            self.__dict__["_row_total"] = total
        return total

    def get_expert_log_density(self):
        """The experts' log-densities (computed on first use).

        Returns
        -------
        ndarray of shape (n_experts, n_samples)
        """
        if callable(self.expert_log_density):
            self.expert_log_density = self.expert_log_density()
        if self.expert_log_density is None:
            raise ValueError("This gate M-step needs the experts' log-densities; build "
                             "GateData with expert_log_density=.")
        return self.expert_log_density


class GatingFamily(ABC):
    """A gating family: logits, log-gates and the gate's part of EM.

    Subclasses set the class attributes below and implement the abstract methods. The
    identifiability convention is that the last expert is the gate's reference: its
    intercept is 0, and so is its slope where :attr:`pins_reference_coef` is True.

    Attributes
    ----------
    name : str
        The family's registry name (``gating=name``).
    uses_temperature : bool
        Whether the family has a temperature ``tau``; its atoms then carry ``tau`` and its
        weights are ``exp(beta0 / tau)``.
    pins_reference_coef : bool
        Whether the reference expert's slope is pinned to 0 (a translation of every
        slope leaves the gate unchanged).
    centres_design : bool
        Whether a shift of ``x`` can be absorbed by the intercepts (``beta1^T x`` enters
        the logits linearly, next to ``beta0``); the estimator then fits on a centred
        design.
    scales_design : bool
        Whether the gate depends on ``x`` through ``beta1^T x`` alone, so that rescaling a
        column of ``x`` rescales the matching slopes; the estimator then fits on a scaled
        design.
    differentiable : bool
        Whether the log-likelihood is differentiable in the gate's parameters (standard
        errors by the observed information need it).
    parameter_prefix : str
        Prefix of the gate's parameter names in standard-error tables.
    OPTIONS : tuple of str
        The structural options :meth:`from_options` reads.
    FIT_MAY_CHANGE : tuple of str
        Options a fit may set differently from its truth (top-K's ``top_k``).
    selection_uses_intercept : bool
        Whether a selection (argmax, top-K) scores include ``beta0``.
    linear_logits : bool
        Whether the logits are ``beta1_j^T x + beta0_j`` up to a common scale.
    learns_temperature : bool
        Whether the temperature can be estimated.
    smallest_fitted_temperature : float
        The smallest temperature a fit accepts (0: any positive one).
    newton_steps_per_iteration : int
        Newton steps of the gate's M-step per EM iteration.
    fits_on_blocks : bool
        Whether :meth:`initial_gate` and :meth:`m_step` work from ``data.blocks`` alone,
        one block of rows at a time (bounded memory, several threads); the others are
        handed the complete arrays.
    """

    name = None
    uses_temperature = False
    pins_reference_coef = True
    # Newton steps of the gate per EM iteration (warm-started; any rise of Q keeps EM
    # monotone: generalised EM).
    newton_steps_per_iteration = 2
    # Conservative defaults: a new family must say that rescaling or shifting x is harmless.
    centres_design = False
    scales_design = False
    differentiable = True
    fits_on_blocks = False
    # Prefix of the gate's parameter names in standard-error tables.
    parameter_prefix = "gate"
    # The structural options :meth:`from_options` reads (besides ``n_experts``).
    OPTIONS = ()
    # Options a fit may set differently from its truth (a start near the truth is still
    # made of the truth's parameters).
    FIT_MAY_CHANGE = ()
    # Whether the experts are selected (argmax, top-K) on scores that include ``beta0``.
    selection_uses_intercept = True
    # Whether the logits are ``beta1_j^T x + beta0_j`` up to a common scale (a common
    # translation of the slopes then leaves the gate unchanged, and the over-specified
    # Voronoi exponents of the theory apply).
    linear_logits = False
    # The smallest temperature a fit accepts; 0 accepts any positive one.
    smallest_fitted_temperature = 0.0

    # ------------------------------------------------------------------ options
    @classmethod
    def from_options(cls, *, n_experts=None, **options):
        """Build the family from the estimator's options, validating those it uses.

        Parameters
        ----------
        n_experts : int, optional
            Number of experts, when known (some options are checked against it).
        **options
            Every gating option of :class:`~gmoe.GaussianMoERegressor` (``top_k``,
            ``topk_selection``, ``activation``); a family reads the ones it uses and
            ignores the others.

        Returns
        -------
        GatingFamily

        Notes
        -----
        By default the family is built as ``cls(**given)`` from the options it declares in
        :attr:`OPTIONS` that are given and not None; a family that validates its options,
        or gives them defaults that depend on ``n_experts``, overrides this.
        """
        return cls(**{key: options[key] for key in cls.OPTIONS
                      if options.get(key) is not None})

    def check_n_experts(self, n_experts):
        """Check the family's options against a number of experts (none by default).

        :meth:`from_options` checks them when given ``n_experts``; an instance passed as
        ``gating=`` is checked by this wherever it meets a number of experts
        (:func:`~gmoe.gates.make_gating` with ``n_experts``: the estimator's fit and
        :class:`~gmoe.MixingMeasure`).

        Parameters
        ----------
        n_experts : int

        Raises
        ------
        ValueError
            When an option does not fit ``n_experts``, with :meth:`from_options`'s message.
        """
        return None

    def options(self):
        """The family's structural options, as keyword arguments of :meth:`from_options`.

        Two families are equal when their classes and options are (:meth:`__eq__`): every
        option that changes the model must be here. By default each name in
        :attr:`OPTIONS` is read from the attribute of the same name; a family that stores
        an option under another name overrides this.

        Returns
        -------
        dict

        Raises
        ------
        AttributeError
            If an option of :attr:`OPTIONS` has no attribute of its name (and this is not
            overridden): equality would otherwise ignore it.
        """
        missing = [key for key in self.OPTIONS if not hasattr(self, key)]
        if missing:
            raise AttributeError(
                f"{type(self).__name__} declares OPTIONS {self.OPTIONS} but has no "
                f"attribute {missing[0]!r}: store each option as an attribute of its name "
                "or override options(), so that families with different options differ.")
        return {key: getattr(self, key) for key in self.OPTIONS}

    # --------------------------------------------------------------- evaluation
    @abstractmethod
    def log_gate_columns(self, ZT, params, workspace=None):
        """Log-gates, expert-major: shape (n_experts, n_samples), C-contiguous.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        params : GateParams
        workspace : Workspace, optional
            Where the result may live; a fresh array otherwise.

        Returns
        -------
        ndarray of shape (n_experts, n_samples)
            ``log g_j(x_i)``; exactly ``-inf`` where an expert's gate is 0.
        """

    def gate_columns(self, ZT, params, workspace=None):
        """:meth:`log_gate_columns`, and the gate probabilities when they come with it.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
        params : GateParams
        workspace : Workspace, optional

        Returns
        -------
        log_gate : ndarray of shape (n_experts, n_samples)
        probs : ndarray of shape (n_experts, n_samples) or None
            ``exp(log_gate)`` where the family computed it on the way (the default: None).
        """
        return self.log_gate_columns(ZT, params, workspace=workspace), None

    def log_gate(self, X, gate_coef, gate_intercept, temperature=None):
        """Log-gates ``log g(x)``, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.
        temperature : float or None, default=None
            Temperature ``tau`` (the families without one ignore it).

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        params = GateParams(np.asarray(gate_coef, dtype=np.float64),
                            np.asarray(gate_intercept, dtype=np.float64), temperature)
        return self.log_gate_columns(transposed_design(np.asarray(X, dtype=np.float64)),
                                     params).T

    # ------------------------------------------------------------------- fitting
    @abstractmethod
    def initial_gate(self, data, temperature=None):
        """A first gate for given responsibilities (the start of EM).

        Parameters
        ----------
        data : GateData
        temperature : float or None, default=None
            The temperature to start at (families with one).

        Returns
        -------
        GateParams
        """

    @abstractmethod
    def m_step(self, data, params):
        """The gate's M-step from ``params``: new parameters that do not lower the objective.

        Parameters
        ----------
        data : GateData
        params : GateParams
            The current gate (its log-gate is ``data.log_gate`` when that is given).

        Returns
        -------
        params : GateParams
        log_gate : ndarray of shape (n_experts, n_samples) or None
            The log-gate at the new parameters when the step computed it, else None.
        """

    def block_statistics(self, params):
        """Sums the gate's M-step from ``params`` will need, computed in the E-step's pass.

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        tuple or None
            ``(function, args)`` in the form of ``gmoe._blocks.e_step_block`` (the E-step
            hands their sums to :meth:`m_step` as ``data.statistics``), or None (the
            default: the M-step computes what it needs itself).
        """
        return None

    def dense_linear_logits(self, params):
        """The logits' coefficients when every expert's logit is ``theta_j^T z``, else None.

        A family whose gate is a softmax over every expert of logits linear in ``z = (x,
        1)`` returns them here; the observed information of its fits is then summed block
        by block by one compiled pass (``gmoe._observed_information``).

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        ndarray of shape (n_experts, n_features + 1) or None
            Slopes and intercept (last column) of every expert's logit; None (the
            default) when the logits are not of that form.
        """
        return None

    def n_free_parameters(self, n_experts, n_features, learn_temperature=False):
        """Number of gate parameters the data identify (what BIC and AIC count).

        The free ones under the identifiability convention, less the directions among
        them along which no density changes (:meth:`n_flat_directions`).

        Parameters
        ----------
        n_experts : int
        n_features : int
        learn_temperature : bool, default=False
            Whether the temperature is estimated.

        Returns
        -------
        int
        """
        coef_free, intercept_free = self.free_parameters(n_experts, n_features)
        tau = 1 if (learn_temperature and self.learns_temperature) else 0
        return (int(coef_free.sum() + intercept_free.sum()) + tau
                - self.n_flat_directions(n_experts, n_features))

    def n_flat_directions(self, n_experts, n_features):
        """Directions of the free gate parameters that change no density (0 here).

        A symmetry the convention does not pin: the data cannot estimate a parameter along
        it, so a parameter count for BIC leaves it out.

        Parameters
        ----------
        n_experts, n_features : int
            The model's size.

        Returns
        -------
        int
            How many such directions (their dimension).
        """
        return 0

    def free_parameters(self, n_experts, n_features):
        """Which gate slopes and intercepts are free (the rest are pinned to 0).

        None of a lone expert's: its gate is 1 whatever they are.

        Parameters
        ----------
        n_experts : int
        n_features : int

        Returns
        -------
        coef_free : ndarray of bool, shape (n_experts, n_features)
        intercept_free : ndarray of bool, shape (n_experts,)
        """
        alone = n_experts == 1
        coef_free = np.full((n_experts, n_features), not alone)
        if self.pins_reference_coef:
            coef_free[-1] = False
        intercept_free = np.ones(n_experts, dtype=bool)
        intercept_free[-1] = False
        return coef_free, intercept_free

    # Whether the temperature is a free parameter when the user asks for it to be learned.
    learns_temperature = False

    # ----------------------------------------------------------- identifiability
    def identifiable_gate(self, params):
        """The gate on the scale the data determine (see :ref:`theory-identifiability`).

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        GateParams
            The representative of ``params``'s equivalence class that comparisons with a
            truth and standard errors use; ``params`` itself by default.
        """
        return params

    def from_identifiable_gate(self, identifiable, reference):
        """A gate on ``reference``'s scale with the identifiable form ``identifiable``.

        The inverse of :meth:`identifiable_gate` along the direction the data cannot see
        (for the temperature gate: ``beta = tau * gamma`` at ``reference``'s ``tau``).

        Parameters
        ----------
        identifiable : GateParams
        reference : GateParams

        Returns
        -------
        GateParams
        """
        return identifiable

    def symmetric_images(self, params):
        """The other gates of exactly the same density, with the experts unchanged.

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        list of GateParams
            Empty by default. Comparisons with a truth take the minimum over the fit
            and its images, against the truth as given (over the truth's images for a
            fit without any).
        """
        return []

    def is_symmetric_fixed_point(self, params, atol=1e-12):
        """Whether ``params`` is its own symmetric image (the information is singular there).

        Parameters
        ----------
        params : GateParams
        atol : float, default=1e-12

        Returns
        -------
        bool
        """
        return False

    def selected_experts(self):
        """How many experts each input selects, or None when the gate is dense.

        Returns
        -------
        int or None
        """
        return None

    def selection_only(self):
        """Whether only the selection regions are identifiable (the selected weight is 1).

        Returns
        -------
        bool
        """
        return False

    def over_specified_exponents_known(self):
        """Whether the over-specified Voronoi exponents ``rbar(m)`` hold for this gate.

        They were derived for linear logits (see :ref:`theory-voronoi`); for other gates
        the user must supply them.

        Returns
        -------
        bool
        """
        return self.linear_logits

    def undefined_parameter_errors(self):
        """Per-cell parameter errors that do not exist for this gate.

        Returns
        -------
        set of str
            Names among ``'weight'``, ``'gate_coef'``, ``'gate_intercept'`` (empty by
            default).
        """
        return set()

    def theory_setting(self, over_specified):
        """The key of this gate's setting in the rate table (:ref:`theory-rates`).

        Parameters
        ----------
        over_specified : bool
            Whether more experts are fitted than the truth has.

        Returns
        -------
        str
            ``'<name>-exact'`` or ``'<name>-over'`` by default. A setting that is not one
            of :data:`gmoe.theory.SETTINGS` (a family the rate theorems do not cover)
            is reported with no theory: its slopes are fitted, none is expected.
        """
        return f"{self.name}-{'over' if over_specified else 'exact'}"

    # ---------------------------------------------------------------- inference
    def logit_derivatives(self, X, params, learn_temperature=False):
        """Logits, their first derivatives and the curvature map, for the observed information.

        Only for :attr:`differentiable` families whose gate is the softmax of the logits
        over all experts. Parameters on the identifiable scale.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        params : GateParams
            On the identifiable scale (:meth:`identifiable_gate`).
        learn_temperature : bool, default=False
            Whether ``log tau`` is a parameter.

        Returns
        -------
        logits : ndarray of shape (n_samples, n_experts)
        d_coef : ndarray of shape (n_samples, n_experts, n_features)
            ``d logits_ij / d coef_jm`` (a logit depends on its own expert's slope only).
        d_intercept : ndarray of shape (n_samples, n_experts)
            ``d logits_ij / d intercept_j``.
        d_log_temperature : ndarray of shape (n_samples, n_experts) or None
            ``d logits_ij / d log tau`` when the temperature is a parameter.
        curvature : callable or None
            ``curvature(c)`` for weights ``c`` of shape (n_samples, n_experts) returns
            ``sum_ij c_ij`` times the second derivatives of ``logits_ij``, as the blocks
            ``(coef_coef (n_experts, n_features, n_features), coef_tau (n_experts,
            n_features), intercept_tau (n_experts,), tau_tau float)``; None for logits
            linear in the parameters.
        """
        raise NotImplementedError(f"gating={self.name!r} has no observed information.")

    # ----------------------------------------------------------------- identity
    def describe(self):
        """A short human description of the family and its options.

        Returns
        -------
        str
            The name and the options, e.g. ``"topk (top_k=2, affine selection)"``.
        """
        opts = ", ".join(f"{k}={v}" for k, v in self.options().items())
        return f"{self.name} ({opts})" if opts else str(self.name)

    def __eq__(self, other):
        return type(self) is type(other) and self.options() == other.options()

    def __hash__(self):
        return hash((type(self).__name__, tuple(sorted(self.options().items()))))

    def __repr__(self):
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options().items())
        return f"{type(self).__name__}({opts})"


# --------------------------------------------------------------------------------------
# Newton machinery shared by the families.


def backtrack(evaluate, objective, max_halvings=40):
    """Step halving: the first of ``t = 1, 1/2, 1/4, ...`` that does not lower ``objective``.

    Parameters
    ----------
    evaluate : callable
        ``evaluate(t)`` returns a tuple whose first item is the objective at step ``t``.
    objective : float
        The objective at ``t = 0``.
    max_halvings : int, default=40
        Steps tried at most.

    Returns
    -------
    tuple or None
        ``evaluate``'s result at the accepted step, or None if every step lowered the
        objective (or gave a non-finite value; the floating-point warnings of such a trial
        step are silenced, since rejecting it is the answer).
    """
    t = 1.0
    for _ in range(max_halvings):
        # A trial step may leave the parameters' domain (a temperature exp(log tau) that
        # underflows to 0, logits that overflow): its non-finite objective rejects it
        # below, so numpy's warnings about it would only alarm the user.
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            result = evaluate(t)
        if np.isfinite(result[0]) and result[0] >= objective:
            return result
        t *= 0.5
    return None


def solve_newton_direction(neg_hess, grad):
    """Solve ``neg_hess @ step = grad`` for a positive (semi)definite ``neg_hess``.

    Cholesky first; a rank-deficient system (a gate slope the data cannot see, such as a
    constant feature) is regularised by an increasing ridge.

    Parameters
    ----------
    neg_hess : ndarray of shape (p, p)
    grad : ndarray of shape (p,)

    Returns
    -------
    ndarray of shape (p,)
    """
    scale = max(float(np.max(np.abs(np.diag(neg_hess)))), 1e-300)
    ridge = 0.0
    for _ in range(30):
        try:
            factor = scipy.linalg.cho_factor(neg_hess + ridge * np.eye(len(grad)),
                                             check_finite=False)
            step = scipy.linalg.cho_solve(factor, grad, check_finite=False)
            if np.all(np.isfinite(step)):
                return step
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError):
            pass
        ridge = scale * 1e-12 if ridge == 0.0 else ridge * 10.0
    return grad / scale
