"""What every framework plug-in answers, and the helpers they share.

A plug-in reads an installed framework from disk (never imports it) and returns a
:class:`FrameworkInfo`: the CUDA build, the libraries it loads at run time and how it finds
them, what happens when they are missing, and the command that installs what it needs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Callable, Optional

from ...loader.plainfiles import read_text as plain_text
from ...targets import Framework, PythonEnv
from ..cudatable import family_of, wheel_dirs
from ..impostor import BuiltFor, built_for
from ..sequence import PreloadPlan

__all__ = ["requirement_rule"]  # re-exported: the plug-ins read their rules with it
from ..versions import VersionRule, requirement_rule

GATE = "gate"  # without it the framework registers no GPU and runs on the CPU
OPTIONAL = "optional"  # a failure only warns (profiler, NCCL, TensorRT)
LAZY = "lazy"  # loaded on first use; the GPU path fails then


@dataclass(frozen=True)
class ExpectedLib:
    soname: str
    family: str
    role: str  # gate | optional | lazy
    requester: Optional[str]  # the object that dlopens it (None: the framework's own closure decides)
    loaded_by: Optional[str] = None  # the extension module python dlopens, which brings ``requester`` in
    feature: Optional[str] = None  # what an optional library is for ("multi-GPU collectives (NCCL)")


@dataclass(frozen=True)
class FrameworkInfo:
    name: str
    version: str
    flavour: str
    package_dir: Optional[str]
    python_version: Optional[str]
    cuda: Optional[str]
    cudnn: Optional[str]
    built_from: str  # where cuda/cudnn were read
    cuda_build: Optional[bool]
    expected: tuple[ExpectedLib, ...] = ()
    preloads: tuple[str, ...] = ()  # loaded by full path before anything else (torch, JAX, CuPy's pathfinder)
    requirements: tuple[str, ...] = ()  # Requires-Dist lines naming nvidia wheels
    notes: tuple[str, ...] = field(default_factory=tuple)
    display: str = ""  # "PyTorch", "JAX": the plug-in's, set with ``kind`` by ``framework_info``
    kind: str = ""
    on_failure: str = "its GPU path fails"  # what the framework does when a gate library is missing
    install: Optional[str] = None  # the framework's own command for its CUDA libraries ("pip install 'jax[cuda12]'")
    optional_objects: tuple[tuple[str, str], ...] = ()  # (extension module, optional feature it serves)
    reach: Optional[str] = None  # how it reaches NVIDIA wheels its loads do not search (onnxruntime.preload_dlls())
    version_rules: tuple[VersionRule, ...] = ()  # the framework's own checks of the copies it gets
    sequence: str = ""  # which of the plug-in's load sequences this version follows ("torch 2.0-2.5")
    preload_plan: Optional[PreloadPlan] = None  # preloads that depend on what the first load does (settled by scan)

    @property
    def label(self) -> str:
        return f"{self.name} {self.version}"

    @property
    def title(self) -> str:
        return self.display or self.name

    @cached_property
    def built_for(self) -> BuiltFor:
        return built_for(self.label, self.cuda, self.cudnn, self.requirements, self.version_rules)

    def feature_of(self, path: str) -> Optional[str]:
        """The optional feature an extension module serves (CuPy's cuTENSOR module), or None."""
        real = os.path.realpath(path)
        return next((feature for obj, feature in self.optional_objects if os.path.realpath(obj) == real), None)


@dataclass(frozen=True)
class FrameworkPlugin:
    kind: str  # as targets.FRAMEWORK_DISTS names it
    display: str
    info: Callable[[Framework, PythonEnv], FrameworkInfo]
    probe: str  # python run in the environment: sets out["version"] and out["gpu"], may raise
    mapped: "re.Pattern[str]"  # a file whose mapping marks a process as running it (searched in the path)


def python_version_of(site_packages: str) -> Optional[str]:
    match = re.search(r"python(\d+\.\d+)", site_packages)
    return match.group(1) if match else None


def read_text(path: str, limit: int = 1 << 20) -> Optional[str]:
    return plain_text(path, limit)  # never blocking: one reader (loader.plainfiles)


def requirements(dist_info: str) -> tuple[str, ...]:
    """The Requires-Dist lines naming NVIDIA wheels that apply to this host and the environment's Python (their
    markers evaluated with ``packaging``: an x86-only pin is never offered on arm64); any extra counts."""
    text = read_text(os.path.join(dist_info, "METADATA")) or read_text(os.path.join(dist_info, "PKG-INFO")) or ""
    python = python_version_of(os.path.dirname(dist_info))
    found = (modern_requirement(line.split(":", 1)[1].strip()) for line in text.splitlines()
             if line.startswith("Requires-Dist:") and re.search(r"nvidia|cuda-toolkit", line))
    return tuple(r for r in found if applies(r, python))


def applies(requirement: str, python: Optional[str] = None) -> bool:
    """Whether ``requirement``'s marker holds on this machine for Python ``python`` (default: this one), for the
    extra it names if any; a requirement ``packaging`` cannot parse is kept (the pin is shown, not acted on)."""
    from packaging.markers import default_environment
    from packaging.requirements import InvalidRequirement, Requirement

    try:
        marker = Requirement(requirement).marker
    except InvalidRequirement:
        return True
    if marker is None:
        return True
    environment: dict[str, str] = {key: str(value) for key, value in default_environment().items()}
    if python:
        environment.update(python_version=python, python_full_version=f"{python}.0")
    extras = re.findall(r"extra\s*==\s*['\"]([^'\"]+)['\"]", str(marker)) or [""]
    return any(marker.evaluate({**environment, "extra": extra}) for extra in extras)


def modern_requirement(requirement: str) -> str:
    """``nvidia-cublas-cu12 (==12.2.5.6); extra == "and-cuda"`` (old metadata) -> ``nvidia-cublas-cu12==12.2.5.6; ...``,
    the form pip accepts on a command line."""
    return re.sub(r"^([A-Za-z0-9_.\-]+(?:\[[^\]]*\])?)\s*\(([^)]*)\)", r"\1\2", requirement)


def lower_bound(requirements_: tuple[str, ...], package: str) -> Optional[str]:
    """``nvidia-cuda-runtime-cu12>=12.1.105`` -> "12.1" (the first two numbers of the lowest version allowed)."""
    for requirement in requirements_:
        spec = requirement.split(";", 1)[0]
        if re.match(rf"{re.escape(package)}(-cu\d+)?\s*[<>=~!(]", spec):
            match = re.search(r"(?:>=|==|~=)\s*(\d+(?:\.\d+)?)", spec)
            if match:
                return match.group(1)
    return None


def installed_wheel_file(site: str, soname: str, cuda_major: Optional[int]) -> Optional[str]:
    """Where an NVIDIA wheel of this environment holds ``soname`` (``nvidia/cublas/lib``, ``nvidia/cu13/lib``)."""
    for folder in wheel_dirs(family_of(soname) or "", cuda_major):
        path = os.path.join(site, folder, soname)
        if os.path.isfile(path):
            return path
    return None


def optional_objects(files: tuple[str, ...], features: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    """(file, feature) for each file whose name matches a pattern of ``features``."""
    found = []
    for path in files:
        for pattern, feature in features:
            if re.search(pattern, path):
                found.append((path, feature))
                break
    return tuple(found)
