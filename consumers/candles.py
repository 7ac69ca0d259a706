"""OHLCV candles built from trades, for any set of intervals. Pure: feed trades, ask tables.

A candle covers ``[start, start + interval)`` in exchange time. It closes when a trade of a
later interval arrives, or when :meth:`CandleBuilder.advance` is told the clock passed its
end (so a quiet market still gets its candles closed, flat ones are not invented).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import pyarrow as pa

from marketbus.errors import ConfigError

_UNITS = {"s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")

CANDLE_SCHEMA = pa.schema(
    [
        ("start_ms", pa.int64()),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.float64()),
        ("quote_volume", pa.float64()),
        ("trades", pa.int64()),
    ]
)


def interval_ms(interval: str | int) -> int:
    """``"1s"``, ``"5m"``, ``"1h"``, ``"1d"`` (or milliseconds) -> milliseconds."""
    if isinstance(interval, int):
        if interval <= 0:
            raise ConfigError(f"candle interval must be positive, got {interval}")
        return interval
    m = _INTERVAL.match(interval)
    if not m or int(m.group(1)) == 0:
        raise ConfigError(f"candle interval must look like 1s, 5m, 1h or 1d, got {interval!r}")
    return int(m.group(1)) * _UNITS[m.group(2)]


GRACE_MS = 2_000
"""A candle with no newer trade closes this long after its interval ended (wall clock), so
trades that reach the consumer a little late (a busy publisher, a Redis hiccup) still count.
A trade of a newer interval closes it at once."""


@dataclass
class Candle:
    start_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: float
    quote_volume: float
    trades: int

    def add(self, price: float, amount: float) -> None:
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.close = price
        self.volume += amount
        self.quote_volume += price * amount
        self.trades += 1


class _Series:
    def __init__(self, width_ms: int, keep: int, grace_ms: int) -> None:
        self.width = width_ms
        self.grace = grace_ms
        self.current: Candle | None = None
        self.closed: deque[Candle] = deque(maxlen=keep)
        self.closed_upto = -1  # start of the newest closed candle: older trades are late

    def add(self, ts_ms: int, price: float, amount: float) -> bool:
        """False for a late trade (its candle was already closed and stays final)."""
        start = ts_ms - ts_ms % self.width
        cur = self.current
        if start <= self.closed_upto or (cur is not None and start < cur.start_ms):
            return False
        if cur is None or start > cur.start_ms:
            if cur is not None:
                self._close(cur)
            self.current = Candle(start, price, price, price, price, 0.0, 0.0, 0)
        assert self.current is not None
        self.current.add(price, amount)
        return True

    def _close(self, candle: Candle) -> None:
        self.closed.append(candle)
        self.closed_upto = candle.start_ms

    def advance(self, now_ms: int) -> None:
        cur = self.current
        if cur is not None and now_ms >= cur.start_ms + self.width + self.grace:
            self._close(cur)
            self.current = None


class CandleBuilder:
    """Candles of one market for several intervals at once."""

    def __init__(
        self, intervals: Sequence[str | int], keep: int = 10_000, grace_ms: int = GRACE_MS
    ) -> None:
        if not intervals:
            raise ConfigError("candles need at least one interval")
        if grace_ms < 0:
            raise ConfigError(f"candle grace must be >= 0 ms, got {grace_ms}")
        self._series = {iv: _Series(interval_ms(iv), keep, grace_ms) for iv in intervals}
        self.late_trades = 0

    @property
    def intervals(self) -> list[str | int]:
        return list(self._series)

    def add_trade(self, ts_ms: int, price: float, amount: float) -> None:
        late = False
        for s in self._series.values():
            late |= not s.add(ts_ms, price, amount)
        self.late_trades += late

    def add_trades(self, trades: Iterable[tuple[int, float, float]]) -> None:
        for ts, price, amount in trades:
            self.add_trade(ts, price, amount)

    def advance(self, now_ms: int) -> None:
        """Close every candle whose interval ended before ``now_ms``."""
        for s in self._series.values():
            s.advance(now_ms)

    def table(self, interval: str | int, include_open: bool = False) -> pa.Table:
        """Closed candles of ``interval`` (oldest first), plus the open one if asked."""
        s = self._series.get(interval)
        if s is None:
            raise KeyError(f"no candles for interval {interval!r}; have {self.intervals}")
        rows = list(s.closed)
        if include_open and s.current is not None:
            rows.append(s.current)
        cols = {name: [getattr(c, name) for c in rows] for name in CANDLE_SCHEMA.names}
        return pa.table(cols, schema=CANDLE_SCHEMA)

    def current(self, interval: str | int) -> Candle | None:
        return self._series[interval].current
