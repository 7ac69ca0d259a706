"""The archive directory on disk: commits, the manifest, recovery after a crash, the lock."""

from __future__ import annotations

import os
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

from archive.store import STATE_DIR, Store, read_manifest
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


def test_one_archiver_per_directory(tmp_path: Path) -> None:
    store = _store(tmp_path)
    with pytest.raises(FatalError, match="another archiver"):
        Store(tmp_path).open()
    store.close()
    _store(tmp_path).close()  # free again once closed (or its process died)


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


def test_commits_only_go_forward(tmp_path: Path) -> None:
    store = _store(tmp_path)
    commit_records(store, 1, [("1-0", trade(0))])
    with pytest.raises(ValueError, match="not after"):
        commit_records(store, 1, [("1-1", trade(1))])
    store.close()


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
