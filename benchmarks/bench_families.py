"""Fit time of every gating family, against the softmax fit of the same data and run.

Data: ``--n`` rows from a 3-expert top-1 truth on one feature (x ~ U(-1, 1) by
``gmoe.make_design``). Each family is fitted from one k-means start with ``random_state=0``
(numba cache warm), ``--repeats`` times; the table gives the best time, the EM iterations,
the time per iteration and the ratio to the softmax fit's time.

Usage::

    python benchmarks/bench_families.py                  # n = 20000, 3 repeats
    python benchmarks/bench_families.py --n 100000 --repeats 1
"""

import argparse
import time
import warnings

import gmoe

TRUTH = gmoe.MixingMeasure(gate_coef=[[3.0], [-3.0], [0.0]], gate_intercept=[0.5, 0.2, 0.0],
                           expert_coef=[[2.0], [-1.0], [0.5]], expert_intercept=[1.0, -1.0, 0.0],
                           expert_var=[0.1, 0.1, 0.1], gating="topk", top_k=1)

FAMILIES = [
    ("softmax", {}),
    ("temperature", dict(gating="temperature", temperature=0.5)),
    ("topk K=1", dict(gating="topk", top_k=1)),
    ("topk K=2", dict(gating="topk", top_k=2)),
    ("activation tanh", dict(gating="activation", activation="tanh")),
]


def time_fit(X, y, options, repeats):
    """Best wall time of ``repeats`` fits, and the last fit's iteration count."""
    best = None
    for _ in range(repeats):
        est = gmoe.GaussianMoERegressor(3, n_init=1, random_state=0, **options)
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # non-convergence is reported in the table
            est.fit(X, y)
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    return best, est.n_iter_, est.converged_


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20_000, help="rows (default 20000)")
    parser.add_argument("--repeats", type=int, default=3, help="fits per family (min time)")
    args = parser.parse_args(argv)

    X = gmoe.make_design(args.n, "uniform", random_state=0)
    y = gmoe.sample_moe(TRUTH, X, random_state=1)
    time_fit(X[:500], y[:500], {}, 1)  # warm the numba cache
    print(f"n = {args.n}, 3 experts, best of {args.repeats}")
    print(f"{'family':<18} {'seconds':>8} {'iter':>5} {'ms/iter':>8} {'/softmax':>9} converged")
    reference = None
    for name, options in FAMILIES:
        seconds, n_iter, converged = time_fit(X, y, options, args.repeats)
        reference = seconds if reference is None else reference
        print(f"{name:<18} {seconds:8.3f} {n_iter:5d} {1e3 * seconds / n_iter:8.2f} "
              f"{seconds / reference:9.1f} {converged}", flush=True)


if __name__ == "__main__":
    main()
