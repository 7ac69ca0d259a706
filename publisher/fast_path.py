"""What every native parser is: the protocol the worker uses, and the state they share.

A native parser (``publisher.native`` for Binance, ``publisher.native_okx`` for OKX) is handed
every websocket frame before CCXT parses it; :data:`publisher.native.FAST_PATHS` says which
exchange has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

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
