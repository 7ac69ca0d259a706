"""Where each derivatives channel comes from on an exchange: what CCXT offers for it. Pure.

In order of preference:

0. an exchange's own row (:data:`EXCHANGE_FEEDS`), where CCXT carries a channel inside another
   one's structure: Binance USD-M's funding rate comes in the ``markPrice@1s`` frames
   ``watch_mark_prices`` subscribes (CCXT 4.5.90 has no ``watch_funding_rate`` there);
1. ``TICKER``: the exchange's own ticker carries it (Bybit linear tickers hold the funding
   rate, mark and index price and open interest): the ``tickers`` subscription feeds it, no
   subscription of its own (one ``watch_tickers`` holds it, shared with channel ``ticker``);
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

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from marketbus.models import DERIVATIVES, Channel
from publisher import okx_index

MARK_INDEX: dict[
    str, tuple[Callable[[Mapping[str, Any], list[str]], list[str]], dict[str, str]]
] = {
    "okx": (okx_index.index_symbols, okx_index.WATCH_PARAMS),
}
"""Exchanges whose mark price frames lack the index price, which another subscription carries:
(the symbols to watch for these contracts, the ``watch_tickers`` params). OKX: its
``index-tickers`` channel, joined in by ``publisher.okx_index``."""


class Feed(StrEnum):
    TICKER = "ticker"
    WATCH = "watch"
    POLL = "poll"
    NONE = "none"


TICKER_CARRIES: dict[str, frozenset[Channel]] = {
    "bybit": frozenset({Channel.FUNDING, Channel.MARK, Channel.OPEN_INTEREST}),
}
"""Exchanges whose contract tickers carry these channels' values (read by
``publisher.derivatives.from_ticker_info``)."""

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


@dataclass(frozen=True)
class Source:
    """How one channel is fed: the feed, and the CCXT method (``None`` for TICKER/NONE);
    ``many``: the method takes a list of symbols."""

    feed: Feed
    method: str | None = None
    many: bool = False


EXCHANGE_FEEDS: dict[str, dict[Channel, Source]] = {
    # the mark price stream also carries the funding rate and next funding time (r, T); the
    # tap reads them (publisher.binanceusdm.funding_from_mark_price). Mark price, liquidations
    # and open interest take the generic rows: watch_mark_prices, watch_liquidations_for_symbols
    # (forceOrder), fetch_open_interest (REST /fapi/v1/openInterest, polled)
    "binanceusdm": {Channel.FUNDING: Source(Feed.WATCH, "watch_mark_prices", True)},
}
"""Per exchange, the websocket feed of a channel where the generic rows would miss it."""


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
        own = EXCHANGE_FEEDS.get(exchange, {}).get(channel)
        if own is not None and own.method is not None and has.get(_has_key(own.method)):
            return own
        if channel in TICKER_CARRIES.get(exchange, ()) and (
            has.get("watchTickers") or has.get("watchTicker")
        ):
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
    "EXCHANGE_FEEDS",
    "FETCH_METHODS",
    "TICKER_CARRIES",
    "WATCH_METHODS",
    "Feed",
    "Source",
    "is_contract",
    "source",
]
