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
import stat
import struct
import sys
from array import array
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Iterable, NamedTuple, Optional

from ..errors import ElfError
from .elffacts import (
    DT_GNU_HASH,
    DT_HASH,
    DT_NEEDED,
    DT_SONAME,
    DT_STRSZ,
    DT_STRTAB,
    DT_SYMTAB,
    DT_VERSYM,
    ElfFacts,
    LoaderCrash,
    _dynamic_entries,
    _Image,
    _parse_headers,
    _Reader,
    read_elf_facts,
)
from .factstore import FactsStore, Key, Unfound, key_of
from .hashing import SHN_UNDEF, gnu_hash, may_answer, sysv_hash
from .lookupfaults import FAULT, FOUND, open_walker
from .relocation import Reference, relocate
from .versionheap import NO_VERSION, PLAIN, heap_after, version_past
from .symbols import MAX_SYMBOLS, STB_WEAK, _open, _symbol_count, _version_names

STB_GLOBAL, STB_GNU_UNIQUE = 1, 10
VERSYM_HIDDEN = 0x8000
PYTHON_PREFIXES = ("Py", "_Py")  # the interpreter defines these for its extension modules


class Import(NamedTuple):
    """One undefined symbol an object imports (a tuple: a large library imports tens of thousands)."""

    name: str
    version: Optional[str]
    file: Optional[str]  # the library the version node must come from
    weak: bool
    version_past: Optional[int] = None  # its version index lies past the object's l_versions (versionheap)


class Exports:
    """One file's dynamic symbol table, ready for lookups by name.

    Only the hash table, the bloom filter and the version indexes are kept in memory (compact arrays);
    symbol entries and names are read from the file as a lookup reaches them, so a 1 GB library with
    480,000 symbols and 87 MB of names costs a few MB.  The file stays open only during
    :func:`unbound_symbols`.
    """

    def __init__(self, path: str, identity: Key = (0, 0, 0, 0, 0)) -> None:
        self.path = path
        self.identity = identity  # (device, inode, size, mtime_ns): what the caches below are keyed by
        fd, size, head = _open(path)
        self._fd: Optional[int] = fd
        try:
            self._load(_Reader(fd, size), head)
        except struct.error as exc:
            raise ElfError(f"corrupt symbol table: {exc}") from None
        finally:
            self.release()

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def reopen(self) -> int:
        """The file's descriptor, opened again after :meth:`release` when a lookup needs it."""
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        return self._fd

    def _pread(self, length: int, offset: int) -> bytes:
        return os.pread(self.reopen(), length, offset)

    def _array(self, reader: _Reader, code: str, offset: int, count: int, what: str) -> array:
        values = array(code)
        values.frombytes(reader.read(offset, count * values.itemsize, what))
        if (self.fmt == ">") != (sys.byteorder == "big"):
            values.byteswap()
        return values

    def _load(self, reader: _Reader, head: bytes) -> None:
        _header, layout = _parse_headers(reader, head)
        self.elf_class = layout.elf_class
        self.fmt = layout.fmt
        self.size = reader.size
        self.imports: tuple[Import, ...] = ()
        self.gnu, self.symoffset, self.symtab_at, self.entry = False, 0, 0, 24  # no table: no lookup finds anything
        self.bloom: array = array("Q")
        self.chains: array = array("I")
        self.count = 0
        self.soname: Optional[str] = None
        self.needed: tuple[str, ...] = ()
        self.buckets: array = array("I")
        if layout.dynamic is None:
            return
        tags: dict[int, int] = {}
        entries = _dynamic_entries(reader, layout)
        for tag, value in entries:
            tags[tag] = value  # the last of a tag, as the loader keeps it
        if DT_SYMTAB not in tags or DT_STRTAB not in tags:
            return
        strtab = layout.offset_of(tags[DT_STRTAB], "string table")
        self.strings_at, self.strings_size = strtab, tags.get(DT_STRSZ, 0)
        # the names only order the lookups (the likely providers first): one the file cannot give (the loader
        # reads it through the mapped image, where the dependency facts judge it) is left out, not the table
        self.soname = self._name(reader, strtab, tags.get(DT_SONAME))
        self.needed = tuple(n for n in (self._name(reader, strtab, v) for t, v in entries if t == DT_NEEDED) if n)
        self.entry = 24 if layout.elf_class == 64 else 16
        self.symtab_at = layout.offset_of(tags[DT_SYMTAB], "symbol table")
        try:
            self.count = min(_symbol_count(reader, layout, tags), MAX_SYMBOLS)
        except ElfError:  # a damaged hash chain: the loader walks chains only on a lookup; the table's size is
            # what lies between it and the string table that follows it
            self.count = min(max(0, (strtab - self.symtab_at) // self.entry), MAX_SYMBOLS)
        self.layout_code = "IBBHQQ" if layout.elf_class == 64 else "IIIBBH"
        self.unpack = struct.Struct(self.fmt + self.layout_code).unpack
        self.versym = self._versym(reader, layout, tags[DT_VERSYM]) if DT_VERSYM in tags else array("H")
        try:
            versions = _version_names(reader, layout, strtab, tags)  # index -> (name, file; None: defined here)
        except ElfError:
            # the loader reads the version tables only for a versioned lookup (match_symbol): an unversioned one
            # still finds the symbol, a versioned one finds no version here (and the loader's check fails)
            versions = {}
        self.defined_versions = {index: name for index, (name, file) in versions.items() if file is None}
        needs = {index: (name, file) for index, (name, file) in versions.items() if file is not None}
        self._load_hash(reader, layout, tags)
        self.imports = tuple(self._imports(reader, needs))

    def _versym(self, reader: _Reader, layout, address: int) -> array:  # noqa: ANN001
        """The version indexes, from the file, else as the loader reads them: through the mapped pages (zero-fill
        pages past a segment's file part read as zeros); none where even those are unmapped."""
        try:
            return self._array(reader, "H", layout.offset_of(address, "versym"), self.count, "versym")
        except ElfError:
            pass
        values = array("H")
        try:
            values.frombytes(_Image(reader, layout.segments).read(address, 2 * self.count, "versym"))
        except LoaderCrash:
            return values
        if (self.fmt == ">") != (sys.byteorder == "big"):
            values.byteswap()
        return values

    @staticmethod
    def _name(reader: _Reader, strtab: int, offset: Optional[int]) -> Optional[str]:
        try:
            return reader.cstring(strtab + offset, "a name") if offset is not None else None
        except ElfError:
            return None

    def _load_hash(self, reader: _Reader, layout, tags: dict[int, int]) -> None:  # noqa: ANN001
        self.gnu = DT_GNU_HASH in tags
        self.symoffset = 0
        if self.gnu:
            at = layout.offset_of(tags[DT_GNU_HASH], "GNU hash table")
            nbuckets, self.symoffset, bloom_size, self.shift = struct.unpack(self.fmt + "IIII",
                                                                             reader.read(at, 16, "GNU hash table"))
            word = 8 if layout.elf_class == 64 else 4
            self.bits = word * 8
            self.bloom = self._array(reader, "Q" if word == 8 else "I", at + 16, bloom_size, "GNU hash bloom filter")
            buckets_at = at + 16 + bloom_size * word
            self.buckets = self._array(reader, "I", buckets_at, nbuckets, "GNU hash buckets")
            chains_at = buckets_at + 4 * nbuckets
            self.chains = self._array(reader, "I", chains_at, max(0, min(self.count - self.symoffset,
                                                                         (reader.size - chains_at) // 4)),
                                      "GNU hash chains")
        elif DT_HASH in tags:
            at = layout.offset_of(tags[DT_HASH], "hash table")
            nbucket, nchain = struct.unpack(self.fmt + "II", reader.read(at, 8, "hash table"))
            self.buckets = self._array(reader, "I", at + 8, nbucket, "hash buckets")
            self.chains = self._array(reader, "I", at + 8 + 4 * nbucket, nchain, "hash chains")

    def _symbol(self, index: int) -> tuple[int, int, int, int, int]:
        """(name offset, info, other, section index, value)."""
        values = self.unpack(self._pread(self.entry, self.symtab_at + index * self.entry).ljust(self.entry, b"\0"))
        if self.elf_class == 64:
            name, info, other, shndx, value, _size = values
        else:
            name, value, _size, info, other, shndx = values
        return name, info, other, shndx, value

    def _imports(self, reader: _Reader, needs: dict[int, tuple[str, str]]) -> Iterable[Import]:
        # With DT_GNU_HASH the linker puts every symbol it does not hash (the undefined ones) below symoffset.
        end = min(self.symoffset, self.count) if self.gnu else self.count
        raw = reader.read(self.symtab_at, end * self.entry, "symbol table")
        wanted: list[tuple[int, int, int]] = []  # (name offset, symbol index, binding)
        for index, values in enumerate(struct.iter_unpack(self.fmt + self.layout_code, raw)):
            name_at, info, shndx = (values[0], values[1], values[3]) if self.elf_class == 64 else (
                values[0], values[3], values[5])
            if index and shndx == SHN_UNDEF and name_at and info >> 4:  # undefined, named, not local
                wanted.append((name_at, index, info >> 4))
        names = _read_names(reader, self.strings_at, self.strings_size, sorted(w[0] for w in wanted))
        for name_at, index, binding in wanted:
            version = file = None
            if self.versym:
                need = needs.get(self.versym[index] & 0x7FFF)
                if need:
                    version, file = need
            yield Import(names.get(name_at, ""), version, file, binding == STB_WEAK)

    @cached_property
    def may_fault(self) -> bool:
        """Could a lookup here read outside the table (:mod:`.lookupfaults` then walks it as the loader does)?
        Asked of what is already in memory: a bloom filter not a power of two long, a bucket outside the
        chains, chains cut short by the end of the file or without a final end bit, symbols past the file."""
        if not self.gnu or not self.buckets:
            return False
        words, top = len(self.bloom), max(self.buckets)
        low = min(filter(None, self.buckets), default=0)
        hashed = self.count - self.symoffset
        return bool(not words or words & (words - 1)
                    or (top and (low < self.symoffset or top - self.symoffset >= hashed))
                    or len(self.chains) < hashed or (self.chains and not self.chains[-1] & 1)
                    or self.symtab_at + self.count * self.entry > self.size)

    def defines(self, name: bytes, hashes: tuple[int, int], version: Optional[str], exact: bool = False) -> bool:
        """``do_lookup_x`` for one object: is ``name`` (of ``version``) defined here?  ``exact``: the request is
        hidden, a definition without a version node does not answer it."""
        if not self.count or not self.buckets:
            return False
        if self.gnu and self.bloom:
            value, bits = hashes[0], self.bits
            word = self.bloom[(value // bits) % len(self.bloom)]
            # the shift count as the machine applies it to the 32-bit hash: x86 masks a 32-bit shift's count to
            # 5 bits (measured: a shift raised by 32 binds as before; tests/test_loader_checks.py)
            if (word >> (value % bits)) & (word >> ((value >> (self.shift & 31)) % bits)) & 1 == 0:
                return False  # the bloom filter says no: the usual answer, at the cost of one word
        if not self.gnu and hashes[1] < 0:
            hashes = (hashes[0], sysv_hash(name))
        return any(self._matches(index, name, version, exact) for index in self._candidates(hashes))

    def _candidates(self, hashes: tuple[int, int]) -> Iterable[int]:
        if self.gnu:  # the bloom filter was asked first (defines)
            value = hashes[0]
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

    def _matches(self, index: int, name: bytes, version: Optional[str], exact: bool = False) -> bool:
        name_at, info, _other, shndx, value = self._symbol(index)
        if not may_answer(info, shndx, value) or info >> 4 not in (STB_GLOBAL, STB_WEAK, STB_GNU_UNIQUE):
            return False
        if self._pread(len(name) + 1, self.strings_at + name_at) != name + b"\0":
            return False
        if not self.versym:
            return True
        entry = self.versym[index]
        ndx = entry & 0x7FFF
        if version is None:
            return not entry & VERSYM_HIDDEN or ndx < 2
        defined = self.defined_versions.get(ndx)
        return defined == version or (defined is None and not exact and not entry & VERSYM_HIDDEN)


NAME_WINDOW = 1 << 20  # bytes of the string table read at once when collecting names


def _read_names(reader: _Reader, at: int, size: int, offsets: list[int]) -> dict[int, str]:
    """The NUL-terminated names at ``offsets`` (sorted) of a string table, read in windows of at most 1 MB."""
    names: dict[int, str] = {}
    position = 0
    while position < len(offsets):
        first = offsets[position]
        last = position
        while last + 1 < len(offsets) and offsets[last + 1] - first < NAME_WINDOW:
            last += 1
        length = min(offsets[last] - first + 4096, max(0, size - first)) if size else offsets[last] - first + 4096
        chunk = os.pread(reader.fd, length, at + first)
        for offset in offsets[position:last + 1]:
            start = offset - first
            end = chunk.find(b"\0", start)
            if end < 0:  # longer than the window: read it on its own
                end_chunk = os.pread(reader.fd, 1 << 16, at + offset)
                names[offset] = end_chunk.split(b"\0", 1)[0].decode("utf-8", "replace")
            else:
                names[offset] = chunk[start:end].decode("utf-8", "replace")
        position = last + 1
    return names


_TABLES: "OrderedDict[Key, Optional[Exports]]" = OrderedDict()
MAX_TABLES = 512  # files whose tables are kept between calls (each a few MB at most)


def exports_of(path: str) -> Optional[Exports]:
    """The tables of the file at ``path``, read once per file identity, whatever path it is reached by."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    identity = key_of(st)
    if identity in _TABLES:
        _TABLES.move_to_end(identity)
        return _TABLES[identity]
    try:
        table: Optional[Exports] = Exports(path, identity)
    except (ElfError, OSError, ValueError):
        table = None
    _TABLES[identity] = table
    while len(_TABLES) > MAX_TABLES:
        _TABLES.popitem(last=False)
    return table


@lru_cache(maxsize=1 << 16)
def _hashes(name: str) -> tuple[bytes, tuple[int, int]]:
    """The name's bytes, its GNU hash, and its SysV hash (-1: computed when a table without DT_GNU_HASH asks)."""
    raw = name.encode("utf-8", "surrogateescape")
    return raw, (gnu_hash(raw), -1)


@dataclass(frozen=True)
class Unbound:
    """An import no object in scope defines: ``undefined symbol: NAME (required by CONSUMER)``."""

    consumer: str
    name: str
    version: Optional[str]
    file: Optional[str]
    crashes: bool = False  # the loader faults printing the message (a version read past l_versions)
    faulting_table: Optional[str] = None  # the object whose damaged hash table the lookup faults in

    @property
    def message(self) -> str:
        version = f", version {self.version}" if self.version is not None else ""
        if self.faulting_table:
            return (f"the loader crashes (SIGSEGV) looking up {self.name} (required by {self.consumer}) in "
                    f"{self.faulting_table}: its hash table leads outside its mapped pages")
        if self.crashes:
            return (f"the loader crashes (SIGSEGV) reporting undefined symbol {self.name} (required by "
                    f"{self.consumer}): its version index lies past the object's version table")
        return f"undefined symbol: {self.name}{version} (required by {self.consumer})"


# (name, version) -> the tables known to define it: existence in a file never changes for its identity,
# so a lookup first asks the providers that answered before (the libc, libstdc++ or framework library
# that serves most imports), and probes the whole scope only for a name not seen yet.
_DEFINERS: dict[tuple[str, Optional[str]], list[Key]] = {}
# consumer -> {provider identity (None: none found): its imports served by it}: the same object is judged
# in many loads of one scan, each with its own scope; a provider still in scope answers for all its imports.
_SUPPLIERS: dict[Key, dict[Optional[Key], list[Import]]] = {}
# consumer -> the lookups whose version index lies past its version table: judged in each load (versionheap)
_PAST_TABLE: dict[Key, tuple[Import, ...]] = {}
MAX_REMEMBERED = 1 << 19  # entries; the memos start afresh past it (the daemon's memory stays bounded)


def _provider_in_scope(wanted: Import, ordered: list[Exports], in_scope: set, by_soname: dict[str, Exports]
                       ) -> Optional[Key]:
    """The identity of an object in scope defining ``wanted``, or None."""
    key = (wanted.name, wanted.version)
    known = _DEFINERS.get(key)
    if known is not None:
        for identity in known:
            if identity in in_scope:
                return identity
    raw, hashes = _hashes(wanted.name)
    # Any definer will do (existence, not interposition, is the question): ask the likely ones first, the
    # library a version need names, then the consumer's own dependencies and the rest of the scope.
    named = by_soname.get(wanted.file) if wanted.file else None
    if named is not None and (known is None or named.identity not in known) and named.defines(
            raw, hashes, wanted.version):
        _DEFINERS.setdefault(key, []).append(named.identity)
        return named.identity
    for table in ordered:
        if table is not named and (known is None or table.identity not in known) and table.defines(
                raw, hashes, wanted.version):
            _DEFINERS.setdefault(key, []).append(table.identity)
            return table.identity
    return None


def relocation_facts(path: str) -> tuple[Optional[str], tuple[Unfound, ...]]:
    """What one file's relocation (every entry bound now, :mod:`.relocation`) tells about the file alone: the
    error that stops the loader, and the lookups its own tables do not answer: imports outside the symbol
    table's import range, and its own definitions its hash tables cannot find by name (a damaged name, chain or
    bloom filter), which some other object of the load must then define.  Kept per identity by the store."""
    result = relocate(path)
    own = exports_of(path) if result.references else None
    if own is None or not own.count:  # no table to name them by (the walk would have stopped the loader)
        return result.error, ()
    known = {(i.name, i.version) for i in own.imports}
    # an undefined symbol of the import range is one of own.imports, judged with them: no name to read
    import_end = min(own.symoffset, own.count) if own.gnu else own.count
    asked = [r for r in result.references
             if r.defined or r.version_past is not None or not 0 < r.symbol < import_end
             or (r.version is not None and r.file is None)]  # a definition's version on an import: not its own
    names = _reference_names(own, asked)
    unfound: list[Unfound] = []
    try:
        for ref in asked:
            name = names[ref.name_at]
            if ref.version_past is not None:  # which version it asks for depends on the objects loaded after it
                unfound.append((name, None, None, ref.weak, ref.version_past))
                continue
            if (name, ref.version) in known:
                continue
            if ref.defined and own.defines(*_hashes(name), ref.version):
                continue
            unfound.append((name, ref.version, ref.file, ref.weak, None))  # a weak reference may stay unfound
    finally:
        own.release()
    return result.error, tuple(unfound)


def _reference_names(own: Exports, references: Iterable[Reference]) -> dict[int, str]:
    """The names ``references`` look up, by string table offset, read in one pass of ``own``'s string table."""
    try:
        fd = own.reopen()
        return _read_names(_Reader(fd, os.fstat(fd).st_size), own.strings_at, own.strings_size,
                           sorted({r.name_at for r in references}))
    finally:
        own.release()


def _referenced(own: Exports, store: Optional[FactsStore]) -> tuple[Import, ...]:
    """What relocation looks up beyond the imports the symbol table lists (:func:`relocation_facts`)."""
    _error, unfound = store.relocation(own.path) if store is not None else relocation_facts(own.path)
    return tuple(Import(*u) for u in unfound)


def _unbound_imports(own: Exports, tables: list[Exports], in_scope: set, by_soname: dict[str, Exports],
                     store: Optional[FactsStore] = None) -> tuple[list[Import], set[Key]]:
    """The imports of ``own`` nothing in scope defines, and the providers that served the others (the lookups
    whose version lies past the version table are left to :func:`_past_table_unbound`)."""
    suppliers = _SUPPLIERS.get(own.identity)
    preferred = [by_soname[n] for n in own.needed if n in by_soname]
    ordered = preferred + [t for t in tables if t not in preferred]
    if suppliers is None:
        groups: dict[Optional[Key], list[Import]] = {}
        referenced = _referenced(own, store)
        _PAST_TABLE[own.identity] = tuple(w for w in referenced if w.version_past is not None)
        for wanted in own.imports + tuple(w for w in referenced if w.version_past is None):
            if not wanted.weak:
                groups.setdefault(_provider_in_scope(wanted, ordered, in_scope, by_soname), []).append(wanted)
        _SUPPLIERS[own.identity] = groups
        return groups.get(None, []), {p for p in groups if p is not None}
    missing = []
    used = set()
    for provider, imports in suppliers.items():
        if provider is not None and provider in in_scope:
            used.add(provider)
            continue  # the object that served them before is here again: all still defined
        for wanted in imports:
            found = _provider_in_scope(wanted, ordered, in_scope, by_soname)
            if found is None:
                missing.append(wanted)
            else:
                used.add(found)
    return missing, used


class _Scope:
    """The lookup scope of one load, its tables read only when some consumer needs a lookup."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.identities = {i for i in (_identity(p) for p in paths) if i}
        self._tables: Optional[list[Exports]] = None

    @property
    def tables(self) -> list[Exports]:
        if self._tables is None:
            self._tables = [t for t in (exports_of(path) for path in self.paths) if t is not None]
            self.by_soname: dict[str, Exports] = {}
            for table in self._tables:
                if table.soname:
                    self.by_soname.setdefault(table.soname, table)
            self.has_python = any(t.count and t.defines(*_hashes("Py_Initialize"), None) for t in self._tables)
        return self._tables

    @property
    def unread(self) -> bool:
        return self._tables is None

    def release(self) -> None:
        for table in self._tables or ():
            table.release()  # no file stays open between calls


def _identity(path: str) -> Optional[Key]:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return key_of(st) if stat.S_ISREG(st.st_mode) else None


def _digest(identities: set) -> str:
    """One short name for a scope (the identities of every object in it)."""
    import hashlib

    return hashlib.sha1(repr(sorted(identities)).encode()).hexdigest()[:20]


def _facts_of(path: str, store: Optional[FactsStore]) -> Optional[ElfFacts]:
    if store is not None:
        entry = store.get_path(path)
        return entry if isinstance(entry, ElfFacts) else None
    try:
        return read_elf_facts(path)
    except (ElfError, OSError):
        return None


def _past_table_unbound(consumer: str, past: tuple[Import, ...], lookup: _Scope, startup: bool,
                        store: Optional[FactsStore]) -> list[Unbound]:
    """The lookups of ``consumer`` whose version index lies past its own version table, as the loader does them
    (:mod:`.versionheap`: at a process's start, the tables of the objects after it; in a ``dlopen``, the
    heap of unknown content reads as zeros: an unversioned lookup)."""
    own = _facts_of(consumer, store)
    if own is None:
        return []
    position = lookup.paths.index(consumer) if consumer in lookup.paths else len(lookup.paths)
    chain = [_facts_of(p, store) for p in lookup.paths] if startup else []
    tls_modules = sum(1 for facts in chain if facts is not None and facts.has_tls)
    heap = heap_after(own, chain[position + 1:], position == 0, tls_modules) if startup else []
    out = []
    for wanted in past:
        asked = version_past(heap, wanted.version_past or 0) if startup else PLAIN
        raw, hashes = _hashes(wanted.name)
        if asked.kind == "plain":
            found = any(t.defines(raw, hashes, None) for t in lookup.tables)
        else:
            version = asked.name if asked.kind == "entry" and asked.name is not None else NO_VERSION
            found = any(t.defines(raw, hashes, version, asked.exact) for t in lookup.tables)
        if not found and not wanted.weak and _judged(wanted.name, lookup):
            shown = None if asked.kind == "plain" else asked.name or ""  # the loader prints a null name as ""
            out.append(Unbound(consumer, wanted.name, shown, None, crashes=asked.crashes))
    return out


MAX_FAULT_LOOKUPS = 1 << 18  # names replayed against damaged hash tables in one load, at most


def _looked_up_names(consumer: str) -> list[str]:
    """Every name the relocation of ``consumer`` looks up (imports and its own symbols), in table order."""
    own = exports_of(consumer)
    references = relocate(consumer).references
    if own is None or not references:
        return []
    names = _reference_names(own, references)
    return [names[r.name_at] for r in references if names.get(r.name_at)]


def _lookup_faults(consumers: list[str], lookup: _Scope) -> list[Unbound]:
    """The first lookup that faults in a damaged hash table of the scope (:mod:`.lookupfaults`): every name the
    consumers' relocations look up walks the scope in order until an object defines it, and reads the tables
    of each object it passes."""
    if lookup.unread:
        return []  # every consumer was served as before: no table changed since it was judged
    tables = lookup.tables
    if not any(t.may_fault for t in tables):
        return []
    walkers = {id(t): open_walker(t.path) for t in tables if t.may_fault}
    try:
        return _first_fault(consumers, tables, walkers)
    finally:
        for walk in walkers.values():
            if walk is not None:
                walk.close()


def _first_fault(consumers: list[str], tables: list[Exports], walkers: dict) -> list[Unbound]:
    budget = MAX_FAULT_LOOKUPS
    seen: set[str] = set()
    for consumer in consumers:
        for name in _looked_up_names(consumer):
            if name in seen:
                continue
            if budget <= 0:
                return []  # libdoctor's bound on one load's work: the rest is not replayed
            seen.add(name)
            budget -= 1
            raw, hashes = _hashes(name)
            for table in tables:
                walk = walkers.get(id(table))
                answer = walk.lookup(raw, hashes[0]) if walk is not None else None
                if answer == FAULT:
                    return [Unbound(consumer, name, None, None, faulting_table=table.path)]
                if answer == FOUND or (answer is None and table.defines(raw, hashes, None)):
                    break
    return []


def _judged(name: str, lookup: _Scope) -> bool:
    """Imports of the Python C API are judged only where an interpreter is in scope."""
    return lookup.has_python or not name.startswith(PYTHON_PREFIXES)


def unbound_symbols(consumers: Iterable[str], scope: Iterable[str], store: Optional[FactsStore] = None,
                    startup: bool = True) -> list[Unbound]:
    """Every non-weak import of ``consumers`` (paths) that no object of ``scope`` (paths, load order) defines.
    ``startup``: ``scope`` is a process's start (its first object the main one), not a ``dlopen``.

    An object that cannot be read is left out of both (its own problem is reported elsewhere).  Imports of
    the Python C API are not judged when no interpreter is in scope: an extension module is loaded by one.
    With ``store``, a consumer whose imports were all served last time by objects still in scope is not
    read again (a warm re-scan reads no symbol table).
    """
    if len(_DEFINERS) > MAX_REMEMBERED or len(_SUPPLIERS) > MAX_REMEMBERED // 64:
        _DEFINERS.clear()
        _SUPPLIERS.clear()
        _PAST_TABLE.clear()
    consumers = list(consumers)
    lookup = _Scope(list(scope))
    unbound: list[Unbound] = []
    scope_digest = _digest(lookup.identities)
    try:
        for consumer in consumers:
            identity = _identity(consumer)
            if identity is None:
                continue
            remembered = store.binding(identity) if store is not None else None
            if remembered is not None:
                providers, missed, digest = remembered
                if not missed and providers <= lookup.identities:
                    continue  # every import was served by objects that are all still here
                if missed and digest and digest.split("+")[0] == scope_digest:  # the same scope: the same misses
                    python = digest.endswith("+python")
                    unbound.extend(Unbound(consumer, n, v, f) for n, v, f in missed
                                   if python or not n.startswith(PYTHON_PREFIXES))
                    continue
            own = exports_of(consumer)
            if own is None:
                continue
            tables = lookup.tables
            missing, used = _unbound_imports(own, tables, lookup.identities, lookup.by_soname, store)
            past = _PAST_TABLE.get(own.identity, ())
            if past:  # judged anew in every load: the answer depends on the objects loaded after this one
                unbound.extend(_past_table_unbound(consumer, past, lookup, startup, store))
            elif store is not None and not own.may_fault:  # a damaged hash table: its load is judged every time
                scope_seen = scope_digest + ("+python" if lookup.has_python else "")
                store.remember_binding(identity, used, [(w.name, w.version, w.file) for w in missing],
                                       scope_seen if missing else None)
            unbound.extend(Unbound(consumer, w.name, w.version, w.file) for w in missing if _judged(w.name, lookup))
        unbound.extend(_lookup_faults(consumers, lookup))
    finally:
        lookup.release()
    return unbound
