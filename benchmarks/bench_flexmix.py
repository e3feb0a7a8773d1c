"""gmoe against flexmix on the 2-expert model of peer_flexmix.R, in the same run.

True model (component 1 is flexmix's gate baseline):
    P(z = 2 | x) = logistic(3 x),  x ~ Uniform(-2, 2)
    y | z = 1 ~ N(1 + 2 x, 0.5^2),  y | z = 2 ~ N(-1 - 1.5 x, 0.5^2)

Each size is simulated once; gmoe fits it from one k-means start (numba cache warm) and,
when ``Rscript`` with flexmix is on the PATH, flexmix fits it from its default single
random start (``benchmarks/peer_flexmix_bench.R``). Reported: seconds, iterations, the
log-likelihood of each fit, and the time ratio flexmix / gmoe.

flexmix's own logLik uses its df-corrected sigma; for a like-for-like comparison the
table also gives gmoe's log-likelihood, which is evaluated at the MLE variances.

``--baseline PATH`` also times the gmoe at PATH (another build, e.g. ``git archive <commit>
| tar -x -C PATH``) on the same data, in a subprocess, right after this build at every n,
and reports both builds' ratios to flexmix from the same run. The baseline runs with
``OMP_NUM_THREADS=1`` (its k-means start would otherwise spin OpenMP threads on a busy
machine; this build holds them to one).

Usage::

    python benchmarks/bench_flexmix.py                   # n = 1e3, 1e4, 1e5, 1e6
    python benchmarks/bench_flexmix.py --sizes 1000 100000 --repeats 3 --csv out.csv
    python benchmarks/bench_flexmix.py --max-r-n 100000  # skip flexmix above this n
    python benchmarks/bench_flexmix.py --sizes 100000 --baseline BASE  # BASE: a git archive
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import simulate_peer, write_csv

import gmoe

HERE = Path(__file__).parent
R_SCRIPT = HERE / "peer_flexmix_bench.R"


def time_gmoe(X, y, repeats):
    best = None
    for _ in range(repeats):
        est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0)
        started = time.perf_counter()
        est.fit(X, y)
        seconds = time.perf_counter() - started
        best = seconds if best is None else min(best, seconds)
    return best, est.n_iter_, est.lower_bound_ * len(y)


def time_baseline(path, n, repeats):
    """Seconds, iterations and log-likelihood of the gmoe at ``path`` (a subprocess)."""
    env = dict(os.environ, PYTHONPATH=str(path), OMP_NUM_THREADS="1")
    cmd = [sys.executable, __file__, "--worker", "--sizes", str(n), "--repeats", str(repeats)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def worker(sizes, repeats):
    X, y = simulate_peer(2000, 0)
    gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)  # warm the numba cache
    for n in sizes:
        X, y = simulate_peer(n, 20240 + n)
        print(json.dumps(list(time_gmoe(X, y, repeats))))


def have_flexmix():
    if shutil.which("Rscript") is None:
        return False
    probe = subprocess.run(["Rscript", "-e", "library(flexmix)"], capture_output=True)
    return probe.returncode == 0


def time_flexmix(X, y, workdir):
    data = Path(workdir) / "data.csv"
    out = Path(workdir) / "out.csv"
    np.savetxt(data, np.column_stack([X, y]), delimiter=",", header="x1,y", comments="",
               fmt="%.17g")
    subprocess.run(["Rscript", str(R_SCRIPT), str(data), str(out), "2"], check=True,
                   capture_output=True)
    fields = out.read_text().strip().split(",")
    seconds, loglik, iters = float(fields[3]), fields[4], fields[5]
    return seconds, (int(iters) if iters != "NA" else None), (
        float(loglik) if loglik != "NA" else float("nan"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000, 1000000])
    parser.add_argument("--repeats", type=int, default=3, help="gmoe fits per size (min time)")
    parser.add_argument("--max-r-n", type=int, default=1000000,
                        help="largest n fitted with flexmix")
    parser.add_argument("--csv", type=Path, help="also write the table here")
    parser.add_argument("--baseline", type=Path, help="a gmoe checkout to time as well")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(args.sizes, args.repeats)
        return

    X, y = simulate_peer(2000, 0)
    gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y)  # warm the numba cache
    use_r = have_flexmix()
    if not use_r:
        print("Rscript with flexmix not found: timing gmoe only "
              "(apt-get install -y r-base-core r-cran-flexmix).", file=sys.stderr)
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for n in args.sizes:
            X, y = simulate_peer(n, 20240 + n)
            ours, our_iter, our_ll = time_gmoe(X, y, args.repeats)
            row = dict(n=n, gmoe_seconds=ours, gmoe_iter=our_iter, gmoe_loglik=our_ll,
                       flexmix_seconds=float("nan"), flexmix_iter=None,
                       flexmix_loglik=float("nan"), ratio=float("nan"))
            if args.baseline is not None:
                base, base_iter, base_ll = time_baseline(args.baseline, n, args.repeats)
                row.update(baseline_seconds=base, baseline_iter=base_iter,
                           baseline_loglik=base_ll, baseline_ratio=float("nan"))
            if use_r and n <= args.max_r_n:
                theirs, their_iter, their_ll = time_flexmix(X, y, workdir)
                row.update(flexmix_seconds=theirs, flexmix_iter=their_iter,
                           flexmix_loglik=their_ll, ratio=theirs / ours)
                if args.baseline is not None:
                    row["baseline_ratio"] = theirs / base
            rows.append(row)
            print(f"n={n:>8d}  gmoe {ours:8.3f}s ({our_iter:3d} it, logLik {our_ll:.3f})  "
                  f"flexmix {row['flexmix_seconds']:8.3f}s ({row['flexmix_iter']} it, "
                  f"logLik {row['flexmix_loglik']:.3f})  flexmix/gmoe = {row['ratio']:.1f}",
                  flush=True)
            if args.baseline is not None:
                print(f"{'':10s}baseline {base:8.3f}s ({base_iter:3d} it, logLik {base_ll:.3f})"
                      f"  flexmix/baseline = {row['baseline_ratio']:.1f}", flush=True)
    if args.csv:
        write_csv(args.csv, rows)


if __name__ == "__main__":
    main()
