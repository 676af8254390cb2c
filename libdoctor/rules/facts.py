"""What the scan pipeline observed: the facts every rule reads (never a judgement).

The pipeline (``libdoctor.scan``) fills a :class:`ScanReport` with each target's load, each dlopen it
checked, the frameworks' own loads and the driver; the diagnosis engine (``rules.engine``) turns it
into findings, causes and actions and attaches the :class:`~libdoctor.rules.base.Diagnosis`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Optional

from ..loader.environment import Environment
from ..loader.resolver import LoadRequest, LoadResult, Resolver
from ..targets import Activation, Discovery, Target

if TYPE_CHECKING:
    from .base import Action, Diagnosis, Finding


@dataclass(frozen=True)
class DlopenCheck:
    """A ``dlopen(name)`` the pipeline resolved: a probable one (a ``lib*.so*`` string in the target), or one a
    framework makes at run time."""

    name: str
    request: LoadRequest
    result: LoadResult

    def rerun(self, resolver: Resolver) -> LoadResult:
        """The same dlopen again (in another Environment)."""
        return resolver.request(self.request)


@dataclass(frozen=True)
class TargetReport:
    target: Target
    request: LoadRequest
    result: LoadResult
    dlopens: tuple[DlopenCheck, ...] = ()
    feature: Optional[str] = None  # the optional feature this extension module serves (CuPy's cuTENSOR)


@dataclass(frozen=True)
class ScanInputs:
    """What the scan was asked: the question a report answers (and ``libdoctor fix`` repeats)."""

    paths: tuple[str, ...] = ()
    caller: Optional[str] = None
    prefix: Optional[str] = None
    python: Optional[str] = None
    dlopen_strings: bool = True
    look_in: tuple[str, ...] = ()
    symbols: bool = True
    only: tuple[str, ...] = ()  # --rule
    skip: tuple[str, ...] = ()  # --skip-rule
    in_place: bool = False
    accept: tuple[str, ...] = ()
    force: bool = False
    activate: bool = True
    heal: bool = False  # the daemon's policy: safe additions only
    libraries_only: bool = False  # judge everything but the driver and the device (CPU build hosts, CI, images)


@dataclass
class ScanReport:
    env: Environment
    discovery: Discovery
    inputs: ScanInputs = field(default_factory=ScanInputs)
    targets: list[TargetReport] = field(default_factory=list)
    cache_note: Optional[str] = None
    frameworks: list = field(default_factory=list)  # gpu.frameworkcheck.FrameworkReport
    driver: Optional[Any] = None  # gpu.driver.DriverInfo
    probes: list = field(default_factory=list)  # gpu.probe.ProbeResult, with --probe
    resolver: Optional[Resolver] = None
    activations: tuple[Activation, ...] = ()  # what the env's conda activate.d scripts set
    additions: tuple[str, ...] = ()  # LD_LIBRARY_PATH folders libdoctor's applied repairs add
    environ: Optional[dict[str, str]] = None  # the variables judged: what a program of the env starts with
    diagnosis: Optional["Diagnosis"] = None
    unjudged: list[tuple[str, str]] = field(default_factory=list)  # (target, why the model cannot judge it)
    # real folder -> (dev, ino, uid, mode) of each folder a chosen change writes into, when it was graded
    folder_identities: dict[str, Optional[tuple]] = field(default_factory=dict)

    def still_valid(self, env: Environment, inputs: ScanInputs) -> bool:
        """Nothing this report depends on has changed: the same question, environment and files."""
        if inputs != self.inputs or self.resolver is None or self.probes:
            return False
        if not same_environment(env, self.env):
            return False
        if self.driver is not None:
            from ..gpu.frameworkcheck import machine_driver

            if machine_driver(env, resolver=self.resolver) != self.driver:
                return False
        return self.discovery.unchanged() and self.resolver.view.unchanged()

    @property
    def problems(self) -> tuple["Finding", ...]:
        """The loads' own failures (missing, impostor, symbol, ...), as the JSON's "problems"."""
        return self.diagnosis.problems if self.diagnosis else ()

    @property
    def findings(self) -> tuple["Finding", ...]:
        """The hazards (and crashed rules), as the JSON's "findings"."""
        return self.diagnosis.hazards if self.diagnosis else ()

    @property
    def healthy(self) -> bool:
        return self.diagnosis.healthy if self.diagnosis else True

    @property
    def actions(self) -> tuple["Action", ...]:
        """Every repair the diagnosis graded, safest first."""
        return self.diagnosis.actions if self.diagnosis else ()

    @property
    def chosen(self) -> tuple["Action", ...]:
        """What ``fix --apply`` makes (under the report's policy)."""
        return self.diagnosis.chosen if self.diagnosis else ()

    def group_of(self, path: str) -> str:
        """The group (framework label or argument) of the target at ``path``."""
        return next((t.target.group for t in self.targets if t.target.path == path), path)

    def framework_label(self, group: str) -> Optional[str]:
        """The framework a target group ("torch 2.14.1") is, as its report names it."""
        return next((f.info.label for f in self.frameworks if group == f.info.label
                     or group.startswith(f.info.name + " ")), None)

    def framework_of(self, group: str):  # noqa: ANN201 - FrameworkReport
        return next((f for f in self.frameworks if f.info.label == group), None)


def same_environment(a: Environment, b: Environment) -> bool:
    return (a.loader == b.loader and a.cwd == b.cwd and a.ld_library_path == b.ld_library_path
            and a.ld_preload == b.ld_preload and a.preload_file == b.preload_file and dict(a.overlay) == dict(b.overlay)
            and a.hidden == b.hidden
            and (a.cache.entries if a.cache else None) == (b.cache.entries if b.cache else None))
