"""Translate CCXT exceptions into ours, in one place (redis-py: ``marketbus.redis_client``).

Supervisors retry :class:`TransientError` and stop on :class:`FatalError`; they never
look at CCXT's or redis-py's own types.
"""

from __future__ import annotations

import re

import ccxt

from marketbus.errors import (
    ExchangeAuthError,
    ExchangeUnavailableError,
    FatalError,
    MarketbusError,
    TransientError,
)

_RETRY_AFTER = re.compile(r"retry[- ]after[\"':\s]*(\d+(?:\.\d+)?)", re.IGNORECASE)


def retry_after_of(e: BaseException, headers: dict[str, str] | None = None) -> float | None:
    """Seconds the exchange asked us to wait (Retry-After), if it said so."""
    if headers:
        for k, v in headers.items():
            if k.lower() == "retry-after":
                try:
                    return max(0.0, float(v))
                except ValueError:
                    return None
    m = _RETRY_AFTER.search(str(e))
    return float(m.group(1)) if m else None


def from_ccxt(e: BaseException, headers: dict[str, str] | None = None) -> MarketbusError:
    """Our error for a CCXT (or asyncio/OS) exception."""
    if isinstance(e, MarketbusError):
        return e
    text = f"{type(e).__name__}: {e}"[:500]
    if isinstance(e, ccxt.AuthenticationError):
        return ExchangeAuthError(text)
    if isinstance(e, ccxt.DDoSProtection | ccxt.RateLimitExceeded):
        return ExchangeUnavailableError(text, retry_after=retry_after_of(e, headers))
    if isinstance(e, ccxt.NetworkError | ccxt.OperationFailed | OSError | TimeoutError):
        return ExchangeUnavailableError(text)
    if isinstance(e, ccxt.NotSupported):
        return FatalError(text)
    # Other ExchangeErrors (a refused subscription, a 4xx) leave ccxt's client in a state
    # where later watches hang: a fresh client is the cure, so retry with a new session.
    return TransientError(text)
