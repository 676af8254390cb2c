"""Human and JSON renderings of a scan.  The JSON schema is documented in README.rst."""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Optional, TextIO

from . import __version__
from .loader.resolver import (
    CACHE,
    LD_LIBRARY_PATH,
    RPATH,
    RUNPATH,
    SYSTEM,
    FolderAttempt,
    LoadResult,
    Resolution,
    SourceAttempt,
)
from .scan import Problem, ScanReport, TargetReport, shown_name

SCHEMA_VERSION = 1


# -- JSON --------------------------------------------------------------------------------

def _folder_json(folder: FolderAttempt) -> dict[str, Any]:
    return {"folder": folder.folder, "outcome": folder.outcome, "detail": folder.detail or None,
            "candidate": folder.candidate}


def _source_json(source: SourceAttempt) -> dict[str, Any]:
    return {"source": source.tag, "owner": source.owner, "note": source.note or None,
            "folders": [_folder_json(f) for f in source.folders]}


def stale_conf_folders(problem: Problem, report: ScanReport) -> list[str]:
    """Folders of ld.so.conf that hold the missing soname itself although the cache does not know it."""
    conf = report.env.conf
    if conf is None or not problem.soname or report.env.cache_lookup.lookup(problem.soname):
        return []
    configured = {os.path.realpath(d) for d in conf.dirs}
    return list(dict.fromkeys(os.path.dirname(c.path) for c in problem.candidates
                              if c.exact and os.path.realpath(os.path.dirname(c.path)) in configured))


def install_hints(problem: Problem, report: ScanReport) -> list[str]:
    """What to install for a missing library: the framework's own pin, else the CUDA table's hint; each
    command aimed at the environment examined (its own python's pip, conda's ``-p PREFIX``)."""
    if problem.kind not in ("missing", "missing-dlopen", "driver", "impostor") or not problem.soname:
        return []
    from .gpu.cudatable import install_hint
    from .gpu.frameworkcheck import fitting_packages, installed_unreached

    if installed_unreached(problem.soname, report.frameworks):
        return []  # installed already: the cause says how the framework reaches it
    hints = fitting_packages(problem.soname, report.frameworks)
    fallback = install_hint(problem.soname, _cuda_major(problem, report))
    return [aimed(h, report) for h in (hints or ([fallback] if fallback else []))]


def _cuda_major(problem: Problem, report: ScanReport) -> Optional[int]:
    """The CUDA major of the framework whose object needs ``problem``'s library (one soname can serve several)."""
    from .gpu.frameworkcheck import cuda_major

    group = _group_of(report, problem.target)
    return next((cuda_major(f.info) for f in report.frameworks if f.info.label == group), None)


def aimed(command: str, report: ScanReport) -> str:
    """``pip install X`` -> ``ENV/bin/python -m pip install X``; ``conda install X`` -> ``conda install -p ENV X``:
    run from another env (conda's base, say), a bare command installs into the wrong one."""
    env = report.discovery.environment
    if env is None:
        return command
    if command.startswith("pip install ") and env.python:
        return f"{env.python} -m {command}"
    if command.startswith("conda install ") and os.path.isdir(os.path.join(env.prefix, "conda-meta")):
        return f"conda install -p {env.prefix} {command[len('conda install '):]}"
    return command


def _problem_json(problem: Problem, report: ScanReport) -> dict[str, Any]:
    return {
        "kind": problem.kind,
        "target": problem.target,
        "soname": problem.soname,
        "needed_by": problem.needed_by,
        "chain": list(problem.chain),
        "message": problem.message,
        "search": [_source_json(s) for s in problem.resolution.sources] if problem.resolution else [],
        "candidates": [{"path": c.path, "name": c.name, "exact": c.exact} for c in problem.candidates],
        "install": install_hints(problem, report),
        "severity": problem.severity,
        "links": list(problem.links),
        "made_by": link_maker(problem.links) if problem.links else None,
        "feature": problem.feature,
    }


def _closure_json(report: TargetReport, cwd: str) -> list[dict[str, Any]]:
    result = report.result
    entries = []
    for obj in result.closure():
        entries.append({"soname": obj.requested_as, "path": _absolute(obj.path, cwd), "realpath": obj.realpath,
                        "needed_by": obj.needed_by, "via": obj.via, "depth": obj.depth})
    seen = set()
    for resolution in result.relevant_resolutions():
        if not resolution.found and resolution.name not in seen:
            seen.add(resolution.name)
            entries.append({"soname": resolution.name, "path": None, "realpath": None,
                            "needed_by": resolution.requester, "via": "not found", "depth": None})
    return entries


def _absolute(path: str, cwd: str) -> str:
    return path if path.startswith("/") else os.path.join(cwd, path)


def to_json(report: ScanReport) -> dict[str, Any]:
    env = report.env
    discovery = report.discovery
    python_env = discovery.environment
    causes = causes_of(report)
    return {
        "schema_version": SCHEMA_VERSION,
        "libdoctor_version": __version__,
        "verdict": verdict_line(report, causes),
        "healthy": report.healthy,
        "environment": {
            "cwd": env.cwd,
            "ld_library_path": env.ld_library_path,
            "ld_preload": env.ld_preload,
            "loader": {"interpreter": env.loader.interpreter, "glibc_version": env.loader.glibc_version,
                       "system_dirs": list(env.loader.system_dirs), "lib": env.loader.lib,
                       "platform": env.loader.platform, "hwcaps": list(env.loader.hwcaps_active),
                       "facts_from": env.loader.source},
            "ld_so_cache": {"path": env.cache.path, "format": env.cache.format, "entries": len(env.cache.entries)}
            if env.cache else None,
            "python_env": {"prefix": python_env.prefix, "python": python_env.python,
                           "site_packages": list(python_env.site_packages)} if python_env else None,
            "frameworks": [{"name": f.name, "version": f.version, "dist_info": f.location, "objects": len(f.files),
                            "parts": [{"name": p.name, "version": p.version, "dist_info": p.location} for p in f.parts]}
                           for f in discovery.frameworks],
            "driver": _driver_json(report.driver) if report.driver else None,
            "activation": [{"script": a.script, "how": a.how, "set": dict(a.changes)} for a in report.activations],
        },
        "frameworks": [_framework_json(f) for f in report.frameworks],
        "probes": [{"framework": p.framework, "imported": p.imported, "gpu": p.gpu, "error": p.error,
                    "loaded": list(p.loaded), "predicted": list(p.predicted), "agrees": p.agrees,
                    "findings": list(p.findings), "logged": list(p.logged)} for p in report.probes],
        "targets": [
            {"path": t.target.path, "group": t.target.group, "mode": t.result.mode, "caller": t.target.caller,
             "verdict": "ok" if t.healthy else "problems", "error": t.result.root_error,
             "closure": _closure_json(t, env.cwd), "problems": [_problem_json(p, report) for p in t.problems]}
            for t in report.targets
        ],
        "problems": [_problem_json(p, report) for p in report.problems],
        "findings": [_finding_json(f) for f in report.findings],
        "causes": [{"error": c.error, "title": c.title, "details": list(c.details), "fix": c.fix} for c in causes],
        "next_step": next_step_of(causes),
        "notes": list(discovery.notes) + ([discovery.fallback] if discovery.fallback else []),
        "summary": {"targets": len(report.targets), "healthy": sum(t.healthy for t in report.targets),
                    "problems": sum(p.is_error for p in report.problems),
                    "warnings": sum(not p.is_error for p in report.problems)},
    }


def _finding_json(finding) -> dict[str, Any]:  # noqa: ANN001
    from .repair.fix import finding_json

    return finding_json(finding)


def _driver_json(driver) -> dict[str, Any]:  # noqa: ANN001
    return {"present": driver.present, "version": driver.version, "kernel_module": driver.kernel_module,
            "libcuda": driver.libcuda, "libcuda_version": driver.libcuda_version,
            "libnvidia_ml": driver.libnvidia_ml, "device_nodes": list(driver.device_nodes)}


def _framework_json(framework) -> dict[str, Any]:  # noqa: ANN001
    info = framework.info
    return {
        "name": info.name, "version": info.version, "flavour": info.flavour, "python": info.python_version,
        "cuda": info.cuda, "cudnn": info.cudnn, "built_from": info.built_from, "cuda_build": info.cuda_build,
        "libraries": {
            "expected": [{"soname": c.lib.soname, "family": c.lib.family, "role": c.lib.role,
                          "requester": c.lib.requester, "path": c.path, "found": c.found,
                          "error": c.result.root_error} for c in framework.checks],
            "resolved": framework.resolved, "missing": list(framework.missing)},
        "driver_fit": {"ok": framework.fit.ok, "reason": framework.fit.reason},
        "cuda_libraries": [{"soname": n, "path": p, "via": v} for n, p, v in framework.cuda_sources],
        "gpu_usable": framework.gpu_usable, "because": framework.because,
        "requirements": list(info.requirements), "notes": list(info.notes),
        "display": info.title, "install": info.install, "on_failure": info.on_failure,
        "optional_unavailable": [{"feature": f, "soname": s} for f, s in framework.unavailable_features],
    }


# -- human -------------------------------------------------------------------------------

class Style:
    def __init__(self, stream: TextIO) -> None:
        self.color = stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        encoding = (getattr(stream, "encoding", None) or "ascii").lower()
        self.unicode = "utf" in encoding
        self.ok = "[✓]" if self.unicode else "[ok]"
        self.bad = "[✗]" if self.unicode else "[x]"
        self.warn = "[!]"
        self.crash = "[☠]" if self.unicode else "[crash]"

    def paint(self, text: str, code: str) -> str:
        return f"\033[{code}m{text}\033[0m" if self.color else text

    def good(self, text: str) -> str:
        return self.paint(text, "32")

    def error(self, text: str) -> str:
        return self.paint(text, "31")

    def dim(self, text: str) -> str:
        return self.paint(text, "2")

    def warning(self, text: str) -> str:
        return self.paint(text, "33")


OUTCOME_WORDS = {"absent": "not there"}  # the JSON keeps the tag; people read words
_SOURCE_TITLES = {RPATH: "rpath", LD_LIBRARY_PATH: "LD_LIBRARY_PATH", RUNPATH: "runpath", CACHE: "ld.so.cache",
                  SYSTEM: "system folders"}


def explain(resolution: Resolution, style: Style, indent: str = "      ") -> list[str]:
    """libtree's "paths considered in this order", with glibc's real order and sources."""
    lines = [f"{indent}paths considered in this order:"]
    for number, source in enumerate(resolution.sources, 1):
        title = _SOURCE_TITLES.get(source.tag, source.tag)
        if source.owner and source.tag in (RPATH, RUNPATH):
            title += f" of {source.owner}"
        note = f" {source.note}" if source.note else ""
        lines.append(f"{indent}  {number}. {title}:{note}")
        for folder in source.folders:
            detail = f": {folder.detail}" if folder.detail and folder.outcome not in ("absent",) else ""
            shown = folder.folder or "(empty element: the current folder)"
            outcome = OUTCOME_WORDS.get(folder.outcome, folder.outcome)
            lines.append(f"{indent}       {shown}  " + style.dim(f"({outcome}{detail})"))
    return lines


@lru_cache(maxsize=1)
def _links_in_journals(root: str, stamp: int) -> dict[str, str]:
    """link path -> run id, for every link a journal of ours made (read once per state of the journal folder:
    a report asks for each impostor, several times)."""
    from .repair.fixer import load_journals

    return {action["path"]: journal["run_id"] for journal in load_journals(root) for action in journal["actions"]
            if action.get("kind") == "symlink" and isinstance(action.get("path"), str)}


def link_maker(links: tuple[str, ...]) -> Optional[str]:
    """Who made the symlinks behind an impostor: "libdoctor run RUN-ID" when a journal of ours holds one
    of them, "by hand" when some link is not ours, None when no link is involved."""
    if len(links) < 2:
        return None
    from .repair.statedir import state_dir

    root = state_dir()
    try:
        stamp = os.stat(os.path.join(root, "journal")).st_mtime_ns
    except OSError:
        stamp = 0
    ours = _links_in_journals(root, stamp)
    current = links[0]
    for text in links[1:]:
        real = os.path.join(os.path.realpath(os.path.dirname(current)), os.path.basename(current))
        if real in ours or current in ours:
            return f"libdoctor run {ours.get(real) or ours[current]}"
        current = os.path.normpath(os.path.join(os.path.dirname(current), text))
    return "by hand"


def _problem_lines(problem: Problem, style: Style, report: ScanReport, explained: set) -> list[str]:
    mark = style.error if problem.is_error else style.warning
    lines = [f"    {mark(problem.message)}"]
    if problem.links and len(problem.links) > 1:
        lines.append(f"      behind the name: {' -> '.join(problem.links)} (links made {link_maker(problem.links)})")
    if problem.chain:
        lines.append("      needed by: " + " <- ".join(reversed(problem.chain)))
    if problem.resolution is not None and problem.resolution.sources:
        key = (problem.soname, problem.needed_by)
        if key in explained:
            lines.append(f"      paths considered: as above for {problem.soname} needed by {problem.needed_by}")
        else:
            explained.add(key)
            lines.extend(explain(problem.resolution, style))
    if problem.candidates:
        lines.append("      elsewhere on this machine: " + "; ".join(c.describe() for c in problem.candidates[:4]))
    elif problem.kind == "missing":
        lines.append("      elsewhere on this machine: no other version found")
    for folder in stale_conf_folders(problem, report):
        lines.append(f"      {folder} is configured in ld.so.conf, but ld.so.cache has no entry: run ldconfig "
                     "(the loader reads only the cache)")
    for hint in install_hints(problem, report):
        lines.append(f"      install: {hint}")
    return lines


def _tree_lines(result: LoadResult, style: Style) -> list[str]:
    children: dict[Optional[str], list] = {}
    for obj in result.closure():
        children.setdefault(obj.needed_by, []).append(obj)
    lines: list[str] = []

    def walk(parent: Optional[str], depth: int) -> None:
        for obj in children.get(parent, []):
            lines.append(f"    {'  ' * depth}{obj.requested_as} => {obj.path} " + style.dim(f"[{obj.via}]"))
            walk(obj.path, depth + 1)

    root = result.objects[result.new_from].path if result.new_from < len(result.objects) else result.root
    walk(root, 0)
    if result.mode != "dlopen":
        for obj in children.get(None, []):
            if obj.via != "root":
                lines.append(f"    {obj.path} " + style.dim(f"[{obj.via}]"))
    return lines


def _framework_table(report: ScanReport, style: Style) -> list[str]:
    rows = [("framework", "version", "built for", "libraries", "driver", "GPU usable")]
    for framework in report.frameworks:
        info = framework.info
        built = (f"CUDA {info.cuda}" + (f", cuDNN {info.cudnn}" if info.cudnn else "")) if info.cuda else (
            "CPU only" if info.cuda_build is False else "?")
        total = len(framework.cuda_sources) + len(framework.missing)
        libraries = (f"{len(framework.missing)} missing" if framework.missing else
                     f"{len(framework.cuda_sources)} resolve")
        driver = framework.fit.reason if report.driver and report.driver.present else "none"
        usable = {True: "yes", False: "no", None: "?"}[framework.gpu_usable]
        rows.append((info.name, info.version, built, libraries if total else "-", driver, usable))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines = ["  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:5])) + "  " + row[5]
             for row in rows]
    for framework in report.frameworks:
        usable = {True: style.good("yes"), False: style.error("no"), None: "unknown"}[framework.gpu_usable]
        lines.append(f"  {framework.info.label}: GPU usable: {usable}, because {framework.because}")
        if framework.cuda_sources:
            lines.extend(f"    {line}" for line in framework.sources_summary())
    if report.driver is not None:
        lines.append(f"  driver: {report.driver.summary()}")
    return lines + _probe_lines(report, style)


def _probe_lines(report: ScanReport, style: Style) -> list[str]:
    lines = []
    for probe in report.probes:
        state = "imported" if probe.imported else f"did not import ({probe.error})"
        agreement = ": they agree" if probe.agrees else ""
        lines.append(f"  probe {probe.framework}: {state}; GPU usable per the framework: {probe.gpu}; "
                     f"{len(probe.loaded)} CUDA libraries loaded, {len(probe.predicted)} predicted{agreement}")
        lines.extend(f"    {style.warn} the framework logged: {line}" for line in probe.logged)
        lines.extend(f"    {style.warn} {line}" for line in probe.findings)
    return lines


# -- the default report: verdict, one block per cause, one next step ----------------------

@dataclass
class Cause:
    """One root cause, as a person reads it: what is wrong, what it affects, and what to run."""

    error: bool
    title: str
    details: list[str] = field(default_factory=list)
    fix: Optional[str] = None


def plural(count: int, word: str, plural: Optional[str] = None) -> str:
    return f"{count} {word if count == 1 else (plural or word + 's')}"


def _named(names: list[str], limit: int = 4) -> str:
    if len(names) == 2:
        return f"{names[0]} and {names[1]}"
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _framework_label(report: ScanReport, group: str) -> Optional[str]:
    """The framework a target group ("torch 2.14.1", from its dist-info) is, as its report names it."""
    return next((f.info.label for f in report.frameworks if group == f.info.label or group.startswith(
        f.info.name + " ")), None)


def _searched(problem: Problem) -> Optional[str]:
    if problem.resolution is None or not problem.resolution.sources:
        return None
    parts = []
    for source in problem.resolution.sources:
        title = _SOURCE_TITLES.get(source.tag, source.tag)
        if source.owner and source.tag in (RPATH, RUNPATH):
            title += f" of {os.path.basename(source.owner)}"
        if source.folders:
            title += f" ({plural(len(source.folders), 'folder')})"
        elif source.note in ("not set", "no entry"):
            title += f" ({source.note})"
        elif source.note:
            continue
        parts.append(title)
    return "searched: " + ", ".join(parts)


def _one_command(hints: list[str]) -> Optional[str]:
    """The hints of one cause as one pasteable command: a framework's own extra wins; pip installs with the
    same python are merged."""
    if not hints:
        return None
    extra = next((h for h in hints if re.search(r"\[(and-cuda|cuda\w*|ctk)[],]", h)), None)
    if extra:
        return extra
    split = [_install_parts(h) for h in hints if " install " in h]
    if len(split) == len(hints) > 1 and len({head for head, _words in split}) == 1:
        # one installer aimed at one env: one command for every package
        return f"{split[0][0]} {' '.join(dict.fromkeys(w for _head, words in split for w in words))}"
    return hints[0]


def _install_parts(hint: str) -> tuple[str, list[str]]:
    """``conda install -p ENV a b`` -> (``conda install -p ENV``, [a, b])."""
    head, _, rest = hint.partition(" install ")
    words = rest.split()
    if words[:1] == ["-p"] and len(words) > 1:
        return f"{head} install -p {words[1]}", words[2:]
    return f"{head} install", words


def _missing_causes(report: ScanReport, problems: list[Problem]) -> list[Cause]:
    from .gpu.frameworkcheck import reach_hint

    groups: dict[tuple[str, bool], list[Problem]] = {}
    for problem in problems:
        framework = problem.target if problem.kind == "driver" else _group_of(report, problem.target)
        groups.setdefault((framework, problem.is_error), []).append(problem)
    causes = []
    for (group, error), members in groups.items():
        names = list(dict.fromkeys(shown_name(p.soname) for p in members if p.soname))
        requesters = list(dict.fromkeys(os.path.basename(p.needed_by) for p in members if p.needed_by))
        framework = _framework_label(report, group)
        what = f"needed for the GPU by {framework}" if framework else f"needed by {_named(requesters, 2)}"
        reach = reach_hint(names, report.frameworks) if framework else None  # installed where it does not look
        where = "installed but off its search path" if reach else "not there"
        cause = Cause(error, f"{plural(len(names), 'library', 'libraries')} {what} "
                             f"{'is' if len(names) == 1 else 'are'} {where}: {_named(names)}")
        searched = _searched(members[0])
        if searched:
            cause.details.append(searched)
        elsewhere = list(dict.fromkeys(c.describe() for p in members for c in p.candidates))
        if elsewhere and not reach:
            cause.details.append("elsewhere on this machine: " + "; ".join(elsewhere[:2]))
        stale = list(dict.fromkeys(f for p in members for f in stale_conf_folders(p, report)))
        for folder in stale:
            cause.details.append(f"{folder} is configured in ld.so.conf, but ld.so.cache has no entry: run ldconfig "
                                 "(the loader reads only the cache)")
        hints = list(dict.fromkeys(h for p in members for h in install_hints(p, report)))
        same_version = any(c.name.startswith(p.soname or "\0") for p in members for c in p.candidates)
        if reach:
            cause.details.append(reach[0])
        cause.fix = ("ldconfig  # as root" if stale else reach[1] if reach else fix_command(report) if same_version
                     else _one_command(hints))
        causes.append(cause)
    return causes


def _optional_causes(problems: list[Problem]) -> list[Cause]:
    """One note per optional feature, naming every library it lacks."""
    features: dict[str, list[str]] = {}
    for problem in problems:
        features.setdefault(problem.feature or problem.message, []).append(problem.soname or "?")
    return [Cause(False, f"optional {feature} unavailable: {_named(list(dict.fromkeys(names)))} not found")
            for feature, names in features.items()]


def fix_command(report: ScanReport) -> str:
    """``libdoctor fix`` with the scan's own question: the same targets, environment and folders."""
    import shlex

    paths, caller, prefix, python, _strings, look_in = report.inputs[:6]  # run_scan's own arguments
    words = ["libdoctor", "fix"]
    words += ["--env", prefix] if prefix else ["--python", python] if python else []
    words += ["--dlopen-from", caller] if caller else []
    for folder in look_in:
        words += ["--look-in", folder]
    return " ".join(shlex.quote(w) for w in words + list(paths))


def _group_of(report: ScanReport, target: str) -> str:
    return next((t.target.group for t in report.targets if t.target.path == target), target)


def causes_of(report: ScanReport) -> list[Cause]:
    """Problems that share a cause as one block, errors first."""
    from .gpu.cudatable import DRIVER_SONAMES

    no_driver = report.driver is not None and not report.driver.present
    missing = [p for p in report.problems if p.kind in ("missing", "missing-dlopen")
               and not (no_driver and p.soname in DRIVER_SONAMES)]  # the driver's block says it
    causes = _missing_causes(report, missing)
    optional = [p for p in report.problems if p.kind == "optional"]
    seen: set[tuple[str, str]] = set()
    for problem in report.problems:
        key = (problem.kind, problem.message if problem.kind != "driver" else "driver")
        if problem.kind in ("missing", "missing-dlopen", "optional") or key in seen:
            continue
        seen.add(key)
        cause = Cause(problem.is_error, problem.message)
        if problem.kind == "driver":
            users = list(dict.fromkeys(_framework_label(report, p.target) or p.target
                                       for p in report.problems if p.kind == "driver"))
            cause.title = (f"no NVIDIA driver (libcuda.so.1 not found): {_named(users)} "
                           f"cannot use the GPU" if no_driver else problem.message)
            cause.fix = "install the NVIDIA driver that matches the kernel module (see the distribution's guide)"
        elif problem.kind == "impostor" and len(problem.links) > 1:
            cause.details.append(f"behind the name: {' -> '.join(problem.links)} (links made "
                                 f"{link_maker(problem.links)})")
            hint = _one_command(install_hints(problem, report))
            cause.fix = f"rm {problem.links[0]}" + (f" && {hint}" if hint else "")
        elif problem.needed_by and problem.chain:
            cause.details.append("needed by: " + " <- ".join(os.path.basename(c) for c in reversed(problem.chain)))
        causes.append(cause)
    for finding in report.findings:
        causes.append(Cause(finding.severity == "error", f"{finding.title}", list(finding.evidence[:2])))
    causes.extend(_optional_causes(optional))
    causes.sort(key=lambda c: not c.error)
    return causes


def next_step_of(causes: list[Cause]) -> Optional[str]:
    """The one command to run first: the fix of the first error that has one."""
    return next((c.fix for c in causes if c.error and c.fix), None)


def verdict_line(report: ScanReport, causes: list[Cause]) -> str:
    errors = sum(c.error for c in causes)
    frameworks = [f for f in report.frameworks if f.info.cuda_build]
    usable = [f for f in frameworks if f.gpu_usable]
    unusable = [f.info.label for f in frameworks if f.gpu_usable is False]
    if not errors:
        what = (f"{_named([f.info.label for f in usable])} can use the GPU" if usable and not unusable else
                f"every library resolves ({plural(len(report.targets), 'object')} checked)")
        warn = f"; {plural(len(causes), 'warning')}" if causes else ""
        return f"healthy: {what}{warn}"
    if unusable:
        return f"not healthy: {_named(unusable, 2)} cannot use the GPU ({plural(errors, 'cause')})"
    return f"not healthy: {plural(errors, 'cause')} of failure in {plural(len(report.targets), 'object')} checked"


def render_summary(report: ScanReport, stream: TextIO = sys.stdout, quiet: bool = False) -> None:
    """The default report: a verdict, the driver, one block per cause, one next step."""
    style = Style(stream)
    causes = causes_of(report)
    verdict = verdict_line(report, causes)
    out = [style.good(verdict) if report.healthy else style.error(verdict)]
    if quiet:
        stream.write(out[0] + "\n")
        return
    if report.driver is not None:
        out.append(f"  driver: {report.driver.summary()}")
    env = report.discovery.environment
    if env is not None:
        names = ", ".join(f.info.label + (f" (built for CUDA {f.info.cuda})" if f.info.cuda else "")
                          for f in report.frameworks) or "no GPU framework"
        out.append(f"  environment: {env.prefix}: {names}")
    if report.discovery.fallback:
        out.append(f"  {report.discovery.fallback}")
    for activation in report.activations:
        if activation.changes:
            out.append(f"  as activated: {os.path.basename(activation.script)} sets "
                       + ", ".join(name for name, _ in activation.changes))
    out.extend(_probe_lines(report, style))
    for cause in causes:
        mark = style.error(style.bad) if cause.error else style.warning(style.warn)
        out.append(f"{mark} {cause.title}")
        out.extend(f"    {line}" for line in cause.details)
        if cause.fix:
            out.append(f"    fix: {cause.fix}")
    if report.discovery.notes:
        out.append(f"{style.warn} {plural(len(report.discovery.notes), 'input')} skipped (-v names them)")
    step = next_step_of(causes)
    if step:
        out.append(f"next step: {step}")
    out.append(style.dim(f"{plural(len(report.targets), 'object')} checked; -v: every object and search; "
                         "`libdoctor explain NAME`: every folder searched for NAME"))
    stream.write("\n".join(out) + "\n")


def searches_for(report: ScanReport, soname: str) -> list[Resolution]:
    """Every search the loader makes for ``soname`` in this report, once each."""
    results = [t.result for t in report.targets] + [c.result for t in report.targets for c in t.dlopens]
    results += [c.result for f in report.frameworks for c in f.checks]
    seen: set = set()
    found = []
    for result in results:
        for resolution in result.resolutions:
            key = (resolution.requester, resolution.path, tuple(f.folder for s in resolution.sources
                                                                   for f in s.folders))
            if resolution.name == soname and key not in seen and resolution.via != "loaded":
                seen.add(key)
                found.append(resolution)
    return found


def explain_json(report: ScanReport, soname: str) -> dict[str, Any]:
    return {"schema_version": SCHEMA_VERSION, "soname": soname, "searches": [
        {"needed_by": r.requester, "path": r.path, "via": r.via, "error": r.error,
         "search": [_source_json(s) for s in r.sources]} for r in searches_for(report, soname)]}


def explain_lines(report: ScanReport, soname: str, style: Style) -> list[str]:
    """``libdoctor explain SONAME``: libtree's "paths considered in this order", for each search."""
    out: list[str] = []
    for resolution in searches_for(report, soname):
        state = (f"found: {resolution.path} (through {resolution.via})" if resolution.found
                 else style.error(f"not found: {resolution.error}"))
        out.append(f"{soname}, needed by {resolution.requester or 'LD_PRELOAD'}: {state}")
        out.extend(explain(resolution, style, indent="  "))
    problems = [p for p in report.problems if p.soname == soname and p.candidates]
    if problems:
        out.append("elsewhere on this machine: " + "; ".join(c.describe() for c in problems[0].candidates[:6]))
    return out or [f"nothing in this scan asks for {soname}"]


def render_human(report: ScanReport, stream: TextIO = sys.stdout, verbose: bool = False) -> None:
    if not verbose:
        render_summary(report, stream)
        return
    style = Style(stream)
    out = []
    discovery = report.discovery
    if discovery.environment is not None:
        env = discovery.environment
        names = ", ".join(f"{f.name} {f.version}" for f in discovery.frameworks) or "no GPU framework"
        out.append(f"environment {env.prefix} (python: {env.python or 'not found'}): {names}")
    if discovery.fallback:
        out.append(discovery.fallback)
    for activation in report.activations:
        changes = ", ".join(f"{name}={value}" if value is not None else f"unset {name}"
                            for name, value in activation.changes) or "nothing libdoctor looks at"
        out.append(f"as activated: {activation.script} ({activation.how}) sets {changes}")
    if report.frameworks:
        out.extend(_framework_table(report, style))
    explained: set = set()  # a search shown once; later problems with the same one point back to it
    for target in report.targets:
        count = len(target.result.closure())
        if not target.problems:
            out.append(f"{style.good(style.ok)} {target.target.path}: {count} dependencies resolve")
        else:
            kinds = ", ".join(p.soname or p.kind for p in target.problems)
            mark = style.error(style.bad) if not target.healthy else style.warning(style.warn)
            out.append(f"{mark} {target.target.path}: {len(target.problems)} "
                       f"problem{'s' if len(target.problems) != 1 else ''} ({kinds})")
            for problem in target.problems:
                out.extend(_problem_lines(problem, style, report, explained))
        if verbose and target.result.objects:
            out.extend(_tree_lines(target.result, style))
    for finding in report.findings:
        mark = style.error(style.bad) if finding.severity == "error" else style.warning(style.warn)
        out.append(f"{mark} {finding.id}: {finding.title}")
        out.extend(f"      {line}" for line in finding.evidence)
    for note in discovery.notes:
        out.append(f"{style.warn} {note}")
    if report.cache_note:
        out.append(f"{style.warn} {report.cache_note}")
    healthy = sum(t.healthy for t in report.targets)
    errors = sum(p.is_error for p in report.problems)
    summary = (f"{plural(len(report.targets), 'object')} checked, {healthy} healthy, {plural(errors, 'problem')}, "
               f"{plural(len(report.problems) - errors, 'warning')}")
    out.append(style.good(summary) if report.healthy else style.error(summary))
    stream.write("\n".join(out) + "\n")


# -- fix plans ---------------------------------------------------------------------------

def _unrepaired_lines(plan, style: Style) -> list[str]:  # noqa: ANN001
    """First, in one line, what the plan leaves broken; then the install command for it."""
    left = plan.left_unrepaired()
    if not left:
        return []
    names = ", ".join(dict.fromkeys(p.soname or p.kind for p in left))
    lines = [style.error(f"this plan leaves {len(left)} problem{'s' if len(left) != 1 else ''} unrepaired "
                         f"({names}): the GPU stays unusable until they are fixed")]
    hints = list(dict.fromkeys(h for p in left for h in install_hints(p, plan.report)))
    lines.extend(f"  install: {hint}" for hint in hints)
    for problem in left:
        if problem.kind == "impostor":
            lines.append(f"  {problem.message}")
            if len(problem.links) > 1:
                lines.append(f"    remove the link {problem.links[0]} (made {link_maker(problem.links)}) and install "
                             f"the real {problem.soname}")
    return lines


_GRADE_COLORS = {"safe": "32", "risky": "33", "broken": "31"}


def plan_groups(plan) -> list[tuple[object, tuple[str, ...], bool]]:  # noqa: ANN001
    """The proposals as a person reads them, safest first: (proposal, the sonames it serves, chosen).

    One line per change: a folder added for six names, or the same install command, is one line
    naming what it serves (the JSON keeps one proposal per name)."""
    chosen = {p.id for p in plan.chosen}
    groups: dict[tuple, list] = {}
    for proposal in plan.proposals:
        if proposal.kind == "search-path":
            key: tuple = ("search-path", proposal.folder, proposal.grade)
        elif proposal.kind == "install":
            key = ("install", proposal.command)
        else:
            key = ("symlink", proposal.id)
        groups.setdefault(key, []).append(proposal)
    rows = []
    for members in groups.values():
        sonames = tuple(dict.fromkeys(p.soname for p in members if p.soname))
        rows.append((members[0], sonames, any(p.id in chosen for p in members)))
    order = {"safe": 0, "risky": 1, "broken": 2}
    rows.sort(key=lambda row: (order.get(row[0].grade or "", 3), row[0].rank, row[1]))
    return rows


def render_plan(plan, stream: TextIO = sys.stdout, outcome=None, after=None, show_plan: bool = True  # noqa: ANN001
                ) -> None:
    style = Style(stream)
    out: list[str] = _unrepaired_lines(plan, style) if show_plan else []
    if show_plan:
        out.extend(_plan_lines(plan, style))
    if outcome is not None:
        out.append("")
        out.append(f"applied (run {outcome.run_id or '-'}; `libdoctor undo {outcome.run_id}` reverts it):"
                   if outcome.run_id else "applied: nothing new")
        out.extend(f"  created {c}" for c in outcome.created)
        out.extend(f"  already present {c}" for c in dict.fromkeys(outcome.kept) if c not in outcome.created)
        out.extend(f"  {style.error('refused')} {r}" for r in outcome.refused)
    if after is not None:
        before_n = sum(p.is_error for p in plan.report.problems)
        after_n = sum(p.is_error for p in after.report.problems)
        line = f"before: {before_n} problem{'s' if before_n != 1 else ''}; after: {after_n}"
        out.append(style.good(line) if after_n == 0 else style.error(line))
    stream.write("\n".join(out) + "\n")


def _plan_lines(plan, style: Style) -> list[str]:  # noqa: ANN001
    out: list[str] = []
    if not plan.findings and not plan.proposals and not plan.left_unrepaired():
        out.append(style.good("nothing to fix: every dependency resolves"))
    for finding in plan.findings:
        marks = {"error": style.bad, "warning": style.warn, "info": "[i]"}
        mark = style.crash if finding.status == "crashed" else marks.get(finding.severity, "[?]")
        out.append(f"{mark} {finding.id}: {finding.title}")
        out.extend(f"      {line}" for line in finding.evidence)
    rows = plan_groups(plan)
    if rows:
        out.append("")
        out.append("proposed repairs, safest first (* = what --apply does):")
    for proposal, sonames, chosen in rows:
        grade = proposal.grade or "hint"
        label = style.paint(f"[{grade}]", _GRADE_COLORS.get(grade, "0"))
        ask = " (applied only with --accept risky)" if grade == "risky" and not chosen else ""
        serves = f" (for {', '.join(sonames)})" if len(sonames) > 1 else ""
        title = f"add {proposal.folder} to the search path" if proposal.kind == "search-path" else proposal.title
        out.append(f" {'*' if chosen else ' '} {label} {proposal.kind}: {title}{serves}{ask}")
        if proposal.kind == "symlink":
            out.append(f"        {proposal.link} -> {proposal.target}")
        out.extend(f"        {line}" for line in proposal.evidence[:6])
    return out
