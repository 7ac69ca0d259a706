"""What FakeOkx plays: the event a source yields and the protocol every source implements.

A source is a pure generator of complete push frames, no sockets. Books frames already carry
seqId/prevSeqId and a checksum computed on the source's own `OkxBook`, so a source can be checked
on its own; the server mirrors the books only to answer snapshots and REST. Time enters only
through the `clock` given to `events()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.frames import Payload
from fake_exchange.sources import Clock

SEQ_START = 1_000_000
"""seqId of every book at the start (the recording has none; OKX's are large integers)."""


@dataclass(frozen=True, slots=True)
class OkxEvent:
    """Wait `delay` seconds after the previous event, then publish `frame`."""

    delay: float
    channel: str
    inst_id: str
    frame: Payload


class OkxFrameSource(Protocol):
    """What FakeOkx needs from a source of market data."""

    @property
    def finite(self) -> bool: ...

    def prepare(self) -> None:
        """Load files; idempotent. The server calls it in a thread before serving."""
        ...

    def instruments(self) -> dict[str, list[Payload]]:
        """`public/instruments` entries by instType (every instId the source publishes)."""
        ...

    def books(self) -> dict[str, OkxBook]:
        """Fresh copies of the books at the start, by instId."""
        ...

    def events(self, clock: Clock) -> Iterator[OkxEvent]: ...


__all__ = ["SEQ_START", "OkxEvent", "OkxFrameSource"]
