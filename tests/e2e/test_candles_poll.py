"""Exchange candles and REST polling, through the real ccxt.pro.binance adapter."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from fake_exchange import FakeExchange, SyntheticSource
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel, Trade
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

SYMBOLS = ["AAA/USDT", "BBB/USDT"]


def settings(redis_server: RedisServer, fx: FakeExchange, **exchange: Any) -> Any:
    return load_settings(
        redis={"url": redis_server.url},
        exchanges=[{"name": "binance", "symbols": SYMBOLS, "url": fx.base_url, **exchange}],
        supervisor={"status_interval_s": 0.2, "heartbeat_s": 5},
    )


async def test_exchange_candles_agree_with_candles_built_from_the_same_trades(
    redis_server: RedisServer,
) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    source = SyntheticSource(SYMBOLS, rate=200, seed=5, channels=("aggTrade",),
                             kline_intervals=("1s",))  # fmt: skip
    channels = [Channel.TRADES, Channel.CANDLES]
    async with FakeExchange(source, autoplay=False) as fx:
        cfg = settings(redis_server, fx, channels=channels, candle_intervals=["1s"])
        async with Publisher(cfg) as pub:
            streams = [s.replace("/", "").lower() + k for s in SYMBOLS
                       for k in ("@aggTrade", "@kline_1s")]  # fmt: skip
            await fx.wait_subscribed(streams, timeout=20)
            markets = [f"binance:{s}" for s in SYMBOLS]
            async with Consumer(redis_server.url, markets, channels, candles=["1s"],
                                backfill=0, block_ms=100) as c:  # fmt: skip
                fx.play()
                await asyncio.sleep(6)
                compared = 0
                for symbol in SYMBOLS:
                    ours = {row["start_ms"]: row for row in
                            c.candles("binance", symbol).table("1s").to_pylist()}  # fmt: skip
                    theirs = c.exchange_candles("binance", symbol, "1s", include_open=False)
                    for k in theirs.to_pylist():
                        mine = ours.get(k["open_ms"])
                        if mine is None:  # an interval without trades: nothing built from them
                            assert k["volume"] == 0
                            continue
                        got = (k["open"], k["high"], k["low"], k["close"])
                        assert got == (mine["open"], mine["high"], mine["low"], mine["close"])
                        assert k["volume"] == pytest.approx(mine["volume"], rel=1e-9)
                        compared += 1
                assert compared >= 6, compared  # ~3 closed seconds a market at least
        st = pub.workers["binance"].status()
        assert st["invalid"] == 0 and st["trade_gaps"] == 0
    await r.aclose()


async def test_poll_mode_publishes_the_same_trades_with_the_websocket_off(
    redis_server: RedisServer,
) -> None:
    """The fake refuses websockets; a polling worker still publishes every trade the exchange
    made after it started, once, in order, plus tickers and books that changed."""
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    source = SyntheticSource(SYMBOLS, rate=300, seed=9, channels=("aggTrade", "ticker"))
    channels = [Channel.TRADES, Channel.TICKER, Channel.BOOK]
    async with FakeExchange(source, websocket=False) as fx:
        cfg = settings(redis_server, fx, channels=channels, mode="poll", poll_interval_s=0.25)
        async with Publisher(cfg) as pub:
            w = pub.workers["binance"]
            await w.wait_connected(timeout=20)
            await asyncio.sleep(3)
            fx.websocket_enabled = False  # nothing could have sneaked in over a socket
            assert w.status()["polled"] == ["book", "ticker", "trades"]
        for symbol in SYMBOLS:
            entries = await r.xrange(stream_key("binance", symbol, Channel.TRADES))
            trades = [codec.decode_fields(f) for _, f in entries]
            assert all(isinstance(t, Trade) for t in trades)
            ids = [int(t.id) for t in trades]  # type: ignore[union-attr]
            assert len(ids) > 100, symbol
            assert ids == list(range(ids[0], ids[0] + len(ids))), "gap or duplicate"
            # the exchange's own history over the same ids: the same trades, field by field
            url = f"{fx.base_url}/api/v3/aggTrades?symbol={symbol.replace('/', '')}"
            async with aiohttp.ClientSession() as http:
                async with http.get(f"{url}&fromId={ids[0]}&limit={len(ids)}") as resp:
                    rest = await resp.json()
            assert [x["a"] for x in rest] == ids
            for t, x in zip(trades, rest, strict=True):
                assert (t.price, t.amount, t.ts_ms) == (float(x["p"]), float(x["q"]), x["T"])
            tickers = await r.xrange(stream_key("binance", symbol, Channel.TICKER))
            books = await r.xrange(stream_key("binance", symbol, Channel.BOOK))
            assert tickers and books
            seen = [codec.decode_fields(f).ts_ms for _, f in tickers]
            assert len(set(seen)) == len(seen)  # an unchanged ticker is not re-published
        st = w.status()
        assert st["trade_gaps"] == 0 and st["trade_duplicates"] == 0 and st["reconnects"] == 0
    await r.aclose()
