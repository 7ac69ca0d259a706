"""Synthetic Coinbase market: random-walk prices on spot products at a steady rate.

Deterministic for a seed and clock; products (names, increments) come from the recording, so
`BTC-USD` is a real Coinbase listing, and names it lacks get an entry. Trade ids count up by one
per product (as Coinbase's do), a trade's `side` is the maker's (Coinbase's convention), books
are full `level2` books moved onto a grid around the walk. The `candles` channel is built by the
fake's market from the trades (five-minute candles), like every REST granularity.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from fake_exchange.coinbase import frames as cf
from fake_exchange.coinbase.frames import Payload
from fake_exchange.coinbase.recording import coinbase_recording, load_coinbase_recording
from fake_exchange.coinbase.source import CoinbaseEvent
from fake_exchange.levels import LevelBook
from fake_exchange.okx.frames import fmt
from fake_exchange.sources import Clock

SYNTHETIC_CHANNELS = frozenset({"market_trades", "ticker", "level2"})
FIRST_BASES = ("BTC", "ETH", "SOL", "DOGE", "XRP")
"""Bases an int `products` takes first (USD quoted), then the others as listed."""
TRADE_ID0 = 1_000_000_000
"""First trade id of the first product; each next product starts 10^8 higher."""
_MS = 1_000_000


@dataclass(slots=True)
class _Walk:
    """Random-walk state of one synthetic product; prices in whole ticks."""

    pid: str
    tick: Decimal
    mid: float
    book: LevelBook
    next_id: int
    last: Decimal = Decimal(0)
    open: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    low: Decimal = Decimal(0)
    volume: Decimal = Decimal(0)

    def px(self, ticks: int) -> str:
        return fmt(self.tick * ticks)

    def ticker(self) -> Payload:
        bid, ask = self.book.best()
        return cf.ticker_row(
            self.pid, self.last, self.volume, self.low, self.high, self.open, bid, ask
        )


def product_of(name: str) -> tuple[str, str, str]:
    """'BTC-USD', 'BTC/USD' -> ('BTC-USD', 'BTC', 'USD')."""
    base, sep, quote = name.upper().replace("/", "-").partition("-")
    if not sep or not base or not quote:
        raise ValueError(f"synthetic product needs BASE-QUOTE or BASE/QUOTE, not {name!r}")
    return f"{base}-{quote}", base, quote


class CoinbaseSyntheticSource:
    """Random-walk products at a steady total rate, in Coinbase Advanced Trade events.

    `products`: names (`BTC-USD` or `BTC/USD`) or an int n: n USD products (BTC, ETH, SOL, DOGE,
    XRP first). `rate` events per second in total, round-robin over (product, channel), events
    due within one `tick` batched; ends after `duration` s or `total` events (both None: never).
    Channels: `market_trades` (one trade an event), `ticker` (the whole row, best bid and ask
    from the book), `level2` (the book moved onto `depth` levels a side around the walk).
    """

    def __init__(
        self,
        products: Sequence[str] | int = 2,
        rate: float = 1000.0,
        duration: float | None = None,
        total: int | None = None,
        channels: Sequence[str] = ("market_trades", "ticker", "level2"),
        seed: int = 0,
        tick: float = 0.005,
        depth: int = 25,
        recording_path: Path | None = None,
    ) -> None:
        bad = set(channels) - SYNTHETIC_CHANNELS
        if bad or not channels:
            raise ValueError(
                f"unsupported channels {sorted(bad)}; use {sorted(SYNTHETIC_CHANNELS)}"
            )
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.products_spec = products
        self.rate = rate
        self.duration = duration
        self.total = total
        self.channels = tuple(channels)
        self.seed = seed
        self.tick = tick
        self.depth = depth
        self.recording_path = recording_path
        self._products: list[Payload] | None = None
        self._start: list[tuple[str, Decimal, float]] = []

    def __repr__(self) -> str:
        return (
            f"CoinbaseSyntheticSource({self.products_spec!r}, rate={self.rate}, "
            f"duration={self.duration}, total={self.total}, channels={self.channels})"
        )

    @property
    def finite(self) -> bool:
        return self.duration is not None or self.total is not None

    def prepare(self) -> None:
        if self._products is not None:
            return
        products = list(
            load_coinbase_recording(self.recording_path or coinbase_recording()).products
        )
        by_id = {p["product_id"]: p for p in products}
        if isinstance(self.products_spec, int):
            rank = {base: i for i, base in enumerate(FIRST_BASES)}
            usd = [p for p in products if p.get("quote_currency_id") == "USD"]
            usd.sort(key=lambda p: rank.get(p.get("base_currency_id", ""), len(rank)))
            wanted = [p["product_id"] for p in usd[: self.products_spec]]
            wanted += [f"SYM{i}-USD" for i in range(self.products_spec - len(wanted))]
        else:
            wanted = list(self.products_spec)
        rng = random.Random(self.seed)
        for name in wanted:
            pid, base, quote = product_of(name)
            entry = by_id.get(pid)
            if entry is None:
                price = 10 ** rng.uniform(-1, 4)
                tick = Decimal(1).scaleb(math.floor(math.log10(price)) - 4)
                entry = cf.product(pid, base, quote, fmt(tick), "0.00000001")
                products.append(entry)
                by_id[pid] = entry
                self._start.append((pid, tick, price / float(tick)))
            else:
                tick = Decimal(entry.get("price_increment") or entry["quote_increment"])
                self._start.append((pid, tick, 10 ** rng.uniform(3.5, 4.5)))
        self._products = products

    def products(self) -> list[Payload]:
        self.prepare()
        return self._products or []

    def _walks(self) -> list[_Walk]:
        """Every product at the start: a `depth`-level book around its start price."""
        self.prepare()
        rng = random.Random(self.seed + 2)
        walks = []
        for i, (pid, tick, mid) in enumerate(self._start):
            w = _Walk(pid, tick, mid, LevelBook(pid), TRADE_ID0 + i * 10**8)
            bids, asks = self._grid(w)
            w.book.apply(
                [self._level(w, t, rng) for t in asks], [self._level(w, t, rng) for t in bids]
            )
            w.last = w.open = w.high = w.low = tick * round(mid)
            walks.append(w)
        return walks

    def initial(self, clock: Clock) -> list[CoinbaseEvent]:
        ts = clock() * _MS
        out = []
        for w in self._walks():
            updates = cf.book_updates(w.book.bids(), w.book.asks(), cf.iso_us(ts))
            book = cf.book_event("snapshot", w.pid, updates)
            ticker = {"type": "snapshot", "tickers": [w.ticker()]}
            out += [
                CoinbaseEvent(0.0, "l2_data", book, ts),
                CoinbaseEvent(0.0, "ticker", ticker, ts),
            ]
        return out

    def _grid(self, w: _Walk) -> tuple[list[int], list[int]]:
        bid0 = max(math.ceil(w.mid) - 1, self.depth + 1)
        return [bid0 - k for k in range(self.depth)], [bid0 + 1 + k for k in range(self.depth)]

    @staticmethod
    def _level(w: _Walk, ticks: int, rng: random.Random) -> list[str]:
        return [w.px(ticks), f"{rng.uniform(0.01, 20):.8f}".rstrip("0").rstrip(".")]

    def events(self, clock: Clock) -> Iterator[CoinbaseEvent]:
        rng = random.Random(self.seed + 1)
        walks = self._walks()
        pairs = [(w, ch) for w in walks for ch in self.channels]
        step = max(1.0 / self.rate, self.tick)
        start_ms = clock()
        k = tick_no = 0
        last_vt = 0.0
        while True:
            vt = tick_no * step
            if self.duration is not None and vt >= self.duration:
                return
            end = vt + step if self.duration is None else min(vt + step, self.duration)
            due = math.ceil(self.rate * end - 1e-9)
            if self.total is not None:
                due = min(due, self.total)
            ts = (start_ms + round(vt * 1000)) * _MS + k % 1000
            while k < due:
                w, channel = pairs[k % len(pairs)]
                data_channel, event = self._event(w, channel, ts, rng)
                yield CoinbaseEvent(vt - last_vt, data_channel, event, ts)
                last_vt = vt
                k += 1
            if self.total is not None and k >= self.total:
                return
            tick_no += 1

    def _event(self, w: _Walk, channel: str, ts: int, rng: random.Random) -> tuple[str, Payload]:
        if channel == "market_trades":
            w.mid = max(w.mid * math.exp(rng.gauss(0.0, 0.0005)), float(self.depth + 2))
            px = w.tick * round(w.mid)
            sz = Decimal(f"{rng.uniform(0.001, 5):.8f}").normalize()
            w.last, w.high, w.low = px, max(w.high, px), min(w.low, px)
            w.volume += sz
            maker = "SELL" if rng.random() < 0.5 else "BUY"
            row = cf.trade_row(w.pid, w.next_id, fmt(px), fmt(sz), ts, maker)
            w.next_id += 1
            return "market_trades", {"type": "update", "trades": [row]}
        if channel == "level2":
            bids, asks = self._book_update(w, rng)
            updates = cf.book_updates(bids, asks, cf.iso_us(ts))
            return "l2_data", cf.book_event("update", w.pid, updates)
        return "ticker", {"type": "update", "tickers": [w.ticker()]}

    def _book_update(self, w: _Walk, rng: random.Random) -> tuple[list[list[str]], list[list[str]]]:
        """Move the book onto the grid around the walk's mid; at least one level changes."""
        bids, asks = self._grid(w)
        changes: tuple[list[list[str]], list[list[str]]] = ([], [])
        for wanted, current, out in (
            (bids, w.book.bids(), changes[0]),
            (asks, w.book.asks(), changes[1]),
        ):
            keep = {w.px(t) for t in wanted}
            out.extend([lv[0], "0"] for lv in current if lv[0] not in keep)
            have = {lv[0] for lv in current}
            out.extend(
                self._level(w, t, rng) for t in wanted if w.px(t) not in have or rng.random() < 0.05
            )
        if not changes[0] and not changes[1]:
            t = rng.choice(bids + asks)
            changes[0 if t in bids else 1].append(self._level(w, t, rng))
        w.book.apply(changes[1], changes[0])
        return changes


__all__ = ["SYNTHETIC_CHANNELS", "CoinbaseSyntheticSource", "product_of"]
