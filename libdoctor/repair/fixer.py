"""Plans and applies verified repairs: atomic, never replacing anything, journalled, undoable.

Every change is recorded in a journal before it is made and confirmed after, under a lock.
Symlinks are created with ``symlinkat`` in a folder opened without following links (creation is
atomic and fails rather than replace); files are written under a temporary name and linked
into place (``linkat`` also refuses to replace).  ``undo`` removes only what a run created and
only while it is still exactly what was created.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import secrets
import stat
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..errors import LibdoctorError, UsageError
from ..loader.elffacts import read_regular
from ..rules.base import Proposal
from .statedir import ensure_private_dir, open_folder_nofollow, state_dir, state_folder, write_private_json

JOURNAL_VERSION = 1
MARKER = "# written by libdoctor: `libdoctor undo` removes it"


@dataclass
class Outcome:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # already there from an earlier run
    refused: list[str] = field(default_factory=list)  # left alone, with the reason
    run_id: Optional[str] = None


# -- environments and their shim folders -------------------------------------------------

MAX_STATE_BYTES = 16 << 20  # a journal or an env's state file; anything larger is not libdoctor's


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
        data = json.loads(read_regular(env_state_path(prefix, root), MAX_STATE_BYTES, private=True))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def search_additions(prefix: Optional[str], root: Optional[str] = None) -> list[str]:
    """The folders the applied repairs of this environment put on LD_LIBRARY_PATH, in order."""
    state = read_env_state(prefix, root)
    folders = list(state.get("folders", []))
    shim = shim_dir(prefix, root)
    if os.path.isdir(shim) and any(os.path.islink(os.path.join(shim, n)) for n in os.listdir(shim)):
        folders.insert(0, shim)
    return folders


def _write_json_atomic(path: str, data: dict) -> None:
    """Our own state file replaced atomically, through the checked folder (never through a planted link)."""
    folder = ensure_private_dir(os.path.dirname(path))
    write_private_json(folder, os.path.basename(path), json.dumps(data, indent=1))


# -- activation scripts ------------------------------------------------------------------

def activation_sh(folders: list[str]) -> str:
    joined = ":".join(folders)
    return f"""{MARKER}
if [ "${{LD_LIBRARY_PATH+set}}" = set ]; then _LIBDOCTOR_SAVED_LD_LIBRARY_PATH="$LD_LIBRARY_PATH"; \
else unset _LIBDOCTOR_SAVED_LD_LIBRARY_PATH; fi
_LIBDOCTOR_ACTIVE=1
export LD_LIBRARY_PATH="${{LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}}{joined}"
"""


def deactivation_sh() -> str:
    return f"""{MARKER}
if [ -n "${{_LIBDOCTOR_ACTIVE+x}}" ]; then
    if [ "${{_LIBDOCTOR_SAVED_LD_LIBRARY_PATH+set}}" = set ]; then export LD_LIBRARY_PATH="$_LIBDOCTOR_SAVED_LD_LIBRARY_PATH"
    else unset LD_LIBRARY_PATH; fi
    unset _LIBDOCTOR_SAVED_LD_LIBRARY_PATH _LIBDOCTOR_ACTIVE
fi
"""


def shell_settings(folders: list[str], shell: str) -> str:
    if shell == "json":
        return json.dumps({"LD_LIBRARY_PATH_append": folders})
    if not folders:
        return ""
    if shell == "fish":
        return f"set -gx LD_LIBRARY_PATH $LD_LIBRARY_PATH {' '.join(folders)}\n"
    return f'export LD_LIBRARY_PATH="${{LD_LIBRARY_PATH:+$LD_LIBRARY_PATH:}}{":".join(folders)}"\n'


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


def folder_risk(folder: str, mode: int) -> Optional[str]:
    """Why links must not go into ``folder``: writable by others (anyone there can swap or plant files), or, for
    root, owned by another user (who can replace it between any check and the write)."""
    if mode & stat.S_IWOTH:
        return f"{folder} is world-writable"
    try:
        st = os.stat(folder)
    except OSError as exc:
        return f"{folder}: {exc.strerror}"
    if st.st_mode & stat.S_IWGRP:
        return f"{folder} is group-writable"
    if st.st_uid not in (os.geteuid(), 0):
        return f"{folder} belongs to another user (uid {st.st_uid})"
    return None


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

def _write_temporary(folder_fd: int, name: str, data: bytes, mode: int = 0o644) -> str:
    """``data`` in a new, fsynced file beside ``name``; returns the temporary name."""
    tmp = f".{name}.{secrets.token_hex(4)}"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode, dir_fd=folder_fd)
    os.fchmod(out, mode)  # not reduced by the umask: a wrapper must stay executable
    with open(out, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    return tmp


class Applier:
    """Applies proposals for one environment; the caller holds the state lock."""

    def __init__(self, root: str, env_prefix: Optional[str], in_place: bool,
                 folders: Optional[dict[str, tuple[int, int, int, int]]] = None) -> None:
        self.root = root
        self.env_prefix = env_prefix
        self.in_place = in_place
        self.folders = folders or {}  # real folder -> (dev, ino, uid, mode) when the plan was verified
        self.outcome = Outcome(run_id=new_run_id())
        self.journal = Journal(root, self.outcome.run_id, env_prefix)

    def apply(self, proposals: list[Proposal]) -> Outcome:
        self.check_writable(proposals)
        state_folder(self.root)  # 0755: shims below it must stay reachable by the loader
        ensure_private_dir(os.path.join(self.root, "journal"))
        self.journal.save()
        for proposal in proposals:
            if proposal.kind == "symlink":
                self._symlink(proposal)
            elif proposal.kind == "search-path":
                self._search_folder(proposal)
        if not self.in_place and self.outcome.created:
            self.write_activation()
        return self.close()

    def check_writable(self, proposals: list[Proposal]) -> None:
        """Every folder the run will write to, checked before the first change: all or nothing."""
        folders = {self.root: "the state folder"}
        for proposal in proposals:
            if proposal.kind == "symlink" and proposal.link:
                folders.setdefault(os.path.dirname(proposal.link), "the link's folder")
        if not self.in_place and self.env_prefix and os.path.isdir(os.path.join(self.env_prefix, "conda-meta")):
            folders.setdefault(os.path.join(self.env_prefix, "etc", "conda"), "the env's activation folder")
        for folder, what in folders.items():
            existing = _nearest_existing(folder)
            if not os.access(existing, os.W_OK | os.X_OK):
                advice = ("run as its owner, or without --in-place (links then go to libdoctor's own folder)"
                          if self.in_place and what == "the link's folder" else
                          "run as its owner, or set LIBDOCTOR_STATE_DIR to a folder you can write")
                raise UsageError(f"cannot write {existing} ({what}): nothing was changed; {advice}")

    def close(self) -> Outcome:
        self.journal.finish()
        if not any(a["state"] == "done" for a in self.journal.data["actions"]):
            os.unlink(self.journal.path)  # nothing changed: no run to undo
            self.outcome.run_id = None
        return self.outcome

    def _symlink(self, proposal: Proposal) -> None:
        assert proposal.link and proposal.target
        folder, name = os.path.split(proposal.link)
        if not self.in_place:
            self._mkdir(folder)  # libdoctor's own shim folder: made, or checked to be a real folder of ours
        real_folder = os.path.realpath(folder)
        try:
            mode = os.stat(real_folder).st_mode
        except OSError as exc:
            self.outcome.refused.append(f"{proposal.link}: {exc.strerror}")
            return
        unsafe = folder_risk(real_folder, mode)
        if unsafe:
            self.outcome.refused.append(f"{proposal.link}: refused: {unsafe}")
            return
        fd = open_folder_nofollow(real_folder)
        try:
            st = os.fstat(fd)
            planned = self.folders.get(real_folder)
            if planned is not None and planned != (st.st_dev, st.st_ino, st.st_uid, st.st_mode):
                self.outcome.refused.append(f"{proposal.link}: refused: {real_folder} is not the folder the plan "
                                            "verified (replaced or changed since): nothing written")
                return
            try:
                existing = os.readlink(name, dir_fd=fd)
            except FileNotFoundError:
                existing = None
            except OSError:
                self.outcome.refused.append(f"{proposal.link}: exists and is not a link: left alone")
                return
            if existing is not None:
                if existing == proposal.target:
                    self.outcome.kept.append(proposal.link)
                else:
                    self.outcome.refused.append(f"{proposal.link}: exists (-> {existing}): left alone")
                return
            action = self.journal.intend({"kind": "symlink", "path": os.path.join(real_folder, name),
                                          "target": proposal.target, "proposal": proposal.id,
                                          "grade": proposal.grade})
            try:
                os.symlink(proposal.target, name, dir_fd=fd)
            except FileExistsError:
                self.journal.drop(action)
                self.outcome.refused.append(f"{proposal.link}: appeared meanwhile: left alone")
                return
            st = os.lstat(name, dir_fd=fd)
            self.journal.done(action, dev=st.st_dev, ino=st.st_ino)
            self.outcome.created.append(proposal.link)
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
        self._mkdir(os.path.dirname(folder))
        action = self.journal.intend({"kind": "mkdir", "path": folder})
        try:
            os.mkdir(folder, 0o755)
        except FileExistsError:
            self.journal.drop(action)
            return
        self.journal.done(action)

    def _search_folder(self, proposal: Proposal) -> None:
        assert proposal.folder
        state = read_env_state(self.env_prefix, self.root)
        folders = list(state.get("folders", []))
        if proposal.folder in folders:
            self.outcome.kept.append(f"search path {proposal.folder}")
            return
        action = self.journal.intend({"kind": "search-path", "folder": proposal.folder,
                                      "env_state": env_state_path(self.env_prefix, self.root)})
        folders.append(proposal.folder)
        state["folders"] = folders
        _write_json_atomic(env_state_path(self.env_prefix, self.root), state)
        self.journal.done(action)
        self.outcome.created.append(f"search path {proposal.folder}")

    def write_activation(self) -> None:
        """For a conda env: the one pair of activate.d/deactivate.d scripts that put the shim folder and
        the added search folders on LD_LIBRARY_PATH (fix --apply and hook install share it)."""
        prefix = self.env_prefix
        if not prefix or not os.path.isdir(os.path.join(prefix, "conda-meta")):
            return
        folders = list(dict.fromkeys([shim_dir(prefix, self.root)] + search_additions(prefix, self.root)))
        for sub, text in (("activate.d", activation_sh(folders)), ("deactivate.d", deactivation_sh())):
            self.write_file(os.path.join(prefix, "etc", "conda", sub, "libdoctor.sh"), text)

    def rename(self, source: str, destination: str) -> None:
        """Move a file aside (never over an existing one); undo moves it back."""
        action = self.journal.intend({"kind": "rename", "path": destination, "source": source})
        try:
            os.link(source, destination, follow_symlinks=False)  # fails if destination exists
            os.unlink(source)
        except OSError as exc:
            self.journal.drop(action)
            self.outcome.refused.append(f"{source}: not moved aside: {exc.strerror}")
            return
        self.journal.done(action)
        self.outcome.created.append(f"{source} moved to {destination}")

    def write_file(self, path: str, text: str, mode: int = 0o644) -> None:
        data = text.encode()
        folder, name = os.path.split(path)
        if not os.path.isdir(folder):
            self._mkdir(folder)  # journalled, so undo leaves the tree as it found it
        unsafe = folder_risk(os.path.realpath(folder), os.stat(folder).st_mode)
        if unsafe:
            self.outcome.refused.append(f"{path}: refused: {unsafe}")
            return
        fd = open_folder_nofollow(os.path.realpath(folder))
        try:
            try:
                with open(os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=fd), "rb") as handle:
                    current = handle.read()
            except FileNotFoundError:
                current = None
            except OSError:
                current = b""
            if current is not None:
                if current == data:
                    self.outcome.kept.append(path)
                elif current.startswith(MARKER.encode()) and self._ours(path, current):
                    self._replace_ours(fd, name, path, data, current)
                else:
                    self.outcome.refused.append(f"{path}: exists and was not written by libdoctor: left alone")
                return
            action = self.journal.intend({"kind": "file", "path": path, "sha256": _sha256(data)})
            tmp = _write_temporary(fd, name, data, mode)
            try:
                os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)  # refuses to replace
            except FileExistsError:
                self.journal.drop(action)
                self.outcome.refused.append(f"{path}: appeared meanwhile: left alone")
                return
            finally:
                os.unlink(tmp, dir_fd=fd)
            self.journal.done(action)
            self.outcome.created.append(path)
        finally:
            os.close(fd)

    def _ours(self, path: str, current: bytes) -> bool:
        """Was this exact content written by a recorded run?"""
        digest = _sha256(current)
        return any(a.get("kind") in ("file", "file-update") and a.get("path") == path and a.get("sha256") == digest
                   for j in load_journals(self.root) for a in j["actions"])

    def _replace_ours(self, fd: int, name: str, path: str, data: bytes, current: bytes) -> None:
        action = self.journal.intend({"kind": "file-update", "path": path, "sha256": _sha256(data),
                                      "previous": current.decode("utf-8", "replace")})
        tmp = _write_temporary(fd, name, data)
        os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)  # replaces only a file a run of ours wrote
        self.journal.done(action)
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
        data = json.loads(read_regular(os.path.join(root, "journal", name), MAX_STATE_BYTES, private=True))
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
        with open(path, "rb") as handle:
            current = handle.read()
    except FileNotFoundError:
        report.append(f"{path}: already gone")
        return False
    if _sha256(current) != action.get("sha256"):
        report.append(f"left {path}: changed since libdoctor wrote it")
        return False
    return True


TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[0-9a-f]{8}$")  # what _write_temporary and _write_json_atomic name


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


def _undo_file_update(action: dict, report: list[str]) -> None:
    if _still_written(action, report):
        with open(action["path"], "w", encoding="utf-8") as handle:
            handle.write(action.get("previous", ""))
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
        state = json.loads(read_regular(state_path, MAX_STATE_BYTES, private=True))
    except (OSError, ValueError, TypeError):
        return
    if not isinstance(state, dict):
        return
    state["folders"] = [f for f in state.get("folders", []) if f != action.get("folder")]
    _write_json_atomic(state_path, state)
    report.append(f"removed search path {action.get('folder')}")


def _undo_rename(action: dict, report: list[str]) -> None:
    source, moved = action.get("source"), action["path"]
    if not os.path.lexists(moved):
        report.append(f"{moved}: already gone")
        return
    try:
        os.link(moved, source, follow_symlinks=False)  # only while the original name is free again
        os.unlink(moved)
        report.append(f"restored {source}")
    except OSError as exc:
        report.append(f"left {moved}: {source} cannot be restored ({exc.strerror})")


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
    for journal in sorted(chosen, key=lambda j: j["run_id"], reverse=True):
        for action in reversed(journal["actions"]):
            undo_one = _UNDO.get(action.get("kind", ""))
            if undo_one is not None:
                undo_one(action, report)
        journal["undone"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _write_json_atomic(os.path.join(root, "journal", f"{journal['run_id']}.json"), journal)
    return report + (journal_problems(root) if run_id is None else [])
