"""version-mismatch: a provider lacks a version node that a consumer requires (``dl-version.c``).

``version `X' not found (required by Y)`` stops the load; a weak need only warns (the loader goes on).
One cause per missing version node of one library, listing every consumer.
"""
from __future__ import annotations

from .base import Action, Finding, RuleContext, RuleResult, SimpleRule
from .common import chain_to
from .hints import install_hints

RULE_ID = "version-mismatch"


def check(ctx: RuleContext) -> RuleResult:
    findings: list[Finding] = []
    seen: set[str] = set()
    for target in ctx.report.targets:
        result = target.result
        for problem in result.version_problems:
            if not problem.fatal or problem.message in seen:
                continue
            seen.add(problem.message)
            findings.append(Finding(RULE_ID, "error", problem.message, kind="version",
                                    cause=f"version:{problem.file}:{problem.version}", target=target.target.path,
                                    group=target.target.group, soname=problem.file, needed_by=problem.consumer,
                                    chain=chain_to(result, problem.consumer)))
    actions = []
    for finding in findings:
        for hint in install_hints(finding, ctx.report):
            actions.append(Action(RULE_ID, "install", hint, soname=finding.soname, command=hint,
                                  consumers=(finding.target,), causes=(finding.key,), rank=9))
    return RuleResult(tuple(findings), tuple(actions))


RULE = SimpleRule(RULE_ID, "a provider lacks a version node a consumer requires", check)
