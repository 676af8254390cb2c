"""broken-file: a dangling or looping symlink, or a non-ELF file, under a library name in a search folder.

The loader skips a missing file but stops at a non-ELF one (``open_verify``, loader-facts 1.5): a
Git LFS pointer or a text file named ``libcudnn.so.8`` early on the path breaks every load that
reaches it.  Where a load of this scan met such a file, its own finding (missing-soname's "fatal")
says so; here are the ones waiting in the folders the loader searched: warnings, since no load of
this scan fails on them.  In the distribution's own system folders only the names the loads asked for
are looked at (its package manager keeps the rest).
"""
from __future__ import annotations

import errno
import os
import re

from ..errors import ElfError, LdScriptError
from ..loader.elffacts import is_elf
from .base import Finding, RuleContext, RuleResult, SimpleRule

_LIBRARY_NAME = re.compile(r"^lib.+\.so(\.[0-9]+)+$")


def _inspect(ctx: RuleContext, path: str) -> "str | None":
    if os.path.islink(path):
        try:
            os.stat(path)
        except OSError as exc:
            kind = "a symlink loop" if exc.errno == errno.ELOOP else "a dangling symlink"
            return f"{path} is {kind} (-> {os.readlink(path)}): the loader skips it"
    if is_elf(path):
        return None  # an ELF file: whatever its state, it is not a non-ELF file under a library name
    entry = ctx.store.get_path(path)
    if isinstance(entry, ElfError) and not isinstance(entry, LdScriptError) and os.path.isfile(path):
        return f"{path}: {entry.message}; a load that reaches it stops with \"{entry.loader_message}\""
    return None


def _searched(ctx: RuleContext) -> tuple[dict[str, None], set[str], set[str]]:
    """The folders the loads searched, the files where a search already stopped (reported as fatal), and the
    names the loads asked for."""
    folders: dict[str, None] = {}
    met: set[str] = set()
    asked: set[str] = set()
    for report in ctx.report.targets:
        for resolution in report.result.relevant_resolutions():
            asked.add(resolution.name)
            for source in resolution.sources:
                for attempt in source.folders:
                    if attempt.outcome == "fatal" and attempt.candidate:
                        met.add(ctx.env.absolute(attempt.candidate))
                    if attempt.folder and attempt.outcome != "no such folder":
                        folders.setdefault(ctx.env.absolute(attempt.folder), None)
    return folders, met, asked


def unjudged(ctx: RuleContext) -> list[Finding]:
    """A target of another ELF class (a 32-bit program on a 64-bit host) is not modelled: never "healthy" with
    nothing checked."""
    return [Finding("broken-file", "error", why, kind="bad-target", cause=f"unjudged:{path}", target=path, group=path)
            for path, why in ctx.report.unjudged]


def check(ctx: RuleContext) -> RuleResult:
    folders, met, asked = _searched(ctx)
    view = ctx.report.resolver.view if ctx.report.resolver else None
    system = {os.path.realpath(d) for d in ctx.env.loader.system_dirs}
    findings = []
    for folder in folders:
        names = view.listing(folder) if view else frozenset()
        if not isinstance(names, frozenset):
            continue
        if os.path.realpath(folder) in system:
            names = names & asked  # the distribution's own folders: only what these loads asked for there
        for name in sorted(names):
            path = os.path.join(folder, name)
            if _LIBRARY_NAME.match(name) and path not in met:
                problem = _inspect(ctx, path)
                if problem:
                    findings.append(Finding("broken-file", "warning", problem, objects=(path,)))
    return RuleResult(tuple(unjudged(ctx) + findings))


RULE = SimpleRule("broken-file", "dangling or looping symlinks and non-ELF files under library names", check)
