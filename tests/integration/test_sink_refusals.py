"""Redis refusing every write (OOM under noeviction, READONLY...) is an outage, not bad data.

Tried as an operator with an undersized Redis would: once Redis is full, records stay in the
bounded spool, writes are retried with backoff, the sink says why, and one log line per
interval (not one per record) tells it. Nothing is dropped until the spool itself overflows.
"""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from marketbus import codec
from marketbus.errors import RedisUnavailableError
from marketbus.keys import stream_key
from marketbus.redis_client import from_redis, is_refusal
from publisher.sink import StreamSink
from tests.factories import trade
from tests.redis_server import running_redis

pytestmark = pytest.mark.integration

SYMBOLS = [f"S{i}/USDT" for i in range(4)]


async def _wait(cond: object, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():  # type: ignore[operator]
            await asyncio.sleep(0.02)


async def test_redis_full_keeps_records_and_writes_them_once_there_is_room() -> None:
    with running_redis("--maxmemory", "3mb", "--maxmemory-policy", "noeviction") as server:
        client = aioredis.Redis.from_url(server.url)
        admin = aioredis.Redis.from_url(server.url)
        sink = StreamSink(client, batch_size=200, retry_max_s=0.2, spool_size=100_000)
        n = 30_000  # ~5 MB of entries: well past 3 MB
        with capture_logs() as logs:
            await sink.start()
            for i in range(n):
                sink.put(trade(i, symbol=SYMBOLS[i % 4]))
                if i % 1000 == 999:
                    await asyncio.sleep(0)  # the writer runs alongside, as in the publisher
            await _wait(lambda: sink.stats.refused > 0 and not sink.stats.redis_up)
            await asyncio.sleep(1.0)  # a second of refusals: retried, never dropped
            assert sink.stats.rejected == 0 and sink.stats.overflow == 0
            assert sink.pending > 0
            assert sink.stats.written + sink.pending == n
            assert "maxmemory" in (sink.stats.refusing or "")
            assert not sink.congested  # an outage: readers are not held, the spool takes it
            refusal_lines = [e for e in logs if e["event"] == "redis_refusing_writes"]
            assert 1 <= len(refusal_lines) <= 2  # one line per 5 s, not one per record
            assert not [e for e in logs if e["event"] == "xadd_rejected"]

            await admin.config_set("maxmemory", "0")  # the operator makes room
            await _wait(lambda: sink.pending == 0)
            await sink.stop()
        assert sink.stats.written == n and sink.stats.redis_up and sink.stats.refusing is None
        for s in SYMBOLS:
            entries = await admin.xrange(stream_key("binance", s, "trades"))
            ids = [int(codec.decode_fields(f).id) for _, f in entries]  # type: ignore[union-attr]
            assert sorted(ids) == list(range(SYMBOLS.index(s), n, 4)), s
            assert len(set(ids)) == len(ids)
        await client.aclose()
        await admin.aclose()


async def test_a_spool_overflow_during_refusals_drops_the_oldest_counted() -> None:
    """The bound still holds: refusals that outlast the spool drop its oldest, counted."""
    with running_redis("--maxmemory", "1mb", "--maxmemory-policy", "noeviction") as server:
        client = aioredis.Redis.from_url(server.url)
        sink = StreamSink(client, batch_size=100, retry_max_s=0.1, spool_size=2_000)
        await sink.start()
        for i in range(20_000):
            sink.put(trade(i))
            if i % 500 == 499:
                await asyncio.sleep(0.001)
        await _wait(lambda: sink.stats.refused > 0)
        assert sink.pending <= 2_000
        assert sink.stats.overflow > 0
        assert sink.stats.written + sink.pending + sink.stats.overflow == 20_000
        assert sink.stats.rejected == 0
        await sink.stop(drain_timeout=0.2)
        await client.aclose()


async def test_replica_readonly_is_a_refusal() -> None:
    """A primary turned replica (a failover) answers READONLY: kept and retried."""
    with running_redis() as primary, running_redis() as replica:
        client = aioredis.Redis.from_url(replica.url)
        admin = aioredis.Redis.from_url(replica.url)
        host, port = primary.url.split("//")[1].split("/")[0].split(":")
        await admin.execute_command("REPLICAOF", host, int(port))
        sink = StreamSink(client, batch_size=10, retry_max_s=0.1)
        await sink.start()
        for i in range(50):
            sink.put(trade(i))
        await _wait(lambda: sink.stats.refused > 0)
        assert sink.stats.rejected == 0 and sink.pending == 50
        assert "read only" in (sink.stats.refusing or "").lower()
        await admin.execute_command("REPLICAOF", "NO", "ONE")  # promoted: writes resume
        await _wait(lambda: sink.pending == 0)
        assert sink.stats.written == 50
        await sink.stop()
        await client.aclose()
        await admin.aclose()


def test_refusal_replies_map_to_an_outage() -> None:
    import redis.exceptions as rex

    for e in (
        rex.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        rex.ReadOnlyError("You can't write against a read only replica."),
        rex.ResponseError("MISCONF Redis is configured to save RDB snapshots"),
        rex.ResponseError("NOREPLICAS Not enough good replicas to write."),
    ):
        assert is_refusal(e), e
        assert isinstance(from_redis(e), RedisUnavailableError), e
    for e in (
        rex.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        rex.ResponseError("ERR The ID specified in XADD is equal or smaller"),
    ):
        assert not is_refusal(e), e


@pytest.mark.parametrize(("maxmemory", "warned"), [("5mb", True), ("0", False)])
async def test_the_publisher_warns_at_start_when_its_streams_cannot_fit(
    maxmemory: str, warned: bool
) -> None:
    """4 markets x 2 channels x MAXLEN 100,000 is ~170 MB of entries: not in 5 MB."""
    from marketbus.settings import load_settings
    from publisher.app import Publisher

    with running_redis("--maxmemory", maxmemory, "--maxmemory-policy", "noeviction") as server:
        settings = load_settings(
            redis={"url": server.url, "maxlen": 100_000},
            exchanges=[{"name": "binance", "symbols": SYMBOLS, "url": "http://127.0.0.1:9"}],
        )
        pub = Publisher(settings)
        with capture_logs() as logs:
            assert await pub.check_redis()
        await pub.redis.aclose()
    lines = [e for e in logs if e["event"] == "streams_may_not_fit"]
    assert bool(lines) is warned
    if warned:
        assert lines[0]["streams"] == 8 and lines[0]["maxmemory"] == "5.0 MiB"
