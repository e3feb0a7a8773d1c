"""The built package: a wheel installed outside the checkout carries and runs the studies.

The wheel is built the way ``python -m build`` does (a source distribution, then the
wheel from it) with the build backend of the running environment (no download), and
installed, alone, into a new virtual environment in a temporary directory. That
environment sees the running environment's dependencies (numpy, numba, ...) through a
``.pth`` file, but not its gmoe: the checkout is not on its path and ``PYTHONPATH`` is
cleared, so ``gmoe-sim`` there works only if the wheel is complete.
"""

import os
import re
import shutil
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
STUDIES = sorted(p.stem for p in (ROOT / "simulations").glob("*.toml"))


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (args, result.stdout[-3000:], result.stderr[-3000:])
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A new virtual environment holding only the gmoe wheel built from this checkout."""
    tmp = tmp_path_factory.mktemp("wheel")
    # Build from a copy, so the checkout gets no build/ or *.egg-info.
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.nbi", "*.nbc")
    for name in ("gmoe", "simulations"):
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    dist = tmp / "dist"
    _run([sys.executable, "-c", "import sys; from setuptools import build_meta; "
          "print(build_meta.build_sdist(sys.argv[1]))", str(dist)], cwd=src)
    [sdist] = dist.glob("gmoe-*.tar.gz")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-index",
          "--no-build-isolation", "--wheel-dir", str(dist), str(sdist)], cwd=tmp)
    [wheel] = dist.glob("gmoe-*.whl")

    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    scripts = venv / ("Scripts" if os.name == "nt" else "bin")
    python = scripts / ("python.exe" if os.name == "nt" else "python")
    purelib = Path(_run([str(python), "-c",
                         "import sysconfig; print(sysconfig.get_path('purelib'))"]).strip())
    # The dependencies, from the running environment (a plain path line: the .pth files
    # there, such as an editable gmoe's, are not processed).
    deps = {*site.getsitepackages(), sysconfig.get_path("purelib")}
    (purelib / "gmoe-test-deps.pth").write_text("\n".join(sorted(deps)) + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "--no-build-isolation", str(wheel)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    work = tmp / "work"  # no simulations/ here
    work.mkdir()
    return {"python": python, "gmoe_sim": scripts / "gmoe-sim", "purelib": purelib,
            "env": env, "work": work, "wheel": wheel}


def test_the_wheel_ships_the_studies(installed):
    import zipfile

    names = zipfile.ZipFile(installed["wheel"]).namelist()
    shipped = sorted(Path(n).stem for n in names if n.startswith("gmoe/simulation/studies/"))
    assert shipped == STUDIES and "softmax-exact" in STUDIES
    for stem in STUDIES:  # the same bytes as the one copy in simulations/
        data = zipfile.ZipFile(installed["wheel"]).read(f"gmoe/simulation/studies/{stem}.toml")
        assert data == (ROOT / "simulations" / f"{stem}.toml").read_bytes()


def test_the_wheel_declares_its_license_and_ships_its_text(installed):
    import zipfile

    wheel = zipfile.ZipFile(installed["wheel"])
    [metadata] = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    fields = wheel.read(metadata).decode()
    assert "License-Expression: BSD-3-Clause" in fields
    [license_text] = [n for n in wheel.namelist()
                      if n.endswith(".dist-info/licenses/LICENSE")]
    assert wheel.read(license_text) == (ROOT / "LICENSE").read_bytes()


def test_installed_gmoe_sim_lists_and_runs(installed, tmp_path):
    env, work = installed["env"], installed["work"]
    where = _run([str(installed["python"]), "-c", "import gmoe; print(gmoe.__file__)"],
                 cwd=work, env=env).strip()
    assert Path(where).is_relative_to(installed["purelib"])
    assert not Path(where).is_relative_to(ROOT)

    listing = _run([str(installed["gmoe_sim"]), "list"], cwd=work, env=env)
    packaged = installed["purelib"] / "gmoe" / "simulation" / "studies"
    assert listing.splitlines()[0] == f"{packaged}:"
    listed = re.findall(r"^  (\S+) +\S+ k\*=", listing, flags=re.MULTILINE)
    assert sorted(listed) == STUDIES

    # A small study of one's own runs end to end from the installed package.
    text = (packaged / "softmax-exact.toml").read_text()
    text = re.sub(r"(?ms)^\[sizes\].*?(?=^\[)", "[sizes]\nn = [80, 160]\nreplications = 2\n\n",
                  text)
    study = tmp_path / "small.toml"
    study.write_text(text)
    out = _run([str(installed["gmoe_sim"]), "run", str(study), "--n-jobs", "1",
                "--no-progress", "--db", str(tmp_path / "small.sqlite"), "--out",
                str(tmp_path / "small")], cwd=work, env=env)
    assert "stored 4 rows (0 not ok)" in out and "slope d1:" in out


@pytest.mark.slow
def test_installed_quick_study_runs_and_reports(installed, tmp_path):
    env = installed["env"]
    name = "topk-over"  # the smallest [quick] grid: 4 sizes x 2 replications
    out = _run([str(installed["gmoe_sim"]), "run", name, "--quick", "--no-progress",
                "--out", str(tmp_path / "plots")], cwd=tmp_path, env=env)
    assert "stored 8 rows (0 not ok)" in out and "time per task" in out
    assert (tmp_path / "results" / f"{name}-quick.sqlite").exists()
    # report finds the quick store and its grid without --quick.
    report = _run([str(installed["gmoe_sim"]), "report", name, "--out",
                   str(tmp_path / "plots")], cwd=tmp_path, env=env)
    assert f"{name} (quick)" in report and "8 tasks over 4 sample sizes" in report
    assert "not stored yet" not in report
