"""A multi-symbol book watch returns one symbol a call: the others' new states still go out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from marketbus.models import BookTop, Channel, Record
from marketbus.settings import ExchangeSettings
from publisher.worker import ExchangeWorker

SYMBOLS = ["AAA/USDT", "BBB/USDT", "CCC/USDT"]


def _book(symbol: str, nonce: int, bid: float) -> dict[str, Any]:
    return {"symbol": symbol, "nonce": nonce, "timestamp": 1_700_000_000_000 + nonce,
            "bids": [[bid, 1.0]], "asks": [[bid + 1, 1.0]]}  # fmt: skip


class _Client:
    """``watch_order_book_for_symbols`` as CCXT behaves when frames of several symbols were
    handled back to back: every book moved, the call hands back only the first."""

    has = {"watchOrderBookForSymbols": True}

    def __init__(self) -> None:
        self.orderbooks: dict[str, dict[str, Any]] = {}
        self.calls = 0

    async def watch_order_book_for_symbols(self, symbols: list[str]) -> dict[str, Any]:
        self.calls += 1
        if self.calls > 2:
            raise _Done  # ends the watch loop: anything else it raised would show instead
        for i, s in enumerate(symbols):
            self.orderbooks[s] = _book(s, self.calls * 10 + i, 100.0 * self.calls + i)
        return self.orderbooks[symbols[0]]


class _Done(Exception):
    pass


class _Sink:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def put(self, record: Record) -> None:
        self.records.append(record)


async def test_every_moved_book_of_the_batch_is_published() -> None:
    sink = _Sink()
    cfg = ExchangeSettings(name="binance", symbols=SYMBOLS, channels=[Channel.BOOK])
    worker = ExchangeWorker(cfg, sink)
    worker._allowed = frozenset((Channel.BOOK, s) for s in SYMBOLS)
    client = _Client()
    with pytest.raises(_Done):
        await asyncio.wait_for(worker._watch_books(client, SYMBOLS), 30)
    books = [r for r in sink.records if isinstance(r, BookTop)]
    # two returns, each after all three books moved: 6 states, not the 2 returned
    assert sorted((b.symbol, b.seq) for b in books) == sorted(
        (s, c * 10 + i) for c in (1, 2) for i, s in enumerate(SYMBOLS)
    )
    latest = {b.symbol: b.seq for b in books}
    assert latest == {s: 20 + i for i, s in enumerate(SYMBOLS)}
