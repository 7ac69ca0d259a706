"""Where each derivatives channel comes from on an exchange: what CCXT offers for it. Pure.

In order of preference:

0. an exchange's own row (its profile's ``feeds``), where CCXT carries a channel inside another
   one's structure: Binance USD-M's funding rate comes in the ``markPrice@1s`` frames
   ``watch_mark_prices`` subscribes (CCXT 4.5.90 has no ``watch_funding_rate`` there);
1. ``TICKER``: the exchange's own ticker carries it (its profile's ``ticker_carries``: Bybit
   linear tickers hold the funding rate, mark and index price and open interest): the
   ``tickers`` subscription feeds it, no subscription of its own (one ``watch_tickers`` holds
   it, shared with channel ``ticker``);
2. ``WATCH``: a CCXT websocket method (``watch_funding_rates``, ``watch_mark_prices``,
   ``watch_liquidations_for_symbols``, or their one-symbol forms), as the adapter's ``has``
   declares them;
3. ``POLL``: a CCXT REST method on a timer (``fetch_open_interests``/``fetch_open_interest``,
   ``fetch_funding_rates``..., at the polling pace), where no websocket carries it (OKX's open
   interest: CCXT 4.5.90 does not read OKX's ``open-interest`` channel) or with ``mode =
   "poll"``; a mark price may come from a REST ticker's ``markPrice`` (Bybit has no
   ``fetch_mark_price``);
4. ``NONE``: CCXT offers neither (public liquidations over REST): not published, said once in
   the log.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marketbus.models import DERIVATIVES, Channel
from publisher.exchanges import profile
from publisher.profile import Feed, Source

WATCH_METHODS: dict[Channel, tuple[tuple[str, str, bool], ...]] = {
    # (CCXT ``has`` key, method, takes a list of symbols), in order of preference
    Channel.FUNDING: (("watchFundingRates", "watch_funding_rates", True),
                      ("watchFundingRate", "watch_funding_rate", False)),
    Channel.MARK: (("watchMarkPrices", "watch_mark_prices", True),
                   ("watchMarkPrice", "watch_mark_price", False)),
    Channel.OPEN_INTEREST: (),
    Channel.LIQUIDATIONS: (("watchLiquidationsForSymbols", "watch_liquidations_for_symbols", True),
                           ("watchLiquidations", "watch_liquidations", False)),
}  # fmt: skip
UNWATCH_METHODS: dict[str, tuple[str, str, bool]] = {
    # a derivatives watch method -> (CCXT ``has`` key, its unwatch method, takes a list)
    "watch_mark_prices": ("unWatchMarkPrices", "un_watch_mark_prices", True),
    "watch_mark_price": ("unWatchMarkPrice", "un_watch_mark_price", False),
    "watch_funding_rates": ("unWatchFundingRates", "un_watch_funding_rates", True),
    "watch_funding_rate": ("unWatchFundingRate", "un_watch_funding_rate", False),
    "watch_liquidations_for_symbols": (
        "unWatchLiquidationsForSymbols", "un_watch_liquidations_for_symbols", True,
    ),
    "watch_liquidations": ("unWatchLiquidations", "un_watch_liquidations", False),
}  # fmt: skip
FETCH_METHODS: dict[Channel, tuple[tuple[str, str, bool], ...]] = {
    Channel.FUNDING: (("fetchFundingRates", "fetch_funding_rates", True),
                      ("fetchFundingRate", "fetch_funding_rate", False)),
    Channel.MARK: (("fetchMarkPrices", "fetch_mark_prices", True),
                   ("fetchMarkPrice", "fetch_mark_price", False),
                   ("fetchTickers", "fetch_tickers", True), ("fetchTicker", "fetch_ticker", False)),
    Channel.OPEN_INTEREST: (("fetchOpenInterests", "fetch_open_interests", True),
                            ("fetchOpenInterest", "fetch_open_interest", False)),
    Channel.LIQUIDATIONS: (),
}  # fmt: skip


def _first(has: Mapping[str, Any], methods: tuple[tuple[str, str, bool], ...]) -> Source | None:
    for cap, method, many in methods:
        if has.get(cap):
            return Source(Feed.POLL, method, many)
    return None


def source(exchange: str, channel: Channel, has: Mapping[str, Any], mode: str = "ws") -> Source:
    """Where ``channel`` comes from on ``exchange`` (``has``: the adapter's capabilities)."""
    if channel not in DERIVATIVES:
        raise ValueError(f"{channel.value} is not a derivatives channel")
    if mode != "poll":
        p = profile(exchange)
        own = p.feeds.get(channel)
        if own is not None and own.method is not None and has.get(_has_key(own.method)):
            return own
        if channel in p.ticker_carries and (has.get("watchTickers") or has.get("watchTicker")):
            return Source(Feed.TICKER)
        watch = _first(has, WATCH_METHODS[channel])
        if watch is not None:
            return Source(Feed.WATCH, watch.method, watch.many)
    return _first(has, FETCH_METHODS[channel]) or Source(Feed.NONE)


def _has_key(method: str) -> str:
    """CCXT's ``has`` key of a method: ``watch_mark_prices`` -> ``watchMarkPrices``."""
    head, *rest = method.split("_")
    return head + "".join(w.capitalize() for w in rest)


def is_contract(market: Mapping[str, Any] | None) -> bool:
    """A market derivatives channels exist for (a perpetual or a future, CCXT's
    ``contract``); False for spot, margin and unknown markets."""
    return bool(market and market.get("contract"))


__all__ = [
    "FETCH_METHODS",
    "WATCH_METHODS",
    "Feed",
    "Source",
    "is_contract",
    "source",
]
