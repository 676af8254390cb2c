"""JAX: the CUDA plugin (``jax_plugins/xla_cudaNN`` with ``jax_cudaNN_plugin``) and what it loads.

Read from the installed files (jax 0.10.2, jax-cuda12-plugin 0.10.2, VERIFIED here):

* ``jax_plugins/xla_cudaNN/__init__.py`` ``_load_nvidia_libraries()`` loads literal sonames by full
  path from ``site-packages/nvidia/<module>/lib`` when the wheel is there, else nothing;
* ``_check_cuda_versions`` then asks ``jax_cudaNN_plugin/_versions.so`` for the cudart, cuDNN, cuFFT,
  CUPTI, cuBLAS and cuSPARSE versions: those ``.so`` files dlopen by name through their DT_RPATH
  (``$ORIGIN/../../nvidia/*/lib``) and the loader's search; the first failure raises, the plugin
  is not registered, and JAX runs on the CPU with a warning ("Unable to load CUDA");
* the plugin's nvidia requirements (extra ``with-cuda``) give the CUDA and cuDNN it was built for;
* XLA needs the driver: ``libcuda.so.1``, ``libnvidia-ml.so.1`` and the ``/dev/nvidia*`` nodes.
"""
from __future__ import annotations

import os
from functools import partial
import re
from typing import Optional

from ...targets import Framework, PythonEnv
from ..cudatable import SUFFIXED_FROM_13, family_of
from ..versions import AT_LEAST
from .base import (GATE, LAZY, OPTIONAL, ExpectedLib, FrameworkInfo, FrameworkPlugin, lower_bound,
                   python_version_of, read_text, requirement_rule, requirements)

_LOAD_CALL = re.compile(r"_load\(\s*['\"]([\w.]+)['\"]\s*,\s*\[([^\]]*)\]\s*\)")
VERSION_CHECKED = frozenset({"cudart", "cudnn", "cufft", "cupti", "cublas", "cusparse"})  # _check_cuda_versions
FEATURES = {"nccl": "multi-GPU collectives (NCCL)", "nvshmem": "NVSHMEM collectives"}
# cuDNN compiles its runtime engines with NVRTC on first use
LAZY_FAMILIES = frozenset({"nvrtc"})


def plugin_major(site: str) -> Optional[int]:
    """The CUDA major of the installed plugin (jax tries cuda13 before cuda12)."""
    for major in (13, 12):
        if os.path.isfile(os.path.join(site, "jax_plugins", f"xla_cuda{major}", "__init__.py")):
            return major
    return None


def plugin_loads(text: str, major: int) -> list[tuple[str, str]]:
    """(nvidia module, soname) the plugin preloads for CUDA ``major``, in its order."""
    loads = []
    for module, names in _LOAD_CALL.findall(text):
        for soname in re.findall(r"['\"]([^'\"]+)['\"]", names):
            if module.startswith("cu") and module[2:].isdigit():
                if int(module[2:]) == major:
                    loads.append((module, soname))
                continue
            if major < 13 or family_of(soname) in SUFFIXED_FROM_13:  # from 13 the rest come from nvidia/cu13
                loads.append((module, soname))
    return loads


def jax_info(framework: Framework, env: PythonEnv) -> FrameworkInfo:
    site = os.path.dirname(framework.location)
    major = plugin_major(site)
    plugin_dist = framework.part(rf"jax-cuda{major}-plugin$") if major else None
    reqs = requirements(plugin_dist.location) if plugin_dist else ()
    make = partial(FrameworkInfo, name=framework.name, version=framework.version, package_dir=os.path.join(site, "jax"),
                python_version=python_version_of(site), requirements=reqs)
    if major is None:
        return make(flavour="jaxlib (CPU only: no jax-cudaNN-plugin)", cuda=None, cudnn=None,
                             built_from="jax_plugins (none installed)", cuda_build=False)
    plugin_dir = os.path.join(site, "jax_plugins", f"xla_cuda{major}")
    backend = os.path.join(plugin_dir, "xla_cuda_plugin.so")
    versions = os.path.join(site, f"jax_cuda{major}_plugin", "_versions.so")
    loads = plugin_loads(read_text(os.path.join(plugin_dir, "__init__.py")) or "", major)
    preloads = tuple(p for module, soname in loads
                     if os.path.isfile(p := os.path.join(site, "nvidia", module, "lib", soname)))
    expected = []
    for soname in dict.fromkeys(soname for _module, soname in loads):
        family = family_of(soname) or soname
        checked = family in VERSION_CHECKED and os.path.isfile(versions)
        role = OPTIONAL if family in FEATURES else LAZY if family in LAZY_FAMILIES else GATE
        expected.append(ExpectedLib(soname, family, role, versions if checked else backend,
                                    feature=FEATURES.get(family)))
    for soname in ("libcuda.so.1", "libnvidia-ml.so.1"):
        expected.append(ExpectedLib(soname, "cuda driver", GATE, backend))
    check = ("JAX's _check_cuda_versions raises 'Outdated ... installation found', the CUDA plugin is not "
             "registered and JAX falls back to the CPU")
    rules = tuple(r for family in sorted(VERSION_CHECKED)
                  if (r := requirement_rule(reqs, family, AT_LEAST, check, f"jax-cuda{major}-plugin")) is not None)
    cuda = lower_bound(reqs, "nvidia-cuda-runtime") or f"{major}.0"
    cudnn = lower_bound(reqs, "nvidia-cudnn")
    return make(flavour=f"jax-cuda{major}-plugin {plugin_dist.version if plugin_dist else '?'}",
                         cuda=cuda, cudnn=cudnn, built_from=f"jax-cuda{major}-plugin requirements", cuda_build=True,
                         expected=tuple(expected), preloads=preloads,
                         on_failure="JAX silently falls back to the CPU", version_rules=rules,
                         sequence=f"jax-cuda{major}-plugin: its NVIDIA wheels preloaded by path, then "
                                  "_check_cuda_versions",
                         install=f"pip install 'jax[cuda{major}]=={framework.version}'")


PROBE = """
import jax
out["version"] = jax.__version__
out["gpu"] = any(d.platform == "gpu" for d in jax.devices())
"""

PLUGIN = FrameworkPlugin("jax", "JAX", jax_info, PROBE, re.compile(r"/(_jax|xla_extension)\.[^/]*so$"))
