"""libdoctor preflight and the bert-serving-start hook, on a TF-1.14-like fixture environment."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from libdoctor.preflight import bert_serving_parser

from .conftest import ElfFactory
from .test_fix import snapshot
from .test_frameworks import TRY_LOAD, cuda_config, dist_info, make_env
from .test_watch import cli_env

FAKE_SERVER = """#!{python}
import os, sys
if sys.argv[1:] and sys.argv[1] in ("-h", "--help", "-version"):
    print("usage:", os.path.basename(sys.argv[0]), flush=True)
    sys.exit(0)
print(os.getpid(), os.environ.get("LD_LIBRARY_PATH", "<unset>"), " ".join(sys.argv[1:]), flush=True)
sys.exit(int(os.environ.get("FAKE_EXIT", "3")))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def bert(elf: ElfFactory, tmp_path: Path) -> dict:
    prefix, site = make_env(tmp_path / "envs/bert", "3.6")
    (prefix / "conda-meta").mkdir()
    elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=TRY_LOAD, extra=["-ldl"], runpath="$ORIGIN")
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7", TF_CUDA_LIB_VERSION="10.0")
    dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1"])
    server = prefix / "bin/bert-serving-start"
    server.write_text(FAKE_SERVER.format(python=os.path.realpath(sys.executable)))
    server.chmod(0o755)
    model = tmp_path / "models/chinese_L-12_H-768_A-12"
    model.mkdir(parents=True)
    for name in ("bert_config.json", "vocab.txt", "bert_model.ckpt.index", "bert_model.ckpt.data-00000-of-00001"):
        (model / name).write_text("x")
    ports = [free_port(), free_port()]
    args = ["-model_dir", str(model), "-num_worker=1", "-max_seq_len=None", "-port", str(ports[0]),
            f"-port_out={ports[1]}"]
    return {"prefix": prefix, "server": server, "model": model, "args": args, "ports": ports, "tmp": tmp_path}


def preflight(bert: dict, *options: str, extra_args: tuple[str, ...] = (), env: dict | None = None
              ) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "libdoctor.cli", "preflight", "--env", str(bert["prefix"]), *options, "--",
               str(bert["server"]), *bert["args"], *extra_args]
    return subprocess.run(command, env=env or cli_env(bert["tmp"]), capture_output=True, text=True, timeout=120)


def test_arguments_parse_like_bert_serving() -> None:
    args, _ = bert_serving_parser().parse_known_args(
        ["-model_dir", "/m", "-max_seq_len=None", "-port_in", "7000", "-port_result=7001", "-cpu",
         "-device_map", "0", "1", "-unknown_flag", "x"])
    assert (args.max_seq_len, args.port, args.port_out, args.cpu, args.device_map) == (None, 7000, 7001, True, [0, 1])
    assert bert_serving_parser().parse_known_args(["-model_dir", "/m"])[0].max_seq_len == 25


def test_check_only_ready_on_cpu(bert: dict) -> None:
    done = preflight(bert, "--check-only", "--json", extra_args=("-cpu",))
    data = json.loads(done.stdout)
    assert done.returncode == 0, done.stdout
    assert data["profile"] == "bert-serving" and not data["blocked"]
    assert {c["name"]: c["status"] for c in data["checks"]}["model"] == "ok"


def test_gpu_start_blocked_by_missing_libraries(bert: dict) -> None:
    done = preflight(bert, "--check-only", "--json")
    data = json.loads(done.stdout)
    checks = {c["name"]: c for c in data["checks"]}
    assert done.returncode == 1 and data["blocked"]
    assert checks["libraries of tensorflow-gpu 1.14.0"]["blocking"]
    details = checks["libraries of tensorflow-gpu 1.14.0"]["details"]
    assert any(d.startswith("libcudnn.so.7 (needed for the GPU)") for d in details)
    assert checks["workers"]["blocking"]  # no GPU visible, no -cpu: the silent CPU run is refused


def test_port_held_by_a_real_socket_blocks_the_start(bert: dict) -> None:
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", bert["ports"][0]))
        holder.listen()
        done = preflight(bert, extra_args=("-cpu",))
    assert done.returncode == 1
    assert f"-port {bert['ports'][0]}: in use" in done.stderr
    assert done.stdout == ""  # the server never ran


def test_exec_keeps_the_pid_and_the_exit_status(bert: dict) -> None:
    env = cli_env(bert["tmp"], FAKE_EXIT="7")
    proc = subprocess.Popen([sys.executable, "-m", "libdoctor.cli", "preflight", "--env", str(bert["prefix"]), "--",
                             str(bert["server"]), *bert["args"], "-cpu"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 7, err
    pid, _llp, args = out.split(" ", 2)
    assert int(pid) == proc.pid
    assert "-max_seq_len=None" in args and "ready" in err


def test_tensorflow_2_is_refused(bert: dict) -> None:
    site = bert["prefix"] / "lib/python3.6/site-packages"
    for dist in site.glob("tensorflow_gpu-*.dist-info"):
        dist.rename(site / "tensorflow-2.3.0.dist-info")
    done = preflight(bert, "--check-only", "--json", extra_args=("-cpu",))
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert done.returncode == 1 and "TensorFlow 2" in checks["tensorflow"]["message"]


def test_hook_install_wrapper_activation_and_remove(bert: dict) -> None:
    prefix = bert["prefix"]
    original = bert["server"].read_bytes()
    before = snapshot(prefix)
    env = cli_env(bert["tmp"])
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "hook", "install", "--env", str(prefix)],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert (prefix / "bin/bert-serving-start.libdoctor-orig").read_bytes() == original
    wrapper = (prefix / "bin/bert-serving-start").read_text()
    assert "preflight" in wrapper and os.access(prefix / "bin/bert-serving-start", os.X_OK)
    # the wrapper runs preflight, then the original server with the same arguments
    run = subprocess.run([str(prefix / "bin/bert-serving-start"), *bert["args"], "-cpu"],
                         env={**env, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 3 and "-max_seq_len=None" in run.stdout, run.stderr
    assert "bert-serving-start.libdoctor-orig" not in run.stderr + run.stdout  # the user's name everywhere
    for flag in ("-h", "--help", "-version"):  # straight to the real command, which sees its own name
        asked = subprocess.run([str(prefix / "bin/bert-serving-start"), flag], env=env, capture_output=True,
                               text=True, timeout=60)
        assert (asked.returncode, asked.stdout, asked.stderr) == (0, "usage: bert-serving-start\n", ""), flag
    activate = prefix / "etc/conda/activate.d/libdoctor.sh"
    deactivate = prefix / "etc/conda/deactivate.d/libdoctor.sh"
    script = f'. {activate}; . {deactivate}; if [ "${{LD_LIBRARY_PATH+set}}" = set ]; then printf "[%s]" ' \
             f'"$LD_LIBRARY_PATH"; else printf UNSET; fi'
    for start, expected in ((None, "UNSET"), ("", "[]"), ("/a b::/c", "[/a b::/c]")):
        shell_env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        if start is not None:
            shell_env["LD_LIBRARY_PATH"] = start
        out = subprocess.run(["bash", "-c", script], env=shell_env, capture_output=True, text=True).stdout
        assert out == expected
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "hook", "remove", "--env", str(prefix)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout
    assert snapshot(prefix) == before
    assert hashlib.sha256(bert["server"].read_bytes()).digest() == hashlib.sha256(original).digest()


def test_preflight_names_what_is_wrong_and_the_next_step(bert: dict) -> None:
    port = bert["ports"][0]
    same = preflight(bert, "--check-only", extra_args=("-cpu", "-port_out", str(port)))
    assert same.returncode == 1 and f"-port and -port_out are both {port}" in same.stdout
    assert "next step: give -port_out another port" in same.stdout
    typo = subprocess.run([sys.executable, "-m", "libdoctor.cli", "preflight", "--env", str(bert["prefix"]),
                           "--check-only", "--", str(bert["server"]), "-model_dir", str(bert["model"]) + "x", "-cpu"],
                          env=cli_env(bert["tmp"]), capture_output=True, text=True, timeout=120)
    assert typo.returncode == 1 and f"-model_dir {bert['model']}x: no such folder" in typo.stdout
    missing = subprocess.run([sys.executable, "-m", "libdoctor.cli", "preflight", "--env", str(bert["prefix"]),
                              "--check-only", "--", "bert-serving-strat", *bert["args"], "-cpu"],
                             env=cli_env(bert["tmp"]), capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "bert-serving-strat: not found on PATH" in missing.stdout
    assert "ready" not in missing.stdout.splitlines()[-1]
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", port))
        holder.listen()
        busy = preflight(bert, "--check-only", extra_args=("-cpu",))
    assert f"-port {port}: in use (by " in busy.stdout and f"(pid {os.getpid()})" in busy.stdout
