"""ldconfig-stale: a folder in ld.so.conf holds libraries that are not in ld.so.cache.

The loader reads only the cache (loader-facts.md, item 1): until ``ldconfig`` runs, such a
folder is invisible to it.
"""
from __future__ import annotations

import os
import re

from ..loader.ldcache import libcmp_key
from .base import Action, Finding, RuleContext, RuleResult, SimpleRule

_SONAME_FILE = re.compile(r"^lib.+\.so\.[0-9]+$")


def check(ctx: RuleContext) -> RuleResult:
    env = ctx.env
    if env.conf is None or env.cache is None:
        return RuleResult()
    cached = {libcmp_key(e.key) for e in env.cache.entries}
    findings, proposals = [], []
    for folder in env.conf.dirs:
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            continue
        stale = []
        for name in names:
            if not _SONAME_FILE.match(name) or libcmp_key(name) in cached:
                continue
            facts = ctx.store.get_path(os.path.join(folder, name))
            if getattr(facts, "soname", None) == name:  # ldconfig would cache it under this name
                stale.append(name)
        if stale:
            finding = Finding("ldconfig-stale", "warning",
                              f"{folder} is configured in {env.conf.path} but {len(stale)} of its libraries "
                              "are not in ld.so.cache: run ldconfig", evidence=tuple(stale[:10]), objects=(folder,))
            findings.append(finding)
            proposals.append(Action("ldconfig-stale", "install", "ldconfig (as root)", soname=stale[0],
                                    command="ldconfig", rank=5, causes=(finding.key,)))
    return RuleResult(tuple(findings), tuple(proposals))


RULE = SimpleRule("ldconfig-stale", "a folder in ld.so.conf whose libraries are not in the cache", check)
