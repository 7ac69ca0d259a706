"""What the publisher knows about OKX v5 (CCXT ``okx``): its :data:`PROFILE`.

The work is in the modules it names: the book checksum CCXT 4.5.90 does not verify
(``publisher.okx_books``), the index price joined into mark prices (``publisher.okx_index``),
the native parser (``publisher.native_okx``).

- **Markets**: spot, swaps and dated futures (``BTC-USDT``, ``BTC-USDT-SWAP``).
- **Taps**: ``parse_trade`` and ``parse_ticker`` are REST's too, so only their websocket
  handlers' calls are tapped; ``handle_ticker`` parses ``tickers`` and ``mark-price`` frames
  alike, told apart by the frame's channel (:func:`channel_is`).
- **Backfill**: back by trade id through ``history-trades`` (``market/trades`` has no paging).
- **Limits**: REST per IP and endpoint, requests per 2 s (CCXT's okx costs encode them: cost
  1 = 20 per 2 s at its rateLimit); 480 subscribe/unsubscribe requests an hour per connection.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from marketbus.models import Channel
from publisher import okx_index
from publisher.native_okx import OkxFastPath
from publisher.okx_books import checked_book_message
from publisher.profile import BackfillMode, ExchangeLimits, ExchangeProfile, Tap


def channel_is(name: str) -> Callable[[tuple[Any, ...]], bool]:
    """Whether ``handle_*(client, message)`` is handling a frame of OKX channel ``name``."""

    def test(handler_args: tuple[Any, ...]) -> bool:
        message = handler_args[1] if len(handler_args) > 1 else None
        arg = message.get("arg") if isinstance(message, dict) else None
        return isinstance(arg, dict) and arg.get("channel") == name

    return test


def backfill(trade_stream: str, has_fetch_trades: bool) -> BackfillMode | None:
    """Back by trade id (``publisher.backfill.back_request``) wherever trades can be fetched."""
    return BackfillMode.BACK_BY_ID if has_fetch_trades else None


PROFILE = ExchangeProfile(
    "okx",
    taps=(
        Tap("parse_trade", Channel.TRADES, within="handle_trades"),
        Tap("parse_ticker", Channel.TICKER, within="handle_ticker", message=channel_is("tickers")),
        Tap("parse_ticker", Channel.MARK, within="handle_ticker", message=channel_is("mark-price")),
        Tap("parse_funding_rate", Channel.FUNDING, within="handle_funding_rate"),
        Tap("parse_ws_liquidation", Channel.LIQUIDATIONS, within="handle_liquidation"),
    ),
    # ccxt 4.5.90 does not verify OKX's book checksum: we do, in front of its handler; nor
    # join index-tickers into mark prices
    overrides={
        "handle_order_book_message": checked_book_message,
        "handle_ticker": okx_index.indexed_tickers,
    },
    market_types=("spot", "swap", "future"),
    limits=ExchangeLimits(True, rest_window_ms=2_000, subscribes_per_window=480),
    native_parser=OkxFastPath,
    backfill=backfill,
    mark_index=(okx_index.index_symbols, okx_index.WATCH_PARAMS),
    sandbox_tested=True,
)

__all__ = ["PROFILE", "backfill", "channel_is"]
