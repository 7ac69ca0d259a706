"""Run the fake exchange as a process: URL on stdout's first line, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path

from fake_exchange.recording import bundled_recording
from fake_exchange.server import FakeExchange
from fake_exchange.sources import FrameSource, ReplaySource, SyntheticSource

log = logging.getLogger("fake_exchange")


def build_source(
    recording: Path | None, speed: float, loop: bool, synthetic: int | None, rate: float
) -> FrameSource:
    """Synthetic when `synthetic` symbols are asked for, else a replay (bundled by default)."""
    if synthetic is not None:
        return SyntheticSource(synthetic, rate=rate)
    return ReplaySource(recording or bundled_recording(), speed=speed, loop=loop)


async def serve(source: FrameSource, host: str, port: int) -> None:
    """Serve until SIGINT/SIGTERM; the base URL is the first line printed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    async with FakeExchange(source, host=host, port=port) as fx:
        print(fx.base_url, flush=True)
        log.info("websocket %s, %d markets, source %s", fx.ws_url, len(fx.markets), source)
        await stop.wait()
        log.info("signal received, stopping")


def run(
    recording: Path | None,
    speed: float,
    loop: bool,
    synthetic: int | None,
    rate: float,
    host: str,
    port: int,
) -> None:
    """Entry point for `marketbus fake-exchange` and `python -m fake_exchange`."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
        )
    asyncio.run(serve(build_source(recording, speed, loop, synthetic, rate), host, port))
