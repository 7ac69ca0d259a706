"""The write path: records -> batched, pipelined ``XADD key MAXLEN ~ N`` to Redis.

``put()`` is synchronous and O(1) so CCXT's message handler can call it. A single
writer task drains the spool in order. While Redis is away the spool holds up to
``spool_size`` records; past that the oldest are dropped, counted and logged
(never silently). A batch is removed from the spool only after Redis answered it.

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
from marketbus.redis_client import from_redis
from publisher.resp import XaddPacker

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
    last_error: str | None = None
    redis_up: bool = True


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
    ) -> None:
        self._redis = redis
        self._maxlen = maxlen
        self._batch_size = batch_size
        self._spool_size = max(spool_size, batch_size)
        self._prefix = prefix
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self._spool: deque[Record] = deque()
        self._wake = asyncio.Event()
        self._keys: dict[tuple[str, str, str], str] = {}
        self._heads: dict[tuple[str, str, str], tuple[str, bytes]] = {}
        self._task: asyncio.Task[None] | None = None
        self._fatal: BaseException | None = None
        self._last_overflow_log = 0.0
        self._uncertain = False
        self.stats = SinkStats()
        self._packer = XaddPacker(maxlen) if _plain_connection(redis) else None
        self.last_lag_ms: float | None = None

    # -- intake ---------------------------------------------------------------------------
    def put(self, record: Record) -> None:
        """Queue one record for writing. Never blocks; overflow drops the oldest, counted."""
        spool = self._spool
        if len(spool) >= self._spool_size:
            spool.popleft()
            self.stats.overflow += 1
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
        if not self._wake.is_set():
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._spool)

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

    async def _disconnect(self) -> None:
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
            n = min(len(self._spool), self._batch_size)
            batch = [self._spool[i] for i in range(n)]
            try:
                if self._uncertain:
                    batch_to_send = await self._not_yet_stored(batch)
                else:
                    batch_to_send = batch
                await self._write(batch_to_send)
            except asyncio.CancelledError:
                self._uncertain = True
                raise
            except Exception as e:
                self._uncertain = True
                err = from_redis(e)
                self.stats.write_errors += 1
                self.stats.last_error = str(err)
                if isinstance(err, RedisAuthError | FatalError):
                    self._fatal = err
                    log.error("sink_fatal", error=str(err))
                    return
                if self.stats.redis_up:
                    log.warning("redis_unavailable", error=str(err), pending=len(self._spool))
                self.stats.redis_up = False
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                delay = min(delay * 2, self._retry_max_s)
                continue
            if not self.stats.redis_up:
                log.info("redis_back", pending=len(self._spool))
            self.stats.redis_up = True
            self._uncertain = False
            delay = self._retry_min_s
            # the spool may have lost its head to overflow while we awaited: drop by identity
            for r in batch:
                if self._spool and self._spool[0] is r:
                    self._spool.popleft()

    async def _send_packed(self, packed: bytes, n: int) -> list[Any]:
        """The batch as one buffer of hand-packed XADDs on one connection; replies in order.

        An error reply is returned in place (like ``raise_on_error=False``); a broken
        connection raises and is dropped, and the batch is retried by ``_run``.
        """
        assert self._packer is not None
        pool = self._redis.connection_pool
        conn = await pool.get_connection()
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
                return results
            for _ in range(n):
                try:
                    results.append(await conn.read_response())
                except ResponseError as e:
                    results.append(e)
            return results
        except BaseException:
            await conn.disconnect()
            raise
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

    def _pack_batch(self, batch: list[Record]) -> tuple[bytes, list[str]]:
        """The batch as one RESP buffer of XADDs, and the key of each command (hot path:
        encoding and packing in one pass, no per-record tuples)."""
        assert self._packer is not None
        heads, pack, human = self._heads, codec.pack, codec.human
        parts: list[bytes] = []
        keys: list[str] = []
        add, add_key = parts.extend, keys.append
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
            add((head, b"$1\r\nd\r\n$%d\r\n" % len(d), d,
                 b"\r\n$1\r\nh\r\n$%d\r\n" % len(h), h, b"\r\n"))  # fmt: skip
        return b"".join(parts), keys

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

    async def _write(self, batch: list[Record]) -> None:
        if self._packer is not None:
            packed, keys = self._pack_batch(batch)
            if not keys:
                return
            results = await self._send_packed(packed, len(keys))
        else:
            keys, results = await self._write_pipeline(batch)
            if not keys:
                return
        self._count_results(batch, keys, results)

    async def _write_pipeline(self, batch: list[Record]) -> tuple[list[str], list[Any]]:
        """redis-py's pipeline: Redis Cluster (slot routing) and test doubles."""
        keys: list[str] = []
        items: list[tuple[str, bytes, bytes]] = []
        for r in batch:
            try:
                key = self._key(r)
                item = (key, codec.pack(r), codec.human(r).encode())
            except Exception as e:  # a record we cannot encode is skipped, never fatal
                self._unencodable(e)
                continue
            keys.append(key)
            items.append(item)
        if not keys:
            return keys, []
        pipe = self._redis.pipeline(transaction=False)
        for key, d, h in items:
            fields = {codec.DATA_FIELD: d, codec.HUMAN_FIELD: h}
            pipe.xadd(key, fields, maxlen=self._maxlen, approximate=True)
        return keys, await pipe.execute(raise_on_error=False)

    def _count_results(self, batch: list[Record], keys: list[str], results: list[Any]) -> None:
        failed = 0
        for i, res in enumerate(results):
            if isinstance(res, Exception):  # rare: checked per reply, counted in bulk
                err = from_redis(res)
                if isinstance(err, RedisAuthError):
                    raise res
                failed += 1
                self.stats.last_error = str(err)
                log.error("xadd_rejected", stream=keys[i], error=str(res))
        self.stats.rejected += failed
        self.stats.written += len(results) - failed
        self.stats.batches += 1
        self.last_lag_ms = time.time() * 1000 - batch[-1].ts_ms
