"""Every proposal is checked before it is offered: resolve again with the change laid over.

A symlink proposal is resolved in ``Environment + link`` (plus the shim folder on
LD_LIBRARY_PATH when links go there), then checked against the real ELF facts: the version
nodes the consumers require of that soname (``.gnu.version_r`` against ``.gnu.version_d``),
the symbols they import from it, and for dlopen consumers the names they keep as strings for
``dlsym``.  Grades: ``safe`` (same family, major and CUDA release, all present), ``risky``
(across a soname bump or a CUDA release, all present, nothing known to be broken; applied only
when asked for by name), ``broken`` (something missing, or a pairing the CUDA table knows is
broken).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

from ..candidates import stem_of
from ..gpu.cudatable import cuda_span, family_of, pairing_verdict, rows_for, soname_major
from ..gpu.impostor import cuda_release_of
from ..loader.environment import Environment
from ..loader.resolver import LoadResult, Resolver
from ..loader.symbols import SymbolTable, identifier_strings, symbols_of
from ..rules.base import Proposal, RuleContext
from ..scan import DlopenCheck, TargetReport, resolve_target

MAX_LISTED = 8


def proposal_environment(ctx: RuleContext, proposal: Proposal) -> Environment:
    env = ctx.env
    if proposal.kind == "symlink" and proposal.link and proposal.target:
        env = env.with_links({proposal.link: proposal.target})
        if not ctx.placement.in_place:
            env = env.with_search_folders([os.path.dirname(proposal.link)])
    elif proposal.kind == "search-path" and proposal.folder:
        env = env.with_search_folders([proposal.folder])
    return env


def _affected(ctx: RuleContext, proposal: Proposal) -> list[TargetReport]:
    return [t for t in ctx.report.targets if t.target.path in proposal.consumers]


def _rerun(resolver: Resolver, report: TargetReport, soname: str
           ) -> tuple[LoadResult, Optional[DlopenCheck], Optional[LoadResult]]:
    """The target's load again, and its dlopen of ``soname`` when that is how it wants it."""
    result = resolve_target(resolver, report.target)
    check = next((c for c in report.dlopens if c.name == soname), None)
    return result, check, check.rerun(resolver, report.target.path) if check else None


def _listed(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:MAX_LISTED])
    return shown + (f" and {len(names) - MAX_LISTED} more" if len(names) > MAX_LISTED else "")


def _symbol_gaps(result: LoadResult, soname: str, provider_path: str, requesters: set[str],
                 provider: SymbolTable) -> list[str]:
    """Symbols the requesters import that would now have to come from ``provider`` but do not."""
    gaps = []
    provider_real = os.path.realpath(provider_path)
    others = [o for o in result.objects if o.realpath != provider_real]
    other_tables = [t for t in (symbols_of(o.path if o.path.startswith("/") else o.realpath) for o in others) if t]
    elsewhere = set().union(*(t.defined_names for t in other_tables)) if other_tables else set()
    still_missing = {r.requester for r in result.resolutions if not r.found}
    for obj in result.objects:
        if obj.path not in requesters:
            continue
        table = symbols_of(obj.realpath)
        if table is None:
            continue
        missing_versioned = {f"{n}@{v}" for n, v, f, weak in table.undefined
                             if f == soname and not weak and (n, v) not in provider.defined}
        # An unversioned import names no library: it is pinned on this one only when every other
        # dependency of the requester resolves (else it may belong to one still missing).
        missing_plain = set() if obj.path in still_missing else {
            n for n, v, f, weak in table.undefined
            if f is None and not weak and n not in elsewhere and n not in provider.defined_names}
        if missing_versioned:
            gaps.append(f"{obj.path} imports {_listed(missing_versioned)} from {soname}, not defined there")
        if missing_plain:
            gaps.append(f"{obj.path} imports {_listed(missing_plain)}, defined by no loaded object")
    return gaps


def _dlsym_gaps(consumer: str, soname: str, provider: SymbolTable) -> list[str]:
    prefix = stem_of(soname)[3:-3] if stem_of(soname).startswith("lib") else ""
    if len(prefix) < 3:
        return []
    wanted = identifier_strings(consumer, prefix)
    missing = {n for n in wanted if n not in provider.defined_names}
    if missing:
        return [f"{consumer} names {_listed(missing)} for dlsym; {soname} target does not export "
                f"{'it' if len(missing) == 1 else 'them'}"]
    return []


def verify_symlink(ctx: RuleContext, proposal: Proposal) -> Proposal:
    assert proposal.link and proposal.target and proposal.soname
    soname = proposal.soname
    target_path = os.path.join(os.path.dirname(proposal.link), proposal.target)
    evidence: list[str] = []
    broken: list[str] = []
    facts = ctx.store.get_path(target_path)
    provider_soname = getattr(facts, "soname", None) or os.path.basename(os.path.realpath(target_path))
    verdict = pairing_verdict(soname, provider_soname)
    if verdict is not None and verdict.broken:
        broken.append(verdict.reason)
    elif verdict is not None:
        evidence.append(verdict.reason)
    provider = symbols_of(target_path)
    if provider is None:
        broken.append(f"{target_path} is not a readable ELF shared object")
    resolver = Resolver(proposal_environment(ctx, proposal), ctx.store)
    affected = _affected(ctx, proposal)
    for report in affected:
        result, check, dlopened = _rerun(resolver, report, soname)
        for loaded in (result, dlopened):
            if loaded is None:
                continue
            still = [r for r in loaded.relevant_resolutions() if r.name == soname and not r.found]
            if still:
                broken.append(f"{report.target.path}: {soname} still not found with the link in place "
                              f"({still[0].error})")
                continue
            for problem in loaded.version_problems:
                if problem.fatal and (problem.file == soname or problem.provider == proposal.link):
                    broken.append(problem.message)
            if provider is not None and loaded is result:
                broken.extend(_symbol_gaps(loaded, soname, target_path, set(proposal.requesters) | {
                    report.target.path}, provider))
            if loaded.root_error and loaded is dlopened:
                broken.append(f"dlopen({soname}) by {report.target.path}: {loaded.root_error}")
        if check is not None and provider is not None:
            broken.extend(_dlsym_gaps(check.via or report.target.path, soname, provider))
    evidence.append(f"re-resolved {len(affected)} consumer(s) with {proposal.link} -> "
                    f"{proposal.target}")
    if broken:
        return proposal.graded("broken", tuple(dict.fromkeys(broken)) + tuple(evidence))
    same_major = stem_of(soname) == stem_of(provider_soname) and soname_major(soname) == soname_major(provider_soname)
    if not same_major:
        return proposal.graded("risky", (f"across a soname bump ({soname} -> {provider_soname}); every version "
                                         "node and symbol present", *evidence))
    crossing = cuda_release_crossing(soname, provider_soname, target_path)
    if crossing:
        return proposal.graded("risky", (f"{crossing}; every version node and symbol present, but the same name "
                                         "is no proof of the same library", *evidence))
    return proposal.graded("safe", ("same family, major and CUDA release; every version node and symbol present",
                                    *evidence))


def cuda_release_crossing(wanted: str, provider_soname: str, provider_path: str) -> Optional[str]:
    """Why serving ``wanted`` with this CUDA file crosses CUDA releases, or None when it provably does not.

    The consumer's release is the table's span for ``wanted``; the file's is its folder or sibling
    ``libcudart`` (``cuda_release_of``), else the table's span for its own soname.
    """
    rows = rows_for(wanted)
    if not rows or family_of(wanted) in (None, "cudnn"):
        return None
    spans = [span for span in (cuda_span(r.cuda_versions) for r in rows) if span]
    release = cuda_release_of(provider_path)
    if release is not None:
        (major, minor), how = release
        if spans and not any(low <= (major, minor) <= high for low, high in spans):
            return (f"{wanted} is CUDA {', '.join(r.cuda_versions for r in rows)}; the file is CUDA {major}.{minor} "
                    f"({how})")
        return None
    if provider_soname != wanted:
        return f"{wanted} and {provider_soname} are different names and the file's CUDA release is not known"
    return None


def verify_search_path(ctx: RuleContext, proposal: Proposal) -> Proposal:
    assert proposal.folder and proposal.soname
    resolver = Resolver(proposal_environment(ctx, proposal), ctx.store)
    broken: list[str] = []
    changed: list[str] = []
    for report in _affected(ctx, proposal):
        result, _check, dlopened = _rerun(resolver, report, proposal.soname)
        for loaded in (result, dlopened):
            if loaded is None:
                continue
            if any(r.name == proposal.soname and not r.found for r in loaded.relevant_resolutions()):
                broken.append(f"{report.target.path}: {proposal.soname} still not found")
            broken.extend(p.message for p in loaded.version_problems if p.fatal)
        before = {o.requested_as: o.path for o in report.result.closure()}
        for obj in result.closure():
            if obj.requested_as in before and before[obj.requested_as] != obj.path:
                changed.append(f"{obj.requested_as} would come from {obj.path} instead of {before[obj.requested_as]}")
    if broken:
        return proposal.graded("broken", tuple(dict.fromkeys(broken)))
    if changed:
        return proposal.graded("risky", ("the folder also changes what other names resolve to:",
                                         *dict.fromkeys(changed)))
    return proposal.graded("safe", (f"{proposal.folder} holds {proposal.soname} itself; nothing else changes",))


def verify(ctx: RuleContext, proposal: Proposal) -> Proposal:
    if proposal.kind == "symlink":
        return verify_symlink(ctx, proposal)
    if proposal.kind == "search-path":
        return verify_search_path(ctx, proposal)
    return proposal  # install hints are advice, not changes: nothing to resolve
