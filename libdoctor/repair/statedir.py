"""libdoctor's own folders: state (journals, shims, the lock) and how to write into folders safely."""
from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from typing import Iterator

from ..errors import LibdoctorError

LOCK_WAIT_SECONDS = 30.0


def state_dir() -> str:
    explicit = os.environ.get("LIBDOCTOR_STATE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "libdoctor")


def ensure_private_dir(path: str) -> str:
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


@contextmanager
def state_lock(folder: str, wait: float = LOCK_WAIT_SECONDS) -> Iterator[None]:
    """One changing run at a time per state folder (``fcntl.flock`` on ``folder/lock``)."""
    os.makedirs(folder, mode=0o755, exist_ok=True)
    fd = os.open(os.path.join(folder, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LibdoctorError(f"another libdoctor run holds {folder}/lock; try again later") from None
                time.sleep(0.1)
        yield
    finally:
        os.close(fd)


def open_folder_nofollow(path: str) -> int:
    """A descriptor of the real folder ``path``, opened one component at a time without following links.

    Callers pass a resolved path; a component swapped for a symlink afterwards makes this fail
    instead of writing somewhere else (the symlink race a root daemon must not lose).
    """
    if not os.path.isabs(path):
        raise LibdoctorError(f"{path}: not an absolute path")
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in [p for p in path.split("/") if p]:
            next_fd = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = next_fd
    except OSError as exc:
        os.close(fd)
        raise LibdoctorError(f"{path}: cannot open safely: {exc.strerror}") from None
    return fd
