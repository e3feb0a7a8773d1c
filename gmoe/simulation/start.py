"""Starts near the truth, with the noise schedule of paper 1's published code (SPEC 5.2)."""

import numpy as np

from ..model import MixingMeasure
from ..utils import check_random_state

__all__ = ["draw_assignment", "make_near_truth_start"]


def draw_assignment(n_true, n_experts, random_state=None):
    """Assign each fitted atom a true atom, every true atom at least once (SPEC 5.2).

    The last fitted atom goes to the true reference (the last true atom); the other
    ``n_experts - 1`` fitted atoms get, in a random order, each non-reference true atom
    once and ``n_experts - n_true`` true atoms drawn uniformly (reference included).

    Parameters
    ----------
    n_true : int
        Number of true atoms ``k*``.
    n_experts : int
        Number of fitted atoms ``k >= k*``.
    random_state : int, Generator or None

    Returns
    -------
    ndarray of int of shape (n_experts,)
        ``s_i``, the true atom of fitted atom ``i``.
    """
    if n_experts < n_true:
        raise ValueError(f"n_experts must be >= n_true, got n_experts={n_experts}, "
                         f"n_true={n_true}.")
    rng = check_random_state(random_state)
    extra = rng.integers(0, n_true, size=n_experts - n_true)
    head = rng.permutation(np.concatenate([np.arange(n_true - 1), extra]))
    return np.concatenate([head, [n_true - 1]]).astype(np.intp)


def make_near_truth_start(truth, n_experts, n_samples, random_state=None, *, gating=None,
                          top_k=None, assignment=None, gate_noise=0.005, expert_noise=0.05,
                          var_noise=0.005, noise_exponent=0.083, var_noise_exponent=0.25,
                          var_center="truth"):
    r"""A start near the truth for a fit of ``n_experts`` experts (SPEC 5.2).

    Each fitted atom ``i`` gets a true atom ``s_i`` (:func:`draw_assignment`, or
    ``assignment``), then

    * ``(beta0_i, beta1_i) = (beta0*_{s_i} - c log m_{s_i}, beta1*_{s_i}) + eps_i (1, 1)``,
      ``eps_i ~ N(0, (gate_noise n^-noise_exponent)^2)``;
    * ``(b_i, a_i) = (b*_{s_i}, a*_{s_i}) + eps'_i (1, 1)``,
      ``eps'_i ~ N(0, (expert_noise n^-noise_exponent)^2)``;
    * ``nu_i = center_{s_i} + |N(0, (var_noise n^-var_noise_exponent)^2)|``, the center
      being ``nu*`` (``var_center='truth'``) or ``sqrt(nu*)`` (``'published'``: the
      published code centred the variances on the standard deviations 0.3 / 0.4);

    where ``(1, 1)`` adds the same scalar to the intercept and to every slope coordinate,
    ``m_j`` is the number of fitted atoms assigned to true atom ``j`` and ``c`` is 1, or
    ``tau`` for the temperature families. The gate is then re-based so that the last
    atom is the reference (``MixingMeasure(..., rebase=True)``).

    Parameters
    ----------
    truth : MixingMeasure
        The true model (``k*`` experts).
    n_experts : int
        Number of fitted experts, ``>= k*``.
    n_samples : int
        The task's sample size ``n``, which sets the noise scales.
    random_state : int, Generator or None
        Draws the assignment (unless given), then ``eps``, ``eps'`` and the variance noise,
        each as one vector over the fitted atoms, in that order.
    gating : str, optional
        Fitted gating family; default the truth's. Must be the truth's (the start is made
        of its parameters); ``top_k`` may differ.
    top_k : int, optional
        Fitted ``top_k`` for ``gating='topk'``; default the truth's.
    assignment : sequence of int, optional
        ``s_i`` for every fitted atom instead of a random draw.
    gate_noise, expert_noise, var_noise : float
        Noise scales at ``n = 1``.
    noise_exponent, var_noise_exponent : float
        The scales decay as ``n^-exponent``.
    var_center : {'truth', 'published'}, default='truth'

    Returns
    -------
    MixingMeasure
        ``n_experts`` atoms, the fit's gating family, the truth's ``temperature``.

    Notes
    -----
    SPEC 5.2 is silent on how several fitted atoms share a true atom's weight. Copying
    ``beta0*`` to each of ``m`` atoms would give that cell ``m`` times the true weight and a
    start far from the truth in density. We subtract ``c log m`` from each copy's intercept
    so that the copies split the weight evenly: without noise the start's density is then
    exactly the truth's.
    """
    gating = truth.gating if gating is None else gating
    if gating != truth.gating:
        raise ValueError(f"gating must be the truth's {truth.gating!r} for a start near the "
                         f"truth, got gating={gating!r}.")
    if var_center not in ("truth", "published"):
        raise ValueError(f"var_center must be 'truth' or 'published', got {var_center!r}.")
    rng = check_random_state(random_state)
    k_true = truth.n_experts
    if assignment is None:
        s = draw_assignment(k_true, n_experts, rng)
    else:
        s = np.asarray(assignment, dtype=np.intp)
        if s.shape != (n_experts,) or s.min() < 0 or s.max() >= k_true \
                or len(np.unique(s)) != k_true:
            raise ValueError(f"assignment must give each of the {n_experts} fitted atoms a "
                             f"true atom in 0..{k_true - 1}, every true atom at least once, "
                             f"got {s.tolist()}.")
    counts = np.bincount(s, minlength=k_true)
    scale = float(truth.temperature) if truth.family.uses_temperature else 1.0

    sd_gate = gate_noise * n_samples ** -noise_exponent
    sd_expert = expert_noise * n_samples ** -noise_exponent
    sd_var = var_noise * n_samples ** -var_noise_exponent
    eps = rng.normal(0.0, 1.0, size=n_experts) * sd_gate
    eps_expert = rng.normal(0.0, 1.0, size=n_experts) * sd_expert
    eps_var = np.abs(rng.normal(0.0, 1.0, size=n_experts)) * sd_var

    # Split a true atom's weight evenly among its m copies (see Notes): - c log m.
    gate_intercept = truth.gate_intercept[s] - scale * np.log(counts[s]) + eps
    gate_coef = truth.gate_coef[s] + eps[:, None]
    expert_intercept = truth.expert_intercept[s] + eps_expert
    expert_coef = truth.expert_coef[s] + eps_expert[:, None]
    center = truth.expert_var if var_center == "truth" else np.sqrt(truth.expert_var)
    expert_var = center[s] + eps_var

    options = dict(gating=truth.gating, temperature=truth.temperature, **truth.family.options())
    if top_k is not None:
        if "top_k" not in options:
            raise ValueError(f"top_k applies only to a top-K truth, got top_k={top_k!r} with "
                             f"gating={truth.gating!r}.")
        options["top_k"] = top_k
    return MixingMeasure(gate_coef, gate_intercept, expert_coef, expert_intercept, expert_var,
                         rebase=True, **options)
