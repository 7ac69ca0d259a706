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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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


__all__ = [
    "DEFAULT_TYPE",
    "EXCHANGE",
    "MARKET_TYPES",
    "MARK_PRICE_EVENT",
    "STREAMS_PER_CONNECTION",
    "funding_from_mark_price",
    "is_mark_price",
]
