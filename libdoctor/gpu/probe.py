"""``scan --probe``: import the framework in the environment's own python and compare.

It runs framework code, so it is opt-in and time-limited.  The child reports whether a GPU is
usable and every file mapped into it (``/proc/self/maps``); libdoctor compares the CUDA
libraries really loaded with its static prediction, and says where the prediction was wrong.
"""
from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Optional

from ..targets import CUDA_NAME
from .frameworkcheck import FrameworkReport

PROBE_TIMEOUT = 180
PROBE_SCRIPT = r"""
import json, sys
name = sys.argv[1]
out = {"imported": False, "gpu": None, "error": None, "version": None}
try:
    if name == "torch":
        import torch
        out["imported"], out["version"] = True, torch.__version__
        out["gpu"] = bool(torch.cuda.is_available())
    elif name.startswith("tensorflow") or name == "tf-nightly":
        import tensorflow as tf
        out["imported"], out["version"] = True, tf.__version__
        config = getattr(tf, "config", None)
        devices = getattr(config, "list_physical_devices", None) or getattr(
            getattr(config, "experimental", None), "list_physical_devices", None)
        out["gpu"] = bool(devices("GPU")) if devices else bool(tf.test.is_gpu_available())
    elif name in ("jax", "jaxlib"):
        import jax
        out["imported"], out["version"] = True, jax.__version__
        out["gpu"] = any(d.platform == "gpu" for d in jax.devices())
    else:
        out["error"] = "no probe for " + name
except BaseException as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)[:500]
maps = set()
with open("/proc/self/maps") as handle:
    for line in handle:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            maps.add(parts[5].strip())
out["maps"] = sorted(maps)
sys.stdout.write("\n" + json.dumps(out) + "\n")
"""


@dataclass(frozen=True)
class ProbeResult:
    framework: str
    imported: bool
    gpu: Optional[bool]
    error: Optional[str]
    loaded: tuple[str, ...]  # CUDA libraries mapped in the child (real paths)
    predicted: tuple[str, ...]  # CUDA libraries libdoctor predicted (real paths)
    findings: tuple[str, ...]  # where the prediction and the run differ

    @property
    def agrees(self) -> bool:
        return not self.findings


def _cuda_paths(paths: list[str]) -> set[str]:
    return {os.path.realpath(p) for p in paths if CUDA_NAME.match(os.path.basename(p))}


def run_probe(python: str, framework: FrameworkReport, timeout: int = PROBE_TIMEOUT) -> ProbeResult:
    info = framework.info
    predicted = _cuda_paths([p for _n, p, _v in framework.cuda_sources])
    lazily = _cuda_paths([c.path for c in framework.checks if c.path and c.lib.role == "lazy"])
    try:
        done = subprocess.run([python, "-c", PROBE_SCRIPT, info.name], capture_output=True, text=True,
                              timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return ProbeResult(info.label, False, None, f"timed out after {timeout} s", (), tuple(sorted(predicted)),
                           ("the probe timed out: nothing compared",))
    except (OSError, ValueError, IndexError) as exc:
        return ProbeResult(info.label, False, None, f"probe failed: {exc}", (), tuple(sorted(predicted)),
                           ("the probe failed: nothing compared",))
    loaded = _cuda_paths(data.get("maps", []))
    findings = []
    for path in sorted(loaded - predicted):
        findings.append(f"loaded but not predicted: {path} (the prediction is incomplete)")
    for path in sorted(predicted - loaded - lazily):
        findings.append(f"predicted but not loaded at import: {path}")
    if data.get("gpu") is not None and framework.gpu_usable is not None and data["gpu"] != framework.gpu_usable:
        findings.append(f"the framework says GPU usable: {data['gpu']}; libdoctor predicted {framework.gpu_usable}")
    return ProbeResult(info.label, bool(data.get("imported")), data.get("gpu"), data.get("error"),
                       tuple(sorted(loaded)), tuple(sorted(predicted)), tuple(findings))
