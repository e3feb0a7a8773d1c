"""The top-K sparse softmax gate: a softmax over the ``top_k`` best-scored experts.

The selection score is ``beta1^T x + beta0`` (``selection='affine'``) or ``beta1^T x``
(``'linear'``); ties go to the lower index; the gate is exactly 0 outside the selection
(see :ref:`theory-topk`).

The gate depends on its parameters partly through the selection, which is piecewise
constant: with ``top_k = 1`` the gate objective has zero gradient and EM alone never moves
the gate. The M-step therefore has two parts:

1. the within-selection softmax by Newton with the active sets held (``top_k > 1``),
   accepted only if the log-likelihood ``L`` itself does not fall. Where it falls (the
   step moved a selection boundary across rows), the step is recomputed with every
   boundary that the rows cross held in place
   (:meth:`TopKGating.boundary_holding_directions`): the within-selection weights then
   move without the selection;
2. the selection boundaries moved by coordinate-wise search on ``L`` with the experts
   held. Along one gate coordinate ``t`` a row's selection of expert ``j`` flips at one
   breakpoint, so ``L(t)`` changes only at the rows' breakpoints. With ``top_k = 1`` the
   gate weight is 1 and ``L(t)`` is piecewise constant: it is maximised exactly by a
   sorted scan of the breakpoints. With ``top_k > 1`` the within-selection weights vary
   too, and ``L`` is evaluated at the midpoints of the interval holding the current
   value and of the intervals 1, 2, 3, 4, 6, 8, ..., 64 breakpoints away on each side,
   all of them in one pass over the moved expert's row (:mod:`gmoe.gates._topk_search`).
   The far candidates matter: beside a boundary, the rows that the experts staying
   selected explain alike gain nothing from changing side, so ``L`` can be flat over
   several breakpoints before one that counts. A move is taken only if ``L`` rises.
"""

import numpy as np
import scipy.linalg

from .. import _kernels
from .._expert_major import Workspace, log_softmax_columns
from .._validation import check_int_in_range, check_option
from ._linear import maximise_softmax_gate_columns
from ._topk_search import (
    TopKLikelihood,
    compute_log_likelihood,
    compute_topk_mask_columns,
    move_boundaries,
)
from .base import GateParams, GatingFamily
from .softmax import SoftmaxGating

__all__ = ["TOPK_SELECTIONS", "TopKGating", "compute_log_likelihood", "compute_topk_mask",
           "compute_topk_mask_columns"]

TOPK_SELECTIONS = ("affine", "linear")


def compute_topk_mask(scores, top_k):
    """Boolean mask of the ``top_k`` largest scores of each row, ties to the lower index.

    Parameters
    ----------
    scores : ndarray of shape (n_samples, n_experts)
    top_k : int

    Returns
    -------
    ndarray of bool, shape (n_samples, n_experts)
    """
    return compute_topk_mask_columns(np.array(np.asarray(scores, dtype=np.float64).T,
                                              order="C"), top_k).T


def _check_top_k(top_k, n_experts=None):
    """``top_k`` as an int in ``[1, n_experts]`` (``>= 1`` when ``n_experts`` is None)."""
    if n_experts is not None:
        return check_int_in_range(top_k, "top_k", 1, n_experts)
    if isinstance(top_k, bool) or not isinstance(top_k, int | np.integer) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got top_k={top_k!r}.")
    return int(top_k)


class TopKGating(GatingFamily):
    """Top-K sparse softmax: softmax of the logits over the ``top_k`` best-scored experts.

    Parameters
    ----------
    top_k : int
        Number of active experts per input, ``1 <= top_k``; checked against the number of
        experts wherever the family meets one (:meth:`check_n_experts`).
    selection : {'affine', 'linear'}, default='affine'
        Selection score: ``beta1^T x + beta0`` or ``beta1^T x`` (ties to the lower index).

    Raises
    ------
    ValueError
        When ``top_k`` is not an integer >= 1 or ``selection`` is not one of the above.
    """

    name = "topk"
    differentiable = False
    linear_logits = True
    scales_design = True
    OPTIONS = ("top_k", "topk_selection")
    FIT_MAY_CHANGE = ("top_k",)

    def __init__(self, top_k, selection="affine"):
        # Checked here, not only in from_options: an instance passed as gating= reaches
        # the fit directly, where any selection but 'affine' would count as linear.
        self.top_k = _check_top_k(top_k)
        self.selection = check_option(selection, "selection", TOPK_SELECTIONS)

    @property
    def selection_uses_intercept(self):
        """Affine selection scores include ``beta0``; linear ones do not."""
        return self.selection == "affine"

    @property
    def centres_design(self):
        """Affine selection absorbs a shift of ``x`` in ``beta0``; linear selection does not."""
        return self.selection == "affine"

    @classmethod
    def from_options(cls, *, n_experts=None, top_k=None, topk_selection="affine", **ignored):
        """Build from the estimator's options; ``top_k`` is required.

        Parameters
        ----------
        n_experts : int, optional
            When given, ``top_k`` is checked against it.
        top_k : int
            ``1 <= top_k <= n_experts``.
        topk_selection : {'affine', 'linear'}, default='affine'
        **ignored
            Options of other families.

        Returns
        -------
        TopKGating
        """
        check_option(topk_selection, "topk_selection", TOPK_SELECTIONS)
        if top_k is None:
            raise ValueError("top_k must be an integer in [1, n_experts] for gating='topk', "
                             "got top_k=None.")
        return cls(_check_top_k(top_k, n_experts), topk_selection)

    def check_n_experts(self, n_experts):  # noqa: D102 (inherited)
        _check_top_k(self.top_k, n_experts)  # top_k <= n_experts, from_options' message

    def options(self):  # noqa: D102 (inherited)
        return {"top_k": self.top_k, "topk_selection": self.selection}

    def describe(self):  # noqa: D102 (inherited)
        return f"topk (top_k={self.top_k}, {self.selection} selection)"

    def selection_scores(self, X, gate_coef, gate_intercept):
        """Scores that choose the active set, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``; added only for ``selection='affine'``.

        Returns
        -------
        ndarray of shape (n_samples, n_experts)
        """
        scores = X @ gate_coef.T
        if self.selection == "affine":
            scores = scores + gate_intercept
        return scores

    def active_mask(self, X, gate_coef, gate_intercept):
        """Boolean active set of each row, shape (n_samples, n_experts).

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
            Input data (no validation).
        gate_coef : ndarray of shape (n_experts, n_features)
            Gate slopes ``beta1``.
        gate_intercept : ndarray of shape (n_experts,)
            Gate intercepts ``beta0``.

        Returns
        -------
        ndarray of bool, shape (n_samples, n_experts)
            True for the ``top_k`` experts of each row (ties to the lower index).
        """
        return compute_topk_mask(self.selection_scores(X, gate_coef, gate_intercept), self.top_k)

    def _active_columns(self, ZT, theta):
        if self.selection == "affine":
            scores = theta @ ZT
        else:
            scores = np.ascontiguousarray(theta[:, :-1]) @ ZT[:-1]
        return compute_topk_mask_columns(scores, self.top_k)

    def log_gate_columns(self, ZT, params, workspace=None):  # noqa: D102 (inherited)
        workspace = Workspace() if workspace is None else workspace
        theta = np.column_stack([params.coef, params.intercept])
        # linear_log_gate_columns's arithmetic, with one product for the affine selection's
        # scores and the logits.
        log_gate = np.matmul(theta, ZT,
                             out=workspace.get("log_gate", (theta.shape[0], ZT.shape[1])))
        if self.top_k < theta.shape[0]:
            scores = log_gate
            if self.selection != "affine":
                scores = np.ascontiguousarray(theta[:, :-1]) @ ZT[:-1]
            _kernels.deactivate_into(compute_topk_mask_columns(scores, self.top_k), log_gate)
        log_softmax_columns(log_gate, workspace)
        return log_gate

    def initial_gate(self, data, temperature=None):
        """The dense softmax fit from zero: a first gate whose selection follows the labels.

        Parameters
        ----------
        data : GateData
        temperature : None
            Unused.

        Returns
        -------
        GateParams
        """
        return SoftmaxGating().initial_gate(data)

    def m_step(self, data, params):
        """Held-selection Newton, then a search over the selection boundaries.

        The boundaries are moved by maximising the log-likelihood itself, so the step
        reads the experts' log-densities from ``data``; ``L`` never falls.

        Parameters
        ----------
        data : GateData
        params : GateParams

        Returns
        -------
        params : GateParams
        log_gate : None
        """
        n_experts = params.intercept.shape[0]
        coef, intercept = params.coef, params.intercept
        likelihood = TopKLikelihood(self, data.ZT, data.get_expert_log_density(),
                                    data.sample_weight, workspace=data.workspace)
        log_lik = None
        if self.top_k > 1:
            start = np.column_stack([coef, intercept])
            if data.log_gate is None:
                inactive = ~likelihood.active(start)
            else:  # the log-gate at start is -inf exactly where start's selection is not
                inactive = np.isneginf(data.log_gate)
            free = np.arange(n_experts - 1)
            theta, _ = maximise_softmax_gate_columns(
                start, data.ZT, data.weighted_resp, data.row_total, free,
                inactive=inactive, max_iter=data.max_iter, workspace=data.workspace)
            log_lik = likelihood(start)
            after = likelihood(theta)
            if after < log_lik and self.top_k < n_experts:
                # The step moved a selection boundary across rows and L fell: the same
                # ascent with every boundary that the rows cross held in place.
                directions = self.boundary_holding_directions(start, data.ZT)
                if directions is not None:
                    theta, _ = maximise_softmax_gate_columns(
                        start, data.ZT, data.weighted_resp, data.row_total, free,
                        inactive=inactive, max_iter=data.max_iter, workspace=data.workspace,
                        directions=directions)
                    after = likelihood(theta)
            # The new parameters may also change the selection: keep them only if L holds.
            if after >= log_lik:
                coef = np.ascontiguousarray(theta[:, :-1])
                intercept = np.ascontiguousarray(theta[:, -1])
                log_lik = after
        if self.top_k < n_experts:
            coef, intercept = move_boundaries(likelihood, coef, intercept, log_lik)
        return GateParams(coef, intercept, None), None

    def boundary_holding_directions(self, theta, ZT):
        """A basis of the gate moves that hold every selection boundary the rows cross.

        Experts ``j`` and ``m`` trade places in a row's selection where their
        selection scores are equal, on the surface ``(theta_j - theta_m) z = 0`` (the
        coefficients alone with ``selection='linear'``). A move keeps that surface in
        place when ``theta_j - theta_m`` only scales: its part orthogonal to itself is
        held at 0. That is asked of every pair that decides some rows' selection (the
        ``top_k``-th and next-best experts) in both orders, so whose boundary lies among
        the rows. The held-selection Newton step of the M-step moves the within-selection
        weights and the boundaries together; at large n, moving a boundary across many
        rows lowers ``L`` and the step is refused, while this step keeps the boundaries
        (the search over them moves them) and moves the weights.

        Parameters
        ----------
        theta : ndarray of shape (n_experts, n_features + 1)
            The gate ``(beta1, beta0)``; the last expert's row (the reference) is held.
        ZT : ndarray of shape (n_features + 1, n_samples)
            The design with intercept, transposed.

        Returns
        -------
        ndarray of shape ((n_experts - 1) * (n_features + 1), m) or None
            An orthonormal basis of the allowed moves of the free rows (flattened row by
            row), or None when no boundary lies among the rows (every expert selected
            included) or no move is left.
        """
        n_experts, width = theta.shape
        if self.top_k >= n_experts:
            return None
        selection = slice(None) if self.selection == "affine" else slice(0, width - 1)
        scores = np.ascontiguousarray(theta[:, selection]) @ ZT[selection]
        # Descending scores, ties to the lower index (as the selection breaks them).
        order = np.argsort(-scores, axis=0, kind="stable")
        decided = set(zip(order[self.top_k - 1].tolist(), order[self.top_k].tolist(),
                          strict=True))
        constraints = []
        for j, m in sorted(decided):
            if j > m or (m, j) not in decided:
                continue
            gap = theta[j, selection] - theta[m, selection]
            if not np.any(gap):
                continue
            # The directions of the selection coordinates orthogonal to the gap.
            for u in scipy.linalg.null_space(gap[None, :]).T:
                row = np.zeros((n_experts, width))
                row[j, selection] += u
                row[m, selection] -= u
                constraints.append(row[:-1].ravel())  # the reference row is pinned
        if not constraints:
            return None
        basis = scipy.linalg.null_space(np.array(constraints))
        return basis if basis.shape[1] else None

    # ----------------------------------------------------------- identifiability
    def identifiable_gate(self, params):
        """With ``top_k = 1``, the gate rescaled to unit norm; otherwise ``params``.

        Only the selection regions are identifiable when one expert is selected: the gate
        is rescaled to unit Frobenius norm of ``(beta1, beta0)`` (of ``beta1`` alone, with
        ``beta0`` set to 0, for linear selection).

        Parameters
        ----------
        params : GateParams

        Returns
        -------
        GateParams
        """
        if self.top_k != 1:
            return params
        if self.selection == "linear":
            scale = np.linalg.norm(params.coef)
            intercept = np.zeros_like(params.intercept)
        else:
            scale = np.sqrt(np.sum(params.coef ** 2) + np.sum(params.intercept ** 2))
            intercept = params.intercept
        if scale == 0:
            return GateParams(params.coef, intercept, params.temperature)
        return GateParams(params.coef / scale, intercept / scale, params.temperature)

    def logit_derivatives(self, X, params, learn_temperature=False):
        """The softmax gate's, when every expert is selected (``top_k >= n_experts``).

        With fewer selected experts the log-likelihood is not differentiable in the gate.

        Parameters
        ----------
        X : ndarray of shape (n_samples, n_features)
        params : GateParams
        learn_temperature : bool, default=False

        Returns
        -------
        tuple
            As :meth:`GatingFamily.logit_derivatives`.
        """
        if self.top_k < params.intercept.shape[0]:
            return super().logit_derivatives(X, params, learn_temperature)
        return SoftmaxGating().logit_derivatives(X, params, learn_temperature)

    def n_flat_directions(self, n_experts, n_features):  # noqa: D102 (inherited)
        # With one selected expert only the selection regions matter. In one feature they
        # are intervals: their k - 1 boundary points are all the data identify (when every
        # expert's region appears), and linear selection's regions are x < 0 and x > 0
        # whatever the gate, so nothing is. In more features a common positive scale of
        # the gate leaves the regions unchanged (and linear selection ignores beta0); where
        # boundaries do not meet, each can have a scale of its own too, which depends on
        # where they lie and is not counted (the count is then an upper bound).
        if self.top_k != 1 or n_experts < 2:
            return 0
        linear = self.selection == "linear"
        if n_features == 1:
            free = 2 * (n_experts - 1)  # the non-reference experts' slopes and intercepts
            return free if linear else free - (n_experts - 1)
        return 1 + (n_experts - 1 if linear else 0)

    def selected_experts(self):
        """``top_k``.

        Returns
        -------
        int
        """
        return self.top_k

    def selection_only(self):
        """True with ``top_k = 1``: the selected weight is 1, only the regions count.

        Returns
        -------
        bool
        """
        return self.top_k == 1

    def undefined_parameter_errors(self):
        """With ``top_k = 1``: no weight error, and no intercept error for linear selection.

        Returns
        -------
        set of str
        """
        if self.top_k != 1:
            return set()
        return {"weight"} if self.selection == "affine" else {"weight", "gate_intercept"}
