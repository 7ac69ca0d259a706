"""The archive directory on disk: commits, the manifest, recovery after a crash, several
writers (their locks, their marks, commit numbers), swaps and their deletions."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

import archive.store as store_module
from archive.store import STATE_DIR, Store, WriterBusyError, read_manifest
from consumers.archive_catalog import Catalog
from consumers.history import History
from marketbus.errors import FatalError
from marketbus.models import Channel
from tests.archive_data import commit_records, part_files
from tests.factories import ticker, trade


def _store(root: Path) -> Store:
    store = Store(root)
    store.open()
    return store


def test_a_commit_writes_sorted_zstd_files_and_then_the_manifest(tmp_path: Path) -> None:
    store = _store(tmp_path)
    entries = [
        (f"5-{i}", trade(9 - i, symbol=("ETH/USDT" if i % 2 else "BTC/USDT"))) for i in range(10)
    ]
    entries.append(("6-0", ticker(1)))
    done = commit_records(store, 1, entries)
    assert (done.files, done.rows) == (2, 11)
    files = part_files(tmp_path)
    assert [str(p.relative_to(tmp_path)) for p in files] == [
        "channel=ticker/exchange=binance/date=2023-11-14/part-0000000001.parquet",
        "channel=trades/exchange=binance/date=2023-11-14/part-0000000001.parquet",
    ]
    assert done.bytes == sum(p.stat().st_size for p in files)
    t = pq.read_table(files[1])
    keys = list(zip(t.column("symbol").to_pylist(), t.column("ts_ms").to_pylist(), strict=True))
    assert keys == sorted(keys)  # by symbol, then exchange time
    md = pq.ParquetFile(files[1]).metadata
    assert md.row_group(0).column(0).compression == "ZSTD"
    manifest = read_manifest(tmp_path)
    assert manifest is not None and manifest.commit == 1
    assert manifest.last == {
        "md:{binance:BTC/USDT}:trades": "5-8",
        "md:{binance:ETH/USDT}:trades": "5-9",
        "md:{binance:BTC/USDT}:ticker": "6-0",
    }
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    store.close()


def test_a_commit_the_manifest_does_not_hold_is_invisible_and_rolled_back(tmp_path: Path) -> None:
    """A kill after the files were renamed but before the manifest: readers never see them,
    the next open deletes them (their entries were not acknowledged: they come again)."""
    store = _store(tmp_path)
    commit_records(store, 1, [(f"1-{i}", trade(i)) for i in range(3)])
    commit_records(store, 2, [(f"2-{i}", trade(10 + i)) for i in range(3)])
    manifest_2 = (tmp_path / STATE_DIR / "manifest.json").read_bytes()
    commit_records(store, 3, [(f"3-{i}", trade(20 + i)) for i in range(3)])
    store.close()
    # as if killed between the renames of commit 3 and its manifest
    (tmp_path / STATE_DIR / "manifest.json").write_bytes(manifest_2)
    (tmp_path / STATE_DIR / "intent.json").write_bytes(
        orjson.dumps(
            {
                "commit": 3,
                "files": [
                    "channel=trades/exchange=binance/date=2023-11-14/part-0000000003.parquet"
                ],
            }
        )
    )
    tmp_left = part_files(tmp_path)[0].with_name(".part-0000000003.parquet.tmp")
    tmp_left.write_bytes(b"half a file")
    ids = History(tmp_path).read("binance", "BTC/USDT", "trades", 0, 2**62).column("id")
    assert ids.to_pylist() == [str(i) for i in (0, 1, 2, 10, 11, 12)]  # commit 3 unseen
    with capture_logs() as logs:
        store = _store(tmp_path)
    assert [p.name for p in part_files(tmp_path)] == [
        "part-0000000001.parquet",
        "part-0000000002.parquet",
    ]
    assert not tmp_left.exists() and not (tmp_path / STATE_DIR / "intent.json").exists()
    assert store.manifest.commit == 2
    assert store.manifest.last["md:{binance:BTC/USDT}:trades"] == "2-2"
    assert any(e["event"] == "archive_commit_rolled_back" for e in logs)
    commit_records(store, 3, [(f"3-{i}", trade(20 + i)) for i in range(3)])  # written again
    assert len(History(tmp_path).read("binance", "BTC/USDT", "trades", 0, 2**62)) == 9
    store.close()


def test_a_failed_commit_leaves_nothing_and_can_be_retried(tmp_path: Path) -> None:
    """An unwritable place (here: a file where the channel's directory belongs) fails the
    commit with OSError; nothing of it stays, the manifest is unchanged, a retry succeeds."""
    store = _store(tmp_path)
    commit_records(store, 1, [("1-0", ticker(0))])
    blocker = tmp_path / "channel=trades"
    blocker.write_bytes(b"")
    entries = [("2-0", ticker(1)), ("2-1", trade(1))]
    with pytest.raises(OSError):
        commit_records(store, 2, entries)
    assert store.manifest.commit == 1 and read_manifest(tmp_path).commit == 1  # type: ignore[union-attr]
    assert [p.name for p in part_files(tmp_path)] == ["part-0000000001.parquet"]
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    blocker.unlink()
    commit_records(store, 2, entries)
    assert len(part_files(tmp_path)) == 3
    store.close()


def test_one_archiver_per_consumer_name_several_names_share_the_directory(
    tmp_path: Path,
) -> None:
    a = Store(tmp_path, writer="host-a")
    a.open()
    with pytest.raises(WriterBusyError, match="another archiver named 'host-a'"):
        Store(tmp_path, writer="host-a", lock_wait_s=0.05).open()
    b = Store(tmp_path, writer="host-b")
    b.open()  # another name: both write here
    commit_records(a, None, [("1-0", trade(0))])
    commit_records(b, None, [("1-1", trade(1))])
    commit_records(a, None, [("1-2", trade(2))])
    m = read_manifest(tmp_path)
    assert m is not None and m.commit == 3
    key = "md:{binance:BTC/USDT}:trades"
    assert m.writers == {"host-a": {key: "1-2"}, "host-b": {key: "1-1"}}
    assert m.last == {key: "1-2"} and m.mark("host-b", key) == "1-1"
    assert len(part_files(tmp_path)) == 3
    a.close()
    Store(tmp_path, writer="host-a", lock_wait_s=0).open()  # free once closed (or dead)
    b.close()


def test_commit_numbers_are_allocated_under_the_lock(tmp_path: Path) -> None:
    """A writer's in-memory manifest goes stale while others commit: the number is taken
    from the manifest on disk (a number given is only the lowest acceptable)."""
    a, b = _store(tmp_path), _store(tmp_path)
    assert commit_records(a, 1, [("1-0", trade(0))]).commit == 1
    assert commit_records(b, 1, [("1-1", trade(1))]).commit == 2  # b thought 1 was next
    assert commit_records(a, None, [("1-2", ticker(2))]).commit == 3
    assert commit_records(a, 9, [("1-3", ticker(3))]).commit == 9  # gaps are allowed
    assert read_manifest(tmp_path).commit == 9  # type: ignore[union-attr]
    assert len(History(tmp_path).read("binance", "BTC/USDT", "trades", 0, 2**62)) == 2


def test_concurrent_writers_never_share_a_commit(tmp_path: Path) -> None:
    stores = [Store(tmp_path, writer=f"w{i}") for i in range(4)]
    for s in stores:
        s.open()

    def work(i: int) -> list[int]:
        return [
            commit_records(stores[i], None, [(f"{i}-{k}", trade(i * 100 + k))]).commit
            for k in range(10)
        ]

    with ThreadPoolExecutor(4) as pool:
        numbers = [n for ns in pool.map(work, range(4)) for n in ns]
    assert sorted(numbers) == list(range(1, 41))
    t = History(tmp_path).read("binance", "BTC/USDT", "trades", 0, 2**62)
    assert sorted(t.column("id").to_pylist(), key=int) == [
        str(i * 100 + k) for i in range(4) for k in range(10)
    ]
    m = read_manifest(tmp_path)
    assert m is not None
    assert {w: marks["md:{binance:BTC/USDT}:trades"] for w, marks in m.writers.items()} == {
        f"w{i}": f"{i}-9" for i in range(4)
    }
    for s in stores:
        s.close()


def test_a_dead_writers_intent_is_rolled_back_by_the_next_commit_of_any_writer(
    tmp_path: Path,
) -> None:
    """Another writer may be running when one dies inside a commit: the next commit (not
    only the next open) clears the dead commit, before taking its number."""
    a = Store(tmp_path, writer="a")
    a.open()
    commit_records(a, None, [("1-0", trade(0))])
    dead = tmp_path / "channel=ticker/exchange=binance/date=2023-11-14/part-0000000002.parquet"
    dead.parent.mkdir(parents=True)
    dead.write_bytes(b"written by a writer killed before its manifest")
    (tmp_path / STATE_DIR / "intent.json").write_bytes(
        orjson.dumps({"commit": 2, "files": [str(dead.relative_to(tmp_path))]})
    )
    with capture_logs() as logs:
        done = commit_records(a, None, [("2-0", trade(1))])
    assert done.commit == 2 and not dead.exists()
    assert [e["event"] for e in logs] == ["archive_commit_rolled_back"]
    assert len(History(tmp_path).read("binance", "BTC/USDT", "trades", 0, 2**62)) == 2
    a.close()


def test_a_commit_whose_manifest_landed_counts_although_a_later_step_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The manifest renamed, then the fsync of its directory fails: the commit is on disk
    (a retry would write its rows twice), so it is reported done, its files kept."""
    store = _store(tmp_path)
    real = store_module.write_json_atomic

    def flaky(path: Path, data: object) -> None:
        real(path, data)
        if path.name == "manifest.json":
            raise OSError(5, "fsync failed")

    monkeypatch.setattr(store_module, "write_json_atomic", flaky)
    with capture_logs() as logs:
        done = commit_records(store, None, [("1-0", trade(0))])
    assert done.commit == 1 and len(part_files(tmp_path)) == 1
    assert any(e["event"] == "archive_commit_not_fsynced" for e in logs)
    store.close()


def test_a_manifest_of_one_archiver_at_a_time_is_a_floor_for_every_name(tmp_path: Path) -> None:
    """Before several archivers shared a directory, the manifest had one mark per stream
    (everything at or below it archived): it still reads, as a floor under every name."""
    (tmp_path / STATE_DIR).mkdir()
    key = "md:{binance:BTC/USDT}:trades"
    (tmp_path / STATE_DIR / "manifest.json").write_bytes(
        orjson.dumps({"version": 1, "commit": 4, "streams": {key: "9-0"}})
    )
    store = Store(tmp_path, writer="new-host")
    m = store.open()
    assert (m.commit, m.floor, m.writers) == (4, {key: "9-0"}, {})
    assert m.mark("new-host", key) == m.mark("anyone", key) == "9-0"
    commit_records(store, None, [("10-0", trade(0))])
    m = read_manifest(tmp_path)
    assert m is not None and m.floor == {key: "9-0"} and m.mark("new-host", key) == "10-0"
    assert m.mark("other", key) == "9-0"
    store.close()


def test_a_swap_replaces_files_for_readers_in_one_step_and_collect_deletes_them(
    tmp_path: Path,
) -> None:
    store = _store(tmp_path)
    for i in range(3):
        commit_records(store, None, [(f"{i}-0", trade(i))])
    old = part_files(tmp_path)
    merged = old[0].with_name(".merged.tmp")
    merged.write_bytes(old[0].read_bytes())  # a stand-in for the merge of the three
    commit = store.swap([(merged, old[0].parent)], old)
    assert commit == 4
    catalog = Catalog(tmp_path)
    assert [p.name for p in catalog.files("trades")] == ["part-0000000004.parquet"]
    assert all(p.exists() for p in old)  # still there for a reader that listed them
    m = read_manifest(tmp_path)
    assert m is not None and sorted(m.gone) == [str(p.relative_to(tmp_path)) for p in old]
    assert store.swap([], old[:1]) is None  # gone already: another compaction won
    assert store.collect() == 3
    assert [p.name for p in part_files(tmp_path)] == ["part-0000000004.parquet"]
    assert read_manifest(tmp_path).gone == {}  # type: ignore[union-attr]
    store.close()


def test_without_a_manifest_the_last_ids_come_from_the_footers(tmp_path: Path) -> None:
    store = _store(tmp_path)
    commit_records(store, 1, [("1-0", trade(0)), ("1-1", ticker(0))])
    commit_records(store, 2, [("2-5", trade(1))])
    store.close()
    (tmp_path / STATE_DIR / "manifest.json").unlink()
    with capture_logs() as logs:
        store = _store(tmp_path)
    assert store.manifest.commit == 2
    assert store.manifest.last == {
        "md:{binance:BTC/USDT}:trades": "2-5",
        "md:{binance:BTC/USDT}:ticker": "1-1",
    }
    assert [e["event"] for e in logs] == ["archive_manifest_rebuilt"]
    store.close()


def test_a_damaged_manifest_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / STATE_DIR).mkdir()
    (tmp_path / STATE_DIR / "manifest.json").write_bytes(b'{"version": 1, "comm')
    with pytest.raises(FatalError, match=r"manifest\.json is damaged"):
        Store(tmp_path).open()


def test_readers_list_only_the_channels_and_committed_files(tmp_path: Path) -> None:
    store = _store(tmp_path)
    commit_records(store, 1, [("1-0", trade(0)), ("1-1", ticker(0))])
    store.close()
    catalog = Catalog(tmp_path)
    assert catalog.channels() == ["ticker", "trades"]
    assert len(catalog.files("trades")) == 1 and catalog.files(Channel.BOOK.value) == []
    ahead = part_files(tmp_path)[1].with_name("part-0000000007.parquet")
    os.link(part_files(tmp_path)[1], ahead)  # a commit beyond the manifest's
    assert catalog.files("trades", "binance") == [part_files(tmp_path)[1]]
