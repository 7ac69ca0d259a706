"""Pure builders of Coinbase Advanced Trade payloads: times, envelopes, rows, replies, REST bodies.

Everything the fake Coinbase writes goes through here, so the shapes `ccxt.pro.coinbase` parses
are defined in one place and testable without sockets. Coinbase sends numbers as decimal
strings and times as RFC 3339 text (Go's: trailing zeros of the fraction trimmed; the envelope's
`timestamp` to the nanosecond, a trade's `time` and a level's `event_time` to the microsecond),
candle starts as epoch seconds in a string. Every websocket message is one envelope
`{"channel", "timestamp", "sequence_num", "events": [...]}`; `sequence_num` counts the messages
of one connection, every channel together, from 0.
"""

from __future__ import annotations

import calendar
import time
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from fake_exchange.okx.frames import fmt

Payload = dict[str, Any]

DATA_CHANNELS = ("l2_data", "market_trades", "ticker", "candles")
"""The `channel` of the data messages a source plays."""
SUBSCRIBED_AS: dict[str, tuple[str, ...]] = {
    "l2_data": ("level2",),
    "market_trades": ("market_trades",),
    "ticker": ("ticker", "ticker_batch"),
    "candles": ("candles",),
}
"""Data channel -> the subscription channels that receive it (`level2` is sent as `l2_data`)."""
CHANNELS = frozenset({"level2", "market_trades", "ticker", "ticker_batch", "candles", "heartbeats"})
"""Channels a client may subscribe to (public ones; `user`, `status` and `futures_balance_summary`
are not served)."""
HEARTBEATS = "heartbeats"
CANDLE_S = 300
"""The websocket `candles` channel has one granularity: five minutes."""
GRANULARITY_S = {
    "ONE_MINUTE": 60,
    "FIVE_MINUTE": 300,
    "FIFTEEN_MINUTE": 900,
    "THIRTY_MINUTE": 1800,
    "ONE_HOUR": 3600,
    "TWO_HOUR": 7200,
    "FOUR_HOUR": 14400,
    "SIX_HOUR": 21600,
    "ONE_DAY": 86400,
}
"""REST candle granularities and their length in seconds."""
TRADES_SNAPSHOT = 100
"""Trades a `market_trades` snapshot holds (the recorded ones hold 100)."""
_NS = 10**9


def now_ns() -> int:
    return time.time_ns()


# --------------------------------------------------------------------------- times


def _fraction(ns: int, digits: int) -> str:
    """'.228568804' for 9 digits, trailing zeros trimmed, '' for a whole second (Go's way)."""
    frac = f"{ns % _NS:09d}"[:digits].rstrip("0")
    return f".{frac}" if frac else ""


def iso(ns: int, digits: int = 9) -> str:
    """Epoch ns as Coinbase's RFC 3339 UTC text with at most `digits` fraction digits."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // _NS)) + _fraction(ns, digits) + "Z"


def iso_us(ns: int) -> str:
    """A trade's `time`, a level's `event_time`: to the microsecond."""
    return iso(ns, 6)


def parse_iso(text: str) -> int:
    """Coinbase's RFC 3339 UTC text (`...T21:05:48.22856Z`, any fraction) -> epoch ns."""
    body = text.rstrip("Z")
    whole, _, frac = body.partition(".")
    secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    return secs * _NS + int((frac + "000000000")[:9])


def shift_iso(text: str, moved_ns: int, digits: int) -> str:
    """`text` moved by `moved_ns`, written with the same precision Coinbase uses for it."""
    return iso(parse_iso(text) + moved_ns, digits)


def go_time(ns: int, uptime_ns: int) -> str:
    """A heartbeat's `current_time`: Go's `time.Time` text with the monotonic reading."""
    day = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ns // _NS))
    return f"{day}.{ns % _NS:09d} +0000 UTC m=+{uptime_ns // _NS}.{uptime_ns % _NS:09d}"


# --------------------------------------------------------------------------- websocket


def envelope(channel: str, ts_ns: int, seq: int, events: list[Payload]) -> Payload:
    """One websocket message (the recorded ones carry no `client_id`)."""
    return {"channel": channel, "timestamp": iso(ts_ns), "sequence_num": seq, "events": events}


def envelope_parts(channel: str, ts_ns: int, events_json: str) -> tuple[str, str]:
    """The text of an envelope around its sequence number: `head + str(seq) + tail`, so a
    message fanned out to many connections is serialized once."""
    head = f'{{"channel":"{channel}","timestamp":"{iso(ts_ns)}","sequence_num":'
    return head, f',"events":{events_json}}}'


def subscriptions(subs: dict[str, list[str]]) -> list[Payload]:
    """The events of a `subscriptions` message: every channel -> products of the connection."""
    return [{"subscriptions": {ch: list(ids) for ch, ids in sorted(subs.items()) if ids}}]


def heartbeat(ns: int, uptime_ns: int, counter: int) -> list[Payload]:
    return [{"current_time": go_time(ns, uptime_ns), "heartbeat_counter": counter}]


def error(message: str, reason: str = "") -> Payload:
    """What Coinbase answers a request it refuses (no envelope, no sequence number)."""
    body: Payload = {"type": "error", "message": message}
    if reason:
        body["reason"] = reason
    return body


def products_of(channel: str, event: Payload) -> list[str]:
    """The products an event of a data channel is about, in order of appearance."""
    if channel == "l2_data":
        pid = event.get("product_id")
        return [pid] if isinstance(pid, str) else []
    rows = event.get(_ROWS.get(channel, ""), ())
    return list(dict.fromkeys(r["product_id"] for r in rows if isinstance(r, dict)))


_ROWS = {"market_trades": "trades", "ticker": "tickers", "candles": "candles"}


def only_product(channel: str, event: Payload, product_id: str) -> Payload:
    """`event` with the rows of one product only (a frame may mix products)."""
    key = _ROWS.get(channel)
    if key is None:
        return event
    rows = [r for r in event.get(key, ()) if r.get("product_id") == product_id]
    return {**event, key: rows}


def level(side: str, price: str, size: str, event_time: str) -> Payload:
    """One `l2_data` update: `side` bid or offer, size "0" removes the level."""
    return {"side": side, "event_time": event_time, "price_level": price, "new_quantity": size}


def book_event(kind: str, product_id: str, updates: list[Payload]) -> Payload:
    return {"type": kind, "product_id": product_id, "updates": updates}


def book_updates(
    bids: Iterable[Sequence[str]], asks: Iterable[Sequence[str]], default_time: str
) -> list[Payload]:
    """Levels `[price, size(, event_time)]` as `l2_data` updates: bids, then offers."""
    out = []
    for side, levels in (("bid", bids), ("offer", asks)):
        for lv in levels:
            out.append(level(side, lv[0], lv[1], lv[2] if len(lv) > 2 else default_time))
    return out


def trade_row(
    product_id: str, trade_id: int | str, price: str, size: str, ts_ns: int, side: str
) -> Payload:
    """One `market_trades` row. `side` is the **maker's** (BUY: a resting buy order was hit,
    the taker sold), as Coinbase reports it: the recording's SELL trades print at the ask."""
    return {
        "product_id": product_id,
        "trade_id": str(trade_id),
        "price": price,
        "size": size,
        "time": iso_us(ts_ns),
        "side": side,
    }


def ticker_row(
    product_id: str,
    price: Decimal,
    volume: Decimal,
    low: Decimal,
    high: Decimal,
    open24h: Decimal,
    bid: Sequence[str] | None,
    ask: Sequence[str] | None,
) -> Payload:
    """A `ticker` row (always whole: Coinbase sends no deltas)."""
    pct = (price - open24h) / open24h * 100 if open24h else Decimal(0)
    return {
        "type": "ticker",
        "product_id": product_id,
        "price": fmt(price),
        "volume_24_h": fmt(volume),
        "low_24_h": fmt(low),
        "high_24_h": fmt(high),
        "low_52_w": fmt(low),
        "high_52_w": fmt(high),
        "price_percent_chg_24_h": fmt(round(pct, 14)),
        "best_bid": bid[0] if bid else "",
        "best_ask": ask[0] if ask else "",
        "best_bid_quantity": bid[1] if bid else "",
        "best_ask_quantity": ask[1] if ask else "",
    }


def candle_row(product_id: str, start_s: int, o: str, h: str, low: str, c: str, v: str) -> Payload:
    """A `candles` row (websocket: `product_id` inside; REST rows have none)."""
    return {
        "start": str(start_s),
        "high": h,
        "low": low,
        "open": o,
        "close": c,
        "volume": v,
        "product_id": product_id,
    }


# --------------------------------------------------------------------------- REST


def rest_error(error_id: str, message: str) -> Payload:
    """Advanced Trade's error body; ccxt matches `error` against its exceptions table
    (`rate_limit_exceeded` -> RateLimitExceeded, `unauthorized` -> AuthenticationError)."""
    return {"error": error_id, "error_details": message, "message": message}


def product(
    product_id: str, base: str, quote: str, price_increment: str, base_increment: str
) -> Payload:
    """A `market/products` entry for a product the recording does not list."""
    return {
        "product_id": product_id,
        "price": "",
        "price_percentage_change_24h": "",
        "volume_24h": "",
        "volume_percentage_change_24h": "",
        "base_increment": base_increment,
        "quote_increment": price_increment,
        "quote_min_size": "1",
        "quote_max_size": "10000000",
        "base_min_size": base_increment,
        "base_max_size": "1000000",
        "base_name": base,
        "quote_name": quote,
        "watched": False,
        "is_disabled": False,
        "new": False,
        "status": "online",
        "cancel_only": False,
        "limit_only": False,
        "post_only": False,
        "trading_disabled": False,
        "auction_mode": False,
        "product_type": "SPOT",
        "quote_currency_id": quote,
        "base_currency_id": base,
        "fcm_trading_session_details": None,
        "mid_market_price": "",
        "alias": "",
        "alias_to": [],
        "base_display_symbol": base,
        "quote_display_symbol": quote,
        "view_only": False,
        "price_increment": price_increment,
        "display_name": product_id,
        "product_venue": "CBE",
    }


def products_body(entries: list[Payload]) -> Payload:
    pagination = {"prev_cursor": "", "next_cursor": "", "has_next": False, "has_prev": False}
    return {"products": entries, "num_products": len(entries), "pagination": pagination}


FIAT = frozenset({"USD", "EUR", "GBP", "CAD", "JPY", "AUD", "SGD", "CHF"})
"""Quote currencies listed as fiat by `/v2/currencies` (every other code is crypto)."""


def currencies(products: Iterable[Payload]) -> tuple[list[Payload], list[Payload]]:
    """`/v2/currencies` (fiat) and `/v2/currencies/crypto` rows for every code the products
    name (what ccxt's `fetch_currencies` reads during `load_markets`)."""
    names: dict[str, str] = {}
    for p in products:
        names.setdefault(str(p.get("base_currency_id")), str(p.get("base_name") or ""))
        names.setdefault(str(p.get("quote_currency_id")), str(p.get("quote_name") or ""))
    fiat, crypto = [], []
    for i, (code, name) in enumerate(sorted(names.items())):
        if code in FIAT:
            fiat.append({"id": code, "name": name or code, "min_size": "0.01"})
        else:
            crypto.append(
                {
                    "asset_id": f"00000000-0000-4000-8000-{i:012d}",
                    "code": code,
                    "name": name or code,
                    "color": "#0052FF",
                    "sort_index": str(i),
                    "exponent": "8",
                    "type": "crypto",
                    "address_regex": "^.+$",
                }
            )
    return fiat, crypto


__all__ = [
    "CANDLE_S",
    "CHANNELS",
    "DATA_CHANNELS",
    "FIAT",
    "GRANULARITY_S",
    "HEARTBEATS",
    "SUBSCRIBED_AS",
    "TRADES_SNAPSHOT",
    "Payload",
    "book_event",
    "book_updates",
    "candle_row",
    "currencies",
    "envelope",
    "envelope_parts",
    "error",
    "go_time",
    "heartbeat",
    "iso",
    "iso_us",
    "level",
    "now_ns",
    "only_product",
    "parse_iso",
    "product",
    "products_body",
    "products_of",
    "rest_error",
    "shift_iso",
    "subscriptions",
    "ticker_row",
    "trade_row",
]
