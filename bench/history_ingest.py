"""Archive ingest, Redis -> Parquet: records/s and bytes on disk per trade.

    python -m bench.history_ingest [--trades 1000000] [--markets 10] [--runs 1]

A private redis-server on a loopback port is filled with synthetic trades (random-walk
prices on a 0.01 tick, exponential sizes, consecutive ids, 0-2 ms apart, ~1-50 ms receive
latency) through the publisher's sink; then an :class:`archive.Archiver` (rolls of 16 MiB or
0.5 s) starts on an empty directory and the clock runs until every entry is in a committed
file and acknowledged: once the group has read every entry the archiver is stopped, which
commits what it holds and acknowledges it (the group's pending then 0). References in the
same run: every entry read by a bare ``XREADGROUP`` loop and acknowledged, nothing decoded or
written (:func:`raw_group_read`: what any archiver must do at least); the ``d`` payloads as
Redis holds them, and the same rows as gzip CSV. :func:`session` is the measurement, used by
this command and by the ``history`` group of ``python -m bench`` (bench/fig_history.py).
Not a test: docs/history.md quotes its output.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import math
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from archive import ArchiveConfig, Archiver
from bench.common import quiet_logs
from bench.history_math import rate
from consumers.streams import raw_command
from marketbus import codec
from marketbus.models import Trade
from publisher.sink import StreamSink
from tests.redis_server import running_redis

# smaller rolls than the defaults (64 MiB, 60 s), so a run of 1M trades holds several
# commits, each overlapping the reads that follow it, as in a long run
ROLL_BYTES = 16 * 2**20
ROLL_AGE_S = 0.5
GROUP = "archive"  # the archiver's default group
RAW_GROUP = "bench-raw"  # the reference's own group
COUNT = 10_000  # entries per stream per read, as the archiver's default


def synthetic(n: int, markets: int, seed: int = 7) -> list[Trade]:
    rng = random.Random(seed)
    price = [100.0 * (1 + m) for m in range(markets)]
    ids = [3_000_000_000 + 1000 * m for m in range(markets)]
    ts = 1_764_000_000_000
    out = []
    for _ in range(n):
        m = rng.randrange(markets)
        ts += rng.randrange(3)
        price[m] = max(0.01, round(price[m] * math.exp(rng.gauss(0, 1e-4)), 2))
        ids[m] += 1
        out.append(
            Trade.model_construct(
                exchange="binance", symbol=f"S{m}/USDT", ts_ms=ts,
                recv_ns=ts * 1_000_000 + rng.randrange(1_000_000, 50_000_000),
                id=str(ids[m]), price=price[m], amount=round(rng.expovariate(2.0), 5),
                side="buy" if rng.random() < 0.5 else "sell",
            )
        )  # fmt: skip
    return out


def gzip_csv_bytes(trades: list[Trade]) -> int:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["exchange", "symbol", "ts_ms", "recv_ns", "id", "price", "amount", "side"])
    for t in trades:
        w.writerow([t.exchange, t.symbol, t.ts_ms, t.recv_ns, t.id, t.price, t.amount, t.side])
    return len(gzip.compress(buf.getvalue().encode(), 6))


async def fill(url: str, trades: list[Trade]) -> None:
    client = aioredis.Redis.from_url(url)
    async with StreamSink(client, maxlen=10 * len(trades), batch_size=2048) as sink:
        for i in range(0, len(trades), 50_000):
            for t in trades[i : i + 50_000]:
                sink.put(t)
            await sink.drain()
    await client.aclose()


async def reset(url: str, group: str = GROUP) -> None:
    """The group gone: the next reader in it reads every stream from the start."""
    client = aioredis.Redis.from_url(url)
    async for k in client.scan_iter(match="md:*"):
        await client.xgroup_destroy(k, group)
    await client.aclose()


async def idle(client: aioredis.Redis, keys: list[bytes], group: str = GROUP) -> bool:
    """Whether ``group`` exists on every stream of ``keys`` with nothing left to read or
    to acknowledge."""
    for k in keys:
        mine = [g for g in await client.xinfo_groups(k) if g["name"].decode() == group]
        if not mine or mine[0]["pending"] or mine[0]["lag"]:
            return False
    return True


async def delivered(client: aioredis.Redis, keys: list[bytes], group: str = GROUP) -> bool:
    """Whether ``group`` exists on every stream of ``keys`` and has read every entry (its
    lag is 0; entries may still be pending: held, not yet committed and acknowledged)."""
    for k in keys:
        mine = [g for g in await client.xinfo_groups(k) if g["name"].decode() == group]
        if not mine or mine[0]["lag"] != 0:
            return False
    return True


async def ingest(
    url: str, root: Path, pause_gc: bool, timeout: float = 600.0
) -> tuple[float, Archiver]:
    """One archiver from an empty ``root`` over every ``md:*`` stream; the seconds until all
    is committed and acknowledged. The clock stops when the archiver, having read every entry
    (the group's lag 0, polled every 10 ms), has stopped: a stop commits what it holds and
    acknowledges it (no wait for the last roll's age, which is idle time, not work)."""
    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match="md:*")]
    config = ArchiveConfig(
        name="bench", roll_bytes=ROLL_BYTES, roll_age_s=ROLL_AGE_S, pause_gc=pause_gc
    )
    started = time.perf_counter()
    async with asyncio.timeout(timeout), Archiver(url, root, config) as a:
        while not await delivered(client, keys):  # noqa: ASYNC110 (polls Redis)
            await asyncio.sleep(0.01)
    elapsed = time.perf_counter() - started
    if not await idle(client, keys):
        raise RuntimeError(f"entries left pending after the archiver stopped: {a.stats}")
    await client.aclose()
    return elapsed, a


async def raw_group_read(url: str, group: str = RAW_GROUP) -> tuple[float, int]:
    """The reference: (seconds, entries) for a bare reader to take every entry of every
    ``md:*`` stream through a fresh consumer group, as the archiver reads (one
    ``XREADGROUP ... COUNT 10000 STREAMS <all> >`` at a time, replies as hiredis parses
    them: ``consumers.streams.raw_command``; each entry enters the group's pending list) and
    acknowledge it (``XACK`` per stream, pipelined, after each reply); nothing decoded or
    written. What any archiver on this host needs at least to read and acknowledge."""
    client = aioredis.Redis.from_url(url)
    keys = sorted([k async for k in client.scan_iter(match="md:*")])
    for k in keys:
        await client.xgroup_create(k, group, id="0")
    got = 0
    started = time.perf_counter()
    while True:
        reply: Any = await raw_command(
            client, "XREADGROUP", "GROUP", group, "raw", "COUNT", COUNT,
            "STREAMS", *keys, *([">"] * len(keys)),
        )  # fmt: skip
        items = list(reply.items()) if isinstance(reply, dict) else list(reply or [])
        if not any(entries for _, entries in items):
            break
        pipe = client.pipeline(transaction=False)
        for k, entries in items:
            if entries:
                got += len(entries)
                pipe.xack(k, group, *[e[0] for e in entries])
        await pipe.execute()
    elapsed = time.perf_counter() - started
    for k in keys:
        await client.xgroup_destroy(k, group)
    await client.aclose()
    return elapsed, got


def disk_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in root.rglob("*.parquet"))


@dataclass
class IngestRun:
    """One archiver run over the filled streams."""

    records: int
    seconds: float
    commits: int
    files: int
    disk_bytes: int

    @property
    def rate(self) -> float:
        return rate(self.records, self.seconds)


@dataclass
class Session:
    """What :func:`session` measured: the archiver's runs and the reference's, and sizes."""

    records: int
    markets: int
    fill_s: float
    runs: list[IngestRun] = field(default_factory=list)
    reference: list[float] = field(default_factory=list)  # records/s of raw_group_read
    reference_entries: list[int] = field(default_factory=list)


async def session(
    url: str, trades: list[Trade], work: Path, *, runs: int = 1, pause_gc: bool = True
) -> Session:
    """Fill the Redis at ``url`` with ``trades`` (it should hold nothing else), then ``runs``
    times: the reference (:func:`raw_group_read`) and an archiver run from scratch (its
    group reset, a new directory under ``work``). The directory of the last run is kept
    (``work/run-<runs-1>``): the bytes on disk per trade are measured on it."""
    t0 = time.perf_counter()
    await fill(url, trades)
    out = Session(len(trades), len({t.symbol for t in trades}), time.perf_counter() - t0)
    for i in range(runs):
        seconds, entries = await raw_group_read(url)
        out.reference.append(rate(entries, seconds))
        out.reference_entries.append(entries)
        await reset(url)
        root = work / f"run-{i}"
        elapsed, a = await ingest(url, root, pause_gc)
        out.runs.append(IngestRun(a.stats.rows, elapsed, a.stats.commits, a.stats.files,
                                  disk_bytes(root)))  # fmt: skip
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--markets", type=int, default=10)
    p.add_argument("--runs", type=int, default=1)
    args = p.parse_args()
    quiet_logs()
    trades = synthetic(args.trades, args.markets)
    payload = sum(len(codec.pack(t)) for t in trades)
    csv_gz = gzip_csv_bytes(trades)
    with running_redis() as server, tempfile.TemporaryDirectory() as tmp:
        s = asyncio.run(session(server.url, trades, Path(tmp), runs=args.runs))
        asyncio.run(reset(server.url))
        no_gc, _ = asyncio.run(ingest(server.url, Path(tmp) / "gc-off", pause_gc=False))
    n = len(trades)
    last = s.runs[-1]
    print(f"trades: {n:,} on {args.markets} markets (filled in {s.fill_s:.1f} s)")
    for r, ref in zip(s.runs, s.reference, strict=True):
        print(f"ingest: {r.seconds:.2f} s = {r.rate:,.0f} records/s ({r.commits} commits, "
              f"{r.files} files); reference, bare XREADGROUP+XACK: {ref:,.0f} records/s")  # fmt: skip
    print(f"  without pause_gc: {n / no_gc:,.0f} records/s")
    print(f"on disk: {last.disk_bytes:,} bytes = {last.disk_bytes / n:.1f} B/trade")
    print(
        f"reference: msgpack 'd' payload {payload / n:.1f} B/trade, gzip CSV {csv_gz / n:.1f} B/trade"
    )


if __name__ == "__main__":
    main()
