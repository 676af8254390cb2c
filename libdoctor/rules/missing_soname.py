"""missing-soname: a name the loader cannot find (or a file where the search meets something unloadable).

Findings: every DT_NEEDED name that does not resolve, every dlopen a framework makes at run time whose
library cannot be loaded (its role decides: the GPU gate and first-use libraries are errors, an optional
feature's a note), the probable dlopens of ``--dlopen-strings`` (warnings: a guess never decides the
verdict), and targets the loader refuses outright.  The missing names of one framework (or one argument)
are one cause: one install command brings them all.

Actions for each missing name, safest first (grading decides): put the folder that holds a copy which
can serve on the search path; link the name to such a copy that lives under another name; the install
command; a copy that cannot serve is offered as a link too, so its grade says why not.
"""
from __future__ import annotations

import os
from ..loader.resolver import LD_LIBRARY_PATH, RPATH, RUNPATH, SYSTEM, LoadResult, Resolution
from .base import BACK, Action, Finding, RuleContext, RuleResult, SimpleRule
from .candidates import Candidate
from .common import built_for, chain_to, finder, searched_folders, shown_name
from .facts import ScanReport, TargetReport
from .hints import install_hints

RULE_ID = "missing-soname"
MAX_LINK_CANDIDATES = 3
ROLE_WORDS = {"gate": "needed for the GPU", "lazy": "loaded on first use", "optional": "optional"}
LINK_SEARCHED_TAGS = (RPATH, LD_LIBRARY_PATH, RUNPATH, SYSTEM)


def missing_key(report: ScanReport, group: str, severity: str) -> str:
    return f"missing:{report.framework_label(group) or group}:{severity}"


def _finding(ctx: RuleContext, path: str, group: str, resolution: Resolution,
             result: LoadResult, kind: str, severity: str, message: str) -> Finding:
    name = resolution.name
    candidates: tuple[Candidate, ...] = ()
    if not resolution.fatal:
        candidates = finder(ctx).find(name, searched_folders(resolution), built_for(ctx.report, group))
    cause = f"fatal:{name}:{group}" if resolution.fatal else missing_key(ctx.report, group, severity)
    return Finding(RULE_ID, severity, message, kind="fatal" if resolution.fatal else kind, cause=cause, target=path,
                   group=group, soname=name, needed_by=resolution.requester,
                   chain=chain_to(result, resolution.requester), resolution=resolution, candidates=candidates)


def load_findings(ctx: RuleContext, path: str, group: str, result: LoadResult, severity: str = "error",
                  kind: str = "missing") -> list[Finding]:
    """The names a load could not find (or met something unloadable for), each once."""
    if result.root_error is not None:
        if "statically linked" in result.root_error:
            return []
        return [Finding(RULE_ID, severity, result.root_error, kind="bad-target", cause=f"bad-target:{path}",
                        target=path, group=group)]
    found, seen = [], set()
    for resolution in result.relevant_resolutions():
        if resolution.found or resolution.name in seen:
            continue
        seen.add(resolution.name)
        message = (f"{shown_name(resolution.name)}: {resolution.error}" if resolution.fatal
                   else f"{shown_name(resolution.name)} not found")
        found.append(_finding(ctx, path, group, resolution, result, kind, severity, message))
    return found


def _dlopen_findings(ctx: RuleContext, path: str, group: str, name: str, result: LoadResult, severity: str,
                     message: str) -> list[Finding]:
    """A dlopen of ``name``: the name itself not found, else what its own load lacks."""
    if result.ok:
        return []
    wanted = next((r for r in result.resolutions if r.name == name), None)
    if wanted is not None and not wanted.found and not wanted.fatal:
        return [_finding(ctx, path, group, wanted, result, "missing-dlopen", severity, message)]
    return load_findings(ctx, path, group, result, severity)


def _target_findings(ctx: RuleContext, target: TargetReport) -> list[Finding]:
    path, group = target.target.path, target.target.group
    found = load_findings(ctx, path, group, target.result)
    for check in target.dlopens:  # a lib*.so* string is a guess at a dlopen: a warning, never the verdict
        found += _dlopen_findings(ctx, path, group, check.name, check.result, "warning",
                                  f"{check.name} not found (probable dlopen by {path})")
    return found


def _framework_findings(ctx: RuleContext, framework) -> list[Finding]:  # noqa: ANN001 - FrameworkReport
    info = framework.info
    report = ctx.report
    python = report.discovery.environment.python if report.discovery.environment else None
    found = []
    for check in framework.checks:
        if check.found or check.lib.family == "cuda driver":
            continue
        requester = check.lib.requester or python or info.label
        if check.lib.role == "optional":
            feature = check.lib.feature or f"{check.lib.family} support"
            found.append(Finding(RULE_ID, "note", f"optional {feature} unavailable: {check.lib.soname} not found "
                                 f"(dlopened by {os.path.basename(requester)})", kind="optional",
                                 cause=f"optional:{feature}", target=requester, group=info.label,
                                 soname=check.lib.soname, needed_by=requester, feature=feature))
            continue
        role = ROLE_WORDS.get(check.lib.role, check.lib.role)
        message = (f"{check.lib.soname} not found ({role} by {info.label}, dlopened by "
                   f"{os.path.basename(requester)})")
        found += _dlopen_findings(ctx, requester, info.label, check.lib.soname, check.result, "error", message)
    return found


# -- actions -----------------------------------------------------------------------------

def _searched_for_links(finding: Finding) -> list[str]:
    resolution = finding.resolution
    if resolution is None:
        return []
    return [f.folder for s in resolution.sources if s.tag in LINK_SEARCHED_TAGS for f in s.folders if f.folder]


def link_folder(ctx: RuleContext, finding: Finding, provider: str) -> str:
    """Where a link goes: the shim folder, or (in place) a folder the loader searches for this name."""
    if not ctx.placement.in_place:
        return ctx.placement.shim_dir
    searched = [os.path.normpath(ctx.env.absolute(f)) for f in _searched_for_links(finding)]
    provider_folder = os.path.dirname(provider)
    if provider_folder in searched:
        return provider_folder
    existing = [f for f in searched if os.path.isdir(f)]
    return existing[0] if existing else provider_folder


def stale_conf_folders(ctx: RuleContext, finding: Finding) -> list[str]:
    """Folders of ld.so.conf that hold the name itself although ld.so.cache does not know it: ``ldconfig``."""
    conf = ctx.env.conf
    if conf is None or not finding.soname or ctx.env.cache_lookup.lookup(finding.soname):
        return []
    configured = ctx.memo("configured folders", lambda: {os.path.realpath(d) for d in conf.dirs})
    return list(dict.fromkeys(os.path.dirname(c.path) for c in finding.candidates
                              if c.exact and os.path.realpath(os.path.dirname(c.path)) in configured))


def _rank(candidate: Candidate, base: int) -> int:
    return base + {"serves": 0, "unproven": 3, "no": 5}.get(candidate.verdict, 5)


def actions_for(ctx: RuleContext, soname: str, findings: list[Finding]) -> list[Action]:
    """Every way to repair ``soname`` for these findings' consumers, safest first."""
    consumers = tuple(dict.fromkeys(f.target for f in findings))
    requesters = tuple(dict.fromkeys(f.needed_by for f in findings if f.needed_by))
    causes = tuple(dict.fromkeys(f.key for f in findings))
    candidates = list(dict.fromkeys(c for f in findings for c in f.candidates))
    stale = {os.path.realpath(f) for finding in findings for f in stale_conf_folders(ctx, finding)}
    common = dict(soname=soname, consumers=consumers, requesters=requesters, causes=causes)
    actions = []
    for folder in dict.fromkeys(os.path.dirname(c.path) for c in candidates if c.exact and c.verdict != "no"):
        if os.path.realpath(folder) in stale:
            continue  # ldconfig is the repair there
        best = next(c for c in candidates if c.exact and os.path.dirname(c.path) == folder)
        actions.append(Action(RULE_ID, "search-path", f"add {folder} to the search path", folder=folder,
                              position=BACK, rank=_rank(best, 0), **common))
    linked: set[str] = set()
    for candidate in candidates:
        real = os.path.realpath(candidate.path)
        if candidate.exact or real in linked or len(linked) >= MAX_LINK_CANDIDATES:
            continue
        linked.add(real)
        folder = link_folder(ctx, findings[0], candidate.path)
        target = candidate.path if folder != os.path.dirname(candidate.path) else os.path.basename(candidate.path)
        actions.append(Action(RULE_ID, "symlink", f"link {soname} -> {candidate.path}",
                              link=os.path.join(folder, soname), target=target, rank=_rank(candidate, 1), **common))
    if stale:
        actions.append(Action(RULE_ID, "install", "ldconfig (as root): the loader reads only ld.so.cache",
                              command="ldconfig", rank=-1, **common))
    for hint in dict.fromkeys(h for f in findings[:1] for h in install_hints(f, ctx.report)):
        actions.append(Action(RULE_ID, "install", hint, command=hint, rank=9, **common))
    return actions


def check(ctx: RuleContext) -> RuleResult:
    findings: list[Finding] = []
    for target in ctx.report.targets:
        findings += _target_findings(ctx, target)
    for framework in ctx.report.frameworks:
        findings += _framework_findings(ctx, framework)
    by_soname: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.kind in ("missing", "missing-dlopen") and finding.soname:
            by_soname.setdefault(finding.soname, []).append(finding)
    actions = [a for soname, group in by_soname.items() for a in actions_for(ctx, soname, group)]
    return RuleResult(tuple(findings), tuple(actions))


RULE = SimpleRule(RULE_ID, "a needed library is not found, with every way to get it", check)
