"""What only Binance USD-M futures has: its stream grammar and url categories, mark price and
liquidation frames, the premium index and open interest answers, perpetual exchangeInfo
entries. Pure. (What USD-M shares with spot, field differences included, is in
`fake_exchange.binance_frames`.)

Url categories: since 2025 Binance splits `fstream.binance.com` into `/public` (the
high-frequency book streams) and `/market` (everything else); CCXT 4.5.90 rewrites its
`ws.linear` url `.../ws` into `.../public/ws` for `depth`, `rpiDepth`, `bookTicker` and
`trade` and `.../market/ws` for the rest (`get_future_ws_category`). The fake serves the
same split and refuses a stream on the other category's url (real Binance does not document
what it does then; the fake is strict so a wrong route fails loudly). The legacy `/ws` url
serves every stream.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload

Category = Literal["public", "market"]
CATEGORIES: tuple[Category, ...] = ("public", "market")
"""USD-M's url categories (`/public/ws`, `/market/ws`)."""

FUNDING_PERIOD_MS = 8 * 3_600_000
"""Binance funds USD-M perpetuals every 8 hours (00:00, 08:00, 16:00 UTC) by default."""

OPEN_INTEREST = "openInterest"
"""The internal stream a synthetic source reports open interest on: REST-only on Binance (no
public stream), so no client can subscribe it; the market state keeps it for REST."""

_PUBLIC = re.compile(
    r"^(depth(5|10|20)?(@0ms|@100ms|@250ms|@500ms)?|rpiDepth@500ms|bookTicker|trade)$"
)
_MARKET = re.compile(
    r"^(aggTrade|ticker|miniTicker|markPrice(@1s)?|forceOrder"
    r"|kline_(1m|3m|5m|15m|30m|1h|2h|4h|6h|8h|12h|1d|3d|1w|1M))$"
)
_ALL_MARKET = re.compile(
    r"^!(ticker@arr|miniTicker@arr|bookTicker|markPrice@arr(@1s)?|forceOrder@arr)$"
)
_ALL_PUBLIC = frozenset({"!bookTicker"})


def category(channel: str) -> Category | None:
    """Which url category serves a channel ('depth@100ms' -> public); None: no such channel."""
    if _PUBLIC.match(channel):
        return "public"
    if _MARKET.match(channel):
        return "market"
    return None


def split_category(path: str) -> tuple[Category | None, str]:
    """A websocket url path's category and the rest ('/market/stream' -> ('market',
    '/stream')); (None, path) for the legacy urls without one (and for spot)."""
    for cat in CATEGORIES:
        if path.startswith(f"/{cat}/"):
            return cat, path.removeprefix(f"/{cat}")
    return None, path


def stream_ok(stream: str, known_symbol: Callable[[str], bool], on: Category | None = None) -> bool:
    """A USD-M stream name the fake serves on the `on` category's url (None: the legacy `/ws`,
    every category)."""
    if stream.startswith("!"):
        if not _ALL_MARKET.match(stream):
            return False
        cat: Category = "public" if stream in _ALL_PUBLIC else "market"
        return on is None or on == cat
    sym, channel = bf.split_stream(stream)
    found = category(channel)
    return bool(sym) and known_symbol(sym) and found is not None and on in (None, found)


def next_funding_ms(now_ms: int) -> int:
    """The next funding time after `now_ms` (the next multiple of 8 hours since the epoch)."""
    return now_ms - now_ms % FUNDING_PERIOD_MS + FUNDING_PERIOD_MS


def mark_price_update(
    sym_id: str,
    event_ms: int,
    mark: str,
    index: str,
    funding_rate: str,
    next_funding: int,
    settle: str | None = None,
) -> Payload:
    """`<s>@markPrice@1s` push frame: mark `p`, index `i`, estimated settle price `P`, funding
    rate `r` and next funding time `T`."""
    return {
        "e": "markPriceUpdate",
        "E": event_ms,
        "s": sym_id,
        "p": mark,
        "P": settle if settle is not None else index,
        "i": index,
        "r": funding_rate,
        "T": next_funding,
    }


def force_order(
    sym_id: str, event_ms: int, side: str, price: str, avg_price: str, qty: str
) -> Payload:
    """`<s>@forceOrder` push frame: a liquidation order, `S` its side (SELL: a long was
    liquidated), filled at once at `ap`."""
    return {
        "e": "forceOrder",
        "E": event_ms,
        "o": {
            "s": sym_id,
            "S": side,
            "o": "LIMIT",
            "f": "IOC",
            "q": qty,
            "p": price,
            "ap": avg_price,
            "X": "FILLED",
            "l": qty,
            "z": qty,
            "T": event_ms,
        },
    }


def open_interest_event(sym_id: str, event_ms: int, contracts: str) -> Payload:
    """The internal open-interest event (shaped like the REST answer, plus `E` for the clock)."""
    return {"symbol": sym_id, "openInterest": contracts, "time": event_ms, "E": event_ms}


def rest_open_interest(event: Payload) -> Payload:
    """`GET /fapi/v1/openInterest` body."""
    return {"openInterest": event["openInterest"], "symbol": event["symbol"], "time": event["time"]}


def rest_premium_index(frame: Payload, interest_rate: str = "0.00010000") -> Payload:
    """`GET /fapi/v1/premiumIndex` row from the last markPriceUpdate frame of a symbol."""
    return {
        "symbol": frame["s"],
        "markPrice": frame["p"],
        "indexPrice": frame["i"],
        "estimatedSettlePrice": frame["P"],
        "lastFundingRate": frame["r"],
        "interestRate": interest_rate,
        "nextFundingTime": frame["T"],
        "time": frame["E"],
    }


def exchange_info_symbol(sym_id: str, base: str, quote: str) -> Payload:
    """A USD-M perpetual's exchangeInfo entry for a symbol the recording does not have."""
    return {
        "symbol": sym_id,
        "pair": sym_id,
        "contractType": "PERPETUAL",
        "deliveryDate": 4133404800000,
        "onboardDate": 1569398400000,
        "status": "TRADING",
        "maintMarginPercent": "2.5000",
        "requiredMarginPercent": "5.0000",
        "baseAsset": base,
        "quoteAsset": quote,
        "marginAsset": quote,
        "pricePrecision": 8,
        "quantityPrecision": 8,
        "baseAssetPrecision": 8,
        "quotePrecision": 8,
        "underlyingType": "COIN",
        "underlyingSubType": [],
        "settlePlan": 0,
        "triggerProtect": "0.0500",
        "liquidationFee": "0.012500",
        "marketTakeBound": "0.05",
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.00000001",
                "maxPrice": "1000000",
                "tickSize": "0.00000001",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00000001",
                "maxQty": "9000000",
                "stepSize": "0.00000001",
            },
            {"filterType": "MIN_NOTIONAL", "notional": "5"},
        ],
        "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT"],
        "timeInForce": ["GTC", "IOC", "FOK", "GTX"],
    }


def unified_symbol(entry: Payload) -> str:
    """CCXT's unified symbol of an exchangeInfo entry: `BASE/QUOTE:SETTLE` for a perpetual,
    `BASE/QUOTE:SETTLE-YYMMDD` for a delivery contract, `BASE/QUOTE` for spot."""
    base, quote = entry["baseAsset"], entry["quoteAsset"]
    if "contractType" not in entry:
        return f"{base}/{quote}"
    settle = entry.get("marginAsset") or quote
    kind = entry.get("contractType")
    if kind in ("CURRENT_QUARTER", "NEXT_QUARTER", "CURRENT_MONTH", "NEXT_MONTH"):
        _, _, expiry = entry["symbol"].rpartition("_")
        return f"{base}/{quote}:{settle}-{expiry}"
    return f"{base}/{quote}:{settle}"


__all__ = [
    "CATEGORIES",
    "FUNDING_PERIOD_MS",
    "OPEN_INTEREST",
    "Category",
    "category",
    "exchange_info_symbol",
    "force_order",
    "mark_price_update",
    "next_funding_ms",
    "open_interest_event",
    "rest_open_interest",
    "rest_premium_index",
    "split_category",
    "stream_ok",
    "unified_symbol",
]
