"""Logging through structlog: readable on a terminal, JSON lines otherwise (under systemd)."""
from __future__ import annotations

import logging
import os
import sys
from typing import Any

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "warning") -> None:
    import structlog

    on_terminal = sys.stderr.isatty() and "INVOCATION_ID" not in os.environ and "JOURNAL_STREAM" not in os.environ
    renderer: Any = (structlog.dev.ConsoleRenderer(colors="NO_COLOR" not in os.environ)
                     if on_terminal else structlog.processors.JSONRenderer())
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"), renderer],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.WARNING)),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )


def get_logger() -> Any:
    import structlog

    return structlog.get_logger("libdoctor")
