"""Derivatives channels: CCXT's structures -> ``Funding``, ``MarkPrice``, ``OpenInterest`` and
``Liquidation`` records, and which of them are worth publishing. Pure and synchronous.

Where each channel comes from is per exchange and is CCXT's to say (``publisher.deriv_feeds``);
this module only reads what CCXT parsed:

- a **funding-rate structure** (``watch_funding_rate(s)``, ``fetch_funding_rate(s)``):
  ``fundingRate`` is the coming payment's rate and ``fundingTimestamp`` when it is due,
  ``nextFundingRate`` the exchange's estimate of the payment after it (OKX; CCXT: "two funding
  rates from now"), ``interval`` (``"8h"``) the time between payments;
- a **ticker** whose exchange puts derivatives fields in it (Bybit linear: ``fundingRate``,
  ``nextFundingTime``, ``fundingIntervalHour``, ``markPrice``, ``indexPrice``,
  ``openInterest`` in contracts, ``openInterestValue`` in the settle currency), read from its
  ``info``: CCXT merges Bybit's ticker deltas into the last snapshot there, so it always holds
  the full state;
- a **mark-price ticker** (``watch_mark_price(s)``: ``markPrice``, ``indexPrice`` where the
  feed has it);
- an **open-interest structure** (``fetch_open_interest(s)``: ``openInterestAmount`` in
  contracts, ``openInterestValue`` in the quote currency);
- a **liquidation structure** (``watch_liquidations``): ``contracts``, ``price``, ``side``.
  Exchanges mean different things by the side: OKX gives the liquidation order's side, Bybit
  the side of the liquidated position (``S``: ``Buy`` = a long was liquidated), which is
  turned around here (the profile's ``liquidation_side_is_position``), so ``side`` is always
  the order's: a liquidated long is ``sell``.

A record carries the exchange's event time where the structure has one, else our receive
time. :class:`DerivativesGate` drops repeats: the same funding, mark or open interest values
again are not a new record; every liquidation is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from marketbus.models import Channel, Funding, Liquidation, MarkPrice, OpenInterest, Record
from publisher.exchanges import profile
from publisher.normalize import NormalizeError, opt_price, opt_size

DerivativeRecord = Funding | MarkPrice | OpenInterest | Liquidation

_INTERVAL_UNITS_MS = {"m": 60_000, "h": 3_600_000, "d": 86_400_000}


def _number(v: Any) -> float | None:
    """A finite number (either sign) from a number or a decimal string; else None."""
    if v is None or isinstance(v, bool) or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _ms(v: Any) -> int | None:
    """A positive integer time in ms (an int, float or decimal string); else None."""
    f = _number(v)
    return int(f) if f is not None and f > 0 else None


def interval_ms(v: Any) -> int | None:
    """CCXT's funding ``interval`` (``"8h"``, ``"1h"``, ``"30m"``) or plain ms, as ms."""
    if isinstance(v, str) and len(v) > 1 and v[-1] in _INTERVAL_UNITS_MS and v[:-1].isdigit():
        return int(v[:-1]) * _INTERVAL_UNITS_MS[v[-1]] or None
    return _ms(v)


def _event_ms(d: Mapping[str, Any], recv_ns: int) -> int:
    """CCXT's ``timestamp``, else the raw message's ``ts`` (OKX), else our receive time."""
    ts = _ms(d.get("timestamp"))
    if ts is None:
        info = d.get("info")
        ts = _ms(info.get("ts")) if isinstance(info, Mapping) else None
    return recv_ns // 1_000_000 if ts is None else ts


def _build(cls: type[Any], exchange: str, symbol: Any, ts_ms: int, recv_ns: int, **v: Any) -> Any:
    try:
        return cls(exchange=exchange, symbol=symbol, ts_ms=ts_ms, recv_ns=recv_ns, **v)
    except (ValidationError, TypeError, ValueError) as e:
        raise NormalizeError(f"bad {cls.__name__} from {exchange}: {e}") from e


def funding_from_ccxt(exchange: str, fr: Mapping[str, Any], recv_ns: int) -> Funding:
    """A CCXT funding-rate structure as a :class:`Funding` record."""
    rate = _number(fr.get("fundingRate"))
    if rate is None:
        raise NormalizeError(f"funding from {exchange} without a rate: {fr.get('symbol')!r}")
    return _build(  # type: ignore[no-any-return]
        Funding, exchange, fr.get("symbol"), _event_ms(fr, recv_ns), recv_ns,
        rate=rate,
        next_funding_ms=_ms(fr.get("fundingTimestamp")),
        predicted_rate=_number(fr.get("nextFundingRate")),
        interval_ms=interval_ms(fr.get("interval")),
    )  # fmt: skip


def mark_from_ccxt(exchange: str, t: Mapping[str, Any], recv_ns: int) -> MarkPrice:
    """A CCXT ticker's ``markPrice`` (and ``indexPrice``) as a :class:`MarkPrice` record."""
    mark = opt_price(t.get("markPrice"))
    if mark is None:
        raise NormalizeError(f"mark price from {exchange} without a price: {t.get('symbol')!r}")
    return _build(  # type: ignore[no-any-return]
        MarkPrice, exchange, t.get("symbol"), _event_ms(t, recv_ns), recv_ns,
        mark_price=mark, index_price=opt_price(t.get("indexPrice")),
    )  # fmt: skip


def open_interest_from_ccxt(exchange: str, oi: Mapping[str, Any], recv_ns: int) -> OpenInterest:
    """A CCXT open-interest structure as an :class:`OpenInterest` record."""
    contracts = opt_size(oi.get("openInterestAmount"))
    if contracts is None:
        raise NormalizeError(f"open interest from {exchange} without contracts")
    return _build(  # type: ignore[no-any-return]
        OpenInterest, exchange, oi.get("symbol"), _event_ms(oi, recv_ns), recv_ns,
        contracts=contracts, value=opt_size(oi.get("openInterestValue")),
    )  # fmt: skip


def liquidation_from_ccxt(
    exchange: str, liq: Mapping[str, Any], recv_ns: int, ccxt_id: str | None = None
) -> Liquidation:
    """A CCXT liquidation structure as a :class:`Liquidation` (side: the order's).

    ``exchange`` is the bus name (``bybit-testnet`` for a sandbox), ``ccxt_id`` the adapter
    whose side convention applies (``exchange`` when not given)."""
    side = liq.get("side")
    side = side.lower() if isinstance(side, str) else side
    if profile(ccxt_id or exchange).liquidation_side_is_position and side in ("buy", "sell"):
        side = "sell" if side == "buy" else "buy"
    return _build(  # type: ignore[no-any-return]
        Liquidation, exchange, liq.get("symbol"), _event_ms(liq, recv_ns), recv_ns,
        side=side, price=opt_price(liq.get("price")), amount=opt_size(liq.get("contracts")),
    )  # fmt: skip


def from_ticker_info(
    exchange: str, t: Mapping[str, Any], recv_ns: int, channels: frozenset[Channel]
) -> list[DerivativeRecord]:
    """The records of ``channels`` a ticker carries (Bybit linear: read from its ``info``).

    A ticker without the fields (a spot one, or a contract whose feed left them out) gives
    none; so does a value that is not a number.
    """
    info = t.get("info")
    if not isinstance(info, Mapping):
        return []
    symbol, ts = t.get("symbol"), _event_ms(t, recv_ns)
    out: list[DerivativeRecord] = []
    if Channel.FUNDING in channels and _number(info.get("fundingRate")) is not None:
        hours = _number(info.get("fundingIntervalHour"))
        fr = {
            "symbol": symbol,
            "timestamp": ts,
            "fundingRate": info.get("fundingRate"),
            "fundingTimestamp": info.get("nextFundingTime"),
            "interval": int(hours * 3_600_000) if hours and hours > 0 else None,
        }
        out.append(_or_none(funding_from_ccxt, exchange, fr, recv_ns))
    if Channel.MARK in channels and opt_price(info.get("markPrice")) is not None:
        mark = {"symbol": symbol, "timestamp": ts, "markPrice": info.get("markPrice"),
                "indexPrice": info.get("indexPrice")}  # fmt: skip
        out.append(_or_none(mark_from_ccxt, exchange, mark, recv_ns))
    if Channel.OPEN_INTEREST in channels and opt_size(info.get("openInterest")) is not None:
        oi = {"symbol": symbol, "timestamp": ts, "openInterestAmount": info.get("openInterest"),
              "openInterestValue": info.get("openInterestValue")}  # fmt: skip
        out.append(_or_none(open_interest_from_ccxt, exchange, oi, recv_ns))
    return [r for r in out if r is not None]


def _or_none(make: Any, exchange: str, d: Mapping[str, Any], recv_ns: int) -> Any:
    """``make(...)``; a bad value in one field drops only that channel's record."""
    try:
        return make(exchange, d, recv_ns)
    except NormalizeError:
        return None


FROM_CCXT: dict[Channel, Any] = {
    Channel.FUNDING: funding_from_ccxt,
    Channel.MARK: mark_from_ccxt,
    Channel.OPEN_INTEREST: open_interest_from_ccxt,
    Channel.LIQUIDATIONS: liquidation_from_ccxt,
}
"""Channel -> the function making its record from the CCXT structure of that channel."""


def derivative_from_ccxt(
    exchange: str,
    channel: Channel,
    d: Mapping[str, Any],
    recv_ns: int,
    ccxt_id: str | None = None,
) -> DerivativeRecord:
    """The record of ``channel`` from its CCXT structure (:class:`NormalizeError` if bad);
    ``ccxt_id``: the adapter, when the bus name is another (a sandbox's)."""
    if channel is Channel.LIQUIDATIONS:
        return liquidation_from_ccxt(exchange, d, recv_ns, ccxt_id)
    make = FROM_CCXT.get(channel)
    if make is None:
        raise NormalizeError(f"{channel.value} is not a derivatives channel")
    record: DerivativeRecord = make(exchange, d, recv_ns)
    return record


def _content(record: Record) -> tuple[Any, ...]:
    """What a record says, its times aside (two records saying the same are one)."""
    d = record.__dict__
    return tuple(v for k, v in d.items() if k not in ("ts_ms", "recv_ns"))


@dataclass
class DerivativesGate:
    """Drops funding, mark and open-interest records that repeat the last one of their
    market (the same values again, at a later time); liquidations always pass.

    A funding record goes out when its rate, due time, predicted rate or interval changed;
    a mark record when the mark or the index price did; open interest when contracts or
    value did.
    """

    last: dict[tuple[Channel, str], tuple[Any, ...]] = field(default_factory=dict)
    unchanged: int = 0

    def offer(self, record: DerivativeRecord) -> bool:
        """True: publish ``record``; False: it repeats the last one."""
        if record.channel is Channel.LIQUIDATIONS:
            return True
        key = (record.channel, record.symbol)
        content = _content(record)
        if self.last.get(key) == content:
            self.unchanged += 1
            return False
        self.last[key] = content
        return True

    def forget(self, symbol: str, channel: Channel | None = None) -> None:
        """Start ``symbol`` over (unsubscribed): its next record goes out whatever it says."""
        for key in [k for k in self.last if k[1] == symbol and channel in (None, k[0])]:
            del self.last[key]


__all__ = [
    "FROM_CCXT",
    "DerivativeRecord",
    "DerivativesGate",
    "derivative_from_ccxt",
    "from_ticker_info",
    "funding_from_ccxt",
    "interval_ms",
    "liquidation_from_ccxt",
    "mark_from_ccxt",
    "open_interest_from_ccxt",
]
