"""What decides scan's verdict besides missing names: hazards, the driver, the activated env, 32-bit."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from .conftest import ElfFactory, Judge, loader_env

REPO = Path(__file__).resolve().parent.parent


def run_scan_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    environ = loader_env(env)
    environ.update({"NO_COLOR": "1", "PYTHONPATH": str(REPO), "LIBDOCTOR_CACHE_DIR": str(cwd / ".cache"),
                    "LIBDOCTOR_STATE_DIR": str(cwd / ".state")})
    for name in ("VIRTUAL_ENV", "CONDA_PREFIX"):
        environ.pop(name, None)
    return subprocess.run([sys.executable, "-m", "libdoctor", "scan", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def test_a_library_taken_from_the_current_folder_is_an_error(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    stub = elf.stub("libhijack.so.1", defines=["h"])
    elf.lib("good/libhijack.so.1", defines=["h"])
    consumer = elf.lib("app/libconsumer.so", calls=["h"], link=[stub])
    planted = elf.lib("work/libhijack.so.1", defines=["h"])
    llp = {"LD_LIBRARY_PATH": f":{tmp_path / 'good'}"}  # "$LD_LIBRARY_PATH:/good" with the variable unset
    result, trace = judge.compare(consumer, tmp_path / "work", llp)
    assert trace.mapping()["libhijack.so.1"] == "libhijack.so.1"  # the loader takes ./libhijack.so.1
    assert any(o.path == "libhijack.so.1" for o in result.objects)
    done = run_scan_cli("--json", str(consumer), cwd=planted.parent, env=llp)
    assert done.returncode == 1, done.stdout + done.stderr
    findings = json.loads(done.stdout)["findings"]
    hijack = [f for f in findings if f["severity"] == "error" and "taken from the current folder" in f["title"]]
    assert hijack and "empty element of LD_LIBRARY_PATH" in hijack[0]["title"], findings
    human = run_scan_cli(str(consumer), cwd=planted.parent, env=llp)
    assert human.returncode == 1 and "[✗] libhijack.so.1 was taken from the current folder" in human.stdout


def test_an_empty_element_that_decides_nothing_only_warns(elf: ElfFactory, tmp_path: Path) -> None:
    stub = elf.stub("libsafe.so.1", defines=["s"])
    elf.lib("good/libsafe.so.1", defines=["s"])
    consumer = elf.lib("app/libconsumer.so", calls=["s"], link=[stub])
    (tmp_path / "work").mkdir()
    done = run_scan_cli(str(consumer), cwd=tmp_path / "work", env={"LD_LIBRARY_PATH": f"{tmp_path / 'good'}:"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "[!] LD_LIBRARY_PATH" in done.stdout and "empty element" in done.stdout


def test_the_driver_is_found_as_a_dlopen_finds_it(elf: ElfFactory, judge: Judge, dlprobe: Path, tmp_path: Path) -> None:
    from libdoctor.gpu.driver import driver_fit
    from libdoctor.gpu.frameworkcheck import machine_driver

    nvidia = tmp_path / "usr/local/nvidia/lib64"  # the container layout, reached through LD_LIBRARY_PATH only
    lib = elf.lib(nvidia / "libcuda.so.580.65.06", soname="libcuda.so.1", defines=["cuInit"])
    os.symlink(lib.name, nvidia / "libcuda.so.1")
    root = tmp_path / "root"
    (root / "sys/module/nvidia").mkdir(parents=True)
    (root / "sys/module/nvidia/version").write_text("580.65.06\n")
    llp = {"LD_LIBRARY_PATH": str(nvidia)}
    real = subprocess.run([str(dlprobe), "libcuda.so.1"], env=loader_env(llp), capture_output=True, text=True)
    assert real.returncode == 0 and str(nvidia / "libcuda.so.1") in real.stdout.splitlines()
    driver = machine_driver(judge.environment(str(tmp_path), llp), str(root))
    assert driver.present and driver.libcuda == str(nvidia / "libcuda.so.1")
    assert driver_fit("13.0", driver).ok
    assert not machine_driver(judge.environment(str(tmp_path)), str(root)).present  # without LD_LIBRARY_PATH


def test_a_kernel_module_of_another_driver_is_the_version_mismatch(elf: ElfFactory, judge: Judge,
                                                                  tmp_path: Path) -> None:
    from libdoctor.gpu.driver import driver_fit
    from libdoctor.gpu.frameworkcheck import machine_driver

    folder = tmp_path / "drv"
    lib = elf.lib(folder / "libcuda.so.570.86.10", soname="libcuda.so.1", defines=["cuInit"])
    os.symlink(lib.name, folder / "libcuda.so.1")
    root = tmp_path / "root"
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        "NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:26 UTC 2025\n")
    driver = machine_driver(judge.environment(str(tmp_path), {"LD_LIBRARY_PATH": str(folder)}), str(root))
    assert driver.mismatch
    fit = driver_fit("12.4", driver)
    assert not fit.ok and "Driver/library version mismatch" in fit.reason and "570.86.10" in fit.reason


def build_32bit(folder: Path) -> tuple[Path, Path]:
    """A real i386 program and library, made with the toolchain's 32-bit assembler and linker (no multilib C
    library needed: the program has its own entry point)."""
    import shutil

    import pytest

    if not shutil.which("gcc") or not shutil.which("ld"):
        pytest.skip("no gcc/ld")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "x.c").write_text("int x32(void) { return 1; }\n")
    (folder / "m.c").write_text("int x32(void);\nint _start(void) { return x32(); }\n")
    steps = [["gcc", "-m32", "-fPIC", "-c", "x.c", "-o", "x.o"],
             ["ld", "-m", "elf_i386", "-shared", "-soname", "libx32.so.1", "-o", "libx32.so.1", "x.o"],
             ["gcc", "-m32", "-c", "m.c", "-o", "m.o"],
             ["ld", "-m", "elf_i386", "-dynamic-linker", "/lib/ld-linux.so.2", "-o", "prog32", "m.o", "libx32.so.1"]]
    for step in steps:
        if subprocess.run(step, cwd=folder, capture_output=True).returncode != 0:
            pytest.skip(f"cannot build 32-bit objects here: {' '.join(step)}")
    return folder / "prog32", folder / "libx32.so.1"


def test_a_32_bit_program_is_resolved_by_its_own_loader(tmp_path: Path) -> None:
    """A 32-bit program on this 64-bit host is resolved as /lib/ld-linux.so.2 would (its system folders, its class)
    where that loader exists (CI installs gcc-multilib); without it, it is not judged: never "healthy" with nothing
    checked."""
    program, library = build_32bit(tmp_path / "x32")
    llp = {"LD_LIBRARY_PATH": str(program.parent)}
    done = run_scan_cli("--json", str(program), cwd=tmp_path, env=llp)
    data = json.loads(done.stdout)
    if not os.path.exists("/lib/ld-linux.so.2"):
        assert done.returncode == 1 and [p["kind"] for p in data["problems"]] == ["bad-target"]
        assert any("no 32-bit loader (/lib/ld-linux.so.2)" in n for n in data["notes"])
        return
    listed = subprocess.run(["/lib/ld-linux.so.2", "--list", str(program)], env=loader_env(llp), capture_output=True,
                            text=True)
    assert f"libx32.so.1 => {library}" in listed.stdout, listed.stdout
    assert done.returncode == 0 and data["healthy"], done.stdout + done.stderr
    closure = {c["soname"]: c["path"] for c in data["targets"][0]["closure"]}
    assert closure["libx32.so.1"] == str(library)
    assert any("resolved as /lib/ld-linux.so.2" in n for n in data["notes"])
    # without its folder on the path, the 32-bit loader finds nothing, and libdoctor says so
    listed = subprocess.run(["/lib/ld-linux.so.2", "--list", str(program)], env=loader_env(), capture_output=True,
                            text=True)
    assert "libx32.so.1 => not found" in listed.stdout or "libx32.so.1: cannot open" in listed.stderr
    done = run_scan_cli("--json", str(program), cwd=tmp_path, env={})
    data = json.loads(done.stdout)
    assert done.returncode == 1 and [p["soname"] for p in data["problems"] if p["kind"] == "missing"] == ["libx32.so.1"]


def test_a_probable_dlopen_from_a_string_is_a_warning_naming_the_library(elf: ElfFactory, dlprobe: Path,
                                                                         tmp_path: Path) -> None:
    body = '#include <dlfcn.h>\nint hook(void) { return dlopen("libnotthere.so.3", RTLD_NOW) != 0; }\n'
    lib = elf.lib("app/libhooks.so", body=body, extra=["-ldl"])
    done = run_scan_cli("--json", str(lib), cwd=tmp_path, env={})  # the finder is on by default
    assert done.returncode == 0, done.stdout + done.stderr  # a guess never decides the verdict
    (problem,) = json.loads(done.stdout)["problems"]
    assert (problem["kind"], problem["soname"], problem["severity"]) == ("missing-dlopen", "libnotthere.so.3",
                                                                        "warning")
    human = run_scan_cli("--dlopen-strings", str(lib), cwd=tmp_path, env={})
    assert "[!] 1 library needed by libhooks.so is not there: libnotthere.so.3" in human.stdout
    off = run_scan_cli("--json", "--no-dlopen-strings", str(lib), cwd=tmp_path, env={})
    assert json.loads(off.stdout)["problems"] == []
    # the same string in an object that cannot dlopen is just a string
    quiet = elf.lib("app/libnames.so", body='const char *name(void) { return "libnotthere.so.3"; }\n')
    assert json.loads(run_scan_cli("--json", str(quiet), cwd=tmp_path, env={}).stdout)["problems"] == []


def test_a_typo_in_any_path_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "notenv").mkdir()
    os.symlink("missing.so", tmp_path / "dangling.so")
    os.symlink("loop.so", tmp_path / "loop.so")
    cases = [
        (["scan", "/no/such.so"], "TARGET /no/such.so: no such file or directory"),
        (["scan", str(tmp_path / "dangling.so")], "a dangling symlink (-> missing.so)"),
        (["scan", str(tmp_path / "loop.so")], "a symlink loop"),
        (["scan", "--env", "/no/such/env"], "--env /no/such/env: no such file or directory"),
        (["scan", "--env", str(tmp_path / "notenv")], "not a Python environment"),
        (["scan", "--python", "/nonexistent"], "--python /nonexistent"),
        (["scan", "--look-in", "/no/such/folder"], "--look-in /no/such/folder"),
        (["fix", "--env", "/no/such/env"], "--env /no/such/env"),
        (["watch", "--once", "--env", "/no/such/env"], "--env /no/such/env"),
        (["watch", "--once", "--config", "/no/such.toml"], "--config /no/such.toml"),
        (["env", "--env", "/no/such/env"], "--env /no/such/env"),
        (["preflight", "--env", "/no/such/env", "--check-only", "--", "true"], "--env /no/such/env"),
    ]
    for args, expected in cases:
        environ = loader_env({"NO_COLOR": "1", "PYTHONPATH": str(REPO), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "c"),
                              "LIBDOCTOR_STATE_DIR": str(tmp_path / "s")})
        done = subprocess.run([sys.executable, "-m", "libdoctor", *args], cwd=tmp_path, env=environ,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (args, done.stdout, done.stderr)
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0] and "Traceback" not in done.stderr, (args, done.stderr)
        assert done.stdout == "", (args, done.stdout)


def test_with_no_env_active_every_env_with_a_framework_is_scanned(elf: ElfFactory, tmp_path: Path) -> None:
    from .test_frameworks import TRY_LOAD, cuda_config, dist_info, make_env

    prefix, site = make_env(tmp_path / "envs/bert", "3.6")
    elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=TRY_LOAD, extra=["-ldl"])
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7", TF_CUDA_LIB_VERSION="10.0")
    dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1"])
    make_env(tmp_path / "envs/plain")  # no framework: not listed
    home = tmp_path / "home"
    (home / ".conda").mkdir(parents=True)
    (home / ".conda/environments.txt").write_text(f"{prefix}\n{tmp_path / 'envs/plain'}\n")
    environ = {"HOME": str(home), "PYENV_ROOT": str(tmp_path / "nopyenv"), "PATH": "/usr/bin:/bin"}
    done = run_scan_cli(cwd=tmp_path, env=environ)
    assert done.returncode == 1, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    assert first == f"no environment is active: checking the 1 environment with a GPU framework ({prefix})"
    assert "tensorflow-gpu 1.14.0 cannot use the GPU" in done.stdout and "  driver: " in done.stdout
    data = json.loads(run_scan_cli("--json", cwd=tmp_path, env=environ).stdout)
    assert [e["environment"]["python_env"]["prefix"] for e in data["environments"]] == [str(prefix)]
    import jsonschema

    schema = json.loads(subprocess.run([sys.executable, "-m", "libdoctor", "schema", "scan"], capture_output=True,
                                       text=True, env=loader_env({"PYTHONPATH": str(REPO)})).stdout)
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    (home / ".conda/environments.txt").write_text(f"{tmp_path / 'envs/plain'}\n")
    fallback = run_scan_cli(cwd=tmp_path, env=environ)
    lines = fallback.stdout.splitlines()
    assert lines[1].startswith("  driver: ") and "checked the machine's CUDA installation" in lines[2], lines


def test_several_environments_open_with_a_checklist_and_quiet_is_one_short_line(elf: ElfFactory,
                                                                               tmp_path: Path) -> None:
    """Issue 22: with no env active and several found, the report opens with one marked line per area (flutter
    doctor's checklist), and ``-q`` is one line of at most 80 characters (node-problem-detector keeps 80)."""
    from .test_frameworks import TRY_LOAD, cuda_config, dist_info, make_env

    prefixes = []
    for name in ("bert-serving-with-a-long-environment-name", "bert-second"):
        prefix, site = make_env(tmp_path / "envs" / name, "3.6")
        elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=TRY_LOAD, extra=["-ldl"])
        cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7", TF_CUDA_LIB_VERSION="10.0")
        dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1"])
        prefixes.append(prefix)
    home = tmp_path / "home"
    (home / ".conda").mkdir(parents=True)
    (home / ".conda/environments.txt").write_text("".join(f"{p}\n" for p in prefixes))
    environ = {"HOME": str(home), "PYENV_ROOT": str(tmp_path / "nopyenv"), "PATH": "/usr/bin:/bin", "NO_COLOR": "1"}
    done = run_scan_cli(cwd=tmp_path, env=environ)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[1].startswith("[✗] GPU and driver: ") or lines[1].startswith("[x] GPU and driver: "), lines[:4]
    for line, prefix in zip(lines[2:4], prefixes):
        assert line.endswith(f"{prefix}: tensorflow-gpu 1.14.0: 1 cause of failure") or \
            f"{prefix}: tensorflow-gpu 1.14.0: " in line and "cause" in line, line
        assert line.startswith(("[✗] ", "[x] ")), line
    quiet = run_scan_cli("-q", cwd=tmp_path, env=environ)
    assert quiet.returncode == 1
    (line,) = quiet.stdout.splitlines()
    assert len(line) <= 80 and line.startswith("not healthy: 2/2 envs: "), line
