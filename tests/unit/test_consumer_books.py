"""The latest book of a market and the best bid/ask, from decoded wire values (no Redis)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from consumers.books import Best, LatestBook
from consumers.columns import row_at
from marketbus import codec
from marketbus.models import BookTop, Channel


def book(i: int, levels: int = 3, exchange: str = "okx") -> BookTop:
    mid = 100.0 + i
    return BookTop(
        exchange=exchange,
        symbol="BTC/USDT",
        ts_ms=1_000 + i,
        recv_ns=2_000 + i,
        seq=i,
        bids=tuple((mid - 0.5 - k, 1.0 + k) for k in range(levels)),
        asks=tuple((mid + 0.5 + k, 2.0 + k) for k in range(levels)),
    )


def feed(lb: LatestBook, record: BookTop, entry_ms: int = 10) -> None:
    channel, values = codec.unpack(codec.pack(record))
    lb.update(values, row_at(channel, values, entry_ms))


def test_nothing_before_the_first_book() -> None:
    lb = LatestBook()
    assert not lb
    assert lb.model() is None and lb.best() is None and lb.levels() is None


def test_latest_book_is_the_last_update_and_equals_the_published_model() -> None:
    lb = LatestBook()
    for i in range(5):
        feed(lb, book(i))
    assert lb and lb.updates == 5
    assert lb.model() == book(4)


def test_model_is_built_once_per_update() -> None:
    lb = LatestBook()
    feed(lb, book(1))
    first = lb.model()
    assert lb.model() is first  # cached
    feed(lb, book(2))
    second = lb.model()
    assert second is not first and second == book(2)


def test_a_model_a_callback_built_is_reused() -> None:
    lb = LatestBook()
    record = book(1)
    feed(lb, record)
    lb.cache(record)
    assert lb.model() is record


def test_best_comes_from_the_row_with_times() -> None:
    lb = LatestBook()
    feed(lb, book(3), entry_ms=77)
    assert lb.best() == Best(
        bid=102.5, ask=103.5, bid_size=1.0, ask_size=2.0, ts_ms=1_003, recv_ns=2_003,
        entry_ms=77, source=Channel.BOOK,
    )  # fmt: skip


def test_empty_side_is_none_in_best_and_empty_in_levels() -> None:
    lb = LatestBook()
    feed(
        lb,
        BookTop(exchange="okx", symbol="BTC/USDT", ts_ms=1, recv_ns=2, bids=((5.0, 1.0),), asks=()),
    )
    best = lb.best()
    assert best is not None and best.bid == 5.0 and best.ask is None and best.ask_size is None
    levels = lb.levels()
    assert levels is not None
    assert levels[0].tolist() == [[5.0, 1.0]] and levels[1].shape == (0, 2)


def test_levels_as_arrays() -> None:
    lb = LatestBook()
    feed(lb, book(0, levels=4))
    levels = lb.levels()
    assert levels is not None
    bids, asks = levels
    assert bids.dtype == np.float64 and bids.shape == (4, 2)
    assert bids[:, 0].tolist() == [99.5, 98.5, 97.5, 96.5]
    assert asks[:, 1].tolist() == [2.0, 3.0, 4.0, 5.0]


def test_best_from_a_ticker_row_treats_nan_as_missing() -> None:
    last = {"ts_ms": 5, "recv_ns": 6, "entry_ms": 7, "bid": 1.5, "ask": math.nan,
            "bid_size": math.nan, "ask_size": 2.0, "last": 1.6}  # fmt: skip
    best = Best.from_row(Channel.TICKER, last)
    assert (best.bid, best.ask, best.bid_size, best.ask_size) == (1.5, None, None, 2.0)
    assert best.source is Channel.TICKER and best.age_ms(1_005) == 1_000


@given(st.lists(st.integers(0, 1_000), min_size=1, max_size=30))
def test_latest_book_after_any_sequence_of_updates(seq: list[int]) -> None:
    lb = LatestBook()
    for i in seq:
        feed(lb, book(i, levels=1 + i % 5))
    assert lb.model() == book(seq[-1], levels=1 + seq[-1] % 5)
    best = lb.best()
    assert best is not None and best.ts_ms == 1_000 + seq[-1]
