"""The archiver: every ``md:*`` stream, read as a consumer-group member, into Parquet files.

::

    async with Archiver("redis://127.0.0.1:6379/0", "/data/archive") as a:
        await a.run()          # until stop(): SIGTERM in ``marketbus archive``

A dedicated ``XREADGROUP`` loop, not :class:`consumers.Consumer`: the consumer acknowledges
each batch once it is in its ring buffers, and the archiver must acknowledge only after the
file holding an entry is on disk (seconds to a minute later, a whole roll of entries at a
time); it also finds new streams while it runs and keeps no ring buffers. What the two share
is reused: the raw reads (:func:`consumers.streams.raw_command`), the reply shapes and the
decoding (:mod:`archive.decode`).

The loop: streams found by ``SCAN`` (again every ``rescan_s``) join with their group created
at ``0`` (the whole stream is archived); this member's own pending entries are read again
first (from id 0: a restart, or an error), then new ones (``>``). Entries held are committed
(:mod:`archive.store`) when they reach ``roll_bytes`` or ``roll_age_s``, one commit in flight
while reading goes on, and acknowledged once the commit is durable. Per stream, entries at or
below this member's own mark (the last id it archived or holds) are skipped (counted): the
seam where a restart or a lost reply reads them again.

Several archivers share a group and a directory, each under its own consumer name: Redis
splits each stream's entries among them, and each keeps its own marks in the manifest (one
shared mark per stream would be wrong: a member's entries interleave with the others'). A
member whose archiver is not running (its name's lock in the directory is free: killed,
scaled down, renamed) leaves pending entries: at start, for new streams, and every
``adopt_every_s``, a running member *adopts* such a name: it holds that name's lock, reads its
pending entries under its name, skips those at or below its marks, archives the rest with its
marks, and acknowledges them, so nothing waits for a member that is gone and nothing is
written twice. A commit that fails (disk full, unwritable directory) is retried with backoff,
reading stops meanwhile, nothing is acknowledged: Redis keeps the entries (docs/history.md says
how long MAXLEN lets it). On a Redis Cluster the reads and acknowledgements go node by node
(:mod:`archive.cluster_read`); the rest is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import pyarrow as pa
import redis.asyncio as aioredis
import structlog
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from archive import acks
from archive.cluster_read import ClusterIO
from archive.config import ArchiveConfig
from archive.decode import decode, parse_id
from archive.store import Committed, Partition, Store, WriterBusyError
from consumers.archive_layout import valid_name
from consumers.consumer_parts import as_str, reply_items
from consumers.streams import ReplyPipe, gc_paused, raw_command
from marketbus.errors import DecodeError, RedisAuthError
from marketbus.keys import StreamKey, parse_stream_key
from marketbus.redis_client import connect, from_redis
from marketbus.settings import RedisSettings

log = structlog.get_logger("marketbus.archive")

_NO_ID = (0, 0)  # below every entry id (Redis never writes 0-0)
_first = itemgetter(0)


@dataclass
class ArchiverStats:
    rows: int = 0  # rows in committed files
    bytes: int = 0  # bytes of committed files
    files: int = 0
    commits: int = 0
    acked: int = 0  # entries Redis confirmed acknowledged
    skipped: int = 0  # entries read again that were archived or held already (the seam)
    invalid: int = 0  # entries that are not marketbus records: acknowledged, not archived
    trimmed: int = 0  # pending entries Redis deleted (MAXLEN) before they were archived
    write_errors: int = 0  # failed commits
    redis_errors: int = 0
    resets: int = 0  # streams whose group Redis lost (created again at 0)
    streams: int = 0
    buffered: int = 0  # rows read, not yet committed
    lag: int | None = None  # entries in Redis not yet archived (group lag + pending), per rescan
    lag_max: int | None = None  # the largest of those per stream (what MAXLEN bounds)
    adopted: int = 0  # entries read from the pending lists of members no longer running
    writable: bool = True  # False while commits fail
    redis_up: bool = True  # False after a Redis error, until a read succeeds
    last_commit_ms: int | None = None  # wall clock of the last successful commit
    last_error: str | None = None

    @property
    def errors(self) -> int:
        return self.write_errors + self.redis_errors


@dataclass
class _Stream:
    key: str
    sk: StreamKey
    last: tuple[int, int]  # highest entry id archived or held
    cursor: str | None = "0"  # re-reading own pending entries from here; None: new ones


@dataclass
class _Batch:
    """What the next commit holds."""

    parts: dict[Partition, list[pa.RecordBatch]] = field(default_factory=dict)
    acks: dict[str, list[bytes]] = field(default_factory=dict)
    last: dict[str, str] = field(default_factory=dict)  # stream -> last id read into it
    rows: int = 0
    nbytes: int = 0
    started: float | None = None  # monotonic time of its first entry

    def merge(self, later: _Batch) -> _Batch:
        """This batch (a commit that failed) followed by ``later``: retried as one."""
        for part, batches in later.parts.items():
            self.parts.setdefault(part, []).extend(batches)
        for key, ids in later.acks.items():
            self.acks.setdefault(key, []).extend(ids)
        self.last.update(later.last)
        self.rows += later.rows
        self.nbytes += later.nbytes
        return self


class Archiver:
    """Follows marketbus streams into a Parquet archive (see the module docstring)."""

    def __init__(
        self,
        redis: str | RedisSettings | Any,
        dir: str | Path,
        config: ArchiveConfig | None = None,
    ) -> None:
        self.config = config or ArchiveConfig()
        self._owns_redis = isinstance(redis, str | RedisSettings)
        if isinstance(redis, str):
            redis = RedisSettings(url=redis)
        self.redis: Any = connect(redis) if isinstance(redis, RedisSettings) else redis
        self.dir = Path(dir)
        self._store = Store(
            self.dir, writer=self.config.name, zstd_level=self.config.zstd_level,
            row_group_rows=self.config.row_group_rows, lock_wait_s=self.config.lock_wait_s,
        )  # fmt: skip
        self.stats = ArchiverStats()
        self._streams: dict[str, _Stream] = {}
        self._ignored: set[str] = set()
        self._batch = _Batch()
        self._commit_task: asyncio.Task[Committed] | None = None
        self._committing: _Batch | None = None
        self._unsent_acks: dict[str, list[bytes]] = {}
        self._retry_at = 0.0
        self._retry_delay = self.config.retry_min_s
        self._next_scan = 0.0
        self._next_adopt = 0.0
        self._adopting = False  # this instance drains a gone member's entries (_Adopter)
        self._task: asyncio.Task[None] | None = None
        self._read: asyncio.Task[Any] | None = None
        self._read_blocks = False  # the read in flight has BLOCK (else its reply comes at once)
        # raw reads with read-ahead on a standalone client with a pool, else redis-py's
        pooled = getattr(self.redis, "connection", 1) is None  # not a single-connection client
        self._pooled = isinstance(self.redis, aioredis.Redis) and pooled
        self._pipe = ReplyPipe(self.redis) if self._pooled else None
        self._cluster: ClusterIO | None = None  # a cluster: reads and acks node by node
        if isinstance(self.redis, RedisCluster):
            c = self.config
            self._cluster = ClusterIO(self.redis, c.group, c.name, c.count)
        self._ack_task: asyncio.Task[None] | None = None
        self._behind = True  # the last read was full: more is waiting
        self._ahead: list[_Stream] = []  # the streams of the read sent ahead
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._opened = False
        self._last_log: dict[str, float] = {}

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        """Take this member's name in the directory, recover it, find the streams, adopt what
        members no longer running left pending, start following."""
        manifest = await asyncio.to_thread(self._store.open)
        self._opened = True
        log.info(
            "archive_opened", dir=str(self.dir), commit=manifest.commit,
            streams=len(manifest.last), group=self.config.group, name=self.config.name,
        )  # fmt: skip
        try:
            await self._rescan()
            await self._adopt_gone()
        except Exception as e:
            raise from_redis(e) from e
        self._task = asyncio.create_task(self._run(), name="marketbus-archiver")

    async def stop(self) -> None:
        """Stop reading, commit what is held, acknowledge it. What cannot be committed within
        ``stop_timeout_s`` stays pending in Redis (read again at the next start)."""
        self._stopping = True
        self._stop_event.set()
        if self._read is not None and self._read_blocks:
            self._read.cancel()  # (a read-ahead's reply comes at once: taken, not dropped)
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self._task), 5.0)
            if not self._task.done():
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
        if self._pipe is not None:
            await self._take_read_ahead()
            await self._pipe.close()
        try:
            if self._opened:
                await self._drain()
        finally:
            if self._opened:
                self._opened = False
                await asyncio.to_thread(self._store.close)
            if self._owns_redis:
                with contextlib.suppress(Exception):
                    await self.redis.aclose()

    async def _take_read_ahead(self) -> None:
        """At stop: the reply of a read sent ahead (without BLOCK) that the loop did not take
        is read and its entries held, so the last commit archives them: dropped, they would
        stay pending under this name until it starts again (or a running member adopts
        them). Given up after a few seconds or on an error: then they do stay pending."""
        pipe = self._pipe
        if pipe is None or not pipe.in_flight or self._read_blocks or not self._opened:
            return
        try:
            async with asyncio.timeout(5.0):
                await self._read_reply(self._ahead, history=False)
        except Exception as e:
            log.warning("archive_read_ahead_dropped", error=str(from_redis(e))[:200],
                        effect="its entries stay pending: read again at the next start")  # fmt: skip

    async def __aenter__(self) -> Archiver:
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def run(self) -> None:
        """Wait for the loop: returns after :meth:`stop`, raises its fatal error (credentials)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    # -- the loop -------------------------------------------------------------------------
    async def _run(self) -> None:
        delay = self.config.retry_min_s
        while not self._stopping:
            try:
                if time.monotonic() >= self._next_scan:
                    await self._rescan()
                if time.monotonic() >= self._next_adopt:
                    await self._adopt_gone()
                await self._commit_step()
                self._ack_soon()
                if self._holding():
                    await self._wait_for_commit()
                else:
                    await self._read_once()
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._stopping and (task is None or not task.cancelling()):
                    return  # stop() cancelled the read
                raise
            except Exception as e:
                if self._stopping:
                    return
                delay = await self._redis_error(e, delay)
                continue
            delay = self.config.retry_min_s

    async def _redis_error(self, e: Exception, delay: float) -> float:
        """A Redis error: credentials end the loop; NOGROUP re-creates lost groups; anything
        else is retried with backoff. Own pending entries are read again after it (a reply
        lost with the connection left them pending here)."""
        err = from_redis(e)
        if isinstance(err, RedisAuthError):
            raise err from e
        for s in self._streams.values():
            s.cursor = "0"
        if self._pipe is not None:
            await self._pipe.close()  # a read-ahead in flight is dropped: its entries re-read
        if isinstance(e, ResponseError) and str(e).startswith("NOGROUP"):
            with contextlib.suppress(Exception):
                await self._recreate_groups()
                return delay
        self.stats.redis_errors += 1
        self.stats.redis_up = False
        self.stats.last_error = str(err)[:300]
        if self._may_log("redis"):
            log.warning(
                "archive_redis_error", error=str(err)[:300], retry_in_s=round(delay, 2),
                total=self.stats.redis_errors,
            )  # fmt: skip
        await self._pause(delay * (0.5 + random.random() / 2))
        return min(delay * 2, self.config.retry_max_s)

    async def _pause(self, seconds: float) -> None:
        """Sleep, cut short by :meth:`stop`."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_event.wait(), seconds)

    def _holding(self) -> bool:
        """Reading waits while the batch is full (one commit in flight already), and while
        commits fail (until one succeeds): the entries wait in Redis, not in memory."""
        if self._batch.nbytes >= self.config.roll_bytes and self._commit_task is not None:
            return True
        return not self.stats.writable

    async def _wait_for_commit(self) -> None:
        wait = max(0.01, min(self._retry_at - time.monotonic(), 1.0))
        if self._commit_task is not None:
            await asyncio.wait({self._commit_task}, timeout=wait)
        else:
            await self._pause(wait)

    async def _read_once(self) -> None:
        if self._pipe is not None and self._pipe.in_flight:
            streams, history = self._ahead, False  # the read sent ahead, for these streams
        else:
            streams = list(self._streams.values())
            if not streams:
                await self._pause(max(0.01, min(self._next_scan - time.monotonic(), 1.0)))
                return
            history = any(s.cursor is not None for s in streams)
        # while behind, the read returns at once with a big reply: GC paused for it and its
        # decoding (consumers.streams.gc_paused says why), never for a read that may block
        with gc_paused(self.config.pause_gc and (history or self._behind)):
            self._behind = await self._read_reply(streams, history)
        if self._cluster is not None and not history and not self._cluster.found:
            await self._pause(self._cluster.idle_wait(self._block_ms() / 1000))  # (no BLOCK)

    def _read_command(self, streams: list[_Stream], *, block: bool) -> tuple[Any, ...]:
        args: list[Any] = [
            "XREADGROUP", "GROUP", self.config.group, self.config.name,
            "COUNT", self.config.count,
        ]  # fmt: skip
        if block:
            args += ["BLOCK", self._block_ms()]
        keys = [s.key for s in streams]
        return (*args, "STREAMS", *keys, *(s.cursor or ">" for s in streams))

    async def _read_reply(self, streams: list[_Stream], history: bool) -> bool:
        """One XREADGROUP reply (on a cluster: one round, :mod:`archive.cluster_read`) into
        the batch; whether a stream returned a full ``count``."""
        error: Exception | None = None
        if self._cluster is not None:
            ids = [s.cursor or ">" for s in streams]
            items, error = await self._cluster.read([s.key for s in streams], ids)
        else:
            items = await self._read_standalone(streams, history)
        if error is None:
            self.stats.redis_up = True
        full = any(len(entries) >= self.config.count for _, entries in items)
        if history:  # a stream whose own pending entries are all read again is done
            if not items and error is None:
                for s in streams:
                    s.cursor = None
            for k, entries in items:
                done = self._streams.get(as_str(k))
                if done is not None and not entries:
                    done.cursor = None
        for k, entries in items:
            if entries:
                self._ingest(as_str(k), entries)
        if error is not None:
            raise error  # (what the other nodes answered is held)
        return full

    async def _read_standalone(self, streams: list[_Stream], history: bool) -> list[Any]:
        """One XREADGROUP reply's streams. While behind, the next read is sent before this
        reply is decoded (read-ahead, on a client with a pool): Redis builds it meanwhile. A
        read-ahead already in flight is this read (sent without BLOCK, with ``>`` for every
        stream it named)."""
        pipe = self._pipe
        if pipe is None:
            command = self._read_command(streams, block=not history)
            self._read_blocks = not history
            self._read = asyncio.create_task(raw_command(self.redis, *command))
        else:
            if not pipe.in_flight:
                self._read_blocks = not history
                await pipe.send([self._read_command(streams, block=not history)])
            self._read = asyncio.create_task(pipe.reply())
        try:
            resp = await self._read
        finally:
            self._read = None
        if isinstance(resp, Exception):
            raise resp
        items = reply_items(resp)
        resp = None
        full = any(len(entries) >= self.config.count for _, entries in items)
        if full and not history and pipe is not None and not self._stopping:
            ahead = self._ahead = list(self._streams.values())
            if not any(s.cursor is not None for s in ahead):  # (none joined since)
                self._read_blocks = False
                await pipe.send([self._read_command(ahead, block=False)])
        return items

    def _block_ms(self) -> int:
        """Block no longer than the batch's age deadline (unless a commit is in flight: its
        end is seen after the read), the next scan, or ``block_ms``."""
        now = time.monotonic()
        until = [self.config.block_ms / 1000, self._next_scan - now]
        if self._batch.started is not None and self._commit_task is None:
            until.append(self._batch.started + self.config.roll_age_s - now)
        return max(1, int(min(until) * 1000))

    def _ingest(self, key: str, entries: Sequence[Sequence[Any]]) -> None:
        """One stream's entries (increasing ids) into the batch; those at or below what is
        archived or held are skipped, every one is acknowledged with the batch's commit."""
        s = self._streams.get(key)
        if s is None:
            return
        if s.cursor is not None:
            s.cursor = as_str(entries[-1][0])
        start = 0
        while start < len(entries) and _id(entries[start][0]) <= s.last:
            start += 1
        self.stats.skipped += start
        batch = self._batch
        batch.acks.setdefault(key, []).extend(map(_first, entries))
        if start == len(entries):
            return
        fresh = entries[start:]
        decoded = decode(s.sk, fresh)
        s.last = _id(fresh[-1][0])
        batch.last[key] = f"{s.last[0]}-{s.last[1]}"
        if batch.started is None:
            batch.started = time.monotonic()
        for date, rb in decoded.batches.items():
            batch.parts.setdefault((s.sk.channel, s.sk.exchange, date), []).append(rb)
            batch.nbytes += rb.nbytes
        batch.rows += decoded.rows
        self.stats.buffered += decoded.rows
        self.stats.trimmed += decoded.trimmed
        if decoded.trimmed and self._may_log("trimmed"):
            log.warning(
                "archive_entries_trimmed", stream=key, count=decoded.trimmed,
                total=self.stats.trimmed,
                why="pending entries deleted by MAXLEN before they were archived",
            )  # fmt: skip
        if decoded.invalid:
            self.stats.invalid += len(decoded.invalid)
            if self._may_log("invalid"):
                entry_id, why = decoded.invalid[0]
                log.warning(
                    "invalid_entry_skipped", stream=key, id=entry_id.decode(errors="replace"),
                    error=why, total=self.stats.invalid,
                )  # fmt: skip

    # -- commits --------------------------------------------------------------------------
    def _due(self) -> bool:
        b = self._batch
        if not b.acks:
            return False
        if b.nbytes >= self.config.roll_bytes or b.started is None:
            return True  # full, or only entries with no row (skipped, invalid): ack them
        return time.monotonic() - b.started >= self.config.roll_age_s

    async def _commit_step(self, force: bool = False) -> None:
        """Collect a finished commit (acknowledge, or take its entries back to retry); start
        the next when the batch is due and no commit is in flight or waiting to retry."""
        task = self._commit_task
        if task is not None and task.done():
            await self._finish(task)
        if (
            self._commit_task is None
            and (self._due() or (force and self._batch.acks))
            and time.monotonic() >= self._retry_at
        ):
            batch, self._batch = self._batch, _Batch()
            self._committing = batch
            self._commit_task = asyncio.create_task(self._commit(batch))

    async def _commit(self, batch: _Batch) -> Committed:
        store = self._store
        name = self.config.name
        news = {
            k: v for k, v in batch.last.items() if _id(v) > _id(store.manifest.mark(name, k) or "")
        }
        if not batch.parts and not news:
            return Committed(0, 0, 0)  # only entries archived before: acknowledge them

        def write() -> Committed:
            log.debug("archive_commit_started", rows=batch.rows, name=name)
            tables = {p: pa.Table.from_batches(bs) for p, bs in batch.parts.items()}
            done = store.commit(None, tables, news)
            log.debug("archive_commit_done", commit=done.commit, files=done.files, bytes=done.bytes)
            return done

        return await asyncio.to_thread(write)

    async def _finish(self, task: asyncio.Task[Committed]) -> None:
        batch = self._committing
        assert batch is not None
        self._commit_task = None
        self._committing = None
        try:
            done = task.result()
        except Exception as e:  # OSError mostly: disk full, unwritable, gone
            self._batch = batch.merge(self._batch)
            self.stats.write_errors += 1
            self.stats.writable = False
            self.stats.last_error = f"{type(e).__name__}: {e}"[:300]
            self._retry_at = time.monotonic() + self._retry_delay
            if self._may_log("write"):
                log.error(
                    "archive_write_failed", error=self.stats.last_error, dir=str(self.dir),
                    rows_held=batch.rows, retry_in_s=round(self._retry_delay, 2),
                    total=self.stats.write_errors,
                    effect="not acknowledging: Redis keeps the entries until this recovers",
                )  # fmt: skip
            self._retry_delay = min(self._retry_delay * 2, self.config.retry_max_s)
            return
        if not self.stats.writable:
            log.info("archive_write_recovered", dir=str(self.dir), failures=self.stats.write_errors)
        self.stats.writable = True
        if done.commit:
            self.stats.last_commit_ms = int(time.time() * 1000)
        self._retry_delay = self.config.retry_min_s
        self.stats.buffered -= batch.rows
        self.stats.rows += done.rows
        self.stats.bytes += done.bytes
        self.stats.files += done.files
        self.stats.commits += 1 if done.files or batch.last else 0
        for key, ids in batch.acks.items():  # sent by the loop next (Redis errors are its job)
            self._unsent_acks.setdefault(key, []).extend(ids)

    def _ack_soon(self) -> None:
        """The acknowledgements due sent in the background (one send in flight), so the loop
        decodes the next reply while Redis runs them. A send that failed raises its error
        here (for the loop's retry); its ids were queued again."""
        task = self._ack_task
        if task is not None:
            if not task.done():
                return
            self._ack_task = None
            if not task.cancelled():
                task.result()
        if self._unsent_acks:
            self._ack_task = asyncio.create_task(self._send_acks())

    async def _wait_acks_sent(self) -> None:
        """The background send in flight, if any, finished (its error left to the caller's
        next send: its ids were queued again)."""
        task, self._ack_task = self._ack_task, None
        if task is not None:
            await asyncio.wait({task})
            if not task.cancelled():
                task.exception()  # (retrieved: its ids are queued again)

    async def _send_acks(self) -> None:
        """XACK every id whose commit is durable, in one pipelined round trip
        (:mod:`archive.acks`). On an error they are queued again and go with the next try;
        if they never reach Redis, the entries are read again after a restart and skipped
        (the manifest has them)."""
        todo, self._unsent_acks = self._unsent_acks, {}
        failed: Exception | None = None
        try:
            if self._cluster is not None:  # (a node's ids queued again if it failed)
                acked, refused, failed = await self._cluster.ack(todo, self._unsent_acks)
            else:
                acked, refused = await acks.send(
                    self.redis, self.config.group, todo, pooled=self._pooled
                )
        except BaseException:
            for key, ids in todo.items():
                self._unsent_acks.setdefault(key, []).extend(ids)
            raise
        self.stats.acked += acked
        for error in refused:
            log.warning("archive_ack_refused", error=error)  # read again, skipped
        if failed is not None:
            raise failed

    async def _drain(self) -> None:
        """At stop: every entry held committed and acknowledged, within ``stop_timeout_s``."""
        deadline = time.monotonic() + self.config.stop_timeout_s
        while True:
            if self._commit_task is not None:
                await asyncio.wait({self._commit_task})
            await self._commit_step(force=True)
            if self._commit_task is None and not self._batch.acks:
                break
            if self._commit_task is None:  # failed: wait for the retry, if time allows
                if self._retry_at >= deadline:
                    log.error(
                        "archive_stopped_uncommitted", rows=self._batch.rows,
                        why="commits kept failing: the entries stay pending in Redis and "
                        "are archived at the next start",
                    )  # fmt: skip
                    break
                await asyncio.sleep(max(0.0, self._retry_at - time.monotonic()))
        await self._wait_acks_sent()
        if self._unsent_acks:
            try:
                async with asyncio.timeout(2.0):
                    await self._send_acks()
            except Exception as e:
                log.warning("archive_acks_left_pending", error=str(from_redis(e))[:200])

    # -- streams --------------------------------------------------------------------------
    async def _rescan(self) -> None:
        """New streams matching the pattern join; the lag is measured."""
        self._next_scan = time.monotonic() + self.config.rescan_s
        new: list[tuple[str, StreamKey]] = []
        async for raw in self.redis.scan_iter(
            match=self.config.streams, count=1000, _type="stream"
        ):
            key = as_str(raw)
            if key in self._streams or key in self._ignored:
                continue
            try:
                sk = parse_stream_key(key)
            except DecodeError:
                self._ignored.add(key)
                continue
            if not valid_name(sk.exchange):
                self._ignored.add(key)
                log.warning("archive_stream_ignored", stream=key, why="exchange name unusable")
                continue
            new.append((key, sk))
        if new:
            await self._join([k for k, _ in new])
            manifest, name = self._store.manifest, self.config.name
            for key, sk in new:
                self._streams[key] = _Stream(key, sk, _id(manifest.mark(name, key) or "0-0"))
            self.stats.streams = len(self._streams)
            log.info("archive_streams_added", count=len(new), total=len(self._streams))
            self._next_adopt = 0.0  # members gone may have left entries of these pending
        await self._measure_lag()

    async def _join(self, keys: list[str]) -> None:
        """Each stream's group created at 0 (unless it exists)."""
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.xgroup_create(key, self.config.group, id="0")
        for r in await pipe.execute(raise_on_error=False):
            if isinstance(r, Exception) and "BUSYGROUP" not in str(r):
                raise r

    async def _pending_members(self) -> dict[str, list[str]]:
        """Other consumer names with entries pending in the group -> their streams."""
        keys = list(self._streams)
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.xpending(key, self.config.group)
        out: dict[str, list[str]] = {}
        for key, info in zip(keys, await pipe.execute(raise_on_error=False), strict=True):
            if isinstance(info, Exception):
                continue  # a stream gone, a group lost: the loop's error handling sees it
            for c in info.get("consumers") or ():
                member = as_str(c.get("name", b""))
                if member != self.config.name and int(c.get("pending") or 0) > 0:
                    out.setdefault(member, []).append(key)
        return out

    async def _adopt_gone(self) -> None:
        """Every other member with pending entries whose archiver is not running (its name
        free in the directory) is adopted: its entries archived under its marks, then
        acknowledged. A member still running keeps its own (it is only slow, or its commits
        fail: taking them would write them twice)."""
        self._next_adopt = time.monotonic() + self.config.adopt_every_s
        if self._adopting or not self._streams:
            return
        for member, keys in (await self._pending_members()).items():
            if self._stopping:
                return
            adopter = _Adopter(self, member)
            if not await adopter.take():
                continue  # running: its own archiver reads them
            try:
                await adopter.drain(keys)
            finally:
                await adopter.release()

    async def _recreate_groups(self) -> None:
        """NOGROUP: a stream deleted is dropped (a rescan finds it again if it comes back);
        a group Redis lost (restart without persistence, FLUSHALL) is created again at 0."""
        for key in list(self._streams):
            if not await self.redis.exists(key):
                del self._streams[key]
                log.warning("archive_stream_gone", stream=key)
                continue
            try:
                await self.redis.xgroup_create(key, self.config.group, id="0")
            except ResponseError as e:
                if "BUSYGROUP" in str(e):
                    continue
                raise
            self.stats.resets += 1
            # the group starts again at 0 and Redis hands the stream out again, split among
            # the members: skip what any member archived (the highest mark of the stream)
            top = (await asyncio.to_thread(self._store.refresh)).last.get(key)
            s = self._streams[key]
            s.last = max(s.last, _id(top or "0-0"))
            log.warning("stream_reset", stream=key, group=self.config.group, resume_from="0")
        self.stats.streams = len(self._streams)

    async def _measure_lag(self) -> None:
        """Entries not yet archived: per stream, the group's lag (not yet delivered) plus its
        pending entries (delivered, not acknowledged), summed. None when Redis cannot tell."""
        keys = list(self._streams)
        if not keys:
            self.stats.lag = self.stats.lag_max = 0
            return
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.xinfo_groups(key)
        total: int | None = 0
        most = 0
        for groups in await pipe.execute(raise_on_error=False):
            if isinstance(groups, Exception):
                continue
            for g in groups:
                if as_str(g.get("name", b"")) != self.config.group:
                    continue
                lag = g.get("lag")
                if lag is None or total is None:
                    total = None
                else:
                    behind = int(lag) + int(g.get("pending") or 0)
                    total += behind
                    most = max(most, behind)
        self.stats.lag = total
        self.stats.lag_max = None if total is None else most

    def _may_log(self, what: str) -> bool:
        now = time.monotonic()
        if now - self._last_log.get(what, -1e9) < self.config.log_every_s:
            return False
        self._last_log[what] = now
        return True


class _Adopter:
    """Drains the pending entries of a member whose archiver is not running: under that
    member's consumer name (Redis hands out a name's pending entries to whoever reads with
    it), its name lock held (so it cannot start meanwhile, nor another member adopt it too),
    its marks skipping what it committed before it stopped. An :class:`Archiver` of that
    name that only reads pending entries (never ``>``), commits and acknowledges them."""

    def __init__(self, owner: Archiver, member: str) -> None:
        self.owner = owner
        self.member = member
        config = owner.config.model_copy(update={"name": member, "pause_gc": False})
        self.a = Archiver(owner.redis, owner.dir, config)
        self.a._adopting = True
        self.a._pipe = None  # plain reads: no read-ahead, no connection of its own

    async def take(self) -> bool:
        """Whether the member's name was free (its archiver not running), now held."""
        try:
            await asyncio.to_thread(self.a._store.open, wait=False)
        except WriterBusyError:
            return False
        self.a._opened = True
        return True

    async def drain(self, keys: list[str]) -> None:
        a, owner = self.a, self.owner
        manifest = a._store.manifest
        for key in keys:
            sk = owner._streams[key].sk
            a._streams[key] = _Stream(key, sk, _id(manifest.mark(self.member, key) or "0-0"))
        while not owner._stopping and a.stats.writable:
            streams = [s for s in a._streams.values() if s.cursor is not None]
            if not streams:
                break
            await a._commit_step()
            if a._unsent_acks:
                await a._send_acks()
            if a._holding():
                await a._wait_for_commit()
            else:
                await a._read_reply(streams, history=True)
        if a.stats.writable:
            await a._drain()
        else:  # the disk fails: what is not committed stays pending under its name
            if a._unsent_acks:
                await a._send_acks()
            owner.stats.last_error = a.stats.last_error
        st, total = a.stats, owner.stats
        for f in ("rows", "bytes", "files", "commits", "acked", "skipped", "invalid", "trimmed"):
            setattr(total, f, getattr(total, f) + getattr(st, f))
        total.write_errors += st.write_errors
        total.adopted += st.acked
        if st.last_commit_ms is not None:
            total.last_commit_ms = st.last_commit_ms
        log.info(
            "archive_member_adopted", member=self.member, by=owner.config.name,
            entries=st.acked, rows=st.rows, skipped=st.skipped, trimmed=st.trimmed,
            why="its archiver is not running: its pending entries archived under its marks",
        )  # fmt: skip
        if self.member not in await owner._pending_members():  # nothing left: its marks
            await asyncio.to_thread(a._store.forget_writer, self.member, list(owner._streams))

    async def release(self) -> None:
        if self.a._opened:
            self.a._opened = False
            await asyncio.to_thread(self.a._store.close)


def _id(entry_id: bytes | str) -> tuple[int, int]:
    try:
        return parse_id(entry_id)
    except ValueError:
        return _NO_ID
