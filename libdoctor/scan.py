"""The scan pipeline: discover targets, resolve each in one Environment, collect problems.

``scan``, ``fix``, ``watch`` and ``preflight`` are front ends over :func:`run_scan`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Optional

from .candidates import Candidate, CandidateFinder
from .loader.environment import Environment
from .loader.factstore import FactsStore
from .loader.resolver import MODE_DLOPEN, MODE_EXEC, MODE_LIST, LoadResult, Resolution, Resolver
from .targets import Activation, Discovery, Target, conda_activation, discover, python_env

if TYPE_CHECKING:
    from .gpu.impostor import BuiltFor, Impostor


ROLE_WORDS = {"gate": "needed for the GPU", "lazy": "loaded on first use", "optional": "optional"}  # users' words
OTHER_CLASS_LOADERS = {(32, 3): "/lib/ld-linux.so.2", (32, 40): "/lib/ld-linux-armhf.so.3"}  # i386, ARM


def shown_name(name: str, limit: int = 120) -> str:
    """A name as a report shows it: a crafted 65,000-byte DT_NEEDED is cut, with its length."""
    return name if len(name) <= limit else f"{name[:60]}... ({len(name)}+ bytes)"


@dataclass(frozen=True)
class Problem:
    kind: str  # missing | missing-dlopen | version | fatal | symbol | impostor | bad-target | driver | optional
    target: str
    message: str
    soname: Optional[str] = None
    needed_by: Optional[str] = None
    chain: tuple[str, ...] = ()
    resolution: Optional[Resolution] = None
    candidates: tuple[Candidate, ...] = ()
    severity: str = "error"  # "warning", "note" (an optional feature): shown, but the exit status stays 0
    links: tuple[str, ...] = ()  # impostor: the path asked for and each symlink's text to the real file
    feature: Optional[str] = None  # optional: the feature the missing library serves

    @property
    def is_error(self) -> bool:
        return self.severity == "error"


@dataclass(frozen=True)
class DlopenCheck:
    """A probable ``dlopen(name)`` by the target (a ``lib*.so*`` string in its read-only data)."""

    name: str
    result: LoadResult
    caller: Optional[str] = None  # the program, when the dlopen happens inside one (python)
    via: Optional[str] = None  # the object making the call, dlopened first by the program
    preloads: tuple[str, ...] = ()
    loaded_by: Optional[str] = None  # the extension module that brought ``via`` in

    def rerun(self, resolver: Resolver, target_path: str) -> LoadResult:
        """The same dlopen again (in another Environment)."""
        if self.caller:
            return resolver.dlopen(self.caller, self.name, via=self.via, preloads=self.preloads,
                                   loaded_by=self.loaded_by)
        return resolver.dlopen(target_path, self.name)


@dataclass(frozen=True)
class TargetReport:
    target: Target
    result: LoadResult
    problems: tuple[Problem, ...]
    dlopens: tuple[DlopenCheck, ...] = ()

    @property
    def healthy(self) -> bool:
        return not any(p.is_error for p in self.problems)


@dataclass
class ScanReport:
    env: Environment
    discovery: Discovery
    targets: list[TargetReport] = field(default_factory=list)
    cache_note: Optional[str] = None
    frameworks: list = field(default_factory=list)  # FrameworkReport (imported only when there are frameworks)
    framework_problems: list[Problem] = field(default_factory=list)
    driver: Optional[object] = None  # DriverInfo
    probes: list = field(default_factory=list)  # ProbeResult, with --probe
    inputs: tuple = ()  # what run_scan was asked, to tell whether a report can be reused
    resolver: Optional[Resolver] = None
    findings: list = field(default_factory=list)  # the rules' Findings (hazards, framework fit), with findings=True
    activations: tuple = ()  # targets.Activation: what the env's conda activate.d scripts set

    def still_valid(self, env: Environment, inputs: tuple) -> bool:
        """Nothing this report depends on has changed: the same question, environment and files."""
        if inputs != self.inputs or self.resolver is None or self.probes:
            return False
        if not _same_environment(env, self.env):
            return False
        if self.driver is not None:
            from .gpu.frameworkcheck import machine_driver

            if machine_driver(env, resolver=self.resolver) != self.driver:
                return False
        return self.discovery.unchanged() and self.resolver.view.unchanged()


    @property
    def problems(self) -> list[Problem]:
        return [p for t in self.targets for p in t.problems] + self.framework_problems

    @property
    def healthy(self) -> bool:
        return not any(p.is_error for p in self.problems) and not any(f.severity == "error" for f in self.findings)


def _same_environment(a: Environment, b: Environment) -> bool:
    return (a.loader == b.loader and a.cwd == b.cwd and a.ld_library_path == b.ld_library_path
            and a.ld_preload == b.ld_preload and a.preload_file == b.preload_file and dict(a.overlay) == dict(b.overlay)
            and (a.cache.entries if a.cache else None) == (b.cache.entries if b.cache else None))


def _chain(result: LoadResult, requester: Optional[str]) -> tuple[str, ...]:
    """From the root down to ``requester``, along the objects' first requesters."""
    by_path = {o.path: o for o in result.objects}
    chain: list[str] = []
    current = requester
    while current is not None and current not in chain and len(chain) < 64:
        chain.append(current)
        obj = by_path.get(current)
        current = obj.needed_by if obj is not None else None
    return tuple(reversed(chain))


def _searched(resolution: Resolution) -> tuple[str, ...]:
    return tuple(f.folder for s in resolution.sources for f in s.folders)


def problems_of(target: Target, result: LoadResult, finder: CandidateFinder) -> tuple[Problem, ...]:
    if result.root_error is not None:
        if "statically linked" in result.root_error:
            return ()
        return (Problem("bad-target", target.path, result.root_error),)
    problems = []
    seen: set[str] = set()
    for resolution in result.relevant_resolutions():
        if resolution.found or resolution.name in seen:
            continue
        seen.add(resolution.name)
        kind = "fatal" if resolution.fatal else "missing"
        message = (f"{shown_name(resolution.name)}: {resolution.error}" if resolution.fatal
                   else f"{shown_name(resolution.name)} not found")
        found = () if resolution.fatal else finder.find(resolution.name, _searched(resolution))
        problems.append(Problem(kind, target.path, message, resolution.name, resolution.requester,
                                _chain(result, resolution.requester), resolution, found))
    for version in result.version_problems:
        if version.fatal:
            problems.append(Problem("version", target.path, version.message, version.file, version.consumer,
                                    _chain(result, version.consumer)))
    return tuple(problems)


def impostor_problems(target: Target, result: LoadResult, env: Environment, built: Optional[BuiltFor] = None
                      ) -> tuple[Problem, ...]:
    """Every name this load resolved, judged by the file behind it (a cuDNN 8 found as libcudnn.so.7)."""
    from .gpu.impostor import judge_file

    by_path = {o.path: o for o in result.objects}
    problems = []
    seen: set[tuple[str, str]] = set()
    for resolution in result.relevant_resolutions():
        obj = by_path.get(resolution.path) if resolution.path else None
        if obj is None or (resolution.name, obj.path) in seen:
            continue
        seen.add((resolution.name, obj.path))
        impostor = judge_file(resolution.name, env.absolute(obj.path), obj.facts.soname,
                              *((built.cuda, built.cudnn, built.framework) if built else ()))
        if impostor is not None:
            problems.append(impostor_problem(target.path, impostor, resolution.requester,
                                             _chain(result, resolution.requester)))
    return tuple(problems)


def _needed_by_group(resolver: Resolver, targets: list[Target]) -> dict[str, set[str]]:
    """Per group (a framework, a folder), every name its objects need."""
    needed: dict[str, set[str]] = {}
    for target in targets:
        facts = resolver.view.probe(resolver.env.absolute(target.path)).facts
        if facts is not None:
            needed.setdefault(target.group, set()).update(facts.needed)
    return needed


def _loaded_by_others(resolver: Resolver, target: Target, needed_in_group: dict[str, set[str]]) -> bool:
    """A framework library another object of the framework needs is never loaded alone: its imports are
    judged in that object's load, where the rest of the framework (libc10_cuda for libtorch_nvshmem) is
    in scope.  Judged alone it would miss symbols the real process has."""
    if not target.caller:
        return False
    facts = resolver.view.probe(resolver.env.absolute(target.path)).facts
    names = {os.path.basename(target.path)} | ({facts.soname} if facts is not None and facts.soname else set())
    return bool(names & needed_in_group.get(target.group, set()))


def symbol_problems(target: Target, result: LoadResult, env: Environment, store: Optional[FactsStore] = None
                    ) -> tuple[Problem, ...]:
    """Imports no object in the lookup scope defines, one problem per consumer (a load that already misses a
    library is not judged: the symbol may live in the missing one)."""
    from .loader.binding import unbound_symbols

    if not result.ok or not result.objects:
        return ()
    scope = [env.absolute(o.path) for o in result.objects]
    consumers = scope[result.new_from:] if result.mode == MODE_DLOPEN else scope
    by_consumer: dict[str, list] = {}
    for unbound in unbound_symbols(consumers, scope, store):
        by_consumer.setdefault(unbound.consumer, []).append(unbound)
    problems = []
    for consumer, missing in by_consumer.items():
        others = [u.name for u in missing[1:]]
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        more = f" (and {len(others)} more: {shown})" if others else ""
        problems.append(Problem("symbol", target.path, missing[0].message + more, missing[0].file, consumer,
                                _chain(result, consumer)))
    return tuple(problems)


def impostor_problem(target: str, impostor: Impostor, requester: Optional[str], chain: tuple[str, ...] = ()
                     ) -> Problem:
    return Problem("impostor", target, impostor.message, impostor.wanted, requester, chain,
                   severity=impostor.severity, links=impostor.chain)


def dlopen_checks(resolver: Resolver, target: Target, result: LoadResult) -> tuple[DlopenCheck, ...]:
    """Resolve each probable dlopen name as a dlopen by the target itself."""
    from .loader.symbols import probable_dlopen_names

    if result.root_error is not None or not result.objects:
        return ()
    root = result.objects[result.new_from] if result.mode == MODE_DLOPEN else result.objects[0]
    known = set(root.facts.needed) | {o.requested_as for o in result.objects} | {
        o.facts.soname for o in result.objects if o.facts.soname}
    checks = []
    for name in sorted(probable_dlopen_names(target.path) - known):
        checks.append(DlopenCheck(name, resolver.dlopen(target.path, name)))
    return tuple(checks)


def dlopen_problems(target: Target, checks: tuple[DlopenCheck, ...], finder: CandidateFinder
                    ) -> tuple[Problem, ...]:
    problems = []
    for check in checks:
        if check.result.ok:
            continue
        wanted = next((r for r in check.result.resolutions if r.name == check.name), None)
        if wanted is not None and not wanted.found:
            problems.append(Problem("missing-dlopen", target.path,
                                    f"{check.name} not found (probable dlopen by {target.path})", check.name,
                                    target.path, (target.path,), wanted, finder.find(check.name, _searched(wanted))))
        else:
            problems.extend(problems_of(target, check.result, finder))
    return tuple(problems)


def _other_class_note(resolver: Resolver, target: Target) -> Optional[str]:
    """A program or library of the other ELF class (32-bit on a 64-bit host) is started by its own loader,
    not by the one modelled here: say so instead of calling it broken."""
    if target.caller:
        return None  # dlopened by a program of this class: "wrong ELF class" is then the real failure
    facts = resolver.view.probe(resolver.env.absolute(target.path)).facts
    host = resolver.env.loader.host
    if facts is None or facts.elf_class == host.elf_class:
        return None
    loader = facts.interp or OTHER_CLASS_LOADERS.get((facts.elf_class, facts.machine), "its loader")
    if not os.path.exists(loader):
        return (f"{target.path}: a {facts.elf_class}-bit object and this machine has no {facts.elf_class}-bit "
                f"loader ({loader}), so nothing here can load it: not scanned")
    return (f"{target.path}: a {facts.elf_class}-bit object, started by {loader}; libdoctor models the "
            f"{host.elf_class}-bit loader only: not scanned")


def resolve_target(resolver: Resolver, target: Target) -> LoadResult:
    if target.mode == MODE_DLOPEN and target.caller:
        return resolver.dlopen(target.caller, target.path, preloads=target.preloads)
    mode = MODE_EXEC if resolver.is_program(target.path) else MODE_LIST
    return resolver.load(target.path, mode)


def process_environ(prefix: Optional[str], activate: bool = True) -> tuple[dict[str, str], tuple[Activation, ...]]:
    """The variables a program of ``prefix`` starts with: this process's, plus what ``conda activate`` would
    set when ``prefix`` is a conda env other than the active one."""
    environ = dict(os.environ)
    if not activate or not prefix or not os.path.isdir(os.path.join(prefix, "conda-meta")):
        return environ, ()
    prefix = os.path.abspath(prefix)
    if os.environ.get("CONDA_PREFIX") and os.path.abspath(os.environ["CONDA_PREFIX"]) == prefix:
        return environ, ()  # already active: this process sees what the scripts set
    return conda_activation(prefix, environ)


def run_scan(paths: tuple[str, ...] = (), env: Optional[Environment] = None, store: Optional[FactsStore] = None,
             caller: Optional[str] = None, prefix: Optional[str] = None, python: Optional[str] = None,
             dlopen_strings: bool = False, look_in: tuple[str, ...] = (), probe: bool = False,
             previous: Optional[ScanReport] = None, findings: bool = True, activate: bool = True,
             symbols: bool = True) -> ScanReport:
    """Scan; with ``previous``, a report whose inputs and files are all unchanged is returned as is."""
    store = store or FactsStore()
    activations: tuple[Activation, ...] = ()
    if env is None:
        environ, activations = process_environ(prefix or (python_env(None, python).prefix if python else None),
                                               activate)
        env = Environment.from_process(environ=environ,
                                       probe_cache_dir=os.path.dirname(store.path) if store.path else None)
    inputs = (tuple(paths), caller, prefix, python, dlopen_strings, tuple(look_in), findings, symbols)
    if previous is not None and previous.still_valid(env, inputs):
        return previous
    cache_paths = [e.path for e in env.cache.entries] if env.cache else []
    discovery = discover(paths, caller, prefix, python, cache_paths)
    resolver = Resolver(env, store)
    report = ScanReport(env, discovery, cache_note=store.load_problem, inputs=inputs, resolver=resolver,
                        activations=activations)
    sites = discovery.environment.site_packages if discovery.environment else ()
    finder: Optional[CandidateFinder] = None
    infos = {}
    if discovery.frameworks and discovery.environment:
        from .gpu.frameworks import framework_info

        infos = {f"{f.name} {f.version}": framework_info(f, discovery.environment) for f in discovery.frameworks}
    built = {label: info.built_for for label, info in infos.items()}
    needed_in_group = _needed_by_group(resolver, discovery.targets) if symbols else {}
    for target in discovery.targets:
        other_class = _other_class_note(resolver, target)
        if other_class:
            discovery.notes.append(other_class)
            continue
        info = infos.get(target.group)
        if info is not None and info.preloads:
            target = replace(target, preloads=info.preloads)
        result = resolve_target(resolver, target)
        checks = dlopen_checks(resolver, target, result) if dlopen_strings else ()
        if finder is None and (not result.ok or not all(c.result.ok for c in checks)):
            finder = CandidateFinder(env, sites, look_in)
        problems = problems_of(target, result, finder) if finder else ()
        if checks and finder:  # a lib*.so* string is a guess at a dlopen (measured: 20x slower, and it finds
            # optional hooks such as libittnotify.so): shown as a warning naming the library, never the verdict
            problems += tuple(replace(p, severity="warning") for p in dlopen_problems(target, checks, finder))
        problems += impostor_problems(target, result, env, built.get(target.group))
        if symbols and not _loaded_by_others(resolver, target, needed_in_group):
            problems += symbol_problems(target, result, env, store)
        feature = info.feature_of(target.path) if info is not None and info.optional_objects else None
        if feature:
            problems = tuple(optional_problem(p, feature) for p in problems)
        report.targets.append(TargetReport(target, result, problems, checks))
    if infos or discovery.fallback:  # the driver verdict leads every report about a GPU stack
        from .gpu.frameworkcheck import machine_driver

        report.driver = machine_driver(env, resolver=resolver)
    if infos:
        finder = finder or CandidateFinder(env, sites, look_in)
        for label, info in infos.items():
            _check_framework(report, resolver, info, label, finder)
        python = report.discovery.environment.python if report.discovery.environment else None
        if probe and python:
            from .gpu.probe import run_probe

            report.probes = [run_probe(python, framework) for framework in report.frameworks]
    if findings:
        from .rules import Placement, RuleContext, scan_findings

        report.findings = scan_findings(RuleContext(report, env, store, Placement(False, "")))
    return report


def optional_problem(problem: Problem, feature: str) -> Problem:
    """A problem of an extension module that serves only an optional feature: a note naming the feature."""
    what = f"{problem.soname} not found" if problem.kind in ("missing", "missing-dlopen") else problem.message
    return replace(problem, kind="optional", severity="note", feature=feature,
                   message=f"optional {feature} unavailable: {what} (needed by {os.path.basename(problem.target)})")


def _check_framework(report: ScanReport, resolver: Resolver, info, label: str,  # noqa: ANN001
                     finder: CandidateFinder) -> None:
    from .gpu.frameworkcheck import check_framework
    from .gpu.frameworks import OPTIONAL

    python = report.discovery.environment.python if report.discovery.environment else None
    group = [t for t in report.targets if t.target.group == label]
    closure_missing = tuple(dict.fromkeys(p.soname for t in group for p in t.problems
                                          if p.kind == "missing" and p.soname))
    static = tuple(resolve_target(resolver, replace(t.target, preloads=())) for t in group) if info.preloads else ()
    framework = check_framework(resolver, info, python, closure_missing, report.driver,
                                tuple(t.result for t in group), static)
    report.frameworks.append(framework)
    for check in framework.checks:
        requester = check.lib.requester or python or label
        if check.impostor is not None:
            problem = impostor_problem(requester, check.impostor, requester)
            _add_problems(report, requester, label, info.preloads, python, (problem,))
        if check.found or check.lib.family == "cuda driver":
            continue  # the driver has its own problem
        if check.lib.role == OPTIONAL:
            feature = check.lib.feature or f"{check.lib.family} support"
            _add_problems(report, requester, label, info.preloads, python, (Problem(
                "optional", requester, f"optional {feature} unavailable: {check.lib.soname} not found "
                f"(dlopened by {os.path.basename(requester)})", check.lib.soname, requester, severity="note",
                feature=feature),))
            continue
        dlopen = DlopenCheck(check.lib.soname, check.result, python, check.lib.requester, info.preloads,
                             check.lib.loaded_by)
        target = Target(requester, label, MODE_DLOPEN, python, info.preloads)
        problems = dlopen_problems(target, (dlopen,), finder)
        role = ROLE_WORDS.get(check.lib.role, check.lib.role)
        problems = tuple(replace(p, message=f"{check.lib.soname} not found ({role} by {info.label}, "
                                            f"dlopened by {os.path.basename(requester)})") for p in problems)
        _add_problems(report, requester, label, info.preloads, python, problems, (dlopen,))
    _driver_problem(report, info, framework, label)


def _add_problems(report: ScanReport, requester: str, label: str, preloads: tuple[str, ...], python: Optional[str],
                  problems: tuple[Problem, ...], dlopens: tuple[DlopenCheck, ...] = ()) -> None:
    """Attach problems (and the dlopens they came from) to the requester's target, adding it when new."""
    index = next((i for i, t in enumerate(report.targets) if t.target.path == requester), None)
    if index is None:
        target = Target(requester, label, MODE_DLOPEN, python, preloads)
        assert report.resolver is not None
        report.targets.append(TargetReport(target, resolve_target(report.resolver, target), (), ()))
        index = len(report.targets) - 1
    existing = report.targets[index]
    report.targets[index] = replace(existing, problems=existing.problems + problems,
                                    dlopens=existing.dlopens + dlopens)


def _driver_problem(report: ScanReport, info, framework, label: str) -> None:  # noqa: ANN001
    if info.cuda_build and report.driver is not None and (not report.driver.present or not framework.fit.ok):
        report.framework_problems.append(Problem("driver", label, framework.because if not report.driver.present
                                                 else framework.fit.reason, "libcuda.so.1"))
