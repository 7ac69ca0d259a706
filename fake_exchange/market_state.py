"""What the fake remembers about the frames it generated: books, trades, candles, tickers.

REST answers come from here, so a depth snapshot is consistent with the diffs already published
(CCXT's sync check: the first diff after the snapshot has U <= lastUpdateId+1 <= u; USD-M:
U <= lastUpdateId <= u, or pu == lastUpdateId) and `/api/v3/aggTrades`, `/trades`, `/klines`,
`/ticker/24hr` answer with exactly what the websocket carried (or would have carried, for
streams nobody subscribed). USD-M adds the last mark price frame (`/fapi/v1/premiumIndex`) and
the open interest a source reported (`/fapi/v1/openInterest`). Pure and synchronous: the server
feeds every generated event through `observe()` right before writing it.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from fake_exchange import binance_frames as bf
from fake_exchange import usdm
from fake_exchange.binance_frames import SPOT, Payload, Venue
from fake_exchange.derive import KLINE_HISTORY, CandleBook, TickerDeriver

AGG_HISTORY = 100_000
"""aggTrades (and trades) kept per symbol for REST backfill."""


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
    """Books, trade history, candles and tickers of every symbol the fake published.

    `kline_intervals`: intervals whose candles are built here from the observed trades (a
    source that makes its klines from its own trades, like `SyntheticSource`, names them so
    REST has candles for symbols nobody subscribed). Other intervals are served from the
    kline frames observed (a replay's recorded ones). `venue`: the shapes REST answers in.
    """

    def __init__(
        self,
        snapshots: dict[str, Payload],
        kline_intervals: Sequence[str] = (),
        venue: Venue = SPOT,
    ) -> None:
        self.venue = venue
        self.books = {s: LiveBook.from_snapshot(snap) for s, snap in snapshots.items()}
        self.agg_trades: dict[str, deque[Payload]] = {}
        self.trades: dict[str, deque[Payload]] = {}
        self.tickers: dict[str, Payload] = {}
        self.candles = CandleBook(kline_intervals) if kline_intervals else None
        self.polled: set[str] = set()
        """Depth streams whose book was asked for over REST (a source keeps those moving)."""
        self.now_ms = 0
        """Latest event time observed: 'now' for the open candle of REST klines."""
        self._kline_frames: dict[tuple[str, str], dict[int, Payload]] = {}
        self._seq: dict[str, _TradeSeq] = {}
        self.marks: dict[str, Payload] = {}
        """USD-M: the last markPriceUpdate frame of each symbol."""
        self.open_interest: dict[str, list[Payload]] = {}
        """USD-M: every open-interest state a source reported, per symbol, oldest first."""

    def observe(self, stream: str, payload: Payload) -> None:
        """Account for a source event before it is written; renumbers aggTrades after bursts."""
        channel = stream.partition("@")[2]
        event_ms = payload.get("E", 0)
        if event_ms > self.now_ms:
            self.now_ms = event_ms
        if channel == "aggTrade":
            if self.candles is not None:
                self.candles.add_trade(
                    payload["s"],
                    payload["f"],
                    payload["l"],
                    payload["T"],
                    payload["p"],
                    payload["q"],
                    payload["m"],
                )
            seq = self._seq.setdefault(payload["s"], _TradeSeq())
            if seq.agg_shift or seq.trade_shift:
                payload["a"] += seq.agg_shift
                payload["f"] += seq.trade_shift
                payload["l"] += seq.trade_shift
            self._record_agg(seq, payload)
        elif channel == "trade":
            if self.candles is not None:
                self.candles.add_trade(
                    payload["s"],
                    payload["t"],
                    payload["t"],
                    payload["T"],
                    payload["p"],
                    payload["q"],
                    payload["m"],
                )
            hist = self.trades.get(payload["s"])
            if hist is None:
                hist = self.trades[payload["s"]] = deque(maxlen=AGG_HISTORY)
            hist.append(payload)
        elif channel.startswith("depth") and "U" in payload:
            book = self.books.get(payload["s"])
            if book is None:
                book = self.books[payload["s"]] = LiveBook(payload["U"] - 1)
            book.apply(payload)
        elif channel == "ticker":
            self.tickers[payload["s"]] = payload
        elif channel.startswith("markPrice"):
            self.marks[payload["s"]] = payload
        elif channel == usdm.OPEN_INTEREST:
            states = self.open_interest.setdefault(payload["symbol"], [])
            states.append(payload)
            if len(states) > AGG_HISTORY:
                del states[: len(states) - AGG_HISTORY // 2]
        elif channel.startswith("kline_"):
            k = payload["k"]
            frames = self._kline_frames.setdefault((payload["s"], k["i"]), {})
            frames[k["t"]] = k
            if len(frames) > KLINE_HISTORY:
                del frames[next(iter(frames))]

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
            futures=self.venue.futures,
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
        """Snapshot of the live book, or a small made-up book for symbols without depth
        (USD-M's carries the event and transaction times `E`, `T`: the last event's)."""
        self.polled.add(bf.stream_name(sym_id, "depth@100ms"))
        book = self.books.get(sym_id)
        if book is None:
            price = Decimal(self._seq[sym_id].price if sym_id in self._seq else "1")
            step = price / 1000
            book = self.books[sym_id] = LiveBook(
                1,
                {bf.fmt(price - step * i): "1.00000000" for i in range(1, 6)},
                {bf.fmt(price + step * i): "1.00000000" for i in range(1, 6)},
            )
        snap = book.snapshot(limit)
        if self.venue.futures:
            snap = {"lastUpdateId": snap["lastUpdateId"], "E": self.now_ms, "T": self.now_ms,
                    "bids": snap["bids"], "asks": snap["asks"]}  # fmt: skip
        return snap

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

    def trades_query(self, sym_id: str, from_id: int | None, limit: int) -> list[Payload]:
        """`GET /api/v3/trades` (latest `limit`) and `/historicalTrades` (`fromId` on).

        From the `trade` frames generated; a source without them (synthetic aggTrade only)
        answers from its aggTrades, one row per aggTrade (their f == l there).
        """
        fut = self.venue.futures
        frames = self.trades.get(sym_id)
        if frames:
            picked = _pick(list(frames), "t", from_id, limit)
            return [
                bf.rest_trade(f["t"], f["p"], f["q"], f["T"], f["m"], futures=fut) for f in picked
            ]
        aggs = _pick(list(self.agg_trades.get(sym_id, ())), "f", from_id, limit)
        return [bf.rest_trade(a["f"], a["p"], a["q"], a["T"], a["m"], futures=fut) for a in aggs]

    def klines(
        self,
        sym_id: str,
        interval: str,
        start_ms: int | None,
        end_ms: int | None,
        limit: int,
    ) -> list[list[Any]]:
        """`GET /api/v3/klines` rows: built candles, or the kline frames a replay sent."""
        if self.candles is not None and self.candles.can_serve(interval):
            rows = self.candles.rest_rows(sym_id, interval, self.now_ms)
        else:
            frames = self._kline_frames.get((sym_id, interval), {})
            rows = [bf.rest_kline(k) for _, k in sorted(frames.items())]
        lo = start_ms if start_ms is not None else 0
        hi = end_ms if end_ms is not None else 2**63
        rows = [r for r in rows if lo <= r[0] <= hi]
        return rows[:limit] if start_ms is not None else rows[-limit:]

    def ticker(self, sym_id: str, now_ms: int) -> Payload:
        """The last 24hrTicker frame of a symbol; before any, a quiet one (no trades) at now."""
        found = self.tickers.get(sym_id)
        if found is not None:
            return found
        quiet = TickerDeriver(futures=self.venue.futures)
        book = self.books.get(sym_id)
        if book is not None and book.bids and book.asks:
            bid = max(book.bids, key=Decimal)
            ask = min(book.asks, key=Decimal)
            quiet.seed_book(sym_id, bid, book.bids[bid], ask, book.asks[ask])
        else:
            price = self._reference_price(sym_id)
            quiet.seed_book(sym_id, price, "0", price, "0")
        return quiet.ticker(sym_id, now_ms)

    def premium_index(self, sym_id: str, now_ms: int) -> Payload:
        """`GET /fapi/v1/premiumIndex` row: from the last mark price frame; before any, a
        quiet one (mark and index at the reference price, Binance's default rate 0.01%)."""
        frame = self.marks.get(sym_id)
        if frame is None:
            price = self._reference_price(sym_id)
            frame = usdm.mark_price_update(
                sym_id, now_ms, price, price, "0.00010000", usdm.next_funding_ms(now_ms)
            )
        return usdm.rest_premium_index(frame)

    def open_interest_now(self, sym_id: str, now_ms: int) -> Payload:
        """`GET /fapi/v1/openInterest` body: the last state reported (none yet: 0 at now)."""
        hist = self.open_interest.get(sym_id)
        last = hist[-1] if hist else usdm.open_interest_event(sym_id, now_ms, "0")
        return usdm.rest_open_interest(last)


def _pick(rows: list[Payload], key: str, from_id: int | None, limit: int) -> list[Payload]:
    """The latest `limit` rows, or `limit` rows from id `from_id` on (rows sorted by id)."""
    if from_id is None:
        return rows[-limit:]
    i = bisect.bisect_left([r[key] for r in rows], from_id)
    return rows[i : i + limit]
