"""Synthetic OKX market: random-walk prices on many spot instruments, at a steady rate.

Deterministic for a given seed and clock, so a test can replay the same market; the instrument
list comes from the recording so the names and tick sizes are real ones.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from fake_exchange.okx import derivs
from fake_exchange.okx import frames as of
from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.candles import CandleBuilder
from fake_exchange.okx.frame_source import SEQ_START, OkxEvent
from fake_exchange.okx.frames import Payload
from fake_exchange.okx.instruments import inst_id_of
from fake_exchange.okx.recording import load_okx_recording, okx_recording
from fake_exchange.recording import RecordingError
from fake_exchange.sources import Clock


def _bar_of(channel: str) -> str:
    bar = of.candle_channel_bar(channel)
    if bar is None:
        raise ValueError(f"not a candle channel: {channel!r}")
    return bar


@dataclass(slots=True)
class _Walk:
    """Random-walk state of one synthetic instrument; prices in whole ticks."""

    inst_id: str
    tick: Decimal
    mid: float
    book: OkxBook
    trade_id: int = 1
    last_px: Decimal = Decimal(0)
    last_sz: Decimal = Decimal(0)
    open_px: Decimal = Decimal(0)
    high: Decimal = Decimal(0)
    low: Decimal = Decimal(0)
    vol: Decimal = Decimal(0)
    vol_ccy: Decimal = Decimal(0)
    candles: dict[str, CandleBuilder] = field(default_factory=dict)
    swap: derivs.SwapState | None = None

    def px(self, ticks: int) -> str:
        return of.fmt(self.tick * ticks)


SYNTHETIC_CHANNELS = (
    frozenset({"trades", "tickers", "books", "books5", "bbo-tbt"}) | derivs.CHANNELS
)


class OkxSyntheticSource:
    """Random-walk prices on many spot instruments at a steady total rate, in OKX frames.

    Mirrors `fake_exchange.SyntheticSource`: `rate` frames per second in total, round-robin over
    (instrument, channel) pairs, frames due in one `tick` batched; ends after `duration` seconds
    or `total` frames (both None: never). `symbols`: 'BASE/QUOTE' or 'BASE-QUOTE' names, or an
    int n: the first n live USDT spot instruments of the bundled recording, padded with
    `SYM<i>-USDT`; 'BASE/QUOTE:QUOTE' names a linear perpetual (instId 'BASE-QUOTE-SWAP').
    Channels: trades, tickers, books (updates with seqId and checksum), books5, bbo-tbt,
    candle<bar> (the live candle of the trades sent; a closed candle once with confirm "1"),
    and for SWAPs only funding-rate, mark-price, open-interest, liquidation-orders (of
    instType SWAP: one frame carries one or two liquidations), index-tickers (of the SWAP's
    index, its `uly`), moving around the walk
    (`fake_exchange.okx.derivs`). Deterministic for a given seed and clock.
    """

    def __init__(
        self,
        symbols: Sequence[str] | int = 10,
        rate: float = 1000.0,
        duration: float | None = None,
        total: int | None = None,
        channels: Sequence[str] = ("trades", "tickers", "books"),
        seed: int = 0,
        tick: float = 0.005,
        recording_path: Path | None = None,
        depth: int = 25,
    ) -> None:
        bad = {c for c in channels if c not in SYNTHETIC_CHANNELS} - {
            c for c in channels if of.candle_channel_bar(c) is not None
        }
        if bad or not channels:
            raise ValueError(
                f"unsupported channels {sorted(bad)}; use {sorted(SYNTHETIC_CHANNELS)} "
                "or candle<bar>"
            )
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.symbols_spec = symbols
        self.rate = rate
        self.duration = duration
        self.total = total
        self.channels = tuple(channels)
        self.seed = seed
        self.tick = tick
        self.recording_path = recording_path
        self.depth = depth
        self._instruments: dict[str, list[Payload]] | None = None
        self._start: dict[str, tuple[Decimal, float]] = {}
        self._swaps: dict[str, Decimal] = {}
        """instId -> contract value (ctVal) of each SWAP the source trades."""

    def __repr__(self) -> str:
        return (
            f"OkxSyntheticSource({self.symbols_spec!r}, rate={self.rate}, "
            f"duration={self.duration}, total={self.total}, channels={self.channels})"
        )

    @property
    def finite(self) -> bool:
        return self.duration is not None or self.total is not None

    def prepare(self) -> None:
        if self._instruments is not None:
            return
        inst = load_okx_recording(self.recording_path or okx_recording()).instruments
        spot = inst["SPOT"]
        by_id = {e["instId"]: e for e in spot}
        if isinstance(self.symbols_spec, int):
            n = self.symbols_spec
            ids = [e["instId"] for e in spot if e["quoteCcy"] == "USDT" and e["state"] == "live"]
            ids = ids[:n] + [f"SYM{i}-USDT" for i in range(n - len(ids[:n]))]
        else:
            ids = [derivs.swap_inst_id(s) if ":" in s else inst_id_of(s) for s in self.symbols_spec]
        rng = random.Random(self.seed)
        swaps = {e["instId"]: e for e in inst.setdefault("SWAP", [])}
        for inst_id in ids:
            if inst_id.endswith("-SWAP"):
                self._prepare_swap(inst_id, swaps, inst["SWAP"], rng)
                continue
            entry = by_id.get(inst_id)
            if entry is None:
                base, sep, quote = inst_id.partition("-")
                if not sep or not base or not quote:
                    raise ValueError(f"synthetic instrument needs BASE-QUOTE form: {inst_id!r}")
                price = 10 ** rng.uniform(-1, 4)
                tick = Decimal(1).scaleb(math.floor(math.log10(price)) - 4)
                entry = of.instrument_spot(
                    inst_id, base, quote, of.fmt(tick), "0.00000001", "0.00001", 1_600_000_000_000
                )
                spot.append(entry)
                by_id[inst_id] = entry
                self._start[inst_id] = (tick, price / float(tick))
            else:
                self._start[inst_id] = (Decimal(entry["tickSz"]), 10 ** rng.uniform(3.5, 4.5))
        self._instruments = inst

    def _prepare_swap(
        self,
        inst_id: str,
        swaps: dict[str, Payload],
        listed: list[Payload],
        rng: random.Random,
    ) -> None:
        entry = swaps.get(inst_id)
        if entry is None:
            price = 10 ** rng.uniform(-1, 4)
            tick = Decimal(1).scaleb(math.floor(math.log10(price)) - 4)
            entry = derivs.instrument_swap(inst_id, of.fmt(tick), "1", 1_600_000_000_000)
            listed.append(entry)
            swaps[inst_id] = entry
            self._start[inst_id] = (tick, price / float(tick))
        else:
            self._start[inst_id] = (Decimal(entry["tickSz"]), 10 ** rng.uniform(3.5, 4.5))
        self._swaps[inst_id] = Decimal(entry["ctVal"] or "1")

    def instruments(self) -> dict[str, list[Payload]]:
        self.prepare()
        if self._instruments is None:
            raise RecordingError("synthetic instruments not loaded")
        return self._instruments

    def inst_ids(self) -> list[str]:
        self.prepare()
        return list(self._start)

    def books(self) -> dict[str, OkxBook]:
        """`depth` levels a side around each start price, sizes from the seed."""
        self.prepare()
        rng = random.Random(self.seed + 2)
        out: dict[str, OkxBook] = {}
        for inst_id, (tick, mid) in self._start.items():
            w = _Walk(inst_id, tick, mid, OkxBook(inst_id, SEQ_START))
            bids, asks = self._grid(w)
            w.book.apply(
                [self._level(w, t, rng) for t in asks], [self._level(w, t, rng) for t in bids]
            )
            out[inst_id] = w.book
        return out

    def _grid(self, w: _Walk) -> tuple[list[int], list[int]]:
        bid0 = max(math.ceil(w.mid) - 1, self.depth + 1)
        return [bid0 - k for k in range(self.depth)], [bid0 + 1 + k for k in range(self.depth)]

    @staticmethod
    def _level(w: _Walk, ticks: int, rng: random.Random) -> list[str]:
        return [w.px(ticks), f"{rng.uniform(0.01, 20):.4f}", "0", str(rng.randint(1, 12))]

    def events(self, clock: Clock) -> Iterator[OkxEvent]:
        self.prepare()
        rng = random.Random(self.seed + 1)
        books = self.books()
        bars = [_bar_of(c) for c in self.channels if c.startswith("candle")]
        walks = []
        for inst_id, (tick, mid) in self._start.items():
            px = tick * round(mid)
            w = _Walk(inst_id, tick, mid, books[inst_id], last_px=px, open_px=px, high=px, low=px)
            w.candles = {bar: CandleBuilder(bar) for bar in bars}
            if inst_id in self._swaps:
                w.swap = derivs.SwapState(inst_id, self._swaps[inst_id], mark=px)
            walks.append(w)
        pairs = [
            (w, ch) for w in walks for ch in self.channels
            if w.swap is not None or ch not in derivs.CHANNELS
        ]  # fmt: skip
        if not pairs:
            return
        derivs_rng = random.Random(self.seed + 3)  # its own: the other channels' frames unchanged
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
            now_ms = start_ms + round(vt * 1000)
            while k < due:
                w, channel = pairs[k % len(pairs)]
                if w.swap is not None and channel in derivs.CHANNELS:
                    frame = w.swap.frame(channel, w.last_px, w.tick, now_ms, derivs_rng)
                    key = frame["arg"].get("instId") or "SWAP"  # an instType's: keyed by it
                    yield OkxEvent(vt - last_vt, channel, key, frame)
                else:
                    frame = self._frame(w, channel, now_ms, rng)
                    yield OkxEvent(vt - last_vt, channel, w.inst_id, frame)
                last_vt = vt
                k += 1
            if self.total is not None and k >= self.total:
                return
            tick_no += 1

    def _frame(self, w: _Walk, channel: str, now_ms: int, rng: random.Random) -> Payload:
        inst = w.inst_id
        if channel == "trades":
            w.mid = max(w.mid * math.exp(rng.gauss(0.0, 0.0005)), float(self.depth + 2))
            px = w.tick * round(w.mid)
            sz = Decimal(f"{rng.uniform(0.001, 5):.6f}")
            w.last_px, w.last_sz = px, sz
            w.high, w.low = max(w.high, px), min(w.low, px)
            w.vol += sz
            w.vol_ccy += px * sz
            for builder in w.candles.values():
                builder.add_trade(now_ms, px, sz)
            side = "buy" if rng.random() < 0.5 else "sell"
            w.trade_id += 1
            row = of.trade_row(inst, w.trade_id - 1, of.fmt(px), of.fmt(sz), side, now_ms)
            return of.push("trades", inst, [row])
        if channel == "books":
            return of.push("books", inst, [self._book_update(w, now_ms, rng)], "update")
        bid, ask = w.book.best()
        seq = w.book.seq_id
        if channel == "books5":
            return of.push(
                "books5", inst, [of.top_row(inst, w.book.asks(5), w.book.bids(5), now_ms, seq)]
            )
        if channel == "bbo-tbt":
            return of.push(
                "bbo-tbt", inst, [of.bbo_row(w.book.asks(1), w.book.bids(1), now_ms, seq)]
            )
        if channel == "tickers":
            row = of.ticker_row(
                inst,
                last=of.fmt(w.last_px),
                last_sz=of.fmt(w.last_sz),
                ask_px=ask[0] if ask else "",
                ask_sz=ask[1] if ask else "",
                bid_px=bid[0] if bid else "",
                bid_sz=bid[1] if bid else "",
                open24h=of.fmt(w.open_px),
                high24h=of.fmt(w.high),
                low24h=of.fmt(w.low),
                vol_ccy24h=of.fmt(w.vol_ccy),
                vol24h=of.fmt(w.vol),
                ts_ms=now_ms,
                inst_type="SPOT" if w.swap is None else "SWAP",
            )
            return of.push("tickers", inst, [row])
        builder = w.candles[_bar_of(channel)]
        return of.push(channel, inst, [builder.take(now_ms, w.last_px)])

    def _book_update(self, w: _Walk, now_ms: int, rng: random.Random) -> Payload:
        """Move the book onto the grid around the walk's mid; at least one level changes."""
        bids, asks = self._grid(w)
        asks_new: list[list[str]] = []
        bids_new: list[list[str]] = []
        for wanted, current, out in (
            (bids, w.book.bids(), bids_new),
            (asks, w.book.asks(), asks_new),
        ):
            keep = {w.px(t) for t in wanted}
            out.extend([lv[0], "0", "0", "0"] for lv in current if lv[0] not in keep)
            have = {lv[0] for lv in current}
            for t in wanted:
                if w.px(t) not in have or rng.random() < 0.05:
                    out.append(self._level(w, t, rng))
        if not asks_new and not bids_new:
            t = rng.choice(bids + asks)
            (bids_new if t in bids else asks_new).append(self._level(w, t, rng))
        prev = w.book.seq_id
        w.book.apply(asks_new, bids_new)
        w.book.seq_id, w.book.ts_ms = prev + 1, now_ms
        return of.book_row(
            asks_new,
            bids_new,
            now_ms,
            checksum=w.book.checksum(),
            seq_id=prev + 1,
            prev_seq_id=prev,
        )


__all__ = ["SYNTHETIC_CHANNELS", "OkxSyntheticSource"]
