"""paper_figures/: a stored study exported and turned into REPRODUCTION.md and its figures."""

import dataclasses
import sys
from pathlib import Path

import pytest

from gmoe.simulation import load_experiment, run_experiment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(ROOT / "paper_figures"))
    try:
        import make_figures
        import run_studies
        yield run_studies, make_figures
    finally:
        sys.path.remove(str(ROOT / "paper_figures"))


@pytest.mark.slow
def test_an_over_specified_study_is_exported_and_reported(tmp_path, scripts):
    # A small grid of the k = 3 over-specified study (3 sizes x 2 replications, 2 starts):
    # the pipeline a full run goes through, from the store to the markdown page.
    run_studies, make_figures = scripts
    experiment = dataclasses.replace(load_experiment(ROOT / "simulations/softmax-over-k3.toml")
                                     .quick_variant(), sizes=[1000, 2000, 4000],
                                     replications=2)
    db = tmp_path / "softmax-over-k3.sqlite"
    run_experiment(experiment, db, n_jobs=1, progress=False)
    results = tmp_path / "results"
    info = run_studies.export("softmax-over-k3", db, results)
    assert info["rows"] == 6 and (results / "softmax-over-k3.csv.gz").is_file()

    make_figures.main(["--results", str(results), "--out", str(tmp_path), "--docs",
                       str(tmp_path / "reproduction.rst")])
    page = (tmp_path / "REPRODUCTION.md").read_text()
    rows, _ = make_figures.read_results(results, "softmax-over-k3")
    section = make_figures.study_section("softmax-over-k3",
                                         make_figures.STUDIES["softmax-over-k3"], rows, info,
                                         tmp_path / "figures")
    # The summary row holds both slopes of the headline loss, as the rate functions give
    # them, and the grid is marked partial (6 of its 8000 tasks).
    headline = section["headline"]
    assert headline == "d2"
    line = next(li for li in page.splitlines() if li.startswith("| softmax-over-k3 |"))
    assert make_figures._fmt_slope(section["by_loss"]["d2"]) in line
    assert make_figures._fmt_slope(section["geometric"]["d2"]) in line
    assert "PARTIAL" in line
    # Over-specified: the geometric-mean rate table follows the mean's.
    assert "fitted to the geometric mean of the replications" in page
    assert (tmp_path / "figures" / "softmax-over-k3_rate.png").stat().st_size > 0
    assert "softmax-over-k3" in (tmp_path / "reproduction.rst").read_text()
