"""Build hook: the wheel carries the studies of ``simulations/`` as package data.

Everything else about the package is declared in ``pyproject.toml``. The studies have one
copy, in the repository's top-level ``simulations/``, where a reader finds them next to
the code; building copies them into ``gmoe/simulation/studies/`` of the build, which
``gmoe-sim`` reads (``importlib.resources``) when gmoe is installed. A source checkout or
an editable install reads ``simulations/`` itself, so nothing is copied for those.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

STUDIES = Path(__file__).resolve().parent / "simulations"


class BuildPyWithStudies(build_py):
    """``build_py`` that also copies ``simulations/*.toml`` into the built package."""

    def run(self):
        """Build the package, then copy the studies into it (not for editable installs)."""
        super().run()
        if getattr(self, "editable_mode", False):
            return
        studies = sorted(STUDIES.glob("*.toml"))
        if not studies:
            raise FileNotFoundError(f"no study files in {STUDIES}: the wheel would ship none")
        target = Path(self.build_lib, "gmoe", "simulation", "studies")
        target.mkdir(parents=True, exist_ok=True)
        for study in studies:
            shutil.copyfile(study, target / study.name)


setup(cmdclass={"build_py": BuildPyWithStudies})
