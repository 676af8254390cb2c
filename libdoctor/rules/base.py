"""What a rule receives and returns, and what the diagnosis is made of: plain, typed data.

A rule reads the pipeline's facts (:class:`~libdoctor.rules.facts.ScanReport`) and returns
:class:`Finding` s (what is wrong, each with the key of its root cause) and :class:`Action` s (what
would repair a cause).  The engine groups findings into :class:`Cause` s, grades every action by
resolving again, chooses what ``fix --apply`` does and names one next step: a :class:`Diagnosis`,
the one answer scan, fix, preflight, watch and the metrics all read.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Callable, Mapping, Optional, Protocol

from ..loader.environment import Environment
from ..loader.factstore import FactsStore
from ..loader.resolver import Resolution

if TYPE_CHECKING:
    from .candidates import Candidate
    from .facts import ScanReport

SEVERITIES = ("error", "warning", "note", "info")  # errors decide the verdict; the rest never change the exit
GRADES = ("safe", "risky", "broken")
# Findings that are a load's own failure (the JSON's "problems"); the others are hazards (its "findings").
PROBLEM_KINDS = ("missing", "missing-dlopen", "fatal", "version", "symbol", "impostor", "too-old", "bad-target",
                 "driver", "optional")
ACTION_KINDS = ("symlink", "search-path", "retire", "install")
FRONT, BACK = "front", "back"  # where an added search folder goes: before or after LD_LIBRARY_PATH


@dataclass(frozen=True)
class Finding:
    """One thing a rule found.  Positional ``(rule, severity, title)`` as rule plug-ins have always built it."""

    rule: str  # the rule's id
    severity: str  # error | warning | note | info
    message: str
    evidence: tuple[str, ...] = ()
    objects: tuple[str, ...] = ()
    status: str = "problem"  # "problem", or "crashed" when the rule itself failed
    kind: str = "hazard"  # a PROBLEM_KIND, or "hazard" for everything else
    cause: str = ""  # findings with the same key are one root cause ("" : a cause of its own)
    target: str = ""  # the scan target whose load shows it
    group: str = ""  # the framework ("torch 2.14.1") or argument the target belongs to
    soname: Optional[str] = None
    needed_by: Optional[str] = None
    chain: tuple[str, ...] = ()  # from the root of the load down to ``needed_by``
    resolution: Optional[Resolution] = None  # the search that failed, for "paths considered"
    candidates: tuple["Candidate", ...] = ()  # other copies on this machine, each judged
    links: tuple[str, ...] = ()  # impostor: the path asked for and each symlink's text to the real file
    made_by: Optional[str] = None  # impostor behind a link: "by hand", "libdoctor run X", "package dpkg:Y"
    feature: Optional[str] = None  # optional: the feature the missing library serves
    retirable: bool = False  # impostor: a hand-made link that libdoctor may rename aside

    @property
    def id(self) -> str:
        return self.rule

    @property
    def title(self) -> str:
        return self.message

    @property
    def is_error(self) -> bool:
        return self.severity == "error"

    @property
    def is_problem(self) -> bool:
        return self.kind in PROBLEM_KINDS

    @property
    def key(self) -> str:
        """The root cause this finding belongs to."""
        return self.cause or f"{self.rule}:{self.kind}:{self.soname or ''}:{self.message}"


@dataclass(frozen=True)
class Action:
    """One repair.  ``grade`` and ``evidence`` are filled in by grading (resolving again), never by a rule."""

    rule: str
    kind: str  # symlink | search-path | retire | install
    title: str
    soname: Optional[str] = None
    link: Optional[str] = None  # symlink (and retire's replacement): the link to create
    target: Optional[str] = None  # symlink: what it points to
    folder: Optional[str] = None  # search-path (and retire's replacement): the folder to add
    command: Optional[str] = None  # install: what to run
    consumers: tuple[str, ...] = ()  # the scan targets it repairs
    requesters: tuple[str, ...] = ()  # the objects that need ``soname``
    grade: Optional[str] = None
    evidence: tuple[str, ...] = ()
    rank: int = 0  # lower is safer; the order actions are tried and offered in
    position: str = BACK  # search-path: before (front) or after (back) LD_LIBRARY_PATH
    path: Optional[str] = None  # retire: the hand-made link to rename aside
    was: Optional[str] = None  # retire: that link's text when it was judged (apply refuses another)
    causes: tuple[str, ...] = ()  # the keys of the causes it repairs (empty: by ``soname``)

    @property
    def id(self) -> str:
        if self.kind == "symlink":
            return f"symlink:{self.link}->{self.target}"
        if self.kind == "search-path":
            return f"search-path:{self.soname}:{self.folder}" + (":front" if self.position == FRONT else "")
        if self.kind == "retire":
            return f"retire:{self.path}" + (f":{self.folder or self.link}" if self.folder or self.link else "")
        return f"install:{self.soname}:{self.command}"

    @property
    def changes(self) -> bool:
        """Does applying it change the machine (an install hint is advice only)?"""
        return self.kind in ("symlink", "search-path", "retire")

    def graded(self, grade: str, evidence: tuple[str, ...]) -> "Action":
        return replace(self, grade=grade, evidence=self.evidence + evidence)


Proposal = Action  # the name rule plug-ins know


@dataclass(frozen=True)
class Cause:
    """One root cause, as a person reads it: what is wrong, what it affects, what repairs it, what to run."""

    key: str
    severity: str
    title: str
    findings: tuple[Finding, ...]
    details: tuple[str, ...] = ()
    actions: tuple[Action, ...] = ()  # graded, safest first
    fix: Optional[str] = None  # the one command (or instruction) to run for it
    repaired: bool = False  # the chosen changes repair it (``libdoctor fix --apply``)

    @property
    def error(self) -> bool:
        return self.severity == "error"

    @property
    def sonames(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.soname for f in self.findings if f.soname))


@dataclass(frozen=True)
class Policy:
    """Which grades ``fix --apply`` (and the daemon's heal) may make."""

    accept: tuple[str, ...] = ()  # ("risky",): also apply risky changes
    force: bool = False  # also broken ones
    heal: bool = False  # the daemon: safe additions only (never renames anything)

    def allows(self, action: Action) -> bool:
        if not action.changes or action.grade not in GRADES:
            return False
        if self.heal:
            return action.grade == "safe" and action.kind in ("symlink", "search-path")
        return self.force or action.grade == "safe" or action.grade in self.accept


@dataclass(frozen=True)
class Diagnosis:
    """Findings -> causes -> graded actions, the choice of ``fix --apply`` and the verdict."""

    findings: tuple[Finding, ...]
    causes: tuple[Cause, ...]
    actions: tuple[Action, ...]  # every action, graded, safest first
    chosen: tuple[Action, ...]  # what ``fix --apply`` makes under the policy
    verdict: str
    next_step: Optional[str]
    graded: bool = True  # False: repairs not graded yet (``actions`` and ``chosen`` empty, steps provisional)

    @property
    def healthy(self) -> bool:
        return not any(c.error for c in self.causes)

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.is_problem)

    @property
    def hazards(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.is_problem)

    @property
    def unrepaired(self) -> tuple[Cause, ...]:
        """Error causes the chosen changes leave as they are."""
        return tuple(c for c in self.causes if c.error and not c.repaired)

    def for_target(self, path: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.problems if f.target == path)

    def cause_of(self, finding: Finding) -> Optional[Cause]:
        """The cause a finding belongs to (its key is the cause's), None for an info finding."""
        return next((c for c in self.causes if c.key == finding.key), None)


@dataclass(frozen=True)
class Placement:
    """Where symlink repairs go: a libdoctor-owned shim folder, or beside the libraries."""

    in_place: bool
    shim_dir: str


@dataclass
class RuleContext:
    report: "ScanReport"
    env: Environment
    store: FactsStore
    placement: Placement
    extra: dict = field(default_factory=dict)
    # link path -> the run id of the libdoctor journal that made it (read on first use)
    our_links: Callable[[], Mapping[str, str]] = lambda: {}

    def memo(self, key: str, make: Callable[[], Any]) -> Any:
        """Something several rules need, made once per diagnosis (the candidate finder, say)."""
        if key not in self.extra:
            self.extra[key] = make()
        return self.extra[key]


@dataclass(frozen=True)
class RuleResult:
    findings: tuple[Finding, ...] = ()
    proposals: tuple[Action, ...] = ()


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
