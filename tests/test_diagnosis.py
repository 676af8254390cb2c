"""One diagnosis engine: scan, fix, preflight and watch say the same thing, and every action is right and safe.

The field report's own layouts are replayed with real files, the real loader and real package databases
(a dpkg admin folder, an rpm database made by rpmbuild and rpm, conda-meta records, a wheel's RECORD).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from libdoctor.files import NotReplaceableError, write_atomic
from libdoctor.loader.factstore import FactsStore
from libdoctor.preflight import run_checks
from libdoctor.repair.fixer import Applier, undo
from libdoctor.rules.base import FRONT, Action
from libdoctor.rules.ownership import dpkg_owner, owner_of
from libdoctor.scan import run_scan

from .conftest import ElfFactory, loader_env
from .test_fix import snapshot
from .test_frameworks import dist_info, real_dlopen
from .test_impostor import bert_env, conda_env_with_activation, machine, tf_env  # noqa: F401 - a fixture
from .test_plugins import cupy_env, jax_env, ort_env

REPO = Path(__file__).resolve().parent.parent
RM = re.compile(r"(^|[\s;&|`(])rm\s")  # a raw rm anywhere in a step someone may paste


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name, folder in (("LIBDOCTOR_STATE_DIR", "state"), ("LIBDOCTOR_CACHE_DIR", "cache")):
        monkeypatch.setenv(name, str(tmp_path / folder))
    for name in ("LD_LIBRARY_PATH", "VIRTUAL_ENV", "CONDA_PREFIX", "CUDA_HOME", "LD_PRELOAD"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def cli(*args: str, tmp_path: Path, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    environ = loader_env({"NO_COLOR": "1", "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                          "LIBDOCTOR_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(REPO), **(env or {})})
    for name in ("CONDA_PREFIX", "VIRTUAL_ENV", "CUDA_HOME"):
        environ.pop(name, None)
    return subprocess.run([sys.executable, "-m", "libdoctor", *args], env=environ, capture_output=True, text=True,
                          timeout=180, cwd=cwd or tmp_path, stdin=subprocess.DEVNULL)


# -- nothing a package owns is ever named for removal or renamed -----------------------------

def build_rpm_database(tmp_path: Path, package: str, paths: list[Path]) -> Path | None:
    """A real rpm database that lists ``paths`` as owned by ``package`` (rpmbuild, then rpm --justdb)."""
    if not (shutil.which("rpmbuild") and shutil.which("rpm")):
        return None
    top, db = tmp_path / "rpmtop", tmp_path / "rpmdb"
    (top / "SPECS").mkdir(parents=True)
    db.mkdir()
    install = "\n".join(f"mkdir -p %{{buildroot}}{p.parent}\nln -s x %{{buildroot}}{p}" for p in paths)
    (top / "SPECS/p.spec").write_text(f"Name: {package}\nVersion: 1\nRelease: 1\nSummary: t\nLicense: none\n"
                                      f"BuildArch: noarch\n%description\nt\n%install\n{install}\n%files\n"
                                      + "".join(f"{p}\n" for p in paths))
    built = subprocess.run(["rpmbuild", "--define", f"_topdir {top}", "-bb", str(top / "SPECS/p.spec")],
                           capture_output=True, text=True)
    rpms = list((top / "RPMS").rglob("*.rpm"))
    if built.returncode != 0 or not rpms:
        return None
    subprocess.run(["rpm", "--dbpath", str(db), "--initdb"], check=True, capture_output=True)
    subprocess.run(["rpm", "--dbpath", str(db), "-i", "--justdb", "--nodeps", str(rpms[0])], check=True,
                   capture_output=True)
    return db


@pytest.fixture
def owned_tree(elf: ElfFactory, isolated: Path) -> dict:
    """CUDA 11.0 with its own SONAME links, and compat links that packages own, served to a TensorFlow 2.3 built
    for CUDA 10.1 (the field report's second machine)."""
    root = isolated / "tree"
    cuda = root / "usr/local/cuda-11.0/lib64"
    for real, soname in (("libcufft.so.10.2.1.245", "libcufft.so.10"), ("libcurand.so.10.2.1.245", "libcurand.so.10"),
                         ("libcusolver.so.10.6.0.245", "libcusolver.so.10"),
                         ("libcudart.so.11.0.221", "libcudart.so.11.0"), ("libcublas.so.11.2.0.252", "libcublas.so.11"),
                         ("libcusparse.so.11.1.1.245", "libcusparse.so.11")):
        elf.lib(cuda / real, soname=soname, defines=[soname.split(".")[0] + "_x"])
        os.symlink(real, cuda / soname)  # what the toolkit's package ships
    os.symlink("libcudart.so.11.0", cuda / "libcudart.so.10.1")  # a compat link a dpkg package owns
    os.symlink("libcublas.so.11", cuda / "libcublas.so.10")  # ... and one an rpm package owns
    conda = root / "opt/conda"
    elf.lib(conda / "lib/libcudnn.so.8.0.5", soname="libcudnn.so.8", defines=["cudnnCreate"])
    os.symlink("libcudnn.so.8.0.5", conda / "lib/libcudnn.so.7")  # owned by conda's cudnn package
    (conda / "conda-meta").mkdir(parents=True)
    (conda / "conda-meta/cudnn-8.0.5-h1.json").write_text(json.dumps(
        {"name": "cudnn", "version": "8.0.5", "files": ["lib/libcudnn.so.7", "lib/libcudnn.so.8.0.5"]}))
    prefix, framework = tf_env(elf, root, "tf23", "2.3.0", "3.8", TF_CUDA_VERSION="10.1", TF_CUDNN_VERSION="7",
                               TF_CUBLAS_VERSION="10", TF_CUSOLVER_VERSION="10", TF_CURAND_VERSION="10",
                               TF_CUFFT_VERSION="10", TF_CUSPARSE_VERSION="10")
    site = prefix / "lib/python3.8/site-packages"
    wheel = site / "nvidia/cusparse/lib"
    wheel.mkdir(parents=True)
    os.symlink(cuda / "libcusparse.so.11", wheel / "libcusparse.so.10")  # a wheel's RECORD lists it
    dist_info(site, "nvidia-cusparse-compat", "10.1", ["nvidia/cusparse/lib/libcusparse.so.10"])
    dpkg = isolated / "dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "info/cuda-compat-10-1.list").write_text(f"/.\n{cuda}\n{cuda / 'libcudart.so.10.1'}\n")
    env = {"LIBDOCTOR_DPKG_ADMINDIR": str(dpkg),
           "LD_LIBRARY_PATH": f"{conda / 'lib'}:{wheel}:{cuda}"}
    rpmdb = build_rpm_database(isolated, "cuda-compat-cublas", [cuda / "libcublas.so.10"])
    if rpmdb is not None:
        env["LIBDOCTOR_RPM_DBPATH"] = str(rpmdb)
    return {"root": root, "prefix": prefix, "framework": framework, "env": env, "rpm": rpmdb is not None,
            "cuda": cuda}


def test_every_package_database_is_read(owned_tree: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in owned_tree["env"].items():
        monkeypatch.setenv(name, value)
    cuda, root = owned_tree["cuda"], owned_tree["root"]
    assert str(owner_of(str(cuda / "libcudart.so.10.1"))) == "package dpkg:cuda-compat-10-1"
    assert str(owner_of(str(root / "opt/conda/lib/libcudnn.so.7"))) == "package conda:cudnn"
    site = owned_tree["prefix"] / "lib/python3.8/site-packages"
    assert str(owner_of(str(site / "nvidia/cusparse/lib/libcusparse.so.10"))) == "package pip:nvidia_cusparse_compat"
    if owned_tree["rpm"]:
        assert str(owner_of(str(cuda / "libcublas.so.10"))) == "package rpm:cuda-compat-cublas"
    assert owner_of(str(cuda / "libcufft.so.10.2.1.245")) is None


@pytest.mark.skipif(not os.path.isdir("/var/lib/dpkg/info") or not shutil.which("dpkg-query"),
                    reason="not a dpkg system")
def test_dpkg_ownership_agrees_with_dpkg_query_across_the_merged_usr() -> None:
    listed = subprocess.run(["dpkg-query", "-S", "libz.so.1"], capture_output=True, text=True).stdout.splitlines()
    if not listed:
        pytest.skip("zlib is not installed by dpkg here")
    package, _, path = listed[0].partition(": ")
    variants = [v for v in (path, "/usr" + path if not path.startswith("/usr/") else path[4:]) if os.path.exists(v)]
    assert variants  # dpkg lists it where it is
    for variant in variants:  # as listed, and through the other side of a merged /usr
        owner = dpkg_owner(variant)
        assert owner is not None and owner.package == package.split(",")[0], (variant, owner)


def test_package_owned_links_get_no_hint_or_action_that_removes_them(owned_tree: dict) -> None:
    tmp = owned_tree["root"].parent
    prefix = str(owned_tree["prefix"])
    before = snapshot(owned_tree["root"])
    scan = cli("scan", "--json", "--env", prefix, tmp_path=tmp, env=owned_tree["env"])
    data = json.loads(scan.stdout)
    impostors = {p["soname"]: p for p in data["problems"] if p["kind"] == "impostor"}
    expected = {"libcudart.so.10.1": "package dpkg:cuda-compat-10-1", "libcudnn.so.7": "package conda:cudnn",
                "libcusparse.so.10": "package pip:nvidia_cusparse_compat"}
    if owned_tree["rpm"]:
        expected["libcublas.so.10"] = "package rpm:cuda-compat-cublas"
    for soname, owner in expected.items():
        assert impostors[soname]["made_by"] == owner, impostors[soname]
    for soname in ("libcufft.so.10", "libcurand.so.10", "libcusolver.so.10"):  # CUDA 11.0's own SONAME links
        assert impostors[soname]["severity"] == "warning"
        assert impostors[soname]["made_by"].startswith("its own SONAME link"), impostors[soname]
    assert not any(p["made_by"] == "by hand" for p in impostors.values())
    assert not [a for a in data["actions"] if a["kind"] == "retire"]
    human = cli("scan", "-v", "--env", prefix, tmp_path=tmp, env=owned_tree["env"])
    plan = cli("fix", "--json", "--env", prefix, "--accept", "risky", "--force", tmp_path=tmp, env=owned_tree["env"])
    for text in (scan.stdout, human.stdout, plan.stdout):
        assert not RM.search(text), [line for line in text.splitlines() if RM.search(line)]
    applied = cli("fix", "--apply", "--yes", "--env", prefix, "--accept", "risky", "--force", tmp_path=tmp,
                  env=owned_tree["env"])
    assert "Traceback" not in applied.stderr
    after = {k: v for k, v in snapshot(owned_tree["root"]).items() if "/etc/conda/" not in k}
    assert after == before  # nothing a package owns, nor any SONAME link, was renamed, replaced or removed


# -- the field report's repair, done safely ----------------------------------------------------

@pytest.fixture
def field_env(elf: ElfFactory, machine: Path, isolated: Path) -> dict:  # noqa: F811 - the fixture
    return build_impostor_field(elf, machine, isolated)


def build_impostor_field(elf: ElfFactory, machine: Path, root: Path) -> dict:  # noqa: F811
    """The field: TF 1.14's conda env whose activate.d puts CUDA 10.0 first, where a hand-made
    libcudnn.so.7 -> cuDNN 8 waits; the genuine cuDNN 7.6.5 lies in /opt, off every path."""
    genuine = elf.lib(machine / "opt/cudnn-7.6/lib64/libcudnn.so.7.6.5", soname="libcudnn.so.7",
                      defines=["cudnnCreate"])
    prefix = conda_env_with_activation(elf, root / "envs", machine)
    framework = prefix / "lib/python3.6/site-packages/tensorflow/libtensorflow_framework.so.1"
    return {"prefix": prefix, "machine": machine, "genuine": genuine, "framework": framework,
            "look_in": str(genuine.parent), "tmp": root}


def schema_valid(document: str, name: str) -> dict:
    """The document, validated against the schema libdoctor ships for it."""
    import jsonschema

    from libdoctor.cli import SCHEMAS

    data = json.loads(document)
    schema = json.loads((REPO / "libdoctor/schemas" / f"{SCHEMAS[name][0]}.json").read_text())
    jsonschema.validate(data, schema, cls=jsonschema.Draft202012Validator)
    return data


def activated_ld_library_path(prefix: Path) -> str:
    """LD_LIBRARY_PATH after `conda activate`: every activate.d script sourced, in order, by sh."""
    scripts = " ".join(f'. "{s}";' for s in sorted((prefix / "etc/conda/activate.d").glob("*.sh")))
    environ = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    return subprocess.run(["sh", "-c", f'{scripts} printf "%s" "$LD_LIBRARY_PATH"'], env=environ,
                          capture_output=True, text=True, check=True).stdout


def test_the_field_tree_is_repaired_by_fix_apply_and_restored_by_undo(field_env: dict, dlprobe: Path) -> None:
    tmp, prefix = field_env["tmp"], field_env["prefix"]
    before = snapshot(tmp, skip=(str(tmp / "state"), str(tmp / "cache")))
    scan = schema_valid(cli("scan", "--json", "--env", str(prefix), "--look-in", field_env["look_in"],
                            tmp_path=tmp).stdout, "scan")
    plan = schema_valid(cli("fix", "--json", "--env", str(prefix), "--look-in", field_env["look_in"],
                            tmp_path=tmp).stdout, "fix")
    assert [a["kind"] for a in plan["proposals"] if a["id"] in plan["plan"]] == ["retire"]
    assert plan["next_step"] == scan["next_step"] and plan["verdict"] == scan["verdict"]
    (impostor,) = [p for p in scan["problems"] if p["kind"] == "impostor"]
    assert impostor["made_by"] == "by hand" and impostor["soname"] == "libcudnn.so.7"
    step = scan["next_step"]
    assert step == f"libdoctor fix --apply --env {prefix} --look-in {field_env['look_in']}"
    assert not RM.search(json.dumps(scan))
    done = cli(*shlex.split(step)[1:], "--yes", tmp_path=tmp)  # the step, pasted as printed (and --yes)
    assert "renamed aside" in done.stdout and "Traceback" not in done.stderr, done.stdout + done.stderr
    link = field_env["machine"] / "usr/local/cuda-10.0/lib64/libcudnn.so.7"
    assert not os.path.lexists(link) and os.path.islink(link.with_name(".libcudnn.so.7.libdoctor-retired"))
    after = json.loads(cli("scan", "--json", "--env", str(prefix), tmp_path=tmp).stdout)
    assert not [p for p in after["problems"] if p["kind"] in ("impostor", "missing", "missing-dlopen")]
    assert [c["key"] for c in after["causes"] if c["error"]] == ["driver"]  # only what no repair can make
    check = next(c for c in after["frameworks"][0]["libraries"]["expected"] if c["soname"] == "libcudnn.so.7")
    assert os.path.realpath(check["path"]) == str(field_env["genuine"])
    llp = activated_ld_library_path(prefix)  # the real loader, in the env as conda activates it
    assert real_dlopen(field_env["framework"], ["libcudnn.so.7"], {"LD_LIBRARY_PATH": llp}) == {"libcudnn.so.7": True}
    opened = subprocess.run([str(dlprobe), "libcudnn.so.7"], env=loader_env({"LD_LIBRARY_PATH": llp}),
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert any(os.path.realpath(p) == str(field_env["genuine"]) for p in opened), opened
    undone = cli("undo", "--all", tmp_path=tmp)
    assert undone.returncode == 0, undone.stdout
    assert snapshot(tmp, skip=(str(tmp / "state"), str(tmp / "cache"))) == before  # byte for byte


def test_in_place_the_genuine_link_takes_the_impostors_name(field_env: dict, dlprobe: Path) -> None:
    tmp, prefix = field_env["tmp"], field_env["prefix"]
    before = snapshot(tmp, skip=(str(tmp / "state"), str(tmp / "cache")))
    done = cli("fix", "--apply", "--yes", "--in-place", "--env", str(prefix), "--look-in", field_env["look_in"],
               tmp_path=tmp)
    assert "[safe] retire:" in done.stdout and "active in:" not in done.stdout, done.stdout  # no folder added
    link = field_env["machine"] / "usr/local/cuda-10.0/lib64/libcudnn.so.7"
    assert os.readlink(link) == str(field_env["genuine"])
    llp = activated_ld_library_path(prefix)
    opened = subprocess.run([str(dlprobe), "libcudnn.so.7"], env=loader_env({"LD_LIBRARY_PATH": llp}),
                            capture_output=True, text=True, check=True).stdout.splitlines()
    assert any(os.path.realpath(p) == str(field_env["genuine"]) for p in opened), opened
    assert cli("undo", "--all", tmp_path=tmp).returncode == 0
    assert snapshot(tmp, skip=(str(tmp / "state"), str(tmp / "cache"))) == before


def test_a_link_changed_after_it_was_judged_is_not_renamed(field_env: dict) -> None:
    from libdoctor.repair.fix import apply_plan

    report = run_scan(prefix=str(field_env["prefix"]), look_in=(field_env["look_in"],))
    retire = next(a for a in report.chosen if a.kind == "retire")
    link = Path(retire.path)
    link.unlink()
    os.symlink("/somewhere/else", link)  # re-pointed by hand between plan and apply
    outcome = apply_plan(report)
    assert any("changed since it was judged" in r for r in outcome.refused)
    assert os.readlink(link) == "/somewhere/else"


# -- scan, fix and preflight say the same thing --------------------------------------------------

def _passed_env() -> dict:
    """What the subprocess needs of this test's environment (loader_env drops every LD_ variable)."""
    return {k: v for k, v in os.environ.items() if k.startswith(("LIBDOCTOR_", "LD_LIBRARY_PATH"))}


def _agree(prefix: Path, tmp: Path, look_in: tuple[str, ...] = ()) -> tuple:
    """scan's verdict and step, ``fix --json``'s plan (its own process), preflight's block: one diagnosis."""
    scan = run_scan(prefix=str(prefix), look_in=look_in)
    folders = [word for folder in look_in for word in ("--look-in", folder)]
    fix = json.loads(cli("fix", "--json", "--env", str(prefix), *folders, tmp_path=tmp, env=_passed_env()).stdout)
    preflight = run_checks(("true",), str(prefix), "generic", look_in=look_in)
    assert (fix["verdict"], fix["next_step"]) == (scan.diagnosis.verdict, scan.diagnosis.next_step)
    assert fix["plan"] == [a.id for a in scan.chosen]
    assert [u["soname"] for u in fix["unrepaired"]] == [c.findings[0].soname for c in scan.diagnosis.unrepaired]
    assert preflight.blocked == (not scan.healthy)
    if not scan.healthy:
        assert preflight.next_step == scan.diagnosis.next_step
    for cause in scan.diagnosis.causes:
        assert not RM.search(cause.fix or ""), cause.fix
        assert cause.repaired == (cause.fix or "").startswith("libdoctor fix --apply"), (cause.title, cause.fix)
    return scan, preflight


def _apply_step_then_scan(step: str, tmp: Path, prefix: Path) -> dict:
    done = cli(*shlex.split(step)[1:], "--yes", tmp_path=tmp, env=_passed_env())
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(cli("scan", "--json", "--env", str(prefix), tmp_path=tmp, env=_passed_env()).stdout)


def _fixture_envs(kind: str, elf: ElfFactory, tmp: Path, request: pytest.FixtureRequest) -> tuple[Path, tuple]:
    if kind == "field impostor":
        field = request.getfixturevalue("field_env")
        return field["prefix"], (field["look_in"],)
    if kind == "package-owned links":
        tree = request.getfixturevalue("owned_tree")
        monkeypatch = request.getfixturevalue("monkeypatch")
        for name, value in tree["env"].items():
            monkeypatch.setenv(name, value)
        return tree["prefix"], ()
    if kind == "cupy with its wheels":
        return cupy_env(elf, tmp / "cupy")[0], ()
    if kind == "tensorflow without CUDA":
        return bert_env(elf, tmp / "envs"), ()
    if kind == "onnxruntime with unreached wheels":
        return ort_env(elf, tmp / "ort", wheels=True)[0], ()
    return jax_env(elf, tmp / "jax", wheels=False)[0], ()


@pytest.mark.parametrize("kind", ["field impostor", "package-owned links", "tensorflow without CUDA",
                                  "onnxruntime with unreached wheels", "jax without its wheels",
                                  "cupy with its wheels"])
def test_scan_fix_and_preflight_agree_and_the_promised_step_works(kind: str, elf: ElfFactory, isolated: Path,
                                                                   request: pytest.FixtureRequest) -> None:
    prefix, look_in = _fixture_envs(kind, elf, isolated, request)
    scan, _preflight = _agree(prefix, isolated, look_in)
    step = scan.diagnosis.next_step or ""
    promised = {c.key for c in scan.diagnosis.causes if c.repaired}
    if step.startswith("libdoctor fix --apply"):
        after = _apply_step_then_scan(step, isolated, prefix)
        assert promised and not promised & {c["key"] for c in after["causes"]}, after["causes"]
    else:
        assert "install" in step or "driver" in step, step  # nothing here to change: what to install


@pytest.mark.realenv
def test_real_venvs_scan_fix_and_preflight_agree(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = os.environ.get("LIBDOCTOR_REAL_VENVS")
    if not root:
        pytest.skip("LIBDOCTOR_REAL_VENVS is not set (benchmarks/framework_venvs.py makes the venvs)")
    monkeypatch.setenv("LIBDOCTOR_STATE_DIR", str(tmp_path / "state"))
    venvs = sorted(p for p in Path(root).iterdir() if (p / "pyvenv.cfg").exists())
    assert venvs
    for venv in venvs:
        _agree(venv, tmp_path)


# -- preflight starts exactly what it judged ------------------------------------------------------

def test_preflight_starts_its_command_in_the_environment_it_judged(elf: ElfFactory, machine: Path,  # noqa: F811
                                                                    isolated: Path) -> None:
    prefix = conda_env_with_activation(elf, isolated / "pf", machine)
    with open(prefix / "etc/conda/activate.d/cuda.sh", "a") as script:
        script.write(f"export CUDA_HOME={machine}/usr/local/cuda-10.0\n")
    first = isolated / "genuine"
    first.mkdir()
    Applier(str(isolated / "state"), str(prefix), False).apply(
        [Action("test", "search-path", "t", soname="libx.so.1", folder=str(first), position=FRONT, grade="safe")])
    judged = json.loads(cli("scan", "--json", "--env", str(prefix), tmp_path=isolated).stdout)
    environ = loader_env({"NO_COLOR": "1", "LIBDOCTOR_STATE_DIR": str(isolated / "state"),
                          "LIBDOCTOR_CACHE_DIR": str(isolated / "cache"), "PYTHONPATH": str(REPO)})
    proc = subprocess.Popen([sys.executable, "-m", "libdoctor", "preflight", "--json", "--warn-only", "--env",
                             str(prefix), "--", "sleep", "60"], env=environ, stderr=subprocess.PIPE, text=True)
    try:
        report = json.loads(proc.stderr.readline())
        deadline = time.monotonic() + 30
        while Path(f"/proc/{proc.pid}/cmdline").read_bytes().split(b"\0")[0] != b"sleep":
            assert time.monotonic() < deadline, "preflight never became the command"
            time.sleep(0.02)
        started = dict(item.split("=", 1) for item in
                       Path(f"/proc/{proc.pid}/environ").read_bytes().decode().split("\0") if "=" in item)
    finally:
        proc.kill()
        proc.wait()
    assert started["LD_LIBRARY_PATH"] == report["ld_library_path"] == judged["environment"]["ld_library_path"]
    assert started["LD_LIBRARY_PATH"].split(":")[0] == str(first)  # libdoctor's own addition, first
    assert f"{machine}/usr/local/cuda-10.0/lib64" in started["LD_LIBRARY_PATH"].split(":")  # activate.d's
    assert started["CUDA_HOME"] == f"{machine}/usr/local/cuda-10.0"  # every variable activate.d sets


# -- the report: verdict first, one block per cause; -v adds and drops nothing ------------------------

def test_verbose_is_the_default_report_plus_detail(field_env: dict) -> None:
    args = ("scan", "--env", str(field_env["prefix"]), "--look-in", field_env["look_in"])
    default = cli(*args, tmp_path=field_env["tmp"]).stdout.splitlines()
    verbose = cli(*args, "-v", tmp_path=field_env["tmp"]).stdout.splitlines()
    assert verbose[:len(default) - 1] == default[:-1]  # the same verdict, counts, causes and next step
    assert len(verbose) > len(default) + 10
    rest = "\n".join(verbose[len(default):])
    assert "paths considered in this order" in rest and "repairs, safest first" in rest
    assert "libtensorflow_framework.so.1" in rest


def test_one_cause_per_missing_symbol_listing_every_consumer(elf: ElfFactory, isolated: Path) -> None:
    stub = elf.stub("libbase.so.1", defines=["base_new"])
    elf.lib("lib/libbase.so.1", defines=["base_old"])  # stale: lacks what every consumer imports
    for n in range(4):
        elf.lib(f"app/libc{n}.so", defines=[f"c{n}"], calls=["base_new"], link=[stub], runpath=str(isolated / "lib"))
    done = cli("scan", str(isolated / "app"), tmp_path=isolated)
    blocks = [line for line in done.stdout.splitlines() if line.startswith("[✗]")]
    assert done.returncode == 1 and len(blocks) == 1, done.stdout
    assert "base_new" in blocks[0] and "libc0.so" in blocks[0] and "and 1 more" in blocks[0]


# -- the rules engine is the plug-in point; a broken plug-in changes no verdict ----------------------

def test_a_crashing_rule_plugin_is_a_warning_never_the_verdict(elf: ElfFactory, isolated: Path) -> None:
    plugins = isolated / "plugins"
    (plugins / "boom_rule-1.0.dist-info").mkdir(parents=True)
    (plugins / "boom_rule.py").write_text(textwrap.dedent("""
        class Boom:
            id = "boom"
            description = "always crashes"

            def check(self, ctx):
                raise RuntimeError("kaboom")

        RULE = Boom()
    """))
    (plugins / "boom_rule-1.0.dist-info/METADATA").write_text("Metadata-Version: 2.1\nName: boom-rule\nVersion: 1.0\n")
    (plugins / "boom_rule-1.0.dist-info/entry_points.txt").write_text("[libdoctor.rules]\nboom = boom_rule:RULE\n")
    healthy = elf.lib("app/libfine.so")
    env = {"PYTHONPATH": f"{plugins}{os.pathsep}{REPO}"}
    done = cli("scan", str(healthy), tmp_path=isolated, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("healthy:") and "[!] rule boom crashed and was skipped: RuntimeError: kaboom" in \
        done.stdout
    data = json.loads(cli("scan", "--json", str(healthy), tmp_path=isolated, env=env).stdout)
    (crash,) = [f for f in data["findings"] if f["id"] == "boom"]
    assert (crash["status"], crash["severity"], data["healthy"]) == ("crashed", "warning", True)
    skipped = cli("scan", "--skip-rule", "boom", str(healthy), tmp_path=isolated, env=env)
    assert skipped.returncode == 0 and "boom" not in skipped.stdout
    typo = cli("scan", "--rule", "missing-sonmae", str(healthy), tmp_path=isolated)
    assert typo.returncode == 2 and "unknown rule(s): missing-sonmae" in typo.stderr and typo.stdout == ""
    only = json.loads(cli("scan", "--json", "--rule", "driver", str(healthy), tmp_path=isolated).stdout)
    assert only["findings"] == [] and only["healthy"]


# -- "elsewhere" says whether each copy can serve, in the words fix grades with -----------------------

def test_elsewhere_names_copies_that_cannot_serve_as_fix_grades_them(elf: ElfFactory, isolated: Path) -> None:
    cuda13 = isolated / "usr/local/cuda-13.0/lib"
    elf.lib(cuda13 / "libcudart.so.13.0.48", soname="libcudart.so.13", defines=["cudaMalloc"])
    os.symlink("libcudart.so.13.0.48", cuda13 / "libcudart.so.13")
    hand = isolated / "hand"
    hand.mkdir()
    os.symlink(cuda13 / "libcudart.so.13", hand / "libcudart.so.12")  # the seed's trap: an impostor link
    stub = elf.stub("libcudart.so.12", defines=["cudaMalloc"])
    consumer = elf.lib("app/libuses12.so", calls=["cudaMalloc"], link=[stub])
    args = (str(consumer), "--look-in", str(cuda13), "--look-in", str(hand))
    data = json.loads(cli("scan", "--json", *args, tmp_path=isolated).stdout)
    (missing,) = [p for p in data["problems"] if p["kind"] == "missing"]
    assert missing["candidates"] and all(c["verdict"] == "no" for c in missing["candidates"]), missing["candidates"]
    assert {c["why"] for c in missing["candidates"]} == {"CUDA 13.0: not a substitute"}
    human = cli("scan", *args, tmp_path=isolated).stdout
    assert "(CUDA 13.0: not a substitute)" in human and "can serve" not in human
    plan = run_scan((str(consumer),), look_in=(str(cuda13), str(hand)))
    assert not plan.chosen and not any(a.kind == "search-path" for a in plan.actions)  # the trap is not offered
    links = [a for a in plan.actions if a.kind == "symlink"]
    assert links and all(a.grade == "broken" for a in links)
    assert all(any("CUDA 13.0: not a substitute" in e for e in a.evidence) for a in links)  # the same words


# -- one atomic writer; undo restores bytes and mode ---------------------------------------------------

def test_undo_of_an_updated_file_restores_its_bytes_and_mode(isolated: Path) -> None:
    root = str(isolated / "state")
    path = isolated / "conf/activate.sh"
    first = Applier(root, None, False)
    first.apply([])
    first.write_file(str(path), "# written by libdoctor: `libdoctor undo` removes it\nA=1\n")
    first.close()
    os.chmod(path, 0o640)
    original = path.read_bytes()
    second = Applier(root, None, False)
    second.write_file(str(path), "# written by libdoctor: `libdoctor undo` removes it\nA=2\n")
    outcome = second.close()
    assert path.read_bytes().endswith(b"A=2\n") and stat.S_IMODE(path.stat().st_mode) == 0o640  # mode kept
    assert undo(root, outcome.run_id) == [f"restored {path}"]
    assert path.read_bytes() == original and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_the_atomic_writer_never_writes_through_what_is_not_a_regular_file(tmp_path: Path) -> None:
    target = tmp_path / "real.txt"
    target.write_text("keep")
    os.chmod(target, 0o600)
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in (link, fifo):
        with pytest.raises(NotReplaceableError):
            write_atomic(str(path), b"new")
    assert target.read_text() == "keep" and stat.S_ISFIFO(os.lstat(fifo).st_mode)
    write_atomic(str(target), b"new")
    assert target.read_text() == "new" and stat.S_IMODE(target.stat().st_mode) == 0o600  # its mode kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link.txt", "real.txt"]  # no temporary left
    with pytest.raises(FileExistsError):
        write_atomic(str(target), b"again", replace=False)
    facts = FactsStore(str(tmp_path / "cache.json"))
    facts._dirty = True
    assert facts.save() is None and stat.S_IMODE((tmp_path / "cache.json").stat().st_mode) == 0o600


def test_a_rename_killed_between_its_link_and_unlink_is_undone(isolated: Path) -> None:
    from libdoctor.repair.fixer import Journal, new_run_id

    folder = isolated / "lib"
    folder.mkdir()
    link = folder / "libx.so.1"
    os.symlink("libx.so.2", link)
    aside = folder / ".libx.so.1.libdoctor-retired"
    root = str(isolated / "state")
    (isolated / "state/journal").mkdir(parents=True)
    journal = Journal(root, new_run_id(), None)
    journal.intend({"kind": "rename", "path": str(aside), "source": str(link), "target": "libx.so.2"})
    os.link(link, aside, follow_symlinks=False)  # the kill came here: both names, one link
    assert undo(root, None) == [f"restored {link}"]
    assert os.readlink(link) == "libx.so.2" and not os.path.lexists(aside)
