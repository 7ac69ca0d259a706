"""The write path against a real redis-server: order, MAXLEN, outages, bad credentials."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from marketbus import codec
from marketbus.errors import RedisAuthError
from marketbus.keys import stream_key
from publisher.sink import StreamSink
from tests.factories import ticker, trade
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration


async def test_records_land_in_order_per_stream(redis: aioredis.Redis) -> None:
    sink = StreamSink(redis, batch_size=7)
    async with sink:
        for i in range(100):
            sink.put(trade(i, symbol="BTC/USDT"))
            sink.put(ticker(i, symbol="ETH/USDT"))
        await sink.drain()
    entries = await redis.xrange(stream_key("binance", "BTC/USDT", "trades"))
    assert [codec.decode_fields(f).id for _, f in entries] == [str(i) for i in range(100)]
    tick = await redis.xrange(stream_key("binance", "ETH/USDT", "ticker"))
    assert [codec.decode_fields(f) for _, f in tick] == [
        ticker(i, symbol="ETH/USDT") for i in range(100)
    ]
    assert sink.stats.written == 200 and sink.stats.overflow == 0


async def test_entries_are_legible_in_redis_cli(redis: aioredis.Redis) -> None:
    async with StreamSink(redis) as sink:
        sink.put(trade(3))
        await sink.drain()
    [(_, fields)] = await redis.xrevrange(stream_key("binance", "BTC/USDT", "trades"), count=1)
    human = fields[b"h"].decode()
    assert "BTC/USDT" in human and "100.03" in human and "2023-11-14T22:13:20.003Z" in human


async def test_maxlen_trims_approximately(redis: aioredis.Redis) -> None:
    async with StreamSink(redis, maxlen=100, batch_size=50) as sink:
        for i in range(2000):
            sink.put(trade(i))
        await sink.drain()
    n = await redis.xlen(stream_key("binance", "BTC/USDT", "trades"))
    assert 100 <= n < 400  # MAXLEN ~ trims whole macro nodes only


async def test_outage_spools_then_writes_everything_in_order() -> None:
    with running_redis("--appendonly", "yes") as server:
        client = aioredis.Redis.from_url(server.url)
        sink = StreamSink(client, batch_size=20, retry_max_s=0.2)
        await sink.start()
        for i in range(50):
            sink.put(trade(i))
        await sink.drain()
        server.kill()
        for i in range(50, 150):
            sink.put(trade(i))
        await asyncio.sleep(0.5)
        assert sink.pending > 0 and not sink.stats.redis_up
        server.start()
        await asyncio.wait_for(sink.drain(), 20)
        await sink.stop()
        ids = [
            codec.decode_fields(f).id
            for _, f in await client.xrange(stream_key("binance", "BTC/USDT", "trades"))
        ]
        await client.aclose()
    assert ids == [str(i) for i in range(150)]


async def test_spool_overflow_is_counted_and_keeps_the_newest() -> None:
    server = RedisServer()  # never started: Redis is away the whole time
    client = aioredis.Redis.from_url(server.url)
    sink = StreamSink(client, batch_size=10, spool_size=100, retry_max_s=0.1)
    await sink.start()
    for i in range(250):
        sink.put(trade(i))
    assert sink.stats.overflow == 150 and sink.pending == 100
    server.start()  # Redis comes back: what the spool kept is written
    try:
        await asyncio.wait_for(sink.drain(), 20)
        await sink.stop(drain_timeout=0.1)
        entries = await client.xrange(stream_key("binance", "BTC/USDT", "trades"))
        # the oldest 150 were dropped: the newest 100 remain, in order, each once
        assert [codec.decode_fields(f).id for _, f in entries] == [str(i) for i in range(150, 250)]
        assert sink.stats.written == 100
    finally:
        await client.aclose()
        server.close()


async def test_wrong_password_is_fatal_with_a_clear_error() -> None:
    with running_redis("--requirepass", "right") as server:
        client = aioredis.Redis.from_url(server.url, password="wrong")
        sink = StreamSink(client)
        await sink.start()
        sink.put(trade(1))
        with pytest.raises(RedisAuthError, match="credentials"):
            await asyncio.wait_for(sink.drain(), 5)
        await sink.stop(drain_timeout=0.1)
        await client.aclose()
