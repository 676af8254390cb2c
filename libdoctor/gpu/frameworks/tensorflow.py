"""TensorFlow: the CUDA build and the libraries ``libtensorflow_framework`` dlopens.

Read from disk, never imported (cuda-facts.md sections 2 and 3): ``cuda_config.h``
(``TF_CUDA_VERSION``, ``TF_CUDNN_VERSION``, per-library versions), else ``build_info.py``, else
``data/tf_build_configs.csv``.  From 1.14 on TF loads every CUDA library with
``dlopen("lib<name>.so.<version>")`` from ``libtensorflow_framework.so.N``; the names follow
dso_loader's rule and the CUDA soname table.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import re
from functools import lru_cache
from typing import Optional

from ...targets import Framework, PythonEnv
from ..cudatable import soname_for
from ..driver import parse_version
from ..versions import SAME_MAJOR_AT_LEAST, VersionRule, parse
from .base import (GATE, OPTIONAL, ExpectedLib, FrameworkInfo, FrameworkPlugin, python_version_of, read_text,
                   requirement_rule, requirements)

TF_DLOPEN_FROM = (1, 14)
TF_NO_CURAND_FROM = (2, 14)
OPTIONAL_FEATURES = {"cupti": "profiler (CUPTI)", "nccl": "multi-GPU collectives (NCCL)"}


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
        text = read_text(os.path.join(package_dir, relative))
        if text:
            return dict(re.findall(r'#define\s+(TF_\w+)\s+"([^"]*)"', text))
    return {}


def read_build_info(package_dir: str) -> dict[str, str]:
    text = read_text(os.path.join(package_dir, "python/platform/build_info.py")) or ""
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
    rows = [r for r in tf_build_table() if wanted and (parse_version(r["tf_version"]) or ())[:2] == wanted[:2]]
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


def tensorflow_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
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
            feature = OPTIONAL_FEATURES.get(family)
            expected.append(ExpectedLib(soname, family, OPTIONAL if feature else GATE, requester, loaded_by,
                                        feature))
        expected.append(ExpectedLib("libcuda.so.1", "cuda driver", GATE, requester, loaded_by))
    elif version < TF_DLOPEN_FROM:
        notes.append("TensorFlow before 1.14 links CUDA through DT_NEEDED: import fails outright when a library "
                     "is missing")
    reqs = requirements(framework.location)
    with_minor = _with_minor(cudnn, (row or {}).get("cudnn_tested"))
    rule_source = source if with_minor == cudnn else f"{source} names {cudnn}; tf_build_configs.csv: {with_minor}"
    rule = cudnn_rule(reqs, with_minor, rule_source, framework.version)
    return FrameworkInfo(framework.name, framework.version, flavour, package, python_version_of(site), cuda, cudnn,
                         source, None if cuda is None and not cpu_only else not cpu_only, tuple(expected), (),
                         reqs, tuple(notes),
                         on_failure="TensorFlow registers no GPU and runs on the CPU",
                         install=and_cuda_hint(framework), version_rules=(rule,) if rule else (),
                         sequence=f"TensorFlow {'1.14+' if version >= TF_DLOPEN_FROM else 'before 1.14'}: "
                                  + ("libtensorflow_framework dlopens each CUDA library by name" if
                                     version >= TF_DLOPEN_FROM else "CUDA linked through DT_NEEDED"))


CUDNN_CHECK = ("TensorFlow logs 'Loaded runtime CuDNN library: X but source was compiled with: Y' and every "
               "convolution fails (cuda-facts.md 7 row 8)")


def _with_minor(cudnn: Optional[str], tested: Optional[str]) -> Optional[str]:
    """The build's cuDNN with its minor: cuda_config.h often names only the major ("8"); the tested
    configuration of that release names the minor ("8.1")."""
    if cudnn and "." not in cudnn and tested and tested.split(".")[0] == cudnn and "." in tested:
        return tested
    return cudnn


def cudnn_rule(reqs: tuple[str, ...], cudnn: Optional[str], source: str, version: str) -> Optional[VersionRule]:
    """TF wants the cuDNN major it was compiled with and at least its minor: the ``and-cuda`` pin, else the
    build configuration when it names a minor."""
    pinned = requirement_rule(reqs, "cudnn", SAME_MAJOR_AT_LEAST, CUDNN_CHECK, f"tensorflow {version}")
    built = parse(cudnn or "")
    if pinned is not None or built is None or len(built) < 2:
        return pinned
    return VersionRule("cudnn", built, SAME_MAJOR_AT_LEAST, f"tensorflow {version} was compiled with cuDNN {cudnn} "
                       f"({source})", CUDNN_CHECK)


def and_cuda_hint(framework: Framework) -> Optional[str]:
    """TF 2.14+ ships its CUDA libraries through the ``and-cuda`` extra."""
    text = read_text(os.path.join(framework.location, "METADATA")) or ""
    return f"pip install '{framework.name}[and-cuda]=={framework.version}'" if "and-cuda" in text else None


PROBE = """
import tensorflow as tf
out["version"] = tf.__version__
config = getattr(tf, "config", None)
devices = getattr(config, "list_physical_devices", None) or getattr(
    getattr(config, "experimental", None), "list_physical_devices", None)
out["gpu"] = bool(devices("GPU")) if devices else bool(tf.test.is_gpu_available())
"""

PLUGIN = FrameworkPlugin("tensorflow", "TensorFlow", tensorflow_info, PROBE,
                         re.compile(r"/(libtensorflow_framework|libtensorflow_cc|_pywrap_tensorflow_internal)\.so"))
