"""Search-path strings as glibc reads them: splitting, ``$ORIGIN``/``$LIB``/``$PLATFORM``.

From glibc ``elf/dl-load.c``: ``is_dst``, ``_dl_dst_substitute``, ``fillin_rpath`` and
``decompose_rpath`` (loader-facts.md, section 1.2).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional

from .environment import split_search_path

_IDENTIFIER = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _dst_at(text: str, pos: int, name: str) -> int:
    """Length of the token ``name`` starting at ``text[pos]`` (just after ``$``), or 0."""
    curly = text.startswith("{", pos)
    start = pos + 1 if curly else pos
    if not text.startswith(name, start):
        return 0
    after = start + len(name)
    if curly:
        return after + 1 - pos if text.startswith("}", after) else 0
    if after < len(text) and text[after] in _IDENTIFIER:
        return 0
    return after - pos


def expand_dst(text: str, origin: Optional[str], lib: str, platform: Optional[str]) -> Optional[str]:
    """Expand the three tokens glibc knows; None when a token has no value (the element is dropped)."""
    if "$" not in text:
        return text
    out = []
    pos = 0
    while pos < len(text):
        dollar = text.find("$", pos)
        if dollar < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:dollar])
        pos = dollar
        char = "$"
        for name, value in (("ORIGIN", origin), ("PLATFORM", platform), ("LIB", lib)):
            length = _dst_at(text, pos + 1, name)
            if length:
                if value is None:
                    return None
                out.append(value)
                pos += 1 + length
                break
        else:  # an unknown "$FOO" stays as it is
            out.append(char)
            pos += 1
    return "".join(out)


def normalize_element(element: str) -> str:
    """``fillin_rpath``: trailing slashes go; an empty element stays empty: the current folder."""
    if element == "":
        return ""
    stripped = element.rstrip("/")
    return stripped or "/"


@lru_cache(maxsize=4096)
def search_folders(value: Optional[str], separators: str, origin: Optional[str], lib: str,
                   platform: Optional[str]) -> tuple[str, ...]:
    """The folders a DT_RPATH/DT_RUNPATH/LD_LIBRARY_PATH string contributes, in order, each once."""
    folders: dict[str, None] = {}
    for element in split_search_path(value, separators):
        expanded = expand_dst(element, origin, lib, platform)
        if expanded is None:
            continue
        folders.setdefault(normalize_element(expanded), None)
    return tuple(folders)


def join(folder: str, name: str) -> str:
    """``folder/name`` the way glibc builds a candidate (plain ``name`` for the current folder)."""
    if folder == "":
        return name
    return f"{folder}/{name}" if folder != "/" else f"/{name}"


def origin_of(textual_path: str, cwd: str) -> str:
    """``$ORIGIN`` of a DSO: the folder part of the path it was opened under, not resolved."""
    absolute = textual_path if textual_path.startswith("/") else f"{cwd}/{textual_path}"
    folder = absolute.rsplit("/", 1)[0]
    return folder or "/"


def origin_of_executable(path: str, cwd: str) -> str:
    """``$ORIGIN`` of a program the kernel started: the folder of its real path (/proc/self/exe)."""
    return os.path.dirname(os.path.realpath(os.path.join(cwd, path)))
