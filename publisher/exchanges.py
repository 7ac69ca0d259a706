"""Every exchange profile, by CCXT id: the one registry the publisher reads.

Adding an exchange the publisher knows more about than CCXT's defaults is its module (with
its ``PROFILE``) plus one name below; any other CCXT exchange runs on :data:`GENERIC`.
"""

from __future__ import annotations

from publisher import binance, binanceusdm, bybit, coinbase, kraken, okx
from publisher.fast_path import FastPathFactory
from publisher.profile import ExchangeProfile

PROFILES: dict[str, ExchangeProfile] = {
    p.id: p
    for p in (
        binance.PROFILE,
        okx.PROFILE,
        bybit.PROFILE,
        coinbase.PROFILE,
        kraken.PROFILE,
        binanceusdm.PROFILE,
    )
}

GENERIC = ExchangeProfile("*")
"""Any other exchange: CCXT's adapter as is, spot markets, no taps, by-time backfill."""


def profile(exchange_id: str) -> ExchangeProfile:
    """The profile of ``exchange_id`` (CCXT's id), or :data:`GENERIC`."""
    return PROFILES.get(exchange_id, GENERIC)


FAST_PATHS: dict[str, FastPathFactory] = {
    i: p.native_parser for i, p in PROFILES.items() if p.native_parser is not None
}
"""Exchange -> its native parser, from the profiles (``marketbus.settings.NATIVE_PARSERS``
lists the same names: settings may not import the publisher; a test keeps them equal)."""

__all__ = ["FAST_PATHS", "GENERIC", "PROFILES", "profile"]
