"""Synthetic Bybit market: random-walk prices on spot and linear markets at a steady rate.

Deterministic for a seed and clock; instruments (names, tick sizes) come from the recording, so
`BTCUSDT` is a real Bybit listing on both urls. Ids follow Bybit's kinds: a linear trade id is a
UUID, a spot trade id is one numeric counter shared by every spot symbol (so per symbol ids are
unique and increasing but never consecutive), and a book's `u` rises by one per update.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from fake_exchange.bybit import frames as yf
from fake_exchange.bybit.frames import Payload
from fake_exchange.bybit.recording import bybit_recording, load_bybit_recording
from fake_exchange.bybit.source import U_START, BybitEvent
from fake_exchange.levels import LevelBook
from fake_exchange.okx.frames import fmt
from fake_exchange.sources import Clock

SYNTHETIC_CHANNELS = frozenset({"publicTrade", "tickers", "orderbook", "allLiquidation"})
FIRST_BASES = ("BTC", "ETH", "SOL", "DOGE", "XRP")
"""Bases an int `markets` takes first: the recorded ones, then the others as listed."""
BOOK_TOPIC_DEPTH = 200
"""Depth named in the source's own book topic; clients get whatever depth they subscribe."""


@dataclass(slots=True)
class _Walk:
    """Random-walk state of one synthetic market; prices in whole ticks."""

    category: str
    symbol: str
    tick: Decimal
    mid: float
    book: LevelBook
    last: Decimal = Decimal(0)
    open: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    low: Decimal = Decimal(0)
    volume: Decimal = Decimal(0)
    turnover: Decimal = Decimal(0)
    ticker: Payload = field(default_factory=dict)
    derivs: yf.Derivs = field(default_factory=yf.Derivs)

    def px(self, ticks: int) -> str:
        return fmt(self.tick * ticks)

    def row(self, ts: int) -> Payload:
        """The full ticker row of the current state."""
        args = (self.symbol, self.last, self.open, self.high, self.low, self.volume, self.turnover)
        if self.category == "spot":
            return yf.spot_ticker(*args)
        bid, ask = self.book.best()
        return yf.linear_ticker(*args, bid, ask, ts, self.derivs)

    def move_derivs(self, rng: random.Random) -> None:
        """A linear market's mark and index drift around the last price, its open interest
        walks, its funding rate changes now and then (by a hundredth of a basis point)."""
        d = self.derivs
        rate = d.funding_rate
        if rng.random() < 0.3:
            rate += Decimal(rng.choice((-1, 1))) * Decimal("0.000001")
        self.derivs = yf.Derivs(
            mark=self.last + self.tick * rng.randint(-3, 3),
            index=self.last + self.tick * rng.randint(-3, 3),
            funding_rate=rate,
            open_interest=max(Decimal(0), d.open_interest + Decimal(rng.randint(-50, 50)) / 10),
            funding_hours=d.funding_hours,
        )


def market_of(unified: str) -> tuple[str, str, str, str]:
    """'BTC/USDT' -> ('spot', 'BTCUSDT', 'BTC', 'USDT'); 'BTC/USDT:USDT' -> ('linear', ...)."""
    pair, colon, settle = unified.upper().partition(":")
    base, slash, quote = pair.partition("/")
    if not slash or not base or not quote or (colon and settle != quote):
        raise ValueError(f"synthetic market needs BASE/QUOTE or BASE/QUOTE:QUOTE, not {unified!r}")
    return ("linear" if colon else "spot"), base + quote, base, quote


class BybitSyntheticSource:
    """Random-walk markets at a steady total rate, in Bybit v5 frames on both urls.

    `markets`: unified symbols, 'BASE/QUOTE' for spot and 'BASE/QUOTE:QUOTE' for a linear
    perpetual, or an int n: n USDT bases Bybit lists on both spot and linear (BTC, ETH, SOL,
    DOGE, XRP first), each as both (2n markets). `rate` frames per second in total, round-robin over (market, channel),
    frames due within one `tick` batched; ends after `duration` s or `total` frames (both None:
    never). Channels: publicTrade, tickers (linear: deltas of what changed, their mark and
    index price, open interest and funding rate moving too; spot: snapshots, as Bybit),
    orderbook (the book moved onto `depth` levels a side around the walk), allLiquidation
    (linear markets only: one to three liquidations a frame near the last price).
    """

    def __init__(
        self,
        markets: Sequence[str] | int = 2,
        rate: float = 1000.0,
        duration: float | None = None,
        total: int | None = None,
        channels: Sequence[str] = ("publicTrade", "tickers", "orderbook"),
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
        self.markets_spec = markets
        self.rate = rate
        self.duration = duration
        self.total = total
        self.channels = tuple(channels)
        self.seed = seed
        self.tick = tick
        self.depth = depth
        self.recording_path = recording_path
        self._instruments: dict[str, list[Payload]] | None = None
        self._start: list[tuple[str, str, Decimal, float]] = []

    def __repr__(self) -> str:
        return (
            f"BybitSyntheticSource({self.markets_spec!r}, rate={self.rate}, "
            f"duration={self.duration}, total={self.total}, channels={self.channels})"
        )

    @property
    def finite(self) -> bool:
        return self.duration is not None or self.total is not None

    def prepare(self) -> None:
        if self._instruments is not None:
            return
        inst = load_bybit_recording(self.recording_path or bybit_recording()).instruments
        by_id = {(c, e["symbol"]): e for c, entries in inst.items() for e in entries}
        if isinstance(self.markets_spec, int):
            spot = {e["symbol"] for e in inst.get("spot", []) if e["quoteCoin"] == "USDT"}
            both = [e for e in inst.get("linear", []) if e["symbol"] in spot]
            rank = {base: i for i, base in enumerate(FIRST_BASES)}
            both.sort(key=lambda e: rank.get(e["baseCoin"], len(rank)))
            bases = [f"{e['baseCoin']}/USDT" for e in both[: self.markets_spec]]
            bases += [f"SYM{i}/USDT" for i in range(self.markets_spec - len(bases))]
            wanted = [m for b in bases for m in (b, b + ":USDT")]
        else:
            wanted = list(self.markets_spec)
        rng = random.Random(self.seed)
        for unified in wanted:
            category, symbol, base, quote = market_of(unified)
            entry = by_id.get((category, symbol))
            if entry is None:
                price = 10 ** rng.uniform(-1, 4)
                tick = Decimal(1).scaleb(math.floor(math.log10(price)) - 4)
                entry = yf.instrument(category, symbol, base, quote, fmt(tick))
                inst.setdefault(category, []).append(entry)
                by_id[(category, symbol)] = entry
                self._start.append((category, symbol, tick, price / float(tick)))
            else:
                tick = Decimal(entry["priceFilter"]["tickSize"])
                self._start.append((category, symbol, tick, 10 ** rng.uniform(3.5, 4.5)))
        self._instruments = inst

    def instruments(self) -> dict[str, list[Payload]]:
        self.prepare()
        return self._instruments or {}

    def _walks(self) -> list[_Walk]:
        """Every market at the start: a `depth`-level book around its start price."""
        self.prepare()
        rng = random.Random(self.seed + 2)
        walks = []
        for category, symbol, tick, mid in self._start:
            w = _Walk(category, symbol, tick, mid, LevelBook(symbol, U_START))
            bids, asks = self._grid(w)
            w.book.apply(
                [self._level(w, t, rng) for t in asks], [self._level(w, t, rng) for t in bids]
            )
            w.last = w.open = w.high = w.low = tick * round(mid)
            walks.append(w)
        return walks

    def initial(self) -> list[BybitEvent]:
        out = []
        for w in self._walks():
            book = f"orderbook.{BOOK_TOPIC_DEPTH}.{w.symbol}"
            snap = yf.book_frame(
                book,
                "snapshot",
                w.symbol,
                w.book.bids(),
                w.book.asks(),
                w.book.seq_id,
                w.book.seq_id,
                0,
                0,
            )
            ticker = yf.push(f"tickers.{w.symbol}", "snapshot", w.row(0), 0, cs=0)
            out += [
                BybitEvent(0.0, w.category, book, snap),
                BybitEvent(0.0, w.category, ticker["topic"], ticker),
            ]
        return out

    def _grid(self, w: _Walk) -> tuple[list[int], list[int]]:
        bid0 = max(math.ceil(w.mid) - 1, self.depth + 1)
        return [bid0 - k for k in range(self.depth)], [bid0 + 1 + k for k in range(self.depth)]

    @staticmethod
    def _level(w: _Walk, ticks: int, rng: random.Random) -> list[str]:
        return [w.px(ticks), f"{rng.uniform(0.01, 20):.3f}"]

    def events(self, clock: Clock) -> Iterator[BybitEvent]:
        rng = random.Random(self.seed + 1)
        walks = self._walks()
        for w in walks:
            w.ticker = w.row(0)
        pairs = [
            (w, ch)
            for w in walks
            for ch in self.channels
            if not (ch in yf.CONTRACT_ONLY and w.category == "spot")
        ]
        if not pairs:
            return
        derivs_rng = random.Random(self.seed + 3)  # its own: other channels' frames unchanged
        step = max(1.0 / self.rate, self.tick)
        start_ms = clock()
        ids = {"spot": yf.SPOT_TRADE_ID0, "seq": U_START * 1000}
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
            now_ms = start_ms + round(vt * 1000)
            while k < due:
                w, channel = pairs[k % len(pairs)]
                ids["seq"] += 1
                topic, frame = self._frame(w, channel, now_ms, rng, ids, derivs_rng)
                yield BybitEvent(vt - last_vt, w.category, topic, frame)
                last_vt = vt
                k += 1
            if self.total is not None and k >= self.total:
                return
            tick_no += 1

    def _frame(
        self,
        w: _Walk,
        channel: str,
        now_ms: int,
        rng: random.Random,
        ids: dict[str, int],
        derivs_rng: random.Random,
    ) -> tuple[str, Payload]:
        if channel == "publicTrade":
            w.mid = max(w.mid * math.exp(rng.gauss(0.0, 0.0005)), float(self.depth + 2))
            px = w.tick * round(w.mid)
            sz = Decimal(f"{rng.uniform(0.001, 5):.3f}")
            w.last, w.high, w.low = px, max(w.high, px), min(w.low, px)
            w.volume += sz
            w.turnover += px * sz
            if w.category == "spot":
                ids["spot"] += 1
                trade_id = str(ids["spot"])
            else:
                trade_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            side = "Buy" if rng.random() < 0.5 else "Sell"
            row = yf.trade_row(
                w.category, w.symbol, trade_id, fmt(px), fmt(sz), side, now_ms, ids["seq"]
            )
            topic = f"publicTrade.{w.symbol}"
            return topic, yf.push(topic, "snapshot", [row], now_ms)
        if channel == "orderbook":
            topic = f"orderbook.{BOOK_TOPIC_DEPTH}.{w.symbol}"
            bids, asks = self._book_update(w, rng)
            frame = yf.book_frame(
                topic, "delta", w.symbol, bids, asks, w.book.seq_id, ids["seq"], now_ms, now_ms
            )
            return topic, frame
        if channel == "allLiquidation":
            topic = f"allLiquidation.{w.symbol}"
            rows = [
                yf.liquidation_row(
                    w.symbol,
                    derivs_rng.choice(("Buy", "Sell")),
                    f"{derivs_rng.uniform(0.001, 3):.3f}",
                    fmt(w.last + w.tick * derivs_rng.randint(-20, 20)),
                    now_ms,
                )
                for _ in range(derivs_rng.randint(1, 3))
            ]
            return topic, yf.push(topic, "snapshot", rows, now_ms)
        topic = f"tickers.{w.symbol}"
        if w.category == "linear":
            w.move_derivs(derivs_rng)
        row = w.row(now_ms)
        if w.category == "spot":
            return topic, yf.push(topic, "snapshot", row, now_ms, cs=ids["seq"])
        delta, w.ticker = yf.changed(w.ticker, row), row
        return topic, yf.push(topic, "delta", delta, now_ms, cs=ids["seq"])

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
        w.book.seq_id += 1
        return changes


__all__ = ["SYNTHETIC_CHANNELS", "BybitSyntheticSource", "market_of"]
