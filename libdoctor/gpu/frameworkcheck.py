"""Per framework: do the libraries it loads at run time resolve, does the driver fit, is the GPU usable?"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, replace
from typing import Optional

from ..loader.environment import Environment
from ..loader.resolver import MODE_DLOPEN, LoadRequest, LoadResult, Resolver
from ..targets import CUDA_NAME
from .catalog import record
from .cudatable import DRIVER_SONAMES, TOOLKIT_EXTRAS, WHEELS, family_of, soname_major
from .versions import real_version
from .driver import DriverFit, DriverInfo, driver_fit, read_driver
from .frameworks import GATE, LAZY, OPTIONAL, ExpectedLib, FrameworkInfo
from .frameworks.base import installed_wheel_file
from .impostor import Impostor, judge_file


@dataclass(frozen=True)
class ExpectedCheck:
    lib: ExpectedLib
    result: LoadResult
    impostor: Optional[Impostor] = None  # found, but the file is something else
    request: Optional[LoadRequest] = None  # the dlopen, to be asked again in another Environment

    @property
    def found(self) -> bool:
        """It loads, or only the driver's own libraries are missing below it (the driver's cause says so)."""
        return self.result.root_error is None and all(r.name in DRIVER_SONAMES for r in self.result.missing)

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
        """Missing libraries; the driver's own (libcuda.so.1) is the driver column's business, an optional
        feature's is a note."""
        names = [c.lib.soname for c in self.checks if not c.found and c.lib.family != "cuda driver"
                 and c.lib.role != OPTIONAL]
        return tuple(dict.fromkeys(n for n in names + list(self.closure_missing) if n not in DRIVER_SONAMES))

    @property
    def unavailable_features(self) -> tuple[tuple[str, str], ...]:
        """(feature, library) of optional features whose library cannot be loaded."""
        return tuple((c.lib.feature or c.lib.family, c.lib.soname) for c in self.checks
                     if not c.found and c.lib.role == OPTIONAL)

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
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{n} {words.get(via, 'through ' + via)}" for via, n in ranked)


def machine_driver(env: Environment, root: Optional[str] = None, resolver: Optional[Resolver] = None) -> DriverInfo:
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
        request = expected_request(lib, info, python)
        if request is None:
            continue
        result = resolver.request(request)
        checks.append(ExpectedCheck(lib, result, _impostor(resolver, info, lib, result), request))
    return tuple(checks)


def expected_request(lib: ExpectedLib, info: FrameworkInfo, python: Optional[str]) -> Optional[LoadRequest]:
    """The framework's dlopen of ``lib``: by the environment's python through the object that makes the call
    (after the framework's preloads), or by that object alone when there is no interpreter."""
    if python is not None:
        via = lib.requester if lib.requester and os.path.exists(lib.requester) else None
        return LoadRequest(lib.soname, True, python, via, info.preloads, lib.loaded_by if via else None)
    if lib.requester is None:
        return None
    return LoadRequest(lib.soname, True, lib.requester)


def _impostor(resolver: Resolver, info: FrameworkInfo, lib: ExpectedLib, result: LoadResult) -> Optional[Impostor]:
    if result.root_error is not None or result.new_from >= len(result.objects):
        return None
    obj = result.objects[result.new_from]
    return judge_file(lib.soname, resolver.env.absolute(obj.path), obj.facts.soname, info.built_for)


def verdict(info: FrameworkInfo, checks: tuple[ExpectedCheck, ...], closure_missing: tuple[str, ...],
            driver: DriverInfo, libraries_only: bool = False, too_old: tuple[Impostor, ...] = ()
            ) -> tuple[DriverFit, Optional[bool], str]:
    """GPU usable or not, and every reason why not, worst first (``libraries_only``: the driver and the device are
    not judged: a CPU build host or an image build)."""
    fit = driver_fit(info.cuda, driver) if not libraries_only else DriverFit(True, "driver not judged")
    name = info.title
    if info.cuda_build is False:
        return fit, False, f"a CPU-only build ({info.flavour})"
    if info.cuda_build is None:
        return fit, None, "not known which CUDA it was built for"
    reasons = [] if libraries_only else machine_reasons(info, checks, driver, fit)
    impostors = [c.impostor for c in checks if c.impostor is not None and c.impostor.severity == "error"
                 and c.lib.role in (GATE, LAZY)]
    wrong = [i for i in impostors if i.kind != "too-old"]
    if wrong:
        reasons.append("; ".join(f"{i.wanted} is really {i.really}" for i in wrong)
                       + f": {name} loads {'it' if len(wrong) == 1 else 'them'} and fails at the first call")
    old = [i for i in impostors if i.kind == "too-old"] + list(too_old)
    if old:
        reasons.append("; ".join(dict.fromkeys(f"{i.really} is older than {name} accepts" for i in old))
                       + f" ({old[0].reason.split(': ', 1)[-1]})")
    gates = [c.lib.soname for c in checks if not c.found and c.lib.role == GATE and c.lib.family != "cuda driver"]
    if gates:
        reasons.append(f"{len(gates)} librar{'y' if len(gates) == 1 else 'ies'} it loads at start cannot be loaded "
                       f"({', '.join(gates)}): {info.on_failure}")
    missing = [m for m in closure_missing if m not in DRIVER_SONAMES]
    if missing:
        reasons.append(f"{', '.join(missing)} missing: {name} fails to load its CUDA libraries")
    lazy = [c.lib.soname for c in checks if not c.found and c.lib.role == LAZY and c.lib.family != "cuda driver"]
    if lazy:
        reasons.append(f"{', '.join(lazy)} (loaded on first use) cannot be loaded: GPU work fails then")
    if reasons:
        return fit, False, "; ".join(reasons)
    if libraries_only:
        return fit, True, "every library resolves (driver and device not judged: --libraries-only)"
    return fit, True, f"every library resolves and {fit.reason}"


def machine_reasons(info: FrameworkInfo, checks: tuple[ExpectedCheck, ...], driver: DriverInfo,
                    fit: DriverFit) -> list[str]:
    """Why the machine cannot run the framework: no GPU, no driver, a driver that does not fit, no device, no NVML."""
    name = info.title
    if not driver.present:
        what = "no NVIDIA GPU in this machine" if driver.no_gpu else "no NVIDIA driver"
        return [f"{what}: {info.on_failure}"]
    if not fit.ok:
        return [fit.reason]
    if not driver.device_nodes:
        return [f"no /dev/nvidia* device nodes (a container started without the GPU?): {name} sees no GPU"]
    if any(c.lib.soname == "libnvidia-ml.so.1" and not c.found for c in checks):
        return [f"libnvidia-ml.so.1 (NVML, installed with the driver) not found: {name} needs it"]
    return []


def check_framework(resolver: Resolver, info: FrameworkInfo, python: Optional[str], closure_missing: tuple[str, ...],
                    driver: DriverInfo, closures: tuple[LoadResult, ...] = (),
                    static_closures: tuple[LoadResult, ...] = (), libraries_only: bool = False) -> FrameworkReport:
    checks = check_expected(resolver, info, python)
    sources = cuda_sources(closures, checks, info.preloads)
    for _round in range(2 if info.cuda_build else 0):  # what the libraries found load, then what those load
        own = own_dlopens(info, sources, {c.lib.soname for c in checks})
        if not own:
            break
        checks += check_expected(resolver, replace(info, expected=own), python)
        sources = cuda_sources(closures, checks, info.preloads)
    fit, usable, because = verdict(info, checks, closure_missing, driver, libraries_only, too_old_copies(info, sources))
    return FrameworkReport(info, checks, closure_missing, fit, usable, because, sources,
                           cuda_sources(static_closures, ()) if static_closures else ())


def own_dlopens(info: FrameworkInfo, sources: tuple[tuple[str, str, str], ...], known: set[str]
                ) -> tuple[ExpectedLib, ...]:
    """What the CUDA libraries the framework gets load themselves (the catalog's ``dlopens``): cuDNN's
    sub-libraries and NVRTC, NVRTC's builtins; each asked from the copy that makes the call."""
    wanted: dict[str, ExpectedLib] = {}
    major_cuda = str(cuda_major(info) or "")
    for soname, path, _via in sources:
        entry = record(family_of(soname))
        major = soname_major(soname)
        if entry is None or major is None:
            continue
        for own in entry.own_dlopens(str(major)):
            name = _own_name(own.name, entry.family, path, soname, major_cuda)
            if name is None or name in known or name in wanted:
                continue
            if own.beside_first and os.path.exists(os.path.join(os.path.dirname(path), name)):
                continue  # found in the caller's own folder before any search
            wanted[name] = ExpectedLib(name, family_of(name) or entry.family, LAZY, _caller_of(name, path),
                                       feature=None)
    return tuple(wanted.values())


def _own_name(template: str, family: str, path: str, soname: str, cuda: str) -> Optional[str]:
    if "{release}" in template:
        found = real_version(path, family, soname)
        if found is None or len(found.version) < 2:
            return None
        return template.replace("{release}", f"{found.version[0]}.{found.version[1]}")
    if "{cuda_major}" in template:
        return template.replace("{cuda_major}", cuda) if cuda else None
    return template


def _caller_of(name: str, path: str) -> str:
    """cuDNN 8's sub-libraries make its NVRTC call: the one beside the copy loaded, when it is there."""
    if name == "libnvrtc.so":
        beside = os.path.join(os.path.dirname(path), "libcudnn_cnn_infer.so.8")
        if os.path.exists(beside):
            return beside
    return path


def too_old_copies(info: FrameworkInfo, sources: tuple[tuple[str, str, str], ...]) -> tuple[Impostor, ...]:
    """The CUDA libraries the framework's loads map that fail its own version check."""
    built = info.built_for
    found = []
    for soname, path, _via in sources:
        judged = judge_file(soname, path, soname, built)
        if judged is not None and judged.kind == "too-old":
            found.append(judged)
    return tuple(found)


def cuda_sources(closures: tuple[LoadResult, ...], checks: tuple[ExpectedCheck, ...], preloads: tuple[str, ...] = ()
                 ) -> tuple[tuple[str, str, str], ...]:
    """(soname, path, how the loader found it) of every CUDA library, once: the preloads and what they
    brought in, then what each load that succeeds maps (a failing dlopen maps nothing)."""
    sources: dict[str, tuple[str, str, str]] = {}
    for path in preloads:
        if CUDA_NAME.match(os.path.basename(path)):
            sources[os.path.realpath(path)] = (os.path.basename(path), path, "preload")
    for result in closures:
        before = result.objects[:result.new_from] if result.mode == MODE_DLOPEN and preloads else ()
        for obj in tuple(before) + (result.closure() if result.ok else ()):
            name = os.path.basename(obj.path)
            if CUDA_NAME.match(name) and obj.realpath not in sources:
                sources[obj.realpath] = (obj.facts.soname or name, obj.path, obj.via)
    for check in checks:
        found_at = check.path
        if check.found and found_at and os.path.realpath(found_at) not in sources:
            via = next((r.via for r in check.result.resolutions if r.name == check.lib.soname), "?")
            sources[os.path.realpath(found_at)] = (check.lib.soname, found_at, via)
    return tuple(sources.values())


def _wants(framework: FrameworkReport, soname: Optional[str]) -> bool:
    return soname in framework.missing or any(c.lib.soname == soname for c in framework.checks)


def fitting_packages(soname: Optional[str], frameworks: list[FrameworkReport]) -> list[str]:
    """The package that provides exactly ``soname`` for the framework that wants it: the framework's own
    extra (``jax[cuda12]``, ``tensorflow[and-cuda]``, ``cupy-cuda12x[ctk]``), else the pin in its own
    requirements (torch's nvidia-* wheels).  Nothing for a library already installed where the framework
    can be told to look (:func:`reach_hint` says how)."""
    family = family_of(soname or "")
    wheel = WHEELS.get(family or "")
    extra = TOOLKIT_EXTRAS.get(family or "")
    hints = []
    for framework in frameworks:
        info = framework.info
        if not _wants(framework, soname) or installed_for(framework, soname):
            continue
        for requirement in info.requirements if wheel else ():
            spec = requirement.partition(";")[0].strip()
            if wheel and re.match(rf"{re.escape(wheel)}(-cu\d+)?\b", spec):
                hints.append(f"pip install '{spec}'")
            elif extra and spec.startswith("cuda-toolkit[") and extra in spec.split("]", 1)[0]:
                hints.append(f"pip install 'cuda-toolkit[{extra}]{spec.split(']', 1)[1]}'")
        if info.install and (wheel or soname in framework.missing):
            hints.append(info.install)
    return list(dict.fromkeys(hints))


def cuda_major(info: FrameworkInfo) -> Optional[int]:
    match = re.match(r"(\d+)", info.cuda or "")
    return int(match.group(1)) if match else None


def installed_for(framework: FrameworkReport, soname: Optional[str]) -> Optional[str]:
    """The NVIDIA wheel file of the framework's own environment that holds ``soname``, when the framework
    has a way to reach it (ONNX Runtime's ``preload_dlls()``)."""
    info = framework.info
    if not soname or info.reach is None or info.package_dir is None:
        return None
    return installed_wheel_file(os.path.dirname(info.package_dir), soname, cuda_major(info))


def installed_unreached(soname: Optional[str], frameworks: list[FrameworkReport]) -> bool:
    """``soname`` is installed (an NVIDIA wheel) for a framework that wants it and can be told to look there."""
    return any(_wants(f, soname) and installed_for(f, soname) for f in frameworks)


def reach_hint(sonames: list[str], frameworks: list[FrameworkReport]) -> Optional[tuple[str, str]]:
    """(what the framework offers, the command to paste) when every one of ``sonames`` is installed as an NVIDIA
    wheel of the framework's environment that its default search does not reach."""
    for framework in frameworks:
        if not sonames or not all(_wants(framework, s) for s in sonames):
            continue
        files = [installed_for(framework, s) for s in sonames]
        if all(files):
            folders = ":".join(dict.fromkeys(os.path.dirname(f) for f in files if f))
            return (f"{framework.info.title} finds these NVIDIA wheels only when told where: "
                    f"{framework.info.reach}, or put their folders on LD_LIBRARY_PATH",
                    f"export LD_LIBRARY_PATH={folders}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}")
    return None
