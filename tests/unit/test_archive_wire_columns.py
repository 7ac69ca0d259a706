"""The archiver's column-wise decoding from bytes (archive.wire_columns) against the codec.

Property tests: for valid records it gives the values ``codec.unpack`` + ``row_at`` give
(what the ring buffer holds); for damaged payloads it gives None (the generic path then
finds the bad entry) or, where the damage still left valid records, exactly their values.
It never accepts a payload ``codec.unpack`` refuses.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from archive.decode import column_array, decode
from archive.wire_columns import TICKER_POSITIVE, columns, entry_numbers
from consumers.columns import COLUMNS, row_at
from consumers.streams import id_numbers
from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.keys import StreamKey
from marketbus.models import Channel, Record, Ticker, Trade
from tests.archive_data import raw

PROPS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
INT64_MAX = 2**63 - 1
EXCHANGE, SYMBOL = "binance", "BTC/USDT"

prices = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)
sizes = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
times = st.integers(min_value=0, max_value=INT64_MAX)
trades = st.builds(
    Trade, exchange=st.just(EXCHANGE), symbol=st.just(SYMBOL), ts_ms=times, recv_ns=times,
    id=st.text(min_size=1, max_size=300), price=prices, amount=sizes,
    side=st.sampled_from(["buy", "sell", None]),
)  # fmt: skip
tickers = st.builds(
    Ticker, exchange=st.just(EXCHANGE), symbol=st.just(SYMBOL), ts_ms=times, recv_ns=times,
    **{f: st.none() | prices for f in ("last", "bid", "ask", "open", "high", "low", "close")},
    **{f: st.none() | sizes for f in ("bid_size", "ask_size", "base_volume", "quote_volume")},
)  # fmt: skip


def _py(values: Any) -> list[Any]:
    """Values as Python, NaN spelled out (NaN != NaN)."""
    out = values.to_pylist() if isinstance(values, pa.Array) else list(values)
    return ["NaN" if isinstance(v, float) and math.isnan(v) else v for v in out]


def _expected(channel: Channel, datas: list[bytes]) -> dict[str, list[Any]] | None:
    """What the generic path makes of each payload: the ring buffer's row values, or None
    if any payload is refused (codec.unpack) or belongs to another market."""
    rows = []
    for d in datas:
        try:
            ch, values = codec.unpack(d)
        except DecodeError:
            return None
        if ch is not channel or values[2] != EXCHANGE or values[3] != SYMBOL:
            return None
        rows.append(row_at(channel, values, 0))
    cols = list(zip(*rows, strict=True))
    return {
        c.name: _py(column_array(c, list(v)))
        for c, v in zip(COLUMNS[channel], cols, strict=True)
        if c.name != "entry_ms"
    }


def _got(channel: Channel, datas: list[bytes]) -> dict[str, list[Any]] | None:
    out = columns(channel, datas, EXCHANGE, SYMBOL)
    if out is None:
        return None
    return {
        c.name: _py(column_array(c, out[c.name])) for c in COLUMNS[channel] if c.name != "entry_ms"
    }


@PROPS
@given(st.lists(trades, min_size=1, max_size=20) | st.lists(tickers, min_size=1, max_size=20))
def test_valid_records_give_what_the_codec_gives(records: list[Record]) -> None:
    channel = records[0].channel
    datas = [codec.pack(r) for r in records]
    got = _got(channel, datas)
    assert got is not None  # our own packer's layout is always read here
    assert got == _expected(channel, datas)


def _damage(data: bytes, how: int, at: int, byte: int, extra: bytes) -> bytes:
    i = at % (len(data) + 1)
    if how == 0:  # one byte changed
        return data[:i] + bytes([byte]) + data[i + 1 :]
    if how == 1:  # truncated
        return data[:i]
    if how == 2:  # bytes after the record
        return data + extra
    if how == 3:  # bytes inserted
        return data[:i] + extra + data[i:]
    try:  # one value fewer
        return bytes(msgpack.packb(msgpack.unpackb(data, raw=False)[:-1]))
    except Exception:  # damaged before: as it is
        return data


@PROPS
@given(
    st.lists(trades, min_size=1, max_size=6) | st.lists(tickers, min_size=1, max_size=6),
    st.data(),
)
def test_damaged_payloads_are_refused_or_read_exactly(records: list[Record], data: Any) -> None:
    channel = records[0].channel
    datas = [codec.pack(r) for r in records]
    for _ in range(data.draw(st.integers(1, 3))):
        k = data.draw(st.integers(0, len(datas) - 1))
        datas[k] = _damage(
            datas[k],
            data.draw(st.integers(0, 4)),
            data.draw(st.integers(0, 400)),
            data.draw(st.integers(0, 255)),
            data.draw(st.binary(min_size=1, max_size=12)),
        )
    got = _got(channel, datas)
    if got is not None:  # then every payload is a valid record of the market, read exactly
        assert got == _expected(channel, datas)


scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5)
    | st.sampled_from(["T", "K", "buy", "sell", EXCHANGE, SYMBOL, 1, 0.0, -0.0, math.nan])
)


@PROPS
@given(st.lists(st.lists(scalars, min_size=6, max_size=18), min_size=1, max_size=5))
def test_foreign_arrays_are_refused_or_read_exactly(arrays: list[list[Any]]) -> None:
    """Arrays of any values behind a real head: the fast path agrees with the codec."""
    for channel, kind in ((Channel.TRADES, "T"), (Channel.TICKER, "K")):
        datas = [msgpack.packb([1, kind, EXCHANGE, SYMBOL, *a[4:]]) for a in arrays]
        got = _got(channel, datas)
        if got is not None:
            assert got == _expected(channel, datas)


def test_ints_floats32_and_other_encodings_go_the_generic_way() -> None:
    """Valid for the codec, but not the layout our packer writes: None here, and decode()
    still archives them (through codec.unpack_columns)."""
    head = [1, "T", EXCHANGE, SYMBOL, 1_700_000_000_000, 1_700_000_000_000_000_000, "7"]
    as_int = msgpack.packb([*head, 100, 2, "buy"])  # int price and amount
    as_f32 = msgpack.Packer(use_single_float=True).pack([*head, 100.5, 2.0, "buy"])
    for data in (as_int, as_f32):
        assert columns(Channel.TRADES, [data], EXCHANGE, SYMBOL) is None
        entry = [b"1700000000000-0", [b"d", data, b"h", b"-"]]
        out = decode(StreamKey(EXCHANGE, SYMBOL, Channel.TRADES), [entry])
        assert out.rows == 1 and not out.invalid
    # another market's record in this stream: refused here, reported invalid by decode()
    other = codec.pack(Trade(exchange="okx", symbol=SYMBOL, ts_ms=1, recv_ns=1, id="1",
                             price=1.0, amount=1.0, side="buy"))  # fmt: skip
    assert columns(Channel.TRADES, [other], EXCHANGE, SYMBOL) is None
    good = raw("1700000000000-1", _trade(1))
    entries = [good, [b"1700000000000-2", [b"d", other, b"h", b"-"]]]
    out = decode(StreamKey(EXCHANGE, SYMBOL, Channel.TRADES), entries)
    assert out.rows == 1 and [i for i, _ in out.invalid] == [b"1700000000000-2"]


def _trade(i: int) -> Trade:
    return Trade(exchange=EXCHANGE, symbol=SYMBOL, ts_ms=i, recv_ns=i, id=str(i), price=1.0,
                 amount=1.0, side="buy")  # fmt: skip


def test_the_ticker_positive_fields_are_the_codecs() -> None:
    """A ticker's bid of 0 is refused, its volume of 0 kept, as codec.unpack does."""
    for name, positive in zip(codec.TICKER_FIELDS, TICKER_POSITIVE, strict=True):
        t = Ticker(exchange=EXCHANGE, symbol=SYMBOL, ts_ms=1, recv_ns=1, last=1.0)
        data = msgpack.packb([*msgpack.unpackb(codec.pack(t))[:6],
                              *(0.0 if f == name else None for f in codec.TICKER_FIELDS)])  # fmt: skip
        refused = _expected(Channel.TICKER, [data]) is None
        assert refused is positive
        assert (_got(Channel.TICKER, [data]) is None) is refused


@PROPS
@given(st.lists(st.tuples(st.integers(0, 10**18 - 1), st.integers(0, 10**18 - 1)), min_size=1))
def test_entry_ids_are_read_as_id_numbers_reads_them(pairs: list[tuple[int, int]]) -> None:
    ids = [b"%d-%d" % p for p in pairs]
    got = entry_numbers(ids)
    assert got is not None
    assert got[0].tolist() == [p[0] for p in pairs] and got[1].tolist() == [p[1] for p in pairs]


@PROPS
@given(st.lists(st.binary(max_size=40) | st.sampled_from([b"1-1", b"12-3", b"-1", b"1-"])))
def test_odd_entry_ids_are_refused_or_read_exactly(ids: list[bytes]) -> None:
    assume(ids)
    got = entry_numbers(ids)
    if got is not None:
        want = id_numbers(tuple(ids))
        assert want is not None
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1])


def test_a_payload_cut_anywhere_is_refused_without_an_error() -> None:
    """Every prefix of a trade and a ticker, last in its batch (reads past its end land in
    the padding): refused, never an IndexError."""
    t = Ticker(exchange=EXCHANGE, symbol=SYMBOL, ts_ms=1, recv_ns=2, last=1.0, bid_size=None)
    for record in (_trade(7), t):
        whole = codec.pack(record)
        good = codec.pack(record)
        assert columns(record.channel, [whole], EXCHANGE, SYMBOL) is not None
        for cut in range(len(whole)):
            assert columns(record.channel, [good, whole[:cut]], EXCHANGE, SYMBOL) is None, cut


def test_a_long_market_name_is_compared_in_pieces() -> None:
    """An exchange and symbol longer than one 32-byte window: read, and a one-byte change
    in the symbol's far end refused."""
    ex, sym = "binanceusdm", "1000ABCDEFGHIJKLMNOPQRSTUVWXYZ/USDT:USDT"
    records = [Trade(exchange=ex, symbol=sym, ts_ms=i, recv_ns=i, id=str(i), price=1.0 + i,
                     amount=2.0, side="sell") for i in range(3)]  # fmt: skip
    datas = [codec.pack(r) for r in records]
    out = columns(Channel.TRADES, datas, ex, sym)
    assert out is not None and out["price"].tolist() == [1.0, 2.0, 3.0]
    assert columns(Channel.TRADES, datas, ex, sym[:-1] + "X") is None
