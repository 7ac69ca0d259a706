"""One instrument's order book in OKX's own strings, kept sorted for the checksum.

Levels are stored exactly as received (`[px, sz, "0", orders]`) because OKX's CRC32 runs over
the strings as sent: "30236" and "30236.0" would give different checksums. Sides are kept as
dicts plus sorted key lists (bisect), so applying an update and taking the top 25 stay cheap
for the few hundred levels OKX sends. Pure and synchronous: the sources, the server mirror and
the tests all use it.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

from fake_exchange.okx import frames as of
from fake_exchange.okx.frames import Level, Payload

SNAPSHOT_DEPTH = 400
"""Levels a side in a `books` snapshot (OKX sends 400)."""


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


class OkxBook:
    """Price levels of one instrument plus the last seqId and exchange time applied."""

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
    ) -> OkxBook:
        book = cls(inst_id, seq_id, ts_ms)
        book.apply(asks, bids)
        return book

    def copy(self) -> OkxBook:
        return OkxBook.from_levels(self.inst_id, self.bids(), self.asks(), self.seq_id, self.ts_ms)

    def reset(self, row: Payload) -> None:
        """Replace everything with a snapshot row."""
        self._bids = _Side(-1.0)
        self._asks = _Side(1.0)
        self.update(row)

    def apply(self, asks: Iterable[Sequence[str]], bids: Iterable[Sequence[str]]) -> None:
        """Set levels; a size of 0 removes the level."""
        for lv in asks:
            self._asks.set(lv)
        for lv in bids:
            self._bids.set(lv)

    def update(self, row: Payload) -> None:
        """Apply a `books` row (snapshot or update): levels, then seqId and ts when present."""
        self.apply(row.get("asks", ()), row.get("bids", ()))
        if "seqId" in row:
            self.seq_id = int(row["seqId"])
        if "ts" in row:
            self.ts_ms = int(row["ts"])

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

    def checksum(self) -> int:
        """OKX's CRC32 over the top 25 levels, interleaved bid:ask."""
        depth = of.CHECKSUM_DEPTH
        return of.checksum(self._bids.top(depth), self._asks.top(depth))

    def verify(self, row: Payload) -> bool:
        """Whether a received row's checksum matches this book (after applying the row)."""
        return "checksum" not in row or int(row["checksum"]) == self.checksum()

    def snapshot_row(self, depth: int = SNAPSHOT_DEPTH, seq_shift: int = 0) -> Payload:
        """The `books` snapshot row of the current state: prevSeqId -1, checksum computed."""
        return of.book_row(
            self.asks(depth),
            self.bids(depth),
            self.ts_ms,
            checksum=self.checksum(),
            seq_id=self.seq_id + seq_shift,
            prev_seq_id=-1,
        )

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)

    def __repr__(self) -> str:
        bid, ask = self.best()
        return (
            f"OkxBook({self.inst_id!r}, seq={self.seq_id}, {len(self._bids)} bids, "
            f"{len(self._asks)} asks, best {bid and bid[0]}/{ask and ask[0]})"
        )


__all__ = ["SNAPSHOT_DEPTH", "OkxBook"]
