"""The arithmetic of the ``cost`` group: CPU per record, what a core buys, the lossless checks.

Pure (counters in, numbers out), so the sizing figures are tested on their own
(tests/unit/test_bench_cost.py); ``bench.cost_session`` collects the counters and
``bench.fig_cost`` turns these numbers into figures and tables.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

PER_MARKET_TRADES = 10.0
"""Trades a second a market is sized at (a busy spot market; Binance's top 50 average less)."""
PER_MARKET_TICKERS = 1.0
"""Ticker updates a second a market is sized at (Binance's ``@ticker`` pushes once a second)."""
RATE_TOLERANCE = 0.01
"""The fake delivered the rate when every part of a window saw it within 1 % (below: the fake
was the limit; above: it was catching up after falling behind, so the rate was not steady)."""


@dataclass(frozen=True)
class Snap:
    """The counters of one session at one instant (a boundary of a window's parts).

    ``cpu``: CPU seconds so far per process role (``/proc/<pid>/stat``). ``frames``: data
    frames the fake has written. ``written``: records the publisher's sink has written.
    ``added``: ``entries-added`` summed over every stream; ``last_gen``: each stream's
    last generated id. ``received``: records the consumer (or reader) has taken;
    ``positions``: the last entry id it took per stream. Counters a session lacks are None.
    """

    t: float
    cpu: Mapping[str, float]
    frames: int
    written: int | None = None
    added: int | None = None
    last_gen: Mapping[str, str] = field(default_factory=dict)
    received: int | None = None
    positions: Mapping[str, str] = field(default_factory=dict)
    redis_cmds: Mapping[str, tuple[int, int]] = field(default_factory=dict)
    """Redis' ``INFO commandstats`` so far: command -> (calls, µs executing it)."""


def us_per_record(cpu_s: float, records: int | float) -> float:
    """CPU microseconds per record (nan when no record was handled)."""
    return cpu_s * 1e6 / records if records > 0 else math.nan


def per_core(us: float) -> float:
    """Records a second one fully busy core handles at ``us`` µs a record."""
    return 1e6 / us if us > 0 else math.nan


def per_market_rate(
    trades: float = PER_MARKET_TRADES, tickers: float = PER_MARKET_TICKERS
) -> float:
    """Records a second one market costs: its trades plus its ticker updates."""
    return trades + tickers


def markets_per_core(us: float, per_market: float | None = None) -> float:
    """Markets one core follows at ``us`` µs a record and ``per_market`` records/s each."""
    return per_core(us) / (per_market if per_market is not None else per_market_rate())


def read_side_us(redis_cpu_s: float, write_us: float, added: int, received: int) -> float:
    """Redis' CPU per record a consumer read: its CPU over the window less what the same
    writes cost it without a reader (the write side's µs per entry times the entries added
    in the window), over the records the consumer received."""
    return us_per_record(redis_cpu_s - write_us * 1e-6 * added, received)


READ_COMMANDS = frozenset(
    {"xread", "xreadgroup", "xack", "xautoclaim", "xpending", "xgroup|create", "xrevrange"}
)
"""What a consumer sends (the rest of what Redis runs in a window is the publisher's)."""
BENCH_COMMANDS = frozenset({"xinfo|stream", "info"})
"""The bench's own snapshots: in neither side."""


def redis_split(a: Snap, b: Snap) -> dict[str, float]:
    """What Redis ran over a part, from ``INFO commandstats``: µs executing the write side
    (the publisher's commands: XADD, its status hash) and the read side
    (:data:`READ_COMMANDS`), reads (``XREAD`` / ``XREADGROUP``) made, and its CPU
    (``/proc``) shared out in proportion to those µs. That share is only a cross-check:
    socket reads and writes, parsing and the event loop are not in commandstats, and for
    the publisher's many small pipelined XADDs they are most of the cost (alone, its CPU is
    ~3x XADD's execution time), so the proportional share gives the reads part of the
    writes' cost. The figures take the read side by difference (:func:`read_side_us`)."""
    usec = {k: v[1] - a.redis_cmds.get(k, (0, 0))[1] for k, v in b.redis_cmds.items()}
    read = sum(v for k, v in usec.items() if k in READ_COMMANDS)
    bench = sum(v for k, v in usec.items() if k in BENCH_COMMANDS)
    write = sum(usec.values()) - read - bench
    total = read + write + bench
    cpu = b.cpu["redis"] - a.cpu["redis"]
    reads = sum(
        v[0] - a.redis_cmds.get(k, (0, 0))[0]
        for k, v in b.redis_cmds.items()
        if k in ("xread", "xreadgroup")
    )
    return {
        "cpu_s": cpu,
        "write_s": cpu * write / total if total else math.nan,
        "read_s": cpu * read / total if total else math.nan,
        "bench_s": cpu * bench / total if total else math.nan,
        "exec_write_s": write / 1e6,
        "exec_read_s": read / 1e6,
        "read_calls": reads,
    }


def mb_per_million(bytes_per_entry: float) -> float:
    """Redis memory (MB = 10^6 bytes) a million entries take at this many bytes each."""
    return bytes_per_entry


def part_bounds(t0: float, window: float, parts: int) -> list[float]:
    """The instants cutting a window into ``parts`` equal parts (first = t0, last = end)."""
    if parts < 1 or window <= 0:
        raise ValueError("parts >= 1 and window > 0 please")
    return [t0 + window * i / parts for i in range(parts + 1)]


def part_values(a: Snap, b: Snap, role: str, records: str) -> dict[str, float]:
    """One part of a window: the records ``records`` counts over it (``written``,
    ``added``, ``received`` or ``frames``), their rate, and ``role``'s CPU µs per record."""
    n = _delta(a, b, records)
    dt = b.t - a.t
    cpu = b.cpu[role] - a.cpu[role]
    return {
        "seconds": dt,
        "records": n,
        "records_s": n / dt if dt > 0 else math.nan,
        "cpu_s": cpu,
        "cores": cpu / dt if dt > 0 else math.nan,
        "us": us_per_record(cpu, n),
    }


def _delta(a: Snap, b: Snap, name: str) -> int:
    va, vb = getattr(a, name), getattr(b, name)
    if va is None or vb is None:
        raise ValueError(f"no {name} counter in these snapshots")
    return int(vb) - int(va)


def offered_check(snaps: Sequence[Snap], rate: float, stored: str = "added") -> dict[str, Any]:
    """Whether the fake delivered ``rate`` (within :data:`RATE_TOLERANCE`) in every part:
    frames it wrote per second, and
    the records in flight at each boundary (written by the fake, not yet counted by
    ``stored``: ``added`` in Redis, or ``received`` by a reader)."""
    rates = [(b.frames - a.frames) / (b.t - a.t) for a, b in itertools.pairwise(snaps)]
    in_flight = [s.frames - int(getattr(s, stored)) for s in snaps]
    return {
        "offered_s": rates,
        "delivered": bool(rates) and all(abs(r - rate) <= rate * RATE_TOLERANCE for r in rates),
        "in_flight": in_flight,
    }


def consumer_balance(
    received: int, added: int, between: int, in_flight_start: int, in_flight_end: int
) -> dict[str, Any]:
    """A consumer's part of a window, lossless or not, with nothing left to tolerance.

    ``between``: entries Redis holds after the consumer's positions at the start (per
    stream, exclusive) up to its positions at the end (inclusive): what it had to receive.
    ``in_flight_*``: entries added but not yet received at each edge (after its position,
    up to the stream's last id at that instant). So ``added`` (entries added in the part)
    = ``between`` - ``in_flight_start`` + ``in_flight_end``, and ``lost`` = ``between`` -
    ``received`` (negative: a record counted twice).
    """
    expected = added - in_flight_end + in_flight_start
    return {
        "received": received,
        "added": added,
        "in_flight_start": in_flight_start,
        "in_flight_end": in_flight_end,
        "between": between,
        "lost": between - received,
        "consistent": expected == between,
        "lossless": between == received and expected == between,
    }


@dataclass(frozen=True)
class SizingRow:
    """One component of the sizing table."""

    component: str
    how: str
    us: float
    us_min: float
    records_s: float
    rss_mb: float | None = None


def sizing_cells(row: SizingRow, per_market: float | None = None) -> list[str]:
    """A row of the printed sizing table."""
    return [
        row.component,
        row.how,
        _num(row.us, 1),
        _num(row.us_min, 1),
        _num(per_core(row.us), 0),
        _num(markets_per_core(row.us, per_market), 0),
        _num(row.records_s, 0),
        _num(row.rss_mb, 0),
    ]


SIZING_COLUMNS = (
    "component",
    "measured as",
    "µs/record (median)",
    "min",
    "records/s per core",
    "markets per core",
    "records/s in window",
    "RSS MB",
)


def memory_cells(kind: str, bytes_per_entry: float | None, constant: int, maxlen: int) -> list[str]:
    """A row of the Redis memory table: measured bytes per entry, MB per million entries,
    the constant ``marketbus doctor`` uses, and one stream at ``maxlen`` (+ trim slack)."""
    if bytes_per_entry is None:
        return [kind, "-", "-", f"{constant:,}", "-"]
    return [
        kind,
        _num(bytes_per_entry, 0),
        _num(mb_per_million(bytes_per_entry), 0),
        f"{constant:,}",
        _num(bytes_per_entry * maxlen / 1e6, 1),
    ]


def _num(v: float | None, digits: int) -> str:
    if v is None or not math.isfinite(v):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{digits}f}"


__all__ = [
    "BENCH_COMMANDS",
    "PER_MARKET_TICKERS",
    "PER_MARKET_TRADES",
    "RATE_TOLERANCE",
    "READ_COMMANDS",
    "SIZING_COLUMNS",
    "SizingRow",
    "Snap",
    "consumer_balance",
    "markets_per_core",
    "mb_per_million",
    "memory_cells",
    "offered_check",
    "part_bounds",
    "part_values",
    "per_core",
    "per_market_rate",
    "read_side_us",
    "redis_split",
    "sizing_cells",
    "us_per_record",
]
