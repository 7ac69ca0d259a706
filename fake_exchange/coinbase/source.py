"""What FakeCoinbase plays: the event a source yields and the protocol every source implements.

A source is a pure generator of Coinbase data events (one element of a message's `events`
list, with the message's channel and time), no sockets: the server wraps each in an envelope
per connection, since `sequence_num` is counted per connection. The state a subscriber gets on
subscribe (book, trades, ticker and candle snapshots) comes from the mirror, seeded with
`initial()`. Time enters only through the `clock` given to `events()` and `initial()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from fake_exchange.coinbase.frames import Payload
from fake_exchange.sources import Clock


@dataclass(frozen=True, slots=True)
class CoinbaseEvent:
    """Wait `delay` seconds after the previous event, then publish `event` on `channel`
    (`l2_data`, `market_trades`, `ticker`, `candles`) with envelope time `ts_ns`."""

    delay: float
    channel: str
    event: Payload
    ts_ns: int


class CoinbaseFrameSource(Protocol):
    """What FakeCoinbase needs from a source of market data."""

    @property
    def finite(self) -> bool: ...

    def prepare(self) -> None:
        """Load files; idempotent. The server calls it in a thread before serving."""
        ...

    def products(self) -> list[Payload]:
        """`market/products` entries (every product the source publishes, and more)."""
        ...

    def initial(self, clock: Clock) -> list[CoinbaseEvent]:
        """Snapshots the market starts from: sent on subscribe, not pushed."""
        ...

    def events(self, clock: Clock) -> Iterator[CoinbaseEvent]: ...


__all__ = ["CoinbaseEvent", "CoinbaseFrameSource"]
