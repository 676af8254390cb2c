"""What a rule receives and returns: plain, typed data."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional, Protocol

from ..loader.environment import Environment
from ..loader.factstore import FactsStore
from ..scan import ScanReport

SEVERITIES = ("error", "warning", "info")
GRADES = ("safe", "risky", "broken")


@dataclass(frozen=True)
class Finding:
    id: str  # the rule's id
    severity: str  # error | warning | info
    title: str
    evidence: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    status: str = "problem"  # "problem", or "crashed" when the rule itself failed


@dataclass(frozen=True)
class Proposal:
    """One repair.  ``grade`` and ``evidence`` are filled in by verification, never by a rule."""

    rule: str
    kind: str  # symlink | search-path | install
    title: str
    soname: Optional[str] = None
    link: Optional[str] = None  # symlink: the link to create
    target: Optional[str] = None  # symlink: what it points to
    folder: Optional[str] = None  # search-path: the folder to add
    command: Optional[str] = None  # install: what to run
    consumers: tuple[str, ...] = ()  # the scan targets it repairs
    requesters: tuple[str, ...] = ()  # the objects that need ``soname``
    grade: Optional[str] = None
    evidence: tuple[str, ...] = ()
    rank: int = 0  # lower is safer; the order proposals are offered in

    @property
    def id(self) -> str:
        if self.kind == "symlink":
            return f"symlink:{self.link}->{self.target}"
        if self.kind == "search-path":
            return f"search-path:{self.soname}:{self.folder}"
        return f"install:{self.soname}:{self.command}"

    def graded(self, grade: str, evidence: tuple[str, ...]) -> "Proposal":
        return replace(self, grade=grade, evidence=self.evidence + evidence)


@dataclass(frozen=True)
class Placement:
    """Where symlink repairs go: a libdoctor-owned shim folder, or beside the libraries."""

    in_place: bool
    shim_dir: str


@dataclass
class RuleContext:
    report: ScanReport
    env: Environment
    store: FactsStore
    placement: Placement
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RuleResult:
    findings: tuple[Finding, ...] = ()
    proposals: tuple[Proposal, ...] = ()


class Rule(Protocol):
    id: str
    description: str

    def check(self, ctx: RuleContext) -> RuleResult: ...


@dataclass(frozen=True)
class SimpleRule:
    """A rule made from a function; the built-in rules are these."""

    id: str
    description: str
    function: Callable[[RuleContext], RuleResult]

    def check(self, ctx: RuleContext) -> RuleResult:
        return self.function(ctx)
