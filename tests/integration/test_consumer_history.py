"""``Consumer(..., history=PATH)`` against a real redis-server and a real archiver: ranges
MAXLEN trimmed before the consumer read them are filled from the archive, and
``c.window()`` joins archive, stream and ring buffer (issue #11, items 3 and 6)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import redis as redis_sync
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from archive import ArchiveConfig, Archiver
from archive.store import Store
from consumers import Consumer, Record
from marketbus import codec
from marketbus.errors import ConfigError
from marketbus.keys import stream_key
from marketbus.models import Trade
from tests.archive_data import commit_records
from tests.factories import trade
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

TRADES = stream_key("binance", "BTC/USDT", "trades")
MAXLEN = 1000
BURST = 20_000
MODES = {"plain": {}, "group": {"group": "bots", "name": "b1"}}
T0 = int(time.time() * 1000)  # exchange times near the entries' Redis times (as live)


def live(i: int) -> Trade:
    return trade(i).model_copy(update={"ts_ms": T0 + i})


def archiver_config() -> ArchiveConfig:
    return ArchiveConfig(
        name="arch-1", roll_age_s=0.1, rescan_s=0.2, retry_min_s=0.05, retry_max_s=0.2
    )


async def until(cond: Any, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


async def archived(redis: aioredis.Redis, last_id: str) -> bool:
    """The archive group has read up to ``last_id``."""
    groups = {g["name"]: g for g in await redis.xinfo_groups(TRADES)}
    g = groups.get(b"archive")
    return g is not None and _id(g["last-delivered-id"]) >= _id(last_id)


def _id(x: bytes | str) -> tuple[int, int]:
    text = x.decode() if isinstance(x, bytes) else x
    ms, _, seq = text.partition("-")
    return int(ms), int(seq)


def paced_burst(url: str, first: int, n: int, chunk: int = 200) -> list[str]:
    """``n`` trades in pipelines of ``chunk``, each XADD trimming to MAXLEN, the next chunk
    written once the archiver has read the last: the archiver must read every entry before
    MAXLEN trims it, else the archive lacks it too (that case: the next test)."""
    r = redis_sync.Redis.from_url(url)
    ids: list[str] = []
    try:
        for lo in range(first, first + n, chunk):
            pipe = r.pipeline(transaction=False)
            for i in range(lo, min(lo + chunk, first + n)):
                pipe.xadd(TRADES, codec.encode(live(i)), maxlen=MAXLEN, approximate=True)
            ids += [x.decode() for x in pipe.execute()]
            deadline = time.monotonic() + 30
            while True:
                groups = {g["name"]: g for g in r.xinfo_groups(TRADES)}
                if _id(groups[b"archive"]["last-delivered-id"]) >= _id(ids[-1]):
                    break
                assert time.monotonic() < deadline, "the archiver stopped reading"
                time.sleep(0.001)
    finally:
        r.close()
    return ids


def held(c: Consumer) -> list[int]:
    return [int(x) for x in c.buffer("binance", "BTC/USDT", "trades").table()["id"].to_pylist()]


@pytest.mark.parametrize("mode", list(MODES))
async def test_with_an_archiver_a_slow_consumer_misses_nothing(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path, mode: str
) -> None:
    """The issue's scenario with an archiver running: every one of the 20,001 entries
    reaches the buffer and the callbacks, once, in order; the ranges trimmed before the
    consumer read them came from the archive (the consumer waits for the archiver to commit
    them), none is counted as trimmed."""
    first = (await redis.xadd(TRADES, codec.encode(live(0)))).decode()
    done = asyncio.Event()
    delivered: list[int] = []

    async def slow(r: Record) -> None:  # 2 ms a record while the burst is written
        delivered.append(int(r.id))  # type: ignore[union-attr]
        if not done.is_set():
            await asyncio.sleep(0.002)

    async with Archiver(redis_server.url, tmp_path, archiver_config()):
        async with asyncio.timeout(30):
            while not await archived(redis, first):
                await asyncio.sleep(0.05)
        with capture_logs() as logs:
            async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"],
                                history=tmp_path, capacity=30_000, block_ms=100,
                                **MODES[mode]) as c:  # fmt: skip
                c.on_record(slow)
                await asyncio.to_thread(paced_burst, redis_server.url, 1, BURST)
                done.set()
                await until(lambda: c.stats.received >= BURST + 1, timeout=120)
                await asyncio.sleep(0.3)
    assert held(c) == list(range(BURST + 1))
    assert delivered == list(range(1, BURST + 1))
    trims = [e for e in logs if e["event"] == "stream_trimmed"]
    assert trims, "the consumer fell behind MAXLEN: else this test shows nothing"
    assert all(e["filled"] == e["entries"] and e["trimmed"] == 0 for e in trims)
    assert c.stats.filled == sum(e["filled"] for e in trims) > 0
    assert (c.stats.trimmed, c.stats.received, c.stats.invalid) == (0, BURST + 1, 0)
    assert c.stats.trim_gaps == len(trims)


async def test_what_the_archive_lacks_stays_counted_as_trimmed(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A group member restarted after a long downtime, the archiver behind too (the archive
    lacks 1,000 of the entries trimmed meanwhile): the archive gives back what it holds, in
    order before what Redis still holds; the rest is counted as trimmed, exactly."""
    first = (await redis.xadd(TRADES, codec.encode(live(0)))).decode()
    group = MODES["group"]
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], **group):
        pass  # the group is created after the first entry
    r = redis_sync.Redis.from_url(redis_server.url)
    pipe = r.pipeline(transaction=False)
    for i in range(1, BURST + 1):
        pipe.xadd(TRADES, codec.encode(live(i)), maxlen=MAXLEN, approximate=True)
    ids = [x.decode() for x in pipe.execute()]
    r.close()
    hole = set(range(5000, 6000))
    store = Store(tmp_path)
    store.open()
    commit_records(store, 1, [(ids[i - 1], live(i)) for i in range(1, BURST + 1) if i not in hole])
    store.close()
    with capture_logs() as logs:
        async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=0,
                            capacity=30_000, block_ms=100, history=tmp_path, **group) as c:  # fmt: skip
            await until(lambda: c.stats.received + c.stats.trimmed >= BURST)
    got = held(c)
    assert got == [i for i in range(1, BURST + 1) if i not in hole]
    (trim,) = [e for e in logs if e["event"] == "stream_trimmed"]
    assert trim["after_id"] == first
    assert (c.stats.trimmed, trim["trimmed"]) == (len(hole), len(hole))
    assert trim["filled"] == c.stats.filled == trim["entries"] - len(hole)


# -- window ------------------------------------------------------------------------------------


async def test_window_without_history_is_a_config_error(redis_server: RedisServer) -> None:
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"]) as c:
        with pytest.raises(ConfigError, match="history="):
            await c.window("binance", "BTC/USDT", "trades", 0)


async def _write(redis: aioredis.Redis, lo: int, hi: int) -> list[str]:
    pipe = redis.pipeline(transaction=False)
    for i in range(lo, hi):
        pipe.xadd(TRADES, codec.encode(live(i)))
    return [x.decode() for x in await pipe.execute()]


LAYOUTS = {  # Redis trimmed to just after the archive?, backfill, buffer capacity
    "buffer-reaches-archive": (False, 600, 10_000),
    "stream-overlaps-archive": (False, 100, 150),
    "all-meet": (True, 100, 150),
}


@pytest.mark.parametrize(
    ("layout", "start"),
    [(layout, start) for layout in LAYOUTS for start in (0, 150, 350, 560, 700)],
)
async def test_window_joins_archive_stream_and_buffer_once_in_order(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path, layout: str, start: int
) -> None:
    """Trades 0-299 archived (then the archiver stops), 300-599 written to Redis only; a
    consumer starts, then 600-649 come. The buffer holds 0-649
    (``buffer-reaches-archive``) or 500-649; Redis holds everything, or was trimmed to
    exactly after the archive's last entry (``all-meet``). The window from any start: every
    trade with ``ts_ms >= start``, once, in entry id order, with the buffer's columns."""
    ids = await _write(redis, 0, 300)
    async with Archiver(redis_server.url, tmp_path, archiver_config()):
        async with asyncio.timeout(30):
            while not await archived(redis, ids[-1]):
                await asyncio.sleep(0.05)
    ids += await _write(redis, 300, 600)
    trim, backfill, capacity = LAYOUTS[layout]
    if trim:
        await redis.xtrim(TRADES, minid=ids[300])
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=backfill,
                        capacity=capacity, block_ms=100, history=tmp_path) as c:  # fmt: skip
        ids += await _write(redis, 600, 650)
        await until(lambda: held(c)[-1] == 649, timeout=10)
        buf = c.buffer("binance", "BTC/USDT", "trades")
        table = await c.window("binance", "BTC/USDT", "trades", T0 + start)
    assert held(c)[0] == (0 if backfill == 600 else 500)
    assert table.schema == buf.arrow_schema
    assert table.column("id").to_pylist() == [str(i) for i in range(start, 650)]
    want = [_id(x)[0] for x in ids[start:]]
    assert table.column("entry_ms").to_pylist() == want  # the entries' own Redis times
    assert table.column("ts_ms").to_pylist() == [T0 + i for i in range(start, 650)]
    assert isinstance(table, pa.Table)


async def test_window_finds_the_seam_inside_one_millisecond(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Entries sharing the Redis millisecond of the buffer's first row: those before it come
    from Redis, it and those after from the buffer (the seam is found by the row's values,
    not by the millisecond)."""
    await redis.xadd(TRADES, codec.encode(live(0)), id="1000-0")
    Store(tmp_path).open()  # an empty archive
    for i in range(1, 6):
        await redis.xadd(TRADES, codec.encode(live(i)), id=f"2000-{i}")
    async with Consumer(redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=3,
                        block_ms=100, history=tmp_path) as c:  # fmt: skip
        assert held(c) == [3, 4, 5]
        table = await c.window("binance", "BTC/USDT", "trades", 0)
    assert table.column("id").to_pylist() == [str(i) for i in range(6)]
    assert table.column("entry_ms").to_pylist() == [1000] + [2000] * 5
