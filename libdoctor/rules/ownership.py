"""Who made a file: a package (dpkg, rpm, conda, a pip wheel's RECORD), libdoctor's journal, ldconfig, or a hand.

Nothing a package owns is ever renamed, replaced or removed by libdoctor, nor named in a step it
prints; "made by hand" is said only when no package database lists the file, no journal of ours
made it, and its name is not its target's own SONAME (the link ``ldconfig`` and every package make).

The databases are read, never written: dpkg's ``info/*.list`` files (``LIBDOCTOR_DPKG_ADMINDIR``,
default ``/var/lib/dpkg``), rpm's through ``rpm -qf`` (``LIBDOCTOR_RPM_DBPATH`` for another
database), every ``conda-meta/*.json`` file list of the conda prefix around the file, and every
``*.dist-info/RECORD`` of the site-packages folder around it.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Mapping, Optional

from ..loader.plainfiles import read_json, read_regular

MAX_DB_FILE = 64 << 20  # a package database file larger than this is not read
RPM_TIMEOUT = 10.0
USR_MERGED = ("/lib", "/lib64", "/lib32", "/bin", "/sbin")  # each also reached as /usr/...


@dataclass(frozen=True)
class Owner:
    manager: str  # dpkg | rpm | conda | pip
    package: str

    def __str__(self) -> str:
        return f"package {self.manager}:{self.package}"


def path_variants(path: str) -> tuple[str, ...]:
    """The spellings a package database may list ``path`` under: as given, with its folder resolved, and the
    other side of a merged /usr (``/lib/x`` and ``/usr/lib/x``)."""
    found = [os.path.abspath(path), os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(path))),
                                                 os.path.basename(path))]
    for variant in list(found):
        for short in USR_MERGED:
            if variant.startswith(short + "/"):
                found.append("/usr" + variant)
            elif variant.startswith("/usr" + short + "/"):
                found.append(variant[4:])
    return tuple(dict.fromkeys(found))


def dpkg_owner(path: str, admindir: Optional[str] = None) -> Optional[Owner]:
    info = os.path.join(admindir or os.environ.get("LIBDOCTOR_DPKG_ADMINDIR") or "/var/lib/dpkg", "info")
    try:
        stamp = os.stat(info).st_mtime_ns
    except OSError:
        return None
    return _dpkg_owner(path_variants(path), info, stamp)


@lru_cache(maxsize=256)
def _dpkg_owner(variants: tuple[str, ...], info: str, stamp: int) -> Optional[Owner]:
    """The package whose file list names one of ``variants`` (each list read, none kept)."""
    wanted = [b"\n" + os.fsencode(v) + b"\n" for v in variants]
    for listing in sorted(glob.glob(os.path.join(info, "*.list"))):
        try:
            data = b"\n" + read_regular(listing, MAX_DB_FILE)
        except OSError:
            continue
        if any(w in data for w in wanted):
            return Owner("dpkg", os.path.basename(listing)[: -len(".list")])
    return None


def rpm_owner(path: str, dbpath: Optional[str] = None) -> Optional[Owner]:
    rpm = shutil.which("rpm")
    dbpath = dbpath or os.environ.get("LIBDOCTOR_RPM_DBPATH")
    if rpm is None or not (dbpath or os.path.isdir("/var/lib/rpm")):
        return None
    words = [rpm] + (["--dbpath", dbpath] if dbpath else []) + ["-qf", "--queryformat", "%{NAME}\\n"]
    for variant in path_variants(path):
        try:
            done = subprocess.run(words + [variant], capture_output=True, text=True, timeout=RPM_TIMEOUT,
                                  stdin=subprocess.DEVNULL, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        name = done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else ""
        if name:
            return Owner("rpm", name)
    return None


def _ancestors(path: str, depth: int = 12) -> list[str]:
    found, current = [], os.path.dirname(os.path.abspath(path))
    for _ in range(depth):
        found.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    return found


@lru_cache(maxsize=16)
def _conda_files(prefix: str, stamp: int) -> Mapping[str, str]:
    """Relative path -> package, from every ``conda-meta/*.json`` of ``prefix``."""
    owned: dict[str, str] = {}
    for record in sorted(glob.glob(os.path.join(prefix, "conda-meta", "*.json"))):
        try:
            data = read_json(record, MAX_DB_FILE)
        except (OSError, ValueError):
            continue
        files = data.get("files") if isinstance(data, dict) else None
        name = data.get("name") if isinstance(data, dict) else None
        if isinstance(files, list) and isinstance(name, str):
            for relative in files:
                if isinstance(relative, str):
                    owned.setdefault(os.path.normpath(relative), name)
    return owned


def conda_owner(path: str) -> Optional[Owner]:
    for variant in path_variants(path):
        for folder in _ancestors(variant):
            meta = os.path.join(folder, "conda-meta")
            if os.path.isdir(meta):
                owned = _conda_files(folder, os.stat(meta).st_mtime_ns)
                package = owned.get(os.path.relpath(variant, folder))
                if package:
                    return Owner("conda", package)
                break
    return None


@lru_cache(maxsize=16)
def _record_files(site: str, stamp: int) -> Mapping[str, str]:
    """Normalised path -> distribution, from every ``*.dist-info/RECORD`` of ``site``."""
    owned: dict[str, str] = {}
    for record in sorted(glob.glob(os.path.join(site, "*.dist-info", "RECORD"))):
        dist = os.path.basename(os.path.dirname(record))[: -len(".dist-info")].rpartition("-")[0]
        try:
            rows = csv.reader(io.StringIO(read_regular(record, MAX_DB_FILE).decode("utf-8", "replace")))
            for row in rows:
                if row:
                    owned.setdefault(os.path.normpath(os.path.join(site, row[0])), dist)
        except (OSError, csv.Error):
            continue
    return owned


def pip_owner(path: str) -> Optional[Owner]:
    for variant in path_variants(path):
        for folder in _ancestors(variant):
            if os.path.basename(folder) in ("site-packages", "dist-packages"):
                owned = _record_files(folder, os.stat(folder).st_mtime_ns)
                dist = owned.get(os.path.normpath(variant))
                if dist:
                    return Owner("pip", dist)
                break
    return None


OWNERS: tuple[Callable[[str], Optional[Owner]], ...] = (conda_owner, pip_owner, dpkg_owner, rpm_owner)


def owner_of(path: str) -> Optional[Owner]:
    """The package that installed ``path`` (the link itself, not what it points to), or None."""
    for lookup in OWNERS:
        owner = lookup(path)
        if owner is not None:
            return owner
    return None


SONAME_LINK = "its own SONAME link (made by ldconfig or its package)"
BY_HAND = "by hand"


def maker_words(maker: Optional[str]) -> str:
    """"links made by hand", "owned by package dpkg:cuda-cudart-11-0": who made the links behind a name."""
    if maker is None:
        return "who made the links is not known"
    if maker.startswith("package "):
        return f"owned by {maker}"
    return maker if maker == SONAME_LINK else f"links made {maker}"


def made_by(link: str, target_soname: Optional[str], our_links: Mapping[str, str]) -> str:
    """Who made the link at ``link`` (whose final target has SONAME ``target_soname``)."""
    real = os.path.join(os.path.realpath(os.path.dirname(link)), os.path.basename(link))
    run = our_links.get(real) or our_links.get(link)
    if run:
        return f"libdoctor run {run}"
    if target_soname and os.path.basename(link) == target_soname:
        return SONAME_LINK
    owner = owner_of(link)
    return str(owner) if owner is not None else BY_HAND
