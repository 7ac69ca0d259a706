"""Archived rows back into stream entries, as Redis would send them. Pure.

A range the consumer fills from the archive goes through the same ingest as a Redis reply
(ring buffer, books, candles, callbacks with the same model objects), so each row becomes
what the publisher wrote: the codec's ``d`` payload, packed from the record the row holds
(:func:`marketbus.codec.pack`), under its entry id. The archive keeps every field of a record
(docs/history.md): a book's levels in its ``bids``/``asks`` list columns, an absent value as
the ring buffer stores it (NaN for a float, ``-1`` for a book without ``seq``, null for a
trade without side), which this turns back into None.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pyarrow as pa

from marketbus import codec
from marketbus.models import SCHEMA_VERSION, Channel

NO_SEQ = -1  # consumers.columns.NO_SEQ: a book row without exchange sequence


def _codec_fields() -> dict[Channel, tuple[str, ...]]:
    """Each channel's record fields after the head, in the codec's order (``TRADE_FIELDS``
    for ``trades``...): channels added later are found by the same naming."""
    out: dict[Channel, tuple[str, ...]] = {}
    for ch in Channel:
        for name in (f"{ch.name}_FIELDS", f"{ch.name.removesuffix('S')}_FIELDS"):
            fields = getattr(codec, name, None)
            if isinstance(fields, tuple):
                out[ch] = fields
                break
    return out


FIELDS = _codec_fields()
"""The record fields after the head, in the codec's order, per channel this can rebuild
(the archive names its columns after them)."""


def _nan_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


def _seq(v: Any) -> Any:
    return None if v is None or v == NO_SEQ else v


def _levels(v: Any) -> list[float]:
    out: list[float] = []
    for level in v or ():
        out += (level["price"], level["size"])
    return out


_CONVERT: dict[str, Callable[[Any], Any]] = {"seq": _seq, "bids": _levels, "asks": _levels}


def fillable(channel: Channel, schema: pa.Schema) -> bool:
    """Whether rows of ``channel`` in a table of ``schema`` can be turned back into records."""
    fields = FIELDS.get(channel)
    names = set(schema.names)
    return fields is not None and {"entry_id", "symbol", "ts_ms", "recv_ns", *fields} <= names


def entries_of(channel: Channel, exchange: str, table: pa.Table) -> list[list[Any]]:
    """``[id, [b"d", payload]]`` per row of a :meth:`consumers.history.History.read_ids`
    table (its order kept), as a raw ``XREAD`` reply holds them."""
    fields = FIELDS[channel]
    n = table.num_rows
    if n == 0:
        return []
    ids = table.column("entry_id").to_pylist()
    symbols = table.column("symbol").to_pylist()
    ts = table.column("ts_ms").to_pylist()
    recv = table.column("recv_ns").to_pylist()
    cols = [list(map(_CONVERT.get(f, _nan_none), table.column(f).to_pylist())) for f in fields]
    kind = codec.KIND_OF[channel]
    out: list[list[Any]] = []
    for i in range(n):
        values = [SCHEMA_VERSION, kind, exchange, symbols[i], ts[i], recv[i]]
        values += [c[i] for c in cols]
        record = codec.from_values(channel, values)
        out.append([ids[i].encode(), [codec.DATA_FIELD.encode(), codec.pack(record)]])
    return out
