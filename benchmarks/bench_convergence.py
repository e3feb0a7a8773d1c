"""EM steps and seconds to the stopping rule, plain vs accelerated, and how close it stops.

The softmax studies' 2-expert truth (``simulations/softmax-*.toml``: gate 25 x - 8,
experts -20 x + 15 and 20 x - 5, variances 0.09 and 0.16, x on the grid ``linspace(0, 1,
n)``) is fitted with k = 2 (exact), 3 and 4 experts from the studies' near-truth starts
(:func:`gmoe.simulation.start.make_near_truth_start`, its default noise schedule), at
n = 1e4 and 1e5, a few replications each (every one its own data and start). For each:

* ``squarem``: the default settings (``tol=1e-4``, SQUAREM);
* ``plain``: the same with ``acceleration=None`` (the stopping rule's moves included);
* ``tight``: the default settings with a 1000 times smaller ``tol``, the reference.

Reported: EM steps (``n_iter_``), CPU seconds, whether the rule held, and for the default
fit its shortfall ``L(tight) - L(squarem)`` in total log-likelihood and the ratio of its
Voronoi loss to the tight fit's (D2 for k > 2, D1 for k = 2). The summary checks the two
claims: over-specified default fits within 0.01 of the tight fit's L, and the same D2 to
5 %; and it lists the fits where plain EM, from the same start, stopped at another maximum
(the stopping rule's Newton and curvature moves are part of both runs).

Usage::

    python benchmarks/bench_convergence.py                      # 3 replications (long)
    python benchmarks/bench_convergence.py --sizes 10000 --replications 5
    python benchmarks/bench_convergence.py --experts 3 --csv convergence.csv
"""

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from _common import write_csv

import gmoe
from gmoe.metrics import voronoi_loss
from gmoe.simulation.start import make_near_truth_start

TRUTH = gmoe.MixingMeasure([[25.0], [0.0]], [-8.0, 0.0], [[-20.0], [20.0]], [15.0, -5.0],
                           [0.09, 0.16])
SEED = 20230502


def task(n_experts, n, rep):
    """Data and near-truth start of one replication (their own SeedSequence)."""
    rng = np.random.default_rng(np.random.SeedSequence(SEED, spawn_key=(n_experts, n, rep)))
    X = gmoe.make_design(n, "grid")
    y = gmoe.sample_moe(TRUTH, X, random_state=rng)
    start = make_near_truth_start(TRUTH, n_experts, n, rng)
    return X, y, start


def fit(X, y, start, **params):
    est = gmoe.GaussianMoERegressor(start.n_experts, init_params=start, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.process_time()
        est.fit(X, y)
        seconds = time.process_time() - started
    kind = "exact" if start.n_experts == TRUTH.n_experts else "over"
    return dict(n_iter=est.n_iter_, seconds=seconds, converged=bool(est.converged_),
                log_lik=float(est.lower_bound_ * len(y)), gap=float(est.convergence_gap_),
                loss=float(voronoi_loss(est, TRUTH, kind=kind)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experts", type=int, nargs="+", default=[2, 3, 4])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 100000])
    parser.add_argument("--replications", type=int, default=3)
    parser.add_argument("--tol", type=float, default=1e-4, help="the default fit's tol")
    parser.add_argument("--max-iter", type=int, default=20000)
    parser.add_argument("--csv", type=Path, help="also write the per-fit table here")
    args = parser.parse_args(argv)

    X, y, start = task(2, 2000, 0)
    fit(X, y, start)  # warm the numba cache
    rows = []
    print(f"{'k':>2} {'n':>7} {'rep':>3} | {'squarem':>22} | {'plain':>22} | {'tight':>22} | "
          f"{'dL':>8} {'loss ratio':>10}")
    for k in args.experts:
        for n in args.sizes:
            for rep in range(args.replications):
                X, y, start = task(k, n, rep)
                common = dict(max_iter=args.max_iter)
                fast = fit(X, y, start, tol=args.tol, **common)
                plain = fit(X, y, start, tol=args.tol, acceleration=None, **common)
                tight = fit(X, y, start, tol=args.tol / 1000, **common)
                shortfall = tight["log_lik"] - fast["log_lik"]
                ratio = fast["loss"] / tight["loss"] if tight["loss"] > 0 else np.nan
                for name, result in (("squarem", fast), ("plain", plain), ("tight", tight)):
                    rows.append(dict(n_experts=k, n=n, rep=rep, run=name, **result))

                def cell(r):
                    mark = "" if r["converged"] else "*"
                    return f"{r['n_iter']:6d} it {r['seconds']:8.2f}s{mark:1s}"

                print(f"{k:2d} {n:7d} {rep:3d} | {cell(fast):>22} | {cell(plain):>22} | "
                      f"{cell(tight):>22} | {shortfall:8.4f} {ratio:10.4f}", flush=True)
    print("(* = max_iter reached before the stopping rule held)")

    print("\nmeans per setting: EM steps and CPU seconds, plain / squarem")
    for k in args.experts:
        for n in args.sizes:
            sel = {run: [r for r in rows if (r["n_experts"], r["n"], r["run"]) == (k, n, run)]
                   for run in ("squarem", "plain")}
            steps = {run: np.mean([r["n_iter"] for r in v]) for run, v in sel.items()}
            secs = {run: np.mean([r["seconds"] for r in v]) for run, v in sel.items()}
            print(f"  k={k} n={n:7d}: squarem {steps['squarem']:8.0f} steps {secs['squarem']:8.2f}s"
                  f"   plain {steps['plain']:8.0f} steps {secs['plain']:8.2f}s   "
                  f"ratio {secs['plain'] / secs['squarem']:5.2f}")

    over = [(k, n, rep) for k in args.experts if k > 2 for n in args.sizes
            for rep in range(args.replications)]
    if over:
        worst_l, worst_d, apart = 0.0, 0.0, []
        for key in over:
            got = {r["run"]: r for r in rows if (r["n_experts"], r["n"], r["rep"]) == key}
            worst_l = max(worst_l, got["tight"]["log_lik"] - got["squarem"]["log_lik"])
            worst_d = max(worst_d, abs(got["squarem"]["loss"] / got["tight"]["loss"] - 1))
            other = got["plain"]["log_lik"] - got["squarem"]["log_lik"]
            if abs(other) > 0.01:
                apart.append(f"k={key[0]} n={key[1]} rep={key[2]}: {other:+.3f}")
        print(f"\nover-specified, default vs tol/1000: largest L shortfall {worst_l:.5f} "
              f"({'ok' if worst_l <= 0.01 else 'FAILS'}: <= 0.01), largest D2 difference "
              f"{worst_d:.2%} ({'ok' if worst_d <= 0.05 else 'FAILS'}: <= 5 %)")
        # Plain EM from the same start follows another path, and an over-specified
        # likelihood has several maxima (and directions where it rises without bound, a
        # gate growing infinitely steep): where the two stop apart, say so.
        print(f"plain EM ended at another maximum than SQUAREM in {len(apart)} of "
              f"{len(over)} over-specified fits (L plain - L squarem): "
              + ("; ".join(apart) if apart else "none"))
    if args.csv:
        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
