"""The one home of install commands and of the ``libdoctor fix`` command line a report points to.

A missing library's command is the package that provides exactly that soname for the framework that
wants it: the framework's own extra, else the pin in its own requirements, else the CUDA table's
package for the framework's CUDA major; every command aimed at the environment examined.
"""
from __future__ import annotations

import os
import re
import shlex
from typing import Optional

from ..gpu.cudatable import DRIVER_SONAMES, install_hint
from ..gpu.frameworkcheck import cuda_major, fitting_packages, installed_unreached
from .base import Finding
from .facts import ScanReport

DRIVER_STEP = "install the NVIDIA driver that matches the kernel module (see the distribution's guide)"
NO_GPU_STEP = ("this machine has no NVIDIA GPU: run on a GPU host, or judge the libraries alone with "
               "`libdoctor scan --libraries-only`")
NODES_STEP = ("give the process the GPU: start the container with it (`docker run --gpus all`, the NVIDIA "
              "container toolkit), or create the nodes (`nvidia-modprobe`, as root)")
HINTED_KINDS = ("missing", "missing-dlopen", "driver", "impostor", "too-old", "version")


def install_hints(finding: Finding, report: ScanReport) -> list[str]:
    """What to install for ``finding``'s library, aimed at the environment examined; nothing for a library that
    is installed where its framework can be told to look (a search-path change repairs that)."""
    soname = finding.soname
    if finding.kind not in HINTED_KINDS or not soname:
        return []
    if soname in DRIVER_SONAMES:
        return [driver_step(report)]
    if installed_unreached(soname, report.frameworks):
        return []
    hints = fitting_packages(soname, report.frameworks)
    fallback = install_hint(soname, _cuda_major(finding, report))
    return [aimed(h, report) for h in (hints or ([fallback] if fallback else []))]


def driver_step(report: ScanReport) -> str:
    """What to do when the driver's own libraries are missing: install the driver, unless there is no NVIDIA GPU
    to drive."""
    driver = report.driver
    return NO_GPU_STEP if driver is not None and not driver.present and driver.no_gpu else DRIVER_STEP


def _cuda_major(finding: Finding, report: ScanReport) -> Optional[int]:
    """The CUDA major of the framework whose object needs the library (one soname can serve several)."""
    group = finding.group or report.group_of(finding.target)
    framework = report.framework_of(report.framework_label(group) or "")
    return cuda_major(framework.info) if framework is not None else None


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


def one_command(hints: list[str]) -> Optional[str]:
    """Several install hints as one pasteable command: a framework's own extra wins; installs with the same
    installer aimed at the same env are merged."""
    if not hints:
        return None
    extra = next((h for h in hints if re.search(r"\[(and-cuda|cuda\w*|ctk)[],]", h)), None)
    if extra:
        return extra
    split = [_install_parts(h) for h in hints if " install " in h]
    if len(split) == len(hints) > 1 and len({head for head, _words in split}) == 1:
        return f"{split[0][0]} {' '.join(dict.fromkeys(w for _head, words in split for w in words))}"
    return hints[0]


def _install_parts(hint: str) -> tuple[str, list[str]]:
    """``conda install -p ENV a b`` -> (``conda install -p ENV``, [a, b])."""
    head, _, rest = hint.partition(" install ")
    words = rest.split()
    if words[:1] == ["-p"] and len(words) > 1:
        return f"{head} install -p {words[1]}", words[2:]
    return f"{head} install", words


def fix_command(report: ScanReport, apply: bool = True) -> str:
    """``libdoctor fix --apply`` with the scan's own question: the same targets, environment and folders."""
    inputs = report.inputs
    words = ["libdoctor", "fix"] + (["--apply"] if apply else [])
    words += ["--env", inputs.prefix] if inputs.prefix else ["--python", inputs.python] if inputs.python else []
    words += ["--dlopen-from", inputs.caller] if inputs.caller else []
    if not inputs.dlopen_strings:
        words.append("--no-dlopen-strings")
    if not inputs.activate:
        words.append("--no-activate")
    if inputs.in_place:
        words.append("--in-place")
    words += [w for grade in inputs.accept for w in ("--accept", grade)]
    if inputs.force:
        words.append("--force")
    if inputs.libraries_only:
        words.append("--libraries-only")
    for flag, rules in (("--rule", inputs.only), ("--skip-rule", inputs.skip)):
        for rule in rules:
            words += [flag, rule]
    for folder in inputs.look_in:
        words += ["--look-in", folder]
    return " ".join(shlex.quote(w) for w in words + list(inputs.paths))
