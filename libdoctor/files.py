"""The one way libdoctor writes a file: atomically, through a folder it opened without following links.

Every file libdoctor writes (journals, state, caches, activation scripts, wrappers, units, the
metrics textfile) goes through :func:`write_atomic`: a new temporary file beside the target,
created ``O_EXCL | O_NOFOLLOW`` through the folder's descriptor, its mode set with ``fchmod``
(never reduced by the umask), written, fsynced, then renamed over the target (or linked into
place when nothing may be replaced), and the folder fsynced so the rename survives a crash.
Only a regular file is ever replaced: a symlink, FIFO, device or socket at the path is refused,
never written through.  A replaced file keeps its mode unless a mode is given.
"""
from __future__ import annotations

import os
import secrets
import stat
from typing import Optional

from .errors import LibdoctorError

TEMPORARY_SUFFIX_HEX = 8  # ``.NAME.XXXXXXXX``: how undo recognises what a killed run left behind


class NotReplaceableError(LibdoctorError):
    """Something other than a regular file is where a file is to be written."""


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


def folder_risk(folder: str) -> Optional[str]:
    """Why libdoctor must not write in ``folder`` (None: it may): missing, writable by others (anyone there can
    swap or plant files), or, for root, owned by another user (who can replace it between a check and the
    write)."""
    try:
        st = os.stat(folder)
    except OSError as exc:
        return f"{folder}: {exc.strerror}"
    if st.st_mode & stat.S_IWOTH:
        return f"{folder} is world-writable"
    if st.st_mode & stat.S_IWGRP:
        return f"{folder} is group-writable"
    if st.st_uid not in (os.geteuid(), 0):
        return f"{folder} belongs to another user (uid {st.st_uid})"
    return None


def temporary_name(name: str) -> str:
    return f".{name}.{secrets.token_hex(TEMPORARY_SUFFIX_HEX // 2)}"


def existing_mode(folder_fd: int, name: str, path: str) -> Optional[int]:
    """The permission bits of the regular file ``name`` in the folder, None when there is none; anything else
    there (a symlink, FIFO, device, socket, folder) is refused."""
    try:
        st = os.lstat(name, dir_fd=folder_fd)
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        kind = "a symlink" if stat.S_ISLNK(st.st_mode) else "not a regular file"
        raise NotReplaceableError(f"{path}: {kind}: libdoctor writes only regular files there, nothing was written")
    return stat.S_IMODE(st.st_mode)


def write_atomic(path: str, data: bytes, mode: Optional[int] = None, *, replace: bool = True,
                 folder_fd: Optional[int] = None) -> None:
    """``data`` at ``path``, atomically.

    ``mode``: the new file's permission bits (default: those of the file replaced, else 0o644).
    ``replace=False``: fail with ``FileExistsError`` rather than replace anything (linked into place).
    ``folder_fd``: the folder, already opened safely (else it is opened here without following links).
    """
    folder, name = os.path.split(os.path.abspath(path))
    own_fd = folder_fd is None
    fd = open_folder_nofollow(folder) if folder_fd is None else folder_fd
    try:
        kept = existing_mode(fd, name, path)
        if kept is not None and not replace:
            raise FileExistsError(path)
        final_mode = mode if mode is not None else (kept if kept is not None else 0o644)
        tmp = temporary_name(name)
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                      dir_fd=fd)
        try:
            os.fchmod(out, final_mode)
            with open(out, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            if replace:
                existing_mode(fd, name, path)  # still nothing but a regular file there
                os.replace(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
            else:
                os.link(tmp, name, src_dir_fd=fd, dst_dir_fd=fd, follow_symlinks=False)  # refuses to replace
                os.unlink(tmp, dir_fd=fd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=fd)
            except OSError:
                pass
            raise
        os.fsync(fd)
    finally:
        if own_fd:
            os.close(fd)


def make_folders(path: str, mode: int = 0o755) -> None:
    """``path`` and its missing parents, each made with exactly ``mode`` whatever the umask (``makedirs`` makes
    the parents 0777 less the umask: under umask 000, writable by everyone); an existing folder, or an existing
    symlink to one, is left as it is."""
    path = os.path.abspath(path)
    missing = []
    while not os.path.isdir(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    for folder in reversed(missing):
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            if not os.path.isdir(folder):
                raise
            continue
        os.chmod(folder, mode)  # the umask took bits away (or, at 000, none): exactly ``mode``
