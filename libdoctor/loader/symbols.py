"""On-demand facts that cost more than dependency facts: dynamic symbols and read-only strings.

Used to verify a proposed link: does the new library export what its consumers import (by
version node, symbol, or the names a dlopen consumer keeps as strings for ``dlsym``)?
"""
from __future__ import annotations

import os
import re
import struct
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ..errors import CorruptError, ElfError, NotElfError
from .elffacts import (
    DT_GNU_HASH,
    DT_HASH,
    DT_STRTAB,
    DT_SYMTAB,
    DT_VERDEF,
    DT_VERDEFNUM,
    DT_VERNEED,
    DT_VERNEEDNUM,
    DT_VERSYM,
    ELFMAG,
    _dynamic_entries,
    _parse_headers,
    _Reader,
    LoaderCrash,
    UnsupportedVersion,
    _Image,
    _version_defs,
    _version_needs,
    open_regular,
)

MAX_SYMBOLS = 4_000_000
STB_WEAK = 2
MAX_STRING_SCAN = 1 << 30


@dataclass(frozen=True)
class SymbolTable:
    defined: frozenset[tuple[str, Optional[str]]]  # (name, version or None)
    defined_names: frozenset[str]
    undefined: tuple[tuple[str, Optional[str], Optional[str], bool], ...]  # (name, version, file, weak)


def _symbol_count(reader: _Reader, layout, tags: dict[int, int]) -> int:
    fmt = layout.fmt
    if DT_HASH in tags:
        pos = layout.offset_of(tags[DT_HASH], "hash table")
        _nbucket, nchain = struct.unpack(fmt + "II", reader.read(pos, 8, "hash table"))
        return nchain
    if DT_GNU_HASH not in tags:
        return 0
    pos = layout.offset_of(tags[DT_GNU_HASH], "GNU hash table")
    nbuckets, symoffset, bloom_size, _shift = struct.unpack(fmt + "IIII", reader.read(pos, 16, "GNU hash table"))
    word = 8 if layout.elf_class == 64 else 4
    buckets_at = pos + 16 + bloom_size * word
    if nbuckets > MAX_SYMBOLS:
        raise CorruptError("corrupt: GNU hash table with too many buckets")
    buckets = struct.unpack(f"{fmt}{nbuckets}I", reader.read(buckets_at, 4 * nbuckets, "GNU hash buckets"))
    last = max(buckets, default=0)
    if last < symoffset:
        return symoffset
    chains_at = buckets_at + 4 * nbuckets
    while last < MAX_SYMBOLS:
        (value,) = struct.unpack(fmt + "I", reader.read(chains_at + 4 * (last - symoffset), 4, "GNU hash chain"))
        if value & 1:
            return last + 1
        last += 1
    raise CorruptError("corrupt: GNU hash chain never ends")


def _version_names(reader: _Reader, layout, strtab: int, tags: dict[int, int]) -> dict[int, tuple[str, Optional[str]]]:
    """versym index -> (version name, file that must define it, None for own definitions); the tables are read
    as the loader reads them, through the mapped segments (``strtab``: unused, kept for the callers)."""
    names: dict[int, tuple[str, Optional[str]]] = {}
    image = _Image(reader, layout.segments) if layout.segments else None
    if image is None or DT_STRTAB not in tags:
        return names

    def string(value: int, what: str) -> str:
        return image.cstring(tags[DT_STRTAB] + value, what)

    try:
        if DT_VERDEF in tags:
            for definition in _version_defs(image, layout.fmt, string, tags[DT_VERDEF], tags.get(DT_VERDEFNUM, 0)):
                names[definition.index] = (definition.name, None)
        if DT_VERNEED in tags:
            for need in _version_needs(image, layout.fmt, string, tags[DT_VERNEED], tags.get(DT_VERNEEDNUM, 0)):
                names[need.index] = (need.name, need.file)
    except (LoaderCrash, UnsupportedVersion) as exc:
        raise CorruptError(f"corrupt: {exc}") from None
    return names


def _open(path: str) -> tuple[int, int, bytes]:
    fd = open_regular(path)
    size = os.fstat(fd).st_size
    head = os.pread(fd, 4096, 0)
    if len(head) < 64 or not head.startswith(ELFMAG):
        os.close(fd)
        raise NotElfError("not an ELF file")
    return fd, size, head


def read_symbols(path: str) -> SymbolTable:
    """The dynamic symbols of ``path`` with their versions."""
    fd, size, head = _open(path)
    try:
        reader = _Reader(fd, size)
        try:
            return _read_symbols(reader, head)
        except struct.error as exc:
            raise CorruptError(f"corrupt symbol table: {exc}") from None
    finally:
        os.close(fd)


def _read_symbols(reader: _Reader, head: bytes) -> SymbolTable:
    _header, layout = _parse_headers(reader, head)
    if layout.dynamic is None:
        return SymbolTable(frozenset(), frozenset(), ())
    tags: dict[int, int] = {}
    for tag, value in _dynamic_entries(reader, layout):
        tags.setdefault(tag, value)
    if DT_SYMTAB not in tags or DT_STRTAB not in tags:
        return SymbolTable(frozenset(), frozenset(), ())
    strtab = layout.offset_of(tags[DT_STRTAB], "string table")
    count = min(_symbol_count(reader, layout, tags), MAX_SYMBOLS)
    entry = 24 if layout.elf_class == 64 else 16
    symtab = layout.offset_of(tags[DT_SYMTAB], "symbol table")
    raw = reader.read(symtab, count * entry, "symbol table")
    versym = ()
    if DT_VERSYM in tags:
        versym = struct.unpack(f"{layout.fmt}{count}H",
                               reader.read(layout.offset_of(tags[DT_VERSYM], "versym"), 2 * count, "versym"))
    versions = _version_names(reader, layout, strtab, tags)
    fmt = layout.fmt + ("IBBHQQ" if layout.elf_class == 64 else "IIIBBH")
    defined: set[tuple[str, Optional[str]]] = set()
    undefined = []
    for index, values in enumerate(struct.iter_unpack(fmt, raw)):
        if index == 0:
            continue
        if layout.elf_class == 64:
            name_off, info, _other, shndx, _value, _size = values
        else:
            name_off, _value, _size, info, _other, shndx = values
        if not name_off:
            continue
        name = reader.cstring(strtab + name_off, "symbol")
        version, file_name = versions.get(versym[index] & 0x7FFF, (None, None)) if versym else (None, None)
        if shndx == 0:
            undefined.append((name, version, file_name, info >> 4 == STB_WEAK))
        else:
            defined.add((name, version))
    return SymbolTable(frozenset(defined), frozenset(n for n, _v in defined), tuple(undefined))


@lru_cache(maxsize=256)
def symbols_by_identity(path: str, identity: tuple[int, int, int, int]) -> SymbolTable:
    """:func:`read_symbols`, remembered for the file identity (device, inode, size, mtime)."""
    return read_symbols(path)


def symbols_of(path: str) -> Optional[SymbolTable]:
    try:
        st = os.stat(path)
        return symbols_by_identity(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    except (OSError, ElfError):
        return None


def readonly_strings(path: str, pattern: "re.Pattern[bytes]") -> frozenset[str]:
    """NUL-terminated strings matching ``pattern`` in the read-only, non-executable segments."""
    fd, size, head = _open(path)
    found: set[str] = set()
    try:
        reader = _Reader(fd, size)
        _header, layout = _parse_headers(reader, head)
        segments = layout.readonly
        budget = MAX_STRING_SCAN
        for offset, length in segments:
            length = min(length, budget, max(0, size - offset))
            budget -= length
            chunk_at = offset
            while chunk_at < offset + length:
                chunk = os.pread(fd, min(8 << 20, offset + length - chunk_at), chunk_at)
                if not chunk:
                    break
                for match in pattern.finditer(chunk):
                    found.add(match.group(1).decode("ascii", "replace"))
                chunk_at += len(chunk) - 256 if len(chunk) > 256 else len(chunk)
    except (ElfError, struct.error, OSError):
        return frozenset(found)
    finally:
        os.close(fd)
    return frozenset(found)


LIBRARY_STRING = re.compile(rb"(?<![\w./-])(lib[A-Za-z0-9_+-]+\.so(?:\.[0-9]+)*)\x00")


def probable_dlopen_names(path: str) -> frozenset[str]:
    """Literal ``lib*.so*`` strings in read-only data: probable dlopen dependencies (a heuristic)."""
    return readonly_strings(path, LIBRARY_STRING)


def identifier_strings(path: str, prefix: str) -> frozenset[str]:
    """Strings that look like C identifiers starting with ``prefix`` (names a consumer may dlsym)."""
    pattern = re.compile(rb"(?<![\w])(" + re.escape(prefix.encode()) + rb"[A-Za-z0-9_]{2,})\x00")
    return readonly_strings(path, pattern)
