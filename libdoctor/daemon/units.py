"""The systemd units, shipped as package data, installed with the real executable path."""
from __future__ import annotations

import os
import shutil
import sys
from typing import Optional

from ..errors import UsageError

UNITS = ("libdoctor-scan.service", "libdoctor-scan.timer", "libdoctor-watch.service")
PLACEHOLDER = "/usr/local/bin/libdoctor"


def unit_text(name: str) -> str:
    from importlib import resources

    return resources.files("libdoctor.daemon").joinpath(f"data/systemd/{name}").read_text(encoding="utf-8")


def default_executable() -> str:
    found = shutil.which("libdoctor")
    if found:
        return os.path.realpath(found) if os.path.islink(found) else found
    return os.path.join(os.path.dirname(sys.executable), "libdoctor")


def install_units(dest: str, executable: Optional[str] = None) -> list[str]:
    executable = os.path.abspath(executable or default_executable())
    if not os.path.exists(executable):
        raise UsageError(f"{executable} does not exist: give --executable")
    os.makedirs(dest, exist_ok=True)
    written = []
    for name in UNITS:
        path = os.path.join(dest, name)
        text = unit_text(name).replace(PLACEHOLDER, executable)
        tmp = f"{path}.libdoctor-new"
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
        written.append(path)
    return written
