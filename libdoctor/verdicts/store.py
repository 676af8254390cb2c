"""A warm run reads nothing it already knows: a command's answer kept under everything it consulted.

``scan``, ``fix`` (the plan) and ``explain`` are answered from here when the same command line runs
in the same environment and everything the first run consulted (``recorder``) still shows what it
showed.  The environment is the key: the command line (less ``--log-level``), the working folder,
every variable but the shell's own bookkeeping, the user and groups, the interpreter, libdoctor's
own code (every file of the package), where the output goes, and the boot (a reboot can load
another driver).  An answer that ran the user's code (``--probe``), changed the machine
(``--apply``) or failed (exit 2) is never kept.  An entry is written only by a run that computed
its answer; a replayed run writes nothing.
"""
from __future__ import annotations

import json
import os
import sys
import time

from ..loader.plainfiles import default_cache_dir, read_json
from .recorder import Recorder, consulting, identity, names_in

TYPE_CHECKING = False  # typing is not imported at run time: a replay starts in a few milliseconds
if TYPE_CHECKING:
    from typing import Any, Optional

FORMAT = 1
CACHEABLE_COMMANDS = frozenset({"scan", "fix", "explain"})
UNCACHEABLE_WORDS = frozenset({"--probe", "--apply", "--no-cache", "--help", "-h", "--version", "--yes", "-y"})
VOLATILE_VARIABLES = frozenset({"_", "OLDPWD", "PWD", "SHLVL", "LINES", "COLUMNS"})
OPT_OUT = "LIBDOCTOR_NO_VERDICT_CACHE"
MAX_ENTRY_BYTES = 32 << 20
MAX_ENTRIES = 64  # answers kept; the oldest are dropped


def command_of(argv: list[str]) -> tuple[Optional[str], list[str]]:
    """The subcommand and the command line without ``--log-level`` (which changes only stderr)."""
    kept: list[str] = []
    command = None
    skip = False
    for word in argv:
        if skip:
            skip = False
            continue
        if command is None and word == "--log-level":
            skip = True
            continue
        if command is None and word.startswith("--log-level="):
            continue
        if command is None and not word.startswith("-"):
            command = word
        kept.append(word)
    return command, kept


def log_level_of(argv: list[str]) -> str:
    for index, word in enumerate(argv):
        if word == "--log-level" and index + 1 < len(argv):
            return argv[index + 1]
        if word.startswith("--log-level="):
            return word.split("=", 1)[1]
    return "warning"


def cacheable(argv: list[str]) -> bool:
    command, _ = command_of(argv)
    return (command in CACHEABLE_COMMANDS and not UNCACHEABLE_WORDS.intersection(argv)
            and not os.environ.get(OPT_OUT))


def _code_identity() -> list:
    """libdoctor's own source files: an edited or upgraded libdoctor answers anew (run from the one-file build,
    the archive itself)."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = os.path.dirname(root)
    if not os.path.isdir(root) and os.path.isfile(archive):  # libdoctor.pyz/libdoctor/verdicts/store.py
        st = os.stat(archive)
        return [("archive", archive, st.st_size, st.st_mtime_ns, st.st_ctime_ns)]
    found = []
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = sorted(s for s in subfolders if s != "__pycache__")
        for name in sorted(names):
            if not name.endswith((".pyc", ".pyo")):  # sources and the data tables they read
                st = os.stat(os.path.join(folder, name))
                found.append((folder[len(root):], name, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    return found


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
            return handle.read().strip()
    except OSError:
        return ""


_KEYS: dict[tuple[str, ...], str] = {}  # one key per command line and process: replay and recording share it


def verdict_key(argv: list[str], stream: Any = None) -> str:
    """The cache key of this command line in this process's environment (made once per process)."""
    if stream is None and tuple(argv) in _KEYS:
        return _KEYS[tuple(argv)]
    key = _verdict_key(argv, stream)
    if stream is None:
        _KEYS[tuple(argv)] = key
    return key


def _verdict_key(argv: list[str], stream: Any = None) -> str:
    stream = stream or sys.stdout
    _, words = command_of(argv)
    variables = sorted((k, v) for k, v in os.environ.items() if k not in VOLATILE_VARIABLES)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    facts = [FORMAT, _code_identity(), sys.prefix, os.path.realpath(sys.executable), sys.version, words, os.getcwd(),
             variables,
             os.geteuid(), os.getegid(), sorted(os.getgroups()), tty, getattr(stream, "encoding", None), _boot_id()]
    return _digest(json.dumps(facts, default=str).encode("utf-8", "surrogateescape"))


def _digest(data: bytes) -> str:
    """BLAKE2b-256 from the interpreter's own module (hashlib would load OpenSSL first: 3 ms of start-up)."""
    try:
        from _blake2 import blake2b
    except ImportError:  # an interpreter built without it
        from hashlib import blake2b
    return blake2b(data, digest_size=32).hexdigest()


def cache_folder() -> str:
    return os.path.join(default_cache_dir(), "verdicts")


class recording:  # noqa: N801 - a context manager around one command
    """Run the command inside; when it exits 0 or 1, keep its output under what it consulted."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = list(argv)
        self.enabled = cacheable(self.argv) and sys.stdout is not None
        try:
            self.key = verdict_key(self.argv) if self.enabled else ""
        except (OSError, ValueError):  # no working folder, an unreadable package: the command just runs
            self.enabled, self.key = False, ""
        self.consulting: Optional[consulting] = None

    def __enter__(self) -> "recording":
        if self.enabled:
            ours = os.path.abspath(os.path.dirname(cache_folder()))
            self.consulting = consulting((ours + os.sep, ours)).__enter__()
        return self

    def __exit__(self, kind: Any, value: Any, _traceback: Any) -> None:
        if self.consulting is None:
            return
        self.consulting.__exit__()
        code = value.code if kind is SystemExit else None
        if kind in (SystemExit, None) and code in (0, 1, None):
            problem = save(self.key, self.consulting.recorder, self.consulting.output, code or 0)
            if problem:
                from ..logs import get_logger

                get_logger().info("verdict not kept", problem=problem)


def save(key: str, recorder: Recorder, output: str, code: int) -> Optional[str]:
    """Keep one answer (atomically, in our own private folder); a problem is returned, never raised."""
    from ..files import make_folders, write_atomic

    settled = recorder.settle(time.time_ns())
    if settled is None:
        return "a large file changed while the command ran: its answer is not kept"
    entry = {"format": FORMAT, "key": key, "exit": code, "stdout": output,
             "consulted": [[op, path, list(shown)] for (op, path), shown in settled.items()]}
    folder = cache_folder()
    try:
        make_folders(folder, 0o700)
        write_atomic(os.path.join(folder, f"{key}.json"),
                     json.dumps(entry, separators=(",", ":")).encode("utf-8", "surrogateescape"), 0o600)
        _drop_oldest(folder)
    except Exception as exc:  # noqa: BLE001 - a cache that cannot be written is never the command's failure
        return f"could not keep the answer in {folder}: {exc}"
    return None


def _drop_oldest(folder: str) -> None:
    entries = []
    for name in names_in(folder):
        if len(name) == 69 and name.endswith(".json"):
            try:
                entries.append((os.lstat(os.path.join(folder, name)).st_mtime_ns, name))
            except OSError:
                continue
    for _mtime, name in sorted(entries)[:-MAX_ENTRIES]:
        try:
            os.unlink(os.path.join(folder, name))
        except OSError:
            pass



# -- replaying ----------------------------------------------------------------------------

def load(key: str) -> Optional[dict]:
    try:
        entry = read_json(os.path.join(cache_folder(), f"{key}.json"), MAX_ENTRY_BYTES, private=True)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(entry, dict) or entry.get("format") != FORMAT or entry.get("key") != key:
        return None
    if not isinstance(entry.get("stdout"), str) or entry.get("exit") not in (0, 1):
        return None
    return entry


def still_true(entry: dict) -> bool:
    """Does everything the answer consulted still show what it showed?"""
    consulted = entry.get("consulted")
    if not isinstance(consulted, list):
        return False
    for item in consulted:
        try:
            op, path, shown = item
            if identity(op, path) != tuple(shown):
                return False
        except (ValueError, TypeError, KeyError):
            return False
    return True


def replay(argv: list[str]) -> Optional[int]:
    """The kept answer of this command, printed, and its exit status; None when it must run."""
    if not cacheable(argv):
        return None
    try:
        key = verdict_key(argv)
    except (OSError, ValueError):
        return None  # no working folder, an unreadable package: just run
    entry = load(key)
    if entry is None or not still_true(entry):
        return None
    sys.stdout.write(entry["stdout"])
    sys.stdout.flush()
    if log_level_of(argv) in ("info", "debug"):
        from ..logs import configure_logging, get_logger

        configure_logging(log_level_of(argv))
        get_logger().info("verdict reused", consulted=len(entry["consulted"]), key=key[:12])
    return int(entry["exit"])


