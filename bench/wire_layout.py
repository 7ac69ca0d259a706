"""Measure candidate stream-entry layouts: bytes per entry in Redis and codec µs per record.

    python -m bench.wire_layout        (needs redis-server on PATH)

Candidates: the chosen ``d`` (msgpack array) + ``h`` (human line); the blob alone;
one field per value (legible, no codec); a JSON blob. Figures go in docs/wire.md.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import msgpack
import orjson
import redis.asyncio as aioredis

from marketbus import codec
from marketbus.models import Ticker, Trade
from tests.redis_server import running_redis

N = 2_000


def _trade(i: int) -> Trade:
    return Trade(exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_000_000 + i,
                 recv_ns=1_700_000_000_000_000_000 + i, id=str(3_000_000_000 + i),
                 price=37_123.45 + i / 100, amount=0.01234, side="buy")  # fmt: skip


def _ticker(i: int) -> Ticker:
    return Ticker(exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_000_000 + i,
                  recv_ns=1_700_000_000_000_000_000 + i, last=37_123.45, bid=37_123.44,
                  ask=37_123.46, bid_size=1.5, ask_size=0.3, open=36_000.0, high=37_500.0,
                  low=35_900.0, close=37_123.45, base_volume=12_345.6, quote_volume=4.5e8)  # fmt: skip


def flat(r: Trade | Ticker) -> dict[str, Any]:
    return {k: ("" if v is None else str(v)) for k, v in r.model_dump().items()}


LAYOUTS: dict[str, Callable[[Any], dict[str, Any]]] = {
    "d+h (chosen)": codec.encode,
    "d only": lambda r: {"d": codec.pack(r)},
    "flat fields": flat,
    "json blob": lambda r: {"j": orjson.dumps(r.model_dump(mode="json"))},
}


def _us(fn: Callable[[], object], n: int = 20_000) -> float:
    runs = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t) / n * 1e6)
    return min(runs)


async def measure() -> list[dict[str, Any]]:
    rows = []
    with running_redis() as server:
        r = aioredis.Redis.from_url(server.url)
        for kind, make in (("trade", _trade), ("ticker", _ticker)):
            rec = make(1)
            for name, enc in LAYOUTS.items():
                key = f"bench:{kind}:{name}"
                pipe = r.pipeline(transaction=False)
                for i in range(N):
                    pipe.xadd(key, enc(make(i)))
                await pipe.execute()
                mem = await r.memory_usage(key, samples=0)
                rows.append({"record": kind, "layout": name,
                             "bytes_per_entry": round(mem / N, 1),
                             "encode_us": round(_us(lambda e=enc, x=rec: e(x)), 2)})  # fmt: skip
        await r.aclose()
    blob = codec.pack(_ticker(1))
    rows.append({"record": "ticker", "layout": "decode d (unpack+checks)",
                 "decode_us": round(_us(lambda: codec.unpack(blob)), 2)})  # fmt: skip
    rows.append({"record": "ticker", "layout": "decode d to model",
                 "decode_us": round(_us(lambda: codec.decode(blob)), 2)})  # fmt: skip
    rows.append({"record": "ticker", "layout": "msgpack.unpackb only",
                 "decode_us": round(_us(lambda: msgpack.unpackb(blob)), 2)})  # fmt: skip
    return rows


def main() -> None:
    rows = asyncio.run(measure())
    for row in rows:
        print(row)


if __name__ == "__main__":
    main()
