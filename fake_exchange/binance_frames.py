"""Pure builders of Binance payloads, spot and USD-M futures.

Everything the fake writes goes through these functions, so the shapes CCXT's parsers meet are
defined in one place and can be checked without sockets. Prices and sizes are decimal strings
with 8 places, as Binance sends them.

The two markets share one frame family; where USD-M differs (`futures=True`) it is here, field
by field: aggTrade without `M`; bookTicker with `e`, `T`, `E`; depth diffs with `T` and `pu`
(the previous diff's `u`); 24hrTicker without best bid/ask or `x`; REST rows without
`isBestMatch`/`M`. What only USD-M has (mark price, liquidations, premium index, open
interest) is in `fake_exchange.usdm`.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

Payload = dict[str, Any]

_Q8 = Decimal("0.00000001")
_Q3 = Decimal("0.001")
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Venue:
    """Which of Binance's market APIs the fake speaks: one engine, these differences."""

    exchange: str
    """CCXT's id of the adapter that talks to it."""
    futures: bool
    rest_prefix: str
    """Where the public REST routes live."""
    recording: str
    """The bundled recording (in `fake_exchange/data`)."""

    @property
    def name(self) -> str:
        return "usdm" if self.futures else "spot"


SPOT = Venue("binance", False, "/api/v3", "BINANCE.jsonl")
USDM = Venue("binanceusdm", True, "/fapi/v1", "BINANCE_FUTURES.jsonl")
VENUES = {v.exchange: v for v in (SPOT, USDM)}


def fmt(value: Decimal, places: int = 8) -> str:
    """Format like Binance: fixed point, `places` decimals, no exponent."""
    quantum = _Q8 if places == 8 else Decimal(1).scaleb(-places)
    return f"{value.quantize(quantum):f}"


def symbol_id(symbol: str) -> str:
    """'BTC/USDT', 'BTC/USDT:USDT' (a perpetual), 'btcusdt' or 'BTCUSDT' -> 'BTCUSDT'."""
    return symbol.partition(":")[0].replace("/", "").replace("-", "").upper()


def stream_name(sym_id: str, channel: str) -> str:
    """Binance stream names are the lowercase id, '@', then the channel: 'btcusdt@aggTrade'."""
    return f"{sym_id.lower()}@{channel}"


def split_stream(stream: str) -> tuple[str, str]:
    """'btcusdt@depth@100ms' -> ('BTCUSDT', 'depth@100ms')."""
    sym, _, channel = stream.partition("@")
    return sym.upper(), channel


def agg_trade(
    sym_id: str,
    agg_id: int,
    price: str,
    qty: str,
    first_id: int,
    last_id: int,
    trade_ms: int,
    event_ms: int,
    buyer_maker: bool,
    *,
    futures: bool = False,
) -> Payload:
    """`<s>@aggTrade` push frame (USD-M has no `M`)."""
    frame: Payload = {
        "e": "aggTrade",
        "E": event_ms,
        "s": sym_id,
        "a": agg_id,
        "p": price,
        "q": qty,
        "f": first_id,
        "l": last_id,
        "T": trade_ms,
        "m": buyer_maker,
    }
    if not futures:
        frame["M"] = True
    return frame


def trade(
    sym_id: str,
    trade_id: int,
    price: str,
    qty: str,
    trade_ms: int,
    event_ms: int,
    buyer_maker: bool,
    *,
    futures: bool = False,
) -> Payload:
    """`<s>@trade` push frame (order ids omitted: Binance dropped b/a from this stream in 2024;
    USD-M: `X` the order type, no `M`)."""
    if futures:
        return {
            "e": "trade",
            "E": event_ms,
            "T": trade_ms,
            "s": sym_id,
            "t": trade_id,
            "p": price,
            "q": qty,
            "X": "MARKET",
            "m": buyer_maker,
        }
    return {
        "e": "trade",
        "E": event_ms,
        "s": sym_id,
        "t": trade_id,
        "p": price,
        "q": qty,
        "T": trade_ms,
        "m": buyer_maker,
        "M": True,
    }


def book_ticker(
    sym_id: str,
    update_id: int,
    bid: str,
    bid_qty: str,
    ask: str,
    ask_qty: str,
    *,
    event_ms: int | None = None,
) -> Payload:
    """`<s>@bookTicker` push frame: spot sends no event type and no event time; USD-M (with
    `event_ms`) sends `e`, the transaction time `T` and `E`."""
    frame: Payload = {"u": update_id, "s": sym_id, "b": bid, "B": bid_qty, "a": ask, "A": ask_qty}
    if event_ms is None:
        return frame
    return {"e": "bookTicker", **frame, "T": event_ms, "E": event_ms}


def depth_update(
    sym_id: str,
    first_update: int,
    final_update: int,
    bids: list[list[str]],
    asks: list[list[str]],
    event_ms: int,
    *,
    prev_final: int | None = None,
) -> Payload:
    """`<s>@depth@100ms` diff frame. USD-M (with `prev_final`): also the transaction time `T`
    and `pu`, the previous diff's `u`: its ids are not consecutive, `pu` chains the diffs."""
    if prev_final is not None:
        return {
            "e": "depthUpdate",
            "E": event_ms,
            "T": event_ms,
            "s": sym_id,
            "U": first_update,
            "u": final_update,
            "pu": prev_final,
            "b": bids,
            "a": asks,
        }
    return {
        "e": "depthUpdate",
        "E": event_ms,
        "s": sym_id,
        "U": first_update,
        "u": final_update,
        "b": bids,
        "a": asks,
    }


def kline(
    sym_id: str,
    interval: str,
    event_ms: int,
    *,
    open_ms: int,
    close_ms: int,
    first_id: int,
    last_id: int,
    open_: str,
    close: str,
    high: str,
    low: str,
    volume: str,
    count: int,
    final: bool,
    quote_volume: str,
    taker_base: str,
    taker_quote: str,
) -> Payload:
    """`<s>@kline_<interval>` push frame; `x` marks the last frame of an interval."""
    return {
        "e": "kline",
        "E": event_ms,
        "s": sym_id,
        "k": {
            "t": open_ms,
            "T": close_ms,
            "s": sym_id,
            "i": interval,
            "f": first_id,
            "L": last_id,
            "o": open_,
            "c": close,
            "h": high,
            "l": low,
            "v": volume,
            "n": count,
            "x": final,
            "q": quote_volume,
            "V": taker_base,
            "Q": taker_quote,
            "B": "0",
        },
    }


def rest_kline(k: Payload) -> list[Any]:
    """`GET /api/v3/klines` row from the `k` object of a kline push frame."""
    return [
        k["t"],
        k["o"],
        k["h"],
        k["l"],
        k["c"],
        k["v"],
        k["T"],
        k["q"],
        k["n"],
        k["V"],
        k["Q"],
        "0",
    ]


def ticker_24hr(
    sym_id: str,
    event_ms: int,
    *,
    last: Decimal,
    last_qty: Decimal,
    open_: Decimal,
    high: Decimal,
    low: Decimal,
    base_volume: Decimal,
    quote_volume: Decimal,
    bid: Decimal,
    bid_qty: Decimal,
    ask: Decimal,
    ask_qty: Decimal,
    first_trade: int,
    last_trade: int,
    count: int,
    futures: bool = False,
) -> Payload:
    """`<s>@ticker` push frame (e=24hrTicker); change, percent and vwap are computed here.
    USD-M's has no best bid/ask (`b`, `B`, `a`, `A`) and no `x`."""
    change = last - open_
    percent = (change * 100 / open_) if open_ else Decimal(0)
    vwap = (quote_volume / base_volume) if base_volume else last
    if futures:
        return {
            "e": "24hrTicker",
            "E": event_ms,
            "s": sym_id,
            "p": fmt(change),
            "P": fmt(percent, 3),
            "w": fmt(vwap),
            "c": fmt(last),
            "Q": fmt(last_qty),
            "o": fmt(open_),
            "h": fmt(high),
            "l": fmt(low),
            "v": fmt(base_volume),
            "q": fmt(quote_volume),
            "O": event_ms - DAY_MS,
            "C": event_ms,
            "F": first_trade,
            "L": last_trade,
            "n": count,
        }
    return {
        "e": "24hrTicker",
        "E": event_ms,
        "s": sym_id,
        "p": fmt(change),
        "P": fmt(percent, 3),
        "w": fmt(vwap),
        "x": fmt(open_),
        "c": fmt(last),
        "Q": fmt(last_qty),
        "b": fmt(bid),
        "B": fmt(bid_qty),
        "a": fmt(ask),
        "A": fmt(ask_qty),
        "o": fmt(open_),
        "h": fmt(high),
        "l": fmt(low),
        "v": fmt(base_volume),
        "q": fmt(quote_volume),
        "O": event_ms - DAY_MS,
        "C": event_ms,
        "F": first_trade,
        "L": last_trade,
        "n": count,
    }


def mini_ticker(sym_id: str, event_ms: int, full: Payload) -> Payload:
    """`<s>@miniTicker` push frame, cut from a full 24hrTicker so both always agree."""
    return {
        "e": "24hrMiniTicker",
        "E": event_ms,
        "s": sym_id,
        "c": full["c"],
        "o": full["o"],
        "h": full["h"],
        "l": full["l"],
        "v": full["v"],
        "q": full["q"],
    }


def rest_agg_trade(frame: Payload) -> Payload:
    """`GET /api/v3/aggTrades` (`/fapi/v1/aggTrades`) row from an aggTrade push frame (`M`
    where the frame has it: spot)."""
    row = {
        "a": frame["a"],
        "p": frame["p"],
        "q": frame["q"],
        "f": frame["f"],
        "l": frame["l"],
        "T": frame["T"],
        "m": frame["m"],
    }
    if "M" in frame:
        row["M"] = frame["M"]
    return row


def rest_trade(
    trade_id: int,
    price: str,
    qty: str,
    trade_ms: int,
    buyer_maker: bool,
    *,
    futures: bool = False,
) -> Payload:
    """`GET /api/v3/trades` (and `historicalTrades`) row; quoteQty is price * qty, 8 places.
    USD-M's has no `isBestMatch`."""
    row: Payload = {
        "id": trade_id,
        "price": price,
        "qty": qty,
        "quoteQty": fmt(Decimal(price) * Decimal(qty)),
        "time": trade_ms,
        "isBuyerMaker": buyer_maker,
    }
    if not futures:
        row["isBestMatch"] = True
    return row


_REST_TICKER_KEYS = (
    ("symbol", "s"),
    ("priceChange", "p"),
    ("priceChangePercent", "P"),
    ("weightedAvgPrice", "w"),
    ("prevClosePrice", "x"),
    ("lastPrice", "c"),
    ("lastQty", "Q"),
    ("bidPrice", "b"),
    ("bidQty", "B"),
    ("askPrice", "a"),
    ("askQty", "A"),
    ("openPrice", "o"),
    ("highPrice", "h"),
    ("lowPrice", "l"),
    ("volume", "v"),
    ("quoteVolume", "q"),
    ("openTime", "O"),
    ("closeTime", "C"),
    ("firstId", "F"),
    ("lastId", "L"),
    ("count", "n"),
)


def rest_ticker(frame: Payload) -> Payload:
    """`GET /api/v3/ticker/24hr` (`/fapi/v1/ticker/24hr`) body from the last 24hrTicker push
    frame of a symbol: the same fields, so USD-M's has no bid/ask either."""
    return {rest: frame[key] for rest, key in _REST_TICKER_KEYS if key in frame}


def exchange_info_symbol(sym_id: str, base: str, quote: str) -> Payload:
    """A spot exchangeInfo entry for a symbol the recording does not have (synthetic names)."""
    return {
        "symbol": sym_id,
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET"],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": "0.00000001",
                "maxPrice": "1000000.00000000",
                "tickSize": "0.00000001",
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": "0.00000001",
                "maxQty": "9000000.00000000",
                "stepSize": "0.00000001",
            },
        ],
        "permissions": ["SPOT"],
    }


def error_body(code: int, msg: str) -> Payload:
    """Binance REST error body: {"code": -1121, "msg": "Invalid symbol."}."""
    return {"code": code, "msg": msg}


def ws_error(code: int, msg: str, request_id: Any) -> Payload:
    """Binance websocket control error: {"error": {"code": 2, "msg": ...}, "id": N}."""
    return {"error": {"code": code, "msg": msg}, "id": request_id}
