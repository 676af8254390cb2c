"""PyTorch: ``torch/version.py`` (``cuda``), its wheels' RPATH into ``site-packages/nvidia/*/lib``,
the preloads of ``torch/__init__.py`` and the lazily loaded libraries (``libcuda.so.1`` through cudart,
cuDNN's sub-libraries through ``libcudnn.so.N``); cuda-facts.md section 3.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Optional

from ...targets import Framework, PythonEnv
from ..driver import parse_version
from ..sequence import PreloadPlan
from ..versions import SAME_MAJOR_AT_LEAST, VersionRule
from .base import (LAZY, ExpectedLib, FrameworkInfo, FrameworkPlugin, python_version_of, read_text,
                   requirement_rule, requirements)

# (nvidia wheel folder, library) in torch/__init__.py's order; cuda-facts.md 3.2 (2.14.1, VERIFIED)
TORCH_PRELOAD_ORDER = (("cublas", "cublasLt"), ("cublas", "cublas"), ("cudnn", "cudnn"), ("cuda_nvrtc", "nvrtc"),
                       ("cuda_nvrtc", "nvrtc-builtins"), ("cuda_runtime", "cudart"), ("cuda_cupti", "cupti"),
                       ("cufft", "cufft"), ("curand", "curand"), ("nvjitlink", "nvJitLink"), ("cusparse", "cusparse"),
                       ("cusparselt", "cusparseLt"), ("cusolver", "cusolver"), ("nccl", "nccl"),
                       ("nvshmem", "nvshmem_host"), ("cufile", "cufile"))
# torch 2.0's dict in _load_global_deps (pytorch#94355): preloaded only when libtorch_global_deps fails
TORCH_2_0_ORDER = (("cublas", "cublas"), ("cudnn", "cudnn"), ("cuda_nvrtc", "nvrtc"), ("cuda_runtime", "cudart"),
                   ("cuda_cupti", "cupti"), ("cufft", "cufft"), ("curand", "curand"), ("cusolver", "cusolver"),
                   ("cusparse", "cusparse"), ("nccl", "nccl"), ("nvtx", "nvToolsExt"))


@dataclass(frozen=True)
class TorchSequence:
    """How one range of torch releases loads its CUDA libraries (``torch/__init__.py`` ``_load_global_deps``)."""

    since: tuple[int, ...]
    described: str
    on_failure: tuple[tuple[str, str], ...] = ()
    on_success: tuple[tuple[str, str], ...] = ()
    success_when: str = ""  # what libtorch_global_deps must have mapped for the preload after success


TORCH_SEQUENCES = (
    TorchSequence((0,), "torch before 1.13: CUDA libraries bundled in torch/lib, found through its RPATH"),
    TorchSequence((1, 13), "torch 1.13: cuBLAS and cuDNN wheels preloaded only when libtorch_global_deps fails "
                  "(pytorch#88882)", (("cublas", "cublas"), ("cudnn", "cudnn"))),
    TorchSequence((2, 0), "torch 2.0-2.5: the NVIDIA wheels preloaded only when libtorch_global_deps fails "
                  "(pytorch#94355)", TORCH_2_0_ORDER),
    TorchSequence((2, 6), "torch 2.6-2.9: NVRTC and nvJitLink preloaded after libtorch_global_deps when cudart "
                  "comes from a wheel (pytorch#141063, #145582)", TORCH_2_0_ORDER + (("nvjitlink", "nvJitLink"),),
                  (("cuda_nvrtc", "nvrtc"), ("nvjitlink", "nvJitLink")),
                  r"/nvidia/(cuda_runtime|cu\d+)/lib/libcudart\.so"),
    TorchSequence((2, 10), "torch 2.10 and later: every NVIDIA wheel preloaded once cudart is mapped "
                  "(pytorch#167046; cuda-facts 3.2)", TORCH_PRELOAD_ORDER, TORCH_PRELOAD_ORDER, r"/libcudart\.so"),
)


def torch_sequence(version: str) -> TorchSequence:
    numbers = parse_version(version) or (0,)
    return [s for s in TORCH_SEQUENCES if numbers >= s.since][-1]


def wheel_paths(site: str, cuda: Optional[str], order: tuple[tuple[str, str], ...]) -> tuple[str, ...]:
    """Where ``_preload_cuda_deps`` finds each library: ``nvidia/<folder>/lib``, then ``nvidia/cu<major>/lib``."""
    major = (cuda or "").split(".")[0]
    paths = []
    for folder, name in order:
        for where in (f"nvidia/{folder}/lib", f"nvidia/cu{major}/lib"):
            hits = sorted(glob.glob(os.path.join(site, where, f"lib{name}.so.*[0-9]")))
            if hits:
                paths.append(hits[0])
                break
    return tuple(paths)


def torch_plan(site: str, cuda: Optional[str], version: str) -> PreloadPlan:
    sequence = torch_sequence(version)
    return PreloadPlan(os.path.join(site, "torch", "lib", "libtorch_global_deps.so"),
                       wheel_paths(site, cuda, sequence.on_success), sequence.success_when,
                       wheel_paths(site, cuda, sequence.on_failure), sequence.described)


# The cuDNN a torch release bundled (and was compiled with) before the wheels pinned it: pytorch's RELEASE.md
# "Release Compatibility Matrix" (cuda-facts.md 3.3).
BUNDLED_CUDNN = {(1, 12): "8.3.2"}
CUDNN_CHECK = ("PyTorch raises 'cuDNN version incompatibility' at the first cuDNN use (torch/backends/cudnn) "
               "and cuDNN is off")


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
    reqs = requirements(framework.location)
    rule = requirement_rule(reqs, "cudnn", SAME_MAJOR_AT_LEAST, CUDNN_CHECK, f"torch {version}")
    major_minor = (parse_version(version) or (0, 0))[:2]
    bundled = BUNDLED_CUDNN.get((major_minor[0], major_minor[1]) if len(major_minor) == 2 else (0, 0))
    if rule is None and bundled and cuda:
        rule = VersionRule("cudnn", parse_version(bundled) or (), SAME_MAJOR_AT_LEAST,
                           f"torch {version} was compiled with cuDNN {bundled} (RELEASE.md)", CUDNN_CHECK)
    plan = torch_plan(site, cuda, version) if cuda else None
    return FrameworkInfo(framework.name, version, flavour, os.path.join(site, "torch"), python_version_of(site),
                         cuda, cudnn_major, "torch/version.py" if text else "unknown",
                         cuda is not None if text else None,
                         tuple(expected), plan.every_path if plan else (), reqs,
                         on_failure="torch.cuda.is_available() is False: PyTorch runs on the CPU",
                         version_rules=(rule,) if rule else (), sequence=plan.described if plan else "",
                         preload_plan=plan)


PROBE = """
import torch
out["version"] = torch.__version__
out["gpu"] = bool(torch.cuda.is_available())
"""

PLUGIN = FrameworkPlugin("torch", "PyTorch", torch_info, PROBE, re.compile(r"/lib(torch|torch_cpu|torch_cuda|c10)\.so"))
