"""Hostile inputs never hang libdoctor: FIFOs where a library, a cache, a journal or a configuration should be."""
from __future__ import annotations

import json
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ElfFactory, Judge, loader_env, needs_gcc, read_terminal
from .test_fix import field  # noqa: F401 - fixture

REPO = Path(__file__).resolve().parent.parent


def libdoctor(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = loader_env({"NO_COLOR": "1", "PYTHONPATH": str(REPO), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                          "LIBDOCTOR_STATE_DIR": str(tmp_path / "state"), **(env or {})})
    return subprocess.run([sys.executable, "-m", "libdoctor", *args], env=environ, capture_output=True, text=True,
                          timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL)


def test_a_fifo_named_like_a_library_is_a_problem_not_a_hang(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libfifo.so.1", defines=["f"])
    consumer = elf.lib("app/libconsumer.so", defines=["g"], calls=["f"], link=[stub])
    (tmp_path / "lib").mkdir()
    os.mkfifo(tmp_path / "lib/libfifo.so.1")
    llp = {"LD_LIBRARY_PATH": str(tmp_path / "lib")}
    with pytest.raises(subprocess.TimeoutExpired):  # the loader itself blocks in open() (ldd hangs too)
        subprocess.run([judge.info.interpreter, "--list", str(consumer)], env=loader_env(llp), capture_output=True,
                       timeout=3)
    done = libdoctor("scan", "--json", str(consumer), tmp_path=tmp_path, env=llp)
    assert done.returncode == 1, done.stderr
    (problem,) = json.loads(done.stdout)["problems"]
    assert problem["kind"] == "fatal" and "not a regular file" in problem["message"]
    os.mkfifo(tmp_path / "target.so")
    done = libdoctor("scan", "--json", str(tmp_path / "target.so"), tmp_path=tmp_path)
    (problem,) = json.loads(done.stdout)["problems"]
    assert done.returncode == 1 and problem["kind"] == "bad-target" and "a FIFO" in problem["message"]


def test_a_fifo_as_cache_journal_or_config_is_set_aside(elf: ElfFactory, tmp_path: Path) -> None:
    lib = elf.lib("app/libok.so")
    (tmp_path / "cache").mkdir()
    os.mkfifo(tmp_path / "cache/elf-facts-v2.json")
    os.mkfifo(tmp_path / "cache/loader-v1.json")
    (tmp_path / "state/journal").mkdir(parents=True)
    os.mkfifo(tmp_path / "state/journal/20260101T000000-aaaaaa.json")
    done = libdoctor("scan", str(lib), tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    listed = libdoctor("undo", "--list", tmp_path=tmp_path)
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    os.mkfifo(tmp_path / "config.toml")
    watched = libdoctor("watch", "--once", "--config", str(tmp_path / "config.toml"), str(lib), tmp_path=tmp_path)
    assert watched.returncode == 2 and "config.toml" in watched.stderr and "Traceback" not in watched.stderr


def test_malformed_and_planted_journals_never_block_undo(tmp_path: Path) -> None:
    from libdoctor.repair.fixer import Applier, load_journals
    from libdoctor.rules.base import Proposal

    state = tmp_path / "state"
    target = tmp_path / "libreal.so.1"
    target.write_bytes(b"\x7fELF")
    folder = tmp_path / "links"
    folder.mkdir()
    outcome = Applier(str(state), None, in_place=True).apply(
        [Proposal("test", "symlink", "a link", soname="libx.so.1", link=str(folder / "libx.so.1"), target=str(target),
                  grade="safe")])
    assert outcome.run_id and (folder / "libx.so.1").is_symlink()
    journal = state / "journal"
    (journal / "20260101T000000-abcdef.json").write_text('{"version": 1, "run_id": "20260101T000000-ab')  # truncated
    planted = {"version": 1, "run_id": "../../escape", "actions": [], "env": None}
    (journal / "20260101T000001-abcdef.json").write_text(json.dumps(planted))
    assert [j["run_id"] for j in load_journals(str(state))] == [outcome.run_id]
    listed = libdoctor("undo", "--list", "--json", tmp_path=tmp_path)
    data = json.loads(listed.stdout)
    assert listed.returncode == 0 and [r["run_id"] for r in data["runs"]] == [outcome.run_id]
    assert len(data["unreadable"]) == 2 and any("cannot be read" in line for line in data["unreadable"])
    escaped = libdoctor("undo", "../../escape", tmp_path=tmp_path)
    assert escaped.returncode == 2 and "is not a run id" in escaped.stderr
    undone = libdoctor("undo", "--all", tmp_path=tmp_path)
    assert undone.returncode == 1, undone.stdout + undone.stderr  # the two bad files are named; the good run undone
    assert not (folder / "libx.so.1").exists() and undone.stdout.count("left ") == 2
    assert not (tmp_path / "escape.json").exists() and not (state / "escape.json").exists()


def test_files_libdoctor_writes_have_explicit_modes_under_umask_000(tmp_path: Path) -> None:
    lib_env = {"NO_COLOR": "1"}
    code = ("import os; os.umask(0); from libdoctor.daemon.units import install_units; "
            "from libdoctor.daemon.metrics import write_metrics; "
            f"install_units({str(tmp_path / 'units')!r}, '/bin/true'); write_metrics({str(tmp_path / 'm.prom')!r}, [])")
    done = subprocess.run([sys.executable, "-c", code], env=loader_env({"PYTHONPATH": str(REPO), **lib_env}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in [*(tmp_path / "units").iterdir(), tmp_path / "m.prom"]}
    assert set(modes.values()) == {"0o644"}, modes


def test_a_bad_configuration_on_sighup_keeps_the_running_one(elf: ElfFactory, tmp_path: Path) -> None:
    import signal
    import time

    from .test_watch import Daemon, cli_env

    lib = elf.lib("app/libok.so")
    config = tmp_path / "config.toml"
    config.write_text(f'targets = ["{lib}"]\n')
    daemon = Daemon(["--config", str(config)], cli_env(tmp_path))
    try:
        daemon.wait_for("watching", timeout=30)
        for bad in (b"debounce = inf\n", b"heal = \"off\"\n# \xff\xfe not UTF-8\n", b"interval = -1\n"):
            mark = len(daemon.events)
            config.write_bytes(bad)
            daemon.proc.send_signal(signal.SIGHUP)
            event, _ = daemon.wait_for("configuration not reloaded", timeout=10, after=mark)
            assert str(config) in event["error"]
            assert daemon.proc.poll() is None  # still running, with the configuration it had
        time.sleep(0.2)
    finally:
        code, _seconds = daemon.stop()
    assert code == 0
    refused = libdoctor("watch", "--once", "--debounce", "inf", str(lib), tmp_path=tmp_path)
    assert refused.returncode == 2 and "debounce must be a number of seconds" in refused.stderr


def test_undo_removes_the_temporaries_a_killed_run_left(field: dict) -> None:  # noqa: F811
    from libdoctor.repair.fix import apply_plan
    from libdoctor.repair.fixer import undo

    from .test_fix import plan_for, snapshot

    before = snapshot(field["tree"])
    outcome = apply_plan(plan_for(field))
    activate = field["env"] / "etc/conda/activate.d"
    assert (activate / "libdoctor.sh").exists()
    (activate / ".libdoctor.sh.deadbeef").write_text("half a script")  # a write the kill interrupted
    journal = field["state"] / "journal"
    (journal / f".{outcome.run_id}.json.cafebabe").write_text("{")
    report = undo(str(field["state"]), outcome.run_id)
    assert not any(line.startswith("left ") for line in report), report
    assert snapshot(field["tree"]) == before
    assert not list(journal.glob(".*"))


def test_crafted_bloat_files_stay_bounded(tmp_path: Path) -> None:
    """4,000 DT_NEEDED naming one 65,000-byte string, 100,000 distinct names, a 16 MB file of 1,000,000 entries:
    each name once, names past PATH_MAX cut (the loader's ENAMETOOLONG, "Error 36"), a bound on distinct names,
    and a small facts cache (benchmarks/bloat.py measures time and peak RSS against ld.so --list)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import bloat  # noqa: PLC0415

    from libdoctor.errors import TooLargeError
    from libdoctor.loader.elffacts import PATH_MAX, read_elf_facts

    long_name = bloat.craft(tmp_path / "long.so", [b"x" * 65000], 4000)
    facts = read_elf_facts(str(long_name))
    assert facts.needed == ("x" * (PATH_MAX + 1),)
    cache = tmp_path / "cache"
    done = libdoctor("scan", "--json", str(long_name), tmp_path=tmp_path, env={"LIBDOCTOR_CACHE_DIR": str(cache)})
    assert done.returncode == 1
    problem = json.loads(done.stdout)["problems"][0]
    assert "File name too long" in problem["message"] and "(4097+ bytes)" in problem["message"]
    assert sum(f.stat().st_size for f in cache.iterdir()) < 256 << 10
    with pytest.raises(TooLargeError):
        read_elf_facts(str(bloat.craft(tmp_path / "many.so", [b"lib%06d.so" % i for i in range(5000)], 5000)))
    assert read_elf_facts(str(bloat.craft(tmp_path / "big.so", [b"libbloat.so"], 1_000_000))).needed == (
        "libbloat.so",)


def test_cache_entries_are_checked_by_type_and_foreign_caches_ignored(elf: ElfFactory, tmp_path: Path) -> None:
    from libdoctor.loader.factstore import FORMAT, FORMAT_VERSION, FactsStore, key_of

    lib = elf.lib(tmp_path / "libreal.so", calls=["cos"], extra=["-lm"])
    key = ":".join(str(n) for n in key_of(os.stat(lib)))
    cache = tmp_path / "cache.json"
    good = FactsStore()
    real = good.get_path(str(lib))
    poisoned = {**{k: v for k, v in __import__("dataclasses").asdict(real).items()}}
    for change in ({"needed": "libevil.so"}, {"needed": [1]}, {"elf_class": "64"}, {"dynamic": 1},
                   {"version_needs": [{"file": "x"}]}, {"extra": 1}, {"soname": ["x"]}):
        entry = {**poisoned, **change}
        cache.write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "entries": {key: entry}}))
        os.chmod(cache, 0o600)
        store = FactsStore(str(cache))
        assert store.get_path(str(lib)) == real and store.parsed == 1, change  # read again, never believed
    cache.write_text(json.dumps({"format": FORMAT, "version": FORMAT_VERSION,
                                 "entries": {key: {**poisoned, "needed": ["libevil.so"]}}}))
    os.chmod(cache, 0o666)  # well typed, but anyone could have written it
    store = FactsStore(str(cache))
    assert "writable by others" in (store.load_problem or "") and store.get_path(str(lib)) == real
    os.chmod(cache, 0o600)
    link = tmp_path / "link.json"
    link.symlink_to(cache)
    assert FactsStore(str(link)).load_problem  # a planted symlink is not followed


@pytest.mark.parametrize("planted", ["journal", "shims", "envs", "shims/ENV", "."])
def test_symlinks_planted_in_the_state_folder_are_never_followed(field: dict, tmp_path: Path,  # noqa: F811
                                                                  planted: str) -> None:
    from libdoctor.errors import LibdoctorError
    from libdoctor.repair.fix import apply_plan
    from libdoctor.repair.fixer import env_slug

    from .test_fix import plan_for

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = field["state"]
    name = planted.replace("ENV", env_slug(str(field["env"])))
    link = state / name if name != "." else state
    if name == ".":
        state.rmdir() if state.exists() else None
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(elsewhere)
    plan = plan_for(field)
    with pytest.raises(LibdoctorError, match="symlink|safely"):
        apply_plan(plan)
    assert list(elsewhere.iterdir()) == []  # nothing written through the link


def test_a_folder_swapped_between_plan_and_apply_gets_nothing(field: dict) -> None:  # noqa: F811
    from libdoctor.repair.fix import apply_plan

    from .test_fix import plan_for

    plan = plan_for(field, in_place=True)
    links = [p for p in plan.chosen if p.kind == "symlink"]
    assert links and plan.folder_identities
    folder = Path(os.path.realpath(os.path.dirname(links[0].link)))
    moved = folder.with_name(folder.name + ".orig")
    folder.rename(moved)  # the swap: same path, same owner and mode, another folder
    folder.mkdir()
    os.chmod(folder, moved.stat().st_mode & 0o7777)
    before = sorted(p.name for p in moved.iterdir())
    outcome = apply_plan(plan)
    assert any("no longer leads to the folder the plan verified" in r for r in outcome.refused)
    assert list(folder.iterdir()) == [] and sorted(p.name for p in moved.iterdir()) == before


def test_no_links_into_group_writable_folders(field: dict) -> None:  # noqa: F811
    from libdoctor.repair.fix import apply_plan

    from .test_fix import plan_for

    plan = plan_for(field, in_place=True)
    folder = Path(os.path.realpath(os.path.dirname(next(p for p in plan.chosen if p.kind == "symlink").link)))
    os.chmod(folder, 0o775)
    outcome = apply_plan(plan)
    assert any("group-writable" in r for r in outcome.refused)


def test_a_poisoned_loader_cache_is_probed_again(tmp_path: Path) -> None:
    from libdoctor.loader.loaderinfo import cached_probe_loader

    real = cached_probe_loader(str(tmp_path))
    cache = tmp_path / "loader-v1.json"
    data = json.loads(cache.read_text())
    for change in ({"system_dirs": "/evil"}, {"host": {"elf_class": "64"}}, {"lib": 5}, {"extra": 1}):
        cache.write_text(json.dumps({"key": data["key"], "info": {**data["info"], **change}}))
        assert cached_probe_loader(str(tmp_path)) == real, change
    cache.write_text(json.dumps({"key": data["key"], "info": {**data["info"], "system_dirs": ["/evil"]}}))
    assert cached_probe_loader(str(tmp_path)).system_dirs == ("/evil",)  # well formed and ours: believed
    os.chmod(cache, 0o646)
    assert cached_probe_loader(str(tmp_path)) == real  # writable by others: never believed


def test_json_nested_too_deeply_is_ignored_or_named_never_a_traceback(elf: ElfFactory, tmp_path: Path) -> None:
    """Issue 21, item 10: a cache, a kept answer or a journal of 100,000 nested arrays (json.loads recurses
    past Python's limit) is a file ignored and rebuilt, or named and skipped: never an internal error."""
    deep = "[" * 100_000 + "]" * 100_000
    lib = elf.lib("app/libplain.so", defines=["f"])
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    from libdoctor.loader.factstore import FORMAT_VERSION

    facts = cache / f"elf-facts-v{FORMAT_VERSION}.json"
    for planted in (facts, cache / "loader-v1.json"):
        planted.write_text(deep)
        planted.chmod(0o600)
    done = libdoctor("scan", str(lib), tmp_path=tmp_path, env={"LIBDOCTOR_NO_VERDICT_CACHE": "1"})
    assert done.returncode == 0 and "internal error" not in done.stderr, done.stderr
    assert facts.read_text().startswith("{")  # rebuilt
    first = libdoctor("scan", str(lib), tmp_path=tmp_path)
    (kept,) = (cache / "verdicts").glob("*.json")
    kept.write_text(deep)
    again = libdoctor("scan", str(lib), tmp_path=tmp_path)
    assert again.returncode == 0 and again.stdout == first.stdout and "internal error" not in again.stderr
    journal = tmp_path / "state" / "journal"
    journal.mkdir(parents=True, mode=0o700)
    (tmp_path / "state").chmod(0o700)
    (journal / "20261203T000000-abcdef.json").write_text(deep)
    (journal / "20261203T000000-abcdef.json").chmod(0o600)
    listed = libdoctor("undo", "--list", tmp_path=tmp_path)
    assert listed.returncode == 0 and "nested too deeply" in listed.stdout + listed.stderr, listed.stderr


def test_a_file_rewritten_with_its_size_and_mtime_is_read_again(elf: ElfFactory, tmp_path: Path) -> None:
    """Issue 21, item 9: the facts cache key carries the ctime, so a file that reuses an inode (or is rewritten
    in place, as an archive re-extracted) with the same size and mtime is never believed from the cache."""
    from libdoctor.loader.factstore import FactsStore

    first = elf.lib("a/libone.so", soname="libone.so", defines=["f"])
    other = elf.lib("b/libtwo.so", soname="libtwo.so", defines=["f"])
    size = max(first.stat().st_size, other.stat().st_size)
    for path in (first, other):
        with open(path, "ab") as handle:
            handle.write(b"\0" * (size - path.stat().st_size))
    store_path = str(tmp_path / "facts.json")
    store = FactsStore(store_path)
    assert store.get_path(str(first)).soname == "libone.so"
    store.save()
    before = first.stat()
    first.write_bytes(other.read_bytes())
    os.utime(first, ns=(before.st_atime_ns, before.st_mtime_ns))
    now = first.stat()
    assert (now.st_ino, now.st_size, now.st_mtime_ns) == (before.st_ino, before.st_size, before.st_mtime_ns)
    again = FactsStore(store_path)
    assert again.get_path(str(first)).soname == "libtwo.so" and again.parsed == 1


@pytest.mark.parametrize("planted", ["symlink", "fifo"])
def test_a_lock_that_is_not_a_regular_file_is_refused_in_one_line(tmp_path: Path, planted: str) -> None:
    """Issue 21, item 10: ``state/lock`` planted as a symlink or a FIFO: refused (exit 2, one line), never an
    internal error, never followed, never waited on."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    if planted == "symlink":
        (state / "lock").symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(state / "lock")
    done = libdoctor("undo", "--all", tmp_path=tmp_path)
    assert done.returncode == 2 and "internal error" not in done.stderr
    assert done.stderr.count("\n") == 1 and "lock" in done.stderr
    assert not (tmp_path / "elsewhere").exists()


def test_units_installed_under_umask_000_leave_no_folder_writable_by_others(tmp_path: Path) -> None:
    """Issue 21, item 10: the folders ``systemd install`` makes are 0755 whatever the umask."""
    from libdoctor.daemon.units import install_units

    old = os.umask(0)
    try:
        install_units(str(tmp_path / "new/parent/system"), sys.executable)
    finally:
        os.umask(old)
    for folder in (tmp_path / "new", tmp_path / "new/parent", tmp_path / "new/parent/system"):
        assert folder.stat().st_mode & 0o777 == 0o755, folder


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 64 KiB tmpfs (root only, as CI runs; skipped where mounting is not allowed)."""
    where = tmp_path / "small"
    where.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs", str(where)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


@needs_gcc
def test_a_full_disk_is_one_line_and_nothing_half_written(elf: ElfFactory, tmp_path: Path, small_disk: Path) -> None:
    """Issue 21, item 8: ``fix --apply`` with its state folder on a disk that fills at every point of the run:
    exit 0, or exit 2 with one line naming the folder; no temporary file left; whatever stays is undone by
    ``undo`` once there is space."""
    stub = elf.stub("libdep.so.1", defines=["f"])
    prog = elf.exe("app/prog", calls=["f"], link=[stub])
    elf.lib("other/libdep.so.1", defines=["f"])
    state = small_disk / "state"
    env = {"LIBDOCTOR_STATE_DIR": str(state), "LIBDOCTOR_NO_VERDICT_CACHE": "1"}
    outcomes = set()
    for kib in range(50, 64):
        subprocess.run(["sh", "-c", f"rm -rf {small_disk}/* && head -c {kib * 1024} /dev/zero > {small_disk}/fill"],
                       capture_output=True)
        done = libdoctor("fix", "--apply", "--yes", "--look-in", str(tmp_path / "other"), str(prog),
                         tmp_path=tmp_path, env=env)
        assert done.returncode in (0, 2) and "internal error" not in done.stderr, done.stderr
        if done.returncode == 2:
            assert done.stderr.count("\n") == 1 and str(small_disk) in done.stderr, done.stderr
        outcomes.add(done.returncode)
        leftovers = [p for p in small_disk.rglob(".*") if p.is_file()]
        assert leftovers == [], leftovers
        (small_disk / "fill").unlink()
        undone = libdoctor("undo", "--all", tmp_path=tmp_path, env=env)
        assert undone.returncode == 0, undone.stdout + undone.stderr
        folders = json.loads((state / "envs/default.json").read_text())["folders"] if (
            state / "envs/default.json").exists() else []
        assert folders == []
    assert outcomes == {0, 2}


@needs_gcc
def test_a_malformed_or_vanished_journal_never_blocks_undo(elf: ElfFactory, tmp_path: Path) -> None:
    """Issue 21, item 4: a newer journal whose changes lack a path (or hold a number, or an unknown kind) is
    named and skipped while the valid run is undone; a run whose journal vanished is reported, not a silent
    "nothing to undo"."""
    stub = elf.stub("libdep.so.1", defines=["f"])
    prog = elf.exe("app/prog", calls=["f"], link=[stub])
    elf.lib("other/libdep.so.1", defines=["f"])
    env = {"LIBDOCTOR_NO_VERDICT_CACHE": "1"}
    fix = ("fix", "--apply", "--yes", "--look-in", str(tmp_path / "other"), str(prog))
    assert libdoctor(*fix, tmp_path=tmp_path, env=env).returncode == 0
    state = tmp_path / "state"
    bad = {"version": 1, "run_id": "29991231T235959-abcdef", "env": None, "started": "x", "complete": True,
           "actions": [{"kind": "symlink", "state": "done"}, {"kind": "symlink", "path": 5, "state": "done"},
                       {"kind": "file", "path": None, "sha256": "0", "state": "done"},
                       {"kind": "bogus", "path": "/x", "state": "done"}]}
    planted = state / "journal" / "29991231T235959-abcdef.json"
    planted.write_text(json.dumps(bad))
    planted.chmod(0o600)
    undone = libdoctor("undo", "--all", tmp_path=tmp_path, env=env)
    assert "internal error" not in undone.stderr and undone.returncode in (0, 1), undone.stderr
    assert undone.stdout.count("skipped, the others undone") == 4 and "removed search path" in undone.stdout
    assert json.loads((state / "envs/default.json").read_text())["folders"] == []
    assert libdoctor(*fix, tmp_path=tmp_path, env=env).returncode == 0
    for journal in (state / "journal").glob("2026*.json"):
        if "undone" not in json.loads(journal.read_text()):
            journal.unlink()  # the run's journal vanishes; its search folder stays in the env's state
    gone = libdoctor("undo", "--all", tmp_path=tmp_path, env=env)
    assert "the journal of the run that added it is gone" in gone.stdout + gone.stderr, gone.stdout


@needs_gcc
@pytest.mark.parametrize("command", [("scan",), ("fix",), ("fix", "--apply", "--yes")])
def test_fifos_where_text_files_should_be_never_hang(elf: ElfFactory, tmp_path: Path, command: tuple) -> None:
    """Issue 21, item 5: a FIFO as a dist-info's METADATA and RECORD, a conda activate.d script, a cuda.h and the
    driver's version file: every command finishes (the one non-blocking text reader), none waits on a writer."""
    from .test_frameworks import dist_info, make_env

    prefix, site = make_env(tmp_path / "env")
    (prefix / "conda-meta").mkdir()
    elf.lib(site / "torch/lib/libtorch_cuda.so", defines=["t"], calls=["f"], link=[elf.stub("libgone.so.1")])
    dist_info(site, "torch", "2.4.0", ["torch/lib/libtorch_cuda.so"])
    meta = next(site.glob("torch-*.dist-info"))
    for name in ("METADATA", "RECORD"):
        (meta / name).unlink(missing_ok=True)
        os.mkfifo(meta / name)
    (prefix / "etc/conda/activate.d").mkdir(parents=True)
    os.mkfifo(prefix / "etc/conda/activate.d/cuda.sh")
    (prefix / "include").mkdir()
    os.mkfifo(prefix / "include/cuda.h")
    sysroot = tmp_path / "sysroot"
    (sysroot / "sys/module/nvidia").mkdir(parents=True)
    os.mkfifo(sysroot / "sys/module/nvidia/version")
    done = libdoctor(*command, "--env", str(prefix), tmp_path=tmp_path,
                     env={"LIBDOCTOR_SYSROOT": str(sysroot), "LIBDOCTOR_NO_VERDICT_CACHE": "1"})
    assert done.returncode in (0, 1, 2) and "internal error" not in done.stderr, done.stderr


@needs_gcc
def test_control_sequences_in_names_never_reach_a_terminal(elf: ElfFactory, tmp_path: Path) -> None:
    """Issue 21, item 2: a DT_NEEDED name, a file name and a typed path holding ESC, BEL or a newline are shown
    escaped by scan, fix and the one-line errors (on a terminal too: only the report's own colours stay raw)."""
    import pty

    needed = "libsoname\x1b[8m\x1b]0;title\x07\n[✓] forged.so"
    elf.lib("app/libuser.so", link=[elf.stub(needed)], calls=["f"])
    for args in (("scan", str(tmp_path / "app")), ("scan", "-v", str(tmp_path / "app")), ("fix", str(tmp_path / "app")),
                 ("scan", str(tmp_path / "no\x1b[2Jsuch"))):
        environ = loader_env({"PYTHONPATH": str(REPO), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                              "LIBDOCTOR_NO_VERDICT_CACHE": "1", "TERM": "xterm"})
        environ.pop("NO_COLOR", None)
        leader, follower = pty.openpty()
        proc = subprocess.Popen([sys.executable, "-m", "libdoctor", *args], env=environ, stdout=follower,
                                stderr=follower, stdin=subprocess.DEVNULL, cwd=tmp_path)
        os.close(follower)
        shown = read_terminal(leader)
        proc.wait(timeout=60)
        os.close(leader)
        raw = re.sub(rb"\x1b\[(?:0|2|31|32|33)m", b"", shown)
        assert b"\x1b" not in raw and b"\x07" not in raw, (args, shown[-400:])
        assert b"\r\n[\xe2\x9c\x93] forged" not in shown  # no forged line


@pytest.mark.parametrize("case", ["world-writable", "other-owner", "dotted-key", "nested", "nul-target"])
def test_a_configuration_root_should_not_trust_or_parse_is_refused_in_one_line(tmp_path: Path, case: str) -> None:
    """Issue 21, items 3 and 6: a configuration writable by everyone or owned by another user is refused (it
    steers what root writes); a 50,000-part dotted key, deep nesting or a NUL in a path is refused before or by
    the parser, quickly, in one line."""
    import time as clock

    config = tmp_path / "conf" / "config.toml"
    config.parent.mkdir(mode=0o755)
    text = {"dotted-key": "a" + ".a" * 50_000 + " = 1\n", "nested": "targets = " + "[" * 5000 + "]" * 5000 + "\n",
            "nul-target": 'targets = ["/tmp/a\\u0000b"]\n'}.get(case, 'heal = "off"\n')
    config.write_text(text)
    config.chmod(0o666 if case == "world-writable" else 0o644)
    if case == "other-owner":
        if os.geteuid() != 0:
            pytest.skip("only root can give a file to another user")
        os.chown(config, 65534, 65534)
    started = clock.monotonic()
    done = libdoctor("watch", "--once", "--config", str(config), tmp_path=tmp_path)
    assert done.returncode == 2 and "internal error" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and (str(config) in done.stderr or str(config.parent) in done.stderr)
    assert clock.monotonic() - started < 15


def test_a_path_component_swapped_for_a_link_between_plan_and_apply_gets_nothing(field: dict) -> None:  # noqa: F811
    """Issue 21, item 1: the user who owns the env replaces the folder of an in-place link with a symlink to
    another folder (same owner, same mode) between plan and apply, 50 times, at random moments (before the
    apply or while it runs): not one write lands outside the folder the plan verified."""
    import random
    import threading
    import time as clock

    from libdoctor.repair.fix import apply_plan
    from libdoctor.repair.fixer import undo
    from libdoctor.repair.statedir import state_dir

    from .test_fix import plan_for

    plan = plan_for(field, in_place=True)
    link = next(p for p in plan.chosen if p.kind == "symlink").link
    folder = Path(os.path.dirname(link))
    assert str(folder) in plan.folder_identities
    decoy = folder.with_name(folder.name + ".decoy")
    decoy.mkdir()
    os.chmod(decoy, folder.stat().st_mode & 0o7777)
    aside = folder.with_name(folder.name + ".planned")
    chance = random.Random(21)
    swapped_before = 0
    for trial in range(50):
        delay = chance.choice([0.0, 0.0005, 0.002, 0.005, None])  # None: swapped before apply starts

        def swap(delay: "float | None" = delay) -> None:
            if delay:
                clock.sleep(delay)
            folder.rename(aside)
            folder.symlink_to(decoy)

        if delay is None:
            swap()
            swapped_before += 1
            outcome = apply_plan(plan)
        else:
            worker = threading.Thread(target=swap)
            worker.start()
            outcome = apply_plan(plan)
            worker.join()
        assert list(decoy.iterdir()) == [], (trial, delay, outcome)
        if delay is None:
            assert any("no longer leads to the folder the plan verified" in r for r in outcome.refused)
        folder.unlink()
        aside.rename(folder)
        if outcome.run_id:
            undo(state_dir(), outcome.run_id)  # what landed in the planned folder is taken back for the next trial
    assert swapped_before >= 5


def test_root_writes_no_activation_script_into_another_users_env(field: dict) -> None:  # noqa: F811
    """Issue 21, item 1: root applying a search-path repair for a conda env owned by another user writes no
    activate.d script there; it says so and what to run as that user."""
    from libdoctor.repair.fix import apply_plan

    from .test_fix import plan_for

    if os.geteuid() != 0:
        pytest.skip("only root can give the env to another user")
    env = Path(field["env"])
    assert (env / "conda-meta").is_dir()
    for folder, subfolders, files in os.walk(env):
        for name in [folder] + [os.path.join(folder, n) for n in subfolders + files]:
            os.lchown(name, 65534, 65534)
    plan = plan_for(field)
    outcome = apply_plan(plan)
    assert not (env / "etc/conda/activate.d/libdoctor.sh").exists()
    assert any("not made" in r and "as the owner of that folder" in r for r in outcome.refused), outcome.refused
    owned_by_root = [p for p in env.rglob("*") if p.lstat().st_uid == 0]
    assert owned_by_root == []


def test_any_error_is_one_line_never_a_traceback(tmp_path: Path) -> None:
    """A deleted working folder is a usage line; an unexpected OSError is the one-line internal error; a full
    disk is its own line (exit 2 each, no traceback)."""
    import errno as errnos

    import click
    from click.testing import CliRunner

    from libdoctor.cli import _Group

    gone = tmp_path / "gone"
    gone.mkdir()
    done = subprocess.run(["sh", "-c", f'cd "{gone}" && rmdir "{gone}" && exec "$0" -m libdoctor scan /bin/true',
                           sys.executable], env=loader_env({"PYTHONPATH": str(REPO),
                                                            "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache")}),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "current folder" in done.stderr, done.stderr

    @click.group(cls=_Group)
    def group() -> None:
        pass

    @group.command()
    @click.argument("which")
    def boom(which: str) -> None:
        code = errnos.EACCES if which == "denied" else errnos.ENOSPC
        raise OSError(code, os.strerror(code), "/some/where")

    for which, words in (("denied", "internal error: PermissionError"), ("full", "/some/where: No space left")):
        result = CliRunner().invoke(group, ["boom", which])
        assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output, result.output
