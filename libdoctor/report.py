"""Human and JSON renderings of a scan, of a fix plan and of the bug-ticket summary (``libdoctor report``).
Nothing here decides anything: every verdict, cause, grade, hint and next step comes from the diagnosis
(``rules.engine``)."""
from __future__ import annotations

import getpass
import os
import platform
import re
import sys
from typing import Any, Callable, Optional, TextIO

from . import __version__
from .loader.resolver import RPATH, RUNPATH, FolderAttempt, LoadResult, Resolution, SourceAttempt
from .rules.base import Action, Cause, Diagnosis, Finding
from .rules.causes import SOURCE_TITLES, behind_the_name, plural
from .rules.facts import ScanReport, TargetReport

SCHEMA_VERSION = 1
_OURS = re.compile(r"\x1b\[(?:0|2|31|32|33)m")  # exactly the colours Style paints: a name's own "conceal" or
# "blink" sequence is shown escaped like any other control sequence
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\x80-\x9f\ud800-\udfff]|\n")


def escaped(text: str) -> str:
    """A line as it may reach a terminal: control characters from file names shown as escapes (a crafted name
    can neither clear the screen nor forge a line), this module's own colours kept."""
    parts, last = [], 0
    for match in _OURS.finditer(text):
        parts.append(_CONTROL.sub(_escape, text[last:match.start()]))
        parts.append(match.group(0))
        last = match.end()
    parts.append(_CONTROL.sub(_escape, text[last:]))
    return "".join(parts)


def _escape(match: "re.Match[str]") -> str:
    code = ord(match.group(0))
    if code == 10:
        return "\\n"
    return f"\\x{code - 0xDC00 if 0xDC80 <= code <= 0xDCFF else code:02x}"  # a byte kept by surrogateescape


def write_lines(stream: TextIO, lines: list[str]) -> None:
    stream.write("\n".join(escaped(line) for line in lines) + "\n")


# -- JSON --------------------------------------------------------------------------------

def _folder_json(folder: FolderAttempt) -> dict[str, Any]:
    return {"folder": folder.folder, "outcome": folder.outcome, "detail": folder.detail or None,
            "candidate": folder.candidate}


def _source_json(source: SourceAttempt) -> dict[str, Any]:
    return {"source": source.tag, "owner": source.owner, "note": source.note or None,
            "folders": [_folder_json(f) for f in source.folders]}


def finding_installs(diagnosis: Diagnosis, finding: Finding) -> list[str]:
    """The install commands the diagnosis attached to this finding's library."""
    cause = diagnosis.cause_of(finding)
    return [a.command for a in (cause.actions if cause else ()) if a.kind == "install" and a.command
            and a.command != "ldconfig" and a.soname in (finding.soname, None)]


def problem_json(finding: Finding, diagnosis: Diagnosis) -> dict[str, Any]:
    return {
        "kind": finding.kind, "target": finding.target, "soname": finding.soname, "needed_by": finding.needed_by,
        "chain": list(finding.chain), "message": finding.message,
        "search": [_source_json(s) for s in finding.resolution.sources] if finding.resolution else [],
        "candidates": [{"path": c.path, "name": c.name, "exact": c.exact, "verdict": c.verdict, "why": c.why}
                       for c in finding.candidates],
        "install": finding_installs(diagnosis, finding), "severity": finding.severity, "links": list(finding.links),
        "made_by": finding.made_by, "feature": finding.feature, "cause": finding.key,
    }


def finding_json(finding: Finding) -> dict[str, Any]:
    return {"id": finding.rule, "severity": finding.severity, "title": finding.message, "status": finding.status,
            "evidence": list(finding.evidence), "objects": list(finding.objects)}


def action_json(action: Action) -> dict[str, Any]:
    return {"id": action.id, "rule": action.rule, "kind": action.kind, "title": action.title,
            "soname": action.soname, "link": action.link, "target": action.target, "folder": action.folder,
            "position": action.position, "path": action.path, "command": action.command, "grade": action.grade,
            "evidence": list(action.evidence), "consumers": list(action.consumers)}


def cause_json(cause: Cause) -> dict[str, Any]:
    return {"error": cause.error, "key": cause.key, "severity": cause.severity, "title": cause.title,
            "details": list(cause.details), "fix": cause.fix, "repaired": cause.repaired,
            "actions": [a.id for a in cause.actions]}


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


def _diagnosis(report: ScanReport) -> Diagnosis:
    assert report.diagnosis is not None, "the report was made without its diagnosis"
    return report.diagnosis


def to_json(report: ScanReport) -> dict[str, Any]:
    env = report.env
    discovery = report.discovery
    python_env = discovery.environment
    diagnosis = _diagnosis(report)
    problems = diagnosis.problems
    return {
        "schema_version": SCHEMA_VERSION,
        "libdoctor_version": __version__,
        "verdict": diagnosis.verdict,
        "healthy": diagnosis.healthy,
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
            "libdoctor_additions": list(report.additions),
        },
        "frameworks": [_framework_json(f) for f in report.frameworks],
        "probes": [{"framework": p.framework, "imported": p.imported, "gpu": p.gpu, "error": p.error,
                    "loaded": list(p.loaded), "predicted": list(p.predicted), "agrees": p.agrees,
                    "findings": list(p.findings), "logged": list(p.logged),
                    "versions": [{"path": path, "version": version} for path, version in p.versions]}
                   for p in report.probes],
        "targets": [
            {"path": t.target.path, "group": t.target.group, "mode": t.result.mode, "caller": t.target.caller,
             "verdict": "problems" if any(f.is_error for f in diagnosis.for_target(t.target.path)) else "ok",
             "error": t.result.root_error, "closure": _closure_json(t, env.cwd),
             "problems": [problem_json(p, diagnosis) for p in diagnosis.for_target(t.target.path)]}
            for t in report.targets
        ],
        "problems": [problem_json(p, diagnosis) for p in problems],
        "findings": [finding_json(f) for f in diagnosis.hazards],
        "causes": [cause_json(c) for c in diagnosis.causes],
        "actions": [action_json(a) for a in diagnosis.actions],
        "next_step": diagnosis.next_step,
        "notes": list(discovery.notes) + ([discovery.fallback] if discovery.fallback else []),
        "summary": {"targets": len(report.targets),
                    "healthy": sum(not any(f.is_error for f in diagnosis.for_target(t.target.path))
                                   for t in report.targets),
                    "problems": sum(f.is_error for c in diagnosis.causes if c.error for f in c.findings),
                    "warnings": sum(not p.is_error for p in problems),
                    "causes": sum(c.error for c in diagnosis.causes)},
    }


def _driver_json(driver) -> dict[str, Any]:  # noqa: ANN001
    return {"present": driver.present, "version": driver.version, "kernel_module": driver.kernel_module,
            "libcuda": driver.libcuda, "libcuda_version": driver.libcuda_version,
            "libnvidia_ml": driver.libnvidia_ml, "device_nodes": list(driver.device_nodes),
            "gpus": list(driver.gpus) if driver.gpus is not None else None, "wsl": driver.wsl}


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


def plan_json(report: ScanReport, outcome=None, after: Optional[ScanReport] = None  # noqa: ANN001
              ) -> dict[str, Any]:
    diagnosis = _diagnosis(report)
    data: dict[str, Any] = {
        "schema_version": 1,
        "verdict": diagnosis.verdict,
        "findings": [finding_json(f) for f in diagnosis.findings],
        "proposals": [action_json(a) for a in diagnosis.actions],
        "plan": [a.id for a in diagnosis.chosen],
        "unrepaired": [{"kind": f.kind, "soname": f.soname, "message": f.message}
                       for c in diagnosis.unrepaired for f in c.findings[:1]],
        "causes": [cause_json(c) for c in diagnosis.causes],
        "next_step": diagnosis.next_step,
        "summary": {"problems": len(diagnosis.problems), "findings": len(diagnosis.findings),
                    "proposals": len(diagnosis.actions)},
    }
    if outcome is not None:
        data["applied"] = {"run_id": outcome.run_id, "created": outcome.created, "kept": outcome.kept,
                           "refused": outcome.refused}
    if after is not None:
        later = _diagnosis(after)
        data["after"] = {"problems": len(later.problems), "findings": [finding_json(f) for f in later.findings],
                         "verdict": later.verdict, "healthy": later.healthy}
    return data


# -- human -------------------------------------------------------------------------------

class Style:
    def __init__(self, stream: TextIO) -> None:
        self.color = stream.isatty() and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"
        encoding = (getattr(stream, "encoding", None) or "ascii").lower()
        self.unicode = "utf" in encoding
        self.ok = "[✓]" if self.unicode else "[ok]"
        self.bad = "[✗]" if self.unicode else "[x]"
        self.warn = "[!]"
        self.note = "[i]"
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

    def mark(self, severity: str) -> str:
        if severity == "error":
            return self.error(self.bad)
        return self.warning(self.warn) if severity == "warning" else self.note


OUTCOME_WORDS = {"absent": "not there"}  # the JSON keeps the tag; people read words


def explain(resolution: Resolution, style: Style, indent: str = "      ") -> list[str]:
    """libtree's "paths considered in this order", with glibc's real order and sources."""
    lines = [f"{indent}paths considered in this order:"]
    for number, source in enumerate(resolution.sources, 1):
        title = SOURCE_TITLES.get(source.tag, source.tag)
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


def _cause_lines(cause: Cause, style: Style) -> list[str]:
    lines = [f"{style.mark(cause.severity)} {cause.title}"]
    lines += [f"    {line}" for line in cause.details]
    if cause.fix:
        lines.append(f"    fix: {cause.fix}")
    return lines


def _header(report: ScanReport, style: Style) -> list[str]:
    out = []
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
    if report.additions:
        out.append(f"  libdoctor's applied repairs add to LD_LIBRARY_PATH: {':'.join(report.additions)}")
    return out + _probe_lines(report, style)


def summary_lines(report: ScanReport, style: Style) -> list[str]:
    """The default report: the verdict, the machine, one block per cause, one next step."""
    diagnosis = _diagnosis(report)
    out = [style.good(diagnosis.verdict) if diagnosis.healthy else style.error(diagnosis.verdict)]
    out += _header(report, style)
    for cause in diagnosis.causes:
        out += _cause_lines(cause, style)
    if report.discovery.notes:
        out.append(f"{style.warn} {plural(len(report.discovery.notes), 'input')} skipped (-v names them)")
    if diagnosis.next_step:
        out.append(f"next step: {diagnosis.next_step}")
    return out


QUIET_WIDTH = 80  # node-problem-detector keeps 80 bytes of a plugin's message


def one_line(text: str, width: int = QUIET_WIDTH) -> str:
    """``text`` as one line of at most ``width`` characters, ASCII-marked where it is cut."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."


def quiet_verdict(reports: list[ScanReport]) -> str:
    """``-q``: the verdict of one report, or of several environments, in one line of at most 80 characters."""
    if len(reports) == 1:
        return one_line(_diagnosis(reports[0]).verdict)
    bad = [r for r in reports if not r.healthy]
    if not bad:
        return one_line(f"healthy: {plural(len(reports), 'environment')} checked, every framework loads")
    first = re.sub(r" \(\d+ causes?\)$", "", _diagnosis(bad[0]).verdict.split(": ", 1)[-1])
    more = f" (+{len(bad) - 1} more)" if len(bad) > 1 else ""
    return one_line(f"not healthy: {len(bad)}/{len(reports)} envs: {first}{more}")


def checklist_lines(reports: list[ScanReport], style: Style) -> list[str]:
    """The top of a report on several environments, flutter doctor's way: one line per area (the machine's GPU
    and driver, then each environment with its frameworks), each marked [✓], [!] or [✗]."""
    out = []
    driver = next((r.driver for r in reports if r.driver is not None), None)
    driver_causes = [c for r in reports for c in _diagnosis(r).causes
                     if any(f.kind == "driver" for f in c.findings)]
    if driver is not None:
        mark = style.bad if any(c.error for c in driver_causes) else style.warn if driver_causes else style.ok
        out.append(f"{mark} GPU and driver: {driver.summary()}")
    for report in reports:
        diagnosis = _diagnosis(report)
        env = report.discovery.environment
        where = env.prefix if env is not None else "this machine"
        names = ", ".join(f.info.label for f in report.frameworks) or "no GPU framework"
        others = [c for c in diagnosis.causes if c not in driver_causes]
        mark = (style.bad if any(c.error for c in others) else style.warn if others
                else style.ok)
        state = (f"{plural(sum(c.error for c in others), 'cause')} of failure" if any(c.error for c in others)
                 else f"{plural(len(others), 'warning')}" if others else "loads")
        out.append(f"{mark} {where}: {names}: {state}")
    return out


def render_summary(report: ScanReport, stream: TextIO = sys.stdout, quiet: bool = False) -> None:
    style = Style(stream)
    if quiet:
        verdict = quiet_verdict([report])
        write_lines(stream, [style.good(verdict) if report.healthy else style.error(verdict)])
        return
    lines = summary_lines(report, style)
    lines.append(style.dim(f"{plural(len(report.targets), 'object')} checked; -v: every object and search; "
                           "`libdoctor explain NAME`: every folder searched for NAME"))
    write_lines(stream, lines)


def render_human(report: ScanReport, stream: TextIO = sys.stdout, verbose: bool = False) -> None:
    """The default report; ``verbose``: the same report, then every object, search, tree and repair."""
    if not verbose:
        render_summary(report, stream)
        return
    style = Style(stream)
    lines = summary_lines(report, style)
    lines.append(style.dim(f"{plural(len(report.targets), 'object')} checked; the details follow"))
    lines += [""] + detail_lines(report, style)
    write_lines(stream, lines)


def detail_lines(report: ScanReport, style: Style) -> list[str]:
    diagnosis = _diagnosis(report)
    out = []
    discovery = report.discovery
    if discovery.environment is not None:
        env = discovery.environment
        names = ", ".join(f"{f.name} {f.version}" for f in discovery.frameworks) or "no GPU framework"
        out.append(f"environment {env.prefix} (python: {env.python or 'not found'}): {names}")
    judged = report.env.ld_library_path
    out.append(f"LD_LIBRARY_PATH as judged: {judged if judged is not None else '(not set)'}")
    for activation in report.activations:
        changes = ", ".join(f"{name}={value}" if value is not None else f"unset {name}"
                            for name, value in activation.changes) or "nothing libdoctor looks at"
        out.append(f"as activated: {activation.script} ({activation.how}) sets {changes}")
    if report.frameworks:
        out.extend(_framework_table(report, style))
    explained: set = set()  # a search shown once; later problems with the same one point back to it
    for target in report.targets:
        problems = diagnosis.for_target(target.target.path)
        count = len(target.result.closure())
        if not problems:
            out.append(f"{style.good(style.ok)} {target.target.path}: {count} dependencies resolve")
        else:
            kinds = ", ".join(p.soname or p.kind for p in problems)
            errors = any(p.is_error for p in problems)
            mark = style.error(style.bad) if errors else style.warning(style.warn)
            out.append(f"{mark} {target.target.path}: {plural(len(problems), 'problem')} ({kinds})")
            for problem in problems:
                out.extend(_problem_lines(problem, style, explained))
        if target.result.objects:
            out.extend(_tree_lines(target.result, style))
    shown = {p for t in report.targets for p in diagnosis.for_target(t.target.path)}
    for problem in diagnosis.problems:
        if problem not in shown:
            out.append(f"{style.mark(problem.severity)} {problem.target}: {problem.kind}")
            out.extend(_problem_lines(problem, style, explained))
    for finding in diagnosis.hazards:
        mark = style.crash if finding.status == "crashed" else style.mark(finding.severity)
        out.append(f"{mark} {finding.rule}: {finding.message}")
        out.extend(f"      {line}" for line in finding.evidence)
    out.extend(_action_lines(diagnosis, style))
    for note in discovery.notes:
        out.append(f"{style.warn} {note}")
    if report.cache_note:
        out.append(f"{style.warn} {report.cache_note}")
    return out


def _problem_lines(problem: Finding, style: Style, explained: set) -> list[str]:
    mark = style.error if problem.is_error else style.warning
    lines = [f"    {mark(problem.message)}"]
    line = behind_the_name(problem)
    if line:
        lines.append(f"      {line}")
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
        lines.append("      elsewhere on this machine: " + "; ".join(c.describe() for c in problem.candidates))
    elif problem.kind == "missing":
        lines.append("      elsewhere on this machine: no other copy found")
    return lines


def _action_lines(diagnosis: Diagnosis, style: Style) -> list[str]:
    if not diagnosis.actions:
        return []
    chosen = {a.id for a in diagnosis.chosen}
    out = ["repairs, safest first (* = what `libdoctor fix --apply` does):"]
    for action in diagnosis.actions:
        out.append(f" {'*' if action.id in chosen else ' '} [{action.grade or 'hint'}] {action.kind}: {action.title}")
        out.extend(f"        {line}" for line in action.evidence)
    return out


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
    return lines


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


# -- explain -----------------------------------------------------------------------------

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
    return out or [f"nothing in this scan asks for {soname}"]


# -- fix plans ---------------------------------------------------------------------------

_GRADE_COLORS = {"safe": "32", "risky": "33", "broken": "31"}


def _unrepaired_lines(diagnosis: Diagnosis, style: Style) -> list[str]:
    """First, in one line, what the plan leaves broken; then what to run for it."""
    left = diagnosis.unrepaired
    if not left:
        return []
    names = ", ".join(dict.fromkeys(n for c in left for n in (c.sonames or (c.findings[0].kind,))))
    lines = [style.error(f"this plan leaves {plural(len(left), 'cause')} unrepaired ({names}): "
                         f"{'it stays' if len(left) == 1 else 'they stay'} until fixed as follows")]
    for cause in left:
        lines.append(f"  {cause.title}")
        for action in cause.actions:
            if action.kind == "install" and action.command:
                word = "then" if action.command.startswith("install ") else "install"  # an instruction, or a command
                lines.append(f"    {word}: {action.command}")
    return lines


def plan_rows(diagnosis: Diagnosis) -> list[tuple[Action, tuple[str, ...], bool]]:
    """The actions as a person reads them, safest first: (action, the names it serves, chosen).  One line per
    change: a folder added for six names, or one install command, is one line naming what it serves."""
    chosen = {a.id for a in diagnosis.chosen}
    groups: dict[tuple, list[Action]] = {}
    for action in diagnosis.actions:
        if action.kind == "search-path":
            key: tuple = ("search-path", action.folder, action.position, action.grade)
        elif action.kind == "install":
            key = ("install", action.command)
        else:
            key = (action.kind, action.id)
        groups.setdefault(key, []).append(action)
    rows = []
    for members in groups.values():
        sonames = tuple(dict.fromkeys(a.soname for a in members if a.soname))
        rows.append((members[0], sonames, any(a.id in chosen for a in members)))
    return rows


def _plan_lines(diagnosis: Diagnosis, style: Style) -> list[str]:
    out: list[str] = []
    if not diagnosis.findings and not diagnosis.actions:
        out.append(style.good("nothing to fix: every dependency resolves"))
    for cause in diagnosis.causes:
        out += _cause_lines(cause, style)
    rows = plan_rows(diagnosis)
    if rows:
        out.append("")
        out.append("proposed repairs, safest first (* = what --apply does):")
    for action, sonames, chosen in rows:
        grade = action.grade or "hint"
        label = style.paint(f"[{grade}]", _GRADE_COLORS.get(grade, "0"))
        ask = " (applied only with --accept risky)" if grade == "risky" and not chosen else ""
        serves = f" (for {', '.join(sonames)})" if len(sonames) > 1 else ""
        title = (f"add {action.folder} to the search path" + (" (first)" if action.position == "front" else "")
                 if action.kind == "search-path" else action.title)
        out.append(f" {'*' if chosen else ' '} {label} {action.kind}: {title}{serves}{ask}")
        if action.link and action.target:
            out.append(f"        {action.link} -> {action.target}")
        out.extend(f"        {line}" for line in action.evidence[:6])
    if diagnosis.next_step:
        out.append(f"next step: {diagnosis.next_step}")
    return out


def render_plan(report: ScanReport, stream: TextIO = sys.stdout, outcome=None,  # noqa: ANN001
                after: Optional[ScanReport] = None, show_plan: bool = True, activation: Optional[str] = None) -> None:
    style = Style(stream)
    diagnosis = _diagnosis(report)
    out: list[str] = _unrepaired_lines(diagnosis, style) if show_plan else []
    if show_plan:
        out.extend(_plan_lines(diagnosis, style))
    if outcome is not None:
        out.append("")
        out.append(f"applied (run {outcome.run_id}; `libdoctor undo {outcome.run_id}` reverts it):"
                   if outcome.run_id else "applied: nothing new")
        out.extend(f"  created {c}" for c in outcome.created)
        out.extend(f"  already present {c}" for c in dict.fromkeys(outcome.kept) if c not in outcome.created)
        out.extend(f"  {style.error('refused')} {r}" for r in outcome.refused)
        if activation:
            out.append(f"  {activation}")
    if after is not None:
        before_n = sum(p.is_error for p in diagnosis.problems)
        later = _diagnosis(after)
        after_n = sum(p.is_error for p in later.problems)
        line = f"before: {plural(before_n, 'problem')}; after: {after_n}; now {later.verdict}"
        out.append(style.good(line) if later.healthy else style.error(line))
    write_lines(stream, out)

# -- the summary for a bug ticket (``libdoctor report``) ------------------------------------------
# ``collect_env``'s and ``flutter doctor``'s: rendered from ``scan --json`` documents (never a second diagnosis)
# and the machine's facts (:mod:`.gpu.installs`); Markdown of at most MAX_LINES lines, or JSON (schema ``report``);
# ``--redact`` replaces the home folder and the user's name wherever they appear.

MAX_LINES = 40
LOADS_SHOWN = 4  # library families shown per framework (the rest counted)


def machine_facts(first_scan: Optional[dict[str, Any]], os_name: Optional[str],
                  cuda_installs: list[dict[str, Any]]) -> dict[str, Any]:
    """OS and kernel, glibc, driver and GPUs (as the scan found them) and the CUDA trees (``gpu.installs``)."""
    env = (first_scan or {}).get("environment", {})
    driver = env.get("driver") or {}
    return {"os": os_name, "kernel": platform.release(), "glibc": (env.get("loader") or {}).get("glibc_version"),
            "driver": {"present": bool(driver.get("present")), "version": driver.get("version"),
                       "gpus": list(driver.get("gpus") or [])},
            "cuda_installs": cuda_installs}


FAMILY_ORDER = ("cudart", "cudnn", "cublas")  # after the libraries a problem names, the ones tickets ask about


def _loads(framework: dict[str, Any], implicated: set[str]) -> list[dict[str, Any]]:
    """The copy the framework's own loading sequence reaches for each library it expects (None: not found): those
    a problem of the scan names first, then the CUDA runtime, cuDNN and cuBLAS, then the rest in the scan's order."""
    loads = [{"soname": e["soname"], "family": e.get("family"), "path": e.get("path") if e.get("found") else None}
             for e in (framework.get("libraries") or {}).get("expected", [])]
    listed = {load["soname"] for load in loads}
    loads += [{"soname": c["soname"], "family": c["soname"].split(".so")[0].removeprefix("lib"), "path": c.get("path")}
              for c in framework.get("cuda_libraries", []) if c["soname"] not in listed]  # linked or preloaded

    def rank(load: dict[str, Any]) -> tuple[bool, int]:
        family = load["family"] or ""
        return load["soname"] not in implicated, FAMILY_ORDER.index(family) if family in FAMILY_ORDER else 9

    return sorted(loads, key=rank)


def _environment(doc: dict[str, Any]) -> dict[str, Any]:
    python_env = (doc.get("environment") or {}).get("python_env") or {}
    implicated = {p["soname"] for p in doc.get("problems", []) if p.get("soname")}
    return {
        "prefix": python_env.get("prefix"),
        "verdict": doc["verdict"],
        "healthy": doc["healthy"],
        "frameworks": [{"name": f["name"], "version": f["version"], "python": f.get("python"),
                        "built_for": {"cuda": f.get("cuda"), "cudnn": f.get("cudnn")},
                        "gpu_usable": f.get("gpu_usable"), "loads": _loads(f, implicated)}
                       for f in doc.get("frameworks", [])],
        "causes": [{"severity": c["severity"], "title": c["title"], "fix": c.get("fix")}
                   for c in doc.get("causes", [])],
        "next_step": doc.get("next_step"),
    }


def ticket(scan_docs: list[dict[str, Any]], os_name: Optional[str] = None,
           cuda_installs: tuple[dict[str, Any], ...] = ()) -> dict[str, Any]:
    """The report's document (schema ``report``) from one ``scan --json`` document per environment, with the
    machine's OS name and CUDA trees (path, version) as :mod:`.gpu.installs` reads them."""
    environments = [_environment(d) for d in scan_docs]
    bad = [e for e in environments if not e["healthy"]]
    if len(environments) == 1:
        verdict = environments[0]["verdict"]
    elif bad:
        verdict = f"not healthy: {len(bad)} of {len(environments)} environments"
    else:
        verdict = f"healthy: {len(environments)} environments"
    return {"schema_version": 1, "libdoctor_version": __version__, "verdict": verdict, "healthy": not bad,
            "machine": machine_facts(scan_docs[0] if scan_docs else None, os_name, list(cuda_installs)),
            "environments": environments}


# -- redaction ---------------------------------------------------------------------------------

def redactor(home: Optional[str] = None, users: Optional[list[str]] = None) -> Callable[[str], str]:
    """A function that replaces the home folder with ``~``, other users' homes with ``/home/<user>``, and each
    user name standing as a path component with ``<user>``, in a string (words of the text are left alone)."""
    home = home if home is not None else os.path.expanduser("~")
    homes = sorted({h.rstrip("/") for h in (home, os.path.realpath(home)) if h and h.rstrip("/")}, key=len,
                   reverse=True)
    names = set(users if users is not None else _user_names())
    names |= {os.path.basename(h) for h in homes}
    names = {n for n in names if n and len(n) > 1}
    home_pattern = re.compile("|".join(re.escape(h) + r"(?=/|$|\W)" for h in homes)) if homes else None
    name_pattern = (re.compile(r"(?<=/)(" + "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))
                               + r")(?=/|$|[\s`'\",:;)])") if names else None)
    other_homes = re.compile(r"/(home|Users)/[^/\s]+")

    def redact(text: str) -> str:
        if home_pattern is not None:
            text = home_pattern.sub("~", text)
        text = other_homes.sub(r"/\1/<user>", text)
        return name_pattern.sub("<user>", text) if name_pattern is not None else text

    return redact


def _user_names() -> list[str]:
    names = [os.environ.get("USER", ""), os.environ.get("LOGNAME", "")]
    try:
        names.append(getpass.getuser())
    except (KeyError, OSError):
        pass
    return names


def redacted(value: Any, redact: Callable[[str], str]) -> Any:
    """``value`` (a JSON document) with every string passed through ``redact``."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, list):
        return [redacted(v, redact) for v in value]
    if isinstance(value, dict):
        return {k: redacted(v, redact) for k, v in value.items()}
    return value


# -- Markdown ----------------------------------------------------------------------------------

def _mark(healthy: bool, warnings: bool = False) -> str:
    return "[✓]" if healthy and not warnings else "[!]" if healthy else "[✗]"


def _driver_line(driver: dict[str, Any]) -> str:
    if not driver["present"]:
        return "no NVIDIA driver" + ("" if driver["gpus"] else ", no NVIDIA GPU")
    gpus = f", {len(driver['gpus'])} GPU{'s' if len(driver['gpus']) != 1 else ''}" if driver["gpus"] else ", no GPU"
    return f"NVIDIA driver {driver['version'] or '(version unknown)'}{gpus}"


def _framework_lines(framework: dict[str, Any], compact: bool) -> list[str]:
    built = framework["built_for"]
    parts = [f"CUDA {built['cuda']}" if built["cuda"] else "no CUDA (a CPU build)"]
    if built["cudnn"]:
        parts.append(f"cuDNN {built['cudnn']}")
    usable = {True: "yes", False: "no", None: "not judged"}[framework["gpu_usable"]]
    out = [f"- **{framework['name']} {framework['version']}**: built for {' and '.join(parts)}; GPU usable: {usable}"]
    families: dict[str, dict[str, Any]] = {}
    for load in framework["loads"]:
        families.setdefault(load["family"] or load["soname"], load)
    shown = list(families.values())
    if compact:
        found = sum(1 for load in shown if load["path"])
        out.append(f"  - loads {found} of {len(shown)} library families it expects (`libdoctor scan -v` lists them)")
        return out
    for load in shown[:LOADS_SHOWN]:
        out.append(f"  - `{load['soname']}`: {('`' + load['path'] + '`') if load['path'] else 'not found'}")
    if len(shown) > LOADS_SHOWN:
        out.append(f"  - and {len(shown) - LOADS_SHOWN} more (`libdoctor scan -v` lists them)")
    return out


def _environment_lines(env: dict[str, Any], compact: bool, alone: bool) -> list[str]:
    warnings = any(c["severity"] != "error" for c in env["causes"])
    python = next((f["python"] for f in env["frameworks"] if f.get("python")), None)
    where = f"`{env['prefix']}`" if env["prefix"] else "this machine"
    out = ["", f"### {_mark(env['healthy'], warnings)} {where}" + (f" (Python {python})" if python else "")]
    if not alone:
        out.append(env["verdict"])
    for framework in env["frameworks"]:
        out += _framework_lines(framework, compact)
    for cause in env["causes"]:
        if compact and cause["severity"] != "error":
            continue
        out.append(f"- {_mark(cause['severity'] != 'error', True)} {cause['title']}")
        if cause["fix"] and cause["fix"] != env["next_step"]:
            out.append(f"  - fix: {cause['fix']}")
    if env["next_step"]:
        out.append(f"- **next step**: {_as_code(env['next_step'])}")
    return out


def _as_code(step: str) -> str:
    """A command in backticks; a sentence (which may hold commands in backticks itself) as it is."""
    return step if "`" in step or ": " in step else f"`{step}`"


def markdown(document: dict[str, Any]) -> str:
    """The report as Markdown, at most :data:`MAX_LINES` lines: library lists shortened first, then warnings."""
    machine = document["machine"]
    installs = ", ".join(f"`{c['path']}`" + (f" ({c['version']})" if c["version"] else "")
                         for c in machine["cuda_installs"]) or "none under /usr/local"
    head = [f"## libdoctor report: {document['verdict']}", "",
            f"- **OS**: {machine['os'] or 'unknown'}, kernel {machine['kernel']}, "
            f"glibc {machine['glibc'] or 'unknown'}",
            f"- **GPU and driver**: {_driver_line(machine['driver'])}",
            f"- **CUDA installs**: {installs}",
            f"- **libdoctor**: {document['libdoctor_version']}"]
    alone = len(document["environments"]) == 1  # its verdict is the report's title
    for compact in (False, True):
        lines = head + [line for env in document["environments"] for line in _environment_lines(env, compact, alone)]
        if len(lines) <= MAX_LINES:
            break
    if len(lines) > MAX_LINES:
        lines = lines[: MAX_LINES - 1] + ["- ... (more in `libdoctor report --json`)"]
    return "\n".join(escaped(line) for line in lines) + "\n"  # names from files reach a terminal
