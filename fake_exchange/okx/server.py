"""The fake OKX v5 public server: websocket fan-out of a frame source, REST, faults.

Same shape as `fake_exchange.FakeExchange`; this module holds the server's lifecycle, the player
and the fan-out. A `books` subscription gets a snapshot of the mirrored book right after its ack,
in the same outbox as the updates (`connection`), so the snapshot and the updates that follow
always chain by seqId. Book faults (`book_faults`) change only the frames written, never the
mirror; requests are parsed in `ws_protocol`, the mirror REST answers from is `market`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import itertools
import logging
import time
from collections.abc import Iterable
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from fake_exchange.faults import Faults
from fake_exchange.okx import frames as of
from fake_exchange.okx.book_faults import SEQ_CHANNELS, BookFaults
from fake_exchange.okx.connection import Connection, Key, OkxSentFrame, Out, Outbox, write_loop
from fake_exchange.okx.frame_source import OkxEvent, OkxFrameSource
from fake_exchange.okx.frames import Payload
from fake_exchange.okx.instruments import unified_symbols
from fake_exchange.okx.market import OkxMarket
from fake_exchange.okx.rest import OkxRestApi, okx_fault_middleware
from fake_exchange.okx.ws_protocol import initial_frame, parse_requests

log = logging.getLogger("fake_exchange.okx")

_YIELD_EVERY = 256
"""Events published back to back before the player yields to the loop (fast mode)."""


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class FakeOkx:
    """OKX v5 public, on 127.0.0.1, close enough that `ccxt.pro.okx` works unchanged."""

    def __init__(
        self,
        source: OkxFrameSource,
        host: str = "127.0.0.1",
        port: int = 0,
        autoplay: bool = True,
        *,
        websocket: bool = True,
        answer_pings: bool = True,
        queue_size: int = 10_000,
        sent_limit: int = 1_000_000,
    ) -> None:
        if not _loopback(host):
            raise ValueError(f"FakeOkx serves loopback addresses only, not {host!r}")
        self.source = source
        self.host = host
        self.port = port
        self.autoplay = autoplay
        self.answer_pings = answer_pings
        self.faults = Faults(self)
        self.state = State.NEW
        self.pings = 0
        self._websocket = websocket
        self._queue_size = queue_size
        self._sent_limit = sent_limit
        self._sent: list[OkxSentFrame] = []
        self._conns: dict[int, Connection] = {}
        self._subs: dict[Key, set[Connection]] = {}
        self._ids = itertools.count(1)
        self._epochs = itertools.count(1)
        self._sub_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._player: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._market: OkxMarket | None = None
        self._markets: list[str] = []
        self._book_faults = BookFaults()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the source, bind, and (with autoplay) start playing."""
        if self.state is not State.NEW:
            raise RuntimeError(f"FakeOkx cannot start from state {self.state.value}")
        await asyncio.to_thread(self.source.prepare)
        instruments = self.source.instruments()
        self._market = OkxMarket(instruments, self.source.books())
        self._markets = sorted(unified_symbols(instruments).values())
        app = web.Application(
            middlewares=[okx_fault_middleware(self.faults, lambda: self._websocket)]
        )
        app.add_routes(OkxRestApi(self._state).routes())
        app.add_routes(
            [
                web.get("/ws/v5/public", self._ws_handler),
                web.get("/ws/v5/business", self._ws_handler),
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
        log.info("fake okx listening on %s (%d spot markets)", self.base_url, len(self._markets))
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
        log.info("fake okx stopped")

    async def __aenter__(self) -> FakeOkx:
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
        """ccxt's `urls.api.ws` form: it appends '/public' or '/business' itself."""
        return f"ws://{self.host}:{self.port}/ws/v5"

    def ccxt_config(self) -> dict[str, Any]:
        """Config for `ccxt.pro.okx(...)`: both urls -> this fake, spot only, no rate limit."""
        return {
            "enableRateLimit": False,
            "urls": {"api": {"rest": self.base_url, "ws": self.ws_url}},
            "options": {"defaultType": "spot", "fetchMarkets": {"types": ["spot"]}},
        }

    @property
    def markets(self) -> list[str]:
        """Unified symbols ('BASE/QUOTE') of every SPOT instrument served."""
        return list(self._markets)

    @property
    def market(self) -> OkxMarket:
        """The mirrored market REST answers from (books, trades, last tickers)."""
        return self._state()

    @property
    def sent(self) -> list[OkxSentFrame]:
        """Data frames written to sockets, oldest first (trimmed past `sent_limit`)."""
        return self._sent

    @property
    def websocket_enabled(self) -> bool:
        return self._websocket

    @websocket_enabled.setter
    def websocket_enabled(self, enabled: bool) -> None:
        """False: handshakes get 503 and open sockets are closed (1013 try again later)."""
        self._websocket = enabled
        if not enabled:
            for conn in list(self._conns.values()):
                self._spawn(conn.ws.close(code=1013, message=b"websocket disabled"))

    def subscribed(self) -> set[Key]:
        """(channel, instId) pairs some connection is subscribed to."""
        return {k for k, conns in self._subs.items() if conns}

    async def wait_subscribed(self, keys: Iterable[Key], timeout: float = 10.0) -> None:
        """Return once every (channel, instId) is subscribed by some connection."""
        want = set(keys)
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            while not want <= self.subscribed():
                fut: asyncio.Future[None] = loop.create_future()
                self._sub_waiters.append(fut)
                await fut

    def play(self) -> None:
        """Start the source (idempotent)."""
        if self.state is not State.RUNNING:
            raise RuntimeError("play() needs a started FakeOkx")
        if self._player is None:
            self._player = asyncio.create_task(self._play(), name="fake-okx-player")

    async def wait_done(self, timeout: float | None = None) -> None:
        """Until a finite source is exhausted and every frame it produced was written."""
        if self._player is None:
            raise RuntimeError("wait_done() before play()")
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._player)
            await self.flush()

    async def flush(self) -> None:
        """Wait until everything queued so far on every connection was written."""
        loop = asyncio.get_running_loop()
        markers: list[asyncio.Future[None]] = []
        for conn in list(self._conns.values()):
            if conn.closed:
                continue
            marker: asyncio.Future[None] = loop.create_future()
            conn.outbox.push_control(Out(marker=marker))
            markers.append(marker)
        if markers:
            await asyncio.gather(*markers)

    def book_gap(self, n: int = 1, inst_id: str | None = None) -> None:
        """The next `n` books updates (of `inst_id`, or any) skip a seqId: prevSeqId is the
        skipped id, not the last one sent. Later frames chain on normally from there."""
        self._book_faults.add_gap(n, inst_id)

    def bad_checksum(self, n: int = 1, inst_id: str | None = None) -> None:
        """The next `n` books updates (of `inst_id`, or any) carry a wrong checksum."""
        self._book_faults.add_bad_checksum(n, inst_id)

    @property
    def book_gaps_sent(self) -> int:
        return self._book_faults.gaps_sent

    @property
    def bad_checksums_sent(self) -> int:
        return self._book_faults.bad_checksums_sent

    @property
    def faulted_book_seqs(self) -> list[tuple[str, int]]:
        """(instId, seqId) of each books frame sent with a gap before it or a bad checksum."""
        return list(self._book_faults.faulted)

    # ------------------------------------------------------------------ FaultTarget

    def close_connections(self, abrupt: bool) -> int:
        conns = list(self._conns.values())
        for conn in conns:
            transport = conn.request.transport
            if abrupt and transport is not None:
                transport.abort()
            else:
                self._spawn(conn.ws.close(code=1000, message=b"closed by fake okx"))
        log.info("closed %d connections (abrupt=%s)", len(conns), abrupt)
        return len(conns)

    def inject_raw(self, texts: list[str]) -> int:
        conns = [c for c in self._conns.values() if not c.closed]
        for conn in conns:
            for text in texts:
                conn.outbox.push_control(Out(text))
        return len(conns)

    # ------------------------------------------------------------------ player

    def _state(self) -> OkxMarket:
        if self._market is None:
            raise RuntimeError("FakeOkx not started")
        return self._market

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play(self) -> None:
        loop = asyncio.get_running_loop()
        target = loop.time()
        streak = count = 0
        for ev in self.source.events(lambda: int(time.time() * 1000)):
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
            await self._publish(ev)
            count += 1
        log.info("source exhausted after %d events", count)

    async def _publish(self, ev: OkxEvent) -> None:
        self._state().observe(ev.channel, ev.inst_id, ev.frame)
        key = (ev.channel, ev.inst_id)
        conns = self._subs.get(key)
        if not conns:
            return
        frame = self._book_faults.outgoing(ev.channel, ev.inst_id, ev.frame)
        text = orjson.dumps(frame).decode()
        targets = [(c, c.subs[key]) for c in conns if not c.closed]
        for conn, epoch in targets:
            out = Out(text, key, frame)
            if not conn.outbox.try_push_data(out):
                await conn.outbox.push_data(out, conn.still_subscribed(key, epoch))

    # ------------------------------------------------------------------ connections

    def _record(self, frame: OkxSentFrame) -> None:
        self._sent.append(frame)
        if len(self._sent) > self._sent_limit:
            del self._sent[: len(self._sent) - self._sent_limit // 2]

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn_id = next(self._ids)
        kind = request.path.rsplit("/", 1)[-1]
        conn = Connection(conn_id, f"{conn_id:08x}", kind, ws, request, Outbox(self._queue_size))
        self._conns[conn_id] = conn
        conn.writer = asyncio.create_task(
            write_loop(conn, self.faults.stalled_for, self._record), name=f"okx-ws-writer-{conn_id}"
        )
        log.debug("ws connection %d on %s", conn_id, request.path_qs)
        try:
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
        finally:
            await self._drop(conn)
        return ws

    def _control(self, conn: Connection, body: Payload | str) -> None:
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        conn.outbox.push_control(Out(text))

    def _on_text(self, conn: Connection, text: str) -> None:
        for req in parse_requests(text, conn.kind, conn.tag, self._state().inst_ids):
            if req.op == "ping":
                self.pings += 1
                if self.answer_pings:
                    self._control(conn, "pong")
            elif req.error is not None:
                self._control(conn, req.error)
            elif req.op == "subscribe":
                self._subscribe(conn, req.key, req.arg)
            else:
                self._unsubscribe(conn, req.key)
                self._control(conn, of.ws_event("unsubscribe", req.arg, conn.tag))

    def _subscribe(self, conn: Connection, key: Key, arg: Payload) -> None:
        """Register, ack, then the channel's initial state; all before any later update."""
        conn.subs[key] = next(self._epochs)
        self._subs.setdefault(key, set()).add(conn)
        self._control(conn, of.ws_event("subscribe", arg, conn.tag))
        initial = self._initial(*key)
        if initial is not None:
            text = orjson.dumps(initial).decode()
            conn.outbox.push_control(Out(text, key, initial))
        waiters, self._sub_waiters = self._sub_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _initial(self, channel: str, inst: str) -> Payload | None:
        """books: a snapshot of the mirror; books5/bbo-tbt: the current top; else nothing."""
        if channel not in SEQ_CHANNELS:
            return None
        book = self._state().book(inst)
        ts = book.ts_ms or int(time.time() * 1000)
        return initial_frame(channel, inst, book, self._book_faults.seq_shift(inst), ts)

    def _unsubscribe(self, conn: Connection, key: Key) -> None:
        conn.subs.pop(key, None)
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[key]

    async def _drop(self, conn: Connection) -> None:
        conn.closed = True
        self._conns.pop(conn.conn_id, None)
        for key in list(conn.subs):
            self._unsubscribe(conn, key)
        await conn.release()
        log.debug("ws connection %d closed", conn.conn_id)


__all__ = ["FakeOkx", "Key", "OkxSentFrame", "State"]
