"""A synthetic trade history for any symbol and any past hour: what the fakes' history
endpoints serve for a range before they started.

Deterministic and random-access: an hour's trades come from a generator seeded by
(exchange, symbol, hour) alone, so every page of every request agrees with every other, across
requests, processes and runs, and a page in 2019 costs what a page yesterday costs.

- **When**: from ``ORIGIN_MS`` (2017-01-01, nothing before: the market was not listed) up to
  ``end_ms`` (the fakes use the start of the UTC day they started: the live session comes
  after it).
- **How many**: ``per_hour(symbol)`` trades every hour, 1,000 to 1,999 by symbol (24k-48k a
  day), at seeded random milliseconds of the hour (sometimes several in one millisecond).
- **Ids**: ``HISTORY_ID_BASE + hours since the origin * per_hour + i``: consecutive and
  increasing with time, in a range of their own far above any live id of the fakes (their live
  sources count from 1, replays from the recorded ids), so a history trade and a live one never
  share an id. Pages that go on past the history's last id continue with the live trades.
- **Prices**: a random walk on a tick, pinned every hour to an anchor ``start price * exp(0.02
  z)`` (z seeded by the hour) by a Brownian bridge, so it is continuous from hour to hour and
  never drifts away; notional sizes log-normal around 300 (quote), quantities on a lot.

Prices and quantities are integers in units of 1e-8 (as ``derive``'s candles), so candles built
here are exact: the same numbers anyone recomputes from the trades with decimals.
"""

from __future__ import annotations

import math
import zlib
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Final

import numpy as np
import numpy.typing as npt

from fake_exchange.derive import Candle

ORIGIN_MS: Final = 1_483_228_800_000
"""2017-01-01T00:00:00Z: the history's first hour."""
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 86_400_000
HISTORY_ID_BASE: Final = 10**12
"""Every history trade id is at least this; live ids of the fakes are far below."""

_ORIGIN_H = ORIGIN_MS // HOUR_MS
_SCALE = 10**8
_STEP_SIGMA = 0.0003  # log-price step per trade
_ANCHOR_SIGMA = 0.02  # spread of the hourly anchors around the start price
_START_PRICES = {"BTC": 60_000.0, "ETH": 3_000.0, "SOL": 150.0, "BNB": 600.0, "XRP": 0.6}


@dataclass(frozen=True, slots=True)
class HistTrade:
    """One history trade: price and quantity in 1e-8 units; ``maker``: the buyer was the
    maker (the taker sold)."""

    id: int
    ts: int
    px: int
    qty: int
    maker: bool


@dataclass(frozen=True, slots=True)
class HourTrades:
    """The trades of one hour, oldest first (ids ``first_id`` on, consecutive)."""

    hour: int
    first_id: int
    ts: npt.NDArray[np.int64]
    px: npt.NDArray[np.int64]
    qty: npt.NDArray[np.int64]
    maker: npt.NDArray[np.bool_]

    def __len__(self) -> int:
        return len(self.ts)

    def trade(self, i: int) -> HistTrade:
        return HistTrade(
            self.first_id + i,
            int(self.ts[i]),
            int(self.px[i]),
            int(self.qty[i]),
            bool(self.maker[i]),
        )


def floor_day(ms: int) -> int:
    return ms - ms % DAY_MS


def units_text(units: int) -> str:
    """35270000 -> '0.35270000' (8 places, Binance's format)."""
    whole, frac = divmod(units, _SCALE)
    return f"{whole}.{frac:08d}"


def plain_text(units: int) -> str:
    """35270000 -> '0.3527', 100000000 -> '1' (OKX's format: no trailing zeros)."""
    text = units_text(units).rstrip("0")
    return text.removesuffix(".")


class SyntheticHistory:
    """The trade history of every symbol of one exchange, from ``ORIGIN_MS`` to ``end_ms``.

    ``symbol`` is a unified name (``BTC/USDT``): its base picks a plausible start price
    (BTC 60,000, ETH 3,000...; others seeded), the exchange and symbol seed everything else.
    """

    def __init__(
        self,
        exchange: str,
        end_ms: int,
        *,
        seed: int = 0,
        trades_per_hour: int | None = None,
        cache_hours: int = 512,
    ) -> None:
        if trades_per_hour is not None and trades_per_hour < 1:
            raise ValueError("trades_per_hour must be >= 1")
        self.exchange = exchange
        self.end_ms = max(ORIGIN_MS, end_ms - end_ms % HOUR_MS)
        self.seed = seed
        self._per_hour = trades_per_hour
        self._cache: OrderedDict[tuple[str, int], HourTrades] = OrderedDict()
        self._cache_hours = cache_hours
        self._hourly: dict[tuple[str, int], Candle] = {}

    # ------------------------------------------------------------------ shape

    def _key(self, symbol: str) -> int:
        return zlib.crc32(f"{self.exchange}:{symbol}:{self.seed}".encode())

    def per_hour(self, symbol: str) -> int:
        if self._per_hour is not None:
            return self._per_hour
        return 1_000 + self._key(symbol) % 1_000

    def start_price(self, symbol: str) -> float:
        base = symbol.partition("/")[0].upper()
        known = _START_PRICES.get(base)
        if known is not None:
            return known
        rng = np.random.default_rng([self._key(symbol), 1])
        return float(round(10 ** rng.uniform(-1, 4), 4))

    def _steps(self, symbol: str) -> tuple[int, int]:
        """(price tick, quantity lot) in 1e-8 units, by the start price's magnitude."""
        digits = math.floor(math.log10(self.start_price(symbol)))
        price_places = max(2, min(8, 6 - digits))
        qty_places = max(0, min(8, 2 + digits))
        return 10 ** (8 - price_places), 10 ** (8 - qty_places)

    @property
    def first_hour(self) -> int:
        return _ORIGIN_H

    @property
    def end_hour(self) -> int:
        """The first hour past the history."""
        return self.end_ms // HOUR_MS

    def first_id(self, symbol: str) -> int:
        return HISTORY_ID_BASE

    def end_id(self, symbol: str) -> int:
        """One past the last history id."""
        return HISTORY_ID_BASE + (self.end_hour - _ORIGIN_H) * self.per_hour(symbol)

    @staticmethod
    def is_history_id(trade_id: int) -> bool:
        return trade_id >= HISTORY_ID_BASE

    # ------------------------------------------------------------------ generation

    def _anchor(self, key: int, hour: int, log_start: float) -> float:
        z = np.random.default_rng([key, hour, 7]).standard_normal()
        return log_start + _ANCHOR_SIGMA * float(z)

    def hour(self, symbol: str, hour: int) -> HourTrades:
        """The trades of hour number ``hour`` (since the epoch); empty outside the history."""
        cache_key = (symbol, hour)
        found = self._cache.get(cache_key)
        if found is not None:
            self._cache.move_to_end(cache_key)
            return found
        made = self._generate(symbol, hour)
        self._cache[cache_key] = made
        if len(self._cache) > self._cache_hours:
            self._cache.popitem(last=False)
        return made

    def _generate(self, symbol: str, hour: int) -> HourTrades:
        n = self.per_hour(symbol)
        first_id = HISTORY_ID_BASE + (hour - _ORIGIN_H) * n
        if not self.first_hour <= hour < self.end_hour:
            empty = np.zeros(0, dtype=np.int64)
            return HourTrades(hour, first_id, empty, empty, empty, np.zeros(0, dtype=np.bool_))
        key = self._key(symbol)
        log_start = math.log(self.start_price(symbol))
        a0 = self._anchor(key, hour, log_start)
        a1 = self._anchor(key, hour + 1, log_start)
        rng = np.random.default_rng([key, hour])
        ts = hour * HOUR_MS + np.sort(rng.integers(0, HOUR_MS, n, dtype=np.int64))
        walk = np.cumsum(rng.normal(0.0, _STEP_SIGMA, n))
        frac = np.arange(1, n + 1, dtype=np.float64) / n
        log_px = a0 + walk - frac * walk[-1] + frac * (a1 - a0)  # a Brownian bridge a0 -> a1
        tick, lot = self._steps(symbol)
        prices = np.exp(log_px)
        px = np.maximum(np.round(prices * _SCALE / tick), 1).astype(np.int64) * tick
        notional = rng.lognormal(math.log(300.0), 1.0, n)
        qty = np.maximum(np.round(notional / prices * _SCALE / lot), 1).astype(np.int64) * lot
        maker = rng.random(n) < 0.5
        return HourTrades(hour, first_id, ts, px, qty, maker)

    # ------------------------------------------------------------------ queries

    def hour_of_id(self, symbol: str, trade_id: int) -> tuple[int, int]:
        """(hour, index in it) of a history id."""
        h, i = divmod(trade_id - HISTORY_ID_BASE, self.per_hour(symbol))
        return _ORIGIN_H + h, i

    def between(self, symbol: str, start_ms: int, end_ms: int) -> Iterator[HistTrade]:
        """Trades with ``start_ms <= ts < end_ms``, oldest first."""
        lo, hi = max(start_ms, ORIGIN_MS), min(end_ms, self.end_ms)
        for h in range(lo // HOUR_MS, -(-hi // HOUR_MS)):
            if lo >= hi:
                return
            t = self.hour(symbol, h)
            a, b = np.searchsorted(t.ts, [lo, hi], side="left")
            for i in range(int(a), int(b)):
                yield t.trade(i)

    def count(self, symbol: str, start_ms: int, end_ms: int) -> int:
        """How many trades ``between`` yields (for tests: the fake's own count)."""
        lo, hi = max(start_ms, ORIGIN_MS), min(end_ms, self.end_ms)
        total = 0
        for h in range(lo // HOUR_MS, -(-hi // HOUR_MS)):
            if lo >= hi:
                break
            a, b = np.searchsorted(self.hour(symbol, h).ts, [lo, hi], side="left")
            total += int(b - a)
        return total

    def from_id(self, symbol: str, trade_id: int) -> Iterator[HistTrade]:
        """Trades with id ``>= trade_id``, oldest first, to the history's end."""
        h, i = self.hour_of_id(symbol, max(trade_id, HISTORY_ID_BASE))
        while h < self.end_hour:
            t = self.hour(symbol, h)
            for j in range(i, len(t)):
                yield t.trade(j)
            h, i = h + 1, 0

    def before_id(self, symbol: str, trade_id: int) -> Iterator[HistTrade]:
        """Trades with id ``< trade_id``, newest first, back to the origin."""
        end = min(trade_id, self.end_id(symbol))
        if end <= HISTORY_ID_BASE:
            return
        h, i = self.hour_of_id(symbol, end)
        while h >= self.first_hour:
            t = self.hour(symbol, h)
            for j in range(min(i, len(t)) - 1, -1, -1):
                yield t.trade(j)
            h, i = h - 1, self.per_hour(symbol)

    def before_ms(self, symbol: str, ts_ms: int) -> Iterator[HistTrade]:
        """Trades with ``ts < ts_ms``, newest first, back to the origin."""
        end = min(ts_ms, self.end_ms)
        h = (end - 1) // HOUR_MS
        while end > ORIGIN_MS and h >= self.first_hour:
            t = self.hour(symbol, h)
            j = int(np.searchsorted(t.ts, end, side="left"))
            for k in range(j - 1, -1, -1):
                yield t.trade(k)
            h -= 1

    def price_before(self, symbol: str, ts_ms: int) -> int | None:
        """The last trade price before ``ts_ms`` (None: nothing traded before it)."""
        last = next(self.before_ms(symbol, ts_ms), None)
        return None if last is None else last.px

    # ------------------------------------------------------------------ candles

    def candles(
        self, symbol: str, width_ms: int, start_ms: int, end_ms: int, offset_ms: int = 0
    ) -> list[Candle]:
        """Candles of ``width_ms`` (a divisor of an hour, or a whole number of hours) with
        trades, opening in ``[start_ms, end_ms)``, oldest first. Open times are
        ``k * width_ms - offset_ms`` (``offset_ms``: a whole number of hours, for bars aligned
        to another time zone). Exact: integer units, quote volumes in 1e-16."""
        if width_ms <= HOUR_MS:
            if HOUR_MS % width_ms:
                raise ValueError(f"a candle of {width_ms} ms does not divide an hour")
            out: list[Candle] = []
            lo, hi = max(start_ms, ORIGIN_MS), min(end_ms, self.end_ms)
            for h in range(lo // HOUR_MS, -(-hi // HOUR_MS)):
                if lo >= hi:
                    break
                out += [
                    c for c in self._buckets(self.hour(symbol, h), width_ms) if lo <= c.open_ms < hi
                ]
            return out
        if width_ms % HOUR_MS or offset_ms % HOUR_MS:
            raise ValueError("long candles need whole hours")
        first = (start_ms + offset_ms) // width_ms * width_ms - offset_ms
        if first < start_ms:
            first += width_ms
        out = []
        open_ms = first
        while open_ms < end_ms and open_ms < self.end_ms:
            hours = [
                self._hour_candle(symbol, h)
                for h in range(open_ms // HOUR_MS, (open_ms + width_ms) // HOUR_MS)
            ]
            merged = merge_candles(open_ms, [c for c in hours if c is not None])
            if merged is not None:
                out.append(merged)
            open_ms += width_ms
        return out

    def _hour_candle(self, symbol: str, hour: int) -> Candle | None:
        if not self.first_hour <= hour < self.end_hour:
            return None
        key = (symbol, hour)
        found = self._hourly.get(key)
        if found is None:
            [found] = self._buckets(self.hour(symbol, hour), HOUR_MS)
            if len(self._hourly) < 500_000:
                self._hourly[key] = found
        return found

    @staticmethod
    def _buckets(t: HourTrades, width_ms: int) -> list[Candle]:
        """The hour's trades in candles of ``width_ms`` (only those with trades)."""
        n = len(t)
        if n == 0:
            return []
        bucket = (t.ts - t.hour * HOUR_MS) // width_ms
        starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
        ends = np.r_[starts[1:], n]
        high = np.maximum.reduceat(t.px, starts).tolist()
        low = np.minimum.reduceat(t.px, starts).tolist()
        vol = np.add.reduceat(t.qty, starts).tolist()
        px, qty, maker = t.px.tolist(), t.qty.tolist(), t.maker.tolist()
        quote = list(accumulate((p * q for p, q in zip(px, qty, strict=True)), initial=0))
        taker_q = list(
            accumulate(
                (0 if m else p * q for p, q, m in zip(px, qty, maker, strict=True)), initial=0
            )
        )
        taker_b = list(
            accumulate((0 if m else q for q, m in zip(qty, maker, strict=True)), initial=0)
        )
        out = []
        for k, (a, b) in enumerate(zip(starts.tolist(), ends.tolist(), strict=True)):
            out.append(
                Candle(
                    open_ms=t.hour * HOUR_MS + int(bucket[a]) * width_ms,
                    open=px[a],
                    high=high[k],
                    low=low[k],
                    close=px[b - 1],
                    volume=vol[k],
                    quote=quote[b] - quote[a],
                    taker_base=taker_b[b] - taker_b[a],
                    taker_quote=taker_q[b] - taker_q[a],
                    count=b - a,
                    first_id=t.first_id + a,
                    last_id=t.first_id + b - 1,
                )
            )
        return out


def merge_candles(open_ms: int, parts: list[Candle]) -> Candle | None:
    """Consecutive candles (oldest first, each with trades) as one opening at ``open_ms``."""
    if not parts:
        return None
    first, last = parts[0], parts[-1]
    return Candle(
        open_ms=open_ms,
        open=first.open,
        high=max(c.high for c in parts),
        low=min(c.low for c in parts),
        close=last.close,
        volume=sum(c.volume for c in parts),
        quote=sum(c.quote for c in parts),
        taker_base=sum(c.taker_base for c in parts),
        taker_quote=sum(c.taker_quote for c in parts),
        count=sum(c.count for c in parts),
        first_id=first.first_id,
        last_id=last.last_id,
    )


__all__ = [
    "DAY_MS",
    "HISTORY_ID_BASE",
    "HOUR_MS",
    "ORIGIN_MS",
    "HistTrade",
    "HourTrades",
    "SyntheticHistory",
    "floor_day",
    "merge_candles",
    "plain_text",
    "units_text",
]
