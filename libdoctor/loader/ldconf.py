"""``ld.so.conf`` as ``ldconfig`` reads it (glibc ``elf/ldconfig.c`` ``parse_conf``).

The loader never reads this file (loader-facts.md, item 1): it is parsed only to explain
"configured, but not in the cache: run ldconfig".
"""
from __future__ import annotations

import glob
import os
from dataclasses import dataclass

MAX_INCLUDE_DEPTH = 16


@dataclass(frozen=True)
class LdConf:
    path: str
    dirs: tuple[str, ...]  # configured folders, in order, each once
    files: tuple[str, ...]  # every conf file read
    problems: tuple[str, ...]  # unreadable includes, loops


def _parse(path: str, depth: int, dirs: dict[str, None], files: list[str], problems: list[str]) -> None:
    if depth > MAX_INCLUDE_DEPTH:
        problems.append(f"{path}: includes nested more than {MAX_INCLUDE_DEPTH} deep")
        return
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            lines = handle.read(1 << 20).splitlines()
    except OSError as exc:
        problems.append(f"{path}: {exc.strerror}")
        return
    files.append(path)
    base = os.path.dirname(path)
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        word, _, rest = line.partition(" ")
        if word == "include" or (word.startswith("include") and line[7:8] in ("\t",)):
            for pattern in line[7:].split():
                pattern = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
                for included in sorted(glob.glob(pattern)):  # glob64 sorts, in the C locale
                    _parse(included, depth + 1, dirs, files, problems)
        elif word == "hwcap":
            continue  # ignored by current ldconfig
        else:
            for entry in line.replace(",", " ").split():
                if "=" in entry:  # old "dir=TYPE" syntax
                    entry = entry.split("=", 1)[0]
                dirs.setdefault(entry.rstrip("/") or "/", None)


def parse_ld_conf(path: str = "/etc/ld.so.conf") -> LdConf:
    dirs: dict[str, None] = {}
    files: list[str] = []
    problems: list[str] = []
    _parse(path, 0, dirs, files, problems)
    return LdConf(path, tuple(dirs), tuple(files), tuple(problems))
