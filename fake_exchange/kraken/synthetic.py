"""Synthetic Kraken market: random-walk prices on spot pairs at a steady rate, in v1 terms.

Deterministic for a seed and clock. Pairs (names, precisions) come from the recording's
`AssetPairs`, so `XBT/USD` is a real Kraken listing; names it lacks get an entry (quote
`USD` as Kraken's `ZUSD`). Books are `depth` levels a side on the pair's price grid around
the walk; trades take the taker's side (`b`/`s`, as Kraken reports it); tickers are v1 ticker
dicts with the book's best bid and ask. The server numbers the trades and builds candles.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from fake_exchange.kraken import frames as kf
from fake_exchange.kraken.book import KrakenBook
from fake_exchange.kraken.frames import Payload
from fake_exchange.kraken.recording import kraken_recording, load_kraken_recording
from fake_exchange.kraken.source import KrakenEvent
from fake_exchange.sources import Clock

SYNTHETIC_CHANNELS = frozenset({"trade", "ticker", "book"})
FIRST_BASES = ("XBT", "ETH", "SOL", "XDG", "XRP", "ADA")
"""Bases an int `pairs` takes first (USD quoted), then the others as listed."""
_MS = 1_000_000
V1_NAMES = {v: k for k, v in kf.V2_NAMES.items()}


def pair_of(name: str) -> tuple[str, str]:
    """'BTC/USD', 'BTC-USD', 'XBT/USD' -> ('XBT', 'USD'): v1 asset names."""
    base, sep, quote = name.upper().replace("-", "/").partition("/")
    if not sep or not base or not quote:
        raise ValueError(f"synthetic pair needs BASE/QUOTE, not {name!r}")
    return V1_NAMES.get(base, base), V1_NAMES.get(quote, quote)


def made_up_pair(base: str, quote: str, decimals: int) -> tuple[str, Payload]:
    """An `AssetPairs` entry for a pair the recording lacks."""
    qid = f"Z{quote}" if quote in ("USD", "EUR", "GBP", "CAD", "JPY") else quote
    return f"{base}{quote}", {
        "altname": f"{base}{quote}", "wsname": f"{base}/{quote}", "aclass_base": "currency",
        "base": base, "aclass_quote": "currency", "quote": qid, "lot": "unit",
        "pair_decimals": decimals, "lot_decimals": 8, "lot_multiplier": 1,
        "leverage_buy": [], "leverage_sell": [], "fees": [[0, 0.26]], "fees_maker": [[0, 0.16]],
        "fee_volume_currency": "ZUSD", "margin_call": 80, "margin_stop": 40, "ordermin": "0.0001",
        "status": "online",
    }  # fmt: skip


@dataclass(slots=True)
class _Walk:
    wsname: str
    decimals: int
    mid: float
    """In ticks."""
    book: KrakenBook
    opened: str = ""
    stats: dict[str, str | int] = field(default_factory=dict)

    def px(self, ticks: int) -> str:
        return f"{Decimal(ticks).scaleb(-self.decimals):.{self.decimals}f}"


class KrakenSyntheticSource:
    """Random-walk pairs at a steady total rate, as Kraken v1 data (see the module).

    `pairs`: names (`BTC/USD`, `XBT/USD`, `AAA-USD`) or an int n: n USD pairs (XBT, ETH, SOL,
    XDG, XRP, ADA first). `rate` events per second in total, round-robin over (pair, channel);
    ends after `duration` s or `total` events (both None: never).
    """

    def __init__(
        self,
        pairs: Sequence[str] | int = 2,
        rate: float = 1000.0,
        duration: float | None = None,
        total: int | None = None,
        channels: Sequence[str] = ("trade", "ticker", "book"),
        seed: int = 0,
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
        self.pairs_spec = pairs
        self.rate = rate
        self.duration = duration
        self.total = total
        self.channels = tuple(channels)
        self.seed = seed
        self.depth = depth
        self.recording_path = recording_path
        self._pairs: dict[str, Payload] | None = None
        self._start: list[tuple[str, int, float]] = []

    def __repr__(self) -> str:
        return (
            f"KrakenSyntheticSource({self.pairs_spec!r}, rate={self.rate}, "
            f"duration={self.duration}, total={self.total}, channels={self.channels})"
        )

    @property
    def finite(self) -> bool:
        return self.duration is not None or self.total is not None

    def prepare(self) -> None:
        if self._pairs is not None:
            return
        pairs = dict(load_kraken_recording(self.recording_path or kraken_recording()).pairs)
        by_ws = {e["wsname"]: pid for pid, e in pairs.items() if "wsname" in e}
        if isinstance(self.pairs_spec, int):
            rank = {base: i for i, base in enumerate(FIRST_BASES)}
            usd = sorted((ws for ws in by_ws if ws.endswith("/USD")),
                         key=lambda ws: (rank.get(ws.split("/")[0], len(rank)), ws))  # fmt: skip
            wanted = usd[: self.pairs_spec]
            wanted += [f"SYM{i}/USD" for i in range(self.pairs_spec - len(wanted))]
        else:
            wanted = list(self.pairs_spec)
        rng = random.Random(self.seed)
        for name in wanted:
            base, quote = pair_of(name)
            ws = f"{base}/{quote}"
            pid = by_ws.get(ws)
            if pid is None:
                price = 10 ** rng.uniform(-1, 4)
                decimals = max(0, 4 - math.floor(math.log10(price)))
                pid, entry = made_up_pair(base, quote, decimals)
                pairs[pid], by_ws[ws] = entry, pid
            else:
                decimals = int(pairs[pid].get("pair_decimals", 2))
                price = 10 ** rng.uniform(0, 2)
            self._start.append((ws, decimals, max(price * 10**decimals, self.depth + 2.0)))
        self._pairs = pairs

    def pairs(self) -> dict[str, Payload]:
        self.prepare()
        return self._pairs or {}

    def channel_ids(self) -> dict[tuple[str, str], int]:
        return {}

    def _walks(self) -> list[_Walk]:
        self.prepare()
        rng = random.Random(self.seed + 2)
        walks = []
        for ws, decimals, mid in self._start:
            w = _Walk(ws, decimals, mid, KrakenBook(self.depth))
            bids, asks = self._grid(w)
            w.book.apply([self._level(w, t, rng, "0") for t in asks],
                         [self._level(w, t, rng, "0") for t in bids])  # fmt: skip
            w.opened = w.px(round(mid))
            w.stats = {"volume": "0", "vwap": w.opened, "count": 0, "low": w.opened,
                       "high": w.opened}  # fmt: skip
            walks.append(w)
        return walks

    def initial(self, clock: Clock) -> list[KrakenEvent]:
        ts = clock() * _MS
        now = kf.seconds_text(ts)
        out = []
        for w in self._walks():
            data = {"as": [[p, q, now] for p, q, _ in w.book.asks()],
                    "bs": [[p, q, now] for p, q, _ in w.book.bids()]}  # fmt: skip
            out.append(KrakenEvent(0.0, f"book-{self.depth}", w.wsname, data, ts))
        return out

    def _grid(self, w: _Walk) -> tuple[list[int], list[int]]:
        bid0 = max(math.ceil(w.mid) - 1, self.depth + 1)
        return [bid0 - k for k in range(self.depth)], [bid0 + 1 + k for k in range(self.depth)]

    @staticmethod
    def _level(w: _Walk, ticks: int, rng: random.Random, ts: str) -> list[str]:
        return [w.px(ticks), f"{rng.uniform(0.01, 20):.8f}", ts]

    def events(self, clock: Clock) -> Iterator[KrakenEvent]:
        rng = random.Random(self.seed + 1)
        walks = self._walks()
        rounds = [(w, ch) for w in walks for ch in self.channels]
        step = 1.0 / self.rate
        start_ms = clock()
        k = 0
        while True:
            vt = k * step
            if self.duration is not None and vt >= self.duration:
                return
            if self.total is not None and k >= self.total:
                return
            ts = (start_ms + round(vt * 1000)) * _MS + k % 1000
            w, channel = rounds[k % len(rounds)]
            yield self._event(w, channel, ts, rng, step if k else 0.0)
            k += 1

    def _event(
        self, w: _Walk, channel: str, ts: int, rng: random.Random, delay: float
    ) -> KrakenEvent:
        now = kf.seconds_text(ts)
        if channel == "trade":
            w.mid = max(w.mid * math.exp(rng.gauss(0.0, 0.0005)), float(self.depth + 2))
            px, qty = w.px(round(w.mid)), f"{rng.uniform(0.001, 5):.8f}"
            side = "b" if rng.random() < 0.5 else "s"
            kind = "l" if rng.random() < 0.3 else "m"
            st = w.stats
            st["volume"] = str(Decimal(str(st["volume"])) + Decimal(qty))
            st["count"] = int(st["count"]) + 1
            st["low"] = min(str(st["low"]), px, key=Decimal)
            st["high"] = max(str(st["high"]), px, key=Decimal)
            return KrakenEvent(delay, "trade", w.wsname, [[px, qty, now, side, kind, ""]], ts)
        if channel == "book":
            asks, bids = self._book_update(w, rng, now)
            return KrakenEvent(delay, f"book-{self.depth}", w.wsname, {"a": asks, "b": bids}, ts)
        bid, ask = w.book.bids(1)[0], w.book.asks(1)[0]
        last = w.px(round(w.mid))
        ticker = kf.v1_ticker(last, (bid[0], bid[1]), (ask[0], ask[1]), w.opened, w.stats)
        return KrakenEvent(delay, "ticker", w.wsname, ticker, ts)

    def _book_update(
        self, w: _Walk, rng: random.Random, now: str
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Move the book onto the grid around the walk; at least one level changes."""
        bids, asks = self._grid(w)
        out: tuple[list[list[str]], list[list[str]]] = ([], [])
        for wanted, current, changes in ((asks, w.book.asks(), out[0]),
                                         (bids, w.book.bids(), out[1])):  # fmt: skip
            keep = {w.px(t) for t in wanted}
            changes.extend([lv[0], f"{0:.8f}", now] for lv in current if lv[0] not in keep)
            have = {lv[0] for lv in current}
            changes.extend(self._level(w, t, rng, now) for t in wanted
                           if w.px(t) not in have or rng.random() < 0.05)  # fmt: skip
        if not out[0] and not out[1]:
            t = rng.choice(asks[:3])
            out[0].append(self._level(w, t, rng, now))
        w.book.apply(out[0], out[1])
        return out


__all__ = ["SYNTHETIC_CHANNELS", "KrakenSyntheticSource", "made_up_pair", "pair_of"]
