"""
==========================================
Fitting a softmax-gated mixture of experts
==========================================

We draw data from the two-expert model of the reference rate study (from the published
code of Nguyen, Nguyen & Ho, 2023), fit a :class:`~gmoe.GaussianMoERegressor` by EM,
and compare the estimates with the truth: the data with the fitted expert lines, the
fitted gate against the true gate, and the predictive interval.

The truth and the protocol of that study are on the theory page
(:ref:`theory-protocol-reference`).
"""

# %%
# The true model
# --------------
# Two Gaussian linear experts in one covariate. Expert 2 is the gate's reference
# (its gate slope and intercept are 0), so the gate is
# :math:`g_1(x) = \sigma(25 x - 8)`: expert 1 takes over for :math:`x > 0.32`.
# The experts' noise levels are **variances** (0.09 and 0.16, i.e. standard
# deviations 0.3 and 0.4).
import matplotlib.pyplot as plt
import numpy as np

import gmoe
from gmoe.alignment import align_to
from gmoe.metrics import hellinger, voronoi_loss
from gmoe.plotting import (
    plot_experts,
    plot_gates,
    plot_log_likelihood_trace,
    plot_predictive,
)

truth = gmoe.MixingMeasure(
    gate_coef=[[25.0], [0.0]],
    gate_intercept=[-8.0, 0.0],
    expert_coef=[[-20.0], [20.0]],
    expert_intercept=[15.0, -5.0],
    expert_var=[0.09, 0.16],
)
print(truth)

# %%
# Data
# ----
# The design is the papers' grid ``linspace(0, 1, n)``; ``y`` is drawn from
# :math:`p_{G^*}(y \mid x)`. ``return_labels=True`` also returns the expert that
# generated each row.
X = gmoe.make_design(1000, "grid")
y, labels = gmoe.sample_moe(truth, X, random_state=0, return_labels=True)
print(X.shape, y.shape, np.bincount(labels))

# %%
# Fit
# ---
# Three starts from random partitions of the rows (``init_params='random'``, the
# default); the best log-likelihood is kept.
est = gmoe.GaussianMoERegressor(n_experts=2, n_init=3, random_state=0)
est.fit(X, y)
print(f"converged: {est.converged_} after {est.n_iter_} iterations, "
      f"mean log-likelihood {est.lower_bound_:.4f}")

# %%
# Estimates against the truth. The fitted experts may come out in another order than the
# true ones (experts are exchangeable); :func:`gmoe.alignment.align_to` relabels the fit
# to match the truth expert by expert, re-basing the gate onto the new last expert.
fit, perm = align_to(est, truth)
print("aligned expert j is fitted expert perm[j]:", perm)
rows = [
    ("gate_coef", fit.gate_coef[:, 0], truth.gate_coef[:, 0]),
    ("gate_intercept", fit.gate_intercept, truth.gate_intercept),
    ("expert_coef", fit.expert_coef[:, 0], truth.expert_coef[:, 0]),
    ("expert_intercept", fit.expert_intercept, truth.expert_intercept),
    ("expert_var", fit.expert_var, truth.expert_var),
]
for name, got, want in rows:
    print(f"{name:>16}  fitted {np.array2string(got, precision=3):>22}"
          f"   true {np.array2string(want, precision=3)}")

# %%
# The gate slope is the hardest parameter: the gate is steep, so only the few points
# near the switch at :math:`x \approx 0.32` inform it. The Voronoi loss D1
# (:func:`gmoe.metrics.voronoi_loss`) sums the errors of all parameters, weighted by
# the gate masses, in one label-free number.
print(f"D1 = {voronoi_loss(est, truth):.4f}")
print(f"expected Hellinger distance = {hellinger(est, truth, X[::10]):.5f}")

# %%
# Plots
# -----
# Left: the data and the fitted experts' mean lines with :math:`\pm 2` standard
# deviation bands. Middle: the fitted gate (solid) and the true gate (dashed).
# Right: the predictive mean and 90% interval of
# :meth:`~gmoe.GaussianMoERegressor.predict_distribution`; the mean jumps between the
# experts where the gate switches, and the interval widens there to cover both.
fig, axes = plt.subplots(1, 3, figsize=(13, 4), layout="constrained")
plot_experts(est, X, y, ax=axes[0])
axes[0].set_title("data and fitted experts")

plot_gates(est, ax=axes[1])
x_grid = np.linspace(0, 1, 201)
true_gate = np.exp(truth.log_gate(x_grid[:, None]))
for j in range(2):
    axes[1].plot(x_grid, true_gate[:, j], color=f"C{j}", linestyle="--", linewidth=1)
axes[1].set_title("fitted gate (true gate dashed)")

plot_predictive(est, X, y, level=0.9, ax=axes[2])
axes[2].set_title("predictive mean and 90% interval")
plt.show()

# %%
# The EM trace
# ------------
# The log-likelihood never decreases from one EM iteration to the next (the gate's
# M-step is a warm-started Newton ascent with step halving).
ax = plot_log_likelihood_trace(est)
ax.set_title("mean log-likelihood over EM iterations")
plt.show()
