"""The arithmetic of trimmed ranges (consumers.trims), against a model of a Redis stream;
archived rows back into entries (consumers.archive_rows); History.read_ids."""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from archive.store import Store
from consumers import Consumer, trim_watch
from consumers.archive_rows import entries_of, fillable
from consumers.consumer_parts import id_tuple
from consumers.history import History
from consumers.trims import (
    Gap,
    GroupInfo,
    ReadCheck,
    StreamInfo,
    TrimInfoUnavailable,
    after_read,
    at_tail,
    behind,
    group_behind,
    group_check,
    just_below,
    parse_groups,
    parse_stream_info,
    threshold,
)
from marketbus import codec
from marketbus.keys import stream_key
from marketbus.models import Channel, Record
from tests.archive_data import book, candle, commit_records
from tests.factories import ticker, trade


def info(length: int, added: int, first: int | None, last: int, deleted: int = 0) -> StreamInfo:
    """A stream whose entry number n has the id ``n-0``."""
    return StreamInfo(length, added, None if first is None else (first, 0), (last, 0), (deleted, 0))


def ids(lo: int, hi: int) -> list[tuple[int, int]]:
    return [(n, 0) for n in range(lo, hi + 1)]


# -- one reply, by hand --------------------------------------------------------------------


def test_a_reply_after_the_oldest_entry_held_hides_nothing() -> None:
    # read 10, then 11..20 while the stream holds 5..30: nothing trimmed after 10
    assert after_read(10, (10, 0), ids(11, 20), info(26, 30, 5, 30)) == ReadCheck(20)
    assert after_read(None, (10, 0), ids(11, 20), info(26, 30, 5, 30)) == ReadCheck(None)


def test_a_reply_starting_at_the_oldest_entry_counts_the_range_before_it() -> None:
    # read 10; the stream now holds 41..60 (40 trimmed); the reply is 41..50
    check = after_read(10, (10, 0), ids(41, 50), info(20, 60, 41, 60))
    assert check == ReadCheck(50, 30, Gap((10, 0), (41, 0)))
    # trimmed exactly up to what was read: nothing lost
    assert after_read(40, (40, 0), ids(41, 50), info(20, 60, 41, 60)) == ReadCheck(50)


def test_entries_of_the_reply_trimmed_since_are_not_counted_twice() -> None:
    # the reply 41..50 was read, then the stream trimmed on to 45 before it was looked at
    check = after_read(10, (10, 0), ids(41, 50), info(16, 60, 45, 60))
    assert check == ReadCheck(50, 30, Gap((10, 0), (41, 0)))


def test_a_reply_trimmed_whole_since_counts_both_ranges_together() -> None:
    # the reply 41..50, then trimming past it: 71..90 held; 11..40 and 51..70 were trimmed
    check = after_read(10, (10, 0), ids(41, 50), info(20, 90, 71, 90))
    assert check == ReadCheck(70, 50, Gap((10, 0), (41, 0)), Gap((50, 0), (71, 0)))
    # emptied (XTRIM MAXLEN 0): everything up to the newest entry
    check = after_read(10, (10, 0), ids(41, 50), info(0, 90, None, 90))
    assert check == ReadCheck(90, 70, Gap((10, 0), (41, 0)), Gap((50, 0), (90, 1)))


def test_an_unknown_position_reports_a_range_of_unknown_size_then_knows() -> None:
    check = after_read(None, (10, 0), ids(41, 50), info(20, 60, 41, 60))
    assert check == ReadCheck(50, None, Gap((10, 0), (41, 0)))
    # from the start of a stream there is no range before
    assert after_read(None, (0, 0), ids(41, 50), info(20, 60, 41, 60)) == ReadCheck(50, None)


def test_xdel_inside_the_stream_makes_the_numbering_unknown() -> None:
    assert after_read(10, (10, 0), ids(41, 50), info(19, 60, 41, 60, deleted=45)) == ReadCheck(20)
    assert at_tail(10, (60, 0), info(19, 60, 41, 60, deleted=45)) == (10, 0)


def test_at_tail_counts_what_unchecked_reads_jumped() -> None:
    assert at_tail(40, (60, 0), info(20, 60, 41, 60)) == (60, 20)
    assert at_tail(None, (60, 0), info(20, 60, 41, 60)) == (60, 0)  # now known
    assert at_tail(40, (59, 0), info(20, 60, 41, 60)) == (40, 0)  # not at the newest


def test_lag_and_threshold() -> None:
    s = info(20, 60, 41, 60)
    assert behind(50, (50, 0), s) == 10 and behind(None, (60, 0), s) == 0
    assert behind(None, (50, 0), s) is None
    g = GroupInfo("bots", (50, 0), 50, 10, 3)
    assert group_behind(s, g) == 10 and group_behind(s, g, counted=4) == 6
    assert group_behind(s, GroupInfo("bots", (60, 0), None, None, 0)) == 0
    assert threshold(1000, None) == threshold(1000, 5000) == 1000
    assert threshold(1000, 300) == 150 and threshold(1000, 1) == 1


def test_redis_replies_are_parsed_and_redis_6_is_told_apart() -> None:
    reply = {
        "length": 5, "entries-added": 20, "recorded-first-entry-id": b"16-0",
        "last-generated-id": b"20-0", "max-deleted-entry-id": b"0-0",
        "first-entry": (b"16-0", {}), "last-entry": (b"20-0", {}),
    }  # fmt: skip
    assert parse_stream_info(reply) == StreamInfo(5, 20, (16, 0), (20, 0), (0, 0))
    assert parse_stream_info({**reply, "length": 0}).first is None
    redis6 = {k: v for k, v in reply.items() if k not in ("entries-added", "max-deleted-entry-id")}
    with pytest.raises(TrimInfoUnavailable):
        parse_stream_info(redis6)
    groups = parse_groups(
        [
            {
                "name": b"bots",
                "consumers": 1,
                "pending": 2,
                "last-delivered-id": b"18-0",
                "entries-read": None,
                "lag": None,
            }
        ]
    )
    assert groups == {"bots": GroupInfo("bots", (18, 0), None, None, 2)}


def test_a_group_lost_what_its_read_count_is_behind_its_position() -> None:
    s = info(20, 60, 41, 60)
    # the member's reply 41..50 moved the group there, Redis counted 10 more reads (11 + 10)
    g = GroupInfo("bots", (50, 0), 21, 10, 0)
    assert group_check(s, g, ids(41, 50)) == ReadCheck(50, 29)  # 12..40 trimmed unread
    # another member read after it: its position is not known from this reply
    assert group_check(s, GroupInfo("bots", (52, 0), 23, 8, 0), ids(41, 50)).pos is None
    # the reply did not start at the oldest entry: nothing behind it
    assert group_check(info(30, 60, 31, 60), g, ids(41, 50)) == ReadCheck(None)
    # at the newest entry it is known without a reply
    assert group_check(s, GroupInfo("bots", (60, 0), 31, 0, 0)) == ReadCheck(60, 29)
    assert group_check(s, GroupInfo("bots", (60, 0), None, None, 0)).pos is None
    # the reply trimmed whole before the look: everything before the oldest entry held,
    # the range after the reply included (the count set ahead of the group's position)
    check = group_check(info(10, 60, 51, 60), GroupInfo("bots", (45, 0), 16, 0, 0), ids(41, 45))
    assert check == ReadCheck(50, 34, None, Gap((45, 0), (51, 0)))


# -- against a model of a stream -------------------------------------------------------------


@dataclass
class Model:
    """A stream numbered 1, 2, ... (id ``n-0``), trimmed from the head."""

    added: int = 0
    first: int = 1  # oldest held (first > added: none held)
    deleted: list[int] = field(default_factory=list)

    def add(self, n: int, cap: int, rng: random.Random) -> None:
        self.added += n
        keep = cap + rng.randrange(0, 3)  # approximate trimming keeps a little more
        self.first = max(self.first, self.added - keep + 1)

    def read(self, after: int, count: int) -> list[tuple[int, int]]:
        lo = max(after + 1, self.first)
        return ids(lo, min(lo + count - 1, self.added)) if lo <= self.added else []

    def info(self) -> StreamInfo:
        held = max(self.added - self.first + 1, 0)
        return info(held, self.added, self.first if held else None, self.added)


@settings(max_examples=300, deadline=None)
@given(
    seed=st.integers(0, 2**32), cap=st.integers(1, 40), count=st.integers(1, 50),
    every=st.integers(1, 5), check_all=st.booleans(),
)  # fmt: skip
def test_plain_counts_add_up_to_what_was_skipped(
    seed: int, cap: int, count: int, every: int, check_all: bool
) -> None:
    """A reader checking the replies of at least ``threshold`` entries (others move its
    position on unchecked), looking at the tail every few reads, with writes and trims
    between the read and its check: when it reaches the newest entry, what it counted plus
    what it read is every entry written. Checking every reply, each check counts exactly
    the ranges it names."""
    rng = random.Random(seed)
    s = Model()
    last, pos, read, lost = 0, 0, 0, 0
    floor = (0, 0)
    counted: set[int] = set()
    limit = 1 if check_all else threshold(count, cap)
    for step in range(60):
        s.add(rng.randrange(0, 3 * cap + 5), cap, rng)
        reply = s.read(last, count)
        s.add(rng.choice([0, 0, rng.randrange(0, 3 * cap)]), cap, rng)  # after the read
        if reply:
            if len(reply) >= limit:
                check = after_read(pos, (last, 0), reply, s.info(), floor)
                pos = check.pos  # type: ignore[assignment]
                lost += check.lost or 0
                if check.tail is not None:
                    floor = just_below(check.tail.before)
                if check_all:  # the ranges named hold exactly what is counted, once
                    ranges = [g for g in (check.head, check.tail) if g is not None]
                    named = [
                        n
                        for g in ranges
                        for n in range(1, s.added + 2)
                        if g.after < (n, 0) < g.before
                    ]
                    assert len(named) == len(set(named)) == check.lost
                    assert not set(named) & counted
                    counted.update(named)
            else:
                pos += len(reply)
            read += len(reply)
            last = reply[-1][0]
        if check_all:
            continue
        if step % every == 0:
            pos, late = at_tail(pos, (last, 0), s.info())  # type: ignore[assignment]
            lost += late
    while reply := s.read(last, count):  # catch up, checking
        check = after_read(pos, (last, 0), reply, s.info(), floor)
        if check.tail is not None:
            floor = just_below(check.tail.before)
        if check_all:  # the catch-up's ranges count too (a trim after the last step's read)
            ranges = [g for g in (check.head, check.tail) if g is not None]
            named = [
                n for g in ranges for n in range(1, s.added + 2) if g.after < (n, 0) < g.before
            ]
            assert len(named) == len(set(named)) == check.lost
            assert not set(named) & counted
            counted.update(named)
        pos, lost, read, last = check.pos, lost + (check.lost or 0), read + len(reply), reply[-1][0]  # type: ignore[assignment]
    pos, late = at_tail(pos, (last, 0), s.info())  # type: ignore[assignment]
    assert read + lost + late == s.added
    if check_all:
        assert late == 0 and len(counted) == lost


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), cap=st.integers(1, 40), count=st.integers(1, 50))
def test_a_group_counted_and_set_by_its_only_member_adds_up(
    seed: int, cap: int, count: int
) -> None:
    """Redis counts a group's reads one delivered entry at a time; the member that finds the
    count behind the position counts the difference and sets the count (as the script
    does): delivered plus counted is every entry."""
    rng = random.Random(seed)
    s = Model()
    last, entries_read, read, lost = 0, 0, 0, 0
    floor = (0, 0)
    counted: set[int] = set()
    for _ in range(80):
        s.add(rng.randrange(0, 3 * cap + 5), cap, rng)
        reply = s.read(last, count)
        if not reply:
            continue
        entries_read += len(reply)  # XREADGROUP: one per delivered entry
        before, last, read = last, reply[-1][0], read + len(reply)
        s.add(rng.choice([0, rng.randrange(0, 2 * cap)]), cap, rng)
        check = group_check(s.info(), GroupInfo("g", (last, 0), entries_read, None, 0), reply)
        if check.pos is None or not check.lost:
            continue
        lost += check.lost
        entries_read = check.pos  # the script's XGROUP SETID ... ENTRIESREAD
        # the ranges the member names (as trim_watch does) hold exactly what it counted
        lo = max((before, 0), floor)
        ranges = [Gap(lo, reply[0])] + ([check.tail] if check.tail else [])
        named = {n for g in ranges for n in range(1, s.added + 2) if g.after < (n, 0) < g.before}
        assert len(named) == check.lost and not named & counted
        counted |= named
        if check.tail is not None:
            floor = just_below(check.tail.before)
    while reply := s.read(last, count):  # the rest, then the look at the newest entry
        entries_read += len(reply)
        last, read = reply[-1][0], read + len(reply)
    end = group_check(s.info(), GroupInfo("g", (last, 0), entries_read, None, 0))
    assert read + lost + (end.lost or 0) == s.added


# -- archived rows back into entries -----------------------------------------------------------


def _records(t0: int) -> list[tuple[str, Record]]:
    out: list[tuple[str, Record]] = []
    for i in range(12):
        eid = f"{t0 + i * 10}-{i % 3}"
        out.append((eid, [trade(i), ticker(i), book(i, levels=1 + i % 4), candle(i)][i % 4]))
    # an absent side, absent ticker fields, a book side empty
    out.append((f"{t0 + 500}-0", trade(99).model_copy(update={"side": None})))
    out.append((f"{t0 + 510}-0", ticker(98).model_copy(update={"last": None, "high": None})))
    out.append((f"{t0 + 520}-0", book(97).model_copy(update={"asks": ()})))
    return out


@pytest.mark.parametrize("channel", [Channel.TRADES, Channel.TICKER, Channel.BOOK, Channel.CANDLES])
def test_archived_rows_become_the_entries_redis_held(tmp_path: Path, channel: Channel) -> None:
    """read_ids gives the range by entry id (bounds excluded), in id order; each row becomes
    the payload the publisher wrote, which decodes to the very record."""
    t0 = 1_700_000_000_000
    store = Store(tmp_path)
    store.open()
    recs = _records(t0)
    commit_records(store, 1, recs)
    h = History(tmp_path)
    want = [(i, r) for i, r in recs if r.channel is channel]
    table = h.read_ids("binance", "BTC/USDT", channel, "0-0")
    assert fillable(channel, table.schema)
    entries = entries_of(channel, "binance", table)
    assert [e[0].decode() for e in entries] == [i for i, _ in want]
    assert [codec.decode(e[1][1]) for e in entries] == [r for _, r in want]
    assert entries[0][1][0] == b"d"
    # bounds excluded; an empty or inverted range is an empty table of the same schema
    inner = h.read_ids("binance", "BTC/USDT", channel, want[0][0], want[-1][0])
    assert inner.column("entry_id").to_pylist() == [i for i, _ in want[1:-1]]
    assert h.read_ids("binance", "BTC/USDT", channel, want[-1][0], want[0][0]).num_rows == 0
    assert h.read_ids("binance", "BTC/USDT", channel, want[-1][0]).schema == table.schema


def test_read_ids_orders_by_entry_id_not_exchange_time(tmp_path: Path) -> None:
    t0 = 1_700_000_000_000
    store = Store(tmp_path)
    store.open()
    # exchange times going back while entry ids go forward, across a date boundary
    recs: list[tuple[str, Any]] = [
        (f"{t0 + i}-0", trade(i).model_copy(update={"ts_ms": t0 - i * 3_600_000}))
        for i in range(30)
    ]
    commit_records(store, 1, recs)
    t = History(tmp_path).read_ids("binance", "BTC/USDT", "trades", f"{t0}-0", f"{t0 + 29}-0")
    assert t.column("id").to_pylist() == [str(i) for i in range(1, 29)]
    assert [id_tuple(x) for x in t.column("entry_id").to_pylist()] == [
        (t0 + i, 0) for i in range(1, 29)
    ]
    assert isinstance(t, pa.Table)


# -- a Redis without the counters ------------------------------------------------------------


async def test_on_redis_6_the_watch_says_so_once_and_the_consumer_reads_on(
    fake_redis: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """XINFO STREAM without ``entries-added`` (Redis 6): one log line, no checks, no lag."""
    real = trim_watch.parse_stream_info

    def redis6(reply: dict[str, Any]) -> StreamInfo:
        return real({k: v for k, v in reply.items() if k != "entries-added"})

    monkeypatch.setattr(trim_watch, "parse_stream_info", redis6)
    key = stream_key("binance", "BTC/USDT", "trades")
    for i in range(3):
        await fake_redis.xadd(key, codec.encode(trade(i)))
    with capture_logs() as logs:
        async with Consumer(fake_redis, ["binance:BTC/USDT"], ["trades"], block_ms=10) as c:
            await fake_redis.xadd(key, codec.encode(trade(3)))
            async with asyncio.timeout(5):
                while c.stats.received < 4:
                    await asyncio.sleep(0.01)
            assert await c.lag() == {key: None}
    (off,) = [e for e in logs if e["event"] == "trim_detection_off"]
    assert "entries-added" in off["reason"]
    assert c.stats.trim_gaps == 0
