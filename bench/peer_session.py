"""One publisher through the three peer loads: its own redis-server, fake and process.

Per session: a private ``redis-server`` (``tests.redis_server``), the fake exchange in its own
process (``bench.peer_load``: 4 Binance markets, aggTrade only) and the publisher in its own
process (``bench.peer_procs``); the loads run one after the other on the same connection,
Redis flushed in between, the publisher's peak RSS reset at each load's start:

- **steady**: a synthetic replay at ``steady_rate`` trades/s (frames due in a 5 ms tick are
  written one ``send_str`` each); rates and CPU over ``window`` s after ``warm`` s;
- **burst**: ``burst`` aggTrades queued back to back, 2,000 frames per socket write (the
  figure-1a burst), timed from the first frame sent to the last entry stored;
- **overload**: ``flood_rate`` trades/s offered, ``per_write`` frames per socket write, above
  what any publisher here keeps up with; rates, CPU and RSS over ``window`` s after ``warm``.

After each load the bench waits until the publisher has written what it will write, then
reads every trade id of every market back from Redis.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench import peer_measure as pm
from bench.fakeproc import streams_for
from bench.peer_load import PeerFake
from bench.peer_procs import Child, marketbus_child
from bench.peer_venv import PeerEnv
from marketbus.keys import stream_key
from tests.redis_server import running_redis

RUNNER = Path(__file__).with_name("peer_cryptofeed_runner.py")


@dataclass(frozen=True)
class Publisher:
    label: str
    kind: str
    """``cryptofeed`` or ``marketbus``."""
    option: str
    """cryptofeed: the backend's ``overflow`` ("" = its default); marketbus: ``--parser``."""
    linger_ms: float = 0.0
    """marketbus: the sink's ``redis.linger_ms``."""


@dataclass(frozen=True)
class Plan:
    markets: int
    steady_rate: float
    warm: float
    window: float
    burst: int
    flood_rate: float
    per_write: int

    def labels(self) -> dict[str, str]:
        return {
            "steady": f"steady {self.steady_rate / 1000:g}k trades/s",
            "burst": f"burst {self.burst // 1000}k (2,000 frames/write)",
            "overload": f"overload {self.flood_rate / 1000:g}k/s offered "
            f"({self.per_write} frame/write)",
        }


def stream_of(pub: Publisher, symbol: str) -> str:
    if pub.kind == "cryptofeed":
        return f"trades-BINANCE-{symbol.replace('/', '-')}"  # TradeStream's key-exchange-symbol
    return stream_key("binance", symbol, "trades")


def _child(pub: Publisher, env: PeerEnv | None, redis_url: str, port: int, fx: PeerFake,
           tmp: str) -> Child:  # fmt: skip
    if pub.kind == "marketbus":
        return marketbus_child(redis_url, fx.base_url, fx.symbols, pub.option, pub.linger_ms)
    if env is None:
        raise RuntimeError("no cryptofeed venv")
    spec = {
        "rest": fx.base_url,
        "ws": fx.base_url.replace("http://", "ws://"),
        "redis_port": port,
        "symbols": [s.replace("/", "-") for s in fx.symbols],
        "overflow": pub.option or None,
        "log": os.path.join(tmp, "cryptofeed.log"),
    }
    child_env = dict(os.environ, XDG_CACHE_HOME=tmp, PYTHONPATH="")
    return Child([env.python, str(RUNNER), orjson.dumps(spec).decode()], env=child_env)


class _Meter:
    def __init__(self, r: Any, keys: dict[str, str], pub: int, redis_pid: int, fake: int):
        self.r, self.keys = r, keys
        self.pids = (pub, redis_pid, fake)

    async def snap(self) -> pm.Snap:
        return await pm.snap(self.r, list(self.keys.values()), *self.pids)

    async def drain(self, expected: int, stable: float, timeout: float = 90) -> tuple[int, float]:
        """Until ``expected`` entries are in, or the count stopped moving for ``stable`` s:
        (entries, when the count last moved)."""
        start = last_move = time.monotonic()
        last = -1
        while True:
            n = await pm.entries_added(self.r, self.keys.values())
            now = time.monotonic()
            if n != last:
                last, last_move = n, now
            if n >= expected or now - last_move >= stable or now - start >= timeout:
                return n, last_move
            await asyncio.sleep(0.01)

    async def losses(self, sent: dict[str, tuple[int, int]], trade_id: pm.TradeId) -> pm.Losses:
        got = {m: await pm.stream_ids(self.r, k, trade_id) for m, k in self.keys.items()}
        return pm.losses(sent, got)


def _row(s0: pm.Snap, s1: pm.Snap, records: int, **kw: Any) -> dict[str, Any]:
    dt = s1.t - s0.t
    per = 1e6 / records if records else float("nan")
    return {
        "records_s": records / dt if dt > 0 else None,
        "pub_us": (s1.pub_cpu - s0.pub_cpu) * per,
        "redis_us": (s1.redis_cpu - s0.redis_cpu) * per,
        "fake_cpu": (s1.fake_cpu - s0.fake_cpu) / dt if dt > 0 else None,
        "window_s": dt,
        **kw,
    }


async def _steady(m: _Meter, fx: PeerFake, plan: Plan) -> dict[str, Any]:
    await fx.call("clear")
    t_play = (await fx.call("play"))["t_ns"]
    await asyncio.sleep(plan.warm)
    s0 = await m.snap()
    await asyncio.sleep(plan.window)
    s1 = await m.snap()
    t_done = (await fx.call("wait_done", timeout=plan.window + 60))["t_ns"]
    sent = (await fx.call("ids"))["ids"]
    total = sum(v[0] for v in sent.values())
    await m.drain(total, stable=1.5)
    row = _row(s0, s1, s1.entries - s0.entries, fake_rate=total / ((t_done - t_play) / 1e9))
    row["consecutive_ids"] = all(v[3] for v in sent.values())
    return row | {"sent_ids": {k: (v[1], v[2]) for k, v in sent.items()}}


async def _burst(m: _Meter, fx: PeerFake, plan: Plan) -> dict[str, Any]:
    await fx.call("clear")
    s0 = await m.snap()
    b = await fx.call("burst", n=plan.burst, timeout=300)
    n, t_last = await m.drain(plan.burst, stable=1.5)
    s1 = await m.snap()
    s1 = pm.Snap(t_last, n, s1.pub_cpu, s1.redis_cpu, s1.fake_cpu)
    sent = (await fx.call("ids"))["ids"]
    fake_rate = plan.burst / ((b["t1_ns"] - b["t0_ns"]) / 1e9)
    row = _row(s0, s1, n - s0.entries, fake_rate=fake_rate)
    row["consecutive_ids"] = all(v[3] for v in sent.values())
    return row | {"sent_ids": {k: (v[1], v[2]) for k, v in sent.items()}}


async def _overload(m: _Meter, fx: PeerFake, plan: Plan, pub_pid: int) -> dict[str, Any]:
    seconds = plan.warm + plan.window
    flood = asyncio.create_task(
        fx.call("flood", rate=plan.flood_rate, seconds=seconds, per_write=plan.per_write)
    )
    try:
        await asyncio.sleep(plan.warm)
        s0 = await m.snap()
        rss: list[tuple[float, float]] = []
        end = s0.t + plan.window
        while (now := time.monotonic()) < end:
            rss.append((round(now - s0.t, 2), pm.rss_mb(pub_pid)))
            await asyncio.sleep(min(0.5, max(0.0, end - now)))
        s1 = await m.snap()
        rss.append((round(s1.t - s0.t, 2), pm.rss_mb(pub_pid)))
        f = await flood
    finally:
        if not flood.done():
            flood.cancel()
            await asyncio.gather(flood, return_exceptions=True)
    drained_n, _ = await m.drain(int(f["sent"]), stable=3.0, timeout=120)
    row = _row(s0, s1, s1.entries - s0.entries, fake_rate=f["rate"])
    row["fake_waited_share"] = f["waited_s"] / f["seconds"]
    row["rss_samples"] = rss
    row["drained_to"] = drained_n
    return row | {"sent_ids": {k: tuple(v) for k, v in f["ids"].items()}}


async def session(pub: Publisher, plan: Plan, env: PeerEnv | None) -> list[dict[str, Any]]:
    """The three loads through ``pub``: one row each (``error`` set when a load failed)."""
    rows: list[dict[str, Any]] = []
    labels = plan.labels()
    trade_id = pm.cryptofeed_id if pub.kind == "cryptofeed" else pm.marketbus_id
    duration = plan.warm + plan.window + 1.0  # the measured window ends inside the replay
    spec = {"symbols": plan.markets, "rate": plan.steady_rate, "duration": duration}
    with running_redis() as rs, tempfile.TemporaryDirectory(prefix="mb-peer-") as tmp:
        if rs.proc is None:
            raise RuntimeError("redis-server did not start")
        redis_pid = rs.proc.pid
        r = aioredis.Redis.from_url(rs.url)
        try:
            async with PeerFake(spec) as fx:
                keys = {s.replace("/", ""): stream_of(pub, s) for s in fx.symbols}
                async with _child(pub, env, rs.url, rs.port, fx, tmp) as child:
                    streams = streams_for(fx.symbols, ("aggTrade",))
                    await fx.call("wait_subscribed", streams=streams, timeout=60)
                    m = _Meter(r, keys, child.pid, redis_pid, fx.pid)
                    for load in ("steady", "burst", "overload"):
                        base = {"load": labels[load], "load_key": load, "publisher": pub.label}
                        pm.reset_peak(child.pid)
                        try:
                            if load == "steady":
                                row = await _steady(m, fx, plan)
                            elif load == "burst":
                                row = await _burst(m, fx, plan)
                            else:
                                row = await _overload(m, fx, plan, child.pid)
                            row["peak_rss_mb"] = pm.peak_rss_mb(child.pid)
                            row["bytes_per_entry"] = await pm.bytes_per_entry(r, keys.values())
                            t_read = time.monotonic()
                            lost = await m.losses(row.pop("sent_ids"), trade_id)
                            row["readback_s"] = time.monotonic() - t_read
                            row.update(
                                lost=lost.lost, sent=lost.sent, stored=lost.stored,
                                duplicates=lost.duplicates, foreign=lost.foreign,
                                lost_per_market=lost.per_market,
                            )  # fmt: skip
                            row["publisher_stats"] = await child.stats()
                        except Exception as e:
                            row = {"error": f"{type(e).__name__}: {e}"[:500]}
                        rows.append(base | row)
                        await r.flushall()
        finally:
            await r.aclose()
    return rows
