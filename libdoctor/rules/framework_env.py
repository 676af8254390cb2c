"""framework-env: how the frameworks of an environment fit together, the Python and the toolkits.

* tensorflow and tensorflow-gpu both installed (one ``tensorflow/`` folder: the last install wins);
* a CPU-only build on a machine with an NVIDIA driver or device;
* TensorFlow 1.x on a Python it has no wheels for (``gpu/data/tf_build_configs.csv``);
* the CUDA toolkit (``nvcc``, ``CUDA_HOME``) against the CUDA the framework loads: explained, and
  flagged only where ``CUDA_HOME`` points to another CUDA major than the framework's.
"""
from __future__ import annotations

import os
import shutil

from ..gpu.driver import parse_version
from ..gpu.frameworks import tf_table_row
from ..gpu.installs import toolkit_version
from .base import Finding, RuleContext, RuleResult, SimpleRule


def _python_fits(versions: str, python: str) -> bool:
    wanted = parse_version(python)
    for part in versions.replace(" ", "").split(","):
        bounds = [parse_version(b) for b in part.split("-")]
        if wanted and bounds[0] and wanted[:2] >= bounds[0][:2] and wanted[:2] <= (bounds[-1] or bounds[0])[:2]:
            return True
    return False


def _toolkits() -> list[tuple[str, str]]:
    """(where it was named, toolkit root) for CUDA_HOME, CUDA_PATH and the nvcc on PATH."""
    found = []
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            found.append((variable, os.environ[variable]))
    nvcc = shutil.which("nvcc")
    if nvcc:
        found.append(("nvcc on PATH", os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))))
    return found


def check(ctx: RuleContext) -> RuleResult:
    findings = []
    frameworks = ctx.report.frameworks
    names = {f.info.name: f.info for f in frameworks}
    tf_variants = [n for n in ("tensorflow", "tensorflow-gpu", "tensorflow-cpu") if n in names]
    if len(tf_variants) > 1:
        findings.append(Finding("framework-env", "error",
                                f"{' and '.join(names[n].label for n in tf_variants)} are installed together: they "
                                "share one tensorflow/ folder, so the last one installed wins the import (often the "
                                "CPU build); uninstall all but one",
                                objects=tuple(tf_variants)))
    driver = ctx.report.driver
    has_gpu = driver is not None and (driver.present or driver.device_nodes)
    for framework in frameworks:
        info = framework.info
        if info.cuda_build is False and has_gpu:
            findings.append(Finding("framework-env", "warning",
                                    f"{info.label} is a CPU-only build ({info.flavour}) on a machine with an NVIDIA "
                                    "GPU: it never uses the GPU", objects=(info.label,)))
        row = tf_table_row(info.version) if info.name.startswith("tensorflow") else None
        if row and info.python_version and not _python_fits(row["python_versions"], info.python_version):
            findings.append(Finding("framework-env", "error",
                                    f"{info.label} has wheels for Python {row['python_versions']}, this environment "
                                    f"runs Python {info.python_version}",
                                    evidence=("tf_build_configs.csv",), objects=(info.label,)))
        for where, root in _toolkits():
            version = toolkit_version(root)
            if not version or not info.cuda:
                continue
            same_major = version.split(".")[0] == info.cuda.split(".")[0]
            explanation = (f"{where} is the CUDA {version} toolkit at {root} (for compiling); {info.label} loads "
                           f"its own CUDA {info.cuda} runtime; the driver only needs to be new enough for both")
            if where == "CUDA_HOME" and not same_major:
                findings.append(Finding("framework-env", "warning",
                                        f"CUDA_HOME points to CUDA {version} but {info.label} uses CUDA {info.cuda}: "
                                        "extensions built against CUDA_HOME will not match", evidence=(explanation,),
                                        objects=(root,)))
            else:
                findings.append(Finding("framework-env", "info", explanation, objects=(root,)))
    return RuleResult(tuple(findings))


RULE = SimpleRule("framework-env", "frameworks installed together, CPU builds on GPU hosts, Python and toolkit fit",
                  check)
