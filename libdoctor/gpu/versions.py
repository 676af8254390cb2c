"""A library copy's real version, read without running it, and the version rule a framework applies to it.

Where the version is read, first that answers (each names itself in ``RealVersion.source``):

1. the real file's name, when it says more than the soname (``libcudnn.so.8.0.5``);
2. the NVIDIA wheel that installed it: ``site-packages/nvidia/<folder>/lib`` and the
   ``nvidia_<wheel>-<version>.dist-info`` beside (the catalog names each family's wheel);
3. the conda package that lists it: ``<prefix>/conda-meta/<package>-<version>-<build>.json``
   (the catalog names each family's packages).

The rules are what the frameworks check at run time (cuda-facts.md 3.3 and 7 row 8): TensorFlow and
PyTorch want the cuDNN major they were built with and at least its minor; JAX's
``_check_cuda_versions`` wants each checked library at least the version it was built with.
``--probe`` asks the library itself (its version function, ``catalog.VersionFunction``).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ..loader.plainfiles import read_text
from .catalog import record

Version = tuple[int, ...]
SAME_MAJOR_AT_LEAST = "same major, minor at least"  # TF's and torch's cuDNN check
AT_LEAST = "at least"  # JAX's _check_cuda_versions


def shown(version: Version) -> str:
    return ".".join(map(str, version))


def parse(text: str) -> Optional[Version]:
    match = re.match(r"\s*(\d+(?:\.\d+)*)", text or "")
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def name_version(name: str) -> Version:
    """``libcudnn.so.8.0.5`` -> (8, 0, 5); ``libfoo.so`` -> ()."""
    match = re.search(r"\.so((?:\.\d+)+)$", name)
    return tuple(int(p) for p in match.group(1)[1:].split(".")) if match else ()


@dataclass(frozen=True)
class RealVersion:
    version: Version
    source: str  # "the file name libcudnn.so.8.0.5", "nvidia_cudnn_cu12-9.1.0.70.dist-info"

    @property
    def text(self) -> str:
        return shown(self.version)


def real_version(path: str, family: Optional[str], soname: Optional[str] = None) -> Optional[RealVersion]:
    """The version of the library at ``path`` (of ``family``, own SONAME ``soname``), None when nothing says."""
    real = os.path.realpath(path)
    try:
        stamp = os.stat(real).st_mtime_ns
    except OSError:
        return None
    return _real_version(real, family or "", soname or "", stamp)


@lru_cache(maxsize=1024)
def _real_version(real: str, family: str, soname: str, _stamp: int) -> Optional[RealVersion]:
    name = os.path.basename(real)
    from_name = name_version(name)
    if len(from_name) > max(len(name_version(soname)), 1):
        return RealVersion(from_name, f"the file name {name}")
    return _wheel_version(real, family) or _conda_version(real, family)


def _wheel_version(real: str, family: str) -> Optional[RealVersion]:
    entry = record(family)
    lib = os.path.dirname(real)
    nvidia = os.path.dirname(os.path.dirname(lib))
    if entry is None or entry.wheel is None or os.path.basename(lib) != "lib" or os.path.basename(nvidia) != "nvidia":
        return None
    site = os.path.dirname(nvidia)
    stem = entry.wheel.replace("-", "_")
    try:
        stamp = os.stat(site).st_mtime_ns  # a pip install or uninstall changes the folder: a long-lived watch sees it
    except OSError:
        return None
    for dist in sorted(_dist_infos(site, stamp), reverse=True):
        match = re.match(rf"{re.escape(stem)}(?:_cu\d+)?-(\d+(?:\.\d+)+)\.dist-info$", dist)
        if match:
            return RealVersion(parse(match.group(1)) or (), dist)
    return None


@lru_cache(maxsize=64)
def _dist_infos(site: str, _stamp: int) -> tuple[str, ...]:
    try:
        return tuple(n for n in os.listdir(site) if n.startswith("nvidia_") and n.endswith(".dist-info"))
    except OSError:
        return ()


def _conda_version(real: str, family: str) -> Optional[RealVersion]:
    entry = record(family)
    lib = os.path.dirname(real)
    meta = os.path.join(os.path.dirname(lib), "conda-meta")
    if entry is None or not entry.conda or not os.path.isdir(meta):
        return None
    listed = f'"lib/{os.path.basename(real)}"'
    for package in entry.conda:
        for path in sorted(glob.glob(os.path.join(meta, f"{package}-[0-9]*.json"))):
            match = re.match(rf"{re.escape(package)}-(\d+(?:\.\d+)*)-[^-]+\.json$", os.path.basename(path))
            if match and _lists(path, listed):
                return RealVersion(parse(match.group(1)) or (), f"conda-meta/{os.path.basename(path)}")
    return None


def _lists(meta_file: str, listed: str) -> bool:
    return listed in (read_text(meta_file, 16 << 20) or "")


@dataclass(frozen=True)
class VersionRule:
    """A framework's own check of a library's version (what it does when the copy it got fails it)."""

    family: str
    minimum: Version
    kind: str  # SAME_MAJOR_AT_LEAST | AT_LEAST
    source: str  # where the minimum comes from: "nvidia-cudnn-cu12==9.1.0.70 (torch's pin)"
    check: str  # what the framework does then: "PyTorch raises 'cuDNN version incompatibility'"

    def compared(self, version: Version) -> Optional[str]:
        """None when ``version`` passes; else why not ("9.0.0 is older than 9.1")."""
        if not version:
            return None
        if self.kind == SAME_MAJOR_AT_LEAST:
            if version[:1] != self.minimum[:1]:
                return None  # another major is another soname: the soname judgement says so
            if version[:2] < self.minimum[:2]:
                return f"{shown(version)} is older than the {shown(self.minimum[:2])} it was built with"
            return None
        length = min(3, len(self.minimum))
        padded = tuple(version) + (0,) * max(0, length - len(version))
        if padded[:length] < self.minimum[:length]:
            return f"{shown(version)} is older than the {shown(self.minimum[:length])} it requires"
        return None

    @property
    def words(self) -> str:
        return f"{self.kind} {shown(self.minimum)} ({self.source})"


def requirement_rule(requirements: tuple[str, ...], family: str, kind: str, check: str, who: str,
                     pins_only: bool = False) -> Optional[VersionRule]:
    """The version rule a framework's requirement on ``family``'s wheel states: ``nvidia-cudnn-cu12==9.1.0.70``
    (a pin: what it was built with) or, unless ``pins_only``, ``nvidia-cublas-cu12>=12.1.3.1`` (the least it
    accepts)."""
    entry = record(family)
    if entry is None or entry.wheel is None:
        return None
    operators = "==" if pins_only else "==|>=|~="
    for requirement in requirements:
        spec = requirement.split(";", 1)[0].strip()
        match = re.match(rf"{re.escape(entry.wheel)}(?:-cu\d+)?\s*(?:\[[^\]]*\])?\s*\(?\s*[^;]*?({operators})\s*"
                         rf"(\d+(?:\.\d+)+)", spec)
        version = parse(match.group(2)) if match else None
        if match and version:
            return VersionRule(family, version, kind, f"{who} requires {spec}", check)
    return None


def rule_for(rules: tuple[VersionRule, ...], family: Optional[str]) -> Optional[VersionRule]:
    return next((r for r in rules if r.family == family), None)
