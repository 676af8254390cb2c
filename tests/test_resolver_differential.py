"""Every loader rule: libdoctor's resolution equals what glibc's ld.so does in the same environment."""
from __future__ import annotations

import os
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from libdoctor.loader.environment import Environment
from libdoctor.loader.factstore import FactsStore
from libdoctor.loader.resolver import (
    CACHE,
    DIRECT,
    LD_LIBRARY_PATH,
    LOADED,
    MODE_EXEC,
    MODE_LIST,
    RPATH,
    RUNPATH,
    SYSTEM,
    Resolver,
)

from .conftest import ElfFactory, Judge, loader_env


def via_of(result, name):
    return next(r.via for r in result.resolutions if r.name == name)


def test_rpath_and_runpath_basic(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    dep = elf.lib("r/libdep.so.1", defines=["dep"])
    elf.lib("n/libdep2.so.1", defines=["dep2"])
    user = elf.lib("app/libuser.so", calls=["dep"], link=[dep], rpath=str(tmp_path / "r"))
    result, _ = judge.compare(user, tmp_path)
    assert via_of(result, "libdep.so.1") == RPATH
    user2 = elf.lib("app/libuser2.so", calls=["dep2"], link=[tmp_path / "n/libdep2.so.1"], runpath="$ORIGIN/../n")
    result, _ = judge.compare(user2, tmp_path)
    assert via_of(result, "libdep2.so.1") == RUNPATH


def _add_rpath_beside_runpath(path: Path, skip: int) -> None:
    """Turn the first DT_NULL into a DT_RPATH pointing ``skip`` bytes into the RUNPATH string.

    GNU ld writes only one of the two tags, so the both-tags case is made by editing a real library.
    """
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as handle:
        dynamic = ELFFile(handle).get_section_by_name(".dynamic")
        offset, size = dynamic["sh_offset"], dynamic["sh_size"]
    data = bytearray(path.read_bytes())
    entries = [struct.unpack_from("<qQ", data, offset + i) for i in range(0, size, 16)]
    runpath = next(v for t, v in entries if t == 29)
    first_null = next(i for i, (t, _v) in enumerate(entries) if t == 0)
    assert first_null + 1 < len(entries) and entries[first_null + 1][0] == 0, "no spare DT_NULL"
    struct.pack_into("<qQ", data, offset + 16 * first_null, 15, runpath + skip)
    path.write_bytes(bytes(data))


def test_runpath_discards_rpath_of_same_object(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libx.so.1", defines=["x"])
    elf.lib("r/libx.so.1", defines=["x"])
    both = elf.lib("app/libboth.so", calls=["x"], link=[stub], runpath=f"/nonexistent{tmp_path / 'r'}")
    _add_rpath_beside_runpath(both, len("/nonexistent"))
    facts = judge.predict(str(both), str(tmp_path)).objects[0].facts
    assert facts.rpath is None and facts.rpath_ignored == str(tmp_path / "r")
    result, trace = judge.compare(both, tmp_path)
    assert trace.mapping()["libx.so.1"] is None


def test_rpath_inherited_through_loader_chain(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    leaf = elf.lib("deep/libleaf.so.1", defines=["leaf"])
    mid = elf.lib("mid/libmid.so.1", calls=["leaf"], link=[leaf], defines=["mid"])
    exe = elf.exe("bin/prog", calls=["mid"], link=[mid],
                  rpath=f"{tmp_path / 'mid'}:{tmp_path / 'deep'}")
    result, _ = judge.compare(exe, tmp_path)
    assert via_of(result, "libleaf.so.1") == RPATH
    leaf_res = next(r for r in result.resolutions if r.name == "libleaf.so.1")
    assert leaf_res.sources[-1].owner == str(exe)  # found through the executable's RPATH


def test_intermediate_rpath_used_for_grandchildren(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    leaf = elf.lib("deep/libleaf.so.1", defines=["leaf"])
    mid = elf.lib("mid/libmid.so.1", calls=["leaf"], link=[leaf], defines=["mid"], rpath=str(tmp_path / "deep"))
    inner = elf.lib("mid/libinner.so.1", calls=["mid"], link=[mid], defines=["inner"])
    top = elf.lib("top/libtop.so", calls=["inner"], link=[inner], rpath=str(tmp_path / "mid"))
    result, _ = judge.compare(top, tmp_path)
    assert {r.name: r.via for r in result.resolutions}["libleaf.so.1"] == RPATH


def test_runpath_not_inherited(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    leaf = elf.lib("deep/libleaf.so.1", defines=["leaf"])
    mid = elf.lib("deep/libmid.so.1", calls=["leaf"], link=[leaf], defines=["mid"])
    exe = elf.exe("bin/prog", calls=["mid"], link=[mid], runpath=str(tmp_path / "deep"))
    result, trace = judge.compare(exe, tmp_path)
    assert trace.mapping()["libleaf.so.1"] is None
    missing = next(r for r in result.resolutions if r.name == "libleaf.so.1")
    assert [s.tag for s in missing.sources][:2] == [RPATH, LD_LIBRARY_PATH]


def test_ld_library_path_order_and_separators(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libp.so.1", defines=["p"])
    for folder in ("a", "b", "c"):
        elf.lib(f"{folder}/libp.so.1", defines=["p"])
    rp = elf.lib("app/librp.so", calls=["p"], link=[stub], rpath=str(tmp_path / "a"))
    run = elf.lib("app/librun.so", calls=["p"], link=[stub], runpath=str(tmp_path / "c"))
    llp = {"LD_LIBRARY_PATH": f"/nonexistent;{tmp_path / 'b'}"}
    result, trace = judge.compare(rp, tmp_path, llp)  # RPATH beats LD_LIBRARY_PATH
    assert trace.mapping()["libp.so.1"] == str(tmp_path / "a/libp.so.1")
    result, trace = judge.compare(run, tmp_path, llp)  # LD_LIBRARY_PATH beats RUNPATH
    assert trace.mapping()["libp.so.1"] == str(tmp_path / "b/libp.so.1")
    assert via_of(result, "libp.so.1") == LD_LIBRARY_PATH


def test_empty_elements_mean_current_folder(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libcwd.so.1", defines=["c"])
    elf.lib("here/libcwd.so.1", defines=["c"])
    user = elf.lib("app/libuser.so", calls=["c"], link=[stub])
    judge.compare(user, tmp_path / "here", {"LD_LIBRARY_PATH": ":/nonexistent"})
    result, trace = judge.compare(user, tmp_path / "here", {"LD_LIBRARY_PATH": "/nonexistent"})
    assert trace.mapping()["libcwd.so.1"] is None
    user2 = elf.lib("app/libuser2.so", calls=["c"], link=[stub], rpath="/nonexistent::/x")
    result, trace = judge.compare(user2, tmp_path / "here")
    assert trace.mapping()["libcwd.so.1"] == "libcwd.so.1"


def test_origin_of_dso_is_textual_not_realpath(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """loader-facts 7.6: libf is next to the real libg, not next to the link; glibc does not find it."""
    libf = elf.lib("a/libf.so", defines=["f1"])
    libg = elf.lib("a/libg.so", calls=["f1"], link=[libf], runpath="$ORIGIN", defines=["g"])
    (tmp_path / "b").mkdir()
    os.symlink("../a/libg.so", tmp_path / "b/libg.so")
    exe = elf.exe("prog", calls=["g"], link=[libg], runpath="$ORIGIN/b")
    result, trace = judge.compare(exe, tmp_path)
    assert trace.mapping()["libf.so"] is None
    run = subprocess.run([str(exe)], env=loader_env(), capture_output=True)
    assert run.returncode == 127


def test_origin_of_executed_program_is_its_real_path(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """loader-facts 7.5: started through a symlink, $ORIGIN is the real folder (ldd gets this wrong)."""
    app = elf.lib("app/lib/libapp.so.1", defines=["app"])
    elf.exe("app/prog", calls=["app"], link=[app], runpath="$ORIGIN/lib")
    (tmp_path / "bin").mkdir()
    os.symlink("../app/prog", tmp_path / "bin/prog")
    link = str(tmp_path / "bin/prog")
    run = subprocess.run([link], env=loader_env(), capture_output=True)
    assert run.returncode == 0
    executed = judge.predict(link, str(tmp_path), mode=MODE_EXEC)
    assert executed.ok and executed.closure()[0].path == str(tmp_path / "app/lib/libapp.so.1")
    listed, trace = judge.compare(link, tmp_path)  # as ld.so --list sees it: not found
    assert trace.mapping()["libapp.so.1"] is None and not listed.ok


def test_lib_and_platform_tokens(elf: ElfFactory, judge: Judge, tmp_path: Path, loader_info) -> None:
    stub = elf.stub("libtok.so.1", defines=["t"])
    elf.lib(f"tok/{loader_info.lib}/{loader_info.platform}/libtok.so.1", defines=["t"])
    user = elf.lib("app/libuser.so", calls=["t"], link=[stub], rpath=f"{tmp_path}/tok/$LIB/${{PLATFORM}}")
    result, trace = judge.compare(user, tmp_path)
    assert trace.mapping()["libtok.so.1"] is not None


def test_needed_with_slash_is_opened_directly(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    direct = elf.lib("d/libdirect.so.1", soname=str(tmp_path / "d/libdirect.so.1"), defines=["d1"])
    rel = elf.lib("sub/librel.so.1", soname="sub/librel.so.1", defines=["r1"])
    user = elf.lib("app/libuser.so", calls=["d1", "r1"], link=[direct, rel])
    result, _ = judge.compare(user, tmp_path)
    assert via_of(result, str(tmp_path / "d/libdirect.so.1")) == DIRECT
    result, trace = judge.compare(user, tmp_path / "app")  # relative to the current folder, not $ORIGIN
    assert trace.mapping()["sub/librel.so.1"] is None


def test_soname_reuse_depends_on_load_order(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """The second requester cannot find libshared itself, but it is already loaded by SONAME."""
    shared = elf.lib("hidden/libshared.so.1", defines=["s"])
    first = elf.lib("l/libfirst.so.1", calls=["s"], link=[shared], rpath=str(tmp_path / "hidden"), defines=["a1"])
    second = elf.lib("l/libsecond.so.1", calls=["s"], link=[shared], runpath=str(tmp_path / "l"), defines=["a2"])
    top = elf.lib("top/libtop.so", calls=["a1", "a2"], link=[first, second], runpath=str(tmp_path / "l"))
    result, _ = judge.compare(top, tmp_path)
    vias = [r.via for r in result.resolutions if r.name == "libshared.so.1"]
    assert vias == [RPATH, LOADED]


def test_wrong_machine_and_class_are_skipped(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libarch.so.1", defines=["a"])
    other = elf.lib("first/libarch.so.1", defines=["a"])
    data = bytearray(other.read_bytes())
    data[18:20] = (183).to_bytes(2, "little")  # e_machine: AArch64
    other.write_bytes(bytes(data))
    klass = elf.lib("zero/libarch.so.1", defines=["a"])
    data = bytearray(klass.read_bytes())
    data[4] = 1  # EI_CLASS: ELFCLASS32
    klass.write_bytes(bytes(data))
    elf.lib("second/libarch.so.1", defines=["a"])
    user = elf.lib("app/libuser.so", calls=["a"], link=[stub],
                   rpath=f"{tmp_path / 'zero'}:{tmp_path / 'first'}:{tmp_path / 'second'}")
    result, trace = judge.compare(user, tmp_path)
    assert trace.mapping()["libarch.so.1"] == str(tmp_path / "second/libarch.so.1")
    folders = next(r for r in result.resolutions if r.name == "libarch.so.1").sources[0].folders
    assert [f.outcome for f in folders] == ["skipped", "skipped", "found"]


@pytest.mark.parametrize("content,message", [
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 12345\n" * 2, "invalid ELF header"),
    (b"\x7fELF\x02\x01", "file too short"),
    (b"/* GNU ld script */\nGROUP ( /lib/x86_64-linux-gnu/libc.so.6 )\n", "file too short"),
])
def test_non_elf_candidate_is_fatal(elf: ElfFactory, judge: Judge, tmp_path: Path, content: bytes,
                                    message: str) -> None:
    stub = elf.stub("libbad.so.1", defines=["b"])
    (tmp_path / "early").mkdir()
    (tmp_path / "early/libbad.so.1").write_bytes(content)
    elf.lib("late/libbad.so.1", defines=["b"])
    user = elf.lib("app/libuser.so", calls=["b"], link=[stub], rpath=f"{tmp_path / 'early'}:{tmp_path / 'late'}")
    trace_env = loader_env()
    result = judge.predict(str(user), str(tmp_path))
    done = subprocess.run([judge.info.interpreter, "--list", str(user)], env=trace_env, capture_output=True, text=True)
    assert done.returncode != 0 and message in done.stderr
    bad = next(r for r in result.resolutions if r.name == "libbad.so.1")
    assert bad.fatal and message in bad.error and not result.ok


def test_folder_named_like_library_is_fatal(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libdir.so.1", defines=["d"])
    (tmp_path / "early/libdir.so.1").mkdir(parents=True)
    user = elf.lib("app/libuser.so", calls=["d"], link=[stub], rpath=str(tmp_path / "early"))
    done = subprocess.run([judge.info.interpreter, "--list", str(user)], env=loader_env(), capture_output=True,
                          text=True)
    result = judge.predict(str(user), str(tmp_path))
    assert done.returncode != 0 and "cannot read file data" in done.stderr
    assert next(r for r in result.resolutions if r.name == "libdir.so.1").fatal


def test_symlink_loop_stops_that_search_list(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libloop.so.1", defines=["l"])
    (tmp_path / "loopy").mkdir()
    os.symlink("libloop.so.1", tmp_path / "loopy/libloop.so.1")
    elf.lib("good/libloop.so.1", defines=["l"])
    user = elf.lib("app/libuser.so", calls=["l"], link=[stub])
    result, trace = judge.compare(user, tmp_path,
                                  {"LD_LIBRARY_PATH": f"{tmp_path / 'loopy'}:{tmp_path / 'good'}"})
    assert trace.mapping()["libloop.so.1"] is None
    llp = next(s for s in result.resolutions[0].sources if s.tag == LD_LIBRARY_PATH)
    assert llp.folders[0].outcome == "stopped"


def test_version_needs_checked_against_provider(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """loader-facts 7.2: a link across a soname-named version node loads and then fails."""
    stub = elf.stub("libfoo.so.8", defines=["foo_get"], version_script={"libfoo.so.8": ["foo_get"]})
    elf.lib("lib/libfoo.so.9", defines=["foo_get"], version_script={"libfoo.so.9": ["foo_get"]})
    os.symlink("libfoo.so.9", tmp_path / "lib/libfoo.so.8")
    user = elf.lib("lib/libconsumer.so", calls=["foo_get"], link=[stub], runpath="$ORIGIN")
    result, trace = judge.compare(user, tmp_path)
    assert "version `libfoo.so.8' not found" in trace.stderr
    assert [v.message for v in result.version_problems] == [
        f"{tmp_path}/lib/libfoo.so.8: version `libfoo.so.8' not found (required by {user})"]
    assert not result.ok
    ctypes_run = subprocess.run(["python3", "-c", f"import ctypes; ctypes.CDLL({str(user)!r})"],
                                env=loader_env(), capture_output=True, text=True)
    assert "version `libfoo.so.8' not found" in ctypes_run.stderr


def test_a_provider_without_version_information_aborts_the_run(elf: ElfFactory, judge: Judge,
                                                               tmp_path: Path) -> None:
    """ldd only warns; binding the versioned symbol trips check_match's assertion (exit 127)."""
    stub = elf.stub("libleaf.so.1", defines=["leaf"], version_script={"LEAF_1.0": ["leaf"]})
    elf.lib("lib/libleaf.so.1", defines=["leaf"])  # rebuilt without a version script
    program = elf.exe("app/prog", calls=["leaf"], link=[stub], runpath=str(tmp_path / "lib"))
    result, trace = judge.compare(program, tmp_path)
    assert "no version information available" in trace.stderr and trace.returncode == 0
    run = subprocess.run([str(program)], env=loader_env(), capture_output=True, text=True)
    assert run.returncode == 127 and "Inconsistency detected by ld.so" in run.stderr
    (problem,) = result.version_problems
    assert problem.fatal and problem.missing_verdef and "LEAF_1.0" in problem.message
    assert not result.ok


def test_nodeflib_skips_cache_and_system_folders(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    user = elf.lib("app/libuser.so", extra=["-Wl,-z,nodefaultlib", "-Wl,--no-as-needed", "-lz"],
                   body="int z_user(void){return 0;}")
    result, trace = judge.compare(user, tmp_path)
    assert trace.mapping()["libz.so.1"] is None
    missing = next(r for r in result.resolutions if r.name == "libz.so.1")
    assert "DF_1_NODEFLIB" in " ".join(s.note for s in missing.sources)


def test_hwcaps_subfolder_preferred(elf: ElfFactory, judge: Judge, tmp_path: Path, loader_info) -> None:
    if not loader_info.hwcaps_active:
        pytest.skip("this loader has no active glibc-hwcaps subfolders")
    stub = elf.stub("libhw.so.1", defines=["h"])
    elf.lib("hw/libhw.so.1", defines=["h"])
    elf.lib(f"hw/glibc-hwcaps/{loader_info.hwcaps_active[-1]}/libhw.so.1", defines=["h"])
    user = elf.lib("app/libuser.so", calls=["h"], link=[stub], rpath=str(tmp_path / "hw"))
    result, trace = judge.compare(user, tmp_path)
    assert "glibc-hwcaps" in trace.mapping()["libhw.so.1"]


def test_ld_preload_loaded_first_and_reused(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libpre.so.1", defines=["p"])
    pre = elf.lib("pre/libpre.so.1", defines=["p"])
    user = elf.lib("app/libuser.so", calls=["p"], link=[stub])
    result, trace = judge.compare(user, tmp_path, {"LD_PRELOAD": str(pre)})
    assert trace.entries[0] == (str(pre), str(pre))
    assert via_of(result, "libpre.so.1") == LOADED


def test_cache_and_system_folders(judge: Judge, tmp_path: Path) -> None:
    target = shutil.which("ls") or "/bin/ls"
    result, _ = judge.compare(os.path.realpath(target), tmp_path)
    assert via_of(result, "libc.so.6") in (CACHE, SYSTEM)


def test_dlopen_uses_caller_runpath_and_loaded_objects(elf: ElfFactory, judge: Judge, tmp_path: Path,
                                                       dlprobe: Path) -> None:
    dep = elf.lib("deps/libdep.so.1", defines=["dep"])
    plugin = elf.lib("plugins/libplugin.so", calls=["dep"], link=[dep])
    caller = tmp_path / "bin/caller"
    caller.parent.mkdir()
    shutil.copy(dlprobe, caller)
    subprocess.run(["patchelf", "--version"], capture_output=True) if shutil.which("patchelf") else None
    # The caller gets an RPATH by relinking the probe source with one.
    from .conftest import DLPROBE_SOURCE, GCC
    src = tmp_path / "caller.c"
    src.write_text(DLPROBE_SOURCE)
    subprocess.run([GCC, "-o", str(caller), str(src), "-ldl", "-Wl,--disable-new-dtags",
                    f"-Wl,-rpath,{tmp_path / 'deps'}"], check=True)
    env = judge.environment(str(tmp_path))
    result = Resolver(env, FactsStore()).dlopen(str(caller), str(plugin))
    run = subprocess.run([str(caller), str(plugin)], env=loader_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    loaded = {line for line in run.stdout.splitlines() if line and line != "linux-vdso.so.1"}
    predicted = {o.path for o in result.objects} - {str(caller)}
    assert predicted == loaded
    assert via_of(result, "libdep.so.1") == RPATH  # the executable's RPATH applies to the dlopened plugin
    # by bare name: dlopen searches the caller's RPATH too
    by_name = Resolver(env, FactsStore()).dlopen(str(caller), "libdep.so.1")
    assert by_name.ok and by_name.objects[by_name.new_from].path == str(tmp_path / "deps/libdep.so.1")


def test_cache_names_compare_digit_runs_as_numbers(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """_dl_cache_libcmp: DT_NEEDED libz.so.01 is served by the cache entry libz.so.1."""
    if not judge.environment(str(tmp_path)).cache_lookup.lookup("libz.so.1"):
        pytest.skip("no libz.so.1 in this machine's ld.so.cache")
    stub = elf.stub("libz.so.01")
    user = elf.lib("app/libuser.so", calls=["f"], link=[stub], defines=["u"])
    result, trace = judge.compare(user, tmp_path)
    assert trace.mapping()["libz.so.01"].endswith("/libz.so.1")
    assert via_of(result, "libz.so.01") == CACHE


def test_executable_as_a_dependency_is_fatal(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libexe.so.1")
    elf.exe("exe/libexe.so.1", extra=["-no-pie"])
    user = elf.lib("app/libuser.so", calls=["f"], link=[stub], rpath=str(tmp_path / "exe"), defines=["u"])
    done = subprocess.run([judge.info.interpreter, "--list", str(user)], env=loader_env(), capture_output=True,
                          text=True)
    result = judge.predict(str(user), str(tmp_path))
    assert done.returncode != 0 and "cannot dynamically load executable" in done.stderr
    failed = next(r for r in result.resolutions if r.name == "libexe.so.1")
    assert failed.fatal and "cannot dynamically load executable" in failed.error


def test_a_file_in_ld_library_path_is_passed_over(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """ENOTDIR (a path element that is a file) does not end the search list (open_path)."""
    (tmp_path / "plain-file").write_text("not a folder")
    stubs = [elf.stub("libfirst.so.1", ["f1"]), elf.stub("libsecond.so.1", ["f2"])]
    elf.lib("good/libfirst.so.1", defines=["f1"])
    elf.lib("good/libsecond.so.1", defines=["f2"])
    user = elf.lib("app/libuser.so", calls=["f1", "f2"], link=stubs)
    result, trace = judge.compare(user, tmp_path,
                                  {"LD_LIBRARY_PATH": f"{tmp_path / 'plain-file'}:{tmp_path / 'good'}"})
    assert trace.mapping()["libfirst.so.1"] == str(tmp_path / "good/libfirst.so.1")


def test_a_stale_library_without_a_symbol_the_consumer_imports(elf: ElfFactory, judge: Judge, dlprobe: Path,
                                                                tmp_path: Path) -> None:
    """ldd (without -r) and ld.so --list are happy; a real dlopen(RTLD_NOW) says undefined symbol."""
    from libdoctor.loader.environment import Environment
    from libdoctor.scan import run_scan

    stub = elf.stub("libleaf.so.1", defines=["leaf_v1", "leaf_v2"])
    elf.lib("lib/libleaf.so.1", defines=["leaf_v1"])  # the stale build
    consumer = elf.lib("lib/libconsumer.so", calls=["leaf_v1", "leaf_v2"], link=[stub], runpath="$ORIGIN")
    judge.compare(consumer, tmp_path)  # every name resolves
    real = subprocess.run([str(dlprobe), str(consumer)], env=loader_env(), capture_output=True, text=True)
    assert real.returncode == 1 and "undefined symbol: leaf_v2" in real.stderr
    report = run_scan((str(consumer),), env=judge.environment(str(tmp_path)))
    (problem,) = [p for p in report.problems if p.kind == "symbol"]
    assert problem.message == f"undefined symbol: leaf_v2 (required by {consumer})"
    assert not report.healthy
    ldd_r = subprocess.run(["ldd", "-r", str(consumer)], env=loader_env(), capture_output=True, text=True)
    assert "undefined symbol: leaf_v2" in ldd_r.stdout + ldd_r.stderr
    elf.lib("lib/libleaf.so.1", defines=["leaf_v1", "leaf_v2"])  # rebuilt: healthy again
    assert not [p for p in run_scan((str(consumer),), env=Environment.from_process(
        environ=loader_env(), cwd=str(tmp_path), loader=judge.info)).problems if p.kind == "symbol"]


def test_a_symbol_of_the_wrong_version_node_is_unbound(elf: ElfFactory, judge: Judge, dlprobe: Path,
                                                       tmp_path: Path) -> None:
    from libdoctor.loader.binding import unbound_symbols

    stub = elf.stub("libv.so.1", defines=["vfun"], version_script={"V_2": ["vfun"], "V_1": []})
    elf.lib("lib/libv.so.1", defines=["vfun"], version_script={"V_1": ["vfun"], "V_2": []})
    consumer = elf.lib("lib/libconsumer.so", calls=["vfun"], link=[stub], runpath="$ORIGIN")
    real = subprocess.run([str(dlprobe), str(consumer)], env=loader_env(), capture_output=True, text=True)
    assert real.returncode == 1 and "vfun" in real.stderr and "V_2" in real.stderr
    result = judge.predict(str(consumer), str(tmp_path))
    scope = [o.path for o in result.objects]
    assert [(u.name, u.version) for u in unbound_symbols(scope, scope)] == [("vfun", "V_2")]


# -- the rules mutation testing found unguarded ----------------------------------------------

def test_a_requester_with_runpath_skips_the_rpath_of_its_loaders(elf: ElfFactory, judge: Judge,
                                                                 tmp_path: Path) -> None:
    """glibc searches the RPATHs up the loader chain only for a requester without DT_RUNPATH (dl-load.c)."""
    leaf = elf.lib("deep/libleaf.so.1", defines=["leaf"])
    mid = elf.lib("mid/libmid.so.1", calls=["leaf"], link=[leaf], defines=["mid"], runpath="/nonexistent")
    exe = elf.exe("bin/prog", calls=["mid"], link=[mid], rpath=f"{tmp_path / 'mid'}:{tmp_path / 'deep'}")
    result, trace = judge.compare(exe, tmp_path)
    assert trace.mapping()["libleaf.so.1"] is None  # the program's RPATH is not searched for libmid's need
    missing = next(r for r in result.resolutions if r.name == "libleaf.so.1")
    assert missing.sources[0].note == "skipped: the requesting object has DT_RUNPATH"
    plain = elf.lib("mid2/libmid.so.1", calls=["leaf"], link=[leaf], defines=["mid"])  # the control: no RUNPATH
    exe2 = elf.exe("bin/prog2", calls=["mid"], link=[plain], rpath=f"{tmp_path / 'mid2'}:{tmp_path / 'deep'}")
    _, trace2 = judge.compare(exe2, tmp_path)
    assert trace2.mapping()["libleaf.so.1"] == str(tmp_path / "deep/libleaf.so.1")


def _set_vernaux_flags(path: Path, version: str, flags: int) -> None:
    """Set ``vna_flags`` of the version need ``version`` in a real gcc-built object (VER_FLG_WEAK = 2)."""
    from elftools.elf.elffile import ELFFile

    with open(path, "rb") as handle:
        section = ELFFile(handle).get_section_by_name(".gnu.version_r")
        base, data = section["sh_offset"], section.data()
        strtab = ELFFile(handle).get_section_by_name(".dynstr").data()
    need = 0
    while True:
        _version, count, _file, aux, next_need = struct.unpack_from("<HHIII", data, need)
        at = need + aux
        for _ in range(count):
            _hash, _flags, _other, name, next_aux = struct.unpack_from("<IHHII", data, at)
            if strtab[name:strtab.index(b"\0", name)].decode() == version:
                with open(path, "r+b") as out:
                    out.seek(base + at + 4)
                    out.write(struct.pack("<H", flags))
                return
            at += next_aux
        if not next_need:
            raise AssertionError(f"no version need {version}")
        need += next_need


def test_a_missing_weak_version_need_only_warns(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """dl-version.c's match_symbol: a weak need (VER_FLG_WEAK) the provider lacks is not fatal; the run goes on."""
    stub = elf.stub("libp.so.1", defines=["pf", "pg"], version_script={"VER_1": ["pf"], "VER_2": ["pg"]})
    body = "extern int pg(void) __attribute__((weak));\nint use(void) { return pg ? 10 : 1; }\n"
    user = elf.lib("app/libuser.so", defines=[], calls=["pf"], link=[stub], body=body,
                   runpath=str(tmp_path / "lib"))
    elf.lib("lib/libp.so.1", defines=["pf"], version_script={"VER_1": ["pf"]})  # rebuilt without VER_2
    result, trace = judge.compare(user, tmp_path)
    assert "version `VER_2' not found" in trace.stderr and not result.ok  # a plain need: fatal, as ld.so says
    _set_vernaux_flags(user, "VER_2", 2)
    result, trace = judge.compare(user, tmp_path)
    assert trace.returncode == 0 and "weak version `VER_2' not found" in trace.stderr, trace.stderr  # a warning
    code = f"import ctypes; print(ctypes.CDLL({str(user)!r}).use())"
    run = subprocess.run(["python3", "-c", code], env=loader_env(), capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "1", run.stderr  # loads; g stays unbound (weak)
    (weak,) = result.version_problems
    assert weak.weak and not weak.fatal and result.ok and weak.message.endswith(trace.stderr.split(": ", 2)[-1].strip())


@pytest.mark.skipif(not shutil.which("ldconfig") and not os.path.exists("/sbin/ldconfig"), reason="no ldconfig")
def test_a_cache_entry_of_another_abi_is_never_taken(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    """``_dl_load_cache_lookup`` takes only entries flagged for this ABI: an i386 libabi.so.1 in the cache is no
    entry at all for an x86-64 consumer (``ldconfig -p`` shows the flags)."""
    from libdoctor.loader.ldcache import parse_ld_cache

    from .test_verdict import build_32bit

    _program, lib32 = build_32bit(tmp_path / "x32")
    if judge.info.host.machine != 62:
        pytest.skip("an x86-64 host is needed to have an i386 entry of another ABI")
    os.rename(lib32, tmp_path / "x32/libabi.so.1")
    subprocess.run(["ld", "-m", "elf_i386", "-shared", "-soname", "libabi.so.1", "-o", "libabi.so.1", "x.o"],
                   cwd=tmp_path / "x32", check=True, capture_output=True)
    stub = elf.stub("libabi.so.1", defines=["x32"])
    consumer = elf.lib("app/libconsumer.so", calls=["x32"], link=[stub])
    conf = tmp_path / "ld.so.conf"
    conf.write_text(f"{tmp_path / 'x32'}\n")
    cache_file = tmp_path / "abi.cache"
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    subprocess.run([ldconfig, "-X", "-C", str(cache_file), "-f", str(conf)], check=True, capture_output=True)
    listed = subprocess.run([ldconfig, "-p", "-C", str(cache_file)], capture_output=True, text=True).stdout
    (line,) = [row for row in listed.splitlines() if "libabi.so.1 (" in row]
    assert str(tmp_path / "x32/libabi.so.1") in line and "x86-64" not in line  # cached, for another ABI
    cache = parse_ld_cache(cache_file.read_bytes(), str(cache_file))
    env = judge.environment(str(tmp_path), cache=cache)
    assert env.cache_lookup.lookup("libabi.so.1") is None
    result = Resolver(env, FactsStore()).load(str(consumer))
    missing = next(r for r in result.resolutions if r.name == "libabi.so.1")
    assert not missing.found
    (cache_source,) = [s for s in missing.sources if s.tag == CACHE]
    assert cache_source.note == "no entry" and not cache_source.folders


def test_glibc_tunables_mask_a_hwcaps_subfolder(elf: ElfFactory, tmp_path: Path) -> None:
    """GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2 turns x86-64-v3 (and v4) off: the loader takes the plain copy, not the
    one in glibc-hwcaps/x86-64-v3, and libdoctor, probing the loader under the environment's tunables, agrees."""
    from libdoctor.loader.loaderinfo import probe_loader

    if "x86-64-v3" not in probe_loader().hwcaps_active:
        pytest.skip("this CPU has no x86-64-v3")
    folder = tmp_path / "lib"
    elf.lib(folder / "glibc-hwcaps/x86-64-v3/libhw.so", soname="libhw.so", defines=["h"])
    plain = elf.lib(folder / "libhw.so", soname="libhw.so", defines=["h"])
    program = elf.exe(tmp_path / "app/prog", calls=["h"], link=[plain])
    for tunables, subfolder in (("", "glibc-hwcaps/x86-64-v3/"), ("glibc.cpu.hwcaps=-AVX2", "")):
        extra = {"LD_LIBRARY_PATH": str(folder), **({"GLIBC_TUNABLES": tunables} if tunables else {})}
        env = Environment.from_process(environ=loader_env(extra), cwd=str(tmp_path)).replace(preload_file=())
        result = Resolver(env, FactsStore()).load(str(program), MODE_LIST)
        predicted = next(r.path for r in result.resolutions if r.name == "libhw.so")
        done = subprocess.run([env.loader.interpreter, "--list", str(program)], env=loader_env(extra),
                              capture_output=True, text=True)
        assert f"{folder}/{subfolder}libhw.so" in done.stdout, done.stdout
        assert predicted == f"{folder}/{subfolder}libhw.so", (tunables, predicted)
