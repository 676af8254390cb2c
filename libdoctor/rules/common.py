"""Small helpers several rules share: load chains, searched folders, the candidate finder, what a group was
built for."""
from __future__ import annotations

from typing import Optional

from ..gpu.impostor import BuiltFor
from ..loader.resolver import LoadResult, Resolution
from .base import RuleContext
from .candidates import CandidateFinder
from .facts import ScanReport


def shown_name(name: str, limit: int = 120) -> str:
    """A name as a report shows it: a crafted 65,000-byte DT_NEEDED is cut, with its length."""
    return name if len(name) <= limit else f"{name[:60]}... ({len(name)}+ bytes)"


def chain_to(result: LoadResult, requester: Optional[str]) -> tuple[str, ...]:
    """From the root down to ``requester``, along the objects' first requesters."""
    by_path = {o.path: o for o in result.objects}
    chain: list[str] = []
    current = requester
    while current is not None and current not in chain and len(chain) < 64:
        chain.append(current)
        obj = by_path.get(current)
        current = obj.needed_by if obj is not None else None
    return tuple(reversed(chain))


def searched_folders(resolution: Optional[Resolution]) -> tuple[str, ...]:
    if resolution is None:
        return ()
    return tuple(f.folder for s in resolution.sources for f in s.folders)


def finder(ctx: RuleContext) -> CandidateFinder:
    """One candidate finder per diagnosis: the usual places are listed once."""
    report = ctx.report
    sites = report.discovery.environment.site_packages if report.discovery.environment else ()
    return ctx.memo("finder", lambda: CandidateFinder(report.env, ctx.store, sites, report.inputs.look_in))


def built_for(report: ScanReport, group: str) -> Optional[BuiltFor]:
    """What the framework a target group belongs to was built for (None outside a framework)."""
    framework = report.framework_of(report.framework_label(group) or "")
    return framework.info.built_for if framework is not None else None
