"""What FakeKraken plays: the event a source yields and the protocol every source implements.

A source speaks Kraken's v1 data model (the recordings' own): book snapshots `{"as", "bs"}`
and updates `{"a", "b", "c"}` with `[price, volume, time]` strings, trade rows, v1 ticker
dicts. The server mirrors them and renders v2 for each subscriber (`fake_exchange.kraken.book`
cuts each depth's view); a replayed v1 frame also keeps its text for v1 clients. Time enters
only through the `clock` given to `events()` and `initial()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from fake_exchange.kraken.frames import Payload
from fake_exchange.sources import Clock


@dataclass(frozen=True, slots=True)
class KrakenEvent:
    """Wait `delay` seconds after the previous event, then publish `data` of v1 channel
    `channel` (`book-<depth>`, `trade`, `ticker`) for `pair` (v1 `wsname`, `XBT/USD`).
    `ts_ns`: the event's exchange time; `text`: the recorded v1 frame, when it is one."""

    delay: float
    channel: str
    pair: str
    data: Any
    ts_ns: int
    text: str | None = None


class KrakenFrameSource(Protocol):
    """What FakeKraken needs from a source of market data."""

    @property
    def finite(self) -> bool: ...

    def prepare(self) -> None:
        """Load files; idempotent. The server calls it in a thread before serving."""
        ...

    def pairs(self) -> dict[str, Payload]:
        """`AssetPairs` entries by Kraken pair id (every pair the source publishes, and more)."""
        ...

    def channel_ids(self) -> dict[tuple[str, str], int]:
        """Recorded v1 channel ids by (channel name, pair); empty when there are none."""
        ...

    def initial(self, clock: Clock) -> list[KrakenEvent]:
        """The books the market starts from: sent on subscribe, not pushed."""
        ...

    def events(self, clock: Clock) -> Iterator[KrakenEvent]: ...


__all__ = ["KrakenEvent", "KrakenFrameSource"]
