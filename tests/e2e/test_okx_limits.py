"""OKX's websocket limit through CCXT's real adapter: the publisher keeps to the subscribe
requests a connection may send per window, so a storm of book resyncs (each one a new
``subscribe`` of the chunk's books) waits for room instead of having OKX close the connection.

Scaled down: OKX allows 480 requests an hour per connection; here 3 per 4 s on both sides
(the fake's ``OkxLimits`` and the ``limits`` of the publisher's OKX profile). The publisher's
first three requests (trades, tickers, books of 40 markets) fill the window; each bad checksum
then costs one more. Without the publisher's pacing the same run gets error 60014 and a closed
connection (the control below), so the test can tell the two apart. OKX's REST limits stay
at OKX's own numbers: the publisher's calls (instruments) never get a 429.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
import redis.asyncio as aioredis

from fake_exchange import FakeOkx, OkxSyntheticSource
from fake_exchange.okx.instruments import unified_symbols
from fake_exchange.okx.limits import OkxLimits
from marketbus.keys import stream_key
from marketbus.models import Channel
from marketbus.settings import load_settings
from publisher import exchanges, pacing
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

MARKETS = 40
CHANNELS = (Channel.TRADES, Channel.TICKER, Channel.BOOK)
PER_WINDOW, WINDOW_S = 3, 4.0
FAST = {"status_interval_s": 0.2, "heartbeat_s": 5, "backoff_min_s": 0.2, "backoff_max_s": 1}


async def until(cond: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def publishing(r: aioredis.Redis, keys: list[str]) -> int:
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.exists(k)
    return sum(int(x) for x in await pipe.execute())


@pytest.mark.parametrize("paced", [True, False], ids=["paced", "control-unpaced"])
async def test_book_resyncs_stay_within_okx_subscribe_requests_per_connection(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch, paced: bool
) -> None:
    ours = pacing.ExchangeLimits(
        True,
        rest_window_ms=2_000,
        subscribes_per_window=PER_WINDOW if paced else None,
        subscribe_window_s=WINDOW_S,
    )
    okx = dataclasses.replace(exchanges.PROFILES["okx"], limits=ours)
    monkeypatch.setitem(exchanges.PROFILES, "okx", okx)
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    source = OkxSyntheticSource(MARKETS, rate=400, seed=3, channels=("trades", "tickers", "books"))
    limits = OkxLimits(subscribes_per_window=PER_WINDOW, subscribe_window_s=WINDOW_S)
    async with FakeOkx(source, limits=limits) as fx:
        names = unified_symbols(source.instruments())
        # the 40 the source moves, but AE: CCXT calls OKX's AE "AET" (its commonCurrencies)
        symbols = [names[i] for i in source.inst_ids() if names[i] != "AE/USDT"]
        keys = [stream_key("okx", s, c) for s in symbols for c in CHANNELS]
        settings = load_settings(
            redis={"url": redis_server.url},
            exchanges=[
                {
                    "name": "okx",
                    "symbols": symbols,
                    "url": fx.base_url,
                    "channels": [c.value for c in CHANNELS],
                }
            ],
            supervisor=FAST,
        )
        async with Publisher(settings) as pub:
            w = pub.workers["okx"]

            async def all_publishing() -> bool:
                return await publishing(r, keys) == len(keys)

            try:
                await until(all_publishing)
            except TimeoutError:
                missing = [k for k in keys if not await r.exists(k)]
                raise AssertionError(f"{len(missing)} never published: {missing[:5]}") from None
            stats = fx.limit_stats
            assert stats is not None
            for i in range(4):  # one resync after the other: each a new books subscribe
                before = w.stats.book_resyncs
                fx.bad_checksum(1, symbols[i].replace("/", "-"))

                async def resynced(before: int = before) -> bool:
                    return w.stats.book_resyncs > before or stats.closed_for_subscribes > 0

                await until(resynced)
            if not paced:
                # the fourth request in the window: 60014, the connection closed
                await until(lambda: _true(stats.closed_for_subscribes >= 1))
                return
            # every book publishes again (its fresh snapshot came after the wait)
            after = {k: await r.xlen(k) for k in keys if k.endswith(":book")}

            async def books_move() -> bool:
                now = {k: await r.xlen(k) for k in after}
                return all(now[k] > after[k] for k in after)

            await until(books_move)
            assert w.stats.book_resyncs >= 4
            assert stats.closed_for_subscribes == 0 and stats.max_subscribes <= PER_WINDOW
            assert w.pacer.subscribe_waits >= 1  # it did wait for room
            assert w.stats.reconnects == 0 and w.state.value == "CONNECTED"
            assert stats.limited == 0 and stats.refused_connections == 0
            status = w.pacer.status()
            assert status["ws_subscribe_waits"] == w.pacer.subscribe_waits
    await r.aclose()


async def _true(v: bool) -> bool:
    return v
