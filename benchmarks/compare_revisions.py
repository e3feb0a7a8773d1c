"""Run one benchmark script against two revisions of gmoe in the same session, interleaved.

Speed claims here are made as before/after ratios measured in one run: this script checks
out ``--base`` (any git revision) into a temporary worktree, then runs the given benchmark
script alternately with the base's ``gmoe`` and with this checkout's ``gmoe`` on
``PYTHONPATH`` (``--rounds`` times each, so that drifts in machine load hit both), and
prints every run's output under its label. The benchmark script itself is always this
checkout's, so it must use only gmoe's public API.

Usage::

    python benchmarks/compare_revisions.py --base 76c9ad3 -- bench_families.py --repeats 2
    python benchmarks/compare_revisions.py --base main~3 --rounds 2 -- bench_flexmix.py \\
        --sizes 100000 --repeats 3
"""

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def run(script_args, source_root, label):
    env = dict(os.environ, PYTHONPATH=str(source_root))
    # Numba caches beside the sources; each tree keeps its own.
    out = subprocess.run([sys.executable, str(HERE / script_args[0]), *script_args[1:]],
                         env=env, cwd=str(source_root), capture_output=True, text=True)
    print(f"===== {label} =====", flush=True)
    print(out.stdout, end="", flush=True)
    if out.returncode != 0:
        print(out.stderr, file=sys.stderr)
        raise SystemExit(f"{label}: the benchmark failed (exit {out.returncode}).")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--rounds", type=int, default=1, help="base/head alternations")
    parser.add_argument("script", nargs=argparse.REMAINDER,
                        help="-- then the benchmark script (in benchmarks/) and its arguments")
    args = parser.parse_args(argv)
    script = [a for a in args.script if a != "--"]
    if not script:
        parser.error("give the benchmark script after --")
    with tempfile.TemporaryDirectory() as tmp:
        base_tree = Path(tmp) / "base"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q",
                        str(base_tree), args.base], check=True)
        try:
            for r in range(args.rounds):
                run(script, base_tree, f"base {args.base} (round {r + 1})")
                run(script, ROOT, f"head (round {r + 1})")
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(base_tree)], check=False)


if __name__ == "__main__":
    main()
