"""Figure 3: consumer records/s, decoded and appended to ring buffers, from 100 streams.

The streams (trades and tickers of 50 markets) are pre-filled once. Each run is a fresh
``Consumer`` reading them from the start (``start_ids`` = ``0-0``; blocking ``XREAD`` with
``COUNT 1000``), timed from ``start()`` until ``stats.received`` holds every record. Group
mode: a fresh group created at id 0 on every stream, ``XREADGROUP`` + ``XACK``, timed until
every record is also acknowledged (``stats.acked``: counted from XACK's replies). A third
variant registers a no-op ``on_record`` callback (the per-record path with a model built).
The reference is the raw read: ``XREAD`` of the same entries with redis-py, no decoding; the
notes add the consumer's own read without redis-py's reply parsing (``consumers.streams.raw_command``).
"""

from __future__ import annotations

import time
from typing import Any

import redis.asyncio as aioredis

from bench.common import SYMBOLS, Context, Figure, Profiler, wait_until
from bench.fig_write import make_records, raw_rate
from consumers import Consumer
from consumers.streams import raw_command
from marketbus.keys import stream_key
from marketbus.models import Channel
from tests.redis_server import running_redis

MARKETS = [f"binance:SYM{i}/USDT" for i in range(SYMBOLS)]


def _keys() -> list[str]:
    channels = (Channel.TRADES, Channel.TICKER)  # the streams make_records fills
    return [stream_key("binance", f"SYM{i}/USDT", c) for i in range(SYMBOLS) for c in channels]


async def consume(
    url: str, n: int, *, group: str | None = None, callback: bool = False
) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if group is not None:
        r = aioredis.Redis.from_url(url)
        for k in _keys():
            await r.xgroup_create(k, group, id="0")
        await r.aclose()
        kw = {"group": group, "name": "c1"}
    else:
        kw = {"start_ids": dict.fromkeys(_keys(), "0-0")}
    # pause_gc is opt-in since #12; the figures measure the consumer with it on (as documented)
    c = Consumer(
        url, MARKETS, backfill=0, capacity=10_000, block_ms=100, count=1000, pause_gc=True, **kw
    )
    seen = [0]
    if callback:

        def cb(_: Any) -> None:
            seen[0] += 1

        c.on_record(cb)

    def done() -> bool:
        return c.stats.received >= n and (group is None or c.stats.acked >= n)

    t = time.perf_counter()
    await c.start()
    try:
        await wait_until(done, 120, "consumer records", 0.002)
        dt = time.perf_counter() - t
    finally:
        await c.stop()
    rows = sum(len(b) for b in c.buffers.values())
    return {"rate": n / dt, "rows": rows, "invalid": c.stats.invalid, "acked": c.stats.acked}


async def raw_read(url: str, n: int) -> float:
    r: Any = aioredis.Redis.from_url(url)
    ids: dict[Any, Any] = dict.fromkeys(_keys(), "0-0")
    got = 0
    t = time.perf_counter()
    while got < n:
        resp = await r.xread(streams=ids, count=1000)
        for k, entries in resp:
            got += len(entries)
            ids[k.decode()] = entries[-1][0].decode()
    dt = time.perf_counter() - t
    await r.aclose()
    return n / dt


async def raw_read_unparsed(url: str, n: int) -> float:
    """The consumer's own read (``consumers.streams.raw_command``: XREAD replies as hiredis parses them, no
    redis-py dict per entry), no decoding: the ceiling of the consumer's plain path."""
    r: Any = aioredis.Redis.from_url(url)
    keys = _keys()
    ids = dict.fromkeys(keys, "0-0")
    got = 0
    t = time.perf_counter()
    while got < n:
        resp = await raw_command(r, "XREAD", "COUNT", 1000, "STREAMS", *keys, *ids.values())
        for k, entries in resp.items() if isinstance(resp, dict) else resp:  # RESP3 / RESP2
            got += len(entries)
            ids[k.decode()] = entries[-1][0].decode()
    dt = time.perf_counter() - t
    await r.aclose()
    return n / dt


async def run(ctx: Context) -> list[Figure]:
    n = ctx.pick(200_000, 50_000)
    plain: list[dict[str, Any]] = []
    grouped: list[dict[str, Any]] = []
    called: list[dict[str, Any]] = []
    refs: list[float] = []
    unparsed: list[float] = []
    with running_redis() as rs:
        await raw_rate(rs.port, make_records(n))
        for i in range(ctx.repeats):
            refs.append(await raw_read(rs.url, n))
            unparsed.append(await raw_read_unparsed(rs.url, n))
            with Profiler(ctx, "consumer-plain") if i == 0 else _nullctx():
                plain.append(await consume(rs.url, n))
            with Profiler(ctx, "consumer-group") if i == 0 else _nullctx():
                grouped.append(await consume(rs.url, n, group=f"g{i}"))
            called.append(await consume(rs.url, n, callback=True))
    bad = [p for p in plain + grouped + called if p["rows"] != n or p["invalid"]]
    bad += [p for p in grouped if p["acked"] != n]
    failed = f"rows/invalid/acked mismatch: {bad[:2]}" if bad else None
    med = sorted(p["rate"] for p in plain)[len(plain) // 2]
    common = {"records": n, "streams": 2 * SYMBOLS, "count": 1000}
    return [
        Figure(
            name="3a consumer XREAD -> ring buffers",
            unit="records/s",
            runs=[p["rate"] for p in plain],
            reference="raw redis-py XREAD, no decode",
            reference_runs=refs,
            target=">= 200k/s",
            met=med >= 200_000 and not failed,
            failed=failed,
            notes=common | {"raw_xread_no_redis_py_parsing_per_s": unparsed},
        ),
        Figure(
            name="3b consumer group XREADGROUP+XACK",
            unit="records/s",
            runs=[p["rate"] for p in grouped],
            reference="raw redis-py XREAD, no decode",
            reference_runs=refs,
            failed=failed,
            notes=common | {"acked": [p["acked"] for p in grouped]},
        ),
        Figure(
            name="3c consumer XREAD + on_record callback",
            unit="records/s",
            runs=[p["rate"] for p in called],
            reference="raw redis-py XREAD, no decode",
            reference_runs=refs,
            failed=failed,
            notes=common,
        ),
    ]


def _nullctx() -> Any:
    import contextlib

    return contextlib.nullcontext()
