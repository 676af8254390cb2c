"""impostor: a name that resolves to a file that is another library (``gpu.impostor.judge_file``).

A ``libcudnn.so.7`` that is a link to cuDNN 8 loads and fails at the first cuDNN call.  Each such
resolution (in a target's load or in a framework's own dlopen) is a finding; the impostors of one
framework (or argument) at one severity are one cause.  Who made the link is said exactly: a package
(its database lists it), libdoctor's journal, the file's own SONAME link, or a hand.

Actions, safest first: rename a hand-made link aside and put a copy that can serve first (the
repair people make by hand, done journalled); put that copy first alone; rename the link aside alone;
the install command.  Links a package owns, and SONAME links, are never renamed.
"""
from __future__ import annotations

import os
from typing import Optional

from ..files import folder_risk
from ..gpu.impostor import Impostor, judge_file
from ..loader.resolver import CACHE, LD_LIBRARY_PATH, RPATH, RUNPATH, SYSTEM, LoadResult, Resolution
from .base import FRONT, Action, Finding, RuleContext, RuleResult, SimpleRule
from .candidates import Candidate
from .common import built_for, chain_to, finder, searched_folders
from .hints import install_hints
from .ownership import BY_HAND, made_by

RULE_ID = "impostor"
TOO_OLD = "too-old"
SOURCE_TITLES = {RPATH: "the RPATH", LD_LIBRARY_PATH: "LD_LIBRARY_PATH", RUNPATH: "the RUNPATH", CACHE: "ld.so.cache",
                 SYSTEM: "the system folders"}


def _finding(ctx: RuleContext, impostor: Impostor, target: str, group: str, requester: Optional[str],
             result: LoadResult, provider_soname: Optional[str]) -> Finding:
    maker = made_by(impostor.chain[0], provider_soname, ctx.our_links()) if len(impostor.chain) > 1 else None
    resolution = next((r for r in result.resolutions if r.name == impostor.wanted and r.found), None)
    beside = (os.path.dirname(ctx.env.absolute(requester)),) if requester and os.path.isabs(requester) else ()
    candidates = tuple(c for c in finder(ctx).find(impostor.wanted, searched_folders(resolution) + beside,
                                                   built_for(ctx.report, group))
                       if os.path.realpath(c.path) != os.path.realpath(impostor.path))
    label = ctx.report.framework_label(group) or group
    too_old = impostor.kind == TOO_OLD
    message = old_copy_message(ctx, impostor, resolution, candidates, label) if too_old else impostor.message
    return Finding(RULE_ID, impostor.severity, message, kind=impostor.kind,
                   cause=f"too-old:{label}:{impostor.wanted}" if too_old else f"impostor:{label}:{impostor.severity}",
                   target=target, group=group,
                   soname=impostor.wanted, needed_by=requester, chain=chain_to(result, requester),
                   resolution=resolution, links=impostor.chain, made_by=maker, candidates=candidates,
                   retirable=maker == BY_HAND and _may_rename(impostor.chain[0]))


def old_copy_message(ctx: RuleContext, impostor: Impostor, resolution: Optional[Resolution],
                     candidates: tuple[Candidate, ...], label: str) -> str:
    """"libcudnn.so.8 from /usr/local/cuda/lib64 (cuDNN 8.0.5) wins through LD_LIBRARY_PATH and is older than
    ...; the newer copy /site/nvidia/cudnn/lib/libcudnn.so.8 (cuDNN 8.9.2) comes later in the order"."""
    via = how_found(resolution)
    what = impostor.really.split(" (", 1)[1].rstrip(")") if " (" in impostor.really else impostor.really
    reason = impostor.reason.split(": ", 1)
    words = f"{impostor.wanted} from {os.path.dirname(impostor.path)} ({what}) wins{via} for {label}: {reason[0]}"
    better = next((c for c in candidates if c.serves), None)
    if better is None:
        return words + (f": {reason[1]}" if len(reason) > 1 else "") + "; no newer copy on this machine"
    order = searched_folders(resolution)
    folder = os.path.dirname(better.path)
    where = ("comes later in the search" if folder in order else "is not in the search")
    return f"{words}; the copy that passes, {better.path} ({better.why}), {where}"


def how_found(resolution: Optional[Resolution]) -> str:
    if resolution is None:
        return ""
    words = {"loaded": "as the copy already loaded (an earlier load by path)", "preload": "as a preload"}
    if resolution.via in words:
        return " " + words[resolution.via]
    return f" through {SOURCE_TITLES.get(resolution.via, resolution.via)}"


def _may_rename(link: str) -> bool:
    """A symlink this user may rename in its folder, and a folder nobody else can swap things in."""
    folder = os.path.realpath(os.path.dirname(os.path.abspath(link)))
    return os.path.islink(link) and folder_risk(folder) is None and os.access(folder, os.W_OK | os.X_OK)


def _target_findings(ctx: RuleContext) -> list[Finding]:
    found = []
    for target in ctx.report.targets:
        result, group = target.result, target.target.group
        built = built_for(ctx.report, group)
        by_path = {o.path: o for o in result.objects}
        seen: set[tuple[str, str]] = set()
        for resolution in result.relevant_resolutions():
            obj = by_path.get(resolution.path) if resolution.path else None
            if obj is None or (resolution.name, obj.path) in seen:
                continue
            seen.add((resolution.name, obj.path))
            impostor = judge_file(resolution.name, ctx.env.absolute(obj.path), obj.facts.soname, built)
            if impostor is not None:
                found.append(_finding(ctx, impostor, target.target.path, group, resolution.requester, result,
                                      obj.facts.soname))
    return found


def _framework_findings(ctx: RuleContext) -> list[Finding]:
    report = ctx.report
    python = report.discovery.environment.python if report.discovery.environment else None
    found = []
    for framework in report.frameworks:
        for check in framework.checks:
            if check.impostor is None:
                continue
            requester = check.lib.requester or python or framework.info.label
            obj = check.result.objects[check.result.new_from]
            found.append(_finding(ctx, check.impostor, requester, framework.info.label, requester, check.result,
                                  obj.facts.soname))
    return found


def _genuine(finding: Finding) -> Optional[Candidate]:
    return next((c for c in finding.candidates if c.serves), None)


def _replacement(ctx: RuleContext, finding: Finding, genuine: Candidate, at: Optional[str]) -> dict:
    """How a copy that can serve is put first: its own folder before LD_LIBRARY_PATH when it holds the name
    itself, else a link to it (in libdoctor's shim folder, which comes first; in place: where the impostor was)."""
    assert finding.soname
    if genuine.exact:
        return {"folder": os.path.dirname(genuine.path), "position": FRONT}
    link = at if (ctx.placement.in_place and at) else os.path.join(ctx.placement.shim_dir, finding.soname)
    target = genuine.path if os.path.dirname(link) != os.path.dirname(genuine.path) else os.path.basename(
        genuine.path)
    return {"link": link, "target": target, "position": FRONT}


def actions_for(ctx: RuleContext, findings: list[Finding]) -> list[Action]:
    first = findings[0]
    soname = first.soname
    assert soname
    consumers = tuple(dict.fromkeys(f.target for f in findings))
    common = dict(soname=soname, consumers=consumers, causes=tuple(dict.fromkeys(f.key for f in findings)),
                  requesters=tuple(dict.fromkeys(f.needed_by for f in findings if f.needed_by)))
    genuine = _genuine(first)
    link = first.links[0] if first.retirable else None
    retire = {"path": link, "was": first.links[1]} if link else {}
    actions = []
    if genuine is not None:
        put = _replacement(ctx, first, genuine, link)
        first_words = f"put {genuine.path} first"
        if link:
            actions.append(Action(RULE_ID, "retire", f"rename the hand-made link {link} aside and {first_words}",
                                  rank=0, **retire, **put, **common))
        if not (link and put.get("link") == link):  # a link in place of the impostor needs it renamed first
            kind = "search-path" if "folder" in put else "symlink"
            actions.append(Action(RULE_ID, kind, first_words, rank=1, **put, **common))
    if link:
        actions.append(Action(RULE_ID, "retire", f"rename the hand-made link {link} aside", rank=2, **retire,
                              **common))
    for hint in dict.fromkeys(h for f in findings[:1] for h in install_hints(f, ctx.report)):
        actions.append(Action(RULE_ID, "install", hint, command=hint, rank=9, **common))
    return actions


def check(ctx: RuleContext) -> RuleResult:
    findings = _target_findings(ctx) + _framework_findings(ctx)
    by_impostor: dict[tuple[str, str], list[Finding]] = {}
    for finding in findings:
        by_impostor.setdefault((finding.soname or "", finding.links[0] if finding.links else ""), []).append(finding)
    actions = [a for group in by_impostor.values() for a in actions_for(ctx, group)]
    return RuleResult(tuple(findings), tuple(actions))


RULE = SimpleRule(RULE_ID, "a name served by a file that is another library (major, CUDA release), or by a copy "
                           "older than the framework's own version check allows", check)
