"""Recompute, with this build, rows that other builds of gmoe computed in a grid.

A grid resumed from its own store after gmoe changed holds rows of several builds, and
resuming recomputes none of the earlier rows (a restore from the committed results
recomputes a few, but only of the builds before it as a whole). Pooling those rows is
sound only if every build computes the same numbers for the same task. This script
checks that on each build's own rows: for every build that computed part of the grid,
other than this one, it reruns that build's row at the largest size it reached (the
longest fits, where two builds part first) and a seeded draw of its other rows, and
compares every column but the timings to the last bit. It writes
``paper_figures/results/NAME.buildcheck.json``, which ``make_figures.py`` quotes.

Which build computed which row comes from the grid's run records (see
``committed_results.row_builds``), in the order the rows were finished.

Usage::

    python paper_figures/build_check.py softmax-over-k4 --per-build 2
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import build_name, read_results, row_builds  # noqa: E402

from gmoe.simulation import load_experiment, read_csv_rows, rerun_differences  # noqa: E402
from gmoe.simulation.store import code_sha256  # noqa: E402


def rows_by_build(rows, info):
    """The grid's rows split by the build that computed them, in the order they finished.

    Parameters
    ----------
    rows : list of dict
        The committed rows, with ``finished_at``.
    info : dict
        The study's run information (``read_results``): ``meta`` and ``runs``.

    Returns
    -------
    list of tuple
        ``(code_sha256 or None, rows of that build)``, oldest build first.
    """
    order = sorted(rows, key=lambda r: r["finished_at"])
    shares, position = [], 0
    for count, build in row_builds(info.get("meta", {}), info.get("runs", []), len(order)):
        part = order[position:] if count is None else order[position:position + count]
        position += len(part)
        shares.append((build, part))
    return shares


def sample(rows, count, seed):
    """The rows to rerun: the last replication at the largest size, and a seeded draw.

    Parameters
    ----------
    rows : list of dict
        One build's rows.
    count : int
        How many (all of them when there are fewer).
    seed : int
        Seed of the draw (the same rows for the same file and seed).

    Returns
    -------
    list of dict
    """
    largest = max(r["n"] for r in rows)
    first = max((r for r in rows if r["n"] == largest), key=lambda r: r["rep"])
    rest = [r for r in rows if r is not first]
    drawn = np.random.default_rng(seed).choice(len(rest), size=min(count - 1, len(rest)),
                                               replace=False)
    return [first] + [rest[i] for i in sorted(drawn)]


def check(name, results, per_build=2, seed=0, log=print):
    """Rerun ``per_build`` rows of each other build; the report written to the JSON file.

    Parameters
    ----------
    name : str
        The study.
    results : pathlib.Path
        The directory of committed results.
    per_build : int, default=2
        Rows rerun per build.
    seed : int, default=0
        Seed of the draws.
    log : callable, default=print
        Called with a line per row rerun.

    Returns
    -------
    dict
        ``code_sha256`` (this build), ``result_rows`` and ``builds``: per other build,
        its ``code_sha256``, its ``rows`` and the ``checked`` rows (``n``, ``rep`` and
        ``differences``, each ``[column, stored, recomputed]`` as text).
    """
    if per_build < 1:
        raise SystemExit(f"--per-build must be at least 1, got {per_build}.")
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    _, info = read_results(results, name)
    if info is None:
        raise SystemExit(f"{name}: no committed results in {results}.")
    # The store's types (integers as integers), so that a row compares as it was stored.
    rows = read_csv_rows(results / f"{name}.csv.gz", experiment)
    own = code_sha256()
    report = {"study": name, "result_rows": len(rows), "code_sha256": own, "builds": []}
    for build, part in rows_by_build(rows, info):
        if build == own:
            continue
        checked = []
        for row in sample(part, per_build, seed):
            differences = rerun_differences(experiment, row)
            checked.append({"n": int(row["n"]), "rep": int(row["rep"]),
                            "differences": [[c, repr(a), repr(b)]
                                            for c, a, b in differences]})
            log(f"{name}: {build_name(build)}, n = {row['n']}, rep = {row['rep']}: "
                + ("reproduced" if not differences else
                   f"{len(differences)} columns differ ({differences[0][0]}: "
                   f"{differences[0][1]!r} -> {differences[0][2]!r})"))
        report["builds"].append({"code_sha256": build, "rows": len(part),
                                 "checked": checked})
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--per-build", type=int, default=2,
                        help="rows rerun per build (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    args = parser.parse_args(argv)
    for name in args.studies:
        report = check(name, args.results, args.per_build, args.seed)
        if not report["builds"]:
            print(f"{name}: every row was computed by this build "
                  f"({build_name(report['code_sha256'])}): nothing to check")
            continue
        (args.results / f"{name}.buildcheck.json").write_text(json.dumps(report, indent=1)
                                                              + "\n")
        rerun = sum(len(b["checked"]) for b in report["builds"])
        differ = sum(bool(c["differences"]) for b in report["builds"] for c in b["checked"])
        print(f"{name}: {rerun} rows of {len(report['builds'])} other builds rerun by "
              f"{build_name(report['code_sha256'])}: {differ} differ")
    return 0


if __name__ == "__main__":
    sys.exit(main())
