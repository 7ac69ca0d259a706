"""Frame sources: pure generators of (delay, stream, payload) events, no sockets.

A source also says what REST serves for it (exchangeInfo, depth snapshots). Time enters only
through the `clock` passed to `events()`, so tests drive a source with a fake clock and count
events over virtual time (the sum of delays) instead of sleeping. The server also passes an
`interest` callback (is anyone reading this stream?) so a source can skip frames nobody reads
(synthetic klines and depth), which keeps load tests cheap.

Both sources speak Binance spot or USD-M futures (`venue`): a replay is whatever its recording
holds; a synthetic source is told (`SyntheticSource(..., venue=USDM)`), and then also moves
mark prices, funding rates, open interest and makes liquidations.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from fake_exchange import binance_frames as bf
from fake_exchange import usdm, usdm_synthetic
from fake_exchange.binance_frames import SPOT, Payload, Venue
from fake_exchange.derive import INTERVAL_MS, CandleBook, TickerDeriver, kline_frame
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

Interest = Callable[[str], bool]
"""Whether a stream has a reader now (a websocket subscriber, or its book polled over REST)."""


def nobody(stream: str) -> bool:
    """The interest of a source played without a server: no optional frames."""
    return False


SYNTHETIC_CHANNELS = frozenset({"aggTrade", "trade", "ticker", "miniTicker", "bookTicker"})
USDM_CHANNELS = frozenset({"markPrice@1s", "forceOrder"})
"""Round-robin channels only a USD-M synthetic source has."""
USDM_DEFAULT_CHANNELS = ("aggTrade", "ticker", "markPrice@1s", "forceOrder")
"""What `marketbus fake-exchange --exchange binanceusdm --synthetic N` sends."""


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

    @property
    def venue(self) -> Venue:
        """Spot or USD-M: the API the server speaks for this source (after `prepare`)."""
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

    def open_interest(self) -> dict[str, str]:
        """USD-M: open interest (contracts) by symbol id before the first event reports any
        (REST answers it from the start); empty: none known."""
        ...

    @property
    def kline_intervals(self) -> tuple[str, ...]:
        """Intervals whose klines the source builds from its own trades (REST builds the
        same candles from the trades it saw); empty: klines, if any, come as recorded frames."""
        ...

    def events(self, clock: Clock, interest: Interest = nobody) -> Iterator[Event]:
        """The event stream; exchange timestamps are derived from `clock`; frames of optional
        streams only while `interest(stream)`."""
        ...


def unified_symbols(exchange_info: Payload) -> dict[str, str]:
    """Symbol id -> CCXT's unified symbol for every exchangeInfo entry ('BASE/QUOTE' for spot,
    'BASE/QUOTE:SETTLE' for a USD-M perpetual)."""
    return {s["symbol"]: usdm.unified_symbol(s) for s in exchange_info["symbols"]}


def _add_symbol(
    exchange_info: Payload, unified: str, template: Payload | None = None, venue: Venue = SPOT
) -> str:
    """Make sure `unified` ('BASE/QUOTE', for USD-M also 'BASE/QUOTE:QUOTE') is in
    exchangeInfo; returns its id."""
    pair, _, settle = unified.partition(":")
    base, sep, quote = pair.partition("/")
    if not sep or (settle and (not venue.futures or settle != quote)):
        form = "BASE/QUOTE or BASE/QUOTE:QUOTE" if venue.futures else "BASE/QUOTE"
        raise ValueError(f"synthetic symbol needs {form} form: {unified!r}")
    sym_id = bf.symbol_id(unified)
    if not any(s["symbol"] == sym_id for s in exchange_info["symbols"]):
        if template:
            entry = dict(template)
        elif venue.futures:
            entry = usdm.exchange_info_symbol(sym_id, base, quote)
        else:
            entry = bf.exchange_info_symbol(sym_id, base, quote)
        entry.update(symbol=sym_id, baseAsset=base, quoteAsset=quote, status="TRADING")
        if "pair" in entry:
            entry.update(pair=sym_id, marginAsset=quote)
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
            # USD-M diffs chain by pu (the ids between are other symbols'): from pu + 1 on,
            # so pass k + 1's first pu is pass k's last u
            depth.setdefault(sym, []).append((d["pu"] + 1 if "pu" in d else d["U"], d["u"]))
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
    and every id (aggTrade a/f/l, depth U/u (and USD-M's pu), bookTicker u, kline f/L) is
    shifted by the per-symbol span of one pass, so ids stay unique and depth updates stay
    chained (spot: U = previous u + 1; USD-M: pu = previous u). `symbols_map` renames symbols
    ({'NKN/USDT': 'BTC/USDT'} or ids); missing targets are added to exchangeInfo as copies of
    the source symbol. Spot or USD-M: what the recording holds (`venue`).
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

    @property
    def venue(self) -> Venue:
        return self.recording.venue

    @property
    def kline_intervals(self) -> tuple[str, ...]:
        return ()

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

    def open_interest(self) -> dict[str, str]:
        return {}  # Binance streams none: a recording holds none

    def symbols(self) -> list[str]:
        """Ids of the symbols that have frames in the recording."""
        return sorted({f.data["s"] for f in self.recording.frames if "s" in f.data})

    def events(self, clock: Clock, interest: Interest = nobody) -> Iterator[Event]:
        """Every recorded frame (and the derived ones) whatever the interest."""
        frames = self.recording.frames
        if not frames:
            return
        fast = _fast(self.speed)
        speed = 1.0 if fast else self.speed
        first_ms = frames[0].ts * 1000
        pass_ms = (frames[-1].ts - frames[0].ts + self.loop_gap) * 1000
        start_ms = clock()
        deriver = TickerDeriver(futures=self.recording.venue.futures)
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
            if "T" in d:  # USD-M: the transaction time
                d["T"] = tmap(d["T"])
            deriver.observe_book_ticker(d)
            extra.extend(deriver.tickers(sym, tmap(f.ts * 1000)))
        elif channel.startswith("depth"):
            d["U"] += pass_no * sp.update.get(sym, 0)
            d["u"] += pass_no * sp.update.get(sym, 0)
            if "pu" in d:  # USD-M: the previous diff's u, and a transaction time
                d["pu"] += pass_no * sp.update.get(sym, 0)
                d["T"] = tmap(d["T"])
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
            dst_id = _add_symbol(info, dst, by_id[src_id], rec.venue)
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
    return Recording(info, snapshots, frames, rec.venue)


# --------------------------------------------------------------------------- synthetic

TRADE_CHANNELS = ("aggTrade", "trade")


@dataclass(slots=True)
class _Walk:
    """Random-walk state of one synthetic symbol."""

    sym_id: str
    price: float
    agg_id: int = 1
    trade_id: int = 1
    update_id: int = 1
    last_agg: Payload | None = None
    depth_id: int = 0
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)
    streams: dict[str, str] = field(default_factory=dict)
    deriv: usdm_synthetic.DerivState | None = None


def _book_prices(price: float, levels: int) -> tuple[list[str], list[str]]:
    """Bid and ask level prices around `price`; the best ones are `_quote(price)`'s."""
    half, step = price * 0.0001, price * 0.0005
    bids = [f"{price - half - step * i:.8f}" for i in range(levels)]
    asks = [f"{price + half + step * i:.8f}" for i in range(levels)]
    return bids, asks


def _side_diff(old: dict[str, str], new: dict[str, str]) -> list[list[str]]:
    """Levels that changed: removed ones with qty 0, new or resized ones with their qty."""
    gone = [[p, "0.00000000"] for p in old if p not in new]
    return gone + [[p, q] for p, q in new.items() if old.get(p) != q]


class SyntheticSource:
    """Random-walk prices on many symbols at a steady total rate, in real Binance frames.

    `rate` frames per second in total, round-robin over (symbol, channel) pairs; frames due in
    the same `tick` (default 5 ms) are batched (first has the delay, the rest 0), so 10k/s is
    200 sleeps a second, not 10k. Ends after `duration` seconds or `total` frames (both None:
    never). `symbols` is a list of 'BASE/QUOTE' or an int n: the first n TRADING USDT symbols
    of the bundled exchangeInfo, padded with SYM<i>/USDT; unknown symbols are added to the
    exchangeInfo the fake serves.

    One trade is one walk step: with both `aggTrade` and `trade` channels, the first of them in
    `channels` makes a new trade and the other shows that same trade (same id, price, qty,
    time). On top of the round-robin, and only for streams with `interest` (not counted in
    `rate`/`total`): `kline_<i>` frames for `kline_intervals`, built from exactly the trades
    sent (an update every `kline_update` s when the candle changed, for intervals longer than
    that, and a closing frame with x=true when an interval ends), and `depth@100ms` diffs every
    `depth_interval` s moving the book (`depth_levels` a side) to the current price.

    `venue=USDM`: USD-M futures frames (`symbols`: 'BASE/QUOTE' or 'BASE/QUOTE:QUOTE', an int n
    takes USDT perpetuals), depth diffs chained by `pu` with ids that skip (other symbols'
    updates come between, as on Binance), and two more round-robin channels,
    `markPrice@1s` and `forceOrder` (`fake_exchange.usdm_synthetic`).
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
        *,
        kline_intervals: Sequence[str] = ("1s", "1m"),
        kline_update: float = 1.0,
        depth_interval: float = 0.1,
        depth_levels: int = 10,
        venue: Venue = SPOT,
    ) -> None:
        allowed = SYNTHETIC_CHANNELS | (USDM_CHANNELS if venue.futures else frozenset())
        bad = set(channels) - allowed
        if bad or not channels:
            raise ValueError(f"unsupported channels {sorted(bad)}; use {sorted(allowed)}")
        if rate <= 0:
            raise ValueError("rate must be > 0")
        CandleBook(kline_intervals)  # validates the intervals
        if kline_update <= 0 or depth_interval <= 0 or depth_levels < 1:
            raise ValueError("kline_update, depth_interval and depth_levels must be > 0")
        self.symbols_spec = symbols
        self.rate = rate
        self.duration = duration
        self.total = total
        self.channels = tuple(channels)
        self.seed = seed
        self.tick = tick
        self.exchange_info_path = exchange_info_path
        self._kline_intervals = tuple(kline_intervals)
        self.kline_update = kline_update
        self.depth_interval = depth_interval
        self.depth_levels = depth_levels
        self._venue = venue
        self._info: Payload | None = None
        self._ids: list[str] = []
        self._start_prices: dict[str, float] = {}
        self._start_oi: dict[str, str] = {}

    def __repr__(self) -> str:
        return (
            f"SyntheticSource({self.symbols_spec!r}, rate={self.rate}, "
            f"duration={self.duration}, total={self.total}, channels={self.channels})"
        )

    @property
    def finite(self) -> bool:
        return self.duration is not None or self.total is not None

    @property
    def venue(self) -> Venue:
        return self._venue

    @property
    def kline_intervals(self) -> tuple[str, ...]:
        return self._kline_intervals

    def prepare(self) -> None:
        _ = self.exchange_info()

    def exchange_info(self) -> Payload:
        if self._info is not None:
            return self._info
        venue = self._venue
        info = load_exchange_info(self.exchange_info_path or bundled_recording(venue))
        if isinstance(self.symbols_spec, int):
            n = self.symbols_spec
            ids = [
                s["symbol"]
                for s in info["symbols"]
                if s["quoteAsset"] == "USDT"
                and s["status"] == "TRADING"
                and s.get("contractType", "PERPETUAL") == "PERPETUAL"
            ][:n]
            ids += [_add_symbol(info, f"SYM{i}/USDT", None, venue) for i in range(n - len(ids))]
        else:
            ids = [_add_symbol(info, s, None, venue) for s in self.symbols_spec]
        rng = random.Random(self.seed)
        self._start_prices = {i: round(10 ** rng.uniform(-1, 4), 4) for i in ids}
        if venue.futures:
            self._start_oi = {
                i: usdm_synthetic.start_open_interest(p, rng) for i, p in self._start_prices.items()
            }
        self._ids = ids
        self._info = info
        return info

    def symbols(self) -> list[str]:
        """Ids of the symbols this source publishes."""
        self.prepare()
        return list(self._ids)

    def start_prices(self) -> dict[str, float]:
        """Symbol id -> the price its walk starts from (seeded)."""
        self.prepare()
        return dict(self._start_prices)

    def open_interest(self) -> dict[str, str]:
        """USD-M: each symbol's open interest before its first mark price frame (seeded)."""
        self.prepare()
        return dict(self._start_oi)

    def snapshots(self) -> dict[str, Payload]:
        """`depth_levels` levels a side around each start price, qty 1, `lastUpdateId` 0."""
        self.prepare()
        out: dict[str, Payload] = {}
        for sym_id, price in self._start_prices.items():
            bids, asks = _book_prices(price, self.depth_levels)
            out[sym_id] = {
                "lastUpdateId": 0,
                "bids": [[p, "1.00000000"] for p in bids],
                "asks": [[p, "1.00000000"] for p in asks],
            }
        return out

    def events(self, clock: Clock, interest: Interest = nobody) -> Iterator[Event]:
        self.prepare()
        rng = random.Random(self.seed + 1)
        gen = _Generator(self, clock(), interest)
        pairs = [(w, ch) for w in gen.walks for ch in self.channels]
        tick = max(1.0 / self.rate, self.tick)
        k = 0
        tick_no = 0
        last_vt = 0.0
        while True:
            vt = tick_no * tick
            if self.duration is not None and vt >= self.duration:
                return
            now_ms = gen.start_ms + round(vt * 1000)
            for stream, payload in gen.timed(vt, now_ms):
                yield Event(vt - last_vt, stream, payload)
                last_vt = vt
            end = vt + tick if self.duration is None else min(vt + tick, self.duration)
            due = math.ceil(self.rate * end - 1e-9)
            if self.total is not None:
                due = min(due, self.total)
            while k < due:
                w, channel = pairs[k % len(pairs)]
                yield Event(vt - last_vt, w.streams[channel], gen.frame(w, channel, now_ms, rng))
                last_vt = vt
                k += 1
                yield from gen.drain()  # what goes with that frame (USD-M: open interest)
            if self.total is not None and k >= self.total:
                return
            tick_no += 1


class _Generator:
    """The mutable state of one `SyntheticSource.events()` run."""

    def __init__(self, src: SyntheticSource, start_ms: int, interest: Interest) -> None:
        self.src = src
        self.start_ms = start_ms
        self.interest = interest
        self.lead = next((c for c in src.channels if c in TRADE_CHANNELS), None)
        self.futures = src.venue.futures
        self.deriver = TickerDeriver(futures=self.futures)
        self.candles = CandleBook(src.kline_intervals)
        self.depth_rng = random.Random(src.seed + 2)  # depth never perturbs the trades
        self.pending: list[tuple[str, Payload]] = []
        snaps = src.snapshots()
        self.walks: list[_Walk] = []
        for sym_id, price in src.start_prices().items():
            w = _Walk(sym_id, price)
            w.bids = {p: q for p, q in snaps[sym_id]["bids"]}
            w.asks = {p: q for p, q in snaps[sym_id]["asks"]}
            channels = [*src.channels, "depth@100ms"]
            channels += [f"kline_{i}" for i in src.kline_intervals]
            if self.futures:
                channels.append(usdm.OPEN_INTEREST)
                oi = float(src.open_interest()[sym_id])
                w.deriv = usdm_synthetic.DerivState(sym_id, open_interest=oi)
            w.streams = {c: bf.stream_name(sym_id, c) for c in channels}
            self.deriver.seed_book(sym_id, *_quote(w.price))
            self.walks.append(w)
        self.intervals = [(i, INTERVAL_MS[i]) for i in src.kline_intervals]
        self.next_close = {i: start_ms - start_ms % ms + ms for i, ms in self.intervals}
        self.pushed: dict[str, tuple[int, int]] = {}
        self.next_push = src.kline_update
        self.next_depth = 0.0

    def drain(self) -> Iterator[Event]:
        """The events queued to go right after the last one, in order."""
        pending, self.pending = self.pending, []
        for stream, payload in pending:
            yield Event(0.0, stream, payload)

    # ---------------------------------------------------------------- round-robin frames

    def frame(self, w: _Walk, channel: str, now_ms: int, rng: random.Random) -> Payload:
        fut = self.futures
        if channel in TRADE_CHANNELS:
            agg = w.last_agg
            if channel == self.lead or agg is None:
                agg = self._trade(w, now_ms, rng)
            if channel == "aggTrade":
                return agg
            return bf.trade(
                w.sym_id, agg["f"], agg["p"], agg["q"], agg["T"], now_ms, agg["m"], futures=fut
            )
        if channel == "bookTicker":
            w.update_id += 1
            event_ms = now_ms if fut else None
            return bf.book_ticker(w.sym_id, w.update_id - 1, *_quote(w.price), event_ms=event_ms)
        if w.deriv is not None and channel == "markPrice@1s":
            mark, oi = usdm_synthetic.mark_frame(w.deriv, w.price, now_ms, rng)
            self.pending.append((w.streams[usdm.OPEN_INTEREST], oi))
            return mark
        if w.deriv is not None and channel == "forceOrder":
            return usdm_synthetic.liquidation(w.deriv, w.price, now_ms, rng)
        full = self.deriver.ticker(w.sym_id, now_ms)
        if channel == "ticker":
            return full
        return bf.mini_ticker(w.sym_id, now_ms, full)

    def _trade(self, w: _Walk, now_ms: int, rng: random.Random) -> Payload:
        """One walk step: a new trade (its aggTrade frame), counted in ticker and candles."""
        w.price = max(w.price * math.exp(rng.gauss(0.0, 0.0005)), 1e-6)
        price, qty = f"{w.price:.8f}", f"{rng.uniform(0.001, 5):.8f}"
        maker = rng.random() < 0.5
        tid = w.trade_id
        agg = bf.agg_trade(
            w.sym_id, w.agg_id, price, qty, tid, tid, now_ms, now_ms, maker, futures=self.futures
        )
        w.agg_id += 1
        w.trade_id += 1
        w.last_agg = agg
        self.deriver.observe_agg_trade(agg)
        self.deriver.seed_book(w.sym_id, *_quote(w.price))
        self.candles.add_trade(w.sym_id, tid, tid, now_ms, price, qty, maker)
        return agg

    # ---------------------------------------------------------------- time-driven frames

    def timed(self, vt: float, now_ms: int) -> list[tuple[str, Payload]]:
        """Kline closes and updates, depth diffs due at this tick (for streams with readers)."""
        out: list[tuple[str, Payload]] = []
        for interval, ms in self.intervals:
            if now_ms >= self.next_close[interval]:
                self._close(interval, ms, now_ms, out)
        if vt >= self.next_push:
            while self.next_push <= vt:
                self.next_push += self.src.kline_update
            for interval, ms in self.intervals:
                if ms > self.src.kline_update * 1000:
                    self._push(interval, now_ms, out)
        if vt >= self.next_depth:
            while self.next_depth <= vt:
                self.next_depth += self.src.depth_interval
            for w in self.walks:
                stream = w.streams["depth@100ms"]
                if self.interest(stream):
                    out.append((stream, self._depth_diff(w, now_ms)))
        return out

    def _close(self, interval: str, ms: int, now_ms: int, out: list[tuple[str, Payload]]) -> None:
        """Closing frames (x=true) of the candles that ended since the last boundary."""
        since = self.next_close[interval] - ms
        self.next_close[interval] = now_ms - now_ms % ms + ms
        for w in self.walks:
            stream = w.streams[f"kline_{interval}"]
            series = self.candles.series(w.sym_id, interval)
            if series is None or not self.interest(stream):
                continue
            for c in series.roll(now_ms):
                if c.open_ms + ms > since:
                    out.append((stream, kline_frame(w.sym_id, interval, c, now_ms, True)))

    def _push(self, interval: str, now_ms: int, out: list[tuple[str, Payload]]) -> None:
        """An update frame (x=false) for every open candle that changed since its last one."""
        for w in self.walks:
            stream = w.streams[f"kline_{interval}"]
            series = self.candles.series(w.sym_id, interval)
            if series is None or not self.interest(stream):
                continue
            series.roll(now_ms)
            c = series.current
            if c is None or self.pushed.get(stream) == (c.open_ms, c.count):
                continue
            self.pushed[stream] = (c.open_ms, c.count)
            out.append((stream, kline_frame(w.sym_id, interval, c, now_ms, False)))

    def _depth_diff(self, w: _Walk, now_ms: int) -> Payload:
        """Move the book to levels around the current price; U/u continue the id sequence."""
        bid_prices, ask_prices = _book_prices(w.price, self.src.depth_levels)
        rnd = self.depth_rng.uniform
        bids = {p: f"{rnd(0.1, 10):.8f}" for p in bid_prices}
        asks = {p: f"{rnd(0.1, 10):.8f}" for p in ask_prices}
        b, a = _side_diff(w.bids, bids), _side_diff(w.asks, asks)
        w.bids, w.asks = bids, asks
        prev = w.depth_id
        # USD-M: the ids between two diffs of a symbol are other symbols' (only pu chains them)
        first = prev + 1 + (self.depth_rng.randint(0, 3) if self.futures else 0)
        w.depth_id = first - 1 + max(1, len(b) + len(a))
        pu = prev if self.futures else None
        return bf.depth_update(w.sym_id, first, w.depth_id, b, a, now_ms, prev_final=pu)


def _quote(price: float) -> tuple[str, str, str, str]:
    """Bid, bid qty, ask, ask qty around a synthetic price."""
    half = price * 0.0001
    return f"{price - half:.8f}", "1.00000000", f"{price + half:.8f}", "1.00000000"


__all__ = [
    "Clock",
    "Event",
    "FrameSource",
    "Interest",
    "ReplaySource",
    "SyntheticSource",
    "bundled_recording",
    "unified_symbols",
]
