"""The market as the fake OKX published it: books, trades and last tickers per instrument.

Every published frame goes through `observe` before it is written, so REST and the snapshot sent
on subscribe answer from the same market the websocket clients see. Pure, synchronous.
"""

from __future__ import annotations

import time
from collections import deque
from decimal import Decimal

from fake_exchange.okx import derivs
from fake_exchange.okx import frames as of
from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.frames import Payload

TRADE_HISTORY = 100_000
"""Trades kept per instrument for `market/trades`, `history-trades` and candles."""


class OkxMarket:
    """Books, trades and last tickers of every instrument, as published. Pure, synchronous."""

    def __init__(self, instruments: dict[str, list[Payload]], books: dict[str, OkxBook]) -> None:
        self.instruments = instruments
        self.inst_ids = {e["instId"] for entries in instruments.values() for e in entries}
        self.books = books
        self.trades: dict[str, deque[Payload]] = {}
        self.tickers: dict[str, Payload] = {}
        self.inst_types = {e["instId"]: t for t, entries in instruments.items() for e in entries}
        self.derivs: dict[tuple[str, str], Payload] = {}
        """(channel, instId) -> the last `funding-rate`, `mark-price`, `open-interest` or
        `index-tickers` (instId: the index) row."""
        self.open_interest_history: dict[str, list[Payload]] = {}
        """instId -> every `open-interest` row, in order (what REST may have answered)."""

    def observe(self, channel: str, inst_id: str, frame: Payload) -> None:
        """Account for a source frame before it is written."""
        if channel == "books":
            book = self.books.get(inst_id)
            if book is None:
                book = self.books[inst_id] = OkxBook(inst_id)
            for row in frame["data"]:
                if frame.get("action") == "snapshot":
                    book.reset(row)
                else:
                    book.update(row)
        elif channel == "trades":
            hist = self.trades.get(inst_id)
            if hist is None:
                hist = self.trades[inst_id] = deque(maxlen=TRADE_HISTORY)
            hist.extend(frame["data"])
        elif channel == "tickers" and frame["data"]:
            self.tickers[inst_id] = frame["data"][-1]
        elif (channel in derivs.INSTRUMENT_CHANNELS or channel == derivs.INDEX_CHANNEL) and frame[
            "data"
        ]:
            self.derivs[(channel, inst_id)] = frame["data"][-1]
            if channel == "open-interest":
                self.open_interest_history.setdefault(inst_id, []).append(frame["data"][-1])

    def book(self, inst_id: str) -> OkxBook:
        """The live book; a made-up 5-level one for instruments that never had a book."""
        book = self.books.get(inst_id)
        if book is None:
            hist = self.trades.get(inst_id)
            price = Decimal(hist[-1]["px"]) if hist else Decimal(1)
            step = price / 1000
            book = self.books[inst_id] = OkxBook.from_levels(
                inst_id,
                [[of.fmt(price - step * i), "1", "0", "1"] for i in range(1, 6)],
                [[of.fmt(price + step * i), "1", "0", "1"] for i in range(1, 6)],
                seq_id=1,
                ts_ms=int(time.time() * 1000),
            )
        return book

    def ticker(self, inst_id: str, now_ms: int) -> Payload:
        """The last ticker sent, or one made from the book and trades (nothing traded: 0)."""
        if inst_id in self.tickers:
            return self.tickers[inst_id]
        bid, ask = self.book(inst_id).best()
        hist = self.trades.get(inst_id) or ()
        last = hist[-1] if hist else None
        px = last["px"] if last else (bid[0] if bid else "0")
        prices = [Decimal(t["px"]) for t in hist] or [Decimal(px)]
        return of.ticker_row(
            inst_id,
            last=px,
            last_sz=last["sz"] if last else "0",
            ask_px=ask[0] if ask else "",
            ask_sz=ask[1] if ask else "",
            bid_px=bid[0] if bid else "",
            bid_sz=bid[1] if bid else "",
            open24h=of.fmt(prices[0]),
            high24h=of.fmt(max(prices)),
            low24h=of.fmt(min(prices)),
            vol_ccy24h=of.fmt(sum((Decimal(t["px"]) * Decimal(t["sz"]) for t in hist), Decimal(0))),
            vol24h=of.fmt(sum((Decimal(t["sz"]) for t in hist), Decimal(0))),
            ts_ms=now_ms,
            inst_type=self.inst_type(inst_id),
        )

    def inst_type(self, inst_id: str) -> str:
        return self.inst_types.get(inst_id, "SPOT")

    def derivative(self, channel: str, inst_id: str) -> Payload | None:
        """The last row of a per-instrument derivatives channel, None before the first."""
        return self.derivs.get((channel, inst_id))

    def has_data(self, inst_id: str) -> bool:
        return inst_id in self.tickers or inst_id in self.trades or inst_id in self.books


__all__ = ["TRADE_HISTORY", "OkxMarket"]
