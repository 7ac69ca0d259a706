"""Parse what a bot asks to follow: ``"binance:BTC/USDT"`` (or ``binance:btcusdt``)."""

from __future__ import annotations

from collections.abc import Iterable

from marketbus.errors import ConfigError
from marketbus.keys import StreamKey, stream_key
from marketbus.models import Channel


def split_market(market: str) -> tuple[str, str]:
    """``"binance:BTC/USDT"`` -> ``("binance", "BTC/USDT")``; dashes/underscores become ``/``."""
    exchange, sep, symbol = market.strip().partition(":")
    if not sep or not exchange or not symbol:
        raise ConfigError(f"market must look like 'binance:BTC/USDT', got {market!r}")
    return exchange.lower(), symbol.upper().replace("-", "/").replace("_", "/")


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
    loose = {(k.exchange, k.symbol.replace("/", "")): k.symbol for k in known}
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
