"""Figure 2: the write path (encode + pipelined ``XADD MAXLEN ~``) vs ``redis-benchmark``.

Ours: ``StreamSink`` from one process, N prebuilt records (trades and tickers of 50 markets,
100 streams) spooled before the clock starts, timed from ``start()`` to ``drain()``. The
reference, in the same run on the same fresh redis-server: ``redis-benchmark -P 64 -n 200000
--csv XADD key MAXLEN ~ 100000 * d <payload> h <payload>`` with the mean ``d`` and ``h`` sizes
of our records. Target: >= 0.25 of the reference.

Also reported (evidence for the hot path): µs per record of ``codec.encode``, of redis-py's
command packing, of hiredis's ``pack_command``, and a prototype writer that packs with hiredis
and writes raw RESP on one asyncio socket (what the sink could do; not the product).
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import subprocess
import time
from typing import Any

import hiredis
import redis.asyncio as aioredis

from bench.common import SYMBOLS, Context, Figure, Profiler, timed_us
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Record, Ticker, Trade
from marketbus.redis_client import connect
from marketbus.settings import RedisSettings
from publisher.sink import StreamSink
from tests.redis_server import running_redis

MAXLEN = 100_000


def make_records(n: int) -> list[Record]:
    """Half trades, half tickers, round-robin over 50 markets (100 streams), times increasing."""
    out: list[Record] = []
    t0 = 1_700_000_000_000
    for i in range(n):
        sym = f"SYM{(i // 2) % SYMBOLS}/USDT"
        ts = t0 + i // 10
        if i % 2 == 0:
            out.append(
                Trade(
                    exchange="binance",
                    symbol=sym,
                    ts_ms=ts,
                    recv_ns=ts * 1_000_000 + i,
                    id=str(3_000_000_000 + i),
                    price=37_123.45 + (i % 1000) / 100,
                    amount=0.01234,
                    side="buy" if i % 4 else "sell",
                )
            )
        else:
            out.append(
                Ticker(
                    exchange="binance",
                    symbol=sym,
                    ts_ms=ts,
                    recv_ns=ts * 1_000_000 + i,
                    last=37_123.45,
                    bid=37_123.44,
                    ask=37_123.46,
                    bid_size=1.5,
                    ask_size=0.3,
                    open=36_000.0,
                    high=37_500.0,
                    low=35_900.0,
                    close=37_123.45,
                    base_volume=12_345.6,
                    quote_volume=4.5e8,
                )
            )
    return out


async def sink_rate(url: str, records: list[Record]) -> float:
    r = connect(RedisSettings(url=url))
    await r.flushall()
    sink = StreamSink(r, maxlen=MAXLEN, batch_size=512, spool_size=len(records))
    for rec in records:
        sink.put(rec)
    t = time.perf_counter()
    await sink.start()
    await sink.drain()
    dt = time.perf_counter() - t
    written = sink.stats.written
    await sink.stop()
    await r.aclose()
    if written != len(records):
        raise RuntimeError(f"sink wrote {written} of {len(records)}")
    return len(records) / dt


async def raw_rate(port: int, records: list[Record], batch: int = 512) -> float:
    """Prototype: hiredis.pack_command + one asyncio socket, one batch in flight."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    pack: Any = hiredis.pack_command
    keys: dict[tuple[str, str], bytes] = {}
    maxlen = str(MAXLEN).encode()
    hr = hiredis.Reader()
    t = time.perf_counter()
    for i in range(0, len(records), batch):
        chunk = records[i : i + batch]
        parts = []
        for rec in chunk:
            k = (rec.symbol, rec.channel)
            key = keys.get(k)
            if key is None:
                key = keys[k] = stream_key(rec.exchange, rec.symbol, rec.channel).encode()
            parts.append(
                pack(
                    (
                        b"XADD",
                        key,
                        b"MAXLEN",
                        b"~",
                        maxlen,
                        b"*",
                        b"d",
                        codec.pack(rec),
                        b"h",
                        codec.human(rec),
                    )
                )
            )
        writer.write(b"".join(parts))
        got = 0
        while got < len(chunk):
            data = await reader.read(1 << 16)
            if not data:
                raise RuntimeError("redis closed the connection")
            hr.feed(data)
            while (reply := hr.gets()) is not False:
                if isinstance(reply, hiredis.ReplyError):
                    raise RuntimeError(str(reply))
                got += 1
    dt = time.perf_counter() - t
    writer.close()
    await writer.wait_closed()
    return len(records) / dt


def redis_benchmark(port: int, n: int, d_size: int, h_size: int) -> tuple[float, str]:
    cmd = [
        "redis-benchmark",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-P",
        "64",
        "-n",
        str(n),
        "--csv",
        "XADD",
        "bench:rb",
        "MAXLEN",
        "~",
        str(MAXLEN),
        "*",
        "d",
        "x" * d_size,
        "h",
        "y" * h_size,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    rows = list(csv.reader(io.StringIO(out)))
    header = rows[0]
    rps = float(rows[-1][header.index("rps")])
    return rps, " ".join(cmd[:13]) + f" d <{d_size} B> h <{h_size} B>"


async def run(ctx: Context) -> list[Figure]:
    n = ctx.pick(100_000, 30_000)
    rb_n = ctx.pick(200_000, 50_000)
    records = make_records(n)
    fields = [codec.encode(r) for r in records[:1000]]
    d_size = round(sum(len(f["d"]) for f in fields) / len(fields))
    h_size = round(sum(len(str(f["h"]).encode()) for f in fields) / len(fields))
    ours: list[float] = []
    refs: list[float] = []
    raws: list[float] = []
    rb_cmd = ""
    with running_redis() as rs:
        for i in range(ctx.repeats):
            with Profiler(ctx, "write-path-sink") if i == 0 else contextlib.nullcontext():
                ours.append(await sink_rate(rs.url, records))
            r = aioredis.Redis(port=rs.port)
            await r.flushall()
            await r.aclose()
            raws.append(await raw_rate(rs.port, records))
            r = aioredis.Redis(port=rs.port)
            await r.flushall()
            await r.aclose()
            rps, rb_cmd = await asyncio.to_thread(redis_benchmark, rs.port, rb_n, d_size, h_size)
            refs.append(rps)
    # per-record cost breakdown (µs), evidence for where the sink's time goes
    conn: Any = aioredis.Redis().connection_pool.make_connection()  # type: ignore[no-untyped-call]
    sample = records[:512]
    enc = [codec.encode(r) for r in sample]
    args = [
        ("XADD", f"k{i % 100}", "MAXLEN", "~", MAXLEN, "*", "d", e["d"], "h", e["h"])
        for i, e in enumerate(enc)
    ]
    pack_any: Any = hiredis.pack_command
    breakdown = {
        "encode_us": round(timed_us(lambda: [codec.encode(r) for r in sample], 50) / 512, 2),
        "redis_py_pack_us": round(timed_us(lambda: conn.pack_commands(args), 50) / 512, 2),
        "hiredis_pack_us": round(timed_us(lambda: [pack_any(a) for a in args], 50) / 512, 2),
        "sink_total_us": round(1e6 / max(ours), 2),
    }
    med = sorted(ours)[len(ours) // 2]
    ref_med = sorted(refs)[len(refs) // 2]
    return [
        Figure(
            name="2a write path: StreamSink encode+XADD",
            unit="records/s",
            runs=ours,
            reference="redis-benchmark -P 64 XADD, same payload size",
            reference_runs=refs,
            target=">= 0.25x ref",
            met=med / ref_med >= 0.25,
            notes={
                "records": n,
                "streams": 2 * SYMBOLS,
                "payload_d_bytes": d_size,
                "payload_h_bytes": h_size,
                "redis_benchmark": rb_cmd,
                **breakdown,
            },
        ),
        Figure(
            name="2b write path prototype: hiredis pack + raw socket",
            unit="records/s",
            runs=raws,
            reference="redis-benchmark -P 64 XADD, same payload size",
            reference_runs=refs,
            target=">= 0.25x ref",
            met=sorted(raws)[len(raws) // 2] / ref_med >= 0.25,
            notes={"what": "bench-only prototype of a sink writer, not the product"},
        ),
    ]
