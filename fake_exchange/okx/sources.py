"""OKX frame sources: pure generators of complete push frames, no sockets.

A source yields `OkxEvent(delay, channel, inst_id, frame)` and says what REST serves for it
(instruments) and the books at the start. Books frames already carry seqId/prevSeqId and a
checksum computed on the source's own `OkxBook`, so a source can be checked on its own; the
server mirrors the books only to answer snapshots and REST. Time enters only through the
`clock` given to `events()`.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import random
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qs, urlparse

from fake_exchange.okx import frames as of
from fake_exchange.okx.book import OkxBook
from fake_exchange.okx.frames import Payload
from fake_exchange.recording import RecordingError
from fake_exchange.sources import Clock

SEQ_START = 1_000_000
"""seqId of every book at the start (the recording has none; OKX's are large integers)."""

INST_TYPES = ("SPOT", "SWAP", "FUTURES", "OPTION")
REPLAY_CHANNELS = frozenset({"tickers", "trades", "books"})


@dataclass(frozen=True, slots=True)
class OkxEvent:
    """Wait `delay` seconds after the previous event, then publish `frame`."""

    delay: float
    channel: str
    inst_id: str
    frame: Payload


class OkxFrameSource(Protocol):
    """What FakeOkx needs from a source of market data."""

    @property
    def finite(self) -> bool: ...

    def prepare(self) -> None:
        """Load files; idempotent. The server calls it in a thread before serving."""
        ...

    def instruments(self) -> dict[str, list[Payload]]:
        """`public/instruments` entries by instType (every instId the source publishes)."""
        ...

    def books(self) -> dict[str, OkxBook]:
        """Fresh copies of the books at the start, by instId."""
        ...

    def events(self, clock: Clock) -> Iterator[OkxEvent]: ...


def okx_recording() -> Path:
    """Path of the OKX recording shipped inside the package."""
    return Path(str(importlib.resources.files("fake_exchange") / "data" / "OKX.jsonl"))


def inst_id_of(symbol: str) -> str:
    """'BTC/USDT' or 'btc-usdt' -> 'BTC-USDT'."""
    return symbol.replace("/", "-").upper()


def unified_symbols(instruments: dict[str, list[Payload]]) -> dict[str, str]:
    """instId -> 'BASE/QUOTE' of the SPOT entries (what ccxt calls them)."""
    return {e["instId"]: f"{e['baseCcy']}/{e['quoteCcy']}" for e in instruments.get("SPOT", [])}


# --------------------------------------------------------------------------- recording


@dataclass(frozen=True, slots=True)
class RecordedPush:
    """A data frame the exchange sent: receive time (epoch s) and the frame."""

    ts: float
    frame: Payload


@dataclass(slots=True)
class OkxRecording:
    instruments: dict[str, list[Payload]] = field(default_factory=dict)
    frames: list[RecordedPush] = field(default_factory=list)


def load_okx_recording(path: Path) -> OkxRecording:
    """Instruments by instType (OPTION merged over its underlyings) and every data frame."""
    rec = OkxRecording()
    options: dict[str, Payload] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                kind = item.get("t")
                if kind == "http" and "/public/instruments" in item["url"]:
                    inst_type = parse_qs(urlparse(item["url"]).query)["instType"][0]
                    entries = json.loads(item["data"])["data"]
                    if inst_type == "OPTION":
                        options.update((e["instId"], e) for e in entries)
                    else:
                        rec.instruments[inst_type] = entries
                elif kind == "recv" and item["data"].startswith("{"):
                    msg = json.loads(item["data"])
                    if "arg" in msg and "data" in msg and "event" not in msg:
                        rec.frames.append(RecordedPush(float(item["ts"]), msg))
            except (json.JSONDecodeError, KeyError, IndexError) as e:
                raise RecordingError(f"{path}:{lineno}: not an OKX recording line") from e
    if options:
        rec.instruments["OPTION"] = list(options.values())
    if "SPOT" not in rec.instruments:
        raise RecordingError(f"{path}: no SPOT instruments")
    rec.frames.sort(key=lambda f: f.ts)
    return rec


# --------------------------------------------------------------------------- shared state


@dataclass(slots=True)
class _Candle:
    start: int
    o: Decimal
    h: Decimal
    low: Decimal
    c: Decimal
    vol: Decimal = Decimal(0)
    vol_ccy: Decimal = Decimal(0)

    def row(self, confirm: bool) -> list[str]:
        return of.candle_row(
            self.start,
            of.fmt(self.o),
            of.fmt(self.h),
            of.fmt(self.low),
            of.fmt(self.c),
            of.fmt(self.vol),
            of.fmt(self.vol_ccy),
            confirm,
        )


class CandleBuilder:
    """The live candle of one (instrument, bar), fed with the trades sent."""

    def __init__(self, bar: str) -> None:
        self.bar = bar
        self.length = of.bar_ms(bar)
        self.current: _Candle | None = None
        self.closed: deque[_Candle] = deque()
        """Candles that ended, until their confirmed row was handed out."""

    def add_trade(self, ts_ms: int, px: Decimal, sz: Decimal) -> None:
        c = self._roll(of.bar_start(ts_ms, self.bar), px)
        if c.vol == 0:
            c.o = c.h = c.low = c.c = px
        c.h, c.low, c.c = max(c.h, px), min(c.low, px), px
        c.vol += sz
        c.vol_ccy += px * sz

    def _roll(self, start: int, px: Decimal) -> _Candle:
        """The candle opening at `start`; the previous one joins `closed`."""
        if self.current is not None and self.current.start == start:
            return self.current
        if self.current is not None:
            self.closed.append(self.current)
            px = self.current.c
        self.current = _Candle(start, px, px, px, px)
        return self.current

    def take(self, now_ms: int, price: Decimal) -> list[str]:
        """Next row to send: a just-closed candle (confirm 1) first, else the live one."""
        if self.current is None or now_ms >= self.current.start + self.length:
            current = self._roll(of.bar_start(now_ms, self.bar), price)
        else:
            current = self.current
        if self.closed:
            return self.closed.popleft().row(True)
        return current.row(False)


def _fast(speed: float) -> bool:
    return speed <= 0 or math.isinf(speed)


def _time_map(
    fast: bool, now_ms: int, base_ms: float, first_ms: float, speed: float
) -> Callable[[int], int]:
    """Recorded ms -> now-based ms: gaps divided by speed, or everything now (fast mode)."""
    if fast:
        return lambda _ms: now_ms
    return lambda ms: int(base_ms + (ms - first_ms) / speed)


def _bar_of(channel: str) -> str:
    bar = of.candle_channel_bar(channel)
    if bar is None:
        raise ValueError(f"not a candle channel: {channel!r}")
    return bar


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True, slots=True)
class _Item:
    """One recorded frame prepared for replay (checksums verified, seqIds added)."""

    ts: float
    channel: str
    inst_id: str
    frame: Payload
    update_no: int = 0
    """books and derived books5/bbo-tbt: number of the update in the pass (snapshot: 0)."""


class OkxReplaySource:
    """Replays the recorded OKX session for some instruments, timestamps shifted to now.

    Relative timing kept, gaps divided by `speed` (0/inf: as fast as possible). The recorded
    books snapshot of an instrument is its initial book (sent on subscribe, not replayed); each
    update gets seqId = previous + 1 and its recorded checksum, verified on load. With `loop`, a
    pass starts `loop_gap` recorded seconds after the last frame, pushes the recorded snapshot
    again (action "snapshot", prevSeqId -1, seqId continuing) and shifts trade ids by one pass.
    Derived: `books5`/`bbo-tbt` after each books update that changes them, and a candle row per
    bar in `candle_bars` after each trade.
    """

    def __init__(
        self,
        path: Path | str | None = None,
        speed: float = 1.0,
        loop: bool = False,
        instruments: Sequence[str] | None = ("BTC-USDT",),
        loop_gap: float = 1.0,
        candle_bars: Sequence[str] = ("1s", "1m"),
    ) -> None:
        self.path = Path(path) if path is not None else okx_recording()
        self.speed = speed
        self.loop = loop
        self.inst_filter = None if instruments is None else {inst_id_of(i) for i in instruments}
        self.loop_gap = loop_gap
        self.candle_bars = tuple(candle_bars)
        for bar in self.candle_bars:
            of.bar_ms(bar)
        self._rec: OkxRecording | None = None
        self._items: list[_Item] = []
        self._books: dict[str, OkxBook] = {}
        self._updates: dict[str, int] = {}
        self._trade_span: dict[str, int] = {}
        self.checksums_checked = 0
        self.checksums_replaced = 0

    def __repr__(self) -> str:
        return f"OkxReplaySource({str(self.path)!r}, speed={self.speed}, loop={self.loop})"

    @property
    def finite(self) -> bool:
        return not self.loop

    def prepare(self) -> None:
        if self._rec is not None:
            return
        rec = load_okx_recording(self.path)
        keep = [
            f
            for f in rec.frames
            if of.frame_key(f.frame)[0] in REPLAY_CHANNELS
            and (self.inst_filter is None or of.frame_key(f.frame)[1] in self.inst_filter)
        ]
        self._items = self._prepare_items(keep)
        self._rec = rec

    def _prepare_items(self, frames: list[RecordedPush]) -> list[_Item]:
        """Verify checksums, number the updates, derive books5/bbo-tbt; ids per instrument."""
        items: list[_Item] = []
        live: dict[str, OkxBook] = {}
        tops: dict[str, tuple[Any, Any]] = {}
        trade_ids: dict[str, list[int]] = {}
        for f in frames:
            channel, inst = of.frame_key(f.frame)
            if channel == "trades":
                trade_ids.setdefault(inst, []).extend(int(t["tradeId"]) for t in f.frame["data"])
                items.append(_Item(f.ts, channel, inst, f.frame))
                continue
            if channel != "books":
                items.append(_Item(f.ts, channel, inst, f.frame))
                continue
            action = f.frame.get("action")
            for row in f.frame["data"]:
                if action == "snapshot":
                    book = live[inst] = OkxBook(inst, SEQ_START)
                    book.reset(row)
                    book.seq_id = SEQ_START
                    self._books[inst] = book.copy()
                    self._books[inst].ts_ms = 0  # sent on subscribe: the server stamps it now
                    self._updates[inst] = 0
                    self.checksums_checked += 1
                    if int(row.get("checksum", book.checksum())) != book.checksum():
                        self.checksums_replaced += 1
                    snap = of.push("books", inst, [book.snapshot_row()], "snapshot")
                    items.append(_Item(f.ts, "books", inst, snap, 0))
                    continue
                if inst not in live:
                    continue  # an update before any snapshot: nothing to apply it to
                book = live[inst]
                book.update(row)
                self._updates[inst] += 1
                n = self._updates[inst]
                self.checksums_checked += 1
                check = book.checksum()
                if int(row.get("checksum", check)) != check:
                    self.checksums_replaced += 1
                new_row = of.book_row(
                    row["asks"],
                    row["bids"],
                    int(row["ts"]),
                    checksum=check,
                    seq_id=SEQ_START + n,
                    prev_seq_id=SEQ_START + n - 1,
                )
                items.append(
                    _Item(f.ts, "books", inst, of.push("books", inst, [new_row], "update"), n)
                )
                ts = int(row["ts"])
                top5 = (book.asks(5), book.bids(5))
                if tops.get(inst) != top5:
                    prev = tops.get(inst)
                    tops[inst] = top5
                    frame5 = of.push("books5", inst, [of.top_row(inst, *top5, ts, SEQ_START + n)])
                    items.append(_Item(f.ts, "books5", inst, frame5, n))
                    if prev is None or (prev[0][:1], prev[1][:1]) != (top5[0][:1], top5[1][:1]):
                        bbo = of.push("bbo-tbt", inst, [of.bbo_row(*top5, ts, SEQ_START + n)])
                        items.append(_Item(f.ts, "bbo-tbt", inst, bbo, n))
        self._trade_span = {i: max(v) - min(v) + 1 for i, v in trade_ids.items()}
        return items

    def instruments(self) -> dict[str, list[Payload]]:
        self.prepare()
        if self._rec is None:
            raise RecordingError(f"{self.path}: not loaded")
        return self._rec.instruments

    def books(self) -> dict[str, OkxBook]:
        self.prepare()
        return {i: b.copy() for i, b in self._books.items()}

    def events(self, clock: Clock) -> Iterator[OkxEvent]:
        self.prepare()
        if not self._items:
            return
        fast = _fast(self.speed)
        speed = 1.0 if fast else self.speed
        first_ms = self._items[0].ts * 1000
        pass_ms = (self._items[-1].ts - self._items[0].ts + self.loop_gap) * 1000
        start_ms = clock()
        candles = {
            (inst, bar): CandleBuilder(bar)
            for inst in {i.inst_id for i in self._items}
            for bar in self.candle_bars
        }
        prev_ts: float | None = None
        pass_no = 0
        while True:
            base_ms = start_ms + pass_no * pass_ms / speed
            for i, item in enumerate(self._items):
                if item.channel == "books" and item.update_no == 0 and pass_no == 0:
                    continue  # the initial book: sent on subscribe, not pushed
                if fast or prev_ts is None:
                    delay = 0.0
                elif i == 0:
                    delay = self.loop_gap / speed
                else:
                    delay = (item.ts - prev_ts) / speed
                prev_ts = item.ts
                tmap = _time_map(fast, clock(), base_ms, first_ms, speed)
                frame = self._shift(item, pass_no, tmap)
                yield OkxEvent(delay, item.channel, item.inst_id, frame)
                if item.channel == "trades":
                    for row in frame["data"]:
                        yield from self._candle_events(candles, item.inst_id, row)
            if not self.loop:
                return
            pass_no += 1

    def _shift(self, item: _Item, pass_no: int, tmap: Callable[[int], int]) -> Payload:
        """A copy of the prepared frame with times, trade ids and seqIds moved to this pass."""
        frame = dict(item.frame)
        rows = []
        seq_shift = pass_no * (self._updates.get(item.inst_id, 0) + 1)
        for row in frame["data"]:
            row = dict(row)
            row["ts"] = str(tmap(int(row["ts"])))
            if item.channel == "trades":
                row["tradeId"] = str(
                    int(row["tradeId"]) + pass_no * self._trade_span.get(item.inst_id, 0)
                )
            if "seqId" in row:
                row["seqId"] += seq_shift
            if row.get("prevSeqId", -1) != -1:
                row["prevSeqId"] += seq_shift
            rows.append(row)
        frame["data"] = rows
        return frame

    @staticmethod
    def _candle_events(
        candles: dict[tuple[str, str], CandleBuilder], inst: str, trade: Payload
    ) -> Iterator[OkxEvent]:
        ts, px = int(trade["ts"]), Decimal(trade["px"])
        for (c_inst, bar), builder in candles.items():
            if c_inst != inst:
                continue
            builder.add_trade(ts, px, Decimal(trade["sz"]))
            channel = "candle" + bar
            if builder.closed:
                yield OkxEvent(0.0, channel, inst, of.push(channel, inst, [builder.take(ts, px)]))
            yield OkxEvent(0.0, channel, inst, of.push(channel, inst, [builder.take(ts, px)]))


# --------------------------------------------------------------------------- synthetic


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

    def px(self, ticks: int) -> str:
        return of.fmt(self.tick * ticks)


SYNTHETIC_CHANNELS = frozenset({"trades", "tickers", "books", "books5", "bbo-tbt"})


class OkxSyntheticSource:
    """Random-walk prices on many spot instruments at a steady total rate, in OKX frames.

    Mirrors `fake_exchange.SyntheticSource`: `rate` frames per second in total, round-robin over
    (instrument, channel) pairs, frames due in one `tick` batched; ends after `duration` seconds
    or `total` frames (both None: never). `symbols`: 'BASE/QUOTE' or 'BASE-QUOTE' names, or an
    int n: the first n live USDT spot instruments of the bundled recording, padded with
    `SYM<i>-USDT`. Channels: trades, tickers, books (updates with seqId and checksum), books5,
    bbo-tbt, candle<bar> (the live candle of the trades sent; a closed candle once with
    confirm "1"). Deterministic for a given seed and clock.
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
            ids = [inst_id_of(s) for s in self.symbols_spec]
        rng = random.Random(self.seed)
        for inst_id in ids:
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
            walks.append(w)
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
            now_ms = start_ms + round(vt * 1000)
            while k < due:
                w, channel = pairs[k % len(pairs)]
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


__all__ = [
    "SEQ_START",
    "CandleBuilder",
    "OkxEvent",
    "OkxFrameSource",
    "OkxRecording",
    "OkxReplaySource",
    "OkxSyntheticSource",
    "RecordedPush",
    "inst_id_of",
    "load_okx_recording",
    "okx_recording",
    "unified_symbols",
]
