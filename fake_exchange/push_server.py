"""The engine every fake exchange runs on (Binance spot and USD-M, OKX, Bybit, Coinbase,
Kraken): lifecycle, player, connections, fan-out, faults.

An exchange subclasses `PushEngine` (`PushServer` for the (channel, id)-keyed ones) with its
protocol: the routes it serves, how it reads a client's text (`_on_text`), what it does with a
source event (`_publish`, usually mirror it and `_fan_out` the frame) and what its sent log
holds. Everything else, the part that does not depend on the exchange, lives here once:
loopback-only binding, the player that keeps the source's timing (with stalls, and the hold
until the first subscription), per-connection outboxes with backpressure, subscriptions by key
with epochs, `wait_subscribed`, `flush`, bursts of ready-made frames, the websocket off switch
and the `Faults` target.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.faults import Faults
from fake_exchange.push_common import (
    Hold,
    State,
    TimedEvent,
    chain,
    fault_middleware,
    json_response,
    loopback,
)
from fake_exchange.sources import Clock
from fake_exchange.ws_conn import Connection, Key, Out, Outbox, Payload, WsConn, write_loop
from fake_exchange.wsframes import text_frames

SentT = TypeVar("SentT")
K = TypeVar("K", bound=Hashable)
C = TypeVar("C", bound=WsConn[Any])

_YIELD_EVERY = 256
"""Events published back to back before the player yields to the loop (fast mode)."""
CHUNK_FRAMES = 2_000
"""Frames of a burst per transport write (`_send_chunked`)."""


class PushEngine(ABC, Generic[SentT, K, C]):
    """A fake exchange whose clients subscribe to keys `K` over connections `C` and get pushed
    frames, logging each written one as a `SentT`; see the module."""

    label = "fake exchange"
    loopback_only = True
    """Refuse to bind anything but a loopback address."""
    ws_off_close: tuple[int, bytes] = (1013, b"websocket disabled")
    """The close frame open sockets get when the websocket is switched off."""

    def __init__(
        self,
        host: str,
        port: int,
        autoplay: bool,
        *,
        websocket: bool,
        queue_size: int,
        sent_limit: int,
        hold_until_subscribed: float | None = None,
    ) -> None:
        if self.loopback_only and not loopback(host):
            raise ValueError(f"{type(self).__name__} serves loopback addresses only, not {host!r}")
        self.host = host
        self.port = port
        self.autoplay = autoplay
        self.faults = Faults(self)
        self.state = State.NEW
        self._websocket = websocket
        self._queue_size = queue_size
        self._sent_limit = sent_limit
        self._sent: list[SentT] = []
        self._conns: dict[int, C] = {}
        self._subs: dict[K, set[C]] = {}
        self._ids = itertools.count(1)
        self._epochs = itertools.count(1)
        self._sub_waiters: list[asyncio.Future[None]] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._player: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self.hold = Hold(hold_until_subscribed)
        """`hold_until_subscribed`: the source starts `hold.delay` s after the first
        subscription (`hold.subscribed_at`)."""
        self.log = logging.getLogger("fake_exchange." + type(self).__name__.lower())

    # ------------------------------------------------------------------ the protocol's part

    @abstractmethod
    def _load(self) -> None:
        """Blocking preparation (files); runs in a thread before anything is served."""
        ...

    @abstractmethod
    def _setup(self) -> None:
        """On the loop, after `_load`: build what the protocol answers from."""
        ...

    @abstractmethod
    def _routes(self) -> list[web.RouteDef]:
        """REST and websocket routes (websocket ones use `self._ws_handler`)."""
        ...

    @abstractmethod
    def _middleware(self) -> Middleware: ...

    @abstractmethod
    def _events(self, clock: Clock) -> Iterator[TimedEvent]: ...

    @abstractmethod
    async def _publish(self, ev: Any) -> None: ...

    @abstractmethod
    def _on_text(self, conn: C, text: str) -> None: ...

    @abstractmethod
    def _sent_frame(self, conn_id: int, key: K, frame: Payload, sent_ns: int) -> SentT: ...

    @abstractmethod
    def _connection(self, conn_id: int, ws: web.WebSocketResponse, request: web.Request) -> C:
        """A new connection object (its outbox bounded by `self._queue_size`)."""
        ...

    def _opened(self, conn: C) -> None:
        """Right after the handshake, before the first client text (default: nothing)."""

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Load the source, bind, and (with autoplay) start playing."""
        if self.state is not State.NEW:
            raise RuntimeError(f"{type(self).__name__} cannot start from state {self.state.value}")
        await asyncio.to_thread(self._load)
        self._setup()
        app = web.Application(middlewares=[self._middleware()])
        app.add_routes(self._routes())
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
        self.log.info("%s listening on %s", self.label, self.base_url)
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
        self.log.info("%s stopped", self.label)

    async def __aenter__(self) -> Self:
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
    def sent(self) -> list[SentT]:
        """Data frames written to sockets, oldest first (trimmed past `sent_limit`)."""
        return self._sent

    @property
    def websocket_enabled(self) -> bool:
        """False: websocket handshakes answer 503 while REST keeps serving a moving market."""
        return self._websocket

    @websocket_enabled.setter
    def websocket_enabled(self, enabled: bool) -> None:
        """Switching off also closes the open sockets (`ws_off_close`), as a websocket service
        going down would; switching on accepts handshakes again."""
        self._websocket = enabled
        if not enabled:
            code, message = self.ws_off_close
            for conn in list(self._conns.values()):
                self._spawn(conn.ws.close(code=code, message=message))

    @property
    def open_connections(self) -> int:
        """Websocket connections open now."""
        return sum(1 for c in self._conns.values() if not c.closed)

    def subscribed(self) -> set[K]:
        """Keys some connection is subscribed to."""
        return {k for k, conns in self._subs.items() if conns}

    async def wait_subscribed(self, keys: Iterable[K], timeout: float = 10.0) -> None:
        """Return once every key is subscribed by some connection."""
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
            raise RuntimeError(f"play() needs a started {type(self).__name__}")
        if self._player is None:
            self._player = asyncio.create_task(self._play(), name=f"{self.label}-player")

    async def wait_done(self, timeout: float | None = None) -> None:
        """Until a finite source is exhausted and every frame it produced was written."""
        if self._player is None:
            raise RuntimeError("wait_done() before play()")
        async with asyncio.timeout(timeout):
            await asyncio.shield(self._player)
            await self.flush()

    async def flush(self, conns: Iterable[C] | None = None) -> None:
        """Wait until everything queued so far on these connections (default: every one) was
        written."""
        loop = asyncio.get_running_loop()
        markers: list[asyncio.Future[None]] = []
        for conn in list(self._conns.values() if conns is None else conns):
            if conn.closed:
                continue
            marker: asyncio.Future[None] = loop.create_future()
            conn.outbox.push_control(Out(marker=marker))
            markers.append(marker)
        if markers:
            await asyncio.gather(*markers)

    # ------------------------------------------------------------------ FaultTarget

    def close_connections(self, abrupt: bool) -> int:
        conns = list(self._conns.values())
        for conn in conns:
            transport = conn.request.transport
            if abrupt and transport is not None:
                transport.abort()
            else:
                self._spawn(conn.ws.close(code=1000, message=f"closed by {self.label}".encode()))
        self.log.info("closed %d connections (abrupt=%s)", len(conns), abrupt)
        return len(conns)

    def inject_raw(self, texts: list[str]) -> int:
        conns = [c for c in self._conns.values() if not c.closed]
        for conn in conns:
            for text in texts:
                conn.outbox.push_control(Out(text))
        return len(conns)

    # ------------------------------------------------------------------ player

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _play(self) -> None:
        if self.hold.delay is not None:
            await self.hold.wait()
            self.log.info("playing: %.1f s after the first subscription", self.hold.delay)
        loop = asyncio.get_running_loop()
        target = loop.time()
        streak = count = 0
        for ev in self._events(lambda: int(time.time() * 1000)):
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
        self.log.info("source exhausted after %d events", count)

    async def _fan_out(self, key: K, frame: Payload) -> None:
        """Queue `frame` on every connection subscribed to `key` (waiting for room)."""
        conns = self._subs.get(key)
        if not conns:
            return
        text = orjson.dumps(frame).decode()
        await self._deliver(key, frame, [(c, text, c.subs[key]) for c in conns if not c.closed])

    async def _deliver(self, key: K, frame: Payload, targets: list[tuple[C, str, int]]) -> None:
        """Queue `frame` as each target's own text; one waits for room while its outbox is
        full (backpressure), and is skipped if its subscription (the epoch) ended meanwhile."""
        for conn, text, epoch in targets:
            out = Out(text, key, frame)
            if not conn.outbox.try_push_data(out):
                await conn.outbox.push_data(out, conn.still_subscribed(key, epoch))

    async def _send_chunked(
        self,
        frames: Iterator[tuple[K, Payload]],
        targets: Callable[[K, Payload], Iterable[tuple[C, bytes]]],
    ) -> None:
        """A burst: `frames` made `CHUNK_FRAMES` at a time, each chunk written to each
        connection `targets` names as one buffer of ready-made websocket frames (in order with
        what was queued before, every frame logged); returns once all were written.

        Through `send_str` one by one, the fake ran out of CPU before the client under test did.
        """
        touched: set[C] = set()
        more = True
        while more:
            per_conn: dict[C, tuple[list[bytes], list[tuple[K, Payload]]]] = {}
            made = 0
            for key, frame in itertools.islice(frames, CHUNK_FRAMES):
                made += 1
                for conn, text in targets(key, frame):
                    texts, logged = per_conn.setdefault(conn, ([], []))
                    texts.append(text)
                    logged.append((key, frame))
            more = made == CHUNK_FRAMES
            for conn, (texts, logged) in per_conn.items():
                out = Out(chunk=text_frames(texts), frames=logged)
                if not conn.outbox.try_push_data(out):
                    await conn.outbox.push_data(out, lambda: True)
            touched.update(per_conn)
            await asyncio.sleep(0)  # the writers send this chunk while the next one is made
        await self.flush(touched)

    # ------------------------------------------------------------------ connections

    def _record(self, conn_id: int, key: K, frame: Payload) -> None:
        self._sent.append(self._sent_frame(conn_id, key, frame, time.time_ns()))
        if len(self._sent) > self._sent_limit:
            del self._sent[: len(self._sent) - self._sent_limit // 2]

    def _record_chunk(self, conn_id: int, frames: list[tuple[K, Payload]]) -> None:
        """The frames of one burst chunk, written at once: one time for all."""
        now, make = time.time_ns(), self._sent_frame
        self._sent.extend([make(conn_id, key, frame, now) for key, frame in frames])
        if len(self._sent) > self._sent_limit:
            del self._sent[: len(self._sent) - self._sent_limit // 2]

    async def _ws_handler(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, autoping=True, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = self._connection(next(self._ids), ws, request)
        self._conns[conn.conn_id] = conn
        conn.writer = asyncio.create_task(
            write_loop(conn, self.faults.stalled_for, self._record, self._record_chunk),
            name=f"{self.label}-ws-writer-{conn.conn_id}",
        )
        self.log.debug("ws connection %d on %s", conn.conn_id, request.path_qs)
        self._opened(conn)
        try:
            async for msg in ws:
                if msg.type == web.WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
        finally:
            await self._drop(conn)
        return ws

    def _control(self, conn: C, body: Payload | str) -> None:
        text = body if isinstance(body, str) else orjson.dumps(body).decode()
        conn.outbox.push_control(Out(text))

    def _push_initial(self, conn: C, key: K, frame: Payload) -> None:
        """A data frame sent right after a subscribe (a snapshot): in order, logged, unbounded."""
        conn.outbox.push_control(Out(orjson.dumps(frame).decode(), key, frame))

    def _register(self, conn: C, key: K) -> None:
        conn.subs[key] = next(self._epochs)
        self._subs.setdefault(key, set()).add(conn)
        self.hold.subscribed()

    def _notify_subscribed(self) -> None:
        waiters, self._sub_waiters = self._sub_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _unregister(self, conn: C, key: K) -> None:
        conn.subs.pop(key, None)
        subs = self._subs.get(key)
        if subs is not None:
            subs.discard(conn)
            if not subs:
                del self._subs[key]

    async def _drop(self, conn: C) -> None:
        conn.closed = True
        self._conns.pop(conn.conn_id, None)
        for key in list(conn.subs):
            self._unregister(conn, key)
        await conn.release()
        self.log.debug("ws connection %d closed", conn.conn_id)


class PushServer(PushEngine[SentT, Key, Connection]):
    """The (channel, id)-keyed fakes (OKX, Bybit, Coinbase, Kraken): a connection's `kind` is
    the last segment of its url."""

    def _connection(
        self, conn_id: int, ws: web.WebSocketResponse, request: web.Request
    ) -> Connection:
        kind = request.path.rsplit("/", 1)[-1]
        return Connection(conn_id, f"{conn_id:08x}", kind, ws, request, Outbox(self._queue_size))


__all__ = [
    "CHUNK_FRAMES",
    "Hold",
    "PushEngine",
    "PushServer",
    "State",
    "TimedEvent",
    "chain",
    "fault_middleware",
    "json_response",
    "loopback",
]
