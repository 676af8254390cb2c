"""Every action is graded by asking the loader again, with the change laid over (nothing is touched).

A change is laid over the Environment (a hypothetical link, a folder before or after LD_LIBRARY_PATH,
a link hidden as if renamed aside), then every load of the scan that asks for a name the change
touches is made again, with the same resolver, impostor judgement and symbol binding scan uses:

* ``broken``: a name it should provide is still not found or served by a copy that cannot serve; a
  name that resolved no longer does; a fatal version need or an import appears that no object
  defines; a dlopen consumer's dlsym names are not exported; a pairing the CUDA table knows is broken;
* ``risky``: everything resolves and binds, but some copy it brings is unproven (another soname major
  or CUDA release), or a renamed link leaves its name missing;
* ``safe``: the same library, soname and release; every version node and symbol present.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional

from ..gpu.cudatable import describe, stem_of
from ..gpu.impostor import NOT_A_SUBSTITUTE, SERVES, UNPROVEN, BuiltFor, judge_substitute
from ..loader.environment import Environment
from ..loader.binding import Unbound, unbound_symbols
from ..loader.resolver import MODE_DLOPEN, LoadedObject, LoadRequest, LoadResult, Resolver
from ..loader.symbols import identifier_strings, symbols_of
from .base import FRONT, GRADES, Action, RuleContext
from .common import built_for

MAX_LISTED = 8


@dataclass(frozen=True)
class ObservedLoad:
    """A load the scan made, to be made again under a change."""

    request: LoadRequest
    result: LoadResult
    group: str  # whose load it is (a framework label or an argument)
    dlsym_by: Optional[str] = None  # a probable dlopen's consumer (--dlopen-strings), whose dlsym names are read


def observed_loads(ctx: RuleContext) -> list[ObservedLoad]:
    report = ctx.report
    loads = []
    for target in report.targets:
        loads.append(ObservedLoad(target.request, target.result, target.target.group))
        for check in target.dlopens:
            loads.append(ObservedLoad(check.request, check.result, target.target.group,
                                      check.request.via or check.request.caller))
    for framework in report.frameworks:  # a framework library (1 GB for TensorFlow) is never read for strings:
        for check in framework.checks:   # the CUDA table and the version rules judge what it dlopens
            if check.request is not None:
                loads.append(ObservedLoad(check.request, check.result, framework.info.label))
    return loads


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def apply_to(env: Environment, action: Action, shim_dir: str) -> Environment:
    """``env`` as it will be once ``action`` is made."""
    if action.kind == "retire" and action.path:
        env = env.with_hidden([action.path])
    if action.link and action.target:
        env = env.with_links({action.link: action.target})
        if os.path.dirname(action.link) == shim_dir:
            env = env.with_search_folders([], front=[shim_dir])  # the shim folder comes first
    if action.folder:
        env = (env.with_search_folders([], front=[action.folder]) if action.position == FRONT
               else env.with_search_folders([action.folder]))
    return env


class Grader:
    def __init__(self, ctx: RuleContext) -> None:
        self.ctx = ctx
        self.loads = observed_loads(ctx)
        self._folder_names: dict[str, frozenset[str]] = {}
        self._before: dict[tuple[str, ...], tuple[Resolver, dict[LoadRequest, LoadResult]]] = {}

    def environment(self, actions: Iterable[Action]) -> Environment:
        env = self.ctx.env
        for action in actions:
            env = apply_to(env, action, self.ctx.placement.shim_dir)
        return env

    def _names_in(self, folder: str) -> frozenset[str]:
        if folder not in self._folder_names:
            try:
                self._folder_names[folder] = frozenset(os.listdir(folder))
            except OSError:
                self._folder_names[folder] = frozenset()
        return self._folder_names[folder]

    def touched(self, action: Action) -> frozenset[str]:
        """The names whose resolution the change can alter."""
        names: set[str] = set()
        if action.path:
            names.add(os.path.basename(action.path))
        if action.link:
            names.add(os.path.basename(action.link))
        if action.folder:
            names |= self._names_in(action.folder)
        return frozenset(names)

    def grade(self, action: Action, before: tuple[Action, ...] = ()) -> Action:
        """``action`` graded in the machine as it will be after ``before`` (the changes chosen earlier)."""
        if not action.changes or action.grade in GRADES:
            return action
        touched = self.touched(action)
        affected = [load for load in self.loads if any(r.name in touched for r in load.result.resolutions)]
        new_resolver = Resolver(self.environment(before + (action,)), self.ctx.store)
        verdict = _Verdict()
        for load in affected:
            old = self._earlier(before, load)
            new = new_resolver.request(load.request)
            self._judge(action, load, old, new, built_for(self.ctx.report, load.group), verdict)
        evidence = (f"re-resolved {len(affected)} load(s) with the change in place",)
        return action.graded(verdict.grade, verdict.evidence() + evidence)

    def _earlier(self, before: tuple[Action, ...], load: ObservedLoad) -> LoadResult:
        """``load`` in the machine as the changes chosen before leave it (the scan's own result when none), made
        once for all the alternatives graded against the same changes."""
        if not before:
            return load.result
        key = tuple(a.id for a in before)
        if key not in self._before:
            self._before = {key: (Resolver(self.environment(before), self.ctx.store), {})}  # one base at a time
        resolver, results = self._before[key]
        if load.request not in results:
            results[load.request] = resolver.request(load.request)
        return results[load.request]

    def _judge(self, action: Action, load: ObservedLoad, old: LoadResult, new: LoadResult,
               built: Optional[BuiltFor], verdict: "_Verdict") -> None:
        who = os.path.basename(load.request.via or load.request.root)
        if new.root_error and not old.root_error:
            if load.request.dlopen and load.request.root == action.soname:  # the very name it changes
                self._judge_wanted(action, action.soname, None, new.root_error, who, built, verdict)
            else:
                verdict.broken.append(f"{who}: {new.root_error}")
            return
        before = {(r.requester, r.name): r for r in old.resolutions}
        old_real = {o.path: o.realpath for o in old.objects}  # a hypothetical link is its target's file
        new_objects = {o.path: o for o in new.objects}
        changed: list[str] = []
        moved: set[str] = set()
        wanted = {(r.requester, r.name): r for r in new.resolutions if r.name == action.soname}  # a dlopen's too
        for resolution in wanted.values():
            provider = new_objects.get(resolution.path) if resolution.path else None
            self._judge_wanted(action, resolution.name, provider, resolution.error, who, built, verdict)
            if provider is not None and resolution.requester:
                changed.append(resolution.requester)
        for resolution in new.relevant_resolutions():
            earlier = before.get((resolution.requester, resolution.name))
            provider = new_objects.get(resolution.path) if resolution.path else None
            if resolution.name == action.soname:
                continue
            if earlier is None or not earlier.found:
                if earlier is None and not resolution.found:
                    verdict.broken.append(f"{resolution.requester}: needs {resolution.name}, not found")
                continue
            if not resolution.found:
                verdict.broken.append(f"{resolution.name} would no longer be found for {who}")
            elif provider is not None and old_real.get(earlier.path or "") != provider.realpath:
                self._judge_moved(resolution.name, earlier.path or "", provider, who, built, verdict)
                moved.add(resolution.name)
                if resolution.requester:
                    changed.append(resolution.requester)
        old_fatal = {p.message for p in old.version_problems if p.fatal}
        verdict.broken.extend(p.message for p in new.version_problems if p.fatal and p.message not in old_fatal)
        if not verdict.broken:  # already broken: reading the symbol tables of the copies would add nothing
            self._judge_symbols(old, new, changed, moved | {action.soname or ""}, verdict)
        if load.dlsym_by and action.soname:
            provider = next((new_objects.get(r.path) for r in new.resolutions if r.name == action.soname and r.path),
                            None)
            if provider is not None and judge_substitute(action.soname, provider.realpath, provider.facts.soname,
                                                         built).verdict != SERVES:
                verdict.broken.extend(_dlsym_gaps(load.dlsym_by, action.soname, provider.realpath))

    def _judge_wanted(self, action: Action, wanted: str, provider: Optional[LoadedObject], error: Optional[str],
                      who: str, built: Optional[BuiltFor], verdict: "_Verdict") -> None:
        if provider is None:
            if action.kind == "retire" and not (action.folder or action.link):
                verdict.risky.append(f"{wanted} would then be missing for {who}: it fails to load there instead of "
                                     "failing at its first call")
            else:
                verdict.broken.append(f"{who}: {wanted} still not found with the change ({error})")
            return
        verdict.judge(wanted, provider, built, f"{wanted} ({describe(wanted) or 'asked for'}) -> {provider.realpath}")

    def _judge_moved(self, name: str, before: str, provider: LoadedObject, who: str, built: Optional[BuiltFor],
                     verdict: "_Verdict") -> None:
        verdict.judge(name, provider, built,
                      f"{name} would come from {provider.realpath} instead of {before} for {who}")

    def _judge_symbols(self, old: LoadResult, new: LoadResult, changed: list[str], names: set[str],
                       verdict: "_Verdict") -> None:
        """Imports the change leaves undefined (``loader.binding``, as scan's symbol check asks): for an object
        loaded before and after, what nothing defines now and something defined before; for an object only the
        change brings in, what it imports by version from a library the change provides or moves (its other
        imports may come from objects a real process has loaded and this load does not show)."""
        if not self.ctx.report.inputs.symbols or new.root_error:
            return
        old_real = {o.realpath for o in old.objects}
        by_path = {o.path: o.realpath for o in new.objects}
        consumers = [o.realpath for o in new.objects[new.new_from:] if o.realpath not in old_real]
        consumers += [by_path[c] for c in changed if c in by_path]
        consumers = list(dict.fromkeys(consumers))
        if not consumers:
            return
        before = {(u.consumer, u.name, u.version) for u in _unbound(old, [c for c in consumers if c in old_real])}
        for unbound in _unbound(new, consumers):
            if unbound.consumer in old_real:
                if (unbound.consumer, unbound.name, unbound.version) not in before:
                    verdict.broken.append(unbound.message)
            elif unbound.file and unbound.file in names:
                verdict.broken.append(unbound.message)


def _unbound(result: LoadResult, consumers: list[str]) -> list[Unbound]:
    """What scan's symbol check says of ``consumers`` in ``result``'s scope (nothing remembered: hypothetical)."""
    if not result.objects or not consumers:
        return []
    scope = [o.realpath for o in result.objects]
    return unbound_symbols(consumers, scope, None, startup=result.mode != MODE_DLOPEN)


def _identifiers(consumer: str, prefix: str) -> frozenset[str]:
    """The consumer's identifier strings starting with ``prefix``, read once per file identity (a framework
    library of hundreds of MB is scanned once, not once per graded change)."""
    try:
        st = os.stat(consumer)
    except OSError:
        return frozenset()
    return _identifiers_of(consumer, prefix, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=64)
def _identifiers_of(consumer: str, prefix: str, identity: tuple[int, int, int, int]) -> frozenset[str]:
    return identifier_strings(consumer, prefix)


def _dlsym_gaps(consumer: str, soname: str, provider: str) -> list[str]:
    """Names ``consumer`` keeps as strings for ``dlsym`` (cudnn*, say) that the new provider does not export."""
    stem = stem_of(soname)
    prefix = stem[3:-3] if stem.startswith("lib") else ""
    table = symbols_of(provider)
    if len(prefix) < 3 or table is None:
        return []
    missing = {n for n in _identifiers(consumer, prefix) if n not in table.defined_names}
    if missing:
        return [f"{consumer} names {_listed(missing)} for dlsym; {soname} from {provider} does not export "
                f"{'it' if len(missing) == 1 else 'them'}"]
    return []


class _Verdict:
    def __init__(self) -> None:
        self.broken: list[str] = []
        self.risky: list[str] = []
        self.notes: list[str] = []

    def judge(self, name: str, provider: LoadedObject, built: Optional[BuiltFor], what: str) -> None:
        """The file a change makes ``name`` resolve to, judged as scan's "elsewhere" line judges it."""
        judged = judge_substitute(name, provider.realpath, provider.facts.soname, built)
        lines = {NOT_A_SUBSTITUTE: self.broken, UNPROVEN: self.risky}.get(judged.verdict, self.notes)
        lines.append(f"{what}: {judged.why}")

    @property
    def grade(self) -> str:
        return "broken" if self.broken else "risky" if self.risky else "safe"

    def evidence(self) -> tuple[str, ...]:
        lines = self.broken + self.risky + self.notes
        if not self.broken:
            lines.append("every version node and symbol present")
        return tuple(dict.fromkeys(lines))
