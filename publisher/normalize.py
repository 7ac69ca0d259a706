"""CCXT's unified dicts -> our models. Pure and synchronous: testable with recorded frames.

Invalid values (zero or negative prices, NaN, missing ids) raise
:class:`NormalizeError`; the caller counts and skips the record.
"""

from __future__ import annotations

import math
from typing import Any

from pydantic import ValidationError

from marketbus.errors import DecodeError
from marketbus.models import Ticker, Trade


class NormalizeError(DecodeError):
    """A CCXT structure we cannot turn into a valid record."""


def opt_price(v: Any) -> float | None:
    """Optional price: absent, zero or non-finite is ``None`` (illiquid books report 0)."""
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


def opt_size(v: Any) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f >= 0 else None


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
    try:
        return Ticker(
            exchange=exchange,
            symbol=t.get("symbol"),
            ts_ms=_event_ms(t, recv_ns),
            recv_ns=recv_ns,
            last=opt_price(t.get("last")),
            bid=opt_price(t.get("bid")),
            ask=opt_price(t.get("ask")),
            bid_size=opt_size(t.get("bidVolume")),
            ask_size=opt_size(t.get("askVolume")),
            open=opt_price(t.get("open")),
            high=opt_price(t.get("high")),
            low=opt_price(t.get("low")),
            close=opt_price(t.get("close")),
            base_volume=opt_size(t.get("baseVolume")),
            quote_volume=opt_size(t.get("quoteVolume")),
        )
    except (ValidationError, TypeError, ValueError) as e:
        raise NormalizeError(f"bad ticker from {exchange}: {e}") from e
