"""REST endpoints of the fake (`/api/v3/...`), answered from the market state.

Everything a polling client (ccxt's fetch_* with the websocket off) asks for is answered from
what the source generated, so REST equals what the websocket carried. Errors use Binance's JSON
shape (`{"code": -1121, "msg": "Invalid symbol."}`) so CCXT maps them through its real error
table.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload
from fake_exchange.derive import INTERVAL_MS
from fake_exchange.faults import Faults
from fake_exchange.limits import BinanceLimits, Verdict, WeightLimiter, rest_weight
from fake_exchange.market_state import MarketState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

KLINE_INTERVALS = frozenset(INTERVAL_MS) | {"3d", "1w", "1M"}
"""Every interval Binance spot accepts (the calendar ones answer with no rows here)."""


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    """orjson-encoded JSON response."""
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def _error(status: int, code: int, msg: str) -> web.Response:
    return json_response(bf.error_body(code, msg), status)


def _now_ms() -> int:
    return int(time.time() * 1000)


def _int_param(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError as e:
        raise web.HTTPBadRequest(
            body=orjson.dumps(
                bf.error_body(-1100, f"Illegal characters found in parameter '{name}'")
            ),
            content_type="application/json",
        ) from e


class RestApi:
    """The REST routes; reads the market state and exchangeInfo the server owns."""

    def __init__(self, exchange_info: Payload, state: Callable[[], MarketState]) -> None:
        self._info = exchange_info
        self._ids = {s["symbol"] for s in exchange_info["symbols"]}
        self._state = state

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/api/v3/ping", self.ping),
            web.get("/api/v3/time", self.server_time),
            web.get("/api/v3/exchangeInfo", self.exchange_info),
            web.get("/api/v3/depth", self.depth),
            web.get("/api/v3/aggTrades", self.agg_trades),
            web.get("/api/v3/trades", self.trades),
            web.get("/api/v3/historicalTrades", self.trades),
            web.get("/api/v3/klines", self.klines),
            web.get("/api/v3/ticker/24hr", self.ticker_24hr),
        ]

    def _symbol(self, request: web.Request) -> str | web.Response:
        sym = request.query.get("symbol")
        if not sym:
            return _error(
                400,
                -1102,
                "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
            )
        if sym.upper() not in self._ids:
            return _error(400, -1121, "Invalid symbol.")
        return sym.upper()

    async def ping(self, request: web.Request) -> web.Response:
        return json_response({})

    async def server_time(self, request: web.Request) -> web.Response:
        return json_response({"serverTime": _now_ms()})

    async def exchange_info(self, request: web.Request) -> web.Response:
        body = dict(self._info, serverTime=_now_ms())
        wanted = request.query.get("symbol")
        if wanted:
            body["symbols"] = [s for s in self._info["symbols"] if s["symbol"] == wanted.upper()]
        return json_response(body)

    async def depth(self, request: web.Request) -> web.Response:
        sym = self._symbol(request)
        if isinstance(sym, web.Response):
            return sym
        limit = min(_int_param(request, "limit") or 100, 5000)
        return json_response(self._state().depth(sym, limit))

    async def agg_trades(self, request: web.Request) -> web.Response:
        sym = self._symbol(request)
        if isinstance(sym, web.Response):
            return sym
        limit = min(_int_param(request, "limit") or 500, 1000)
        rows = self._state().agg_trades_query(
            sym,
            _int_param(request, "fromId"),
            _int_param(request, "startTime"),
            _int_param(request, "endTime"),
            limit,
        )
        return json_response(rows)

    async def trades(self, request: web.Request) -> web.Response:
        """`/trades` (latest `limit`) and `/historicalTrades` (from `fromId`); no key needed."""
        sym = self._symbol(request)
        if isinstance(sym, web.Response):
            return sym
        limit = min(_int_param(request, "limit") or 500, 1000)
        from_id = (
            _int_param(request, "fromId") if request.path.endswith("/historicalTrades") else None
        )
        return json_response(self._state().trades_query(sym, from_id, limit))

    async def klines(self, request: web.Request) -> web.Response:
        sym = self._symbol(request)
        if isinstance(sym, web.Response):
            return sym
        interval = request.query.get("interval")
        if not interval:
            return _error(
                400,
                -1102,
                "Mandatory parameter 'interval' was not sent, was empty/null, or malformed.",
            )
        if interval not in KLINE_INTERVALS:
            return _error(400, -1120, "Invalid interval.")
        limit = min(_int_param(request, "limit") or 500, 1000)
        rows = self._state().klines(
            sym,
            interval,
            _int_param(request, "startTime"),
            _int_param(request, "endTime"),
            limit,
        )
        return json_response(rows)

    async def ticker_24hr(self, request: web.Request) -> web.Response:
        """One symbol (`symbol`), a list (`symbols=["A","B"]`, what ccxt fetch_tickers sends),
        or every symbol that has a ticker (no parameter)."""
        state = self._state()
        now = _now_ms()
        if "symbol" in request.query:
            sym = self._symbol(request)
            if isinstance(sym, web.Response):
                return sym
            return json_response(bf.rest_ticker(state.ticker(sym, now)))
        raw = request.query.get("symbols")
        if raw is None:
            return json_response([bf.rest_ticker(t) for t in state.tickers.values()])
        try:
            wanted = orjson.loads(raw)
        except orjson.JSONDecodeError:
            wanted = None
        if not isinstance(wanted, list) or not all(isinstance(w, str) for w in wanted):
            return _error(400, -1100, "Illegal characters found in parameter 'symbols'")
        if any(w.upper() not in self._ids for w in wanted):
            return _error(400, -1121, "Invalid symbol.")
        return json_response([bf.rest_ticker(state.ticker(w.upper(), now)) for w in wanted])


def fault_middleware(faults: Faults) -> Middleware:
    """Refusals and planned REST errors first; Binance-style JSON for unknown paths."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_ws = request.path.startswith(("/ws", "/stream"))
        if faults.refusing():
            # what a load balancer in front of a down backend says: no Binance JSON body
            return web.Response(status=503, text="503 Service Unavailable")
        if not is_ws:
            failure = faults.take_http_error()
            if failure is not None:
                return json_response(failure.body, failure.status, failure.headers)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _error(404, -1020, "This operation is not supported.")
        except web.HTTPMethodNotAllowed:
            return _error(405, -1020, "This operation is not supported.")

    return middleware


def _limit_message(verdict: Verdict, limits: BinanceLimits) -> str:
    """Binance's -1003 texts."""
    if verdict.status == 418:
        until = int((time.time() + verdict.retry_after) * 1000)
        return (
            f"Way too much request weight used; IP banned until {until}. "
            "Please use WebSocket Streams for live updates to avoid bans."
        )
    per = "1 MINUTE" if limits.window_s == 60 else f"{limits.window_s:g} SECOND"
    return (
        f"Too much request weight used; current limit is {limits.weight_per_window} request "
        f"weight per {per}. Please use WebSocket Streams for live updates to avoid polling "
        "the API."
    )


def limit_middleware(limiter: WeightLimiter, clock: Callable[[], float] = time.time) -> Middleware:
    """Binance's request weight on every REST call (the websocket handshake is not REST)."""
    header = limiter.limits.weight_header

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path.startswith(("/ws", "/stream")):
            return await handler(request)
        weight = rest_weight(request.path, request.query)
        verdict = limiter.charge(request.remote or "?", weight, clock())
        if verdict.status != 200:
            body = bf.error_body(-1003, _limit_message(verdict, limiter.limits))
            headers = {header: str(verdict.used), "Retry-After": str(verdict.retry_after)}
            return json_response(body, verdict.status, headers)
        response = await handler(request)
        response.headers[header] = str(verdict.used)
        return response

    return middleware
