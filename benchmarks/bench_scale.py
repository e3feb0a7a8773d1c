"""Time per EM iteration and peak memory of one fit against n, k, d and the thread count.

Each measurement runs in a fresh process (so that its peak resident memory is its own):
the process imports gmoe, compiles the kernels on a tiny fit, notes its resident memory
(the baseline), simulates ``n`` rows of a ``k``-expert softmax model on ``d`` features
(in chunks, straight into the final arrays), and fits them from one start (the truth with
a flat gate and shifted experts) with ``max_iter = 1 + iters`` and with ``max_iter = 1``
(``tol = 0``), the fastest of a few repeats each. The EM run itself is timed (the
estimator's ``_em_iterations``, wrapped: the data's preparation and the stopping rule's
final check, the same in both fits, are left out); the difference, divided by ``iters``,
is the time per EM iteration (wall clock and CPU time of the process). The first
iterations after the start are timed: there the gate's Newton step is taken at every n
(near convergence it can stop early, which would flatter large n). The
peak resident memory above the baseline of the first whole fit (the data included) is
compared with ``X + n k 8`` bytes (the design and one (n, k) array of float64); the
repeats come after it, since the allocator can carry one fit's freed arrays into the
next one's peak.

The log-log slope of time per iteration against n (n >= 1e4) is fitted by least squares
per k, d and thread count. With ``--threads 1 2`` the two fits are checked to give
bit-identical parameters and log-likelihoods, and the speed-up is reported.

Usage::

    python benchmarks/bench_scale.py                     # n = 1e4 .. 1e6, k = 4, d = 10
    python benchmarks/bench_scale.py --sizes 1e4 1e5 1e6 1e7 --threads 1 2
    python benchmarks/bench_scale.py --k 2 4 8 --d 1 10 --sizes 1e5
    python benchmarks/bench_scale.py --csv scale.csv

The 1e7 point needs ~1.7 GB and several minutes. The machine's load average is printed
with the table: on a loaded machine times are inflated (CPU time less than wall time) and
thread speed-ups depressed.
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

CHILD_FLAG = "--child"


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes():
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _truth(k, d, seed):
    import gmoe

    # Overlapping experts: EM needs dozens of iterations, as on real data, so the timed
    # ones are all mid-fit.
    rng = np.random.default_rng(seed)
    gate = rng.normal(size=(k, d))
    gate_intercept = rng.normal(size=k)
    gate[-1], gate_intercept[-1] = 0.0, 0.0
    return gmoe.MixingMeasure(gate, gate_intercept, rng.normal(size=(k, d)), rng.normal(size=k),
                              rng.uniform(0.5, 1.0, size=k))


def _simulate(truth, n, seed, chunk=100_000):
    import gmoe

    rng = np.random.default_rng(seed)
    X = np.empty((n, truth.n_features))
    y = np.empty(n)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        X[start:stop] = rng.standard_normal((stop - start, truth.n_features))
        y[start:stop] = gmoe.sample_moe(truth, X[start:stop], random_state=rng)
    return X, y


def _child(n, k, d, threads, iters, seed):
    """One measurement, in this (fresh) process; prints a JSON line."""
    import warnings

    import gmoe

    truth = _truth(k, d, seed)
    # A flat gate and shifted experts: EM is still far from converged after the timed
    # iterations.
    start = truth.replace(gate_coef=np.zeros((k, d)), gate_intercept=np.zeros(k),
                          expert_intercept=truth.expert_intercept + 1.0)

    # Revisions before the n_threads parameter ran on one thread.
    options = {"n_threads": threads} if "n_threads" in gmoe.GaussianMoERegressor().get_params() \
        else {}

    # Time the EM run alone: the fit's preparation and its final stopping-rule check (a
    # Newton decrement with its line search, tol = 0 never meets it) are the same in
    # both fits, but their cost varies with the point and would swamp a few iterations.
    timer = {}
    em_run = gmoe.GaussianMoERegressor._em_iterations

    def timed_em_run(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return em_run(*args, **kwargs)
        finally:
            timer["wall"] = time.perf_counter() - wall
            timer["cpu"] = time.process_time() - cpu

    gmoe.GaussianMoERegressor._em_iterations = timed_em_run

    def fit(X, y, max_iter):
        est = gmoe.GaussianMoERegressor(k, init_params=start, max_iter=max_iter, tol=0.0,
                                        **options)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est.fit(X, y)
        return est, timer["wall"], timer["cpu"]

    fit(*_simulate(truth, 2000, seed), 2)  # compile (or load) the kernels
    baseline = _rss_bytes()
    X, y = _simulate(truth, n, seed)
    # The fastest of a few repeats of each fit (fewer for large n): the machine's load
    # only ever adds time.
    repeats = 5 if n <= 100_000 else 2 if n <= 1_000_000 else 1
    # The peak of one fit, before the repeats: glibc keeps freed blocks of up to 32 MiB
    # (a (4, 1e6) float64 array is 30.5 MiB) in its heaps once one such block has been
    # freed, so later fits in the same process can add the earlier fits' freed arrays to
    # the resident peak (measured: +32 MB per repeat at n = 1e6) that a single fit never
    # holds.
    long = [fit(X, y, 1 + iters)]
    peak = _peak_rss_bytes() - baseline
    long += [fit(X, y, 1 + iters) for _ in range(repeats - 1)]
    short = [fit(X, y, 1) for _ in range(repeats)]
    wall_1, cpu_1 = min(r[1] for r in short), min(r[2] for r in short)
    wall, cpu = min(r[1] for r in long), min(r[2] for r in long)
    est = long[0][0]
    print(json.dumps(dict(
        n=n, k=k, d=d, threads=threads, iters=iters,
        wall_per_iter=(wall - wall_1) / iters, cpu_per_iter=(cpu - cpu_1) / iters,
        peak_mb=peak / 1e6, budget_mb=(X.nbytes + n * k * 8) / 1e6,
        params=est.mixing_measure_.to_vector().tolist(), log_lik=est.lower_bound_ * n)))


def _run(n, k, d, threads, iters, seed):
    out = subprocess.run([sys.executable, __file__, CHILD_FLAG, str(n), str(k), str(d),
                          str(threads), str(iters), str(seed)], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"n={n}, k={k}, d={d}, threads={threads} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _slope(rows, key):
    if len(rows) < 2:
        return float("nan")
    n = np.log([r["n"] for r in rows])
    t = np.log([r[key] for r in rows])
    return float(np.polyfit(n, t, 1)[0])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5, 1e6])
    parser.add_argument("--k", type=int, nargs="+", default=[4])
    parser.add_argument("--d", type=int, nargs="+", default=[10])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--iters", type=int, default=5,
                        help="EM iterations timed (the first ones after the start, where "
                             "every n still takes the gate's Newton step)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--csv", default=None)
    args = parser.parse_args(argv)

    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} on {os.cpu_count()} cores", flush=True)
    header = (f"{'n':>9} {'k':>2} {'d':>3} {'thr':>3} {'wall ms/it':>10} {'cpu ms/it':>10} "
              f"{'peak MB':>8} {'X+nk8 MB':>8} {'ratio':>5}")
    print(header, flush=True)
    results = []
    for k in args.k:
        for d in args.d:
            for n in (int(s) for s in args.sizes):
                iters = args.iters
                for threads in args.threads:
                    r = _run(n, k, d, threads, iters, args.seed)
                    results.append(r)
                    print(f"{n:>9} {k:>2} {d:>3} {threads:>3} {1e3 * r['wall_per_iter']:>10.2f} "
                          f"{1e3 * r['cpu_per_iter']:>10.2f} {r['peak_mb']:>8.1f} "
                          f"{r['budget_mb']:>8.1f} {r['peak_mb'] / r['budget_mb']:>5.2f}",
                          flush=True)
    print()
    for k in args.k:
        for d in args.d:
            for threads in args.threads:
                rows = [r for r in results if (r["k"], r["d"], r["threads"]) == (k, d, threads)
                        and r["n"] >= 10_000]
                print(f"k={k} d={d} threads={threads}: log-log slope of time per iteration "
                      f"against n (n >= 1e4): wall {_slope(rows, 'wall_per_iter'):.3f}, "
                      f"cpu {_slope(rows, 'cpu_per_iter'):.3f}")
    if len(args.threads) > 1:
        one = min(args.threads)
        for r in results:
            if r["threads"] == one:
                continue
            base = next(b for b in results if (b["n"], b["k"], b["d"], b["threads"])
                        == (r["n"], r["k"], r["d"], one))
            same = base["params"] == r["params"] and base["log_lik"] == r["log_lik"]
            print(f"n={r['n']} k={r['k']} d={r['d']}: {one} -> {r['threads']} threads: "
                  f"speed-up {base['wall_per_iter'] / r['wall_per_iter']:.2f}x (wall), "
                  f"parameters bit-identical: {same}")
    print(f"load average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f}")
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            keys = ["n", "k", "d", "threads", "iters", "wall_per_iter", "cpu_per_iter",
                    "peak_mb", "budget_mb", "log_lik"]
            writer.writerow(keys)
            for r in results:
                writer.writerow([r[key] for key in keys])


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == CHILD_FLAG:
        _child(*(int(a) for a in sys.argv[2:7]), int(sys.argv[7]))
    else:
        main()
