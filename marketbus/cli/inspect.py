"""``marketbus inspect``: the streams in Redis, their lengths, first/last entries, worker status."""

from __future__ import annotations

from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.keys import STATUS_PREFIX, parse_stream_key, status_key, stream_pattern
from marketbus.redis_client import connect
from marketbus.settings import RedisSettings


def _describe(entries: list[Any]) -> str:
    if not entries:
        return "-"
    entry_id, fields = entries[0]
    try:
        r = codec.decode_fields(fields)
    except DecodeError as e:
        return f"{entry_id.decode()} (undecodable: {e})"
    return f"{entry_id.decode()} {codec.human(r)}"


async def inspect(redis: RedisSettings) -> dict[str, Any]:
    """Streams and statuses as data (the CLI prints it)."""
    client = connect(redis)
    try:
        streams = []
        async for k in client.scan_iter(match=stream_pattern(), count=1000):
            try:
                sk = parse_stream_key(k)
            except DecodeError:
                continue
            length = await client.xlen(k)
            first = await client.xrange(k, "-", "+", count=1)
            last = await client.xrevrange(k, "+", "-", count=1)
            streams.append(
                {"key": k.decode(), "exchange": sk.exchange, "symbol": sk.symbol,
                 "channel": sk.channel.value, "length": length,
                 "first": _describe(first), "last": _describe(last)}
            )  # fmt: skip
        statuses = []
        async for k in client.scan_iter(match=f"{STATUS_PREFIX}:*", count=100):
            raw = await client.hget(k, "json")
            if raw:
                statuses.append(orjson.loads(raw))
    finally:
        await client.aclose()
    streams.sort(key=lambda s: s["key"])
    return {"streams": streams, "workers": statuses}


async def worker_health(redis: RedisSettings, exchange: str, max_age: float) -> tuple[bool, str]:
    """(healthy, reason) from the worker's status key."""
    client = connect(redis)
    try:
        raw = await client.hget(status_key(exchange), "json")
    finally:
        await client.aclose()
    if not raw:
        return False, f"no status for {exchange}: publisher not running (or its status expired)"
    st = orjson.loads(raw)
    age = st.get("last_frame_age_s")
    if st.get("state") != "CONNECTED":
        return False, f"{exchange} is {st.get('state')}: {st.get('last_error') or ''}"
    if age is None or age > max_age:
        return False, f"{exchange} last frame {age} s ago"
    return True, f"{exchange} CONNECTED, last frame {age:.1f} s ago"


def print_inspection(data: dict[str, Any], console: Console | None = None) -> None:
    con = console or Console()
    t = Table(title="streams")
    for c in ("key", "length", "first", "last"):
        t.add_column(c)
    for s in data["streams"]:
        t.add_row(s["key"], str(s["length"]), s["first"], s["last"])
    con.print(t)
    w = Table(title="publisher workers")
    for c in ("exchange", "state", "markets", "last frame age", "reconnects", "errors", "records",
              "trade gaps", "spool", "last error"):  # fmt: skip
        w.add_column(c)
    for st in data["workers"]:
        age = st.get("last_frame_age_s")
        w.add_row(
            st["exchange"], st["state"], ", ".join(st.get("markets", [])),
            "-" if age is None else f"{age:.1f}s", str(st.get("reconnects", 0)),
            str(st.get("errors", 0)), str(st.get("records", 0)), str(st.get("trade_gaps", 0)),
            str(st.get("sink", {}).get("pending", 0)), str(st.get("last_error") or "-")[:60],
        )  # fmt: skip
    con.print(w)
