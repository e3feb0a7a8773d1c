r"""SQUAREM acceleration of EM (Varadhan & Roland 2008), with its global safeguard.

EM converges linearly, and sublinearly in over-specified fits, whose likelihood is flat
along the directions that split one true component among several experts. SQUAREM
extrapolates along the path of two EM steps: from ``u0``, with ``u1 = F(u0)`` and
``u2 = F(u1)`` (``F`` the EM map on an unconstrained vector ``u``),

.. math::

    r = u_1 - u_0, \qquad v = u_2 - 2 u_1 + u_0, \qquad
    \alpha = -\lVert r \rVert / \lVert v \rVert \ \ (\text{the S3 step length}), \qquad
    u' = u_0 - 2 \alpha r + \alpha^2 v,

with ``alpha`` limited to ``[-step_max, -1]`` (``alpha = -1`` gives ``u' = u2``). One EM
step from ``u'`` stabilises it. The global safeguard keeps ``L`` monotone: when ``L`` at
the stabilised point is below ``L(u2)`` (or not finite), the cycle keeps ``u2``, the plain
EM iterate. ``step_max`` starts at 1, is multiplied by 4 each time the longest step is
taken and accepted, and divided by 4 (not below 1) on a fall-back.

The unconstrained vector: gate slopes and intercepts (the reference's entries are 0 in
every iterate, so they stay 0), on the identifiable scale ``gamma = beta / tau`` for the
temperature gate, whose ``tau`` is held (the S3 step length depends on the scale of the
coordinates, and this makes that gate's path the softmax gate's); ``log tau`` for an
activation gate that learns its temperature; expert slopes and intercepts; log variances.
The extrapolated variances are kept at or above the variance floor.

The EM run (``gmoe._em``) starts cycles only while EM is slow: while the ratio of two
successive rises of ``L`` under plain EM is at least ``gmoe._em.SQUAREM_MIN_RATE``; a cycle
costs a fourth E-step for three EM steps, which a fast-converging run does not recover.
"""

import numpy as np

__all__ = ["Squarem", "pack", "unpack"]

# Growth of the largest step length after an accepted longest step (and its shrinkage
# after a fall-back).
_STEP_FACTOR = 4.0


def pack(params, learn_temperature, gate_scale=1.0):
    """The unconstrained vector of an EM iterate (see the module documentation).

    ``gate_scale`` divides the gate parameters (``tau`` for the temperature gate).
    """
    parts = [params.gate_coef.ravel() / gate_scale, params.gate_intercept / gate_scale]
    if learn_temperature:
        parts.append([np.log(params.temperature)])
    parts += [params.expert_coef.ravel(), params.expert_intercept, np.log(params.expert_var)]
    return np.concatenate(parts)


def unpack(vector, like, learn_temperature, var_floor, gate_scale=1.0):
    """The iterate of an unconstrained vector; ``like`` gives the shapes and the held values.

    The variances are floored at ``var_floor``; the gate is multiplied by ``gate_scale``.
    """
    k, d = like.expert_coef.shape
    pos = 0

    def take(count):
        nonlocal pos
        out = vector[pos:pos + count]
        pos += count
        return out

    gate_coef = take(k * d).reshape(k, d) * gate_scale
    gate_intercept = take(k) * gate_scale
    with np.errstate(over="ignore"):  # an extrapolated log tau may overflow: refused later
        temperature = float(np.exp(take(1)[0])) if learn_temperature else like.temperature
    expert_coef = take(k * d).reshape(k, d).copy()
    expert_intercept = take(k).copy()
    with np.errstate(over="ignore"):
        expert_var = np.maximum(np.exp(take(k)), var_floor)
    return like._replace(gate_coef=gate_coef, gate_intercept=gate_intercept,
                         temperature=temperature, expert_coef=expert_coef,
                         expert_intercept=expert_intercept, expert_var=expert_var)


class Squarem:
    """Step lengths of the SQUAREM cycles of one EM run.

    Parameters
    ----------
    learn_temperature : bool
        Whether ``log tau`` is part of the vector.
    var_floor : float
        The variance floor of the run.
    gate_scale : float, default=1.0
        Divides the gate parameters in the vector (the held ``tau`` of the temperature
        gate).
    smallest_temperature : float, default=0.0 (>= 0)
        An extrapolated learned ``tau`` at or below it is not tried (the family's
        ``smallest_fitted_temperature``).

    Attributes
    ----------
    step_max : float
        The current bound on ``|alpha|``.
    n_cycles, n_fallbacks : int
        Cycles run, and cycles that kept the plain EM iterate.
    """

    def __init__(self, learn_temperature, var_floor, gate_scale=1.0, smallest_temperature=0.0):
        self.learn_temperature = bool(learn_temperature)
        self.smallest_temperature = float(smallest_temperature)
        self.gate_scale = float(gate_scale)
        self.var_floor = float(var_floor)
        self.step_max = 1.0
        self.n_cycles = 0
        self.n_fallbacks = 0
        self._alpha = -1.0

    def extrapolate(self, params0, params1, params2):
        """The extrapolated iterate ``u'`` from ``u0, F(u0), F(F(u0))``, or None.

        None when it is not finite, its temperature included (the cycle then keeps
        ``params2``).
        """
        self.n_cycles += 1
        u0, u1, u2 = (pack(p, self.learn_temperature, self.gate_scale)
                      for p in (params0, params1, params2))
        r = u1 - u0
        v = u2 - u1 - r
        norm_v = float(np.linalg.norm(v))
        alpha = -float(np.linalg.norm(r)) / norm_v if norm_v > 0 else -1.0
        alpha = max(min(alpha, -1.0), -self.step_max)
        self._alpha = alpha
        u = u0 - 2.0 * alpha * r + alpha * alpha * v
        if not np.all(np.isfinite(u)):
            return None
        extrapolated = unpack(u, params2, self.learn_temperature, self.var_floor,
                              self.gate_scale)
        # A long step in log tau can overflow tau, or take it below what the family fits
        # (the activation gate's curvature overflows there): no point to try.
        if self.learn_temperature and not (
                self.smallest_temperature < extrapolated.temperature < np.inf):
            return None
        return extrapolated

    def accept(self):
        """The stabilised point was kept: lengthen the steps if the longest was taken."""
        if self._alpha <= -self.step_max:
            self.step_max *= _STEP_FACTOR

    def fall_back(self):
        """The plain EM iterate was kept: shorten the steps."""
        self.n_fallbacks += 1
        self.step_max = max(1.0, self.step_max / _STEP_FACTOR)
