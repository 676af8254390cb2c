"""``libdoctor report`` (issue 22): the summary for a bug ticket, on the field report's layout."""
from __future__ import annotations

import json
import os
from pathlib import Path

from .test_diagnosis import cli, field_env, isolated, schema_valid  # noqa: F401 - fixtures
from .test_impostor import machine  # noqa: F401 - fixtures


def test_report_on_the_field_layout_is_short_markdown_with_the_scans_verdict(field_env: dict) -> None:  # noqa: F811
    tmp, prefix = field_env["tmp"], str(field_env["prefix"])
    args = ("--env", prefix, "--look-in", field_env["look_in"])
    scan = json.loads(cli("scan", "--json", *args, tmp_path=tmp).stdout)
    done = cli("report", *args, tmp_path=tmp)
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) <= 40 and lines[0] == f"## libdoctor report: {scan['verdict']}", lines
    text = done.stdout
    assert "**tensorflow-gpu 1.14.0**: built for CUDA 10.0 and cuDNN 7" in text
    link = field_env["machine"] / "usr/local/cuda-10.0/lib64/libcudnn.so.7"
    assert f"`libcudnn.so.7`: `{link}`" in text  # the copy the framework's own sequence reaches: the hand link
    for cause in scan["causes"]:
        assert cause["title"] in text  # the same causes, never a second diagnosis
    assert f"**next step**: `{scan['next_step']}`" in text
    data = schema_valid(cli("report", "--json", *args, tmp_path=tmp).stdout, "report")
    (env,) = data["environments"]
    assert (data["verdict"], env["prefix"], env["next_step"]) == (scan["verdict"], prefix, scan["next_step"])
    assert [c["title"] for c in env["causes"]] == [c["title"] for c in scan["causes"]]
    cudnn = next(load for load in env["frameworks"][0]["loads"] if load["soname"] == "libcudnn.so.7")
    assert cudnn["path"] == str(link)


def test_redact_leaves_nothing_of_the_home_folder_or_the_user(field_env: dict) -> None:  # noqa: F811
    tmp, prefix = field_env["tmp"], str(field_env["prefix"])
    home = Path(os.path.commonpath([str(tmp), str(field_env["machine"])]))  # the env and the CUDA trees inside
    user = "alice"
    environ = {"HOME": str(home), "USER": user, "LOGNAME": user}
    plain = cli("report", "--json", "--env", prefix, tmp_path=tmp, env=environ).stdout
    assert str(home) in plain  # there is something to redact
    for args in (("--redact",), ("--redact", "--json")):
        done = cli("report", *args, "--env", prefix, tmp_path=tmp, env=environ)
        assert done.returncode == 1, done.stderr
        assert str(home) not in done.stdout and os.path.realpath(home) not in done.stdout, done.stdout
        assert "~/" in done.stdout
    data = schema_valid(done.stdout, "report")
    assert data["environments"][0]["prefix"].startswith("~/")
