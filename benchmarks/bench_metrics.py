"""Time gmoe's metrics against their previous implementations, in the same run.

Old and new compute the same quantities on the same fits:

* Hellinger and total variation on an evaluation design of ``--n-eval`` rows: the compiled
  kernels of ``gmoe.metrics`` against the previous numpy quadrature, kept as the tests'
  oracle (``tests/_metrics_oracle.py``: Gauss-Legendre panels every standard deviation of
  every component, bisection for the TV crossings);
* the Voronoi loss (D1 for an exact fit, D2 for an over-specified one) and
  ``parameter_errors`` (which aligns the fit by the D1-form infimum): gmoe's exact
  one-feature search over the slope translation against the previous search (every
  candidate shift, then Nelder-Mead from the best two), substituted for the package's
  search in the same process.

Scenarios (one feature, the simulation studies' setting): the rate studies' two-expert
softmax truth fitted by EM from the truth on ``--n`` samples (exact-specified, k = 2) and
from a near-truth three-expert start (over-specified, k = 3); a top-2 truth of three
experts and a temperature truth, each against a near-truth start (no EM: only the metrics
are timed). Each timing is the minimum (or median) of ``--repeats`` calls, old and new
interleaved, so that load from other jobs hits both alike; ratios above 1 mean gmoe is
faster. The last columns give the largest differences between old and new values.

Usage::

    python benchmarks/bench_metrics.py                 # n = n_eval = 1e4, 5 repeats
    python benchmarks/bench_metrics.py --n-eval 1000 --repeats 3
"""

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np

import gmoe
import gmoe.metrics._translation as translation
from gmoe import GaussianMoERegressor, MixingMeasure, make_design, sample_moe
from gmoe.metrics import hellinger, parameter_errors, total_variation, voronoi_loss
from gmoe.simulation.start import make_near_truth_start

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _metrics_oracle as oracle  # noqa: E402  (tests/ is not a package)


def col(values):
    return np.asarray(values, dtype=float)[:, None]


def softmax_truth():
    return MixingMeasure(col([25.0, 0.0]), [-8.0, 0.0], col([-20.0, 20.0]), [15.0, -5.0],
                         [0.09, 0.16])


def scenarios(n, seed):
    """``(name, fit, truth)`` of every scenario."""
    truth = softmax_truth()
    X = make_design(n, "uniform", random_state=seed)
    y = sample_moe(truth, X, random_state=seed + 1)
    exact = GaussianMoERegressor(2, init_params=truth, n_init=1, random_state=seed).fit(X, y)
    yield "softmax, exact (EM fit, k=2)", exact.mixing_measure_, truth
    start = make_near_truth_start(truth, 3, n, random_state=seed)
    over = GaussianMoERegressor(3, init_params=start, n_init=1, random_state=seed).fit(X, y)
    yield "softmax, over (EM fit, k=3)", over.mixing_measure_, truth
    top2 = MixingMeasure(col([2.0, -1.0, 0.0]), [0.5, -0.5, 0.0], col([1.0, -1.0, 0.0]),
                         [0.0, 2.0, -2.0], [1.0, 0.5, 0.25], gating="topk", top_k=2)
    yield "top-2 truth, k=3 start", make_near_truth_start(top2, 3, n, random_state=seed), top2
    temperature = MixingMeasure(col([6.25, 0.0]), [-2.0, 0.0], col([-20.0, 20.0]),
                                [15.0, -5.0], [0.09, 0.16], gating="temperature",
                                temperature=0.25)
    yield ("temperature, k=3 start", make_near_truth_start(temperature, 3, n, random_state=seed),
           temperature)


def with_previous_search(fn):
    """``fn`` run with the previous translation search in place of the package's."""
    def run():
        current = translation._search_t1
        translation._search_t1 = oracle.previous_search
        try:
            return fn()
        finally:
            translation._search_t1 = current
    return run


def time_pair(old, new, repeats, stat):
    """Seconds per call of ``old`` and ``new`` (interleaved), and their last values."""
    old_value, new_value = old(), new()          # warm-up: JIT cache, page faults
    samples = {"old": [], "new": []}
    for _ in range(repeats):
        for name, fn in (("old", old), ("new", new)):
            start = time.perf_counter()
            fn()
            samples[name].append(time.perf_counter() - start)
    pick = min if stat == "min" else statistics.median
    return pick(samples["old"]), pick(samples["new"]), old_value, new_value


def difference(old, new):
    """Largest absolute difference of two values or two ParameterErrors."""
    if isinstance(old, float):
        return abs(old - new)
    fields = ("weight", "gate_coef", "gate_intercept", "expert_coef", "expert_intercept",
              "expert_var")
    gaps = [np.nanmax(np.abs(getattr(old, f) - getattr(new, f)), initial=0.0) for f in fields]
    return float(max(gaps))


def run(args):
    X_eval = make_design(args.n_eval, "uniform", random_state=args.seed + 1)
    rows = []
    for name, fit, truth in scenarios(args.n, args.seed):
        over = fit.n_experts > truth.n_experts
        calls = {
            "hellinger": (lambda f=fit, t=truth: oracle.hellinger(f, t, X_eval),
                          lambda f=fit, t=truth: hellinger(f, t, X_eval)),
            "total_variation": (lambda f=fit, t=truth: oracle.total_variation(f, t, X_eval),
                                lambda f=fit, t=truth: total_variation(f, t, X_eval)),
            "D2" if over else "D1": (
                with_previous_search(lambda f=fit, t=truth: voronoi_loss(f, t)),
                lambda f=fit, t=truth: voronoi_loss(f, t)),
            "parameter_errors": (
                with_previous_search(lambda f=fit, t=truth: parameter_errors(f, t)),
                lambda f=fit, t=truth: parameter_errors(f, t)),
        }
        for metric, (old, new) in calls.items():
            old_s, new_s, old_v, new_v = time_pair(old, new, args.repeats, args.stat)
            row = dict(scenario=name, metric=metric, old_ms=1e3 * old_s, new_ms=1e3 * new_s,
                       ratio=old_s / new_s, max_diff=difference(old_v, new_v))
            rows.append(row)
            print(f"{name:<30} {metric:<17} {row['old_ms']:>10.2f} {row['new_ms']:>9.3f} "
                  f"{row['ratio']:>8.1f} {row['max_diff']:>10.1e}", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="EM sample size (default 1e4)")
    parser.add_argument("--n-eval", type=int, default=10_000,
                        help="rows of the evaluation design (default 1e4)")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls (default 5)")
    parser.add_argument("--stat", choices=["min", "median"], default="min",
                        help="statistic over the repeats (default min: robust on a shared "
                             "machine)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"gmoe {gmoe.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"n = {args.n}, n_eval = {args.n_eval}; {args.stat} of {args.repeats} repeats, "
          "old and new interleaved; ratio = old / new")
    header = (f"{'scenario':<30} {'metric':<17} {'old ms':>10} {'new ms':>9} {'ratio':>8} "
              f"{'max |diff|':>10}")
    print(header)
    print("-" * len(header))
    rows = run(args)
    for metric in ("hellinger", "total_variation", "D1", "D2", "parameter_errors"):
        ratios = [r["ratio"] for r in rows if r["metric"] == metric]
        if ratios:
            print(f"{metric}: ratio {min(ratios):.1f} to {max(ratios):.1f}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (well above 0 on "
          f"{os.cpu_count()} CPUs means other jobs competed for the cores)")


if __name__ == "__main__":
    main()
