"""Frame sources: pure generators of (delay, stream, payload) events, no sockets.

A source also says what REST serves for it (exchangeInfo, depth snapshots). Time enters only
through the `clock` passed to `events()`, so tests drive a source with a fake clock and count
events over virtual time (the sum of delays) instead of sleeping.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fake_exchange import binance_frames as bf
from fake_exchange.binance_frames import Payload
from fake_exchange.derive import TickerDeriver
from fake_exchange.recording import (
    RecordedFrame,
    Recording,
    RecordingError,
    bundled_recording,
    load_exchange_info,
    load_recording,
)

Clock = Callable[[], int]
"""Returns the current exchange time in epoch milliseconds."""

SYNTHETIC_CHANNELS = frozenset({"aggTrade", "trade", "ticker", "miniTicker", "bookTicker"})


@dataclass(frozen=True, slots=True)
class Event:
    """Wait `delay` seconds after the previous event, then publish `payload` on `stream`."""

    delay: float
    stream: str
    payload: Payload


class FrameSource(Protocol):
    """What the server needs from a source of market data."""

    @property
    def finite(self) -> bool:
        """False when events() never ends (looping replay, synthetic without limits)."""
        ...

    def prepare(self) -> None:
        """Load files; idempotent. The server calls it in a thread before serving."""
        ...

    def exchange_info(self) -> Payload:
        """The exchangeInfo body to serve (every symbol the source may publish is in it)."""
        ...

    def snapshots(self) -> dict[str, Payload]:
        """Initial depth snapshots by symbol id (`lastUpdateId`, `bids`, `asks`)."""
        ...

    def events(self, clock: Clock) -> Iterator[Event]:
        """The event stream; exchange timestamps are derived from `clock`."""
        ...


def unified_symbols(exchange_info: Payload) -> dict[str, str]:
    """Symbol id -> unified 'BASE/QUOTE' for every exchangeInfo entry."""
    return {s["symbol"]: f"{s['baseAsset']}/{s['quoteAsset']}" for s in exchange_info["symbols"]}


def _add_symbol(exchange_info: Payload, unified: str, template: Payload | None = None) -> str:
    """Make sure `unified` ('BASE/QUOTE') is in exchangeInfo; returns its id."""
    base, sep, quote = unified.partition("/")
    if not sep:
        raise ValueError(f"synthetic symbol needs BASE/QUOTE form: {unified!r}")
    sym_id = bf.symbol_id(unified)
    if not any(s["symbol"] == sym_id for s in exchange_info["symbols"]):
        entry = dict(template) if template else bf.exchange_info_symbol(sym_id, base, quote)
        entry.update(symbol=sym_id, baseAsset=base, quoteAsset=quote, status="TRADING")
        exchange_info["symbols"].append(entry)
    return sym_id


def _fast(speed: float) -> bool:
    return speed <= 0 or math.isinf(speed)


def _fixed(now_ms: int) -> Callable[[float], int]:
    """Time map of the as-fast-as-possible mode: every timestamp becomes the clock's now."""
    return lambda _ms: now_ms


def _scaled(base_ms: float, first_ms: float, speed: float) -> Callable[[float], int]:
    """Time map of a timed pass: recorded ms -> now-based ms, gaps divided by speed."""
    return lambda ms: int(base_ms + (ms - first_ms) / speed)


# --------------------------------------------------------------------------- replay


@dataclass(slots=True)
class _Spans:
    """Per-symbol id ranges of one pass over the recording; loop k adds k * span."""

    agg: dict[str, int] = field(default_factory=dict)
    trade: dict[str, int] = field(default_factory=dict)
    update: dict[str, int] = field(default_factory=dict)


def _span(values: list[tuple[int, int]]) -> int:
    return max(hi for _, hi in values) - min(lo for lo, _ in values) + 1


def _compute_spans(frames: list[RecordedFrame]) -> _Spans:
    agg: dict[str, list[tuple[int, int]]] = {}
    trades: dict[str, list[tuple[int, int]]] = {}
    kline_trades: dict[str, list[tuple[int, int]]] = {}
    depth: dict[str, list[tuple[int, int]]] = {}
    book: dict[str, list[tuple[int, int]]] = {}
    for f in frames:
        d, channel = f.data, f.stream.partition("@")[2]
        sym = d.get("s", "")
        if channel == "aggTrade":
            agg.setdefault(sym, []).append((d["a"], d["a"]))
            trades.setdefault(sym, []).append((d["f"], d["l"]))
        elif channel.startswith("kline") and d["k"]["f"] >= 0:
            kline_trades.setdefault(sym, []).append((d["k"]["f"], d["k"]["L"]))
        elif channel.startswith("depth"):
            depth.setdefault(sym, []).append((d["U"], d["u"]))
        elif channel == "bookTicker":
            book.setdefault(sym, []).append((d["u"], d["u"]))
    spans = _Spans()
    spans.agg = {s: _span(v) for s, v in agg.items()}
    spans.trade = {s: _span(v) for s, v in (kline_trades | trades).items()}
    spans.update = {s: _span(v) for s, v in (book | depth).items()}
    return spans


class ReplaySource:
    """Replays a recording with its relative timing, timestamps shifted to now.

    `speed` divides the recorded gaps (0 or inf: as fast as possible). With `loop`, each pass
    starts `loop_gap` recorded seconds after the previous one ended; timestamps keep increasing
    and every id (aggTrade a/f/l, depth U/u, bookTicker u, kline f/L) is shifted by the
    per-symbol span of one pass, so ids stay unique and depth updates stay consecutive.
    `symbols_map` renames symbols ({'NKN/USDT': 'BTC/USDT'} or ids); missing targets are
    added to exchangeInfo as copies of the source symbol.
    """

    def __init__(
        self,
        path: Path | str,
        speed: float = 1.0,
        loop: bool = False,
        symbols_map: Mapping[str, str] | None = None,
        loop_gap: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.speed = speed
        self.loop = loop
        self.loop_gap = loop_gap
        self.symbols_map = dict(symbols_map or {})
        self._rec: Recording | None = None
        self._spans = _Spans()

    def __repr__(self) -> str:
        return f"ReplaySource({str(self.path)!r}, speed={self.speed}, loop={self.loop})"

    @property
    def finite(self) -> bool:
        return not self.loop

    def prepare(self) -> None:
        _ = self.recording

    @property
    def recording(self) -> Recording:
        """The parsed (and renamed) recording, loaded on first use."""
        if self._rec is None:
            rec = load_recording(self.path)
            if self.symbols_map:
                rec = _rename(rec, self.symbols_map)
            self._spans = _compute_spans(rec.frames)
            self._rec = rec
        return self._rec

    def exchange_info(self) -> Payload:
        return self.recording.exchange_info

    def snapshots(self) -> dict[str, Payload]:
        return self.recording.snapshots

    def symbols(self) -> list[str]:
        """Ids of the symbols that have frames in the recording."""
        return sorted({f.data["s"] for f in self.recording.frames if "s" in f.data})

    def events(self, clock: Clock) -> Iterator[Event]:
        frames = self.recording.frames
        if not frames:
            return
        fast = _fast(self.speed)
        speed = 1.0 if fast else self.speed
        first_ms = frames[0].ts * 1000
        pass_ms = (frames[-1].ts - frames[0].ts + self.loop_gap) * 1000
        start_ms = clock()
        deriver = TickerDeriver()
        for sym_id, snap in self.recording.snapshots.items():
            if snap.get("bids") and snap.get("asks"):
                deriver.seed_book(sym_id, *snap["bids"][0], *snap["asks"][0])
        prev_ts: float | None = None
        pass_no = 0
        while True:
            base_ms = start_ms + pass_no * pass_ms / speed
            for i, f in enumerate(frames):
                if fast or prev_ts is None:
                    delay = 0.0
                elif i == 0:
                    delay = self.loop_gap / speed
                else:
                    delay = (f.ts - prev_ts) / speed
                prev_ts = f.ts
                tmap = _fixed(clock()) if fast else _scaled(base_ms, first_ms, speed)
                payload, extra = self._transform(f, pass_no, tmap, deriver)
                yield Event(delay, f.stream, payload)
                for stream, p in extra:
                    yield Event(0.0, stream, p)
            if not self.loop:
                return
            pass_no += 1

    def _transform(
        self,
        f: RecordedFrame,
        pass_no: int,
        tmap: Callable[[float], int],
        deriver: TickerDeriver,
    ) -> tuple[Payload, list[tuple[str, Payload]]]:
        """Copy a recorded frame with shifted times and ids; derive ticker/trade frames."""
        d = dict(f.data)
        channel = f.stream.partition("@")[2]
        sym = d.get("s", "")
        extra: list[tuple[str, Payload]] = []
        sp = self._spans
        if "E" in d:
            d["E"] = tmap(d["E"])
        if channel == "aggTrade":
            d["a"] += pass_no * sp.agg.get(sym, 0)
            d["f"] += pass_no * sp.trade.get(sym, 0)
            d["l"] += pass_no * sp.trade.get(sym, 0)
            d["T"] = tmap(d["T"])
            deriver.observe_agg_trade(d)
            extra.append((bf.stream_name(sym, "trade"), deriver.trade_from_agg(d)))
            extra.extend(deriver.tickers(sym, d["E"]))
        elif channel == "bookTicker":
            d["u"] += pass_no * sp.update.get(sym, 0)
            deriver.observe_book_ticker(d)
            extra.extend(deriver.tickers(sym, tmap(f.ts * 1000)))
        elif channel.startswith("depth"):
            d["U"] += pass_no * sp.update.get(sym, 0)
            d["u"] += pass_no * sp.update.get(sym, 0)
        elif channel.startswith("kline"):
            k = dict(d["k"])
            shift = d["E"] - f.data["E"]
            k["t"] += shift
            k["T"] += shift
            if k["f"] >= 0:
                k["f"] += pass_no * sp.trade.get(sym, 0)
                k["L"] += pass_no * sp.trade.get(sym, 0)
            d["k"] = k
            deriver.observe_kline(d)
        return d, extra


def _rename(rec: Recording, symbols_map: Mapping[str, str]) -> Recording:
    """Apply a symbol rename to frames, snapshots and exchangeInfo."""
    info = rec.exchange_info
    by_id = {s["symbol"]: s for s in info["symbols"]}
    ids: dict[str, str] = {}
    for src, dst in symbols_map.items():
        src_id = bf.symbol_id(src)
        if src_id not in by_id:
            raise RecordingError(f"symbols_map: {src!r} is not in the recording's exchangeInfo")
        if "/" in dst:
            dst_id = _add_symbol(info, dst, by_id[src_id])
        elif bf.symbol_id(dst) in by_id:
            dst_id = bf.symbol_id(dst)
        else:
            raise ValueError(f"symbols_map: give new symbols as BASE/QUOTE, not {dst!r}")
        ids[src_id] = dst_id
    frames = []
    for f in rec.frames:
        sym, channel = bf.split_stream(f.stream)
        if sym not in ids:
            frames.append(f)
            continue
        new = ids[sym]
        data = dict(f.data, s=new)
        if "k" in data:
            data["k"] = dict(data["k"], s=new)
        frames.append(RecordedFrame(f.ts, bf.stream_name(new, channel), data))
    snapshots = {ids.get(k, k): v for k, v in rec.snapshots.items()}
    return Recording(info, snapshots, frames)


# --------------------------------------------------------------------------- synthetic


@dataclass(slots=True)
class _Walk:
    """Random-walk state of one synthetic symbol."""

    sym_id: str
    price: float
    agg_id: int = 1
    trade_id: int = 1
    raw_trade_id: int = 1
    update_id: int = 1


class SyntheticSource:
    """Random-walk prices on many symbols at a steady total rate, in real Binance frames.

    `rate` frames per second in total, round-robin over (symbol, channel) pairs; frames due in
    the same `tick` (default 5 ms) are batched (first has the delay, the rest 0), so 10k/s is
    200 sleeps a second, not 10k. Ends after `duration` seconds or `total` frames (both None:
    never). `symbols` is a list of 'BASE/QUOTE' or an int n: the first n TRADING USDT symbols
    of the bundled exchangeInfo, padded with SYM<i>/USDT; unknown symbols are added to the
    exchangeInfo the fake serves.
    """

    def __init__(
        self,
        symbols: Sequence[str] | int = 10,
        rate: float = 1000.0,
        duration: float | None = None,
        total: int | None = None,
        channels: Sequence[str] = ("aggTrade", "ticker"),
        seed: int = 0,
        tick: float = 0.005,
        exchange_info_path: Path | None = None,
    ) -> None:
        bad = set(channels) - SYNTHETIC_CHANNELS
        if bad or not channels:
            raise ValueError(
                f"unsupported channels {sorted(bad)}; use {sorted(SYNTHETIC_CHANNELS)}"
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
        self.exchange_info_path = exchange_info_path
        self._info: Payload | None = None
        self._ids: list[str] = []
        self._start_prices: dict[str, float] = {}

    def __repr__(self) -> str:
        return (
            f"SyntheticSource({self.symbols_spec!r}, rate={self.rate}, "
            f"duration={self.duration}, total={self.total}, channels={self.channels})"
        )

    @property
    def finite(self) -> bool:
        return self.duration is not None or self.total is not None

    def prepare(self) -> None:
        _ = self.exchange_info()

    def exchange_info(self) -> Payload:
        if self._info is not None:
            return self._info
        info = load_exchange_info(self.exchange_info_path or bundled_recording())
        if isinstance(self.symbols_spec, int):
            n = self.symbols_spec
            ids = [
                s["symbol"]
                for s in info["symbols"]
                if s["quoteAsset"] == "USDT" and s["status"] == "TRADING"
            ][:n]
            ids += [_add_symbol(info, f"SYM{i}/USDT") for i in range(n - len(ids))]
        else:
            ids = [_add_symbol(info, s) for s in self.symbols_spec]
        rng = random.Random(self.seed)
        self._start_prices = {i: round(10 ** rng.uniform(-1, 4), 4) for i in ids}
        self._ids = ids
        self._info = info
        return info

    def symbols(self) -> list[str]:
        """Ids of the symbols this source publishes."""
        self.prepare()
        return list(self._ids)

    def snapshots(self) -> dict[str, Payload]:
        """Five levels a side around each start price."""
        self.prepare()
        out: dict[str, Payload] = {}
        for sym_id, price in self._start_prices.items():
            step = price * 0.0005
            out[sym_id] = {
                "lastUpdateId": 0,
                "bids": [[f"{price - step * i:.8f}", "1.00000000"] for i in range(1, 6)],
                "asks": [[f"{price + step * i:.8f}", "1.00000000"] for i in range(1, 6)],
            }
        return out

    def events(self, clock: Clock) -> Iterator[Event]:
        self.prepare()
        rng = random.Random(self.seed + 1)
        walks = [_Walk(i, self._start_prices[i]) for i in self._ids]
        deriver = TickerDeriver()
        for w in walks:
            deriver.seed_book(w.sym_id, *_quote(w.price))
        pairs = [(w, ch) for w in walks for ch in self.channels]
        tick = max(1.0 / self.rate, self.tick)
        start_ms = clock()
        k = 0
        tick_no = 0
        last_vt = 0.0
        while True:
            vt = tick_no * tick
            if self.duration is not None and vt >= self.duration:
                return
            end = vt + tick if self.duration is None else min(vt + tick, self.duration)
            due = math.ceil(self.rate * end - 1e-9)
            if self.total is not None:
                due = min(due, self.total)
            now_ms = start_ms + round(vt * 1000)
            while k < due:
                w, channel = pairs[k % len(pairs)]
                stream, payload = self._frame(w, channel, now_ms, rng, deriver)
                yield Event(vt - last_vt, stream, payload)
                last_vt = vt
                k += 1
            if self.total is not None and k >= self.total:
                return
            tick_no += 1

    @staticmethod
    def _frame(
        w: _Walk, channel: str, now_ms: int, rng: random.Random, deriver: TickerDeriver
    ) -> tuple[str, Payload]:
        stream = bf.stream_name(w.sym_id, channel)
        if channel in ("aggTrade", "trade"):
            w.price = max(w.price * math.exp(rng.gauss(0.0, 0.0005)), 1e-6)
            price, qty = f"{w.price:.8f}", f"{rng.uniform(0.001, 5):.8f}"
            maker = rng.random() < 0.5
            if channel == "trade":
                w.raw_trade_id += 1
                return stream, bf.trade(
                    w.sym_id, w.raw_trade_id - 1, price, qty, now_ms, now_ms, maker
                )
            frame = bf.agg_trade(
                w.sym_id, w.agg_id, price, qty, w.trade_id, w.trade_id, now_ms, now_ms, maker
            )
            w.agg_id += 1
            w.trade_id += 1
            deriver.observe_agg_trade(frame)
            deriver.seed_book(w.sym_id, *_quote(w.price))
            return stream, frame
        if channel == "bookTicker":
            w.update_id += 1
            return stream, bf.book_ticker(w.sym_id, w.update_id - 1, *_quote(w.price))
        full = deriver.ticker(w.sym_id, now_ms)
        if channel == "ticker":
            return stream, full
        return stream, bf.mini_ticker(w.sym_id, now_ms, full)


def _quote(price: float) -> tuple[str, str, str, str]:
    """Bid, bid qty, ask, ask qty around a synthetic price."""
    half = price * 0.0001
    return f"{price - half:.8f}", "1.00000000", f"{price + half:.8f}", "1.00000000"


__all__ = [
    "Clock",
    "Event",
    "FrameSource",
    "ReplaySource",
    "SyntheticSource",
    "bundled_recording",
    "unified_symbols",
]
