"""How the findings of one root cause read: a title, a few detail lines (the full story is ``-v``'s)."""
from __future__ import annotations

import os
from typing import Optional

from ..gpu.frameworkcheck import reach_hint
from ..loader.resolver import CACHE, LD_LIBRARY_PATH, RPATH, RUNPATH, SYSTEM, Resolution
from .base import Finding
from .common import shown_name
from .facts import ScanReport
from .ownership import maker_words

SOURCE_TITLES = {RPATH: "rpath", LD_LIBRARY_PATH: "LD_LIBRARY_PATH", RUNPATH: "runpath", CACHE: "ld.so.cache",
                 SYSTEM: "system folders"}
MAX_ELSEWHERE = 3
MAX_LISTED_FINDINGS = 6


def plural(count: int, word: str, plural_word: Optional[str] = None) -> str:
    return f"{count} {word if count == 1 else (plural_word or word + 's')}"


def named(names: list[str], limit: int = 4) -> str:
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def searched_summary(resolution: Optional[Resolution]) -> Optional[str]:
    """"searched: LD_LIBRARY_PATH (not set), runpath of libtf.so (1 folder), ..."."""
    if resolution is None or not resolution.sources:
        return None
    parts = []
    for source in resolution.sources:
        title = SOURCE_TITLES.get(source.tag, source.tag)
        if source.owner and source.tag in (RPATH, RUNPATH):
            title += f" of {os.path.basename(source.owner)}"
        if source.folders:
            title += f" ({plural(len(source.folders), 'folder')})"
        elif source.note in ("not set", "no entry"):
            title += f" ({source.note})"
        elif source.note:
            continue
        parts.append(title)
    return "searched: " + ", ".join(parts)


def elsewhere_line(findings: tuple[Finding, ...]) -> Optional[str]:
    """Other copies on this machine, each with whether it can serve (the same words fix's grades use)."""
    seen = list(dict.fromkeys(c.describe() for f in findings for c in f.candidates))
    if not seen:
        return None
    return "elsewhere on this machine: " + "; ".join(seen[:MAX_ELSEWHERE]) + (
        f"; and {len(seen) - MAX_ELSEWHERE} more (-v)" if len(seen) > MAX_ELSEWHERE else "")


def behind_the_name(finding: Finding) -> Optional[str]:
    if len(finding.links) < 2:
        return None
    return f"behind the name: {' -> '.join(finding.links)} ({maker_words(finding.made_by)})"


def _what(report: ScanReport, findings: tuple[Finding, ...], verb: str) -> tuple[str, Optional[str]]:
    group = findings[0].group
    framework = report.framework_label(group)
    if framework:
        return f"{verb} by {framework}", framework
    requesters = list(dict.fromkeys(os.path.basename(f.needed_by) for f in findings if f.needed_by))
    return f"needed by {named(requesters, 2)}", None


def missing_cause(report: ScanReport, findings: tuple[Finding, ...], stale: list[str]
                  ) -> tuple[str, list[str]]:
    names = list(dict.fromkeys(shown_name(f.soname) for f in findings if f.soname))
    what, framework = _what(report, findings, "needed for the GPU")
    reach = reach_hint(names, report.frameworks) if framework else None
    where = "installed but off its search path" if reach else "not there"
    title = (f"{plural(len(names), 'library', 'libraries')} {what} {'is' if len(names) == 1 else 'are'} {where}: "
             f"{named(names)}")
    details = [line for line in (searched_summary(findings[0].resolution),) if line]
    elsewhere = elsewhere_line(findings)
    if elsewhere and not reach:
        details.append(elsewhere)
    for folder in stale:
        details.append(f"{folder} is configured in ld.so.conf, but ld.so.cache has no entry: run ldconfig "
                       "(the loader reads only the cache)")
    if reach:
        details.append(reach[0])
        details.append(f"for this shell only: {reach[1]}")
    return title, details


def impostor_cause(report: ScanReport, findings: tuple[Finding, ...]) -> tuple[str, list[str]]:
    if len({f.soname for f in findings}) == 1:
        first = findings[0]
        details = [line for line in (behind_the_name(first), elsewhere_line(findings)) if line]
        return first.message, details
    names = list(dict.fromkeys(f.soname or "?" for f in findings))
    what, _framework = _what(report, findings, "loaded")
    title = (f"{plural(len(names), 'library', 'libraries')} {what} {'is' if len(names) == 1 else 'are'} served by "
             f"another library: {named(names)}")
    details: list[str] = []
    for finding in list({f.soname: f for f in findings}.values())[:MAX_LISTED_FINDINGS]:
        details.append(finding.message)
        line = behind_the_name(finding)
        if line:
            details.append(f"  {line}")
    return title, details


def too_old_cause(report: ScanReport, findings: tuple[Finding, ...]) -> tuple[str, list[str]]:
    """A copy older than the framework's own check allows wins the search: both copies, the order, the way out."""
    first = findings[0]
    details = [line for line in (behind_the_name(first), searched_summary(first.resolution)) if line]
    if first.resolution is not None and first.resolution.via == LD_LIBRARY_PATH and first.resolution.path:
        folder = os.path.dirname(first.resolution.path)
        setters = [a.script for a in report.activations if any(v == "LD_LIBRARY_PATH" for v, _ in a.changes)]
        where = f"the env's {named([os.path.basename(s) for s in setters], 2)}" if setters else "this shell"
        details.append(f"the order is the cause: {folder} comes first on LD_LIBRARY_PATH (set by {where}); drop it "
                       "there, or let the fix put the copy that passes first")
    return first.message, details


def symbol_cause(findings: tuple[Finding, ...]) -> tuple[str, list[str]]:
    first = findings[0]
    names = list(dict.fromkeys(n for f in findings for n in (f.evidence or (first.message,))))
    consumers = list(dict.fromkeys(os.path.basename(f.needed_by or f.target) for f in findings))
    source = f" from {first.soname}" if first.soname else ""
    title = (f"{plural(len(names), 'undefined symbol')}{source}: {named(names, 3)} (required by "
             f"{named(consumers, 3)})")
    details = ["needed by: " + " <- ".join(os.path.basename(c) for c in reversed(first.chain))] if first.chain else []
    return title, details


def version_cause(findings: tuple[Finding, ...]) -> tuple[str, list[str]]:
    first = findings[0]
    consumers = list(dict.fromkeys(os.path.basename(f.needed_by or f.target) for f in findings))
    title = first.message if len(consumers) == 1 else f"{first.message.split(' (required by')[0]} (required by " \
                                                      f"{named(consumers, 3)})"
    details = ["load chain: " + " <- ".join(os.path.basename(c) for c in reversed(first.chain))] if first.chain else []
    return title, details


def driver_cause(report: ScanReport, findings: tuple[Finding, ...]) -> tuple[str, list[str]]:
    users = list(dict.fromkeys(report.framework_label(f.group) or f.group for f in findings if f.kind == "driver"))
    if report.driver is not None and not report.driver.present:
        who = named(users) if users else "nothing here"
        if report.driver.no_gpu:
            return f"no NVIDIA GPU in this machine: {who} cannot use the GPU", []
        return f"no NVIDIA driver (libcuda.so.1 not found): {who} cannot use the GPU", []
    driver = next((f for f in findings if f.kind == "driver"), findings[0])
    return driver.message, []


def optional_cause(findings: tuple[Finding, ...]) -> tuple[str, list[str]]:
    feature = findings[0].feature or findings[0].message
    names = list(dict.fromkeys(f.soname or "?" for f in findings))
    return f"optional {feature} unavailable: {named(names)} not found", []


def plain_cause(findings: tuple[Finding, ...]) -> tuple[str, list[str]]:
    first = findings[0]
    details = list(first.evidence[:2])
    if not details and first.chain and first.needed_by:
        details.append("needed by: " + " <- ".join(os.path.basename(c) for c in reversed(first.chain)))
    return first.message, details
