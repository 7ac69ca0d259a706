"""The Binance fake's USD-M venue without sockets: frame shapes, the stream grammar and url
categories, the replay of BINANCE_FUTURES.jsonl (pu chains across loop passes), the synthetic
source's futures frames and derivatives, REST bodies from the market state, the limits."""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Any

import pytest

from fake_exchange import ReplaySource, SyntheticSource, bundled_recording, usdm, usdm_synthetic
from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import SPOT, USDM
from fake_exchange.limits import USDM_LIMITS, BinanceLimits, rest_weight
from fake_exchange.market_state import MarketState
from fake_exchange.recording import load_recording
from fake_exchange.sources import USDM_DEFAULT_CHANNELS, Event, unified_symbols

T0 = 1_700_000_000_000
RECORDED = ("SUSHIUSDT", "AKROUSDT", "KEEPUSDT", "CTKUSDT")


def clock() -> int:
    return T0


def test_the_bundled_recording_is_usdm_and_ships_with_the_package() -> None:
    path = bundled_recording(USDM)
    assert path.name == "BINANCE_FUTURES.jsonl" and path.exists()
    rec = load_recording(path)
    assert rec.venue is USDM and load_recording(bundled_recording()).venue is SPOT
    assert sorted(rec.snapshots) == sorted(RECORDED)
    kinds = Counter(f.stream.partition("@")[2] for f in rec.frames)
    assert kinds == {"depth@100ms": 368, "bookTicker": 312, "aggTrade": 51, "kline_1m": 36}
    names = unified_symbols(rec.exchange_info)
    assert names["SUSHIUSDT"] == "SUSHI/USDT:USDT"
    assert names["BTCUSDT_210924"] == "BTC/USDT:USDT-210924"
    assert names["BTCBUSD"] == "BTC/BUSD:BUSD"


# --------------------------------------------------------------------------- frames


def test_usdm_frames_differ_from_spot_where_binance_does() -> None:
    agg = bf.agg_trade("X", 1, "1", "2", 3, 4, 5, 6, True, futures=True)
    assert "M" not in agg and bf.agg_trade("X", 1, "1", "2", 3, 4, 5, 6, True)["M"] is True
    assert "M" not in bf.rest_agg_trade(agg)
    depth = bf.depth_update("X", 10, 12, [["1", "2"]], [], 7, prev_final=8)
    assert (depth["U"], depth["u"], depth["pu"], depth["T"], depth["E"]) == (10, 12, 8, 7, 7)
    assert "pu" not in bf.depth_update("X", 10, 12, [], [], 7)
    book = bf.book_ticker("X", 3, "1", "2", "3", "4", event_ms=9)
    assert (book["e"], book["T"], book["E"]) == ("bookTicker", 9, 9)
    assert "e" not in bf.book_ticker("X", 3, "1", "2", "3", "4")
    trade = bf.trade("X", 5, "1", "2", 3, 4, False, futures=True)
    assert trade["X"] == "MARKET" and "M" not in trade
    assert "isBestMatch" not in bf.rest_trade(5, "1", "2", 3, False, futures=True)


def test_usdm_tickers_carry_no_best_bid_or_ask() -> None:
    state = MarketState({}, venue=USDM)
    quiet = state.ticker("XUSDT", T0)
    assert quiet["e"] == "24hrTicker" and not {"b", "B", "a", "A", "x"} & quiet.keys()
    rest = bf.rest_ticker(quiet)
    assert not {"bidPrice", "askPrice", "prevClosePrice"} & rest.keys()
    assert rest["lastPrice"] == quiet["c"] and rest["count"] == 0
    assert {"bidPrice", "prevClosePrice"} <= bf.rest_ticker(MarketState({}).ticker("X", T0)).keys()


@pytest.mark.parametrize(
    ("stream", "on", "ok"),
    [
        ("btcusdt@depth@100ms", "public", True),
        ("btcusdt@depth@100ms", "market", False),
        ("btcusdt@bookTicker", "public", True),
        ("btcusdt@aggTrade", "market", True),
        ("btcusdt@aggTrade", "public", False),
        ("btcusdt@markPrice@1s", "market", True),
        ("btcusdt@markPrice", None, True),
        ("btcusdt@forceOrder", "market", True),
        ("btcusdt@kline_1m", "market", True),
        ("btcusdt@kline_1s", "market", False),  # spot only
        ("btcusdt@avgPrice", None, False),  # spot only
        ("btcusdt@openInterest", None, False),  # internal: REST only
        ("ethusdt@aggTrade", None, False),  # unknown symbol
        ("!markPrice@arr@1s", "market", True),
        ("!bookTicker", "public", True),
        ("!forceOrder@arr", "public", False),
    ],
)
def test_the_usdm_stream_grammar_and_url_categories(stream: str, on: Any, ok: bool) -> None:
    assert usdm.stream_ok(stream, {"BTCUSDT"}.__contains__, on) is ok


# --------------------------------------------------------------------------- replay


def test_a_looping_replay_keeps_every_pu_chain_and_id_sequence_unbroken() -> None:
    """Three passes of the recording: each symbol's depth diffs chain by pu (the seam too),
    aggTrade ids stay consecutive, times only grow, and USD-M's frames keep their shape."""
    one = len(list(ReplaySource(bundled_recording(USDM), speed=1).events(clock)))
    src = ReplaySource(bundled_recording(USDM), speed=1, loop=True)
    assert src.venue is USDM
    last_u: dict[str, int] = {}
    last_a: dict[str, int] = {}
    last_t: dict[str, int] = {}
    chained = aggs = 0
    for ev in itertools.islice(src.events(clock), 3 * one):
        channel, d = ev.stream.partition("@")[2], ev.payload
        if channel == "depth@100ms":
            if d["s"] in last_u:
                assert d["pu"] == last_u[d["s"]] and d["U"] > d["pu"]
                chained += 1
            last_u[d["s"]] = d["u"]
            assert {"e", "E", "T", "s", "U", "u", "pu", "b", "a"} == d.keys()
            assert d["T"] > T0 - 1_000  # the exchange's clock: a little before the first frame
        elif channel == "aggTrade":
            assert "M" not in d
            if d["s"] in last_a:
                assert d["a"] == last_a[d["s"]] + 1
            last_a[d["s"]] = d["a"]
            aggs += 1
        elif channel == "bookTicker":
            assert d["e"] == "bookTicker" and d["T"] > T0 - 1_000
        elif channel == "ticker":
            assert "b" not in d and "c" in d
        elif channel == "trade":
            assert d["X"] == "MARKET"
        if "E" in d:
            assert d["E"] >= last_t.get(ev.stream, 0)
            last_t[ev.stream] = d["E"]
    assert aggs == 3 * 51 and chained == 3 * 368 - 4


# --------------------------------------------------------------------------- synthetic


def synthetic(**kw: Any) -> SyntheticSource:
    return SyntheticSource(["AAA/USDT:USDT", "BBB/USDT"], rate=1000, total=600, seed=7,
                           venue=USDM, channels=USDM_DEFAULT_CHANNELS, **kw)  # fmt: skip


def play(src: SyntheticSource, state: MarketState | None = None) -> list[Event]:
    """Every event with every stream read (depth too), applied to the market state."""
    out = []
    for ev in src.events(clock, lambda s: True):
        if state is not None:
            state.observe(ev.stream, ev.payload)
        out.append(ev)
    return out


def test_synthetic_usdm_symbols_are_perpetuals_with_usdm_entries() -> None:
    src = synthetic()
    info = src.exchange_info()
    entry = next(s for s in info["symbols"] if s["symbol"] == "AAAUSDT")
    assert (entry["contractType"], entry["marginAsset"]) == ("PERPETUAL", "USDT")
    assert unified_symbols(info)["BBBUSDT"] == "BBB/USDT:USDT"
    ints = SyntheticSource(3, venue=USDM)
    assert len(ints.symbols()) == 3 and all(s.endswith("USDT") for s in ints.symbols())
    with pytest.raises(ValueError, match="BASE/QUOTE"):
        SyntheticSource(["AAA/USDT:USDC"], venue=USDM).exchange_info()
    with pytest.raises(ValueError, match="unsupported channels"):
        SyntheticSource(["AAA/USDT"], channels=("aggTrade", "markPrice@1s"))  # spot: none


def test_synthetic_usdm_depth_chains_by_pu_with_skipping_ids_and_rest_agrees() -> None:
    src = synthetic()
    state = MarketState(src.snapshots(), src.kline_intervals, USDM)
    events = play(src, state)
    diffs = [e.payload for e in events if e.stream == "aaausdt@depth@100ms"]
    assert len(diffs) > 5 and diffs[0]["pu"] == 0
    assert all(b["pu"] == a["u"] for a, b in itertools.pairwise(diffs))
    assert any(d["U"] != d["pu"] + 1 for d in diffs)  # ids skip: only pu chains them
    snap = state.depth("AAAUSDT", 5)
    assert list(snap) == ["lastUpdateId", "E", "T", "bids", "asks"]
    assert snap["lastUpdateId"] == diffs[-1]["u"] and snap["E"] == state.now_ms


def test_synthetic_usdm_derivatives_move_and_rest_answers_the_last_state() -> None:
    src = synthetic()
    state = MarketState(src.snapshots(), src.kline_intervals, USDM)
    events = play(src, state)
    marks = [e.payload for e in events if e.stream == "aaausdt@markPrice@1s"]
    liqs = [e.payload for e in events if e.stream == "aaausdt@forceOrder"]
    ois = [e.payload for e in events if e.stream == "aaausdt@openInterest"]
    assert len(marks) == len(liqs) == 600 // 8  # 2 symbols x 4 channels, round robin
    assert len(ois) == len(marks)  # one with each mark frame, moving from the start value
    start = float(src.open_interest()["AAAUSDT"])
    assert 0.9 < float(ois[0]["openInterest"]) / start < 1.1 and src.open_interest().keys() == {
        "AAAUSDT", "BBBUSDT"}  # fmt: skip
    assert ReplaySource(bundled_recording(USDM)).open_interest() == {}
    rates = [m["r"] for m in marks]
    assert len(set(rates)) == len(marks) // usdm_synthetic.FUNDING_EVERY + 1
    assert all(m["T"] == usdm.next_funding_ms(T0) for m in marks)
    assert {liq["o"]["S"] for liq in liqs} == {"BUY", "SELL"}
    assert all(liq["o"]["s"] == "AAAUSDT" and liq["o"]["X"] == "FILLED" for liq in liqs)
    premium = state.premium_index("AAAUSDT", T0)
    last = marks[-1]
    assert (premium["markPrice"], premium["indexPrice"], premium["lastFundingRate"]) == (
        last["p"], last["i"], last["r"])  # fmt: skip
    assert state.open_interest_now("AAAUSDT", T0) == {
        "openInterest": ois[-1]["openInterest"], "symbol": "AAAUSDT", "time": ois[-1]["time"]
    }  # fmt: skip
    assert [e.payload for e in play(synthetic())] == [e.payload for e in events]  # seeded


def test_quiet_premium_index_and_open_interest_before_any_frame() -> None:
    state = MarketState({}, venue=USDM)
    premium = state.premium_index("XUSDT", T0)
    assert premium["lastFundingRate"] == "0.00010000"
    assert premium["nextFundingTime"] == usdm.next_funding_ms(T0) > T0
    assert state.open_interest_now("XUSDT", T0) == {
        "openInterest": "0", "symbol": "XUSDT", "time": T0
    }  # fmt: skip


# --------------------------------------------------------------------------- limits


def test_usdm_limits_and_weights_are_binance_futures() -> None:
    assert (USDM_LIMITS.weight_per_window, USDM_LIMITS.streams_per_connection,
            USDM_LIMITS.messages_per_second) == (2_400, 200, 10)  # fmt: skip
    assert BinanceLimits().weight_per_window == 6_000  # spot's unchanged
    weights = {
        ("/fapi/v1/depth", "limit=50"): 2,
        ("/fapi/v1/depth", "limit=100"): 5,
        ("/fapi/v1/depth", "limit=500"): 10,
        ("/fapi/v1/depth", "limit=1000"): 20,
        ("/fapi/v1/klines", "limit=99"): 1,
        ("/fapi/v1/klines", "limit=499"): 2,
        ("/fapi/v1/klines", "limit=1000"): 5,
        ("/fapi/v1/klines", "limit=1500"): 10,
        ("/fapi/v1/ticker/24hr", "symbol=X"): 1,
        ("/fapi/v1/ticker/24hr", ""): 40,
        ("/fapi/v1/aggTrades", ""): 20,
        ("/fapi/v1/exchangeInfo", ""): 1,
        ("/fapi/v1/openInterest", "symbol=X"): 1,
        ("/api/v3/depth", "limit=1000"): 50,  # spot's
    }
    for (path, query), weight in weights.items():
        q = dict(kv.split("=") for kv in query.split("&") if kv)
        assert rest_weight(path, q) == weight, (path, query)
