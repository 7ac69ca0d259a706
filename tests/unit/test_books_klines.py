"""Pure book and candle logic of the publisher: top-N cut, gate, throttle, candle tracking."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.models import BookTop, Candle
from publisher.books import BookGate, book_from_ccxt
from publisher.klines import CandleTracker
from publisher.normalize import NormalizeError


def ccxt_book(bids: list[list[float]], asks: list[list[float]], nonce: int = 7) -> dict:
    return {"symbol": "BTC/USDT", "bids": bids, "asks": asks, "timestamp": 1_700_000_000_123,
            "nonce": nonce}  # fmt: skip


def test_book_from_ccxt_cuts_the_top_levels_and_keeps_the_update_id() -> None:
    ob = ccxt_book([[100.0, 1.0], [99.5, 2.0], [99.0, 3.0]], [[100.5, 1.5], [101.0, 0.5]])
    b = book_from_ccxt("binance", "BTC/USDT", ob, depth=2, recv_ns=5)
    assert b.bids == ((100.0, 1.0), (99.5, 2.0))
    assert b.asks == ((100.5, 1.5), (101.0, 0.5))
    assert b.seq == 7 and b.ts_ms == 1_700_000_000_123 and b.recv_ns == 5


def test_a_book_without_event_time_takes_the_receive_time() -> None:
    ob = ccxt_book([[1.0, 1.0]], [[2.0, 1.0]])
    ob["timestamp"] = None
    assert book_from_ccxt("x", "BTC/USDT", ob, 5, recv_ns=3_000_000_000).ts_ms == 3_000


@pytest.mark.parametrize(
    ("bids", "asks", "why"),
    [
        ([[101.0, 1.0]], [[100.0, 1.0]], "crossed"),
        ([[100.0, 1.0]], [[100.0, 1.0]], "crossed"),
        ([[99.0, 1.0], [100.0, 1.0]], [[101.0, 1.0]], "descending"),
        ([[99.0, 1.0]], [[102.0, 1.0], [101.0, 1.0]], "ascending"),
        ([[0.0, 1.0]], [[101.0, 1.0]], "greater than 0"),
        ([[99.0, -1.0]], [[101.0, 1.0]], "greater than or equal"),
    ],
)
def test_a_broken_book_is_never_published(bids: list, asks: list, why: str) -> None:
    with pytest.raises(NormalizeError, match=why):
        book_from_ccxt("binance", "BTC/USDT", ccxt_book(bids, asks), 20, 1)


def test_the_codec_refuses_a_crossed_book_from_the_wire() -> None:
    good = BookTop(exchange="x", symbol="A/B", ts_ms=1, recv_ns=1, seq=1,
                   bids=((1.0, 1.0),), asks=((2.0, 1.0),))  # fmt: skip
    arr = [codec.SCHEMA_VERSION, "B", "x", "A/B", 1, 1, 1, [3.0, 1.0], [2.0, 1.0]]
    import msgpack

    assert codec.decode(codec.pack(good)) == good
    with pytest.raises(DecodeError, match="crossed"):
        codec.decode(msgpack.packb(arr))
    with pytest.raises(DecodeError, match="flat list"):
        codec.decode(msgpack.packb([*arr[:7], [1.0], [2.0, 1.0]]))


def rec(bid: float, seq: int = 1, symbol: str = "BTC/USDT") -> BookTop:
    return BookTop(exchange="x", symbol=symbol, ts_ms=1, recv_ns=1, seq=seq,
                   bids=((bid, 1.0),), asks=((bid + 1, 1.0),))  # fmt: skip


def test_gate_skips_books_whose_top_levels_did_not_change() -> None:
    gate = BookGate()
    assert gate.offer(rec(10.0, seq=1), 0) is not None
    assert gate.offer(rec(10.0, seq=2), 1) is None  # a change deeper than the top N
    assert gate.offer(rec(11.0, seq=3), 2) is not None
    assert (gate.stats.published, gate.stats.unchanged) == (2, 1)


def test_throttle_sends_at_most_one_per_interval_and_always_the_last_state() -> None:
    gate = BookGate(interval_ms=100)
    assert gate.offer(rec(10.0), 0) is not None
    assert gate.offer(rec(11.0), 10) is None
    assert gate.offer(rec(12.0), 20) is None  # replaces the held one
    assert gate.due(50) == []
    due = gate.due(100)
    assert [b.bids[0][0] for b in due] == [12.0]
    assert gate.due(300) == []  # nothing new held
    assert gate.offer(rec(13.0), 301) is not None  # interval passed: straight out
    assert gate.stats.throttled == 1


def test_forget_makes_the_next_book_go_out_whatever_it_holds() -> None:
    gate = BookGate()
    gate.offer(rec(10.0), 0)
    gate.forget("BTC/USDT")
    assert gate.offer(rec(10.0), 1) is not None


def row(open_ms: int, o: float, h: float, low: float, c: float, v: float) -> list[float]:
    return [open_ms, o, h, low, c, v]


def test_candles_open_then_closed_when_the_next_interval_shows_up() -> None:
    t = CandleTracker("binance")
    out = t.update("BTC/USDT", "1m", [row(60_000, 1, 2, 1, 2, 5)], 61_000_000_000)
    assert [(c.open_ms, c.close, c.closed) for c in out] == [(60_000, 2.0, False)]
    assert t.update("BTC/USDT", "1m", [row(60_000, 1, 2, 1, 2, 5)], 61_500_000_000) == []
    out = t.update(
        "BTC/USDT", "1m", [row(60_000, 1, 3, 1, 3, 6), row(120_000, 3, 3, 3, 3, 1)], 121_000_000_000
    )
    assert [(c.open_ms, c.close, c.volume, c.closed) for c in out] == [
        (60_000, 3.0, 6.0, True),
        (120_000, 3.0, 1.0, False),
    ]


def test_a_quiet_market_gets_its_candle_closed_on_time() -> None:
    t = CandleTracker("okx", grace_ms=2_000)
    t.update("BTC/USDT", "1m", [row(60_000, 1, 1, 1, 1, 0)], 60_500_000_000)
    assert t.expire(121_000_000_000) == []  # the interval ended 1 s ago: within the grace
    closed = t.expire(122_000_000_000)
    assert [(c.open_ms, c.closed) for c in closed] == [(60_000, True)]
    assert t.expire(200_000_000_000) == []  # once


def test_the_first_look_publishes_only_the_current_candle_not_history() -> None:
    t = CandleTracker("binance")
    rows = [row(i * 60_000, 1, 1, 1, 1, 1) for i in range(1, 6)]
    out = t.update("BTC/USDT", "1m", rows, 400_000_000_000)
    assert [c.open_ms for c in out] == [300_000]


def test_an_impossible_candle_is_an_error_not_a_record() -> None:
    with pytest.raises(NormalizeError):
        CandleTracker("x").update("A/B", "1m", [row(0, 5, 4, 1, 2, 1)], 1)


prices = st.floats(min_value=1e-8, max_value=1e9, allow_nan=False)


@given(st.lists(st.tuples(prices, prices), min_size=0, max_size=30), st.integers(0, 2**63 - 1))
def test_book_wire_round_trip(levels: list[tuple[float, float]], seq: int) -> None:
    ps = sorted({p for p, _ in levels})
    mid = len(ps) // 2
    bids = tuple((p, 1.5) for p in reversed(ps[:mid]))
    asks = tuple((p, 2.5) for p in ps[mid:])
    b = BookTop(exchange="okx", symbol="BTC/USDT", ts_ms=1, recv_ns=2, seq=seq, bids=bids,
                asks=asks)  # fmt: skip
    assert codec.decode(codec.pack(b)) == b
    assert "BTC/USDT" in codec.human(b)


@given(prices, prices, prices, prices, st.booleans())
def test_candle_wire_round_trip(a: float, b: float, c: float, d: float, closed: bool) -> None:
    low, o, cl, h = sorted((a, b, c, d))
    k = Candle(exchange="binance", symbol="ETH/USDT", ts_ms=5, recv_ns=6, interval="5m",
               open_ms=300_000, open=o, high=h, low=low, close=cl, volume=1.0, closed=closed)  # fmt: skip
    assert codec.decode(codec.pack(k)) == k
