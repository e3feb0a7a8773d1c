"""Where a split cell's parameter errors come from: each atom's error and share of its cell.

An over-specified softmax fit splits a true cell among ``m`` fitted atoms. Its parameter
error columns (``pe_<parameter>_<cell>``) report the *largest* error over the cell's atoms,
while the theory bounds every atom's error through D2, where each atom's term is weighted
by its gate weight: for a cell of ``m = 2`` atoms (``rbar = 4``) D2 holds
``w_i (|d beta1_i|^4 + |d b_i|^4 + |d a_i|^2 + |d nu_i|^2)``. So D2 ~ n^-1/2 gives an
atom's ``beta1, b`` the rate n^-1/8 and its ``a, nu`` the rate n^-1/4 only while its
weight stays bounded away from 0; an atom whose share of its cell vanishes can keep a
large error at no cost in D2.

This script takes a sample of the study's tasks, their fits read from the grid's results
where the grid stored them (gmoe's store format 3) and refitted otherwise (the harness's
data and near-truth starts on one thread; the kept fit is the start of largest
log-likelihood, as in the grid). For every fitted atom of a split cell it records, after
the alignment of the parameter errors, its share of its cell's weight and its errors. It
checks that every fit reproduces the grid's committed D2 where the grid holds the task (a
build that fits differently would not describe the grid's fits). It then fits, over the
sampled tasks whose cell holds two atoms, log error against log n per task (the
geometric-mean slope of the rate tables, with its 95% interval) for:

* the cell's largest error (what the ``pe_..._[m=2]`` columns report),
* the error of the atom with the larger share, and of the atom with the smaller one,
* the largest *share-weighted* error ``max_i s_i^(1/p) |d_i|``, ``s_i`` the atom's share of
  its cell and ``p`` the parameter's exponent in D2 (4 for ``beta1, b``, 2 for ``a, nu``):
  an atom's contribution to D2 in the parameter's own units, which the theory says decays
  at the claimed rate whatever the shares do;

and it gives the median error of each atom and the quantiles of the smaller share.

It writes ``paper_figures/results/NAME.splitcells.json`` (every atom's record and the
fitted slopes), which ``make_figures.py`` quotes.

Usage::

    python paper_figures/split_cells.py softmax-over-k3
    python paper_figures/split_cells.py softmax-over-k3 --sizes 12 --replications 16
    python paper_figures/split_cells.py softmax-over-k3 --summarise-only
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from scipy import stats

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from make_figures import read_results  # noqa: E402

# The per-atom errors and normalised weights are not public (parameter_errors returns the
# largest error of each cell): they are read where parameter_errors computes them.
from gmoe.metrics.voronoi import _align  # noqa: E402
from gmoe.simulation import (  # noqa: E402
    fit_near_truth_starts,
    fitted_measure,
    load_experiment,
    make_evaluation_design,
    single_threaded,
    task_data,
    task_metrics,
)
from gmoe.simulation.store import code_sha256  # noqa: E402

#: The parameters and their exponents in a two-atom cell's D2 term (rbar(2) = 4).
PARAMETERS = {"gate_coef": 4, "expert_coef": 2, "expert_intercept": 4, "expert_var": 2}
#: The relative agreement with the grid's D2 that counts as the same fit (a refit runs the
#: same arithmetic and a stored fit is exact; the margin covers the CSV's decimal round
#: trip).
SAME_D2_RTOL = 1e-9


def atom_records(experiment, measure):
    """Every fitted atom's cell, share of its cell's weight and parameter errors.

    The alignment is that of :func:`gmoe.metrics.parameter_errors` (the errors it reports
    are the largest of these over each cell).
    """
    al = _align(measure, experiment.truth, experiment.metrics["translation"], "identifiable")
    true, fit, cells = al.true, al.fit, al.cells
    errors = {
        "gate_coef": np.linalg.norm(al.beta1 - true.beta1[cells], axis=1),
        "expert_coef": np.linalg.norm(fit.a - true.a[cells], axis=1),
        "expert_intercept": np.abs(fit.b - true.b[cells]),
        "expert_var": np.abs(fit.nu - true.nu[cells]),
    }
    cell_weight = np.bincount(cells, weights=al.w, minlength=true.k)[cells]
    sizes = np.bincount(cells, minlength=true.k)[cells]
    # A cell whose weights all underflowed to 0 is shared equally: its atoms still count.
    shares = np.where(cell_weight > 0, al.w / np.where(cell_weight > 0, cell_weight, 1.0),
                      1.0 / sizes)
    return [{"cell": int(cells[i]), "atoms_in_cell": int(sizes[i]),
             "share": float(shares[i]),
             **{name: float(values[i]) for name, values in errors.items()}}
            for i in range(fit.k)]


def check_task(experiment, n, rep, X_eval, grid_row):
    """Task ``(n, rep)``'s kept fit: its atoms, its D2 and whether that is the grid's.

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
            return {"n": n, "rep": rep, "error": "every start failed"}
        kept, source = max(fits, key=lambda e: e.lower_bound_).mixing_measure_, "refitted"
    d2 = float(task_metrics(experiment, kept, X_eval)[0]["d2"])
    grid_d2 = None if grid_row is None else grid_row.get("d2")
    same = None if grid_d2 is None else bool(np.isclose(d2, grid_d2, rtol=SAME_D2_RTOL))
    return {"n": n, "rep": rep, "fit": source, "d2": d2, "grid_d2": grid_d2,
            "same_as_grid": same, "atoms": atom_records(experiment, kept)}


def _slope(n, values):
    """Slope of log values on log n with its 95% t-interval (NaN with < 3 cells)."""
    n, values = np.asarray(n, float), np.asarray(values, float)
    keep = values > 0
    if keep.sum() < 3:
        return {"slope": float("nan"), "low": float("nan"), "high": float("nan"),
                "cells": int(keep.sum())}
    x, z = np.log(n[keep]), np.log(values[keep])
    dx = x - x.mean()
    sxx = float(dx @ dx)
    if sxx == 0.0:  # one size: no slope
        return {"slope": float("nan"), "low": float("nan"), "high": float("nan"),
                "cells": int(keep.sum())}
    slope = float(dx @ (z - z.mean()) / sxx)
    residual = z - z.mean() - slope * dx
    stderr = np.sqrt(float(residual @ residual) / (keep.sum() - 2) / sxx)
    half = float(stats.t.ppf(0.975, keep.sum() - 2) * stderr)
    return {"slope": slope, "low": slope - half, "high": slope + half,
            "cells": int(keep.sum())}


def two_atom_cells(tasks):
    """(n, the cell's two atoms ordered by share: larger first) of every two-atom cell."""
    out = []
    for task in tasks:
        for cell in sorted({a["cell"] for a in task.get("atoms", [])}):
            atoms = [a for a in task["atoms"] if a["cell"] == cell]
            if len(atoms) == 2:
                out.append((task["n"], sorted(atoms, key=lambda a: -a["share"])))
    return out


def summarise(tasks):
    """The slopes over the sampled two-atom cells (see the module documentation).

    Also the median error of each atom and the quantiles of the smaller share: the sample
    is small beside the grid, and these levels say which atom the cell's largest error
    comes from where the slopes' intervals are wide.
    """
    cells = two_atom_cells(tasks)
    n = [size for size, _ in cells]
    summary = {"cells": len(cells), "parameters": {}}
    for name, p in PARAMETERS.items():
        larger = [atoms[0][name] for _, atoms in cells]
        smaller = [atoms[1][name] for _, atoms in cells]
        weighted = [max(a["share"] ** (1.0 / p) * a[name] for a in atoms) for _, atoms in cells]
        summary["parameters"][name] = {
            "exponent": p, "theory": -1.0 / (2 * p),
            "largest": _slope(n, np.maximum(larger, smaller)),
            "larger_share": _slope(n, larger),
            "smaller_share": _slope(n, smaller),
            "share_weighted": _slope(n, weighted),
            "median_error": {"larger_share": float(np.median(larger)),
                             "smaller_share": float(np.median(smaller))},
            # Whose error the pe column reports.
            "largest_is_smaller_share": int(sum(s > g for g, s in
                                                zip(larger, smaller, strict=True))),
        }
    shares = np.array([atoms[1]["share"] for _, atoms in cells])
    summary["smaller_share"] = {
        "quantiles": dict(zip(("10%", "50%", "90%"),
                              np.quantile(shares, [0.1, 0.5, 0.9]).tolist(), strict=True)),
        "below_0.1": int(np.sum(shares < 0.1))}
    return summary


def sampled_sizes(grid, count):
    """``count`` sizes evenly spread over the grid's list of sizes (its ends included)."""
    picks = np.unique(np.round(np.linspace(0, len(grid) - 1, count)).astype(int))
    return [int(grid[i]) for i in picks]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("study", nargs="?", default="softmax-over-k3")
    parser.add_argument("--sizes", type=int, default=10,
                        help="how many of the grid's sizes to sample (evenly spread)")
    parser.add_argument("--replications", type=int, default=16)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--summarise-only", action="store_true",
                        help="refit nothing: recompute the slopes of the existing report")
    args = parser.parse_args(argv)
    out = args.results / f"{args.study}.splitcells.json"
    if args.summarise_only:
        if not out.exists():
            raise SystemExit(f"{args.study}: no report at {out.name} to summarise; run "
                             "without --summarise-only first.")
        report = json.loads(out.read_text())
        report["summary"] = summarise(report["tasks"])
        out.write_text(json.dumps(report, indent=1) + "\n")
        print(f"rewrote the summary of {out}")
        return 0
    experiment = load_experiment(ROOT / "simulations" / f"{args.study}.toml")
    if experiment.start["kind"] != "near_truth" or "d2" not in experiment.metric_columns() \
            or experiment.truth.family.selected_experts() is not None:
        raise SystemExit(f"{args.study}: only over-specified studies of a dense gate with "
                         "near-truth starts are checked.")
    rows, _ = read_results(args.results, args.study)
    grid_rows = {(r["n"], int(r["rep"])): r for r in rows or []}
    X_eval = make_evaluation_design(experiment)
    sizes = sampled_sizes(experiment.sizes, args.sizes)
    tasks, started = [], time.perf_counter()
    for n in sizes:
        for rep in range(args.replications):
            task = check_task(experiment, n, rep, X_eval, grid_rows.get((n, rep)))
            if task.get("same_as_grid") is False:
                raise SystemExit(f"{args.study}: the fit of task ({n}, {rep}) has D2 "
                                 f"{task['d2']!r}, the grid's is {task['grid_d2']!r}: this "
                                 "build does not reproduce the grid's fits.")
            tasks.append(task)
            split = sorted({a["cell"] for a in task.get("atoms", [])
                            if a["atoms_in_cell"] > 1})
            print(f"n={n:>6} rep={rep:>2}: split cells {split}, D2 {task.get('d2', 'failed')}"
                  f" ({len(tasks)} of {len(sizes) * args.replications}, "
                  f"{time.perf_counter() - started:.0f} s)", flush=True)
    report = {"study": args.study, "sizes": sizes, "replications": args.replications,
              "code_sha256": code_sha256(),
              "reproduced_grid": sum(t.get("same_as_grid") is True for t in tasks),
              "tasks": tasks, "summary": summarise(tasks)}
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
