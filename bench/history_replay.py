"""Replay, archive -> Redis: records/s at max speed, and how late a paced replay runs.

    python -m bench.history_replay [--trades 1000000] [--markets 10] [--runs 3]

Synthetic trades (those of ``bench.history_ingest``: random-walk prices, 0-2 ms apart) are
committed into an archive directory by :class:`archive.store.Store` as the archiver would,
in rolls of ``--roll`` entries (one file per roll), with entry ids a few ms after their
exchange time. A private redis-server on a loopback port then takes:

- the reference, in the same run: the same records written by the publisher's sink
  (``StreamSink``: pipelined ``XADD MAXLEN ~``, the live write path) into ``md:``;
- ``marketbus replay`` at max speed (``Replay``, the defaults of the command: slices of
  100k rows, batches of 2,048, ``MAXLEN ~ 100000``) into a namespace, reset before each run,
  timed from the first write to the last reply; the process's resident memory is sampled
  meanwhile (its growth over the start: the slices held);
- a paced replay of ``--paced-s`` seconds of data at ``--speed``: its wall time and the
  writer's worst lag.

The load average before and after is printed: the machine is shared. Not a test:
docs/history.md quotes its output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from archive.replay import Replay, ReplayConfig, ReplayStats
from archive.store import Store
from bench.common import quiet_logs
from bench.history_ingest import synthetic
from marketbus.models import Trade
from publisher.sink import StreamSink
from tests.archive_data import commit_records
from tests.redis_server import running_redis


def entry_ids(trades: list[Trade]) -> list[str]:
    """Ids as Redis would give them: the ms a few ms after the exchange time, rising."""
    out = []
    last = (0, -1)
    for t in trades:
        ms = max(t.ts_ms + 3, last[0])
        last = (ms, last[1] + 1 if ms == last[0] else 0)
        out.append(f"{last[0]}-{last[1]}")
    return out


def build_archive(root: Path, trades: list[Trade], roll: int) -> None:
    store = Store(root)
    store.open()
    try:
        ids = entry_ids(trades)
        for c, i in enumerate(range(0, len(trades), roll), start=1):
            commit_records(
                store, c, list(zip(ids[i : i + roll], trades[i : i + roll], strict=True))
            )
    finally:
        store.close()


async def sink_reference(url: str, trades: list[Trade]) -> float:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    started = time.perf_counter()
    async with StreamSink(client, maxlen=100_000, batch_size=2048) as sink:
        for i in range(0, len(trades), 50_000):
            for t in trades[i : i + 50_000]:
                sink.put(t)
            await sink.drain()
    elapsed = time.perf_counter() - started
    await client.flushall()
    await client.aclose()
    return len(trades) / elapsed


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Run:
    stats: ReplayStats
    memory_mb: float
    cpu_s: float  # this process (the replay, and its reading thread)
    redis_cpu_s: float

    def line(self, ref: float) -> str:
        st, n = self.stats, max(self.stats.records, 1)
        return (
            f"{st.records:,} records in {st.elapsed_s:.2f} s = {st.rate:,.0f} records/s "
            f"({st.rate / ref:.2f}x the sink), {st.slices} slices, memory +{self.memory_mb:.0f} "
            f"MiB; CPU per record: replay {self.cpu_s / n * 1e6:.2f} us, redis-server "
            f"{self.redis_cpu_s / n * 1e6:.2f} us"
        )


async def redis_cpu_s(url: str) -> float:
    client = aioredis.Redis.from_url(url)
    info = await client.info("cpu")
    await client.aclose()
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def replay(url: str, root: Path, **over: Any) -> Run:
    """One replay, with the growth of resident memory over its start (sampled every 20 ms)
    and the CPU time it and redis-server used."""
    options: dict[str, Any] = {"start_ms": 0, "end_ms": 2**62, **over}
    config = ReplayConfig(namespace="bench", reset=True, **options)
    base = peak = rss_mb()
    redis_before, cpu_before = await redis_cpu_s(url), time.process_time()
    task = asyncio.create_task(Replay(url, root, config).run())
    while not task.done():
        peak = max(peak, rss_mb())
        await asyncio.sleep(0.02)
    cpu = time.process_time() - cpu_before
    return Run(task.result(), peak - base, cpu, await redis_cpu_s(url) - redis_before)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--trades", type=int, default=1_000_000)
    p.add_argument("--markets", type=int, default=10)
    p.add_argument("--roll", type=int, default=100_000, help="entries per archive commit")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--speed", type=float, default=10.0)
    p.add_argument("--paced-s", type=float, default=20.0, help="seconds of data replayed paced")
    args = p.parse_args()
    quiet_logs()
    load_before = os.getloadavg()
    trades = synthetic(args.trades, args.markets)
    first, last = trades[0].ts_ms, trades[-1].ts_ms
    with running_redis() as server, tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        build_archive(root, trades, args.roll)
        build_s = time.perf_counter() - t0
        files = len(list(root.glob("channel=*/exchange=*/date=*/*.parquet")))
        ref = asyncio.run(sink_reference(server.url, trades))
        n = len(trades)
        del trades
        runs = [asyncio.run(replay(server.url, root)) for _ in range(args.runs)]
        paced = asyncio.run(
            replay(server.url, root, speed=args.speed, end_ms=first + int(args.paced_s * 1000))
        ).stats
    load_after = os.getloadavg()
    print(f"trades: {n:,} on {args.markets} markets, {(last - first) / 1000:.0f} s of data; "
          f"archive built in {build_s:.1f} s ({files} files)")  # fmt: skip
    print(f"reference, the publisher's sink into md: {ref:,.0f} records/s")
    for i, run in enumerate(runs, 1):
        print(f"replay max speed, run {i}: {run.line(ref)}")
    span = (paced.last_ts_ms or 0) - (paced.first_ts_ms or 0)
    print(f"paced x{args.speed:g}: {paced.records:,} records, {span / 1000:.1f} s of data in "
          f"{paced.elapsed_s:.2f} s (ideal {span / 1000 / args.speed:.2f} s), "
          f"max lag {paced.max_lag_ms or 0:.1f} ms")  # fmt: skip
    print("load average before: {:.2f} {:.2f} {:.2f}".format(*load_before))
    print("load average after:  {:.2f} {:.2f} {:.2f}".format(*load_after))


if __name__ == "__main__":
    main()
