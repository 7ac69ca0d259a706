"""The wire codec: record <-> Redis stream entry fields. Pure, no I/O.

An entry has two fields:

- ``d``: the record as a msgpack array ``[version, kind, exchange, symbol, ts_ms,
  recv_ns, *values]`` (positional: smallest and fastest; the version makes old
  consumers fail loudly instead of misreading a newer layout). Book levels travel
  flat (``[p0, s0, p1, s1, ...]``): one array header per side, not one per level;
- ``h``: one line of text for people running ``redis-cli XREVRANGE``, never parsed.

See docs/wire.md for the layout and the measurements behind it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

import msgpack

from marketbus.errors import DecodeError, SchemaVersionError
from marketbus.models import (
    INT64_MAX,
    INTERVALS_MS,
    MAX_BOOK_LEVELS,
    SCHEMA_VERSION,
    BookTop,
    Candle,
    Channel,
    Funding,
    Liquidation,
    MarkPrice,
    OpenInterest,
    Record,
    Ticker,
    Trade,
    trusted,
)

DATA_FIELD = "d"
HUMAN_FIELD = "h"
_DATA_B = DATA_FIELD.encode()

KIND_TRADE = "T"
KIND_TICKER = "K"
KIND_BOOK = "B"
KIND_CANDLE = "C"
KIND_FUNDING = "F"
KIND_MARK = "M"
KIND_OPEN_INTEREST = "O"
KIND_LIQUIDATION = "L"
KIND_OF: dict[Channel, str] = {
    Channel.TRADES: KIND_TRADE,
    Channel.TICKER: KIND_TICKER,
    Channel.BOOK: KIND_BOOK,
    Channel.CANDLES: KIND_CANDLE,
    Channel.FUNDING: KIND_FUNDING,
    Channel.MARK: KIND_MARK,
    Channel.OPEN_INTEREST: KIND_OPEN_INTEREST,
    Channel.LIQUIDATIONS: KIND_LIQUIDATION,
}
CHANNEL_OF: dict[str, Channel] = {v: k for k, v in KIND_OF.items()}

TICKER_FIELDS = (
    "last", "bid", "ask", "bid_size", "ask_size", "open", "high", "low", "close",
    "base_volume", "quote_volume",
)  # fmt: skip
TRADE_FIELDS = ("id", "price", "amount", "side")
BOOK_FIELDS = ("seq", "bids", "asks")  # bids/asks flat: [p0, s0, p1, s1, ...], best first
CANDLE_FIELDS = (
    "interval", "open_ms", "open", "high", "low", "close", "volume", "quote_volume", "closed",
)  # fmt: skip
FUNDING_FIELDS = ("rate", "next_funding_ms", "predicted_rate", "interval_ms")
MARK_FIELDS = ("mark_price", "index_price")
OPEN_INTEREST_FIELDS = ("contracts", "value")
LIQUIDATION_FIELDS = ("side", "price", "amount")
_HEAD = 6  # version, kind, exchange, symbol, ts_ms, recv_ns

_packer = msgpack.Packer(use_bin_type=True)


def pack(record: Record) -> bytes:
    """The ``d`` field: msgpack array of the record."""
    out: bytes
    if isinstance(record, Trade):
        out = _packer.pack(
            [SCHEMA_VERSION, KIND_TRADE, record.exchange, record.symbol, record.ts_ms,
             record.recv_ns, record.id, record.price, record.amount, record.side]
        )  # fmt: skip
        return out
    if isinstance(record, BookTop):
        out = _packer.pack(
            [SCHEMA_VERSION, KIND_BOOK, record.exchange, record.symbol, record.ts_ms,
             record.recv_ns, record.seq, flat_levels(record.bids), flat_levels(record.asks)]
        )  # fmt: skip
        return out
    if isinstance(record, Candle):
        out = _packer.pack(
            [SCHEMA_VERSION, KIND_CANDLE, record.exchange, record.symbol, record.ts_ms,
             record.recv_ns, record.interval, record.open_ms, record.open, record.high,
             record.low, record.close, record.volume, record.quote_volume, record.closed]
        )  # fmt: skip
        return out
    if not isinstance(record, Ticker):
        return _pack_derivative(record)
    out = _packer.pack(
        [SCHEMA_VERSION, KIND_TICKER, record.exchange, record.symbol, record.ts_ms,
         record.recv_ns, record.last, record.bid, record.ask, record.bid_size, record.ask_size,
         record.open, record.high, record.low, record.close, record.base_volume,
         record.quote_volume]
    )  # fmt: skip
    return out


def _pack_derivative(record: Funding | MarkPrice | OpenInterest | Liquidation) -> bytes:
    head = [SCHEMA_VERSION, KIND_OF[record.channel], record.exchange, record.symbol,
            record.ts_ms, record.recv_ns]  # fmt: skip
    values: list[Any]
    if isinstance(record, Funding):
        values = [record.rate, record.next_funding_ms, record.predicted_rate, record.interval_ms]
    elif isinstance(record, MarkPrice):
        values = [record.mark_price, record.index_price]
    elif isinstance(record, OpenInterest):
        values = [record.contracts, record.value]
    else:
        values = [record.side, record.price, record.amount]
    out: bytes = _packer.pack(head + values)
    return out


def flat_levels(levels: tuple[tuple[float, float], ...]) -> list[float]:
    """``((p0, s0), (p1, s1))`` -> ``[p0, s0, p1, s1]``."""
    return [x for level in levels for x in level]


def pair_levels(flat: list[Any]) -> tuple[tuple[float, float], ...]:
    """Inverse of :func:`flat_levels`."""
    it = iter(flat)
    return tuple((float(p), float(s)) for p, s in zip(it, it, strict=True))


_iso_cache: tuple[int, str] = (-1, "")


def iso_ms(ts_ms: int) -> str:
    """``2021-10-12T00:28:43.963Z``: exchange time as text for the human field.

    Records arrive in time order, so the formatted second is cached: one strftime a second.
    """
    global _iso_cache
    sec, ms = divmod(ts_ms, 1000)
    cached_sec, prefix = _iso_cache
    if sec != cached_sec:
        try:
            prefix = datetime.fromtimestamp(sec, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        except (OverflowError, OSError, ValueError):
            return str(ts_ms)
        _iso_cache = (sec, prefix)
    return f"{prefix}{ms:03d}Z"


_iso_any_cache: tuple[int, str] = (-1, "")


def _iso_any(ts_ms: int) -> str:
    """:func:`iso_ms` of a time apart from the record's own (a funding record's due time:
    the same one for hours, so the last one is cached on its own)."""
    global _iso_any_cache
    if _iso_any_cache[0] == ts_ms:
        return _iso_any_cache[1]
    sec, ms = divmod(ts_ms, 1000)
    try:
        text = datetime.fromtimestamp(sec, tz=UTC).strftime(f"%Y-%m-%dT%H:%M:%S.{ms:03d}Z")
    except (OverflowError, OSError, ValueError):
        return str(ts_ms)
    _iso_any_cache = (ts_ms, text)
    return text


def _fmt(v: float | None) -> str:
    return "-" if v is None else repr(v)  # shortest round-trip text, and fast


def human(record: Record) -> str:
    """The ``h`` field: symbol, price or bid/ask, and exchange time, as one line."""
    if isinstance(record, Trade):  # the hot path: no helper calls (price, amount never None)
        return (
            f"{record.symbol} {record.side or '?'} {record.amount!r} @ {record.price!r} "
            f"id={record.id} {iso_ms(record.ts_ms)}"
        )
    if isinstance(record, Ticker):
        lp, bp, ap = record.last, record.bid, record.ask
        return (
            f"{record.symbol} last {'-' if lp is None else repr(lp)} "
            f"bid {'-' if bp is None else repr(bp)} ask {'-' if ap is None else repr(ap)} "
            f"{iso_ms(record.ts_ms)}"
        )
    if isinstance(record, BookTop):
        bid = record.best_bid or (None, None)
        ask = record.best_ask or (None, None)
        return (
            f"{record.symbol} bid {_fmt(bid[1])} @ {_fmt(bid[0])} ask {_fmt(ask[1])} @ "
            f"{_fmt(ask[0])} levels {len(record.bids)}/{len(record.asks)} seq={record.seq} "
            f"{iso_ms(record.ts_ms)}"
        )
    if isinstance(record, Candle):
        return (
            f"{record.symbol} {record.interval} {iso_ms(record.open_ms)} o {_fmt(record.open)} "
            f"h {_fmt(record.high)} l {_fmt(record.low)} c {_fmt(record.close)} "
            f"v {_fmt(record.volume)}{' closed' if record.closed else ''}"
        )
    if isinstance(record, Funding):
        nxt = "-" if record.next_funding_ms is None else _iso_any(record.next_funding_ms)
        return (
            f"{record.symbol} funding {record.rate!r} next {nxt} "
            f"predicted {_fmt(record.predicted_rate)} {iso_ms(record.ts_ms)}"
        )
    if isinstance(record, MarkPrice):
        return (
            f"{record.symbol} mark {record.mark_price!r} index {_fmt(record.index_price)} "
            f"{iso_ms(record.ts_ms)}"
        )
    if isinstance(record, OpenInterest):
        return (
            f"{record.symbol} open interest {record.contracts!r} value {_fmt(record.value)} "
            f"{iso_ms(record.ts_ms)}"
        )
    if isinstance(record, Liquidation):
        return (
            f"{record.symbol} liquidation {record.side} {record.amount!r} @ {record.price!r} "
            f"{iso_ms(record.ts_ms)}"
        )
    raise TypeError(f"not a marketbus record: {type(record).__name__}")


def encode(record: Record) -> dict[str, bytes | str]:
    """Entry fields for ``XADD``."""
    return {DATA_FIELD: pack(record), HUMAN_FIELD: human(record)}


def _field(fields: Mapping[Any, Any]) -> bytes:
    raw = fields.get(_DATA_B)
    if raw is None:
        raw = fields.get(DATA_FIELD)
    if raw is None:
        raise DecodeError(
            f"entry has no {DATA_FIELD!r} field (fields: {sorted(map(str, fields))[:5]})"
        )
    if isinstance(raw, str):
        raise DecodeError("the data field must be bytes: open Redis with decode_responses=False")
    if not isinstance(raw, bytes | bytearray | memoryview):
        raise DecodeError(f"data field has type {type(raw).__name__}")
    return bytes(raw)


def unpack(data: bytes) -> tuple[Channel, list[Any]]:
    """Check and split a ``d`` payload: ``(channel, values)`` with values as in :func:`pack`.

    Cheap structural checks only (version, kind, arity, types, finite positive prices);
    no model is built, so consumers can feed columns straight into ring buffers.
    """
    try:
        arr = msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True)
    except Exception as e:  # msgpack raises a zoo of types for garbage input
        raise DecodeError(f"not msgpack: {e}") from e
    if not isinstance(arr, list) or len(arr) < _HEAD:
        raise DecodeError("payload is not a marketbus record array")
    version = arr[0]
    if type(version) is not int or version != SCHEMA_VERSION:
        if type(version) is int:
            raise SchemaVersionError(
                f"entry has schema version {version}, this marketbus reads {SCHEMA_VERSION}"
            )
        raise DecodeError("payload has no schema version")
    channel = CHANNEL_OF.get(arr[1]) if isinstance(arr[1], str) else None
    if channel is None:
        raise DecodeError(f"unknown record kind {arr[1]!r}")
    _check_head(arr)
    _CHECKS[channel](arr)
    return channel, arr


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_head(arr: list[Any]) -> None:
    _, _, exchange, symbol, ts_ms, recv_ns = arr[:_HEAD]
    if not isinstance(exchange, str) or not exchange or not isinstance(symbol, str) or not symbol:
        raise DecodeError("exchange and symbol must be non-empty strings")
    if (
        not _is_int(ts_ms)
        or not _is_int(recv_ns)
        or not (0 <= ts_ms <= INT64_MAX)
        or not (0 <= recv_ns <= INT64_MAX)
    ):
        raise DecodeError("ts_ms and recv_ns must be integers in 0..2**63-1")


def _num(v: object, name: str, *, optional: bool, positive: bool) -> None:
    if v is None:
        if optional:
            return
        raise DecodeError(f"{name} is missing")
    if not isinstance(v, float | int) or isinstance(v, bool) or not math.isfinite(v):
        raise DecodeError(f"{name} must be a finite number, got {v!r}")
    if v < 0 or (positive and v == 0):
        raise DecodeError(f"{name} must be {'positive' if positive else 'non-negative'}, got {v!r}")


def _check_trade(arr: list[Any]) -> None:
    if len(arr) != _HEAD + len(TRADE_FIELDS):
        raise DecodeError(f"trade record has {len(arr)} values, expected {_HEAD + 4}")
    tid, price, amount, side = arr[_HEAD:]
    if not isinstance(tid, str) or not tid:
        raise DecodeError("trade id must be a non-empty string")
    _num(price, "price", optional=False, positive=True)
    _num(amount, "amount", optional=False, positive=False)
    if side not in ("buy", "sell", None):
        raise DecodeError(f"trade side must be buy, sell or nil, got {side!r}")


_TICKER_POSITIVE = tuple("volume" not in n and "size" not in n for n in TICKER_FIELDS)


def _check_ticker(arr: list[Any]) -> None:
    if len(arr) != _HEAD + len(TICKER_FIELDS):
        raise DecodeError(f"ticker record has {len(arr)} values, expected {_HEAD + 11}")
    for i, v in enumerate(arr[_HEAD:]):
        # fast path: the common case is a finite float in range
        if v is None or (type(v) is float and 0.0 < v < math.inf):
            continue
        _num(v, TICKER_FIELDS[i], optional=True, positive=_TICKER_POSITIVE[i])


def _check_levels(flat: object, side: str) -> None:
    if not isinstance(flat, list) or len(flat) % 2 or len(flat) > 2 * MAX_BOOK_LEVELS:
        raise DecodeError(f"book {side} must be a flat list of price, size pairs")
    for i in range(0, len(flat), 2):
        p, q = flat[i], flat[i + 1]
        if type(p) is float and 0.0 < p < math.inf and type(q) is float and 0.0 <= q < math.inf:
            continue
        _num(p, f"{side} price", optional=False, positive=True)
        _num(q, f"{side} size", optional=False, positive=False)


def _check_book(arr: list[Any]) -> None:
    if len(arr) != _HEAD + len(BOOK_FIELDS):
        raise DecodeError(f"book record has {len(arr)} values, expected {_HEAD + 3}")
    seq, bids, asks = arr[_HEAD:]
    if seq is not None and (not _is_int(seq) or not 0 <= seq <= INT64_MAX):
        raise DecodeError(f"book seq must be an integer in 0..2**63-1 or nil, got {seq!r}")
    _check_levels(bids, "bids")
    _check_levels(asks, "asks")
    # order and crossing straight on the flat lists: no pairs built (the hot path)
    for i in range(2, len(bids), 2):
        if not bids[i] < bids[i - 2]:
            raise DecodeError(f"bad book: bids not strictly descending at level {i // 2}")
    for i in range(2, len(asks), 2):
        if not asks[i] > asks[i - 2]:
            raise DecodeError(f"bad book: asks not strictly ascending at level {i // 2}")
    if bids and asks and not bids[0] < asks[0]:
        raise DecodeError(f"bad book: crossed book: best bid {bids[0]} >= best ask {asks[0]}")


def _check_candle(arr: list[Any]) -> None:
    if len(arr) != _HEAD + len(CANDLE_FIELDS):
        raise DecodeError(f"candle record has {len(arr)} values, expected {_HEAD + 9}")
    interval, open_ms, o, h, low, c, v, qv, closed = arr[_HEAD:]
    if interval not in INTERVALS_MS:
        raise DecodeError(f"unknown candle interval {interval!r}")
    if not _is_int(open_ms) or not 0 <= open_ms <= INT64_MAX:
        raise DecodeError("candle open_ms must be an integer in 0..2**63-1")
    for name, x in (("open", o), ("high", h), ("low", low), ("close", c)):
        _num(x, name, optional=False, positive=True)
    _num(v, "volume", optional=False, positive=False)
    _num(qv, "quote_volume", optional=True, positive=False)
    if not low <= min(o, c) <= max(o, c) <= h:
        raise DecodeError("candle needs low <= open, close <= high")
    if type(closed) is not bool:
        raise DecodeError("candle closed must be a boolean")


def _arity(arr: list[Any], fields: tuple[str, ...], what: str) -> None:
    if len(arr) != _HEAD + len(fields):
        raise DecodeError(f"{what} record has {len(arr)} values, expected {_HEAD + len(fields)}")


def _time(v: object, name: str, *, positive: bool = False) -> None:
    """An optional int64 time or duration (ms)."""
    if v is None:
        return
    if (
        not isinstance(v, int)
        or isinstance(v, bool)
        or not (1 if positive else 0) <= v <= INT64_MAX
    ):
        raise DecodeError(f"{name} must be an integer in 0..2**63-1 or nil, got {v!r}")


def _finite(v: object, name: str, *, optional: bool) -> None:
    """A finite number of either sign (a funding rate)."""
    if v is None and optional:
        return
    if not isinstance(v, float | int) or isinstance(v, bool) or not math.isfinite(v):
        raise DecodeError(f"{name} must be a finite number, got {v!r}")


def _check_funding(arr: list[Any]) -> None:
    _arity(arr, FUNDING_FIELDS, "funding")
    rate, next_ms, predicted, interval = arr[_HEAD:]
    _finite(rate, "rate", optional=False)
    _time(next_ms, "next_funding_ms")
    _finite(predicted, "predicted_rate", optional=True)
    _time(interval, "interval_ms", positive=True)


def _check_mark(arr: list[Any]) -> None:
    _arity(arr, MARK_FIELDS, "mark")
    _num(arr[_HEAD], "mark_price", optional=False, positive=True)
    _num(arr[_HEAD + 1], "index_price", optional=True, positive=True)


def _check_open_interest(arr: list[Any]) -> None:
    _arity(arr, OPEN_INTEREST_FIELDS, "open_interest")
    _num(arr[_HEAD], "contracts", optional=False, positive=False)
    _num(arr[_HEAD + 1], "value", optional=True, positive=False)


def _check_liquidation(arr: list[Any]) -> None:
    _arity(arr, LIQUIDATION_FIELDS, "liquidation")
    side, price, amount = arr[_HEAD:]
    if side not in ("buy", "sell"):
        raise DecodeError(f"liquidation side must be buy or sell, got {side!r}")
    _num(price, "price", optional=False, positive=True)
    _num(amount, "amount", optional=False, positive=False)


_CHECKS = {
    Channel.TRADES: _check_trade,
    Channel.TICKER: _check_ticker,
    Channel.BOOK: _check_book,
    Channel.CANDLES: _check_candle,
    Channel.FUNDING: _check_funding,
    Channel.MARK: _check_mark,
    Channel.OPEN_INTEREST: _check_open_interest,
    Channel.LIQUIDATIONS: _check_liquidation,
}


# -- many payloads at once ------------------------------------------------------------------
# The consumer's hot path: the checks of unpack, run column-wise over a whole XREAD batch in
# C-level passes (set, map, min, sum), with no Python code per record.

_unpackb = partial(msgpack.unpackb, raw=False, strict_map_key=True, use_list=True)
_INT = {int}
_STR = {str}
_FLOAT = {float}
_NUMBER = {int, float}
_OPT_NUMBER = {int, float, type(None)}
_SIDES = frozenset({"buy", "sell", None})
_not_none = partial(operator.is_not, None)


def unpack_columns(channel: Channel, payloads: Sequence[bytes]) -> list[tuple[Any, ...]] | None:
    """:func:`unpack` of many ``d`` payloads of one channel, transposed: one tuple per position
    of the record array (``[versions, kinds, exchanges, symbols, ts_ms, ...]``).

    Given only when every payload passes :func:`unpack` as a ``channel`` record, with the
    values it would give. Otherwise None: some payload is bad (unpack them one at a time to
    learn which) or the channel has no batch checks (books and candles: unpack each).
    """
    check = _BATCH_CHECKS.get(channel)
    if check is None or not payloads:
        return None
    try:
        arrs = list(map(_unpackb, payloads))
    except Exception:  # as in unpack: msgpack's zoo of errors for garbage
        return None
    width, test = check
    try:
        if set(map(type, arrs)) != {list} or set(map(len, arrs)) != {width}:
            return None
        cols = list(zip(*arrs, strict=True))
        if not (_head_ok(cols, KIND_OF[channel]) and test(cols)):
            return None
    except TypeError:  # an unhashable value where a string belongs
        return None
    return cols


def _ints_ok(col: tuple[Any, ...]) -> bool:
    return set(map(type, col)) == _INT and min(col) >= 0 and max(col) <= INT64_MAX


def _strs_ok(col: tuple[Any, ...]) -> bool:
    return set(map(type, col)) == _STR and "" not in col


def _numbers_ok(col: tuple[Any, ...] | list[Any], *, positive: bool) -> bool:
    """Finite numbers, positive or non-negative. A sum is finite only when every term is;
    one that overflowed says nothing, so then each value is looked at."""
    if not set(map(type, col)) <= _NUMBER:
        return False
    if not math.isfinite(sum(col)) and not all(map(math.isfinite, col)):
        return False
    low = min(col)
    return bool(low > 0 if positive else low >= 0)


def _head_ok(cols: list[tuple[Any, ...]], kind: str) -> bool:
    version, kinds, exchange, symbol, ts_ms, recv_ns = cols[:_HEAD]
    return (
        set(map(type, version)) == _INT
        and set(version) == {SCHEMA_VERSION}
        and set(kinds) == {kind}
        and _strs_ok(exchange)
        and _strs_ok(symbol)
        and _ints_ok(ts_ms)
        and _ints_ok(recv_ns)
    )


def _trades_ok(cols: list[tuple[Any, ...]]) -> bool:
    tid, price, amount, side = cols[_HEAD:]
    return (
        _strs_ok(tid)
        and _numbers_ok(price, positive=True)
        and _numbers_ok(amount, positive=False)
        and set(side) <= _SIDES
    )


def _tickers_ok(cols: list[tuple[Any, ...]]) -> bool:
    for col, positive in zip(cols[_HEAD:], _TICKER_POSITIVE, strict=True):
        types = set(map(type, col))
        if types <= _FLOAT:
            values: tuple[Any, ...] | list[Any] = col
        elif types <= _OPT_NUMBER:
            values = list(filter(_not_none, col))
            if not values:
                continue
        else:
            return False
        if not _numbers_ok(values, positive=positive):
            return False
    return True


_BATCH_CHECKS: dict[Channel, tuple[int, Callable[[list[tuple[Any, ...]]], bool]]] = {
    Channel.TRADES: (_HEAD + len(TRADE_FIELDS), _trades_ok),
    Channel.TICKER: (_HEAD + len(TICKER_FIELDS), _tickers_ok),
}


def from_values(channel: Channel, arr: list[Any]) -> Record:
    """A model from checked values (no second validation: :func:`unpack` did it)."""
    head: dict[str, Any] = {
        "exchange": arr[2],
        "symbol": arr[3],
        "ts_ms": arr[4],
        "recv_ns": arr[5],
    }
    if channel is Channel.TRADES:
        tid, price, amount, side = arr[_HEAD:]
        head.update(id=tid, price=float(price), amount=float(amount), side=side)
        return trusted(Trade, head)
    if channel is Channel.BOOK:
        seq, bids, asks = arr[_HEAD:]
        head.update(seq=seq, bids=pair_levels(bids), asks=pair_levels(asks))
        return trusted(BookTop, head)
    if channel is Channel.CANDLES:
        interval, open_ms, o, h, low, c, v, qv, closed = arr[_HEAD:]
        head.update(
            interval=interval, open_ms=open_ms, open=float(o), high=float(h), low=float(low),
            close=float(c), volume=float(v), quote_volume=None if qv is None else float(qv),
            closed=closed,
        )  # fmt: skip
        return trusted(Candle, head)
    if channel is not Channel.TICKER:
        return _derivative(channel, head, arr[_HEAD:])
    for k, v in zip(TICKER_FIELDS, arr[_HEAD:], strict=True):
        head[k] = None if v is None else float(v)
    return trusted(Ticker, head)


def _opt_float(v: Any) -> float | None:
    return None if v is None else float(v)


def _derivative(channel: Channel, head: dict[str, Any], values: list[Any]) -> Record:
    if channel is Channel.FUNDING:
        rate, next_ms, predicted, interval = values
        head.update(
            rate=float(rate), next_funding_ms=next_ms, predicted_rate=_opt_float(predicted),
            interval_ms=interval,
        )  # fmt: skip
        return trusted(Funding, head)
    if channel is Channel.MARK:
        head.update(mark_price=float(values[0]), index_price=_opt_float(values[1]))
        return trusted(MarkPrice, head)
    if channel is Channel.OPEN_INTEREST:
        head.update(contracts=float(values[0]), value=_opt_float(values[1]))
        return trusted(OpenInterest, head)
    side, price, amount = values
    head.update(side=side, price=float(price), amount=float(amount))
    return trusted(Liquidation, head)


def decode(data: bytes) -> Record:
    """A ``d`` payload back into its model."""
    channel, arr = unpack(data)
    return from_values(channel, arr)


def decode_fields(fields: Mapping[Any, Any]) -> Record:
    """An entry's field mapping (as redis-py returns it) back into its model."""
    return decode(_field(fields))


def data_of(fields: Mapping[Any, Any]) -> bytes:
    """The ``d`` payload of an entry, or :class:`DecodeError`."""
    return _field(fields)
