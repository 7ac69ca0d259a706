"""Kraken websocket requests, pure: v2 (`method`/`params`/`req_id`) and v1 (`event`/`pair`).

v2: `{"method": "subscribe", "params": {"channel": "book", "symbol": ["BTC/USD"],
"depth": 25}, "req_id": 7}`; channels `book` (depth 10, 25, 100, 500, 1000; default 10),
`ticker`, `trade`, `ohlc` (`interval` in minutes, required); `ping`. A request the fake cannot
read is refused whole with Kraken's texts, which ccxt maps (`Currency pair not supported` ->
BadSymbol, `Malformed request` -> BadRequest, ...). Per-symbol checks (unknown pair, already
subscribed) are the server's: it answers them one symbol at a time, as Kraken does.
v1: `{"event": "subscribe", "pair": ["XBT/USD"], "subscription": {"name": "book",
"depth": 1000}}`, `ping`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from fake_exchange.kraken import frames as kf

CHANNELS = ("book", "ticker", "trade", "ohlc")


@dataclass(frozen=True, slots=True)
class Request:
    """What one client text asks for; `refusal`: the error text to answer it with."""

    method: str
    channel: str = ""
    symbols: tuple[str, ...] = ()
    depth: int = 10
    interval: int = 0
    snapshot: bool = True
    req_id: Any = None
    refusal: str | None = None

    def key_channel(self) -> str:
        """The server's subscription key channel: `book-25`, `ohlc-5`, `ticker`, `trade`."""
        if self.channel == "book":
            return f"book-{self.depth}"
        if self.channel == "ohlc":
            return f"ohlc-{self.interval}"
        return self.channel


def _loads(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def parse_v2(text: str) -> Request:
    msg = _loads(text)
    if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
        return Request("", refusal="Malformed request")
    method, req_id = msg["method"], msg.get("req_id")
    if method == "ping":
        return Request("ping", req_id=req_id)
    if method not in ("subscribe", "unsubscribe"):
        return Request(method, req_id=req_id, refusal=f"Method not supported: {method}")
    params = msg.get("params")
    if not isinstance(params, dict):
        return Request(method, req_id=req_id, refusal="Malformed request")
    channel, symbols = params.get("channel"), params.get("symbol")
    if channel not in CHANNELS:
        return Request(method, req_id=req_id, refusal=f"Channel {channel} not supported")
    if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
        return Request(method, channel, req_id=req_id, refusal="Malformed request")
    depth, interval = params.get("depth", 10), params.get("interval", 0)
    if channel == "book" and depth not in kf.DEPTHS:
        return Request(method, channel, req_id=req_id, refusal="Subscription depth not supported")
    if channel == "ohlc" and interval not in kf.INTERVALS:
        refusal = "Subscription ohlc interval not supported"
        return Request(method, channel, req_id=req_id, refusal=refusal)
    snapshot = params.get("snapshot", channel != "trade")  # trade: no snapshot unless asked
    return Request(method, str(channel), tuple(dict.fromkeys(symbols)), int(depth),
                   int(interval), bool(snapshot), req_id)  # fmt: skip


def parse_v1(text: str) -> Request:
    """A v1 request; `channel` is v1's channel name (`book-1000`, `trade`, `ticker`)."""
    msg = _loads(text)
    if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
        return Request("", refusal="Malformed request")
    event, req_id = msg["event"], msg.get("reqid")
    if event == "ping":
        return Request("ping", req_id=req_id)
    if event not in ("subscribe", "unsubscribe"):
        return Request(event, req_id=req_id, refusal="Event(s) not found")
    sub, pairs = msg.get("subscription"), msg.get("pair")
    if not isinstance(sub, dict) or not isinstance(sub.get("name"), str):
        return Request(event, req_id=req_id, refusal="Subscription field must be an object")
    if not isinstance(pairs, list) or not all(isinstance(p, str) for p in pairs):
        return Request(event, req_id=req_id, refusal="Pair field must be an array")
    name = str(sub["name"])
    channel = f"book-{sub.get('depth', 10)}" if name == "book" else name
    return Request(event, channel, tuple(dict.fromkeys(pairs)), req_id=req_id)


__all__ = ["CHANNELS", "Request", "parse_v1", "parse_v2"]
