"""``marketbus demo`` (what ``make run`` starts): Redis + publisher + the live view, one process.

Binance and OKX, each live when it answers within a few seconds; otherwise one plain line
says so and the bundled fake exchange replays its recorded session (Binance: the recorded
markets; OKX: BTC/USDT with its order book). Ctrl-C (or SIGTERM) stops
everything (view, publisher, fake exchange, a redis-server we started), at any moment,
also during start-up, and leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from pathlib import Path
from typing import Any

import aiohttp
import redis.exceptions

from marketbus import logs
from marketbus.aio import cancel_and_wait
from marketbus.errors import FatalError, RedisUnavailableError
from marketbus.models import Channel
from marketbus.redis_client import connect, from_redis
from marketbus.settings import DEFAULT_SYMBOLS, RedisSettings, load_settings, redact_url

BINANCE_PING = "https://api.binance.com/api/v3/ping"
OKX_PING = "https://www.okx.com/api/v5/public/time"
OKX_SYMBOLS = ("BTC/USDT", "ETH/USDT")
OKX_RECORDED = ("BTC/USDT",)


async def binance_reachable(timeout: float, url: str = BINANCE_PING) -> tuple[bool, str]:
    """Whether the exchange answers its ping within ``timeout`` seconds (and why not)."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as s:
            async with s.get(url) as r:
                return r.status == 200, f"HTTP {r.status}"
    except TimeoutError:
        return False, f"no answer within {timeout:g} s"
    except (aiohttp.ClientError, OSError) as e:
        return False, type(e).__name__


# recorded streams the fake turns into what the demo shows (tickers and trades)
_SHOWN_STREAMS = ("@bookTicker", "@aggTrade", "@trade", "@ticker", "@kline")


def recorded_symbols(path: Path) -> list[str]:
    """The markets of a recording (its header) that have ticker or trade data in it.

    A market with only depth frames would sit empty in the live view, so it is left out.
    """
    with path.open() as f:
        header = json.loads(f.readline())
        lines = f.readlines()
    markets = {s.replace("-", "/") for syms in header.get("config", {}).values() for s in syms}
    with_data = set()
    for line in lines:
        if '"t":"recv"' not in line and '"t": "recv"' not in line:
            continue
        try:
            stream = str(json.loads(json.loads(line).get("data", "{}")).get("stream", ""))
        except (ValueError, AttributeError):
            continue
        if any(k in stream for k in _SHOWN_STREAMS):
            with_data.add(stream.split("@", 1)[0])
    shown = [m for m in markets if m.replace("/", "").lower() in with_data]
    return sorted(shown or markets)


async def check_redis(settings: RedisSettings) -> None:
    """Fail early, in one clear line, when the Redis we were given does not answer."""
    client = connect(settings)
    try:
        await client.ping()
    except (redis.exceptions.RedisError, OSError) as e:
        err = from_redis(e)
        if isinstance(err, RedisUnavailableError):
            raise RedisUnavailableError(
                f"Redis at {redact_url(settings.url)} is not reachable ({err}); start it, or "
                "leave REDIS_URL and --redis-url unset and the demo starts its own"
            ) from e
        raise err from e
    finally:
        await client.aclose()


def _say(text: str) -> None:
    print(text, flush=True)


async def demo(
    redis: RedisSettings | None,
    *,
    offline: bool = False,
    speed: float = 1.0,
    probe_timeout: float = 4.0,
    log_file: Path = Path(".run/publisher.log"),
) -> None:
    """Run until SIGINT/SIGTERM (returns) or until something fails (raises)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    body = asyncio.create_task(
        _run(
            redis, stop, offline=offline, speed=speed, probe_timeout=probe_timeout,
            log_file=log_file,
        ),
        name="demo",
    )  # fmt: skip
    stopper = asyncio.create_task(stop.wait(), name="demo-stop")
    try:
        await asyncio.wait({body, stopper}, return_when=asyncio.FIRST_COMPLETED)
        if not body.done():
            # Cancel wherever it is (probing Binance, starting Redis, streaming): every
            # context it entered closes on the way out. Python 3.11's asyncio.wait_for (used
            # inside redis-py) can swallow a cancellation that races a completed read; then
            # the body still returns at its next check of ``stop``.
            body.cancel()
            await asyncio.wait({body})
        if not body.cancelled() and body.exception() is not None:
            raise body.exception()  # type: ignore[misc]
    finally:
        stopper.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    _say("stopped.")


async def _run(
    redis: RedisSettings | None,
    stop: asyncio.Event,
    *,
    offline: bool,
    speed: float,
    probe_timeout: float,
    log_file: Path,
) -> None:
    from fake_exchange import (
        FakeExchange,
        FakeOkx,
        OkxReplaySource,
        ReplaySource,
        bundled_recording,
    )
    from marketbus_cli.local_redis import LocalRedis
    from marketbus_cli.tail import tail
    from publisher.app import Publisher

    log_file.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        log_out = stack.enter_context(log_file.open("a"))
        logs.configure("info", json=True, stream=log_out)
        if redis is None:
            redis = RedisSettings(url=stack.enter_context(LocalRedis()))
            _say(f"started a local redis-server at {redis.url} (set REDIS_URL to use yours)")
        await check_redis(redis)
        if stop.is_set():
            return
        if offline:
            live, why = False, "--offline"
            okx_live, okx_why = False, "--offline"
        else:
            (live, why), (okx_live, okx_why) = await asyncio.gather(
                binance_reachable(probe_timeout), binance_reachable(probe_timeout, OKX_PING)
            )
        exchange: dict[str, Any] = {"name": "binance", "channels": [Channel.TICKER, Channel.TRADES]}
        okx: dict[str, Any] = {
            "name": "okx",
            "channels": [Channel.TICKER, Channel.TRADES, Channel.BOOK],
            "book_depth": 10,
        }
        if stop.is_set():
            return
        async with contextlib.AsyncExitStack() as astack:
            if live:
                exchange["symbols"] = list(DEFAULT_SYMBOLS)
                title = "marketbus: LIVE Binance"
                _say(f"Binance is reachable: streaming live {', '.join(DEFAULT_SYMBOLS)}")
            else:
                recording = bundled_recording()
                symbols = recorded_symbols(recording)
                fx = await astack.enter_async_context(
                    FakeExchange(ReplaySource(recording, speed=speed, loop=True))
                )
                exchange["symbols"] = symbols
                exchange["url"] = fx.base_url
                title = "marketbus: REPLAY of a recorded Binance session (not live)"
                reason = "offline mode" if offline else f"Binance is not reachable ({why})"
                _say(
                    f"{reason}: streaming the bundled replay of a recorded Binance session "
                    f"({', '.join(symbols)}) from a local fake exchange at {fx.base_url}."
                )
            if okx_live:
                okx["symbols"] = list(OKX_SYMBOLS)
                _say(f"OKX is reachable: streaming live {', '.join(OKX_SYMBOLS)} with order books")
                title += " + LIVE OKX"
            else:
                ox = await astack.enter_async_context(
                    FakeOkx(OkxReplaySource(speed=speed, loop=True))
                )
                okx["symbols"] = list(OKX_RECORDED)
                okx["url"] = ox.base_url
                title += " + REPLAY of a recorded OKX session"
                reason = "offline mode" if offline else f"OKX is not reachable ({okx_why})"
                _say(
                    f"{reason}: streaming the bundled replay of a recorded OKX session "
                    f"({', '.join(OKX_RECORDED)}, with its order book) from a local fake OKX "
                    f"at {ox.base_url}."
                )
            settings = load_settings(redis=redis.model_dump(), exchanges=[exchange, okx])
            _say(f"publisher logs: {log_file}   Ctrl-C to stop")
            publisher = await astack.enter_async_context(Publisher(settings))
            if stop.is_set():
                return
            markets = [f"binance:{s}" for s in exchange["symbols"]]
            markets += [f"okx:{s}" for s in okx["symbols"]]
            viewer = asyncio.create_task(
                tail(
                    settings.redis,
                    markets,
                    [Channel.TICKER, Channel.TRADES, Channel.BOOK],
                    title=title,
                    stop=stop,
                ),
                name="demo-view",
            )
            watcher = asyncio.create_task(publisher.wait(), name="demo-publisher")
            stopper = asyncio.create_task(stop.wait(), name="demo-run-stop")
            try:
                done, _ = await asyncio.wait(
                    {viewer, watcher, stopper}, return_when=asyncio.FIRST_COMPLETED
                )
                if stop.is_set():
                    return
                if viewer in done:
                    viewer.result()  # the view's error (Redis gone, bad password), if any
                    return
                failed = "; ".join(
                    f"{n}: {w.status().get('last_error') or 'failed'}"
                    for n, w in publisher.workers.items()
                )
                raise FatalError(f"the publisher stopped ({failed}); see {log_file}")
            finally:
                for t in (viewer, watcher, stopper):
                    await cancel_and_wait(t, 5.0)
