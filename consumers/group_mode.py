"""Group mode: ``XREADGROUP`` forever, each entry acknowledged after its ingest.

One XACK per stream and batch, queued and sent with the next read (on a standalone client
in the same write, through a :class:`~consumers.streams.ReplyPipe`), or right after each
stream's batch when callbacks run; the next read sent ahead while a reply is ingested; this
member's own pending entries re-read first (after a restart or an error); entries a dead
member left pending claimed with ``XAUTOCLAIM``; a group Redis lost created again; ranges
``MAXLEN`` trimmed before the group read them found, counted and (with history) filled by
:mod:`consumers.trim_watch`.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

import structlog
from redis.exceptions import ResponseError

from consumers.consumer_parts import ConsumerParts, as_str, reply_items
from consumers.streams import ReplyPipe, gc_paused
from consumers.trims import ReadCheck

log = structlog.get_logger("marketbus.consumer")
_first = itemgetter(0)
_NOGROUP_KEY = re.compile(r"No such key '(.*?)' or consumer group")


def _is_nogroup(e: Exception) -> bool:
    return isinstance(e, ResponseError) and str(e).startswith("NOGROUP")


class GroupMode(ConsumerParts):
    """The group read loop of a consumer, with its acks and reclaim."""

    async def _group_loop(self, keys: list[str]) -> None:
        """XREADGROUP forever: first this member's own pending entries (from id 0: a restart
        after a crash, or after an error here), then new ones (``>``); entries a dead member
        left pending are claimed every ``reclaim_idle_ms / 4``. Each entry is acknowledged
        after it was ingested and its callbacks returned: one XACK per stream and batch,
        queued and, without callbacks on a standalone client, sent in the same write as the
        next XREADGROUP (Redis runs them in order, before the read blocks); else right after
        each stream's batch.

        As in plain mode, while behind the read does not block, and without callbacks the GC
        is paused for it and its ingest (``pause_gc``); and then on a standalone client the
        next read is sent before the reply in hand is ingested, so Redis builds it meanwhile.

        ``NOGROUP`` (Redis lost the stream or the group) creates the missing groups again
        (:meth:`_recreate_groups`) and reads on."""
        assert self.group is not None and self.name is not None
        reads = _GroupReads(keys, self._reply_pipe())
        delay = 0.05
        next_claim = 0.0
        look = 0.0  # the next look for trimmed ranges (consumers.trim_watch)
        behind = True
        try:
            while not self._stopping:
                try:
                    if time.monotonic() >= next_claim:
                        await self._reclaim(keys)
                        next_claim = time.monotonic() + max(self.reclaim_idle_ms / 4000, 0.05)
                    if self._trim.on and time.monotonic() >= look:
                        look = await self._trim_look(keys)
                    got = self.stats.received
                    with gc_paused(behind and self.pause_gc and not self._callbacks):
                        behind = await self._read_group(reads, block=not behind)
                    self._advance_candles()
                    await self._linger(behind, got)
                except asyncio.CancelledError:
                    raise
                except Exception as e:
                    await self._group_reset(reads)
                    error = await self._after_nogroup(reads, e) if _is_nogroup(e) else e
                    if error is not None:
                        delay = await self._on_error(error, delay)
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

    async def _after_nogroup(self, reads: _GroupReads, e: Exception) -> Exception | None:
        """None when the groups Redis had lost were created again, else the error to handle
        as any other (the NOGROUP, or what the creation raised)."""
        try:
            return None if await self._recreate_groups(reads, e) else e
        except asyncio.CancelledError:
            raise
        except Exception as err:
            return err

    async def _recreate_groups(self, reads: _GroupReads, e: Exception) -> bool:
        """Redis answered NOGROUP: it lost the stream or the group (restarted without
        persistence, flushed, failed over to an empty replica). Each missing group of the
        loop's streams is created again at 0, with its stream (MKSTREAM): what the stream
        holds now was written after the loss, and none of it reached the group. A stream
        whose group this member created, or that Redis named (another member may have been
        first), is a reset: counted, logged, its queued acks (of the lost group) dropped.
        Whether any stream was reset (if not, the error is handled as any other)."""
        created = [key for key in reads.keys if await self._create_group(key, "0")]
        m = _NOGROUP_KEY.search(str(e))
        named = m.group(1) if m else None
        reset = [k for k in reads.keys if k in created or k == named]
        for key in reset:
            self._unacked.pop(key, None)
            self._trim.last.pop(key, None)
            self._trim.seen.pop(key, None)
            self._trim.floor.pop(key, None)
            self.stats.resets += 1
            log.warning(
                "stream_reset", stream=key, mode="group", group=self.group,
                resume_from="0", recreated=key in created, total=self.stats.resets,
            )  # fmt: skip
        return bool(reset)

    async def _create_group(self, key: str, start: str, entries_read: int | None = None) -> bool:
        """The group created on ``key`` at ``start`` (and the stream, if missing), with its
        read count when known (``ENTRIESREAD``); False when it exists already."""
        extra = {} if entries_read is None else {"entries_read": entries_read}
        try:
            await self.redis.xgroup_create(key, self.group, id=start, mkstream=True, **extra)
        except ResponseError as e:
            if "BUSYGROUP" in str(e):
                return False
            raise
        return True

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
        items = reply_items(resp)
        resp = None  # not kept alive by a traceback below
        if history:  # a stream with no pending entry left is done; an empty reply: all are
            for k, entries in items:
                if not entries:
                    reads.own_pending.pop(as_str(k), None)
            if not items:
                reads.own_pending.clear()
        full = any(len(entries) >= self.count for _, entries in items)
        # new entries that may hide a trimmed range: checked before the next read moves the
        # group on (consumers.trim_watch)
        checks = await self._trim_group(items) if self._trim.on and not history else None
        if full and not history and reads.pipe is not None and not self._callbacks:
            if ack_error is None:  # read ahead: Redis builds the next reply meanwhile
                await self._send_group_read(reads, block=False)
        await self._process_group(items, reads.own_pending if history else None, checks)
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
        self,
        items: list[tuple[Any, list[Any]]],
        cursor: dict[str, str] | None = None,
        checks: dict[str, ReadCheck] | None = None,
    ) -> None:
        """Ingest the entries of an XREADGROUP reply (or claimed ones) and queue their acks
        (sent with the next read), or with callbacks send them after each stream's batch.
        ``cursor``: re-reading pending entries, which trimming may have deleted since (those
        are acknowledged, nothing else). ``checks``: ranges trimmed before the group read
        them, filled (with history) before the stream's entries, and counted."""
        for raw_key, entries in items:
            if not entries:
                continue
            key = as_str(raw_key)
            if cursor is not None and key in cursor:
                cursor[key] = as_str(entries[-1][0])
            check = checks.get(key) if checks else None
            filled = 0 if check is None else await self._trim_before(key, check)
            if self._callbacks:  # acked right after (callbacks may take long: not with the read)
                await self._ingest_group_rows(key, entries)
                await self._send_acks([key])
            else:
                if cursor is not None:
                    gone = [e[0] for e in entries if not e[1]]  # pending, deleted since
                    if gone:
                        self._queue_acks({key: gone})
                        entries = [e for e in entries if e[1]]
                if entries:
                    self._ingest_batch(key, entries)  # every entry ingested or counted invalid
                    self._queue_acks({key: list(map(_first, entries))})
            if check is not None:
                await self._trim_after(key, check, filled)

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
                start = as_str(nxt)
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
