"""structlog set-up: JSON lines when not on a terminal (operators, docker), pretty on a TTY."""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from marketbus.redaction import scrub

_SECRET_KEYS = ("password", "secret", "token", "apikey", "api_key")


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Never log a secret, whatever a caller passed: secret-named keys are masked, and every
    text value is scrubbed of Redis URL credentials and of the secrets this process knows."""
    for k, v in list(event.items()):
        if any(s in k.lower() for s in _SECRET_KEYS):
            event[k] = "***"
        elif isinstance(v, str):
            event[k] = scrub(v)
        elif isinstance(v, BaseException):
            text = str(v)
            if scrub(text) != text:  # an exception's text is rendered later: render it now
                event[k] = f"{type(v).__name__}: {scrub(text)}"
    return event


def configure(level: str = "info", json: bool | None = None, stream: Any = None) -> None:
    out = stream or sys.stderr
    use_json = (not out.isatty()) if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
        ),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
