"""A consumer behind MAXLEN, against a real redis-server: the entries trimmed before it read
them are found, counted exactly (from Redis' own counters), logged once per range, and each
stream's lag is told (issue #11, item 6)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from consumers import Consumer, Record, trim_watch
from marketbus import codec
from marketbus.acl import Role, acl_rules
from marketbus.keys import stream_key
from tests.factories import trade
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

TRADES = stream_key("binance", "BTC/USDT", "trades")
MAXLEN = 1000
BURST = 20_000
MODES = {"plain": {}, "group": {"group": "bots", "name": "b1"}}


def burst(url: str, first: int, n: int, *, approximate: bool = True) -> list[str]:
    """``n`` trades written in one pipeline, each XADD trimming to MAXLEN (as the publisher
    does, ``~`` unless told otherwise): their entry ids."""
    r = redis_sync.Redis.from_url(url)
    try:
        pipe = r.pipeline(transaction=False)
        for i in range(first, first + n):
            pipe.xadd(TRADES, codec.encode(trade(i)), maxlen=MAXLEN, approximate=approximate)
        return [x.decode() for x in pipe.execute()]
    finally:
        r.close()


async def until(cond: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


def held(c: Consumer) -> list[int]:
    return [int(x) for x in c.buffer("binance", "BTC/USDT", "trades").table()["id"].to_pylist()]


def check_ranges(logs: list[dict[str, Any]], number: dict[str, int], got: set[int]) -> int:
    """Each ``stream_trimmed`` line's ranges hold exactly the entries it says (by the trade
    numbers written in order), none of them delivered; the sum of them."""
    entries = sorted((_id(eid), n) for eid, n in number.items())
    seen: set[int] = set()
    for g in logs:
        ranges = [
            (g[f"{p}after_id"], g[f"{p}before_id"]) for p in ("", "tail_") if f"{p}after_id" in g
        ]
        assert ranges, g
        named = {n for a, b in ranges for i, n in entries if _id(a) < i < _id(b)}
        assert len(named) == g["entries"], g
        assert not named & got and not named & seen  # not delivered, not named twice
        seen |= named
    return len(seen)


def _id(text: str) -> tuple[int, int]:
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


@pytest.mark.parametrize("approximate", [True, False], ids=["maxlen~", "maxlen="])
@pytest.mark.parametrize("mode", list(MODES))
async def test_a_slow_consumer_counts_exactly_what_maxlen_trimmed_before_it_read(
    redis: aioredis.Redis, redis_server: RedisServer, mode: str, approximate: bool
) -> None:
    """The issue's scenario: MAXLEN 1000, a 2 ms callback, 20,000 entries in one burst. What
    the consumer did not receive is what it reports trimmed, to the entry, each range logged
    once with the ids around it; what it received came once and in order."""
    first = (await redis.xadd(TRADES, codec.encode(trade(0)))).decode()
    delivered: list[int] = []

    async def slow(r: Record) -> None:
        delivered.append(int(r.id))  # type: ignore[union-attr]
        await asyncio.sleep(0.002)

    with capture_logs() as logs:
        async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=10,
                            capacity=30_000, block_ms=100, **MODES[mode]) as c:  # fmt: skip
            c.on_record(slow)
            ids = await asyncio.to_thread(
                burst, redis_server.url, 1, BURST, approximate=approximate
            )
            added = int((await redis.xinfo_stream(TRADES))["entries-added"])
            await until(lambda: c.stats.received + c.stats.trimmed >= added)
            await asyncio.sleep(0.3)  # nothing more comes
            lag = await c.lag()
    assert added == BURST + 1
    got = held(c)
    assert got == sorted(set(got)) and got[0] == 0  # once each, in order
    assert delivered == got[1:]  # the callbacks saw every entry after the backfilled one
    assert c.stats.received + c.stats.trimmed == added
    assert c.stats.received == len(got)
    assert c.stats.trimmed > BURST // 2  # the scenario: most of the burst was trimmed unread
    trims = [e for e in logs if e["event"] == "stream_trimmed"]
    assert trims and not any(e["late"] for e in trims)  # found when read, not later
    number = {first: 0, **{eid: i + 1 for i, eid in enumerate(ids)}}
    assert check_ranges(trims, number, set(got)) == c.stats.trimmed == added - len(got)
    assert c.stats.trim_gaps == len(trims)
    assert trims[-1]["total"] == c.stats.trimmed
    assert lag == {TRADES: 0}
    assert (c.stats.reconnects, c.stats.last_error, c.stats.filled) == (0, None, 0)
    if mode == "group":  # the group's read count was set right: Redis' own lag is true again
        (g,) = await redis.xinfo_groups(TRADES)
        assert (g["entries-read"], g["lag"], g["pending"]) == (added, 0, 0)


async def test_a_group_member_restarted_after_a_long_downtime_counts_what_it_missed(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Down while 20,000 entries were written to a stream capped at 1000: at restart the
    member reads on from the oldest entry left, and the range before it is counted, exactly,
    once."""
    first = (await redis.xadd(TRADES, codec.encode(trade(0)))).decode()
    group = MODES["group"]
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], block_ms=100,
                        **group) as c:  # fmt: skip
        assert held(c) == [0]  # the backfill; the group is created after it
    ids = await asyncio.to_thread(burst, redis_server.url, 1, BURST)
    with capture_logs() as logs:
        async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], block_ms=100,
                            backfill=0, capacity=30_000, **group) as c:  # fmt: skip
            await until(lambda: c.stats.received + c.stats.trimmed >= BURST)
            await asyncio.sleep(0.3)
    got = held(c)
    assert got == list(range(got[0], BURST + 1))  # the oldest entry left, then all the rest
    (trim,) = [e for e in logs if e["event"] == "stream_trimmed"]
    number = {eid: i + 1 for i, eid in enumerate(ids)}
    assert trim["after_id"] == first  # where the group was when the member stopped
    assert number[trim["before_id"]] == got[0]
    assert trim["entries"] == c.stats.trimmed == got[0] - 1 == BURST - len(got)
    (g,) = await redis.xinfo_groups(TRADES)
    assert (g["entries-read"], g["lag"]) == (BURST + 1, 0)


async def test_a_plain_consumer_started_from_an_id_redis_no_longer_holds_reports_the_range(
    redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """A bot that kept its last id (``start_ids``) and was away longer than MAXLEN covers: the
    range is reported, with its ids; how many entries it held Redis cannot tell (the count
    of entries before that id is gone with them), so it is logged as unknown, not guessed."""
    last = (await redis.xadd(TRADES, codec.encode(trade(0)))).decode()
    ids = await asyncio.to_thread(burst, redis_server.url, 1, BURST)
    with capture_logs() as logs:
        async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"],
                            start_ids={TRADES: last}, capacity=30_000, block_ms=100) as c:  # fmt: skip
            await until(lambda: bool(held(c)) and held(c)[-1] == BURST)
            lag = await c.lag()
            await asyncio.to_thread(burst, redis_server.url, BURST + 1, 10)
            await until(lambda: held(c)[-1] == BURST + 10)
            lag_after = await c.lag()
    (trim,) = [e for e in logs if e["event"] == "stream_trimmed"]
    got = held(c)
    assert trim["after_id"] == last and trim["entries"] is None
    assert trim["before_id"] == ids[got[0] - 1]  # the oldest entry Redis still held
    assert got == list(range(got[0], BURST + 11))
    assert c.stats.trimmed == 0 and c.stats.trim_gaps == 1
    assert lag == lag_after == {TRADES: 0}  # known once it read the oldest entry


@pytest.mark.parametrize("mode", list(MODES))
async def test_lag_is_what_the_consumer_has_not_read_yet(
    redis: aioredis.Redis, redis_server: RedisServer, mode: str
) -> None:
    await redis.xadd(TRADES, codec.encode(trade(0)))
    gate = asyncio.Event()

    async def stuck(r: Record) -> None:
        await gate.wait()

    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], block_ms=100,
                        **MODES[mode]) as c:  # fmt: skip
        c.on_record(stuck)
        assert await c.lag() == {TRADES: 0}
        await redis.xadd(TRADES, codec.encode(trade(1)))  # read, its callback stuck
        await asyncio.sleep(0.3)
        for i in range(2, 32):
            await redis.xadd(TRADES, codec.encode(trade(i)))
        assert await c.lag() == {TRADES: 30}
        gate.set()
        await until(lambda: c.stats.received == 32, timeout=10)
        assert await c.lag() == {TRADES: 0}
    assert c.stats.trimmed == c.stats.trim_gaps == 0


async def test_with_count_above_maxlen_the_count_is_still_exact(
    redis: aioredis.Redis, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``count`` above MAXLEN: a reply after a trimmed range is not full. Until the watch
    has seen the stream trimmed (and so checks replies half its length), such a reply is
    not checked when read; the periodic look, once the consumer is at the newest entry,
    counts what it missed (late). Either way the count is exact."""
    monkeypatch.setattr(trim_watch, "TRIM_EVERY_S", 0.2)
    await redis.xadd(TRADES, codec.encode(trade(0)))
    gate = threading.Event()

    def slow(r: Record) -> None:  # a callback that blocks the loop, as bot code may
        if not gate.is_set():
            gate.wait(0.002)

    with capture_logs() as logs:
        async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], block_ms=100,
                            count=5000, capacity=30_000) as c:  # fmt: skip
            c.on_record(slow)
            await asyncio.to_thread(burst, redis_server.url, 1, BURST)
            gate.set()
            await until(lambda: c.stats.received + c.stats.trimmed >= BURST + 1)
    got = held(c)
    assert got == sorted(set(got))
    assert c.stats.trimmed == BURST + 1 - len(got) > 0
    trims = [e for e in logs if e["event"] == "stream_trimmed"]
    assert sum(e["entries"] for e in trims) == c.stats.trimmed
    assert all(e["late"] == ("after_id" not in e) for e in trims)


async def test_without_the_rights_to_look_it_says_so_once_and_reads_on() -> None:
    """A user with only the consumer role's current rights (no XINFO, no MULTI): the watch
    is off, logged once, and reading is as before."""
    with running_redis() as server:
        admin = aioredis.Redis.from_url(server.url)
        rules = f"on >con-secret {acl_rules(Role.CONSUMER)} -xinfo -multi -exec".split()
        await admin.execute_command("ACL", "SETUSER", "consumer", *rules)
        await admin.xadd(TRADES, codec.encode(trade(0)))
        url = server.url.replace("redis://", "redis://consumer:con-secret@")
        with capture_logs() as logs:
            async with Consumer(url, ["binance:BTC/USDT"], ["trades"], block_ms=100) as c:
                for i in range(1, 5):
                    await admin.xadd(TRADES, codec.encode(trade(i)))
                await until(lambda: c.stats.received == 5, timeout=10)
                assert await c.lag() == {TRADES: None}
        await admin.aclose()
    (off,) = [e for e in logs if e["event"] == "trim_detection_off"]
    assert "noperm" in off["reason"].lower()
    assert (c.stats.reconnects, c.stats.last_error) == (0, None)
    assert held(c) == [0, 1, 2, 3, 4]
