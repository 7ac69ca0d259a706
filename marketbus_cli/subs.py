"""``marketbus subscribe`` / ``unsubscribe`` / ``subscriptions``: change a running publisher.

The change is written to ``mb:subs:{exchange}`` (so it survives a publisher restart) and
announced on ``mb:ctl:{exchange}``; then we watch the worker's status key until it shows
the change applied (or the symbol dropped as unknown), for a few seconds at most.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from marketbus.keys import control_stream, status_key, subscriptions_key
from marketbus.models import Channel
from marketbus.redis_client import from_redis
from marketbus.subscriptions import Op, field_name, field_value, loose_symbol, parse_changes
from marketbus.symbols import squash

CONTROL_MAXLEN = 1_000


@dataclass
class Outcome:
    """What the publisher made of a change, per symbol: active, removed, unknown or pending."""

    applied: dict[str, str] = field(default_factory=dict)
    publisher_seen: bool = False

    @property
    def pending(self) -> list[str]:
        return [s for s, v in self.applied.items() if v == "pending"]


async def write_change(
    redis: Any, exchange: str, symbols: Iterable[str], channels: Iterable[Channel], op: Op
) -> int:
    """Store the change and announce it; returns the time it was made (ms)."""
    at = int(time.time() * 1000)
    syms = [loose_symbol(s) for s in symbols]
    chans = list(channels)
    mapping = {field_name(c, s): field_value(op, at) for s in syms for c in chans}
    pipe = redis.pipeline(transaction=False)
    pipe.hset(subscriptions_key(exchange), mapping=mapping)
    pipe.xadd(
        control_stream(exchange),
        {"op": op, "symbols": ",".join(syms), "channels": ",".join(c.value for c in chans)},
        maxlen=CONTROL_MAXLEN,
        approximate=True,
    )
    await pipe.execute()
    return at


async def reset(redis: Any, exchange: str) -> None:
    """Forget every run-time change: the publisher goes back to its configuration."""
    pipe = redis.pipeline(transaction=False)
    pipe.delete(subscriptions_key(exchange))
    pipe.xadd(control_stream(exchange), {"op": "reset"}, maxlen=CONTROL_MAXLEN, approximate=True)
    await pipe.execute()


async def read_status(redis: Any, exchange: str) -> dict[str, Any] | None:
    raw = await redis.hget(status_key(exchange), "json")
    if not raw:
        return None
    try:
        st = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return st if isinstance(st, dict) else None


def outcome(
    status: dict[str, Any] | None, symbols: Iterable[str], channels: Iterable[Channel], op: Op
) -> Outcome:
    """Compare the worker's status with the change asked for (pure)."""
    out = Outcome(publisher_seen=status is not None)
    subs = (status or {}).get("subscriptions") or {}
    dropped = {squash(k): v for k, v in ((status or {}).get("dropped") or {}).items()}
    for s in symbols:
        key = squash(s)
        if key in dropped:
            out.applied[s] = f"unknown: {dropped[key]}"
            continue
        present = [any(squash(x) == key for x in subs.get(c.value, [])) for c in channels]
        done = all(present) if op == "+" else not any(present)
        out.applied[s] = ("active" if op == "+" else "removed") if done else "pending"
    return out


async def change_and_wait(
    redis: Any,
    exchange: str,
    symbols: list[str],
    channels: list[Channel],
    op: Op,
    wait_s: float,
) -> Outcome:
    """Write the change, then poll the status key until it shows it (or ``wait_s`` passes)."""
    try:
        await write_change(redis, exchange, symbols, channels, op)
        deadline = time.monotonic() + wait_s
        while True:
            result = outcome(await read_status(redis, exchange), symbols, channels, op)
            if not result.pending or time.monotonic() >= deadline:
                return result
            await asyncio.sleep(0.1)
    except Exception as e:
        raise from_redis(e) from e


async def listing(redis: Any, exchange: str) -> dict[str, Any]:
    """Run-time changes stored for ``exchange`` and what its worker says it publishes."""
    try:
        raw = await redis.hgetall(subscriptions_key(exchange))
        status = await read_status(redis, exchange)
    except Exception as e:
        raise from_redis(e) from e
    changes, bad = parse_changes(raw)
    return {
        "exchange": exchange,
        "changes": [
            {"channel": c.channel.value, "symbol": c.symbol, "op": c.op, "at_ms": c.at_ms}
            for c in changes
        ],
        "unreadable": bad,
        "active": (status or {}).get("subscriptions"),
        "dropped": (status or {}).get("dropped"),
        "state": (status or {}).get("state"),
    }
