"""Trade-id continuity: gaps counted, duplicates refused, per symbol."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from publisher.trade_ids import TradeIdTracker


def test_consecutive_ids_are_admitted_without_gaps() -> None:
    t = TradeIdTracker()
    assert all(t.admit("BTC/USDT", str(i)) for i in range(100, 200))
    assert (t.gaps, t.missing, t.duplicates) == (0, 0, 0)
    assert t.last["BTC/USDT"] == 199


def test_first_id_is_never_a_gap() -> None:
    t = TradeIdTracker()
    assert t.admit("BTC/USDT", "15683430")
    assert t.gaps == 0 and t.missing == 0


def test_a_jump_is_one_gap_with_its_missing_count() -> None:
    t = TradeIdTracker()
    for i in (1, 2, 3, 7, 8, 20):
        assert t.admit("BTC/USDT", str(i))
    assert t.gaps == 2
    assert t.missing == 3 + 11  # 4, 5, 6 and 9..19
    assert t.duplicates == 0


def test_repeat_and_step_back_are_duplicates_and_do_not_move_the_cursor() -> None:
    t = TradeIdTracker()
    assert t.admit("BTC/USDT", "10")
    assert t.admit("BTC/USDT", "11")
    assert not t.admit("BTC/USDT", "11")  # repeat
    assert not t.admit("BTC/USDT", "5")  # step back
    assert t.duplicates == 2
    assert t.last["BTC/USDT"] == 11
    assert t.admit("BTC/USDT", "12")  # the next one is still consecutive
    assert t.gaps == 0 and t.missing == 0


def test_symbols_are_independent() -> None:
    t = TradeIdTracker()
    assert t.admit("BTC/USDT", "100")
    assert t.admit("ETH/USDT", "5")  # lower than BTC's, but a different market
    assert t.admit("ETH/USDT", "6")
    assert t.admit("BTC/USDT", "101")
    assert not t.admit("ETH/USDT", "6")
    assert t.admit("BTC/USDT", "6000")
    assert t.gaps == 1 and t.missing == 6000 - 101 - 1
    assert t.duplicates == 1
    assert t.last == {"BTC/USDT": 6000, "ETH/USDT": 6}


def test_non_numeric_ids_are_deduplicated_per_symbol() -> None:
    t = TradeIdTracker()
    assert t.admit("XBT/EUR", "TXABC-1")
    assert t.admit("XBT/EUR", "TXABC-2")
    assert not t.admit("XBT/EUR", "TXABC-1")
    assert t.admit("ETH/EUR", "TXABC-1")  # same id, other market
    assert t.duplicates == 1
    assert t.gaps == 0 and t.missing == 0
    assert "XBT/EUR" not in t.last


def test_opaque_memory_is_bounded() -> None:
    t = TradeIdTracker(recent_size=3)
    for tid in ("a", "b", "c", "d"):
        assert t.admit("S", tid)
    assert len(t._recent) == 3
    assert not t.admit("S", "d")  # recent: refused
    assert t.admit("S", "a")  # evicted, so admitted again


def test_numeric_and_opaque_ids_do_not_interfere() -> None:
    t = TradeIdTracker()
    assert t.admit("S", "1")
    assert t.admit("S", "x")
    assert t.admit("S", "2")
    assert t.gaps == 0 and t.duplicates == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=10_000), max_size=60))
def test_counts_match_a_reference(ids: list[int]) -> None:
    t = TradeIdTracker()
    admitted: list[int] = []
    gaps = missing = duplicates = 0
    for n in ids:
        ok = t.admit("S", str(n))
        if admitted and n <= admitted[-1]:
            duplicates += 1
            assert not ok
            continue
        if admitted and n != admitted[-1] + 1:
            gaps += 1
            missing += n - admitted[-1] - 1
        assert ok
        admitted.append(n)
    assert (t.gaps, t.missing, t.duplicates) == (gaps, missing, duplicates)
    # whatever came in, what was admitted is strictly increasing: each trade published once
    assert admitted == sorted(set(admitted))


def test_one_huge_id_does_not_stop_the_market() -> None:
    """Before: a 30-digit id became the floor and every later trade was a duplicate."""
    seen: list[tuple[str, str, int, int]] = []
    t = TradeIdTracker(on_anomaly=lambda *a: seen.append(a))
    assert all(t.admit("BTC/USDT", str(i)) for i in range(1, 11))
    assert t.admit("BTC/USDT", "9" * 18)  # a corrupt id: published, not a floor
    assert [t.admit("BTC/USDT", str(i)) for i in range(11, 21)] == [True] * 10
    assert t.duplicates == 0 and t.gaps == 0 and t.outliers == 1 and t.resets == 0
    assert t.last["BTC/USDT"] == 20
    assert seen == [("outlier", "BTC/USDT", 10, int("9" * 18))]


def test_an_exchange_side_reset_re_anchors_the_tracker() -> None:
    seen: list[tuple[str, str, int, int]] = []
    t = TradeIdTracker(on_anomaly=lambda *a: seen.append(a))
    for i in range(5_000_000, 5_000_010):
        assert t.admit("ETH/USDT", str(i))
    # the exchange restarts its sequence far below: each new id is published
    assert [t.admit("ETH/USDT", str(i)) for i in range(1, 20)] == [True] * 19
    assert t.resets == 1 and t.duplicates == 0 and t.gaps == 0
    assert t.last["ETH/USDT"] == 19
    assert seen == [("reset", "ETH/USDT", 5_000_009, 1)]
    assert not t.admit("ETH/USDT", "19")  # duplicates are still caught after the reset


def test_a_jump_forward_to_a_new_range_is_a_reset_not_a_floor_at_once() -> None:
    t = TradeIdTracker(jump_limit=1_000)
    assert t.admit("S", "100")
    assert t.admit("S", "50000")  # suspect
    assert t.admit("S", "50002")  # follows the suspect: the exchange moved
    assert t.resets == 1 and t.last["S"] == 50002


@pytest.mark.parametrize("trade_id", ["9" * 19, "1" + "0" * 40, "-5"])
def test_ids_beyond_int64_are_tracked_as_opaque(trade_id: str) -> None:
    t = TradeIdTracker()
    assert t.admit("S", "1")
    assert t.admit("S", trade_id)
    assert not t.admit("S", trade_id)  # de-duplicated like an opaque id
    assert t.admit("S", "2")  # the numeric run goes on untouched
    assert t.out_of_range == 2 and t.gaps == 0 and t.last["S"] == 2
