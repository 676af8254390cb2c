"""Rules, verification and fix --apply on the field scenario, judged by the real loader."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from libdoctor.loader.factstore import FactsStore
from libdoctor.repair.fix import apply_plan
from libdoctor.scan import run_scan
from libdoctor.repair.fixer import applied_folders, undo
from libdoctor.rules import available_rules, run_rules
from libdoctor.rules.base import Placement, RuleContext

from .conftest import ElfFactory, ldso_trace, loader_env

REPO = Path(__file__).resolve().parent.parent

DLOPEN_BODY = r"""
#include <dlfcn.h>
int load_all(void) {
    void *dnn = dlopen("libcudnn.so.7", RTLD_NOW);
    void *rt = dlopen("libcudart.so.10.0", RTLD_NOW);
    if (!dnn || !rt) return 1;
    if (!dlsym(dnn, "cudnnCreate") || !dlsym(dnn, "cudnnGetConvolutionForwardAlgorithm")) return 2;
    return 0;
}
"""


def snapshot(root: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """Every path below ``root`` with its type, link target or content hash, and mode."""
    state = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if os.path.join(folder, d) not in skip]
        for name in dirs + files:
            path = os.path.join(folder, name)
            st = os.lstat(path)
            if os.path.islink(path):
                state[path] = "link:" + os.readlink(path)
            elif os.path.isdir(path):
                state[path] = f"dir:{oct(st.st_mode)}"
            else:
                state[path] = f"file:{oct(st.st_mode)}:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return state


@pytest.fixture
def field(elf: ElfFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.setenv("LIBDOCTOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIBDOCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    monkeypatch.delenv("CONDA_PREFIX", raising=False)
    return build_field(elf, tmp_path)


def build_field(elf: ElfFactory, tmp_path: Path) -> dict:
    """TF-1.14-like consumers (DT_NEEDED and dlopen styles) on a machine with CUDA 11 and cuDNN 8,
    where CUDA 10.0's files and cuDNN 7.6.5 also lie, off every search path."""
    tree = tmp_path / "tree"
    state = tmp_path / "state"
    stubs = [
        elf.stub("libcudart.so.10.0", ["cudaMalloc"], {"libcudart.so.10.0": ["cudaMalloc"]}),
        elf.stub("libcublas.so.10.0", ["cublasCreate_v2"]),
        elf.stub("libcusparse.so.10.0", ["cusparseCreate"]),
        elf.stub("libcudnn.so.7", ["cudnnCreate", "cudnnGetConvolutionForwardAlgorithm"]),
    ]
    elf.lib("tree/opt/cuda-10.0/lib64/libcudart.so.10.0.130", soname="libcudart.so.10.0", defines=["cudaMalloc"],
            version_script={"libcudart.so.10.0": ["cudaMalloc"]})
    elf.lib("tree/opt/cuda-10.0/lib64/libcublas.so.10.0", defines=["cublasCreate_v2"])
    elf.lib("tree/opt/cuda-10.0/lib64/libcusparse.so.10.0", defines=["cusparseCreate"])
    elf.lib("tree/opt/cudnn-7.6/lib64/libcudnn.so.7.6.5", soname="libcudnn.so.7",
            defines=["cudnnCreate", "cudnnGetConvolutionForwardAlgorithm"])
    cuda11 = tree / "usr/local/cuda-11.0/lib64"
    elf.lib(cuda11 / "libcudart.so.11.0", defines=["cudaMalloc"], version_script={"libcudart.so.11.0": ["cudaMalloc"]})
    elf.lib(cuda11 / "libcusparse.so.11", defines=["cusparseCreate"])
    elf.lib("tree/usr/local/cudnn-8/lib64/libcudnn.so.8", defines=["cudnnCreate"])
    env = tree / "envs/bert"
    (env / "conda-meta").mkdir(parents=True)
    site = env / "lib/python3.6/site-packages/tensorflow"
    needed = elf.lib(site / "libtensorflow_framework.so.1",
                     calls=["cudaMalloc", "cublasCreate_v2", "cusparseCreate", "cudnnCreate"], link=stubs,
                     runpath=str(cuda11))
    dlopened = elf.lib(site / "libtf_dlopen.so", body=DLOPEN_BODY, extra=["-ldl"], runpath=str(cuda11))
    look_in = (str(tree / "opt/cuda-10.0/lib64"), str(tree / "opt/cudnn-7.6/lib64"), str(cuda11),
               str(tree / "usr/local/cudnn-8/lib64"))
    return {"tree": tree, "state": state, "env": env, "needed": needed, "dlopened": dlopened, "look_in": look_in,
            "cuda11": cuda11}


def plan_for(field: dict, **kwargs):
    return run_scan((str(field["needed"]), str(field["dlopened"])), prefix=str(field["env"]), dlopen_strings=True,
                     look_in=field["look_in"], **kwargs)


def by_link(plan, link_name: str, target_part: str):
    return next(p for p in plan.actions if p.kind == "symlink" and p.link.endswith("/" + link_name)
                and target_part in p.target)


def test_plan_grades_against_the_elf_facts(field: dict) -> None:
    plan = plan_for(field)
    problems = {(p.kind, p.soname) for p in plan.problems}
    assert ("missing", "libcudnn.so.7") in problems and ("missing-dlopen", "libcudnn.so.7") in problems
    assert by_link(plan, "libcudnn.so.7", "cudnn-7.6").grade == "safe"
    assert by_link(plan, "libcudart.so.10.0", "cuda-10.0").grade == "safe"
    cross_major = by_link(plan, "libcudart.so.10.0", "cuda-11.0")
    assert cross_major.grade == "broken"
    assert any("version `libcudart.so.10.0' not found" in e for e in cross_major.evidence)
    cudnn8 = by_link(plan, "libcudnn.so.7", "cudnn-8")
    assert cudnn8.grade == "broken"
    assert any("cudnnGetConvolutionForwardAlgorithm" in e for e in cudnn8.evidence)  # the dlsym names
    search = [p for p in plan.actions if p.kind == "search-path"]
    assert {p.soname for p in search} == {"libcublas.so.10.0", "libcusparse.so.10.0"}
    assert all(p.grade == "safe" for p in search)
    assert {p.soname for p in plan.chosen} == {"libcudart.so.10.0", "libcublas.so.10.0", "libcusparse.so.10.0",
                                               "libcudnn.so.7"}
    assert all(p.grade != "broken" for p in plan.chosen)


def test_the_broken_link_really_fails_in_the_loader(field: dict, tmp_path: Path, loader_info) -> None:
    links = tmp_path / "manual"
    links.mkdir()
    os.symlink(field["cuda11"] / "libcudart.so.11.0", links / "libcudart.so.10.0")
    extra = {"LD_LIBRARY_PATH": f"{links}:{field['tree'] / 'opt/cuda-10.0/lib64'}:"
                                f"{field['tree'] / 'opt/cudnn-7.6/lib64'}"}
    trace = ldso_trace(loader_info, str(field["needed"]), str(tmp_path), extra)
    assert "version `libcudart.so.10.0' not found" in trace.stderr


def test_apply_then_loader_resolves_then_undo_restores(field: dict, loader_info) -> None:
    before = snapshot(field["tree"].parent, skip=(str(field["state"]), str(field["tree"].parent / "cache")))
    plan = plan_for(field)
    outcome = apply_plan(plan)
    assert outcome.run_id and len(outcome.created) >= 4 and not outcome.refused
    front, back = applied_folders(str(field["env"]))
    env = {"LD_LIBRARY_PATH": ":".join(front + back)}
    trace = ldso_trace(loader_info, str(field["needed"]), str(field["tree"]), env)
    assert all(path for _name, path in trace.entries) and "not found" not in trace.stderr, trace
    probe = (f"import ctypes; lib = ctypes.CDLL({str(field['needed'])!r}); "
             f"d = ctypes.CDLL({str(field['dlopened'])!r}); assert d.load_all() == 0, d.load_all()")
    run = subprocess.run([sys.executable, "-c", probe], env=loader_env(env), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    after = plan_for(field)
    assert not after.problems
    again = apply_plan(after)
    assert again.run_id is None and not again.created  # applying twice creates nothing new
    activate = field["env"] / "etc/conda/activate.d/libdoctor.sh"
    assert activate.exists()
    undo(str(field["state"]), outcome.run_id)
    assert snapshot(field["tree"].parent, skip=(str(field["state"]), str(field["tree"].parent / "cache"))) == before


def test_in_place_links_sit_beside_the_libraries(field: dict, loader_info) -> None:
    before = snapshot(field["tree"])
    plan = plan_for(field, in_place=True)
    cudnn = next(p for p in plan.chosen if p.soname == "libcudnn.so.7")
    assert cudnn.kind == "symlink"
    outcome = apply_plan(plan)
    assert any(c.endswith("libcudnn.so.7") for c in outcome.created)
    created = [Path(c) for c in outcome.created if c.startswith("/") and "/etc/conda/" not in c]
    assert created and all(p.is_symlink() for p in created)  # beside the libraries; the activation adds folders
    undo(str(field["state"]), outcome.run_id)
    assert snapshot(field["tree"]) == before


def test_conda_activation_restores_ld_library_path_exactly(field: dict) -> None:
    outcome = apply_plan(plan_for(field))
    activate = field["env"] / "etc/conda/activate.d/libdoctor.sh"
    deactivate = field["env"] / "etc/conda/deactivate.d/libdoctor.sh"
    script = (f'. {activate}; printf "%s\\n" "${{LD_LIBRARY_PATH-UNSET}}"; . {deactivate}; '
              'printf "%s\\n" "${LD_LIBRARY_PATH-UNSET}"')
    for start, expected in ((None, "UNSET"), ("", ""), ("/a b:/c", "/a b:/c")):
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        if start is not None:
            env["LD_LIBRARY_PATH"] = start
        out = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True).stdout.split("\n")
        assert str(field["state"]) in out[0] and not out[0].startswith(":")
        assert out[1] == expected
    undo(str(field["state"]), outcome.run_id)
    assert not activate.exists()


def test_undo_leaves_what_changed_since(field: dict) -> None:
    plan = plan_for(field)
    outcome = apply_plan(plan)
    link = next(Path(c) for c in outcome.created if c.endswith("libcudnn.so.7"))
    link.unlink()
    os.symlink("/somewhere/else", link)
    report = undo(str(field["state"]), outcome.run_id)
    assert any(line.startswith(f"left {link}") for line in report)
    assert os.readlink(link) == "/somewhere/else"


def test_dlopen_consumer_with_missing_dlsym_names_is_broken(elf: ElfFactory, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LIBDOCTOR_STATE_DIR", str(tmp_path / "state"))
    elf.lib("new/libfoo.so.2", defines=["foo_new"])
    body = r"""
#include <dlfcn.h>
int use(void) { void *h = dlopen("libfoo.so.1", RTLD_NOW); return h && dlsym(h, "foo_old") && dlsym(h, "foo_new"); }
"""
    plugin = elf.lib("app/libplugin.so", body=body, extra=["-ldl"])
    plan = run_scan((str(plugin),), dlopen_strings=True, look_in=(str(tmp_path / "new"),))
    link = next(p for p in plan.actions if p.kind == "symlink" and p.soname == "libfoo.so.1")
    assert link.grade == "broken"
    assert any("foo_old" in e for e in link.evidence) and not plan.chosen


def test_a_crashing_rule_becomes_a_finding(field: dict) -> None:
    class Boom:
        id = "boom"
        description = "always crashes"

        def check(self, ctx):  # noqa: ANN001, ANN201
            raise RuntimeError("kaboom")

    plan = plan_for(field)
    ctx = RuleContext(plan, plan.env, FactsStore(),
                      Placement(False, "/nonexistent"))
    findings, _ = run_rules(ctx, [Boom()] + available_rules()[:1])
    assert findings[0].status == "crashed" and "kaboom" in findings[0].title
    assert any(f.id == "missing-soname" for f in findings)


def test_cli_fix_apply_json_and_killed_run(field: dict, tmp_path: Path) -> None:
    env = loader_env({"LIBDOCTOR_STATE_DIR": str(field["state"]), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                      "PYTHONPATH": str(REPO), "LIBDOCTOR_TEST_PAUSE_AFTER_CHANGE": "0.5"})
    args = [sys.executable, "-m", "libdoctor.cli", "fix", "--apply", "--yes", "--json", "--dlopen-strings", "--env",
            str(field["env"]), str(field["needed"]), str(field["dlopened"])]
    for folder in field["look_in"]:
        args += ["--look-in", folder]
    before = snapshot(field["tree"])
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    journal_dir = field["state"] / "journal"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once it has made its second change
        journals = list(journal_dir.glob("*.json")) if journal_dir.exists() else []
        if journals:
            data = json.loads(journals[0].read_text() or "{}")
            if sum(a.get("state") == "done" for a in data.get("actions", [])) >= 2:
                break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    shims = list((field["state"] / "shims").rglob("*"))
    for path in shims:
        assert not path.is_symlink() or os.readlink(path).startswith("/")  # whole links only
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "undo", "--all"], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(field["tree"]) == before
    assert not any(p.is_symlink() for p in (field["state"] / "shims").rglob("*"))
    env.pop("LIBDOCTOR_TEST_PAUSE_AFTER_CHANGE")
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    data = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout
    assert data["schema_version"] == 1 and data["after"]["problems"] == 0
    assert {p["grade"] for p in data["proposals"] if p["kind"] == "symlink"} >= {"safe", "broken"}
    assert {f["id"] for f in data["findings"]} >= {"missing-soname"}


def test_apply_checks_every_folder_before_the_first_change(field: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unwritable folder found only after some links were made used to leave a half-applied run."""
    from libdoctor.errors import UsageError

    plan = plan_for(field, in_place=True)
    assert any(p.link for p in plan.chosen)
    blocked = os.path.dirname(sorted(p.link for p in plan.chosen if p.link)[-1])  # the last folder written
    before = snapshot(field["tree"])
    if os.geteuid() == 0:  # root may write anywhere: stand in for the kernel's answer to another user
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda path, mode, **kw: os.path.realpath(path) != os.path.realpath(
            blocked) and real_access(path, mode, **kw))
    else:
        os.chmod(blocked, 0o555)
    with pytest.raises(UsageError, match=f"cannot write {blocked}.*nothing was changed; run as its owner, or "
                                         "without --in-place"):
        apply_plan(plan)
    assert snapshot(field["tree"]) == before


def test_fix_plan_is_printed_once_deduplicated_and_safest_first(field: dict, tmp_path: Path) -> None:
    env = loader_env({"LIBDOCTOR_STATE_DIR": str(field["state"]), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                      "PYTHONPATH": str(REPO), "NO_COLOR": "1"})
    args = [sys.executable, "-m", "libdoctor.cli", "fix", "--dlopen-strings", "--env", str(field["env"]),
            str(field["needed"]), str(field["dlopened"])]
    for folder in field["look_in"]:
        args += ["--look-in", folder]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    lines = [line for line in done.stdout.splitlines() if line.startswith(("  * [", "    [", " * [", "   ["))]
    assert len(lines) == len(set(lines)), done.stdout  # no line twice
    grades = [line.split("[")[1].split("]")[0] for line in lines]
    order = {"safe": 0, "risky": 1, "broken": 2, "hint": 3}
    assert grades == sorted(grades, key=order.__getitem__), grades  # really safest first
    assert sum("search-path" in line for line in lines) <= 1, done.stdout  # one folder, one line
    refused = subprocess.run(args + ["--apply"], env=env, capture_output=True, text=True, timeout=120,
                             stdin=subprocess.DEVNULL)
    assert refused.returncode == 2 and "give --yes" in refused.stderr and refused.stdout == ""


def test_a_relative_look_in_folder_gives_absolute_links(field: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(field["tree"])
    look_in = tuple(os.path.relpath(f, field["tree"]) for f in field["look_in"])
    plan = run_scan((str(field["needed"]),), prefix=str(field["env"]), look_in=look_in)
    links = [p for p in plan.actions if p.kind == "symlink"]
    assert links and all(p.target.startswith("/") for p in links), [p.target for p in links]
    assert all(p.folder.startswith("/") for p in plan.actions if p.kind == "search-path")
    assert by_link(plan, "libcudnn.so.7", "cudnn-7.6").grade == "safe"


def test_in_place_link_in_an_origin_relative_folder_is_graded_by_what_the_loader_does(
        elf: ElfFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The most common layout: bin/app with RUNPATH $ORIGIN/../lib; the link goes into lib/."""
    monkeypatch.setenv("LIBDOCTOR_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("LIBDOCTOR_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("LD_LIBRARY_PATH", raising=False)
    stub = elf.stub("libfoo.so.1", defines=["foo"])
    elf.lib("app/lib/libfoo.so.1.2.3", soname="libfoo.so.1", defines=["foo"])  # the name link is missing
    program = elf.exe("app/bin/tool", calls=["foo"], link=[stub], runpath="$ORIGIN/../lib")
    plan = run_scan((str(program),), in_place=True, look_in=(str(tmp_path / "app/lib"),))
    link = next(p for p in plan.actions if p.kind == "symlink" and p.soname == "libfoo.so.1")
    assert link.link == str(tmp_path / "app/lib/libfoo.so.1") and link.grade == "safe", link.evidence
    apply_plan(plan)
    run = subprocess.run([str(program)], env=loader_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr  # the loader agrees: the same link fixes the load
