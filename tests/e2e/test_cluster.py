"""The whole path on a 3-master Redis Cluster: hash-tagged keys, multi-node writes and reads."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from redis.exceptions import MovedError

from consumers import Consumer
from fake_exchange import FakeExchange, SyntheticSource
from marketbus.keys import stream_key
from marketbus.settings import RedisSettings, load_settings
from publisher.app import Publisher
from tests.redis_cluster import running_cluster

pytestmark = pytest.mark.e2e

SYMBOLS = [f"{b}/USDT" for b in ("BTC", "ETH", "BNB", "XRP", "SOL", "ADA", "DOGE", "LTC")]


async def test_publisher_and_consumer_on_a_cluster() -> None:
    with running_cluster() as nodes:
        redis = RedisSettings(url=f"redis://127.0.0.1:{nodes[0].port}/0", cluster=True)
        source = SyntheticSource(SYMBOLS, rate=2000, total=4000, channels=("aggTrade", "ticker"))
        async with FakeExchange(source, autoplay=False) as fx:
            settings = load_settings(
                redis=redis.model_dump(),
                exchanges=[{"name": "binance", "symbols": SYMBOLS, "url": fx.base_url}],
            )
            async with Publisher(settings) as pub:
                streams = [s.replace("/", "").lower() + "@aggTrade" for s in SYMBOLS]
                await fx.wait_subscribed(streams, timeout=20)
                markets = [f"binance:{s}" for s in SYMBOLS]
                async with Consumer(redis, markets, backfill=0, block_ms=100) as c:
                    fx.play()
                    await fx.wait_done(30)
                    async with asyncio.timeout(30):
                        while sum(len(b) for b in c.buffers.values()) < len(fx.sent):
                            await asyncio.sleep(0.05)
                    await asyncio.sleep(0.3)
                    assert sum(len(b) for b in c.buffers.values()) == len(fx.sent) == 4000
                    assert pub.sink.stats.written == 4000
        # every channel of a market sits on one node, and the markets spread over the nodes
        owners: dict[str, set[int]] = {}
        for s in SYMBOLS:
            for ch in ("ticker", "trades"):
                key = stream_key("binance", s, ch)
                for n in nodes:
                    node = aioredis.Redis(port=n.port)
                    try:
                        if await node.exists(key):
                            owners.setdefault(s, set()).add(n.port)
                    except MovedError:
                        pass  # this node does not serve the key's slot
                    finally:
                        await node.aclose()
        assert all(len(ports) == 1 for ports in owners.values()), owners
        assert len(set().union(*owners.values())) >= 2
