"""Book resyncs noted where a gap or bad checksum is found, not only where CCXT raises it.

A gap or bad checksum drops the book and rejects its watch future with ``InvalidNonce``
(``ChecksumError`` is one), in CCXT's own code and in our checks alike. A batch watch
(``watch_order_book_for_symbols``) races one future per symbol, and the losers of a race
stay pending in ``client.futures`` with nobody awaiting them: a rejection that lands on one
of those is swallowed. CCXT still resubscribes the book on the next watch, but the worker
never heard of it, so the resync went uncounted and the book's record series was never
restarted. So every websocket client's ``reject`` notes such errors here, per exchange
object and symbol, and the watch loop takes the notes of its own symbols after every call
(:func:`take`).
"""

from __future__ import annotations

from collections.abc import Container
from typing import Any

from ccxt.base.errors import InvalidNonce

LEDGER_KEY = "_marketbus_book_resyncs"
MAX_NOTES = 1_000
"""Notes kept for symbols no watch loop takes (a book that is no longer watched)."""


def symbol_of(message_hash: str) -> str | None:
    """The symbol of a book's message hash, in the spellings CCXT's adapters use:
    ``orderbook::BTC/USDT`` (Binance), ``books:BTC/USDT:USDT`` (OKX), ``orderbook:...``
    (Bybit), ``level2::...`` (Coinbase), ``orderbook@BTC/USD#10`` (Kraken)."""
    for sep in ("::", ":", "@"):
        _, found, rest = message_hash.partition(sep)
        if found and rest:
            return rest.split("#", 1)[0]
    return None


def note(exchange: Any, symbol: str, error: Exception) -> None:
    """Note that ``symbol``'s book was dropped for ``error``."""
    notes: list[tuple[str, Exception]] = exchange.__dict__.setdefault(LEDGER_KEY, [])
    notes.append((symbol, error))
    if len(notes) > MAX_NOTES:
        del notes[: len(notes) - MAX_NOTES]


def noting(exchange: Any, ws: Any) -> Any:
    """``ws`` (a CCXT websocket client of ``exchange``) noting each book it rejects."""
    if getattr(ws, "_marketbus_noting", False):
        return ws
    original = ws.reject

    def reject(result: Any, message_hash: Any = None) -> Any:
        if message_hash is not None and isinstance(result, InvalidNonce):
            symbol = symbol_of(str(message_hash))
            if symbol is not None:
                note(exchange, symbol, result)
        return original(result, message_hash)

    ws.reject = reject
    ws._marketbus_noting = True
    return ws


def note_book_drops(exchange: Any) -> None:
    """Every websocket client ``exchange`` creates notes the books it drops."""
    make_client = exchange.client

    def noting_client(url: str) -> Any:
        return noting(exchange, make_client(url))

    exchange.client = noting_client


def take(exchange: Any, symbols: Container[str]) -> list[Exception]:
    """The errors noted for ``symbols`` since the last call, oldest first (then forgotten)."""
    notes: list[tuple[str, Exception]] | None = exchange.__dict__.get(LEDGER_KEY)
    if not notes:
        return []
    mine = [e for s, e in notes if s in symbols]
    if mine:
        notes[:] = [(s, e) for s, e in notes if s not in symbols]
    return mine
