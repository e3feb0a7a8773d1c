"""Matplotlib views of a Gaussian mixture of experts.

Every function takes a :class:`~gmoe.MixingMeasure` or a fitted estimator (read through
its ``mixing_measure_``), draws on ``ax`` (a new figure's axes when ``ax`` is None) and
returns the Axes. Expert ``j`` is drawn in the colour ``"C{j}"`` of the property cycle in
every view, so the views of one model can be read together.

The views plot ``y`` against one covariate. With one feature that is all there is; with
several, pass ``feature`` (the column on the horizontal axis) and, for the curves,
``fixed`` (the values at which the other features are held).
"""

import numpy as np

from ._validation import check_float_array
from .experts import compute_expert_means
from .model import as_measure, check_design_of, e_step
from .predictive import predictive_distribution

__all__ = [
    "plot_experts",
    "plot_gates",
    "plot_log_likelihood_trace",
    "plot_predictive",
    "plot_responsibilities",
]


def _get_ax(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots()
    return ax


def _check_feature(measure, feature):
    """The plotted column: 0 with one feature, else ``feature`` (required)."""
    d = measure.n_features
    if feature is None:
        if d == 1:
            return 0
        raise ValueError(
            f"The model has n_features={d}; the plots show y against one covariate. Pass "
            f"feature=<column index in [0, {d - 1}]> (and, for the curves, fixed=<values "
            f"of all {d} features, the entry at feature ignored>)."
        )
    if isinstance(feature, bool) or not isinstance(feature, int | np.integer) \
            or not 0 <= feature < d:
        raise ValueError(f"feature must be an integer in [0, {d - 1}], got feature={feature!r}.")
    return int(feature)


def _line_design(measure, x_line, feature, fixed):
    """Rows along ``x_line`` in column ``feature``, the others held at ``fixed``."""
    d = measure.n_features
    column = _check_feature(measure, feature)
    if d == 1:
        base = np.zeros(1)
    elif fixed is None:
        raise ValueError(
            f"The model has n_features={d}: pass fixed=<values of all {d} features> to "
            f"hold the features other than feature={column} while the curves are drawn."
        )
    else:
        base = check_float_array(fixed, "fixed", ndim=1, shape=(d,))
    X_line = np.tile(base, (x_line.shape[0], 1))
    X_line[:, column] = x_line
    return X_line, column


def _range_grid(x, n_grid):
    if isinstance(n_grid, bool) or not isinstance(n_grid, int | np.integer) or n_grid < 2:
        raise ValueError(f"n_grid must be an integer >= 2, got n_grid={n_grid!r}.")
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, int(n_grid))


def _check_data(model, X, y, *, y_required=False):
    X = check_design_of(model, X)  # an estimator's feature names are checked too
    if X.shape[0] == 0:
        raise ValueError("X must have at least one row, got 0.")
    if y is None:
        if y_required:
            raise ValueError("y is required for this plot, got y=None.")
        return X, None
    y = check_float_array(y, "y", ndim=1, shape=(X.shape[0],))
    return X, y


def _xlabel(measure, column):
    return "x" if measure.n_features == 1 else f"x[{column}]"


def plot_experts(measure, X, y=None, *, feature=None, fixed=None, n_grid=200, ax=None):
    """Data and every expert's mean line with a band of +-2 standard deviations.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
    X : array-like of shape (n_samples, n_features)
        Sets the range of the lines (and the scatter's abscissae).
    y : array-like of shape (n_samples,), default=None
        When given, ``(X[:, feature], y)`` is drawn as a scatter.
    feature : int, default=None
        Column on the horizontal axis; required when ``n_features > 1``.
    fixed : array-like of shape (n_features,), default=None
        Values of the other features along the lines (the entry at ``feature`` is
        ignored); required when ``n_features > 1``.
    n_grid : int, default=200
        Points along each line.
    ax : matplotlib Axes, default=None

    Returns
    -------
    matplotlib.axes.Axes
        With one line ``"expert j"`` and one band per expert (and the scatter ``"data"``).
    """
    m = as_measure(measure)
    X, y = _check_data(measure, X, y)
    column = _check_feature(m, feature)
    x_line = _range_grid(X[:, column], n_grid)
    X_line, column = _line_design(m, x_line, column, fixed)
    ax = _get_ax(ax)
    if y is not None:
        ax.scatter(X[:, column], y, s=8, color="0.5", alpha=0.5, label="data")
    means = compute_expert_means(X_line, m.expert_coef, m.expert_intercept)
    sd = np.sqrt(m.expert_var)
    for j in range(m.n_experts):
        color = f"C{j}"
        ax.plot(x_line, means[:, j], color=color, label=f"expert {j + 1}")
        ax.fill_between(x_line, means[:, j] - 2 * sd[j], means[:, j] + 2 * sd[j],
                        color=color, alpha=0.2, linewidth=0)
    ax.set_xlabel(_xlabel(m, column))
    ax.set_ylabel("y")
    ax.legend()
    return ax


def plot_gates(measure, x_grid=None, *, feature=None, fixed=None, ax=None):
    """Gate probabilities ``g_j(x)`` of every expert against one covariate.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
    x_grid : array-like of shape (n_points,), default=None
        Values of the plotted covariate; ``None`` is ``linspace(0, 1, 201)``, the
        papers' design range.
    feature : int, default=None
        Column on the horizontal axis; required when ``n_features > 1``.
    fixed : array-like of shape (n_features,), default=None
        Values of the other features (the entry at ``feature`` is ignored); required
        when ``n_features > 1``.
    ax : matplotlib Axes, default=None

    Returns
    -------
    matplotlib.axes.Axes
        With one line ``"gate j"`` per expert. A top-K gate shows its jumps; an expert
        outside the active set is drawn at 0.
    """
    m = as_measure(measure)
    if x_grid is None:
        x_grid = np.linspace(0.0, 1.0, 201)
    x_grid = check_float_array(x_grid, "x_grid", ndim=1)
    if x_grid.shape[0] == 0:
        raise ValueError("x_grid must hold at least one value, got an empty array.")
    X_line, column = _line_design(m, x_grid, feature, fixed)
    gate = np.exp(m.log_gate(X_line))
    ax = _get_ax(ax)
    for j in range(m.n_experts):
        ax.plot(x_grid, gate[:, j], color=f"C{j}", label=f"gate {j + 1}")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(_xlabel(m, column))
    ax.set_ylabel("gate probability")
    ax.legend()
    return ax


def plot_predictive(measure, X, y=None, level=0.9, *, feature=None, fixed=None, n_grid=200,
                    ax=None):
    """Predictive mean and central predictive interval against one covariate.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
    X : array-like of shape (n_samples, n_features)
        Sets the range of the curves (and the scatter's abscissae).
    y : array-like of shape (n_samples,), default=None
        When given, drawn as a scatter.
    level : float, default=0.9
        Coverage of the central interval, in (0, 1).
    feature, fixed, n_grid, ax
        As in :func:`plot_experts`.

    Returns
    -------
    matplotlib.axes.Axes
        With the line ``"predictive mean"``, the band ``"{100 level}% interval"`` (and the
        scatter ``"data"``). A multimodal predictive has its mean between the modes, and
        its interval covers the gap between them.
    """
    m = as_measure(measure)
    X, y = _check_data(measure, X, y)
    column = _check_feature(m, feature)
    x_line = _range_grid(X[:, column], n_grid)
    X_line, column = _line_design(m, x_line, column, fixed)
    mix = predictive_distribution(m, X_line)
    lower, upper = mix.interval(level)
    ax = _get_ax(ax)
    if y is not None:
        ax.scatter(X[:, column], y, s=8, color="0.5", alpha=0.5, label="data")
    ax.plot(x_line, mix.mean, color="C0", label="predictive mean")
    ax.fill_between(x_line, lower, upper, color="C0", alpha=0.25, linewidth=0,
                    label=f"{100 * float(level):g}% interval")
    ax.set_xlabel(_xlabel(m, column))
    ax.set_ylabel("y")
    ax.legend()
    return ax


def plot_log_likelihood_trace(lower_bounds, ax=None):
    """The EM trace of the mean log-likelihood.

    Parameters
    ----------
    lower_bounds : array-like of shape (n_iter + 1,) or fitted estimator
        The trace, the start's value first (an estimator is read through its
        ``lower_bounds_``): entry ``t`` is plotted at EM iteration ``t``, the start at 0.
    ax : matplotlib Axes, default=None

    Returns
    -------
    matplotlib.axes.Axes
        With one line ``"mean log-likelihood"``.
    """
    if hasattr(lower_bounds, "lower_bounds_"):
        lower_bounds = lower_bounds.lower_bounds_
    trace = check_float_array(lower_bounds, "lower_bounds", ndim=1)
    if trace.shape[0] == 0:
        raise ValueError("lower_bounds must hold at least one value, got an empty array.")
    ax = _get_ax(ax)
    ax.plot(np.arange(trace.shape[0]), trace, marker=".", label="mean log-likelihood")
    ax.set_xlabel("EM iteration")
    ax.set_ylabel("mean log-likelihood")
    return ax


def plot_responsibilities(measure, X, y, *, feature=None, ax=None):
    """Data coloured by posterior responsibility ``r_ij = P(expert j | x_i, y_i)``.

    Each point's colour is the mixture of the experts' colours (``"C{j}"``) weighted by
    its responsibilities: a point its expert owns for sure has that expert's colour, a
    point shared by two is in between.

    Parameters
    ----------
    measure : MixingMeasure or fitted estimator
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    feature : int, default=None
        Column on the horizontal axis; required when ``n_features > 1``.
    ax : matplotlib Axes, default=None

    Returns
    -------
    matplotlib.axes.Axes
        With one scatter of ``n_samples`` points and a legend of the experts' colours.
    """
    from matplotlib.colors import to_rgb
    from matplotlib.lines import Line2D

    m = as_measure(measure)
    X, y = _check_data(measure, X, y, y_required=True)
    column = _check_feature(m, feature)
    resp, _ = e_step(m, X, y)
    palette = np.array([to_rgb(f"C{j}") for j in range(m.n_experts)])
    colors = np.clip(resp @ palette, 0.0, 1.0)
    ax = _get_ax(ax)
    ax.scatter(X[:, column], y, s=10, c=colors)
    handles = [Line2D([], [], linestyle="", marker="o", color=palette[j],
                      label=f"expert {j + 1}") for j in range(m.n_experts)]
    ax.legend(handles=handles, title="posterior")
    ax.set_xlabel(_xlabel(m, column))
    ax.set_ylabel("y")
    return ax
