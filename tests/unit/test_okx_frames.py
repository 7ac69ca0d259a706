"""The fake OKX's pure parts: frame builders, the checksum, the book, the two sources.

The checksum is checked three ways: OKX's documented examples (strings and values), ccxt's own
`crc32`, and every checksum real OKX sent in the recording.
"""

from __future__ import annotations

import itertools
import json
from collections import Counter
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from fake_exchange.okx import frames as of
from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.sources import (
    SEQ_START,
    CandleBuilder,
    OkxEvent,
    OkxReplaySource,
    OkxSyntheticSource,
    load_okx_recording,
    okx_recording,
)

T0 = 1_700_000_000_000


def clock() -> int:
    return T0


# ----------------------------------------------------------------------------- checksum

DOC_BIDS = [["3366.1", "7", "0", "3"], ["3366", "6", "3", "4"]]
DOC_ASKS = [["3366.8", "9", "10", "3"], ["3368", "8", "3", "4"]]


def test_checksum_matches_okx_documented_examples() -> None:
    # OKX docs, "Checksum": both sides deep enough, then one side short
    assert of.checksum_string(DOC_BIDS, DOC_ASKS) == "3366.1:7:3366.8:9:3366:6:3368:8"
    assert of.checksum(DOC_BIDS, DOC_ASKS) == -1881014294
    asks = [["3366.8", "9"], ["3368", "8"], ["3372", "8"]]
    assert of.checksum_string([["3366.1", "7"]], asks) == "3366.1:7:3366.8:9:3368:8:3372:8"
    assert of.checksum([["3366.1", "7"]], asks) == 831078360


def test_checksum_agrees_with_ccxt_crc32_and_uses_only_25_levels() -> None:
    bids = [[str(1000 - i), "1"] for i in range(30)]
    asks = [[str(1001 + i), "2.50"] for i in range(30)]
    text = of.checksum_string(bids, asks)
    assert text.count(":") == 25 * 4 - 1 and "975" not in text and "1026" not in text
    assert of.checksum(bids, asks) == ccxt.Exchange.crc32(text, True)
    # the strings as sent count: "2.50" and "2.5" give different checksums
    assert of.checksum(bids, asks) != of.checksum(bids, [[p, "2.5"] for p, _ in asks])


def test_every_recorded_checksum_matches_the_book_rebuilt_from_the_recording() -> None:
    rec = load_okx_recording(okx_recording())
    books: dict[str, OkxBook] = {}
    checked = 0
    for f in rec.frames:
        channel, inst = of.frame_key(f.frame)
        if channel != "books":
            continue
        for row in f.frame["data"]:
            if f.frame["action"] == "snapshot":
                books[inst] = OkxBook(inst)
                books[inst].reset(row)
            else:
                books[inst].update(row)
            assert books[inst].checksum() == row["checksum"]
            assert books[inst].verify(row)
            checked += 1
    assert checked == 290 and len(books) == 3  # BTC-USDT, a SWAP and a FUTURES book


# ----------------------------------------------------------------------------- book


def test_book_keeps_sorted_sides_and_removes_zero_sizes() -> None:
    book = OkxBook.from_levels("X-USDT", DOC_BIDS, DOC_ASKS, seq_id=5, ts_ms=1)
    assert [lv[0] for lv in book.bids()] == ["3366.1", "3366"]
    assert [lv[0] for lv in book.asks()] == ["3366.8", "3368"]
    book.update(
        {
            "asks": [["3366.5", "1", "0", "1"], ["3368", "0", "0", "0"]],
            "bids": [["3366.1", "0", "0", "0"], ["3365.95", "2", "0", "1"]],
            "seqId": 6,
            "ts": "2",
        }
    )
    assert [lv[0] for lv in book.bids()] == ["3366", "3365.95"]
    assert [lv[0] for lv in book.asks()] == ["3366.5", "3366.8"]
    assert (book.seq_id, book.ts_ms, len(book)) == (6, 2, 4)
    assert book.best() == (["3366", "6", "3", "4"], ["3366.5", "1", "0", "1"])
    # removing a level that is not there is a no-op
    book.apply([["1", "0", "0", "0"]], [])
    assert len(book) == 4
    snap = book.snapshot_row(seq_shift=3)
    assert snap["prevSeqId"] == -1 and snap["seqId"] == 9
    assert snap["checksum"] == of.checksum(book.bids(), book.asks())
    copy = book.copy()
    copy.apply([], [["3366", "0", "0", "0"]])
    assert len(book) == 4 and len(copy) == 3


def test_book_verify_detects_a_wrong_checksum() -> None:
    book = OkxBook.from_levels("X-USDT", DOC_BIDS, DOC_ASKS)
    assert book.verify({"checksum": -1881014294})
    assert not book.verify({"checksum": -1881014294 ^ 1})
    assert book.verify({})  # nothing to check


# ----------------------------------------------------------------------------- frames


def test_push_and_row_shapes() -> None:
    trade = of.trade_row("BTC-USDT", 7, "30236", "0.0002", "buy", T0)
    frame = of.push("trades", "BTC-USDT", [trade])
    assert frame == {"arg": {"channel": "trades", "instId": "BTC-USDT"}, "data": [trade]}
    assert trade == {
        "instId": "BTC-USDT",
        "tradeId": "7",
        "px": "30236",
        "sz": "0.0002",
        "side": "buy",
        "ts": str(T0),
    }
    assert list(of.push("books", "X", [], "update")) == ["arg", "action", "data"]
    row = of.book_row(DOC_ASKS, DOC_BIDS, T0, checksum=1, seq_id=11, prev_seq_id=10)
    assert row["seqId"] == 11 and row["prevSeqId"] == 10 and row["ts"] == str(T0)
    ticker = of.ticker_row(
        "BTC-USDT",
        last="1",
        last_sz="2",
        ask_px="3",
        ask_sz="4",
        bid_px="5",
        bid_sz="6",
        open24h="7",
        high24h="8",
        low24h="9",
        vol_ccy24h="10",
        vol24h="11",
        ts_ms=T0,
    )
    recorded = load_okx_recording(okx_recording()).frames
    real = next(f.frame["data"][0] for f in recorded if f.frame["arg"]["channel"] == "tickers")
    assert list(ticker) == list(real)  # same keys, same order as real OKX
    assert of.candle_row(T0, "1", "2", "0.5", "1.5", "3", "4.5", True)[-1] == "1"
    assert of.error_body("51001", "Instrument ID does not exist") == {
        "code": "51001",
        "msg": "Instrument ID does not exist",
        "data": [],
    }
    assert of.fmt(Decimal("30236.000")) == "30236" and of.fmt(Decimal("1E+2")) == "100"
    assert of.fmt(Decimal("0.00020")) == "0.0002" and of.fmt(Decimal("-0")) == "0"


def test_bars_align_like_okx() -> None:
    ts = 1_652_459_225_381  # 2022-05-13 16:27:05.381 UTC (a Friday)
    assert of.bar_start(ts, "1s") == 1_652_459_225_000
    assert of.bar_start(ts, "1m") == 1_652_459_220_000
    assert of.bar_start(ts, "1H") == 1_652_457_600_000
    day_utc = 1_652_400_000_000  # 2022-05-13 00:00 UTC
    assert of.bar_start(ts, "1Dutc") == day_utc
    assert of.bar_start(ts, "1D") == day_utc + 16 * 3_600_000  # 00:00 UTC+8 on the 14th
    assert of.bar_start(ts, "1Wutc") == day_utc - 4 * of.DAY_MS  # Monday 2022-05-09
    for bad in ("1M", "1mutc", "7m", "candle1m"):
        with pytest.raises(ValueError):
            of.bar_ms(bad)
    assert of.candle_channel_bar("candle1m") == "1m"
    assert of.candle_channel_bar("candle6Hutc") == "6Hutc"
    assert of.candle_channel_bar("candle1M") is None and of.candle_channel_bar("tickers") is None


def test_candles_from_trades_newest_first_and_confirmed_when_over() -> None:
    trades = [
        of.trade_row("X", 1, "10", "1", "buy", T0 + 100),
        of.trade_row("X", 2, "12", "2", "sell", T0 + 900),
        of.trade_row("X", 3, "9", "1", "buy", T0 + 1_200),
    ]
    rows = of.candles_from_trades(reversed(trades), "1s", T0 + 1_500)
    assert rows == [
        [str(T0 + 1_000), "9", "9", "9", "9", "1", "9", "9", "0"],
        [str(T0), "10", "12", "10", "12", "3", "34", "34", "1"],
    ]


def test_candle_builder_hands_out_the_closed_candle_once() -> None:
    b = CandleBuilder("1s")
    assert b.take(T0, Decimal(5)) == [str(T0), "5", "5", "5", "5", "0", "0", "0", "0"]
    b.add_trade(T0 + 10, Decimal(6), Decimal(1))
    b.add_trade(T0 + 20, Decimal(4), Decimal(1))
    assert b.take(T0 + 30, Decimal(4))[1:6] == ["6", "6", "4", "4", "2"]
    closed = b.take(T0 + 1_001, Decimal(4))
    assert closed[0] == str(T0) and closed[-1] == "1"
    live = b.take(T0 + 1_002, Decimal(4))
    assert live == [str(T0 + 1_000), "4", "4", "4", "4", "0", "0", "0", "0"]


# ----------------------------------------------------------------------------- replay


def _chain(books: dict[str, OkxBook], events: list[OkxEvent]) -> int:
    """Apply every books frame, checking seqId continuity and checksums; returns the count."""
    n = 0
    for ev in events:
        if ev.channel != "books":
            continue
        book = books[ev.inst_id]
        for row in ev.frame["data"]:
            if ev.frame["action"] == "snapshot":
                assert row["prevSeqId"] == -1 and row["seqId"] > book.seq_id
                book.reset(row)
            else:
                assert row["prevSeqId"] == book.seq_id
                book.update(row)
            assert book.verify(row)
            n += 1
    return n


def test_replay_adds_chained_seq_ids_and_keeps_the_valid_recorded_checksums() -> None:
    src = OkxReplaySource(speed=0)
    books = src.books()
    assert list(books) == ["BTC-USDT"] and books["BTC-USDT"].seq_id == SEQ_START
    events = list(src.events(clock))
    assert (src.checksums_checked, src.checksums_replaced) == (98, 0)
    assert _chain(books, events) == 97
    counts = Counter(e.channel for e in events)
    assert counts["trades"] == 69 and counts["tickers"] == 25 and counts["books"] == 97
    assert counts["candle1s"] == counts["candle1m"] == 69
    assert {e.inst_id for e in events} == {"BTC-USDT"}
    # the recorded checksums were kept: they are the ones real OKX sent
    rec = load_okx_recording(okx_recording()).frames
    recorded = [
        f.frame["data"][0]["checksum"]
        for f in rec
        if of.frame_key(f.frame) == ("books", "BTC-USDT") and f.frame["action"] == "update"
    ]
    assert [e.frame["data"][0]["checksum"] for e in events if e.channel == "books"] == recorded
    assert len(src.instruments()["SPOT"]) == 513 and len(src.instruments()["OPTION"]) == 696


def test_replay_keeps_relative_timing_and_shifts_timestamps_to_now() -> None:
    rec = load_okx_recording(okx_recording()).frames
    btc = [f for f in rec if f.frame["arg"]["instId"] == "BTC-USDT"]
    span = btc[-1].ts - btc[0].ts
    events = list(OkxReplaySource(speed=4).events(clock))
    assert sum(e.delay for e in events) == pytest.approx(span / 4, rel=1e-6)
    first_ticker = next(e for e in events if e.channel == "tickers")
    assert first_ticker.frame["data"][0]["ts"] != "1652459224956"
    recorded_ts = 1652459224956
    expected = int(T0 + (recorded_ts - btc[0].ts * 1000) / 4)
    assert int(first_ticker.frame["data"][0]["ts"]) == expected


def test_looping_replay_resends_the_snapshot_and_keeps_ids_unique() -> None:
    src = OkxReplaySource(speed=0, loop=True)
    events = list(itertools.islice(src.events(clock), 2000))
    assert _chain(src.books(), events) > 97 * 2
    snapshots = [e for e in events if e.frame.get("action") == "snapshot"]
    assert len(snapshots) >= 2
    ids = [int(t["tradeId"]) for e in events if e.channel == "trades" for t in e.frame["data"]]
    assert ids == list(range(ids[0], ids[0] + len(ids)))


def test_replay_candles_follow_the_trades() -> None:
    events = list(OkxReplaySource(speed=1).events(clock))
    trades = [t for e in events if e.channel == "trades" for t in e.frame["data"]]
    last_1m: dict[str, list[str]] = {}
    for e in events:
        if e.channel == "candle1m":
            last_1m[e.frame["data"][0][0]] = e.frame["data"][0]
    expected = {r[0]: r for r in of.candles_from_trades(trades, "1m", 0)}
    assert {k: v[:8] for k, v in last_1m.items()} == {k: v[:8] for k, v in expected.items()}


# ----------------------------------------------------------------------------- synthetic

ALL = ("trades", "tickers", "books", "books5", "bbo-tbt", "candle1s", "candle1m")


def test_synthetic_is_deterministic_and_rate_bounded() -> None:
    def run(seed: int) -> list[OkxEvent]:
        src = OkxSyntheticSource(3, rate=700, duration=2.0, channels=ALL, seed=seed)
        return list(src.events(clock))

    a, b = run(1), run(1)
    assert a == b and a != run(2)
    assert len(a) == 1400
    assert sum(e.delay for e in a) < 2.0
    per_tick = Counter(round(t, 6) for t in itertools.accumulate(e.delay for e in a))
    assert max(per_tick.values()) <= 700 * 0.005 + 1
    assert Counter(e.channel for e in a) == {ch: 200 for ch in ALL}


def test_synthetic_names_like_the_binance_one() -> None:
    src = OkxSyntheticSource(2, rate=10, total=4)
    assert src.inst_ids() == ["BTC-USDT", "ETH-USDT"]
    spot = load_okx_recording(okx_recording()).instruments["SPOT"]
    real = [e["instId"] for e in spot if e["quoteCcy"] == "USDT" and e["state"] == "live"]
    ids = OkxSyntheticSource(len(real) + 3, rate=10, total=1).inst_ids()
    assert ids == [*real, "SYM0-USDT", "SYM1-USDT", "SYM2-USDT"]
    named = OkxSyntheticSource(["FOO/USDT", "BAR-BTC"], rate=10, total=1)
    entries = {e["instId"]: e for e in named.instruments()["SPOT"]}
    assert entries["FOO-USDT"]["baseCcy"] == "FOO" and entries["BAR-BTC"]["quoteCcy"] == "BTC"
    with pytest.raises(ValueError):
        OkxSyntheticSource(["NODASH"], rate=10, total=1).prepare()
    with pytest.raises(ValueError):
        OkxSyntheticSource(1, channels=("depth",))
    with pytest.raises(ValueError):
        OkxSyntheticSource(1, rate=0)


def test_synthetic_books_chain_and_checksum_and_never_cross() -> None:
    src = OkxSyntheticSource(4, rate=2000, duration=1.0, channels=("trades", "books"), seed=3)
    books = src.books()
    events = list(src.events(clock))
    assert _chain(books, events) == 1000
    for book in books.values():
        bid, ask = book.best()
        assert bid is not None and ask is not None and float(bid[0]) < float(ask[0])
        assert len(book.bids()) == len(book.asks()) == 25


def test_synthetic_candles_and_tickers_are_consistent_with_the_trades_sent() -> None:
    src = OkxSyntheticSource(
        ["AAA-USDT"], rate=400, duration=3.0, channels=("trades", "tickers", "candle1s"), seed=5
    )
    trades: list[dict[str, Any]] = []
    for ev in src.events(clock):
        if ev.channel == "trades":
            trades.extend(ev.frame["data"])
        elif ev.channel == "candle1s":
            row = ev.frame["data"][0]
            start = int(row[0])
            mine = [t for t in trades if of.bar_start(int(t["ts"]), "1s") == start]
            if mine:
                built = of.candles_from_trades(mine, "1s", 0)[0]
                assert row[:8] == built[:8]
            else:
                assert row[5] == "0"  # an empty bar: no volume
        elif ev.channel == "tickers":
            t = ev.frame["data"][0]
            assert t["last"] == trades[-1]["px"] and t["lastSz"] == trades[-1]["sz"]
            vol = sum(Decimal(x["sz"]) for x in trades)
            assert Decimal(t["vol24h"]) == vol
    ids = [int(t["tradeId"]) for t in trades]
    assert ids == list(range(1, len(ids) + 1))


def test_frames_are_json_clean() -> None:
    src = OkxSyntheticSource(2, rate=500, total=200, channels=ALL)
    for ev in src.events(clock):
        assert json.loads(json.dumps(ev.frame)) == ev.frame
