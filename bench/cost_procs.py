"""The references of the ``cost`` group, each in its own process like what they are held to.

    python -m bench.cost_procs reader   '{"ws": "ws://127.0.0.1:PORT/stream?streams=..."}'
    python -m bench.cost_procs rawxread '{"redis": ..., "keys": [...]}'

``reader``: the publisher's reference, figure 1's bare aiohttp + orjson reader
(``bench.fig_publisher.BareReader``) on the loop the publisher runs on. ``rawxread``: the
consumer's reference, redis-py's ``XREAD`` of the same streams (``BLOCK 100 COUNT 1000``
from each stream's last id at start, as the consumer follows them), nothing decoded. Both
speak ``bench.pubproc``'s protocol: ``{"ready": true}``, then one JSON line of counters per
``stats`` line (``received``; ``rawxread`` also ``ids``, the last id taken per stream),
``quit``.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.common import quiet_logs, use_loop
from bench.peer_procs import Child
from bench.pubproc import _loop


async def _reader(spec: dict[str, Any]) -> None:
    from bench.fig_publisher import BareReader

    reader = BareReader(spec["ws"])
    await reader.start()
    try:
        await _loop(lambda: {"received": reader.count})
    finally:
        await reader.close()


async def _rawxread(spec: dict[str, Any]) -> None:
    r: Any = aioredis.Redis.from_url(spec["redis"])
    ids: dict[str, str] = {}
    for key in spec["keys"]:
        last = await r.xrevrange(key, "+", "-", count=1)
        ids[key] = last[0][0].decode() if last else "0-0"
    got = [0]

    async def follow() -> None:
        while True:
            resp = await r.xread(streams=ids, count=1000, block=100)
            for raw_key, entries in resp or ():
                if entries:
                    ids[raw_key.decode()] = entries[-1][0].decode()
                    got[0] += len(entries)

    task = asyncio.create_task(follow())

    def stats() -> dict[str, Any]:
        if task.done():
            task.result()  # the read loop's error ends the process, with its traceback
        return {"received": got[0], "ids": dict(ids)}

    try:
        await _loop(stats)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        await r.aclose()


def child(role: str, spec: dict[str, Any]) -> Child:
    """The client side: ``async with child(...) as c: await c.stats()``."""
    return Child([sys.executable, "-m", "bench.cost_procs", role, orjson.dumps(spec).decode()])


def main() -> None:
    role, spec = sys.argv[1], orjson.loads(sys.argv[2])
    quiet_logs()
    use_loop(publisher=role == "reader")  # the reader runs as the publisher it stands for
    run = {"reader": _reader, "rawxread": _rawxread}[role]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(spec))


if __name__ == "__main__":
    main()
