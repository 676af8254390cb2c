"""Per framework: do the libraries it loads at run time resolve, does the driver fit, is the GPU usable?"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Optional

from ..loader.environment import Environment
from ..loader.resolver import LoadResult, Resolver
from ..targets import CUDA_NAME
from .cudatable import DRIVER_SONAMES, TOOLKIT_EXTRAS, WHEELS, family_of
from .driver import DriverFit, DriverInfo, driver_fit, read_driver
from .frameworks import GATE, LAZY, ExpectedLib, FrameworkInfo
from .impostor import Impostor, judge_file


@dataclass(frozen=True)
class ExpectedCheck:
    lib: ExpectedLib
    result: LoadResult
    impostor: Optional[Impostor] = None  # found, but the file is something else

    @property
    def found(self) -> bool:
        return self.result.root_error is None and not self.result.missing

    @property
    def path(self) -> Optional[str]:
        if self.result.root_error is not None or not self.result.objects:
            return None
        return self.result.objects[self.result.new_from].path


@dataclass(frozen=True)
class FrameworkReport:
    info: FrameworkInfo
    checks: tuple[ExpectedCheck, ...]
    closure_missing: tuple[str, ...]  # DT_NEEDED names missing in the framework's own objects
    fit: DriverFit
    gpu_usable: Optional[bool]
    because: str
    cuda_sources: tuple[tuple[str, str, str], ...] = ()  # (soname, path, how found) of its CUDA libraries
    static_sources: tuple[tuple[str, str, str], ...] = ()  # the same without the framework's preloads

    @property
    def resolved(self) -> int:
        return sum(c.found for c in self.checks)

    @property
    def missing(self) -> tuple[str, ...]:
        """Missing libraries; the driver's own (libcuda.so.1) is the driver column's business."""
        names = [c.lib.soname for c in self.checks if not c.found and c.lib.family != "cuda driver"]
        return tuple(dict.fromkeys(n for n in names + list(self.closure_missing) if n not in DRIVER_SONAMES))

    def sources_summary(self) -> list[str]:
        """"23 CUDA libraries resolve: 20 through rpath, 3 preloaded"; then the same without preloads."""
        lines = [f"{len(self.cuda_sources)} CUDA libraries resolve: {_counts(self.cuda_sources)}"]
        if self.static_sources:
            lines.append(f"without the framework's preloads: {len(self.static_sources)} resolve: "
                         f"{_counts(self.static_sources)}")
        return lines


def _counts(sources: tuple[tuple[str, str, str], ...]) -> str:
    counts: dict[str, int] = {}
    for _soname, _path, via in sources:
        counts[via] = counts.get(via, 0) + 1
    words = {"preload": "preloaded by path", "loaded": "already loaded"}
    return ", ".join(f"{n} {words.get(via, 'through ' + via)}" for via, n in sorted(counts.items(), key=lambda kv: -kv[1]))


def machine_driver(env: Environment, root: str = "/", resolver: Optional[Resolver] = None) -> DriverInfo:
    """The driver's user-space half found as a framework's ``dlopen`` finds it (LD_LIBRARY_PATH first, so
    container layouts such as ``/usr/local/nvidia/lib64`` count), beside the loaded kernel module."""
    resolver = resolver or Resolver(env)
    return read_driver(dlopen_path(resolver, "libcuda.so.1"), dlopen_path(resolver, "libnvidia-ml.so.1"), root)


def dlopen_path(resolver: Resolver, soname: str) -> Optional[str]:
    """Where ``dlopen(soname)`` by a program without RPATH lands: the loader itself stands in for it."""
    result = resolver.dlopen(resolver.env.loader.interpreter, soname)
    if result.root_error is not None or result.new_from >= len(result.objects):
        return None
    return resolver.env.absolute(result.objects[result.new_from].path)


def check_expected(resolver: Resolver, info: FrameworkInfo, python: Optional[str]) -> tuple[ExpectedCheck, ...]:
    checks = []
    for lib in info.expected:
        if python is None and lib.requester is None:
            continue
        if python is not None:
            via = lib.requester if lib.requester and os.path.exists(lib.requester) else None
            result = resolver.dlopen(python, lib.soname, via=via, preloads=info.preloads,
                                     loaded_by=lib.loaded_by if via else None)
        else:
            result = resolver.dlopen(lib.requester, lib.soname)  # type: ignore[arg-type]
        checks.append(ExpectedCheck(lib, result, _impostor(resolver, info, lib, result)))
    return tuple(checks)


def _impostor(resolver: Resolver, info: FrameworkInfo, lib: ExpectedLib, result: LoadResult) -> Optional[Impostor]:
    if result.root_error is not None or result.new_from >= len(result.objects):
        return None
    obj = result.objects[result.new_from]
    built = info.built_for
    return judge_file(lib.soname, resolver.env.absolute(obj.path), obj.facts.soname, built.cuda, built.cudnn,
                      built.framework)


def verdict(info: FrameworkInfo, checks: tuple[ExpectedCheck, ...], closure_missing: tuple[str, ...],
            driver: DriverInfo) -> tuple[DriverFit, Optional[bool], str]:
    """GPU usable or not, and every reason why not, worst first."""
    fit = driver_fit(info.cuda, driver)
    name = {"torch": "PyTorch"}.get(info.name, "TensorFlow" if info.name.startswith("tensorflow") else info.name)
    if info.cuda_build is False:
        return fit, False, f"a CPU-only build ({info.flavour})"
    if info.cuda_build is None:
        return fit, None, "not known which CUDA it was built for"
    reasons = []
    if not driver.present:
        reasons.append(f"no NVIDIA driver: {name} here runs on the CPU")
    elif not fit.ok:
        reasons.append(fit.reason)
    impostors = [c.impostor for c in checks if c.impostor is not None and c.impostor.severity == "error"
                 and c.lib.role in (GATE, LAZY)]
    if impostors:
        reasons.append("; ".join(f"{i.wanted} is really {i.really}" for i in impostors)
                       + f": {name} loads {'it' if len(impostors) == 1 else 'them'} and fails at the first call")
    gates = [c.lib.soname for c in checks if not c.found and c.lib.role == GATE and c.lib.family != "cuda driver"]
    if gates:
        tail = ": TensorFlow registers no GPU and runs on the CPU" if name == "TensorFlow" else ""
        reasons.append(f"{len(gates)} librar{'y' if len(gates) == 1 else 'ies'} it dlopens cannot be loaded "
                       f"({', '.join(gates)}){tail}")
    missing = [m for m in closure_missing if m not in DRIVER_SONAMES]
    if missing:
        reasons.append(f"{', '.join(missing)} missing: {name} fails to load its CUDA libraries")
    lazy = [c.lib.soname for c in checks if not c.found and c.lib.role == LAZY and c.lib.family != "cuda driver"]
    if lazy:
        reasons.append(f"{', '.join(lazy)} (loaded on first use) cannot be loaded: GPU work fails then")
    if reasons:
        return fit, False, "; ".join(reasons)
    return fit, True, f"every library resolves and {fit.reason}"


def check_framework(resolver: Resolver, info: FrameworkInfo, python: Optional[str], closure_missing: tuple[str, ...],
                    driver: DriverInfo, closures: tuple[LoadResult, ...] = (),
                    static_closures: tuple[LoadResult, ...] = ()) -> FrameworkReport:
    checks = check_expected(resolver, info, python)
    fit, usable, because = verdict(info, checks, closure_missing, driver)
    return FrameworkReport(info, checks, closure_missing, fit, usable, because,
                           cuda_sources(closures, checks, info.preloads),
                           cuda_sources(static_closures, ()) if static_closures else ())


def cuda_sources(closures: tuple[LoadResult, ...], checks: tuple[ExpectedCheck, ...], preloads: tuple[str, ...] = ()
                 ) -> tuple[tuple[str, str, str], ...]:
    """(soname, path, how the loader found it) of every CUDA library, once."""
    sources: dict[str, tuple[str, str, str]] = {}
    for path in preloads:
        if CUDA_NAME.match(os.path.basename(path)):
            sources[os.path.realpath(path)] = (os.path.basename(path), path, "preload")
    for result in closures:
        for obj in result.closure():
            name = os.path.basename(obj.path)
            if CUDA_NAME.match(name) and obj.realpath not in sources:
                sources[obj.realpath] = (obj.facts.soname or name, obj.path, obj.via)
    for check in checks:
        path = check.path
        if check.found and path and os.path.realpath(path) not in sources:
            via = next((r.via for r in check.result.resolutions if r.name == check.lib.soname), "?")
            sources[os.path.realpath(path)] = (check.lib.soname, path, via)
    return tuple(sources.values())


def fitting_packages(soname: Optional[str], frameworks: list[FrameworkReport]) -> list[str]:
    """The package that provides exactly ``soname`` for the framework that wants it: the pin in the
    framework's own requirements (TensorFlow's ``and-cuda`` extra, torch's nvidia-* wheels)."""
    family = family_of(soname or "")
    wheel = WHEELS.get(family or "")
    extra = TOOLKIT_EXTRAS.get(family or "")
    hints = []
    for framework in frameworks:
        info = framework.info
        wanted = soname in framework.missing or any(c.lib.soname == soname for c in framework.checks)
        if not wanted or not wheel:
            continue
        for requirement in info.requirements:
            spec, _, marker = requirement.partition(";")
            spec = spec.strip()
            if re.match(rf"{re.escape(wheel)}(-cu\d+)?\b", spec):
                hints.append(f"pip install '{spec}'")
            elif extra and spec.startswith("cuda-toolkit[") and extra in spec.split("]", 1)[0]:
                hints.append(f"pip install 'cuda-toolkit[{extra}]{spec.split(']', 1)[1]}'")
            if "and-cuda" in marker and info.name.startswith("tensorflow"):
                hints.append(f"pip install '{info.name}[and-cuda]=={info.version}'")
    return list(dict.fromkeys(hints))
