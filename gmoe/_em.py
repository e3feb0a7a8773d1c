"""One EM run of the estimator: the E- and M-steps, SQUAREM cycles and the stopping rule.

:class:`EMRunMixin` holds the methods of :class:`~gmoe.GaussianMoERegressor` that run EM
from one start on the fit's internal data, through its passes (:mod:`gmoe._passes`: block
by block, or on complete expert-major arrays); the estimator itself validates, chooses the
starts and keeps the best run. :class:`_Params` is one EM iterate.
"""

import warnings

import numpy as np
from threadpoolctl import ThreadpoolController

from ._acceleration import Squarem
from ._stopping import TOPK_WINDOW, StoppingRule, compute_newton_decrement
from .exceptions import DegenerateExpertWarning
from .gates import GateParams
from .model import MixingMeasure

__all__ = ["EMRunMixin"]

# An expert whose share of the total weight falls below this is numerically empty.
_EMPTY_SHARE = 1e-8
# SQUAREM cycles run only while each rise of L under plain EM is at least this fraction of
# the one before (slow convergence: linear with a rate near 1, or sublinear).
SQUAREM_MIN_RATE = 0.3

_THREADPOOLS = None


def _single_threaded_blas():
    """Context that holds BLAS to one thread.

    A fit's matrix products are tall and skinny (n x (d + 1)); BLAS threads buy nothing on
    them, and their spinning slowed a 1e5-row fit about twofold (starts included).
    """
    global _THREADPOOLS
    if _THREADPOOLS is None:
        _THREADPOOLS = ThreadpoolController()
    return _THREADPOOLS.limit(limits=1, user_api="blas")


class _DegenerateRun(Exception):
    """Raised inside one EM run when ``on_degenerate='restart'`` discards it."""


class EMRunMixin:
    """EM from one start (mixed into :class:`~gmoe.GaussianMoERegressor`)."""

    # ------------------------------------------------------------------ EM
    # The passes over the data (E-step, M-step) belong to a passes object
    # (gmoe._passes): block by block for the families that fit on blocks, on complete
    # expert-major arrays for the others.
    def _find_degenerate(self, params, weight_sums, total_weight, var_floor):
        collapsed_var = params.expert_var <= var_floor * (1.0 + 1e-9)
        empty = weight_sums <= _EMPTY_SHARE * total_weight
        return [int(j) for j in np.flatnonzero(collapsed_var | empty)]

    def _stopping_rule(self, family, passes, var_floor, enabled=True):
        """The stopping rule of one run (gmoe._stopping), on the internal data."""
        learn = self._learns_temperature(family)
        X, y, sample_weight = passes.rows()

        def evaluate(params):
            return compute_newton_decrement(params.to_measure(family), X, y, sample_weight,
                                            learn_temperature=learn, var_floor=var_floor,
                                            tol=self.tol)

        # A gate whose selection moves (top-K with top_k < n_experts) is not differentiable:
        # L must also have settled over a window of iterations.
        selected = family.selected_experts()
        sparse = selected is not None and selected < self.n_experts
        return StoppingRule(self.tol, evaluate, window=TOPK_WINDOW if sparse else 0,
                            enabled=enabled)

    def _em_iterations(self, family, params, passes, var_floor, max_iter=None, stop=True):
        """One EM run from ``params``, accelerated by SQUAREM unless ``acceleration=None``.

        Runs ``max_iter`` EM steps at most (the estimator's by default), and without the
        stopping rule's checks when ``stop`` is False (the short runs of 'short_em').
        Returns ``(params, trace, converged, n_iter, degenerate, rule)``: the last iterate,
        the mean log-likelihood of the best point after every EM step (the start's first),
        whether the stopping rule held, the EM steps done, the collapsed experts, and the
        :class:`~gmoe._stopping.StoppingRule` (its last decrement).
        """
        max_iter = self.max_iter if max_iter is None else max_iter
        total_weight = passes.total_weight
        rule = self._stopping_rule(family, passes, var_floor, enabled=stop)
        squarem = None
        if self.acceleration is not None:
            # The S3 step length is scale-dependent: a temperature gate's extrapolation runs
            # on its identifiable gate gamma = beta / tau (tau held).
            identifiable = family.identifiable_gate(params.gate)
            gate_scale = 1.0
            if params.gate.temperature is not None and identifiable.temperature:
                gate_scale = params.gate.temperature / identifiable.temperature
            squarem = Squarem(self._learns_temperature(family), var_floor, gate_scale,
                              family.smallest_fitted_temperature)
        state, log_lik = passes.e_step(params)
        if not np.isfinite(log_lik):
            raise FloatingPointError("the start has a non-finite log-likelihood")
        rule.update(log_lik, params)
        trace = [log_lik / total_weight]
        converged = False
        degenerate = set()
        n_iter = 0

        def em_step(params, state):
            """One EM step; None (and a warning) when it produced non-finite values."""
            nonlocal n_iter
            n_iter += 1
            new_params, weight_sums, hint = passes.m_step(params, state, var_floor)
            # The new responsibilities overwrite the old ones (the same arrays).
            state, new_log_lik = passes.e_step(new_params, hint)
            if not np.isfinite(new_log_lik) or not new_params.is_finite():
                return None
            found = self._find_degenerate(new_params, weight_sums, total_weight, var_floor)
            return new_params, state, new_log_lik, found

        def keep(found):
            if found and self.on_degenerate == "restart":
                raise _DegenerateRun(found)
            degenerate.update(found)

        # Plain EM's last measured rate: a rise of L over the one before it.
        rate, previous_rise = None, None
        while n_iter < max_iter:
            # A SQUAREM cycle spends a fourth E-step on three EM steps; it pays only where
            # EM is slow. Plain steps until a rate is measured, and while each rise of L is
            # below SQUAREM_MIN_RATE times the one before.
            plain = (squarem is None or max_iter - n_iter < 3 or rate is None
                     or rate < SQUAREM_MIN_RATE)
            step = em_step(params, state)
            if step is None:
                self._warn_non_finite(n_iter)
                break
            params1, state, log_lik1, found = step
            keep(found)
            trace.append(log_lik1 / total_weight)
            rise = log_lik1 - log_lik
            if previous_rise is not None and previous_rise > 0:
                rate = rise / previous_rise
            previous_rise = rise
            if plain:
                params, log_lik = params1, log_lik1
            else:
                step = em_step(params1, state)
                if step is None:
                    params, log_lik = params1, log_lik1
                    self._warn_non_finite(n_iter)
                    break
                params2, state, log_lik2, found = step
                keep(found)
                trace.append(log_lik2 / total_weight)
                if rise > 0:
                    rate = (log_lik2 - log_lik1) / rise
                # The cycle may end off the plain path: the next rise starts a new measure.
                previous_rise = None
                accepted = None
                extrapolated = squarem.extrapolate(params, params1, params2)
                if extrapolated is not None:
                    # A cycle's second plain EM iterate is kept (the passes reuse arrays).
                    saved = passes.save(state)
                    stabilised = None
                    ext_state, ext_log_lik = passes.e_step(extrapolated)
                    if np.isfinite(ext_log_lik):
                        stabilised = em_step(extrapolated, ext_state)
                    else:
                        n_iter += 1  # the budget counts the cycle's three EM steps
                    # The global safeguard: never below the plain EM iterate.
                    if stabilised is not None and stabilised[2] >= log_lik2:
                        accepted = stabilised
                if accepted is None:
                    squarem.fall_back()
                    params, log_lik = params2, log_lik2
                    if extrapolated is not None:
                        state = passes.restore(saved)
                    else:
                        n_iter += 1
                else:
                    squarem.accept()
                    params, state, log_lik, found = accepted
                    keep(found)
                trace.append(log_lik / total_weight)
            if self.verbose > 1:
                print(f"  iteration {n_iter:4d}  mean log-likelihood {trace[-1]:.10g}")
            if rule.update(log_lik, params):
                converged = True
                break
            # Asked for only when it can be taken: the rule then knows its next iterate is
            # the move.
            move = rule.take_move() if n_iter < max_iter else None
            if move is not None:
                # The failed check's Newton step or curvature search raised L: continue
                # from there (one step), past the stretches where EM crawls.
                params = _Params.from_measure(move)
                state, log_lik = passes.e_step(params)
                n_iter += 1
                rate = previous_rise = None  # a new path: its rate is measured afresh
                trace.append(log_lik / total_weight)
                if self.verbose > 1:
                    print(f"  Newton or curvature move: mean log-likelihood {trace[-1]:.10g}")
                if rule.update(log_lik, params):
                    # The run ends at the move, which no EM step has checked: did it empty
                    # an expert?
                    keep(self._find_degenerate(params, passes.weight_sums(state),
                                               total_weight, var_floor))
                    converged = True
                    break
        return params, np.asarray(trace), converged, n_iter, sorted(degenerate), rule

    @staticmethod
    def _warn_non_finite(n_iter):
        # The last good iterate is kept rather than NaN parameters.
        warnings.warn(
            f"EM produced non-finite values at iteration {n_iter}; stopping at the last "
            "finite iterate. Increase reg_var or scale X.", DegenerateExpertWarning,
            stacklevel=4)


class _Params:
    """The parameters of one EM iterate (plain arrays; no validation).

    The gate is a :class:`~gmoe.gates.GateParams`; ``gate_coef``, ``gate_intercept`` and
    ``temperature`` read it, and :meth:`_replace` accepts them too (the conditioning and
    the acceleration work on those arrays).
    """

    __slots__ = ("gate", "expert_coef", "expert_intercept", "expert_var")

    def __init__(self, gate, expert_coef, expert_intercept, expert_var):
        self.gate = gate
        self.expert_coef = expert_coef
        self.expert_intercept = expert_intercept
        self.expert_var = expert_var

    @property
    def gate_coef(self):
        return self.gate.coef

    @property
    def gate_intercept(self):
        return self.gate.intercept

    @property
    def temperature(self):
        return self.gate.temperature

    def _replace(self, **changes):
        gate = changes.pop("gate", self.gate)
        if {"gate_coef", "gate_intercept", "temperature"} & changes.keys():
            gate = GateParams(changes.pop("gate_coef", gate.coef),
                              changes.pop("gate_intercept", gate.intercept),
                              changes.pop("temperature", gate.temperature))
        fields = {name: getattr(self, name) for name in self.__slots__}
        fields.update(changes, gate=gate)
        return _Params(**fields)

    def is_finite(self):
        arrays = [self.gate.coef, self.gate.intercept, self.expert_coef, self.expert_intercept,
                  self.expert_var]
        ok = all(np.all(np.isfinite(a)) for a in arrays)
        return ok and (self.gate.temperature is None or np.isfinite(self.gate.temperature))

    @classmethod
    def from_measure(cls, measure):
        gate = GateParams(np.array(measure.gate_coef), np.array(measure.gate_intercept),
                          measure.temperature)
        return cls(gate, np.array(measure.expert_coef), np.array(measure.expert_intercept),
                   np.array(measure.expert_var))

    def to_measure(self, family):
        return MixingMeasure(self.gate.coef, self.gate.intercept, self.expert_coef,
                             self.expert_intercept, self.expert_var, gating=family,
                             temperature=self.gate.temperature, rebase=True)
