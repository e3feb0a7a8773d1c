"""Starts near the truth, with the noise schedule of paper 1's published code.

Two protocols (see :ref:`theory-protocol-reference` and
:ref:`theory-protocol-published-start`): ``'even'``, where several fitted atoms in one true
cell split its weight evenly so that a noiseless start has exactly the truth's density,
and ``'published'``, the start of paper 1's published code.
"""

import numpy as np

from ..model import MixingMeasure
from ..utils import check_random_state

__all__ = ["draw_assignment", "draw_published_assignment", "make_near_truth_start"]

START_PROTOCOLS = ("even", "published")


def draw_assignment(n_true, n_experts, random_state=None):
    """Assign each fitted atom a true atom, every true atom at least once (``'even'``).

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


def draw_published_assignment(n_true, n_experts, random_state=None):
    """Assign each fitted atom a true atom as paper 1's published code does.

    The last fitted atom goes to the true reference (the last true atom); the other
    ``n_experts - 1`` are drawn uniformly from all ``n_true`` true atoms, with replacement,
    and the draw is repeated until every non-reference true atom is hit. With two true
    atoms, the non-reference cell then holds ``m = 1..n_experts - 1`` fitted atoms with
    probability ``C(n_experts - 1, m) / (2^(n_experts - 1) - 1)``: for three fitted atoms it
    is doubled with probability 1/3; for four it holds 1, 2 or 3 atoms with probabilities
    3/7, 3/7, 1/7.

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
    while True:
        head = rng.integers(0, n_true, size=n_experts - 1)
        if np.all(np.isin(np.arange(n_true - 1), head)):
            return np.concatenate([head, [n_true - 1]]).astype(np.intp)


def make_near_truth_start(truth, n_experts, n_samples, random_state=None, *, gating=None,
                          top_k=None, assignment=None, gate_noise=0.005, expert_noise=0.05,
                          var_noise=0.005, noise_exponent=0.083, var_noise_exponent=0.25,
                          var_center="truth", protocol="even", temperature_noise=0.0,
                          temperature_noise_exponent=None):
    r"""A start near the truth for a fit of ``n_experts`` experts.

    See :ref:`theory-protocol-reference` for the reference protocol and
    :ref:`theory-protocol-published-start` for the published one.

    Each fitted atom ``i`` gets a true atom ``s_i`` (:func:`draw_assignment`, or
    ``assignment``), then

    * ``(beta0_i, beta1_i) = (beta0*_{s_i} - c log m_{s_i}, beta1*_{s_i}) + eps_i (1, 1)``,
      ``eps_i ~ N(0, (gate_noise n^-noise_exponent)^2)``;
    * ``(b_i, a_i) = (b*_{s_i}, a*_{s_i}) + eps'_i (1, 1)``,
      ``eps'_i ~ N(0, (expert_noise n^-noise_exponent)^2)``;
    * ``nu_i = center_{s_i} + |N(0, (var_noise n^-var_noise_exponent)^2)|``, the center
      being ``nu*`` (``var_center='truth'``) or ``sqrt(nu*)`` (``'published'``: the
      published code centred the variances on the standard deviations 0.3 / 0.4);

    * for the families with a temperature, ``log tau = log tau* + eps_tau``,
      ``eps_tau ~ N(0, (temperature_noise n^-temperature_noise_exponent)^2)`` (0 by
      default: the truth's ``tau``);

    where ``(1, 1)`` adds the same scalar to the intercept and to every slope coordinate,
    ``m_j`` is the number of fitted atoms assigned to true atom ``j`` and ``c`` is 1, or
    ``tau`` for the temperature families. The gate is then re-based so that the last
    atom is the reference (``MixingMeasure(..., rebase=True)``).

    ``protocol='published'`` follows paper 1's published code instead: the assignment of
    :func:`draw_published_assignment`, each copy keeps its true atom's ``beta0*`` (no
    ``- c log m``), and the last fitted atom (the reference) gets no gate noise.

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
    protocol : {'even', 'published'}, default='even'
        How atoms are assigned and how copies share a weight (above).
    temperature_noise : float, default=0.0
        Scale of the noise on ``log tau`` at ``n = 1`` (families with a temperature).
    temperature_noise_exponent : float, optional
        Its decay ``n^-exponent``; default ``noise_exponent``. 0 gives a fixed scale.

    Returns
    -------
    MixingMeasure
        ``n_experts`` atoms, the fit's gating family, the truth's ``temperature``.

    Notes
    -----
    The reference protocol does not say how several fitted atoms share a true atom's
    weight. Copying
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
    if protocol not in START_PROTOCOLS:
        raise ValueError(f"protocol must be one of {list(START_PROTOCOLS)}, got {protocol!r}.")
    if not (np.isfinite(temperature_noise) and temperature_noise >= 0):
        raise ValueError("temperature_noise must be a finite number >= 0, got "
                         f"{temperature_noise!r}.")
    published = protocol == "published"
    rng = check_random_state(random_state)
    k_true = truth.n_experts
    if assignment is None:
        draw = draw_published_assignment if published else draw_assignment
        s = draw(k_true, n_experts, rng)
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

    if published:
        # The published code leaves the reference atom's gate at the truth's (0, 0).
        eps[-1] = 0.0
        gate_intercept = truth.gate_intercept[s] + eps
    else:
        # Split a true atom's weight evenly among its m copies (see Notes): - c log m.
        gate_intercept = truth.gate_intercept[s] - scale * np.log(counts[s]) + eps
    gate_coef = truth.gate_coef[s] + eps[:, None]
    expert_intercept = truth.expert_intercept[s] + eps_expert
    expert_coef = truth.expert_coef[s] + eps_expert[:, None]
    center = truth.expert_var if var_center == "truth" else np.sqrt(truth.expert_var)
    expert_var = center[s] + eps_var

    temperature = truth.temperature
    if temperature is not None and temperature_noise > 0:
        exponent = noise_exponent if temperature_noise_exponent is None \
            else temperature_noise_exponent
        eps_tau = rng.normal(0.0, 1.0) * temperature_noise * n_samples ** -exponent
        temperature = float(temperature * np.exp(eps_tau))
    options = dict(gating=truth.gating, temperature=temperature, **truth.family.options())
    if top_k is not None:
        if "top_k" not in options:
            raise ValueError(f"top_k applies only to a top-K truth, got top_k={top_k!r} with "
                             f"gating={truth.gating!r}.")
        options["top_k"] = top_k
    return MixingMeasure(gate_coef, gate_intercept, expert_coef, expert_intercept, expert_var,
                         rebase=True, **options)
