"""Binance websocket control protocol (SUBSCRIBE/UNSUBSCRIBE/LIST_SUBSCRIPTIONS), pure.

The server feeds each client text frame to `parse_control` and acts on the result; replies are
built here so their shapes are testable without sockets.

Unknown symbols and unknown stream types are answered with
`{"error": {"code": 2, "msg": "Invalid request: invalid stream <name>"}, "id": N}` (the
documented code 2 "Invalid request" family; real Binance acks a well-formed name of a symbol
that does not exist and then sends nothing, which hides typos, so the fake is stricter).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload

_CHANNEL = re.compile(
    r"^(aggTrade|trade|ticker|miniTicker|bookTicker|avgPrice"
    r"|depth(5|10|20)?(@100ms|@1000ms)?"
    r"|kline_(1s|1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M)"
    r"|ticker_(1h|4h|1d))$"
)
_ALL_MARKET = re.compile(r"^!(ticker|miniTicker|bookTicker)(@arr)?(_(1h|4h|1d)@arr)?$")

Method = Literal["SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "PROPERTY", "ERROR"]


@dataclass(slots=True)
class Control:
    """A parsed client frame: what to do, with which streams, and the reply when known."""

    method: Method
    request_id: Any = None
    streams: list[str] = field(default_factory=list)
    reply: Payload | None = None


def stream_ok(stream: str, known_symbol: Callable[[str], bool]) -> bool:
    """A stream name the fake accepts: '<known symbol>@<binance channel>' or '!ticker@arr'."""
    if stream.startswith("!"):
        return bool(_ALL_MARKET.match(stream))
    sym, channel = bf.split_stream(stream)
    return bool(sym) and known_symbol(sym) and bool(_CHANNEL.match(channel))


def parse_control(
    text: str,
    known_symbol: Callable[[str], bool],
    valid_stream: Callable[[str], bool] | None = None,
) -> Control:
    """Decode one client frame; invalid requests come back as method ERROR with the reply.
    `valid_stream`: the grammar of another Binance market (USD-M: `fake_exchange.usdm`);
    default spot's `stream_ok`."""
    ok = valid_stream or (lambda p: stream_ok(p, known_symbol))
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        return Control("ERROR", reply=bf.ws_error(3, "Invalid JSON: expected value", None))
    if not isinstance(msg, dict):
        return Control("ERROR", reply=bf.ws_error(2, "Invalid request: expected an object", None))
    rid = msg.get("id")
    method = msg.get("method")
    params = msg.get("params", [])
    if method in ("SUBSCRIBE", "UNSUBSCRIBE"):
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            return Control("ERROR", rid, reply=bf.ws_error(1, "Invalid value type", rid))
        if method == "SUBSCRIBE":
            bad = [p for p in params if not ok(p)]
            if bad:
                msg_text = f"Invalid request: invalid stream {bad[0]}"
                return Control("ERROR", rid, reply=bf.ws_error(2, msg_text, rid))
        return Control(method, rid, list(params), {"result": None, "id": rid})
    if method == "LIST_SUBSCRIPTIONS":
        return Control("LIST_SUBSCRIPTIONS", rid)
    if method in ("SET_PROPERTY", "GET_PROPERTY"):
        result = None if method == "SET_PROPERTY" else False
        return Control("PROPERTY", rid, reply={"result": result, "id": rid})
    return Control(
        "ERROR",
        rid,
        reply=bf.ws_error(
            2,
            f"Invalid request: unknown variant `{method}`, expected one of `SUBSCRIBE`, "
            "`UNSUBSCRIBE`, `LIST_SUBSCRIPTIONS`, `SET_PROPERTY`, `GET_PROPERTY`",
            rid,
        ),
    )


def streams_from_path(path: str, query_streams: str | None) -> list[str]:
    """Streams named in the URL: '/stream?streams=a/b' or '/ws/a/b' (raw, with '@')."""
    if query_streams:
        return [s for s in query_streams.split("/") if s]
    tail = path.removeprefix("/ws").strip("/")
    return [s for s in tail.split("/") if "@" in s]


def too_many_streams(current: AbstractSet[str], ctl: Control, limit: int) -> Payload | None:
    """The error reply for a SUBSCRIBE that would hold more than ``limit`` streams on one
    connection (Binance: 1,024), or None when it fits. Nothing of a refused request is
    subscribed."""
    after = len(current | set(ctl.streams))
    if after <= limit:
        return None
    msg = (
        f"Invalid request: too many streams on this connection "
        f"({after} after this request, {limit} at most)"
    )
    return bf.ws_error(2, msg, ctl.request_id)
