"""version-mismatch: a provider lacks a version node that a consumer requires."""
from __future__ import annotations

from ..gpu.cudatable import install_hint
from .base import Finding, Proposal, RuleContext, RuleResult, SimpleRule


def check(ctx: RuleContext) -> RuleResult:
    findings, proposals = [], []
    for problem in ctx.report.problems:
        if problem.kind != "version":
            continue
        findings.append(Finding("version-mismatch", "error", problem.message,
                                evidence=(f"load chain: {' <- '.join(reversed(problem.chain))}",),
                                objects=(problem.target,)))
        hint = install_hint(problem.soname or "")
        if hint:
            proposals.append(Proposal("version-mismatch", "install", hint, soname=problem.soname, command=hint,
                                      consumers=(problem.target,), rank=9))
    return RuleResult(tuple(findings), tuple(proposals))


RULE = SimpleRule("version-mismatch", "a provider lacks a version node a consumer requires", check)
