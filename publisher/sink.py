"""The write path: records -> batched, pipelined ``XADD key MAXLEN ~ N`` to Redis.

``put()`` is synchronous and O(1) so CCXT's message handler can call it. A single
writer task drains the spool in order. A batch is removed from the spool only after Redis
answered it.

Two different reasons for records to wait, handled differently:

- **The writer is behind while Redis is healthy** (more records offered than the process
  can parse and write): past ``pause_at`` waiting records the sink is *congested* and the
  exchange sockets are not read (:meth:`wait_for_room`, ``publisher.ws_hooks.pace_reading``)
  until half of them are written. The exchange's data waits in the kernel's socket buffers
  and TCP slows the sender: nothing is dropped, and the writer gets the event loop.
- **Redis is away, or refuses every write** (OOM under ``noeviction``, READONLY after a
  failover, LOADING, MISCONF...): an outage. The sockets keep being read, the spool holds up
  to ``spool_size`` records, writes are retried with capped backoff, and only past that are
  the oldest dropped, counted and logged (never silently).

A batch whose write failed may still have reached Redis (it died, or the connection
broke, after executing part of the pipeline but before the reply). Before such a batch
is sent again, the last entry of each of its streams is read (``XREVRANGE key + - COUNT
1``): the records up to the one found there are already stored and are not sent twice.
Entries of one stream are written in order, so what landed is a prefix per stream, and
``recv_ns`` makes each record distinguishable. This assumes one writer per stream, which
is how publishers split markets.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import structlog
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection
from redis.exceptions import ResponseError

from marketbus import codec
from marketbus.aio import cancel_and_wait
from marketbus.errors import FatalError, RedisAuthError
from marketbus.keys import DEFAULT_PREFIX, stream_key
from marketbus.models import Record
from marketbus.redis_client import from_redis, is_refusal
from publisher.resp import XaddPacker

_IDLE_CHECK_S = 1.0
"""A held connection idle this long is probed before the next batch (see ``_connection``)."""

log = structlog.get_logger("marketbus.sink")


@dataclass
class SinkStats:
    accepted: int = 0
    written: int = 0
    overflow: int = 0
    rejected: int = 0
    write_errors: int = 0
    batches: int = 0
    resend_skipped: int = 0
    refused: int = 0
    """XADDs Redis refused for a reason that passes (OOM, READONLY...): kept and retried."""
    pauses: int = 0
    """Times reading was paused because the writer was behind (backpressure)."""
    paused_s: float = 0.0
    last_error: str | None = None
    redis_up: bool = True
    refusing: str | None = None
    """Why Redis refuses writes right now (its error), or None."""


def _plain_connection(redis: Any) -> bool:
    """A standalone redis-py client on a real socket: the raw fast path applies.

    Cluster clients (slot routing) and test doubles take redis-py's pipeline instead.
    """
    pool = getattr(redis, "connection_pool", None)
    cls = getattr(pool, "connection_class", None)
    return isinstance(cls, type) and cls in (Connection, SSLConnection, UnixDomainSocketConnection)


class StreamSink:
    """Batches records into pipelined XADDs; survives Redis outages with a bounded spool."""

    def __init__(
        self,
        redis: Any,
        *,
        maxlen: int = 100_000,
        batch_size: int = 512,
        spool_size: int = 200_000,
        prefix: str = DEFAULT_PREFIX,
        retry_min_s: float = 0.05,
        retry_max_s: float = 2.0,
        pause_at: int = 10_000,
        linger_ms: float = 0.0,
    ) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._batch_size = batch_size
        self._linger_s = max(0.0, linger_ms) / 1000
        self._spool_size = max(spool_size, batch_size)
        self._prefix = prefix
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._spool: deque[Record] = deque()
        self._pause_at = max(1, min(pause_at, self._spool_size))
        self._resume_at = self._pause_at // 2
        self._room = asyncio.Event()
        self._room.set()
        self._paused_since = 0.0
        self._last_refusal_log = 0.0
        # records of the batch in flight that overflow took off the spool meanwhile: counted
        # as dropped, un-counted if Redis took them after all, never put back if it refused
        self._inflight = 0
        self._evicted: set[int] = set()
        self._wake = asyncio.Event()
        self._keys: dict[tuple[str, str, str], str] = {}
        self._heads: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        self._task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._last_overflow_log = 0.0
        self._uncertain = False
        self.stats = SinkStats()
        self._packer = XaddPacker(maxlen) if _plain_connection(redis) else None
        self._conn: Any = None  # the writer's held connection (packed path), see _connection
        self._conn_used = 0.0
        self.last_lag_ms: float | None = None

    # -- intake ---------------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Queue one record for writing. Never blocks; overflow drops the oldest, counted."""
        spool = self._spool
        if len(spool) >= self._spool_size:
            dropped = spool.popleft()
            self.stats.overflow += 1
            if self._inflight:  # part of the batch being written: its reply decides
                self._inflight -= 1
                self._evicted.add(id(dropped))
            now = time.monotonic()
            if now - self._last_overflow_log > 5:
                self._last_overflow_log = now
                log.error(
                    "spool_overflow",
                    dropped_total=self.stats.overflow,
                    spool_size=self._spool_size,
                    hint="Redis is away or too slow; raise redis.spool_size or fix Redis",
                )
        spool.append(record)
        self.stats.accepted += 1
        if len(spool) >= self._pause_at and self._room.is_set() and self.stats.redis_up:
            self._room.clear()  # the writer is behind a healthy Redis: readers wait
            self.stats.pauses += 1
            self._paused_since = time.monotonic()
        if not self._wake.is_set():
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._spool)

    @property
    def congested(self) -> bool:
        """True while readers should stop reading (the writer is behind, Redis is up)."""
        return not self._room.is_set()

    async def wait_for_room(self) -> None:
        """Return once the writer has caught up to half of ``pause_at`` (or Redis is away)."""
        await self._room.wait()

    def _release_readers(self) -> None:
        if not self._room.is_set():
            self._room.set()
            self.stats.paused_s += time.monotonic() - self._paused_since

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="marketbus-sink")

    async def stop(self, drain_timeout: float = 5.0) -> None:
        """Write what is spooled (up to ``drain_timeout``), then stop the writer."""
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError, RedisAuthError, FatalError):
            await asyncio.wait_for(self.drain(), drain_timeout)
        if self._spool:
            log.warning("sink_stopped_with_pending", pending=len(self._spool))
        await cancel_and_wait(self._task, 2.0, self._disconnect)
        self._task = None
        with contextlib.suppress(Exception):  # back to the pool, for whoever shares it
            await self._release_connection()

    async def _disconnect(self) -> None:
        with contextlib.suppress(Exception):
            await self._release_connection()
        pool = getattr(self._redis, "connection_pool", None)
        if pool is not None:
            await pool.disconnect()

    async def drain(self) -> None:
        """Wait until everything put so far is written (or the sink failed)."""
        while self._spool and self._fatal is None:
            if self._task is None or self._task.done():
                break
            await asyncio.sleep(0.005)
        if self._fatal is not None:
            raise self._fatal

    async def __aenter__(self) -> StreamSink:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def check(self) -> None:
        """Raise the writer's fatal error (bad credentials, no permission), if it had one."""
        if self._fatal is not None:
            raise self._fatal

    # -- writer ---------------------------------------------------------------------------
    def _key(self, r: Record) -> str:
        k = (r.exchange, r.symbol, r.channel)
        key = self._keys.get(k)
        if key is None:
            key = self._keys[k] = stream_key(r.exchange, r.symbol, r.channel, self._prefix)
        return key

    async def _run(self) -> None:
        delay = self._retry_min_s
        while True:
            if not self._spool:
                self._wake.clear()
                await self._wake.wait()
            if self._linger_s and len(self._spool) < self._batch_size:
                await asyncio.sleep(self._linger_s)  # let a few more records join the batch
            n = min(len(self._spool), self._batch_size)
            batch = [self._spool[i] for i in range(n)]
            self._inflight, self._evicted = n, set()
            try:
                if self._uncertain:
                    batch_to_send = await self._not_yet_stored(batch)
                else:
                    batch_to_send = batch
                kept = await self._write(batch_to_send)
            except asyncio.CancelledError:
                self._uncertain = True
                self._inflight = 0
                raise
            except Exception as e:
                self._uncertain = True
                self._inflight = 0
                err = from_redis(e)
                self.stats.write_errors += 1
                self.stats.last_error = str(err)
                if isinstance(err, RedisAuthError | FatalError):
                    self._fatal = err
                    self._release_readers()
                    log.error("sink_fatal", error=str(err))
                    return
                if self.stats.redis_up:
                    log.warning("redis_unavailable", error=str(err), pending=len(self._spool))
                self._outage()
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self._retry_max_s)
                continue
            self._uncertain = False
            self._inflight = 0
            # the spool may have lost its head to overflow while we awaited: drop by identity
            spool = self._spool
            for r in batch:
                if spool and spool[0] is r:
                    spool.popleft()
            if self._evicted:
                kept = self._settle_evicted(batch, kept)
            if kept:  # Redis refused these for now (OOM, READONLY...): an outage
                spool.extendleft(reversed(kept))
                while len(spool) > self._spool_size:  # the bound holds: oldest out, counted
                    spool.popleft()
                    self.stats.overflow += 1
                self._outage()
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self._retry_max_s)
                continue
            if not self.stats.redis_up:
                log.info("redis_back", pending=len(spool), was=self.stats.refusing)
            self.stats.redis_up = True
            self.stats.refusing = None
            delay = self._retry_min_s
            if len(spool) <= self._resume_at:
                self._release_readers()

    def _settle_evicted(self, batch: list[Record], kept: list[Record]) -> list[Record]:
        """Overflow took records of the batch in flight: those Redis took are not lost after
        all (un-counted); those it refused are, and stay out. Returns what to keep."""
        evicted, self._evicted = self._evicted, set()
        kept_ids = {id(r) for r in kept}
        self.stats.overflow -= sum(1 for r in batch if id(r) in evicted and id(r) not in kept_ids)
        return [r for r in kept if id(r) not in evicted]

    def _outage(self) -> None:
        """Redis is away or refuses writes: the spool takes the records, readers go on."""
        self.stats.redis_up = False
        self._release_readers()

    async def _send_packed(self, packed: bytes, n: int) -> list[Any]:
        """The batch as one buffer of hand-packed XADDs on one connection; replies in order.

        An error reply is returned in place (like ``raise_on_error=False``); a broken
        connection raises and is dropped, and the batch is retried by ``_run``.
        """
        assert self._packer is not None
        conn = await self._connection()
        try:
            await conn.send_packed_command(packed, check_health=False)
            results: list[Any] = []
            parser = getattr(conn, "_parser", None)
            reader = getattr(parser, "_reader", None)
            if reader is not None and hasattr(parser, "read_from_socket"):
                # hiredis: take every reply already buffered, one socket read at a time
                # (redis-py's read_response costs an await and bookkeeping per reply)
                gets = reader.gets
                while len(results) < n:
                    reply = gets()
                    if reply is NOT_ENOUGH_DATA or reply is False:
                        await parser.read_from_socket()  # type: ignore[union-attr]
                        continue
                    results.append(reply)
            else:
                for _ in range(n):
                    try:
                        results.append(await conn.read_response())
                    except ResponseError as e:
                        results.append(e)
            self._conn_used = time.monotonic()
            return results
        except BaseException:
            await self._release_connection(broken=True)
            raise

    async def _connection(self) -> Any:
        """The writer's own connection, held between batches (a pool checkout, its lock,
        metrics and a zero-timeout readability probe per batch cost more than the batch's
        XADDs at a steady few thousand records/s). One idle longer than
        ``_IDLE_CHECK_S`` is probed again first, as the pool would (Redis may have closed it)."""
        conn = self._conn
        pool = self._redis.connection_pool
        if conn is None:
            conn = self._conn = await pool.get_connection()
        elif time.monotonic() - self._conn_used > _IDLE_CHECK_S:
            try:
                await pool.ensure_connection(conn)
            except BaseException:
                await self._release_connection(broken=True)
                raise
        return conn

    async def _release_connection(self, broken: bool = False) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        pool = self._redis.connection_pool
        try:
            if broken:
                await conn.disconnect()
        finally:
            await pool.release(conn)

    async def _not_yet_stored(self, batch: list[Record]) -> list[Record]:
        """``batch`` without the records a failed earlier attempt already stored."""
        by_key: dict[str, list[int]] = {}
        for i, r in enumerate(batch):
            with contextlib.suppress(Exception):  # unencodable: _write rejects it
                by_key.setdefault(self._key(r), []).append(i)
        keys = list(by_key)
        pipe = self._redis.pipeline(transaction=False)
        for key in keys:
            pipe.xrevrange(key, "+", "-", count=1)
        tails = await pipe.execute()
        skip: set[int] = set()
        for key, tail in zip(keys, tails, strict=True):
            if not tail:
                continue
            try:
                last = codec.decode_fields(tail[0][1])
            except Exception:  # not ours (or corrupt): nothing of this batch is there
                continue
            idx = by_key[key]
            for n, i in enumerate(idx):
                if batch[i] == last:
                    skip.update(idx[: n + 1])
                    break
        if skip:
            self.stats.resend_skipped += len(skip)
            log.warning(
                "batch_partly_stored",
                skipped=len(skip),
                resent=len(batch) - len(skip),
                hint="the reply was lost when Redis went away; stored records are not re-sent",
            )
        return [r for i, r in enumerate(batch) if i not in skip]

    def _pack_batch(self, batch: list[Record]) -> tuple[bytes, list[str], list[Record]]:
        """The batch as one RESP buffer of XADDs, and the key of each command (hot path:
        encoding and packing in one pass, no per-record tuples)."""
        assert self._packer is not None
        heads, pack, human = self._heads, codec.pack, codec.human
        parts: list[bytes] = []
        keys: list[str] = []
        add, add_key = parts.extend, keys.append
        sent: list[Record] = []
        add_sent = sent.append
        for r in batch:
            try:
                kh = heads.get((r.exchange, r.symbol, r.channel))
                if kh is None:
                    kh = self._key_head(r)
                key, head = kh
                d = pack(r)
                h = human(r).encode()
            except Exception as e:  # a record we cannot encode is skipped, never fatal
                self._unencodable(e)
                continue
            add_key(key)
            add_sent(r)
            add((head, b"$1\r\nd\r\n$%d\r\n" % len(d), d,
                 b"\r\n$1\r\nh\r\n$%d\r\n" % len(h), h, b"\r\n"))  # fmt: skip
        return b"".join(parts), keys, sent

    def _key_head(self, r: Record) -> tuple[str, bytes]:
        assert self._packer is not None
        key = self._key(r)
        kh = (key, self._packer.head(key))
        if len(self._heads) < 65_536:
            self._heads[(r.exchange, r.symbol, r.channel)] = kh
        return kh

    def _unencodable(self, e: Exception) -> None:
        self.stats.rejected += 1
        self.stats.last_error = f"unencodable record: {e}"
        log.error("record_unencodable", error=str(e)[:300])

    async def _write(self, batch: list[Record]) -> list[Record]:
        """Write ``batch``; the records Redis refused for now (to keep and retry), in order."""
        if self._packer is not None:
            packed, keys, sent = self._pack_batch(batch)
            if not keys:
                return []
            results = await self._send_packed(packed, len(keys))
        else:
            keys, sent, results = await self._write_pipeline(batch)
            if not keys:
                return []
        return self._count_results(sent, keys, results)

    async def _write_pipeline(
        self, batch: list[Record]
    ) -> tuple[list[str], list[Record], list[Any]]:
        """redis-py's pipeline: Redis Cluster (slot routing) and test doubles."""
        keys: list[str] = []
        sent: list[Record] = []
        items: list[tuple[str, bytes, bytes]] = []
        for r in batch:
            try:
                key = self._key(r)
                item = (key, codec.pack(r), codec.human(r).encode())
            except Exception as e:  # a record we cannot encode is skipped, never fatal
                self._unencodable(e)
                continue
            keys.append(key)
            sent.append(r)
            items.append(item)
        if not keys:
            return keys, sent, []
        pipe = self._redis.pipeline(transaction=False)
        for key, d, h in items:
            fields = {codec.DATA_FIELD: d, codec.HUMAN_FIELD: h}
            pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)
        return keys, sent, await pipe.execute(raise_on_error=False)

    def _count_results(
        self, sent: list[Record], keys: list[str], results: list[Any]
    ) -> list[Record]:
        """Count the replies; the records refused for now (kept), in order.

        A reply that refuses *this record* (WRONGTYPE: the key is not a stream) is counted as
        rejected and the record skipped, one log line per interval. A refusal that passes
        (OOM, READONLY...) keeps the record for the retry: if Redis took later records of
        the same stream in between (memory freed for a moment), the kept one lands after
        them, the only reordering this allows.
        """
        failed = 0
        kept: list[Record] = []
        for i, res in enumerate(results):
            if isinstance(res, Exception):  # rare: checked per reply, counted in bulk
                err = from_redis(res)
                if isinstance(err, RedisAuthError):
                    raise res
                if is_refusal(res):
                    kept.append(sent[i])
                    self.stats.refusing = str(res)[:300]
                    continue
                failed += 1
                self.stats.last_error = str(err)
                self._log_rejected(keys[i], res, failed)
        written = len(results) - failed - len(kept)
        self.stats.rejected += failed
        self.stats.written += written
        self.stats.batches += 1
        if kept:
            self.stats.refused += len(kept)
            self.stats.last_error = f"Redis refuses writes: {self.stats.refusing}"
            now = time.monotonic()
            if now - self._last_refusal_log > 5:
                self._last_refusal_log = now
                log.error(
                    "redis_refusing_writes",
                    error=self.stats.refusing,
                    pending=len(self._spool),
                    spool_size=self._spool_size,
                    hint="kept in the spool and retried; raise maxmemory or trim MAXLEN (OOM), "
                    "or point at the new primary (READONLY)",
                )
        if written:
            self.last_lag_ms = time.time() * 1000 - sent[-1].ts_ms
        return kept

    def _log_rejected(self, key: str, error: Exception, count: int) -> None:
        now = time.monotonic()
        if now - self._last_refusal_log > 5:
            self._last_refusal_log = now
            log.error("xadd_rejected", stream=key, error=str(error)[:300], in_batch=count)
