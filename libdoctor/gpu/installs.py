"""What is installed on the machine, read not run: the operating system and the CUDA toolkits.

Read below :func:`~.driver.sysroot` like the driver facts, so tests judge a machine of their own.
"""
from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from typing import Optional

from ..loader.plainfiles import read_text
from .driver import sysroot

CUDA_FOLDERS = "usr/local/cuda-*"  # the NVIDIA installers' and packages' versioned trees


def toolkit_version(root: str) -> Optional[str]:
    """A toolkit's CUDA version from ``include/cuda.h`` (``#define CUDA_VERSION 13000``), read not run."""
    match = re.search(r"#define\s+CUDA_VERSION\s+(\d+)", read_text(os.path.join(root, "include", "cuda.h")) or "")
    if not match:
        return None
    value = int(match.group(1))
    return f"{value // 1000}.{value % 1000 // 10}"


@dataclass(frozen=True)
class CudaInstall:
    """One CUDA tree: its folder and the version its ``cuda.h`` says (None: no headers, a runtime-only tree)."""

    path: str
    version: Optional[str]


def cuda_installs(root: Optional[str] = None) -> tuple[CudaInstall, ...]:
    """The versioned CUDA trees under /usr/local (``cuda`` itself is a link to one of them)."""
    base = sysroot(root)
    found = []
    for folder in sorted(glob.glob(os.path.join(base, CUDA_FOLDERS))):
        if os.path.isdir(folder) and not os.path.islink(folder):
            shown = "/" + os.path.relpath(folder, base) if base != "/" else folder
            found.append(CudaInstall(shown, toolkit_version(folder)))
    return tuple(found)


def os_name(root: Optional[str] = None) -> Optional[str]:
    """The distribution's PRETTY_NAME from ``/etc/os-release`` (None: not there)."""
    text = read_text(os.path.join(sysroot(root), "etc/os-release")) or ""
    match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', text, re.MULTILINE)
    return match.group(1) if match else None
