"""The market as the fake Coinbase published it: what REST and the subscribe snapshots show.

Every source event goes through `observe` before anything is written, so REST, the snapshots
sent on subscribe and the pushed messages all come from one state: per product its full book
(levels kept as sent, with their `event_time`), its trades, its last ticker row and its
candles. Candles: a recording's `candles` messages are Coinbase's own five-minute candles and
are kept as they are; every REST granularity is also built from the trades published
(`derive.CandleBook`), and a source without `candles` messages (synthetic) gets its websocket
candles from there too. Pure, synchronous.
"""

from __future__ import annotations

from collections import deque
from decimal import Decimal
from typing import Any

from fake_exchange.coinbase import frames as cf
from fake_exchange.coinbase.frames import Payload
from fake_exchange.derive import CandleBook, units_str
from fake_exchange.levels import LevelBook
from fake_exchange.okx.frames import fmt

TRADE_HISTORY = 100_000
"""Trades kept per product for `products/{id}/ticker` (the REST trades a backfill reads)."""
CANDLES_SNAPSHOT = 100
"""Candles a `candles` snapshot holds (the recorded ones hold 100)."""
_INTERVAL = {60: "1m", 300: "5m", 900: "15m", 1800: "30m", 3600: "1h", 7200: "2h",
             14400: "4h", 21600: "6h", 86400: "1d"}  # fmt: skip


def _num(text: str) -> str:
    """A CandleBook value (1e-8 units text) as Coinbase writes numbers."""
    return fmt(Decimal(text))


class CoinbaseMarket:
    """Books, trades, tickers and candles per product, as published."""

    def __init__(self, products: list[Payload], derive_candles: bool = False) -> None:
        self.products = products
        self.ids = {p["product_id"] for p in products}
        self.derive_candles = derive_candles
        """True: no source candles; the websocket `candles` channel is built from trades."""
        self.books: dict[str, LevelBook] = {}
        self.trades: dict[str, deque[Payload]] = {}
        self.tickers: dict[str, Payload] = {}
        self.candles: dict[str, dict[int, Payload]] = {}
        """Product -> start (s) -> the last `candles` row the source sent for it."""
        self.derived = CandleBook(("1m",))
        self._last_id: dict[str, int] = {}
        self._counter = 0

    # ------------------------------------------------------------------ source events

    def observe(self, channel: str, event: Payload, now_ms: int) -> list[tuple[str, str, Payload]]:
        """Account for a source event; returns the (channel, product, event) to push, one per
        product it names (built candle updates follow their trades)."""
        out = []
        for pid in cf.products_of(channel, event):
            part = cf.only_product(channel, event, pid)
            if channel == "l2_data":
                self._book(pid, part)
            elif channel == "market_trades":
                self._trades(pid, part["trades"])
            elif channel == "ticker":
                self.tickers[pid] = dict(part["tickers"][-1])
            elif channel == "candles":
                rows = self.candles.setdefault(pid, {})
                for row in part["candles"]:
                    rows[int(row["start"])] = dict(row)
            out.append((channel, pid, part))
            if channel == "market_trades" and self.derive_candles and pid not in self.candles:
                candle = self._built_candles(pid, 300, now_ms)[-1:]
                if candle:
                    out.append(("candles", pid, {"type": "update", "candles": candle}))
        return out

    def _book(self, pid: str, event: Payload) -> None:
        book = self.books.get(pid)
        if book is None:
            book = self.books[pid] = LevelBook(pid)
        if event.get("type") == "snapshot":
            book.clear()
        bids: list[list[str]] = []
        asks: list[list[str]] = []
        for u in event.get("updates", ()):
            lv = [u["price_level"], u["new_quantity"], u["event_time"]]
            (bids if u["side"] == "bid" else asks).append(lv)
        book.apply(asks, bids)
        book.seq_id += 1

    def _trades(self, pid: str, rows: list[Payload]) -> None:
        """Rows come newest first (Coinbase's order); kept oldest first, each id once."""
        hist = self.trades.get(pid)
        if hist is None:
            hist = self.trades[pid] = deque(maxlen=TRADE_HISTORY)
        for row in reversed(rows):
            raw = str(row["trade_id"])
            if raw.isdigit():
                n = int(raw)
                if n <= self._last_id.get(pid, -1):
                    continue
                self._last_id[pid] = n
            else:
                self._counter += 1
                n = self._counter
            hist.append(row)
            ms = cf.parse_iso(row["time"]) // 1_000_000
            self.derived.add_trade(pid, n, n, ms, row["price"], row["size"], row["side"] == "BUY")

    # ------------------------------------------------------------------ state on demand

    def book(self, pid: str) -> LevelBook:
        """The live book; a made-up 5-level one for a product that never had a book."""
        book = self.books.get(pid)
        if book is None:
            hist = self.trades.get(pid)
            price = Decimal(hist[-1]["price"]) if hist else Decimal(1)
            step = price / 1000
            book = self.books[pid] = LevelBook.from_levels(
                pid,
                [[fmt(price - step * i), "1"] for i in range(1, 6)],
                [[fmt(price + step * i), "1"] for i in range(1, 6)],
                seq_id=1,
            )
        return book

    def ticker(self, pid: str) -> Payload:
        """The last ticker row; one made from the book and trades when none was published."""
        row = self.tickers.get(pid)
        if row is not None:
            return row
        hist = self.trades.get(pid) or ()
        bid, ask = self.book(pid).best()
        prices = [Decimal(t["price"]) for t in hist] or [Decimal(bid[0] if bid else 1)]
        volume = sum((Decimal(t["size"]) for t in hist), Decimal(0))
        return cf.ticker_row(pid, prices[-1], volume, min(prices), max(prices), prices[0], bid, ask)

    def five_minute(self, pid: str, now_ms: int) -> list[Payload]:
        """The product's five-minute candles, oldest first: the source's, else built."""
        rows = self.candles.get(pid)
        if rows:
            return [rows[k] for k in sorted(rows)]
        return self._built_candles(pid, 300, now_ms)

    def _built_candles(self, pid: str, seconds: int, now_ms: int) -> list[Payload]:
        interval = _INTERVAL.get(seconds)
        if interval is None:
            return []
        out = []
        for c in self.derived.candles(pid, interval, now_ms):
            o, h, low, cl, v = (_num(units_str(x)) for x in (c.open, c.high, c.low, c.close,
                                                              c.volume))  # fmt: skip
            out.append(cf.candle_row(pid, c.open_ms // 1000, o, h, low, cl, v))
        return out

    def candles_between(
        self, pid: str, seconds: int, start_s: int, end_s: int, now_ms: int
    ) -> list[Payload]:
        """REST candles starting within [start_s, end_s], newest first (no `product_id`)."""
        rows = (
            self.five_minute(pid, now_ms)
            if seconds == cf.CANDLE_S
            else self._built_candles(pid, seconds, now_ms)
        )
        picked = [r for r in rows if start_s <= int(r["start"]) <= end_s]
        return [{k: v for k, v in r.items() if k != "product_id"} for r in reversed(picked)]

    def trades_between(
        self, pid: str, limit: int, start_s: int | None, end_s: int | None
    ) -> list[Payload]:
        """The latest `limit` trades whose time is within [start_s, end_s] (seconds, either
        open), newest first: what `products/{id}/ticker` lists."""
        out: list[Payload] = []
        for row in reversed(self.trades.get(pid, ())):
            s = cf.parse_iso(row["time"]) // 1_000_000_000
            if end_s is not None and s > end_s:
                continue
            if start_s is not None and s < start_s:
                break
            out.append(row)
            if len(out) >= limit:
                break
        return out

    # ------------------------------------------------------------------ subscribe snapshots

    def snapshot(self, channel: str, pid: str, now_ns: int) -> tuple[str, Payload] | None:
        """What a subscription of `channel` gets for `pid` right after the request: the
        data channel and its `snapshot` event (None: nothing to show yet)."""
        if channel == "level2":
            book = self.book(pid)
            updates = cf.book_updates(book.bids(), book.asks(), cf.iso_us(now_ns))
            return "l2_data", cf.book_event("snapshot", pid, updates)
        if channel == "market_trades":
            hist = self.trades.get(pid)
            if not hist:
                return None  # ccxt 4.5.90 cannot take an empty snapshot (no product in it)
            rows = list(hist)[-cf.TRADES_SNAPSHOT :][::-1]
            return "market_trades", {"type": "snapshot", "trades": rows}
        if channel in ("ticker", "ticker_batch"):
            return channel, {"type": "snapshot", "tickers": [self.ticker(pid)]}
        if channel == "candles":
            rows = self.five_minute(pid, now_ns // 1_000_000)[-CANDLES_SNAPSHOT:]
            return ("candles", {"type": "snapshot", "candles": rows}) if rows else None
        return None

    def product_book(self, pid: str, limit: int, now_ns: int) -> Payload:
        book = self.book(pid)
        bids, asks = book.bids(limit), book.asks(limit)
        hist = self.trades.get(pid)
        body: dict[str, Any] = {
            "pricebook": {
                "product_id": pid,
                "bids": [{"price": p, "size": s} for p, s, *_ in bids],
                "asks": [{"price": p, "size": s} for p, s, *_ in asks],
                "time": cf.iso(now_ns),
            },
            "last": hist[-1]["price"] if hist else "",
        }
        if bids and asks:
            bid, ask = Decimal(bids[0][0]), Decimal(asks[0][0])
            mid = (bid + ask) / 2
            body["mid_market"] = fmt(mid)
            body["spread_absolute"] = fmt(ask - bid)
            body["spread_bps"] = fmt(round((ask - bid) / mid * 10_000, 10))
        return body


__all__ = ["CANDLES_SNAPSHOT", "TRADE_HISTORY", "CoinbaseMarket"]
