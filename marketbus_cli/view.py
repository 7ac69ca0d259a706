"""The live terminal view: one row per market, as a bot reads it through ``Consumer``."""

from __future__ import annotations

import math
import time
from collections import deque
from typing import Any

from rich.table import Table

from marketbus.keys import StreamKey
from marketbus.models import Channel, Record


class RateMeter:
    """Records per second per market over a sliding window (pure; pass the clock in)."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._times: dict[tuple[str, str], deque[float]] = {}

    def hit(self, exchange: str, symbol: str, now: float) -> None:
        q = self._times.setdefault((exchange, symbol), deque())
        q.append(now)
        self._prune(q, now)  # bounded even when nobody asks for the rate (tail --json)

    def rate(self, exchange: str, symbol: str, now: float) -> float:
        q = self._times.get((exchange, symbol))
        if not q:
            return 0.0
        self._prune(q, now)
        return len(q) / self.window_s

    def _prune(self, q: deque[float], now: float) -> None:
        while q and q[0] <= now - self.window_s:
            q.popleft()


def _f(v: Any, digits: int = 8) -> str:
    """A price with ``digits`` significant digits, never in exponent notation."""
    if v is None or not math.isfinite(v):
        return "-"
    if v == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(v))), 0)
    text = f"{v:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def render(
    buffers: dict[StreamKey, Any], meter: RateMeter, title: str, now: float | None = None
) -> Table:
    """A rich Table of latest price, bid/ask, spread, ticks/s and age per market."""
    now = time.time() if now is None else now
    table = Table(title=title, expand=False)
    markets = sorted({(k.exchange, k.symbol) for k in buffers})
    widest = max((len(e) + 1 + len(s) for e, s in markets), default=6)
    table.add_column("market", no_wrap=True, min_width=widest)
    for col in ("last", "bid", "ask", "spread bps", "trades", "rec/s", "age"):
        table.add_column(col, justify="right", no_wrap=True)
    for exchange, symbol in markets:
        tk = buffers.get(StreamKey(exchange, symbol, Channel.TICKER))
        tr = buffers.get(StreamKey(exchange, symbol, Channel.TRADES))
        bk = buffers.get(StreamKey(exchange, symbol, Channel.BOOK))
        t = tk.last() if tk is not None else None
        last_trade = tr.last() if tr is not None else None
        top = bk.last() if bk is not None else None
        last = t.get("last") if t else None
        if last_trade and (last is None or (t and last_trade["ts_ms"] >= t["ts_ms"])):
            last = last_trade["price"]
        bid = t.get("bid") if t else None
        ask = t.get("ask") if t else None
        if top is not None and (t is None or top["ts_ms"] >= t["ts_ms"]):
            bid, ask = top["bid"], top["ask"]  # the book's top is the fresher bid/ask
        spread = "-"
        if bid and ask and not (math.isnan(bid) or math.isnan(ask)):
            spread = f"{(ask - bid) / ((ask + bid) / 2) * 1e4:.1f}"
        ts = max((r["ts_ms"] for r in (t, last_trade, top) if r is not None), default=None)
        age = "waiting" if ts is None else f"{max(now - ts / 1000, 0):.1f}s"
        table.add_row(
            f"{exchange}:{symbol}", _f(last), _f(bid), _f(ask), spread,
            str(tr.total_appended if tr is not None else 0),
            f"{meter.rate(exchange, symbol, now):.1f}", age,
        )  # fmt: skip
    if not markets:
        table.add_row("(waiting for data)", *["" for _ in range(7)])
    return table


def record_json(record: Record) -> bytes:
    """One JSON line for ``tail --json``."""
    import orjson

    return orjson.dumps(record.model_dump(mode="json"))
