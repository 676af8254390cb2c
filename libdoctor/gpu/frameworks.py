"""What each GPU framework of an environment was built for, and what it loads at run time.

Read from disk, never imported (cuda-facts.md sections 2 and 3):

* TensorFlow: ``cuda_config.h`` (``TF_CUDA_VERSION``, ``TF_CUDNN_VERSION``, per-library
  versions), else ``build_info.py``, else ``data/tf_build_configs.csv``.  From 1.14 on TF loads
  every CUDA library with ``dlopen("lib<name>.so.<version>")`` from
  ``libtensorflow_framework.so.N``; the names follow dso_loader's rule and the CUDA soname table.
* PyTorch: ``torch/version.py`` (``cuda``), its wheels' RPATH into ``site-packages/nvidia/*/lib``,
  the preloads of ``torch/__init__.py`` and the lazily loaded libraries (``libcuda.so.1`` through
  cudart, cuDNN's sub-libraries through ``libcudnn.so.N``).
"""
from __future__ import annotations

import csv
import glob
import io
import os
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Optional

from ..targets import Framework, PythonEnv
from .cudatable import soname_for
from .driver import parse_version
from .impostor import BuiltFor, built_for

GATE = "gate"  # without it the framework registers no GPU and runs on the CPU
OPTIONAL = "optional"  # a failure only warns (profiler, NCCL, TensorRT)
LAZY = "lazy"  # loaded on first use; the GPU path fails then

TF_DLOPEN_FROM = (1, 14)
TF_NO_CURAND_FROM = (2, 14)
TORCH_PRELOAD_ORDER = (("cublas", "cublasLt"), ("cublas", "cublas"), ("cudnn", "cudnn"), ("cuda_nvrtc", "nvrtc"), ("cuda_nvrtc", "nvrtc-builtins"),
                       ("cuda_runtime", "cudart"), ("cuda_cupti", "cupti"), ("cufft", "cufft"),
                       ("curand", "curand"), ("nvjitlink", "nvJitLink"), ("cusparse", "cusparse"),
                       ("cusparselt", "cusparseLt"), ("cusolver", "cusolver"), ("nccl", "nccl"),
                       ("nvshmem", "nvshmem_host"), ("cufile", "cufile"))  # torch/__init__.py 2.14.1
CUDNN_SUBLIBS = {"8": ("ops_infer", "ops_train", "cnn_infer", "cnn_train", "adv_infer", "adv_train"),
                 "9": ("graph", "ops", "cnn", "adv", "engines_precompiled", "engines_runtime_compiled", "heuristic")}


@dataclass(frozen=True)
class ExpectedLib:
    soname: str
    family: str
    role: str  # gate | optional | lazy
    requester: Optional[str]  # the object that dlopens it (None: the framework's own closure decides)
    loaded_by: Optional[str] = None  # the extension module python dlopens, which brings ``requester`` in


@dataclass(frozen=True)
class FrameworkInfo:
    name: str
    version: str
    flavour: str
    package_dir: Optional[str]
    python_version: Optional[str]
    cuda: Optional[str]
    cudnn: Optional[str]
    built_from: str  # where cuda/cudnn were read
    cuda_build: Optional[bool]
    expected: tuple[ExpectedLib, ...] = ()
    preloads: tuple[str, ...] = ()  # loaded by full path before anything else (torch)
    requirements: tuple[str, ...] = ()  # Requires-Dist lines naming nvidia wheels
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @cached_property
    def built_for(self) -> BuiltFor:
        return built_for(self.label, self.cuda, self.cudnn, self.requirements)


def python_version_of(site_packages: str) -> Optional[str]:
    match = re.search(r"python(\d+\.\d+)", site_packages)
    return match.group(1) if match else None


def _read(path: str, limit: int = 1 << 20) -> Optional[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read(limit)
    except OSError:
        return None


def _requirements(dist_info: str) -> tuple[str, ...]:
    text = _read(os.path.join(dist_info, "METADATA")) or _read(os.path.join(dist_info, "PKG-INFO")) or ""
    return tuple(modern_requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
                 if line.startswith("Requires-Dist:") and re.search(r"nvidia|cuda-toolkit", line))


def modern_requirement(requirement: str) -> str:
    """``nvidia-cublas-cu12 (==12.2.5.6); extra == "and-cuda"`` (old metadata) -> ``nvidia-cublas-cu12==12.2.5.6; ...``,
    the form pip accepts on a command line."""
    return re.sub(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)\s*\(([^)]*)\)", r"\1\2", requirement)


# -- TensorFlow --------------------------------------------------------------------------

def _tf_package_dir(site: str) -> Optional[str]:
    for name in ("tensorflow_core", "tensorflow"):  # 1.15 to 2.1 keep the real package in tensorflow_core
        folder = os.path.join(site, name)
        if glob.glob(os.path.join(folder, "libtensorflow_framework.so*")) or os.path.isdir(
                os.path.join(folder, "python")):
            return folder
    return None


def read_cuda_config(package_dir: str) -> dict[str, str]:
    for relative in ("include/external/local_config_cuda/cuda/cuda/cuda_config.h",
                     "include/third_party/gpus/cuda/cuda_config.h"):
        text = _read(os.path.join(package_dir, relative))
        if text:
            return dict(re.findall(r'#define\s+(TF_\w+)\s+"([^"]*)"', text))
    return {}


def read_build_info(package_dir: str) -> dict[str, str]:
    text = _read(os.path.join(package_dir, "python/platform/build_info.py")) or ""
    info = {}
    for key in ("cuda_version", "cudnn_version", "cuda_version_number", "cudnn_version_number"):
        match = re.search(rf"['\"]?{key}['\"]?\s*[:=]\s*['\"]([^'\"]*)['\"]", text)
        if match:
            info[key.replace("_number", "")] = match.group(1)
    match = re.search(r"['\"]?is_cuda_build['\"]?\s*[:=]\s*(True|False)", text)
    if match:
        info["is_cuda_build"] = match.group(1)
    return info


@lru_cache(maxsize=1)
def tf_build_table() -> tuple[dict, ...]:
    from importlib import resources

    text = resources.files("libdoctor.gpu").joinpath("data/tf_build_configs.csv").read_text(encoding="utf-8")
    return tuple(csv.DictReader(io.StringIO(text)))


def tf_table_row(version: str) -> Optional[dict]:
    wanted = parse_version(version)
    rows = [r for r in tf_build_table() if parse_version(r["tf_version"]) and wanted
            and parse_version(r["tf_version"])[:2] == wanted[:2]]
    return rows[0] if rows else None


def tf_sonames(config: dict[str, str], cuda: str, cudnn: Optional[str]) -> dict[str, str]:
    """dso_loader's ``lib<name>.so.<version>`` (cuda-facts 2.2): per-library defines first, then the rule."""
    version = parse_version(cuda) or (0, 0)
    names: dict[str, str] = {}

    def lib_version(define: str, family: str) -> Optional[str]:
        value = config.get(define) or config.get("TF_CUDA_LIB_VERSION")
        if value:
            return f"lib{family}.so.{value}"
        if version < (10, 1):
            return f"lib{family}.so.{version[0]}.{version[1]}"
        return soname_for(family, cuda)

    cudart = config.get("TF_CUDART_VERSION")
    names["cudart"] = f"libcudart.so.{cudart}" if cudart else (
        f"libcudart.so.{version[0]}.{version[1]}" if version < (11, 0) else soname_for("cudart", cuda) or "")
    for family, define in (("cublas", "TF_CUBLAS_VERSION"), ("cufft", "TF_CUFFT_VERSION"),
                           ("curand", "TF_CURAND_VERSION"), ("cusolver", "TF_CUSOLVER_VERSION"),
                           ("cusparse", "TF_CUSPARSE_VERSION")):
        names[family] = lib_version(define, family) or ""
    if version >= (10, 1):
        names["cublasLt"] = names["cublas"].replace("libcublas.", "libcublasLt.")
    cupti = config.get("TF_CUPTI_VERSION")
    names["cupti"] = f"libcupti.so.{cupti}" if cupti else (
        f"libcupti.so.{version[0]}.{version[1]}" if version < (12, 0) else f"libcupti.so.{version[0]}")
    if cudnn:
        names["cudnn"] = f"libcudnn.so.{cudnn.split('.')[0]}"
    if config.get("TF_NCCL_VERSION"):
        names["nccl"] = f"libnccl.so.{config['TF_NCCL_VERSION'].split('.')[0]}"
    return {k: v for k, v in names.items() if v}


def tensorflow_info(framework: Framework, site: str) -> FrameworkInfo:
    package = _tf_package_dir(site)
    config = read_cuda_config(package) if package else {}
    build = read_build_info(package) if package else {}
    row = tf_table_row(framework.version)
    cuda = config.get("TF_CUDA_VERSION") or build.get("cuda_version") or (row or {}).get("cuda_tested")
    cudnn = config.get("TF_CUDNN_VERSION") or build.get("cudnn_version") or (row or {}).get("cudnn_tested")
    source = ("cuda_config.h" if config.get("TF_CUDA_VERSION") else "build_info.py" if build.get("cuda_version")
              else "tf_build_configs.csv" if row else "unknown")
    cpu_only = framework.name == "tensorflow-cpu" or build.get("is_cuda_build") == "False"
    version = parse_version(framework.version) or (0,)
    flavour = framework.name + (" (tensorflow_core layout)" if package and package.endswith("tensorflow_core") else "")
    expected: list[ExpectedLib] = []
    notes = []
    requester = loaded_by = None
    if package:
        candidates = sorted(glob.glob(os.path.join(package, "libtensorflow_framework.so*")))
        requester = candidates[0] if candidates else None
        pywrap = os.path.join(package, "python", "_pywrap_tensorflow_internal.so")
        loaded_by = pywrap if requester and os.path.isfile(pywrap) else None
    if cuda and not cpu_only and version >= TF_DLOPEN_FROM:
        names = tf_sonames(config, cuda, cudnn)
        for family, soname in names.items():
            if family == "curand" and version >= TF_NO_CURAND_FROM:
                continue
            role = OPTIONAL if family in ("cupti", "nccl") else GATE
            expected.append(ExpectedLib(soname, family, role, requester, loaded_by))
        expected.append(ExpectedLib("libcuda.so.1", "cuda driver", GATE, requester, loaded_by))
    elif version < TF_DLOPEN_FROM:
        notes.append("TensorFlow before 1.14 links CUDA through DT_NEEDED: import fails outright when a library "
                     "is missing")
    return FrameworkInfo(framework.name, framework.version, flavour, package, python_version_of(site), cuda, cudnn,
                         source, None if cuda is None and not cpu_only else not cpu_only, tuple(expected), (),
                         _requirements(framework.location), tuple(notes))


# -- PyTorch -----------------------------------------------------------------------------

def torch_preloads(site: str, cuda: Optional[str]) -> tuple[str, ...]:
    """The wheel libraries ``_preload_cuda_deps`` loads by full path, in its order."""
    paths = [os.path.join(site, "torch", "lib", "libtorch_global_deps.so")]
    major = (cuda or "").split(".")[0]
    for folder, name in TORCH_PRELOAD_ORDER:
        for where in (f"nvidia/{folder}/lib", f"nvidia/cu{major}/lib"):
            hits = sorted(glob.glob(os.path.join(site, where, f"lib{name}.so.*[0-9]")))
            if hits:
                paths.append(hits[0])
                break
    return tuple(p for p in paths if os.path.exists(p))


def torch_info(framework: Framework, site: str) -> FrameworkInfo:
    text = _read(os.path.join(site, "torch", "version.py")) or ""
    full = re.search(r"__version__\s*=\s*['\"]([^'\"]+)", text)
    cuda_match = re.search(r"^cuda\s*(?::[^=]*)?=\s*['\"]([^'\"]+)", text, re.M)
    version = full.group(1) if full else framework.version
    cuda = cuda_match.group(1) if cuda_match else None
    flavour = "+cpu" if "+cpu" in version else (f"+{version.split('+')[1]}" if "+" in version else "default")
    cudnn_dir = glob.glob(os.path.join(site, "nvidia", "cudnn", "lib", "libcudnn.so.*"))
    cudnn_major = None
    for path in cudnn_dir:
        match = re.search(r"libcudnn\.so\.(\d+)$", path)
        if match:
            cudnn_major = match.group(1)
    expected: list[ExpectedLib] = []
    if cuda:
        expected.append(ExpectedLib("libcuda.so.1", "cuda driver", LAZY, None))
        for sub in CUDNN_SUBLIBS.get(cudnn_major or "", ()):
            expected.append(ExpectedLib(f"libcudnn_{sub}.so.{cudnn_major}", "cudnn", LAZY,
                                        os.path.join(site, "nvidia", "cudnn", "lib", f"libcudnn.so.{cudnn_major}")))
    return FrameworkInfo(framework.name, version, flavour, os.path.join(site, "torch"), python_version_of(site),
                         cuda, cudnn_major, "torch/version.py" if text else "unknown", cuda is not None if text else None,
                         tuple(expected), torch_preloads(site, cuda) if cuda else (), _requirements(framework.location))


def framework_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
    if framework.name.startswith("tensorflow") or framework.name == "tf-nightly":
        return tensorflow_info(framework, site)
    if framework.name == "torch":
        return torch_info(framework, site)
    return FrameworkInfo(framework.name, framework.version, framework.name, None, python_version_of(site), None,
                         None, "unknown", None, (), (), _requirements(framework.location))
