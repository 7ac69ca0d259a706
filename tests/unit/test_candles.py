from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.candles import CandleBuilder, interval_ms
from consumers.exchange_candles import SCHEMA, CandleSeries, ExchangeCandles
from marketbus.errors import ConfigError


def test_interval_parsing() -> None:
    assert interval_ms("1s") == 1_000
    assert interval_ms("5m") == 300_000
    assert interval_ms("1h") == 3_600_000
    assert interval_ms("1d") == 86_400_000
    assert interval_ms(250) == 250
    for bad in ("", "0m", "5x", "m5", -1, 0):
        with pytest.raises(ConfigError):
            interval_ms(bad)


def test_ohlcv_within_and_across_intervals() -> None:
    b = CandleBuilder(["1s", "1m"])
    b.add_trades([(1_000, 10.0, 1.0), (1_400, 12.0, 2.0), (1_999, 9.0, 1.0), (2_000, 11.0, 0.5)])
    sec = b.table("1s").to_pylist()
    assert sec == [
        {"start_ms": 1_000, "open": 10.0, "high": 12.0, "low": 9.0, "close": 9.0,
         "volume": 4.0, "quote_volume": 10 + 24 + 9.0, "trades": 3}
    ]  # fmt: skip
    assert b.table("1m").num_rows == 0  # the minute is still open
    minute = b.table("1m", include_open=True).to_pylist()[0]
    assert minute["open"] == 10.0 and minute["close"] == 11.0 and minute["trades"] == 4


def test_a_quiet_market_closes_its_candle_when_time_passes() -> None:
    b = CandleBuilder(["1s"], grace_ms=0)
    b.add_trade(5_500, 1.0, 1.0)
    b.advance(5_999)
    assert b.table("1s").num_rows == 0
    b.advance(6_000)
    assert b.table("1s").column("start_ms").to_pylist() == [5_000]
    b.advance(60_000)  # no trades: no invented flat candles
    assert b.table("1s").num_rows == 1


def test_a_trade_that_arrives_within_the_grace_still_counts() -> None:
    b = CandleBuilder(["1s"], grace_ms=2_000)
    b.add_trade(5_100, 1.0, 1.0)
    b.advance(6_500)  # the interval ended 0.5 s ago: still open for late arrivals
    b.add_trade(5_900, 3.0, 2.0)
    b.advance(8_000)
    (c,) = b.table("1s").to_pylist()
    assert (c["open"], c["high"], c["close"], c["volume"], c["trades"]) == (1.0, 3.0, 3.0, 3.0, 2)


def test_a_trade_after_a_time_close_never_makes_a_second_candle_of_the_interval() -> None:
    b = CandleBuilder(["1s"], grace_ms=0)
    b.add_trade(5_100, 1.0, 1.0)
    b.advance(6_000)  # closed on time
    b.add_trade(5_900, 3.0, 2.0)  # too late: dropped, counted
    b.add_trade(6_100, 4.0, 1.0)
    b.advance(7_000)
    starts = b.table("1s").column("start_ms").to_pylist()
    assert starts == [5_000, 6_000] and b.late_trades == 1


def test_late_trades_do_not_reopen_a_closed_candle() -> None:
    b = CandleBuilder(["1s"])
    b.add_trade(1_100, 1.0, 1.0)
    b.add_trade(2_100, 2.0, 1.0)
    b.add_trade(1_900, 100.0, 1.0)  # late
    assert b.table("1s", include_open=True).column("high").to_pylist() == [1.0, 2.0]


@given(
    st.lists(
        st.tuples(st.integers(0, 10_000_000), st.floats(0.01, 1e6), st.floats(0, 1e3)),
        min_size=1,
        max_size=200,
    )
)
def test_candles_agree_with_a_direct_computation(trades: list[tuple[int, float, float]]) -> None:
    trades.sort(key=lambda t: t[0])
    b = CandleBuilder(["1m"])
    b.add_trades(trades)
    b.advance(20_000_000)
    got = b.table("1m").to_pylist()
    buckets: dict[int, list[tuple[int, float, float]]] = {}
    for t in trades:
        buckets.setdefault(t[0] - t[0] % 60_000, []).append(t)
    assert [c["start_ms"] for c in got] == sorted(buckets)
    for c in got:
        ts = buckets[c["start_ms"]]
        assert c["open"] == ts[0][1] and c["close"] == ts[-1][1]
        assert c["high"] == max(t[1] for t in ts) and c["low"] == min(t[1] for t in ts)
        assert c["volume"] == pytest.approx(sum(t[2] for t in ts))
        assert c["trades"] == len(ts)


# -- exchange candles: one row per interval start, last update wins ------------------------


def rec(open_ms: int, close: float, *, closed: bool = False, ts: int = 0) -> tuple[object, ...]:
    """A CandleSeries record: open_ms, o, h, l, c, v, qv, closed, ts_ms, recv_ns, entry_ms."""
    return (open_ms, 1.0, max(close, 1.0), min(close, 1.0), close, 2.0, 3.0, closed, ts, ts, ts)


def opens_closes(s: CandleSeries, **kw: Any) -> list[tuple[int, float]]:
    t = s.table(**kw)
    return list(zip(t.column("open_ms").to_pylist(), t.column("close").to_pylist(), strict=True))


def test_updates_of_an_open_candle_collapse_to_one_row() -> None:
    s = CandleSeries()
    for k in range(5):
        s.add(rec(60_000, 10.0 + k, ts=k))
    s.add(rec(60_000, 20.0, closed=True, ts=5))
    s.add(rec(120_000, 21.0, ts=6))
    t = s.table()
    assert t.schema == SCHEMA
    assert t.to_pylist() == [
        {"open_ms": 60_000, "open": 1.0, "high": 20.0, "low": 1.0, "close": 20.0, "volume": 2.0,
         "quote_volume": 3.0, "closed": True, "ts_ms": 5, "recv_ns": 5, "entry_ms": 5},
        {"open_ms": 120_000, "open": 1.0, "high": 21.0, "low": 1.0, "close": 21.0, "volume": 2.0,
         "quote_volume": 3.0, "closed": False, "ts_ms": 6, "recv_ns": 6, "entry_ms": 6},
    ]  # fmt: skip
    assert opens_closes(s, include_open=False) == [(60_000, 20.0)]
    assert opens_closes(s, n=1) == [(120_000, 21.0)]
    assert s.last() is not None and s.last()["close"] == 21.0  # type: ignore[index]
    assert len(s) == 2 and s.updates == 7


def test_a_republished_older_candle_replaces_or_fills_in_place() -> None:
    s = CandleSeries()
    for m in (1, 2, 4, 5):
        s.add(rec(m * 60_000, float(m)))
    s.add(rec(2 * 60_000, 22.0, closed=True))  # republished after a reconnect: last wins
    s.add(rec(3 * 60_000, 3.0, closed=True))  # a gap filled late goes in its place
    assert opens_closes(s) == [(60_000, 1.0), (120_000, 22.0), (180_000, 3.0), (240_000, 4.0),
                               (300_000, 5.0)]  # fmt: skip


def test_memory_is_bounded_by_keep_and_the_oldest_go_first() -> None:
    s = CandleSeries(keep=3)
    for m in range(1, 1001):
        s.add(rec(m, float(m)))
    assert [o for o, _ in opens_closes(s)] == [998, 999, 1000]
    assert s._a.size <= 6  # at most 2 * keep slots, whatever went through
    s.add(rec(5, 5.0))  # older than everything held while full: dropped
    assert s.dropped == 1 and [o for o, _ in opens_closes(s)] == [998, 999, 1000]
    s.add(rec(999, 99.0))
    s.add(rec(998, 98.5))
    assert opens_closes(s) == [(998, 98.5), (999, 99.0), (1000, 1000.0)]


def test_an_empty_series_and_unknown_intervals() -> None:
    xc = ExchangeCandles(keep=10)
    assert xc.table("1m").num_rows == 0 and xc.table("1m").schema == SCHEMA
    with pytest.raises(ConfigError, match="7m"):
        xc.table("7m")
    with pytest.raises(ConfigError):
        CandleSeries(keep=0)


def test_exchange_candles_keep_intervals_apart() -> None:
    xc = ExchangeCandles()
    # buffer rows: ts, recv, entry, interval, open_ms, o, h, l, c, v, qv, closed
    xc.add_row((1, 2, 3, "5m", 0, 1.0, 2.0, 0.5, 1.5, 9.0, math.nan, False))
    xc.add_row((4, 5, 6, "1m", 60_000, 1.0, 2.0, 0.5, 1.7, 1.0, 2.0, True))
    xc.add_row((7, 8, 9, "5m", 0, 1.0, 2.5, 0.5, 2.4, 10.0, math.nan, False))
    assert xc.intervals == ["1m", "5m"]
    five = xc.table("5m").to_pylist()
    assert len(five) == 1 and five[0]["close"] == 2.4 and five[0]["entry_ms"] == 9
    assert math.isnan(five[0]["quote_volume"])
    assert xc.table("1m").column("closed").to_pylist() == [True]


@given(
    st.sampled_from([1, 2, 3, 6, 40, 100]),
    st.lists(
        st.tuples(st.one_of(st.integers(0, 12), st.integers(0, 300)), st.booleans()),
        min_size=1,
        max_size=400,
    ),
)
def test_series_agrees_with_a_dict_where_the_last_update_wins(
    keep: int, updates: list[tuple[int, bool]]
) -> None:
    s = CandleSeries(keep=keep)
    ref: dict[int, tuple[float, bool]] = {}
    for k, (m, closed) in enumerate(updates):
        s.add(rec(m * 60_000, float(k + 1), closed=closed))
        ref[m * 60_000] = (float(k + 1), closed)
        if len(ref) > keep:
            del ref[min(ref)]
        assert len(s) == len(ref)
    want = sorted(ref.items())
    assert opens_closes(s) == [(o, c) for o, (c, _) in want]
    assert opens_closes(s, include_open=False) == [(o, c) for o, (c, cl) in want if cl]
    assert opens_closes(s, n=2) == [(o, c) for o, (c, _) in want][-2:]


def test_growth_and_compaction_keep_order() -> None:
    s = CandleSeries(keep=100)
    for m in range(0, 128, 2):  # 64 candles fill the first 64 slots
        s.add(rec(m, float(m)))
    s.add(rec(7, 7.0))  # an insert at the array's end: grows first
    for m in range(128, 1000):
        s.add(rec(m, float(m)))
        if m % 97 == 0:
            s.add(rec(m - 50, -1.0))  # republished, in place
    got = opens_closes(s)
    assert [o for o, _ in got] == list(range(900, 1000))
    assert dict(got)[920] == -1.0 and len(s) == 100 and s._a.size <= 200
