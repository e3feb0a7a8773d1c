"""Run the reproduction's studies at full scale and keep their results in a compact form.

For every study named (default: all of ``STUDIES`` in ``make_figures.py``), runs
``gmoe-sim run NAME --n-jobs N`` into a store under ``paper_figures/stores/`` (not
committed; resumable: rerun this script after an interruption), then writes
``paper_figures/results/NAME.csv.gz`` (every task's row) and ``NAME.run.json`` (the runs'
wall times, the machine, the gmoe version), which are committed and from which
``make_figures.py`` builds every figure and number of ``REPRODUCTION.md``.

Usage::

    python paper_figures/run_studies.py                      # every study, 2 workers
    python paper_figures/run_studies.py softmax-exact --n-jobs 2
    python paper_figures/run_studies.py softmax-over-k3 --export-only   # a grid stopped part way

The runner starts the tasks replication by replication, so a grid stopped part way holds
whole sweeps of the sizes; ``--export-only`` writes its results as they stand, and
``make_figures.py`` marks such a grid PARTIAL.

A machine's stores do not outlive it, but the committed results hold every task's row::

    python paper_figures/run_studies.py topk-exact --restore

rebuilds a missing store from ``results/NAME.csv.gz`` and ``NAME.run.json`` (the rows and
the runs that computed them) and runs the rest of the grid. A sample of the rows
(``--verify``, default 6: the largest sample size's last tasks and a seeded random draw)
is first re-run, and the restore is refused unless every recomputed row equals its
stored one, timings aside: the grid goes on only where this build, on this machine,
computes the same numbers (another build of gmoe or another NumPy may not).
Another machine can round differently: its BLAS kernels, chosen by processor, change a
fit's last digits. There the grid can go on only with ``--verify 0``, pooling two
machines' rows; then ``python paper_figures/build_check.py NAME --machine`` reruns a
sample of the earlier rows on the new machine and records how far each lands from its
stored fit, which the page quotes.
Committed rows are never lost: without ``--restore``, a study whose store is missing but
whose rows are committed is refused before anything runs, and an export that would drop
committed tasks (a store not restored, a quick grid) is refused too.

A store of the same study computed by another build of gmoe (the same task definition:
experiment file and seeds) can be kept beside it for comparison::

    python paper_figures/run_studies.py softmax-over-k3 --other-build OLD.sqlite --label 3134dd5

writes ``NAME.build-LABEL.csv.gz`` (each task's log-likelihood, EM steps, loss and density
distance) and ``NAME.build-LABEL.json``; ``make_figures.py`` then reports where the two
builds' fits differ.
"""

import argparse
import csv
import gzip
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import build_name, read_result_rows, row_builds  # noqa: E402
from study_claims import STUDIES  # noqa: E402

from gmoe.simulation import (  # noqa: E402
    load_experiment,
    read_csv_rows,
    read_meta,
    read_rows,
    restore_store,
    verify_rows,
)
from gmoe.simulation.restore import RestoreError  # noqa: E402
from gmoe.simulation.store import StoreError, code_sha256, read_runs  # noqa: E402


def _write_rows(path, rows, columns):
    """Write ``rows`` (dicts) to the gzipped CSV ``path``, only ``columns``, in that order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def _stored_tasks(path):
    """The ``(n, rep)`` of every row of an exported grid, an empty set when there is none."""
    if not path.exists():
        return set()
    return {(r["n"], int(r["rep"])) for r in read_result_rows(path)}


def export(name, db, out):
    """Write OUT/NAME.csv.gz and OUT/NAME.run.json from a store.

    Raises
    ------
    SystemExit
        If the store holds no rows, or OUT already holds results of tasks the store lacks
        (a new machine's store not restored, a quick grid): exporting would lose them.
    """
    rows, meta = read_rows(db)
    if not rows:
        raise SystemExit(f"{name}: the store {db.name} holds no rows yet; nothing to export.")
    lost = _stored_tasks(out / f"{name}.csv.gz") - {(r["n"], r["rep"]) for r in rows}
    if lost:
        raise SystemExit(f"{name}: {out.name}/{name}.csv.gz holds {len(lost)} tasks that the "
                         f"store {db.name} lacks; exporting would lose them. Restore the "
                         "store from them first (--restore), or export elsewhere "
                         "(--results DIR).")
    _write_rows(out / f"{name}.csv.gz", rows, list(rows[0]))
    runs = read_runs(db)
    info = {"study": name, "rows": len(rows),
            "wall_seconds": sum(r["wall_seconds"] or 0.0 for r in runs),
            "runs": [{k: r.get(k) for k in ("status", "n_jobs", "tasks_stored", "wall_seconds",
                                            "gmoe_version", "code_sha256")} for r in runs],
            "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "meta": {k: v for k, v in meta.items()
                     if k in ("gmoe_version", "code_sha256", "task_sha256")}}
    if "restored_from" in meta:  # the rows before the restore came from this build
        info["meta"]["restored_from"] = json.loads(meta["restored_from"])
    (out / f"{name}.run.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


#: The columns kept from another build's store: enough to tell whether a task's fit reached
#: the same point as the grid's (its log-likelihood, whether and how closely it met the
#: stopping rule) and what that did to its losses.
OTHER_BUILD_COLUMNS = ("n", "rep", "status", "mean_log_likelihood", "n_iter", "converged",
                       "convergence_gap", "d1", "d2", "hellinger")


def export_other_build(name, db, label, reference_db, out):
    """Write OUT/NAME.build-LABEL.csv.gz and .json from another build's store of a study.

    Parameters
    ----------
    name : str
        The study.
    db : pathlib.Path
        The other build's store of it.
    label : str
        The other build's name in the files' names (its git revision).
    reference_db : pathlib.Path
        The study's own store, whose grid the other build's fits are compared with.
    out : pathlib.Path
        Where the files go.

    Returns
    -------
    dict
        What the ``.json`` file holds: rows, both stores' code hashes, the task hash.

    Raises
    ------
    SystemExit
        If a store is missing, if the two stores hold other tasks (another task
        definition: experiment file, seeds, sizes' tasks), so that their fits cannot be
        compared task by task, or if both were computed by the same build.
    """
    for path in (db, reference_db):
        if not path.exists():
            raise SystemExit(f"{name}: no store at {path.name}; nothing to compare.")
    rows, meta = read_rows(db)
    reference_meta = read_meta(reference_db)
    if meta.get("task_sha256") != reference_meta.get("task_sha256"):
        raise SystemExit(f"{name}: {db.name} holds other tasks than {reference_db.name} "
                         f"(task hash {meta.get('task_sha256', '?')[:12]} against "
                         f"{reference_meta.get('task_sha256', '?')[:12]}); its fits cannot "
                         "be compared task by task.")
    if meta.get("code_sha256") == reference_meta.get("code_sha256"):
        raise SystemExit(f"{name}: {db.name} and {reference_db.name} were computed by the "
                         f"same build of gmoe (code hash {meta.get('code_sha256', '?')[:12]}); "
                         "there is no other build to compare.")
    stem = f"{name}.build-{label}"
    _write_rows(out / f"{stem}.csv.gz", rows,
                [c for c in OTHER_BUILD_COLUMNS if rows and c in rows[0]])
    info = {"study": name, "label": label, "rows": len(rows),
            "task_sha256": meta.get("task_sha256"),
            "code_sha256": meta.get("code_sha256"),
            "reference_code_sha256": reference_meta.get("code_sha256")}
    (out / f"{stem}.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def restore(name, db, results, verify, log=print):
    """Rebuild the missing store ``db`` of study ``name`` from its committed results.

    Parameters
    ----------
    name : str
        The study.
    db : pathlib.Path
        The store to create (it must not exist).
    results : pathlib.Path
        Where ``NAME.csv.gz`` and ``NAME.run.json`` are.
    verify : int
        Rows re-run before restoring (:func:`gmoe.simulation.verify_rows`), whichever
        build computed them: another machine's numerical stack may compute others.
    log : callable, default=print

    Returns
    -------
    int
        Rows restored.

    Raises
    ------
    SystemExit
        If the results are missing, damaged or of another task definition than the
        study's file, or a re-run row differs from its stored one; no store is left.
    """
    csv_path, run_path = results / f"{name}.csv.gz", results / f"{name}.run.json"
    for path in (csv_path, run_path):
        if not path.exists():
            raise SystemExit(f"{name}: no committed results at {path.relative_to(ROOT)}; "
                             "nothing to restore.")
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    info = json.loads(run_path.read_text())
    meta = info.get("meta", {})
    task = meta.get("task_sha256")
    if task is not None and task != experiment.task_sha256:
        raise SystemExit(f"{name}: the committed rows belong to another task definition "
                         f"(task hash {task[:12]}) than simulations/{name}.toml "
                         f"({experiment.task_sha256[:12]}); resuming would mix two "
                         "experiments.")
    try:
        rows = read_csv_rows(csv_path, experiment)
        if len(rows) != info.get("rows"):
            raise SystemExit(f"{name}: expected the {info.get('rows')} rows that "
                             f"{run_path.name} counts in {csv_path.name}, got {len(rows)}.")
        build = meta.get("code_sha256")
        shares = row_builds(meta, info.get("runs", []), len(rows))
        counted = sum(count for count, _ in shares[:-1])
        shares[-1] = (len(rows) - counted, shares[-1][1])
        builds = ", ".join(f"{count} of {build_name(sha)}" for count, sha in shares if count)
        log(f"{name}: {len(rows)} rows ({builds}; this is {code_sha256()[:12]}): "
            f"re-running {min(verify, len(rows))} of them")
        try:
            verified = verify_rows(experiment, rows, verify, log=log)
        except RestoreError as err:
            raise SystemExit(
                f"{name}: {err} Having gone on so, measure what that pools with `python "
                f"paper_figures/build_check.py {name} --machine`.") from None
        source = {"file": csv_path.name, "rows": len(rows), "code_sha256": build,
                  "verified_rows": len(verified)}
        if meta.get("restored_from"):  # an earlier restore: keep which build computed what
            source["earlier"] = meta["restored_from"]
        return restore_store(db, experiment, rows, runs=info.get("runs", []),
                             source=source)
    except StoreError as err:  # RestoreError included
        raise SystemExit(f"{name}: {err}") from None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="*", help="study names (default: all)")
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--quick", action="store_true",
                        help="the studies' [quick] grids (a check of the pipeline)")
    parser.add_argument("--export-only", action="store_true",
                        help="export the stores as they stand, without running anything")
    parser.add_argument("--results", type=Path, default=HERE / "results",
                        help="where the compact results go (default paper_figures/results)")
    parser.add_argument("--other-build", type=Path, metavar="DB",
                        help="export this store of one study, computed by another build of "
                             "gmoe, for comparison with the study's own store (with --label)")
    parser.add_argument("--restore", action="store_true",
                        help="rebuild a missing store from the committed results first")
    parser.add_argument("--verify", type=int, default=6, metavar="K",
                        help="with --restore: rows re-run before restoring; any difference "
                             "refuses the restore (default 6)")
    parser.add_argument("--label", help="the other build's name in the file name (its "
                                        "git revision)")
    args = parser.parse_args(argv)
    if args.verify < 0:
        parser.error(f"--verify: expected a number of rows >= 0, got {args.verify}")
    if args.restore and args.quick:
        parser.error("--restore rebuilds a full grid's store from the committed results; "
                     "it takes no --quick")
    if args.other_build is not None:
        if len(args.studies) != 1 or not args.label:
            parser.error("--other-build takes one study and a --label")
        if args.quick or args.export_only:
            parser.error("--other-build only exports the store it is given: it takes "
                         "neither --quick nor --export-only")
        if args.studies[0] not in STUDIES:
            parser.error(f"--other-build: expected one of the studies {', '.join(STUDIES)}, "
                         f"got {args.studies[0]!r}")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", args.label):
            parser.error(f"--label: expected letters, digits, '.', '_' or '-' (it names a "
                         f"file), got {args.label!r}")
        name = args.studies[0]
        info = export_other_build(name, args.other_build, args.label,
                                  HERE / "stores" / f"{name}.sqlite", args.results)
        print(f"{name}: {info['rows']} rows of build {args.label}", flush=True)
        return
    names = args.studies or list(STUDIES)
    stores = HERE / "stores"
    stores.mkdir(parents=True, exist_ok=True)
    for name in names:
        db = stores / f"{name}{'-quick' if args.quick else ''}.sqlite"
        cmd = [sys.executable, "-m", "gmoe.simulation.cli", "run", name, "--n-jobs",
               str(args.n_jobs), "--db", str(db), "--out", str(stores / "plots"),
               "--no-progress", "--progress-every", "600",
               *(["--quick"] if args.quick else [])]
        committed = args.results / f"{name}.csv.gz"
        if args.restore and not db.exists():
            count = restore(name, db, args.results, args.verify)
            print(f"{name}: restored {count} rows into {db.relative_to(ROOT)}", flush=True)
        elif not db.exists() and committed.exists() and not args.export_only \
                and not args.quick:
            # Hours of fits would start the grid again, and their export lose the rest.
            raise SystemExit(f"{name}: no store here, but {args.results.name}/{name}.csv.gz "
                             "holds the grid's committed rows: continue them with "
                             "--restore, or start afresh into another --results DIR.")
        if not args.export_only:
            print("+", " ".join(cmd[1:]), flush=True)
            subprocess.run(cmd, check=True, cwd=ROOT)
        elif not db.exists():
            print(f"{name}: no store at {db.relative_to(ROOT)}, nothing to export", flush=True)
            continue
        info = export(name, db, args.results)
        print(f"{name}: {info['rows']} rows, {info['wall_seconds']:.0f} s of wall time",
              flush=True)


if __name__ == "__main__":
    main()
