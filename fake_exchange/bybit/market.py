"""The market as the fake Bybit published it, and the book views its subscribers hold.

Every source frame goes through `observe` before anything is written, so REST, the snapshots
sent on subscribe and the pushed frames all come from one state. Books: a source sends one
book per market (any depth: the recording's `orderbook.200`, the synthetic source's own); a
client subscribes to `orderbook.<depth>.<symbol>` at the depth it wants. Each subscribed depth
is a `DepthView`, Bybit's feed of that depth: the top `depth` levels of the mirrored book, a
delta only when they change (levels leaving the top sent with size "0", so the client's book
stays exactly `depth` deep) and its own `u`, +1 per delta. Pure, synchronous.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from decimal import Decimal

from fake_exchange.bybit import frames as yf
from fake_exchange.bybit.frames import Level, Payload
from fake_exchange.levels import LevelBook
from fake_exchange.okx.frames import fmt
from fake_exchange.ws_conn import Key

TRADE_HISTORY = 100_000
"""Trades kept per market for `v5/market/recent-trade`."""


@dataclass(slots=True)
class DepthView:
    """One `orderbook.<depth>.<symbol>` feed: the levels its subscribers hold, and its `u`."""

    topic: str
    depth: int
    u: int
    bids: list[Level]
    asks: list[Level]


def level_changes(old: list[Level], new: list[Level]) -> list[Level]:
    """The delta taking one side from `old` to `new`: removed levels with size "0" first."""
    now = {lv[0]: lv[1] for lv in new}
    before = {lv[0]: lv[1] for lv in old}
    out = [[px, "0"] for px in before if px not in now]
    out += [[px, sz] for px, sz in now.items() if before.get(px) != sz]
    return out


class BybitMarket:
    """Books, depth views, trades and tickers per (category, symbol), as published."""

    def __init__(self, instruments: dict[str, list[Payload]]) -> None:
        self.instruments = instruments
        self.symbols = {cat: {e["symbol"] for e in entries} for cat, entries in instruments.items()}
        self.books: dict[Key, LevelBook] = {}
        self.book_seq: dict[Key, int] = {}
        """Bybit's cross sequence (`seq`) of the last book frame of each market."""
        self.views: dict[Key, DepthView] = {}
        """(category, topic) -> its view, from its first subscription on (kept, like Bybit's
        feed, whether or not anyone reads it)."""
        self.trades: dict[Key, deque[Payload]] = {}
        self.tickers: dict[Key, Payload] = {}
        self._views_of: dict[Key, list[DepthView]] = {}

    def observe(self, category: str, topic: str, frame: Payload) -> list[tuple[str, Payload]]:
        """Account for a source frame; returns the (topic, frame) pairs to push."""
        parsed = yf.parse_topic(topic)
        if parsed is None:
            return [(topic, frame)]
        kind, _, symbol = parsed
        key = (category, symbol)
        if kind == "orderbook":
            return self._book_frame(key, frame)
        if kind == "publicTrade":
            hist = self.trades.get(key)
            if hist is None:
                hist = self.trades[key] = deque(maxlen=TRADE_HISTORY)
            hist.extend(frame["data"])
        elif kind == "tickers":
            if frame.get("type") == "snapshot" or key not in self.tickers:
                self.tickers[key] = dict(frame["data"])
            else:
                self.tickers[key].update(frame["data"])
        return [(topic, frame)]

    def _book_frame(self, key: Key, frame: Payload) -> list[tuple[str, Payload]]:
        data = frame["data"]
        book = self.books.get(key)
        if book is None:
            book = self.books[key] = LevelBook(key[1])
        if frame.get("type") == "snapshot":
            book.clear()
        book.apply(data.get("a", ()), data.get("b", ()))
        book.seq_id, book.ts_ms = int(data.get("u", book.seq_id + 1)), int(frame["ts"])
        seq = self.book_seq[key] = int(data.get("seq", self.book_seq.get(key, 0) + 1))
        out = []
        for view in self._views_of.get(key, ()):
            bids, asks = book.bids(view.depth), book.asks(view.depth)
            db, da = level_changes(view.bids, bids), level_changes(view.asks, asks)
            if not db and not da:
                continue
            view.u += 1
            view.bids, view.asks = bids, asks
            cts = int(frame.get("cts", book.ts_ms))
            delta = yf.book_frame(view.topic, "delta", key[1], db, da, view.u, seq, book.ts_ms, cts)
            out.append((view.topic, delta))
        return out

    # ------------------------------------------------------------------ state on demand

    def book(self, category: str, symbol: str) -> LevelBook:
        """The live book; a made-up 5-level one for a market that never had a book."""
        key = (category, symbol)
        book = self.books.get(key)
        if book is None:
            hist = self.trades.get(key)
            price = Decimal(hist[-1]["p"]) if hist else Decimal(1)
            step = price / 1000
            book = self.books[key] = LevelBook.from_levels(
                symbol,
                [[fmt(price - step * i), "1"] for i in range(1, 6)],
                [[fmt(price + step * i), "1"] for i in range(1, 6)],
                seq_id=1,
                ts_ms=yf.now_ms(),
            )
        return book

    def view(self, category: str, topic: str) -> DepthView:
        """The feed of an `orderbook.<depth>.<symbol>` topic (made on first use)."""
        view = self.views.get((category, topic))
        if view is None:
            _, depth, symbol = topic.split(".")
            book = self.book(category, symbol)
            d = int(depth)
            view = DepthView(topic, d, book.seq_id, book.bids(d), book.asks(d))
            self.views[(category, topic)] = view
            self._views_of.setdefault((category, symbol), []).append(view)
        return view

    def ticker(self, category: str, symbol: str) -> Payload:
        """The merged ticker; one made from the book and trades when none was published."""
        key = (category, symbol)
        if key in self.tickers:
            return self.tickers[key]
        hist = self.trades.get(key) or ()
        bid, ask = self.book(category, symbol).best()
        prices = [Decimal(t["p"]) for t in hist] or [Decimal(bid[0] if bid else 1)]
        volume = sum((Decimal(t["v"]) for t in hist), Decimal(0))
        turnover = sum((Decimal(t["v"]) * Decimal(t["p"]) for t in hist), Decimal(0))
        args = (symbol, prices[-1], prices[0], max(prices), min(prices), volume, turnover)
        if category == "spot":
            return yf.spot_ticker(*args)
        return yf.linear_ticker(*args, bid, ask, yf.now_ms())

    def snapshot(self, category: str, topic: str, ts: int) -> Payload | None:
        """What a subscription gets right after its ack: books and tickers their current
        state (`type` snapshot); nothing for trades and klines."""
        parsed = yf.parse_topic(topic)
        if parsed is None:
            return None
        kind, _, symbol = parsed
        if kind == "tickers":
            return yf.push(topic, "snapshot", dict(self.ticker(category, symbol)), ts, cs=ts)
        if kind != "orderbook":
            return None
        view = self.view(category, topic)
        seq = self.book_seq.get((category, symbol), view.u)
        return yf.book_frame(topic, "snapshot", symbol, view.bids, view.asks, view.u, seq, ts, ts)


__all__ = ["TRADE_HISTORY", "BybitMarket", "DepthView", "level_changes"]
