"""REST endpoints of the fake (`/api/v3/...`; USD-M: `/fapi/v1/...`), answered from the
market state.

Everything a polling client (ccxt's fetch_* with the websocket off) asks for is answered from
what the source generated, so REST equals what the websocket carried. Errors use Binance's JSON
shape (`{"code": -1121, "msg": "Invalid symbol."}`) so CCXT maps them through its real error
table.

`aggTrades` and `klines` asked for a time range (or `fromId`) reach further back: before the
live session (the UTC day the fake started) they answer from a deterministic synthetic history
(`fake_exchange.history`), so a backfill of any past day pages through the same trades on every
request and every run. Without a range they answer from the live session only, as before.

USD-M serves the same routes under `/fapi/v1` (its rows in its own shapes, `Venue`) plus
`premiumIndex` (mark and index price, funding rate) and `openInterest`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from itertools import islice
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange import binance_frames as bf
from fake_exchange import push_common
from fake_exchange.binance_frames import SPOT, Payload, Venue
from fake_exchange.derive import INTERVAL_MS, Candle, kline_frame
from fake_exchange.faults import Faults
from fake_exchange.history import HOUR_MS, HistTrade, SyntheticHistory, floor_day, units_text
from fake_exchange.limits import BinanceLimits, Verdict, WeightLimiter, rest_weight
from fake_exchange.market_state import MarketState
from fake_exchange.push_common import Handler, json_response
from fake_exchange.sources import unified_symbols

KLINE_INTERVALS = frozenset(INTERVAL_MS) | {"3d", "1w", "1M"}
"""Every interval Binance spot accepts (the calendar ones answer with no rows here); USD-M
has no `1s`."""

WS_PREFIXES = ("/ws", "/stream", "/public/", "/market/")
"""Websocket paths (USD-M's `/public/ws`, `/market/ws` too): not REST, no weight, no JSON."""


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
    """The REST routes; reads the market state and exchangeInfo the server owns.

    `history`: what time-range queries before the live session answer from; by default a
    `SyntheticHistory` ending at the start of today (UTC). `venue`: spot (`/api/v3`) or USD-M
    (`/fapi/v1`).
    """

    def __init__(
        self,
        exchange_info: Payload,
        state: Callable[[], MarketState],
        history: SyntheticHistory | None = None,
        venue: Venue = SPOT,
    ) -> None:
        self._info = exchange_info
        self._ids = {s["symbol"] for s in exchange_info["symbols"]}
        self._unified = unified_symbols(exchange_info)
        self._state = state
        self.venue = venue
        self.history = history or SyntheticHistory(venue.exchange, floor_day(_now_ms()))

    def routes(self) -> list[web.RouteDef]:
        at = self.venue.rest_prefix
        routes = [
            web.get(f"{at}/ping", self.ping),
            web.get(f"{at}/time", self.server_time),
            web.get(f"{at}/exchangeInfo", self.exchange_info),
            web.get(f"{at}/depth", self.depth),
            web.get(f"{at}/aggTrades", self.agg_trades),
            web.get(f"{at}/trades", self.trades),
            web.get(f"{at}/historicalTrades", self.trades),
            web.get(f"{at}/klines", self.klines),
            web.get(f"{at}/ticker/24hr", self.ticker_24hr),
        ]
        if self.venue.futures:
            routes += [
                web.get(f"{at}/premiumIndex", self.premium_index),
                web.get(f"{at}/openInterest", self.open_interest),
            ]
        return routes

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
        """`fromId`: from that id on; a time range (`startTime`/`endTime`, both inclusive, at
        most an hour apart; one alone: that hour): the first `limit` in it; neither: the
        latest `limit` of the live session. Ids and ranges reach into the history."""
        sym = self._symbol(request)
        if isinstance(sym, web.Response):
            return sym
        limit = min(_int_param(request, "limit") or 500, 1000)
        from_id = _int_param(request, "fromId")
        start = _int_param(request, "startTime")
        end = _int_param(request, "endTime")
        state = self._state()
        if from_id is not None:
            if not self.history.is_history_id(from_id):
                return json_response(state.agg_trades_query(sym, from_id, None, None, limit))
            rows = _take(
                map(self._history_row, self.history.from_id(self._unified[sym], from_id)), limit
            )
            if len(rows) < limit:  # past the history's end: the live session goes on
                rows += state.agg_trades_query(sym, 0, None, None, limit - len(rows))
            return json_response(rows)
        if start is None and end is None:
            return json_response(state.agg_trades_query(sym, None, None, None, limit))
        if start is not None and end is not None and end - start > HOUR_MS:
            return _error(400, -1127, "More than 1 hours between startTime and endTime.")
        if start is None:
            lo = (end or 0) - HOUR_MS
            hi = lo + HOUR_MS
        else:
            lo = start
            hi = end if end is not None else lo + HOUR_MS
        past = self.history.between(self._unified[sym], lo, hi + 1)
        rows = _take(map(self._history_row, past), limit)
        if len(rows) < limit:
            rows += state.agg_trades_query(sym, None, lo, hi, limit - len(rows))
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
        """Oldest first. `startTime`: the first `limit` opening from there (up to `endTime`);
        `endTime` alone: the latest `limit` opening up to it; neither: the latest `limit` of
        the live session. Ranges before the live session come from the history's trades."""
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
        if interval not in KLINE_INTERVALS or (self.venue.futures and interval == "1s"):
            return _error(400, -1120, "Invalid interval.")
        limit = min(_int_param(request, "limit") or 500, 1000)
        start = _int_param(request, "startTime")
        end = _int_param(request, "endTime")
        rows = self._state().klines(sym, interval, start, end, limit)
        width = INTERVAL_MS.get(interval)
        if (start is None and end is None) or width is None:
            return json_response(rows)
        past = self._past_klines(sym, interval, width, start, end, limit)
        live_from = rows[0][0] if rows else 2**63
        rows = [r for r in past if r[0] < live_from] + rows
        return json_response(rows[:limit] if start is not None else rows[-limit:])

    def _past_klines(
        self, sym: str, interval: str, width: int, start: int | None, end: int | None, limit: int
    ) -> list[list[Any]]:
        """History klines opening in the range, every interval from the first trade on
        (those without trades: o=h=l=c=the previous close, no volume, as Binance)."""
        if start is not None:
            lo = -(-start // width) * width
            hi = lo + limit * width if end is None else min(end + 1, lo + limit * width)
        else:
            hi = (end or 0) + 1
            lo = max(0, hi - hi % width - (limit - 1) * width)
        history = self.history
        hi = min(hi, history.end_ms)
        if lo >= hi:
            return []
        unified = self._unified[sym]
        found = {c.open_ms: c for c in history.candles(unified, width, lo, hi)}
        prev = history.price_before(unified, lo)
        out = []
        for open_ms in range(lo, hi, width):
            c = found.get(open_ms)
            if c is None:
                if prev is None:
                    continue  # before the first trade: nothing listed yet
                c = Candle.empty(open_ms, prev)
            prev = c.close
            out.append(bf.rest_kline(kline_frame(sym, interval, c, open_ms + width, False)["k"]))
        return out

    def _history_row(self, t: HistTrade) -> Payload:
        row = _agg_row(t)
        if self.venue.futures:
            del row["M"]
        return row

    async def premium_index(self, request: web.Request) -> web.Response:
        """USD-M: one symbol's mark price, index price and funding (`symbol`), or every
        symbol's (no parameter), from the last `markPriceUpdate` frame generated."""
        state, now = self._state(), _now_ms()
        if "symbol" in request.query:
            sym = self._symbol(request)
            if isinstance(sym, web.Response):
                return sym
            return json_response(state.premium_index(sym, now))
        return json_response([state.premium_index(s, now) for s in sorted(self._ids)])

    async def open_interest(self, request: web.Request) -> web.Response:
        """USD-M: `{"openInterest", "symbol", "time"}`, the last state the source reported."""
        sym = self._symbol(request)
        if isinstance(sym, web.Response):
            return sym
        return json_response(self._state().open_interest_now(sym, _now_ms()))

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


def _agg_row(t: HistTrade) -> Payload:
    """A history trade as a `GET /api/v3/aggTrades` row (one trade per aggTrade: f = l = a)."""
    return {
        "a": t.id,
        "p": units_text(t.px),
        "q": units_text(t.qty),
        "f": t.id,
        "l": t.id,
        "T": t.ts,
        "m": t.maker,
        "M": True,
    }


def _take(rows: Iterable[Payload], limit: int) -> list[Payload]:
    return list(islice(rows, limit))


def fault_middleware(faults: Faults, websocket_enabled: Callable[[], bool]) -> Middleware:
    """Refusals, a disabled websocket (503) and planned REST errors first; Binance-style JSON
    for unknown paths (the shared `push_common.fault_middleware` in Binance's words)."""
    return push_common.fault_middleware(
        faults,
        websocket_enabled,
        lambda f: json_response(f.body, f.status, f.headers),
        lambda: _error(404, -1020, "This operation is not supported."),
        lambda: _error(405, -1020, "This operation is not supported."),
        WS_PREFIXES,
    )


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
        if request.path.startswith(WS_PREFIXES):
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
