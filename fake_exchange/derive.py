"""Derive the streams a recording lacks (`@ticker`, `@miniTicker`, `@trade`) from the ones it has.

The recordings carry aggTrade/bookTicker/depth/kline, while CCXT's defaults ask for ticker and
trade streams. Rather than reconfigure every client, the fake keeps a small per-symbol state and
builds those frames in Binance's real shape. Rules (also in docs/fake-exchange.md):

- bid/ask: latest bookTicker (seeded from the depth snapshot's best levels when there is one);
- last price `c`: latest aggTrade price or kline close; last qty `Q`: latest aggTrade qty;
  before any of these, the best bid;
- open `o` (and `x`): the first price shown (trade, kline, or the bid of the first ticker);
  high/low: extremes of every price seen (trades, kline o/h/l/c, that first price);
- volumes `v`/`q`: sum of the aggTrades seen (qty and qty*price); `w` = q/v;
- `F`/`L`/`n`: first `f` and last `l` trade ids of the aggTrades seen, n = L-F+1
  (-1/-1/0 before the first trade, like Binance);
- the `trade` frame of an aggTrade gets t = a running id per symbol, starting at the first
  aggTrade's `f` and increasing by one per aggTrade.

The "24h window" is therefore "since this source started playing".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload

_ZERO = Decimal(0)


@dataclass(slots=True)
class SymbolStats:
    """What the fake knows about one symbol's last 24h (since play started)."""

    last: Decimal | None = None
    last_qty: Decimal = _ZERO
    open_: Decimal | None = None
    high: Decimal | None = None
    low: Decimal | None = None
    base_volume: Decimal = _ZERO
    quote_volume: Decimal = _ZERO
    bid: Decimal = _ZERO
    bid_qty: Decimal = _ZERO
    ask: Decimal = _ZERO
    ask_qty: Decimal = _ZERO
    first_trade: int = -1
    last_trade: int = -1
    next_trade_id: int | None = None
    last_event_ms: int = 0

    def see_price(self, price: Decimal) -> None:
        if self.open_ is None:
            self.open_ = price
        self.high = price if self.high is None else max(self.high, price)
        self.low = price if self.low is None else min(self.low, price)


@dataclass
class TickerDeriver:
    """Per-symbol state fed with recorded/synthetic frames; builds ticker and trade frames."""

    stats: dict[str, SymbolStats] = field(default_factory=dict)

    def _get(self, sym_id: str) -> SymbolStats:
        st = self.stats.get(sym_id)
        if st is None:
            st = self.stats[sym_id] = SymbolStats()
        return st

    def seed_book(self, sym_id: str, bid: str, bid_qty: str, ask: str, ask_qty: str) -> None:
        """Best levels known before any bookTicker (e.g. from a depth snapshot)."""
        st = self._get(sym_id)
        st.bid, st.bid_qty, st.ask, st.ask_qty = (
            Decimal(bid),
            Decimal(bid_qty),
            Decimal(ask),
            Decimal(ask_qty),
        )

    def observe_book_ticker(self, frame: Payload) -> None:
        st = self._get(frame["s"])
        st.bid, st.bid_qty = Decimal(frame["b"]), Decimal(frame["B"])
        st.ask, st.ask_qty = Decimal(frame["a"]), Decimal(frame["A"])

    def observe_agg_trade(self, frame: Payload) -> None:
        st = self._get(frame["s"])
        price, qty = Decimal(frame["p"]), Decimal(frame["q"])
        st.last, st.last_qty = price, qty
        st.see_price(price)
        st.base_volume += qty
        st.quote_volume += price * qty
        if st.first_trade < 0:
            st.first_trade = int(frame["f"])
        st.last_trade = int(frame["l"])

    def observe_kline(self, frame: Payload) -> None:
        k = frame["k"]
        st = self._get(frame["s"])
        st.see_price(Decimal(k["o"]))
        st.see_price(Decimal(k["h"]))
        st.see_price(Decimal(k["l"]))
        st.last = Decimal(k["c"])
        st.see_price(st.last)

    def trade_from_agg(self, frame: Payload) -> Payload:
        """The `trade` frame for an aggTrade: same price/qty/time, t = running id."""
        st = self._get(frame["s"])
        if st.next_trade_id is None:
            st.next_trade_id = int(frame["f"])
        tid = st.next_trade_id
        st.next_trade_id += 1
        return bf.trade(frame["s"], tid, frame["p"], frame["q"], frame["T"], frame["E"], frame["m"])

    def ticker(self, sym_id: str, event_ms: int) -> Payload:
        """The current 24hrTicker frame of a symbol."""
        st = self._get(sym_id)
        last = st.last if st.last is not None else st.bid
        if st.open_ is None:
            st.see_price(last)  # the first ticker shown fixes the open
        # recorded exchange clocks and receive clocks differ by a few ms: never go back in time
        event_ms = st.last_event_ms = max(event_ms, st.last_event_ms)
        count = st.last_trade - st.first_trade + 1 if st.first_trade >= 0 else 0
        return bf.ticker_24hr(
            sym_id,
            event_ms,
            last=last,
            last_qty=st.last_qty,
            open_=st.open_ if st.open_ is not None else last,
            high=st.high if st.high is not None else last,
            low=st.low if st.low is not None else last,
            base_volume=st.base_volume,
            quote_volume=st.quote_volume,
            bid=st.bid,
            bid_qty=st.bid_qty,
            ask=st.ask,
            ask_qty=st.ask_qty,
            first_trade=st.first_trade,
            last_trade=st.last_trade,
            count=count,
        )

    def tickers(self, sym_id: str, event_ms: int) -> list[tuple[str, Payload]]:
        """(stream, frame) for `@ticker` and `@miniTicker`, built from the same state."""
        full = self.ticker(sym_id, event_ms)
        return [
            (bf.stream_name(sym_id, "ticker"), full),
            (bf.stream_name(sym_id, "miniTicker"), bf.mini_ticker(sym_id, full["E"], full)),
        ]
