"""The consumer library against a real redis-server: backfill, follow, callbacks, groups, bad entries."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest
import redis.asyncio as aioredis

from consumers import Consumer, Record, Trade
from marketbus import codec
from marketbus.errors import RedisAuthError
from marketbus.keys import stream_key
from tests.factories import ticker, trade
from tests.redis_server import running_redis

pytestmark = pytest.mark.integration

TRADES = stream_key("binance", "BTC/USDT", "trades")
TICKER = stream_key("binance", "BTC/USDT", "ticker")


async def add(redis: aioredis.Redis, records: list[Record]) -> list[bytes]:
    ids = []
    for r in records:
        key = stream_key(r.exchange, r.symbol, r.channel)
        ids.append(await redis.xadd(key, codec.encode(r)))
    return ids


async def until(cond: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def test_backfill_then_follow_without_gaps_or_repeats(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    await add(redis, [trade(i) for i in range(50)])
    seen: list[Record] = []
    async with Consumer(
        redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=10, block_ms=50
    ) as c:
        c.on_record(seen.append)
        buf = c.buffer("binance", "BTC/USDT", "trades")
        assert buf.latest(100).column("id").to_pylist() == [str(i) for i in range(40, 50)]
        await add(redis, [trade(i) for i in range(50, 80)])
        await until(lambda: len(seen) == 30)
        await asyncio.sleep(0.1)
        ids = buf.table().column("id").to_pylist()
    assert ids == [str(i) for i in range(40, 80)]
    assert [r.id for r in seen if isinstance(r, Trade)] == [str(i) for i in range(50, 80)]
    assert seen[0] == trade(50)


async def test_buffer_values_and_times(redis: aioredis.Redis, redis_server: Any) -> None:
    ids = await add(redis, [ticker(1), ticker(2)])
    async with Consumer(redis_server.url, ["binance:BTCUSDT"], ["ticker"], backfill=5) as c:
        t = c.buffer("binance", "BTC/USDT", "ticker").latest(2).to_pylist()
    assert [row["last"] for row in t] == [101.0, 102.0]
    assert [row["bid"] for row in t] == [100.5, 101.5]
    assert math.isnan(t[0]["open"])
    assert t[0]["ts_ms"] == ticker(1).ts_ms and t[0]["recv_ns"] == ticker(1).recv_ns
    assert t[1]["entry_ms"] == int(ids[1].split(b"-")[0])


async def test_async_callbacks_and_callback_errors_do_not_stop_the_feed(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    got: list[str] = []

    async def slow(r: Record) -> None:
        await asyncio.sleep(0)
        assert isinstance(r, Trade)
        if r.id == "3":
            raise RuntimeError("bot bug")
        got.append(r.id)

    async with Consumer(
        redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0, block_ms=50
    ) as c:
        c.on_record(slow)
        await add(redis, [trade(i) for i in range(6)])
        await until(lambda: len(got) == 5)
        assert c.stats.callback_errors == 1
    assert got == ["0", "1", "2", "4", "5"]


async def test_corrupt_and_foreign_entries_are_counted_and_skipped(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    await redis.xadd(TRADES, {"d": b"\xc1garbage"})
    await redis.xadd(TRADES, {"hello": "world"})
    await redis.xadd(TRADES, codec.encode(ticker(1)))  # a ticker in a trades stream
    await add(redis, [trade(1)])
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=10) as c:
        assert c.stats.invalid == 3
        assert c.buffer("binance", "BTC/USDT", "trades").table().column("id").to_pylist() == ["1"]


async def test_consumer_reconnects_and_continues_after_redis_restart() -> None:
    with running_redis("--appendonly", "yes", "--appendfsync", "always") as server:
        writer = aioredis.Redis.from_url(server.url)
        await add(writer, [trade(i) for i in range(10)])
        async with Consumer(
            server.url, ["binance:BTC/USDT"], ["trades"], backfill=100, block_ms=100
        ) as c:
            buf = c.buffer("binance", "BTC/USDT", "trades")
            server.restart()
            await writer.aclose()
            writer = aioredis.Redis.from_url(server.url)
            await add(writer, [trade(i) for i in range(10, 20)])
            await until(lambda: len(buf) == 20, timeout=20)
            assert c.stats.reconnects >= 1
            assert buf.table().column("id").to_pylist() == [str(i) for i in range(20)]
        await writer.aclose()


async def test_wrong_password_is_a_clear_error() -> None:
    with running_redis("--requirepass", "right") as server:
        url = server.url.replace("redis://", "redis://:wrong@")
        with pytest.raises(RedisAuthError):
            async with Consumer(url, ["binance:BTC/USDT"]):
                pass


async def test_group_members_share_work_and_ack_once(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    seen: dict[str, list[str]] = {"a": [], "b": []}
    kw: dict[str, Any] = dict(backfill=0, block_ms=50, count=5, group="bots")
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], name="a", **kw) as a, \
            Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], name="b", **kw) as b:  # fmt: skip
        a.on_record(lambda r: seen["a"].append(r.id))  # type: ignore[union-attr]
        b.on_record(lambda r: seen["b"].append(r.id))  # type: ignore[union-attr]
        await add(redis, [trade(i) for i in range(200)])
        await until(lambda: len(seen["a"]) + len(seen["b"]) >= 200)
        await asyncio.sleep(0.2)
    assert sorted(seen["a"] + seen["b"], key=int) == [str(i) for i in range(200)]
    pending = await redis.xpending(TRADES, "bots")
    assert pending["pending"] == 0


async def test_group_reclaims_entries_of_a_dead_member(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    await redis.xgroup_create(TRADES, "bots", id="$", mkstream=True)
    await add(redis, [trade(i) for i in range(20)])
    # "dead" reads 20 entries and dies before acknowledging any
    await redis.xreadgroup("bots", "dead", {TRADES: ">"}, count=20)
    got: list[str] = []
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0, block_ms=50,
                        group="bots", name="alive", reclaim_idle_ms=200) as c:  # fmt: skip
        c.on_record(lambda r: got.append(r.id))  # type: ignore[union-attr]
        await until(lambda: len(got) == 20, timeout=10)
        assert c.stats.reclaimed == 20
    assert got == [str(i) for i in range(20)]
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


async def test_group_member_rereads_its_own_pending_after_restart(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    await redis.xgroup_create(TRADES, "bots", id="$", mkstream=True)
    await add(redis, [trade(i) for i in range(5)])
    await redis.xreadgroup("bots", "bot-1", {TRADES: ">"}, count=5)  # read, crashed, no ack
    got: list[str] = []
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0, block_ms=50,
                        group="bots", name="bot-1", reclaim_idle_ms=60_000) as c:  # fmt: skip
        c.on_record(lambda r: got.append(r.id))  # type: ignore[union-attr]
        await until(lambda: len(got) == 5)
    assert got == ["0", "1", "2", "3", "4"]


async def test_candles_from_backfilled_and_live_trades(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    base = 1_700_000_000_000  # trade(i) has ts_ms = base + i
    await add(redis, [trade(i) for i in range(0, 1500, 100)])  # 15 trades over 1.5 s
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=100,
                        block_ms=50, candles=["1s"]) as c:  # fmt: skip
        candles = c.candles("binance", "BTC/USDT")
        await add(redis, [trade(2500)])
        await until(lambda: candles.table("1s").num_rows == 3)
        table = candles.table("1s").to_pylist()
    # the wall clock is far past these exchange times: every candle with trades is closed
    assert [row["start_ms"] for row in table] == [base, base + 1000, base + 2000]
    first = table[0]
    assert first["open"] == trade(0).price and first["close"] == trade(900).price
    assert first["trades"] == 10 and first["volume"] == sum(
        trade(i).amount for i in range(0, 1000, 100)
    )
    assert table[2]["trades"] == 1
