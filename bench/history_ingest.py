"""Archive ingest, Redis -> Parquet: records/s and bytes on disk per trade.

    python -m bench.history_ingest [--trades 1000000] [--markets 10]

A private redis-server on a loopback port is filled with synthetic trades (random-walk
prices on a 0.01 tick, exponential sizes, consecutive ids, 0-2 ms apart, ~1-50 ms receive
latency) through the publisher's sink; then an :class:`archive.Archiver` (rolls of 16 MiB,
the last one after 0.5 s) starts on an empty directory and the clock runs until every entry
is in a committed file and acknowledged (the group's lag and pending both 0). References in the
same run: the ``d`` payloads as Redis holds them, and the same rows as gzip CSV.
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
from pathlib import Path

import redis.asyncio as aioredis

from archive import ArchiveConfig, Archiver
from bench.common import quiet_logs
from marketbus import codec
from marketbus.models import Trade
from publisher.sink import StreamSink
from tests.redis_server import running_redis

ROLL_BYTES = 16 * 2**20
ROLL_AGE_S = 0.5  # the last, partial roll is committed without waiting the default minute


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


async def reset(url: str) -> None:
    """The archive group gone: the next archiver reads every stream from the start."""
    client = aioredis.Redis.from_url(url)
    async for k in client.scan_iter(match="md:*"):
        await client.xgroup_destroy(k, "archive")
    await client.aclose()


async def idle(client: aioredis.Redis, keys: list[bytes]) -> bool:
    for k in keys:
        [g] = await client.xinfo_groups(k)
        if g["pending"] or g["lag"]:
            return False
    return True


async def ingest(url: str, root: Path, pause_gc: bool) -> tuple[float, Archiver]:
    client = aioredis.Redis.from_url(url)
    keys = [k async for k in client.scan_iter(match="md:*")]
    started = time.perf_counter()
    config = ArchiveConfig(
        name="bench", roll_bytes=ROLL_BYTES, roll_age_s=ROLL_AGE_S, pause_gc=pause_gc
    )
    async with Archiver(url, root, config) as a:
        while not (a.stats.rows and await idle(client, keys)):  # noqa: ASYNC110 (polls Redis)
            await asyncio.sleep(0.01)
        elapsed = time.perf_counter() - started
    await client.aclose()
    return elapsed, a


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--markets", type=int, default=10)
    args = p.parse_args()
    quiet_logs()
    trades = synthetic(args.trades, args.markets)
    payload = sum(len(codec.pack(t)) for t in trades)
    csv_gz = gzip_csv_bytes(trades)
    with running_redis() as server, tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        asyncio.run(fill(server.url, trades))
        fill_s = time.perf_counter() - t0
        runs = {}
        for pause_gc in (False, True):
            root = Path(tmp) / f"gc-{pause_gc}"
            asyncio.run(reset(server.url))
            runs[pause_gc] = asyncio.run(ingest(server.url, root, pause_gc))
        elapsed, a = runs[True]
        disk = sum(f.stat().st_size for f in root.rglob("*.parquet"))
    n = len(trades)
    print(f"trades: {n:,} on {args.markets} markets (filled in {fill_s:.1f} s)")
    print(f"ingest: {elapsed:.2f} s = {n / elapsed:,.0f} records/s "
          f"({a.stats.commits} commits, {a.stats.files} files)")  # fmt: skip
    print(f"  without pause_gc: {n / runs[False][0]:,.0f} records/s")
    print(f"on disk: {disk:,} bytes = {disk / n:.1f} B/trade")
    print(
        f"reference: msgpack 'd' payload {payload / n:.1f} B/trade, gzip CSV {csv_gz / n:.1f} B/trade"
    )


if __name__ == "__main__":
    main()
