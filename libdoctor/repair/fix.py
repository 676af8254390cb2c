"""The fix pipeline: scan, rules, verification, a plan; and applying the plan."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..loader.environment import Environment
from ..loader.factstore import FactsStore
from ..rules import available_rules, run_rules, select_rules
from ..rules.base import GRADES, Finding, Placement, Proposal, RuleContext
from ..scan import Problem, ScanReport, process_environ, run_scan
from ..targets import python_env
from .fixer import Applier, Outcome, search_additions, shim_dir
from .statedir import state_dir, state_lock
from .verify import verify


@dataclass
class FixPlan:
    report: ScanReport
    findings: list[Finding]
    proposals: list[Proposal]  # every proposal, graded
    chosen: list[Proposal] = field(default_factory=list)  # what --apply would do
    env_prefix: Optional[str] = None  # whose repairs these are (None: not tied to a Python env)
    folders: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # real folder -> identity at plan

    @property
    def needs_fixing(self) -> bool:
        return not self.report.healthy or any(f.severity == "error" for f in self.findings)

    def left_unrepaired(self) -> list[Problem]:
        """Error-level problems no chosen change repairs: libraries still missing, impostors, the driver."""
        covered = {p.soname for p in self.chosen}
        left = [p for p in self.report.problems if p.is_error and p.soname not in covered]
        return list({(p.kind, p.soname or p.message): p for p in left}.values())


def repair_prefix(targets: tuple[str, ...], prefix: Optional[str], python: Optional[str]) -> Optional[str]:
    """The environment whose shim folder and activation hold the repairs."""
    if prefix:
        return os.path.abspath(prefix)
    if python or not targets:
        return python_env(None, python).prefix
    return None


def activated_environment(prefix: Optional[str], root: Optional[str] = None, activate: bool = True) -> Environment:
    """The environment a program of ``prefix`` runs in: what its conda activate.d scripts set (when it is not
    the active env), plus the search-path additions libdoctor applied for it."""
    environ = process_environ(prefix, activate)[0]
    return Environment.from_process(environ=environ).with_search_folders(search_additions(prefix, root))


def choose(proposals: list[Proposal], force: bool, heal_only_safe: bool = False, accept: tuple[str, ...] = ()
           ) -> list[Proposal]:
    """Per missing soname, the safest change allowed: ``safe`` ones; ``risky`` ones only when asked for by
    name (``--accept risky``); ``broken`` ones only with ``force``; the daemon's healing only ``safe``."""
    allowed = ("safe",) if heal_only_safe else ("safe", "risky", "broken") if force else ("safe", *accept)
    chosen: dict[str, Proposal] = {}
    for proposal in sorted(proposals, key=lambda p: (GRADES.index(p.grade) if p.grade in GRADES else 9, p.rank)):
        if proposal.kind in ("symlink", "search-path") and proposal.grade in allowed and proposal.soname:
            chosen.setdefault(proposal.soname, proposal)
    return list(chosen.values())


def make_plan(targets: tuple[str, ...], *, prefix: Optional[str] = None, python: Optional[str] = None,
              caller: Optional[str] = None, dlopen_strings: bool = False, in_place: bool = False,
              only: tuple[str, ...] = (), skip: tuple[str, ...] = (), force: bool = False,
              store: Optional[FactsStore] = None, root: Optional[str] = None,
              look_in: tuple[str, ...] = (), accept: tuple[str, ...] = (), activate: bool = True) -> FixPlan:
    store = store or FactsStore()
    where = repair_prefix(targets, prefix, python)
    env = activated_environment(where, root, activate)
    report = run_scan(targets, env=env, store=store, caller=caller, prefix=prefix, python=python,
                      dlopen_strings=dlopen_strings, look_in=look_in, findings=False)
    return plan_from_report(report, store, where, in_place=in_place, only=only, skip=skip, force=force, root=root,
                            accept=accept)


def plan_from_report(report: ScanReport, store: FactsStore, where: Optional[str], *, in_place: bool = False,
                     only: tuple[str, ...] = (), skip: tuple[str, ...] = (), force: bool = False,
                     root: Optional[str] = None, heal_only_safe: bool = False, accept: tuple[str, ...] = ()
                     ) -> FixPlan:
    """Rules and verification over a scan already made (the daemon re-uses its own)."""
    placement = Placement(in_place=in_place, shim_dir=shim_dir(where, root))
    ctx = RuleContext(report, report.env, store, placement)
    findings, proposals = run_rules(ctx, select_rules(available_rules(), only, skip))
    graded = [verify(ctx, p) for p in proposals]
    chosen = choose(graded, force, heal_only_safe, accept)
    return FixPlan(report, findings, graded, chosen, where, folder_identities(chosen))


def folder_identities(chosen: list[Proposal]) -> dict[str, tuple[int, int, int, int]]:
    """(device, inode, owner, mode) of each existing folder a chosen link goes into, as verified: apply checks
    the folder it opens is still that one (a folder swapped in between is refused, nothing written)."""
    identities = {}
    for proposal in chosen:
        if proposal.kind == "symlink" and proposal.link:
            folder = os.path.realpath(os.path.dirname(proposal.link))
            try:
                st = os.stat(folder)
            except OSError:
                continue  # not there yet: libdoctor's own shim folder, made at apply
            identities[folder] = (st.st_dev, st.st_ino, st.st_uid, st.st_mode)
    return identities


def apply_plan(plan: FixPlan, in_place: bool, root: Optional[str] = None) -> Outcome:
    root = root or state_dir()
    with state_lock(root):
        return Applier(root, plan.env_prefix, in_place, plan.folders).apply(plan.chosen)


def proposal_json(proposal: Proposal) -> dict[str, Any]:
    return {"id": proposal.id, "rule": proposal.rule, "kind": proposal.kind, "title": proposal.title,
            "soname": proposal.soname, "link": proposal.link, "target": proposal.target, "folder": proposal.folder,
            "command": proposal.command, "grade": proposal.grade, "evidence": list(proposal.evidence),
            "consumers": list(proposal.consumers)}


def finding_json(finding: Finding) -> dict[str, Any]:
    return {"id": finding.id, "severity": finding.severity, "title": finding.title, "status": finding.status,
            "evidence": list(finding.evidence), "objects": list(finding.objects)}


def plan_json(plan: FixPlan, outcome: Optional[Outcome] = None, after: Optional[FixPlan] = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "schema_version": 1,
        "findings": [finding_json(f) for f in plan.findings],
        "proposals": [proposal_json(p) for p in plan.proposals],
        "plan": [p.id for p in plan.chosen],
        "unrepaired": [{"kind": p.kind, "soname": p.soname, "message": p.message} for p in plan.left_unrepaired()],
        "summary": {"problems": len(plan.report.problems), "findings": len(plan.findings),
                    "proposals": len(plan.proposals)},
    }
    if outcome is not None:
        data["applied"] = {"run_id": outcome.run_id, "created": outcome.created, "kept": outcome.kept,
                           "refused": outcome.refused}
    if after is not None:
        data["after"] = {"problems": len(after.report.problems),
                         "findings": [finding_json(f) for f in after.findings]}
    return data
