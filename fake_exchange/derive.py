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

Candles (`CandleBook`) are built from trades in integer units of 1e-8, so a kline's o/h/l/c/v/q
equal what anyone recomputes from the trade frames with exact decimals (q and Q: the exact sum
of price * qty, rounded half-even to 8 places).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

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
    """Per-symbol state fed with recorded/synthetic frames; builds ticker and trade frames
    (`futures`: in USD-M's shapes)."""

    stats: dict[str, SymbolStats] = field(default_factory=dict)
    futures: bool = False

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
        return bf.trade(
            frame["s"],
            tid,
            frame["p"],
            frame["q"],
            frame["T"],
            frame["E"],
            frame["m"],
            futures=self.futures,
        )

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
            futures=self.futures,
        )

    def tickers(self, sym_id: str, event_ms: int) -> list[tuple[str, Payload]]:
        """(stream, frame) for `@ticker` and `@miniTicker`, built from the same state."""
        full = self.ticker(sym_id, event_ms)
        return [
            (bf.stream_name(sym_id, "ticker"), full),
            (bf.stream_name(sym_id, "miniTicker"), bf.mini_ticker(sym_id, full["E"], full)),
        ]


# --------------------------------------------------------------------------- candles

INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": 60_000,
    "3m": 180_000,
    "5m": 300_000,
    "15m": 900_000,
    "30m": 1_800_000,
    "1h": 3_600_000,
    "2h": 7_200_000,
    "4h": 14_400_000,
    "6h": 21_600_000,
    "8h": 28_800_000,
    "12h": 43_200_000,
    "1d": 86_400_000,
}
"""Kline intervals with a fixed length whose candles start at multiples of it since the epoch
(what Binance does for these in UTC; 3d, 1w and 1M are calendar-aligned and not built here)."""

KLINE_HISTORY = 5_000
"""Closed candles kept per symbol and interval (5,000 1s candles = 83 minutes)."""

_SCALE = 10**8


def to_units(text: str) -> int:
    """'0.35270000' -> 35270000: a decimal string in integer units of 1e-8 (exact for 8 places)."""
    whole, _, frac = text.partition(".")
    if len(frac) == 8 and whole.isdigit():
        return int(whole + frac)
    return int((Decimal(text) * _SCALE).to_integral_value())


def units_str(units: int) -> str:
    """35270000 -> '0.35270000' (the inverse of `to_units`)."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), _SCALE)
    return f"{sign}{whole}.{frac:08d}"


def round_units(units16: int) -> int:
    """1e-16 units (a price * qty product) -> 1e-8 units, half-even like Decimal.quantize."""
    q, r = divmod(units16, _SCALE)
    half = _SCALE // 2
    if r > half or (r == half and q % 2):
        q += 1
    return q


@dataclass(slots=True)
class Candle:
    """One interval's trades: prices and base volumes in 1e-8 units, quote volumes in 1e-16."""

    open_ms: int
    open: int
    high: int
    low: int
    close: int
    volume: int = 0
    quote: int = 0
    taker_base: int = 0
    taker_quote: int = 0
    count: int = 0
    first_id: int = -1
    last_id: int = -1

    @classmethod
    def empty(cls, open_ms: int, price: int) -> Candle:
        """An interval without trades: o=h=l=c=the previous close, no volume, ids -1."""
        return cls(open_ms, price, price, price, price)

    def add(self, price: int, qty: int, first_id: int, last_id: int, buyer_maker: bool) -> None:
        if self.count == 0:
            self.open = self.high = self.low = price
            self.first_id = first_id
        elif price > self.high:
            self.high = price
        elif price < self.low:
            self.low = price
        self.close = price
        self.volume += qty
        self.quote += price * qty
        if not buyer_maker:  # the buyer took liquidity: taker buy volume
            self.taker_base += qty
            self.taker_quote += price * qty
        self.count += last_id - first_id + 1
        self.last_id = last_id


class CandleSeries:
    """The candles of one symbol at one interval: the open one and the closed history."""

    def __init__(self, interval: str, history: int = KLINE_HISTORY) -> None:
        self.interval = interval
        self.ms = INTERVAL_MS[interval]
        self.current: Candle | None = None
        self.closed: deque[Candle] = deque(maxlen=history)

    def add(
        self, trade_ms: int, price: int, qty: int, first_id: int, last_id: int, maker: bool
    ) -> None:
        open_ms = trade_ms - trade_ms % self.ms
        cur = self.current
        if cur is None:
            cur = self.current = Candle.empty(open_ms, price)
        elif open_ms > cur.open_ms:
            cur = self._roll_to(cur, open_ms)[1]
        # a trade stamped before the open candle (not produced here) counts in the open one
        cur.add(price, qty, first_id, last_id, maker)

    def roll(self, now_ms: int) -> list[Candle]:
        """Close every interval that ended by `now_ms` (empty ones included), oldest first."""
        cur = self.current
        if cur is None or now_ms - now_ms % self.ms <= cur.open_ms:
            return []
        return self._roll_to(cur, now_ms - now_ms % self.ms)[0]

    def _roll_to(self, cur: Candle, open_ms: int) -> tuple[list[Candle], Candle]:
        """Close `cur`, fill the intervals without trades, open the one at `open_ms`."""
        closed = [cur]
        first_fill = max(cur.open_ms + self.ms, open_ms - self.ms * (self.closed.maxlen or 0))
        closed.extend(Candle.empty(t, cur.close) for t in range(first_fill, open_ms, self.ms))
        self.closed.extend(closed)
        self.current = Candle.empty(open_ms, cur.close)
        return closed, self.current

    def candles(self) -> list[Candle]:
        """Closed candles then the open one, oldest first."""
        out = list(self.closed)
        if self.current is not None:
            out.append(self.current)
        return out


def aggregate(candles: Iterable[Candle], ms: int) -> list[Candle]:
    """Merge consecutive candles into `ms`-long ones (e.g. 1m -> 5m); exact, like Binance's."""
    out: list[Candle] = []
    for c in candles:
        open_ms = c.open_ms - c.open_ms % ms
        if not out or out[-1].open_ms != open_ms:
            out.append(Candle(open_ms, c.open, c.high, c.low, c.close))
        agg = out[-1]
        if c.count:
            if agg.count == 0:
                agg.open, agg.high, agg.low = c.open, c.high, c.low
                agg.first_id = c.first_id
            agg.high, agg.low = max(agg.high, c.high), min(agg.low, c.low)
            agg.last_id = c.last_id
        agg.close = c.close
        agg.volume += c.volume
        agg.quote += c.quote
        agg.taker_base += c.taker_base
        agg.taker_quote += c.taker_quote
        agg.count += c.count
    return out


def kline_frame(sym_id: str, interval: str, c: Candle, event_ms: int, final: bool) -> Payload:
    """The `<s>@kline_<interval>` frame showing candle `c` at `event_ms`."""
    return bf.kline(
        sym_id,
        interval,
        event_ms,
        open_ms=c.open_ms,
        close_ms=c.open_ms + INTERVAL_MS[interval] - 1,
        first_id=c.first_id,
        last_id=c.last_id,
        open_=units_str(c.open),
        close=units_str(c.close),
        high=units_str(c.high),
        low=units_str(c.low),
        volume=units_str(c.volume),
        count=c.count,
        final=final,
        quote_volume=units_str(round_units(c.quote)),
        taker_base=units_str(c.taker_base),
        taker_quote=units_str(round_units(c.taker_quote)),
    )


class CandleBook:
    """Candles of every symbol at the given intervals, fed with trades.

    A trade is counted once even when it is shown on two streams (`trade` and `aggTrade`):
    trades whose first id is not above the last one fed for the symbol are skipped.
    """

    def __init__(self, intervals: Sequence[str], history: int = KLINE_HISTORY) -> None:
        unknown = [i for i in intervals if i not in INTERVAL_MS]
        if unknown:
            raise ValueError(f"unsupported kline intervals {unknown}; use {list(INTERVAL_MS)}")
        self.intervals = tuple(intervals)
        self._history = history
        self._series: dict[str, tuple[CandleSeries, ...]] = {}
        self._last_id: dict[str, int] = {}

    def add_trade(
        self,
        sym_id: str,
        first_id: int,
        last_id: int,
        trade_ms: int,
        price: str,
        qty: str,
        buyer_maker: bool,
    ) -> bool:
        """Count a trade in every interval; False when it was already counted."""
        if first_id <= self._last_id.get(sym_id, -1):
            return False
        self._last_id[sym_id] = last_id
        series = self._series.get(sym_id)
        if series is None:
            series = self._series[sym_id] = tuple(
                CandleSeries(i, self._history) for i in self.intervals
            )
        p, q = to_units(price), to_units(qty)
        for s in series:
            s.add(trade_ms, p, q, first_id, last_id, buyer_maker)
        return True

    def series(self, sym_id: str, interval: str) -> CandleSeries | None:
        """The symbol's series at a kept interval (None before its first trade)."""
        series = self._series.get(sym_id)
        if series is None or interval not in self.intervals:
            return None
        return series[self.intervals.index(interval)]

    def can_serve(self, interval: str) -> bool:
        """Kept, or a multiple of a kept interval (aggregated on request)."""
        return self._base(interval) is not None

    def _base(self, interval: str) -> str | None:
        ms = INTERVAL_MS.get(interval)
        if ms is None:
            return None
        fits = [i for i in self.intervals if ms % INTERVAL_MS[i] == 0]
        return max(fits, key=INTERVAL_MS.__getitem__) if fits else None

    def candles(self, sym_id: str, interval: str, now_ms: int) -> list[Candle]:
        """Every kept candle up to the one open at `now_ms` (empty intervals filled)."""
        base = self._base(interval)
        series = self.series(sym_id, base) if base is not None else None
        if series is None:
            return []
        series.roll(now_ms)
        found = series.candles()
        return found if base == interval else aggregate(found, INTERVAL_MS[interval])

    def rest_rows(self, sym_id: str, interval: str, now_ms: int) -> list[list[Any]]:
        """`GET /api/v3/klines` rows, oldest first."""
        return [
            bf.rest_kline(kline_frame(sym_id, interval, c, now_ms, False)["k"])
            for c in self.candles(sym_id, interval, now_ms)
        ]
