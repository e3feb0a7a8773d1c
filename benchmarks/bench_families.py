"""Fit time of every gating family, against the softmax fit of the same data and run.

Data: ``--n`` rows from a 3-expert top-1 truth on one feature (x ~ U(-1, 1) by
``gmoe.make_design``). Each family is fitted from one k-means start with ``random_state=0``
(numba cache warm), ``--repeats`` times; the table gives the best time, the EM iterations,
the time per iteration and the ratio to the softmax fit's time.

With ``--compare-ref REV`` the same fits are timed with gmoe as it was at the git revision
``REV`` too (extracted by ``git archive`` into a temporary directory): each family's fits run
in fresh processes, the reference's and this tree's taking turns ``--repeats`` times, and
the table gives both best times per iteration, the speed-up and whether the two fits agree
(EM iterations and log-likelihood).

Usage::

    python benchmarks/bench_families.py                  # n = 20000, 3 repeats
    python benchmarks/bench_families.py --n 100000 --repeats 1
    python benchmarks/bench_families.py --compare-ref main --families "topk K=2"
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import gmoe

TRUTH = gmoe.MixingMeasure(gate_coef=[[3.0], [-3.0], [0.0]], gate_intercept=[0.5, 0.2, 0.0],
                           expert_coef=[[2.0], [-1.0], [0.5]], expert_intercept=[1.0, -1.0, 0.0],
                           expert_var=[0.1, 0.1, 0.1], gating="topk", top_k=1)

FAMILIES = {
    "softmax": {},
    "temperature": dict(gating="temperature", temperature=0.5),
    "topk K=1": dict(gating="topk", top_k=1),
    "topk K=2": dict(gating="topk", top_k=2),
    "activation tanh": dict(gating="activation", activation="tanh"),
}

REPO = Path(__file__).resolve().parent.parent


def make_data(n):
    """The benchmark's data set of ``n`` rows."""
    X = gmoe.make_design(n, "uniform", random_state=0)
    return X, gmoe.sample_moe(TRUTH, X, random_state=1)


def time_fit(X, y, options, repeats):
    """Best wall time of ``repeats`` fits, and the last fit's iterations, convergence, fit."""
    best = None
    for _ in range(repeats):
        est = gmoe.GaussianMoERegressor(3, n_init=1, random_state=0, **options)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported in the table
            est.fit(X, y)
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    return best, est.n_iter_, est.converged_, est


def run_worker(args):
    """Time the named families with whichever gmoe is importable; print one JSON line each."""
    X, y = make_data(args.n)
    for name in args.families:
        options = FAMILIES[name]
        time_fit(X[:500], y[:500], options, 1)  # compile or load this tree's numba kernels
        seconds, n_iter, converged, est = time_fit(X, y, options, args.repeats)
        print(json.dumps(dict(family=name, seconds=seconds, n_iter=int(n_iter),
                              converged=bool(converged),
                              log_lik=float(est.lower_bound_) * len(y))), flush=True)


def _timed_in(tree, args, name):
    """One fit of one family in a fresh process, with gmoe imported from ``tree``."""
    env = dict(os.environ, PYTHONPATH=str(tree))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", "--n", str(args.n),
           "--repeats", "1", "--families", name]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _best_of_alternating(trees, args, name):
    """Each tree's fastest of ``args.repeats`` fits, the trees taking turns.

    On a shared machine the load drifts: alternating exposes both to it alike.
    """
    best = [None] * len(trees)
    for _ in range(args.repeats):
        for t, tree in enumerate(trees):
            result = _timed_in(tree, args, name)
            if best[t] is None or result["seconds"] < best[t]["seconds"]:
                best[t] = result
    return best


def compare(args):
    """Each family timed with the reference revision's gmoe and with this tree's."""
    with tempfile.TemporaryDirectory(prefix="gmoe-ref-") as ref_tree:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", args.compare_ref, "gmoe"],
                                 check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", ref_tree], input=archive, check=True)
        print(f"n = {args.n}, 3 experts, best of {args.repeats}; reference {args.compare_ref} "
              f"and this tree taking turns; load average {os.getloadavg()[0]:.1f}")
        print(f"{'family':<18} {'iter':>9} {'ref ms/it':>10} {'new ms/it':>10} {'speed-up':>9} "
              f"{'|dL|/|L|':>9}")
        for name in args.families:
            ref, new = _best_of_alternating([ref_tree, REPO], args, name)
            iters = f"{ref['n_iter']}/{new['n_iter']}"
            rel = abs(new["log_lik"] - ref["log_lik"]) / abs(ref["log_lik"])
            print(f"{name:<18} {iters:>9} {1e3 * ref['seconds'] / ref['n_iter']:10.2f} "
                  f"{1e3 * new['seconds'] / new['n_iter']:10.2f} "
                  f"{ref['seconds'] / new['seconds']:9.1f} {rel:9.1e}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="rows (default 20000)")
    parser.add_argument("--repeats", type=int, default=3, help="fits per family (min time)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                        metavar="FAMILY", help=f"among {list(FAMILIES)} (default: all)")
    parser.add_argument("--compare-ref", metavar="REV",
                        help="also time gmoe at this git revision, and give the speed-up")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        return run_worker(args)
    if args.compare_ref:
        return compare(args)

    X, y = make_data(args.n)
    time_fit(X[:500], y[:500], {}, 1)  # warm the numba cache
    print(f"n = {args.n}, 3 experts, best of {args.repeats}")
    print(f"{'family':<18} {'seconds':>8} {'iter':>5} {'ms/iter':>8} {'/softmax':>9} converged")
    reference = None
    for name in args.families:
        seconds, n_iter, converged, _ = time_fit(X, y, FAMILIES[name], args.repeats)
        reference = seconds if reference is None else reference
        print(f"{name:<18} {seconds:8.3f} {n_iter:5d} {1e3 * seconds / n_iter:8.2f} "
              f"{seconds / reference:9.1f} {converged}", flush=True)


if __name__ == "__main__":
    main()
