"""Time gmoe's E-step against the numpy/scipy reference of the tests.

Both compute the same thing from the same ``log_gate``: responsibilities (n, k) and the
per-row log-likelihood (n,). The gmoe side is ``gmoe.compute_e_step`` (warm JIT cache,
outputs allocated inside): expert means by one BLAS product, serial numba kernels on
expert-major arrays around numpy's vectorised ``exp`` and ``log1p``, and the transposes of
its public (n, k) interface (EM itself keeps the expert-major layout and skips them). The
reference is ``tests/_reference.py::e_step`` (``scipy.stats.norm.logpdf`` +
``scipy.special.logsumexp`` over a BLAS matmul). A third column times a lean hand-written
numpy version (no scipy argument handling), the fastest plain-numpy E-step we know of, for
context. BLAS is held to ``--blas-threads`` threads on every side.

Usage::

    python benchmarks/bench_estep.py             # full grid: n 1e4..1e6, k 2/4/8, d 1/10
    python benchmarks/bench_estep.py --quick     # small grid, a few seconds
    python benchmarks/bench_estep.py --csv out.csv
    python benchmarks/bench_estep.py --n 1e6 --k 8 --d 10 --blas-threads 2
"""

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numba
import numpy as np
from scipy.special import log_softmax
from threadpoolctl import threadpool_limits

import gmoe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import _reference as ref  # noqa: E402  (tests/ is not a package)

FULL_GRID = dict(n=[10_000, 100_000, 1_000_000], k=[2, 4, 8], d=[1, 10])
QUICK_GRID = dict(n=[1_000, 10_000], k=[2, 8], d=[1, 10])
_LOG_2PI = np.log(2 * np.pi)


def lean_numpy_e_step(X, y, log_gate, expert_coef, expert_intercept, expert_var):
    """Plain-numpy E-step with in-place operations (max-shifted log-sum-exp)."""
    joint = X @ expert_coef.T
    joint += expert_intercept
    np.subtract(y[:, None], joint, out=joint)
    joint *= joint
    joint *= -0.5 / expert_var
    joint += log_gate - 0.5 * (_LOG_2PI + np.log(expert_var))
    row_max = joint.max(axis=1, keepdims=True)
    joint -= row_max
    np.exp(joint, out=joint)
    total = joint.sum(axis=1, keepdims=True)
    joint /= total
    return joint, (row_max + np.log(total))[:, 0]


def make_inputs(n, k, d, rng):
    """Random E-step inputs: a softmax log-gate, experts, y drawn from the mixture."""
    X = rng.standard_normal((n, d))
    log_gate = log_softmax(2.0 * rng.standard_normal((n, k)), axis=1)
    coef = rng.standard_normal((k, d))
    intercept = 3.0 * rng.standard_normal(k)
    var = np.exp(rng.uniform(-2.0, 1.0, k))
    labels = rng.integers(0, k, n)
    y = (X @ coef.T + intercept)[np.arange(n), labels] + np.sqrt(var[labels]) * (
        rng.standard_normal(n))
    return X, y, log_gate, coef, intercept, var


def time_call(fn, repeats, min_time=0.05, stat="median"):
    """Seconds per call: the median (or min) of ``repeats`` measurements of >= ``min_time``."""
    fn()  # warm-up (JIT cache load, page faults)
    start = time.perf_counter()
    fn()
    once = time.perf_counter() - start
    loops = max(1, int(np.ceil(min_time / max(once, 1e-9))))
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples) if stat == "median" else min(samples)


def run(grid, repeats, seed, stat="median"):
    """Time every grid point; returns a list of row dicts."""
    rng = np.random.default_rng(seed)
    # Warm the JIT cache (compile or load) before any timing.
    gmoe.compute_e_step(*make_inputs(10, 2, 1, rng))
    rows = []
    for n in grid["n"]:
        for k in grid["k"]:
            for d in grid["d"]:
                args = make_inputs(n, k, d, rng)
                resp, log_lik = gmoe.compute_e_step(*args)
                ref_resp, ref_log_lik = ref.e_step(*args)
                max_err = max(np.max(np.abs(resp - ref_resp)),
                              np.max(np.abs(log_lik - ref_log_lik) / (1 + np.abs(ref_log_lik))))
                row = dict(n=n, k=k, d=d,
                           reference_ms=1e3 * time_call(lambda a=args: ref.e_step(*a),
                                                        repeats, stat=stat),
                           lean_numpy_ms=1e3 * time_call(
                               lambda a=args: lean_numpy_e_step(*a), repeats, stat=stat),
                           gmoe_ms=1e3 * time_call(lambda a=args: gmoe.compute_e_step(*a),
                                                   repeats, stat=stat),
                           max_rel_diff=max_err)
                row["ref/gmoe"] = row["reference_ms"] / row["gmoe_ms"]
                row["lean/gmoe"] = row["lean_numpy_ms"] / row["gmoe_ms"]
                rows.append(row)
                print(_format_row(row), flush=True)
    return rows


_COLUMNS = [("n", "       n", "d"), ("k", " k", "d"), ("d", " d", "d"),
            ("reference_ms", "  ref ms", ".3f"), ("lean_numpy_ms", " lean ms", ".3f"),
            ("gmoe_ms", " gmoe ms", ".3f"), ("ref/gmoe", "ref/gmoe", ".1f"),
            ("lean/gmoe", "lean/gmoe", ".1f")]


def _header():
    return " | ".join(title for _, title, _ in _COLUMNS)


def _format_row(row):
    return " | ".join(f"{row[key]:>{len(title)}{spec}}" for key, title, spec in _COLUMNS)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid (a few seconds)")
    parser.add_argument("--csv", metavar="PATH", help="also write the table as CSV")
    parser.add_argument("--repeats", type=int, default=7,
                        help="timed repeats per cell (default 7)")
    parser.add_argument("--stat", choices=["median", "min"], default="median",
                        help="statistic over the repeats (default median; min is more robust "
                             "on a machine shared with other jobs)")
    parser.add_argument("--blas-threads", type=int, default=1,
                        help="BLAS threads of every side (default 1, as in gmoe's EM)")
    parser.add_argument("--seed", type=int, default=0)
    for axis in ("n", "k", "d"):
        parser.add_argument(f"--{axis}", metavar="LIST",
                            help=f"comma-separated values of {axis}, replacing the grid's")
    args = parser.parse_args(argv)

    if args.blas_threads < 1:
        parser.error(f"--blas-threads must be >= 1, got {args.blas_threads}")
    grid = dict(QUICK_GRID if args.quick else FULL_GRID)
    for axis in ("n", "k", "d"):
        if getattr(args, axis):
            grid[axis] = [int(float(v)) for v in getattr(args, axis).split(",")]
    print(f"gmoe {gmoe.__version__}, numba {numba.__version__}, numpy {np.__version__}, "
          f"python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"BLAS threads {args.blas_threads}, load average {os.getloadavg()[0]:.2f}")
    print(f"{args.stat} of {args.repeats} repeats; times per call in ms; ratios > 1: gmoe "
          "faster")
    header = _header()
    print(header)
    print("-" * len(header))
    with threadpool_limits(limits=args.blas_threads, user_api="blas"):
        rows = run(grid, args.repeats, args.seed, args.stat)
    worst = max(row["max_rel_diff"] for row in rows)
    print(f"max |gmoe - reference| (resp abs, log_lik rel) over the grid: {worst:.2e}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (well above 0 on {os.cpu_count()} "
          "CPUs means other jobs competed for the cores)")
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.csv}")


if __name__ == "__main__":
    main()
