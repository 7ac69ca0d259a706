"""The writer's held connection and its linger, against a real redis-server."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from marketbus import codec
from marketbus.keys import stream_key
from publisher import sink as sink_mod
from publisher.sink import StreamSink
from tests.factories import trade

pytestmark = pytest.mark.integration

KEY = stream_key("binance", "BTC/USDT", "trades")


async def _client_ids(redis: aioredis.Redis, name: bytes) -> list[int]:
    clients = await redis.client_list()
    return [int(c["id"]) for c in clients if c.get("name") == name.decode()]


async def test_batches_share_one_connection_that_goes_back_to_the_pool(
    redis: aioredis.Redis,
) -> None:
    client = aioredis.Redis(connection_pool=redis.connection_pool)
    sink = StreamSink(client, batch_size=5)
    await sink.start()
    pool = client.connection_pool
    for i in range(200):
        sink.put(trade(i))
        if i % 7 == 0:
            await asyncio.sleep(0)  # many small batches
    await sink.drain()
    assert sink.stats.batches > 10
    held = sink._conn
    assert held is not None and held in pool._in_use_connections
    await sink.stop()
    assert sink._conn is None and held in pool._available_connections
    entries = await redis.xrange(KEY)
    assert [codec.decode_fields(f).id for _, f in entries] == [str(i) for i in range(200)]


async def test_a_held_connection_redis_closed_while_idle_is_replaced_quietly(
    redis: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis drops idle clients (``timeout``): the next batch must not be an outage."""
    monkeypatch.setattr(sink_mod, "_IDLE_CHECK_S", 0.05)
    client = aioredis.Redis.from_url(
        f"redis://127.0.0.1:{redis.connection_pool.connection_kwargs['port']}",
        client_name="sink-under-test",
    )
    async with StreamSink(client) as sink:
        sink.put(trade(1))
        await sink.drain()
        [cid] = await _client_ids(redis, b"sink-under-test")
        await redis.client_kill_filter(_id=cid)
        await asyncio.sleep(0.1)  # idle past the probe threshold
        sink.put(trade(2))
        await sink.drain()
        assert sink.stats.write_errors == 0 and sink.stats.redis_up
    await client.aclose()
    assert [codec.decode_fields(f).id for _, f in await redis.xrange(KEY)] == ["1", "2"]


async def test_linger_gathers_records_put_apart_into_one_batch(redis: aioredis.Redis) -> None:
    async with StreamSink(redis, linger_ms=50) as sink:
        for i in range(5):
            sink.put(trade(i))
            await asyncio.sleep(0.002)  # each a loop turn apart: without linger, 5 batches
        await sink.drain()
        assert sink.stats.batches == 1 and sink.stats.written == 5


async def test_without_linger_records_put_apart_go_out_at_once(redis: aioredis.Redis) -> None:
    async with StreamSink(redis) as sink:
        for i in range(5):
            sink.put(trade(i))
            await asyncio.sleep(0.002)
        await sink.drain()
        assert sink.stats.batches == 5 and sink.stats.written == 5
