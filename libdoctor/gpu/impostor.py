"""What a file really is, whatever name the loader found it under.

A ``libcudnn.so.7`` that is a link to cuDNN 8 resolves cleanly and fails at the first cuDNN
call; a ``libcudart.so.10.1`` that is CUDA 11.0's runtime loads and fails at the first kernel.
So every resolution is judged by what is behind the name: the file's own SONAME, the version in
its real file name, and for CUDA libraries the CUDA release it belongs to (the folder it lives
in, a sibling ``libcudart.so.*``) and, for cuDNN, its full version.  The CUDA soname table
(``gpu/data/cuda_sonames.csv``, rows citing NVIDIA's and TensorFlow's sources) decides whether a
pairing is known broken (an error) or only unproven (a warning with the evidence).
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Optional

from .cudatable import DRIVER_SONAMES, describe, family_of, pairing_verdict, soname_major, stem_of

MAX_LINKS = 40  # ld.so gives up (ELOOP) long before this
_CUDA_FOLDER = re.compile(r"(?:^|/)cuda-(\d+)\.(\d+)(?:/|$)")
_CUDART = re.compile(r"^libcudart\.so\.(\d+)\.(\d+)(?:\.\d+)*$")


@dataclass(frozen=True)
class Impostor:
    """``wanted`` was served by a file that is something else."""

    wanted: str
    path: str  # the path the loader opened
    really: str  # what the file is: "libcudnn.so.8 (cuDNN 8.0.5)"
    severity: str  # "error": the tables know the pairing is broken; "warning": unproven, evidence given
    reason: str
    chain: tuple[str, ...]  # the path, then each symlink's text, as ``ls -l`` shows them

    @property
    def message(self) -> str:
        return f"{self.wanted} is really {self.really}: {self.reason}"


def version_of(name: str) -> tuple[int, ...]:
    """``libcudnn.so.8.0.5`` -> (8, 0, 5); ``libfoo.so`` -> ()."""
    match = re.search(r"\.so((?:\.\d+)+)$", name)
    return tuple(int(p) for p in match.group(1)[1:].split(".")) if match else ()


def link_chain(path: str) -> tuple[str, ...]:
    """``path`` and the text of each symlink on the way to the file (a loop stops the walk)."""
    chain = [path]
    current = path
    for _ in range(MAX_LINKS):
        try:
            text = os.readlink(current)
        except OSError:
            break
        chain.append(text)
        current = os.path.normpath(os.path.join(os.path.dirname(current), text))
    return tuple(chain)


def cuda_release_of(path: str) -> Optional[tuple[tuple[int, int], str]]:
    """The CUDA release a library file belongs to, and how that is known: a ``cuda-X.Y`` folder
    on its real path, else the ``libcudart.so.X.Y`` beside it."""
    real = os.path.realpath(path)
    for where in (real, path):
        match = _CUDA_FOLDER.search(os.path.dirname(where))
        if match:
            release = (int(match.group(1)), int(match.group(2)))
            return release, f"it lives in {match.group(0).strip('/')}"
    try:
        names = os.listdir(os.path.dirname(real))
    except OSError:
        return None
    for name in sorted(names):
        match = _CUDART.match(name)
        if match:
            return (int(match.group(1)), int(match.group(2))), f"{name} lies beside it"
    return None


def cudnn_version_of(path: str) -> Optional[tuple[int, ...]]:
    """cuDNN's full version: from the real file name (``libcudnn.so.9.14.0``), else from the
    ``nvidia-cudnn`` wheel that installed it (``nvidia_cudnn_cu13-9.19.0.56.dist-info``)."""
    real = os.path.realpath(path)
    version = version_of(os.path.basename(real))
    if len(version) >= 2:
        return version
    lib = os.path.dirname(real)
    if os.path.basename(lib) == "lib" and os.path.basename(os.path.dirname(lib)) == "cudnn":
        site = os.path.dirname(os.path.dirname(os.path.dirname(lib)))
        for dist in sorted(glob.glob(os.path.join(site, "nvidia_cudnn_cu*-*.dist-info"))):
            found = re.search(r"-(\d+(?:\.\d+)+)\.dist-info$", dist)
            if found:
                return tuple(int(p) for p in found.group(1).split("."))
    return None


def _severity(wanted: str, provider: str) -> tuple[str, str]:
    verdict = pairing_verdict(wanted, provider)
    if verdict is not None and verdict.broken:
        return "error", verdict.reason
    evidence = verdict.reason if verdict is not None else "the program was linked against another version"
    return "warning", evidence


def _named(soname: str, real_file: str) -> str:
    described = describe(soname)
    version = version_of(real_file)
    if family_of(soname) == "cudnn" and len(version) >= 2:
        described = "cuDNN " + ".".join(map(str, version))
    return f"{soname} ({described})" if described else soname


def judge_file(wanted: str, path: str, soname: Optional[str], built_cuda: Optional[str] = None,
               built_cudnn: Optional[tuple[int, ...]] = None, framework: str = "") -> Optional[Impostor]:
    """Is the file at ``path`` (own SONAME ``soname``) what a request for ``wanted`` expects?

    ``built_cuda`` ("10.1") and ``built_cudnn`` ((9, 19)) are what the requesting framework was
    built for, when known; ``framework`` names it in the reason.
    """
    wanted_version = version_of(wanted)
    if not wanted_version or "/" in wanted or wanted in DRIVER_SONAMES:
        return None  # an unversioned or path request asks for no particular version; the driver is checked apart
    stem = stem_of(wanted)
    if soname and stem_of(soname) == stem and soname != wanted:
        real_file = os.path.basename(os.path.realpath(path))
        severity, reason = _severity(wanted, soname)
        return Impostor(wanted, path, _named(soname, real_file), severity,
                        f"{_difference(wanted, soname)}; {reason}", link_chain(path))
    if not soname:
        real_file = os.path.basename(os.path.realpath(path))
        real_version = version_of(real_file)
        if stem_of(real_file) == stem and real_version and real_version[:len(wanted_version)] != wanted_version:
            named = f"{stem}.{'.'.join(map(str, real_version))}"
            severity, reason = _severity(wanted, f"{stem}.{real_version[0]}")
            return Impostor(wanted, path, named, severity, f"{_difference(wanted, named)}; {reason}", link_chain(path))
    return _judge_release(wanted, path, built_cuda, built_cudnn, framework)


def _difference(wanted: str, provider: str) -> str:
    if soname_major(wanted) != soname_major(provider):
        return f"major {soname_major(provider)} served where major {soname_major(wanted)} was asked for"
    return f"version {'.'.join(map(str, version_of(provider)))} served where {wanted} was asked for"


def _judge_release(wanted: str, path: str, built_cuda: Optional[str], built_cudnn: Optional[tuple[int, ...]],
                   framework: str) -> Optional[Impostor]:
    """Same name: is it the CUDA release (or cuDNN version) the framework was built for?"""
    family = family_of(wanted)
    who = framework or "the program"
    if family == "cudnn":
        runtime = cudnn_version_of(path)
        if built_cudnn and runtime and runtime[:1] == built_cudnn[:1] and runtime[:2] < built_cudnn[:2]:
            shown = ".".join(map(str, runtime[:3]))
            return Impostor(wanted, path, f"{wanted} (cuDNN {shown})", "error",
                            f"cuDNN {shown} is older than the {'.'.join(map(str, built_cudnn[:2]))} {who} was built "
                            "against: PyTorch checks the cuDNN minor and turns cuDNN off", link_chain(path))
        return None
    if family is None or not built_cuda:
        return None
    built = re.match(r"(\d+)\.(\d+)", built_cuda)
    release = cuda_release_of(path)
    if built is None or release is None:
        return None
    (major, minor), how = release
    if major == int(built.group(1)):
        return None
    return Impostor(wanted, path, f"{wanted} of CUDA {major}.{minor}", "warning",
                    f"{who} was built for CUDA {built.group(0)} and this file comes from CUDA {major}.{minor} "
                    f"({how}); the same name spans several CUDA releases, so it may load and still fail",
                    link_chain(path))


SERVES, UNPROVEN, NOT_A_SUBSTITUTE = "serves", "unproven", "no"


@dataclass(frozen=True)
class Substitute:
    """Can the file at ``path`` serve a request for ``wanted``?  ``verdict``: serves (the same soname, major and,
    where known, CUDA release), unproven (another release or minor, nothing known broken) or no."""

    verdict: str
    why: str


def judge_substitute(wanted: str, path: str, soname: Optional[str], built: Optional["BuiltFor"] = None
                     ) -> Substitute:
    """What scan's "elsewhere" line and fix's grading both say of a copy of ``wanted`` at ``path`` (own SONAME
    ``soname``, None when it has none or is no ELF library)."""
    own = soname or os.path.basename(os.path.realpath(path))
    if wanted in DRIVER_SONAMES:
        return Substitute(NOT_A_SUBSTITUTE, "the driver's own library must come with the driver: never linked")
    if stem_of(own) != stem_of(wanted):
        return Substitute(NOT_A_SUBSTITUTE, f"{own} is another library: not a substitute")
    impostor = judge_file(wanted, path, soname, *((built.cuda, built.cudnn, built.framework) if built else ()))
    if impostor is None:
        exact = own == wanted or (not soname and version_of(own)[:len(version_of(wanted))] == version_of(wanted))
        if exact:
            return Substitute(SERVES, "can serve")
        return Substitute(UNPROVEN, f"{own}: another name, unproven")
    if impostor.severity == "error":
        return Substitute(NOT_A_SUBSTITUTE, f"{_release_words(wanted, path, own)}: not a substitute")
    return Substitute(UNPROVEN, f"{_release_words(wanted, path, own)}: may load, unproven")


def _release_words(wanted: str, path: str, own: str) -> str:
    """"CUDA 13.0", "cuDNN 8.0.5", "libfoo.so.2": what the file is, in the fewest words."""
    if family_of(wanted) == "cudnn":
        version = cudnn_version_of(path) or ((soname_major(own),) if soname_major(own) is not None else ())
        return "cuDNN " + ".".join(map(str, version[:3])) if version else own
    if family_of(wanted) is not None:
        release = cuda_release_of(path)
        if release is not None:
            return f"CUDA {release[0][0]}.{release[0][1]}"
        described = describe(own)
        return described.split(" of ", 1)[1] if described and " of " in described else own
    return own


@dataclass(frozen=True)
class BuiltFor:
    """What a framework's objects were built against, for judging the files they get."""

    framework: str  # "tensorflow 2.3.0"
    cuda: Optional[str] = None  # "10.1"
    cudnn: Optional[tuple[int, ...]] = None  # (9, 19, 0): from the framework's own pin where it has one


def built_for(label: str, cuda: Optional[str], cudnn: Optional[str], requirements: tuple[str, ...]) -> BuiltFor:
    """The cuDNN a framework was built against: its pinned ``nvidia-cudnn-cuNN==X.Y.Z`` wheel (PyTorch
    pins the one it was compiled with), else the major its build configuration names."""
    pinned = None
    for requirement in requirements:
        match = re.match(r"\s*nvidia-cudnn-cu\d+\s*==\s*(\d+(?:\.\d+)+)", requirement)
        if match:
            pinned = tuple(int(p) for p in match.group(1).split("."))
    major = (int(cudnn.split(".")[0]),) if cudnn and cudnn.split(".")[0].isdigit() else None
    return BuiltFor(label, cuda, pinned or major)
