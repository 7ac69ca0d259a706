"""Records for tests."""

from __future__ import annotations

from marketbus.models import Ticker, Trade


def trade(
    i: int, symbol: str = "BTC/USDT", exchange: str = "binance", price: float = 100.0
) -> Trade:
    return Trade(
        exchange=exchange,
        symbol=symbol,
        ts_ms=1_700_000_000_000 + i,
        recv_ns=1_700_000_000_000_000_000 + i * 1000,
        id=str(i),
        price=price + i / 100,
        amount=0.5 + i,
        side="buy" if i % 2 else "sell",
    )


def ticker(i: int, symbol: str = "BTC/USDT", exchange: str = "binance") -> Ticker:
    return Ticker(
        exchange=exchange,
        symbol=symbol,
        ts_ms=1_700_000_000_000 + i,
        recv_ns=1_700_000_000_000_000_000 + i * 1000,
        last=100.0 + i,
        bid=99.5 + i,
        ask=100.5 + i,
        bid_size=1.0,
        ask_size=2.0,
    )
