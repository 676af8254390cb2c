"""Where a symbol lookup faults inside one object's damaged GNU hash table, as ``do_lookup_x`` reads it.

Every lookup of a name that no earlier object of the scope defines walks this object's tables through its
mapped pages (glibc 2.36 ``elf/dl-lookup.c``): the bloom word ``(hash / 64) & (nwords - 1)``, the bucket
``hash % nbuckets``, then the chain from that bucket until an entry with its low bit set; an entry whose
hash matches has its symbol read (``check_match``: value, section, type) and, if it may define the name,
its name compared.  A damaged table sends these reads outside the mapped pages and the loader faults while
relocating some other object.  :func:`open_walker` answers for one file; binding decides which names reach it.
"""
from __future__ import annotations

import os
import struct
from typing import Optional

from ..errors import ElfError
from .elffacts import (
    NEIGHBOURS,
    DT_GNU_HASH,
    DT_STRTAB,
    DT_SYMTAB,
    LoaderCrash,
    _dynamic_entries,
    _Image,
    _parse_headers,
    _Reader,
    _up,
    open_regular,
)
from .hashing import may_answer

MAX_CHAIN = 1 << 20  # entries one walk reads at most (a chain with no end bit runs until memory ends)
FAULT, FOUND, ABSENT = "fault", "found", "absent"


class HashWalker:
    """One object's GNU hash lookup, read through its mapped image."""

    def __init__(self, image: _Image, header: tuple[int, int, int, int], at: int, symtab: int, strtab: int,
                 reserved_end: int = 1 << 64):
        self.image = image
        self.reserved_end = reserved_end  # above it lie other objects, of unknown content (elffacts.NEIGHBOURS)
        self.nbuckets, self.symoffset, self.nwords, self.shift = header
        self.bloom_at = at + 16
        self.buckets_at = self.bloom_at + 8 * self.nwords
        self.chain_zero = self.buckets_at + 4 * self.nbuckets - 4 * self.symoffset
        self.symtab, self.strtab = symtab, strtab
        self.fd: Optional[int] = None

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def _word(self, address: int, fmt: str, size: int) -> int:
        return struct.unpack(fmt, self.image.read(address % (1 << 64), size, "the GNU hash table"))[0]

    def lookup(self, name: bytes, value: int) -> str:
        """Looking ``name`` (GNU hash ``value``) up here: FAULT, FOUND or ABSENT."""
        try:
            return self._walk(name, value)
        except (LoaderCrash, struct.error):
            return FAULT

    def _walk(self, name: bytes, value: int) -> str:
        if self.nbuckets == 0:
            return ABSENT  # do_lookup_x skips an object without buckets
        index_bits = (self.nwords - 1) % (1 << 32)  # l_gnu_bitmask_idxbits, a 32-bit word
        word = self._word(self.bloom_at + 8 * ((value // 64) & index_bits), "<Q", 8)
        if not (word >> (value & 63)) & (word >> ((value >> (self.shift & 31)) & 63)) & 1:  # a 32-bit shift
            return ABSENT
        bucket = self._word(self.buckets_at + 4 * (value % self.nbuckets), "<I", 4)
        if bucket == 0:
            return ABSENT
        for index in range(bucket, bucket + MAX_CHAIN):
            at = (self.chain_zero + 4 * index) % (1 << 64)
            if self.reserved_end <= at < self.reserved_end + NEIGHBOURS:
                return ABSENT  # the other objects' bytes: an odd word ends the chain soon, a match is chance
            entry = self._word(at, "<I", 4)
            if (entry ^ value) >> 1 == 0 and self._matches(index, name):
                return FOUND
            if entry & 1:
                return ABSENT
        return ABSENT

    def _matches(self, index: int, name: bytes) -> bool:
        name_at, info, _other, shndx, value = struct.unpack(
            "<IBBHQ", self.image.read((self.symtab + 24 * index) % (1 << 64), 16, "a symbol"))
        if not may_answer(info, shndx, value):
            return False
        at = (self.strtab + name_at) % (1 << 64)
        return self.image.read(at, min(len(name) + 1, max(1, self.image.run(at))), "a symbol name") == name + b"\0"


def open_walker(path: str) -> Optional[HashWalker]:
    """The lookup of the file at ``path``, its file open until :meth:`HashWalker.close`; None where it has no GNU
    hash table the loader could set up."""
    try:
        fd = open_regular(path)
    except (ElfError, OSError):
        return None
    walker = None
    try:
        walker = _walker(fd)
        return walker
    except (ElfError, LoaderCrash, OSError, struct.error, ValueError):
        return None  # a table the loader cannot even set up is the dependency facts' finding
    finally:
        if walker is None:
            os.close(fd)


def _walker(fd: int) -> Optional[HashWalker]:
    reader = _Reader(fd, os.fstat(fd).st_size)
    _header, layout = _parse_headers(reader, os.pread(fd, 4096, 0))
    if layout.elf_class != 64 or layout.fmt != "<" or not layout.segments or layout.dynamic is None:
        return None
    tags = dict(_dynamic_entries(reader, layout))
    if DT_GNU_HASH not in tags or DT_SYMTAB not in tags or DT_STRTAB not in tags:
        return None
    image = _Image(reader, layout.segments)
    at = tags[DT_GNU_HASH]
    header = struct.unpack("<IIII", image.read(at, 16, "the GNU hash table"))
    reserved_end = _up(layout.segments[-1].vaddr + layout.segments[-1].memsz)
    walker = HashWalker(image, header, at, tags[DT_SYMTAB], tags[DT_STRTAB], reserved_end)
    walker.fd = fd
    return walker
