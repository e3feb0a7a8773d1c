"""Vectorised numpy/scipy references for the kernels and the gates.

Written independently of ``gmoe/_kernels`` and ``gmoe/gates/``: expert log-densities by
``scipy.stats.norm.logpdf``, log-gates by ``scipy.special.log_softmax``, the top-K active set
by ranks (no sort), the E-step by ``scipy.special.logsumexp`` over a BLAS matmul. Nothing
here imports ``gmoe``, so the benchmark can use it too.

The comparison helpers turn the brief's rule "rtol 1e-12, or 1e-12 times the row's largest
|term| where values are huge" into first-order rounding bounds: two correct float64
implementations of the same formula differ by a few ulp of the *terms before cancellation*
(``|y|``, ``|b|``, ``|x_f a_f|``, ``|log nu|``, ``|log g|``), not of the result. ``1e-12`` is
about 4500 ulp, ample for d <= 100 features.
"""

import numpy as np
from numpy.testing import assert_array_equal
from scipy.special import expit, log_softmax, logsumexp
from scipy.stats import norm

RTOL = 1e-12


# ---------------------------------------------------------------------------- experts
def expert_means(X, expert_coef, expert_intercept):
    """``a_j^T x_i + b_j``, shape (n_samples, n_experts), by BLAS matmul."""
    return X @ expert_coef.T + expert_intercept


def expert_log_density(X, y, expert_coef, expert_intercept, expert_var):
    """``log N(y_i | a_j^T x_i + b_j, nu_j)``, shape (n_samples, n_experts); nu a variance."""
    means = expert_means(X, expert_coef, expert_intercept)
    return norm.logpdf(y[:, None], loc=means, scale=np.sqrt(expert_var))


# ------------------------------------------------------------------------------ gates
def activation(u, name):
    """The activations of the gate definitions, from their textbook definitions."""
    if name == "tanh":
        return np.tanh(u)
    if name == "sigmoid":
        return expit(u)
    if name == "gelu":
        return u * norm.cdf(u)
    if name == "identity":
        return np.asarray(u, dtype=np.float64)
    raise KeyError(name)


def logits(X, gate_coef, gate_intercept, gating, temperature=None, activation_name=None):
    """Logits ``s_i(x)`` of the gate definitions' table, shape (n_samples, n_experts)."""
    linear = X @ gate_coef.T
    if gating in ("softmax", "topk"):
        return linear + gate_intercept
    if gating == "temperature":
        return (linear + gate_intercept) / temperature
    if gating == "activation":
        return (activation(linear, activation_name) + gate_intercept) / temperature
    raise KeyError(gating)


def topk_mask(scores, top_k):
    """The ``top_k`` largest scores of each row, ties to the lower index, by ranks.

    Expert ``j``'s rank is the number of experts that beat it: a strictly larger score, or
    an equal score at a lower index. It is active iff its rank is below ``top_k``. O(n k^2),
    no sorting, so it shares nothing with the package's argsort.
    """
    n_experts = scores.shape[1]
    s_j = scores[:, :, None]  # candidate j
    s_l = scores[:, None, :]  # competitor l
    lower = np.arange(n_experts)[None, :] < np.arange(n_experts)[:, None]  # [j, l]: l < j
    beats = (s_l > s_j) | ((s_l == s_j) & lower[None])
    return beats.sum(axis=2) < top_k


def log_gate(X, gate_coef, gate_intercept, *, gating="softmax", temperature=None, top_k=None,
             topk_selection="affine", activation_name=None):
    """Reference log-gate of every family; exactly ``-inf`` outside a top-K active set."""
    s = logits(X, gate_coef, gate_intercept, gating, temperature, activation_name)
    if gating == "topk":
        scores = X @ gate_coef.T
        if topk_selection == "affine":
            scores = scores + gate_intercept
        s = np.where(topk_mask(scores, top_k), s, -np.inf)
    return log_softmax(s, axis=1)


def measure_log_gate(measure, X):
    """Reference log-gate of a ``MixingMeasure`` (reads its public attributes only)."""
    return log_gate(X, measure.gate_coef, measure.gate_intercept, gating=measure.gating,
                    temperature=measure.temperature, top_k=measure.top_k,
                    topk_selection=measure.topk_selection, activation_name=measure.activation)


def measure_log_density(X, y, gate_coef, gate_intercept, expert_coef, expert_intercept,
                        expert_var, **gate_options):
    """Reference ``log p_G(y_i | x_i)`` from raw parameters (no identifiability convention)."""
    lg = log_gate(X, np.asarray(gate_coef, float), np.asarray(gate_intercept, float),
                  **gate_options)
    return e_step(X, y, lg, np.asarray(expert_coef, float), np.asarray(expert_intercept, float),
                  np.asarray(expert_var, float))[1]


# ------------------------------------------------------------------- gate M-step terms
def softmax_gate_terms(theta, Z, weighted_resp, free, active=None):
    """``Q``, its gradient and information over ``free``, from the textbook formulas.

    ``Q = sum_ij rw_ij log g_ij`` with ``g = softmax(Z theta^T)`` over each row's active
    experts; gradient block ``j``: ``sum_i (rw_ij - t_i g_ij) z_i``; information block
    ``(j, l)``: ``sum_i t_i g_ij (delta_jl - g_il) z_i z_i^T`` (``t_i = sum_j rw_ij``),
    each as an explicit sum of per-row outer products.
    """
    logit_values = Z @ theta.T
    if active is not None:
        logit_values = np.where(active, logit_values, -np.inf)
    log_g = log_softmax(logit_values, axis=1)
    g = np.exp(log_g)
    used = weighted_resp != 0
    q = np.sum(weighted_resp[used] * log_g[used])
    t = weighted_resp.sum(axis=1)
    grad = np.concatenate([((weighted_resp[:, j] - t * g[:, j])[:, None] * Z).sum(axis=0)
                           for j in free])
    outer = Z[:, :, None] * Z[:, None, :]
    blocks = [[np.einsum("i,iuv->uv", t * g[:, j] * (float(j == m) - g[:, m]), outer)
               for m in free] for j in free]
    return q, grad, np.block(blocks)


# ----------------------------------------------------------------------------- E-step
def e_step(X, y, log_gate, expert_coef, expert_intercept, expert_var):
    """Responsibilities and per-row log-likelihood by ``logsumexp``.

    Returns
    -------
    resp : ndarray of shape (n_samples, n_experts)
    log_lik : ndarray of shape (n_samples,)
    """
    joint = log_gate + expert_log_density(X, y, expert_coef, expert_intercept, expert_var)
    log_lik = logsumexp(joint, axis=1)
    resp = np.exp(joint - log_lik[:, None])
    return resp, log_lik


def e_step_error_bounds(X, y, log_gate, expert_coef, expert_intercept, expert_var, *,
                        rtol=RTOL):
    """Bound on the rounding error of ``joint_ij = log g_ij + log N_ij``, per entry.

    ``rtol * (1 + |log g| + |log norm const| + resid^2 / (2 nu))``: the summed terms, each
    correct to a few ulp in any implementation ("rtol 1e-12, or 1e-12 times the row's
    largest |term|"); plus ``(|resid| delta + delta^2) / nu``, how far the quadratic moves
    when the mean ``a^T x + b`` is off by ``delta = 16 (d + 1) eps (|y| + |b| +
    sum_f |x_f a_f|)`` (its summands' ulps: large when ``|y| ~ 1e8`` meets ``nu ~ 1e-10``).
    Shape (n_samples, n_experts); 0 where the gate is ``-inf``.
    """
    resid = y[:, None] - expert_means(X, expert_coef, expert_intercept)
    summands = np.abs(y)[:, None] + np.abs(expert_intercept) + np.abs(X) @ np.abs(expert_coef).T
    delta = 16 * (X.shape[1] + 1) * np.finfo(np.float64).eps * summands
    terms = (np.abs(log_gate) + 0.5 * np.abs(np.log(2 * np.pi * expert_var))
             + 0.5 * resid**2 / expert_var)
    err = rtol * (1.0 + terms) + (np.abs(resid) * delta + delta**2) / expert_var
    return np.where(np.isneginf(log_gate), 0.0, err)


def assert_e_step_close(resp, log_lik, X, y, log_gate, expert_coef, expert_intercept,
                        expert_var, *, rtol=RTOL):
    """Compare a kernel's E-step output with :func:`e_step` within rounding bounds.

    The error of ``joint_ij = log g_ij + log N_ij`` is at most ``e_ij`` of
    :func:`e_step_error_bounds`. A logsumexp moves by the
    responsibility-weighted error ``E_i = sum_l r_il e_il``, and ``r_ij`` by at most
    ``r_ij (e_ij + E_i)``; so ``|d log_lik| <= rtol |log_lik| + E_i`` and
    ``|d r_ij| <= r_ij (rtol + e_ij + E_i) + 1e-300`` (subnormals). Inactive experts must get
    exactly 0.
    """
    args = (X, y, log_gate, expert_coef, expert_intercept, expert_var)
    ref_resp, ref_log_lik = e_step(*args)
    err = e_step_error_bounds(*args, rtol=rtol)
    weighted = np.sum(ref_resp * err, axis=1)
    assert np.all(np.isfinite(resp)) and np.all(np.isfinite(log_lik))
    tol_ll = rtol * np.abs(ref_log_lik) + weighted
    bad = ~(np.abs(log_lik - ref_log_lik) <= tol_ll)
    assert not bad.any(), (
        f"log_lik differs on {bad.sum()} rows; first: row {np.argmax(bad)}, "
        f"got {log_lik[bad][0]!r}, ref {ref_log_lik[bad][0]!r}, tol {tol_ll[bad][0]!r}")
    tol_r = ref_resp * (rtol + err + weighted[:, None]) + 1e-300
    bad = ~(np.abs(resp - ref_resp) <= tol_r)
    assert not bad.any(), (
        f"resp differs at {np.argwhere(bad)[:5].tolist()}: got {resp[bad][:5]}, "
        f"ref {ref_resp[bad][:5]}, tol {tol_r[bad][:5]}")
    assert_array_equal(resp[np.isneginf(log_gate)], 0.0)


def assert_log_gate_close(got, ref, logit_values, *, rtol=RTOL):
    """Compare log-gates: ``-inf`` exactly where the reference has it, else within
    ``rtol * (|ref| + max_l |s_l|)`` (log-softmax subtracts a logsumexp of size max |s|)."""
    got = np.asarray(got)
    assert not np.isnan(got).any()
    assert_array_equal(np.isneginf(got), np.isneginf(ref))
    finite = np.isfinite(ref)
    scale = np.max(np.where(np.isfinite(logit_values), np.abs(logit_values), 0.0), axis=1)
    tol = rtol * (np.abs(ref) + np.maximum(scale, 1.0)[:, None])
    diff = np.abs(np.where(finite, got, 0.0) - np.where(finite, ref, 0.0))
    bad = finite & ~(diff <= tol)
    assert not bad.any(), (
        f"log_gate differs at {np.argwhere(bad)[:5].tolist()}: got {got[bad][:5]}, "
        f"ref {ref[bad][:5]}")


# ------------------------------------------------------------------------ test inputs
FAMILY_OPTIONS = [
    dict(gating="softmax"),
    dict(gating="topk", top_k=1),
    dict(gating="topk", top_k=2),
    dict(gating="topk", top_k=3),
    dict(gating="topk", top_k=1, topk_selection="linear"),
    dict(gating="topk", top_k=2, topk_selection="linear"),
    dict(gating="temperature", temperature=0.25),
    dict(gating="activation", temperature=0.5, activation="tanh"),
    dict(gating="activation", temperature=0.5, activation="sigmoid"),
    dict(gating="activation", temperature=2.0, activation="gelu"),
    dict(gating="activation", temperature=0.5, activation="identity"),
]


def family_id(options):
    """Short test id of a FAMILY_OPTIONS entry."""
    return "-".join(str(v) for v in options.values())


def gate_options(options):
    """FAMILY_OPTIONS entry -> keyword arguments of :func:`log_gate`."""
    return dict(gating=options["gating"], temperature=options.get("temperature"),
                top_k=options.get("top_k"), topk_selection=options.get("topk_selection", "affine"),
                activation_name=options.get("activation"))


def random_params(rng, n_experts, n_features, options, *, gate_scale=2.0):
    """Random parameters obeying the identifiability convention of ``options``'s family.

    Returns a dict of the five parameter arrays, ready for ``MixingMeasure(**params,
    **options)``.
    """
    gate_coef = gate_scale * rng.standard_normal((n_experts, n_features))
    gate_intercept = gate_scale * rng.standard_normal(n_experts)
    if options["gating"] != "activation":
        gate_coef[-1] = 0.0
    gate_intercept[-1] = 0.0
    return dict(gate_coef=gate_coef, gate_intercept=gate_intercept,
                expert_coef=3.0 * rng.standard_normal((n_experts, n_features)),
                expert_intercept=3.0 * rng.standard_normal(n_experts),
                expert_var=np.exp(rng.uniform(-2.0, 1.0, n_experts)))
