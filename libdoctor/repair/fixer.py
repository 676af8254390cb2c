"""Applies chosen repairs: atomic, never replacing what is not ours, journalled, undoable.

Every change is recorded in a journal before it is made and confirmed after, under a lock.
Symlinks are created with ``symlinkat`` in a folder opened without following links (creation is
atomic and fails rather than replace); files go through the one atomic writer (``libdoctor.files``);
a hand-made link is retired by renaming it aside in its own folder (``linkat`` then ``unlinkat``: never
over anything), and only while it is still the link that was judged and no package owns it.
``undo`` removes or puts back only what a run did, only while it is still exactly that.
"""
from __future__ import annotations

import base64
import errno
import hashlib
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable, Mapping, Optional

from ..errors import LibdoctorError, UsageError
from ..files import NotReplaceableError, folder_risk, open_folder_nofollow, write_atomic
from ..loader.plainfiles import read_json, read_regular
from ..rules.base import FRONT, Action
from ..rules.ownership import owner_of
from ..targets import python_env
from .statedir import ensure_private_dir, state_dir, state_folder, write_private_json

JOURNAL_VERSION = 1
MARKER = "# written by libdoctor: `libdoctor undo` removes it"
RETIRED_SUFFIX = ".libdoctor-retired"


def retired_name(path: str) -> str:
    """Where a retired link goes: beside itself, hidden, under a name neither the loader nor ldconfig takes."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}{RETIRED_SUFFIX}")


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already there from an earlier run
    refused: list[str] = field(default_factory=list)  # left alone, with the reason
    run_id: Optional[str] = None
    search_path_changed: bool = False  # the activation now puts other folders on LD_LIBRARY_PATH


# -- environments and their shim folders -------------------------------------------------

MAX_STATE_BYTES = 16 << 20  # a journal or an env's state file; anything larger is not libdoctor's


def repair_prefix(targets: tuple[str, ...], prefix: Optional[str], python: Optional[str]) -> Optional[str]:
    """The environment whose shim folder and activation hold the repairs (None: not tied to a Python env)."""
    if prefix:
        return os.path.abspath(prefix)
    if python or not targets:
        return python_env(None, python).prefix
    return None


def env_slug(prefix: Optional[str]) -> str:
    if not prefix:
        return "default"
    real = os.path.realpath(prefix)
    digest = hashlib.sha256(real.encode()).hexdigest()[:10]
    return f"{os.path.basename(real.rstrip('/')) or 'root'}-{digest}"


def shim_dir(prefix: Optional[str], root: Optional[str] = None) -> str:
    return os.path.join(root or state_dir(), "shims", env_slug(prefix))


def env_state_path(prefix: Optional[str], root: Optional[str] = None) -> str:
    return os.path.join(root or state_dir(), "envs", env_slug(prefix) + ".json")


def read_env_state(prefix: Optional[str], root: Optional[str] = None) -> dict:
    try:
        data = read_json(env_state_path(prefix, root), MAX_STATE_BYTES, private=True)
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _folder_list(state: dict, key: str) -> list[str]:
    value = state.get(key, [])
    return [f for f in value if isinstance(f, str) and f] if isinstance(value, list) else []


def applied_folders(prefix: Optional[str], root: Optional[str] = None) -> tuple[list[str], list[str]]:
    """(before LD_LIBRARY_PATH, after it): the folders this environment's applied repairs add.  The shim folder
    comes first: its links are there to win (a genuine library put in front of an impostor)."""
    state = read_env_state(prefix, root)
    front = _folder_list(state, "front")
    shim = shim_dir(prefix, root)
    if os.path.isdir(shim) and any(os.path.islink(os.path.join(shim, n)) for n in os.listdir(shim)):
        front.insert(0, shim)
    return list(dict.fromkeys(front)), _folder_list(state, "folders")


def _write_json_atomic(path: str, data: dict) -> None:
    """Our own state file replaced atomically, through the checked folder (never through a planted link)."""
    folder = ensure_private_dir(os.path.dirname(path))
    write_private_json(folder, os.path.basename(path), json.dumps(data, indent=1))


# -- activation scripts ------------------------------------------------------------------

def search_path_value(front: list[str], back: list[str]) -> str:
    """LD_LIBRARY_PATH as the activation sets it, in sh: ``front``, the value it had, ``back``; never an empty
    element (which would mean the current folder) when the variable is unset or empty."""
    head, tail = ":".join(front), ":".join(back)
    if front:
        return f"{head}${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}" + (f":{tail}" if back else "")
    return f"${{LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}}{tail}"


def activation_sh(front: list[str], back: list[str]) -> str:
    return f"""{MARKER}
if [ "${{LD_LIBRARY_PATH+set}}" = set ]; then _LIBDOCTOR_SAVED_LD_LIBRARY_PATH="$LD_LIBRARY_PATH"; \\
else unset _LIBDOCTOR_SAVED_LD_LIBRARY_PATH; fi
_LIBDOCTOR_ACTIVE=1
export LD_LIBRARY_PATH="{search_path_value(front, back)}"
"""


def deactivation_sh() -> str:
    return f"""{MARKER}
if [ -n "${{_LIBDOCTOR_ACTIVE+x}}" ]; then
    if [ "${{_LIBDOCTOR_SAVED_LD_LIBRARY_PATH+set}}" = set ]; then
        export LD_LIBRARY_PATH="$_LIBDOCTOR_SAVED_LD_LIBRARY_PATH"
    else unset LD_LIBRARY_PATH; fi
    unset _LIBDOCTOR_SAVED_LD_LIBRARY_PATH _LIBDOCTOR_ACTIVE
fi
"""


def shell_settings(front: list[str], back: list[str], shell: str) -> str:
    if shell == "json":
        return json.dumps({"LD_LIBRARY_PATH_prepend": front, "LD_LIBRARY_PATH_append": back})
    if not front and not back:
        return ""
    if shell == "fish":
        return "set -gx LD_LIBRARY_PATH " + " ".join(front + ["$LD_LIBRARY_PATH"] + back) + "\n"
    return f'export LD_LIBRARY_PATH="{search_path_value(front, back)}"\n'


# -- the journal -------------------------------------------------------------------------

class Journal:
    def __init__(self, root: str, run_id: str, env_prefix: Optional[str]) -> None:
        self.path = os.path.join(root, "journal", f"{run_id}.json")
        self.data = {"version": JOURNAL_VERSION, "run_id": run_id, "env": env_prefix,
                     "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "complete": False, "actions": []}

    def intend(self, action: dict) -> dict:
        action["state"] = "intended"
        self.data["actions"].append(action)
        self.save()
        return action

    def done(self, action: dict, **facts: object) -> None:
        action.update(facts)
        action["state"] = "done"
        self.save()
        pause = os.environ.get("LIBDOCTOR_TEST_PAUSE_AFTER_CHANGE")  # lets tests kill a run midway
        if pause:
            time.sleep(float(pause))

    def drop(self, action: dict) -> None:
        self.data["actions"].remove(action)
        self.save()

    def finish(self) -> None:
        self.data["complete"] = True
        self.save()

    def save(self) -> None:
        _write_json_atomic(self.path, self.data)


def _nearest_existing(folder: str) -> str:
    path = os.path.abspath(folder)
    while not os.path.isdir(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def new_run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S") + "-" + secrets.token_hex(3)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- applying ----------------------------------------------------------------------------

_UNPLANNED = ("(not in the plan)",)


class FolderRefused(LibdoctorError):
    """A folder libdoctor would have to make inside one it must not change."""


STORAGE_ERRORS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})  # the disk, not the plan

class Applier:
    """Applies actions for one environment; the caller holds the state lock."""

    def __init__(self, root: str, env_prefix: Optional[str], in_place: bool,
                 folders: Optional[dict[str, Optional[tuple]]] = None) -> None:
        self.root = root
        self.env_prefix = env_prefix
        self.in_place = in_place
        self.folders = folders or {}  # folder as named -> (real path, dev, ino, uid, mode) as graded; None: absent
        self.outcome = Outcome(run_id=new_run_id())
        self.journal = Journal(root, self.outcome.run_id, env_prefix)
        self.made: set[str] = set()  # real paths of the folders this run made

    def apply(self, actions: list[Action]) -> Outcome:
        self.check_writable(actions)
        try:
            state_folder(self.root)  # 0755: shims below it must stay reachable by the loader
            ensure_private_dir(os.path.join(self.root, "journal"))
            self.journal.save()
        except OSError as exc:
            if exc.errno not in STORAGE_ERRORS:
                raise
            raise LibdoctorError(f"cannot write the state folder {self.root}: {exc.strerror}: nothing was "
                                 "changed") from None
        try:
            for action in actions:
                if action.kind == "retire" and not self._retire(action):
                    continue  # the replacement goes in only where the impostor went out
                if action.link and action.target:
                    self._symlink(action)
                if action.folder:
                    self._search_folder(action)
            if self.outcome.search_path_changed:
                self.write_activation()
            return self.close()
        except OSError as exc:
            if exc.errno not in STORAGE_ERRORS:
                raise
            raise LibdoctorError(f"{exc.filename or self.root}: {exc.strerror}: stopped; "
                                 f"{self._roll_back()}") from None

    def _roll_back(self) -> str:
        """A run a full or read-only disk stopped: what it made is taken back at once (removing frees space)."""
        left: list[str] = []
        for action in reversed(self.journal.data["actions"]):
            undo_one = _UNDO.get(action.get("kind", ""))
            if undo_one is not None and action.get("state") == "done":
                try:
                    undo_one(action, left)
                except OSError as exc:  # taking back needs a write too (the env's state): left for undo
                    left.append(f"left {action.get('path') or action.get('folder')}: {exc.strerror or exc}")
        kept = [line for line in left if line.startswith("left ")]
        try:
            if kept:
                self.journal.data["undone"] = None
                self.journal.save()
            else:
                os.unlink(self.journal.path)
        except OSError:
            pass
        if kept:
            return f"some of its changes stay; once there is space: libdoctor undo {self.outcome.run_id}"
        return "what this run had made was taken back: nothing was changed"

    def check_writable(self, actions: list[Action]) -> None:
        """Every folder the run will write to, checked before the first change: all or nothing."""
        folders = {self.root: "the state folder"}
        for action in actions:
            if action.link:
                folders.setdefault(os.path.dirname(action.link), "the link's folder")
            if action.kind == "retire" and action.path:
                folders.setdefault(os.path.dirname(action.path), "the folder of the link to rename aside")
        if self.env_prefix and os.path.isdir(os.path.join(self.env_prefix, "conda-meta")):
            folders.setdefault(os.path.join(self.env_prefix, "etc", "conda"), "the env's activation folder")
        for folder, what in folders.items():
            existing = _nearest_existing(folder)
            if not os.access(existing, os.W_OK | os.X_OK):
                advice = ("run as its owner, or without --in-place (links then go to libdoctor's own folder)"
                          if self.in_place and what == "the link's folder" else
                          "run as its owner" if what.startswith("the folder of the link") else
                          "run as its owner, or set LIBDOCTOR_STATE_DIR to a folder you can write")
                raise UsageError(f"cannot write {existing} ({what}): nothing was changed; {advice}")

    def close(self) -> Outcome:
        self.journal.finish()
        if not any(a["state"] == "done" for a in self.journal.data["actions"]):
            os.unlink(self.journal.path)  # nothing changed: no run to undo
            self.outcome.run_id = None
        return self.outcome

    def _checked_folder(self, path: str) -> Optional[int]:
        """A descriptor of ``path``'s real folder, safe to write in and the one the plan verified; else None (the
        refusal recorded)."""
        textual = os.path.dirname(os.path.abspath(path))
        real_folder = os.path.realpath(textual)
        unsafe = folder_risk(real_folder)
        if unsafe:
            self.outcome.refused.append(f"{path}: refused: {unsafe}")
            return None
        try:
            fd = open_folder_nofollow(real_folder)  # from "/" down, no component followed: a swap now fails here
        except LibdoctorError as exc:
            self.outcome.refused.append(f"{path}: refused: {exc} (changed while applying): nothing written")
            return None
        st = os.fstat(fd)
        planned = self.folders.get(textual, _UNPLANNED)
        now = (real_folder, st.st_dev, st.st_ino, st.st_uid, st.st_mode)
        if planned is None and real_folder not in self.made:
            planned = ("(absent when planned)",)  # it appeared since, and not by this run: not ours to fill
        if planned not in (_UNPLANNED, None) and planned != now:
            os.close(fd)
            self.outcome.refused.append(f"{path}: refused: {textual} no longer leads to the folder the plan "
                                        f"verified (replaced, or a link to {real_folder} put in its path): "
                                        "nothing written")
            return None
        return fd

    def _symlink(self, action: Action) -> None:
        assert action.link and action.target
        folder, name = os.path.split(action.link)
        if not self.in_place or not os.path.isdir(folder):
            try:
                self._mkdir(folder)  # libdoctor's own shim folder: made, or checked to be a real folder of ours
            except FolderRefused as exc:
                self.outcome.refused.append(str(exc))
                return
        fd = self._checked_folder(action.link)
        if fd is None:
            return
        try:
            try:
                existing = os.readlink(name, dir_fd=fd)
            except FileNotFoundError:
                existing = None
            except OSError:
                self.outcome.refused.append(f"{action.link}: exists and is not a link: left alone")
                return
            if existing is not None:
                if existing == action.target:
                    self.outcome.kept.append(action.link)
                else:
                    self.outcome.refused.append(f"{action.link}: exists (-> {existing}): left alone")
                return
            real = os.path.join(os.path.realpath(folder), name)
            record = self.journal.intend({"kind": "symlink", "path": real, "target": action.target,
                                          "proposal": action.id, "grade": action.grade})
            try:
                os.symlink(action.target, name, dir_fd=fd)
            except FileExistsError:
                self.journal.drop(record)
                self.outcome.refused.append(f"{action.link}: appeared meanwhile: left alone")
                return
            st = os.lstat(name, dir_fd=fd)
            self.journal.done(record, dev=st.st_dev, ino=st.st_ino)
            self.outcome.created.append(action.link)
            self.outcome.search_path_changed |= os.path.realpath(folder).startswith(
                os.path.realpath(self.root) + os.sep)
        finally:
            os.close(fd)

    def _retire(self, action: Action) -> bool:
        """Rename the hand-made link aside, in its own folder; True when it is out of the way (now or before)."""
        assert action.path
        source = action.path
        destination = retired_name(source)
        if not os.path.lexists(source) and os.path.lexists(destination):
            self.outcome.kept.append(f"{source} renamed aside")
            return True
        owner = owner_of(source)
        if owner is not None:
            self.outcome.refused.append(f"{source}: refused: {owner} owns it; libdoctor never renames what a "
                                        "package installed")
            return False
        fd = self._checked_folder(source)
        if fd is None:
            return False
        name, aside = os.path.basename(source), os.path.basename(destination)
        try:
            try:
                text = os.readlink(name, dir_fd=fd)
            except OSError:
                self.outcome.refused.append(f"{source}: no longer a link: left alone")
                return False
            if action.was is not None and text != action.was:
                self.outcome.refused.append(f"{source}: changed since it was judged (-> {text}): left alone")
                return False
            record = self.journal.intend({"kind": "rename", "path": os.path.join(os.path.dirname(source), aside),
                                          "source": source, "target": text, "proposal": action.id})
            try:
                os.link(name, aside, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)  # never over anything
                os.unlink(name, dir_fd=fd)
            except OSError as exc:
                self.journal.drop(record)
                self.outcome.refused.append(f"{source}: not renamed aside: {exc.strerror}")
                return False
            self.journal.done(record)
            self.outcome.created.append(f"{source} renamed aside to {aside}")
            return True
        finally:
            os.close(fd)

    def _mkdir(self, folder: str) -> None:
        """``folder`` and its missing parents, each journalled; an existing component inside libdoctor's state
        folder must be a real folder (a planted symlink is refused, never followed)."""
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            st = None
        if st is not None:
            inside = os.path.abspath(folder).startswith(os.path.abspath(self.root) + os.sep)
            if inside and stat.S_ISLNK(st.st_mode):
                raise LibdoctorError(f"{folder}: a symlink where libdoctor keeps its shims: refused (never "
                                     "followed); remove it and run again")
            if not stat.S_ISDIR(os.stat(folder).st_mode):
                raise LibdoctorError(f"{folder}: not a folder")
            return
        parent = os.path.dirname(folder)
        self._mkdir(parent)
        unsafe = folder_risk(os.path.realpath(parent))
        if unsafe:  # root making a folder in a user's tree (a conda env's etc/conda): not ours to change
            raise FolderRefused(f"{folder}: not made: {unsafe}")
        record = self.journal.intend({"kind": "mkdir", "path": folder})
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            self.journal.drop(record)
            return
        self.made.add(os.path.realpath(folder))
        self.journal.done(record)

    def _search_folder(self, action: Action) -> None:
        assert action.folder
        key = "front" if action.position == FRONT else "folders"
        state = read_env_state(self.env_prefix, self.root)
        folders = _folder_list(state, key)
        shown = f"search path {action.folder}" + (" (first)" if key == "front" else "")
        if action.folder in folders:
            self.outcome.kept.append(shown)
            return
        record = self.journal.intend({"kind": "search-path", "folder": action.folder, "position": key,
                                      "env_state": env_state_path(self.env_prefix, self.root)})
        state[key] = folders + [action.folder]
        _write_json_atomic(env_state_path(self.env_prefix, self.root), state)
        self.journal.done(record)
        self.outcome.created.append(shown)
        self.outcome.search_path_changed = True

    def write_activation(self) -> None:
        """For a conda env: the one pair of activate.d/deactivate.d scripts that put the applied folders on
        LD_LIBRARY_PATH (fix --apply and hook install share it)."""
        prefix = self.env_prefix
        if not prefix or not os.path.isdir(os.path.join(prefix, "conda-meta")):
            return
        front, back = applied_folders(prefix, self.root)
        front = list(dict.fromkeys([shim_dir(prefix, self.root)] + front))
        for sub, text in (("activate.d", activation_sh(front, back)), ("deactivate.d", deactivation_sh())):
            self.write_file(os.path.join(prefix, "etc", "conda", sub, "libdoctor.sh"), text)

    def rename(self, source: str, destination: str) -> None:
        """Move a file aside (never over an existing one); undo moves it back."""
        record = self.journal.intend({"kind": "rename", "path": destination, "source": source})
        try:
            os.link(source, destination, follow_symlinks=False)  # fails if destination exists
            os.unlink(source)
        except OSError as exc:
            self.journal.drop(record)
            self.outcome.refused.append(f"{source}: not moved aside: {exc.strerror}")
            return
        self.journal.done(record)
        self.outcome.created.append(f"{source} moved to {destination}")

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        data = text.encode()
        folder, name = os.path.split(path)
        if not os.path.isdir(folder):
            try:
                self._mkdir(folder)  # journalled, so undo leaves the tree as it found it
            except FolderRefused as exc:
                self.outcome.refused.append(f"{exc}; as the owner of that folder, run the same `libdoctor fix "
                                            "--apply` (or `eval \"$(libdoctor env)\"` in the shell)")
                return
        fd = self._checked_folder(path)
        if fd is None:
            return
        try:
            try:
                with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=fd), "rb") as handle:
                    current: Optional[bytes] = handle.read(MAX_STATE_BYTES)
            except FileNotFoundError:
                current = None
            except OSError:
                current = b""
            if current is not None:
                if current == data:
                    self.outcome.kept.append(path)
                elif current.startswith(MARKER.encode()) and self._ours(path, current):
                    self._replace_ours(fd, path, data, current)
                else:
                    self.outcome.refused.append(f"{path}: exists and was not written by libdoctor: left alone")
                return
            record = self.journal.intend({"kind": "file", "path": path, "sha256": _sha256(data)})
            try:
                write_atomic(path, data, mode, replace=False, folder_fd=fd)
            except (FileExistsError, NotReplaceableError):
                self.journal.drop(record)
                self.outcome.refused.append(f"{path}: appeared meanwhile: left alone")
                return
            self.journal.done(record)
            self.outcome.created.append(path)
        finally:
            os.close(fd)

    def _ours(self, path: str, current: bytes) -> bool:
        """Was this exact content written by a recorded run?"""
        digest = _sha256(current)
        return any(a.get("kind") in ("file", "file-update") and a.get("path") == path and a.get("sha256") == digest
                   for j in load_journals(self.root) for a in j["actions"])

    def _replace_ours(self, fd: int, path: str, data: bytes, current: bytes) -> None:
        mode = stat.S_IMODE(os.lstat(os.path.basename(path), dir_fd=fd).st_mode)
        record = self.journal.intend({"kind": "file-update", "path": path, "sha256": _sha256(data),
                                      "previous_b64": base64.b64encode(current).decode("ascii"),
                                      "previous_mode": mode})
        write_atomic(path, data, folder_fd=fd)  # replaces only a file a run of ours wrote; its mode is kept
        self.journal.done(record)
        self.outcome.created.append(path)


# -- undo --------------------------------------------------------------------------------

RUN_ID = re.compile(r"^\d{8}T\d{6}-[0-9a-f]{6}$")  # new_run_id's shape: nothing else names a journal


def _journal_files(root: str) -> list[str]:
    try:
        return sorted(n for n in os.listdir(os.path.join(root, "journal")) if n.endswith(".json")
                      and not n.startswith("."))
    except OSError:
        return []


def _read_journal(root: str, name: str) -> tuple[Optional[dict], Optional[str]]:
    """A journal, or why it cannot be one of ours (never believed, never fatal)."""
    try:
        data = read_json(os.path.join(root, "journal", name), MAX_STATE_BYTES, private=True)
    except (OSError, ValueError) as exc:
        return None, f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
    if not isinstance(data, dict) or data.get("version") != JOURNAL_VERSION:
        return None, "not a libdoctor journal of this version"
    run_id = data.get("run_id")
    if not isinstance(run_id, str) or not RUN_ID.match(run_id) or f"{run_id}.json" != name:
        return None, "its run id is not valid or does not match its file name"
    if not isinstance(data.get("actions"), list) or not all(isinstance(a, dict) for a in data["actions"]):
        return None, "its list of changes is malformed"
    return data, None


def load_journals(root: str) -> list[dict]:
    """The runs that can still be undone (valid journals only; see :func:`journal_problems`)."""
    journals = []
    for name in _journal_files(root):
        data, _problem = _read_journal(root, name)
        if data is not None and not data.get("undone"):
            journals.append(data)
    return journals


@lru_cache(maxsize=4)
def _links_in_journals(root: str, stamp: int) -> Mapping[str, str]:
    return {action["path"]: journal["run_id"] for journal in load_journals(root) for action in journal["actions"]
            if action.get("kind") == "symlink" and isinstance(action.get("path"), str)}


def journal_links(root: Optional[str] = None) -> Mapping[str, str]:
    """link path -> run id, for every link a journal of ours made (read once per state of the journal folder)."""
    root = root or state_dir()
    try:
        stamp = os.stat(os.path.join(root, "journal")).st_mtime_ns
    except OSError:
        return {}
    return _links_in_journals(root, stamp)


def journal_problems(root: str) -> list[str]:
    """One line per journal file that is not a valid journal: named, never blocking the others."""
    lines = []
    for name in _journal_files(root):
        _data, problem = _read_journal(root, name)
        if problem:
            lines.append(f"left {os.path.join(root, 'journal', name)}: {problem}; what it made, if anything, "
                         "stays: inspect it and remove by hand")
    return lines


def _undo_symlink(action: dict, report: list[str]) -> None:
    path = action["path"]
    folder, name = os.path.split(path)
    try:
        fd = open_folder_nofollow(os.path.realpath(folder))
    except LibdoctorError as exc:
        report.append(f"left {path}: {exc}")
        return
    try:
        st = os.lstat(name, dir_fd=fd)
        target = os.readlink(name, dir_fd=fd) if stat.S_ISLNK(st.st_mode) else None
        same = target == action.get("target") and (
            action.get("ino") is None or (st.st_dev, st.st_ino) == (action.get("dev"), action.get("ino")))
        if not same:
            report.append(f"left {path}: changed since libdoctor created it")
            return
        os.unlink(name, dir_fd=fd)
        report.append(f"removed {path}")
    except FileNotFoundError:
        report.append(f"{path}: already gone")
    finally:
        os.close(fd)


def _still_written(action: dict, report: list[str]) -> bool:
    """Is the file still exactly what the run wrote?"""
    path = action["path"]
    try:
        current = read_regular(path, MAX_STATE_BYTES)
    except FileNotFoundError:
        report.append(f"{path}: already gone")
        return False
    except OSError as exc:
        report.append(f"left {path}: {exc.strerror or exc}")
        return False
    if _sha256(current) != action.get("sha256"):
        report.append(f"left {path}: changed since libdoctor wrote it")
        return False
    return True


TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}$")  # what libdoctor.files.write_atomic names


def remove_temporaries(folder: str, wanted: Callable[[str], bool]) -> None:
    """Temporary files libdoctor left when it was killed mid-write (``.NAME.XXXXXXXX`` for a file NAME it writes):
    ours by their name, created with O_EXCL; removed under the state lock so that no live writer owns them."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = TEMPORARY.match(name)
        path = os.path.join(folder, name)
        if match and wanted(match.group("name")) and os.path.isfile(path) and not os.path.islink(path):
            try:
                os.unlink(path)
            except OSError:
                pass


def _undo_file(action: dict, report: list[str]) -> None:
    if _still_written(action, report):
        os.unlink(action["path"])
        report.append(f"removed {action['path']}")
    name = os.path.basename(action["path"])
    remove_temporaries(os.path.dirname(action["path"]), lambda leftover: leftover == name)


def previous_content(action: dict) -> Optional[tuple[bytes, Optional[int]]]:
    """What a file held before a run replaced it (bytes, mode), or None when the journal does not say."""
    encoded = action.get("previous_b64")
    mode = action.get("previous_mode")
    mode = mode if isinstance(mode, int) and 0 <= mode <= 0o7777 else None
    if isinstance(encoded, str):
        try:
            return base64.b64decode(encoded, validate=True), mode
        except ValueError:
            return None
    if isinstance(action.get("previous"), str):  # journals of earlier versions kept the text
        return action["previous"].encode("utf-8"), mode
    return None


def _undo_file_update(action: dict, report: list[str]) -> None:
    previous = previous_content(action)
    if previous is None:
        report.append(f"left {action['path']}: the journal does not hold what it was before")
        return
    if _still_written(action, report):
        data, mode = previous
        try:
            write_atomic(action["path"], data, mode)
        except (OSError, LibdoctorError) as exc:
            report.append(f"left {action['path']}: {getattr(exc, 'strerror', None) or exc}")
            return
        report.append(f"restored {action['path']}")


def _undo_mkdir(action: dict, report: list[str]) -> None:
    try:
        os.rmdir(action["path"])
        report.append(f"removed {action['path']}")
    except FileNotFoundError:
        pass
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            report.append(f"left {action['path']}: not empty")


def _undo_search_path(action: dict, report: list[str]) -> None:
    state_path = action.get("env_state")
    try:
        state = read_json(state_path, MAX_STATE_BYTES, private=True)
    except (OSError, ValueError, TypeError):
        return
    if not isinstance(state, dict):
        return
    key = action.get("position") if action.get("position") in ("front", "folders") else "folders"
    state[key] = [f for f in _folder_list(state, key) if f != action.get("folder")]
    _write_json_atomic(state_path, state)
    report.append(f"removed search path {action.get('folder')}")


def _undo_rename(action: dict, report: list[str]) -> None:
    source, moved = action.get("source"), action["path"]
    if not os.path.lexists(moved):
        report.append(f"{moved}: already gone")
        return
    if isinstance(source, str) and _same_file(source, moved):  # killed between the link and the unlink
        os.unlink(moved)
        report.append(f"restored {source}")
        return
    if action.get("target") is not None:
        try:
            if os.readlink(moved) != action["target"]:
                report.append(f"left {moved}: changed since libdoctor renamed it")
                return
        except OSError:
            report.append(f"left {moved}: no longer the link libdoctor renamed")
            return
    try:
        os.link(moved, source, follow_symlinks=False)  # only while the original name is free again
        os.unlink(moved)
        report.append(f"restored {source}")
    except OSError as exc:
        report.append(f"left {moved}: {source} cannot be restored ({exc.strerror})")


def _same_file(a: str, b: str) -> bool:
    try:
        first, second = os.lstat(a), os.lstat(b)
    except OSError:
        return False
    return (first.st_dev, first.st_ino) == (second.st_dev, second.st_ino)


_UNDO = {"symlink": _undo_symlink, "file": _undo_file, "file-update": _undo_file_update, "mkdir": _undo_mkdir,
         "search-path": _undo_search_path, "rename": _undo_rename}


def undo(root: str, run_id: Optional[str]) -> list[str]:
    """Undo one run (or all, newest first); returns one line per thing removed or left alone.  The caller holds
    the state lock."""
    if run_id is not None and not RUN_ID.match(run_id):
        raise LibdoctorError(f"{run_id!r} is not a run id (like 20261130T013955-944ab5; see `libdoctor undo --list`)")
    remove_temporaries(os.path.join(root, "journal"), lambda name: name.endswith(".json"))
    journals = load_journals(root)
    chosen = [j for j in journals if run_id is None or j["run_id"] == run_id]
    if run_id is not None and not chosen:
        raise LibdoctorError(f"no run {run_id} to undo (see `libdoctor undo --list`)")
    report: list[str] = []
    restored: list[str] = []
    for journal in sorted(chosen, key=lambda j: j["run_id"], reverse=True):
        for action in reversed(journal["actions"]):
            problem = action_problem(action)
            if problem:
                report.append(f"left a change of run {journal['run_id']}: {problem}: skipped, the others undone")
                continue
            _UNDO[action["kind"]](action, report)
            restored.append(action.get("folder") or action["path"])
    if restored:
        pause_heal(root, restored)
        journal["undone"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_json_atomic(os.path.join(root, "journal", f"{journal['run_id']}.json"), journal)
    return report + (journal_problems(root) + orphaned_folders(root) if run_id is None else [])


HEAL_PAUSE = os.path.join("heal", "paused.json")  # what a person undid: the heal leaves it alone until `fix --apply`


def pause_heal(root: str, paths: list[str]) -> None:
    """The daemon must not make again what a person just undid (it would within seconds)."""
    paused = sorted(heal_paused(root) | set(paths))
    _write_json_atomic(os.path.join(root, HEAL_PAUSE), {"paths": paused})


def heal_paused(root: str) -> frozenset[str]:
    try:
        data = read_json(os.path.join(root, HEAL_PAUSE), MAX_STATE_BYTES, private=True)
    except (OSError, ValueError):
        return frozenset()
    paths = data.get("paths") if isinstance(data, dict) else None
    return frozenset(p for p in paths if isinstance(p, str)) if isinstance(paths, list) else frozenset()


def resume_heal(root: str) -> None:
    """A person ran `fix --apply`: the daemon may heal everything again."""
    try:
        os.unlink(os.path.join(root, HEAL_PAUSE))
    except OSError:
        pass


_PATH_FIELDS = {"symlink": ("path",), "file": ("path", "sha256"), "file-update": ("path", "sha256"),
                "mkdir": ("path",), "search-path": ("folder", "env_state"), "rename": ("path", "source")}


def action_problem(action: dict) -> Optional[str]:
    """Why a journal's change cannot be undone as written (None: it can), field by field: a change whose kind,
    path or state the journal does not hold is named and skipped, never blocking the others."""
    kind = action.get("kind")
    if kind not in _UNDO:
        return f"unknown kind {str(kind)[:40]!r}"
    if action.get("state") not in ("intended", "done"):
        return "no state"
    for name in _PATH_FIELDS[kind]:
        value = action.get(name)
        if not isinstance(value, str) or not value or "\0" in value:
            return f"{kind} without a valid {name}"
        if name != "sha256" and not os.path.isabs(value):
            return f"{kind} with a relative {name}"
    return None


def orphaned_folders(root: str) -> list[str]:
    """Search folders an environment's state still adds that no journal records: their run's journal is gone,
    so undo cannot take them back (named, with what to do)."""
    recorded = {(a.get("env_state"), a.get("folder")) for j in load_journals(root) for a in j["actions"]
                if a.get("kind") == "search-path" and "undone" not in j}
    lines = []
    for name in sorted(names_or_empty(os.path.join(root, "envs"))):
        path = os.path.join(root, "envs", name)
        try:
            state = read_json(path, MAX_STATE_BYTES, private=True)
        except (OSError, ValueError):
            continue
        if not isinstance(state, dict):
            continue
        for key in ("front", "folders"):
            for folder in _folder_list(state, key):
                if (path, folder) not in recorded:
                    lines.append(f"left search path {folder} in {path}: the journal of the run that added it is "
                                 "gone; remove the folder from that file by hand if it is not wanted")
    return lines


def names_or_empty(folder: str) -> list[str]:
    try:
        return [n for n in os.listdir(folder) if n.endswith(".json") and not n.startswith(".")]
    except OSError:
        return []
