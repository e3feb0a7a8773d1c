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
run with the build that computed them, it reruns here a seeded sample of that build's
rows from before the grid's last restore and records, row by row, the columns that
differ, how far apart the stored and recomputed total log-likelihoods are (the same
point or another) and each column's relative difference, with the processor and BLAS it
ran on. It writes ``NAME.machinecheck.json``, which the page quotes too.

Which build computed which row comes from the grid's run records (see
``committed_results.row_builds``), in the order the rows were finished. Run the build
check on the machine that computed the rows it reruns: elsewhere a row can differ by the
machine's rounding, not the build's (which ``--machine`` measures).

Usage::

    python paper_figures/build_check.py softmax-over-k4 --per-build 2
    python paper_figures/build_check.py softmax-over-k4 --machine --rows 24
"""

import argparse
import json
import platform
import sys
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import (  # noqa: E402
    build_name,
    read_results,
    restore_chain,
    restore_link,
    row_builds,
)

from gmoe.simulation import load_experiment, read_csv_rows, rerun_differences  # noqa: E402
from gmoe.simulation.columns import build_columns  # noqa: E402
from gmoe.simulation.store import code_sha256  # noqa: E402


def _load(name, results):
    """The study's experiment, committed rows (in the store's types, so that a row
    compares as it was stored) and run information; SystemExit if none are committed."""
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    _, info = read_results(results, name)
    if info is None:
        raise SystemExit(f"{name}: no committed results in {results}.")
    return experiment, read_csv_rows(results / f"{name}.csv.gz", experiment), info


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
    experiment, rows, info = _load(name, results)
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
    """How far a recomputed value is from the stored one, relative to their size.

    Numbers, and the fitted parameters (a JSON list) element by element, compare as
    ``|a - b| / max(|a|, |b|)`` (0 where both are 0); a list gives its largest element's,
    so that a small parameter (a variance) moved by much is not hidden by a large one (a
    gate slope). None where the two are not numbers alike (a warning's text, a missing
    or non-finite value): the column differs, by no measure.
    """
    try:
        a = np.asarray(json.loads(stored) if isinstance(stored, str) else stored, float)
        b = np.asarray(json.loads(recomputed) if isinstance(recomputed, str) else recomputed,
                       float)
    except (TypeError, ValueError):
        return None
    if a.shape != b.shape or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return None
    scale = np.maximum(np.abs(a), np.abs(b))
    gaps = np.divide(np.abs(a - b), scale, out=np.zeros_like(scale), where=scale > 0)
    return float(np.max(gaps)) if gaps.size else 0.0


def machine_description():
    """The processor and the BLAS (with the kernels it chose) that this check runs on.

    Two machines round one fit otherwise mostly through the BLAS kernels, which
    OpenBLAS picks by processor: the page names them.
    """
    processor = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            processor = next((line.split(":", 1)[1].strip() for line in f
                              if line.startswith("model name")), processor)
    except OSError:
        pass
    blas = [f"{lib['internal_api']} {lib['version']}"
            + (f" ({lib['architecture']} kernels)" if lib.get("architecture") else "")
            for lib in threadpool_info() if lib.get("user_api") == "blas"]
    return {"processor": processor, "architecture": platform.machine(),
            "numpy": np.__version__, "blas": ", ".join(blas) or "no BLAS found"}


def last_restore(info):
    """The grid's last restore (``rows``, ``code_sha256``, ``verified_rows``) and count."""
    chain = restore_chain(info.get("meta", {}))
    if not chain:
        return None, 0
    return restore_link(chain[-1]), len(chain)


def rows_before_restore(rows, info, build, restored):
    """The rows ``build`` computed among the first ``restored`` to finish, oldest first.

    ``restored`` is the rows of the grid's last restore (:func:`last_restore`). A restore
    rebuilds a store its machine lost: those rows were computed in another store, mostly
    on another machine. Only the checking build's own rows are taken, so that a
    difference is the machine's and not a build's (the build check compares builds, on
    the machine that computed their rows).
    """
    before = {id(r) for r in sorted(rows, key=lambda r: r["finished_at"])[:restored]}
    return [r for b, part in rows_by_build(rows, info) if b == build
            for r in part if id(r) in before]


def loss_spread(rows, losses):
    """Each loss's spread across replications: the median over sizes of std / mean.

    What a machine's rounding moves a loss by is to be read against this.
    """
    spread = {}
    for loss in losses:
        by_size = {}
        for row in rows:
            value = row.get(loss)
            if value is not None and np.isfinite(value):
                by_size.setdefault(row["n"], []).append(value)
        ratios = [np.std(v, ddof=1) / abs(np.mean(v)) for v in by_size.values()
                  if len(v) > 2 and np.mean(v) != 0]
        spread[loss] = float(np.median(ratios)) if ratios else None
    return spread


def _total_gap(row, fresh):
    """Recomputed minus stored total log-likelihood (n times the mean's); None if unknown."""
    stored = row.get("mean_log_likelihood")
    recomputed = fresh.get("mean_log_likelihood", stored)
    try:
        gap = row["n"] * (float(recomputed) - float(stored))
    except (TypeError, ValueError):
        return None
    return float(gap) if np.isfinite(gap) else None


def check_machine(name, results, count=24, seed=0, log=print):
    """Rerun, here, ``count`` rows this build computed before the grid's last restore.

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
        ``code_sha256`` (this build), ``machine`` (:func:`machine_description`),
        ``result_rows``, ``restore`` and ``restores`` (:func:`last_restore`),
        ``build_rows`` (this build's rows before it), ``loss_columns`` (the study's
        losses), ``loss_spread`` (:func:`loss_spread` over every row) and ``checked``:
        per row rerun, its ``n``, ``rep``, ``status`` (stored, recomputed),
        ``differences`` (``[column, stored, recomputed]`` as text),
        ``log_likelihood_gap`` (recomputed minus stored total log-likelihood; None where
        either is missing) and ``relative`` (each differing column's
        :func:`relative_difference`).
    """
    if count < 1:
        raise SystemExit(f"--rows must be at least 1, got {count}.")
    experiment, rows, info = _load(name, results)
    restore, restores = last_restore(info)
    if restore is None or not restore["rows"]:
        raise SystemExit(f"{name}: no rows were restored from the committed results: every "
                         "row was computed in this grid's one store, and there is no "
                         "earlier machine to compare with.")
    own = code_sha256()
    earlier = rows_before_restore(rows, info, own, restore["rows"])
    if not earlier:
        raise SystemExit(f"{name}: {build_name(own)} computed none of the rows before the "
                         "last restore (or the records do not say: a restore by gmoe-sim "
                         "records no build); run the check with the build that did, so that "
                         "a difference is the machine's and not a build's.")
    # The losses: the metric columns but the per-expert parameter errors and atom counts.
    losses = [c.name for c in build_columns(experiment) if c.cell is None
              and c.field != "temperature"]
    report = {"study": name, "result_rows": len(rows), "code_sha256": own,
              "machine": machine_description(), "restore": restore, "restores": restores,
              "build_rows": len(earlier), "loss_columns": losses,
              "loss_spread": loss_spread(rows, losses), "checked": []}
    for row in sample(earlier, count, seed):
        differences = rerun_differences(experiment, row)
        fresh = {column: b for column, _, b in differences}
        gap = _total_gap(row, fresh)
        report["checked"].append({
            "n": int(row["n"]), "rep": int(row["rep"]),
            "status": [row["status"], fresh.get("status", row["status"])],
            "differences": [[c, repr(a), repr(b)] for c, a, b in differences],
            "log_likelihood_gap": gap,
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
    parser.add_argument("--per-build", type=int,
                        help="rows rerun per build (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the draws (default 0)")
    parser.add_argument("--machine", action="store_true",
                        help="rerun the rows this build computed before the grid's last "
                             "restore (on an earlier machine) instead of other builds' rows")
    parser.add_argument("--rows", type=int,
                        help="with --machine: rows rerun (default 24)")
    args = parser.parse_args(argv)
    if args.machine and args.per_build is not None:
        parser.error("--per-build counts other builds' rows: --machine takes --rows")
    if not args.machine and args.rows is not None:
        parser.error("--rows counts the rows of --machine: the build check takes --per-build")
    if args.machine:
        for name in args.studies:
            report = check_machine(name, args.results,
                                   24 if args.rows is None else args.rows, args.seed)
            (args.results / f"{name}.machinecheck.json").write_text(
                json.dumps(report, indent=1) + "\n")
            same = sum(not c["differences"] for c in report["checked"])
            print(f"{name}: {len(report['checked'])} of the {report['build_rows']} rows "
                  f"{build_name(report['code_sha256'])} computed before the last restore "
                  f"rerun here: {same} reproduced to the last bit")
        return 0
    args.per_build = 2 if args.per_build is None else args.per_build
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
