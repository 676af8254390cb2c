"""Relocation processing as ld.so does it before any code of a library runs (x86-64, glibc 2.36).

``_dl_relocate_object`` (``elf/dl-reloc.c``) walks each object's ``DT_RELA`` and ``DT_JMPREL`` ranges
(``_ELF_DYNAMIC_DO_RELOC`` in ``elf/dynamic-link.h``, ``elf/do-rel.h``) and applies each entry with
``elf_machine_rela`` (``sysdeps/x86_64/dl-machine.h``); then ``_dl_protect_relro`` makes PT_GNU_RELRO
read-only.  A damaged table stops the process before ``main``, in one of these ways, which this module
predicts without running anything:

* a type the machine does not know: ``unexpected reloc type 0x..`` (``_dl_reloc_bad_type``, exit 127;
  ``unexpected PLT reloc type`` for a lazily bound ``DT_JMPREL`` entry);
* one of the ``DT_RELACOUNT`` leading entries not ``R_X86_64_RELATIVE``: an assertion in
  ``elf_machine_rela_relative`` (exit 127);
* a write outside the object's writable pages (read-only ones unless ``DT_TEXTREL``, PROT_NONE holes,
  the objects mapped next to it), or a read of a relocation, symbol or version entry that is not mapped:
  the loader's own SIGSEGV;
* a RELRO range that is not all inside the object's reservation: ``cannot apply additional memory
  protection after relocation``.

Symbol lookups are :mod:`loader.binding`'s question; here a symbol entry is only read.  IFUNC resolvers
are not run (``ldd -r`` skips them too).
"""
from __future__ import annotations

import os
import stat
import struct
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Iterator, NamedTuple, Optional

from ..errors import ElfError
from .elffacts import (
    NEIGHBOURS,
    DT_PLTREL,
    DT_RELA,
    DT_STRTAB,
    DT_SYMTAB,
    DT_VERSYM,
    EM_X86_64,
    PF_W,
    LoaderCrash,
    _down,
    _dynamic_entries,
    _Image,
    _Layout,
    _parse_headers,
    _Reader,
    _up,
    open_regular,
    read_elf_facts_fd,
    unreadable_version_names,
)
from .factstore import key_of
from .versionheap import version_count

DT_PLTRELSZ, DT_RELASZ, DT_TEXTREL, DT_BIND_NOW, DT_FLAGS = 2, 8, 22, 24, 30
DT_JMPREL, DT_FLAGS_1, DT_RELACOUNT = 23, 0x6FFFFFFB, 0x6FFFFFF9
DF_TEXTREL, DF_BIND_NOW, DF_1_NOW = 4, 8, 1
R_NONE, R_64, R_PC32, R_COPY, R_GLOB_DAT, R_JUMP_SLOT, R_RELATIVE, R_32 = 0, 1, 2, 5, 6, 7, 8, 10
R_DTPMOD64, R_DTPOFF64, R_TPOFF64, R_SIZE32, R_SIZE64 = 16, 17, 18, 32, 33
R_TLSDESC, R_IRELATIVE, R_RELATIVE64 = 36, 37, 38
KNOWN_TYPES = frozenset({R_NONE, R_64, R_PC32, R_COPY, R_GLOB_DAT, R_JUMP_SLOT, R_RELATIVE, R_32, R_DTPMOD64,
                         R_DTPOFF64, R_TPOFF64, R_SIZE32, R_SIZE64, R_TLSDESC, R_IRELATIVE, R_RELATIVE64})
WIDTH = {R_PC32: 4, R_32: 4, R_SIZE32: 4, R_TLSDESC: 16}  # bytes written; the rest write 8
STB_LOCAL, STB_WEAK, STV_INTERNAL, STV_HIDDEN = 0, 2, 1, 2
PLAIN = (R_RELATIVE, R_RELATIVE64, R_NONE, R_IRELATIVE)  # types that read no symbol
PLAIN_TYPES = frozenset(PLAIN)
ENTRY = 24  # sizeof (Elf64_Rela)
SYMBOL = 24  # sizeof (Elf64_Sym)
VERSION_HEAP_WINDOW = 2048  # entries past l_versions still inside the loader's heap (see _version_entry_faults)
MAX_DEFINED_REFERENCES = 8192  # own symbols one object's relocations look up, checked by name at most
# how far above its reservation an object's relocation may write or protect: the loader's heap block mapped
# between it and the object loaded before it (rtld's minimal malloc maps the request plus one page: two pages;
# above them the previous object's read-only headers, gdb's view of ld.so --list).  Measured with
# mutation_sweep --bind together with elffacts.NEIGHBOURS (64 KB before, 1 MB before that).
WRITE_NEIGHBOURS = 2 * 4096
CHUNK = 1 << 18  # bytes of a relocation table read at once


class Reference(NamedTuple):
    """A symbol relocation looks up by name (at ``name_at`` in the string table, proven readable by the walk):
    ``defined`` in the object itself (the lookup must still find it through the hash tables), or imported
    (``weak``: an undefined weak one may stay unfound).  A tuple: a large library looks up tens of thousands."""

    name_at: int
    version: Optional[str]
    file: Optional[str]  # the library a version need names
    defined: bool
    weak: bool
    version_past: Optional[int] = None  # the version index lies this many entries past l_versions (versionheap)
    symbol: int = 0  # its index in the symbol table


@dataclass(frozen=True)
class Relocation:
    """What relocating one object does: the error that stops the loader (None: none), and its lookups."""

    error: Optional[str]
    references: tuple[Reference, ...] = ()


class _Fatal(Exception):
    """The loader stops: a message it prints (exit 127) or its own crash."""


def _bad_type(kind: int, plt: bool) -> _Fatal:
    digits = f"{kind:08x}" if kind > 0xFF else f"{kind:02x}"
    return _Fatal(f"unexpected {'PLT ' if plt else ''}reloc type 0x{digits}")


def _crash(what: str) -> _Fatal:
    return _Fatal(f"the loader crashes (SIGSEGV) {what}")


class _Writable:
    """The object's pages as ``_dl_map_segments`` leaves them: later PT_LOAD segments win where they overlap;
    with DT_TEXTREL every segment is made writable while relocating."""

    def __init__(self, layout: _Layout, textrel: bool) -> None:
        self.spans = [(_down(s.vaddr), _up(s.vaddr + s.memsz), textrel or bool(s.flags & PF_W))
                      for s in layout.segments]
        # just above the reservation lie the loader's heap block (writable: WRITE_NEIGHBOURS), then the objects
        # loaded before this one; what writes there break shows later, not in the loader
        reserved_end = self.spans[-1][1]
        self.neighbours = (reserved_end, reserved_end + WRITE_NEIGHBOURS)
        # mapped (what mprotect of RELRO may cover): the reservation from the first segment to the end of the last
        # (holes PROT_NONE) with what lies mapped above it (elffacts.NEIGHBOURS), and each segment wherever
        # MAP_FIXED put it
        self.mapped = [(self.spans[0][0], reserved_end + NEIGHBOURS)] + [(start, end) for start, end, _w in self.spans]

    def allows(self, address: int, width: int) -> bool:
        last = address + width - 1
        for at in (address, last) if _down(address) != _down(last) else (address,):
            for start, end, writable in reversed(self.spans):
                if start <= at < end:
                    if not writable:
                        return False
                    break
            else:
                if not self.neighbours[0] <= at < self.neighbours[1]:
                    return False
        return True

    def all_allow(self, low: int, high: int) -> bool:
        """Every write in [low, high) falls in one writable segment that nothing later covers (the fast path)."""
        for index, (start, end, writable) in enumerate(self.spans):
            if writable and start <= low and high <= end:
                return not any(s < high and low < e for s, e, _w in self.spans[index + 1:])
        return False

    def all_written(self, offsets: array, width: int) -> bool:
        """Every write of ``width`` bytes at ``offsets`` allowed, at C speed: one sort (relocations come sorted
        by offset, so it is one pass: cheaper than a min and a max), then one range or a bisect per range."""
        ordered = sorted(offsets)
        return self.all_allow(ordered[0], ordered[-1] + width) or self.each_allows(ordered, width)

    @cached_property
    def intervals(self) -> list[tuple[int, int]]:
        """The writable address ranges, merged where they touch (lld puts RELRO and .data in two adjacent
        writable segments), with the pages each later segment covers taking that segment's protection."""
        edges = sorted({e for start, end, _w in self.spans for e in (start, end)} | set(self.neighbours))
        merged: list[tuple[int, int]] = []
        for low, high in zip(edges, edges[1:]):
            covering = [w for start, end, w in self.spans if start <= low < end]
            writable = covering[-1] if covering else self.neighbours[0] <= low < self.neighbours[1]
            if writable and merged and merged[-1][1] == low:
                merged[-1] = (merged[-1][0], high)
            elif writable:
                merged.append((low, high))
        return merged

    def each_allows(self, ordered: list[int], width: int) -> bool:
        """Every write of ``width`` bytes at the ``ordered`` offsets inside one writable range (bisects)."""
        inside = sum(bisect_right(ordered, high - width) - bisect_left(ordered, low) for low, high in self.intervals
                     if high - low >= width)
        return inside == len(ordered)


def _entries(image: _Image, start: int, count: Optional[int]) -> Iterator[tuple[array, array]]:
    """The entries as 64-bit words and as 32-bit halves (r_info's type at 2 mod 6, its symbol at 3), in chunks;
    ``count`` None: until memory ends.  A chunk
    ends where readable memory does; the entry that crosses into unreadable memory raises (the loader's fault)."""
    done = 0
    address = start
    while count is None or done < count:
        try:
            run = image.run(address)
        except LoaderCrash:
            run = 0
        take = min(run // ENTRY, CHUNK // ENTRY, (count - done) if count is not None else CHUNK // ENTRY)
        if take == 0:
            raise _crash(f"reading relocation entry {done} at {address:#x}, outside readable memory")
        data = image.read(address, take * ENTRY, "relocations")
        words, halves = array("Q"), array("I")
        words.frombytes(data)
        halves.frombytes(data)
        yield words, halves
        done += take
        address = (address + take * ENTRY) % (1 << 64)


def _looked_up_by_name(table: array, symbol: int) -> bool:
    """``resolve_map`` looks a symbol up unless it binds locally (STB_LOCAL, or hidden or internal visibility);
    ``table``: the symbol entries as 32-bit words (st_info in the low byte of word 1, st_other next)."""
    word = table[6 * symbol + 1]
    return (word & 0xFF) >> 4 != STB_LOCAL and (word >> 8) & 3 not in (STV_INTERNAL, STV_HIDDEN)


def _version_entry_faults(index: int, high: int) -> bool:
    """``&map->l_versions[index]`` read by ``resolve_map``: with no version table (``high`` 0) any index but 0
    points into page zero; past the calloc'd array it reads the loader's own heap, which holds for a while
    (measured on glibc 2.36: up to about 1,100 entries always, from 2,000 never)."""
    if high == 0:
        return index != 0
    return index > high + VERSION_HEAP_WINDOW


class _Relocator:
    """One object's relocation walk (glibc 2.36 ``elf_dynamic_do_Rela`` for each range)."""

    def __init__(self, image: _Image, layout: _Layout, tags: dict[int, int], versions_high: int,
                 nameless: frozenset[int] = frozenset()) -> None:
        self.image = image
        self.tags = tags
        flags = tags.get(DT_FLAGS, 0)
        self.writable = _Writable(layout, DT_TEXTREL in tags or bool(flags & DF_TEXTREL))
        self.versym = tags.get(DT_VERSYM)
        self.symtab = tags.get(DT_SYMTAB)
        self.strtab = tags.get(DT_STRTAB)
        self.deferred: list[int] = []  # the offsets of IRELATIVE entries, applied last
        self.tables: dict[int, array] = {}  # address -> the symbol or version-index entries read so far
        self.looked_up: set[int] = set()  # symbols entries name (read once: the loader's one-entry cache, widened)
        self.versions_high = versions_high  # _dl_check_map_versions' ndx_high: l_versions has one more entries
        self.nameless = nameless  # own version definitions whose names cannot be read

    def ranges(self, lazy: bool) -> list[tuple[int, int, int, bool]]:
        """``_ELF_DYNAMIC_DO_RELOC``: (start, size, leading relative count, lazy) of each range."""
        tags = self.tags
        first = [0, 0, 0]
        if tags.get(DT_RELA):
            if DT_RELASZ not in tags:
                raise _crash("reading DT_RELASZ, which is missing")
            first = [tags[DT_RELA], tags[DT_RELASZ], tags.get(DT_RELACOUNT, 0)]
        second: Optional[tuple[int, int, int, bool]] = None
        if DT_PLTREL in tags:
            if DT_JMPREL not in tags or DT_PLTRELSZ not in tags:
                raise _crash("reading DT_JMPREL or DT_PLTRELSZ, which is missing")
            start, size = tags[DT_JMPREL], tags[DT_PLTRELSZ]
            if first[0] == 0:
                first[0] = start
            if (first[0] + first[1]) % (1 << 64) == (start + size) % (1 << 64):
                first[1] = (first[1] - size) % (1 << 64)
            if not lazy and (first[0] + first[1]) % (1 << 64) == start:
                first[1] = (first[1] + size) % (1 << 64)
            else:
                second = (start, size, 0, lazy)
        out = [(first[0], first[1], first[2], False)]
        return out + ([second] if second else [])

    def run(self, lazy: bool) -> None:
        for start, size, relative, lazy_range in self.ranges(lazy):
            self.range(start, size, relative, lazy_range)
        for offset in self.deferred:  # elf_machine_rela (or _lazy_rel) for IRELATIVE, resolver not run
            self.write(offset, 8)

    def range(self, start: int, size: int, relative: int, lazy: bool) -> None:
        if start == 0 and size == 0:
            return
        # size == 0 with a start: the loop bodies never run, but the leading relative entries still do.  The
        # count scales a pointer (``relative + nrelative``): its bytes wrap at 2**64, so a count of 2**62 + 3 is 3
        span = (relative * ENTRY) % (1 << 64)
        self.leading(start, -(-span // ENTRY))
        body_start = (start + span) % (1 << 64)
        end = (start + size) % (1 << 64)
        if body_start >= end:
            return
        for words, halves in _entries(self.image, body_start, (end - body_start + ENTRY - 1) // ENTRY):
            self.body(words, halves, lazy)

    def leading(self, start: int, count: int) -> None:
        """``elf_machine_rela_relative`` for the DT_RELACOUNT entries: no type check but an assertion."""
        if not count:
            return
        for words, halves in _entries(self.image, start, count):
            infos = words[1::3]
            kinds = halves[2::6] if infos.count(R_RELATIVE) != len(infos) else None  # r_info 8: the usual entry
            if kinds is not None and kinds.count(R_RELATIVE) + kinds.count(R_RELATIVE64) != len(kinds):
                raise _Fatal("Inconsistency detected by ld.so: dl-machine.h: Assertion `ELFW(R_TYPE) (reloc->r_info) "
                             "== R_X86_64_RELATIVE' failed (exit 127)")
            self.writes(words[0::3], 8)

    def writes(self, offsets: array, width: int) -> None:
        if not offsets:
            return
        if self.writable.all_written(offsets, width):
            return
        for offset in offsets:
            self.write(offset, width)

    def write(self, offset: int, width: int) -> None:
        if not self.writable.allows(offset, width):
            raise _crash(f"writing a relocation at {offset:#x}, outside the object's writable pages")

    def body(self, words: array, halves: array, lazy: bool) -> None:
        if not lazy and self.healthy(words, halves):
            return
        infos = words[1::3]
        for index in range(len(infos)):
            self.entry(words[3 * index], infos[index], lazy)

    def healthy(self, words: array, halves: array) -> bool:
        """The common case at C speed: known types, every symbol and version index readable, every write inside
        one writable segment.  False: walk the entries one by one for the exact first failure."""
        kinds, symbols = halves[2::6], halves[3::6]
        present = set(kinds)
        if not present <= KNOWN_TYPES:
            return False
        if not self.writable.all_written(words[0::3], 16):
            return False
        if present <= PLAIN_TYPES:
            return True  # no entry reads a symbol
        if present.isdisjoint(PLAIN_TYPES):
            wanted = set(symbols)
        else:
            wanted = {symbol for kind, symbol in zip(kinds, symbols) if kind not in PLAIN_TYPES}
        wanted -= self.looked_up
        return not wanted or self.symbols_fine(wanted)

    def symbols_fine(self, wanted: set[int]) -> bool:
        """Every symbol in ``wanted`` readable, and each one looked up by name has a readable name and a version
        index within the version entries.  Asked of the whole tables first (C speed; stricter, as it includes
        symbols no entry names), then of the looked-up symbols one by one."""
        top = max(wanted)
        table = self.table(self.symtab, top, SYMBOL, "I")
        if table is None:
            return False
        indexes = self.table(self.versym, top, 2, "H") if self.versym is not None else None
        if self.versym is not None and indexes is None:
            return False
        whole_versions = indexes is None or not _version_entry_faults(max(indexes), self.versions_high)
        whole_names = self.names_end_within(max(table[0::6]))
        if not (whole_versions and whole_names):
            looked = [s for s in wanted if _looked_up_by_name(table, s)]
            if indexes is not None and any(_version_entry_faults(indexes[s] & 0x7FFF, self.versions_high)
                                           for s in looked):
                return False
            if looked and not self.names_end_within(max(table[6 * s] for s in looked)):
                return False
        if self.nameless and indexes is not None and any(
                indexes[s] & 0x7FFF in self.nameless and table[6 * s + 1] >> 16 and _looked_up_by_name(table, s)
                for s in wanted):
            return False
        self.looked_up |= wanted
        return True

    def names_end_within(self, last: int) -> bool:
        """The string table is readable from its start through the name at ``last`` and that name's end."""
        if self.strtab is None or self.readable_run(self.strtab) <= last:
            return False
        run = self.readable_run(self.strtab + last)
        return run > 0 and b"\0" in self.image.read(self.strtab + last, min(run, 1 << 16), "names")

    def references(self, versions: dict[int, tuple[str, Optional[str]]]) -> tuple[Reference, ...]:
        """The symbols the walk looked up, by name and version (``versions``: versym index -> (name, file)).  A
        table read in one piece where it can be; an object that looks up more than MAX_DEFINED_REFERENCES of its
        own symbols keeps only its imports (the bound on one file's work)."""
        if not self.looked_up or self.symtab is None:
            return ()
        top = max(self.looked_up)
        table = self.table(self.symtab, top, SYMBOL, "I")
        indexes = self.table(self.versym, top, 2, "H") if self.versym is not None else None
        if table is None or (self.versym is not None and indexes is None):
            return ()
        chosen = [s for s in sorted(self.looked_up) if _looked_up_by_name(table, s)]
        defined = [s for s in chosen if table[6 * s + 1] >> 16 & 0xFFFF]
        if len(defined) > MAX_DEFINED_REFERENCES:
            chosen = [s for s in chosen if not table[6 * s + 1] >> 16 & 0xFFFF]
        out = []
        high = self.versions_high
        none = (None, None)
        for symbol in chosen:
            word = table[6 * symbol + 1]
            index = indexes[symbol] & 0x7FFF if indexes is not None else 0
            version, file = versions.get(index, none) if index > 1 else none
            past = index - high - 1 if high and index > high else None
            out.append(Reference(table[6 * symbol], version, file, word >> 16 != 0, (word & 0xFF) >> 4 == STB_WEAK,
                                 past, symbol))
        return tuple(out)

    def table(self, at: Optional[int], top: int, width: int, code: str) -> Optional[array]:
        """Entries 0..``top`` of the symbol (``width`` 24, as 32-bit words) or version-index (2) table at ``at``, read
        once and kept for larger requests to extend; None where they are not all readable in one piece."""
        if at is None:
            return None
        kept = self.tables.get(at)
        length = width * (top + 1)
        if kept is not None and len(kept) * kept.itemsize >= length:
            return kept
        if not self.readable(at, length):
            return None
        values = array(code)
        values.frombytes(self.image.read(at, length, "a symbol table"))
        self.tables[at] = values
        return values

    def readable_run(self, address: int) -> int:
        try:
            return self.image.run(address % (1 << 64))
        except LoaderCrash:
            return 0

    def readable(self, address: int, length: int) -> bool:
        try:
            return self.image.run(address) >= length
        except LoaderCrash:
            return False

    def entry(self, offset: int, info: int, lazy: bool) -> None:
        kind, symbol = info & 0xFFFFFFFF, info >> 32
        if lazy:
            if kind == R_IRELATIVE:
                self.deferred.append(offset)
            elif kind == R_JUMP_SLOT:
                self.write(offset, 8)
            elif kind == R_TLSDESC:
                self.symbol_entry(symbol)
                self.write(offset, 16)
            else:
                raise _bad_type(kind, plt=True)
            return
        if self.versym is not None:  # do-rel.h reads the version index of every entry past the relative ones
            self.read((self.versym + 2 * symbol) % (1 << 64), 2, "a version index")
        if kind == R_IRELATIVE:
            self.deferred.append(offset)
            return
        if kind in (R_RELATIVE, R_RELATIVE64):
            self.write(offset, 8)
            return
        if kind == R_NONE:
            return
        self.symbol_entry(symbol)  # RESOLVE_MAP reads the symbol before the type is looked at
        if kind not in KNOWN_TYPES:
            raise _bad_type(kind, plt=False)
        self.write(offset, WIDTH.get(kind, 8))

    def symbol_entry(self, symbol: int) -> None:
        """``resolve_map``: the symbol is read; one that binds globally is looked up by its name, with the version
        entry its version index selects."""
        if self.symtab is None:
            raise _crash("reading a symbol through a missing DT_SYMTAB")
        address = (self.symtab + SYMBOL * symbol) % (1 << 64)
        self.read(address, SYMBOL, f"symbol {symbol}")
        if symbol in self.looked_up:
            return
        self.looked_up.add(symbol)
        name_at, info, other, shndx = struct.unpack("<IBBH", self.image.read(address, 8, "a symbol"))
        if info >> 4 == STB_LOCAL or other & 3 in (STV_INTERNAL, STV_HIDDEN):
            return
        if self.versym is not None:
            index = struct.unpack("<H", self.image.read((self.versym + 2 * symbol) % (1 << 64), 2, "a version index")
                                  )[0] & 0x7FFF
            if _version_entry_faults(index, self.versions_high):
                raise _crash(f"reading version entry {index} of {self.versions_high + 1} (symbol {symbol})")
            if index in self.nameless and shndx:  # found by name in this object, then its version compared by name
                raise _crash(f"comparing the name of version {index}, which cannot be read (symbol {symbol})")
        if self.strtab is None:
            raise _crash("reading a symbol name through a missing DT_STRTAB")
        self.name(self.strtab + name_at, symbol)

    def name(self, address: int, symbol: int) -> None:
        try:
            self.image.cstring(address % (1 << 64), f"the name of symbol {symbol}")
        except LoaderCrash:
            raise _crash(f"reading the name of symbol {symbol} at {address:#x}") from None

    def read(self, address: int, length: int, what: str) -> None:
        try:
            self.image.read(address, length, what)
        except LoaderCrash:
            raise _crash(f"reading {what} at {address:#x}") from None


def _relro_error(layout: _Layout, writable: _Writable) -> Optional[str]:
    """``_dl_protect_relro``: mprotect of the RELRO pages fails unless they are all mapped."""
    if layout.relro is None:
        return None
    address, size = layout.relro
    start, end = _down(address), _down((address + size) % (1 << 64))
    if start == end:
        return None
    if not any(low <= start < end <= high for low, high in writable.mapped):
        return "cannot apply additional memory protection after relocation"
    return None


def _walk(path: str, lazy: bool) -> Relocation:
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        reader = _Reader(fd, size)
        header, layout = _parse_headers(reader, os.pread(fd, 4096, 0))
        if header["machine"] != EM_X86_64 or layout.elf_class != 64 or not layout.segments or layout.dynamic is None:
            return Relocation(None)
        facts = read_elf_facts_fd(fd)
        if facts.load_error or facts.late_error:
            return Relocation(None)  # the loader stops before relocating: the dependency facts say why
        tags = dict(_dynamic_entries(reader, layout))
        versions: dict[int, tuple[str, Optional[str]]] = {v.index & 0x7FFF: (v.name, v.file)
                                                         for v in facts.version_needs}
        versions.update({d.index & 0x7FFF: (d.name, None) for d in facts.version_defs})
        versions_high = max(version_count(facts) - 1, 0)  # _dl_check_map_versions' ndx_high
        bind_now = (DT_BIND_NOW in tags or tags.get(DT_FLAGS, 0) & DF_BIND_NOW
                    or tags.get(DT_FLAGS_1, 0) & DF_1_NOW)
        image = _Image(reader, layout.segments)
        relocator = _Relocator(image, layout, tags, versions_high, unreadable_version_names(image, layout.fmt, tags))
        try:
            relocator.run(lazy and not bind_now)
        except _Fatal as fatal:
            return Relocation(str(fatal))
        relro = _relro_error(layout, relocator.writable)
        if relro:
            return Relocation(relro)
        return Relocation(None, relocator.references(versions))
    finally:
        os.close(fd)


@lru_cache(maxsize=1024)
def _cached(path: str, identity: tuple[int, ...], lazy: bool) -> Relocation:
    try:
        return _walk(path, lazy)
    except (ElfError, OSError, struct.error, ValueError, LoaderCrash):
        return Relocation(None)  # a file that cannot be read is reported by the dependency facts, not here


def relocate(path: str, lazy: bool = False) -> Relocation:
    """What the loader does relocating ``path``.  ``lazy``: PLT entries bound at first call, as a normal start
    does; False: every entry now (``LD_BIND_NOW``, ``RTLD_NOW`` as Python loads extension modules, ``ldd -r``)."""
    try:
        st = os.stat(path)
    except OSError:
        return Relocation(None)
    if not stat.S_ISREG(st.st_mode):
        return Relocation(None)
    return _cached(path, key_of(st), lazy)


def relocation_error(path: str, lazy: bool = False) -> Optional[str]:
    """Why the loader stops relocating ``path`` (None: it relocates)."""
    return relocate(path, lazy).error

