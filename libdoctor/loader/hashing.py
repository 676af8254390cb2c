"""The arithmetic of a symbol lookup (glibc ``elf/dl-lookup.c``): the two ELF hash functions and the rules by
which ``check_match`` lets a symbol answer a lookup, shared by :mod:`.binding`, :mod:`.lookupfaults` and
:mod:`.versionheap`."""
from __future__ import annotations

STT_TLS, STT_GNU_IFUNC = 6, 10
ALLOWED_TYPES = frozenset({0, 1, 2, 5, STT_TLS, STT_GNU_IFUNC})  # NOTYPE OBJECT FUNC COMMON TLS IFUNC
SHN_UNDEF, SHN_ABS = 0, 0xFFF1


def gnu_hash(name: bytes) -> int:
    """``dl_new_hash``: DT_GNU_HASH's hash."""
    value = 5381
    for byte in name:
        value = value * 33 + byte  # reduced once at the end: the same value modulo 2**32, fewer operations
    return value & 0xFFFFFFFF


def sysv_hash(name: bytes) -> int:
    """``_dl_elf_hash``: DT_HASH's hash, and the one ``vd_hash`` and ``vna_hash`` hold."""
    value = 0
    for byte in name:
        value = (value << 4) + byte
        high = value & 0xF0000000
        if high:
            value ^= high >> 24
        value &= ~high & 0xFFFFFFFF
    return value


def may_answer(info: int, shndx: int, value: int) -> bool:
    """``check_match``'s first tests: a symbol with a value (or absolute, or TLS), defined, of an allowed type."""
    kind = info & 0xF
    return not (value == 0 and shndx != SHN_ABS and kind != STT_TLS) and shndx != SHN_UNDEF and kind in ALLOWED_TYPES
