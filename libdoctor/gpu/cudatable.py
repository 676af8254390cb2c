"""CUDA library families and their soname history, read from ``data/cuda_sonames.csv``.

The table is ``shared/knowledge/cuda_sonames.csv`` shipped as package data (its rows cite
NVIDIA's and TensorFlow's sources).  Soname majors do not follow the CUDA major (cuFFT 11 is
CUDA 12, cuSPARSE 12 is CUDA 12 and 13), so every question is asked per family.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from .catalog import records

DRIVER_SONAMES = frozenset({"libcuda.so.1", "libnvidia-ml.so.1"})
# Views of the library catalog (``catalog.py``, one record per library), by family.
WHEELS = {r.family: r.wheel for r in records() if r.wheel and r.family != "nvToolsExt"}
SUFFIXED_FROM_13 = frozenset(r.family for r in records() if r.suffixed_from_13)
WHEEL_DIRS = {r.family: r.wheel_dir for r in records() if r.wheel_dir}
TOOLKIT_EXTRAS = {r.family: r.toolkit_extra for r in records() if r.toolkit_extra}


_SONAME_VERSION = re.compile(r"^(?P<stem>.+?\.so)(?P<version>(\.[0-9A-Za-z_]+)*)$")


def stem_of(soname: str) -> str:
    """``libcudnn.so.7`` -> ``libcudnn.so``: the family name shared by every version."""
    match = _SONAME_VERSION.match(soname)
    return match.group("stem") if match else soname


@dataclass(frozen=True)
class SonameRow:
    family: str
    cuda_versions: str  # as written in the table: "10.1-10.2", "11.x", "all"
    soname: str
    notes: str

    @property
    def cuda_majors(self) -> Optional[frozenset[int]]:
        """The CUDA majors this soname belongs to; None for "all"."""
        if self.cuda_versions.startswith("all"):
            return None
        numbers = [int(n) for n in re.findall(r"(?<![\d.])(\d+)(?=\.(?:\d|x))", self.cuda_versions)]
        if not numbers:
            return None
        return frozenset(range(min(numbers), max(numbers) + 1))


def _read_table() -> list[SonameRow]:
    from importlib import resources

    text = resources.files("libdoctor.gpu").joinpath("data/cuda_sonames.csv").read_text(encoding="utf-8")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        for soname in re.findall(r"lib[\w.+-]+?\.so(?:\.[0-9]+)*", row["soname"]):
            rows.append(SonameRow(row["family"], row["cuda_version"], soname, row["symlink_and_compat_notes"]))
    return rows


@lru_cache(maxsize=1)
def table() -> tuple[SonameRow, ...]:
    return tuple(_read_table())


def rows_for(soname: str) -> list[SonameRow]:
    return list(_rows_by_soname().get(soname, ()))


@lru_cache(maxsize=1)
def _rows_by_soname() -> dict[str, tuple[SonameRow, ...]]:
    rows: dict[str, list[SonameRow]] = {}
    for row in table():
        rows.setdefault(row.soname, []).append(row)
    return {soname: tuple(found) for soname, found in rows.items()}


@lru_cache(maxsize=4096)
def family_of(soname: str) -> Optional[str]:
    rows = rows_for(soname)
    if rows:
        return rows[0].family
    stem = stem_of(soname)
    return next((r.family for r in table() if stem_of(r.soname) == stem), None)


def soname_major(soname: str) -> Optional[int]:
    match = re.search(r"\.so\.(\d+)", soname)
    return int(match.group(1)) if match else None


@dataclass(frozen=True)
class PairingVerdict:
    broken: bool
    reason: str


def pairing_verdict(wanted: str, provider: str) -> Optional[PairingVerdict]:
    """What the table says of serving ``wanted`` with the file whose soname is ``provider``.

    None when the table knows neither (libdoctor's own checks then decide alone).
    """
    if wanted in DRIVER_SONAMES or provider in DRIVER_SONAMES:
        return PairingVerdict(True, "libcuda.so.1 must be the user-space half of the loaded kernel driver: "
                                    "never link or copy it (cuda_sonames.csv)")
    family = family_of(wanted)
    if family is None or family != family_of(provider):
        return None
    if family == "cudnn" and soname_major(wanted) != soname_major(provider):
        return PairingVerdict(True, f"cuDNN {soname_major(wanted)} -> {soname_major(provider)}: known broken "
                                    "(frameworks check the cuDNN major; calls were removed) (cuda_sonames.csv)")
    wanted_rows, provider_rows = rows_for(wanted), rows_for(provider)
    wanted_majors = _majors(wanted_rows)
    provider_majors = _majors(provider_rows)
    if wanted_majors and provider_majors and not wanted_majors & provider_majors:
        return PairingVerdict(True, f"{wanted} (CUDA {_span(wanted_rows)}) -> {provider} (CUDA "
                                    f"{_span(provider_rows)}): across a CUDA major, known broken (cuda_sonames.csv)")
    notes = "; ".join(dict.fromkeys(r.notes for r in wanted_rows + provider_rows if r.notes))
    return PairingVerdict(False, notes or f"same {family} family within one CUDA major")


def _majors(rows: list[SonameRow]) -> frozenset[int]:
    majors: set[int] = set()
    for row in rows:
        if row.cuda_majors:
            majors |= row.cuda_majors
    return frozenset(majors)


def _span(rows: list[SonameRow]) -> str:
    return ", ".join(r.cuda_versions for r in rows) or "?"


def cuda_span(text: str) -> Optional[tuple[tuple[int, int], tuple[int, int]]]:
    """"10.1-11.8" -> ((10, 1), (11, 8)); "11.x" -> ((11, 0), (11, 99)); "9.0" -> ((9, 0), (9, 0))."""
    points = re.findall(r"(\d+)\.(\d+|x)", text)
    if not points:
        return None
    def low(p: tuple[str, str]) -> tuple[int, int]:
        return int(p[0]), 0 if p[1] == "x" else int(p[1])

    def high(p: tuple[str, str]) -> tuple[int, int]:
        return int(p[0]), 99 if p[1] == "x" else int(p[1])

    return low(points[0]), high(points[-1] if "-" in text else points[0])


def soname_for(family: str, cuda: str) -> Optional[str]:
    """The soname of ``family`` shipped with CUDA ``cuda`` ("11.2"), from the table's ranges."""
    version = re.match(r"(\d+)\.(\d+)", cuda or "")
    if not version:
        return None
    wanted = (int(version.group(1)), int(version.group(2)))
    for row in table():
        if row.family != family:
            continue
        if row.cuda_versions.startswith("all"):  # one soname for every CUDA (libnccl.so.2)
            return row.soname
        span = cuda_span(row.cuda_versions)
        if span and span[0] <= wanted <= span[1]:
            return row.soname
    return None


def describe(soname: str) -> Optional[str]:
    """``libcusparse.so.10``: "cusparse of CUDA 10.1-10.2"."""
    rows = rows_for(soname)
    if not rows:
        return None
    if rows[0].family == "cudnn":
        return f"cuDNN {_span(rows)}"
    return f"{rows[0].family} of CUDA {_span(rows)}"


def wheel_name(family: str, cuda_major: int) -> Optional[str]:
    """The pip package of ``family`` for CUDA ``cuda_major``: ``nvidia-cublas-cu12``, ``nvidia-cublas`` (13)."""
    wheel = WHEELS.get(family)
    if wheel is None or cuda_major < 11:
        return None
    return wheel if cuda_major >= 13 and family not in SUFFIXED_FROM_13 else f"{wheel}-cu{cuda_major}"


def wheel_dirs(family: str, cuda_major: Optional[int] = None) -> list[str]:
    """Folders under site-packages where the NVIDIA wheels put ``family`` (CUDA 13 first when not known)."""
    own = WHEEL_DIRS.get(family)
    if own is None:
        return []
    unified = [f"nvidia/cu{m}/lib" for m in ((cuda_major,) if cuda_major else (13,)) if m and m >= 13]
    return (unified if family not in SUFFIXED_FROM_13 else []) + [f"nvidia/{own}/lib"]


def install_hint(soname: str, cuda_major: Optional[int] = None) -> Optional[str]:
    """A package that provides exactly this soname (pip wheels for CUDA 11+, conda for older); ``cuda_major``:
    the CUDA the framework that wants it was built for, where one soname serves several (libcudnn.so.9)."""
    family = family_of(soname)
    major = soname_major(soname)
    if family is None or soname in DRIVER_SONAMES:
        return "install the NVIDIA driver that matches the kernel module" if soname in DRIVER_SONAMES else None
    if family == "cudnn" and major:
        if major == 7:
            return "conda install cudnn=7.6.5"
        oldest = 12 if major >= 9 else 11  # the oldest CUDA whose cuDNN wheels carry this major
        return f"pip install '{wheel_name('cudnn', max(cuda_major or oldest, oldest))}=={major}.*'"
    rows = rows_for(soname)
    majors = sorted(_majors(rows))
    if not majors:  # one soname for every CUDA (libnccl.so.2, libcusparseLt.so.0)
        wheel = wheel_name(family, cuda_major or 12)
        return f"pip install {wheel}" if wheel else None
    cuda = cuda_major if cuda_major in majors else majors[-1]
    wheel = wheel_name(family, cuda)
    if wheel:
        return f"pip install {wheel}"
    span = rows[0].cuda_versions.split("-")[0].split(" ")[0]
    return f"conda install cudatoolkit={span}" if re.match(r"^\d+\.\d+$", span) else None
