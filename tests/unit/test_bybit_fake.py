"""The fake Bybit's pure parts: requests and replies, depth views, the two sources."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from typing import Any

import orjson
import pytest

from fake_exchange.bybit import BybitReplaySource, BybitSyntheticSource
from fake_exchange.bybit import frames as yf
from fake_exchange.bybit.market import BybitMarket, level_changes
from fake_exchange.bybit.recording import bybit_recording, load_bybit_recording
from fake_exchange.bybit.synthetic import market_of
from fake_exchange.bybit.ws_protocol import SPOT_ARGS_LIMIT, parse_request
from fake_exchange.levels import LevelBook

SYMBOLS = {"BTCUSDT", "ETHUSDT"}


def req(op: str, *args: str, req_id: Any = 7) -> str:
    return orjson.dumps({"op": op, "req_id": req_id, "args": list(args)}).decode()


# --------------------------------------------------------------------------- protocol


def test_a_subscribe_is_acked_once_for_all_its_topics() -> None:
    text = req("subscribe", "publicTrade.BTCUSDT", "orderbook.50.ETHUSDT", "tickers.BTCUSDT")
    r = parse_request(text, "linear", "c1", SYMBOLS, set())
    assert r.op == "subscribe" and len(r.topics) == 3
    assert r.reply == {"success": True, "ret_msg": "", "conn_id": "c1", "req_id": "7",
                       "op": "subscribe"}  # fmt: skip


@pytest.mark.parametrize(
    ("category", "topic", "ok"),
    [
        ("linear", "orderbook.500.BTCUSDT", True),
        ("spot", "orderbook.500.BTCUSDT", False),  # not a spot depth
        ("spot", "orderbook.1000.BTCUSDT", True),
        ("linear", "orderbook.20.BTCUSDT", False),
        ("linear", "kline.1.BTCUSDT", True),
        ("linear", "kline.1m.BTCUSDT", False),
        ("linear", "publicTrade.XYZUSDT", False),
        ("linear", "trades.BTCUSDT", False),
        ("inverse", "publicTrade.BTCUSDT", False),
    ],
)
def test_topics_served_per_category(category: str, topic: str, ok: bool) -> None:
    assert yf.topic_ok(category, topic, SYMBOLS) is ok


def test_an_unknown_or_already_subscribed_topic_fails_the_whole_request() -> None:
    bad = parse_request(req("subscribe", "publicTrade.BTCUSDT", "x.y"), "linear", "c", SYMBOLS,
                        set())  # fmt: skip
    assert bad.op == "error" and bad.reply is not None
    assert (
        bad.reply["success"] is False
        and bad.reply["ret_msg"] == "error:handler not found,topic:x.y"
    )
    dup = parse_request(req("subscribe", "publicTrade.ETHUSDT", "publicTrade.BTCUSDT"), "linear",
                        "c", SYMBOLS, {"publicTrade.BTCUSDT"})  # fmt: skip
    assert dup.op == "error" and dup.reply is not None
    assert dup.reply["ret_msg"] == "error:already subscribed,topic:publicTrade.BTCUSDT"
    assert dup.reply["req_id"] == "7" and dup.reply["op"] == "subscribe"
    again = parse_request(req("unsubscribe", "publicTrade.BTCUSDT"), "linear", "c", SYMBOLS,
                          {"publicTrade.BTCUSDT"})  # fmt: skip
    assert again.op == "unsubscribe" and again.reply is not None and again.reply["success"]


def test_spot_takes_at_most_ten_topics_a_request() -> None:
    many = [f"orderbook.1.S{i}" for i in range(SPOT_ARGS_LIMIT + 1)]
    symbols = {f"S{i}" for i in range(SPOT_ARGS_LIMIT + 1)}
    spot = parse_request(req("subscribe", *many), "spot", "c", symbols, set())
    assert spot.op == "error" and spot.reply is not None and "args size" in spot.reply["ret_msg"]
    assert parse_request(req("subscribe", *many), "linear", "c", symbols, set()).op == "subscribe"


def test_ping_gets_each_categorys_pong() -> None:
    spot = parse_request(req("ping", req_id=3), "spot", "c", SYMBOLS, set())
    linear = parse_request(req("ping", req_id=3), "linear", "c", SYMBOLS, set())
    assert spot.op == linear.op == "ping"
    assert spot.reply is not None and spot.reply["ret_msg"] == "pong"
    assert linear.reply is not None and linear.reply["op"] == "pong"
    assert linear.reply["req_id"] == "3" and int(linear.reply["args"][0]) > 0


@pytest.mark.parametrize("text", ["nope", "[]", '{"op":"auth"}', '{"op":"subscribe","args":[]}'])
def test_anything_else_is_an_invalid_op(text: str) -> None:
    r = parse_request(text, "linear", "c", SYMBOLS, set())
    assert r.op == "error" and r.reply is not None
    assert r.reply["success"] is False and r.reply["ret_msg"] == "error:invalid op"


# --------------------------------------------------------------------------- depth views


def test_level_changes_delete_what_left_and_set_what_changed() -> None:
    old = [["10", "1"], ["9", "2"], ["8", "3"]]
    new = [["10", "1"], ["9", "5"], ["7", "4"]]
    assert level_changes(old, new) == [["8", "0"], ["9", "5"], ["7", "4"]]
    assert level_changes(new, new) == []


def _apply(state: LevelBook, frame: dict[str, Any]) -> None:
    if frame["type"] == "snapshot":
        state.clear()
    state.apply(frame["data"]["a"], frame["data"]["b"])
    state.seq_id = frame["data"]["u"]


def test_a_depth_view_is_the_top_of_the_mirrored_book_with_its_own_u() -> None:
    """Every depth a client can subscribe, fed by the synthetic 25-level book: the snapshot
    plus the view's deltas is at every u exactly the top `depth` levels of the mirror."""
    source = BybitSyntheticSource(["AAA/USDT:USDT"], rate=1000, total=600, seed=5,
                                  channels=("orderbook",))  # fmt: skip
    market = BybitMarket(source.instruments())
    for ev in source.initial():
        market.observe(ev.category, ev.topic, ev.frame)
    clients = {}
    for depth in (1, 50, 200):
        topic = f"orderbook.{depth}.AAAUSDT"
        snap = market.snapshot("linear", topic, 1)
        assert snap is not None and snap["type"] == "snapshot"
        clients[topic] = LevelBook("AAAUSDT")
        _apply(clients[topic], snap)
    deltas: Counter[str] = Counter()
    for ev in source.events(itertools.count(1_000).__next__):
        for topic, frame in market.observe(ev.category, ev.topic, ev.frame):
            book = clients[topic]
            assert frame["type"] == "delta" and frame["data"]["u"] == book.seq_id + 1
            _apply(book, frame)
            deltas[topic] += 1
            depth = int(topic.split(".")[1])
            master = market.book("linear", "AAAUSDT")
            assert (book.bids(), book.asks()) == (master.bids(depth), master.asks(depth))
    assert deltas["orderbook.200.AAAUSDT"] == deltas["orderbook.50.AAAUSDT"] == 600
    assert 0 < deltas["orderbook.1.AAAUSDT"] < 600  # only when the best level changes
    assert len(clients["orderbook.1.AAAUSDT"].bids()) == 1


def test_a_market_without_a_book_gets_a_quiet_made_up_one() -> None:
    market = BybitMarket({"spot": [{"symbol": "BTCUSDT"}]})
    snap = market.snapshot("spot", "orderbook.50.BTCUSDT", 5)
    assert snap is not None and len(snap["data"]["b"]) == len(snap["data"]["a"]) == 5
    ticker = market.snapshot("spot", "tickers.BTCUSDT", 5)
    assert ticker is not None and "usdIndexPrice" in ticker["data"]
    assert market.snapshot("spot", "publicTrade.BTCUSDT", 5) is None


# --------------------------------------------------------------------------- replay


@pytest.fixture(scope="module")
def recorded() -> list[tuple[float, str, dict[str, Any]]]:
    rec = load_bybit_recording(bybit_recording())
    return [(f.ts, f.category, f.frame) for f in rec.frames]


def test_the_recording_is_a_linear_session_with_spot_and_linear_instruments(
    recorded: list[tuple[float, str, dict[str, Any]]],
) -> None:
    rec = load_bybit_recording(bybit_recording())
    assert len(rec.instruments["linear"]) == 800 and len(rec.instruments["spot"]) == 557
    kinds = Counter(f["topic"].split(".")[0] for _, c, f in recorded if c == "linear")
    assert kinds == {"orderbook": 995, "tickers": 489, "publicTrade": 67, "kline": 45}


def test_replay_starts_from_the_first_snapshots_and_pushes_the_rest_once(
    recorded: list[tuple[float, str, dict[str, Any]]],
) -> None:
    source = BybitReplaySource(speed=0)
    initial = source.initial()
    assert sorted(ev.topic for ev in initial) == sorted(
        f"{k}.{s}" for k in ("orderbook.200", "tickers") for s in
        ("BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT")
    )  # fmt: skip
    events = list(source.events(lambda: 1_000))
    assert len(events) == len(recorded) - len(initial)
    trades = [t for ev in events if ev.topic.startswith("publicTrade") for t in ev.frame["data"]]
    want = [t for _, _, f in recorded if f["topic"].startswith("publicTrade") for t in f["data"]]
    assert [t["i"] for t in trades] == [t["i"] for t in want] and len(trades) == 162
    assert {ev.frame["ts"] for ev in events} == {1_000}  # speed 0: every time is now...
    recorded_lag = [t["T"] - f["ts"] for _, _, f in recorded
                    if f["topic"].startswith("publicTrade") for t in f["data"]]  # fmt: skip
    assert [t["T"] - 1_000 for t in trades] == recorded_lag  # ...trade times kept by its frame


def test_replay_keeps_relative_time_and_a_loop_gives_new_ids(
    recorded: list[tuple[float, str, dict[str, Any]]],
) -> None:
    """Speed 2, looped: each pass's frames are the recorded ones at half the gaps, a pass
    later by (recording + loop gap) / 2; trade ids stay unique UUIDs."""
    source = BybitReplaySource(speed=2, loop=True, symbols=["SOLUSDT"], loop_gap=1.0)
    sol = [f for _, _, f in recorded if f["topic"] == "publicTrade.SOLUSDT"]
    n = sum(len(f["data"]) for f in sol)
    frames, trades = [], []
    for ev in source.events(lambda: 10_000_000):
        assert ev.topic.endswith(".SOLUSDT") and ev.delay >= 0
        if ev.topic == "publicTrade.SOLUSDT":
            frames.append(ev.frame)
            trades += ev.frame["data"]
        if len(trades) >= 2 * n:
            break
    first, second = trades[:n], trades[n : 2 * n]
    ids = [t["i"] for t in first + second]
    assert len(set(ids)) == 2 * n and all(uuid.UUID(i).version for i in ids)
    steps = {b["T"] - a["T"] for a, b in zip(first, second, strict=True)}
    assert max(steps) - min(steps) <= 1 and min(steps) > 0  # one shift for a pass (ms rounding)
    assert [b["S"] for b in second] == [a["S"] for a in first]
    spans = [(b["ts"] - a["ts"], (y["ts"] - x["ts"]) / 2)
             for (a, b), (x, y) in zip(itertools.pairwise(frames[: len(sol)]), itertools.pairwise(sol), strict=True)]  # fmt: skip
    assert all(abs(got - want) <= 1 for got, want in spans)  # gaps halved


# --------------------------------------------------------------------------- synthetic


@pytest.mark.parametrize(
    ("unified", "want"),
    [("BTC/USDT", ("spot", "BTCUSDT", "BTC", "USDT")),
     ("eth/usdt:usdt", ("linear", "ETHUSDT", "ETH", "USDT"))],
)  # fmt: skip
def test_market_of(unified: str, want: tuple[str, ...]) -> None:
    assert market_of(unified) == want


@pytest.mark.parametrize("bad", ["BTCUSDT", "BTC/USDT:USDC", "/USDT"])
def test_market_of_refuses_what_it_cannot_place(bad: str) -> None:
    with pytest.raises(ValueError):
        market_of(bad)


def test_synthetic_ids_and_frames_follow_bybits_kinds() -> None:
    source = BybitSyntheticSource(2, rate=600, total=1200, seed=9)
    instruments = source.instruments()
    assert any(e["symbol"] == "BTCUSDT" for e in instruments["spot"])
    events = list(source.events(itertools.count(1_000).__next__))
    assert len(events) == 1200
    markets = {(ev.category, ev.topic.split(".")[-1]) for ev in events}
    assert len(markets) == 4 and {c for c, _ in markets} == {"spot", "linear"}
    spot_ids = [int(t["i"]) for ev in events if ev.category == "spot"
                and ev.topic.startswith("publicTrade") for t in ev.frame["data"]]  # fmt: skip
    assert spot_ids == sorted(set(spot_ids))  # one counter for every spot symbol...
    by_symbol = [int(t["i"]) for ev in events if ev.topic == "publicTrade.ETHUSDT"
                 and ev.category == "spot" for t in ev.frame["data"]]  # fmt: skip
    assert any(b - a > 1 for a, b in itertools.pairwise(by_symbol))  # ...so a symbol's jump
    linear_ids = [t["i"] for ev in events if ev.category == "linear"
                  and ev.topic.startswith("publicTrade") for t in ev.frame["data"]]  # fmt: skip
    assert all(uuid.UUID(i).version == 4 for i in linear_ids)
    kinds = Counter((ev.category, ev.topic.split(".")[0], ev.frame["type"]) for ev in events)
    assert set(kinds) == {
        ("spot", "publicTrade", "snapshot"), ("linear", "publicTrade", "snapshot"),
        ("spot", "tickers", "snapshot"), ("linear", "tickers", "delta"),
        ("spot", "orderbook", "delta"), ("linear", "orderbook", "delta"),
    }  # fmt: skip
    us = [ev.frame["data"]["u"] for ev in events if ev.topic == "orderbook.200.ETHUSDT"
          and ev.category == "linear"]  # fmt: skip
    assert us == list(range(us[0], us[0] + len(us)))
    again = list(BybitSyntheticSource(2, rate=600, total=1200, seed=9).events(
        itertools.count(1_000).__next__))  # fmt: skip
    assert [e.frame for e in again] == [e.frame for e in events]


def test_a_linear_ticker_delta_carries_only_what_changed() -> None:
    old = {"symbol": "X", "lastPrice": "1", "bid1Price": "0.9"}
    assert yf.changed(old, {"symbol": "X", "lastPrice": "2", "bid1Price": "0.9"}) == {
        "symbol": "X", "lastPrice": "2"}  # fmt: skip
