"""Apache MXNet (retired in 2023): the CUDA build from the distribution's name (``mxnet-cu112`` is CUDA
11.2; plain ``mxnet`` is a CPU build).  ``libmxnet.so`` links CUDA through DT_NEEDED, so its own
objects' resolution covers what it loads; nothing is dlopened by name that is modelled here.
"""
from __future__ import annotations

import os
import re

from ...targets import Framework, PythonEnv
from .base import FrameworkInfo, FrameworkPlugin, python_version_of, requirements


def mxnet_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
    match = re.match(r"mxnet-cu(\d+?)(\d)\b", framework.name)
    cuda = f"{match.group(1)}.{match.group(2)}" if match else None
    return FrameworkInfo(framework.name, framework.version, framework.name, os.path.join(site, "mxnet"),
                         python_version_of(site), cuda, None, "distribution name", cuda is not None,
                         requirements=requirements(framework.location),
                         on_failure="import mxnet fails (CUDA is linked through DT_NEEDED)")


PROBE = """
import mxnet
out["version"] = mxnet.__version__
out["gpu"] = mxnet.context.num_gpus() > 0
"""

PLUGIN = FrameworkPlugin("mxnet", "MXNet", mxnet_info, PROBE, re.compile(r"/libmxnet\.so$"))
