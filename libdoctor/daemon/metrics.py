"""A Prometheus textfile for node_exporter's textfile collector: prometheus_client's text format, written
through libdoctor's one atomic writer (a temporary file renamed over the old one, so the collector never
reads half a file; anything but a regular file at the path is refused, never replaced).
"""
from __future__ import annotations

import time
from typing import Iterable


def write_metrics(path: str, units: Iterable[tuple[str, object]], processes: Iterable[object] = ()) -> None:
    """``units``: (environment or target label, ScanReport) pairs; ``processes``: ``ps`` reports.

    Names and labels after Prometheus' conventions: the framework's name and version are separate
    labels, and optional libraries (cupti, nccl) are never counted as missing.
    """
    from prometheus_client import CollectorRegistry, Gauge, generate_latest

    from ..files import write_atomic

    from ..gpu.frameworks import OPTIONAL

    registry = CollectorRegistry()

    def gauge(name: str, text: str, labels: list[str]) -> Gauge:
        return Gauge(name, text, labels, registry=registry)

    healthy = gauge("libdoctor_healthy", "1 when every dependency resolves", ["env"])
    problems = gauge("libdoctor_problems", "problems found (errors; warnings are not counted)", ["env"])
    impostors = gauge("libdoctor_impostor_libraries", "names served by a file that is another library (another "
                      "major, CUDA release or cuDNN)", ["env"])
    framework_labels = ["env", "framework", "framework_version"]
    missing = gauge("libdoctor_missing_libraries", "libraries a framework needs that do not resolve (optional "
                    "ones not counted)", framework_labels)
    usable = gauge("libdoctor_gpu_usable", "1 when the framework can use the GPU", framework_labels)
    last = gauge("libdoctor_last_scan_timestamp_seconds", "when the last verification finished", ["env"])
    now = time.time()
    for label, report in units:
        healthy.labels(label).set(1 if report.healthy else 0)
        problems.labels(label).set(sum(p.is_error for p in report.problems))
        impostors.labels(label).set(sum(p.kind == "impostor" and p.is_error for p in report.problems))
        last.labels(label).set(now)
        for framework in report.frameworks:
            info = framework.info
            needed = [c.lib.soname for c in framework.checks
                      if not c.found and c.lib.role != OPTIONAL and c.lib.family != "cuda driver"]
            count = len(set(needed) | set(framework.closure_missing))
            missing.labels(label, info.name, info.version).set(count)
            if info.cuda_build:  # a CPU-only build is not "unusable": it has no GPU to use (no false alert)
                usable.labels(label, info.name, info.version).set(1 if framework.gpu_usable else 0)
    processes = list(processes)
    for name, text, count in (
            ("libdoctor_processes_with_impostors", "framework processes with an impostor library mapped",
             sum(bool(getattr(p, "impostors", ())) for p in processes)),
            ("libdoctor_processes_on_cpu", "framework processes with no CUDA runtime mapped",
             sum(bool(getattr(p, "on_cpu", False)) for p in processes)),
            ("libdoctor_processes_stale", "processes mapping a library replaced or deleted since",
             sum(bool(getattr(p, "stale", ())) for p in processes))):
        Gauge(name, text, registry=registry).set(count)
    write_atomic(path, generate_latest(registry), 0o644)  # whatever the umask: node_exporter reads it
