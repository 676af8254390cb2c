"""The diagnosis layer: rules turn the pipeline's facts into findings and actions; the engine
(:mod:`libdoctor.rules.engine`) makes causes, grades, the choice of ``fix --apply`` and the verdict.

Rules register through the entry-point group ``libdoctor.rules`` (value: an object with ``id``,
``description`` and ``check(ctx)``), so other packages can add their own.  The built-in ones are
always present, also when libdoctor runs from a source tree without entry points.  A rule that
raises (or fails to load) becomes a warning naming it: it never changes the verdict.

May import ``loader/``, ``gpu/`` and ``targets``; never the pipeline (``scan``) or the front ends.
"""
from __future__ import annotations

import importlib
from typing import Iterable

from .base import Action, Finding, Placement, Proposal, Rule, RuleContext, RuleResult

ENTRY_POINT_GROUP = "libdoctor.rules"
BUILTIN = (
    "libdoctor.rules.missing_soname:RULE",
    "libdoctor.rules.version_mismatch:RULE",
    "libdoctor.rules.undefined_symbol:RULE",
    "libdoctor.rules.impostor:RULE",
    "libdoctor.rules.driver:RULE",
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
    """A rule whose plugin failed to load: it reports that as a crashed rule."""

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


def crashed(rule_id: str, exc: BaseException) -> Finding:
    """A rule that failed: a warning naming it, never a change of verdict."""
    return Finding(rule_id, "warning", f"rule {rule_id} crashed and was skipped: {exc.__class__.__name__}: {exc}",
                   status="crashed", cause=f"crashed:{rule_id}")


def run_rules(ctx: RuleContext, rules: list[Rule]) -> tuple[list[Finding], list[Action]]:
    findings: list[Finding] = []
    actions: list[Action] = []
    for rule in rules:
        try:
            result = rule.check(ctx)
            found, proposed = list(result.findings), list(result.proposals)
            if not all(isinstance(f, Finding) for f in found) or not all(isinstance(a, Action) for a in proposed):
                raise TypeError("check() must return Finding and Action (Proposal) objects")
        except Exception as exc:  # noqa: BLE001 - a crashing check is a result, not an aborted run
            findings.append(crashed(rule.id, exc))
            continue
        findings.extend(found)
        actions.extend(proposed)
    return findings, _dedupe(actions)


def _dedupe(actions: list[Action]) -> list[Action]:
    seen: dict[str, Action] = {}
    for action in actions:
        seen.setdefault(action.id, action)
    return sorted(seen.values(), key=lambda a: (a.soname or "", a.rank))


__all__ = ["Action", "Finding", "Placement", "Proposal", "Rule", "RuleContext", "RuleResult", "available_rules",
           "crashed", "run_rules", "select_rules"]
