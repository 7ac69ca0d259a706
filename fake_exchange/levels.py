"""One market's order book in the exchange's own strings, kept sorted: what the push fakes
(OKX, Bybit) mirror and snapshot.

Levels are stored exactly as received (`[px, sz, ...]`): OKX's checksum runs over the strings
as sent, and a snapshot must show the prices the updates used. Sides are dicts plus sorted key
lists (bisect), so applying an update and taking the top N stay cheap for the few hundred
levels these exchanges send. Pure and synchronous.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from typing import Self

Level = list[str]
"""A book level as the exchange sends it: [price, size, ...exchange extras]."""


class _Side:
    """Price -> level of one side; `keys` ascending (bids store negated prices)."""

    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.keys: list[float] = []
        self.levels: dict[float, Level] = {}

    def set(self, level: Sequence[str]) -> None:
        key = self.sign * float(level[0])
        if float(level[1]) == 0.0:
            if self.levels.pop(key, None) is not None:
                del self.keys[bisect.bisect_left(self.keys, key)]
            return
        if key not in self.levels:
            bisect.insort(self.keys, key)
        self.levels[key] = list(level)

    def top(self, n: int) -> list[Level]:
        return [self.levels[k] for k in self.keys[:n]]

    def __len__(self) -> int:
        return len(self.keys)


class LevelBook:
    """Price levels of one market plus the last sequence id and exchange time applied."""

    __slots__ = ("_asks", "_bids", "inst_id", "seq_id", "ts_ms")

    def __init__(self, inst_id: str, seq_id: int = 0, ts_ms: int = 0) -> None:
        self.inst_id = inst_id
        self.seq_id = seq_id
        self.ts_ms = ts_ms
        self._bids = _Side(-1.0)
        self._asks = _Side(1.0)

    @classmethod
    def from_levels(
        cls,
        inst_id: str,
        bids: Iterable[Sequence[str]],
        asks: Iterable[Sequence[str]],
        seq_id: int = 0,
        ts_ms: int = 0,
    ) -> Self:
        book = cls(inst_id, seq_id, ts_ms)
        book.apply(asks, bids)
        return book

    def copy(self) -> Self:
        return type(self).from_levels(
            self.inst_id, self.bids(), self.asks(), self.seq_id, self.ts_ms
        )

    def clear(self) -> None:
        self._bids = _Side(-1.0)
        self._asks = _Side(1.0)

    def apply(self, asks: Iterable[Sequence[str]], bids: Iterable[Sequence[str]]) -> None:
        """Set levels; a size of 0 removes the level."""
        for lv in asks:
            self._asks.set(lv)
        for lv in bids:
            self._bids.set(lv)

    def bids(self, n: int | None = None) -> list[Level]:
        """Best first."""
        return self._bids.top(len(self._bids) if n is None else n)

    def asks(self, n: int | None = None) -> list[Level]:
        """Best first."""
        return self._asks.top(len(self._asks) if n is None else n)

    def best(self) -> tuple[Level | None, Level | None]:
        """(best bid, best ask)."""
        bids, asks = self._bids.top(1), self._asks.top(1)
        return (bids[0] if bids else None, asks[0] if asks else None)

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def __repr__(self) -> str:
        bid, ask = self.best()
        return (
            f"{type(self).__name__}({self.inst_id!r}, seq={self.seq_id}, {len(self._bids)} "
            f"bids, {len(self._asks)} asks, best {bid and bid[0]}/{ask and ask[0]})"
        )


__all__ = ["Level", "LevelBook"]
