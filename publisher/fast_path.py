"""What every native parser is: the protocol the worker uses, and the state they share.

A native parser (``publisher.native`` for Binance, ``publisher.native_okx`` for OKX,
``publisher.native_bybit`` for Bybit) is handed every websocket frame before CCXT parses it;
an exchange's profile names its own (``native_parser``, ``publisher.exchanges``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from marketbus.models import Channel, Record


class FastPath(Protocol):
    """What the worker and the frame guard need from a native parser.

    ``fast(data, recv_ns)`` is handed every websocket frame before CCXT parses it: True means
    it was consumed (its records emitted, its bad rows counted), False sends it on to CCXT.
    """

    symbols: dict[str, str]
    """Exchange market ids -> the unified symbols published (set on every subscription change)."""
    frames: int
    """Frames consumed so far."""

    def __call__(self, data: str | bytes, recv_ns: int) -> bool: ...

    def follow(self, markets: Iterable[Mapping[str, Any]]) -> None:
        """Follow these CCXT markets (sets ``symbols``; Bybit's spot and linear share ids)."""
        ...

    def for_url(self, url: str) -> Callable[[str | bytes, int], bool]:
        """The parser of the connection to ``url`` (Bybit's market type is in its url)."""
        ...


class FastPathFactory(Protocol):
    def __call__(
        self,
        exchange: str,
        symbols: Mapping[str, str],
        channels: frozenset[Channel],
        emit: Callable[[Record], None],
        on_invalid: Callable[[Exception], None],
    ) -> FastPath: ...


class FastPathBase:
    """The state every native parser keeps: whom it publishes for, where records go."""

    symbols: dict[str, str]

    def __init__(
        self,
        exchange: str,
        symbols: Mapping[str, str],
        channels: frozenset[Channel],
        emit: Callable[[Record], None],
        on_invalid: Callable[[Exception], None],
    ) -> None:
        self.exchange = exchange
        self.symbols = dict(symbols)
        self.channels = channels
        self._emit = emit
        self._on_invalid = on_invalid
        self.frames = 0

    def __call__(self, data: str | bytes, recv_ns: int) -> bool:
        return False  # each parser says what it takes

    def follow(self, markets: Iterable[Mapping[str, Any]]) -> None:
        self.symbols = {m["id"]: m["symbol"] for m in markets}

    def for_url(self, url: str) -> Callable[[str | bytes, int], bool]:
        return self.__call__  # one parser for every connection
