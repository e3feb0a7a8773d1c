"""The Python shown in the documentation runs, and does what its text says.

Every ``.. code-block:: python`` of the user guide and the front page is listed in
:data:`BLOCKS`, so a block added to the docs without a test fails here. A block runs in
one namespace per page, after the page's earlier blocks, seeded with what its text says
the reader already has (``X``, ``y``, flexmix's matrices ``G`` and ``B``); some are then
checked against an independent computation. A block that needs what a test cannot have
(a Dask cluster at a named host) is listed with the reason it does not run.
"""

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gmoe

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "docs" / "index.rst", *sorted((ROOT / "docs" / "user_guide").glob("*.rst"))]


def python_blocks(path):
    """The ``.. code-block:: python`` blocks of an rST page: ``(first line, code)``."""
    lines, blocks, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        match = re.match(r"^(\s*)(?:[-*]\s+)?\.\. code-block:: python\s*$", lines[i])
        if not match:
            i += 1
            continue
        # The body is every line indented past the directive (or blank), after it.
        indent = len(lines[i]) - len(lines[i].lstrip(" -*"))
        j, body = i + 1, []
        while j < len(lines) and (not lines[j].strip()
                                  or len(lines[j]) - len(lines[j].lstrip()) > indent):
            body.append(lines[j])
            j += 1
        code = textwrap.dedent("\n".join(body)).strip("\n")
        blocks.append((code.splitlines()[0], code))
        i = j
    return blocks


#: Each page's blocks by their first line, in order; None runs it, a text skips it.
BLOCKS = {
    "index.rst": {"import gmoe": None},
    "user_guide/coming_from.rst": {
        "import gmoe": None,
        "# G: flexmix's concomitant matrix, shape (1 + d, k), rows (Intercept), x1, ..., xd":
            None,
        "fit_flexmix = gmoe.MixingMeasure(": None,
    },
    "user_guide/simulations.rst": {
        "numpy.random.SeedSequence(seed, spawn_key=(n, rep))     "
        "# task_seed_sequence(seed, n, rep)": None,
        "from gmoe.simulation import load_experiment, read_rows, run_experiment": None,
        "from dask.distributed import Client":
            "needs a Dask scheduler at the host it names; the Dask path runs against a "
            "local cluster in test_simulation_dask.py",
        "from gmoe.metrics import voronoi_cells": None,
    },
}


def test_every_python_block_of_the_docs_is_listed_here():
    found = {path.relative_to(ROOT / "docs").as_posix():
             [first for first, _ in python_blocks(path)] for path in PAGES}
    found = {name: firsts for name, firsts in found.items() if firsts}
    # A page may show a block twice (coming_from's three imports): compare the sets.
    assert {name: set(firsts) for name, firsts in found.items()} == \
        {name: set(blocks) for name, blocks in BLOCKS.items()}


def _run_page(name, namespace):
    """Run the page's blocks in order in ``namespace``; the blocks' first lines run."""
    ran = []
    for first, code in python_blocks(ROOT / "docs" / name):
        if BLOCKS[name][first] is not None:
            continue
        exec(compile(code, f"{name}: {first}", "exec"), namespace)
        ran.append(first)
    return ran


def test_the_front_page_example_recovers_its_truth(capsys):
    namespace = {}
    _run_page("index.rst", namespace)
    est, truth = namespace["est"], namespace["truth"]
    # 5000 rows of this truth: softmax-exact's rate (D1 about 7.9 n^-0.53) puts a fit's
    # D1 near 0.09, and 0.2 is about twice that; a fit that missed an expert is of order 1.
    assert est.converged_
    assert gmoe.metrics.voronoi_loss(est, truth) < 0.2
    printed = capsys.readouterr().out
    assert float(printed.split()[-1]) == pytest.approx(gmoe.metrics.voronoi_loss(est, truth))


def _flexmix_shaped(measure):
    """A measure's parameters as flexmix prints them: the first component the baseline."""
    gate = np.vstack([measure.gate_intercept, measure.gate_coef.T])   # (1 + d, k)
    G = gate - gate[:, [0]]
    B = np.vstack([measure.expert_intercept, measure.expert_coef.T])
    return G, B, np.sqrt(measure.expert_var)


def test_the_flexmix_conversions_give_gmoe_s_parameters():
    truth = gmoe.MixingMeasure(gate_coef=[[3.0, -1.0], [0.5, 2.0], [0.0, 0.0]],
                               gate_intercept=[1.0, -0.5, 0.0],
                               expert_coef=[[1.0, 2.0], [-1.0, 0.0], [0.5, 0.5]],
                               expert_intercept=[0.0, 1.0, -2.0],
                               expert_var=[0.1, 0.2, 0.3])
    X = gmoe.make_design(400, "uniform", n_features=2, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    G, B, sigma_mle = _flexmix_shaped(truth)
    # The mixtools/meteorits section's vector x: the first covariate (the fit only runs).
    namespace = {"X": X, "y": y, "x": X[:, 0], "G": G, "B": B, "sigma_mle": sigma_mle}
    ran = _run_page("user_guide/coming_from.rst", namespace)
    assert len(ran) == 5
    # The hand conversion and rebase=True both give back the truth's gate, whose last
    # expert is the reference.
    np.testing.assert_allclose(namespace["gate_intercept"], truth.gate_intercept, atol=1e-12)
    np.testing.assert_allclose(namespace["gate_coef"], truth.gate_coef, atol=1e-12)
    fit_flexmix = namespace["fit_flexmix"]
    for field in ("gate_coef", "gate_intercept", "expert_coef", "expert_intercept",
                  "expert_var"):
        np.testing.assert_allclose(getattr(fit_flexmix, field), getattr(truth, field),
                                   atol=1e-12, err_msg=field)
    # The last block's estimator is fitted on x as a column.
    assert namespace["est"].n_features_in_ == 1 and len(namespace["est"].expert_var_) == 2


@pytest.mark.slow
def test_the_simulation_pages_python_runs_from_a_checkout(tmp_path, monkeypatch):
    # The page's paths are relative to a checkout: a directory with its simulations/.
    (tmp_path / "simulations").symlink_to(ROOT / "simulations")
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    # The last block reads a store of softmax-over-k3 the reader has run; its quick grid.
    from gmoe.simulation import load_experiment, run_experiment
    over = load_experiment("simulations/softmax-over-k3.toml").quick_variant()
    over_run = run_experiment(over, "results/softmax-over-k3.sqlite", n_jobs=1,
                              progress=False)
    namespace = {"numpy": np, "seed": 20230503, "n": 100, "rep": 3}
    _run_page("user_guide/simulations.rst", namespace)
    from gmoe.simulation import task_seed_sequence
    first = namespace["numpy"].random.SeedSequence(20230503, spawn_key=(100, 3))
    assert first.generate_state(4).tolist() == \
        task_seed_sequence(20230503, 100, 3).generate_state(4).tolist()
    # The stored over-specified fits come back as measures, one per row, with their
    # cells (the page's fitted-measure block runs before its quick-grid block).
    assert len(namespace["fits"]) == over_run.tasks_stored == len(namespace["cells"]) > 0
    assert all(len(cells) == 3 for cells in namespace["cells"])
    # The quick grid ran into the store the page names, and its rate is a number.
    assert namespace["summary"].tasks_stored == len(namespace["rows"]) > 0
    assert namespace["summary"].db_path.resolve() == \
        (tmp_path / "results/softmax-exact-quick.sqlite").resolve()
    assert np.isfinite(namespace["fit_rate"](namespace["rows"], "d1").slope)
