"""What every fake on the push engine shares besides the engine itself: the server states, the
hold until the first subscription, loopback-only binding, JSON responses and the fault
middleware (`fake_exchange.push_server` re-exports them all)."""

from __future__ import annotations

import asyncio
import enum
import ipaddress
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.typedefs import Middleware

from fake_exchange.faults import Faults, HttpFailure

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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


def chain(outer: Middleware, inner: Middleware) -> Middleware:
    """Two middlewares as one (`outer` sees the request first), for an engine that takes one."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        async def rest(req: web.Request) -> web.StreamResponse:
            return await inner(req, handler)

        return await outer(request, rest)

    return middleware


__all__ = [
    "Handler",
    "Hold",
    "State",
    "TimedEvent",
    "chain",
    "fault_middleware",
    "json_response",
    "loopback",
]
