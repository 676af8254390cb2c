"""The dependency facts of one ELF file, read through its program headers.

The ELF and program headers are parsed with pyelftools' struct definitions (built once per
class and byte order).  The dynamic array, string reads and version tables are read with
``struct`` in a few bounded ``pread`` calls: only the bytes that hold dependency facts are
touched, so a 1 GB library costs a handful of small reads, and nothing relies on section
headers (section-stripped files work, as they do for the loader).
"""
from __future__ import annotations

import errno
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Optional

from ..errors import (
    CorruptError,
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
PF_X, PF_W = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_SYMTAB, DT_STRSZ, DT_SYMENT = 0, 1, 5, 6, 10, 11
DT_HASH, DT_SONAME, DT_RPATH, DT_RUNPATH, DT_FLAGS_1 = 4, 14, 15, 29, 0x6FFFFFFB
DT_AUXILIARY, DT_FILTER = 0x7FFFFFFD, 0x7FFFFFFF
DT_GNU_HASH, DT_VERSYM = 0x6FFFFEF5, 0x6FFFFFF0
DT_VERDEF, DT_VERDEFNUM, DT_VERNEED, DT_VERNEEDNUM = 0x6FFFFFFC, 0x6FFFFFFD, 0x6FFFFFFE, 0x6FFFFFFF
DF_1_NODEFLIB, DF_1_PIE = 0x800, 0x08000000
VER_FLG_BASE, VER_FLG_WEAK = 0x1, 0x2
ELFOSABI_SYSV, ELFOSABI_GNU = 0, 3
EV_CURRENT = 1

# Bounds that keep a corrupt file from costing unbounded time or memory.
MAX_DYNAMIC_BYTES = 4 << 20
MAX_STRING = 1 << 16
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

    @property
    def nodeflib(self) -> bool:
        return bool(self.flags_1 & DF_1_NODEFLIB)

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
    """The checks of ``open_verify`` (glibc ``elf/dl-load.c``), in its order."""
    if error is not None:
        if getattr(error, "loader_skips", False):
            return LoaderVerdict("skip", "wrong ELF class")
        return LoaderVerdict("fatal", error.loader_message)
    assert facts is not None
    if facts.elf_class != host.elf_class:
        return LoaderVerdict("skip", f"wrong ELF class: ELFCLASS{facts.elf_class}")
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
    if facts.machine != host.machine:
        return LoaderVerdict("skip", f"wrong machine (e_machine {facts.machine})")
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


_PT_NAMES = {"PT_LOAD": PT_LOAD, "PT_DYNAMIC": PT_DYNAMIC, "PT_INTERP": PT_INTERP}
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


@dataclass
class _Layout:
    """Where things are in one file: the parts of the ELF and program headers we use."""

    fmt: str  # "<" or ">"
    elf_class: int
    loads: list[tuple[int, int, int]] = field(default_factory=list)  # (vaddr, offset, filesz)
    dynamic: Optional[tuple[int, int]] = None  # (offset, filesz)
    interp: Optional[tuple[int, int]] = None
    readonly: list[tuple[int, int]] = field(default_factory=list)  # (offset, filesz) of r-- PT_LOAD segments

    def offset_of(self, vaddr: int, what: str) -> int:
        for start, offset, size in self.loads:
            if start <= vaddr < start + size:
                return vaddr - start + offset
        raise CorruptError(f"corrupt: {what} address {vaddr:#x} is in no loadable segment")


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
    layout = _Layout("<" if little else ">", elf_class)
    phnum, phentsize, phoff = int(ehdr["e_phnum"]), header["phentsize"], int(ehdr["e_phoff"])
    expected = 56 if elf_class == 64 else 32
    if phnum == 0:
        return header, layout
    if phentsize != expected or phnum > MAX_PHNUM:
        raise CorruptError(f"corrupt: program header table of {phnum} entries of {phentsize} bytes")
    table = reader.read(phoff, phnum * phentsize, "program header table")
    phdr = _phdr_struct(little, elf_class, ehdr["e_type"], ehdr["e_machine"], ident["EI_OSABI"])
    for i in range(phnum):
        ph = phdr.parse(table[i * phentsize:(i + 1) * phentsize])
        p_type = _PT_NAMES.get(ph["p_type"], ph["p_type"])
        if p_type == PT_LOAD:
            layout.loads.append((ph["p_vaddr"], ph["p_offset"], ph["p_filesz"]))
            if not int(ph["p_flags"]) & (PF_X | PF_W):
                layout.readonly.append((ph["p_offset"], ph["p_filesz"]))
        elif p_type == PT_DYNAMIC and layout.dynamic is None:
            layout.dynamic = (ph["p_offset"], ph["p_filesz"])
        elif p_type == PT_INTERP and layout.interp is None:
            layout.interp = (ph["p_offset"], ph["p_filesz"])
    return header, layout


def _dynamic_entries(reader: _Reader, layout: _Layout) -> list[tuple[int, int]]:
    offset, size = layout.dynamic  # type: ignore[misc]
    if size > MAX_DYNAMIC_BYTES:
        raise CorruptError(f"corrupt: dynamic segment of {size} bytes")
    entry = "q" if layout.elf_class == 64 else "i"
    unsigned = "Q" if layout.elf_class == 64 else "I"
    fmt = f"{layout.fmt}{entry}{unsigned}"
    width = struct.calcsize(fmt)
    data = reader.read(offset, size - size % width, "dynamic segment")
    entries = []
    for tag, value in struct.iter_unpack(fmt, data):
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    return entries


def _version_needs(reader: _Reader, layout: _Layout, strtab: int, addr: int, count: int) -> tuple[VersionNeed, ...]:
    fmt = layout.fmt
    pos = layout.offset_of(addr, "version needs")
    needs: list[VersionNeed] = []
    for _ in range(min(count, MAX_VERSION_ENTRIES)):
        _version, cnt, file_off, aux, nxt = struct.unpack(fmt + "HHIII", reader.read(pos, 16, "version need"))
        file_name = reader.cstring(strtab + file_off, "version need file")
        apos = pos + aux
        for _ in range(cnt):
            vhash, flags, other, name_off, anext = struct.unpack(fmt + "IHHII", reader.read(apos, 16, "version need aux"))
            needs.append(VersionNeed(file_name, reader.cstring(strtab + name_off, "version name"), vhash,
                                     bool(flags & VER_FLG_WEAK), other))
            if len(needs) > MAX_VERSION_ENTRIES:
                raise CorruptError("corrupt: too many version needs")
            if anext == 0:
                break
            apos += anext
        if nxt == 0:
            break
        pos += nxt
    return tuple(needs)


def _version_defs(reader: _Reader, layout: _Layout, strtab: int, addr: int, count: int) -> tuple[VersionDef, ...]:
    fmt = layout.fmt
    pos = layout.offset_of(addr, "version definitions")
    defs: list[VersionDef] = []
    for _ in range(min(count, MAX_VERSION_ENTRIES)):
        _version, flags, index, cnt, vhash, aux, nxt = struct.unpack(fmt + "HHHHIII", reader.read(pos, 20, "version definition"))
        if cnt:
            name_off, _anext = struct.unpack(fmt + "II", reader.read(pos + aux, 8, "version definition aux"))
            defs.append(VersionDef(reader.cstring(strtab + name_off, "version name"), vhash, flags, index))
        if nxt == 0:
            break
        pos += nxt
    return tuple(defs)


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


def read_regular(path: str, limit: int) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (a cache, a journal, a configuration), read without
    blocking; a FIFO, device or oversized file is an ``OSError`` like any unreadable one."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file: {path}")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit >> 20} MB: {path}")
        chunks, left = [], limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than {limit >> 20} MB: {path}")
        return data
    finally:
        os.close(fd)


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
        interp = reader.read(offset, min(size, 4096), "interpreter").split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
    if layout.dynamic is None:
        return ElfFacts(**header, interp=interp)
    entries = _dynamic_entries(reader, layout)
    tags: dict[int, int] = {}
    needed_offsets: list[int] = []
    filter_offsets: list[int] = []
    for tag, value in entries:
        if tag == DT_NEEDED:
            needed_offsets.append(value)
        elif tag in (DT_AUXILIARY, DT_FILTER):
            filter_offsets.append(value)
        else:
            tags.setdefault(tag, value)
    strings_needed = needed_offsets or filter_offsets or any(
        t in tags for t in (DT_SONAME, DT_RPATH, DT_RUNPATH, DT_VERNEED, DT_VERDEF))
    if not strings_needed:
        return ElfFacts(**header, interp=interp, dynamic=True, flags_1=tags.get(DT_FLAGS_1, 0))
    if DT_STRTAB not in tags:
        raise CorruptError("corrupt: dynamic segment has strings but no DT_STRTAB")
    strtab = layout.offset_of(tags[DT_STRTAB], "string table")

    def string(tag_value: int, what: str) -> str:
        return reader.cstring(strtab + tag_value, what)

    rpath = string(tags[DT_RPATH], "RPATH") if DT_RPATH in tags else None
    runpath = string(tags[DT_RUNPATH], "RUNPATH") if DT_RUNPATH in tags else None
    verneed = (_version_needs(reader, layout, strtab, tags[DT_VERNEED], tags.get(DT_VERNEEDNUM, 0))
               if DT_VERNEED in tags else ())
    verdef = (_version_defs(reader, layout, strtab, tags[DT_VERDEF], tags.get(DT_VERDEFNUM, 0))
              if DT_VERDEF in tags else ())
    return ElfFacts(
        **header,
        interp=interp,
        dynamic=True,
        soname=string(tags[DT_SONAME], "SONAME") if DT_SONAME in tags else None,
        needed=tuple(string(off, "DT_NEEDED") for off in needed_offsets),
        rpath=None if runpath is not None else rpath,
        runpath=runpath,
        rpath_ignored=rpath if runpath is not None else None,
        flags_1=tags.get(DT_FLAGS_1, 0),
        filters=tuple(string(off, "filter") for off in filter_offsets),
        version_needs=verneed,
        version_defs=verdef,
        has_verdef=DT_VERDEF in tags,
    )


def is_elf(path: str) -> bool:
    """Cheap check used when walking folders: does the file start with the ELF magic?"""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == ELFMAG
    except OSError:
        return False
