"""``Consumer(..., namespace=NAME)`` reads the streams a replay writes (``md.NAME:...``), never
the live ones, and the live consumer never reads them (issue #11, item 5)."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from consumers import Consumer
from marketbus import codec
from marketbus.errors import ConfigError
from marketbus.keys import namespace_prefix, stream_key
from tests.factories import trade
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

LIVE = stream_key("binance", "BTC/USDT", "trades")
BT1 = stream_key("binance", "BTC/USDT", "trades", prefix=namespace_prefix("bt1"))


def ids(c: Consumer) -> list[str]:
    return c.buffer("binance", "BTC/USDT", "trades").table()["id"].to_pylist()


async def test_a_namespace_is_read_apart_from_the_live_streams(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    assert BT1 == "md.bt1:{binance:BTC/USDT}:trades"
    await redis.xadd(LIVE, codec.encode(trade(1)))
    await redis.xadd(BT1, codec.encode(trade(2)))
    # a symbol without a slash is found among the namespace's streams
    async with (
        Consumer(redis_server.url, ["binance:btcusdt"], ["trades"], namespace="bt1",
                 block_ms=50) as replayed,
        Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], block_ms=50) as live,
    ):  # fmt: skip
        assert list(replayed.keys) == [BT1] and list(live.keys) == [LIVE]
        await redis.xadd(BT1, codec.encode(trade(3)))
        await redis.xadd(LIVE, codec.encode(trade(4)))
        async with asyncio.timeout(5):
            while len(ids(replayed)) < 2 or len(ids(live)) < 2:
                await asyncio.sleep(0.01)
        assert await replayed.lag() == {BT1: 0}
    assert ids(replayed) == ["2", "3"] and ids(live) == ["1", "4"]


def test_a_bad_namespace_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="namespace"):
        Consumer("redis://127.0.0.1:1/0", ["binance:BTC/USDT"], namespace="no spaces")
