"""README.rst and docs/ (issue 22): a README read in five minutes whose commands and example are real, and a
manual that builds with Sphinx, warnings as errors."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import needs_gcc

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.rst").read_text(encoding="utf-8")


def commands() -> list[str]:
    """The README's two commands: the literal lines after its two opening "Install and run" paragraphs."""
    return re.findall(r"^Install and run[^\n]*::\n\n    (.+)$", README, re.MULTILINE)


def test_readme_is_short_and_ci_runs_its_test_command_verbatim() -> None:
    assert len(README.splitlines()) <= 200
    install, tests = commands()
    assert install.endswith("/tmp/libdoctor/bin/libdoctor scan") and tests.endswith("-m pytest -q")
    assert (REPO / ".ci/run").read_text().rstrip("\n").splitlines()[-1] == tests


@needs_gcc
def test_readme_example_is_what_a_real_run_prints() -> None:
    """docs/example.py builds the field report's machine in /tmp/field, runs the README's commands there and
    compares every line they print (a run's id aside) with the README."""
    done = subprocess.run([sys.executable, str(REPO / "docs/example.py"), "--check"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    block = README[README.index(".. example: start"):README.index(".. example: end")]
    assert "$ libdoctor scan --env envs/bert" in block and "$ libdoctor undo --all" in block
    assert "libcudnn.so.7 is really libcudnn.so.8" in block and "restored /tmp/field/usr/local/cuda-10.0" in block


def test_readme_install_command_runs_verbatim() -> None:
    """The first command, as printed (a venv in /tmp/libdoctor, pip install of this checkout, scan): a verdict."""
    install, _tests = commands()
    environ = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "CONDA_PREFIX", "PYTHONPATH")}
    environ["NO_COLOR"] = "1"
    shutil.rmtree("/tmp/libdoctor", ignore_errors=True)
    done = subprocess.run(["sh", "-c", install], cwd=REPO, env=environ, capture_output=True, text=True, timeout=600)
    if done.returncode not in (0, 1) and "Could not find a version" in done.stderr:
        pytest.skip("the package index cannot be reached")
    assert done.returncode in (0, 1), done.stdout[-2000:] + done.stderr[-2000:]
    first = done.stdout.splitlines()[0]
    assert first.startswith(("healthy", "not healthy", "no environment is active")), done.stdout[:500]


def test_docs_build_with_sphinx_warnings_as_errors(tmp_path: Path) -> None:
    pytest.importorskip("sphinx")
    done = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           str(REPO / "docs"), str(tmp_path / "html")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    built = {p.stem for p in (tmp_path / "html").glob("*.html")}
    pages = {p.stem for p in (REPO / "docs").glob("*.rst")}
    assert pages <= built, pages - built  # every page is in the toctree and built
