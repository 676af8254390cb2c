"""libdoctor on real framework venvs from the package index, judged by the frameworks themselves.

The venvs are made by ``benchmarks/framework_venvs.py --install`` (several GB); these tests run when
``LIBDOCTOR_REAL_VENVS`` names that folder, install what is missing there, and skip cleanly when the
index cannot be reached.  Without the variable they are skipped (CI's time budget).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import framework_venvs  # noqa: E402

pytestmark = pytest.mark.realenv
ROOT = os.environ.get("LIBDOCTOR_REAL_VENVS")
DRIVER = {"libcuda.so.1", "libnvidia-ml.so.1"}  # on a host without a driver: the driver's own cause
JAX_GPU_LIBS = {"libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libcudnn.so.9", "libcufft.so.11",
                "libcupti.so.12", "libcusparse.so.12", "libcusolver.so.11"}


def venv(name: str) -> Path:
    if not ROOT:
        pytest.skip("LIBDOCTOR_REAL_VENVS is not set (benchmarks/framework_venvs.py makes the venvs)")
    path = Path(ROOT) / name
    state = framework_venvs.install(path, name)
    if state not in ("ready", "installed"):
        pytest.skip(f"{name}: {state}")
    return path


def scan(path: Path, *extra: str, env: dict | None = None) -> tuple[int, dict]:
    done = subprocess.run([sys.executable, "-m", "libdoctor", "scan", "--env", str(path), "--json", *extra],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600)
    return done.returncode, json.loads(done.stdout)


def site_of(path: Path) -> Path:
    return next(path.glob("lib/python3*/site-packages"))


def test_jax_without_cuda_wheels_names_what_jax_needs() -> None:
    path = venv("jax-bare")
    code, report = scan(path, "--probe")
    assert code == 1
    jax = next(f for f in report["frameworks"] if f["name"] == "jax")
    assert jax["gpu_usable"] is False and JAX_GPU_LIBS <= set(jax["libraries"]["missing"])
    assert report["next_step"] == f"{path}/bin/python3 -m pip install 'jax[cuda12]==0.10.2'"
    probe = report["probes"][0]
    assert probe["gpu"] is False and not probe["agrees"]
    assert any("Unable to load CUDA" in line or "Error loading CUDA libraries" in line for line in probe["logged"])
    for soname in JAX_GPU_LIBS:  # the real loader cannot find any of them either
        done = subprocess.run([str(path / "bin/python"), "-c", f"import ctypes; ctypes.CDLL({soname!r})"],
                              capture_output=True)
        assert done.returncode != 0, soname


@pytest.mark.parametrize("name", ["jax-cuda12", "cupy-ctk", "cuda13-host"])
def test_complete_installs_have_no_false_missing(name: str) -> None:
    path = venv(name)
    _code, report = scan(path, "--probe")
    assert not [p for p in report["problems"]
                if p["kind"] in ("missing", "missing-dlopen") and p["soname"] not in DRIVER]
    assert all(f["libraries"]["missing"] == [] for f in report["frameworks"])
    assert not [p for p in report["problems"] if p["severity"] == "error" and p["kind"] not in ("driver", "missing")]
    site = os.path.realpath(site_of(path))
    for probe in report["probes"]:
        assert probe["imported"]
        unpredicted = [f for f in probe["findings"] if f.startswith("loaded but not predicted")]
        assert unpredicted == []  # every CUDA library the framework loaded was predicted, at that path
        assert all(p.startswith(site) for p in probe["loaded"])  # the wheels, never /usr/local/cuda


def test_onnxruntime_with_wheels_gets_reachability_not_install(tmp_path: Path) -> None:
    path = venv("ort-cuda")
    state = {"LIBDOCTOR_STATE_DIR": str(tmp_path / "state")}
    code, report = scan(path, env=state)
    assert code == 1
    step = report["next_step"]
    assert step == f"libdoctor fix --apply --env {path}"  # the wheels' folders on the path: journalled
    (cause,) = [c for c in report["causes"] if c["error"] and c["key"].startswith("missing:")]
    assert cause["repaired"] and any(d.startswith("for this shell only: export LD_LIBRARY_PATH=") and
                                     "nvidia/cu13/lib" in d for d in cause["details"])
    missing = [p for p in report["problems"] if p["kind"] == "missing" and p["soname"] not in DRIVER]
    assert missing and all(p["install"] == [] for p in missing)
    done = subprocess.run([sys.executable, "-m", "libdoctor", *step.split()[1:], "--yes"], capture_output=True,
                          text=True, env={**os.environ, **state}, timeout=600)
    assert "applied (run" in done.stdout, done.stdout + done.stderr
    _code, fixed = scan(path, "--probe", env=state)  # the probe starts ONNX Runtime in the environment judged
    assert not [p for p in fixed["problems"] if p["kind"] == "missing" and p["soname"] not in DRIVER]
    logged = " ".join(fixed["probes"][0]["logged"])
    assert "libcublasLt.so.13" not in logged  # with the change, the provider gets past its CUDA libraries


@pytest.mark.parametrize("name", ["jax-cuda12", "cupy-ctk", "ort-cuda", "cuda13-host"])
def test_report_is_short_and_valid_on_real_venvs(name: str) -> None:
    """Issue 22: ``libdoctor report`` on each real venv: at most 40 lines of Markdown, its verdict the scan's, the
    JSON valid against the shipped schema."""
    import jsonschema

    path = venv(name)
    _code, scanned = scan(path)
    done = subprocess.run([sys.executable, "-m", "libdoctor", "report", "--env", str(path)], capture_output=True,
                          text=True, timeout=600)
    lines = done.stdout.splitlines()
    assert len(lines) <= 40 and lines[0] == f"## libdoctor report: {scanned['verdict']}", done.stdout
    data = json.loads(subprocess.run([sys.executable, "-m", "libdoctor", "report", "--env", str(path), "--json"],
                                     capture_output=True, text=True, timeout=600).stdout)
    schema = json.loads((Path(__file__).resolve().parent.parent / "libdoctor/schemas/report.json").read_text())
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    assert [f["name"] for f in data["environments"][0]["frameworks"]] == [f["name"] for f in scanned["frameworks"]]
