"""Where else on this machine a missing library lives: other versions, other places."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from .loader.environment import Environment

_SONAME_VERSION = re.compile(r"^(?P<stem>.+?\.so)(?P<version>(\.[0-9A-Za-z_]+)*)$")


@dataclass(frozen=True)
class Candidate:
    path: str
    name: str
    exact: bool  # the very name that was asked for

    def describe(self) -> str:
        return f"{self.name} is in {os.path.dirname(self.path)}"


def stem_of(soname: str) -> str:
    """``libcudnn.so.7`` -> ``libcudnn.so``: the family name shared by every version."""
    match = _SONAME_VERSION.match(soname)
    return match.group("stem") if match else soname


def _places(env: Environment, extra: Iterable[str]) -> list[str]:
    home = os.path.expanduser("~")
    patterns = ["/usr/local/cuda*/lib*", "/usr/local/cuda*/targets/*/lib", "/opt/conda/lib", "/opt/conda/envs/*/lib",
                f"{home}/*conda*/lib", f"{home}/*conda*/envs/*/lib", "/usr/lib64", "/usr/local/lib*"]
    places: dict[str, None] = {}
    for folder in list(extra) + list(env.loader.system_dirs):
        places.setdefault(folder, None)
    for pattern in patterns:
        for folder in sorted(glob.glob(pattern)):
            places.setdefault(folder, None)
    conda = os.environ.get("CONDA_PREFIX")
    if conda:
        places.setdefault(os.path.join(conda, "lib"), None)
    return [p for p in places if os.path.isdir(p)]


class CandidateFinder:
    """Looks through the usual places once, then answers for any number of missing names."""

    def __init__(self, env: Environment, site_packages: Iterable[str] = (), look_in: Iterable[str] = ()) -> None:
        self.env = env
        # Candidates become link targets and search folders: never relative to the folder libdoctor ran in.
        nvidia = [env.absolute(f) for f in look_in] + [f for site in site_packages
                                  for f in sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")))]
        self._listings: list[tuple[str, list[str]]] = []
        for folder in _places(env, nvidia):
            try:
                self._listings.append((folder, sorted(os.listdir(folder))))
            except OSError:
                continue
        self._listed = {os.path.realpath(folder) for folder, _names in self._listings}
        self._extra: dict[str, Optional[list[str]]] = {}
        self._answers: dict[tuple, tuple[Candidate, ...]] = {}

    def find(self, soname: str, searched: Iterable[str] = (), limit: int = 8) -> tuple[Candidate, ...]:
        """Candidates for ``soname``; ``searched`` adds the folders the loader tried for it.

        Answers are kept: a scan asks for the same missing name from many targets.
        """
        searched = tuple(searched)
        key = (soname, searched, limit)
        if key not in self._answers:
            extra = [(f, names) for f in dict.fromkeys(os.path.realpath(f) for f in searched if f)
                     if f not in self._listed and (names := self._extra_listing(f)) is not None]
            self._answers[key] = tuple(self._rank(soname, extra + self._listings, limit))
        return self._answers[key]

    def _extra_listing(self, folder: str) -> Optional[list[str]]:
        if folder not in self._extra:
            try:
                self._extra[folder] = sorted(os.listdir(folder))
            except OSError:
                self._extra[folder] = None
        return self._extra[folder]

    def _rank(self, soname: str, listings: list[tuple[str, list[str]]], limit: int) -> list[Candidate]:
        """Files named like ``soname`` or another version of it, exact matches first."""
        stem = stem_of(soname)
        found: dict[str, Candidate] = {}
        if self.env.cache is not None:
            for entry in self.env.cache.entries:
                if entry.key == soname or entry.key.startswith(stem + "."):
                    found.setdefault(entry.path, Candidate(entry.path, entry.key, entry.key == soname))
        for folder, names in listings:
            for name in names:
                if name == soname or name.startswith(stem + ".") or name == stem:
                    path = os.path.join(folder, name)
                    if os.path.exists(path):
                        found.setdefault(path, Candidate(path, name, name == soname))
        ordered = sorted(found.values(), key=lambda c: (not c.exact, _version_distance(soname, c.name), c.path))
        unique: dict[str, Candidate] = {}  # one entry per real file: links to it add nothing
        for candidate in ordered:
            unique.setdefault(os.path.realpath(candidate.path), candidate)
        return list(unique.values())[:limit]


def _version_distance(wanted: str, name: str) -> tuple[int, str]:
    """Prefer the closest version: same major first, then by name."""
    want = _major(wanted)
    have = _major(name)
    if want is None or have is None:
        return (1 << 30, name)
    return (abs(have - want), name)


def _major(name: str) -> Optional[int]:
    match = re.search(r"\.so\.(\d+)", name)
    return int(match.group(1)) if match else None
