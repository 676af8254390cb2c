"""The diagnosis engine: findings -> causes -> graded actions -> the choice of ``fix --apply`` -> one next step.

``diagnose`` is the one decision every front end reads: scan's verdict and next step, fix's plan,
preflight's block, watch's heal and the metrics.  Changes are chosen greedily, errors first: for each
name a cause needs repaired, its actions are graded (``rules.grading``) in the machine as it will be
after the changes chosen before, and the safest one the policy allows is taken.
"""
from __future__ import annotations

import os
from dataclasses import replace
from typing import Callable, Mapping, Optional

from ..gpu.cudatable import DRIVER_SONAMES
from ..loader.factstore import FactsStore
from . import available_rules, run_rules, select_rules
from .base import GRADES, Action, Cause, Diagnosis, Finding, Placement, Policy, RuleContext
from .causes import (driver_cause, impostor_cause, missing_cause, named, optional_cause, plain_cause, plural,
                     symbol_cause, too_old_cause, version_cause)
from .driver import CAUSE as DRIVER_CAUSE
from .facts import ScanReport
from .grading import Grader
from .hints import fix_command, one_command
from .missing_soname import stale_conf_folders

SEVERITY_ORDER = {"error": 0, "warning": 1, "note": 2}


DEFAULT_POLICY = Policy()  # frozen: one shared default


def diagnose(report: ScanReport, store: FactsStore, placement: Placement, policy: Policy = DEFAULT_POLICY,
             our_links: Callable[[], Mapping[str, str]] = lambda: {}, grade: bool = True) -> Diagnosis:
    """The diagnosis; ``grade=False`` stops before grading repairs (the findings, the causes and the verdict
    are the same: the daemon says what broke at once, and grades only when it is to heal)."""
    rules = select_rules(available_rules(), report.inputs.only, report.inputs.skip)
    links: dict[str, Mapping[str, str]] = {}
    ctx = RuleContext(report, report.env, store, placement,
                      our_links=lambda: links.setdefault("links", our_links()))
    raw, actions = run_rules(ctx, rules)
    findings = [_fold(f, report) for f in raw]
    actions = _follow(actions, raw, findings)
    groups: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.severity in SEVERITY_ORDER:
            groups.setdefault(finding.key, []).append(finding)
    ordered = sorted(groups.items(), key=lambda kv: SEVERITY_ORDER[_severity(kv[1])])
    attached = {key: [a for a in actions if _addresses(a, key, members)] for key, members in ordered}
    graded, chosen = _choose(ctx, ordered, attached, policy) if grade else ({}, [])
    causes = [_cause(ctx, key, tuple(members), [graded.get(a.id, a) for a in attached[key]], chosen)
              for key, members in ordered]
    verdict = verdict_line(report, causes)
    step = next((c.fix for c in causes if c.error and c.fix), None)
    everything = sorted(graded.values(), key=lambda a: (GRADES.index(a.grade) if a.grade in GRADES else 3, a.rank,
                                                         a.soname or ""))
    return Diagnosis(tuple(findings), tuple(causes), tuple(everything), tuple(chosen), verdict, step, grade)


def _severity(members: list[Finding]) -> str:
    return min((f.severity for f in members), key=lambda s: SEVERITY_ORDER.get(s, 3))


def _addresses(action: Action, key: str, members: list[Finding]) -> bool:
    if action.causes:
        return key in action.causes
    return bool(action.soname) and any(f.soname == action.soname for f in members)


def _fold(finding: Finding, report: ScanReport) -> Finding:
    """A problem of an extension module that serves only an optional feature is a note naming the feature; the
    driver's own libraries missing on a machine without a driver are the driver's cause."""
    feature = next((t.feature for t in report.targets if t.feature and t.target.path == finding.target), None)
    if feature and finding.is_problem and finding.kind != "optional":
        what = f"{finding.soname} not found" if finding.kind in ("missing", "missing-dlopen") else finding.message
        return replace(finding, kind="optional", severity="note", feature=feature, cause=f"optional:{feature}",
                       message=f"optional {feature} unavailable: {what} (needed by "
                               f"{os.path.basename(finding.target)})")
    driver_own = finding.kind in ("missing", "missing-dlopen") and finding.soname in DRIVER_SONAMES
    if driver_own and report.inputs.libraries_only:
        return replace(finding, severity="info", message=f"{finding.message} (the driver's: not judged with "
                                                         "--libraries-only)")
    no_driver = report.driver is not None and not report.driver.present
    if no_driver and driver_own:
        return replace(finding, cause=DRIVER_CAUSE)
    return finding


def _follow(actions: list[Action], raw: list[Finding], folded: list[Finding]) -> list[Action]:
    """Actions follow their findings into the cause they were folded into (an optional feature, the driver)."""
    moved: dict[tuple[str, str], set[str]] = {}
    for before, after in zip(raw, folded):
        moved.setdefault((before.key, before.soname or ""), set()).add(after.key)
    followed = []
    for action in actions:
        keys = [k for old in action.causes for k in sorted(moved.get((old, action.soname or ""), {old}))]
        followed.append(replace(action, causes=tuple(dict.fromkeys(keys))) if action.causes else action)
    return followed


def _slots(members: list[Finding]) -> list[str]:
    """The names a cause needs repaired, one change each."""
    return list(dict.fromkeys(f.soname for f in members if f.soname and f.kind in ("missing", "missing-dlopen",
                                                                                    "impostor", "too-old", "symbol")))


def _choose(ctx: RuleContext, ordered: list[tuple[str, list[Finding]]], attached: dict[str, list[Action]],
            policy: Policy) -> tuple[dict[str, Action], list[Action]]:
    """Grade every action (in the machine as it will be after the changes chosen before it) and choose, per
    name, the first the policy allows."""
    grader = Grader(ctx)
    graded: dict[str, Action] = {}
    chosen: list[Action] = []
    filled: set[str] = set()
    for key, members in ordered:
        for slot in _slots(members) or [""]:
            base = tuple(chosen)
            for action in sorted((a for a in attached[key] if (a.soname or "") == slot or not slot),
                                 key=lambda a: a.rank):
                if action.id not in graded:
                    graded[action.id] = grader.grade(action, base)
                pick = graded[action.id]
                if slot and slot not in filled and policy.allows(pick) and pick.id not in {c.id for c in chosen}:
                    chosen.append(pick)
                    filled.add(slot)
        for action in attached[key]:  # actions of no slot (plug-ins', ldconfig): graded, never chosen here
            graded.setdefault(action.id, grader.grade(action, tuple(chosen)))
    return graded, chosen


def _cause(ctx: RuleContext, key: str, members: tuple[Finding, ...], actions: list[Action],
           chosen: list[Action]) -> Cause:
    report = ctx.report
    first = members[0]
    stale: list[str] = []
    if key == DRIVER_CAUSE:
        title, details = driver_cause(report, members)
    elif first.kind in ("missing", "missing-dlopen"):
        stale = list(dict.fromkeys(folder for f in members for folder in stale_conf_folders(ctx, f)))
        title, details = missing_cause(report, members, stale)
    elif first.kind == "impostor":
        title, details = impostor_cause(report, members)
    elif first.kind == "too-old":
        title, details = too_old_cause(report, members)
    elif first.kind == "symbol":
        title, details = symbol_cause(members)
    elif first.kind == "version":
        title, details = version_cause(members)
    elif first.kind == "optional":
        title, details = optional_cause(members)
    else:
        title, details = plain_cause(members)
    ranked = sorted(actions, key=lambda a: (GRADES.index(a.grade) if a.grade in GRADES else 3, a.rank))
    chosen_ids = {a.id for a in chosen}
    slots = _slots(list(members))
    repaired = bool(slots) and all(any(a.id in chosen_ids and a.soname == s for a in actions) for s in slots)
    severity = _severity(list(members))
    fix = _fix(report, ranked, repaired, plan=severity != "note")
    return Cause(key, severity, title, members, tuple(details), tuple(ranked), fix, repaired)


def _fix(report: ScanReport, actions: list[Action], repaired: bool, plan: bool = True) -> Optional[str]:
    """The one step for a cause: the journalled, undoable change when it repairs the cause; else ldconfig where
    the cache is stale; else the install command; else the plan, where changes exist but none is safe."""
    if repaired:
        return fix_command(report)
    if any(a.command == "ldconfig" for a in actions):
        return "ldconfig  # as root"
    hints = list(dict.fromkeys(a.command for a in actions if a.kind == "install" and a.command))
    if hints:
        return one_command(hints)
    if plan and any(a.changes for a in actions):
        return fix_command(report, apply=False)
    return None


def verdict_line(report: ScanReport, causes: list[Cause]) -> str:
    errors = sum(c.error for c in causes)
    frameworks = [f for f in report.frameworks if f.info.cuda_build]
    usable = [f for f in frameworks if f.gpu_usable]
    unusable = [f.info.label for f in frameworks if f.gpu_usable is False]
    if not errors:
        what = (f"{named([f.info.label for f in usable])} can use the GPU" if usable and not unusable else
                f"every library resolves ({plural(len(report.targets), 'object')} checked)")
        shown = [c for c in causes if c.severity == "warning"]
        warn = f"; {plural(len(shown), 'warning')}" if shown else ""
        if report.inputs.libraries_only:
            what = (f"the libraries of {named([f.info.label for f in usable])} load" if usable else
                    f"every library resolves ({plural(len(report.targets), 'object')} checked)")
            return f"healthy (libraries only: driver and device not judged): {what}{warn}"
        return f"healthy: {what}{warn}"
    if unusable:
        return f"not healthy: {named(unusable, 2)} cannot use the GPU ({plural(errors, 'cause')})"
    return f"not healthy: {plural(errors, 'cause')} of failure in {plural(len(report.targets), 'object')} checked"


__all__ = ["diagnose", "verdict_line"]
