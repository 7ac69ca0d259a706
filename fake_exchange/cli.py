"""Run the fake exchange as a process: URL on stdout's first line, until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Literal

from fake_exchange.binance_frames import VENUES
from fake_exchange.bybit import BybitReplaySource, BybitSyntheticSource, FakeBybit
from fake_exchange.bybit.source import BybitFrameSource
from fake_exchange.coinbase import CoinbaseReplaySource, CoinbaseSyntheticSource, FakeCoinbase
from fake_exchange.coinbase.source import CoinbaseFrameSource
from fake_exchange.okx.server import FakeOkx
from fake_exchange.okx.sources import OkxFrameSource, OkxReplaySource, OkxSyntheticSource
from fake_exchange.recording import bundled_recording
from fake_exchange.server import FakeExchange
from fake_exchange.sources import (
    USDM_DEFAULT_CHANNELS,
    FrameSource,
    ReplaySource,
    SyntheticSource,
)

log = logging.getLogger("fake_exchange")

Exchange = Literal["binance", "binanceusdm", "okx", "bybit", "coinbase"]
EXCHANGES: tuple[Exchange, ...] = ("binance", "binanceusdm", "okx", "bybit", "coinbase")
Source = FrameSource | OkxFrameSource | BybitFrameSource | CoinbaseFrameSource


def build_source(
    recording: Path | None,
    speed: float,
    loop: bool,
    synthetic: int | None,
    rate: float,
    exchange: Exchange = "binance",
) -> Source:
    """Synthetic when `synthetic` symbols are asked for, else a replay (bundled by default)."""
    if exchange == "coinbase":
        if synthetic is not None:
            return CoinbaseSyntheticSource(synthetic, rate=rate)
        return CoinbaseReplaySource(recording, speed=speed, loop=loop)
    if exchange == "bybit":
        if synthetic is not None:
            return BybitSyntheticSource(synthetic, rate=rate)
        return BybitReplaySource(recording, speed=speed, loop=loop)
    if exchange == "okx":
        if synthetic is not None:
            return OkxSyntheticSource(synthetic, rate=rate)
        return OkxReplaySource(recording, speed=speed, loop=loop)
    venue = VENUES.get(exchange)  # Binance spot or USD-M futures: one fake, two venues
    if venue is None:
        raise ValueError(f"unknown exchange {exchange!r}; use one of {', '.join(EXCHANGES)}")
    if synthetic is not None and venue.futures:
        return SyntheticSource(synthetic, rate=rate, venue=venue, channels=USDM_DEFAULT_CHANNELS)
    if synthetic is not None:
        return SyntheticSource(synthetic, rate=rate)
    return ReplaySource(recording or bundled_recording(venue), speed=speed, loop=loop)


async def serve(source: Source, host: str, port: int, exchange: Exchange = "binance") -> None:
    """Serve until SIGINT/SIGTERM; the base URL is the first line printed."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    server: FakeExchange | FakeOkx | FakeBybit | FakeCoinbase
    if exchange == "coinbase":
        if not isinstance(source, CoinbaseReplaySource | CoinbaseSyntheticSource):
            raise ValueError(f"not a Coinbase source: {source!r}")
        server = FakeCoinbase(source, host=host, port=port)
    elif exchange == "bybit":
        if not isinstance(source, BybitReplaySource | BybitSyntheticSource):
            raise ValueError(f"not a Bybit source: {source!r}")
        server = FakeBybit(source, host=host, port=port)
    elif exchange == "okx":
        if not isinstance(source, OkxReplaySource | OkxSyntheticSource):
            raise ValueError(f"not an OKX source: {source!r}")
        server = FakeOkx(source, host=host, port=port)
    else:
        if not isinstance(source, ReplaySource | SyntheticSource):
            raise ValueError(f"not a Binance source: {source!r}")
        server = FakeExchange(source, host=host, port=port)
    async with server as fx:
        if isinstance(fx, FakeExchange) and fx.venue.exchange != exchange:
            raise ValueError(f"the recording holds {fx.venue.exchange}, not {exchange}")
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
    exchange: Exchange = "binance",
) -> None:
    """Entry point for `marketbus fake-exchange` and `python -m fake_exchange`."""
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(message)s"
        )
    source = build_source(recording, speed, loop, synthetic, rate, exchange)
    asyncio.run(serve(source, host, port, exchange))
