"""Replay of the recorded OKX session: seqIds assigned, time shifted to now, optional loop.

Checksums are verified and books5/bbo-tbt derived once, on load; playing shifts times, trade
ids and seqIds to the pass being played (and builds candles from the trades), so a loop never
breaks the seqId chain.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from fake_exchange.okx import frames as of
from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.candles import CandleBuilder
from fake_exchange.okx.frame_source import SEQ_START, OkxEvent
from fake_exchange.okx.frames import Payload
from fake_exchange.okx.instruments import inst_id_of
from fake_exchange.okx.recording import (
    OkxRecording,
    RecordedPush,
    load_okx_recording,
    okx_recording,
)
from fake_exchange.recording import RecordingError
from fake_exchange.sources import Clock

REPLAY_CHANNELS = frozenset({"tickers", "trades", "books"})


def _fast(speed: float) -> bool:
    return speed <= 0 or math.isinf(speed)


def _time_map(
    fast: bool, now_ms: int, base_ms: float, first_ms: float, speed: float
) -> Callable[[int], int]:
    """Recorded ms -> now-based ms: gaps divided by speed, or everything now (fast mode)."""
    if fast:
        return lambda _ms: now_ms
    return lambda ms: int(base_ms + (ms - first_ms) / speed)


@dataclass(frozen=True, slots=True)
class _Item:
    """One recorded frame prepared for replay (checksums verified, seqIds added)."""

    ts: float
    channel: str
    inst_id: str
    frame: Payload
    update_no: int = 0
    """books and derived books5/bbo-tbt: number of the update in the pass (snapshot: 0)."""


class OkxReplaySource:
    """Replays the recorded OKX session for some instruments, timestamps shifted to now.

    Relative timing kept, gaps divided by `speed` (0/inf: as fast as possible). The recorded
    books snapshot of an instrument is its initial book (sent on subscribe, not replayed); each
    update gets seqId = previous + 1 and its recorded checksum, verified on load. With `loop`, a
    pass starts `loop_gap` recorded seconds after the last frame, pushes the recorded snapshot
    again (action "snapshot", prevSeqId -1, seqId continuing) and shifts trade ids by one pass.
    Derived: `books5`/`bbo-tbt` after each books update that changes them, and a candle row per
    bar in `candle_bars` after each trade.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        instruments: Sequence[str] | None = ("BTC-USDT",),
        loop_gap: float = 1.0,
        candle_bars: Sequence[str] = ("1s", "1m"),
    ) -> None:
        self.path = Path(path) if path is not None else okx_recording()
        self.speed = speed
        self.loop = loop
        self.inst_filter = None if instruments is None else {inst_id_of(i) for i in instruments}
        self.loop_gap = loop_gap
        self.candle_bars = tuple(candle_bars)
        for bar in self.candle_bars:
            of.bar_ms(bar)
        self._rec: OkxRecording | None = None
        self._items: list[_Item] = []
        self._books: dict[str, OkxBook] = {}
        self._updates: dict[str, int] = {}
        self._trade_span: dict[str, int] = {}
        self.checksums_checked = 0
        self.checksums_replaced = 0

    def __repr__(self) -> str:
        return f"OkxReplaySource({str(self.path)!r}, speed={self.speed}, loop={self.loop})"

    @property
    def finite(self) -> bool:
        return not self.loop

    def prepare(self) -> None:
        if self._rec is not None:
            return
        rec = load_okx_recording(self.path)
        keep = [
            f
            for f in rec.frames
            if of.frame_key(f.frame)[0] in REPLAY_CHANNELS
            and (self.inst_filter is None or of.frame_key(f.frame)[1] in self.inst_filter)
        ]
        self._items = self._prepare_items(keep)
        self._rec = rec

    def _prepare_items(self, frames: list[RecordedPush]) -> list[_Item]:
        """Verify checksums, number the updates, derive books5/bbo-tbt; ids per instrument."""
        items: list[_Item] = []
        live: dict[str, OkxBook] = {}
        tops: dict[str, tuple[Any, Any]] = {}
        trade_ids: dict[str, list[int]] = {}
        for f in frames:
            channel, inst = of.frame_key(f.frame)
            if channel == "trades":
                trade_ids.setdefault(inst, []).extend(int(t["tradeId"]) for t in f.frame["data"])
                items.append(_Item(f.ts, channel, inst, f.frame))
                continue
            if channel != "books":
                items.append(_Item(f.ts, channel, inst, f.frame))
                continue
            action = f.frame.get("action")
            for row in f.frame["data"]:
                if action == "snapshot":
                    book = live[inst] = OkxBook(inst, SEQ_START)
                    book.reset(row)
                    book.seq_id = SEQ_START
                    self._books[inst] = book.copy()
                    self._books[inst].ts_ms = 0  # sent on subscribe: the server stamps it now
                    self._updates[inst] = 0
                    self.checksums_checked += 1
                    if int(row.get("checksum", book.checksum())) != book.checksum():
                        self.checksums_replaced += 1
                    snap = of.push("books", inst, [book.snapshot_row()], "snapshot")
                    items.append(_Item(f.ts, "books", inst, snap, 0))
                    continue
                if inst not in live:
                    continue  # an update before any snapshot: nothing to apply it to
                book = live[inst]
                book.update(row)
                self._updates[inst] += 1
                n = self._updates[inst]
                self.checksums_checked += 1
                check = book.checksum()
                if int(row.get("checksum", check)) != check:
                    self.checksums_replaced += 1
                new_row = of.book_row(
                    row["asks"],
                    row["bids"],
                    int(row["ts"]),
                    checksum=check,
                    seq_id=SEQ_START + n,
                    prev_seq_id=SEQ_START + n - 1,
                )
                items.append(
                    _Item(f.ts, "books", inst, of.push("books", inst, [new_row], "update"), n)
                )
                ts = int(row["ts"])
                top5 = (book.asks(5), book.bids(5))
                if tops.get(inst) != top5:
                    prev = tops.get(inst)
                    tops[inst] = top5
                    frame5 = of.push("books5", inst, [of.top_row(inst, *top5, ts, SEQ_START + n)])
                    items.append(_Item(f.ts, "books5", inst, frame5, n))
                    if prev is None or (prev[0][:1], prev[1][:1]) != (top5[0][:1], top5[1][:1]):
                        bbo = of.push("bbo-tbt", inst, [of.bbo_row(*top5, ts, SEQ_START + n)])
                        items.append(_Item(f.ts, "bbo-tbt", inst, bbo, n))
        self._trade_span = {i: max(v) - min(v) + 1 for i, v in trade_ids.items()}
        return items

    def instruments(self) -> dict[str, list[Payload]]:
        self.prepare()
        if self._rec is None:
            raise RecordingError(f"{self.path}: not loaded")
        return self._rec.instruments

    def books(self) -> dict[str, OkxBook]:
        self.prepare()
        return {i: b.copy() for i, b in self._books.items()}

    def events(self, clock: Clock) -> Iterator[OkxEvent]:
        self.prepare()
        if not self._items:
            return
        fast = _fast(self.speed)
        speed = 1.0 if fast else self.speed
        first_ms = self._items[0].ts * 1000
        pass_ms = (self._items[-1].ts - self._items[0].ts + self.loop_gap) * 1000
        start_ms = clock()
        candles = {
            (inst, bar): CandleBuilder(bar)
            for inst in {i.inst_id for i in self._items}
            for bar in self.candle_bars
        }
        prev_ts: float | None = None
        pass_no = 0
        while True:
            base_ms = start_ms + pass_no * pass_ms / speed
            for i, item in enumerate(self._items):
                if item.channel == "books" and item.update_no == 0 and pass_no == 0:
                    continue  # the initial book: sent on subscribe, not pushed
                if fast or prev_ts is None:
                    delay = 0.0
                elif i == 0:
                    delay = self.loop_gap / speed
                else:
                    delay = (item.ts - prev_ts) / speed
                prev_ts = item.ts
                tmap = _time_map(fast, clock(), base_ms, first_ms, speed)
                frame = self._shift(item, pass_no, tmap)
                yield OkxEvent(delay, item.channel, item.inst_id, frame)
                if item.channel == "trades":
                    for row in frame["data"]:
                        yield from self._candle_events(candles, item.inst_id, row)
            if not self.loop:
                return
            pass_no += 1

    def _shift(self, item: _Item, pass_no: int, tmap: Callable[[int], int]) -> Payload:
        """A copy of the prepared frame with times, trade ids and seqIds moved to this pass."""
        frame = dict(item.frame)
        rows = []
        seq_shift = pass_no * (self._updates.get(item.inst_id, 0) + 1)
        for row in frame["data"]:
            row = dict(row)
            row["ts"] = str(tmap(int(row["ts"])))
            if item.channel == "trades":
                row["tradeId"] = str(
                    int(row["tradeId"]) + pass_no * self._trade_span.get(item.inst_id, 0)
                )
            if "seqId" in row:
                row["seqId"] += seq_shift
            if row.get("prevSeqId", -1) != -1:
                row["prevSeqId"] += seq_shift
            rows.append(row)
        frame["data"] = rows
        return frame

    @staticmethod
    def _candle_events(
        candles: dict[tuple[str, str], CandleBuilder], inst: str, trade: Payload
    ) -> Iterator[OkxEvent]:
        ts, px = int(trade["ts"]), Decimal(trade["px"])
        for (c_inst, bar), builder in candles.items():
            if c_inst != inst:
                continue
            builder.add_trade(ts, px, Decimal(trade["sz"]))
            channel = "candle" + bar
            if builder.closed:
                yield OkxEvent(0.0, channel, inst, of.push(channel, inst, [builder.take(ts, px)]))
            yield OkxEvent(0.0, channel, inst, of.push(channel, inst, [builder.take(ts, px)]))


__all__ = ["REPLAY_CHANNELS", "OkxReplaySource"]
