"""Bybit v5 REST (`/v5/market/...`) answered from what the fake published, and its faults.

What `load_markets` needs (`instruments-info` per category, the PreLaunch page empty), what a
backfill needs (`recent-trade`: the latest trades only, newest first, as Bybit: there is no
paging by id or time), and the REST forms of the websocket state (`tickers`, `orderbook`,
`time`). Errors come with HTTP 200 and Bybit's `retCode`, which ccxt maps through its table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.bybit import frames as yf
from fake_exchange.bybit.market import BybitMarket
from fake_exchange.faults import Faults, HttpFailure
from fake_exchange.push_server import fault_middleware, json_response

TRADE_LIMITS = {"spot": (60, 60), "linear": (500, 1000)}
"""`recent-trade` (default, max) rows per category."""
BOOK_LIMITS = {"spot": (1, 200), "linear": (25, 500)}


class _BadParam(Exception):
    def __init__(self, msg: str) -> None:
        self.response = json_response(yf.rest_error(10001, msg))


def _limit(request: web.Request, limits: tuple[int, int]) -> int:
    raw = request.query.get("limit", "")
    try:
        value = int(raw) if raw else limits[0]
    except ValueError as e:
        raise _BadParam("params error: limit invalid") from e
    return max(1, min(value, limits[1]))


class BybitRestApi:
    """The `/v5/market/*` routes, read from the market the server owns."""

    def __init__(self, market: Callable[[], BybitMarket]) -> None:
        self._market = market

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v5/market/time", self.server_time),
            web.get("/v5/market/instruments-info", self._answer(self.instruments)),
            web.get("/v5/market/recent-trade", self._answer(self.recent_trades)),
            web.get("/v5/market/tickers", self._answer(self.tickers)),
            web.get("/v5/market/orderbook", self._answer(self.orderbook)),
        ]

    @staticmethod
    def _answer(
        build: Callable[[web.Request], yf.Payload],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            try:
                return json_response(yf.rest_ok(build(request)))
            except _BadParam as e:
                return e.response

        return handler

    def _category(self, request: web.Request) -> str:
        category = request.query.get("category", "")
        if category not in self._market().symbols:
            raise _BadParam("Illegal category")
        return category

    def _symbol(self, request: web.Request, category: str) -> str:
        symbol = request.query.get("symbol", "")
        if symbol not in self._market().symbols[category]:
            raise _BadParam("params error: symbol invalid")
        return symbol

    async def server_time(self, request: web.Request) -> web.Response:
        ns = time.time_ns()
        result = {"timeSecond": str(ns // 10**9), "timeNano": str(ns)}
        return json_response(yf.rest_ok(result))

    def instruments(self, request: web.Request) -> yf.Payload:
        """Every entry in one page (nextPageCursor empty); the PreLaunch list is empty."""
        category = self._category(request)
        entries = self._market().instruments[category]
        if request.query.get("status", "Trading") != "Trading":
            entries = []
        wanted = request.query.get("symbol")
        if wanted:
            entries = [e for e in entries if e["symbol"] == wanted]
        return {"category": category, "list": entries, "nextPageCursor": ""}

    def recent_trades(self, request: web.Request) -> yf.Payload:
        category = self._category(request)
        symbol = self._symbol(request, category)
        limit = _limit(request, TRADE_LIMITS[category])
        hist = self._market().trades.get((category, symbol), ())
        rows = [yf.rest_trade(category, t) for t in list(hist)[::-1][:limit]]
        return {"category": category, "list": rows}

    def tickers(self, request: web.Request) -> yf.Payload:
        category = self._category(request)
        market = self._market()
        if request.query.get("symbol"):
            symbols = [self._symbol(request, category)]
        else:
            symbols = sorted(s for c, s in market.tickers if c == category)
        return {"category": category, "list": [market.ticker(category, s) for s in symbols]}

    def orderbook(self, request: web.Request) -> yf.Payload:
        category = self._category(request)
        symbol = self._symbol(request, category)
        limit = _limit(request, BOOK_LIMITS[category])
        market = self._market()
        book = market.book(category, symbol)
        return {
            "s": symbol,
            "b": book.bids(limit),
            "a": book.asks(limit),
            "ts": book.ts_ms,
            "u": book.seq_id,
            "seq": market.book_seq.get((category, symbol), book.seq_id),
            "cts": book.ts_ms,
        }


def bybit_failure(failure: HttpFailure) -> web.Response:
    """A planned REST failure with Bybit's body for its status (the Faults body is Binance's)."""
    status = failure.status
    if status in (418, 429):
        code, msg = 10006, "Too many visits!"
    elif status >= 500:
        code, msg = 10016, "System error. Please try again later."
    elif status in (401, 403):
        code, msg = 10003, "API key is invalid."
    else:
        code, msg = 10001, "params error"
    return json_response(yf.rest_error(code, msg), status, failure.headers)


def bybit_fault_middleware(faults: Faults, websocket_enabled: Callable[[], bool]) -> Middleware:
    """Refusals, a disabled websocket and planned REST errors first; Bybit JSON for 404s."""
    return fault_middleware(
        faults,
        websocket_enabled,
        bybit_failure,
        lambda: json_response(yf.rest_error(10001, "path not found"), 404),
        lambda: json_response(yf.rest_error(10001, "method not allowed"), 405),
        ("/v5/public/",),
    )


__all__ = ["BybitRestApi", "bybit_failure", "bybit_fault_middleware"]
