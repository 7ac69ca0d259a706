"""History.read and History.candles over archives written on disk (no Redis)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from structlog.testing import capture_logs

from archive.compact import compact
from archive.store import STATE_DIR, Store
from consumers.archive_layout import DAY_MS, META_KEY, result_schema
from consumers.candles import CANDLE_SCHEMA, CandleBuilder
from consumers.history import History
from marketbus.errors import ConfigError, SchemaVersionError
from marketbus.models import Channel, Trade
from tests.archive_data import book, commit_records, part_files
from tests.factories import ticker, trade

T0 = 1_700_000_000_000


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path)
    s.open()
    return s


def test_read_returns_one_markets_range_ordered_with_entry_ids(store: Store) -> None:
    entries = [(f"9-{i}", trade(i, symbol="BTC/USDT")) for i in range(0, 100, 2)]
    entries += [(f"9-{i}", trade(i, symbol="ETH/USDT")) for i in range(1, 100, 2)]
    commit_records(store, 1, entries)
    h = History(store.root)
    t = h.read("binance", "btc-usdt", "trades", T0 + 10, T0 + 20)  # any spelling of the symbol
    assert t.schema == result_schema(Channel.TRADES)
    assert t.column("id").to_pylist() == ["10", "12", "14", "16", "18"]  # start <= ts < end
    assert t.column("entry_id").to_pylist() == ["9-10", "9-12", "9-14", "9-16", "9-18"]
    assert set(t.column("exchange").to_pylist()) == {"binance"}
    assert h.read("binance", "BTC/USDT", "trades", T0, T0).num_rows == 0
    assert h.read("okx", "BTC/USDT", "trades", 0, 2**62).num_rows == 0


def test_a_range_with_no_data_is_an_empty_table_with_the_schema(tmp_path: Path) -> None:
    h = History(tmp_path)  # not even a directory written yet
    for ch in Channel:
        t = h.read("binance", "BTC/USDT", ch, 0, 2**62)
        assert t.num_rows == 0 and t.schema == result_schema(ch)
    assert h.candles("binance", "BTC/USDT", "1m", 0, 2**62).schema == CANDLE_SCHEMA
    with pytest.raises(ConfigError, match="unknown channel"):
        h.read("binance", "BTC/USDT", "tardes", 0, 1)


def test_an_entry_found_twice_comes_back_once(store: Store) -> None:
    """Two files holding one entry (files copied in by hand, no manifest to order them)."""
    commit_records(store, 1, [(f"9-{i}", trade(i)) for i in range(5)])
    commit_records(store, 2, [(f"9-{i}", trade(i)) for i in range(3, 8)])
    store.close()
    t = History(store.root).read("binance", "BTC/USDT", "trades", 0, 2**62)
    assert t.column("entry_id").to_pylist() == [f"9-{i}" for i in range(8)]


def test_a_read_lists_only_its_days(store: Store) -> None:
    """Partition pruning: a damaged file of another day is never opened (nor reported)."""
    days = [(f"9-{d}", trade(0).model_copy(update={"ts_ms": T0 + d * DAY_MS})) for d in range(3)]
    commit_records(store, 1, days)
    files = part_files(store.root)
    assert len(files) == 3
    files[2].write_bytes(b"PAR1 not really")
    h = History(store.root)
    t = h.read("binance", "BTC/USDT", "trades", T0, T0 + DAY_MS)
    assert t.column("entry_id").to_pylist() == ["9-0"] and h.skipped == {}
    assert h.read("binance", "BTC/USDT", "trades", T0, T0 + 3 * DAY_MS).num_rows == 2
    assert list(h.skipped) == [str(files[2])]


def test_truncated_and_foreign_files_are_reported_by_name_and_skipped(store: Store) -> None:
    commit_records(store, 1, [(f"9-{i}", trade(i)) for i in range(4)])
    commit_records(store, 2, [(f"9-{i}", trade(i)) for i in range(4, 8)])
    good, cut = part_files(store.root)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    foreign = good.with_name("from-elsewhere.parquet")
    pq.write_table(pa.table({"a": [1, 2]}), foreign)
    impostor = good.with_name("impostor.parquet")  # the right columns, not ours
    pq.write_table(pq.read_table(good).replace_schema_metadata(None), impostor)
    h = History(store.root)
    with capture_logs() as logs:
        t = h.read("binance", "BTC/USDT", "trades", 0, 2**62)
        h.read("binance", "BTC/USDT", "trades", 0, 2**62)  # reported once per file
    assert t.column("id").to_pylist() == ["0", "1", "2", "3"]
    assert set(h.skipped) == {str(cut), str(foreign), str(impostor)}
    assert "not a readable Parquet file" in h.skipped[str(cut)]
    assert "not written by the marketbus archiver" in h.skipped[str(impostor)]
    assert sorted(e["path"] for e in logs if e["event"] == "archive_file_skipped") == sorted(
        h.skipped
    )


def test_a_file_with_damaged_data_pages_is_skipped_by_name(store: Store) -> None:
    commit_records(store, 1, [(f"9-{i}", trade(i)) for i in range(200)])
    commit_records(store, 2, [(f"9-{i}", trade(i)) for i in range(200, 210)])
    first = part_files(store.root)[0]
    data = bytearray(first.read_bytes())
    for i in range(8, len(data) // 3):  # the footer stays, the first pages are garbage
        data[i] = 0xFF
    first.write_bytes(bytes(data))
    h = History(store.root)
    t = h.read("binance", "BTC/USDT", "trades", 0, 2**62)
    assert t.column("id").to_pylist() == [str(i) for i in range(200, 210)]
    assert list(h.skipped) == [str(first)]


def test_a_newer_layout_is_a_clear_error(store: Store) -> None:
    commit_records(store, 1, [("9-0", trade(0))])
    [path] = part_files(store.root)
    table = pq.read_table(path)
    pq.write_table(table.replace_schema_metadata({META_KEY: b'{"version": 2}'}), path)
    with pytest.raises(SchemaVersionError, match="version 2"):
        History(store.root).read("binance", "BTC/USDT", "trades", 0, 2**62)


def test_books_come_back_with_every_level(store: Store) -> None:
    records = [book(i, levels=i % 4) for i in range(6)]
    commit_records(store, 1, [(f"9-{i}", r) for i, r in enumerate(records)])
    t = History(store.root).read("binance", "BTC/USDT", "book", 0, 2**62)
    assert [[(x["price"], x["size"]) for x in bids] for bids in t.column("bids").to_pylist()] == [
        list(r.bids) for r in records
    ]
    assert t.column("seq").to_pylist() == [r.seq if r.seq is not None else -1 for r in records]


def test_tickers_of_several_exchanges_stay_apart(store: Store) -> None:
    commit_records(
        store,
        1,
        [
            ("9-0", ticker(0)),
            ("9-1", ticker(1, exchange="okx")),
            ("9-2", ticker(2, exchange="okx")),
        ],
    )
    h = History(store.root)
    assert h.read("okx", "BTC/USDT", "ticker", 0, 2**62).column("last").to_pylist() == [101, 102]
    assert h.read("binance", "BTC/USDT", "ticker", 0, 2**62).num_rows == 1


def _trade(ts: int, price: float, amount: float, i: int) -> Trade:
    return trade(i).model_copy(update={"ts_ms": ts, "price": price, "amount": amount})


def test_candles_follow_the_consumers_rules(store: Store) -> None:
    """Same candles as the consumer's builder fed the same trades in arrival order: a late
    trade (its minute closed by a newer one) is left out, quiet minutes are not invented."""
    m = 60_000
    base = T0 - T0 % m
    feed = [
        (base + 1_000, 10.0, 1.0),
        (base + 30_000, 12.0, 2.0),
        (base + 59_999, 9.0, 1.0),
        (base + m + 5, 11.0, 3.0),  # closes minute 0
        (base + 40_000, 50.0, 9.0),  # late: minute 0 is closed, left out as live
        (base + m + 9, 10.5, 1.0),
        (base + 3 * m + 1, 20.0, 1.0),  # minute 2 had no trade: no candle for it
        (base + 3 * m + 2, 19.0, 4.0),
    ]
    entries = [(f"{5 + i}-0", _trade(ts, p, a, i)) for i, (ts, p, a) in enumerate(feed)]
    commit_records(store, 1, entries)
    live = CandleBuilder(["1m"])
    live.add_trades(feed)
    expected = live.table("1m", include_open=True)
    got = History(store.root).candles("binance", "BTC/USDT", "1m", base, base + 4 * m)
    assert got.equals(expected)
    assert got.column("start_ms").to_pylist() == [base, base + m, base + 3 * m]
    assert got.column("trades").to_pylist() == [3, 2, 2]
    # a range starting inside a minute still gets that whole minute; its end is exclusive
    part = History(store.root).candles("binance", "BTC/USDT", "1m", base + 30_000, base + m)
    assert part.equals(expected.slice(0, 1))


def test_history_survives_its_directory_being_copied(store: Store, tmp_path: Path) -> None:
    commit_records(store, 1, [(f"9-{i}", trade(i)) for i in range(3)])
    store.close()
    copy = tmp_path / "copy"
    shutil.copytree(store.root, copy, ignore=shutil.ignore_patterns(STATE_DIR))
    assert History(copy).read("binance", "BTC/USDT", "trades", 0, 2**62).num_rows == 3


def test_candles_put_backfilled_trades_in_time_between_the_live_ones(store: Store) -> None:
    """Rows from REST (entry id ``0-n``: backfill) have no arrival order of their own: they
    take their exchange time, so a filled gap does not make the live trades around it late."""
    m = 60_000
    base = T0 - T0 % m
    live = [(base + 1_000, 10.0, 1.0), (base + m + 2, 11.0, 1.0), (base + 4 * m + 3, 14.0, 1.0)]
    rest = [(base + 2 * m + 5, 12.0, 2.0), (base + 3 * m + 7, 13.0, 2.0)]
    entries = [(f"{ts + 20}-0", _trade(ts, p, a, i)) for i, (ts, p, a) in enumerate(live)]
    entries += [(f"0-{100 + i}", _trade(ts, p, a, 100 + i)) for i, (ts, p, a) in enumerate(rest)]
    commit_records(store, 1, entries)
    got = History(store.root).candles("binance", "BTC/USDT", "1m", base, base + 5 * m)
    assert got.column("start_ms").to_pylist() == [base + i * m for i in range(5)]
    assert got.column("close").to_pylist() == [10.0, 11.0, 12.0, 13.0, 14.0]


def test_a_read_whose_listed_files_were_compacted_away_lists_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The day's files listed, then compacted and deleted (grace over) before they are read:
    the read lists the partition again and reads the compacted file: the same rows, each
    entry once, none missing."""
    store = Store(tmp_path, writer="a")
    store.open()
    for c in range(3):  # three commits: three files of one day, two symbols
        entries = [(f"{1000 + 10 * c + i}-0", trade(10 * c + i, symbol=sym))
                   for i, sym in enumerate(["BTC/USDT", "ETH/USDT"] * 5)]  # fmt: skip
        commit_records(store, None, entries)
    store.close()
    h = History(tmp_path)
    before = h.read("binance", "BTC/USDT", "trades", 0, 2**62)
    by_id = h.read_ids("binance", "BTC/USDT", "trades", "0-0")
    assert before.num_rows == 15 and len(part_files(tmp_path)) == 3
    listed, real = [], h.catalog.files

    def files_then_compact(*args: object, **kwargs: object) -> list[Path]:
        out = real(*args, **kwargs)  # type: ignore[arg-type]
        listed.append(out)
        if len(listed) in (1, 3):  # the first read's and the second read's first listing
            compact(tmp_path, date="2023-11-14", grace_s=0, zstd_level=1)
            assert not any(f.exists() for f in out)  # gone before the read opens them
            day_commit(len(listed))
        return out

    def day_commit(k: int) -> None:  # a later commit, so the next compaction has work
        s = Store(tmp_path, writer="b")
        s.open()
        commit_records(s, None, [(f"{2000 + k}-0", trade(100 + k))])
        s.close()

    monkeypatch.setattr(h.catalog, "files", files_then_compact)
    after = h.read("binance", "BTC/USDT", "trades", 0, 2**62)
    assert len(listed) == 2 and len(listed[1]) == 2  # listed again: the compacted file + 1
    assert after.column("entry_id").to_pylist() == [
        *before.column("entry_id").to_pylist(),
        "2001-0",
    ]
    assert after.slice(0, 15).equals(before)
    again = h.read_ids("binance", "BTC/USDT", "trades", "0-0")
    assert len(listed) == 4
    assert again.column("entry_id").to_pylist() == [
        *by_id.column("entry_id").to_pylist(),
        "2001-0",
        "2003-0",
    ]
    assert h.skipped == {}  # nothing reported as damaged: the files were replaced, not bad
