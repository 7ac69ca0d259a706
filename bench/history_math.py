"""The ``history`` group's arithmetic, pure: bytes per record, rates, the synthetic day's
shape (rows per roll, entry ids, the cache key) and the windows read from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def per_record(total_bytes: float, records: int) -> float:
    """Bytes per record (NaN when there is no record: nothing to divide)."""
    return total_bytes / records if records > 0 else math.nan


def rate(records: int, seconds: float) -> float:
    """Records per second (NaN for a run that took no time or did nothing)."""
    return records / seconds if seconds > 0 and records > 0 else math.nan


def roll_bounds(rows: int, rolls: int) -> list[tuple[int, int]]:
    """``rows`` cut into ``rolls`` consecutive ``[lo, hi)`` slices as even as possible (the
    first ones one row longer), none empty: the commits a day is written in."""
    if rows < 1 or rolls < 1:
        raise ValueError("rows and rolls must be positive")
    rolls = min(rolls, rows)
    size, extra = divmod(rows, rolls)
    out = []
    lo = 0
    for i in range(rolls):
        hi = lo + size + (1 if i < extra else 0)
        out.append((lo, hi))
        lo = hi
    return out


def entry_ids(
    ts_ms: npt.NDArray[np.int64], delay_ms: int = 3
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Redis entry ids ``(ms, seq)`` for records added in the order given, ``delay_ms`` after
    their exchange time: the ms never goes back (Redis takes the last id's when the clock
    is behind it), the sequence counts the entries of one ms from 0. Strictly increasing,
    so they are valid ids for every stream the records are spread over."""
    ms = np.maximum.accumulate(ts_ms.astype(np.int64) + delay_ms)
    n = len(ms)
    if n == 0:
        return ms, np.zeros(0, dtype=np.int64)
    starts = np.ones(n, dtype=bool)
    starts[1:] = ms[1:] != ms[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    return ms, (np.arange(n) - first).astype(np.int64)


def rank_within(groups: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """For each element, how many earlier elements share its group (0, 1, 2, ... per group,
    in order): consecutive trade ids per market."""
    n = len(groups)
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = g[1:] != g[:-1]
    first = np.maximum.accumulate(np.where(starts, np.arange(n), 0))
    out = np.empty(n, dtype=np.int64)
    out[order] = np.arange(n) - first
    return out


@dataclass(frozen=True)
class DaySpec:
    """The synthetic day of trades the read and SQL figures use (one exchange, one date)."""

    rows: int
    symbols: int = 100
    rolls: int = 24  # commits: hourly rolls, as a day written by a running archiver
    seed: int = 11
    day: int = 20_422  # 2025-11-30 (days since 1970): a past day, as compaction wants
    version: int = 1  # of the builder: a change to what it writes makes a new cache entry

    @property
    def key(self) -> str:
        """The cache directory's name: every parameter that changes the files."""
        return (
            f"history-day-v{self.version}-{self.rows}r-{self.symbols}s-{self.rolls}c"
            f"-seed{self.seed}-d{self.day}"
        )

    @property
    def start_ms(self) -> int:
        return self.day * DAY_MS

    def symbol(self, i: int) -> str:
        return f"S{i:03d}/USDT"

    def hour(self, h: int) -> tuple[int, int]:
        """``[start, end)`` of the day's hour ``h`` (0-23), exchange time."""
        if not 0 <= h < 24:
            raise ValueError(f"no hour {h} in a day")
        return self.start_ms + h * HOUR_MS, self.start_ms + (h + 1) * HOUR_MS


def picks(spec: DaySpec, n: int, seed: int = 5) -> list[tuple[str, int]]:
    """``n`` different (symbol, hour) pairs to read, the same ones every run."""
    rng = np.random.default_rng(seed)
    cells = rng.choice(spec.symbols * 24, size=min(n, spec.symbols * 24), replace=False)
    return [(spec.symbol(int(c) // 24), int(c) % 24) for c in cells]
