"""REST polling, for exchanges or channels CCXT has no websocket for (or ``mode = "poll"``).

Pure helpers; the worker's poll loops use them. A polled channel publishes the same
records as the websocket path: trades are fetched from the last one published (the
backfill cursor: exact ids on Binance, time on others) and de-duplicated by the trade-id
tracker; a ticker, book or candle is published when it changed since the last poll.
The first poll of trades only sets the mark, like a websocket that starts from now.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marketbus.models import Channel
from publisher.deriv_feeds import FETCH_METHODS

DEFAULT_POLL_S = 1.0
SAFETY = 1.5
"""Poll this much slower than the exchange's documented rate limit allows."""

WATCH_CAPS: Mapping[Channel, tuple[str, ...]] = {
    Channel.TRADES: ("watchTradesForSymbols", "watchTrades"),
    Channel.TICKER: ("watchTickers", "watchTicker"),
    Channel.BOOK: ("watchOrderBookForSymbols", "watchOrderBook"),
    Channel.CANDLES: ("watchOHLCVForSymbols", "watchOHLCV"),
}
FETCH_CAPS: Mapping[Channel, tuple[str, ...]] = {
    Channel.TRADES: ("fetchTrades",),
    Channel.TICKER: ("fetchTickers", "fetchTicker"),
    Channel.BOOK: ("fetchOrderBook",),
    Channel.CANDLES: ("fetchOHLCV",),
}


def has_any(has: Mapping[str, Any], caps: tuple[str, ...]) -> bool:
    return any(bool(has.get(c)) for c in caps)


def polled(channel: Channel, has: Mapping[str, Any], mode: str) -> bool:
    """Poll this channel: asked to, or CCXT has no websocket method for it here (the
    derivatives channels: ``publisher.deriv_feeds.source`` says, per exchange)."""
    return mode == "poll" or not has_any(has, WATCH_CAPS[channel])


def requests_per_cycle(channel: Channel, n_symbols: int, n_intervals: int, has: Any) -> int:
    """REST calls one poll of ``n_symbols`` markets costs."""
    if channel is Channel.TICKER and has.get("fetchTickers"):
        return 1
    if channel in FETCH_METHODS:  # a derivatives channel: its first method CCXT has here
        first = next((many for cap, _, many in FETCH_METHODS[channel] if has.get(cap)), False)
        return 1 if first else n_symbols
    if channel is Channel.CANDLES:
        return n_symbols * max(1, n_intervals)
    return n_symbols


def poll_interval(requested_s: float | None, requests: int, rate_limit_ms: float) -> float:
    """Seconds between polls: as asked (default 1 s), never faster than the rate limit."""
    floor = requests * max(rate_limit_ms, 0.0) / 1000 * SAFETY
    return max(requested_s if requested_s is not None else DEFAULT_POLL_S, floor)


def same_ticker(a: Any, b: Any) -> bool:
    """Two ticker records with the same content (receive time aside)."""
    if a is None or b is None:
        return False
    return bool(a.model_dump(exclude={"recv_ns"}) == b.model_dump(exclude={"recv_ns"}))
