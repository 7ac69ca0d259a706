"""Trade and ticker payloads, and entry ids, decoded column-wise from their bytes in numpy passes.

The archiver's hot path. ``msgpack.unpackb`` builds ~11 Python objects per trade (the array,
its strings, ints and floats), then the columns are built from those again: 1.8 µs a trade
with the checks, half the archiver's time. Here the payloads of a batch are joined into one
byte array and read field by field for every record at once (``pos`` holds each record's read
position): no Python object per record, ~0.25 µs a trade. Entry ids (``ms-seq`` text) are
read the same way (:func:`entry_numbers`: 0.1 µs an id, half of ``np.fromstring``'s).

Only the layout :func:`marketbus.codec.pack` writes is read this way (an array header of the
channel's width, version, kind, the stream's own exchange and symbol as msgpack strings, ints
as msgpack uints, floats as float64, ``None`` as nil). Any record that differs in any way (an
other encoding of the same value, a bad value, bytes left over) makes :func:`columns` return
None, and the caller decodes the batch the generic way (:func:`marketbus.codec.unpack_columns`,
then entry by entry), which finds and reports what is wrong. So this path never accepts a
record the generic one refuses, and gives the same values (tested:
tests/unit/test_archive_wire_columns.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from numpy.lib.stride_tricks import as_strided

from marketbus.codec import KIND_TICKER, KIND_TRADE, TICKER_FIELDS
from marketbus.models import SCHEMA_VERSION, Channel

Ints = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]

_NIL = 0xC0
_FLOAT64 = 0xCB
_UINT_SIZE = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}  # msgpack uint8..uint64: bytes after the type
_STR_SIZE = {0xD9: 1, 0xDA: 2, 0xDB: 4}  # str8/16/32: bytes of the length after the type
_WIDTH = 32  # the widest window read at a position (an exchange and a symbol, say)
_PAD = 2 * _WIDTH  # zero bytes after the data: a window read at or just past any position
# up to the end (positions never pass it: _Reader._advance) stays inside the buffer
_INT64_MAX = np.uint64(2**63 - 1)
_SIDE_BUY = np.frombuffer(b"\xa3buy", dtype=np.uint8)
_SIDE_SELL = np.frombuffer(b"\xa4sell", dtype=np.uint8)
# ticker fields that must be > 0 (the others, volumes and sizes, >= 0), as codec checks them
TICKER_POSITIVE = tuple("volume" not in n and "size" not in n for n in TICKER_FIELDS)


class _Refused(Exception):
    """A record not in the layout this module reads: the batch goes the generic way."""


class _Reader:
    """Every record's read position in the joined payloads, moved one field at a time."""

    def __init__(self, payloads: Sequence[bytes]) -> None:
        n = len(payloads)
        self.buf: Bytes = np.frombuffer(b"".join([*payloads, bytes(_PAD)]), dtype=np.uint8)
        # every position's next _WIDTH bytes as a row (a view: rows[at] copies 32 bytes a
        # record, twice as fast as gathering single bytes)
        self._rows: Bytes = as_strided(
            self.buf, shape=(len(self.buf) - _WIDTH + 1, _WIDTH), strides=(1, 1), writeable=False
        )
        lens = np.fromiter(map(len, payloads), dtype=np.int64, count=n)
        self.ends: Ints = np.cumsum(lens)
        self.pos: Ints = self.ends - lens

    def _advance(self, by: Ints | int) -> None:
        self.pos = self.pos + by
        if (self.pos > self.ends).any():  # a field runs past its payload: truncated
            raise _Refused

    def _window(self, at: Ints, width: int) -> Bytes:
        """``width`` bytes from each position (in the padding past the last payload's end,
        which :meth:`_advance` then refuses)."""
        return self._rows[at, :width]

    def types(self) -> Bytes:
        return self.buf[self.pos]

    def expect(self, packed: bytes) -> None:
        """The same bytes in every record (the array header, version, kind, market)."""
        for i in range(0, len(packed), _WIDTH):
            want = np.frombuffer(packed[i : i + _WIDTH], dtype=np.uint8)
            if not (self._window(self.pos, len(want)) == want).all():
                raise _Refused
            self._advance(len(want))

    def uint(self) -> Ints:
        """A msgpack uint per record, at most INT64_MAX (codec's bounds for times)."""
        t = self.types()
        size = np.zeros(len(t), dtype=np.int64)
        for code, n in _UINT_SIZE.items():
            size[t == code] = n
        fix = t < 0x80
        if not (fix | (size > 0)).all():
            raise _Refused  # negative, float, nil, anything else
        raw = np.ascontiguousarray(self._window(self.pos + 1, 8)).view(">u8").ravel()
        shift = (8 * (8 - size)).astype(np.uint64)
        value = np.where(fix, t.astype(np.uint64), raw >> np.where(fix, 0, shift))
        if (value > _INT64_MAX).any():
            raise _Refused
        self._advance(size + 1)
        return value.astype(np.int64)

    def float64(self, *, nil: bool = False) -> npt.NDArray[np.float64]:
        """A finite float64 per record (codec refuses NaN and infinities); nil, where
        allowed, as NaN (as the ring buffer holds a missing value)."""
        t = self.types()
        is_nil = t == _NIL
        if not ((t == _FLOAT64) | (is_nil if nil else False)).all():
            raise _Refused  # an int or a float32 where a float belongs: read the generic way
        value = np.ascontiguousarray(self._window(self.pos + 1, 8)).view(">f8").ravel()
        value = value.astype(np.float64)
        self._advance(np.where(is_nil, 1, 9))
        value[is_nil] = 0.0  # (only where nil is allowed) the bytes after a nil are not its
        if not np.isfinite(value).all():
            raise _Refused
        value[is_nil] = np.nan
        return value

    def string(self) -> pa.StringArray:
        """A non-empty UTF-8 string per record, as an Arrow string array."""
        t = self.types()
        fix = (t & 0xE0) == 0xA0
        head = np.ones(len(t), dtype=np.int64)
        length = (t & 0x1F).astype(np.int64)
        for code, n in _STR_SIZE.items():
            mask = t == code
            if mask.any():
                head[mask] = 1 + n
                raw = np.ascontiguousarray(self._window(self.pos[mask] + 1, 8)).view(">u8")
                raw = raw.ravel()
                length[mask] = (raw >> np.uint64(64 - 8 * n)).astype(np.int64)
            fix |= mask
        if not fix.all() or not (length > 0).all() or length.sum() >= 2**31:
            raise _Refused  # (an Arrow string array's offsets are int32)
        start = self.pos + head
        self._advance(head + length)
        offsets = np.zeros(len(t) + 1, dtype=np.int32)
        np.cumsum(length, out=offsets[1:])
        index = np.repeat(start - offsets[:-1], length) + np.arange(offsets[-1], dtype=np.int64)
        data = self.buf[index]
        arr = pa.StringArray.from_buffers(len(t), pa.py_buffer(offsets), pa.py_buffer(data))
        try:
            arr.validate(full=True)  # UTF-8, as msgpack's raw=False decoding insists
        except pa.ArrowInvalid:
            raise _Refused from None
        return arr

    def side(self) -> pa.DictionaryArray:
        """``buy``, ``sell`` or nil per record: the trades' ``side`` category column."""
        t = self.types()
        window = self._window(self.pos, 5)
        buy = (window[:, :4] == _SIDE_BUY).all(axis=1)
        sell = (window == _SIDE_SELL).all(axis=1)
        is_nil = t == _NIL
        if not (buy | sell | is_nil).all():
            raise _Refused
        self._advance(np.where(buy, 4, np.where(sell, 5, 1)))
        codes = np.where(sell, 1, 0).astype(np.int8)
        dictionary = pa.array(["buy", "sell"], type=pa.string())
        return pa.DictionaryArray.from_arrays(pa.array(codes, mask=is_nil), dictionary)

    def done(self) -> None:
        if not (self.pos == self.ends).all():
            raise _Refused  # bytes left after the record: not one msgpack object


def _head(r: _Reader, width: int, kind: str, exchange: str, symbol: str) -> tuple[Ints, Ints]:
    header = msgpack.packb([None] * width)[:-width]  # the array header alone
    r.expect(header + b"".join(map(msgpack.packb, [SCHEMA_VERSION, kind, exchange, symbol])))
    return r.uint(), r.uint()


def columns(
    channel: Channel, payloads: Sequence[bytes], exchange: str, symbol: str
) -> dict[str, Any] | None:
    """The ring-buffer columns of a batch of trades or tickers of one market (``entry_ms``
    aside), or None when a payload is not in the layout read here (see the module docstring)."""
    if not payloads or not exchange or not symbol:
        return None
    r = _Reader(payloads)
    try:
        if channel is Channel.TRADES:
            ts_ms, recv_ns = _head(r, 10, KIND_TRADE, exchange, symbol)
            tid = r.string()
            price, amount = r.float64(), r.float64()
            side = r.side()
            r.done()
            if not (price > 0).all() or not (amount >= 0).all():
                return None
            return {"ts_ms": ts_ms, "recv_ns": recv_ns, "price": price, "amount": amount,
                    "side": side, "id": tid}  # fmt: skip
        if channel is Channel.TICKER:
            ts_ms, recv_ns = _head(r, 6 + len(TICKER_FIELDS), KIND_TICKER, exchange, symbol)
            values = [r.float64(nil=True) for _ in TICKER_FIELDS]
            r.done()
            out: dict[str, Any] = {"ts_ms": ts_ms, "recv_ns": recv_ns}
            for name, v, positive in zip(TICKER_FIELDS, values, TICKER_POSITIVE, strict=True):
                known = v[~np.isnan(v)]  # (a NaN sent is refused by float64: these are nils)
                if not (known > 0 if positive else known >= 0).all():
                    return None
                out[name] = v
            return out
    except _Refused:
        return None
    return None


_POW10 = 10 ** np.arange(19, dtype=np.int64)
_ID_WIDTH = 37  # the longest id read here: 18 digits, a dash, 18 digits (<= _PAD)
_DASH = np.uint8((ord("-") - ord("0")) % 256)  # b"-" after subtracting b"0" (uint8: 253)


def entry_numbers(ids: Sequence[bytes]) -> tuple[Ints, Ints] | None:
    """Entry ids ``ms-seq`` as two int64 arrays (ms, seq), or None unless every id is one
    to 18 ASCII digits, a dash, one to 18 digits (then :func:`consumers.streams.id_numbers`
    reads them, and tells a bad one). Ids of one length and dash position (mostly one or
    two kinds in a batch: the ms part has 13 digits until the year 2286) are one matrix of
    digits each."""
    n = len(ids)
    try:
        lens = np.fromiter(map(len, ids), dtype=np.int64, count=n)
        buf = np.frombuffer(b"".join([*ids, bytes(_PAD)]), dtype=np.uint8)
    except TypeError:
        return None  # not bytes
    if n == 0 or lens.max() > _ID_WIDTH:
        return None
    shape = (len(buf) - _ID_WIDTH + 1, _ID_WIDTH)
    rows = as_strided(buf, shape=shape, strides=(1, 1), writeable=False)
    digits = rows[np.cumsum(lens) - lens] - np.uint8(ord("0"))
    dashes = np.argmax(digits == _DASH, axis=1)
    kinds = np.unique(lens * 64 + dashes).tolist()
    ms, seq = np.empty(n, dtype=np.int64), np.empty(n, dtype=np.int64)
    for kind in kinds:
        size, dash = divmod(kind, 64)
        if not (1 <= dash <= 18 and 1 <= size - dash - 1 <= 18):
            return None  # no dash (argmax 0), or a part empty or too long
        sel = None if len(kinds) == 1 else (lens == size) & (dashes == dash)
        these = digits if sel is None else digits[sel]
        left, right = these[:, :dash], these[:, dash + 1 : size]
        if (left > 9).any() or (right > 9).any():
            return None
        a = left.astype(np.int64) @ _POW10[dash - 1 :: -1]
        b = right.astype(np.int64) @ _POW10[size - dash - 2 :: -1]
        if sel is None:
            return a, b
        ms[sel], seq[sel] = a, b
    return ms, seq
