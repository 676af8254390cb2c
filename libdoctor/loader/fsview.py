"""What the loader would see when it opens a candidate path, with "what if" links laid over.

One :class:`FileView` serves one resolution run: folder listings are read once, so the 19
hwcaps subfolders glibc tries in each search folder cost set lookups, not system calls.
Hypothetical symlinks (``overlay``: link path -> target) appear in listings and resolve
like real ones, so a proposed repair can be checked without touching the machine.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass
from typing import Mapping, Optional, Union

from ..errors import ElfError, NotRegularError
from .elffacts import ElfFacts, file_kind
from .factstore import FactsStore, key_of

MAX_LINK_DEPTH = 40  # the kernel's limit before ELOOP


@dataclass(frozen=True)
class Probe:
    """The outcome of ``open`` plus reading the header, as ``open_verify`` sees it."""

    errno: int = 0  # 0: opened
    identity: Optional[tuple[int, int]] = None  # (st_dev, st_ino)
    facts: Optional[ElfFacts] = None
    error: Optional[ElfError] = None
    is_dir: bool = False
    stamp: Optional[tuple[int, int, int, int, int]] = None  # (dev, ino, size, mtime_ns, ctime_ns) of what was opened

    @property
    def opened(self) -> bool:
        return self.errno == 0


class FileView:
    def __init__(self, store: FactsStore, overlay: Mapping[str, str], hidden: frozenset[str] = frozenset()) -> None:
        self.store = store
        self.overlay = dict(overlay)
        # Paths hypothetically gone, by their real folder (as the overlay is kept).
        self._hidden_by_folder: dict[str, set[str]] = {}
        for path in hidden:
            folder, name = os.path.split(path)
            self._hidden_by_folder.setdefault(os.path.realpath(folder or "."), set()).add(name)
        # By the link's real folder: a search folder reached as "$ORIGIN/../lib" is the same folder as "lib".
        self._overlay_by_folder: dict[str, dict[str, str]] = {}
        for link, target in self.overlay.items():
            folder, name = os.path.split(link)
            self._overlay_by_folder.setdefault(os.path.realpath(folder or "."), {})[name] = target
        self._listings: dict[str, Union[frozenset, int]] = {}
        self._probes: dict[str, Probe] = {}
        self._realpaths: dict[str, str] = {}
        self._stat_errnos: dict[str, int] = {}

    def listing(self, folder: str) -> Union[frozenset, int]:
        """The names in ``folder``, or the errno that listing it gave."""
        cached = self._listings.get(folder)
        if cached is None:
            cached = self._listings[folder] = self._read_listing(folder)
        return cached

    def _read_listing(self, folder: str) -> Union[frozenset, int]:
        try:
            names: Union[frozenset, int] = frozenset(os.listdir(folder or "."))
        except OSError as exc:
            names = exc.errno or errno.EIO
        real = os.path.realpath(folder or ".") if self.overlay or self._hidden_by_folder else ""
        gone = self._hidden_by_folder.get(real) if self._hidden_by_folder else None
        if gone and isinstance(names, frozenset):
            names = names - frozenset(gone)  # renamed aside: gone, unless a new link takes the name (below)
        extra = self._overlay_by_folder.get(real) if self.overlay else None
        if extra:
            names = (names if isinstance(names, frozenset) else frozenset()) | frozenset(extra)
        return names

    def _overlay_target(self, path: str) -> Optional[str]:
        """The hypothetical link at ``path`` (whatever way the path names its folder), as a path to open."""
        if not self.overlay:
            return None
        folder, name = os.path.split(path)
        real = os.path.realpath(folder or ".")
        target = self._overlay_by_folder.get(real, {}).get(name)
        return None if target is None else os.path.join(real, target)

    def _is_hidden(self, path: str) -> bool:
        if not self._hidden_by_folder:
            return False
        folder, name = os.path.split(path)
        return name in self._hidden_by_folder.get(os.path.realpath(folder or "."), ())

    def stat_errno(self, folder: str) -> int:
        """The errno of ``stat(folder)`` (0 when it exists, as a folder or not)."""
        names = self.listing(folder)
        if isinstance(names, frozenset) or names in (errno.EACCES, errno.ENOENT):
            return 0 if names != errno.ENOENT else errno.ENOENT
        cached = self._stat_errnos.get(folder)
        if cached is None:
            try:
                os.stat(folder)
                cached = 0
            except OSError as exc:
                cached = exc.errno or errno.EIO
            self._stat_errnos[folder] = cached
        return cached

    def probe(self, path: str) -> Probe:
        cached = self._probes.get(path)
        if cached is None:
            cached = self._probes[path] = self._probe(path, 0)
        return cached

    def _probe(self, path: str, depth: int) -> Probe:
        if depth > MAX_LINK_DEPTH:
            return Probe(errno=errno.ELOOP)
        target = self._overlay_target(path)
        if target is not None:
            return self._probe(target, depth + 1)
        if self._is_hidden(path):
            return Probe(errno=errno.ENOENT)
        folder, name = os.path.split(path)
        names = self.listing(folder)
        if isinstance(names, frozenset) and name not in names:
            return Probe(errno=errno.ENOENT)
        if isinstance(names, int) and names != errno.EACCES:
            return Probe(errno=names)
        try:  # O_NONBLOCK: a FIFO named like a library must not hang the scan (the loader would hang there)
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            return Probe(errno=exc.errno or errno.EIO)
        try:
            st = os.fstat(fd)
            stamp = key_of(st)
            if stat.S_ISDIR(st.st_mode):
                return Probe(identity=(st.st_dev, st.st_ino), is_dir=True, stamp=stamp)
            if not stat.S_ISREG(st.st_mode):
                return Probe(identity=(st.st_dev, st.st_ino), stamp=stamp, error=NotRegularError(
                    f"not a regular file ({file_kind(st.st_mode)}): the loader would block or fail opening it"))
            entry = self.store.get_fd(fd, st)
        finally:
            os.close(fd)
        if isinstance(entry, ElfError):
            return Probe(identity=(st.st_dev, st.st_ino), error=entry, stamp=stamp)
        return Probe(identity=(st.st_dev, st.st_ino), facts=entry, stamp=stamp)

    def unchanged(self) -> bool:
        """Does the file system still show everything this view read?  (What a re-verification of
        an unchanged tree checks instead of resolving again.)"""
        for folder, names in self._listings.items():
            if self._read_listing(folder) != names:
                return False
        for path, probe in self._probes.items():
            if self._overlay_target(path) is not None or self._is_hidden(path):
                continue
            try:
                now_stamp = key_of(os.stat(path))
            except OSError as exc:
                if probe.opened or probe.errno != exc.errno:
                    return False
                continue
            if now_stamp != probe.stamp:
                return False
        return True

    def realpath(self, path: str) -> str:
        """The real path behind ``path``, through overlay links too."""
        cached = self._realpaths.get(path)
        if cached is None:
            cached = self._realpaths[path] = self._realpath(path)
        return cached

    def _realpath(self, path: str) -> str:
        for _ in range(MAX_LINK_DEPTH):
            target = self._overlay_target(path)
            if target is None:
                break
            path = os.path.normpath(target)
        return os.path.realpath(path)
