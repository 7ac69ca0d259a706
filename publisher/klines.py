"""Exchange candles: CCXT's OHLCV cache -> :class:`Candle` records. Pure, no I/O.

CCXT keeps streamed candles per symbol and timeframe as ``[open_ms, o, h, l, c, v]`` rows,
newest last, and drops the exchange's "final" flag. So a candle is published open
(``closed=False``) each time its values change, and closed (``closed=True``, final values)
when a newer interval shows up in the cache, or when its interval ended ``grace_ms`` ago
and nothing newer came (a market without trades). The last record of an interval wins.
CCXT does not pass on the event time of a candle update, so ``ts_ms`` is our receive time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from marketbus.models import INTERVALS_MS, Candle
from publisher.normalize import NormalizeError

Row = Sequence[Any]


@dataclass
class _Last:
    open_ms: int
    values: tuple[float, ...]
    closed: bool


class CandleTracker:
    """Turns successive looks at CCXT's OHLCV caches into open/closed candle records."""

    def __init__(self, exchange: str, grace_ms: int = 3_000) -> None:
        self.exchange = exchange
        self.grace_ms = grace_ms
        self._last: dict[tuple[str, str], _Last] = {}
        self.invalid = 0

    def update(self, symbol: str, interval: str, rows: Sequence[Row], recv_ns: int) -> list[Candle]:
        """Records for what changed in ``rows`` (CCXT's cache, oldest first) since last time."""
        if not rows:
            return []
        key = (symbol, interval)
        last = self._last.get(key)
        start = last.open_ms if last is not None else int(rows[-1][0])
        fresh = [r for r in rows[-4:] if int(r[0]) >= start]
        out: list[Candle] = []
        for i, r in enumerate(fresh):
            closed = i < len(fresh) - 1
            values = tuple(float(x) for x in r[1:6])
            open_ms = int(r[0])
            last = self._last.get(key)
            if last is not None and last.open_ms == open_ms:
                if last.values == values and (last.closed or not closed):
                    continue
            out.append(self._record(symbol, interval, open_ms, values, closed, recv_ns))
            self._last[key] = _Last(open_ms, values, closed)
        return out

    def expire(self, now_ns: int) -> list[Candle]:
        """Close candles whose interval ended ``grace_ms`` ago with no newer one seen."""
        now_ms = now_ns // 1_000_000
        out = []
        for (symbol, interval), last in self._last.items():
            end = last.open_ms + INTERVALS_MS[interval]
            if not last.closed and now_ms >= end + self.grace_ms:
                last.closed = True
                out.append(self._record(symbol, interval, last.open_ms, last.values, True, now_ns))
        return out

    def forget(self, symbol: str, interval: str | None = None) -> None:
        for key in [k for k in self._last if k[0] == symbol and interval in (None, k[1])]:
            del self._last[key]

    def _record(
        self,
        symbol: str,
        interval: str,
        open_ms: int,
        values: tuple[float, ...],
        closed: bool,
        recv_ns: int,
    ) -> Candle:
        o, h, low, c, v = values
        try:
            return Candle(
                exchange=self.exchange, symbol=symbol, ts_ms=recv_ns // 1_000_000,
                recv_ns=recv_ns, interval=interval, open_ms=open_ms, open=o, high=h, low=low,
                close=c, volume=v, closed=closed,
            )  # fmt: skip
        except ValidationError as e:
            self.invalid += 1
            raise NormalizeError(f"bad {self.exchange} {symbol} {interval} candle: {e}") from e
