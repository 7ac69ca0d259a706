"""FakeKraken's mirror of the market: pairs, books, trades (with ids), last tickers, candles.

Everything REST answers and every subscribe snapshot comes from here. Pairs are known by
three names: Kraken's id (`XXBTZCHF`, REST), the v1 `wsname` (`XBT/CHF`, the sources) and the
v2 symbol (`BTC/CHF`, v2 clients). v1 trades carry no ids; the mirror numbers each pair's
trades from 1, as Kraken's v2 `trade_id`s count per pair. Candles of every interval are built
from the trades (v1 sessions record no `ohlc`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fake_exchange.kraken import frames as kf
from fake_exchange.kraken.book import KrakenBook
from fake_exchange.kraken.frames import Payload, V1Level
from fake_exchange.kraken.source import KrakenEvent

MAX_TRADES = 200_000
"""Trades kept per pair (REST backfill reads them)."""
MAX_CANDLES = 720
"""Candles kept per pair and interval (what Kraken's `OHLC` returns at most)."""


@dataclass(slots=True)
class Trade:
    row: list[str]
    """v1 row: `[price, volume, time, side, ordertype, misc]`."""
    trade_id: int

    @property
    def ts_ns(self) -> int:
        return kf.seconds_ns(self.row[2])


@dataclass(slots=True)
class _Candles:
    by_interval: dict[int, dict[int, list[Decimal]]] = field(default_factory=dict)

    def add(self, price: Decimal, qty: Decimal, ts_s: int) -> list[tuple[int, list[Decimal]]]:
        """Add a trade to the candle of every interval; the candles it changed."""
        out = []
        for interval in kf.INTERVALS:
            start = ts_s - ts_s % (interval * 60)
            rows = self.by_interval.setdefault(interval, {})
            c = rows.get(start)
            if c is None:
                c = rows[start] = [Decimal(start), price, price, price, price, Decimal(0),
                                   Decimal(0), Decimal(0)]  # fmt: skip
                if len(rows) > MAX_CANDLES:
                    del rows[min(rows)]
            c[2], c[3], c[4] = max(c[2], price), min(c[3], price), price
            c[5] += price * qty
            c[6] += qty
            c[7] += 1
            out.append((interval, c))
        return out


def candle_row(c: list[Decimal]) -> list[Any]:
    """`[start_s, open, high, low, close, vwap, volume, count]` (vwap = traded value / volume)."""
    vwap = c[5] / c[6] if c[6] else c[4]
    return [int(c[0]), *(str(x) for x in c[1:5]), str(vwap), str(c[6]), int(c[7])]


class KrakenMarket:
    """The state one FakeKraken serves (see the module)."""

    def __init__(self, pairs: dict[str, Payload]) -> None:
        self.pairs: dict[str, Payload] = {}
        self.by_ws: dict[str, str] = {}
        self.by_v2: dict[str, str] = {}
        for pid, entry in pairs.items():
            if "wsname" not in entry or entry.get("status", "online") != "online":
                continue
            self.pairs[pid] = {"status": "online", **entry}
            self.by_ws[entry["wsname"]] = pid
            self.by_v2[kf.v2_symbol(entry["wsname"])] = entry["wsname"]
        self.books: dict[str, KrakenBook] = {}
        self.trades: dict[str, list[Trade]] = {}
        self.tickers: dict[str, tuple[Payload, int]] = {}
        self.candles: dict[str, _Candles] = {}
        self._next_id: dict[str, int] = {}

    # ------------------------------------------------------------------ names

    def add_pair(self, pid: str, entry: Payload) -> None:
        """A pair a synthetic source made up (not in the recording)."""
        self.pairs[pid] = {"status": "online", **entry}
        self.by_ws[entry["wsname"]] = pid
        self.by_v2[kf.v2_symbol(entry["wsname"])] = entry["wsname"]

    def wsname(self, name: str) -> str | None:
        """The pair's v1 name from a v2 symbol, a wsname, a pair id or an altname."""
        if name in self.by_v2:
            return self.by_v2[name]
        if name in self.by_ws:
            return name
        for pid, entry in self.pairs.items():
            if name in (pid, entry.get("altname")):
                return str(entry["wsname"])
        return None

    def decimals(self, wsname: str) -> tuple[int, int]:
        """(price, qty) decimals of the pair (`pair_decimals`, `lot_decimals`)."""
        entry = self.pairs.get(self.by_ws.get(wsname, ""), {})
        return int(entry.get("pair_decimals", 8)), int(entry.get("lot_decimals", 8))

    def book(self, wsname: str) -> KrakenBook:
        book = self.books.get(wsname)
        if book is None:
            book = self.books[wsname] = KrakenBook()
        return book

    # ------------------------------------------------------------------ events

    def observe(self, ev: KrakenEvent) -> list[Trade]:
        """Mirror one source event; a trade event's trades, numbered."""
        if ev.channel.startswith("book"):
            depth = int(ev.channel.partition("-")[2] or 1000)
            book = self.book(ev.pair)
            if "as" in ev.data or "bs" in ev.data:
                book.reset(ev.data.get("as", ()), ev.data.get("bs", ()), depth)
            else:
                book.apply(ev.data.get("a", ()), ev.data.get("b", ()))
            book.ts_ns = ev.ts_ns
            return []
        if ev.channel == "trade":
            return self._trades(ev.pair, ev.data)
        if ev.channel == "ticker":
            self.tickers[ev.pair] = (ev.data, ev.ts_ns)
        return []

    def _trades(self, wsname: str, rows: Iterable[V1Level]) -> list[Trade]:
        kept = self.trades.setdefault(wsname, [])
        candles = self.candles.setdefault(wsname, _Candles())
        out = []
        for row in rows:
            n = self._next_id.get(wsname, 1)
            self._next_id[wsname] = n + 1
            t = Trade([str(x) for x in row], n)
            kept.append(t)
            candles.add(Decimal(t.row[0]), Decimal(t.row[1]), t.ts_ns // 1_000_000_000)
            out.append(t)
        if len(kept) > MAX_TRADES:
            del kept[: len(kept) - MAX_TRADES // 2]
        return out

    # ------------------------------------------------------------------ views

    def ticker(self, wsname: str, now_ns: int) -> tuple[Payload, int]:
        """The last ticker (v1 dict, time), or one made from the book and trades."""
        if wsname in self.tickers:
            return self.tickers[wsname]
        book = self.book(wsname)
        bids, asks = book.bids(1), book.asks(1)
        trades = self.trades.get(wsname, [])
        mid = bids[0][0] if bids else (asks[0][0] if asks else "0")
        last = trades[-1].row[0] if trades else mid
        prices = [Decimal(t.row[0]) for t in trades] or [Decimal(last)]
        volume = sum((Decimal(t.row[1]) for t in trades), Decimal(0))
        stats = {"volume": str(volume), "vwap": last, "count": len(trades),
                 "low": str(min(prices)), "high": str(max(prices))}  # fmt: skip
        bid = (bids[0][0], bids[0][1]) if bids else (mid, "0")
        ask = (asks[0][0], asks[0][1]) if asks else (mid, "0")
        first = trades[0].row[0] if trades else last
        return kf.v1_ticker(last, bid, ask, first, stats), now_ns

    def recent_trades(self, wsname: str, n: int) -> list[Trade]:
        return self.trades.get(wsname, [])[-n:]

    def trades_since(self, wsname: str, since_ns: int, count: int) -> list[Trade]:
        """Up to `count` trades after `since_ns`, oldest first (REST `Trades`)."""
        return [t for t in self.trades.get(wsname, []) if t.ts_ns > since_ns][:count]

    def candle_rows(self, wsname: str, interval: int, since_s: int = 0) -> list[list[Any]]:
        """Candles of `interval` minutes starting after `since_s`, oldest first."""
        rows = self.candles.get(wsname, _Candles()).by_interval.get(interval, {})
        return [candle_row(rows[s]) for s in sorted(rows) if s > since_s]


__all__ = ["KrakenMarket", "Trade", "candle_row"]
