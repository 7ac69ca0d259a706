"""Decoded values as ring-buffer rows and columns (one record or a whole batch), markets spelled
several ways, and the consumer's batch path."""

from __future__ import annotations

import asyncio
import gc
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from consumers import Consumer, streams
from consumers.columns import COLUMNS, NO_SEQ, batch_columns, row, row_at
from consumers.ingest import SMALL_BATCH, Ingest
from consumers.markets import MarketIndex, normalize_symbol, plan
from consumers.ringbuffer import RingBuffer
from consumers.streams import gc_paused, id_numbers, payload, payloads
from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.keys import StreamKey, stream_key
from marketbus.models import INTERVALS_MS, BookTop, Candle, Channel, Record
from tests import derivatives_data
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
        exchange="binance",
        symbol="BTC/USDT",
        ts_ms=1_700_000_030_000,
        recv_ns=1_700_000_030_001_000_000,
        interval="1m",
        open_ms=1_700_000_000_000,
        open=10.0,
        high=12.0,
        low=9.0,
        close=11.0,
        volume=5.0,
        quote_volume=55.0,
        closed=False,
    )
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
        Channel.CANDLES: candle(), Channel.FUNDING: derivatives_data.funding(1),
        Channel.MARK: derivatives_data.mark(1),
        Channel.OPEN_INTEREST: derivatives_data.open_interest(1),
        Channel.LIQUIDATIONS: derivatives_data.liquidation(1),
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


# -- whole batches: codec.unpack_columns + batch_columns, and the consumer's batch path -----

WEIRD: list[Any] = [
    None, True, False, 0, 1, -1, 2, 0.0, -0.0, 1.5, -2.5, math.nan, math.inf, -math.inf,
    2**63 - 1, 2**63, 2**64 - 1, -(2**63), 1e308, "", "x", "T", "K", "buy", "sell", "hold",
    b"bytes", [1, 2], {"a": 1},
]  # fmt: skip


def _array(channel: Channel, i: int) -> list[Any]:
    record = trade(i) if channel is Channel.TRADES else ticker(i)
    return codec.unpack(codec.pack(record))[1]


@st.composite
def batches(draw: st.DrawFn) -> tuple[Channel, list[bytes]]:
    """Payloads of one stream: valid records, some with one value replaced by an odd one,
    a record of the other channel, or not msgpack at all."""
    channel = draw(st.sampled_from([Channel.TRADES, Channel.TICKER]))
    other = Channel.TICKER if channel is Channel.TRADES else Channel.TRADES
    out = []
    for i in range(draw(st.integers(1, 6))):
        arr = _array(channel, i)
        what = draw(st.sampled_from(["ok", "ok", "ok", "replace", "cut", "other", "garbage"]))
        if what == "replace":
            arr[draw(st.integers(0, len(arr) - 1))] = draw(st.sampled_from(WEIRD))
        elif what == "cut":
            arr = arr[: draw(st.integers(0, len(arr) - 1))]
        elif what == "other":
            arr = _array(other, i)
        data = codec._packer.pack(arr)
        if what == "garbage":
            data = draw(st.sampled_from([b"", b"\xc1", data[:-1], data + b"\x00", b"\x93\x01"]))
        out.append(data)
    return channel, out


def _one_by_one(channel: Channel, payloads: list[bytes]) -> list[list[Any]] | None:
    arrays = []
    for p in payloads:
        try:
            ch, values = codec.unpack(p)
        except DecodeError:
            return None
        if ch is not channel:
            return None
        arrays.append(values)
    return arrays


@settings(max_examples=400, deadline=None)
@given(batches())
def test_unpack_columns_accepts_exactly_what_unpack_accepts(
    batch: tuple[Channel, list[bytes]],
) -> None:
    channel, payloads = batch
    cols = codec.unpack_columns(channel, payloads)
    arrays = _one_by_one(channel, payloads)
    if arrays is None:
        assert cols is None  # sound: never a batch with a record unpack rejects
    elif cols is not None:  # (a batch it cannot prove valid goes one by one: also fine)
        assert [list(r) for r in zip(*cols, strict=True)] == arrays


@pytest.mark.parametrize("channel", [Channel.TRADES, Channel.TICKER])
def test_unpack_columns_takes_valid_batches(channel: Channel) -> None:
    records = [trade(i) if channel is Channel.TRADES else ticker(i) for i in range(50)]
    payloads = [codec.pack(r) for r in records]
    cols = codec.unpack_columns(channel, payloads)
    assert cols is not None
    assert [list(r) for r in zip(*cols, strict=True)] == [codec.unpack(p)[1] for p in payloads]
    assert codec.unpack_columns(Channel.BOOK, [codec.pack(book())]) is None  # not batched
    assert codec.unpack_columns(channel, []) is None


prices_st = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)


@given(
    st.lists(
        st.tuples(
            prices_st,
            st.floats(0, 1e12),
            st.sampled_from(["buy", "sell", None]),
            st.one_of(st.integers(0, 2**70).map(str), st.text(min_size=1, max_size=8)),
            st.integers(0, 2**62),
            st.none() | prices_st,
        ),
        min_size=1,
        max_size=20,
    )
)
@settings(max_examples=100, deadline=None)
def test_batch_columns_store_what_rows_store(values: list[tuple[Any, ...]]) -> None:
    trades = [
        codec._packer.pack([1, "T", "okx", "BTC/USDT", ts, ts + 1, tid, p, a, side])
        for p, a, side, tid, ts, _ in values
    ]
    tickers = [
        codec._packer.pack([1, "K", "okx", "BTC/USDT", ts, ts, last, *[p] * 10])
        for p, _, _, _, ts, last in values
    ]
    entry_ms = np.arange(len(values), dtype=np.int64)
    for channel, datas in ((Channel.TRADES, trades), (Channel.TICKER, tickers)):
        cols = codec.unpack_columns(channel, datas)
        assert cols is not None
        by_rows = RingBuffer(COLUMNS[channel], capacity=8)
        by_rows.extend(
            [
                row_at(channel, codec.unpack(p)[1], int(ms))
                for p, ms in zip(datas, entry_ms, strict=True)
            ]
        )
        by_columns = RingBuffer(COLUMNS[channel], capacity=8)
        by_columns.extend_columns(batch_columns(channel, cols, entry_ms))
        assert by_columns.to_pandas().equals(by_rows.to_pandas())  # NaN equal to NaN


# -- the consumer's read loop, fed by a fake client at the redis seam --------------------------


class ScriptedRedis:
    """Answers each XREAD with the next scripted reply, then blocks like an idle stream;
    XREVRANGE (the reset check of a quiet stream) with the newest entry handed out."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.calls: list[dict[str, Any]] = []
        self.newest: dict[str, bytes] = {}

    async def xread(self, streams: dict[str, str], count: int, block: int | None) -> Any:
        self.calls.append({"streams": dict(streams), "block": block, "gc": gc.isenabled()})
        if self.replies:
            reply = self.replies.pop(0)
            for k, entries in reply.items() if isinstance(reply, dict) else reply:
                if entries:
                    self.newest[k.decode()] = entries[-1][0]
            return reply
        await asyncio.sleep((block or 0) / 1000)
        return []

    async def xrevrange(self, key: str, hi: str, lo: str, count: int) -> list[Any]:
        return [(self.newest[key], {})] if key in self.newest else []


KEY = stream_key("binance", "BTC/USDT", "trades")


def _entry(i: int, *, raw: bool, data: bytes | None = None) -> tuple[bytes, Any]:
    eid = f"{1_700_000_000_000 + i}-{i % 3}".encode()
    d = codec.pack(trade(i)) if data is None else data
    return (eid, [b"d", d, b"h", b"line"]) if raw else (eid, {b"d": d, b"h": b"line"})


async def _consume(
    replies: list[Any], callback: Any = None, redis: ScriptedRedis | None = None, **kw: Any
) -> Consumer:
    redis = redis or ScriptedRedis(replies)
    expect = kw.pop("expect", 0)
    c = Consumer(redis, ["binance:BTC/USDT"], ["trades"], start_ids={KEY: "0-0"}, block_ms=5, **kw)
    if callback is not None:
        c.on_record(callback)
    await c.start()
    try:
        async with asyncio.timeout(5):
            while redis.replies or c.stats.received + c.stats.invalid < expect:
                await asyncio.sleep(0.005)
            await asyncio.sleep(0.02)
    finally:
        await c.stop()
    return c


@pytest.mark.parametrize(
    ("raw", "resp3"),
    [(True, False), (True, True), (False, False)],
    ids=["raw", "raw-resp3", "redis-py"],
)
async def test_batches_with_bad_and_repeated_entries_store_each_good_entry_once(
    raw: bool, resp3: bool
) -> None:
    n = 2 * SMALL_BATCH + 4
    good = [_entry(i, raw=raw) for i in range(n)]
    bad = _entry(1000, raw=raw, data=b"\xc1")
    foreign = _entry(1001, raw=raw, data=codec.pack(ticker(1)))
    a, b = SMALL_BATCH, SMALL_BATCH + 2
    batches = [
        good[:a],  # clean and not small: column-wise
        [*good[a:b], bad, good[b]],  # one bad entry: row by row
        [good[b - 1], good[b], foreign, *good[b + 1 :]],  # overlap + a foreign record
    ]
    assert len(batches[2]) >= SMALL_BATCH  # the column path is asked, and refuses
    replies = [{KEY.encode(): b} if resp3 else [[KEY.encode(), b]] for b in batches]
    with capture_logs() as logs:
        c = await _consume(replies)
    buf = c.buffer("binance", "BTC/USDT", "trades")
    assert buf.table().column("id").to_pylist() == [str(i) for i in range(n)]
    assert buf.table().column("entry_ms").to_pylist() == [1_700_000_000_000 + i for i in range(n)]
    assert c.stats.invalid == 2
    assert c.stats.received == a + 3 + (n - b + 1)  # valid entries read, repeats included
    assert c.last_ids[KEY] == good[-1][0].decode()
    skipped = [e for e in logs if e["event"] == "invalid_entry_skipped"]
    assert skipped and skipped[0]["stream"] == KEY and skipped[0]["id"] == bad[0].decode()


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "redis-py"])
async def test_an_overlapping_batch_of_valid_entries_stores_each_entry_once(raw: bool) -> None:
    """A reply that repeats entries the buffer holds, every entry valid and of the stream's
    channel (so the column path could take it): the repeats are not stored again."""
    n = 3 * SMALL_BATCH
    good = [_entry(i, raw=raw) for i in range(n)]
    replies = [[[KEY.encode(), good[: 2 * SMALL_BATCH]]], [[KEY.encode(), good[SMALL_BATCH:]]]]
    c = await _consume(replies)
    buf = c.buffer("binance", "BTC/USDT", "trades")
    assert buf.table().column("id").to_pylist() == [str(i) for i in range(n)]
    assert buf.table().column("entry_ms").to_pylist() == [1_700_000_000_000 + i for i in range(n)]
    assert (c.stats.received, c.stats.invalid) == (2 * SMALL_BATCH + 2 * SMALL_BATCH, 0)


@pytest.mark.parametrize("size", [1, 2, SMALL_BATCH - 1, SMALL_BATCH, SMALL_BATCH + 1])
async def test_small_and_large_batches_store_the_same_rows(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches below SMALL_BATCH go row by row (cheaper for the one-to-few entries a live
    read brings), larger ones column-wise: the buffer and the candles are the same."""
    columnwise: list[int] = []
    real = Ingest._ingest_columns

    def spy(self: Ingest, key: str, entries: Any) -> bool:
        done = real(self, key, entries)
        columnwise.extend([len(entries)] if done else [])
        return done

    monkeypatch.setattr(Ingest, "_ingest_columns", spy)
    # these trades are from 2023: the wall clock would close their candle after the first read
    monkeypatch.setattr(Ingest, "_advance_candles", lambda self: None)
    entries = [_entry(i, raw=True) for i in range(3 * SMALL_BATCH + 1)]
    chunks = [entries[i : i + size] for i in range(0, len(entries), size)]
    split = await _consume([[[KEY.encode(), ch]] for ch in chunks], candles=["1m"])
    assert columnwise == [size] * (len(entries) // size) * (size >= SMALL_BATCH)
    columnwise.clear()
    whole = await _consume([[[KEY.encode(), entries]]], candles=["1m"])
    assert columnwise == [len(entries)]
    a = split.buffer("binance", "BTC/USDT", "trades").table()
    assert a.num_rows == len(entries)
    assert a.equals(whole.buffer("binance", "BTC/USDT", "trades").table())
    assert (
        split.candles("binance", "BTC/USDT")
        .table("1m")
        .equals(whole.candles("binance", "BTC/USDT").table("1m"))
    )
    assert split.stats.received == whole.stats.received == len(entries)


async def test_batch_path_feeds_candles_like_the_row_path() -> None:
    entries = [_entry(i, raw=True) for i in range(30)]
    fast = await _consume([[[KEY.encode(), entries]]], candles=["1m"])
    slow = await _consume(
        [[[KEY.encode(), [*entries[:1], _entry(99, raw=True, data=b""), *entries[1:]]]]],
        candles=["1m"],
    )
    a = fast.candles("binance", "BTC/USDT").table("1m")
    b = slow.candles("binance", "BTC/USDT").table("1m")
    assert a.num_rows == 1 and a.equals(b)
    assert (
        fast.buffer("binance", "BTC/USDT", "trades")
        .table()
        .equals(slow.buffer("binance", "BTC/USDT", "trades").table())
    )


async def test_reads_while_behind_do_not_block_and_pause_the_gc_when_asked() -> None:
    """Catching up (at start, and while a stream fills COUNT) the read returns at once and,
    with ``pause_gc=True``, the GC is paused for it and its ingest; caught up, it blocks
    with the GC on."""
    replies: list[Any] = [
        [[KEY.encode(), [_entry(i, raw=True) for i in range(3)]]],  # full: more to come
        [[KEY.encode(), [_entry(3, raw=True)]]],  # the rest
    ]
    redis = ScriptedRedis(replies)
    c = await _consume([], redis=redis, count=3, expect=4, pause_gc=True)
    assert [(call["block"], call["gc"]) for call in redis.calls[:3]] == [
        (None, False),
        (None, False),
        (5, True),
    ]
    assert gc.isenabled()
    assert len(c.buffer("binance", "BTC/USDT", "trades")) == 4


@pytest.mark.parametrize("how", ["default", "callbacks", "pause_gc=False"])
async def test_gc_stays_on_by_default_with_callbacks_or_when_asked(how: str) -> None:
    """A library does not change its host's GC unless asked: by default, and with callbacks
    even when asked, every read runs with the GC on (reads while behind still do not
    block)."""
    redis = ScriptedRedis([[[KEY.encode(), [_entry(i, raw=True) for i in range(3)]]]])
    if how == "default":
        c = await _consume([], redis=redis, count=3, expect=3)
        assert c.pause_gc is False
    elif how == "callbacks":
        await _consume([], redis=redis, callback=lambda _r: None, count=3, expect=3, pause_gc=True)
    else:
        await _consume([], redis=redis, pause_gc=False, count=3, expect=3)
    assert [call["block"] for call in redis.calls[:3]] == [None, None, 5]
    assert all(call["gc"] for call in redis.calls)


class NewestRedis:
    """Answers XREVRANGE ... COUNT 1 with a given newest entry id per stream."""

    def __init__(self, newest: dict[str, bytes]) -> None:
        self.newest = newest

    async def xrevrange(self, key: str, hi: str, lo: str, count: int) -> list[Any]:
        return [(self.newest[key], {})] if key in self.newest else []


@pytest.mark.parametrize(
    ("last", "newest", "held", "expected"),
    [
        ("5-1", b"5-1", (5, 1), ("5-1", (5, 1), 0)),  # reaches the last id read: fine
        ("5-1", b"9-0", (5, 1), ("5-1", (5, 1), 0)),  # written since: XREAD gets it
        ("5-1", None, (5, 1), ("0-0", None, 1)),  # gone: from the start, any id taken
        ("5-1", b"3-0", (5, 1), ("3-0", (3, 0), 1)),  # went back: on from its newest
        ("5-1", b"3-0", (2, 0), ("3-0", (2, 0), 1)),  # (the last entries read were invalid)
        ("0-0", None, None, ("0-0", None, 0)),  # nothing read yet: nothing to check
        ("$", None, None, ("$", None, 0)),
    ],
)
async def test_a_plain_stream_is_reset_when_gone_or_behind_the_last_id_read(
    last: str,
    newest: bytes | None,
    held: tuple[int, int] | None,
    expected: tuple[str, tuple[int, int] | None, int],
) -> None:
    c = Consumer(NewestRedis({KEY: newest} if newest else {}), ["binance:BTC/USDT"], ["trades"])
    c.last_ids[KEY] = last
    if held is not None:
        c._buffer_last[KEY] = held
    with capture_logs() as logs:
        await c._check_resets([KEY])
    assert (c.last_ids[KEY], c._buffer_last.get(KEY), c.stats.resets) == expected
    resets = [(e["stream"], e["last_id"], e["resume_from"]) for e in logs]
    assert resets == ([(KEY, last, expected[0])] if expected[2] else [])


def test_gc_paused_nests_and_keeps_a_gc_the_bot_turned_off() -> None:
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer pause still holds
    assert gc.isenabled()
    with gc_paused(False):
        assert gc.isenabled()
    gc.disable()
    try:
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # not turned on behind the bot's back
    finally:
        gc.enable()


def test_payloads_and_ids_of_odd_entries_go_row_by_row() -> None:
    d = codec.pack(trade(1))
    assert payloads(([b"d", d, b"h", b"x"], [b"d", d])) == [d, d]
    assert payloads(({b"d": d}, {b"d": d, b"h": b"x"})) == [d, d]
    assert payloads(([b"h", b"x", b"d", d],)) is None  # another field order
    assert payloads(([b"d"],)) is None
    assert payloads(({b"h": b"x"},)) is None
    assert payloads(([b"d", "str"],)) is None  # decode_responses=True
    assert payloads(([b"d", d], {b"d": d})) is None
    assert payload([b"h", b"x", b"d", d]) == d
    with pytest.raises(DecodeError, match="no 'd' field"):
        payload([b"h", b"x"])
    ms, seq = id_numbers((b"1-0", b"1700000000000-12")) or ((), ())
    assert list(ms) == [1, 1_700_000_000_000] and list(seq) == [0, 12]
    odd_ids = [
        b"5",
        b"1-2-3",
        "1-2",
        b"x-1",
        b"-5",
        b"5-",
        b"\xd9\xa1-1",
        b"99999999999999999999-1",
    ]
    for odd in odd_ids:
        assert id_numbers((b"1-1", odd)) is None


class Cycle:
    freed = 0

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        Cycle.freed += 1


class LitteringRedis(ScriptedRedis):
    """Leaves reference cycles behind at every read (inside the GC pause)."""

    made = 0
    # enough to make a young collection due at every read, whatever the interpreter's
    # threshold (700 on 3.11, 2,000 on 3.13)
    per_read = max(1000, 2 * gc.get_threshold()[0])

    async def xread(self, streams: dict[str, str], count: int, block: int | None) -> Any:
        for _ in range(self.per_read):
            Cycle()
        self.made += self.per_read
        return await super().xread(streams, count, block)


async def test_a_consumer_always_behind_still_lets_the_gc_run() -> None:
    """Every reply fills COUNT, so every read pauses the GC: the collections that came due
    run between reads (at the first allocation after each pause), never inside one."""
    per_reply, replies = 50, 8
    entries = [_entry(i, raw=True) for i in range(per_reply * replies)]
    redis = LitteringRedis(
        [[[KEY.encode(), entries[k : k + per_reply]]] for k in range(0, len(entries), per_reply)]
    )
    seen: list[int] = []

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            seen.append(streams._pauses)

    Cycle.freed = 0
    gc.callbacks.append(on_gc)
    try:
        c = await _consume([], redis=redis, count=per_reply, expect=len(entries), pause_gc=True)
    finally:
        gc.callbacks.remove(on_gc)
    assert len(c.buffer("binance", "BTC/USDT", "trades")) == len(entries)
    assert all(call["block"] is None and not call["gc"] for call in redis.calls[:replies])
    assert len(seen) >= replies and set(seen) == {0}
    # the cycles of all but the last read at least
    assert Cycle.freed >= (replies - 1) * LitteringRedis.per_read


# -- group mode through redis-py replies (a cluster, or a client without a pool) --------------


class ScriptedGroupRedis:
    """XREADGROUP answered from a script (redis-py's reply shapes), XACK and XAUTOCLAIM
    recorded; each XACK notes what the buffer held when it came."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.reads: list[dict[str, Any]] = []
        self.acks: list[tuple[str, list[bytes], int, int]] = []
        self.consumer: Consumer | None = None

    async def xgroup_create(self, *args: Any, **kw: Any) -> None:
        return None

    async def xautoclaim(self, *args: Any, **kw: Any) -> list[Any]:
        return [b"0-0", [], []]

    async def xreadgroup(
        self, group: str, name: str, streams: dict[str, str], count: int, block: int | None
    ) -> Any:
        self.reads.append({"streams": dict(streams), "block": block, "gc": gc.isenabled()})
        if self.replies:
            return self.replies.pop(0)
        await asyncio.sleep((block or 0) / 1000)
        return []

    async def xack(self, key: str, group: str, *ids: bytes) -> int:
        assert self.consumer is not None
        held = len(self.consumer.buffer("binance", "BTC/USDT", "trades"))
        self.acks.append((key, list(ids), held, self.consumer.stats.invalid))
        return len(ids)


@pytest.mark.parametrize("pause_gc", [True, False])
async def test_group_batches_through_redis_py_replies(pause_gc: bool) -> None:
    """Pending entries first (from id 0, then from the last one re-read), then new ones;
    each batch decoded at once and acknowledged with one XACK per stream after its ingest,
    invalid and deleted (trimmed) entries included; reads while behind do not block, and
    pause the GC when asked."""
    e = [_entry(i, raw=False) for i in range(12)]
    bad = _entry(50, raw=False, data=b"\xc1")
    gone: tuple[bytes, Any] = (f"{1_700_000_000_000 + 2}-9".encode(), {})  # trimmed since
    redis = ScriptedGroupRedis(
        [
            [[KEY.encode(), [e[0], e[1], gone]]],  # own pending entries
            [[KEY.encode(), []]],  # none left
            [[KEY.encode(), e[2:5]]],  # new, full (count=3): more to come
            [[KEY.encode(), [e[5], bad, e[6]]]],  # full, one bad entry: row by row
            [[KEY.encode(), e[7:9]]],  # the rest
        ]
    )
    c = Consumer(redis, ["binance:BTC/USDT"], ["trades"], start_ids={KEY: "0-0"}, block_ms=5,
                 count=3, group="bots", name="b1", pause_gc=pause_gc)  # fmt: skip
    redis.consumer = c
    with capture_logs() as logs:
        await c.start()
        try:
            async with asyncio.timeout(5):
                while redis.replies or c.stats.acked < 11:
                    await asyncio.sleep(0.005)
        finally:
            await c.stop()
    behind = not pause_gc  # the GC while behind: off only when asked
    assert [(r["streams"][KEY], r["block"], r["gc"]) for r in redis.reads[:6]] == [
        ("0", None, behind),
        (gone[0].decode(), None, behind),
        (">", None, behind),
        (">", None, behind),
        (">", None, behind),
        (">", 5, True),
    ]
    ids = [x[0] for x in e]  # below, the deleted entry is acked first
    assert [(k, a) for k, a, _, _ in redis.acks] == [
        (KEY, [gone[0], ids[0], ids[1]]),
        (KEY, ids[2:5]),
        (KEY, [ids[5], bad[0], ids[6]]),
        (KEY, ids[7:9]),
    ]
    assert [(held, invalid) for _, _, held, invalid in redis.acks] == [
        (2, 0), (5, 0), (7, 1), (9, 1),
    ]  # fmt: skip
    assert c.buffer("binance", "BTC/USDT", "trades").table()["id"].to_pylist() == [
        str(i) for i in range(9)
    ]
    assert (c.stats.received, c.stats.invalid, c.stats.acked) == (9, 1, 11)
    skipped = [x for x in logs if x["event"] == "invalid_entry_skipped"]
    assert [(x["stream"], x["id"]) for x in skipped] == [(KEY, bad[0].decode())]
