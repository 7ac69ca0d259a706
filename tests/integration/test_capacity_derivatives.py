"""The bytes-per-entry constants of the derivatives channels against what redis-server stores
(as tests/integration/test_capacity.py does for the others)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import pytest

from marketbus.capacity import entry_bytes
from marketbus.models import Channel, Funding, Liquidation, MarkPrice, OpenInterest, Record
from tests.integration.test_capacity import T0_MS, N, server, stored_bytes_per_entry
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration
__all__ = ["server"]  # the module-scoped redis-server fixture, shared

PERP = "BTC/USDT:USDT"


def _head(i: int, step_ms: int) -> dict[str, object]:
    ts = T0_MS + i * step_ms
    return {"exchange": "bybit", "symbol": PERP, "ts_ms": ts, "recv_ns": ts * 1_000_000 + 123_456}


def _price(rnd: random.Random) -> float:
    return round(65_117.44 + rnd.uniform(-50, 50), 2)


def fundings(rnd: random.Random) -> Iterator[Record]:
    for i in range(N):
        yield Funding(**_head(i, 60_000), rate=round(rnd.uniform(-0.0003, 0.0003), 6),  # type: ignore[arg-type]
                      next_funding_ms=T0_MS // 28_800_000 * 28_800_000 + 28_800_000,
                      predicted_rate=round(rnd.uniform(-0.0003, 0.0003), 6),
                      interval_ms=28_800_000)  # fmt: skip


def marks(rnd: random.Random) -> Iterator[Record]:
    for i in range(N):
        yield MarkPrice(**_head(i, 300), mark_price=_price(rnd), index_price=_price(rnd))  # type: ignore[arg-type]


def open_interests(rnd: random.Random) -> Iterator[Record]:
    for i in range(N):
        c = round(59_891.732 + rnd.uniform(-100, 100), 3)
        yield OpenInterest(**_head(i, 300), contracts=c, value=round(c * _price(rnd), 2))  # type: ignore[arg-type]


def liquidations(rnd: random.Random) -> Iterator[Record]:
    for i in range(N):
        yield Liquidation(**_head(i, 500), side=rnd.choice(["buy", "sell"]), price=_price(rnd),  # type: ignore[arg-type]
                          amount=round(rnd.uniform(0.001, 5), 3))  # fmt: skip


@pytest.mark.parametrize(
    ("channel", "make"),
    [
        (Channel.FUNDING, fundings),
        (Channel.MARK, marks),
        (Channel.OPEN_INTEREST, open_interests),
        (Channel.LIQUIDATIONS, liquidations),
    ],
)
async def test_entry_bytes_is_at_least_what_redis_stores_and_not_far_above(
    server: RedisServer, channel: Channel, make: Callable[[random.Random], Iterator[Record]]
) -> None:
    measured = await stored_bytes_per_entry(
        server, f"md:{{bybit:{PERP}}}:{channel.value}", make(random.Random(7))
    )
    assumed = entry_bytes(channel)
    assert measured <= assumed, f"{channel}: Redis stores {measured:.0f} B an entry"
    assert assumed <= measured * 4 / 3, f"{channel}: {assumed} B vs {measured:.0f} B"
