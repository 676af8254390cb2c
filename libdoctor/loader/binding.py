"""Symbol binding as ld.so does it: every import must be defined, with its version, by an object in scope.

A stale library that lacks a symbol its consumer imports resolves cleanly by name and fails at
the first call (``symbol lookup error``), or at load under ``RTLD_NOW`` (Python's default for
extension modules).  For each undefined, non-weak dynamic symbol of each object in a load this
module asks the objects of the lookup scope, in load order, the way ``do_lookup_x`` does
(glibc ``elf/dl-lookup.c``): the provider's ``DT_GNU_HASH`` bloom filter first, then its bucket
and chain, then ``check_match``'s rules (defined, global/weak/unique binding, a matching version
node; hidden versions only on an exact request).  No set of every exported name is ever built.
Tables are read once per file identity.
"""
from __future__ import annotations

import os
import struct
import sys
from array import array
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Optional

from ..errors import ElfError
from .elffacts import (
    DT_GNU_HASH,
    DT_HASH,
    DT_STRTAB,
    DT_STRSZ,
    DT_SYMTAB,
    DT_VERDEF,
    DT_VERDEFNUM,
    DT_VERNEED,
    DT_VERNEEDNUM,
    DT_VERSYM,
    _dynamic_entries,
    _parse_headers,
    _Reader,
    _version_defs,
    _version_needs,
)
from .symbols import MAX_SYMBOLS, STB_WEAK, _open, _symbol_count

STB_GLOBAL, STB_GNU_UNIQUE = 1, 10
STT_TLS, STT_GNU_IFUNC = 6, 10
ALLOWED_TYPES = frozenset({0, 1, 2, 5, STT_TLS, STT_GNU_IFUNC})  # NOTYPE OBJECT FUNC COMMON TLS IFUNC
SHN_UNDEF, SHN_ABS = 0, 0xFFF1
VERSYM_HIDDEN = 0x8000
PYTHON_PREFIXES = ("Py", "_Py")  # the interpreter defines these for its extension modules


def gnu_hash(name: bytes) -> int:
    value = 5381
    for byte in name:
        value = (value * 33 + byte) & 0xFFFFFFFF
    return value


def sysv_hash(name: bytes) -> int:
    value = 0
    for byte in name:
        value = (value << 4) + byte
        high = value & 0xF0000000
        if high:
            value ^= high >> 24
        value &= ~high & 0xFFFFFFFF
    return value


@dataclass(frozen=True)
class Import:
    name: str
    version: Optional[str]
    file: Optional[str]  # the library the version node must come from
    weak: bool


class Exports:
    """One file's dynamic symbol table, ready for lookups by name."""

    def __init__(self, path: str) -> None:
        fd, size, head = _open(path)
        try:
            reader = _Reader(fd, size)
            self._load(reader, head)
        except struct.error as exc:
            raise ElfError(f"corrupt symbol table: {exc}") from None
        finally:
            os.close(fd)

    def _load(self, reader: _Reader, head: bytes) -> None:
        _header, layout = _parse_headers(reader, head)
        self.elf_class = layout.elf_class
        self.imports: tuple[Import, ...] = ()
        self.count = 0
        if layout.dynamic is None:
            return
        tags: dict[int, int] = {}
        for tag, value in _dynamic_entries(reader, layout):
            tags.setdefault(tag, value)
        if DT_SYMTAB not in tags or DT_STRTAB not in tags:
            return
        fmt = layout.fmt
        strtab = layout.offset_of(tags[DT_STRTAB], "string table")
        self.strings = reader.read(strtab, min(tags.get(DT_STRSZ, 0), 1 << 28), "string table")
        self.count = min(_symbol_count(reader, layout, tags), MAX_SYMBOLS)
        self.entry = 24 if layout.elf_class == 64 else 16
        self.symtab = reader.read(layout.offset_of(tags[DT_SYMTAB], "symbol table"), self.count * self.entry,
                                  "symbol table")
        self.unpack = struct.Struct(fmt + ("IBBHQQ" if layout.elf_class == 64 else "IIIBBH")).unpack_from
        self.versym = array("H")
        if DT_VERSYM in tags:
            self.versym.frombytes(reader.read(layout.offset_of(tags[DT_VERSYM], "versym"), 2 * self.count, "versym"))
            if (fmt == ">") != (sys.byteorder == "big"):
                self.versym.byteswap()
        self.defined_versions: dict[int, str] = {}
        needs: dict[int, tuple[str, str]] = {}
        if DT_VERDEF in tags:
            for definition in _version_defs(reader, layout, strtab, tags[DT_VERDEF], tags.get(DT_VERDEFNUM, 0)):
                self.defined_versions[definition.index] = definition.name
        if DT_VERNEED in tags:
            for need in _version_needs(reader, layout, strtab, tags[DT_VERNEED], tags.get(DT_VERNEEDNUM, 0)):
                needs[need.index] = (need.name, need.file)
        self._load_hash(reader, layout, tags)
        self.imports = tuple(self._imports(needs))

    def _load_hash(self, reader: _Reader, layout, tags: dict[int, int]) -> None:  # noqa: ANN001
        fmt = layout.fmt
        self.gnu = DT_GNU_HASH in tags
        if self.gnu:
            at = layout.offset_of(tags[DT_GNU_HASH], "GNU hash table")
            nbuckets, self.symoffset, bloom_size, self.shift = struct.unpack(fmt + "IIII",
                                                                             reader.read(at, 16, "GNU hash table"))
            word = 8 if layout.elf_class == 64 else 4
            self.bits = word * 8
            self.bloom = struct.unpack(f"{fmt}{bloom_size}{'Q' if word == 8 else 'I'}",
                                       reader.read(at + 16, bloom_size * word, "GNU hash bloom filter"))
            buckets_at = at + 16 + bloom_size * word
            self.buckets = struct.unpack(f"{fmt}{nbuckets}I", reader.read(buckets_at, 4 * nbuckets, "GNU hash"))
            chains = max(0, self.count - self.symoffset)
            self.chains = struct.unpack(f"{fmt}{chains}I",
                                        reader.read(buckets_at + 4 * nbuckets, 4 * chains, "GNU hash chains"))
        elif DT_HASH in tags:
            at = layout.offset_of(tags[DT_HASH], "hash table")
            nbucket, nchain = struct.unpack(fmt + "II", reader.read(at, 8, "hash table"))
            self.buckets = struct.unpack(f"{fmt}{nbucket}I", reader.read(at + 8, 4 * nbucket, "hash buckets"))
            self.chains = struct.unpack(f"{fmt}{nchain}I", reader.read(at + 8 + 4 * nbucket, 4 * nchain, "chains"))
        else:
            self.buckets = ()

    def _symbol(self, index: int) -> tuple[int, int, int, int, int]:
        """(name offset, info, other, section index, value)."""
        values = self.unpack(self.symtab, index * self.entry)
        if self.elf_class == 64:
            name, info, other, shndx, value, _size = values
        else:
            name, value, _size, info, other, shndx = values
        return name, info, other, shndx, value

    def _name(self, offset: int) -> bytes:
        end = self.strings.find(b"\0", offset)
        return self.strings[offset:end if end >= 0 else len(self.strings)]

    def _imports(self, needs: dict[int, tuple[str, str]]) -> Iterable[Import]:
        for index in range(1, self.count):
            name_at, info, _other, shndx, _value = self._symbol(index)
            if shndx != SHN_UNDEF or not name_at or info >> 4 == 0:  # defined, nameless or local
                continue
            version = file = None
            if self.versym:
                need = needs.get(self.versym[index] & 0x7FFF)
                if need:
                    version, file = need
            yield Import(self._name(name_at).decode("utf-8", "replace"), version, file, info >> 4 == STB_WEAK)

    def defines(self, name: bytes, hashes: tuple[int, int], version: Optional[str]) -> bool:
        """``do_lookup_x`` for one object: is ``name`` (of ``version``) defined here?"""
        if not self.count or not self.buckets:
            return False
        return any(self._matches(index, name, version) for index in self._candidates(name, hashes))

    def _candidates(self, name: bytes, hashes: tuple[int, int]) -> Iterable[int]:
        if self.gnu:
            value = hashes[0]
            bits = self.bits
            word = self.bloom[(value // bits) % len(self.bloom)] if self.bloom else 0
            mask = (1 << (value % bits)) | (1 << ((value >> self.shift) % bits))
            if word & mask != mask:
                return  # the bloom filter says no: the usual answer, at the cost of one word
            index = self.buckets[value % len(self.buckets)]
            if index == 0:
                return
            while 0 <= index - self.symoffset < len(self.chains):
                chained = self.chains[index - self.symoffset]
                if (chained | 1) == (value | 1):
                    yield index
                if chained & 1:
                    return
                index += 1
        else:
            index = self.buckets[hashes[1] % len(self.buckets)]
            seen = 0
            while index and index < len(self.chains) and seen < len(self.chains):
                yield index
                index = self.chains[index]
                seen += 1

    def _matches(self, index: int, name: bytes, version: Optional[str]) -> bool:
        name_at, info, _other, shndx, value = self._symbol(index)
        kind, binding = info & 0xF, info >> 4
        if (value == 0 and shndx != SHN_ABS and kind != STT_TLS) or shndx == SHN_UNDEF:
            return False
        if kind not in ALLOWED_TYPES or binding not in (STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE):
            return False
        if self._name(name_at) != name:
            return False
        if not self.versym:
            return True
        entry = self.versym[index]
        ndx = entry & 0x7FFF
        if version is None:
            return not entry & VERSYM_HIDDEN or ndx < 2
        defined = self.defined_versions.get(ndx)
        return defined == version or (defined is None and not entry & VERSYM_HIDDEN)


@lru_cache(maxsize=512)
def _exports_by_identity(path: str, identity: tuple[int, int, int, int]) -> Optional[Exports]:
    try:
        return Exports(path)
    except (ElfError, OSError, ValueError):
        return None


def exports_of(path: str) -> Optional[Exports]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return _exports_by_identity(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


@lru_cache(maxsize=1 << 16)
def _hashes(name: str) -> tuple[bytes, tuple[int, int]]:
    raw = name.encode("utf-8", "surrogateescape")
    return raw, (gnu_hash(raw), sysv_hash(raw))


@dataclass(frozen=True)
class Unbound:
    """An import no object in scope defines: ``undefined symbol: NAME (required by CONSUMER)``."""

    consumer: str
    name: str
    version: Optional[str]
    file: Optional[str]

    @property
    def message(self) -> str:
        version = f", version {self.version}" if self.version else ""
        return f"undefined symbol: {self.name}{version} (required by {self.consumer})"


def unbound_symbols(consumers: Iterable[str], scope: Iterable[str]) -> list[Unbound]:
    """Every non-weak import of ``consumers`` (paths) that no object of ``scope`` (paths, load order) defines.

    An object that cannot be read is left out of both (its own problem is reported elsewhere).  Imports of
    the Python C API are not judged when no interpreter is in scope: an extension module is loaded by one.
    """
    tables = [table for table in (exports_of(path) for path in scope) if table is not None]
    has_python = any(table.count and table.defines(*_hashes("Py_Initialize"), None) for table in tables)
    unbound: list[Unbound] = []
    for consumer in consumers:
        own = exports_of(consumer)
        if own is None:
            continue
        for wanted in own.imports:
            if wanted.weak or (not has_python and wanted.name.startswith(PYTHON_PREFIXES)):
                continue
            raw, hashes = _hashes(wanted.name)
            if not any(table.defines(raw, hashes, wanted.version) for table in tables):
                unbound.append(Unbound(consumer, wanted.name, wanted.version, wanted.file))
    return unbound
