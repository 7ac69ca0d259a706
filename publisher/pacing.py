"""Pacing within an exchange's limits: REST weight, websocket messages, book snapshots.

Pure state with the clock passed in; the few ``async`` waits are thin loops over it. The hooks
that put these in front of CCXT are in ``publisher.rest_hooks`` and ``publisher.ws_hooks``.

Why our own, beside CCXT's ``enableRateLimit``: CCXT's REST throttle is a leaky bucket that
spaces every request by its cost (Binance: 50 ms per 5 weight, so 1,000 book snapshots take
50 s even when the minute's 6,000 weight would take them at once), it is off against a fake
exchange, and it does not look at ``Retry-After``. Binance counts weight per fixed minute; a
budget that never spends more than the limit in any rolling window is within every fixed one.
A 429 or 418 blocks the whole budget for its ``Retry-After``, so one refusal is not followed
by more (Binance bans an IP that keeps going after 429s).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from publisher.exchanges import profile
from publisher.profile import ExchangeLimits

Clock = Callable[[], float]

WINDOW_MARGIN_S = 0.25
"""Added to the exchange's window (clocks and windows are never quite the same length)."""


SNAPSHOT_MARGIN = 5
"""A book published ``depth`` levels deep starts from a snapshot of at least this many times
as many levels: levels deeper than the snapshot are only known once a diff touches them."""


def limits_of(exchange: str) -> ExchangeLimits:
    """The limits in ``exchange``'s profile (each exchange's module says why they are what
    they are)."""
    return profile(exchange).limits


def snapshot_limit(exchange: str, depth: int) -> int | None:
    """The snapshot size to ask for: the smallest the exchange serves that holds
    ``SNAPSHOT_MARGIN`` x ``depth`` levels (Binance: 100 for the default depth 20, weight 5;
    CCXT's own default asks 1,000, weight 50). None: no REST snapshot, or nothing that big."""
    sizes = limits_of(exchange).snapshot_limits
    want = depth * SNAPSHOT_MARGIN
    fitting = [n for n in sizes if n >= want]
    if fitting:
        return fitting[0]
    return sizes[-1] if sizes else None


@dataclass
class BudgetStats:
    spent: float = 0.0
    waits: int = 0
    """Requests that waited for room (or for a Retry-After)."""
    waited_s: float = 0.0
    limited: int = 0
    """429s answered to us."""
    banned: int = 0
    """418s answered to us."""
    blocked_s: float = 0.0
    """Seconds the exchange told us to wait (Retry-After), summed."""


class WindowBudget:
    """At most ``capacity`` cost in any rolling ``window_s``; nothing while blocked.

    A request counts from when it is asked for until ``window_s`` after its answer: the
    exchange counted it somewhere in between (after it waited for a connection, crossed the
    network...). So any window the exchange counts in, fixed or rolling, holds no more than
    ``capacity``, however long the requests took on the way.
    """

    def __init__(self, capacity: float, window_s: float, clock: Clock = time.monotonic) -> None:
        if capacity <= 0 or window_s <= 0:
            raise ValueError("capacity and window_s must be > 0")
        self.capacity = capacity
        self.window_s = window_s
        self.stats = BudgetStats()
        self._clock = clock
        self._done: deque[tuple[float, float]] = deque()
        self._done_sum = 0.0
        self._in_flight = 0.0
        self._blocked_until = 0.0
        self._freed: asyncio.Event | None = None

    @property
    def used(self) -> float:
        """Cost counted now: requests in flight and those answered within the window."""
        self._expire(self._clock())
        return self._in_flight + self._done_sum

    def delay(self, cost: float) -> float:
        """Seconds until ``cost`` may be spent (0: now); ``inf`` while only answers to
        requests in flight can make room. A cost above the capacity goes when nothing else
        is counted, rather than never."""
        now = self._clock()
        self._expire(now)
        blocked = max(0.0, self._blocked_until - now)
        over = self._in_flight + self._done_sum + cost - self.capacity
        if over <= 1e-9 or (not self._done and not self._in_flight):
            return blocked
        freed = 0.0
        for t, c in self._done:
            freed += c
            if freed >= over - 1e-9:
                return max(blocked, t + self.window_s - now)
        if not self._in_flight:  # too big for the capacity: once the window is empty
            return max(blocked, self._done[-1][0] + self.window_s - now)
        return math.inf

    def start(self, cost: float) -> None:
        """A request of ``cost`` goes out now (call :meth:`finish` with its answer)."""
        self._in_flight += cost
        self.stats.spent += cost

    def finish(self, cost: float) -> None:
        """The request started with ``cost`` was answered (or failed): its window starts."""
        self._in_flight = max(0.0, self._in_flight - cost)
        self._done.append((self._clock(), cost))
        self._done_sum += cost
        if self._freed is not None:
            self._freed.set()

    def block(self, seconds: float, status: int = 429) -> None:
        """The exchange refused us (429, or 418: a ban): nothing until ``seconds`` passed."""
        if status == 418:
            self.stats.banned += 1
        else:
            self.stats.limited += 1
        self.stats.blocked_s += seconds
        self._blocked_until = max(self._blocked_until, self._clock() + seconds)

    async def acquire(self, cost: float) -> None:
        """Wait until ``cost`` fits, then :meth:`start` it."""
        wait = self.delay(cost)
        if wait > 0:
            self.stats.waits += 1
            start = self._clock()
            while wait > 0:
                if self._freed is None:
                    self._freed = asyncio.Event()
                self._freed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._freed.wait(), min(wait, 3_600.0))
                wait = self.delay(cost)
            self.stats.waited_s += self._clock() - start
        self.start(cost)

    def _expire(self, now: float) -> None:
        done = self._done
        while done and done[0][0] <= now - self.window_s:
            self._done_sum -= done.popleft()[1]
        if not done:
            self._done_sum = 0.0


class Spacing:
    """Messages on one connection at least ``1 / per_second`` apart, in the order asked."""

    def __init__(self, per_second: float, clock: Clock = time.monotonic) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be > 0")
        self.interval = 1.0 / per_second
        self._clock = clock
        self._next = 0.0
        self.waited = 0
        """Messages that had to wait for their turn."""

    def reserve(self) -> float:
        """Take the next slot; seconds to wait before sending in it."""
        now = self._clock()
        at = max(now, self._next)
        self._next = at + self.interval
        if at > now:
            self.waited += 1
        return at - now

    async def wait(self) -> None:
        delay = self.reserve()
        if delay > 0:
            await asyncio.sleep(delay)


@dataclass
class SnapshotGate:
    """Books subscribed but still waiting for their REST snapshot: at most ``max_pending``.

    A Binance book is subscribed first; its diffs are cached (by CCXT) until the snapshot
    arrives. Subscribing a thousand books while their snapshots are paced over a minute would
    cache a minute of diffs for each. New books are admitted only while few are waiting; a
    book leaves the gate when its snapshot fetch ended (either way), or after ``timeout_s``.
    """

    max_pending: int = 200
    timeout_s: float = 60.0
    clock: Clock = time.monotonic
    _pending: dict[str, float] = field(default_factory=dict)
    _changed: asyncio.Event | None = None

    @property
    def pending(self) -> int:
        self._expire(self.clock())
        return len(self._pending)

    def room(self, n: int) -> bool:
        """Whether ``n`` more books may be subscribed now (always when none is waiting)."""
        self._expire(self.clock())
        return not self._pending or len(self._pending) + n <= self.max_pending

    def add(self, symbols: Iterable[str]) -> None:
        deadline = self.clock() + self.timeout_s
        for s in symbols:
            self._pending[s] = deadline

    def done(self, symbol: str) -> None:
        if self._pending.pop(symbol, None) is not None and self._changed is not None:
            self._changed.set()

    def clear(self) -> None:
        self._pending.clear()
        if self._changed is not None:
            self._changed.set()

    async def admit(self, symbols: list[str]) -> None:
        """Wait for room for ``symbols``, then count them as waiting."""
        while not self.room(len(symbols)):
            if self._changed is None:
                self._changed = asyncio.Event()
            self._changed.clear()
            first = min(self._pending.values())
            timeout = max(0.01, first - self.clock())
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                pass
        self.add(symbols)

    def _expire(self, now: float) -> None:
        if any(d <= now for d in self._pending.values()):
            self._pending = {s: d for s, d in self._pending.items() if d > now}


@dataclass
class Pacer:
    """One worker's pacing state, kept across its sessions (a ban outlives a reconnect)."""

    exchange: str
    rest: WindowBudget | None = None
    books: SnapshotGate = field(default_factory=SnapshotGate)
    subscribe_waits: int = 0
    """Subscribe requests that waited for room in a connection's requests per window."""
    subscribe_waited_s: float = 0.0

    def subscribe_wait(self, seconds: float) -> None:
        self.subscribe_waits += 1
        self.subscribe_waited_s += seconds

    @property
    def limits(self) -> ExchangeLimits:
        return limits_of(self.exchange)

    def rest_budget(self, rate_limit_ms: float, window_ms: float) -> WindowBudget | None:
        """The REST budget for a client of CCXT's ``rateLimit`` (ms per unit of cost) over
        ``window_ms`` (the exchange's window, 60 s); made once, resized when they change."""
        if not self.limits.rest_budget or rate_limit_ms <= 0:
            return None
        window_s = window_ms / 1000 + WINDOW_MARGIN_S
        capacity = window_ms / rate_limit_ms
        if self.rest is None:
            self.rest = WindowBudget(capacity, window_s)
        else:
            self.rest.capacity, self.rest.window_s = capacity, window_s
        return self.rest

    def status(self) -> dict[str, float | int]:
        """The counters ``marketbus inspect`` shows."""
        out: dict[str, float | int] = {"books_awaiting_snapshot": self.books.pending}
        if self.limits.subscribes_per_window:
            out.update(
                ws_subscribe_waits=self.subscribe_waits,
                ws_subscribe_waited_s=round(self.subscribe_waited_s, 2),
            )
        if self.rest is not None:
            st = self.rest.stats
            out.update(
                rest_budget_used_pct=round(100 * self.rest.used / self.rest.capacity, 1),
                rest_waits=st.waits,
                rest_waited_s=round(st.waited_s, 2),
                rest_429=st.limited,
                rest_418=st.banned,
            )
        return out


__all__ = [
    "BudgetStats",
    "ExchangeLimits",
    "Pacer",
    "SnapshotGate",
    "Spacing",
    "WindowBudget",
    "limits_of",
    "snapshot_limit",
]
