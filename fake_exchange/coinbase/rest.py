"""Coinbase REST answered from what the fake published, and its faults.

What `load_markets` calls without API keys (ccxt 4.5.90: `/v2/currencies`,
`/v2/currencies/crypto` and `/v2/exchange-rates` for `fetch_currencies`, then
`/api/v3/brokerage/market/products` and the same with `product_type=FUTURE`, answered with no
products), the public Advanced Trade market endpoints a backfill and the REST polling use
(`products/{id}/ticker`: trades, newest first; `products/{id}/candles`; `product_book`), and the
two clocks. Errors are Advanced Trade's `{"error", "error_details", "message"}` bodies, which
ccxt maps by `error` (`INVALID_ARGUMENT` -> BadRequest, `NOT_FOUND` -> ExchangeError).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from fake_exchange.coinbase import frames as cf
from fake_exchange.coinbase.frames import Payload
from fake_exchange.coinbase.market import CoinbaseMarket
from fake_exchange.faults import Faults, HttpFailure
from fake_exchange.okx.frames import fmt
from fake_exchange.push_server import json_response

API = "/api/v3/brokerage"
TRADES_LIMITS = (100, 1000)
"""`products/{id}/ticker` trades: (default, max) per request."""
BOOK_LIMITS = (50, 5000)
"""`product_book` levels a side: (default, max); the fake's default (Coinbase's is not
documented; its full book has tens of thousands of levels)."""
MAX_CANDLES = 350


class _Refused(Exception):
    def __init__(self, status: int, error_id: str, msg: str) -> None:
        self.response = json_response(cf.rest_error(error_id, msg), status)


def _int(request: web.Request, name: str, default: int | None = None) -> int | None:
    raw = request.query.get(name, "")
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError as e:
        raise _Refused(400, "INVALID_ARGUMENT", f"{name} must be an integer, not {raw!r}") from e


class CoinbaseRestApi:
    """The REST routes, read from the market the server owns (`clock`: epoch ns)."""

    def __init__(self, market: Callable[[], CoinbaseMarket], clock: Callable[[], int]) -> None:
        self._market = market
        self._clock = clock

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{API}/market/products", self._answer(self.products)),
            web.get(f"{API}/market/products/{{product_id}}", self._answer(self.product)),
            web.get(f"{API}/market/products/{{product_id}}/ticker", self._answer(self.trades)),
            web.get(f"{API}/market/products/{{product_id}}/candles", self._answer(self.candles)),
            web.get(f"{API}/market/product_book", self._answer(self.product_book)),
            web.get(f"{API}/time", self._answer(self.time)),
            web.get("/v2/time", self._answer(self.v2_time)),
            web.get("/v2/currencies", self._answer(self.fiat)),
            web.get("/v2/currencies/crypto", self._answer(self.crypto)),
            web.get("/v2/exchange-rates", self._answer(self.exchange_rates)),
        ]

    @staticmethod
    def _answer(
        build: Callable[[web.Request], Payload],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            try:
                return json_response(build(request))
            except _Refused as e:
                return e.response

        return handler

    def _product_id(self, request: web.Request, key: str = "product_id") -> str:
        pid = request.match_info.get(key) or request.query.get(key, "")
        if pid not in self._market().ids:
            raise _Refused(404, "NOT_FOUND", f"ProductID {pid} could not be found")
        return pid

    def products(self, request: web.Request) -> Payload:
        """Every listed product in one page; `product_type=FUTURE`: none (spot only)."""
        if request.query.get("product_type", "SPOT").upper() != "SPOT":
            return cf.products_body([])
        entries = self._market().products
        wanted = request.query.getall("product_ids", [])
        if wanted:
            entries = [p for p in entries if p["product_id"] in set(wanted)]
        return cf.products_body(entries)

    def product(self, request: web.Request) -> Payload:
        pid = self._product_id(request)
        return next(p for p in self._market().products if p["product_id"] == pid)

    def trades(self, request: web.Request) -> Payload:
        """The latest `limit` trades within `start`..`end` (epoch seconds), newest first."""
        pid = self._product_id(request)
        limit = _int(request, "limit", TRADES_LIMITS[0]) or TRADES_LIMITS[0]
        limit = max(1, min(limit, TRADES_LIMITS[1]))
        market = self._market()
        rows = market.trades_between(pid, limit, _int(request, "start"), _int(request, "end"))
        bid, ask = market.book(pid).best()
        return {
            "trades": rows,
            "best_bid": bid[0] if bid else "",
            "best_ask": ask[0] if ask else "",
        }

    def candles(self, request: web.Request) -> Payload:
        pid = self._product_id(request)
        granularity = request.query.get("granularity", "")
        seconds = cf.GRANULARITY_S.get(granularity)
        if seconds is None:
            raise _Refused(400, "INVALID_ARGUMENT", f"unknown granularity {granularity!r}")
        start, end = _int(request, "start"), _int(request, "end")
        if start is None or end is None:
            raise _Refused(400, "INVALID_ARGUMENT", "start and end are required")
        limit = _int(request, "limit", MAX_CANDLES) or MAX_CANDLES
        if (end - start) // seconds > MAX_CANDLES or limit > MAX_CANDLES:
            msg = f"number of candles requested should be less than {MAX_CANDLES}"
            raise _Refused(400, "INVALID_ARGUMENT", msg)
        now_ms = self._clock() // 1_000_000
        rows = self._market().candles_between(pid, seconds, start, end, now_ms)
        return {"candles": rows[:limit]}

    def product_book(self, request: web.Request) -> Payload:
        pid = self._product_id(request)
        limit = _int(request, "limit", BOOK_LIMITS[0]) or BOOK_LIMITS[0]
        return self._market().product_book(pid, max(1, min(limit, BOOK_LIMITS[1])), self._clock())

    def time(self, request: web.Request) -> Payload:
        ns = self._clock()
        return {
            "iso": cf.iso(ns - ns % 1_000_000_000),
            "epochSeconds": str(ns // 1_000_000_000),
            "epochMillis": str(ns // 1_000_000),
        }

    def v2_time(self, request: web.Request) -> Payload:
        ns = self._clock()
        return {"data": {"iso": cf.iso(ns - ns % 1_000_000_000), "epoch": ns // 1_000_000_000}}

    def fiat(self, request: web.Request) -> Payload:
        return {"data": cf.currencies(self._market().products)[0]}

    def crypto(self, request: web.Request) -> Payload:
        return {"data": cf.currencies(self._market().products)[1]}

    def exchange_rates(self, request: web.Request) -> Payload:
        """Units of each currency one US dollar buys, from the USD products' prices."""
        base = request.query.get("currency", "USD")
        rates = {base: "1"}
        market = self._market()
        for p in market.products:
            if p.get("quote_currency_id") != base:
                continue
            hist = market.trades.get(p["product_id"])
            raw = hist[-1]["price"] if hist else p.get("price") or ""
            try:
                price = Decimal(raw)
            except InvalidOperation:
                continue
            if price > 0:
                rates[p["base_currency_id"]] = fmt(round(1 / price, 12))
        return {"data": {"currency": base, "rates": rates}}


def coinbase_failure(failure: HttpFailure) -> web.Response:
    """A planned REST failure with Coinbase's body for its status (the Faults body is
    Binance's): 429 -> `rate_limit_exceeded` (ccxt: RateLimitExceeded), 5xx -> `INTERNAL`
    (ExchangeError), 401/403 -> `unauthorized` (AuthenticationError)."""
    status = failure.status
    if status in (418, 429):
        error_id, msg = "rate_limit_exceeded", "Too many requests"
    elif status >= 500:
        error_id, msg = "INTERNAL", "Internal server error"
    elif status in (401, 403):
        error_id, msg = "unauthorized", "Unauthorized"
    else:
        error_id, msg = "INVALID_ARGUMENT", "bad request"
    return json_response(cf.rest_error(error_id, msg), status, failure.headers)


def coinbase_fault_middleware(
    faults: Faults, websocket_enabled: Callable[[], bool], ws_path: str = "/"
) -> Middleware:
    """Refusals, a disabled websocket and planned REST errors first; Coinbase JSON for 404s.

    The websocket is the root path (`wss://advanced-trade-ws.coinbase.com`), so it is told
    apart by its exact path, not a prefix as the engine's middleware does."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_ws = request.path == ws_path
        if faults.refusing() or (is_ws and not websocket_enabled()):
            return web.Response(status=503, text="503 Service Unavailable")
        if not is_ws:
            planned = faults.take_http_error()
            if planned is not None:
                return coinbase_failure(planned)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return json_response(cf.rest_error("NOT_FOUND", "Not Found"), 404)
        except web.HTTPMethodNotAllowed:
            return json_response(cf.rest_error("INVALID_ARGUMENT", "method not allowed"), 405)

    return middleware


__all__ = ["CoinbaseRestApi", "coinbase_failure", "coinbase_fault_middleware"]
