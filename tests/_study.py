"""The tiny study of the harness tests (``tests/data/study.toml``), written with overrides.

Each test states what it changes, e.g.::

    path = write_study(tmp_path, seed=5, n_starts=2, sizes=[60, 120], replications=2)
    text = study_text(fit={"max_iter": 50}, metrics={"total_variation": DROP})

Keyword arguments: ``description``, ``seed``, ``design`` (a kind, or a table), ``n_starts``,
``sizes`` (``[sizes] n``), ``replications``, and one table per section (``truth``, ``fit``,
``start``, ``metrics``, ``quick``), merged key by key into the fixture's (nested tables such
as ``metrics={"evaluation": {...}}`` too). :data:`DROP` as a value removes the key or the
table. The text is written back as TOML in the fixture's order, new keys last.
"""

import json
import tomllib
from pathlib import Path

__all__ = ["DROP", "STUDY", "study_text", "write_study"]

STUDY = Path(__file__).resolve().parent / "data" / "study.toml"


class _Drop:
    def __repr__(self):
        return "DROP"


#: Value that removes a key (or a whole table) from the study.
DROP = _Drop()

_TABLES = ("truth", "design", "fit", "start", "sizes", "metrics", "quick")


def _merge(base, changes):
    out = dict(base)
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {value!r} as TOML")


def _table(name, table):
    lines = [f"[{name}]"] if name else []
    lines += [f"{key} = {_value(value)}" for key, value in table.items()
              if not isinstance(value, dict)]
    for key, value in table.items():
        if isinstance(value, dict):
            lines += ["", *_table(f"{name}.{key}" if name else key, value)]
    return lines


def study_text(*, description=None, seed=None, design=None, n_starts=None, sizes=None,
               replications=None, **tables):
    """The fixture study as TOML text, with the given overrides (module docstring)."""
    unknown = set(tables) - set(_TABLES)
    if unknown:
        raise TypeError(f"unknown study tables {sorted(unknown)}; expected {_TABLES}")
    doc = tomllib.loads(STUDY.read_text())
    top = {"description": description, "seed": seed}
    nested = {"design": {"kind": design} if isinstance(design, str) else design,
              "start": {"n_starts": n_starts}, "sizes": {"n": sizes,
                                                         "replications": replications}}
    for key, value in top.items():
        if value is not None:
            doc = _merge(doc, {key: value})
    for name, changes in nested.items():
        changes = {k: v for k, v in (changes or {}).items() if v is not None}
        if changes:
            doc = _merge(doc, {name: changes})
    for name, changes in tables.items():
        doc = _merge(doc, {name: changes})
    scalars = {k: v for k, v in doc.items() if not isinstance(v, dict)}
    lines = _table("", scalars)
    for name, table in doc.items():
        if isinstance(table, dict):
            lines += ["", *_table(name, table)]
    return "\n".join(lines) + "\n"


def write_study(directory, name="study.toml", **overrides):
    """Write :func:`study_text` to ``directory / name`` and return the path."""
    path = Path(directory) / name
    path.write_text(study_text(**overrides))
    return path
