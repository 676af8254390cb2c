"""Running processes: which have a GPU framework loaded (each plug-in names the file that marks it), their
CUDA libraries and from where, libraries replaced or deleted since they were mapped (a restart is needed), and framework
processes with no CUDA runtime mapped at all: the field's silent failure, a worker on the CPU."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Iterable, Optional

from ..gpu.frameworks import PLUGINS, framework_info
from ..targets import CUDA_NAME

GPU_RUNTIME = re.compile(r"^lib(cudart|cudnn|cuda)\.so")


@dataclass(frozen=True)
class Mapped:
    path: str
    inode: int
    deleted: bool  # the kernel says the file is gone
    replaced: bool  # a different file is at that path now

    @property
    def stale(self) -> bool:
        return self.deleted or self.replaced


@dataclass(frozen=True)
class ProcessReport:
    pid: int
    name: str
    cmdline: str
    frameworks: tuple[str, ...]
    cuda: tuple[Mapped, ...]
    stale: tuple[Mapped, ...]
    impostors: tuple[str, ...] = ()  # CUDA libraries in use that are not what the framework was built for

    @property
    def on_cpu(self) -> bool:
        """A framework is loaded, but neither libcudart, libcudnn nor libcuda is mapped."""
        return bool(self.frameworks) and not any(GPU_RUNTIME.match(os.path.basename(m.path)) for m in self.cuda)


def read_maps(pid: int, proc: str = "/proc") -> list[Mapped]:
    """File mappings of a process, each file once (``/proc/PID/maps``)."""
    seen: dict[str, Mapped] = {}
    with open(os.path.join(proc, str(pid), "maps"), encoding="utf-8", errors="surrogateescape") as handle:
        for line in handle:
            parts = line.rstrip("\n").split(None, 5)
            if len(parts) < 6 or not parts[5].startswith("/"):
                continue
            path, inode = parts[5], int(parts[4])
            deleted = path.endswith(" (deleted)")
            if deleted:
                path = path[: -len(" (deleted)")]
            if path in seen:
                continue
            replaced = False
            if not deleted:
                try:
                    replaced = os.stat(path).st_ino != inode
                except OSError:
                    deleted = True
            seen[path] = Mapped(path, inode, deleted, replaced)
    return list(seen.values())


def _framework_file(path: str) -> bool:
    return any(plugin.mapped.search(path) for plugin in PLUGINS.values())


def _interesting(path: str) -> bool:
    return bool(CUDA_NAME.match(os.path.basename(path))) or _framework_file(path)


def inspect_process(pid: int, name: str, cmdline: str, proc: str = "/proc") -> Optional[ProcessReport]:
    try:
        maps = read_maps(pid, proc)
    except (OSError, ValueError):
        return None  # gone, or not ours to read
    frameworks = tuple(kind for kind, plugin in PLUGINS.items() if any(plugin.mapped.search(m.path) for m in maps))
    cuda = tuple(m for m in maps if CUDA_NAME.match(os.path.basename(m.path)))
    if not frameworks and not cuda:
        return None
    stale = tuple(m for m in maps if m.stale and _interesting(m.path))
    return ProcessReport(pid, name, cmdline, frameworks, cuda, stale, impostors_in_use(maps, cuda))


def _environment_of(path: str) -> Optional[str]:
    """The Python environment prefix a mapped framework file belongs to (``PREFIX/lib/pythonX.Y/site-packages``)."""
    parts = path.split("/")
    if "site-packages" not in parts:
        return None
    site = "/".join(parts[:parts.index("site-packages") + 1])
    return os.path.dirname(os.path.dirname(os.path.dirname(site)))


def impostors_in_use(maps: list[Mapped], cuda: tuple[Mapped, ...]) -> tuple[str, ...]:
    """CUDA files a framework process has mapped whose own SONAME is another major of a library the framework
    dlopens by name (a TensorFlow built for cuDNN 7 running on cuDNN 8 through a hand-made link)."""
    from ..gpu.cudatable import stem_of
    from ..loader.factstore import FactsStore
    from ..targets import find_frameworks, python_env

    prefixes = {p for p in (_environment_of(m.path) for m in maps if _framework_file(m.path)) if p}
    wanted: dict[str, tuple[str, str]] = {}  # stem -> (the soname asked for, the framework asking)
    for prefix in prefixes:
        env = python_env(prefix)
        for framework in find_frameworks(env):
            info = framework_info(framework, env)
            for lib in info.expected:
                wanted.setdefault(stem_of(lib.soname), (lib.soname, info.label))
    if not wanted:
        return ()
    store = FactsStore()
    found = []
    for mapped in cuda:
        facts = store.get_path(mapped.path)
        soname = getattr(facts, "soname", None)
        asked = wanted.get(stem_of(soname)) if soname else None
        if asked and soname != asked[0]:
            found.append(f"{asked[0]} is really {soname} ({mapped.path}): {asked[1]} was built for {asked[0]}")
    return tuple(found)


def scan_processes(pids: Optional[Iterable[int]] = None) -> list[ProcessReport]:
    import psutil

    wanted = set(pids) if pids is not None else None
    reports = []
    for process in psutil.process_iter(["pid", "name", "cmdline"]):
        info = process.info
        if wanted is not None and info["pid"] not in wanted:
            continue
        report = inspect_process(info["pid"], info.get("name") or "?", " ".join(info.get("cmdline") or []))
        if report is not None:
            reports.append(report)
    return reports


def ps_json(reports: list[ProcessReport]) -> dict:
    return {"schema_version": 1, "processes": [
        {"pid": r.pid, "name": r.name, "cmdline": r.cmdline, "frameworks": list(r.frameworks),
         "on_cpu": r.on_cpu, "cuda_libraries": [{"path": m.path, "deleted": m.deleted, "replaced": m.replaced}
                                                for m in r.cuda],
         "stale": [{"path": m.path, "deleted": m.deleted, "replaced": m.replaced} for m in r.stale],
         "impostors": list(r.impostors)}
        for r in reports]}
