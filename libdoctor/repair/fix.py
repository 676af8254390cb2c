"""``fix --apply``: make the changes the diagnosis chose, under the state lock, journalled."""
from __future__ import annotations

import os
from typing import Callable, Optional

from ..rules.base import Action
from ..rules.facts import ScanReport
from .fixer import Applier, Outcome, heal_paused, repair_prefix, resume_heal
from .statedir import state_dir, state_lock


def folder_identities(chosen: tuple[Action, ...]) -> dict[str, Optional[tuple[str, int, int, int, int]]]:
    """Each folder a chosen change writes into, by the path the change names it with: (its real path, device,
    inode, owner, mode) as graded, or None where it did not exist yet (libdoctor's own shim folder, made at
    apply).  Apply checks that the path still leads to that very folder: a folder swapped in between, or a
    component of its path replaced by a symlink to another folder, is refused and nothing is written there."""
    identities: dict[str, Optional[tuple[str, int, int, int, int]]] = {}
    for action in chosen:
        for path in (action.link, action.path if action.kind == "retire" else None):
            if not path:
                continue
            folder = os.path.dirname(os.path.abspath(path))
            real = os.path.realpath(folder)
            try:
                st = os.stat(real)
            except OSError:
                identities[folder] = None
                continue
            identities[folder] = (real, st.st_dev, st.st_ino, st.st_uid, st.st_mode)
    return identities


def apply_plan(report: ScanReport, root: Optional[str] = None, stop: Callable[[], bool] = lambda: False,
               healing: bool = False) -> Outcome:
    """Apply what the report's diagnosis chose, into the folders as they were when it was graded.  ``healing``:
    the daemon's heal, which leaves alone what a person undid (until they run ``fix --apply`` themselves, which
    lifts that pause)."""
    assert report.diagnosis is not None
    inputs = report.inputs
    where = repair_prefix(inputs.paths, inputs.prefix, inputs.python)
    root = root or state_dir()
    with state_lock(root, stop=stop):
        chosen = list(report.diagnosis.chosen)
        if healing:
            paused = heal_paused(root)
            chosen = [a for a in chosen if not {a.link, a.folder, a.path,
                                                 os.path.realpath(a.link) if a.link else None} & paused]
        else:
            resume_heal(root)
        applier = Applier(root, where, inputs.in_place, report.folder_identities)
        return applier.apply(chosen)
