"""Records, raw stream entries and committed archive files for the archive's tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from archive.decode import decode
from archive.store import Committed, Partition, Store
from marketbus import codec
from marketbus.keys import StreamKey, stream_key
from marketbus.models import BookTop, Candle, Record


def raw(entry_id: str, record: Record) -> list[Any]:
    """An entry as Redis sends it on a raw read: ``[id, [b"d", data, b"h", line]]``."""
    fields = codec.encode(record)
    return [entry_id.encode(), [b"d", fields["d"], b"h", str(fields["h"]).encode()]]


def book(i: int, levels: int = 3, symbol: str = "BTC/USDT") -> BookTop:
    return BookTop(
        exchange="binance",
        symbol=symbol,
        ts_ms=1_700_000_000_000 + i,
        recv_ns=1_700_000_000_000_000_000 + i,
        seq=None if i % 2 else 1000 + i,
        bids=tuple((100.0 - k, 1.0 + k) for k in range(levels)),
        asks=tuple((101.0 + k, 2.0 + k) for k in range(levels)),
    )


def candle(i: int) -> Candle:
    return Candle(
        exchange="binance",
        symbol="BTC/USDT",
        ts_ms=1_700_000_000_000 + i,
        recv_ns=1_700_000_000_000_000_000 + i,
        interval="1m",
        open_ms=1_700_000_000_000 - 1_700_000_000_000 % 60_000,
        open=1.0,
        high=2.0,
        low=0.5,
        close=1.5,
        volume=3.0,
        quote_volume=None if i % 2 else 4.5,
        closed=bool(i % 2),
    )


def commit_records(
    store: Store, commit: int | None, entries: Sequence[tuple[str, Record]]
) -> Committed:
    """``(entry id, record)`` pairs committed as the archiver would (per stream, by date)."""
    by_stream: dict[StreamKey, list[list[Any]]] = {}
    for entry_id, r in entries:
        by_stream.setdefault(StreamKey(r.exchange, r.symbol, r.channel), []).append(
            raw(entry_id, r)
        )
    parts: dict[Partition, list[pa.RecordBatch]] = {}
    last: dict[str, str] = {}
    for sk, raws in by_stream.items():
        for date, batch in decode(sk, raws).batches.items():
            parts.setdefault((sk.channel, sk.exchange, date), []).append(batch)
        last[stream_key(*sk)] = raws[-1][0].decode()
    tables = {p: pa.Table.from_batches(bs) for p, bs in parts.items()}
    return store.commit(commit, tables, last)


def part_files(root: Path) -> list[Path]:
    return sorted(root.glob("channel=*/exchange=*/date=*/*.parquet"))
