"""Replay of a recorded Coinbase session: time shifted to now, optional speed-up and loop.

The first snapshot of each (channel, product) (book, trades, ticker, candles) is the market's
starting state: a client gets it on subscribe, as from Coinbase, with its times moved to the
moment the market is set up. Every later event is pushed as recorded with its times moved to
now: the envelope's `timestamp`, a trade's `time`, a level's `event_time` by the event's
shift (gaps divided by `speed`); a candle's `start` by the shift rounded down to five minutes,
the same for every update of a candle, so it stays one aligned candle. With `loop`, a pass
starts `loop_gap` recorded seconds after the last event, pushes the starting book snapshots
again (a client's book restarts from them) and the starting trades and ticker as updates, and
moves its trade ids by the pass's span per product, so ids stay unique and consecutive.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

from fake_exchange.coinbase import frames as cf
from fake_exchange.coinbase.frames import Payload
from fake_exchange.coinbase.recording import (
    CoinbaseRecording,
    RecordedEvent,
    coinbase_recording,
    load_coinbase_recording,
)
from fake_exchange.coinbase.source import CoinbaseEvent
from fake_exchange.recording import RecordingError
from fake_exchange.sources import Clock

_MS = 1_000_000
"""ns per ms."""


class CoinbaseReplaySource:
    """Replays a recorded Coinbase session (default: the bundled one), times moved to now.

    `products`: product ids to keep (`BTC-USD`; None: every recorded one). Relative timing
    kept, gaps divided by `speed` (0/inf: as fast as possible, every time = now).
    """

    def __init__(
        self,
        path: Path | str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        products: Sequence[str] | None = None,
        loop_gap: float = 1.0,
    ) -> None:
        self.path = Path(path) if path is not None else coinbase_recording()
        self.speed = speed
        self.loop = loop
        self.keep = None if products is None else set(products)
        self.loop_gap = loop_gap
        self._rec: CoinbaseRecording | None = None
        self._initial: list[RecordedEvent] = []
        self._items: list[RecordedEvent] = []
        self._spans: dict[str, int] = {}
        self._candle_step_s: int | None = None

    def __repr__(self) -> str:
        return f"CoinbaseReplaySource({str(self.path)!r}, speed={self.speed}, loop={self.loop})"

    @property
    def finite(self) -> bool:
        return not self.loop

    def prepare(self) -> None:
        if self._rec is not None:
            return
        rec = load_coinbase_recording(self.path)
        seen: set[tuple[str, str]] = set()
        ids: dict[str, list[int]] = {}
        for item in rec.events:
            pids = cf.products_of(item.channel, item.event)
            if self.keep is not None:
                pids = [p for p in pids if p in self.keep]
            for pid in pids:
                part = cf.only_product(item.channel, item.event, pid)
                one = RecordedEvent(item.ts, item.channel, part, item.ts_ns)
                if part.get("type") == "snapshot" and (item.channel, pid) not in seen:
                    seen.add((item.channel, pid))
                    self._initial.append(one)
                else:
                    self._items.append(one)
                for row in part.get("trades", ()):
                    if str(row["trade_id"]).isdigit():
                        ids.setdefault(pid, []).append(int(row["trade_id"]))
        self._spans = {pid: max(v) - min(v) + 1 for pid, v in ids.items()}
        self._rec = rec

    def products(self) -> list[Payload]:
        self.prepare()
        if self._rec is None:
            raise RecordingError(f"{self.path}: not loaded")
        return self._rec.products

    def _first_ns(self) -> int:
        first = self._items[0] if self._items else (self._initial[0] if self._initial else None)
        return first.ts_ns if first is not None else 0

    def _candle_step(self, moved_ns: int, extra_s: float = 0.0) -> int:
        """Seconds every candle start of a pass moves by, whole intervals: fixed by the first
        shift (the starting state's), plus a later pass's distance from the first."""
        if self._candle_step_s is None:
            moved_s = moved_ns // 1_000_000_000
            self._candle_step_s = moved_s - moved_s % cf.CANDLE_S
        extra = int(extra_s)
        return self._candle_step_s + extra - extra % cf.CANDLE_S

    def initial(self, clock: Clock) -> list[CoinbaseEvent]:
        self.prepare()
        moved = clock() * _MS - self._first_ns()
        step = self._candle_step(moved)
        return [
            CoinbaseEvent(0.0, i.channel, self._shift(i, 0, moved, step), i.ts_ns + moved)
            for i in self._initial
        ]

    def events(self, clock: Clock) -> Iterator[CoinbaseEvent]:
        self.prepare()
        if not self._items:
            return
        fast = self.speed <= 0 or math.isinf(self.speed)
        speed = 1.0 if fast else self.speed
        first_ns = self._items[0].ts_ns
        first_ts = self._items[0].ts
        pass_s = self._items[-1].ts - first_ts + self.loop_gap
        start_ms = clock()
        pass_no = 0
        while True:
            base_ns = (start_ms + int(pass_no * pass_s * 1000 / speed)) * _MS
            wait = self.loop_gap / speed if pass_no and not fast else 0.0
            step = self._candle_step(base_ns - first_ns, pass_no * pass_s / speed)
            for item in self._initial if pass_no else ():
                if item.channel == "candles":
                    continue  # the candles go on; their history is not sent again
                moved = base_ns - first_ns
                event = self._shift(item, pass_no, moved, step)
                if item.channel != "l2_data":
                    event = {**event, "type": "update"}
                yield CoinbaseEvent(wait, item.channel, event, item.ts_ns + moved)
                wait = 0.0
            prev_ts: float | None = None
            for item in self._items:
                if prev_ts is not None and not fast:
                    wait = (item.ts - prev_ts) / speed
                prev_ts = item.ts
                if fast:
                    moved = clock() * _MS - item.ts_ns
                else:
                    moved = base_ns + int((item.ts_ns - first_ns) / speed) - item.ts_ns
                event = self._shift(item, pass_no, moved, step)
                yield CoinbaseEvent(wait, item.channel, event, item.ts_ns + moved)
                wait = 0.0
            if not self.loop:
                return
            pass_no += 1

    def _shift(self, item: RecordedEvent, pass_no: int, moved: int, step: int) -> Payload:
        """A copy of the recorded event with its times (and a later pass's trade ids) moved."""
        event = dict(item.event)
        if item.channel == "l2_data":
            event["updates"] = [
                {**u, "event_time": cf.shift_iso(u["event_time"], moved, 6)}
                for u in event.get("updates", ())
            ]
        elif item.channel == "market_trades":
            rows = []
            for row in event.get("trades", ()):
                row = {**row, "time": cf.shift_iso(row["time"], moved, 6)}
                if pass_no and str(row["trade_id"]).isdigit():
                    span = self._spans.get(row["product_id"], 0)
                    row["trade_id"] = str(int(row["trade_id"]) + pass_no * span)
                rows.append(row)
            event["trades"] = rows
        elif item.channel == "candles":
            event["candles"] = [
                {**c, "start": str(int(c["start"]) + step)} for c in event.get("candles", ())
            ]
        return event


__all__ = ["CoinbaseReplaySource"]
