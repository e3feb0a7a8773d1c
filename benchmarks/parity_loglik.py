"""Log-likelihoods of gmoe's fits on the committed flexmix parity data, to every digit.

A refactor that claims "behaviour unchanged" runs this on both revisions
(``compare_revisions.py --base REV -- parity_loglik.py``) and compares the columns: the
same settings must give the same log-likelihood (1e-10 relative).

Usage::

    python benchmarks/parity_loglik.py
"""

import json
import warnings
from pathlib import Path

import numpy as np

import gmoe

DATA = Path(__file__).resolve().parent.parent / "tests" / "data" / "flexmix"


def main():
    print(f"{'data':<5} {'K':>2} {'log-likelihood (n_init=10, tol=1e-10)':>40} {'R polish':>20}")
    for name in "abcd":
        meta = json.loads((DATA / f"{name}.json").read_text())
        table = np.loadtxt(DATA / meta["csv"], delimiter=",", skiprows=1)
        X, y = table[:, :-1], table[:, -1]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            est = gmoe.GaussianMoERegressor(meta["K"], n_init=10, tol=1e-10, max_iter=5000,
                                            random_state=0).fit(X, y)
        print(f"{name:<5} {meta['K']:>2} {est.lower_bound_ * len(y):40.10f} "
              f"{meta['mle_polished']['loglik']:20.10f}", flush=True)


if __name__ == "__main__":
    main()
