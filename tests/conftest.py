"""Fixtures: tiny real ELF objects built with gcc, and the real loader as the judge."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pytest

import atexit
import tempfile

# Machine facts (/sys, /proc, /dev, /usr/lib/wsl) come from an empty root unless a test builds its own: the
# suite's verdicts do not depend on whether the machine running it has an NVIDIA card.
os.environ["LIBDOCTOR_SYSROOT"] = tempfile.mkdtemp(prefix="libdoctor-sysroot-")
atexit.register(shutil.rmtree, os.environ["LIBDOCTOR_SYSROOT"], True)

from libdoctor.loader.environment import Environment
from libdoctor.loader.factstore import FactsStore
from libdoctor.loader.loaderinfo import LoaderInfo, probe_loader
from libdoctor.loader.resolver import MODE_LIST, LoadResult, Resolver

GCC = shutil.which("gcc") or shutil.which("cc")
needs_gcc = pytest.mark.skipif(GCC is None, reason="gcc is not installed")


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


class ElfFactory:
    """Builds shared libraries and programs with gcc; every option maps to a linker flag."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.src = root / ".src"
        self.src.mkdir(parents=True, exist_ok=True)
        self._count = 0

    def _source(self, defines: Iterable[str], calls: Iterable[str], main: bool, body: str = "") -> Path:
        self._count += 1
        lines = ["#include <stddef.h>"]
        calls = list(calls)
        lines += [f"int {_ident(c)}(void);" for c in calls]
        lines += [f"int {_ident(d)}(void) {{ return 0; }}" for d in defines]
        call_expr = " + ".join(f"{_ident(c)}()" for c in calls) or "0"
        if main:
            lines.append(body or f"int main(void) {{ return {call_expr}; }}")
        else:
            lines.append(f"int uses_{self._count}(void) {{ return {call_expr}; }}")
            if body:
                lines.append(body)
        path = self.src / f"s{self._count}.c"
        path.write_text("\n".join(lines) + "\n")
        return path

    def _link_flags(self, link: Sequence[Path], rpath: Optional[str], runpath: Optional[str],
                    version_script: Optional[dict[str, Sequence[str]]], soname: Optional[str]) -> list[str]:
        flags = [str(p) for p in link]
        if rpath is not None:
            flags += ["-Wl,--disable-new-dtags", f"-Wl,-rpath,{rpath}"]
        if runpath is not None:
            flags += ["-Wl,--enable-new-dtags", f"-Wl,-rpath,{runpath}"]
        if soname:
            flags.append(f"-Wl,-soname,{soname}")
        if version_script:
            self._count += 1
            script = self.src / f"v{self._count}.map"
            text = "".join(f"{node} {{ global: {'; '.join(_ident(s) for s in syms)}; }};\n" if syms
                           else f"{node} {{ }};\n" for node, syms in version_script.items())
            script.write_text(text)
            flags.append(f"-Wl,--version-script={script}")
        return flags

    def lib(self, path: str | Path, soname: Optional[str] = None, defines: Iterable[str] = ("f",),
            calls: Iterable[str] = (), link: Sequence[Path] = (), rpath: Optional[str] = None,
            runpath: Optional[str] = None, version_script: Optional[dict[str, Sequence[str]]] = None,
            extra: Sequence[str] = (), body: str = "") -> Path:
        out = self.root / path
        out.parent.mkdir(parents=True, exist_ok=True)
        src = self._source(defines, calls, main=False, body=body)
        cmd = [GCC, "-shared", "-fPIC", "-o", str(out), str(src)]
        cmd += self._link_flags(link, rpath, runpath, version_script, soname if soname is not None else out.name)
        cmd += list(extra)
        subprocess.run(cmd, check=True, capture_output=True)
        return out

    def exe(self, path: str | Path, calls: Iterable[str] = (), link: Sequence[Path] = (),
            rpath: Optional[str] = None, runpath: Optional[str] = None, extra: Sequence[str] = (),
            body: str = "") -> Path:
        out = self.root / path
        out.parent.mkdir(parents=True, exist_ok=True)
        src = self._source((), calls, main=True, body=body)
        cmd = [GCC, "-o", str(out), str(src)] + self._link_flags(link, rpath, runpath, None, None) + list(extra)
        subprocess.run(cmd, check=True, capture_output=True)
        return out

    def stub(self, soname: str, defines: Iterable[str] = ("f",),
             version_script: Optional[dict[str, Sequence[str]]] = None) -> Path:
        """A link-time stand-in that gives consumers ``DT_NEEDED soname``; it lives outside every search path."""
        return self.lib(Path(".stubs") / _ident(soname) / soname, soname=soname, defines=defines,
                        version_script=version_script)


DLPROBE_SOURCE = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdio.h>
static int show(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size; (void)data;
    printf("%s\n", info->dlpi_name);
    return 0;
}
int main(int argc, char **argv) {
    if (argc < 2) return 2;
    void *handle = dlopen(argv[1], RTLD_NOW);
    if (!handle) { fprintf(stderr, "%s\n", dlerror()); return 1; }
    dl_iterate_phdr(show, NULL);
    return 0;
}
"""


@dataclass(frozen=True)
class Trace:
    """What ``LD_TRACE_LOADED_OBJECTS=1 ld.so FILE`` (ldd's method) printed."""

    entries: tuple[tuple[str, Optional[str]], ...]  # (name, path or None) in load order
    stderr: str
    returncode: int

    def mapping(self) -> dict[str, Optional[str]]:
        return dict(self.entries)


def read_terminal(leader: int) -> bytes:
    """Everything written to a pty until its last writer closes (the follower end closed here already)."""
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the other side is gone
            return seen
        if not chunk:
            return seen
        seen += chunk


def loader_env(extra: Optional[dict[str, str]] = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LD_")}
    env.update(extra or {})
    return env


def ldso_trace(info: LoaderInfo, path: str, cwd: str, extra: Optional[dict[str, str]] = None) -> Trace:
    env = loader_env(extra)
    env["LD_TRACE_LOADED_OBJECTS"] = "1"
    done = subprocess.run([info.interpreter, path], env=env, cwd=cwd, capture_output=True, text=True, timeout=30)
    entries = []
    for line in done.stdout.splitlines():
        match = re.match(r"\t(.+?) => not found$", line)
        if match:
            entries.append((match.group(1), None))
            continue
        match = re.match(r"\t(.+?) => (.+?) \(0x[0-9a-f]+\)$", line)
        if match:
            entries.append((match.group(1), match.group(2)))
            continue
        match = re.match(r"\t(.+?) \(0x[0-9a-f]+\)$", line)
        if match and match.group(1) != "linux-vdso.so.1":
            entries.append((match.group(1), match.group(1)))
    return Trace(tuple(entries), done.stderr, done.returncode)


def predicted_entries(result: LoadResult) -> tuple[tuple[str, Optional[str]], ...]:
    """libdoctor's answer in the trace's shape: every object once, missing names once."""
    entries: list[tuple[str, Optional[str]]] = []
    for obj in result.closure():
        name = obj.path if obj.via == "interpreter" or obj.requested_as == obj.path else obj.requested_as
        entries.append((name, obj.path))
    seen = set()
    for res in result.relevant_resolutions():
        if not res.found and res.name not in seen and not res.fatal:
            seen.add(res.name)
            entries.append((res.name, None))
    return tuple(entries)


class Judge:
    """Runs libdoctor and the real loader in the same environment."""

    def __init__(self, info: LoaderInfo) -> None:
        self.info = info

    def environment(self, cwd: str, extra: Optional[dict[str, str]] = None, **changes: object) -> Environment:
        env = Environment.from_process(environ=loader_env(extra), cwd=cwd, loader=self.info)
        return env.replace(preload_file=(), **changes) if changes else env.replace(preload_file=())

    def predict(self, path: str, cwd: str, extra: Optional[dict[str, str]] = None, mode: str = MODE_LIST
                ) -> LoadResult:
        return Resolver(self.environment(cwd, extra), FactsStore()).load(path, mode)

    def compare(self, path: str | Path, cwd: str | Path, extra: Optional[dict[str, str]] = None
                ) -> tuple[LoadResult, Trace]:
        """Assert that libdoctor and ld.so agree on every object, in order; return both."""
        result = self.predict(str(path), str(cwd), extra)
        trace = ldso_trace(self.info, str(path), str(cwd), extra)
        assert trace.returncode in (0, 1, 127), trace.stderr
        expected = [(n, p) for n, p in trace.entries]
        mine = list(predicted_entries(result))
        assert sorted(mine, key=str) == sorted(expected, key=str), (mine, expected, trace.stderr)
        found_order = [e for e in mine if e[1] is not None]
        assert found_order == [e for e in expected if e[1] is not None], (mine, expected)
        return result, trace


@pytest.fixture(scope="session")
def loader_info() -> LoaderInfo:
    return probe_loader()


@pytest.fixture
def judge(loader_info: LoaderInfo) -> Judge:
    return Judge(loader_info)


@pytest.fixture
def elf(tmp_path: Path) -> ElfFactory:
    if GCC is None:
        pytest.skip("gcc is not installed")
    return ElfFactory(tmp_path)


@pytest.fixture(scope="session")
def dlprobe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if GCC is None:
        pytest.skip("gcc is not installed")
    folder = tmp_path_factory.mktemp("dlprobe")
    src = folder / "dlprobe.c"
    src.write_text(DLPROBE_SOURCE)
    out = folder / "dlprobe"
    subprocess.run([GCC, "-o", str(out), str(src), "-ldl"], check=True, capture_output=True)
    return out
