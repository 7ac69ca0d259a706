"""One scale session: a strict fake, a publisher following every market, optionally bots.

Per session: a private ``redis-server``, the fake (``bench.scale_fake``) and the publisher
(``bench.scale_procs``) each in its own process. Measured, in order:

1. **time to all-publishing**: from the publisher's spawn until every stream (market x
   channel) has an entry in Redis, sampled every 0.25 s (the timeline is kept);
2. a **steady window** of ``window`` s: records written per second, publisher CPU per record
   (and Redis' and the fake's), RSS samples (peak, start and end of the window);
3. **the bots**, when asked: one ``consumers.Consumer`` following every stream, plain then in
   a group, ``consumer_window`` s each: entry-to-receipt lag and CPU per record;
4. **losses**: the fake's writers are stalled (nothing more is written), the publisher
   drains, and every trade id of every market is read back against the ids written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis

from bench import peer_measure as pm
from bench.scale_fake import ScaleFake
from bench.scale_procs import ScaleChild
from marketbus.keys import stream_key
from marketbus.models import Channel
from tests.redis_server import running_redis

POLL_S = 0.25


@dataclass(frozen=True)
class ScalePlan:
    label: str
    channels: tuple[str, ...]
    markets: int = 1_000
    rate: float = 20_000
    """aggTrade + ticker frames/s offered in total (round-robin over markets)."""
    depth_interval: float = 1.0
    """A depth diff per subscribed book every this many seconds (on top of ``rate``)."""
    limits: dict[str, Any] | None = field(default_factory=dict)
    """``BinanceLimits`` fields for the fake (``{}``: Binance's own; None: off)."""
    window: float = 20.0
    consumer_window: float = 10.0
    consumers: bool = False
    wait_max: float = 120.0
    exchange: str = "binance"

    @property
    def streams(self) -> int:
        return self.markets * len(self.channels)


def _keys(exchange: str, symbols: Sequence[str], channels: Sequence[str]) -> list[str]:
    return [stream_key(exchange, s, Channel(c)) for s in symbols for c in channels]


async def _publishing(r: Any, keys: list[str]) -> int:
    pipe = r.pipeline(transaction=False)
    for k in keys:
        pipe.exists(k)
    return sum(int(x) for x in await pipe.execute())


@dataclass
class _Procs:
    pub: int
    redis: int
    fake: int

    def cpu(self) -> tuple[float, float, float]:
        return pm.cpu_s(self.pub), pm.cpu_s(self.redis), pm.cpu_s(self.fake)


async def _until_all(
    r: Any, keys: list[str], pids: _Procs, t0: float, wait_max: float
) -> dict[str, Any]:
    """Poll until every stream has an entry: the time, and the timeline on the way."""
    timeline: list[tuple[float, int, float]] = []
    n = 0
    while (t := time.monotonic() - t0) < wait_max:
        n = await _publishing(r, keys)
        timeline.append((round(t, 2), n, round(pm.rss_mb(pids.pub), 1)))
        if n == len(keys):
            return {"t_all_s": t, "timeline": timeline, "publishing": n}
        await asyncio.sleep(POLL_S)
    return {"t_all_s": None, "timeline": timeline, "publishing": n}


async def _window(
    pub: ScaleChild, pids: _Procs, seconds: float
) -> dict[str, Any]:  # fmt: skip
    s0, c0, t0 = await pub.call("stats"), pids.cpu(), time.monotonic()
    rss: list[float] = []
    end = t0 + seconds
    while (now := time.monotonic()) < end:
        rss.append(pm.rss_mb(pids.pub))
        await asyncio.sleep(min(0.5, end - now))
    s1, c1, t1 = await pub.call("stats"), pids.cpu(), time.monotonic()
    rss.append(pm.rss_mb(pids.pub))
    dt = t1 - t0
    written = s1["sink_written"] - s0["sink_written"]
    per = 1e6 / written if written else float("nan")
    return {
        "window_s": dt,
        "records_s": written / dt,
        "frames_s": (s1["worker_frames"] - s0["worker_frames"]) / dt,
        "pub_us": (c1[0] - c0[0]) * per,
        "pub_cores": (c1[0] - c0[0]) / dt,
        "redis_us": (c1[1] - c0[1]) * per,
        "fake_cores": (c1[2] - c0[2]) / dt,
        "rss_start_mb": rss[0],
        "rss_end_mb": rss[-1],
        "rss_samples": [round(x, 1) for x in rss],
    }


async def _bot(
    r: Any, redis_url: str, plan: ScalePlan, symbols: list[str], group: bool, pids: _Procs
) -> dict[str, Any]:
    spec = {
        "redis": redis_url,
        "symbols": symbols,
        "channels": list(plan.channels),
        "group": group,
        "exchange": plan.exchange,
    }
    async with ScaleChild("consumer", spec) as bot:
        await asyncio.sleep(2.0)  # joined and caught up
        await bot.call("reset")
        s0, cpu0, t0 = await bot.call("stats"), pm.cpu_s(bot.pid), time.monotonic()
        r0, rc0 = await _commandstats(r), pm.cpu_s(pids.redis)
        await asyncio.sleep(plan.consumer_window)
        s1, cpu1, t1 = await bot.call("stats"), pm.cpu_s(bot.pid), time.monotonic()
        r1, rc1 = await _commandstats(r), pm.cpu_s(pids.redis)
        got = s1["received"] - s0["received"]
        reads = {
            cmd: {
                "calls": r1[cmd][0] - r0.get(cmd, (0, 0))[0],
                "usec_per_call": (r1[cmd][1] - r0.get(cmd, (0, 0))[1])
                / max(1, r1[cmd][0] - r0.get(cmd, (0, 0))[0]),
            }
            for cmd in ("xread", "xreadgroup", "xack")
            if cmd in r1
        }
        return {
            "mode": "group" if group else "plain",
            "records_s": got / (t1 - t0),
            "cpu_us": (cpu1 - cpu0) * 1e6 / got if got else float("nan"),
            "cores": (cpu1 - cpu0) / (t1 - t0),
            "lag_ms": s1["lag_ms"],
            "invalid": s1["invalid"],
            "peak_rss_mb": pm.peak_rss_mb(bot.pid),
            "redis": reads,
            "redis_cores": (rc1 - rc0) / (t1 - t0),
        }


async def _commandstats(r: Any) -> dict[str, tuple[int, int]]:
    """Redis' calls and microseconds so far, per command."""
    info = await r.info("commandstats")
    return {
        k.removeprefix("cmdstat_"): (int(v["calls"]), int(v["usec"]))
        for k, v in info.items()
        if isinstance(v, dict)
    }


async def _names(pub: ScaleChild, timeout: float) -> tuple[dict[str, str], list[str]]:
    """Once the publisher has loaded the markets: what it calls each of the fake's markets
    (OKX's AE is CCXT's AET), and the ones it dropped as unknown."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = await pub.call("stats")
        if st["markets"] or st["dropped"]:
            return dict(st["resolved"]), list(st["dropped"])
        await asyncio.sleep(0.05)
    return {}, []


async def _drain(pub: ScaleChild, stable: float = 2.0, timeout: float = 60.0) -> dict[str, Any]:
    """Until the sink has written everything it accepted (or stopped moving)."""
    start = last_move = time.monotonic()
    last = -1
    while True:
        st = await pub.call("stats")
        done = st["sink_written"] + st["sink_overflow"] + st["sink_rejected"]
        now = time.monotonic()
        if st["sink_written"] != last:
            last, last_move = st["sink_written"], now
        if done >= st["sink_accepted"] or now - last_move > stable or now - start > timeout:
            return st
        await asyncio.sleep(0.1)


async def _losses(r: Any, exchange: str, sent: dict[str, list[int]]) -> dict[str, Any]:
    stored = {
        m: await pm.stream_ids(r, stream_key(exchange, m, Channel.TRADES), pm.marketbus_id)
        for m in sent
    }
    got = pm.losses({m: (row[1], row[2]) for m, row in sent.items()}, stored)
    gaps = {m: n for m, n in got.per_market.items() if n}
    return {
        "sent": got.sent,
        "stored": got.stored,
        "lost": got.lost,
        "duplicates": got.duplicates,
        "markets_with_loss": len(gaps),
        "worst_markets": dict(sorted(gaps.items(), key=lambda kv: -kv[1])[:5]),
        "fake_consecutive": all(row[0] == row[2] - row[1] + 1 for row in sent.values()),
    }


async def session(plan: ScalePlan) -> dict[str, Any]:
    """Everything measured for one plan (``error`` set when something failed on the way)."""
    row: dict[str, Any] = {"label": plan.label, "plan": plan.__dict__.copy()}
    fake_spec = {
        "exchange": plan.exchange,
        "symbols": plan.markets,
        "rate": plan.rate,
        "depth_interval": plan.depth_interval,
        "limits": plan.limits,
    }
    with running_redis() as rs:
        if rs.proc is None:
            raise RuntimeError("redis-server did not start")
        r = aioredis.Redis.from_url(rs.url)
        try:
            async with ScaleFake(fake_spec) as fx:
                keys = _keys(plan.exchange, fx.symbols, plan.channels)
                spec = {
                    "redis": rs.url,
                    "base_url": fx.base_url,
                    "symbols": fx.symbols,
                    "channels": list(plan.channels),
                    "exchange": plan.exchange,
                }
                t0 = time.monotonic()
                async with ScaleChild("publisher", spec) as pub:
                    pids = _Procs(pub.pid, rs.proc.pid, fx.pid)
                    row["t_ready_s"] = time.monotonic() - t0
                    names, dropped = await _names(pub, plan.wait_max)
                    names = {m: n for m, n in names.items() if m not in set(dropped)}
                    if dropped:
                        row["dropped"] = dropped
                    if names:
                        keys = _keys(plan.exchange, list(names.values()), plan.channels)
                    row.update(await _until_all(r, keys, pids, t0, plan.wait_max))
                    row["rss_at_all_mb"] = pm.rss_mb(pub.pid)
                    row.update(await _window(pub, pids, plan.window))
                    row["memory"] = await pub.call("memory")
                    row["peak_rss_mb"] = pm.peak_rss_mb(pub.pid)
                    if plan.consumers:
                        row["bots"] = [
                            await _bot(
                                r, rs.url, plan, list(names.values()) or fx.symbols, group, pids
                            )
                            for group in (False, True)
                        ]
                    await fx.call("stall", seconds=3_600)
                    await asyncio.sleep(0.3)  # a write in flight lands
                    sent = (await fx.call("ids"))["ids"]
                    sent = {names.get(m, m): v for m, v in sent.items() if m not in dropped}
                    row["publisher"] = await _drain(pub)
                    row["fake"] = await fx.call("stats")
                    row.update(await _losses(r, plan.exchange, sent))
                    row["peak_rss_mb"] = max(row["peak_rss_mb"], pm.peak_rss_mb(pub.pid))
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}"[-800:]
        finally:
            await r.aclose()
    return row


__all__ = ["ScalePlan", "session"]
