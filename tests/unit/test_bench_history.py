"""The ``history`` benchmark group's arithmetic and its synthetic day (no Redis, small sizes)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench import fig_history as fh
from bench import history_bytes as hb
from bench.common import Figure
from bench.history_day import build, columns, table
from bench.history_math import (
    DAY_MS,
    HOUR_MS,
    DaySpec,
    entry_ids,
    per_record,
    picks,
    rank_within,
    rate,
    roll_bounds,
)
from consumers.archive_layout import date_of, file_schema
from consumers.history import History
from marketbus.models import Channel


def test_per_record_and_rate() -> None:
    assert per_record(1_000, 100) == pytest.approx(10.0)
    assert math.isnan(per_record(1_000, 0))
    assert rate(300_000, 1.5) == pytest.approx(200_000)
    assert math.isnan(rate(10, 0.0))
    assert math.isnan(rate(0, 1.0))


def test_roll_bounds_cover_every_row_once_in_order() -> None:
    assert roll_bounds(10, 3) == [(0, 4), (4, 7), (7, 10)]
    assert roll_bounds(2, 5) == [(0, 1), (1, 2)]  # no empty roll
    bounds = roll_bounds(1_000_003, 24)
    assert bounds[0][0] == 0 and bounds[-1][1] == 1_000_003
    assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
    assert {hi - lo for lo, hi in bounds} <= {41_666, 41_667}
    with pytest.raises(ValueError):
        roll_bounds(0, 3)


def test_entry_ids_rise_strictly_even_when_exchange_time_goes_back() -> None:
    ts = np.array([10, 10, 10, 12, 11, 11, 20], dtype=np.int64)
    ms, seq = entry_ids(ts, delay_ms=3)
    assert ms.tolist() == [13, 13, 13, 15, 15, 15, 23]
    assert seq.tolist() == [0, 1, 2, 0, 1, 2, 0]
    pairs = list(zip(ms.tolist(), seq.tolist(), strict=True))
    assert pairs == sorted(set(pairs))
    empty_ms, empty_seq = entry_ids(np.zeros(0, dtype=np.int64))
    assert len(empty_ms) == len(empty_seq) == 0


def test_rank_within_counts_earlier_members_of_each_group() -> None:
    groups = np.array([2, 0, 2, 1, 0, 2], dtype=np.int64)
    assert rank_within(groups).tolist() == [0, 0, 1, 0, 1, 2]


def test_day_spec_key_names_every_parameter_and_hours_tile_the_day() -> None:
    a, b = DaySpec(rows=1_000), DaySpec(rows=1_000, seed=12)
    assert a.key != b.key and a.key != DaySpec(rows=2_000).key
    assert a.key != DaySpec(rows=1_000, rolls=1).key
    assert a.hour(0) == (a.start_ms, a.start_ms + HOUR_MS)
    assert a.hour(23)[1] == a.start_ms + DAY_MS
    with pytest.raises(ValueError):
        a.hour(24)
    cells = picks(a, 5)
    assert len(set(cells)) == 5 and all(0 <= h < 24 for _, h in cells)
    assert picks(a, 5) == cells  # the same reads every run


def test_day_rows_are_valid_trades_of_the_archive_schema() -> None:
    spec = DaySpec(rows=5_000, symbols=7)
    cols = columns(spec)
    t = table(spec, cols, 0, spec.rows)
    assert t.schema == file_schema(Channel.TRADES)
    assert t.num_rows == 5_000
    ts = t.column("ts_ms").to_numpy()
    assert ts.min() >= spec.start_ms and ts.max() < spec.start_ms + DAY_MS
    assert (t.column("price").to_numpy() > 0).all() and (t.column("amount").to_numpy() > 0).all()
    ids = np.array(t.column("id").to_pylist(), dtype=np.int64)
    for i in range(spec.symbols):  # consecutive ids per market, in arrival order
        mine = ids[cols["sym"] == i]
        assert mine.tolist() == list(range(int(mine[0]), int(mine[0]) + len(mine)))
    ms, seq = t.column("entry_ms").to_numpy(), t.column("entry_seq").to_numpy()
    assert (np.diff(ms) >= 0).all() and ((np.diff(ms) > 0) | (np.diff(seq) > 0)).all()


def test_day_is_built_as_commits_then_reused_from_the_cache(tmp_path: Path) -> None:
    spec = DaySpec(rows=6_000, symbols=5, rolls=4)
    day = build(spec, tmp_path)
    assert day.info["cached"] is False and day.info["files"] == 4
    assert day.date == date_of(spec.start_ms)
    lo, hi = spec.hour(3)
    want = History(day.rolled).read("binance", spec.symbol(2), "trades", lo, hi)
    assert want.num_rows > 0
    if day.compacted is not None:  # archive.compact exists: one file, the same rows
        assert day.info["compacted_files"] == 1 and day.info["compacted_rows"] == spec.rows
        got = History(day.compacted).read("binance", spec.symbol(2), "trades", lo, hi)
        assert got.column("entry_id").to_pylist() == want.column("entry_id").to_pylist()
    again = build(spec, tmp_path)
    assert again.info["cached"] is True and again.info["build_s"] == day.info["build_s"]


def test_a_half_built_day_is_built_again(tmp_path: Path) -> None:
    spec = DaySpec(rows=2_000, symbols=3, rolls=2)
    (tmp_path / spec.key / "rolls").mkdir(parents=True)  # no built.json: a build that died
    day = build(spec, tmp_path)
    assert day.info["cached"] is False and day.info["files"] == 2


def test_sizes_count_records_files_and_data_pages(tmp_path: Path) -> None:
    spec = DaySpec(rows=3_000, symbols=4, rolls=3)
    day = build(spec, tmp_path)
    sizes = hb.archive_sizes(day.rolled)
    [(key, s)] = sizes.items()
    assert key == ("trades", "binance")
    assert (s.records, s.files) == (3_000, 3)
    assert 0 < s.data_bytes < s.disk_bytes
    files = hb.part_files(day.rolled)
    assert s.disk_bytes == sum(f.stat().st_size for f in files)
    assert hb.total([s, s]).records == 6_000
    rows = hb.archive_rows(day.rolled, Channel.TRADES)
    assert rows.num_rows == 3_000 and set(rows.column("exchange").to_pylist()) == {"binance"}
    assert hb.archive_rows(day.rolled, Channel.TICKER).num_rows == 0


def test_data_bytes_sum_the_column_chunks(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"a": list(range(1000)), "b": ["x"] * 1000}), path, row_group_size=300)
    meta = pq.ParquetFile(path).metadata
    chunks = [meta.row_group(i).column(j).total_compressed_size for i in range(4) for j in range(2)]
    assert meta.num_row_groups == 4 and hb.data_bytes(meta) == sum(chunks)


def test_csv_gz_holds_the_record_columns_and_shrinks_repeats() -> None:
    assert hb.record_columns(Channel.TRADES) == [
        "exchange", "symbol", "ts_ms", "recv_ns", "price", "amount", "side", "id",
    ]  # fmt: skip
    side = pa.DictionaryArray.from_arrays(pa.array([0, 1] * 500, pa.int8()), ["buy", "sell"])
    t = pa.table({"a": pa.array([1] * 1000), "side": side})
    small = hb.csv_gz_bytes(t, ["a", "side"])
    assert 0 < small < len("a,side\n") + 1000 * len("1,buy\n")
    assert hb.csv_gz_bytes(t.slice(0, 0), ["a"]) == 0


def test_synthetic_frames_are_binance_json() -> None:
    tickers = hb.synthetic_tickers(50, 3)
    assert len(tickers) == 50 and all(t.bid is not None and t.ask is not None for t in tickers)
    assert all(t.bid <= t.ask for t in tickers if t.bid and t.ask)
    one = hb.ticker_frames_bytes(tickers[:1])
    assert 300 < one < 700  # a 24hrTicker frame in its combined-stream wrapper
    assert hb.ticker_frames_bytes(tickers) > 40 * one


def test_column_bytes_take_one_columns_pages_per_exchange(tmp_path: Path) -> None:
    spec = DaySpec(rows=3_000, symbols=4, rolls=2)
    day = build(spec, tmp_path)
    ids = hb.column_bytes(day.rolled, Channel.TRADES, "id")
    assert set(ids) == {"binance"}
    [(_, sizes)] = hb.archive_sizes(day.rolled).items()
    assert 0 < ids["binance"] < sizes.data_bytes
    assert hb.column_bytes(day.rolled, Channel.TICKER, "id") == {}


def test_bytes_figure_checks_the_trade_target_on_whole_files() -> None:
    sizes = hb.Sizes(records=100, files=1, disk_bytes=1_900, data_bytes=1_500)
    f = fh.bytes_figure("synthetic", "trade", sizes, json=20_000, csv_gz=3_000, id_bytes=200)
    assert f.runs == [19.0] and f.reference_runs == [30.0] and f.met is True
    assert f.ratio == pytest.approx(19 / 30) and f.better == "lower"
    assert "200 B" in (f.reference or "")
    big = hb.Sizes(records=100, files=3, disk_bytes=2_100, data_bytes=1_500)
    assert fh.bytes_figure("recordings", "trade", big, 1, 1).met is False
    assert fh.bytes_figure("synthetic", "ticker", big, 1, 1).met is None  # no ticker target


def test_bytes_table_has_a_row_per_data_set_and_exchange() -> None:
    sizes = hb.Sizes(records=10, files=1, disk_bytes=300, data_bytes=200)
    synthetic = fh.bytes_figure("synthetic", "trade", sizes, json=2_000, csv_gz=150, id_bytes=20)
    recorded = fh.bytes_figure("recordings", "ticker", sizes, json=4_000, csv_gz=100)
    recorded.notes["exchanges"] = [
        fh.size_entry("okx", hb.Sizes(4, 1, 200, 100), 1_000, 40, None),
        fh.size_entry("bybit", hb.Sizes(6, 1, 100, 100), 3_000, 60, None),
    ]
    crashed = Figure(name="H2 recordings: crashed", unit="-", runs=[], failed="boom")
    figs = fh._with_bytes_table([synthetic, recorded, crashed])
    table = figs[0].notes["table"]
    assert table["columns"] == fh.BYTES_COLUMNS
    assert table["rows"] == [
        ["synthetic, all", "trade", "10", "30.0", "20.0", "2.0", "200.0", "15.0"],
        ["recordings, okx", "ticker", "4", "50.0", "25.0", "-", "250.0", "10.0"],
        ["recordings, bybit", "ticker", "6", "16.7", "16.7", "-", "500.0", "10.0"],
    ]
    assert "table" not in recorded.notes
