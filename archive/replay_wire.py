"""Archived rows back into stream entries, byte for byte as the publisher writes them. Pure.

The archive keeps every field of a record in the ring buffer's columns (a missing float as
NaN, a missing sequence number or time as -1, a missing side as null, book levels as lists).
A row becomes the codec's positional values again, ``[version, kind, exchange, symbol, ts_ms,
recv_ns, *fields]`` with the fields in the model's order (the codec's), packed with the same
msgpack settings as :func:`marketbus.codec.pack`; the readable ``h`` line is
:func:`marketbus.codec.human`'s own. Tests hold both equal to :func:`marketbus.codec.encode`
for every channel, so a change to the wire format cannot leave replay behind unnoticed.

Each entry becomes one ``XADD <key> [MAXLEN ~ <n>] <id> d <data> h <line>`` command as RESP
bytes, packed here rather than by redis-py (~20 µs a command there, ~0.5 µs here).
"""

from __future__ import annotations

from functools import cache
from itertools import pairwise, repeat
from typing import Any

import msgpack
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import MODELS, SCHEMA_VERSION, Channel, Trade, trusted

HEAD_FIELDS = ("exchange", "symbol", "ts_ms", "recv_ns")
_LEVEL_FIELDS = frozenset({"bids", "asks"})  # list columns of {price, size}: flat on the wire


@cache
def record_fields(channel: Channel) -> tuple[str, ...]:
    """The record's values after the head, in the codec's order (the model's field order)."""
    return tuple(
        name for name in MODELS[channel].model_fields if name not in (*HEAD_FIELDS, "channel")
    )


@cache
def optional_fields(channel: Channel) -> frozenset[str]:
    """Fields a record may lack: their missing marker in the archive (NaN, -1, null) is nil."""
    fields = MODELS[channel].model_fields
    return frozenset(n for n in record_fields(channel) if not fields[n].is_required())


def column_values(column: pa.ChunkedArray | pa.Array, optional: bool) -> list[Any]:
    """A column as Python values, each as the codec carries it (float, int, str, bool, None).

    ``optional``: NaN (floats) and -1 (integers: ``seq``, times) are the archive's "missing"
    and become None, as they were on the wire. (``to_pylist`` would be simpler: it costs
    1.4 µs a value on a dictionary column, 30x these.)"""
    t = column.type
    if column.null_count == 0 and (pa.types.is_floating(t) or pa.types.is_integer(t)):
        arr = column.to_numpy()
        values: list[Any] = arr.tolist()
        if optional:
            missing = np.isnan(arr) if pa.types.is_floating(t) else arr == -1
            for i in np.flatnonzero(missing).tolist():
                values[i] = None
        return values
    if pa.types.is_dictionary(t):
        column = pc.cast(column, t.value_type)
        t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        out: list[Any] = column.to_numpy(zero_copy_only=False).tolist()  # null: None
        return out
    out = column.to_pylist()
    if optional and pa.types.is_floating(t):
        return [None if v is None or v != v else v for v in out]
    if optional and pa.types.is_integer(t):
        return [None if v is None or v == -1 else v for v in out]
    return out


def flat_levels(column: pa.ChunkedArray | pa.Array) -> list[list[float]]:
    """A ``bids``/``asks`` column (lists of ``{price, size}``) as the codec carries each side:
    ``[p0, s0, p1, s1, ...]``, best first."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    offsets = arr.offsets.to_numpy()
    offsets = (offsets - offsets[0]) * 2
    items = arr.flatten()
    inter = np.empty(2 * len(items), dtype=np.float64)
    inter[0::2] = items.field("price").to_numpy()
    inter[1::2] = items.field("size").to_numpy()
    flat = inter.tolist()
    bounds = offsets.tolist()
    return [flat[lo:hi] for lo, hi in pairwise(bounds)]


def _pairs(flat: list[float]) -> list[tuple[float, float]]:
    it = iter(flat)
    return list(zip(it, it, strict=True))


class Encoder:
    """Archive rows of one channel and exchange -> ``XADD`` commands (RESP bytes)."""

    def __init__(self, channel: Channel, exchange: str, prefix: str, maxlen: int | None) -> None:
        self.channel = channel
        self.exchange = exchange
        self._prefix = prefix
        self._kind = codec.KIND_OF[channel]
        self._fields = record_fields(channel)
        self._optional = optional_fields(channel)
        if maxlen is None:
            self._argc, self._tail = b"*7\r\n", b""
        else:
            n = str(maxlen).encode()
            self._argc = b"*10\r\n"
            self._tail = b"$6\r\nMAXLEN\r\n$1\r\n~\r\n$%d\r\n%b\r\n" % (len(n), n)
        self._heads: dict[str, bytes] = {}
        self._packer = msgpack.Packer(use_bin_type=True)  # codec.pack's settings
        # codec.human reads a model; building one per row (codec.from_values) costs more than
        # the rest of the replay, so one record per encoder has its values set in place
        # before each call. It never leaves this class.
        self._scratch = trusted(
            MODELS[channel],
            {n: None for n in (*HEAD_FIELDS, *self._fields)} | {"exchange": exchange},
        )
        self.fast = channel is Channel.TRADES and trade_lines_match()
        """Trades' lines are formatted here in one pass (half the cost): only while they are
        what codec.human writes, checked on samples at start (and by the tests)."""

    def key(self, symbol: str) -> str:
        return stream_key(self.exchange, symbol, self.channel, self._prefix)

    def head(self, symbol: str) -> bytes:
        """``*N XADD <key> [MAXLEN ~ n]`` for one market (cached)."""
        head = self._heads.get(symbol)
        if head is None:
            k = self.key(symbol).encode()
            head = self._argc + b"$4\r\nXADD\r\n$%d\r\n%b\r\n" % (len(k), k) + self._tail
            self._heads[symbol] = head
        return head

    def values(self, table: pa.Table) -> list[list[Any]]:
        """Each field's column as Python values (book sides flat), in :func:`record_fields`
        order."""
        out = []
        for name in self._fields:
            if name in _LEVEL_FIELDS:
                out.append(flat_levels(table.column(name)))
            else:
                out.append(column_values(table.column(name), name in self._optional))
        return out

    def entries(self, table: pa.Table) -> tuple[list[bytes], list[bytes]]:
        """The ``d`` payloads and ``h`` lines of the rows of ``table`` (the archive's file
        schema), in its order."""
        return self._entries(table, column_values(table.column("symbol"), False))

    def _entries(self, table: pa.Table, symbols: list[str]) -> tuple[list[bytes], list[bytes]]:
        ts = table.column("ts_ms").to_numpy().tolist()
        recv = table.column("recv_ns").to_numpy().tolist()
        fields = self.values(table)
        n = len(symbols)
        head = (repeat(SCHEMA_VERSION, n), repeat(self._kind, n), repeat(self.exchange, n))
        datas = list(map(self._packer.pack, zip(*head, symbols, ts, recv, *fields, strict=True)))
        return datas, self._human(symbols, ts, recv, fields)

    def _human(
        self, symbols: list[str], ts: list[int], recv: list[int], fields: list[list[Any]]
    ) -> list[bytes]:
        if self.fast:
            return trade_lines(symbols, ts, *fields)
        if self.channel is Channel.BOOK:
            i = self._fields.index("bids"), self._fields.index("asks")
            fields = list(fields)
            for k in i:
                fields[k] = list(map(_pairs, fields[k]))
        names = ("symbol", "ts_ms", "recv_ns", *self._fields)
        scratch, human = self._scratch, codec.human
        update = vars(scratch).update
        out: list[bytes] = []
        add = out.append
        for row in zip(symbols, ts, recv, *fields, strict=True):
            update(zip(names, row, strict=True))
            add(human(scratch).encode())
        return out

    def commands(
        self, table: pa.Table, ms: npt.NDArray[np.int64], seq: npt.NDArray[np.int64]
    ) -> list[bytes]:
        """One ``XADD`` per row of ``table``, with the entry id ``ms-seq`` of the row."""
        symbols = column_values(table.column("symbol"), False)
        datas, lines = self._entries(table, symbols)
        for symbol in set(symbols) - self._heads.keys():
            self.head(symbol)
        heads = list(map(self._heads.__getitem__, symbols))
        ids = [b"%d-%d" % pair for pair in zip(ms.tolist(), seq.tolist(), strict=True)]
        return [
            b"%b$%d\r\n%b\r\n$1\r\nd\r\n$%d\r\n%b\r\n$1\r\nh\r\n$%d\r\n%b\r\n"
            % (head, len(i), i, len(d), d, len(h), h)
            for head, i, d, h in zip(heads, ids, datas, lines, strict=True)
        ]


def trade_lines(
    symbols: list[str],
    ts: list[int],
    tid: list[str],
    price: list[float],
    amount: list[float],
    side: list[str | None],
) -> list[bytes]:
    """:func:`marketbus.codec.human` of many trades (fields in :func:`record_fields` order)."""
    iso = codec.iso_ms
    return [
        f"{s} {sd or '?'} {a!r} @ {p!r} id={i} {iso(t)}".encode()
        for s, t, i, p, a, sd in zip(symbols, ts, tid, price, amount, side, strict=True)
    ]


@cache
def trade_lines_match() -> bool:
    """Whether :func:`trade_lines` writes what the codec writes, on a few samples."""
    samples = [
        Trade(exchange="x", symbol="BTC/USDT", ts_ms=1_700_000_000_123, recv_ns=1, id="42",
              price=0.1 + 0.2, amount=0.0, side=None),
        Trade(exchange="x", symbol="ETH/USDT:USDT", ts_ms=5, recv_ns=2, id="a-1",
              price=1e-9, amount=12345.5, side="sell"),
    ]  # fmt: skip
    ours = trade_lines(
        [t.symbol for t in samples], [t.ts_ms for t in samples], [t.id for t in samples],
        [t.price for t in samples], [t.amount for t in samples], [t.side for t in samples],
    )  # fmt: skip
    return ours == [codec.human(t).encode() for t in samples]
