"""The derivatives channels on the wire: models, codec (``d`` and ``h``), decode checks, and the
ring-buffer rows a consumer builds from them."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from consumers.columns import COLUMNS, NO_TIME, row_at
from consumers.ringbuffer import RingBuffer
from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.keys import parse_stream_key, stream_key
from marketbus.models import (
    DERIVATIVES,
    MODELS,
    SCHEMA_VERSION,
    Channel,
    Funding,
    Liquidation,
    MarkPrice,
    OpenInterest,
    trusted,
)
from tests.derivatives_data import PERP, funding, liquidation, mark, open_interest

SAMPLES = [
    funding(1),
    funding(2, predicted_rate=-0.0002, next_funding_ms=None, interval_ms=None),
    mark(3),
    mark(4, index_price=None),
    open_interest(5),
    open_interest(6, value=None, contracts=0.0),
    liquidation(7),
    liquidation(8),
]


def test_each_new_channel_has_its_model_and_a_stream_key() -> None:
    assert {MODELS[c] for c in DERIVATIVES} == {Funding, MarkPrice, OpenInterest, Liquidation}
    key = stream_key("bybit", PERP, "funding")
    assert key == "md:{bybit:BTC/USDT:USDT}:funding"
    assert parse_stream_key(key) == ("bybit", PERP, Channel.FUNDING)
    assert parse_stream_key("md:{okx:BTC/USDT:USDT}:open_interest").channel is (
        Channel.OPEN_INTEREST
    )


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: f"{r.channel}-{r.ts_ms % 10}")
def test_round_trip_is_exact_and_keeps_the_schema_version(record: Any) -> None:
    fields = codec.encode(record)
    arr = msgpack.unpackb(fields["d"])
    assert arr[0] == SCHEMA_VERSION and arr[1] == codec.KIND_OF[record.channel]
    assert codec.decode_fields(fields) == record
    assert type(codec.decode(codec.pack(record))) is type(record)


@pytest.mark.parametrize("record", SAMPLES, ids=lambda r: f"{r.channel}-{r.ts_ms % 10}")
def test_trusted_builds_what_validation_builds(record: Any) -> None:
    given = {k: getattr(record, k) for k in record.__pydantic_fields_set__}
    fast = trusted(type(record), given)
    assert fast == record == type(record).model_construct(**given)
    assert repr(fast) == repr(record) and hash(fast) == hash(record)


def test_human_lines_name_symbol_values_and_time() -> None:
    f = funding(0, rate=-0.000125, next_funding_ms=1_700_006_400_000, predicted_rate=0.0001)
    assert codec.human(f) == (
        "BTC/USDT:USDT funding -0.000125 next 2023-11-15T00:00:00.000Z predicted 0.0001 "
        "2023-11-14T22:13:20.000Z"
    )
    assert codec.human(mark(0, index_price=None)) == (
        "BTC/USDT:USDT mark 100.0 index - 2023-11-14T22:13:20.000Z"
    )
    assert codec.human(open_interest(0)) == (
        "BTC/USDT:USDT open interest 1000.0 value 100000.0 2023-11-14T22:13:20.000Z"
    )
    assert codec.human(liquidation(1)) == (
        "BTC/USDT:USDT liquidation sell 0.5 @ 100.0 2023-11-14T22:13:20.001Z"
    )


@pytest.mark.parametrize(
    ("make", "bad"),
    [
        (funding, {"rate": math.inf}),
        (funding, {"rate": math.nan}),
        (funding, {"interval_ms": 0}),
        (funding, {"next_funding_ms": -1}),
        (mark, {"mark_price": 0.0}),
        (mark, {"index_price": -1.0}),
        (open_interest, {"contracts": -1.0}),
        (open_interest, {"value": math.inf}),
        (liquidation, {"side": None}),
        (liquidation, {"side": "long"}),
        (liquidation, {"price": 0.0}),
        (liquidation, {"amount": -0.5}),
    ],
)
def test_models_refuse_impossible_values(make: Any, bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        make(1, **bad)


def _tampered(record: Any, position: int, value: Any) -> bytes:
    arr = msgpack.unpackb(codec.pack(record))
    arr[position] = value
    out: bytes = msgpack.packb(arr)
    return out


@pytest.mark.parametrize(
    ("record", "position", "value", "says"),
    [
        (funding(1), 6, "0.1", "rate"),
        (funding(1), 6, math.nan, "rate"),
        (funding(1), 7, 1.5, "next_funding_ms"),
        (funding(1), 8, math.inf, "predicted_rate"),
        (funding(1), 9, 0, "interval_ms"),
        (mark(1), 6, None, "mark_price"),
        (mark(1), 7, 0.0, "index_price"),
        (open_interest(1), 6, -2.0, "contracts"),
        (open_interest(1), 7, True, "value"),
        (liquidation(1), 6, "short", "side"),
        (liquidation(1), 7, -1.0, "price"),
        (liquidation(1), 8, None, "amount"),
    ],
)
def test_decode_refuses_bad_values_naming_them(
    record: Any, position: int, value: Any, says: str
) -> None:
    with pytest.raises(DecodeError, match=says):
        codec.unpack(_tampered(record, position, value))


@pytest.mark.parametrize("record", [funding(1), mark(1), open_interest(1), liquidation(1)])
def test_decode_refuses_a_wrong_arity(record: Any) -> None:
    arr = msgpack.unpackb(codec.pack(record))
    with pytest.raises(DecodeError, match="values, expected"):
        codec.unpack(msgpack.packb([*arr, 1.0]))


def test_rows_hold_the_values_with_nan_and_minus_one_for_missing_ones() -> None:
    def row_of(record: Any) -> dict[str, Any]:
        ch, values = codec.unpack(codec.pack(record))
        names = [c.name for c in COLUMNS[ch]]
        return dict(zip(names, row_at(ch, values, 42), strict=True))

    r = row_of(funding(1, predicted_rate=None, next_funding_ms=None, interval_ms=None))
    assert r["rate"] == 0.0 and r["entry_ms"] == 42
    assert r["next_funding_ms"] == r["interval_ms"] == NO_TIME and math.isnan(r["predicted_rate"])
    r = row_of(funding(2, predicted_rate=0.0003))
    assert (r["rate"], r["next_funding_ms"], r["predicted_rate"], r["interval_ms"]) == (
        0.0001, 1_700_006_400_000, 0.0003, 28_800_000,
    )  # fmt: skip
    r = row_of(mark(1, index_price=None))
    assert r["mark_price"] == 101.0 and math.isnan(r["index_price"])
    r = row_of(open_interest(1))
    assert (r["contracts"], r["value"]) == (1001.0, 100_100.0)
    r = row_of(liquidation(1))
    assert (r["side"], r["price"], r["amount"], r["ts_ms"]) == (
        "sell",
        100.0,
        0.5,
        1_700_000_000_001,
    )


@pytest.mark.parametrize("channel", sorted(DERIVATIVES))
def test_a_ring_buffer_of_each_channel_exports_its_columns(channel: Channel) -> None:
    make = {
        Channel.FUNDING: funding, Channel.MARK: mark,
        Channel.OPEN_INTEREST: open_interest, Channel.LIQUIDATIONS: liquidation,
    }[channel]  # fmt: skip
    rb = RingBuffer(COLUMNS[channel], capacity=8, time_column="ts_ms")
    records = [make(i) for i in range(12)]
    for i, r in enumerate(records):
        ch, values = codec.unpack(codec.pack(r))
        rb.append(row_at(ch, values, 1000 + i))
    table = rb.latest(8)
    assert table.column_names == [c.name for c in COLUMNS[channel]]
    assert table.column("ts_ms").to_pylist() == [r.ts_ms for r in records[-8:]]
    assert rb.unknown_categories == 0
    if channel is Channel.LIQUIDATIONS:
        assert table.column("side").to_pylist() == [r.side for r in records[-8:]]
