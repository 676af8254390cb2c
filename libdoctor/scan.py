"""The pipeline: the environment a program starts in, what to scan, each load resolved, then the diagnosis.

``scan``, ``fix``, ``explain``, ``watch`` and ``preflight`` are front ends over :func:`run_scan`; the
judgement itself is the diagnosis engine's (``rules.engine``), which this module only calls.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Optional

from .loader.environment import Environment, append_to_search_path, prepend_to_search_path
from .loader.factstore import FactsStore
from .loader.resolver import MODE_DLOPEN, LoadRequest, LoadResult, Resolver
from .rules.facts import DlopenCheck, ScanInputs, ScanReport, TargetReport, same_environment
from .repair.fixer import applied_folders, journal_links, repair_prefix, shim_dir
from .targets import Activation, Target, conda_activation, discover

OTHER_CLASS_LOADERS = {(32, 3): "/lib/ld-linux.so.2", (32, 40): "/lib/ld-linux-armhf.so.3"}  # i386, ARM


# -- the environment a program of an env starts in -----------------------------------------

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


def launch_environ(where: Optional[str], activate: bool = True, root: Optional[str] = None,
                   conda: bool = True) -> tuple[dict[str, str], tuple[Activation, ...], tuple[str, ...]]:
    """The one environment scan judges, fix verifies, watch watches and preflight starts its command in: this
    process's variables, the env's ``activate.d`` scripts (``conda``: when ``where`` is a conda env that is
    not the active one), and the folders libdoctor's applied repairs put on LD_LIBRARY_PATH (the shim folder
    and the folders put first, before it; the others after it)."""
    environ, activations = process_environ(where if conda else None, activate)
    front, back = applied_folders(where, root)
    value = prepend_to_search_path(append_to_search_path(environ.get("LD_LIBRARY_PATH"), back), front)
    if value is not None:
        environ["LD_LIBRARY_PATH"] = value
    return environ, activations, tuple(dict.fromkeys(front + back))


# -- resolving -------------------------------------------------------------------------------

def target_request(target: Target) -> LoadRequest:
    return LoadRequest(target.path, target.mode == MODE_DLOPEN and bool(target.caller), target.caller,
                       preloads=target.preloads)


def dlopen_checks(resolver: Resolver, target: Target, result: LoadResult) -> tuple[DlopenCheck, ...]:
    """Each probable ``dlopen`` name (a ``lib*.so*`` string of a target that imports ``dlopen``) resolved as a
    dlopen by the target."""
    if result.root_error is not None or not result.objects:
        return ()
    root = result.objects[result.new_from] if result.mode == MODE_DLOPEN else result.objects[0]
    known = set(root.facts.needed) | {o.requested_as for o in result.objects} | {
        o.facts.soname for o in result.objects if o.facts.soname}
    checks = []
    for name in sorted(resolver.view.store.dlopen_names(target.path) - known):
        request = LoadRequest(name, True, target.path)
        checks.append(DlopenCheck(name, request, resolver.request(request)))
    return tuple(checks)


def _other_class(resolver: Resolver, target: Target, others: dict) -> tuple[Optional[Resolver], Optional[str]]:
    """A program or library of the other ELF class (32-bit on a 64-bit host) is started by its own loader: it is
    resolved as that loader would (its system folders, its class and machine) where the loader exists; else it is
    not judged, and says why."""
    if target.caller:
        return None, None  # dlopened by a program of this class: "wrong ELF class" is then the real failure
    facts = resolver.view.probe(resolver.env.absolute(target.path)).facts
    host = resolver.env.loader.host
    if facts is None or facts.elf_class == host.elf_class:
        return None, None
    loader = facts.interp or OTHER_CLASS_LOADERS.get((facts.elf_class, facts.machine), "its loader")
    if not os.path.exists(loader):
        return None, (f"{target.path}: a {facts.elf_class}-bit object and this machine has no {facts.elf_class}-bit "
                      f"loader ({loader}), so nothing here can load it: not judged")
    if loader not in others:
        from .loader.elffacts import HostAbi
        from .loader.loaderinfo import probe_other_loader

        info = probe_other_loader(loader, HostAbi(facts.elf_class, facts.little_endian, facts.machine))
        others[loader] = Resolver(resolver.env.replace(loader=info), resolver.view.store)
    return others[loader], (f"{target.path}: a {facts.elf_class}-bit object, resolved as {loader} "
                            f"(glibc {others[loader].info.glibc_version or '?'}) loads it")


@dataclass(frozen=True)
class Consulted:
    """What a target's loads looked at: the paths they opened or asked for, the (folder, name) pairs they
    searched, and the folders themselves (as written and as real paths)."""

    paths: frozenset[str]
    lookups: frozenset[tuple[str, str]]
    folders: frozenset[str]


def consulted(target: TargetReport, real: dict[str, str], env: Environment) -> Consulted:
    """``real``: the real paths already known in this verification; ``env``: where relative search folders (an
    empty RUNPATH element: the current folder) are."""
    from .rules.common import searched_folders

    def both(path: str) -> tuple[str, str]:
        if path not in real:
            real[path] = os.path.realpath(path)
        return path, real[path]

    paths = set(both(os.path.abspath(target.target.path)))
    lookups: set[tuple[str, str]] = set()
    folders: set[str] = set()
    for result in [target.result] + [c.result for c in target.dlopens]:
        for loaded in result.objects:
            paths.update((loaded.path, loaded.realpath))
        for resolution in result.resolutions:
            if "/" in resolution.name:
                paths.update(both(os.path.normpath(env.absolute(resolution.name))))
            for searched in searched_folders(resolution):
                for folder in both(os.path.normpath(env.absolute(searched))):
                    folders.add(folder)
                    lookups.add((folder, resolution.name))
    return Consulted(frozenset(paths), frozenset(lookups), frozenset(folders))


def _touched(target: TargetReport, changed: tuple[str, ...], real: dict[str, str], env: Environment) -> bool:
    """Could a change have altered what the target's loads find?  Yes when a changed path (``changed``: each as
    written and as a real path) is one they opened or asked for by name in a folder they searched, a folder they
    searched (or one above it), or a hwcaps subfolder of one: a file appearing or leaving under a name no load
    asked for changes none of them."""
    seen = consulted(target, real, env)
    for path in changed:
        folder, name = os.path.split(path)
        if path in seen.paths or (folder, name) in seen.lookups or path in seen.folders:
            return True
        if any(f.startswith(path + "/") for f in seen.folders):
            return True  # a folder above a searched one was created, moved or removed
        parts = path.split("/")
        if "glibc-hwcaps" in parts and "/".join(parts[:parts.index("glibc-hwcaps")]) in seen.folders:
            return True
    return False


def _reusable(previous: Optional[ScanReport], env: Environment, inputs: ScanInputs,
              changed: tuple[str, ...]) -> dict[LoadRequest, TargetReport]:
    """The previous verification's loads that no change touched, by request (the daemon names what changed)."""
    if (previous is None or not changed or not all(os.path.isabs(p) for p in changed) or previous.inputs != inputs
            or not same_environment(env, previous.env)):
        return {}
    real: dict[str, str] = {}
    forms = tuple(dict.fromkeys(form for p in changed for form in (os.path.normpath(p), os.path.realpath(p))))
    return {t.request: t for t in previous.targets if not _touched(t, forms, real, previous.env)}


def _resolve_targets(report: ScanReport, infos: dict, reuse: Optional[dict] = None) -> None:
    resolver = report.resolver
    assert resolver is not None
    others: dict[str, Resolver] = {}
    for target in report.discovery.targets:
        other, note = _other_class(resolver, target, others)
        if note:
            report.discovery.notes.append(note)
        if note and other is None:
            report.unjudged.append((target.path, note))
            continue
        if other is not None:
            request = target_request(target)
            report.targets.append(TargetReport(target, request, other.request(request)))
            continue
        info = infos.get(target.group)
        if info is not None and info.preloads:
            target = replace(target, preloads=info.preloads)
        request = target_request(target)
        kept = (reuse or {}).get(request)
        if kept is not None and kept.target == target:
            report.targets.append(kept)  # no change reached anything this load consulted
            continue
        result = resolver.request(request)
        # A framework's objects are judged by its own load model; a plain object's lib*.so* strings are guesses.
        guess = report.inputs.dlopen_strings and info is None
        checks = dlopen_checks(resolver, target, result) if guess else ()
        feature = info.feature_of(target.path) if info is not None and info.optional_objects else None
        report.targets.append(TargetReport(target, request, result, checks, feature))


def _check_frameworks(report: ScanReport, infos: dict) -> None:
    from .gpu.frameworkcheck import check_framework

    resolver = report.resolver
    assert resolver is not None and report.driver is not None
    python = report.discovery.environment.python if report.discovery.environment else None
    for label, info in infos.items():
        group = [t for t in report.targets if t.target.group == label]
        closure_missing = tuple(dict.fromkeys(r.name for t in group if t.result.root_error is None and not t.feature
                                              for r in t.result.missing if not r.fatal))
        static = tuple(resolver.request(replace(t.request, preloads=())) for t in group) if info.preloads else ()
        report.frameworks.append(check_framework(resolver, info, python, closure_missing, report.driver,
                                                 tuple(t.result for t in group), static,
                                                 report.inputs.libraries_only))


def _settled(infos: dict, resolver: Optional[Resolver], python: Optional[str]) -> dict:
    """Each framework's preloads as its own sequence makes them on this machine (torch: by what its first load
    does)."""
    from .gpu.sequence import settled_preloads

    settled = {}
    for label, info in infos.items():
        if info.preload_plan is not None and resolver is not None:
            info = replace(info, preloads=settled_preloads(info.preload_plan, resolver, python))
        settled[label] = info
    return settled


def run_scan(paths: tuple[str, ...] = (), env: Optional[Environment] = None, store: Optional[FactsStore] = None,
             caller: Optional[str] = None, prefix: Optional[str] = None, python: Optional[str] = None,
             dlopen_strings: bool = True, look_in: tuple[str, ...] = (), probe: bool = False,
             previous: Optional[ScanReport] = None, activate: bool = True, symbols: bool = True,
             only: tuple[str, ...] = (), skip: tuple[str, ...] = (), in_place: bool = False,
             accept: tuple[str, ...] = (), force: bool = False, heal: bool = False, root: Optional[str] = None,
             diagnosis: bool = True, libraries_only: bool = False, grading: bool = True,
             changed: tuple[str, ...] = ()) -> ScanReport:
    """Resolve, then diagnose.  With ``previous``, a report whose question, environment and files are all
    unchanged is returned as it is; with ``changed`` too (the paths the daemon saw change), the loads of
    ``previous`` that consulted none of them are kept and only the others are resolved again."""
    store = store or FactsStore()
    inputs = ScanInputs(tuple(paths), caller, prefix, python, dlopen_strings, tuple(look_in), symbols, tuple(only),
                        tuple(skip), in_place, tuple(accept), force, activate, heal, libraries_only)
    where = repair_prefix(tuple(paths), prefix, python)
    activations: tuple[Activation, ...] = ()
    additions: tuple[str, ...] = ()
    environ: Optional[dict[str, str]] = None
    if env is None:
        environ, activations, additions = launch_environ(where, activate, root, conda=bool(prefix or python))
        env = Environment.from_process(environ=environ,
                                       probe_cache_dir=os.path.dirname(store.path) if store.path else None)
    if previous is not None and previous.still_valid(env, inputs):
        return previous
    cache_paths = [e.path for e in env.cache.entries] if env.cache else []
    discovery = discover(tuple(paths), caller, prefix, python, cache_paths)
    report = ScanReport(env, discovery, inputs, cache_note=store.load_problem, resolver=Resolver(env, store),
                        activations=activations, additions=additions, environ=environ)
    infos = {}
    if discovery.frameworks and discovery.environment:
        from .gpu.frameworks import framework_info

        infos = {f"{f.name} {f.version}": framework_info(f, discovery.environment) for f in discovery.frameworks}
        infos = _settled(infos, report.resolver, discovery.environment.python)
    _resolve_targets(report, infos, _reusable(previous, env, inputs, changed))
    if infos or discovery.fallback:  # the driver verdict leads every report about a GPU stack
        from .gpu.frameworkcheck import machine_driver

        report.driver = machine_driver(env, resolver=report.resolver)
    if infos:
        _check_frameworks(report, infos)
        if probe and discovery.environment and discovery.environment.python:
            from .gpu.probe import run_probe

            report.probes = [run_probe(discovery.environment.python, f, environ=report.environ)
                             for f in report.frameworks]  # the framework started in the environment judged
    if diagnosis:
        _diagnose(report, store, where, root, grading)
    return report


def grade_repairs(report: ScanReport, store: FactsStore, root: Optional[str] = None) -> None:
    """Complete a diagnosis made without grading (the daemon's first look), on the same resolved loads."""
    if report.diagnosis is not None and not report.diagnosis.graded:
        inputs = report.inputs
        _diagnose(report, store, repair_prefix(inputs.paths, inputs.prefix, inputs.python), root, True)


def _diagnose(report: ScanReport, store: FactsStore, where: Optional[str], root: Optional[str],
              grading: bool = True) -> None:
    from .repair.fix import folder_identities
    from .rules.base import Placement, Policy
    from .rules.engine import diagnose

    inputs = report.inputs
    placement = Placement(inputs.in_place, shim_dir(where, root))
    policy = Policy(inputs.accept, inputs.force, inputs.heal)
    report.diagnosis = diagnose(report, store, placement, policy, our_links=lambda: journal_links(root), grade=grading)
    report.folder_identities = folder_identities(report.diagnosis.chosen)
