"""loader.relocation against the real loader: gcc-built libraries with one relocation fact damaged, each judged by
``ld.so`` in ``ldd -r``'s mode (``LD_TRACE_LOADED_OBJECTS=1 LD_WARN=yes``, with or without ``LD_BIND_NOW``) and by
libdoctor.  Found by ``benchmarks/mutation_sweep.py --bind`` (issue 21, item 11)."""
from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libdoctor.loader.binding import unbound_symbols
from libdoctor.errors import ElfError
from libdoctor.loader.relocation import _walk, relocate, relocation_error

from .conftest import loader_env, needs_gcc
from .test_loader_checks import dynamic_entries

pytestmark = needs_gcc
BODY = ("int g(void) { return 7; }\nint counter;\nint *where(void) { return &counter; }\n"
        "int h(void) { return g() + 1; }\n")


def _library(elf, name: str = "libdamaged.so") -> Path:
    """Relative relocations, GLOB_DAT against its own exported variable, JUMP_SLOT against its own function."""
    return elf.lib(f"lib/{name}", defines=[], body=BODY, extra=["-Wl,-z,relro", "-Wl,-z,lazy"])


def _entries(path: Path, section: str) -> list[tuple[int, int, int]]:
    """(file offset of the entry, r_offset, r_info) of each entry of ``section``."""
    with path.open("rb") as handle:
        found = ELFFile(handle).get_section_by_name(section)
        base = found["sh_offset"]
        data = found.data()
    return [(base + i, *struct.unpack_from("<QQ", data, i)) for i in range(0, len(data), 24)]


def _loader(judge, path: Path, bind_now: bool = True) -> subprocess.CompletedProcess:
    extra = {"LD_TRACE_LOADED_OBJECTS": "1", "LD_WARN": "yes"}
    if bind_now:
        extra["LD_BIND_NOW"] = "yes"
    return subprocess.run([judge.info.interpreter, str(path)], capture_output=True, text=True, timeout=30,
                          errors="replace", env=loader_env(extra), cwd=str(path.parent))


def _patch(path: Path, offset: int, fmt: str, value: int) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


def _first(path: Path, section: str, kind: int) -> tuple[int, int, int]:
    return next(e for e in _entries(path, section) if e[2] & 0xFFFFFFFF == kind)


def test_healthy_libraries_relocate(elf, judge):
    library = _library(elf)
    assert _loader(judge, library).returncode == 0
    for path in (library, Path("/usr/lib/x86_64-linux-gnu/libz.so.1"), Path(judge.info.interpreter)):
        if path.exists():
            assert relocation_error(str(path)) is None, path
    with library.open("rb") as handle:
        dynstr = ELFFile(handle).get_section_by_name(".dynstr")
        names = {dynstr.get_string(r.name_at) for r in relocate(str(library)).references}
    assert {"g", "counter"} <= names  # its own symbols, looked up through the scope as the loader does


def test_unknown_type_is_the_loaders_message(elf, judge):
    library = _library(elf)
    at, _offset, info = _first(library, ".rela.dyn", 6)  # GLOB_DAT
    _patch(library, at + 8, "<Q", (info & ~0xFFFFFFFF) | 0xFF)
    done = _loader(judge, library)
    assert done.returncode == 127 and "unexpected reloc type 0xff" in done.stderr, done.stderr
    assert relocation_error(str(library)) == "unexpected reloc type 0xff"


def test_unknown_plt_type_when_bound_lazily(elf, judge):
    library = _library(elf)
    at, _offset, info = _first(library, ".rela.plt", 7)  # JUMP_SLOT
    _patch(library, at + 8, "<Q", (info & ~0xFFFFFFFF) | 0x40)
    lazy = _loader(judge, library, bind_now=False)
    assert lazy.returncode == 127 and "unexpected PLT reloc type 0x40" in lazy.stderr, lazy.stderr
    assert relocation_error(str(library), lazy=True) == "unexpected PLT reloc type 0x40"
    now = _loader(judge, library)
    assert now.returncode == 127 and "unexpected reloc type 0x40" in now.stderr, now.stderr
    assert relocation_error(str(library)) == "unexpected reloc type 0x40"


def test_a_counted_relative_entry_of_another_type_fails_an_assertion(elf, judge):
    library = _library(elf)
    at, _offset, info = _first(library, ".rela.dyn", 8)  # the first R_X86_64_RELATIVE, within DT_RELACOUNT
    _patch(library, at + 8, "<Q", 6)
    done = _loader(judge, library)
    assert done.returncode == 127 and "Assertion" in done.stderr, done.stderr
    assert "Assertion" in relocation_error(str(library))


def test_a_write_into_read_only_text_crashes_the_loader(elf, judge):
    library = _library(elf)
    at, _offset, _info = _first(library, ".rela.dyn", 6)
    _patch(library, at, "<Q", 0x1000)  # the executable segment: mapped without write access
    assert _loader(judge, library).returncode == -11
    assert "SIGSEGV" in relocation_error(str(library))


def test_a_relro_range_outside_the_mapping_cannot_be_protected(elf, judge):
    library = _library(elf)
    data = bytearray(library.read_bytes())
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    relro = next(phoff + i * phentsize for i in range(phnum)
                 if struct.unpack_from("<I", data, phoff + i * phentsize)[0] == 0x6474E552)
    struct.pack_into("<Q", data, relro + 16, 0x70000F00)  # p_vaddr far past the reservation, across a page end
    library.write_bytes(bytes(data))
    root = elf.lib("lib/libroot.so", calls=["h"], link=[library], runpath="$ORIGIN")
    done = _loader(judge, root)  # a dependency: mapped by _dl_map_object, its RELRO protected after relocation
    assert done.returncode == 127 and "cannot apply additional memory protection" in done.stderr, done.stderr
    assert relocation_error(str(library)) == "cannot apply additional memory protection after relocation"


def test_an_own_symbol_its_hash_table_cannot_find_is_undefined(elf, judge):
    """The name of ``g`` damaged in .dynstr: the library still defines it, but the loader's lookup for its own
    JUMP_SLOT hashes the new name, finds nothing, and reports an undefined symbol."""
    library = _library(elf)
    with library.open("rb") as handle:
        dynstr = ELFFile(handle).get_section_by_name(".dynstr")
        at = dynstr["sh_offset"] + dynstr.data().index(b"\0g\0") + 1
    _patch(library, at, "<B", ord("q"))
    done = _loader(judge, library)
    assert "undefined symbol: q" in done.stdout + done.stderr, done.stdout + done.stderr
    scope = [o.realpath for o in judge.predict(str(library), str(library.parent)).objects]
    assert [u.name for u in unbound_symbols([str(library)], scope)] == ["q"]


def _versym_at(path: Path, name: str) -> int:
    """The file offset of ``name``'s entry in .gnu.version."""
    with path.open("rb") as handle:
        elffile = ELFFile(handle)
        index = next(i for i, sym in enumerate(elffile.get_section_by_name(".dynsym").iter_symbols())
                     if sym.name == name)
        return elffile.get_section_by_name(".gnu.version")["sh_offset"] + 2 * index


@pytest.mark.parametrize("index, crashes", [(3, False), (600, False), (30000, True)])
def test_a_version_index_past_the_version_entries(elf, judge, index, crashes):
    """``g``'s version index (its own JUMP_SLOT looks it up) moved past the 3 version entries: ``resolve_map``
    reads ``l_versions[index]`` from the loader's heap, which holds near the array and faults far past it."""
    library = elf.lib("lib/libversioned.so", defines=[], body=BODY, version_script={"V1": ["g", "h", "where",
                                                                                          "counter"]})
    _patch(library, _versym_at(library, "g"), "<H", index)
    done = _loader(judge, library)
    assert (done.returncode == -11) == crashes, (done.returncode, done.stderr)
    error = relocation_error(str(library))
    assert (error is not None and "SIGSEGV" in error) == crashes, error


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_damaged_relocation_tables_never_raise(elf, seed):
    """Byte flips in the relocation tables and the dynamic section: an answer, never an exception."""
    library = elf.root / "lib" / "libfuzzed.so"
    if not library.exists():
        _library(elf, "libfuzzed.so")
    original = library.read_bytes()
    spans = [(e[0], e[0] + 24) for section in (".rela.dyn", ".rela.plt") for e in _entries(library, section)]
    rng = random.Random(seed)
    data = bytearray(original)
    for _ in range(rng.choice((1, 2, 4))):
        start, end = rng.choice(spans)
        data[rng.randrange(start, end)] = rng.randrange(256)
    damaged = elf.root / "lib" / f"libcase{seed}.so"
    damaged.write_bytes(bytes(data))
    try:  # the walk itself, not the cached wrapper that turns bad input into "no answer"
        for lazy in (False, True):
            try:
                result = _walk(str(damaged), lazy)
            except ElfError:
                continue  # unreadable input: the dependency facts report it
            assert result.error is None or result.error.startswith(("unexpected", "the loader crashes",
                                                                   "Inconsistency", "cannot apply")), result.error
    finally:
        damaged.unlink()


def test_scan_names_the_damaged_file_as_one_cause(elf, tmp_path):
    """End to end: a library whose relocation stops the loader is a fatal cause of ``scan`` (exit 1), named."""
    library = _library(elf)
    at, _offset, info = _first(library, ".rela.dyn", 6)
    _patch(library, at + 8, "<Q", (info & ~0xFFFFFFFF) | 0xFF)
    root = elf.lib("lib/libroot.so", calls=["h"], link=[library], runpath="$ORIGIN")
    env = dict(os.environ, LIBDOCTOR_NO_VERDICT_CACHE="1", XDG_CACHE_HOME=str(tmp_path / "cache"), NO_COLOR="1")
    done = subprocess.run([sys.executable, "-m", "libdoctor", "scan", str(root)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout.startswith("not healthy") and f"{library}: unexpected reloc type 0xff" in done.stdout


def _undefined_lines(done: subprocess.CompletedProcess, name: str) -> list[str]:
    return [line.split("\t")[0] for line in (done.stdout + done.stderr).splitlines()
            if line.startswith(f"undefined symbol: {name},") or line == f"undefined symbol: {name}"]


@pytest.mark.parametrize("nodes, neighbour", [(1, False), (2, False), (1, True), (2, True)])
def test_a_version_index_past_the_table_reads_the_next_objects_versions(elf, judge, nodes, neighbour):
    """``strlen``'s version index moved 0-59 entries past the library's own ``l_versions`` (an even and an odd
    count of entries, with and without a library of an odd count loaded next): at process start the loader reads
    the arrays of the objects loaded after it (libc's, then its own), 24-byte entries in 16-byte aligned blocks: a
    real entry asks for another version, a mis-aligned one for none that exists (printing a file name or nothing)
    or crashes printing its name.  Each as ``ld.so`` says."""
    script = {f"V{n}": ["h2"] if n == 1 else [] for n in range(1, nodes + 1)}
    library = elf.lib(f"lib/libpast{nodes}.so", defines=[], version_script=script,
                      body="#include <string.h>\nunsigned long h2(const char *s) { return strlen(s); }\n",
                      extra=["-fno-builtin"])
    link = [library]
    if neighbour:  # loaded next, with an odd count of entries: libc's array then starts 8 bytes later
        link.append(elf.lib("lib/libodd.so", defines=["odd"], version_script={"V1": ["odd"]}))
    root = elf.lib(f"lib/libroot{nodes}{neighbour}.so", calls=["h2", "odd"] if neighbour else ["h2"], link=link,
                   runpath="$ORIGIN")
    with library.open("rb") as handle:
        elffile = ELFFile(handle)
        own = 1 + max([v.entry["vd_ndx"] for v, _aux in elffile.get_section_by_name(".gnu.version_d").iter_versions()]
                      + [a.entry["vna_other"] for _v, auxes in elffile.get_section_by_name(".gnu.version_r")
                         .iter_versions() for a in auxes])
    at = _versym_at(library, "strlen")
    original = library.read_bytes()
    seen = set()
    for past in range(60):
        library.write_bytes(original)
        _patch(library, at, "<H", own + past)
        done = _loader(judge, root)
        loader_says = "crash" if done.returncode == -11 else (_undefined_lines(done, "strlen") or ["ok"])[0]
        scope = [o.realpath for o in judge.predict(str(root), str(root.parent)).objects]
        mine = [u for u in unbound_symbols([str(library)], scope) if u.name == "strlen"]
        mine_says = "ok" if not mine else "crash" if mine[0].crashes else mine[0].message.split(" (required")[0]
        assert mine_says == loader_says, (past, mine_says, loader_says)
        seen.add(loader_says.split(",")[0] if loader_says.startswith("undefined") else loader_says)
    assert {"ok", "undefined symbol: strlen"} <= seen, seen  # found, and asked for a version libc lacks
    if nodes == 2 and neighbour:  # mis-aligned by 8 bytes in the loader's array: a hash printed as a name
        assert "crash" in seen, seen


@pytest.mark.parametrize("record, crashes", [(0, False), (1, True)])
def test_a_version_name_that_cannot_be_read_is_read_when_a_lookup_compares_it(elf, judge, record, crashes):
    """V1's name moved 1 GB past the string table: ``l_versions`` keeps the pointer unread, but the library's own
    lookup of ``g`` (its JUMP_SLOT, version V1) reaches ``check_match``, which compares the version names: SIGSEGV.
    The base record's name is never kept, so the same damage there is harmless.  The consumer has no version need
    on V1 (linked against an unversioned stand-in), so only the lookup reads the name."""
    library = elf.lib("lib/libnamed.so", defines=[], body=BODY, version_script={"V1": ["g", "h", "where",
                                                                                     "counter"]})
    root = elf.lib("lib/libroot.so", calls=["h"], runpath="$ORIGIN",
                   link=[elf.stub("libnamed.so", defines=["h"])])
    with library.open("rb") as handle:
        at = ELFFile(handle).get_section_by_name(".gnu.version_d")["sh_offset"]
    data = bytearray(library.read_bytes())
    for _ in range(record):
        at += struct.unpack_from("<I", data, at + 16)[0]  # vd_next
    aux = at + struct.unpack_from("<I", data, at + 12)[0]
    struct.pack_into("<I", data, aux, 1 << 30)  # vda_name
    library.write_bytes(bytes(data))
    done = _loader(judge, root)
    assert (done.returncode == -11) == crashes, (done.returncode, done.stdout + done.stderr)
    error = relocation_error(str(library))
    assert (error is not None and "SIGSEGV" in error) == crashes, error


@settings(max_examples=200, deadline=None)
@given(spans=st.lists(st.tuples(st.integers(0, 40), st.integers(1, 12), st.booleans()), min_size=1, max_size=5),
       offsets=st.lists(st.integers(0, 60 * 4096), min_size=1, max_size=40), width=st.sampled_from([4, 8, 16]))
def test_the_whole_table_check_agrees_with_the_entry_by_entry_one(spans, offsets, width):
    """The fast path (one sort, then one range or a bisect per writable range: lld's RELRO and .data segments
    side by side) says yes exactly when every single write is allowed, for any segments, overlaps and holes."""
    from array import array

    from libdoctor.loader.elffacts import PF_R, PF_W, Segment, _Layout
    from libdoctor.loader.relocation import _Writable

    segments = [Segment(page * 4096, page * 4096, pages * 4096, pages * 4096, PF_R | (PF_W if writable else 0))
                for page, pages, writable in spans]
    writable = _Writable(_Layout("<", 64, segments=segments), textrel=False)
    words = array("Q", offsets)
    assert writable.all_written(words, width) == all(writable.allows(o, width) for o in offsets)


@pytest.mark.parametrize("bloom, crashes", [(0xFFFFFFFFFFFFFFFF, True), (0, False)])
def test_a_lookup_through_a_damaged_hash_chain_faults_in_whichever_object_asks(elf, judge, bloom, crashes):
    """The library's buckets all point 4 GB past its chains.  With the bloom filter letting every name through,
    the first lookup that passes it (libc relocating its own symbols walks this library first: it comes earlier
    in the scope) reads the chain outside the mapped pages: SIGSEGV.  With a bloom filter of zeros no lookup
    reaches the chains: the library's own symbols are simply not found."""
    library = _library(elf, "libchained.so")
    root = elf.lib("lib/libroot.so", calls=["h"], link=[library], runpath="$ORIGIN")
    with library.open("rb") as handle:
        at = ELFFile(handle).get_section_by_name(".gnu.hash")["sh_offset"]
    data = bytearray(library.read_bytes())
    nbuckets, _symoffset, nwords, _shift = struct.unpack_from("<IIII", data, at)
    for word in range(nwords):
        struct.pack_into("<Q", data, at + 16 + 8 * word, bloom)
    for bucket in range(nbuckets):
        struct.pack_into("<I", data, at + 16 + 8 * nwords + 4 * bucket, 1 << 30)
    library.write_bytes(bytes(data))
    done = _loader(judge, root)
    assert (done.returncode == -11) == crashes, (done.returncode, done.stdout + done.stderr)
    scope = [o.realpath for o in judge.predict(str(root), str(root.parent)).objects]
    unbound = unbound_symbols(scope, scope)
    faults = [u for u in unbound if u.faulting_table]
    assert bool(faults) == crashes, [u.message for u in unbound]
    if crashes:
        assert faults[0].faulting_table == str(library) and "SIGSEGV" in faults[0].message
        env = dict(os.environ, LIBDOCTOR_NO_VERDICT_CACHE="1", XDG_CACHE_HOME=str(library.parent / "cache"),
                   NO_COLOR="1")
        scan = subprocess.run([sys.executable, "-m", "libdoctor", "scan", str(root)], capture_output=True, text=True,
                              timeout=120, env=env)
        assert scan.returncode == 1 and "the loader crashes (SIGSEGV) looking up" in scan.stdout, scan.stdout
        assert f"in {library}: its hash table" in scan.stdout and "the file is damaged" in scan.stdout
    else:
        assert "undefined symbol: h" in done.stdout + done.stderr and any(u.name == "h" for u in unbound)


def test_a_chain_leading_into_the_objects_above_ends_there_without_a_fault(elf, judge):
    """The buckets point the chains 4 KB above the library's reservation: the loader's heap block and the object
    loaded before it lie there, and the walk ends at their first odd word without a fault (the symbols are
    simply not found); libdoctor used to read zeros there until its window ran out and call it a crash."""
    library = _library(elf, "libabove.so")
    root = elf.lib("lib/libroot.so", calls=["h"], link=[library], runpath="$ORIGIN")
    with library.open("rb") as handle:
        elffile = ELFFile(handle)
        section = elffile.get_section_by_name(".gnu.hash")
        at, address = section["sh_offset"], section["sh_addr"]
        end = max(s["p_vaddr"] + s["p_memsz"] for s in elffile.iter_segments() if s["p_type"] == "PT_LOAD")
    data = bytearray(library.read_bytes())
    nbuckets, symoffset, nwords, _shift = struct.unpack_from("<IIII", data, at)
    chain_zero = address + 16 + 8 * nwords + 4 * nbuckets - 4 * symoffset
    bucket = (((end + 0xFFF) & ~0xFFF) + 0x1000 - chain_zero) // 4
    for word in range(nwords):
        struct.pack_into("<Q", data, at + 16 + 8 * word, 0xFFFFFFFFFFFFFFFF)
    for index in range(nbuckets):
        struct.pack_into("<I", data, at + 16 + 8 * nwords + 4 * index, bucket)
    library.write_bytes(bytes(data))
    done = _loader(judge, root)
    assert done.returncode == 0 and "undefined symbol: h" in done.stdout + done.stderr, done.stdout + done.stderr
    scope = [o.realpath for o in judge.predict(str(root), str(root.parent)).objects]
    unbound = unbound_symbols(scope, scope)
    assert not [u for u in unbound if u.faulting_table] and any(u.name == "h" for u in unbound), unbound


def test_a_relative_count_that_wraps_the_address_space_counts_what_its_bytes_cover(elf, judge):
    """DT_RELACOUNT raised by 2**62: the loader scales it to a pointer (``relative + nrelative``, 24 bytes
    each), whose bytes wrap at 2**64 back to the same entries: the library loads.  libdoctor used to walk 2**62
    entries, ran past the table and predicted the assertion."""
    library = _library(elf)
    data = bytearray(library.read_bytes())
    at, entries = dynamic_entries(bytes(data))
    index = next(i for i, (tag, _value) in enumerate(entries) if tag == 0x6FFFFFF9)  # DT_RELACOUNT
    struct.pack_into("<qQ", data, at + 16 * index, 0x6FFFFFF9, entries[index][1] + (1 << 62))
    library.write_bytes(bytes(data))
    done = _loader(judge, library)
    assert done.returncode == 0, done.stdout + done.stderr
    assert relocation_error(str(library)) is None


def test_a_table_without_a_gnu_hash_leaves_no_file_open(elf):
    """open_walker answers None for a library with only DT_HASH, and closes what it opened (it used to leak one
    descriptor per call on that path: the daemon runs for weeks)."""
    from libdoctor.loader.lookupfaults import open_walker

    library = elf.lib("lib/libsysv.so", defines=["f"], extra=["-Wl,--hash-style=sysv"])
    before = len(os.listdir("/proc/self/fd"))
    assert all(open_walker(str(library)) is None for _ in range(20))
    assert len(os.listdir("/proc/self/fd")) == before
