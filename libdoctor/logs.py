"""Logging through structlog: readable on a terminal, JSON lines otherwise (under systemd)."""
from __future__ import annotations

import os
import sys
from typing import Any

# logging's numeric levels, without importing logging at start-up
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR}


_configured_level = ["warning"]
_configured = [False]


def configure_logging(level: str = "warning") -> None:
    """Remember the level; structlog is imported only when something is logged (start-up time)."""
    _configured_level[0] = level
    _configured[0] = False


def _configure() -> None:
    import structlog

    level = _configured_level[0]
    _configured[0] = True
    on_terminal = sys.stderr.isatty() and "INVOCATION_ID" not in os.environ and "JOURNAL_STREAM" not in os.environ
    renderer: Any = (structlog.dev.ConsoleRenderer(colors="NO_COLOR" not in os.environ)
                     if on_terminal else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, WARNING)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    """A logger whose first call configures structlog."""
    return _LazyLogger()


def _ignore(*_args: Any, **_kwargs: Any) -> None:
    return None


class _LazyLogger:
    def __getattr__(self, method: str) -> Any:
        if _LEVELS.get(method, CRITICAL) < _LEVELS.get(_configured_level[0], WARNING):
            return _ignore  # below the level: structlog is not even imported
        import structlog

        if not _configured[0]:
            _configure()
        logger = structlog.get_logger("libdoctor")
        return getattr(logger, method)


class progress:  # noqa: N801 - used as a context manager: `with progress("scanning"):`
    """One line on stderr for work that takes over a second, on a terminal only, erased when done.

    ``LIBDOCTOR_PROGRESS_AFTER`` (seconds, default 1) sets the delay; nothing is written when stderr is a
    pipe or a file, so logs, JSON and CI output stay clean.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.timer: Any = None
        self.shown = False

    def __enter__(self) -> "progress":
        if sys.stderr.isatty():
            import threading

            delay = float(os.environ.get("LIBDOCTOR_PROGRESS_AFTER", "1") or 1)
            self.timer = threading.Timer(max(0.0, delay), self._show)
            self.timer.daemon = True
            self.timer.start()
        return self

    def _show(self) -> None:
        self.shown = True
        sys.stderr.write(f"libdoctor: {self.what}...")
        sys.stderr.flush()

    def __exit__(self, *_exc: Any) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer.join()
        if self.shown:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()
