"""``fix --apply``: make the changes the diagnosis chose, under the state lock, journalled."""
from __future__ import annotations

import os
from typing import Optional

from ..rules.base import Action
from ..rules.facts import ScanReport
from .fixer import Applier, Outcome, repair_prefix
from .statedir import state_dir, state_lock


def folder_identities(chosen: tuple[Action, ...]) -> dict[str, tuple[int, int, int, int]]:
    """(device, inode, owner, mode) of each existing folder a chosen change writes into, as graded: apply checks
    the folder it opens is still that one (a folder swapped in between is refused, nothing written)."""
    identities = {}
    for action in chosen:
        for path in (action.link, action.path if action.kind == "retire" else None):
            if not path:
                continue
            folder = os.path.realpath(os.path.dirname(path))
            try:
                st = os.stat(folder)
            except OSError:
                continue  # not there yet: libdoctor's own shim folder, made at apply
            identities[folder] = (st.st_dev, st.st_ino, st.st_uid, st.st_mode)
    return identities


def apply_plan(report: ScanReport, root: Optional[str] = None) -> Outcome:
    """Apply what the report's diagnosis chose, into the folders as they were when it was graded."""
    assert report.diagnosis is not None
    inputs = report.inputs
    where = repair_prefix(inputs.paths, inputs.prefix, inputs.python)
    root = root or state_dir()
    with state_lock(root):
        applier = Applier(root, where, inputs.in_place, report.folder_identities)
        return applier.apply(list(report.diagnosis.chosen))
