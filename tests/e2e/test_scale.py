"""Many markets against a fake as strict as Binance, its limits scaled down with the market
count: the publisher paces its book snapshots within the request weight, chunks its
subscriptions to the streams a connection may hold and spaces its messages, so every stream
publishes with no 429, no 418 and nothing dropped.

Scaled down: 200 markets instead of 1,000 and Binance's rate of 6,000 weight a minute as 400
every 4 s (the publisher is told the same window through CCXT's ``rollingWindowSize``), 100
streams a connection instead of 1,024 (CCXT's ``subscriptionLimitByStream``). 200 book
snapshots (weight 5 each) then need three windows: fired at once they would be refused, and
a client that keeps going is banned at its second 429 here.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import ccxt.pro as ccxtpro
import pytest

from fake_exchange import FakeExchange, SyntheticSource
from fake_exchange.limits import BinanceLimits
from fake_exchange.sources import unified_symbols
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel
from marketbus.settings import load_settings
from publisher.app import Publisher
from publisher.pacing import Pacer
from publisher.rest_hooks import pace_rest
from publisher.ws_hooks import pace_sending
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

MARKETS = 200
CHANNELS = (Channel.TRADES, Channel.TICKER, Channel.BOOK)
SCALED = BinanceLimits(
    weight_per_window=400, window_s=4, ban_after=1, ban_s=60, streams_per_connection=100
)


async def stored_trade_ids(client: Any, symbol: str) -> list[int]:
    key = stream_key("binance", symbol, Channel.TRADES)
    ids: list[int] = []
    start = "-"
    while True:
        page = await client.xrange(key, start, "+", count=5_000)
        if not page:
            return ids
        ids.extend(int(codec.decode_fields(fields).id) for _, fields in page)  # type: ignore[union-attr]
        start = "(" + page[-1][0].decode()


async def publishing(client: Any, keys: list[str]) -> int:
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.exists(k)
    return sum(int(x) for x in await pipe.execute())


async def test_200_markets_publish_within_scaled_down_binance_limits(
    redis_server: RedisServer, redis: Any
) -> None:
    source = SyntheticSource(
        MARKETS, rate=2_000, channels=("aggTrade", "ticker"), kline_intervals=(), depth_interval=0.5
    )
    names = unified_symbols(source.exchange_info())
    symbols = [names[i] for i in source.symbols()]
    keys = [stream_key("binance", s, c) for s in symbols for c in CHANNELS]
    async with FakeExchange(source, limits=SCALED) as fx:
        settings = load_settings(
            redis={"url": redis_server.url, "maxlen": 1_000_000},
            exchanges=[
                {
                    "name": "binance",
                    "symbols": symbols,
                    "url": fx.base_url,
                    "channels": [c.value for c in CHANNELS],
                    "options": {
                        "rollingWindowSize": SCALED.window_s * 1000,
                        "options": {"subscriptionLimitByStream": {"spot": 100}},
                    },
                }
            ],
        )
        async with Publisher(settings) as pub:
            worker = pub.workers["binance"]
            async with asyncio.timeout(60):
                while await publishing(redis, keys) < len(keys):
                    await asyncio.sleep(0.2)
            fx.faults.stall(3_600)  # nothing more is written: count what was
            await asyncio.sleep(0.3)
            sent: dict[str, list[int]] = {}
            for f in fx.sent:
                if f.payload.get("e") == "aggTrade":
                    sent.setdefault(names[f.payload["s"]], []).append(int(f.payload["a"]))
            async with asyncio.timeout(30):
                while pub.sink.pending:
                    await asyncio.sleep(0.05)
            for symbol, ids in sent.items():
                assert await stored_trade_ids(redis, symbol) == ids, symbol
            assert len(sent) == MARKETS

            stats = fx.limit_stats
            assert stats is not None
            assert (stats.limited, stats.banned, stats.bans) == (0, 0, 0)
            assert stats.refused_subscriptions == 0 and stats.closed_for_messages == 0
            # the weight bound the pace: 1,020 weight at 400 per window
            assert stats.weight > 2 * SCALED.weight_per_window
            budget = worker.pacer.rest
            assert budget is not None and budget.stats.waits > 0
            assert budget.stats.limited == budget.stats.banned == 0
            sink = pub.sink.stats
            assert sink.overflow == 0 and sink.rejected == 0
            assert worker.stats.reconnects == 0 and worker.trade_ids.gaps == 0
            assert worker.books.stats.published >= MARKETS
            # 600 streams, 100 a connection: chunked, never over the limit
            assert len(worker._client.clients) >= len(keys) // 100


async def _subscribe_many(fx: FakeExchange, spaced: bool) -> tuple[int, int]:
    """Eight watch loops on one connection, started at once: eight SUBSCRIBE messages."""
    config = fx.ccxt_config()
    config["options"]["streamLimits"] = {"spot": 1}
    ex = ccxtpro.binance(config)
    if spaced:
        pace_sending(ex, 3.0)
    symbols = fx.markets[:8]
    tasks = [
        asyncio.create_task(ex.watch_trades_for_symbols([s], params={"name": "aggTrade"}))
        for s in symbols
    ]
    try:
        stats = fx.limit_stats
        assert stats is not None
        async with asyncio.timeout(10):  # all subscribed, or the connection closed
            while len(fx.subscribed_streams()) < len(symbols) and not stats.closed_for_messages:
                await asyncio.sleep(0.02)
        return stats.closed_for_messages, len(fx.subscribed_streams())
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await ex.close()


async def test_subscribe_messages_are_spaced_within_five_a_second() -> None:
    async with FakeExchange(SyntheticSource(10, rate=100), limits=BinanceLimits()) as fx:
        assert await _subscribe_many(fx, spaced=True) == (0, 8)
    # the same burst unspaced: the fake closes the connection, as Binance does
    async with FakeExchange(SyntheticSource(10, rate=100), limits=BinanceLimits()) as fx:
        closed, _ = await _subscribe_many(fx, spaced=False)
        assert closed >= 1


async def test_refused_snapshots_wait_out_retry_after_and_are_never_banned() -> None:
    """The fake allows less than the budget believes (another client on the IP, say): the
    snapshots refused with 429 wait for its Retry-After, and the budget holds every other
    request back meanwhile, so the fake never sees the client keep going (no 418)."""
    shift = time.time() % 4  # the fake's 4 s windows start now
    limits = BinanceLimits(weight_per_window=50, window_s=4, ban_after=2, ban_s=60)
    source = SyntheticSource(10, rate=100)
    async with FakeExchange(source, limits=limits, clock=lambda: time.time() - shift) as fx:
        ex = ccxtpro.binance(fx.ccxt_config())
        pacer = Pacer("binance")
        try:
            assert pace_rest(ex, pacer)
            await ex.load_markets()  # exchangeInfo: 20 of the window's 50
            symbols = fx.markets[:8]
            await pacer.books.admit(symbols)  # as a book batch does before it subscribes
            books = await asyncio.gather(
                *(ex.fetch_rest_order_book_safe(s, 100) for s in symbols)  # 5 each
            )
        finally:
            await ex.close()
        assert all(b["bids"] and b["asks"] for b in books)
        stats = fx.limit_stats
        assert stats is not None and stats.banned == stats.bans == 0
        assert stats.limited == 2  # the two past the window's 50, sent before any answer
        budget = pacer.rest
        assert budget is not None and budget.stats.limited == 2
        assert budget.stats.waits >= 2  # both retried after the Retry-After
        assert pacer.books.pending == 0  # each snapshot, refused or not, left the gate
