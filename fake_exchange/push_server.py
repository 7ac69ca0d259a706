"""The engine the push-protocol fakes (OKX, Bybit, Coinbase) share: lifecycle, player, fan-out,
faults.

An exchange subclasses `PushServer` with its protocol: the routes it serves, how it reads a
client's text (`_on_text`), what it does with a source event (`_publish`, usually mirror it
and `_fan_out` the frame) and what its sent log holds. Everything else, the part that does
not depend on the exchange, lives here once: loopback-only binding, the player that keeps the
source's timing (with stalls, and the hold until the first subscription), per-connection
outboxes with backpressure, subscriptions by key with epochs, `wait_subscribed`, `flush`, the
websocket off switch and the `Faults` target.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import ipaddress
import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable, Iterator
from types import TracebackType
from typing import Any, Generic, Protocol, Self, TypeVar

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.faults import Faults, HttpFailure
from fake_exchange.sources import Clock
from fake_exchange.ws_conn import Connection, Key, Out, Outbox, Payload, write_loop

SentT = TypeVar("SentT")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_YIELD_EVERY = 256
"""Events published back to back before the player yields to the loop (fast mode)."""


class State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class Hold:
    """`hold_until_subscribed`: the player waits for the first websocket subscription, then
    `delay` seconds more, so a client started after the server misses none of the source's
    frames. Later subscriptions change nothing; `delay` None: no hold."""

    def __init__(self, delay: float | None) -> None:
        if delay is not None and not delay >= 0:
            raise ValueError(f"hold_until_subscribed: a delay >= 0 s or None, not {delay!r}")
        self.delay = delay
        self.subscribed_at: float | None = None
        """Wall-clock time of the first subscription (None: none yet)."""
        self._first = asyncio.Event()

    def subscribed(self) -> None:
        if self.subscribed_at is None:
            self.subscribed_at = time.time()
            self._first.set()

    async def wait(self) -> None:
        """Until `delay` after the first subscription (at once without a hold)."""
        if self.delay is None:
            return
        await self._first.wait()
        assert self.subscribed_at is not None
        left = self.subscribed_at + self.delay - time.time()
        if left > 0:
            await asyncio.sleep(left)


class TimedEvent(Protocol):
    @property
    def delay(self) -> float: ...


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, headers=headers, content_type="application/json"
    )


def fault_middleware(
    faults: Faults,
    websocket_enabled: Callable[[], bool],
    failure: Callable[[HttpFailure], web.Response],
    not_found: Callable[[], web.Response],
    not_allowed: Callable[[], web.Response],
    ws_prefixes: tuple[str, ...],
) -> Middleware:
    """Refusals, a disabled websocket and planned REST errors first (bodies in the exchange's
    own format from `failure`); its JSON for unknown paths and methods."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        is_ws = request.path.startswith(ws_prefixes)
        if faults.refusing() or (is_ws and not websocket_enabled()):
            # what a load balancer in front of a down backend says: no exchange JSON body
            return web.Response(status=503, text="503 Service Unavailable")
        if not is_ws:
            planned = faults.take_http_error()
            if planned is not None:
                return failure(planned)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return not_found()
        except web.HTTPMethodNotAllowed:
            return not_allowed()

    return middleware


class PushServer(ABC, Generic[SentT]):
    """A fake exchange whose clients subscribe to keys and get pushed frames; see the module."""

    label = "fake exchange"

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
        if not loopback(host):
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
        self._conns: dict[int, Connection] = {}
        self._subs: dict[Key, set[Connection]] = {}
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
    def _on_text(self, conn: Connection, text: str) -> None: ...

    @abstractmethod
    def _sent_frame(self, conn_id: int, key: Key, frame: Payload, sent_ns: int) -> SentT: ...

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
        return self._websocket

    @websocket_enabled.setter
    def websocket_enabled(self, enabled: bool) -> None:
        """False: handshakes get 503 and open sockets are closed (1013 try again later)."""
        self._websocket = enabled
        if not enabled:
            for conn in list(self._conns.values()):
                self._spawn(conn.ws.close(code=1013, message=b"websocket disabled"))

    def subscribed(self) -> set[Key]:
        """Keys some connection is subscribed to."""
        return {k for k, conns in self._subs.items() if conns}

    async def wait_subscribed(self, keys: Iterable[Key], timeout: float = 10.0) -> None:
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

    async def _fan_out(self, key: Key, frame: Payload) -> None:
        """Queue `frame` on every connection subscribed to `key` (waiting for room)."""
        conns = self._subs.get(key)
        if not conns:
            return
        text = orjson.dumps(frame).decode()
        targets = [(c, c.subs[key]) for c in conns if not c.closed]
        for conn, epoch in targets:
            out = Out(text, key, frame)
            if not conn.outbox.try_push_data(out):
                await conn.outbox.push_data(out, conn.still_subscribed(key, epoch))

    # ------------------------------------------------------------------ connections

    def _record(self, conn_id: int, key: Key, frame: Payload) -> None:
        self._sent.append(self._sent_frame(conn_id, key, frame, time.time_ns()))
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
            write_loop(conn, self.faults.stalled_for, self._record),
            name=f"{self.label}-ws-writer-{conn_id}",
        )
        self.log.debug("ws connection %d on %s", conn_id, request.path_qs)
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

    def _push_initial(self, conn: Connection, key: Key, frame: Payload) -> None:
        """A data frame sent right after a subscribe (a snapshot): in order, logged, unbounded."""
        conn.outbox.push_control(Out(orjson.dumps(frame).decode(), key, frame))

    def _register(self, conn: Connection, key: Key) -> None:
        conn.subs[key] = next(self._epochs)
        self._subs.setdefault(key, set()).add(conn)
        self.hold.subscribed()

    def _notify_subscribed(self) -> None:
        waiters, self._sub_waiters = self._sub_waiters, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    def _unregister(self, conn: Connection, key: Key) -> None:
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
            self._unregister(conn, key)
        await conn.release()
        self.log.debug("ws connection %d closed", conn.conn_id)


__all__ = [
    "Hold",
    "PushServer",
    "State",
    "TimedEvent",
    "fault_middleware",
    "json_response",
    "loopback",
]
