"""Build the ccxt.pro client for one exchange, with taps that see every parsed message.

CCXT caches trades between two ``watch_*`` calls (``tradesLimit``) and keeps only the
latest ticker per symbol, so a caller that polls loses data under bursts (see
docs/ccxt.md). A *tap* subclasses the adapter and hands each structure to us the
moment CCXT parses it; the ``watch_*`` loops then only hold the subscriptions.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro

from marketbus.errors import ConfigError, UnknownExchangeError
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from publisher import binanceusdm, bybit, coinbase, kraken
from publisher.endpoints import rebase_urls
from publisher.okx_books import checked_book_message
from publisher.okx_index import indexed_tickers
from publisher.pacing import snapshot_limit

OnParsed = Callable[[Channel, dict[str, Any]], None]


@dataclass(frozen=True)
class Tap:
    """Wrap ``method`` of the adapter: its result is a structure of ``channel``.

    ``within``: only while CCXT runs this (websocket) handler, for adapters whose websocket
    and REST paths share one parse method (OKX's ``parse_trade``): REST results are the
    caller's to publish. ``event_time``: where the exchange time is when the parsed structure
    has none yet (Bybit's tickers: CCXT stamps them after parsing), read from the arguments
    of the ``within`` handler. ``message``: a test of those arguments, for a handler that
    serves several channels (OKX's ``handle_ticker`` parses ``tickers`` and ``mark-price``
    frames alike); several taps may share a method. ``convert``: the structure of ``channel``
    made from the parsed one (None: nothing to deliver), where CCXT parses it as something
    else (Binance USD-M's funding rate inside its mark price ticker).
    """

    method: str
    channel: Channel
    accept: Callable[[tuple[Any, ...]], bool] = lambda args: True
    within: str | None = None
    event_time: Callable[[tuple[Any, ...]], Any] | None = None
    message: Callable[[tuple[Any, ...]], bool] | None = None
    convert: Callable[[Any], Any] | None = None


def _binance_ticker_event(args: tuple[Any, ...]) -> bool:
    # parse_ws_ticker also parses bookTicker frames (watch_bids_asks): not a 24 h ticker
    message = args[0] if args else None
    return isinstance(message, dict) and message.get("e") in ("24hrTicker", "24hrMiniTicker")


def _okx_channel(name: str) -> Callable[[tuple[Any, ...]], bool]:
    """Whether ``handle_*(client, message)`` is handling a frame of OKX channel ``name``."""

    def test(handler_args: tuple[Any, ...]) -> bool:
        message = handler_args[1] if len(handler_args) > 1 else None
        arg = message.get("arg") if isinstance(message, dict) else None
        return isinstance(arg, dict) and arg.get("channel") == name

    return test


TAPS: dict[str, tuple[Tap, ...]] = {
    "binance": (
        Tap("parse_ws_trade", Channel.TRADES),
        Tap("parse_ws_ticker", Channel.TICKER, _binance_ticker_event),
    ),
    "okx": (
        Tap("parse_trade", Channel.TRADES, within="handle_trades"),
        Tap(
            "parse_ticker", Channel.TICKER, within="handle_ticker", message=_okx_channel("tickers")
        ),
        Tap(
            "parse_ticker", Channel.MARK, within="handle_ticker", message=_okx_channel("mark-price")
        ),
        Tap("parse_funding_rate", Channel.FUNDING, within="handle_funding_rate"),
        Tap("parse_ws_liquidation", Channel.LIQUIDATIONS, within="handle_liquidation"),
    ),
    "bybit": (
        Tap("parse_ws_trade", Channel.TRADES, within="handle_trades"),
        Tap(
            "parse_ticker",
            Channel.TICKER,
            within="handle_ticker",
            event_time=bybit.ticker_event_time,
        ),  # its linear tickers also feed funding, mark and open interest (deriv_feeds)
        Tap("parse_ws_liquidation", Channel.LIQUIDATIONS, within="handle_liquidation"),
    ),
    "coinbase": (
        # parse_trade is REST's too (fetch_trades): only its websocket calls are tapped
        Tap("parse_trade", Channel.TRADES, within="handle_trade"),
        Tap(
            "parse_ws_ticker",
            Channel.TICKER,
            within="handle_tickers",
            event_time=coinbase.message_time,
        ),
    ),
    "binanceusdm": (  # Binance's parsers (publisher.binanceusdm)
        Tap("parse_ws_trade", Channel.TRADES),
        Tap("parse_ws_ticker", Channel.TICKER, _binance_ticker_event),
        Tap("parse_ws_ticker", Channel.MARK, binanceusdm.is_mark_price),
        Tap(
            "parse_ws_ticker",
            Channel.FUNDING,
            binanceusdm.is_mark_price,
            convert=binanceusdm.funding_from_mark_price,
        ),
        Tap("parse_ws_liquidation", Channel.LIQUIDATIONS, within="handle_liquidation"),
    ),
    "kraken": (  # websocket v2; parse_trade is REST's too: only its websocket calls are tapped
        Tap("parse_trade", Channel.TRADES, within="handle_trades"),
        Tap("safe_ticker", Channel.TICKER, within="handle_ticker", event_time=kraken.ticker_time),
    ),
}

OVERRIDES: dict[str, dict[str, Callable[[Any], Any]]] = {
    # ccxt 4.5.90 does not verify OKX's book checksum: we do, in front of its handler; nor
    # join index-tickers into mark prices (publisher.okx_index)
    "okx": {"handle_order_book_message": checked_book_message, "handle_ticker": indexed_tickers},
    # nor Bybit's update ids (u): a lost delta would leave a wrong book (publisher.bybit)
    "bybit": {
        "handle_order_book": bybit.checked_order_book,
        "watch_topics": bybit.resubscribing_watch_topics,
    },
    # nor Coinbase's sequence_num, and more (publisher.coinbase)
    "coinbase": coinbase.OVERRIDES,
    # nor Kraken's book checksum (off in ccxt 4.5.90), and more (publisher.kraken)
    "kraken": kraken.OVERRIDES,
}

MARKET_TYPES: dict[str, tuple[str, ...]] = {
    "bybit": ("spot", "linear"),
    "okx": ("spot", "swap", "future"),
    "binanceusdm": binanceusdm.MARKET_TYPES,
}
"""What ``load_markets`` loads (CCXT's ``fetchMarkets.types``); every other exchange: spot.
Bybit's perpetuals and OKX's swaps (and dated futures) are what most of their bots trade. Bybit's spot and linear
ids are the same strings (``BTCUSDT``), told apart by the websocket url each arrives on;
OKX's differ (``BTC-USDT``, ``BTC-USDT-SWAP``). Binance USD-M has no spot at all."""

DEFAULT_TYPES: dict[str, str] = {"binanceusdm": binanceusdm.DEFAULT_TYPE}
"""CCXT's ``defaultType`` (what a call without a market means); every other exchange: spot."""

SUBSCRIBE_LIMITS: dict[str, int] = {"bybit": 10}
"""Symbols per subscribe request (one ``watch_*_for_symbols`` call): Bybit spot refuses a
request with more than 10 topics."""

STREAMS_PER_CONNECTION: dict[str, dict[str, int]] = {
    "binance": {"spot": 1_024, "margin": 1_024, "linear": 1_024, "inverse": 1_024},
    "binanceusdm": binanceusdm.STREAMS_PER_CONNECTION,
}
"""Streams one websocket connection may hold, by market type (CCXT's
``subscriptionLimitByStream``: it counts the streams it puts on each connection and refuses
a watch past the limit). CCXT 4.5 still assumes Binance's old 200; spot and futures take
1,024 (options keep CCXT's 200)."""


def has_taps(exchange_id: str) -> bool:
    return exchange_id in TAPS


def tapped_channels(exchange_id: str) -> frozenset[Channel]:
    """The channels a tap delivers on this exchange (the others are read from what the
    watch calls return)."""
    return frozenset(t.channel for t in TAPS.get(exchange_id, ()))


def _tapped_class(
    base: type[Any], taps: tuple[Tap, ...], overrides: dict[str, Callable[[Any], Any]]
) -> type[Any]:
    namespace: dict[str, Any] = {m: make(getattr(base, m)) for m, make in overrides.items()}
    by_method: dict[str, list[Tap]] = {}
    for tap in taps:
        by_method.setdefault(tap.method, []).append(tap)
    for method, group in by_method.items():
        original = namespace.get(method) or getattr(base, method)  # a tap wraps an override

        def wrapper(
            self: Any, *args: Any, _orig: Any = original, _taps: tuple[Tap, ...] = tuple(group),
            **kwargs: Any,
        ) -> Any:  # fmt: skip
            result = _orig(self, *args, **kwargs)
            hook: OnParsed | None = self.__dict__.get("_marketbus_on_parsed")
            if hook is not None:
                for tap in _taps:
                    if _applies(self.__dict__, tap, args):
                        value = _stamped(self, tap, result)
                        if tap.convert is not None:
                            value = tap.convert(value)
                        if value is not None:
                            hook(tap.channel, value)
            return result

        namespace[method] = wrapper
    counted: set[str] = set()
    for tap in taps:  # an overridden handler is counted around its override
        if tap.within is not None and tap.within not in counted:
            inner = namespace.get(tap.within) or getattr(base, tap.within)
            namespace[tap.within] = _counting(inner, tap.within)
            counted.add(tap.within)
    return type(f"Tapped{base.__name__}", (base,), namespace)


def _applies(state: dict[str, Any], tap: Tap, args: tuple[Any, ...]) -> bool:
    """Whether ``tap`` takes this call (inside its handler, of its kind of message)."""
    if tap.within is not None and not state.get(_depth_key(tap.within)):
        return False
    if not tap.accept(args):
        return False
    if tap.message is not None:
        return tap.within is not None and tap.message(state.get(_args_key(tap.within), ()))
    return True


def _stamped(client: Any, tap: Tap, result: Any) -> Any:
    """``result``, or a copy with the exchange time the handler will stamp it with."""
    if tap.event_time is None or tap.within is None or not isinstance(result, dict):
        return result
    if result.get("timestamp") is not None:
        return result
    ts = tap.event_time(client.__dict__.get(_args_key(tap.within), ()))
    return result if ts is None else {**result, "timestamp": ts}


def _depth_key(method: str) -> str:
    return f"_marketbus_in_{method}"


def _args_key(method: str) -> str:
    return f"_marketbus_args_{method}"


def _counting(original: Any, method: str) -> Any:
    """``method`` with a flag telling the taps they run inside it (and its arguments)."""
    key, args_key = _depth_key(method), _args_key(method)

    def inside(self: Any, *args: Any, **kwargs: Any) -> Any:
        d = self.__dict__
        d[key] = d.get(key, 0) + 1
        outer = d.get(args_key)
        d[args_key] = args
        try:
            return original(self, *args, **kwargs)
        finally:
            d[key] -= 1
            d[args_key] = outer

    return inside


def ccxt_config(cfg: ExchangeSettings) -> dict[str, Any]:
    """The config dict for the adapter: our defaults, then ``cfg.options`` (URLs come later)."""
    options: dict[str, Any] = {
        # with a tap every trade is seen as parsed, so the cache only costs memory and
        # full-GC time (every cached trade is a few dicts the collector walks)
        "tradesLimit": cfg.trades_limit or (10 if has_taps(cfg.name) else 100_000),
        "defaultType": DEFAULT_TYPES.get(cfg.name, "spot"),
        "fetchMarkets": {"types": list(MARKET_TYPES.get(cfg.name, ("spot",)))},
    }
    if cfg.name == "kraken":  # the book depth to subscribe (ccxt's default is 10 levels)
        options.update(kraken.client_options(cfg.book_depth))
    if cfg.name in STREAMS_PER_CONNECTION:
        options["subscriptionLimitByStream"] = dict(STREAMS_PER_CONNECTION[cfg.name])
    snapshot = snapshot_limit(cfg.name, cfg.book_depth)
    if snapshot is not None:
        # the REST snapshot a book starts from: CCXT asks 1,000 levels (Binance weight 50)
        options["watchOrderBookLimit"] = snapshot
    config: dict[str, Any] = {"enableRateLimit": True, "options": options, "newUpdates": True}
    if cfg.url:
        config["enableRateLimit"] = False  # a local fake: no 0.25 s per subscribe
    return _deep_merge(config, cfg.options)


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
        )
    return out


@functools.cache
def _client_class(exchange_id: str, base: type[Any]) -> type[Any]:
    """The adapter class with our taps and overrides, built once per exchange (not per
    reconnect)."""
    taps = TAPS.get(exchange_id, ())
    overrides = OVERRIDES.get(exchange_id, {})
    return _tapped_class(base, taps, overrides) if taps or overrides else base


def make_client(cfg: ExchangeSettings, on_parsed: OnParsed | None) -> Any:
    """A ccxt.pro client for ``cfg``; ``on_parsed`` sees each trade/ticker as it is parsed."""
    # an exchange without websocket support in ccxt.pro is polled over REST (async ccxt)
    base = getattr(ccxt.pro, cfg.name, None) or getattr(ccxt.async_support, cfg.name, None)
    if base is None:
        raise UnknownExchangeError(f"exchange {cfg.name!r} is not in ccxt")
    taps = TAPS.get(cfg.name, ())
    client = _client_class(cfg.name, base)(ccxt_config(cfg))
    if cfg.sandbox:
        enter_sandbox(client)
    if cfg.url:  # after the sandbox switch: the test urls are the ones rebased
        client.urls = {**client.urls, "api": rebase_urls(client.urls["api"], cfg.url)}
    client.__dict__["_marketbus_on_parsed"] = on_parsed if taps else None
    return client


def enter_sandbox(client: Any) -> None:
    """CCXT's own sandbox mode: ``urls['api']`` becomes ``urls['test']`` (the live ones are
    kept in ``urls['apiBackup']``), plus what the adapter adds (OKX: the demo-trading header
    ``x-simulated-trading: 1`` and ``?brokerId=9999`` on its websocket urls; Binance: no
    option markets). Settings refuse an exchange without test urls before this runs."""
    test = client.urls.get("test")
    if not test:  # CCXT would install None as the api urls (coinbase, kraken in 4.5.90)
        raise ConfigError(f"{client.id} has no public testnet in ccxt (urls['test'] is empty)")
    try:
        client.set_sandbox_mode(True)
    except ccxt.NotSupported as e:
        raise ConfigError(f"{client.id}: sandbox mode refused by ccxt: {e}") from e


def subscribe_limit(exchange_id: str, default: int) -> int:
    """Most symbols one watch loop (one subscribe request) may hold on this exchange."""
    return SUBSCRIBE_LIMITS.get(exchange_id, default)


def streams_per_connection(client: Any, market_type: object) -> int | None:
    """Streams CCXT lets one connection of ``market_type`` hold (its
    ``subscriptionLimitByStream`` option; None where the adapter has no such limit)."""
    options = getattr(client, "options", None)
    limits = options.get("subscriptionLimitByStream") if isinstance(options, dict) else None
    value = limits.get(market_type) if isinstance(limits, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def watch_params(exchange_id: str, channel: Channel, cfg: ExchangeSettings) -> dict[str, Any]:
    """Extra params for the ``watch_*`` call: which stream to use, where it matters."""
    if exchange_id in ("binance", "binanceusdm"):
        name = cfg.trade_stream if channel is Channel.TRADES else cfg.ticker_stream
        return {"name": name}
    return {}
