"""The whole path: fake exchange -> real ccxt.pro.binance -> publisher -> real Redis -> Consumer."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import pytest

from consumers import Consumer
from fake_exchange import FakeExchange, FrameSource, SentFrame
from marketbus.models import Channel
from marketbus.settings import Settings, load_settings
from publisher.app import Publisher
from tests.redis_server import RedisServer


def stream_name(symbol: str, kind: str) -> str:
    return symbol.replace("/", "").lower() + "@" + kind


@dataclass
class Pipeline:
    fx: FakeExchange
    publisher: Publisher
    consumer: Consumer
    settings: Settings
    symbols: list[str]

    def sent_by_symbol(self, kind: str) -> dict[str, list[dict[str, Any]]]:
        """Frames of one kind (aggTrade, 24hrTicker) the fake wrote, per unified symbol."""
        ids = {s.replace("/", ""): s for s in self.symbols}
        out: dict[str, list[dict[str, Any]]] = defaultdict(list)
        for f in self.fx.sent:
            if f.payload.get("e") == kind and f.payload.get("s") in ids:
                out[ids[f.payload["s"]]].append(f.payload)
        return out

    async def wait_stored(self, expected: int, timeout: float = 30.0) -> None:
        """Until the consumer holds ``expected`` records in all its buffers (or timeout)."""
        async with asyncio.timeout(timeout):
            while sum(len(b) for b in self.consumer.buffers.values()) < expected:
                await asyncio.sleep(0.05)


@asynccontextmanager
async def pipeline(
    redis_server: RedisServer,
    source: FrameSource,
    symbols: Sequence[str],
    *,
    channels: Sequence[Channel] = (Channel.TICKER, Channel.TRADES),
    capacity: int = 200_000,
    supervisor: dict[str, Any] | None = None,
    play: bool = True,
    parser: str = "ccxt",
    redis: dict[str, Any] | None = None,
) -> AsyncIterator[Pipeline]:
    async with FakeExchange(source, autoplay=False) as fx:
        settings = load_settings(
            redis={"url": redis_server.url, **(redis or {})},
            exchanges=[{"name": "binance", "symbols": list(symbols), "url": fx.base_url,
                        "channels": list(channels), "parser": parser}],
            supervisor=supervisor or {},
        )  # fmt: skip
        async with Publisher(settings) as pub:
            kinds = {Channel.TRADES: "aggTrade", Channel.TICKER: "ticker"}
            resolved = [s for s in symbols if "/" in s]
            await fx.wait_subscribed(
                [stream_name(s, kinds[c]) for s in resolved for c in channels], timeout=20
            )
            markets = [f"binance:{s}" for s in resolved]
            async with Consumer(redis_server.url, markets, channels, capacity=capacity,
                                backfill=0, block_ms=100, count=5000) as consumer:  # fmt: skip
                if play:
                    fx.play()
                yield Pipeline(fx, pub, consumer, settings, list(resolved))


Sent = Callable[[], list[SentFrame]]


@pytest.fixture
def make_pipeline(redis_server: RedisServer) -> Any:
    def make(source: FrameSource, symbols: Sequence[str], **kw: Any) -> Any:
        return pipeline(redis_server, source, symbols, **kw)

    return make


@pytest.fixture(autouse=True)
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """Fail a test when anything reached the event loop's exception handler.

    CCXT's receive loop dies silently when a message handler raises (only this handler
    sees it), so an error here is a lost stream, never noise.
    """
    seen: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, ctx: seen.append(ctx))
    yield seen
    loop.set_exception_handler(None)
    assert not seen, [f"{c.get('message')}: {c.get('exception')!r}" for c in seen]
