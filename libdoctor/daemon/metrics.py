"""A Prometheus textfile for node_exporter's textfile collector, written by prometheus_client.

``write_to_textfile`` writes a temporary file and renames it over the old one, so the collector
never reads half a file.
"""
from __future__ import annotations

import time
from typing import Iterable


def write_metrics(path: str, units: Iterable[tuple[str, object]]) -> None:
    """``units``: (environment or target label, ScanReport) pairs."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()
    healthy = Gauge("libdoctor_healthy", "1 when every dependency resolves", ["env"], registry=registry)
    problems = Gauge("libdoctor_problems", "problems found (errors; warnings are not counted)", ["env"],
                     registry=registry)
    impostors = Gauge("libdoctor_impostor_libraries", "names served by a file that is another library (another "
                      "major, CUDA release or cuDNN)", ["env"], registry=registry)
    missing = Gauge("libdoctor_missing_libraries", "libraries a framework needs that do not resolve",
                    ["env", "framework"], registry=registry)
    usable = Gauge("libdoctor_gpu_usable", "1 when the framework can use the GPU", ["env", "framework"],
                   registry=registry)
    last = Gauge("libdoctor_last_scan_timestamp_seconds", "when the last verification finished", ["env"],
                 registry=registry)
    now = time.time()
    for label, report in units:
        healthy.labels(label).set(1 if report.healthy else 0)
        problems.labels(label).set(sum(p.is_error for p in report.problems))
        impostors.labels(label).set(sum(p.kind == "impostor" and p.is_error for p in report.problems))
        last.labels(label).set(now)
        for framework in report.frameworks:
            missing.labels(label, framework.info.label).set(len(framework.missing))
            usable.labels(label, framework.info.label).set(1 if framework.gpu_usable else 0)
    write_to_textfile(path, registry)
