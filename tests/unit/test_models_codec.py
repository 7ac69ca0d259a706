"""Models and the wire codec: round trips, the human field, and every way a payload can be bad."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from pydantic import ValidationError

from marketbus import codec
from marketbus.errors import DecodeError, MarketbusError, SchemaVersionError
from marketbus.models import SCHEMA_VERSION, Channel, Ticker, Trade
from tests import factories

TS_MS = 1_633_998_523_963  # 2021-10-12T00:28:43.963Z
TS_ISO = "2021-10-12T00:28:43.963Z"
RECV_NS = 1_633_998_523_970_123_456


def _trade(**kw: Any) -> Trade:
    base: dict[str, Any] = dict(
        exchange="binance",
        symbol="NKN/USDT",
        ts_ms=TS_MS,
        recv_ns=RECV_NS,
        id="15683430",
        price=0.3528,
        amount=58.0,
        side="buy",
    )
    return Trade(**{**base, **kw})


def _ticker(**kw: Any) -> Ticker:
    base: dict[str, Any] = dict(exchange="binance", symbol="NKN/USDT", ts_ms=TS_MS, recv_ns=RECV_NS)
    return Ticker(**{**base, **kw})


def _trade_values(**kw: Any) -> list[Any]:
    """A valid trade array as :func:`codec.pack` writes it, with fields replaced by name."""
    head = dict(
        version=SCHEMA_VERSION,
        kind="T",
        exchange="binance",
        symbol="BTC/USDT",
        ts_ms=TS_MS,
        recv_ns=RECV_NS,
        id="1",
        price=100.0,
        amount=0.5,
        side="sell",
    )
    head.update(kw)
    return list(head.values())


def _ticker_values(**kw: Any) -> list[Any]:
    vals: dict[str, Any] = dict(
        version=SCHEMA_VERSION,
        kind="K",
        exchange="binance",
        symbol="BTC/USDT",
        ts_ms=TS_MS,
        recv_ns=RECV_NS,
    )
    vals.update({f: 1.0 for f in codec.TICKER_FIELDS})
    vals.update(kw)
    return list(vals.values())


def _packed(values: list[Any]) -> bytes:
    return msgpack.packb(values, use_bin_type=True)


def _same(a: Trade | Ticker, b: Trade | Ticker) -> None:
    assert type(a) is type(b)
    assert a.model_dump() == b.model_dump()


# -- models ---------------------------------------------------------------------------------


def test_models_are_frozen_and_reject_extra_fields() -> None:
    t = _trade()
    with pytest.raises(ValidationError):
        t.price = 1.0  # type: ignore[misc]
    with pytest.raises(ValidationError):
        _trade(venue="x")


@pytest.mark.parametrize("price", [0.0, -1.0, math.nan, math.inf, -math.inf])
def test_trade_rejects_non_positive_or_non_finite_price(price: float) -> None:
    with pytest.raises(ValidationError):
        _trade(price=price)


@pytest.mark.parametrize("field", ["bid", "ask", "last", "open", "high", "low", "close"])
def test_ticker_optional_prices_must_be_positive_and_finite(field: str) -> None:
    for bad in (0.0, -2.0, math.nan, math.inf):
        with pytest.raises(ValidationError):
            _ticker(**{field: bad})


def test_sizes_may_be_zero_but_not_negative() -> None:
    assert _trade(amount=0.0).amount == 0.0
    assert _ticker(bid_size=0.0, base_volume=0.0).bid_size == 0.0
    with pytest.raises(ValidationError):
        _trade(amount=-0.1)
    with pytest.raises(ValidationError):
        _ticker(ask_size=-1.0)


def test_channel_is_fixed_by_the_model() -> None:
    assert _trade().channel is Channel.TRADES
    assert _ticker().channel is Channel.TICKER


# -- round trips ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        _trade(),
        _trade(side=None),
        _trade(side="sell", amount=0.0),
        _trade(price=5e-324, amount=1.7976931348623157e308),  # smallest and largest floats
        _trade(price=1.7976931348623157e308),
        _trade(ts_ms=0, recv_ns=0),
        _trade(ts_ms=2**63 - 1, recv_ns=2**63 - 1),
        _trade(id="x" * 128, exchange="e" * 64, symbol="S" * 128),
        _trade(symbol="狗狗币/USDT", exchange="bïnance", id="ид-1"),
        _trade(symbol="🚀/USDT"),
        _ticker(),  # every optional field None
        _ticker(
            last=0.3528,
            bid=0.3521,
            ask=0.3526,
            bid_size=672.0,
            ask_size=3199.0,
            open=0.34,
            high=0.36,
            low=0.33,
            close=0.3528,
            base_volume=0.0,
            quote_volume=1e300,
        ),
        _ticker(bid=5e-324, symbol="ÉTH/€"),
        factories.trade(3),
        factories.ticker(7),
    ],
    ids=lambda r: f"{type(r).__name__}-{r.symbol}",
)
def test_round_trip_is_exact(record: Trade | Ticker) -> None:
    fields = codec.encode(record)
    assert set(fields) == {codec.DATA_FIELD, codec.HUMAN_FIELD}
    decoded = codec.decode_fields(fields)
    _same(decoded, record)
    # the decoded model is valid by the model's own rules
    _same(type(record).model_validate(decoded.model_dump()), record)


def test_round_trip_preserves_float_bits() -> None:
    price = 0.1 + 0.2  # not 0.3: must come back bit for bit
    decoded = codec.decode(codec.pack(_trade(price=price)))
    assert isinstance(decoded, Trade)
    assert decoded.price == price
    assert decoded.price.hex() == price.hex()


def test_int_prices_on_the_wire_come_back_as_floats() -> None:
    decoded = codec.decode(_packed(_trade_values(price=7, amount=2)))
    assert isinstance(decoded, Trade)
    assert type(decoded.price) is float and decoded.price == 7.0
    assert type(decoded.amount) is float and decoded.amount == 2.0


def test_unpack_reports_the_channel() -> None:
    channel, values = codec.unpack(codec.pack(_trade()))
    assert channel is Channel.TRADES
    assert values[:2] == [SCHEMA_VERSION, "T"]
    channel, values = codec.unpack(codec.pack(_ticker()))
    assert channel is Channel.TICKER
    assert len(values) == 6 + len(codec.TICKER_FIELDS)


# -- the human field ------------------------------------------------------------------------


def test_human_field_of_a_trade() -> None:
    h = codec.encode(_trade())[codec.HUMAN_FIELD]
    assert isinstance(h, str)
    assert "NKN/USDT" in h
    assert "0.3528" in h
    assert "buy" in h
    assert "15683430" in h
    assert TS_ISO in h
    assert "\n" not in h


def test_human_field_of_a_ticker() -> None:
    h = codec.encode(_ticker(bid=0.3521, ask=0.3526, last=0.3528))[codec.HUMAN_FIELD]
    assert isinstance(h, str)
    assert h.startswith("NKN/USDT ")
    assert "0.3521" in h and "0.3526" in h and "0.3528" in h
    assert h.index("0.3521") < h.index("0.3526")  # bid before ask
    assert TS_ISO in h


def test_human_field_with_missing_values_and_unicode() -> None:
    h = codec.human(_ticker(symbol="狗狗币/USDT"))
    assert "狗狗币/USDT" in h
    assert "-" in h.split()  # a missing price is shown as a dash, not 'None'
    assert "None" not in h


@pytest.mark.parametrize(
    ("ts_ms", "text"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (TS_MS, TS_ISO),
        (1_700_000_000_999, "2023-11-14T22:13:20.999Z"),
    ],
)
def test_iso_ms(ts_ms: int, text: str) -> None:
    assert codec.iso_ms(ts_ms) == text


def test_iso_ms_of_an_impossible_time_does_not_raise() -> None:
    assert codec.iso_ms(2**63 - 1) == str(2**63 - 1)


# -- decode errors --------------------------------------------------------------------------


def test_newer_schema_version_is_a_schema_version_error() -> None:
    data = _packed(_trade_values(version=SCHEMA_VERSION + 1))
    with pytest.raises(SchemaVersionError, match=str(SCHEMA_VERSION + 1)):
        codec.decode(data)
    # and it is still a DecodeError for callers that only catch that
    assert issubclass(SchemaVersionError, DecodeError)
    assert issubclass(DecodeError, MarketbusError)


@pytest.mark.parametrize("version", [0, -1, 2**32])
def test_other_integer_versions_are_schema_version_errors(version: int) -> None:
    with pytest.raises(SchemaVersionError):
        codec.decode(_packed(_trade_values(version=version)))


@pytest.mark.parametrize("version", ["1", None, [1]])
def test_a_non_integer_version_is_a_decode_error(version: Any) -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(_packed(_trade_values(version=version)))
    assert not isinstance(info.value, SchemaVersionError)


GOOD = codec.pack(_trade())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # the one byte msgpack never uses
        b"\xff\x00\x13\x37garbage",
        b"not msgpack at all",
        GOOD[: len(GOOD) // 2],  # truncated
        GOOD[:-1],
        GOOD + b"\x00",  # trailing data
        _packed({"v": 1}),  # a map
        _packed(1),
        _packed("T"),
        _packed(None),
        _packed([]),
        _packed([SCHEMA_VERSION, "T", "binance"]),  # too short for a head
        _packed(_trade_values()[:-1]),  # one value short
        _packed([*_trade_values(), None]),  # one value too many
        _packed(_ticker_values()[:-1]),
        _packed([*_ticker_values(), 1.0]),
        _packed(_trade_values(kind="X")),  # unknown kind
        _packed(_trade_values(kind=1)),
        _packed(_trade_values(kind=None)),
        _packed(_ticker_values(kind="T")),  # ticker arity under the trade kind
        _packed(_trade_values(kind="K")),
    ],
)
def test_malformed_payload_is_a_decode_error(data: bytes) -> None:
    with pytest.raises(DecodeError):
        codec.decode(data)


@pytest.mark.parametrize(
    "change",
    [
        {"exchange": ""},
        {"exchange": None},
        {"exchange": b"binance"},
        {"symbol": ""},
        {"symbol": 7},
        {"ts_ms": -1},
        {"ts_ms": 1.5},
        {"ts_ms": "1633998523963"},
        {"ts_ms": None},
        {"ts_ms": True},  # bool where an int is expected
        {"recv_ns": False},
        {"recv_ns": -5},
        {"id": ""},
        {"id": 15683430},
        {"id": None},
        {"price": math.nan},
        {"price": math.inf},
        {"price": -math.inf},
        {"price": -1.0},
        {"price": 0.0},
        {"price": 0},
        {"price": None},
        {"price": "100"},
        {"price": True},
        {"amount": -0.5},
        {"amount": math.nan},
        {"amount": None},
        {"amount": False},
        {"side": "BUY"},
        {"side": ""},
        {"side": 1},
    ],
    ids=repr,
)
def test_bad_trade_value_is_a_decode_error(change: dict[str, Any]) -> None:
    with pytest.raises(DecodeError):
        codec.decode(_packed(_trade_values(**change)))


@pytest.mark.parametrize("field", codec.TICKER_FIELDS)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -1.0, "1.0", True])
def test_bad_ticker_value_is_a_decode_error(field: str, bad: Any) -> None:
    with pytest.raises(DecodeError, match=field):
        codec.decode(_packed(_ticker_values(**{field: bad})))


@pytest.mark.parametrize("field", ["last", "bid", "ask", "open", "high", "low", "close"])
def test_zero_ticker_price_is_a_decode_error(field: str) -> None:
    with pytest.raises(DecodeError, match=field):
        codec.decode(_packed(_ticker_values(**{field: 0.0})))


@pytest.mark.parametrize("field", ["bid_size", "ask_size", "base_volume", "quote_volume"])
def test_zero_ticker_sizes_are_fine(field: str) -> None:
    decoded = codec.decode(_packed(_ticker_values(**{field: 0.0})))
    assert getattr(decoded, field) == 0.0


def test_ticker_values_may_all_be_nil() -> None:
    values = _ticker_values(**{f: None for f in codec.TICKER_FIELDS})
    decoded = codec.decode(_packed(values))
    assert isinstance(decoded, Ticker)
    assert all(getattr(decoded, f) is None for f in codec.TICKER_FIELDS)


def test_decode_error_keeps_its_cause() -> None:
    with pytest.raises(DecodeError) as info:
        codec.decode(b"\xc1")
    assert info.value.__cause__ is not None


# -- entry fields ---------------------------------------------------------------------------


def test_fields_with_bytes_keys_as_redis_returns_them() -> None:
    record = _trade()
    fields = {
        k.encode(): (v if isinstance(v, bytes) else v.encode())
        for k, v in codec.encode(record).items()
    }
    _same(codec.decode_fields(fields), record)
    assert codec.data_of(fields) == codec.pack(record)


def test_fields_with_str_keys() -> None:
    record = _ticker(bid=1.0)
    _same(codec.decode_fields(codec.encode(record)), record)


@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_data_field_may_be_any_bytes_like(wrap: Any) -> None:
    record = _trade()
    _same(codec.decode_fields({b"d": wrap(codec.pack(record))}), record)


def test_missing_data_field_names_it() -> None:
    with pytest.raises(DecodeError, match="'d'"):
        codec.decode_fields({b"h": b"BTC/USDT buy 1 @ 2"})
    with pytest.raises(DecodeError):
        codec.decode_fields({})
    with pytest.raises(DecodeError):
        codec.data_of({b"x": b"y"})


def test_str_data_says_to_open_redis_without_decode_responses() -> None:
    with pytest.raises(DecodeError, match="decode_responses"):
        codec.decode_fields({"d": "\x96\x01"})


@pytest.mark.parametrize("value", [1, 1.5, ["d"], {"d": 1}])
def test_data_field_of_another_type_is_a_decode_error(value: Any) -> None:
    with pytest.raises(DecodeError):
        codec.decode_fields({b"d": value})


def _samples() -> list[Any]:
    from marketbus.models import BookTop, Candle

    head = {"exchange": "okx", "symbol": "ETH/USDT", "ts_ms": 1_700_000_000_123, "recv_ns": 7}
    return [
        factories.trade(1),
        Trade(**head, id="9", price=1.5, amount=0.0),  # side left to its default
        factories.ticker(2),
        Ticker(**head, bid=1.0),  # mostly defaults
        BookTop(**head, seq=3, bids=((2.0, 1.0), (1.0, 0.5)), asks=((3.0, 0.25),)),
        BookTop(**head, bids=(), asks=()),
        Candle(
            **head,
            interval="1m",
            open_ms=60_000,
            open=2.0,
            high=3.0,
            low=1.0,
            close=2.5,
            volume=4.0,
            closed=True,
        ),
    ]


@pytest.mark.parametrize(
    "record", _samples(), ids=lambda r: f"{r.channel}-{len(r.__pydantic_fields_set__)}"
)
def test_trusted_builds_what_validation_and_model_construct_build(record: Any) -> None:
    from marketbus.models import trusted

    cls = type(record)
    given = {k: getattr(record, k) for k in record.__pydantic_fields_set__}
    fast = trusted(cls, given)
    slow = cls.model_construct(**given)
    assert fast == record == slow
    assert repr(fast) == repr(record)
    assert (
        fast.model_dump() == record.model_dump()
        and fast.model_dump_json() == record.model_dump_json()
    )
    assert hash(fast) == hash(record)
    assert fast.__pydantic_fields_set__ == slow.__pydantic_fields_set__
    assert codec.decode(codec.pack(fast)) == record == codec.decode(codec.pack(record))
    with pytest.raises(ValidationError):
        fast.symbol = "X"  # type: ignore[misc]  # still frozen
