"""JAX, CuPy, ONNX Runtime, Paddle and MXNet plug-ins on fixture layouts copied from the real wheels
(jax-cuda12-plugin 0.10.2, cupy-cuda12x 14.2.0, onnxruntime-gpu 1.31.1), judged by real dlopen calls
made the way each framework makes them."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from libdoctor.gpu.cudatable import install_hint, wheel_name
from libdoctor.gpu.probe import load_failures
from libdoctor.report import to_json
from libdoctor.rules.hints import install_hints

from .conftest import ElfFactory, Judge, loader_env
from .test_frameworks import PYVER, TRY_LOAD, dist_info, make_env, real_dlopen, scan_env

JAX_PRELOADS = '''
def _load_nvidia_libraries():
  _load("cuda_runtime", ["libcudart.so.12"])
  _load("cu13", ["libcudart.so.13"])
  _load("cublas", ["libcublas.so.12", "libcublasLt.so.12"])
  _load("cu13", ["libcublas.so.13", "libcublasLt.so.13"])
  _load("nccl", ["libnccl.so.2"])
'''
JAX_RPATH = ":".join(f"$ORIGIN/../../nvidia/{f}/lib" for f in ("cuda_runtime", "cublas", "nccl"))


def jax_env(elf: ElfFactory, root: Path, wheels: bool) -> tuple[Path, Path, Path]:
    prefix, site = make_env(root)
    plugin = elf.lib(site / "jax_plugins/xla_cuda12/xla_cuda_plugin.so", body=TRY_LOAD, extra=["-ldl"],
                     rpath=JAX_RPATH)
    elf.lib(site / "jax_cuda12_plugin/_versions.so", body=TRY_LOAD, extra=["-ldl"], rpath=JAX_RPATH)
    (site / "jax_plugins/xla_cuda12/__init__.py").write_text(JAX_PRELOADS)
    dist_info(site, "jax", "0.10.2", [])
    dist_info(site, "jaxlib", "0.10.2", [])
    dist_info(site, "jax-cuda12-plugin", "0.10.2", ["jax_plugins/xla_cuda12/xla_cuda_plugin.so",
                                                    "jax_cuda12_plugin/_versions.so"],
              ('nvidia-cuda-runtime-cu12>=12.1.105; sys_platform == "linux" and extra == "with-cuda"',
               'nvidia-cudnn-cu12<10.0,>=9.8; sys_platform == "linux" and extra == "with-cuda"'))
    if wheels:
        for folder, soname in (("cuda_runtime", "libcudart.so.12"), ("cublas", "libcublasLt.so.12"),
                               ("cublas", "libcublas.so.12")):
            elf.lib(site / f"nvidia/{folder}/lib/{soname}", defines=[soname.split(".")[0] + "_x"])
    return prefix, site, plugin


def test_jax_without_its_cuda_wheels_names_every_library_and_its_extra(elf: ElfFactory, judge: Judge,
                                                                       tmp_path: Path) -> None:
    prefix, site, plugin = jax_env(elf, tmp_path / "jax", wheels=False)
    report = scan_env(judge, prefix)
    framework = report.frameworks[0]
    assert [f.name for f in report.discovery.frameworks] == ["jax"]  # jaxlib and the plugin are its parts
    assert {p.name for p in report.discovery.frameworks[0].parts} == {"jaxlib", "jax-cuda12-plugin"}
    assert (framework.info.cuda, framework.info.cudnn, framework.info.cuda_build) == ("12.1", "9.8", True)
    checks = {c.lib.soname: c.found for c in framework.checks if c.lib.family != "cuda driver"}
    assert set(checks) == {"libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12", "libnccl.so.2"}
    assert checks == real_dlopen(plugin, list(checks), {})  # the plugin's own dlopen through its RPATH
    assert set(framework.missing) == {"libcudart.so.12", "libcublas.so.12", "libcublasLt.so.12"}
    assert framework.gpu_usable is False and "JAX silently falls back to the CPU" in framework.because
    assert not report.healthy
    notes = [p for p in report.problems if p.kind == "optional"]
    assert [(p.soname, p.severity) for p in notes] == [("libnccl.so.2", "note")]
    missing = next(p for p in report.problems if p.soname == "libcudart.so.12")
    assert f"{prefix}/bin/python3 -m pip install 'jax[cuda12]==0.10.2'" in install_hints(missing, report)
    assert report.diagnosis.next_step == f"{prefix}/bin/python3 -m pip install 'jax[cuda12]==0.10.2'"


def test_jax_with_its_wheels_finds_them_where_jax_does(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    prefix, site, plugin = jax_env(elf, tmp_path / "jax", wheels=True)
    report = scan_env(judge, prefix)
    framework = report.frameworks[0]
    assert framework.missing == ()
    found = {c.lib.soname: c.path for c in framework.checks if c.found}
    assert found["libcudart.so.12"] == str(site / "nvidia/cuda_runtime/lib/libcudart.so.12")
    assert set(real_dlopen(plugin, ["libcudart.so.12", "libcublas.so.12"], {}).values()) == {True}
    assert [Path(p).name for p in framework.info.preloads] == ["libcudart.so.12", "libcublas.so.12",
                                                               "libcublasLt.so.12"]  # cu13 entries left out
    assert all(p.kind in ("driver", "optional") for p in report.problems)


CUPY_PATHFINDER_THEN_IMPORT = r"""
import ctypes, json, sys
for path in sys.argv[2:]:
    ctypes.CDLL(path, ctypes.RTLD_GLOBAL)
try:
    ctypes.CDLL(sys.argv[1])
    ok = True
except OSError:
    ok = False
maps = sorted({line.split()[-1] for line in open("/proc/self/maps") if "libcublas" in line})
print(json.dumps({"ok": ok, "maps": maps}))
"""


def cupy_env(elf: ElfFactory, root: Path) -> tuple[Path, Path, Path]:
    prefix, site = make_env(root)
    wheel = elf.lib(site / "nvidia/cublas/lib/libcublas.so.12", defines=["cublasCreate_v2"])
    elf.lib(site / "nvidia/cuda_nvrtc/lib/libnvrtc.so.12", defines=["nvrtcVersion"], runpath="$ORIGIN")
    elf.lib(site / "nvidia/cuda_nvrtc/lib/libnvrtc-builtins.so.12.9", defines=["builtins_x"])
    (site / "nvidia_cuda_nvrtc_cu12-12.9.86.dist-info").mkdir()
    tag = f"cpython-{PYVER.replace('.', '')}-x86_64-linux-gnu"
    ext = elf.lib(site / f"cupy_backends/cuda/libs/cublas.{tag}.so", calls=["cublasCreate_v2"], link=[wheel])
    cutensor = elf.lib(tmp_lib := root / "gone/libcutensor.so.2", defines=["cutensorCreate"])
    elf.lib(site / f"cupy_backends/cuda/libs/cutensor.{tag}.so", calls=["cutensorCreate"], link=[cutensor])
    shutil.rmtree(tmp_lib.parent)
    dist_info(site, "cupy-cuda12x", "14.2.0", [f"cupy_backends/cuda/libs/cublas.{tag}.so",
                                               f"cupy_backends/cuda/libs/cutensor.{tag}.so"],
              ('cuda-toolkit[cublas,cudart,cufft,curand,cusolver,cusparse,nvrtc]==12.*; extra == "ctk"',))
    return prefix, site, ext


def test_cupy_takes_the_wheels_first_and_optional_modules_are_notes(elf: ElfFactory, judge: Judge,
                                                                     tmp_path: Path) -> None:
    prefix, site, ext = cupy_env(elf, tmp_path / "cupy")
    system = elf.lib(tmp_path / "usr-local-cuda/lib64/libcublas.so.12", defines=["cublasCreate_v2"])
    llp = {"LD_LIBRARY_PATH": str(system.parent)}
    report = scan_env(judge, prefix, llp)
    framework = report.frameworks[0]
    assert (framework.info.cuda, framework.info.cuda_build) == ("12.x", True)
    assert not [p for p in report.problems if p.is_error and p.kind != "driver"]
    ext_report = next(t for t in report.targets if t.target.path == str(ext))
    predicted = next(r.path for r in ext_report.result.resolutions if r.name == "libcublas.so.12")
    assert predicted == str(site / "nvidia/cublas/lib/libcublas.so.12")  # not the LD_LIBRARY_PATH copy
    # the judge: cuda-pathfinder's load by full path, then the extension module, as CuPy does
    code = [sys.executable, "-c", CUPY_PATHFINDER_THEN_IMPORT, str(ext), *framework.info.preloads]
    done = json.loads(subprocess.run(code, env=loader_env(llp), capture_output=True, text=True).stdout)
    assert done == {"ok": True, "maps": [predicted]}
    notes = [p for p in report.problems if p.kind == "optional"]
    assert {(p.soname, p.feature, p.severity) for p in notes} == {
        ("libcutensor.so.2", "cuTENSOR (cupyx.cutensor)", "note")}
    builtins = next(c for c in framework.checks if c.lib.soname == "libnvrtc-builtins.so.12.9")
    assert builtins.found and builtins.lib.requester == str(site / "nvidia/cuda_nvrtc/lib/libnvrtc.so.12")
    causes = report.diagnosis.causes
    assert any(c.title.startswith("optional cuTENSOR (cupyx.cutensor) unavailable") and not c.error for c in causes)


def ort_env(elf: ElfFactory, root: Path, wheels: bool) -> tuple[Path, Path, Path]:
    prefix, site = make_env(root)
    capi = site / "onnxruntime/capi"
    cublaslt = elf.lib(root / "build/libcublasLt.so.13", defines=["cublasLtCreate"])
    provider = elf.lib(capi / "libonnxruntime_providers_cuda.so", calls=["cublasLtCreate"], link=[cublaslt])
    nvinfer = elf.lib(root / "build/libnvinfer.so.10", defines=["createInferBuilder"])
    elf.lib(capi / "libonnxruntime_providers_tensorrt.so", calls=["createInferBuilder"], link=[nvinfer])
    shutil.rmtree(root / "build")
    (capi / "build_and_package_info.py").write_text("package_name = 'onnxruntime-gpu'\n__version__ = '1.31.1'\n"
                                                   "cuda_version = '13.0'\n")
    if wheels:
        elf.lib(site / "nvidia/cu13/lib/libcublasLt.so.13", defines=["cublasLtCreate"])
        elf.lib(site / "nvidia/cudnn/lib/libcudnn.so.9", defines=["cudnnCreate"])
        for sub in ("graph", "ops", "cnn", "adv", "engines_precompiled", "engines_runtime_compiled", "heuristic"):
            elf.lib(site / f"nvidia/cudnn/lib/libcudnn_{sub}.so.9", defines=[f"cudnn_{sub}"])
        elf.lib(site / "nvidia/cu13/lib/libnvrtc.so.13", defines=["nvrtcVersion"])  # cuDNN 9 dlopens it
    dist_info(site, "onnxruntime-gpu", "1.31.1", ["onnxruntime/capi/libonnxruntime_providers_cuda.so",
                                                  "onnxruntime/capi/libonnxruntime_providers_tensorrt.so"],
              ('nvidia-cuda-runtime~=13.0; extra == "cuda"', 'nvidia-cudnn-cu13~=9.0; extra == "cudnn"'))
    return prefix, site, provider


def _loads(provider: Path, env: dict) -> bool:
    code = f"import ctypes\ntry:\n    ctypes.CDLL({str(provider)!r})\nexcept OSError:\n    raise SystemExit(1)"
    return subprocess.run([sys.executable, "-c", code], env=loader_env(env), capture_output=True).returncode == 0


def test_onnxruntime_with_wheels_installed_gets_the_reachability_hint(elf: ElfFactory, judge: Judge,
                                                                       tmp_path: Path) -> None:
    prefix, site, provider = ort_env(elf, tmp_path / "ort", wheels=True)
    report = scan_env(judge, prefix)
    framework = report.frameworks[0]
    assert (framework.info.cuda, framework.info.cudnn) == ("13.0", "9.0")
    assert set(framework.missing) == {"libcublasLt.so.13", "libcudnn.so.9"}  # cuDNN: dlopened on first use
    assert framework.gpu_usable is False
    assert not _loads(provider, {})  # default use: the loader does not look in the wheels
    problem = next(p for p in report.problems if p.soname == "libcublasLt.so.13" and p.kind == "missing")
    assert install_hints(problem, report) == []  # nothing to install: it is there
    assert report.diagnosis.next_step == f"libdoctor fix --apply --env {prefix}"  # journalled, undoable
    folder = f"{site}/nvidia/cu13/lib:{site}/nvidia/cudnn/lib"
    assert {a.folder for a in report.chosen} == set(folder.split(":"))  # fix puts exactly these on the path
    assert all(a.grade == "safe" for a in report.chosen)
    (cause,) = [c for c in report.diagnosis.causes if c.error and c.key.startswith("missing:")]
    assert cause.repaired and f"for this shell only: export LD_LIBRARY_PATH={folder}" in "\n".join(cause.details)
    assert _loads(provider, {"LD_LIBRARY_PATH": folder})  # the change works for the real loader
    assert not any(p.kind == "missing" for p in scan_env(judge, prefix, {"LD_LIBRARY_PATH": folder}).problems)
    tensorrt = [p for p in report.problems if p.soname == "libnvinfer.so.10"]
    assert [(p.kind, p.severity, p.feature) for p in tensorrt] == [("optional", "note", "TensorRT execution provider")]
    assert {p["kind"] for p in to_json(report)["problems"]} >= {"missing", "optional"}


def test_onnxruntime_without_wheels_gets_its_extra(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    prefix, _site, _provider = ort_env(elf, tmp_path / "ort", wheels=False)
    report = scan_env(judge, prefix)
    problem = next(p for p in report.problems if p.soname == "libcublasLt.so.13" and p.kind == "missing")
    assert install_hints(problem, report)[-1].endswith("pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'")
    assert (report.diagnosis.next_step or "").endswith("pip install 'onnxruntime-gpu[cuda,cudnn]==1.31.1'")


@pytest.mark.parametrize(("soname", "cuda", "hint"), [
    ("libcublas.so.13", None, "pip install nvidia-cublas"),
    ("libcublas.so.12", None, "pip install nvidia-cublas-cu12"),
    ("libcufft.so.12", None, "pip install nvidia-cufft"),
    ("libcudart.so.13", None, "pip install nvidia-cuda-runtime"),
    ("libnvJitLink.so.13", None, "pip install nvidia-nvjitlink"),
    ("libcusparse.so.12", 12, "pip install nvidia-cusparse-cu12"),
    ("libcusparse.so.12", 13, "pip install nvidia-cusparse"),
    ("libcudnn.so.9", 13, "pip install 'nvidia-cudnn-cu13==9.*'"),
    ("libcudnn.so.9", None, "pip install 'nvidia-cudnn-cu12==9.*'"),
    ("libcudnn.so.8", None, "pip install 'nvidia-cudnn-cu11==8.*'"),
    ("libnccl.so.2", 13, "pip install nvidia-nccl-cu13"),
    ("libcusparseLt.so.0", 13, "pip install nvidia-cusparselt-cu13"),
])
def test_cuda_13_wheels_are_named_as_published(soname: str, cuda: int | None, hint: str) -> None:
    assert install_hint(soname, cuda) == hint


def _pip_sources() -> tuple[list[str], list[str]]:
    """The index URLs and find-links folders pip is configured with (``pip config list``, then the default)."""
    done = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60)
    settings: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition("=")
        settings[key.split(".")[-1]] = value.strip("'\"")
    indexes = (settings.get("index-url") or "https://pypi.org/simple").split()
    indexes += settings.get("extra-index-url", "").split()
    return indexes, settings.get("find-links", "").split()


def _on_index(name: str, indexes: list[str], links: list[str]) -> Optional[bool]:
    """Does a source list ``name`` (its PEP 503 project page)?  None: no source could be asked."""
    import urllib.error
    import urllib.request

    normal = re.sub(r"[-_.]+", "-", name).lower()
    if any(re.sub(r"[-_.]+", "-", f).lower().startswith(normal + "-") for folder in links
           for f in (os.listdir(folder) if os.path.isdir(folder) else ())):
        return True
    asked = False
    for index in indexes:
        url = f"{index.rstrip('/')}/{normal}/"
        if url.startswith("file://"):
            if os.path.isdir(url[len("file://"):]):
                return True
            continue
        try:
            with urllib.request.urlopen(url, timeout=30) as page:
                asked = True
                if page.status == 200 and normal.encode() in page.read().lower().replace(b"_", b"-"):
                    return True
        except urllib.error.HTTPError as exc:
            asked = asked or exc.code == 404
        except (OSError, ValueError):
            continue
    return False if asked else None


@pytest.mark.network
def test_hint_packages_exist_on_the_index() -> None:
    """Every package name a CUDA 12 or 13 hint gives has a project page on the index pip uses (one page each,
    asked together: no wheel, no metadata download)."""
    from concurrent.futures import ThreadPoolExecutor

    names = sorted({wheel_name(f, m) or "" for f in ("cudart", "cublas", "cufft", "curand", "cusolver", "cusparse",
                                                     "nvrtc", "nvJitLink", "cupti", "cudnn", "nccl", "cusparseLt")
                    for m in (12, 13)} - {""})
    indexes, links = _pip_sources()
    with ThreadPoolExecutor(8) as pool:
        found = dict(zip(names, pool.map(lambda n: _on_index(n, indexes, links), names)))
    if all(v is None for v in found.values()):
        pytest.skip("the package index cannot be reached")
    assert [n for n, v in found.items() if not v] == []


def test_paddle_and_mxnet_are_known_from_their_files(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    prefix, site = make_env(tmp_path / "p")
    (site / "paddle/version").mkdir(parents=True)
    (site / "paddle/version/__init__.py").write_text(  # the layout of paddlepaddle_gpu-2.6.2's generated file
        "# THIS FILE IS GENERATED FROM PADDLEPADDLE SETUP.PY\n#\nfull_version     = '2.6.2'\n"
        "cuda_version     = '11.8'\ncudnn_version    = '8.6.0'\nxpu_version      = 'False'\n")
    elf.lib(site / "paddle/base/libpaddle.so", defines=["paddle_x"])
    dist_info(site, "paddlepaddle-gpu", "2.6.2", ["paddle/base/libpaddle.so"])
    elf.lib(site / "mxnet/libmxnet.so", defines=["mx_x"])
    dist_info(site, "mxnet-cu112", "1.9.1", ["mxnet/libmxnet.so"])
    report = scan_env(judge, prefix)
    infos = {f.info.name: f.info for f in report.frameworks}
    assert (infos["paddlepaddle-gpu"].cuda, infos["paddlepaddle-gpu"].cudnn) == ("11.8", "8.6.0")
    assert (infos["mxnet-cu112"].cuda, infos["mxnet-cu112"].cuda_build) == ("11.2", True)
    cpu, cpu_site = make_env(tmp_path / "cpu")
    (cpu_site / "paddle/version").mkdir(parents=True)
    (cpu_site / "paddle/version/__init__.py").write_text("cuda_version = 'False'\ncudnn_version = 'False'\n")
    dist_info(cpu_site, "paddlepaddle", "3.0.0", [])
    assert scan_env(judge, cpu).frameworks[0].gpu_usable is False


FAKE_JAX = '''
import logging
__version__ = "0.10.2"
logging.getLogger("jax._src.xla_bridge").warning(
    "Jax plugin configuration error: RuntimeError: Unable to load CUDA. Is it installed?")
class _Cpu:
    platform = "cpu"
def devices():
    return [_Cpu()]
'''


def test_a_probe_that_logged_a_load_failure_never_agrees(elf: ElfFactory, judge: Judge, tmp_path: Path) -> None:
    prefix, site, _plugin = jax_env(elf, tmp_path / "jax", wheels=False)
    (site / "jax").mkdir()
    (site / "jax/__init__.py").write_text(FAKE_JAX)
    report = scan_env(judge, prefix, probe=True)
    probe = report.probes[0]
    assert probe.imported and probe.gpu is False
    assert probe.logged and "Unable to load CUDA" in probe.logged[0]
    assert not probe.agrees


def test_load_failures_are_read_from_logs_and_stderr() -> None:
    data = {"logs": ["all fine"], "stderr": "\x1b[1;31mFailed to load library x.so with error: libcublasLt.so.13: "
                                            "cannot open shared object file\x1b[m\nother\n"}
    assert load_failures(data) == ("Failed to load library x.so with error: libcublasLt.so.13: cannot open shared "
                                   "object file",)
    assert load_failures({"logs": [], "stderr": ""}) == ()


@pytest.mark.parametrize(("path", "kind"), [  # files seen in the real wheels of issue 12's venvs
    ("/e/site-packages/torch/lib/libtorch_cuda.so", "torch"),
    ("/e/site-packages/tensorflow/libtensorflow_framework.so.2", "tensorflow"),
    ("/e/site-packages/jaxlib/_jax.so", "jax"),
    ("/e/site-packages/cupy/_core/core.cpython-311-x86_64-linux-gnu.so", "cupy"),
    ("/e/site-packages/onnxruntime/capi/onnxruntime_pybind11_state.cpython-311-x86_64-linux-gnu.so", "onnxruntime"),
    ("/e/site-packages/paddle/base/libpaddle.so", "paddle"),
    ("/e/site-packages/mxnet/libmxnet.so", "mxnet"),
    ("/usr/lib/x86_64-linux-gnu/libc.so.6", None),
    ("/e/site-packages/nvidia/cu13/lib/libcudart.so.13", None),
])
def test_each_plugin_names_the_file_that_marks_a_process_as_running_it(path: str, kind: str | None) -> None:
    from libdoctor.gpu.frameworks import PLUGINS

    assert [k for k, plugin in PLUGINS.items() if plugin.mapped.search(path)] == ([kind] if kind else [])
