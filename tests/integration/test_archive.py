"""The archiver against a real redis-server: every record once, across restarts, kills,
refused acknowledgements, an unwritable directory, trimmed and invalid entries, and with
several archivers sharing one group and one directory (members adopting those gone)."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from structlog.testing import capture_logs

from archive import ArchiveConfig, Archiver, History
from archive.sql import connect
from archive.store import read_manifest
from consumers.archive_layout import commit_of
from marketbus import codec
from marketbus.keys import parse_stream_key, stream_key
from marketbus.models import Record
from publisher.sink import StreamSink
from tests.archive_data import book, candle, part_files
from tests.factories import ticker, trade
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# small reads: most replies are full, so the read-ahead path runs too
FAST = {"roll_age_s": 0.1, "rescan_s": 0.2, "retry_min_s": 0.05, "retry_max_s": 0.2, "count": 64}


def config(**over: Any) -> ArchiveConfig:
    return ArchiveConfig(**{**FAST, "name": "arch-1", **over})


def records(n: int) -> list[Record]:
    """Several markets on two exchanges, every channel."""
    out: list[Record] = []
    for i in range(n):
        out.append(trade(i, symbol="BTC/USDT"))
        out.append(trade(i, symbol="ETH/USDT", exchange="okx"))
        if i % 3 == 0:
            out.append(ticker(i, symbol="ETH/USDT"))
        if i % 5 == 0:
            out.append(book(i, levels=1 + i % 4, symbol="BTC/USDT"))
        if i % 7 == 0:
            out.append(candle(i))
    return out


async def publish(redis: aioredis.Redis, recs: list[Record], maxlen: int = 1_000_000) -> None:
    async with StreamSink(redis, maxlen=maxlen, batch_size=256) as sink:
        for r in recs:
            sink.put(r)
        await sink.drain()


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 30.0) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)


async def group_idle(redis: aioredis.Redis, group: str = "archive") -> bool:
    """Every md: stream's group has delivered and been acknowledged everything."""
    keys = [k async for k in redis.scan_iter(match="md:*", _type="stream")]
    if not keys:
        return False
    for key in keys:
        groups = {g["name"]: g for g in await redis.xinfo_groups(key)}
        g = groups.get(group.encode())
        if g is None or g["pending"] or g["lag"]:
            return False
    return True


async def assert_archive_is_redis(redis: aioredis.Redis, root: Path) -> int:
    """Each stream's entries, in History exactly once, with their values; and in the files
    themselves once (no duplicate rows at all). Returns how many entries."""
    h = History(root)
    total = 0
    async for raw in redis.scan_iter(match="md:*", _type="stream"):
        sk = parse_stream_key(raw)
        entries = await redis.xrange(raw)
        t = h.read(sk.exchange, sk.symbol, sk.channel, 0, 2**62)
        ids = [e[0].decode() for e in entries]
        assert sorted(t.column("entry_id").to_pylist()) == sorted(ids), raw
        decoded = [codec.decode_fields(f) for _, f in entries]
        assert sorted(t.column("recv_ns").to_pylist()) == sorted(r.recv_ns for r in decoded)
        total += len(ids)
    assert h.skipped == {}
    con = connect(root)
    rows = sum(con.execute(f"SELECT count(*) FROM {v}").fetchone()[0] for v in _views())
    distinct = sum(
        con.execute(f"SELECT count(DISTINCT (exchange, symbol, entry_id)) FROM {v}").fetchone()[0]
        for v in _views()
    )
    assert rows == distinct == total
    return total


def _views() -> list[str]:
    return ["trades", "ticker", "book", "candles"]


async def test_every_record_is_archived_once_and_reads_back(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    recs = records(600)
    await publish(redis, recs[:1000])  # some before the archiver starts, the rest while it runs
    async with Archiver(redis_server.url, tmp_path, config()) as a:
        await publish(redis, recs[1000:])
        await eventually(lambda: group_idle(redis))
    assert a.stats.rows == len(recs) and a.stats.acked == len(recs)
    assert a.stats.streams == 5 and a.stats.commits >= 1 and a.stats.buffered == 0
    assert a.stats.bytes == sum(p.stat().st_size for p in part_files(tmp_path))
    assert await assert_archive_is_redis(redis, tmp_path) == len(recs)
    t = History(tmp_path).read("okx", "ETH/USDT", "trades", 0, 2**62)
    assert t.column("id").to_pylist() == [str(i) for i in range(600)]
    assert t.column("price").to_pylist() == [trade(i).price for i in range(600)]
    # a restart finds nothing left to do: nothing read again, nothing written
    async with Archiver(redis_server.url, tmp_path, config()) as again:
        await asyncio.sleep(0.5)
    assert (again.stats.rows, again.stats.skipped, again.stats.commits) == (0, 0, 0)


async def test_a_stop_while_behind_archives_every_entry_it_was_handed(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Stopped while far behind (every reply full, so a read is sent ahead; small rolls, so
    reading often waits for a commit with that read in flight): what Redis handed the member,
    the read ahead's reply included, is committed and acknowledged; nothing stays pending
    under its name. Four stops, each in a group of its own."""
    await publish(redis, records(6000))
    for i in range(4):
        over = {"roll_age_s": 60, "roll_bytes": 40_000, "group": f"g{i}", "name": f"n{i}"}
        async with Archiver(redis_server.url, tmp_path / str(i), config(**over)) as a:
            await eventually(lambda a=a: _true(a.stats.rows >= 2000))  # type: ignore[misc]
        assert 0 < a.stats.rows < 14_000 and a.stats.acked == a.stats.rows  # behind
        handed = lag = 0
        async for key in redis.scan_iter(match="md:*", _type="stream"):
            [g] = [g for g in await redis.xinfo_groups(key) if g["name"] == f"g{i}".encode()]
            assert g["pending"] == 0, (i, key, g)
            handed, lag = handed + g["entries-read"], lag + g["lag"]
        assert handed == a.stats.rows and lag > 0
        assert sum(t.num_rows for t in _tables(tmp_path / str(i))) == a.stats.rows


async def _true(value: bool) -> bool:
    return value


def _tables(root: Path) -> list[Any]:
    import pyarrow.parquet as pq

    return [pq.read_table(p) for p in part_files(root)]


async def test_new_streams_and_a_lost_group_are_followed(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    await publish(redis, [trade(i) for i in range(10)])
    async with Archiver(redis_server.url, tmp_path, config()) as a:
        await eventually(lambda: group_idle(redis))
        await publish(redis, [trade(i, symbol="SOL/USDT") for i in range(10)])  # a new stream
        await eventually(lambda: group_idle(redis))
        assert a.stats.streams == 2
        key = stream_key("binance", "BTC/USDT", "trades")
        await redis.xgroup_destroy(key, "archive")  # as Redis losing it
        await publish(redis, [trade(i) for i in range(10, 20)])
        await eventually(lambda: group_idle(redis))
        assert a.stats.resets == 1
        assert a.stats.skipped == 10  # the group again at 0: what was archived is skipped
    assert a.stats.rows == 30
    assert await assert_archive_is_redis(redis, tmp_path) == 30


async def test_entries_acknowledged_late_are_skipped_at_the_seam(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A stop between the commit and the XACK (here: XACK refused to the archiver's user):
    the entries come again after the restart and are skipped, never written twice."""
    await redis.execute_command(
        "ACL", "SETUSER", "noack", "on", ">pw", "~*", "&*", "+@all", "-xack"
    )
    recs = records(100)
    await publish(redis, recs)
    url = redis_server.url.replace("redis://", "redis://noack:pw@")
    with capture_logs() as logs:
        async with Archiver(url, tmp_path, config()) as a:
            await eventually(lambda: _rows(a, len(recs)))
            await asyncio.sleep(0.3)
    assert a.stats.acked == 0 and any(e["event"] == "archive_ack_refused" for e in logs)
    pending = await redis.xpending(stream_key("binance", "BTC/USDT", "trades"), "archive")
    assert pending["pending"] == 100
    async with Archiver(redis_server.url, tmp_path, config()) as b:
        await eventually(lambda: group_idle(redis))
    n = len(recs)
    assert (b.stats.skipped, b.stats.rows, b.stats.acked) == (n, 0, n)
    assert await assert_archive_is_redis(redis, tmp_path) == n


async def _rows(a: Archiver, n: int) -> bool:
    return a.stats.rows >= n


async def test_an_unwritable_directory_stops_acknowledging_until_it_recovers(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "channel=trades"  # a file where the directory must go: ENOTDIR
    blocker.write_bytes(b"")
    await publish(redis, [trade(i) for i in range(200)])
    key = stream_key("binance", "BTC/USDT", "trades")
    with capture_logs() as logs:
        async with Archiver(redis_server.url, tmp_path, config()) as a:

            async def failing() -> bool:
                return a.stats.write_errors >= 3

            await eventually(failing)
            assert not a.stats.writable and a.stats.acked == 0 and a.stats.rows == 0
            assert "NotADirectoryError" in str(a.stats.last_error)
            assert (await redis.xpending(key, "archive"))["pending"] == 200
            await publish(redis, [trade(i) for i in range(200, 300)])
            await asyncio.sleep(0.3)  # while failing, nothing more is read from Redis
            assert (await redis.xpending(key, "archive"))["pending"] == 200
            assert a.stats.buffered == 200
            blocker.unlink()
            await eventually(lambda: group_idle(redis))
            assert a.stats.writable and a.stats.rows == 300
    failed = [e for e in logs if e["event"] == "archive_write_failed"]
    assert 1 <= len(failed) < a.stats.write_errors  # logged once per interval, not per retry
    assert any(e["event"] == "archive_write_recovered" for e in logs)
    assert await assert_archive_is_redis(redis, tmp_path) == 300


async def test_trimmed_and_invalid_entries_are_counted_not_archived(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    key = stream_key("binance", "BTC/USDT", "trades")
    await publish(redis, [trade(i) for i in range(50)])
    await redis.xgroup_create(key, "archive", id="0")
    await redis.xreadgroup("archive", "arch-1", {key: ">"})  # pending at a crashed archiver
    await redis.xtrim(key, maxlen=0)  # then MAXLEN deleted them before they were archived
    await publish(redis, [trade(i) for i in range(50, 60)])
    await redis.xadd(key, {"d": b"\x01junk"})
    with capture_logs() as logs:
        async with Archiver(redis_server.url, tmp_path, config()) as a:
            await eventually(lambda: group_idle(redis))
    assert (a.stats.trimmed, a.stats.invalid, a.stats.rows) == (50, 1, 10)
    events = {e["event"] for e in logs}
    assert {"archive_entries_trimmed", "invalid_entry_skipped"} <= events
    t = History(tmp_path).read("binance", "BTC/USDT", "trades", 0, 2**62)
    assert t.column("id").to_pylist() == [str(i) for i in range(50, 60)]


async def test_entries_a_dead_member_left_pending_are_claimed(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    key = stream_key("binance", "BTC/USDT", "trades")
    await publish(redis, [trade(i) for i in range(30)])
    await redis.xgroup_create(key, "archive", id="0")
    await redis.xreadgroup("archive", "old-host", {key: ">"}, count=20)
    async with Archiver(redis_server.url, tmp_path, config(name="new-host")) as a:
        await eventually(lambda: group_idle(redis))
    assert a.stats.rows == 30 and a.stats.skipped == 0
    assert await assert_archive_is_redis(redis, tmp_path) == 30


def _start(url: str, root: Path, log: Path, *opts: str) -> subprocess.Popen[bytes]:
    """``archive`` in a process of its own, its log lines appended to ``log``."""
    cmd = [
        sys.executable, "-m", "tests.integration.archive_cli", "archive", "--redis-url", url,
        "--dir", str(root), "--log-json", *opts,
    ]  # fmt: skip
    with open(log, "ab") as err:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)


async def _logged(log: Path, event: bytes, count: int, proc: subprocess.Popen[bytes]) -> None:
    """``event`` is in the log ``count`` times (or the process exited)."""
    async with asyncio.timeout(30):
        while (await asyncio.to_thread(log.read_bytes)).count(
            b'"' + event + b'"'
        ) < count and proc.poll() is None:
            await asyncio.sleep(0.005)


async def _started(log: Path, count: int, proc: subprocess.Popen[bytes]) -> None:
    """The ``count``-th archiver has opened the directory (or exited)."""
    await _logged(log, b"archive_opened", count, proc)


async def test_sigkill_at_random_moments_loses_nothing_and_writes_nothing_twice(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """The archiver process killed with SIGKILL twelve times while records are written,
    restarted each time (under two consumer names: the other's pending entries are claimed):
    at the end the archive holds every entry exactly once."""
    rng = random.Random(int(os.environ.get("ARCHIVE_KILL_SEED", "11")))
    root = tmp_path / "archive"
    log = tmp_path / "archiver.log"
    log.write_bytes(b"")
    recs = records(6_000)
    stop_writing = asyncio.Event()
    hurry = asyncio.Event()  # set once the kills are done: the rest at full speed

    async def writer() -> None:  # ~250 records/s while the kills go on (~60 s of them)
        async with StreamSink(redis, maxlen=1_000_000, batch_size=128) as sink:
            for i in range(0, len(recs), 25):
                for r in recs[i : i + 25]:
                    sink.put(r)
                await sink.drain()
                if stop_writing.is_set():
                    break
                if not hurry.is_set():
                    await asyncio.sleep(0.1)

    writing = asyncio.create_task(writer())
    kills = 0
    fast = ("--roll-age", "0.05", "--roll-mb", "0.02", "--count", "50", "--log-level", "debug")
    proc = _start(redis_server.url, root, log, "--name", "arch-0", *fast)
    try:
        for k in range(12):
            await _started(log, k + 1, proc)
            if k % 2:  # any moment
                await asyncio.sleep(rng.uniform(0.0, 0.4))
            else:  # inside a commit, most likely (between its intent and its manifest)
                commits = (await asyncio.to_thread(log.read_bytes)).count(b"commit_started")
                await _logged(log, b"archive_commit_started", commits + 1, proc)
                await asyncio.sleep(rng.uniform(0.0, 0.01))
            assert proc.poll() is None, log.read_text()[-2000:]
            proc.kill()
            proc.wait(10)
            kills += 1
            proc = _start(redis_server.url, root, log, "--name", f"arch-{(k + 1) % 2}", *fast)
        assert not writing.done()  # records were written all along
        hurry.set()
        await asyncio.wait_for(writing, 60)
        await _started(log, 13, proc)  # (a SIGTERM before its handler is set kills it)
        await eventually(lambda: group_idle(redis), timeout=60)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        stop_writing.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        await asyncio.wait_for(writing, 60)
    assert kills == 12
    text = log.read_text()
    assert "Traceback" not in text
    assert await assert_archive_is_redis(redis, root) == len(recs)
    assert not [p for p in root.rglob("*.tmp")]


async def test_sigterm_commits_what_is_held_and_exits_zero(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    await publish(redis, [trade(i) for i in range(100)])
    log = tmp_path / "archiver.log"
    log.write_bytes(b"")
    proc = _start(redis_server.url, tmp_path / "a", log, "--roll-age", "3600")
    try:
        key = stream_key("binance", "BTC/USDT", "trades")

        async def all_read() -> bool:  # read and held: a roll an hour away
            if proc.poll() is not None:
                return True
            groups = await redis.xinfo_groups(key)
            return bool(groups) and groups[0]["lag"] == 0

        await eventually(all_read)
        assert (await redis.xpending(key, "archive"))["pending"] == 100
        assert part_files(tmp_path / "a") == []
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()[-2000:]
        assert time.monotonic() - started < 30
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    assert (await redis.xpending(key, "archive"))["pending"] == 0
    assert await assert_archive_is_redis(redis, tmp_path / "a") == 100
    assert b'"archive_stopped"' in log.read_bytes()


async def test_two_archivers_share_one_group_and_directory_each_entry_once(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two members of one group (two consumer names) on one directory while records are
    written: Redis splits each stream between them, each commits under the shared commit
    lock with its own marks, and the archive holds every entry exactly once."""
    recs = records(3_000)
    await publish(redis, recs[:2000])
    fast = {"roll_bytes": 40_000, "count": 32}
    async with (
        Archiver(redis_server.url, tmp_path, config(name="a1", **fast)) as a,
        Archiver(redis_server.url, tmp_path, config(name="a2", **fast)) as b,
    ):
        for i in range(2000, len(recs), 200):  # the rest while both run
            await publish(redis, recs[i : i + 200])
            await asyncio.sleep(0.02)
        await eventually(lambda: group_idle(redis))
    assert a.stats.rows > 0 and b.stats.rows > 0  # both did part of the work
    assert a.stats.rows + b.stats.rows == len(recs)
    assert a.stats.skipped == b.stats.skipped == 0
    assert await assert_archive_is_redis(redis, tmp_path) == len(recs)
    manifest = read_manifest(tmp_path)
    assert manifest is not None and set(manifest.writers) == {"a1", "a2"}
    commits = sorted(commit_of(p.name) or 0 for p in part_files(tmp_path))
    assert manifest.commit == a.stats.commits + b.stats.commits >= commits[-1]


async def test_a_member_that_is_gone_is_adopted_by_a_running_one(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A member stops for good between its commit and its XACK (here: XACK refused to its
    user), leaving committed and uncommitted entries pending under its name: a running
    member adopts them, skips the committed ones by the gone member's marks, archives the
    rest, and acknowledges all."""
    await redis.execute_command(
        "ACL", "SETUSER", "noack", "on", ">pw", "~*", "&*", "+@all", "-xack"
    )
    key = stream_key("binance", "BTC/USDT", "trades")
    await publish(redis, [trade(i) for i in range(100)])
    url = redis_server.url.replace("redis://", "redis://noack:pw@")
    async with Archiver(url, tmp_path, config(name="gone")) as g:
        await eventually(lambda: _rows(g, 100))
    await publish(redis, [trade(i) for i in range(100, 160)])
    await redis.xreadgroup("archive", "gone", {key: ">"})  # delivered, never archived
    assert (await redis.xpending(key, "archive"))["pending"] == 160
    with capture_logs() as logs:
        async with Archiver(redis_server.url, tmp_path, config(name="live")) as a:
            await eventually(lambda: group_idle(redis))
    assert (a.stats.adopted, a.stats.skipped, a.stats.rows) == (160, 100, 60)
    adopted = [e for e in logs if e["event"] == "archive_member_adopted"]
    assert [(e["member"], e["entries"]) for e in adopted] == [("gone", 160)]
    assert await assert_archive_is_redis(redis, tmp_path) == 160
    manifest = read_manifest(tmp_path)
    assert manifest is not None and "gone" not in manifest.writers  # nothing left to guard


async def test_a_running_member_keeps_its_pending_entries(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Entries a running member holds (read, its commit an hour away) are not adopted by
    another: its name is taken in the directory, so they would be written twice."""
    key = stream_key("binance", "BTC/USDT", "trades")
    await publish(redis, [trade(i) for i in range(50)])
    async with Archiver(redis_server.url, tmp_path, config(name="slow", roll_age_s=3600)) as s:
        await eventually(lambda: _buffered(s, 50))
        async with Archiver(
            redis_server.url, tmp_path, config(name="other", adopt_every_s=0.05)
        ) as o:
            await asyncio.sleep(0.5)
            assert o.stats.adopted == 0 and o.stats.rows == 0
            assert (await redis.xpending(key, "archive"))["pending"] == 50
    assert s.stats.rows == 50  # committed by its own archiver at stop
    assert await assert_archive_is_redis(redis, tmp_path) == 50


async def _buffered(a: Archiver, n: int) -> bool:
    return a.stats.buffered >= n


async def test_two_archiver_processes_killed_at_random_lose_nothing_and_write_nothing_twice(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two archiver processes of one group on one directory; one of them, at random, killed
    with SIGKILL ten times while records are written, and started again: under its own name,
    or (every third time) under a new one, so its old name's entries wait for the other
    member to adopt them. At the end: every entry exactly once."""
    rng = random.Random(int(os.environ.get("ARCHIVE_KILL_SEED", "7")))
    root = tmp_path / "archive"
    toml = tmp_path / "archive.toml"
    toml.write_text("[archive]\nadopt_every_s = 0.3\nrescan_s = 0.2\nlock_wait_s = 5\n")
    logs = {n: tmp_path / f"{n}.log" for n in ("p0", "p1")}
    for path in logs.values():
        path.write_bytes(b"")
    recs = records(4_000)
    hurry = asyncio.Event()

    async def writer() -> None:
        async with StreamSink(redis, maxlen=1_000_000, batch_size=128) as sink:
            for i in range(0, len(recs), 25):
                for r in recs[i : i + 25]:
                    sink.put(r)
                await sink.drain()
                if not hurry.is_set():
                    await asyncio.sleep(0.1)

    fast = ("--roll-age", "0.05", "--roll-mb", "0.02", "--count", "50", "--config", str(toml))
    names = {"p0": "m0", "p1": "m1"}
    procs = {p: _start(redis_server.url, root, logs[p], "--name", names[p], *fast) for p in names}
    writing = asyncio.create_task(writer())
    renamed = 0
    try:
        for k in range(10):
            victim = rng.choice(["p0", "p1"])
            await _started(logs[victim], logs[victim].read_bytes().count(b"archive_opened") or 1,
                           procs[victim])  # fmt: skip
            await asyncio.sleep(rng.uniform(0.05, 0.5))
            assert procs[victim].poll() is None, logs[victim].read_text()[-2000:]
            procs[victim].kill()
            procs[victim].wait(10)
            if k % 3 == 2:
                renamed += 1
                names[victim] = f"m{victim[-1]}-{renamed}"
            opened = logs[victim].read_bytes().count(b"archive_opened")
            procs[victim] = _start(
                redis_server.url, root, logs[victim], "--name", names[victim], *fast
            )
            await _started(logs[victim], opened + 1, procs[victim])
        assert not writing.done()  # records were written all along
        hurry.set()
        await asyncio.wait_for(writing, 60)
        await eventually(lambda: group_idle(redis), timeout=90)
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            assert p.wait(30) == 0
    finally:
        hurry.set()
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait(10)
        await asyncio.wait_for(writing, 60)
    text = "".join(path.read_text() for path in logs.values())
    assert "Traceback" not in text
    assert renamed == 3 and text.count('"archive_member_adopted"') >= 1
    assert await assert_archive_is_redis(redis, root) == len(recs)
    assert not [p for p in root.rglob("*.tmp")]
