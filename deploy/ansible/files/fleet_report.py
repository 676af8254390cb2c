#!/usr/bin/env python3
"""Aggregate the `libdoctor scan --json` documents of a fleet: fleet.json and fleet.txt.

    python3 fleet_report.py REPORT_DIR     # reads REPORT_DIR/hosts/HOST.json (a list of scan documents)

Reads only fields of libdoctor's published schema (`libdoctor schema scan`): verdict, healthy,
environment.python_env.prefix, frameworks[].name/version/gpu_usable/because, causes[].error/title/fix,
next_step.  Standard library only: it runs with the controller's Ansible Python.
"""
from __future__ import annotations

import json
import os
import sys


def reports_of(document: dict) -> list[dict]:
    """A scan document is one report, or {"environments": [report, ...]} for a default scan."""
    return list(document.get("environments", [])) if "environments" in document else [document]


def rows_of(host: str, documents: list[dict]) -> list[dict]:
    rows = []
    for document in documents:
        for report in reports_of(document):
            env = ((report.get("environment") or {}).get("python_env") or {}).get("prefix") or "-"
            problems = [c["title"] for c in report.get("causes", []) if c.get("error")]
            frameworks = report.get("frameworks") or [{"name": "-", "version": "", "gpu_usable": None}]
            for framework in frameworks:
                rows.append({"host": host, "env": env, "framework": framework.get("name", "-"),
                             "version": framework.get("version", ""), "verdict": report.get("verdict", "?"),
                             "healthy": report.get("healthy"), "gpu_usable": framework.get("gpu_usable"),
                             "problems": problems, "next_step": report.get("next_step")})
    return rows


def main(folder: str) -> int:
    hosts_dir = os.path.join(folder, "hosts")
    rows: list[dict] = []
    for name in sorted(os.listdir(hosts_dir)):
        if name.endswith(".json"):
            with open(os.path.join(hosts_dir, name), encoding="utf-8") as handle:
                rows += rows_of(name[: -len(".json")], json.load(handle))
    causes: dict[str, set[str]] = {}
    for row in rows:
        for title in row["problems"]:
            causes.setdefault(title, set()).add(row["host"])
    summary = sorted(({"cause": c, "hosts": len(h)} for c, h in causes.items()),
                     key=lambda s: (-s["hosts"], s["cause"]))
    with open(os.path.join(folder, "fleet.json"), "w", encoding="utf-8") as handle:
        json.dump({"schema_version": 1, "rows": rows, "causes": summary}, handle, indent=1)
    usable = {True: "yes", False: "no", None: "?"}
    lines = [f"{'host':20} {'environment':28} {'framework':24} {'GPU':4} verdict"]
    for row in rows:
        label = f"{row['framework']} {row['version']}".strip()
        lines.append(f"{row['host']:20} {row['env']:28} {label:24} {usable[row['gpu_usable']]:4} {row['verdict']}")
        lines += [f"{'':20}   - {title}" for title in row["problems"]]
        if row["next_step"]:
            lines.append(f"{'':20}   next step: {row['next_step']}")
    lines.append("")
    lines.append("root causes, by the number of hosts they hit:")
    lines += [f"  {s['hosts']:3} host{'s' if s['hosts'] != 1 else ' '}  {s['cause']}" for s in summary] or ["  none"]
    with open(os.path.join(folder, "fleet.txt"), "w", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "fleet"))
