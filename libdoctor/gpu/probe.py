"""``scan --probe``: run the framework's own device query in the environment's python and compare.

It runs framework code, so it is opt-in and time-limited.  Each framework plug-in supplies the
query (``FrameworkPlugin.probe``).  The child captures what the framework logs (Python logging,
warnings, and everything written to file descriptor 2, where TensorFlow, XLA and ONNX Runtime log
from C++), whether a GPU is usable and every file mapped into it (``/proc/self/maps``).  libdoctor
compares the CUDA libraries really loaded with its static prediction; a run that logged a load
failure or a fall-back to the CPU never "agrees".
"""
from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from typing import Mapping, Optional

from ..targets import CUDA_NAME
from .catalog import decode_version, record
from .cudatable import family_of, stem_of
from .frameworkcheck import FrameworkReport
from .frameworks import plugin_of
from .versions import real_version, rule_for

PROBE_TIMEOUT = 180
STDERR_LIMIT = 1 << 16
CHILD = r"""
import json, logging, os, sys, tempfile, warnings
out = {"imported": False, "gpu": None, "error": None, "version": None, "logs": []}
def log(message):
    out["logs"].append(str(message)[:2000])
class Capture(logging.Handler):
    def emit(self, record):
        log(self.format(record))
logging.getLogger().addHandler(Capture(logging.WARNING))
warnings.showwarning = lambda message, *args, **kwargs: log(message)
saved = os.dup(2)
captured = tempfile.TemporaryFile()
os.dup2(captured.fileno(), 2)
try:
    exec(compile(sys.argv[1], "<libdoctor probe>", "exec"), {"out": out, "log": log})
    out["imported"] = True
except BaseException as exc:
    out["error"] = type(exc).__name__ + ": " + str(exc)[:500]
    out["imported"] = out["version"] is not None
sys.stderr.flush()
os.dup2(saved, 2)
captured.seek(0)
out["stderr"] = captured.read().decode("utf-8", "replace")[-%d:]
import ctypes
out["versions"] = {}
for path, symbol, style in json.loads(sys.argv[2]):
    try:
        function = getattr(ctypes.CDLL(path), symbol)
        if style == "ret":
            function.restype = ctypes.c_size_t
            values = [function()]
        elif style == "out":
            value = ctypes.c_int()
            function(ctypes.byref(value))
            values = [value.value]
        elif style == "two":
            major, minor = ctypes.c_int(), ctypes.c_int()
            function(ctypes.byref(major), ctypes.byref(minor))
            values = [major.value, minor.value]
        else:
            value, values = ctypes.c_int(), []
            for kind in range(3):
                function(kind, ctypes.byref(value))
                values.append(value.value)
        out["versions"][path] = values
    except Exception as exc:
        out["versions"][path] = str(exc)[:200]
maps = set()
with open("/proc/self/maps") as handle:
    for line in handle:
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            maps.add(parts[5].strip())
out["maps"] = sorted(maps)
sys.stdout.write("\n" + json.dumps(out) + "\n")
""" % STDERR_LIMIT
# What frameworks log when a library does not load or they give up on the GPU (seen in TF, JAX, ONNX
# Runtime, CuPy and PyTorch runs here).
LOAD_FAILURE = re.compile(r"cannot open shared object file|Could not load dynamic library|Unable to load|"
                          r"Failed to load library|could not load|Failed to create CUDAExecutionProvider|"
                          r"Falling back to cpu|Unable to initialize backend|Error loading CUDA libraries|"
                          r"Cannot dlopen some GPU libraries", re.I)


@dataclass(frozen=True)
class ProbeResult:
    framework: str
    imported: bool
    gpu: Optional[bool]
    error: Optional[str]
    loaded: tuple[str, ...]  # CUDA libraries mapped in the child (real paths)
    predicted: tuple[str, ...]  # CUDA libraries libdoctor predicted (real paths)
    findings: tuple[str, ...]  # where the prediction and the run differ
    logged: tuple[str, ...] = ()  # what the framework logged about libraries it could not load
    versions: tuple[tuple[str, str], ...] = ()  # (library, the version its own version function returned)

    @property
    def agrees(self) -> bool:
        return not self.findings and not self.logged


def _cuda_paths(paths: list[str]) -> set[str]:
    return {os.path.realpath(p) for p in paths if CUDA_NAME.match(os.path.basename(p))}


def load_failures(data: dict) -> tuple[str, ...]:
    """The lines the framework logged about a library it could not load or a fall-back to the CPU."""
    lines = [line.strip() for entry in data.get("logs", []) for line in str(entry).splitlines()]
    lines += [line.strip() for line in str(data.get("stderr", "")).splitlines()]
    if data.get("error"):
        lines.append(str(data["error"]))
    hits = [re.sub(r"\x1b\[[0-9;]*m", "", line)[:300] for line in lines if LOAD_FAILURE.search(line)]
    return tuple(dict.fromkeys(hits))[:8]


def run_probe(python: str, framework: FrameworkReport, timeout: int = PROBE_TIMEOUT,
              environ: Optional[Mapping[str, str]] = None) -> ProbeResult:
    """The framework's own device query in ``python``, started in ``environ`` (the environment that was judged;
    default: this process's)."""
    info = framework.info
    predicted = _cuda_paths([p for _n, p, _v in framework.cuda_sources])
    lazily = _cuda_paths([c.path for c in framework.checks if c.path and c.lib.role == "lazy"])
    plugin = plugin_of(info.kind)
    if plugin is None:
        return ProbeResult(info.label, False, None, f"no probe for {info.name}", (), tuple(sorted(predicted)),
                           ("no probe for this framework: nothing compared",))
    try:
        asked = version_calls(framework)
        done = subprocess.run([python, "-c", CHILD, plugin.probe, json.dumps(asked)], capture_output=True, text=True,
                              timeout=timeout,
                              env={**(os.environ if environ is None else environ), "TF_CPP_MIN_LOG_LEVEL": "0"},
                              stdin=subprocess.DEVNULL)
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return ProbeResult(info.label, False, None, f"timed out after {timeout} s", (), tuple(sorted(predicted)),
                           ("the probe timed out: nothing compared",))
    except (OSError, ValueError, IndexError) as exc:
        return ProbeResult(info.label, False, None, f"probe failed: {exc}", (), tuple(sorted(predicted)),
                           ("the probe failed: nothing compared",))
    loaded = _cuda_paths(data.get("maps", []))
    findings = []
    for path in sorted(loaded - predicted):
        findings.append(f"loaded but not predicted: {path} (the prediction is incomplete)")
    for path in sorted(predicted - loaded - lazily):
        findings.append(f"predicted but not loaded at import: {path}")
    if data.get("gpu") is not None and framework.gpu_usable is not None and data["gpu"] != framework.gpu_usable:
        findings.append(f"the framework says GPU usable: {data['gpu']}; libdoctor predicted {framework.gpu_usable}")
    versions, version_findings = compare_versions(framework, asked, data.get("versions") or {})
    return ProbeResult(info.label, bool(data.get("imported")), data.get("gpu"), data.get("error"),
                       tuple(sorted(loaded)), tuple(sorted(predicted)), tuple(findings + version_findings),
                       load_failures(data), versions)


def version_calls(framework: FrameworkReport) -> list[tuple[str, str, str]]:
    """(path, symbol, style) of each library the framework's own version rules judge, as its load reaches it."""
    calls = []
    for soname, path, _via in framework.cuda_sources:
        family = family_of(soname)
        entry = record(family)
        if entry is None or entry.version is None or rule_for(framework.info.version_rules, family) is None:
            continue
        if stem_of(soname) != f"lib{family}.so":
            continue
        calls.append((os.path.realpath(path), entry.version.symbol, entry.version.style))
    return calls


def compare_versions(framework: FrameworkReport, asked: list[tuple[str, str, str]], answers: dict
                     ) -> tuple[tuple[tuple[str, str], ...], list[str]]:
    """What each library's own version function said, against the version libdoctor read from the files and the
    framework's rule: the probe confirms (or refutes) a too-old verdict."""
    versions, findings = [], []
    for path, _symbol, style in asked:
        family = family_of(os.path.basename(path)) or ""
        answer = answers.get(path)
        if not isinstance(answer, list) or not answer:
            continue  # a library without that function (a stand-in) says nothing about what loads
        said = decode_version(family, style, tuple(int(v) for v in answer))
        versions.append((path, ".".join(map(str, said))))
        read = real_version(path, family)
        if read is not None and read.version[:2] != said[:2]:
            findings.append(f"{path}: libdoctor read version {read.text} ({read.source}); the library says "
                            f"{'.'.join(map(str, said))}")
        rule = rule_for(framework.info.version_rules, family)
        verdict = rule.compared(said) if rule else None
        if verdict and rule:
            findings.append(f"{os.path.basename(path)} says {'.'.join(map(str, said))}: {verdict} ({rule.source})")
    return tuple(versions), findings
