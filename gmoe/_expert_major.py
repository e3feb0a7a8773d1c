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


def compute_log_softmax(logits):
    """Row-wise log-softmax with a max shift; ``-inf`` entries stay ``-inf``.

    Parameters
    ----------
    logits : ndarray of shape (n_samples, n_experts)
        Each row must hold at least one finite entry.

    Returns
    -------
    ndarray of shape (n_samples, n_experts)
    """
    log_gate = np.array(np.asarray(logits, dtype=np.float64).T, order="C")
    log_softmax_columns(log_gate)
    return log_gate.T


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
    n_underflow = _kernels.shift_by_column_max_into(values, col_max, arg)
    rest = workspace.get("rest", (n_samples,))
    exponentiate_shifted(values, arg, n_underflow, rest, probs, workspace, normalise=True)
    log_rest = np.log1p(rest, out=rest)
    return np.add(col_max, log_rest, out=col_max), log_rest


def exponentiate_shifted(shifted, arg, n_underflow, rest, out, workspace, *, normalise):
    """Steps 2 and 3 of a column softmax, after :func:`gmoe._kernels.shift_by_column_max_into`.

    Parameters
    ----------
    shifted : ndarray of shape (n_experts, n_samples)
        Each column less its maximum (``-inf`` for an inactive expert).
    arg, n_underflow : ndarray of int64 of shape (n_samples,), int
        The shift's row of each column's maximum, and its count of entries whose ``exp``
        underflows (``-inf`` included).
    rest : ndarray of shape (n_samples,)
        Written: each column's sum of ``exp(shifted)`` without its maximum's entry.
    out : ndarray of shape (n_experts, n_samples)
        With ``normalise``, written: the softmax of each column (may be ``shifted`` itself,
        not another view of it); otherwise scratch space, its content undefined afterwards
        (``shifted`` is left as it is).
    workspace : Workspace
        Temporaries (``"exps"``).
    normalise : bool
    """
    if not n_underflow and shifted.shape[0] == 2:
        # Two experts: rest is the exp of each column's one other entry (half the exps).
        _kernels.pair_other_into(shifted, arg, rest)
        np.exp(rest, out=rest)
        if normalise:
            _kernels.normalise_pair_into(rest, arg, out)
        return
    # Without normalise, shifted must survive (the caller reads it).
    exps = out
    if not normalise and np.may_share_memory(out, shifted):
        exps = workspace.get("exps", shifted.shape)
    scratch = exps
    if np.may_share_memory(exps, shifted):
        scratch = workspace.get("exps", shifted.shape)
    exp_into(shifted, exps, workspace, n_underflow, scratch=scratch)
    if normalise:
        _kernels.normalise_columns_into(exps, arg, rest)
    else:
        _kernels.column_rest_into(exps, arg, rest)


def exp_into(values, out, workspace, n_underflow=None, *, scratch=None):
    """``out = exp(values)``, without numpy's slow path where ``exp`` underflows.

    numpy's vectorised ``exp`` is 7 times slower on entries whose ``exp`` is 0 and 45 times
    on subnormal ones; the sharpening gates of over-specified fits put half their entries
    there. Such entries are moved into the normal range first and scaled back after
    (:func:`gmoe._kernels.underflow_to_normal_into`,
    :func:`gmoe._kernels.exp_of_underflow_into`): the result is numpy's ``exp``, except
    that subnormal results (below 2.2e-308) are off by ~1e-13 relative (``x + 64 log 2``
    rounds) and their grid's rounding.

    Parameters
    ----------
    values : ndarray of shape (n_samples,) or (n_rows, n_samples), C-contiguous
    out : ndarray of the same shape
        Written; may be ``values`` itself (not another view of its memory).
    workspace : Workspace
        Temporaries (``"exp_scratch_..."``).
    n_underflow : int, optional
        How many entries lie below :data:`gmoe._kernels.EXP_UNDERFLOW`, if known (a
        kernel that wrote ``values`` may have counted them); counted otherwise.
    scratch : ndarray of the same shape, optional
        Where the copy is exponentiated (may be ``out``; one sharing memory with
        ``values`` is replaced by a workspace array).

    Returns
    -------
    ndarray
        ``out``.
    """
    def as_rows(array):  # a view (never a copy: out must be written through)
        return array if array.ndim == 2 else array.reshape(1, array.shape[0])

    rows = as_rows(values)
    if n_underflow is None:
        n_underflow = _kernels.count_underflow(rows)
    if not n_underflow:
        return np.exp(values, out=out)
    if scratch is None or np.may_share_memory(scratch, values):
        scratch = workspace.get(f"exp_scratch_{values.ndim}", values.shape)
    scratch_rows = as_rows(scratch)
    _kernels.underflow_to_normal_into(rows, scratch_rows)
    np.exp(scratch, out=scratch)
    _kernels.exp_of_underflow_into(rows, scratch_rows, as_rows(out))
    return out


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
