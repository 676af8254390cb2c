"""Packaging and code quality (issue 22): lint and types run by the suite, an old Python turned away in one line,
the files a release carries."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
OLD_PYTHON = "import sys; sys.version_info = (3, 6, 8, 'final', 0); "


def test_ruff_finds_nothing() -> None:
    pytest.importorskip("ruff")
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "libdoctor", "tests", "benchmarks",
                           "deploy", "tools", "docs"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_mypy_is_clean_on_the_loader_and_gpu(tmp_path: Path) -> None:
    pytest.importorskip("mypy")
    done = subprocess.run([sys.executable, "-m", "mypy", "--cache-dir", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300)  # files and options: setup.cfg [mypy]
    assert done.returncode == 0 and "Success" in done.stdout, done.stdout[-3000:]


@pytest.mark.parametrize("entry", ["import libdoctor", "exec(open('setup.py').read())"])
def test_an_old_python_is_turned_away_in_one_line(entry: str) -> None:
    """CentOS 7's python3 is 3.6: installing (setup.py) and running (the package) say so in one line, exit 1."""
    done = subprocess.run([sys.executable, "-c", OLD_PYTHON + entry], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1, done.stderr
    assert lines[0].startswith("libdoctor needs Python 3.9 or newer (this is 3.6)") and "conda" in lines[0]
    for path in (REPO / "setup.py", REPO / "libdoctor/__init__.py"):  # parsed by 3.6 before the check runs
        ast.parse(path.read_text(), feature_version=(3, 6))


def test_a_release_carries_license_changelog_and_types() -> None:
    assert "MIT License" in (REPO / "LICENSE").read_text()
    assert "license_files = LICENSE" in (REPO / "setup.cfg").read_text()
    assert (REPO / "libdoctor/py.typed").is_file() and "py.typed" in (REPO / "setup.cfg").read_text()
    changelog = (REPO / "CHANGELOG.rst").read_text()
    import libdoctor

    release = libdoctor.__version__.split(".dev")[0].split("+")[0]
    if ".dev" in libdoctor.__version__:  # between tags: the next patch release of the last one listed
        major, minor, patch = (int(n) for n in release.split("."))
        release = f"{major}.{minor}.{max(patch - 1, 0)}"
    assert f"\n{release} (" in changelog, (libdoctor.__version__, release)
