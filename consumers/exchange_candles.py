"""Exchange candles, one row per interval start: the last update of each candle wins. Pure.

An exchange streams an open candle again each time it changes, then once more with
``closed=True``. The consumer's ``candles`` ring buffer keeps every update (a time series of
updates, with their latency columns); bots want candles. :class:`CandleSeries` keeps one
interval's candles sorted by ``open_ms`` in a numpy record array: an update of the newest
candle (the common case) overwrites one slot, a new candle is appended, a late or repeated
older one (a republish after a reconnect) is put in its place. At most ``keep`` candles are
held; the oldest go first. ~81 bytes a candle, no Python object per candle.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from marketbus.errors import ConfigError
from marketbus.models import INTERVALS_MS

FIELDS = (
    ("open_ms", np.int64, pa.int64()),
    ("open", np.float64, pa.float64()),
    ("high", np.float64, pa.float64()),
    ("low", np.float64, pa.float64()),
    ("close", np.float64, pa.float64()),
    ("volume", np.float64, pa.float64()),
    ("quote_volume", np.float64, pa.float64()),
    ("closed", np.bool_, pa.bool_()),
    ("ts_ms", np.int64, pa.int64()),
    ("recv_ns", np.int64, pa.int64()),
    ("entry_ms", np.int64, pa.int64()),
)
DTYPE = np.dtype([(name, dt) for name, dt, _ in FIELDS])
SCHEMA = pa.schema([(name, t) for name, _, t in FIELDS])
"""The table :meth:`CandleSeries.table` returns: ``ts_ms``/``recv_ns``/``entry_ms`` are
those of the candle's last update; ``quote_volume`` is NaN where the exchange gives none."""

DEFAULT_KEEP = 10_000


class CandleSeries:
    """One market's candles of one interval, sorted by ``open_ms``, last update wins."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ConfigError(f"candle keep must be >= 1, got {keep}")
        self.keep = keep
        self._a = np.zeros(min(64, 2 * keep), dtype=DTYPE)
        self._lo = 0  # rows [lo, hi) are held, sorted by open_ms
        self._hi = 0
        self.updates = 0  # records taken (each replaces or adds a candle)
        self.dropped = 0  # records older than every held candle while full

    def __len__(self) -> int:
        return self._hi - self._lo

    def add(self, rec: tuple[Any, ...]) -> None:
        """``rec`` in :data:`FIELDS` order. O(1) for the newest candle, O(n) for an older one."""
        a, lo, hi = self._a, self._lo, self._hi
        open_ms = rec[0]
        self.updates += 1
        if hi > lo:
            newest = a["open_ms"][hi - 1]
            if open_ms == newest:
                a[hi - 1] = rec
                return
            if open_ms < newest:
                self._insert(rec)
                return
        if hi - lo == self.keep:
            self._lo += 1
        if self._hi == len(self._a):
            self._make_room()
        self._a[self._hi] = rec
        self._hi += 1

    def _insert(self, rec: tuple[Any, ...]) -> None:
        opens = self._a["open_ms"]
        i = self._lo + int(np.searchsorted(opens[self._lo : self._hi], rec[0]))
        if opens[i] == rec[0]:  # i < hi: rec is older than the newest
            self._a[i] = rec
            return
        if len(self) == self.keep:
            if i == self._lo:  # older than everything held: it would be evicted at once
                self.dropped += 1
                return
            a, lo = self._a, self._lo
            a[lo : i - 1] = a[lo + 1 : i]  # drop the oldest, shift the older ones down
            a[i - 1] = rec
            return
        if self._hi == len(self._a):
            shift = self._lo
            self._make_room()
            i -= shift - self._lo
        a, hi = self._a, self._hi
        a[i + 1 : hi + 1] = a[i:hi]
        a[i] = rec
        self._hi += 1

    def _make_room(self) -> None:
        """Called when the array's end is reached: compact to the front, or grow (up to
        ``2 * keep`` slots, so compaction is O(keep) once every ``keep`` appends)."""
        n = len(self)
        cap = len(self._a)
        if n > cap // 2 and cap < 2 * self.keep:
            new = np.zeros(min(2 * cap, 2 * self.keep), dtype=DTYPE)
            new[:n] = self._a[self._lo : self._hi]
            self._a = new
        else:
            self._a[:n] = self._a[self._lo : self._hi]
        self._lo, self._hi = 0, n

    def table(self, n: int | None = None, *, include_open: bool = True) -> pa.Table:
        """The last ``n`` candles (all when None), oldest first, as a PyArrow table (a copy).

        ``include_open=False`` keeps only candles whose last update said ``closed``.
        """
        part = self._a[self._lo : self._hi]
        if not include_open:
            part = part[part["closed"]]
        if n is not None:
            part = part[max(len(part) - n, 0) :]
        cols = [pa.array(np.ascontiguousarray(part[name]), type=t) for name, _, t in FIELDS]
        return pa.Table.from_arrays(cols, schema=SCHEMA)

    def last(self) -> dict[str, Any] | None:
        """The newest candle as ``{column: value}`` (open or closed), or None."""
        if not len(self):
            return None
        r = self._a[self._hi - 1]
        return {name: r[name].item() for name, _, _ in FIELDS}


class ExchangeCandles:
    """Every interval of one market's ``candles`` stream, fed with buffer rows."""

    def __init__(self, keep: int = DEFAULT_KEEP) -> None:
        if keep < 1:
            raise ConfigError(f"candle keep must be >= 1, got {keep}")
        self.keep = keep
        self._series: dict[str, CandleSeries] = {}

    @property
    def intervals(self) -> list[str]:
        """Intervals seen so far, shortest first."""
        return sorted(self._series, key=INTERVALS_MS.__getitem__)

    def add_row(self, r: tuple[Any, ...]) -> None:
        """A ``candles`` buffer row (:func:`consumers.columns.row_at` layout)."""
        ts, recv, entry, interval, open_ms, o, h, low, c, v, qv, closed = r
        s = self._series.get(interval)
        if s is None:
            s = self._series[interval] = CandleSeries(self.keep)
        s.add((open_ms, o, h, low, c, v, qv, closed, ts, recv, entry))

    def series(self, interval: str) -> CandleSeries | None:
        if interval not in INTERVALS_MS:
            raise ConfigError(
                f"unknown candle interval {interval!r}; use one of {list(INTERVALS_MS)}"
            )
        return self._series.get(interval)

    def table(self, interval: str, n: int | None = None, *, include_open: bool = True) -> pa.Table:
        """See :meth:`CandleSeries.table`; an empty table while none came for ``interval``."""
        s = self.series(interval)
        if s is None:
            return SCHEMA.empty_table()
        return s.table(n, include_open=include_open)
