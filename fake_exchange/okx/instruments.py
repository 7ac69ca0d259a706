"""OKX instrument names: instId <-> the unified 'BASE/QUOTE' symbol ccxt uses."""

from __future__ import annotations

from fake_exchange.okx.frames import Payload

INST_TYPES = ("SPOT", "SWAP", "FUTURES", "OPTION")


def inst_id_of(symbol: str) -> str:
    """'BTC/USDT' or 'btc-usdt' -> 'BTC-USDT'."""
    return symbol.replace("/", "-").upper()


def unified_symbols(instruments: dict[str, list[Payload]]) -> dict[str, str]:
    """instId -> 'BASE/QUOTE' of the SPOT entries (what ccxt calls them)."""
    return {e["instId"]: f"{e['baseCcy']}/{e['quoteCcy']}" for e in instruments.get("SPOT", [])}


__all__ = ["INST_TYPES", "inst_id_of", "unified_symbols"]
