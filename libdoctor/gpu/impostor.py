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

import os
import re
from dataclasses import dataclass
from typing import Optional

from .catalog import record
from .cudatable import DRIVER_SONAMES, describe, family_of, pairing_verdict, soname_for, soname_major, stem_of
from .versions import SAME_MAJOR_AT_LEAST, VersionRule, name_version, real_version, requirement_rule, rule_for

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
    kind: str = "impostor"  # or "too-old": the right library, older than the framework's own check allows

    @property
    def message(self) -> str:
        return f"{self.wanted} is really {self.really}: {self.reason}"


version_of = name_version  # ``libcudnn.so.8.0.5`` -> (8, 0, 5)


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
    """cuDNN's full version (``versions.real_version``: the real file name, its wheel, its conda package)."""
    found = real_version(path, "cudnn")
    return found.version if found and len(found.version) >= 2 else None


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


def judge_file(wanted: str, path: str, soname: Optional[str], built: Optional["BuiltFor"] = None
               ) -> Optional[Impostor]:
    """Is the file at ``path`` (own SONAME ``soname``) what a request for ``wanted`` expects?

    ``built``: what the requesting framework was built for (its CUDA, its cuDNN, its own version checks), when
    known.
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
    return _judge_release(wanted, path, built)


def _too_old(wanted: str, path: str, rule: VersionRule, who: str) -> Optional[Impostor]:
    """The copy at ``path`` fails ``rule`` (a version older than the framework's own check allows)."""
    found = real_version(path, rule.family, wanted)
    why = rule.compared(found.version) if found else None
    if found is None or why is None:
        return None
    known = record(rule.family)
    display = known.display if known else rule.family
    return Impostor(wanted, path, f"{wanted} ({display} {found.text})", "error",
                    f"{display} {why} ({rule.source}; this copy's version from {found.source}): {rule.check}",
                    link_chain(path), kind="too-old")


def _difference(wanted: str, provider: str) -> str:
    if soname_major(wanted) != soname_major(provider):
        return f"major {soname_major(provider)} served where major {soname_major(wanted)} was asked for"
    return f"version {'.'.join(map(str, version_of(provider)))} served where {wanted} was asked for"


def _judge_release(wanted: str, path: str, built: Optional["BuiltFor"]) -> Optional[Impostor]:
    """Same name: does the copy pass the framework's own version check, and is it the CUDA release the
    framework was built for?"""
    family = family_of(wanted)
    if built is None or family is None:
        return None
    who = built.framework or "the program"
    # the framework asks the library itself (libcudnn.so.9) its version, never its sub-libraries
    rule = rule_for(built.rules, family) if stem_of(wanted) == f"lib{family}.so" else None
    too_old = _too_old(wanted, path, rule, who) if rule is not None else None
    if too_old is not None or family == "cudnn" or not built.cuda:
        return too_old
    release_built = re.match(r"(\d+)\.(\d+)", built.cuda)
    release = cuda_release_of(path)
    if release_built is None or release is None:
        return None
    (major, minor), how = release
    if major == int(release_built.group(1)):
        return None
    return Impostor(wanted, path, f"{wanted} of CUDA {major}.{minor}", "warning",
                    f"{who} was built for CUDA {release_built.group(0)} and this file comes from CUDA {major}.{minor} "
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
    if not version_of(wanted) and built is not None and _built_major(own, built):
        return Substitute(SERVES, f"{own}: the major {built.framework} was built with")
    impostor = judge_file(wanted, path, soname, built)
    if impostor is None:
        exact = own == wanted or (not soname and version_of(own)[:len(version_of(wanted))] == version_of(wanted))
        if exact:
            return Substitute(SERVES, _checked_version(wanted, path, built) + "can serve")
        return Substitute(UNPROVEN, f"{own}: another name, unproven")
    if impostor.kind == "too-old":
        return Substitute(NOT_A_SUBSTITUTE, f"{impostor.really.split(' (', 1)[1].rstrip(')')}: too old")
    if impostor.severity == "error":
        return Substitute(NOT_A_SUBSTITUTE, f"{_release_words(wanted, path, own)}: not a substitute")
    return Substitute(UNPROVEN, f"{_release_words(wanted, path, own)}: may load, unproven")


def _built_major(own: str, built: "BuiltFor") -> bool:
    """``own`` (a soname) is the one the framework's build uses: an unversioned request (``libcudnn.so``, asked
    by Paddle's dynload) is then served by it."""
    family = family_of(own)
    if family == "cudnn":
        return bool(built.cudnn) and soname_major(own) == (built.cudnn or (None,))[0]
    return bool(family and built.cuda) and soname_for(family or "", built.cuda or "") == own


def _checked_version(wanted: str, path: str, built: Optional["BuiltFor"]) -> str:
    """"cuDNN 9.1.0, " when the framework checks this library's version and the copy's is known."""
    family = family_of(wanted)
    entry = record(family)
    if built is None or entry is None or rule_for(built.rules, family) is None:
        return ""
    found = real_version(path, family, wanted)
    return f"{entry.display} {found.text}, " if found else ""


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
    rules: tuple[VersionRule, ...] = ()  # the framework's own version checks


CUDNN_CHECK = ("the framework's cuDNN check refuses it (PyTorch: 'cuDNN version incompatibility'; TensorFlow: "
               "'Loaded runtime CuDNN library ... but source was compiled with')")


def built_for(label: str, cuda: Optional[str], cudnn: Optional[str], requirements: tuple[str, ...],
              rules: tuple[VersionRule, ...] = ()) -> BuiltFor:
    """What a framework was built against, and its own version checks: the plug-in's ``rules``; without a cuDNN
    rule among them, a pinned ``nvidia-cudnn-cuNN==X.Y.Z`` wheel is one (a framework pins the cuDNN it was
    compiled with).  Its cuDNN: that rule's version, else the major its build configuration names."""
    cudnn_rule = rule_for(rules, "cudnn")
    if cudnn_rule is None:
        cudnn_rule = requirement_rule(requirements, "cudnn", SAME_MAJOR_AT_LEAST, CUDNN_CHECK, label, pins_only=True)
        rules += (cudnn_rule,) if cudnn_rule else ()
    major = (int(cudnn.split(".")[0]),) if cudnn and cudnn.split(".")[0].isdigit() else None
    return BuiltFor(label, cuda, cudnn_rule.minimum if cudnn_rule else major, rules)
