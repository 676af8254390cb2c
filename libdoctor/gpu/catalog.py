"""One typed record per CUDA-family library: where it is shipped, what it loads itself, how its version is told.

The shape follows cuda-pathfinder's descriptor catalog (one record per library, search steps as data).
The soname history per CUDA release stays in ``data/cuda_sonames.csv`` (rows citing NVIDIA's and
TensorFlow's sources, read by :mod:`.cudatable`); everything else about a library lives here, so a new
library (or a CUDA 14 wheel folder) is one record.

Sources: cuda-facts.md section 3.1 (wheel folders, the cu13 unified folder, which wheels keep a
``-cuNN`` suffix), section 4 (cuDNN sub-libraries), section 7 row 12 (cuDNN 8 dlopens the unversioned
``libnvrtc.so``), section 3.1 (``libcudnn_graph`` dlopens ``libnvrtc.so.<CUDA major>``; libcusparse and
libcusolver NEED libnvJitLink), NVRTC's ``libnvrtc-builtins.so.<major>.<minor>`` (cuda-facts 3.1 table,
pytorch#145582), the version functions of each library's public header.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

GATE_ROLE, LAZY_ROLE = "gate", "lazy"


@dataclass(frozen=True)
class OwnDlopen:
    """A library the record's library loads itself with ``dlopen(name)`` at run time.

    ``name`` may hold ``{major}`` (the loading library's soname major), ``{cuda_major}`` and ``{release}``
    (its own ``major.minor``, read from its real version); ``majors``: the soname majors that do it."""

    name: str
    majors: tuple[str, ...]
    why: str
    beside_first: bool = False  # the library looks in its own folder before the loader's search


@dataclass(frozen=True)
class VersionFunction:
    """The call that returns a library's version, as frameworks ask it.

    ``style``: ``ret`` (returns the encoded number), ``out`` (one ``int *``), ``two`` (``int *major, int *minor``),
    ``property`` (``(libraryPropertyType, int *)`` asked for MAJOR, MINOR and PATCH)."""

    symbol: str
    style: str


@dataclass(frozen=True)
class LibraryRecord:
    family: str  # as cuda_sonames.csv names it
    display: str  # "cuDNN"
    wheel: Optional[str] = None  # the pip package without its -cuNN suffix
    wheel_dir: Optional[str] = None  # its folder under site-packages/nvidia (cu12 layout)
    toolkit_extra: Optional[str] = None  # the cuda-toolkit[...] extra that brings it
    suffixed_from_13: bool = False  # keeps the -cuNN suffix and its own folder from CUDA 13 on
    conda: tuple[str, ...] = ()  # conda packages that ship it (conda-meta/<name>-<version>-<build>.json)
    needs: tuple[str, ...] = ()  # families in its DT_NEEDED that come from another package
    dlopens: tuple[OwnDlopen, ...] = ()
    version: Optional[VersionFunction] = None

    def own_dlopens(self, major: str) -> tuple[OwnDlopen, ...]:
        return tuple(d for d in self.dlopens if major in d.majors)


_TOOLKIT = ("cudatoolkit", "cuda-toolkit")
_CUDNN8_SUBS = ("ops_infer", "ops_train", "cnn_infer", "cnn_train", "adv_infer", "adv_train")
_CUDNN9_SUBS = ("graph", "ops", "cnn", "adv", "engines_precompiled", "engines_runtime_compiled", "heuristic")

CATALOG: tuple[LibraryRecord, ...] = (
    LibraryRecord("cudart", "CUDA runtime", "nvidia-cuda-runtime", "cuda_runtime", "cudart",
                  conda=("cuda-cudart",) + _TOOLKIT, version=VersionFunction("cudaRuntimeGetVersion", "out")),
    LibraryRecord("cublas", "cuBLAS", "nvidia-cublas", "cublas", "cublas", conda=("libcublas",) + _TOOLKIT,
                  needs=("cublasLt",), version=VersionFunction("cublasGetProperty", "property")),
    LibraryRecord("cublasLt", "cuBLASLt", "nvidia-cublas", "cublas", "cublas", conda=("libcublas",) + _TOOLKIT,
                  version=VersionFunction("cublasLtGetVersion", "ret")),
    LibraryRecord("cufft", "cuFFT", "nvidia-cufft", "cufft", "cufft", conda=("libcufft",) + _TOOLKIT,
                  version=VersionFunction("cufftGetProperty", "property")),
    LibraryRecord("curand", "cuRAND", "nvidia-curand", "curand", "curand", conda=("libcurand",) + _TOOLKIT,
                  version=VersionFunction("curandGetProperty", "property")),
    LibraryRecord("cusolver", "cuSOLVER", "nvidia-cusolver", "cusolver", "cusolver",
                  conda=("libcusolver",) + _TOOLKIT, needs=("cublas", "cusparse", "nvJitLink"),
                  version=VersionFunction("cusolverGetProperty", "property")),
    LibraryRecord("cusolverMg", "cuSOLVERMg", "nvidia-cusolver", "cusolver", "cusolver",
                  conda=("libcusolver",) + _TOOLKIT),
    LibraryRecord("cusparse", "cuSPARSE", "nvidia-cusparse", "cusparse", "cusparse",
                  conda=("libcusparse",) + _TOOLKIT, needs=("nvJitLink",),
                  version=VersionFunction("cusparseGetProperty", "property")),
    LibraryRecord("nvrtc", "NVRTC", "nvidia-cuda-nvrtc", "cuda_nvrtc", "nvrtc", conda=("cuda-nvrtc",) + _TOOLKIT,
                  dlopens=(OwnDlopen("libnvrtc-builtins.so.{release}", ("11", "12", "13"),
                                     "NVRTC loads its builtins on its first compile, from its own folder first "
                                     "(a CUDA 13 wheel's libnvrtc.so.13 has no RUNPATH and runs)", True),),
                  version=VersionFunction("nvrtcVersion", "two")),
    LibraryRecord("nvJitLink", "nvJitLink", "nvidia-nvjitlink", "nvjitlink", "nvjitlink",
                  conda=("libnvjitlink",) + _TOOLKIT, version=VersionFunction("nvJitLinkVersion", "two")),
    LibraryRecord("cupti", "CUPTI", "nvidia-cuda-cupti", "cuda_cupti", "cupti", conda=("cuda-cupti",) + _TOOLKIT),
    LibraryRecord("nccl", "NCCL", "nvidia-nccl", "nccl", suffixed_from_13=True, conda=("nccl",),
                  version=VersionFunction("ncclGetVersion", "out")),
    LibraryRecord("cudnn", "cuDNN", "nvidia-cudnn", "cudnn", suffixed_from_13=True, conda=("cudnn",),
                  dlopens=tuple(OwnDlopen(f"libcudnn_{sub}.so.8", ("8",), "cuDNN 8 loads its sub-libraries on "
                                          "first use") for sub in _CUDNN8_SUBS)
                  + (OwnDlopen("libnvrtc.so", ("8",), "cuDNN 8 compiles its runtime-fusion kernels with NVRTC, "
                               "loaded by the unversioned name"),)
                  + tuple(OwnDlopen(f"libcudnn_{sub}.so.9", ("9",), "cuDNN 9 loads its sub-libraries and engines "
                                    "on first use") for sub in _CUDNN9_SUBS)
                  + (OwnDlopen("libnvrtc.so.{cuda_major}", ("9",), "cuDNN 9's graph library compiles its runtime "
                               "engines with NVRTC"),),
                  version=VersionFunction("cudnnGetVersion", "ret")),
    LibraryRecord("cusparseLt", "cuSPARSELt", "nvidia-cusparselt", "cusparselt", suffixed_from_13=True,
                  conda=("libcusparselt",)),
    LibraryRecord("nvshmem", "NVSHMEM", "nvidia-nvshmem", "nvshmem", suffixed_from_13=True, conda=("libnvshmem",)),
    LibraryRecord("cufile", "cuFile (GPUDirect Storage)", "nvidia-cufile", "cufile", "cufile", conda=("libcufile",)),
    LibraryRecord("nvToolsExt", "NVTX", "nvidia-nvtx", "nvtx", conda=("cuda-nvtx",) + _TOOLKIT),
)


@lru_cache(maxsize=1)
def _by_family() -> dict[str, LibraryRecord]:
    return {record.family: record for record in CATALOG}


def record(family: Optional[str]) -> Optional[LibraryRecord]:
    return _by_family().get(family or "")


def records() -> tuple[LibraryRecord, ...]:
    return CATALOG


def decode_version(family: str, style: str, values: tuple[int, ...]) -> tuple[int, ...]:
    """What a version function returned, as (major, minor, patch): cuDNN 8005 -> (8, 0, 5), 91000 -> (9, 10, 0);
    the CUDA runtime 12040 -> (12, 4); NCCL 21803 -> (2, 18, 3), 2708 -> (2, 7, 8); cuBLASLt 120103 -> (12, 1, 3)."""
    if style in ("two", "property"):
        return tuple(values)
    number = values[0] if values else 0
    if family == "cudart":
        return number // 1000, (number % 1000) // 10
    if family == "cudnn":
        return (number // 10000, (number % 10000) // 100, number % 100) if number >= 90000 else (
            number // 1000, (number % 1000) // 100, number % 100)
    scale = 10000 if number >= 10000 * (2 if family == "nccl" else 10) else 1000
    return number // scale, (number % scale) // 100, number % 100
