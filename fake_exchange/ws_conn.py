"""One websocket connection of a push-engine fake: outbox, writer, sent log.

Each connection owns an outbox and one writer task, so frames reach a socket in the order they
were queued. Data frames are bounded: a slow reader slows the player (backpressure) instead of
losing frames, while control frames (acks, snapshots, pongs) never wait, so the reader task is
never blocked by its own replies. A burst chunk (many ready-made frames, `wsframes`) goes to the
transport in one write, in order with the rest.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from aiohttp import web

Payload = dict[str, Any]
Key = tuple[str, str]
"""What a client subscribes to: (channel, instId) on OKX, (category, topic) on Bybit; the
engine takes any hashable key (Binance: the stream name)."""
K = TypeVar("K", bound=Hashable)

CHUNK_HIGH_WATER = 1 << 20
"""Bytes the transport may hold before the writer of a chunk waits for the client to read."""


@dataclass(slots=True)
class Out:
    """A queued write; `key`/`frame` set for data frames (logged), `marker` for flushes,
    `chunk`/`frames` for ready-made frames written at once (each of `frames` logged)."""

    text: str = ""
    key: Hashable | None = None
    frame: Payload | None = None
    marker: asyncio.Future[None] | None = None
    counted: bool = False
    chunk: bytes = b""
    frames: Sequence[tuple[Hashable, Payload]] | None = None


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
class WsConn(Generic[K]):
    """A connection subscribed to keys of type `K` (`Connection`: the push fakes' pairs)."""

    conn_id: int
    tag: str
    kind: str
    """The last path segment of the websocket url: OKX public/business, Bybit spot/linear."""
    ws: web.WebSocketResponse
    request: web.Request
    outbox: Outbox
    subs: dict[K, int] = field(default_factory=dict)
    """Subscribed keys -> subscription epoch (new on every subscribe)."""
    writer: asyncio.Task[None] | None = None
    closed: bool = False

    def still_subscribed(self, key: K, epoch: int) -> Callable[[], bool]:
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


Connection = WsConn[Key]
"""A connection of the (channel, id)-keyed fakes: OKX, Bybit, Coinbase, Kraken."""

Record = Callable[[int, Any, Payload], None]
"""What the writer calls for every data frame written: (conn_id, key, frame)."""
RecordChunk = Callable[[int, Any], None]
"""What it calls for the frames of a chunk written: (conn_id, [(key, frame), ...])."""


async def write_loop(
    conn: WsConn[Any],
    stalled_for: Callable[[], float],
    record: Record,
    record_chunk: RecordChunk | None = None,
) -> None:
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
        if out.frames is not None:
            if not await write_chunk(conn.request, out.chunk):
                return
            if record_chunk is not None:
                record_chunk(conn.conn_id, out.frames)
            else:
                for key, frame in out.frames:
                    record(conn.conn_id, key, frame)
            continue
        try:
            await conn.ws.send_str(out.text)
        except ConnectionError:
            return
        if out.key is not None and out.frame is not None:
            record(conn.conn_id, out.key, out.frame)


async def write_chunk(request: web.Request, data: bytes) -> bool:
    """Ready-made frames straight to the socket, paced like `send_str`: wait while the kernel
    has not taken the last chunk (a reader that stops reading stalls the burst)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        return False
    transport.write(data)
    while transport.get_write_buffer_size() > CHUNK_HIGH_WATER:
        if transport.is_closing():
            return False
        await asyncio.sleep(0.0005)
    return True


__all__ = [
    "CHUNK_HIGH_WATER",
    "Connection",
    "K",
    "Key",
    "Out",
    "Outbox",
    "Payload",
    "Record",
    "RecordChunk",
    "WsConn",
    "write_chunk",
    "write_loop",
]
