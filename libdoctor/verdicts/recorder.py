"""What a run consults: every path it opened, listed or asked the status of, and what each showed.

Recorded, not listed by hand: Python's audit events give every ``open``, ``listdir`` and ``scandir``
and every program started (its arguments name the scripts it reads); ``os.stat`` and ``os.lstat``
are wrapped while a command runs, so "not there" is a fact too.  An identity is (mode, device,
inode, size, mtime, ctime): a file rewritten in place, a link pointed elsewhere, a name created in
a listed folder, or an inode reused with the same size and mtime (its ctime differs) each differ.
A folder's status alone names which folder it is; its times matter only where it was listed.
Kernel files (``/proc``, ``/sys``) have no meaningful times and are compared by content, and
anything changed within the clock's reach of the run by content as well (git's "racily clean").
"""
from __future__ import annotations

import io
import os
import stat
import sys
import time

TYPE_CHECKING = False  # typing and hashlib are not imported at run time unless needed: start-up time
if TYPE_CHECKING:
    from typing import Any, Callable, Optional

CONTENT_ROOTS = ("/proc/", "/sys/")  # kernel files: their times mean nothing, their content is the fact
NOT_RECORDED = ("/proc/self/", "/proc/thread-self/", "/proc/meminfo", "/proc/cpuinfo")  # per process or per second
RACY_NS = 3_000_000_000  # changed this close to the run: compared by content too (coarse clocks, 2 s filesystems)
MAX_HASHED_BYTES = 16 << 20  # a larger file changed during the run: the answer is not kept

Identity = tuple  # (mode, dev, ino, size, mtime_ns, ctime_ns), (mode, dev, ino), (errno,) or a digest


_REAL_STAT = os.stat
_REAL_LSTAT = os.lstat


def _stat_identity(st: os.stat_result) -> Identity:
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _status_identity(st: os.stat_result) -> Identity:
    """What a status query learns: of a folder, which folder it is (its names are a listing's business, and
    every name looked up in it is a query of its own); of anything else, all of it."""
    if stat.S_ISDIR(st.st_mode):
        return (st.st_mode, st.st_dev, st.st_ino)
    return _stat_identity(st)


def _content_digest(path: str) -> Identity:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        return (exc.errno,)
    try:
        import hashlib

        digest = hashlib.sha1()
        read = 0
        while read <= MAX_HASHED_BYTES:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                return ("sha1", digest.hexdigest())
            digest.update(chunk)
            read += len(chunk)
        return ("too-large",)
    except OSError as exc:
        return (exc.errno,)
    finally:
        os.close(fd)


def _listing_digest(path: str) -> Identity:
    try:
        names = sorted(os.listdir(path))
    except OSError as exc:
        return (exc.errno,)
    import hashlib

    return ("names", hashlib.sha1("\0".join(names).encode("utf-8", "surrogateescape")).hexdigest())


def _link_identity(path: str) -> Identity:
    try:
        return ("link", os.readlink(path))
    except OSError as exc:
        return (exc.errno,)


def _kind_identity(path: str) -> Identity:
    try:
        return ("kind", stat.S_IFMT(_REAL_STAT(path).st_mode))
    except OSError as exc:
        return (exc.errno,)




def identity(op: str, path: str) -> Identity:
    """What ``op`` shows of ``path`` now: s stat, l lstat, d a listed folder's stat (its times too), c content,
    n listing, r link target, k kind."""
    if op in ("s", "l", "d"):
        try:
            st = _REAL_LSTAT(path) if op == "l" else _REAL_STAT(path)
        except OSError as exc:
            return (exc.errno,)
        return _stat_identity(st) if op == "d" else _status_identity(st)
    return {"c": _content_digest, "n": _listing_digest, "r": _link_identity, "k": _kind_identity}[op](path)


# -- recording what a run consults --------------------------------------------------------

class Recorder:
    """Every path a run consults, with what it showed when first consulted."""

    def __init__(self, excluded: tuple[str, ...]) -> None:
        self.excluded = excluded
        self.seen: dict[tuple[str, str], Identity] = {}
        self.started_ns = time.time_ns()
        self.cwd = os.getcwd()

    def _path(self, raw: Any) -> Optional[str]:
        if isinstance(raw, int) or raw is None:
            return None
        try:
            path = os.fsdecode(os.fspath(raw))
        except TypeError:
            return None
        if not path or "\0" in path:
            return None
        if not os.path.isabs(path):  # as the kernel resolved it: no lexical ".." folding through a link
            path = os.path.join(self.cwd, path)
        if path.startswith(self.excluded) or path.startswith(NOT_RECORDED):
            return None
        return path

    def note(self, op: str, raw: Any, shown: Optional[Identity] = None) -> None:
        """``raw`` was consulted with ``op`` (s: its status, l: its own status, o: opened, n: its names), and
        ``shown`` is what the query answered (None: ask now)."""
        path = self._path(raw)
        if path is None:
            return
        if path.startswith(CONTENT_ROOTS):
            op, shown = {"s": "k", "l": "k", "o": "c", "n": "n"}[op], None
        else:
            op = {"o": "s", "n": "d"}.get(op, op)
        if (op, path) not in self.seen:
            self.seen[(op, path)] = identity(op, path) if shown is None else shown

    def audit(self, event: str, args: tuple) -> None:
        if event == "open":
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else "r"
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) or any(c in mode for c in "wax+"):
                return  # a write is not a consultation (our own caches, journals)
            self.note("o", args[0])
        elif event in ("os.listdir", "os.scandir"):
            self.note("n", args[0] if args else ".")
        elif event == "subprocess.Popen":
            self._program(args)

    def _program(self, args: tuple) -> None:
        """A program run: its executable and the files named on its command line (an activate.d script)."""
        executable, argv = (args + (None, None))[:2]
        words = [executable] + list(argv or []) if isinstance(argv, (list, tuple)) else [executable]
        for word in words:
            if isinstance(word, (str, bytes)) and os.path.isabs(os.fsdecode(word)):
                self.note("s", word)
        if any(isinstance(w, str) and os.path.basename(w) == "rpm" for w in words):
            words = [w for w in words if isinstance(w, str)]
            db = words[words.index("--dbpath") + 1] if "--dbpath" in words[:-1] else "/var/lib/rpm"
            self.note("s", db)
            for name in names_in(db):
                self.note("s", os.path.join(db, name))

    def settle(self, saved_ns: int) -> Optional[dict[tuple[str, str], Identity]]:
        """What a later run compares: each identity, plus the content of whatever changed so close to the run
        that a change after it could keep the same times.  None: something too large changed during the run."""
        settled = dict(self.seen)
        for (op, path), shown in self.seen.items():
            if op not in ("s", "l", "d") or len(shown) != 6:
                continue
            mode, newest = shown[0], max(shown[4], shown[5])
            if newest < saved_ns - RACY_NS and newest < self.started_ns - RACY_NS:
                continue
            if stat.S_ISDIR(mode):
                settled[("n", path)] = _listing_digest(path)
            elif stat.S_ISLNK(mode):
                settled[("r", path)] = _link_identity(path)
            elif stat.S_ISREG(mode):
                digest = _content_digest(path)
                if digest[0] != "sha1":
                    return None
                settled[("c", path)] = digest
        return settled


def names_in(folder: str) -> list[str]:
    try:
        return sorted(os.listdir(folder))
    except OSError:
        return []


_ACTIVE: list[Optional[Recorder]] = [None]
_HOOKED = [False]


def _audit_hook(event: str, args: tuple) -> None:
    recorder = _ACTIVE[0]
    if recorder is not None and event in ("open", "os.listdir", "os.scandir", "subprocess.Popen"):
        _ACTIVE[0] = None  # what the recorder itself opens is not the run's
        try:
            recorder.audit(event, args)
        finally:
            _ACTIVE[0] = recorder


def _recording_stat(op: str, real: Callable) -> Callable:
    def consult(path: Any, *args: Any, **kwargs: Any) -> Any:
        recorder = _ACTIVE[0]
        if recorder is None or args or kwargs.get("dir_fd") is not None:
            return real(path, *args, **kwargs)
        kind = op if kwargs.get("follow_symlinks", True) else "l"
        try:
            result = real(path, **kwargs)
        except OSError as exc:
            _note(recorder, kind, path, (exc.errno,))
            raise
        _note(recorder, kind, path, _status_identity(result))
        return result
    return consult


def _note(recorder: Recorder, op: str, path: Any, shown: Identity) -> None:
    _ACTIVE[0] = None
    try:
        recorder.note(op, path, shown)
    finally:
        _ACTIVE[0] = recorder


class _Tee(io.TextIOBase):
    """The command's standard output, passed through and kept."""

    def __init__(self, real: Any) -> None:
        super().__init__()
        self._real = real
        self.parts: list[str] = []

    def write(self, text: str) -> int:  # type: ignore[override]
        written = self._real.write(text)  # bytes raise here, as on the real stream (click checks that)
        self.parts.append(text)
        return written

    def flush(self) -> None:
        self._real.flush()

    def isatty(self) -> bool:
        return self._real.isatty()

    def fileno(self) -> int:
        return self._real.fileno()

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self._real.encoding

    @property
    def errors(self) -> Optional[str]:  # type: ignore[override]
        return self._real.errors




class consulting:  # noqa: N801 - a context manager around one command
    """Record what the code inside consults (paths under ``excluded`` aside) and tee its standard output."""

    def __init__(self, excluded: tuple[str, ...]) -> None:
        self.recorder = Recorder(excluded)
        self.tee: Optional[_Tee] = None

    def __enter__(self) -> "consulting":
        if not _HOOKED[0]:
            sys.addaudithook(_audit_hook)
            _HOOKED[0] = True
        self.saved_stdout = sys.stdout
        self.tee = _Tee(sys.stdout)
        sys.stdout = self.tee
        os.stat = _recording_stat("s", _REAL_STAT)  # type: ignore[assignment]
        os.lstat = _recording_stat("l", _REAL_LSTAT)  # type: ignore[assignment]
        _ACTIVE[0] = self.recorder
        return self

    def __exit__(self, *_exc: Any) -> None:
        _ACTIVE[0] = None
        os.stat, os.lstat = _REAL_STAT, _REAL_LSTAT  # type: ignore[assignment]
        sys.stdout = self.saved_stdout

    @property
    def output(self) -> str:
        return "".join(self.tee.parts) if self.tee else ""
