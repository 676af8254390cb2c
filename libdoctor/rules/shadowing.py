"""shadowing: two different copies of one soname on a search path, the one loaded older or from
another CUDA release than a copy further down the path."""
from __future__ import annotations

import os
import re
from typing import Optional

from ..loader.resolver import DIRECT, LOADED, RPATH, RUNPATH
from ..loader.searchpath import origin_of, search_folders
from .base import Finding, RuleContext, RuleResult, SimpleRule

_CUDA_RELEASE = re.compile(r"cuda-(\d+\.\d+)")


def _version(path: str) -> tuple[int, ...]:
    match = re.search(r"\.so\.([0-9.]+)$", os.path.basename(path))
    return tuple(int(p) for p in match.group(1).split(".") if p) if match else ()


def _release(path: str) -> Optional[str]:
    match = _CUDA_RELEASE.search(path)
    return match.group(1) if match else None


def _folders_in_play(ctx: RuleContext, requester_facts, requester_path: str) -> list[str]:
    env, info = ctx.env, ctx.env.loader
    origin = origin_of(requester_path, env.cwd)
    folders = list(search_folders(requester_facts.rpath, ":", origin, info.lib, info.platform))
    folders += list(search_folders(env.ld_library_path, ":;", None, info.lib, info.platform))
    folders += list(search_folders(requester_facts.runpath, ":", origin, info.lib, info.platform))
    folders += list(info.system_dirs)
    return [env.absolute(f) for f in dict.fromkeys(folders) if f]


def _named_in(ctx: RuleContext, folder: str, name: str) -> bool:
    """Is there a ``name`` in ``folder``?  Asked of the scan's own folder listings (read once per scan)."""
    view = ctx.report.resolver.view if ctx.report.resolver is not None else None
    if view is not None:
        names = view.listing(folder)
        if isinstance(names, frozenset) and name not in names:
            return False
    return os.path.exists(os.path.join(folder, name))


def check(ctx: RuleContext) -> RuleResult:
    findings = []
    reported: set[tuple[str, str]] = set()
    examined: set[tuple] = set()  # one search, met again in another target's load, tells nothing new
    places_of: dict[str, list[str]] = {}
    for report in ctx.report.targets:
        by_path = {o.path: o for o in report.result.objects}
        for resolution in report.result.relevant_resolutions():
            if not resolution.found or resolution.via in (LOADED, DIRECT) or resolution.requester not in by_path:
                continue
            chosen = by_path.get(resolution.path or "")
            if chosen is None:
                continue
            seen = (resolution.requester, resolution.name, resolution.path, resolution.via, chosen.realpath)
            if seen in examined:
                continue
            examined.add(seen)
            requester = by_path[resolution.requester]
            cached = ctx.env.cache_lookup.lookup(resolution.name)
            if requester.path not in places_of:
                places_of[requester.path] = _folders_in_play(ctx, requester.facts, requester.path)
            places = list(places_of[requester.path])
            if cached:
                places.append(os.path.dirname(cached))
            for folder in dict.fromkeys(places):
                if not _named_in(ctx, folder, resolution.name):
                    continue
                other = os.path.join(folder, resolution.name)
                other_real = os.path.realpath(other)
                if other_real == chosen.realpath or (chosen.realpath, other_real) in reported:
                    continue
                # A copy the requester's own RPATH/RUNPATH picks (torch's bundled libgomp) is its packager's
                # choice, not an accident: only another CUDA release is worth a word then.
                own_paths = (requester.facts.runpath or "") + (requester.facts.rpath or "")
                package = os.path.dirname(os.path.dirname(requester.realpath)) + "/"
                bundled = (resolution.via in (RPATH, RUNPATH) and "ORIGIN" in own_paths
                           and chosen.realpath.startswith(package))
                older = not bundled and (_version(chosen.realpath) < _version(other_real) if _version(other_real)
                                         else False)
                mine, theirs = _release(chosen.realpath), _release(other_real)
                release = mine is not None and theirs is not None and mine != theirs
                if not (older or release):
                    continue
                reported.add((chosen.realpath, other_real))
                why = "an older copy" if older else f"CUDA {mine} where CUDA {theirs} is also present"
                findings.append(Finding(
                    "shadowing", "warning", f"{resolution.name}: {chosen.realpath} ({resolution.via}) shadows "
                    f"{other_real}: {why}", evidence=(f"needed by {resolution.requester}",),
                    objects=(report.target.path,)))
    return RuleResult(tuple(findings))


RULE = SimpleRule("shadowing", "an older copy of a soname, or one from another CUDA release, wins the search", check)
