"""What ``l_versions[index]`` reads when a symbol's version index lies past its object's own array.

``_dl_check_map_versions`` (glibc 2.36 ``elf/dl-version.c``) gives each object with version tables an array
of ``ndx_high + 1`` ``struct r_found_version`` (name pointer, 32-bit hash, 32-bit hidden flag, file name
pointer: 24 bytes), calloc'd in the order of the objects' chain (``_dl_check_all_versions``: the main object,
the vDSO, then the libraries as they were loaded, the loader where it was placed).  At process start that
calloc is rtld's bump allocator (``elf/dl-minimal-malloc.c``: 16-byte aligned, nothing between two arrays),
so an index past one array reads the arrays of the objects that follow it, mis-aligned by whole 8-byte words
(measured with gdb on glibc 2.36: libuuid's index 9 read the word after libc's first entries).  After the
last array comes ``init_tls``'s calloc (``elf/rtld.c``): the TLS slot list (its length, ``TLS_SLOTINFO_SURPLUS``
62 more than the modules with TLS, a null next pointer, then a generation and a link map pointer per module).

``resolve_map`` (``elf/dl-reloc.c``) then looks the symbol up unversioned when the hash it reads is 0;
otherwise with that "version": a real entry of another object asks for that object's version name; a word
that is not a hash (a pointer's low half) matches nothing that has version tables (its hidden half is not 0:
exact match only), and when the symbol stays undefined the loader prints the name word as a string: a name
or file pointer prints that string, a hash word as a pointer crashes the loader (``_dl_exception_create_format``).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

from .elffacts import VER_FLG_BASE, ElfFacts
from .hashing import sysv_hash

VDSO_VERSIONS = ("LINUX_2.6",)  # the x86-64 vDSO's version node (Linux arch/x86/entry/vdso/vdso.lds.S)
WORDS_PER_ENTRY = 3  # name, hash | hidden << 32, file name
TLS_SLOTINFO_SURPLUS = 62  # glibc sysdeps/generic/ldsodefs.h
LINK_MAP = ""  # a pointer to a link map: printed as a string it is empty (l_addr's low byte is 0)

NO_VERSION = "\0"  # a version name no node has (names from files end at their NUL): matches nothing
Word = Union[int, str]  # a number (0, or a hash word) or a pointer to the string it names


def version_count(facts: ElfFacts) -> int:
    """``l_nversions``: ``ndx_high + 1``, or 0 where the object has no version tables (nothing allocated)."""
    high = max([n.index & 0x7FFF for n in facts.version_needs] + [d.index & 0x7FFF for d in facts.version_defs],
               default=0)
    return high + 1 if high else 0


def _padded(words: list[Word]) -> list[Word]:
    return words + [0] if len(words) % 2 else words  # the next allocation starts 16-byte aligned


def table_words(facts: ElfFacts) -> list[Word]:
    """One object's array as the loader fills it (needs first, then definitions; the base one stays empty)."""
    count = version_count(facts)
    entries: list[list[Word]] = [[0, 0, 0] for _ in range(count)]
    for need in facts.version_needs:
        hidden = need.index & 0x8000
        entries[need.index & 0x7FFF] = [need.name, need.hash | hidden << 32, need.file]
    for definition in facts.version_defs:
        if not definition.flags & VER_FLG_BASE:
            entry = entries[definition.index & 0x7FFF]
            hidden = int(entry[1]) >> 32 if isinstance(entry[1], int) else 0
            entries[definition.index & 0x7FFF] = [definition.name, definition.hash | hidden << 32, 0]
    return _padded([word for entry in entries for word in entry])


def vdso_words() -> list[Word]:
    words: list[Word] = [0] * (2 * WORDS_PER_ENTRY)
    for name in VDSO_VERSIONS:
        words += [name, sysv_hash(name.encode()), 0]
    return _padded(words)


@dataclass(frozen=True)
class HeapVersion:
    """The version a lookup asks for: ``plain`` (hash 0: unversioned), ``entry`` (another object's version
    ``name``), or ``garbage`` (a hash nothing with version tables matches; ``name`` is what the loader prints,
    ``crashes``: printing it faults)."""

    kind: str
    name: Optional[str] = None
    crashes: bool = False
    exact: bool = False  # the hidden half is set: no unversioned definition will do


PLAIN = HeapVersion("plain")


def slotinfo_words(tls_modules: int) -> list[Word]:
    """``init_tls``'s slot list: length, next, then (generation 0, link map) per module with TLS."""
    words: list[Word] = [tls_modules + 1 + TLS_SLOTINFO_SURPLUS, 0]
    return words + [0, LINK_MAP] * tls_modules


def heap_after(own: ElfFacts, following: Sequence[Optional[ElfFacts]], vdso_next: bool,
               tls_modules: int) -> list[Word]:
    """The loader's heap from the end of ``own``'s ``l_versions``: ``following`` are the objects after it in the
    chain (None: no tables, e.g. not found); ``vdso_next``: ``own`` is the main object, the vDSO's array comes
    next; ``tls_modules``: the objects of the whole chain with TLS.  Further on it reads as zeros (relocation's
    window bounds how far)."""
    stream: list[Word] = [0] if (WORDS_PER_ENTRY * version_count(own)) % 2 else []
    if vdso_next:
        stream += vdso_words()
    for facts in following:
        if facts is not None and version_count(facts):
            stream += table_words(facts)
    return stream + slotinfo_words(tls_modules)


def version_past(heap: list[Word], past: int) -> HeapVersion:
    """What ``l_versions[count + past]`` reads from ``heap`` (:func:`heap_after`)."""
    at = WORDS_PER_ENTRY * past
    name, hash_word, _file = (heap[at:at + WORDS_PER_ENTRY] + [0, 0, 0])[:WORDS_PER_ENTRY]
    if isinstance(hash_word, int):
        if hash_word & 0xFFFFFFFF == 0:
            return PLAIN
        return HeapVersion("entry", name if isinstance(name, str) else None, exact=bool(hash_word >> 32))
    if isinstance(name, int):
        return HeapVersion("garbage", "", crashes=name != 0, exact=True)
    return HeapVersion("garbage", name, exact=True)
