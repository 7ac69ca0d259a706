"""History and live as one table: ``c.window(exchange, symbol, channel, start_ms)``.

Three sources, each holding a later part of one stream, joined at two seams by entry id:

1. the archive (``Consumer(..., history=PATH)``): the records with ``ts_ms >= start_ms``;
2. the Redis stream: ``XRANGE`` from after the archive's last entry (the last row read, or,
   when none is at or after ``start_ms``, the manifest's last id of the stream) up to the
   ring buffer's first entry, excluded;
3. the ring buffer, as it is when ``window`` is called.

The buffer keeps each entry's Redis time (``entry_ms``) but not its full id, so its first
row is found among the entries of that millisecond in Redis (else in the archive) by its
values; a row no source holds any more is joined at millisecond precision. The table has the
ring buffer's columns (:attr:`RingBuffer.arrow_schema`), rows in entry id order, every
source filtered on ``ts_ms >= start_ms``: it concatenates with the buffer's own tables.

What no source holds is not in the table: entries Redis trimmed before the archiver stored
them (the archiver counts them), or rows a ring buffer lacks because a range it was behind
could not be filled. The seams assume the buffer holds its stream's entries in order from
its first row on, as a plain consumer's (or a group's only member's) does.
"""

from __future__ import annotations

import asyncio
import math
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from consumers.columns import row
from consumers.consumer_parts import ConsumerParts, id_tuple
from consumers.ringbuffer import RingBuffer
from consumers.streams import payload
from consumers.trims import Id, id_text
from marketbus import codec
from marketbus.errors import ConfigError, DecodeError
from marketbus.keys import StreamKey, stream_key
from marketbus.models import Channel

SKEW_MS = 60_000
"""Without an archived id to start from, Redis is read from ``start_ms`` minus this: a
record's exchange time is taken to be at most this far ahead of the time Redis wrote it."""
PAGE = 10_000
_FAR_MS = 2**62
_MAX_SEQ = 2**64 - 1


class Window(ConsumerParts):
    """``window()``: archive, stream and ring buffer as one table."""

    async def window(
        self, exchange: str, symbol: str, channel: Channel | str, start_ms: int
    ) -> pa.Table:
        """One market's records of ``channel`` with ``ts_ms >= start_ms``: from the archive,
        then the Redis stream, then the ring buffer, each entry once, in entry id order.
        Columns: the ring buffer's. ``ConfigError`` without ``history=``."""
        history = self._history
        if history is None:
            raise ConfigError(
                "window() reads the archive: pass Consumer(..., history='/path/to/archive')"
            )
        sk = self._stream(exchange, symbol, channel)
        key = self._key_of[sk]
        buf = self._buffers[sk]
        live = buf.table()  # as it is now: the loop may append while this awaits
        archived = await asyncio.to_thread(
            history.read, sk.exchange, sk.symbol, sk.channel, start_ms, _FAR_MS
        )
        if archived.num_rows:
            order = pc.sort_indices(
                archived, [("entry_ms", "ascending"), ("entry_seq", "ascending")]
            )
            archived = archived.take(order)
        seam = await self._seam(key, buf, live, archived) if live.num_rows else None
        ids = _ids(archived)
        if seam is not None:
            ids = ids[: bisect_left(ids, seam)]
            archived = archived.slice(0, len(ids))
        after = ids[-1] if ids else self._archived_up_to(sk)
        if after is not None and seam is not None and after >= seam:
            streamed = live.schema.empty_table()  # the archive reaches the buffer
        else:
            streamed = await self._stream_part(key, buf, after, seam, start_ms)
        parts = [_as_buffer(archived, buf.arrow_schema), streamed, live]
        ts = pc.field("ts_ms")
        return pa.concat_tables([p.filter(ts >= start_ms) for p in parts])

    def _archived_up_to(self, sk: StreamKey) -> Id | None:
        """The last entry id the archive holds of the stream (its manifest), if any."""
        if self._history is None:
            return None
        manifest = self._history.catalog.manifest()
        last = None if manifest is None else manifest.last.get(stream_key(*sk))
        return None if last is None else id_tuple(last)

    async def _seam(self, key: str, buf: RingBuffer, live: pa.Table, archived: pa.Table) -> Id:
        """The entry id of the buffer's first row: found by its values among the entries of
        its millisecond in Redis, else in the archive, else that millisecond alone."""
        first = live.slice(0, 1).to_pylist()[0]
        ms = int(first["entry_ms"])
        entries = await self.redis.xrange(key, f"{ms}-0", f"{ms}-{_MAX_SEQ}")
        for entry_id, values in _decode(self.keys[key].channel, buf, entries):
            if _same(values, first):
                return entry_id
        if archived.num_rows:
            same_ms = archived.filter(pc.field("entry_ms") == ms)
            values = _as_buffer(same_ms, buf.arrow_schema).to_pylist()
            for seq, value in zip(same_ms.column("entry_seq").to_pylist(), values, strict=True):
                if _same(value, first):
                    return (ms, int(seq))
        return (ms, 0)

    async def _stream_part(
        self, key: str, buf: RingBuffer, after: Id | None, before: Id | None, start_ms: int
    ) -> pa.Table:
        """The stream's entries after ``after`` and before ``before`` (both excluded), as
        buffer rows; from ``start_ms - SKEW_MS`` when there is no ``after``."""
        lo = f"({id_text(after)}" if after is not None else f"{max(start_ms - SKEW_MS, 0)}-0"
        hi = f"({id_text(before)}" if before is not None else "+"
        channel = self.keys[key].channel
        rows: list[tuple[Any, ...]] = []
        while True:
            entries = await self.redis.xrange(key, lo, hi, count=PAGE)
            rows += [r for _, r in _decode_rows(channel, entries)]
            if len(entries) < PAGE:
                break
            lo = f"({entries[-1][0].decode()}"
        out = RingBuffer(buf.columns, capacity=max(len(rows), 1))
        out.extend(rows)
        return out.table()


def _decode_rows(
    channel: Channel, entries: Sequence[Sequence[Any]]
) -> list[tuple[Id, tuple[Any, ...]]]:
    """Entries as buffer rows (the consumer's own decoding), invalid ones left out."""
    out = []
    for entry_id, fields in entries:
        try:
            ch, values = codec.unpack(payload(fields))
        except DecodeError:
            continue
        if ch is channel:
            out.append((id_tuple(entry_id), row(ch, values, entry_id)))
    return out


def _decode(
    channel: Channel, buf: RingBuffer, entries: Sequence[Sequence[Any]]
) -> list[tuple[Id, dict[str, Any]]]:
    """Entries as the dicts a buffer's table gives for them (for comparing with its rows)."""
    decoded = _decode_rows(channel, entries)
    if not decoded:
        return []
    tmp = RingBuffer(buf.columns, capacity=len(decoded))
    tmp.extend([r for _, r in decoded])
    return list(zip([i for i, _ in decoded], tmp.table().to_pylist(), strict=True))


def _same(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal rows, NaN equal to NaN."""
    if a.keys() != b.keys():
        return False
    for k, x in a.items():
        y = b[k]
        if x != y and not (
            isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        ):
            return False
    return True


def _ids(table: pa.Table) -> list[Id]:
    if table.num_rows == 0:
        return []
    ms = table.column("entry_ms").to_pylist()
    seq = table.column("entry_seq").to_pylist()
    return list(zip(ms, seq, strict=True))


def _as_buffer(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """An archive table with the ring buffer's columns and types."""
    return table.select(schema.names).cast(schema)
