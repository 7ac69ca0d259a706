"""A native parser for Bybit v5 ``publicTrade`` (spot and linear) and spot ``tickers`` frames.

Bybit's spot and linear markets share ids (``BTCUSDT``) and topic names; CCXT tells a trade
frame's market by the websocket url it arrives on (``"spot" in url``), so this parser is bound
to each connection (:meth:`BybitFastPath.for_url`) and follows markets, not ids
(:meth:`BybitFastPath.follow`). Every row of a frame becomes one record, in order, exactly as
CCXT's path makes it (``handle_trades`` -> ``parse_ws_trade``, ``handle_ticker`` ->
``parse_ticker`` -> the tap -> :mod:`publisher.normalize`); tests/unit/test_native_bybit.py
holds the two equal. CCXT's rules, written out:

- a trade's id is the first of ``i``, ``T``, ``v`` that is neither absent nor ``""`` (a
  string or a number, else none); its time ``t`` else ``T`` (``int(float(x))``; none: our
  receive time); its side ``S`` lower-cased, and without ``S``, ``"buy"`` only when ``m`` is
  true, else ``"sell"``; its amount ``q`` else ``v``;
- a ticker's time is its ``time``, else the message's ``ts`` as sent (a number > 0, else our
  receive time), unless it carries Binance's ``E`` (:func:`publisher.normalize._event_ms`);
  its bid/ask sizes are ``bidSize``/``askSize`` else ``bid1Size``/``ask1Size``.

Left to CCXT, untouched: books, candles, liquidations, acks, pongs and errors (any frame with
an error or control key), every ``tickers`` frame on a linear connection (deltas CCXT merges
into its cached ticker, and they feed funding, mark and open interest through the worker's
tap), a spot ``delta`` or a snapshot with ``openInterestValue`` (CCXT files it as a contract),
a spot snapshot without ``lastPrice`` or ``prevPrice24h`` but with ``price24hPcnt`` (CCXT
derives the missing one from the others), and a frame with a row of another market or a row
that is not an object. Where CCXT's own parser raises on a row (decimal arithmetic on
``"p": "abc"``), the CCXT path loses the whole frame as malformed; here only that row is
refused (counted as invalid), or the field is absent on a ticker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import Any

import orjson

from marketbus.models import Channel, Record, Ticker, Trade
from publisher.fast_path import FastPathBase
from publisher.normalize import NormalizeError, ticker_record

BYBIT_TOPICS: dict[str, Channel] = {"publicTrade": Channel.TRADES, "tickers": Channel.TICKER}
"""Bybit topic (before the dot) -> the channel it feeds."""

CONTROL_KEYS = frozenset({"code", "ret_code", "retCode", "success", "ret_msg", "pong", "event",
                          "op"})  # fmt: skip
"""Keys CCXT's ``handle_message`` reads before dispatching (errors, pongs, acks)."""

_EARLIER_ROUTES = ("orderbook", "kline", "order", "stopOrder", "ticker", "trade")
"""CCXT dispatches a topic to the first handler whose name it contains: an id holding one of
these would send ``publicTrade.<id>`` or ``tickers.<id>`` elsewhere (Bybit's ids are upper case,
so none does; such an id is left to CCXT)."""

_HEAD = 40
"""Bybit writes ``topic`` first: ``{"topic":"publicTrade.`` sits in a frame's first 40 chars."""

# Ticker field -> the value CCXT's parse_ticker reads for it (identity: built per frame below)
_TICKER_KEYS = {f: f for f in ("last", "bid", "ask", "bid_size", "ask_size", "open", "high",
                               "low", "close", "base_volume", "quote_volume")}  # fmt: skip


def _text(v: Any) -> str | None:
    """CCXT's ``safe_string``: a non-empty string or an int/float (as text), else ``None``."""
    t = type(v)
    if t is str:
        return v if v else None
    if t is int or t is float:
        return str(v)
    return None


def _number(v: Any) -> float | None:
    """CCXT's ``parse_number(safe_string(v))``: ``None`` where that is not a number."""
    t = type(v)
    if t is str or t is int or t is float:
        try:
            return float(v)
        except ValueError:
            return None
    return None


def _int(v: Any) -> int | None:
    """CCXT's ``safe_integer``: ``int(float(v))``, ``None`` when that fails."""
    if v is None:
        return None
    if type(v) is int and -_EXACT <= v <= _EXACT:
        return v  # what int(float(v)) gives, without the float
    try:
        return int(float(v))
    except (TypeError, ValueError, OverflowError):
        return None


_EXACT = 2**53
"""Integers up to here survive ``float()`` unchanged."""


def _first(row: Mapping[str, Any], *keys: str) -> Any:
    """CCXT's ``safe_string_2``: the first key's value where it is a value, else the next's."""
    for key in keys[:-1]:
        v = row.get(key)
        if _text(v) is not None:
            return v
    return row.get(keys[-1])


def _trade_id(row: Mapping[str, Any]) -> str:
    """CCXT's ``safe_string_n(row, ['i', 'T', 'v'])``: the first value neither absent nor
    ``""`` decides (a string, or a number as text; anything else: no id)."""
    i = row.get("i")
    if type(i) is str and i:
        return i  # Bybit's own
    for key in ("i", "T", "v"):
        v = row.get(key)
        if v is not None and v != "":
            t = type(v)
            if t is str:
                return v  # type: ignore[no-any-return]
            return str(v) if t is int or t is float else ""
    return ""


def _omitted(v: Any) -> bool:
    """CCXT's ``omit_zero(safe_string(v)) is None``: absent, or a number equal to zero."""
    s = _text(v)
    if s is None:
        return True
    try:
        return float(s) == 0
    except ValueError:
        return False


def bybit_trade(exchange: str, row: Mapping[str, Any], symbol: str, recv_ns: int) -> Trade:
    """The trade of one ``publicTrade`` row (``symbol``: the market its connection names)."""
    try:
        ts = _int(row.get("t"))
        if ts is None:
            ts = _int(row.get("T"))
        side: Any = row.get("S")
        if type(side) is not str or not side:
            side = _text(side)
            if side is None:
                side = "buy" if row.get("m") is True else "sell"
        side = side.lower()
        return Trade(
            exchange=exchange,
            symbol=symbol,
            ts_ms=recv_ns // 1_000_000 if ts is None else ts,
            recv_ns=recv_ns,
            id=_trade_id(row),
            price=_number(row.get("p")),
            amount=_number(row.get("v") if row.get("q") is None else _first(row, "q", "v")),
            side=side if side == "buy" or side == "sell" else None,
        )
    except (TypeError, ValueError, OverflowError) as err:  # ValidationError is a ValueError
        raise NormalizeError(f"bad publicTrade row from {exchange}: {err}") from err


def bybit_ticker(
    exchange: str, frame: Mapping[str, Any], data: Mapping[str, Any], symbol: str, recv_ns: int
) -> Ticker:
    """The ticker of one spot ``tickers`` snapshot (``data``: its ``data`` object)."""
    e = data.get("E")
    if type(e) is int and e > 0:
        ts_ms = e
    else:
        ts = _int(data.get("time"))
        stamp: Any = frame.get("ts") if ts is None else ts
        t = type(stamp)
        if (t is int or t is float) and 0 < stamp < float("inf"):
            ts_ms = int(stamp)
        else:
            ts_ms = recv_ns // 1_000_000
    last = data.get("lastPrice")
    values = {
        "last": last, "close": last, "bid": data.get("bid1Price"), "ask": data.get("ask1Price"),
        "bid_size": _first(data, "bidSize", "bid1Size"),
        "ask_size": _first(data, "askSize", "ask1Size"),
        "open": data.get("prevPrice24h"), "high": data.get("highPrice24h"),
        "low": data.get("lowPrice24h"), "base_volume": data.get("volume24h"),
        "quote_volume": data.get("turnover24h"),
    }  # fmt: skip
    return ticker_record(exchange, symbol, ts_ms, recv_ns, values, _TICKER_KEYS)


def _routable(market_id: str) -> bool:
    return not any(route in market_id for route in _EARLIER_ROUTES)


class BybitFastPath(FastPathBase):
    """Takes Bybit ``publicTrade`` frames of followed markets (on the url of their type) and
    spot ``tickers`` snapshots off CCXT's hands; everything else goes to CCXT (see the module).

    Called without a connection (``fast(data, recv_ns)``) it takes nothing: the market of a
    Bybit frame depends on its url.
    """

    def __init__(
        self,
        exchange: str,
        symbols: Mapping[str, str],
        channels: frozenset[Channel],
        emit: Callable[[Record], None],
        on_invalid: Callable[[Exception], None],
    ) -> None:
        self._spot: dict[str, str] = {}
        self._linear: dict[str, str] = {}
        self._given: dict[str, str] = {}
        super().__init__(exchange, symbols, channels, emit, on_invalid)
        self._trades = Channel.TRADES in channels
        self._tickers = Channel.TICKER in channels

    @property
    def symbols(self) -> dict[str, str]:
        """Bybit ids -> unified symbols, as last given (contracts: the symbols with a ``:``).

        An id that a spot pair and a perpetual share can be given for only one of them here:
        the worker gives markets (:meth:`follow`)."""
        return self._given

    @symbols.setter
    def symbols(self, ids: dict[str, str]) -> None:
        self._given = dict(ids)
        self._set(((i, s, ":" not in s) for i, s in ids.items()))

    def follow(self, markets: Iterable[Mapping[str, Any]]) -> None:
        """Follow these CCXT markets: spot ones on spot connections, contracts on the others."""
        picked = [(m["id"], m["symbol"], bool(m.get("spot"))) for m in markets]
        self._given = {i: s for i, s, _ in picked}
        self._set(picked)

    def _set(self, markets: Iterable[tuple[str, str, bool]]) -> None:
        spot: dict[str, str] = {}
        linear: dict[str, str] = {}
        for market_id, symbol, is_spot in markets:
            if type(market_id) is str and type(symbol) is str and _routable(market_id):
                (spot if is_spot else linear)[market_id] = symbol
        self._spot, self._linear = spot, linear

    def for_url(self, url: str) -> Callable[[str | bytes, int], bool]:
        """The parser of one connection (CCXT: a url holding ``spot`` is a spot one)."""
        return partial(self._take, "spot" in url)

    def __call__(self, data: str | bytes, recv_ns: int) -> bool:
        return False

    def _take(self, spot: bool, data: str | bytes, recv_ns: int) -> bool:
        if type(data) is not str:  # Bybit sends text frames; anything else is CCXT's
            return False
        head = data[:_HEAD]
        if '"publicTrade.' in head:
            if not self._trades:
                return False
        elif not ('"tickers.' in head and spot and self._tickers):
            return False  # books, candles, acks, pongs, linear tickers: not parsed twice
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError:
            return False  # CCXT's path (and our frame guard) deals with it
        if type(frame) is not dict or not CONTROL_KEYS.isdisjoint(frame):
            return False
        topic = frame.get("topic")
        if type(topic) is not str:
            return False
        kind, _, market_id = topic.partition(".")
        if kind == "publicTrade":
            return self._trades_frame(frame, market_id, spot, recv_ns)
        if kind == "tickers" and spot:
            return self._ticker_frame(frame, market_id, recv_ns)
        return False

    def _trades_frame(self, frame: dict[str, Any], market_id: str, spot: bool, ns: int) -> bool:
        symbol = (self._spot if spot else self._linear).get(market_id)
        rows = frame.get("data")
        if symbol is None or type(rows) is not list:
            return False
        for row in rows:
            if type(row) is not dict or row.get("s") != market_id:
                return False  # CCXT files a row by its own "s": let it decide the frame
        self.frames += 1
        for row in rows:
            try:
                record = bybit_trade(self.exchange, row, symbol, ns)
            except NormalizeError as err:
                self._on_invalid(err)
                continue
            self._emit(record)
        return True

    def _ticker_frame(self, frame: dict[str, Any], market_id: str, ns: int) -> bool:
        symbol = self._spot.get(market_id)
        data = frame.get("data")
        if symbol is None or frame.get("type") != "snapshot" or type(data) is not dict:
            return False
        if data.get("symbol") != market_id or _text(data.get("openInterestValue")) is not None:
            return False
        if _text(data.get("price24hPcnt")) is not None and (
            _omitted(data.get("lastPrice")) or _omitted(data.get("prevPrice24h"))
        ):
            return False
        self.frames += 1
        try:
            record = bybit_ticker(self.exchange, frame, data, symbol, ns)
        except NormalizeError as err:
            self._on_invalid(err)
            return True
        self._emit(record)
        return True


__all__ = ["BYBIT_TOPICS", "BybitFastPath", "bybit_ticker", "bybit_trade"]
