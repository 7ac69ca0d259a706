"""Bytes on disk per record, and the references: the raw JSON frames and gzip CSV.

An archive's size is taken per ``(channel, exchange)`` from its files: the bytes on disk
(whole files: data pages, footer, metadata) and the bytes of the data pages alone (the
column chunks' compressed sizes, from the footers: what each more record costs, with the
per-file footer, a few KB, left out). References for the same records: the JSON frames the
exchange sends (the recordings': as the fakes wrote them; synthetic data: the Binance
frame each record comes from, built by the fake exchange's frame builders), and the same
rows as CSV (the record's fields: exchange, symbol, times and values, no entry id) gzipped
at level 6.
"""

from __future__ import annotations

import gzip
import io
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from archive.store import Store
from bench.history_math import entry_ids
from consumers.columns import COLUMNS
from fake_exchange import binance_frames as bf
from marketbus.models import Channel, Record, Ticker, Trade
from tests.archive_data import commit_records


@dataclass
class Sizes:
    records: int = 0
    files: int = 0
    disk_bytes: int = 0
    data_bytes: int = 0


def data_bytes(meta: pq.FileMetaData) -> int:
    """The compressed bytes of every column chunk of a file (its footer left out)."""
    return sum(
        meta.row_group(i).column(j).total_compressed_size
        for i in range(meta.num_row_groups)
        for j in range(meta.num_columns)
    )


def part_files(root: Path) -> list[Path]:
    return sorted(root.glob("channel=*/exchange=*/date=*/*.parquet"))


def _value(part: str) -> str:
    return part.partition("=")[2]


def archive_sizes(root: Path) -> dict[tuple[str, str], Sizes]:
    """``(channel, exchange)`` -> records, files and bytes of the archive at ``root``."""
    out: dict[tuple[str, str], Sizes] = {}
    for f in part_files(root):
        key = (_value(f.parts[-4]), _value(f.parts[-3]))
        meta = pq.ParquetFile(f).metadata
        s = out.setdefault(key, Sizes())
        s.records += meta.num_rows
        s.files += 1
        s.disk_bytes += f.stat().st_size
        s.data_bytes += data_bytes(meta)
    return out


def total(sizes: Iterable[Sizes]) -> Sizes:
    out = Sizes()
    for s in sizes:
        out.records += s.records
        out.files += s.files
        out.disk_bytes += s.disk_bytes
        out.data_bytes += s.data_bytes
    return out


def record_columns(channel: Channel) -> list[str]:
    """A record's fields as CSV columns: what the exchange gave and when we got it."""
    return ["exchange", "symbol"] + [c.name for c in COLUMNS[channel] if c.name != "entry_ms"]


def archive_rows(root: Path, channel: Channel, exchange: str | None = None) -> pa.Table:
    """Every archived row of a channel (of one exchange, or all), with ``exchange``."""
    parts = []
    for f in part_files(root):
        if _value(f.parts[-4]) != channel.value:
            continue
        ex = _value(f.parts[-3])
        if exchange is not None and ex != exchange:
            continue
        t = pq.read_table(f)
        parts.append(t.append_column("exchange", pa.array([ex] * t.num_rows, pa.string())))
    return pa.concat_tables(parts) if parts else pa.table({})


def csv_gz_bytes(table: pa.Table, columns: list[str]) -> int:
    """``columns`` of ``table`` as CSV (a header line, then a line per row), gzip level 6."""
    if table.num_rows == 0:
        return 0
    cols = []
    for name in columns:
        col = table.column(name)
        if pa.types.is_dictionary(col.type):
            col = pc.cast(col, pa.string())
        cols.append(col)
    buf = io.BytesIO()
    pacsv.write_csv(pa.table(cols, names=columns), buf)
    return len(gzip.compress(buf.getvalue(), 6))


# -- synthetic data -------------------------------------------------------------------------


def _sym_id(symbol: str) -> str:
    return symbol.replace("/", "").upper()


def trade_frames_bytes(trades: Iterable[Trade]) -> int:
    """Each trade as the Binance ``aggTrade`` frame it would come from (combined stream)."""
    n = 0
    for t in trades:
        sid = _sym_id(t.symbol)
        a = int(t.id)
        data = bf.agg_trade(
            sid, a, f"{t.price:.8f}", f"{t.amount:.8f}", a, a, t.ts_ms, t.ts_ms, t.side == "sell"
        )
        n += len(orjson.dumps({"stream": bf.stream_name(sid, "aggTrade"), "data": data}))
    return n


def _d(v: float | None) -> Decimal:
    return Decimal(repr(v)) if v is not None else Decimal(0)


def ticker_frames_bytes(tickers: Iterable[Ticker]) -> int:
    """Each ticker as the Binance ``24hrTicker`` frame it would come from (combined stream)."""
    n = 0
    for i, t in enumerate(tickers):
        sid = _sym_id(t.symbol)
        data = bf.ticker_24hr(
            sid, t.ts_ms, last=_d(t.last), last_qty=Decimal("0.01"), open_=_d(t.open),
            high=_d(t.high), low=_d(t.low), base_volume=_d(t.base_volume),
            quote_volume=_d(t.quote_volume), bid=_d(t.bid), bid_qty=_d(t.bid_size),
            ask=_d(t.ask), ask_qty=_d(t.ask_size), first_trade=1_000_000, last_trade=1_000_000 + i,
            count=i + 1,
        )  # fmt: skip
        n += len(orjson.dumps({"stream": bf.stream_name(sid, "ticker"), "data": data}))
    return n


def synthetic_tickers(n: int, markets: int, seed: int = 9) -> list[Ticker]:
    """``n`` 24 h tickers on ``markets`` markets, one every 100 ms (about one a second per
    market, Binance's ``@ticker`` pace): random-walk last price on a 0.01 tick, the book's
    top a tick or two around it, exponential sizes, running high/low and volumes."""
    rng = random.Random(seed)
    last = [100.0 * (1 + m) for m in range(markets)]
    high, low = list(last), list(last)
    base = [1_000.0 * (1 + m) for m in range(markets)]
    quote = [b * p for b, p in zip(base, last, strict=True)]
    ts = 1_764_000_000_000
    out = []
    for _ in range(n):
        m = rng.randrange(markets)
        ts += 100
        p = last[m] = max(0.01, round(last[m] * math.exp(rng.gauss(0, 2e-4)), 2))
        high[m], low[m] = max(high[m], p), min(low[m], p)
        q = round(rng.expovariate(2.0), 5)
        base[m] = round(base[m] + q, 8)
        quote[m] = round(quote[m] + q * p, 8)
        bid = round(p - 0.01 * rng.randrange(2), 2)
        out.append(
            Ticker.model_construct(
                exchange="binance", symbol=f"S{m}/USDT", ts_ms=ts,
                recv_ns=ts * 1_000_000 + rng.randrange(1_000_000, 50_000_000),
                last=p, bid=bid, ask=round(bid + 0.01 * (1 + rng.randrange(2)), 2),
                bid_size=round(rng.expovariate(0.5), 5), ask_size=round(rng.expovariate(0.5), 5),
                open=100.0 * (1 + m), high=high[m], low=low[m], close=p,
                base_volume=base[m], quote_volume=quote[m],
            )
        )  # fmt: skip
    return out


def commit_synthetic(root: Path, records: list[Record], roll: int) -> None:
    """``records`` committed as the archiver would (decoded from their stream entries), in
    rolls of ``roll`` entries, entry ids 3 ms after the exchange time."""
    ms, seq = entry_ids(np.array([r.ts_ms for r in records], dtype=np.int64))
    ids = [f"{a}-{b}" for a, b in zip(ms.tolist(), seq.tolist(), strict=True)]
    store = Store(root)
    store.open()
    try:
        for i in range(0, len(records), roll):
            commit_records(
                store, None, list(zip(ids[i : i + roll], records[i : i + roll], strict=True))
            )
    finally:
        store.close()


def column_bytes(root: Path, channel: Channel, column: str) -> dict[str, int]:
    """Exchange -> the compressed bytes of one column's chunks in a channel's files."""
    out: dict[str, int] = {}
    for f in part_files(root):
        if _value(f.parts[-4]) != channel.value:
            continue
        meta = pq.ParquetFile(f).metadata
        names = [meta.schema.column(j).name for j in range(meta.num_columns)]
        j = names.index(column)
        ex = _value(f.parts[-3])
        out[ex] = out.get(ex, 0) + sum(
            meta.row_group(i).column(j).total_compressed_size for i in range(meta.num_row_groups)
        )
    return out
