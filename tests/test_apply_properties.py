"""Hypothesis: apply then undo restores any generated tree; a second apply creates nothing new."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from libdoctor.repair.fixer import Applier, undo
from libdoctor.rules.base import Proposal

from .test_fix import snapshot

NAMES = st.sampled_from(["libcudnn.so.7", "libcudart.so.10.0", "libfoo.so.1", "libbar.so.2", "libx.so"])
FOLDERS = st.sampled_from(["a", "b", "a/deep"])
EXISTING = st.sampled_from(["file", "link", "dangling", "dir"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(existing=st.lists(st.tuples(FOLDERS, NAMES, EXISTING), max_size=6),
       links=st.lists(st.tuples(FOLDERS, NAMES, st.sampled_from(["libreal.so.1", "../libreal.so.1"])), max_size=6),
       search=st.lists(st.sampled_from(["/opt/x", "/opt/y"]), max_size=2))
def test_apply_undo_roundtrip(existing, links, search) -> None:
    with tempfile.TemporaryDirectory() as top:
        tree, state = Path(top, "tree"), Path(top, "state")
        for folder in ("a", "b", "a/deep"):
            (tree / folder).mkdir(parents=True, exist_ok=True)
            (tree / folder / "libreal.so.1").write_bytes(b"\x7fELF real")
        for folder, name, kind in existing:
            path = tree / folder / name
            if path.exists() or path.is_symlink():
                continue
            if kind == "file":
                path.write_text("user data")
            elif kind == "link":
                os.symlink("libreal.so.1", path)
            elif kind == "dangling":
                os.symlink("nowhere", path)
            else:
                path.mkdir()
        before = snapshot(tree)
        proposals = [Proposal("test", "symlink", "t", soname=name, link=str(tree / folder / name), target=target)
                     for folder, name, target in links]
        proposals += [Proposal("test", "search-path", "s", soname=f"lib{i}.so", folder=f)
                      for i, f in enumerate(search)]
        first = Applier(str(state), None, in_place=True).apply(proposals)
        for path in before:  # nothing that was there is touched
            assert snapshot(tree)[path] == before[path]
        for created in first.created:
            if created.startswith("/"):
                assert os.path.islink(created)
        second = Applier(str(state), None, in_place=True).apply(proposals)
        assert not second.created and second.run_id is None
        if first.run_id:
            undo(str(state), first.run_id)
        assert snapshot(tree) == before
        assert undo(str(state), None) == []  # nothing left to undo
