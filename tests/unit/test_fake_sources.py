"""Pure tests of the fake exchange's sources, derived frames, book state and ws protocol.

No sockets, no sleeping: sources run with a fixed clock and time is the sum of event delays.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

import fake_exchange
from fake_exchange import ReplaySource, SyntheticSource, bundled_recording
from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload
from fake_exchange.derive import (
    Candle,
    CandleBook,
    TickerDeriver,
    aggregate,
    kline_frame,
    round_units,
    to_units,
    units_str,
)
from fake_exchange.faults import Faults
from fake_exchange.market_state import LiveBook, MarketState
from fake_exchange.protocol import parse_control, streams_from_path
from fake_exchange.recording import load_recording
from fake_exchange.sources import Event

T0 = 1_700_000_000_000


def clock() -> int:
    return T0


def _pass_len(src: ReplaySource) -> int:
    """Events in one pass of the recording (recorded frames + derived ones)."""
    return len(list(ReplaySource(src.path, speed=src.speed).events(clock)))


@pytest.fixture(scope="module")
def recording_frames() -> int:
    return len(load_recording(bundled_recording()).frames)


def test_public_api_exports() -> None:
    assert set(fake_exchange.__all__) >= {
        "FakeExchange",
        "ReplaySource",
        "SyntheticSource",
        "bundled_recording",
        "SentFrame",
    }
    for name in fake_exchange.__all__:
        assert hasattr(fake_exchange, name)
    assert bundled_recording().name == "BINANCE.jsonl" and bundled_recording().exists()


# ----------------------------------------------------------------------------- replay


def test_replay_keeps_relative_timing_divided_by_speed() -> None:
    rec = load_recording(bundled_recording())
    recorded = rec.frames[-1].ts - rec.frames[0].ts
    events = list(ReplaySource(bundled_recording(), speed=4).events(clock))
    assert events[0].delay == 0
    assert sum(e.delay for e in events) == pytest.approx(recorded / 4)
    recorded_streams = [f.stream for f in rec.frames]
    replayed = [
        e.stream for e in events if "@ticker" not in e.stream and "@miniTicker" not in e.stream
    ]
    replayed = [s for s in replayed if not s.endswith("@trade")]
    assert replayed == recorded_streams


def test_replay_shifts_exchange_timestamps_to_now() -> None:
    rec = load_recording(bundled_recording())
    first_ms = rec.frames[0].ts * 1000
    events = list(ReplaySource(bundled_recording(), speed=2).events(clock))
    by_stream = {f.stream: f for f in rec.frames}
    for ev in events:
        if "E" in ev.payload:
            assert T0 <= ev.payload["E"] <= T0 + 16_000
    agg = next(e for e in events if e.stream == "nknusdt@aggTrade")
    orig = by_stream["nknusdt@aggTrade"].data
    assert agg.payload["E"] == int(T0 + (orig["E"] - first_ms) / 2)
    assert agg.payload["T"] == int(T0 + (orig["T"] - first_ms) / 2)
    kline = next(e for e in events if e.stream == "nknusdt@kline_1m").payload
    orig_k = by_stream["nknusdt@kline_1m"].data
    shift = kline["E"] - orig_k["E"]
    assert kline["k"]["t"] == orig_k["k"]["t"] + shift
    assert kline["k"]["T"] - kline["k"]["t"] == 59_999
    # the recorded frames themselves are untouched
    assert by_stream["nknusdt@aggTrade"].data["E"] == orig["E"]


def test_replay_fast_mode_has_no_delays_and_uses_the_clock() -> None:
    events = list(ReplaySource(bundled_recording(), speed=0).events(clock))
    assert all(e.delay == 0 for e in events)
    assert {e.payload["E"] for e in events if "E" in e.payload} == {T0}


def test_replay_loop_keeps_ids_consecutive_and_times_increasing() -> None:
    src = ReplaySource(bundled_recording(), speed=1, loop=True)
    n = _pass_len(src)
    events = list(itertools.islice(src.events(clock), 3 * n))
    last_u: dict[str, int] = {}
    last_agg: dict[str, int] = {}
    last_tid: dict[str, int] = {}
    last_e: dict[str, int] = {}
    aggs = 0
    for ev in events:
        p = ev.payload
        if ev.stream.endswith("@depth@100ms"):
            if p["s"] in last_u:
                assert p["U"] == last_u[p["s"]] + 1, ev
            last_u[p["s"]] = p["u"]
        elif ev.stream.endswith("@aggTrade"):
            aggs += 1
            if p["s"] in last_agg:
                assert p["a"] == last_agg[p["s"]] + 1
            last_agg[p["s"]] = p["a"]
        elif ev.stream.endswith("@trade"):
            if p["s"] in last_tid:
                assert p["t"] == last_tid[p["s"]] + 1
            last_tid[p["s"]] = p["t"]
        if "E" in p:
            assert p["E"] >= last_e.get(ev.stream, 0)
            last_e[ev.stream] = p["E"]
    assert aggs == 6  # 2 recorded aggTrades x 3 passes
    first_pass_end = max(e.payload.get("E", 0) for e in events[:n])
    second_pass_start = min(e.payload["E"] for e in events[n:] if "E" in e.payload)
    assert second_pass_start > first_pass_end
    # the pass boundary waits loop_gap seconds
    assert events[n].delay == pytest.approx(1.0)


def test_replay_symbols_map_renames_streams_and_adds_to_exchange_info() -> None:
    src = ReplaySource(bundled_recording(), speed=0, symbols_map={"NKN/USDT": "FOO/USDT"})
    events = list(src.events(clock))
    assert not [e for e in events if e.stream.startswith("nknusdt@")]
    foo = [e for e in events if e.stream.startswith("foousdt@")]
    assert foo and all(e.payload["s"] == "FOOUSDT" for e in foo)
    assert "FOOUSDT" in src.snapshots()
    entry = next(s for s in src.exchange_info()["symbols"] if s["symbol"] == "FOOUSDT")
    assert (entry["baseAsset"], entry["quoteAsset"]) == ("FOO", "USDT")


def test_replay_derives_trade_ticker_and_mini_ticker_after_each_agg_trade() -> None:
    events = list(ReplaySource(bundled_recording(), speed=1).events(clock))
    for i, ev in enumerate(events):
        if not ev.stream.endswith("@aggTrade"):
            continue
        sym = ev.stream.split("@")[0]
        follow = events[i + 1 : i + 4]
        assert [e.stream for e in follow] == [f"{sym}@trade", f"{sym}@ticker", f"{sym}@miniTicker"]
        assert all(e.delay == 0 for e in follow)
        trade, ticker, mini = (e.payload for e in follow)
        assert trade["e"] == "trade" and trade["p"] == ev.payload["p"]
        assert trade["T"] == ev.payload["T"]
        assert ticker["e"] == "24hrTicker" and ticker["c"] == ev.payload["p"]
        assert ticker["E"] == ev.payload["E"]
        assert mini["e"] == "24hrMiniTicker" and mini["c"] == ticker["c"]
    book_tickers = [i for i, e in enumerate(events) if e.stream.endswith("@bookTicker")]
    for i in book_tickers:
        bt = events[i].payload
        ticker = events[i + 1].payload
        assert events[i + 1].stream == f"{bt['s'].lower()}@ticker"
        assert (ticker["b"], ticker["B"], ticker["a"], ticker["A"]) == (
            bt["b"],
            bt["B"],
            bt["a"],
            bt["A"],
        )


# ----------------------------------------------------------------------------- derivation


def test_derived_ticker_values_from_book_ticker_and_agg_trades() -> None:
    d = TickerDeriver()
    d.observe_book_ticker({"u": 1, "s": "BTCUSDT", "b": "99.5", "B": "2", "a": "100.5", "A": "3"})
    before = d.ticker("BTCUSDT", 1000)
    assert before["c"] == "99.50000000"  # no trade yet: last = best bid
    assert (before["F"], before["L"], before["n"]) == (-1, -1, 0)
    for agg_id, (price, qty) in enumerate([("100", "1"), ("110", "2"), ("90", "1")]):
        d.observe_agg_trade(
            {"s": "BTCUSDT", "a": agg_id, "p": price, "q": qty, "f": 10 + agg_id, "l": 10 + agg_id}
        )
    t = d.ticker("BTCUSDT", 2000)
    assert t["e"] == "24hrTicker" and t["s"] == "BTCUSDT" and t["E"] == 2000
    assert t["c"] == "90.00000000" and t["Q"] == "1.00000000"
    assert t["o"] == "99.50000000" and t["x"] == t["o"]  # first price seen
    assert t["h"] == "110.00000000" and t["l"] == "90.00000000"
    assert t["v"] == "4.00000000" and t["q"] == "410.00000000"
    assert t["w"] == "102.50000000"
    assert t["p"] == "-9.50000000"
    assert Decimal(t["P"]) == (Decimal("-9.5") * 100 / Decimal("99.5")).quantize(Decimal("0.001"))
    assert (t["b"], t["B"], t["a"], t["A"]) == (
        "99.50000000",
        "2.00000000",
        "100.50000000",
        "3.00000000",
    )
    assert (t["F"], t["L"], t["n"]) == (10, 12, 3)
    assert (t["O"], t["C"]) == (2000 - 86_400_000, 2000)
    (_, full), (mini_stream, mini) = d.tickers("BTCUSDT", 2000)
    assert mini_stream == "btcusdt@miniTicker"
    assert mini == {k: full[k] for k in ("c", "o", "h", "l", "v", "q", "s", "E")} | {
        "e": "24hrMiniTicker"
    }


def test_derived_trade_ids_run_from_the_first_agg_trade() -> None:
    d = TickerDeriver()
    base = {"s": "X", "p": "1", "q": "1", "T": 5, "E": 5, "m": True}
    ids = [d.trade_from_agg(base | {"f": 40 + i * 3, "l": 42 + i * 3})["t"] for i in range(4)]
    assert ids == [40, 41, 42, 43]


def test_kline_sets_last_price_and_range() -> None:
    d = TickerDeriver()
    d.observe_kline({"s": "X", "k": {"o": "5", "h": "7", "l": "4", "c": "6"}})
    t = d.ticker("X", 1)
    assert (t["o"], t["h"], t["l"], t["c"]) == (
        "5.00000000",
        "7.00000000",
        "4.00000000",
        "6.00000000",
    )


# ----------------------------------------------------------------------------- synthetic


def _virtual_times(events: list[Event]) -> list[float]:
    return list(itertools.accumulate(e.delay for e in events))


@pytest.mark.parametrize("rate", [100.0, 1000.0, 10_000.0])
def test_synthetic_rate_is_paced_over_virtual_time(rate: float) -> None:
    src = SyntheticSource(["BTC/USDT", "ETH/USDT", "FOO/USDT"], rate=rate, duration=2.0)
    events = list(src.events(clock))
    assert len(events) == int(rate * 2)
    vts = _virtual_times(events)
    in_first_second = sum(1 for t in vts if t < 1.0)
    assert abs(in_first_second - rate) <= rate * src.tick + 1
    sleeps = sum(1 for e in events if e.delay > 0)
    assert sleeps <= 2.0 / max(1 / rate, src.tick) + 1  # batched, not one sleep per frame
    assert all(e.delay >= 0 for e in events)
    # exchange time follows virtual time
    assert events[-1].payload["E"] == pytest.approx(T0 + vts[-1] * 1000, abs=1)


def test_synthetic_total_and_round_robin_and_consecutive_ids() -> None:
    src = SyntheticSource(["BTC/USDT", "ETH/USDT"], rate=5000, total=1000)
    events = list(src.events(clock))
    assert len(events) == 1000
    assert [e.stream for e in events[:4]] == [
        "btcusdt@aggTrade",
        "btcusdt@ticker",
        "ethusdt@aggTrade",
        "ethusdt@ticker",
    ]
    ids: dict[str, list[int]] = defaultdict(list)
    trade_ids: dict[str, list[int]] = defaultdict(list)
    for e in events:
        if e.stream.endswith("@aggTrade"):
            ids[e.payload["s"]].append(e.payload["a"])
            trade_ids[e.payload["s"]].append(e.payload["f"])
            assert e.payload["f"] == e.payload["l"]
        else:
            assert e.payload["e"] == "24hrTicker"
    for sym in ("BTCUSDT", "ETHUSDT"):
        assert ids[sym] == list(range(ids[sym][0], ids[sym][0] + 250))
        assert trade_ids[sym] == list(range(trade_ids[sym][0], trade_ids[sym][0] + 250))


def test_synthetic_ticker_reflects_last_trade() -> None:
    events = list(SyntheticSource(["BTC/USDT"], rate=100, total=50).events(clock))
    for prev, ev in itertools.pairwise(events):
        if ev.stream == "btcusdt@ticker":
            assert ev.payload["c"] == prev.payload["p"]


def test_synthetic_symbols_by_count_pads_and_extends_exchange_info(tmp_path: Path) -> None:
    src = SyntheticSource(3, rate=10, total=3)
    assert src.symbols() == ["BTCUSDT", "ETHUSDT", "BNBUSDT"]
    info_path = tmp_path / "rec.jsonl"
    info = {
        "symbols": [
            {"symbol": "BTCUSDT", "status": "TRADING", "baseAsset": "BTC", "quoteAsset": "USDT"}
        ]
    }
    info_path.write_text(
        json.dumps({"t": "http", "url": "https://x/api/v3/exchangeInfo", "data": json.dumps(info)})
        + "\n"
    )
    padded = SyntheticSource(3, rate=10, total=3, exchange_info_path=info_path)
    assert padded.symbols() == ["BTCUSDT", "SYM0USDT", "SYM1USDT"]
    names = {s["symbol"] for s in padded.exchange_info()["symbols"]}
    assert {"SYM0USDT", "SYM1USDT"} <= names
    assert set(padded.snapshots()) == {"BTCUSDT", "SYM0USDT", "SYM1USDT"}


def test_synthetic_rejects_unknown_channel() -> None:
    with pytest.raises(ValueError):
        SyntheticSource(["BTC/USDT"], channels=("depth",))


# ----------------------------------------------------------------------------- market state


def test_live_book_applies_diffs_and_skips_old_ones() -> None:
    book = LiveBook.from_snapshot(
        {"lastUpdateId": 10, "bids": [["1.0", "5"]], "asks": [["1.1", "5"]]}
    )
    book.apply({"U": 9, "u": 10, "b": [["0.9", "1"]], "a": []})  # already in the snapshot
    book.apply({"U": 11, "u": 12, "b": [["1.0", "0"], ["0.95", "2"]], "a": [["1.05", "1"]]})
    snap = book.snapshot(5)
    assert snap == {
        "lastUpdateId": 12,
        "bids": [["0.95", "2"]],
        "asks": [["1.05", "1"], ["1.1", "5"]],
    }


def test_burst_ids_continue_and_later_source_trades_move_past_them() -> None:
    st = MarketState({})
    agg = {
        "e": "aggTrade",
        "E": 1,
        "s": "X",
        "a": 100,
        "p": "2",
        "q": "1",
        "f": 500,
        "l": 501,
        "T": 1,
        "m": False,
    }
    st.observe("x@aggTrade", dict(agg))
    burst = [st.next_burst_trade("X", 2) for _ in range(3)]
    assert [b["a"] for b in burst] == [101, 102, 103]
    assert [b["f"] for b in burst] == [502, 503, 504]
    assert all(b["p"] == "2" for b in burst)
    nxt = dict(agg, a=101, f=502, l=502)
    st.observe("x@aggTrade", nxt)
    assert (nxt["a"], nxt["f"]) == (104, 505)
    rows = st.agg_trades_query("X", from_id=102, start_ms=None, end_ms=None, limit=10)
    assert [r["a"] for r in rows] == [102, 103, 104]
    assert len(st.agg_trades_query("X", None, None, None, limit=2)) == 2


def test_depth_for_symbol_without_snapshot_is_a_small_book() -> None:
    snap = MarketState({}).depth("BTCUSDT", 100)
    assert len(snap["bids"]) == 5 and len(snap["asks"]) == 5
    assert Decimal(snap["bids"][0][0]) < Decimal(snap["asks"][0][0])


# ----------------------------------------------------------------------------- ws protocol


def _known(sym: str) -> bool:
    return sym in {"BTCUSDT", "NKNUSDT"}


def test_subscribe_ack_and_errors() -> None:
    ok = parse_control(
        '{"method":"SUBSCRIBE","params":["btcusdt@aggTrade","nknusdt@depth@100ms"],"id":3}', _known
    )
    assert ok.method == "SUBSCRIBE" and ok.reply == {"result": None, "id": 3}
    assert ok.streams == ["btcusdt@aggTrade", "nknusdt@depth@100ms"]
    bad = parse_control('{"method":"SUBSCRIBE","params":["foousdt@trade"],"id":4}', _known)
    assert bad.method == "ERROR"
    assert bad.reply is not None and bad.reply["error"]["code"] == 2 and bad.reply["id"] == 4
    bad_channel = parse_control('{"method":"SUBSCRIBE","params":["btcusdt@nope"],"id":5}', _known)
    assert bad_channel.method == "ERROR"
    assert parse_control("{nope", _known).reply == {
        "error": {"code": 3, "msg": "Invalid JSON: expected value"},
        "id": None,
    }
    assert (
        parse_control('{"method":"LIST_SUBSCRIPTIONS","id":6}', _known).method
        == "LIST_SUBSCRIPTIONS"
    )
    unknown = parse_control('{"method":"FOO","id":7}', _known)
    assert unknown.reply is not None and unknown.reply["error"]["code"] == 2


def test_streams_from_path() -> None:
    assert streams_from_path("/stream", "a@trade/b@ticker") == ["a@trade", "b@ticker"]
    assert streams_from_path("/ws/0", None) == []
    assert streams_from_path("/ws/btcusdt@trade", None) == ["btcusdt@trade"]


# ----------------------------------------------------------------------------- candles

Q8 = Decimal("0.00000001")


def expected_kline(trades: list[Payload], prev_close: str | None) -> dict[str, object]:
    """A kline's values recomputed with exact decimals from the trade frames of its interval."""
    if not trades:
        assert prev_close is not None
        zero = "0.00000000"
        return dict(o=prev_close, h=prev_close, l=prev_close, c=prev_close, v=zero, q=zero)
    ps = [Decimal(t["p"]) for t in trades]
    qs = [Decimal(t["q"]) for t in trades]
    taker = [(p, q) for p, q, t in zip(ps, qs, trades, strict=True) if not t["m"]]

    def f8(d: Decimal) -> str:
        return f"{d.quantize(Q8):f}"

    return {
        "o": trades[0]["p"],
        "h": f8(max(ps)),
        "l": f8(min(ps)),
        "c": trades[-1]["p"],
        "v": f8(sum(qs, Decimal(0))),
        "q": f8(sum((p * q for p, q in zip(ps, qs, strict=True)), Decimal(0))),
        "n": len(trades),
        "f": trades[0]["t"],
        "L": trades[-1]["t"],
        "V": f8(sum((q for _, q in taker), Decimal(0))),
        "Q": f8(sum((p * q for p, q in taker), Decimal(0))),
    }


def check_klines_against_trades(events: list[tuple[str, Payload]]) -> int:
    """Every kline frame equals its interval's trades sent before it; finals come last.

    A trade counts from its first frame (`aggTrade` or `trade`, whichever came first).

    Returns how many final (x=true) frames were checked.
    """
    trades: dict[str, list[Payload]] = defaultdict(list)
    finals: list[tuple[str, dict[str, object]]] = []
    for stream, p in events:
        if stream.endswith(("@trade", "@aggTrade")):
            t = p if "t" in p else dict(p, t=p["f"])  # one trade may show on both streams
            if not trades[p["s"]] or trades[p["s"]][-1]["t"] < t["t"]:
                trades[p["s"]].append(t)
        elif "@kline_" in stream:
            k = p["k"]
            assert k["T"] - k["t"] + 1 == {"1s": 1000, "1m": 60_000}[k["i"]]
            assert p["E"] > k["T"] if k["x"] else k["t"] <= p["E"] <= k["T"]
            mine = [t for t in trades[p["s"]] if k["t"] <= t["T"] <= k["T"]]
            before = [t for t in trades[p["s"]] if t["T"] < k["t"]]
            want = expected_kline(mine, before[-1]["p"] if before else None)
            assert {key: k[key] for key in want} == want, (stream, k)
            if not mine:
                assert (k["n"], k["f"], k["L"]) == (0, -1, -1)
            if k["x"]:
                finals.append((p["s"], k))
    for sym, k in finals:
        t_lo, t_hi = k["t"], k["T"]
        assert isinstance(t_lo, int) and isinstance(t_hi, int)
        assert sum(1 for t in trades[sym] if t_lo <= t["T"] <= t_hi) == k["n"]
    return len(finals)


def test_units_round_trip_and_half_even_rounding() -> None:
    assert to_units("0.35270000") == 35_270_000
    assert to_units("12") == 1_200_000_000
    assert to_units("1.5") == 150_000_000
    assert units_str(35_270_000) == "0.35270000" and units_str(-5) == "-0.00000005"
    assert round_units(150_000_000) == 2  # 1.5e-8 -> 2e-8 (half even)
    assert round_units(250_000_000) == 2
    assert round_units(250_000_001) == 3


def test_candle_book_counts_each_trade_once_and_fills_empty_intervals() -> None:
    book = CandleBook(["1s", "1m"])
    assert book.add_trade("X", 1, 1, 1_000, "2.00000000", "1.00000000", False)
    assert not book.add_trade("X", 1, 1, 1_000, "2.00000000", "1.00000000", False)  # again
    assert book.add_trade("X", 2, 3, 1_500, "3.00000000", "2.00000000", True)  # agg of 2
    assert book.add_trade("X", 4, 4, 3_200, "1.00000000", "1.00000000", False)
    sec = book.candles("X", "1s", 3_999)
    assert [c.open_ms for c in sec] == [1_000, 2_000, 3_000]
    first, empty, third = sec
    assert (first.open, first.high, first.low, first.close) == (
        2 * 10**8,
        3 * 10**8,
        2 * 10**8,
        3 * 10**8,
    )
    assert (first.count, first.first_id, first.last_id) == (3, 1, 3)
    assert first.volume == 3 * 10**8 and first.taker_base == 10**8
    assert empty == Candle.empty(2_000, 3 * 10**8)
    assert third.open == 10**8 and third.count == 1
    rows = book.rest_rows("X", "1s", 3_999)
    assert rows[1] == [
        2_000,
        "3.00000000",
        "3.00000000",
        "3.00000000",
        "3.00000000",
        "0.00000000",
        2_999,
        "0.00000000",
        0,
        "0.00000000",
        "0.00000000",
        "0",
    ]
    assert rows[0][7] == "8.00000000" and rows[0][10] == "2.00000000"  # q = 2*1 + 3*2, Q = 2*1
    [minute] = book.candles("X", "1m", 3_999)
    assert minute.count == 4 and minute.close == 10**8 and minute.low == 10**8
    assert book.can_serve("5m") and not book.can_serve("1w")
    assert book.candles("X", "3m", 3_999)[0].volume == minute.volume


def test_aggregate_merges_minutes_like_one_long_candle() -> None:
    one = CandleBook(["1m"])
    five = CandleBook(["5m"])
    for i, (t, p) in enumerate([(10, "5"), (70_000, "7"), (130_000, "4"), (299_999, "6")]):
        for b in (one, five):
            b.add_trade("X", i, i, t, p, "1", i % 2 == 0)
    merged = aggregate(one.candles("X", "1m", 299_999), 300_000)
    assert merged == five.candles("X", "5m", 299_999)


def test_kline_frame_shape() -> None:
    c = Candle(60_000, 1, 3, 1, 2, volume=10, quote=25, count=2, first_id=7, last_id=8)
    f = kline_frame("BTCUSDT", "1m", c, 119_999, True)
    assert f["e"] == "kline" and f["s"] == "BTCUSDT" and f["E"] == 119_999
    k = f["k"]
    assert (k["t"], k["T"], k["i"], k["x"], k["f"], k["L"], k["n"]) == (
        60_000,
        119_999,
        "1m",
        True,
        7,
        8,
        2,
    )
    assert set(k) == set("tTsifLochlvnxqVQB")
    assert bf.rest_kline(k)[:7] == [60_000, k["o"], k["h"], k["l"], k["c"], k["v"], 119_999]


# ----------------------------------------------------------------------------- synthetic extras


def _interested(*parts: str) -> Callable[[str], bool]:
    return lambda stream: any(p in stream for p in parts)


def test_synthetic_sends_no_klines_or_depth_without_interest() -> None:
    events = list(SyntheticSource(["BTC/USDT"], rate=100, duration=3.0).events(clock))
    assert len(events) == 300
    assert not [e for e in events if "@kline" in e.stream or "@depth" in e.stream]


def test_synthetic_trade_and_agg_trade_show_the_same_trades() -> None:
    src = SyntheticSource(["BTC/USDT"], rate=200, total=300, channels=("trade", "aggTrade"))
    events = list(src.events(clock))
    trades = [e.payload for e in events if e.stream.endswith("@trade")]
    aggs = [e.payload for e in events if e.stream.endswith("@aggTrade")]
    assert len(trades) == len(aggs) == 150
    for t, a in zip(trades, aggs, strict=True):
        assert (t["t"], t["p"], t["q"], t["T"], t["m"]) == (a["f"], a["p"], a["q"], a["T"], a["m"])
        assert a["f"] == a["l"]
    assert [t["t"] for t in trades] == list(range(1, 151))


@pytest.mark.parametrize("kline_update", [0.25, 1.0])
def test_synthetic_klines_equal_the_trades_sent(kline_update: float) -> None:
    src = SyntheticSource(
        ["BTC/USDT", "ETH/USDT"],
        rate=40,
        duration=4.2,
        channels=("aggTrade", "trade", "ticker"),
        kline_update=kline_update,
    )
    t0 = T0 + 700  # not on a second boundary
    events = [(e.stream, e.payload) for e in src.events(lambda: t0, _interested("@kline_"))]
    finals = check_klines_against_trades(events)
    assert finals == 2 * 4  # 1s closes at +0.3, +1.3, +2.3, +3.3 s for 2 symbols
    one_m = [p for s, p in events if s == "btcusdt@kline_1m"]
    assert one_m and not any(p["k"]["x"] for p in one_m)
    if kline_update < 1:
        assert any(not p["k"]["x"] for s, p in events if s == "btcusdt@kline_1s")


def test_synthetic_klines_only_for_interested_streams_and_closes_cover_quiet_seconds() -> None:
    # a trade every 1.5 s: some seconds have none, yet each 1s interval is closed
    src = SyntheticSource(
        ["BTC/USDT"], rate=2, duration=6.0, channels=("trade", "ticker", "bookTicker")
    )
    events = [(e.stream, e.payload) for e in src.events(clock, _interested("btcusdt@kline_1s"))]
    assert {s for s, _ in events if "@kline" in s} == {"btcusdt@kline_1s"}
    check_klines_against_trades(events)
    finals = [p["k"] for s, p in events if s == "btcusdt@kline_1s" and p["k"]["x"]]
    assert [k["t"] for k in finals] == [T0 + i * 1000 for i in range(5)]
    assert any(k["n"] == 0 for k in finals)


def test_synthetic_depth_diffs_are_consecutive_and_track_the_price() -> None:
    src = SyntheticSource(["BTC/USDT"], rate=100, duration=2.0, channels=("aggTrade", "bookTicker"))
    state = MarketState(src.snapshots(), src.kline_intervals)
    book = LiveBook.from_snapshot(src.snapshots()["BTCUSDT"])
    last_u = book.last_update_id
    diffs = 0
    last_quote: Payload | None = None
    for ev in src.events(clock, _interested("@depth@100ms")):
        state.observe(ev.stream, ev.payload)
        if ev.stream.endswith("@bookTicker"):
            last_quote = ev.payload
        if ev.stream == "btcusdt@depth@100ms":
            diffs += 1
            assert ev.payload["U"] == last_u + 1 and ev.payload["u"] >= ev.payload["U"]
            last_u = ev.payload["u"]
            book.apply(ev.payload)
            snap = book.snapshot(100)
            best_bid, best_ask = Decimal(snap["bids"][0][0]), Decimal(snap["asks"][0][0])
            assert best_bid < best_ask and len(snap["bids"]) == len(snap["asks"]) == 10
            if last_quote is not None:  # the walk moved at most one step since the quote
                assert abs(best_bid / Decimal(last_quote["b"]) - 1) < Decimal("0.01")
    assert diffs == 20  # every 100 ms
    assert state.depth("BTCUSDT", 100) == book.snapshot(100)  # REST == the diffs applied
    assert "btcusdt@depth@100ms" in state.polled


def test_synthetic_trades_do_not_depend_on_interest() -> None:
    def trades(interest: Callable[[str], bool]) -> list[Payload]:
        src = SyntheticSource(["BTC/USDT"], rate=100, duration=2.0, seed=3)
        return [e.payload for e in src.events(clock, interest) if e.stream.endswith("@aggTrade")]

    assert trades(lambda s: False) == trades(lambda s: True)


def test_market_state_builds_the_same_candles_as_the_source_sent() -> None:
    src = SyntheticSource(["BTC/USDT"], rate=50, duration=3.5, channels=("trade", "aggTrade"))
    state = MarketState(src.snapshots(), src.kline_intervals)
    last: dict[int, Payload] = {}
    for ev in src.events(clock, _interested("btcusdt@kline_1s")):
        state.observe(ev.stream, ev.payload)
        if ev.stream == "btcusdt@kline_1s":
            last[ev.payload["k"]["t"]] = ev.payload["k"]
    rows = state.klines("BTCUSDT", "1s", None, None, 1000)
    closed = {t: bf.rest_kline(k) for t, k in last.items() if k["x"]}
    assert len(closed) == 3 and all(r in rows for r in closed.values())
    assert [r[0] for r in rows] == [T0 + i * 1000 for i in range(len(rows))]
    assert state.klines("BTCUSDT", "1s", T0 + 1000, None, 2) == rows[1:3]
    assert state.klines("BTCUSDT", "1s", None, T0 + 1000, 1) == rows[1:2]
    [minute] = state.klines("BTCUSDT", "1m", None, None, 10)
    assert minute[8] == sum(r[8] for r in rows)


def test_market_state_serves_replayed_kline_frames_and_trades() -> None:
    src = ReplaySource(bundled_recording(), speed=0)
    state = MarketState(src.snapshots(), src.kline_intervals)
    sent = []
    for ev in src.events(clock):
        state.observe(ev.stream, ev.payload)
        sent.append(ev)
    kline = next(e.payload for e in sent if e.stream == "nknusdt@kline_1m")
    assert state.klines("NKNUSDT", "1m", None, None, 500) == [bf.rest_kline(kline["k"])]
    assert state.klines("NKNUSDT", "1s", None, None, 500) == []
    trade = next(e.payload for e in sent if e.stream == "nknusdt@trade")
    [row] = state.trades_query("NKNUSDT", None, 10)
    assert (row["id"], row["price"], row["qty"], row["time"]) == (
        trade["t"],
        trade["p"],
        trade["q"],
        trade["T"],
    )
    assert Decimal(row["quoteQty"]) == (Decimal(trade["p"]) * Decimal(trade["q"])).quantize(Q8)


def test_market_state_trades_fall_back_to_agg_trades_and_quiet_tickers() -> None:
    src = SyntheticSource(["BTC/USDT"], rate=100, total=20, channels=("aggTrade",))
    state = MarketState(src.snapshots(), src.kline_intervals)
    aggs = []
    for ev in src.events(clock):
        state.observe(ev.stream, ev.payload)
        aggs.append(ev.payload)
    assert [r["id"] for r in state.trades_query("BTCUSDT", None, 5)] == [a["f"] for a in aggs[-5:]]
    assert [r["id"] for r in state.trades_query("BTCUSDT", 3, 2)] == [3, 4]
    quiet = state.ticker("BTCUSDT", 123)  # no ticker channel: a quiet ticker from the book
    assert (
        quiet["E"] == 123
        and quiet["n"] == 0
        and quiet["b"] == src.snapshots()["BTCUSDT"]["bids"][0][0]
    )


# ----------------------------------------------------------------------------- faults


class _NoTarget:
    def close_connections(self, abrupt: bool) -> int:
        return 0

    def inject_raw(self, texts: list[str]) -> int:
        return 0


def test_depth_gap_drops_per_stream_or_any_and_counts() -> None:
    faults = Faults(_NoTarget())
    assert not faults.depth_gap_pending()
    faults.depth_gap(2, "NKN/USDT")
    faults.depth_gap(1)
    assert faults.depth_gap_pending()
    assert faults.take_depth_drop("nknusdt@depth@100ms")
    assert faults.take_depth_drop("nknusdt@depth@100ms")
    assert faults.take_depth_drop("nknusdt@depth@100ms")  # the 'any stream' one
    assert not faults.take_depth_drop("nknusdt@depth@100ms")
    assert faults.depth_dropped == {"nknusdt@depth@100ms": 3}
    faults.depth_gap(1, "btcusdt@depth@100ms")
    assert not faults.take_depth_drop("ethusdt@depth@100ms")
    faults.clear()
    assert not faults.depth_gap_pending()
    with pytest.raises(ValueError):
        faults.depth_gap(0)
