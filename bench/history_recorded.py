"""The bundled recordings through the real path into an archive, for bytes on disk per record.

    python -m bench.history_recorded          (prints what :func:`recorded_archive` gives)

Each recording (fake_exchange/data/BINANCE.jsonl, OKX.jsonl, BYBIT.jsonl) is replayed by its
fake exchange at ``SPEED`` times the recorded pace (timestamps shifted to now, gaps divided by
``SPEED``) to one publisher (``marketbus publish``'s code, ``trades`` and ``ticker`` of every
recorded market, the default parser: native for Binance and OKX, CCXT for Bybit) writing into a
private Redis; once the streams stop growing, an archiver takes everything (one commit: a file
per exchange and channel, as a compacted day would be). The frames each fake wrote are kept,
for the raw JSON reference: each frame as the exchange sends it (compact JSON; Binance's in its
combined-stream wrapper), counted against the records of its channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.history_ingest import ingest
from fake_exchange import (
    BybitReplaySource,
    FakeBybit,
    FakeExchange,
    FakeOkx,
    OkxReplaySource,
    ReplaySource,
    bundled_recording,
)
from marketbus.settings import load_settings

SPEED = 10.0  # the recordings last 11-30 s: 1-3 s each at this pace
BINANCE = ["NKN/USDT", "BLZ/ETH", "LRC/BTC", "RUNE/EUR"]
OKX = ["BTC/USDT"]  # the recording's spot instrument (its futures go through CCXT elsewhere)
BYBIT_IDS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "DOGEUSDT"]  # linear perpetuals
BYBIT = [f"{i.removesuffix('USDT')}/USDT:USDT" for i in BYBIT_IDS]
CHANNELS = ("trades", "ticker")


@dataclass
class Recorded:
    """Where the archive is, and the JSON bytes and frames sent per (exchange, channel)."""

    root: Path
    json_bytes: dict[tuple[str, str], int] = field(default_factory=dict)
    frames: dict[tuple[str, str], int] = field(default_factory=dict)
    seconds: float = 0.0


def _add(out: Recorded, exchange: str, channel: str, frame: Any) -> None:
    key = (exchange, channel)
    out.json_bytes[key] = out.json_bytes.get(key, 0) + len(orjson.dumps(frame))
    out.frames[key] = out.frames.get(key, 0) + 1


def collect_frames(out: Recorded, binance: Any, okx: Any, bybit: Any) -> None:
    """The trade and ticker frames each fake wrote, as the exchange's JSON."""
    for f in binance.sent:
        kind = f.stream.partition("@")[2]
        channel = {"aggTrade": "trades", "ticker": "ticker"}.get(kind)
        if channel:
            _add(out, "binance", channel, {"stream": f.stream, "data": f.payload})
    for f in okx.sent:
        channel = {"trades": "trades", "tickers": "ticker"}.get(f.channel)
        if channel:
            _add(out, "okx", channel, f.payload)
    for f in bybit.sent:
        kind = f.topic.partition(".")[0]
        channel = {"publicTrade": "trades", "tickers": "ticker"}.get(kind)
        if channel and f.category == "linear":
            _add(out, "bybit", channel, f.payload)


async def _streams_total(client: aioredis.Redis) -> int:
    return sum([await client.xlen(k) async for k in client.scan_iter(match="md:*")])


async def settled(client: aioredis.Redis, quiet_s: float = 1.0, timeout: float = 30.0) -> int:
    """The entries in every ``md:*`` stream once the count stayed the same ``quiet_s``."""
    last, since = -1, time.monotonic()
    async with asyncio.timeout(timeout):
        while True:
            n = await _streams_total(client)
            if n != last:
                last, since = n, time.monotonic()
            elif time.monotonic() - since >= quiet_s:
                return n
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def _fakes() -> AsyncIterator[tuple[Any, Any, Any]]:
    async with (
        FakeExchange(ReplaySource(bundled_recording(), speed=SPEED), autoplay=False) as b,
        FakeOkx(OkxReplaySource(speed=SPEED), autoplay=False) as o,
        FakeBybit(BybitReplaySource(speed=SPEED, symbols=BYBIT_IDS), autoplay=False) as y,
    ):
        yield b, o, y


async def recorded_archive(redis_url: str, root: Path) -> Recorded:
    """The three recordings replayed through the publisher into Redis (which should hold
    nothing else), then archived into ``root``."""
    from publisher.app import Publisher  # CCXT: imported only when this runs

    out = Recorded(root)
    started = time.perf_counter()
    client = aioredis.Redis.from_url(redis_url)
    async with _fakes() as (b, o, y):
        exchanges = [
            {"name": "binance", "symbols": BINANCE, "url": b.base_url, "channels": CHANNELS},
            {"name": "okx", "symbols": OKX, "url": o.base_url, "channels": CHANNELS},
            {"name": "bybit", "symbols": BYBIT, "url": y.base_url, "channels": CHANNELS},
        ]
        settings = load_settings(
            redis={"url": redis_url}, exchanges=exchanges, supervisor={"heartbeat_s": 60}
        )
        async with Publisher(settings):
            ids = [s.replace("/", "").lower() for s in BINANCE]
            await b.wait_subscribed(
                [f"{i}@{k}" for i in ids for k in ("aggTrade", "ticker")], timeout=30
            )
            await o.wait_subscribed([("trades", "BTC-USDT"), ("tickers", "BTC-USDT")], timeout=30)
            await y.wait_subscribed(
                [("linear", f"{t}.{i}") for i in BYBIT_IDS for t in ("publicTrade", "tickers")],
                timeout=30,
            )
            for fx in (b, o, y):
                fx.play()
            for fx in (b, o, y):
                await fx.wait_done(timeout=60)
            await settled(client)
        collect_frames(out, b, o, y)
    await client.aclose()
    await ingest(redis_url, root, pause_gc=True)
    out.seconds = time.perf_counter() - started
    return out


def main() -> None:
    from bench.common import quiet_logs
    from bench.history_bytes import archive_sizes
    from tests.redis_server import running_redis

    quiet_logs()
    with running_redis() as server, tempfile.TemporaryDirectory() as tmp:
        rec = asyncio.run(recorded_archive(server.url, Path(tmp)))
        sizes = archive_sizes(Path(tmp))
    print(f"replayed and archived in {rec.seconds:.1f} s")
    for (channel, exchange), s in sorted(sizes.items()):
        js = rec.json_bytes.get((exchange, channel), 0)
        print(f"{exchange:8} {channel:7} {s.records:6} records, {s.disk_bytes:7} B on disk, "
              f"{s.data_bytes:7} B of data pages, JSON {js} B "
              f"({rec.frames.get((exchange, channel), 0)} frames)")  # fmt: skip


if __name__ == "__main__":
    main()
