"""CuPy (``cupy-cudaNNx``): how it really finds its CUDA libraries.

Read from the installed files (cupy-cuda12x 14.2.0, VERIFIED here): cudart is linked statically;
NVRTC is a gate (every kernel, even ``a * 2``, is compiled by it) and is dlopened through
cuda-pathfinder; the other libraries are DT_NEEDED of extension modules imported on first use
(``cupy_backends/cuda/libs/cublas*.so`` needs ``libcublas.so.12``), and
``cupy_backends/cuda/libs/__init__.py`` has cuda-pathfinder load each one first, by full path.
cuda-pathfinder's order (loader-facts.md section 5): the NVIDIA wheels in site-packages, conda
(``$CONDA_PREFIX/lib``), the loader's own search, then ``CUDA_HOME``/``CUDA_PATH``.  What it finds
in the wheels or conda is what the extension modules get: modelled as preloads by full path, with
each library's dependencies first (cuSOLVER needs nvJitLink, cuSPARSE and cuBLAS).
cuTENSOR, cuSPARSELt, NCCL and NVTX serve optional modules: their absence is a note.
"""
from __future__ import annotations

import glob
import os
from functools import partial
import re
from typing import Optional

from ...targets import Framework, PythonEnv
from ...loader.plainfiles import parse_json
from ..cudatable import soname_for
from .base import (GATE, LAZY, ExpectedLib, FrameworkInfo, FrameworkPlugin, installed_wheel_file, optional_objects,
                   python_version_of, read_text, requirements)

# Dependencies before dependants, as cuda-pathfinder's load_dependencies does; the optional modules' too.
PATHFINDER_FAMILIES = ("nvJitLink", "cublasLt", "cublas", "cusparse", "cusolver", "curand", "cufft", "nvrtc", "nccl",
                       "cusparseLt")
OPTIONAL_FEATURES = ((r"/cupy_backends/cuda/libs/cutensor\.|/cupyx/_cutensor\.|/cupy/cuda/cutensor\.",
                      "cuTENSOR (cupyx.cutensor)"),
                     (r"/cupy_backends/cuda/libs/cusparselt\.", "cuSPARSELt (cupy_backends.cuda.libs.cusparselt)"),
                     (r"/cupy_backends/cuda/libs/nccl\.|/cupy/cuda/nccl\.", "NCCL (cupy.cuda.nccl, multi-GPU)"),
                     (r"/cupy_backends/cuda/libs/nvtx\.|/cupy/cuda/nvtx\.", "NVTX ranges (cupy.cuda.nvtx)"),
                     (r"/cupy/cuda/cudnn\.|/cupy_backends/cuda/libs/cudnn\.", "cuDNN (cupy.cuda.cudnn)"))


def cuda_major_of(name: str, site: str) -> Optional[int]:
    """``cupy-cuda12x`` -> 12; a source build: ``cupy/.data/_wheel.json`` or nothing."""
    match = re.match(r"cupy-cuda(\d+)", name)
    if match:
        return int(match.group(1)[:2])
    try:
        config = parse_json(read_text(os.path.join(site, "cupy", ".data", "_wheel.json")) or "{}")
    except ValueError:
        return None
    found = re.match(r"(\d+)", str(config.get("cuda", "") if isinstance(config, dict) else ""))
    return int(found.group(1)) if found else None


def pathfinder_file(site: str, prefix: str, soname: str, major: int) -> Optional[str]:
    """Where cuda-pathfinder finds ``soname`` before the loader's own search: a wheel, then conda."""
    found = installed_wheel_file(site, soname, major)
    if found:
        return found
    conda = os.path.join(prefix, "lib", soname)
    return conda if os.path.isdir(os.path.join(prefix, "conda-meta")) and os.path.isfile(conda) else None


def nvrtc_builtins(nvrtc: str, site: str) -> Optional[str]:
    """``libnvrtc.so.12`` -> ``libnvrtc-builtins.so.12.9``: NVRTC dlopens (through its RUNPATH ``$ORIGIN``) the
    builtins of its own release, read from the real file name or the wheel's version."""
    match = re.search(r"libnvrtc\.so\.(\d+)\.(\d+)", os.path.basename(os.path.realpath(nvrtc)))
    if match is None and nvrtc.startswith(site + os.sep):
        wheels = glob.glob(os.path.join(site, "nvidia_cuda_nvrtc*.dist-info"))
        match = next(filter(None, (re.search(r"-(\d+)\.(\d+)[.\d]*\.dist-info$", w) for w in wheels)), None)
    return f"libnvrtc-builtins.so.{match.group(1)}.{match.group(2)}" if match else None


def cupy_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
    major = cuda_major_of(framework.name, site)
    make = partial(FrameworkInfo, name=framework.name, version=framework.version,
                   package_dir=os.path.join(site, "cupy"),
                python_version=python_version_of(site), requirements=requirements(framework.location),
                optional_objects=optional_objects(framework.files, OPTIONAL_FEATURES))
    if major is None:
        return make(flavour=framework.name, cuda=None, cudnn=None, built_from="unknown", cuda_build=None)
    sonames = {family: soname_for(family, f"{major}.0") for family in PATHFINDER_FAMILIES}
    preloads = tuple(p for soname in sonames.values() if soname
                     if (p := pathfinder_file(site, env.prefix, soname, major)))
    nvrtc = sonames["nvrtc"]
    expected = [ExpectedLib(nvrtc, "nvrtc", GATE, None)] if nvrtc else []
    found_nvrtc = next((p for p in preloads if os.path.basename(p) == nvrtc), None)
    builtins = nvrtc_builtins(found_nvrtc, site) if found_nvrtc else None
    if builtins and found_nvrtc:
        expected.append(ExpectedLib(builtins, "nvrtc", LAZY, found_nvrtc))  # at the first kernel compiled
        beside = os.path.join(os.path.dirname(found_nvrtc), builtins)
        if os.path.isfile(beside):  # cuda-pathfinder loads it too: a CUDA 13 wheel's NVRTC has no RUNPATH
            preloads += (beside,)
    expected.append(ExpectedLib("libcuda.so.1", "cuda driver", GATE, None))
    return make(flavour=f"{framework.name} (CUDA {major}.x)", cuda=f"{major}.x", cudnn=None,
                         built_from="distribution name", cuda_build=True, expected=tuple(expected), preloads=preloads,
                         on_failure="CuPy cannot compile or run any kernel",
                         install=f"pip install '{framework.name}[ctk]=={framework.version}'" if major >= 12 else None)


PROBE = """
import cupy
out["version"] = cupy.__version__
for name in ("nvrtc", "cublas", "cusolver", "cusparse", "curand", "cufft"):
    try:  # the attribute, as cupy.fft or cupy.linalg reach it: cuda-pathfinder loads the library first
        module = getattr(cupy.cuda, name)
        if name == "nvrtc":
            module.getVersion()
    except Exception as exc:
        log("CuPy could not load " + name + ": " + type(exc).__name__ + ": " + str(exc)[:300])
import cupy_backends.cuda.libs as libs
for name in ("nccl", "cutensor", "cusparselt"):  # optional modules: their absence is not a load failure
    try:
        getattr(libs, name)
    except Exception as exc:
        log("CuPy optional module " + name + " unavailable: " + type(exc).__name__)
try:
    out["gpu"] = cupy.cuda.runtime.getDeviceCount() > 0
except Exception as exc:
    log("CuPy: no usable device: " + type(exc).__name__ + ": " + str(exc)[:300])
    out["gpu"] = False
"""

PLUGIN = FrameworkPlugin("cupy", "CuPy", cupy_info, PROBE, re.compile(r"/cupy/_core/core\.[^/]*so$"))
