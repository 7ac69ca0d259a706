"""Archived rows become the entries the publisher wrote, byte for byte (archive/replay_wire.py)."""

from __future__ import annotations

import math
from pathlib import Path

import hiredis
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from archive.replay_wire import Encoder, column_values, trade_lines, trade_lines_match
from archive.store import Store
from marketbus import codec
from marketbus.models import MODELS, BookTop, Candle, Channel, Record, Ticker, Trade
from tests import derivatives_data as dd
from tests.archive_data import book, candle, commit_records, part_files
from tests.factories import ticker, trade


def samples() -> list[Record]:
    """Records of every channel, with every optional field both given and missing."""
    out: list[Record] = []
    for i in range(12):
        out += [trade(i), ticker(i), book(i, levels=i % 4), candle(i)]
        out += [dd.funding(i), dd.mark(i), dd.open_interest(i), dd.liquidation(i)]
    out += [
        Trade(exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_000_500, recv_ns=7,
              id="x-1", price=1e-8, amount=0.0, side=None),
        Ticker(exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_000_501, recv_ns=7,
               last=None, bid=1.5, base_volume=0.0),
        BookTop(exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_000_502, recv_ns=7,
                seq=0, bids=(), asks=((3.0, 0.0),)),
        Candle(exchange="binance", symbol="BTC/USDT", ts_ms=1_700_000_000_503, recv_ns=7,
               interval="1s", open_ms=1_700_000_000_000, open=2.0, high=2.0, low=2.0,
               close=2.0, volume=0.0, quote_volume=0.0, closed=True),
        dd.funding(99, predicted_rate=-0.0003, next_funding_ms=None, interval_ms=None),
        dd.mark(99, index_price=None),
        dd.open_interest(99, value=None),
    ]  # fmt: skip
    return out


def archived(root: Path, records: list[Record]) -> list[tuple[Channel, str, pa.Table]]:
    store = Store(root)
    store.open()
    entries = [(f"1700000000000-{n}", r) for n, r in enumerate(records)]
    commit_records(store, 1, entries)
    store.close()
    return [
        (Channel(f.parts[-4].partition("=")[2]), f.parts[-3].partition("=")[2], pq.read_table(f))
        for f in part_files(root)
    ]


def test_every_channel_comes_back_as_the_codec_encodes_it(tmp_path: Path) -> None:
    records = samples()
    by_seq = dict(enumerate(records))
    seen: set[Channel] = set()
    for channel, exchange, table in archived(tmp_path, records):
        datas, lines = Encoder(channel, exchange, "md.t", None).entries(table)
        expected = [codec.encode(by_seq[s]) for s in table.column("entry_seq").to_pylist()]
        assert datas == [e["d"] for e in expected]
        assert lines == [str(e["h"]).encode() for e in expected]
        seen.add(channel)
    assert seen == set(MODELS)  # a new channel needs a sample here


def test_commands_are_the_xadds_redis_py_would_send(tmp_path: Path) -> None:
    [(channel, exchange, table)] = archived(tmp_path, [trade(i) for i in range(3)])
    ms = np.array([5, 5, 9], dtype=np.int64)
    seq = np.array([0, 1, 0], dtype=np.int64)
    for maxlen in (None, 1000):
        enc = Encoder(channel, exchange, "md.bt1", maxlen)
        commands = enc.commands(table, ms, seq)
        datas, lines = enc.entries(table)
        trim = ("MAXLEN", "~", str(maxlen)) if maxlen else ()
        assert commands == [
            hiredis.pack_command(
                ("XADD", "md.bt1:{binance:BTC/USDT}:trades", *trim, i, "d", d, "h", h)
            )
            for i, d, h in zip(("5-0", "5-1", "9-0"), datas, lines, strict=True)
        ]


def test_missing_values_come_back_as_nil_only_where_a_record_may_lack_them() -> None:
    floats = pa.chunked_array([[1.5, math.nan], [2.5]])
    ints = pa.chunked_array([pa.array([-1, 4], pa.int64())])
    sides = pa.chunked_array(
        [pa.DictionaryArray.from_arrays(pa.array([0, None, 1], pa.int8()), ["buy", "sell"])]
    )
    assert column_values(floats, True) == [1.5, None, 2.5]
    assert column_values(ints, True) == [None, 4]
    assert column_values(ints, False) == [-1, 4]
    assert column_values(sides, True) == ["buy", None, "sell"]
    assert column_values(pa.chunked_array([["a", "b"]]), False) == ["a", "b"]


def test_the_fast_trade_lines_are_in_use() -> None:
    assert trade_lines_match()
    assert Encoder(Channel.TRADES, "binance", "md.t", None).fast


@given(
    st.lists(
        st.tuples(
            st.floats(min_value=1e-12, max_value=1e12),
            st.floats(min_value=0, max_value=1e12),
            st.sampled_from(["buy", "sell", None]),
            st.integers(min_value=0, max_value=2**62),
            st.text(min_size=1, max_size=20),
        ),
        min_size=1,
        max_size=20,
    )
)
def test_fast_trade_lines_equal_the_codecs(
    rows: list[tuple[float, float, str | None, int, str]],
) -> None:
    trades = [
        Trade(exchange="x", symbol="BTC/USDT", ts_ms=ts, recv_ns=0, id=tid, price=p, amount=a,
              side=side)
        for p, a, side, ts, tid in rows
    ]  # fmt: skip
    ours = trade_lines(
        [t.symbol for t in trades], [t.ts_ms for t in trades], [t.id for t in trades],
        [t.price for t in trades], [t.amount for t in trades], [t.side for t in trades],
    )  # fmt: skip
    assert ours == [codec.human(t).encode() for t in trades]


@pytest.mark.parametrize("channel", list(MODELS))
def test_an_encoder_exists_for_every_channel(channel: Channel) -> None:
    enc = Encoder(channel, "binance", "md.t", 10)
    assert enc.key("BTC/USDT") == f"md.t:{{binance:BTC/USDT}}:{channel.value}"
    assert enc.head("BTC/USDT").startswith(b"*10\r\n$4\r\nXADD\r\n")
