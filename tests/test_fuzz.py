"""Hypothesis fuzzes the parsers: only libdoctor's own errors, bounded time, bounded reads."""
from __future__ import annotations

import os
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libdoctor.errors import ElfError
from libdoctor.loader.elffacts import read_elf_facts
from libdoctor.loader.environment import split_search_path
from libdoctor.loader.ldcache import CacheError, parse_ld_cache
from libdoctor.loader.searchpath import expand_dst
from libdoctor.loader.symbols import probable_dlopen_names

SETTINGS = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _reference_elf() -> bytes:
    for path in ("/usr/local/cuda-13.0/lib/libcudart.so.13", "/lib/x86_64-linux-gnu/libz.so.1", "/bin/true"):
        real = os.path.realpath(path)
        if os.path.exists(real) and os.path.getsize(real) < 8 << 20:
            with open(real, "rb") as handle:
                return handle.read()
    pytest.skip("no reference ELF file")


REFERENCE = None


def reference() -> bytes:
    global REFERENCE
    if REFERENCE is None:
        REFERENCE = _reference_elf()
    return REFERENCE


def check_bytes(data: bytes) -> None:
    with tempfile.NamedTemporaryFile(suffix=".so") as handle:
        handle.write(data)
        handle.flush()
        try:
            names = probable_dlopen_names(handle.name)  # section headers, .dynstr, string sections: never trusted
        except ElfError as exc:
            assert "\n" not in str(exc) and str(exc)
        else:
            assert all(n.startswith("lib") and ".so" in n for n in names)
        try:
            facts = read_elf_facts(handle.name)
        except ElfError as exc:
            assert "\n" not in str(exc) and str(exc)
            return
        assert len(facts.needed) < 1_000_000


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes(data: bytes) -> None:
    check_bytes(data)


@SETTINGS
@given(st.binary(max_size=4096))
def test_random_bytes_behind_elf_magic(data: bytes) -> None:
    check_bytes(b"\x7fELF\x02\x01\x01" + data)


@SETTINGS
@given(st.data())
def test_mutated_real_elf(data: st.DataObject) -> None:
    blob = bytearray(reference())
    kind = data.draw(st.sampled_from(["truncate", "flip", "field", "huge"]))
    if kind == "truncate":
        blob = blob[:data.draw(st.integers(0, len(blob)))]
    elif kind == "flip":
        for _ in range(data.draw(st.integers(1, 32))):
            pos = data.draw(st.integers(0, min(len(blob), 1 << 16) - 1))
            blob[pos] = data.draw(st.integers(0, 255))
    else:
        # header and program-header fields: offsets past the end, huge counts
        offsets = [0x04, 0x05, 0x06, 0x10, 0x12, 0x20, 0x28, 0x36, 0x38, 0x3A, 0x3C, 0x3E]
        phoff = int.from_bytes(blob[0x20:0x28], "little")
        offsets += [phoff + 56 * i + k for i in range(4) for k in (0, 8, 16, 32, 40)]
        pos = data.draw(st.sampled_from(offsets))
        width = 8 if kind == "huge" else data.draw(st.sampled_from([1, 2, 4]))
        value = data.draw(st.integers(0, (1 << (8 * width)) - 1))
        if pos + width <= len(blob):
            blob[pos:pos + width] = value.to_bytes(width, "little")
    check_bytes(bytes(blob))


@SETTINGS
@given(st.binary(max_size=2048))
def test_cache_parser_random(data: bytes) -> None:
    for blob in (data, b"glibc-ld.so.cache1.1" + data, b"ld.so-1.7.0\0" + data):
        try:
            parse_ld_cache(blob)
        except CacheError as exc:
            assert str(exc)


@SETTINGS
@given(st.text(max_size=200), st.sampled_from([None, "/a/b"]))
def test_search_path_strings(text: str, origin) -> None:
    for element in split_search_path(text, ":;"):
        expanded = expand_dst(element, origin, "lib", "haswell")
        assert expanded is None or "$ORIGIN" not in element or origin is not None


@SETTINGS
@given(st.text(max_size=400))
def test_ld_so_conf_parser(text: str) -> None:
    from libdoctor.loader.ldconf import parse_ld_conf

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "ld.so.conf")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
        conf = parse_ld_conf(path)
        assert all(isinstance(d, str) and d for d in conf.dirs)


@SETTINGS
@given(st.one_of(st.text(max_size=300), st.lists(st.sampled_from(
    ['targets = ["/a"]', 'heal = "safe"', 'heal = 3', "interval = -1", "interval = 2.5", 'metrics_file = "/m"',
     "in_place = true", "unknown = 1", "[table]", 'environments = ["/e", 3]', "debounce = true"]),
    max_size=6).map("\n".join)))
def test_config_parser_gives_usage_errors_only(text: str) -> None:
    from libdoctor.daemon.config import load_config
    from libdoctor.errors import UsageError

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "config.toml")
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as handle:
            handle.write(text)
        try:
            config = load_config(path, system=os.path.join(folder, "none"), user=os.path.join(folder, "none"))
        except UsageError as exc:
            assert str(exc).startswith(path) and "\n" not in str(exc).strip()
            return
        assert config.heal in ("off", "safe") and config.interval > 0


@SETTINGS
@given(listing=st.binary(max_size=2000), meta=st.binary(max_size=2000), record=st.binary(max_size=2000))
def test_package_databases_never_raise(listing: bytes, meta: bytes, record: bytes) -> None:
    """A dpkg file list, a conda-meta record and a wheel's RECORD of any content: an owner or None."""
    from libdoctor.rules.ownership import conda_owner, dpkg_owner, pip_owner

    with tempfile.TemporaryDirectory() as root:
        os.makedirs(os.path.join(root, "dpkg/info"))
        os.makedirs(os.path.join(root, "env/conda-meta"))
        os.makedirs(os.path.join(root, "env/lib/site-packages/x-1.0.dist-info"))
        for path, data in (("dpkg/info/p.list", listing), ("env/conda-meta/p-1-0.json", meta),
                           ("env/lib/site-packages/x-1.0.dist-info/RECORD", record)):
            with open(os.path.join(root, path), "wb") as handle:
                handle.write(data)
        target = os.path.join(root, "env/lib/site-packages/libx.so.1")
        for answer in (dpkg_owner(target, os.path.join(root, "dpkg")), conda_owner(target), pip_owner(target)):
            assert answer is None or answer.package


@SETTINGS
@given(name=st.one_of(st.text(max_size=80), st.sampled_from(["lib\x1b[8mhidden.so", "lib\x1b]0;title\x07.so",
                                                             "lib\x1b[2J.so", "lib\x1b[5;31mblink.so"])))
def test_names_from_files_reach_a_terminal_escaped(name: str) -> None:
    """Whatever a DT_NEEDED or a file name holds, a printed line has no control character but the report's own
    colours (no screen cleared, no title set, no forged line)."""
    import re

    from libdoctor.report import escaped

    shown = escaped(f"\033[31m[✗]\033[0m {name} not found")
    rest = re.sub(r"\x1b\[(?:0|2|31|32|33)m", "", shown).split("[✗]", 1)[1]  # the report's own colours alone
    assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f\x80-\x9f\ud800-\udfff]", rest), ascii(shown)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.sampled_from(["cudnn", "cudart", "nccl", "cublasLt", "nvrtc", "cufft", "x"]),
       st.sampled_from(["ret", "out", "two", "property"]), st.lists(st.integers(0, 2**31), min_size=1, max_size=3))
def test_version_readers_take_any_input(name: str, family: str, style: str, values: list[int]) -> None:
    """The version parsers read names from files and numbers from libraries: any input, an answer or None."""
    from libdoctor.gpu.catalog import decode_version
    from libdoctor.gpu.versions import VersionRule, name_version, parse

    version = name_version(name)
    assert all(isinstance(p, int) for p in version)
    parsed = parse(name)
    assert parsed is None or all(isinstance(p, int) for p in parsed)
    decoded = decode_version(family, style, tuple(values))
    assert all(isinstance(p, int) and p >= 0 for p in decoded)
    rule = VersionRule(family, (8, 6), "same major, minor at least", "test", "check")
    assert rule.compared(decoded) is None or "older" in rule.compared(decoded)
