"""What the publisher adds to ``ccxt.pro.kraken`` (spot, websocket v2): book checksums, resync,
book depth, per-interval candles, ticker times.

- **Book checksums.** Kraken sends a CRC32 with every ``book`` snapshot and update, over the
  top 10 asks (low to high) then the top 10 bids (high to low), each price and quantity
  written with the pair's precision (``pair_decimals``, ``lot_decimals``), ``.`` and leading
  zeros removed. ccxt 4.5.90 has the check switched off (``watchOrderBook.checksum`` False:
  "not reliable"). :func:`checked_order_book` verifies it in front of ccxt's
  ``handle_order_book`` on a copy of each book (floats, as ccxt parses them, truncated to the
  subscribed depth as Kraken requires), so a wrong book never reaches ccxt's: on a mismatch
  the book is dropped (the pair's updates are ignored until a new snapshot), the watch raises
  ``ChecksumError`` (the worker counts a resync and publishes nothing of it), and the next
  watch unsubscribes the pair and subscribes it again on the same socket
  (:func:`resubscribing_watch_multi_helper`: Kraken refuses a second subscribe with
  ``Already subscribed``, so a plain resubscribe would never bring a snapshot).
- **Depth.** ccxt subscribes depth 10 when no limit is given; :func:`depth_watch_order_book`
  asks the smallest depth Kraken serves (10, 25, 100, 500, 1000) that holds the records'
  ``book_depth`` (:func:`client_options`).
- **Candles.** ccxt's ``watch_ohlcv`` keys its subscription by symbol only, so a second
  interval of a symbol was never subscribed; :func:`per_interval_watch_ohlcv` keys it by
  symbol and interval (the candles land in ``ohlcvs[symbol][interval]`` as before).
- **Tickers.** ccxt leaves a v2 ticker's time empty; the tap takes the row's ``timestamp``
  (:func:`ticker_time`; without one the record gets the receive time).
"""

from __future__ import annotations

import bisect
import calendar
import math
import time
import zlib
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

import aiohttp
from ccxt.base.errors import ChecksumError

from marketbus.models import Channel
from publisher.profile import ExchangeProfile, Tap

DEPTHS = (10, 25, 100, 500, 1000)
CHECKSUM_LEVELS = 10
BOOKS_KEY = "_marketbus_kraken_books"
STALE_KEY = "_marketbus_kraken_stale"
OPTION = "marketbusBookDepth"
"""ccxt option (under ``watchOrderBook``) with the depth the publisher subscribes."""


def book_limit(depth: int) -> int:
    """The smallest Kraken book depth that holds ``depth`` levels (at most 1,000)."""
    return next((d for d in DEPTHS if d >= depth), DEPTHS[-1])


def client_options(book_depth: int) -> dict[str, Any]:
    """Options for ``ccxt.pro.kraken`` (``publisher.ccxt_client``)."""
    return {"watchOrderBook": {OPTION: book_limit(book_depth)}}


def _digits(text: str) -> str:
    return text.replace(".", "").lstrip("0")


def checksum(asks: Iterable[tuple[str, str]], bids: Iterable[tuple[str, str]]) -> int:
    """Kraken's CRC32 over the top 10 asks then bids, (price, qty) as texts."""
    top = [*list(asks)[:CHECKSUM_LEVELS], *list(bids)[:CHECKSUM_LEVELS]]
    return zlib.crc32("".join(_digits(p) + _digits(q) for p, q in top).encode())


class _Side:
    """Price -> qty of one side; ``keys`` ascending (bids keep negated prices)."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.keys: list[float] = []
        self.levels: dict[float, float] = {}

    def apply(self, rows: Iterable[Any], depth: int) -> None:
        for row in rows:
            if not isinstance(row, dict):
                continue
            key, qty = self.sign * float(row["price"]), float(row["qty"])
            if qty == 0.0:
                if self.levels.pop(key, None) is not None:
                    del self.keys[bisect.bisect_left(self.keys, key)]
                continue
            if key not in self.levels:
                bisect.insort(self.keys, key)
            self.levels[key] = qty
        for key in self.keys[depth:]:  # Kraken sends no deletion for levels pushed past it
            del self.levels[key]
        del self.keys[depth:]

    def top(self, decimals: tuple[int, int]) -> list[tuple[str, str]]:
        pd, qd = decimals
        return [
            (f"{self.sign * k:.{pd}f}", f"{self.levels[k]:.{qd}f}")
            for k in self.keys[:CHECKSUM_LEVELS]
        ]


class CheckedBook:
    """One pair's book as Kraken describes it, kept to verify its checksums."""

    __slots__ = ("asks", "bids", "depth")

    def __init__(self, depth: int) -> None:
        self.depth = depth
        self.bids = _Side(-1.0)
        self.asks = _Side(1.0)

    def apply(self, row: dict[str, Any]) -> None:
        self.asks.apply(row.get("asks") or (), self.depth)
        self.bids.apply(row.get("bids") or (), self.depth)

    def checksum(self, decimals: tuple[int, int]) -> int:
        return checksum(self.asks.top(decimals), self.bids.top(decimals))


def decimals_of(market: Any) -> tuple[int, int]:
    """(price, qty) decimals of a ccxt Kraken market: Kraken's own, else from the tick sizes."""
    info = market.get("info") if isinstance(market, dict) else None
    if isinstance(info, dict) and "pair_decimals" in info and "lot_decimals" in info:
        return int(info["pair_decimals"]), int(info["lot_decimals"])
    precision = market.get("precision", {}) if isinstance(market, dict) else {}

    def places(tick: Any) -> int:
        return max(0, round(-math.log10(float(tick)))) if tick else 8

    return places(precision.get("price")), places(precision.get("amount"))


def _stale(client: Any) -> set[str]:
    stale: set[str] = client.__dict__.setdefault(STALE_KEY, set())
    return stale


def checked_order_book(original: Any) -> Callable[..., Any]:
    """A ``handle_order_book`` that verifies Kraken's checksum before ccxt applies a message."""

    def handle_order_book(self: Any, client: Any, message: Any) -> Any:
        data = message.get("data") if isinstance(message, dict) else None
        row = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
        symbol = row.get("symbol") if row is not None else None
        if row is None or not isinstance(symbol, str):
            return original(self, client, message)
        books: dict[str, CheckedBook] = client.__dict__.setdefault(BOOKS_KEY, {})
        message_hash = self.get_message_hash("orderbook", None, symbol)
        if message.get("type") == "snapshot":
            sub = client.subscriptions.get(message_hash)
            depth = sub.get("limit") if isinstance(sub, dict) else None
            books[symbol] = CheckedBook(depth if isinstance(depth, int) else 10)
            _stale(client).discard(symbol)
        book = books.get(symbol)
        if book is None:
            return None  # dropped after a mismatch: nothing until the new snapshot
        book.apply(row)
        expected = row.get("checksum")
        market = (self.markets or {}).get(symbol)
        if isinstance(expected, int) and market is not None:
            got = book.checksum(decimals_of(market))
            if got != expected:
                books.pop(symbol, None)
                self.orderbooks.pop(symbol, None)
                client.subscriptions.pop(message_hash, None)
                _stale(client).add(symbol)
                error = ChecksumError(f"kraken {symbol} book checksum {expected} != {got}")
                client.reject(error, message_hash)
                return None
        return original(self, client, message)

    return handle_order_book


def resubscribing_watch_multi_helper(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A ``watch_multi_helper`` that, for books, first unsubscribes the pairs a checksum
    mismatch dropped and then subscribes only the pairs not held (see the module)."""

    async def watch_multi_helper(
        self: Any,
        unified_name: str,
        channel_name: str,
        symbols: Any = None,
        subscription_args: Any = None,
        params: Any = None,
    ) -> Any:
        params = dict(params or {})
        if channel_name != "book":
            return await original(
                self, unified_name, channel_name, symbols, subscription_args, params
            )
        await self.load_markets()
        wanted = self.market_symbols(symbols, None, False, True, False)
        url = self.urls["api"]["ws"]["publicV2"]
        client = self.client(url)
        stale = sorted(_stale(client) & set(wanted))
        if stale:
            _stale(client).difference_update(stale)
            extra = {"depth": params["depth"]} if "depth" in params else {}
            request = {"method": "unsubscribe", "req_id": self.request_id(),
                       "params": {"channel": "book", "symbol": stale, **extra}}  # fmt: skip
            try:
                await client.send(request)
            except (ConnectionError, aiohttp.ClientError, OSError):
                pass  # the socket is gone: the subscribe fails too and the session reconnects
        hashes = [self.get_message_hash(unified_name, None, s) for s in wanted]
        missing = [s for s, h in zip(wanted, hashes, strict=True) if h not in client.subscriptions]
        request = {"method": "subscribe", "req_id": self.request_id(),
                   "params": {"channel": "book", "symbol": missing or wanted, **params}}  # fmt: skip
        return await self.watch_multiple(url, hashes, request, hashes, subscription_args)

    return watch_multi_helper


def depth_watch_order_book(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A ``watch_order_book_for_symbols`` that subscribes the publisher's depth by default."""

    async def watch_order_book_for_symbols(
        self: Any, symbols: Any, limit: Any = None, params: Any = None
    ) -> Any:
        if limit is None:
            limit = (self.options.get("watchOrderBook") or {}).get(OPTION)
        return await original(self, symbols, limit, params or {})

    return watch_order_book_for_symbols


def per_interval_watch_ohlcv(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """ccxt's ``watch_ohlcv`` with its subscription keyed by symbol and interval."""

    async def watch_ohlcv(
        self: Any, symbol: str, timeframe: str = "1m", since: Any = None, limit: Any = None,
        params: Any = None,
    ) -> Any:  # fmt: skip
        await self.load_markets()
        market = self.market(symbol)
        unified = market["symbol"]
        url = self.urls["api"]["ws"]["publicV2"]
        message_hash = self.get_message_hash("ohlcv", None, unified)
        interval = self.safe_value(self.timeframes, timeframe, timeframe)
        request = self.deep_extend(
            {"method": "subscribe", "req_id": self.request_id(),
             "params": {"channel": "ohlc", "symbol": [unified], "interval": interval}},
            params or {},
        )  # fmt: skip
        ohlcv = await self.watch(url, message_hash, request, f"{message_hash}#{timeframe}")
        if self.newUpdates:
            limit = ohlcv.getLimit(unified, limit)
        return self.filter_by_since_limit(ohlcv, since, limit, "timestamp", True)

    return watch_ohlcv


def rfc3339_ms(text: str) -> int | None:
    """Kraken's ``2023-09-25T07:49:37.708706Z`` -> epoch ms."""
    whole, _, frac = text.rstrip("Z").partition(".")
    try:
        secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    digits = (frac + "000")[:3]
    return secs * 1000 + int(digits) if digits.isdigit() else None


def ticker_time(handler_args: Sequence[Any]) -> int | None:
    """The ``timestamp`` (ms) of the ticker row ``handle_ticker(client, message)`` handles."""
    message = handler_args[1] if len(handler_args) > 1 else None
    data = message.get("data") if isinstance(message, dict) else None
    row = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else None
    ts = row.get("timestamp") if row is not None else None
    return rfc3339_ms(ts) if isinstance(ts, str) else None


OVERRIDES: dict[str, Callable[[Any], Any]] = {
    "handle_order_book": checked_order_book,
    "watch_multi_helper": resubscribing_watch_multi_helper,
    "watch_order_book_for_symbols": depth_watch_order_book,
    "watch_ohlcv": per_interval_watch_ohlcv,
}
"""Everything this module changes on ``ccxt.pro.kraken`` (``publisher.ccxt_client``)."""

PROFILE = ExchangeProfile(
    "kraken",
    taps=(  # websocket v2; parse_trade is REST's too: only its websocket calls are tapped
        Tap("parse_trade", Channel.TRADES, within="handle_trades"),
        Tap("safe_ticker", Channel.TICKER, within="handle_ticker", event_time=ticker_time),
    ),
    overrides=OVERRIDES,
    client_options=client_options,  # the book depth to subscribe (ccxt's default: 10 levels)
)

__all__ = [
    "DEPTHS",
    "OVERRIDES",
    "PROFILE",
    "CheckedBook",
    "book_limit",
    "checked_order_book",
    "checksum",
    "client_options",
    "decimals_of",
    "depth_watch_order_book",
    "per_interval_watch_ohlcv",
    "resubscribing_watch_multi_helper",
    "rfc3339_ms",
    "ticker_time",
]
