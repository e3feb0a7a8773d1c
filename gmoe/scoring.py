"""The log-likelihood scorer for scikit-learn's model selection.

``GaussianMoERegressor.score`` is R^2, the regressor convention; choosing a number of
experts or a gate by cross-validation needs the held-out log-likelihood instead.
"""

import numpy as np
from sklearn.pipeline import Pipeline

from ._validation import check_sample_weight, weighted_total

__all__ = ["log_likelihood_scorer"]


def log_likelihood_scorer(estimator, X, y, sample_weight=None):
    """Mean conditional log-likelihood, a scorer for model selection (higher is better).

    Use as ``GridSearchCV(est, grid, scoring=gmoe.log_likelihood_scorer)``; ``est`` may
    be a :class:`~sklearn.pipeline.Pipeline` ending in the regressor (its other steps
    transform ``X``, which is what the regressor's log-likelihood is of).

    Parameters
    ----------
    estimator : GaussianMoERegressor or Pipeline
        A fitted estimator (anything with ``score_samples(X, y)``), or a fitted
        pipeline whose last step is one.
    X : array-like of shape (n_samples, n_features)
        Input data.
    y : array-like of shape (n_samples,)
        Target values.
    sample_weight : array-like of shape (n_samples,), default=None
        Weight of each row; ``None`` gives the plain mean.

    Returns
    -------
    float
        The (weighted) mean of ``log p(y_i | x_i)``.
    """
    if isinstance(estimator, Pipeline):
        # A pipeline's score_samples takes X alone: transform X by the steps before the
        # regressor, then ask the regressor.
        X = estimator[:-1].transform(X) if len(estimator) > 1 else X
        estimator = estimator[-1]
    log_lik = estimator.score_samples(X, y)
    if sample_weight is None:
        return float(np.mean(log_lik))
    sample_weight = check_sample_weight(sample_weight, log_lik.shape[0])
    return weighted_total(sample_weight, log_lik) / float(sample_weight.sum())
