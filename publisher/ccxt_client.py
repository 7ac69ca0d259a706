"""Build the ccxt.pro client for one exchange, with taps that see every parsed message.

CCXT caches trades between two ``watch_*`` calls (``tradesLimit``) and keeps only the
latest ticker per symbol, so a caller that polls loses data under bursts (see
docs/ccxt.md). A *tap* subclasses the adapter and hands each structure to us the
moment CCXT parses it; the ``watch_*`` loops then only hold the subscriptions.
Which methods are tapped or overridden, and the adapter's options, are each exchange's
profile's (``publisher.exchanges``); this module only builds the client from it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import ccxt
import ccxt.async_support
import ccxt.pro

from marketbus.errors import ConfigError, UnknownExchangeError
from marketbus.models import Channel
from marketbus.settings import ExchangeSettings
from publisher.endpoints import rebase_urls
from publisher.exchanges import profile
from publisher.pacing import snapshot_limit
from publisher.profile import Tap

OnParsed = Callable[[Channel, dict[str, Any]], None]

__all__ = [
    "OnParsed",
    "Tap",
    "ccxt_config",
    "enter_sandbox",
    "has_taps",
    "make_client",
    "streams_per_connection",
    "subscribe_limit",
    "tapped_channels",
    "watch_params",
]


def has_taps(exchange_id: str) -> bool:
    return bool(profile(exchange_id).taps)


def tapped_channels(exchange_id: str) -> frozenset[Channel]:
    """The channels a tap delivers on this exchange (the others are read from what the
    watch calls return)."""
    return frozenset(t.channel for t in profile(exchange_id).taps)


def _tapped_class(
    base: type[Any], taps: tuple[Tap, ...], overrides: Mapping[str, Callable[[Any], Any]]
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
    p = profile(cfg.name)
    options: dict[str, Any] = {
        # with a tap every trade is seen as parsed, so the cache only costs memory and
        # full-GC time (every cached trade is a few dicts the collector walks)
        "tradesLimit": cfg.trades_limit or (10 if p.taps else 100_000),
        "defaultType": p.default_type,
        "fetchMarkets": {"types": list(p.market_types)},
    }
    if p.client_options is not None:  # Kraken: the book depth to subscribe
        options.update(p.client_options(cfg.book_depth))
    if p.streams_per_connection is not None:  # where CCXT's own limit is wrong (Binance)
        options["subscriptionLimitByStream"] = dict(p.streams_per_connection)
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
    p = profile(exchange_id)
    return _tapped_class(base, p.taps, p.overrides) if p.taps or p.overrides else base


def make_client(cfg: ExchangeSettings, on_parsed: OnParsed | None) -> Any:
    """A ccxt.pro client for ``cfg``; ``on_parsed`` sees each trade/ticker as it is parsed."""
    # an exchange without websocket support in ccxt.pro is polled over REST (async ccxt)
    base = getattr(ccxt.pro, cfg.name, None) or getattr(ccxt.async_support, cfg.name, None)
    if base is None:
        raise UnknownExchangeError(f"exchange {cfg.name!r} is not in ccxt")
    client = _client_class(cfg.name, base)(ccxt_config(cfg))
    if cfg.sandbox:
        enter_sandbox(client)
    if cfg.url:  # after the sandbox switch: the test urls are the ones rebased
        client.urls = {**client.urls, "api": rebase_urls(client.urls["api"], cfg.url)}
    client.__dict__["_marketbus_on_parsed"] = on_parsed if has_taps(cfg.name) else None
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
    limit = profile(exchange_id).subscribe_limit
    return default if limit is None else limit


def streams_per_connection(client: Any, market_type: object) -> int | None:
    """Streams CCXT lets one connection of ``market_type`` hold (its
    ``subscriptionLimitByStream`` option; None where the adapter has no such limit)."""
    options = getattr(client, "options", None)
    limits = options.get("subscriptionLimitByStream") if isinstance(options, dict) else None
    value = limits.get(market_type) if isinstance(limits, dict) else None
    return value if isinstance(value, int) and value > 0 else None


def watch_params(exchange_id: str, channel: Channel, cfg: ExchangeSettings) -> dict[str, Any]:
    """Extra params for the ``watch_*`` call: which stream to use, where it matters."""
    make = profile(exchange_id).watch_params
    return {} if make is None else make(channel, cfg)
