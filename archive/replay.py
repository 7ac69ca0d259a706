"""Replay: archived records written back into Redis streams under a namespace of their own.

::

    config = ReplayConfig(namespace="bt1", start_ms=..., end_ms=..., speed=10.0)
    stats = await Replay("redis://127.0.0.1:6379/0", "/data/archive", config).run()

Records land in ``md.<namespace>:{exchange:symbol}:<channel>`` (:func:`marketbus.keys.
namespace_prefix`), encoded exactly as the publisher encodes them and with their original
entry ids, so unchanged bot code (``Consumer(..., namespace="bt1")``) runs on history. The
live ``md:`` keys are never read, written or deleted.

- **Order**: :mod:`archive.replay_source` (``ts_ms``, entry id, exchange, symbol, channel),
  read in time slices of about ``slice_rows`` rows (the next one read in a thread meanwhile).
- **Namespace**: a namespace that already holds streams is refused (a ConfigError naming a
  few), unless ``reset``: then its streams, and only its, are deleted first (``UNLINK``).
  Nothing is written, nor deleted, when the range holds no record.
- **Writes**: pipelined ``XADD key MAXLEN ~ n <id> d ... h ...`` in batches of ``batch``
  commands packed as RESP bytes (:mod:`archive.replay_wire`), two batches in flight, so Redis
  works while the next is encoded. On a Redis Cluster each batch is split by node (a
  stream's key names its slot) and every node's part goes in one write, the nodes at once,
  each batch answered before the next. Any error reply or lost connection ends the replay
  with an error (what was confirmed is in ``stats.records``): rerun it with ``reset``.
- **Pace**: ``speed=None`` writes as fast as Redis takes them; ``speed=x`` writes a record
  with exchange time ``t`` at ``start + (t - t0) / x`` (``t0`` the first record's), sleeping
  (bounded, woken by :meth:`Replay.stop`) while nothing is due. ``stats.max_lag_ms`` is how
  late the writer ran at worst.

:meth:`Replay.stop` ends the replay after the batches in flight are answered (cancelled
after ``stop_timeout_s``): ``stats.records`` is then exactly what Redis holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import redis.asyncio as aioredis
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from redis._parsers.hiredis import NOT_ENOUGH_DATA
from redis.asyncio.cluster import RedisCluster

from archive.replay_source import ArchiveSource, Selection, Slice
from archive.replay_wire import Encoder
from consumers.markets import split_market
from marketbus.errors import ConfigError, FatalError, RedisUnavailableError
from marketbus.keys import DEFAULT_PREFIX, namespace_prefix, stream_pattern
from marketbus.models import Channel
from marketbus.redis_client import connect, from_redis, is_refusal
from marketbus.settings import RedisSettings

log = structlog.get_logger("marketbus.replay")

MAX_SLEEP_S = 0.5  # a paced replay sleeps at most this long at a time
_IN_FLIGHT = 2  # batches sent whose replies are not read yet


class ReplayConfig(BaseModel):
    """What to replay and how (docs/history.md, "Replay")."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    namespace: str = Field(description="streams go to md.<namespace>:{exchange:symbol}:<channel>")
    start_ms: int = Field(ge=0, description="first exchange time replayed (ms, included)")
    end_ms: int = Field(ge=1, description="end of the range (ms, excluded)")
    markets: tuple[str, ...] | None = Field(None, description="'binance:BTC/USDT'...; None: all")
    channels: tuple[Channel, ...] | None = Field(None, description="None: every channel found")
    speed: float | None = Field(None, gt=0, description="x times the original pace; None: max")
    reset: bool = Field(False, description="delete the namespace's streams first")
    maxlen: int | None = Field(100_000, ge=1, description="XADD MAXLEN ~ n; None: no trim")
    batch: int = Field(2048, ge=1, le=100_000, description="XADDs per pipelined write")
    slice_rows: int = Field(100_000, ge=1, description="rows read from the archive at a time")
    stop_timeout_s: float = Field(5.0, ge=0)

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        namespace_prefix(v)  # 1-64 of [A-Za-z0-9_-]
        return v

    @model_validator(mode="after")
    def _range(self) -> ReplayConfig:
        if self.start_ms >= self.end_ms:
            raise ValueError("start must be before end")
        if self.markets is not None and not self.markets:
            raise ValueError("markets: give at least one, or None for all")
        if self.channels is not None and not self.channels:
            raise ValueError("channels: give at least one, or None for all")
        return self

    @property
    def prefix(self) -> str:
        return namespace_prefix(self.namespace)

    def selection(self) -> Selection:
        markets = None
        if self.markets is not None:
            markets = frozenset(split_market(m) for m in self.markets)
        return Selection(self.start_ms, self.end_ms, self.channels, markets)


@dataclass
class ReplayStats:
    records: int = 0  # entries Redis confirmed
    streams: int = 0  # streams written to
    slices: int = 0
    renumbered: int = 0  # entries whose id had to move up (exchange time out of arrival order)
    duplicates: int = 0  # second copies of an entry in the archive, left out
    deleted: int = 0  # streams of the namespace deleted first (reset)
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None
    elapsed_s: float = 0.0  # from the first write to the last reply
    max_lag_ms: float | None = None  # paced: how late the writer ran at worst
    done: bool = False  # the whole range was replayed
    skipped: dict[str, str] = field(default_factory=dict)  # files left out: path -> why

    @property
    def rate(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Replay:
    """Writes an archive's records of a time range into a Redis namespace (module docstring)."""

    def __init__(
        self, redis: str | RedisSettings | Any, dir: str | Path, config: ReplayConfig
    ) -> None:
        self.config = config
        self._owns_redis = isinstance(redis, str | RedisSettings)
        if isinstance(redis, str):
            redis = RedisSettings(url=redis)
        self.redis: Any = connect(redis, retries=0) if isinstance(redis, RedisSettings) else redis
        self._cluster = isinstance(self.redis, RedisCluster)
        if not self._cluster and not isinstance(self.redis, aioredis.Redis):
            raise ConfigError("replay needs a redis.asyncio Redis or RedisCluster client")
        self._nodes: dict[str, Any] = {}  # cluster: stream key -> the node serving its slot
        self.source = ArchiveSource(dir, config.selection(), config.slice_rows)
        self.stats = ReplayStats()
        self._encoders: dict[tuple[Channel, str], Encoder] = {}
        self._streams: set[tuple[str, str, Channel]] = set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[ReplayStats] | None = None
        self._conn: Any = None
        self._due: deque[int] = deque()  # replies due, per batch in flight
        self._clock: tuple[float, int] | None = None  # paced: (loop time, ts_ms) of the start
        self._started = 0.0

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="marketbus-replay")

    async def wait(self) -> ReplayStats:
        """The replay's end: its stats, or its error."""
        await self.start()
        assert self._task is not None
        return await asyncio.shield(self._task)

    async def run(self) -> ReplayStats:
        """Replay the whole range (or until :meth:`stop`)."""
        try:
            return await self.wait()
        finally:
            await self.stop()

    async def stop(self) -> None:
        """End after the batches in flight are answered; cancel after ``stop_timeout_s``."""
        self._stop.set()
        task = self._task
        if task is not None and not task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait({task}, timeout=self.config.stop_timeout_s)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if task is not None and task.done() and not task.cancelled():
            task.exception()  # retrieved: wait() or run() raise it
        await self._release()
        if self._owns_redis:
            self._owns_redis = False
            with contextlib.suppress(Exception):
                await self.redis.aclose()

    async def __aenter__(self) -> Replay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- the replay -----------------------------------------------------------------------
    async def _run(self) -> ReplayStats:
        estimate = await asyncio.to_thread(self.source.index)
        self._sync_source()
        if estimate == 0:
            log.warning("replay_empty", dir=str(self.source.root), start_ms=self.config.start_ms,
                        end_ms=self.config.end_ms)  # fmt: skip
            self.stats.done = True
            return self.stats
        try:
            await self._prepare_namespace()
            log.info(
                "replay_started", namespace=self.config.namespace, start_ms=self.config.start_ms,
                end_ms=self.config.end_ms, rows_estimate=estimate, speed=self.config.speed,
            )  # fmt: skip
            pending = asyncio.ensure_future(asyncio.to_thread(self.source.next_slice))
            try:
                while not self._stop.is_set():
                    piece = await pending
                    self._sync_source()  # the reading thread is idle now
                    if piece is None:
                        self.stats.done = True
                        break
                    # the next slice is read in a thread while this one is written
                    pending = asyncio.ensure_future(asyncio.to_thread(self.source.next_slice))
                    await self._write_slice(piece)
            finally:
                _drop(pending)
            await self._replies(0)
        except (OSError, aioredis.RedisError) as e:
            raise from_redis(e) from e
        finally:
            if self._started:
                self.stats.elapsed_s = time.perf_counter() - self._started
            self._sync_source()
        log.info("replay_done", **{k: v for k, v in vars(self.stats).items() if k != "skipped"},
                 skipped=len(self.stats.skipped))  # fmt: skip
        return self.stats

    def _sync_source(self) -> None:
        s = self.source.stats
        self.stats.slices, self.stats.renumbered = s.slices, s.renumbered
        self.stats.duplicates = s.duplicates
        self.stats.skipped = self.source.skipped
        self.stats.streams = len(self._streams)

    async def _prepare_namespace(self) -> None:
        """Refuse a namespace holding streams, or (reset) delete them: its own keys only."""
        prefix = self.config.prefix
        if prefix == DEFAULT_PREFIX:  # the config never allows it: checked all the same
            raise ConfigError("replay never writes to, nor deletes, the live md: streams")
        pattern = stream_pattern(prefix)
        keys = [k async for k in self.redis.scan_iter(match=pattern, count=1000, _type="stream")]
        if not keys:
            return
        if not self.config.reset:
            names = ", ".join(sorted(k.decode(errors="replace") for k in keys)[:3])
            raise ConfigError(
                f"namespace {self.config.namespace!r} already holds {len(keys)} stream(s) "
                f"({names}{', ...' if len(keys) > 3 else ''}): reset it (--reset deletes them) "
                "or choose another namespace"
            )
        for i in range(0, len(keys), 500):
            await self.redis.unlink(*keys[i : i + 500])
        self.stats.deleted = len(keys)
        log.info("replay_namespace_reset", namespace=self.config.namespace, deleted=len(keys))

    async def _write_slice(self, piece: Slice) -> None:
        n = piece.rows
        if not n:
            return
        for part in piece.parts:
            for s in pc.unique(part.table.column("symbol")).to_pylist():
                self._streams.add((part.exchange, s, part.channel))
        if self.stats.first_ts_ms is None:
            self.stats.first_ts_ms = int(piece.ts_ms[0])
        cursors = [0] * len(piece.parts)
        batch, speed = self.config.batch, self.config.speed
        k = 0
        while k < n and not self._stop.is_set():
            end = min(k + batch, n)
            if speed is not None:
                due_ts = self._due_ts(int(piece.ts_ms[k]), speed)
                if due_ts is not None:  # nothing due yet: wait for the first record's time
                    await self._replies(0)
                    await self._sleep_until(int(piece.ts_ms[k]), speed)
                    continue
                # every record due by now, at least one
                limit = self._now_ts(speed)
                end = min(end, max(k + 1, int(np.searchsorted(piece.ts_ms, limit, "right"))))
            if self._cluster:
                commands, keys = self._pack_rows(piece, k, end, cursors)
                if speed is not None:
                    self._note_lag(int(piece.ts_ms[k]), speed)
                await self._send_cluster(commands, keys)
            else:
                packed = self._pack(piece, k, end, cursors)
                if speed is not None:
                    self._note_lag(int(piece.ts_ms[k]), speed)  # the batch's most overdue record
                await self._send(packed, end - k)
            self.stats.last_ts_ms = int(piece.ts_ms[end - 1])
            k = end

    # -- pacing ---------------------------------------------------------------------------
    def _now_ts(self, speed: float) -> float:
        """The exchange time whose records are due now."""
        assert self._clock is not None
        start, t0 = self._clock
        return t0 + (asyncio.get_running_loop().time() - start) * 1000 * speed

    def _due_ts(self, ts: int, speed: float) -> float | None:
        """Seconds until a record of exchange time ``ts`` is due, or None if it is."""
        if self._clock is None:
            self._clock = (asyncio.get_running_loop().time(), ts)
            return None
        start, t0 = self._clock
        wait = start + (ts - t0) / 1000 / speed - asyncio.get_running_loop().time()
        return wait if wait > 0 else None

    async def _sleep_until(self, ts: int, speed: float) -> None:
        wait = self._due_ts(ts, speed)
        if wait is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), min(wait, MAX_SLEEP_S))

    def _note_lag(self, ts: int, speed: float) -> None:
        assert self._clock is not None
        start, t0 = self._clock
        late = (asyncio.get_running_loop().time() - (start + (ts - t0) / 1000 / speed)) * 1000
        self.stats.max_lag_ms = max(self.stats.max_lag_ms or 0.0, late)

    # -- writing --------------------------------------------------------------------------
    def _encoder(self, channel: Channel, exchange: str) -> Encoder:
        enc = self._encoders.get((channel, exchange))
        if enc is None:
            enc = Encoder(channel, exchange, self.config.prefix, self.config.maxlen)
            self._encoders[(channel, exchange)] = enc
        return enc

    def _pack(self, piece: Slice, k: int, end: int, cursors: list[int]) -> bytes:
        """Rows ``k:end`` (replay order) of a slice as one buffer of XADDs."""
        which = piece.which[k:end]
        counts = np.bincount(which, minlength=len(piece.parts))
        chunks: dict[int, list[bytes]] = {}
        for p in np.flatnonzero(counts).tolist():
            part, c0 = piece.parts[p], cursors[p]
            c1 = c0 + int(counts[p])
            enc = self._encoder(part.channel, part.exchange)
            chunks[p] = enc.commands(part.table.slice(c0, c1 - c0), part.ms[c0:c1], part.seq[c0:c1])
            cursors[p] = c1
        if len(chunks) == 1:
            return b"".join(next(iter(chunks.values())))
        its = {p: iter(c) for p, c in chunks.items()}
        return b"".join([next(its[p]) for p in which.tolist()])

    def _pack_rows(
        self, piece: Slice, k: int, end: int, cursors: list[int]
    ) -> tuple[list[bytes], list[str]]:
        """Rows ``k:end`` (replay order) as one XADD each, with each one's stream key (a
        cluster routes them by the key's slot)."""
        which = piece.which[k:end]
        counts = np.bincount(which, minlength=len(piece.parts))
        chunks: dict[int, Iterator[bytes]] = {}
        keys: dict[int, Iterator[str]] = {}
        for p in np.flatnonzero(counts).tolist():
            part, c0 = piece.parts[p], cursors[p]
            c1 = c0 + int(counts[p])
            enc = self._encoder(part.channel, part.exchange)
            rows = part.table.slice(c0, c1 - c0)
            chunks[p] = iter(enc.commands(rows, part.ms[c0:c1], part.seq[c0:c1]))
            keys[p] = iter([enc.key(s) for s in rows.column("symbol").to_pylist()])
            cursors[p] = c1
        order = which.tolist()
        return [next(chunks[p]) for p in order], [next(keys[p]) for p in order]

    async def _send_cluster(self, commands: list[bytes], keys: list[str]) -> None:
        """One batch on a cluster: each node's commands (in replay order, so each stream's)
        in one write on a connection of that node, the nodes at once; every reply read
        before the next batch. An error reply (MOVED during a resharding too) ends the
        replay once all are counted."""
        by_node: dict[str, tuple[Any, list[bytes]]] = {}
        for cmd, key in zip(commands, keys, strict=True):
            node = self._nodes.get(key)
            if node is None:
                node = self._nodes[key] = self.redis.get_node_from_key(key)
            by_node.setdefault(node.name, (node, []))[1].append(cmd)
        if not self._started:
            self._started = time.perf_counter()
        results = await asyncio.gather(
            *(self._node_batch(node, cmds) for node, cmds in by_node.values())
        )
        errors = [r for replies in results for r in replies if isinstance(r, Exception)]
        self.stats.records += sum(map(len, results)) - len(errors)
        if errors:
            text = f"Redis refused a replayed entry: {errors[0]}"
            if is_refusal(errors[0]):
                raise RedisUnavailableError(text)
            raise FatalError(text)

    @staticmethod
    async def _node_batch(node: Any, cmds: list[bytes]) -> list[Any]:
        conn = node.acquire_connection()
        try:
            await conn.send_packed_command(b"".join(cmds), check_health=False)
            out: list[Any] = []
            for _ in cmds:
                try:
                    out.append(await conn.read_response())
                except aioredis.ResponseError as e:
                    out.append(e)
            return out
        except BaseException:
            await conn.disconnect()
            raise
        finally:
            node.release(conn)

    async def _connection(self) -> Any:
        if self._conn is None:
            self._conn = await self.redis.connection_pool.get_connection()
        return self._conn

    async def _send(self, packed: bytes, n: int) -> None:
        """Send a batch; then read replies until at most ``_IN_FLIGHT - 1`` batches are due
        (Redis runs this one meanwhile)."""
        conn = await self._connection()
        if not self._started:
            self._started = time.perf_counter()
        try:
            await conn.send_packed_command(packed, check_health=False)
        except BaseException:
            await self._release(broken=True)
            raise
        self._due.append(n)
        await self._replies(_IN_FLIGHT - 1)

    async def _replies(self, keep: int) -> None:
        """Read the replies of the oldest batches until ``keep`` batches are due. An error
        reply ends the replay, once every batch in flight is answered (and counted)."""
        error: Exception | None = None
        while len(self._due) > (0 if error else keep):
            n = self._due[0]
            try:
                replies = await self._read(n)
            except BaseException:
                await self._release(broken=True)
                raise
            self._due.popleft()
            errors = [r for r in replies if isinstance(r, Exception)]
            self.stats.records += n - len(errors)
            error = error or (errors[0] if errors else None)
        if error is not None:
            text = f"Redis refused a replayed entry: {error}"
            if is_refusal(error):
                raise RedisUnavailableError(text)
            raise FatalError(text)

    async def _read(self, n: int) -> list[Any]:
        """``n`` replies, taken from the hiredis reader in bulk (redis-py's read_response
        costs an await and bookkeeping per reply)."""
        conn = self._conn
        parser = getattr(conn, "_parser", None)
        reader = getattr(parser, "_reader", None)
        out: list[Any] = []
        if reader is not None and hasattr(parser, "read_from_socket"):
            gets = reader.gets
            while len(out) < n:
                reply = gets()
                if reply is NOT_ENOUGH_DATA or reply is False:
                    await parser.read_from_socket()  # type: ignore[union-attr]
                    continue
                out.append(reply)
            return out
        for _ in range(n):
            try:
                out.append(await conn.read_response())
            except aioredis.ResponseError as e:
                out.append(e)
        return out

    async def _release(self, broken: bool = False) -> None:
        if self._cluster:
            return  # cluster batches hold no connection between them
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if broken or self._due:
                self._due.clear()
                with contextlib.suppress(Exception):
                    await conn.disconnect()
        finally:
            await self.redis.connection_pool.release(conn)


def _drop(future: asyncio.Future[Any]) -> None:
    """A slice read ahead that is not needed: cancelled, or its outcome retrieved."""
    if not future.done():
        future.cancel()
    elif not future.cancelled():
        future.exception()
