"""The bytes-per-entry constants of ``marketbus.capacity`` against what redis-server stores."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest
import redis.asyncio as aioredis

from marketbus import codec
from marketbus.capacity import entry_bytes
from marketbus.models import BookTop, Candle, Channel, Record, Ticker, Trade
from tests.redis_server import RedisServer, running_redis

pytestmark = pytest.mark.integration

N = 2_000
T0_MS = 1_700_000_000_000


def _price(rnd: random.Random) -> float:
    return round(37_123.45 + rnd.uniform(-50, 50), 2)


def trades(rnd: random.Random) -> Iterator[Trade]:
    for i in range(N):
        yield Trade(exchange="binance", symbol="BTC/USDT", ts_ms=T0_MS + i * 37,
                    recv_ns=(T0_MS + i * 37) * 1_000_000 + 123_456, id=str(3_000_000_000 + i),
                    price=_price(rnd), amount=round(rnd.uniform(0.0001, 2), 5),
                    side=rnd.choice(["buy", "sell"]))  # fmt: skip


def tickers(rnd: random.Random) -> Iterator[Ticker]:
    for i in range(N):
        p = _price(rnd)
        yield Ticker(exchange="binance", symbol="BTC/USDT", ts_ms=T0_MS + i * 1000,
                     recv_ns=(T0_MS + i * 1000) * 1_000_000 + 123_456, last=p, bid=p - 0.01,
                     ask=p + 0.01, bid_size=round(rnd.uniform(0, 5), 5),
                     ask_size=round(rnd.uniform(0, 5), 5), open=36_000.0, high=37_500.0,
                     low=35_900.0, close=p, base_volume=round(12_345.6 + i, 4),
                     quote_volume=4.5e8 + i * 1000.5)  # fmt: skip


def candles(rnd: random.Random) -> Iterator[Candle]:
    for i in range(N):
        o = _price(rnd)
        yield Candle(exchange="binance", symbol="BTC/USDT", ts_ms=T0_MS + i * 2000,
                     recv_ns=(T0_MS + i * 2000) * 1_000_000 + 123_456, interval="1m",
                     open_ms=T0_MS // 60_000 * 60_000 + (i // 30) * 60_000, open=o,
                     high=o + 20, low=o - 20, close=round(o + rnd.uniform(-20, 20), 2),
                     volume=round(rnd.uniform(0, 100), 4), closed=i % 30 == 29)  # fmt: skip


def books(depth: int) -> Callable[[random.Random], Iterator[BookTop]]:
    def make(rnd: random.Random) -> Iterator[BookTop]:
        for i in range(N):
            mid = _price(rnd)
            bids = tuple((round(mid - 0.01 * (k + 1), 2), round(rnd.uniform(0.001, 3), 5))
                         for k in range(depth))  # fmt: skip
            asks = tuple((round(mid + 0.01 * (k + 1), 2), round(rnd.uniform(0.001, 3), 5))
                         for k in range(depth))  # fmt: skip
            yield BookTop(exchange="binance", symbol="BTC/USDT", ts_ms=T0_MS + i * 100,
                          recv_ns=(T0_MS + i * 100) * 1_000_000 + 123_456,
                          seq=40_000_000_000 + i * 7, bids=bids, asks=asks)  # fmt: skip

    return make


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    with running_redis() as s:
        yield s


async def stored_bytes_per_entry(server: RedisServer, key: str, records: Iterator[Record]) -> float:
    client = aioredis.Redis.from_url(server.url)
    try:
        pipe = client.pipeline(transaction=False)
        for r in records:
            pipe.xadd(key, codec.encode(r))  # type: ignore[arg-type]
        await pipe.execute()
        assert await client.xlen(key) == N
        used = await client.memory_usage(key, samples=0)
        assert isinstance(used, int)
        return used / N
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("channel", "depth", "make"),
    [
        (Channel.TRADES, 20, trades),
        (Channel.TICKER, 20, tickers),
        (Channel.CANDLES, 20, candles),
        (Channel.BOOK, 1, books(1)),
        (Channel.BOOK, 5, books(5)),
        (Channel.BOOK, 20, books(20)),
        (Channel.BOOK, 50, books(50)),
    ],
)
async def test_entry_bytes_is_at_least_what_redis_stores_and_not_far_above(
    server: RedisServer,
    channel: Channel,
    depth: int,
    make: Callable[[random.Random], Iterator[Record]],
) -> None:
    measured = await stored_bytes_per_entry(
        server, f"md:{{binance:BTC/USDT}}:{channel.value}:{depth}", make(random.Random(7))
    )
    assumed = entry_bytes(channel, depth)
    assert measured <= assumed, f"{channel} at {depth}: Redis stores {measured:.0f} B an entry"
    assert assumed <= measured * 4 / 3, f"{channel} at {depth}: {assumed} B vs {measured:.0f} B"
