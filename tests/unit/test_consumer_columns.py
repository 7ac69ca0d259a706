"""Decoded book and candle values as ring-buffer rows, and markets spelled several ways."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.columns import COLUMNS, NO_SEQ, row, row_at
from consumers.markets import MarketIndex, normalize_symbol, plan
from consumers.ringbuffer import RingBuffer
from marketbus import codec
from marketbus.keys import StreamKey, stream_key
from marketbus.models import INTERVALS_MS, BookTop, Candle, Channel, Record
from tests.factories import ticker, trade


def book(
    bids: tuple[tuple[float, float], ...] = ((100.0, 1.0), (99.5, 2.0)),
    asks: tuple[tuple[float, float], ...] = ((100.5, 3.0), (101.0, 4.0)),
    seq: int | None = 7,
) -> BookTop:
    return BookTop(
        exchange="okx", symbol="BTC/USDT", ts_ms=1_000, recv_ns=2_000, seq=seq, bids=bids, asks=asks
    )


def candle(**kw: object) -> Candle:
    base: dict[str, object] = dict(
        exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_030_000,
        recv_ns=1_700_000_030_001_000_000, interval="1m", open_ms=1_700_000_000_000,
        open=10.0, high=12.0, low=9.0, close=11.0, volume=5.0, quote_volume=55.0, closed=False,
    )  # fmt: skip
    base.update(kw)
    return Candle(**base)


def as_dict(channel: Channel, r: tuple[object, ...]) -> dict[str, object]:
    names = [c.name for c in COLUMNS[channel]]
    assert len(r) == len(names)
    return dict(zip(names, r, strict=True))


def test_book_row_is_the_top_of_the_book() -> None:
    channel, values = codec.unpack(codec.pack(book()))
    assert as_dict(channel, row(channel, values, b"5-1")) == {
        "ts_ms": 1_000, "recv_ns": 2_000, "entry_ms": 5, "seq": 7,
        "bid": 100.0, "bid_size": 1.0, "ask": 100.5, "ask_size": 3.0,
    }  # fmt: skip


@pytest.mark.parametrize("side", ["bids", "asks", "both"])
def test_book_row_empty_side_is_nan_and_no_seq_is_minus_one(side: str) -> None:
    b = book(
        bids=() if side in ("bids", "both") else ((100.0, 1.0),),
        asks=() if side in ("asks", "both") else ((101.0, 1.0),),
        seq=None,
    )
    channel, values = codec.unpack(codec.pack(b))
    d = as_dict(channel, row_at(channel, values, 5))
    assert d["seq"] == NO_SEQ
    assert math.isnan(d["bid"]) == (side != "asks")  # type: ignore[arg-type]
    assert math.isnan(d["bid_size"]) == (side != "asks")  # type: ignore[arg-type]
    assert math.isnan(d["ask"]) == (side != "bids")  # type: ignore[arg-type]
    assert math.isnan(d["ask_size"]) == (side != "bids")  # type: ignore[arg-type]


def test_candle_row_keeps_every_value() -> None:
    c = candle(closed=True)
    channel, values = codec.unpack(codec.pack(c))
    assert as_dict(channel, row(channel, values, "1700000030002-0")) == {
        "ts_ms": c.ts_ms, "recv_ns": c.recv_ns, "entry_ms": 1_700_000_030_002, "interval": "1m",
        "open_ms": c.open_ms, "open": 10.0, "high": 12.0, "low": 9.0, "close": 11.0,
        "volume": 5.0, "quote_volume": 55.0, "closed": True,
    }  # fmt: skip
    channel, values = codec.unpack(codec.pack(candle(quote_volume=None)))
    assert math.isnan(as_dict(channel, row_at(channel, values, 1))["quote_volume"])  # type: ignore[arg-type]


def test_integer_prices_from_a_foreign_writer_become_floats() -> None:
    data = codec._packer.pack([1, "B", "okx", "BTC/USDT", 1, 2, None, [100, 1], [101, 2]])
    channel, values = codec.unpack(data)
    r = row_at(channel, values, 3)
    assert r[4:] == (100.0, 1.0, 101.0, 2.0)
    assert all(type(v) is float for v in r[4:])


@pytest.mark.parametrize("channel", list(Channel))
def test_every_channel_has_columns_the_buffer_accepts(channel: Channel) -> None:
    records: dict[Channel, Record] = {
        Channel.TRADES: trade(1), Channel.TICKER: ticker(1), Channel.BOOK: book(),
        Channel.CANDLES: candle(),
    }  # fmt: skip
    record = records[channel]
    ch, values = codec.unpack(codec.pack(record))
    rb = RingBuffer(COLUMNS[ch], capacity=4, time_column="ts_ms")
    rb.append(row_at(ch, values, 9))
    rb.extend([row_at(ch, values, 10)])
    assert rb.table().column("entry_ms").to_pylist() == [9, 10]
    assert rb.unknown_categories == 0


def test_every_interval_is_a_category() -> None:
    cats = {c.name: c.categories for c in COLUMNS[Channel.CANDLES]}["interval"]
    assert set(cats) == set(INTERVALS_MS)


@given(
    bids=st.lists(st.tuples(st.floats(1, 1e6), st.floats(0, 1e6)), max_size=20),
    asks=st.lists(st.tuples(st.floats(1, 1e6), st.floats(0, 1e6)), max_size=20),
)
def test_book_row_top_matches_the_model(
    bids: list[tuple[float, float]], asks: list[tuple[float, float]]
) -> None:
    # make a valid book from arbitrary levels: unique sorted prices, asks above bids
    bid_px = sorted({p for p, _ in bids}, reverse=True)
    ask_px = sorted({p + 1e6 for p, _ in asks})
    b = book(
        bids=tuple((p, s) for p, (_, s) in zip(bid_px, bids, strict=False)),
        asks=tuple((p, s) for p, (_, s) in zip(ask_px, asks, strict=False)),
    )
    channel, values = codec.unpack(codec.pack(b))
    d = as_dict(channel, row_at(channel, values, 0))
    for side, best in (("bid", b.best_bid), ("ask", b.best_ask)):
        if best is None:
            assert math.isnan(d[side]) and math.isnan(d[f"{side}_size"])  # type: ignore[arg-type]
        else:
            assert (d[side], d[f"{side}_size"]) == best


# -- one market on several exchanges, spelled several ways ---------------------------------


def test_plan_follows_the_same_market_on_two_exchanges() -> None:
    out = plan(["binance:BTC/USDT", "okx:btc-usdt"], ["book", "candles"])
    assert set(out.values()) == {
        StreamKey(ex, "BTC/USDT", ch)
        for ex in ("binance", "okx")
        for ch in (Channel.BOOK, Channel.CANDLES)
    }
    assert stream_key("okx", "BTC/USDT", "book") in out


def test_plan_resolves_slashless_symbols_per_exchange() -> None:
    known = [StreamKey(ex, "BTC/USDT", Channel.BOOK) for ex in ("binance", "okx")]
    out = plan(["binance:BTCUSDT", "okx:btcusdt"], ["book"], known)
    assert sorted(out.values()) == sorted(known)


@pytest.mark.parametrize(
    "spelling", ["BTC/USDT", "btc/usdt", "BTC-USDT", "btc_usdt", "BTCUSDT", " btcusdt "]
)
def test_market_index_finds_every_spelling(spelling: str) -> None:
    keys = [StreamKey(ex, "BTC/USDT", Channel.BOOK) for ex in ("binance", "okx")]
    index = MarketIndex(keys)
    assert index.find("okx", spelling, "book") == keys[1]
    assert index.find("Binance", spelling, Channel.BOOK) == keys[0]
    assert index.find("okx", spelling, "ticker") is None
    assert index.find("kraken", spelling, "book") is None


def test_market_index_prefers_the_exact_symbol() -> None:
    # a swap and a spot market share the slashless base: the exact spelling wins
    spot = StreamKey("okx", "BTC/USDT", Channel.BOOK)
    swap = StreamKey("okx", "BTC/USDT:USDT", Channel.BOOK)
    index = MarketIndex([spot, swap])
    assert index.find("okx", "BTC/USDT:USDT", "book") == swap
    assert index.find("okx", "btc-usdt", "book") == spot


def test_normalize_symbol() -> None:
    assert normalize_symbol(" eth_btc ") == "ETH/BTC"
    assert normalize_symbol("BTCUSDT") == "BTCUSDT"
