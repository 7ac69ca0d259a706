"""What the fake remembers about the frames it generated: books, trades, last tickers.

REST answers come from here, so a depth snapshot is consistent with the diffs already published
(CCXT's sync check: the first diff after the snapshot has U <= lastUpdateId+1 <= u) and
`/api/v3/aggTrades` can backfill a gap with exactly the trades the websocket carried. Pure and
synchronous: the server feeds every generated event through `observe()`.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass, field
from decimal import Decimal

from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload

AGG_HISTORY = 100_000
"""aggTrades kept per symbol for REST backfill."""


@dataclass(slots=True)
class LiveBook:
    """A price-level book kept in step with the published depth diffs."""

    last_update_id: int
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_snapshot(cls, snap: Payload) -> LiveBook:
        return cls(
            int(snap["lastUpdateId"]),
            {p: q for p, q in snap.get("bids", [])},
            {p: q for p, q in snap.get("asks", [])},
        )

    def apply(self, diff: Payload) -> None:
        """Apply a depthUpdate; diffs already contained in the book (u <= id) are skipped."""
        if diff["u"] <= self.last_update_id:
            return
        for side, levels in ((self.bids, diff["b"]), (self.asks, diff["a"])):
            for price, qty in levels:
                if Decimal(qty) == 0:
                    side.pop(price, None)
                else:
                    side[price] = qty
        self.last_update_id = diff["u"]

    def snapshot(self, limit: int) -> Payload:
        """`GET /api/v3/depth` body, best levels first."""
        bids = sorted(self.bids.items(), key=lambda kv: Decimal(kv[0]), reverse=True)[:limit]
        asks = sorted(self.asks.items(), key=lambda kv: Decimal(kv[0]))[:limit]
        return {
            "lastUpdateId": self.last_update_id,
            "bids": [[p, q] for p, q in bids],
            "asks": [[p, q] for p, q in asks],
        }


@dataclass(slots=True)
class _TradeSeq:
    """Last published aggTrade ids of a symbol, and how far bursts pushed them."""

    agg_id: int = 0
    trade_id: int = 0
    price: str = "1.00000000"
    agg_shift: int = 0
    trade_shift: int = 0


class MarketState:
    """Books, aggTrade history and id sequences of every symbol the fake published."""

    def __init__(self, snapshots: dict[str, Payload]) -> None:
        self.books = {s: LiveBook.from_snapshot(snap) for s, snap in snapshots.items()}
        self.agg_trades: dict[str, deque[Payload]] = {}
        self.tickers: dict[str, Payload] = {}
        self._seq: dict[str, _TradeSeq] = {}

    def observe(self, stream: str, payload: Payload) -> None:
        """Account for a source event before it is written; renumbers aggTrades after bursts."""
        channel = stream.partition("@")[2]
        if channel == "aggTrade":
            seq = self._seq.setdefault(payload["s"], _TradeSeq())
            if seq.agg_shift or seq.trade_shift:
                payload["a"] += seq.agg_shift
                payload["f"] += seq.trade_shift
                payload["l"] += seq.trade_shift
            self._record_agg(seq, payload)
        elif channel.startswith("depth") and "U" in payload:
            book = self.books.get(payload["s"])
            if book is None:
                book = self.books[payload["s"]] = LiveBook(payload["U"] - 1)
            book.apply(payload)
        elif channel == "ticker":
            self.tickers[payload["s"]] = payload

    def _record_agg(self, seq: _TradeSeq, payload: Payload) -> None:
        seq.agg_id, seq.trade_id, seq.price = payload["a"], payload["l"], payload["p"]
        hist = self.agg_trades.get(payload["s"])
        if hist is None:
            hist = self.agg_trades[payload["s"]] = deque(maxlen=AGG_HISTORY)
        hist.append(bf.rest_agg_trade(payload))

    def next_burst_trade(self, sym_id: str, now_ms: int, qty: str = "1.00000000") -> Payload:
        """An aggTrade continuing the symbol's id sequence; later source ids move past it."""
        seq = self._seq.get(sym_id)
        if seq is None:
            seq = self._seq[sym_id] = _TradeSeq(price=self._reference_price(sym_id))
        frame = bf.agg_trade(
            sym_id,
            seq.agg_id + 1,
            seq.price,
            qty,
            seq.trade_id + 1,
            seq.trade_id + 1,
            now_ms,
            now_ms,
            False,
        )
        seq.agg_shift += 1
        seq.trade_shift += 1
        self._record_agg(seq, frame)
        return frame

    def _reference_price(self, sym_id: str) -> str:
        """A plausible price for a symbol that has not traded yet: last ticker or best bid."""
        if sym_id in self.tickers:
            return str(self.tickers[sym_id]["c"])
        book = self.books.get(sym_id)
        if book is not None and book.bids:
            return max(book.bids, key=Decimal)
        return "1.00000000"

    def depth(self, sym_id: str, limit: int) -> Payload:
        """Snapshot of the live book, or a small made-up book for symbols without depth."""
        book = self.books.get(sym_id)
        if book is None:
            price = Decimal(self._seq[sym_id].price if sym_id in self._seq else "1")
            step = price / 1000
            book = self.books[sym_id] = LiveBook(
                1,
                {bf.fmt(price - step * i): "1.00000000" for i in range(1, 6)},
                {bf.fmt(price + step * i): "1.00000000" for i in range(1, 6)},
            )
        return book.snapshot(limit)

    def agg_trades_query(
        self,
        sym_id: str,
        from_id: int | None,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
    ) -> list[Payload]:
        """`GET /api/v3/aggTrades` semantics over the kept history."""
        hist = list(self.agg_trades.get(sym_id, ()))
        if from_id is not None:
            i = bisect.bisect_left([t["a"] for t in hist], from_id)
            return hist[i : i + limit]
        if start_ms is not None or end_ms is not None:
            lo = start_ms if start_ms is not None else 0
            hi = end_ms if end_ms is not None else 2**63
            return [t for t in hist if lo <= t["T"] <= hi][:limit]
        return hist[-limit:]
