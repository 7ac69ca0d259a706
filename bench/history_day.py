"""The synthetic day of trades the ``history`` group reads: built once, cached by its shape.

``rows`` trades of ``symbols`` markets on one exchange (``binance``) and one UTC date, spread
evenly over the day (every market about as busy as the others): random-walk prices on a
0.01 tick, exponential sizes, consecutive trade ids per market, 1-50 ms receive latency,
Redis entry ids 3 ms after the exchange time. They are written as the archiver writes them,
through :meth:`archive.store.Store.commit` (sorted by symbol and time per file, zstd, the
archive's encodings, an atomic commit each), in ``rolls`` commits of consecutive entries:
a file per hour, as a running archiver rolling hourly leaves a day. When compaction exists
(``archive.compact``), a copy of the directory is compacted into one file for the date.

Both directories are kept under ``bench-results/<DaySpec.key>/`` with ``built.json`` (how
long each step took) written last: a run finding it reuses the day instead of building it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from archive.store import Store
from bench.history_math import DAY_MS, DaySpec, entry_ids, rank_within, roll_bounds
from consumers.archive_layout import date_of, file_schema
from marketbus.keys import stream_key
from marketbus.models import Channel

EXCHANGE = "binance"
MARKER = "built.json"


@dataclass(frozen=True)
class Day:
    """A built (or cached) day: its directories and what building it took."""

    spec: DaySpec
    rolled: Path  # the day as committed: ``rolls`` files
    compacted: Path | None  # the same after ``archive compact``: one file (None: no compaction)
    info: dict[str, Any]  # build_s, compact_s, bytes, files, cached, built_at

    @property
    def date(self) -> str:
        return date_of(self.spec.start_ms)


def columns(spec: DaySpec) -> dict[str, Any]:
    """The day's rows in arrival (entry id) order, as numpy arrays (symbol as an index)."""
    rng = np.random.default_rng(spec.seed)
    n = spec.rows
    ts = np.sort(rng.integers(0, DAY_MS, n, dtype=np.int64)) + spec.start_ms
    sym = rng.integers(0, spec.symbols, n, dtype=np.int64)
    # random walk per market: cumulative log returns in each market's own order
    steps = rng.normal(0.0, 1e-4, n)
    order = np.argsort(sym, kind="stable")
    walked = np.empty(n)
    walked[order] = _group_cumsum(steps[order], sym[order])
    base = 100.0 * (1.0 + np.arange(spec.symbols))
    price = np.maximum(0.01, np.round(base[sym] * np.exp(walked), 2))
    amount = np.maximum(np.round(rng.exponential(0.5, n), 5), 1e-5)
    ms, seq = entry_ids(ts)
    return {
        "sym": sym,
        "ts_ms": ts,
        "recv_ns": ts * 1_000_000 + rng.integers(1_000_000, 50_000_000, n),
        "entry_ms": ms,
        "entry_seq": seq,
        "price": price,
        "amount": amount,
        "side": rng.integers(0, 2, n).astype(np.int8),
        "id": 3_000_000_000 + 1_000_000 * sym + rank_within(sym),
    }


def _group_cumsum(values: np.ndarray[Any, Any], groups: np.ndarray[Any, Any]) -> Any:
    """Cumulative sums restarting at each new group (``groups`` sorted)."""
    total = np.cumsum(values)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    before = np.zeros(len(values))
    before[starts[1:]] = total[starts[1:] - 1]
    return total - np.maximum.accumulate(before)


def table(spec: DaySpec, cols: dict[str, Any], lo: int, hi: int) -> pa.Table:
    """Rows ``[lo, hi)`` in the archive's trades schema."""
    schema = file_schema(Channel.TRADES)
    names = pa.array([spec.symbol(i) for i in range(spec.symbols)], pa.string())
    side = pa.DictionaryArray.from_arrays(
        pa.array(cols["side"][lo:hi]), pa.array(["buy", "sell"], pa.string())
    )
    arrays = [
        pc.take(names, pa.array(cols["sym"][lo:hi])),
        pa.array(cols["ts_ms"][lo:hi]),
        pa.array(cols["recv_ns"][lo:hi]),
        pa.array(cols["entry_ms"][lo:hi]),
        pa.array(cols["price"][lo:hi]),
        pa.array(cols["amount"][lo:hi]),
        side,
        pc.cast(pa.array(cols["id"][lo:hi]), pa.string()),
        pa.array(cols["entry_seq"][lo:hi]),
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def marks(spec: DaySpec, cols: dict[str, Any], lo: int, hi: int) -> dict[str, str]:
    """Per stream, the last entry id of rows ``[lo, hi)`` (what a commit records)."""
    sym = cols["sym"][lo:hi]
    last: dict[str, str] = {}
    for i in np.unique(sym).tolist():
        j = lo + int(np.flatnonzero(sym == i)[-1])
        key = stream_key(EXCHANGE, spec.symbol(i), Channel.TRADES)
        last[key] = f"{int(cols['entry_ms'][j])}-{int(cols['entry_seq'][j])}"
    return last


def write_rolls(spec: DaySpec, root: Path) -> None:
    cols = columns(spec)
    part = (Channel.TRADES, EXCHANGE, date_of(spec.start_ms))
    store = Store(root)
    store.open()
    try:
        for lo, hi in roll_bounds(spec.rows, spec.rolls):
            store.commit(None, {part: table(spec, cols, lo, hi)}, marks(spec, cols, lo, hi))
    finally:
        store.close()


def _size(root: Path) -> tuple[int, int]:
    files = list(root.glob("channel=*/exchange=*/date=*/*.parquet"))
    return len(files), sum(f.stat().st_size for f in files)


def _compact_fn() -> Any:
    """``archive.compact.compact`` when this tree has it, else None."""
    try:
        from archive.compact import compact
    except ImportError:
        return None
    return compact


def build(spec: DaySpec, cache: Path) -> Day:
    """The day under ``cache/<spec.key>``: reused when a complete build is there, else built
    (a half-built one is removed first)."""
    home = cache / spec.key
    rolled, compacted = home / "rolls", home / "compacted"
    compact = _compact_fn()
    with contextlib.suppress(FileNotFoundError, orjson.JSONDecodeError):
        info = orjson.loads((home / MARKER).read_bytes())
        if compact is None or info.get("compacted"):
            info["cached"] = True
            return Day(spec, rolled, compacted if info.get("compacted") else None, info)
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    t = time.perf_counter()
    write_rolls(spec, rolled)
    info = {"build_s": time.perf_counter() - t, "built_at": time.time(), "cached": False}
    info["files"], info["bytes"] = _size(rolled)
    if compact is not None:
        shutil.copytree(rolled, compacted)
        t = time.perf_counter()
        report = compact(compacted, date=date_of(spec.start_ms))
        info["compact_s"] = time.perf_counter() - t
        info["compacted"] = True
        info["compacted_files"], info["compacted_bytes"] = _size(compacted)
        info["compacted_rows"] = report.rows
    (home / MARKER).write_bytes(orjson.dumps(info))
    return Day(spec, rolled, compacted if compact is not None else None, info)
