"""cuda-family: name the CUDA release behind a missing CUDA soname and what this machine has instead.

Soname majors do not follow the CUDA major (``gpu/data/cuda_sonames.csv``), so the family table
says which file stands in for which, and which pairings are known to be broken.
"""
from __future__ import annotations

from ..gpu.cudatable import describe, family_of, pairing_verdict
from .base import Finding, RuleContext, RuleResult, SimpleRule


def check(ctx: RuleContext) -> RuleResult:
    findings = []
    seen: set[str] = set()
    for problem in ctx.report.problems:
        soname = problem.soname
        if problem.kind not in ("missing", "missing-dlopen") or not soname or soname in seen:
            continue
        wanted = describe(soname)
        if wanted is None and family_of(soname) is None:
            continue
        seen.add(soname)
        evidence = []
        for candidate in problem.candidates:
            if candidate.exact:
                continue
            provider = getattr(ctx.store.get_path(candidate.path), "soname", None) or candidate.name
            verdict = pairing_verdict(soname, provider)
            have = describe(provider) or provider
            word = "known broken" if verdict and verdict.broken else "possible stand-in"
            evidence.append(f"{candidate.path}: {have}: {word}" + (f" ({verdict.reason})" if verdict else ""))
        findings.append(Finding("cuda-family", "info", f"{soname} is {wanted or family_of(soname)}",
                                evidence=tuple(evidence) or ("no library of this family on this machine",),
                                objects=(problem.target,)))
    return RuleResult(tuple(findings))


RULE = SimpleRule("cuda-family", "CUDA soname history and known-broken pairings (cuda_sonames.csv)", check)
