"""Everything besides the files themselves that decides what the loader picks: one value.

The resolver receives an :class:`Environment` and nothing else from the process, so "what if
LD_LIBRARY_PATH were X" or "what if this symlink existed" is a new value, not a change to
the machine.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Iterable, Mapping, Optional

from .ldcache import CacheError, CacheLookup, LdCache, load_ld_cache
from .ldconf import LdConf, parse_ld_conf
from .loaderinfo import LoaderInfo, cached_probe_loader, probe_loader

PRELOAD_FILE = "/etc/ld.so.preload"


def split_search_path(value: Optional[str], separators: str = ":") -> tuple[str, ...]:
    """Split like glibc's ``fillin_rpath``: empty elements stay (they mean the current folder)."""
    if not value:
        return ()
    parts = [value]
    for sep in separators:
        parts = [piece for part in parts for piece in part.split(sep)]
    return tuple(parts)


def split_preload(value: Optional[str]) -> tuple[str, ...]:
    """LD_PRELOAD: separated by spaces or colons, empty entries dropped (``rtld.c``)."""
    if not value:
        return ()
    return tuple(p for p in value.replace(":", " ").split(" ") if p)


def append_to_search_path(value: Optional[str], folders: Iterable[str]) -> Optional[str]:
    """``value`` with the ``folders`` it lacks appended, never creating an empty element (the cwd)."""
    present = set(split_search_path(value, ":;"))
    new = [f for f in dict.fromkeys(folders) if f and f not in present]
    if not new:
        return value
    return ":".join(([value] if value else []) + new)


def prepend_to_search_path(value: Optional[str], folders: Iterable[str]) -> Optional[str]:
    """``value`` with ``folders`` first, in order (a folder already present moves to the front); never an empty
    element: an unset or empty value gains none."""
    front = [f for f in dict.fromkeys(folders) if f]
    if not front:
        return value
    rest = [f for f in split_search_path(value, ":;") if f not in front] if value else []
    return ":".join(front + rest)


def read_preload_file(path: str = PRELOAD_FILE) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as handle:
            text = handle.read(1 << 16)
    except OSError:
        return ()
    return tuple(text.replace(":", " ").split())


@dataclass(frozen=True)
class Environment:
    loader: LoaderInfo
    cache: Optional[LdCache]
    cwd: str
    ld_library_path: Optional[str] = None
    ld_preload: Optional[str] = None
    preload_file: tuple[str, ...] = ()
    conf: Optional[LdConf] = None
    overlay: Mapping[str, str] = field(default_factory=dict)  # hypothetical symlinks: link -> target
    cache_problem: Optional[str] = None
    hidden: frozenset[str] = frozenset()  # hypothetically gone: links renamed aside

    @classmethod
    def from_process(cls, environ: Optional[Mapping[str, str]] = None, cwd: Optional[str] = None,
                     loader: Optional[LoaderInfo] = None, cache_path: str = "/etc/ld.so.cache",
                     probe_cache_dir: Optional[str] = None,
                     conf_path: str = "/etc/ld.so.conf") -> "Environment":
        environ = os.environ if environ is None else environ
        problem = None
        try:
            cache = load_ld_cache(cache_path)
        except CacheError as exc:
            cache, problem = None, exc.message
        return cls(
            loader=loader or (cached_probe_loader(probe_cache_dir, environ.get("GLIBC_TUNABLES")) if probe_cache_dir
                              else probe_loader(tunables=environ.get("GLIBC_TUNABLES"))),
            cache=cache,
            cwd=cwd or os.getcwd(),
            ld_library_path=environ.get("LD_LIBRARY_PATH"),
            ld_preload=environ.get("LD_PRELOAD"),
            preload_file=read_preload_file(),
            conf=parse_ld_conf(conf_path) if os.path.exists(conf_path) else None,
            cache_problem=problem,
        )

    def replace(self, **changes: Any) -> "Environment":
        return dataclasses.replace(self, **changes)

    def with_search_folders(self, folders: Iterable[str], front: Iterable[str] = ()) -> "Environment":
        """This environment with ``front`` put before LD_LIBRARY_PATH and ``folders`` appended to it (what
        libdoctor's activation does)."""
        value = append_to_search_path(self.ld_library_path, folders)
        return self.replace(ld_library_path=prepend_to_search_path(value, front))

    def with_hidden(self, paths: Iterable[str]) -> "Environment":
        """This environment as if ``paths`` were gone (a link renamed aside)."""
        return self.replace(hidden=self.hidden | frozenset(paths))

    def with_links(self, links: Mapping[str, str]) -> "Environment":
        merged = dict(self.overlay)
        merged.update(links)
        return self.replace(overlay=merged)

    @property
    def library_path(self) -> tuple[str, ...]:
        """LD_LIBRARY_PATH elements as the loader uses them (``:`` and ``;`` separate)."""
        return split_search_path(self.ld_library_path, ":;")

    @property
    def preloads(self) -> tuple[tuple[str, str], ...]:
        """(name, where from) for LD_PRELOAD then /etc/ld.so.preload, in load order."""
        return tuple((n, "LD_PRELOAD") for n in split_preload(self.ld_preload)) + tuple(
            (n, PRELOAD_FILE) for n in self.preload_file)

    @cached_property
    def cache_lookup(self) -> CacheLookup:
        host = self.loader.host
        return CacheLookup(self.cache, host.machine, host.elf_class, self.loader.hwcaps_active,
                           self.loader.legacy_subdirs)

    def absolute(self, path: str) -> str:
        """A textual path made absolute against this environment's current folder."""
        return path if path.startswith("/") else os.path.join(self.cwd, path)
