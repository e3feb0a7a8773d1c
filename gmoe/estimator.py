"""GaussianMoERegressor: maximum-likelihood fitting of a Gaussian mixture of experts by EM."""

import numbers
import time
import warnings

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.cluster import KMeans
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted, validate_data

from . import _blocks
from ._validation import check_option
from .exceptions import DegenerateExpertWarning
from .experts import GAUSSIAN_LINEAR, ExpertParams, compute_expert_means
from .gates import GateData, GateParams, make_gating
from .model import MixingMeasure, compute_e_step, sample_moe
from .utils import check_random_state

__all__ = ["GaussianMoERegressor", "log_likelihood_scorer"]

# Label smoothing of hard initial assignments, so that the first gate M-step is finite even
# when the initial clusters are linearly separable.
_INIT_SMOOTHING = 0.2
# An expert whose share of the total weight falls below this is numerically empty.
_EMPTY_SHARE = 1e-8
# k-means starts cluster at most this many rows.
_KMEANS_MAX_ROWS = 5000
# Newton steps of the gate per EM iteration: warm-started, a couple of steps reach the
# M-step's optimum closely, and any rise of Q keeps EM monotone (generalised EM).
_GATE_STEPS_PER_ITERATION = 2
# Extra starts tried, beyond n_init, when on_degenerate="restart" discards runs.
_MAX_EXTRA_RESTARTS = 10


class _DegenerateRun(Exception):
    """Raised inside one EM run when ``on_degenerate='restart'`` discards it."""


class GaussianMoERegressor(RegressorMixin, BaseEstimator):
    r"""Gaussian mixture-of-experts regression fitted by maximum likelihood (EM).

    .. math::

        p(y \mid x) = \sum_{i=1}^{k} g_i(x)\, \mathcal{N}(y \mid a_i^\top x + b_i, \nu_i)

    with a softmax, top-K sparse softmax, dense-to-sparse (temperature) or activation
    gate ``g`` (SPEC 2.1). The E-step runs numba kernels and numpy's vectorised ``exp``
    on expert-major arrays; the experts' M-step is weighted least squares with a relative
    variance floor; the gate's M-step is Newton ascent of its concave objective with step
    halving, warm-started, so the log-likelihood never decreases.

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
        data determine only ``gamma = (beta1, beta0) / tau``.
    learn_temperature : bool, default=True
        Whether the activation gate learns ``tau``; ignored by the other families.
    tol : float, default=1e-6
        Stop when the relative change of the log-likelihood falls below ``tol``.
    max_iter : int, default=500
        EM iterations at most, per start.
    n_init : int, default=5
        Number of starts; the best log-likelihood is kept.
    init_params : {'kmeans', 'random'} or MixingMeasure, default='kmeans'
        'kmeans' clusters the standardised ``(x, y)``; 'random' assigns each row to the
        nearest of ``n_experts`` random rows; a MixingMeasure is used as the start.
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
    n_threads : int or None, default=None
        Threads of the passes over the rows: None is every core, capped by the BLAS and
        OpenMP thread limits (``threadpoolctl``, ``OMP_NUM_THREADS``); ``-1`` is every core.
        Rows are summed in blocks of a fixed size (by the data's shape) in a fixed order,
        so the fit is bit for bit the same on any number of threads.

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
        Whether the best start met ``tol`` within ``max_iter``.
    n_iter_ : int
        EM iterations of the best start.
    lower_bound_ : float
        Final mean (weighted) log-likelihood of the best start.
    lower_bounds_ : ndarray
        Mean log-likelihood after each iteration of the best start (the first entry is
        the start's).
    init_log_likelihoods_ : ndarray of shape (n_starts,)
        Final mean log-likelihood of every start tried.
    degenerate_experts_ : list of int
        Experts of the best start whose weight or variance collapsed.
    n_features_in_ : int
    fit_time_ : float
        Seconds spent in the last call to :meth:`fit`.

    Notes
    -----
    Identifiability (SPEC 2.2): the last expert is the gate's reference. For
    ``gating='temperature'`` only ``gamma = (beta1, beta0) / tau`` is determined by the
    data: ``(beta1, beta0, tau)`` is known up to a common positive scale, so the reported
    ``gate_coef_`` and ``temperature_`` are set by the start. Use
    ``mixing_measure_.identifiable()`` to compare fits.

    References
    ----------
    .. [1] Nguyen, Nguyen & Ho (2023). Demystifying softmax gating function in Gaussian
       mixture of experts. NeurIPS.

    Examples
    --------
    >>> import gmoe
    >>> truth = gmoe.MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]],
    ...                            [1.0, -1.0], [0.05, 0.05])
    >>> X = gmoe.make_design(2000, "uniform", random_state=0)
    >>> y = gmoe.sample_moe(truth, X, random_state=0)
    >>> est = gmoe.GaussianMoERegressor(n_experts=2, random_state=0).fit(X, y)
    >>> est.converged_
    True
    """

    def __init__(self, n_experts=2, *, gating="softmax", top_k=None, topk_selection="affine",
                 activation="tanh", temperature=1.0, learn_temperature=True, tol=1e-6,
                 max_iter=500, n_init=5, init_params="kmeans", reg_var=1e-6,
                 on_degenerate="warn", random_state=None, warm_start=False, verbose=0,
                 n_threads=None):
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
        self.n_threads = n_threads

    # ------------------------------------------------------------ validation
    def _check_parameters(self):
        def check_int(name, low):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {name}={value!r}.")

        def check_real(name, *, positive):
            value = getattr(self, name)
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) \
                and np.isfinite(value) and (value > 0 if positive else value >= 0)
            if not ok:
                what = "> 0" if positive else ">= 0"
                raise ValueError(f"{name} must be a finite number {what}, got {name}={value!r}.")

        check_int("n_experts", 1)
        check_int("max_iter", 1)
        check_int("n_init", 1)
        check_real("tol", positive=False)
        check_real("reg_var", positive=False)
        check_option(self.on_degenerate, "on_degenerate", ("warn", "restart"))
        family = make_gating(self.gating, top_k=self.top_k, topk_selection=self.topk_selection,
                             activation=self.activation, n_experts=self.n_experts)
        if family.uses_temperature:
            check_real("temperature", positive=True)
        if isinstance(self.init_params, str):
            check_option(self.init_params, "init_params", ("kmeans", "random"))
        elif not isinstance(self.init_params, MixingMeasure):
            raise ValueError("init_params must be 'kmeans', 'random' or a MixingMeasure, got "
                             f"{type(self.init_params).__name__}: {self.init_params!r}.")
        return family

    def _check_sample_weight(self, sample_weight, n_samples):
        if sample_weight is None:
            return np.ones(n_samples)
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.ndim == 0:
            if not (np.isfinite(sw) and sw > 0):
                self._raise_sample_weight(f"the scalar {float(sw)!r}")
            return np.full(n_samples, float(sw))
        if sw.shape != (n_samples,):
            self._raise_sample_weight(f"an array of shape {sw.shape}", n_samples)
        if not np.all(np.isfinite(sw)):
            self._raise_sample_weight("non-finite values", n_samples)
        if np.any(sw < 0):
            self._raise_sample_weight(f"a negative value ({float(sw.min())!r})", n_samples)
        if not np.any(sw > 0):
            self._raise_sample_weight("all zeros", n_samples)
        return np.ascontiguousarray(sw)

    @staticmethod
    def _raise_sample_weight(received, n_samples=None):
        shape = f"of shape ({n_samples},) " if n_samples is not None else ""
        raise ValueError(f"sample_weight must be an array {shape}of finite non-negative "
                         f"weights with a positive sum, got {received}.")

    def _n_parameters(self):
        """Number of free parameters of the fitted model (for BIC/AIC)."""
        return self._count_parameters(self.mixing_measure_.family, self.n_features_in_)

    def _learns_temperature(self, family):
        return family.learns_temperature and bool(self.learn_temperature)

    # --------------------------------------------------------------- starts
    def _start_from_measure(self, family, n_features):
        start = self.init_params
        if start.n_experts != self.n_experts or start.n_features != n_features:
            raise ValueError(
                "init_params must have n_experts and n_features matching the estimator and X: "
                f"expected ({self.n_experts}, {n_features}), got ({start.n_experts}, "
                f"{start.n_features}).")
        if start.family != family:
            raise ValueError(f"init_params must use the estimator's gating {family!r}, got "
                             f"{start.family!r}.")
        if start.is_symmetric_fixed_point():
            raise ValueError(
                "init_params is a two-expert tanh/sigmoid gate with gate_coef[0] = "
                "-gate_coef[1], a fixed point of the gate's symmetry where the Fisher "
                "information is singular; perturb the gate slopes.")
        return _Params.from_measure(start)

    def _start_from_labels(self, family, rows, var_floor, labels, temperature):
        # Smoothed one-hot responsibilities of the labels, times the weights.
        rows.set_label_responsibilities(labels, _INIT_SMOOTHING)
        experts, _ = GAUSSIAN_LINEAR.m_step_blocks(rows, var_floor)
        # The family's first gate is the start as it is: a gate M-step here can drive a
        # tanh/sigmoid gate onto its symmetric fixed point beta1_1 = -beta1_2, which EM
        # never leaves (see the theory page's identifiability section).
        data = self._gate_data(family, rows)
        return _Params(family.initial_gate(data, temperature), experts.coef, experts.intercept,
                       experts.var)

    def _initial_labels(self, rows, rng):
        # Rows of (x, y) are standardised as they are read (block by block, in memory).
        mean, spread = rows.column_moments()
        scale = np.where(spread > 0, spread, 1.0)
        k = self.n_experts
        seed = int(rng.integers(np.iinfo(np.int32).max))
        # Rows are drawn by rank among those of positive weight.
        n_positive = rows.n_positive
        if self.init_params == "kmeans":
            # Cluster a subsample and label every row by its nearest centre: a start needs
            # no more, and it keeps the start O(n) cheap for n in the millions.
            ranks = np.arange(n_positive) if n_positive <= _KMEANS_MAX_ROWS else \
                np.sort(rng.choice(n_positive, size=_KMEANS_MAX_ROWS, replace=False))
            data, weights = rows.take_positive(ranks)
            km = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(
                (data - mean) / scale, sample_weight=weights)
            centres = km.cluster_centers_
        else:
            # Distinct rows with positive weight serve as centres.
            picked = rng.choice(n_positive, size=min(k, n_positive), replace=False)
            centres = (rows.take_positive(picked)[0] - mean) / scale
        # Nearest centre (the first on ties, as KMeans.predict).
        return rows.nearest_centre(mean, scale, centres)

    def _initial_temperature(self, family):
        return float(self.temperature) if family.uses_temperature else None

    # ------------------------------------------------------------------ EM
    # Every pass of EM walks the rows block by block (gmoe._blocks), on n_threads threads.
    def _gate_data(self, family, rows, params=None, statistics=None):
        """What the gate's M-step reads: the rows, and complete arrays if the family needs them.

        ``params`` (the current iterate) gives the experts' log-densities, when asked for;
        ``statistics`` are the sums the E-step computed for the M-step.
        """
        data = GateData(None, None, None, learn_temperature=self._learns_temperature(family),
                        max_iter=_GATE_STEPS_PER_ITERATION, blocks=rows, statistics=statistics)
        if not family.fits_on_blocks:
            ZT = rows.design()
            data.ZT, data.sample_weight = ZT, rows.sample_weight
            data.weighted_resp = rows.weighted_resp()
            if params is not None:
                def expert_log_density():
                    return GAUSSIAN_LINEAR.log_density_columns(
                        ZT, rows.y, ExpertParams(params.expert_coef, params.expert_intercept,
                                                 params.expert_var))

                data.expert_log_density = expert_log_density
        return data

    def _e_step(self, family, params, rows):
        """Store the responsibilities; return the log-likelihood and the next M-step's sums."""
        statistics = [GAUSSIAN_LINEAR.block_statistics()]
        gate_statistics = family.block_statistics(params.gate)
        if gate_statistics is not None:
            statistics.append(gate_statistics)
        log_lik, sums = rows.e_step(family, params.gate, params.expert_coef,
                                    params.expert_intercept, params.expert_var, statistics)
        return log_lik, (sums[0], sums[1] if gate_statistics is not None else None)

    def _m_step(self, family, params, rows, var_floor, statistics):
        experts, weight_sums = GAUSSIAN_LINEAR.m_step_blocks(rows, var_floor, statistics[0])
        params = params._replace(expert_coef=experts.coef, expert_intercept=experts.intercept,
                                 expert_var=experts.var)
        data = self._gate_data(family, rows, params, statistics[1])
        gate, _ = family.m_step(data, params.gate)
        return params._replace(gate=gate), weight_sums

    def _find_degenerate(self, params, weight_sums, total_weight, var_floor):
        collapsed_var = params.expert_var <= var_floor * (1.0 + 1e-9)
        empty = weight_sums <= _EMPTY_SHARE * total_weight
        return [int(j) for j in np.flatnonzero(collapsed_var | empty)]

    def _em_iterations(self, family, params, rows, var_floor):
        total_weight = rows.total_weight
        log_lik, statistics = self._e_step(family, params, rows)
        if not np.isfinite(log_lik):
            raise FloatingPointError("the start has a non-finite log-likelihood")
        trace = [log_lik / total_weight]
        converged = False
        degenerate = []
        n_iter = 0
        for n_iter in range(1, self.max_iter + 1):
            new_params, weight_sums = self._m_step(family, params, rows, var_floor, statistics)
            # The new responsibilities overwrite the old ones.
            new_log_lik, statistics = self._e_step(family, new_params, rows)
            if not np.isfinite(new_log_lik) or not new_params.is_finite():
                # Keep the last good iterate rather than return NaN parameters.
                warnings.warn(
                    f"EM produced non-finite values at iteration {n_iter}; stopping at the last "
                    "finite iterate. Increase reg_var or scale X.", DegenerateExpertWarning,
                    stacklevel=3)
                break
            params = new_params
            found = self._find_degenerate(params, weight_sums, total_weight, var_floor)
            if found:
                if self.on_degenerate == "restart":
                    raise _DegenerateRun(found)
                degenerate = sorted(set(degenerate) | set(found))
            trace.append(new_log_lik / total_weight)
            if self.verbose > 1:
                print(f"  iteration {n_iter:4d}  mean log-likelihood {trace[-1]:.10g}")
            change = abs(new_log_lik - log_lik)
            log_lik = new_log_lik
            if change <= self.tol * abs(log_lik):
                converged = True
                break
        return params, np.asarray(trace), converged, n_iter, degenerate

    # ----------------------------------------------------------------- fit
    def _fit_starts(self, family, rows, var_floor):
        """EM from every start; returns the best run and each start's log-likelihood."""
        n_features = rows.n_features
        rng = check_random_state(self.random_state)
        warm = self.warm_start and hasattr(self, "mixing_measure_")
        n_starts = 1 if warm or isinstance(self.init_params, MixingMeasure) else self.n_init
        best = None
        start_log_liks = []
        attempts = 0
        max_attempts = n_starts + (_MAX_EXTRA_RESTARTS if self.on_degenerate == "restart" else 0)
        fallback = None
        while len(start_log_liks) < n_starts and attempts < max_attempts:
            attempts += 1
            if warm:
                params = _Params.from_measure(self.mixing_measure_)
            elif isinstance(self.init_params, MixingMeasure):
                params = self._start_from_measure(family, n_features)
            else:
                labels = self._initial_labels(rows, rng)
                params = self._start_from_labels(family, rows, var_floor, labels,
                                                 self._initial_temperature(family))
            try:
                result = self._em_iterations(family, params, rows, var_floor)
            except _DegenerateRun as err:
                if self.verbose:
                    print(f"start {attempts}: experts {err.args[0]} collapsed; restarting")
                if fallback is None:
                    fallback = params
                if warm or isinstance(self.init_params, MixingMeasure):
                    break
                continue
            start_log_liks.append(result[1][-1])
            if self.verbose:
                print(f"start {attempts}: mean log-likelihood {result[1][-1]:.10g}, "
                      f"{result[3]} iterations, converged={result[2]}")
            if best is None or result[1][-1] > best[1][-1]:
                best = result
        if best is None:
            # Every start degenerated under on_degenerate="restart": report the first one.
            warnings.warn("Every start had a collapsing expert; keeping the first start's fit. "
                          "Use fewer experts or a larger reg_var.", DegenerateExpertWarning,
                          stacklevel=2)
            saved, self.on_degenerate = self.on_degenerate, "warn"
            try:
                best = self._em_iterations(family, fallback, rows, var_floor)
            finally:
                self.on_degenerate = saved
            start_log_liks.append(best[1][-1])

        return best, start_log_liks

    def fit(self, X, y, sample_weight=None):
        """Fit the model by EM from ``n_init`` starts, keeping the best.

        Parameters
        ----------
        X : array-like or Dask array of shape (n_samples, n_features)
            A Dask array (chunked by rows; ``y`` and ``sample_weight`` alike or NumPy)
            stays on its cluster: each pass sums its chunks' statistics there.
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weights of the rows in the log-likelihood.

        Returns
        -------
        self : GaussianMoERegressor
        """
        started = time.perf_counter()
        family = self._check_parameters()
        if _blocks.is_dask_array(X):
            # Dask arrays stay where they are: every pass runs on their chunks (gmoe._dask).
            from ._dask import DaskRowBlocks

            rows = DaskRowBlocks(X, y, sample_weight, self.n_experts, family)
            self.n_features_in_ = rows.n_features
            self.__dict__.pop("feature_names_in_", None)
        else:
            X, y = validate_data(self, X, y, y_numeric=True, dtype=np.float64)
            X = np.ascontiguousarray(X)
            y = np.ascontiguousarray(y, dtype=np.float64)
            if sample_weight is not None:  # None: every row weighs 1 (no vector of ones)
                sample_weight = self._check_sample_weight(sample_weight, X.shape[0])
            # Read before BLAS is held to one thread: the caller's limits cap the default.
            rows = _blocks.RowBlocks(X, y, sample_weight, self.n_experts,
                                     _blocks.resolve_n_threads(self.n_threads))
        n_samples, n_features = rows.n_samples, rows.n_features
        if self.n_experts > n_samples:
            raise ValueError(f"Expected n_samples >= n_experts, got n_experts={self.n_experts}, "
                             f"n_samples={n_samples}.")
        n_params = self._count_parameters(family, n_features)
        n_used, y_range, y_variance = rows.summary()
        if n_used < n_params:
            warnings.warn(
                f"Fewer samples with positive weight ({n_used}) than free parameters "
                f"({n_params} for n_experts={self.n_experts}, n_features={n_features}): the "
                "maximum-likelihood estimate is not unique and variances may sit at the floor. "
                "Use fewer experts or more data.", DegenerateExpertWarning, stacklevel=2)
        if y_range == 0:
            warnings.warn("y is constant: every expert's variance sits at the floor "
                          "reg_var (relative to 1); the likelihood is unbounded.",
                          DegenerateExpertWarning, stacklevel=2)
        # Relative to the weighted variance of y (to 1 when y is constant).
        var_floor = max(self.reg_var * (y_variance if y_variance > 0 else 1.0),
                        np.finfo(np.float64).tiny)
        with _blocks.single_threaded_libraries(), rows:
            best, start_log_liks = self._fit_starts(family, rows, var_floor)
        params, trace, converged, n_iter, degenerate = best
        self._set_fitted(family, params, trace, converged, n_iter, degenerate, start_log_liks)
        if degenerate:
            warnings.warn(
                f"Experts {degenerate} collapsed (variance at the floor reg_var * var(y) or "
                "weight near 0). The fit is finite but the likelihood may be unbounded there; "
                "use fewer experts, a larger reg_var, or on_degenerate='restart'.",
                DegenerateExpertWarning, stacklevel=2)
        if not converged:
            warnings.warn(
                f"EM did not converge in max_iter={self.max_iter} iterations (relative "
                f"log-likelihood change above tol={self.tol}). Increase max_iter or tol, or "
                "check the data.", ConvergenceWarning, stacklevel=2)
        self.fit_time_ = time.perf_counter() - started
        return self

    def _count_parameters(self, family, n_features):
        k = self.n_experts
        # One expert has a constant gate: no gate parameter at all.
        gate = 0 if k == 1 else family.n_free_parameters(
            k, n_features, learn_temperature=self._learns_temperature(family))
        return gate + k * GAUSSIAN_LINEAR.n_parameters_per_expert(n_features)

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
            lambda rows, ys: compute_e_step(rows, ys, self._log_gate(rows), m.expert_coef,
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
        """
        X, y = self._check_Xy(X, y)
        return self._e_step_rows(X, y, 0)

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
        sample_weight = self._check_sample_weight(sample_weight, log_lik.shape[0])
        return float(np.dot(sample_weight, log_lik))

    def bic(self, X, y):
        """Bayesian information criterion ``-2 L + p log n`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        y : array-like of shape (n_samples,)
            Target values.

        Returns
        -------
        float
            The BIC, with ``p`` the number of free parameters and ``n = n_samples``.
        """
        log_lik = self.log_likelihood(X, y)
        return -2.0 * log_lik + self._n_parameters() * np.log(np.asarray(X).shape[0])

    def aic(self, X, y):
        """Akaike information criterion ``-2 L + 2 p`` (lower is better).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Input data.
        y : array-like of shape (n_samples,)
            Target values.

        Returns
        -------
        float
            The AIC, with ``p`` the number of free parameters.
        """
        return -2.0 * self.log_likelihood(X, y) + 2.0 * self._n_parameters()

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
        return sample_moe(self.mixing_measure_, self._check_X(X), random_state=random_state)

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

        return predictive_distribution(self.mixing_measure_, self._check_X(X),
                                       chunk_size=chunk_size)

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


def log_likelihood_scorer(estimator, X, y, sample_weight=None):
    """Mean conditional log-likelihood, a scorer for model selection (higher is better).

    Use as ``GridSearchCV(est, grid, scoring=gmoe.log_likelihood_scorer)``.

    Parameters
    ----------
    estimator : GaussianMoERegressor
        A fitted estimator (anything with ``score_samples(X, y)``).
    X : array-like of shape (n_samples, n_features)
        Input data.
    y : array-like of shape (n_samples,)
        Target values.
    sample_weight : array-like of shape (n_samples,), default=None
        Weight of each row; ``None`` gives the plain mean.

    Returns
    -------
    float
        The (weighted) mean of ``log p(y_i | x_i)``.
    """
    log_lik = estimator.score_samples(X, y)
    if sample_weight is None:
        return float(np.mean(log_lik))
    sample_weight = np.asarray(sample_weight, dtype=np.float64)
    return float(np.dot(sample_weight, log_lik) / sample_weight.sum())


class _Params:
    """The parameters of one EM iterate (plain arrays; no validation)."""

    __slots__ = ("gate", "expert_coef", "expert_intercept", "expert_var")

    def __init__(self, gate, expert_coef, expert_intercept, expert_var):
        self.gate = gate
        self.expert_coef = expert_coef
        self.expert_intercept = expert_intercept
        self.expert_var = expert_var

    def _replace(self, **changes):
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes)
        return _Params(**fields)

    def is_finite(self):
        arrays = [self.gate.coef, self.gate.intercept, self.expert_coef, self.expert_intercept,
                  self.expert_var]
        ok = all(np.all(np.isfinite(a)) for a in arrays)
        return ok and (self.gate.temperature is None or np.isfinite(self.gate.temperature))

    @classmethod
    def from_measure(cls, measure):
        gate = GateParams(np.array(measure.gate_coef), np.array(measure.gate_intercept),
                          measure.temperature)
        return cls(gate, np.array(measure.expert_coef), np.array(measure.expert_intercept),
                   np.array(measure.expert_var))

    def to_measure(self, family):
        return MixingMeasure(self.gate.coef, self.gate.intercept, self.expert_coef,
                             self.expert_intercept, self.expert_var, gating=family,
                             temperature=self.gate.temperature, rebase=True)
