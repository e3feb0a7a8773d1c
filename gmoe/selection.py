r"""Choosing the number of experts: BIC, AIC, ICL and cross-validated log-likelihood.

:func:`select_n_experts` fits :class:`~gmoe.GaussianMoERegressor` for each candidate
number of experts and scores the fits by one criterion (lower is better except for
``'cv'``):

* ``'bic'``: ``-2 L + p log n``;
* ``'aic'``: ``-2 L + 2 p``;
* ``'icl'``: ``BIC + 2 EN``, with ``EN = -sum_i w_i sum_j r_ij log r_ij >= 0`` the
  entropy of the responsibilities (Biernacki, Celeux & Govaert 2000): ICL penalises fits
  whose experts overlap, so it prefers well-separated experts;
* ``'cv'``: the held-out conditional log-likelihood per unit of weight, averaged over
  :class:`~sklearn.model_selection.KFold` folds (higher is better).

``L`` is the (weighted) log-likelihood, ``p`` the number of free parameters on the
identifiable scale and ``n`` the sum of the sample weights (the number of rows without
weights), as in :class:`gmoe.inference.MoEResults`.
"""

import numbers
import warnings
from dataclasses import dataclass, field

import numpy as np

from ._validation import check_sample_weight, rows_with_weight, weighted_total
from .estimator import GaussianMoERegressor
from .gates import GatingFamily
from .utils import check_random_state

__all__ = ["SelectionResult", "select_n_experts"]

CRITERIA = ("bic", "aic", "icl", "cv")
_COLUMNS = ("n_experts", "n_params", "log_lik", "aic", "bic", "icl", "entropy", "cv_log_lik",
            "converged", "n_iter")


@dataclass
class SelectionResult:
    """The outcome of :func:`select_n_experts`.

    Attributes
    ----------
    criterion : str
        The criterion that made the choice.
    n_experts : int
        The chosen number of experts.
    table : list of dict
        One row per candidate, with keys ``n_experts``, ``n_params``, ``log_lik``,
        ``aic``, ``bic``, ``icl``, ``entropy``, ``cv_log_lik`` (NaN unless
        ``criterion='cv'``), ``converged``, ``n_iter``, and ``error`` (the message, when
        the fit raised; its numbers are then NaN).
    best_estimator : GaussianMoERegressor
        Fitted on all the data with the chosen number of experts.
    estimators : dict of int to GaussianMoERegressor
        Every candidate's fit on all the data.
    """

    criterion: str
    n_experts: int
    table: list
    best_estimator: GaussianMoERegressor = field(repr=False)
    estimators: dict = field(repr=False, default_factory=dict)

    def scores(self):
        """The criterion of every candidate, ``{n_experts: value}``.

        Returns
        -------
        dict of int to float
            ``criterion`` value of each candidate number of experts (``cv_log_lik`` for
            ``criterion='cv'``).
        """
        key = "cv_log_lik" if self.criterion == "cv" else self.criterion
        return {row["n_experts"]: row[key] for row in self.table}

    def __str__(self):
        columns = [c for c in _COLUMNS if c != "cv_log_lik" or self.criterion == "cv"]
        key = "cv_log_lik" if self.criterion == "cv" else self.criterion
        cells = [[_fmt(row[c]) for c in columns] for row in self.table]
        widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
        head = "  ".join(c.rjust(w) for c, w in zip(columns, widths, strict=True))
        best = "lowest" if self.criterion != "cv" else "highest"
        lines = [f"select_n_experts: criterion={self.criterion!r} ({best} {key} wins), "
                 f"chosen n_experts={self.n_experts}", head, "-" * len(head)]
        for row, cell in zip(self.table, cells, strict=True):
            mark = "  <-" if row["n_experts"] == self.n_experts else ""
            err = f"  error: {row['error']}" if row.get("error") else ""
            lines.append("  ".join(s.rjust(w) for s, w in zip(cell, widths, strict=True))
                         + mark + err)
        return "\n".join(lines)


def _fmt(value):
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if value is None or not np.isfinite(value):
        return "nan"
    return f"{value:.6g}"


def _n_params(est, n_features):
    if est.n_experts == 1:
        # One expert: the gate is identically 1, none of its parameters is free.
        return n_features + 2
    return int(est._n_parameters())


def _entropy(est, X, y, sample_weight):
    # Over the rows of positive weight only: a row of weight 0 adds nothing, and one far
    # beyond every expert's reach has no responsibilities at all.
    X, y, sample_weight = rows_with_weight(X, y, sample_weight)
    resp = est.predict_responsibilities(X, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(resp > 0, resp * np.log(resp), 0.0)
    return -weighted_total(sample_weight, terms.sum(axis=1)) + 0.0  # no "-0"


def _cv_log_lik(params, X, y, sample_weight, n_splits, seed):
    # Imported here: scikit-learn's model selection (~0.1 s) is not needed by a fit.
    from sklearn.model_selection import KFold

    folds = KFold(n_splits=n_splits, shuffle=True, random_state=seed)
    scores = []
    for train, test in folds.split(X):
        est = GaussianMoERegressor(**params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X[train], y[train], sample_weight=sample_weight[train])
        w = sample_weight[test]
        if not np.any(w > 0):  # a fold of rows of weight 0 holds nothing to score
            continue
        scores.append(weighted_total(w, est.score_samples(X[test], y[test])) / float(w.sum()))
    return float(np.mean(scores)) if scores else np.nan


def _derived_seed(base, key):
    """An int32 seed for ``key``, from ``base``: independent streams for different keys."""
    return int(np.random.SeedSequence([base, key]).generate_state(1)[0] >> 1)


def _cap_top_k(params, n_experts):
    """Cap a top-K option at ``n_experts`` in place: all ``k`` experts selected is top-``k``.

    The option is capped both where it is given by name (``top_k=``) and where it is an
    option of a family instance passed as ``gating=`` (rebuilt through its ``options``).
    """
    if isinstance(params.get("top_k"), numbers.Integral) and params["top_k"] > n_experts:
        params["top_k"] = n_experts
    gating = params.get("gating")
    if isinstance(gating, GatingFamily):
        options = gating.options()
        top_k = options.get("top_k")
        if isinstance(top_k, numbers.Integral) and top_k > n_experts:
            params["gating"] = type(gating).from_options(
                n_experts=n_experts, **dict(options, top_k=n_experts))


def select_n_experts(X, y, n_experts=range(1, 6), criterion="bic", *, n_init=5,
                     random_state=None, cv=5, sample_weight=None, **estimator_params):
    """Fit each candidate number of experts and choose one by an information criterion.

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    n_experts : iterable of int, default=range(1, 6)
        Candidate numbers of experts (distinct, >= 1).
    criterion : {'bic', 'aic', 'icl', 'cv'}, default='bic'
        Lower is better for 'bic', 'aic' and 'icl'; higher held-out log-likelihood for
        'cv'. Every criterion but 'cv' is reported in the table either way.
    n_init : int, default=5
        Starts per fit (the best log-likelihood is kept).
    random_state : int, RandomState instance, Generator or None, default=None
        Seeds every fit and the folds; the same value gives the same result. A candidate's
        fits are seeded by its number of experts, not by its place in ``n_experts``, and
        every candidate is scored on the same folds: the comparison is paired, and a
        candidate's row does not depend on which others are listed.
    cv : int, default=5
        Number of KFold splits (shuffled) for ``criterion='cv'``.
    sample_weight : array-like of shape (n_samples,), default=None
        Frequency weights of the rows (a weight of 2 counts a row twice), used in every
        fit and criterion; BIC's sample size is their sum, so they must be on the scale of
        counts.
    **estimator_params
        Passed to :class:`~gmoe.GaussianMoERegressor` (``gating``, ``tol``, ...).

    Returns
    -------
    SelectionResult
        ``.n_experts`` (the choice), ``.table`` (one dict per candidate; ``print`` shows
        it) and ``.best_estimator``.

    Notes
    -----
    Ties go to the smaller number of experts. A candidate whose fit raises is kept in
    the table with its error and NaN criteria, and a warning names it; a fit's own
    warnings are issued at the caller's line, prefixed ``n_experts=k:``. With one expert
    the gate is identically 1 and carries no free parameter, whatever the family. A
    top-K gate's ``top_k`` (given by name or as a family instance's option) is capped at
    each candidate's number of experts (a candidate with fewer experts than ``top_k``
    selects every one of them).

    Examples
    --------
    >>> import gmoe
    >>> from gmoe.selection import select_n_experts
    >>> truth = gmoe.MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]],
    ...                            [1.0, -1.0], [0.05, 0.05])
    >>> X = gmoe.make_design(1000, "uniform", random_state=0)
    >>> y = gmoe.sample_moe(truth, X, random_state=1)
    >>> select_n_experts(X, y, n_experts=[1, 2, 3], n_init=2, random_state=0).n_experts
    2
    """
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {list(CRITERIA)}, got "
                         f"criterion={criterion!r}.")
    candidates = list(n_experts)
    bad = [k for k in candidates
           if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1]
    if not candidates or bad or len(set(candidates)) != len(candidates):
        raise ValueError("n_experts must be a non-empty iterable of distinct integers >= 1, "
                         f"got {candidates!r}.")
    if criterion == "cv" and (isinstance(cv, bool) or not isinstance(cv, numbers.Integral)
                              or cv < 2):
        raise ValueError(f"cv must be an integer >= 2, got cv={cv!r}.")
    X = np.ascontiguousarray(np.asarray(X, dtype=np.float64))
    y = np.ascontiguousarray(np.asarray(y, dtype=np.float64))
    if X.ndim != 2:
        raise ValueError(f"X must be a 2-D array, got a {X.ndim}-D array of shape {X.shape}. "
                         "Reshape your data with X.reshape(-1, 1) if it has a single feature.")
    sw = check_sample_weight(sample_weight, X.shape[0])
    total_weight = float(sw.sum())
    base = int(check_random_state(random_state).integers(0, np.iinfo(np.int32).max))
    seeds = [_derived_seed(base, k) for k in candidates]
    fold_seed = _derived_seed(base, 0)  # no candidate has 0 experts

    key = "cv_log_lik" if criterion == "cv" else criterion
    table, estimators = [], {}
    for k, seed in zip(candidates, seeds, strict=True):
        params = dict(estimator_params, n_experts=int(k), n_init=n_init,
                      random_state=int(seed))
        _cap_top_k(params, int(k))
        row = dict.fromkeys(_COLUMNS, np.nan)
        row.update(n_experts=int(k), converged=False, n_iter=0, error=None)
        try:
            # The fit's warnings are shown at the caller's line, naming the candidate.
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                est = GaussianMoERegressor(**params).fit(X, y, sample_weight=sample_weight)
            for warning in caught:
                warnings.warn(f"n_experts={int(k)}: {warning.message}", warning.category,
                              stacklevel=2)
            log_lik = weighted_total(sw, est.score_samples(X, y))
            p = _n_params(est, X.shape[1])
            entropy = _entropy(est, X, y, sw)
            bic = -2.0 * log_lik + p * np.log(total_weight)
            row.update(n_params=p, log_lik=log_lik, aic=-2.0 * log_lik + 2.0 * p, bic=bic,
                       icl=bic + 2.0 * entropy, entropy=entropy,
                       converged=bool(est.converged_), n_iter=int(est.n_iter_))
            if criterion == "cv":
                row["cv_log_lik"] = _cv_log_lik(params, X, y, sw, cv, fold_seed)
            estimators[int(k)] = est
        except (ValueError, FloatingPointError, np.linalg.LinAlgError) as err:
            row["error"] = str(err)
        if row["error"] is None and not np.isfinite(row[key]):
            row["error"] = f"the fit's {key} is {float(row[key])}, not a finite number"
        table.append(row)

    values = np.array([row[key] for row in table], dtype=np.float64)
    if not np.any(np.isfinite(values)):
        raise ValueError("Every candidate fit failed; see the errors: "
                         + "; ".join(f"n_experts={r['n_experts']}: {r['error']}" for r in table))
    failed = [row for row in table if row["error"] is not None]
    if failed:
        warnings.warn(
            "These candidates could not be fitted and are left out of the choice: "
            + "; ".join(f"n_experts={r['n_experts']}: {r['error']}" for r in failed),
            UserWarning, stacklevel=2)
    sign = -1.0 if criterion == "cv" else 1.0
    order = sorted((sign * v, k) for v, k in zip(values, candidates, strict=True)
                   if np.isfinite(v))
    chosen = int(order[0][1])
    return SelectionResult(criterion=criterion, n_experts=chosen, table=table,
                           best_estimator=estimators[chosen], estimators=estimators)
