"""What to scan: files, folders, the GPU frameworks of a Python environment, or the CUDA install.

Nothing is imported or executed: environments are read from their ``dist-info``/``egg-info``
metadata, so libdoctor on its own Python can diagnose, say, a Python 3.6 conda env.
"""
from __future__ import annotations

import glob
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional

from .loader.elffacts import is_elf
from .loader.plainfiles import read_text

# Which installed distribution is which GPU framework (its plug-in in ``gpu/frameworks/`` has the same
# name).  A distribution marked as a part (jaxlib, JAX's CUDA plugin) is scanned with its framework.
FRAMEWORK_DISTS = (
    (re.compile(r"^(tensorflow|tensorflow-gpu|tensorflow-cpu|tf-nightly)$"), "tensorflow", False),
    (re.compile(r"^torch$"), "torch", False),
    (re.compile(r"^jax$"), "jax", False),
    (re.compile(r"^(jaxlib|jax-cuda\d+-plugin|jax-cuda\d+-pjrt)$"), "jax", True),
    (re.compile(r"^cupy(-cuda\d+x?)?$"), "cupy", False),
    (re.compile(r"^onnxruntime-gpu$"), "onnxruntime", False),
    (re.compile(r"^paddlepaddle(-gpu)?$"), "paddle", False),
    (re.compile(r"^mxnet(-cu\d+\w*)?$"), "mxnet", False),
)
CUDA_NAME = re.compile(r"^lib(cuda|cudart|cublas|cublasLt|cufft|curand|cusolver|cusparse|cusparseLt|cudnn|nccl|nvrtc|"
                       r"nvJitLink|cupti|nvToolsExt|nvvm|nvinfer|nvidia-ml|nvshmem|cufile)[._-]")


@dataclass(frozen=True)
class Target:
    path: str  # the path loaded (as given, or as found)
    group: str  # what it belongs to: the argument, or "torch 2.14.1"
    mode: str = "list"  # list | exec | dlopen
    caller: Optional[str] = None  # the program that dlopens it
    preloads: tuple[str, ...] = ()  # what that program loaded by path before (torch's preloads)


@dataclass(frozen=True)
class FrameworkPart:
    name: str
    version: str
    location: str  # its dist-info folder


@dataclass(frozen=True)
class Framework:
    name: str
    version: str
    location: str  # its dist-info folder
    files: tuple[str, ...]  # its ELF files and its parts'
    kind: str = ""  # the plug-in that knows it: tensorflow, torch, jax, cupy, onnxruntime, paddle, mxnet
    parts: tuple[FrameworkPart, ...] = ()  # distributions that belong to it (jaxlib, jax-cuda12-plugin)

    def part(self, pattern: str) -> Optional[FrameworkPart]:
        return next((p for p in self.parts if re.match(pattern, p.name)), None)


@dataclass(frozen=True)
class PythonEnv:
    prefix: str
    python: Optional[str]
    site_packages: tuple[str, ...]


@dataclass
class Discovery:
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # one line each: skipped input and why
    frameworks: list[Framework] = field(default_factory=list)
    environment: Optional[PythonEnv] = None
    fallback: Optional[str] = None  # set when the CUDA installation was checked instead
    walked: dict[str, int] = field(default_factory=dict)  # folders read to find targets -> mtime_ns

    def unchanged(self) -> bool:
        """Would discovery find the same targets?  (Every folder it read has the same mtime.)"""
        for folder, mtime in self.walked.items():
            try:
                if os.stat(folder).st_mtime_ns != mtime:
                    return False
            except OSError:
                if mtime != -1:
                    return False
        return True


# Files with these endings are text or data, never ELF objects: not opened when walking a tree
# (a torch install holds some 15,000 headers and Python files beside 60 libraries).
TEXT_SUFFIXES = frozenset((".h", ".hh", ".hpp", ".hxx", ".cuh", ".inl", ".inc", ".c", ".cc", ".cpp", ".cu",
                           ".py", ".pyc", ".pyi", ".pxd", ".pyx", ".txt", ".md", ".rst", ".json", ".yaml", ".yml",
                           ".toml", ".cfg", ".ini", ".cmake", ".proto", ".html", ".js", ".css", ".csv", ".pth",
                           ".typed", ".a", ".o", ".pc", ".la", ".def", ".bc", ".ptx", ".fatbin", ".cubin"))


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:] if dot > 0 else ""


def _mtime(folder: str) -> int:
    try:
        return os.stat(folder).st_mtime_ns
    except OSError:
        return -1


def walk_folder(folder: str, notes: list[str], walked: Optional[dict[str, int]] = None) -> list[str]:
    """Every regular ELF file below ``folder``, sorted; bad entries become notes, never errors."""
    found: list[str] = []
    stack = [folder]
    seen: set[tuple[int, int]] = set()
    while stack:
        current = stack.pop()
        if walked is not None:
            walked[current] = _mtime(current)
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            notes.append(f"{current}: cannot read folder: {exc.strerror}")
            continue
        for entry in entries:
            try:
                if entry.is_symlink():
                    _check_link(entry.path, notes)
                    continue
                if entry.is_dir(follow_symlinks=False):
                    st = entry.stat(follow_symlinks=False)
                    if (st.st_dev, st.st_ino) not in seen:
                        seen.add((st.st_dev, st.st_ino))
                        stack.append(entry.path)
                elif (entry.is_file(follow_symlinks=False) and _suffix(entry.name) not in TEXT_SUFFIXES
                      and is_elf(entry.path)):
                    found.append(entry.path)
            except OSError as exc:
                notes.append(f"{entry.path}: {exc.strerror}")
    return sorted(found)


def _check_link(path: str, notes: list[str]) -> None:
    try:
        os.stat(path)
    except OSError as exc:
        reason = "symlink loop" if exc.errno == 40 else "dangling symlink"
        notes.append(f"{path}: {reason} (-> {os.readlink(path)})")


def targets_from_paths(paths: Iterable[str], caller: Optional[str], discovery: Discovery) -> None:
    for given in paths:
        try:
            st = os.stat(given)
        except OSError as exc:
            if os.path.islink(given):
                _check_link(given, discovery.notes)
            else:
                discovery.notes.append(f"{given}: {exc.strerror}")
            continue
        if stat.S_ISDIR(st.st_mode):
            files = walk_folder(given, discovery.notes, discovery.walked)
            if not files:
                discovery.notes.append(f"{given}: no ELF files in this folder")
            discovery.targets.extend(_target(f, given, caller) for f in files)
        else:
            discovery.targets.append(_target(given, given, caller))


def _target(path: str, group: str, caller: Optional[str]) -> Target:
    return Target(path, group, "dlopen", caller) if caller else Target(path, group)


# -- Python environments -----------------------------------------------------------------

def _site_packages(prefix: str) -> tuple[str, ...]:
    sites: dict[str, str] = {}  # a venv's lib64 is often a link to lib: one entry per real folder
    for site in sorted(glob.glob(os.path.join(prefix, "lib*", "python*", "site-packages"))):
        sites.setdefault(os.path.realpath(site), site)
    return tuple(sites.values())


def _prefix_of(python: str) -> Optional[str]:
    """The environment a ``python`` belongs to, without running it.

    A venv's ``bin/python`` links to its base interpreter, so the textual parent comes first;
    a link farm or shim (conda's ``bin`` links, pyenv's shims) falls back to the real file's.
    """
    textual = os.path.dirname(os.path.dirname(os.path.abspath(python)))
    if os.path.exists(os.path.join(textual, "pyvenv.cfg")) or _site_packages(textual):
        return textual
    real = os.path.dirname(os.path.dirname(os.path.realpath(python)))
    return real if _site_packages(real) else None


def is_python_environment(prefix: str) -> bool:
    return os.path.isdir(prefix) and bool(
        os.path.isdir(os.path.join(prefix, "conda-meta")) or os.path.isfile(os.path.join(prefix, "pyvenv.cfg"))
        or glob.glob(os.path.join(prefix, "bin", "python*")) or _site_packages(prefix))


def python_env(prefix: Optional[str] = None, python: Optional[str] = None) -> PythonEnv:
    """An environment from ``--env``, ``--python``, or the active one (venv, conda, PATH)."""
    if python:
        prefix = _prefix_of(python) or os.path.dirname(os.path.dirname(os.path.abspath(python)))
    elif prefix is None:
        prefix = os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX")
        if prefix is None:
            found = shutil.which("python3") or shutil.which("python")
            prefix = (_prefix_of(found) if found and is_elf(os.path.realpath(found)) else None) or sys.prefix
    prefix = os.path.abspath(prefix)
    if python is None:
        python = next((p for p in (os.path.join(prefix, "bin", n) for n in ("python3", "python")) if os.path.exists(p)),
                      None)
    return PythonEnv(prefix, python, _site_packages(prefix))


CONDA_INSTALLS = ("/opt/conda", "/opt/miniconda3", "/opt/anaconda3", "/opt/miniforge3", "/usr/local/miniconda3",
                  "/usr/local/anaconda3", "~/miniconda3", "~/anaconda3", "~/miniforge3", "~/mambaforge", "~/.conda")


def active_environment() -> Optional[str]:
    """The environment the user activated (venv or conda), if any."""
    return os.environ.get("VIRTUAL_ENV") or os.environ.get("CONDA_PREFIX") or None


def machine_environments() -> list[str]:
    """Every Python environment libdoctor can find without running anything: conda's
    ``environments.txt`` and the ``envs/`` of the usual conda installs, pyenv's versions, and the
    ``python3`` on PATH; libdoctor's own environment left out."""
    home = os.path.expanduser("~")
    found: list[str] = []
    for listing in (os.path.join(home, ".conda", "environments.txt"),):
        found += [line.strip() for line in (read_text(listing) or "").splitlines() if line.strip().startswith("/")]
    for install in CONDA_INSTALLS:
        install = os.path.expanduser(install)
        found += [install] + sorted(glob.glob(os.path.join(install, "envs", "*")))
    pyenv = os.environ.get("PYENV_ROOT") or os.path.join(home, ".pyenv")
    found += sorted(glob.glob(os.path.join(pyenv, "versions", "*")))
    on_path = shutil.which("python3")
    if on_path and is_elf(os.path.realpath(on_path)):
        found.append(_prefix_of(on_path) or "")
    own = os.path.realpath(sys.prefix)
    unique: dict[str, str] = {}
    for prefix in found:
        if prefix and os.path.isdir(prefix) and _site_packages(prefix) and os.path.realpath(prefix) != own:
            unique.setdefault(os.path.realpath(prefix), prefix)
    return list(unique.values())


def framework_environments() -> list[str]:
    """The machine's Python environments that have a GPU framework."""
    return [p for p in machine_environments() if find_frameworks(python_env(p))]


def _dist_name(folder: str) -> tuple[str, str]:
    base = os.path.basename(folder).rsplit(".", 1)[0]
    name, _, version = base.partition("-")
    return re.sub(r"[-_.]+", "-", name).lower(), version


def framework_kind(name: str) -> Optional[tuple[str, bool]]:
    """(the framework a distribution belongs to, whether it is only a part of it), or None."""
    return next(((kind, part) for pattern, kind, part in FRAMEWORK_DISTS if pattern.match(name)), None)


def _record_files(dist: str, site: str) -> list[str]:
    files: list[str] = []
    record = os.path.join(dist, "RECORD")
    installed = os.path.join(dist, "installed-files.txt")
    if os.path.exists(record):
        rows = [line.split(",", 1)[0] for line in (read_text(record, 64 << 20) or "").splitlines()]
        base = site
    elif os.path.exists(installed):
        rows = [line.strip() for line in (read_text(installed, 64 << 20) or "").splitlines()]
        base = dist
    else:
        names = (read_text(os.path.join(dist, "top_level.txt")) or "").split()
        notes: list[str] = []
        return [f for n in names for f in walk_folder(os.path.join(site, n), notes)] if names else []
    for row in rows:
        if ".so" in os.path.basename(row):
            path = os.path.normpath(os.path.join(base, row))
            if os.path.isfile(path) and not os.path.islink(path) and is_elf(path):
                files.append(path)
    return sorted(set(files))


def find_frameworks(env: PythonEnv) -> list[Framework]:
    found: list[Framework] = []
    for site in env.site_packages:
        mains: list[Framework] = []  # two of one kind (tensorflow and tensorflow-gpu) are both reported
        parts: dict[str, list[tuple[FrameworkPart, list[str]]]] = {}
        for dist in sorted(glob.glob(os.path.join(site, "*.dist-info")) + glob.glob(os.path.join(site, "*.egg-info"))):
            name, version = _dist_name(dist)
            known = framework_kind(name)
            if known is None:
                continue
            kind, is_part = known
            if is_part:
                parts.setdefault(kind, []).append((FrameworkPart(name, version, dist), _record_files(dist, site)))
            else:
                mains.append(Framework(name, version, dist, tuple(_record_files(dist, site)), kind))
        for kind, members in parts.items():
            index = next((i for i, f in enumerate(mains) if f.kind == kind), None)
            if index is None:  # jaxlib without jax: the first part stands for the framework
                first, files = members.pop(0)
                mains.append(Framework(first.name, first.version, first.location, tuple(files), kind))
                index = len(mains) - 1
            main = mains[index]
            files = list(main.files) + [f for _part, extra in members for f in extra]
            mains[index] = Framework(main.name, main.version, main.location, tuple(dict.fromkeys(files)), kind,
                                     tuple(part for part, _files in members))
        found.extend(sorted(mains, key=lambda f: f.name))
    return found


def cuda_install_files(cache_paths: Iterable[str]) -> list[str]:
    """The machine's CUDA libraries: from the loader cache and ``/usr/local/cuda*``."""
    paths: dict[str, None] = {}
    for path in cache_paths:
        if CUDA_NAME.match(os.path.basename(path)):
            paths.setdefault(os.path.realpath(path), None)
    for folder in sorted(glob.glob("/usr/local/cuda*/lib*") + glob.glob("/usr/local/cuda*/targets/*/lib")):
        if os.path.isdir(folder):
            for name in sorted(os.listdir(folder)):
                path = os.path.join(folder, name)
                if ".so" in name and os.path.isfile(path) and is_elf(path):
                    paths.setdefault(os.path.realpath(path), None)
    return list(paths)


def discover(paths: tuple[str, ...], caller: Optional[str], prefix: Optional[str], python: Optional[str],
             cache_paths: Iterable[str]) -> Discovery:
    discovery = Discovery()
    if paths and not caller and _framework_targets(paths, discovery):
        return discovery
    if paths:
        targets_from_paths(paths, caller, discovery)
        return discovery
    env = python_env(prefix, python)
    discovery.environment = env
    discovery.frameworks = find_frameworks(env)
    for site in env.site_packages:  # a pip or conda change adds or removes a dist-info folder here
        discovery.walked[site] = _mtime(site)
    for framework in discovery.frameworks:
        for location in [framework.location] + [part.location for part in framework.parts]:
            discovery.walked[location] = _mtime(location)
    program = caller or env.python
    for framework in discovery.frameworks:
        group = f"{framework.name} {framework.version}"
        for path in framework.files:
            discovery.targets.append(Target(path, group, "dlopen" if program else "list", program))
    if not discovery.frameworks:
        discovery.fallback = (f"no GPU framework installed in {env.prefix}; checked the machine's CUDA "
                              "installation instead")
        for path in cuda_install_files(cache_paths):
            discovery.targets.append(Target(path, "CUDA installation"))
        if not discovery.targets:
            discovery.notes.append("no CUDA libraries found in ld.so.cache or /usr/local/cuda*")
    return discovery


def framework_site(path: str) -> Optional[str]:
    """The ``site-packages`` (or ``dist-packages``) folder above ``path``, when there is one."""
    parts = os.path.abspath(path).split(os.sep)
    for index in range(len(parts) - 1, 0, -1):
        if parts[index] in ("site-packages", "dist-packages"):
            return os.sep.join(parts[:index + 1])
    return None


def _framework_targets(paths: tuple[str, ...], discovery: Discovery) -> bool:
    """TARGETS that all lie inside one installed framework (``tensorflow/libtensorflow_framework.so.1``, or the
    whole ``site-packages/tensorflow``) are judged with that framework's load model: the environment is the one
    its site-packages belongs to, the targets are its files under the paths given."""
    sites = {framework_site(p) for p in paths}
    site = sites.pop() if len(sites) == 1 else None
    if site is None:
        return False
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(site)))
    if not is_python_environment(prefix):
        return False
    env = python_env(prefix)
    wanted = [os.path.realpath(p) for p in paths]

    def inside(file: str) -> bool:
        real = os.path.realpath(file)
        return any(real == w or real.startswith(w.rstrip(os.sep) + os.sep) for w in wanted)

    frameworks = [f for f in find_frameworks(env) if any(inside(file) for file in f.files)]
    if not frameworks:
        return False
    discovery.environment = env
    discovery.frameworks = frameworks
    for framework in frameworks:
        group = f"{framework.name} {framework.version}"
        discovery.targets.extend(Target(file, group, "dlopen" if env.python else "list", env.python)
                                 for file in framework.files if inside(file))
        discovery.notes.append(f"{', '.join(paths)}: part of {group}, judged with its own load model (the "
                               f"environment of {site})")
    return True


# -- the environment as `conda activate` leaves it ---------------------------------------------

ACTIVATION_VARIABLES = ("LD_LIBRARY_PATH", "LD_PRELOAD", "CUDA_HOME", "CUDA_PATH", "PATH")
ACTIVATION_TIMEOUT = 5.0  # seconds for one activate.d script
_EXPORT = re.compile(r"^\s*(?:export\s+)?(?P<name>[A-Za-z_][A-Za-z0-9_]*)=(?P<value>.*?)\s*(?:;\s*)?$")
_UNSET = re.compile(r"^\s*unset\s+(?P<names>[A-Za-z_][A-Za-z0-9_ ]*)\s*$")
_REFERENCE = re.compile(r"\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?::(?P<op>[+-])(?P<word>[^}]*))?\}"
                        r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Activation:
    """What one ``etc/conda/activate.d`` script sets, and how libdoctor learned it."""

    script: str
    how: str  # "ran it with sh", or why it was only read
    changes: tuple[tuple[str, Optional[str]], ...]  # (variable, new value; None: unset)


def conda_activation(prefix: str, environ: Optional[Mapping[str, str]] = None
                     ) -> tuple[dict[str, str], tuple[Activation, ...]]:
    """The variables a process sees after ``conda activate PREFIX``, from the env's own activate.d scripts.

    A script owned by root or by this user and writable by nobody else is run with ``sh`` in a scrubbed
    environment under a time limit; any other is only read (its plain ``export``/``unset`` lines).
    """
    current = dict(os.environ if environ is None else environ)
    current.update({"CONDA_PREFIX": prefix, "CONDA_DEFAULT_ENV": os.path.basename(prefix)})
    activations = []
    for script in sorted(glob.glob(os.path.join(prefix, "etc", "conda", "activate.d", "*.sh"))):
        before = {name: current.get(name) for name in ACTIVATION_VARIABLES}
        distrust = _distrust(script)
        if distrust is None:
            after, how = _run_activation(script, current)
        else:
            after, how = _read_activation(script, current), f"read its export lines, not run: {distrust}"
        current = after
        changes = tuple((n, current.get(n)) for n in ACTIVATION_VARIABLES if current.get(n) != before[n])
        activations.append(Activation(script, how, changes))
    return current, tuple(activations)


def _distrust(script: str) -> Optional[str]:
    """Why a script must not be run as this user (None: it may)."""
    for path in (script, os.path.dirname(script)):
        try:
            info = os.stat(path)
        except OSError as exc:
            return f"cannot stat {path}: {exc.strerror}"
        if info.st_uid not in (0, os.getuid()):
            return f"{path} belongs to another user (uid {info.st_uid})"
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            return f"{path} is writable by group or others"
    if not stat.S_ISREG(os.stat(script).st_mode):
        return "not a regular file"
    return None


def _run_activation(script: str, current: dict[str, str]) -> tuple[dict[str, str], str]:
    keep = ("HOME", "LANG", "CONDA_PREFIX", "CONDA_DEFAULT_ENV") + ACTIVATION_VARIABLES
    scrubbed = {k: current[k] for k in keep if k in current}
    scrubbed.setdefault("PATH", "/usr/bin:/bin")
    try:
        done = subprocess.run(["sh", "-c", '. "$1" >/dev/null 2>&1 </dev/null; env -0', "sh", script],
                              env=scrubbed, capture_output=True, timeout=ACTIVATION_TIMEOUT,
                              stdin=subprocess.DEVNULL, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        reason = "timed out" if isinstance(exc, subprocess.TimeoutExpired) else str(exc)
        return _read_activation(script, current), f"read its export lines: running it {reason}"
    if done.returncode != 0:
        return _read_activation(script, current), f"read its export lines: sh exited {done.returncode}"
    result = dict(current)
    seen = dict(item.split("=", 1) for item in done.stdout.decode("utf-8", "replace").split("\0") if "=" in item)
    for name in ACTIVATION_VARIABLES:
        if name in seen:
            result[name] = seen[name]
        else:
            result.pop(name, None)
    return result, "ran it with sh"


def _read_activation(script: str, current: dict[str, str]) -> dict[str, str]:
    result = dict(current)
    text = read_text(script)
    if text is None:
        return result
    for line in text.splitlines():
        unset = _UNSET.match(line)
        if unset:
            for name in unset.group("names").split():
                result.pop(name, None)
            continue
        match = _EXPORT.match(line)
        if match and match.group("name") in ACTIVATION_VARIABLES:
            result[match.group("name")] = _expand(_unquote(match.group("value")), result)
    return result


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def _expand(value: str, variables: Mapping[str, str]) -> str:
    def one(match: re.Match) -> str:
        name = match.group("braced") or match.group("bare")
        have = variables.get(name, "")
        if match.group("op") == "+":
            return _expand(match.group("word"), variables) if have else ""
        if match.group("op") == "-":
            return have or _expand(match.group("word"), variables)
        return have

    return _REFERENCE.sub(one, value)
