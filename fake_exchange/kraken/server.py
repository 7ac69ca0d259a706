"""The fake Kraken spot server: Kraken's websocket v2 (and the recording's v1) on the push engine.

The engine (`fake_exchange.push_server`) owns the lifecycle, the player, the connections and
the outboxes; this module holds what is Kraken's. `/v2` speaks v2, what ccxt 4.5.90 uses:
subscribe/unsubscribe acks one symbol at a time (`Already subscribed`, `Currency pair not
supported` refused per symbol), a `status` message first, heartbeats every second to a
connection holding a subscription, `ping`/`pong`. Books: a subscriber of depth d gets a
snapshot of the top d levels, then an update whenever its top d changed, carrying the
checksum of the exchange's top 10 (`fake_exchange.kraken.book`). `/` replays the recorded v1
frames unchanged to a v1 client (after a v1 book snapshot made from the mirror).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.kraken import frames as kf
from fake_exchange.kraken.book import View
from fake_exchange.kraken.frames import Payload
from fake_exchange.kraken.market import KrakenMarket, Trade
from fake_exchange.kraken.rest import KrakenRestApi, kraken_fault_middleware
from fake_exchange.kraken.source import KrakenEvent, KrakenFrameSource
from fake_exchange.kraken.ws_protocol import Request, parse_v1, parse_v2
from fake_exchange.push_server import PushServer
from fake_exchange.sources import Clock
from fake_exchange.ws_conn import Connection, Key, Out

TRADE_SNAPSHOT = 50
"""Trades a v2 `trade` snapshot holds (when asked for with `snapshot: true`)."""
OHLC_SNAPSHOT = 100
V1 = "v1:"
"""Key prefix of v1 subscriptions: `("v1:book-1000", "XBT/CHF")`."""


@dataclass(frozen=True, slots=True)
class KrakenSentFrame:
    """One data message written to one socket: v2 (`payload` as sent) or a v1 frame
    (`payload` `{"text": ...}`). Acks, heartbeats and errors are not logged."""

    conn_id: int
    channel: str
    """The subscription: `book-25`, `trade`, `ticker`, `ohlc-1`, `v1:book-1000`..."""
    symbol: str
    """v2 symbol (`BTC/CHF`), or the v1 pair (`XBT/CHF`) of a v1 frame."""
    payload: Payload
    sent_ns: int

    @property
    def kind(self) -> str:
        """`snapshot` or `update` (v1 frames: `v1`)."""
        return str(self.payload.get("type", "v1"))

    @property
    def row(self) -> Payload:
        """The first element of a v2 message's `data`."""
        data = self.payload.get("data") or [{}]
        return dict(data[0])


class FakeKraken(PushServer[KrakenSentFrame]):
    """Kraken spot public market data on 127.0.0.1, close enough that `ccxt.pro.kraken`
    works unchanged."""

    label = "fake kraken"

    def __init__(
        self,
        source: KrakenFrameSource,
        host: str = "127.0.0.1",
        port: int = 0,
        autoplay: bool = True,
        *,
        websocket: bool = True,
        heartbeat_s: float = 1.0,
        queue_size: int = 10_000,
        sent_limit: int = 1_000_000,
        hold_until_subscribed: float | None = None,
    ) -> None:
        super().__init__(
            host, port, autoplay, websocket=websocket, queue_size=queue_size,
            sent_limit=sent_limit, hold_until_subscribed=hold_until_subscribed,
        )  # fmt: skip
        self.log = logging.getLogger("fake_exchange.kraken")
        self.source = source
        self.heartbeat_s = heartbeat_s
        self.corrupted: list[tuple[str, Payload]] = []
        """(symbol, message) of each book update a `corrupt_checksum` sent with a wrong sum."""
        self.dropped_book_updates: list[tuple[str, Payload]] = []
        """(symbol, message) of each book update a `book_gap` kept from its subscribers."""
        self.dropped_trades: list[tuple[str, Payload]] = []
        """(symbol, message) of each trade message a `trade_gap` kept from its subscribers."""
        self._corrupt: list[str | None] = []
        self._gaps: list[str | None] = []
        self._trade_gaps: list[str | None] = []
        self._views: dict[tuple[str, int], View] = {}
        self._greeted: set[int] = set()
        self._v1_ids: dict[tuple[str, str], int] = {}
        self._market: KrakenMarket | None = None
        self._heartbeats: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ the engine's hooks

    def _load(self) -> None:
        self.source.prepare()

    def _setup(self) -> None:
        self._market = KrakenMarket(self.source.pairs())
        self._v1_ids = dict(self.source.channel_ids())
        now_ms = int(time.time() * 1000)
        for ev in self.source.initial(lambda: now_ms):
            self._market.observe(ev)

    def _routes(self) -> list[web.RouteDef]:
        return [
            *KrakenRestApi(self._state).routes(),
            web.get("/", self._ws_handler),
            web.get("/v2", self._ws_handler),
        ]

    def _middleware(self) -> Middleware:
        return kraken_fault_middleware(self.faults, lambda: self._websocket)

    def _events(self, clock: Clock) -> Iterator[KrakenEvent]:
        return self.source.events(clock)

    def _sent_frame(self, conn_id: int, key: Key, frame: Payload, sent_ns: int) -> KrakenSentFrame:
        return KrakenSentFrame(conn_id, key[0], key[1], frame, sent_ns)

    async def start(self) -> None:
        await super().start()
        self._heartbeats = asyncio.create_task(self._beat(), name=f"{self.label}-heartbeats")

    async def stop(self) -> None:
        if self._heartbeats is not None:
            self._heartbeats.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeats
        await super().stop()

    # ------------------------------------------------------------------ public helpers

    @property
    def ws_url(self) -> str:
        """The v2 websocket (`wss://ws.kraken.com/v2`); v1 is the root path."""
        return f"ws://{self.host}:{self.port}/v2"

    def ccxt_config(self) -> dict[str, Any]:
        """Config for `ccxt.pro.kraken(...)`: REST and both public websockets -> this fake
        (what `publisher.endpoints.rebase_urls` makes of Kraken's urls), no rate limit."""
        ws = f"ws://{self.host}:{self.port}"
        return {
            "enableRateLimit": False,
            "urls": {"api": {"public": self.base_url, "private": self.base_url,
                             "ws": {"public": ws, "publicV2": ws + "/v2"}}},
        }  # fmt: skip

    @property
    def markets(self) -> list[str]:
        """v2 symbols of the pairs served (`BTC/CHF`: ccxt's spelling too)."""
        return sorted(self._state().by_v2)

    @property
    def market(self) -> KrakenMarket:
        return self._state()

    def corrupt_checksum(self, n: int = 1, symbol: str | None = None) -> None:
        """The next `n` book updates (of v2 `symbol`, or any) that have subscribers go out
        with a wrong checksum (the levels are right)."""
        self._plan(self._corrupt, n, symbol)

    def book_gap(self, n: int = 1, symbol: str | None = None) -> None:
        """The next `n` book updates (of `symbol`, or any) that have subscribers are lost
        on their way: the subscribers' books go wrong, the next checksum shows it."""
        self._plan(self._gaps, n, symbol)

    def trade_gap(self, n: int = 1, symbol: str | None = None) -> None:
        """The next `n` trade messages (of `symbol`, or any) that have subscribers are lost
        on their way: their `trade_id`s never reach the subscribers."""
        self._plan(self._trade_gaps, n, symbol)

    @staticmethod
    def _plan(plan: list[str | None], n: int, symbol: str | None) -> None:
        if n < 1:
            raise ValueError(f"a fault needs n >= 1, not {n}")
        plan.extend([symbol] * n)

    # ------------------------------------------------------------------ player

    def _state(self) -> KrakenMarket:
        if self._market is None:
            raise RuntimeError("FakeKraken not started")
        return self._market

    async def _publish(self, ev: KrakenEvent) -> None:
        market = self._state()
        trades = market.observe(ev)
        symbol = kf.v2_symbol(ev.pair)
        if ev.text is not None and self._subs.get((V1 + ev.channel, ev.pair)):
            await self._fan_raw((V1 + ev.channel, ev.pair), ev.text)
        if ev.channel.startswith("book"):
            await self._push_book(ev.pair, symbol, ev.ts_ns)
        elif ev.channel == "trade" and trades:
            frame = kf.envelope("trade", "update", [kf.trade(symbol, t.row, t.trade_id)
                                                    for t in trades])  # fmt: skip
            if self._subs.get(("trade", symbol)) and self._take(self._trade_gaps, symbol):
                self.dropped_trades.append((symbol, frame))
            else:
                await self._fan_out(("trade", symbol), frame)
            await self._push_candles(ev.pair, symbol, trades, ev.ts_ns)
        elif ev.channel == "ticker":
            row = kf.ticker(symbol, ev.data, ev.ts_ns)
            await self._fan_out(("ticker", symbol), kf.envelope("ticker", "update", [row]))

    async def _push_book(self, wsname: str, symbol: str, ts_ns: int) -> None:
        market = self._state()
        book = market.book(wsname)
        crc = book.checksum_v2(*market.decimals(wsname))
        for (ws, depth), view in list(self._views.items()):
            key = (f"book-{depth}", symbol)
            if ws != wsname:
                continue
            if not self._subs.get(key):
                del self._views[(ws, depth)]
                continue
            bids, asks = view.diff(book)
            if not bids and not asks:
                continue
            frame = kf.envelope("book", "update", [kf.book_data(symbol, bids, asks, crc, ts_ns)])
            if self._take(self._gaps, symbol):
                self.dropped_book_updates.append((symbol, frame))
                continue
            if self._take(self._corrupt, symbol):
                frame["data"][0]["checksum"] = crc ^ 0x5A5A5A5A
                self.corrupted.append((symbol, frame))
            await self._fan_out(key, frame)

    async def _push_candles(
        self, wsname: str, symbol: str, trades: list[Trade], ts_ns: int
    ) -> None:
        market = self._state()
        for interval in kf.INTERVALS:
            key = (f"ohlc-{interval}", symbol)
            if not self._subs.get(key):
                continue
            starts = {t.ts_ns // 1_000_000_000 // (interval * 60) * interval * 60 for t in trades}
            rows = [r for r in market.candle_rows(wsname, interval, min(starts) - 1)
                    if r[0] in starts]  # fmt: skip
            data = [kf.ohlc(symbol, r, interval) for r in rows]
            await self._fan_out(key, kf.envelope("ohlc", "update", data, ts_ns))

    @staticmethod
    def _take(plan: list[str | None], symbol: str) -> bool:
        for i, target in enumerate(plan):
            if target in (None, symbol):
                del plan[i]
                return True
        return False

    async def _fan_raw(self, key: Key, text: str) -> None:
        """A recorded v1 frame, byte for byte, to its v1 subscribers."""
        for conn in [c for c in self._subs.get(key, ()) if not c.closed]:
            out = Out(text, key, {"text": text})
            if not conn.outbox.try_push_data(out):
                await conn.outbox.push_data(out, conn.still_subscribed(key, conn.subs[key]))

    async def _beat(self) -> None:
        """A heartbeat every `heartbeat_s` to each connection that holds a subscription."""
        v1_beat = orjson.dumps({"event": "heartbeat"}).decode()
        v2_beat = orjson.dumps(kf.HEARTBEAT).decode()
        while True:
            await asyncio.sleep(self.heartbeat_s)
            for conn in list(self._conns.values()):
                if conn.subs and not conn.closed:
                    conn.outbox.push_control(Out(v2_beat if conn.kind == "v2" else v1_beat))

    # ------------------------------------------------------------------ requests

    def _on_text(self, conn: Connection, text: str) -> None:
        v2 = conn.kind == "v2"
        if conn.conn_id not in self._greeted:  # Kraken greets on connect; the engine has no
            self._greeted.add(conn.conn_id)  # hook there, so the greeting precedes the reply
            self._control(conn, kf.status(conn.conn_id) if v2 else kf.v1_status(conn.conn_id))
        if v2:
            self._on_v2(conn, text)
        else:
            self._on_v1(conn, text)

    def _on_v2(self, conn: Connection, text: str) -> None:
        t_in = time.time_ns()
        req = parse_v2(text)
        if req.refusal is not None:
            method = req.method or "subscribe"
            self._control(conn, kf.error(method, req.refusal, req.req_id, t_in, time.time_ns()))
            return
        if req.method == "ping":
            self._control(conn, kf.pong(req.req_id, t_in, time.time_ns()))
            return
        market = self._state()
        for symbol in req.symbols:
            wsname = market.by_v2.get(symbol)
            key = (req.key_channel(), symbol)
            refusal = None
            if wsname is None:
                refusal = f"Currency pair not supported {symbol}"
            elif req.method == "subscribe" and key in conn.subs:
                refusal = "Already subscribed"
            elif req.method == "unsubscribe" and key not in conn.subs:
                refusal = "Subscription Not Found"
            if refusal is not None or wsname is None:
                err = kf.error(req.method, refusal or "", req.req_id, t_in, time.time_ns(),
                               symbol=symbol)  # fmt: skip
                self._control(conn, err)
                continue
            result: Payload = {"channel": req.channel, "symbol": symbol}
            if req.channel == "book":
                result["depth"] = req.depth
            if req.channel == "ohlc":
                result["interval"] = req.interval
            if req.method == "unsubscribe":
                self._unregister(conn, key)
                self._control(conn, kf.ack("unsubscribe", result, req.req_id, t_in, time.time_ns()))
                continue
            self._register(conn, key)
            result["snapshot"] = req.snapshot
            self._control(conn, kf.ack("subscribe", result, req.req_id, t_in, time.time_ns()))
            if req.snapshot:
                self._snapshot(conn, key, req, wsname, symbol)
            elif req.channel == "book":  # updates only: they start from the top d of now
                view = self._views.setdefault(
                    (wsname, req.depth), View(req.depth, market.decimals(wsname))
                )
                view.snapshot(market.book(wsname))
        if req.method == "subscribe":
            self._notify_subscribed()

    def _snapshot(self, conn: Connection, key: Key, req: Request, wsname: str, sym: str) -> None:
        market = self._state()
        now = time.time_ns()
        frame: Payload | None = None
        if req.channel == "book":
            book = market.book(wsname)
            view = self._views.setdefault(
                (wsname, req.depth), View(req.depth, market.decimals(wsname))
            )
            bids, asks = view.snapshot(book)
            crc = book.checksum_v2(*market.decimals(wsname))
            data = kf.book_data(sym, bids, asks, crc, book.ts_ns or now)
            frame = kf.envelope("book", "snapshot", [data])
        elif req.channel == "ticker":
            v1, ts = market.ticker(wsname, now)
            frame = kf.envelope("ticker", "snapshot", [kf.ticker(sym, v1, ts)])
        elif req.channel == "trade":
            recent = market.recent_trades(wsname, TRADE_SNAPSHOT)
            if recent:
                rows = [kf.trade(sym, t.row, t.trade_id) for t in recent]
                frame = kf.envelope("trade", "snapshot", rows)
        elif req.channel == "ohlc":
            candles = market.candle_rows(wsname, req.interval)[-OHLC_SNAPSHOT:]
            if candles:
                rows = [kf.ohlc(sym, r, req.interval) for r in candles]
                frame = kf.envelope("ohlc", "snapshot", rows, now)
        if frame is not None:
            self._push_initial(conn, key, frame)

    def _on_v1(self, conn: Connection, text: str) -> None:
        req = parse_v1(text)
        if req.method == "ping":
            self._control(conn, {"event": "pong", **({"reqid": req.req_id} if req.req_id else {})})
            return
        if req.refusal is not None:
            self._control(conn, {"errorMessage": req.refusal, "event": "error", "status": "error"})
            return
        market = self._state()
        for pair in req.symbols:
            status: Payload = {"channelName": req.channel, "event": "subscriptionStatus",
                               "pair": pair, "subscription": kf.v1_subscription(req.channel)}  # fmt: skip
            cid = self._v1_ids.get((req.channel, pair))
            if pair not in market.by_ws or cid is None:  # v1 replays recorded streams only
                why = f"Currency pair not supported {pair}"
                if pair in market.by_ws:
                    why = f"Not in the recording: {req.channel} {pair}"  # the fake's own text
                status.update(status="error", errorMessage=why)
                self._control(conn, status)
                continue
            key = (V1 + req.channel, pair)
            if req.method == "unsubscribe":
                self._unregister(conn, key)
                self._control(conn, {"channelID": cid, **status, "status": "unsubscribed"})
                continue
            self._register(conn, key)
            self._control(conn, {"channelID": cid, **status, "status": "subscribed"})
            if req.channel.startswith("book"):
                book = market.book(pair)
                depth = int(req.channel.partition("-")[2] or 10)
                snap = [cid, {"as": book.asks(depth), "bs": book.bids(depth)}, req.channel, pair]
                text_out = orjson.dumps(snap).decode()
                conn.outbox.push_control(Out(text_out, key, {"text": text_out}))
        if req.method == "subscribe":
            self._notify_subscribed()

    async def _drop(self, conn: Connection) -> None:
        await super()._drop(conn)
        self._greeted.discard(conn.conn_id)


__all__ = ["V1", "FakeKraken", "KrakenSentFrame"]
