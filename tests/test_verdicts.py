"""A kept answer is replayed only while everything its run consulted is unchanged (issue 20).

Real libraries built with gcc, the real command line in a subprocess: the second run of an unchanged
question is replayed (and writes nothing); a changed library, an inode reused with the same size and
mtime, and another LD_LIBRARY_PATH each make it answer anew, and the new answer is the one a run
without any cache gives.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libdoctor.verdicts import recorder as recorder_module
from libdoctor.verdicts.recorder import Recorder, identity
from libdoctor.verdicts.store import FORMAT, still_true

from .conftest import ElfFactory, loader_env, needs_gcc

REPO = Path(__file__).resolve().parent.parent
REUSED = "verdict reused"


def libdoctor(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = loader_env({"NO_COLOR": "1", "PYTHONPATH": str(REPO), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                          "LIBDOCTOR_STATE_DIR": str(tmp_path / "state"), **(env or {})})
    return subprocess.run([sys.executable, "-m", "libdoctor", "--log-level", "info", *args], env=environ,
                          capture_output=True, text=True, timeout=120, cwd=tmp_path, stdin=subprocess.DEVNULL)


def uncached(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return libdoctor(*args, tmp_path=tmp_path, env={**(env or {}), "LIBDOCTOR_NO_VERDICT_CACHE": "1"})


def same_size(first: Path, second: Path) -> None:
    """Pad the smaller library with zeros (bytes past every segment: the loader never reads them)."""
    size = max(first.stat().st_size, second.stat().st_size)
    for path in (first, second):
        with open(path, "ab") as handle:
            handle.write(b"\0" * (size - path.stat().st_size))


@pytest.fixture
def two_copies(elf: ElfFactory, tmp_path: Path) -> dict[str, Path]:
    """``app/prog`` needs ``f`` from libdep.so.1; ``good/`` has a copy defining it, ``bad/`` one defining ``g``."""
    stub = elf.stub("libdep.so.1", defines=["f"])
    prog = elf.exe("app/prog", calls=["f"], link=[stub])
    good = elf.lib("good/libdep.so.1", defines=["f"])
    bad = elf.lib("bad/libdep.so.1", defines=["g"])
    same_size(good, bad)
    return {"prog": prog, "good": good, "bad": bad}


def answer(done: subprocess.CompletedProcess) -> tuple[int, dict]:
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    report.pop("scanned_at", None)
    return done.returncode, report


@needs_gcc
def test_an_unchanged_question_is_replayed_and_writes_nothing(two_copies: dict, tmp_path: Path) -> None:
    env = {"LD_LIBRARY_PATH": str(two_copies["good"].parent)}
    first = libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env)
    assert first.returncode == 0 and REUSED not in first.stderr, first.stderr
    kept = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()}
    second = libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env)
    assert REUSED in second.stderr and second.stdout == first.stdout and second.returncode == 0
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "cache").rglob("*") if p.is_file()} == kept


@needs_gcc
def test_a_changed_library_answers_anew(two_copies: dict, tmp_path: Path) -> None:
    env = {"LD_LIBRARY_PATH": str(two_copies["good"].parent)}
    libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env)
    assert REUSED in libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env).stderr
    os.replace(two_copies["bad"], two_copies["good"])  # another file now has the name: f is undefined
    after = libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env)
    assert REUSED not in after.stderr
    assert answer(after) == answer(uncached("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env))
    assert after.returncode == 1


@needs_gcc
def test_a_library_rewritten_in_place_with_its_size_and_mtime_answers_anew(two_copies: dict, tmp_path: Path) -> None:
    env = {"LD_LIBRARY_PATH": str(two_copies["good"].parent)}
    good, bad = two_copies["good"], two_copies["bad"]
    before = good.stat()
    libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env)
    assert REUSED in libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env).stderr
    good.write_bytes(bad.read_bytes())  # the same inode, the same size ...
    os.utime(good, ns=(before.st_atime_ns, before.st_mtime_ns))  # ... and the same mtime: only ctime tells
    now = good.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    after = libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=env)
    assert REUSED not in after.stderr and after.returncode == 1


@needs_gcc
def test_another_ld_library_path_answers_anew(two_copies: dict, tmp_path: Path) -> None:
    good = {"LD_LIBRARY_PATH": str(two_copies["good"].parent)}
    bad = {"LD_LIBRARY_PATH": str(two_copies["bad"].parent)}
    libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=good)
    assert REUSED in libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=good).stderr
    other = libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=bad)
    assert REUSED not in other.stderr and other.returncode == 1
    assert answer(other) == answer(uncached("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=bad))
    back = libdoctor("scan", "--json", str(two_copies["prog"]), tmp_path=tmp_path, env=good)
    assert REUSED in back.stderr and back.returncode == 0  # each environment keeps its own answer


def test_an_inode_reused_with_the_same_size_and_mtime_is_another_file(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the racy window (content is then not compared), the ctime alone tells the files apart."""
    monkeypatch.setattr(recorder_module, "RACY_NS", 0)
    path = tmp_path / "libx.so"
    path.write_bytes(b"A" * 4096)
    recorder = Recorder(())
    recorder.note("o", str(path))
    settled = recorder.settle(time.time_ns())
    entry = {"format": FORMAT, "consulted": [[op, p, list(s)] for (op, p), s in settled.items()]}
    assert [op for op, _p, _s in entry["consulted"]] == ["s"]  # no content digest: identity only
    assert still_true(entry)
    old = path.stat()
    path.unlink()
    path.write_bytes(b"B" * 4096)  # on most file systems the freed inode is handed out again
    os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert identity("s", str(path))[3:5] == (old.st_size, old.st_mtime_ns)
    assert not still_true(entry)


@needs_gcc
def test_failures_and_probes_are_never_kept(two_copies: dict, tmp_path: Path) -> None:
    done = libdoctor("scan", "--rule", "no-such-rule", str(two_copies["prog"]), tmp_path=tmp_path)
    assert done.returncode == 2
    assert not list((tmp_path / "cache").glob("verdicts/*.json"))
    again = libdoctor("scan", "--rule", "no-such-rule", str(two_copies["prog"]), tmp_path=tmp_path)
    assert again.returncode == 2 and REUSED not in again.stderr


@needs_gcc
def test_a_missing_file_that_appears_answers_anew(elf: ElfFactory, tmp_path: Path) -> None:
    """'Not there' is a fact too: the library created where the search looked makes the answer stale."""
    stub = elf.stub("libdep.so.1", defines=["f"])
    prog = elf.exe("app/prog", calls=["f"], link=[stub], rpath="$ORIGIN/../lib")
    missing = libdoctor("scan", "--json", str(prog), tmp_path=tmp_path)
    assert missing.returncode == 1
    assert REUSED in libdoctor("scan", "--json", str(prog), tmp_path=tmp_path).stderr
    elf.lib("lib/libdep.so.1", defines=["f"])
    found = libdoctor("scan", "--json", str(prog), tmp_path=tmp_path)
    assert REUSED not in found.stderr and found.returncode == 0, found.stdout


@needs_gcc
def test_a_consumers_binding_is_remembered_with_its_misses_and_its_scope(elf: ElfFactory, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The symbol check reads a consumer's tables once: the next run of the same scope answers from the store,
    unserved imports included, and a scope with one more object reads again."""
    from libdoctor.loader import binding
    from libdoctor.loader.factstore import FactsStore

    dep = elf.lib("lib/libdep.so.1", defines=["f"])
    consumer = elf.lib("lib/libuser.so", calls=["f", "g"], link=[dep], extra=["-Wl,--unresolved-symbols=ignore-all"])
    provider = elf.lib("lib/libg.so", defines=["g"])
    store = FactsStore(str(tmp_path / "facts.json"))
    first = binding.unbound_symbols([str(consumer)], [str(consumer), str(dep)], store)
    assert [(u.name, u.consumer) for u in first] == [("g", str(consumer))]
    store.save()
    reads: list[str] = []
    real = binding.exports_of
    monkeypatch.setattr(binding, "exports_of", lambda path: reads.append(path) or real(path))
    for memo in (binding._TABLES, binding._SUPPLIERS, binding._DEFINERS):
        memo.clear()  # a new process: only the store remembers
    store_again = FactsStore(str(tmp_path / "facts.json"))
    again = binding.unbound_symbols([str(consumer)], [str(consumer), str(dep)], store_again)
    assert again == first and reads == []
    wider = binding.unbound_symbols([str(consumer)], [str(consumer), str(dep), str(provider)],
                                    FactsStore(str(tmp_path / "facts.json")))
    assert wider == [] and str(consumer) in reads


@needs_gcc
def test_the_daemon_resolves_again_only_the_loads_a_change_touched(elf: ElfFactory, tmp_path: Path) -> None:
    from libdoctor.loader.factstore import FactsStore
    from libdoctor.scan import run_scan

    for name in ("a", "b"):
        stub = elf.stub(f"lib{name}.so.1", defines=[f"f{name}"])
        elf.exe(f"app{name}/prog", calls=[f"f{name}"], link=[stub], rpath=f"$ORIGIN/../lib{name}")
        elf.lib(f"lib{name}/lib{name}.so.1", defines=[f"f{name}"])
    targets = (str(tmp_path / "appa/prog"), str(tmp_path / "appb/prog"))
    store = FactsStore()
    before = run_scan(targets, store=store)
    assert before.healthy
    gone = tmp_path / "libb/libb.so.1"
    gone.unlink()
    after = run_scan(targets, store=store, previous=before, changed=(str(gone),))
    assert after.targets[0] is before.targets[0]  # prog a consulted nothing that changed: kept as it was
    assert after.targets[1] is not before.targets[1]
    fresh = run_scan(targets, store=FactsStore())
    assert not after.healthy and [(p.kind, p.soname) for p in after.problems] == [
        (p.kind, p.soname) for p in fresh.problems] == [("missing", "libb.so.1")]
    # a file that appears under a name no load asked for changes nothing: both kept
    unrelated = elf.lib("liba/libunrelated.so.1", defines=["u"])
    quiet = run_scan(targets, store=store, previous=after, changed=(str(unrelated),))
    assert quiet.targets[0] is after.targets[0] and quiet.targets[1] is after.targets[1]
    # a new hwcaps subfolder in the folder prog a searched touches prog a only
    (tmp_path / "liba/glibc-hwcaps").mkdir()
    again = run_scan(targets, store=store, previous=after, changed=(str(tmp_path / "liba/glibc-hwcaps"),))
    assert again.targets[0] is not after.targets[0] and again.targets[1] is after.targets[1]


@needs_gcc
def test_dlopen_strings_are_read_once_per_file_identity(elf: ElfFactory, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from libdoctor.loader import symbols
    from libdoctor.loader.factstore import FactsStore

    body = '#include <dlfcn.h>\nint hook(void) { return dlopen("libplugin.so.2", RTLD_NOW) != 0; }\n'
    lib = elf.lib("app/libhooks.so", body=body, extra=["-ldl"])
    first = FactsStore(str(tmp_path / "facts.json"))
    assert first.dlopen_names(str(lib)) == {"libplugin.so.2"}
    first.save()
    reads: list[str] = []
    real = symbols.probable_dlopen_names
    monkeypatch.setattr(symbols, "probable_dlopen_names", lambda path: reads.append(path) or real(path))
    assert FactsStore(str(tmp_path / "facts.json")).dlopen_names(str(lib)) == {"libplugin.so.2"} and reads == []
    os.utime(lib)  # another identity (mtime and ctime): read again
    assert FactsStore(str(tmp_path / "facts.json")).dlopen_names(str(lib)) == {"libplugin.so.2"} and reads
