"""The systemd units, shipped as package data, installed with the real executable path."""
from __future__ import annotations

import os
import shutil
import sys
from typing import Optional

from ..errors import UsageError
from ..files import make_folders, write_atomic

UNITS = ("libdoctor-scan.service", "libdoctor-scan.timer", "libdoctor-watch.service")
PLACEHOLDER = "/usr/local/bin/libdoctor"
SYSTEMD_FOLDERS = ("/etc/systemd/system", "/usr/lib/systemd/system", "/lib/systemd/system", "/run/systemd/system")
CONFIG = "etc/libdoctor/config.toml"  # below the root the units are installed into; what they name


def unit_text(name: str) -> str:
    from importlib import resources

    return resources.files("libdoctor.daemon").joinpath(f"data/systemd/{name}").read_text(encoding="utf-8")


def default_executable() -> str:
    found = shutil.which("libdoctor")
    if found:
        return os.path.realpath(found) if os.path.islink(found) else found
    return os.path.join(os.path.dirname(sys.executable), "libdoctor")


def config_path(dest: str) -> Optional[str]:
    """The configuration file the units installed into ``dest`` read (None: ``dest`` is no systemd folder)."""
    dest = os.path.abspath(dest)
    root = next((dest[: -len(folder)] for folder in SYSTEMD_FOLDERS if dest.endswith(folder)), None)
    return None if root is None else os.path.join(root or "/", CONFIG)


def _with_writable(text: str, folders: list[str]) -> str:
    """The units' ``ReadWritePaths`` line with ``folders`` added ("-": systemd skips one that does not exist)."""
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("ReadWritePaths=") and folders:
            present = line.split("=", 1)[1].split()
            extra = [f"-{f}" for f in folders if f"-{f}" not in present and f not in present]
            line = line.rstrip("\n") + "".join(f" {e}" for e in extra) + "\n"
        lines.append(line)
    return "".join(lines)


def install_units(dest: str, executable: Optional[str] = None, writable: tuple[str, ...] = ()
                  ) -> list[tuple[str, bool]]:
    """Write the units into ``dest``: (path, changed) each; a unit already as it should be is left untouched, so
    a configuration tool (Ansible) sees no change on a second run.  ``writable``: folders the units may write
    besides their own (the configured metrics folder)."""
    executable = os.path.abspath(executable or default_executable())
    if not os.path.exists(executable):
        raise UsageError(f"{executable} does not exist: give --executable")
    make_folders(dest, 0o755)
    written = []
    for name in UNITS:
        path = os.path.join(dest, name)
        text = _with_writable(unit_text(name).replace(PLACEHOLDER, executable), list(writable))
        try:
            with open(path, encoding="utf-8") as handle:
                if handle.read() == text and (os.stat(path).st_mode & 0o777) == 0o644:
                    written.append((path, False))
                    continue
        except (OSError, UnicodeDecodeError):
            pass
        write_atomic(path, text.encode("utf-8"), 0o644)  # whatever the umask: read by systemd, written by root
        written.append((path, True))
    return written


def config_text(environments: list[str]) -> str:
    listed = "".join(f'    "{e}",\n' for e in environments)
    found = (f"environments = [\n{listed}]\n" if environments else
             '# environments = ["/opt/conda/envs/bert"]  # none with a GPU framework was found when this was written\n')
    return ("# libdoctor's configuration, read by libdoctor-watch.service and libdoctor-scan.service.\n"
            "# Written by `libdoctor systemd install` with the Python environments it found that have a GPU\n"
            "# framework; edit freely, libdoctor never overwrites this file.  Keys: docs/watch.rst,\n"
            "# \"Configuration\".\n"
            "\n# The Python environments (prefixes) whose frameworks to keep healthy:\n" + found +
            "\n# Files or folders to keep healthy as well:\n# targets = [\"/opt/app/lib\"]\n"
            "\n# Repair what is graded safe by itself (off | safe):\nheal = \"off\"\n"
            "\n# A Prometheus textfile for node_exporter's textfile collector:\n"
            "# metrics_file = \"/var/lib/node_exporter/textfile_collector/libdoctor.prom\"\n")


def install_config(dest: str, environments: list[str]) -> str:
    """Write ``/etc/libdoctor/config.toml`` (below the root ``dest`` is in) unless one exists; a line saying what
    happened."""
    path = config_path(dest)
    if path is None:
        return (f"no configuration written: {os.path.abspath(dest)} is not a systemd unit folder "
                f"(the units read /{CONFIG})")
    if os.path.exists(path):
        return f"kept {path} (it exists)"
    make_folders(os.path.dirname(path), 0o755)
    try:
        write_atomic(path, config_text(environments).encode("utf-8"), 0o644, replace=False)  # never over one
    except FileExistsError:
        return f"kept {path} (it exists)"
    return f"wrote {path} ({len(environments)} environment{'s' if len(environments) != 1 else ''} listed)"
