"""The sessions of the ``cost`` group: every component at a steady, exactly known rate.

A **publisher session** (one per parser): a private ``redis-server``, the fake
(``bench.scale_fake``: synthetic aggTrade + ticker round-robin over ``markets`` markets,
``rate`` frames/s, counting what it writes instead of logging it) and the publisher
(``bench.pubproc``, uvloop as ``marketbus publish``), each in its own process. After the
publisher subscribed and ``warm`` seconds, a window of ``window`` seconds cut into ``parts``
equal parts with the publisher alone (its CPU, and Redis' write side); then, one after the
other, each reader in its own process (``consumer`` plain, with a callback, in a group;
the raw ``XREAD`` reference), ``consumer_warm`` seconds to join, then a window the same
way. At each boundary a :class:`bench.cost_math.Snap`: CPU seconds of every process from
``/proc``, frames the fake wrote, records the sink wrote, ``entries-added`` and the last id
of every stream, records the reader took and its last id per stream. At the end the fake's
writers are stalled, the publisher drains, and what the fake wrote (per market for trades)
is held against ``entries-added``; each reader's window is checked entry by entry (what
Redis holds between its positions, by a server-side ``XRANGE`` count).

A **reader session** (the publisher's reference): the same fake and rate, figure 1's bare
aiohttp + orjson reader (``bench.cost_procs``) in its own process, no Redis.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from bench import cost_math as cm
from bench import peer_measure as pm
from bench.cost_procs import child
from bench.fakeproc import streams_for
from bench.pubproc import Proc
from bench.scale_fake import ScaleFake
from marketbus.keys import stream_key
from marketbus.models import Channel
from tests.redis_server import running_redis

COUNT_RANGE = "return #redis.call('XRANGE', KEYS[1], ARGV[1], ARGV[2])"
"""Entries of a stream in a range, counted in Redis (the reply is one integer)."""
GROUP = "bench-cost"
TICKER_KIND = "24hrTicker"


@dataclass(frozen=True)
class CostPlan:
    markets: int = 50
    rate: float = 5_000.0
    """aggTrade + ticker frames/s offered in total, round-robin: half trades, half tickers."""
    warm: float = 5.0
    window: float = 20.0
    parts: int = 3
    consumer_warm: float = 3.0
    capacity: int = 5_000
    """Ring buffer rows per stream in the consumer."""


@dataclass(frozen=True)
class Reader:
    kind: str
    """``plain``, ``callback``, ``group``, ``linger`` (``bench.pubproc`` consumer) or
    ``rawxread``."""
    label: str


READERS = (
    Reader("plain", "consumer, plain XREAD -> ring buffers"),
    Reader("callback", "consumer, plain + on_record callback"),
    Reader("group", "consumer group, XREADGROUP + XACK -> ring buffers"),
    Reader("linger", "consumer, plain, linger_ms=2 (fewer, larger reads)"),
    Reader("rawxread", "raw redis-py XREAD, no decoding (reference)"),
)

LINGER_MS = 2.0
"""The ``linger`` reader's ``Consumer(linger_ms=...)``."""

SnapFn = Callable[[], Awaitable[cm.Snap]]


def fake_spec(plan: CostPlan) -> dict[str, Any]:
    """The synthetic Binance fake without limits (nothing here is about pacing)."""
    return {"symbols": plan.markets, "rate": plan.rate, "limits": None}


def trade_keys(symbols: Sequence[str]) -> list[str]:
    return [stream_key("binance", s, Channel.TRADES) for s in symbols]


def ticker_keys(symbols: Sequence[str]) -> list[str]:
    return [stream_key("binance", s, Channel.TICKER) for s in symbols]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


async def xinfo(r: Any, keys: Sequence[str]) -> dict[str, tuple[int, str]]:
    """Per existing stream: ``entries-added`` and ``last-generated-id``."""
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.xinfo_stream(k)
    out: dict[str, tuple[int, str]] = {}
    for k, res in zip(keys, await pipe.execute(raise_on_error=False), strict=True):
        if not isinstance(res, Exception):
            out[k] = (int(res["entries-added"]), _text(res["last-generated-id"]))
    return out


async def commandstats(r: Any) -> dict[str, tuple[int, int]]:
    """Redis' calls and µs executing, per command, so far."""
    info = await r.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for k, v in info.items()
        if isinstance(v, dict)
    }


async def snap(
    fx: ScaleFake,
    pids: dict[str, int],
    *,
    r: Any = None,
    keys: Sequence[str] = (),
    pub: Any = None,
    reader: Any = None,
) -> cm.Snap:
    """The counters now, downstream first: the reader, the publisher, Redis, the fake. So
    every position the reader reports is at or before the stream's last id read here, and
    the records in flight (fake minus Redis) are never negative (the few ms between the
    reads count as in flight)."""
    got = await reader.stats() if reader is not None else None
    written = int((await pub.stats())["written"]) if pub is not None else None
    added: int | None = None
    last_gen: dict[str, str] = {}
    cmds: dict[str, tuple[int, int]] = {}
    if r is not None:
        info = await xinfo(r, keys)
        added = sum(n for n, _ in info.values())
        last_gen = {k: last for k, (_, last) in info.items()}
        cmds = await commandstats(r)
    frames = sum(int(v) for v in (await fx.call("stats"))["kinds"].values())
    return cm.Snap(
        t=time.monotonic(),
        cpu={role: pm.cpu_s(pid) for role, pid in pids.items()},
        frames=frames,
        written=written,
        added=added,
        last_gen=last_gen,
        received=None if got is None else int(got["received"]),
        positions={} if got is None else dict(got.get("ids") or {}),
        redis_cmds=cmds,
    )


async def window(plan: CostPlan, take: SnapFn) -> list[cm.Snap]:
    """``plan.window`` seconds cut into ``plan.parts`` parts: a snapshot at each boundary."""
    out = [await take()]
    for bound in cm.part_bounds(out[0].t, plan.window, plan.parts)[1:]:
        await asyncio.sleep(max(0.0, bound - time.monotonic()))
        out.append(await take())
    return out


async def _subscribed(
    fx: ScaleFake, streams: int, pub: Proc | None = None, timeout: float = 60.0
) -> None:
    deadline = time.monotonic() + timeout
    while (n := (await fx.call("subscribed"))["streams"]) < streams:
        if time.monotonic() > deadline:
            fake = await fx.call("stats")
            why = f"{n} of {streams} streams subscribed after {timeout:g} s; fake {fake}"
            if pub is not None:
                why += f"; publisher {await pub.stats()}; its log: {pub.stderr_tail(1500)}"
            raise TimeoutError(why)
        await asyncio.sleep(0.1)


def _rss(pids: dict[str, int]) -> dict[str, float]:
    return {role: round(pm.rss_mb(pid), 1) for role, pid in pids.items()}


async def count_ranges(r: Any, spans: Sequence[tuple[str, str, str]]) -> list[int]:
    """Entries per ``(key, after, upto)``: ids > ``after`` and <= ``upto``."""
    pipe = r.pipeline(transaction=False)
    for key, after, upto in spans:
        pipe.eval(COUNT_RANGE, 1, key, "(" + after, upto)
    return [int(n) for n in await pipe.execute()]


async def balances(r: Any, snaps: Sequence[cm.Snap]) -> list[dict[str, Any]]:
    """Each part of a reader's window, entry by entry (``cost_math.consumer_balance``)."""
    out = []
    for a, b in itertools.pairwise(snaps):
        keys = sorted(b.last_gen)
        missing = [k for k in keys if k not in a.positions or k not in b.positions]
        if missing:
            out.append({"error": f"no position in {len(missing)} streams, e.g. {missing[0]}"})
            continue
        n = len(keys)
        spans = [(k, a.positions[k], b.positions[k]) for k in keys]
        spans += [(k, a.positions[k], a.last_gen.get(k, a.positions[k])) for k in keys]
        spans += [(k, b.positions[k], b.last_gen[k]) for k in keys]
        counts = await count_ranges(r, spans)
        if a.received is None or b.received is None or a.added is None or b.added is None:
            raise ValueError("a reader's snapshots without received / added")
        out.append(
            cm.consumer_balance(
                received=b.received - a.received,
                added=b.added - a.added,
                between=sum(counts[:n]),
                in_flight_start=sum(counts[n : 2 * n]),
                in_flight_end=sum(counts[2 * n :]),
            )
        )
    return out


async def _drain(pub: Any, stable: float = 2.0, timeout: float = 60.0) -> dict[str, Any]:
    """Until the sink wrote everything it accepted (or stopped moving)."""
    start = last_move = time.monotonic()
    last = -1
    while True:
        st: dict[str, Any] = await pub.stats()
        done = st["written"] + st["overflow"] + st["rejected"]
        now = time.monotonic()
        if st["written"] != last:
            last, last_move = st["written"], now
        if done >= st["accepted"] or now - last_move > stable or now - start > timeout:
            return st
        await asyncio.sleep(0.1)


async def final_check(r: Any, fx: ScaleFake, pub: Any, symbols: Sequence[str]) -> dict[str, Any]:
    """Stall the fake, let the publisher drain, and hold what the fake wrote against what
    Redis added: per market for trades (count and consecutive ids), in total for tickers."""
    await fx.call("stall", seconds=3_600)
    await asyncio.sleep(0.3)  # a write in flight lands
    kinds = (await fx.call("stats"))["kinds"]
    ids = (await fx.call("ids"))["ids"]
    publisher = await _drain(pub)
    tkeys, xkeys = trade_keys(symbols), ticker_keys(symbols)
    info = await xinfo(r, tkeys + xkeys)
    added = {k: n for k, (n, _) in info.items()}
    trades_lost = trades_extra = 0
    for sym, key in zip(symbols, tkeys, strict=True):
        sent = int(ids.get(sym, [0])[0])
        diff = sent - added.get(key, 0)
        trades_lost += max(0, diff)
        trades_extra += max(0, -diff)
    tickers_sent = int(kinds.get(TICKER_KIND, 0))
    tickers_stored = sum(added.get(k, 0) for k in xkeys)
    frames = sum(int(v) for v in kinds.values())
    stored = sum(added.values())
    lost = trades_lost + max(0, tickers_sent - tickers_stored)
    return {
        "frames_sent": frames,
        "entries_added": stored,
        "trades_sent": sum(int(row[0]) for row in ids.values()),
        "trades_lost": trades_lost,
        "trades_extra": trades_extra,
        "tickers_sent": tickers_sent,
        "tickers_stored": tickers_stored,
        "lost": lost,
        "consecutive_ids": all(
            int(row[0]) == int(row[2]) - int(row[1]) + 1 for row in ids.values()
        ),
        "lossless": lost == 0 and frames == stored and trades_extra == 0,
        "publisher": publisher,
    }


async def _reader_phase(
    plan: CostPlan,
    rd: Reader,
    redis_url: str,
    r: Any,
    fx: ScaleFake,
    pub: Any,
    pids: dict[str, int],
    symbols: list[str],
) -> dict[str, Any]:
    keys = trade_keys(symbols) + ticker_keys(symbols)
    proc: Any
    if rd.kind == "rawxread":
        proc = child("rawxread", {"redis": redis_url, "keys": keys})
    else:
        spec = {
            "redis": redis_url,
            "symbols": symbols,
            "capacity": plan.capacity,
            "callback": rd.kind == "callback",
            "group": GROUP if rd.kind == "group" else None,
            "linger_ms": LINGER_MS if rd.kind == "linger" else 0,
            "ids": True,
        }
        proc = Proc("consumer", spec)
    out: dict[str, Any] = {"kind": rd.kind, "label": rd.label}
    async with proc as con:
        roles = {**pids, "consumer": con.pid}
        await asyncio.sleep(plan.consumer_warm)
        out["snaps"] = await window(
            plan, lambda: snap(fx, roles, r=r, keys=keys, pub=pub, reader=con)
        )
        out["rss_mb"] = _rss(roles)
        out["consumer_peak_rss_mb"] = pm.peak_rss_mb(con.pid)
        out["stats"] = {k: v for k, v in (await con.stats()).items() if k != "ids"}
    if rd.kind == "group":  # its (acknowledged) state out of the streams' memory figures
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.xgroup_destroy(k, GROUP)
        await pipe.execute(raise_on_error=False)
    return out


async def publisher_session(
    plan: CostPlan, parser: str, readers: Sequence[Reader] = ()
) -> dict[str, Any]:
    """The publisher alone, then each reader; ``error`` set when something failed."""
    row: dict[str, Any] = {"parser": parser, "phases": []}
    with running_redis() as rs:
        if rs.proc is None:
            raise RuntimeError("redis-server did not start")
        r = aioredis.Redis.from_url(rs.url)
        try:
            async with ScaleFake(fake_spec(plan)) as fx:
                symbols = fx.symbols
                keys = trade_keys(symbols) + ticker_keys(symbols)
                spec = {"redis": rs.url, "base_url": fx.base_url, "symbols": symbols}
                async with Proc("publisher", {**spec, "parser": parser}) as pub:
                    pids = {"publisher": pub.pid, "redis": rs.proc.pid, "fake": fx.pid}
                    await _subscribed(fx, len(keys), pub)
                    await asyncio.sleep(plan.warm)
                    row["snaps"] = await window(
                        plan, lambda: snap(fx, pids, r=r, keys=keys, pub=pub)
                    )
                    row["rss_mb"] = _rss(pids)
                    for rd in readers:
                        row["phases"].append(
                            await _reader_phase(plan, rd, rs.url, r, fx, pub, pids, symbols)
                        )
                    row["final"] = await final_check(r, fx, pub, symbols)
                    row["peak_rss_mb"] = {
                        role: round(pm.peak_rss_mb(pid), 1) for role, pid in pids.items()
                    }
                for ph in row["phases"]:
                    ph["balance"] = await balances(r, ph["snaps"])
                row["bytes_per_entry"] = {
                    "trades": await pm.bytes_per_entry(r, trade_keys(symbols)),
                    "ticker": await pm.bytes_per_entry(r, ticker_keys(symbols)),
                }
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[-800:]
        finally:
            await r.aclose()
    return row


async def reader_session(plan: CostPlan) -> dict[str, Any]:
    """The bare websocket reader alone at the same rate: the publisher's reference."""
    row: dict[str, Any] = {}
    try:
        async with ScaleFake(fake_spec(plan)) as fx:
            streams = streams_for(fx.symbols)
            ws = fx.base_url.replace("http://", "ws://") + "/stream?streams=" + "/".join(streams)
            async with child("reader", {"ws": ws}) as rd:
                pids = {"reader": rd.pid, "fake": fx.pid}
                await _subscribed(fx, len(streams))
                await asyncio.sleep(plan.warm)
                row["snaps"] = await window(plan, lambda: snap(fx, pids, reader=rd))
                row["rss_mb"] = _rss(pids)
                await fx.call("stall", seconds=3_600)
                await asyncio.sleep(0.3)
                frames = sum(int(v) for v in (await fx.call("stats"))["kinds"].values())
                deadline = time.monotonic() + 10
                got = -1
                while time.monotonic() < deadline:
                    got = int((await rd.stats())["received"])
                    if got >= frames:
                        break
                    await asyncio.sleep(0.05)
                row["final"] = {"frames_sent": frames, "received": got, "lossless": got == frames}
    except Exception as e:
        row["error"] = f"{type(e).__name__}: {e}"[-800:]
    return row


__all__ = [
    "READERS",
    "CostPlan",
    "Reader",
    "balances",
    "final_check",
    "publisher_session",
    "reader_session",
    "window",
]
