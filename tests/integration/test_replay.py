"""Replay against a real redis-server: publisher -> Redis -> archiver -> Parquet -> replay
into a namespace gives the same entries again, in one fixed order, and nothing else moves."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from typer.testing import CliRunner

from archive import ArchiveConfig, Archiver
from archive.replay import Replay, ReplayConfig
from archive.store import Store
from consumers import Consumer
from marketbus import codec
from marketbus.errors import ConfigError, FatalError
from marketbus.keys import parse_stream_key
from marketbus.models import Record, Trade
from marketbus_cli import app
from publisher.sink import StreamSink
from tests.archive_data import book, candle, commit_records, part_files
from tests.factories import ticker, trade
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

ALL = {"start_ms": 0, "end_ms": 2**62}
Entries = dict[bytes, list[tuple[bytes, dict[bytes, bytes]]]]  # stream -> [(id, fields)]


def records(n: int) -> list[Record]:
    """Three markets on two exchanges, every channel; many records share an exchange time."""
    out: list[Record] = []
    for i in range(n):
        out.append(trade(i, symbol="BTC/USDT"))
        out.append(trade(i, symbol="ETH/USDT", exchange="okx"))
        if i % 2 == 0:
            out.append(trade(i, symbol="ETH/USDT"))
        if i % 3 == 0:
            out.append(ticker(i, symbol="ETH/USDT"))
        if i % 5 == 0:
            out.append(book(i, levels=1 + i % 4, symbol="BTC/USDT"))
        if i % 7 == 0:
            out.append(candle(i))
    return out


async def publish(redis: aioredis.Redis, recs: list[Record]) -> None:
    async with StreamSink(redis, maxlen=1_000_000, batch_size=64) as sink:
        for r in recs:
            sink.put(r)
        await sink.drain()


async def streams(redis: aioredis.Redis, pattern: str) -> Entries:
    keys = sorted([k async for k in redis.scan_iter(match=pattern, _type="stream")])
    return {k: await redis.xrange(k) for k in keys}


@pytest.fixture
async def live(redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path) -> Entries:
    """Records published into the live ``md:`` streams and archived by the archiver (until
    every entry is in a committed file): the live entries."""
    await publish(redis, records(300))
    live = await streams(redis, "md:*")
    total = sum(map(len, live.values()))
    config = ArchiveConfig(name="a1", roll_age_s=0.1, rescan_s=0.2, count=100)
    async with Archiver(redis_server.url, tmp_path / "archive", config) as a:
        async with asyncio.timeout(30):
            while a.stats.acked < total:
                await asyncio.sleep(0.05)
    return live


def in_namespace(key: bytes, namespace: str) -> bytes:
    return key.replace(b"md:", f"md.{namespace}:".encode(), 1)


def replay_order(live: Entries) -> list[tuple[bytes, bytes]]:
    """(stream, id) of every live entry, in the order replay must write them: exchange time,
    entry id, exchange, symbol, channel."""
    rows = []
    for key, entries in live.items():
        sk = parse_stream_key(key)
        for eid, fields in entries:
            ts = codec.decode_fields(fields).ts_ms
            ms, seq = map(int, eid.split(b"-"))
            rows.append(((ts, ms, seq, sk.exchange, sk.symbol, sk.channel.value), key, eid))
    return [(key, eid) for _, key, eid in sorted(rows)]


@contextlib.asynccontextmanager
async def xadds(url: str, namespace: str) -> AsyncIterator[list[tuple[bytes, bytes]]]:
    """(stream, id) of every XADD into the namespace while the block runs (Redis MONITOR)."""
    seen: list[tuple[bytes, bytes]] = []
    client = aioredis.Redis.from_url(url)
    prefix = f"md.{namespace}:"

    async def watch(mon: Any) -> None:
        while True:
            command = (await mon.next_command())["command"].split(" ")
            if command[0] == "XADD" and command[1].startswith(prefix):
                at = 5 if command[2] == "MAXLEN" else 2
                seen.append((command[1].encode(), command[at].encode()))

    async with client.monitor() as mon:
        task = asyncio.create_task(watch(mon))
        await asyncio.sleep(0.05)
        try:
            yield seen
            await asyncio.sleep(0.2)  # the last commands reach the monitor
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    await client.aclose()


async def test_a_replay_writes_the_live_entries_again_in_one_order_twice_the_same(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path, live: Entries
) -> None:
    total = sum(map(len, live.values()))
    config = ReplayConfig(namespace="bt1", **ALL, slice_rows=97, batch=50)
    orders = []
    for attempt in range(2):
        async with xadds(redis_server.url, "bt1") as order:
            stats = await Replay(redis_server.url, tmp_path / "archive", config).run()
        orders.append(list(order))
        assert (stats.records, stats.streams, stats.done) == (total, len(live), True)
        assert (stats.renumbered, stats.duplicates, stats.skipped) == (0, 0, {})
        assert stats.deleted == (0 if attempt == 0 else len(live))
        replayed = await streams(redis, "md.bt1:*")
        # the same entries as live: the same ids, the same d and h bytes, stream by stream
        assert replayed == {in_namespace(k, "bt1"): v for k, v in live.items()}
        config = config.model_copy(update={"reset": True})
    expected = [(in_namespace(k, "bt1"), eid) for k, eid in replay_order(live)]
    assert orders[0] == orders[1] == expected
    assert await streams(redis, "md:*") == live  # the live streams did not move


async def test_a_consumer_of_the_live_keys_sees_nothing_of_a_replay(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    root = tmp_path / "archive"
    store = Store(root)
    store.open()
    commit_records(store, 1, [(f"{1_700_000_000_000 + i}-0", trade(i)) for i in range(500)])
    store.close()
    async with Consumer(
        redis_server.url, ["binance:BTC/USDT"], ["trades"], backfill=100, block_ms=50
    ) as c:
        stats = await Replay(redis_server.url, root, ReplayConfig(namespace="bt1", **ALL)).run()
        await asyncio.sleep(0.3)
        assert c.stats.received == 0
        assert len(c.buffer("binance", "BTC/USDT", "trades")) == 0
    assert stats.records == 500
    assert [k async for k in redis.scan_iter(match="md:*")] == []
    # what a bot reading the namespace gets: the archived trades, as the codec decodes them
    entries = await redis.xrange("md.bt1:{binance:BTC/USDT}:trades")
    assert [codec.decode_fields(f) for _, f in entries] == [trade(i) for i in range(500)]


async def test_a_bot_reading_the_namespace_gets_the_archived_records(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path, live: Entries
) -> None:
    """Started before the replay, a Consumer on the namespace receives every record of its
    markets, in each stream's order, with the original entry ids in its buffers."""
    markets = ["binance:BTC/USDT", "okx:ETH/USDT", "binance:ETH/USDT"]
    got: list[Record] = []
    async with Consumer(
        redis_server.url, markets, ["trades", "ticker", "book", "candles"], namespace="bot",
        backfill=0, block_ms=50,
    ) as c:  # fmt: skip
        c.on_record(got.append)
        config = ReplayConfig(namespace="bot", **ALL, maxlen=None)
        stats = await Replay(redis_server.url, tmp_path / "archive", config).run()
        async with asyncio.timeout(20):
            while c.stats.received < stats.records:
                await asyncio.sleep(0.05)
        for key, entries in live.items():
            sk = parse_stream_key(key)
            mine = [r for r in got if (r.exchange, r.symbol, r.channel) == sk]
            assert mine == [codec.decode_fields(f) for _, f in entries], key
            entry_ms = c.buffer(sk.exchange, sk.symbol, sk.channel).table().column("entry_ms")
            assert entry_ms.to_pylist() == [int(eid.split(b"-")[0]) for eid, _ in entries]
    assert stats.records == len(got) == sum(map(len, live.values()))


def archive_of(root: Path, recs: list[Trade]) -> Path:
    store = Store(root)
    store.open()
    commit_records(store, 1, [(f"{r.ts_ms}-0", r) for r in recs])
    store.close()
    return root


async def test_speed_spaces_the_records_as_they_were(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    # 41 trades 25 ms apart: 1 s of exchange time, replayed at twice the pace: >= 0.5 s
    recs = [trade(i * 25) for i in range(41)]
    root = archive_of(tmp_path, recs)
    config = ReplayConfig(namespace="paced", **ALL, speed=2.0)
    async with xadds(redis_server.url, "paced") as order:
        started = time.monotonic()
        stats = await Replay(redis_server.url, root, config).run()
        took = time.monotonic() - started
    assert took >= 0.5 - 0.03 and stats.elapsed_s >= 0.5 - 0.03
    assert stats.records == 41 and stats.max_lag_ms is not None and stats.max_lag_ms >= 0
    key = b"md.paced:{binance:BTC/USDT}:trades"
    assert order == [(key, f"{r.ts_ms}-0".encode()) for r in recs]


async def test_a_namespace_in_use_is_refused_unless_reset_which_deletes_only_its_streams(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    root = archive_of(tmp_path, [trade(i) for i in range(20)])
    url = redis_server.url
    await Replay(url, root, ReplayConfig(namespace="bt1", **ALL)).run()
    neighbours = [
        "md:{binance:BTC/USDT}:trades",  # live
        "md.bt2:{binance:BTC/USDT}:trades",  # another namespace
        "md.bt1x:{binance:BTC/USDT}:trades",  # a namespace whose name starts alike
    ]
    for key in neighbours:
        await redis.xadd(key, {"d": b"x"})
    await redis.xadd("md.bt1:{okx:SOL/USDT}:trades", {"d": b"x"})  # in bt1, not in the archive
    with pytest.raises(ConfigError, match="already holds 2 stream"):
        await Replay(url, root, ReplayConfig(namespace="bt1", **ALL)).run()
    assert await redis.xlen("md.bt1:{binance:BTC/USDT}:trades") == 20  # nothing written
    stats = await Replay(url, root, ReplayConfig(namespace="bt1", **ALL, reset=True)).run()
    assert (stats.deleted, stats.records) == (2, 20)
    assert not await redis.exists("md.bt1:{okx:SOL/USDT}:trades")
    assert await redis.xlen("md.bt1:{binance:BTC/USDT}:trades") == 20
    for key in neighbours:
        assert await redis.xlen(key) == 1


async def test_an_error_reply_ends_the_replay_and_says_why(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    recs = [trade(i) for i in range(10)] + [trade(i, symbol="ETH/USDT") for i in range(10)]
    root = archive_of(tmp_path, recs)
    await redis.set("md.bt1:{binance:ETH/USDT}:trades", "not a stream")  # WRONGTYPE for XADD
    replay = Replay(redis_server.url, root, ReplayConfig(namespace="bt1", **ALL, batch=4))
    with pytest.raises(FatalError, match="WRONGTYPE"):
        await replay.run()
    assert replay.stats.records == await redis.xlen("md.bt1:{binance:BTC/USDT}:trades") < 20
    assert not replay.stats.done


async def test_stop_ends_a_replay_with_every_record_it_counts_in_redis(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    root = archive_of(tmp_path, [trade(i * 10) for i in range(300)])  # 3 s at x1
    replay = Replay(redis_server.url, root, ReplayConfig(namespace="bt1", **ALL, speed=1.0))
    await replay.start()
    await asyncio.sleep(0.4)
    await replay.stop()
    stats = await replay.wait()
    assert not stats.done and 0 < stats.records < 300
    assert await redis.xlen("md.bt1:{binance:BTC/USDT}:trades") == stats.records


def test_the_command_replays_skips_a_bad_file_by_name_and_refuses_an_empty_range(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    root = archive_of(tmp_path / "archive", [trade(i) for i in range(50)])
    bad = part_files(root)[0].parent / "foreign.parquet"
    bad.write_bytes(b"PAR1 not a parquet file")
    runner = CliRunner()
    base = ["replay", "--dir", str(root), "--redis-url", redis_server.url, "--namespace", "cli"]
    res = runner.invoke(app, [*base, "--start", "2023-11-14", "--end", "2023-11-15"])
    assert res.exit_code == 0, res.output
    assert "replayed 50 records into 1 stream of namespace cli" in res.stdout
    assert f"skipped {bad}" in res.output
    res = runner.invoke(app, [*base, "--start", "2023-11-14", "--end", "2023-11-15"])
    assert res.exit_code == 2 and "--reset" in res.output
    res = runner.invoke(app, [*base, "--start", "2023-11-15", "--end", "2023-11-16", "--reset"])
    assert res.exit_code == 1 and "nothing to replay" in res.output
    res = runner.invoke(
        app, [*base, "--start", "1700000000010", "--end", "2023-11-15", "--reset",
              "--markets", "binance:btc-usdt", "--channels", "trades", "--speed", "max"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "replayed 40 records" in res.stdout and "1 stream deleted first" in res.stdout
