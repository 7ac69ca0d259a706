"""Trade-id continuity per market: the only way to see what CCXT or the network lost.

Pure. Numeric ids (Binance) must increase by one; a jump is a gap (counted), a
repeat or a step back is a duplicate (skipped, so each trade is published once).
Non-numeric ids are de-duplicated against a small recent set.

One bad id must not stop a market: an id more than ``jump_limit`` away from the last one
(a corrupt frame, or the exchange restarting its sequence) does not become the new floor at
once. The trade is published and held as a *suspect*; the next id decides. If it follows the
suspect, the exchange moved to a new range: the tracker re-anchors there (a reset, counted
and reported). If it follows the old floor, the suspect was a one-off outlier (counted) and
the market goes on as before. Ids beyond a signed 64-bit integer are not numbers any
exchange uses: they are tracked as opaque ids (counted as out of range).

Some exchanges' ids are unique but not consecutive per market (their profile's
`unique_trade_ids`: Bybit's linear ids are UUIDs, its spot ids one counter shared by every spot
symbol, so a symbol's ids jump): there a gap cannot be seen in the ids, so they are only
de-duplicated, like opaque ids.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from publisher.exchanges import profile

MAX_NUMERIC_ID = 2**63 - 1
JUMP_LIMIT = 1_000_000
"""Ids further than this from the last one are suspect. Binance's busiest market makes a few
million trades a day, so a real gap this wide means hours of outage; a backfill covers those."""

OnAnomaly = Callable[[str, str, int, int], None]
"""``(kind, symbol, last, id)``, kind "reset" or "outlier": for the caller to log."""


@dataclass
class TradeIdTracker:
    recent_size: int = 10_000
    jump_limit: int = JUMP_LIMIT
    on_anomaly: OnAnomaly | None = None
    last: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    resets: int = 0
    outliers: int = 0
    out_of_range: int = 0
    consecutive: bool = True
    """False: ids are only checked for duplicates (the profile's `unique_trade_ids`)."""
    _suspect: dict[str, int] = field(default_factory=dict)
    _recent: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    @classmethod
    def for_exchange(cls, exchange: str, on_anomaly: OnAnomaly | None = None) -> TradeIdTracker:
        """The tracker that fits ``exchange``'s ids."""
        return cls(on_anomaly=on_anomaly, consecutive=not profile(exchange).unique_trade_ids)

    def admit(self, symbol: str, trade_id: str) -> bool:
        """True if this trade is new for ``symbol``; counts gaps on the way."""
        if not self.consecutive:
            return self._admit_opaque(symbol, trade_id)
        try:
            n = int(trade_id)
        except ValueError:
            return self._admit_opaque(symbol, trade_id)
        if not 0 <= n <= MAX_NUMERIC_ID:
            self.out_of_range += 1
            return self._admit_opaque(symbol, trade_id)
        prev = self.last.get(symbol)
        if prev is None:
            self.last[symbol] = n
            return True
        if self._suspect:
            suspect = self._suspect.pop(symbol, None)
            if suspect is not None and self._settle(symbol, prev, suspect, n):
                return True
        if abs(n - prev) > self.jump_limit:
            self._suspect[symbol] = n  # published, but not a floor until the next id agrees
            return True
        if n <= prev:
            self.duplicates += 1
            return False
        if n != prev + 1:
            self.gaps += 1
            self.missing += n - prev - 1
        self.last[symbol] = n
        return True

    def _settle(self, symbol: str, prev: int, suspect: int, n: int) -> bool:
        """The id after a suspect: True when it confirmed a reset (and was admitted)."""
        if abs(n - suspect) <= self.jump_limit and abs(n - prev) > self.jump_limit:
            self.resets += 1
            self.last[symbol] = n
            if self.on_anomaly is not None:
                self.on_anomaly("reset", symbol, prev, suspect)
            return True
        self.outliers += 1
        if self.on_anomaly is not None:
            self.on_anomaly("outlier", symbol, prev, suspect)
        return False

    def _admit_opaque(self, symbol: str, trade_id: str) -> bool:
        key = (symbol, trade_id)
        if key in self._recent:
            self.duplicates += 1
            return False
        self._recent[key] = None
        if len(self._recent) > self.recent_size:
            self._recent.popitem(last=False)
        return True

    def forget(self, symbol: str) -> None:
        """After an unsubscribe: the next trade of ``symbol`` starts a new run, not a gap."""
        self.last.pop(symbol, None)
        self._suspect.pop(symbol, None)
