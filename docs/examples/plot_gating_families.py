r"""
========================
The four gating families
========================

A mixture of experts routes each input ``x`` to its experts through a gate
:math:`g(x)`, a probability vector over the experts. gmoe offers four families, all
defined by logits :math:`s_i(x)` and a softmax over an active set:

=================  =======================================================  =================
``gating=``        logits :math:`s_i(x)`                                    active set
=================  =======================================================  =================
``"softmax"``      :math:`\beta_{1i}^\top x + \beta_{0i}`                   all experts
``"topk"``         :math:`\beta_{1i}^\top x + \beta_{0i}`                   the K best-scored
``"temperature"``  :math:`(\beta_{1i}^\top x + \beta_{0i}) / \tau`          all experts
``"activation"``   :math:`(\sigma(\beta_{1i}^\top x) + \beta_{0i}) / \tau`  all experts
=================  =======================================================  =================

(the full definitions: :ref:`theory-gates`). Here we draw the gate probabilities of
three experts against a scalar ``x`` for fixed gate parameters. Only the gate matters
for these plots; the experts are placeholders.
"""

# %%
# Shared gate parameters
# ----------------------
# Three experts; the last is the reference (slope and intercept 0) for the softmax,
# top-K and temperature gates, which share these gate parameters.
import matplotlib.pyplot as plt
import numpy as np

import gmoe
from gmoe.plotting import plot_gates

gate_coef = np.array([[8.0], [4.0], [0.0]])
gate_intercept = np.array([-5.0, -1.5, 0.0])
experts = dict(expert_coef=[[1.0], [0.0], [-1.0]], expert_intercept=[0.0, 1.0, 2.0],
               expert_var=[0.1, 0.1, 0.1])
x_grid = np.linspace(0.0, 1.0, 401)


def measure(**options):
    """A three-expert model with the shared gate and the given gating options."""
    return gmoe.MixingMeasure(gate_coef, gate_intercept, **experts, **options)


# %%
# Softmax and top-K
# -----------------
# The top-K gate renormalises the softmax over the ``K`` experts of largest score and
# sets the others to exactly 0: with ``K = 2`` one expert is switched off at every
# ``x``; with ``K = 1`` the gate is an indicator and only its switching points
# (the selection boundaries) matter.
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained", sharey=True)
plot_gates(measure(gating="softmax"), x_grid, ax=axes[0])
axes[0].set_title('gating="softmax"')
plot_gates(measure(gating="topk", top_k=2), x_grid, ax=axes[1])
axes[1].set_title('gating="topk", top_k=2')
plot_gates(measure(gating="topk", top_k=1), x_grid, ax=axes[2])
axes[2].set_title('gating="topk", top_k=1')
plt.show()

# %%
# Temperature: dense to sparse
# ----------------------------
# Dividing the logits by a temperature :math:`\tau` sharpens the gate as
# :math:`\tau \to 0` (towards the top-1 gate) and flattens it as :math:`\tau` grows.
# With linear logits the model depends on :math:`(\beta_1, \beta_0)` and :math:`\tau`
# only through :math:`\gamma = (\beta_1, \beta_0)/\tau`, so the data can determine
# :math:`\gamma` but not :math:`\tau` itself (see the user guide).
fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained", sharey=True)
for ax, tau in zip(axes, [4.0, 1.0, 0.1], strict=True):
    plot_gates(measure(gating="temperature", temperature=tau), x_grid, ax=ax)
    ax.set_title(f'gating="temperature", tau={tau:g}')
plt.show()

# %%
# Activation
# ----------
# The activation gate passes the linear score through a bounded nonlinearity
# :math:`\sigma` before the temperature: an expert's logit can move by at most the range
# of :math:`\sigma` (2 for tanh, 1 for sigmoid), so the intercepts and the temperature
# set how far from uniform the gate can get, and the gate need not be monotone in ``x``.
# Only the reference's intercept is pinned; every slope is free, so we give the
# activation gate its own parameters (with the shared ones above, expert 1's intercept
# of -5 would keep it switched off).
activation_gate = dict(gate_coef=[[4.0], [-6.0], [1.0]], gate_intercept=[-0.4, 0.3, 0.0])

fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), layout="constrained", sharey=True)
for ax, (activation, tau) in zip(axes, [("tanh", 1.0), ("tanh", 0.25), ("sigmoid", 0.25)],
                                    strict=True):
    model = gmoe.MixingMeasure(**activation_gate, **experts, gating="activation",
                               activation=activation, temperature=tau)
    plot_gates(model, x_grid, ax=ax)
    ax.set_title(f'activation="{activation}", tau={tau:g}')
plt.show()

# %%
# All four, side by side
# ----------------------
# The probability of expert 1 under each family.
families = {
    "softmax": measure(gating="softmax"),
    "topk, K=1": measure(gating="topk", top_k=1),
    "temperature, tau=0.25": measure(gating="temperature", temperature=0.25),
    "activation (tanh), tau=0.25": gmoe.MixingMeasure(
        **activation_gate, **experts, gating="activation", activation="tanh",
        temperature=0.25),
}
fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
for name, model in families.items():
    ax.plot(x_grid, np.exp(model.log_gate(x_grid[:, None]))[:, 0], label=name)
ax.set_xlabel("x")
ax.set_ylabel("gate probability of expert 1")
ax.legend()
plt.show()
