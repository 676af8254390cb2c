"""The loader model against three glibc releases: Debian bullseye (2.31) and trixie (2.41) roots made with
``debootstrap`` (``.ci/run`` makes them; ``LIBDOCTOR_DEBIAN_ROOTS`` names the folder), and this machine's own
loader (bookworm, 2.36).  Each case is compiled inside the release with its own gcc and run by its own loader
(``chroot``); libdoctor predicts it from the same files with that release's loader facts.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import textwrap
from pathlib import Path
from typing import Optional

import pytest

from libdoctor.loader.environment import Environment
from libdoctor.loader.factstore import FactsStore
from libdoctor.loader.ldcache import CacheLookup, load_ld_cache
from libdoctor.loader.loaderinfo import TRACE_PATH, LoaderInfo, parse_trace
from libdoctor.loader.resolver import MODE_LIST, LoadResult, Resolver


ROOTS = os.environ.get("LIBDOCTOR_DEBIAN_ROOTS")
RELEASES = ("bullseye", "bookworm", "host", "trixie")


@dataclasses.dataclass
class Release:
    name: str
    root: Path  # "/" for this machine
    info: LoaderInfo

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, *argv: str, env: Optional[dict[str, str]] = None) -> subprocess.CompletedProcess:
        command = list(argv) if self.root == Path("/") else ["/usr/sbin/chroot", str(self.root), *argv]
        return subprocess.run(command, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **(env or {})},
                              capture_output=True, text=True,
                              timeout=120)

    def gcc(self, *args: str) -> None:
        done = self.run("gcc", *args)
        assert done.returncode == 0, done.stderr

    def predict(self, program: str, env: dict[str, str]) -> LoadResult:
        """The release's loader facts, its system folders under its root, the same variables with root paths."""
        outside = {k: ":".join(str(self.path(p)) for p in v.split(":")) for k, v in env.items()}
        environment = Environment.from_process(environ=outside, cwd=str(self.path("/")), loader=self.info,
                                               cache_path="/nonexistent/ld.so.cache", conf_path="/nonexistent")
        return Resolver(environment.replace(preload_file=()), FactsStore()).load(str(self.path(program)), MODE_LIST)


@pytest.fixture(params=RELEASES)
def release(request: pytest.FixtureRequest, loader_info: LoaderInfo, tmp_path: Path) -> Release:
    if request.param == "host":
        return Release("bookworm", Path("/"), loader_info)
    if not ROOTS or not (Path(ROOTS) / request.param / "usr/bin/gcc").exists():
        pytest.skip(f"no Debian {request.param} root (LIBDOCTOR_DEBIAN_ROOTS; .ci/run makes them with debootstrap)")
    if os.geteuid() != 0:
        pytest.skip("chroot needs root")
    root = Path(ROOTS) / request.param
    return Release(request.param, root, root_loader(root, loader_info))


def root_loader(root: Path, host: LoaderInfo) -> LoaderInfo:
    """The release's own loader facts: its glibc, its $LIB and search subfolders (an LD_DEBUG trace in the root)."""
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    done = subprocess.run([chroot, str(root), "/lib64/ld-linux-x86-64.so.2", "--list", "/bin/true"],
                          env={"PATH": "/usr/bin:/bin", "LD_DEBUG": "libs", "LD_LIBRARY_PATH": TRACE_PATH},
                          capture_output=True, text=True)
    traced = parse_trace(done.stderr)
    assert traced is not None, done.stderr
    lib, platform, subdirs = traced
    hwcaps = tuple(s[len("glibc-hwcaps/"):] for s in subdirs if s.startswith("glibc-hwcaps/"))
    return dataclasses.replace(host, glibc_version=root_glibc(root), lib=lib, platform=platform, subdirs=subdirs,
                               hwcaps_active=hwcaps, system_dirs=(str(root / lib), str(root / "usr" / lib)))


def root_glibc(root: Path) -> Optional[str]:
    done = subprocess.run([shutil.which("chroot") or "/usr/sbin/chroot", str(root), "ldd", "--version"],
                          capture_output=True, text=True, env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
    first = done.stdout.splitlines()[0] if done.stdout else ""
    return first.rsplit(" ", 1)[-1] if first else None


@pytest.fixture
def case(release: Release) -> str:
    """A fresh folder inside the release's root (its path as the release sees it)."""
    inside = f"/tmp/libdoctor-case-{os.getpid()}"
    folder = release.path(inside)
    shutil.rmtree(folder, ignore_errors=True)
    (folder / "lib").mkdir(parents=True)
    (folder / "stub").mkdir()
    (folder / "app").mkdir()
    yield inside
    shutil.rmtree(folder, ignore_errors=True)


def write(release: Release, inside: str, text: str) -> str:
    release.path(inside).write_text(textwrap.dedent(text))
    return inside


def leaf_case(release: Release, case: str, provider_body: str, good_first: bool = False
              ) -> tuple[str, dict[str, str]]:
    """A program linked against libleaf.so.1 with version LEAF_1.0; the file it meets at run time was rebuilt
    without a version script (``provider_body``); ``good_first``: a properly versioned ``leaf`` comes earlier in
    the scope (LD_PRELOAD).  Returns the program and its variables (paths as the release sees them)."""
    write(release, f"{case}/leaf.map", "LEAF_1.0 { global: leaf; };\n")
    write(release, f"{case}/leaf.c", "int leaf(void) { return 0; }\n")
    write(release, f"{case}/plain.c", provider_body)
    write(release, f"{case}/main.c", "int leaf(void);\nint main(void) { return leaf(); }\n")
    release.gcc("-shared", "-fPIC", "-o", f"{case}/stub/libleaf.so.1", f"{case}/leaf.c",
                f"-Wl,--version-script={case}/leaf.map", "-Wl,-soname,libleaf.so.1")
    release.gcc("-shared", "-fPIC", "-o", f"{case}/lib/libleaf.so.1", f"{case}/plain.c", "-Wl,-soname,libleaf.so.1")
    env = {"LD_LIBRARY_PATH": f"{case}/lib"}  # no $ORIGIN: a chroot without /proc cannot expand it
    if good_first:
        release.gcc("-shared", "-fPIC", "-o", f"{case}/lib/libgood.so", f"{case}/leaf.c",
                    f"-Wl,--version-script={case}/leaf.map", "-Wl,-soname,libgood.so")
        env["LD_PRELOAD"] = f"{case}/lib/libgood.so"
    release.gcc("-o", f"{case}/app/prog", f"{case}/main.c", f"{case}/stub/libleaf.so.1", "-Wl,-z,now")
    return f"{case}/app/prog", env


PLAIN = "int leaf(void) { return 0; }\n"  # no version table at all
WITH_TABLE = "#include <unistd.h>\nint leaf(void) { return getpid() < 0; }\n"  # imports GLIBC_2.2.5: a DT_VERSYM


def check(release: Release, built: tuple[str, dict[str, str]]) -> tuple[subprocess.CompletedProcess, LoadResult]:
    program, env = built
    done = release.run(program, env=env)
    result = release.predict(program, env)
    problems = [p for p in result.version_problems if p.missing_verdef]
    assert problems, [p.message for p in result.version_problems]
    assert "no version information available" in done.stderr
    died = done.returncode == 127 and "Inconsistency detected" in done.stderr
    assert died == problems[0].fatal, (release.name, done.returncode, done.stderr, problems[0].message)
    assert died == (not result.ok)
    return done, result


def test_no_version_table_aborts_before_2_41(release: Release, case: str) -> None:
    done, _result = check(release, leaf_case(release, case, PLAIN))
    version = tuple(int(p) for p in (release.info.glibc_version or "0.0").split(".")[:2])
    assert (done.returncode == 127) == (version < (2, 41)), (release.name, done.stderr)


def test_a_version_table_without_definitions_runs_after_a_warning(release: Release, case: str) -> None:
    done, _result = check(release, leaf_case(release, case, WITH_TABLE))
    assert done.returncode == 0


def test_an_earlier_definer_answers_before_the_provider(release: Release, case: str) -> None:
    done, _result = check(release, leaf_case(release, case, PLAIN, good_first=True))
    assert done.returncode == 0


def test_dlopen_of_a_library_asking_for_an_executable_stack(release: Release, case: str) -> None:
    """glibc 2.41 refuses to dlopen an object whose PT_GNU_STACK asks for an executable stack while the stack is not
    executable ("cannot enable executable stack as shared object requires: Invalid argument"); 2.31 and 2.36 make
    the stack executable and load it."""
    write(release, f"{case}/exec.c", "int in_exec(void) { return 0; }\n")
    write(release, f"{case}/caller.c", """\
        #include <dlfcn.h>
        #include <stdio.h>
        int main(int argc, char **argv) {
            void *handle = dlopen(argv[1], RTLD_NOW);
            if (!handle) { fprintf(stderr, "%s\\n", dlerror()); return 1; }
            return 0;
        }
        """)
    release.gcc("-shared", "-fPIC", "-o", f"{case}/lib/libexec.so", f"{case}/exec.c", "-Wl,-z,execstack")
    release.gcc("-o", f"{case}/app/caller", f"{case}/caller.c", "-ldl")
    env = {"LD_LIBRARY_PATH": f"{case}/lib"}
    done = release.run(f"{case}/app/caller", "libexec.so", env=env)
    outside = {"LD_LIBRARY_PATH": str(release.path(f"{case}/lib"))}
    environment = Environment.from_process(environ=outside, cwd=str(release.path("/")), loader=release.info,
                                           cache_path="/nonexistent/ld.so.cache", conf_path="/nonexistent")
    result = Resolver(environment.replace(preload_file=()), FactsStore()).dlopen(
        str(release.path(f"{case}/app/caller")), "libexec.so")
    version = tuple(int(p) for p in (release.info.glibc_version or "0.0").split(".")[:2])
    refused = "cannot enable executable stack" in done.stderr
    assert refused == (version >= (2, 41)) and (done.returncode != 0) == refused, (release.name, done.stderr)
    assert (result.root_error is not None and "cannot enable executable stack" in result.root_error) == refused


def test_a_version_need_met_by_an_object_loaded_under_its_name(release: Release, case: str) -> None:
    """dl-version.c find_needed, the same in 2.31, 2.36 and 2.41: libuser's spoiled DT_NEEDED leaves libver.so out
    of its own scope, and the program loading libver.so by that name meets the need."""
    from .test_loader_checks import _spoil_needed

    write(release, f"{case}/ver.map", "VER_1 { global: v; };\n")
    write(release, f"{case}/ver.c", "int v(void) { return 0; }\n")
    write(release, f"{case}/user.c", "int v(void);\nint u(void) { return v(); }\n")
    write(release, f"{case}/main.c", "int u(void);\nint v(void);\nint main(void) { return u() + v(); }\n")
    release.gcc("-shared", "-fPIC", "-o", f"{case}/lib/libver.so", f"{case}/ver.c",
                f"-Wl,--version-script={case}/ver.map",
                "-Wl,-soname,libver.so")
    release.gcc("-shared", "-fPIC", "-o", f"{case}/lib/libuser.so", f"{case}/user.c", f"{case}/lib/libver.so",
                "-Wl,-soname,libuser.so")
    release.gcc("-o", f"{case}/app/prog", f"{case}/main.c", f"{case}/lib/libuser.so", f"{case}/lib/libver.so")
    _spoil_needed(release.path(f"{case}/lib/libuser.so"), "libuser.so")
    env = {"LD_LIBRARY_PATH": f"{case}/lib"}
    done = release.run(f"{case}/app/prog", env=env)
    assert done.returncode == 0, (release.name, done.stderr)
    assert release.predict(f"{case}/app/prog", env).ok


def test_legacy_hwcap_entries_of_ld_so_cache(release: Release, case: str) -> None:
    """Before glibc 2.37 ldconfig records copies in legacy hwcap folders (``tls/``, ``x86_64/``) and the loader takes
    the first one it can use, in cache order, before the plain copy; from 2.37 both stopped.  The release's own
    ldconfig writes its cache, its own loader runs the program, and libdoctor's cache lookup reads that cache with
    that loader's facts."""
    if release.root == Path("/"):
        pytest.skip("the host's ld.so.cache is not ours to rewrite: the bookworm root stands for 2.36")
    folder = "/usr/local/lib/libdoctor-legacy"
    copies = {"": 1, "x86_64/": 2, "tls/": 3}
    for sub, number in copies.items():
        release.path(f"{folder}/{sub}").mkdir(parents=True, exist_ok=True)
        write(release, f"{case}/which{number}.c", f"int which(void) {{ return {number}; }}\n")
        release.gcc("-shared", "-fPIC", "-o", f"{folder}/{sub}libleg.so.1", f"{case}/which{number}.c",
                    "-Wl,-soname,libleg.so.1")
    write(release, f"{case}/main.c", "int which(void);\nint main(void) { return which(); }\n")
    release.gcc("-o", f"{case}/app/prog", f"{case}/main.c", f"{folder}/libleg.so.1")
    conf = release.path("/etc/ld.so.conf.d/libdoctor-legacy.conf")
    conf.write_text(folder + "\n")
    try:
        assert release.run("ldconfig").returncode == 0
        done = release.run(f"{case}/app/prog")
        cache = load_ld_cache(str(release.path("/etc/ld.so.cache")))
        host = release.info.host
        chosen = CacheLookup(cache, host.machine, host.elf_class, release.info.hwcaps_active,
                             release.info.legacy_subdirs).lookup("libleg.so.1")
    finally:
        conf.unlink()
        shutil.rmtree(release.path(folder), ignore_errors=True)
        release.run("ldconfig")
    assert chosen is not None
    predicted = copies[chosen[len(folder) + 1:-len("libleg.so.1")]]
    assert done.returncode == predicted, (release.name, release.info.glibc_version, chosen, done.returncode,
                                          [e.path for e in cache.entries if e.key == "libleg.so.1"])
