"""Fault controls: the failures a real exchange produces, on demand.

`Faults` only holds state and calls back into the server through the small `FaultTarget`
protocol, so the server stays the one owner of sockets and each fault is a plain method call
from a test.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import orjson

from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload

GarbageKind = Literal["malformed", "truncated", "unknown_event"]


class FaultTarget(Protocol):
    """The server side of the faults."""

    def close_connections(self, abrupt: bool) -> int:
        """Close every websocket; returns how many."""
        ...

    def inject_raw(self, texts: list[str]) -> int:
        """Queue raw text frames on every websocket, in order with data; returns connections."""
        ...


@dataclass(frozen=True, slots=True)
class HttpFailure:
    """One planned REST failure: status, Binance-style body, headers."""

    status: int
    body: Payload
    headers: dict[str, str]


def garbage_frame(kind: GarbageKind, now_ms: int) -> str:
    """A bad websocket text frame of the given kind."""
    good = orjson.dumps(
        bf.agg_trade("BTCUSDT", 1, "1.00000000", "1.00000000", 1, 1, now_ms, now_ms, False)
    ).decode()
    if kind == "malformed":
        return '{"e":"aggTrade","E":' + str(now_ms) + ',"s":"BTCUSDT","p":}'
    if kind == "truncated":
        return good[: len(good) // 2]
    if kind == "unknown_event":
        return orjson.dumps({"e": "fakeExchangeUnknown", "E": now_ms, "s": "BTCUSDT"}).decode()
    raise ValueError(f"unknown garbage kind {kind!r}")


def http_failure(status: int, retry_after: int | None) -> HttpFailure:
    """The response Binance gives for a status: 429/418 with Retry-After, -1003 code."""
    headers: dict[str, str] = {}
    if status in (418, 429):
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        msg = (
            "Way too much request weight used; IP banned until further notice."
            if status == 418
            else "Too much request weight used; current limit is 6000 request weight per 1 "
            "MINUTE. Please use WebSocket Streams for live updates to avoid polling the API."
        )
        return HttpFailure(status, bf.error_body(-1003, msg), headers)
    if status >= 500:
        return HttpFailure(
            status,
            bf.error_body(
                -1001, "Internal error; unable to process your request. Please try again."
            ),
            headers,
        )
    if status in (401, 403):
        # what Binance answers a bad or under-privileged API key: CCXT -> AuthenticationError
        return HttpFailure(
            status, bf.error_body(-2015, "Invalid API-key, IP, or permissions for action."), {}
        )
    return HttpFailure(
        status, bf.error_body(-1000, "An unknown error occurred while processing the request."), {}
    )


class Faults:
    """Switches a test flips: close, stall, garbage, REST errors, refused connections, book gaps."""

    def __init__(self, target: FaultTarget, clock: Callable[[], float] = time.monotonic) -> None:
        self._target = target
        self._clock = clock
        self._stall_until = 0.0
        self._refuse_until = 0.0
        self._http: list[HttpFailure] = []
        self._depth_drops: dict[str | None, int] = {}
        self.depth_dropped: dict[str, int] = {}
        """Depth frames dropped so far, by stream (what `depth_gap` did)."""

    def close_all(self, abrupt: bool = True) -> int:
        """Close every websocket: abrupt drops the TCP connection (clients see 1006), else 1000."""
        return self._target.close_connections(abrupt)

    def stall(self, seconds: float) -> None:
        """Keep sockets open (pings still answered) but send nothing for `seconds`.

        The source pauses too and resumes where it was, shifted by the stall: nothing is lost,
        the data just arrives late, like a stuck exchange gateway.
        """
        self._stall_until = max(self._stall_until, self._clock() + seconds)

    def stalled_for(self) -> float:
        """Seconds of stall left (0 when not stalled)."""
        return max(0.0, self._stall_until - self._clock())

    def send_garbage(self, n: int = 1, kind: GarbageKind = "malformed") -> int:
        """Write `n` bad frames on every connection, in order with the data frames."""
        now_ms = int(time.time() * 1000)
        return self._target.inject_raw([garbage_frame(kind, now_ms) for _ in range(n)])

    def http_error(self, status: int = 429, count: int = 1, retry_after: int | None = 1) -> None:
        """The next `count` REST calls answer `status` (Retry-After for 429/418)."""
        self._http.extend(http_failure(status, retry_after) for _ in range(count))

    def take_http_error(self) -> HttpFailure | None:
        """Consume the next planned REST failure (the server calls this per request)."""
        return self._http.pop(0) if self._http else None

    def refuse(self, seconds: float) -> None:
        """For `seconds`, new websocket handshakes and REST calls get 503 before anything else."""
        self._refuse_until = max(self._refuse_until, self._clock() + seconds)

    def refusing(self) -> bool:
        return self._clock() < self._refuse_until

    def depth_gap(self, n: int = 1, stream: str | None = None) -> None:
        """Drop the next `n` depth diffs sent to subscribers of `stream` (None: any depth stream).

        The market state still applies them, so clients see `U != previous u + 1` and must
        resync, and a fresh snapshot contains what was dropped. `stream` is a stream name
        ('nknusdt@depth@100ms') or a symbol ('NKN/USDT', 'NKNUSDT': its `depth@100ms` stream).
        Frames nobody subscribed to are not dropped (the gap waits for a reader).
        """
        if n < 1:
            raise ValueError("depth_gap needs n >= 1")
        key = stream
        if stream is not None and "@" not in stream:
            key = bf.stream_name(bf.symbol_id(stream), "depth@100ms")
        self._depth_drops[key] = self._depth_drops.get(key, 0) + n

    def depth_gap_pending(self) -> bool:
        """Cheap check the server makes before asking `take_depth_drop` for every frame."""
        return bool(self._depth_drops)

    def take_depth_drop(self, stream: str) -> bool:
        """Whether to drop this depth frame (consumes one planned drop, counts it)."""
        for key in (stream, None):
            left = self._depth_drops.get(key, 0)
            if left:
                if left == 1:
                    del self._depth_drops[key]
                else:
                    self._depth_drops[key] = left - 1
                self.depth_dropped[stream] = self.depth_dropped.get(stream, 0) + 1
                return True
        return False

    def clear(self) -> None:
        """Cancel every pending fault."""
        self._stall_until = self._refuse_until = 0.0
        self._http.clear()
        self._depth_drops.clear()
