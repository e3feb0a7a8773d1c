r"""
=============================================
The Voronoi loss D1 against the sample size
=============================================

For an exact-specified softmax mixture of experts (as many fitted experts as true
ones), the maximum-likelihood estimate converges to the truth at the parametric rate:
the Voronoi loss D1 of the fit decays like :math:`n^{-1/2}` (Nguyen, Nguyen & Ho,
2023). This example is a miniature of the reference rate study: the same truth and
design, EM started near the truth with the papers' noise schedule, a few sample sizes
and replications, and the least-squares slope of :math:`\log \bar D_1` on
:math:`\log n`.

The full study (200 sample sizes up to :math:`10^5`, 40 replications, confidence
intervals for the slope) is ``gmoe-sim run softmax-exact``; this page runs in seconds
and its slope is correspondingly rough. The loss is defined in :ref:`theory-d1`, the
study in :ref:`theory-protocol-reference`.
"""

# %%
# Truth and starts
# ----------------
import matplotlib.pyplot as plt
import numpy as np

import gmoe
from gmoe.metrics import voronoi_loss

truth = gmoe.MixingMeasure(
    gate_coef=[[25.0], [0.0]],
    gate_intercept=[-8.0, 0.0],
    expert_coef=[[-20.0], [20.0]],
    expert_intercept=[15.0, -5.0],
    expert_var=[0.09, 0.16],
)


def start_near_truth(n, rng):
    """The reference protocol's start: the truth plus noise shrinking slowly with ``n``."""
    k = truth.n_experts
    gate_noise = rng.normal(0.0, 0.005 * n ** -0.083, size=k)
    expert_noise = rng.normal(0.0, 0.05 * n ** -0.083, size=k)
    var_noise = np.abs(rng.normal(0.0, 0.005 * n ** -0.25, size=k))
    # The last expert stays the gate's reference (its gate parameters are 0).
    gate_noise[-1] = 0.0
    return truth.replace(
        gate_coef=truth.gate_coef + gate_noise[:, None],
        gate_intercept=truth.gate_intercept + gate_noise,
        expert_coef=truth.expert_coef + expert_noise[:, None],
        expert_intercept=truth.expert_intercept + expert_noise,
        expert_var=truth.expert_var + var_noise,
    )


# %%
# Fits at growing sample sizes
# ----------------------------
# Every (sample size, replication) pair gets its own random stream, spawned from one
# master seed, as the simulation harness does.
sample_sizes = np.array([250, 500, 1000, 2000, 4000, 8000, 16000])
n_replications = 16
master = np.random.SeedSequence(2023)

losses = np.empty((len(sample_sizes), n_replications))
for a, n in enumerate(sample_sizes):
    X = gmoe.make_design(int(n), "grid")
    for r in range(n_replications):
        rng = np.random.default_rng(np.random.SeedSequence(master.entropy, spawn_key=(n, r)))
        y = gmoe.sample_moe(truth, X, random_state=rng)
        est = gmoe.GaussianMoERegressor(
            n_experts=2, init_params=start_near_truth(n, rng), n_init=1, max_iter=2000,
        ).fit(X, y)
        losses[a, r] = voronoi_loss(est, truth)

mean_loss = losses.mean(axis=1)
for n, value in zip(sample_sizes, mean_loss, strict=True):
    print(f"n = {n:5d}   mean D1 = {value:.4f}")

# %%
# The rate
# --------
# Least squares of :math:`\log \bar D_1` on :math:`\log n`. The theory predicts a slope of
# :math:`-1/2`; the dotted line has that slope, through the first point.
slope, intercept = np.polyfit(np.log(sample_sizes), np.log(mean_loss), 1)
print(f"fitted rate: D1 ~ {np.exp(intercept):.2f} n^{slope:.3f}")

fig, ax = plt.subplots(figsize=(6, 4.2), layout="constrained")
ax.loglog(np.repeat(sample_sizes, n_replications), losses.ravel(), ".", color="0.6",
          label="replications")
ax.loglog(sample_sizes, mean_loss, "o-", color="C0", label="mean D1")
ax.loglog(sample_sizes, np.exp(intercept) * sample_sizes ** slope, "--", color="C1",
          label=f"${np.exp(intercept):.1f}\\,n^{{{slope:.2f}}}$")
ax.loglog(sample_sizes, mean_loss[0] * (sample_sizes / sample_sizes[0]) ** -0.5, ":",
          color="k", label="slope $-1/2$")
ax.set_xlabel("sample size n")
ax.set_ylabel("Voronoi loss D1")
ax.set_title("softmax gate, exact-specified (k = k* = 2)")
ax.legend()
plt.show()
