"""The peer benchmark against real sockets and a real redis-server: the fake's sustained-load
sender and the read-back of every trade id (``bench/peer_load.py``, ``bench/peer_measure.py``)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from bench import peer_measure as pm
from bench.peer_load import flood
from fake_exchange import FakeExchange, SyntheticSource
from fake_exchange import binance_frames as bf

pytestmark = pytest.mark.integration


async def test_readback_counts_every_entry_and_pages_through_streams(redis: Any) -> None:
    for i in range(1, 2_501):
        await redis.xadd("s1", {"id": str(i)})
    await redis.xadd("s2", {"id": "1"})
    keys = ["s1", "s2", "missing"]
    assert await pm.entries_added(redis, keys) == 2_501
    ids = await pm.stream_ids(redis, "s1", pm.cryptofeed_id, page=1_000)
    assert ids == list(range(1, 2_501))
    per = await pm.bytes_per_entry(redis, keys)
    assert per is not None and 1 < per < 200


async def test_flood_continues_each_markets_ids_on_the_subscribed_socket() -> None:
    source = SyntheticSource(2, rate=400, duration=0.25, channels=("aggTrade",), kline_intervals=())
    async with FakeExchange(source, autoplay=False) as fx:
        streams = [bf.stream_name(s, "aggTrade") for s in source.symbols()]
        url = fx.ws_url.removesuffix("/ws") + "/stream?streams=" + "/".join(streams)
        got: dict[str, list[int]] = {}
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(url, compress=0)
            await fx.wait_subscribed(streams)
            fx.play()
            await fx.wait_done(10)
            last: dict[str, tuple[int, int, str]] = {}
            for f in fx.sent:
                last[f.payload["s"]] = (f.payload["a"], f.payload["l"], f.payload["p"])
            start = {s: v[0] + 1 for s, v in last.items()}
            res = await flood(fx, last, rate=2_000, seconds=0.3, per_write=1)
            total = len(fx.sent) + res["sent"]
            async with asyncio.timeout(10):
                for _ in range(total):
                    data = orjson.loads((await ws.receive()).data)["data"]
                    got.setdefault(data["s"], []).append(data["a"])
            await ws.close()
    assert res["sent"] > 0
    for sym, ids in got.items():
        assert ids == list(range(1, len(ids) + 1)), sym  # one sequence, steady then flood
        assert res["ids"][sym] == [start[sym], ids[-1]]  # what the flood says it sent
        assert last[sym][0] == ids[-1]  # and remembered for the next one
