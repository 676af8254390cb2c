"""Every --json output, from real runs, validated against the JSON Schema libdoctor ships (libdoctor schema)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema

from .conftest import loader_env
from .test_cli import field_tree  # noqa: F401 - fixtures
from .test_fix import field  # noqa: F401
from .test_preflight import bert, free_port  # noqa: F401
from .test_watch import PS_CHILD, cli_env

REPO = Path(__file__).resolve().parent.parent


def libdoctor(*args: str, env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "libdoctor", *args], env=env, capture_output=True, text=True,
                          timeout=180, cwd=cwd, stdin=subprocess.DEVNULL)


def schema_of(name: str, env: dict) -> dict:
    done = libdoctor("schema", name, env=env)
    assert done.returncode == 0, done.stderr
    schema = json.loads(done.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


def valid(document: str, name: str, env: dict) -> dict:
    data = json.loads(document)
    jsonschema.validate(data, schema_of(name, env), cls=jsonschema.Draft202012Validator)
    return data


def test_every_schema_is_listed_and_well_formed(tmp_path: Path) -> None:
    env = cli_env(tmp_path)
    listing = libdoctor("schema", env=env).stdout.splitlines()
    assert len(listing) == 11 and all(": libdoctor " in line for line in listing)
    for line in listing:
        schema_of(line.split(":")[0], env)


def test_scan_explain_and_rules_outputs_are_valid(field_tree: Path, tmp_path: Path) -> None:  # noqa: F811
    env = cli_env(tmp_path, LD_LIBRARY_PATH=str(field_tree / "cuda"))
    target = str(field_tree / "site/tensorflow/libtensorflow_framework.so.1")
    done = libdoctor("scan", "--json", target, env=env, cwd=field_tree)
    data = valid(done.stdout, "scan", env)
    assert done.returncode == 1 and data["healthy"] is False and data["next_step"]
    assert {p["kind"] for p in data["problems"]} == {"missing"} and data["causes"][0]["error"]
    healthy = libdoctor("scan", "--json", str(field_tree / "site/tensorflow/libok.so"), env=env, cwd=field_tree)
    assert valid(healthy.stdout, "scan", env)["healthy"] is True
    explained = libdoctor("explain", "libcudnn.so.7", "--json", target, env=env, cwd=field_tree)
    searches = valid(explained.stdout, "explain", env)["searches"]
    assert explained.returncode == 1 and searches and searches[0]["path"] is None
    valid(libdoctor("rules", "--json", env=env).stdout, "rules", env)


def test_fix_undo_and_run_list_outputs_are_valid(field: dict, tmp_path: Path) -> None:  # noqa: F811
    env = loader_env({"LIBDOCTOR_STATE_DIR": str(field["state"]), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                      "PYTHONPATH": str(REPO)})
    args = ["fix", "--json", "--env", str(field["env"]), str(field["needed"])]
    for folder in field["look_in"]:
        args += ["--look-in", folder]
    plan = valid(libdoctor(*args, env=env).stdout, "fix", env)
    assert plan["plan"] and plan["unrepaired"] == []
    applied = valid(libdoctor(*args, "--apply", "--yes", env=env).stdout, "fix", env)
    run_id = applied["applied"]["run_id"]
    runs = valid(libdoctor("undo", "--list", "--json", env=env).stdout, "undo-list", env)
    assert [r["run_id"] for r in runs["runs"]] == [run_id]
    valid(libdoctor("undo", run_id, "--json", env=env).stdout, "undo", env)


def test_preflight_hook_and_systemd_outputs_are_valid(bert: dict, tmp_path: Path) -> None:  # noqa: F811
    env = cli_env(bert["tmp"])
    done = libdoctor("preflight", "--env", str(bert["prefix"]), "--check-only", "--json", "--",
                     str(bert["server"]), *bert["args"], env=env)
    data = valid(done.stdout, "preflight", env)
    assert data["blocked"] and data["next_step"]
    valid(libdoctor("hook", "install", "--env", str(bert["prefix"]), "--json", env=env).stdout, "hook", env)
    valid(libdoctor("hook", "remove", "--env", str(bert["prefix"]), "--json", env=env).stdout, "hook", env)
    units = libdoctor("systemd", "install", "--dest", str(tmp_path / "units"), "--executable", "/bin/true", "--json",
                      env=env)
    valid(units.stdout, "systemd", env)


def test_ps_output_is_valid(elf, tmp_path: Path) -> None:  # noqa: ANN001
    torch_cpu = elf.lib("torch/lib/libtorch_cpu.so", defines=["t"])
    child = subprocess.Popen([sys.executable, "-c", PS_CHILD, str(torch_cpu)], stdout=subprocess.PIPE, text=True,
                             env=loader_env())
    try:
        assert child.stdout.readline().strip() == "ready"
        env = cli_env(tmp_path)
        data = valid(libdoctor("ps", "--json", env=env).stdout, "ps", env)
        assert any(p["pid"] == child.pid and p["on_cpu"] for p in data["processes"])
    finally:
        child.kill()
