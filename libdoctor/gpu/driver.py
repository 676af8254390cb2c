"""The NVIDIA driver as the machine shows it, and whether it is new enough for a CUDA runtime.

Read without nvidia-smi and without loading libcuda (cuda-facts.md section 5), three machine facts:

* an NVIDIA GPU: a PCI device of vendor ``0x10de`` and class display/3D (``0x03xxxx``) in
  ``/sys/bus/pci/devices`` (None when the machine shows no PCI bus: a container, WSL);
* the driver: the loaded kernel module's version from ``/sys/module/nvidia/version`` or
  ``/proc/driver/nvidia/version``, against the user-space half behind ``libcuda.so.1``
  (``libcuda.so.<driver-version>``);
* the device nodes: ``/dev/nvidia*``, or on WSL ``/dev/dxg`` with the driver's libraries in
  ``/usr/lib/wsl/lib`` (regular files there, no kernel module: a working GPU host).

``LIBDOCTOR_SYSROOT`` moves ``/sys``, ``/proc``, ``/dev`` and ``/usr/lib/wsl`` (tests replay other
machines with it).  Minimum drivers come from ``data/cuda_min_driver.csv``.
"""
from __future__ import annotations

import csv
import glob
import io
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Optional

from ..loader.plainfiles import read_text

VersionTuple = tuple[int, ...]


def parse_version(text: str) -> Optional[VersionTuple]:
    match = re.search(r"(\d+(?:\.\d+)+|\d+)", text or "")
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


@dataclass(frozen=True)
class DriverInfo:
    kernel_module: Optional[str]  # the loaded module's version
    libcuda: Optional[str]  # path of libcuda.so.1 as the loader finds it
    libcuda_version: Optional[str]  # from the real file name
    libnvidia_ml: Optional[str]
    device_nodes: tuple[str, ...]
    gpus: Optional[tuple[str, ...]] = None  # PCI addresses of NVIDIA display/3D devices; None: no PCI bus to read
    wsl: bool = False  # /dev/dxg and /usr/lib/wsl/lib: WSL's GPU paravirtualization

    @property
    def no_gpu(self) -> bool:
        """The machine shows its PCI bus and no NVIDIA GPU on it (and is not WSL)."""
        return self.gpus == () and not self.wsl

    @property
    def version(self) -> Optional[str]:
        return self.kernel_module or self.libcuda_version

    @property
    def present(self) -> bool:
        return self.libcuda is not None

    @property
    def mismatch(self) -> bool:
        """The classic "Driver/library version mismatch": libcuda from another driver than the loaded module."""
        return bool(self.kernel_module and self.libcuda_version and self.kernel_module != self.libcuda_version)

    def summary(self) -> str:
        if not self.present:
            return "no NVIDIA GPU in this machine" if self.no_gpu else "no NVIDIA driver (libcuda.so.1 not found)"
        parts = [f"driver {self.version or 'of unknown version'}"]
        if self.mismatch:
            parts.append(f"(kernel module {self.kernel_module}, libcuda {self.libcuda_version}: mismatch)")
        if self.wsl:
            parts.append("WSL (/dev/dxg)")
        elif not self.device_nodes:
            parts.append("no /dev/nvidia* device nodes")
        return ", ".join(parts)


def sysroot(root: Optional[str] = None) -> str:
    return root or os.environ.get("LIBDOCTOR_SYSROOT") or "/"


def nvidia_gpus(root: str) -> Optional[tuple[str, ...]]:
    """PCI addresses of NVIDIA display or 3D controllers; None when there is no PCI bus to read."""
    devices = os.path.join(root, "sys/bus/pci/devices")
    try:
        names = sorted(os.listdir(devices))
    except OSError:
        return None
    found = []
    for name in names:
        vendor = _read(os.path.join(devices, name, "vendor"))
        klass = _read(os.path.join(devices, name, "class"))
        if vendor.lower() == "0x10de" and klass.lower().startswith("0x03"):
            found.append(name)
    return tuple(found)


def _read(path: str) -> str:
    return (read_text(path, 64) or "").strip()


def read_driver(libcuda: Optional[str], libnvidia_ml: Optional[str], root: Optional[str] = None) -> DriverInfo:
    """``libcuda``/``libnvidia_ml``: where the loader finds them (None: not found); ``root``: the machine's ``/``."""
    root = sysroot(root)
    module = None
    text = read_text(os.path.join(root, "sys/module/nvidia/version"), 4096)
    if text is not None:
        module = text.strip() or None
    else:
        text = read_text(os.path.join(root, "proc/driver/nvidia/version"), 65536)
        match = re.search(r"Kernel Module\s+(\d+\.\d+(?:\.\d+)?)", text or "")
        module = match.group(1) if match else None
    lib_version = None
    if libcuda:
        match = re.search(r"libcuda\.so\.(\d+\.\d+(?:\.\d+)?)$", os.path.realpath(libcuda))
        lib_version = match.group(1) if match else None
    nodes = tuple(sorted(glob.glob(os.path.join(root, "dev/nvidia[0-9]*")) + glob.glob(
        os.path.join(root, "dev/nvidiactl"))))
    wsl = os.path.exists(os.path.join(root, "dev/dxg")) and os.path.isdir(os.path.join(root, "usr/lib/wsl/lib"))
    if wsl:
        nodes += (os.path.join(root, "dev/dxg"),)
    return DriverInfo(module, libcuda, lib_version, libnvidia_ml, nodes, nvidia_gpus(root), wsl)


@dataclass(frozen=True)
class DriverRow:
    cuda: str
    release: str
    minimum: Optional[VersionTuple]
    minor_compat_minimum: Optional[VersionTuple]


@lru_cache(maxsize=1)
def driver_table() -> tuple[DriverRow, ...]:
    from importlib import resources

    text = resources.files("libdoctor.gpu").joinpath("data/cuda_min_driver.csv").read_text(encoding="utf-8")
    rows = []
    for row in csv.DictReader(io.StringIO(text)):
        rows.append(DriverRow(row["cuda_version"], row["toolkit_release"],
                              parse_version(row["min_linux_x86_64_driver"]),
                              parse_version(row["minor_version_compat_min_driver"])
                              if ">=" in row["minor_version_compat_min_driver"] else None))
    return tuple(rows)


@dataclass(frozen=True)
class DriverFit:
    ok: bool
    reason: str


def driver_fit(cuda: Optional[str], driver: DriverInfo) -> DriverFit:
    """Can this driver run a CUDA ``cuda`` runtime (with minor-version compatibility from 11.x)?"""
    if not driver.present:
        return DriverFit(False, "no NVIDIA driver")
    if driver.mismatch:
        return DriverFit(False, f"Driver/library version mismatch: the kernel module is {driver.kernel_module}, "
                                f"{driver.libcuda} is {driver.libcuda_version}: every CUDA call fails until they "
                                "match (reboot, or reload the nvidia module)")
    if not cuda:
        return DriverFit(True, "no CUDA runtime to match")
    have = parse_version(driver.version or "")
    want = parse_version(cuda.replace(".x", ".0"))  # "12.x" (CuPy's wheels): any 12 runtime, so the lowest
    rows = [r for r in driver_table() if parse_version(r.cuda) == (want[:2] if want else None)]
    if have is None or not rows:
        return DriverFit(True, f"driver {driver.version or '?'}; no minimum known for CUDA {cuda}")
    minimum = min((r.minimum for r in rows if r.minimum), default=None)
    if minimum and have >= minimum:
        return DriverFit(True, f"driver {driver.version} >= {'.'.join(map(str, minimum))} needed by CUDA {cuda}")
    compat = min((r.minor_compat_minimum for r in rows if r.minor_compat_minimum), default=None)
    if compat and have >= compat:
        return DriverFit(True, f"driver {driver.version} runs CUDA {cuda} through minor-version compatibility "
                               f"(>= {'.'.join(map(str, compat))}; newer PTX JIT features may fail)")
    need = ".".join(map(str, minimum)) if minimum else "?"
    return DriverFit(False, f"driver {driver.version} is older than {need}, the minimum for CUDA {cuda}")
