"""Hostile inputs never hang libdoctor: FIFOs where a library, a cache, a journal or a configuration should be."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ElfFactory, Judge, loader_env

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
