"""OKX order-book checksums, which ccxt 4.5.90 does not verify.

OKX sends a CRC32 with every ``books`` snapshot and update: over the top 25 levels,
interleaved ``bidPx:bidSz:askPx:askSz:...`` (the longer side goes on alone), on the
strings exactly as sent, as a signed 32-bit integer. CCXT parses levels into floats and
drops the strings, so the check needs its own copy of the book in strings: this module
keeps one per instrument (pure), and :func:`checked_book_message` plugs it in front of
CCXT's ``handle_order_book_message``. A mismatch takes CCXT's own gap path (the book is
dropped, the watch raises ``ChecksumError``, the next watch resubscribes and starts from a
fresh snapshot), so the worker counts a resync and never publishes the broken book.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from ccxt.base.errors import ChecksumError

DEPTH = 25
MAX_LEVELS = 400
"""Levels a side of OKX's ``books`` channel holds (its snapshot depth). Updates never delete
the levels a moving price pushes past that depth, so without this bound the copy grew for
as long as the connection lived; the checksum only reads the top 25."""
BOOKS_KEY = "_marketbus_okx_books"


class _Side:
    """Levels of one side as sent; ``keys`` ascending (bids keep negated prices)."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.keys: list[float] = []
        self.levels: dict[float, tuple[str, str]] = {}

    def apply(self, levels: Iterable[Sequence[Any]]) -> None:
        for lv in levels:
            px, sz = str(lv[0]), str(lv[1])
            key = self.sign * float(px)
            if float(sz) == 0.0:
                if self.levels.pop(key, None) is not None:
                    del self.keys[bisect.bisect_left(self.keys, key)]
                continue
            if key not in self.levels:
                bisect.insort(self.keys, key)
            self.levels[key] = (px, sz)
        if len(self.keys) > MAX_LEVELS:  # the farthest levels: beyond the subscription's depth
            for key in self.keys[MAX_LEVELS:]:
                del self.levels[key]
            del self.keys[MAX_LEVELS:]

    def top(self, n: int) -> list[tuple[str, str]]:
        return [self.levels[k] for k in self.keys[:n]]


class StringBook:
    """One instrument's book in OKX's own strings."""

    __slots__ = ("asks", "bids")

    def __init__(self) -> None:
        self.bids = _Side(-1.0)
        self.asks = _Side(1.0)

    def apply(self, message: dict[str, Any]) -> None:
        self.bids.apply(message.get("bids") or ())
        self.asks.apply(message.get("asks") or ())

    def checksum(self) -> int:
        return checksum(self.bids.top(DEPTH), self.asks.top(DEPTH))


def checksum(bids: Sequence[tuple[str, str]], asks: Sequence[tuple[str, str]]) -> int:
    """OKX's signed CRC32 over the top levels, interleaved bid then ask."""
    parts: list[str] = []
    for i in range(max(len(bids), len(asks))):
        if i < len(bids):
            parts += bids[i]
        if i < len(asks):
            parts += asks[i]
    crc = zlib.crc32(":".join(parts).encode())
    return crc - (1 << 32) if crc >= 1 << 31 else crc


def checked_book_message(
    original: Any,
) -> Any:
    """A ``handle_order_book_message`` that verifies OKX's checksum before CCXT applies it."""

    def handle_order_book_message(
        self: Any,
        client: Any,
        message: dict[str, Any],
        orderbook: Any,
        message_hash: str,
        market: Any = None,
    ) -> Any:
        expected = message.get("checksum")
        books: dict[str, StringBook] = self.__dict__.setdefault(BOOKS_KEY, {})
        inst = str(message.get("instId") or orderbook.get("symbol") or message_hash)
        if orderbook.get("nonce") is None:  # a snapshot: CCXT made a fresh book for it
            books[inst] = StringBook()
        book = books.get(inst)
        if book is None or not isinstance(expected, int | str):
            return original(self, client, message, orderbook, message_hash, market)
        book.apply(message)
        got = book.checksum()
        try:
            want = int(expected)
        except ValueError:
            want = got  # an unreadable checksum is not a reason to drop the book
        if got != want:
            books.pop(inst, None)
            symbol = orderbook.get("symbol")
            client.subscriptions.pop(message_hash, None)
            if symbol is not None:
                self.orderbooks.pop(symbol, None)
            error = ChecksumError(f"okx {symbol} book checksum {want} != {got}: resyncing")
            client.reject(error, message_hash)
            return orderbook
        return original(self, client, message, orderbook, message_hash, market)

    return handle_order_book_message
