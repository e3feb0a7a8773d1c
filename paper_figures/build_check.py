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

A grid's store does not outlive its machine: a grid continued on another machine is
restored from its committed results, and the restore recomputes a few rows first. Another
machine's numerical stack (its BLAS kernels, chosen by processor) can compute a task's
numbers differently in the last digits; the restore then refuses to go on unless told to
recompute none (``--verify 0``). With ``--machine`` this script measures what that pools:
it reruns, here, a seeded sample of the rows computed before the grid's last restore and
records, row by row, the columns that differ, how far apart the stored and recomputed
total log-likelihoods are (the same maximum or another) and each column's relative
difference. It writes ``NAME.machinecheck.json``, which the page quotes too.

Which build computed which row comes from the grid's run records (see
``committed_results.row_builds``), in the order the rows were finished.

Usage::

    python paper_figures/build_check.py softmax-over-k4 --per-build 2
    python paper_figures/build_check.py softmax-over-k4 --machine --rows 24
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import build_name, read_results, restore_chain, row_builds  # noqa: E402

from gmoe.simulation import load_experiment, read_csv_rows, rerun_differences  # noqa: E402
from gmoe.simulation.columns import build_columns  # noqa: E402
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


def relative_difference(stored, recomputed):
    """How far a recomputed value is from the stored one, relative to the stored one.

    Numbers compare as ``|a - b| / |a|``; the fitted parameters (a JSON list) as the
    largest absolute difference over the largest stored magnitude. None where the two
    are not numbers (a warning's text, a missing value): the column differs, by no
    measure.
    """
    try:
        a = np.asarray(json.loads(stored) if isinstance(stored, str) else stored, float)
        b = np.asarray(json.loads(recomputed) if isinstance(recomputed, str) else recomputed,
                       float)
    except (TypeError, ValueError):
        return None
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None
    scale = np.max(np.abs(a)) if a.size else 0.0
    gap = np.max(np.abs(a - b)) if a.size else 0.0
    return float(gap / scale) if scale > 0 else (0.0 if gap == 0 else None)


def earlier_machine_rows(rows, info):
    """The rows a grid computed before its last restore, in the order they finished.

    A restore rebuilds a store that its machine lost, so these rows were computed in
    another store, on another machine or an earlier one; the rest, in this store.
    Empty for a grid never restored.
    """
    chain = restore_chain(info.get("meta", {}))
    if not chain:
        return []
    return sorted(rows, key=lambda r: r["finished_at"])[:chain[-1]["rows"]]


def check_machine(name, results, count=24, seed=0, log=print):
    """Rerun ``count`` rows computed before the grid's last restore, here.

    Parameters
    ----------
    name : str
        The study.
    results : pathlib.Path
        The directory of committed results.
    count : int, default=24
        Rows rerun: the last replication at the largest size those rows reached, and a
        seeded draw of the rest.
    seed : int, default=0
        Seed of the draw.
    log : callable, default=print
        Called with a line per row rerun.

    Returns
    -------
    dict
        ``code_sha256`` (this build), ``result_rows``, ``restored_rows`` (the rows
        computed before the last restore) and ``checked``: per row rerun, its ``n``,
        ``rep``, ``differences`` (``[column, stored, recomputed]`` as text),
        ``log_likelihood_gap`` (recomputed minus stored total log-likelihood, n times
        the mean's) and ``relative`` (each differing column's
        :func:`relative_difference`); and ``loss_columns``, the study's losses.
    """
    if count < 1:
        raise SystemExit(f"--rows must be at least 1, got {count}.")
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    _, info = read_results(results, name)
    if info is None:
        raise SystemExit(f"{name}: no committed results in {results}.")
    rows = read_csv_rows(results / f"{name}.csv.gz", experiment)
    earlier = earlier_machine_rows(rows, info)
    if not earlier:
        raise SystemExit(f"{name}: the grid was never restored from its committed results: "
                         "every row was computed in one store, and there is no earlier "
                         "machine to compare with.")
    # The losses: the metric columns but the per-expert parameter errors and atom counts.
    losses = [c.name for c in build_columns(experiment) if c.cell is None
              and c.field not in ("temperature",)]
    report = {"study": name, "result_rows": len(rows), "code_sha256": code_sha256(),
              "restored_rows": len(earlier), "loss_columns": losses, "checked": []}
    for row in sample(earlier, count, seed):
        differences = rerun_differences(experiment, row)
        recomputed = {column: b for column, _, b in differences}
        stored_mean = row["mean_log_likelihood"]
        fresh_mean = recomputed.get("mean_log_likelihood", stored_mean)
        gap = (row["n"] * (fresh_mean - stored_mean)
               if stored_mean is not None and fresh_mean is not None else None)
        report["checked"].append({
            "n": int(row["n"]), "rep": int(row["rep"]),
            "differences": [[c, repr(a), repr(b)] for c, a, b in differences],
            "log_likelihood_gap": None if gap is None else float(gap),
            "relative": {c: relative_difference(a, b) for c, a, b in differences}})
        log(f"{name}: n = {row['n']}, rep = {row['rep']}: "
            + ("reproduced" if not differences else
               f"{len(differences)} columns differ, the total log-likelihood by "
               + ("an unknown amount" if gap is None else f"{gap:.3g}")))
    return report


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--per-build", type=int, default=2,
                        help="rows rerun per build (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--machine", action="store_true",
                        help="rerun rows computed before the grid's last restore (on an "
                             "earlier machine) instead of other builds' rows")
    parser.add_argument("--rows", type=int, default=24,
                        help="with --machine: rows rerun (default 24)")
    args = parser.parse_args(argv)
    if args.machine:
        for name in args.studies:
            report = check_machine(name, args.results, args.rows, args.seed)
            (args.results / f"{name}.machinecheck.json").write_text(
                json.dumps(report, indent=1) + "\n")
            same = sum(not c["differences"] for c in report["checked"])
            print(f"{name}: {len(report['checked'])} of the {report['restored_rows']} rows "
                  f"computed before the last restore rerun here: {same} reproduced to the "
                  "last bit")
        return 0
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
