"""What FakeBybit plays: the event a source yields and the protocol every source implements.

A source is a pure generator of complete Bybit push frames, no sockets, each filed under the
category (url) it belongs to. Books are pushed at the source's own depth; the server turns them
into the depth each client subscribed to (`market.DepthView`). The state a subscriber gets on
subscribe (book and ticker snapshots) comes from the mirror, seeded with `initial()`. Time
enters only through the `clock` given to `events()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from fake_exchange.bybit.frames import Payload
from fake_exchange.sources import Clock

U_START = 1_000_000
"""`u` of a synthetic book at the start (Bybit's are large integers too)."""


@dataclass(frozen=True, slots=True)
class BybitEvent:
    """Wait `delay` seconds after the previous event, then publish `frame` on `category`."""

    delay: float
    category: str
    topic: str
    frame: Payload


class BybitFrameSource(Protocol):
    """What FakeBybit needs from a source of market data."""

    @property
    def finite(self) -> bool: ...

    def prepare(self) -> None:
        """Load files; idempotent. The server calls it in a thread before serving."""
        ...

    def instruments(self) -> dict[str, list[Payload]]:
        """`instruments-info` entries by category (every symbol the source publishes)."""
        ...

    def initial(self) -> list[BybitEvent]:
        """Book and ticker snapshots the market starts from: sent on subscribe, not pushed."""
        ...

    def events(self, clock: Clock) -> Iterator[BybitEvent]: ...


__all__ = ["U_START", "BybitEvent", "BybitFrameSource"]
