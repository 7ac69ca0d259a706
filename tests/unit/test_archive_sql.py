"""SQL over the archive (DuckDB views) and the ``sql`` command, on archives written on disk."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from typer.testing import CliRunner

from archive.sql import connect
from archive.store import Store
from consumers.archive_layout import META_KEY
from consumers.history import History
from marketbus.errors import ConfigError
from marketbus_cli.history_cmds import register
from tests.archive_data import book, candle, commit_records, part_files
from tests.factories import ticker, trade

WIRE_COLUMNS = {  # docs/wire.md, per channel
    "trades": ["id", "price", "amount", "side"],
    "ticker": ["last", "bid", "ask", "bid_size", "ask_size", "open", "high", "low", "close",
               "base_volume", "quote_volume"],
    "book": ["seq", "bids", "asks"],
    "candles": ["interval", "open_ms", "open", "high", "low", "close", "volume",
                "quote_volume", "closed"],
}  # fmt: skip


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    store = Store(tmp_path)
    store.open()
    entries = [
        (f"9-{i}", trade(i, symbol=("ETH/USDT" if i % 3 else "BTC/USDT"))) for i in range(30)
    ]
    entries += [(f"9-{30 + i}", ticker(i, exchange="okx")) for i in range(7)]
    entries += [(f"9-{40 + i}", book(i)) for i in range(4)]
    entries += [(f"9-{50 + i}", candle(i)) for i in range(3)]
    commit_records(store, 1, entries)
    store.close()
    return tmp_path


def test_one_view_per_channel_named_as_the_wire(archive: Path) -> None:
    con = connect(archive)
    for view, fields in WIRE_COLUMNS.items():
        names = [d[0] for d in con.execute(f"SELECT * FROM {view} LIMIT 0").description]
        assert names[:6] == ["exchange", "symbol", "entry_id", "ts_ms", "recv_ns", "entry_ms"]
        assert set(fields) <= set(names) and names[-1] == "date", view
    got = con.execute(
        "SELECT symbol, count(*), min(entry_id), max(price) FROM trades GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert got == [
        ("BTC/USDT", 10, "9-0", trade(27).price),
        ("ETH/USDT", 20, "9-1", trade(29).price),
    ]
    assert con.execute(
        "SELECT DISTINCT exchange, CAST(date AS VARCHAR) FROM ticker"
    ).fetchall() == [("okx", "2023-11-14")]
    assert (
        con.execute("SELECT bids[1].price, len(asks) FROM book ORDER BY ts_ms").fetchall()
        == [(100.0, 3)] * 4
    )


def test_counts_match_history(archive: Path) -> None:
    con = connect(archive)
    h = History(archive)
    for exchange, symbol, channel in [
        ("binance", "BTC/USDT", "trades"),
        ("binance", "ETH/USDT", "trades"),
        ("okx", "BTC/USDT", "ticker"),
        ("binance", "BTC/USDT", "book"),
        ("binance", "BTC/USDT", "candles"),
    ]:
        [(n,)] = con.execute(
            f"SELECT count(*) FROM {channel} WHERE exchange = ? AND symbol = ?", [exchange, symbol]
        ).fetchall()
        assert n == h.read(exchange, symbol, channel, 0, 2**62).num_rows > 0


def test_empty_archive_has_empty_views_and_other_channels_get_theirs(tmp_path: Path) -> None:
    con = connect(tmp_path)
    for view in WIRE_COLUMNS:
        assert con.execute(f"SELECT count(*) FROM {view}").fetchone() == (0,)
    with pytest.raises(ConfigError, match="no archive directory"):
        connect(tmp_path / "missing")
    # a channel this version does not know (written by a later one): a view of its columns
    where = tmp_path / "channel=greeks" / "exchange=binance" / "date=2023-11-14"
    where.mkdir(parents=True)
    table = pa.table({"symbol": ["BTC/USDT"], "delta": [0.25]})
    pq.write_table(
        table.replace_schema_metadata({META_KEY: b'{"version": 1}'}),
        where / "part-0000000001.parquet",
    )
    con = connect(tmp_path)
    assert con.execute("SELECT exchange, symbol, delta FROM greeks").fetchall() == [
        ("binance", "BTC/USDT", 0.25)
    ]


def test_a_corrupt_file_is_left_out_by_name(archive: Path) -> None:
    store = Store(archive)
    store.open()
    commit_records(store, 2, [(f"10-{i}", trade(100 + i)) for i in range(5)])
    store.close()
    bad = part_files(archive)[-1]
    assert bad.name == "part-0000000002.parquet"
    bad.write_bytes(bad.read_bytes()[:100])
    con = connect(archive)
    assert con.execute("SELECT count(*) FROM trades").fetchone() == (30,)


def _app() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_sql_command_prints_json_lines_or_a_table(archive: Path) -> None:
    runner = CliRunner()
    q = "SELECT symbol, count(*) AS n FROM trades GROUP BY symbol ORDER BY symbol"
    res = runner.invoke(_app(), ["sql", q, "--dir", str(archive), "--json"])
    assert res.exit_code == 0, res.output
    assert [json.loads(line) for line in res.stdout.splitlines()] == [
        {"symbol": "BTC/USDT", "n": 10},
        {"symbol": "ETH/USDT", "n": 20},
    ]
    res = runner.invoke(_app(), ["sql", q, "--dir", str(archive)])
    assert res.exit_code == 0, res.output
    assert "BTC/USDT" in res.stdout and "ETH/USDT" in res.stdout and "2 rows" in res.stdout
    res = runner.invoke(
        _app(), ["sql", "SELECT bids, date FROM book LIMIT 1", "--dir", str(archive), "--json"]
    )
    row = json.loads(res.stdout)
    assert row["bids"][0] == {"price": 100.0, "size": 1.0} and row["date"] == "2023-11-14"


def test_sql_command_errors_are_one_line(archive: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(_app(), ["sql", "SELEKT 1", "--dir", str(archive)])
    assert res.exit_code == 2 and "error:" in res.output and "Traceback" not in res.output
    res = runner.invoke(_app(), ["sql", "SELECT * FROM nope", "--dir", str(archive)])
    assert res.exit_code == 2 and "nope" in res.output
    res = runner.invoke(_app(), ["sql", "SELECT 1", "--dir", str(archive / "missing")])
    assert res.exit_code == 2 and "no archive directory" in res.output
