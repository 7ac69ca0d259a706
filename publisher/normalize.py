"""CCXT's unified dicts -> our models. Pure and synchronous: testable with recorded frames.

Invalid values (zero or negative prices, NaN, missing ids) raise
:class:`NormalizeError`; the caller counts and skips the record.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from marketbus.errors import DecodeError
from marketbus.models import Ticker, Trade


class NormalizeError(DecodeError):
    """A CCXT structure we cannot turn into a valid record."""


def _opt_number(v: Any, zero_ok: bool) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and (f > 0 or (zero_ok and f == 0)) else None


def opt_price(v: Any) -> float | None:
    """Optional price: absent, zero or non-finite is ``None`` (illiquid books report 0)."""
    return _opt_number(v, zero_ok=False)


def opt_size(v: Any) -> float | None:
    """Optional size or volume: absent, negative or non-finite is ``None``."""
    return _opt_number(v, zero_ok=True)


SIZE_FIELDS = frozenset({"bid_size", "ask_size", "base_volume", "quote_volume"})

# Ticker field -> key in CCXT's unified ticker structure
CCXT_TICKER_KEYS = {
    "last": "last", "bid": "bid", "ask": "ask", "bid_size": "bidVolume", "ask_size": "askVolume",
    "open": "open", "high": "high", "low": "low", "close": "close",
    "base_volume": "baseVolume", "quote_volume": "quoteVolume",
}  # fmt: skip


def ticker_record(
    exchange: str,
    symbol: Any,
    ts_ms: int,
    recv_ns: int,
    source: Mapping[str, Any],
    keys: Mapping[str, str],
) -> Ticker:
    """A :class:`Ticker` from any mapping, given which of its keys holds each field.

    One place for the value rules (zero prices are absent, sizes may be zero), shared by
    the CCXT path and the native parser so both give the same record.
    """
    values = {
        f: (opt_size if f in SIZE_FIELDS else opt_price)(source.get(k)) for f, k in keys.items()
    }
    try:
        return Ticker(exchange=exchange, symbol=symbol, ts_ms=ts_ms, recv_ns=recv_ns, **values)
    except (ValidationError, TypeError, ValueError) as e:
        raise NormalizeError(f"bad ticker from {exchange}: {e}") from e


def _event_ms(d: dict[str, Any], recv_ns: int) -> int:
    """The exchange's event time: Binance's ``E`` when present, else CCXT's timestamp."""
    info = d.get("info")
    if isinstance(info, dict):
        e = info.get("E")
        if isinstance(e, int) and not isinstance(e, bool) and e > 0:
            return e
    ts = d.get("timestamp")
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts) and ts > 0:
        return int(ts)
    return recv_ns // 1_000_000


def trade_from_ccxt(exchange: str, t: dict[str, Any], recv_ns: int) -> Trade:
    """A CCXT trade structure as a :class:`Trade`."""
    ts = t.get("timestamp")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts):
        ts = recv_ns // 1_000_000
    side = t.get("side")
    try:
        return Trade(
            exchange=exchange,
            symbol=t.get("symbol"),
            ts_ms=int(ts),
            recv_ns=recv_ns,
            id=str(t["id"]) if t.get("id") is not None else "",
            price=t.get("price"),
            amount=t.get("amount"),
            side=side if side in ("buy", "sell") else None,
        )
    except (ValidationError, TypeError, ValueError) as e:
        raise NormalizeError(f"bad trade from {exchange}: {e}") from e


def ticker_from_ccxt(exchange: str, t: dict[str, Any], recv_ns: int) -> Ticker:
    """A CCXT ticker structure as a :class:`Ticker`."""
    return ticker_record(
        exchange, t.get("symbol"), _event_ms(t, recv_ns), recv_ns, t, CCXT_TICKER_KEYS
    )
