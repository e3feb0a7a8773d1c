"""The stopping rule's certificate against the EM steps it certifies, in the same run.

The stopping rule (the Newton decrement of the log-likelihood, see the estimation page of
the user guide) evaluates the observed score and information once or twice per fit. This
script fits the 2-expert model of ``bench_flexmix.py`` (one start, default settings) at
each ``--sizes`` and times, each the minimum of ``--repeats`` interleaved calls:

* ``fit``: the whole fit from one start;
* ``certificate``: one evaluation of the decrement at the fitted maximum (the private
  ``gmoe._stopping.compute_newton_decrement``), on the rows as the estimator hands them to
  it: a ``gmoe._blocks.RowBlocks`` (block by block, on the default threads) where the
  build has one, else the arrays;

and prints the certificate's share of the fit (a build without the stopping rule gets
the fit only). With ``--gating topk`` the model is instead the top-2-of-3 truth of the
``topk-exact`` study on its grid design, fitted from the truth, and the certificate is
the top-K rule's (held-selection derivatives and searches, on arrays). Run it against
another revision with ``compare_revisions.py`` for a before/after ratio in one session::

    python benchmarks/bench_certificate.py --sizes 10000 100000 --repeats 7
    python benchmarks/bench_certificate.py --gating topk --sizes 1000 5000 20000 100000
    python benchmarks/compare_revisions.py --base HEAD~1 -- bench_certificate.py
"""

import argparse
import time
from pathlib import Path

import numpy as np
from _common import simulate_peer

import gmoe

ROOT = Path(__file__).resolve().parent.parent

try:
    import gmoe._stopping as _stopping
    # Builds older than the stopping rule have no such module (an editable install's
    # import hook may then find another tree's: that one does not count).
    if Path(_stopping.__file__).parent != Path(gmoe.__file__).parent:
        raise ImportError
    compute_newton_decrement = _stopping.compute_newton_decrement
except ImportError:
    compute_newton_decrement = None
try:
    from gmoe._blocks import RowBlocks, resolve_n_threads
except ImportError:  # builds before the blocked passes
    RowBlocks = None


def _fitted(gating, n):
    """A fitted estimator and its data: the flexmix peer model, or topk-exact's truth."""
    if gating == "softmax":
        X, y = simulate_peer(n, 0)
        return gmoe.GaussianMoERegressor(2, n_init=1, random_state=0).fit(X, y), X, y
    from gmoe.simulation import load_experiment

    truth = load_experiment(ROOT / "simulations" / "topk-exact.toml").truth
    X = gmoe.make_design(n, "grid")
    y = gmoe.sample_moe(truth, X, random_state=0)
    est = gmoe.GaussianMoERegressor(truth.n_experts, gating="topk", top_k=truth.top_k,
                                    init_params=truth, n_init=1, random_state=0)
    return est.fit(X, y), X, y


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=float, nargs="+", default=[1e4, 1e5])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--gating", choices=["softmax", "topk"], default="softmax")
    args = parser.parse_args(argv)
    print(f"gmoe {gmoe.__version__}; {args.gating}; min of {args.repeats} repeats")
    print(f"{'n':>8} {'fit s':>9} {'EM steps':>9} {'certificate s':>14} {'share':>7}")
    for n in (int(s) for s in args.sizes):
        est, X, y = _fitted(args.gating, n)  # the first fit is the warm-up
        weights = np.ones(n)
        rows = (X, y, weights)
        if (args.gating == "softmax" and RowBlocks is not None
                and compute_newton_decrement is not None):
            # The fitted measure is in X's units: the blocks are read unconditioned.
            rows = (RowBlocks(np.ascontiguousarray(X), y, weights, 2, resolve_n_threads(None)),
                    None, None)
        fit_times, cert_times = [], []
        for _ in range(args.repeats):
            started = time.perf_counter()
            est.fit(X, y)
            fit_times.append(time.perf_counter() - started)
            if compute_newton_decrement is None:
                continue
            started = time.perf_counter()
            compute_newton_decrement(est.mixing_measure_, *rows, tol=est.tol)
            cert_times.append(time.perf_counter() - started)
        fit = min(fit_times)
        if not cert_times:
            print(f"{n:>8} {fit:>9.4f} {est.n_iter_:>9} {'-':>14} {'-':>7}")
            continue
        cert = min(cert_times)
        print(f"{n:>8} {fit:>9.4f} {est.n_iter_:>9} {cert:>14.4f} {cert / fit:>7.1%}")


if __name__ == "__main__":
    main()
