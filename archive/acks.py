"""Acknowledging archived entries: ``XACK`` of many ids at once, packed by joins.

The archiver acknowledges every entry it reads (a million a few seconds while catching up).
redis-py packs each argument in Python (~0.4 µs an id) and its pipeline waits for the
replies; here the commands are built with one ``bytes.join`` per id length (entry ids of a
batch mostly share one length: ``1764000000000-0``) and sent on a pooled connection of their
own, so the archiver may send them in the background and decode the next reply meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from redis.exceptions import ResponseError

CHUNK = 10_000  # ids per XACK command: Redis answers each command in one go


def xack_commands(key: str, group: str, ids: Sequence[bytes], chunk: int = CHUNK) -> list[bytes]:
    """``XACK key group id...`` commands for ``ids`` in RESP (what ``hiredis.pack_command``
    gives, tested), one or more per id length, at most ``chunk`` ids each."""
    if not ids:
        return []
    k, g = key.encode(), group.encode()
    lens = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
    if lens.min() == lens.max():
        groups = [(int(lens[0]), list(ids))]
    else:  # by length (a stable sort: in their order within one), each length a slice
        order = np.argsort(lens, kind="stable")
        ranked = list(itemgetter(*order.tolist())(ids))  # (two ids at least here)
        sizes, starts = np.unique(lens[order], return_index=True)
        bounds = [*starts.tolist(), len(ids)]
        groups = [(int(n), ranked[bounds[i] : bounds[i + 1]]) for i, n in enumerate(sizes)]
    out: list[bytes] = []
    for size, same in groups:
        sep = b"\r\n$%d\r\n" % size
        for i in range(0, len(same), chunk):
            part = same[i : i + chunk]
            head = b"*%d\r\n$4\r\nXACK\r\n$%d\r\n%b\r\n$%d\r\n%b" % (
                3 + len(part), len(k), k, len(g), g,
            )  # fmt: skip
            out.append(b"".join((head, sep, sep.join(part), b"\r\n")))
    return out


async def send(
    client: Any, group: str, todo: Mapping[str, Sequence[bytes]], *, pooled: bool
) -> tuple[int, list[str]]:
    """Acknowledge ``todo`` (stream -> ids) in ``group``: (ids Redis acknowledged, the error
    replies). ``pooled``: ``client`` is a ``redis.asyncio.Redis`` with a connection pool (else
    redis-py's pipeline is used). A connection error or a cancellation drops the connection
    and is raised: XACK is idempotent, so the caller sends the same ids again."""
    if not pooled:
        return await _send_pipeline(client, group, todo)
    if any(ids and set(map(type, ids)) != {bytes} for ids in todo.values()):
        return await _send_pipeline(client, group, todo)  # (raw replies hold bytes)
    commands = [c for key, ids in todo.items() if ids for c in xack_commands(key, group, ids)]
    if not commands:
        return 0, []
    pool = client.connection_pool
    conn = await pool.get_connection()
    acked, refused = 0, []
    try:
        await conn.send_packed_command(commands)
        for _ in commands:
            try:
                acked += int(await conn.read_response())
            except ResponseError as e:  # an error reply: the connection is still in step
                refused.append(str(e)[:200])
    except BaseException:
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return acked, refused


async def _send_pipeline(
    client: Any, group: str, todo: Mapping[str, Sequence[bytes]]
) -> tuple[int, list[str]]:
    pipe = client.pipeline(transaction=False)
    for key, ids in todo.items():
        for i in range(0, len(ids), CHUNK):
            pipe.xack(key, group, *ids[i : i + CHUNK])
    replies = await pipe.execute(raise_on_error=False) if len(pipe) else []
    acked, refused = 0, []
    for r in replies:
        if isinstance(r, Exception):
            refused.append(str(r)[:200])
        else:
            acked += int(r)
    return acked, refused
