"""Every frame the fake exchange sends arrives in the consumer's buffers once, with its values."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fake_exchange import ReplaySource, SyntheticSource, bundled_recording
from tests.e2e.conftest import Pipeline

pytestmark = pytest.mark.e2e

RECORDED = ["NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR"]


def assert_trades_match(p: Pipeline) -> int:
    """Each aggTrade frame sent == one trade row, field by field, in order; returns the count."""
    total = 0
    for symbol, frames in p.sent_by_symbol("aggTrade").items():
        rows = p.consumer.buffer("binance", symbol, "trades").table().to_pylist()
        assert [r["id"] for r in rows] == [str(f["a"]) for f in frames], symbol
        for r, f in zip(rows, frames, strict=True):
            assert r["price"] == float(f["p"]) and r["amount"] == float(f["q"])
            assert r["ts_ms"] == f["T"]
            assert r["side"] == ("sell" if f["m"] else "buy")
            assert r["recv_ns"] > 0 and r["entry_ms"] >= f["T"] - 1000
        ids = [int(f["a"]) for f in frames]
        assert ids == list(range(ids[0], ids[0] + len(ids))), "fake sent non-consecutive ids"
        total += len(frames)
    return total


def assert_tickers_match(p: Pipeline) -> int:
    total = 0
    for symbol, frames in p.sent_by_symbol("24hrTicker").items():
        rows = p.consumer.buffer("binance", symbol, "ticker").table().to_pylist()
        assert len(rows) == len(frames), symbol
        for r, f in zip(rows, frames, strict=True):
            assert r["ts_ms"] == f["E"]
            assert r["last"] == float(f["c"])
            assert r["bid"] == float(f["b"]) and r["ask"] == float(f["a"])
            assert r["bid_size"] == float(f["B"]) and r["ask_size"] == float(f["A"])
            assert r["high"] == float(f["h"]) and r["low"] == float(f["l"])
            assert r["base_volume"] == float(f["v"]) and r["quote_volume"] == float(f["q"])
        total += len(frames)
    return total


async def settle(p: Pipeline, done: Any) -> None:
    await done
    sent = sum(len(v) for v in p.sent_by_symbol("aggTrade").values()) + sum(
        len(v) for v in p.sent_by_symbol("24hrTicker").values()
    )
    await p.wait_stored(sent, timeout=60)
    await asyncio.sleep(0.3)  # anything extra (a duplicate) would show up now


PARSERS = pytest.mark.parametrize("parser", ["ccxt", "native"])


@PARSERS
async def test_recorded_binance_session_arrives_complete(make_pipeline: Any, parser: str) -> None:
    source = ReplaySource(bundled_recording(), speed=20)
    async with make_pipeline(source, RECORDED, parser=parser) as p:
        await settle(p, p.fx.wait_done(60))
        trades = assert_trades_match(p)
        tickers = assert_tickers_match(p)
        assert trades >= 2 and tickers >= 80
        w = p.publisher.workers["binance"]
        assert w.stats.invalid == 0 and w.trade_ids.gaps == 0
        assert p.publisher.sink.stats.written == trades + tickers
        assert p.consumer.stats.invalid == 0


async def test_synthetic_steady_rate_for_ten_seconds(make_pipeline: Any) -> None:
    symbols = [f"{b}/USDT" for b in ("BTC", "ETH", "BNB", "XRP", "SOL", "ADA", "DOGE", "LTC")]
    source = SyntheticSource(symbols, rate=3000, duration=10, channels=("aggTrade", "ticker"))
    async with make_pipeline(source, symbols) as p:
        await settle(p, p.fx.wait_done(40))
        trades = assert_trades_match(p)
        tickers = assert_tickers_match(p)
        assert trades + tickers >= 25_000
        assert p.publisher.workers["binance"].trade_ids.gaps == 0


@PARSERS
async def test_burst_of_20000_trades_on_10_markets_loses_nothing(
    make_pipeline: Any, parser: str
) -> None:
    symbols = [
        f"{b}/USDT"
        for b in ("BTC", "ETH", "BNB", "XRP", "SOL", "ADA", "DOGE", "LTC", "DOT", "LINK")
    ]
    source = SyntheticSource(symbols, rate=1, total=0, channels=("aggTrade",))
    async with make_pipeline(source, symbols, play=False, parser=parser) as p:
        await p.fx.send_burst(symbols, 20_000)
        await p.wait_stored(20_000, timeout=60)
        await asyncio.sleep(0.3)
        assert assert_trades_match(p) == 20_000
        w = p.publisher.workers["binance"]
        assert w.trade_ids.gaps == 0 and w.trade_ids.duplicates == 0
        native = w.status()["native_frames"]
        assert native == (20_000 if parser == "native" else 0)
        assert sum(len(b) for b in p.consumer.buffers.values()) == 20_000
