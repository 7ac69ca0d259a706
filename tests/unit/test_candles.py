from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumers.candles import CandleBuilder, interval_ms
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
    b = CandleBuilder(["1s"])
    b.add_trade(5_500, 1.0, 1.0)
    b.advance(5_999)
    assert b.table("1s").num_rows == 0
    b.advance(6_000)
    assert b.table("1s").column("start_ms").to_pylist() == [5_000]
    b.advance(60_000)  # no trades: no invented flat candles
    assert b.table("1s").num_rows == 1


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
