"""Parse what a bot asks to follow: ``"binance:BTC/USDT"`` (or ``binance:btcusdt``)."""

from __future__ import annotations

from collections.abc import Iterable

from marketbus.errors import ConfigError
from marketbus.keys import StreamKey, stream_key
from marketbus.models import Channel
from marketbus.symbols import normalize_symbol


def loose_symbol(symbol: str) -> str:
    """The slashless form ``BTCUSDT`` that a bot may type for ``BTC/USDT``."""
    return symbol.replace("/", "")


def split_market(market: str) -> tuple[str, str]:
    """``"binance:BTC/USDT"`` -> ``("binance", "BTC/USDT")``; dashes/underscores become ``/``."""
    exchange, sep, symbol = market.strip().partition(":")
    if not sep or not exchange.strip() or not symbol.strip():
        raise ConfigError(f"market must look like 'binance:BTC/USDT', got {market!r}")
    return exchange.strip().lower(), normalize_symbol(symbol)


def plan(
    markets: Iterable[str], channels: Iterable[Channel | str], known: Iterable[StreamKey] = ()
) -> dict[str, StreamKey]:
    """Stream key -> (exchange, symbol, channel) for every market x channel.

    A symbol without a slash (``BTCUSDT``) is matched against the streams that exist
    (``known``), so ``binance:btcusdt`` finds ``BTC/USDT``.
    """
    try:
        chans = [Channel(c) for c in channels]
    except ValueError as e:
        raise ConfigError(f"channels: {e}; use {[c.value for c in Channel]}") from e
    if not chans:
        raise ConfigError("channels: needs at least one channel")
    loose = {(k.exchange, loose_symbol(k.symbol)): k.symbol for k in known}
    out: dict[str, StreamKey] = {}
    for m in markets:
        exchange, symbol = split_market(m)
        if "/" not in symbol:
            symbol = loose.get((exchange, symbol), symbol)
        for ch in chans:
            try:
                key = stream_key(exchange, symbol, ch)
            except ValueError as e:
                raise ConfigError(f"markets: {e}") from e
            out[key] = StreamKey(exchange, symbol, ch)
    if not out:
        raise ConfigError("markets: needs at least one market like 'binance:BTC/USDT'")
    return out


class MarketIndex:
    """Finds the stream a bot means however it spells the market: ``BTC/USDT``,
    ``btc-usdt``, ``BTC_USDT`` or ``BTCUSDT`` (one dict lookup, per exchange)."""

    def __init__(self, keys: Iterable[StreamKey] = ()) -> None:
        self._exact: dict[tuple[str, str, Channel], StreamKey] = {}
        self._loose: dict[tuple[str, str, Channel], StreamKey] = {}
        for k in keys:
            self._exact[(k.exchange, k.symbol, k.channel)] = k
            self._loose.setdefault((k.exchange, loose_symbol(k.symbol), k.channel), k)

    def find(self, exchange: str, symbol: str, channel: Channel | str) -> StreamKey | None:
        ex, sym, ch = exchange.strip().lower(), normalize_symbol(symbol), Channel(channel)
        found = self._exact.get((ex, sym, ch))
        if found is None:
            found = self._loose.get((ex, loose_symbol(sym), ch))
        return found
