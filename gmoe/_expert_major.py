"""The E-step and the softmax gate's passes on expert-major arrays.

Responsibilities, log-gates and gate probabilities are held with shape
``(n_experts, n_samples)`` here, so that every pass over the samples is a contiguous,
vectorised loop (``gmoe/_kernels/_columns.py``), a numpy ufunc or a BLAS product. The EM of
:class:`~gmoe.GaussianMoERegressor` keeps this layout from one iteration to the next; the
public functions that take and return ``(n_samples, n_experts)`` arrays transpose at their
boundary.

The passes write their sample-sized temporaries into a :class:`Workspace`, which one EM
run reuses from pass to pass.
"""

import numpy as np

from . import _kernels


class Workspace:
    """Named scratch arrays, reused by the passes of one EM run.

    Fresh sample-sized temporaries are expensive: the C allocator hands blocks of a few MB
    back to the operating system when they are freed, and touching new pages faults. A
    1e5-row fit spent over half its time in page faults before its passes reused their
    buffers. An array handed out under a name is valid until that name is asked for again.
    """

    def __init__(self):
        self._buffers = {}

    def get(self, name, shape, dtype=np.float64):
        """The array called ``name``, of the given shape and dtype (contents undefined)."""
        shape = tuple(shape)
        buffer = self._buffers.get(name)
        if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
            buffer = self._buffers[name] = np.empty(shape, dtype=dtype)
        return buffer


def transposed_design(X):
    """The design with intercept, transposed: shape (n_features + 1, n_samples), C-contiguous.

    The passes below take the design in this form: ``theta @ ZT`` and ``(ZT * w) @ ZT.T``
    are contiguous BLAS products, several times faster than their row-major twins.
    """
    ZT = np.empty((X.shape[1] + 1, X.shape[0]))
    ZT[:-1] = X.T
    ZT[-1] = 1.0
    return ZT


def log_softmax_columns(values, workspace=None):
    """Log-softmax of every column of ``values``, in place, with the column log-sum-exp.

    Parameters
    ----------
    values : ndarray of shape (n_experts, n_samples), C-contiguous
        Overwritten by ``values - logsumexp(values, axis=0)``; ``-inf`` entries stay
        ``-inf`` (an all ``-inf`` column stays so, never NaN).
    workspace : Workspace, optional
        Where the outputs and temporaries live; a fresh one by default.

    Returns
    -------
    probs : ndarray of shape (n_experts, n_samples)
        ``exp`` of the result (an all ``-inf`` column gives zeros); the workspace's
        ``"probs"``.
    log_norm : ndarray of shape (n_samples,)
        The columns' log-sum-exp (max-shifted); the workspace's ``"log_norm"``.
    """
    workspace = Workspace() if workspace is None else workspace
    probs = workspace.get("probs", values.shape)
    log_norm, log_rest = _softmax_columns_into(values, probs, workspace)
    values -= log_rest
    return probs, log_norm


def _softmax_columns_into(values, probs, workspace):
    """Column softmax of ``values`` (shifted in place) into ``probs``, which may be ``values``.

    Returns the column log-sum-exp (the workspace's ``"log_norm"``) and ``log1p(rest)``, what
    the shifted values lack of the log-softmax (the workspace's ``"rest"``).
    """
    n_samples = values.shape[1]
    col_max = workspace.get("log_norm", (n_samples,))
    arg = workspace.get("arg_max", (n_samples,), np.int64)
    _kernels.shift_by_column_max_into(values, col_max, arg)
    np.exp(values, out=probs)
    rest = workspace.get("rest", (n_samples,))
    _kernels.normalise_columns_into(probs, arg, rest)
    log_rest = np.log1p(rest, out=rest)
    return np.add(col_max, log_rest, out=col_max), log_rest


def column_logsumexp(values, workspace=None):
    """Max-shifted log-sum-exp of every column; ``values`` is overwritten.

    Parameters
    ----------
    values : ndarray of shape (n_experts, n_samples), C-contiguous
        ``-inf`` entries allowed (an all ``-inf`` column gives ``-inf``).
    workspace : Workspace, optional
        Where the temporaries live; a fresh one by default.

    Returns
    -------
    ndarray of shape (n_samples,)
        A new array.
    """
    workspace = Workspace() if workspace is None else workspace
    return _softmax_columns_into(values, values, workspace)[0].copy()


def e_step_columns(ZT, y, log_gate, expert_coef, expert_intercept, expert_var,
                   workspace=None):
    """Responsibilities and per-row log-likelihood from an expert-major log-gate.

    Parameters
    ----------
    ZT : ndarray of shape (n_features + 1, n_samples)
        :func:`transposed_design` of ``X``.
    y : ndarray of shape (n_samples,)
    log_gate : ndarray of shape (n_experts, n_samples)
    expert_coef : ndarray of shape (n_experts, n_features)
    expert_intercept, expert_var : ndarray of shape (n_experts,)
    workspace : Workspace, optional
        Where the outputs and temporaries live; a fresh one by default.

    Returns
    -------
    resp : ndarray of shape (n_experts, n_samples)
        The workspace's ``"joint"``.
    log_lik : ndarray of shape (n_samples,)
        The workspace's ``"log_norm"``.
    """
    workspace = Workspace() if workspace is None else workspace
    means = workspace.get("joint", log_gate.shape)
    np.matmul(np.column_stack([expert_coef, expert_intercept]), ZT, out=means)
    return e_step_from_means(means, y, log_gate, expert_var, workspace)


def e_step_from_means(means, y, log_gate, expert_var, workspace=None):
    """:func:`e_step_columns` from the expert means; ``means`` is overwritten.

    Parameters
    ----------
    means : ndarray of shape (n_experts, n_samples), C-contiguous
        ``a_j^T x_i + b_j``; overwritten by the responsibilities, and returned.
    y : ndarray of shape (n_samples,)
    log_gate : ndarray of shape (n_experts, n_samples)
        Any memory layout (the transpose of a row-major ``(n_samples, n_experts)`` array
        is read as it is).
    expert_var : ndarray of shape (n_experts,)
    workspace : Workspace, optional
        Where the outputs and temporaries live; a fresh one by default.

    Returns
    -------
    resp : ndarray of shape (n_experts, n_samples)
        ``means``, now the responsibilities.
    log_lik : ndarray of shape (n_samples,)
        The workspace's ``"log_norm"``.
    """
    workspace = Workspace() if workspace is None else workspace
    _kernels.joint_log_density_into(y, log_gate, expert_var, means)
    log_lik, _ = _softmax_columns_into(means, means, workspace)
    return means, log_lik


def linear_log_gate_columns(ZT, theta, inactive=None, workspace=None, *,
                            log_gate_name="log_gate"):
    """Log-gate and gate probabilities of the linear-logit softmax gate, expert-major.

    Parameters
    ----------
    ZT : ndarray of shape (n_cols, n_samples)
        :func:`transposed_design` of ``X``.
    theta : ndarray of shape (n_experts, n_cols)
        Slopes and intercept (last column) of every expert.
    inactive : ndarray of bool of shape (n_experts, n_samples), optional
        Experts held out of the softmax (top-K): log-gate ``-inf``, probability 0.
    workspace : Workspace, optional
        Where the outputs and temporaries live; a fresh one by default.
    log_gate_name : str, default="log_gate"
        The workspace name of the returned log-gate.

    Returns
    -------
    log_gate, probs : ndarray of shape (n_experts, n_samples)
    """
    workspace = Workspace() if workspace is None else workspace
    log_gate = workspace.get(log_gate_name, (theta.shape[0], ZT.shape[1]))
    np.matmul(theta, ZT, out=log_gate)
    if inactive is not None:
        np.copyto(log_gate, -np.inf, where=inactive)
    probs, _ = log_softmax_columns(log_gate, workspace)
    return log_gate, probs


def gate_pass(ZT, theta, weighted_resp, row_total, free, inactive=None, want_info=True,
              workspace=None, *, log_gate_name="log_gate", log_gate=None):
    """Gate objective ``Q``, its gradient and (optionally) information, in one pass.

    ``Q(theta) = sum_ij rw_ij log g_ij``; its gradient over the free experts is
    ``sum_i (rw_ij - t_i g_ij) z_i`` and its information (minus the Hessian) has blocks
    ``sum_i t_i g_ij (delta_jl - g_il) z_i z_i^T``, with ``t_i = sum_j rw_ij``.

    Parameters
    ----------
    ZT : ndarray of shape (n_cols, n_samples)
        :func:`transposed_design` of ``X``.
    theta : ndarray of shape (n_experts, n_cols)
    weighted_resp : ndarray of shape (n_experts, n_samples), C-contiguous
        Sample weight times responsibility; zero wherever ``inactive``.
    row_total : ndarray of shape (n_samples,)
        ``weighted_resp.sum(axis=0)``.
    free : ndarray of int
        The experts (rows of ``theta``) whose gradient and information are wanted.
    inactive : ndarray of bool of shape (n_experts, n_samples), optional
    want_info : bool, default=True
    workspace : Workspace, optional
        Where the outputs and temporaries live; a fresh one by default.
    log_gate_name : str, default="log_gate"
        The workspace name of the returned log-gate.
    log_gate : ndarray of shape (n_experts, n_samples), optional
        The log-gate at ``theta`` when it is already known (the E-step's): the pass then
        only exponentiates it, and returns it as it is.

    Returns
    -------
    objective : float
    log_gate : ndarray of shape (n_experts, n_samples)
    grad : ndarray of shape (len(free) * n_cols,)
    info : ndarray of shape (len(free) * n_cols, len(free) * n_cols) or None
    """
    workspace = Workspace() if workspace is None else workspace
    n_cols, n_samples = ZT.shape
    if log_gate is None:
        log_gate, probs = linear_log_gate_columns(ZT, theta, inactive, workspace,
                                                  log_gate_name=log_gate_name)
    else:
        probs = np.exp(log_gate, out=workspace.get("probs", log_gate.shape))
    parts = workspace.get("parts", (n_samples,))
    _kernels.weighted_column_sums_into(weighted_resp, log_gate, parts)
    objective = float(np.sum(parts))
    # Rows of the free experts: t_i g_ij, then rw_ij - t_i g_ij.
    weighted_probs = workspace.get("weighted_probs", (len(free), n_samples))
    residual = workspace.get("gate_residual", (len(free), n_samples))
    for a, j in enumerate(free):
        np.multiply(probs[j], row_total, out=weighted_probs[a])
        np.subtract(weighted_resp[j], weighted_probs[a], out=residual[a])
    grad = (residual @ ZT.T).ravel()
    info = None
    if want_info:
        info = np.empty((len(free) * n_cols, len(free) * n_cols))
        h = workspace.get("info_weight", (n_samples,))
        weighted_design = workspace.get("weighted_design", (n_cols, n_samples))
        for a, j in enumerate(free):
            for b in range(a, len(free)):
                other = free[b]
                # h = t g_j (delta_jl - g_l)
                if other == j:
                    np.subtract(1.0, probs[other], out=h)
                else:
                    np.negative(probs[other], out=h)
                h *= weighted_probs[a]
                np.multiply(ZT, h, out=weighted_design)
                block = weighted_design @ ZT.T
                info[a * n_cols:(a + 1) * n_cols, b * n_cols:(b + 1) * n_cols] = block
                info[b * n_cols:(b + 1) * n_cols, a * n_cols:(a + 1) * n_cols] = block.T
        # BLAS rounds the (u, v) and (v, u) entries of a diagonal block differently.
        info += info.T
        info *= 0.5
    return objective, log_gate, grad, info
