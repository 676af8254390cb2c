"""``libdoctor preflight -- COMMAND``: check before start, then become COMMAND (same pid).

Checks are flutter-doctor-like validators: each returns a typed result (ok, partial, missing,
crashed) and a crashing check becomes a result.  The ``bert-serving`` profile knows
bert-serving-server 1.10's arguments and needs (cuda-facts.md section 6); the generic profile
checks the frameworks and libraries of the command's environment.
"""
from __future__ import annotations

import argparse
import errno
import glob
import os
import shutil
import socket
from dataclasses import dataclass, field
from typing import Callable, Mapping, Optional

from .gpu.driver import parse_version
from .repair.hooks import shown_name

OK, PARTIAL, MISSING, CRASHED = "ok", "partial", "missing", "crashed"
MIN_TMP_BYTES = 1 << 30  # a frozen BERT graph is a few hundred MB; the checkpoint is copied into it


@dataclass(frozen=True)
class CheckResult:
    name: str
    status: str  # ok | partial | missing | crashed
    message: str
    blocking: bool = False  # a "missing" that stops the start
    details: tuple[str, ...] = ()
    fix: Optional[str] = None  # what to run or change, when one thing fixes it


@dataclass(frozen=True)
class Preflight:
    command: tuple[str, ...]
    profile: str
    prefix: Optional[str]
    results: tuple[CheckResult, ...]
    ld_library_path: Optional[str]  # what COMMAND runs with (the applied repairs active)
    environ: Mapping[str, str] = field(default_factory=dict)  # exactly the variables judged: COMMAND gets these

    @property
    def shown_command(self) -> str:
        """The command as the user knows it (never the name the hook moved the original to)."""
        return shown_name(self.command[0])

    @property
    def next_step(self) -> Optional[str]:
        return next((r.fix for r in self.results if r.blocking and r.fix), None)

    @property
    def blocked(self) -> bool:
        return any(r.blocking for r in self.results)


# -- bert-serving's arguments ------------------------------------------------------------

def _max_seq_len(value: str) -> Optional[int]:
    if value in ("None", "none", ""):
        return None
    number = int(value)
    if number <= 3:
        raise argparse.ArgumentTypeError("max_seq_len must be > 3 or None")
    return number


def bert_serving_parser() -> argparse.ArgumentParser:
    """The arguments of bert-serving-server 1.10's ``get_args_parser`` that preflight needs."""
    parser = argparse.ArgumentParser(prog="bert-serving-start", add_help=False, allow_abbrev=False)
    parser.add_argument("-model_dir", type=str, required=True)
    parser.add_argument("-tuned_model_dir", type=str)
    parser.add_argument("-ckpt_name", type=str, default="bert_model.ckpt")
    parser.add_argument("-config_name", type=str, default="bert_config.json")
    parser.add_argument("-graph_tmp_dir", type=str, default=None)
    parser.add_argument("-max_seq_len", type=_max_seq_len, default=25)
    parser.add_argument("-num_worker", type=int, default=1)
    parser.add_argument("-port", "-port_in", "-port_data", type=int, default=5555)
    parser.add_argument("-port_out", "-port_result", type=int, default=5556)
    parser.add_argument("-http_port", type=int, default=None)
    parser.add_argument("-cpu", action="store_true", default=False)
    parser.add_argument("-device_map", type=int, nargs="+", default=[])
    parser.add_argument("-verbose", action="store_true", default=False)
    return parser


# -- the checks --------------------------------------------------------------------------

def _guard(name: str, check: Callable[[], CheckResult]) -> CheckResult:
    try:
        return check()
    except Exception as exc:  # noqa: BLE001 - a crashing check is a result, not an aborted run
        return CheckResult(name, CRASHED, f"the check did not complete: {exc.__class__.__name__}: {exc}")


def port_free(port: int, host: str = "0.0.0.0") -> Optional[str]:
    """None when ``port`` can be bound as zmq binds it (SO_REUSEADDR); else why not."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return "in use" if exc.errno == errno.EADDRINUSE else exc.strerror
    return None


def port_holder(port: int) -> Optional[str]:
    """The process listening on ``port``: "python3 (pid 4242)", when this user may see it."""
    try:
        import psutil

        for connection in psutil.net_connections(kind="inet"):
            if connection.laddr and connection.laddr.port == port and connection.status == psutil.CONN_LISTEN:
                if connection.pid is None:
                    return "another user's process"
                return f"{psutil.Process(connection.pid).name()} (pid {connection.pid})"
    except Exception:  # noqa: BLE001 - naming the holder is a courtesy, never a failure
        return None
    return None


def visible_gpus(device_map: list[int], dev: str = "/dev") -> tuple[int, str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        ids = [v for v in visible.split(",") if v.strip() and v.strip() != "-1"]
        return len(ids), f"CUDA_VISIBLE_DEVICES={visible!r}"
    if device_map:
        return len(set(device_map)), f"-device_map {' '.join(map(str, device_map))}"
    nodes = [n for n in glob.glob(os.path.join(dev, "nvidia*")) if os.path.basename(n)[6:].isdigit()]
    return len(nodes), f"{len(nodes)} /dev/nvidiaN device node(s)"


def framework_checks(report, cpu: bool) -> list[CheckResult]:  # noqa: ANN001 - ScanReport
    """The libraries, as the diagnosis says (the same causes and next step as scan's): one check per framework,
    one for every other error cause."""
    from .rules.missing_soname import ROLE_WORDS

    diagnosis = report.diagnosis
    results = []
    claimed: set[str] = set()
    for framework in report.frameworks:
        info = framework.info
        name = f"libraries of {info.label}"
        causes = [c for c in diagnosis.causes if c.error and any(f.group == info.label for f in c.findings)]
        claimed.update(c.key for c in causes)
        if cpu:
            results.append(CheckResult(name, OK, "skipped: -cpu"))
            continue
        if framework.gpu_usable and not causes:
            results.append(CheckResult(name, OK, framework.because))
            continue
        details = tuple(f"{c.lib.soname} ({ROLE_WORDS.get(c.lib.role, c.lib.role)}): "
                        f"{c.result.root_error or 'not found'}"
                        for c in framework.checks if not c.found and c.lib.family != "cuda driver")
        details += tuple(f"{missing}: missing" for missing in framework.closure_missing)
        details += tuple(c.title for c in causes)
        why = framework.because if framework.gpu_usable is False else "; ".join(c.title for c in causes)
        results.append(CheckResult(name, MISSING, f"GPU usable: no, because {why}", True,
                                   tuple(dict.fromkeys(details)), fix=_first_fix(causes, diagnosis)))
    others = [c for c in diagnosis.causes if c.error and c.key not in claimed]
    if others and not cpu:
        results.append(CheckResult("shared libraries", MISSING, "; ".join(c.title for c in others[:5]), True,
                                   tuple(line for c in others for line in c.details),
                                   fix=_first_fix(others, diagnosis)))
    elif not report.frameworks:
        results.append(CheckResult("frameworks", PARTIAL, "no GPU framework found in this environment"))
    return results


def _first_fix(causes: list, diagnosis) -> Optional[str]:  # noqa: ANN001
    """The scan's next step when it is about these causes (it names the first of all), else their own."""
    return diagnosis.next_step if any(c.fix == diagnosis.next_step for c in causes) else next(
        (c.fix for c in causes if c.fix), None)


def bert_serving_checks(args: argparse.Namespace, report, dev: str = "/dev") -> list[CheckResult]:  # noqa: ANN001
    results = []
    tf = [f for f in report.frameworks if f.info.name.startswith("tensorflow")]

    def tensorflow() -> CheckResult:
        if not tf:
            return CheckResult("tensorflow", MISSING, "TensorFlow is not installed in this environment", True)
        version = parse_version(tf[0].info.version) or (0,)
        if version < (1, 10):
            return CheckResult("tensorflow", MISSING, f"{tf[0].info.label}: bert-serving needs TensorFlow >= 1.10",
                               True)
        if version >= (2, 0):
            return CheckResult("tensorflow", MISSING, f"{tf[0].info.label}: bert-serving 1.10 fails with TensorFlow "
                               "2 (tf.logging, tf.contrib); install tensorflow-gpu 1.15", True)
        return CheckResult("tensorflow", OK, f"{tf[0].info.label} (1.10 <= version < 2.0)")

    def python_fit() -> CheckResult:
        from .gpu.frameworks import tf_table_row
        from .rules.framework_env import _python_fits

        if not tf or not tf[0].info.python_version:
            return CheckResult("python", PARTIAL, "Python version of the environment not known")
        row = tf_table_row(tf[0].info.version)
        if row and not _python_fits(row["python_versions"], tf[0].info.python_version):
            return CheckResult("python", MISSING, f"Python {tf[0].info.python_version}: {tf[0].info.label} has "
                               f"wheels for {row['python_versions']}", True)
        return CheckResult("python", OK, f"Python {tf[0].info.python_version}")

    def model() -> CheckResult:
        model_dir = os.path.expanduser(args.model_dir)
        ckpt_dir = os.path.expanduser(args.tuned_model_dir or args.model_dir)
        if not os.path.isdir(model_dir):
            return CheckResult("model", MISSING, f"-model_dir {args.model_dir}: no such folder", True,
                               fix="give -model_dir the folder of an unpacked BERT model")
        missing = []
        if not os.path.isfile(os.path.join(model_dir, args.config_name)):
            missing.append(os.path.join(model_dir, args.config_name))
        if not os.path.isfile(os.path.join(model_dir, "vocab.txt")):
            missing.append(os.path.join(model_dir, "vocab.txt"))
        checkpoint = os.path.join(ckpt_dir, args.ckpt_name)
        if not os.path.isfile(checkpoint + ".index"):
            missing.append(checkpoint + ".index")
        if not glob.glob(checkpoint + ".data-*"):
            missing.append(checkpoint + ".data-*")
        if missing:
            return CheckResult("model", MISSING, f"the model folder lacks {len(missing)} file(s)", True,
                               tuple(missing))
        return CheckResult("model", OK, f"{model_dir}: config, vocab.txt and checkpoint present")

    def ports() -> CheckResult:
        wanted = [("-port", args.port), ("-port_out", args.port_out)] + (
            [("-http_port", args.http_port)] if args.http_port else [])
        seen: dict[int, str] = {}
        for flag, port in wanted:
            if port in seen:
                return CheckResult("ports", MISSING, f"{seen[port]} and {flag} are both {port}: the second bind fails",
                                   True, fix=f"give {flag} another port")
            seen[port] = flag
        busy = [f"{flag} {port}: {why}" + (f" (by {holder})" if (holder := port_holder(port)) else "")
                for flag, port in wanted if (why := port_free(port))]
        if busy:
            return CheckResult("ports", MISSING, "; ".join(busy), True,
                               fix="stop the process holding the port, or give -port/-port_out free ones")
        return CheckResult("ports", OK, ", ".join(f"{port} free" for _flag, port in wanted))

    def tmp() -> CheckResult:
        import tempfile

        folder = os.path.expanduser(args.graph_tmp_dir) if args.graph_tmp_dir else tempfile.gettempdir()
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK | os.X_OK):
            return CheckResult("graph_tmp_dir", MISSING, f"{folder} is not a writable folder", True)
        free = shutil.disk_usage(folder).free
        if free < MIN_TMP_BYTES:
            return CheckResult("graph_tmp_dir", MISSING, f"{folder} has {free >> 20} MB free; the frozen graph "
                               f"needs about {MIN_TMP_BYTES >> 20} MB", True)
        return CheckResult("graph_tmp_dir", OK, f"{folder} writable, {free >> 30} GB free")

    def workers() -> CheckResult:
        if args.cpu:
            return CheckResult("workers", OK, f"{args.num_worker} worker(s) on the CPU (-cpu)")
        gpus, source = visible_gpus(args.device_map, dev)
        if gpus == 0:
            return CheckResult("workers", MISSING, f"no GPU visible ({source}): the workers would silently run on "
                               "the CPU; give -cpu to mean it", True)
        if args.num_worker > gpus:
            return CheckResult("workers", PARTIAL, f"-num_worker {args.num_worker} > {gpus} visible GPU(s) ({source}):"
                               " workers share GPUs")
        return CheckResult("workers", OK, f"{args.num_worker} worker(s), {gpus} visible GPU(s) ({source})")

    for name, check in (("tensorflow", tensorflow), ("python", python_fit), ("model", model), ("ports", ports),
                        ("graph_tmp_dir", tmp), ("workers", workers)):
        results.append(_guard(name, check))
    return results


# -- running -----------------------------------------------------------------------------

def command_check(command: str) -> CheckResult:
    found = command if os.sep in command else shutil.which(command)
    if not found or not os.path.isfile(found):
        return CheckResult("command", MISSING, f"{shown_name(command)}: not found" + ("" if os.sep in command else
                           " on PATH"), True, fix=f"install it, or give its full path ({shown_name(command)})")
    if not os.access(found, os.X_OK):
        return CheckResult("command", MISSING, f"{found}: not executable", True, fix=f"chmod +x {found}")
    where = os.path.join(os.path.dirname(found), shown_name(found))  # the wrapper the user ran, not the original
    return CheckResult("command", OK, f"{shown_name(command)}: {where}")

def command_prefix(command: str) -> Optional[str]:
    """The environment a command lives in (``PREFIX/bin/COMMAND``), if it is a Python environment."""
    from .targets import python_env

    found = command if os.sep in command else shutil.which(command)
    if not found:
        return None
    prefix = os.path.dirname(os.path.dirname(os.path.abspath(found)))
    return prefix if python_env(prefix).site_packages else None


def profile_for(command: str, requested: Optional[str]) -> str:
    if requested:
        return requested
    name = os.path.basename(command)
    return "bert-serving" if name.startswith("bert-serving-start") else "generic"


def run_checks(command: tuple[str, ...], prefix: Optional[str], profile: str, dev: str = "/dev",
               look_in: tuple[str, ...] = ()) -> Preflight:
    from .scan import run_scan

    prefix = os.path.abspath(prefix) if prefix else command_prefix(command[0])
    # the environment it judges is the one COMMAND is started in; the question is scan's own
    report = run_scan((), prefix=prefix, look_in=look_in)
    results: list[CheckResult] = []
    cpu = False
    if profile == "bert-serving":
        try:
            args, _unknown = bert_serving_parser().parse_known_args(list(command[1:]))
        except SystemExit:
            results.append(CheckResult("arguments", MISSING, "bert-serving-start arguments do not parse "
                                       "(-model_dir is required)", True))
        else:
            cpu = args.cpu
            results.extend(bert_serving_checks(args, report, dev))
    results.insert(0, _guard("command", lambda: command_check(command[0])))
    try:
        results.extend(framework_checks(report, cpu))
    except Exception as exc:  # noqa: BLE001 - a crashing check is a result, not an aborted run
        results.append(CheckResult("frameworks", CRASHED, f"the check did not complete: {exc!r}"))
    environ = dict(report.environ or os.environ)
    return Preflight(tuple(command), profile, prefix, tuple(results), environ.get("LD_LIBRARY_PATH"), environ)


def exec_command(preflight: Preflight) -> None:
    """Replace this process with the command (same pid: signals and the exit status pass through), in exactly the
    environment that was judged; a console script the hook moved aside still sees its own name."""
    from .repair.hooks import launch_words

    command = list(preflight.command)
    environ = dict(preflight.environ)
    found = command[0] if os.sep in command[0] else shutil.which(command[0], path=environ.get("PATH")) or command[0]
    words = launch_words(found) if shown_name(found) != os.path.basename(found) else [command[0]]
    os.execvpe(words[0], words + command[1:], environ)
