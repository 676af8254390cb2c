"""Small regular files read safely, and where libdoctor keeps its caches: light enough for start-up.

The kept-answer replay (``verdicts``) reads its entry before anything heavy is imported; the facts
cache, the journals and the configuration use the same reader.
"""
from __future__ import annotations

import errno
import os
import stat


def default_cache_dir() -> str:
    explicit = os.environ.get("LIBDOCTOR_CACHE_DIR")
    if explicit:
        return explicit
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "libdoctor")


def read_regular(path: str, limit: int, private: bool = False) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes (a cache, a journal, a configuration), read without
    blocking; a FIFO, device or oversized file is an ``OSError`` like any unreadable one.  ``private``: the file
    must also belong to this user and be writable by nobody else (a cache another user could plant or edit
    is never believed)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, f"not a regular file: {path}")
        if private and (st.st_uid != os.geteuid() or st.st_mode & 0o022):
            raise OSError(errno.EPERM, f"not this user's own file, or writable by others: {path}")
        if st.st_size > limit:
            raise OSError(errno.EFBIG, f"larger than {limit >> 20} MB: {path}")
        data = _read_up_to(fd, limit + 1)
        if len(data) > limit:
            raise OSError(errno.EFBIG, f"larger than {limit >> 20} MB: {path}")
        return data
    finally:
        os.close(fd)


def _read_up_to(fd: int, limit: int) -> bytes:
    """At most ``limit`` bytes from ``fd``, read in pieces of 1 MB (a kernel file reports no size)."""
    chunks, left = [], limit
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def parse_json(data: "bytes | str") -> object:
    """JSON from a file libdoctor did not write this run: anything that does not parse, nested so deeply that
    the parser would recurse past Python's limit included, is a ``ValueError`` (the file is then ignored or
    rebuilt, never a traceback)."""
    import json

    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def read_json(path: str, limit: int, private: bool = False) -> object:
    """:func:`read_regular`, then :func:`parse_json`."""
    return parse_json(read_regular(path, limit, private))


def read_text(path: str, limit: int = 1 << 20) -> "str | None":
    """The first ``limit`` bytes of a regular file as text (UTF-8, undecodable bytes replaced); None when it
    cannot be read or is not a regular file.  Never blocks: a FIFO or a device where a text file should be is
    refused, not waited on (the one way rules, fixes and the daemon read a text file they did not write)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return _read_up_to(fd, limit).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)
