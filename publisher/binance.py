"""What the publisher knows about Binance spot (CCXT ``binance``): its :data:`PROFILE`.

- **Trades and tickers**: tapped as CCXT parses them (``parse_ws_trade``, ``parse_ws_ticker``);
  the stream is ours to pick (``trade_stream``, ``ticker_stream``: :func:`stream_params`).
  Frames go through our native parser by default (``publisher.native``).
- **Books**: CCXT checks the diff-depth chain itself; the REST snapshot is the smallest that
  covers the records' depth (``publisher.pacing.snapshot_limit``), not CCXT's 1,000 levels.
- **Backfill**: by ``aggTrade`` id (``fromId``); the ``trade`` stream's ids cannot be paged.
- **Limits**: 6,000 weight a minute per IP; 5 messages a second per connection (pings and
  pongs counted: a request every 250 ms has been seen closed, every 500 ms held), so 3.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from marketbus.models import Channel
from publisher.native import BinanceFastPath
from publisher.profile import BackfillMode, ExchangeLimits, ExchangeProfile, Tap

if TYPE_CHECKING:
    from marketbus.settings import ExchangeSettings

TICKER_EVENTS = ("24hrTicker", "24hrMiniTicker")

STREAMS_PER_CONNECTION = {"spot": 1_024, "margin": 1_024, "linear": 1_024, "inverse": 1_024}
"""Streams one connection may hold (CCXT's ``subscriptionLimitByStream``: it counts the
streams it puts on each connection and refuses a watch past the limit). CCXT 4.5 still
assumes Binance's old 200; spot and futures take 1,024 (options keep CCXT's 200)."""


def is_ticker_event(args: tuple[Any, ...]) -> bool:
    """Whether ``parse_ws_ticker(message, ...)`` parses a 24 h ticker: it also parses
    bookTicker frames (``watch_bids_asks``)."""
    message = args[0] if args else None
    return isinstance(message, dict) and message.get("e") in TICKER_EVENTS


def stream_params(channel: Channel, cfg: ExchangeSettings) -> dict[str, Any]:
    """The ``watch_*`` params naming the stream of ``channel`` (Binance spot and USD-M)."""
    name = cfg.trade_stream if channel is Channel.TRADES else cfg.ticker_stream
    return {"name": name}


def backfill(trade_stream: str, has_fetch_trades: bool) -> BackfillMode | None:
    """``aggTrade`` ids page exactly (``fromId``); ``@trade`` ids page nowhere: no backfill."""
    return BackfillMode.FROM_ID if trade_stream == "aggTrade" else None


PROFILE = ExchangeProfile(
    "binance",
    taps=(
        Tap("parse_ws_trade", Channel.TRADES),
        Tap("parse_ws_ticker", Channel.TICKER, is_ticker_event),
    ),
    streams_per_connection=STREAMS_PER_CONNECTION,
    watch_params=stream_params,
    limits=ExchangeLimits(True, 3.0, (100, 500, 1_000, 5_000)),
    native_parser=BinanceFastPath,
    backfill=backfill,
    sandbox_tested=True,
)

__all__ = [
    "PROFILE",
    "STREAMS_PER_CONNECTION",
    "TICKER_EVENTS",
    "backfill",
    "is_ticker_event",
    "stream_params",
]
