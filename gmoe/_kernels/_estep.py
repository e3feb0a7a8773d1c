"""The fused, row-parallel E-step of a Gaussian mixture of experts."""

import math

import numba
import numpy as np

from ._config import NJIT

_LOG_2PI = math.log(2.0 * math.pi)


@numba.njit(inline="always", **NJIT)
def _e_step_row(i, X, y, log_gate, expert_coef, expert_intercept, log_norm_const, inv_var,
                out_resp, out_log_lik):
    """Responsibilities and log-likelihood of row ``i`` (no validation)."""
    n_features = X.shape[1]
    n_experts = expert_intercept.shape[0]
    row_max = -np.inf
    arg_max = 0
    for j in range(n_experts):
        # An inactive expert (log-gate -inf) gives joint = -inf and, below, exp(-inf) = 0:
        # no branch needed (a branch here costs ~20% of the kernel).
        lg = log_gate[i, j]
        mean = expert_intercept[j]
        for f in range(n_features):
            mean += X[i, f] * expert_coef[j, f]
        resid = y[i] - mean
        joint = lg + log_norm_const[j] - 0.5 * resid * resid * inv_var[j]
        out_resp[i, j] = joint
        if joint > row_max:
            row_max = joint
            arg_max = j
    if row_max == -np.inf:
        # Cannot happen for a valid gate (some expert is active); never write NaN.
        for j in range(n_experts):
            out_resp[i, j] = 0.0
        out_log_lik[i] = -np.inf
        return
    # The largest term is exp(0) = 1: skip its exp and use log1p for the rest.
    rest = 0.0
    for j in range(n_experts):
        if j == arg_max:
            out_resp[i, j] = 1.0
        else:
            weight = math.exp(out_resp[i, j] - row_max)
            out_resp[i, j] = weight
            rest += weight
    out_log_lik[i] = row_max + math.log1p(rest)
    inv_total = 1.0 / (1.0 + rest)
    for j in range(n_experts):
        out_resp[i, j] *= inv_total


@numba.njit(**NJIT)
def _expert_constants(expert_var):
    n_experts = expert_var.shape[0]
    log_norm_const = np.empty(n_experts)
    inv_var = np.empty(n_experts)
    for j in range(n_experts):
        log_norm_const[j] = -0.5 * (_LOG_2PI + math.log(expert_var[j]))
        inv_var[j] = 1.0 / expert_var[j]
    return log_norm_const, inv_var


@numba.njit(parallel=True, **NJIT)
def e_step_into(X, y, log_gate, expert_coef, expert_intercept, expert_var, out_resp,
                out_log_lik):
    """Responsibilities and per-row log-likelihood in one row-parallel pass (no validation).

    Parameters
    ----------
    X : float64 (n_samples, n_features), C-contiguous
    y : float64 (n_samples,)
    log_gate : float64 (n_samples, n_experts); ``-inf`` marks an inactive expert
    expert_coef : float64 (n_experts, n_features)
    expert_intercept, expert_var : float64 (n_experts,)
    out_resp : float64 (n_samples, n_experts), written: responsibilities
    out_log_lik : float64 (n_samples,), written: ``log p(y_i | x_i)``
    """
    log_norm_const, inv_var = _expert_constants(expert_var)
    # Rows are independent and write disjoint outputs: identical results for any thread count.
    for i in numba.prange(X.shape[0]):
        _e_step_row(i, X, y, log_gate, expert_coef, expert_intercept, log_norm_const, inv_var,
                    out_resp, out_log_lik)


@numba.njit(**NJIT)
def e_step_serial_into(X, y, log_gate, expert_coef, expert_intercept, expert_var, out_resp,
                       out_log_lik):
    """Serial twin of :func:`e_step_into` (same arguments, bit-identical output)."""
    log_norm_const, inv_var = _expert_constants(expert_var)
    for i in range(X.shape[0]):
        _e_step_row(i, X, y, log_gate, expert_coef, expert_intercept, log_norm_const, inv_var,
                    out_resp, out_log_lik)
