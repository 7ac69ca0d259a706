"""Translate CCXT exceptions into ours, in one place (redis-py: ``marketbus.redis_client``).

Supervisors retry :class:`TransientError` and stop on :class:`FatalError`; they never
look at CCXT's or redis-py's own types.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import PurePath

import aiohttp
import ccxt
import redis.exceptions as rex

from marketbus.errors import (
    ExchangeAuthError,
    ExchangeUnavailableError,
    FatalError,
    InternalError,
    MarketbusError,
    TransientError,
)
from marketbus.redis_client import from_redis

LIBRARIES = frozenset({"ccxt", "aiohttp", "redis", "yarl", "multidict"})
"""Packages whose own failures (not only their exception types) count as the exchange's or
the network's trouble: a TypeError raised deep inside CCXT's parser is retried with a
fresh client, the same TypeError raised in our code is a bug."""

_RETRY_AFTER = re.compile(r"retry[- ]after[\"':\s]*(\d+(?:\.\d+)?)", re.IGNORECASE)


RETRY_AFTER_ATTR = "marketbus_retry_after"
"""Set on a CCXT refusal by ``publisher.rest_hooks.tag_retry_after``: the Retry-After of the
refused response itself (``last_response_headers`` may be another request's by then)."""


def retry_after_of(e: BaseException, headers: dict[str, str] | None = None) -> float | None:
    """Seconds the exchange asked us to wait (Retry-After), if it said so."""
    tagged = getattr(e, RETRY_AFTER_ATTR, None)
    if isinstance(tagged, int | float):
        return max(0.0, float(tagged))
    if headers:
        for k, v in headers.items():
            if k.lower() == "retry-after":
                try:
                    return max(0.0, float(v))
                except ValueError:
                    return None
    m = _RETRY_AFTER.search(str(e))
    return float(m.group(1)) if m else None


def raised_in_library(e: BaseException) -> bool:
    """Whether the innermost frame of ``e``'s traceback is in CCXT, aiohttp or redis-py."""
    tb = e.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    parts = PurePath(tb.tb_frame.f_code.co_filename).parts
    return any(p in LIBRARIES for p in parts[-6:-1])


def from_ccxt(e: BaseException, headers: dict[str, str] | None = None) -> MarketbusError:
    """Our error for what a session raised: CCXT's, aiohttp's, redis-py's, the OS's.

    Anything else is a bug (:class:`InternalError`, fatal for the worker), unless it was
    raised inside one of those libraries (then the exchange's data or the library's state
    caused it, and a fresh client is the cure).
    """
    if isinstance(e, MarketbusError):
        return e
    text = f"{type(e).__name__}: {e}"[:500]
    if isinstance(e, rex.RedisError):
        return from_redis(e)
    if isinstance(e, ccxt.AuthenticationError):
        return ExchangeAuthError(text)
    if isinstance(e, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return ExchangeUnavailableError(text, retry_after=retry_after_of(e, headers))
    if isinstance(e, ccxt.NetworkError | ccxt.OperationFailed | OSError | TimeoutError):
        return ExchangeUnavailableError(text)
    if isinstance(e, aiohttp.ClientError | asyncio.TimeoutError):
        return ExchangeUnavailableError(text)
    if isinstance(e, ccxt.NotSupported):
        return FatalError(text)
    if isinstance(e, ccxt.BaseError):
        # Other ExchangeErrors (a refused subscription, a 4xx) leave ccxt's client in a state
        # where later watches hang: a fresh client is the cure, so retry with a new session.
        return TransientError(text)
    if isinstance(e, Exception) and raised_in_library(e):
        return TransientError(f"inside {text}")
    return InternalError(f"bug: {text}")
