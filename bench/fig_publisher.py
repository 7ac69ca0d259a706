"""Figure 1: records/s the publisher writes to Redis from the fake exchange, vs a bare reader.

The fake runs in its own process (``bench.fakeproc``): 50 markets, aggTrade + ticker, one
websocket connection (``streamLimits.spot = 1``). Per session: a steady synthetic rate for a
few seconds, then a back-to-back burst of aggTrades (``send_burst``). The publisher runs in
this process (so ``--profile`` sees it); its rate is counted at the sink (records Redis
acknowledged). The reference is a bare aiohttp + orjson reader of the same fake and the same
frames, building a small dict per frame. Lossless: frames the fake wrote per market and kind
vs ``XLEN`` of each stream; any difference fails the figure.
"""

from __future__ import annotations

import statistics
import time
from collections import Counter
from typing import Any

import aiohttp
import orjson
import redis.asyncio as aioredis

from bench.common import SYMBOLS, Context, Figure, Profiler, wait_until
from bench.fakeproc import FakeProc, streams_for
from bench.pubproc import publisher_settings
from marketbus.keys import stream_key
from tests.redis_server import running_redis

KIND_CHANNEL = {"aggTrade": "trades", "24hrTicker": "ticker"}


class BareReader:
    """The reference: one aiohttp websocket, orjson, a small dict per frame, counted."""

    def __init__(self, ws_url: str, stamps: bool = False) -> None:
        self.url = ws_url
        self.stamps: dict[tuple[str, int], int] | None = {} if stamps else None
        self.count = 0
        self.per: Counter[str] = Counter()
        self.last_ns = 0
        self._session: aiohttp.ClientSession | None = None
        self._task: Any = None

    async def start(self) -> None:
        import asyncio

        self._session = aiohttp.ClientSession()
        ws = await self._session.ws_connect(self.url, compress=0, max_msg_size=1 << 20)
        self._task = asyncio.create_task(self._run(ws))

    async def _run(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        loads = orjson.loads
        per = self.per
        text = aiohttp.WSMsgType.TEXT
        while True:
            msg = await ws.receive()
            if msg.type is not text:
                return
            d = loads(msg.data)["data"]
            rec = {"s": d["s"], "e": d["e"], "E": d["E"], "p": float(d.get("p") or d.get("c"))}
            per[rec["s"] + "|" + rec["e"]] += 1
            self.count += 1
            self.last_ns = time.time_ns()
            if self.stamps is not None and rec["e"] == "aggTrade":
                self.stamps[(rec["s"], d["a"])] = self.last_ns

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._session is not None:
            await self._session.close()


async def _stored(redis_url: str, symbols: list[str]) -> dict[str, int]:
    r = aioredis.Redis.from_url(redis_url)
    try:
        pipe = r.pipeline(transaction=False)
        keys = [(s, k) for s in symbols for k in KIND_CHANNEL]
        for s, k in keys:
            pipe.xlen(stream_key("binance", s, KIND_CHANNEL[k]))
        res = await pipe.execute()
    finally:
        await r.aclose()
    return {f"{s}|{k}": int(n) for (s, k), n in zip(keys, res, strict=True)}


def _compare(sent: dict[str, int], got: dict[str, int]) -> dict[str, Any]:
    keys = set(sent) | set(got)
    diff = {k: (sent.get(k, 0), got.get(k, 0)) for k in keys if sent.get(k, 0) != got.get(k, 0)}
    return {
        "sent": sum(sent.values()),
        "stored": sum(got.values()),
        "markets": len({k.split("|")[0] for k in sent}),
        "mismatched": dict(sorted(diff.items())[:10]),
        "lost": sum(max(0, a - b) for a, b in diff.values()),
    }


async def publisher_session(
    ctx: Context, rate: float, duration: float, burst: int, parser: str = "ccxt"
) -> dict[str, Any]:
    from publisher.app import Publisher

    out: dict[str, Any] = {}
    with running_redis() as rs:
        spec = {"symbols": SYMBOLS, "rate": rate, "duration": duration}
        async with FakeProc(spec) as fx:
            settings = publisher_settings(
                rs.url, fx.base_url, fx.symbols, maxlen=1_000_000, parser=parser
            )
            async with Publisher(settings) as pub:
                await fx.call("wait_subscribed", streams=streams_for(fx.symbols), timeout=60)
                sink = pub.sink
                worker = next(iter(pub.workers.values()))
                with Profiler(ctx, f"publisher-steady-{parser}"):
                    t0 = (await fx.call("play"))["t_ns"]
                    done_ns = (await fx.call("wait_done", timeout=duration + 120))["t_ns"]
                    c = await fx.call("counts")
                    expected = int(c["frames"])
                    try:
                        await wait_until(
                            lambda: sink.stats.written >= expected, 60, "steady records stored"
                        )
                    except TimeoutError as e:
                        out["error"] = str(e)
                    t1 = time.time_ns()
                # the rate frames flowed at, over the whole span (first sent -> last stored)
                out["steady_rate"] = sink.stats.written / ((t1 - t0) / 1e9)
                out["offered_rate"] = expected / ((done_ns - t0) / 1e9)
                out["steady_drain_ms"] = (t1 - done_ns) / 1e6
                out["conns"] = c["conns"]
                w0 = sink.stats.written
                with Profiler(ctx, f"publisher-burst-{parser}"):
                    b = await fx.call("burst", n=burst, timeout=300)
                    try:
                        await wait_until(
                            lambda: sink.stats.written >= w0 + burst, 120, "burst records stored"
                        )
                    except TimeoutError as e:
                        out["error"] = str(e)
                    t1 = time.time_ns()
                out["burst_rate"] = (sink.stats.written - w0) / ((t1 - b["t0_ns"]) / 1e9)
                out["burst_fake_rate"] = burst / ((b["t1_ns"] - b["t0_ns"]) / 1e9)
                sent = (await fx.call("counts"))["counts"]
                out["lossless"] = _compare(sent, await _stored(rs.url, fx.symbols))
                out["sink_overflow"] = sink.stats.overflow
                out["worker_invalid"] = worker.stats.invalid
                out["trade_gaps"] = worker.trade_ids.gaps
    return out


async def reader_session(rate: float, duration: float, burst: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    spec = {"symbols": SYMBOLS, "rate": rate, "duration": duration}
    async with FakeProc(spec) as fx:
        streams = streams_for(fx.symbols)
        ws = fx.base_url.replace("http://", "ws://") + "/stream?streams=" + "/".join(streams)
        reader = BareReader(ws)
        await reader.start()
        try:
            await fx.call("wait_subscribed", streams=streams, timeout=30)
            t0 = (await fx.call("play"))["t_ns"]
            done_ns = (await fx.call("wait_done", timeout=duration + 120))["t_ns"]
            expected = int((await fx.call("counts"))["frames"])
            await wait_until(lambda: reader.count >= expected, 60, "reader frames")
            out["steady_rate"] = reader.count / ((reader.last_ns - t0) / 1e9)
            out["offered_rate"] = expected / ((done_ns - t0) / 1e9)
            n0 = reader.count
            b = await fx.call("burst", n=burst, timeout=300)
            await wait_until(lambda: reader.count >= n0 + burst, 60, "reader burst frames")
            out["burst_rate"] = burst / ((reader.last_ns - b["t0_ns"]) / 1e9)
            sent = (await fx.call("counts"))["counts"]
            names = {s.replace("/", ""): s for s in fx.symbols}
            got = {f"{names[k.split('|')[0]]}|{k.split('|')[1]}": v for k, v in reader.per.items()}
            out["lossless"] = _compare(sent, got)
        finally:
            await reader.close()
    return out


async def run(ctx: Context) -> list[Figure]:
    rate = 5_000.0
    duration = 2.0 if ctx.quick else 4.0
    burst = ctx.pick(50_000, 10_000)
    pubs = [await publisher_session(ctx, rate, duration, burst) for _ in range(ctx.repeats)]
    natives = [
        await publisher_session(ctx, rate, duration, burst, parser="native")
        for _ in range(ctx.repeats)
    ]
    refs = [await reader_session(rate, duration, burst) for _ in range(ctx.repeats)]
    lost = sum(p["lossless"]["lost"] for p in pubs + natives)
    failed = None
    if lost or any("error" in p for p in pubs + natives):
        failed = f"LOST {lost} records: " + "; ".join(
            str(p.get("error") or p["lossless"]["mismatched"]) for p in pubs + natives
        )
    notes = {
        "sessions": [
            {k: v for k, v in p.items() if k not in ("lossless",)} | {"lossless": p["lossless"]}
            for p in pubs
        ],
        "reference_sessions": refs,
        "sent_vs_stored": [(p["lossless"]["sent"], p["lossless"]["stored"]) for p in pubs],
    }
    burst_fig = Figure(
        name=f"1a publisher burst ({burst // 1000}k aggTrades, {SYMBOLS} mkts)",
        unit="records/s",
        runs=[p["burst_rate"] for p in pubs],
        reference="bare aiohttp+orjson reader, same burst",
        reference_runs=[r["burst_rate"] for r in refs],
        target="lossless; native parser >= 5x ccxt path",
        met=not failed,
        failed=failed,
        notes=notes,
    )
    steady_fig = Figure(
        name=f"1b publisher steady {rate / 1000:g}k/s (trades+tickers, {SYMBOLS} mkts)",
        unit="records/s",
        runs=[p["steady_rate"] for p in pubs],
        reference="bare reader, same rate",
        reference_runs=[r["steady_rate"] for r in refs],
        target="keeps up, lossless",
        met=not failed and all(p["steady_drain_ms"] < 1000 for p in pubs),
        failed=failed,
        notes={
            "drain_after_last_frame_ms": [round(p["steady_drain_ms"], 1) for p in pubs],
            "sent_vs_stored": notes["sent_vs_stored"],
        },
    )
    native_ratio = statistics.median(n["burst_rate"] for n in natives) / statistics.median(
        p["burst_rate"] for p in pubs
    )
    native_fig = Figure(
        name=f"1c publisher burst, native parser ({burst // 1000}k aggTrades)",
        unit="records/s",
        runs=[n["burst_rate"] for n in natives],
        reference="the ccxt parser path, same burst (1a)",
        reference_runs=[p["burst_rate"] for p in pubs],
        target=">= 5x the ccxt path, lossless",
        met=not failed and native_ratio >= 5,
        failed=failed,
        notes={
            "sent_vs_stored": [(n["lossless"]["sent"], n["lossless"]["stored"]) for n in natives]
        },
    )
    native_steady = Figure(
        name=f"1d publisher steady {rate / 1000:g}k/s, native parser",
        unit="records/s",
        runs=[n["steady_rate"] for n in natives],
        reference="bare reader, same rate",
        reference_runs=[r["steady_rate"] for r in refs],
        target="keeps up, lossless",
        met=not failed and all(n["steady_drain_ms"] < 1000 for n in natives),
        failed=failed,
        notes={"drain_after_last_frame_ms": [round(n["steady_drain_ms"], 1) for n in natives]},
    )
    return [burst_fig, steady_fig, native_fig, native_steady]
