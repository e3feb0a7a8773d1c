"""The warnings a finished fit owes its user: collapsed experts, no convergence, a trap.

Issued once the fit is kept (a warning turned into an error must not undo it), by
:meth:`gmoe.GaussianMoERegressor.fit`.
"""

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning

from .exceptions import DegenerateExpertWarning, GMoEWarning

__all__ = ["at_symmetric_point", "warn_about_the_fit"]

# A two-expert tanh/sigmoid gate is at its symmetric point when |beta1_1 + beta1_2| is
# below this times max(1, max |beta1|) (EM lands on that point exactly when it goes there).
_SYMMETRIC_RTOL = 1e-7


def at_symmetric_point(measure):
    """Whether ``measure``'s two-expert tanh/sigmoid gate has ``beta1_1 = -beta1_2``.

    To the relative tolerance a fit that went there reaches (the fit's warning and the
    standard errors' test share it).

    Parameters
    ----------
    measure : MixingMeasure

    Returns
    -------
    bool
    """
    scale = max(1.0, float(np.max(np.abs(measure.gate_coef))))
    return measure.is_symmetric_fixed_point(atol=_SYMMETRIC_RTOL * scale)


def warn_about_the_fit(measure, degenerate, converged, decrement, tol, max_iter, *,
                       stacklevel=2):
    """Warn of collapsed experts, of a run that did not converge, of a symmetric gate.

    Parameters
    ----------
    measure : MixingMeasure
        The kept fit.
    degenerate : list of int
        The experts that collapsed.
    converged : bool
        Whether EM met its stopping rule.
    decrement : object
        The stopping rule's last verdict (``converged(tol)``, ``gap``,
        ``curvature_gain``).
    tol : float
    max_iter : int
    stacklevel : int, default=2
        Of the warnings, counted from this function (2: its caller's line).
    """
    if degenerate:
        warnings.warn(
            f"Experts {degenerate} collapsed (variance at the floor reg_var * var(y) or "
            "weight near 0). The fit is finite but the likelihood may be unbounded there; "
            "use fewer experts, a larger reg_var, or on_degenerate='restart'.",
            DegenerateExpertWarning, stacklevel=stacklevel)
    if not converged:
        if decrement.converged(tol):
            why = ("the last step still raised the log-likelihood by more than tol (a "
                   "crawl, as along an over-specified fit's flat directions)")
        elif decrement.curvature_gain <= tol:
            why = f"the predicted gain to the maximum is {decrement.gap:.3g} > tol={tol:g}"
        else:
            why = (f"the log-likelihood still rises by {decrement.curvature_gain:.3g} "
                   "along a direction where it curves upward (a saddle or a plateau, as "
                   "over-specified fits cross; top-K: gates that sharpen together)")
        warnings.warn(
            f"EM did not converge in max_iter={max_iter} iterations: {why}. Increase "
            "max_iter or tol, or check the data.", ConvergenceWarning, stacklevel=stacklevel)
    if at_symmetric_point(measure):
        # The set is invariant under EM (theory page, identifiability): a start's path
        # that reaches it stays, wherever the maximum is.
        warnings.warn(
            "The fit is at the symmetric point of its two-expert "
            f"{measure.family.describe()} gate, gate_coef[0] = -gate_coef[1]: EM cannot "
            "leave that set once on it, so this may not be the maximum; the information "
            "is singular there (no standard errors), and a warm start or bootstrap() "
            "from a point exactly on it is refused. Refit with more starts (n_init), "
            "another random_state, or a learned temperature.", GMoEWarning,
            stacklevel=stacklevel)
