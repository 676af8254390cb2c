"""undefined-symbol: an import no object of the load defines, as ``do_lookup_x`` would find (``loader.binding``).

One cause per missing symbol (and the library it should come from), listing every consumer: a stale
cuBLASLt that four torch libraries import from is one cause, not four.  A load that already misses a
library is not judged (the symbol may live in the missing one); a framework library that another of
its framework's objects needs is judged in that object's load, where the rest of the framework is in
scope.  Grading asks the same question of every proposed change (:func:`unbound_in`).
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Iterable, Optional

from ..loader.binding import Unbound, unbound_symbols
from ..loader.factstore import FactsStore
from ..loader.resolver import MODE_DLOPEN, LoadResult
from ..loader.symbols import symbols_of
from .base import FRONT, Action, Finding, RuleContext, RuleResult, SimpleRule
from .common import built_for, chain_to, finder, searched_folders
from .facts import ScanReport, TargetReport

RULE_ID = "undefined-symbol"


def unbound_in(result: LoadResult, store: Optional[FactsStore], consumers: Optional[Iterable[str]] = None
               ) -> list[Unbound]:
    """The imports nothing in ``result``'s scope defines, of ``consumers`` (real paths; default: the objects
    this load brought in).  Real paths, so a hypothetical link is judged by the file behind it."""
    if not result.ok or not result.objects:
        return []
    scope = [o.realpath for o in result.objects]
    if consumers is None:
        consumers = scope[result.new_from:] if result.mode == MODE_DLOPEN else scope
    return unbound_symbols(list(consumers), scope, store, startup=result.mode != MODE_DLOPEN)


def _needed_by_group(report: ScanReport) -> dict[str, set[str]]:
    needed: dict[str, set[str]] = {}
    view = report.resolver.view if report.resolver else None
    for target in report.targets:
        facts = view.probe(report.env.absolute(target.target.path)).facts if view else None
        if facts is not None:
            needed.setdefault(target.target.group, set()).update(facts.needed)
    return needed


def _loaded_by_others(report: ScanReport, target: TargetReport, needed_in_group: dict[str, set[str]]) -> bool:
    """A framework library another object of the framework needs is never loaded alone (libtorch_nvshmem
    judged alone lacks symbols of libc10_cuda that the real process has)."""
    if not target.target.caller or report.resolver is None:
        return False
    facts = report.resolver.view.probe(report.env.absolute(target.target.path)).facts
    names = {os.path.basename(target.target.path)} | ({facts.soname} if facts is not None and facts.soname
                                                      else set())
    return bool(names & needed_in_group.get(target.target.group, set()))


def check(ctx: RuleContext) -> RuleResult:
    report = ctx.report
    if not report.inputs.symbols:
        return RuleResult()
    needed_in_group = _needed_by_group(report)
    findings = []
    for target in report.targets:
        if _loaded_by_others(report, target, needed_in_group):
            continue
        shown = {o.realpath: o.path for o in target.result.objects}
        grouped: dict[tuple[str, Optional[str]], list[Unbound]] = {}
        for unbound in unbound_in(target.result, ctx.store):
            if unbound.crashes or unbound.faulting_table:
                findings.append(_crash_finding(target, unbound, shown))
                continue
            grouped.setdefault((shown.get(unbound.consumer, unbound.consumer), unbound.file), []).append(unbound)
        for (consumer, file), missing in grouped.items():
            findings.append(_finding(target, consumer, file, missing))
        findings.extend(_relocation_findings(target, ctx.store))
    return RuleResult(tuple(findings), tuple(_actions(ctx, findings)))


def _crash_finding(target: TargetReport, unbound: Unbound, shown: dict[str, str]) -> Finding:
    """A lookup that crashes the loader (a damaged hash table, a version index past its table): the damaged file
    is the cause, as for a relocation that stops the loader."""
    damaged = unbound.faulting_table or unbound.consumer
    path = shown.get(damaged, damaged)
    message = replace(unbound, consumer=shown.get(unbound.consumer, unbound.consumer),
                      faulting_table=unbound.faulting_table and path).message
    return Finding(RULE_ID, "error", f"{message} (the file is damaged: reinstall the package that owns it)",
                   kind="fatal", cause=f"relocation:{damaged}", target=target.target.path, group=target.target.group,
                   objects=(path,), chain=chain_to(target.result, path))


def _relocation_findings(target: TargetReport, store: FactsStore) -> list[Finding]:
    """An object of the load whose relocation stops the loader (``loader.relocation``): a damaged file."""
    if not target.result.ok:
        return []
    findings = []
    for loaded in target.result.objects:
        error, _unfound = store.relocation(loaded.realpath)
        if error:
            findings.append(Finding(RULE_ID, "error", f"{loaded.path}: {error} (the file is damaged: reinstall the "
                                    "package that owns it)", kind="fatal", cause=f"relocation:{loaded.realpath}",
                                    target=target.target.path, group=target.target.group, objects=(loaded.path,),
                                    chain=chain_to(target.result, loaded.path)))
    return findings


def _actions(ctx: RuleContext, findings: list[Finding]) -> list[Action]:
    """Put first a copy of the library that defines every missing symbol (pytorch#140797: the wheel's nvJitLink
    behind an older one on LD_LIBRARY_PATH); grading re-binds every consumer with it."""
    actions: dict[str, Action] = {}
    by_file: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.soname:
            by_file.setdefault(finding.soname, []).append(finding)
    for file, members in by_file.items():
        wanted = {name for f in members for name in f.evidence}
        copy = _defining_copy(ctx, file, members, wanted)
        if copy is None:
            continue
        action = Action(RULE_ID, "search-path", f"put {copy} first (it defines {', '.join(sorted(wanted)[:3])})",
                        soname=file, folder=os.path.dirname(copy), position=FRONT, rank=1,
                        consumers=tuple(dict.fromkeys(f.target for f in members)),
                        requesters=tuple(dict.fromkeys(f.needed_by for f in members if f.needed_by)),
                        causes=tuple(dict.fromkeys(f.key for f in members)))
        actions[action.id] = action
    return list(actions.values())


def _defining_copy(ctx: RuleContext, file: str, members: list[Finding], wanted: set[str]) -> Optional[str]:
    report = ctx.report
    first = members[0]
    target = next((t for t in report.targets if t.target.path == first.target), None)
    resolution = next((r for r in target.result.resolutions if r.name == file and r.found), None) if target else None
    current = os.path.realpath(report.env.absolute(resolution.path)) if resolution and resolution.path else None
    for candidate in finder(ctx).find(file, searched_folders(resolution), built_for(report, first.group)):
        if not candidate.exact or os.path.realpath(candidate.path) == current:
            continue
        table = symbols_of(os.path.realpath(candidate.path))
        if table is not None and wanted <= set(table.defined_names):
            return candidate.path
    return None


def _finding(target: TargetReport, consumer: str, file: Optional[str], missing: list[Unbound]) -> Finding:
    """One consumer's imports missing from one library: one finding; every consumer missing imports of the same
    library (or, unversioned, the same first symbol) shares one cause."""
    first = missing[0]
    others = [u.name for u in missing[1:]]
    listed = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
    more = f" (and {len(others)} more: {listed})" if others else ""
    message = replace(first, consumer=consumer).message + more  # as shown (crashes keep their own message)
    key = f"symbol:{file}" if file else f"symbol:{first.name}"
    return Finding(RULE_ID, "error", message, kind="symbol", cause=key, target=target.target.path,
                   group=target.target.group, soname=file, needed_by=consumer,
                   chain=chain_to(target.result, consumer), evidence=tuple(u.name for u in missing))


RULE = SimpleRule(RULE_ID, "an imported symbol no object of the load defines (as ld.so binds it)", check)
