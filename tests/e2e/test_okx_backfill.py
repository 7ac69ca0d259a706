"""OKX: a gap longer than `market/trades` holds is filled by paging `history-trades` back.

OKX's `market/trades` (CCXT's default `fetch_trades`) gives only the latest 500 trades, with no
paging; before, an outage with more trades than that lost the older ones (counted as a gap).
The publisher now pages `history-trades` back by trade id from the first live trade to the last
one it published (`BackfillMode.BACK_BY_ID`). Here the socket is dropped and refused for a
second while one market trades at ~1,500 a second: every trade the fake sent is in Redis, once,
in order, and no gap is counted.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio as aioredis

from fake_exchange import FakeOkx, OkxSyntheticSource
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel
from marketbus.settings import load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer

pytestmark = pytest.mark.e2e

SYMBOL = "AAA/USDT"
FAST = {"status_interval_s": 0.2, "heartbeat_s": 5, "backoff_min_s": 0.2, "backoff_max_s": 1}


async def until(cond: Any, timeout: float = 90.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.05)


async def test_a_gap_longer_than_okx_latest_trades_is_paged_back_whole(
    redis_server: RedisServer,
) -> None:
    r = aioredis.Redis.from_url(redis_server.url)
    await r.flushdb()
    key = stream_key("okx", SYMBOL, Channel.TRADES)
    source = OkxSyntheticSource([SYMBOL], rate=1_500, duration=6, seed=4, channels=("trades",))
    async with FakeOkx(source, autoplay=False) as fx:
        settings = load_settings(
            redis={"url": redis_server.url},
            exchanges=[
                {"name": "okx", "symbols": [SYMBOL], "url": fx.base_url, "channels": ["trades"]}
            ],
            supervisor=FAST,
        )
        async with Publisher(settings) as pub:
            w = pub.workers["okx"]
            await fx.wait_subscribed([("trades", "AAA-USDT")], timeout=20)
            fx.play()

            async def some() -> bool:
                return bool(await r.xlen(key) > 300)

            await until(some)
            fx.faults.refuse(1.0)
            assert fx.faults.close_all(abrupt=True) >= 1
            await fx.wait_done(timeout=40)
            sent = [int(x["tradeId"]) for f in fx.sent if f.channel == "trades"
                    for x in f.payload["data"]]  # fmt: skip
            made = int(max(sent))  # the last trade the market made (REST serves them all)

            async def all_in() -> bool:
                last = await r.xrevrange(key, count=1)
                return bool(last) and int(codec.decode_fields(last[0][1]).id) >= made  # type: ignore[union-attr]

            await until(all_in)
            await asyncio.sleep(0.3)
            ids = [int(codec.decode_fields(f).id) for _, f in await r.xrange(key)]  # type: ignore[union-attr]
            missed = len(range(ids[0], made + 1)) - len(set(sent) & set(range(ids[0], made + 1)))
            assert missed > 500  # the outage was longer than market/trades' latest 500
            assert ids == list(range(ids[0], made + 1))  # every trade, once, in order
            assert w.trade_ids.gaps == 0 and w.stats.reconnects >= 1
            assert w.stats.backfilled >= missed
    await r.aclose()
