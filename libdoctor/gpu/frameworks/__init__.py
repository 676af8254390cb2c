"""GPU frameworks as plug-ins: one module per framework, each reading the installed files (never
importing the framework) into a :class:`FrameworkInfo`.  ``targets.FRAMEWORK_DISTS`` says which
distribution is which framework; :data:`PLUGINS` says who knows it.
"""
from __future__ import annotations

import os
from dataclasses import replace

from ...targets import Framework, PythonEnv
from .base import GATE, LAZY, OPTIONAL, ExpectedLib, FrameworkInfo, FrameworkPlugin, python_version_of, requirements
from .cupy import PLUGIN as CUPY
from .jax import PLUGIN as JAX
from .mxnet import PLUGIN as MXNET
from .onnxruntime import PLUGIN as ONNXRUNTIME
from .paddle import PLUGIN as PADDLE
from .pytorch import PLUGIN as TORCH
from .tensorflow import PLUGIN as TENSORFLOW
from .tensorflow import tf_sonames, tf_table_row

PLUGINS = {plugin.kind: plugin for plugin in (TENSORFLOW, TORCH, JAX, CUPY, ONNXRUNTIME, PADDLE, MXNET)}

__all__ = ["GATE", "LAZY", "OPTIONAL", "ExpectedLib", "FrameworkInfo", "FrameworkPlugin", "PLUGINS", "framework_info",
           "plugin_of", "tf_sonames", "tf_table_row"]


def plugin_of(kind: str) -> FrameworkPlugin | None:
    return PLUGINS.get(kind)


def framework_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    plugin = plugin_of(framework.kind)
    if plugin is not None:
        return replace(plugin.info(framework, env), kind=plugin.kind, display=plugin.display)
    site = os.path.dirname(framework.location)
    return FrameworkInfo(framework.name, framework.version, framework.name, None, python_version_of(site), None,
                         None, "unknown", None, requirements=requirements(framework.location))
