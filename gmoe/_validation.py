"""Input checks with messages that name the parameter, the expectation and the value."""

import numpy as np


def _describe(value):
    arr = np.asarray(value) if not isinstance(value, np.ndarray) else value
    if arr.ndim == 0:
        return repr(value)
    return f"array of shape {arr.shape}"


def check_float_array(value, name, *, ndim, shape=None, finite=True, contiguous=True):
    """Return ``value`` as a float64 array (C-contiguous by default), checked.

    Parameters
    ----------
    value : array-like
    name : str
        Parameter name used in error messages.
    ndim : int
        Required number of dimensions.
    shape : tuple of (int or None), optional
        Required shape; ``None`` entries are free.
    finite : bool, default=True
        Reject NaN and infinite entries.
    contiguous : bool, default=True
        Return a C-contiguous array; with False, ``np.asarray(value, dtype=np.float64)``
        itself (no copy of a strided or Fortran-ordered input).
    """
    try:
        arr = np.array(value, dtype=np.float64, copy=None)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be an array of real numbers, got {type(value).__name__}: {value!r}."
        ) from err
    if arr.ndim != ndim:
        hint = ""
        if name == "X" and arr.ndim == 1:
            hint = (
                " Reshape your data with X.reshape(-1, 1) if it has a single feature or "
                "X.reshape(1, -1) if it is a single sample."
            )
        raise ValueError(
            f"{name} must be a {ndim}-D array, got a {arr.ndim}-D array of shape {arr.shape}."
            + hint
        )
    if shape is not None:
        for axis, (want, got) in enumerate(zip(shape, arr.shape, strict=True)):
            if want is not None and want != got:
                expected = "(" + ", ".join("?" if s is None else str(s) for s in shape) + (
                    ",)" if len(shape) == 1 else ")")
                raise ValueError(
                    f"{name} must have shape {expected}, got shape {arr.shape} "
                    f"(axis {axis} is {got}, expected {want})."
                )
    if finite and not np.all(np.isfinite(arr)):
        bad = np.argwhere(~np.isfinite(arr))[0]
        where = tuple(int(i) for i in bad)
        raise ValueError(
            f"{name} must contain only finite values, got {arr[tuple(bad)]} at index {where}."
        )
    return np.ascontiguousarray(arr) if contiguous else arr


def check_variances(arr, name):
    """Return the float array ``arr`` after checking that every entry is > 0.

    Parameters
    ----------
    arr : ndarray
        Already checked by :func:`check_float_array` (float64, no NaN).
    name : str
        Parameter name used in error messages.
    """
    if np.any(arr <= 0):
        j = int(np.argmax(arr <= 0))
        raise ValueError(f"{name} must hold variances > 0, got {name}[{j}]={float(arr[j])!r}.")
    return arr


def check_positive_scalar(value, name, *, allow_none=False):
    """Return ``value`` as a finite float > 0, or ``None`` when allowed."""
    if value is None and allow_none:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name} must be a positive finite number, got {type(value).__name__}: {value!r}."
        ) from err
    if not np.isfinite(out) or out <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {name}={value!r}.")
    return out


def check_option(value, name, options):
    """Check that ``value`` is one of ``options``."""
    if value not in options:
        raise ValueError(
            f"{name} must be one of {sorted(options)}, got {name}={value!r}."
        )
    return value


def check_int_in_range(value, name, low, high):
    """Check that ``value`` is an int with ``low <= value <= high``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}.")
    if not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {name}={value}.")
    return int(value)


def check_sample_weight(sample_weight, n_samples):
    """Row weights as a C-contiguous float64 array of shape ``(n_samples,)``, checked.

    ``None`` weighs every row 1 and a positive scalar weighs every row alike. Otherwise
    the weights must be finite, non-negative, not all zero and one per row.

    Parameters
    ----------
    sample_weight : array-like of shape (n_samples,), float or None
    n_samples : int

    Returns
    -------
    ndarray of shape (n_samples,)
    """
    if sample_weight is None:
        return np.ones(n_samples)

    def fail(received, shape=True):
        expected = f"of shape ({n_samples},) " if shape else ""
        raise ValueError(f"sample_weight must be an array {expected}of finite non-negative "
                         f"weights with a positive sum, got {received}.")

    try:
        sw = np.asarray(sample_weight, dtype=np.float64)
    except (TypeError, ValueError):
        fail(f"{type(sample_weight).__name__}: {sample_weight!r}")
    if sw.ndim == 0:
        if not (np.isfinite(sw) and sw > 0):
            fail(f"the scalar {float(sw)!r}", shape=False)
        return np.full(n_samples, float(sw))
    if sw.shape != (n_samples,):
        fail(f"an array of shape {sw.shape}")
    if not np.all(np.isfinite(sw)):
        fail("non-finite values")
    if np.any(sw < 0):
        fail(f"a negative value ({float(sw.min())!r})")
    if not np.any(sw > 0):
        fail("all zeros")
    return np.ascontiguousarray(sw)


def rows_with_weight(X, y, sample_weight):
    """The rows of positive weight (all of the arrays when every weight is positive).

    A row of weight 0 is not in the likelihood; left out, its values (any finite ones,
    however large) enter no sum, and a fit equals the fit to the other rows alone.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples,)
    sample_weight : ndarray of shape (n_samples,)

    Returns
    -------
    X, y, sample_weight : ndarray
        C-contiguous.
    """
    keep = sample_weight > 0
    if keep.all():
        return X, y, sample_weight
    return (np.ascontiguousarray(X[keep]), np.ascontiguousarray(y[keep]),
            np.ascontiguousarray(sample_weight[keep]))


def weighted_total(sample_weight, values):
    """``sum_i w_i v_i`` over the rows of positive weight.

    A row of weight 0 adds nothing, even where its value is not finite (the log density
    of a row far beyond float64's reach, which the fit left out). With every weight
    positive this is ``np.dot(sample_weight, values)``, to the last bit.

    Parameters
    ----------
    sample_weight : ndarray of shape (n_samples,)
    values : ndarray of shape (n_samples,)

    Returns
    -------
    float
    """
    positive = sample_weight > 0
    if positive.all():
        return float(np.dot(sample_weight, values))
    return float(np.dot(sample_weight[positive], values[positive]))
