"""Pure builders of Bybit v5 public payloads: topics, push frames, rows, replies, REST bodies.

Everything the fake Bybit writes goes through here, so the shapes `ccxt.pro.bybit` parses are
defined in one place and testable without sockets. Bybit sends numbers as decimal strings and
times as integer ms; a book level is `[price, size]`, size "0" deletes it. The public websocket
is one url per category (`/v5/public/spot`, `/v5/public/linear`): the same topic name
(`publicTrade.BTCUSDT`) means the spot market on one and the perpetual on the other.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from fake_exchange.okx.frames import fmt

Payload = dict[str, Any]
Level = list[str]

CATEGORIES = ("spot", "linear")
BOOK_DEPTHS: dict[str, tuple[int, ...]] = {
    "spot": (1, 50, 200, 1000),
    "linear": (1, 50, 200, 500, 1000),
}
"""Depths of `orderbook.<depth>.<symbol>` Bybit v5 serves per category."""
KLINE_INTERVALS = frozenset(
    {"1", "3", "5", "15", "30", "60", "120", "240", "360", "720", "D", "W", "M"}
)
SPOT_TRADE_ID0 = 2_290_000_000_000_000_000
"""Spot trade ids are one counter shared by every spot symbol (Bybit's `i`, numeric)."""


def now_ms() -> int:
    return int(time.time() * 1000)


CONTRACT_ONLY = frozenset({"allLiquidation"})
"""Topics Bybit serves on contract urls only (a spot subscribe is refused)."""


def parse_topic(topic: str) -> tuple[str, str, str] | None:
    """'orderbook.50.BTCUSDT' -> ('orderbook', '50', 'BTCUSDT'); 'publicTrade.X' -> (.., '', X)."""
    parts = topic.split(".")
    if len(parts) == 2 and parts[0] in ("publicTrade", "tickers", "allLiquidation") and parts[1]:
        return parts[0], "", parts[1]
    if len(parts) == 3 and parts[0] in ("orderbook", "kline") and parts[2]:
        return parts[0], parts[1], parts[2]
    return None


def topic_ok(category: str, topic: str, symbols: set[str]) -> bool:
    """A topic this fake serves on `category`'s url for one of its `symbols`."""
    parsed = parse_topic(topic)
    if parsed is None or category not in BOOK_DEPTHS:
        return False
    kind, arg, symbol = parsed
    if symbol not in symbols or (kind in CONTRACT_ONLY and category == "spot"):
        return False
    if kind == "orderbook":
        return arg.isdigit() and int(arg) in BOOK_DEPTHS[category]
    return kind != "kline" or arg in KLINE_INTERVALS


def push(topic: str, kind: str, data: Any, ts: int, **extra: Any) -> Payload:
    """A data frame: `{"topic", "type": "snapshot"|"delta", "ts", "data", ...}`."""
    return {"topic": topic, "type": kind, "ts": ts, "data": data, **extra}


def book_frame(
    topic: str,
    kind: str,
    symbol: str,
    bids: Sequence[Level],
    asks: Sequence[Level],
    u: int,
    seq: int,
    ts: int,
    cts: int,
) -> Payload:
    """An `orderbook.<depth>.<symbol>` snapshot or delta (`u`: +1 per message of this topic)."""
    data = {
        "s": symbol,
        "b": [list(lv) for lv in bids],
        "a": [list(lv) for lv in asks],
        "u": u,
        "seq": seq,
    }
    return push(topic, kind, data, ts, cts=cts)


def trade_row(
    category: str, symbol: str, trade_id: str, price: str, size: str, side: str, ts: int, seq: int
) -> Payload:
    """One `publicTrade` row; `side` is the taker's, 'Buy' or 'Sell'."""
    row: Payload = {"T": ts, "s": symbol, "S": side, "v": size, "p": price}
    if category == "linear":
        row["L"] = "PlusTick" if side == "Buy" else "MinusTick"
    row.update({"i": trade_id, "BT": False, "RPI": False, "seq": seq})
    return row


def rest_trade(category: str, row: Payload) -> Payload:
    """A websocket trade row as `v5/market/recent-trade` lists it (same id, `execId`)."""
    return {
        "execId": row["i"],
        "symbol": row["s"],
        "price": row["p"],
        "size": row["v"],
        "side": row["S"],
        "time": str(row["T"]),
        "isBlockTrade": row.get("BT", False),
        "isRPITrade": row.get("RPI", False),
        "seq": str(row.get("seq", "")),
    }


def spot_ticker(
    symbol: str,
    last: Decimal,
    open24h: Decimal,
    high: Decimal,
    low: Decimal,
    volume: Decimal,
    turnover: Decimal,
) -> Payload:
    """A spot `tickers` row: always a snapshot, no best bid/ask (Bybit v5 spot has none)."""
    pct = (last - open24h) / open24h if open24h else Decimal(0)
    return {
        "symbol": symbol,
        "lastPrice": fmt(last),
        "highPrice24h": fmt(high),
        "lowPrice24h": fmt(low),
        "prevPrice24h": fmt(open24h),
        "volume24h": fmt(volume),
        "turnover24h": fmt(turnover),
        "price24hPcnt": fmt(round(pct, 4)),
        "usdIndexPrice": fmt(last),
    }


@dataclass(frozen=True, slots=True)
class Derivs:
    """What a linear ticker says besides prices: mark and index price (None: the last
    price), funding rate, open interest in contracts (its value: at the mark price)."""

    mark: Decimal | None = None
    index: Decimal | None = None
    funding_rate: Decimal = Decimal("0.0001")
    open_interest: Decimal = Decimal(1000)
    funding_hours: int = 8


def linear_ticker(
    symbol: str,
    last: Decimal,
    open24h: Decimal,
    high: Decimal,
    low: Decimal,
    volume: Decimal,
    turnover: Decimal,
    bid: Level | None,
    ask: Level | None,
    ts: int,
    derivs: Derivs | None = None,
) -> Payload:
    """A full linear `tickers` row (the snapshot), shaped like the recorded ones; the next
    funding time is the next multiple of the funding interval after `ts`."""
    pct = (last - open24h) / open24h if open24h else Decimal(0)
    d = derivs or Derivs()
    mark = last if d.mark is None else d.mark
    oi = d.open_interest
    period = d.funding_hours * 3_600_000
    return {
        "symbol": symbol,
        "tickDirection": "PlusTick",
        "price24hPcnt": fmt(round(pct, 6)),
        "lastPrice": fmt(last),
        "prevPrice24h": fmt(open24h),
        "highPrice24h": fmt(high),
        "lowPrice24h": fmt(low),
        "prevPrice1h": fmt(open24h),
        "markPrice": fmt(mark),
        "indexPrice": fmt(last if d.index is None else d.index),
        "openInterest": fmt(oi),
        "openInterestValue": fmt(round(oi * mark, 2)),
        "turnover24h": fmt(turnover),
        "volume24h": fmt(volume),
        "fundingIntervalHour": str(d.funding_hours),
        "fundingCap": "0.005",
        "nextFundingTime": str((ts // period + 1) * period),
        "fundingRate": fmt(d.funding_rate),
        "bid1Price": bid[0] if bid else "",
        "bid1Size": bid[1] if bid else "",
        "ask1Price": ask[0] if ask else "",
        "ask1Size": ask[1] if ask else "",
        "preOpenPrice": "",
        "preQty": "",
        "curPreListingPhase": "",
    }


def liquidation_row(symbol: str, side: str, size: str, price: str, ts: int) -> Payload:
    """One `allLiquidation` row: `S` is the liquidated position's side ('Buy': a long)."""
    return {"T": ts, "s": symbol, "S": side, "v": size, "p": price}


def changed(old: Payload, new: Payload) -> Payload:
    """A linear ticker delta: the fields of `new` that differ from `old` (and the symbol)."""
    out = {"symbol": new["symbol"]}
    out.update({k: v for k, v in new.items() if old.get(k) != v})
    return out


# --------------------------------------------------------------------------- control replies


def ack(op: str, req_id: str, conn_id: str, ret_msg: str = "") -> Payload:
    """The reply to a subscribe/unsubscribe request: one per request, not per topic."""
    return {
        "success": not ret_msg,
        "ret_msg": ret_msg,
        "conn_id": conn_id,
        "req_id": req_id,
        "op": op,
    }


def pong(category: str, req_id: str, conn_id: str) -> Payload:
    """Bybit answers `{"op":"ping"}` differently on spot and on contract urls."""
    if category == "spot":
        return {
            "success": True,
            "ret_msg": "pong",
            "conn_id": conn_id,
            "req_id": req_id,
            "op": "ping",
        }
    return {"req_id": req_id, "op": "pong", "args": [str(now_ms())], "conn_id": conn_id}


# --------------------------------------------------------------------------- REST


def rest_ok(result: Payload) -> Payload:
    return {"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now_ms()}


def rest_error(code: int, msg: str) -> Payload:
    return {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": now_ms()}


def instrument(category: str, symbol: str, base: str, quote: str, tick: str) -> Payload:
    """An `instruments-info` entry for a symbol the recording does not list."""
    price = {"tickSize": tick}
    if category == "spot":
        return {
            "symbol": symbol,
            "baseCoin": base,
            "quoteCoin": quote,
            "innovation": "0",
            "status": "Trading",
            "marginTrading": "none",
            "lotSizeFilter": {
                "basePrecision": "0.000001",
                "quotePrecision": "0.00000001",
                "minOrderQty": "0.000001",
                "maxOrderQty": "10000",
                "minOrderAmt": "1",
                "maxOrderAmt": "1000000",
            },
            "priceFilter": price,
        }
    return {
        "symbol": symbol,
        "contractType": "LinearPerpetual",
        "status": "Trading",
        "baseCoin": base,
        "quoteCoin": quote,
        "settleCoin": quote,
        "launchTime": "1585526400000",
        "deliveryTime": "0",
        "priceScale": str(len(tick.partition(".")[2])),
        "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"},
        "priceFilter": {"minPrice": tick, "maxPrice": "1999999.80", **price},
        "lotSizeFilter": {
            "maxOrderQty": "1190.000",
            "minOrderQty": "0.001",
            "qtyStep": "0.001",
            "minNotionalValue": "5",
        },
    }


__all__ = [
    "BOOK_DEPTHS",
    "CATEGORIES",
    "CONTRACT_ONLY",
    "KLINE_INTERVALS",
    "SPOT_TRADE_ID0",
    "Derivs",
    "Level",
    "Payload",
    "ack",
    "book_frame",
    "changed",
    "instrument",
    "linear_ticker",
    "liquidation_row",
    "now_ms",
    "parse_topic",
    "pong",
    "push",
    "rest_error",
    "rest_ok",
    "rest_trade",
    "spot_ticker",
    "topic_ok",
    "trade_row",
]
