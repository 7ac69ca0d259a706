"""``marketbus demo`` (what ``make run`` starts): Redis + publisher + the live view, one process.

Live Binance when it answers within a few seconds; otherwise one plain line says so and
the bundled fake exchange replays a recorded Binance session. Ctrl-C stops everything
(publisher, fake exchange, a redis-server we started) and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from pathlib import Path
from typing import Any

import aiohttp

from marketbus import logs
from marketbus.models import Channel
from marketbus.settings import DEFAULT_SYMBOLS, RedisSettings, load_settings

BINANCE_PING = "https://api.binance.com/api/v3/ping"


async def binance_reachable(timeout: float) -> tuple[bool, str]:
    """Whether live Binance answers its ping within ``timeout`` seconds (and why not)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(BINANCE_PING) as r:
                return r.status == 200, f"HTTP {r.status}"
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except Exception as e:
        return False, type(e).__name__


def recorded_symbols(path: Path) -> list[str]:
    """The markets a recording holds (its header), as unified symbols."""
    with path.open() as f:
        header = json.loads(f.readline())
    markets: set[str] = set()
    for syms in header.get("config", {}).values():
        markets.update(s.replace("-", "/") for s in syms)
    return sorted(markets)


async def demo(
    redis_url: str | None,
    *,
    offline: bool = False,
    speed: float = 1.0,
    probe_timeout: float = 4.0,
    log_file: Path = Path(".run/publisher.log"),
) -> None:
    from fake_exchange import FakeExchange, ReplaySource, bundled_recording
    from marketbus.cli.local_redis import LocalRedis
    from marketbus.cli.tail import tail
    from publisher.app import Publisher

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack, log_file.open("a") as log_out:
        logs.configure("info", json=True, stream=log_out)
        if redis_url is None:
            redis_url = stack.enter_context(LocalRedis())
            print(f"started a local redis-server at {redis_url} (set REDIS_URL to use yours)")
        live, why = (False, "offline mode") if offline else await binance_reachable(probe_timeout)
        exchange: dict[str, Any] = {"name": "binance", "channels": [Channel.TICKER, Channel.TRADES]}
        async with contextlib.AsyncExitStack() as astack:
            if live:
                exchange["symbols"] = list(DEFAULT_SYMBOLS)
                title = "marketbus: LIVE Binance"
                print(f"Binance is reachable: streaming live {', '.join(DEFAULT_SYMBOLS)}")
            else:
                recording = bundled_recording()
                symbols = recorded_symbols(recording)
                fx = await astack.enter_async_context(
                    FakeExchange(ReplaySource(recording, speed=speed, loop=True))
                )
                exchange["symbols"] = symbols
                exchange["url"] = fx.base_url
                title = "marketbus: REPLAY of a recorded Binance session (not live)"
                print(
                    f"Binance is not reachable ({why}): streaming the bundled replay of a "
                    f"recorded Binance session ({', '.join(symbols)}) from a local fake exchange "
                    f"at {fx.base_url}."
                )
            settings = load_settings(
                redis=RedisSettings(url=redis_url).model_dump(), exchanges=[exchange]
            )
            print(f"publisher logs: {log_file}   Ctrl-C to stop")
            publisher = await astack.enter_async_context(Publisher(settings))
            markets = [f"binance:{s}" for s in exchange["symbols"]]
            tail_task = asyncio.create_task(
                tail(
                    settings.redis,
                    markets,
                    [Channel.TICKER, Channel.TRADES],
                    title=title,
                    stop=stop,
                )
            )
            pub_task = asyncio.create_task(publisher.wait())
            await asyncio.wait({tail_task, pub_task, asyncio.create_task(stop.wait())},
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            stop.set()
            for t in (tail_task, pub_task):
                t.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.remove_signal_handler(sig)
    print("stopped.")


def default_redis_url() -> str | None:
    return os.environ.get("REDIS_URL") or None
