"""PaddlePaddle (``paddlepaddle-gpu``): the CUDA build from ``paddle/version/__init__.py``.

That generated file states ``cuda_version`` and ``cudnn_version`` (the string ``'False'`` for a CPU
build; newer releases wrap them, ``CudaVersion('12.6')``).  Paddle dlopens its CUDA libraries at run
time through its own loader (``paddle/phi/backends/dynload``); which sonames, and from where, is not
modelled: its shared objects' own DT_NEEDED are resolved as for any object.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from ...targets import Framework, PythonEnv
from .base import FrameworkInfo, FrameworkPlugin, python_version_of, read_text, requirements


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
                         on_failure="Paddle runs on the CPU",
                         notes=("the libraries Paddle dlopens at run time are not modelled: only its objects' "
                                "DT_NEEDED are checked",))


PROBE = """
import paddle
out["version"] = paddle.__version__
out["gpu"] = bool(paddle.device.is_compiled_with_cuda() and paddle.device.cuda.device_count() > 0)
"""

PLUGIN = FrameworkPlugin("paddle", "PaddlePaddle", paddle_info, PROBE, re.compile(r"/libpaddle\.so$"))
