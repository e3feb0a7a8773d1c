"""One EM run of the estimator: the E- and M-steps, SQUAREM cycles and the stopping rule.

:class:`EMRunMixin` holds the methods of :class:`~gmoe.GaussianMoERegressor` that run EM
from one start on the fit's internal data (expert-major arrays, a shared workspace); the
estimator itself validates, chooses the starts and keeps the best run. :class:`_Params` is
one EM iterate.
"""

import warnings

import numpy as np
from threadpoolctl import ThreadpoolController

from ._acceleration import Squarem
from ._expert_major import e_step_columns
from ._stopping import TOPK_WINDOW, StoppingRule, compute_newton_decrement
from .exceptions import DegenerateExpertWarning
from .experts import GAUSSIAN_LINEAR, ExpertParams
from .gates import GateData, GateParams
from .model import MixingMeasure

__all__ = ["EMRunMixin"]

# An expert whose share of the total weight falls below this is numerically empty.
_EMPTY_SHARE = 1e-8
# Newton steps of the gate per EM iteration: warm-started, a couple of steps reach the
# M-step's optimum closely, and any rise of Q keeps EM monotone (generalised EM).
_GATE_STEPS_PER_ITERATION = 2

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
    # EM keeps responsibilities and log-gates expert-major, shape (n_experts, n_samples):
    # every pass over the samples is then a contiguous vectorised loop (gmoe._expert_major).
    def _gate_m_step(self, family, params, ZT, y, sample_weight, weighted_resp, log_gate,
                     workspace):
        """The gate's M-step from ``params``, whose log-gate is ``log_gate``.

        Returns the new parameters and, if known, their log-gate.
        """
        def expert_log_density():
            return GAUSSIAN_LINEAR.log_density_columns(
                ZT, y, ExpertParams(params.expert_coef, params.expert_intercept,
                                    params.expert_var))

        data = GateData(ZT, sample_weight, weighted_resp, expert_log_density,
                        learn_temperature=self._learns_temperature(family),
                        max_iter=_GATE_STEPS_PER_ITERATION, workspace=workspace,
                        log_gate=log_gate)
        gate, log_gate = family.m_step(data, params.gate)
        return params._replace(gate=gate), log_gate

    def _e_step(self, family, params, ZT, y, sample_weight, workspace, log_gate=None):
        """Responsibilities, weighted log-likelihood and the log-gate used (expert-major)."""
        if log_gate is None:
            log_gate = family.log_gate_columns(ZT, params.gate, workspace=workspace)
        resp, log_lik = e_step_columns(ZT, y, log_gate, params.expert_coef,
                                       params.expert_intercept, params.expert_var, workspace)
        return resp, float(np.dot(sample_weight, log_lik)), log_gate

    def _m_step(self, family, params, ZT, y, sample_weight, resp, log_gate, var_floor,
                workspace):
        weighted_resp = np.multiply(resp, sample_weight,
                                    out=workspace.get("weighted_resp", resp.shape))
        experts, weight_sums = GAUSSIAN_LINEAR.m_step(ZT, y, weighted_resp, var_floor, workspace)
        params = params._replace(expert_coef=experts.coef, expert_intercept=experts.intercept,
                                 expert_var=experts.var)
        params, log_gate = self._gate_m_step(family, params, ZT, y, sample_weight,
                                             weighted_resp, log_gate, workspace)
        return params, weight_sums, log_gate

    def _find_degenerate(self, params, weight_sums, total_weight, var_floor):
        collapsed_var = params.expert_var <= var_floor * (1.0 + 1e-9)
        empty = weight_sums <= _EMPTY_SHARE * total_weight
        return [int(j) for j in np.flatnonzero(collapsed_var | empty)]

    def _stopping_rule(self, family, X, y, sample_weight, var_floor, enabled=True):
        """The stopping rule of one run (gmoe._stopping), on the internal data."""
        learn = self._learns_temperature(family)

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

    def _em_iterations(self, family, params, ZT, y, sample_weight, var_floor, workspace,
                       max_iter=None, stop=True):
        """One EM run from ``params``, accelerated by SQUAREM unless ``acceleration=None``.

        Runs ``max_iter`` EM steps at most (the estimator's by default), and without the
        stopping rule's checks when ``stop`` is False (the short runs of 'short_em').
        Returns ``(params, trace, converged, n_iter, degenerate, rule)``: the last iterate,
        the mean log-likelihood of the best point after every EM step (the start's first),
        whether the stopping rule held, the EM steps done, the collapsed experts, and the
        :class:`~gmoe._stopping.StoppingRule` (its last decrement).
        """
        max_iter = self.max_iter if max_iter is None else max_iter
        total_weight = float(sample_weight.sum())
        rule = self._stopping_rule(family, ZT[:-1].T, y, sample_weight, var_floor,
                                   enabled=stop)
        squarem = None
        if self.acceleration is not None:
            # The S3 step length is scale-dependent: a temperature gate's extrapolation runs
            # on its identifiable gate gamma = beta / tau (tau held).
            identifiable = family.identifiable_gate(params.gate)
            gate_scale = 1.0
            if params.gate.temperature is not None and identifiable.temperature:
                gate_scale = params.gate.temperature / identifiable.temperature
            squarem = Squarem(self._learns_temperature(family), var_floor, gate_scale)
        resp, log_lik, log_gate = self._e_step(family, params, ZT, y, sample_weight, workspace)
        if not np.isfinite(log_lik):
            raise FloatingPointError("the start has a non-finite log-likelihood")
        rule.update(log_lik, params)
        trace = [log_lik / total_weight]
        converged = False
        degenerate = set()
        n_iter = 0
        # A cycle's two plain EM iterates are copied here (the passes reuse their arrays).
        saved = {}

        def em_step(params, resp, log_gate):
            """One EM step; None (and a warning) when it produced non-finite values."""
            nonlocal n_iter
            n_iter += 1
            new_params, weight_sums, log_gate = self._m_step(
                family, params, ZT, y, sample_weight, resp, log_gate, var_floor, workspace)
            # The new responsibilities overwrite the old ones (the same workspace array).
            resp, new_log_lik, log_gate = self._e_step(family, new_params, ZT, y,
                                                       sample_weight, workspace, log_gate)
            if not np.isfinite(new_log_lik) or not new_params.is_finite():
                return None
            found = self._find_degenerate(new_params, weight_sums, total_weight, var_floor)
            return new_params, resp, new_log_lik, log_gate, found

        def keep(found):
            if found and self.on_degenerate == "restart":
                raise _DegenerateRun(found)
            degenerate.update(found)

        def save(resp, log_gate):
            for name, array in (("resp", resp), ("log_gate", log_gate)):
                if array is None:
                    saved[name] = None
                    continue
                buffer = saved.get(name)
                if buffer is None or buffer.shape != array.shape:
                    buffer = saved[name] = np.empty_like(array)
                if buffer is not array:
                    np.copyto(buffer, array)
            return saved["resp"], saved["log_gate"]

        while n_iter < max_iter:
            plain = squarem is None or max_iter - n_iter < 3
            step = em_step(params, resp, log_gate)
            if step is None:
                self._warn_non_finite(n_iter)
                break
            params1, resp, log_lik1, log_gate, found = step
            keep(found)
            trace.append(log_lik1 / total_weight)
            if plain:
                params, log_lik = params1, log_lik1
            else:
                step = em_step(params1, resp, log_gate)
                if step is None:
                    params, log_lik = params1, log_lik1
                    self._warn_non_finite(n_iter)
                    break
                params2, resp, log_lik2, log_gate, found = step
                keep(found)
                trace.append(log_lik2 / total_weight)
                accepted = None
                extrapolated = squarem.extrapolate(params, params1, params2)
                if extrapolated is not None:
                    resp, log_gate = save(resp, log_gate)
                    stabilised = None
                    ext_resp, ext_log_lik, ext_log_gate = self._e_step(
                        family, extrapolated, ZT, y, sample_weight, workspace)
                    if np.isfinite(ext_log_lik):
                        stabilised = em_step(extrapolated, ext_resp, ext_log_gate)
                    else:
                        n_iter += 1  # the budget counts the cycle's three EM steps
                    # The global safeguard: never below the plain EM iterate.
                    if stabilised is not None and stabilised[2] >= log_lik2:
                        accepted = stabilised
                if accepted is None:
                    squarem.fall_back()
                    params, log_lik = params2, log_lik2
                    n_iter += 0 if extrapolated is not None else 1
                else:
                    squarem.accept()
                    params, resp, log_lik, log_gate, found = accepted
                    keep(found)
                trace.append(log_lik / total_weight)
            if self.verbose > 1:
                print(f"  iteration {n_iter:4d}  mean log-likelihood {trace[-1]:.10g}")
            if rule.update(log_lik, params):
                converged = True
                break
            move = rule.take_move()
            if move is not None and n_iter < max_iter:
                # The failed check's Newton step or curvature search raised L: continue
                # from there (one step), past the stretches where EM crawls.
                params = _Params.from_measure(move)
                resp, log_lik, log_gate = self._e_step(family, params, ZT, y, sample_weight,
                                                       workspace)
                n_iter += 1
                trace.append(log_lik / total_weight)
                if self.verbose > 1:
                    print(f"  Newton or curvature move: mean log-likelihood {trace[-1]:.10g}")
                if rule.update(log_lik, params):
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
