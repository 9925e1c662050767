"""Logging as a library does it: structlog on top of the application's own configuration.

If the application configured structlog, qtasks logs through the application's processor chain.
Otherwise every event goes to the stdlib logger of the same name (``qtasks.worker``, ...) as
``event key=value ...``, so ``logging`` levels and handlers decide what is shown. qtasks never
configures logging itself; only the ``qtasks worker`` command does, as an application, and only
when nothing else has.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog


def get_logger(name: str) -> Any:
    """A structlog logger named ``name``; decided at call time, never at import."""
    if structlog.is_configured():
        return structlog.get_logger(name).bind()
    return structlog.wrap_logger(
        logging.getLogger(name),
        wrapper_class=structlog.stdlib.BoundLogger,
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["event"], drop_missing=True),
        ],
    ).bind()


def debug_enabled(name: str) -> bool:
    """Whether a debug event of logger ``name`` would be emitted (cheap; for hot paths)."""
    return structlog.is_configured() or logging.getLogger(name).isEnabledFor(logging.DEBUG)


def configure_for_cli(fmt: str = "auto", level: str = "INFO") -> None:
    """Console output on a terminal, JSON lines otherwise; left alone if already configured."""
    if fmt == "none" or structlog.is_configured() or logging.getLogger().handlers:
        return
    if fmt == "auto":
        fmt = "console" if sys.stderr.isatty() else "json"
    renderer: Any = structlog.dev.ConsoleRenderer() if fmt == "console" else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            *([structlog.processors.dict_tracebacks] if fmt == "json" else []),
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
