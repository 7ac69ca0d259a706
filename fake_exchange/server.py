"""The fake Binance server, spot or USD-M futures: websocket fan-out of a frame source, REST,
faults.

Each connection owns a bounded queue and one writer task, so frames reach a socket in the order
they were produced and a slow reader slows the player (backpressure) instead of losing frames.
Every frame actually written is logged in `sent` for tests to compare with what CCXT returned.
The source keeps playing whether or not anyone listens (or the websocket is switched off), so
REST always answers from a moving market; with `hold_until_subscribed` it starts only that long
after the first websocket subscription (`push_server.Hold`, shared with the push fakes).

Which market it speaks is the source's `venue`: USD-M adds its REST prefix (`/fapi/v1`), its
stream grammar, and the `/public/ws` and `/market/ws` urls CCXT uses for it
(`fake_exchange.usdm`); everything else is the same engine.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from fake_exchange import binance_frames as bf
from fake_exchange import usdm
from fake_exchange.binance_frames import SPOT, Payload, Venue
from fake_exchange.ccxt_config import ccxt_config
from fake_exchange.faults import Faults
from fake_exchange.limits import BinanceLimits, LimitStats, MessageMeter, WeightLimiter
from fake_exchange.market_state import MarketState
from fake_exchange.protocol import parse_control, stream_ok, streams_from_path, too_many_streams
from fake_exchange.push_server import Hold
from fake_exchange.rest import RestApi, fault_middleware, limit_middleware
from fake_exchange.sources import FrameSource, unified_symbols
from fake_exchange.usdm import Category
from fake_exchange.wsframes import text_frames

log = logging.getLogger("fake_exchange")

_BURST_CHUNK = 2_000
"""Burst frames per transport write."""
_BURST_HIGH_WATER = 1 << 20
"""Bytes the transport may hold before a burst waits for the client to read."""
_YIELD_EVERY = 256
"""Events published back to back before the player yields to the loop (fast mode)."""
_CATEGORIES: tuple[Category, ...] = ("public", "market")
"""USD-M's url categories (`/public/ws`, `/market/ws`)."""


@dataclass(frozen=True, slots=True)
class SentFrame:
    """One data frame written to one socket."""

    conn_id: int
    stream: str
    payload: Payload
    sent_ns: int


@dataclass(slots=True)
class _Out:
    """A queued write: text (+ stream/payload for the sent log), a flush marker, or a burst
    chunk (``raw``: ready-made frames for ``frames``, written in one go)."""

    text: str = ""
    stream: str | None = None
    payload: Payload | None = None
    marker: asyncio.Future[None] | None = None
    raw: bytes = b""
    frames: list[tuple[str, Payload]] | None = None


@dataclass(eq=False)
class _Connection:
    conn_id: int
    ws: web.WebSocketResponse
    request: web.Request
    combined: bool
    queue: asyncio.Queue[_Out]
    streams: set[str] = field(default_factory=set)
    writer: asyncio.Task[None] | None = None
    closed: bool = False
    meter: MessageMeter | None = None
    category: Category | None = None
    """USD-M: the url category it was opened on (`/public/ws`, `/market/ws`); None: `/ws`."""


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class FakeExchange:
    """Binance spot (or USD-M futures, with a USD-M source), on 127.0.0.1, close enough that
    `ccxt.pro.binance` (`ccxt.pro.binanceusdm`) works unchanged."""

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
        self.source = source
        self.host = host
        self.port = port
        self.autoplay = autoplay
        self.faults = Faults(self)
        self.state = State.NEW
        self._queue_size = queue_size
        self._sent_limit = sent_limit
        self._sent: list[SentFrame] = []
        self._conns: dict[int, _Connection] = {}
        self._subs: dict[str, set[_Connection]] = {}
        self._ids = itertools.count(1)
        self._sub_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._player: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._market: MarketState | None = None
        self._symbol_ids: frozenset[str] = frozenset()
        self._markets: list[str] = []
        self._websocket = websocket
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
        self.hold = Hold(hold_until_subscribed)
        """`hold_until_subscribed`: the source starts `hold.delay` s after the first
        subscription (`hold.subscribed_at`)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the source, bind, and (with autoplay) start playing."""
        if self.state is not State.NEW:
            raise RuntimeError(f"FakeExchange cannot start from state {self.state.value}")
        await asyncio.to_thread(self.source.prepare)
        info = self.source.exchange_info()
        self.venue = venue = self.source.venue
        self._market = MarketState(self.source.snapshots(), self.source.kline_intervals, venue)
        now_ms = int(time.time() * 1000)
        for sym_id, contracts in self.source.open_interest().items():  # REST has it at once
            oi = usdm.open_interest_event(sym_id, now_ms, contracts)
            self._market.observe(bf.stream_name(sym_id, usdm.OPEN_INTEREST), oi)
        self._symbol_ids = frozenset(s["symbol"] for s in info["symbols"])
        self._markets = sorted(unified_symbols(info).values())
        middlewares = [fault_middleware(self.faults)]
        if self._limiter is not None:
            middlewares.append(limit_middleware(self._limiter, self._clock))
        app = web.Application(middlewares=middlewares)
        app.add_routes(RestApi(info, self._state, venue=venue).routes())
        prefixes = ("", "/public", "/market") if venue.futures else ("",)
        for at in prefixes:
            app.add_routes(
                [
                    web.get(f"{at}/ws", self._ws_handler),
                    web.get(f"{at}/ws/{{tail:.*}}", self._ws_handler),
                    web.get(f"{at}/stream", self._ws_handler),
                ]
            )
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        try:
            site = web.TCPSite(self._runner, self.host, self.port)
            await site.start()
        except BaseException:
            await self._runner.cleanup()
            raise
        self.port = self._runner.addresses[0][1]
        self.state = State.RUNNING
        log.info("fake exchange listening on %s (%d symbols)", self.base_url, len(self._markets))
        if self.autoplay:
            self.play()

    async def stop(self) -> None:
        """Stop playing, close every socket (1001 going away), unbind."""
        if self.state is not State.RUNNING:
            self.state = State.STOPPED
            return
        self.state = State.STOPPED
        if self._player is not None and not self._player.done():
            self._player.cancel()
            await asyncio.wait([self._player])
        for conn in list(self._conns.values()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"server stopping"), 2)
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=2)
        if self._runner is not None:
            await self._runner.cleanup()
        log.info("fake exchange stopped")

    async def __aenter__(self) -> FakeExchange:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ public helpers

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

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
    def websocket_enabled(self) -> bool:
        """False: websocket handshakes answer 503 while REST keeps serving a moving market."""
        return self._websocket

    @websocket_enabled.setter
    def websocket_enabled(self, enabled: bool) -> None:
        """Switching off also closes the open sockets (1000), as a websocket service going
        down would; switching on accepts handshakes again."""
        was, self._websocket = self._websocket, enabled
        if was and not enabled and self.state is State.RUNNING:
            self.close_connections(abrupt=False)

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

    @property
    def sent(self) -> list[SentFrame]:
        """Data frames written to sockets, oldest first (trimmed past `sent_limit`)."""
        return self._sent

    def subscribed_streams(self) -> set[str]:
        return {s for s, conns in self._subs.items() if conns}

    async def wait_subscribed(self, streams: Iterable[str], timeout: float = 10.0) -> None:
        """Return once every stream is subscribed by some connection."""
        want = set(streams)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not want <= self.subscribed_streams():
                fut: asyncio.Future[None] = loop.create_future()
                self._sub_waiters.append(fut)
                await fut

    def play(self) -> None:
        """Start the source (idempotent)."""
        if self.state is not State.RUNNING:
            raise RuntimeError("play() needs a started FakeExchange")
        if self._player is None:
            self._player = asyncio.create_task(self._play(), name="fake-exchange-player")

    async def wait_done(self, timeout: float | None = None) -> None:
        """Until a finite source is exhausted and every frame it produced was written."""
        if self._player is None:
            raise RuntimeError("wait_done() before play()")
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._player)
            await self._flush(list(self._conns.values()))

    async def send_burst(self, targets: Sequence[str], n: int) -> list[Payload]:
        """Write `n` aggTrades round-robin over symbols, back to back, ids continuing.

        Encoded up front and written in chunks of ready-made websocket frames
        (`fake_exchange.wsframes`), in order with everything queued before: through
        `send_str` one by one, the fake ran out of CPU before the client under test did.
        """
        syms = [self._resolve_symbol(t) for t in targets]
        if not syms:
            raise ValueError("send_burst needs at least one symbol")
        now_ms = int(time.time() * 1000)
        state = self._state()
        frames: list[Payload] = []
        touched: set[_Connection] = set()
        for start in range(0, n, _BURST_CHUNK):  # made and written a chunk at a time
            per_conn: dict[_Connection, list[tuple[str, Payload, bytes]]] = {}
            for i in range(start, min(n, start + _BURST_CHUNK)):
                sym = syms[i % len(syms)]
                frame = state.next_burst_trade(sym, now_ms)
                frames.append(frame)
                stream = bf.stream_name(sym, "aggTrade")
                for conn, text in self._texts(stream, frame):
                    per_conn.setdefault(conn, []).append((stream, frame, text))
            for conn, items in per_conn.items():
                out = _Out(
                    raw=text_frames(t for _, _, t in items),
                    frames=[(stream, frame) for stream, frame, _ in items],
                )
                await conn.queue.put(out)
            touched.update(per_conn)
            await asyncio.sleep(0)  # the writers send this chunk while the next one is made
        await self._flush(list(touched))
        return frames

    # ------------------------------------------------------------------ FaultTarget

    def close_connections(self, abrupt: bool) -> int:
        conns = list(self._conns.values())
        for conn in conns:
            transport = conn.request.transport
            if abrupt and transport is not None:
                transport.abort()
            else:
                self._spawn(conn.ws.close(code=1000, message=b"closed by fake exchange"))
        log.info("closed %d connections (abrupt=%s)", len(conns), abrupt)
        return len(conns)

    def inject_raw(self, texts: list[str]) -> int:
        conns = [c for c in self._conns.values() if not c.closed]
        for conn in conns:
            for text in texts:
                self._put_nowait(conn, _Out(text))
        return len(conns)

    # ------------------------------------------------------------------ internals

    def _state(self) -> MarketState:
        if self._market is None:
            raise RuntimeError("FakeExchange not started")
        return self._market

    def _interested(self, stream: str) -> bool:
        """The source's `interest`: a websocket subscriber, or (depth) a REST poller."""
        return stream in self._subs or stream in self._state().polled

    def _drop_depth(self, stream: str) -> bool:
        """A planned `depth_gap` drop of this frame (only counted when someone reads it)."""
        return (
            self.faults.depth_gap_pending()
            and "@depth" in stream
            and stream in self._subs
            and self.faults.take_depth_drop(stream)
        )

    def _drop_planned(self, stream: str) -> bool:
        """A planned `drop()` of this frame (only taken when someone reads it)."""
        left = self._drops.get(stream, 0)
        if not left or stream not in self._subs:
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

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _notify_subscribed(self) -> None:
        waiters, self._sub_waiters = self._sub_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _play(self) -> None:
        if self.hold.delay is not None:
            await self.hold.wait()
            log.info("playing: %.1f s after the first subscription", self.hold.delay)
        loop = asyncio.get_running_loop()
        target = loop.time()
        streak = 0
        count = 0
        for ev in self.source.events(lambda: int(time.time() * 1000), self._interested):
            target += ev.delay
            stall = self.faults.stalled_for()
            while stall > 0:
                await asyncio.sleep(stall)
                target += stall
                stall = self.faults.stalled_for()
            wait = target - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
                streak = 0
            else:
                streak += 1
                if streak >= _YIELD_EVERY:
                    await asyncio.sleep(0)
                    streak = 0
            self._state().observe(ev.stream, ev.payload)
            count += 1
            if self._drop_depth(ev.stream) or (self._drops and self._drop_planned(ev.stream)):
                continue  # applied to the market state above, never written: a gap
            await self._fanout(ev.stream, ev.payload)
        log.info("source exhausted after %d events", count)

    def _texts(self, stream: str, payload: Payload) -> list[tuple[_Connection, bytes]]:
        """Each open subscriber of `stream` with the text it gets (the combined-stream
        envelope or the bare payload), each encoding made once."""
        raw: bytes | None = None
        envelope: bytes | None = None
        out: list[tuple[_Connection, bytes]] = []
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

    async def _fanout(self, stream: str, payload: Payload) -> list[_Connection]:
        targets = self._texts(stream, payload)
        for conn, text in targets:
            out = _Out(text.decode(), stream, payload)
            try:
                conn.queue.put_nowait(out)
            except asyncio.QueueFull:
                await conn.queue.put(out)
        return [conn for conn, _ in targets]

    def _put_nowait(self, conn: _Connection, out: _Out) -> None:
        try:
            conn.queue.put_nowait(out)
        except asyncio.QueueFull:
            log.warning("connection %d queue full, control frame dropped", conn.conn_id)

    async def _flush(self, conns: list[_Connection]) -> None:
        """Wait until everything queued so far on these connections was written."""
        loop = asyncio.get_running_loop()
        markers: list[asyncio.Future[None]] = []
        for conn in conns:
            if conn.closed:
                continue
            marker: asyncio.Future[None] = loop.create_future()
            await conn.queue.put(_Out(marker=marker))
            markers.append(marker)
        if markers:
            await asyncio.gather(*markers)

    async def _writer(self, conn: _Connection) -> None:
        while True:
            out = await conn.queue.get()
            if out.marker is not None:
                if not out.marker.done():
                    out.marker.set_result(None)
                continue
            stall = self.faults.stalled_for()
            while stall > 0:
                await asyncio.sleep(stall)
                stall = self.faults.stalled_for()
            if out.frames is not None:
                if not await self._write_raw(conn, out.raw):
                    return
                now = time.time_ns()
                for stream, payload in out.frames:
                    self._record(SentFrame(conn.conn_id, stream, payload, now))
                continue
            try:
                await conn.ws.send_str(out.text)
            except ConnectionError:
                return
            if out.payload is not None and out.stream is not None:
                self._record(SentFrame(conn.conn_id, out.stream, out.payload, time.time_ns()))

    @staticmethod
    async def _write_raw(conn: _Connection, data: bytes) -> bool:
        """Ready-made frames straight to the socket, paced like `send_str`: wait while the
        kernel has not taken the last chunk (a reader that stops reading stalls the burst)."""
        transport = conn.request.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(data)
        while transport.get_write_buffer_size() > _BURST_HIGH_WATER:
            if transport.is_closing():
                return False
            await asyncio.sleep(0.0005)
        return True

    def _record(self, frame: SentFrame) -> None:
        self._sent.append(frame)
        if len(self._sent) > self._sent_limit:
            del self._sent[: len(self._sent) - self._sent_limit // 2]

    def _subscribe(self, conn: _Connection, streams: list[str]) -> None:
        for s in streams:
            conn.streams.add(s)
            self._subs.setdefault(s, set()).add(conn)
        if streams:
            self.hold.subscribed()
        self._notify_subscribed()

    def _unsubscribe(self, conn: _Connection, streams: Iterable[str]) -> None:
        for s in list(streams):
            conn.streams.discard(s)
            subs = self._subs.get(s)
            if subs is not None:
                subs.discard(conn)
                if not subs:
                    del self._subs[s]

    def _stream_ok(self, stream: str, on: Category | None) -> bool:
        """A stream this fake serves on a url of category `on` (spot: no categories)."""
        known = self._symbol_ids.__contains__
        if self.venue.futures:
            return usdm.stream_ok(stream, known, on)
        return stream_ok(stream, known)

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        if not self._websocket:
            return web.Response(status=503, text="503 Service Unavailable: websocket is off")
        path = request.path
        category: Category | None = None
        for cat in _CATEGORIES:
            if path.startswith(f"/{cat}/"):
                category, path = cat, path.removeprefix(f"/{cat}")
        initial = streams_from_path(path, request.query.get("streams"))
        # streams named in the url are subscribed when valid, skipped otherwise
        initial = [s for s in initial if self._stream_ok(s, category)]
        lim = self.limits
        if lim is not None and len(set(initial)) > lim.streams_per_connection:
            self._limit_stats().refused_connections += 1
            return web.json_response(
                bf.error_body(-1, f"Too many streams: {lim.streams_per_connection} at most"),
                status=400,
            )
        ws = web.WebSocketResponse(compress=False, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        combined = path.startswith("/stream")
        conn = _Connection(next(self._ids), ws, request, combined, asyncio.Queue(self._queue_size))
        conn.category = category
        if lim is not None:
            conn.meter = MessageMeter(lim.messages_per_second)
        self._conns[conn.conn_id] = conn
        conn.writer = asyncio.create_task(self._writer(conn), name=f"ws-writer-{conn.conn_id}")
        log.debug("ws connection %d on %s", conn.conn_id, request.path_qs)
        self._subscribe(conn, initial)
        loop = asyncio.get_running_loop()
        try:
            async for msg in ws:
                if msg.type != web.WSMsgType.TEXT:
                    continue
                if conn.meter is not None and not conn.meter.allow(loop.time()):
                    # Binance: "a connection that goes beyond the limit will be disconnected"
                    self._limit_stats().closed_for_messages += 1
                    log.info("ws connection %d closed: too many messages", conn.conn_id)
                    with contextlib.suppress(TimeoutError):  # the replies already due first
                        async with asyncio.timeout(1.0):
                            await self._flush([conn])
                    await ws.close(code=1008, message=b"Too many requests")
                    break
                self._on_control(conn, msg.data)
        finally:
            await self._drop(conn)
        return ws

    def _limit_stats(self) -> LimitStats:
        if self._limiter is None:
            raise RuntimeError("no limits configured")
        return self._limiter.stats

    def _on_control(self, conn: _Connection, text: str) -> None:
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
            self._unsubscribe(conn, ctl.streams)
        elif ctl.method == "LIST_SUBSCRIPTIONS":
            ctl.reply = {"result": sorted(conn.streams), "id": ctl.request_id}
        if ctl.reply is not None:
            self._put_nowait(conn, _Out(orjson.dumps(ctl.reply).decode()))

    async def _drop(self, conn: _Connection) -> None:
        conn.closed = True
        self._conns.pop(conn.conn_id, None)
        self._unsubscribe(conn, set(conn.streams))
        if conn.writer is not None:
            conn.writer.cancel()
            await asyncio.wait([conn.writer])
        while not conn.queue.empty():
            out = conn.queue.get_nowait()
            if out.marker is not None and not out.marker.done():
                out.marker.set_result(None)
        log.debug("ws connection %d closed", conn.conn_id)


__all__ = ["FakeExchange", "SentFrame", "State"]
