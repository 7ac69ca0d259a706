"""The latest order book of a market, and the best bid/ask a bot reads. Pure, no I/O.

A book record is a few hundred numbers, and most of them are replaced before anyone looks:
:class:`LatestBook` keeps the checked, decoded values as they came off the wire (no copy,
no model) and builds the :class:`~marketbus.models.BookTop` only when asked, once per update.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from marketbus import codec
from marketbus.models import BookTop, Channel, Record


@dataclass(frozen=True, slots=True)
class Best:
    """Best bid and ask of one market, and where and when they come from.

    ``bid``/``ask`` (and sizes) are None for an empty side. ``ts_ms`` is the exchange's time
    of the record they come from, ``recv_ns`` the publisher's receive time, ``entry_ms`` the
    Redis write time; ``source`` is ``Channel.BOOK`` or ``Channel.TICKER``.
    """

    bid: float | None
    ask: float | None
    bid_size: float | None
    ask_size: float | None
    ts_ms: int
    recv_ns: int
    entry_ms: int
    source: Channel

    def age_ms(self, now_ms: int) -> int:
        """How old the quote is at ``now_ms``, by exchange time."""
        return now_ms - self.ts_ms

    @classmethod
    def from_row(cls, source: Channel, r: dict[str, Any] | tuple[Any, ...]) -> Best:
        """From a book buffer row (tuple, as :func:`consumers.columns.row_at` builds it) or
        a ticker/book ``RingBuffer.last()`` dict."""
        if isinstance(r, tuple):  # ts, recv, entry, seq, bid, bid_size, ask, ask_size
            ts, recv, entry, _, bid, bsz, ask, asz = r
        else:
            ts, recv, entry = r["ts_ms"], r["recv_ns"], r["entry_ms"]
            bid, bsz, ask, asz = r["bid"], r["bid_size"], r["ask"], r["ask_size"]
        return cls(_opt(bid), _opt(ask), _opt(bsz), _opt(asz), ts, recv, entry, source)


def _opt(v: Any) -> float | None:
    return None if v is None or math.isnan(v) else float(v)


class LatestBook:
    """The latest book record of one market: wire values kept as is, the model built lazily."""

    __slots__ = ("_model", "_row", "_values", "updates")

    def __init__(self) -> None:
        self._values: list[Any] | None = None
        self._row: tuple[Any, ...] | None = None
        self._model: BookTop | None = None
        self.updates = 0

    def update(self, values: list[Any], row: tuple[Any, ...]) -> None:
        """Replace the book: ``values`` from :func:`marketbus.codec.unpack`, ``row`` its
        buffer row (for the times and the top)."""
        self._values = values
        self._row = row
        self._model = None
        self.updates += 1

    def cache(self, model: Record) -> None:
        """The model of the latest values, when a callback already built it."""
        if isinstance(model, BookTop):
            self._model = model

    def __bool__(self) -> bool:
        return self._values is not None

    def model(self) -> BookTop | None:
        """The latest book as a model (built on first use after each update), or None."""
        if self._model is None and self._values is not None:
            built = codec.from_values(Channel.BOOK, self._values)
            assert isinstance(built, BookTop)
            self._model = built
        return self._model

    def best(self) -> Best | None:
        """Top of the latest book, without building the model."""
        return None if self._row is None else Best.from_row(Channel.BOOK, self._row)

    def levels(self) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """``(bids, asks)`` as ``(n, 2)`` float arrays of (price, size), best first."""
        if self._values is None:
            return None
        bids, asks = self._values[7], self._values[8]
        return (
            np.asarray(bids, dtype=np.float64).reshape(-1, 2),
            np.asarray(asks, dtype=np.float64).reshape(-1, 2),
        )
