"""libdoctor's own folders: state (journals, shims, the lock) and how to write into folders safely."""
from __future__ import annotations

import fcntl
import os
import stat
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from ..errors import LibdoctorError
from ..files import make_folders, open_folder_nofollow, write_atomic

__all__ = ["ensure_private_dir", "open_folder_nofollow", "state_dir", "state_folder", "state_lock",
           "write_private_json"]

LOCK_WAIT_SECONDS = 30.0


def state_dir() -> str:
    explicit = os.environ.get("LIBDOCTOR_STATE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "libdoctor")


def _checked_folder(path: str, mode: int) -> None:
    """``path`` as a real folder of this user, created with ``mode`` when missing: a symlink planted in its place
    (or a folder another user owns or can write) is refused, never followed."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        pass
    except OSError as exc:
        raise LibdoctorError(f"{path}: cannot create libdoctor's state folder: {exc.strerror}") from None
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise LibdoctorError(f"{path}: a symlink where libdoctor keeps its state: refused (never followed); "
                             "remove it and run again")
    if not stat.S_ISDIR(st.st_mode):
        raise LibdoctorError(f"{path}: not a folder: libdoctor's state cannot live there")
    if st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise LibdoctorError(f"{path}: owned by another user or writable by others: refused as libdoctor's state")


def state_folder(root: str, *parts: str, mode: int = 0o700) -> str:
    """``root/parts...`` made (or checked) one component at a time: every component a real folder of ours.
    The root stays reachable (0755) where shims below it must be read by the loader."""
    parent = os.path.dirname(os.path.abspath(root))
    make_folders(parent, 0o755)
    path = os.path.abspath(root)
    _checked_folder(path, 0o755)
    for part in parts:
        path = os.path.join(path, part)
        _checked_folder(path, mode)
    return path


def ensure_private_dir(path: str) -> str:
    """A private folder inside libdoctor's state (``journal``, ``envs``): checked as :func:`state_folder` does."""
    return state_folder(os.path.dirname(path), os.path.basename(path))


def write_private_json(folder: str, name: str, text: str) -> None:
    """``folder/name`` (0600) replaced atomically through a descriptor of the checked folder."""
    write_atomic(os.path.join(os.path.abspath(folder), name), text.encode("utf-8"), 0o600)


@contextmanager
def state_lock(folder: str, wait: float = LOCK_WAIT_SECONDS, stop: Callable[[], bool] = lambda: False
               ) -> Iterator[None]:
    """One changing run at a time per state folder (``fcntl.flock`` on ``folder/lock``); ``stop``: asked while
    waiting (a daemon told to stop does not wait out the lock)."""
    state_folder(folder)
    path = os.path.join(folder, "lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as exc:  # a symlink or a FIFO planted there: refused, never followed, never waited on
        raise LibdoctorError(f"{path}: cannot be used as the lock ({exc.strerror}): nothing was changed; "
                             "remove it if libdoctor did not make it") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise LibdoctorError(f"{path}: not a regular file: nothing was changed; remove it if libdoctor did not "
                             "make it")
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if stop():
                    raise LibdoctorError(f"stopped while waiting for {folder}/lock: nothing was changed") from None
                if time.monotonic() >= deadline:
                    raise LibdoctorError(f"another libdoctor run holds {folder}/lock; try again later") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)
