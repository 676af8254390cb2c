"""A pure-Python reader of ``/etc/ld.so.cache`` and glibc's lookup in it.

Formats and semantics from glibc ``sysdeps/generic/dl-cache.h``, ``elf/dl-cache.c`` and
``elf/cache.c`` (see ``shared/knowledge/loader-facts.md`` section 1.9): the "new" format
(``glibc-ld.so.cache1.1``), the compat format (old table followed by a new one) and the old
format alone.
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from typing import Optional

from ..errors import LibdoctorError

OLD_MAGIC = b"ld.so-1.7.0"
NEW_MAGIC = b"glibc-ld.so.cache1.1"
EXTENSION_MAGIC = 0xEAA42174
EXTENSION_TAG_GENERATOR = 0
EXTENSION_TAG_GLIBC_HWCAPS = 1
HWCAP_EXTENSION = 1 << 62
MAX_CACHE_BYTES = 256 << 20

# _DL_CACHE_DEFAULT_ID per (e_machine, ELF class): the only flags a loader accepts
# (sysdeps/*/dl-cache.h).  Unknown hosts fall back to the generic rule (flags 1 or 3).
_CACHE_IDS = {
    (62, 64): frozenset({0x0303}),  # x86-64
    (62, 32): frozenset({0x0803}),  # x32
    (183, 64): frozenset({0x0A03}),  # aarch64
    (21, 64): frozenset({0x0503}),  # ppc64
    (22, 64): frozenset({0x0403}),  # s390x
    (243, 64): frozenset({0x1003, 0x0F03}),  # riscv64 (lp64d, lp64)
}
_FLAG_NAMES = {0x0000: "", 0x0100: "SPARC 64-bit", 0x0300: "x86-64", 0x0400: "64bit", 0x0500: "64bit",
               0x0800: "x32", 0x0900: "hard-float", 0x0A00: "AArch64", 0x0F00: "RISC-V 64-bit lp64",
               0x1000: "RISC-V 64-bit lp64d"}


class CacheError(LibdoctorError):
    """An ``ld.so.cache`` that cannot be parsed; the loader ignores such a file."""


@dataclass(frozen=True)
class CacheEntry:
    key: str  # the lookup name (a SONAME, or a development link name)
    path: str
    flags: int
    osversion: int = 0
    hwcap: int = 0
    hwcaps_subdir: Optional[str] = None  # for glibc-hwcaps entries: "x86-64-v3", ...

    def describe_flags(self) -> str:
        """The flags as ``ldconfig -p`` prints them, e.g. ``libc6,x86-64``."""
        kind = {0: "libc4", 1: "ELF", 2: "libc5", 3: "libc6"}.get(self.flags & 0xFF, "unknown")
        arch = _FLAG_NAMES.get(self.flags & 0xFF00, "unknown")
        text = f"{kind},{arch}" if arch else kind
        if self.hwcaps_subdir:
            text += f', hwcap: "{self.hwcaps_subdir}"'
        elif self.hwcap:
            text += f", hwcap: {self.hwcap:#018x}"
        if self.osversion:
            text += f", OS ABI: {self.osversion:#x}"
        return text


def libcmp_key(name: str) -> str:
    """Equal keys exactly when glibc's ``_dl_cache_libcmp`` says two names are equal.

    That comparison reads digit runs as numbers, so ``libfoo.so.01`` finds ``libfoo.so.1``.
    """
    if _LEADING_ZERO.search(name) is None:
        return name  # no digit run starts with a zero: every run already reads as its number
    return re.sub(r"[0-9]+", lambda m: str(int(m.group())), name)


_LEADING_ZERO = re.compile(r"(?<![0-9])0[0-9]")


@dataclass(frozen=True)
class LdCache:
    path: str
    format: str  # "new" | "compat" | "old"
    entries: tuple[CacheEntry, ...]
    generator: Optional[str] = None

    def folders(self) -> tuple[str, ...]:
        """The folders that hold cached libraries, in first-seen order."""
        return tuple(dict.fromkeys(os.path.dirname(e.path) for e in self.entries))

    def index(self) -> dict[str, list[CacheEntry]]:
        table: dict[str, list[CacheEntry]] = {}
        for entry in self.entries:
            table.setdefault(libcmp_key(entry.key), []).append(entry)
        return table


class CacheLookup:
    """glibc's ``search_cache`` over a parsed cache for one host."""

    def __init__(self, cache: Optional[LdCache], machine: int, elf_class: int,
                 hwcaps_active: tuple[str, ...], legacy_subdirs: tuple[str, ...] = ()) -> None:
        """``legacy_subdirs``: the legacy hwcap folders (``tls``, ``x86_64``, ``haswell``...) this loader accepts
        (those of its own search, before glibc 2.37); empty: legacy entries are skipped, as from 2.37."""
        self.cache = cache
        self._accepted = _CACHE_IDS.get((machine, elf_class), frozenset({1, 3}))
        self._priority = {name: i for i, name in enumerate(hwcaps_active)}
        self._legacy = tuple(f"/{s}" for s in legacy_subdirs)
        self._index = cache.index() if cache is not None else {}

    def lookup(self, name: str) -> Optional[str]:
        """The path the loader takes from the cache for ``name``, or None (dl-cache.c ``search_cache``: the
        glibc-hwcaps entries, listed first, by priority; else the first usable entry in cache order, a legacy
        hwcap entry that ldconfig sorted before the plain one included while the loader knows legacy hwcaps)."""
        best: Optional[CacheEntry] = None
        best_priority = len(self._priority)
        for entry in self._index.get(libcmp_key(name), ()):
            if entry.flags not in self._accepted:
                continue
            if entry.hwcaps_subdir is not None:
                priority = self._priority.get(entry.hwcaps_subdir)
                if priority is not None and priority < best_priority:
                    best, best_priority = entry, priority
                continue
            if best is not None:
                break  # the named entries are exhausted: the best of them wins
            if entry.hwcap == 0 or self._legacy_usable(entry):
                return entry.path
        return best.path if best else None

    def _legacy_usable(self, entry: CacheEntry) -> bool:
        folder = os.path.dirname(entry.path)
        return any(folder.endswith(sub) for sub in self._legacy)


def _cstr(data: bytes, offset: int) -> str:
    if not 0 <= offset < len(data):
        raise CacheError(f"string offset {offset:#x} outside the cache")
    end = data.find(b"\0", offset)
    if end < 0:
        raise CacheError(f"unterminated string at {offset:#x}")
    return data[offset:end].decode("utf-8", "surrogateescape")


def _align8(value: int) -> int:
    return (value + 7) & ~7


def _extensions(data: bytes, base: int, ext_offset: int) -> tuple[Optional[str], tuple[str, ...]]:
    """The generator string and the glibc-hwcaps subfolder names of the extension directory."""
    if ext_offset == 0 or ext_offset + 8 > len(data) or ext_offset % 4:
        return None, ()
    magic, count = struct.unpack_from("<II", data, ext_offset)
    if magic != EXTENSION_MAGIC or count > 1024:
        return None, ()
    generator: Optional[str] = None
    hwcaps: tuple[str, ...] = ()
    for i in range(count):
        pos = ext_offset + 8 + 16 * i
        if pos + 16 > len(data):
            break
        tag, _flags, offset, size = struct.unpack_from("<IIII", data, pos)
        if offset + size > len(data):
            continue
        if tag == EXTENSION_TAG_GENERATOR:
            generator = data[offset:offset + size].split(b"\0", 1)[0].decode("utf-8", "replace")
        elif tag == EXTENSION_TAG_GLIBC_HWCAPS:
            names = struct.unpack_from(f"<{size // 4}I", data, offset)
            hwcaps = tuple(_cstr(data, base + n) for n in names)
    return generator, hwcaps


def _parse_new(data: bytes, base: int) -> tuple[tuple[CacheEntry, ...], Optional[str]]:
    if len(data) < base + 48:
        raise CacheError("truncated cache header")
    nlibs, _len_strings, flags, ext_offset = struct.unpack_from("<IIB3xI", data, base + 20)
    if flags & 3 == 1:
        raise CacheError("cache marked invalid by ldconfig")
    if (len(data) - base - 48) < 24 * nlibs:
        raise CacheError(f"cache claims {nlibs} entries but is too short")
    generator, hwcaps = _extensions(data, base, ext_offset)
    entries = []
    for i in range(nlibs):
        eflags, key, value, osversion, hwcap = struct.unpack_from("<iIIIQ", data, base + 48 + 24 * i)
        subdir = None
        if ((hwcap >> 32) & ~0x3FF) == (HWCAP_EXTENSION >> 32):
            index = hwcap & 0xFFFFFFFF
            subdir = hwcaps[index] if index < len(hwcaps) else f"#{index}"
        entries.append(CacheEntry(_cstr(data, base + key), _cstr(data, base + value), eflags & 0xFFFFFFFF,
                                  osversion, hwcap, subdir))
    return tuple(entries), generator


def _parse_old(data: bytes) -> tuple[CacheEntry, ...]:
    nlibs = struct.unpack_from("<I", data, 12)[0]
    strings = 16 + 12 * nlibs
    if strings > len(data):
        raise CacheError(f"old-format cache claims {nlibs} entries but is too short")
    entries = []
    for i in range(nlibs):
        flags, key, value = struct.unpack_from("<iII", data, 16 + 12 * i)
        entries.append(CacheEntry(_cstr(data, strings + key), _cstr(data, strings + value), flags & 0xFFFFFFFF))
    return tuple(entries)


def parse_ld_cache(data: bytes, path: str = "/etc/ld.so.cache") -> LdCache:
    """Parse cache bytes; raises :class:`CacheError` where the loader would ignore the file."""
    try:
        if data.startswith(NEW_MAGIC):
            entries, generator = _parse_new(data, 0)
            return LdCache(path, "new", entries, generator)
        if data.startswith(OLD_MAGIC) and len(data) >= 16:
            nlibs = struct.unpack_from("<I", data, 12)[0]
            base = _align8(16 + 12 * nlibs)
            if len(data) >= base + 20 and data[base:base + 20] == NEW_MAGIC:
                entries, generator = _parse_new(data, base)
                return LdCache(path, "compat", entries, generator)
            return LdCache(path, "old", _parse_old(data))
    except struct.error as exc:
        raise CacheError(f"{path}: corrupt cache ({exc})") from None
    except CacheError as exc:
        raise CacheError(f"{path}: {exc.message}") from None
    raise CacheError(f"{path}: not an ld.so.cache file")


def load_ld_cache(path: str = "/etc/ld.so.cache") -> Optional[LdCache]:
    """The parsed cache, or None where there is none (the loader then skips this step)."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CACHE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_CACHE_BYTES:
        raise CacheError(f"{path}: larger than {MAX_CACHE_BYTES} bytes")
    return parse_ld_cache(data, path)
