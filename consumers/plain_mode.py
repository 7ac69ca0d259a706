"""Plain mode: ``XREAD`` from the last ids held, forever (no group, no acks).

While behind, the read does not block and, without callbacks, Python's cyclic GC is paused
for it and its ingest (``consumers.streams``); caught up, it blocks up to ``block_ms``. On a
standalone client the reply is read raw (hiredis, no redis-py parsing).
"""

from __future__ import annotations

import asyncio
from typing import Any

from consumers.consumer_parts import ConsumerParts, reply_items
from consumers.streams import gc_paused, raw_command


class PlainMode(ConsumerParts):
    """The plain read loop of a consumer."""

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
        for raw_key, entries in reply_items(resp):
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
