"""The activation gate's data-driven starts on designs near and far from 0.

The activation gate ``(sigma(beta1^T x) + beta0) / tau`` has no intercept inside
``sigma``, and its design is scaled but not centred: on ``x`` far from 0 the start mapped
from a softmax fit can put every row in the activation's flat tails, a constant gate from
which EM collapses an expert. Each design here is simulated from a softmax-gated truth
with three experts (the gate's switches inside the design's range), once per seed, and
fitted by the activation gate (tanh, sigmoid, gelu; ``tau`` learned and held) at default
settings with ``n_init`` starts, and by the softmax gate on the same data.

With ``tau`` learned, the activation gate's logits tend to linear ones as ``tau -> 0``
with ``(beta1, beta0)`` scaled alike: its maximum is at least the softmax fit's. The
table gives, per design, the fits whose mean log-likelihood is more than 1e-3 below
the softmax fit's (``short``; learned ``tau`` only), the fits with a collapsed expert,
the fits not converged within ``max_iter`` and the mean gap to the softmax fit.

``--baseline PATH`` runs the same fits with another gmoe checkout at PATH (``git archive
<commit> gmoe | tar -x -C PATH``) in a subprocess of this run and prints its table
beside; the designs and seeds are the same.

Usage::

    python benchmarks/bench_activation_starts.py                  # 2 seeds per case
    python benchmarks/bench_activation_starts.py --seeds 3 --baseline BASE
"""

import argparse
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np

DESIGNS = {
    "normal": lambda rng, n, d: rng.normal(0.0, 1.0, (n, d)),
    "[0, 1]": lambda rng, n, d: rng.uniform(0.0, 1.0, (n, d)),
    "[5, 6]": lambda rng, n, d: rng.uniform(5.0, 6.0, (n, d)),
    "[-40, -39]": lambda rng, n, d: rng.uniform(-40.0, -39.0, (n, d)),
}
ACTIVATIONS = ("tanh", "sigmoid", "gelu")


def simulate(design, n_features, seed, n=1000):
    """``(X, y)``: three linear experts under a softmax gate of the standardised ``x``."""
    rng = np.random.default_rng([seed, n_features, list(DESIGNS).index(design)])
    X = DESIGNS[design](rng, n, n_features)
    Z = (X - X.mean(axis=0)) / X.std(axis=0)
    logits = Z @ rng.normal(0.0, 3.0, (3, n_features)).T + rng.normal(0.0, 1.0, 3)
    gate = np.exp(logits - logits.max(axis=1, keepdims=True))
    gate /= gate.sum(axis=1, keepdims=True)
    labels = (gate.cumsum(axis=1) > rng.random(n)[:, None]).argmax(axis=1)
    slopes = rng.normal(0.0, 2.0, (3, n_features))
    y = np.sum(Z * slopes[labels], axis=1) + np.array([-3.0, 0.0, 3.0])[labels]
    return X, y + rng.normal(0.0, 0.4, n)


def run_cases(seeds, n_init):
    """One record per case: the fits' mean log-likelihoods, collapse and convergence."""
    import gmoe

    records = []
    for design in DESIGNS:
        for n_features in (1, 2):
            for seed in range(seeds):
                X, y = simulate(design, n_features, seed)
                softmax = gmoe.GaussianMoERegressor(3, n_init=n_init, random_state=0).fit(X, y)
                for activation in ACTIVATIONS:
                    for learn in (True, False):
                        with warnings.catch_warnings(record=True) as caught:
                            warnings.simplefilter("always")
                            est = gmoe.GaussianMoERegressor(
                                3, gating="activation", activation=activation,
                                learn_temperature=learn, n_init=n_init,
                                random_state=0).fit(X, y)
                        records.append({
                            "design": design, "learn": learn,
                            "gap": est.lower_bound_ - softmax.lower_bound_,
                            "collapsed": any("collapsed" in str(w.message) for w in caught),
                            "converged": bool(est.converged_)})
    return records


def table(records):
    """Per design and ``tau``: short of the softmax fit, collapsed, not converged, mean gap."""
    lines = [f"{'design':<11}{'tau':<8}{'fits':>5}{'short':>7}{'collapsed':>10}"
             f"{'not conv.':>10}{'mean gap':>10}"]
    for design in DESIGNS:
        for learn in (True, False):
            rows = [r for r in records if r["design"] == design and r["learn"] == learn]
            short = sum(r["gap"] < -1e-3 for r in rows) if learn else "-"
            lines.append(
                f"{design:<11}{'learned' if learn else 'held':<8}{len(rows):>5}{short:>7}"
                f"{sum(r['collapsed'] for r in rows):>10}"
                f"{sum(not r['converged'] for r in rows):>10}"
                f"{np.mean([r['gap'] for r in rows]):>10.3f}")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--n-init", type=int, default=2)
    parser.add_argument("--baseline", type=Path, metavar="PATH",
                        help="a gmoe checkout to run the same fits with, for comparison")
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.json:  # the baseline's subprocess: records only
        print(json.dumps(run_cases(args.seeds, args.n_init)))
        return
    print("gap: mean log-likelihood of the activation fit minus the softmax fit's (per row)")
    print("\nthis build")
    print(table(run_cases(args.seeds, args.n_init)))
    if args.baseline is not None:
        env = {**os.environ, "PYTHONPATH": str(args.baseline.resolve())}
        out = subprocess.run([sys.executable, __file__, "--json", "--seeds", str(args.seeds),
                              "--n-init", str(args.n_init)], env=env, check=True,
                             capture_output=True, text=True).stdout
        print(f"\nbaseline {args.baseline}")
        print(table(json.loads(out)))


if __name__ == "__main__":
    main()
