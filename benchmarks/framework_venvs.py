"""Real framework venvs from the package index, scanned by libdoctor and judged by the frameworks' own probes.

    python benchmarks/framework_venvs.py --dir /tmp/libdoctor-venvs --install [--probe] [--only jax-bare]

``--install`` creates each venv that is not there yet (several GB in all; skipped, with a line saying so,
when the index cannot be reached).  For each venv it prints libdoctor's verdict (exit status, GPU usable,
missing libraries, next step), the scan time (cold: no facts cache; warm: the second run), and with
``--probe`` what the framework itself loaded and logged against libdoctor's prediction.
``tests/test_real_venvs.py`` runs on the same folder (``LIBDOCTOR_REAL_VENVS``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The venvs of issue 12, as a new user would install them (versions pinned so that runs compare).
SPECS = {
    "jax-bare": ["jax==0.10.2", "jaxlib==0.10.2", "jax-cuda12-plugin==0.10.2", "jax-cuda12-pjrt==0.10.2"],
    "jax-cuda12": ["jax[cuda12]==0.10.2"],
    "cupy-ctk": ["cupy-cuda12x[ctk]==14.2.*"],
    "ort-cuda": ["onnxruntime-gpu[cuda,cudnn]==1.31.1"],
    "cuda13-host": ["torch==2.14.1", "jax[cuda13]==0.10.2", "cupy-cuda13x[ctk]==14.2.*"],  # the H200 report's mix
}
MARKER = ".libdoctor-spec"


def index_reachable() -> bool:
    with tempfile.TemporaryDirectory() as folder:
        try:
            done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", folder,
                                   "six==1.16.0"], capture_output=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return done.returncode == 0


def ready(venv: Path, name: str) -> bool:
    marker = venv / MARKER
    return marker.is_file() and marker.read_text() == json.dumps(SPECS[name])


def install(venv: Path, name: str) -> str:
    """"ready", "installed", or why not."""
    if ready(venv, name):
        return "ready"
    if not index_reachable():
        return "skipped: the package index cannot be reached"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin/python"), "-m", "pip", "install", "-q", *SPECS[name]],
                          capture_output=True, text=True)
    if done.returncode != 0:
        return "failed: " + done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "failed"
    (venv / MARKER).write_text(json.dumps(SPECS[name]))
    return "installed"


def scan(venv: Path, *extra: str, env: dict | None = None) -> tuple[int, dict, float]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "libdoctor", "scan", "--env", str(venv), "--json", *extra],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, cwd=str(venv))
    elapsed = time.perf_counter() - started
    return done.returncode, json.loads(done.stdout), elapsed


def summary(name: str, venv: Path, probe: bool) -> dict:
    with tempfile.TemporaryDirectory() as state:
        cache = {"XDG_CACHE_HOME": state}
        code, report, cold = scan(venv, env=cache)
        _code, _report, warm = scan(venv, env=cache)
    row = {"venv": name, "exit": code, "cold_s": round(cold, 3), "warm_s": round(warm, 3),
           "objects": len(report["targets"]), "next_step": report["next_step"], "frameworks": []}
    for framework in report["frameworks"]:
        row["frameworks"].append({
            "name": framework["name"], "cuda": framework["cuda"], "gpu_usable": framework["gpu_usable"],
            "because": framework["because"], "missing": framework["libraries"]["missing"],
            "predicted": sorted({os.path.basename(s["path"]) for s in framework["cuda_libraries"]})})
    row["notes"] = [p["message"] for p in report["problems"] if p["kind"] == "optional"]
    if probe:
        _code, probed, _elapsed = scan(venv, "--probe")
        row["probes"] = [{"framework": p["framework"], "gpu": p["gpu"], "agrees": p["agrees"],
                          "loaded": sorted(os.path.basename(x) for x in p["loaded"]),
                          "predicted": sorted(os.path.basename(x) for x in p["predicted"]),
                          "findings": p["findings"], "logged": p["logged"]} for p in probed["probes"]]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=os.environ.get("LIBDOCTOR_REAL_VENVS", "/tmp/libdoctor-venvs"))
    parser.add_argument("--install", action="store_true", help="create the venvs that are not there yet")
    parser.add_argument("--probe", action="store_true", help="also run each framework's own device query")
    parser.add_argument("--only", action="append", choices=sorted(SPECS), help="these venvs only (repeatable)")
    parser.add_argument("--out", help="write the rows as JSON here")
    args = parser.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in args.only or list(SPECS):
        venv = root / name
        state = install(venv, name) if args.install else ("ready" if ready(venv, name) else "not installed")
        if state not in ("ready", "installed"):
            print(f"{name}: {state}")
            continue
        row = summary(name, venv, args.probe)
        rows.append(row)
        print(f"{name}: exit {row['exit']}, {row['objects']} objects, scan {row['cold_s']} s cold, "
              f"{row['warm_s']} s warm; next step: {row['next_step']}")
        for framework in row["frameworks"]:
            print(f"  {framework['name']} (CUDA {framework['cuda']}): GPU usable {framework['gpu_usable']}, "
                  f"missing {len(framework['missing'])} {framework['missing']}, "
                  f"{len(framework['predicted'])} CUDA libraries predicted")
        for note in row["notes"]:
            print(f"  note: {note}")
        for probe in row.get("probes", []):
            print(f"  probe: GPU {probe['gpu']}, loaded {len(probe['loaded'])}, predicted {len(probe['predicted'])}, "
                  f"agrees {probe['agrees']}")
            for line in probe["findings"] + [f"logged: {x}" for x in probe["logged"]]:
                print(f"    {line[:160]}")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
