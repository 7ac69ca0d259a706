"""The fake OKX v5 public server: websocket fan-out of a frame source, REST, faults.

Same shape as `fake_exchange.FakeExchange`. Each connection owns an outbox (data frames bounded,
so a slow reader slows the player instead of losing frames) and one writer task. A `books`
subscription gets a snapshot of the mirrored book right after its ack, in the same outbox, so
the snapshot and the updates that follow always chain by seqId. Book faults (a seqId gap, a
wrong checksum) are applied on the way out, never to the mirror.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson
from aiohttp import web

from fake_exchange.faults import Faults
from fake_exchange.okx import frames as of
from fake_exchange.okx.frames import Payload
from fake_exchange.okx.rest import OkxMarket, OkxRestApi, okx_fault_middleware
from fake_exchange.okx.sources import OkxEvent, OkxFrameSource, unified_symbols

log = logging.getLogger("fake_exchange.okx")

_YIELD_EVERY = 256
"""Events published back to back before the player yields to the loop (fast mode)."""

Key = tuple[str, str]
"""(channel, instId)."""


@dataclass(frozen=True, slots=True)
class OkxSentFrame:
    """One data frame written to one socket (acks, pongs, errors and garbage are not logged)."""

    conn_id: int
    channel: str
    inst_id: str
    payload: Payload
    sent_ns: int

    @property
    def stream(self) -> str:
        """'channel:instId', the Binance fake's `SentFrame.stream` counterpart."""
        return f"{self.channel}:{self.inst_id}"


@dataclass(slots=True)
class _Out:
    """A queued write; `key`/`frame` set for data frames (logged), `marker` for flushes."""

    text: str = ""
    key: Key | None = None
    frame: Payload | None = None
    marker: asyncio.Future[None] | None = None
    counted: bool = False


class _Outbox:
    """Write queue of one connection: data frames bounded, control frames never wait.

    Control frames (acks, the snapshot sent on subscribe, pongs) must go out in order with the
    data without blocking the reader task, so only frames from the player count against the
    bound.
    """

    def __init__(self, limit: int) -> None:
        self._items: deque[_Out] = deque()
        self._limit = limit
        self._data = 0
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.closed = False

    def push_control(self, out: _Out) -> None:
        self._items.append(out)
        self._readable.set()

    def try_push_data(self, out: _Out) -> bool:
        if self._data >= self._limit:
            return False
        self._append_data(out)
        return True

    async def push_data(self, out: _Out, still_wanted: Callable[[], bool]) -> None:
        """Wait for room; drop the frame if its subscription ended meanwhile."""
        while self._data >= self._limit and not self.closed:
            self._space.clear()
            await self._space.wait()
        if not self.closed and still_wanted():
            self._append_data(out)

    def _append_data(self, out: _Out) -> None:
        out.counted = True
        self._data += 1
        self._items.append(out)
        self._readable.set()

    async def pop(self) -> _Out:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        out = self._items.popleft()
        if out.counted:
            self._data -= 1
            self._space.set()
        return out

    def close(self) -> list[_Out]:
        """Wake any waiting pusher; hand back what was never written."""
        self.closed = True
        self._space.set()
        left = list(self._items)
        self._items.clear()
        return left


@dataclass(eq=False)
class _Connection:
    conn_id: int
    tag: str
    kind: str
    ws: web.WebSocketResponse
    request: web.Request
    outbox: _Outbox
    subs: dict[Key, int] = field(default_factory=dict)
    """Subscribed (channel, instId) -> subscription epoch (new on every subscribe)."""
    writer: asyncio.Task[None] | None = None
    closed: bool = False


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
        self.book_gaps_sent = 0
        self.bad_checksums_sent = 0
        self._websocket = websocket
        self._queue_size = queue_size
        self._sent_limit = sent_limit
        self._sent: list[OkxSentFrame] = []
        self._conns: dict[int, _Connection] = {}
        self._subs: dict[Key, set[_Connection]] = {}
        self._ids = itertools.count(1)
        self._epochs = itertools.count(1)
        self._sub_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._player: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._market: OkxMarket | None = None
        self._markets: list[str] = []
        self._seq_shift: dict[str, int] = {}
        self._gaps: list[str | None] = []
        self._bad_checksums: list[str | None] = []

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
            conn.outbox.push_control(_Out(marker=marker))
            markers.append(marker)
        if markers:
            await asyncio.gather(*markers)

    def book_gap(self, n: int = 1, inst_id: str | None = None) -> None:
        """The next `n` books updates (of `inst_id`, or any) skip a seqId: prevSeqId is the
        skipped id, not the last one sent. Later frames chain on normally from there."""
        self._gaps.extend([inst_id] * n)

    def bad_checksum(self, n: int = 1, inst_id: str | None = None) -> None:
        """The next `n` books updates (of `inst_id`, or any) carry a wrong checksum."""
        self._bad_checksums.extend([inst_id] * n)

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
                conn.outbox.push_control(_Out(text))
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
        frame = self._outgoing(ev)
        text = orjson.dumps(frame).decode()
        targets = [(c, c.subs[key]) for c in conns if not c.closed]
        for conn, epoch in targets:
            out = _Out(text, key, frame)
            if not conn.outbox.try_push_data(out):
                await conn.outbox.push_data(out, _still_subscribed(conn, key, epoch))

    def _outgoing(self, ev: OkxEvent) -> Payload:
        """The frame as written: seqIds moved past injected gaps, faults applied."""
        inst = ev.inst_id
        gap = bad = False
        if ev.channel == "books" and ev.frame.get("action") == "update":
            gap = _take(self._gaps, inst)
            bad = _take(self._bad_checksums, inst)
        if gap:
            self._seq_shift[inst] = self._seq_shift.get(inst, 0) + 1
            self.book_gaps_sent += 1
        shift = self._seq_shift.get(inst, 0)
        if not bad and (shift == 0 or ev.channel not in ("books", "books5", "bbo-tbt")):
            return ev.frame
        rows = []
        for row in ev.frame["data"]:
            row = dict(row)
            row["seqId"] += shift
            if row.get("prevSeqId", -1) != -1:
                row["prevSeqId"] += shift
            if bad:
                row["checksum"] ^= 1
                self.bad_checksums_sent += 1
                bad = False
            rows.append(row)
        return dict(ev.frame, data=rows)

    # ------------------------------------------------------------------ connections

    def _record(self, frame: OkxSentFrame) -> None:
        self._sent.append(frame)
        if len(self._sent) > self._sent_limit:
            del self._sent[: len(self._sent) - self._sent_limit // 2]

    async def _writer(self, conn: _Connection) -> None:
        while True:
            out = await conn.outbox.pop()
            if out.marker is not None:
                if not out.marker.done():
                    out.marker.set_result(None)
                continue
            stall = self.faults.stalled_for()
            while stall > 0:
                await asyncio.sleep(stall)
                stall = self.faults.stalled_for()
            try:
                await conn.ws.send_str(out.text)
            except ConnectionError:
                return
            if out.key is not None and out.frame is not None:
                self._record(OkxSentFrame(conn.conn_id, *out.key, out.frame, time.time_ns()))

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn_id = next(self._ids)
        kind = request.path.rsplit("/", 1)[-1]
        conn = _Connection(conn_id, f"{conn_id:08x}", kind, ws, request, _Outbox(self._queue_size))
        self._conns[conn_id] = conn
        conn.writer = asyncio.create_task(self._writer(conn), name=f"okx-ws-writer-{conn_id}")
        log.debug("ws connection %d on %s", conn_id, request.path_qs)
        try:
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
        finally:
            await self._drop(conn)
        return ws

    def _control(self, conn: _Connection, body: Payload | str) -> None:
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        conn.outbox.push_control(_Out(text))

    def _on_text(self, conn: _Connection, text: str) -> None:
        if text == "ping":
            self.pings += 1
            if self.answer_pings:
                self._control(conn, "pong")
            return
        try:
            msg = orjson.loads(text)
        except orjson.JSONDecodeError:
            msg = None
        op = msg.get("op") if isinstance(msg, dict) else None
        args = msg.get("args") if isinstance(msg, dict) else None
        if op not in ("subscribe", "unsubscribe") or not isinstance(args, list) or not args:
            self._control(conn, of.ws_error("60012", f"Illegal request: {text}", conn.tag))
            return
        for arg in args:
            if not isinstance(arg, dict) or not self._valid(conn, arg):
                bad = arg if isinstance(arg, dict) else {}
                self._control(conn, of.ws_error("60018", of.no_such_channel(bad), conn.tag))
                continue
            key = (arg["channel"], arg["instId"])
            if op == "subscribe":
                self._subscribe(conn, key, arg)
            else:
                self._unsubscribe(conn, key)
                self._control(conn, of.ws_event("unsubscribe", arg, conn.tag))

    def _valid(self, conn: _Connection, arg: Payload) -> bool:
        channel, inst = arg.get("channel"), arg.get("instId")
        if not isinstance(channel, str) or inst not in self._state().inst_ids:
            return False
        if conn.kind == "business":
            return of.candle_channel_bar(channel) is not None
        return channel in of.PUBLIC_CHANNELS

    def _subscribe(self, conn: _Connection, key: Key, arg: Payload) -> None:
        """Register, ack, then the channel's initial state; all before any later update."""
        conn.subs[key] = next(self._epochs)
        self._subs.setdefault(key, set()).add(conn)
        self._control(conn, of.ws_event("subscribe", arg, conn.tag))
        initial = self._initial(*key)
        if initial is not None:
            text = orjson.dumps(initial).decode()
            conn.outbox.push_control(_Out(text, key, initial))
        waiters, self._sub_waiters = self._sub_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _initial(self, channel: str, inst: str) -> Payload | None:
        """books: a snapshot of the mirror; books5/bbo-tbt: the current top; else nothing."""
        if channel not in ("books", "books5", "bbo-tbt"):
            return None
        book = self._state().book(inst)
        shift = self._seq_shift.get(inst, 0)
        ts = book.ts_ms or int(time.time() * 1000)
        if channel == "books":
            row = book.snapshot_row(seq_shift=shift)
            row["ts"] = str(ts)
            return of.push("books", inst, [row], "snapshot")
        asks, bids, seq = book.asks(5), book.bids(5), book.seq_id + shift
        if channel == "books5":
            return of.push("books5", inst, [of.top_row(inst, asks, bids, ts, seq)])
        return of.push("bbo-tbt", inst, [of.bbo_row(asks, bids, ts, seq)])

    def _unsubscribe(self, conn: _Connection, key: Key) -> None:
        conn.subs.pop(key, None)
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[key]

    async def _drop(self, conn: _Connection) -> None:
        conn.closed = True
        self._conns.pop(conn.conn_id, None)
        for key in list(conn.subs):
            self._unsubscribe(conn, key)
        if conn.writer is not None:
            conn.writer.cancel()
            await asyncio.wait([conn.writer])
        for out in conn.outbox.close():
            if out.marker is not None and not out.marker.done():
                out.marker.set_result(None)
        log.debug("ws connection %d closed", conn.conn_id)


def _still_subscribed(conn: _Connection, key: Key, epoch: int) -> Callable[[], bool]:
    """Whether a frame waiting for room still belongs to the connection's subscription (a new
    subscribe sent a fresh snapshot that already contains it)."""
    return lambda: not conn.closed and conn.subs.get(key) == epoch


def _take(pending: list[str | None], inst: str) -> bool:
    """Consume the first pending fault that applies to `inst`."""
    for i, target in enumerate(pending):
        if target is None or target == inst:
            del pending[i]
            return True
    return False


__all__ = ["FakeOkx", "OkxSentFrame", "State"]
