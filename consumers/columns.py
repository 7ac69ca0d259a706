"""Ring-buffer columns per channel, and the pure mapping from decoded values to a row.

Rows carry three times: ``ts_ms`` (exchange event), ``recv_ns`` (publisher receive) and
``entry_ms`` (Redis entry id, the server's write time): latency figures come from these.

A book row is the top of the book only (best bid and ask with sizes, NaN for an empty side,
``seq`` -1 when the exchange gives none): the time series bots chart and join. The full
levels of the latest book are kept apart (:class:`consumers.books.LatestBook`).
A candle row is one candle *update* as streamed; :mod:`consumers.exchange_candles` collapses
them to one row per interval start. Derivatives rows (``funding``, ``mark``, ``open_interest``,
``liquidations``) are their records' values as they are; a missing float is NaN and a missing
time -1 (:data:`NO_TIME`), as for ``seq``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from consumers.ringbuffer import Column
from marketbus.codec import TICKER_FIELDS
from marketbus.models import INTERVALS_MS, Channel

_NAN = math.nan

NO_SEQ = -1
"""``seq`` column value of a book whose exchange gives no sequence number."""
NO_TIME = -1
"""An int64 time column's value where the exchange gives none (a funding record's
``next_funding_ms`` or ``interval_ms``)."""

TIME_COLUMNS = (Column("ts_ms", "int64"), Column("recv_ns", "int64"), Column("entry_ms", "int64"))

COLUMNS: dict[Channel, tuple[Column, ...]] = {
    Channel.TRADES: (
        *TIME_COLUMNS,
        Column("price", "float64"),
        Column("amount", "float64"),
        Column("side", "category", categories=("buy", "sell")),
        # exported as strings; Binance's and OKX's decimal ids are stored as int64
        Column("id", "int_string"),
    ),
    Channel.TICKER: (*TIME_COLUMNS, *(Column(f, "float64") for f in TICKER_FIELDS)),
    Channel.BOOK: (
        *TIME_COLUMNS,
        Column("seq", "int64"),
        Column("bid", "float64"),
        Column("bid_size", "float64"),
        Column("ask", "float64"),
        Column("ask_size", "float64"),
    ),
    Channel.CANDLES: (
        *TIME_COLUMNS,
        Column("interval", "category", categories=tuple(INTERVALS_MS)),
        Column("open_ms", "int64"),
        *(Column(f, "float64") for f in ("open", "high", "low", "close", "volume")),
        Column("quote_volume", "float64"),
        Column("closed", "bool"),
    ),
    Channel.FUNDING: (
        *TIME_COLUMNS,
        Column("rate", "float64"),
        Column("next_funding_ms", "int64"),
        Column("predicted_rate", "float64"),
        Column("interval_ms", "int64"),
    ),
    Channel.MARK: (
        *TIME_COLUMNS,
        Column("mark_price", "float64"),
        Column("index_price", "float64"),
    ),
    Channel.OPEN_INTEREST: (
        *TIME_COLUMNS,
        Column("contracts", "float64"),
        Column("value", "float64"),
    ),
    Channel.LIQUIDATIONS: (
        *TIME_COLUMNS,
        Column("side", "category", categories=("buy", "sell")),
        Column("price", "float64"),
        Column("amount", "float64"),
    ),
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
    if channel is Channel.TICKER:
        return (*head, *(_NAN if v is None else float(v) for v in values[6:]))
    if channel is Channel.BOOK:
        seq, bids, asks = values[6:]
        return (
            *head,
            NO_SEQ if seq is None else seq,
            *((float(bids[0]), float(bids[1])) if bids else (_NAN, _NAN)),
            *((float(asks[0]), float(asks[1])) if asks else (_NAN, _NAN)),
        )
    if channel is Channel.CANDLES:
        interval, open_ms, o, h, low, c, v, qv, closed = values[6:]
        return (
            *head, interval, open_ms, float(o), float(h), float(low), float(c), float(v),
            _NAN if qv is None else float(qv), closed,
        )  # fmt: skip
    return (*head, *_derivative_values(channel, values[6:]))


def _derivative_values(channel: Channel, v: list[Any]) -> tuple[Any, ...]:
    if channel is Channel.FUNDING:
        rate, next_ms, predicted, interval = v
        return (
            float(rate),
            NO_TIME if next_ms is None else next_ms,
            _NAN if predicted is None else float(predicted),
            NO_TIME if interval is None else interval,
        )
    if channel is Channel.LIQUIDATIONS:
        side, price, amount = v
        return (side, float(price), float(amount))
    # mark (mark, index) and open_interest (contracts, value): a required float, an optional one
    first, second = v
    return (float(first), _NAN if second is None else float(second))


BATCH_CHANNELS = frozenset({Channel.TRADES, Channel.TICKER})
"""Channels :func:`batch_columns` builds (others go row by row: :func:`row_at`)."""


def batch_columns(
    channel: Channel, cols: list[tuple[Any, ...]], entry_ms: npt.NDArray[np.int64]
) -> dict[str, Any]:
    """Buffer columns of a batch from :func:`marketbus.codec.unpack_columns` values (for
    ``RingBuffer.extend_columns``): the rows :func:`row_at` would build, column-wise."""
    head: dict[str, Any] = {
        "ts_ms": np.array(cols[4], dtype=np.int64),
        "recv_ns": np.array(cols[5], dtype=np.int64),
        "entry_ms": entry_ms,
    }
    if channel is Channel.TRADES:
        tid, price, amount, side = cols[6:]
        return {
            **head,
            "price": np.array(price, dtype=np.float64),
            "amount": np.array(amount, dtype=np.float64),
            "side": side,
            "id": tid,
        }
    if channel is Channel.TICKER:  # None becomes NaN
        return {
            **head,
            **{
                f: np.array(c, dtype=np.float64)
                for f, c in zip(TICKER_FIELDS, cols[6:], strict=True)
            },
        }
    raise ValueError(f"no batch columns for {channel.value}: use row_at")
