"""Ring-buffer columns per channel, and the pure mapping from decoded values to a row.

Rows carry three times: ``ts_ms`` (exchange event), ``recv_ns`` (publisher receive) and
``entry_ms`` (Redis entry id, the server's write time): latency figures come from these.
"""

from __future__ import annotations

import math
from typing import Any

from consumers.ringbuffer import Column
from marketbus.codec import TICKER_FIELDS
from marketbus.models import Channel

_NAN = math.nan

TIME_COLUMNS = (Column("ts_ms", "int64"), Column("recv_ns", "int64"), Column("entry_ms", "int64"))

COLUMNS: dict[Channel, tuple[Column, ...]] = {
    Channel.TRADES: (
        *TIME_COLUMNS,
        Column("price", "float64"),
        Column("amount", "float64"),
        Column("side", "category", categories=("buy", "sell")),
        Column("id", "string"),
    ),
    Channel.TICKER: (*TIME_COLUMNS, *(Column(f, "float64") for f in TICKER_FIELDS)),
}


def entry_ms(entry_id: bytes | str) -> int:
    """The millisecond part of a Redis stream id (``1700000000000-3`` -> 1700000000000)."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    return int(text.partition("-")[0])


def row(channel: Channel, values: list[Any], entry_id: bytes | str) -> tuple[Any, ...]:
    """A buffer row from :func:`marketbus.codec.unpack` values (missing floats become NaN)."""
    return row_at(channel, values, entry_ms(entry_id))


def row_at(channel: Channel, values: list[Any], entry_ms: int) -> tuple[Any, ...]:
    """:func:`row` with the entry id's milliseconds already parsed."""
    head = (values[4], values[5], entry_ms)
    if channel is Channel.TRADES:
        tid, price, amount, side = values[6:]
        return (*head, float(price), float(amount), side, tid)
    return (*head, *(_NAN if v is None else float(v) for v in values[6:]))
