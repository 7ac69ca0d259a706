"""One websocket connection of a push-protocol fake (OKX, Bybit): outbox, writer, sent log.

Each connection owns an outbox and one writer task, so frames reach a socket in the order they
were queued. Data frames are bounded: a slow reader slows the player (backpressure) instead of
losing frames, while control frames (acks, snapshots, pongs) never wait, so the reader task is
never blocked by its own replies.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

Payload = dict[str, Any]
Key = tuple[str, str]
"""What a client subscribes to: (channel, instId) on OKX, (category, topic) on Bybit."""


@dataclass(slots=True)
class Out:
    """A queued write; `key`/`frame` set for data frames (logged), `marker` for flushes."""

    text: str = ""
    key: Key | None = None
    frame: Payload | None = None
    marker: asyncio.Future[None] | None = None
    counted: bool = False


class Outbox:
    """Write queue of one connection: data frames bounded, control frames never wait.

    Control frames (acks, the snapshot sent on subscribe, pongs) must go out in order with the
    data without blocking the reader task, so only frames from the player count against the
    bound.
    """

    def __init__(self, limit: int) -> None:
        self._items: deque[Out] = deque()
        self._limit = limit
        self._data = 0
        self._readable = asyncio.Event()
        self._space = asyncio.Event()
        self._space.set()
        self.closed = False

    def push_control(self, out: Out) -> None:
        self._items.append(out)
        self._readable.set()

    def try_push_data(self, out: Out) -> bool:
        if self._data >= self._limit:
            return False
        self._append_data(out)
        return True

    async def push_data(self, out: Out, still_wanted: Callable[[], bool]) -> None:
        """Wait for room; drop the frame if its subscription ended meanwhile."""
        while self._data >= self._limit and not self.closed:
            self._space.clear()
            await self._space.wait()
        if not self.closed and still_wanted():
            self._append_data(out)

    def _append_data(self, out: Out) -> None:
        out.counted = True
        self._data += 1
        self._items.append(out)
        self._readable.set()

    async def pop(self) -> Out:
        while not self._items:
            self._readable.clear()
            await self._readable.wait()
        out = self._items.popleft()
        if out.counted:
            self._data -= 1
            self._space.set()
        return out

    def close(self) -> list[Out]:
        """Wake any waiting pusher; hand back what was never written."""
        self.closed = True
        self._space.set()
        left = list(self._items)
        self._items.clear()
        return left


@dataclass(eq=False)
class Connection:
    conn_id: int
    tag: str
    kind: str
    """The last path segment of the websocket url: OKX public/business, Bybit spot/linear."""
    ws: web.WebSocketResponse
    request: web.Request
    outbox: Outbox
    subs: dict[Key, int] = field(default_factory=dict)
    """Subscribed keys -> subscription epoch (new on every subscribe)."""
    writer: asyncio.Task[None] | None = None
    closed: bool = False

    def still_subscribed(self, key: Key, epoch: int) -> Callable[[], bool]:
        """Whether a frame waiting for room still belongs to this subscription (a new
        subscribe sent a fresh snapshot that already contains it)."""
        return lambda: not self.closed and self.subs.get(key) == epoch

    async def release(self) -> None:
        """Stop the writer and let flushes waiting on unwritten frames return."""
        if self.writer is not None:
            self.writer.cancel()
            await asyncio.wait([self.writer])
        for out in self.outbox.close():
            if out.marker is not None and not out.marker.done():
                out.marker.set_result(None)


Record = Callable[[int, Key, Payload], None]
"""What the writer calls for every data frame written: (conn_id, key, frame)."""


async def write_loop(conn: Connection, stalled_for: Callable[[], float], record: Record) -> None:
    """The writer task: send in queue order, hold while stalled, log every data frame."""
    while True:
        out = await conn.outbox.pop()
        if out.marker is not None:
            if not out.marker.done():
                out.marker.set_result(None)
            continue
        stall = stalled_for()
        while stall > 0:
            await asyncio.sleep(stall)
            stall = stalled_for()
        try:
            await conn.ws.send_str(out.text)
        except ConnectionError:
            return
        if out.key is not None and out.frame is not None:
            record(conn.conn_id, out.key, out.frame)


__all__ = ["Connection", "Key", "Out", "Outbox", "Payload", "Record", "write_loop"]
