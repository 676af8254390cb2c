"""The one-file build (issue 22): ``tools/build_pyz.py`` makes ``libdoctor.pyz``, which runs ``scan`` and
``report`` under a bare ``python3 -I`` (a venv made without pip: nothing but the standard library)."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from .conftest import ElfFactory, needs_gcc

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def pyz(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("pyz") / "libdoctor.pyz"
    done = subprocess.run([sys.executable, str(REPO / "tools/build_pyz.py"), "--output", str(out)],
                          capture_output=True, text=True, timeout=600)
    if done.returncode != 0 and ("Could not find a version" in done.stderr or "NewConnectionError" in done.stderr):
        pytest.skip("the package index cannot be reached for the dependencies' wheels")
    assert done.returncode == 0, done.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("bare") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin/python"
    probe = subprocess.run([str(python), "-I", "-c", "import click"], capture_output=True)
    assert probe.returncode != 0  # nothing installed: every dependency comes from the archive
    return python


def run(python: Path, pyz: Path, *args: str, cache: Path) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(cache), "XDG_CACHE_HOME": str(cache), "NO_COLOR": "1",
           "LIBDOCTOR_NO_VERDICT_CACHE": "1"}
    return subprocess.run([str(python), "-I", str(pyz), *args], capture_output=True, text=True, timeout=300, env=env)


@needs_gcc
def test_the_one_file_build_runs_scan_and_report_with_nothing_installed(pyz: Path, bare_python: Path,
                                                                        elf: ElfFactory, tmp_path: Path) -> None:
    dep = elf.lib("lib/libdep.so.1", defines=["dep"])
    app = elf.lib("lib/libapp.so", calls=["dep"], link=[dep], runpath="$ORIGIN")
    cache = tmp_path / "cache"
    healthy = run(bare_python, pyz, "scan", str(app), cache=cache)
    assert healthy.returncode == 0 and healthy.stdout.startswith("healthy"), healthy.stdout + healthy.stderr
    dep.unlink()
    broken = run(bare_python, pyz, "scan", "--json", str(app), cache=cache)
    assert broken.returncode == 1 and json.loads(broken.stdout)["problems"][0]["soname"] == "libdep.so.1"
    report = run(bare_python, pyz, "report", str(app), cache=cache)
    assert report.returncode == 1 and report.stdout.startswith("## libdoctor report: not healthy"), report.stderr
    assert len(report.stdout.splitlines()) <= 40
    assert any((cache / "libdoctor/pyz").iterdir())  # the compiled module was unpacked once, into the cache


def test_the_archive_turns_an_old_python_away_in_one_line(pyz: Path) -> None:
    main = zipfile.ZipFile(pyz).read("__main__.py").decode()
    ast.parse(main, feature_version=(3, 6))
    done = subprocess.run([sys.executable, "-c", "import sys, runpy; sys.version_info = (3, 6, 8, 'final', 0); "
                           f"sys.argv = [{str(pyz)!r}]; runpy.run_path({str(pyz)!r}, run_name='__main__')"],
                          capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "needs Python 3.9 or newer (this is 3.6)" in lines[0]
