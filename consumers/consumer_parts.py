"""What the parts of a consumer share: its state, declared once, its stats and reply shapes.

:class:`~consumers.consumer.Consumer` is assembled from small parts, one job each: decoding
entries into buffers, books, candles and callbacks (``consumers.ingest``), the plain
``XREAD`` loop (``consumers.plain_mode``), the ``XREADGROUP`` loop with its acks, read-ahead
and reclaim (``consumers.group_mode``), and the public API with the start/stop lifecycle
(``consumers.consumer``). The parts are mixins over :class:`ConsumerParts`, which declares
the attributes they read and the methods they call on each other, so each module
type-checks on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consumers.books import LatestBook
from consumers.candles import CandleBuilder
from consumers.exchange_candles import ExchangeCandles
from consumers.ringbuffer import RingBuffer
from consumers.streams import ReplyPipe
from marketbus.keys import StreamKey
from marketbus.models import Channel, Record

if TYPE_CHECKING:
    from consumers.history import History
    from consumers.trim_watch import TrimState
    from consumers.trims import ReadCheck

Callback = Callable[[Record], Any]


@dataclass
class ConsumerStats:
    received: int = 0
    invalid: int = 0
    callback_errors: int = 0
    acked: int = 0  # group mode: entries Redis confirmed acknowledged (XACK's replies)
    reclaimed: int = 0
    reconnects: int = 0
    resets: int = 0  # streams Redis lost (restarted empty, flushed, failed over) and read on
    trimmed: int = 0  # entries MAXLEN trimmed before they were read (and history lacked)
    trim_gaps: int = 0  # ranges of such entries found (each logged once: stream_trimmed)
    filled: int = 0  # entries of such ranges read from the archive instead (history=)
    last_error: str | None = None


class ConsumerParts:
    """Attributes and cross-part methods of a consumer (set and defined by its parts)."""

    redis: Any
    keys: dict[str, StreamKey]
    last_ids: dict[str, str]
    group: str | None
    name: str | None
    block_ms: int
    count: int
    reclaim_idle_ms: int
    pause_gc: bool
    linger_ms: float
    stats: ConsumerStats
    _raw_reads: bool
    _stopping: bool
    _callbacks: list[Callback]
    _buffers: dict[StreamKey, RingBuffer]
    _buffer_last: dict[str, tuple[int, int]]
    _candles: dict[str, CandleBuilder]
    _books: dict[str, LatestBook]
    _xcandles: dict[str, ExchangeCandles]
    _last_invalid_log: float
    _unacked: dict[str, list[bytes]]  # group mode: ingested, ack not yet sent
    _trim: TrimState
    _history: History | None
    history_wait_s: float
    _key_of: dict[StreamKey, str]

    async def _linger(self, behind: bool, received_before: int) -> None:
        """``linger_ms``: after a read that caught up and brought entries, wait that long
        before the next, so entries gather and one read takes several. A live reader's cost
        is mostly per read (100 streams at 5k records/s: ~4-10 entries a read); the price is
        up to ``linger_ms`` of added latency for an entry written during the wait. Off (0)
        by default: latency first."""
        if self.linger_ms > 0 and not behind and self.stats.received != received_before:
            await asyncio.sleep(self.linger_ms / 1000)

    if TYPE_CHECKING:  # defined by the parts; declared here so each part type-checks

        async def _ingest(
            self, key: str, entry_id: bytes, fields: dict[Any, Any], *, callbacks: bool = True
        ) -> bool: ...

        def _ingest_batch(self, key: str, entries: Sequence[Sequence[Any]]) -> None: ...

        def _advance_candles(self) -> None: ...

        def _callback_error(self, key: str, entry_id: bytes, e: Exception) -> None: ...

        async def _on_error(self, e: Exception, delay: float) -> float: ...

        def _reply_pipe(self) -> ReplyPipe | None: ...

        def _stream(self, exchange: str, symbol: str, channel: Channel | str) -> StreamKey: ...

        async def _read_tail(self, key: str, n: int) -> list[Any]: ...

        async def _trim_positions(self, keys: Sequence[str]) -> None: ...

        def _start_entries_read(self, key: str, start: str) -> int | None: ...

        async def _trim_plain(self, items: list[tuple[Any, list[Any]]]) -> dict[str, ReadCheck]: ...

        async def _trim_group(self, items: list[tuple[Any, list[Any]]]) -> dict[str, ReadCheck]: ...

        async def _trim_look(self, keys: list[str]) -> float: ...

        async def _trim_before(self, key: str, check: ReadCheck) -> int: ...

        async def _trim_after(self, key: str, check: ReadCheck, filled: int) -> None: ...


def as_str(k: bytes | str) -> str:
    return k.decode() if isinstance(k, bytes) else k


def id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    """An entry id ``ms-seq`` (or ``ms``) as numbers, which compare as Redis orders ids."""
    text = as_str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def id_or_none(entry_id: bytes | str) -> tuple[int, int] | None:
    """:func:`id_tuple`, or None for what is not an entry id (``$``, ``>``)."""
    try:
        return id_tuple(entry_id)
    except ValueError:
        return None


def reply_items(resp: Any) -> list[tuple[Any, list[Any]]]:
    """XREAD replies are a list on RESP2 and a dict on RESP3: one shape for the loop. Each
    entry is ``(id, fields)``, fields a dict (redis-py) or a flat list (raw reads)."""
    if not resp:
        return []
    if isinstance(resp, dict):
        return list(resp.items())
    return [(k, v) for k, v in resp]
