"""ONNX Runtime (``onnxruntime-gpu``): the CUDA provider and what it needs in default use.

Read from the installed files (onnxruntime-gpu 1.31.1, VERIFIED here): ``capi/build_and_package_info.py``
states ``cuda_version``; ``capi/libonnxruntime_providers_cuda.so`` is dlopened by full path when a
session asks for the CUDA provider, has no RPATH and NEEDs cuBLAS(Lt), cuRAND and cudart by soname,
then dlopens cuDNN and cuFFT on first use.  The NVIDIA wheels of its ``[cuda,cudnn]`` extras are not on
the loader's search path: the provider finds them only after ``onnxruntime.preload_dlls()`` (or
``import torch`` of the same CUDA) or with ``LD_LIBRARY_PATH``; otherwise the session logs "Failed to
create CUDAExecutionProvider" and runs on the CPU.  The TensorRT provider is an optional feature.
"""
from __future__ import annotations

import os
from functools import partial
import re
from typing import Optional

from ...targets import Framework, PythonEnv
from ..cudatable import soname_for
from .base import (LAZY, OPTIONAL, ExpectedLib, FrameworkInfo, FrameworkPlugin, lower_bound, optional_objects,
                   python_version_of, read_text, requirements)

OPTIONAL_FEATURES = ((r"/onnxruntime/capi/libonnxruntime_providers_tensorrt\.so", "TensorRT execution provider"),
                     (r"/onnxruntime/capi/libonnxruntime_providers_openvino\.so", "OpenVINO execution provider"),
                     (r"/onnxruntime/capi/libonnxruntime_providers_migraphx\.so", "MIGraphX execution provider"))
PROVIDER = "libonnxruntime_providers_cuda.so"


def build_info(capi: str) -> dict[str, str]:
    text = read_text(os.path.join(capi, "build_and_package_info.py")) or ""
    return dict(re.findall(r"^(\w+)\s*=\s*['\"]([^'\"]*)['\"]", text, re.M))


def onnxruntime_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
    capi = os.path.join(site, "onnxruntime", "capi")
    info = build_info(capi)
    cuda: Optional[str] = info.get("cuda_version") or None
    reqs = requirements(framework.location)
    cudnn = lower_bound(reqs, "nvidia-cudnn")
    provider = os.path.join(capi, PROVIDER)
    make = partial(FrameworkInfo, name=framework.name, version=framework.version,
                   package_dir=os.path.join(site, "onnxruntime"),
                python_version=python_version_of(site), requirements=reqs,
                optional_objects=optional_objects(framework.files, OPTIONAL_FEATURES))
    if not cuda or not os.path.isfile(provider):
        return make(flavour=framework.name, cuda=cuda, cudnn=cudnn, built_from="build_and_package_info.py",
                             cuda_build=False if not os.path.isfile(provider) else None)
    expected = []
    if cudnn:
        expected.append(ExpectedLib(f"libcudnn.so.{cudnn.split('.')[0]}", "cudnn", LAZY, provider))
    cufft = soname_for("cufft", cuda)
    if cufft:
        expected.append(ExpectedLib(cufft, "cufft", OPTIONAL, provider, feature="FFT operators (cuFFT)"))
    major = cuda.split(".")[0]
    extras = "cuda,cudnn" if cudnn else "cuda"
    return make(flavour=f"{framework.name} (CUDA {cuda})", cuda=cuda, cudnn=cudnn,
                         built_from="capi/build_and_package_info.py", cuda_build=True, expected=tuple(expected),
                         on_failure="ONNX Runtime logs \"Failed to create CUDAExecutionProvider\" and runs on the CPU",
                         install=f"pip install '{framework.name}[{extras}]=={framework.version}'"
                         if int(major) >= 12 else None,
                         reach="call onnxruntime.preload_dlls() before creating the session")


# A one-node model (Identity) written as protobuf by hand: the probe needs no onnx package.
PROBE = """
import onnxruntime as ort
def varint(n):
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        out.append(low | (0x80 if n else 0))
        if not n:
            return bytes(out)
def field(num, wire, payload):
    return varint(num << 3 | wire) + (varint(payload) if wire == 0 else varint(len(payload)) + payload)
def text(num, value):
    return field(num, 2, value.encode())
tensor = field(1, 2, field(1, 0, 1) + field(2, 2, field(1, 2, field(1, 0, 1))))
def value_info(name):
    return text(1, name) + field(2, 2, tensor)
graph = (field(1, 2, text(1, "x") + text(2, "y") + text(4, "Identity")) + text(2, "probe")
         + field(11, 2, value_info("x")) + field(12, 2, value_info("y")))
model = field(1, 0, 8) + field(7, 2, graph) + field(8, 2, text(1, "") + field(2, 0, 13))
out["version"] = ort.__version__
session = ort.InferenceSession(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
out["gpu"] = "CUDAExecutionProvider" in session.get_providers()
"""

PLUGIN = FrameworkPlugin("onnxruntime", "ONNX Runtime", onnxruntime_info, PROBE,
                         re.compile(r"/onnxruntime_pybind11_state\.[^/]*so$|/libonnxruntime\.so"))
