"""Compare an exact-specified study's parameter errors with their asymptotic prediction.

For a study whose fit has the truth's number of experts, the MLE's error is asymptotically
normal with covariance ``I^-1 / n``, ``I`` the Fisher information per row at the truth.
This script estimates ``I`` as the mean outer product of the per-row scores of a large
sample from the truth (``--rows``, on the study's design; positive semi-definite by
construction, where the observed information at the truth is not: in a weakly determined
direction its noise exceeds the information), the scores by central differences of each
row's log-density. For every per-cell error column
``pe_<parameter>_<cell>`` that names one scalar parameter (one feature), predicts its mean
at size n: ``E|N(0, s^2)| = s sqrt(2 / pi)``, ``s = sd / sqrt(n)`` (the temperature by the
delta method from ``log tau``). It writes ``paper_figures/results/NAME.asymptotic.json``:
the information's eigenvalues, and per column the predicted and the observed mean error at
the smallest and at the largest sizes of the grid, which ``make_figures.py`` quotes.

Where the observed errors agree with the prediction at the largest sizes but stay below it
at the small ones, the curve has not yet reached its n^-1/2 regime at the small sizes: a
weakly determined direction of the parameters (a small eigenvalue of ``I``) keeps the
asymptotic standard deviations larger than what the start and the model's nonlinearity
allow at small n.

Usage::

    python paper_figures/asymptotic_check.py activation
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from make_figures import read_results  # noqa: E402

import gmoe  # noqa: E402
from gmoe._observed_information import Parametrisation  # noqa: E402
from gmoe.simulation import load_experiment  # noqa: E402

#: Share of the grid's sizes, at each end, over which observed errors are averaged.
_END_SHARE = 0.05


def _parameter_of(column, names):
    """The parameter (and whether it is log tau) a ``pe_`` column measures, or None."""
    if column == "pe_temperature":
        return ("gate.log_temperature", True) if "gate.log_temperature" in names else None
    for kind, template in (("gate_coef", "gate[{j}].coef[0]"),
                           ("gate_intercept", "gate[{j}].intercept"),
                           ("expert_coef", "expert[{j}].coef[0]"),
                           ("expert_intercept", "expert[{j}].intercept"),
                           ("expert_var", "expert[{j}].var")):
        prefix = f"pe_{kind}_"
        if column.startswith(prefix) and column[len(prefix):].isdigit():
            name = template.format(j=int(column[len(prefix):]))
            return (name, False) if name in names else None
    return None


def _score_outer_product(param, vec, X, y):
    """``mean_i s_i s_i^T`` of the per-row scores, by central differences."""
    scores = np.empty((X.shape[0], vec.size))
    for a in range(vec.size):
        h = 1e-5 * max(1.0, abs(vec[a]))
        step = np.zeros(vec.size)
        step[a] = h
        up = gmoe.conditional_log_density(param.to_measure(vec + step), X, y)
        down = gmoe.conditional_log_density(param.to_measure(vec - step), X, y)
        scores[:, a] = (up - down) / (2.0 * h)
    return scores.T @ scores / X.shape[0]


def check(name, rows, n_rows, seed=0):
    experiment = load_experiment(ROOT / "simulations" / f"{name}.toml")
    truth = experiment.truth
    if experiment.fit["n_experts"] != truth.n_experts or truth.n_features != 1:
        raise SystemExit(f"{name}: only exact-specified one-feature studies are checked.")
    # The per-cell errors are measured after the alignment's translation of the gate,
    # which fixes the cell holding most of the truth's mass; they are the errors of the
    # parameters relative to the last expert (the information's parametrisation) only when
    # that cell is the last one and its gate is 0.
    pinned = [c for c in rows[0] if c.startswith("pe_gate_intercept_")
              and all(r[c] is not None and abs(r[c]) < 1e-12 for r in rows)]
    last = f"pe_gate_intercept_{truth.n_experts - 1}"
    if pinned != [last] or truth.gate_intercept[-1] != 0:
        raise SystemExit(f"{name}: the alignment does not fix the last cell at a zero gate "
                         "here, so the per-cell errors are not those of the information's "
                         "parameters; not checked.")
    design = experiment.design
    X = gmoe.make_design(n_rows, design["kind"], low=design["low"], high=design["high"],
                         n_features=1, random_state=seed)
    y = gmoe.sample_moe(truth, X, random_state=seed + 1)
    learn = bool(experiment.fit.get("learn_temperature"))
    param = Parametrisation(truth, learn_temperature=learn)
    info = _score_outer_product(param, param.to_vector(truth), X, y)
    sd = np.sqrt(np.diag(np.linalg.inv(info)))
    sizes = np.array(sorted({r["n"] for r in rows}))
    m = max(1, int(round(_END_SHARE * sizes.size)))
    ends = {"small": sizes[:m], "large": sizes[-m:]}
    columns = []
    for column in rows[0]:
        found = _parameter_of(column, param.names)
        if found is None:
            continue
        pname, log_scale = found
        scale = sd[param.names.index(pname)]
        if log_scale:  # |tau - tau*| ~ tau* |log tau - log tau*|
            scale *= truth.temperature
        entry = {"column": column, "parameter": pname, "asymptotic_sd_per_row": float(scale)}
        for end, chosen in ends.items():
            picked = [r for r in rows if r["n"] in set(chosen.tolist())
                      and r.get(column) is not None]
            observed = float(np.mean([r[column] for r in picked]))
            predicted = float(np.mean([scale * np.sqrt(2.0 / np.pi / r["n"]) for r in picked]))
            entry[end] = {"n_from": int(chosen[0]), "n_to": int(chosen[-1]),
                          "observed_mean": observed, "predicted_mean": predicted}
        columns.append(entry)
    return {"study": name, "rows_for_information": n_rows, "result_rows": len(rows),
            "information_eigenvalues": np.linalg.eigvalsh(info).tolist(),
            "columns": columns}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("studies", nargs="+")
    parser.add_argument("--rows", type=int, default=2_000_000,
                        help="rows of the sample the information is estimated on")
    parser.add_argument("--results", type=Path, default=HERE / "results")
    args = parser.parse_args(argv)
    for name in args.studies:
        rows, _ = read_results(args.results, name)
        if rows is None:
            raise SystemExit(f"{name}: no committed results in {args.results}.")
        report = check(name, rows, args.rows)
        (args.results / f"{name}.asymptotic.json").write_text(
            json.dumps(report, indent=1) + "\n")
        eig = report["information_eigenvalues"]
        print(f"{name}: information eigenvalues per row {eig[0]:.2e} .. {eig[-1]:.2e}")
        for c in report["columns"]:
            print(f"  {c['column']:24s} small n: observed {c['small']['observed_mean']:.4g} "
                  f"predicted {c['small']['predicted_mean']:.4g}; large n: observed "
                  f"{c['large']['observed_mean']:.4g} predicted "
                  f"{c['large']['predicted_mean']:.4g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
