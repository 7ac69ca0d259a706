"""The fake Binance server, spot or USD-M futures: Binance's protocol on the shared engine.

The engine (`fake_exchange.push_server`) owns the lifecycle, the player (with the hold until
the first subscription), the connections with their outboxes and writers, the fan-out, bursts
of ready-made frames, the websocket off switch and the fault target. This module holds what is
Binance's: the routes (REST from `rest.RestApi`; `/ws`, `/ws/<streams>`, `/stream?streams=`),
the control grammar (`protocol`), the limits (`limits`: weight, messages per second, streams
per connection), planned gaps (`drop`), the combined-stream envelope and the aggTrade burst.
A subscription key is the stream name ('btcusdt@aggTrade'); Binance sends no snapshot on
subscribe, so a repeated SUBSCRIBE keeps the subscription (and the frames already queued).

Which market it speaks is the source's `venue`: USD-M adds its REST prefix (`/fapi/v1`), its
stream grammar, and the `/public/ws` and `/market/ws` urls CCXT uses for it
(`fake_exchange.usdm`); everything else is the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Iterator, KeysView, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange import binance_frames as bf
from fake_exchange import usdm
from fake_exchange.binance_frames import SPOT, Payload, Venue
from fake_exchange.ccxt_config import ccxt_config
from fake_exchange.limits import BinanceLimits, LimitStats, MessageMeter, WeightLimiter
from fake_exchange.market_state import MarketState
from fake_exchange.protocol import parse_control, stream_ok, streams_from_path, too_many_streams
from fake_exchange.push_server import PushEngine, State, chain
from fake_exchange.rest import RestApi, fault_middleware, limit_middleware
from fake_exchange.sources import Clock, Event, FrameSource, unified_symbols
from fake_exchange.usdm import Category
from fake_exchange.ws_conn import Outbox, WsConn


@dataclass(frozen=True, slots=True)
class SentFrame:
    """One data frame written to one socket."""

    conn_id: int
    stream: str
    payload: Payload
    sent_ns: int


@dataclass(eq=False)
class BinanceConn(WsConn[str]):
    """A Binance websocket: subscribed to stream names, combined (`/stream`) or not."""

    combined: bool = False
    """Frames in the `{"stream": ..., "data": ...}` envelope (`/stream` urls)."""
    category: Category | None = None
    """USD-M: the url category it was opened on (`/public/ws`, `/market/ws`); None: `/ws`."""
    meter: MessageMeter | None = None
    closing: bool = False

    @property
    def streams(self) -> KeysView[str]:
        return self.subs.keys()


class FakeExchange(PushEngine[SentFrame, str, BinanceConn]):
    """Binance spot (or USD-M futures, with a USD-M source), on 127.0.0.1, close enough that
    `ccxt.pro.binance` (`ccxt.pro.binanceusdm`) works unchanged."""

    label = "fake exchange"
    ws_off_close = (1000, b"closed by fake exchange")

    def __init__(
        self,
        source: FrameSource,
        host: str = "127.0.0.1",
        port: int = 0,
        autoplay: bool = True,
        *,
        queue_size: int = 10_000,
        sent_limit: int = 1_000_000,
        websocket: bool = True,
        limits: BinanceLimits | None = None,
        clock: Callable[[], float] = time.time,
        hold_until_subscribed: float | None = None,
    ) -> None:
        super().__init__(
            host,
            port,
            autoplay,
            websocket=websocket,
            queue_size=queue_size,
            sent_limit=sent_limit,
            hold_until_subscribed=hold_until_subscribed,
        )
        self.log = logging.getLogger("fake_exchange")
        self.source = source
        self._market: MarketState | None = None
        self._info: Payload = {}
        self._symbol_ids: frozenset[str] = frozenset()
        self._markets: list[str] = []
        self.limits = limits
        """Binance's limits (request weight, streams and messages per connection), or None:
        off (the default)."""
        self._limiter = WeightLimiter(limits) if limits is not None else None
        self._clock = clock
        self.venue: Venue = SPOT
        """Spot or USD-M: the source's, known once started."""
        self._drops: dict[str, int] = {}
        self.dropped: dict[str, int] = {}
        """Frames `drop()` kept from their subscribers so far, by stream."""

    # ------------------------------------------------------------------ the engine's hooks

    def _load(self) -> None:
        self.source.prepare()

    def _setup(self) -> None:
        info = self.source.exchange_info()
        self.venue = venue = self.source.venue
        self._market = MarketState(self.source.snapshots(), self.source.kline_intervals, venue)
        now_ms = int(time.time() * 1000)
        for sym_id, contracts in self.source.open_interest().items():  # REST has it at once
            oi = usdm.open_interest_event(sym_id, now_ms, contracts)
            self._market.observe(bf.stream_name(sym_id, usdm.OPEN_INTEREST), oi)
        self._symbol_ids = frozenset(s["symbol"] for s in info["symbols"])
        self._markets = sorted(unified_symbols(info).values())
        self._info = info

    def _routes(self) -> list[web.RouteDef]:
        routes = RestApi(self._info, self._state, venue=self.venue).routes()
        for at in ("", "/public", "/market") if self.venue.futures else ("",):
            routes += [
                web.get(f"{at}/ws", self._ws_handler),
                web.get(f"{at}/ws/{{tail:.*}}", self._ws_handler),
                web.get(f"{at}/stream", self._ws_handler),
            ]
        return routes

    def _middleware(self) -> Middleware:
        faults = fault_middleware(self.faults, lambda: self._websocket)
        if self._limiter is None:
            return faults
        return chain(faults, limit_middleware(self._limiter, self._clock))

    def _events(self, clock: Clock) -> Iterator[Event]:
        return self.source.events(clock, self._interested)

    def _sent_frame(self, conn_id: int, key: str, frame: Payload, sent_ns: int) -> SentFrame:
        return SentFrame(conn_id, key, frame, sent_ns)

    def _connection(
        self, conn_id: int, ws: web.WebSocketResponse, request: web.Request
    ) -> BinanceConn:
        category, path = usdm.split_category(request.path)
        conn = BinanceConn(conn_id, str(conn_id), path, ws, request, Outbox(self._queue_size))
        conn.combined = path.startswith("/stream")
        conn.category = category
        if self.limits is not None:
            conn.meter = MessageMeter(self.limits.messages_per_second)
        return conn

    def _opened(self, conn: BinanceConn) -> None:
        self._subscribe(conn, self._url_streams(conn.request))

    # ------------------------------------------------------------------ public helpers

    @property
    def ws_url(self) -> str:
        return f"ws://{self.host}:{self.port}/ws"

    def ccxt_config(self) -> dict[str, Any]:
        """Config for `ccxt.pro.binance(...)`: every url -> this fake, spot, no rate limit
        (USD-M: for `ccxt.pro.binanceusdm`, linear markets, swap by default)."""
        config = ccxt_config(self.base_url, self.ws_url)
        if self.venue.futures:
            config["options"].update(defaultType="swap", fetchMarkets={"types": ["linear"]})
        return config

    @property
    def limit_stats(self) -> LimitStats | None:
        """What the Binance limits did (429s, 418s, closed connections...); None when off."""
        return self._limiter.stats if self._limiter is not None else None

    @property
    def markets(self) -> list[str]:
        """Unified symbols of every exchangeInfo entry served ('BASE/QUOTE'; USD-M
        'BASE/QUOTE:SETTLE')."""
        return list(self._markets)

    @property
    def market(self) -> MarketState:
        """What the fake published: books, trades, tickers, marks, open interest."""
        return self._state()

    def drop(self, stream: str, n: int = 1) -> None:
        """Keep the next `n` frames of `stream` ('sushiusdt@aggTrade') from its subscribers:
        lost on the way (a trade-id gap for the reader), still applied to the market state
        (REST has them). Frames nobody subscribed are not dropped: the gap waits for a reader;
        `dropped` counts what was dropped."""
        if n < 1:
            raise ValueError("drop needs n >= 1")
        self._drops[stream] = self._drops.get(stream, 0) + n

    def subscribed_streams(self) -> set[str]:
        return self.subscribed()

    async def wait_subscribed(self, streams: Iterable[str], timeout: float = 10.0) -> None:
        """Return once every stream is subscribed by some connection."""
        await super().wait_subscribed(streams, timeout)

    async def send_burst(self, targets: Sequence[str], n: int) -> list[Payload]:
        """Write `n` aggTrades round-robin over symbols, back to back, ids continuing, in order
        with everything queued before; made and written `CHUNK_FRAMES` at a time as ready-made
        websocket frames (`PushEngine._send_chunked`). Returns once all were written."""
        syms = [self._resolve_symbol(t) for t in targets]
        if not syms:
            raise ValueError("send_burst needs at least one symbol")
        now_ms = int(time.time() * 1000)
        state = self._state()
        frames: list[Payload] = []

        def made() -> Iterator[tuple[str, Payload]]:
            for i in range(n):
                sym = syms[i % len(syms)]
                frame = state.next_burst_trade(sym, now_ms)
                frames.append(frame)
                yield bf.stream_name(sym, "aggTrade"), frame

        await self._send_chunked(made(), self._texts)
        return frames

    # ------------------------------------------------------------------ publishing

    def _state(self) -> MarketState:
        if self._market is None:
            raise RuntimeError("FakeExchange not started")
        return self._market

    def _interested(self, stream: str) -> bool:
        """The source's `interest`: a websocket subscriber, or (depth) a REST poller."""
        return stream in self._subs or stream in self._state().polled

    async def _publish(self, ev: Event) -> None:
        stream, payload = ev.stream, ev.payload
        self._state().observe(stream, payload)
        conns = self._subs.get(stream)
        if not conns or self._dropped(stream):
            return  # a dropped frame is applied to the market state above, never written
        raw: str | None = None
        envelope: str | None = None
        targets: list[tuple[BinanceConn, str, int]] = []
        for conn in conns:
            if conn.closed:
                continue
            if conn.combined:
                if envelope is None:
                    envelope = orjson.dumps({"stream": stream, "data": payload}).decode()
                targets.append((conn, envelope, conn.subs[stream]))
            else:
                if raw is None:
                    raw = orjson.dumps(payload).decode()
                targets.append((conn, raw, conn.subs[stream]))
        await self._deliver(stream, payload, targets)

    def _texts(self, stream: str, payload: Payload) -> list[tuple[BinanceConn, bytes]]:
        """Each open subscriber of `stream` with the bytes it gets (the combined-stream
        envelope or the bare payload), each encoding made once."""
        raw: bytes | None = None
        envelope: bytes | None = None
        out: list[tuple[BinanceConn, bytes]] = []
        for conn in self._subs.get(stream, ()):
            if conn.closed:
                continue
            if conn.combined:
                if envelope is None:
                    envelope = orjson.dumps({"stream": stream, "data": payload})
                out.append((conn, envelope))
            else:
                if raw is None:
                    raw = orjson.dumps(payload)
                out.append((conn, raw))
        return out

    def _dropped(self, stream: str) -> bool:
        """A planned gap in a subscribed stream: `faults.depth_gap` or `drop()`."""
        faults = self.faults
        if faults.depth_gap_pending() and "@depth" in stream and faults.take_depth_drop(stream):
            return True
        left = self._drops.get(stream, 0) if self._drops else 0
        if not left:
            return False
        if left == 1:
            del self._drops[stream]
        else:
            self._drops[stream] = left - 1
        self.dropped[stream] = self.dropped.get(stream, 0) + 1
        return True

    def _resolve_symbol(self, target: str) -> str:
        sym = bf.split_stream(target)[0] if "@" in target else bf.symbol_id(target)
        if sym not in self._symbol_ids:
            raise ValueError(f"unknown symbol {target!r}")
        return sym

    # ------------------------------------------------------------------ websocket requests

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        """Refuse a url naming more streams than a connection may hold, as Binance does."""
        lim = self.limits
        if lim is not None and len(set(self._url_streams(request))) > lim.streams_per_connection:
            self._limit_stats().refused_connections += 1
            return web.json_response(
                bf.error_body(-1, f"Too many streams: {lim.streams_per_connection} at most"),
                status=400,
            )
        return await super()._ws_handler(request)

    def _url_streams(self, request: web.Request) -> list[str]:
        """The streams a url names ('/stream?streams=a/b', '/ws/a/b'): the valid ones."""
        category, path = usdm.split_category(request.path)
        named = streams_from_path(path, request.query.get("streams"))
        return [s for s in named if self._stream_ok(s, category)]

    def _stream_ok(self, stream: str, on: Category | None) -> bool:
        """A stream this fake serves on a url of category `on` (spot: no categories)."""
        known = self._symbol_ids.__contains__
        if self.venue.futures:
            return usdm.stream_ok(stream, known, on)
        return stream_ok(stream, known)

    def _limit_stats(self) -> LimitStats:
        if self._limiter is None:
            raise RuntimeError("no limits configured")
        return self._limiter.stats

    def _on_text(self, conn: BinanceConn, text: str) -> None:
        if conn.closing:
            return
        if conn.meter is not None and not conn.meter.allow(asyncio.get_running_loop().time()):
            # Binance: "a connection that goes beyond the limit will be disconnected"
            self._limit_stats().closed_for_messages += 1
            self.log.info("ws connection %d closed: too many messages", conn.conn_id)
            conn.closing = True
            self._spawn(self._close_for_messages(conn))
            return
        ctl = parse_control(
            text, self._symbol_ids.__contains__, lambda s: self._stream_ok(s, conn.category)
        )
        lim = self.limits
        if ctl.method == "SUBSCRIBE" and lim is not None:
            refusal = too_many_streams(conn.streams, ctl, lim.streams_per_connection)
            if refusal is not None:
                self._limit_stats().refused_subscriptions += 1
                ctl.method, ctl.reply = "ERROR", refusal
        if ctl.method == "SUBSCRIBE":
            self._subscribe(conn, ctl.streams)
        elif ctl.method == "UNSUBSCRIBE":
            for stream in ctl.streams:
                self._unregister(conn, stream)
        elif ctl.method == "LIST_SUBSCRIPTIONS":
            ctl.reply = {"result": sorted(conn.streams), "id": ctl.request_id}
        if ctl.reply is not None:
            self._control(conn, ctl.reply)

    async def _close_for_messages(self, conn: BinanceConn) -> None:
        """Close (1008) once the replies already due were written (1 s at most)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self.flush([conn])
        await conn.ws.close(code=1008, message=b"Too many requests")

    def _subscribe(self, conn: BinanceConn, streams: list[str]) -> None:
        """New streams get a subscription; ones already held keep theirs."""
        for stream in streams:
            if stream not in conn.subs:
                self._register(conn, stream)
        self._notify_subscribed()


__all__ = ["BinanceConn", "FakeExchange", "SentFrame", "State"]
