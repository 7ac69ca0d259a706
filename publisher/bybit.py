"""What the publisher adds to ``ccxt.pro.bybit`` (v5): book sequence checks, resync, ticker time.

ccxt 4.5.90 applies every ``orderbook.<depth>.<symbol>`` delta without looking at its ``u``
(Bybit's update id, +1 per message of a topic): a lost delta leaves a wrong book that it goes on
updating and handing out. :func:`checked_order_book` sits in front of its handler, per
connection and topic: a snapshot starts a chain, a delta must carry the last ``u`` + 1. On a gap
it takes the path ccxt takes for Binance and OKX: the book is dropped, the pending watch raises
``InvalidNonce`` (the worker counts a resync and never publishes the broken book), the
subscription is forgotten so the next watch subscribes again, and the topic's deltas are
ignored until the new snapshot. Bybit refuses to subscribe a topic that is still subscribed on
the connection (``error:already subscribed``, for the whole request), so
:func:`resubscribing_watch_topics` unsubscribes such a topic just before ccxt subscribes it
again. Each book carries its ``u`` as ccxt's ``nonce``, so records carry Bybit's sequence.

Tickers: ccxt stamps a ticker with the message's ``ts`` after parsing it, so the tap reads that
time from the handler's arguments (:func:`ticker_event_time`).

The rest of what the publisher knows about Bybit is its :data:`PROFILE`: spot and linear
markets, 10 topics per subscribe request (Bybit spot refuses more), trade ids that are unique
but not consecutive per market (linear: UUIDs; spot: one counter shared by every symbol),
linear tickers that carry funding, mark and open interest, and a liquidation side that is
the liquidated position's.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from ccxt.base.errors import InvalidNonce

from marketbus.models import Channel
from publisher.native_bybit import BybitFastPath
from publisher.profile import ExchangeProfile, Tap

CHAINS_KEY = "_marketbus_bybit_books"


@dataclass
class BookChains:
    """The ``u`` chains of one websocket connection, by topic."""

    last: dict[str, int] = field(default_factory=dict)
    """Topic -> ``u`` of the last message applied; absent: waiting for a snapshot."""
    stale: set[str] = field(default_factory=set)
    """Topics dropped after a gap but still subscribed at Bybit: unsubscribe before the next
    subscribe."""
    resyncs: int = 0

    def admit(self, topic: str, kind: str, u: int) -> bool | None:
        """True: apply the message; False: ignore it; None: a gap (the chain is dropped)."""
        if kind == "snapshot":
            self.last[topic] = u
            return True
        last = self.last.get(topic)
        if last is None:
            return False  # a delta of a dropped chain, before its new snapshot
        if u != last + 1:
            del self.last[topic]
            self.stale.add(topic)
            self.resyncs += 1
            return None
        self.last[topic] = u
        return True


def chains_of(client: Any) -> BookChains:
    """The chains of a ccxt websocket client (a new connection starts with none)."""
    chains: BookChains | None = client.__dict__.get(CHAINS_KEY)
    if chains is None:
        chains = client.__dict__[CHAINS_KEY] = BookChains()
    return chains


def _symbol(exchange: Any, client: Any, data: dict[str, Any]) -> str | None:
    """The unified symbol ccxt files this book under (its own rule: the url's category)."""
    market_type = "spot" if "spot" in str(client.url) else "contract"
    symbol = exchange.safe_market(data.get("s"), None, None, market_type).get("symbol")
    return symbol if isinstance(symbol, str) else None


def checked_order_book(original: Any) -> Callable[..., Any]:
    """A ``handle_order_book`` that checks ``u`` continuity before ccxt applies a message."""

    def handle_order_book(self: Any, client: Any, message: dict[str, Any]) -> Any:
        topic, data = message.get("topic"), message.get("data")
        if not isinstance(topic, str) or not isinstance(data, dict):
            return original(self, client, message)
        u = data.get("u")
        if not isinstance(u, int) or isinstance(u, bool):
            return original(self, client, message)
        chains = chains_of(client)
        last = chains.last.get(topic)
        verdict = chains.admit(topic, str(message.get("type")), u)
        if verdict is None:
            symbol = _symbol(self, client, data)
            if symbol is not None:
                message_hash = "orderbook:" + symbol
                self.orderbooks.pop(symbol, None)
                client.subscriptions.pop(message_hash, None)
                error = InvalidNonce(f"bybit {topic}: u {u} does not follow {last}: resyncing")
                client.reject(error, message_hash)
            return None
        if not verdict:
            return None
        result = original(self, client, message)
        symbol = _symbol(self, client, data)
        book = self.orderbooks.get(symbol) if symbol is not None else None
        if book is not None:
            book["nonce"] = u
        return result

    return handle_order_book


def resubscribing_watch_topics(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A ``watch_topics`` that first unsubscribes the topics a gap dropped (see the module)."""

    async def watch_topics(
        self: Any, url: str, message_hashes: list[str], topics: list[str], params: Any = None
    ) -> Any:
        client = self.client(url)
        chains: BookChains | None = client.__dict__.get(CHAINS_KEY)
        stale = [t for t in topics if chains is not None and t in chains.stale]
        if chains is not None and stale:
            chains.stale.difference_update(stale)
            request = {"op": "unsubscribe", "req_id": str(self.request_id()), "args": stale}
            try:
                await client.send(request)
            except (ConnectionError, aiohttp.ClientError):
                pass  # the socket is gone: the subscribe below fails and the session reconnects
        return await original(self, url, message_hashes, topics, {} if params is None else params)

    return watch_topics


def ticker_event_time(handler_args: tuple[Any, ...]) -> Any:
    """The ``ts`` of the message ``handle_ticker(client, message)`` is handling."""
    message = handler_args[1] if len(handler_args) > 1 else None
    return message.get("ts") if isinstance(message, dict) else None


PROFILE = ExchangeProfile(
    "bybit",
    taps=(
        Tap("parse_ws_trade", Channel.TRADES, within="handle_trades"),
        Tap(
            "parse_ticker", Channel.TICKER, within="handle_ticker", event_time=ticker_event_time
        ),  # its linear tickers also feed funding, mark and open interest (deriv_feeds)
        Tap("parse_ws_liquidation", Channel.LIQUIDATIONS, within="handle_liquidation"),
    ),
    # ccxt 4.5.90 does not check Bybit's update ids (u): a lost delta would leave a wrong book
    overrides={
        "handle_order_book": checked_order_book,
        "watch_topics": resubscribing_watch_topics,
    },
    market_types=("spot", "linear"),
    subscribe_limit=10,
    native_parser=BybitFastPath,
    unique_trade_ids=True,
    ticker_carries=frozenset({Channel.FUNDING, Channel.MARK, Channel.OPEN_INTEREST}),
    liquidation_side_is_position=True,
    sandbox_tested=True,
)

__all__ = [
    "PROFILE",
    "BookChains",
    "chains_of",
    "checked_order_book",
    "resubscribing_watch_topics",
    "ticker_event_time",
]
