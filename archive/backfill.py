"""``marketbus backfill``: an exchange's REST history, written straight into the archive.

::

    plan = BackfillPlan(("BTC/USDT",), (Channel.TRADES, Channel.CANDLES), ("1m",), since, until)
    stats = await Backfill(client, "/data/archive", "binance").run(plan)

Each market and channel (trades; candles of each interval) is one *task*. Its range is paged
(:mod:`archive.backfill_pages`), its rows are turned into the archive's own file schema (the
live rows' columns: :func:`consumers.archive_layout.file_schema`) and committed through
:class:`archive.store.Store` every ``commit_rows`` rows and at the end of each range.

Rows from REST are told from live ones without a column of their own: ``entry_ms`` is 0 (their
entry id reads ``0-<n>``, an id Redis never issues), ``recv_ns`` is when the page was fetched,
and ``entry_seq`` is unique per market and channel: a trade's numeric id (so REST rows order as
the exchange's trades do, run after run), otherwise a counter kept in the cursor file; a
candle's ``open_ms * 16 +`` its interval's index. A REST candle is a closed one, ``ts_ms`` its
interval's last millisecond (Binance's kline close time).

Resumable: after each commit the task's cursor, the time ranges done, is written atomically
to ``_archive/backfill/<exchange>.json``; a rerun fetches only what its range has beyond them.
A kill between a commit and its cursor costs a refetch, never a duplicate: a trade whose id the
archive already holds for that market (from live or an earlier backfill), or a closed candle of
an interval and open time it holds, is not written again. The same check is what fills a gap
the live path left: backfill the gap's range, and only the missing trades are written.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TypeVar

import numpy as np
import orjson
import pyarrow as pa
import structlog
from pydantic import ValidationError

from archive.backfill_pages import (
    Page,
    Profile,
    RestSource,
    Retry,
    candle_pages,
    profile,
    trade_pages,
    trade_ts,
)
from archive.decode import build, split_by_date
from archive.store import Partition, Store, write_json_atomic
from consumers.archive_catalog import STATE_DIR
from consumers.archive_layout import DAY_MS, valid_name
from consumers.history import History
from marketbus.errors import ConfigError, FatalError
from marketbus.models import INT64_MAX, INTERVALS_MS, Candle, Channel, Trade
from marketbus.symbols import normalize_symbol

log = structlog.get_logger("marketbus.archive")

CURSOR_DIR: Final = "backfill"
CURSOR_VERSION: Final = 1
COUNTER_BASE: Final = 1 << 62
"""entry_seq of trades whose ids are not numbers: a counter from here (above any numeric id
seen in practice), reserved in the cursor file before each commit."""
CHANNELS: Final = (Channel.TRADES, Channel.CANDLES)
_INTERVAL_INDEX = {name: i for i, name in enumerate(INTERVALS_MS)}

T = TypeVar("T")
Progress = Callable[[str, int, int, int], None]
"""``(task, ms done, ms to do, rows written)``, after every page."""


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class BackfillPlan:
    """What to fetch: markets, channels (trades, candles), candle intervals, a time range."""

    symbols: tuple[str, ...]
    channels: tuple[Channel, ...]
    intervals: tuple[str, ...]
    since_ms: int
    until_ms: int

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ConfigError("backfill: needs at least one symbol")
        bad = [c for c in self.channels if c not in CHANNELS]
        if bad or not self.channels:
            raise ConfigError(
                f"backfill: channels {', '.join(c.value for c in CHANNELS)} only, "
                f"not {', '.join(c.value for c in bad) or 'none'}"
            )
        unknown = [i for i in self.intervals if i not in INTERVALS_MS]
        if unknown or (Channel.CANDLES in self.channels and not self.intervals):
            raise ConfigError(
                f"backfill: unknown interval {', '.join(unknown) or '(none)'} "
                f"(use {', '.join(INTERVALS_MS)})"
            )
        if not 0 <= self.since_ms < self.until_ms:
            raise ConfigError("backfill: --since must be before --until")

    def tasks(self) -> list[tuple[str, str]]:
        """``(symbol, task)`` in order: ``trades``, ``candles:<interval>``."""
        out = []
        for symbol in self.symbols:
            if Channel.TRADES in self.channels:
                out.append((symbol, "trades"))
            if Channel.CANDLES in self.channels:
                out += [(symbol, f"candles:{i}") for i in self.intervals]
        return out


@dataclass
class TaskStats:
    fetched: int = 0  # rows the exchange returned in the range
    written: int = 0  # rows committed
    known: int = 0  # already in the archive (live, or an earlier backfill): not written
    invalid: int = 0  # rows that are not valid records: counted, skipped
    skipped_ms: int = 0  # milliseconds whose trades did not fit a page (see backfill_pages)
    done_ms: int = 0  # the part of the range fetched (this run)
    todo_ms: int = 0  # the part of the range this run had to fetch


@dataclass
class BackfillStats:
    tasks: dict[str, TaskStats] = field(default_factory=dict)
    commits: int = 0
    retries: int = 0
    waited_s: float = 0.0

    @property
    def written(self) -> int:
        return sum(t.written for t in self.tasks.values())


# --------------------------------------------------------------------------- coverage (pure)


def add_range(done: Sequence[Sequence[int]], start: int, end: int) -> list[list[int]]:
    """``done`` (sorted, disjoint ``[start, end)`` ranges) with ``[start, end)`` merged in."""
    if start >= end:
        return [list(r) for r in done]
    out: list[list[int]] = []
    for a, b in sorted([*map(tuple, done), (start, end)]):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return out


def missing(done: Sequence[Sequence[int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of ``[start, end)`` that ``done`` does not cover, in order."""
    out = []
    cursor = start
    for a, b in sorted(map(tuple, done)):
        if b <= cursor or a >= end:
            continue
        if a > cursor:
            out.append((cursor, min(a, end)))
        cursor = max(cursor, b)
        if cursor >= end:
            break
    if cursor < end:
        out.append((cursor, end))
    return out


# --------------------------------------------------------------------------- the cursor file


def cursor_path(root: Path, exchange: str) -> Path:
    return Path(root) / STATE_DIR / CURSOR_DIR / f"{exchange}.json"


class Cursors:
    """``_archive/backfill/<exchange>.json``: per market and task, the ranges done and (for
    trades without numeric ids) the next entry_seq. Written atomically after each commit."""

    def __init__(self, root: Path, exchange: str, markets: dict[str, Any] | None = None) -> None:
        self.path = cursor_path(root, exchange)
        self.exchange = exchange
        self.markets: dict[str, Any] = markets or {}

    @classmethod
    def load(cls, root: Path, exchange: str) -> Cursors:
        path = cursor_path(root, exchange)
        try:
            data = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return cls(root, exchange)
        except orjson.JSONDecodeError as e:
            raise FatalError(f"backfill cursor {path} is damaged ({e}): move it away") from e
        if not isinstance(data, dict) or data.get("version") != CURSOR_VERSION:
            raise FatalError(f"backfill cursor {path}: unknown version {data.get('version')!r}")
        return cls(root, exchange, dict(data.get("markets") or {}))

    def _task(self, symbol: str, task: str) -> dict[str, Any]:
        found: dict[str, Any] = self.markets.setdefault(symbol, {}).setdefault(task, {})
        return found

    def done(self, symbol: str, task: str) -> list[list[int]]:
        return [list(map(int, r)) for r in self._task(symbol, task).get("done", [])]

    def mark(self, symbol: str, task: str, start: int, end: int) -> None:
        t = self._task(symbol, task)
        t["done"] = add_range(t.get("done", []), start, end)

    def reserve(self, symbol: str, task: str, n: int) -> int:
        """The first of ``n`` new counter values (the caller saves before using them)."""
        t = self._task(symbol, task)
        first = int(t.get("next_seq", COUNTER_BASE))
        t["next_seq"] = first + n
        return first

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = {"version": CURSOR_VERSION, "exchange": self.exchange, "markets": self.markets}
        write_json_atomic(self.path, data)


# --------------------------------------------------------------------------- rows (pure)


def numeric_id(trade_id: str) -> int | None:
    """A trade id usable as entry_seq as it is: a non-negative integer below the counter."""
    if not trade_id.isdigit():
        return None
    n = int(trade_id)
    return n if n < COUNTER_BASE else None


def trade_records(
    exchange: str, symbol: str, trades: Iterable[Mapping[str, Any]], recv_ns: int
) -> tuple[list[Trade], int]:
    """CCXT trade structures as records (the live path's rules: id as text, side buy/sell or
    none), and how many were not valid."""
    out: list[Trade] = []
    bad = 0
    for t in trades:
        side = t.get("side")
        try:
            out.append(
                Trade(
                    exchange=exchange,
                    symbol=symbol,
                    ts_ms=trade_ts(t),
                    recv_ns=recv_ns,
                    id=str(t["id"]) if t.get("id") is not None else "",
                    price=t.get("price"),
                    amount=t.get("amount"),
                    side=side if side in ("buy", "sell") else None,
                )
            )
        except (ValidationError, TypeError, ValueError, KeyError):
            bad += 1
    return out, bad


def candle_records(
    exchange: str, symbol: str, interval: str, rows: Iterable[Sequence[Any]], recv_ns: int
) -> tuple[list[Candle], int]:
    """CCXT OHLCV rows (``[open_ms, o, h, l, c, v]``) as closed candles, ``ts_ms`` their
    interval's last millisecond; and how many were not valid."""
    width = INTERVALS_MS[interval]
    out: list[Candle] = []
    bad = 0
    for r in rows:
        try:
            open_ms = int(r[0])
            out.append(
                Candle(
                    exchange=exchange,
                    symbol=symbol,
                    ts_ms=open_ms + width - 1,
                    recv_ns=recv_ns,
                    interval=interval,
                    open_ms=open_ms,
                    open=r[1],
                    high=r[2],
                    low=r[3],
                    close=r[4],
                    volume=r[5],
                    closed=True,
                )
            )
        except (ValidationError, TypeError, ValueError, IndexError):
            bad += 1
    return out, bad


def candle_seq(interval: str, open_ms: int) -> int:
    """entry_seq of a REST candle: unique per market for every (interval, open time)."""
    return open_ms * 16 + _INTERVAL_INDEX[interval]


def trades_batch(symbol: str, trades: Sequence[Trade], seqs: Sequence[int]) -> pa.RecordBatch:
    """Trades in the archive's file schema, marked as REST rows (entry_ms 0)."""
    n = len(trades)
    cols = [
        [t.ts_ms for t in trades],
        [t.recv_ns for t in trades],
        np.zeros(n, dtype=np.int64),
        [t.price for t in trades],
        [t.amount for t in trades],
        [t.side for t in trades],
        [t.id for t in trades],
    ]
    return build(Channel.TRADES, symbol, cols, np.asarray(seqs, dtype=np.int64))


def candles_batch(symbol: str, candles: Sequence[Candle]) -> pa.RecordBatch:
    """Candles in the archive's file schema, marked as REST rows (entry_ms 0)."""
    n = len(candles)
    cols = [
        [c.ts_ms for c in candles],
        [c.recv_ns for c in candles],
        np.zeros(n, dtype=np.int64),
        [c.interval for c in candles],
        [c.open_ms for c in candles],
        [c.open for c in candles],
        [c.high for c in candles],
        [c.low for c in candles],
        [c.close for c in candles],
        [c.volume for c in candles],
        [math.nan if c.quote_volume is None else c.quote_volume for c in candles],
        [c.closed for c in candles],
    ]
    seqs = [candle_seq(c.interval, c.open_ms) for c in candles]
    return build(Channel.CANDLES, symbol, cols, np.asarray(seqs, dtype=np.int64))


def partitions(
    channel: Channel, exchange: str, batches: Iterable[pa.RecordBatch]
) -> dict[Partition, pa.Table]:
    """Record batches as one table per (channel, exchange, date) partition."""
    by_date: dict[str, list[pa.RecordBatch]] = {}
    for batch in batches:
        if batch.num_rows:
            for date, part in split_by_date(batch).items():
                by_date.setdefault(date, []).append(part)
    return {(channel, exchange, d): pa.Table.from_batches(b) for d, b in by_date.items()}


# --------------------------------------------------------------------------- what is archived


class Known:
    """What the archive already holds of one market, a day at a time: trade ids, and the
    (interval, open time) of closed candles. Days are read when first needed (a few kept)."""

    def __init__(self, history: History, exchange: str, symbol: str, keep_days: int = 3) -> None:
        self._history = history
        self._exchange = exchange
        self._symbol = symbol
        self._keep = keep_days
        self._trades: OrderedDict[int, set[str]] = OrderedDict()
        self._candles: OrderedDict[int, set[tuple[str, int]]] = OrderedDict()

    def trade_ids(self, day: int) -> set[str]:
        found = self._trades.get(day)
        if found is None:
            t = self._history.read(
                self._exchange, self._symbol, Channel.TRADES, day * DAY_MS, (day + 1) * DAY_MS
            )
            found = set(t.column("id").to_pylist())
            self._remember(self._trades, day, found)
        return found

    def candle_keys(self, day: int) -> set[tuple[str, int]]:
        found = self._candles.get(day)
        if found is None:
            t = self._history.read(
                self._exchange, self._symbol, Channel.CANDLES, day * DAY_MS, (day + 1) * DAY_MS
            )
            t = t.filter(t.column("closed"))
            intervals = [str(v) for v in t.column("interval").to_pylist()]
            found = set(zip(intervals, t.column("open_ms").to_pylist(), strict=True))
            self._remember(self._candles, day, found)
        return found

    def load(self, channel: Channel, days: Iterable[int]) -> None:
        """Read these days now (from a thread: the reads are file I/O)."""
        for day in days:
            if channel is Channel.TRADES:
                self.trade_ids(day)
            else:
                self.candle_keys(day)

    def _remember(self, cache: OrderedDict[int, Any], day: int, value: Any) -> None:
        cache[day] = value
        while len(cache) > self._keep:
            cache.popitem(last=False)


# --------------------------------------------------------------------------- the runner


@dataclass
class _Held:
    """Rows of one task read since its last commit."""

    start: int  # the range they cover starts here...
    done_to: int  # ...and ends here
    trades: list[Trade] = field(default_factory=list)
    candles: list[Candle] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return len(self.trades) + len(self.candles)


class Backfill:
    """Pages one exchange's history into an archive directory (see the module docstring)."""

    def __init__(
        self,
        client: RestSource,
        dir: str | Path,
        exchange: str,
        *,
        commit_rows: int = 100_000,
        settle_ms: int = 5_000,
        retry: Retry | None = None,
        paging: Profile | None = None,
        on_progress: Progress | None = None,
        clock_ns: Callable[[], int] = time.time_ns,
        zstd_level: int = 3,
        row_group_rows: int = 65_536,
    ) -> None:
        if not valid_name(exchange):
            raise ConfigError(f"backfill: exchange {exchange!r} is not a usable archive name")
        if commit_rows < 1 or settle_ms < 0:
            raise ConfigError("backfill: commit_rows >= 1 and settle_ms >= 0 please")
        self.client = client
        self.dir = Path(dir)
        self.exchange = exchange
        self.commit_rows = commit_rows
        self.settle_ms = settle_ms
        self.retry = retry or Retry()
        self.paging = paging or profile(exchange)
        self.on_progress = on_progress
        self._clock_ns = clock_ns
        # no writer name: a backfill reads no consumer group, and shares the directory with
        # the archivers (commits are serialized by the store's commit lock)
        self._store = Store(self.dir, zstd_level=zstd_level, row_group_rows=row_group_rows)
        self._history = History(self.dir)
        self._cursors = Cursors(self.dir, exchange)
        self.stats = BackfillStats()

    async def run(self, plan: BackfillPlan) -> BackfillStats:
        """Every task of ``plan``, in order. Cancelling it (or killing the process) loses
        only rows not yet committed; a commit under way is finished and its cursor written."""
        await asyncio.to_thread(self._store.open)
        try:
            self._cursors = await asyncio.to_thread(Cursors.load, self.dir, self.exchange)
            for symbol, task in plan.tasks():
                await self._task(normalize_symbol(symbol), task, plan)
        finally:
            self.stats.retries, self.stats.waited_s = self.retry.retries, self.retry.waited_s
            await asyncio.to_thread(self._store.close)
        return self.stats

    def _now_ms(self) -> int:
        return self._clock_ns() // 1_000_000

    async def _task(self, symbol: str, task: str, plan: BackfillPlan) -> None:
        key = f"{symbol} {task}"
        stats = self.stats.tasks.setdefault(key, TaskStats())
        now = self._now_ms()
        candles = task.startswith("candles:")
        if candles:  # open times whose candle has closed
            width = INTERVALS_MS[task.partition(":")[2]]
            end = min(plan.until_ms, now - now % width)
        else:  # trade times the exchange has surely published by now
            end = min(plan.until_ms, now - self.settle_ms)
        todo = missing(self._cursors.done(symbol, task), plan.since_ms, end)
        stats.todo_ms = sum(b - a for a, b in todo)
        self._progress(key, stats)
        known = Known(self._history, self.exchange, symbol)
        prof = self.paging
        for start, stop in todo:
            held = _Held(start, start)
            if candles:
                interval = task.partition(":")[2]
                pages = candle_pages(
                    self.client, symbol, interval, start, stop, now, prof, self.retry
                )
            else:
                pages = trade_pages(self.client, symbol, start, stop, prof, self.retry)
            async for page in pages:
                await self._take(symbol, task, page, held, known, stats)
                stats.done_ms += max(0, page.done_to - held.done_to)
                held.done_to = max(held.done_to, page.done_to)
                if held.rows >= self.commit_rows:
                    await self._commit(symbol, task, held, stats)
                    held = _Held(held.done_to, held.done_to)
                self._progress(key, stats)
            held.done_to = max(held.done_to, stop)  # the pager reached the range's end
            await self._commit(symbol, task, held, stats)
            self._progress(key, stats)
        log.info("backfill_task_done", exchange=self.exchange, task=key, **vars(stats))

    async def _take(
        self, symbol: str, task: str, page: Page, held: _Held, known: Known, stats: TaskStats
    ) -> None:
        """The page's new, valid rows into ``held`` (the archive's and held ones dropped)."""
        recv_ns = self._clock_ns()
        channel = Channel.TRADES if task == "trades" else Channel.CANDLES
        await asyncio.to_thread(known.load, channel, _days(page.rows, task))
        stats.fetched += len(page.rows)
        stats.skipped_ms += len(page.skipped_ms)
        if page.skipped_ms:
            log.warning(
                "backfill_trades_skipped", exchange=self.exchange, symbol=symbol,
                ms=list(page.skipped_ms),
                why="more trades in one millisecond than a page holds, and no way to page "
                "inside it on this exchange",
            )  # fmt: skip
        if task == "trades":
            trades, bad = trade_records(self.exchange, symbol, page.rows, recv_ns)
            stats.invalid += bad
            for t in trades:
                ids = known.trade_ids(t.ts_ms // DAY_MS)
                if t.id in ids:
                    stats.known += 1
                    continue
                ids.add(t.id)
                held.trades.append(t)
            return
        interval = task.partition(":")[2]
        candles, bad = candle_records(self.exchange, symbol, interval, page.rows, recv_ns)
        stats.invalid += bad
        for c in candles:
            keys = known.candle_keys(c.ts_ms // DAY_MS)
            if (c.interval, c.open_ms) in keys:
                stats.known += 1
                continue
            keys.add((c.interval, c.open_ms))
            held.candles.append(c)

    async def _commit(self, symbol: str, task: str, held: _Held, stats: TaskStats) -> None:
        """``held`` as one commit, then its range in the cursor (even with no rows)."""
        if held.trades:
            seqs: list[int | None] = [numeric_id(t.id) for t in held.trades]
            if None in seqs:
                first = self._cursors.reserve(symbol, task, len(seqs))
                await asyncio.to_thread(self._cursors.save)
                seqs = [first + i if s is None else s for i, s in enumerate(seqs)]
            batch = trades_batch(symbol, held.trades, [s or 0 for s in seqs])
            tables = partitions(Channel.TRADES, self.exchange, [batch])
        elif held.candles:
            tables = partitions(
                Channel.CANDLES, self.exchange, [candles_batch(symbol, held.candles)]
            )
        else:
            tables = {}

        def done() -> None:
            self._cursors.mark(symbol, task, held.start, held.done_to)
            self._cursors.save()

        if not tables:
            await asyncio.to_thread(done)
            return
        # the store takes the next commit number under its lock: an archiver (or another
        # backfill) may be committing to the same directory meanwhile
        committed = await _uncancelled(
            asyncio.to_thread(self._store.commit, None, tables, {}), then=done
        )
        commit = committed.commit
        self.stats.commits += 1
        stats.written += held.rows
        log.info(
            "backfill_commit", exchange=self.exchange, symbol=symbol, task=task,
            commit=commit, rows=held.rows, start_ms=held.start, end_ms=held.done_to,
        )  # fmt: skip
        await asyncio.to_thread(done)

    def _progress(self, key: str, stats: TaskStats) -> None:
        if self.on_progress is not None:
            self.on_progress(key, stats.done_ms, stats.todo_ms, stats.written)


def _days(rows: Sequence[Any], task: str) -> set[int]:
    """The days (since the epoch) a page's rows fall on, by the time they are filed under."""
    if task == "trades":
        return {trade_ts(t) // DAY_MS for t in rows if trade_ts(t) >= 0}
    width = INTERVALS_MS[task.partition(":")[2]]
    return {(int(r[0]) + width - 1) // DAY_MS for r in rows}


async def _uncancelled(work: Awaitable[T], then: Callable[[], None]) -> T:
    """Await ``work`` (a commit in a thread) to its end even when cancelled meanwhile; on a
    cancellation, once it succeeded, run ``then`` (write the cursor) before re-raising, so a
    rerun does not fetch the commit's range again."""
    task: asyncio.Future[T] = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled() and task.exception() is None:
            then()
        raise


def parse_time(text: str, now_ms: int | None = None) -> int:
    """``2026-11-01``, ``2026-11-01T12:00[:00][Z|+01:00]``, ``now`` or ms since the epoch
    -> ms since the epoch (UTC when no zone is given)."""
    from datetime import UTC, datetime

    value = text.strip()
    if value == "now":
        return now_ms if now_ms is not None else time.time_ns() // 1_000_000
    if value.isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"not a time: {text!r} (use 2026-11-01, 2026-11-01T12:00Z, now or ms)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    ms = int(parsed.timestamp() * 1000)
    if not 0 <= ms <= INT64_MAX:
        raise ConfigError(f"time out of range: {text!r}")
    return ms


__all__ = [
    "Backfill",
    "BackfillPlan",
    "BackfillStats",
    "Cursors",
    "Known",
    "TaskStats",
    "add_range",
    "candle_records",
    "cursor_path",
    "missing",
    "parse_time",
    "trade_records",
]
