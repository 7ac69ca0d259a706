"""OKX v5 REST (`/api/v5/...`) answered from what the fake published, and its fault middleware.

`OkxMarket` (module `market`) mirrors every published frame (books, trades, last tickers), so a
REST-polling client sees the same market as a websocket one: `market/books` is the live book,
`market/trades` the trades sent (newest first, as OKX), `market/candles` built from those
trades. Bodies and HTTP statuses follow OKX's error table (51001 "Instrument ID does not exist"
comes with HTTP 200; 50011 with 429), so CCXT maps them through its real error table.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.faults import Faults, HttpFailure
from fake_exchange.okx import frames as of
from fake_exchange.okx.market import TRADE_HISTORY, OkxMarket
from fake_exchange.push_server import fault_middleware, json_response

# --------------------------------------------------------------------------- responses


def _error(status: int, code: str, msg: str) -> web.Response:
    return json_response(of.error_body(code, msg), status)


def _now_ms() -> int:
    return int(time.time() * 1000)


class _BadParam(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


def _int(
    request: web.Request, name: str, default: int | None, cap: int | None = None
) -> int | None:
    raw = request.query.get(name, "")
    if raw == "":
        return default
    try:
        value = int(raw)
    except ValueError as e:
        raise _BadParam(_error(400, "51000", f"Parameter {name} error")) from e
    return min(value, cap) if cap is not None else value


class OkxRestApi:
    """The `/api/v5/*` routes, read from the market the server owns."""

    def __init__(self, market: Callable[[], OkxMarket]) -> None:
        self._market = market

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v5/public/time", self.server_time),
            web.get("/api/v5/public/instruments", self.instruments),
            web.get("/api/v5/market/tickers", self.tickers),
            web.get("/api/v5/market/ticker", self.ticker),
            web.get("/api/v5/market/trades", self.trades),
            web.get("/api/v5/market/history-trades", self.history_trades),
            web.get("/api/v5/market/books", self.books),
            web.get("/api/v5/market/books-full", self.books_full),
            web.get("/api/v5/market/candles", self.candles),
            web.get("/api/v5/market/history-candles", self.history_candles),
        ]

    def _inst(self, request: web.Request) -> str:
        inst = request.query.get("instId", "")
        if not inst:
            raise _BadParam(_error(400, "50014", "Parameter instId can not be empty."))
        if inst not in self._market().inst_ids:
            # OKX answers an unknown instrument with HTTP 200 and code 51001
            raise _BadParam(_error(200, "51001", "Instrument ID does not exist"))
        return inst

    async def server_time(self, request: web.Request) -> web.Response:
        return json_response(of.rest_ok([{"ts": str(_now_ms())}]))

    async def instruments(self, request: web.Request) -> web.Response:
        inst_type = request.query.get("instType", "")
        if not inst_type:
            return _error(400, "50014", "Parameter instType can not be empty.")
        if inst_type not in ("SPOT", "MARGIN", "SWAP", "FUTURES", "OPTION"):
            return _error(400, "51000", "Parameter instType error")
        entries = self._market().instruments.get(inst_type, [])
        for key in ("uly", "instFamily", "instId"):
            wanted = request.query.get(key)
            if wanted:
                entries = [e for e in entries if e.get(key) == wanted]
        return json_response(of.rest_ok(entries))

    async def tickers(self, request: web.Request) -> web.Response:
        inst_type = request.query.get("instType", "")
        if not inst_type:
            return _error(400, "50014", "Parameter instType can not be empty.")
        market, now = self._market(), _now_ms()
        rows = [
            market.ticker(e["instId"], now)
            for e in market.instruments.get(inst_type, [])
            if market.has_data(e["instId"])
        ]
        return json_response(of.rest_ok(rows))

    async def ticker(self, request: web.Request) -> web.Response:
        try:
            inst = self._inst(request)
        except _BadParam as e:
            return e.response
        return json_response(of.rest_ok([self._market().ticker(inst, _now_ms())]))

    async def trades(self, request: web.Request) -> web.Response:
        """Newest first, `limit` default 100, max 500."""
        try:
            inst = self._inst(request)
            limit = _int(request, "limit", 100, 500) or 100
        except _BadParam as e:
            return e.response
        hist = list(self._market().trades.get(inst, ()))
        return json_response(of.rest_ok(hist[::-1][:limit]))

    async def history_trades(self, request: web.Request) -> web.Response:
        """`type` 1: after/before are tradeIds (default), 2: timestamps; newest first, max 100."""
        try:
            inst = self._inst(request)
            limit = _int(request, "limit", 100, 100) or 100
            after = _int(request, "after", None)
            before = _int(request, "before", None)
        except _BadParam as e:
            return e.response
        field = "ts" if request.query.get("type") == "2" else "tradeId"
        rows = [
            t
            for t in reversed(self._market().trades.get(inst, ()))
            if (after is None or int(t[field]) < after)
            and (before is None or int(t[field]) > before)
        ]
        return json_response(of.rest_ok(rows[:limit]))

    async def books(self, request: web.Request) -> web.Response:
        return self._books(request, 400)

    async def books_full(self, request: web.Request) -> web.Response:
        return self._books(request, 5000)

    def _books(self, request: web.Request, cap: int) -> web.Response:
        try:
            inst = self._inst(request)
            depth = _int(request, "sz", 1, cap) or 1
        except _BadParam as e:
            return e.response
        book = self._market().book(inst)
        row = {
            "asks": book.asks(depth),
            "bids": book.bids(depth),
            "ts": str(book.ts_ms or _now_ms()),
        }
        return json_response(of.rest_ok([row]))

    async def candles(self, request: web.Request) -> web.Response:
        return self._candles(request, 300)

    async def history_candles(self, request: web.Request) -> web.Response:
        return self._candles(request, 100)

    def _candles(self, request: web.Request, cap: int) -> web.Response:
        """Built from the trades sent; `after`/`before` are exclusive bounds on the open time."""
        try:
            inst = self._inst(request)
            limit = _int(request, "limit", 100, cap) or 100
            after = _int(request, "after", None)
            before = _int(request, "before", None)
        except _BadParam as e:
            return e.response
        bar = request.query.get("bar", "1m")
        try:
            rows = of.candles_from_trades(self._market().trades.get(inst, ()), bar, _now_ms())
        except ValueError:
            return _error(400, "51000", "Parameter bar error")
        rows = [
            r
            for r in rows
            if (after is None or int(r[0]) < after) and (before is None or int(r[0]) > before)
        ]
        return json_response(of.rest_ok(rows[:limit]))


# --------------------------------------------------------------------------- faults


def okx_failure(failure: HttpFailure) -> web.Response:
    """A planned REST failure with OKX's body for its status (the Faults body is Binance's)."""
    status = failure.status
    if status in (418, 429):
        code, msg = "50011", "Too Many Requests"
    elif status == 503:
        code, msg = "50001", "Service temporarily unavailable. Please try again later."
    elif status >= 500:
        code, msg = "50026", "System error. Try again later"
    elif status in (401, 403):
        code, msg = "50111", "Invalid OK-ACCESS-KEY."
    else:
        code, msg = "51000", "Parameter error"
    return json_response(of.error_body(code, msg), status, failure.headers)


def okx_fault_middleware(faults: Faults, websocket_enabled: Callable[[], bool]) -> Middleware:
    """Refusals, a disabled websocket and planned REST errors first; OKX JSON for 404s."""
    return fault_middleware(
        faults,
        websocket_enabled,
        okx_failure,
        lambda: _error(404, "50005", "API endpoint is inactive or unavailable."),
        lambda: _error(405, "50115", "Invalid request method."),
        ("/ws/",),
    )


__all__ = ["TRADE_HISTORY", "OkxMarket", "OkxRestApi", "okx_failure", "okx_fault_middleware"]
