"""OKX v5's public limits, as the fake enforces them. Pure: the clock is passed in.

What OKX documents for unauthenticated market data (v5 docs, "Rate limit" and "WebSocket"):

- REST: per IP and per endpoint, a number of requests per 2 seconds; past it HTTP 429 with
  code ``50011`` ("Rate limit reached ..."). No ban escalation is documented (unlike Binance's
  418). The per-endpoint numbers below are the ones CCXT's ``okx`` cost table encodes (cost
  ``c`` at ``rateLimit`` 100 ms: ``20 / c`` requests per 2 s), which match OKX's docs where
  we could check them (tickers 20, books 40, trades 100).
- Websocket: 3 new connections a second per IP; 480 ``subscribe``/``unsubscribe``/``login``
  requests an hour per connection (a request counts once, whatever number of args it holds);
  a request's args at most 64 KB. What OKX answers past the hourly count is an error event
  ``60014`` ("Requests too frequent.") and the connection is closed: modelled so.
  A connection refused for the connection rate gets HTTP 429 on its upgrade (OKX's exact
  answer is not documented; a client sees a failed handshake either way).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

REST_PER_2S: dict[str, int] = {
    "/api/v5/public/time": 10,
    "/api/v5/public/instruments": 20,
    "/api/v5/market/tickers": 20,
    "/api/v5/market/ticker": 20,
    "/api/v5/market/books": 40,
    "/api/v5/market/books-full": 10,
    "/api/v5/market/candles": 40,
    "/api/v5/market/history-candles": 20,
    "/api/v5/market/trades": 100,
    "/api/v5/market/history-trades": 10,
    "/api/v5/public/funding-rate": 10,
    "/api/v5/public/mark-price": 10,
    "/api/v5/public/open-interest": 20,
}
"""Requests per 2 s per IP, by path (CCXT's cost table; see the module docstring)."""
DEFAULT_PER_2S = 20


@dataclass(frozen=True, slots=True)
class OkxLimits:
    """The limits one fake enforces; the defaults are OKX's. Tests scale the windows down."""

    rest_window_s: float = 2.0
    rest_scale: float = 1.0
    """Every endpoint's requests per window multiplied by this (tests: fewer)."""
    connections_per_s: int = 3
    subscribes_per_window: int = 480
    subscribe_window_s: float = 3_600.0
    max_request_bytes: int = 65_536

    def __post_init__(self) -> None:
        if (
            self.rest_window_s <= 0
            or self.rest_scale <= 0
            or self.connections_per_s < 1
            or self.subscribes_per_window < 1
            or self.subscribe_window_s <= 0
            or self.max_request_bytes < 1
        ):
            raise ValueError("OKX limits must be positive")

    def rest_limit(self, path: str) -> int:
        return max(1, round(REST_PER_2S.get(path, DEFAULT_PER_2S) * self.rest_scale))


@dataclass
class OkxLimitStats:
    """What the limits did, for tests and benchmarks."""

    served: int = 0
    limited: int = 0
    """REST requests answered 429 (code 50011)."""
    refused_connections: int = 0
    """Websocket upgrades refused for the connection rate."""
    subscribe_requests: int = 0
    closed_for_subscribes: int = 0
    """Connections closed (after a 60014) for going past the subscribe requests per window."""
    oversized_requests: int = 0
    """Requests refused for args past ``max_request_bytes``."""
    max_subscribes: int = 0
    """The most subscribe requests one connection made within one window."""


class Window:
    """Events in a rolling window: ``allow`` records one and says whether it fits ``limit``."""

    __slots__ = ("_times", "limit", "window_s")

    def __init__(self, limit: int, window_s: float) -> None:
        self.limit = limit
        self.window_s = window_s
        self._times: deque[float] = deque()

    def count(self, now: float) -> int:
        times = self._times
        while times and now - times[0] >= self.window_s:
            times.popleft()
        return len(times)

    def allow(self, now: float) -> bool:
        """An event at ``now`` (seconds, monotonic): True and counted when it fits; False
        (and not counted: a refused request uses no quota) when not."""
        if self.count(now) >= self.limit:
            return False
        self._times.append(now)
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until one more event fits."""
        if self.count(now) < self.limit:
            return 0.0
        return self._times[0] + self.window_s - now


@dataclass
class OkxLimiter:
    """Per-IP REST and connection windows; per-connection subscribe windows."""

    limits: OkxLimits
    stats: OkxLimitStats = field(default_factory=OkxLimitStats)
    _rest: dict[tuple[str, str], Window] = field(default_factory=dict)
    _connects: dict[str, Window] = field(default_factory=dict)
    _subscribes: dict[int, Window] = field(default_factory=dict)

    def rest(self, ip: str, path: str, now: float) -> float:
        """A REST request: 0 when served, else the seconds to wait (answer 429)."""
        key = (ip, path)
        win = self._rest.get(key)
        if win is None:
            lim = self.limits
            win = self._rest[key] = Window(lim.rest_limit(path), lim.rest_window_s)
        if win.allow(now):
            self.stats.served += 1
            return 0.0
        self.stats.limited += 1
        return max(win.retry_after(now), 1e-3)

    def connect(self, ip: str, now: float) -> bool:
        """A websocket upgrade: whether this IP may open one more connection now."""
        win = self._connects.get(ip)
        if win is None:
            win = self._connects[ip] = Window(self.limits.connections_per_s, 1.0)
        if win.allow(now):
            return True
        self.stats.refused_connections += 1
        return False

    def subscribe(self, conn_id: int, size: int, now: float) -> str | None:
        """A subscribe/unsubscribe request of ``size`` bytes on a connection: None when it
        may go on, ``"oversized"`` (refuse it, keep the connection) or ``"too_frequent"``
        (answer 60014 and close the connection)."""
        lim = self.limits
        self.stats.subscribe_requests += 1
        if size > lim.max_request_bytes:
            self.stats.oversized_requests += 1
            return "oversized"
        win = self._subscribes.get(conn_id)
        if win is None:
            win = self._subscribes[conn_id] = Window(
                lim.subscribes_per_window, lim.subscribe_window_s
            )
        if not win.allow(now):
            self.stats.closed_for_subscribes += 1
            return "too_frequent"
        self.stats.max_subscribes = max(self.stats.max_subscribes, win.count(now))
        return None

    def closed(self, conn_id: int) -> None:
        """A connection ended: its subscribe window goes with it."""
        self._subscribes.pop(conn_id, None)


__all__ = ["DEFAULT_PER_2S", "REST_PER_2S", "OkxLimitStats", "OkxLimiter", "OkxLimits", "Window"]
