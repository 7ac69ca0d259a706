"""Compaction and retention: one sorted file per day, atomically for readers, beside writers,
resumable after a crash, bad files reported and left in place."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

import archive.compact as compact_module
from archive.compact import MaintenanceBusyError, compact, maintenance, prune
from archive.sql import connect
from archive.store import STATE_DIR, Store, read_manifest
from consumers.archive_catalog import Catalog, file_meta
from consumers.archive_layout import DAY_MS
from consumers.history import History
from marketbus.models import Record
from tests.archive_data import commit_records, part_files
from tests.factories import ticker, trade

DAY0 = 1_700_006_400_000 // DAY_MS * DAY_MS  # 2023-11-15 00:00 UTC
KEY = "md:{binance:BTC/USDT}:trades"


def at(r: Record, ts_ms: int) -> Record:
    return r.model_copy(update={"ts_ms": ts_ms})


def day_commits(store: Store, day: int, commits: int, per: int, seq0: int = 0) -> int:
    """``commits`` commits of ``per`` trades each (two symbols, shuffled times) on ``day``."""
    rng = random.Random(day * 1000 + seq0)
    n = seq0
    for _ in range(commits):
        entries = []
        for _ in range(per):
            sym = "ETH/USDT" if n % 3 == 0 else "BTC/USDT"
            ts = DAY0 + day * DAY_MS + rng.randrange(DAY_MS)
            entries.append((f"{1000 + n}-0", at(trade(n, symbol=sym), ts)))
            n += 1
        commit_records(store, None, entries)
    return n


def read_all(root: Path, symbol: str = "BTC/USDT") -> pa.Table:
    return History(root).read("binance", symbol, "trades", 0, 2**62)


def ids(table: pa.Table) -> list[str]:
    return sorted(table.column("entry_id").to_pylist())


def test_a_day_becomes_one_sorted_file_with_every_row(tmp_path: Path) -> None:
    store = Store(tmp_path, writer="a")
    store.open()
    n = day_commits(store, 0, 6, 50)
    n = day_commits(store, 1, 3, 50, n)
    commit_records(store, None, [("9000-0", at(ticker(1), DAY0 + 5))])  # one file: left alone
    before = {s: read_all(tmp_path, s) for s in ("BTC/USDT", "ETH/USDT")}
    report = compact(tmp_path, date="2023-11-15")
    assert (report.partitions, report.files_in, report.files_out) == (1, 6, 1)
    assert report.rows == 300 and report.deleted == 6 and report.skipped == {}
    files = [p for p in part_files(tmp_path) if "date=2023-11-15" in str(p)]
    trades = [p for p in files if "channel=trades" in str(p)]
    assert [p.name for p in trades] == ["part-0000000011.parquet"]
    t = pq.read_table(trades[0])
    keys = list(zip(t.column("symbol").to_pylist(), t.column("ts_ms").to_pylist(), strict=True))
    assert keys == sorted(keys) and t.num_rows == 300
    meta = file_meta(pq.read_schema(trades[0]))
    assert meta is not None and meta["compacted"] and len(meta["replaces"]) == 6
    eth = "md:{binance:ETH/USDT}:trades"  # the sources' marks, for a rebuild:
    assert meta["writers"] == {"a": {KEY: "1299-0", eth: "1297-0"}}
    for s, table in before.items():  # readers get the same rows, in the same order
        assert read_all(tmp_path, s).equals(table)
    con = connect(tmp_path)
    assert con.execute("SELECT count(*), count(DISTINCT entry_id) FROM trades").fetchone() == (
        n,
        n,
    )
    # the next day's files were not asked for; a second run has nothing to do
    assert len([p for p in part_files(tmp_path) if "2023-11-16" in str(p)]) == 3
    assert compact(tmp_path, date="2023-11-15").partitions == 0
    store.close()


def test_days_not_over_long_enough_are_left_alone(tmp_path: Path) -> None:
    store = _open(tmp_path)
    n = day_commits(store, 0, 2, 10)
    day_commits(store, 1, 2, 10, n)
    now = DAY0 + 2 * DAY_MS + 1_800_000  # 00:30 the day after day 1
    report = compact(tmp_path, older_than_s=3600, now_ms=now)
    assert report.partitions == 1  # day 0; day 1 ended half an hour ago
    report = compact(tmp_path, older_than_s=600, now_ms=now)
    assert report.partitions == 1
    assert len(part_files(tmp_path)) == 2


def test_files_a_later_commit_adds_to_the_day_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An archiver commits to the day while the merge runs: its file is not in the merge,
    and stays beside the merged one; nothing is lost or doubled."""
    store = _open(tmp_path)
    n = day_commits(store, 0, 4, 20)
    other = Store(tmp_path, writer="b")
    other.open()
    real = compact_module._merge

    def merge_then_commit(*args: object) -> int:
        rows = real(*args)  # type: ignore[arg-type]
        day_commits(other, 0, 1, 7, n)
        return rows

    monkeypatch.setattr(compact_module, "_merge", merge_then_commit)
    report = compact(tmp_path, date="2023-11-15")
    assert report.rows == 80 and report.deleted == 4
    assert [p.name for p in part_files(tmp_path)] == [
        "part-0000000005.parquet",  # b's commit
        "part-0000000006.parquet",  # the merge
    ]
    t = History(tmp_path).read("binance", "BTC/USDT", "trades", 0, 2**62)
    eth = History(tmp_path).read("binance", "ETH/USDT", "trades", 0, 2**62)
    assert t.num_rows + eth.num_rows == 87
    assert ids(t) == sorted(set(ids(t)))


def test_a_reader_never_sees_a_day_twice_nor_not_at_all(tmp_path: Path) -> None:
    """A reader lists and reads the day's files over and over while the day is compacted
    again and again (another writer adding to it each time): every read has each entry once,
    and never misses one it saw before."""
    store = _open(tmp_path)
    n = day_commits(store, 0, 5, 30)
    writer = Store(tmp_path, writer="late")
    writer.open()
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        seen: set[int] = set()
        catalog = Catalog(tmp_path)
        while not stop.is_set():
            files = catalog.files("trades")
            t = pa.concat_tables([pq.read_table(f, columns=["entry_ms"]) for f in files])
            got = t.column("entry_ms").to_pylist()
            if len(got) != len(set(got)):
                problems.append(f"a duplicate among {len(got)} rows")
            if not seen <= set(got):
                problems.append(f"{len(seen - set(got))} rows missing")
            seen = set(got)
            reads[0] += 1

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(12):
            n = day_commits(writer, 0, 2, 5, n)
            compact(tmp_path, date="2023-11-15", grace_s=0.2)
    finally:
        stop.set()
        thread.join(10)
    assert problems == [] and reads[0] > 12
    assert len(part_files(tmp_path)) == 1
    assert pq.read_table(part_files(tmp_path)[0]).num_rows == n


def test_a_stopped_run_is_finished_by_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _open(tmp_path)
    day_commits(store, 0, 3, 10)
    old = part_files(tmp_path)
    # killed after its commit, before deleting what it replaced
    monkeypatch.setattr(Store, "collect", lambda self: 0)
    compact(tmp_path, date="2023-11-15")
    monkeypatch.undo()
    assert all(p.exists() for p in old) and len(Catalog(tmp_path).files("trades")) == 1
    # killed in the middle of a merge: its hidden temporary file is left
    leftover = old[0].with_name(".compact-123-abcd.parquet.tmp")
    leftover.write_bytes(b"half a merge")
    with capture_logs() as logs:
        report = compact(tmp_path, date="2023-11-15")
    assert report.deleted == 3 and not leftover.exists()
    assert [p.name for p in part_files(tmp_path)] == ["part-0000000004.parquet"]
    assert read_manifest(tmp_path).gone == {}  # type: ignore[union-attr]
    assert any(e["event"] == "archive_compact_leftover_removed" for e in logs)


def test_a_kill_between_the_rename_and_the_manifest_is_rolled_back(tmp_path: Path) -> None:
    store = _open(tmp_path)
    day_commits(store, 0, 3, 10)
    sources = part_files(tmp_path)
    # as if killed after a merge got its name, before the manifest: its intent names it
    stale = sources[0].with_name("part-0000000004.parquet")
    stale.write_bytes(sources[0].read_bytes())
    (tmp_path / STATE_DIR / "intent.json").write_bytes(
        orjson.dumps({"commit": 4, "files": [str(stale.relative_to(tmp_path))]})
    )
    assert stale not in Catalog(tmp_path).files("trades")  # commit 4 is not in the manifest
    with capture_logs() as logs:
        report = compact(tmp_path, date="2023-11-15")
    assert any(e["event"] == "archive_commit_rolled_back" for e in logs)
    assert report.files_in == 3 and report.rows == 30
    assert [p.name for p in part_files(tmp_path)] == ["part-0000000004.parquet"]
    assert pq.read_table(part_files(tmp_path)[0]).num_rows == 30


def test_truncated_and_foreign_files_are_reported_and_left_in_place(tmp_path: Path) -> None:
    store = _open(tmp_path)
    day_commits(store, 0, 4, 10)
    good = part_files(tmp_path)
    truncated = good[0].with_name("part-0000000002.parquet")
    data = truncated.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    foreign = good[0].with_name("notes.parquet")
    pq.write_table(pa.table({"x": [1, 2]}), foreign)
    damaged = good[0].with_name("part-0000000003.parquet")
    raw = bytearray(damaged.read_bytes())
    raw[8:200] = bytes(192)  # pages zeroed, footer intact
    damaged.write_bytes(bytes(raw))
    with capture_logs() as logs:
        report = compact(tmp_path, date="2023-11-15")
    assert set(report.skipped) == {str(truncated), str(foreign), str(damaged)}
    assert "not a readable Parquet file" in report.skipped[str(truncated)]
    assert "no marketbus.archive footer" in report.skipped[str(foreign)]
    assert "data unreadable" in report.skipped[str(damaged)]
    assert truncated.exists() and foreign.exists() and damaged.exists()
    assert report.files_in == 2 and report.rows == 20  # the two good ones, merged
    assert not good[0].exists() and not good[3].exists()
    skipped = {e["path"] for e in logs if e["event"] == "archive_file_skipped"}
    assert skipped == set(report.skipped)


def test_one_maintenance_run_at_a_time(tmp_path: Path) -> None:
    with maintenance(tmp_path), pytest.raises(MaintenanceBusyError, match="another compaction"):
        compact(tmp_path)


def test_prune_drops_whole_old_days_in_one_commit(tmp_path: Path) -> None:
    store = _open(tmp_path)
    n = 0
    for day in range(5):
        n = day_commits(store, day, 2, 5, n)
    foreign = next(p for p in part_files(tmp_path) if "2023-11-15" in str(p)).parent / "x.parquet"
    pq.write_table(pa.table({"x": [1]}), foreign)
    now = DAY0 + 4 * DAY_MS + 1000  # 2023-11-19
    report = prune(tmp_path, keep_days=2, now_ms=now)  # keeps 11-17, 11-18, 11-19
    assert (report.partitions, report.files_in, report.deleted) == (2, 4, 4)
    assert report.skipped == {str(foreign): "not written by the marketbus archiver: kept"}
    dates = sorted({p.parent.name for p in part_files(tmp_path)})
    assert dates == ["date=2023-11-15", "date=2023-11-17", "date=2023-11-18", "date=2023-11-19"]
    assert not (foreign.parent.parent / "date=2023-11-16").exists()  # its directory too
    assert (
        History(tmp_path).read("binance", "BTC/USDT", "trades", 0, DAY0 + 2 * DAY_MS).num_rows == 0
    )
    assert len(read_all(tmp_path)) + len(read_all(tmp_path, "ETH/USDT")) == 30
    with pytest.raises(ValueError, match="at least 1"):
        prune(tmp_path, keep_days=0)


def _open(root: Path) -> Store:
    store = Store(root, writer="a")
    store.open()
    return store


def test_a_lost_manifest_is_rebuilt_with_what_a_compaction_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = _open(tmp_path)
    day_commits(store, 0, 3, 10)
    monkeypatch.setattr(Store, "collect", lambda self: 0)  # the replaced files still there
    compact(tmp_path, date="2023-11-15")
    monkeypatch.undo()
    store.close()
    before = read_manifest(tmp_path)
    (tmp_path / STATE_DIR / "manifest.json").unlink()
    rebuilt = Store(tmp_path).open()
    assert before is not None
    assert (rebuilt.commit, rebuilt.gone, rebuilt.writers) == (
        before.commit,
        before.gone,
        before.writers,
    )
    assert [p.name for p in Catalog(tmp_path).files("trades")] == ["part-0000000004.parquet"]


async def test_a_running_archiver_prunes_and_compacts_by_itself(tmp_path: Path) -> None:
    """``[archive] keep_days`` and ``compact``: at start (then hourly), in a thread."""
    import asyncio

    from archive.compact import maintain

    store = _open(tmp_path)
    n = day_commits(store, 0, 2, 5)  # 2023-11-15: long past any keep_days
    today = int(time.time() * 1000) // DAY_MS * DAY_MS
    for days_ago in (2, 2, 3, 3):  # two recent finished days, two files each
        ts = today - days_ago * DAY_MS + 5 + n
        commit_records(store, None, [(f"{5000 + n}-0", at(trade(n), ts))])
        n += 1
    task = asyncio.create_task(maintain(tmp_path, keep_days=4, compact_days=True, grace_s=0))

    async def done() -> bool:
        files = part_files(tmp_path)
        return len(files) == 2 and not any("2023-11-15" in str(p) for p in files)

    try:
        async with asyncio.timeout(30):
            while not await done():
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(read_all(tmp_path)) == 4
