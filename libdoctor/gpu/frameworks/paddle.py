"""PaddlePaddle (``paddlepaddle-gpu``): the CUDA build from ``paddle/version/__init__.py``.

That generated file states ``cuda_version`` and ``cudnn_version`` (the string ``'False'`` for a CPU
build; newer releases wrap them, ``CudaVersion('12.6')``).  Paddle dlopens its CUDA libraries at run
time through its own loader (``paddle/phi/backends/dynload``, ``GetDsoHandleFromSearchPath``): releases before
2.6 ask for the unversioned development names ``libcudnn.so`` and ``libcublas.so`` (PaddlePaddle/Paddle#59011,
#35608: "Cannot load cudnn shared library. Cannot invoke method cudnnGetVersion" with only ``libcudnn.so.8``
installed); later ones the versioned sonames.  The call comes from its core library (``libpaddle.so``, or
``core_avx.so`` in older releases), through the loader's search.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from ...targets import Framework, PythonEnv
import glob

from ..cudatable import soname_for
from ..driver import parse_version
from .base import GATE, ExpectedLib, FrameworkInfo, FrameworkPlugin, python_version_of, read_text, requirements

VERSIONED_FROM = (2, 6)
CORE_LIBRARIES = ("paddle/base/libpaddle.so", "paddle/fluid/libpaddle.so", "paddle/fluid/core_avx.so",
                  "paddle/fluid/core_noavx.so")


def paddle_dlopens(site: str, version: str, cuda: Optional[str], cudnn: Optional[str]) -> tuple[ExpectedLib, ...]:
    """What Paddle's dynload asks for by name: unversioned names before 2.6, sonames after."""
    core = next((p for rel in CORE_LIBRARIES for p in glob.glob(os.path.join(site, rel))), None)
    if core is None or not cuda:
        return ()
    if (parse_version(version) or (0,)) < VERSIONED_FROM:
        names = {"cudnn": "libcudnn.so", "cublas": "libcublas.so"}
    else:
        names = {"cudnn": f"libcudnn.so.{(cudnn or '8').split('.')[0]}", "cublas": soname_for("cublas", cuda) or ""}
    return tuple(ExpectedLib(name, family, GATE, core) for family, name in names.items() if name)


def version_field(text: str, name: str) -> Optional[str]:
    match = re.search(rf"^{name}\s*=\s*(?:\w+\()?\s*['\"]([^'\"]*)['\"]", text, re.M)
    return match.group(1) if match and match.group(1) not in ("False", "None", "") else None


def paddle_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
    text = read_text(os.path.join(site, "paddle", "version", "__init__.py"))
    cuda = version_field(text or "", "cuda_version")
    cudnn = version_field(text or "", "cudnn_version")
    known = text is not None and re.search(r"^cuda_version\s*=", text, re.M) is not None
    return FrameworkInfo(framework.name, framework.version, framework.name, os.path.join(site, "paddle"),
                         python_version_of(site), cuda, cudnn,
                         "paddle/version/__init__.py" if known else "unknown",
                         (cuda is not None) if known else None, requirements=requirements(framework.location),
                         on_failure="Paddle cannot use the GPU ('Cannot load cudnn shared library')",
                         expected=paddle_dlopens(site, framework.version, cuda, cudnn),
                         sequence="Paddle dynload: " + ("unversioned development names" if (
                             parse_version(framework.version) or (0,)) < VERSIONED_FROM else "sonames"))


PROBE = """
import paddle
out["version"] = paddle.__version__
out["gpu"] = bool(paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0)
"""

PLUGIN = FrameworkPlugin("paddle", "PaddlePaddle", paddle_info, PROBE, re.compile(r"/libpaddle\.so$"))
