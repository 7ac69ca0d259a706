"""Trade-id continuity per market: the only way to see what CCXT or the network lost.

Pure. Numeric ids (Binance) must increase by one; a jump is a gap (counted), a
repeat or a step back is a duplicate (skipped, so each trade is published once).
Non-numeric ids are de-duplicated against a small recent set.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass
class TradeIdTracker:
    recent_size: int = 10_000
    last: dict[str, int] = field(default_factory=dict)
    gaps: int = 0
    missing: int = 0
    duplicates: int = 0
    _recent: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)

    def admit(self, symbol: str, trade_id: str) -> bool:
        """True if this trade is new for ``symbol``; counts gaps on the way."""
        try:
            n = int(trade_id)
        except ValueError:
            return self._admit_opaque(symbol, trade_id)
        prev = self.last.get(symbol)
        if prev is not None:
            if n <= prev:
                self.duplicates += 1
                return False
            if n != prev + 1:
                self.gaps += 1
                self.missing += n - prev - 1
        self.last[symbol] = n
        return True

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
