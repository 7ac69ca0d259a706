"""Run the fake exchange as a process: URL on stdout's first line, until SIGINT/SIGTERM.

Which exchange builds which source and server is `fake_exchange.registry`'s table."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fake_exchange.registry import FAKES, fake

if TYPE_CHECKING:
    from fake_exchange.bybit.source import BybitFrameSource
    from fake_exchange.coinbase.source import CoinbaseFrameSource
    from fake_exchange.kraken.source import KrakenFrameSource
    from fake_exchange.okx.frame_source import OkxFrameSource
    from fake_exchange.sources import FrameSource

    Source = (
        FrameSource | OkxFrameSource | BybitFrameSource | CoinbaseFrameSource | KrakenFrameSource
    )

log = logging.getLogger("fake_exchange")

Exchange = str
"""An id of `fake_exchange.registry.FAKES`."""
EXCHANGES: tuple[Exchange, ...] = tuple(FAKES)


def build_source(
    recording: Path | None,
    speed: float,
    loop: bool,
    synthetic: int | None,
    rate: float,
    exchange: Exchange = "binance",
) -> Source:
    """Synthetic when `synthetic` symbols are asked for, else a replay (bundled by default)."""
    source: Source = fake(exchange).build_source(recording, speed, loop, synthetic, rate)
    return source


async def serve(
    source: Source,
    host: str,
    port: int,
    exchange: Exchange = "binance",
    hold_until_subscribed: float | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; the base URL is the first line printed. `hold_until_subscribed`:
    the source starts that many seconds after the first websocket subscription."""
    fx = fake(exchange).build_server(source, host, port, hold_until_subscribed)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await fx.start()
    try:
        venue = getattr(fx, "venue", None)  # Binance: one server, two venues
        if venue is not None and venue.exchange != exchange:
            raise ValueError(f"the recording holds {venue.exchange}, not {exchange}")
        print(fx.base_url, flush=True)
        log.info("websocket %s, %d markets, source %s", fx.ws_url, len(fx.markets), source)
        if hold_until_subscribed is not None:
            log.info("holding the source until %.1f s after the first subscription",
                     hold_until_subscribed)  # fmt: skip
        await stop.wait()
        log.info("signal received, stopping")
    finally:
        await fx.stop()


def run(
    recording: Path | None,
    speed: float,
    loop: bool,
    synthetic: int | None,
    rate: float,
    host: str,
    port: int,
    exchange: Exchange = "binance",
    hold_until_subscribed: float | None = None,
) -> None:
    """Entry point for `marketbus fake-exchange` and `python -m fake_exchange`."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
        )
    source = build_source(recording, speed, loop, synthetic, rate, exchange)
    asyncio.run(serve(source, host, port, exchange, hold_until_subscribed))
