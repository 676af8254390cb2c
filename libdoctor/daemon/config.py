"""The configuration file (TOML): /etc/libdoctor/config.toml, then the user's, then --config.

Later files override earlier ones key by key.  A bad file is one clear error naming the file
and the line, never a traceback.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from ..errors import UsageError
from ..loader.plainfiles import read_regular

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python < 3.11
    import tomli as tomllib

SYSTEM_CONFIG = "/etc/libdoctor/config.toml"
MAX_CONFIG_BYTES = 1 << 20
HEAL_POLICIES = ("off", "safe")
# Finite, positive and sane: a week between checks at most, a debounce under a minute.
SECONDS_RANGES = {"interval": (1.0, 7 * 86400.0), "debounce": (0.01, 60.0), "heal_interval": (1.0, 7 * 86400.0)}


@dataclass(frozen=True)
class Config:
    targets: tuple[str, ...] = ()  # files or folders to keep healthy
    environments: tuple[str, ...] = ()  # Python environment prefixes whose frameworks to keep healthy
    heal: str = "off"  # off | safe
    in_place: bool = False  # heal with links beside the libraries instead of the shim folder
    interval: float = 3600.0  # seconds between re-verifications without any event
    debounce: float = 1.0  # quiet seconds that close a burst of file events
    heal_interval: float = 60.0  # at least this many seconds between two heals
    metrics_file: Optional[str] = None  # Prometheus textfile for node_exporter
    sources: tuple[str, ...] = field(default=(), compare=False)  # files read, in order


def user_config_path() -> str:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return os.path.join(base, "libdoctor", "config.toml")


MAX_LINE_CHARS = 4096  # a line longer than this (a 50,000-part dotted key) is refused before parsing
MAX_NESTING = 32  # arrays and inline tables inside each other


def _trusted(path: str) -> None:
    """A configuration steers what root writes: it must belong to root or to the user running libdoctor, and
    nobody else may write it (or its folder)."""
    for where in (path, os.path.dirname(os.path.abspath(path))):
        try:
            st = os.stat(where)
        except OSError as exc:
            raise UsageError(f"{path}: {exc.strerror}") from None
        if st.st_uid not in (0, os.geteuid()):
            raise UsageError(f"{where}: belongs to another user (uid {st.st_uid}): configuration refused")
        if st.st_mode & 0o002 and not (where != path and st.st_mode & 0o1000):
            raise UsageError(f"{where}: writable by everyone: configuration refused (chmod o-w {where})")
        if st.st_mode & 0o020 and st.st_gid not in (0, os.getegid()):
            raise UsageError(f"{where}: writable by group {st.st_gid}: configuration refused (chmod g-w {where})")


def _bounded(path: str, text: str) -> str:
    """Refused before the parser sees it: lines too long, or nesting too deep (tomllib recurses and is slow on
    crafted input)."""
    depth = deepest = 0
    for number, line in enumerate(text.splitlines(), 1):
        if len(line) > MAX_LINE_CHARS:
            raise UsageError(f"{path}: line {number} is longer than {MAX_LINE_CHARS} characters: refused")
        for char in line.split("#", 1)[0]:
            depth += char in "[{"
            depth -= char in "]}"
            deepest = max(deepest, depth)
    if deepest > MAX_NESTING:
        raise UsageError(f"{path}: nested deeper than {MAX_NESTING} levels: refused")
    return text


def _read(path: str) -> dict[str, Any]:
    _trusted(path)
    try:
        return tomllib.loads(_bounded(path, read_regular(path, MAX_CONFIG_BYTES).decode("utf-8")))
    except RecursionError:
        raise UsageError(f"{path}: nested too deeply: refused") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: {exc}") from None  # the message names line and column
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise UsageError(f"{path}: {exc.strerror}") from None


def _checked(path: str, data: dict[str, Any]) -> dict[str, Any]:
    known = {f.name: f for f in fields(Config) if f.name != "sources"}
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in known:
            raise UsageError(f"{path}: unknown setting {key!r} (known: {', '.join(sorted(known))})")
        if key in ("targets", "environments"):
            if not isinstance(value, list) or not all(isinstance(v, str) and v and "\0" not in v for v in value):
                raise UsageError(f"{path}: {key} must be a list of paths")
            value = tuple(value)
        elif key == "heal":
            if value not in HEAL_POLICIES:
                raise UsageError(f"{path}: heal must be one of {', '.join(HEAL_POLICIES)}, not {value!r}")
        elif key == "in_place":
            if not isinstance(value, bool):
                raise UsageError(f"{path}: in_place must be true or false")
        elif key in SECONDS_RANGES:
            low, high = SECONDS_RANGES[key]
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not low <= value <= high:
                raise UsageError(f"{path}: {key} must be a number of seconds from {low:g} to {high:g}")
            value = float(value)  # inf and nan fail the range above
        elif key == "metrics_file" and (not isinstance(value, str) or not value or "\0" in value):
            raise UsageError(f"{path}: metrics_file must be a path")
        out[key] = value
    return out


def checked_overrides(values: dict[str, Any]) -> dict[str, Any]:
    """Command-line settings, held to the same rules as the configuration files."""
    return _checked("command line", values)


def metrics_folder(path: str) -> Optional[str]:
    """The folder of the metrics_file configured in ``path`` (None: none configured, or no such file); a file
    that cannot be trusted or parsed raises UsageError, as it does for the daemon."""
    if not os.path.exists(path):
        return None
    metrics = _checked(path, _read(path)).get("metrics_file")
    return os.path.dirname(os.path.abspath(metrics)) if metrics else None


def load_config(explicit: Optional[str] = None, system: str = SYSTEM_CONFIG,
                user: Optional[str] = None) -> Config:
    merged: dict[str, Any] = {}
    sources = []
    for path in (system, user or user_config_path()):
        if os.path.exists(path):
            merged.update(_checked(path, _read(path)))
            sources.append(path)
    if explicit:
        if not os.path.exists(explicit) and explicit == system:
            pass  # the units name the system file; it may not exist yet
        else:
            merged.update(_checked(explicit, _read(explicit)))
            sources.append(explicit)
    return Config(**merged, sources=tuple(dict.fromkeys(sources)))
