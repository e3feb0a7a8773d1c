"""Expert families: the experts' densities, their weighted M-step, sampling and derivatives.

:class:`ExpertFamily` is everything the estimator, the inference and the metrics need to
know about an expert; :class:`GaussianLinearExperts` is the one gmoe fits today,
``N(y | a_j^T x + b_j, nu_j)`` with ``nu`` a variance (see :ref:`theory-model`). Its
log-density is written here once in numpy; the E-step's fused numba kernel
(``gmoe/_kernels/_columns.py``, ``joint_log_density_into``) is the compiled form of the
same formula, checked against this one in the tests.
"""

import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np
import scipy.linalg

from . import _kernels
from ._blocks import unpack_upper, weighted_gram_upper
from ._expert_major import Workspace, transposed_design

__all__ = ["ExpertFamily", "ExpertParams", "GAUSSIAN_LINEAR", "GaussianLinearExperts",
           "compute_expert_log_density", "compute_expert_log_density_columns",
           "compute_expert_means", "compute_var_floor"]

_LOG_2PI = np.log(2.0 * np.pi)


@dataclass(frozen=True, eq=False)
class ExpertParams:
    """The experts' parameters.

    Parameters
    ----------
    coef : ndarray of shape (n_experts, n_features)
        Slopes ``a``.
    intercept : ndarray of shape (n_experts,)
        Intercepts ``b``.
    var : ndarray of shape (n_experts,)
        Variances ``nu`` (not standard deviations).
    """

    coef: np.ndarray
    intercept: np.ndarray
    var: np.ndarray


class ExpertFamily(ABC):
    """An expert family: a conditional density of ``y`` per expert, and how to fit it."""

    name = None

    @abstractmethod
    def means(self, X, params):
        """Expert means ``E[y | x, expert j]``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        params : ExpertParams

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """

    @abstractmethod
    def log_density_columns(self, ZT, y, params):
        """Log-density of ``y_i`` under every expert, expert-major: (n_experts, n_samples).

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.
        y : ndarray of shape (n_samples,)
        params : ExpertParams

        Returns
        -------
        ndarray of shape (n_experts, n_samples)
        """

    def log_density(self, X, y, params):
        """Log-density of ``y_i`` under every expert, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
        params : ExpertParams

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        return self.log_density_columns(transposed_design(X), y, params).T

    @abstractmethod
    def m_step(self, ZT, y, weights, var_floor, workspace=None):
        """Weighted maximum likelihood of every expert.

        Parameters
        ----------
        ZT : ndarray of shape (n_features + 1, n_samples)
        y : ndarray of shape (n_samples,)
        weights : ndarray of shape (n_experts, n_samples)
            Sample weight times responsibility.
        var_floor : float
            Lower bound of the variances (absolute).
        workspace : Workspace, optional

        Returns
        -------
        params : ExpertParams
        weight_sums : ndarray of shape (n_experts,)
            Total weight of each expert.
        """

    @abstractmethod
    def m_step_blocks(self, blocks, var_floor, statistics=None):
        """:meth:`m_step` over a block source of ``gmoe._blocks`` (rows, targets, weights).

        Parameters
        ----------
        blocks : block source
            The rows, their targets and sample weight times responsibility.
        var_floor : float
            Lower bound of the variances (absolute).
        statistics : tuple, optional
            The sums of :meth:`block_statistics`, when the E-step's pass computed them.

        Returns
        -------
        params : ExpertParams
        weight_sums : ndarray of shape (n_experts,)
            Total weight of each expert.
        """

    @abstractmethod
    def block_statistics(self):
        """The E-step statistic whose sums :meth:`m_step_blocks` takes.

        Returns
        -------
        tuple
            ``(function, args)`` in the form of ``gmoe._blocks.e_step_block``.
        """

    @abstractmethod
    def sample(self, X, labels, params, random_state):
        """Draw ``y_i`` from expert ``labels[i]`` at ``x_i``.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        labels : ndarray of int of shape (n_samples,)
        params : ExpertParams
        random_state : numpy.random.Generator

        Returns
        -------
        ndarray of shape (n_samples,)
        """

    @abstractmethod
    def n_parameters_per_expert(self, n_features):
        """Free parameters of one expert.

        Parameters
        ----------
        n_features : int

        Returns
        -------
        int
        """

    @abstractmethod
    def parameter_names(self, feature_names):
        """Names of one expert's parameters, in the order of :meth:`log_density_derivatives`.

        Parameters
        ----------
        feature_names : list of str

        Returns
        -------
        list of str
        """

    @abstractmethod
    def pack(self, params):
        """One row per expert, in the order of :meth:`parameter_names`.

        Parameters
        ----------
        params : ExpertParams

        Returns
        -------
        ndarray of shape (n_experts, q)
        """

    @abstractmethod
    def unpack(self, rows):
        """:class:`ExpertParams` from the rows of :meth:`pack`.

        Parameters
        ----------
        rows : array-like of shape (n_experts, q)

        Returns
        -------
        ExpertParams
        """

    @abstractmethod
    def log_density_derivatives(self, X, y, params):
        """Log-densities with their gradient and a map to their weighted Hessian.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        y : ndarray of shape (n_samples,)
        params : ExpertParams

        Returns
        -------
        log_density : ndarray of shape (n_samples, n_experts)
        grad : ndarray of shape (n_samples, n_experts, q)
            Gradient of ``log_density[i, j]`` in expert ``j``'s own parameters.
        hessian : callable
            ``hessian(c)`` for weights ``c`` (n_samples, n_experts) returns
            ``sum_i c_ij`` times the Hessian of ``log_density[i, j]``, shape
            (n_experts, q, q).
        """


class GaussianLinearExperts(ExpertFamily):
    """Gaussian linear experts: ``y | x, j ~ N(a_j^T x + b_j, nu_j)``.

    Parameters per expert, in order: the slopes ``a_j``, the intercept ``b_j`` and the
    variance ``nu_j`` (parametrised directly, not through its logarithm).

    Examples
    --------
    >>> import numpy as np
    >>> from gmoe.experts import ExpertParams, GAUSSIAN_LINEAR
    >>> params = ExpertParams(np.array([[1.0]]), np.array([0.0]), np.array([1.0]))
    >>> GAUSSIAN_LINEAR.log_density(np.array([[0.0]]), np.array([0.0]), params).round(4)
    array([[-0.9189]])
    """

    name = "gaussian-linear"
    # Where the variance sits among one expert's parameters (a bound: the variance floor).
    variance_position = -1

    def means(self, X, params):  # noqa: D102 (inherited)
        return X @ params.coef.T + params.intercept

    def log_density_columns(self, ZT, y, params):  # noqa: D102 (inherited)
        resid = y - np.column_stack([params.coef, params.intercept]) @ ZT
        resid *= resid
        resid /= params.var[:, None]
        resid += (_LOG_2PI + np.log(params.var))[:, None]
        resid *= -0.5
        return resid

    def m_step(self, ZT, y, weights, var_floor, workspace=None):  # noqa: D102 (inherited)
        coef, intercept, var, weight_sums = fit_experts_expert_major(ZT, y, weights, var_floor,
                                                                     workspace)
        return ExpertParams(coef, intercept, var), weight_sums

    def m_step_blocks(self, blocks, var_floor, statistics=None):  # noqa: D102 (inherited)
        coef, intercept, var, weight_sums = fit_experts_blocks(blocks, var_floor, statistics)
        return ExpertParams(coef, intercept, var), weight_sums

    def block_statistics(self):
        """The E-step statistic (function, args) whose sums :meth:`m_step_blocks` takes.

        Returns
        -------
        tuple
        """
        return expert_block_sums, ()

    def sample(self, X, labels, params, random_state):  # noqa: D102 (inherited)
        rows = np.arange(X.shape[0])
        means = self.means(X, params)[rows, labels]
        return means + np.sqrt(params.var[labels]) * random_state.standard_normal(X.shape[0])

    def n_parameters_per_expert(self, n_features):
        """``n_features + 2``: slopes, intercept, variance.

        Parameters
        ----------
        n_features : int

        Returns
        -------
        int
        """
        return n_features + 2

    def parameter_names(self, feature_names):
        """``coef[f]`` for every feature, ``intercept``, ``var``.

        Parameters
        ----------
        feature_names : list of str

        Returns
        -------
        list of str
        """
        return [f"coef[{f}]" for f in feature_names] + ["intercept", "var"]

    def pack(self, params):  # noqa: D102 (inherited)
        return np.column_stack([params.coef, params.intercept, params.var])

    def unpack(self, rows):  # noqa: D102 (inherited)
        rows = np.asarray(rows, dtype=np.float64)
        return ExpertParams(rows[:, :-2], rows[:, -2], rows[:, -1])

    def log_density_derivatives(self, X, y, params):  # noqa: D102 (inherited)
        n, d = X.shape
        var = params.var
        resid = y[:, None] - self.means(X, params)
        z = resid / var
        log_density = -0.5 * (_LOG_2PI + np.log(var) + resid * z)
        grad = np.empty((n, var.shape[0], d + 2))
        grad[:, :, :d] = z[:, :, None] * X[:, None, :]
        grad[:, :, d] = z
        grad[:, :, d + 1] = 0.5 * (resid * z - 1.0) / var
        ZT = transposed_design(X)

        def hessian(c):
            # Every expert's weighted Gram matrix of z = (x, 1) in one pass of the block
            # kernels, the cross terms in one product, the variances' corner in one sum.
            out = np.empty((var.shape[0], d + 2, d + 2))
            weights = np.ascontiguousarray((c / var).T)
            out[:, :d + 1, :d + 1] = -unpack_upper(weighted_gram_upper(weights, ZT,
                                                                       Workspace()), d + 1)
            cross = -((c * resid / var ** 2).T @ ZT.T)
            out[:, :d + 1, d + 1] = cross
            out[:, d + 1, :d + 1] = cross
            out[:, d + 1, d + 1] = np.sum(c * (0.5 / var ** 2 - resid * resid / var ** 3),
                                          axis=0)
            return out

        return log_density, grad, hessian


#: The Gaussian linear expert family (the only one today).
GAUSSIAN_LINEAR = GaussianLinearExperts()


def compute_expert_means(X, expert_coef, expert_intercept):
    """Expert means ``a_j^T x_i + b_j``, shape (n_samples, n_experts)."""
    return X @ expert_coef.T + expert_intercept


def compute_expert_log_density(X, y, expert_coef, expert_intercept, expert_var):
    """Log-density ``log N(y_i | a_j^T x_i + b_j, nu_j)`` of every row under every expert.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    expert_coef : ndarray of shape (n_experts, n_features)
    expert_intercept, expert_var : ndarray of shape (n_experts,)

    Returns
    -------
    ndarray of shape (n_samples, n_experts)
    """
    return GAUSSIAN_LINEAR.log_density(X, y, ExpertParams(expert_coef, expert_intercept,
                                                          expert_var))


def compute_expert_log_density_columns(ZT, y, expert_coef, expert_intercept, expert_var):
    """:func:`compute_expert_log_density`, expert-major: shape (n_experts, n_samples)."""
    return GAUSSIAN_LINEAR.log_density_columns(ZT, y, ExpertParams(expert_coef,
                                                                   expert_intercept, expert_var))


def compute_var_floor(y, sample_weight, reg_var):
    """Absolute variance floor ``reg_var * v``, v the weighted variance of y (1 if it is 0)."""
    total = np.sum(sample_weight)
    mean = np.dot(sample_weight, y) / total
    v = np.dot(sample_weight, (y - mean) ** 2) / total
    if not v > 0:
        v = 1.0
    return reg_var * v


def _empty_expert_guard(weight_sums):
    """What is added to every expert's total weight, so that one that lost all is defined.

    10 eps (as scikit-learn's mixtures add) for weights on the scale of counts; when the
    weights' total is below 1 (frequency weights scaled down) the guard shrinks with it,
    or it would outweigh the experts themselves and move every mean and variance.
    """
    return 10 * np.finfo(np.float64).eps * min(1.0, float(np.sum(weight_sums)))


def fit_experts_expert_major(ZT, y, weights, var_floor, workspace=None):
    """Weighted least squares for every expert (the experts' M-step), expert-major.

    Parameters
    ----------
    ZT : ndarray of shape (n_features + 1, n_samples)
        The design with intercept, transposed (``gmoe._expert_major.transposed_design``).
    y : ndarray of shape (n_samples,)
    weights : ndarray of shape (n_experts, n_samples)
        Sample weight times responsibility.
    var_floor : float
    workspace : gmoe._expert_major.Workspace, optional
        Where the sample-sized temporaries live; a fresh one by default.

    Returns
    -------
    expert_coef : ndarray of shape (n_experts, n_features)
    expert_intercept : ndarray of shape (n_experts,)
    expert_var : ndarray of shape (n_experts,)
        Weighted mean squared residual, floored at ``var_floor``.
    weight_sums : ndarray of shape (n_experts,)
        Total weight of each expert (``sum_i w_i r_ij``), for degeneracy checks.
    """
    workspace = Workspace() if workspace is None else workspace
    n_features = ZT.shape[0] - 1
    n_experts = weights.shape[0]
    weighted_design = workspace.get("weighted_design", ZT.shape)
    weighted_y = workspace.get("weighted_y", y.shape)
    resid = workspace.get("resid", y.shape)
    weight_sums = weights.sum(axis=1)
    weight_sums = weight_sums + _empty_expert_guard(weight_sums)
    coef = np.zeros((n_experts, n_features))
    intercept = np.zeros(n_experts)
    var = np.empty(n_experts)
    for j in range(n_experts):
        w = weights[j]
        np.multiply(ZT, w, out=weighted_design)
        gram = weighted_design @ ZT.T
        rhs = ZT @ np.multiply(w, y, out=weighted_y)
        try:
            with warnings.catch_warnings():
                # An ill-conditioned Gram matrix is handled below, not reported.
                warnings.simplefilter("error", scipy.linalg.LinAlgWarning)
                theta = scipy.linalg.solve(gram, rhs, assume_a="pos", check_finite=False)
            if not np.all(np.isfinite(theta)):
                raise np.linalg.LinAlgError("non-finite solution")
        except (np.linalg.LinAlgError, scipy.linalg.LinAlgError, scipy.linalg.LinAlgWarning):
            # Rank-deficient or ill-conditioned weighted design (an expert owning fewer points
            # than coefficients): the minimum-norm least-squares solution still maximises.
            sqrt_w = np.sqrt(w)
            theta = np.linalg.lstsq((ZT * sqrt_w).T, sqrt_w * y, rcond=None)[0]
        coef[j] = theta[:n_features]
        intercept[j] = theta[n_features]
        np.matmul(theta, ZT, out=resid)
        np.subtract(y, resid, out=resid)
        resid *= resid
        var[j] = np.dot(w, resid) / weight_sums[j]
    np.maximum(var, var_floor, out=var)
    return coef, intercept, var, weight_sums


def expert_block_sums(block, log_gate=None):
    """The experts' right-hand sides and weights on one block, and their Gram weights.

    The form of an E-step statistic (``gmoe._blocks.e_step_block``): the pass appends the
    Gram matrices of the returned weights.

    Parameters
    ----------
    block : gmoe._blocks.Block
        Reads ``ZT``, ``y`` and ``rw``.
    log_gate : ndarray, optional
        Unused.

    Returns
    -------
    sums : tuple
        ``rhs`` (n_experts, n_cols), ``sum_i rw_ji y_i z_i``; ``weight_sums``
        (n_experts,), ``sum_i rw_ji``.
    gram_weights : ndarray of shape (n_experts, n_rows)
        ``rw``.
    """
    rw = block.rw
    weighted_y = np.multiply(rw, block.y, out=block.workspace.get("weighted_y", rw.shape))
    rhs = weighted_y @ block.ZT.T
    weight_sums = np.empty(rw.shape[0])
    _kernels.row_sums_into(rw, weight_sums)
    return (rhs, weight_sums), rw


def expert_block_statistics(block):
    """The experts' right-hand sides, weights and weighted Gram matrices on one block.

    Parameters
    ----------
    block : gmoe._blocks.Block
        Reads ``ZT``, ``y`` and ``rw``.

    Returns
    -------
    rhs : ndarray of shape (n_experts, n_cols)
        ``sum_i rw_ji y_i z_i``.
    weight_sums : ndarray of shape (n_experts,)
        ``sum_i rw_ji``.
    gram : ndarray of shape (n_experts, n_cols * (n_cols + 1) // 2)
        Upper triangles of ``sum_i rw_ji z_i z_i^T``.
    """
    (rhs, weight_sums), rw = expert_block_sums(block)
    return rhs, weight_sums, weighted_gram_upper(rw, block.ZT, block.workspace)


def expert_residual_block(block, theta):
    """``sum_i rw_ji (y_i - theta_j^T z_i)^2`` of every expert on one block.

    Parameters
    ----------
    block : gmoe._blocks.Block
        Reads ``ZT``, ``y`` and ``rw``.
    theta : ndarray of shape (n_experts, n_cols)

    Returns
    -------
    ndarray of shape (n_experts,)
    """
    means = block.workspace.get("expert_means", block.rw.shape)
    np.matmul(theta, block.ZT, out=means)
    out = np.empty(theta.shape[0])
    _kernels.weighted_residual_squares(block.rw, block.y, means, out)
    return out


def expert_qr_block(block, expert):
    """The R factor of one expert's weighted least-squares problem on one block.

    Parameters
    ----------
    block : gmoe._blocks.Block
    expert : int

    Returns
    -------
    ndarray of shape (min(n_rows, n_cols + 1), n_cols + 1)
        ``R`` of the QR factorisation of ``sqrt(rw_j) [Z, y]``.
    """
    sqrt_w = np.sqrt(block.rw[expert])
    stacked = np.column_stack([block.ZT.T * sqrt_w[:, None], block.y * sqrt_w])
    return np.linalg.qr(stacked, mode="r")


def _solve_positive_definite(matrix, rhs):
    """``matrix^-1 rhs`` by Cholesky, or None if ``matrix`` is numerically singular.

    The LAPACK steps of ``scipy.linalg.solve(..., assume_a="pos")`` without its per-call
    overhead (which an EM iteration on small data pays several times): None where it
    would raise (not positive definite) or warn (reciprocal condition number below eps).
    """
    factor, info = _POTRF(matrix, lower=False, clean=False, overwrite_a=False)
    if info != 0:
        return None
    rcond, info = _POCON(factor, np.linalg.norm(matrix, 1))
    if info != 0 or not rcond >= np.finfo(np.float64).eps:
        return None
    solution, info = _POTRS(factor, rhs)
    return solution if info == 0 and np.all(np.isfinite(solution)) else None


_POTRF, _POCON, _POTRS = scipy.linalg.lapack.get_lapack_funcs(
    ("potrf", "pocon", "potrs"), dtype=np.float64)


def _least_squares_by_qr(blocks, expert, n_cols):
    """Minimum-norm weighted least squares of one expert, from the blocks' R factors.

    The QR factorisation of the stacked factors (a tall-skinny QR) is that of the whole
    weighted design, so the solution and its rank decision are those of ``lstsq`` on the
    whole design, without forming it.
    """
    factors = np.vstack(blocks.map_blocks(expert_qr_block, expert))
    r = np.linalg.qr(factors, mode="r")
    # lstsq's default cut-off on the whole design: eps * max(n_samples, n_cols).
    rcond = np.finfo(np.float64).eps * max(blocks.n_samples, n_cols)
    return np.linalg.lstsq(r[:n_cols, :n_cols], r[:n_cols, n_cols], rcond=rcond)[0]


def fit_experts_blocks(blocks, var_floor, statistics=None):
    """Weighted least squares for every expert (the experts' M-step), over a block source.

    Two passes over the rows: one sums the weighted Gram matrices and right-hand sides,
    the other the weighted squared residuals of the solution (the variances, without the
    cancellation of a one-pass formula).

    Parameters
    ----------
    blocks : block source of :mod:`gmoe._blocks`
        The rows, their targets and their weighted responsibilities.
    var_floor : float
    statistics : tuple, optional
        :func:`expert_block_statistics` summed over the blocks, when the E-step's pass
        already did (it saves a pass).

    Returns
    -------
    expert_coef : ndarray of shape (n_experts, n_features)
    expert_intercept : ndarray of shape (n_experts,)
    expert_var : ndarray of shape (n_experts,)
        Weighted mean squared residual, floored at ``var_floor``.
    weight_sums : ndarray of shape (n_experts,)
        Total weight of each expert (``sum_i w_i r_ij``), for degeneracy checks.
    """
    n_features = blocks.n_features
    n_cols = n_features + 1
    if statistics is None:
        statistics = blocks.reduce(expert_block_statistics)
    rhs, weight_sums, gram_upper = statistics
    grams = unpack_upper(gram_upper, n_cols)
    weight_sums = weight_sums + _empty_expert_guard(weight_sums)
    n_experts = weight_sums.shape[0]
    theta = np.zeros((n_experts, n_cols))
    for j in range(n_experts):
        solution = _solve_positive_definite(grams[j], rhs[j])
        # Rank-deficient or ill-conditioned weighted design (an expert owning fewer points
        # than coefficients): the minimum-norm least-squares solution still maximises.
        theta[j] = _least_squares_by_qr(blocks, j, n_cols) if solution is None else solution
    var = blocks.reduce(expert_residual_block, theta) / weight_sums
    np.maximum(var, var_floor, out=var)
    return (np.ascontiguousarray(theta[:, :n_features]), theta[:, n_features].copy(), var,
            weight_sums)
