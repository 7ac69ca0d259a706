"""What the publisher knows about Binance USD-M futures (CCXT ``binanceusdm``), on top of
``ccxt.pro.binanceusdm`` 4.5.90 (a subclass of ``ccxt.pro.binance``). Pure.

- **Markets**: linear perpetuals and quarterly futures (``fetchMarkets.types = ['linear']``,
  ``defaultType = 'swap'``); no spot, so a loose ``BTCUSDT`` is the perpetual (the market
  whose exchange id it is: ``marketbus.symbols``).
- **Trades and tickers**: Binance's own parse functions, tapped as for spot (``parse_ws_trade``,
  ``parse_ws_ticker``): ``@aggTrade`` (ids consecutive per market: gaps are counted) and
  ``@ticker``, whose USD-M form carries no best bid/ask (only ``@bookTicker`` does).
- **Books**: CCXT checks USD-M's chain itself: a diff applies when its ``pu`` is the last
  applied ``u`` (after the REST snapshot: ``U <= lastUpdateId <= u``), else ``ChecksumError``
  and a fresh snapshot. USD-M ids are not consecutive (other symbols' updates come between),
  so spot's ``U = u + 1`` rule would see a gap everywhere; CCXT picks the rule by the frame
  (``pu`` present), not by market type. Nothing to add in front of it (tested on recorded
  frames: ``tests/unit/test_binanceusdm_publisher.py``).
- **Mark, index, funding**: one stream, ``<s>@markPrice@1s`` (``watch_mark_prices``): CCXT
  parses it into a ticker with ``markPrice``/``indexPrice`` and keeps the raw frame in
  ``info``; the funding rate ``r`` and next funding time ``T`` are read from there
  (:func:`funding_from_mark_price`). CCXT 4.5.90 has no ``watch_funding_rate`` for Binance.
- **Liquidations**: ``<s>@forceOrder`` (``watch_liquidations_for_symbols``); ``S`` is the
  liquidation order's side, as the record wants it.
- **Open interest**: REST only (``/fapi/v1/openInterest``, ``fetch_open_interest``), polled.
- **Limits**: 2,400 weight a minute per IP (CCXT's fapi costs are the weights, at 20 a second:
  1,200 a minute, half of it); 10 incoming messages a second per connection, so 5.

All of it is in its :data:`PROFILE`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from marketbus.models import Channel
from publisher import binance
from publisher.profile import ExchangeLimits, ExchangeProfile, Feed, Source, Tap

EXCHANGE = "binanceusdm"

MARKET_TYPES = ("linear",)
DEFAULT_TYPE = "swap"

STREAMS_PER_CONNECTION = {"linear": 200, "swap": 200, "future": 200}
"""Binance USD-M takes at most 200 streams on one connection. CCXT counts them under
``linear``; the worker sizes its watch loops by CCXT's market type (``swap``, ``future``)."""

MARK_PRICE_EVENT = "markPriceUpdate"


def is_mark_price(args: tuple[Any, ...]) -> bool:
    """Whether ``parse_ws_ticker(message, ...)`` is parsing a ``markPriceUpdate`` frame."""
    message = args[0] if args else None
    return isinstance(message, Mapping) and message.get("e") == MARK_PRICE_EVENT


def funding_from_mark_price(ticker: Any) -> dict[str, Any] | None:
    """A CCXT funding-rate structure from a parsed ``markPriceUpdate`` ticker (its ``info`` is
    the frame: ``r`` the rate, ``T`` the next funding time), or None where the frame has no
    rate (a quarterly future's ``r`` is empty)."""
    if not isinstance(ticker, Mapping):
        return None
    info = ticker.get("info")
    if not isinstance(info, Mapping) or info.get("r") in (None, ""):
        return None
    return {
        "symbol": ticker.get("symbol"),
        "timestamp": ticker.get("timestamp"),
        "fundingRate": info["r"],
        "fundingTimestamp": info.get("T") or None,
        "nextFundingRate": None,
        "interval": None,
        "info": info,
    }


PROFILE = ExchangeProfile(
    EXCHANGE,
    taps=(  # Binance's parsers
        Tap("parse_ws_trade", Channel.TRADES),
        Tap("parse_ws_ticker", Channel.TICKER, binance.is_ticker_event),
        Tap("parse_ws_ticker", Channel.MARK, is_mark_price),
        Tap("parse_ws_ticker", Channel.FUNDING, is_mark_price, convert=funding_from_mark_price),
        Tap("parse_ws_liquidation", Channel.LIQUIDATIONS, within="handle_liquidation"),
    ),
    market_types=MARKET_TYPES,
    default_type=DEFAULT_TYPE,
    streams_per_connection=STREAMS_PER_CONNECTION,
    watch_params=binance.stream_params,
    limits=ExchangeLimits(True, 5.0, (5, 10, 20, 50, 100, 500, 1_000)),
    # the mark price stream also carries the funding rate and next funding time (r, T); the
    # tap reads them (funding_from_mark_price). Mark price, liquidations and open interest
    # take the generic rows: watch_mark_prices, watch_liquidations_for_symbols (forceOrder),
    # fetch_open_interest (REST /fapi/v1/openInterest, polled)
    feeds={Channel.FUNDING: Source(Feed.WATCH, "watch_mark_prices", True)},
    sandbox_tested=True,
)

__all__ = [
    "DEFAULT_TYPE",
    "EXCHANGE",
    "MARKET_TYPES",
    "MARK_PRICE_EVENT",
    "PROFILE",
    "STREAMS_PER_CONNECTION",
    "funding_from_mark_price",
    "is_mark_price",
]
