"""Bybit v5 public websocket requests (ping, subscribe, unsubscribe) and their replies, pure.

One reply per request, never per topic. Bybit refuses a whole subscribe when any of its topics
is already subscribed on that connection (`error:already subscribed,topic:T`: the other topics
of the batch are not subscribed either), so a client must unsubscribe before it subscribes a
topic again to get a new snapshot; the fake refuses an unknown topic the same way, and a spot
request of more than 10 topics (Bybit's limit per request on spot).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Literal

import orjson

from fake_exchange.bybit import frames as yf
from fake_exchange.bybit.frames import Payload

Op = Literal["ping", "subscribe", "unsubscribe", "error"]
SPOT_ARGS_LIMIT = 10


@dataclass(frozen=True, slots=True)
class BybitRequest:
    """What one client text asks for; `reply` is the error or ack body to answer it with."""

    op: Op
    req_id: str
    topics: tuple[str, ...] = ()
    reply: Payload | None = None


def parse_request(
    text: str, category: str, conn_tag: str, symbols: set[str], subscribed: Container[str]
) -> BybitRequest:
    """Read a client text; `subscribed`: the topics this connection already holds."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        msg = None
    if not isinstance(msg, dict):
        return BybitRequest("error", "", reply=_invalid(conn_tag))
    req_id = str(msg.get("req_id", ""))
    op, args = msg.get("op"), msg.get("args")
    if op == "ping":
        return BybitRequest("ping", req_id, reply=yf.pong(category, req_id, conn_tag))
    if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
        return BybitRequest("error", req_id, reply=_invalid(conn_tag))
    topics = tuple(str(t) for t in args)
    if category == "spot" and len(topics) > SPOT_ARGS_LIMIT:
        reply = yf.ack(op, req_id, conn_tag, f"error:args size >{SPOT_ARGS_LIMIT}")
        return BybitRequest("error", req_id, topics, reply)
    if op == "subscribe":
        for topic in topics:
            if not yf.topic_ok(category, topic, symbols):
                problem = "handler not found"
            elif topic in subscribed:
                problem = "already subscribed"
            else:
                continue
            reply = yf.ack(op, req_id, conn_tag, f"error:{problem},topic:{topic}")
            return BybitRequest("error", req_id, topics, reply)
    return BybitRequest(op, req_id, topics, yf.ack(op, req_id, conn_tag))


def _invalid(conn_tag: str) -> Payload:
    """Bybit's answer to a text that is not a request it knows."""
    return {
        "success": False,
        "ret_msg": "error:invalid op",
        "conn_id": conn_tag,
        "request": {"op": "", "args": None},
    }


__all__ = ["SPOT_ARGS_LIMIT", "BybitRequest", "Op", "parse_request"]
