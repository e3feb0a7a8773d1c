"""GaussianMoERegressor: maximum-likelihood fitting of a Gaussian mixture of experts by EM."""

import contextlib
import functools
import itertools
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _blocks
from ._em import (
    EMRunMixin,
    _DegenerateRun,
    _Params,
    _single_threaded_blas,
)
from ._estimator_parameters import check_fitted_temperature, check_parameters
from ._fit_warnings import warn_about_the_fit
from ._passes import prepare
from ._starts import draw_labels
from ._validation import check_sample_weight, rows_with_weight, weighted_total
from .exceptions import DegenerateExpertWarning, GMoEWarning
from .experts import compute_expert_means
from .model import MixingMeasure, _e_step_arrays, count_parameters, sample_moe
from .scoring import log_likelihood_scorer  # noqa: F401 (also gmoe.estimator's)
from .utils import check_random_state

__all__ = ["GaussianMoERegressor", "log_likelihood_scorer"]

# Label smoothing of hard initial assignments, so that the first gate M-step is finite even
# when the initial clusters are linearly separable.
_INIT_SMOOTHING = 0.2
# k-means starts cluster at most this many rows.
_KMEANS_MAX_ROWS = 5000
# init_params='short_em': short runs per start asked for (n_init), their EM steps, and
# the runs continued to convergence, per start asked for (at least one).
_SHORT_RUNS_PER_START = 4
_SHORT_EM_STEPS = 10
_FULL_RUNS_PER_START = 1.0
# Extra starts tried, beyond n_init, when on_degenerate="restart" discards runs.
_MAX_EXTRA_RESTARTS = 10


class GaussianMoERegressor(RegressorMixin, EMRunMixin, BaseEstimator):
    r"""Gaussian mixture-of-experts regression fitted by maximum likelihood (EM).

    .. math::

        p(y \mid x) = \sum_{i=1}^{k} g_i(x)\, \mathcal{N}(y \mid a_i^\top x + b_i, \nu_i)

    with a softmax, top-K sparse softmax, dense-to-sparse (temperature) or activation
    gate ``g`` (:ref:`theory-gates`). The E-step runs numba kernels and numpy's vectorised ``exp``
    on expert-major arrays; the experts' M-step is weighted least squares with a relative
    variance floor; the gate's M-step is Newton ascent of its concave objective with step
    halving, warm-started, so the log-likelihood never decreases. EM runs on a centred
    and scaled copy of ``X`` and ``y`` and maps the parameters back, so an affine
    rescaling of a column gives the same fit (the activation gate, but for the identity
    activation, and the linear top-K selection, which have no intercept inside ``sigma``
    or the selection score, are scaled but not centred).

    Parameters
    ----------
    n_experts : int, default=2
        Number of experts ``k``.
    gating : {'softmax', 'topk', 'temperature', 'activation'}, default='softmax'
        Gating family.
    top_k : int, default=None
        Active experts per input for ``gating='topk'`` (``1 <= top_k <= n_experts``).
    topk_selection : {'affine', 'linear'}, default='affine'
        Selection score of the top-K gate: ``beta1^T x + beta0`` or ``beta1^T x``.
    activation : {'tanh', 'sigmoid', 'gelu', 'identity'}, default='tanh'
        Activation of ``gating='activation'``.
    temperature : float, default=1.0
        Temperature ``tau`` of the temperature families. For 'temperature' it is held
        at this value (or at the start's, when ``init_params`` is a MixingMeasure): the
        data determine only ``gamma = (beta1, beta0) / tau``. 'activation' starts from
        it (from a power of 1/2 times it when it is learned and the start saturates the
        activation, as on a design far from 0; see the user guide's starts) and needs it
        at least 1e-100.
    learn_temperature : bool, default=True
        Whether the activation gate learns ``tau``; ignored by the other families and by
        the identity activation (its ``tau`` is the temperature gate's, redundant with a
        common scale of the gate parameters).
    tol : float, default=1e-4
        Stop when the predicted gain to the maximum, the Newton decrement
        ``g' I^{-1} g / 2`` of the total (weighted) log-likelihood ``L`` (``g`` its
        gradient, ``I`` its observed information), is at most ``tol``, in total
        log-likelihood units, and ``L`` gains at most ``tol`` along any direction where it
        curves upward. Its meaning does not depend on ``n``. See Notes.
    max_iter : int, default=500
        EM steps at most, per start (a SQUAREM cycle counts as three, a move proposed by
        the stopping rule as one).
    n_init : int, default=5
        Number of runs to convergence, each from a different start; the best
        log-likelihood is kept. For 'short_em', ``4 * n_init`` short runs choose the
        ``n_init`` starts.
    init_params : {'random', 'kmeans', 'short_em'} or MixingMeasure, default='random'
        How each start's partition of the rows is drawn (the experts are then fitted to
        it, the gate to its labels). 'random': the nearest of ``n_experts`` random rows in
        the standardised ``(x, y)``. 'kmeans': k-means on the standardised ``(x, y)``; the
        first start on a subsample of at most 5000 rows, the others on random halves with
        randomly weighted coordinates, so that they differ. 'short_em': ``4 * n_init``
        partitions, 'kmeans' and 'random' in turn, each run for 10 EM steps; the
        ``n_init`` that lead are continued to convergence. A MixingMeasure is the start
        itself (one run). The default was chosen on ``benchmarks/bench_starts.py``: on its
        trap designs every strategy reached the best-known log-likelihood, 'random' at the
        lowest cost; on its stress designs 'random' reached it in 55 % of the fits,
        'kmeans' in 32 %, 'short_em' (at two to three times the cost) in 58 %.
    reg_var : float, default=1e-6
        Relative variance floor: every variance is at least ``reg_var * v``, with ``v``
        the weighted variance of ``y`` (1 when it is 0).
    on_degenerate : {'warn', 'restart'}, default='warn'
        What to do when an expert's weight or variance collapses: warn and keep going,
        or discard the run and start again.
    random_state : int, RandomState instance, Generator or None, default=None
        Seeds the starts; the same value gives the same fit.
    warm_start : bool, default=False
        Start from the previous fit's parameters (one start).
    verbose : int, default=0
        Print the log-likelihood every iteration when > 1, per start when 1.
    acceleration : {'squarem', None}, default='squarem'
        Accelerate EM by SQUAREM (Varadhan & Roland 2008, step length S3) with its global
        safeguard, so that the log-likelihood never decreases, while EM is slow (each rise
        of the log-likelihood at least 0.3 times the one before); None runs plain EM.
    n_threads : int or None, default=None
        Threads of the passes over the rows: None is every usable core, capped by the
        BLAS and OpenMP thread limits (``threadpoolctl``, ``OMP_NUM_THREADS``); ``-1`` is
        every core. The rows are summed in blocks of a fixed size (set by the data's
        shape) in a fixed order, so the fit is bit for bit the same on any number of
        threads. Used by the gates that fit block by block ('softmax', 'temperature').

    Attributes
    ----------
    gate_coef_ : ndarray of shape (n_experts, n_features)
        Gate slopes ``beta1`` (last row 0 except for 'activation').
    gate_intercept_ : ndarray of shape (n_experts,)
        Gate intercepts ``beta0`` (last entry 0).
    temperature_ : float or None
        Temperature ``tau`` of the temperature families, else None.
    expert_coef_ : ndarray of shape (n_experts, n_features)
    expert_intercept_ : ndarray of shape (n_experts,)
    expert_var_ : ndarray of shape (n_experts,)
        Expert variances (not standard deviations).
    mixing_measure_ : MixingMeasure
        The fitted model.
    converged_ : bool
        Whether the best start met the stopping rule (``tol``) within ``max_iter``.
    convergence_gap_ : float
        The predicted gain of ``L`` (total log-likelihood units) still to be had at the
        returned parameters: the Newton decrement, or the rise found along upward curvature
        (top-K: or by scaling gates together) when larger; at most ``tol`` if converged.
    n_iter_ : int
        EM steps of the best start.
    lower_bound_ : float
        Final mean (weighted) log-likelihood of the best start.
    lower_bounds_ : ndarray of shape (n_iter\_ + 1,)
        Mean log-likelihood of the best point reached after each EM step of the best start
        (the first entry is the start's); non-decreasing.
    init_log_likelihoods_ : ndarray of shape (n_starts,)
        Final mean log-likelihood of every start tried.
    degenerate_experts_ : list of int
        Experts of the best start whose weight or variance collapsed.
    n_features_in_ : int
    fit_time_ : float
        Seconds spent in the last call to :meth:`fit`.

    Notes
    -----
    Stopping rule. The Newton decrement is computed with the analytic score and observed
    information of :mod:`gmoe.inference`, the information taken in its correlation form
    with its eigenvalues clipped from below at ``1e-10`` times the largest (in absolute
    value): an over-specified fit is singular at its maximum, and a flat direction then
    gets a large predicted gain instead of an infinite one. Along a direction of negative
    curvature (a saddle, or the plateaus of over-specified fits) the quadratic model
    predicts nothing: ``L`` itself is searched along it, and the run has converged only
    when that search gains at most ``tol`` too. The last step (an EM step or a SQUAREM
    cycle) must also have raised ``L`` by at most ``tol``, unless it was a Newton move the
    quadratic model predicted where the information has no near-flat direction (after a
    check met the rule otherwise, EM goes on unchecked until a step gains at most
    ``tol``). A variance at its floor is a bound and is
    left out. The check costs a few EM steps, so it runs only once an EM step has raised
    ``L`` by at most ``max(tol, 1e-6 |L|)`` (a relative-change filter), and then again
    after 1, 2, 4, ..., at most 16 iterations. A
    check that fails proposes a move, the Newton step (halved until ``L`` rises) or the
    best point of the curvature search, taken when it raises ``L``: it crosses the
    stretches where EM crawls and leaves saddles EM never leaves. For ``gating='topk'``
    with ``top_k < n_experts`` the log-likelihood is not differentiable in the gate: the
    decrement is taken with every row's active set held; at a kink (the Newton step,
    halved down to 1/4096, never raises ``L``: the gate sits on a selection boundary,
    where its held gradient need not vanish) that of the experts alone, which never move
    the active sets; and ``L`` must also have risen by at most ``tol`` over the last 5
    iterations (the gate's moves across the selection).

    Identifiability (:ref:`theory-identifiability`): the last expert is the gate's reference. For
    ``gating='temperature'`` only ``gamma = (beta1, beta0) / tau`` is determined by the
    data: ``(beta1, beta0, tau)`` is known up to a common positive scale, so the reported
    ``gate_coef_`` and ``temperature_`` are set by the start. Use
    ``mixing_measure_.identifiable()`` to compare fits.

    References
    ----------
    .. [1] Nguyen, Nguyen & Ho (2023). Demystifying softmax gating function in Gaussian
       mixture of experts. NeurIPS.
    .. [2] Varadhan & Roland (2008). Simple and globally convergent methods for
       accelerating the convergence of any EM algorithm. Scandinavian Journal of
       Statistics 35, 335-353.

    Examples
    --------
    >>> import gmoe
    >>> truth = gmoe.MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]],
    ...                            [1.0, -1.0], [0.05, 0.05])
    >>> X = gmoe.make_design(2000, "uniform", random_state=0)
    >>> y = gmoe.sample_moe(truth, X, random_state=1)
    >>> est = gmoe.GaussianMoERegressor(n_experts=2, random_state=0).fit(X, y)
    >>> est.converged_
    True
    """

    def __init__(self, n_experts=2, *, gating="softmax", top_k=None, topk_selection="affine",
                 activation="tanh", temperature=1.0, learn_temperature=True, tol=1e-4,
                 max_iter=500, n_init=5, init_params="random", reg_var=1e-6,
                 on_degenerate="warn", random_state=None, warm_start=False, verbose=0,
                 acceleration="squarem", n_threads=None):
        self.n_experts = n_experts
        self.gating = gating
        self.top_k = top_k
        self.topk_selection = topk_selection
        self.activation = activation
        self.temperature = temperature
        self.learn_temperature = learn_temperature
        self.tol = tol
        self.max_iter = max_iter
        self.n_init = n_init
        self.init_params = init_params
        self.reg_var = reg_var
        self.on_degenerate = on_degenerate
        self.random_state = random_state
        self.warm_start = warm_start
        self.verbose = verbose
        self.acceleration = acceleration
        self.n_threads = n_threads

    # ------------------------------------------------------------ validation
    def _check_parameters(self):
        """Every constructor parameter checked; returns the gating family they name."""
        return check_parameters(self)

    def _n_parameters(self):
        """Number of free parameters of the fitted model (for BIC/AIC)."""
        return self._count_parameters(self.mixing_measure_.family, self.n_features_in_)

    def _learns_temperature(self, family):
        return family.learns_temperature and bool(self.learn_temperature)

    # --------------------------------------------------------------- starts
    def _start_from_measure(self, start, name, family, n_features):
        """A given start's parameters, checked against the estimator and the data.

        ``start`` is ``init_params``, or the previous fit under ``warm_start``; ``name``
        says which in the errors.
        """
        if start.n_experts != self.n_experts or start.n_features != n_features:
            raise ValueError(
                f"{name} must have n_experts and n_features matching the estimator and X: "
                f"expected ({self.n_experts}, {n_features}), got ({start.n_experts}, "
                f"{start.n_features}).")
        if start.family != family:
            raise ValueError(f"{name} must use the estimator's gating {family!r}, got "
                             f"{start.family!r}.")
        if family.uses_temperature:
            check_fitted_temperature(family, start.temperature, f"{name}'s temperature")
        if start.is_symmetric_fixed_point():
            raise ValueError(
                f"{name} is a two-expert tanh/sigmoid gate with gate_coef[0] = "
                "-gate_coef[1], a fixed point of the gate's symmetry where the Fisher "
                "information is singular; perturb the gate slopes.")
        return _Params.from_measure(start)

    def _start_from_labels(self, family, passes, var_floor, labels, temperature):
        # Smoothed one-hot responsibilities of the labels: the experts' least squares, and
        # the family's first gate as it is: a gate M-step here can drive a tanh/sigmoid
        # gate onto its symmetric fixed point beta1_1 = -beta1_2, which EM never leaves
        # (see the theory page's identifiability section).
        return passes.start_from_labels(labels, var_floor, temperature, _INIT_SMOOTHING)

    def _initial_labels(self, kind, index, data, sample_weight, rng):
        """The partition of start ``index`` (gmoe._starts): every start draws its own."""
        return draw_labels(kind, index, data, sample_weight, self.n_experts, rng)

    def _initial_temperature(self, family):
        return float(self.temperature) if family.uses_temperature else None

    # ----------------------------------------------------------------- fit
    def _fit_starts(self, family, passes, n_features, sample_weight, var_floor, conditioning):
        """EM from every start; returns the best run and each start's log-likelihood.

        ``passes`` hold the data in the fit's internal units (``conditioning``), and so are
        the returned parameters and log-likelihoods.
        """
        rng = check_random_state(self.random_state)
        warm = self.warm_start and hasattr(self, "mixing_measure_")
        given = warm or isinstance(self.init_params, MixingMeasure)
        run = functools.partial(self._em_iterations, family, passes=passes,
                                var_floor=var_floor)
        if given:
            starts = None
        elif self.init_params == "short_em":
            starts = self._short_em_starts(family, passes, sample_weight, var_floor, rng, run)
        else:
            data = passes.standardised()

            def draw(index):
                labels = self._initial_labels(self.init_params, index, data, sample_weight,
                                              rng)
                return self._start_from_labels(family, passes, var_floor, labels,
                                               self._initial_temperature(family))

            starts = map(draw, itertools.count())
        if given:
            n_starts = 1
        elif self.init_params == "short_em":
            n_starts = max(1, int(round(_FULL_RUNS_PER_START * self.n_init)))
        else:
            n_starts = self.n_init
        best = None
        start_log_liks = []
        attempts = 0
        max_attempts = n_starts + (_MAX_EXTRA_RESTARTS if self.on_degenerate == "restart" else 0)
        fallback = None
        while len(start_log_liks) < n_starts and attempts < max_attempts:
            attempts += 1
            if warm:
                params = conditioning.to_internal(self._start_from_measure(
                    self.mixing_measure_, "warm_start=True's start (the previous fit)",
                    family, n_features))
            elif isinstance(self.init_params, MixingMeasure):
                params = conditioning.to_internal(self._start_from_measure(
                    self.init_params, "init_params", family, n_features))
            else:
                params = next(starts, None)
                if params is None:  # 'short_em' ran out of candidates
                    break
            try:
                result = run(params)
            except _DegenerateRun as err:
                if self.verbose:
                    print(f"start {attempts}: experts {err.args[0]} collapsed; restarting")
                if fallback is None:
                    fallback = params
                if given:
                    break
                continue
            start_log_liks.append(result[1][-1])
            if self.verbose:
                print(f"start {attempts}: mean log-likelihood {result[1][-1]:.10g}, "
                      f"{result[3]} iterations, converged={result[2]}")
            if best is None or result[1][-1] > best[1][-1]:
                best = result
        if best is None and fallback is None:  # no start at all: every short run failed
            raise FloatingPointError(
                "init_params='short_em' found no start: every short EM run overflowed. "
                "Check X and y for extreme values, or use init_params='kmeans'.")
        if best is None:
            # Every start degenerated under on_degenerate="restart": report the first one.
            warnings.warn("Every start had a collapsing expert; keeping the first start's fit. "
                          "Use fewer experts or a larger reg_var.", DegenerateExpertWarning,
                          stacklevel=2)
            saved, self.on_degenerate = self.on_degenerate, "warn"
            try:
                best = run(fallback)
            finally:
                self.on_degenerate = saved
            start_log_liks.append(best[1][-1])

        return best, start_log_liks

    def _short_em_starts(self, family, passes, sample_weight, var_floor, rng, run):
        """The starts of 'short_em', best first: the ends of short EM runs.

        ``_SHORT_RUNS_PER_START * n_init`` partitions, 'kmeans' and 'random' in turn, each
        run for ``_SHORT_EM_STEPS`` EM steps without the stopping rule; their end points,
        by log-likelihood, are the starts (the caller runs the first ``n_init`` to
        convergence, and takes the next ones when a run is discarded). A short run that
        collapses (under ``on_degenerate='restart'``) is dropped; if every one does, the
        first one's start is the only start (its full run collapses too, and the caller
        keeps it with a warning, as for the other kinds of start).
        """
        data = passes.standardised()
        short = []
        first_collapsed = None
        kinds = ("kmeans", "random")
        for index in range(_SHORT_RUNS_PER_START * self.n_init):
            kind = kinds[index % 2]
            labels = self._initial_labels(kind, index // 2, data, sample_weight, rng)
            params = self._start_from_labels(family, passes, var_floor, labels,
                                             self._initial_temperature(family))
            try:
                result = run(params, max_iter=_SHORT_EM_STEPS, stop=False)
            except _DegenerateRun:
                first_collapsed = params if first_collapsed is None else first_collapsed
                continue
            except FloatingPointError:
                continue
            short.append((result[1][-1], index, result[0]))
        if not short and first_collapsed is not None:
            return iter([first_collapsed])
        short.sort(key=lambda item: (-item[0], item[1]))
        return iter([params for _, _, params in short])

    def fit(self, X, y, sample_weight=None):
        """Fit the model by EM from ``n_init`` starts, keeping the best.

        Parameters
        ----------
        X : array-like or Dask array of shape (n_samples, n_features)
            A Dask array (chunked by rows; ``y`` and ``sample_weight`` alike or NumPy)
            stays where it is: each pass sums its chunks' statistics there ('softmax' and
            'temperature' gates).
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative frequency weights of the rows in the log-likelihood: a weight of
            2 counts a row twice (the fit equals the fit to repeated rows). ``tol`` is in
            units of the weighted total log-likelihood, so weights must be on the scale of
            counts: rescale importance weights to average 1. A row of weight 0 is left
            out (the fit is that of the other rows).

        Returns
        -------
        self : GaussianMoERegressor
        """
        # A fit that raises (bad input, an interrupt) leaves the previous fit as it was (a
        # with block, not a wrapper, so that the warnings' stack levels stay the caller's).
        with self._previous_fit_kept_on_error():
            started = time.perf_counter()
            family = self._check_parameters()
            # Read before BLAS is held to one thread: the caller's limits cap the default.
            n_threads = _blocks.resolve_n_threads(self.n_threads)
            rows = None
            if _blocks.is_dask_array(X):
                # Dask arrays stay where they are: every pass runs on their chunks (gmoe._dask).
                from ._dask import DaskRowBlocks

                rows = DaskRowBlocks(X, y, sample_weight, self.n_experts, family)
                self.n_features_in_ = rows.n_features
                self.__dict__.pop("feature_names_in_", None)
                X = y = sample_weight = None
                n_samples, n_features = rows.n_samples, rows.n_features
                n_used, y_constant = rows.n_positive, rows.y_range == 0
                total_weight = rows.total_weight
            else:
                X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
                X = np.ascontiguousarray(X)
                y = np.ascontiguousarray(y, dtype=np.float64)
                n_samples, n_features = X.shape
                sample_weight = check_sample_weight(sample_weight, n_samples)
                X, y, sample_weight = rows_with_weight(X, y, sample_weight)
                n_used, y_constant = len(y), np.ptp(y) == 0
                total_weight = float(np.sum(sample_weight))
            if self.n_experts > n_samples:
                raise ValueError(f"Expected n_samples >= n_experts, got n_experts="
                                 f"{self.n_experts}, n_samples={n_samples}.")
            if self.n_experts > n_used:  # rows of weight 0 are left out
                raise ValueError(f"Expected at least n_experts rows of positive weight, got "
                                 f"n_experts={self.n_experts} and {n_used} such rows.")
            n_params = self._count_parameters(family, n_features)
            if n_used < n_params:
                warnings.warn(
                    f"Fewer samples with positive weight ({n_used}) than parameters to "
                    f"estimate ({n_params} for n_experts={self.n_experts}, n_features="
                    f"{n_features}): the "
                    "maximum-likelihood estimate is not unique and variances may sit at the floor. "
                    "Use fewer experts or more data.", DegenerateExpertWarning, stacklevel=2)
            elif total_weight < n_params:
                # Frequency weights: tol is in units of the weighted total log-likelihood, so
                # weights scaled far below counts make any step look converged.
                warnings.warn(
                    f"sample_weight sums to {total_weight:.3g}, less than the {n_params} "
                    "parameters to estimate: the weights count rows (a weight of 2 is a row "
                    "seen twice), and tol is in units of the weighted total log-likelihood, so "
                    "on this scale EM stops far from the maximum. Scale the weights to counts "
                    "(e.g. to average 1).",
                    DegenerateExpertWarning, stacklevel=2)
            if y_constant:
                warnings.warn("y is constant: every expert's variance sits at the floor "
                              "reg_var (relative to 1); the likelihood is unbounded.",
                              DegenerateExpertWarning, stacklevel=2)
            with _single_threaded_blas():
                # EM runs on a centred and scaled design and response (gmoe._conditioning), so
                # that an affine rescaling of a column of X, or of y, gives the same fit; its
                # passes walk the rows block by block where the gating family allows.
                passes, conditioning, y_variance = prepare(
                    family, X, y, sample_weight, self.n_experts, n_threads=n_threads,
                    learn_temperature=self._learns_temperature(family),
                    gate_steps=family.newton_steps_per_iteration, rows=rows)
                # The floor is relative to the variance of y, the same in either units.
                var_floor = max(self.reg_var * y_variance, np.finfo(np.float64).tiny)
                try:
                    best, start_log_liks = self._fit_starts(family, passes, n_features,
                                                            sample_weight, var_floor, conditioning)
                    params, trace, converged, n_iter, degenerate, rule = best
                    decrement = rule.final(params)
                finally:
                    passes.close()
            shift = conditioning.log_lik_shift
            self._set_fitted(family, conditioning.to_original(params), trace + shift, converged,
                             n_iter, degenerate, np.asarray(start_log_liks) + shift)
            self.convergence_gap_ = decrement.predicted_gain
            self.fit_time_ = time.perf_counter() - started
        # Warned once the fit is kept: a warning turned into an error must not undo it.
        warn_about_the_fit(self.mixing_measure_, degenerate, converged, decrement, self.tol,
                           self.max_iter, stacklevel=3)
        return self

    @contextlib.contextmanager
    def _previous_fit_kept_on_error(self):
        """Restore the fitted attributes (``name_``) as they were if the block raises."""
        def fitted():
            return [name for name in vars(self)
                    if name.endswith("_") and not name.startswith("__")]

        previous = {name: getattr(self, name) for name in fitted()}
        try:
            yield
        except BaseException:
            for name in fitted():
                delattr(self, name)
            vars(self).update(previous)
            raise

    def _count_parameters(self, family, n_features):
        return count_parameters(family, self.n_experts, n_features,
                                self._learns_temperature(family))

    def _set_fitted(self, family, params, trace, converged, n_iter, degenerate, start_log_liks):
        self._set_measure(params.to_measure(family))
        self.converged_ = bool(converged)
        self.n_iter_ = int(n_iter)
        self.lower_bounds_ = trace
        self.lower_bound_ = float(trace[-1])
        self.init_log_likelihoods_ = np.asarray(start_log_liks)
        self.degenerate_experts_ = list(degenerate)

    def _set_measure(self, measure):
        self.mixing_measure_ = measure
        self.gate_coef_ = np.array(measure.gate_coef)
        self.gate_intercept_ = np.array(measure.gate_intercept)
        self.temperature_ = measure.temperature
        self.expert_coef_ = np.array(measure.expert_coef)
        self.expert_intercept_ = np.array(measure.expert_intercept)
        self.expert_var_ = np.array(measure.expert_var)

    # ------------------------------------------------------------ predictions
    def _check_X(self, X):
        check_is_fitted(self, "mixing_measure_")
        X = validate_data(self, X, reset=False, dtype=np.float64)
        return np.ascontiguousarray(X)

    def _check_Xy(self, X, y):
        check_is_fitted(self, "mixing_measure_")
        X, y = validate_data(self, X, y, reset=False, y_numeric=True, dtype=np.float64)
        return np.ascontiguousarray(X), np.ascontiguousarray(y, dtype=np.float64)

    # The prediction methods work on chunks of rows: their temporaries stay bounded.
    def _log_gate(self, X):
        m = self.mixing_measure_
        return _blocks.evaluate_in_chunks(
            lambda rows: m.family.log_gate(rows, m.gate_coef, m.gate_intercept, m.temperature),
            (X,))

    def predict_proba(self, X):
        """Gate probabilities ``g_i(x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        log_gate = self._log_gate(self._check_X(X))
        return np.exp(log_gate, out=log_gate)

    def predict(self, X):
        """Conditional mean ``E[y | x] = sum_i g_i(x) (a_i^T x + b_i)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._check_X(X)
        m = self.mixing_measure_

        def mean(rows):
            gate = np.exp(self._log_gate(rows))
            return np.sum(gate * compute_expert_means(rows, m.expert_coef, m.expert_intercept),
                          axis=1)

        return _blocks.evaluate_in_chunks(mean, (X,))

    def _e_step_rows(self, X, y, output):
        """Responsibilities (``output=0``) or log-likelihoods (``output=1``) of every row."""
        m = self.mixing_measure_
        return _blocks.evaluate_in_chunks(
            lambda rows, ys: _e_step_arrays(rows, ys, self._log_gate(rows), m.expert_coef,
                                            m.expert_intercept, m.expert_var)[output], (X, y))

    def predict_responsibilities(self, X, y):
        """Posterior probability of each expert given ``(x, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        y : array-like of shape (n_samples,)
            Target values.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
            NaN, with a warning, on a row whose ``y`` is so far from every expert that its
            log density is -inf under all of them (beyond float64's reach;
            ``score_samples`` is -inf there).
        """
        X, y = self._check_Xy(X, y)
        resp = self._e_step_rows(X, y, 0)
        lost = np.flatnonzero(resp.sum(axis=1) == 0)
        if lost.size:
            resp[lost] = np.nan
            warnings.warn(f"{lost.size} row(s) have no responsibilities (NaN), the first "
                          f"y[{lost[0]}] = {float(y[lost[0]])!r}: its log density is -inf "
                          "under every expert (beyond float64's reach of all of them).",
                          GMoEWarning, stacklevel=2)
        return resp

    def score_samples(self, X, y):
        """Conditional log-density ``log p(y_i | x_i)`` of every row.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        y : array-like of shape (n_samples,)
            Target values.

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X, y = self._check_Xy(X, y)
        return self._e_step_rows(X, y, 1)

    def log_likelihood(self, X, y, sample_weight=None):
        """Total (weighted) conditional log-likelihood of ``(X, y)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Weight of each row; ``None`` weighs every row 1.

        Returns
        -------
        float
            ``sum_i w_i log p(y_i | x_i)``.
        """
        log_lik = self.score_samples(X, y)
        sample_weight = check_sample_weight(sample_weight, log_lik.shape[0])
        return weighted_total(sample_weight, log_lik)

    def bic(self, X, y, sample_weight=None):
        """Bayesian information criterion ``-2 L + p log n`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Frequency weights, as in :meth:`fit`: ``L`` is weighted and ``n`` their sum.

        Returns
        -------
        float
            The BIC, with ``p`` the number of parameters the data identify and ``n`` the
            number of rows (the weights' sum).
        """
        weights = check_sample_weight(sample_weight, np.asarray(X).shape[0])
        log_lik = self.log_likelihood(X, y, weights)
        return -2.0 * log_lik + self._n_parameters() * np.log(weights.sum())

    def aic(self, X, y, sample_weight=None):
        """Akaike information criterion ``-2 L + 2 p`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        y : array-like of shape (n_samples,)
            Target values.
        sample_weight : array-like of shape (n_samples,), default=None
            Frequency weights, as in :meth:`fit` (``L`` is weighted).

        Returns
        -------
        float
            The AIC, with ``p`` the number of parameters the data identify.
        """
        return -2.0 * self.log_likelihood(X, y, sample_weight) + 2.0 * self._n_parameters()

    def sample(self, X, random_state=None):
        """Draw ``y`` from the fitted conditional density at every row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        random_state : int, RandomState instance, Generator or None, default=None
            Seed or generator of the draws (see :func:`gmoe.utils.check_random_state`).

        Returns
        -------
        ndarray of shape (n_samples,)
        """
        X = self._check_X(X)
        return sample_moe(self.mixing_measure_, X, random_state=random_state)

    def predict_distribution(self, X, *, chunk_size=None):
        """The predictive mixture ``p(y | x)`` at every row of ``X``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        chunk_size : int, optional
            Rows per block in the mixture's vectorised methods (memory bound).

        Returns
        -------
        PredictiveMixture
            Mean, variance, quantiles, intervals, densities and draws of ``y`` given ``x``.
        """
        from .predictive import predictive_distribution

        X = self._check_X(X)
        return predictive_distribution(self.mixing_measure_, X, chunk_size=chunk_size)

    def align_to(self, reference):
        """Relabel the fitted experts to match ``reference`` (in place; same density).

        Parameters
        ----------
        reference : MixingMeasure or fitted GaussianMoERegressor
            Same ``n_experts`` and ``n_features``.

        Returns
        -------
        self : GaussianMoERegressor
            With ``alignment_permutation_``: new expert ``j`` is old expert
            ``alignment_permutation_[j]``. See :func:`gmoe.alignment.align_to`.
        """
        from .alignment import align_to

        check_is_fitted(self, "mixing_measure_")
        aligned, perm = align_to(self.mixing_measure_, reference)
        self._set_measure(aligned)
        self.alignment_permutation_ = perm
        return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        return tags

