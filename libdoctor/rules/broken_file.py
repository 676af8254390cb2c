"""broken-file: a dangling or looping symlink, or a non-ELF file, under a library name in a search folder.

The loader skips a missing file but stops at a non-ELF one (``open_verify``, loader-facts 1.5):
a Git LFS pointer or a text file named ``libcudnn.so.8`` early on the path breaks every load
that reaches it.
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
            return f"{path} is {kind} (-> {os.readlink(path)})"
    if is_elf(path):
        return None  # an ELF file: whatever its state, it is not a non-ELF file under a library name
    entry = ctx.store.get_path(path)
    if isinstance(entry, ElfError) and not isinstance(entry, LdScriptError) and os.path.isfile(path):
        return f"{path}: {entry.message}; the loader stops here with \"{entry.loader_message}\""
    return None


def check(ctx: RuleContext) -> RuleResult:
    folders: dict[str, None] = {}
    for report in ctx.report.targets:
        for resolution in report.result.relevant_resolutions():
            for source in resolution.sources:
                for attempt in source.folders:
                    if attempt.folder and attempt.outcome != "no such folder":
                        folders.setdefault(ctx.env.absolute(attempt.folder), None)
    findings = []
    for folder in folders:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        for name in names:
            if _LIBRARY_NAME.match(name):
                problem = _inspect(ctx, os.path.join(folder, name))
                if problem:
                    findings.append(Finding("broken-file", "error", problem, objects=(os.path.join(folder, name),)))
    return RuleResult(tuple(findings))


RULE = SimpleRule("broken-file", "dangling or looping symlinks and non-ELF files under library names", check)
