"""Kraken's wire shapes, pure: websocket v2 messages, the v1 data they are made from, REST bodies.

The fake keeps market data in Kraken's v1 terms (what the recordings hold: decimal strings,
times as epoch-second strings, trade rows `[price, volume, time, side, ordertype, misc]`) and
renders v2 for clients: `{"channel", "type", "data": [...]}` with JSON numbers, RFC 3339 times
and symbols in v2 spelling (`BTC/USD`, where v1 says `XBT/USD`).

The book checksum (v1 and v2 alike): CRC32 over the top 10 asks (low to high) then the top 10
bids (high to low), each level's price and quantity text with the `.` and the leading zeros
removed. v1 uses the strings as sent; v2 formats each number with the pair's precision
(`price_precision` = `pair_decimals`, `qty_precision` = `lot_decimals`).
"""

from __future__ import annotations

import calendar
import time
import zlib
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

Payload = dict[str, Any]
V1Level = Sequence[str]
"""`[price, volume, time, ("r")]` as v1 sends it."""

V2_NAMES = {"XBT": "BTC", "XDG": "DOGE"}
"""Where v2 (and CCXT) spell an asset differently from v1's `wsname`."""
DEPTHS = (10, 25, 100, 500, 1000)
"""Book depths v2 serves (default 10)."""
INTERVALS = (1, 5, 15, 30, 60, 240, 1440, 10080, 21600)
"""Candle intervals in minutes (v2 `ohlc` and REST `OHLC`)."""
CHECKSUM_LEVELS = 10


def v2_symbol(wsname: str) -> str:
    """`XBT/USD` -> `BTC/USD` (v2's and CCXT's spelling)."""
    base, _, quote = wsname.partition("/")
    return f"{V2_NAMES.get(base, base)}/{V2_NAMES.get(quote, quote)}"


def rfc3339(ns: int) -> str:
    """Epoch ns -> `2023-09-25T07:49:37.708706Z` (microseconds, as Kraken v2 writes)."""
    secs, rest = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rest // 1000:06d}Z"


def parse_rfc3339(text: str) -> int:
    """`2023-09-25T07:49:37.708706Z` -> epoch ns."""
    whole, _, frac = text.rstrip("Z").partition(".")
    secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return secs * 1_000_000_000 + int((frac + "000000000")[:9])


def seconds_ns(text: str) -> int:
    """v1's `"1618678142.557535"` -> epoch ns."""
    return int(Decimal(text) * 1_000_000_000)


def seconds_text(ns: int) -> str:
    """Epoch ns -> v1's `"1618678142.557535"`."""
    secs, rest = divmod(ns, 1_000_000_000)
    return f"{secs}.{rest // 1000:06d}"


def fixed(value: str | float, decimals: int) -> str:
    """A number written with exactly `decimals` decimals (Kraken's precision)."""
    return f"{Decimal(str(value)):.{decimals}f}"


def _digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def checksum(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> int:
    """Kraken's book CRC32 over (price, qty) texts, asks best first then bids best first."""
    asks, bids = list(asks)[:CHECKSUM_LEVELS], list(bids)[:CHECKSUM_LEVELS]
    text = "".join(_digits(p) + _digits(q) for p, q in [*asks, *bids])
    return zlib.crc32(text.encode())


# ---------------------------------------------------------------------- websocket v2


def envelope(channel: str, kind: str, data: list[Payload], ts_ns: int | None = None) -> Payload:
    """A v2 data message (`kind`: snapshot or update); `timestamp` where v2 has one (ohlc)."""
    out: Payload = {"channel": channel, "type": kind, "data": data}
    if ts_ns is not None:
        out["timestamp"] = rfc3339(ts_ns)
    return out


def ack(method: str, result: Payload, req_id: Any, t_in: int, t_out: int) -> Payload:
    out: Payload = {"method": method, "result": result, "success": True}
    out.update(time_in=rfc3339(t_in), time_out=rfc3339(t_out))
    if req_id is not None:
        out["req_id"] = req_id
    return out


def error(method: str, message: str, req_id: Any, t_in: int, t_out: int, **extra: Any) -> Payload:
    out: Payload = {"error": message, "method": method, "success": False, **extra}
    out.update(time_in=rfc3339(t_in), time_out=rfc3339(t_out))
    if req_id is not None:
        out["req_id"] = req_id
    return out


def pong(req_id: Any, t_in: int, t_out: int) -> Payload:
    out: Payload = {"method": "pong", "time_in": rfc3339(t_in), "time_out": rfc3339(t_out)}
    if req_id is not None:
        out["req_id"] = req_id
    return out


def status(connection_id: int) -> Payload:
    data = {"api_version": "v2", "connection_id": connection_id, "system": "online",
            "version": "2.0.10"}  # fmt: skip
    return envelope("status", "update", [data])


HEARTBEAT: Payload = {"channel": "heartbeat"}


def v1_status(connection_id: int) -> Payload:
    return {"connectionID": connection_id, "event": "systemStatus", "status": "online",
            "version": "1.9.2"}  # fmt: skip


def v1_subscription(channel: str) -> Payload:
    """v1's `subscription` object of a channel name: `book-1000` -> name and depth."""
    name, _, depth = channel.partition("-")
    return {"name": name, "depth": int(depth)} if depth else {"name": name}


def levels(side: Iterable[V1Level], decimals: tuple[int, int]) -> list[Payload]:
    """v1 levels -> v2 `{"price", "qty"}`: numbers at the pair's precision (what the
    checksum is computed on)."""
    pd, qd = decimals
    return [{"price": float(fixed(lv[0], pd)), "qty": float(fixed(lv[1], qd))} for lv in side]


def book_data(
    symbol: str, bids: list[Payload], asks: list[Payload], crc: int, ts_ns: int | None
) -> Payload:
    out: Payload = {"symbol": symbol, "bids": bids, "asks": asks, "checksum": crc}
    if ts_ns is not None:
        out["timestamp"] = rfc3339(ts_ns)
    return out


def ticker(symbol: str, v1: Payload, ts_ns: int) -> Payload:
    """v1's ticker (`a`, `b`, `c`, `v`, `p`, `l`, `h`, `o`: [today, 24 h]) -> a v2 row."""
    last = Decimal(v1["c"][0])
    opened = Decimal(v1["o"][1])
    change = last - opened
    pct = float(round(change / opened * 100, 2)) if opened else 0.0
    return {
        "symbol": symbol,
        "bid": float(v1["b"][0]),
        "bid_qty": float(v1["b"][2]),
        "ask": float(v1["a"][0]),
        "ask_qty": float(v1["a"][2]),
        "last": float(last),
        "volume": float(v1["v"][1]),
        "vwap": float(v1["p"][1]),
        "low": float(v1["l"][1]),
        "high": float(v1["h"][1]),
        "change": float(change),
        "change_pct": pct,
        "timestamp": rfc3339(ts_ns),
    }


def v1_ticker(
    last: str, bid: tuple[str, str], ask: tuple[str, str], opened: str, stats: Payload
) -> Payload:
    """A v1-shaped ticker dict (what the synthetic source and made-up tickers use)."""
    return {
        "a": [ask[0], 1, ask[1]],
        "b": [bid[0], 1, bid[1]],
        "c": [last, "0"],
        "v": [stats["volume"], stats["volume"]],
        "p": [stats["vwap"], stats["vwap"]],
        "t": [stats["count"], stats["count"]],
        "l": [stats["low"], stats["low"]],
        "h": [stats["high"], stats["high"]],
        "o": [opened, opened],
    }


def trade(symbol: str, row: V1Level, trade_id: int) -> Payload:
    """A v1 trade row -> a v2 trade (the side is the taker's in both)."""
    return {
        "symbol": symbol,
        "side": "sell" if row[3] == "s" else "buy",
        "price": float(row[0]),
        "qty": float(row[1]),
        "ord_type": "limit" if row[4] == "l" else "market",
        "trade_id": trade_id,
        "timestamp": rfc3339(seconds_ns(row[2])),
    }


def ohlc(symbol: str, candle: Sequence[Any], interval: int) -> Payload:
    """A candle `[start_s, open, high, low, close, vwap, volume, count]` -> a v2 ohlc row."""
    start = int(candle[0]) * 1_000_000_000
    return {
        "symbol": symbol,
        "open": float(candle[1]),
        "high": float(candle[2]),
        "low": float(candle[3]),
        "close": float(candle[4]),
        "vwap": float(candle[5]),
        "trades": int(candle[7]),
        "volume": float(candle[6]),
        "interval_begin": rfc3339(start),
        "interval": interval,
        "timestamp": rfc3339(start + interval * 60_000_000_000),
    }


# ---------------------------------------------------------------------- REST


def rest_ok(result: Any) -> Payload:
    return {"error": [], "result": result}


def rest_error(*messages: str) -> Payload:
    return {"error": list(messages)}


def asset_altname(asset: str) -> str:
    """Kraken's X/Z-prefixed ids (`XXBT`, `ZUSD`) -> their altname (`XBT`, `USD`)."""
    return asset[1:] if len(asset) == 4 and asset[0] in "XZ" else asset


def assets(pairs: Iterable[Payload]) -> Payload:
    """`0/public/Assets` for every asset the pairs name (altnames from their `wsname`)."""
    out: Payload = {}
    for p in pairs:
        names = str(p.get("wsname", "")).split("/")
        for asset, alt in zip((p["base"], p["quote"]), names, strict=False):
            out.setdefault(asset, {"aclass": "currency", "altname": alt or asset_altname(asset),
                                   "decimals": 10, "display_decimals": 5, "status": "enabled"})  # fmt: skip
    return out


def rest_trade(row: V1Level, trade_id: int) -> list[Any]:
    """A REST `Trades` row: `[price, volume, time, side, ordertype, misc, trade_id]`."""
    return [row[0], row[1], float(row[2]), row[3], row[4], row[5] if len(row) > 5 else "",
            trade_id]  # fmt: skip


__all__ = [
    "DEPTHS",
    "HEARTBEAT",
    "INTERVALS",
    "Payload",
    "V1Level",
    "ack",
    "asset_altname",
    "assets",
    "book_data",
    "checksum",
    "envelope",
    "error",
    "fixed",
    "levels",
    "ohlc",
    "parse_rfc3339",
    "pong",
    "rest_error",
    "rest_ok",
    "rest_trade",
    "rfc3339",
    "seconds_ns",
    "seconds_text",
    "status",
    "ticker",
    "trade",
    "v1_status",
    "v1_subscription",
    "v1_ticker",
    "v2_symbol",
]
