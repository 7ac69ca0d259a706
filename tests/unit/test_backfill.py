"""The pure backfill plan: where each REST page starts and when the gap is closed."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from publisher import backfill as bf
from publisher.backfill import MAX_SAME_MS_LIMIT, BackfillMode, NextPage, TradeMark


def test_binance_aggtrades_page_by_id() -> None:
    mode = bf.backfill_mode("binance", "aggTrade", True)
    assert mode is BackfillMode.FROM_ID
    assert bf.backfill_mode("binance", "trade", True) is None
    assert bf.backfill_mode("bybit", "aggTrade", True) is BackfillMode.SINCE
    assert bf.backfill_mode("bybit", "aggTrade", False) is None
    assert bf.backfill_mode("okx", "aggTrade", True) is BackfillMode.BACK_BY_ID
    assert bf.backfill_mode("okx", "aggTrade", False) is None
    assert bf.first_cursor(mode, None) is None
    assert bf.first_cursor(mode, TradeMark(None, 1_000)) is None
    cursor = bf.first_cursor(mode, TradeMark(41, 1_000))
    assert cursor == 42
    req = bf.request_for(mode, "BTC/USDT", 42)
    assert (req.since, req.limit, req.params) == (None, 1000, {"fromId": 42})
    full = [TradeMark(i, 1_000 + i) for i in range(42, 52)]
    # a full page short of the first held live trade: go on from the next id
    assert bf.next_page(mode, 42, full, TradeMark(60, 0), limit=10, base_limit=10) == NextPage(
        52, 10
    )
    # reached the held live trade: done
    assert bf.next_page(mode, 42, full, TradeMark(50, 0), limit=10) is None
    # a short page: REST has nothing more
    assert bf.next_page(mode, 42, full[:3], None, limit=10) is None
    assert bf.next_page(mode, 42, [], None) is None


def test_by_time_the_next_page_starts_at_the_last_millisecond() -> None:
    mode = BackfillMode.SINCE
    assert bf.first_cursor(mode, TradeMark(None, 5_000)) == 5_000
    assert bf.request_for(mode, "BTC/USDT", 5_000, 10).since == 5_000
    later = [TradeMark(None, 5_000 + i) for i in range(10)]
    assert bf.next_page(mode, 5_000, later, None, limit=10, base_limit=10) == NextPage(5_009, 10)
    assert bf.next_page(mode, 5_000, later, TradeMark(None, 5_005), limit=10) is None
    assert bf.next_page(mode, 5_000, later[:4], None, limit=10) is None


def test_a_full_millisecond_is_asked_again_with_a_larger_page_not_stepped_over() -> None:
    """Before: the cursor moved to the next millisecond and the trades of that millisecond
    past the page limit were never fetched."""
    mode = BackfillMode.SINCE
    same_ms = [TradeMark(None, 5_000)] * 10
    nxt = bf.next_page(mode, 5_000, same_ms, None, limit=10, base_limit=10)
    assert nxt == NextPage(5_000, 20)  # the same millisecond, twice the page
    # the larger page held all of that millisecond and went on: back to the normal page
    more = [TradeMark(None, 5_000)] * 15 + [TradeMark(None, 5_001)] * 5
    assert bf.next_page(mode, 5_000, more, None, limit=20, base_limit=10) == NextPage(5_001, 10)


def test_a_millisecond_larger_than_any_page_is_skipped_and_reported() -> None:
    mode = BackfillMode.SINCE
    full = [TradeMark(None, 7)] * MAX_SAME_MS_LIMIT
    assert bf.next_page(mode, 7, full, None, limit=MAX_SAME_MS_LIMIT) == NextPage(
        8, bf.DEFAULT_LIMIT, skipped_ms=7
    )
    # the exchange capped the doubled page at its own maximum: no use asking more
    capped = [TradeMark(None, 7)] * 1_000
    assert bf.next_page(mode, 7, capped, None, limit=2_000) == NextPage(
        8, bf.DEFAULT_LIMIT, skipped_ms=7
    )


@settings(max_examples=200, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=30),
    limit=st.integers(min_value=1, max_value=25),
)
def test_paging_by_time_fetches_every_trade(counts: list[int], limit: int) -> None:
    """Against an exchange that serves as many trades from ``since`` on as asked: every
    trade is fetched (overlaps allowed, the tracker drops them), and the plan ends."""
    trades = [(ms, i) for ms, n in enumerate(counts) for i in range(n)]
    if not trades:
        return
    seen: set[tuple[int, int]] = set()
    nxt: NextPage | None = NextPage(0, limit)
    steps = 0
    while nxt is not None:
        steps += 1
        assert steps < 10_000
        page = [t for t in trades if t[0] >= nxt.cursor][: nxt.limit]
        seen.update(page)
        marks = [TradeMark(None, ms) for ms, _ in page]
        nxt = bf.next_page(BackfillMode.SINCE, nxt.cursor, marks, None, nxt.limit, limit)
    assert seen == set(trades)


def test_okx_pages_back_by_trade_id_until_the_last_published() -> None:
    mode = BackfillMode.BACK_BY_ID
    assert bf.first_cursor(mode, TradeMark(500, 9)) == 500
    assert bf.first_cursor(mode, TradeMark(None, 9)) is None  # no id: nothing to page back to
    req = bf.back_request("BTC/USDT", 900)
    assert (req.since, req.limit) == (None, 100)
    assert req.params == {"method": "publicGetMarketHistoryTrades", "after": "900"}
    assert "after" not in bf.back_request("BTC/USDT", None).params  # the latest
    page = list(range(800, 900))
    assert bf.back_next(page, 500) == 800  # a full page above the last published: go on
    assert bf.back_next(list(range(450, 550)), 500) is None  # reached it
    assert bf.back_next(page[:40], 500) is None  # a short page: nothing older
    assert bf.back_next([], 500) is None
    assert bf.back_next(page, 500, collected=bf.MAX_BACK_TRADES) is None  # the bound
    # ids not older than the page's start are no trades of it: they end the paging
    odd = list(range(850, 900)) + list(range(10**12, 10**12 + 50))
    assert bf.back_next(odd, 500, before_id=900) is None
    assert bf.in_back_page(899, 500, 900) and not bf.in_back_page(10**12, 500, 900)
    assert not bf.in_back_page(500, 500, None) and bf.in_back_page(501, 500, None)


@settings(max_examples=200, deadline=None)
@given(
    total=st.integers(min_value=0, max_value=1_500),
    last=st.integers(min_value=0, max_value=1_500),
    start=st.one_of(st.none(), st.integers(min_value=0, max_value=1_600)),
)
def test_paging_back_fetches_every_trade_of_the_gap(
    total: int, last: int, start: int | None
) -> None:
    """Against an exchange holding trade ids 1..total that serves the 100 before an id
    (newest first): the trades between the last published and the first held live one
    (``start``; None: no live trade yet) are all fetched, nothing older is asked for once
    the gap is closed, and the plan ends."""
    trades = list(range(1, total + 1))
    want = {t for t in trades if t > last and (start is None or t < start)}
    got: set[int] = set()
    before, pages = start, 0
    while True:
        pages += 1
        assert pages < 1_000
        req = bf.back_request("X", before)
        older = [t for t in trades if before is None or t < before][::-1][: req.limit]
        got.update(t for t in older if bf.in_back_page(t, last, before))
        nxt = bf.back_next(older, last, req.limit, len(got), before)
        if nxt is None:
            break
        before = nxt
    assert got == want
