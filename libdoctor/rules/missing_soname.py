"""missing-soname: a needed soname is missing while the library exists in another version or place.

Proposals, safest first: (a) put the folder that holds the exact soname on the search path;
(b) a versioned symlink to the closest version; (c) an install hint.  Verification grades them.
"""
from __future__ import annotations

import os
from collections import OrderedDict

from ..gpu.cudatable import install_hint
from ..gpu.frameworkcheck import fitting_packages, installed_unreached
from ..loader.resolver import CACHE, LD_LIBRARY_PATH, RPATH, RUNPATH, SYSTEM
from ..scan import Problem
from .base import Finding, Proposal, RuleContext, RuleResult, SimpleRule

MAX_LINK_CANDIDATES = 3
SEARCHED_TAGS = (RPATH, LD_LIBRARY_PATH, RUNPATH, SYSTEM)


def _group(ctx: RuleContext) -> "OrderedDict[str, list[Problem]]":
    """Missing-soname problems by soname: one set of proposals serves DT_NEEDED and dlopen consumers."""
    groups: "OrderedDict[str, list[Problem]]" = OrderedDict()
    for problem in ctx.report.problems:
        if problem.kind in ("missing", "missing-dlopen") and problem.soname:
            groups.setdefault(problem.soname, []).append(problem)
    return groups


def _searched_folders(problem: Problem) -> list[str]:
    if problem.resolution is None:
        return []
    return [f.folder for s in problem.resolution.sources if s.tag in SEARCHED_TAGS and s.tag != CACHE
            for f in s.folders if f.folder]


def link_folder(ctx: RuleContext, problem: Problem, provider: str) -> str:
    """Where a link goes: the shim folder, or (in place) a folder the loader searches for this name."""
    if not ctx.placement.in_place:
        return ctx.placement.shim_dir
    searched = [os.path.abspath(f) for f in _searched_folders(problem)]
    provider_folder = os.path.dirname(provider)
    if provider_folder in searched:
        return provider_folder
    existing = [f for f in searched if os.path.isdir(f)]
    return existing[0] if existing else provider_folder


def _proposals(ctx: RuleContext, soname: str, problems: list[Problem]) -> list[Proposal]:
    consumers = tuple(dict.fromkeys(p.target for p in problems))
    requesters = tuple(dict.fromkeys(p.needed_by for p in problems if p.needed_by))
    proposals: list[Proposal] = []
    candidates = [c for p in problems for c in p.candidates]
    exact = list(dict.fromkeys(os.path.dirname(c.path) for c in candidates if c.exact))
    for folder in exact:
        proposals.append(Proposal("missing-soname", "search-path", f"add {folder} to the search path of "
                                  f"{len(consumers)} consumer(s)", soname=soname, folder=folder,
                                  consumers=consumers, requesters=requesters, rank=0))
    seen_real: set[str] = set()
    for candidate in candidates:
        if candidate.exact or len(seen_real) >= MAX_LINK_CANDIDATES:
            continue
        real = os.path.realpath(candidate.path)
        facts = ctx.store.get_path(real)
        if real in seen_real or not getattr(facts, "dynamic", False):
            continue
        seen_real.add(real)
        folder = link_folder(ctx, problems[0], candidate.path)
        link = os.path.join(folder, soname)
        target = candidate.path if folder != os.path.dirname(candidate.path) else os.path.basename(candidate.path)
        proposals.append(Proposal("missing-soname", "symlink", f"link {soname} -> {candidate.path}",
                                  soname=soname, link=link, target=target, consumers=consumers,
                                  requesters=requesters, rank=1 + len(seen_real)))
    if installed_unreached(soname, ctx.report.frameworks):
        return proposals  # installed where its framework can be told to look: the scan's cause says how
    fitting = fitting_packages(soname, ctx.report.frameworks)
    for hint in fitting:
        proposals.append(Proposal("missing-soname", "install", hint, soname=soname, command=hint,
                                  consumers=consumers, requesters=requesters, rank=8))
    hint = None if fitting else install_hint(soname)
    if hint:
        proposals.append(Proposal("missing-soname", "install", hint, soname=soname, command=hint,
                                  consumers=consumers, requesters=requesters, rank=9))
    return proposals


def check(ctx: RuleContext) -> RuleResult:
    findings = []
    proposals = []
    for soname, problems in _group(ctx).items():
        others = list(dict.fromkeys(c.describe() for p in problems for c in p.candidates))
        kinds = {p.kind for p in problems}
        how = " and ".join(w for k, w in (("missing", "needed"), ("missing-dlopen", "dlopened"))
                           if k in kinds)
        findings.append(Finding(
            "missing-soname", "error", f"{soname} is {how} but not found",
            evidence=tuple(f"{'dlopened' if p.kind == 'missing-dlopen' else 'needed'} by {p.needed_by}"
                           for p in problems[:5])
            + (tuple(f"elsewhere: {o}" for o in others[:5]) or ("no other version on this machine",)),
            objects=tuple(dict.fromkeys(p.target for p in problems))))
        proposals.extend(_proposals(ctx, soname, problems))
    return RuleResult(tuple(findings), tuple(proposals))


RULE = SimpleRule("missing-soname", "a needed soname is missing while the library exists elsewhere", check)
