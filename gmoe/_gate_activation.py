"""Gate M-step of the activation gate: logits ``s_ij = (sigma(beta1_j^T x_i) + beta0_j) / tau``.

``Q(p) = sum_i sum_j rw_ij log softmax(s_i)_j`` is not concave in ``beta1``; we take Newton
steps with the Hessian made negative definite by clipping its eigenvalues, and backtrack
until ``Q`` rises (SPEC 3). Free parameters, packed in this order: every ``beta1_j``
(row-major), ``beta0_j`` for ``j < k`` (the last is the reference, 0), and ``log tau`` when
the temperature is learned.
"""

import numpy as np

from .gating import (
    backtrack,
    compute_activation,
    compute_activation_derivatives,
    compute_log_softmax,
)

# Eigenvalues of -H are clipped below at this fraction of the largest one.
_EIG_FLOOR = 1e-8


def pack(gate_coef, gate_intercept, temperature, learn_temperature):
    """Free activation-gate parameters as one vector."""
    parts = [gate_coef.ravel(), gate_intercept[:-1]]
    if learn_temperature:
        parts.append([np.log(temperature)])
    return np.concatenate(parts)


def unpack(vector, n_experts, n_features, temperature, learn_temperature):
    """Inverse of :func:`pack`; a held temperature is passed through."""
    kd = n_experts * n_features
    gate_coef = vector[:kd].reshape(n_experts, n_features).copy()
    gate_intercept = np.append(vector[kd:kd + n_experts - 1], 0.0)
    if learn_temperature:
        temperature = float(np.exp(vector[kd + n_experts - 1]))
    return gate_coef, gate_intercept, temperature


def compute_objective(vector, X, weighted_resp, activation, temperature, learn_temperature):
    """Gate objective ``Q`` at a packed parameter vector."""
    n_experts = weighted_resp.shape[1]
    coef, intercept, tau = unpack(vector, n_experts, X.shape[1], temperature, learn_temperature)
    logits = (compute_activation(X @ coef.T, activation) + intercept) / tau
    return float(np.sum(weighted_resp * compute_log_softmax(logits)))


def compute_derivatives(vector, X, weighted_resp, activation, temperature, learn_temperature):
    """Objective, gradient and Hessian of ``Q`` at a packed parameter vector.

    Returns
    -------
    objective : float
    grad : ndarray of shape (n_params,)
    hess : ndarray of shape (n_params, n_params)
    """
    n_samples, n_features = X.shape
    n_experts = weighted_resp.shape[1]
    coef, intercept, tau = unpack(vector, n_experts, n_features, temperature, learn_temperature)
    u = X @ coef.T
    sig = compute_activation(u, activation)
    d1, d2 = compute_activation_derivatives(u, activation)
    logits = (sig + intercept) / tau
    log_gate = compute_log_softmax(logits)
    gate = np.exp(log_gate)
    row_total = weighted_resp.sum(axis=1)
    objective = float(np.sum(weighted_resp * log_gate))
    resid = weighted_resp - gate * row_total[:, None]  # dQ / ds_ij

    # Jacobian of s_ij with respect to the parameters of expert j, in compact form:
    # columns of beta1_j (d), beta0_j (if free), log tau (if learned).
    n_params = len(vector)
    kd = n_experts * n_features
    tau_col = kd + n_experts - 1 if learn_temperature else None
    cols, jac = [], []
    for j in range(n_experts):
        c = list(range(j * n_features, (j + 1) * n_features))
        v = [d1[:, j:j + 1] * X / tau]
        if j < n_experts - 1:
            c.append(kd + j)
            v.append(np.full((n_samples, 1), 1.0 / tau))
        if learn_temperature:
            c.append(tau_col)
            v.append(-logits[:, j:j + 1])
        cols.append(np.array(c))
        jac.append(np.hstack(v))

    grad = np.zeros(n_params)
    hess = np.zeros((n_params, n_params))
    for j in range(n_experts):
        grad[cols[j]] += jac[j].T @ resid[:, j]
        # Gauss-Newton part: -J^T diag(R_i (g_ij delta_jl - g_ij g_il)) J.
        for m in range(n_experts):
            w = row_total * gate[:, j] * ((1.0 if j == m else 0.0) - gate[:, m])
            hess[np.ix_(cols[j], cols[m])] -= (jac[j] * w[:, None]).T @ jac[m]
        # Curvature of the logits themselves, weighted by dQ/ds.
        e = resid[:, j]
        b1 = cols[j][:n_features]
        hess[np.ix_(b1, b1)] += (X * (e * d2[:, j] / tau)[:, None]).T @ X
        if learn_temperature:
            cross = -(X * (e * d1[:, j] / tau)[:, None]).sum(axis=0)
            hess[b1, tau_col] += cross
            hess[tau_col, b1] += cross
            if j < n_experts - 1:
                hess[kd + j, tau_col] += -e.sum() / tau
                hess[tau_col, kd + j] += -e.sum() / tau
            hess[tau_col, tau_col] += np.dot(e, logits[:, j])
    return objective, grad, hess


def clipped_newton_direction(grad, hess):
    """Ascent direction ``(-H)_+^{-1} grad`` with ``-H``'s eigenvalues clipped positive."""
    eigval, eigvec = np.linalg.eigh(-0.5 * (hess + hess.T))
    top = max(float(np.max(np.abs(eigval))), 1e-300)
    eigval = np.maximum(np.abs(eigval), _EIG_FLOOR * top)
    return eigvec @ ((eigvec.T @ grad) / eigval)


def maximise(vector, X, weighted_resp, activation, temperature, learn_temperature, *,
             max_iter=20, tol=1e-10):
    """Damped Newton ascent of ``Q``; every accepted step raises it.

    Returns
    -------
    ndarray
        The packed parameters; ``Q`` is no lower than at the start.
    """
    args = (X, weighted_resp, activation, temperature, learn_temperature)
    vector = np.array(vector, dtype=np.float64, copy=True)
    objective, grad, hess = compute_derivatives(vector, *args)
    for _ in range(max_iter):
        step = clipped_newton_direction(grad, hess)

        def evaluate(t, start=vector, step=step):
            candidate = start + t * step
            return compute_objective(candidate, *args), candidate

        accepted = backtrack(evaluate, objective)
        if accepted is None:
            break
        value, vector = accepted
        gain = value - objective
        if gain <= tol * (1.0 + abs(value)):
            break
        objective, grad, hess = compute_derivatives(vector, *args)
    return vector
