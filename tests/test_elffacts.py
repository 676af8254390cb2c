"""ELF facts agree with readelf; bad input raises libdoctor's own errors with one-line messages."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from libdoctor.errors import ElfError, LdScriptError, NotElfError, TruncatedError
from libdoctor.loader.elffacts import read_elf_facts

from .conftest import ElfFactory

READELF = shutil.which("readelf")
needs_readelf = pytest.mark.skipif(READELF is None, reason="readelf is not installed")


def readelf_facts(path: Path) -> dict:
    dyn = subprocess.run([READELF, "-dW", str(path)], capture_output=True, text=True).stdout
    ver = subprocess.run([READELF, "-VW", str(path)], capture_output=True, text=True).stdout
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.*)\]", dyn)
    soname = re.findall(r"\(SONAME\)\s+Library soname: \[(.*)\]", dyn)
    runpath = re.findall(r"\(RUNPATH\)\s+Library runpath: \[(.*)\]", dyn)
    rpath = re.findall(r"\(RPATH\)\s+Library rpath: \[(.*)\]", dyn)
    needs = []
    section = ver.split("Version needs section", 1)[1] if "Version needs section" in ver else ""
    current = None
    for line in section.splitlines():
        m = re.search(r"File: (\S+)", line)
        if m:
            current = m.group(1)
        m = re.search(r"Name: (\S+)\s+Flags: (\S+)", line)
        if m and current:
            needs.append((current, m.group(1), "WEAK" in m.group(2)))
    defs = re.findall(r"Rev: \d+\s+Flags: \S+.*?Index: \d+\s+Cnt: \d+\s+Name: (\S+)",
                      ver.split("Version definition section", 1)[1].split("Version needs section", 1)[0], re.S) \
        if "Version definition section" in ver else []
    return {"needed": tuple(needed), "soname": soname[0] if soname else None,
            "runpath": runpath[0] if runpath else None, "rpath": rpath[0] if rpath else None,
            "needs": needs, "defs": defs}


def assert_same(path: Path) -> None:
    facts = read_elf_facts(str(path))
    truth = readelf_facts(path)
    assert facts.needed == truth["needed"]
    assert facts.soname == truth["soname"]
    assert facts.runpath == truth["runpath"]
    assert (facts.rpath or facts.rpath_ignored) == truth["rpath"]
    assert [(n.file, n.name, n.weak) for n in facts.version_needs] == truth["needs"]
    assert [d.name for d in facts.version_defs] == truth["defs"]


@needs_readelf
def test_real_libraries_agree_with_readelf() -> None:
    paths = [p for p in ("/usr/local/cuda-13.0/lib/libcupti.so.13", "/usr/local/cuda-13.0/lib/libcudart.so.13",
                         "/bin/ls", "/lib/x86_64-linux-gnu/libc.so.6") if os.path.exists(p)]
    if not paths:
        pytest.skip("no reference libraries on this machine")
    for path in paths:
        assert_same(Path(os.path.realpath(path)))


@needs_readelf
def test_fixture_with_versions_rpath_and_section_headers_removed(elf: ElfFactory, tmp_path: Path) -> None:
    stub = elf.stub("libv.so.1", defines=["v"], version_script={"V_1": ["v"]})
    lib = elf.lib("out/libuser.so.3", calls=["v"], link=[stub], runpath="$ORIGIN/../lib:/opt/x",
                  version_script={"USER_1": ["f"], "USER_2": []})
    assert_same(lib)
    facts = read_elf_facts(str(lib))
    data = bytearray(lib.read_bytes())
    data[0x28:0x30] = bytes(8)  # e_shoff
    data[0x3C:0x40] = bytes(4)  # e_shnum, e_shstrndx
    stripped = tmp_path / "stripped.so"
    stripped.write_bytes(bytes(data))
    assert read_elf_facts(str(stripped)) == facts  # only program headers are used


@pytest.mark.parametrize("content,error,words", [
    (b"", NotElfError, "0 bytes"),
    (b"hello world, not a library at all" * 4, NotElfError, "not an ELF file"),
    (b"/* GNU ld script */\nGROUP ( /lib/libc.so.6 libc_nonshared.a AS_NEEDED ( /lib/ld.so ) )\n",
     LdScriptError, "/lib/libc.so.6"),
    (b"\x7fELF\x02\x01\x01" + bytes(20), TruncatedError, "truncated"),
])
def test_bad_input_gives_one_line_errors(tmp_path: Path, content: bytes, error: type, words: str) -> None:
    path = tmp_path / "libbad.so"
    path.write_bytes(content)
    with pytest.raises(error) as raised:
        read_elf_facts(str(path))
    assert words in str(raised.value) and "\n" not in str(raised.value)


def test_truncated_real_library_is_an_elf_error(elf: ElfFactory, tmp_path: Path) -> None:
    lib = elf.lib("libcut.so.1")
    data = lib.read_bytes()
    for size in (64, 200, len(data) // 2):
        cut = tmp_path / f"cut{size}.so"
        cut.write_bytes(data[:size])
        try:
            facts = read_elf_facts(str(cut))
        except ElfError:
            continue
        assert facts.load_error and "SIGBUS" in facts.load_error  # segments mapped past the end of the file
