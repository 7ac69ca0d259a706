"""A native parser for OKX v5 spot ``trades`` and ``tickers`` push frames.

One OKX frame is ``{"arg": {"channel", "instId"}, "data": [row, ...]}``; every row becomes
one record, in order, exactly as CCXT's path makes it (``handle_trades``/``handle_ticker`` ->
``parse_trade``/``parse_ticker`` -> :mod:`publisher.normalize`); tests/unit/test_native_okx.py
holds the two equal on recorded and synthetic frames. The value rules are CCXT's, written out:

- a string or a number is a value, anything else (``null``, ``""``, booleans) is absent;
- ``ts`` is ``int(float(ts))``; a trade without one gets our receive time, as does a ticker
  whose ``ts`` is absent or not positive;
- on SPOT, ``vol24h`` is the base volume and ``volCcy24h`` the quote volume (on derivatives
  they are contracts and base currency: those frames are left to CCXT, which knows the market).
- fields no public push carries are not read: ``fillPx``/``fillSz`` (private fills, which
  CCXT prefers to ``px``/``sz``) and Binance's ``E`` (which ``normalize`` takes as a ticker's
  event time wherever it appears).

Where CCXT's own parser raises on a row (a non-numeric string where it does decimal
arithmetic, e.g. ``"px": "abc"``), the CCXT path loses the whole frame as malformed; here only
that row is refused (counted as invalid), or the field is absent on a ticker.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from marketbus.models import Channel, Record, Ticker, Trade
from publisher.fast_path import FastPathBase
from publisher.normalize import NormalizeError, ticker_record

OKX_CHANNELS: dict[str, Channel] = {"trades": Channel.TRADES, "tickers": Channel.TICKER}
"""OKX channel (``arg.channel``) -> the channel it feeds. ``trades-all`` needs a login."""

# Ticker field -> key in an OKX SPOT ``tickers`` row (``last`` is last and close)
OKX_SPOT_TICKER_KEYS = {
    "last": "last", "bid": "bidPx", "ask": "askPx", "bid_size": "bidSz", "ask_size": "askSz",
    "open": "open24h", "high": "high24h", "low": "low24h", "close": "last",
    "base_volume": "vol24h", "quote_volume": "volCcy24h",
}  # fmt: skip

_HEAD = 64
"""OKX writes ``arg`` first: its channel name sits in a data frame's first 64 characters."""


def _text(v: Any) -> str | None:
    """CCXT's ``safe_string``: a non-empty string or an int/float (as text), else ``None``."""
    t = type(v)
    if t is str:
        return v if v else None
    if t is int or t is float:
        return str(v)
    return None


def _number(v: Any) -> float | None:
    """CCXT's ``parse_number(safe_string(v))``; a non-numeric string raises ``ValueError``."""
    t = type(v)
    if t is str or t is int or t is float:
        return float(v)
    return None


def _int(v: Any) -> int | None:
    """CCXT's ``safe_integer``: ``int(float(v))``, ``None`` when that fails."""
    try:
        return int(float(v))
    except (TypeError, ValueError, OverflowError):
        return None


def okx_trade(exchange: str, row: Mapping[str, Any], symbol: str, recv_ns: int) -> Trade:
    """The trade of one ``trades`` row (``symbol``: the unified name of its ``instId``)."""
    try:
        ts = _int(row.get("ts"))
        trade_id = _text(row.get("tradeId"))
        side = row.get("side")
        return Trade(
            exchange=exchange,
            symbol=symbol,
            ts_ms=recv_ns // 1_000_000 if ts is None else ts,
            recv_ns=recv_ns,
            id="" if trade_id is None else trade_id,
            price=_number(row.get("px")),
            amount=_number(row.get("sz")),
            side=side if side == "buy" or side == "sell" else None,
        )
    except (TypeError, ValueError, OverflowError) as err:  # ValidationError is a ValueError
        raise NormalizeError(f"bad trades row from {exchange}: {err}") from err


def okx_ticker(exchange: str, row: Mapping[str, Any], symbol: str, recv_ns: int) -> Ticker:
    """The ticker of one SPOT ``tickers`` row."""
    ts = _int(row.get("ts"))
    ts_ms = ts if ts is not None and ts > 0 else recv_ns // 1_000_000
    return ticker_record(exchange, symbol, ts_ms, recv_ns, row, OKX_SPOT_TICKER_KEYS)


_BUILDERS: dict[Channel, Callable[[str, Mapping[str, Any], str, int], Record]] = {
    Channel.TRADES: okx_trade,
    Channel.TICKER: okx_ticker,
}


class OkxFastPath(FastPathBase):
    """Takes OKX ``trades``/``tickers`` frames of followed SPOT instruments off CCXT's hands.

    Everything else returns False and goes to CCXT untouched: books, candles, subscribe acks
    and errors (any frame with ``event``, ``op`` or ``code``), the text ``pong``, frames of
    instruments not followed or not SPOT, and a frame with a row of another instrument (or
    a row that is not an object), so CCXT decides about it as a whole.
    """

    def __init__(
        self,
        exchange: str,
        symbols: Mapping[str, str],
        channels: frozenset[Channel],
        emit: Callable[[Record], None],
        on_invalid: Callable[[Exception], None],
    ) -> None:
        self._ids: dict[str, str] = {}
        super().__init__(exchange, symbols, channels, emit, on_invalid)
        # OKX channel name -> row builder, for the channels published
        self._builders: dict[str, Callable[[str, Mapping[str, Any], str, int], Record]] = {
            name: _BUILDERS[c] for name, c in OKX_CHANNELS.items() if c in channels
        }

    @property
    def symbols(self) -> dict[str, str]:
        """OKX instIds (``BTC-USDT``) -> the unified symbols we publish; SPOT ones only."""
        return self._ids

    @symbols.setter
    def symbols(self, ids: dict[str, str]) -> None:
        # CCXT's unified names of derivatives carry the settle currency ("BTC/USDT:USDT")
        self._ids = {i: s for i, s in ids.items() if ":" not in s}

    def __call__(self, data: str | bytes, recv_ns: int) -> bool:
        if type(data) is not str:  # OKX sends text frames; anything else is CCXT's
            return False
        head = data[:_HEAD]
        if '"trades"' not in head and '"tickers"' not in head:
            return False  # books, candles, acks, "pong": not parsed twice
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False  # CCXT's path (and our frame guard) deals with it
        if type(frame) is not dict or "event" in frame or "op" in frame or "code" in frame:
            return False
        arg, rows = frame.get("arg"), frame.get("data")
        if type(arg) is not dict or type(rows) is not list:
            return False
        name, inst = arg.get("channel"), arg.get("instId")
        build = self._builders.get(name) if type(name) is str else None
        ids = self._ids
        if build is None or type(inst) is not str or inst not in ids:
            return False
        picked = []
        for row in rows:
            row_inst = row.get("instId") if type(row) is dict else None
            symbol = ids.get(row_inst) if type(row_inst) is str else None
            if symbol is None:
                return False
            picked.append((row, symbol))
        self.frames += 1
        for row, symbol in picked:
            try:
                record = build(self.exchange, row, symbol, recv_ns)
            except NormalizeError as err:
                self._on_invalid(err)
                continue
            self._emit(record)
        return True


__all__ = ["OKX_CHANNELS", "OKX_SPOT_TICKER_KEYS", "OkxFastPath", "okx_ticker", "okx_trade"]
