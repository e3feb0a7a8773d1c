"""Overhead of the simulation harness: wall time of a run against the time spent fitting.

Runs the test suite's tiny study (``tests/data/study.toml``: paper 1's softmax truth, one
near-truth start per task) on a grid design, with EM run to 2000 iterations and the sizes,
replications and metrics given on the command line, into a fresh SQLite store for each
worker count, and prints, per run:

* wall: seconds from the first task dispatched to the last row committed (worker start-up,
  pickling, data generation, fits, metrics, SQLite included);
* sum fit: the fits' own seconds (``fit_time_``) summed over the tasks;
* sum task: each task's seconds in its worker (data + fits + metrics) summed;
* overhead = wall x workers / sum fit: 1 means every worker-second went to EM; the excess
  is data generation, metrics and the harness;
* harness = wall x workers / sum task: the harness's own share (process start-up, IPC,
  stores); 1 is perfect.

Usage::

    python benchmarks/bench_harness.py                       # n_jobs 1 and every core
    python benchmarks/bench_harness.py --n-jobs 1 2 4 --reps 8
    python benchmarks/bench_harness.py --sizes 1000 100000 8 --light   # D1 only
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from gmoe.simulation import load_experiment, run_experiment

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _study import DROP, write_study  # noqa: E402  (tests/ is not a package)


def bench(n_jobs, args, workdir):
    start, stop, num = args.sizes
    density = DROP if args.light else True
    path = write_study(
        workdir, f"bench-{n_jobs}.toml", description="harness benchmark", seed=1,
        design="grid", sizes=[{"logspace": [start, stop, num]}], replications=args.reps,
        fit={"max_iter": 2000},
        metrics={"parameter_errors": DROP, "hellinger": density, "total_variation": density,
                 "evaluation": {"kind": "grid", "n": 1000}})
    exp = load_experiment(path)
    started = time.perf_counter()
    summary = run_experiment(exp, Path(workdir) / f"bench-{n_jobs}.sqlite", n_jobs=n_jobs,
                             progress=False)
    total = time.perf_counter() - started
    return summary, total


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jobs", type=int, nargs="+",
                        default=sorted({1, os.cpu_count() or 1}))
    parser.add_argument("--reps", type=int, default=4)
    parser.add_argument("--sizes", type=int, nargs=3, default=[1000, 100000, 6],
                        metavar=("START", "STOP", "NUM"), help="logspace of sample sizes")
    parser.add_argument("--light", action="store_true",
                        help="record D1 only (no Hellinger / TV quadrature)")
    args = parser.parse_args()
    print(f"{args.sizes[2]} sizes from {args.sizes[0]} to {args.sizes[1]} x {args.reps} "
          f"replications; metrics: {'d1' if args.light else 'd1, hellinger, tv'}; "
          f"{os.cpu_count()} cores")
    head = (f"{'n_jobs':>6} {'tasks':>6} {'wall s':>8} {'total s':>8} {'sum fit':>8} "
            f"{'sum task':>9} {'overhead':>9} {'harness':>8}")
    print(head)
    with tempfile.TemporaryDirectory() as workdir:
        for n_jobs in args.n_jobs:
            s, total = bench(n_jobs, args, workdir)
            worker_seconds = s.wall_seconds * s.n_jobs
            print(f"{s.n_jobs:>6} {s.tasks_stored:>6} {s.wall_seconds:>8.2f} {total:>8.2f} "
                  f"{s.fit_seconds:>8.2f} {s.task_seconds:>9.2f} "
                  f"{worker_seconds / s.fit_seconds:>9.2f} "
                  f"{worker_seconds / s.task_seconds:>8.2f}")
    print("overhead = wall x workers / sum fit;  harness = wall x workers / sum task")


if __name__ == "__main__":
    main()
