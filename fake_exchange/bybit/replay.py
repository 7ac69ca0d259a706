"""Replay of a recorded Bybit v5 session: time shifted to now, optional speed-up and loop.

The first book and ticker snapshot of each topic are the market's starting state (a client
gets them on subscribe, as from Bybit); every later frame is pushed as recorded, only its times
moved. Topics map 1:1 except books: the recorded book (any depth) feeds every depth a client
subscribes to (`market.DepthView`). With `loop`, a pass starts `loop_gap` recorded seconds
after the last frame, pushes the starting snapshots again and gives its trades new ids (numeric
ids move by the pass's span, UUIDs are re-derived), so ids stay unique.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from fake_exchange.bybit import frames as yf
from fake_exchange.bybit.frames import Payload
from fake_exchange.bybit.recording import (
    BybitRecording,
    RecordedPush,
    bybit_recording,
    load_bybit_recording,
)
from fake_exchange.bybit.source import BybitEvent
from fake_exchange.recording import RecordingError
from fake_exchange.sources import Clock

KLINE_MS = {i: int(i) * 60_000 for i in yf.KLINE_INTERVALS if i.isdigit()} | {
    "D": 86_400_000,
    "W": 604_800_000,
}
"""Kline intervals in ms ("M", months, are not of one length: moved by whole ms)."""
_PASS_IDS = uuid.UUID("6f0e1c4e-5b59-4c53-9a4b-0a7d1f6a2b3c")
"""Namespace of the trade UUIDs of a looped pass (uuid5 of the recorded id and the pass)."""


def _time_map(
    fast: bool, clock: Clock, base_ms: float, first_ms: float, speed: float
) -> Callable[[int], int]:
    """Recorded ms -> now-based ms: gaps divided by speed, or everything now (fast mode)."""
    if fast:
        return lambda _ms: clock()
    return lambda ms: int(base_ms + (ms - first_ms) / speed)


class BybitReplaySource:
    """Replays a recorded Bybit session (default: the bundled one), timestamps shifted to now.

    `symbols`: Bybit ids to keep (`BTCUSDT`; None: every recorded one). Relative timing kept,
    gaps divided by `speed` (0/inf: as fast as possible, every time = now).
    """

    def __init__(
        self,
        path: Path | str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        symbols: Sequence[str] | None = None,
        loop_gap: float = 1.0,
    ) -> None:
        self.path = Path(path) if path is not None else bybit_recording()
        self.speed = speed
        self.loop = loop
        self.symbols = None if symbols is None else set(symbols)
        self.loop_gap = loop_gap
        self._rec: BybitRecording | None = None
        self._initial: list[RecordedPush] = []
        self._items: list[RecordedPush] = []
        self._spans: dict[tuple[str, str], tuple[int, int]] = {}

    def __repr__(self) -> str:
        return f"BybitReplaySource({str(self.path)!r}, speed={self.speed}, loop={self.loop})"

    @property
    def finite(self) -> bool:
        return not self.loop

    def prepare(self) -> None:
        if self._rec is not None:
            return
        rec = load_bybit_recording(self.path)
        seen: set[tuple[str, str]] = set()
        ids: dict[tuple[str, str], list[int]] = {}
        seqs: dict[tuple[str, str], list[int]] = {}
        for f in rec.frames:
            parsed = yf.parse_topic(f.frame["topic"])
            if parsed is None or (self.symbols is not None and parsed[2] not in self.symbols):
                continue
            key = (f.category, f.frame["topic"])
            if parsed[0] in ("orderbook", "tickers") and key not in seen:
                seen.add(key)
                if f.frame.get("type") == "snapshot":
                    self._initial.append(f)
                    continue
            if parsed[0] == "publicTrade":
                for row in f.frame["data"]:
                    if str(row["i"]).isdigit():
                        ids.setdefault(key, []).append(int(row["i"]))
                    seqs.setdefault(key, []).append(int(row.get("seq", 0)))
            self._items.append(f)
        for key in seqs:
            i, s = ids.get(key, [0]), seqs[key]
            self._spans[key] = (max(i) - min(i) + 1, max(s) - min(s) + 1)
        self._rec = rec

    def instruments(self) -> dict[str, list[Payload]]:
        self.prepare()
        if self._rec is None:
            raise RecordingError(f"{self.path}: not loaded")
        return self._rec.instruments

    def initial(self) -> list[BybitEvent]:
        self.prepare()
        return [BybitEvent(0.0, f.category, f.frame["topic"], f.frame) for f in self._initial]

    def events(self, clock: Clock) -> Iterator[BybitEvent]:
        self.prepare()
        if not self._items:
            return
        fast = self.speed <= 0 or math.isinf(self.speed)
        speed = 1.0 if fast else self.speed
        first_ms = self._items[0].ts * 1000
        pass_ms = (self._items[-1].ts - self._items[0].ts + self.loop_gap) * 1000
        start_ms = clock()
        pass_no = 0
        while True:
            base_ms = start_ms + pass_no * pass_ms / speed
            tmap = _time_map(fast, clock, base_ms, first_ms, speed)
            offset = tmap(int(first_ms)) - int(first_ms)
            wait = self.loop_gap / speed if pass_no and not fast else 0.0
            for item in self._initial if pass_no else ():
                frame = self._shift(item, pass_no, tmap, offset)
                yield BybitEvent(wait, item.category, frame["topic"], frame)
                wait = 0.0
            prev_ts: float | None = None
            for item in self._items:
                if prev_ts is not None and not fast:
                    wait = (item.ts - prev_ts) / speed
                prev_ts = item.ts
                frame = self._shift(item, pass_no, tmap, offset)
                yield BybitEvent(wait, item.category, frame["topic"], frame)
                wait = 0.0
            if not self.loop:
                return
            pass_no += 1

    def _shift(
        self, item: RecordedPush, pass_no: int, tmap: Callable[[int], int], offset: int
    ) -> Payload:
        """A copy of the recorded frame with its times (and a later pass's trade ids) moved.

        A kline's bounds move by the pass's offset rounded to its interval, the same for every
        frame of a candle: it stays one aligned candle however fast the replay goes."""
        frame = dict(item.frame)
        ts = int(frame["ts"])
        moved = tmap(ts) - ts
        frame["ts"] = ts + moved
        if "cts" in frame:
            frame["cts"] = int(frame["cts"]) + moved
        kind = frame["topic"].split(".", 1)[0]
        if kind == "publicTrade":
            span, seq_span = self._spans.get((item.category, frame["topic"]), (0, 0))
            rows = []
            for row in frame["data"]:
                row = dict(row, T=int(row["T"]) + moved)
                if pass_no:
                    rid = str(row["i"])
                    row["i"] = (
                        str(int(rid) + pass_no * span)
                        if rid.isdigit()
                        else str(uuid.uuid5(_PASS_IDS, f"{rid}/{pass_no}"))
                    )
                    row["seq"] = int(row.get("seq", 0)) + pass_no * seq_span
                rows.append(row)
            frame["data"] = rows
        elif kind == "kline":
            rows = []
            for k in frame["data"]:
                iv = KLINE_MS.get(str(k.get("interval")), 1)
                step = offset // iv * iv
                start, end = int(k["start"]) + step, int(k["end"]) + step
                rows.append(dict(k, start=start, end=end, timestamp=int(k["timestamp"]) + moved))
            frame["data"] = rows
        return frame


__all__ = ["BybitReplaySource"]
