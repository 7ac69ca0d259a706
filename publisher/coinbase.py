"""What the publisher adds to ``ccxt.pro.coinbase`` (Advanced Trade): sequence checks, book
resync, heartbeats, the taker's side, real-time tickers, backfill windows.

- **Sequence numbers.** Every Coinbase message carries ``sequence_num``, a counter of the
  messages of its connection (every channel together, from 0). ccxt 4.5.90 reads none of
  them and applies ``l2_data`` updates blindly: a lost message leaves a wrong book that it
  goes on updating. :func:`checked_message` sits in front of its ``handle_message``: a number
  that does not follow the last one is a gap, and since it cannot say which channel lost a
  message, every book of that connection is resynced the way ccxt does it for Binance and
  OKX: the book is dropped (ccxt then ignores the product's updates until a snapshot), the
  pending watch raises ``InvalidNonce`` (the worker counts a resync and never publishes the
  broken book), the subscription is forgotten so the next watch subscribes again, and
  :func:`resubscribing` unsubscribes the product first, so Coinbase sends a fresh snapshot.
  Each book carries the ``sequence_num`` of the last message applied as ccxt's ``nonce``, so
  a record's ``seq`` names the exact state it shows (it restarts at 0 on a new connection).
  A lost trade shows in the trade ids (consecutive per product), a lost ticker is replaced
  by the next.
- **Heartbeats.** Coinbase closes subscriptions that see no update for a while unless the
  connection also subscribes to ``heartbeats``; ccxt never does. The first message of each
  connection makes us subscribe them (one message a second: quiet markets stay open and
  the worker's watchdog, and the sequence check, see the connection alive).
- **Side.** Coinbase's ``market_trades`` (and REST trades) name the **maker's** side (the
  recording's SELL trades print at the ask: a buyer took them); ccxt passes it on as is.
  :func:`taker_side_trade` turns public trades around, so ``side`` means what it means on
  every other exchange: the taker's.
- **Tickers.** ccxt's ``watch_tickers`` subscribes ``ticker_batch`` (one update per product
  every 5 s); :func:`ticker_channel_watch_tickers` subscribes ``ticker`` for the same
  products, one message per change. The tap reads the message's ``timestamp`` as the
  ticker's time (:func:`message_time`: ccxt stamps it only after parsing).
- **Backfill.** ccxt refuses ``fetch_trades(symbol, since)`` without an ``until``;
  :func:`fetch_trades_until_now` adds ``until`` = now, so a backfill asks for the window from
  its last trade on (Coinbase answers the latest trades of the window, up to 1,000).
- **Unwatch.** ccxt resolves an unwatch only when Coinbase's ``subscriptions`` reply is
  empty, i.e. when nothing at all is left subscribed; :func:`resolving_unsubscribe` resolves
  it once the products are gone from the channel's list.
"""

from __future__ import annotations

import asyncio
import calendar
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from ccxt.base.errors import InvalidNonce

from marketbus.models import Channel
from publisher.profile import ExchangeProfile, Tap

STATE_KEY = "_marketbus_coinbase"
HEARTBEATS = {"type": "subscribe", "product_ids": [], "channel": "heartbeats"}
BOOK_CHANNEL = "level2"


@dataclass
class Sequence:
    """The ``sequence_num`` chain of one websocket connection and what a gap left behind."""

    last: int | None = None
    gaps: int = 0
    stale: set[str] = field(default_factory=set)
    """Product ids whose ``level2`` subscription was dropped after a gap but is still held at
    Coinbase: unsubscribed before the next subscribe, so a new snapshot comes."""
    heartbeats: asyncio.Task[Any] | None = None

    def admit(self, seq: int) -> bool:
        """True when ``seq`` follows the last number (or starts the chain); False: a gap."""
        last = self.last
        if last is None:
            self.last = seq
            return True
        if seq == last + 1:
            self.last = seq
            return True
        self.gaps += 1
        self.last = max(seq, last)
        return False


def sequence_of(client: Any) -> Sequence:
    """The chain of a ccxt websocket client (a new connection is a new client: none yet)."""
    state: Sequence | None = client.__dict__.get(STATE_KEY)
    if state is None:
        state = client.__dict__[STATE_KEY] = Sequence()
    return state


def _seq(message: Any) -> int | None:
    seq = message.get("sequence_num") if isinstance(message, dict) else None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


def resync_books(exchange: Any, client: Any, state: Sequence, reason: str) -> list[str]:
    """Drop every book of ``client``'s connection (see the module); returns their symbols."""
    dropped = []
    for message_hash in [h for h in client.subscriptions if str(h).startswith("level2::")]:
        symbol = str(message_hash).split("::", 1)[1]
        exchange.orderbooks.pop(symbol, None)
        client.subscriptions.pop(message_hash, None)
        market = (exchange.markets or {}).get(symbol)
        if isinstance(market, dict) and isinstance(market.get("id"), str):
            state.stale.add(market["id"])
        error = InvalidNonce(f"coinbase {reason}: resyncing {symbol}")
        client.reject(error, message_hash)
        dropped.append(symbol)
    return dropped


def _subscribe_heartbeats(client: Any, state: Sequence) -> None:
    """Once per connection, on its first message (it is connected by then)."""
    if state.heartbeats is not None:
        return

    async def send() -> None:
        try:
            await client.send(dict(HEARTBEATS))
        except (ConnectionError, aiohttp.ClientError, OSError, RuntimeError):
            pass  # the socket is gone: the next connection subscribes again

    state.heartbeats = asyncio.get_running_loop().create_task(send())


def checked_message(original: Any) -> Callable[..., Any]:
    """A ``handle_message`` that checks ``sequence_num`` before ccxt handles a message and
    stamps each book with the number of the last message applied to it."""

    def handle_message(self: Any, client: Any, message: Any) -> Any:
        seq = _seq(message)
        if seq is None:
            return original(self, client, message)
        state = sequence_of(client)
        last = state.last
        _subscribe_heartbeats(client, state)
        if not state.admit(seq):
            resync_books(self, client, state, f"sequence_num {seq} after {last}")
        result = original(self, client, message)
        if message.get("channel") == "l2_data":
            for event in message.get("events") or ():
                pid = event.get("product_id") if isinstance(event, dict) else None
                symbol = self.safe_market(pid).get("symbol") if isinstance(pid, str) else None
                book = self.orderbooks.get(symbol) if isinstance(symbol, str) else None
                if book is not None:
                    book["nonce"] = seq
        return result

    return handle_message


def resubscribing(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A ``subscribe``/``subscribe_multiple`` that first unsubscribes the ``level2`` products a
    gap dropped, so the subscribe that follows gets a new snapshot."""

    async def subscribe(self: Any, name: str, is_private: bool, *args: Any, **kw: Any) -> Any:
        if name == BOOK_CHANNEL:
            await _unsubscribe_stale(self, args[0] if args else kw.get("symbol", kw.get("symbols")))
        return await original(self, name, is_private, *args, **kw)

    return subscribe


async def _unsubscribe_stale(exchange: Any, symbols: Any) -> None:
    client = exchange.clients.get(exchange.urls["api"]["ws"])
    state: Sequence | None = client.__dict__.get(STATE_KEY) if client is not None else None
    if state is None or not state.stale:
        return
    wanted = symbols if isinstance(symbols, list) else [symbols]
    markets = exchange.markets or {}
    ids = [markets[s]["id"] for s in wanted if s in markets and markets[s]["id"] in state.stale]
    if not ids:
        return
    state.stale.difference_update(ids)
    request = {"type": "unsubscribe", "product_ids": ids, "channel": BOOK_CHANNEL}
    try:
        await client.send(request)
    except (ConnectionError, aiohttp.ClientError, OSError):
        pass  # the socket is gone: the subscribe fails too and the session reconnects


def _public_trade(trade: Any) -> bool:
    """A market trade (websocket or REST), not one of the account's fills."""
    return (
        isinstance(trade, dict)
        and "trade_id" in trade
        and "product_id" in trade
        and "order_id" not in trade
        and "entry_id" not in trade
    )


def taker_side_trade(original: Any) -> Callable[..., Any]:
    """A ``parse_trade`` that reports the taker's side of a public trade (see the module)."""
    flip = {"buy": "sell", "sell": "buy"}

    def parse_trade(self: Any, trade: Any, market: Any = None) -> Any:
        result = original(self, trade, market)
        if _public_trade(trade) and isinstance(result, dict) and result.get("side") in flip:
            result["side"] = flip[result["side"]]
        return result

    return parse_trade


def ticker_channel_watch_tickers(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A ``watch_tickers`` on the real-time ``ticker`` channel (ccxt: ``ticker_batch``)."""

    async def watch_tickers(self: Any, symbols: Any = None, params: Any = None) -> Any:
        if self.markets is None:
            await self.load_markets()
        wanted = self.symbols if symbols is None else symbols
        ticker = await self.subscribe_multiple("ticker", False, wanted, params or {})
        if self.newUpdates:
            return {ticker["symbol"]: ticker}
        return self.filter_by_array(self.tickers, "symbol", wanted)

    return watch_tickers


def ticker_channel_un_watch_tickers(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """The unwatch of :func:`ticker_channel_watch_tickers`'s subscription."""

    async def un_watch_tickers(self: Any, symbols: Any = None, params: Any = None) -> Any:
        if self.markets is None:
            await self.load_markets()
        wanted = self.symbols if symbols is None else symbols
        return await self.un_subscribe_multiple("ticker", "ticker", False, wanted, params or {})

    return un_watch_tickers


def resolving_unsubscribe(original: Any) -> Callable[..., Any]:
    """A ``handle_subscription_status`` that ends a pending unwatch once its products left the
    channel's list (ccxt waits for a reply listing nothing at all)."""

    def handle_subscription_status(self: Any, client: Any, message: Any) -> Any:
        pending = self.options.get("unSubscription")
        events = message.get("events") if isinstance(message, dict) else None
        first = events[0] if isinstance(events, list) and events else None
        held = first.get("subscriptions") if isinstance(first, dict) else None
        if isinstance(pending, dict) and isinstance(held, dict) and held:
            unsub = list(pending.get("messageHashes") or [])
            sub = list(pending.get("subMessageHashes") or [])
            channel = str(sub[0]).split("::", 1)[0] if sub else None
            markets = self.markets or {}
            ids = {markets[s]["id"] for s in pending.get("symbols") or () if s in markets}
            if channel and ids and not ids & set(held.get(channel) or ()):
                for sub_hash, unsub_hash in zip(sub, unsub, strict=False):
                    self.clean_unsubscription(client, sub_hash, unsub_hash)
                self.clean_cache(pending)
                return message
        return original(self, client, message)

    return handle_subscription_status


def fetch_trades_until_now(original: Any) -> Callable[..., Coroutine[Any, Any, Any]]:
    """A ``fetch_trades`` whose ``since`` window ends now (ccxt needs an ``until`` with it)."""

    async def fetch_trades(
        self: Any, symbol: str, since: Any = None, limit: Any = None, params: Any = None
    ) -> Any:
        params = dict(params or {})
        if since is not None and "until" not in params and "end" not in params:
            params["until"] = self.milliseconds() + 1_000  # Coinbase's window is in seconds
        return await original(self, symbol, since, limit, params)

    return fetch_trades


def iso_ms(text: str) -> int | None:
    """Coinbase's RFC 3339 UTC time (any fraction: ``...T21:05:48.228568804Z``) -> epoch ms."""
    whole, _, frac = text.rstrip("Z").partition(".")
    try:
        secs = calendar.timegm(time.strptime(whole, "%Y-%m-%dT%H:%M:%S"))
        return secs * 1000 + int((frac + "000")[:3])
    except ValueError:
        return None


def message_time(handler_args: tuple[Any, ...]) -> int | None:
    """The ``timestamp`` (ms) of the message ``handle_tickers(client, message)`` handles."""
    message = handler_args[1] if len(handler_args) > 1 else None
    ts = message.get("timestamp") if isinstance(message, dict) else None
    return iso_ms(ts) if isinstance(ts, str) else None


OVERRIDES: dict[str, Callable[[Any], Any]] = {
    "handle_message": checked_message,
    "subscribe": resubscribing,
    "subscribe_multiple": resubscribing,
    "parse_trade": taker_side_trade,
    "watch_tickers": ticker_channel_watch_tickers,
    "un_watch_tickers": ticker_channel_un_watch_tickers,
    "handle_subscription_status": resolving_unsubscribe,
    "fetch_trades": fetch_trades_until_now,
}
"""Everything this module changes on ``ccxt.pro.coinbase`` (``publisher.ccxt_client``)."""

PROFILE = ExchangeProfile(
    "coinbase",
    taps=(
        # parse_trade is REST's too (fetch_trades): only its websocket calls are tapped
        Tap("parse_trade", Channel.TRADES, within="handle_trade"),
        Tap("parse_ws_ticker", Channel.TICKER, within="handle_tickers", event_time=message_time),
    ),
    overrides=OVERRIDES,
)

__all__ = [
    "OVERRIDES",
    "PROFILE",
    "Sequence",
    "checked_message",
    "fetch_trades_until_now",
    "iso_ms",
    "message_time",
    "resolving_unsubscribe",
    "resubscribing",
    "resync_books",
    "sequence_of",
    "taker_side_trade",
    "ticker_channel_un_watch_tickers",
    "ticker_channel_watch_tickers",
]
