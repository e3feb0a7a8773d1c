"""Gaussian linear experts: log-densities and the weighted least-squares M-step."""

import warnings

import numpy as np
import scipy.linalg

from ._expert_major import Workspace, transposed_design

_LOG_2PI = np.log(2.0 * np.pi)


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
    resid = y[:, None] - compute_expert_means(X, expert_coef, expert_intercept)
    return -0.5 * (_LOG_2PI + np.log(expert_var) + resid * resid / expert_var)


def compute_expert_log_density_columns(ZT, y, expert_coef, expert_intercept, expert_var):
    """:func:`compute_expert_log_density`, expert-major: shape (n_experts, n_samples).

    Parameters
    ----------
    ZT : ndarray of shape (n_features + 1, n_samples)
        The design with intercept, transposed.
    y : ndarray of shape (n_samples,)
    expert_coef : ndarray of shape (n_experts, n_features)
    expert_intercept, expert_var : ndarray of shape (n_experts,)

    Returns
    -------
    ndarray of shape (n_experts, n_samples)
    """
    resid = y - np.column_stack([expert_coef, expert_intercept]) @ ZT
    resid *= resid
    resid /= expert_var[:, None]
    resid += (_LOG_2PI + np.log(expert_var))[:, None]
    resid *= -0.5
    return resid


def compute_var_floor(y, sample_weight, reg_var):
    """Absolute variance floor ``reg_var * v``, v the weighted variance of y (1 if it is 0)."""
    total = np.sum(sample_weight)
    mean = np.dot(sample_weight, y) / total
    v = np.dot(sample_weight, (y - mean) ** 2) / total
    if not v > 0:
        v = 1.0
    return reg_var * v


def estimate_expert_params(X, y, resp, sample_weight, var_floor):
    """Weighted least squares for every expert (the M-step of the experts).

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    resp : ndarray of shape (n_samples, n_experts)
        Responsibilities.
    sample_weight : ndarray of shape (n_samples,)
    var_floor : float
        Absolute lower bound of every variance.

    Returns
    -------
    expert_coef : ndarray of shape (n_experts, n_features)
    expert_intercept : ndarray of shape (n_experts,)
    expert_var : ndarray of shape (n_experts,)
    weight_sums : ndarray of shape (n_experts,)
        Total weight of each expert (``sum_i w_i r_ij``), for degeneracy checks.
    """
    weights = np.array((resp * sample_weight[:, None]).T, order="C")
    return fit_experts_expert_major(transposed_design(X), y, weights, var_floor)


def fit_experts_expert_major(ZT, y, weights, var_floor, workspace=None):
    """:func:`estimate_expert_params` from the transposed design and expert-major weights.

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
    expert_coef, expert_intercept, expert_var, weight_sums
        As for :func:`estimate_expert_params`.
    """
    workspace = Workspace() if workspace is None else workspace
    n_features = ZT.shape[0] - 1
    n_experts = weights.shape[0]
    weighted_design = workspace.get("weighted_design", ZT.shape)
    weighted_y = workspace.get("weighted_y", y.shape)
    resid = workspace.get("resid", y.shape)
    # 10 eps guards an expert that lost all its weight (as scikit-learn's mixtures do).
    weight_sums = weights.sum(axis=1) + 10 * np.finfo(np.float64).eps
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
