"""Every book resync is counted once, also one whose rejection lands on a race's losing future.

The watch below races futures with CCXT's own ``Client.future``/``resolve``/``reject`` and
``Future.race``, its client hooked as the worker hooks each one: only the frames are scripted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from ccxt.async_support.base.ws.client import Client
from ccxt.async_support.base.ws.future import Future
from ccxt.base.errors import ChecksumError, InvalidNonce

from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from publisher.book_resyncs import MAX_NOTES, note, note_book_drops, noting, symbol_of, take
from publisher.worker import ExchangeWorker

A, B, C = "AAA/USDT", "BBB/USDT", "CCC/USDT"
SYMBOLS = [A, B, C]
Frame = Callable[["_Exchange"], None]


class _Done(Exception):
    pass


class _Exchange:
    """A batch book watch as CCXT's: one future per symbol, raced. ``before[i]`` are frames
    handled while call ``i`` waits before racing (a resync's unsubscribe), ``after[i]`` the
    frames that settle its race."""

    has = {"watchOrderBookForSymbols": True}

    def __init__(self, before: dict[int, list[Frame]], after: dict[int, list[Frame]]) -> None:
        ws = Client.__new__(Client)
        ws.futures, ws.rejections = {}, {}
        self.client = noting(self, ws)
        self.orderbooks: dict[str, dict[str, Any]] = {}
        self.before, self.after = before, after
        self.calls = 0

    async def watch_order_book_for_symbols(self, symbols: list[str]) -> Any:
        self.calls += 1
        if self.calls not in self.after:
            raise _Done
        for frame in self.before.get(self.calls, []):
            frame(self)
        await asyncio.sleep(0)
        race = Future.race([self.client.future(h(s)) for s in symbols])
        loop = asyncio.get_running_loop()
        for frame in self.after[self.calls]:
            loop.call_soon(frame, self)
        return await race


def h(symbol: str) -> str:
    return "books:" + symbol  # OKX's spelling


def book(symbol: str) -> Frame:
    def frame(ex: _Exchange) -> None:
        ex.orderbooks[symbol] = {"symbol": symbol, "nonce": ex.calls, "timestamp": 1,
                                 "bids": [[100.0, 1.0]], "asks": [[101.0, 1.0]]}  # fmt: skip
        ex.client.resolve(ex.orderbooks[symbol], h(symbol))

    return frame


def bad_checksum(symbol: str) -> Frame:
    def frame(ex: _Exchange) -> None:
        ex.orderbooks.pop(symbol, None)
        ex.client.reject(ChecksumError(f"{symbol} checksum"), h(symbol))

    return frame


def ccxt_gap(symbol: str) -> Frame:
    def frame(ex: _Exchange) -> None:
        ex.client.reject(InvalidNonce(f"{symbol} gap"), h(symbol))

    return frame


async def _resyncs(ex: _Exchange) -> int:
    cfg = ExchangeSettings(name="okx", symbols=SYMBOLS, channels=[Channel.BOOK])
    worker = ExchangeWorker(cfg, _Sink())
    worker._allowed = frozenset((Channel.BOOK, s) for s in SYMBOLS)
    with pytest.raises(_Done):
        await asyncio.wait_for(worker._watch_books(ex, SYMBOLS), 10)
    return worker.stats.book_resyncs


class _Sink:
    def put(self, record: Any) -> None:
        pass


async def test_a_rejection_swallowed_by_a_losing_future_is_still_counted() -> None:
    # call 1 returns A's book: B's and C's futures lose the race and stay pending, unawaited;
    # B's bad checksum arrives before call 2 races again and rejects B's stale future
    ex = _Exchange(before={2: [bad_checksum(B)]}, after={1: [book(A)], 2: [book(C)]})
    assert await _resyncs(ex) == 1
    assert ex.client.rejections == {}  # CCXT kept nothing to raise: only the note tells


async def test_a_noted_rejection_that_is_raised_counts_once() -> None:
    ex = _Exchange(before={}, after={1: [bad_checksum(A)], 2: [book(B)]})
    assert await _resyncs(ex) == 1


async def test_a_rejection_with_no_future_is_raised_later_and_counts_once() -> None:
    # A's future was resolved and dropped by call 1; the check finds no future, CCXT keeps the
    # error and call 2's race raises it at once
    ex = _Exchange(before={2: [bad_checksum(A)]}, after={1: [book(A)], 2: [], 3: [book(C)]})
    assert await _resyncs(ex) == 1


async def test_ccxts_own_gaps_count_once_each() -> None:
    ex = _Exchange(before={}, after={1: [ccxt_gap(A)], 2: [ccxt_gap(C)], 3: [book(B)]})
    assert await _resyncs(ex) == 2


async def test_a_gap_raised_without_a_note_still_counts() -> None:
    # a rejection that bypassed the hook (or a hash we cannot read) is counted when raised
    ex = _Exchange(before={}, after={1: [ccxt_gap(A)], 2: [book(B)]})
    ex.client.reject = Client.reject.__get__(ex.client)
    assert await _resyncs(ex) == 1


async def test_two_books_of_one_batch_in_one_go_count_twice() -> None:
    ex = _Exchange(before={}, after={1: [bad_checksum(A), bad_checksum(C)], 2: [book(B)]})
    assert await _resyncs(ex) == 2


def test_a_loop_takes_only_its_own_symbols_oldest_first() -> None:
    ex = _Exchange({}, {})
    errors = [ChecksumError(str(i)) for i in range(3)]
    for s, e in zip((A, B, A), errors, strict=True):
        ex.client.reject(e, h(s))
    assert take(ex, {A}) == [errors[0], errors[2]]
    assert take(ex, {A}) == []
    assert take(ex, {B, C}) == [errors[1]]


def test_notes_no_loop_takes_are_bounded() -> None:
    ex = _Exchange({}, {})
    for i in range(MAX_NOTES + 5):
        note(ex, f"X{i}/USDT", ChecksumError("x"))
    assert len(take(ex, {f"X{i}/USDT" for i in range(MAX_NOTES + 5)})) == MAX_NOTES


@pytest.mark.parametrize(
    ("message_hash", "symbol"),
    [
        ("orderbook::BTC/USDT", "BTC/USDT"),  # Binance
        ("books:BTC/USDT:USDT", "BTC/USDT:USDT"),  # OKX swap
        ("orderbook:ETH/USDT", "ETH/USDT"),  # Bybit
        ("level2::BTC/USD", "BTC/USD"),  # Coinbase
        ("orderbook@BTC/USD", "BTC/USD"),  # Kraken
        ("orderbook@BTC/USD#10", "BTC/USD"),
        ("orderbook", None),
    ],
)
def test_the_symbol_of_each_adapters_book_hash(message_hash: str, symbol: str | None) -> None:
    assert symbol_of(message_hash) == symbol


def test_only_book_errors_with_a_hash_are_noted() -> None:
    ex = _Exchange({}, {})
    ex.client.reject(ConnectionError("gone"), h(A))
    ex.client.reject(InvalidNonce("all"))  # no hash: none of CCXT's futures, nothing to note
    assert take(ex, {A}) == []


def test_every_client_an_exchange_makes_notes() -> None:
    class _Ccxt:
        def client(self, url: str) -> Any:
            ws = Client.__new__(Client)
            ws.futures, ws.rejections, ws.url = {}, {}, url
            return ws

    ex = _Ccxt()
    note_book_drops(ex)
    ws = ex.client("wss://x")
    err = InvalidNonce("gap")
    ws.reject(err, "orderbook::BTC/USDT")
    assert take(ex, {"BTC/USDT"}) == [err] and ws.rejections == {"orderbook::BTC/USDT": err}
