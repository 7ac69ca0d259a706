"""``archive.backfill``: paging, cursors, dedupe and the rows it writes, against a small fake
client (pure logic and a temporary archive directory; no exchange, no Redis)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import orjson
import pyarrow.parquet as pq
import pytest

from archive.backfill import (
    COUNTER_BASE,
    Backfill,
    BackfillPlan,
    Cursors,
    add_range,
    candle_records,
    cursor_path,
    missing,
    parse_time,
    trade_records,
)
from archive.backfill_pages import Page, Profile, Retry, candle_pages, trade_pages
from archive.store import Store
from consumers.archive_layout import file_schema, schema_problem
from consumers.history import History
from marketbus.errors import ConfigError, ExchangeUnavailableError, FatalError
from marketbus.models import Channel, Trade
from tests.archive_data import commit_records, part_files

H = 3_600_000
Mode = Literal["window", "backward", "since"]
T0 = 1_796_083_200_000  # 2026-12-01T00:00Z
NOW_NS = (T0 + 30 * 86_400_000) * 1_000_000


def make_trades(
    times: list[int], first_id: int = 1_000, numeric: bool = True
) -> list[dict[str, Any]]:
    """CCXT trade structures at these times, ids consecutive."""
    return [
        {
            "id": str(first_id + i) if numeric else f"u-{first_id + i}",
            "timestamp": ts,
            "price": 100.0 + (i % 7),
            "amount": 0.5 + (i % 3),
            "side": "buy" if i % 2 else "sell",
        }
        for i, ts in enumerate(times)
    ]


class FakeRest:
    """An exchange's REST history in memory, answering as Binance (``window``), OKX
    (``backward``) or a plain since-pager does; records every call."""

    def __init__(self, trades: list[dict[str, Any]], mode: Mode = "window", cap: int = 10) -> None:
        self.trades = sorted(trades, key=lambda t: (t["timestamp"], int(t["id"].split("-")[-1])))
        self.mode = mode
        self.cap = cap
        self.calls: list[tuple[Any, ...]] = []
        self.fail: list[Exception] = []  # raised by the next calls, in order

    def _num(self, t: Mapping[str, Any]) -> int:
        return int(str(t["id"]).split("-")[-1])

    async def fetch_trades(
        self,
        symbol: str,
        since: int | None = None,
        limit: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        p = dict(params or {})
        self.calls.append(("trades", since, limit, p))
        await asyncio.sleep(0)
        if self.fail:
            raise self.fail.pop(0)
        n = min(limit or self.cap, self.cap)
        if self.mode == "window":
            if "fromId" in p:
                return [t for t in self.trades if self._num(t) >= p["fromId"]][:n]
            assert since is not None and p["until"] - since < H  # Binance's rule
            return [t for t in self.trades if since <= t["timestamp"] <= p["until"]][:n]
        if self.mode == "backward":
            if p["type"] == "2":
                older = [t for t in self.trades if t["timestamp"] < p["after"]]
            else:
                older = [t for t in self.trades if self._num(t) < p["after"]]
            return older[-n:]  # the newest n of them (CCXT sorts them oldest first)
        assert since is not None
        return [t for t in self.trades if t["timestamp"] >= since][:n]

    async def fetch_ohlcv(
        self,
        symbol: str,
        timeframe: str = "1m",
        since: int | None = None,
        limit: int | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> list[list[Any]]:
        self.calls.append(("ohlcv", since, limit, dict(params or {})))
        assert since is not None
        buckets: dict[int, list[float]] = {}
        for t in self.trades:
            m = t["timestamp"] // 60_000 * 60_000
            p, a = t["price"], t["amount"]
            b = buckets.get(m)
            if b is None:
                buckets[m] = [p, p, p, p, a]
            else:
                b[1], b[2], b[3], b[4] = max(b[1], p), min(b[2], p), p, b[4] + a
        rows = [[m, *b] for m, b in sorted(buckets.items()) if m >= since]
        return rows[: min(limit or self.cap, self.cap)]


def ids_of(pages: list[Page]) -> list[str]:
    return [t["id"] for p in pages for t in p.rows]


async def collect(client: FakeRest, start: int, end: int, prof: Profile) -> list[Page]:
    return [p async for p in trade_pages(client, "X/Y", start, end, prof, Retry(sleep=_nosleep))]


async def _nosleep(_: float) -> None:
    return None


# --------------------------------------------------------------------------- coverage


def test_ranges_merge_and_what_is_missing() -> None:
    done = add_range([], 10, 20)
    done = add_range(done, 30, 40)
    assert done == [[10, 20], [30, 40]]
    assert add_range(done, 20, 30) == [[10, 40]]
    assert add_range(done, 15, 35) == [[10, 40]]
    assert add_range(done, 5, 5) == done
    assert missing(done, 0, 50) == [(0, 10), (20, 30), (40, 50)]
    assert missing(done, 12, 18) == []
    assert missing(done, 15, 35) == [(20, 30)]
    assert missing([], 3, 9) == [(3, 9)]


def test_times_parse_as_utc() -> None:
    assert parse_time("2026-12-01") == T0
    assert parse_time("2026-12-01T01:00Z") == T0 + H
    assert parse_time("2026-12-01T02:00:00+01:00") == T0 + H
    assert parse_time(str(T0)) == T0
    assert parse_time("now", now_ms=42) == 42
    with pytest.raises(ConfigError):
        parse_time("yesterday")


def test_plan_refuses_bad_channels_intervals_and_ranges() -> None:
    ok = BackfillPlan(("BTC/USDT",), (Channel.TRADES, Channel.CANDLES), ("1m", "1h"), 0, 10)
    assert ok.tasks() == [
        ("BTC/USDT", "trades"),
        ("BTC/USDT", "candles:1m"),
        ("BTC/USDT", "candles:1h"),
    ]
    for bad in (
        dict(channels=(Channel.BOOK,)),
        dict(intervals=("7m",)),
        dict(since_ms=10, until_ms=10),
        dict(symbols=()),
    ):
        args: dict[str, Any] = dict(
            symbols=("BTC/USDT",), channels=(Channel.CANDLES,), intervals=("1m",), since_ms=0,
            until_ms=10,
        )  # fmt: skip
        args.update(bad)
        with pytest.raises(ConfigError):
            BackfillPlan(**args)


# --------------------------------------------------------------------------- pagers


async def test_window_pager_fetches_every_trade_once_through_a_crowded_millisecond() -> None:
    times = [T0 + 5, T0 + 5, T0 + 900, *([T0 + 1_000] * 25), T0 + 1_001, T0 + 2 * H + 7]
    client = FakeRest(make_trades(times), "window", cap=10)
    pages = await collect(client, T0, T0 + 3 * H, Profile("window", 10, 10))
    assert ids_of(pages) == [t["id"] for t in client.trades]
    assert pages[-1].done_to == T0 + 3 * H
    assert [p.done_to for p in pages] == sorted(p.done_to for p in pages)
    assert any("fromId" in c[3] for c in client.calls)  # through the crowded ms by id
    assert all(c[3].get("until", 0) - (c[1] or 0) < H for c in client.calls if c[1] is not None)


async def test_window_pager_keeps_to_the_range() -> None:
    client = FakeRest(make_trades([T0 - 1, T0, T0 + H - 1, T0 + H]), "window")
    pages = await collect(client, T0, T0 + H, Profile("window", 10, 10))
    assert ids_of(pages) == ["1001", "1002"]


async def test_backward_pager_walks_each_window_to_its_start_and_hands_out_oldest_first() -> None:
    times = sorted([T0 + i * 997 % (2 * H) for i in range(57)] + [T0 - 5, T0 + 2 * H])
    client = FakeRest(make_trades(times), "backward", cap=10)
    pages = await collect(client, T0, T0 + 2 * H, Profile("backward", 10, 10, {"method": "m"}))
    inside = [t["id"] for t in client.trades if T0 <= t["timestamp"] < T0 + 2 * H]
    assert ids_of(pages) == inside and len(inside) == 57
    assert [p.done_to for p in pages] == [T0 + H, T0 + 2 * H]
    assert all(c[3]["method"] == "m" for c in client.calls)
    assert {c[3]["type"] for c in client.calls} == {"1", "2"}


async def test_since_pager_reports_a_millisecond_it_cannot_get_through() -> None:
    times = [T0 + 1, *([T0 + 2] * 12), T0 + 3, T0 + 50]
    client = FakeRest(make_trades(times), "since", cap=10)
    pages = await collect(client, T0, T0 + 100, Profile("since", 10, 10))
    got = ids_of(pages)
    assert len(got) == len(set(got))
    assert [p.skipped_ms for p in pages if p.skipped_ms] == [(T0 + 2,)]
    assert {"1013", "1014"} <= set(got)  # after the crowded ms, it goes on
    assert pages[-1].done_to == T0 + 100


async def test_candle_pages_only_closed_candles_of_the_range() -> None:
    times = [T0 + m * 60_000 + 5 for m in range(30)]
    client = FakeRest(make_trades(times), cap=7)
    retry = Retry(sleep=_nosleep)
    now = T0 + 20 * 60_000 + 30_000  # candle 20 still open
    pages = [
        p
        async for p in candle_pages(
            client, "X/Y", "1m", T0 + 1, T0 + 25 * 60_000, now, Profile("since", 10, 7), retry
        )
    ]
    opens = [r[0] for p in pages for r in p.rows]
    assert opens == [T0 + m * 60_000 for m in range(1, 20)]


async def test_retry_waits_what_the_exchange_asked_then_gives_up() -> None:
    waits: list[float] = []

    async def sleep(s: float) -> None:
        waits.append(s)

    client = FakeRest(make_trades([T0 + 1]), "window")
    client.fail = [ExchangeUnavailableError("429", retry_after=7), ExchangeUnavailableError("x")]
    retry = Retry(sleep=sleep, min_s=0.5)
    pages = [
        p async for p in trade_pages(client, "X/Y", T0, T0 + 10, Profile("window", 10, 10), retry)
    ]
    assert ids_of(pages) == ["1000"]
    assert 7 <= waits[0] < 7.1 and 0.5 <= waits[1] < 0.6
    assert (retry.retries, len(client.calls)) == (2, 3)
    client.fail = [ExchangeUnavailableError("down")] * 3
    with pytest.raises(ExchangeUnavailableError):
        await collect_with(client, Retry(sleep=sleep, attempts=3))
    client.fail = [FatalError("bad symbol")]
    with pytest.raises(FatalError):
        await collect_with(client, Retry(sleep=sleep))
    client.fail = [ExchangeUnavailableError("banned", retry_after=3_600)]
    with pytest.raises(ExchangeUnavailableError):  # a long ban is not waited out
        await collect_with(client, Retry(sleep=sleep, max_wait_s=900))


async def collect_with(client: FakeRest, retry: Retry) -> list[Page]:
    return [
        p async for p in trade_pages(client, "X/Y", T0, T0 + 10, Profile("window", 10, 10), retry)
    ]


# --------------------------------------------------------------------------- rows


def test_records_keep_the_live_rules_and_count_bad_rows() -> None:
    good = make_trades([T0, T0 + 1])
    bad: list[dict[str, Any]] = [
        {"id": "9", "timestamp": T0, "price": 0, "amount": 1, "side": "buy"},
        {"id": None, "timestamp": T0, "price": 1, "amount": 1, "side": "buy"},
        {"id": "8", "timestamp": None, "price": 1, "amount": 1, "side": "buy"},
    ]
    records, invalid = trade_records("binance", "X/Y", [*good, *bad, {**good[0], "side": "?"}], 5)
    assert invalid == 3
    assert [r.id for r in records] == ["1000", "1001", "1000"]
    assert records[-1].side is None and records[0].recv_ns == 5
    candles, invalid = candle_records(
        "binance", "X/Y", "1m", [[T0, 1, 2, 0.5, 1.5, 3], [T0, 1, 0.9, 0.5, 1.5, 3], [T0]], 5
    )
    assert invalid == 2
    [c] = candles
    assert (c.ts_ms, c.open_ms, c.closed, c.quote_volume) == (T0 + 59_999, T0, True, None)


# --------------------------------------------------------------------------- the runner


def plan(channels: tuple[Channel, ...] = (Channel.TRADES,), end: int = T0 + 3 * H) -> BackfillPlan:
    return BackfillPlan(("X/Y",), channels, ("1m",), T0, end)


def job(client: FakeRest, d: Path, **kw: Any) -> Backfill:
    """A backfill paging ``client`` its own way, ``cap`` trades a page."""
    kw.setdefault("clock_ns", lambda: NOW_NS)
    paging = Profile(client.mode, client.cap, client.cap, {"method": "m"})
    return Backfill(client, d, "binance", retry=Retry(sleep=_nosleep), paging=paging, **kw)


def spread(n: int, span: int = 3 * H, start: int = T0) -> list[int]:
    return [start + i * span // n for i in range(n)]


async def test_backfill_writes_each_trade_once_as_rest_rows_and_a_rerun_fetches_nothing(
    tmp_path: Path,
) -> None:
    client = FakeRest(make_trades(spread(95)), "window", cap=10)
    stats = await job(client, tmp_path, commit_rows=30).run(plan())
    table = History(tmp_path).read("binance", "X/Y", "trades", T0, T0 + 3 * H)
    assert table.column("id").to_pylist() == [t["id"] for t in client.trades]
    assert set(table.column("entry_ms").to_pylist()) == {0}
    assert table.column("entry_id").to_pylist() == [f"0-{t['id']}" for t in client.trades]
    assert table.column("recv_ns").to_pylist() == [NOW_NS] * 95
    for path in part_files(tmp_path):  # written in the archive's own file schema
        assert schema_problem(pq.read_schema(path), Channel.TRADES) is None
    t = stats.tasks["X/Y trades"]
    assert (t.written, t.known, t.fetched, t.done_ms, t.todo_ms) == (95, 0, 95, 3 * H, 3 * H)
    assert stats.commits >= 3  # every 30 rows
    cursor = orjson.loads(cursor_path(tmp_path, "binance").read_bytes())
    assert cursor["markets"]["X/Y"]["trades"]["done"] == [[T0, T0 + 3 * H]]
    calls = len(client.calls)
    again = await job(client, tmp_path).run(plan())
    assert len(client.calls) == calls and again.tasks["X/Y trades"].todo_ms == 0
    # a longer range: only the part past the cursor is fetched
    client.trades += make_trades([T0 + 3 * H + 5], first_id=5_000)
    more = await job(client, tmp_path).run(plan(end=T0 + 4 * H))
    assert (more.tasks["X/Y trades"].written, more.tasks["X/Y trades"].todo_ms) == (1, H)
    assert all(c[1] is None or c[1] >= T0 + 3 * H for c in client.calls[calls:])


async def test_trades_the_archive_holds_are_not_written_again(tmp_path: Path) -> None:
    trades = make_trades(spread(40))
    live = [
        (f"{T0 + 10_000 + i}-0", Trade(exchange="binance", symbol="X/Y", ts_ms=t["timestamp"],
         recv_ns=1, id=t["id"], price=t["price"], amount=t["amount"], side=t["side"]))
        for i, t in enumerate(trades[10:25])
    ]  # fmt: skip
    store = Store(tmp_path)
    store.open()
    commit_records(store, 1, live)
    store.close()
    stats = await job(FakeRest(trades, "window"), tmp_path).run(plan())
    t = stats.tasks["X/Y trades"]
    assert (t.written, t.known) == (25, 15)
    table = History(tmp_path).read("binance", "X/Y", "trades", T0, T0 + 3 * H)
    assert sorted(table.column("id").to_pylist()) == sorted(x["id"] for x in trades)
    live_rows = table.filter(table.column("entry_ms").to_numpy() > 0)
    assert sorted(live_rows.column("id").to_pylist()) == sorted(x["id"] for x in trades[10:25])


async def test_a_kill_between_commit_and_cursor_costs_a_refetch_not_a_duplicate(
    tmp_path: Path,
) -> None:
    client = FakeRest(make_trades(spread(50)), "window")
    await job(client, tmp_path).run(plan(end=T0 + H))
    cursor_path(tmp_path, "binance").unlink()  # the cursor never got written
    stats = await job(client, tmp_path).run(plan())
    t = stats.tasks["X/Y trades"]
    table = History(tmp_path).read("binance", "X/Y", "trades", T0, T0 + 3 * H)
    ids = table.column("id").to_pylist()
    assert ids == [x["id"] for x in client.trades] and len(set(ids)) == 50
    assert t.known == sum(1 for x in client.trades if x["timestamp"] < T0 + H) > 0


class Stall(FakeRest):
    """Blocks forever at the ``at``-th trades call (for a cancellation midway)."""

    def __init__(self, trades: list[dict[str, Any]], at: int) -> None:
        super().__init__(trades, "window", cap=10)
        self.at = at
        self.reached = asyncio.Event()

    async def fetch_trades(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        if len(self.calls) + 1 == self.at:
            self.reached.set()
            await asyncio.Event().wait()
        return await super().fetch_trades(*args, **kw)


async def test_cancelled_midway_then_rerun_no_duplicate_no_gap(tmp_path: Path) -> None:
    trades = make_trades(spread(120))
    stalled = Stall(trades, at=9)
    run = asyncio.create_task(job(stalled, tmp_path, commit_rows=25).run(plan()))
    await asyncio.wait_for(stalled.reached.wait(), 5)
    run.cancel()
    with pytest.raises(asyncio.CancelledError):
        await run
    first = History(tmp_path).read("binance", "X/Y", "trades", T0, T0 + 3 * H)
    assert 0 < first.num_rows < 120
    done = Cursors.load(tmp_path, "binance").done("X/Y", "trades")
    assert done and done[0][0] == T0 and done[0][1] < T0 + 3 * H
    client = FakeRest(trades, "window", cap=10)
    stats = await job(client, tmp_path).run(plan())
    assert stats.tasks["X/Y trades"].known == 0  # the rerun began at the cursor
    assert min(c[1] for c in client.calls if c[1] is not None) == done[0][1]
    ids = History(tmp_path).read("binance", "X/Y", "trades", T0, T0 + 3 * H).column("id")
    assert ids.to_pylist() == [t["id"] for t in trades]


async def test_ids_that_are_not_numbers_get_counter_seqs_unique_across_runs(
    tmp_path: Path,
) -> None:
    trades = make_trades(spread(30), numeric=False)
    client = FakeRest(trades, "since", cap=10)
    await job(client, tmp_path).run(plan(end=T0 + H))
    await job(client, tmp_path).run(plan())
    table = History(tmp_path).read("binance", "X/Y", "trades", T0, T0 + 3 * H)
    seqs = table.column("entry_seq").to_pylist()
    assert len(set(seqs)) == 30 and min(seqs) >= COUNTER_BASE
    assert table.column("id").to_pylist() == [t["id"] for t in trades]
    assert sorted(seqs) == seqs  # written in trade order
    assert (
        Cursors.load(tmp_path, "binance").markets["X/Y"]["trades"]["next_seq"] >= COUNTER_BASE + 30
    )


async def test_candles_are_closed_rest_rows_written_once(tmp_path: Path) -> None:
    client = FakeRest(make_trades([T0 + m * 60_000 + 1 for m in range(90)]), cap=25)
    stats = await job(client, tmp_path).run(plan((Channel.CANDLES,), end=T0 + H))
    table = History(tmp_path).read("binance", "X/Y", "candles", T0, T0 + 2 * H)
    assert table.num_rows == 60 == stats.tasks["X/Y candles:1m"].written
    assert table.column("open_ms").to_pylist() == [T0 + m * 60_000 for m in range(60)]
    assert table.column("ts_ms").to_pylist() == [T0 + m * 60_000 + 59_999 for m in range(60)]
    assert set(table.column("closed").to_pylist()) == {True}
    assert all(math.isnan(v) for v in table.column("quote_volume").to_pylist())
    assert len(set(table.column("entry_seq").to_pylist())) == 60
    [path] = part_files(tmp_path)
    assert pq.read_schema(path).names == file_schema(Channel.CANDLES).names
    assert schema_problem(pq.read_schema(path), Channel.CANDLES) is None
    cursor_path(tmp_path, "binance").unlink()
    again = await job(client, tmp_path).run(plan((Channel.CANDLES,), end=T0 + H))
    assert (again.tasks["X/Y candles:1m"].written, again.tasks["X/Y candles:1m"].known) == (0, 60)


async def test_a_range_reaching_now_stops_at_the_last_closed_candle_and_settled_trade(
    tmp_path: Path,
) -> None:
    now_ms = T0 + 10 * 60_000 + 30_000
    client = FakeRest(make_trades([T0 + m * 60_000 + 1 for m in range(11)]), cap=100)
    job_ = job(client, tmp_path, clock_ns=lambda: now_ms * 10**6)
    stats = await job_.run(plan((Channel.TRADES, Channel.CANDLES), end=T0 + H))
    assert stats.tasks["X/Y candles:1m"].written == 10  # the 11th is still open
    assert stats.tasks["X/Y trades"].written == 11
    done = Cursors.load(tmp_path, "binance")
    assert done.done("X/Y", "candles:1m") == [[T0, T0 + 10 * 60_000]]
    assert done.done("X/Y", "trades") == [[T0, now_ms - 5_000]]


def test_a_damaged_cursor_file_is_a_clear_error(tmp_path: Path) -> None:
    path = cursor_path(tmp_path, "binance")
    path.parent.mkdir(parents=True)
    path.write_text("{nope")
    with pytest.raises(FatalError, match="damaged"):
        Cursors.load(tmp_path, "binance")
    path.write_text('{"version": 99}')
    with pytest.raises(FatalError, match="version"):
        Cursors.load(tmp_path, "binance")


class Interleaved(FakeRest):
    """Another writer (an archiver) commits to the same directory before every page."""

    def __init__(self, trades: list[dict[str, Any]], other: Store) -> None:
        super().__init__(trades, "window", cap=10)
        self.other = other
        self.n = 0

    async def fetch_trades(self, *args: Any, **kw: Any) -> list[dict[str, Any]]:
        self.n += 1
        live = Trade(exchange="binance", symbol="A/B", ts_ms=T0 + self.n, recv_ns=1,
                     id=str(self.n), price=1.0, amount=1.0, side="buy")  # fmt: skip
        await asyncio.to_thread(commit_records, self.other, None, [(f"{T0 + self.n}-0", live)])
        return await super().fetch_trades(*args, **kw)


async def test_it_shares_the_directory_with_an_archiver_committing_meanwhile(
    tmp_path: Path,
) -> None:
    other = Store(tmp_path, writer="archiver-1")
    other.open()
    try:
        client = Interleaved(make_trades(spread(60)), other)
        stats = await job(client, tmp_path, commit_rows=10).run(plan())
    finally:
        other.close()
    history = History(tmp_path)
    mine = history.read("binance", "X/Y", "trades", T0, T0 + 3 * H).column("id").to_pylist()
    assert mine == [t["id"] for t in client.trades]
    theirs = history.read("binance", "A/B", "trades", T0, T0 + 3 * H)
    assert theirs.num_rows == client.n and stats.commits >= 3
    assert Store(tmp_path).refresh().commit == client.n + stats.commits  # none lost, none shared
