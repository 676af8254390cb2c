"""Where else on this machine a library lives, each copy judged: can it serve the request?

Scan's "elsewhere on this machine" line and fix's repairs both come from here, so they say the
same thing about the same file (``gpu.impostor.judge_substitute``).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from ..gpu.cudatable import stem_of
from ..gpu.impostor import NOT_A_SUBSTITUTE, SERVES, UNPROVEN, BuiltFor, judge_substitute
from ..loader.environment import Environment
from ..loader.factstore import FactsStore

VERDICT_ORDER = {SERVES: 0, UNPROVEN: 1, NOT_A_SUBSTITUTE: 2}


@dataclass(frozen=True)
class Candidate:
    path: str
    name: str
    exact: bool  # the very name that was asked for
    verdict: str = UNPROVEN  # serves | unproven | no
    why: str = ""  # "can serve", "CUDA 13.0: not a substitute"
    soname: Optional[str] = None  # the file's own SONAME

    @property
    def serves(self) -> bool:
        return self.verdict == SERVES

    def describe(self) -> str:
        return f"{self.name} in {os.path.dirname(self.path)}" + (f" ({self.why})" if self.why else "")


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
    """Looks through the usual places once, then answers for any number of names."""

    def __init__(self, env: Environment, store: FactsStore, site_packages: Iterable[str] = (),
                 look_in: Iterable[str] = ()) -> None:
        self.env = env
        self.store = store
        # Candidates become link targets and search folders: never relative to the folder libdoctor ran in.
        nvidia = [env.absolute(f) for f in look_in] + [f for site in site_packages
                                                       for f in sorted(glob.glob(os.path.join(site, "nvidia", "*",
                                                                                              "lib")))]
        self._listings: list[tuple[str, list[str]]] = []
        for folder in _places(env, nvidia):
            try:
                self._listings.append((folder, sorted(os.listdir(folder))))
            except OSError:
                continue
        self._listed = {os.path.realpath(folder) for folder, _names in self._listings}
        self._by_head: Optional[dict[str, list[tuple[str, str]]]] = None  # "libcudnn" -> (folder, name) in order
        self._extra: dict[str, Optional[list[str]]] = {}
        self._answers: dict[tuple, tuple[Candidate, ...]] = {}
        self._real: dict[str, str] = {}

    def _realpath(self, path: str) -> str:
        """Real paths, each asked once per diagnosis (the machine does not change during one)."""
        if path not in self._real:
            self._real[path] = os.path.realpath(path)
        return self._real[path]

    def find(self, soname: str, searched: Iterable[str] = (), built: Optional[BuiltFor] = None, limit: int = 8
             ) -> tuple[Candidate, ...]:
        """Copies of ``soname`` (or of another version of it), those that can serve first; ``searched`` adds the
        folders the loader tried; ``built``: what the requesting framework was built for.

        Answers are kept: a scan asks for the same name from many targets.
        """
        searched = tuple(searched)
        key = (soname, searched, built, limit)
        if key not in self._answers:
            extra = [(f, names) for f in dict.fromkeys(self._realpath(f) for f in searched if f)
                     if f not in self._listed and (names := self._extra_listing(f)) is not None]
            self._answers[key] = tuple(self._rank(soname, extra, built, limit))
        return self._answers[key]

    def _named_like(self, head: str) -> list[tuple[str, str]]:
        """(folder, name) of every listed name whose part before the first dot is ``head``: a name of the same
        family always has it (``libcudnn.so.8.9.7`` -> ``libcudnn``), so no scan walks every listing again."""
        if self._by_head is None:
            self._by_head = {}
            for folder, names in self._listings:
                for name in names:
                    self._by_head.setdefault(name.split(".", 1)[0], []).append((folder, name))
        return self._by_head.get(head, [])

    def _extra_listing(self, folder: str) -> Optional[list[str]]:
        if folder not in self._extra:
            try:
                self._extra[folder] = sorted(os.listdir(folder))
            except OSError:
                self._extra[folder] = None
        return self._extra[folder]

    def _rank(self, soname: str, extra: list[tuple[str, list[str]]], built: Optional[BuiltFor], limit: int
              ) -> list[Candidate]:
        """Files named like ``soname`` or another version of it (in the folders searched, then in the usual
        places), judged; one per real file."""
        stem = stem_of(soname)
        head = soname.split(".", 1)[0]
        found: dict[str, tuple[str, bool]] = {}
        if self.env.cache is not None:
            for entry in self.env.cache.entries:
                if entry.key == soname or entry.key.startswith(stem + "."):
                    found.setdefault(entry.path, (entry.key, entry.key == soname))
        named = [(folder, name) for folder, names in extra for name in names if name.split(".", 1)[0] == head]
        for folder, name in named + self._named_like(head):
            if name == soname or name.startswith(stem + ".") or name == stem:
                path = os.path.join(folder, name)
                if os.path.exists(path):
                    found.setdefault(path, (name, name == soname))
        judged = [self._judged(soname, path, name, exact, built) for path, (name, exact) in found.items()]
        ordered = sorted(judged, key=lambda c: (VERDICT_ORDER.get(c.verdict, 3), not c.exact,
                                                _version_distance(soname, c.name), c.path))
        unique: dict[str, Candidate] = {}  # one entry per real file: links to it add nothing
        for candidate in ordered:
            unique.setdefault(self._realpath(candidate.path), candidate)
        return list(unique.values())[:limit]

    def _judged(self, wanted: str, path: str, name: str, exact: bool, built: Optional[BuiltFor]) -> Candidate:
        facts = self.store.get_path(self._realpath(path))
        soname = getattr(facts, "soname", None)
        if not getattr(facts, "dynamic", False):
            return Candidate(path, name, exact, NOT_A_SUBSTITUTE, "not a loadable ELF library", soname)
        substitute = judge_substitute(wanted, path, soname, built)
        return Candidate(path, name, exact, substitute.verdict, substitute.why, soname)


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
