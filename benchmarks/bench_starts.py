"""Start strategies on trap designs: how often each reaches the best-known log-likelihood.

Each trap design is simulated once (a fixed seed); every strategy fits it with
``random_state`` 0, 1, ..., R-1 at default settings otherwise. The best-known log-likelihood
of a design is the best over every fit of this run plus a pool of long searches
(``init_params='short_em'``, ``n_init=20``, a few seeds). A fit reaches it when its total
log-likelihood is within ``--tolerance`` (0.01) of it. Reported per strategy and design: the
share of fits that reach it, the worst shortfall, and the mean fit time (CPU seconds).

The trap designs (the first six; the last three are stress designs, reported apart):

* ``crossing-d1`` / ``crossing-d5``: two crossing regression lines (planes) under an almost
  flat gate: k-means on ``(x, y)`` cuts the cross into halves, a local optimum;
* ``small-expert-d1`` / ``small-expert-d5``: one expert of about 5 % weight among three;
* ``parallel-d1``: two nearly parallel lines, 2.5 noise SDs apart;
* ``unequal-var-d1``: a tight line inside a wide cloud (variances 0.01 and 1);
* stress: ``tiny-expert-d1``, one expert of 0.8 % weight among three (some 23 of 3000
  rows; the two best optima differ by 0.5 in log-likelihood); ``top1-d1`` / ``top1-d5``,
  a top-1 gate over three experts fitted with ``gating='topk'`` (a start whose partition
  crosses the selection regions is hard to repair; in five dimensions no strategy at
  default settings reaches what the long searches find).

``--baseline PATH`` also times a gmoe checkout at PATH (another build, e.g. the commit
before this benchmark existed: ``git archive <commit> | tar -x -C PATH``) with its default
settings on the same designs, in a subprocess of this run, and reports the time ratios
against it (``today`` in the table). The baseline runs with ``OMP_NUM_THREADS=1``, as this
build's k-means starts do.

Usage::

    python benchmarks/bench_starts.py                      # 10 seeds per strategy
    python benchmarks/bench_starts.py --seeds 20 --baseline BASE  # BASE: a git archive
    python benchmarks/bench_starts.py --strategies kmeans short_em --csv starts.csv
"""

import argparse
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _common import write_csv

import gmoe


def _measure(gate_coef, gate_intercept, expert_coef, expert_intercept, expert_var):
    return gmoe.MixingMeasure(gate_coef, gate_intercept, expert_coef, expert_intercept,
                              expert_var)


def designs():
    """name -> (truth, n, kind of X) of every trap design (gating: the truth's)."""
    d5 = np.zeros((2, 5))
    crossing5 = _measure(np.vstack([[0.3, 0, 0, 0, 0], d5[0]]), [0.0, 0.0],
                         [[2.0, 1.0, 0.0, -1.0, 0.5], [-2.0, -1.0, 0.5, 1.0, 0.0]],
                         [0.0, 0.0], [0.25, 0.25])
    small5 = _measure([[4.0, 1.0, 0, 0, 0], [-2.0, 0.5, 0, 0, 0], [0.0] * 5],
                      [-3.5, 0.0, 0.0],
                      [[1.0, 0, 0, 0, 0], [0.5, 1.0, 0, 0, 0], [-1.0, 0, 0.5, 0, 0]],
                      [4.0, 0.0, 1.0], [0.1, 0.2, 0.2])
    return {
        "crossing-d1": (_measure([[0.5], [0.0]], [0.0, 0.0], [[2.0], [-2.0]], [0.0, 0.0],
                                 [0.09, 0.09]), 2000, "uniform"),
        "crossing-d5": (crossing5, 3000, "normal"),
        "small-expert-d1": (_measure([[6.0], [-4.0], [0.0]], [-6.5, 0.0, 0.0],
                                     [[1.0], [0.5], [-1.0]], [3.0, 0.0, 1.0],
                                     [0.05, 0.1, 0.1]), 3000, "uniform"),
        "small-expert-d5": (small5, 4000, "normal"),
        "tiny-expert-d1": (_measure([[8.0], [-4.0], [0.0]], [-10.0, 0.0, 0.0],
                                    [[1.0], [0.5], [-1.0]], [3.0, 0.0, 1.0],
                                    [0.05, 0.1, 0.1]), 3000, "uniform"),
        "parallel-d1": (_measure([[1.0], [0.0]], [0.0, 0.0], [[1.0], [1.0]], [0.0, 0.5],
                                 [0.04, 0.04]), 2000, "uniform"),
        "unequal-var-d1": (_measure([[0.5], [0.0]], [0.0, 0.0], [[1.0], [1.5]], [0.0, 0.0],
                                    [0.01, 1.0]), 2000, "uniform"),
        "top1-d1": (gmoe.MixingMeasure([[6.0], [-6.0], [0.0]], [-4.0, 2.0, 0.0],
                                       [[-5.0], [5.0], [0.0]], [3.0, -2.0, 1.0],
                                       [0.09, 0.16, 0.04], gating="topk", top_k=1),
                    3000, "uniform"),
        "top1-d5": (gmoe.MixingMeasure(
            [[4.0, 1.0, 0, 0, 0], [-4.0, 0.5, 0, 0, 0], [0.0] * 5], [0.0, 0.0, 0.0],
            [[-2.0, 1.0, 0, 0, 0], [2.0, 0, 1.0, 0, 0], [0.0, 0, 0, 1.0, 0]],
            [1.0, -1.0, 0.0], [0.1, 0.1, 0.1], gating="topk", top_k=1), 4000, "normal"),
    }


TRAPS = ("crossing-d1", "crossing-d5", "small-expert-d1", "small-expert-d5", "parallel-d1",
         "unequal-var-d1")
STRESS = ("tiny-expert-d1", "top1-d1", "top1-d5")


def simulate(name):
    truth, n, kind = designs()[name]
    rng = np.random.default_rng(_seed(name))
    d = truth.n_features
    X = rng.uniform(-1.0, 1.0, (n, d)) if kind == "uniform" else rng.normal(0.0, 1.0, (n, d))
    y = gmoe.sample_moe(truth, X, random_state=rng)
    return X, y, truth.n_experts


def _seed(name):
    # A stable seed per design (Python's hash() of a str changes from run to run).
    return sum((i + 1) * ord(c) for i, c in enumerate(name))


def _gating(truth):
    if truth.gating == "topk":
        return {"gating": "topk", "top_k": truth.top_k}
    return {}


def fit_one(name, init_params, seed, n_init=None):
    """Total log-likelihood and CPU seconds of one fit (default settings otherwise).

    CPU time of this process (BLAS and OpenMP held to one thread): on a shared machine it
    is steadier than wall time, which other jobs inflate at random.
    """
    X, y, k = simulate(name)
    params = _gating(designs()[name][0])
    if n_init is not None:
        params["n_init"] = n_init
    if init_params is not None:
        params["init_params"] = init_params
    est = gmoe.GaussianMoERegressor(k, random_state=seed, **params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.process_time()
        est.fit(X, y)
        seconds = time.process_time() - started
    return float(est.lower_bound_ * len(y)), seconds


def run_baseline(path, names, seeds):
    """Today's default fits, timed by the gmoe at ``path`` in a subprocess."""
    # One OpenMP thread, as this build's starts use: spinning k-means threads on a busy
    # machine would otherwise inflate the baseline's times.
    env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", "--seeds", str(seeds), "--designs", *names]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(names, seeds):
    # Warm the numba cache first so that no fit pays the compilation.
    fit_one(names[0], None, 0)
    results = {name: [fit_one(name, None, s) for s in range(seeds)] for name in names}
    print(json.dumps({"gmoe": gmoe.__file__, "results": results}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--strategies", nargs="+", default=["random", "kmeans", "short_em"])
    parser.add_argument("--designs", nargs="+", default=list(designs()))
    parser.add_argument("--seeds", type=int, default=10, help="random_state 0..seeds-1")
    parser.add_argument("--pool-seeds", type=int, default=3,
                        help="seeds of the n_init=20 'short_em' pool (best-known L)")
    parser.add_argument("--tolerance", type=float, default=0.01)
    parser.add_argument("--baseline", type=Path, help="a gmoe checkout to time 'today'")
    parser.add_argument("--csv", type=Path, help="also write the per-fit table here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.designs, args.seeds)
        return

    baseline = None
    if args.baseline is not None:
        baseline = run_baseline(args.baseline, args.designs, args.seeds)
        print(f"baseline: {baseline['gmoe']}", flush=True)
    fit_one(args.designs[0], None, 0)  # warm the numba cache
    rows = []
    for name in args.designs:
        fits = {s: [fit_one(name, s, seed) for seed in range(args.seeds)]
                for s in args.strategies}
        fits["default"] = [fit_one(name, None, seed) for seed in range(args.seeds)]
        pool = [fit_one(name, "short_em", 1000 + seed, n_init=20)[0]
                for seed in range(args.pool_seeds)]
        if baseline is not None:
            fits["today"] = [tuple(r) for r in baseline["results"][name]]
        best = max(max(ll for ll, _ in runs) for runs in fits.values())
        best = max(best, *pool)
        for strategy, runs in fits.items():
            lls = np.array([ll for ll, _ in runs])
            secs = np.array([s for _, s in runs])
            reached = lls >= best - args.tolerance
            rows.append(dict(design=name, strategy=strategy, fits=len(runs),
                             reached=int(reached.sum()), share=float(reached.mean()),
                             worst_shortfall=float(best - lls.min()),
                             mean_seconds=float(secs.mean()), best_known=best))
            print(f"{name:16s} {strategy:9s} reached {reached.sum():2d}/{len(runs):2d}  "
                  f"worst shortfall {best - lls.min():9.3f}  mean {secs.mean():7.3f}s",
                  flush=True)
    for group, members in (("trap designs", TRAPS), ("stress designs", STRESS)):
        members = [m for m in members if m in args.designs]
        if not members:
            continue
        print(f"\n{group} ({', '.join(members)})")
        print("strategy   share reaching the best-known L   mean CPU seconds per fit"
              + ("   / today's default" if baseline is not None else ""))
        chosen = [r for r in rows if r["design"] in members]
        for strategy in dict.fromkeys(r["strategy"] for r in chosen):
            mine = [r for r in chosen if r["strategy"] == strategy]
            share = sum(r["reached"] for r in mine) / sum(r["fits"] for r in mine)
            seconds = np.mean([r["mean_seconds"] for r in mine])
            line = f"{strategy:9s}  {share:7.1%}                           {seconds:8.3f}"
            if baseline is not None:
                today = np.mean([r["mean_seconds"] for r in chosen
                                 if r["strategy"] == "today"])
                line += f"                 {seconds / today:6.2f}"
            print(line)
    if baseline is not None:
        print("\nper design, default / today's mean fit time:")
        for name in args.designs:
            by = {r["strategy"]: r["mean_seconds"] for r in rows if r["design"] == name}
            print(f"  {name:16s} {by['default'] / by['today']:6.2f}")
    if args.csv:
        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
