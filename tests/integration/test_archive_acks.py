"""The archiver's bulk XACK (archive.acks) against a real redis-server: the packed commands
are what hiredis would send, every id is acknowledged, error replies are reported."""

from __future__ import annotations

from typing import Any

import hiredis
import pytest

from archive.acks import send, xack_commands

pytestmark = pytest.mark.integration

KEY = "md:{binance:BTC/USDT}:trades"


def test_commands_are_hiredis_packing_one_per_id_length_and_chunk() -> None:
    ids = [b"1700000000000-%d" % i for i in range(25)] + [b"999-1"]
    got = xack_commands(KEY, "archive", ids, chunk=7)
    want = []
    for size in (5, 15, 16):  # sorted by length, ids kept in their order within one
        same = [i for i in ids if len(i) == size]
        for j in range(0, len(same), 7):
            args: Any = ("XACK", KEY, "archive", *same[j : j + 7])
            want.append(hiredis.pack_command(args))
    assert got == want


async def _pending(redis: Any, n: int) -> list[bytes]:
    await redis.delete(KEY)
    ids = [await redis.xadd(KEY, {"d": b"x"}) for _ in range(n)]
    await redis.xgroup_create(KEY, "archive", id="0")
    await redis.xreadgroup("archive", "a1", {KEY: ">"}, count=n)
    assert (await redis.xpending(KEY, "archive"))["pending"] == n
    return list(ids)


@pytest.mark.parametrize("pooled", [True, False])
async def test_every_id_is_acknowledged_and_errors_are_reported(redis: Any, pooled: bool) -> None:
    ids = await _pending(redis, 25_000)  # three commands of at most 10,000 ids
    acked, refused = await send(redis, "archive", {KEY: ids}, pooled=pooled)
    assert (acked, refused) == (25_000, [])
    assert (await redis.xpending(KEY, "archive"))["pending"] == 0
    again, _ = await send(redis, "archive", {KEY: ids[:10]}, pooled=pooled)
    assert again == 0  # idempotent: sent again after a lost reply, nothing changes
    await redis.set("not-a-stream", "x")
    acked, refused = await send(redis, "archive", {"not-a-stream": [b"1-1"]}, pooled=pooled)
    assert acked == 0 and len(refused) == 1 and "WRONGTYPE" in refused[0]
    assert await redis.ping()  # the connection stayed in step after the error reply
