"""Reading experiment files: a TOML table with checked accessors, and the size grammar.

:class:`_Table` wraps one table of a study file: every accessor checks the value's type and
range and raises :class:`ExperimentError` naming the file, the table and the key.
:func:`parse_sizes` reads the sample-size grid (integers, ``{linspace = [...]}`` and
``{logspace = [...]}`` entries). The study's meaning is read in :mod:`.spec`.
"""

import difflib
import math
import numbers

import numpy as np

__all__ = ["ExperimentError", "parse_sizes"]

_REQUIRED = object()
#: The largest sample size or replication number a result store can hold: SQLite's
#: INTEGER, the type of ``n`` and ``rep``, is signed 64-bit.
LARGEST_STORABLE_INTEGER = 2**63 - 1


class ExperimentError(ValueError):
    """An experiment file that cannot be used; the message names the file and the key."""

    __module__ = "gmoe.simulation"


# --------------------------------------------------------------------------- reading
class _Table:
    """One TOML table of an experiment file, with checked accessors (private)."""

    def __init__(self, path, name, table):
        self.path = path
        self.name = name
        if not isinstance(table, dict):
            raise ExperimentError(f"{path}: [{name}]: expected a table, got "
                                  f"{_describe(table)}.")
        self.table = table

    def where(self, key):
        return f"[{self.name}] {key}" if self.name else key

    def error(self, key, message):
        return ExperimentError(f"{self.path}: {self.where(key)}: {message}")

    def check_keys(self, allowed):
        for key in self.table:
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                section = f"[{self.name}]" if self.name else "the top level"
                raise ExperimentError(
                    f"{self.path}: unknown key {key!r} in {section}{hint}; allowed keys: "
                    f"{', '.join(allowed)}.")

    def has(self, key):
        return key in self.table

    def sub(self, key, *, required=True):
        child = self._child(key)
        if key not in self.table:
            if required:
                raise ExperimentError(f"{self.path}: [{child}]: missing required table.")
            return _Table(self.path, child, {})
        value = self.table[key]
        if not isinstance(value, dict):
            raise ExperimentError(f"{self.path}: [{child}]: expected a table, got "
                                  f"{_describe(value)}.")
        return _Table(self.path, child, value)

    def _child(self, key):
        return f"{self.name}.{key}" if self.name else key

    def raw(self, key, default=_REQUIRED):
        return self._get(key, default)[1]

    def _get(self, key, default):
        """(present, value): the value, or the default when the key is absent."""
        if key in self.table:
            return True, self.table[key]
        if default is _REQUIRED:
            raise self.error(key, "missing required key.")
        return False, default

    def integer(self, key, default=_REQUIRED, *, low=None, high=None):
        present, value = self._get(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(key, f"expected an integer, got {_describe(value)}.")
        _check_range(self, key, value, low, high)
        return int(value)

    def number(self, key, default=_REQUIRED, *, low=None, high=None, strict_low=False):
        present, value = self._get(key, default)
        if not present:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float) \
                or not math.isfinite(value):
            raise self.error(key, f"expected a finite number, got {_describe(value)}.")
        if strict_low and low is not None and not value > low:
            raise self.error(key, f"expected a number > {low}, got {value!r}.")
        _check_range(self, key, value, None if strict_low else low, high)
        return float(value)

    def boolean(self, key, default=_REQUIRED):
        present, value = self._get(key, default)
        if present and not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {_describe(value)}.")
        return value

    def string(self, key, default=_REQUIRED, *, options=None):
        present, value = self._get(key, default)
        if not present:
            return value
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {_describe(value)}.")
        if options is not None and value not in options:
            close = difflib.get_close_matches(value, options, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(key, f"expected one of {', '.join(map(repr, options))}, got "
                                  f"{value!r}{hint}.")
        return value

    def matrix(self, key):
        value = self.raw(key)
        if not isinstance(value, list) or not value or not all(
                isinstance(row, list) for row in value):
            raise self.error(key, "expected a non-empty array of arrays of numbers "
                                  f"(one row per expert), got {_describe(value)}.")
        widths = {len(row) for row in value}
        if len(widths) != 1 or 0 in widths:
            raise self.error(key, "expected rows of one common, non-zero length, got row "
                                  f"lengths {[len(row) for row in value]}.")
        for i, row in enumerate(value):
            for j, entry in enumerate(row):
                if isinstance(entry, bool) or not isinstance(entry, int | float) \
                        or not math.isfinite(entry):
                    raise self.error(key, f"expected finite numbers, got "
                                          f"{_describe(entry)} at [{i}][{j}].")
        return np.array(value, dtype=np.float64)

    def vector(self, key):
        value = self.raw(key)
        if not isinstance(value, list) or not value:
            raise self.error(key, f"expected a non-empty array of numbers, got "
                                  f"{_describe(value)}.")
        for i, entry in enumerate(value):
            if isinstance(entry, bool) or not isinstance(entry, int | float) \
                    or not math.isfinite(entry):
                raise self.error(key, f"expected finite numbers, got {_describe(entry)} at "
                                      f"[{i}].")
        return np.array(value, dtype=np.float64)


def _check_range(table, key, value, low, high):
    if low is not None and value < low:
        raise table.error(key, f"expected a value >= {low}, got {value!r}.")
    if high is not None and value > high:
        raise table.error(key, f"expected a value <= {high}, got {value!r}.")


def _describe(value):
    if isinstance(value, dict):
        return f"a table with keys {sorted(value)}"
    if isinstance(value, list):
        return f"an array {value!r}" if len(repr(value)) < 80 else \
            f"an array of length {len(value)}"
    return f"{type(value).__name__} {value!r}"


def _integral(value):
    """``value`` as an int when it is an integral finite number (``1e4`` included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, int):
        return int(value)
    if math.isfinite(value) and float(value).is_integer():
        return int(value)
    return None


def parse_sizes(value, *, where="n", path="<sizes>"):
    """Turn a sample-size specification into the sorted tuple of distinct sizes.

    Parameters
    ----------
    value : int, dict or list of (int or dict)
        Integers (``1e4`` is accepted when integral) and segments
        ``{"linspace": [start, stop, num]}`` (evenly spaced) or
        ``{"logspace": [start, stop, num]}`` (geometrically spaced between the values
        ``start`` and ``stop``), rounded to the nearest integer.
    where : str, default='n'
        The key named in error messages.
    path : str, default='<sizes>'
        The file named in error messages.

    Returns
    -------
    tuple of int
        Sorted, distinct, all in ``[1, 2**63 - 1]`` (what the result store can hold).

    Raises
    ------
    ExperimentError
        A malformed entry; the message names ``path``, ``where`` and the entry.

    Examples
    --------
    >>> parse_sizes([{"linspace": [100, 900, 5]}, 1000])
    (100, 300, 500, 700, 900, 1000)
    >>> parse_sizes({"logspace": [10, 1000, 3]})
    (10, 100, 1000)
    """
    def fail(message):
        return ExperimentError(f"{path}: {where}: {message}")

    items = value if isinstance(value, list) else [value]
    if not items:
        raise fail("expected at least one sample size, got an empty array.")
    sizes = []
    for i, item in enumerate(items):
        if isinstance(item, dict):
            keys = sorted(item)
            if keys not in (["linspace"], ["logspace"]):
                raise fail(f"entry {i}: expected a table with exactly one of 'linspace', "
                           f"'logspace', got keys {keys}.")
            kind = keys[0]
            segment = item[kind]
            if not isinstance(segment, list) or len(segment) != 3:
                raise fail(f"entry {i}: {kind} expects [start, stop, num], got "
                           f"{_describe(segment)}.")
            start, stop, num = segment
            ok_ends = all(isinstance(v, int | float) and not isinstance(v, bool)
                          and math.isfinite(v) and v >= 1 for v in (start, stop))
            if not ok_ends or stop < start:
                raise fail(f"entry {i}: {kind} expects numbers 1 <= start <= stop, got "
                           f"start={start!r}, stop={stop!r}.")
            count = _integral(num)
            if count is None or count < 1:
                raise fail(f"entry {i}: {kind} expects an integer num >= 1, got num={num!r}.")
            space = np.linspace if kind == "linspace" else np.geomspace
            sizes.extend(int(v) for v in np.rint(space(start, stop, count)))
        else:
            size = _integral(item)
            if size is None or size < 1:
                raise fail(f"entry {i}: expected an integer >= 1 or a table {{linspace = "
                           f"[start, stop, num]}} / {{logspace = [...]}}, got "
                           f"{_describe(item)}.")
            sizes.append(size)
    largest = max(sizes)
    if largest > LARGEST_STORABLE_INTEGER:
        # Refused here, not only when a store is opened, so that checking a file finds it.
        raise fail(f"expected sample sizes of at most {LARGEST_STORABLE_INTEGER} (2**63 - 1, "
                   f"what the result store can hold), got {largest}.")
    return tuple(sorted(set(sizes)))
