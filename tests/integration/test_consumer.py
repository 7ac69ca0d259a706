"""The consumer library against a real redis-server: backfill, follow, callbacks, groups, bad entries."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import math
import re
import time
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync
import redis.asyncio as aioredis
import redis.exceptions as redis_exceptions
from structlog.testing import capture_logs

from consumers import BookTop, Candle, Consumer, Record, Ticker, Trade
from consumers.streams import ReplyPipe
from marketbus import codec
from marketbus.acl import Role, acl_rules
from marketbus.errors import ConfigError, RedisAuthError
from marketbus.keys import stream_key
from tests.factories import ticker, trade
from tests.redis_server import running_redis

pytestmark = pytest.mark.integration

TRADES = stream_key("binance", "BTC/USDT", "trades")
TICKER = stream_key("binance", "BTC/USDT", "ticker")


async def add(redis: Any, records: list[Record]) -> list[bytes]:
    ids: list[bytes] = []
    for r in records:
        key = stream_key(r.exchange, r.symbol, r.channel)
        ids.append(await redis.xadd(key, codec.encode(r)))
    return ids


async def until(cond: Any, timeout: float | None = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.01)


async def until_async(cond: Any, timeout: float | None = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.01)


async def nothing_pending(redis: Any, key: str) -> bool:
    return int((await redis.xpending(key, "bots"))["pending"]) == 0


async def blocked_in(redis: Any, command: str) -> int:
    """How many clients the server holds blocked in ``command`` (CLIENT LIST flag ``b``)."""
    return sum(1 for c in await redis.client_list() if c["cmd"] == command and "b" in c["flags"])


async def calls_of(redis: Any, command: str) -> int:
    """How many times the server ran ``command`` since it started (INFO commandstats)."""
    stats = (await redis.info("commandstats")).get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0))


async def blocked_count_is(redis: Any, command: str, n: int) -> bool:
    return await blocked_in(redis, command) == n


def held_ids(c: Consumer, channel: str = "trades") -> list[str]:
    return c.buffer("binance", "BTC/USDT", channel).table().column("id").to_pylist()


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
    foreign: Any = codec.encode(ticker(1))
    await redis.xadd(TRADES, foreign)  # a ticker in a trades stream
    await add(redis, [trade(1)])
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=10) as c:
        assert c.stats.invalid == 3
        assert c.buffer("binance", "BTC/USDT", "trades").table().column("id").to_pylist() == ["1"]


async def test_consumer_reconnects_and_continues_after_redis_restart() -> None:
    """With AOF nothing is lost: the consumer reads on after the restart (redis-py may
    reconnect under the read, so no error need reach the loop) and sees no reset."""
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
            # the restarted server saw the reset check of the (now quiet) stream
            await until_async(lambda: calls_of(writer, "xrevrange"), timeout=20)
            assert c.stats.resets == 0 and c.stats.received == 20
            assert buf.table().column("id").to_pylist() == [str(i) for i in range(20)]
            assert await writer.xlen(TRADES) == 20  # nothing lost
        await writer.aclose()


NO_PERSISTENCE = ("--save", "", "--appendonly", "no")


def trade_fields(i: int) -> Any:
    return codec.encode(trade(i))


async def test_plain_consumer_after_redis_restart_without_persistence() -> None:
    """Redis restarted empty: the consumer notices the stream is gone (a reset, counted and
    logged), also when redis-py reconnected under its read and no error reached it, and
    reads whatever is written from then on, whatever its ids."""
    with running_redis(*NO_PERSISTENCE) as server:
        writer = aioredis.Redis.from_url(server.url)
        await add(writer, [trade(i) for i in range(10)])
        with capture_logs() as logs:
            async with Consumer(
                server.url, ["binance:BTC/USDT"], ["trades"], backfill=100, block_ms=100
            ) as c:
                server.restart()
                await until(lambda: c.stats.resets == 1, timeout=20)
                await writer.aclose()
                writer = aioredis.Redis.from_url(server.url)
                ids = await add(writer, [trade(i) for i in range(10, 20)])
                await until(lambda: c.stats.received == 20, timeout=20)
                assert held_ids(c) == [str(i) for i in range(20)]
                assert c.stats.resets == 1
                assert c.last_ids[TRADES] == ids[-1].decode()
                assert await writer.xlen(TRADES) == 10  # the first 10 went with the restart
        await writer.aclose()
    resets = [e for e in logs if e["event"] == "stream_reset"]
    assert [(e["stream"], e["resume_from"]) for e in resets] == [(TRADES, "0-0")]


async def test_plain_consumer_after_failover_to_a_replica_behind_it() -> None:
    """The new server holds only the first half of what the consumer read (a replica that
    lagged), and its clock is behind: it reads on from the new server's newest entry, so
    what that server writes next arrives (ids below the last one read) and what it still
    holds is not read twice."""
    with running_redis(*NO_PERSISTENCE) as server:
        writer = aioredis.Redis.from_url(server.url)
        for i in range(10):
            await writer.xadd(TRADES, trade_fields(i), id=f"1000-{10 * i}")
        async with Consumer(
            server.url, ["binance:BTC/USDT"], ["trades"], backfill=100, block_ms=100
        ) as c:
            server.restart()
            replica = redis_sync.Redis.from_url(server.url)  # before the consumer is back
            for i in range(5):
                replica.xadd(TRADES, trade_fields(i), id=f"1000-{10 * i}")
            replica.close()
            await until(lambda: c.stats.resets == 1, timeout=20)
            assert c.last_ids[TRADES] == "1000-40"
            await writer.aclose()
            writer = aioredis.Redis.from_url(server.url)
            for i in range(10, 15):  # below 1000-90, the last id read from the old server
                await writer.xadd(TRADES, trade_fields(i), id=f"1000-{31 + i}")
            await until(lambda: c.stats.received == 15, timeout=20)
            assert held_ids(c) == [str(i) for i in range(15)]
            assert c.stats.resets == 1 and c.stats.received == 15
            assert await writer.xlen(TRADES) == 10  # the 5 copies and the 5 new
        await writer.aclose()


async def test_group_member_recovers_after_redis_restart_without_persistence() -> None:
    """Redis restarted empty: the member recreates the group of each stream (at 0, with
    MKSTREAM), counts and logs each reset, and gets every entry written after the restart,
    also those written before it noticed; nothing twice, nothing left pending."""
    markets, channels = ["binance:BTC/USDT"], ["trades", "ticker"]
    with running_redis(*NO_PERSISTENCE) as server:
        writer = aioredis.Redis.from_url(server.url)
        await add(writer, [trade(i) for i in range(10)])
        with capture_logs() as logs:
            async with Consumer(server.url, markets, channels, backfill=100, block_ms=100,
                                group="bots", name="b1") as c:  # fmt: skip
                await add(writer, [trade(i) for i in range(10, 15)])
                await until(lambda: c.stats.acked == 5)
                server.restart()
                fresh = redis_sync.Redis.from_url(server.url)  # before the member is back
                for i in range(15, 20):
                    fresh.xadd(TRADES, trade_fields(i))
                fresh.close()
                await until(lambda: c.stats.resets == 2, timeout=20)
                await writer.aclose()
                writer = aioredis.Redis.from_url(server.url)
                await add(writer, [trade(i) for i in range(20, 25)] + [ticker(1)])
                await until(lambda: c.stats.acked == 5 + 11, timeout=20)
                assert held_ids(c) == [str(i) for i in range(25)]
                assert len(c.buffer("binance", "BTC/USDT", "ticker")) == 1
                assert (c.stats.received, c.stats.resets, c.stats.invalid) == (26, 2, 0)
                assert (await writer.xlen(TRADES), await writer.xlen(TICKER)) == (10, 1)
            for key in (TRADES, TICKER):
                assert (await writer.xpending(key, "bots"))["pending"] == 0
        await writer.aclose()
    resets = [e for e in logs if e["event"] == "stream_reset"]
    assert sorted(e["stream"] for e in resets) == sorted([TRADES, TICKER])
    assert {e["resume_from"] for e in resets} == {"0"}


async def test_group_member_recovers_after_flushall(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    await add(redis, [trade(i) for i in range(3)])
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=10,
                        block_ms=100, group="bots", name="b1") as c:  # fmt: skip
        await until_async(lambda: blocked_count_is(redis, "xreadgroup", 1))
        await redis.flushall()
        await add(redis, [trade(i) for i in range(3, 8)])
        await until(lambda: c.stats.acked == 5, timeout=20)
        assert held_ids(c) == [str(i) for i in range(8)]
        assert (c.stats.resets, c.stats.received) == (1, 8)
        assert await redis.xlen(TRADES) == 5
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


@pytest.mark.parametrize("mode", ["plain", "group"])
async def test_resets_are_handled_with_the_least_privilege_consumer_acl(mode: str) -> None:
    """Noticing a reset and reading on needs nothing beyond the consumer role's ACL
    (``marketbus.acl``): XREVRANGE of a quiet stream, XGROUP CREATE ... MKSTREAM."""
    group: dict[str, Any] = {"group": "bots", "name": "b1"} if mode == "group" else {}
    with running_redis() as server:
        admin = aioredis.Redis.from_url(server.url)
        rules = f"on >con-secret {acl_rules(Role.CONSUMER)}".split()
        await admin.execute_command("ACL", "SETUSER", "consumer", *rules)
        await add(admin, [trade(i) for i in range(3)])
        url = server.url.replace("redis://", "redis://consumer:con-secret@")
        async with Consumer(url, ["binance:BTC/USDT"], ["trades"], backfill=10, block_ms=100,
                            **group) as c:  # fmt: skip
            await admin.flushall()
            if mode == "plain":  # ids after a FLUSHALL come later anyway: wait to see it
                await until(lambda: c.stats.resets == 1, timeout=20)
            await add(admin, [trade(i) for i in range(3, 8)])
            await until(lambda: c.stats.received == 8 and c.stats.resets == 1, timeout=20)
            assert held_ids(c) == [str(i) for i in range(8)]
            assert (c.stats.resets, c.stats.reconnects, c.stats.last_error) == (1, 0, None)
        await admin.aclose()


@pytest.mark.parametrize("before", [0, 5])
async def test_group_first_start_misses_nothing_written_after_its_backfill(
    redis: aioredis.Redis, redis_server: Any, monkeypatch: pytest.MonkeyPatch, before: int
) -> None:
    """Entries written between the backfill read and the group's creation (a publisher
    writing meanwhile) reach the group: it is created at the last id the backfill saw."""
    await add(redis, [trade(i) for i in range(before)])
    create = Consumer._create_groups

    async def write_then_create(self: Consumer) -> None:
        await add(redis, [trade(i) for i in range(before, before + 5)])
        await create(self)

    monkeypatch.setattr(Consumer, "_create_groups", write_then_create)
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=3,
                        block_ms=50, group="bots", name="b1") as c:  # fmt: skip
        await until(lambda: c.stats.acked == 5)
        assert held_ids(c) == [str(i) for i in range(max(before - 3, 0), before + 5)]
    assert await redis.xlen(TRADES) == before + 5
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


@pytest.mark.parametrize("mode", ["plain", "group"])
async def test_consumer_restarted_mid_stream_reads_on_without_gap_or_repeat(
    redis: aioredis.Redis, redis_server: Any, mode: str
) -> None:
    """A bot stops while the stream goes on, and starts again: plain mode resumes from the
    ids it held (``start_ids=old.last_ids``), a group member by its name. 150 sent, 150
    stored, 80 + 70 consumed: each entry once."""
    group: dict[str, Any] = {"group": "bots", "name": "bot-1"} if mode == "group" else {}
    await add(redis, [trade(i) for i in range(50)])
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=50,
                        block_ms=50, **group) as first:  # fmt: skip
        await add(redis, [trade(i) for i in range(50, 80)])
        await until(lambda: first.stats.received == 80)
        if group:
            await until(lambda: first.stats.acked == 30)
    before = held_ids(first)
    await add(redis, [trade(i) for i in range(80, 120)])  # while it is down
    resume: dict[str, Any] = group or {"start_ids": first.last_ids}
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0,
                        block_ms=50, **resume) as second:  # fmt: skip
        await add(redis, [trade(i) for i in range(120, 150)])
        await until(lambda: second.stats.received == 70)
        if group:
            await until(lambda: second.stats.acked == 70)
        after = held_ids(second)
    assert await redis.xlen(TRADES) == 150
    assert (len(before), len(after)) == (80, 70)
    assert before + after == [str(i) for i in range(150)]
    if group:
        assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


async def test_wrong_password_is_a_clear_error() -> None:
    with running_redis("--requirepass", "right") as server:
        url = server.url.replace("redis://", "redis://:wrong@")
        with pytest.raises(RedisAuthError):
            async with Consumer(url, ["binance:BTC/USDT"]):
                pass


async def test_group_members_share_work_and_ack_once(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    """Both members get a share, each entry goes to one of them, and each acks its own."""
    seen: dict[str, list[str]] = {"a": [], "b": []}
    kw: dict[str, Any] = dict(backfill=0, block_ms=10_000, count=5, group="bots")
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], name="a", **kw) as a, \
            Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], name="b", **kw) as b:  # fmt: skip
        a.on_record(lambda r: seen["a"].append(r.id))  # type: ignore[union-attr]
        b.on_record(lambda r: seen["b"].append(r.id))  # type: ignore[union-attr]
        # both wait in XREADGROUP: the first entry wakes one, the next the other (FIFO)
        await until_async(lambda: blocked_count_is(redis, "xreadgroup", 2), timeout=10)
        await add(redis, [trade(i) for i in range(200)])
        await until(lambda: a.stats.acked + b.stats.acked == 200, timeout=20)
        acked = (a.stats.acked, b.stats.acked)
    assert seen["a"] and seen["b"], {k: len(v) for k, v in seen.items()}
    assert len(seen["a"]) + len(seen["b"]) == 200  # no entry went to both
    assert sorted(seen["a"] + seen["b"], key=int) == [str(i) for i in range(200)]
    assert acked == (len(seen["a"]), len(seen["b"]))  # each acked exactly its own share
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


# -- group mode without callbacks: batches, acks sent with the next read ----------------------


class WatchedPipe(ReplyPipe):
    """The consumer's connection for group reads, checking every XACK it sends: each acked
    entry must already be in the buffer (or counted invalid)."""

    consumer: Consumer
    invalid_ids: set[bytes] = set()
    trade_of: dict[bytes, str] = {}
    acked: list[bytes] = []
    early: list[bytes] = []

    async def send(self, commands: Any) -> None:
        held = set(self.consumer.buffer("binance", "BTC/USDT", "trades").table()["id"].to_pylist())
        for cmd in commands:
            if cmd[0] == "XACK":
                for eid in cmd[3:]:
                    self.acked.append(eid)
                    if eid in self.invalid_ids:
                        seen = sum(1 for e in self.acked if e in self.invalid_ids)
                        ok = self.consumer.stats.invalid >= seen
                    else:
                        ok = self.trade_of[eid] in held
                    if not ok:
                        self.early.append(eid)
        await super().send(commands)


async def test_group_batches_ack_each_entry_after_its_ingest_and_ack_invalid_ones(
    redis: aioredis.Redis, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis.xgroup_create(TRADES, "bots", id="0", mkstream=True)
    raw: Any = redis
    ids: list[bytes] = []
    invalid: set[bytes] = set()
    for i in range(60):
        ids.append(*await add(redis, [trade(i)]))
        if i % 25 == 3:  # garbage and a ticker in the trades stream
            invalid.add(await raw.xadd(TRADES, {"d": b"\xc1"}))
            invalid.add(await raw.xadd(TRADES, codec.encode(ticker(i))))
    WatchedPipe.invalid_ids, WatchedPipe.acked, WatchedPipe.early = invalid, [], []
    WatchedPipe.trade_of = {eid: str(i) for i, eid in enumerate(ids)}
    monkeypatch.setattr("consumers.consumer.ReplyPipe", WatchedPipe)
    with capture_logs() as logs:
        async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0,
                            block_ms=50, count=7, group="bots", name="b1") as c:  # fmt: skip
            WatchedPipe.consumer = c
            await until(lambda: c.stats.acked == len(ids) + len(invalid))
            buf = c.buffer("binance", "BTC/USDT", "trades")
            assert buf.table()["id"].to_pylist() == [str(i) for i in range(60)]
            assert c.stats.invalid == len(invalid) and c.stats.received == 60
    assert WatchedPipe.early == []
    assert sorted(WatchedPipe.acked) == sorted([*ids, *invalid])  # each once
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0
    skipped = [e for e in logs if e["event"] == "invalid_entry_skipped"]
    assert skipped and skipped[0]["stream"] == TRADES
    assert skipped[0]["id"].encode() in invalid


async def test_group_callbacks_run_before_the_ack(redis: aioredis.Redis, redis_server: Any) -> None:
    """With callbacks each entry is still pending while its callback runs."""
    await redis.xgroup_create(TRADES, "bots", id="$", mkstream=True)
    ids = await add(redis, [trade(i) for i in range(12)])
    by_trade = {str(i): eid for i, eid in enumerate(ids)}
    still_pending: list[bool] = []

    async def check(r: Record) -> None:
        assert isinstance(r, Trade)
        eid = by_trade[r.id]
        rows = await redis.xpending_range(TRADES, "bots", min=eid, max=eid, count=1)
        still_pending.append(len(rows) == 1)

    c = Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0, block_ms=50,
                 count=5, group="bots", name="b1")  # fmt: skip
    c.on_record(check)
    async with c:
        await until(lambda: c.stats.acked == 12)
    assert still_pending == [True] * 12
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


async def test_group_batches_reread_own_pending_after_restart(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    """A member that read entries and died re-reads them first when it comes back (no
    callbacks: the batch path); a pending entry trimmed away since is not counted invalid
    (Redis 7's XAUTOCLAIM, run first, drops it from the pending list)."""
    await redis.xgroup_create(TRADES, "bots", id="$", mkstream=True)
    ids = await add(redis, [trade(i) for i in range(8)])
    await redis.xreadgroup("bots", "bot-1", {TRADES: ">"}, count=8)  # read, crashed, no ack
    await redis.xdel(TRADES, ids[2])
    await add(redis, [trade(8)])  # new since: read after the pending ones
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0,
                        block_ms=50, group="bots", name="bot-1", reclaim_idle_ms=60_000) as c:  # fmt: skip
        await until(lambda: c.stats.received == 8)
        await until_async(lambda: nothing_pending(redis, TRADES))
        got = c.buffer("binance", "BTC/USDT", "trades").table()["id"].to_pylist()
        assert c.stats.invalid == 0 and c.stats.reclaimed == 0
    assert got == [str(i) for i in (0, 1, 3, 4, 5, 6, 7, 8)]
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


class LosingPipe(ReplyPipe):
    """Loses the reply of the 3rd XREADGROUP after Redis ran it (a connection that broke):
    its entries are pending on this member, unseen."""

    reads = 0

    async def reply(self) -> Any:
        last = self._due == 1
        out = await super().reply()
        if last:
            LosingPipe.reads += 1
            if LosingPipe.reads == 3:
                await self.close()
                raise redis_exceptions.ConnectionError("lost the reply")
        return out


async def test_group_batches_reread_a_lost_reply(
    redis: aioredis.Redis, redis_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis.xgroup_create(TRADES, "bots", id="$", mkstream=True)
    await add(redis, [trade(i) for i in range(40)])
    LosingPipe.reads = 0
    monkeypatch.setattr("consumers.consumer.ReplyPipe", LosingPipe)
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0,
                        block_ms=50, count=10, group="bots", name="b1",
                        reclaim_idle_ms=60_000) as c:  # fmt: skip
        await until(lambda: c.stats.acked == 40)
        assert c.stats.reconnects == 1 and LosingPipe.reads > 3
        ids = c.buffer("binance", "BTC/USDT", "trades").table()["id"].to_pylist()
    assert ids == [str(i) for i in range(40)]
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


async def test_stop_ends_a_blocking_group_read(redis: aioredis.Redis, redis_server: Any) -> None:
    """stop() interrupts a read blocked for an hour (far past pytest's timeout): the loop
    ends on the first cancel (no fallback), the server no longer holds the read, the acks
    were sent. No wall-clock bound."""
    with capture_logs() as logs:
        async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0,
                            block_ms=3_600_000, group="bots", name="b1") as c:  # fmt: skip
            await add(redis, [trade(i) for i in range(3)])
            await until(lambda: c.stats.acked == 3)
            await until_async(lambda: blocked_count_is(redis, "xreadgroup", 1))
            task = c._task
        assert task is not None and task.done() and c._task is None
    stuck = [e["event"] for e in logs if e["event"] in ("task_ignored_cancel", "task_left_running")]
    assert stuck == []  # the read was interrupted, not waited out
    await until_async(lambda: blocked_count_is(redis, "xreadgroup", 0), timeout=None)
    assert (await redis.xpending(TRADES, "bots"))["pending"] == 0


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


# -- books, exchange candles, several exchanges ---------------------------------------------

EXCHANGES = ("binance", "okx")


def book(
    i: int,
    exchange: str = "binance",
    *,
    mid: float | None = None,
    levels: int = 5,
    ts_ms: int | None = None,
) -> BookTop:
    m = (100.0 + i / 10 if exchange == "binance" else 200.0 + i / 10) if mid is None else mid
    return BookTop(
        exchange=exchange, symbol="BTC/USDT",
        ts_ms=1_700_000_000_000 + i if ts_ms is None else ts_ms,
        recv_ns=1_700_000_000_000_000_000 + i, seq=1000 + i,
        bids=tuple((m - 0.05 - k / 10, 1.0 + k) for k in range(levels)),
        asks=tuple((m + 0.05 + k / 10, 2.0 + k) for k in range(levels)),
    )  # fmt: skip


def candle(
    minute: int, close: float, exchange: str = "binance", interval: str = "1m", closed: bool = False
) -> Candle:
    return Candle(
        exchange=exchange, symbol="BTC/USDT", ts_ms=1_700_000_000_000 + minute * 60_000 + 1,
        recv_ns=1, interval=interval, open_ms=1_700_000_000_000 + minute * 60_000 - 20_000,
        open=100.0, high=max(close, 100.0), low=min(close, 100.0), close=close, volume=1.0,
        closed=closed,
    )  # fmt: skip


def open_close(table: Any) -> list[tuple[int, float, bool]]:
    return list(
        zip(
            table.column("open_ms").to_pylist(),
            table.column("close").to_pylist(),
            table.column("closed").to_pylist(),
            strict=True,
        )
    )


async def test_book_and_candles_of_one_market_on_two_exchanges(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    for ex in EXCHANGES:  # backfilled: 3 books, a candle updated 3 times then closed
        await add(redis, [book(i, ex) for i in range(3)])
        await add(redis, [candle(0, 100.0 + k, ex) for k in range(3)])
        await add(redis, [candle(0, 105.0, ex, closed=True)])
    async with Consumer(redis_server.url, ["binance:BTC/USDT", "okx:btc-usdt"], ["book", "candles"],
                        backfill=100, block_ms=50) as c:  # fmt: skip
        assert {(k.exchange, k.symbol) for k in c.buffers} == {
            ("binance", "BTC/USDT"),
            ("okx", "BTC/USDT"),
        }
        for ex in EXCHANGES:
            assert c.book(ex, "BTC/USDT") == book(2, ex)
            assert open_close(c.exchange_candles(ex, "BTC/USDT", "1m")) == [
                (candle(0, 1, ex).open_ms, 105.0, True)
            ]
        # live: the same market moves differently on each exchange
        await add(redis, [book(10, "binance"), book(20, "okx"), candle(1, 101.0, "okx")])
        await add(redis, [candle(1, 99.0, "okx"), candle(1, 98.5, "okx", interval="5m")])
        await until(lambda: len(c.buffer("okx", "BTC/USDT", "candles")) == 7)
        await until(lambda: len(c.buffer("binance", "BTC/USDT", "book")) == 4)
        await until(lambda: len(c.buffer("okx", "BTC/USDT", "book")) == 4)
        for spelling in ("BTC/USDT", "btc/usdt", "BTC-USDT", "BTCUSDT", "btc_usdt"):
            assert c.book("okx", spelling) == book(20, "okx")
            assert c.book("Binance", spelling) == book(10, "binance")
        top = c.buffer("okx", "BTCUSDT", "book").latest(1).to_pylist()[0]
        ok = book(20, "okx")
        assert (top["bid"], top["bid_size"], top["ask"], top["ask_size"], top["seq"]) == (
            *ok.bids[0], *ok.asks[0], ok.seq,
        )  # fmt: skip
        assert (top["ts_ms"], top["recv_ns"]) == (ok.ts_ms, ok.recv_ns)
        okx_1m = c.exchange_candles("okx", "BTC-USDT", "1m")
        assert open_close(okx_1m) == [
            (candle(0, 1).open_ms, 105.0, True), (candle(1, 1).open_ms, 99.0, False)
        ]  # fmt: skip
        assert open_close(c.exchange_candles("okx", "BTC/USDT", "1m", include_open=False)) == [
            (candle(0, 1).open_ms, 105.0, True)
        ]
        assert c.exchange_candles("okx", "BTC/USDT", "5m").column("close").to_pylist() == [98.5]
        assert c.exchange_candles("binance", "BTC/USDT", "5m").num_rows == 0
        assert c.buffer("okx", "BTC/USDT", "candles").latest(1).column("interval").to_pylist() == [
            "5m"
        ]
        best = c.best("okx", "BTCUSDT")
        assert best is not None and (best.bid, best.ask) == (ok.bids[0][0], ok.asks[0][0])
        with pytest.raises(KeyError, match="kraken"):
            c.book("kraken", "BTC/USDT")
        with pytest.raises(KeyError, match="ticker"):
            c.buffer("okx", "BTC/USDT", "ticker")
        assert c.stats.invalid == 0


async def test_slashless_markets_find_their_streams_on_each_exchange(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    await add(redis, [book(1, "binance"), book(2, "okx")])
    async with Consumer(redis_server.url, ["binance:BTCUSDT", "OKX:btcusdt"], ["book"]) as c:
        assert set(c.keys) == {stream_key(ex, "BTC/USDT", "book") for ex in EXCHANGES}
        assert c.book("binance", "BTC/USDT") == book(1, "binance")
        assert c.book("okx", "btc-usdt") == book(2, "okx")


async def test_book_before_the_first_record_and_best_falls_back_to_the_ticker(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["book", "ticker"], backfill=10,
                        block_ms=50) as c:  # fmt: skip
        assert c.book("binance", "BTC/USDT") is None
        assert c.best("binance", "BTC/USDT") is None
        await add(redis, [ticker(1)])
        await until(lambda: c.best("binance", "BTC/USDT") is not None)
        best = c.best("binance", "BTC/USDT")
        assert best is not None and best.source == "ticker"
        assert (best.bid, best.ask, best.ts_ms) == (ticker(1).bid, ticker(1).ask, ticker(1).ts_ms)
        await add(redis, [book(1)])
        await until(lambda: c.book("binance", "BTC/USDT") is not None)
        await add(redis, [ticker(2)])  # a book is held: it wins over a newer ticker
        await until(lambda: len(c.buffer("binance", "BTC/USDT", "ticker")) == 2)
        best = c.best("binance", "BTC/USDT")
        assert best is not None and best.source == "book" and best.bid == book(1).bids[0][0]


def crossed_book() -> BookTop:
    return BookTop.model_construct(
        exchange="binance", symbol="BTC/USDT", ts_ms=1, recv_ns=1, seq=None,
        bids=((101.0, 1.0),), asks=((100.0, 1.0),),
    )  # fmt: skip


BAD_BOOKS: list[Any] = [
    codec.encode(crossed_book()),
    {"d": codec._packer.pack([1, "B", "binance", "BTC/USDT", 1, 1, 5, [100.0], [101.0, 1.0]])},
    {"d": codec._packer.pack([1, "B", "binance", "BTC/USDT", 1, 1, 5, "bids", []])},
    {"d": codec._packer.pack([1, "B", "binance", "BTC/USDT", 1, 1, -3, [], []])},
    {"d": codec._packer.pack([1, "B", "binance", "BTC/USDT", 1, 1, 5, [100.0, -1.0], []])},
    {
        "d": codec._packer.pack(
            [1, "B", "binance", "BTC/USDT", 1, 1, 5, [101.0, 1.0, 102.0, 1.0], []]
        )
    },
    {"d": codec._packer.pack([2, "B", "binance", "BTC/USDT", 1, 1, 5, [], []])},  # newer schema
    {"d": b"\x93garbage"},
    codec.encode(candle(0, 100.0)),  # a candle in a book stream
]


@pytest.mark.parametrize("callbacks", [False, True])
async def test_bad_book_entries_are_counted_and_skipped(
    redis: aioredis.Redis, redis_server: Any, callbacks: bool
) -> None:
    key = stream_key("binance", "BTC/USDT", "book")
    for fields in BAD_BOOKS:  # in the backfill
        await redis.xadd(key, fields)
    await add(redis, [book(1)])
    seen: list[Record] = []
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["book"], backfill=100,
                        block_ms=50) as c:  # fmt: skip
        if callbacks:  # entries go one by one through callbacks, else batch by batch
            c.on_record(seen.append)
        assert c.stats.invalid == len(BAD_BOOKS)
        for fields in BAD_BOOKS:  # live
            await redis.xadd(key, fields)
        await add(redis, [book(2)])
        await until(lambda: c.book("binance", "BTC/USDT") == book(2))
        assert c.stats.invalid == 2 * len(BAD_BOOKS)
        assert c.buffer("binance", "BTC/USDT", "book").table().column("seq").to_pylist() == [
            book(1).seq, book(2).seq,
        ]  # fmt: skip
        assert c._task is not None and not c._task.done()
    assert seen == ([book(2)] if callbacks else [])


async def test_bad_candle_entries_are_counted_and_skipped(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    key = stream_key("binance", "BTC/USDT", "candles")
    good = candle(0, 100.0)
    bad: list[Any] = [
        codec.encode(good.model_copy(update={"interval": "7m"})),
        codec.encode(good.model_copy(update={"low": 101.0})),  # low above open
        codec.encode(good.model_copy(update={"closed": 1})),  # not a boolean
        codec.encode(book(1)),
    ]
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["candles"], backfill=0,
                        block_ms=50) as c:  # fmt: skip
        for fields in bad:
            await redis.xadd(key, fields)
        await add(redis, [good])
        await until(lambda: c.exchange_candles("binance", "BTC/USDT", "1m").num_rows == 1)
        assert c.stats.invalid == len(bad)


async def test_group_consumer_with_book_and_candles(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    got: list[Record] = []
    markets = ["binance:BTC/USDT", "okx:BTC/USDT"]
    async with Consumer(redis_server.url, markets, ["book", "candles"], backfill=0, block_ms=50,
                        group="bots", name="bot-1") as c:  # fmt: skip
        c.on_record(got.append)
        records: list[Record] = []
        for ex in EXCHANGES:
            records += [
                book(1, ex),
                candle(0, 101.0, ex),
                book(2, ex),
                candle(0, 102.0, ex, closed=True),
            ]
        await add(redis, records)
        await redis.xadd(stream_key("okx", "BTC/USDT", "book"), {"d": b"\xc1"})
        await until(lambda: len(got) == len(records))
        await until(lambda: c.stats.acked == len(records) + 1)  # the bad entry is acked too
        for ex in EXCHANGES:
            model = c.book(ex, "BTC/USDT")
            assert model == book(2, ex)
            assert any(r is model for r in got)  # the callback's model, not a second one
            assert open_close(c.exchange_candles(ex, "BTC/USDT", "1m")) == [
                (candle(0, 1).open_ms, 102.0, True)
            ]
        assert sorted(got, key=lambda r: (r.exchange, r.channel, r.ts_ms)) == sorted(
            records, key=lambda r: (r.exchange, r.channel, r.ts_ms)
        )
        assert c.stats.invalid == 1
    for ex in EXCHANGES:
        for ch in ("book", "candles"):
            assert (await redis.xpending(stream_key(ex, "BTC/USDT", ch), "bots"))["pending"] == 0


# -- examples/spread.py ---------------------------------------------------------------------


def load_spread() -> Any:
    path = Path(__file__).resolve().parents[2] / "examples" / "spread.py"
    spec = importlib.util.spec_from_file_location("spread_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SPREAD_LINE = re.compile(
    r"(?P<a>\S+) bid (?P<a_bid>\S+) ask (?P<a_ask>\S+) (?P<a_src>book|ticker) (?P<a_age>-?[\d.]+)s \| "
    r"(?P<b>\S+) bid (?P<b_bid>\S+) ask (?P<b_ask>\S+) (?P<b_src>book|ticker) (?P<b_age>-?[\d.]+)s \| "
    r"(?P<ea>\w+) bid - (?P<eb>\w+) ask (?P<ab>[+-][\d.]+) bps \| "
    r"(?P=eb) bid - (?P=ea) ask (?P<ba>[+-][\d.]+) bps$"
)


def spread_lines(out: io.StringIO) -> list[re.Match[str]]:
    return [m for line in out.getvalue().splitlines() if (m := SPREAD_LINE.search(line))]


async def test_spread_example_prints_both_directions_from_book_or_ticker(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    spread = load_spread()
    now = int(time.time() * 1000)
    # binance publishes a book, okx only a ticker (for now)
    binance = book(0, "binance", mid=100.0, ts_ms=now - 500)
    okx = Ticker(exchange="okx", symbol="BTC/USDT", ts_ms=now - 2000, recv_ns=1, bid=100.2,
                 ask=100.3)  # fmt: skip
    await add(redis, [binance, okx])
    bn_bid, bn_ask = binance.bids[0][0], binance.asks[0][0]
    out, stop = io.StringIO(), asyncio.Event()
    argv = [
        "binance:BTC/USDT",
        "okx:BTCUSDT",
        "--redis-url",
        redis_server.url,
        "--interval",
        "0.05",
    ]
    task = asyncio.create_task(spread.run(argv, out=out, stop=stop))
    await until(lambda: spread_lines(out) or task.done())
    m = spread_lines(out)[0]
    assert (m["a"], m["b"], m["ea"], m["eb"]) == (
        "binance:BTC/USDT",
        "okx:BTCUSDT",
        "binance",
        "okx",
    )
    assert (float(m["a_bid"]), float(m["a_ask"]), m["a_src"]) == (bn_bid, bn_ask, "book")
    assert (float(m["b_bid"]), float(m["b_ask"]), m["b_src"]) == (100.2, 100.3, "ticker")
    assert float(m["ab"]) == pytest.approx(-34.90, abs=0.006)  # (99.95 - 100.3) / 100.3
    assert float(m["ab"]) == pytest.approx((bn_bid - 100.3) / 100.3 * 1e4, abs=0.006)
    assert float(m["ba"]) == pytest.approx(14.99, abs=0.006)  # (100.2 - 100.05) / 100.05
    assert float(m["ba"]) == pytest.approx((100.2 - bn_ask) / bn_ask * 1e4, abs=0.006)
    assert 0.5 <= float(m["a_age"]) < 5 and 2.0 <= float(m["b_age"]) < 6.5
    # okx starts publishing books: its side switches to the book
    okx_book = book(0, "okx", mid=100.1, ts_ms=now)
    await add(redis, [okx_book])
    await until(lambda: spread_lines(out)[-1]["b_src"] == "book" or task.done())
    m = spread_lines(out)[-1]
    ok_bid, ok_ask = okx_book.bids[0][0], okx_book.asks[0][0]
    assert (float(m["b_bid"]), float(m["b_ask"])) == (ok_bid, ok_ask)
    assert float(m["ab"]) == pytest.approx((bn_bid - ok_ask) / ok_ask * 1e4, abs=0.006)  # -19.97
    assert float(m["ba"]) == pytest.approx((ok_bid - bn_ask) / bn_ask * 1e4, abs=0.006)  # 0
    stop.set()
    assert await asyncio.wait_for(task, 10) == 0


async def test_spread_example_stops_after_seconds_and_waits_for_missing_sides(
    redis: aioredis.Redis, redis_server: Any
) -> None:
    spread = load_spread()
    await add(redis, [book(0, "binance", mid=100.0)])
    out = io.StringIO()
    argv = ["binance:BTC/USDT", "okx:BTC/USDT", "kraken:BTC/USDT", "--redis-url",
            redis_server.url, "--seconds", "0.3", "--interval", "0.1"]  # fmt: skip
    assert await asyncio.wait_for(spread.run(argv, out=out), 10) == 0
    lines = [line.split(" ", 1)[1] for line in out.getvalue().splitlines()]  # without the time
    assert len(lines) % 3 == 0 and 3 <= len(lines) <= 12  # three pairs a tick, 0.3 s at 0.1 s
    assert lines[:3] == [
        f"binance:BTC/USDT bid 99.95 ask 100.05 book {lines[0].split()[6]} | okx:BTC/USDT waiting"
        " | binance bid - okx ask - | okx bid - binance ask -",
        f"binance:BTC/USDT bid 99.95 ask 100.05 book {lines[0].split()[6]} | kraken:BTC/USDT "
        "waiting | binance bid - kraken ask - | kraken bid - binance ask -",
        "okx:BTC/USDT waiting | kraken:BTC/USDT waiting | okx bid - kraken ask - | "
        "kraken bid - okx ask -",
    ]


def test_spread_example_rejects_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    spread = load_spread()
    with pytest.raises(SystemExit) as info:
        spread.parse_args(["binance:BTC/USDT"])
    assert info.value.code == 2 and "two markets" in capsys.readouterr().err
    assert asyncio.run(spread.run(["binance:BTC/USDT", "nocolon"])) == 2
    assert "nocolon" in capsys.readouterr().err


@pytest.mark.parametrize("mode", ["plain", "group"])
async def test_linger_gathers_a_trickle_into_fewer_reads(
    redis: aioredis.Redis, redis_server: Any, mode: str
) -> None:
    """``linger_ms``: after a read that brought entries the consumer waits before the next,
    so a trickle of one entry every 10 ms is taken in reads of several: at most one read
    (plus the catch-up ones) per linger, every entry once, in order."""
    kw: dict[str, Any] = {"group": "bots", "name": "a"} if mode == "group" else {}
    command = "xreadgroup" if mode == "group" else "xread"
    async with Consumer(
        redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0, block_ms=5_000,
        linger_ms=100, **kw,
    ) as c:  # fmt: skip
        await until_async(lambda: blocked_count_is(redis, command, 1), timeout=10)
        before = await calls_of(redis, command)
        t0 = time.monotonic()
        for i in range(100):
            await add(redis, [trade(i)])
            await asyncio.sleep(0.01)
        await until(lambda: c.stats.received == 100, timeout=10)
        elapsed = time.monotonic() - t0
        reads = await calls_of(redis, command) - before
        ids = held_ids(c)
    assert ids == [str(i) for i in range(100)]
    # each read that brought entries is followed by 100 ms of nothing: at most one a linger
    assert reads <= elapsed / 0.1 + 3, (reads, elapsed)
    assert c.stats.received == 100


def test_linger_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="linger_ms"):
        Consumer("redis://127.0.0.1:1", ["binance:BTC/USDT"], linger_ms=-1)
