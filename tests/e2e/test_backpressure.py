"""Sustained load above what the publisher can write: it reads slower, it never drops.

The spool's drop-oldest policy is for a Redis that is away. A writer that is merely behind a
healthy Redis (more offered than one process parses and writes, or Redis slow for a moment)
must slow the reading down instead: every trade id of every market ends up in Redis.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fake_exchange import SyntheticSource
from marketbus import codec
from marketbus.keys import stream_key
from tests.e2e.conftest import Pipeline
from tests.e2e.test_end_to_end import assert_trades_match

pytestmark = pytest.mark.e2e

SYMBOLS = ["BTC/USDT", "ETH/USDT", "BNB/USDT", "SOL/USDT"]
# a spool far smaller than the backlog the load builds: before backpressure it overflowed
SMALL_SPOOL = {"spool_size": 3_000, "pause_reading_at": 1_000, "batch_size": 256}


async def stored_trade_ids(p: Pipeline, symbol: str) -> list[int]:
    """Every trade id in the market's stream, read from Redis itself (not the consumer)."""
    client = p.publisher.redis
    key = stream_key("binance", symbol, "trades")
    ids: list[int] = []
    start = "-"
    while True:
        page = await client.xrange(key, start, "+", count=5_000)
        if not page:
            return ids
        ids.extend(int(codec.decode_fields(fields).id) for _, fields in page)  # type: ignore[union-attr]
        start = "(" + page[-1][0].decode()


async def assert_every_trade_stored(p: Pipeline) -> int:
    sent = p.sent_by_symbol("aggTrade")
    total = 0
    for symbol in SYMBOLS:
        want = [int(f["a"]) for f in sent[symbol]]
        assert want, symbol
        assert await stored_trade_ids(p, symbol) == want, symbol
        total += len(want)
    sink = p.publisher.sink.stats
    assert sink.overflow == 0 and sink.rejected == 0
    assert sink.written == total
    return total


async def wait_written(p: Pipeline, timeout: float = 90.0) -> None:
    sent = sum(len(v) for v in p.sent_by_symbol("aggTrade").values())
    sink = p.publisher.sink
    async with asyncio.timeout(timeout):  # dropped records count too: the assert names them
        while sink.stats.written + sink.stats.overflow < sent or sink.pending:
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("parser", ["ccxt", "native"])
async def test_overload_through_ccxt_is_slowed_not_dropped(
    make_pipeline: Any, redis: Any, parser: str
) -> None:
    """20k trades/s offered for 4 s on one 2-core box: more than the CCXT path parses and
    writes, with a spool of 3,000 records. Every trade id reaches Redis, none twice."""
    source = SyntheticSource(SYMBOLS, rate=20_000, duration=4, channels=("aggTrade",))
    async with make_pipeline(
        source, SYMBOLS, channels=["trades"], parser=parser, redis=SMALL_SPOOL
    ) as p:
        await p.fx.wait_done(120)
        await wait_written(p)
        total = await assert_every_trade_stored(p)
        assert total >= 60_000
        w = p.publisher.workers["binance"]
        assert w.trade_ids.gaps == 0 and w.trade_ids.duplicates == 0


async def test_redis_slow_for_seconds_pauses_reading_without_loss(
    make_pipeline: Any, redis: Any
) -> None:
    """Redis blocks every write for 1.5 s, twice (CLIENT PAUSE WRITE: slow, not away): at 3k
    trades/s that is 4,500 records against a spool of 3,000. Reading pauses; nothing drops."""
    source = SyntheticSource(SYMBOLS, rate=3_000, duration=5, channels=("aggTrade",))
    async with make_pipeline(source, SYMBOLS, channels=["trades"], redis=SMALL_SPOOL) as p:
        admin = p.publisher.redis
        for _ in range(2):
            await asyncio.sleep(1.0)
            await admin.execute_command("CLIENT", "PAUSE", 1500, "WRITE")
            await asyncio.sleep(1.6)
        await p.fx.wait_done(60)
        await wait_written(p)
        await assert_every_trade_stored(p)
        sink = p.publisher.sink.stats
        assert sink.pauses >= 2  # reading was paused, once per Redis pause at least
        assert sink.redis_up and not p.publisher.sink.congested
        assert_trades_match(p)
