"""Kraken REST (`/0/public/...`) answered from what the fake published, and its faults.

What ccxt 4.5.90 calls: `load_markets` -> `Assets` (`fetch_currencies`, whose precisions it
needs) and `AssetPairs`; backfill -> `Trades?pair=&since=` (seconds; Kraken's `last`
cursor in ns works too); polling -> `OHLC`, `Depth`, `Ticker`; `Time` and `SystemStatus`.
Bodies are Kraken's `{"error": [...], "result": {...}}`; errors go in the `error` list with
HTTP 200, as Kraken sends them (ccxt maps the texts: `EGeneral:Invalid arguments` ->
BadRequest; `EQuery:Unknown asset pair` it leaves an ExchangeError).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from fake_exchange.faults import Faults, HttpFailure
from fake_exchange.kraken import frames as kf
from fake_exchange.kraken.frames import Payload
from fake_exchange.kraken.market import KrakenMarket
from fake_exchange.push_server import json_response

API = "/0/public"
TRADES_COUNT = 1000
"""Trades a `Trades` answer holds at most (Kraken's cap)."""
DEPTH_COUNT = (100, 500)
"""`Depth` levels a side: (default, max)."""


class _Refused(Exception):
    def __init__(self, *messages: str) -> None:
        self.body = kf.rest_error(*messages)


def _int(request: web.Request, name: str, default: int) -> int:
    raw = request.query.get(name, "")
    if not raw:
        return default
    try:
        return int(float(raw))
    except ValueError as e:
        raise _Refused(f"EGeneral:Invalid arguments:{name}") from e


class KrakenRestApi:
    """The public REST routes, read from the market the server owns."""

    def __init__(self, market: Callable[[], KrakenMarket]) -> None:
        self._market = market

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get(f"{API}/{name}", self._answer(build))
            for name, build in (
                ("AssetPairs", self.asset_pairs),
                ("Assets", self.assets),
                ("Trades", self.trades),
                ("OHLC", self.ohlc),
                ("Depth", self.depth),
                ("Ticker", self.ticker),
                ("Time", self.time),
                ("SystemStatus", self.system_status),
            )
        ]

    @staticmethod
    def _answer(
        build: Callable[[web.Request], Any],
    ) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            try:
                return json_response(kf.rest_ok(build(request)))
            except _Refused as e:
                return json_response(e.body)

        return handler

    def _pair(self, request: web.Request) -> tuple[str, str]:
        """(pair id, wsname) of `pair=` (id, altname or wsname)."""
        name = request.query.get("pair", "")
        market = self._market()
        ws = market.wsname(name) if name else None
        if ws is None:
            raise _Refused("EQuery:Unknown asset pair")
        return market.by_ws[ws], ws

    def asset_pairs(self, request: web.Request) -> Payload:
        pairs = self._market().pairs
        wanted = request.query.get("pair")
        if not wanted:
            return pairs
        out = {}
        for name in wanted.split(","):
            ws = self._market().wsname(name)
            if ws is None:
                raise _Refused("EQuery:Unknown asset pair")
            pid = self._market().by_ws[ws]
            out[pid] = pairs[pid]
        return out

    def assets(self, request: web.Request) -> Payload:
        return kf.assets(self._market().pairs.values())

    def trades(self, request: web.Request) -> Payload:
        pid, ws = self._pair(request)
        since = _int(request, "since", 0)
        since_ns = since if since > 10**12 else since * 1_000_000_000 - 1  # seconds: inclusive
        count = min(max(_int(request, "count", TRADES_COUNT), 1), TRADES_COUNT)
        rows = self._market().trades_since(ws, since_ns, count)
        last = rows[-1].ts_ns if rows else max(since_ns, 0)
        return {pid: [kf.rest_trade(t.row, t.trade_id) for t in rows], "last": str(last)}

    def ohlc(self, request: web.Request) -> Payload:
        pid, ws = self._pair(request)
        interval = _int(request, "interval", 1)
        if interval not in kf.INTERVALS:
            raise _Refused("EGeneral:Invalid arguments:interval")
        rows = self._market().candle_rows(ws, interval, _int(request, "since", 0))[-720:]
        return {pid: rows, "last": rows[-1][0] if rows else 0}

    def depth(self, request: web.Request) -> Payload:
        pid, ws = self._pair(request)
        count = min(max(_int(request, "count", DEPTH_COUNT[0]), 1), DEPTH_COUNT[1])
        book = self._market().book(ws)

        def rows(side: list[list[str]]) -> list[list[Any]]:
            return [[p, q, int(float(t))] for p, q, t, *_ in side]

        return {pid: {"asks": rows(book.asks(count)), "bids": rows(book.bids(count))}}

    def ticker(self, request: web.Request) -> Payload:
        pid, ws = self._pair(request)
        v1, _ = self._market().ticker(ws, time.time_ns())
        return {pid: {k: v for k, v in v1.items()}}

    def time(self, request: web.Request) -> Payload:
        now = time.time()
        return {"unixtime": int(now), "rfc1123": time.strftime("%a, %d %b %y %H:%M:%S +0000",
                                                                  time.gmtime(now))}  # fmt: skip

    def system_status(self, request: web.Request) -> Payload:
        return {"status": "online", "timestamp": kf.rfc3339(time.time_ns())[:19] + "Z"}


def kraken_failure(failure: HttpFailure) -> web.Response:
    """A planned REST failure with Kraken's error texts: 429 -> `EAPI:Rate limit exceeded`
    (ccxt: DDoSProtection), 5xx -> `EService:Unavailable` (ExchangeNotAvailable), other ->
    `EGeneral:Invalid arguments` (BadRequest)."""
    status = failure.status
    if status in (418, 429):
        msg = "EAPI:Rate limit exceeded"
    elif status >= 500:
        msg = "EService:Unavailable"
    else:
        msg = "EGeneral:Invalid arguments"
    return json_response(kf.rest_error(msg), status, failure.headers)


def kraken_fault_middleware(
    faults: Faults, websocket_enabled: Callable[[], bool], ws_paths: tuple[str, ...] = ("/", "/v2")
) -> Middleware:
    """Refusals, a disabled websocket and planned REST errors first; Kraken JSON for 404s."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_ws = request.path in ws_paths
        if faults.refusing() or (is_ws and not websocket_enabled()):
            return web.Response(status=503, text="503 Service Unavailable")
        if not is_ws:
            planned = faults.take_http_error()
            if planned is not None:
                return kraken_failure(planned)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return json_response(kf.rest_error("EGeneral:Unknown method"), 404)
        except web.HTTPMethodNotAllowed:
            return json_response(kf.rest_error("EGeneral:Invalid arguments"), 405)

    return middleware


__all__ = ["KrakenRestApi", "kraken_failure", "kraken_fault_middleware"]
