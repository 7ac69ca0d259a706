"""Reading an archive back for replay: order, slices, ids, bad files (archive/replay_source.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from archive.replay_source import ArchiveSource, Selection
from archive.store import Store
from consumers.archive_layout import file_schema
from marketbus.models import Channel, Record
from tests.archive_data import book, commit_records, part_files
from tests.factories import ticker, trade

T0 = 1_700_000_000_000
ALL = Selection(0, 2**62)

Row = tuple[int, str, str, str, str]  # ts_ms, entry id, exchange, symbol, channel


def make_archive(root: Path, commits: list[list[tuple[str, Record]]]) -> None:
    store = Store(root)
    store.open()
    for n, entries in enumerate(commits, start=1):
        commit_records(store, n, entries)
    store.close()


def drain(source: ArchiveSource) -> list[Row]:
    """Every row in replay order, with the id it is replayed under."""
    out: list[Row] = []
    while (piece := source.next_slice()) is not None:
        cursors = [0] * len(piece.parts)
        for p in piece.which.tolist():
            part = piece.parts[p]
            i = cursors[p]
            cursors[p] += 1
            row = part.table.slice(i, 1).to_pylist()[0]
            entry = f"{part.ms[i]}-{part.seq[i]}"
            out.append((row["ts_ms"], entry, part.exchange, row["symbol"], part.channel.value))
    return out


def markets_archive(root: Path) -> list[tuple[str, Record]]:
    """Three markets on two exchanges, two channels, many equal exchange times and ids, over
    three commits (files)."""
    entries: list[tuple[str, Record]] = []
    for i in range(60):
        t = i // 3  # three records share each exchange time
        entries.append((f"{T0 + 10 + t}-{i % 3}", trade(t, symbol="BTC/USDT")))
        entries.append((f"{T0 + 10 + t}-{i % 3}", trade(t, symbol="ETH/USDT", exchange="okx")))
        entries.append((f"{T0 + 11 + t}-{i % 3}", ticker(t, symbol="ETH/USDT")))
        entries.append((f"{T0 + 12 + t}-{i % 3}", trade(t, symbol="ETH/USDT")))
    # ids of one stream must rise: number them per stream in order
    counts: dict[tuple[str, str, Channel], int] = {}
    numbered = []
    for _, r in entries:
        k = (r.exchange, r.symbol, r.channel)
        counts[k] = counts.get(k, 0) + 1
        numbered.append((f"{T0 + 5 + counts[k] // 2}-{counts[k] % 2}", r))
    make_archive(root, [numbered[:80], numbered[80:170], numbered[170:]])
    return numbered


def expected(entries: list[tuple[str, Record]], keep: Any = lambda r: True) -> list[Row]:
    rows = [(r.ts_ms, eid, r.exchange, r.symbol, r.channel.value) for eid, r in entries if keep(r)]

    def key(row: Row) -> tuple[Any, ...]:
        ms, seq = map(int, row[1].split("-"))
        return (row[0], ms, seq, row[2], row[3], row[4])

    return sorted(rows, key=key)


def test_rows_come_in_exchange_time_then_id_then_market_order(tmp_path: Path) -> None:
    entries = markets_archive(tmp_path)
    source = ArchiveSource(tmp_path, ALL)
    assert drain(source) == expected(entries)
    assert source.stats.renumbered == 0
    assert source.stats.duplicates == 0


def test_small_slices_give_the_same_rows_in_the_same_order(tmp_path: Path) -> None:
    entries = markets_archive(tmp_path)
    whole = drain(ArchiveSource(tmp_path, ALL))
    small = ArchiveSource(tmp_path, ALL, slice_rows=10)
    assert drain(small) == whole == expected(entries)
    assert small.stats.slices > 10
    assert small.stats.max_slice_rows <= 20  # about slice_rows: never a whole day at once


def test_a_row_group_spanning_many_slices_is_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A compacted day: one file sorted by symbol, each row group one symbol's whole span."""
    entries = [(f"{T0 + i}-0", trade(i, symbol=s)) for s in ("A/USDT", "B/USDT") for i in range(40)]
    store = Store(tmp_path, row_group_rows=10)
    store.open()
    commit_records(store, 1, entries)
    store.close()
    reads: list[int] = []
    read_row_group = pq.ParquetFile.read_row_group

    def counted(self: pq.ParquetFile, i: int, *args: Any, **kwargs: Any) -> Any:
        reads.append(i)
        return read_row_group(self, i, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    source = ArchiveSource(tmp_path, ALL, slice_rows=3)
    assert drain(source) == expected(entries)
    assert source.stats.slices >= 20
    assert sorted(reads) == list(range(8))


def test_range_markets_and_channels_select_rows(tmp_path: Path) -> None:
    entries = markets_archive(tmp_path)
    sel = Selection(
        T0 + 3, T0 + 15, (Channel.TRADES,), frozenset({("okx", "ETH/USDT"), ("binance", "X/Y")})
    )
    got = drain(ArchiveSource(tmp_path, sel, slice_rows=4))
    want = expected(
        entries,
        lambda r: (
            r.exchange == "okx" and r.channel is Channel.TRADES and T0 + 3 <= r.ts_ms < T0 + 15
        ),
    )
    assert got == want
    assert len(got) == 36


def test_ids_that_fall_back_are_moved_up_in_their_stream_only(tmp_path: Path) -> None:
    # arrival order 0, 2, 1 for exchange times 0, 1, 2: the third by time needs a new id
    make_archive(
        tmp_path,
        [[(f"{T0}-0", trade(0)), (f"{T0}-1", trade(2)), (f"{T0}-2", trade(1)),
          (f"{T0}-0", trade(1, symbol="ETH/USDT"))]],
    )  # fmt: skip
    source = ArchiveSource(tmp_path, ALL)
    rows = drain(source)
    assert [(r[0] - T0, r[1], r[3]) for r in rows] == [
        (0, f"{T0}-0", "BTC/USDT"),
        (1, f"{T0}-0", "ETH/USDT"),
        (1, f"{T0}-2", "BTC/USDT"),
        (2, f"{T0}-3", "BTC/USDT"),  # was T0-1: not above T0-2, given to it before
    ]
    assert source.stats.renumbered == 1


def test_renumbering_goes_on_across_slices(tmp_path: Path) -> None:
    make_archive(
        tmp_path,
        [[(f"{T0 + 9}-0", trade(0)), (f"{T0 + 1}-0", trade(5)), (f"{T0 + 9}-1", trade(9))]],
    )
    source = ArchiveSource(tmp_path, ALL, slice_rows=1)
    assert [r[1] for r in drain(source)] == [f"{T0 + 9}-0", f"{T0 + 9}-1", f"{T0 + 9}-2"]
    assert source.stats.renumbered == 2
    assert source.stats.max_slice_rows == 1  # one row a slice: the ids went on across them


def test_an_entry_in_two_files_is_replayed_once(tmp_path: Path) -> None:
    make_archive(
        tmp_path, [[(f"{T0}-0", trade(0)), (f"{T0}-1", trade(1))], [(f"{T0}-1", trade(1))]]
    )
    source = ArchiveSource(tmp_path, ALL)
    assert [r[1] for r in drain(source)] == [f"{T0}-0", f"{T0}-1"]
    assert source.stats.duplicates == 1


def test_foreign_truncated_and_damaged_files_are_skipped_by_name(tmp_path: Path) -> None:
    entries = [(f"{T0 + i}-0", trade(i)) for i in range(200)]
    make_archive(tmp_path, [entries[:100], entries[100:]])
    [first, second] = part_files(tmp_path)
    partition = first.parent
    (partition / "garbage.parquet").write_bytes(b"PAR1 this is not parquet")
    pq.write_table(file_schema(Channel.TRADES).empty_table(), partition / "foreign.parquet")
    truncated = partition / "cut.parquet"
    truncated.write_bytes(second.read_bytes()[: second.stat().st_size // 2])
    # a file whose footer reads but whose data does not: its pages overwritten
    data = bytearray(second.read_bytes())
    data[8:400] = bytes(392)
    second.write_bytes(bytes(data))
    source = ArchiveSource(tmp_path, ALL)
    rows = drain(source)
    assert [r[1] for r in rows] == [eid for eid, _ in entries[:100]]
    skipped = source.skipped
    assert set(skipped) == {
        str(partition / n) for n in ("garbage.parquet", "foreign.parquet", "cut.parquet")
    } | {str(second)}
    assert "data unreadable" in skipped[str(second)]


def test_an_empty_range_has_no_slice(tmp_path: Path) -> None:
    make_archive(tmp_path, [[(f"{T0}-0", trade(0)), (f"{T0}-1", book(1))]])
    source = ArchiveSource(tmp_path, Selection(T0 + 5, T0 + 10))
    assert source.index() == 0
    assert source.next_slice() is None
    empty = ArchiveSource(tmp_path / "nowhere", ALL)
    assert empty.index() == 0
    assert empty.next_slice() is None


def test_rows_are_found_across_dates(tmp_path: Path) -> None:
    day = 86_400_000
    entries = [(f"{T0 + k * day}-0", trade(k * day)) for k in range(3)]
    make_archive(tmp_path, [entries])
    assert len({f.parent for f in part_files(tmp_path)}) == 3
    rows = drain(ArchiveSource(tmp_path, Selection(T0, T0 + 2 * day + 1), slice_rows=1))
    assert [r[1] for r in rows] == [eid for eid, _ in entries]
