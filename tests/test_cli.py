"""The command line: exit statuses, JSON schema, human output, bad input, the facts cache."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from libdoctor.loader.factstore import FactsStore

from .conftest import ElfFactory, loader_env, read_terminal


def run_cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = loader_env()
    environ.update({"LIBDOCTOR_CACHE_DIR": str(cwd / ".cache"), "NO_COLOR": "1",
                    "PYTHONPATH": str(Path(__file__).resolve().parent.parent)})
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "libdoctor.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def field_tree(elf: ElfFactory, tmp_path: Path) -> Path:
    """A TF-1.14-like consumer needing cuDNN 7 while cuDNN 8 is installed elsewhere."""
    cudnn7 = elf.stub("libcudnn.so.7", defines=["cudnnCreate"])
    cudart = elf.lib("cuda/lib64/libcudart.so.10.0", defines=["cudaMalloc"])
    elf.lib("cuda/lib64/libcudnn.so.8", defines=["cudnnCreate"])
    elf.lib("site/tensorflow/libtensorflow_framework.so.1", calls=["cudnnCreate", "cudaMalloc"],
            link=[cudnn7, cudart], runpath=str(tmp_path / "cuda/lib64"))
    elf.lib("site/tensorflow/libok.so", calls=["cudaMalloc"], link=[cudart], runpath=str(tmp_path / "cuda/lib64"))
    (tmp_path / "site/tensorflow/README.txt").write_text("not a library")
    os.symlink("missing-target.so", tmp_path / "site/tensorflow/libdangling.so")
    return tmp_path


def test_scan_json_schema_and_exit_status(field_tree: Path) -> None:
    done = run_cli("scan", "--json", str(field_tree / "site"), cwd=field_tree)
    assert done.returncode == 1, done.stderr
    data = json.loads(done.stdout)
    assert data["schema_version"] == 1
    by_path = {t["path"]: t for t in data["targets"]}
    bad = by_path[str(field_tree / "site/tensorflow/libtensorflow_framework.so.1")]
    assert bad["verdict"] == "problems"
    closure = {c["soname"]: c for c in bad["closure"]}
    assert closure["libcudnn.so.7"]["path"] is None
    assert closure["libcudart.so.10.0"]["path"] == str(field_tree / "cuda/lib64/libcudart.so.10.0")
    assert closure["libcudart.so.10.0"]["via"] == "runpath"
    assert len(bad["closure"]) == len({c["soname"] for c in bad["closure"]})
    problem = data["problems"][0]
    assert problem["kind"] == "missing" and problem["soname"] == "libcudnn.so.7"
    assert [s["source"] for s in problem["search"]] == ["rpath", "LD_LIBRARY_PATH", "runpath", "ld.so.cache", "system"]
    (cudnn8,) = [c for c in problem["candidates"] if c["path"] == str(field_tree / "cuda/lib64/libcudnn.so.8")]
    assert (cudnn8["name"], cudnn8["exact"], cudnn8["verdict"]) == ("libcudnn.so.8", False, "no")
    assert cudnn8["why"].endswith("not a substitute")  # cuDNN 8 never stands in for 7: scan says so too
    assert by_path[str(field_tree / "site/tensorflow/libok.so")]["verdict"] == "ok"
    assert any("dangling symlink" in n for n in data["notes"])


def test_scan_human_output_explains(field_tree: Path) -> None:
    done = run_cli("scan", "-v", str(field_tree / "site/tensorflow/libtensorflow_framework.so.1"), cwd=field_tree,
                   env={"LD_LIBRARY_PATH": str(field_tree / "cuda")})
    assert done.returncode == 1
    out = done.stdout
    assert "libcudnn.so.7 not found" in out
    assert "paths considered in this order" in out
    assert f"runpath of {field_tree}/site/tensorflow/libtensorflow_framework.so.1" in out
    assert "\033[" not in out  # NO_COLOR, and not a terminal


def test_scan_healthy_exits_zero(field_tree: Path) -> None:
    done = run_cli("scan", str(field_tree / "site/tensorflow/libok.so"), cwd=field_tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.startswith("healthy: every library resolves (1 object checked)")
    assert len(done.stdout.splitlines()) <= 5  # a healthy report is short


def test_bad_inputs_are_one_line_and_the_run_goes_on(field_tree: Path, tmp_path: Path) -> None:
    (tmp_path / "libscript.so").write_text("/* GNU ld script */\nGROUP ( libc.so.6 )\n")
    (tmp_path / "libtext.so").write_text("hello")
    done = run_cli("scan", str(tmp_path / "libscript.so"), str(tmp_path / "libtext.so"),
                   str(field_tree / "site/tensorflow/libok.so"), cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "GNU ld script" in done.stdout and "libc.so.6" in done.stdout
    assert "3 objects checked" in done.stdout  # the good target was still scanned
    assert sum(line.startswith("[") for line in done.stdout.splitlines()) == 2  # one line per bad input
    typo = run_cli("scan", str(tmp_path / "nope.so"), str(field_tree / "site/tensorflow/libok.so"), cwd=tmp_path)
    assert typo.returncode == 2 and f"TARGET {tmp_path / 'nope.so'}: no such file or directory" in typo.stderr


def test_usage_error_exits_two(tmp_path: Path) -> None:
    done = run_cli("scan", "--env", "/x", "--python", "/y", cwd=tmp_path)
    assert done.returncode == 2
    done = run_cli("scan", "--no-such-flag", cwd=tmp_path)
    assert done.returncode == 2


def test_default_scan_without_frameworks_checks_cuda(tmp_path: Path) -> None:
    (tmp_path / "venv/lib/python3.9/site-packages").mkdir(parents=True)
    done = run_cli("scan", "--env", str(tmp_path / "venv"), "--json", cwd=tmp_path)
    assert done.returncode in (0, 1), done.stderr
    data = json.loads(done.stdout)
    assert any("no GPU framework installed" in n for n in data["notes"])


def test_framework_targets_resolve_as_dlopen_from_python(elf: ElfFactory, tmp_path: Path) -> None:
    site = tmp_path / "env/lib/python3.6/site-packages"
    dep = elf.lib("env/lib/python3.6/site-packages/nvidia/cudnn/lib/libcudnn.so.9", defines=["c9"])
    elf.lib("env/lib/python3.6/site-packages/torch/lib/libtorch_cuda.so", calls=["c9"], link=[dep],
            rpath="$ORIGIN/../../nvidia/cudnn/lib")
    dist = site / "torch-2.14.1.dist-info"
    dist.mkdir()
    (dist / "RECORD").write_text("torch/lib/libtorch_cuda.so,sha256=x,1\ntorch/__init__.py,,\n")
    (tmp_path / "env/bin").mkdir()
    os.symlink(os.path.realpath(sys.executable), tmp_path / "env/bin/python3")
    done = run_cli("scan", "--env", str(tmp_path / "env"), "--json", cwd=tmp_path)
    data = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout
    assert data["environment"]["frameworks"][0]["name"] == "torch"
    target = data["targets"][0]
    assert target["mode"] == "dlopen" and target["caller"] == str(tmp_path / "env/bin/python3")
    assert {c["soname"]: c["via"] for c in target["closure"]}["libcudnn.so.9"] == "rpath"


def test_facts_cache_makes_a_warm_scan_parse_nothing(field_tree: Path, tmp_path: Path) -> None:
    cache_dir = tmp_path / "cachedir"
    env = {"LIBDOCTOR_CACHE_DIR": str(cache_dir)}
    run_cli("scan", str(field_tree / "site"), cwd=tmp_path, env=env)
    cache_file = next(cache_dir.iterdir())
    store = FactsStore(str(cache_file))
    assert store.load_problem is None
    lib = field_tree / "site/tensorflow/libok.so"
    store.get_path(str(lib))
    assert store.parsed == 0  # served from the saved cache
    cache_file.write_text("{not json")
    done = run_cli("scan", str(lib), cwd=tmp_path, env=env)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    assert FactsStore(str(cache_file)).load_problem is None  # rebuilt


def test_facts_cache_notices_a_changed_file(elf: ElfFactory, tmp_path: Path) -> None:
    store = FactsStore(str(tmp_path / "facts.json"))
    lib = elf.lib("libchange.so.1", defines=["a"])
    assert store.get_path(str(lib)).soname == "libchange.so.1"
    store.save()
    elf.lib("libchange.so.1", soname="libchanged.so.2", defines=["a", "b"])
    again = FactsStore(str(tmp_path / "facts.json"))
    assert again.get_path(str(lib)).soname == "libchanged.so.2"
    assert again.parsed == 1


def test_rescan_reuses_an_unchanged_report_and_notices_changes(field_tree: Path) -> None:
    from libdoctor.loader.environment import Environment
    from libdoctor.scan import run_scan

    store = FactsStore()
    folder = str(field_tree / "site")
    first = run_scan((folder,), env=Environment.from_process(environ={}, cwd=str(field_tree)), store=store)
    again = run_scan((folder,), env=Environment.from_process(environ={}, cwd=str(field_tree)), store=store,
                     previous=first)
    assert again is first
    (field_tree / "cuda/lib64/libcudnn.so.7").symlink_to("libcudnn.so.8")  # a searched folder changes
    third = run_scan((folder,), env=Environment.from_process(environ={}, cwd=str(field_tree)), store=store,
                     previous=again)
    assert third is not first
    assert not any(p.soname == "libcudnn.so.7" and p.kind == "missing" for p in third.problems)
    other_env = Environment.from_process(environ={"LD_LIBRARY_PATH": "/x"}, cwd=str(field_tree))
    assert run_scan((folder,), env=other_env, store=store, previous=third) is not third


def test_man_page_and_shell_completion_come_from_the_commands(tmp_path: Path) -> None:
    import shutil

    page = run_cli("man", cwd=tmp_path)
    assert page.returncode == 0 and page.stdout.startswith(".TH LIBDOCTOR 1")
    for command in ("scan", "fix", "explain", "watch", "preflight", "schema", "undo", "hook install"):
        assert f".B libdoctor {command}" in page.stdout.replace("\\-", "-"), command
    if shutil.which("groff"):  # it renders, without errors
        rendered = subprocess.run(["groff", "-man", "-Tascii", "-P-cbou"], input=page.stdout, capture_output=True,
                                  text=True)
        assert rendered.returncode == 0 and "error" not in rendered.stderr and "libdoctor scan" in rendered.stdout
    # click derives the program name from the script: ask the console script's entry point directly
    completion = subprocess.run([sys.executable, "-c", "from libdoctor.cli import main; main(prog_name='libdoctor')"],
                                env={**loader_env(), "_LIBDOCTOR_COMPLETE": "bash_source",
                                     "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                                capture_output=True, text=True)
    assert "_libdoctor_completion()" in completion.stdout and "complete " in completion.stdout
    words = subprocess.run([sys.executable, "-c", "from libdoctor.cli import main; main(prog_name='libdoctor')"],
                           env={**loader_env(), "_LIBDOCTOR_COMPLETE": "bash_complete", "COMP_WORDS": "libdoctor ex",
                                "COMP_CWORD": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
                           capture_output=True, text=True)
    assert "explain" in words.stdout


def test_a_progress_line_on_a_terminal_only(field_tree: Path) -> None:
    import pty

    target = str(field_tree / "site/tensorflow/libok.so")
    env = {**loader_env(), "LIBDOCTOR_CACHE_DIR": str(field_tree / ".cache"), "NO_COLOR": "1",
           "LIBDOCTOR_PROGRESS_AFTER": "0", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    main_fd, child_fd = pty.openpty()
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "scan", target], env=env, stdout=subprocess.PIPE,
                          stderr=child_fd, text=True, timeout=120)
    os.close(child_fd)
    seen = read_terminal(main_fd)
    os.close(main_fd)
    assert done.returncode == 0
    assert b"libdoctor: resolving every dependency..." in seen and seen.endswith(b"\r\x1b[K")
    assert "resolving" not in done.stdout  # never on stdout
    piped = subprocess.run([sys.executable, "-m", "libdoctor.cli", "scan", target], env=env, capture_output=True,
                           text=True, timeout=120)
    assert "resolving" not in piped.stderr  # not a terminal: no progress line
