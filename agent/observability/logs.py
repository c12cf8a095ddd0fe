"""structlog setup: one JSON object per line on stderr (journald stores it, log shippers parse it).

Standard-library ``logging`` records (paho, onnxruntime, our own modules that use ``logging``) are rendered
through the same processors, so every line of the daemon has the same shape.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, List, Optional, TextIO

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def _level(name: str) -> int:
    try:
        return _LEVELS[name.lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r}; one of {sorted(_LEVELS)}") from None


def setup_logging(level: str = "info", fmt: str = "json", stream: Optional[TextIO] = None) -> None:
    """Configure structlog and the stdlib root logger (idempotent; call again to change the format)."""
    shared: List[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]
    renderer: Any
    if fmt == "json":
        renderer = structlog.processors.JSONRenderer()
        shared.append(structlog.processors.format_exc_info)
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_edge_agent", False):
            root.removeHandler(old)
    handler._edge_agent = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(_level(level))


def set_level(level: str) -> None:
    """Change the log level at runtime (SIGHUP reload)."""
    logging.getLogger().setLevel(_level(level))
