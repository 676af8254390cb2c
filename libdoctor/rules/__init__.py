"""The rules engine: rules turn a scan into findings and proposals.

Rules register through the entry-point group ``libdoctor.rules`` (value: an object with ``id``,
``description`` and ``check(ctx)``), so other packages can add their own.  The built-in ones
are always present, also when libdoctor runs from a source tree without entry points.  A rule
that raises becomes a ``crashed`` finding; the run goes on.
"""
from __future__ import annotations

import importlib
from typing import Iterable

from .base import Finding, Placement, Proposal, Rule, RuleContext, RuleResult

ENTRY_POINT_GROUP = "libdoctor.rules"
BUILTIN = (
    "libdoctor.rules.missing_soname:RULE",
    "libdoctor.rules.cuda_family:RULE",
    "libdoctor.rules.version_mismatch:RULE",
    "libdoctor.rules.shadowing:RULE",
    "libdoctor.rules.ldconfig_stale:RULE",
    "libdoctor.rules.search_path_hazard:RULE",
    "libdoctor.rules.broken_file:RULE",
    "libdoctor.rules.framework_env:RULE",
)


def _load(spec: str) -> Rule:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr)


def _entry_point_rules() -> list[tuple[str, object]]:
    from importlib import metadata

    try:
        points = metadata.entry_points()
        selected = points.select(group=ENTRY_POINT_GROUP) if hasattr(points, "select") else points.get(
            ENTRY_POINT_GROUP, [])
    except Exception:  # noqa: BLE001 - broken metadata must not stop a diagnosis
        return []
    loaded = []
    for point in selected:
        try:
            loaded.append((point.name, point.load()))
        except Exception as exc:  # noqa: BLE001
            loaded.append((point.name, exc))
    return loaded


class _BrokenRule:
    """A rule whose plugin failed to load: it reports that as a crashed finding."""

    def __init__(self, rule_id: str, error: BaseException) -> None:
        self.id = rule_id
        self.description = f"(failed to load: {error})"
        self.error = error

    def check(self, ctx: RuleContext) -> RuleResult:
        raise self.error


def available_rules() -> list[Rule]:
    rules: dict[str, Rule] = {}
    for spec in BUILTIN:
        rule = _load(spec)
        rules[rule.id] = rule
    for name, loaded in _entry_point_rules():
        if isinstance(loaded, BaseException):
            rules.setdefault(name, _BrokenRule(name, loaded))
        elif getattr(loaded, "id", None) and callable(getattr(loaded, "check", None)):
            rules.setdefault(loaded.id, loaded)  # type: ignore[arg-type]
    return list(rules.values())


def select_rules(rules: list[Rule], only: Iterable[str] = (), skip: Iterable[str] = ()) -> list[Rule]:
    only, skip = set(only), set(skip)
    known = {r.id for r in rules}
    unknown = (only | skip) - known
    if unknown:
        from ..errors import UsageError

        raise UsageError(f"unknown rule(s): {', '.join(sorted(unknown))} (see `libdoctor rules`)")
    return [r for r in rules if (not only or r.id in only) and r.id not in skip]


def run_rules(ctx: RuleContext, rules: list[Rule]) -> tuple[list[Finding], list[Proposal]]:
    findings: list[Finding] = []
    proposals: list[Proposal] = []
    for rule in rules:
        try:
            result = rule.check(ctx)
        except Exception as exc:  # noqa: BLE001 - a crashing check is a result, not an aborted run
            findings.append(Finding(rule.id, "error", f"rule {rule.id} crashed: {exc.__class__.__name__}: {exc}",
                                    status="crashed"))
            continue
        findings.extend(result.findings)
        proposals.extend(result.proposals)
    return findings, _dedupe(proposals)


# Rules whose findings repeat what the scan itself reports (missing names, version needs, a broken file
# where a search meets it) or only inform.
NOT_IN_SCAN = frozenset({"missing-soname", "version-mismatch", "cuda-family", "broken-file"})


def scan_findings(ctx: RuleContext) -> list[Finding]:
    """The findings ``scan`` shows beside its own problems: hazards, broken files, framework fit, ..."""
    rules = [r for r in available_rules() if r.id not in NOT_IN_SCAN]
    findings, _proposals = run_rules(ctx, rules)
    return [f for f in findings if f.severity in ("error", "warning") or f.status == "crashed"]


def _dedupe(proposals: list[Proposal]) -> list[Proposal]:
    seen: dict[str, Proposal] = {}
    for proposal in proposals:
        seen.setdefault(proposal.id, proposal)
    return sorted(seen.values(), key=lambda p: (p.soname or "", p.rank))


__all__ = ["Finding", "Placement", "Proposal", "Rule", "RuleContext", "RuleResult", "available_rules", "run_rules",
           "scan_findings", "select_rules"]
