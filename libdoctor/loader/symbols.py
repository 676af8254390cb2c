"""On-demand facts that cost more than dependency facts: dynamic symbols and read-only strings.

Used to verify a proposed link: does the new library export what its consumers import (by
version node, symbol, or the names a dlopen consumer keeps as strings for ``dlsym``)?
"""
from __future__ import annotations

import mmap
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
        tags[tag] = value  # the last of a tag, as the loader keeps it
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
def symbols_by_identity(path: str, identity: tuple[int, ...]) -> SymbolTable:
    """:func:`read_symbols`, remembered for the file identity (device, inode, size, mtime, ctime)."""
    return read_symbols(path)


def symbols_of(path: str) -> Optional[SymbolTable]:
    try:
        st = os.stat(path)
        return symbols_by_identity(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
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


LIBRARY_NAME = re.compile(rb"lib[A-Za-z0-9_+-]+\.so[.0-9]*\x00")  # "lib" first: re's fast literal search
NAME_BYTE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./-")
DLOPEN_IMPORTS = (b"\0dlopen\0", b"\0dlmopen\0")  # in the dynamic string table of an object that can dlopen
SHF_WRITE, SHF_ALLOC, SHF_EXECINSTR, SHF_STRINGS = 0x1, 0x2, 0x4, 0x20
SHT_PROGBITS, SHT_STRTAB, SHT_NOBITS = 1, 3, 8


@dataclass(frozen=True)
class Section:
    name: str
    kind: int
    flags: int
    offset: int
    size: int


def _sections(data: "mmap.mmap | bytes") -> tuple[Section, ...]:
    """The section headers of an ELF image (none when it has none, or they do not fit in the file)."""
    if len(data) < 64 or data[:4] != ELFMAG or data[4] not in (1, 2) or data[5] not in (1, 2):
        return ()
    wide, order = data[4] == 2, "<" if data[5] == 1 else ">"
    shoff, = struct.unpack_from(order + ("Q" if wide else "I"), data, 0x28 if wide else 0x20)
    entsize, count, names_at = struct.unpack_from(order + "HHH", data, 0x3A if wide else 0x2E)
    layout = order + ("IIQQQQIIQQ" if wide else "IIIIIIIIII")
    if count == 0 or entsize < struct.calcsize(layout) or shoff + count * entsize > len(data):
        return ()
    raw = [struct.unpack_from(layout, data, shoff + i * entsize) for i in range(count)]
    names_offset, names_size = (raw[names_at][4], raw[names_at][5]) if names_at < count else (0, 0)
    if names_offset + names_size > len(data):
        names_offset = names_size = 0  # a name table past the end of the file: no section has a name
    found = []
    for name, kind, flags, _addr, offset, size, *_rest in raw:
        if kind != SHT_NOBITS and offset + size > len(data):
            continue  # a header that points past the file describes nothing the loader could map
        text = ""
        if name < names_size:
            start = names_offset + name
            end = data.find(b"\0", start, min(start + 256, names_offset + names_size))
            text = bytes(data[start:end]).decode("ascii", "replace") if end >= 0 else ""
        found.append(Section(text, kind, flags, offset, size))
    return tuple(found)


def _imports_dlopen(data: "mmap.mmap | bytes", sections: tuple[Section, ...]) -> bool:
    for section in sections:
        if section.name == ".dynstr" and section.kind == SHT_STRTAB:
            window = bytes(data[max(0, section.offset - 1):section.offset + section.size])
            return any(word in window for word in DLOPEN_IMPORTS)
    return False


def _string_sections(sections: tuple[Section, ...]) -> list[Section]:
    """Read-only data that holds C strings: ``.rodata*`` and merged-string sections, nothing executable."""
    return [s for s in sections if s.kind == SHT_PROGBITS and s.flags & SHF_ALLOC
            and not s.flags & (SHF_WRITE | SHF_EXECINSTR) and (s.name.startswith(".rodata") or s.flags & SHF_STRINGS)]


def library_names_in(data: "mmap.mmap | bytes", start: int, end: int) -> set[str]:
    """Every NUL-terminated ``lib*.so*`` string that starts a string (not the tail of a path or a longer name)."""
    found = set()
    for match in LIBRARY_NAME.finditer(data, start, end):
        if match.start() > start and data[match.start() - 1] in NAME_BYTE:
            continue
        found.add(match.group()[:-1].decode("ascii"))
    return found


def probable_dlopen_names(path: str) -> frozenset[str]:
    """Literal ``lib*.so*`` strings in the read-only string data of an object that imports ``dlopen``: probable
    dlopen dependencies (a heuristic).  An object that cannot dlopen has none; one without section headers is
    read by its read-only segments.  One compiled pattern over a read-only mapping."""

    fd, size, _head = _open(path)
    try:
        if size == 0:
            return frozenset()
        with mmap.mmap(fd, 0, prot=mmap.PROT_READ) as data:
            try:
                sections = _sections(data)
            except (struct.error, OverflowError, ValueError, IndexError):
                sections = ()  # headers no loader would accept: read as a file without sections
            if not sections:
                return readonly_strings(path, LIBRARY_STRING)
            if not _imports_dlopen(data, sections):
                return frozenset()
            found: set[str] = set()
            for section in _string_sections(sections):
                found |= library_names_in(data, section.offset, section.offset + min(section.size, MAX_STRING_SCAN))
            return frozenset(found)
    except (OSError, ValueError):
        return frozenset()
    finally:
        os.close(fd)


LIBRARY_STRING = re.compile(rb"(?<![\w./-])(lib[A-Za-z0-9_+-]+\.so(?:\.[0-9]+)*)\x00")


def identifier_strings(path: str, prefix: str) -> frozenset[str]:
    """Strings that look like C identifiers starting with ``prefix`` (names a consumer may dlsym)."""
    pattern = re.compile(rb"(?<![\w])(" + re.escape(prefix.encode()) + rb"[A-Za-z0-9_]{2,})\x00")
    return readonly_strings(path, pattern)
