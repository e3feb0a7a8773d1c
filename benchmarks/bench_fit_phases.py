"""Where one fit's time goes: preparation and start, E-steps, M-steps, stopping-rule checks.

The fit of ``bench_flexmix.py`` (the flexmix peer model, k = 2, d = 1, one start) at each
``n``, timed by phase: the E-step passes, the M-step passes and the stopping rule's checks
(Newton decrement, searches) inside the EM run, and everything outside it (validation,
conditioning, the start). Each phase's time is the sum of its calls, for the fastest of
``--repeats`` fits, on ``--threads`` threads.

Usage::

    python benchmarks/bench_fit_phases.py                        # n = 1e3, 1e4, 1e5
    python benchmarks/bench_fit_phases.py --sizes 100000 --threads 1 2 --repeats 7
"""

import argparse
import time

from _common import simulate_peer

import gmoe
from gmoe import _em, _passes

PHASES = {"e-steps": (_passes.BlockPasses, "e_step"),
          "m-steps": (_passes.BlockPasses, "m_step"),
          "checks": (_em, "compute_newton_decrement"),
          "em run": (gmoe.GaussianMoERegressor, "_em_iterations")}


def _instrument(spent):
    """Wrap each phase's function so that its calls add their time to ``spent``."""
    for phase, (owner, name) in PHASES.items():
        function = getattr(owner, name)

        def timed(*args, _function=function, _phase=phase, **kwargs):
            started = time.perf_counter()
            try:
                return _function(*args, **kwargs)
            finally:
                spent[_phase] = spent.get(_phase, 0.0) + time.perf_counter() - started

        setattr(owner, name, timed)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    spent = {}
    _instrument(spent)
    print(f"{'n':>8} {'thr':>3} {'fit ms':>8} {'outside EM':>10} {'e-steps':>8} {'m-steps':>8} "
          f"{'checks':>8} {'EM steps':>8}")
    for n in args.sizes:
        X, y = simulate_peer(n, 20240 + n)
        for threads in args.threads:
            gmoe.GaussianMoERegressor(2, n_init=1, random_state=0, n_threads=threads).fit(X, y)
            best = None
            for _ in range(args.repeats):
                spent.clear()
                started = time.perf_counter()
                est = gmoe.GaussianMoERegressor(2, n_init=1, random_state=0,
                                                n_threads=threads).fit(X, y)
                total = time.perf_counter() - started
                if best is None or total < best[0]:
                    best = (total, dict(spent), est.n_iter_)
            total, phases, n_iter = best
            ms = {k: 1e3 * v for k, v in phases.items()}
            print(f"{n:>8} {threads:>3} {1e3 * total:>8.1f} {1e3 * total - ms['em run']:>10.1f} "
                  f"{ms.get('e-steps', 0):>8.1f} {ms.get('m-steps', 0):>8.1f} "
                  f"{ms.get('checks', 0):>8.1f} {n_iter:>8}")


if __name__ == "__main__":
    main()
