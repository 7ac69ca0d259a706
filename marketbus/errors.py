"""One exception tree for marketbus.

Everything we raise derives from :class:`MarketbusError`. Errors are split into
:class:`TransientError` (retry with backoff) and :class:`FatalError` (do not retry),
so supervisors decide by type, never by message. CCXT and redis-py exceptions are
translated into these at the boundary (``publisher.errors_map``).
"""

from __future__ import annotations


class MarketbusError(Exception):
    """Root of every error marketbus raises on purpose."""


class TransientError(MarketbusError):
    """Worth retrying: the network, a timeout, a 5xx, a rate limit."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(MarketbusError):
    """Retrying cannot help: bad credentials, a bad config, an unsupported exchange."""


class InternalError(FatalError):
    """A bug: an exception none of our boundaries maps (an AttributeError in our code...).

    Retrying a bug with backoff only hides it; the worker that hit it stops (FAILED) and the
    traceback is logged.
    """


class ConfigError(FatalError, ValueError):
    """The configuration is invalid; the message names the field and the value."""


class UnknownSymbolError(FatalError, KeyError):
    """A symbol the exchange does not list. Dropped from the subscription, never retried."""

    def __init__(self, exchange: str, symbol: str, suggestions: tuple[str, ...] = ()) -> None:
        self.exchange = exchange
        self.symbol = symbol
        self.suggestions = suggestions
        hint = f" (did you mean {', '.join(suggestions)}?)" if suggestions else ""
        super().__init__(f"unknown symbol {symbol!r} on {exchange}{hint}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class UnknownExchangeError(ConfigError):
    """An exchange id CCXT pro does not know."""


class DecodeError(MarketbusError, ValueError):
    """A stream entry that is not a valid marketbus record (corrupt, foreign or newer schema)."""


class SchemaVersionError(DecodeError):
    """An entry written with a schema this version cannot read: upgrade the consumer."""


class RedisUnavailableError(TransientError):
    """Redis cannot be reached right now."""


class RedisAuthError(FatalError):
    """Redis refused our credentials or ACL permissions."""


class ExchangeUnavailableError(TransientError):
    """The exchange is unreachable, timed out or asked us to slow down."""


class ExchangeAuthError(FatalError):
    """The exchange refused our credentials."""
