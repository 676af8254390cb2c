"""The dependency facts of one ELF file, read through its program headers.

The ELF and program headers are parsed with pyelftools' struct definitions (built once per
class and byte order).  The dynamic array, string reads and version tables are read with
``struct`` in a few bounded ``pread`` calls: only the bytes that hold dependency facts are
touched, so a 1 GB library costs a handful of small reads, and nothing relies on section
headers (section-stripped files work, as they do for the loader).
"""
from __future__ import annotations

import os
import re
import stat
import struct
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from types import SimpleNamespace
from typing import Iterator, Optional, Union

from ..errors import (
    CorruptError,
    TooLargeError,
    ElfError,
    LdScriptError,
    NotElfError,
    NotRegularError,
    TruncatedError,
    UnsupportedError,
)

ELFMAG = b"\x7fELF"
ELFCLASS32, ELFCLASS64 = 1, 2
ELFDATA2LSB, ELFDATA2MSB = 1, 2
ET_REL, ET_EXEC, ET_DYN, ET_CORE = 1, 2, 3, 4
PT_LOAD, PT_DYNAMIC, PT_INTERP = 1, 2, 3
PT_TLS = 7
PT_GNU_STACK = 0x6474E551
PT_GNU_RELRO = 0x6474E552
PF_X = 1
PF_X, PF_W, PF_R = 1, 2, 4
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 1, 5, 6, 10, 11
DT_HASH, DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS_1 = 4, 14, 15, 29, 0x6FFFFFFB
DT_AUXILIARY, DT_FILTER = 0x7FFFFFFD, 0x7FFFFFFF
DT_GNU_HASH, DT_VERSYM = 0x6FFFFEF5, 0x6FFFFFF0
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
DF_1_NODEFLIB, DF_1_PIE = 0x800, 0x08000000
DT_PLTREL, DT_RELA, DT_RELAENT, DT_REL, DT_RELENT = 20, 7, 9, 17, 19
EM_386, EM_X86_64 = 3, 62
VER_FLG_BASE, VER_FLG_WEAK = 0x1, 0x2
ELFOSABI_SYSV, ELFOSABI_GNU = 0, 3
EV_CURRENT = 1

# Bounds that keep a corrupt file from costing unbounded time or memory.
MAX_DYNAMIC_BYTES = 16 << 20
SYMBOLS_DYNAMIC_BYTES = 1 << 20
MAX_NEEDED = 4096  # distinct DT_NEEDED names in one file (real ones have tens)
MAX_NAME_BYTES = 1 << 20  # all the names one file's facts keep (the facts cache holds them)
MAX_STRING = 1 << 16
PATH_MAX = 4096  # a longer name can never be opened (ENAMETOOLONG): kept to PATH_MAX + 1 bytes, same verdict
try:  # the mapping checks use it as glibc uses GLRO(dl_pagesize): 4 KiB on x86_64, 16 or 64 KiB on some arm64
    PAGE = os.sysconf("SC_PAGE_SIZE")
except (ValueError, OSError):
    PAGE = 4096
ADDRESS_SPACE = 1 << 47  # a mapping longer than the user address space cannot be made
MAX_VERSION_ENTRIES = 1 << 16
MAX_PHNUM = 4096
LD_SCRIPT_PROBE = 4096


@dataclass(frozen=True)
class VersionNeed:
    """One ``Vernaux`` of ``.gnu.version_r``: ``file`` must define version ``name``."""

    file: str
    name: str
    hash: int
    weak: bool
    index: int = 0  # vna_other: the versym index symbols use to name this version


@dataclass(frozen=True)
class VersionDef:
    """One ``Verdef`` of ``.gnu.version_d`` (its first ``Verdaux`` name)."""

    name: str
    hash: int
    flags: int
    index: int


@dataclass(frozen=True)
class ElfFacts:
    """What the loader needs to know about one file; independent of the file's path."""

    elf_class: int  # 32 or 64
    little_endian: bool
    machine: int
    osabi: int
    abiversion: int
    e_type: int
    ident_version: int
    ident_pad_zero: bool
    e_version: int
    phentsize: int
    interp: Optional[str] = None
    dynamic: bool = False
    soname: Optional[str] = None
    needed: tuple[str, ...] = ()
    rpath: Optional[str] = None  # already dropped when the object also has DT_RUNPATH
    runpath: Optional[str] = None
    rpath_ignored: Optional[str] = None  # the DT_RPATH glibc discards because DT_RUNPATH exists
    flags_1: int = 0
    filters: tuple[str, ...] = ()
    version_needs: tuple[VersionNeed, ...] = ()
    version_defs: tuple[VersionDef, ...] = ()
    has_verdef: bool = False
    has_versym: bool = False  # DT_VERSYM: without it check_match (glibc < 2.41) asserts on a versioned binding
    stack_flags: Optional[int] = None  # PT_GNU_STACK's p_flags; None: no PT_GNU_STACK header
    load_error: Optional[str] = None  # what _dl_map_object_from_fd says of this file (it is never loaded)
    late_error: Optional[str] = None  # the same, met after its DF_1_PIE check (hash table, strings)
    has_tls: bool = False  # a non-empty PT_TLS: the loader gives it a TLS module slot

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)

    @property
    def wants_execstack(self) -> bool:
        """It asks for an executable stack: PT_GNU_STACK with PF_X, or no PT_GNU_STACK at all (x86_64's
        DEFAULT_STACK_PERMS include PF_X, elf/dl-load.c)."""
        return self.stack_flags is None or bool(self.stack_flags & PF_X)

    @property
    def is_pie(self) -> bool:
        return bool(self.flags_1 & DF_1_PIE)

    @property
    def is_executable(self) -> bool:
        """An object the kernel would start: ET_EXEC, or ET_DYN with an interpreter."""
        return self.e_type == ET_EXEC or (self.e_type == ET_DYN and self.interp is not None)

    @cached_property
    def defined_versions(self) -> frozenset[tuple[str, int]]:
        """(name, hash) of every version node defined here, as ``match_symbol`` compares them."""
        return frozenset((d.name, d.hash) for d in self.version_defs)


@dataclass(frozen=True)
class HostAbi:
    """What the running loader accepts: class, byte order, machine."""

    elf_class: int = 64
    little_endian: bool = True
    machine: int = 62  # EM_X86_64


@dataclass(frozen=True)
class LoaderVerdict:
    """How glibc's ``open_verify`` treats a candidate: use it, skip it, or fail the load."""

    action: str  # "use" | "skip" | "fatal"
    reason: str = ""


def loader_verdict(facts: Optional[ElfFacts], error: Optional[ElfError], host: HostAbi) -> LoaderVerdict:
    """The checks of ``open_verify`` (glibc ``elf/dl-load.c``), in its order.  A file whose program headers
    cannot be read is judged by its ELF header first: the loader refuses or skips it before reading them."""
    if error is not None:
        if getattr(error, "loader_skips", False):
            return LoaderVerdict("skip", "wrong ELF class")
        header = getattr(error, "header", None)
        if header:
            verdict = _header_verdict(SimpleNamespace(**header), host)
            if verdict.action != "use":
                return verdict
        return LoaderVerdict("fatal", error.loader_message)
    assert facts is not None
    return _header_verdict(facts, host)


def _native_machine(facts: Union[ElfFacts, SimpleNamespace], host: HostAbi) -> int:
    """e_machine as the loader reads it: in its own byte order, whatever EI_DATA says."""
    machine = facts.machine
    return machine if facts.little_endian == host.little_endian else ((machine & 0xFF) << 8) | (machine >> 8)


def _header_verdict(facts: Union[ElfFacts, SimpleNamespace], host: HostAbi) -> LoaderVerdict:
    if facts.elf_class != host.elf_class:
        return LoaderVerdict("skip", f"wrong ELF class: ELFCLASS{facts.elf_class}")
    ident_wrong = (facts.little_endian != host.little_endian or facts.ident_version != EV_CURRENT
                   or facts.osabi not in (ELFOSABI_SYSV, ELFOSABI_GNU) or not facts.ident_pad_zero
                   or not (facts.abiversion == 0 or (facts.osabi == ELFOSABI_GNU and facts.abiversion < 4)))
    if ident_wrong and _native_machine(facts, host) != host.machine:
        # measured on glibc 2.31, 2.36 and 2.41 (Debian roots): a wrong e_ident together with another machine is
        # skipped, the search going on (tests/test_loader_checks.py); a wrong e_ident alone is the error below
        return LoaderVerdict("skip", f"wrong machine (e_machine {_native_machine(facts, host)})")
    if facts.little_endian != host.little_endian:
        order = "little-endian" if host.little_endian else "big-endian"
        return LoaderVerdict("fatal", f"ELF file data encoding not {order}")
    if facts.ident_version != EV_CURRENT:
        return LoaderVerdict("fatal", "ELF file version ident does not match current one")
    if facts.osabi not in (ELFOSABI_SYSV, ELFOSABI_GNU):
        return LoaderVerdict("fatal", "ELF file OS ABI invalid")
    if not (facts.abiversion == 0 or (facts.osabi == ELFOSABI_GNU and facts.abiversion < 4)):
        return LoaderVerdict("fatal", "ELF file ABI version invalid")
    if not facts.ident_pad_zero:
        return LoaderVerdict("fatal", "nonzero padding in e_ident")
    if facts.e_version != EV_CURRENT:
        return LoaderVerdict("fatal", "ELF file version does not match current one")
    if _native_machine(facts, host) != host.machine:
        return LoaderVerdict("skip", f"wrong machine (e_machine {_native_machine(facts, host)})")
    if facts.e_type not in (ET_DYN, ET_EXEC):
        return LoaderVerdict("fatal", "only ET_DYN and ET_EXEC can be loaded")
    if facts.phentsize != (56 if host.elf_class == 64 else 32):
        return LoaderVerdict("fatal", "ELF file's phentsize not the expected size")
    return LoaderVerdict("use")


@lru_cache(maxsize=None)
def _structs(little_endian: bool, elf_class: int):  # noqa: ANN202 - pyelftools type
    from elftools.elf.structs import ELFStructs

    structs = ELFStructs(little_endian=little_endian, elfclass=elf_class)
    structs.create_basic_structs()
    return structs


@lru_cache(maxsize=None)
def _phdr_struct(little_endian: bool, elf_class: int, e_type: str, e_machine: str, osabi: str):  # noqa: ANN202
    from elftools.elf.structs import ELFStructs

    structs = ELFStructs(little_endian=little_endian, elfclass=elf_class)
    structs.create_basic_structs()
    structs.create_advanced_structs(e_type, e_machine, osabi)
    return structs.Elf_Phdr


def _enum_value(value: object, table_name: str) -> int:
    """pyelftools turns known enum values into names; map them back to numbers."""
    if isinstance(value, int):
        return value
    from elftools.elf import enums

    return int(getattr(enums, table_name)[value])


_PT_NAMES = {"PT_LOAD": PT_LOAD, "PT_DYNAMIC": PT_DYNAMIC, "PT_INTERP": PT_INTERP, "PT_TLS": PT_TLS,
             "PT_GNU_STACK": PT_GNU_STACK, "PT_GNU_RELRO": PT_GNU_RELRO}
_LD_SCRIPT_WORDS = re.compile(rb"\b(GROUP|INPUT|OUTPUT_FORMAT|AS_NEEDED)\s*\(")
_LD_SCRIPT_REFS = re.compile(rb"(?:GROUP|INPUT|AS_NEEDED)\s*\(([^)]*)\)")


def _not_elf(head: bytes, size: int) -> ElfError:
    # glibc reads the header first: under 64 bytes it says "file too short", else it checks the magic.
    loader_message = "file too short" if size < 64 else "invalid ELF header"
    if not head.startswith(ELFMAG) and _LD_SCRIPT_WORDS.search(head):
        refs: list[str] = []
        for group in _LD_SCRIPT_REFS.findall(head):
            refs.extend(tok.decode("utf-8", "replace") for tok in group.replace(b",", b" ").split()
                        if tok not in (b"AS_NEEDED", b"(", b")"))
        unique = tuple(dict.fromkeys(refs))
        target = ", ".join(unique) or "nothing it names"
        error: ElfError = LdScriptError(f"GNU ld script, not a shared object (it points to {target})", unique)
        error.loader_message = loader_message
        return error
    if head.startswith(ELFMAG):
        return TruncatedError(f"truncated ELF file ({size} bytes)", loader_message)
    if size < 64:
        return NotElfError(f"not an ELF file ({size} bytes)", loader_message)
    return NotElfError("not an ELF file (bad magic)", loader_message)


class _Reader:
    """Bounded positional reads from an open file."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self._chunks: dict[int, bytes] = {}

    def read(self, offset: int, length: int, what: str) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise TruncatedError(f"truncated: {what} at offset {offset:#x}+{length} is past the end of the file "
                                 f"({self.size} bytes)", "cannot read file data")
        data = os.pread(self.fd, length, offset)
        if len(data) != length:
            raise TruncatedError(f"file shrank while reading {what}", "cannot read file data")
        return data

    def cstring(self, offset: int, what: str) -> str:
        """A NUL-terminated string, read through 4 KiB chunks that are kept for reuse."""
        if offset < 0 or offset >= self.size:
            raise CorruptError(f"corrupt: {what} string offset {offset:#x} is outside the file")
        out = bytearray()
        pos = offset
        while len(out) < MAX_STRING:
            base = pos & ~0xFFF
            chunk = self._chunks.get(base)
            if chunk is None:
                chunk = os.pread(self.fd, min(4096, self.size - base), base)
                if not chunk:
                    break
                self._chunks[base] = chunk
            part = chunk[pos - base:]
            end = part.find(b"\0")
            if end >= 0:
                out += part[:end]
                return out.decode("utf-8", "surrogateescape")
            out += part
            pos = base + len(chunk)
            if pos >= self.size:
                break
        raise CorruptError(f"corrupt: unterminated {what} string at offset {offset:#x}")


@dataclass(frozen=True)
class Segment:
    """One PT_LOAD program header."""

    vaddr: int
    offset: int
    filesz: int
    memsz: int
    flags: int


@dataclass
class _Layout:
    """Where things are in one file: the parts of the ELF and program headers we use."""

    fmt: str  # "<" or ">"
    elf_class: int
    dynamic: Optional[tuple[int, int]] = None  # (offset, filesz)
    dynamic_vaddr: int = 0
    interp: Optional[tuple[int, int]] = None
    segments: list[Segment] = field(default_factory=list)  # every PT_LOAD, in program header order
    tls: Optional[tuple[int, int]] = None  # PT_TLS (memsz, align), the last non-empty one
    stack_flags: Optional[int] = None  # PT_GNU_STACK's p_flags (None: no such header)
    relro: Optional[tuple[int, int]] = None  # PT_GNU_RELRO (vaddr, memsz): the last one, as dl-load.c keeps it

    @property
    def readonly(self) -> list[tuple[int, int]]:
        """(offset, filesz) of the read-only, non-executable PT_LOAD segments."""
        return [(s.offset, s.filesz) for s in self.segments if not s.flags & (PF_X | PF_W)]

    def offset_of(self, vaddr: int, what: str) -> int:
        """The file offset of ``vaddr`` (the symbol readers' way: only a file that loaded is read so)."""
        for seg in self.segments:
            if seg.vaddr <= vaddr < seg.vaddr + seg.filesz:
                return vaddr - seg.vaddr + seg.offset
        raise CorruptError(f"corrupt: {what} address {vaddr:#x} is in no loadable segment")


class UnsupportedVersion(Exception):
    """``_dl_check_map_versions`` stops the load: a version record it cannot read."""


class LoaderCrash(Exception):
    """The loader itself would die reading this address (its own SIGSEGV or SIGBUS), not report an error."""

    def __init__(self, signal: str, what: str) -> None:
        super().__init__(f"the loader crashes ({signal}) reading {what}")


def _down(value: int) -> int:
    return value & ~(PAGE - 1)


def _up(value: int) -> int:
    return (value + PAGE - 1) & ~(PAGE - 1)


# A MAP_FIXED mapping that reaches this far past the object's own reservation runs off the top of the user
# address space for almost every placement ASLR can choose (the reservation sits at most 2**40 below it);
# nearer, the loader's outcome depends on where the object landed (measured: 2**37 failed, 2**20 mapped).
BEYOND_RESERVATION = 1 << 36
# The objects loaded just before lie right above an object's reservation (mmap places it just below them):
# a MAP_FIXED segment that reaches into this window replaces their pages, and the loader crashes on them; a
# read there goes through.  At a start-up, above the first library lie the loader's heap block, the main
# object, the vDSO and the loader itself: about 270 KB on glibc 2.36 (gdb's view of ld.so --list), then
# nothing.  256 KB, measured with mutation_sweep --bind (1 MB before: 16 more agreements in 18,000 cases, 2 of
# them on seeds held out from the choice).
NEIGHBOURS = 1 << 18
TLS_LIMIT = 1 << 31  # a TLS block (or its alignment) this large cannot be allocated


@lru_cache(maxsize=1)
def _commit_limit() -> int:
    """The most private writable memory one mapping can get here (heuristic overcommit: RAM + swap)."""
    total = 0
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith(("MemTotal:", "SwapTotal:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return ADDRESS_SPACE
    return total or ADDRESS_SPACE


def mapping_error(layout: _Layout, size: int) -> Optional[str]:
    """What ``_dl_map_object_from_fd`` and ``_dl_map_segments`` (glibc 2.36 ``elf/dl-load.c``,
    ``dl-map-segments.h``) refuse, in their order; None when the segments can be mapped."""
    segments = layout.segments
    for seg in segments:
        if (seg.vaddr - seg.offset) & (PAGE - 1):
            return "ELF load command address/offset not page-aligned"
    if not segments:
        return "object file has no loadable segments"
    first, last = segments[0], segments[-1]
    base = _down(first.vaddr)
    length = (last.vaddr + last.memsz - base) % (1 << 64)
    if length == 0 or length >= ADDRESS_SPACE or _down(first.offset) + length >= 1 << 63:
        return "failed to map segment from shared object"
    holes = any(_down(b.vaddr) != _up(a.vaddr + a.filesz) for a, b in zip(segments, segments[1:]))
    if holes and _down(last.vaddr) < _up(first.vaddr + first.filesz):
        return "ELF load command address/offset not page-aligned"
    if layout.tls and max(layout.tls) >= TLS_LIMIT:  # the static TLS block is allocated with the initial thread
        return "cannot allocate TLS data structures for initial thread"
    limit = _up(length) + BEYOND_RESERVATION
    for seg in segments:  # MAP_FIXED: anywhere in the address space, overlapping or not
        start, end = _down(seg.vaddr), _up(seg.vaddr + seg.filesz)
        if end > start and ((end - base) % (1 << 64) >= limit or _down(seg.offset) + (end - start) >= 1 << 63):
            return "failed to map segment from shared object"
        zero, zero_end = _up(seg.vaddr + seg.filesz), seg.vaddr + seg.memsz
        if zero_end > zero and ((zero_end - base) % (1 << 64) >= limit
                                or seg.flags & PF_W and zero_end - zero > _commit_limit()):
            return "cannot map zero-fill pages"
    return None


def clobbers_neighbours(layout: _Layout, size: int) -> Optional[LoaderCrash]:
    """A segment mapped past the object's reservation, over the objects loaded before it (``MAP_FIXED``)."""
    segments = layout.segments
    base = _down(segments[0].vaddr)
    reserved = _up(segments[-1].vaddr + segments[-1].memsz) - base
    for seg in segments:
        file_end = _up(seg.vaddr + seg.filesz) - base
        alloc_end = _up(seg.vaddr + seg.memsz) - base
        start = _down(seg.vaddr) - base
        if start >= reserved + NEIGHBOURS or max(file_end, alloc_end) <= reserved:
            continue
        if file_end > reserved and _down(seg.offset) + (reserved - start) >= _up(size):
            return LoaderCrash("SIGBUS", "a segment mapped past the end of the file, over the objects loaded before")
        return LoaderCrash("SIGSEGV", "a segment mapped over the objects loaded before it")
    return None


class _Image:
    """The file as the loader maps it (``_dl_map_segments``): reads by virtual address, with the faults the
    loader itself would take.  Later segments win where they overlap, as MAP_FIXED does."""

    def __init__(self, reader: _Reader, segments: list[Segment]) -> None:
        self.reader = reader
        self.eof_page = _up(reader.size)
        self.maps: list[tuple[int, int, Optional[int], bool]] = []  # (start, end, file offset or None, readable)
        base = _down(segments[0].vaddr)
        reserved = _up(segments[-1].vaddr + segments[-1].memsz)
        # Just above the reservation lie the objects loaded before: readable, of unknown content (read as zeros;
        # measured: the loader survives such reads far more often than not).
        self.maps.append((reserved, reserved + NEIGHBOURS, -1, True))
        self.maps.append((base, reserved, None, False))  # the reservation: holes are PROT_NONE
        for seg in segments:
            start, end = _down(seg.vaddr), _up(seg.vaddr + seg.filesz)
            readable = bool(seg.flags & PF_R)
            if end > start:
                self.maps.append((start, end, _down(seg.offset), readable))
            zero, zero_end = seg.vaddr + seg.filesz, seg.vaddr + seg.memsz
            if zero_end > _up(zero):
                self.maps.append((_up(zero), _up(zero_end), -1, readable))  # anonymous zero pages

    def _find(self, address: int) -> tuple[int, int, Optional[int], bool]:
        """The mapping that serves ``address`` (the last one mapped over it), its end cut where a later mapping
        begins: (start, end, file offset or None or -1, readable)."""
        for index in range(len(self.maps) - 1, -1, -1):
            start, end, offset, readable = self.maps[index]
            if start <= address < end:
                for later_start, _end, _offset, _readable in self.maps[index + 1:]:
                    if address < later_start < end:
                        end = later_start
                return start, end, offset, readable
        raise LoaderCrash("SIGSEGV", f"address {address:#x} outside the mapped segments")

    def run(self, address: int) -> int:
        """How many bytes from ``address`` read from one mapping (0: not readable there; raises outside all)."""
        _start, end, offset, readable = self._find(address)
        return end - address if offset is not None and readable else 0

    def read(self, address: int, length: int, what: str) -> bytes:
        out = bytearray()
        while len(out) < length:
            at = address + len(out)
            start, end, offset, readable = self._find(at)
            if offset is None or not readable:
                raise LoaderCrash("SIGSEGV", f"{what} at {at:#x}, in a page mapped without read access")
            take = min(length - len(out), end - at)
            if offset == -1:
                out += bytes(take)
                continue
            file_at = offset + (at - start)
            if file_at >= self.eof_page:
                raise LoaderCrash("SIGBUS", f"{what}: mapped past the end of the file")
            have = max(0, min(take, self.reader.size - file_at))
            piece = os.pread(self.reader.fd, have, file_at) if have else b""
            if take == length and len(piece) == take:
                return piece  # the whole read from one mapping of the file: no copy
            out += piece
            out += bytes(take - len(piece))  # the rest of the last file page reads as zeros
        return bytes(out)

    def cstring(self, address: int, what: str, keep: int = PATH_MAX + 1) -> str:
        """A NUL-terminated string as the loader reads it, scanned to its end.  A name is kept to PATH_MAX + 1
        bytes (no longer name can be opened, so the verdict is the same); a search path (``keep`` larger) past
        ``keep`` bytes is beyond libdoctor's bounds."""
        kept = bytearray()
        at = address
        while True:
            chunk = self.read(at, min(4096, PAGE - (at & (PAGE - 1))), what)
            end = chunk.find(b"\0")
            part = chunk if end < 0 else chunk[:end]
            if len(kept) < keep:
                kept += part[:keep - len(kept)]
            elif keep > PATH_MAX + 1:
                raise TooLargeError(f"{what} longer than {keep} bytes: not checked")
            if end >= 0:
                return kept.decode("utf-8", "surrogateescape")
            at += len(chunk)


def _parse_headers(reader: _Reader, head: bytes) -> tuple[dict, _Layout]:
    ei_class, ei_data = head[4], head[5]
    if ei_class not in (ELFCLASS32, ELFCLASS64):
        err = UnsupportedError(f"unsupported ELF class {ei_class}")
        err.loader_skips = True  # glibc: any class but the host's is skipped, not fatal
        raise err
    if ei_data not in (ELFDATA2LSB, ELFDATA2MSB):
        raise UnsupportedError(f"unsupported ELF byte order {ei_data}", "ELF file data encoding not little-endian")
    little = ei_data == ELFDATA2LSB
    elf_class = 64 if ei_class == ELFCLASS64 else 32
    ehdr_size = 64 if elf_class == 64 else 52
    try:
        ehdr = _structs(little, elf_class).Elf_Ehdr.parse(head[:ehdr_size])
    except Exception as exc:  # pyelftools raises several types on bad bytes
        raise CorruptError(f"corrupt ELF header ({exc.__class__.__name__})") from None
    ident = ehdr["e_ident"]
    header = {
        "elf_class": elf_class,
        "little_endian": little,
        "machine": _enum_value(ehdr["e_machine"], "ENUM_E_MACHINE"),
        "osabi": _enum_value(ident["EI_OSABI"], "ENUM_EI_OSABI"),
        "abiversion": int(ident["EI_ABIVERSION"]),
        "e_type": _enum_value(ehdr["e_type"], "ENUM_E_TYPE"),
        "ident_version": _enum_value(ident["EI_VERSION"], "ENUM_E_VERSION"),
        "ident_pad_zero": not any(head[9:16]),
        "e_version": _enum_value(ehdr["e_version"], "ENUM_E_VERSION"),
        "phentsize": int(ehdr["e_phentsize"]),
    }
    try:
        return header, _program_headers(reader, ehdr, header)
    except ElfError as err:
        err.header = header  # type: ignore[attr-defined]  # the loader checks it before the program headers
        raise


def _program_headers(reader: _Reader, ehdr, header: dict) -> _Layout:  # noqa: ANN001 - pyelftools container
    little, elf_class, ident = header["little_endian"], header["elf_class"], ehdr["e_ident"]
    layout = _Layout("<" if little else ">", elf_class)
    phnum, phentsize, phoff = int(ehdr["e_phnum"]), header["phentsize"], int(ehdr["e_phoff"])
    expected = 56 if elf_class == 64 else 32
    if phnum == 0:
        return layout
    if phentsize != expected or phnum > MAX_PHNUM:
        raise CorruptError(f"corrupt: program header table of {phnum} entries of {phentsize} bytes")
    table = reader.read(phoff, phnum * phentsize, "program header table")
    phdr = _phdr_struct(little, elf_class, ehdr["e_type"], ehdr["e_machine"], ident["EI_OSABI"])
    for i in range(phnum):
        ph = phdr.parse(table[i * phentsize:(i + 1) * phentsize])
        p_type = _PT_NAMES.get(ph["p_type"], ph["p_type"])
        if p_type == PT_LOAD:
            layout.segments.append(Segment(ph["p_vaddr"], ph["p_offset"], ph["p_filesz"], ph["p_memsz"],
                                           int(ph["p_flags"])))
        elif p_type == PT_DYNAMIC and ph["p_filesz"]:  # glibc: the last non-empty one; empty ones are skipped
            layout.dynamic = (ph["p_offset"], ph["p_filesz"])
            layout.dynamic_vaddr = ph["p_vaddr"]
        elif p_type == PT_INTERP and layout.interp is None:
            layout.interp = (ph["p_offset"], ph["p_filesz"])
        elif p_type == PT_TLS and ph["p_memsz"]:
            layout.tls = (ph["p_memsz"], ph["p_align"])
        elif p_type == PT_GNU_STACK:
            layout.stack_flags = int(ph["p_flags"])
        elif p_type == PT_GNU_RELRO:
            layout.relro = (ph["p_vaddr"], ph["p_memsz"])
    return layout


def _dynamic_entries(reader: _Reader, layout: _Layout) -> list[tuple[int, int]]:
    """The dynamic entries in order, for the symbol readers, read as the loader reads them: from PT_DYNAMIC's
    address in the mapped image (not its file offset, which the loader never uses) up to DT_NULL.  Where one
    tag comes twice the loader keeps the last (``elf_get_dynamic_info``): callers take the last too."""
    image = _Image(reader, layout.segments)
    width = 16 if layout.elf_class == 64 else 8
    fmt = layout.fmt + ("qQ" if layout.elf_class == 64 else "iI")
    entries: list[tuple[int, int]] = []
    address = layout.dynamic_vaddr
    try:
        while len(entries) * width < SYMBOLS_DYNAMIC_BYTES:
            block = image.read(address, (PAGE - (address & (PAGE - 1))) // width * width or width,
                               "the dynamic section")
            for tag, value in struct.iter_unpack(fmt, block):
                if tag == DT_NULL:
                    return entries
                entries.append((tag, value))
            address += len(block)
    except LoaderCrash as crash:
        raise CorruptError(f"corrupt: {crash}") from None
    raise TooLargeError(f"a dynamic section over {SYMBOLS_DYNAMIC_BYTES} bytes: its symbols are not checked")


def open_regular(path: str) -> int:
    """Open ``path`` for reading without ever blocking: ``O_NONBLOCK`` (a FIFO's open would wait for a writer),
    then ``fstat``; anything but a regular file or a folder is refused."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise NotElfError(f"cannot open: {exc.strerror}", "cannot open shared object file") from None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        os.close(fd)
        raise NotRegularError(f"not a regular file ({file_kind(mode)}): the loader would block or fail opening it")
    return fd


def file_kind(mode: int) -> str:
    return "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"




def read_elf_facts(path: str) -> ElfFacts:
    """Read the dependency facts of ``path``; raises an :class:`ElfError` subclass on bad input."""
    fd = open_regular(path)
    try:
        return read_elf_facts_fd(fd)
    finally:
        os.close(fd)


def read_elf_facts_fd(fd: int) -> ElfFacts:
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, LD_SCRIPT_PROBE, 0)
    except OSError as exc:
        raise CorruptError(f"cannot read: {exc.strerror}", "cannot read file data") from None
    if len(head) < 64 or not head.startswith(ELFMAG):
        raise _not_elf(head, len(head))
    reader = _Reader(fd, size)
    try:
        return _read_facts(reader, head)
    except OSError as exc:
        raise CorruptError(f"cannot read: {exc.strerror}", "cannot read file data") from None
    except struct.error as exc:
        raise CorruptError(f"corrupt: {exc}") from None


def _read_facts(reader: _Reader, head: bytes) -> ElfFacts:
    header, layout = _parse_headers(reader, head)
    interp = None
    if layout.interp is not None:
        offset, size = layout.interp
        raw = reader.read(offset, min(size, 4096), "interpreter").split(b"\0", 1)[0]
        interp = raw.decode("utf-8", "surrogateescape")
    if header["e_type"] not in (ET_DYN, ET_EXEC):  # open_verify refuses it before mapping anything
        return ElfFacts(**header, interp=interp, dynamic=layout.dynamic is not None)
    problem = mapping_error(layout, reader.size)
    if problem is not None:
        return ElfFacts(**header, interp=interp, dynamic=layout.dynamic is not None, load_error=problem)
    try:
        return _mapped_facts(reader, header, layout, interp)
    except LoaderCrash as crash:
        return ElfFacts(**header, interp=interp, dynamic=layout.dynamic is not None, load_error=str(crash))
    except UnsupportedVersion as refused:
        return ElfFacts(**header, interp=interp, dynamic=True, load_error=str(refused))


def _zero_fill(reader: _Reader, layout: _Layout) -> None:
    """``_dl_map_segments`` clears the rest of each segment's last file page: past the end of the file, SIGBUS."""
    for seg in layout.segments:
        zero = seg.vaddr + seg.filesz
        if seg.memsz > seg.filesz and zero & (PAGE - 1) and seg.filesz:
            page = _down(seg.offset) + (_down(zero) - _down(seg.vaddr))
            if page >= _up(reader.size):
                raise LoaderCrash("SIGBUS", "the zero fill of a segment mapped past the end of the file")


def _dynamic_info_error(tags: dict[int, int], machine: int) -> Optional[str]:
    """The assertions of ``elf_get_dynamic_info`` (glibc ``elf/get-dynamic-info.h``) for this machine's relocations:
    a failed one is "Inconsistency detected by ld.so" and exit 127; a missing entry it dereferences, a SIGSEGV."""
    rela = {EM_X86_64: (DT_RELA, DT_RELAENT, 24), EM_386: (DT_REL, DT_RELENT, 8)}.get(machine)
    if rela is None:
        return None
    kind, entsize_tag, entsize = rela
    names = {DT_RELA: "DT_RELA", DT_REL: "DT_REL"}
    if DT_PLTREL in tags and tags[DT_PLTREL] != kind:
        return (f"Inconsistency detected by ld.so: get-dynamic-info.h: Assertion `info[DT_PLTREL]->d_un.d_val == "
                f"{names[kind]}' failed (exit 127)")
    if kind in tags:
        if entsize_tag not in tags:
            raise LoaderCrash("SIGSEGV", f"the missing {names[kind]}ENT entry")
        if tags[entsize_tag] != entsize:
            return (f"Inconsistency detected by ld.so: get-dynamic-info.h: Assertion `info[{names[kind]}ENT]->d_un."
                    f"d_val == sizeof (ElfW({names[kind][3:].capitalize()}))' failed (exit 127)")
    return None


def _hash_error(image: _Image, tags: dict[int, int], fmt: str) -> Optional[str]:
    """``_dl_setup_hash`` reads the hash table's header (glibc ``elf/dl-setup_hash.c``)."""
    if DT_GNU_HASH in tags:
        _nbuckets, _bias, nwords, _shift = struct.unpack(fmt + "IIII", image.read(tags[DT_GNU_HASH], 16,
                                                                                  "the GNU hash table"))
        if nwords & (nwords - 1):
            return ("Inconsistency detected by ld.so: dl-setup_hash.c: Assertion `(bitmask_nwords & "
                    "(bitmask_nwords - 1)) == 0' failed (exit 127)")
    elif DT_HASH in tags:
        image.read(tags[DT_HASH], 8, "the hash table")
    return None


def _mapped_facts(reader: _Reader, header: dict, layout: _Layout, interp: Optional[str]) -> ElfFacts:
    image = _Image(reader, layout.segments)
    _zero_fill(reader, layout)
    clobber = clobbers_neighbours(layout, reader.size)
    if clobber is not None:
        raise clobber
    if layout.dynamic is None:
        if header["e_type"] == ET_DYN:
            return ElfFacts(**header, interp=interp, load_error="object file has no dynamic section")
        return ElfFacts(**header, interp=interp)
    dynamic = _mapped_dynamic(image, layout)
    flags_1 = dynamic.tags.get(DT_FLAGS_1, 0)
    asserted = _dynamic_info_error(dynamic.tags, header["machine"])
    if asserted:
        return ElfFacts(**header, interp=interp, dynamic=True, flags_1=flags_1, load_error=asserted)
    try:
        return _named_facts(image, header, layout, interp, dynamic)
    except LoaderCrash as crash:  # after the DF_1_PIE check: a PIE is refused before this
        return ElfFacts(**header, interp=interp, dynamic=True, flags_1=flags_1, late_error=str(crash))


def _named_facts(image: _Image, header: dict, layout: _Layout, interp: Optional[str], dynamic: _Dynamic) -> ElfFacts:
    tags, needed_offsets, filter_offsets = dynamic.tags, list(dynamic.needed), list(dynamic.filters)
    flags_1 = tags.get(DT_FLAGS_1, 0)
    late = _hash_error(image, tags, layout.fmt)
    if late:
        return ElfFacts(**header, interp=interp, dynamic=True, flags_1=flags_1, late_error=late)
    if (DT_VERNEED in tags or DT_VERDEF in tags) and DT_VERSYM not in tags:
        raise LoaderCrash("SIGSEGV", "version tables without DT_VERSYM (_dl_check_map_versions)")
    strings_needed = needed_offsets or filter_offsets or any(
        t in tags for t in (DT_SONAME, DT_RPATH, DT_RUNPATH, DT_VERNEED, DT_VERDEF))
    if not strings_needed:
        return ElfFacts(**header, interp=interp, dynamic=True, flags_1=flags_1, has_tls=layout.tls is not None)
    if DT_STRTAB not in tags:
        raise LoaderCrash("SIGSEGV", "strings through a missing DT_STRTAB")
    strtab = tags[DT_STRTAB]

    def string(value: int, what: str, keep: int = PATH_MAX + 1) -> str:
        return image.cstring((strtab + value) % (1 << 64), what, keep)

    rpath = string(tags[DT_RPATH], "DT_RPATH", MAX_NAME_BYTES) if DT_RPATH in tags else None
    runpath = string(tags[DT_RUNPATH], "DT_RUNPATH", MAX_NAME_BYTES) if DT_RUNPATH in tags else None
    needed = tuple(dict.fromkeys(string(off, "a DT_NEEDED name") for off in needed_offsets))  # repeats: once
    if sum(map(len, needed)) > MAX_NAME_BYTES:
        raise TooLargeError(f"its {len(needed)} DT_NEEDED names take more than {MAX_NAME_BYTES >> 20} MB: not checked "
                            "(libdoctor's bound on one file)")
    verneed = (_version_needs(image, layout.fmt, string, tags[DT_VERNEED], tags.get(DT_VERNEEDNUM, 0))
               if DT_VERNEED in tags else ())
    try:
        verdef = (_version_defs(image, layout.fmt, string, tags[DT_VERDEF], tags.get(DT_VERDEFNUM, 0))
                  if DT_VERDEF in tags else ())
    except UnsupportedVersion:
        verdef = ()  # read only when another object needs one of its versions: that need then fails
    if DT_VERDEF in tags:
        _verdef_names_read(image, layout.fmt, tags[DT_VERDEF], verneed)
    return ElfFacts(
        **header,
        interp=interp,
        dynamic=True,
        soname=string(tags[DT_SONAME], "DT_SONAME") if DT_SONAME in tags else None,
        needed=needed,
        rpath=None if runpath is not None else rpath,
        runpath=runpath,
        rpath_ignored=rpath if runpath is not None else None,
        flags_1=flags_1,
        filters=tuple(string(off, "a filter name") for off in filter_offsets),
        version_needs=verneed,
        version_defs=verdef,
        has_verdef=DT_VERDEF in tags,
        has_versym=DT_VERSYM in tags,
        stack_flags=layout.stack_flags,
        has_tls=layout.tls is not None,
    )


@dataclass
class _Dynamic:
    """The dynamic entries as ``elf_get_dynamic_info`` keeps them: the last of each tag, and the name lists
    (each offset once: a repeated DT_NEEDED names an object already loaded)."""

    tags: dict[int, int] = field(default_factory=dict)
    needed: dict[int, None] = field(default_factory=dict)
    filters: dict[int, None] = field(default_factory=dict)


def _mapped_dynamic(image: _Image, layout: _Layout) -> _Dynamic:
    """Walk the dynamic section from PT_DYNAMIC's address up to DT_NULL, in bounded memory."""
    width = 16 if layout.elf_class == 64 else 8
    fmt = layout.fmt + ("qQ" if layout.elf_class == 64 else "iI")
    dynamic = _Dynamic()
    address, walked = layout.dynamic_vaddr, 0
    while walked < MAX_DYNAMIC_BYTES:
        block = image.read(address, (PAGE - (address & (PAGE - 1))) // width * width or width, "the dynamic section")
        for tag, value in struct.iter_unpack(fmt, block):
            if tag == DT_NULL:
                return dynamic
            if tag == DT_NEEDED:
                dynamic.needed[value] = None
                if len(dynamic.needed) > MAX_NEEDED:
                    raise TooLargeError(f"more than {MAX_NEEDED} distinct DT_NEEDED names: not checked "
                                        "(libdoctor's bound on one file)")
            elif tag in (DT_AUXILIARY, DT_FILTER):
                dynamic.filters[value] = None
            else:
                dynamic.tags[tag] = value  # a later entry of the same tag wins
        address += len(block)
        walked += len(block)
    raise TooLargeError(f"no DT_NULL in the first {MAX_DYNAMIC_BYTES >> 20} MB of the dynamic section: not checked")


def _version_needs(image: _Image, fmt: str, string, address: int, count: int  # noqa: ANN001
                   ) -> tuple[VersionNeed, ...]:
    """The Verneed list as ``_dl_check_map_versions`` walks it: the first record's version checked, then each
    record and its Vernaux entries followed by their ``next`` fields until 0 (``count`` is not used)."""
    needs: list[VersionNeed] = []
    version = struct.unpack(fmt + "H", image.read(address, 2, "a version need"))[0]
    if version != 1:
        raise UnsupportedVersion(f"unsupported version {version} of Verneed record")
    for _ in range(MAX_VERSION_ENTRIES):
        _version, cnt, file_off, aux, nxt = struct.unpack(fmt + "HHIII", image.read(address, 16, "a version need"))
        file_name = string(file_off, "a version need's file")
        apos = (address + aux) % (1 << 64)
        for _ in range(MAX_VERSION_ENTRIES):
            vhash, flags, other, name_off, anext = struct.unpack(fmt + "IHHII", image.read(apos, 16, "a version need"))
            needs.append(VersionNeed(file_name, string(name_off, "a version name"), vhash,
                                     bool(flags & VER_FLG_WEAK), other))
            if len(needs) > MAX_VERSION_ENTRIES:
                raise CorruptError("corrupt: too many version needs")
            if anext == 0:
                break
            apos = (apos + anext) % (1 << 64)
        if nxt == 0:
            return tuple(needs)
        address = (address + nxt) % (1 << 64)
    raise CorruptError("corrupt: the version need list never ends")


def _version_defs(image: _Image, fmt: str, string, address: int, count: int  # noqa: ANN001
                  ) -> tuple[VersionDef, ...]:
    """The Verdef list walked by ``vd_next`` until 0, as ``_dl_check_map_versions`` does (``count`` is not used);
    a record of another version is refused only when another object asks this one for a version."""
    defs: list[VersionDef] = []
    for _ in range(MAX_VERSION_ENTRIES):
        version, flags, index, cnt, vhash, aux, nxt = struct.unpack(fmt + "HHHHIII",
                                                                    image.read(address, 20, "a version definition"))
        if version != 1:
            raise UnsupportedVersion(f"unsupported version {version} of Verdef record")
        if cnt:
            try:
                name_off, _anext = struct.unpack(fmt + "II", image.read(address + aux, 8, "a version definition"))
                defs.append(VersionDef(string(name_off, "a version name"), vhash, flags, index))
            except LoaderCrash:
                pass  # its name is read only if a need's hash matches it
        if nxt == 0:
            return tuple(defs)
        address = (address + nxt) % (1 << 64)
    raise CorruptError("corrupt: the version definition list never ends")


def _verdef_records(image: _Image, fmt: str, address: int) -> Iterator[tuple[int, int, int, int]]:
    """The Verdef records as ``_dl_check_map_versions`` walks them, by ``vd_next`` until 0: (address, vd_flags,
    vd_ndx without its hidden bit, vd_aux)."""
    for _ in range(MAX_VERSION_ENTRIES):
        _version, flags, index, _cnt, _hash, aux, nxt = struct.unpack(
            fmt + "HHHHIII", image.read(address, 20, "a version definition"))
        yield address, flags, index & 0x7FFF, aux
        if nxt == 0:
            return
        address = (address + nxt) % (1 << 64)
    raise CorruptError("corrupt: the version definition list never ends")


def _verdef_names_read(image: _Image, fmt: str, address: int, needs: tuple[VersionNeed, ...]) -> None:
    """``_dl_check_map_versions``' second walk of the Verdef list, once ``l_versions`` exists (a version index
    above 0): each record but the base one has its ``Verdaux`` name read, whatever its ``vd_cnt`` or
    ``vd_version`` (raises the loader's SIGSEGV where that read faults)."""
    try:
        records = list(_verdef_records(image, fmt, address))
    except CorruptError:
        return  # never ends: the dependency facts already call it corrupt
    if not any(index for _at, _flags, index, _aux in records) and not any(n.index & 0x7FFF for n in needs):
        return  # ndx_high 0: no array, no second walk
    for at, flags, _index, aux in records:
        if not flags & VER_FLG_BASE:
            image.read((at + aux) % (1 << 64), 4, "a version definition's name")


def unreadable_version_names(image: _Image, fmt: str, tags: dict[int, int]) -> frozenset[int]:
    """The indexes of the version definitions (base one aside) whose names cannot be read to their NUL: the
    loader keeps a pointer to each name in ``l_versions`` and reads it only when ``check_match`` compares it."""
    out: set[int] = set()
    address, strtab = tags.get(DT_VERDEF), tags.get(DT_STRTAB)
    if address is None or strtab is None:
        return frozenset()
    try:
        for at, flags, index, aux in _verdef_records(image, fmt, address):
            if flags & VER_FLG_BASE:
                continue
            name_off, = struct.unpack(fmt + "I", image.read((at + aux) % (1 << 64), 4, "a version name"))
            try:
                image.cstring((strtab + name_off) % (1 << 64), "a version name")
            except LoaderCrash:
                out.add(index)
    except (LoaderCrash, CorruptError, struct.error):
        pass  # a walk that faults stops the loader earlier (the dependency facts say so)
    return frozenset(out)


def is_elf(path: str) -> bool:
    """Cheap check used when walking folders: does the file start with the ELF magic?"""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == ELFMAG
    except OSError:
        return False
