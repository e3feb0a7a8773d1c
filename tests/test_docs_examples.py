"""The Python shown in the documentation runs, and does what its text says.

Every Python block of the front page, the user guide and the contributor's guide (a
``.. code-block:: python`` or a ``::`` literal block, which Sphinx shows as Python) is
listed in :data:`BLOCKS`, in page order, so a block added, moved or removed without this
file following fails here. A block runs in one namespace per page, after the page's
earlier blocks, seeded with what its text says the reader already has (``X``, ``y``, a
truth, flexmix's matrices); some are then checked against an independent computation. A
block that needs what a test cannot have (files, a cluster at a named host) is listed
with the reason it does not run.
"""

import re
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest

import gmoe

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = [DOCS / "index.rst", *sorted((DOCS / "user_guide").glob("*.rst")),
         *sorted((DOCS / "contributing").glob("*.rst"))]
_PYTHON = {"", "python", "python3", "py", "pycon"}
_DIRECTIVE = re.compile(r"^(\s*)(?:[-*]\s+)*\.\. (?:code-block|code|sourcecode)::\s*(\S*)\s*$")


def python_blocks(path):
    """The Python blocks of an rST page, in order: ``(first line, code)``.

    A ``code-block``/``code``/``sourcecode`` directive of a Python language (or of none:
    the docs' default is Python), and a literal block after a paragraph ending in
    ``::``. The directive's options (``:caption:`` and the like) are not code.
    """
    lines, blocks, i = path.read_text().splitlines(), [], 0
    while i < len(lines):
        line = lines[i]
        directive = _DIRECTIVE.match(line)
        literal = (line.rstrip().endswith("::") and not line.lstrip().startswith("..")
                   and not directive)
        if not directive and not literal:
            i += 1
            continue
        # The body: every following line indented past the marker's line, or blank.
        indent = len(line) - len(re.sub(r"^\s*(?:[-*]\s+)*", "", line)) if directive \
            else len(line) - len(line.lstrip(" "))
        j, body = i + 1, []
        while j < len(lines) and (not lines[j].strip()
                                  or len(lines[j]) - len(lines[j].lstrip()) > indent):
            body.append(lines[j])
            j += 1
        code = textwrap.dedent("\n".join(body)).strip("\n").splitlines()
        while directive and code and re.match(r"^:[\w-]+:", code[0]):
            code.pop(0)
        code = "\n".join(code).strip("\n")
        if code and (literal or directive.group(2) in _PYTHON):
            blocks.append((code.splitlines()[0], code))
        i = j
    return blocks


#: Each page's Python blocks in order, by first line: None runs it, a text says why not.
BLOCKS = {
    "index.rst": [("import gmoe", None)],
    "user_guide/coming_from.rst": [
        ("import gmoe", None),
        ("# G: flexmix's concomitant matrix, shape (1 + d, k), rows (Intercept), x1, ..., "
         "xd", None),
        ("fit_flexmix = gmoe.MixingMeasure(", None),
        ("import gmoe", None),
        ("import gmoe", None),
    ],
    "user_guide/estimation.rst": [
        ("import gmoe", None),
        ("est = gmoe.GaussianMoERegressor(n_experts=2, warm_start=True, max_iter=1,", None),
        ("from threadpoolctl import threadpool_limits", None),
        ("import dask.array as da",
         "reads zarr files the reader has; the Dask fit runs on a local cluster in "
         "test_dask_fit.py"),
        ("from sklearn.model_selection import GridSearchCV", None),
        ("from gmoe.selection import select_n_experts", None),
        ("from gmoe.inference import bootstrap, fit_results", None),
    ],
    "user_guide/metrics.rst": [
        ("from gmoe.metrics import voronoi_loss", None),
        ("from gmoe.metrics import hellinger, total_variation", None),
    ],
    "user_guide/models.rst": [
        ("import gmoe", None),
        ("est = gmoe.GaussianMoERegressor(n_experts=2, gating=\"temperature\",", None),
    ],
    "user_guide/simulations.rst": [
        ("numpy.random.SeedSequence(seed, spawn_key=(n, rep))     "
         "# task_seed_sequence(seed, n, rep)", None),
        ("from gmoe.metrics import voronoi_cells", None),
        ("from gmoe.simulation import load_experiment, read_rows, run_experiment", None),
        ("from dask.distributed import Client",
         "needs a Dask scheduler at the host it names; the Dask path runs against a "
         "local cluster in test_simulation_dask.py"),
    ],
    "contributing/adding_a_gate.rst": [("from gmoe.gates import register_gating", None)],
    "contributing/adding_a_metric.rst": [
        ("DESIGN_DISTANCES = (",
         "the module's table with a hypothetical entry; test_simulation_runner.py adds a "
         "distance to it and runs a study"),
    ],
}


def test_every_python_block_of_the_docs_is_listed_here_in_order():
    found = {path.relative_to(DOCS).as_posix(): [first for first, _ in python_blocks(path)]
             for path in PAGES}
    assert {name: firsts for name, firsts in found.items() if firsts} == \
        {name: [first for first, _ in blocks] for name, blocks in BLOCKS.items()}


def test_the_block_finder_reads_every_way_rst_shows_python(tmp_path):
    page = tmp_path / "page.rst"
    page.write_text(textwrap.dedent("""\
        Text::

           a = 1

        .. code-block:: python3
           :caption: a caption

           b = 2

        .. code:: python

           c = 3

        .. code-block:: bash

           not python

        .. list-table::

           * - .. code-block:: python

                  d = 4
             - .. code-block:: r

                  e <- 5
        """))
    assert [code for _, code in python_blocks(page)] == ["a = 1", "b = 2", "c = 3", "d = 4"]


def _run_page(name, namespace):
    """Run the page's runnable blocks in order in ``namespace``; their first lines."""
    reasons = iter(reason for _, reason in BLOCKS[name])
    ran = []
    for first, code in python_blocks(DOCS / name):
        if next(reasons) is None:
            exec(compile(code, f"{name}: {first}", "exec"), namespace)
            ran.append(first)
    return ran


def _two_expert_data(n, seed=0):
    """The front page's truth and ``n`` rows of it (a uniform design)."""
    truth = gmoe.MixingMeasure(gate_coef=[[25.0], [0.0]], gate_intercept=[-8.0, 0.0],
                               expert_coef=[[-20.0], [20.0]], expert_intercept=[15.0, -5.0],
                               expert_var=[0.09, 0.16])
    X = gmoe.make_design(n, "uniform", random_state=seed)
    return truth, X, gmoe.sample_moe(truth, X, random_state=seed + 1)


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
    # The page's estimators take no random_state: what is checked below does not depend
    # on which maximum their fits reach.
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


def test_the_estimation_page_runs_and_its_claims_hold():
    _, X, y = _two_expert_data(600)
    namespace = {"X": X, "y": y, "X_new": X[:5]}
    with warnings.catch_warnings():
        # The warm-start block expects a ConvergenceWarning per one-step call.
        warnings.simplefilter("ignore", gmoe.GMoEWarning)
        warnings.filterwarnings("ignore", message=".*converge.*")
        ran = _run_page("user_guide/estimation.rst", namespace)
    assert len(ran) == 6
    # The threads block asserts its own claim (the same fit with 1 thread and with 2);
    # the selection picks the truth's two experts from 600 well-separated rows.
    assert namespace["result"].n_experts == 2
    assert namespace["res"].bse.shape == namespace["res"].params.shape


def test_the_metrics_page_runs_with_the_measures_it_names():
    truth2, X, y = _two_expert_data(300)

    def split(measure, atom, parts):
        """``measure`` with one atom split into ``parts`` nearby copies of equal weight."""
        vec = {f: np.array(getattr(measure, f), float) for f in
               ("gate_coef", "gate_intercept", "expert_coef", "expert_intercept",
                "expert_var")}
        idx = [atom] * (parts - 1) + list(range(measure.n_experts))
        out = {f: v[idx].copy() for f, v in vec.items()}
        out["gate_intercept"][:parts] -= np.log(parts)
        out["expert_intercept"][:parts - 1] += 0.01 * np.arange(1, parts)
        return gmoe.MixingMeasure(**out)

    est = gmoe.GaussianMoERegressor(n_experts=2, random_state=0).fit(X, y)
    namespace = {"truth2": truth2, "fit3": split(truth2, 0, 2), "fit5": split(truth2, 0, 4),
                 "fit": est.mixing_measure_, "truth": truth2, "est": est, "X": X}
    assert len(_run_page("user_guide/metrics.rst", namespace)) == 2
    # The comments' claims: "auto" is D2 with rbar(2) = 4 for an over-specified fit and
    # D1 for an exact one.
    from gmoe.metrics import voronoi_loss
    fit3, fit = namespace["fit3"], namespace["fit"]
    assert voronoi_loss(fit3, truth2) == voronoi_loss(fit3, truth2, kind="over", rbar={2: 4})
    assert voronoi_loss(fit3, truth2) != voronoi_loss(fit3, truth2, kind="over", rbar={2: 6})
    assert voronoi_loss(fit, truth2) == voronoi_loss(fit, truth2, kind="exact")


def test_the_models_page_simulates_and_reads_a_temperature_fit():
    namespace = {}
    assert len(_run_page("user_guide/models.rst", namespace)) == 2
    # The design is the grid the comment says; each row's label names the expert that
    # drew it: the residuals from that expert's line have its sd, 0.3 or 0.4 (within
    # 15%: the sd of a sample sd of a few hundred normal draws is about 5%).
    X, y, labels, truth = (namespace[k] for k in ("X", "y", "labels", "truth"))
    assert X.shape == (1000, 1) and np.array_equal(X[:, 0], np.linspace(0, 1, 1000))
    for j, sd in enumerate((0.3, 0.4)):
        mine = labels == j
        residual = y[mine] - X[mine, 0] * truth.expert_coef[j, 0] - truth.expert_intercept[j]
        assert mine.sum() > 200 and np.std(residual) == pytest.approx(sd, rel=0.15)
    assert namespace["log_density"].shape == (1000,)
    # The identifiable reading divides the gate by the temperature, as the page says.
    est = namespace["est"]
    identifiable = est.mixing_measure_.identifiable()
    np.testing.assert_allclose(identifiable.gate_coef, namespace["gamma_coef"], rtol=1e-12)


def test_the_contributor_guide_registers_and_fits_its_family():
    from test_new_gating_family import SquaredFeatureSoftmax, _truth

    # The family's own truth (the page compares the fit with it by a Voronoi loss).
    truth = _truth(SquaredFeatureSoftmax())
    X = gmoe.make_design(1000, "uniform", low=-1.0, high=1.0, random_state=0)
    y = gmoe.sample_moe(truth, X, random_state=1)
    namespace = {"gmoe": gmoe, "SquaredFeatureSoftmax": SquaredFeatureSoftmax, "X": X,
                 "y": y, "truth": truth}
    try:
        assert len(_run_page("contributing/adding_a_gate.rst", namespace)) == 1
        assert gmoe.gates.gating_class("squared-softmax") is SquaredFeatureSoftmax
    finally:  # the page registers the family for good; other tests expect the built-ins
        gmoe.gates._REGISTRY.pop("squared-softmax", None)
    assert isinstance(namespace["est"].mixing_measure_.family, SquaredFeatureSoftmax)


@pytest.mark.slow
def test_the_simulation_pages_python_runs_from_a_checkout(tmp_path, monkeypatch):
    # The page's paths are relative to a checkout: a directory with its simulations/.
    (tmp_path / "simulations").symlink_to(ROOT / "simulations")
    (tmp_path / "results").mkdir()
    monkeypatch.chdir(tmp_path)
    # A block reads a store of softmax-over-k3 the reader has run: its quick grid.
    from gmoe.simulation import load_experiment, run_experiment, task_seed_sequence
    over = load_experiment("simulations/softmax-over-k3.toml").quick_variant()
    over_run = run_experiment(over, "results/softmax-over-k3.sqlite", n_jobs=1,
                              progress=False)
    # The seed block is an expression: its value is the task's seed sequence.
    [(_, seed_block), *_] = python_blocks(DOCS / "user_guide/simulations.rst")
    sequence = eval(seed_block.split("#")[0],
                    {"numpy": np, "seed": 20230503, "n": 100, "rep": 3})
    assert sequence.generate_state(4).tolist() == \
        task_seed_sequence(20230503, 100, 3).generate_state(4).tolist()
    namespace = {"numpy": np, "seed": 20230503, "n": 100, "rep": 3}
    assert len(_run_page("user_guide/simulations.rst", namespace)) == 3
    # The stored over-specified fits come back as measures, one per row, with their
    # cells (the page's fitted-measure block runs before its quick-grid block).
    assert len(namespace["fits"]) == over_run.tasks_stored == len(namespace["cells"]) > 0
    assert all(len(cells) == 3 for cells in namespace["cells"])
    # The quick grid ran into the store the page names, and its rate is a number.
    assert namespace["summary"].tasks_stored == len(namespace["rows"]) > 0
    assert namespace["summary"].db_path.resolve() == \
        (tmp_path / "results/softmax-exact-quick.sqlite").resolve()
    assert np.isfinite(namespace["fit_rate"](namespace["rows"], "d1").slope)
