"""PyTorch: ``torch/version.py`` (``cuda``), its wheels' RPATH into ``site-packages/nvidia/*/lib``,
the preloads of ``torch/__init__.py`` and the lazily loaded libraries (``libcuda.so.1`` through cudart,
cuDNN's sub-libraries through ``libcudnn.so.N``); cuda-facts.md section 3.
"""
from __future__ import annotations

import glob
import os
import re
from typing import Optional

from ...targets import Framework, PythonEnv
from .base import (LAZY, ExpectedLib, FrameworkInfo, FrameworkPlugin, cudnn_sublibs, python_version_of, read_text,
                   requirements)

TORCH_PRELOAD_ORDER = (("cublas", "cublasLt"), ("cublas", "cublas"), ("cudnn", "cudnn"), ("cuda_nvrtc", "nvrtc"), ("cuda_nvrtc", "nvrtc-builtins"),
                       ("cuda_runtime", "cudart"), ("cuda_cupti", "cupti"), ("cufft", "cufft"),
                       ("curand", "curand"), ("nvjitlink", "nvJitLink"), ("cusparse", "cusparse"),
                       ("cusparselt", "cusparseLt"), ("cusolver", "cusolver"), ("nccl", "nccl"),
                       ("nvshmem", "nvshmem_host"), ("cufile", "cufile"))  # torch/__init__.py 2.14.1


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


def torch_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
    text = read_text(os.path.join(site, "torch", "version.py")) or ""
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
        expected.extend(cudnn_sublibs(os.path.join(site, "nvidia", "cudnn", "lib", f"libcudnn.so.{cudnn_major}")))
    return FrameworkInfo(framework.name, version, flavour, os.path.join(site, "torch"), python_version_of(site),
                         cuda, cudnn_major, "torch/version.py" if text else "unknown", cuda is not None if text else None,
                         tuple(expected), torch_preloads(site, cuda) if cuda else (), requirements(framework.location),
                         on_failure="torch.cuda.is_available() is False: PyTorch runs on the CPU")


PROBE = """
import torch
out["version"] = torch.__version__
out["gpu"] = bool(torch.cuda.is_available())
"""

PLUGIN = FrameworkPlugin("torch", "PyTorch", torch_info, PROBE, re.compile(r"/lib(torch|torch_cpu|torch_cuda|c10)\.so"))
