"""Derivatives records for tests (funding, mark, open interest, liquidations of a perpetual)."""

from __future__ import annotations

from typing import Any

from marketbus.models import Funding, Liquidation, MarkPrice, OpenInterest

PERP = "BTC/USDT:USDT"


def _head(i: int, symbol: str, exchange: str) -> dict[str, Any]:
    return {
        "exchange": exchange,
        "symbol": symbol,
        "ts_ms": 1_700_000_000_000 + i,
        "recv_ns": 1_700_000_000_000_000_000 + i * 1000,
    }


def funding(i: int, symbol: str = PERP, exchange: str = "bybit", **kw: Any) -> Funding:
    values: dict[str, Any] = {
        "rate": 0.0001 * (i % 3 - 1),
        "next_funding_ms": 1_700_006_400_000,
        "interval_ms": 28_800_000,
    }
    return Funding(**_head(i, symbol, exchange), **{**values, **kw})


def mark(i: int, symbol: str = PERP, exchange: str = "bybit", **kw: Any) -> MarkPrice:
    values: dict[str, Any] = {"mark_price": 100.0 + i, "index_price": 100.5 + i}
    return MarkPrice(**_head(i, symbol, exchange), **{**values, **kw})


def open_interest(i: int, symbol: str = PERP, exchange: str = "bybit", **kw: Any) -> OpenInterest:
    values: dict[str, Any] = {"contracts": 1000.0 + i, "value": (1000.0 + i) * 100}
    return OpenInterest(**_head(i, symbol, exchange), **{**values, **kw})


def liquidation(i: int, symbol: str = PERP, exchange: str = "bybit", **kw: Any) -> Liquidation:
    values: dict[str, Any] = {
        "side": "sell" if i % 2 else "buy",
        "price": 99.0 + i,
        "amount": 0.25 * (i + 1),
    }
    return Liquidation(**_head(i, symbol, exchange), **{**values, **kw})
