"""OKX v5 REST (`/api/v5/...`) answered from what the fake published, and its fault middleware.

`OkxMarket` (module `market`) mirrors every published frame (books, trades, last tickers), so a
REST-polling client sees the same market as a websocket one: `market/books` is the live book,
`market/trades` the trades sent (newest first, as OKX), `market/candles` built from those
trades. Bodies and HTTP statuses follow OKX's error table (51001 "Instrument ID does not exist"
comes with HTTP 200; 50011 with 429), so CCXT maps them through its real error table.

`history-trades` and `history-candles` (and `candles` given `after`/`before`) page further back:
before the live session (the UTC day the fake started) they answer from a deterministic
synthetic history (`fake_exchange.history`), newest first as OKX. History trade ids sit in a
range of their own (`HISTORY_ID_BASE` on), before every live id in paging order.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from itertools import islice, takewhile

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from fake_exchange.derive import Candle
from fake_exchange.faults import Faults, HttpFailure
from fake_exchange.history import ORIGIN_MS, HistTrade, SyntheticHistory, floor_day, plain_text
from fake_exchange.okx import frames as of
from fake_exchange.okx.frames import Payload
from fake_exchange.okx.limits import OkxLimiter
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
    """The `/api/v5/*` routes, read from the market the server owns.

    `history`: what paging before the live session answers from; by default a
    `SyntheticHistory` ending at the start of today (UTC).
    """

    def __init__(
        self, market: Callable[[], OkxMarket], history: SyntheticHistory | None = None
    ) -> None:
        self._market = market
        self.history = history or SyntheticHistory("okx", floor_day(_now_ms()))

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
        """Newest first, at most 100. `type` 1 (default): `after`/`before` are tradeIds
        (older than / newer than); 2: `after` is a time (ms, older than). Neither: the latest
        of the live session. Past the live session's oldest trade: the history."""
        try:
            inst = self._inst(request)
            limit = _int(request, "limit", 100, 100) or 100
            after = _int(request, "after", None)
            before = _int(request, "before", None)
        except _BadParam as e:
            return e.response
        live = self._market().trades.get(inst, ())
        by_ts = request.query.get("type") == "2"
        if after is None and before is None:
            return json_response(of.rest_ok(list(islice(reversed(live), limit))))
        key: Callable[[int], tuple[int, int]]
        if by_ts:
            rows = self._older_by_ts(inst, live, after)
            key = _ts_key
        else:
            rows = self._older_by_id(inst, live, after)
            key = self._id_key
        if before is not None:
            floor = key(before)
            rows = takewhile(lambda r: key(int(r["ts" if by_ts else "tradeId"])) > floor, rows)
        return json_response(of.rest_ok(list(islice(rows, limit))))

    def _id_key(self, trade_id: int) -> tuple[int, int]:
        """Paging order of trade ids: every history id before every live one."""
        return (0 if self.history.is_history_id(trade_id) else 1, trade_id)

    def _older_by_id(
        self, inst: str, live: Iterable[Payload], after: int | None
    ) -> Iterator[Payload]:
        """Trades older than tradeId `after` (None: all), newest first: live, then history."""
        unified = _unified(inst)
        if after is not None and self.history.is_history_id(after):
            yield from map(lambda t: _trade_row(inst, t), self.history.before_id(unified, after))
            return
        for t in reversed(list(live)):
            if after is None or int(t["tradeId"]) < after:
                yield t
        end = self.history.end_id(unified)
        yield from map(lambda t: _trade_row(inst, t), self.history.before_id(unified, end))

    def _older_by_ts(
        self, inst: str, live: Iterable[Payload], after: int | None
    ) -> Iterator[Payload]:
        """Trades before time `after` (None: all), newest first: live, then history."""
        for t in reversed(list(live)):
            if after is None or int(t["ts"]) < after:
                yield t
        upper = self.history.end_ms if after is None else after
        yield from map(lambda t: _trade_row(inst, t), self.history.before_ms(_unified(inst), upper))

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
        """Built from the trades sent; `after`/`before` are exclusive bounds on the open time.
        Given either, bars before the live session come from the history."""
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
        if after is not None or before is not None:
            oldest_live = int(rows[-1][0]) if rows else 2**63
            past = self._past_candles(inst, bar, after, before, limit)
            rows += [r for r in past if int(r[0]) < oldest_live]
        return json_response(of.rest_ok(rows[:limit]))

    def _past_candles(
        self, inst: str, bar: str, after: int | None, before: int | None, limit: int
    ) -> list[list[str]]:
        """History bars with trades opening in (`before`, `after`), newest first, at most
        `limit` (walked back a `limit` of bars at a time)."""
        length = of.bar_ms(bar)
        offset = (-of.bar_start(0, bar)) % length
        history = self.history
        upper = min(after if after is not None else history.end_ms, history.end_ms)
        lower = max(before + 1 if before is not None else 0, ORIGIN_MS)
        out: list[list[str]] = []
        while upper > lower and len(out) < limit:
            start = max(lower, upper - limit * length)
            found = history.candles(_unified(inst), length, start, upper, offset)
            out += [_candle_row(c) for c in reversed(found)]
            upper = start
        return out[:limit]


def _unified(inst: str) -> str:
    """'BTC-USDT' -> 'BTC/USDT': the history's name of an instrument."""
    return inst.replace("-", "/")


def _ts_key(ts_ms: int) -> tuple[int, int]:
    return (0, ts_ms)


def _trade_row(inst: str, t: HistTrade) -> Payload:
    side = "sell" if t.maker else "buy"  # OKX's side is the taker's
    return of.trade_row(inst, t.id, plain_text(t.px), plain_text(t.qty), side, t.ts)


def _candle_row(c: Candle) -> list[str]:
    """A closed history bar; spot: vol in base, volCcy in quote (exact)."""
    quote = of.fmt(Decimal(c.quote).scaleb(-16))
    return of.candle_row(
        c.open_ms,
        plain_text(c.open),
        plain_text(c.high),
        plain_text(c.low),
        plain_text(c.close),
        plain_text(c.volume),
        quote,
        True,
    )


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


def okx_limits_middleware(limiter: OkxLimiter, inner: Middleware) -> Middleware:
    """OKX's limits in front of `inner` (the fault middleware): a websocket upgrade past the
    connections per second gets HTTP 429; a REST request past its endpoint's requests per
    window gets 429 with code 50011 and a Retry-After."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        ip = request.remote or "?"
        now = time.monotonic()
        if request.path.startswith("/ws/"):
            if not limiter.connect(ip, now):
                return _error(429, "50011", "Too Many Requests: 3 connections per second")
        else:
            wait = limiter.rest(ip, request.path, now)
            if wait > 0:
                resp = _error(
                    429,
                    "50011",
                    "Rate limit reached. Please refer to API documentation and throttle "
                    "requests accordingly.",
                )
                resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
                return resp
        return await inner(request, handler)

    return middleware


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


__all__ = [
    "TRADE_HISTORY",
    "OkxMarket",
    "OkxRestApi",
    "okx_failure",
    "okx_fault_middleware",
    "okx_limits_middleware",
]
