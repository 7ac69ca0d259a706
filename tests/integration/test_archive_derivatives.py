"""The archiver keeps the derivatives channels: one record of each (and a few more) published
through the publisher's sink into a real redis-server, archived, read back with History.read
and the SQL views (`marketbus sql`)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis.asyncio as aioredis

from archive import Archiver, History
from archive.sql import connect
from marketbus.models import DERIVATIVES, Channel, Record
from tests.derivatives_data import PERP, funding, liquidation, mark, open_interest
from tests.integration.test_archive import config, eventually, group_idle, publish
from tests.redis_server import RedisServer

pytestmark = pytest.mark.integration


async def test_one_record_of_each_derivatives_channel_is_archived_and_reads_back(
    redis: aioredis.Redis, redis_server: RedisServer, tmp_path: Path
) -> None:
    recs: list[Record] = [funding(1), mark(2, index_price=None), open_interest(3), liquidation(4)]
    recs += [liquidation(5, exchange="okx"), mark(6, exchange="okx")]
    await publish(redis, recs)
    async with Archiver(redis_server.url, tmp_path, config()) as a:
        await eventually(lambda: group_idle(redis))
    assert a.stats.rows == a.stats.acked == len(recs) and a.stats.streams == 6
    h = History(tmp_path)
    for r in recs:
        t = h.read(r.exchange, r.symbol, r.channel, 0, 2**62).to_pylist()
        mine = [row for row in t if row["ts_ms"] == r.ts_ms]
        assert len(mine) == 1, r
        row = mine[0]
        assert row["recv_ns"] == r.recv_ns and row["exchange"] == r.exchange
        for field in ("rate", "next_funding_ms", "mark_price", "contracts", "value", "side",
                      "price", "amount"):  # fmt: skip
            if field in type(r).model_fields:
                assert row[field] == getattr(r, field), (r.channel, field)
    assert h.skipped == {}
    con = connect(tmp_path)
    counts = {c: con.execute(f"SELECT count(*) FROM {c.value}").fetchone()[0] for c in DERIVATIVES}
    assert counts == {Channel.FUNDING: 1, Channel.MARK: 2, Channel.OPEN_INTEREST: 1,
                      Channel.LIQUIDATIONS: 2}  # fmt: skip
    assert con.execute(
        "SELECT exchange, symbol, side, amount FROM liquidations ORDER BY ts_ms"
    ).fetchall() == [("bybit", PERP, "buy", 1.25), ("okx", PERP, "sell", 1.5)]
    assert con.execute("SELECT mark_price, isnan(index_price) FROM mark WHERE exchange = 'bybit'"
                       ).fetchall() == [(102.0, True)]  # fmt: skip
