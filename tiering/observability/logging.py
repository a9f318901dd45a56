"""structlog, configured once in main(): JSON lines when the stream is not a terminal (one
object per line, with an `event` key), readable console output on a terminal."""

from __future__ import annotations

import logging
from typing import Any, TextIO

import structlog


def configure_logging(stream: TextIO, *, level: str = "info", json: bool | None = None) -> Any:
    as_json = not stream.isatty() if json is None else json
    renderer: Any = structlog.processors.JSONRenderer() if as_json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    return structlog.get_logger("tiering")
