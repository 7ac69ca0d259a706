"""The ``cost`` benchmark's arithmetic: µs per record, what a core buys, the lossless checks,
and the figures and tables built from a session's counters (no processes, no Redis)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from bench import cost_math as cm
from bench.cost_session import CostPlan
from bench.fig_cost import figures


def test_cost_per_record_and_what_a_core_buys() -> None:
    assert cm.us_per_record(0.5, 20_000) == pytest.approx(25.0)
    assert math.isnan(cm.us_per_record(0.5, 0))
    assert cm.per_core(25.0) == pytest.approx(40_000)
    assert cm.per_market_rate() == 11.0  # 10 trades/s + 1 ticker/s
    assert cm.markets_per_core(25.0) == pytest.approx(40_000 / 11)
    assert cm.markets_per_core(25.0, per_market=100.0) == pytest.approx(400)
    assert math.isnan(cm.per_core(0.0))


def test_read_side_is_redis_cpu_less_the_write_share_over_records_read() -> None:
    # 0.1 s of Redis CPU while 20,000 entries were added (3 µs each to write) and read
    assert cm.read_side_us(0.1, 3.0, 20_000, 20_000) == pytest.approx(2.0)
    # read by a consumer that took fewer records: per record it read
    assert cm.read_side_us(0.1, 3.0, 20_000, 10_000) == pytest.approx(4.0)


def test_memory_per_million_entries_and_at_maxlen() -> None:
    assert cm.mb_per_million(180.0) == 180.0  # 10^6 entries x 180 B = 180 MB
    assert cm.memory_cells("trades", 180.4, 210, 100_000) == ["trades", "180", "180", "210", "18.0"]
    assert cm.memory_cells("ticker", None, 275, 100_000) == ["ticker", "-", "-", "275", "-"]


def test_part_bounds_cut_a_window_in_equal_parts() -> None:
    assert cm.part_bounds(10.0, 6.0, 3) == [10.0, 12.0, 14.0, 16.0]
    assert cm.part_bounds(0.0, 5.0, 1) == [0.0, 5.0]
    with pytest.raises(ValueError):
        cm.part_bounds(0.0, 5.0, 0)


def _snap(
    t: float, rate: float = 5_000.0, cmds: dict[str, tuple[int, int]] | None = None, **us: float
) -> cm.Snap:
    """Counters at ``t`` s of a steady run: every counter at ``rate`` a second, each role
    having spent ``us`` µs a record so far; Redis ran ``cmds`` (calls, µs) each second."""
    n = int(rate * t)
    return cm.Snap(
        t=t,
        cpu={role: v * n / 1e6 for role, v in us.items()},
        frames=n,
        written=n,
        added=n,
        received=n,
        redis_cmds={k: (int(c * t), int(u * t)) for k, (c, u) in (cmds or {}).items()},
    )


def test_redis_cpu_is_split_by_what_each_side_ran() -> None:
    # 5 µs a record of Redis CPU at 5k/s; it spent 6 ms a second in XADD, 4 in XREAD and
    # 1 in the bench's own INFO / XINFO: 25 ms of CPU, shared 6 : 4 : 1
    cmds = {"xadd": (500, 6_000), "xread": (200, 4_000), "info": (1, 600), "xinfo|stream": (1, 400)}
    a, b = _snap(0.0, cmds=cmds, redis=5.0), _snap(10.0, cmds=cmds, redis=5.0)
    got = cm.redis_split(a, b)
    assert got["cpu_s"] == pytest.approx(0.25)
    assert got["write_s"] == pytest.approx(0.25 * 6 / 11)
    assert got["read_s"] == pytest.approx(0.25 * 4 / 11)
    assert got["bench_s"] == pytest.approx(0.25 * 1 / 11)
    assert got["read_calls"] == 2_000
    group = {"xadd": (500, 6_000), "xreadgroup": (100, 3_000), "xack": (100, 1_000)}
    got = cm.redis_split(_snap(0.0, cmds=group, redis=5.0), _snap(10.0, cmds=group, redis=5.0))
    assert got["read_s"] == pytest.approx(0.25 * 4 / 10)
    assert got["read_calls"] == 1_000  # XACKs ride along, they are not reads
    assert math.isnan(cm.redis_split(_snap(0.0, redis=5.0), _snap(1.0, redis=5.0))["read_s"])


def test_part_values_give_rate_cores_and_us_per_record() -> None:
    a, b = _snap(10.0, publisher=25.0), _snap(20.0, publisher=25.0)
    got = cm.part_values(a, b, "publisher", "written")
    assert got["records"] == 50_000
    assert got["records_s"] == pytest.approx(5_000)
    assert got["us"] == pytest.approx(25.0)
    assert got["cores"] == pytest.approx(0.125)
    reader_only = cm.Snap(t=0.0, cpu={"reader": 0.0}, frames=0, received=0)
    with pytest.raises(ValueError, match="written"):
        cm.part_values(reader_only, reader_only, "reader", "written")


def test_offered_check_wants_the_rate_in_every_part() -> None:
    ok = [_snap(t) for t in (0.0, 5.0, 10.0)]
    assert cm.offered_check(ok, 5_000)["delivered"]
    late = cm.Snap(t=15.0, cpu={}, frames=50_000 + 4_900 * 5, added=50_000 + 4_900 * 5)
    got = cm.offered_check([*ok, late], 5_000)
    assert got["offered_s"][-1] == pytest.approx(4_900)
    assert not got["delivered"]  # 2 % below: more than RATE_TOLERANCE
    catching_up = cm.Snap(t=15.0, cpu={}, frames=50_000 + 5_100 * 5, added=50_000 + 5_100 * 5)
    assert not cm.offered_check([*ok, catching_up], 5_000)["delivered"]  # not steady either
    assert not cm.offered_check(ok[:1], 5_000)["delivered"]  # no part, no evidence
    behind = cm.Snap(t=1.0, cpu={}, frames=5_000, added=4_990)
    assert cm.offered_check([ok[0], behind], 5_000)["in_flight"] == [0, 10]


def test_consumer_balance_lossless_lost_and_inconsistent() -> None:
    # 100 in flight at the start, 40 at the end, 10,000 added: 10,060 to receive
    good = cm.consumer_balance(10_060, 10_000, 10_060, 100, 40)
    assert good["lossless"] and good["consistent"] and good["lost"] == 0
    lost = cm.consumer_balance(10_055, 10_000, 10_060, 100, 40)
    assert lost["lost"] == 5 and not lost["lossless"]
    doubled = cm.consumer_balance(10_061, 10_000, 10_060, 100, 40)
    assert doubled["lost"] == -1 and not doubled["lossless"]
    # counts that do not add up (e.g. a stream trimmed under the check) never pass
    odd = cm.consumer_balance(10_060, 10_000, 10_060, 100, 0)
    assert not odd["consistent"] and not odd["lossless"]


def test_sizing_cells_per_core_and_markets() -> None:
    row = cm.SizingRow("publisher", "own process", 25.0, 24.0, 5_000.0, 160.4)
    assert cm.sizing_cells(row) == [
        "publisher", "own process", "25.0", "24.0", "40,000", "3,636", "5,000", "160",
    ]  # fmt: skip
    assert len(cm.sizing_cells(row)) == len(cm.SIZING_COLUMNS)


PLAN = CostPlan(window=20.0, parts=2)
TIMES = (0.0, 10.0, 20.0)


WRITES = {"xadd": (100, 3_000)}
"""The publisher's commands: all of Redis' work when it writes alone."""


def _session(pub_us: float, redis_us: float, lossless: bool = True) -> dict[str, Any]:
    snaps = [_snap(t, cmds=WRITES, publisher=pub_us, redis=redis_us, fake=5.0) for t in TIMES]
    final = {"lossless": lossless, "lost": 0 if lossless else 7, "frames_sent": 100_007,
             "entries_added": 100_000 if not lossless else 100_007}  # fmt: skip
    return {"snaps": snaps, "rss_mb": {"publisher": 160.0, "redis": 20.0}, "final": final}


def _phase(kind: str, consumer_us: float, read_usec: int, lost: int = 0) -> dict[str, Any]:
    """A reader's window: Redis runs the writes (3,000 µs a second) and ``read_usec`` µs a
    second of reads in 50 XREADs, 1 µs of CPU per µs executed."""
    cmds = {**WRITES, "xread": (50, read_usec)}
    redis_us = (3_000 + read_usec) / 5_000
    snaps = [_snap(t, cmds=cmds, consumer=consumer_us, redis=redis_us, fake=5.0) for t in TIMES]
    bal = cm.consumer_balance(50_000 - lost, 50_000, 50_000, 10, 10)
    return {"kind": kind, "label": kind, "snaps": snaps, "rss_mb": {"consumer": 180.0},
            "balance": [bal, bal]}  # fmt: skip


def _native(lost_by: str = "") -> dict[str, Any]:
    row = _session(20.0, 0.6)
    # Redis' CPU while each reader follows: the write side's 0.6 µs plus its read side
    row["phases"] = [
        _phase("plain", 6.0, 10_000, lost=5 if lost_by == "plain" else 0),
        _phase("callback", 12.0, 12_500),
        _phase("group", 8.0, 20_000),
        _phase("rawxread", 4.0, 10_000),
    ]
    row["bytes_per_entry"] = {"trades": 180.0, "ticker": 300.0}
    return row


def _ref() -> dict[str, Any]:
    return {"snaps": [_snap(t, reader=8.0, fake=5.0) for t in TIMES], "rss_mb": {"reader": 70.0}}


def test_figures_from_counters() -> None:
    figs = {f.name.split()[0]: f for f in figures(PLAN, _native(), _session(60.0, 0.7), _ref())}
    assert figs["C1"].runs == pytest.approx([20.0, 20.0])
    assert figs["C1"].ref_median == pytest.approx(8.0)  # the bare reader
    assert figs["C1"].met and figs["C1"].failed is None
    assert figs["C2"].runs == pytest.approx([60.0, 60.0])
    assert figs["C3"].runs == pytest.approx([0.6, 0.6])  # write side, publisher alone
    # read side: Redis' CPU with the reader (0.6 + 2.0 µs) less the write side alone
    assert figs["C4a"].runs == pytest.approx([2.0, 2.0])
    assert figs["C4c"].runs == pytest.approx([4.0, 4.0])
    assert figs["C4a"].ref_median == pytest.approx(2.0)  # raw XREAD's read side
    part = figs["C4b"].notes["parts"][0]
    assert part["us"] == pytest.approx(2.5)
    assert part["redis_total_us"] == pytest.approx(3.1)
    assert part["split_us"] == pytest.approx(3.1 * 12_500 / 15_500)
    assert part["reads_s"] == pytest.approx(50) and part["records_per_read"] == pytest.approx(100)
    assert part["exec_us_per_read"] == pytest.approx(250)
    assert figs["C5b"].runs == pytest.approx([12.0, 12.0])
    assert figs["C5a"].ref_median == pytest.approx(4.0)  # raw XREAD, no decoding
    assert figs["C6a"].met and not figs["C6b"].met  # 300 B > capacity.py's 290 B for tickers
    table = figs["C1"].notes["table"]
    rows = {r[0]: r for r in table["rows"]}
    assert rows["publisher, native parser (default)"][2:6] == ["20.0", "20.0", "50,000", "4,545"]
    assert rows["redis-server, write side"][2] == "0.6"
    assert all(len(r) == len(table["columns"]) for r in table["rows"])
    checks = figs["C2"].notes["table"]["rows"]
    assert [r[1] for r in checks] == [
        "publisher alone", "+ plain", "+ callback", "+ group", "+ rawxread",
        "publisher alone", "bare reader",
    ]  # fmt: skip
    assert checks[0][2] == "5,000"
    assert checks[1][6] == "50 (100.0)"  # reads/s (records/read) of the plain consumer


def test_a_lost_record_fails_the_figures_it_touches() -> None:
    figs = {
        f.name.split()[0]: f for f in figures(PLAN, _native("plain"), _session(60.0, 0.7), _ref())
    }
    assert figs["C5a"].failed and "LOST 5" in figs["C5a"].failed
    assert figs["C4a"].failed  # the same window
    assert figs["C5b"].failed is None and figs["C1"].failed is None
    lost = figures(PLAN, _native(), _session(60.0, 0.7, lossless=False), _ref())
    c2 = next(f for f in lost if f.name.startswith("C2"))
    assert c2.failed and "LOST 7" in c2.failed


def test_a_crashed_session_leaves_failed_figures_not_a_crash() -> None:
    figs = figures(PLAN, {"error": "RuntimeError: boom", "phases": []}, _session(60.0, 0.7), _ref())
    by = {f.name.split()[0]: f for f in figs}
    assert by["C1"].failed == "RuntimeError: boom"
    assert by["C5a"].failed == "RuntimeError: boom"
    assert by["C2"].failed is None
