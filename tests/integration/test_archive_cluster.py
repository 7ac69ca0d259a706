"""The archiver on a real 3-master Redis Cluster: streams of many markets spread over the
masters (one hash slot per market), every entry archived once and acknowledged, new streams
followed, a restart writing nothing twice, two archivers sharing the work, a gone member's
pending entries adopted, and ``marketbus archive`` against a cluster (SIGTERM: exit 0)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio.cluster import RedisCluster

from archive import ArchiveConfig, Archiver
from archive.status import archive_status_key, parse_status
from consumers import Consumer
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Record
from marketbus.settings import RedisSettings
from tests.archive_data import book, part_files
from tests.factories import ticker, trade
from tests.integration.test_archive import ROOT, assert_archive_is_redis, eventually, group_idle
from tests.redis_cluster import running_cluster
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

BASES = ("BTC", "ETH", "BNB", "XRP", "SOL", "ADA", "DOGE", "LTC", "DOT", "TRX")
MARKETS = [("binance", f"{b}/USDT") for b in BASES] + [("okx", f"{b}/USDT") for b in BASES[:4]]
FAST = {"roll_age_s": 0.1, "rescan_s": 0.2, "retry_min_s": 0.05, "retry_max_s": 0.2,
        "count": 64, "block_ms": 100}  # fmt: skip


def config(**over: Any) -> ArchiveConfig:
    return ArchiveConfig(**{**FAST, "name": "arch-1", **over})


def records(n: int, markets: list[tuple[str, str]] = MARKETS) -> list[Record]:
    """Trades of every market, tickers of some, books of binance's first two."""
    out: list[Record] = []
    for i in range(n):
        for m, (exchange, symbol) in enumerate(markets):
            out.append(trade(i, symbol=symbol, exchange=exchange))
            if m % 3 == 0 and i % 2 == 0:
                out.append(ticker(i, symbol=symbol, exchange=exchange))
        if i % 5 == 0:
            out.append(book(i, levels=1 + i % 4, symbol="BTC/USDT"))
            out.append(book(i, levels=2, symbol="ETH/USDT"))
    return out


@pytest.fixture(scope="module")
def cluster_nodes() -> Iterator[list[RedisServer]]:
    with running_cluster() as nodes:
        yield nodes


@pytest.fixture
def url(cluster_nodes: list[RedisServer]) -> str:
    return f"redis://127.0.0.1:{cluster_nodes[0].port}/0"


@pytest.fixture
async def cluster(url: str) -> AsyncIterator[Any]:
    """A cluster client, every master flushed before the test."""
    client: Any = RedisCluster.from_url(url, decode_responses=False)
    await client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield client
    await client.aclose()


def settings(url: str) -> RedisSettings:
    return RedisSettings(url=url, cluster=True)


async def publish(client: Any, recs: list[Record]) -> None:
    """XADD in the wire format (:func:`marketbus.codec.encode`, what the publisher writes),
    through the cluster client's pipeline (routed by slot)."""
    for i in range(0, len(recs), 500):
        pipe = client.pipeline(transaction=False)
        for r in recs[i : i + 500]:
            pipe.xadd(stream_key(r.exchange, r.symbol, r.channel), codec.encode(r))
        await pipe.execute()


async def masters_holding(client: Any) -> set[int]:
    """The ports of the masters that hold md: streams (each key on its slot's node)."""
    keys = [k async for k in client.scan_iter(match="md:*", _type="stream")]
    return {client.get_node_from_key(k).port for k in keys}


async def test_every_entry_on_a_cluster_is_archived_once_and_acknowledged(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    first, later = records(300), records(100, [*MARKETS[:3], ("okx", "SOL/USDT")])
    later = [r for r in later if r.symbol != "ETH/USDT" or r.exchange != "binance"]
    await publish(cluster, first[: len(first) // 2])  # before the archiver starts
    async with Archiver(settings(url), tmp_path, config()) as a:
        await publish(cluster, first[len(first) // 2 :])  # while it runs
        await eventually(lambda: group_idle(cluster))
        # a market appearing later (okx SOL/USDT: a new slot) is found by a rescan
        await publish(cluster, later)
        await eventually(lambda: group_idle(cluster))
        await eventually(lambda: _no_lag(a))  # measured over every master at each rescan
    total = len(first) + len(later)
    assert len(await masters_holding(cluster)) == 3  # the streams spread over every master
    assert a.stats.rows == a.stats.acked == total and a.stats.buffered == 0
    assert a.stats.skipped == a.stats.invalid == a.stats.errors == 0
    streams = [k async for k in cluster.scan_iter(match="md:*", _type="stream")]
    assert a.stats.streams == len(streams) > len(MARKETS)
    assert stream_key("okx", "SOL/USDT", "trades") in {k.decode() for k in streams}
    for key in streams:
        assert (await cluster.xpending(key, "archive"))["pending"] == 0, key
    assert await assert_archive_is_redis(cluster, tmp_path) == total
    # a restart finds nothing to do: nothing read again, nothing written
    files = part_files(tmp_path)
    async with Archiver(settings(url), tmp_path, config()) as again:
        await asyncio.sleep(0.5)
    assert (again.stats.rows, again.stats.skipped, again.stats.commits) == (0, 0, 0)
    assert part_files(tmp_path) == files


async def _no_lag(a: Archiver) -> bool:
    return a.stats.lag == 0 and a.stats.lag_max == 0


async def test_a_restart_while_entries_are_held_writes_none_twice(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    """Stopped holding entries (a roll an hour away): the stop commits and acknowledges
    them; the next start re-reads nothing, and archives only what came meanwhile."""
    recs = records(100)
    await publish(cluster, recs)
    async with Archiver(settings(url), tmp_path, config(roll_age_s=3600)) as a:
        await eventually(lambda: _buffered(a, len(recs)))
        assert part_files(tmp_path) == []
    assert a.stats.rows == a.stats.acked == len(recs)
    more = records(130)[len(recs) :]
    await publish(cluster, more)
    async with Archiver(settings(url), tmp_path, config()) as b:
        await eventually(lambda: group_idle(cluster))
    assert (b.stats.rows, b.stats.skipped) == (len(more), 0)
    assert await assert_archive_is_redis(cluster, tmp_path) == len(recs) + len(more)


async def _buffered(a: Archiver, n: int) -> bool:
    return a.stats.buffered >= n


async def test_two_archivers_share_a_cluster_each_entry_once(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    recs = records(400)
    await publish(cluster, recs[:3000])
    fast = {"roll_bytes": 40_000, "count": 16}
    async with (
        Archiver(settings(url), tmp_path, config(name="a1", **fast)) as a,
        Archiver(settings(url), tmp_path, config(name="a2", **fast)) as b,
    ):
        for i in range(3000, len(recs), 300):  # the rest while both run
            await publish(cluster, recs[i : i + 300])
            await asyncio.sleep(0.02)
        await eventually(lambda: group_idle(cluster))
    assert a.stats.rows > 0 and b.stats.rows > 0  # both did part of the work
    assert a.stats.rows + b.stats.rows == len(recs)
    assert a.stats.skipped == b.stats.skipped == 0
    assert await assert_archive_is_redis(cluster, tmp_path) == len(recs)


async def test_entries_a_gone_member_left_pending_on_several_masters_are_adopted(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    recs = records(40)
    await publish(cluster, recs)
    keys = [k async for k in cluster.scan_iter(match="md:*", _type="stream")]
    by_node: dict[int, bytes] = {}
    for k in keys:
        by_node.setdefault(cluster.get_node_from_key(k).port, k)
    assert len(by_node) == 3
    held = 0
    for k in by_node.values():  # delivered to "gone" (one stream on each master), never acked
        await cluster.xgroup_create(k, "archive", id="0")
        reply = await cluster.xreadgroup("archive", "gone", {k: ">"}, count=25)
        held += sum(len(entries) for _, entries in reply)
    assert held > 0
    async with Archiver(settings(url), tmp_path, config(name="live")) as a:
        await eventually(lambda: group_idle(cluster))
    assert a.stats.adopted == held and a.stats.rows == len(recs) and a.stats.skipped == 0
    assert await assert_archive_is_redis(cluster, tmp_path) == len(recs)


async def test_connections_killed_mid_read_are_retried_and_nothing_is_lost(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    """The archiver's connections to the masters killed (CLIENT KILL ID) again and again
    while records are written, until a kill lands mid-command: the error is counted and
    retried (backoff, own pending entries read again), and every entry is archived once."""
    recs = records(300)
    await publish(cluster, recs[:1000])
    client: Any = RedisCluster.from_url(url, client_name="arch-under-test")
    try:
        async with Archiver(client, tmp_path, config()) as a:
            await eventually(lambda: _acked(a, 1000))

            async def kill_until_an_error() -> None:
                while a.stats.redis_errors == 0:
                    for node in cluster.get_primaries():
                        listed = await cluster.execute_command(
                            "CLIENT", "LIST", "TYPE", "normal", target_nodes=node
                        )
                        for line in listed.decode().splitlines():
                            f = dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                            if f.get("name") == "arch-under-test":
                                await cluster.execute_command(
                                    "CLIENT", "KILL", "ID", f["id"], target_nodes=node
                                )
                    await asyncio.sleep(0.01)

            killing = asyncio.create_task(kill_until_an_error())
            for i in range(1000, len(recs), 100):
                await publish(cluster, recs[i : i + 100])
                await asyncio.sleep(0.01)
            await asyncio.wait_for(killing, 30)
            await eventually(lambda: group_idle(cluster))
    finally:
        await client.aclose()
    assert a.stats.redis_errors >= 1 and a.stats.last_error
    assert a.stats.rows == len(recs)  # (all acknowledged: group_idle above)
    assert await assert_archive_is_redis(cluster, tmp_path) == len(recs)


async def _acked(a: Archiver, n: int) -> bool:
    return a.stats.acked >= n


async def test_the_status_hash_is_written_on_a_cluster(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    from archive.status import StatusWriter

    await publish(cluster, records(20))
    async with Archiver(settings(url), tmp_path, config()) as a:
        await eventually(lambda: group_idle(cluster))
        await eventually(lambda: _no_lag(a))
        await StatusWriter(a, maxlen=1000).write()
        status = parse_status(await cluster.hgetall(archive_status_key("arch-1")))
    assert status is not None and status["state"] == "archiving"
    assert status["lag"] == 0 and status["rows"] == a.stats.rows > 0
    # what `marketbus doctor` and `marketbus archive status` read back on the cluster
    from marketbus_cli.doctor import gather_archivers
    from marketbus_cli.history_cmds import _read_statuses

    assert [s["name"] for s in await gather_archivers(cluster) or ()] == ["arch-1"]
    assert [s["rows"] for s in await _read_statuses(settings(url))] == [a.stats.rows]


def _start(url: str, root: Path, log: Path, *opts: str) -> subprocess.Popen[bytes]:
    cmd = [
        sys.executable, "-m", "tests.integration.archive_cli", "archive", "--redis-url", url,
        "--dir", str(root), "--log-json", *opts,
    ]  # fmt: skip
    env = {**os.environ, "MARKETBUS_REDIS__CLUSTER": "true"}
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err, env=env)


async def test_marketbus_archive_follows_a_cluster_and_exits_zero_on_sigterm(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    recs = records(50)
    await publish(cluster, recs)
    log = tmp_path / "archiver.log"
    log.write_bytes(b"")
    proc = _start(url, tmp_path / "a", log, "--roll-age", "3600", "--name", "cli")
    try:

        async def all_held() -> bool:  # read and held: a roll an hour away
            if proc.poll() is not None:
                return True
            for market in MARKETS:
                key = stream_key(*market, "trades")
                groups = await cluster.xinfo_groups(key)
                if not groups or groups[0]["lag"] != 0:
                    return False
            return True

        await eventually(all_held)
        assert proc.poll() is None, log.read_text()[-2000:]
        assert part_files(tmp_path / "a") == []
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log.read_text()
    assert "Traceback" not in text and '"archive_stopped"' in text
    assert await group_idle(cluster)
    assert await assert_archive_is_redis(cluster, tmp_path / "a") == len(recs)


async def test_sigkill_at_random_moments_on_a_cluster_loses_nothing_and_writes_nothing_twice(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    """``marketbus archive`` on a cluster killed with SIGKILL five times while records are
    written, restarted under two names in turn (the other's pending entries adopted): every
    entry archived exactly once, all acknowledged."""
    rng = random.Random(int(os.environ.get("ARCHIVE_KILL_SEED", "7")))
    root, log = tmp_path / "archive", tmp_path / "archiver.log"
    log.write_bytes(b"")
    recs = records(250)
    done = asyncio.Event()

    async def writer() -> None:  # ~500 records/s while the kills go on (~9 s)
        for i in range(0, len(recs), 100):
            await publish(cluster, recs[i : i + 100])
            if not done.is_set():
                await asyncio.sleep(0.2)

    writing = asyncio.create_task(writer())
    fast = ("--roll-age", "0.05", "--roll-mb", "0.02", "--count", "50")
    proc = _start(url, root, log, "--name", "arch-0", *fast)
    try:
        for k in range(5):
            await _logged(log, b"archive_opened", k + 1, proc)
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            assert proc.poll() is None, log.read_text()[-2000:]
            proc.kill()
            proc.wait(10)
            proc = _start(url, root, log, "--name", f"arch-{(k + 1) % 2}", *fast)
        done.set()
        await asyncio.wait_for(writing, 60)
        await _logged(log, b"archive_opened", 6, proc)
        await eventually(lambda: group_idle(cluster), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
    finally:
        done.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await asyncio.wait_for(writing, 60)
    assert "Traceback" not in log.read_text()
    assert await assert_archive_is_redis(cluster, root) == len(recs)
    assert not list(root.rglob("*.tmp"))


async def _logged(log: Path, event: bytes, count: int, proc: subprocess.Popen[bytes]) -> None:
    """``event`` is in the log ``count`` times (or the process exited)."""
    async with asyncio.timeout(30):
        while (await asyncio.to_thread(log.read_bytes)).count(
            b'"' + event + b'"'
        ) < count and proc.poll() is None:
            await asyncio.sleep(0.005)


async def test_window_joins_the_archive_and_a_cluster_stream(
    cluster: Any, url: str, tmp_path: Path
) -> None:
    """Trades 0-199 archived from the cluster, then trimmed off the stream; 200-299 in the
    stream only, a consumer with a 50-row buffer on the cluster: ``window()`` returns every
    trade once, in order (archive, then the stream's XRANGE on its node, then the buffer)."""
    await publish(cluster, [trade(i) for i in range(200)])
    async with Archiver(settings(url), tmp_path, config()) as a:
        await eventually(lambda: group_idle(cluster))
    assert a.stats.rows == 200
    key = stream_key("binance", "BTC/USDT", "trades")
    await publish(cluster, [trade(i) for i in range(200, 300)])
    first_kept = (await cluster.xrange(key, count=201))[-1][0]  # trade 200's entry
    await cluster.xtrim(key, minid=first_kept, approximate=False)  # archived part gone
    markets = ["binance:BTC/USDT"]
    async with Consumer(settings(url), markets, ["trades"], backfill=50, capacity=50,
                        block_ms=100, history=tmp_path) as c:  # fmt: skip
        table = await c.window("binance", "BTC/USDT", "trades", 0)
    assert await cluster.xlen(key) == 100
    assert table.column("id").to_pylist() == [str(i) for i in range(300)]
