"""Binance spot's request limits, as the fake enforces them. Pure: the clock is passed in.

What Binance documents (developers.binance.com, spot "Limits" and "WebSocket Streams"):

- **REST request weight**: every request costs a weight that depends on the route and its
  parameters (``depth``: 5 up to ``limit=100``, 25, 50, 250 for 5,000 levels; ``exchangeInfo``
  20...), 6,000 per IP per minute, counted in fixed windows ("a 1 MINUTE interval starts every
  minute"). Past it: HTTP 429 with ``Retry-After`` (seconds to the window's end) and code
  -1003. A client that keeps sending after 429s is banned: HTTP 418 with ``Retry-After`` until
  the ban ends, from 2 minutes, longer for repeat offenders (here doubled each time, at most 3
  days). Every answer carries ``X-MBX-USED-WEIGHT-1M``.
- **Websocket streams**: at most 1,024 streams on one connection; at most 5 incoming messages
  a second on one connection, or the connection is closed (1008 "Too many requests").

How many refused requests count as "keeps sending" is not documented: ``ban_after`` (the
refusals one IP collects in one window before the ban). The fake counts text messages only
(subscribe, unsubscribe, list, property); aiohttp answers ping and pong frames itself.

USD-M futures (``USDM_LIMITS``, developers.binance.com derivatives "General Info" and
"Websocket Market Streams"): 2,400 weight per IP per minute, at most 200 streams on one
connection, 10 incoming messages a second; its own weights (``/fapi/v1/depth``: 2 up to
``limit=50``, 5, 10, 20 for 1,000 levels; ``aggTrades`` 20; ``klines`` by ``limit``: 1, 2, 5,
10; ``ticker/24hr`` 1 for a symbol, 40 for all; ``premiumIndex``/``openInterest`` 1;
``exchangeInfo`` 1), the same 429/418 answers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field

MAX_BAN_S = 3 * 86_400.0
"""Binance's longest automatic ban."""

_FLAT_WEIGHTS = {
    "/api/v3/ping": 1,
    "/api/v3/time": 1,
    "/api/v3/exchangeInfo": 20,
    "/api/v3/aggTrades": 4,
    "/api/v3/trades": 25,
    "/api/v3/historicalTrades": 25,
    "/api/v3/klines": 2,
}


_FUTURES_FLAT_WEIGHTS = {
    "/fapi/v1/ping": 1,
    "/fapi/v1/time": 1,
    "/fapi/v1/exchangeInfo": 1,
    "/fapi/v1/aggTrades": 20,
    "/fapi/v1/trades": 5,
    "/fapi/v1/historicalTrades": 20,
    "/fapi/v1/openInterest": 1,
}


@dataclass(frozen=True, slots=True)
class BinanceLimits:
    """The limits one fake enforces; the defaults are Binance spot's."""

    weight_per_window: int = 6_000
    window_s: float = 60.0
    ban_after: int = 5
    """Requests refused with 429 in one window before the next one bans the IP (418)."""
    ban_s: float = 120.0
    """The first ban; each later one lasts twice as long as the one before."""
    streams_per_connection: int = 1_024
    messages_per_second: int = 5

    def __post_init__(self) -> None:
        if self.weight_per_window < 1 or self.window_s <= 0 or self.ban_s <= 0:
            raise ValueError("weight_per_window >= 1, window_s > 0 and ban_s > 0 please")
        if self.ban_after < 0 or self.streams_per_connection < 1 or self.messages_per_second < 1:
            raise ValueError(
                "ban_after >= 0, streams_per_connection >= 1, messages_per_second >= 1 please"
            )

    @property
    def weight_header(self) -> str:
        """``X-MBX-USED-WEIGHT-1M`` for Binance's minute; ``-<n>S`` for a test's window."""
        if self.window_s == 60:
            return "X-MBX-USED-WEIGHT-1M"
        return f"X-MBX-USED-WEIGHT-{self.window_s:g}S"


USDM_LIMITS = BinanceLimits(
    weight_per_window=2_400, streams_per_connection=200, messages_per_second=10
)
"""Binance USD-M futures' limits (the same ban rule as spot's)."""


def depth_weight(limit: int) -> int:
    """``GET /api/v3/depth``'s weight by ``limit`` (default 100)."""
    if limit <= 100:
        return 5
    if limit <= 500:
        return 25
    if limit <= 1_000:
        return 50
    return 250


def ticker_weight(query: Mapping[str, str]) -> int:
    """``GET /api/v3/ticker/24hr``: one symbol 2, a list by its length, none 80."""
    if "symbol" in query:
        return 2
    raw = query.get("symbols")
    if raw is None:
        return 80
    n = raw.count(",") + 1
    return 2 if n <= 20 else 40 if n <= 100 else 80


def _int_query(query: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(query.get(name) or default)
    except ValueError:
        return default


def futures_weight(path: str, query: Mapping[str, str]) -> int:
    """The weight Binance charges for a USD-M REST request (1 for routes not listed)."""
    if path == "/fapi/v1/depth":
        limit = _int_query(query, "limit", 500)
        return 2 if limit <= 50 else 5 if limit <= 100 else 10 if limit <= 500 else 20
    if path == "/fapi/v1/klines":
        limit = _int_query(query, "limit", 500)
        return 1 if limit < 100 else 2 if limit < 500 else 5 if limit <= 1_000 else 10
    if path == "/fapi/v1/ticker/24hr":
        return 1 if "symbol" in query else 40
    if path == "/fapi/v1/premiumIndex":
        return 1 if "symbol" in query else 10
    return _FUTURES_FLAT_WEIGHTS.get(path, 1)


def rest_weight(path: str, query: Mapping[str, str]) -> int:
    """The weight Binance charges for a spot or USD-M REST request (1 for routes not listed)."""
    if path.startswith("/fapi/"):
        return futures_weight(path, query)
    if path == "/api/v3/depth":
        try:
            limit = int(query.get("limit") or 100)
        except ValueError:
            limit = 100
        return depth_weight(limit)
    if path == "/api/v3/ticker/24hr":
        return ticker_weight(query)
    return _FLAT_WEIGHTS.get(path, 1)


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a request gets: ``status`` 200 (served), 429 or 418 (refused, ``retry_after``)."""

    status: int
    used: int
    """Weight used in the current window, this request included when served."""
    retry_after: int = 0


@dataclass
class LimitStats:
    """What the limits did, for tests and benchmarks."""

    served: int = 0
    weight: int = 0
    limited: int = 0
    """Requests answered 429."""
    banned: int = 0
    """Requests answered 418 (the one that started a ban and every one during it)."""
    bans: int = 0
    max_used: int = 0
    """The most weight one IP used in one window."""
    closed_for_messages: int = 0
    """Connections closed for sending more than ``messages_per_second``."""
    refused_subscriptions: int = 0
    """SUBSCRIBE requests refused for going past ``streams_per_connection``."""
    refused_connections: int = 0
    """Handshakes refused for naming more than ``streams_per_connection`` streams."""


@dataclass(slots=True)
class _Ip:
    window: int = -1
    used: int = 0
    refused: int = 0
    banned_until: float = 0.0
    bans: int = 0


@dataclass
class WeightLimiter:
    """Request weight per IP in fixed windows; 429 past the limit, 418 for who keeps going."""

    limits: BinanceLimits
    stats: LimitStats = field(default_factory=LimitStats)
    _ips: dict[str, _Ip] = field(default_factory=dict)

    def charge(self, ip: str, weight: int, now: float) -> Verdict:
        """Count a request of ``weight`` from ``ip`` at ``now`` (epoch seconds)."""
        lim = self.limits
        st = self._ips.setdefault(ip, _Ip())
        if now < st.banned_until:
            self.stats.banned += 1
            return Verdict(418, st.used, _ceil(st.banned_until - now))
        window = int(now // lim.window_s)
        if window != st.window:
            st.window, st.used, st.refused = window, 0, 0
        if st.used + weight <= lim.weight_per_window:
            st.used += weight
            self.stats.served += 1
            self.stats.weight += weight
            self.stats.max_used = max(self.stats.max_used, st.used)
            return Verdict(200, st.used)
        if st.refused >= lim.ban_after:
            st.bans += 1
            ban = min(lim.ban_s * 2 ** (st.bans - 1), MAX_BAN_S)
            st.banned_until = now + ban
            self.stats.bans += 1
            self.stats.banned += 1
            return Verdict(418, st.used, _ceil(ban))
        st.refused += 1
        self.stats.limited += 1
        return Verdict(429, st.used, _ceil((window + 1) * lim.window_s - now))


class MessageMeter:
    """Incoming messages of one connection: False for one past ``per_second`` in any second."""

    def __init__(self, per_second: int) -> None:
        self._per_second = per_second
        self._times: deque[float] = deque()

    def allow(self, now: float) -> bool:
        """Record a message at ``now`` (monotonic seconds); whether the connection may live."""
        times = self._times
        while times and now - times[0] >= 1.0:
            times.popleft()
        times.append(now)
        return len(times) <= self._per_second


def _ceil(seconds: float) -> int:
    return max(1, math.ceil(seconds))


__all__ = [
    "USDM_LIMITS",
    "BinanceLimits",
    "LimitStats",
    "MessageMeter",
    "Verdict",
    "WeightLimiter",
    "depth_weight",
    "futures_weight",
    "rest_weight",
    "ticker_weight",
]
