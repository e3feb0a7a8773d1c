"""Where a split cell's parameter errors come from: each atom's error and share of its cell.

An over-specified softmax fit splits a true cell among ``m`` fitted atoms. Its parameter
error columns (``pe_<parameter>_<cell>``) report the *largest* error over the cell's atoms,
while the theory bounds every atom's error through D2, where each atom's term is weighted
by its gate weight: for a cell of ``m = 2`` atoms (``rbar = 4``) D2 holds
``w_i (|d beta1_i|^4 + |d b_i|^4 + |d a_i|^2 + |d nu_i|^2)``. So D2 ~ n^-1/2 gives an
atom's ``beta1, b`` the rate n^-1/8 and its ``a, nu`` the rate n^-1/4 only while its
weight stays bounded away from 0; an atom that holds little of its cell can keep a large
error at little cost in D2.

This script takes a sample of the study's tasks, their fits read from the grid's results
where the grid stored them (gmoe's store format 3) and refitted otherwise (the harness's
data and near-truth starts on one thread; the kept fit is the start of largest
log-likelihood, as in the grid). It checks that every fit reproduces the grid's committed
D2 where the grid holds the task; a task whose fit does not (another build that fits
differently) is recorded and left out of the summary. For every fitted atom of a two-atom
cell it takes, from :func:`gmoe.metrics.parameter_errors` (D1's translation and cells),
its share of its cell's weight and its errors, and fits per true cell, as the rate
tables' geometric-mean rows do (the geometric mean over the cells of each size, then
least squares on log n with its 95% t-interval):

* the cell's largest error (what the ``pe_..._[m=2]`` columns report),
* the error of the atom with the larger share, and of the atom with the smaller one,
* the largest *share-weighted* error ``max_i s_i^(1/p) |d_i|``, ``s_i`` the atom's share of
  its cell and ``p`` the parameter's exponent in D2 (``rbar(2)`` for ``beta1, b``, half of it
  for ``a, nu``): an atom's part of D2 in the parameter's own units. ``w_i |d_i|^p <= D2``
  bounds it by ``(D2 / W)^(1/p)``, ``W`` the cell's weight (up to constants for the gate
  slope, whose alignment is D1's rather than D2's), so it decays at least as fast as the
  claimed rate whatever the shares do;

and it gives the median error of each atom and the quantiles of the smaller share. The gate
slope of the atom the alignment's translation carries onto the truth's is 0 up to
round-off: that error is left out.

It writes ``paper_figures/results/NAME.splitcells.json`` (every task's fit and the
summary) as the tasks finish; a rerun resumes it (with more replications, as a grid
grows, it computes only the new tasks), and
``--summarise-only`` recomputes the summary from the fits it holds (no refit), which
``make_figures.py`` quotes.

Usage::

    python paper_figures/split_cells.py softmax-over-k3
    python paper_figures/split_cells.py softmax-over-k3 --sizes 24 --replications 25
    python paper_figures/split_cells.py softmax-over-k3 --summarise-only
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy.special import logsumexp

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from committed_results import read_results  # noqa: E402

from gmoe.metrics import parameter_errors  # noqa: E402

# The exponents D2 gives a cell of m atoms (rbar(m), with the study's own choices).
from gmoe.metrics._cells import _resolve_rbar  # noqa: E402
from gmoe.simulation import (  # noqa: E402
    fit_near_truth_starts,
    fitted_measure,
    load_experiment,
    make_evaluation_design,
    single_threaded,
    task_data,
    task_metrics,
)
from gmoe.simulation.rates import fit_rate  # noqa: E402
from gmoe.simulation.store import code_sha256  # noqa: E402

#: The layout of the report this script writes (make_figures refuses another).
FORMAT = 2
#: The per-atom errors, and whether a parameter's exponent in a two-atom cell's D2 term is
#: rbar(2) (gate slope, expert intercept) or half of it (expert slope, variance).
PARAMETERS = {"gate_coef": 1.0, "expert_coef": 0.5, "expert_intercept": 1.0,
              "expert_var": 0.5}
#: A gate-slope error below this fraction of the slopes' size (1 + the truth's largest
#: slope + the fit's largest slope error) is the alignment's own (its translation carries
#: one atom's slope onto the truth's): round-off, not an error.
ALIGNED = 1e-12


def atom_records(experiment, measure):
    """Every fitted atom's cell, share of its cell's weight and parameter errors.

    From :func:`gmoe.metrics.parameter_errors` (its per-atom errors, whose largest over
    each cell are the study's columns). The shares are a softmax of the atoms'
    log-weights within each cell, so a cell whose weights underflow still has them.
    ``gate_aligned`` marks the atom whose gate slope the alignment's translation carried
    onto the truth's (its ``gate_coef`` is round-off).
    """
    pe = parameter_errors(measure, experiment.truth,
                          translation=experiment.metrics["translation"])
    cells, log_weight = pe.cells, pe.atom_log_weights
    errors = {name: pe.atom_errors[name] for name in PARAMETERS}
    scale = 1.0 + np.abs(experiment.truth.gate_coef).max() + errors["gate_coef"].max()
    aligned = errors["gate_coef"] <= ALIGNED * scale
    cell_log_weight = np.array([logsumexp(log_weight[cells == j]) for j in cells])
    sizes = np.bincount(cells)[cells]
    return [{"cell": int(cells[i]), "atoms_in_cell": int(sizes[i]),
             "share": float(np.exp(log_weight[i] - cell_log_weight[i])),
             "gate_aligned": bool(aligned[i]),
             **{name: float(values[i]) for name, values in errors.items()}}
            for i in range(cells.size)]


def check_task(experiment, n, rep, X_eval, grid_row):
    """Task ``(n, rep)``'s kept fit, its D2 and whether that is the grid's.

    The fit is the one the grid stored with the row (``fitted``, gmoe's store format 3)
    where it has one, else refitted from the task's data and starts.
    """
    stored = None if grid_row is None else fitted_measure(experiment, grid_row)
    if stored is not None:
        kept, source = stored, "stored"
    else:
        X, y, streams = task_data(experiment, n, rep)
        with single_threaded(), warnings.catch_warnings():  # as the harness fits a task
            warnings.simplefilter("ignore")
            results = fit_near_truth_starts(experiment, X, y, streams, n)
        fits = [est for est, _, _ in results if est is not None]
        if not fits:
            return {"n": n, "rep": rep, "fit": "failed"}
        kept, source = max(fits, key=lambda e: e.lower_bound_).mixing_measure_, "refitted"
    d2 = float(task_metrics(experiment, kept, X_eval)[0]["d2"])
    grid_d2 = None if grid_row is None else grid_row.get("d2")
    # A refit runs the grid's arithmetic and a stored fit is exact: anything but equality
    # (up to the CSV's round trip, which is exact too) is another point.
    same = None if grid_d2 is None else bool(np.isclose(d2, grid_d2, rtol=1e-12, atol=0.0))
    return {"n": n, "rep": rep, "fit": source, "d2": d2, "grid_d2": grid_d2,
            "same_as_grid": same, "fitted": kept.to_vector().tolist()}


def _like(experiment):
    """A row-shaped holder of a task's fit vector, for :func:`fitted_measure`."""
    return lambda task: fitted_measure(experiment, {"n": task["n"], "rep": task["rep"],
                                                    "fitted": json.dumps(task["fitted"])})


def _rate(n, values):
    """The geometric-mean rate of ``values``, as the rate tables'.

    NaN entries are left out, and so are entries that are not positive (0: a distance
    here is never negative), which a geometric mean cannot hold (the rate tables refuse
    such a column instead); ``cells`` counts the entries kept. A dict of the slope, its
    95% interval and that count; NaN slope where fewer than two sizes have a value.
    """
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values) & (values > 0)
    out = {"slope": float("nan"), "low": float("nan"), "high": float("nan"),
           "cells": int(finite.sum())}
    try:
        fit = fit_rate({"n": np.asarray(n, dtype=float)[finite], "v": values[finite]}, "v",
                       summary="geometric")
    except ValueError:  # fewer than two sizes
        return out
    out.update(slope=fit.slope, low=float(fit.conf_int[0]), high=float(fit.conf_int[1]))
    return out


def two_atom_cells(experiment, tasks):
    """(n, cell, its two atoms ordered by share: larger first) of every two-atom cell.

    Only the tasks whose fit is the grid's (or that the grid does not hold) count.
    """
    measure = _like(experiment)
    out = []
    for task in tasks:
        if "fitted" not in task or task.get("same_as_grid") is False:
            continue
        atoms = atom_records(experiment, measure(task))
        for cell in sorted({a["cell"] for a in atoms}):
            members = [a for a in atoms if a["cell"] == cell]
            if len(members) == 2:
                out.append((task["n"], cell, sorted(members, key=lambda a: -a["share"])))
    return out


def _exponents(experiment):
    """Each parameter's exponent ``p`` in a two-atom cell's D2 term."""
    rbar = _resolve_rbar(experiment.metrics["rbar"] or None, experiment.truth.family)(2)
    return {name: factor * rbar for name, factor in PARAMETERS.items()}


def summarise(experiment, tasks):
    """Per true cell, the rates and levels over the sampled two-atom cells.

    Returns
    -------
    dict
        ``cells``: per true cell that was split in two, its count, per parameter the
        rates (``largest``, ``larger_share``, ``smaller_share``, ``share_weighted``), the
        median error of each atom and in how many cells the largest error is the smaller
        share's, and the quantiles of the smaller share; ``tasks``: how many tasks count,
        how many were left out as not the grid's fit, and how many failed.
    """
    exponents = _exponents(experiment)
    split = two_atom_cells(experiment, tasks)
    summary = {"tasks": {"used": sum("fitted" in t and t.get("same_as_grid") is not False
                                     for t in tasks),
                         "not_the_grids": sum(t.get("same_as_grid") is False for t in tasks),
                         "failed": sum(t.get("fit") == "failed" for t in tasks)},
               "cells": {}}
    for cell in sorted({c for _, c, _ in split}):
        group = [(n, atoms) for n, c, atoms in split if c == cell]
        n = [size for size, _ in group]
        entry = {"count": len(group), "parameters": {}}
        for name, p in exponents.items():
            def value(atom, name=name):
                # The aligned atom's gate slope is round-off: left out.
                return np.nan if name == "gate_coef" and atom["gate_aligned"] else atom[name]

            larger = np.array([value(atoms[0]) for _, atoms in group])
            smaller = np.array([value(atoms[1]) for _, atoms in group])
            weighted = np.array([np.nanmax([a["share"] ** (1.0 / p) * value(a) for a in atoms])
                                 if any(np.isfinite(value(a)) for a in atoms) else np.nan
                                 for _, atoms in group])
            largest = np.fmax(larger, smaller)
            entry["parameters"][name] = {
                "exponent": p, "theory": -1.0 / (2 * p),
                "largest": _rate(n, largest), "larger_share": _rate(n, larger),
                "smaller_share": _rate(n, smaller), "share_weighted": _rate(n, weighted),
                "median_error": {
                    "larger_share": float(np.nanmedian(larger)) if np.any(
                        np.isfinite(larger)) else None,
                    "smaller_share": float(np.nanmedian(smaller)) if np.any(
                        np.isfinite(smaller)) else None},
                # Whose error the pe column reports, over the cells where both are
                # measured.
                "largest_is_smaller_share": int(np.sum(smaller > larger)),
                "both_measured": int(np.sum(np.isfinite(smaller) & np.isfinite(larger))),
            }
        shares = np.array([atoms[1]["share"] for _, atoms in group])
        entry["smaller_share"] = {
            "quantiles": dict(zip(("10%", "50%", "90%"),
                                  np.quantile(shares, [0.1, 0.5, 0.9]).tolist(), strict=True)),
            "below_0.1": int(np.sum(shares < 0.1))}
        summary["cells"][str(cell)] = entry
    return summary


def sampled_sizes(grid, count):
    """``count`` sizes evenly spread over the grid's list of sizes (its ends included)."""
    picks = np.unique(np.round(np.linspace(0, len(grid) - 1, count)).astype(int))
    return [int(grid[i]) for i in picks]


def _write(out, report):
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(out)  # never a half-written report


def reusable_tasks(old, report, grid_rows):
    """The tasks of an earlier report that this one would compute again, as they are.

    A task is a function of its ``(n, rep)``, the grid's row and the code: an earlier
    report of the same format, sizes and code keeps every task of this sample (a rerun
    with more replications, as a grid grows, computes only the new ones) whose grid row
    is unchanged (the same D2, or still none).

    Parameters
    ----------
    old : dict
        The earlier report, as written.
    report : dict
        The new report: its ``format``, ``sizes``, ``replications`` and ``code_sha256``.
    grid_rows : dict
        The grid's rows by ``(n, rep)``.

    Returns
    -------
    list of dict
    """
    if (old.get("format"), old.get("sizes"), old.get("code_sha256")) != (
            report["format"], report["sizes"], report["code_sha256"]):
        return []

    def unchanged(task):
        row = grid_rows.get((task["n"], task["rep"]))
        return task.get("grid_d2") == (None if row is None else row.get("d2"))

    return [task for task in old["tasks"]
            if task["rep"] < report["replications"] and unchanged(task)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="softmax-over-k3")
    parser.add_argument("--sizes", type=int, default=10,
                        help="how many of the grid's sizes to sample, evenly spread (>= 2)")
    parser.add_argument("--replications", type=int, default=16,
                        help="replications 0 .. R-1 of each sampled size (>= 1)")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--summarise-only", action="store_true",
                        help="refit nothing: recompute the summary of the existing report")
    args = parser.parse_args(argv)
    if args.sizes < 2 or args.replications < 1:
        parser.error(f"--sizes must be >= 2 and --replications >= 1; got --sizes "
                     f"{args.sizes}, --replications {args.replications}.")
    experiment = load_experiment(ROOT / "simulations" / f"{args.study}.toml")
    out = args.results / f"{args.study}.splitcells.json"
    if args.summarise_only:
        if not out.exists():
            raise SystemExit(f"{args.study}: no report at {out.name} to summarise; run "
                             "without --summarise-only first.")
        report = json.loads(out.read_text())
        report.update(format=FORMAT, summary=summarise(experiment, report["tasks"]))
        _write(out, report)
        print(f"rewrote the summary of {out}")
        return 0
    # Paper 1's setting: the exponents are its rbar, and with one feature the alignment's
    # translation carries one atom's gate slope exactly onto the truth's (ALIGNED).
    softmax = experiment.truth.gating == "softmax" and experiment.fit["gating"] == "softmax"
    over = experiment.fit["n_experts"] > experiment.truth.n_experts
    one_feature = experiment.design["n_features"] == 1
    if experiment.start["kind"] != "near_truth" or not (softmax and over and one_feature):
        raise SystemExit(f"{args.study}: only over-specified softmax studies of one feature "
                         f"with near-truth starts are checked; this one has start kind "
                         f"{experiment.start['kind']!r}, a {experiment.truth.gating} truth "
                         f"fitted by {experiment.fit['gating']}, "
                         f"{experiment.design['n_features']} feature(s) and "
                         f"{experiment.fit['n_experts']} fitted experts for "
                         f"{experiment.truth.n_experts} true ones.")
    rows, _ = read_results(args.results, args.study)
    grid_rows = {(r["n"], int(r["rep"])): r for r in rows or []}
    X_eval = make_evaluation_design(experiment)
    sizes = sampled_sizes(experiment.sizes, args.sizes)
    report = {"format": FORMAT, "study": args.study, "sizes": sizes,
              "replications": args.replications, "code_sha256": code_sha256(),
              "tasks": [], "summary": None}
    if out.exists():
        report["tasks"] = reusable_tasks(json.loads(out.read_text()), report, grid_rows)
        if report["tasks"]:
            print(f"resuming {out.name}: {len(report['tasks'])} of its tasks are in this "
                  "sample", flush=True)
    done = {(t["n"], t["rep"]) for t in report["tasks"]}
    planned = len(sizes) * args.replications
    started = time.perf_counter()
    for n in sizes:
        for rep in range(args.replications):
            if (n, rep) in done:
                continue
            task = check_task(experiment, n, rep, X_eval, grid_rows.get((n, rep)))
            report["tasks"].append(task)
            if task.get("same_as_grid") is False:
                print(f"n={n} rep={rep}: D2 {task['d2']!r} is not the grid's "
                      f"{task['grid_d2']!r}: another point; left out of the summary",
                      flush=True)
            _write(out, report)  # as each task finishes: an interruption loses one
            print(f"n={n:>6} rep={rep:>2}: {task['fit']}, D2 {task.get('d2', '-')} "
                  f"({len(report['tasks'])} of {planned}, "
                  f"{time.perf_counter() - started:.0f} s)", flush=True)
    report["summary"] = summarise(experiment, report["tasks"])
    _write(out, report)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
