"""Where else on this machine a missing library lives: other versions, other places."""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from .environment import Environment

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
        nvidia = list(look_in) + [f for site in site_packages
                                  for f in sorted(glob.glob(os.path.join(site, "nvidia", "*", "lib")))]
        self._listings: list[tuple[str, list[str]]] = []
        for folder in _places(env, nvidia):
            try:
                self._listings.append((folder, sorted(os.listdir(folder))))
            except OSError:
                continue

    def find(self, soname: str, searched: Iterable[str] = (), limit: int = 8) -> list[Candidate]:
        """Candidates for ``soname``; ``searched`` adds the folders the loader tried for it."""
        listed = {os.path.realpath(folder) for folder, _names in self._listings}
        extra = []
        for folder in searched:
            folder = os.path.realpath(folder) if folder else folder
            if folder and folder not in listed and os.path.isdir(folder):
                listed.add(folder)
                try:
                    extra.append((folder, sorted(os.listdir(folder))))
                except OSError:
                    continue
        return find_candidates(soname, self.env, limit=limit, listings=extra + self._listings)


def find_candidates(soname: str, env: Environment, site_packages: Iterable[str] = (), limit: int = 8,
                    listings: Optional[list[tuple[str, list[str]]]] = None) -> list[Candidate]:
    """Files named like ``soname`` or another version of it, exact matches first."""
    stem = stem_of(soname)
    found: dict[str, Candidate] = {}
    if env.cache is not None:
        for entry in env.cache.entries:
            if entry.key == soname or entry.key.startswith(stem + "."):
                found.setdefault(entry.path, Candidate(entry.path, entry.key, entry.key == soname))
    if listings is None:
        listings = CandidateFinder(env, site_packages)._listings
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
