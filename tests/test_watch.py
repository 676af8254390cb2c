"""libdoctor watch as a real subprocess, libdoctor ps against real processes, and the systemd units."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from .conftest import ElfFactory, ldso_trace, loader_env

REPO = Path(__file__).resolve().parent.parent


def cli_env(tmp_path: Path, **extra: str) -> dict:
    return loader_env({"LIBDOCTOR_STATE_DIR": str(tmp_path / "state"), "LIBDOCTOR_CACHE_DIR": str(tmp_path / "cache"),
                       "PYTHONPATH": str(REPO), "XDG_CONFIG_HOME": str(tmp_path / "config"), **extra})


class Daemon:
    """A running `libdoctor watch`, its JSON-lines events collected as they come."""

    def __init__(self, args: list[str], env: dict) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "libdoctor.cli", "--log-level", "info", "watch", *args],
                                     env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.events: list[dict] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            try:
                self.events.append(json.loads(line))
            except ValueError:
                self.events.append({"event": "text", "line": line})

    def wait_for(self, event: str, timeout: float = 10.0, after: int = 0) -> tuple[dict, float]:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            for item in self.events[after:]:
                if item.get("event") == event:
                    return item, time.monotonic() - start
            time.sleep(0.02)
        raise AssertionError(f"no {event!r} event within {timeout} s: {self.events}")

    def wait_quiet(self, event: str, quiet: float, timeout: float = 120.0) -> None:
        """Until no ``event`` has come for ``quiet`` seconds."""
        start = last_change = time.monotonic()
        seen = self.count(event)
        while time.monotonic() - start < timeout:
            if self.count(event) != seen:
                seen, last_change = self.count(event), time.monotonic()
            elif time.monotonic() - last_change >= quiet:
                return
            time.sleep(0.05)
        raise AssertionError(f"{event!r} events never stopped within {timeout} s")

    def count(self, event: str) -> int:
        return sum(1 for e in self.events if e.get("event") == event)

    def stop(self) -> tuple[int, float]:
        start = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=10)
        return code, time.monotonic() - start


@pytest.fixture
def tree(elf: ElfFactory, tmp_path: Path) -> Path:
    dep = elf.lib("libs/libdep.so.1.2.3", soname="libdep.so.1", defines=["dep"])
    os.symlink("libdep.so.1.2.3", tmp_path / "libs/libdep.so.1")
    elf.lib("app/libapp.so", calls=["dep"], link=[dep], runpath=str(tmp_path / "libs"))
    return tmp_path


def test_regression_recovery_burst_and_sigterm(tree: Path, tmp_path: Path) -> None:
    daemon = Daemon([str(tree / "app"), "--debounce", "0.3"], cli_env(tmp_path))
    try:
        watching, _ = daemon.wait_for("watching", timeout=30)
        assert watching["level"] == "warning" and watching["summary"].startswith("watching ")
        assert watching["summary"].endswith(f"folders for {tree / 'app'}")
        (tree / "libs/libdep.so.1").unlink()
        event, _seconds = daemon.wait_for("regression", timeout=60)
        assert event["findings"] == [f"missing:libdep.so.1:{tree / 'app/libapp.so'}"]
        assert event["summary"] == "libdep.so.1 no longer found"  # words, with the ids kept as fields
        assert str(tree / "libs/libdep.so.1") in event["changed"]
        mark = len(daemon.events)
        os.symlink("libdep.so.1.2.3", tree / "libs/libdep.so.1")
        event, _ = daemon.wait_for("recovery", timeout=60, after=mark)
        assert event["level"] == "warning"  # as loud as the regression it ends
        assert event["summary"] == f"libdep.so.1 found again: {tree / 'app'} is healthy again"
        daemon.wait_for("settled", timeout=60, after=mark)
        before = daemon.count("verified")
        mark = len(daemon.events)
        started = time.monotonic()
        for i in range(2000):
            (tree / "libs" / f"noise{i}").write_text("x")
        writing = time.monotonic() - started
        daemon.wait_for("verified", timeout=60, after=mark)  # the burst is verified at least once
        daemon.wait_quiet("settled", 0.3 * 10 + 1.0)  # no verification for longer than the longest burst
        # One verification per burst: a burst ends after 0.3 s of quiet or 3 s at most, however slow the writes.
        assert 1 <= daemon.count("verified") - before <= int(writing / 3.0) + 2
    finally:
        code, seconds = daemon.stop()
    assert code == 0 and seconds < 5  # an idle daemon stops at once (the 2 s promise mid-verification: below)
    assert daemon.count("stopped") == 1


def test_heal_safe_makes_the_loader_resolve_again(tree: Path, tmp_path: Path, loader_info) -> None:
    (tree / "libs/libdep.so.1").unlink()
    daemon = Daemon([str(tree / "app"), "--debounce", "0.3", "--heal", "safe", "--in-place"], cli_env(tmp_path))
    try:
        event, _ = daemon.wait_for("healed", timeout=30)
        assert event["created"] == [str(tree / "libs/libdep.so.1")]
        daemon.wait_for("watching", timeout=30)
    finally:
        daemon.stop()
    trace = ldso_trace(loader_info, str(tree / "app/libapp.so"), str(tmp_path))
    assert trace.mapping()["libdep.so.1"] == str(tree / "libs/libdep.so.1")
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "undo", "--all"], env=cli_env(tmp_path),
                          capture_output=True, text=True)
    assert done.returncode == 0 and not (tree / "libs/libdep.so.1").exists()


def test_one_instance_per_state_folder(tree: Path, tmp_path: Path) -> None:
    daemon = Daemon([str(tree / "app")], cli_env(tmp_path))
    try:
        daemon.wait_for("watching", timeout=30)
        second = subprocess.run([sys.executable, "-m", "libdoctor.cli", "watch", str(tree / "app")],
                                env=cli_env(tmp_path), capture_output=True, text=True, timeout=30)
        assert second.returncode == 2 and "another libdoctor watch is running" in second.stderr
    finally:
        daemon.stop()


def test_once_config_and_metrics(tree: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    metrics = tmp_path / "libdoctor.prom"
    config.write_text(f'targets = ["{tree / "app"}"]\nheal = "off"\nmetrics_file = "{metrics}"\n')
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "watch", "--once", "--config", str(config)],
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    text = metrics.read_text()
    assert 'libdoctor_healthy{env="targets"} 1.0' in text
    assert "libdoctor_last_scan_timestamp_seconds" in text
    (tree / "libs/libdep.so.1").unlink()
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "watch", "--once", "--config", str(config)],
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and 'libdoctor_problems{env="targets"} 1.0' in metrics.read_text()
    config.write_text('heal = "sometimes"\n')
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "watch", "--once", "--config", str(config)],
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "heal must be one of" in done.stderr and "Traceback" not in done.stderr
    config.write_text('targets = ["a"\nheal = "off"\n')
    done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "watch", "--once", "--config", str(config)],
                          env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "line 2" in done.stderr and "Traceback" not in done.stderr


PS_CHILD = """
import ctypes, sys, time
for path in sys.argv[1:]:
    ctypes.CDLL(path)
print("ready", flush=True)
time.sleep(60)
"""


def test_ps_reports_cuda_libraries_cpu_runs_and_deleted_files(elf: ElfFactory, tmp_path: Path) -> None:
    torch_cpu = elf.lib("torch/lib/libtorch_cpu.so", defines=["t"])
    cudart = elf.lib("nvidia/lib/libcudart.so.13", defines=["c"])
    gpu = subprocess.Popen([sys.executable, "-c", PS_CHILD, str(torch_cpu), str(cudart)], stdout=subprocess.PIPE,
                           text=True, env=loader_env())
    cpu = subprocess.Popen([sys.executable, "-c", PS_CHILD, str(torch_cpu)], stdout=subprocess.PIPE, text=True,
                           env=loader_env())
    try:
        assert gpu.stdout.readline().strip() == "ready" and cpu.stdout.readline().strip() == "ready"
        from libdoctor.daemon.ps import scan_processes

        reports = {r.pid: r for r in scan_processes([gpu.pid, cpu.pid])}
        assert reports[gpu.pid].frameworks == ("torch",) and not reports[gpu.pid].on_cpu
        assert [m.path for m in reports[gpu.pid].cuda] == [str(cudart)]
        assert reports[cpu.pid].on_cpu
        cudart.unlink()
        reports = {r.pid: r for r in scan_processes([gpu.pid])}
        assert [m.path for m in reports[gpu.pid].stale] == [str(cudart)] and reports[gpu.pid].stale[0].deleted
        done = subprocess.run([sys.executable, "-m", "libdoctor.cli", "ps", "--json"], env=cli_env(tmp_path),
                              capture_output=True, text=True, timeout=60)
        data = {p["pid"]: p for p in json.loads(done.stdout)["processes"]}
        assert done.returncode == 1 and data[cpu.pid]["on_cpu"] and data[gpu.pid]["stale"]
    finally:
        gpu.kill()
        cpu.kill()


SYSTEMD_ANALYZE = shutil.which("systemd-analyze")


@pytest.mark.skipif(SYSTEMD_ANALYZE is None, reason="systemd-analyze is not installed")
def test_systemd_units_verify_and_are_hardened(tmp_path: Path) -> None:
    from libdoctor.daemon.units import install_units

    written = [path for path, changed in install_units(str(tmp_path / "units"), "/bin/true") if changed]
    assert len(written) == 3
    assert not any(changed for _path, changed in install_units(str(tmp_path / "units"), "/bin/true"))  # idempotent
    done = subprocess.run([SYSTEMD_ANALYZE, "verify", *written], capture_output=True, text=True,
                          cwd=tmp_path / "units")
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
    for unit in ("libdoctor-watch.service", "libdoctor-scan.service"):
        done = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", str(tmp_path / "units" / unit)],
                              capture_output=True, text=True)
        match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
        assert match and float(match.group(1)) <= 2.5, done.stdout[-500:]
    example = REPO / "systemd/bert-serving@.service"  # the example unit: hardened, yet with network and GPU
    done = subprocess.run([SYSTEMD_ANALYZE, "security", "--offline=true", str(example)], capture_output=True,
                          text=True)
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert match and float(match.group(1)) <= 2.5, done.stdout[-800:]
    text = example.read_text()
    assert "AF_INET" in text and "DeviceAllow=/dev/nvidiactl rw" in text and "PrivateNetwork" not in text


def test_a_folder_that_appears_later_is_picked_up(elf: ElfFactory, tmp_path: Path) -> None:
    dep = elf.lib("build/libdep.so.1", defines=["dep"])
    elf.lib("app/libapp.so", calls=["dep"], link=[dep], runpath=str(tmp_path / "later/lib64"))
    daemon = Daemon([str(tmp_path / "app"), "--debounce", "0.2"], cli_env(tmp_path))
    try:
        daemon.wait_for("watching", timeout=60)
        first = len(daemon.events)
        (tmp_path / "later").mkdir()  # seen through the nearest existing ancestor
        daemon.wait_for("settled", timeout=60, after=first)  # verified, and now watching "later"
        mark = len(daemon.events)
        (tmp_path / "later/lib64").mkdir()
        daemon.wait_for("settled", timeout=60, after=mark)
        shutil.copy(dep, tmp_path / "later/lib64/libdep.so.1")  # inside a folder that did not exist at start
        event, _ = daemon.wait_for("recovery", timeout=60, after=first)
        assert event["resolved"] == [f"missing:libdep.so.1:{tmp_path / 'app/libapp.so'}"]
    finally:
        daemon.stop()


def test_systemd_install_writes_a_config_listing_the_envs_and_the_daemon_needs_something(tmp_path: Path,
                                                                                       elf: ElfFactory) -> None:
    from .test_frameworks import dist_info, make_env

    prefix, site = make_env(tmp_path / "envs/torchenv")
    dist_info(site, "torch", "2.14.1", [])
    home = tmp_path / "home"
    (home / ".conda").mkdir(parents=True)
    (home / ".conda/environments.txt").write_text(f"{prefix}\n")
    env = cli_env(tmp_path, HOME=str(home), PYENV_ROOT=str(tmp_path / "nopyenv"))
    env.pop("VIRTUAL_ENV", None)
    env.pop("CONDA_PREFIX", None)
    root = tmp_path / "root"
    dest = root / "etc/systemd/system"
    args = [sys.executable, "-m", "libdoctor.cli", "systemd", "install", "--dest", str(dest), "--executable",
            "/bin/true"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    config = root / "etc/libdoctor/config.toml"
    assert f"wrote {config} (1 environment listed)" in done.stdout
    assert "systemctl" not in done.stdout  # a folder systemd does not read: no advice to reload it
    from libdoctor.daemon.config import load_config

    assert load_config(str(config)).environments == (str(prefix),)
    assert oct(config.stat().st_mode & 0o777) == "0o644"
    config.write_text("heal = \"off\"\n")
    again = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60)
    assert f"kept {config} (it exists)" in again.stdout and config.read_text() == "heal = \"off\"\n"
    nothing = subprocess.run([sys.executable, "-m", "libdoctor.cli", "watch", "--once", "--config", str(config)],
                             env=env, capture_output=True, text=True, timeout=60)
    assert nothing.returncode == 2 and "nothing to watch" in nothing.stderr
    assert len(nothing.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("how", ["recreate", "move"])
def test_watches_are_renewed_after_a_folder_is_replaced_or_moved(tree: Path, tmp_path: Path, how: str) -> None:
    """A watched folder deleted and made again inside one debounce window, or moved away and back: the daemon
    still sees the next change (it used to go blind until the hourly re-check)."""
    daemon = Daemon([str(tree / "app"), "--debounce", "0.5"], cli_env(tmp_path))
    libs = tree / "libs"
    try:
        daemon.wait_for("watching", timeout=30)
        for round_ in range(3):
            mark = len(daemon.events)
            if how == "recreate":
                saved = tmp_path / f"saved{round_}"
                shutil.copytree(libs, saved, symlinks=True)
                shutil.rmtree(libs)
                shutil.copytree(saved, libs, symlinks=True)
            else:
                libs.rename(tmp_path / "away")
                (tmp_path / "away").rename(libs)
            if how == "recreate":  # a new inode: verified, and its watch renewed (a move keeps the inode's watch)
                daemon.wait_for("settled", timeout=60, after=mark)
            mark = len(daemon.events)
            (libs / "libdep.so.1").unlink()
            event, _ = daemon.wait_for("regression", timeout=60, after=mark)
            assert event["findings"] == [f"missing:libdep.so.1:{tree / 'app/libapp.so'}"]
            mark = len(daemon.events)
            os.symlink("libdep.so.1.2.3", libs / "libdep.so.1")
            daemon.wait_for("recovery", timeout=60, after=mark)
            daemon.wait_quiet("settled", 1.0)  # this round's verification done before the next one starts
    finally:
        code, _seconds = daemon.stop()
    assert code == 0


def test_sigterm_during_a_long_verification_stops_within_two_seconds(tree: Path, tmp_path: Path) -> None:
    daemon = Daemon([str(tree / "app")], cli_env(tmp_path, LIBDOCTOR_TEST_VERIFY_SECONDS="30"))
    daemon.wait_for("starting", timeout=60)  # signals are handled; the first verification (30 s) follows at once
    code, seconds = daemon.stop()
    assert code == 0 and seconds < 2
    daemon.thread.join(timeout=2)
    assert daemon.count("stopped during a verification") == 1


def test_sigterm_while_a_heal_waits_for_the_state_lock(tree: Path, tmp_path: Path) -> None:
    """Issue 21, item 6: another run holds the state lock; the daemon's heal waits for it; SIGTERM still ends the
    daemon at once (it used to wait out the lock)."""
    import fcntl

    (tree / "libs/libdep.so.1").unlink()
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    holder = os.open(state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(holder, fcntl.LOCK_EX)
    daemon = Daemon([str(tree / "app"), "--debounce", "0.3", "--heal", "safe", "--in-place"], cli_env(tmp_path))
    try:
        daemon.wait_for("healing", timeout=60)
        code, seconds = daemon.stop()
    finally:
        os.close(holder)
    assert code == 0 and seconds < 5, (code, seconds)
    assert not (tree / "libs/libdep.so.1").exists()  # nothing was changed


def test_a_target_added_on_sighup_is_verified(tree: Path, tmp_path: Path, elf: ElfFactory) -> None:
    """Issue 21, item 6: SIGHUP re-reads the configuration, and a target it adds is verified at once."""
    broken = elf.lib("added/libadded.so", calls=["gone"], link=[elf.stub("libgone.so.7", defines=["gone"])])
    config = tmp_path / "config.toml"
    config.write_text(f'targets = ["{tree / "app"}"]\n')
    daemon = Daemon(["--config", str(config), "--debounce", "0.3"], cli_env(tmp_path))
    try:
        daemon.wait_for("watching", timeout=60)
        mark = len(daemon.events)
        config.write_text(f'targets = ["{tree / "app"}", "{broken.parent}"]\n')
        daemon.proc.send_signal(signal.SIGHUP)
        event, _ = daemon.wait_for("regression", timeout=60, after=mark)
        assert event["findings"] == [f"missing:libgone.so.7:{broken}"]
    finally:
        daemon.stop()


def test_the_heal_never_reverts_an_undo(tree: Path, tmp_path: Path) -> None:
    """Issue 21, item 7: the daemon heals; the person undoes it; the daemon sees the regression and leaves it
    (it used to make the link again within 2 s) until the person runs ``fix --apply`` themselves."""
    (tree / "libs/libdep.so.1").unlink()
    daemon = Daemon([str(tree / "app"), "--debounce", "0.3", "--heal", "safe", "--in-place"],
                    cli_env(tmp_path, LIBDOCTOR_NO_VERDICT_CACHE="1"))
    try:
        daemon.wait_for("healed", timeout=60)
        daemon.wait_for("watching", timeout=60)
        daemon.wait_quiet("settled", 1.5)  # the heal's own link seen and verified, if it was
        mark = len(daemon.events)
        done = subprocess.run([sys.executable, "-m", "libdoctor", "undo", "--all"], env=cli_env(tmp_path),
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0 and not (tree / "libs/libdep.so.1").exists(), done.stdout + done.stderr
        daemon.wait_for("regression", timeout=60, after=mark)
        daemon.wait_quiet("settled", 3.0)
        assert daemon.count("healed") == 1 and not (tree / "libs/libdep.so.1").exists()
        fixed = subprocess.run([sys.executable, "-m", "libdoctor", "fix", "--apply", "--yes", "--in-place",
                                str(tree / "app")], env=cli_env(tmp_path), capture_output=True, text=True, timeout=60)
        assert fixed.returncode == 0 and (tree / "libs/libdep.so.1").exists(), fixed.stdout + fixed.stderr
    finally:
        daemon.stop()


def test_no_inotify_instance_left_means_polling_not_a_crash(tree: Path, tmp_path: Path) -> None:
    """Issue 21, item 6: every inotify instance of the user taken (other watchers, editors): the daemon says so
    once, polls, and still sees a change."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    taken = []
    try:
        while len(taken) < 1_000_000:
            fd = libc.inotify_init1(os.O_CLOEXEC)
            if fd < 0:
                break
            taken.append(fd)
        daemon = Daemon([str(tree / "app"), "--debounce", "0.3"], cli_env(tmp_path))
        try:
            event, _ = daemon.wait_for("watching", timeout=60)
            assert event["polling"] is True and daemon.count("inotify instances ran out: polling instead") == 1
            mark = len(daemon.events)
            (tree / "libs/libdep.so.1").unlink()
            daemon.wait_for("regression", timeout=60, after=mark)
        finally:
            code, _seconds = daemon.stop()
        assert code == 0
    finally:
        for fd in taken:
            os.close(fd)


def test_systemd_install_lets_the_units_write_the_configured_metrics_folder(tmp_path: Path) -> None:
    """Issue 22: the units make the file system read-only but for their own folders; ``systemd install`` adds the
    folder of the configured metrics_file (and the shipped units name node_exporter's default textfile folder),
    so a metrics_file under ProtectSystem=strict is written, not refused."""
    dest = tmp_path / "etc/systemd/system"
    config = tmp_path / "etc/libdoctor/config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('metrics_file = "/srv/metrics/libdoctor.prom"\n')
    done = subprocess.run([sys.executable, "-m", "libdoctor", "systemd", "install", "--dest", str(dest),
                           "--executable", "/bin/true", "--json"], capture_output=True, text=True, timeout=60,
                          env=cli_env(tmp_path))
    assert done.returncode == 0, done.stderr
    for unit in ("libdoctor-scan.service", "libdoctor-watch.service"):
        line = next(x for x in (dest / unit).read_text().splitlines() if x.startswith("ReadWritePaths="))
        assert line.split("=", 1)[1].split() == ["/var/lib/libdoctor", "/var/cache/libdoctor",
                                                 "-/var/lib/node_exporter/textfile_collector", "-/srv/metrics"]
    again = subprocess.run([sys.executable, "-m", "libdoctor", "systemd", "install", "--dest", str(dest),
                            "--executable", "/bin/true", "--json"], capture_output=True, text=True, timeout=60,
                           env=cli_env(tmp_path))
    assert json.loads(again.stdout)["changed"] is False  # a second run changes nothing (Ansible's "ok")
