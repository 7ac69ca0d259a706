"""Replay of a recorded Kraken v1 session: times moved to now, optional speed-up and loop.

The first book snapshot of each pair is the market's starting state (a subscriber gets it,
cut to its depth). Every later frame is pushed as recorded with its times moved to now (level
and trade times by the frame's shift, gaps divided by `speed`). A later snapshot (another
pass of a loop, or one the recording holds) resets the pair's book: v2 subscribers get the
difference as an update, v1 subscribers the snapshot frame. Trade ids are the market's (v1
trades carry none), one counter per pair, so they stay consecutive across passes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from fake_exchange.kraken import frames as kf
from fake_exchange.kraken.frames import Payload
from fake_exchange.kraken.recording import (
    KrakenRecording,
    RecordedFrame,
    kraken_recording,
    load_kraken_recording,
)
from fake_exchange.kraken.source import KrakenEvent
from fake_exchange.recording import RecordingError
from fake_exchange.sources import Clock

_MS = 1_000_000


def _book_data(parts: list[Any]) -> Payload:
    """A v1 book frame's parts merged: `{"as", "bs"}` or `{"a", "b", "c"}`."""
    out: Payload = {}
    for part in parts:
        for key, value in part.items():
            out[key] = [*out.get(key, ()), *value] if isinstance(value, list) else value
    return out


def _moved_levels(side: list[list[str]], moved: int) -> list[list[str]]:
    return [[lv[0], lv[1], kf.seconds_text(kf.seconds_ns(lv[2]) + moved), *lv[3:]] for lv in side]


class KrakenReplaySource:
    """Replays a recorded Kraken v1 session (default: the bundled one), times moved to now.

    `pairs`: v1 `wsname`s to keep (`XBT/CHF`; None: every recorded one).
    """

    def __init__(
        self,
        path: Path | str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        pairs: Sequence[str] | None = None,
        loop_gap: float = 1.0,
    ) -> None:
        self.path = Path(path) if path is not None else kraken_recording()
        self.speed = speed
        self.loop = loop
        self.keep = None if pairs is None else set(pairs)
        self.loop_gap = loop_gap
        self._rec: KrakenRecording | None = None
        self._initial: list[RecordedFrame] = []
        self._items: list[RecordedFrame] = []

    def __repr__(self) -> str:
        return f"KrakenReplaySource({str(self.path)!r}, speed={self.speed}, loop={self.loop})"

    @property
    def finite(self) -> bool:
        return not self.loop

    def prepare(self) -> None:
        if self._rec is not None:
            return
        rec = load_kraken_recording(self.path)
        seen: set[str] = set()
        for f in rec.frames:
            if self.keep is not None and f.pair not in self.keep:
                continue
            snapshot = f.channel.startswith("book") and any("as" in p for p in f.parts)
            if snapshot and f.pair not in seen:
                seen.add(f.pair)
                self._initial.append(f)
            else:
                self._items.append(f)
        self._rec = rec

    def _recording(self) -> KrakenRecording:
        self.prepare()
        if self._rec is None:
            raise RecordingError(f"{self.path}: not loaded")
        return self._rec

    def pairs(self) -> dict[str, Payload]:
        return self._recording().pairs

    def channel_ids(self) -> dict[tuple[str, str], int]:
        return self._recording().channel_ids

    def _first_ns(self) -> int:
        first = self._items[0] if self._items else (self._initial[0] if self._initial else None)
        return int(first.ts * 1e9) if first is not None else 0

    def initial(self, clock: Clock) -> list[KrakenEvent]:
        self.prepare()
        moved = clock() * _MS - self._first_ns()
        return [self._event(0.0, f, moved) for f in self._initial]

    def events(self, clock: Clock) -> Iterator[KrakenEvent]:
        self.prepare()
        if not self._items:
            return
        fast = self.speed <= 0 or math.isinf(self.speed)
        speed = 1.0 if fast else self.speed
        first_ts = self._items[0].ts
        pass_s = self._items[-1].ts - first_ts + self.loop_gap
        start_ms = clock()
        pass_no = 0
        while True:
            base_ns = (start_ms + int(pass_no * pass_s * 1000 / speed)) * _MS
            wait = self.loop_gap / speed if pass_no and not fast else 0.0
            for f in self._initial if pass_no else ():
                yield self._event(wait, f, base_ns - int(first_ts * 1e9))
                wait = 0.0
            prev: float | None = None
            for f in self._items:
                if prev is not None and not fast:
                    wait = (f.ts - prev) / speed
                prev = f.ts
                rec_ns = int(f.ts * 1e9)
                if fast:
                    moved = clock() * _MS - rec_ns
                else:
                    moved = base_ns + int((rec_ns - int(first_ts * 1e9)) / speed) - rec_ns
                yield self._event(wait, f, moved)
                wait = 0.0
            if not self.loop:
                return
            pass_no += 1

    @staticmethod
    def _event(delay: float, f: RecordedFrame, moved: int) -> KrakenEvent:
        """The frame's data with its times moved by `moved` ns."""
        ts_ns = int(f.ts * 1e9) + moved
        data: Any
        if f.channel.startswith("book"):
            data = {
                k: _moved_levels(v, moved) if isinstance(v, list) else v
                for k, v in _book_data(f.parts).items()
            }
        elif f.channel == "trade":
            data = _moved_levels(f.parts[0], moved)
        else:
            data = f.parts[0]
        return KrakenEvent(delay, f.channel, f.pair, data, ts_ns, f.text)


__all__ = ["KrakenReplaySource"]
