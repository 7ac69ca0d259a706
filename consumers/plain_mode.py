"""Plain mode: ``XREAD`` from the last ids held, forever (no group, no acks).

While behind, the read does not block and, without callbacks, when asked for
(``pause_gc=True``), Python's cyclic GC is paused for it and its ingest
(``consumers.streams``); caught up, it blocks up to ``block_ms``. On a standalone client the
reply is read raw (hiredis, no redis-py parsing).

A stream Redis lost (restarted without persistence, flushed, failed over to a replica behind)
is noticed by looking at its newest entry: after a Redis error, and for the streams that
brought nothing for a while (redis-py may reconnect under a read without telling).

Entries ``MAXLEN`` trimmed before they were read are found, counted and (with history)
filled by :mod:`consumers.trim_watch`: a full reply is checked before it is ingested, and
each stream is looked at every few seconds.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import structlog

from consumers.consumer_parts import ConsumerParts, as_str, id_or_none, id_tuple, reply_items
from consumers.streams import ReplyPipe, gc_paused, raw_command

log = structlog.get_logger("marketbus.consumer")


class PlainMode(ConsumerParts):
    """The plain read loop of a consumer."""

    async def _plain_loop(self, keys: list[str]) -> None:
        """XREAD from the last ids, forever. While behind (the last reply filled ``count``
        for some stream, or at start and after an error) the read does not block: it returns
        at once, so the cyclic GC can be paused for it and its ingest (``pause_gc``, no
        callbacks only: they run bot code). Caught up, it blocks up to ``block_ms``.

        Streams that brought no entry for five blocking reads (at least 1 s), and all of
        them after an error, are checked for a reset (:meth:`_check_resets`)."""
        delay = 0.05
        behind = True
        watch = _ResetWatch(keys, max(5 * self.block_ms, 1000) / 1000)
        look = 0.0  # the next look for trimmed ranges (consumers.trim_watch)
        while not self._stopping:
            now = time.monotonic()
            if now >= watch.due:
                try:
                    await self._check_resets(sorted(watch.quiet))
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    delay = await self._on_error(e, delay)
                    continue
                watch.next()
            if now >= look and self._trim.on:
                look = await self._trim_look(keys)
            got = self.stats.received
            with gc_paused(behind and self.pause_gc and not self._callbacks):
                behind, error = await self._read_plain(keys, watch.quiet, block=not behind)
            if error is not None:
                delay = await self._on_error(error, delay)
                behind = True
                watch.now()
                continue
            delay = 0.05
            await self._linger(behind, got)

    async def _read_plain(
        self, keys: list[str], quiet: set[str], *, block: bool
    ) -> tuple[bool, Exception | None]:
        """One read and its ingest: (whether more entries wait, the read's error). The reply
        is freed when this returns, inside a GC pause (never seen by a collection)."""
        try:
            resp = await self._xread(keys, block=block)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            return False, e
        return await self._process_plain(resp, quiet), None

    async def _process_plain(self, resp: Any, quiet: set[str]) -> bool:
        """Ingest one XREAD reply; whether a stream returned ``count`` entries (more wait).
        The streams with entries are taken out of ``quiet``. A reply that may hide a range
        trimmed before it was read is checked first (``consumers.trim_watch``): the range is
        counted, and with history filled before the stream's entries."""
        self._advance_candles()
        items = reply_items(resp)
        checks = await self._trim_plain(items) if self._trim.on else None
        full = False
        for raw_key, entries in items:
            key = raw_key.decode() if isinstance(raw_key, bytes) else raw_key
            full = full or len(entries) >= self.count
            if entries:
                quiet.discard(key)
            check = checks.get(key) if checks else None
            filled = 0 if check is None else await self._trim_before(key, check)
            if not self._callbacks and entries:
                self._ingest_batch(key, entries)
                self.last_ids[key] = entries[-1][0].decode()
            else:
                for entry_id, fields in entries:
                    try:
                        await self._ingest(key, entry_id, fields)
                    except Exception as e:  # a bot's callback bug must not stop the feed
                        self._callback_error(key, entry_id, e)
                    self.last_ids[key] = entry_id.decode()
            if check is not None:
                await self._trim_after(key, check, filled)
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

    async def _check_resets(self, keys: list[str]) -> None:
        """Streams Redis lost since they were read here: gone (Redis restarted without
        persistence, flushed, failed over to an empty replica), or whose newest entry is
        older than the last one read (failed over to a replica that lagged). Each is a
        reset, counted and logged, and reading goes on from the stream's newest entry (what
        a replica still holds was read here already), or from its start when it is gone
        (everything written since is new). Entries that follow are taken even when their
        ids are below the ones held (a new server whose clock is behind the old one's).

        A stream that is there and reaches the last id read is left alone, also when Redis
        restarted empty and was written again meanwhile: its new ids come from the clock,
        later than the last one read, and XREAD from that id gets them all."""
        keys = [k for k in keys if (id_or_none(self.last_ids[k]) or (0, 0)) > (0, 0)]
        if not keys:
            return
        for key, top in zip(keys, await self._newest_ids(keys), strict=True):
            last = self.last_ids[key]
            if top is not None and id_tuple(top) >= id_tuple(last):
                continue
            resume = "0-0" if top is None else top
            self.last_ids[key] = resume
            self._trim.pos[key] = 0 if top is None else None  # a new stream: counted anew
            self._trim.floor.pop(key, None)
            held = self._buffer_last.get(key)
            if top is None:
                self._buffer_last.pop(key, None)
            elif held is not None and held > id_tuple(top):
                self._buffer_last[key] = id_tuple(top)
            self.stats.resets += 1
            log.warning(
                "stream_reset", stream=key, mode="plain", last_id=last, resume_from=resume,
                stream_gone=top is None, total=self.stats.resets,
            )  # fmt: skip

    async def _newest_ids(self, keys: list[str]) -> list[str | None]:
        """The id of each stream's newest entry (None: no entry, or no stream): one
        pipelined write on a standalone client, else one XREVRANGE per stream."""
        if self._raw_reads:
            pipe = ReplyPipe(self.redis)
            try:
                await pipe.send([("XREVRANGE", k, "+", "-", "COUNT", 1) for k in keys])
                replies = [await pipe.reply() for _ in keys]
            finally:
                await pipe.close()
        else:
            replies = [await self.redis.xrevrange(k, "+", "-", count=1) for k in keys]
        out: list[str | None] = []
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
            out.append(as_str(reply[0][0]) if reply else None)
        return out


@dataclass
class _ResetWatch:
    """A plain read loop's streams that brought no entry since the last reset check
    (``quiet``), and when the next check is due (``due``, monotonic seconds)."""

    keys: list[str]
    every_s: float
    quiet: set[str] = field(init=False)
    due: float = field(init=False)

    def __post_init__(self) -> None:
        self.next()

    def next(self) -> None:
        """Checked: the next check in ``every_s``, of the streams quiet until then."""
        self.quiet = set(self.keys)
        self.due = time.monotonic() + self.every_s

    def now(self) -> None:
        """After an error: every stream, at once."""
        self.quiet = set(self.keys)
        self.due = 0.0
