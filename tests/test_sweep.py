"""Real trees: libdoctor's full closure equals ld.so's, path for path, for every file."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from libdoctor.loader.elffacts import ET_DYN, ET_EXEC
from libdoctor.loader.environment import Environment
from libdoctor.loader.factstore import FactsStore
from libdoctor.loader.resolver import MODE_LIST, Resolver
from libdoctor.targets import walk_folder

from .conftest import Judge, ldso_trace, loader_env, predicted_entries

CUDA_LIB = "/usr/local/cuda-13.0/lib"
SYSTEM_LIB = "/usr/lib/x86_64-linux-gnu"


def _loadable(paths, store):
    for path in paths:
        facts = store.get_path(path)
        if getattr(facts, "dynamic", False) and facts.e_type in (ET_DYN, ET_EXEC) and facts.elf_class == 64:
            yield path


def _sweep(judge: Judge, paths, tmp_path: Path) -> int:
    env = Environment.from_process(environ=loader_env(), cwd=str(tmp_path), loader=judge.info).replace(preload_file=())
    store = FactsStore()
    resolver = Resolver(env, store)
    checked = 0
    disagreements = []
    for path in _loadable(paths, store):
        trace = ldso_trace(judge.info, path, str(tmp_path))
        if trace.returncode not in (0, 1) or "error while loading" in trace.stderr:
            continue  # a file ld.so itself refuses to list (a static PIE, a non-library)
        mine = sorted(predicted_entries(resolver.load(path, MODE_LIST)), key=str)
        if mine != sorted(trace.entries, key=str):
            disagreements.append((path, mine, trace.entries))
        checked += 1
    assert not disagreements, disagreements[:3]
    return checked


@pytest.mark.skipif(not os.path.isdir(CUDA_LIB), reason=f"{CUDA_LIB} is absent")
def test_cuda_toolkit_tree_agrees_with_ldso(judge: Judge, tmp_path: Path) -> None:
    notes: list[str] = []
    assert _sweep(judge, walk_folder(CUDA_LIB, notes), tmp_path) >= 5


@pytest.mark.skipif(not os.path.isdir(SYSTEM_LIB), reason=f"{SYSTEM_LIB} is absent")
def test_system_library_sample_agrees_with_ldso(judge: Judge, tmp_path: Path) -> None:
    files = sorted(p for p in (os.path.join(SYSTEM_LIB, n) for n in os.listdir(SYSTEM_LIB))
                   if ".so" in p and os.path.isfile(p) and not os.path.islink(p))
    step = max(1, len(files) // 200)
    assert _sweep(judge, files[::step][:200], tmp_path) >= min(50, len(files) // step // 2)
