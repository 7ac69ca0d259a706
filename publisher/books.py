"""Order books: CCXT's synchronized book -> top-N :class:`BookTop` records. Pure, no I/O.

CCXT keeps each book right (Binance: REST snapshot + diff-depth with the update-id
rules; OKX: snapshot + updates with seqId continuity, plus the CRC32 checksum that we
verify in front of CCXT: ``publisher.okx_books``; Bybit: snapshot + deltas whose ``u``
chain we check in front of CCXT, which does not: ``publisher.bybit``) and raises
``InvalidNonce``/``ChecksumError`` on a gap, after which the next watch call resubscribes
and refetches. What is left for us: cut the top N levels, never publish a crossed or
disordered book, skip updates that leave the top N unchanged, and throttle to at most one
record per interval per market, trailing (the last state always goes out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from marketbus.models import BookTop
from publisher.normalize import NormalizeError

Levels = tuple[tuple[float, float], ...]


def top_levels(side: Sequence[Sequence[Any]], depth: int) -> Levels:
    """The first ``depth`` ``(price, size)`` pairs of a CCXT book side (already sorted)."""
    return tuple((float(lv[0]), float(lv[1])) for lv in side[:depth])


def book_from_ccxt(
    exchange: str, symbol: str, book: dict[str, Any], depth: int, recv_ns: int
) -> BookTop:
    """A validated top-``depth`` record of a CCXT order book (crossed/disordered -> error)."""
    ts = book.get("timestamp")
    nonce = book.get("nonce")
    try:
        return BookTop(
            exchange=exchange,
            symbol=symbol,
            ts_ms=int(ts) if isinstance(ts, int | float) and ts > 0 else recv_ns // 1_000_000,
            recv_ns=recv_ns,
            seq=int(nonce) if isinstance(nonce, int) and nonce >= 0 else None,
            bids=top_levels(book.get("bids") or (), depth),
            asks=top_levels(book.get("asks") or (), depth),
        )
    except (ValidationError, TypeError, ValueError, IndexError) as e:
        raise NormalizeError(f"bad {exchange} {symbol} book: {_first_line(e)}") from e


def _first_line(e: Exception) -> str:
    text = str(e)
    lines = text.splitlines()
    return " ".join(lines[:3]) if lines else text


@dataclass
class BookStats:
    published: int = 0
    unchanged: int = 0
    throttled: int = 0
    invalid: int = 0
    resyncs: int = 0


@dataclass
class BookGate:
    """Decides which book records go out: changed top N only, at most one per interval.

    ``offer()`` returns the record to publish now, or None (unchanged, or held back by
    the throttle: then ``due()`` hands it out once the interval has passed).
    """

    interval_ms: int = 0
    stats: BookStats = field(default_factory=BookStats)
    _last: dict[str, tuple[Levels, Levels]] = field(default_factory=dict)
    _last_sent_ms: dict[str, int] = field(default_factory=dict)
    _pending: dict[str, BookTop] = field(default_factory=dict)

    def offer(self, record: BookTop, now_ms: int) -> BookTop | None:
        top = (record.bids, record.asks)
        if self._last.get(record.symbol) == top:
            self.stats.unchanged += 1
            return None
        self._last[record.symbol] = top
        if self.interval_ms > 0:
            sent = self._last_sent_ms.get(record.symbol)
            if sent is not None and now_ms - sent < self.interval_ms:
                if record.symbol in self._pending:
                    self.stats.throttled += 1  # the one it replaces is never published
                self._pending[record.symbol] = record
                return None
        self._pending.pop(record.symbol, None)
        self._last_sent_ms[record.symbol] = now_ms
        self.stats.published += 1
        return record

    def due(self, now_ms: int) -> list[BookTop]:
        """Held-back records whose interval has passed (the latest state of each market)."""
        out = []
        for symbol, record in list(self._pending.items()):
            if now_ms - self._last_sent_ms.get(symbol, 0) >= self.interval_ms:
                del self._pending[symbol]
                self._last_sent_ms[symbol] = now_ms
                self.stats.published += 1
                out.append(record)
        return out

    def forget(self, symbol: str) -> None:
        """After a resync or an unsubscribe: the next book is published whatever it holds."""
        self._last.pop(symbol, None)
        self._pending.pop(symbol, None)
        self._last_sent_ms.pop(symbol, None)
