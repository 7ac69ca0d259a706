"""Property tests: nothing a stream or an exchange sends makes the codec or normalize misbehave."""

from __future__ import annotations

import math
from typing import Any

import msgpack
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketbus import codec
from marketbus.errors import DecodeError
from marketbus.models import Channel, Ticker, Trade
from publisher.normalize import NormalizeError, ticker_from_ccxt, trade_from_ccxt

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
FUZZ_SLOW = settings(FUZZ, max_examples=150)  # recursive strategies cost more per example

INT64_MAX = 2**63 - 1
RECV_NS = 1_700_000_000_000_000_000

# -- strategies -----------------------------------------------------------------------------

names = st.text(min_size=1, max_size=64)
prices = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)
sizes = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
times = st.integers(min_value=0, max_value=INT64_MAX)

trades = st.builds(
    Trade,
    exchange=names,
    symbol=st.text(min_size=1, max_size=128),
    ts_ms=times,
    recv_ns=times,
    id=st.text(min_size=1, max_size=128),
    price=prices,
    amount=sizes,
    side=st.sampled_from(["buy", "sell", None]),
)
tickers = st.builds(
    Ticker,
    exchange=names,
    symbol=st.text(min_size=1, max_size=128),
    ts_ms=times,
    recv_ns=times,
    **{f: st.none() | prices for f in ("last", "bid", "ask", "open", "high", "low", "close")},
    **{f: st.none() | sizes for f in ("bid_size", "ask_size", "base_volume", "quote_volume")},
)

# any msgpack scalar, the nasty floats and bools included
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
    | st.sampled_from(["T", "K", "buy", "sell", "binance", "BTC/USDT", 0, 1, 2, 1.0, -0.0])
)
msgpack_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


bad_values = (
    st.sampled_from(
        [
            math.nan,
            math.inf,
            -math.inf,
            -1.0,
            -1,
            0.0,
            0,
            -0.0,
            True,
            False,
            None,
            "",
            "1.0",
            b"1",
            2**64 - 1,
        ]
    )
    | scalars
)


@st.composite
def record_like_arrays(draw: st.DrawFn) -> list[Any]:
    """A valid record's array with a few values replaced by bad ones, or its arity changed."""
    arr: list[Any] = msgpack.unpackb(codec.pack(draw(trades | tickers)), raw=False)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        i = draw(st.integers(min_value=0, max_value=len(arr) - 1))
        arr[i] = draw(bad_values)
    how = draw(st.sampled_from(["keep", "keep", "keep", "drop", "append"]))
    if how == "drop":
        arr.pop(draw(st.integers(min_value=0, max_value=len(arr) - 1)))
    elif how == "append":
        arr.append(draw(bad_values))
    return arr


def _assert_sound(record: Trade | Ticker) -> None:
    """What decode returns obeys the model's rules that the codec promises to check."""
    assert isinstance(record.exchange, str) and record.exchange
    assert isinstance(record.symbol, str) and record.symbol
    for t in (record.ts_ms, record.recv_ns):
        assert type(t) is int and t >= 0
    if isinstance(record, Trade):
        assert record.channel is Channel.TRADES
        assert isinstance(record.id, str) and record.id
        assert type(record.price) is float and math.isfinite(record.price) and record.price > 0
        assert type(record.amount) is float and math.isfinite(record.amount) and record.amount >= 0
        assert record.side in ("buy", "sell", None)
    else:
        assert record.channel is Channel.TICKER
        for f in codec.TICKER_FIELDS:
            v = getattr(record, f)
            if v is None:
                continue
            assert type(v) is float and math.isfinite(v)
            assert v >= 0 if ("size" in f or "volume" in f) else v > 0


def _decode_or_decode_error(data: bytes) -> Trade | Ticker | None:
    try:
        record = codec.decode(data)
    except DecodeError:
        return None
    _assert_sound(record)
    return record


# -- codec ----------------------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_only_ever_raise_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)


@FUZZ
@given(trades | tickers, st.data())
def test_corrupted_valid_payload_only_ever_raises_decode_error(
    record: Trade | Ticker, data: st.DataObject
) -> None:
    packed = bytearray(codec.pack(record))
    i = data.draw(st.integers(min_value=0, max_value=len(packed) - 1))
    how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if how == "flip":
        packed[i] ^= data.draw(st.integers(min_value=1, max_value=255))
    elif how == "cut":
        del packed[i:]
    else:
        packed.insert(i, data.draw(st.integers(min_value=0, max_value=255)))
    _decode_or_decode_error(bytes(packed))


@FUZZ
@given(msgpack_values)
def test_any_msgpack_value_only_ever_raises_decode_error(value: Any) -> None:
    _decode_or_decode_error(msgpack.packb(value, use_bin_type=True))


@FUZZ_SLOW
@given(record_like_arrays())
def test_record_like_arrays_only_ever_raise_decode_error(arr: list[Any]) -> None:
    _decode_or_decode_error(msgpack.packb(arr, use_bin_type=True))


@FUZZ_SLOW
@given(st.dictionaries(st.binary(max_size=3) | st.text(max_size=3), msgpack_values, max_size=4))
def test_any_field_mapping_only_ever_raises_decode_error(fields: dict[Any, Any]) -> None:
    try:
        record = codec.decode_fields(fields)
    except DecodeError:
        return
    _assert_sound(record)


@FUZZ
@given(trades | tickers)
def test_valid_records_round_trip_exactly(record: Trade | Ticker) -> None:
    fields = codec.encode(record)
    decoded = codec.decode_fields({k.encode(): v for k, v in fields.items()})
    assert type(decoded) is type(record)
    assert decoded.model_dump() == record.model_dump()
    for f in type(record).model_fields:
        a, b = getattr(decoded, f), getattr(record, f)
        assert type(a) is type(b), f
        if isinstance(a, float):
            assert a.hex() == b.hex(), f  # bit for bit, -0.0 and subnormals included
    assert record.symbol in fields[codec.HUMAN_FIELD]


# -- normalize ------------------------------------------------------------------------------

nasty = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["0.35280000", "nan", "inf", "-1", "", "1e400", "buy", "sell", "BTC/USDT"])
    | st.text(max_size=10)
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2), st.integers(), max_size=2)
)


def _ccxt_dict(keys: tuple[str, ...], good: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    """Dicts where each key is missing, good, or nasty."""
    return st.fixed_dictionaries(
        {}, optional={k: (st.just(good[k]) | nasty) if k in good else nasty for k in keys}
    )


TRADE_KEYS = ("symbol", "id", "timestamp", "price", "amount", "side", "info", "datetime")
GOOD_TRADE = {
    "symbol": "BTC/USDT",
    "id": "1",
    "timestamp": 1_700_000_000_000,
    "price": 35_000.5,
    "amount": 0.1,
    "side": "buy",
}
TICKER_KEYS = (
    "symbol", "timestamp", "info", "last", "bid", "ask", "bidVolume", "askVolume", "open",
    "high", "low", "close", "baseVolume", "quoteVolume",
)  # fmt: skip
GOOD_TICKER = {"symbol": "BTC/USDT", "timestamp": 1_700_000_000_000, "bid": 1.5, "ask": 1.6}
infos = st.fixed_dictionaries({}, optional={"E": nasty | times})


@FUZZ
@given(_ccxt_dict(TRADE_KEYS, GOOD_TRADE))
def test_trade_from_ccxt_gives_a_valid_trade_or_normalize_error(t: dict[str, Any]) -> None:
    try:
        trade = trade_from_ccxt("binance", t, RECV_NS)
    except NormalizeError:
        return
    assert Trade.model_validate(trade.model_dump()) == trade
    assert math.isfinite(trade.price) and trade.price > 0
    assert trade.id and trade.symbol


@FUZZ
@given(_ccxt_dict(TICKER_KEYS, GOOD_TICKER), infos)
def test_ticker_from_ccxt_gives_a_valid_ticker_or_normalize_error(
    t: dict[str, Any], info: dict[str, Any]
) -> None:
    if info:
        t = {**t, "info": info}
    try:
        ticker = ticker_from_ccxt("binance", t, RECV_NS)
    except NormalizeError:
        return
    assert Ticker.model_validate(ticker.model_dump()) == ticker
    assert ticker.ts_ms >= 0


@FUZZ
@given(
    st.fixed_dictionaries(
        {
            "symbol": st.sampled_from(["BTC/USDT", "NKN/USDT", "ÉTH/€"]),
            "id": st.integers(min_value=0, max_value=2**53) | st.text(min_size=1, max_size=20),
            "timestamp": st.integers(min_value=0, max_value=2**53) | st.none(),
            "price": prices | st.floats() | st.none(),
            "amount": sizes | st.floats() | st.none(),
            "side": st.sampled_from(["buy", "sell", None, "BUY"]),
        }
    )
)
def test_what_normalize_accepts_the_codec_carries(t: dict[str, Any]) -> None:
    try:
        trade = trade_from_ccxt("binance", t, RECV_NS)
    except NormalizeError:
        assert not (
            isinstance(t["price"], float) and math.isfinite(t["price"]) and t["price"] > 0
        ) or not (
            isinstance(t["amount"], float) and math.isfinite(t["amount"]) and t["amount"] >= 0
        )
        return
    assert codec.decode(codec.pack(trade)) == trade
