"""Facts about the running dynamic loader: trusted folders, ``$LIB``, ``$PLATFORM``, hwcaps.

The loader is asked, never guessed at, where it can answer (loader-facts.md, item 10):
``ld.so --list-diagnostics`` (glibc >= 2.33) gives the trusted folders, platform and version,
and one ``LD_DEBUG=libs`` trace of ``ld.so --list`` with two marker folders in
``LD_LIBRARY_PATH`` shows how ``$LIB`` and ``$PLATFORM`` expand and which hwcaps subfolders
(glibc-hwcaps and legacy) it tries in every search folder, in order.  Neither runs target code.
Without such a loader, documented per-distribution defaults stand in.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from dataclasses import dataclass
from typing import Optional

from ..errors import LibdoctorError
from .elffacts import HostAbi
from .plainfiles import read_json

DEFAULT_INTERPRETERS = ("/lib64/ld-linux-x86-64.so.2", "/lib/ld-linux-aarch64.so.1", "/lib/ld-linux.so.2")
_MARK_LIB, _MARK_PLATFORM = "/@libdoctor-lib@", "/@libdoctor-platform@"
_MACHINES = {"x86_64": 62, "aarch64": 183, "ppc64le": 21, "s390x": 22, "riscv64": 243, "i686": 3}


@dataclass(frozen=True)
class LoaderInfo:
    interpreter: str
    glibc_version: Optional[str]
    system_dirs: tuple[str, ...]  # trusted folders, no trailing slash, in search order
    lib: str  # what $LIB expands to
    platform: Optional[str]  # what $PLATFORM expands to (AT_PLATFORM)
    hwcaps_active: tuple[str, ...]  # glibc-hwcaps subfolder names, best first
    subdirs: tuple[str, ...]  # every subfolder tried in a search folder, in order; "" is the folder itself
    host: HostAbi
    source: str  # where these facts came from

    def glibc_at_least(self, wanted: tuple[int, int]) -> bool:
        """This loader's glibc is ``wanted`` (major, minor) or newer (False when its version is not known)."""
        numbers = tuple(int(p) for p in (self.glibc_version or "").split(".")[:2] if p.isdigit())
        return len(numbers) == 2 and numbers >= wanted

    @property
    def legacy_subdirs(self) -> tuple[str, ...]:
        """The legacy hwcap folders (``tls``, ``x86_64``, ``haswell``...) this loader searches and accepts in its
        cache: those of its own search before glibc 2.37, none after (legacy hwcaps were removed in 2.37)."""
        if self.glibc_at_least((2, 37)):
            return ()
        return tuple(s for s in self.subdirs if s and not s.startswith("glibc-hwcaps/"))


def _run(argv: list[str], env: dict[str, str]):  # noqa: ANN202 - subprocess is imported only when probing
    import subprocess

    try:
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None


def _with_tunables(env: dict[str, str], tunables: Optional[str]) -> dict[str, str]:
    """GLIBC_TUNABLES (``glibc.cpu.hwcaps=-AVX2``...) changes which glibc-hwcaps subfolders the loader takes: the
    probe asks the loader under the tunables of the environment judged."""
    return {**env, "GLIBC_TUNABLES": tunables} if tunables else env


def _diagnostics(interpreter: str, tunables: Optional[str] = None) -> dict[str, str]:
    done = _run([interpreter, "--list-diagnostics"], _with_tunables({"PATH": "/usr/bin:/bin"}, tunables))
    if done is None or done.returncode != 0:
        return {}
    values = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            values[key] = value.strip('"')
    return values


def _trace_subdirs(interpreter: str, probe_program: str, tunables: Optional[str] = None
                   ) -> Optional[tuple[str, Optional[str], tuple[str, ...]]]:
    """($LIB, $PLATFORM, subfolders) from one LD_DEBUG trace, or None."""
    env = _with_tunables({"LD_LIBRARY_PATH": f"{_MARK_LIB}/$LIB:{_MARK_PLATFORM}/$PLATFORM", "LD_DEBUG": "libs",
                          "PATH": "/usr/bin:/bin"}, tunables)
    done = _run([interpreter, "--list", probe_program], env)
    return parse_trace(done.stderr) if done is not None else None


TRACE_PATH = f"{_MARK_LIB}/$LIB:{_MARK_PLATFORM}/$PLATFORM"  # the LD_LIBRARY_PATH a trace probe sets


def parse_trace(stderr: str) -> Optional[tuple[str, Optional[str], tuple[str, ...]]]:
    """($LIB, $PLATFORM, subfolders) from the LD_DEBUG=libs output of a probe run with LD_LIBRARY_PATH=TRACE_PATH."""
    for line in stderr.splitlines():
        match = re.search(r"search path=(\S+)\s+\(LD_LIBRARY_PATH\)", line)
        if not match:
            continue
        elements = match.group(1).split(":")
        lib_elems = [e[len(_MARK_LIB) + 1:] for e in elements if e.startswith(_MARK_LIB + "/")]
        plat_elems = [e[len(_MARK_PLATFORM) + 1:] for e in elements if e.startswith(_MARK_PLATFORM + "/")]
        if not lib_elems or not plat_elems:
            return None
        lib = lib_elems[-1]
        subdirs = tuple(e[len(lib) + 1:] for e in lib_elems[:-1]) + ("",)
        return lib, plat_elems[-1] or None, subdirs
    return None


def _fallback_system_dirs() -> tuple[tuple[str, ...], str]:
    """Debian multiarch, else the lib64 layout of Red Hat and SUSE (glibc's configure defaults)."""
    triplet = {"x86_64": "x86_64-linux-gnu", "aarch64": "aarch64-linux-gnu"}.get(os.uname().machine)
    if triplet and os.path.isdir(f"/lib/{triplet}"):
        return (f"/lib/{triplet}", f"/usr/lib/{triplet}", "/lib", "/usr/lib"), f"lib/{triplet}"
    if os.path.isdir("/lib64") and not os.path.islink("/lib64") or os.path.isdir("/usr/lib64"):
        return ("/lib64", "/usr/lib64"), "lib64"
    return ("/lib", "/usr/lib"), "lib"


def host_abi() -> HostAbi:
    machine = _MACHINES.get(os.uname().machine, 62)
    bits = 64 if sys.maxsize > 2 ** 32 else 32
    return HostAbi(elf_class=bits, little_endian=sys.byteorder == "little", machine=machine)


def find_interpreter() -> Optional[str]:
    for path in DEFAULT_INTERPRETERS:
        if os.path.exists(path):
            return path
    return None


def probe_loader(interpreter: Optional[str] = None, probe_program: Optional[str] = None,
                 tunables: Optional[str] = None) -> LoaderInfo:
    """Ask the loader for its facts (under ``tunables``, the GLIBC_TUNABLES of the environment judged);
    documented fallbacks where it cannot answer."""
    interpreter = interpreter or find_interpreter() or DEFAULT_INTERPRETERS[0]
    diag = _diagnostics(interpreter, tunables)
    traced = None
    for program in ([probe_program] if probe_program else []) + ["/bin/true", "/usr/bin/true", "/bin/sh"]:
        if os.path.exists(program):
            traced = _trace_subdirs(interpreter, program, tunables)
            if traced:
                break
    fallback_dirs, fallback_lib = _fallback_system_dirs()
    system_dirs = tuple(v.rstrip("/") or "/" for k, v in sorted(diag.items(), key=lambda kv: _index(kv[0]))
                        if k.startswith("path.system_dirs[")) or fallback_dirs
    names = tuple(n for n in diag.get("dl_hwcaps_subdirs", "").split(":") if n)
    mask = int(diag.get("dl_hwcaps_subdirs_active", "0"), 0) if diag.get("dl_hwcaps_subdirs_active") else 0
    hwcaps = tuple(n for i, n in enumerate(names) if mask & (1 << i))
    if traced:
        lib, plat, subdirs = traced
        hwcaps = tuple(s[len("glibc-hwcaps/"):] for s in subdirs if s.startswith("glibc-hwcaps/"))
        source = "ld.so --list-diagnostics and LD_DEBUG=libs" if diag else "LD_DEBUG=libs"
    else:
        lib, plat = fallback_lib, diag.get("dl_platform") or os.uname().machine
        subdirs = tuple(f"glibc-hwcaps/{n}" for n in hwcaps) + ("",)
        source = "ld.so --list-diagnostics" if diag else "built-in defaults"
    return LoaderInfo(interpreter=interpreter, glibc_version=diag.get("version.version"), system_dirs=system_dirs,
                      lib=lib, platform=plat, hwcaps_active=hwcaps, subdirs=subdirs, host=host_abi(),
                      source=source)


def probe_other_loader(interpreter: str, host: HostAbi) -> LoaderInfo:
    """The facts of the loader of another ELF class (``/lib/ld-linux.so.2`` for a 32-bit program on x86_64),
    from ``--list-diagnostics`` alone: no program of that class is run to trace it."""
    diag = _diagnostics(interpreter)
    system_dirs = tuple(v.rstrip("/") or "/" for k, v in sorted(diag.items(), key=lambda kv: _index(kv[0]))
                        if k.startswith("path.system_dirs[")) or ("/lib", "/usr/lib")
    names = tuple(n for n in diag.get("dl_hwcaps_subdirs", "").split(":") if n)
    mask = int(diag.get("dl_hwcaps_subdirs_active", "0"), 0) if diag.get("dl_hwcaps_subdirs_active") else 0
    hwcaps = tuple(n for i, n in enumerate(names) if mask & (1 << i))
    return LoaderInfo(interpreter=interpreter, glibc_version=diag.get("version.version"), system_dirs=system_dirs,
                      lib=system_dirs[0].strip("/") or "lib", platform=diag.get("dl_platform"), hwcaps_active=hwcaps,
                      subdirs=tuple(f"glibc-hwcaps/{n}" for n in hwcaps) + ("",), host=host,
                      source="ld.so --list-diagnostics" if diag else "built-in defaults")


def _probe_key(interpreter: str, tunables: Optional[str] = None) -> Optional[str]:
    """What the probe's answer depends on: the loader file, the CPU, the tunables."""
    try:
        st = os.stat(interpreter)
    except OSError:
        return None
    flags = ""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            flags = next((line for line in handle if line.startswith(("flags", "Features"))), "")
    except OSError:
        pass
    import hashlib

    digest = hashlib.sha256(flags.encode()).hexdigest()[:16]
    return (f"{interpreter}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}:{digest}:"
            f"{tunables or ''}")


def _decode_info(fields: dict) -> LoaderInfo:
    """A cached LoaderInfo, every field checked by type (anything else raises)."""
    def text(value: object, optional: bool = False) -> Optional[str]:
        if (value is None and optional) or isinstance(value, str):
            return value
        raise TypeError("not a string")

    def texts(value: object) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise TypeError("not a list")
        return tuple(text(v) for v in value)  # type: ignore[misc]

    host = fields["host"]
    if not (isinstance(host, dict) and isinstance(host.get("elf_class"), int) and isinstance(host.get("machine"), int)
            and isinstance(host.get("little_endian"), bool) and len(host) == 3):
        raise TypeError("bad host")
    if set(fields) != {f.name for f in dataclasses.fields(LoaderInfo)}:
        raise ValueError("unknown fields")
    return LoaderInfo(text(fields["interpreter"]), text(fields["glibc_version"], True),  # type: ignore[arg-type]
                      texts(fields["system_dirs"]), text(fields["lib"]), text(fields["platform"], True),  # type: ignore[arg-type]
                      texts(fields["hwcaps_active"]), texts(fields["subdirs"]), HostAbi(**host),
                      text(fields["source"]))  # type: ignore[arg-type]


def cached_probe_loader(cache_dir: Optional[str], tunables: Optional[str] = None) -> LoaderInfo:
    """:func:`probe_loader`, remembered in ``cache_dir`` while the loader, the CPU and the tunables stay the same."""
    interpreter = find_interpreter() or DEFAULT_INTERPRETERS[0]
    key = _probe_key(interpreter, tunables)
    path = os.path.join(cache_dir, "loader-v1.json") if cache_dir else None
    if key and path:
        try:
            data = read_json(path, 1 << 20, private=True)
            if isinstance(data, dict) and data.get("key") == key:
                return _decode_info(data["info"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass  # foreign, corrupt or poisoned: probed again, never believed
    info = probe_loader(interpreter, tunables=tunables)
    if key and path:
        from ..files import write_atomic

        try:
            os.makedirs(cache_dir, mode=0o700, exist_ok=True)  # type: ignore[arg-type]
            write_atomic(path, json.dumps({"key": key, "info": dataclasses.asdict(info)}).encode("utf-8"), 0o600)
        except (OSError, LibdoctorError):
            pass
    return info


def _index(key: str) -> int:
    match = re.search(r"\[(0x[0-9a-fA-F]+|\d+)\]", key)
    return int(match.group(1), 0) if match else 0
