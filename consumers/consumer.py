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
dead member left pending (``XAUTOCLAIM``).

Per channel, besides the ring buffer of every record: ``book`` keeps the latest full book
(:meth:`Consumer.book`), ``candles`` collapses candle updates to one row per interval start
(:meth:`Consumer.exchange_candles`), ``trades`` can feed candles built from trades
(:meth:`Consumer.candles`). See docs/consumers.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import ResponseError

from consumers.books import Best, LatestBook
from consumers.candles import CandleBuilder
from consumers.columns import BATCH_CHANNELS, COLUMNS, batch_columns, row, row_at
from consumers.exchange_candles import DEFAULT_KEEP, ExchangeCandles
from consumers.markets import MarketIndex, plan
from consumers.ringbuffer import RingBuffer
from consumers.streams import (
    ReplyPipe,
    gc_paused,
    id_numbers,
    payload,
    payloads,
    raw_command,
)
from marketbus import codec
from marketbus.aio import cancel_and_wait
from marketbus.errors import ConfigError, DecodeError, RedisAuthError
from marketbus.keys import StreamKey, parse_stream_key, stream_pattern
from marketbus.models import BookTop, Channel, Record
from marketbus.redis_client import connect, from_redis
from marketbus.settings import RedisSettings

log = structlog.get_logger("marketbus.consumer")

Callback = Callable[[Record], Any]

_first = itemgetter(0)


@dataclass
class ConsumerStats:
    received: int = 0
    invalid: int = 0
    callback_errors: int = 0
    acked: int = 0  # group mode: entries Redis confirmed acknowledged (XACK's replies)
    reclaimed: int = 0
    reconnects: int = 0
    last_error: str | None = None


def _id_tuple(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


class Consumer:
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
        pause_gc: bool = True,
    ) -> None:
        if (group is None) != (name is None):
            raise ConfigError(
                "group and name go together: Consumer(..., group='bots', name='bot-1')"
            )
        if backfill < 0 or capacity < 1 or count < 1 or block_ms < 0 or candle_keep < 1:
            raise ConfigError(
                "backfill >= 0, capacity >= 1, count >= 1, block_ms >= 0 and candle_keep >= 1 please"
            )
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
        # plain mode, no callbacks, while behind: Python's cyclic GC off during each read
        # and its ingest (consumers/streams.py says why); False keeps the GC alone
        self.pause_gc = pause_gc
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
        self.keys = plan(self._markets, self._channels, known)
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
        async for k in self.redis.scan_iter(match=stream_pattern(), count=1000):
            with contextlib.suppress(DecodeError):
                out.append(parse_stream_key(k))
        return out

    async def _backfill(self) -> None:
        for key in self.keys:
            start = self._start_ids.get(key)
            if start is not None:
                self.last_ids[key] = start
                continue
            n = self.backfill
            entries = await self.redis.xrevrange(key, "+", "-", count=max(n, 1))
            if not entries:
                self.last_ids[key] = "0-0"
                continue
            self.last_ids[key] = entries[0][0].decode()
            if n:
                self._ingest_batch(key, list(reversed(entries)))

    async def _create_groups(self) -> None:
        for key in self.keys:
            try:
                await self.redis.xgroup_create(key, self.group, id="$", mkstream=True)
            except Exception as e:
                if "BUSYGROUP" not in str(e):
                    raise

    # -- ingest ---------------------------------------------------------------------------
    async def _ingest(
        self, key: str, entry_id: bytes, fields: dict[Any, Any], *, callbacks: bool = True
    ) -> bool:
        """Decode one entry into its buffer and callbacks. False if it was invalid."""
        sk = self.keys[key]
        try:
            channel, values = codec.unpack(payload(fields))
            if channel is not sk.channel:
                raise DecodeError(f"a {channel.value} record in a {sk.channel.value} stream")
        except DecodeError as e:
            self._invalid(key, entry_id, e)
            return False
        self.stats.received += 1
        idt = _id_tuple(entry_id)
        last = self._buffer_last.get(key)
        fresh = last is None or idt > last  # a buffer never holds one entry id twice
        if fresh:
            r = row(channel, values, entry_id)
            self._buffers[sk].append(r)
            self._buffer_last[key] = idt
            self._derive(key, channel, [r], values)
        if callbacks and self._callbacks:
            record = codec.from_values(channel, values)
            if fresh and channel is Channel.BOOK:  # c.book() need not build it again
                self._books[key].cache(record)
            for cb in self._callbacks:
                res = cb(record)
                if inspect.isawaitable(res):
                    await res
        return True

    def _ingest_batch(self, key: str, entries: Sequence[Sequence[Any]]) -> None:
        """No callbacks: decode a whole XREAD batch of one stream and append it to the buffer
        at once: column-wise when every entry is valid and new (the common case), else entry
        by entry (which finds and logs the invalid ones)."""
        if not self._ingest_columns(key, entries):
            self._ingest_rows(key, entries)

    def _ingest_columns(self, key: str, entries: Sequence[Sequence[Any]]) -> bool:
        """The batch decoded and appended column-wise; False (nothing done) when an entry is
        not plainly valid and new, or the channel is not batched."""
        sk = self.keys[key]
        channel = sk.channel
        if channel not in BATCH_CHANNELS:
            return False
        try:
            ids, fields = zip(*entries, strict=True)
        except (TypeError, ValueError):
            return False
        stamps = id_numbers(ids)
        datas = payloads(fields)
        if stamps is None or datas is None:
            return False
        ms, seq = stamps
        last = self._buffer_last.get(key)
        if last is not None and (int(ms[0]), int(seq[0])) <= last:
            return False  # overlaps what the buffer holds: row by row drops the repeats
        if len(ms) > 1 and not np.all(
            (ms[1:] > ms[:-1]) | ((ms[1:] == ms[:-1]) & (seq[1:] > seq[:-1]))
        ):
            return False  # not increasing (Redis never does this)
        cols = codec.unpack_columns(channel, datas)
        if cols is None:
            return False
        batch = batch_columns(channel, cols, ms)
        self._buffers[sk].extend_columns(batch)
        self.stats.received += len(datas)
        self._buffer_last[key] = (int(ms[-1]), int(seq[-1]))
        builder = self._candles.get(key)
        if builder is not None:
            prices, amounts = batch["price"].tolist(), batch["amount"].tolist()
            for ts, price, amount in zip(cols[4], prices, amounts, strict=True):
                builder.add_trade(ts, price, amount)
        return True

    def _ingest_rows(self, key: str, entries: Sequence[Sequence[Any]]) -> None:
        """:meth:`_ingest_batch` entry by entry."""
        sk = self.keys[key]
        last = self._buffer_last.get(key)
        rows = []
        valid = 0
        latest: list[Any] = []
        unpack, want = codec.unpack, sk.channel
        for entry_id, fields in entries:
            try:
                channel, values = unpack(payload(fields))
                if channel is not want:
                    raise DecodeError(f"a {channel.value} record in a {want.value} stream")
            except DecodeError as e:
                self._invalid(key, entry_id, e)
                continue
            valid += 1
            ms_b, _, seq_b = entry_id.partition(b"-")
            idt = (int(ms_b), int(seq_b or 0))
            if last is None or idt > last:  # a buffer never holds one entry id twice
                rows.append(row_at(channel, values, idt[0]))
                latest = values
                last = idt
        self.stats.received += valid
        if rows:
            self._buffers[sk].extend(rows)
            self._derive(key, want, rows, latest)
            self._buffer_last[key] = last  # type: ignore[assignment]

    def _derive(
        self, key: str, channel: Channel, rows: list[tuple[Any, ...]], latest: list[Any]
    ) -> None:
        """What a channel keeps besides its buffer, from rows just appended (in order) and
        the values of the last of them."""
        if channel is Channel.TRADES:
            builder = self._candles.get(key)
            if builder is not None:
                for r in rows:
                    builder.add_trade(r[0], r[3], r[4])
        elif channel is Channel.BOOK:
            self._books[key].update(latest, rows[-1])
        elif channel is Channel.CANDLES:
            candles = self._xcandles[key]
            for r in rows:
                candles.add_row(r)

    def _invalid(self, key: str, entry_id: bytes, e: Exception) -> None:
        self.stats.invalid += 1
        now = time.monotonic()
        if now - self._last_invalid_log > 1:
            self._last_invalid_log = now
            log.warning(
                "invalid_entry_skipped", stream=key, id=entry_id.decode(), error=str(e)[:200],
                total=self.stats.invalid,
            )  # fmt: skip

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

    # -- plain mode -----------------------------------------------------------------------
    async def _plain_loop(self, keys: list[str]) -> None:
        """XREAD from the last ids, forever. While behind (the last reply filled ``count``
        for some stream, or at start and after an error) the read does not block: it returns
        at once, so the cyclic GC can be paused for it and its ingest (no callbacks only:
        they run bot code). Caught up, it blocks up to ``block_ms``."""
        delay = 0.05
        behind = True
        while not self._stopping:
            with gc_paused(behind and self.pause_gc and not self._callbacks):
                behind, error = await self._read_plain(keys, block=not behind)
            if error is not None:
                delay = await self._on_error(error, delay)
                behind = True
                continue
            delay = 0.05

    async def _read_plain(self, keys: list[str], *, block: bool) -> tuple[bool, Exception | None]:
        """One read and its ingest: (whether more entries wait, the read's error). The reply
        is freed when this returns, inside a GC pause (never seen by a collection)."""
        try:
            resp = await self._xread(keys, block=block)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return False, e
        return await self._process_plain(resp), None

    async def _process_plain(self, resp: Any) -> bool:
        """Ingest one XREAD reply; whether a stream returned ``count`` entries (more wait)."""
        self._advance_candles()
        full = False
        for raw_key, entries in _items(resp):
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            full = full or len(entries) >= self.count
            if not self._callbacks and entries:
                self._ingest_batch(key, entries)
                self.last_ids[key] = entries[-1][0].decode()
                continue
            for entry_id, fields in entries:
                try:
                    await self._ingest(key, entry_id, fields)
                except Exception as e:  # a bot's callback bug must not stop the feed
                    self._callback_error(key, entry_id, e)
                self.last_ids[key] = entry_id.decode()
        return full

    async def _xread(self, keys: list[str], *, block: bool) -> Any:
        """One XREAD of ``keys`` from their last ids, blocking up to ``block_ms`` or not at
        all: raw (entries as ``[id, [field, value, ...]]``) on a standalone client, else
        redis-py's reply."""
        streams = {k: self.last_ids[k] for k in keys}
        block_ms = self.block_ms if block else None
        if not self._raw_reads:
            return await self.redis.xread(streams=streams, count=self.count, block=block_ms)
        blocking = ("BLOCK", block_ms) if block_ms is not None else ()
        return await raw_command(
            self.redis, "XREAD", "COUNT", self.count, *blocking, "STREAMS",
            *streams, *streams.values(),
        )  # fmt: skip

    def _advance_candles(self) -> None:
        """Close candles whose interval ended, also when no trade came (exchange time ~ now)."""
        if self._candles:
            now = int(time.time() * 1000)
            for b in self._candles.values():
                b.advance(now)

    def _callback_error(self, key: str, entry_id: bytes, e: Exception) -> None:
        self.stats.callback_errors += 1
        log.error("callback_failed", stream=key, id=entry_id.decode(), error=repr(e)[:300])

    # -- group mode -----------------------------------------------------------------------
    async def _group_loop(self, keys: list[str]) -> None:
        """XREADGROUP forever: first this member's own pending entries (from id 0: a restart
        after a crash, or after an error here), then new ones (``>``); entries a dead member
        left pending are claimed every ``reclaim_idle_ms / 4``. Each entry is acknowledged
        after it was ingested and its callbacks returned: one XACK per stream and batch,
        queued and, without callbacks on a standalone client, sent in the same write as the
        next XREADGROUP (Redis runs them in order, before the read blocks); else right after
        each stream's batch.

        As in plain mode, while behind the read does not block, and without callbacks the GC
        is paused for it and its ingest; and then on a standalone client the next read is
        sent before the reply in hand is ingested, so Redis builds it meanwhile."""
        assert self.group is not None and self.name is not None
        reads = _GroupReads(keys, ReplyPipe(self.redis) if self._raw_reads else None)
        delay = 0.05
        next_claim = 0.0
        behind = True
        try:
            while not self._stopping:
                try:
                    if time.monotonic() >= next_claim:
                        await self._reclaim(keys)
                        next_claim = time.monotonic() + max(self.reclaim_idle_ms / 4000, 0.05)
                    with gc_paused(behind and self.pause_gc and not self._callbacks):
                        behind = await self._read_group(reads, block=not behind)
                    self._advance_candles()
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    await self._group_reset(reads)
                    delay = await self._on_error(e, delay)
                    behind = True
                    continue
                delay = 0.05
        finally:
            with contextlib.suppress(Exception):
                await self._group_reset(reads)

    async def _group_reset(self, reads: _GroupReads) -> None:
        """After an error (or at the end): the connection with a pipeline in flight dropped,
        its acks queued again (whether they ran is unknown: XACK may run twice), and this
        member's pending entries re-read first (a read whose reply was lost left entries
        pending here)."""
        self._queue_acks(reads.acks)
        reads.acks = {}
        reads.own_pending = dict.fromkeys(reads.keys, "0")
        if reads.pipe is not None:
            await reads.pipe.close()

    async def _read_group(self, reads: _GroupReads, *, block: bool) -> bool:
        """One XREADGROUP reply ingested and its acks queued; whether more entries wait (own
        pending ones, or a stream returned ``count``)."""
        history = bool(reads.own_pending)
        ack_error: Exception | None = None
        if reads.pipe is None:
            resp = await self.redis.xreadgroup(
                self.group, self.name, streams=self._group_streams(reads), count=self.count,
                block=self.block_ms if block and not history else None,
            )  # fmt: skip
        else:
            if not reads.pipe.in_flight:
                await self._send_group_read(reads, block=block and not history)
            resp, ack_error = await self._group_replies(reads)
        items = _items(resp)
        resp = None  # not kept alive by a traceback below
        if history:  # a stream with no pending entry left is done; an empty reply: all are
            for k, entries in items:
                if not entries:
                    reads.own_pending.pop(_s(k), None)
            if not items:
                reads.own_pending.clear()
        full = any(len(entries) >= self.count for _, entries in items)
        if full and not history and reads.pipe is not None and not self._callbacks:
            if ack_error is None:  # read ahead: Redis builds the next reply meanwhile
                await self._send_group_read(reads, block=False)
        await self._process_group(items, reads.own_pending if history else None)
        items = []
        if reads.pipe is None:
            await self._send_acks(reads.keys)
        if ack_error is not None:
            raise ack_error
        return full or history

    def _group_streams(self, reads: _GroupReads) -> dict[str, str]:
        return dict(reads.own_pending) if reads.own_pending else dict.fromkeys(reads.keys, ">")

    async def _send_group_read(self, reads: _GroupReads, *, block: bool) -> None:
        """The queued XACKs of the loop's streams and one XREADGROUP, in one write."""
        assert reads.pipe is not None
        streams = self._group_streams(reads)
        blocking = ("BLOCK", self.block_ms) if block else ()
        reads.acks = self._take_acks(reads.keys)  # queued again if the write fails
        commands: list[tuple[Any, ...]] = [
            ("XACK", k, self.group, *ids) for k, ids in reads.acks.items()
        ]
        commands.append((
            "XREADGROUP", "GROUP", self.group, self.name, "COUNT", self.count, *blocking,
            "STREAMS", *streams, *streams.values(),
        ))  # fmt: skip
        await reads.pipe.send(commands)

    async def _group_replies(self, reads: _GroupReads) -> tuple[Any, Exception | None]:
        """The replies of the pipeline in flight: (the read's raw reply, the first XACK error).
        Acks Redis refused stay pending there (claimed again later, as when an XACK fails
        alone); a read error is raised."""
        pipe = reads.pipe
        assert pipe is not None
        ack_error = None
        while reads.acks:  # their replies come first, before the read blocks
            reply = await pipe.reply()
            del reads.acks[next(iter(reads.acks))]
            if isinstance(reply, Exception):
                ack_error = ack_error or reply
            else:
                self.stats.acked += int(reply)
        resp = await pipe.reply()
        if isinstance(resp, Exception):
            raise resp
        return resp, ack_error

    async def _process_group(
        self, items: list[tuple[Any, list[Any]]], cursor: dict[str, str] | None = None
    ) -> None:
        """Ingest the entries of an XREADGROUP reply (or claimed ones) and queue their acks
        (sent with the next read), or with callbacks send them after each stream's batch.
        ``cursor``: re-reading pending entries, which trimming may have deleted since (those
        are acknowledged, nothing else)."""
        for raw_key, entries in items:
            if not entries:
                continue
            key = _s(raw_key)
            if cursor is not None and key in cursor:
                cursor[key] = _s(entries[-1][0])
            if self._callbacks:  # acked right after (callbacks may take long: not with the read)
                await self._ingest_group_rows(key, entries)
                await self._send_acks([key])
                continue
            if cursor is not None:
                gone = [e[0] for e in entries if not e[1]]  # pending, deleted by MAXLEN since
                if gone:
                    self._queue_acks({key: gone})
                    entries = [e for e in entries if e[1]]
            if entries:
                self._ingest_batch(key, entries)  # every entry ingested or counted invalid
                self._queue_acks({key: list(map(_first, entries))})

    async def _ingest_group_rows(self, key: str, entries: Sequence[Sequence[Any]]) -> None:
        """Entry by entry with callbacks; each entry's ack is queued once they returned. An
        invalid entry is acked (never valid later); one whose callback raised is not (a
        member claims it again after ``reclaim_idle_ms``)."""
        for entry_id, fields in entries:
            if fields:  # else a pending entry deleted by MAXLEN trimming: only acked
                try:
                    await self._ingest(key, entry_id, fields)
                except Exception as e:
                    self._callback_error(key, entry_id, e)
                    continue
            self._unacked.setdefault(key, []).append(entry_id)

    def _take_acks(self, keys: Iterable[str]) -> dict[str, list[bytes]]:
        """The queued acks of ``keys`` (one read loop's streams), removed from the queue."""
        unacked = self._unacked
        return {k: unacked.pop(k) for k in keys if k in unacked}

    def _queue_acks(self, acks: dict[str, list[bytes]]) -> None:
        for k, ids in acks.items():
            self._unacked.setdefault(k, []).extend(ids)

    async def _send_acks(self, keys: Iterable[str]) -> None:
        """The queued acks of ``keys``, one XACK per stream (redis-py: clusters, stop())."""
        acks = self._take_acks(keys)
        while acks:
            key, ids = next(iter(acks.items()))
            try:
                self.stats.acked += int(await self.redis.xack(key, self.group, *ids))
            except ResponseError:
                del acks[key]  # refused: left pending in Redis, as in _group_replies
                self._queue_acks(acks)
                raise
            except BaseException:
                self._queue_acks(acks)
                raise
            del acks[key]

    async def _reclaim(self, keys: list[str]) -> None:
        """Take over entries another member left pending longer than ``reclaim_idle_ms``."""
        for key in keys:
            start = "0-0"
            while True:
                res = await self.redis.xautoclaim(
                    key,
                    self.group,
                    self.name,
                    self.reclaim_idle_ms,
                    start_id=start,
                    count=self.count,
                )
                nxt, claimed = res[0], [e for e in res[1] if e[0] is not None]
                if claimed:
                    self.stats.reclaimed += len(claimed)
                    await self._process_group([(key, claimed)], {})
                start = _s(nxt)
                if start == "0-0" or not claimed:
                    break


@dataclass
class _GroupReads:
    """One group read loop's state: its streams, this member's pending entries still to
    re-read (stream -> last id re-read), and on a standalone client the connection with the
    pipeline in flight and the acks sent with it."""

    keys: list[str]
    pipe: ReplyPipe | None
    own_pending: dict[str, str] = field(init=False)
    acks: dict[str, list[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.own_pending = dict.fromkeys(self.keys, "0")


def _s(k: bytes | str) -> str:
    return k.decode() if isinstance(k, bytes) else k


def _items(resp: Any) -> list[tuple[Any, list[Any]]]:
    """XREAD replies are a list on RESP2 and a dict on RESP3: one shape for the loop. Each
    entry is ``(id, fields)``, fields a dict (redis-py) or a flat list (raw reads)."""
    if not resp:
        return []
    if isinstance(resp, dict):
        return list(resp.items())
    return [(k, v) for k, v in resp]


__all__ = ["Callback", "Consumer", "ConsumerStats"]
