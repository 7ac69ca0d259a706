"""The bot-side reader: Redis Streams -> decoded records -> ring buffers and callbacks.

::

    async with Consumer("redis://localhost:6379", ["binance:BTC/USDT"]) as c:
        c.on_record(print)
        await asyncio.sleep(10)
        df = c.buffer("binance", "BTC/USDT", "trades").to_pandas()

Plain mode starts with the last ``backfill`` entries of each stream, then follows with
blocking ``XREAD`` from the last id it holds: no gap, no repeat, also across Redis
reconnects. Group mode (``group=``, ``name=``) uses ``XREADGROUP``, acknowledges each
entry after it was ingested and its callbacks returned (one XACK per stream and batch, sent
with the next read), re-reads its own pending entries after a restart and reclaims entries a
dead member left pending (``XAUTOCLAIM``). A stream Redis lost (restarted without
persistence, flushed, failed over) is a reset, counted in ``stats.resets`` and logged
(``stream_reset``): a group is created again, a plain read goes on from what the stream
holds now.

Per channel, besides the ring buffer of every record: ``book`` keeps the latest full book
(:meth:`Consumer.book`), ``candles`` collapses candle updates to one row per interval start
(:meth:`Consumer.exchange_candles`), ``trades`` can feed candles built from trades
(:meth:`Consumer.candles`). See docs/consumers.md.

Entries ``MAXLEN`` trimmed before they were read (a slow callback, a long downtime) are
found, counted (``stats.trimmed``) and logged (``stream_trimmed``); with ``history=`` (an
archive directory) they are read from the archive instead, and :meth:`Consumer.window` joins
the archive, the stream and the ring buffer into one table. ``namespace=`` follows the
streams a replay wrote (``md.<name>:...``) instead of the live ones.

This module holds the public API and the start/stop lifecycle; the class is assembled from
parts (``consumers.consumer_parts`` lists them): ``consumers.ingest``,
``consumers.plain_mode``, ``consumers.group_mode``, ``consumers.trim_watch`` and
``consumers.window``.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot

from consumers.books import Best, LatestBook
from consumers.candles import CandleBuilder
from consumers.columns import COLUMNS
from consumers.consumer_parts import Callback, ConsumerStats
from consumers.exchange_candles import DEFAULT_KEEP, ExchangeCandles
from consumers.group_mode import GroupMode
from consumers.history import History
from consumers.ingest import Ingest
from consumers.markets import MarketIndex, plan
from consumers.plain_mode import PlainMode
from consumers.ringbuffer import RingBuffer
from consumers.streams import ReplyPipe
from consumers.trim_watch import TrimState, TrimWatch
from consumers.window import Window
from marketbus.aio import cancel_and_wait
from marketbus.errors import ConfigError, DecodeError, RedisAuthError
from marketbus.keys import StreamKey, namespace_prefix, parse_stream_key, stream_key, stream_pattern
from marketbus.models import BookTop, Channel
from marketbus.redis_client import connect, from_redis
from marketbus.settings import RedisSettings

log = structlog.get_logger("marketbus.consumer")


class Consumer(Ingest, PlainMode, GroupMode, TrimWatch, Window):
    """Follows markets from Redis into per-market PyArrow ring buffers."""

    def __init__(
        self,
        redis: str | RedisSettings | Any,
        markets: Iterable[str],
        channels: Iterable[Channel | str] = (Channel.TICKER, Channel.TRADES),
        *,
        backfill: int = 1000,
        capacity: int = 100_000,
        group: str | None = None,
        name: str | None = None,
        block_ms: int = 1000,
        count: int = 1000,
        reclaim_idle_ms: int = 30_000,
        start_ids: dict[str, str] | None = None,
        candles: Sequence[str | int] = (),
        candle_keep: int = DEFAULT_KEEP,
        pause_gc: bool = False,
        linger_ms: float = 0.0,
        history: str | Path | History | None = None,
        history_wait_s: float = 90.0,
        namespace: str | None = None,
    ) -> None:
        if (group is None) != (name is None):
            raise ConfigError(
                "group and name go together: Consumer(..., group='bots', name='bot-1')"
            )
        if backfill < 0 or capacity < 1 or count < 1 or block_ms < 0 or candle_keep < 1:
            raise ConfigError(
                "backfill >= 0, capacity >= 1, count >= 1, block_ms >= 0 and candle_keep >= 1 please"
            )
        if history_wait_s < 0:
            raise ConfigError("history_wait_s >= 0 please")
        if not 0 <= linger_ms <= 1000:
            raise ConfigError("linger_ms between 0 and 1000 please (0: off, the default)")
        try:
            self._prefix = namespace_prefix(namespace)
        except ValueError as e:
            raise ConfigError(f"namespace: {e}") from e
        self.namespace = namespace
        self._owns_redis = isinstance(redis, str | RedisSettings)
        if isinstance(redis, str):
            redis = RedisSettings(url=redis)
        self.redis: Any = connect(redis) if isinstance(redis, RedisSettings) else redis
        # plain XREAD without redis-py's reply parsing (a dict per entry), on a standalone
        # client with a pool; a cluster (or a single-connection client) goes through redis-py
        self._raw_reads = (
            isinstance(self.redis, aioredis.Redis) and getattr(self.redis, "connection", 1) is None
        )
        self._markets = list(markets)
        self._channels = [Channel(c) for c in channels]
        self.backfill = backfill
        self.capacity = capacity
        self.group = group
        self.name = name
        self.block_ms = block_ms
        self.count = count
        self.reclaim_idle_ms = reclaim_idle_ms
        # opt-in: while behind and without callbacks, Python's cyclic GC off during each
        # read and its ingest (consumers/streams.py says why, docs/performance.md what it
        # gains). Process-wide, so a library does not do it to its host unless asked.
        self.pause_gc = pause_gc
        # opt-in: wait this long after a read that caught up, so the next takes more entries
        # (consumers.consumer_parts._linger); fewer reads, up to linger_ms more latency
        self.linger_ms = float(linger_ms)
        self._start_ids = dict(start_ids or {})
        self.keys: dict[str, StreamKey] = {}
        self.last_ids: dict[str, str] = {}
        self._buffers: dict[StreamKey, RingBuffer] = {}
        self._buffer_last: dict[str, tuple[int, int]] = {}
        self._callbacks: list[Callback] = []
        self._candle_intervals = tuple(candles)
        self._candles: dict[str, CandleBuilder] = {}
        self._candle_keep = candle_keep
        self._books: dict[str, LatestBook] = {}
        self._xcandles: dict[str, ExchangeCandles] = {}
        self._index = MarketIndex()
        self._key_of: dict[StreamKey, str] = {}
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._ready = asyncio.Event()
        self.stats = ConsumerStats()
        self._last_invalid_log = 0.0
        self._unacked: dict[str, list[bytes]] = {}  # group mode: ingested, ack not yet sent
        # trimmed before read: found and counted (consumers.trim_watch), filled from history
        self._trim = TrimState()
        self._history = History(history) if isinstance(history, str | Path) else history
        self.history_wait_s = history_wait_s

    # -- public API -----------------------------------------------------------------------
    def on_record(self, callback: Callback) -> Callback:
        """Call ``callback(record)`` (sync or async) for every record, in stream order."""
        self._callbacks.append(callback)
        return callback

    def buffer(
        self, exchange: str, symbol: str, channel: Channel | str = Channel.TICKER
    ) -> RingBuffer:
        """The ring buffer of one market and channel (``BTC/USDT``, ``btc-usdt``, ``BTCUSDT``)."""
        return self._buffers[self._stream(exchange, symbol, channel)]

    def candles(self, exchange: str, symbol: str) -> CandleBuilder:
        """OHLCV candles built from this market's trades (``Consumer(..., candles=["1m"])``)."""
        sk = self._index.find(exchange, symbol, Channel.TRADES)
        builder = None if sk is None else self._candles.get(self._key_of[sk])
        if builder is None:
            raise KeyError(
                f"no candles for {exchange}:{symbol}: pass candles=[...] and follow its trades"
            )
        return builder

    def book(self, exchange: str, symbol: str) -> BookTop | None:
        """The latest order book of a market (channel ``book``), or None before the first.

        The model is built on first use after each update; between updates it is cached.
        """
        return self._books[self._key_of[self._stream(exchange, symbol, Channel.BOOK)]].model()

    def best(self, exchange: str, symbol: str) -> Best | None:
        """Best bid and ask: from the latest book when one is held, else from the latest
        ticker; None while neither came. Needs channel ``book`` or ``ticker``."""
        book = self._index.find(exchange, symbol, Channel.BOOK)
        ticker = self._index.find(exchange, symbol, Channel.TICKER)
        if book is None and ticker is None:
            raise KeyError(f"not following {exchange}:{symbol} book or ticker")
        if book is not None:
            best = self._books[self._key_of[book]].best()
            if best is not None:
                return best
        if ticker is not None:
            last = self._buffers[ticker].last()
            if last is not None:
                return Best.from_row(Channel.TICKER, last)
        return None

    def exchange_candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        n: int | None = None,
        *,
        include_open: bool = True,
    ) -> pa.Table:
        """The exchange's candles of ``interval`` (channel ``candles``): one row per interval
        start, last update wins, oldest first; the last ``n`` when given. The open candle is
        included unless ``include_open=False`` (then only rows whose last update said
        ``closed``). Columns: :data:`consumers.exchange_candles.SCHEMA`."""
        key = self._key_of[self._stream(exchange, symbol, Channel.CANDLES)]
        return self._xcandles[key].table(interval, n, include_open=include_open)

    def _stream(self, exchange: str, symbol: str, channel: Channel | str) -> StreamKey:
        sk = self._index.find(exchange, symbol, channel)
        if sk is None:
            raise KeyError(f"not following {exchange}:{symbol} {Channel(channel).value}")
        return sk

    @property
    def buffers(self) -> dict[StreamKey, RingBuffer]:
        return dict(self._buffers)

    async def start(self) -> None:
        try:
            known = await self._known_streams()
        except Exception as e:
            raise from_redis(e) from e
        planned = plan(self._markets, self._channels, known)
        self.keys = {stream_key(*sk, prefix=self._prefix): sk for sk in planned.values()}
        for key, sk in self.keys.items():
            self._buffers[sk] = RingBuffer(
                COLUMNS[sk.channel], capacity=self.capacity, time_column="ts_ms"
            )
            if self._candle_intervals and sk.channel is Channel.TRADES:
                self._candles[key] = CandleBuilder(self._candle_intervals, self._candle_keep)
            elif sk.channel is Channel.BOOK:
                self._books[key] = LatestBook()
            elif sk.channel is Channel.CANDLES:
                self._xcandles[key] = ExchangeCandles(self._candle_keep)
        self._key_of = {sk: key for key, sk in self.keys.items()}
        self._index = MarketIndex(self.keys.values())
        try:
            await self._backfill()
            if self.group is not None:
                await self._create_groups()
        except Exception as e:
            raise from_redis(e) from e
        self._task = asyncio.create_task(self._run_loops(), name="marketbus-consumer")
        self._ready.set()

    async def stop(self) -> None:
        """Stop reading. A blocking XREAD can swallow a cancellation inside redis-py, so the
        loop is also told to stop and its sockets are closed under it. In group mode the acks
        still queued are sent last."""
        self._stopping = True
        if self._task is not None:
            if not self._task.done():
                await self._disconnect()
            await cancel_and_wait(self._task, 2.0, self._disconnect)
            self._task = None
        if self._unacked:
            await self._final_acks()
        if self._owns_redis:
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def __aenter__(self) -> Consumer:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _final_acks(self) -> None:
        """Send the acks still queued when the loop stopped (entries ingested but the next
        read, which would carry them, never came); what fails stays pending in Redis and is
        re-read by this member after a restart (or claimed by another)."""
        left = sum(map(len, self._unacked.values()))
        try:
            async with asyncio.timeout(2.0):
                await self._send_acks(list(self._unacked))
        except Exception as e:
            log.warning("acks_left_pending", entries=left, error=str(from_redis(e))[:200])

    async def _disconnect(self) -> None:
        pool = getattr(self.redis, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    async def run(self) -> None:
        """Wait for the reader (raises its fatal error, e.g. bad credentials)."""
        if self._task is not None:
            await self._task

    # -- start-up -------------------------------------------------------------------------
    async def _known_streams(self) -> list[StreamKey]:
        if all("/" in m for m in self._markets):
            return []
        out = []
        async for k in self.redis.scan_iter(match=stream_pattern(self._prefix), count=1000):
            with contextlib.suppress(DecodeError):
                out.append(parse_stream_key(k, self._prefix))
        return out

    async def _backfill(self) -> None:
        for key in self.keys:
            start = self._start_ids.get(key)
            if start is not None:
                self.last_ids[key] = start
                continue
            n = self.backfill
            entries = await self._read_tail(key, max(n, 1))
            if not entries:
                self.last_ids[key] = "0-0"
                continue
            self.last_ids[key] = entries[0][0].decode()
            if n:
                self._ingest_batch(key, list(reversed(entries)))
        await self._trim_positions([k for k in self.keys if k in self._start_ids])

    async def _create_groups(self) -> None:
        """Each stream's group, unless it exists, at the last id the backfill saw (``0-0``
        for an empty stream, or the ``start_ids`` given): entries written since that read
        reach the group (at ``$`` they would be skipped). Its read count is set to the
        consumer's position there when known (``consumers.trim_watch``)."""
        for key in self.keys:
            start = self.last_ids[key]
            await self._create_group(key, start, self._start_entries_read(key, start))
        if self._trim.on:
            await self._trim_group_start()

    # -- read loops -----------------------------------------------------------------------
    async def _on_error(self, e: Exception, delay: float) -> float:
        if self._stopping:
            raise asyncio.CancelledError
        err = from_redis(e)
        if isinstance(err, RedisAuthError):
            raise err from e
        self.stats.reconnects += 1
        self.stats.last_error = str(err)
        log.warning("consumer_redis_error", error=str(err), retry_in_s=round(delay, 2))
        await asyncio.sleep(delay * (0.5 + random.random() / 2))
        return min(delay * 2, 5.0)

    def _read_groups(self) -> list[list[str]]:
        """Keys read together by one blocking command: all of them on a standalone Redis;
        on a cluster, one group per hash slot (a multi-key XREAD must stay in one slot)."""
        if not self._is_cluster():
            return [list(self.keys)]
        by_slot: dict[int, list[str]] = {}
        for k in self.keys:
            by_slot.setdefault(key_slot(k.encode()), []).append(k)
        return list(by_slot.values())

    def _is_cluster(self) -> bool:
        return isinstance(self.redis, RedisCluster)

    async def _run_loops(self) -> None:
        groups = self._read_groups()
        async with asyncio.TaskGroup() as tg:
            for keys in groups:
                loop = self._group_loop(keys) if self.group is not None else self._plain_loop(keys)
                tg.create_task(loop)

    def _reply_pipe(self) -> ReplyPipe | None:
        """A group read loop's pipeline connection: on a standalone client with a pool (raw
        reads), else None (redis-py's XREADGROUP)."""
        return ReplyPipe(self.redis) if self._raw_reads else None


__all__ = ["Callback", "Consumer", "ConsumerStats"]
