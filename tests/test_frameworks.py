"""Framework knowledge on fixture environments that mimic the real layouts, judged by real dlopen calls."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libdoctor.gpu.driver import DriverInfo, driver_fit, read_driver
from libdoctor.gpu.frameworks import tf_sonames
from libdoctor.loader.symbols import probable_dlopen_names
from libdoctor.scan import run_scan

from .conftest import ElfFactory, Judge, loader_env

PYVER = f"{sys.version_info.major}.{sys.version_info.minor}"
TRY_LOAD = r"""
#include <dlfcn.h>
int try_load(const char *name) { return dlopen(name, RTLD_NOW | RTLD_LOCAL) != 0; }
"""


def make_env(root: Path, python_version: str = PYVER) -> tuple[Path, Path]:
    """A venv-like prefix whose python is the real interpreter (so a probe can run in it)."""
    (root / "bin").mkdir(parents=True)
    os.symlink(os.path.realpath(sys.executable), root / "bin" / "python3")
    (root / "pyvenv.cfg").write_text(f"home = {os.path.dirname(os.path.realpath(sys.executable))}\n")
    site = root / f"lib/python{python_version}/site-packages"
    site.mkdir(parents=True)
    return root, site


def dist_info(site: Path, name: str, version: str, files: list[str], requires: tuple[str, ...] = ()) -> None:
    folder = site / f"{name.replace('-', '_')}-{version}.dist-info"
    folder.mkdir()
    (folder / "RECORD").write_text("".join(f"{f},sha256=x,1\n" for f in files))
    (folder / "METADATA").write_text(f"Name: {name}\nVersion: {version}\n" +
                                     "".join(f"Requires-Dist: {r}\n" for r in requires))


def cuda_config(package: Path, **defines: str) -> None:
    header = package / "include/external/local_config_cuda/cuda/cuda/cuda_config.h"
    header.parent.mkdir(parents=True)
    header.write_text("".join(f'#define {k} "{v}"\n' for k, v in defines.items()))


def real_dlopen(framework: Path, names: list[str], env: dict) -> dict[str, bool]:
    """Ask the fixture's own try_load() (dlopen from inside the framework library) in a subprocess."""
    code = (f"import ctypes, json; lib = ctypes.CDLL({str(framework)!r}); "
            f"print(json.dumps({{n: bool(lib.try_load(n.encode())) for n in {names!r}}}))")
    done = subprocess.run([sys.executable, "-c", code], env=loader_env(env), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def scan_env(judge: Judge, prefix: Path, extra: dict | None = None, **kwargs):
    env = judge.environment(str(prefix), extra)
    return run_scan(prefix=str(prefix), env=env, **kwargs)


def expected_of(report) -> dict[str, bool]:
    return {c.lib.soname: c.found for c in report.frameworks[0].checks}


def test_tensorflow_1_14_dlopen_list_and_real_dlopen(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    prefix, site = make_env(tmp_path / "bert", "3.6")
    framework = elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=TRY_LOAD, extra=["-ldl"],
                        runpath="$ORIGIN")
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7", TF_CUDA_LIB_VERSION="10.0")
    dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1"])
    for family in ("cudart", "cublas", "cufft", "curand", "cusolver", "cusparse"):
        elf.lib(tmp_path / f"cuda-10.0/lib64/lib{family}.so.10.0", defines=[f"{family}_x"])
    llp = {"LD_LIBRARY_PATH": str(tmp_path / "cuda-10.0/lib64")}
    report = scan_env(judge, prefix, llp)
    info = report.frameworks[0].info
    assert (info.cuda, info.cudnn, info.python_version, info.built_from) == ("10.0", "7", "3.6", "cuda_config.h")
    expected = expected_of(report)
    assert set(expected) == {"libcudart.so.10.0", "libcublas.so.10.0", "libcufft.so.10.0", "libcurand.so.10.0",
                             "libcusolver.so.10.0", "libcusparse.so.10.0", "libcudnn.so.7", "libcupti.so.10.0",
                             "libcuda.so.1"}
    names = [n for n in expected if n != "libcuda.so.1"]
    assert {n: expected[n] for n in names} == real_dlopen(framework, names, llp)
    framework_report = report.frameworks[0]
    assert framework_report.gpu_usable is False and "libcudnn.so.7" in framework_report.because
    assert any(p.soname == "libcudnn.so.7" and p.kind == "missing-dlopen" for p in report.problems)
    cupti = [p for p in report.problems if p.soname == "libcupti.so.10.0"]  # optional: a note, never exit 1
    assert [(p.kind, p.severity, p.feature) for p in cupti] == [("optional", "note", "profiler (CUPTI)")]


def test_tensorflow_2_3_names_follow_the_rule(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    prefix, site = make_env(tmp_path / "tf23", "3.8")
    elf.lib(site / "tensorflow/libtensorflow_framework.so.2", body=TRY_LOAD, extra=["-ldl"])
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.1", TF_CUDNN_VERSION="7", TF_CUBLAS_VERSION="10",
                TF_CUSOLVER_VERSION="10", TF_CURAND_VERSION="10", TF_CUFFT_VERSION="10", TF_CUSPARSE_VERSION="10")
    dist_info(site, "tensorflow", "2.3.0", ["tensorflow/libtensorflow_framework.so.2"])
    report = scan_env(judge, prefix)
    assert set(expected_of(report)) == {"libcudart.so.10.1", "libcublas.so.10", "libcublasLt.so.10",
                                        "libcufft.so.10", "libcurand.so.10", "libcusolver.so.10",
                                        "libcusparse.so.10", "libcudnn.so.7", "libcupti.so.10.1", "libcuda.so.1"}
    assert report.frameworks[0].gpu_usable is False


def test_tensorflow_2_15_resolves_through_its_runpath(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    prefix, site = make_env(tmp_path / "tf215")
    names = {"cudart": "libcudart.so.12", "cublas": "libcublas.so.12", "cublasLt": "libcublasLt.so.12",
             "cufft": "libcufft.so.11", "cusolver": "libcusolver.so.11", "cusparse": "libcusparse.so.12",
             "cudnn": "libcudnn.so.8", "cupti": "libcupti.so.12", "nccl": "libnccl.so.2"}
    folders = {"cudart": "cuda_runtime", "cublas": "cublas", "cublasLt": "cublas", "cufft": "cufft",
               "cusolver": "cusolver", "cusparse": "cusparse", "cudnn": "cudnn", "cupti": "cuda_cupti",
               "nccl": "nccl"}
    for family, soname in names.items():
        elf.lib(site / f"nvidia/{folders[family]}/lib/{soname}", defines=[f"{family}_x"])
    runpath = ":".join(f"$ORIGIN/../nvidia/{f}/lib" for f in dict.fromkeys(folders.values()))
    framework = elf.lib(site / "tensorflow/libtensorflow_framework.so.2", body=TRY_LOAD, extra=["-ldl"],
                        runpath=runpath)
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="12.2", TF_CUDNN_VERSION="8", TF_CUDART_VERSION="12",
                TF_CUBLAS_VERSION="12", TF_CUFFT_VERSION="11", TF_CUSOLVER_VERSION="11", TF_CUSPARSE_VERSION="12",
                TF_CUPTI_VERSION="12", TF_NCCL_VERSION="2")
    dist_info(site, "tensorflow", "2.15.1", ["tensorflow/libtensorflow_framework.so.2"],
              ('nvidia-cudnn-cu12==8.9.4.25; extra == "and-cuda"',))
    report = scan_env(judge, prefix)
    expected = {c.lib.soname: c.found for c in report.frameworks[0].checks if c.lib.requester == str(framework)}
    assert set(expected) == set(names.values()) | {"libcuda.so.1"}  # no curand from 2.14 on
    libs = sorted(set(names.values()))
    assert {n: expected[n] for n in libs} == real_dlopen(framework, libs, {})
    assert all(expected[n] for n in libs)
    vias = {c.lib.soname: c.result.resolutions[-1].via for c in report.frameworks[0].checks if c.found}
    assert set(vias.values()) == {"runpath"}
    driver_present = report.driver is not None and report.driver.present
    if not driver_present:
        because = report.frameworks[0].because
        assert because.startswith("no NVIDIA driver: TensorFlow registers no GPU and runs on the CPU")
    os.unlink(site / "nvidia/cudnn/lib/libcudnn.so.8")
    report = scan_env(judge, prefix)
    missing = next(p for p in report.problems if p.soname == "libcudnn.so.8")
    assert missing.needed_by == str(framework)
    from libdoctor.rules.hints import install_hints
    python = report.discovery.environment.python
    assert install_hints(missing, report) == [f"{python} -m pip install 'nvidia-cudnn-cu12==8.9.4.25'",
                                              f"{python} -m pip install 'tensorflow[and-cuda]==2.15.1'"]


@pytest.fixture
def torch_env(elf: ElfFactory, tmp_path: Path) -> tuple[Path, Path]:
    prefix, site = make_env(tmp_path / "torchenv")
    cudart = elf.lib(site / "nvidia/cu13/lib/libcudart.so.13", defines=["cudaMalloc"],
                     version_script={"libcudart.so.13": ["cudaMalloc"]})
    cudnn = elf.lib(site / "nvidia/cudnn/lib/libcudnn.so.9", defines=["cudnnCreate"], rpath="$ORIGIN")
    for sub in ("graph", "ops", "cnn", "adv", "engines_precompiled", "engines_runtime_compiled", "heuristic"):
        elf.lib(site / f"nvidia/cudnn/lib/libcudnn_{sub}.so.9", defines=[f"cudnn_{sub}"])
    elf.lib(site / "nvidia/cu13/lib/libnvrtc.so.13", defines=["nvrtcVersion"])  # cuDNN 9's graph dlopens it
    rpath = "$ORIGIN/../../nvidia/cudnn/lib:$ORIGIN/../../nvidia/cu13/lib:$ORIGIN"
    elf.lib(site / "torch/lib/libtorch_global_deps.so", calls=["cudaMalloc"], link=[cudart], rpath=rpath)
    elf.lib(site / "torch/lib/libtorch_cuda.so", calls=["cudaMalloc", "cudnnCreate"], link=[cudart, cudnn],
            rpath=rpath, defines=["torch_cuda"])
    (site / "torch/version.py").write_text("__version__ = '2.14.1+cu130'\ncuda: Optional[str] = '13.0'\n")
    (site / "torch/__init__.py").write_text(
        "import ctypes, os\n_here = os.path.dirname(__file__)\n"
        "ctypes.CDLL(os.path.join(_here, 'lib', 'libtorch_global_deps.so'), ctypes.RTLD_GLOBAL)\n"
        "ctypes.CDLL(os.path.join(_here, '..', 'nvidia', 'cudnn', 'lib', 'libcudnn.so.9'))\n"
        "ctypes.CDLL(os.path.join(_here, '..', 'nvidia', 'cu13', 'lib', 'libcudart.so.13'))\n"
        "ctypes.CDLL(os.path.join(_here, 'lib', 'libtorch_cuda.so'))\n"
        "__version__ = '2.14.1+cu130'\n"
        "class cuda:\n    @staticmethod\n    def is_available():\n        return False\n")
    dist_info(site, "torch", "2.14.1", ["torch/lib/libtorch_cuda.so", "torch/lib/libtorch_global_deps.so",
                                        "torch/__init__.py"],
              ('nvidia-cudnn-cu13==9.24.0.43; platform_system == "Linux"',
               'cuda-toolkit[cublas,cudart]==13.0.3; platform_system == "Linux"'))
    return prefix, site


def test_torch_wheel_layout(torch_env: tuple[Path, Path], judge: Judge) -> None:
    prefix, site = torch_env
    report = scan_env(judge, prefix)
    framework = report.frameworks[0]
    assert (framework.info.cuda, framework.info.cudnn, framework.info.flavour) == ("13.0", "9", "+cu130")
    assert not [p for p in report.problems if p.kind != "driver"]
    static = {name: via for name, _path, via in framework.static_sources}
    assert static["libcudnn.so.9"] == "rpath" and static["libcudart.so.13"] == "rpath"
    assert all(c.found for c in framework.checks if c.lib.family == "cudnn")
    if not report.driver.present:
        assert framework.gpu_usable is False and "no NVIDIA driver" in framework.because
        assert any(p.kind == "driver" for p in report.problems)
    # the runtime probe agrees with the prediction
    report = scan_env(judge, prefix, probe=True)
    probe = report.probes[0]
    assert probe.imported and probe.gpu is False and probe.agrees, probe.findings
    assert os.path.realpath(site / "torch/lib/libtorch_cuda.so") not in probe.loaded  # not a CUDA library name
    assert os.path.realpath(site / "nvidia/cudnn/lib/libcudnn.so.9") in probe.loaded


def test_torch_without_cudnn_names_the_package(torch_env: tuple[Path, Path], judge: Judge) -> None:
    prefix, site = torch_env
    for path in (site / "nvidia/cudnn/lib").iterdir():
        path.unlink()
    report = scan_env(judge, prefix)
    missing = [p for p in report.problems if p.soname == "libcudnn.so.9"]
    assert missing and missing[0].needed_by == str(site / "torch/lib/libtorch_cuda.so")
    from libdoctor.rules.hints import install_hints
    assert install_hints(missing[0], report) == [
        f"{report.discovery.environment.python} -m pip install 'nvidia-cudnn-cu13==9.24.0.43'"]
    assert "libcudnn.so.9" in report.frameworks[0].missing


def test_framework_env_rule_and_python_fit(elf: ElfFactory, judge: Judge, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBDOCTOR_STATE_DIR", str(tmp_path / "state"))
    prefix, site = make_env(tmp_path / "both", "3.8")
    elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=TRY_LOAD, extra=["-ldl"])
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7")
    dist_info(site, "tensorflow", "1.14.0", [])
    dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1"])
    plan = run_scan((), prefix=str(prefix))
    titles = [f.title for f in plan.findings if f.id == "framework-env"]
    assert any("installed together" in t for t in titles)
    assert any("this environment runs Python 3.8" in t for t in titles)


def test_tf_sonames_rule_matches_the_verified_table() -> None:
    """cuda-facts 2.3: TF 2.4 (CUDA 11.0) and 2.5 (11.2) without per-library defines."""
    assert tf_sonames({}, "11.0", "8") == {
        "cudart": "libcudart.so.11.0", "cublas": "libcublas.so.11", "cublasLt": "libcublasLt.so.11",
        "cufft": "libcufft.so.10", "curand": "libcurand.so.10", "cusolver": "libcusolver.so.10",
        "cusparse": "libcusparse.so.11", "cupti": "libcupti.so.11.0", "cudnn": "libcudnn.so.8"}
    assert tf_sonames({}, "11.2", "8")["cusolver"] == "libcusolver.so.11"
    assert tf_sonames({}, "9.0", "7")["cublas"] == "libcublas.so.9.0"


def test_driver_facts_and_fit(elf: ElfFactory, tmp_path: Path) -> None:
    lib = elf.lib("drv/libcuda.so.580.65.06", soname="libcuda.so.1")
    os.symlink(lib.name, tmp_path / "drv/libcuda.so.1")
    root = tmp_path / "root"
    (root / "sys/module/nvidia").mkdir(parents=True)
    (root / "sys/module/nvidia/version").write_text("580.65.06\n")
    (root / "dev").mkdir()
    (root / "dev/nvidia0").write_text("")
    driver = read_driver(str(tmp_path / "drv/libcuda.so.1"), None, str(root))
    assert (driver.version, driver.libcuda_version, driver.present) == ("580.65.06", "580.65.06", True)
    assert driver.device_nodes == (str(root / "dev/nvidia0"),)
    assert driver_fit("13.0", driver).ok
    assert driver_fit("12.4", driver).ok
    old = DriverInfo("470.82.01", "/x/libcuda.so.1", "470.82.01", None, ())
    assert not driver_fit("12.2", old).ok and "525.60.13" not in driver_fit("12.2", old).reason
    compat = DriverInfo("450.80.02", "/x/libcuda.so.1", None, None, ())
    assert driver_fit("11.8", compat).ok and "minor-version compatibility" in driver_fit("11.8", compat).reason
    assert not driver_fit("11.0", DriverInfo(None, None, None, None, ())).ok


def test_dlopen_string_finder(elf: ElfFactory) -> None:
    body = r"""
#include <dlfcn.h>
const char *names[] = {"libcudnn.so.7", "libcublas.so.10.0", "not a library", "libfoo.so"};
int load(int i) { return dlopen(names[i], RTLD_NOW) != 0; }
"""
    lib = elf.lib("libcaller.so", body=body, extra=["-ldl"])
    assert {"libcudnn.so.7", "libcublas.so.10.0", "libfoo.so"} <= probable_dlopen_names(str(lib))
    assert "not a library" not in probable_dlopen_names(str(lib))


def test_requirement_markers_are_evaluated_for_this_host_and_the_envs_python(tmp_path: Path) -> None:
    """Issue 22: a framework's pins are read with their markers (``packaging``): a pin for another machine or
    another Python is never offered; the extra a pin belongs to (``and-cuda``) does not hide it."""
    import platform

    from libdoctor.gpu.frameworks.base import requirements

    other = "aarch64" if platform.machine() == "x86_64" else "x86_64"
    site = tmp_path / "lib/python3.6/site-packages"
    site.mkdir(parents=True)
    dist_info(site, "tensorflow", "2.12.0", [], requires=(
        f'nvidia-cublas-cu11 (==11.11.3.6); extra == "and-cuda" and platform_machine == "{platform.machine()}"',
        f'nvidia-cudnn-cu11 (==8.6.0.163); extra == "and-cuda" and platform_machine == "{other}"',
        'nvidia-cufft-cu11==10.9.0.58; python_version < "3.8"',
        'nvidia-curand-cu11==10.3.0.86; python_version >= "3.8"',
        "numpy>=1.22"))
    found = requirements(str(site / "tensorflow-2.12.0.dist-info"))
    assert [r.split("==")[0] for r in found] == ["nvidia-cublas-cu11", "nvidia-cufft-cu11"], found
