"""Book resyncs noted where a gap or bad checksum is found, not only where CCXT raises it.

Our book checks (OKX's and Kraken's checksums, Bybit's ``u`` chain, Coinbase's sequence)
drop the book and reject its watch future, as CCXT's own gap path does. A batch watch
(``watch_order_book_for_symbols``) races one future per symbol, and the losers of a race
stay pending in ``client.futures`` with nobody awaiting them: a rejection that lands on one
of those is swallowed. CCXT still resubscribes the book on the next watch, but the worker
never hears of it, so the resync went uncounted and the book's record series was never
restarted. Each check therefore also notes the resync here, per exchange object, and the
watch loop takes the notes of its own symbols after every call (:func:`take`).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

LEDGER_KEY = "_marketbus_book_resyncs"
MAX_NOTES = 1_000
"""Notes kept for symbols no watch loop takes (a book that is no longer watched)."""


def reject_book(
    exchange: Any, client: Any, symbol: str, error: Exception, message_hash: str
) -> None:
    """Note the resync of ``symbol`` and reject its watch future with ``error``."""
    notes: list[tuple[str, Exception]] = exchange.__dict__.setdefault(LEDGER_KEY, [])
    notes.append((symbol, error))
    if len(notes) > MAX_NOTES:
        del notes[: len(notes) - MAX_NOTES]
    client.reject(error, message_hash)


def take(exchange: Any, symbols: Container[str]) -> list[Exception]:
    """The errors noted for ``symbols`` since the last call, oldest first (then forgotten)."""
    notes: list[tuple[str, Exception]] | None = exchange.__dict__.get(LEDGER_KEY)
    if not notes:
        return []
    mine = [e for s, e in notes if s in symbols]
    if mine:
        notes[:] = [(s, e) for s, e in notes if s not in symbols]
    return mine
