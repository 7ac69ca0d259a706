"""Stream entries of one stream -> Arrow record batches in the archive's schema, by date. Pure.

An archived row holds exactly what a ring buffer row would. A batch of trades or tickers is
read column-wise from the msgpack bytes (:mod:`archive.wire_columns`, no Python object per
record), or else with the consumer's own decoding: :func:`marketbus.codec.unpack_columns` and
:func:`consumers.columns.batch_columns` in C-level passes; :func:`marketbus.codec.unpack` and
:func:`consumers.columns.row_at` entry by entry for books, candles, and any batch holding a
bad entry (which is found, reported and left out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain, repeat
from operator import itemgetter
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from archive import wire_columns
from consumers.archive_layout import DAY_MS, LEVEL, LEVELS, day_text, file_schema
from consumers.columns import BATCH_CHANNELS, COLUMNS, batch_columns, row_at
from consumers.ringbuffer import Column
from consumers.streams import id_numbers, payload, payloads
from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.keys import StreamKey
from marketbus.models import Channel

_fields = itemgetter(1)


@dataclass
class Decoded:
    """What one stream's entries became."""

    batches: dict[str, pa.RecordBatch] = field(default_factory=dict)  # date -> rows
    rows: int = 0
    invalid: list[tuple[bytes, str]] = field(default_factory=list)  # (entry id, why)
    trimmed: int = 0  # pending entries whose data Redis deleted (MAXLEN) before we read them


def decode(sk: StreamKey, entries: Sequence[Sequence[Any]]) -> Decoded:
    """Rows of ``entries`` (``[id, fields]`` as Redis sends them; fields nil for a pending
    entry trimmed since) of the stream ``sk``. A record of another channel, exchange or
    symbol than its stream's is invalid."""
    out = Decoded()
    live = entries if all(map(_fields, entries)) else [e for e in entries if e[1]]
    out.trimmed = len(entries) - len(live)
    if not live:
        return out
    batch = _columns(sk, live) if sk.channel in BATCH_CHANNELS else None
    if batch is None:
        batch = _rows(sk, live, out.invalid)
    if batch is not None:
        out.rows = batch.num_rows
        out.batches = split_by_date(batch)
    return out


def _columns(sk: StreamKey, entries: Sequence[Sequence[Any]]) -> pa.RecordBatch | None:
    """The whole batch column-wise, or None when an entry is not plainly valid."""
    ids, fields = zip(*entries, strict=True)
    stamps = wire_columns.entry_numbers(ids) or id_numbers(ids)
    datas = payloads(fields)
    if stamps is None or datas is None:
        return None
    ms, seq = stamps
    values = wire_columns.columns(sk.channel, datas, sk.exchange, sk.symbol)
    if values is None:  # not in the layout the fast path reads: the consumer's decoding
        cols = codec.unpack_columns(sk.channel, datas)
        if cols is None or set(cols[2]) != {sk.exchange} or set(cols[3]) != {sk.symbol}:
            return None
        values = batch_columns(sk.channel, cols, ms)
    values["entry_ms"] = ms
    return build(sk.channel, sk.symbol, [values[c.name] for c in COLUMNS[sk.channel]], seq)


def _rows(
    sk: StreamKey, entries: Sequence[Sequence[Any]], invalid: list[tuple[bytes, str]]
) -> pa.RecordBatch | None:
    rows: list[tuple[Any, ...]] = []
    seqs: list[int] = []
    extra: list[tuple[Any, Any]] = []
    book = sk.channel is Channel.BOOK
    for entry_id, fields in entries:
        try:
            ms, seq = parse_id(entry_id)
            channel, values = codec.unpack(payload(fields))
            if channel is not sk.channel or values[2] != sk.exchange or values[3] != sk.symbol:
                raise DecodeError(
                    f"a {channel.value} record of {values[2]}:{values[3]} in stream {sk}"
                )
        except (DecodeError, ValueError) as e:
            invalid.append((bytes(entry_id), str(e)[:200]))
            continue
        rows.append(row_at(channel, values, ms))
        seqs.append(seq)
        if book:
            extra.append((values[7], values[8]))
    if not rows:
        return None
    cols = list(zip(*rows, strict=True))
    extras = [levels(list(side)) for side in zip(*extra, strict=True)] if book else []
    return build(sk.channel, sk.symbol, cols, np.array(seqs, dtype=np.int64), extras)


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    """``b"1700000000000-3"`` -> ``(1700000000000, 3)``; ValueError for anything else."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, dash, seq = text.partition("-")
    if not dash or not ms.isdigit() or not seq.isdigit():
        raise ValueError(f"not a stream entry id: {text!r}")
    return int(ms), int(seq)


def build(
    channel: Channel,
    symbol: str,
    columns: Sequence[Any],
    entry_seq: npt.NDArray[np.int64],
    extras: Sequence[pa.Array] = (),
) -> pa.RecordBatch:
    """A record batch in :func:`consumers.archive_layout.file_schema` from ring-buffer column values
    (in ``COLUMNS[channel]`` order), the entries' sequence numbers and the extra columns."""
    n = len(entry_seq)
    arrays: list[pa.Array] = [pa.repeat(pa.scalar(symbol, pa.string()), n)]
    arrays += [column_array(c, v) for c, v in zip(COLUMNS[channel], columns, strict=True)]
    arrays.append(pa.array(entry_seq, type=pa.int64()))
    arrays += extras
    return pa.RecordBatch.from_arrays(arrays, schema=file_schema(channel))


def column_array(col: Column, values: Any) -> pa.Array:
    """One ring-buffer column's values as its Arrow type (category: int8 codes into the
    column's fixed categories, as the buffer stores them; an unknown value is null). An
    Arrow array (from :mod:`archive.wire_columns`) is taken as it is."""
    if isinstance(values, pa.Array):
        return values
    if col.type == "category":
        index = {c: i for i, c in enumerate(col.categories)}
        codes = np.fromiter(map(index.get, values, repeat(-1)), dtype=np.int8, count=len(values))
        dictionary = pa.array(col.categories, type=pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=codes < 0), dictionary)
    if col.type in ("string", "int_string"):
        return pa.array(values, type=pa.string())
    if col.type == "bool":
        return pa.array(values, type=pa.bool_())
    return pa.array(np.asarray(values, dtype=col.numpy_dtype))


def levels(flats: list[list[float]]) -> pa.Array:
    """Book sides as the codec carries them (``[p0, s0, p1, s1, ...]`` per record) -> a list
    column of ``{price, size}``, best first."""
    n = len(flats)
    offsets = np.zeros(n + 1, dtype=np.int32)
    np.cumsum(np.fromiter(map(len, flats), dtype=np.int32, count=n) // 2, out=offsets[1:])
    flat = np.fromiter(chain.from_iterable(flats), dtype=np.float64, count=int(offsets[-1]) * 2)
    items = pa.StructArray.from_arrays([flat[0::2], flat[1::2]], fields=list(LEVEL))
    return pa.ListArray.from_arrays(pa.array(offsets), items, type=LEVELS)


def split_by_date(batch: pa.RecordBatch) -> dict[str, pa.RecordBatch]:
    """Rows by the UTC date of their exchange time (``ts_ms``): one partition each."""
    days = batch.column("ts_ms").to_numpy() // DAY_MS
    first, last = int(days.min()), int(days.max())
    if first == last:
        return {day_text(first): batch}
    return {day_text(int(d)): batch.filter(pa.array(days == d)) for d in np.unique(days).tolist()}
