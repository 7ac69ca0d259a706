"""``marketbus inspect``: the streams in Redis, their lengths, first/last entries, the
publisher workers' and the archivers' status."""

from __future__ import annotations

import time
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.keys import STATUS_PREFIX, parse_stream_key, status_key, stream_pattern
from marketbus.redis_client import connect
from marketbus.settings import RedisSettings

ARCHIVE_PREFIX = status_key("archive:")  # mb:status:archive:<name>: an archiver's, not a worker's


def describe_entry(entries: list[Any]) -> dict[str, Any] | None:
    """One XRANGE result as data: ``id``, ``record`` (decoded) and ``text``, or ``undecodable``."""
    if not entries:
        return None
    entry_id, fields = entries[0]
    eid = entry_id.decode()
    try:
        r = codec.decode_fields(fields)
    except DecodeError as e:
        return {"id": eid, "undecodable": str(e)[:200], "text": f"{eid} (undecodable: {e})"}
    return {"id": eid, "record": r.model_dump(mode="json"), "text": f"{eid} {codec.human(r)}"}


async def _stream(client: Any, k: bytes) -> dict[str, Any] | None:
    try:
        sk = parse_stream_key(k)
    except DecodeError:
        return None
    out: dict[str, Any] = {
        "key": k.decode(), "exchange": sk.exchange, "symbol": sk.symbol,
        "channel": sk.channel.value,
    }  # fmt: skip
    kind = await client.type(k)
    if kind != b"stream":  # a foreign key that happens to match our pattern
        return {**out, "length": None, "first": None, "last": None,
                "error": f"not a stream (a {kind.decode()})"}  # fmt: skip
    out["length"] = await client.xlen(k)
    out["first"] = describe_entry(await client.xrange(k, "-", "+", count=1))
    out["last"] = describe_entry(await client.xrevrange(k, "+", "-", count=1))
    return out


def _status(raw: bytes | None, key: bytes) -> dict[str, Any] | None:
    if not raw:
        return None
    try:
        st = orjson.loads(raw)
    except orjson.JSONDecodeError:
        st = None
    if not isinstance(st, dict) or "exchange" not in st or "state" not in st:
        return {"exchange": key.decode(errors="replace"), "state": "UNREADABLE"}
    return st


async def inspect(redis: RedisSettings) -> dict[str, Any]:
    """Streams and statuses as data (the CLI prints it)."""
    from archive.status import parse_status  # (not at the top: ``health`` needs no pyarrow)

    client = connect(redis)
    try:
        streams = []
        async for k in client.scan_iter(match=stream_pattern(), count=1000):
            s = await _stream(client, k)
            if s is not None:
                streams.append(s)
        statuses, archivers = [], []
        async for k in client.scan_iter(match=f"{STATUS_PREFIX}:*", count=100):
            if await client.type(k) == b"hash":
                if k.decode(errors="replace").startswith(ARCHIVE_PREFIX):
                    archiver = parse_status(await client.hgetall(k))
                    if archiver is not None:
                        archivers.append(archiver)
                    continue
                st = _status(await client.hget(k, "json"), k)
                if st is not None:
                    statuses.append(st)
    finally:
        await client.aclose()
    streams.sort(key=lambda s: s["key"])
    statuses.sort(key=lambda s: str(s["exchange"]))
    archivers.sort(key=lambda s: str(s["name"]))
    return {"streams": streams, "workers": statuses, "archivers": archivers}


async def worker_health(redis: RedisSettings, exchange: str, max_age: float) -> tuple[bool, str]:
    """(healthy, reason) from the worker's status key."""
    client = connect(redis)
    try:
        raw = await client.hget(status_key(exchange), "json")
    finally:
        await client.aclose()
    st = _status(raw, status_key(exchange).encode())
    if st is None:
        return False, f"no status for {exchange}: publisher not running (or its status expired)"
    age = st.get("last_frame_age_s")
    if isinstance(age, int | float) and isinstance(st.get("updated_ms"), int):
        age += max(time.time() - st["updated_ms"] / 1000, 0)  # the status may be seconds old
    if st.get("state") != "CONNECTED":
        return False, f"{exchange} is {st.get('state')}: {st.get('last_error') or ''}"
    if age is None or age > max_age:
        return False, f"{exchange} last frame {age} s ago"
    return True, f"{exchange} CONNECTED, last frame {age:.1f} s ago"


def print_inspection(data: dict[str, Any], console: Console | None = None) -> None:
    con = console or Console()
    t = Table(title="streams")
    widest = max((len(s["key"]) for s in data["streams"]), default=3)
    t.add_column("key", no_wrap=True, min_width=widest)  # keys are for copying: never cut
    t.add_column("length", justify="right", no_wrap=True)
    t.add_column("first", overflow="fold")
    t.add_column("last", overflow="fold")
    for s in data["streams"]:
        first, last = s["first"], s["last"]
        t.add_row(
            s["key"],
            "-" if s["length"] is None else str(s["length"]),
            s.get("error") or (first["text"] if first else "-"),
            last["text"] if last else "-",
        )
    if not data["streams"]:
        t.add_row("(no marketbus streams: is a publisher running?)", "", "", "")
    con.print(t)
    w = Table(title="publisher workers")
    for c in ("exchange", "state", "markets", "last frame age", "reconnects", "errors", "records",
              "trade gaps", "spool", "last error"):  # fmt: skip
        w.add_column(c)
    for st in data["workers"]:
        age = st.get("last_frame_age_s")
        if isinstance(age, int | float) and isinstance(st.get("updated_ms"), int):
            age += max(time.time() - st["updated_ms"] / 1000, 0)  # the status may be seconds old
        name = str(st["exchange"]) + (f"@{st['instance']}" if st.get("instance") else "")
        w.add_row(
            name, str(st["state"]), ", ".join(map(str, st.get("markets", []))),
            "-" if age is None else f"{age:.1f}s", str(st.get("reconnects", 0)),
            str(st.get("errors", 0)), str(st.get("records", 0)), str(st.get("trade_gaps", 0)),
            str(st.get("sink", {}).get("pending", 0)), str(st.get("last_error") or "-")[:60],
        )  # fmt: skip
    con.print(w)
    if data.get("archivers"):
        from archive.status import status_line

        con.print("archivers (marketbus archive status tells whether each is healthy)")
        now_ms = int(time.time() * 1000)
        for a in data["archivers"]:
            con.print(f"  {a.get('name')}: {status_line(a, now_ms)}", soft_wrap=True)
