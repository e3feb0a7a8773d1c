"""Cold start: a new process imports gmoe and fits 2 experts on 1e4 rows.

Two cases, each in fresh processes:

* first ever: numba's on-disk cache is empty (``NUMBA_CACHE_DIR`` points to a new
  directory), so every kernel the fit calls is compiled;
* cached: the same directory, now filled by the first run, so the kernels are loaded.

Each process reports the time to ``import gmoe``, the time of the fit (``random_state=0``,
``n_init`` starts), the time of the same fit run again in the same process (its difference
from the first is the cold part: kernels loaded or compiled, first calls into
scikit-learn), the kernels compiled or loaded, and checks that importing gmoe compiled
nothing (every kernel is compiled on its first call, and only then). The wall time of the
process up to the end of the first fit (from the parent's launch: interpreter start
included, its shutdown not) is the cold start. Medians over ``--repeats`` processes per
case.

Usage::

    python benchmarks/bench_cold_start.py
    python benchmarks/bench_cold_start.py --repeats 5 --n 10000 --n-init 1
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, os, time
started = time.perf_counter()
import gmoe
imported = time.perf_counter()
from gmoe import _kernels
kernels = [getattr(_kernels, name) for name in _kernels.__all__]
compiled_at_import = sum(len(k.signatures) for k in kernels)
import numpy as np
truth = gmoe.MixingMeasure([[4.0], [0.0]], [-2.0, 0.0], [[-2.0], [2.0]], [1.0, -1.0],
                           [0.05, 0.05])
X = gmoe.make_design({n}, "uniform", random_state=0)
y = gmoe.sample_moe(truth, X, random_state=1)
before_fit = time.perf_counter()
est = gmoe.GaussianMoERegressor(2, n_init={n_init}, random_state=0).fit(X, y)
done = time.perf_counter()
# Wall clock from the parent's launch of this process to the end of the fit: interpreter
# start included, its shutdown (after the second fit) not.
since_launch = time.time() - float(os.environ["GMOE_BENCH_LAUNCHED"])
# The same fit again in this process: what the first one spent beyond it is the cold part
# (loading or compiling kernels, first calls into scikit-learn and threadpoolctl).
again = time.perf_counter()
gmoe.GaussianMoERegressor(2, n_init={n_init}, random_state=0).fit(X, y)
warm = time.perf_counter() - again
print(json.dumps(dict(import_s=imported - started, fit_s=done - before_fit, warm_fit_s=warm,
                      in_process_s=done - started, process_s=since_launch,
                      compiled_at_import=compiled_at_import,
                      kernels_used=sum(len(k.signatures) for k in kernels),
                      n_iter=int(est.n_iter_), converged=bool(est.converged_))))
"""


def run_once(cache_dir, n, n_init):
    code = CHILD.replace("{n}", str(n)).replace("{n_init}", str(n_init))
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, GMOE_BENCH_LAUNCHED=repr(time.time()))
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], env=env,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--n-init", type=int, default=5, help="starts of the fit (default 5, "
                        "the estimator's default)")
    args = parser.parse_args(argv)
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} cores")
    cases = {"first ever": [], "cached": []}
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="gmoe-numba-cache-") as cache_dir:
            cases["first ever"].append(run_once(cache_dir, args.n, args.n_init))
            cases["cached"].append(run_once(cache_dir, args.n, args.n_init))
    print(f"fit: 2 experts, n = {args.n}, n_init = {args.n_init}, "
          f"{cases['cached'][0]['n_iter']} EM iterations in the best start")
    print(f"{'case':<11} {'process s':>9} {'import s':>9} {'fit s':>7} {'warm fit s':>10} "
          f"{'cold part s':>11} {'kernels':>8} {'compiled at import':>19}")
    for case, runs in cases.items():
        median = {key: float(np.median([r[key] for r in runs]))
                  for key in ("process_s", "import_s", "fit_s", "warm_fit_s")}
        cold = float(np.median([r["fit_s"] - r["warm_fit_s"] for r in runs]))
        print(f"{case:<11} {median['process_s']:>9.2f} {median['import_s']:>9.2f} "
              f"{median['fit_s']:>7.2f} {median['warm_fit_s']:>10.2f} {cold:>11.2f} "
              f"{runs[0]['kernels_used']:>8} {max(r['compiled_at_import'] for r in runs):>19}")
    load = os.getloadavg()
    print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")


if __name__ == "__main__":
    main()
