"""Judge what is behind each name: the field report's hand-made links replayed with real files.

The loader opens every one of these links happily (the tests show it with a real dlopen); the
file behind the name is another major, another CUDA release, another cuDNN.  libdoctor must say so.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libdoctor.gpu.impostor import BuiltFor, built_for, judge_file, link_chain, version_of
from libdoctor.scan import run_scan

from .conftest import ElfFactory, Judge, loader_env
from .test_frameworks import TRY_LOAD, cuda_config, dist_info, make_env, real_dlopen, scan_env

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def machine(elf: ElfFactory, tmp_path: Path) -> Path:
    return build_machine(elf, tmp_path)


def build_machine(elf: ElfFactory, tmp_path: Path, root: Path | None = None) -> Path:
    """CUDA 10.0 with its own files, CUDA 11.0 and cuDNN 8.0.5 in /usr/lib64, then the field's `ln -s` lines (in
    ``root``, by default ``tmp_path/machine``)."""
    root = root or tmp_path / "machine"
    lib64 = root / "usr/lib64"
    elf.lib(lib64 / "libcudnn.so.8.0.5", soname="libcudnn.so.8", defines=["cudnnCreate"])
    os.symlink("libcudnn.so.8.0.5", lib64 / "libcudnn.so.8")
    os.symlink("libcudnn.so.8", lib64 / "libcudnn.so")
    cuda10 = root / "usr/local/cuda-10.0/lib64"
    for family in ("cudart", "cublas", "cufft", "curand", "cusolver", "cusparse"):
        elf.lib(cuda10 / f"lib{family}.so.10.0", defines=[f"{family}_10"])
    cuda11 = root / "usr/local/cuda-11.0/lib64"
    elf.lib(cuda11 / "libcudart.so.11.0.221", soname="libcudart.so.11.0", defines=["cudaMalloc"],
            version_script={"libcudart.so.11.0": ["cudaMalloc"]})
    os.symlink("libcudart.so.11.0.221", cuda11 / "libcudart.so.11.0")
    os.symlink("libcudart.so.11.0", cuda11 / "libcudart.so")
    for family, soname in (("cublas", "libcublas.so.11"), ("cublasLt", "libcublasLt.so.11"),
                           ("cusparse", "libcusparse.so.11"), ("cufft", "libcufft.so.10"),
                           ("curand", "libcurand.so.10"), ("cusolver", "libcusolver.so.10")):
        elf.lib(cuda11 / soname, defines=[f"{family}_11"])
        os.symlink(soname, cuda11 / f"lib{family}.so")
    # The field report's hand repairs, verbatim but for the root folder:
    os.symlink(lib64 / "libcudnn.so", cuda10 / "libcudnn.so.7")
    os.symlink("libcudart.so", cuda11 / "libcudart.so.10.1")
    os.symlink("libcublas.so", cuda11 / "libcublas.so.10")
    os.symlink("libcublasLt.so", cuda11 / "libcublasLt.so.10")
    os.symlink("libcusparse.so", cuda11 / "libcusparse.so.10")
    os.symlink(lib64 / "libcudnn.so", cuda11 / "libcudnn.so.7")
    return root


def tf_env(elf: ElfFactory, root: Path, name: str, version: str, python: str, **config: str) -> tuple[Path, Path]:
    prefix, site = make_env(root / name, python)
    framework = elf.lib(site / f"tensorflow/libtensorflow_framework.so.{version[0]}", body=TRY_LOAD,
                        extra=["-ldl"])
    cuda_config(site / "tensorflow", **config)
    dist_info(site, "tensorflow-gpu" if version.startswith("1.") else "tensorflow", version,
              [f"tensorflow/{framework.name}"])
    return prefix, framework


def impostors(report) -> dict[str, object]:  # noqa: ANN001
    return {p.soname: p for p in report.problems if p.kind == "impostor"}


def bert_env(elf: ElfFactory, root: Path) -> Path:
    """The field's env: tensorflow-gpu 1.14 (CUDA 10.0, cuDNN 7) on Python 3.6."""
    return tf_env(elf, root, "bert", "1.14.0", "3.6", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7",
                  TF_CUDA_LIB_VERSION="10.0")[0]


def libdoctor(*args: str, tmp_path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = loader_env({"NO_COLOR": "1", "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                          "LIBDOCTOR_STATE_DIR": str(tmp_path / "st"), "PYTHONPATH": str(REPO), **(env or {})})
    environ.pop("CONDA_PREFIX", None)
    return subprocess.run([sys.executable, "-m", "libdoctor", *args], env=environ, capture_output=True, text=True,
                          timeout=120)


def test_tf_1_14_with_cudnn_8_linked_as_7(elf: ElfFactory, judge: Judge, machine: Path, tmp_path: Path) -> None:
    prefix, framework = tf_env(elf, tmp_path, "bert", "1.14.0", "3.6", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7",
                               TF_CUDA_LIB_VERSION="10.0")
    llp = {"LD_LIBRARY_PATH": str(machine / "usr/local/cuda-10.0/lib64")}
    assert real_dlopen(framework, ["libcudnn.so.7"], llp) == {"libcudnn.so.7": True}  # the loader is happy
    report = scan_env(judge, prefix, llp)
    found = impostors(report)
    assert set(found) == {"libcudnn.so.7"}
    problem = found["libcudnn.so.7"]
    assert problem.severity == "error" and not report.healthy
    assert "libcudnn.so.7 is really libcudnn.so.8 (cuDNN 8.0.5)" in problem.message
    assert problem.links == (str(machine / "usr/local/cuda-10.0/lib64/libcudnn.so.7"),
                             str(machine / "usr/lib64/libcudnn.so"), "libcudnn.so.8", "libcudnn.so.8.0.5")
    framework_report = report.frameworks[0]
    assert framework_report.gpu_usable is False and "libcudnn.so.7 is really" in framework_report.because
    from libdoctor.daemon.metrics import write_metrics

    write_metrics(str(tmp_path / "m.prom"), [("bert", report)])
    assert 'libdoctor_impostor_libraries{env="bert"} 1.0' in (tmp_path / "m.prom").read_text()


def test_tf_2_3_inside_cuda_11_names_every_impostor(elf: ElfFactory, judge: Judge, machine: Path,
                                                    tmp_path: Path) -> None:
    prefix, framework = tf_env(elf, tmp_path, "tf23", "2.3.0", "3.8", TF_CUDA_VERSION="10.1", TF_CUDNN_VERSION="7",
                               TF_CUBLAS_VERSION="10", TF_CUSOLVER_VERSION="10", TF_CURAND_VERSION="10",
                               TF_CUFFT_VERSION="10", TF_CUSPARSE_VERSION="10")
    llp = {"LD_LIBRARY_PATH": str(machine / "usr/local/cuda-11.0/lib64")}
    names = ["libcudart.so.10.1", "libcublas.so.10", "libcusparse.so.10", "libcudnn.so.7", "libcufft.so.10"]
    assert all(real_dlopen(framework, names, llp).values())  # every name opens
    report = scan_env(judge, prefix, llp)
    found = impostors(report)
    errors = {n: p.message for n, p in found.items() if p.severity == "error"}
    assert set(errors) == {"libcudart.so.10.1", "libcublas.so.10", "libcublasLt.so.10", "libcusparse.so.10",
                           "libcudnn.so.7"}
    assert "is really libcudart.so.11.0" in errors["libcudart.so.10.1"]
    assert "is really libcublas.so.11" in errors["libcublas.so.10"]
    assert "is really libcusparse.so.11" in errors["libcusparse.so.10"]
    assert "is really libcudnn.so.8" in errors["libcudnn.so.7"]
    # Same soname, other CUDA release: a warning with its evidence, not an error.
    warnings = {n: p.message for n, p in found.items() if p.severity == "warning"}
    assert set(warnings) == {"libcufft.so.10", "libcurand.so.10", "libcusolver.so.10"}
    assert "CUDA 11.0" in warnings["libcufft.so.10"] and "built for CUDA 10.1" in warnings["libcufft.so.10"]
    assert report.frameworks[0].gpu_usable is False


def test_scan_exits_1_and_names_the_link_chain_and_who_made_it(elf: ElfFactory, machine: Path,
                                                              tmp_path: Path) -> None:
    prefix = bert_env(elf, tmp_path)
    llp = {"LD_LIBRARY_PATH": str(machine / "usr/local/cuda-10.0/lib64")}
    human = libdoctor("scan", "--python", str(prefix / "bin/python3"), tmp_path=tmp_path, env=llp)
    assert human.returncode == 1, human.stdout + human.stderr
    assert "libcudnn.so.7 is really libcudnn.so.8 (cuDNN 8.0.5)" in human.stdout
    assert "-> libcudnn.so.8 -> libcudnn.so.8.0.5 (links made by hand)" in human.stdout
    done = libdoctor("scan", "--json", "--python", str(prefix / "bin/python3"), tmp_path=tmp_path, env=llp)
    assert done.returncode == 1
    (problem,) = [p for p in json.loads(done.stdout)["problems"] if p["kind"] == "impostor"]
    assert problem["severity"] == "error" and problem["made_by"] == "by hand"
    assert problem["links"][-1] == "libcudnn.so.8.0.5"


def test_a_cudnn_minor_older_than_torch_was_built_against(elf: ElfFactory, tmp_path: Path) -> None:
    system = tmp_path / "usr/lib/x86_64-linux-gnu"
    elf.lib(system / "libcudnn.so.9.14.0", soname="libcudnn.so.9", defines=["cudnnCreate"])
    os.symlink("libcudnn.so.9.14.0", system / "libcudnn.so.9")
    built = built_for("torch 2.11.0+cu130", "13.0", "9", ("nvidia-cudnn-cu13==9.19.0.56; platform_system == 'Linux'",))
    assert built.cudnn == (9, 19, 0, 56)
    impostor = judge_file("libcudnn.so.9", str(system / "libcudnn.so.9"), "libcudnn.so.9", built)
    assert impostor is not None and impostor.severity == "error"
    assert "cuDNN 9.14.0 is older than the 9.19" in impostor.message
    newer = built_for("torch", "13.0", "9", ("nvidia-cudnn-cu13==9.10.0.1",))
    assert judge_file("libcudnn.so.9", str(system / "libcudnn.so.9"), "libcudnn.so.9", newer) is None


def test_the_right_file_is_no_impostor(elf: ElfFactory, tmp_path: Path) -> None:
    lib = elf.lib(tmp_path / "cuda-11.0/lib64/libcudart.so.11.0.221", soname="libcudart.so.11.0")
    os.symlink(lib.name, lib.parent / "libcudart.so.11.0")
    assert judge_file("libcudart.so.11.0", str(lib.parent / "libcudart.so.11.0"), "libcudart.so.11.0",
                      BuiltFor("cuda 11.0", "11.0")) is None
    plain = elf.lib(tmp_path / "other/libplain.so.3.2.1", soname="")
    os.symlink(plain.name, plain.parent / "libplain.so.3")
    assert judge_file("libplain.so.3", str(plain.parent / "libplain.so.3"), None) is None
    wrong = judge_file("libplain.so.2", str(plain.parent / "libplain.so.3"), None)
    assert wrong is not None and wrong.severity == "warning" and "libplain.so.3.2.1" in wrong.message


def test_link_chain_stops_at_a_loop(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    assert len(link_chain(str(tmp_path / "a"))) == 41
    assert version_of("libcudnn.so.8.0.5") == (8, 0, 5) and version_of("libfoo.so") == ()


def test_fix_offers_no_cuda_10_name_linked_to_a_cuda_11_file_as_safe(elf: ElfFactory, machine: Path,
                                                                    tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBDOCTOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIBDOCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    cufft = elf.stub("libcufft.so.10.0", ["cufft_x"])
    consumer = elf.lib(tmp_path / "app/libconsumer.so", calls=["cufft_x"], link=[cufft])
    elf.lib(machine / "usr/local/cuda-11.0/lib64/libcufft.so.10.4.1", soname="libcufft.so.10", defines=["cufft_x"])
    plan = run_scan((str(consumer),), look_in=(str(machine / "usr/local/cuda-11.0/lib64"),))
    links = [p for p in plan.actions if p.kind == "symlink" and p.soname == "libcufft.so.10.0"]
    assert links, [p.title for p in plan.actions]
    assert all(p.grade != "safe" for p in links), [(p.title, p.grade, p.evidence) for p in links]
    assert any("CUDA 10.0" in line and "CUDA 11.0" in line for p in links for line in p.evidence)
    assert not any(p.soname == "libcufft.so.10.0" for p in plan.chosen)  # risky: not applied by default
    accepted = run_scan((str(consumer),), look_in=(str(machine / "usr/local/cuda-11.0/lib64"),), accept=("risky",))
    assert any(p.soname == "libcufft.so.10.0" and p.grade == "risky" for p in accepted.chosen)


def test_fix_says_first_what_it_leaves_broken(elf: ElfFactory, machine: Path, tmp_path: Path) -> None:
    prefix = bert_env(elf, tmp_path)
    done = libdoctor("fix", "--python", str(prefix / "bin/python3"), tmp_path=tmp_path,
                     env={"LD_LIBRARY_PATH": str(machine / "usr/local/cuda-10.0/lib64")})
    assert done.returncode == 1, done.stdout + done.stderr
    first = done.stdout.splitlines()[0]
    # the driver may be listed too
    assert first.startswith("this plan leaves") and "(libcudnn.so.7" in first, done.stdout
    assert "nothing to fix" not in done.stdout
    assert "install: conda install cudnn=7.6.5" in done.stdout


def test_a_tf_dlopen_searches_the_rpath_of_the_module_that_loaded_the_framework(elf: ElfFactory, judge: Judge,
                                                                             tmp_path: Path) -> None:
    """python -> _pywrap_tensorflow_internal.so (RPATH $ORIGIN/) -> libtensorflow_framework.so.1 -> dlopen."""
    prefix, site = make_env(tmp_path / "tf114", "3.6")
    framework = elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=TRY_LOAD, extra=["-ldl"])
    pywrap = elf.lib(site / "tensorflow/python/_pywrap_tensorflow_internal.so", soname="", calls=["try_load"],
                     link=[framework], rpath="$ORIGIN/:$ORIGIN/..")
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7", TF_CUDA_LIB_VERSION="10.0")
    dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1",
                                                 "tensorflow/python/_pywrap_tensorflow_internal.so"])
    elf.lib(site / "tensorflow/python/libcudnn.so.7.6.5", soname="libcudnn.so.7", defines=["cudnnCreate"])
    os.symlink("libcudnn.so.7.6.5", site / "tensorflow/python/libcudnn.so.7")
    code = (f"import ctypes; ctypes.CDLL({str(pywrap)!r}); fw = ctypes.CDLL({str(framework)!r}); "
            "print(fw.try_load(b'libcudnn.so.7'))")
    real = subprocess.run([sys.executable, "-c", code], env=loader_env(), capture_output=True, text=True)
    assert real.stdout.strip() == "1", real.stderr  # TensorFlow finds it through the pywrap module's RPATH
    report = scan_env(judge, prefix)
    check = next(c for c in report.frameworks[0].checks if c.lib.soname == "libcudnn.so.7")
    assert check.found and check.path == str(site / "tensorflow/python/libcudnn.so.7")
    resolution = next(r for r in check.result.resolutions if r.name == "libcudnn.so.7")
    assert [s.owner for s in resolution.sources if s.tag == "rpath"][-1] == str(pywrap)
    assert not any(p.soname == "libcudnn.so.7" for p in report.problems)


def conda_env_with_activation(elf: ElfFactory, root: Path, machine: Path) -> Path:
    prefix = bert_env(elf, root)
    (prefix / "conda-meta").mkdir()
    activate = prefix / "etc/conda/activate.d"
    activate.mkdir(parents=True)
    (activate / "cuda.sh").write_text(  # the field report's activate.d line
        f'export LD_LIBRARY_PATH="{machine}/usr/local/cuda-10.0/lib64${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"\n')
    return prefix


def test_scanned_from_outside_the_env_is_seen_as_activated(elf: ElfFactory, machine: Path, tmp_path: Path) -> None:
    prefix = conda_env_with_activation(elf, tmp_path, machine)
    done = libdoctor("scan", "--json", "--env", str(prefix), tmp_path=tmp_path)
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    (activation,) = data["environment"]["activation"]
    assert activation["how"] == "ran it with sh"
    assert activation["set"]["LD_LIBRARY_PATH"] == f"{machine}/usr/local/cuda-10.0/lib64"
    kinds = {p["soname"]: p["kind"] for p in data["problems"]}
    assert kinds["libcudnn.so.7"] == "impostor"  # not "missing": the activated path holds the hand-made link
    human = libdoctor("scan", "--env", str(prefix), tmp_path=tmp_path)
    assert "  as activated: cuda.sh sets LD_LIBRARY_PATH" in human.stdout
    verbose = libdoctor("scan", "-v", "--env", str(prefix), tmp_path=tmp_path)
    script = prefix / "etc/conda/activate.d/cuda.sh"
    assert f"as activated: {script} (ran it with sh) sets LD_LIBRARY_PATH=" in verbose.stdout
    bare = json.loads(libdoctor("scan", "--json", "--no-activate", "--env", str(prefix), tmp_path=tmp_path).stdout)
    assert {p["soname"]: p["kind"] for p in bare["problems"]}["libcudnn.so.7"] == "missing-dlopen"
    assert bare["environment"]["activation"] == []


def test_an_activation_script_others_can_write_is_read_not_run(elf: ElfFactory, machine: Path, tmp_path: Path) -> None:
    from libdoctor.targets import conda_activation

    prefix = conda_env_with_activation(elf, tmp_path, machine)
    script = prefix / "etc/conda/activate.d/cuda.sh"
    marker = tmp_path / "ran"
    script.write_text(script.read_text() + f"touch {marker}\nexport CUDA_HOME=/usr/local/cuda-10.0\n")
    os.chmod(script, 0o666)
    environ, (activation,) = conda_activation(str(prefix), {"PATH": "/usr/bin:/bin"})
    assert not marker.exists()  # never run
    assert activation.how.startswith("read its export lines, not run:")
    assert "writable by group or others" in activation.how
    assert environ["LD_LIBRARY_PATH"] == f"{machine}/usr/local/cuda-10.0/lib64"
    assert environ["CUDA_HOME"] == "/usr/local/cuda-10.0"
    os.chmod(script, 0o644)
    environ, (activation,) = conda_activation(str(prefix), {"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": "/old"})
    assert marker.exists() and activation.how == "ran it with sh"
    assert environ["LD_LIBRARY_PATH"] == f"{machine}/usr/local/cuda-10.0/lib64:/old"


def test_watch_and_preflight_see_a_link_re_pointed_at_another_major(elf: ElfFactory, machine: Path,
                                                                    tmp_path: Path) -> None:
    from .test_watch import Daemon, cli_env

    libs = tmp_path / "libs"
    elf.lib(libs / "libdep.so.1.2.3", soname="libdep.so.1", defines=["dep"])
    elf.lib(libs / "libdep.so.2.0.0", soname="libdep.so.2", defines=["dep"])
    os.symlink("libdep.so.1.2.3", libs / "libdep.so.1")
    stub = elf.stub("libdep.so.1", defines=["dep"])
    elf.lib(tmp_path / "app/libapp.so", calls=["dep"], link=[stub], runpath=str(libs))
    daemon = Daemon(["--debounce", "0.2", str(tmp_path / "app")], cli_env(tmp_path))
    try:
        daemon.wait_for("watching")
        start = len(daemon.events)
        os.unlink(libs / "libdep.so.1")
        os.symlink("libdep.so.2.0.0", libs / "libdep.so.1")  # re-pointed by hand at another major
        regression, _ = daemon.wait_for("regression", after=start)
        assert any(f.startswith("impostor:libdep.so.1:") for f in regression["findings"]), regression
    finally:
        daemon.stop()
    prefix = conda_env_with_activation(elf, tmp_path / "pf", machine)
    done = subprocess.run([sys.executable, "-m", "libdoctor", "preflight", "--check-only", "--env", str(prefix), "--",
                           "bert-serving-start", "-model_dir", str(tmp_path)],
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "libcudnn.so.7 is really libcudnn.so.8" in done.stdout + done.stderr


def test_ps_names_an_impostor_a_running_framework_has_mapped(elf: ElfFactory, machine: Path, tmp_path: Path) -> None:
    from libdoctor.daemon.ps import scan_processes

    from .test_watch import PS_CHILD

    prefix = bert_env(elf, tmp_path)
    framework = prefix / "lib/python3.6/site-packages/tensorflow/libtensorflow_framework.so.1"
    impostor = machine / "usr/local/cuda-10.0/lib64/libcudnn.so.7"  # -> cuDNN 8.0.5
    child = subprocess.Popen([sys.executable, "-c", PS_CHILD, str(framework), str(impostor)],
                             stdout=subprocess.PIPE, text=True, env=loader_env())
    try:
        assert child.stdout.readline().strip() == "ready"
        (report,) = scan_processes([child.pid])
        assert report.frameworks == ("tensorflow",)
        (line,) = report.impostors
        assert line.startswith("libcudnn.so.7 is really libcudnn.so.8") and "tensorflow-gpu 1.14.0" in line
    finally:
        child.kill()


def test_a_link_libdoctor_made_is_named_by_its_run(elf: ElfFactory, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from libdoctor.repair.fixer import Applier, journal_links
    from libdoctor.rules.base import Proposal
    from libdoctor.rules.ownership import made_by

    monkeypatch.setenv("LIBDOCTOR_STATE_DIR", str(tmp_path / "state"))
    elf.lib("lib/libdep.so.2.0.0", soname="libdep.so.2", defines=["dep"])
    outcome = Applier(str(tmp_path / "state"), None, in_place=True).apply(
        [Proposal("test", "symlink", "a link", soname="libdep.so.1", link=str(tmp_path / "lib/libdep.so.1"),
                  target="libdep.so.2.0.0", grade="risky")])
    ours = journal_links(str(tmp_path / "state"))
    assert made_by(str(tmp_path / "lib/libdep.so.1"), "libdep.so.2", ours) == f"libdoctor run {outcome.run_id}"
    os.symlink("libdep.so.2.0.0", tmp_path / "lib/libdep.so.3")
    assert made_by(str(tmp_path / "lib/libdep.so.3"), "libdep.so.2", ours) == "by hand"
    os.symlink("libdep.so.2.0.0", tmp_path / "lib/libdep.so.2")  # what ldconfig makes: never "by hand"
    assert made_by(str(tmp_path / "lib/libdep.so.2"), "libdep.so.2", ours).startswith("its own SONAME link")
