"""Miniature replicas of public failure reports, each layout proven by the real loader, each judged by libdoctor.

Every replica names its source thread.  The libraries are tiny gcc builds with the real sonames, real file
names and the real version functions (``cudnnGetVersion`` returning 8005, say); the proof runs in a
subprocess: the dlopen that fails, the undefined symbol, or the version function of the copy the framework's
own load reaches.  Then libdoctor must give the right verdict, name the right library as the cause and offer
a next step of the right kind: an order fix (``libdoctor fix --apply`` putting the copy that passes first),
an install, or a machine step.  Three healthy look-alikes must stay healthy.

The GPU host is replayed with ``LIBDOCTOR_SYSROOT``: a PCI device of vendor 0x10de, the kernel module's
version, ``/dev/nvidia*`` (or WSL's ``/dev/dxg``), and a ``libcuda.so.1`` of that driver on the search path.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

import pytest

from libdoctor.gpu.frameworks import tf_sonames
from libdoctor.scan import run_scan

from .conftest import ElfFactory, Judge, loader_env
from .test_frameworks import cuda_config, dist_info, make_env

OPEN_HERE = r"""
#include <dlfcn.h>
void *open_here(const char *name) { return dlopen(name, RTLD_NOW | RTLD_GLOBAL); }
const char *last_error(void) { return dlerror(); }
"""
CUDNN_VERSION = "size_t cudnnGetVersion(void) {{ return {number}; }}"
PROPERTY = "int {symbol}(int type, int *value) {{ static const int v[3] = {{{a}, {b}, {c}}}; *value = v[type]; " \
           "return 0; }}"


# -- the machine -------------------------------------------------------------------------------------------

def gpu_host(elf: ElfFactory, root: Path, driver: str = "535.104.05", wsl: bool = False) -> Path:
    """A GPU host's facts under ``root``; returns the folder holding its libcuda.so.1 (put it on the path)."""
    if wsl:
        (root / "dev").mkdir(parents=True)
        (root / "dev/dxg").write_text("")
        libs = root / "usr/lib/wsl/lib"
        elf.lib(libs / "libcuda.so.1", soname="libcuda.so.1", defines=["cuInit"])  # regular files, as on WSL
        elf.lib(libs / "libnvidia-ml.so.1", soname="libnvidia-ml.so.1", defines=["nvmlInit"])
        return libs
    device = root / "sys/bus/pci/devices/0000:01:00.0"
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x10de\n")
    (device / "class").write_text("0x030200\n")
    (root / "proc/driver/nvidia").mkdir(parents=True)
    (root / "proc/driver/nvidia/version").write_text(
        f"NVRM version: NVIDIA UNIX x86_64 Kernel Module  {driver}  Thu Aug 31 2023\n")
    (root / "dev").mkdir()
    for node in ("nvidia0", "nvidiactl"):
        (root / "dev" / node).write_text("")
    libs = root / "usr/lib/x86_64-linux-gnu"
    elf.lib(libs / f"libcuda.so.{driver}", soname="libcuda.so.1", defines=["cuInit"])
    os.symlink(f"libcuda.so.{driver}", libs / "libcuda.so.1")
    elf.lib(libs / f"libnvidia-ml.so.{driver}", soname="libnvidia-ml.so.1", defines=["nvmlInit"])
    os.symlink(f"libnvidia-ml.so.{driver}", libs / "libnvidia-ml.so.1")
    return libs


@pytest.fixture
def host(elf: ElfFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "host"
    libs = gpu_host(elf, root)
    monkeypatch.setenv("LIBDOCTOR_SYSROOT", str(root))
    return libs


def lib(elf: ElfFactory, folder: Path, soname: str, real: Optional[str] = None, body: str = "",
        defines: tuple[str, ...] = (), **kwargs: object) -> Path:
    """``folder/real`` with SONAME ``soname`` and the ``soname`` link to it, as a package installs them."""
    path = elf.lib(folder / (real or soname), soname=soname, body=body, defines=defines or (f"f_{soname}",),
                   **kwargs)
    if real and real != soname:
        os.symlink(real, folder / soname)
    return path


# -- proofs by the real loader ---------------------------------------------------------------------------

def llp(folders: list[Path]) -> dict[str, str]:
    """LD_LIBRARY_PATH made of ``folders``, in order."""
    return {"LD_LIBRARY_PATH": ":".join(str(f) for f in folders)}


def run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=loader_env(env), capture_output=True, text=True,
                          timeout=60)


def version_from(requester: Path, name: str, env: dict[str, str], call: str = "cudnnGetVersion") -> object:
    """What ``dlopen(name)`` from inside ``requester`` reaches, asked through its version function."""
    code = (f"import ctypes; r = ctypes.CDLL({str(requester)!r}); r.open_here.restype = ctypes.c_void_p; "
            f"r.last_error.restype = ctypes.c_char_p; h = r.open_here({name.encode()!r})\n"
            "if not h: print('ERROR', r.last_error().decode()); raise SystemExit(0)\n"
            f"lib = ctypes.CDLL({name!r}, handle=h)\n"
            f"if {call!r} == 'cudnnGetVersion': lib.cudnnGetVersion.restype = ctypes.c_size_t; "
            "print(lib.cudnnGetVersion())\n"
            "else:\n v = ctypes.c_int(); out = []\n"
            f" for t in range(3): getattr(lib, {call!r})(t, ctypes.byref(v)); out.append(v.value)\n"
            " print('.'.join(map(str, out)))")
    done = run_python(code, env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def imported(prefix: Path, code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    site = next(prefix.glob("lib/python3*/site-packages"))
    return run_python(f"import sys; sys.path.insert(0, {str(site)!r})\n" + code, env)


# -- judging ---------------------------------------------------------------------------------------------

def scan(judge: Judge, prefix: Path, path: list[Path], look_in: tuple[Path, ...] = (), **kwargs: object):
    llp = {"LD_LIBRARY_PATH": ":".join(str(p) for p in path)} if path else {}
    env = judge.environment(str(prefix), llp)
    return run_scan(prefix=str(prefix), env=env, look_in=tuple(str(f) for f in look_in), **kwargs)


def cause_for(report, soname: str):  # noqa: ANN001, ANN201
    causes = [c for c in report.diagnosis.causes if c.error and soname in c.sonames]
    assert causes, [(c.title, c.sonames) for c in report.diagnosis.causes]
    return causes[0]


def step_kind(report) -> str:  # noqa: ANN001
    """order: libdoctor's change puts another copy (or folder) first; install; machine; none."""
    step = report.diagnosis.next_step or ""
    if step.startswith("libdoctor fix --apply"):
        kinds = {a.kind for a in report.diagnosis.chosen}
        return "order" if kinds <= {"search-path", "symlink"} else "change"
    if "pip install" in step or "conda install" in step:
        return "install"
    if "GPU" in step or "driver" in step or "--gpus" in step:
        return "machine"
    return step or "none"


def errors(report) -> list[str]:  # noqa: ANN001
    return [c.title for c in report.diagnosis.causes if c.error]


# -- TensorFlow ------------------------------------------------------------------------------------------

def tf_install(elf: ElfFactory, root: Path, version: str, cuda: str, requires: tuple[str, ...] = ()
               ) -> tuple[Path, Path, dict[str, str]]:
    prefix, site = make_env(root / f"tf{version}")
    framework = elf.lib(site / "tensorflow/libtensorflow_framework.so.2", body=OPEN_HERE, extra=["-ldl"])
    cuda_config(site / "tensorflow", TF_CUDA_VERSION=cuda, TF_CUDNN_VERSION="8")
    dist_info(site, "tensorflow", version, ["tensorflow/libtensorflow_framework.so.2"], requires)
    return prefix, framework, tf_sonames({"TF_CUDA_VERSION": cuda}, cuda, "8")


def cuda_toolkit(elf: ElfFactory, folder: Path, names: dict[str, str], skip: tuple[str, ...] = (),
                 nvrtc: str = "11.8.89") -> None:
    """The toolkit's libraries a framework names, and NVRTC with its development link and builtins."""
    for family, soname in names.items():
        if family not in skip and family != "cudnn":
            lib(elf, folder, soname)
    major, minor = nvrtc.split(".")[:2]
    soname = f"libnvrtc.so.{major}.2" if major == "11" else f"libnvrtc.so.{major}"
    lib(elf, folder, soname, f"libnvrtc.so.{nvrtc}")
    os.symlink(soname, folder / "libnvrtc.so")
    lib(elf, folder, f"libnvrtc-builtins.so.{major}.{minor}")


def cudnn8(elf: ElfFactory, folder: Path, version: str, real: bool = True) -> Path:
    """cuDNN 8 as its archive installs it: libcudnn.so.8 (version function and all) and its six sub-libraries."""
    numbers = [int(p) for p in version.split(".")]
    path = lib(elf, folder, "libcudnn.so.8", f"libcudnn.so.{version}" if real else None,
               CUDNN_VERSION.format(number=numbers[0] * 1000 + numbers[1] * 100 + numbers[2]))
    for sub in ("ops_infer", "ops_train", "cnn_infer", "cnn_train", "adv_infer", "adv_train"):
        lib(elf, folder, f"libcudnn_{sub}.so.8", f"libcudnn_{sub}.so.{version}" if real else None)
    return path


def tf_machine(elf: ElfFactory, tmp_path: Path, version: str = "2.12.0", cudnn: str = "8.6.0"
               ) -> tuple[Path, Path, Path]:
    """TensorFlow ``version`` (CUDA 11.8) and a CUDA 11.8 toolkit with cuDNN ``cudnn`` in /usr/local/cuda-11.8."""
    prefix, framework, names = tf_install(elf, tmp_path, version, "11.8")
    cuda = tmp_path / "usr/local/cuda-11.8/lib64"
    cuda_toolkit(elf, cuda, names)
    cudnn8(elf, cuda, cudnn)
    return prefix, framework, cuda


def test_tf_cudnn_minor_older_on_ld_library_path(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """tensorflow/tensorflow#60750 (TF 2.12: "Loaded runtime CuDNN library: 8.1.1 but source was compiled with:
    8.6.0"; also #58986): an older cuDNN first on LD_LIBRARY_PATH, a cuDNN 8.6 elsewhere on the machine."""
    prefix, framework, cuda = tf_machine(elf, tmp_path, "2.12.0", "8.5.0")
    newer = tmp_path / "opt/cudnn-8.6/lib64"
    cudnn8(elf, newer, "8.6.0")
    path = [cuda, host]
    assert version_from(framework, "libcudnn.so.8", llp(path)) == "8500"
    report = scan(judge, prefix, path, look_in=(newer,))
    cause = cause_for(report, "libcudnn.so.8")
    assert errors(report) == [cause.title] and report.frameworks[0].gpu_usable is False
    assert "cuDNN 8.5.0" in cause.title and "8.6" in cause.title and str(newer / "libcudnn.so.8") in cause.title
    assert "LD_LIBRARY_PATH" in cause.title
    assert step_kind(report) == "order"
    assert [a.folder for a in report.diagnosis.chosen] == [str(newer)]
    # the change makes the real loader reach the copy that passes
    assert version_from(framework, "libcudnn.so.8", llp([newer] + path)) == "8600"


def test_tf_cudnn_minor_older_and_no_newer_copy(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """tensorflow/tensorflow#39842 ("Loaded runtime CuDNN library: 7.5.0 but source was compiled with: 7.6.5") and
    Kaggle/docker-python#1435: the same class on TF 2.13 (cuDNN 8.6) with only cuDNN 8.1 on the machine: an install
    is the step."""
    prefix, framework, cuda = tf_machine(elf, tmp_path, "2.13.0", "8.1.0")
    path = [cuda, host]
    assert version_from(framework, "libcudnn.so.8", llp(path)) == "8100"
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libcudnn.so.8")
    assert errors(report) == [cause.title]
    assert "cuDNN 8.1.0" in cause.title and "no newer copy" in cause.title
    assert step_kind(report) == "install"


def test_conda_activation_puts_an_old_cudnn_first(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """tensorflow/docs#2251 (and tensorflow/tensorflow#60750): the env's activate.d puts $CONDA_PREFIX/lib, with
    conda's cuDNN 8.1.0 (its version only in conda-meta), before the nvidia-cudnn-cu11 8.6 wheel TF 2.12 needs."""
    prefix, framework, names = tf_install(elf, tmp_path, "2.12.0", "11.8",
                                          ('nvidia-cudnn-cu11==8.6.0.163; extra == "and-cuda"',))
    site = next(prefix.glob("lib/python3*/site-packages"))
    (prefix / "conda-meta").mkdir()
    conda_lib = prefix / "lib"
    cuda_toolkit(elf, conda_lib, names)
    cudnn8(elf, conda_lib, "8.1.0", real=False)
    (prefix / "conda-meta/cudnn-8.1.0.77-h90431f1_0.json").write_text(json.dumps(
        {"name": "cudnn", "version": "8.1.0.77", "files": ["lib/libcudnn.so.8"]}))
    wheel = site / "nvidia/cudnn/lib"
    cudnn8(elf, wheel, "8.6.0", real=False)
    dist_info(site, "nvidia-cudnn-cu11", "8.6.0.163", ["nvidia/cudnn/lib/libcudnn.so.8"])
    activate = prefix / "etc/conda/activate.d"
    activate.mkdir(parents=True)
    (activate / "env_vars.sh").write_text(
        f'export LD_LIBRARY_PATH=$LD_LIBRARY_PATH:{conda_lib}/:{wheel}\n')
    path = [host, conda_lib, wheel]
    assert version_from(framework, "libcudnn.so.8", llp(path)) == "8100"
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libcudnn.so.8")
    assert errors(report) == [cause.title]
    assert "cuDNN 8.1.0" in cause.title and "nvidia-cudnn-cu11==8.6.0.163" in cause.title
    assert "conda-meta/cudnn-8.1.0.77-h90431f1_0.json" in cause.title
    assert step_kind(report) == "order"


def test_tf_newer_cudnn_minor_first_is_healthy(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """Healthy look-alike: a newer cuDNN minor (8.9.7) in front of the 8.6 TF 2.12 was built with."""
    prefix, framework, cuda = tf_machine(elf, tmp_path, "2.12.0", "8.9.7")
    path = [cuda, host]
    assert version_from(framework, "libcudnn.so.8", llp(path)) == "8907"
    report = scan(judge, prefix, path)
    assert report.healthy, errors(report)
    assert report.frameworks[0].gpu_usable is True



# -- PyTorch ---------------------------------------------------------------------------------------------

TORCH_INIT = """import ctypes, glob, os
_here = os.path.dirname(__file__)
_site = os.path.dirname(_here)
def _preload(folder, pattern):
    for path in sorted(glob.glob(os.path.join(_site, 'nvidia', folder, 'lib', pattern))):
        ctypes.CDLL(path)
        return
ctypes.CDLL(os.path.join(_here, 'lib', 'libtorch_global_deps.so'), ctypes.RTLD_GLOBAL)
{after}
ctypes.CDLL(os.path.join(_here, 'lib', 'libtorch_cuda.so'))
"""


def record_files(site: Path, package: str) -> None:
    """The package's RECORD lists every file under its folder (as pip writes it)."""
    (record,) = site.glob(f"{package}-*.dist-info/RECORD")
    files = sorted(str(p.relative_to(site)) for p in (site / package).rglob("*") if p.is_file())
    record.write_text("".join(f"{f},sha256=x,1\n" for f in files))


def torch_install(elf: ElfFactory, root: Path, version: str, cuda: str, requires: tuple[str, ...] = (),
                  after: str = "") -> tuple[Path, Path]:
    prefix, site = make_env(root / f"torch{version}")
    (site / "torch").mkdir()
    (site / "torch/version.py").write_text(f"__version__ = '{version}'\ncuda: Optional[str] = '{cuda}'\n")
    (site / "torch/__init__.py").write_text(TORCH_INIT.format(after=after))
    dist_info(site, "torch", version.split("+")[0], ["torch/__init__.py"], requires)
    return prefix, site


NVJITLINK_12_4 = {"libnvJitLink.so.12": ["__nvJitLinkComplete_12_1", "__nvJitLinkComplete_12_4"]}
NVJITLINK_12_1 = {"libnvJitLink.so.12": ["__nvJitLinkComplete_12_1"]}


def torch_cu124(elf: ElfFactory, tmp_path: Path, version: str, after: str = "") -> tuple[Path, Path, Path]:
    """torch with the cu124 wheels: cuSPARSE 12.4 (RUNPATH $ORIGIN) imports __nvJitLinkComplete_12_4; CUDA 12.1's
    older nvJitLink is first on LD_LIBRARY_PATH."""
    prefix, site = torch_install(elf, tmp_path, version, "12.4", ("nvidia-cusparse-cu12==12.3.1.170",
                                                                  "nvidia-nvjitlink-cu12==12.4.127"), after)
    nvidia = site / "nvidia"
    cudart = lib(elf, nvidia / "cuda_runtime/lib", "libcudart.so.12", defines=("cudaMalloc",))
    jit = lib(elf, nvidia / "nvjitlink/lib", "libnvJitLink.so.12", defines=tuple(NVJITLINK_12_4["libnvJitLink.so.12"]),
              version_script=NVJITLINK_12_4)
    cusparse = lib(elf, nvidia / "cusparse/lib", "libcusparse.so.12", defines=("cusparseCreate",),
                   calls=["__nvJitLinkComplete_12_4"], link=[jit], runpath="$ORIGIN")
    rpath = "$ORIGIN/../../nvidia/cuda_runtime/lib:$ORIGIN/../../nvidia/cusparse/lib:$ORIGIN/../../nvidia/nvjitlink/lib"
    elf.lib(site / "torch/lib/libtorch_global_deps.so", calls=["cudaMalloc"], link=[cudart], rpath=rpath)
    elf.lib(site / "torch/lib/libtorch_cuda.so", calls=["cusparseCreate", "cudaMalloc"], link=[cusparse, cudart],
            rpath=rpath)
    record_files(site, "torch")
    old = tmp_path / "usr/local/cuda-12.1/lib64"
    lib(elf, old, "libnvJitLink.so.12", "libnvJitLink.so.12.1.105", defines=("__nvJitLinkComplete_12_1",),
        version_script=NVJITLINK_12_1)
    return prefix, site, old


def test_torch_2_5_gets_an_old_nvjitlink_from_ld_library_path(elf: ElfFactory, judge: Judge, host: Path,
                                                            tmp_path: Path) -> None:
    """pytorch/pytorch#140797 (and #134929, #131312): "libcusparse.so.12: undefined symbol: __nvJitLinkComplete_12_4,
    version libnvJitLink.so.12" with CUDA 12.1 on LD_LIBRARY_PATH; torch 2.5 preloads nothing after its global deps."""
    prefix, site, old = torch_cu124(elf, tmp_path, "2.5.1+cu124")
    path = [old, host]
    done = imported(prefix, "import torch", llp(path))
    assert done.returncode != 0 and "undefined symbol: __nvJitLinkComplete_12_4" in done.stderr
    report = scan(judge, prefix, path)
    assert not report.healthy
    cause = next(c for c in report.diagnosis.causes if c.error)
    assert "__nvJitLinkComplete_12_4" in cause.title and "libnvJitLink.so.12" in cause.title, cause.title
    assert step_kind(report) == "order", report.diagnosis.next_step
    assert report.frameworks[0].info.sequence.startswith("torch 2.0-2.5")


def test_torch_2_6_preloads_its_nvjitlink_and_is_healthy(elf: ElfFactory, judge: Judge, host: Path,
                                                         tmp_path: Path) -> None:
    """Healthy look-alike: the same machine with torch 2.6, which preloads the wheel's nvJitLink after its global deps
    when cudart comes from a wheel (pytorch#141063): the old copy never wins."""
    after = ("if 'nvidia/cuda_runtime/lib/libcudart.so' in open('/proc/self/maps').read():\n"
             "    _preload('nvjitlink', 'libnvJitLink.so.*[0-9]')")
    prefix, site, old = torch_cu124(elf, tmp_path, "2.6.0+cu124", after)
    path = [old, host]
    done = imported(prefix, "import torch", llp(path))
    assert done.returncode == 0, done.stderr
    report = scan(judge, prefix, path)
    assert report.healthy, errors(report)
    assert str(site / "nvidia/nvjitlink/lib/libnvJitLink.so.12") in report.frameworks[0].info.preloads


def test_torch_1_12_bundled_cudnn_shadowed_by_ld_library_path(elf: ElfFactory, judge: Judge, host: Path,
                                                              tmp_path: Path) -> None:
    """pytorch/pytorch#80637: torch 1.12 cu113 wheels (RUNPATH) with LD_LIBRARY_PATH=/public/apps/cudnn/v8.0.3...:
    "cuDNN version incompatibility: PyTorch was compiled against (8, 3, 2) but linked against (8, 0, 3)"."""
    prefix, site = torch_install(elf, tmp_path, "1.12.0+cu113", "11.3")
    bundled = site / "torch/lib"
    cudnn = cudnn8(elf, bundled, "8.3.2", real=False)
    cudart = lib(elf, bundled, "libcudart.so.11.0", defines=("cudaMalloc",))
    elf.lib(bundled / "libtorch_global_deps.so", calls=["cudaMalloc"], link=[cudart], runpath="$ORIGIN")
    elf.lib(bundled / "libtorch_cuda.so", calls=["cudaMalloc", "cudnnGetVersion"], link=[cudart, cudnn],
            runpath="$ORIGIN")
    record_files(site, "torch")
    old = tmp_path / "public/apps/cudnn/v8.0.3.33-cuda.11.0/cuda/lib64"
    cudnn8(elf, old, "8.0.3")
    lib(elf, old, "libnvrtc.so.11.2", "libnvrtc.so.11.0.221")
    os.symlink("libnvrtc.so.11.2", old / "libnvrtc.so")
    path = [old, host]
    done = imported(prefix, "import torch, ctypes; c = ctypes.CDLL('libcudnn.so.8'); "
                            "c.cudnnGetVersion.restype = ctypes.c_size_t; print(c.cudnnGetVersion())",
                    llp(path))
    assert done.returncode == 0 and done.stdout.strip() == "8003", done.stderr
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libcudnn.so.8")
    assert "cuDNN 8.0.3" in cause.title and "8.3" in cause.title and str(bundled) in cause.title
    assert step_kind(report) == "order"
    assert report.frameworks[0].info.sequence.startswith("torch before 1.13")
    # --probe asks the copy that wins for its own version (cudnnGetVersion) and confirms the verdict
    probed = scan(judge, prefix, path, probe=True).probes[0]
    assert [(os.path.basename(p), v) for p, v in probed.versions] == [("libcudnn.so.8.0.3", "8.0.3")]
    assert any("libcudnn.so.8.0.3 says 8.0.3: 8.0.3 is older than the 8.3" in f for f in probed.findings)


def test_cudnn_8_dlopens_the_unversioned_nvrtc(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """AUTOMATIC1111/stable-diffusion-webui#10230 and facefusion/facefusion-docker#9: "Could not load library
    libcudnn_cnn_infer.so.8. Error: libnvrtc.so: cannot open shared object file": torch 1.13's cuDNN 8 wheel, and
    only a hash-named NVRTC in torch/lib."""
    prefix, site = torch_install(elf, tmp_path, "1.13.1+cu117", "11.7", ("nvidia-cudnn-cu11==8.5.0.96",))
    wheel = site / "nvidia/cudnn/lib"
    cudnn = cudnn8(elf, wheel, "8.5.0", real=False)
    dist_info(site, "nvidia-cudnn-cu11", "8.5.0.96", ["nvidia/cudnn/lib/libcudnn.so.8"])
    cnn = wheel / "libcudnn_cnn_infer.so.8"
    cnn.unlink()
    elf.lib(cnn, soname="libcudnn_cnn_infer.so.8", body=OPEN_HERE, extra=["-ldl"], runpath="$ORIGIN")
    bundled = site / "torch/lib"
    lib(elf, bundled, "libnvrtc-672ee683.so.11.2")
    cudart = lib(elf, bundled, "libcudart.so.11.0", defines=("cudaMalloc",))
    rpath = "$ORIGIN/../../nvidia/cudnn/lib:$ORIGIN"
    elf.lib(bundled / "libtorch_global_deps.so", calls=["cudaMalloc"], link=[cudart], rpath=rpath)
    elf.lib(bundled / "libtorch_cuda.so", calls=["cudaMalloc", "cudnnGetVersion"], link=[cudart, cudnn], rpath=rpath)
    record_files(site, "torch")
    path = [host]
    assert str(version_from(cnn, "libnvrtc.so", {"LD_LIBRARY_PATH": str(host)})).startswith(
        "ERROR libnvrtc.so: cannot open shared object file")
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libnvrtc.so")
    assert "torch 1.13.1+cu117" in cause.title
    assert step_kind(report) in ("install", "order"), report.diagnosis.next_step


# -- JAX -------------------------------------------------------------------------------------------------

def test_jax_cublas_wheel_older_than_the_plugin_requires(elf: ElfFactory, judge: Judge, host: Path,
                                                         tmp_path: Path) -> None:
    """jax-ml/jax#19121 and #18027: "Found cuBLAS version 120103, but JAX was built against version 120205": the
    plugin preloads the nvidia-cublas-cu12 wheel, and that wheel is 12.1.3.1."""
    prefix, site = make_env(tmp_path / "jax")
    plugin = site / "jax_plugins/xla_cuda12"
    plugin.mkdir(parents=True)
    (plugin / "__init__.py").write_text("_load('cublas', ['libcublasLt.so.12', 'libcublas.so.12'])\n")
    elf.lib(plugin / "xla_cuda_plugin.so", body=OPEN_HERE, extra=["-ldl"])
    elf.lib(site / "jax_cuda12_plugin/_versions.so", body=OPEN_HERE, extra=["-ldl"],
            rpath="$ORIGIN/../nvidia/cublas/lib")
    dist_info(site, "jax", "0.4.23", ["jax/__init__.py"])
    (site / "jax").mkdir()
    (site / "jax/__init__.py").write_text("")
    dist_info(site, "jax-cuda12-plugin", "0.4.23", ["jax_plugins/xla_cuda12/__init__.py"],
              ('nvidia-cublas-cu12>=12.2.5.6; extra == "with_cuda"',))
    wheel = site / "nvidia/cublas/lib"
    lib(elf, wheel, "libcublasLt.so.12")
    lib(elf, wheel, "libcublas.so.12", body=PROPERTY.format(symbol="cublasGetProperty", a=12, b=1, c=3))
    dist_info(site, "nvidia-cublas-cu12", "12.1.3.1", ["nvidia/cublas/lib/libcublas.so.12"])
    path = [host]
    versions = site / "jax_cuda12_plugin/_versions.so"
    assert version_from(versions, "libcublas.so.12", {"LD_LIBRARY_PATH": str(host)}, "cublasGetProperty") == "12.1.3"
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libcublas.so.12")
    assert "cuBLAS 12.1.3.1" in cause.title and "nvidia-cublas-cu12>=12.2.5.6" in cause.title
    assert step_kind(report) == "install"


# -- ONNX Runtime, CuPy, Paddle --------------------------------------------------------------------------

def test_onnxruntime_cannot_see_the_cudnn_wheel(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """microsoft/onnxruntime#25609: "Failed to load library libonnxruntime_providers_cuda.so with error:
    libcudnn.so.9: cannot open shared object file" although nvidia-cudnn-cu12 is installed."""
    prefix, site = make_env(tmp_path / "ort")
    capi = site / "onnxruntime/capi"
    capi.mkdir(parents=True)
    (capi / "build_and_package_info.py").write_text("package_name = 'onnxruntime-gpu'\ncuda_version = '12.2'\n")
    wheel = site / "nvidia/cudnn/lib"
    cudnn = lib(elf, wheel, "libcudnn.so.9", defines=("cudnnCreate",))
    provider = elf.lib(capi / "libonnxruntime_providers_cuda.so", calls=["cudnnCreate"], link=[cudnn])
    dist_info(site, "onnxruntime-gpu", "1.22.0", ["onnxruntime/capi/libonnxruntime_providers_cuda.so"],
              ('nvidia-cudnn-cu12~=9.0; extra == "cudnn"',))
    dist_info(site, "nvidia-cudnn-cu12", "9.1.0.70", ["nvidia/cudnn/lib/libcudnn.so.9"])
    done = run_python(f"import ctypes; ctypes.CDLL({str(provider)!r})", {"LD_LIBRARY_PATH": str(host)})
    assert "libcudnn.so.9: cannot open shared object file" in done.stderr
    report = scan(judge, prefix, [host])
    cause = cause_for(report, "libcudnn.so.9")
    assert "installed but off its search path" in cause.title
    assert any("preload_dlls" in line for line in cause.details)
    assert step_kind(report) in ("order", "install"), report.diagnosis.next_step


def test_cupy_finds_no_nvrtc(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """cupy/cupy#8317 and #9318: "CuPy failed to load libnvrtc.so.12: ... cannot open shared object file"
    (cupy-cuda12x without a CUDA toolkit or the NVRTC wheel)."""
    prefix, site = make_env(tmp_path / "cupy")
    core = elf.lib(site / "cupy/_core/core.so", body=OPEN_HERE, extra=["-ldl"])
    dist_info(site, "cupy-cuda12x", "13.0.0", ["cupy/_core/core.so"])
    assert str(version_from(core, "libnvrtc.so.12", {"LD_LIBRARY_PATH": str(host)})).startswith("ERROR")
    report = scan(judge, prefix, [host])
    cause = cause_for(report, "libnvrtc.so.12")
    assert "cupy-cuda12x 13.0.0" in cause.title
    assert step_kind(report) == "install" and "cupy-cuda12x[ctk]" in (report.diagnosis.next_step or "")


def test_paddle_asks_for_the_unversioned_cudnn(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """PaddlePaddle/Paddle#59011 and #35608: "Cannot load cudnn shared library. Cannot invoke method
    cudnnGetVersion": Paddle 2.5 dlopens libcudnn.so, and the machine has only libcudnn.so.8."""
    prefix, site = make_env(tmp_path / "paddle")
    (site / "paddle/version").mkdir(parents=True)
    (site / "paddle/version/__init__.py").write_text("cuda_version = '12.0'\ncudnn_version = '8.9.1'\n")
    core = elf.lib(site / "paddle/fluid/libpaddle.so", body=OPEN_HERE, extra=["-ldl"])
    dist_info(site, "paddlepaddle-gpu", "2.5.2", ["paddle/fluid/libpaddle.so"])
    cuda = tmp_path / "usr/local/cuda-12.0/lib64"
    cudnn8(elf, cuda, "8.9.1")
    lib(elf, cuda, "libcublas.so.12", "libcublas.so.12.0.1.189")
    os.symlink("libcublas.so.12", cuda / "libcublas.so")
    path = [cuda, host]
    assert str(version_from(core, "libcudnn.so", llp(path))).startswith("ERROR")
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libcudnn.so")
    assert "paddlepaddle-gpu 2.5.2" in cause.title
    assert step_kind(report) == "order", report.diagnosis.next_step
    (link,) = [a for a in report.diagnosis.chosen if a.soname == "libcudnn.so"]
    assert link.kind == "symlink" and link.target.endswith("libcudnn.so.8")


# -- the machine: WSL, minor-version compatibility, no device, no GPU ---------------------------------------

def test_wsl_is_a_gpu_host(elf: ElfFactory, judge: Judge, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Healthy look-alike, microsoft/WSL#5548 and #11229: on WSL libcuda.so.1 is a regular file in /usr/lib/wsl/lib
    ("is not a symbolic link"), there is /dev/dxg and no /dev/nvidia*, no kernel module: a working GPU host."""
    root = tmp_path / "wsl"
    libs = gpu_host(elf, root, wsl=True)
    monkeypatch.setenv("LIBDOCTOR_SYSROOT", str(root))
    prefix, _framework, cuda = tf_machine(elf, tmp_path)
    done = run_python("import ctypes; ctypes.CDLL('libcuda.so.1')", {"LD_LIBRARY_PATH": str(libs)})
    assert done.returncode == 0, done.stderr
    report = scan(judge, prefix, [cuda, libs])
    assert report.healthy, errors(report)
    assert report.driver.wsl and "WSL" in report.driver.summary()


def test_cuda_minor_version_compatibility_is_healthy(elf: ElfFactory, judge: Judge, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Healthy look-alike (cuda-facts.md section 5, cuda_min_driver.csv): TF 2.12 is built for CUDA 11.8, whose
    minimum driver is 520.61.05; driver 470.82.01 runs it through minor-version compatibility."""
    root = tmp_path / "host"
    libs = gpu_host(elf, root, driver="470.82.01")
    monkeypatch.setenv("LIBDOCTOR_SYSROOT", str(root))
    prefix, _framework, cuda = tf_machine(elf, tmp_path)
    report = scan(judge, prefix, [cuda, libs])
    assert report.healthy, errors(report)
    assert "minor-version compatibility" in report.frameworks[0].fit.reason


def test_a_container_started_without_the_gpu(elf: ElfFactory, judge: Judge, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """NVIDIA/nvidia-docker: the driver's libraries mounted but no /dev/nvidia* (started without --gpus): exit 1 and a
    machine step, never "healthy" beside an unusable GPU."""
    root = tmp_path / "host"
    libs = gpu_host(elf, root)
    for node in (root / "dev").iterdir():
        node.unlink()
    monkeypatch.setenv("LIBDOCTOR_SYSROOT", str(root))
    prefix, _framework, cuda = tf_machine(elf, tmp_path)
    report = scan(judge, prefix, [cuda, libs])
    assert not report.healthy and report.frameworks[0].gpu_usable is False
    assert "device nodes" in errors(report)[0]
    assert step_kind(report) == "machine" and "--gpus" in report.diagnosis.next_step


def test_no_nvidia_card_says_so_and_libraries_only_judges_the_rest(elf: ElfFactory, judge: Judge, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch/pytorch#31243 ("Found no NVIDIA driver on your system") on a machine with no NVIDIA card: the step says
    there is no GPU, not "install a driver"; --libraries-only (a CPU build host, CI) judges the libraries alone."""
    root = tmp_path / "cpu-host"
    device = root / "sys/bus/pci/devices/0000:00:02.0"
    device.mkdir(parents=True)
    (device / "vendor").write_text("0x8086\n")
    (device / "class").write_text("0x030000\n")
    monkeypatch.setenv("LIBDOCTOR_SYSROOT", str(root))
    prefix, _framework, cuda = tf_machine(elf, tmp_path)
    report = scan(judge, prefix, [cuda])
    assert not report.healthy and "no NVIDIA GPU" in report.diagnosis.next_step
    assert not [a.command for a in report.diagnosis.actions if "install the NVIDIA driver" in (a.command or "")]
    only = scan(judge, prefix, [cuda], libraries_only=True)
    assert only.healthy, errors(only)
    assert only.diagnosis.verdict.startswith("healthy (libraries only: driver and device not judged)")
    missing = scan(judge, prefix, [], libraries_only=True)
    assert not missing.healthy
    # torch's libcaffe2_nvrtc.so NEEDs libcuda.so.1 itself: that missing name says the same, never "install a driver"
    torch_prefix, site = torch_install(elf, tmp_path, "2.14.1+cu130", "13.0")
    cuda_stub = elf.stub("libcuda.so.1", defines=["cuInit"])
    elf.lib(site / "torch/lib/libcaffe2_nvrtc.so", calls=["cuInit"], link=[cuda_stub])
    record_files(site, "torch")
    report = scan(judge, torch_prefix, [])
    assert "no NVIDIA GPU" in report.diagnosis.next_step
    assert not [a.command for a in report.diagnosis.actions if "install the NVIDIA driver" in (a.command or "")]


def test_torch_1_13_wheel_cublas_gets_an_older_system_cublaslt(elf: ElfFactory, judge: Judge, host: Path,
                                                               tmp_path: Path) -> None:
    """pytorch/pytorch#88882 and #103832: "libcublas.so.11: symbol cublasLtGetStatusString version libcublasLt.so.11
    not defined in file libcublasLt.so.11": torch 1.13's cuBLAS wheel and an older CUDA 11 cuBLASLt first on
    LD_LIBRARY_PATH (the wheel's cuBLAS has RUNPATH $ORIGIN, so LD_LIBRARY_PATH wins)."""
    prefix, site = torch_install(elf, tmp_path, "1.13.1+cu117", "11.7", ("nvidia-cublas-cu11==11.10.3.66",))
    wheel = site / "nvidia/cublas/lib"
    script = {"libcublasLt.so.11": ["cublasLtCreate", "cublasLtGetStatusString"]}
    cublaslt = lib(elf, wheel, "libcublasLt.so.11", defines=("cublasLtCreate", "cublasLtGetStatusString"),
                   version_script=script)
    cublas = lib(elf, wheel, "libcublas.so.11", defines=("cublasCreate_v2",), calls=["cublasLtGetStatusString"],
                 link=[cublaslt], runpath="$ORIGIN")
    bundled = site / "torch/lib"
    cudart = lib(elf, bundled, "libcudart.so.11.0", defines=("cudaMalloc",))
    rpath = "$ORIGIN/../../nvidia/cublas/lib:$ORIGIN"
    elf.lib(bundled / "libtorch_global_deps.so", calls=["cudaMalloc"], link=[cudart], rpath=rpath)
    elf.lib(bundled / "libtorch_cuda.so", calls=["cudaMalloc", "cublasCreate_v2"], link=[cudart, cublas], rpath=rpath)
    record_files(site, "torch")
    old = tmp_path / "usr/local/cuda-11.2/lib64"
    lib(elf, old, "libcublasLt.so.11", "libcublasLt.so.11.3.1.68", defines=("cublasLtCreate",),
        version_script={"libcublasLt.so.11": ["cublasLtCreate"]})
    path = [old, host]
    done = imported(prefix, "import torch", llp(path))
    assert done.returncode != 0 and "cublasLtGetStatusString" in done.stderr, done.stderr
    report = scan(judge, prefix, path)
    cause = next(c for c in report.diagnosis.causes if c.error)
    assert "cublasLtGetStatusString" in cause.title and "libcublasLt.so.11" in cause.title
    assert step_kind(report) == "order"
    assert report.frameworks[0].info.sequence.startswith("torch 1.13")


def test_tf_2_3_on_a_cuda_11_machine(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """tensorflow/tensorflow#38578 and #45930: "Could not load dynamic library 'libcudart.so.10.1'" with only CUDA
    11.0 installed: TF registers no GPU; the step installs the CUDA 10.1 runtime, never a link across majors."""
    prefix, site = make_env(tmp_path / "tf23")
    framework = elf.lib(site / "tensorflow/libtensorflow_framework.so.2", body=OPEN_HERE, extra=["-ldl"])
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.1", TF_CUDNN_VERSION="7")
    dist_info(site, "tensorflow", "2.3.0", ["tensorflow/libtensorflow_framework.so.2"])
    cuda = tmp_path / "usr/local/cuda-11.0/lib64"
    lib(elf, cuda, "libcudart.so.11.0", "libcudart.so.11.0.221")
    path = [cuda, host]
    assert str(version_from(framework, "libcudart.so.10.1", llp(path))
               ).startswith("ERROR libcudart.so.10.1: cannot open")
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libcudart.so.10.1")
    assert "tensorflow 2.3.0" in cause.title
    assert step_kind(report) == "install" and "cudatoolkit=10.1" in report.diagnosis.next_step
    assert not any(a.kind == "symlink" and a.grade == "safe" for a in report.diagnosis.actions)


def test_nvrtc_without_its_builtins(elf: ElfFactory, judge: Judge, host: Path, tmp_path: Path) -> None:
    """ucbdrive/hd3#3, chenyuntc/simple-faster-rcnn-pytorch#102: "nvrtc: error: failed to load builtins": NVRTC 12.2
    found, its libnvrtc-builtins.so.12.2 not (the catalog: NVRTC dlopens it on its first compile)."""
    prefix, site = make_env(tmp_path / "cupy")
    elf.lib(site / "cupy/_core/core.so")
    dist_info(site, "cupy-cuda12x", "13.0.0", ["cupy/_core/core.so"])
    cuda = tmp_path / "usr/local/cuda-12.2/lib64"
    nvrtc = lib(elf, cuda, "libnvrtc.so.12", "libnvrtc.so.12.2.140", body=OPEN_HERE, extra=["-ldl"])
    path = [cuda, host]
    assert str(version_from(nvrtc, "libnvrtc-builtins.so.12.2", llp(path))
               ).startswith("ERROR libnvrtc-builtins.so.12.2: cannot open")
    report = scan(judge, prefix, path)
    cause = cause_for(report, "libnvrtc-builtins.so.12.2")
    assert "cupy-cuda12x 13.0.0" in cause.title
    assert step_kind(report) == "install"


def test_a_driver_older_than_the_cuda_build(elf: ElfFactory, judge: Judge, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """pytorch/pytorch#31243 (driver 410 for a CUDA 10.1 build): here driver 418.39 under TF 2.12's CUDA 11.8, below
    even minor-version compatibility (450.80.02): the step is the driver, whatever the libraries say."""
    root = tmp_path / "host"
    libs = gpu_host(elf, root, driver="418.39")
    monkeypatch.setenv("LIBDOCTOR_SYSROOT", str(root))
    prefix, _framework, cuda = tf_machine(elf, tmp_path)
    report = scan(judge, prefix, [cuda, libs])
    assert not report.healthy and report.frameworks[0].gpu_usable is False
    assert "418.39" in errors(report)[0]
    assert step_kind(report) == "machine"


def test_a_target_inside_a_framework_gets_its_load_model(elf: ElfFactory, judge: Judge, host: Path,
                                                          tmp_path: Path) -> None:
    """The field report's file given as TARGET (TF 1.14's libtensorflow_framework.so.1, or the whole
    site-packages/tensorflow folder) is judged as TensorFlow loads it, not as a bare library: the cuDNN 7 it dlopens
    is missing; and `explain libcudnn.so.7` answers for that dlopen."""
    prefix, site = make_env(tmp_path / "bert", "3.6")
    framework = elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=OPEN_HERE, extra=["-ldl"])
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7", TF_CUDA_LIB_VERSION="10.0")
    dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1"])
    assert str(version_from(framework, "libcudnn.so.7", {"LD_LIBRARY_PATH": str(host)})).startswith("ERROR")
    env = judge.environment(str(tmp_path), {"LD_LIBRARY_PATH": str(host)})
    for target in (framework, site / "tensorflow"):
        report = run_scan((str(target),), env=env)
        assert [f.info.label for f in report.frameworks] == ["tensorflow-gpu 1.14.0"]
        assert not report.healthy and cause_for(report, "libcudnn.so.7")
        assert any("judged with its own load model" in n for n in report.discovery.notes)
    from libdoctor.report import searches_for

    searched = searches_for(run_scan((str(framework),), env=env, diagnosis=False), "libcudnn.so.7")
    assert searched and all(not r.found for r in searched)
    assert searched[0].requester == str(framework)
