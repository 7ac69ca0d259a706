"""One Kraken pair's book in v1 strings, truncated to its depth, and the v2 views cut from it.

Kraken sends no deletion for a level that a move pushes past the subscribed depth: a client
(and this mirror) truncates its book to that depth after every update, or stale levels pile
up beyond it (tested on the recording: with truncation every recorded checksum matches).
A v2 subscriber of depth d sees the top d levels: `View.diff` is what changed there since its
last message (levels gone with qty 0, new and changed ones with their qty), so a client that
applies it and truncates to d holds exactly the exchange's top d. Pure and synchronous.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from fake_exchange.kraken import frames as kf
from fake_exchange.kraken.frames import Payload, V1Level

Pair = tuple[str, str]
"""(price, qty) texts."""


class _Side:
    __slots__ = ("keys", "levels", "sign")

    def __init__(self, sign: float) -> None:
        self.sign = sign
        self.keys: list[float] = []
        self.levels: dict[float, list[str]] = {}

    def set(self, level: V1Level) -> None:
        key = self.sign * float(level[0])
        if float(level[1]) == 0.0:
            if self.levels.pop(key, None) is not None:
                del self.keys[bisect.bisect_left(self.keys, key)]
            return
        if key not in self.levels:
            bisect.insort(self.keys, key)
        self.levels[key] = [str(x) for x in level[:3]]

    def truncate(self, depth: int) -> None:
        for key in self.keys[depth:]:
            del self.levels[key]
        del self.keys[depth:]

    def top(self, n: int) -> list[list[str]]:
        return [self.levels[k] for k in self.keys[:n]]

    def __len__(self) -> int:
        return len(self.keys)


class KrakenBook:
    """Bids and asks in v1 strings (`[price, volume, time]`), at most `depth` a side."""

    __slots__ = ("_asks", "_bids", "depth", "ts_ns")

    def __init__(self, depth: int = 1000) -> None:
        self.depth = depth
        self.ts_ns = 0
        self._bids = _Side(-1.0)
        self._asks = _Side(1.0)

    def reset(self, asks: Iterable[V1Level], bids: Iterable[V1Level], depth: int) -> None:
        self.depth = depth
        self._bids = _Side(-1.0)
        self._asks = _Side(1.0)
        self.apply(asks, bids)

    def apply(self, asks: Iterable[V1Level], bids: Iterable[V1Level]) -> None:
        """Set levels in order (qty 0 removes), then truncate to the depth."""
        for lv in asks:
            self._asks.set(lv)
        for lv in bids:
            self._bids.set(lv)
        self._asks.truncate(self.depth)
        self._bids.truncate(self.depth)

    def bids(self, n: int | None = None) -> list[list[str]]:
        return self._bids.top(len(self._bids) if n is None else n)

    def asks(self, n: int | None = None) -> list[list[str]]:
        return self._asks.top(len(self._asks) if n is None else n)

    def checksum_v1(self) -> int:
        """v1's checksum: the strings as they are."""
        return kf.checksum(
            [(p, q) for p, q, *_ in self.asks(10)], [(p, q) for p, q, *_ in self.bids(10)]
        )

    def checksum_v2(self, price_decimals: int, qty_decimals: int) -> int:
        """v2's checksum: every number written with the pair's precision."""

        def cut(side: list[list[str]]) -> list[Pair]:
            return [(kf.fixed(p, price_decimals), kf.fixed(q, qty_decimals)) for p, q, *_ in side]

        return kf.checksum(cut(self.asks(10)), cut(self.bids(10)))

    def __len__(self) -> int:
        return len(self._bids) + len(self._asks)


@dataclass(slots=True)
class View:
    """What the subscribers of one (pair, depth) were last sent: the top `depth` a side."""

    depth: int
    decimals: tuple[int, int]
    """The pair's (price, qty) decimals: v2 numbers are written at that precision."""
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)

    def snapshot(self, book: KrakenBook) -> tuple[list[Payload], list[Payload]]:
        """The top `depth` levels now (v2 rows, best first); the view starts from them."""
        bids, asks = book.bids(self.depth), book.asks(self.depth)
        self.bids = {p: q for p, q, *_ in bids}
        self.asks = {p: q for p, q, *_ in asks}
        return kf.levels(bids, self.decimals), kf.levels(asks, self.decimals)

    def diff(self, book: KrakenBook) -> tuple[list[Payload], list[Payload]]:
        """Changes of the top `depth` since the last call (empty: nothing to send)."""
        new_bids = {p: q for p, q, *_ in book.bids(self.depth)}
        new_asks = {p: q for p, q, *_ in book.asks(self.depth)}
        out = (
            kf.levels(_changes(self.bids, new_bids), self.decimals),
            kf.levels(_changes(self.asks, new_asks), self.decimals),
        )
        self.bids, self.asks = new_bids, new_asks
        return out


def _changes(old: dict[str, str], new: dict[str, str]) -> list[list[str]]:
    gone = [[p, "0"] for p in old if p not in new]
    moved = [[p, q] for p, q in new.items() if old.get(p) != q]
    return [*gone, *moved]


__all__ = ["KrakenBook", "View"]
