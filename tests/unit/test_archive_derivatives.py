"""The archive keeps the derivatives channels like the others: decoded as a consumer decodes
them, committed, read back with History.read and seen in the SQL views (no Redis)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from archive.decode import decode
from archive.sql import connect
from archive.store import Store
from consumers.archive_layout import result_schema
from consumers.columns import NO_TIME
from consumers.history import History
from marketbus.keys import StreamKey
from marketbus.models import DERIVATIVES, Channel
from tests.archive_data import commit_records, raw
from tests.derivatives_data import PERP, funding, liquidation, mark, open_interest

RECORDS: dict[Channel, list[Any]] = {
    Channel.FUNDING: [funding(1), funding(2, predicted_rate=0.0002, next_funding_ms=None)],
    Channel.MARK: [mark(3), mark(4, index_price=None)],
    Channel.OPEN_INTEREST: [open_interest(5), open_interest(6, value=None)],
    Channel.LIQUIDATIONS: [liquidation(7), liquidation(8)],
}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    store = Store(tmp_path)
    store.open()
    entries = [(f"{1_700_000_000_100 + r.ts_ms % 100}-0", r) for rs in RECORDS.values() for r in rs]
    commit_records(store, 1, entries)
    store.close()
    return tmp_path


def test_each_channel_reads_back_with_history(archive: Path) -> None:
    h = History(archive)
    for channel, records in RECORDS.items():
        t = h.read("bybit", PERP, channel, 0, 2**62)
        assert t.schema == result_schema(channel), channel
        assert t.column("ts_ms").to_pylist() == [r.ts_ms for r in records]
        assert set(t.column("exchange").to_pylist()) == {"bybit"}
        assert set(t.column("symbol").to_pylist()) == {PERP}
    f = h.read("bybit", PERP, "funding", 0, 2**62).to_pylist()
    assert (f[0]["rate"], f[0]["next_funding_ms"], f[0]["interval_ms"]) == (
        0.0, 1_700_006_400_000, 28_800_000,
    )  # fmt: skip
    assert math.isnan(f[0]["predicted_rate"])
    assert (f[1]["predicted_rate"], f[1]["next_funding_ms"]) == (0.0002, NO_TIME)
    m = h.read("bybit", PERP, "mark", 0, 2**62).to_pylist()
    assert m[0]["mark_price"] == 103.0 and m[0]["index_price"] == 103.5
    assert math.isnan(m[1]["index_price"])
    liq = h.read("bybit", PERP, "liquidations", 0, 2**62).to_pylist()
    assert [(x["side"], x["price"], x["amount"]) for x in liq] == [
        (r.side, r.price, r.amount) for r in RECORDS[Channel.LIQUIDATIONS]
    ]


def test_each_channel_has_its_sql_view(archive: Path) -> None:
    con = connect(archive)
    for channel in DERIVATIVES:
        rows = con.execute(
            f"SELECT exchange, symbol, entry_id, ts_ms FROM {channel.value} ORDER BY ts_ms"
        ).fetchall()
        want = [("bybit", PERP, f"{1_700_000_000_100 + r.ts_ms % 100}-0", r.ts_ms)
                for r in RECORDS[channel]]  # fmt: skip
        assert rows == want, channel
    oi = con.execute("SELECT contracts, value FROM open_interest ORDER BY ts_ms").fetchall()
    assert oi[0] == (1005.0, 100_500.0) and oi[1][0] == 1006.0 and math.isnan(oi[1][1])
    assert con.execute("SELECT side, amount FROM liquidations ORDER BY ts_ms").fetchall() == [
        ("sell", 2.0),
        ("buy", 2.25),
    ]


def test_a_bad_entry_is_left_out_and_reported() -> None:
    sk = StreamKey("bybit", PERP, Channel.MARK)
    entries = [raw("5-0", mark(1)), raw("6-0", funding(2)), raw("7-0", mark(3))]
    out = decode(sk, entries)
    assert out.rows == 2 and [i for i, _ in out.invalid] == [b"6-0"]
