"""``fake_exchange.history``: the synthetic past the fakes' history endpoints serve. Pure."""

from __future__ import annotations

import math
from decimal import Decimal
from itertools import islice, pairwise

import pytest

from fake_exchange.history import (
    DAY_MS,
    HISTORY_ID_BASE,
    HOUR_MS,
    ORIGIN_MS,
    HistTrade,
    SyntheticHistory,
    merge_candles,
    plain_text,
    units_text,
)

END = 1_796_083_200_000  # 2026-12-01T00:00Z: the history ends here
DAY = END - 3 * DAY_MS
SYM = "BTC/USDT"


def hist(**kw: object) -> SyntheticHistory:
    return SyntheticHistory("binance", END, **kw)  # type: ignore[arg-type]


def test_the_same_past_from_every_instance_whatever_its_end() -> None:
    a = list(hist().between(SYM, DAY, DAY + 2 * HOUR_MS))
    b = list(
        SyntheticHistory("binance", END + 5 * DAY_MS, cache_hours=1).between(
            SYM, DAY, DAY + 2 * HOUR_MS
        )
    )
    assert a == b and a
    okx = list(SyntheticHistory("okx", END).between(SYM, DAY, DAY + HOUR_MS))
    assert okx and okx != [t for t in a if t.ts < DAY + HOUR_MS]  # its own past


def test_a_day_of_trades_ids_consecutive_times_ordered_and_within_range() -> None:
    h = hist()
    day = list(h.between(SYM, DAY, DAY + DAY_MS))
    assert 24_000 <= len(day) < 48_000
    assert len(day) == 24 * h.per_hour(SYM) == h.count(SYM, DAY, DAY + DAY_MS)
    assert all(b.id == a.id + 1 and b.ts >= a.ts for a, b in pairwise(day))
    assert DAY <= day[0].ts and day[-1].ts < DAY + DAY_MS and day[0].id >= HISTORY_ID_BASE
    # the next day goes on where this one stopped
    assert next(h.between(SYM, DAY + DAY_MS, DAY + 2 * DAY_MS)).id == day[-1].id + 1
    # prices walk on: no jump between neighbours, hour boundaries included
    steps = [abs(math.log(b.px / a.px)) for a, b in pairwise(day)]
    assert max(steps) < 0.01
    assert 55_000 < min(t.px for t in day) / 1e8 and max(t.px for t in day) / 1e8 < 66_000
    tick, lot = h._steps(SYM)
    assert all(t.px % tick == 0 and t.qty % lot == 0 and t.qty > 0 for t in day)


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (DAY + 1_234, DAY + 3 * HOUR_MS + 17),
        (DAY + HOUR_MS, DAY + HOUR_MS),
        (ORIGIN_MS - DAY_MS, ORIGIN_MS + 10 * 60_000),
        (END - 10 * 60_000, END + DAY_MS),
    ],
)
def test_count_agrees_with_the_trades_and_nothing_outside_the_history(start: int, end: int) -> None:
    h = hist()
    got = list(h.between(SYM, start, end))
    assert h.count(SYM, start, end) == len(got)
    assert all(max(start, ORIGIN_MS) <= t.ts < min(end, END) for t in got)


def test_by_id_and_backwards_agree_with_the_time_order() -> None:
    h = hist()
    day = list(h.between(SYM, DAY, DAY + 3 * HOUR_MS))
    mid = day[len(day) // 2 + 3]
    assert list(islice(h.from_id(SYM, mid.id), 2_000)) == day[len(day) // 2 + 3 :][:2_000]
    older = list(islice(h.before_id(SYM, mid.id), 2_000))
    assert older == day[: len(day) // 2 + 3][::-1][:2_000]
    by_ts = list(islice(h.before_ms(SYM, mid.ts), 50))
    assert by_ts == [t for t in day if t.ts < mid.ts][::-1][:50]
    assert h.price_before(SYM, mid.ts) == by_ts[0].px
    # the history's last trades, from its end
    last = list(islice(h.before_id(SYM, 10**18), 3))
    assert [t.id for t in last] == [h.end_id(SYM) - 1, h.end_id(SYM) - 2, h.end_id(SYM) - 3]
    assert last[0].ts < END and list(islice(h.from_id(SYM, h.end_id(SYM)), 1)) == []
    assert (
        list(islice(h.before_ms(SYM, ORIGIN_MS + 1), 5))
        == list(h.between(SYM, ORIGIN_MS, ORIGIN_MS + 1))[::-1]
    )


def _exact(trades: list[HistTrade]) -> tuple[int, int, int, int, int, int, int]:
    """o, h, l, c, volume, quote (1e-16), count from the trades themselves."""
    px = [t.px for t in trades]
    return (
        px[0],
        max(px),
        min(px),
        px[-1],
        sum(t.qty for t in trades),
        sum(t.px * t.qty for t in trades),
        len(trades),
    )


@pytest.mark.parametrize("width", [1_000, 60_000, 15 * 60_000, HOUR_MS])
def test_short_candles_are_exactly_their_trades(width: int) -> None:
    h = hist()
    start, end = DAY + 7 * 60_000, DAY + 2 * HOUR_MS + 3 * 60_000
    trades = list(h.between(SYM, start - start % width, end + (-end) % width))
    by_open: dict[int, list[HistTrade]] = {}
    for t in trades:
        by_open.setdefault(t.ts - t.ts % width, []).append(t)
    candles = h.candles(SYM, width, start, end)
    want = sorted(o for o in by_open if start <= o < end)
    assert [c.open_ms for c in candles] == want
    for c in candles:
        mine = by_open[c.open_ms]
        assert (c.open, c.high, c.low, c.close, c.volume, c.quote, c.count) == _exact(mine)
        assert (c.first_id, c.last_id) == (mine[0].id, mine[-1].id)
        taker = [t for t in mine if not t.maker]
        assert c.taker_base == sum(t.qty for t in taker)


def test_long_candles_merge_hours_and_may_be_aligned_to_another_zone() -> None:
    h = hist()
    [day] = h.candles(SYM, DAY_MS, DAY, DAY + DAY_MS)
    assert day.open_ms == DAY
    assert (day.open, day.high, day.low, day.close, day.volume, day.quote, day.count) == _exact(
        list(h.between(SYM, DAY, DAY + DAY_MS))
    )
    hours = h.candles(SYM, HOUR_MS, DAY, DAY + DAY_MS)
    assert merge_candles(DAY, hours) == day
    six = h.candles(SYM, 6 * HOUR_MS, DAY, DAY + DAY_MS, offset_ms=8 * HOUR_MS)
    assert [c.open_ms - DAY for c in six] == [h * HOUR_MS for h in (4, 10, 16, 22)]
    assert six[0] == merge_candles(DAY + 4 * HOUR_MS, hours[4:10])
    assert h.candles(SYM, DAY_MS, END, END + 3 * DAY_MS) == []
    with pytest.raises(ValueError):
        h.candles(SYM, 7 * 60_000, DAY, DAY + HOUR_MS)


def test_start_prices_and_number_formats() -> None:
    h = hist()
    assert h.start_price("ETH/USDT") == 3_000.0
    other = h.start_price("NKN/USDT")
    assert other == hist().start_price("NKN/USDT") and 0.1 <= other <= 10_000
    assert (
        units_text(35_270_000) == "0.35270000" and units_text(6_000_012_000_000) == "60000.12000000"
    )
    assert plain_text(35_270_000) == "0.3527" and plain_text(100_000_000) == "1"
    assert Decimal(plain_text(6_000_012_000_000)) == Decimal("60000.12")
    with pytest.raises(ValueError):
        hist(trades_per_hour=0)
    assert hist(trades_per_hour=7).count(SYM, DAY, DAY + HOUR_MS) == 7
