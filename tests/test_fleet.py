"""Fleets: the Ansible role and playbooks, node-problem-detector's plugin and the Prometheus rules, run for real."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ElfFactory, loader_env
from .test_frameworks import TRY_LOAD, cuda_config, dist_info, make_env

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
PROMTOOL = shutil.which("promtool")


def broken_env(elf: ElfFactory, root: Path) -> Path:
    """tensorflow-gpu 1.14 with no CUDA library anywhere: it cannot use the GPU."""
    prefix, site = make_env(root / "envs/bert", "3.6")
    elf.lib(site / "tensorflow/libtensorflow_framework.so.1", body=TRY_LOAD, extra=["-ldl"])
    cuda_config(site / "tensorflow", TF_CUDA_VERSION="10.0", TF_CUDNN_VERSION="7", TF_CUDA_LIB_VERSION="10.0")
    dist_info(site, "tensorflow-gpu", "1.14.0", ["tensorflow/libtensorflow_framework.so.1"])
    return prefix


def healthy_env(root: Path) -> Path:
    prefix, site = make_env(root / "envs/plain")
    (site / "torch").mkdir()
    (site / "torch/version.py").write_text("__version__ = '2.13.0+cpu'\ncuda = None\n")
    dist_info(site, "torch", "2.13.0+cpu", [])
    return prefix


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus)")
def test_alert_rules_pass_promtool_check_and_test() -> None:
    check = subprocess.run([PROMTOOL, "check", "rules", "libdoctor-rules.yml"], cwd=DEPLOY / "prometheus",
                           capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 6 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([PROMTOOL, "test", "rules", "libdoctor-rules.test.yml"], cwd=DEPLOY / "prometheus",
                          capture_output=True, text=True)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
    # every alert, absent() included (issue 22: metrics that stop coming), is shown firing by the unit tests
    alerts = set(re.findall(r"- alert: (\w+)", (DEPLOY / "prometheus/libdoctor-rules.yml").read_text()))
    tests = (DEPLOY / "prometheus/libdoctor-rules.test.yml").read_text()
    fired = set(re.findall(r"alertname: (\w+)[^\n]*\n\s+exp_alerts:\n\s+- exp_labels", tests))
    assert {"LibdoctorMetricsAbsent", "LibdoctorMetricsStopped"} <= alerts and alerts == fired, alerts ^ fired


def test_the_rules_use_only_metrics_libdoctor_writes(elf: ElfFactory, tmp_path: Path) -> None:
    from libdoctor.daemon.metrics import write_metrics
    from libdoctor.scan import run_scan

    prefix = broken_env(elf, tmp_path)
    report = run_scan(prefix=str(prefix))
    write_metrics(str(tmp_path / "m.prom"), [(str(prefix), report)], [])
    written = set(re.findall(r"^(libdoctor_\w+)", (tmp_path / "m.prom").read_text(), re.M))
    used = set(re.findall(r"\b(libdoctor_\w+)", (DEPLOY / "prometheus/libdoctor-rules.yml").read_text()))
    assert used and used <= written, used - written
    text = (tmp_path / "m.prom").read_text()
    assert f'libdoctor_gpu_usable{{env="{prefix}",framework="tensorflow-gpu",framework_version="1.14.0"}} 0.0' in text
    assert 'libdoctor_missing_libraries{' in text and "framework_version=" in text


def test_node_problem_detector_plugin_protocol(elf: ElfFactory, tmp_path: Path) -> None:
    config = json.loads((DEPLOY / "node-problem-detector/libdoctor-monitor.json").read_text())
    (rule,) = config["rules"]
    limit = config["pluginConfig"]["max_output_length"]
    assert rule["condition"] == "GPULibrariesBroken" and rule["args"] == ["scan", "--quiet"]
    environ = loader_env({"NO_COLOR": "1", "PYTHONPATH": str(REPO), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "c")})
    for prefix, status in ((broken_env(elf, tmp_path), 1), (healthy_env(tmp_path), 0), (tmp_path / "nope", 2)):
        done = subprocess.run([sys.executable, "-m", "libdoctor", *rule["args"], "--env", str(prefix)], env=environ,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == status, (prefix, done.stdout, done.stderr)
        message = done.stdout.strip()
        if status != 2:  # NPD: 0 OK, 1 problem (the message is the condition's), anything else unknown
            assert len(message.splitlines()) == 1 and 0 < len(message) <= limit, message


def ansible_playbook(tmp_path_factory: pytest.TempPathFactory) -> str:
    beside = Path(sys.executable).parent / "ansible-playbook"  # installed with the test extras
    found = str(beside) if beside.exists() else shutil.which("ansible-playbook")
    if found:
        return found
    venv = tmp_path_factory.mktemp("ansible")
    made = subprocess.run([sys.executable, "-m", "venv", str(venv)], capture_output=True)
    installed = made.returncode == 0 and subprocess.run(
        [str(venv / "bin/pip"), "install", "-q", "ansible-core"], capture_output=True, timeout=600).returncode == 0
    if not installed:
        pytest.skip("ansible-core cannot be installed here")
    return str(venv / "bin/ansible-playbook")


def test_ansible_install_twice_then_report(elf: ElfFactory, tmp_path: Path,
                                          tmp_path_factory: pytest.TempPathFactory) -> None:
    playbook = ansible_playbook(tmp_path_factory)
    wheel_dir = tmp_path / "wheel"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(wheel_dir), str(REPO)],
                           capture_output=True, text=True, timeout=300)
    if built.returncode != 0:
        pytest.skip(f"no wheel: {built.stderr[-200:]}")
    (wheel,) = wheel_dir.glob("*.whl")
    prefix = broken_env(elf, tmp_path)
    root = tmp_path / "root"
    before = set(os.listdir(tmp_path))
    interpreter = str(Path(playbook).parent / "python")
    interpreter = interpreter if os.path.exists(interpreter) else sys.executable
    environ = loader_env({"ANSIBLE_LOCALHOST_WARNING": "False", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "False",
                          "ANSIBLE_HOME": str(tmp_path / "ansible-home"), "ANSIBLE_NOCOLOR": "1",
                          "LIBDOCTOR_CACHE_DIR": str(root / "cache"), "LIBDOCTOR_STATE_DIR": str(root / "state"),
                          "HOME": str(tmp_path / "home")})
    common = ["-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={interpreter}",
              "-e", f"libdoctor_root={root}", "-e", f"libdoctor_python={os.path.realpath(sys.executable)}"]
    version = wheel.name.split("-")[1]  # pinned: the wheel must be that release (pip finds it by --find-links)
    install = [playbook, *common, str(DEPLOY / "ansible/install.yml"), "-e", f"libdoctor_wheel={wheel}",
               "-e", f"libdoctor_version={version}",
               "-e", "libdoctor_manage_systemd=false", "-e", json.dumps({"libdoctor_environments": [str(prefix)]})]
    old = tmp_path / "python3.6"  # CentOS 7's interpreter, as far as the role can tell
    old.write_text("#!/bin/sh\necho 3.6\n")
    old.chmod(0o755)
    for extra, said in ((["-e", f"libdoctor_python={old}"], "libdoctor needs Python 3.9 or newer; "),
                        (["-e", "libdoctor_version=", "-e", "libdoctor_wheel="], "set libdoctor_version")):
        refused = subprocess.run(install + extra, env=environ, capture_output=True, text=True, timeout=600)
        assert refused.returncode != 0 and said in refused.stdout, refused.stdout[-2000:]
        assert not (root / "opt/libdoctor").exists()  # refused before anything was installed
    first = subprocess.run(install, env=environ, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-2000:]
    second = subprocess.run(install, env=environ, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and re.search(r"changed=0\s", second.stdout), second.stdout[-2000:]
    assert (root / "etc/libdoctor/config.toml").read_text().count(str(prefix)) == 1
    assert (root / "etc/systemd/system/libdoctor-watch.service").exists()
    installed = subprocess.run([str(root / "opt/libdoctor/bin/libdoctor"), "--version"], capture_output=True,
                               text=True, timeout=60)
    assert version in installed.stdout, installed.stdout
    fleet = tmp_path / "fleet"
    report = subprocess.run([playbook, *common, str(DEPLOY / "ansible/report.yml"), "-e",
                             f"libdoctor_report_dir={fleet}", "-e",
                             json.dumps({"libdoctor_environments": [str(prefix)]})],
                            env=environ, capture_output=True, text=True, timeout=600)
    assert report.returncode == 0, report.stdout[-3000:]
    data = json.loads((fleet / "fleet.json").read_text())
    (row,) = data["rows"]
    assert (row["host"], row["framework"], row["gpu_usable"]) == ("localhost", "tensorflow-gpu", False)
    assert row["verdict"].startswith("not healthy") and any("libcudart.so.10.0" in p for p in row["problems"])
    assert data["causes"] and data["causes"][0]["hosts"] == 1
    assert "localhost" in (fleet / "fleet.txt").read_text()
    failing = subprocess.run([playbook, *common, str(DEPLOY / "ansible/report.yml"), "-e",
                              f"libdoctor_report_dir={tmp_path / 'fleet2'}", "-e",
                              json.dumps({"libdoctor_environments": [str(tmp_path / "no/such/env")]})],
                             env=environ, capture_output=True, text=True, timeout=600)
    assert failing.returncode != 0 and re.search(r"failed=1\s", failing.stdout), failing.stdout[-2000:]
    assert set(os.listdir(tmp_path)) - before <= {"root", "fleet", "fleet2", "ansible-home", "home", "python3.6"}


def test_the_npd_configmap_is_generated_from_the_plugin_config() -> None:
    """Issue 22: the ConfigMap is rendered from libdoctor-monitor.json (no hand paste), is what the script writes,
    and carries the same JSON; the daemonset mounts it by name; every message fits node-problem-detector's 80."""
    yaml = pytest.importorskip("yaml")
    script = DEPLOY / "node-problem-detector/make_configmap.py"
    check = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stderr
    (configmap,) = yaml.safe_load_all((DEPLOY / "node-problem-detector/configmap.yaml").read_text())
    plugin = json.loads((DEPLOY / "node-problem-detector/libdoctor-monitor.json").read_text())
    assert configmap["kind"] == "ConfigMap" and json.loads(configmap["data"]["libdoctor-monitor.json"]) == plugin
    daemonset = list(yaml.safe_load_all((DEPLOY / "node-problem-detector/daemonset.yaml").read_text()))
    assert [d["kind"] for d in daemonset] == ["DaemonSet"]
    volumes = daemonset[0]["spec"]["template"]["spec"]["volumes"]
    assert {"name": "config", "configMap": {"name": configmap["metadata"]["name"]}} in volumes
    assert plugin["pluginConfig"]["max_output_length"] == 80
    assert all(len(c["message"]) <= 80 for c in plugin["conditions"])
