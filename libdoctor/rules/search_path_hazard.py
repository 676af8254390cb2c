"""search-path-hazard: search paths that let the current folder or other users decide what loads.

An empty element in LD_LIBRARY_PATH, DT_RPATH or DT_RUNPATH means the current folder (loader-facts
1.2); a relative element is relative to the current folder, not to the object; a world-writable
folder on a search path lets any user plant a library.
"""
from __future__ import annotations

import os
import stat

from ..loader.environment import split_search_path
from .base import Finding, RuleContext, RuleResult, SimpleRule


def _element_problems(value: str, where: str) -> list[str]:
    problems = []
    for element in split_search_path(value, ":;" if where == "LD_LIBRARY_PATH" else ":"):
        if element == "":
            problems.append(f"{where} {value!r} has an empty element: the current folder is searched")
        elif not element.startswith(("/", "$ORIGIN", "${ORIGIN}")):
            problems.append(f"{where} element {element!r} is relative: it is resolved against the current folder")
    return problems


def _hijack(name: str, path: str, folder: str, tag: str, requester: object) -> Finding:
    where = "an empty element" if folder == "" else f"the relative element {folder!r}"
    return Finding("search-path-hazard", "error",
                   f"{name} was taken from the current folder ({path}) through {where} of {tag}: whoever controls "
                   "the folder a program starts in decides what it loads",
                   evidence=(f"needed by {requester}",) if requester else (), objects=(path,))


def check(ctx: RuleContext) -> RuleResult:
    findings = []
    if ctx.env.ld_library_path is not None:
        for problem in _element_problems(ctx.env.ld_library_path, "LD_LIBRARY_PATH"):
            findings.append(Finding("search-path-hazard", "warning", problem, objects=("LD_LIBRARY_PATH",)))
    seen_objects: set[str] = set()
    folders: dict[str, str] = {}
    for report in ctx.report.targets:
        for obj in report.result.objects:
            if obj.realpath in seen_objects:
                continue
            seen_objects.add(obj.realpath)
            for tag, value in (("RPATH", obj.facts.rpath), ("RUNPATH", obj.facts.runpath)):
                if value is not None:
                    for problem in _element_problems(value, f"{tag} of {obj.path}"):
                        findings.append(Finding("search-path-hazard", "warning", problem, objects=(obj.path,)))
        for resolution in report.result.relevant_resolutions():
            for source in resolution.sources:
                for attempt in source.folders:
                    if attempt.outcome == "found" and not attempt.folder.startswith("/") and source.tag != "direct":
                        findings.append(_hijack(resolution.name, resolution.path or "", attempt.folder, source.tag,
                                                resolution.requester))
                    if attempt.folder and attempt.outcome != "no such folder":
                        folders.setdefault(ctx.env.absolute(attempt.folder), source.tag)
    for folder, tag in folders.items():
        try:
            mode = os.stat(folder).st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode) and mode & stat.S_IWOTH:
            findings.append(Finding("search-path-hazard", "error",
                                    f"{folder} ({tag}) is world-writable: any user can plant a library there",
                                    objects=(folder,)))
    return RuleResult(tuple({(f.title, f.objects): f for f in findings}.values()))


RULE = SimpleRule("search-path-hazard", "empty or relative search-path elements, world-writable folders", check)
