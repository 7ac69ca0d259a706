"""``marketbus tail``: the live view (or JSON lines) of what a bot reads through ``Consumer``."""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from rich.console import Console
from rich.live import Live

from marketbus.keys import parse_stream_key, stream_pattern
from marketbus.models import Channel, Record
from marketbus.redis_client import connect
from marketbus.settings import RedisSettings
from marketbus_cli.view import RateMeter, record_json, render


async def discover_markets(redis: RedisSettings, wait_s: float = 0.0) -> list[str]:
    """``exchange:symbol`` of every marketbus stream in Redis (waiting up to ``wait_s``)."""
    client = connect(redis)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            found = set()
            async for k in client.scan_iter(match=stream_pattern(), count=1000):
                try:
                    sk = parse_stream_key(k)
                except ValueError:
                    continue
                found.add(f"{sk.exchange}:{sk.symbol}")
            if found or time.monotonic() >= deadline:
                return sorted(found)
            await asyncio.sleep(0.5)
    finally:
        await client.aclose()


async def tail(
    redis: RedisSettings,
    markets: list[str],
    channels: list[Channel],
    *,
    as_json: bool = False,
    count: int | None = None,
    backfill: int = 100,
    title: str = "marketbus",
    stop: asyncio.Event | None = None,
    console: Console | None = None,
) -> int:
    """Follow ``markets``; returns how many records were shown."""
    from consumers import Consumer

    if not markets:
        markets = await discover_markets(redis, wait_s=0 if count == 0 else 30)
        if not markets:
            print("no marketbus streams in Redis yet: is a publisher running?", file=sys.stderr)
            return 0
    seen = 0
    done = asyncio.Event()
    meter = RateMeter()
    out = sys.stdout.buffer

    async with Consumer(redis, markets, channels, backfill=0 if as_json else backfill) as c:

        def on_record(r: Record) -> None:
            nonlocal seen
            seen += 1
            meter.hit(r.exchange, r.symbol, time.time())
            if as_json:
                out.write(record_json(r) + b"\n")
                out.flush()
            if count is not None and seen >= count:
                done.set()

        c.on_record(on_record)
        waiters: list[Any] = [asyncio.ensure_future(done.wait())]
        if stop is not None:
            waiters.append(asyncio.ensure_future(stop.wait()))
        reader = asyncio.ensure_future(c.run())
        waiters.append(reader)
        try:
            if as_json:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            else:
                con = console or Console()
                try:
                    with Live(
                        render(c.buffers, meter, title), console=con, refresh_per_second=4
                    ) as live:
                        while not any(w.done() for w in waiters):
                            live.update(render(c.buffers, meter, title))
                            await asyncio.sleep(0.25)
                finally:
                    if not con.is_terminal:
                        con.line()  # rich ends a non-terminal live view without a newline
            if reader.done() and reader.exception() is not None:
                raise reader.exception()  # type: ignore[misc]
        finally:
            for w in waiters:
                w.cancel()
    return seen
