"""Coinbase Advanced Trade websocket requests (subscribe, unsubscribe), pure.

`{"type": "subscribe" | "unsubscribe", "product_ids": [...], "channel": "level2"}`, one channel
a request (the public channels need no `jwt`; one given is ignored). `heartbeats` takes no
products. A request the fake cannot serve is refused whole with
`{"type": "error", "message": "Failed to subscribe", "reason": ...}` (no sequence number):
an unknown channel or product, or no products for a market channel. Coinbase's own texts for
these are not all documented; the fake's say what was wrong.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import Literal

import orjson

from fake_exchange.coinbase import frames as cf
from fake_exchange.coinbase.frames import Payload

Op = Literal["subscribe", "unsubscribe", "error"]


@dataclass(frozen=True, slots=True)
class CoinbaseRequest:
    """What one client text asks for; `reply` is the error to answer it with (None: none)."""

    op: Op
    channel: str = ""
    product_ids: tuple[str, ...] = ()
    reply: Payload | None = None


def parse_request(text: str, products: Container[str]) -> CoinbaseRequest:
    """Read a client text against the products the fake lists."""
    try:
        msg = orjson.loads(text)
    except orjson.JSONDecodeError:
        msg = None
    if not isinstance(msg, dict):
        return CoinbaseRequest("error", reply=cf.error("Failed to parse the request", "bad JSON"))
    op, channel, ids = msg.get("type"), msg.get("channel"), msg.get("product_ids", [])
    if op not in ("subscribe", "unsubscribe"):
        reason = f"type must be subscribe or unsubscribe, not {op!r}"
        return CoinbaseRequest("error", reply=cf.error("Failed to parse the request", reason))
    verb = "Failed to subscribe" if op == "subscribe" else "Failed to unsubscribe"
    if not isinstance(channel, str) or channel not in cf.CHANNELS:
        reason = f"channel {channel!r} is not supported"
        return CoinbaseRequest("error", reply=cf.error(verb, reason))
    if not isinstance(ids, list) or not all(isinstance(p, str) for p in ids):
        return CoinbaseRequest(
            "error", channel, reply=cf.error(verb, "product_ids must be strings")
        )
    if channel == cf.HEARTBEATS:
        return CoinbaseRequest(op, channel, (cf.HEARTBEATS,))
    if not ids:
        reason = f"channel {channel} needs product_ids"
        return CoinbaseRequest("error", channel, reply=cf.error(verb, reason))
    for pid in ids:
        if pid not in products:
            reason = f"{pid} is not a valid product"
            return CoinbaseRequest("error", channel, tuple(ids), cf.error(verb, reason))
    return CoinbaseRequest(op, channel, tuple(dict.fromkeys(ids)))


__all__ = ["CoinbaseRequest", "Op", "parse_request"]
