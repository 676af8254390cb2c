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
