"""Live candles built from the trades a source sends, as OKX pushes them on candle<bar>.

A candle that ended is handed out once more with confirm "1" before the next live row, as OKX
does, so a client sees every bar closed.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from fake_exchange.okx import frames as of


@dataclass(slots=True)
class _Candle:
    start: int
    o: Decimal
    h: Decimal
    low: Decimal
    c: Decimal
    vol: Decimal = Decimal(0)
    vol_ccy: Decimal = Decimal(0)

    def row(self, confirm: bool) -> list[str]:
        return of.candle_row(
            self.start,
            of.fmt(self.o),
            of.fmt(self.h),
            of.fmt(self.low),
            of.fmt(self.c),
            of.fmt(self.vol),
            of.fmt(self.vol_ccy),
            confirm,
        )


class CandleBuilder:
    """The live candle of one (instrument, bar), fed with the trades sent."""

    def __init__(self, bar: str) -> None:
        self.bar = bar
        self.length = of.bar_ms(bar)
        self.current: _Candle | None = None
        self.closed: deque[_Candle] = deque()
        """Candles that ended, until their confirmed row was handed out."""

    def add_trade(self, ts_ms: int, px: Decimal, sz: Decimal) -> None:
        c = self._roll(of.bar_start(ts_ms, self.bar), px)
        if c.vol == 0:
            c.o = c.h = c.low = c.c = px
        c.h, c.low, c.c = max(c.h, px), min(c.low, px), px
        c.vol += sz
        c.vol_ccy += px * sz

    def _roll(self, start: int, px: Decimal) -> _Candle:
        """The candle opening at `start`; the previous one joins `closed`."""
        if self.current is not None and self.current.start == start:
            return self.current
        if self.current is not None:
            self.closed.append(self.current)
            px = self.current.c
        self.current = _Candle(start, px, px, px, px)
        return self.current

    def take(self, now_ms: int, price: Decimal) -> list[str]:
        """Next row to send: a just-closed candle (confirm 1) first, else the live one."""
        if self.current is None or now_ms >= self.current.start + self.length:
            current = self._roll(of.bar_start(now_ms, self.bar), price)
        else:
            current = self.current
        if self.closed:
            return self.closed.popleft().row(True)
        return current.row(False)


__all__ = ["CandleBuilder"]
