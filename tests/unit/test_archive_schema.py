"""The archive's pure parts: schemas per channel (the ring buffer's), paths, decoding, dates."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgpack
import pyarrow as pa
import pytest

from archive.decode import decode, parse_id, split_by_date
from consumers.archive_layout import (
    DAY_MS,
    commit_of,
    date_of,
    day_of,
    file_schema,
    part_name,
    partition_dir,
    result_schema,
    schema_problem,
    valid_name,
)
from consumers.columns import COLUMNS, row
from consumers.ringbuffer import RingBuffer
from marketbus import codec
from marketbus.keys import StreamKey
from marketbus.models import Channel, Record, Ticker
from tests.archive_data import book, candle, raw
from tests.factories import ticker, trade


def _vals(col: pa.ChunkedArray) -> list[Any]:
    """Values with NaN spelled out (NaN != NaN would fail equal columns)."""
    return ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in col.to_pylist()]


@pytest.mark.parametrize("channel", list(Channel))
def test_each_channel_schema_is_the_ring_buffers_plus_symbol_and_entry_seq(
    channel: Channel,
) -> None:
    schema = file_schema(channel)
    assert schema.names[0] == "symbol" and "entry_seq" in schema.names
    for col in COLUMNS[channel]:
        assert schema.field(col.name).type == col.arrow_type
    extra = {"bids", "asks"} if channel is Channel.BOOK else set()
    assert set(schema.names) == {"symbol", "entry_seq", *(c.name for c in COLUMNS[channel]), *extra}
    assert result_schema(channel).names[:3] == ["exchange", "symbol", "entry_id"]


@pytest.mark.parametrize(
    ("channel", "records"),
    [
        (Channel.TRADES, [trade(i) for i in range(5)]),
        (Channel.TICKER, [ticker(i) for i in range(5)]),
        (Channel.BOOK, [book(i) for i in range(5)]),
        (Channel.CANDLES, [candle(i) for i in range(5)]),
    ],
)
def test_decoded_rows_are_what_a_ring_buffer_holds(channel: Channel, records: list[Record]) -> None:
    """Same columns, same values: a history table and a live one concatenate."""
    entries = [raw(f"1700000000100-{i}", r) for i, r in enumerate(records)]
    out = decode(StreamKey("binance", "BTC/USDT", channel), entries)
    assert out.rows == 5 and not out.invalid and out.trimmed == 0
    [batch] = out.batches.values()
    rb = RingBuffer(COLUMNS[channel], capacity=10)
    for entry_id, fields in entries:
        rb.append(row(channel, codec.unpack(fields[1])[1], entry_id))
    expected = rb.table()
    got = pa.Table.from_batches([batch])
    for name in expected.column_names:
        assert _vals(got.column(name)) == _vals(expected.column(name)), name
    assert got.column("entry_seq").to_pylist() == [0, 1, 2, 3, 4]
    assert set(got.column("symbol").to_pylist()) == {"BTC/USDT"}


def test_book_levels_are_list_columns_best_first() -> None:
    records = [book(0, levels=3), book(1, levels=0), book(2, levels=1)]
    out = decode(
        StreamKey("binance", "BTC/USDT", Channel.BOOK),
        [raw(f"1700000000100-{i}", r) for i, r in enumerate(records)],
    )
    t = pa.Table.from_batches(list(out.batches.values()))
    assert t.column("bids").to_pylist() == [
        [{"price": p, "size": s} for p, s in r.bids] for r in records
    ]
    assert t.column("asks").to_pylist()[0] == [
        {"price": 101.0, "size": 2.0},
        {"price": 102.0, "size": 3.0},
        {"price": 103.0, "size": 4.0},
    ]
    assert t.column("seq").to_pylist() == [1000, -1, 1002]  # the ring buffer's "no seq"
    assert math.isnan(t.column("bid").to_pylist()[1])  # an empty side, as the buffer has it


def test_ticker_fields_missing_are_nan_as_in_the_ring_buffer() -> None:
    rec = Ticker(exchange="binance", symbol="BTC/USDT", ts_ms=1, recv_ns=2, last=5.0)
    out = decode(StreamKey("binance", "BTC/USDT", Channel.TICKER), [raw("10-0", rec)])
    t = pa.Table.from_batches(list(out.batches.values()))
    assert t.column("last").to_pylist() == [5.0]
    assert math.isnan(t.column("bid").to_pylist()[0])


def test_bad_entries_are_reported_and_left_out() -> None:
    sk = StreamKey("binance", "BTC/USDT", Channel.TRADES)
    entries = [
        raw("10-0", trade(0)),
        [b"10-1", [b"d", b"\xc1garbage", b"h", b"x"]],
        raw("10-2", trade(2, symbol="ETH/USDT")),  # another market's record in this stream
        raw("10-3", ticker(3)),  # another channel's
        [
            b"10-4",
            [b"d", msgpack.packb([99, "T", "binance", "BTC/USDT", 1, 2, "1", 1.0, 1.0, None])],
        ],
        [b"10-5", None],  # pending, deleted by MAXLEN since
        raw("10-6", trade(6)),
    ]
    out = decode(sk, entries)
    assert out.rows == 2 and out.trimmed == 1
    assert [i for i, _ in out.invalid] == [b"10-1", b"10-2", b"10-3", b"10-4"]
    assert "schema version 99" in out.invalid[3][1]
    t = pa.Table.from_batches(list(out.batches.values()))
    assert t.column("id").to_pylist() == ["0", "6"]
    assert t.column("entry_seq").to_pylist() == [0, 6]


def test_rows_are_split_by_the_utc_date_of_their_exchange_time() -> None:
    midnight = 1_700_006_400_000  # 2023-11-15T00:00:00Z
    assert midnight % DAY_MS == 0
    recs = [trade(0).model_copy(update={"ts_ms": midnight + d}) for d in (-1, 0, -2, 5)]
    out = decode(
        StreamKey("binance", "BTC/USDT", Channel.TRADES),
        [raw(f"20-{i}", r) for i, r in enumerate(recs)],
    )
    assert {d: b.column("ts_ms").to_pylist() for d, b in out.batches.items()} == {
        "2023-11-14": [midnight - 1, midnight - 2],
        "2023-11-15": [midnight, midnight + 5],
    }
    one = split_by_date(out.batches["2023-11-15"])
    assert list(one) == ["2023-11-15"]


def test_dates_paths_and_names() -> None:
    assert date_of(0) == "1970-01-01"
    assert date_of(1_700_006_400_000 - 1) == "2023-11-14"
    assert date_of(2**63 - 1) == "9999-12-31"  # times past year 9999 share its last day
    assert day_of("2023-11-15") * DAY_MS == 1_700_006_400_000
    assert partition_dir(Path("/a"), "trades", "okx", "2023-11-15") == Path(
        "/a/channel=trades/exchange=okx/date=2023-11-15"
    )
    assert part_name(12) == "part-0000000012.parquet" and commit_of(part_name(12)) == 12
    assert commit_of("foo.parquet") is None and commit_of(".part-0000000012.parquet.tmp") is None
    assert valid_name("binance") and valid_name("gate.io") and not valid_name("a/b")
    assert not valid_name("..") and not valid_name("")


def test_entry_ids_parse_strictly() -> None:
    assert parse_id(b"1700000000000-3") == (1_700_000_000_000, 3)
    for bad in (b"17", b"a-1", b"1-", b"-1", b"1-2-3"):
        with pytest.raises(ValueError):
            parse_id(bad)


def test_a_foreign_schema_is_named() -> None:
    assert schema_problem(file_schema(Channel.TRADES), Channel.TRADES) is None
    assert schema_problem(pa.schema([("x", pa.int64())]), Channel.TRADES) == "no column 'symbol'"
    retyped = file_schema(Channel.TRADES).set(1, pa.field("ts_ms", pa.string()))
    assert "column 'ts_ms' is string" in str(schema_problem(retyped, Channel.TRADES))
    # what a Parquet round trip changes (list item name, dictionary index width) is the same
    book = file_schema(Channel.BOOK)
    i = book.get_field_index("bids")
    renamed = pa.list_(pa.field("element", book.field("bids").type.value_type))
    assert schema_problem(book.set(i, pa.field("bids", renamed)), Channel.BOOK) is None
