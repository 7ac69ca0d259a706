"""Figure 5: end-to-end latency, fake exchange frame written -> consumer callback.

Four processes, as deployed: the fake (``bench.fakeproc``), the publisher
(``bench.pubproc``), redis-server, and the consumer in this process with an ``on_record``
callback that stamps ``time.time_ns()``. 50 markets, aggTrade + ticker, at 1k/s and 10k/s.
Each trade record is matched to the fake's ``SentFrame.sent_ns`` by (symbol, trade id); the
record's own ``recv_ns`` (the publisher's receive time) splits the path into exchange ->
publisher and publisher -> consumer. All clocks are this machine's ``time.time_ns()``. The
first 0.5 s is warm-up and dropped. Reference: a bare aiohttp+orjson reader's latency from
the same fake at the same rate (the floor of the websocket hop).
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import SYMBOLS, Context, Figure, percentile, wait_until
from bench.fakeproc import FakeProc, streams_for
from bench.fig_publisher import BareReader
from bench.pubproc import Proc
from consumers import Consumer
from marketbus.models import Channel, Record
from tests.redis_server import running_redis

WARMUP_NS = 500_000_000


def _stats(lat_ns: list[int]) -> dict[str, float]:
    v = sorted(x / 1e6 for x in lat_ns)
    return {
        "p50": percentile(v, 50),
        "p99": percentile(v, 99),
        "max": v[-1] if v else 0.0,
        "n": len(v),
    }


async def pipeline_session(rate: float, duration: float, parser: str = "ccxt") -> dict[str, Any]:
    with running_redis() as rs:
        spec = {"symbols": SYMBOLS, "rate": rate, "duration": duration}
        async with FakeProc(spec) as fx:
            pspec = {
                "redis": rs.url,
                "base_url": fx.base_url,
                "symbols": fx.symbols,
                "parser": parser,
            }
            async with Proc("publisher", pspec) as pub:
                await fx.call("wait_subscribed", streams=streams_for(fx.symbols), timeout=60)
                got: list[tuple[str, str, int, int]] = []
                tick_lat: list[int] = []

                def on_record(r: Record) -> None:
                    now = time.time_ns()
                    if r.channel is Channel.TRADES:
                        got.append((r.symbol, r.id, r.recv_ns, now))
                    else:
                        tick_lat.append(now - r.recv_ns)

                c = Consumer(
                    rs.url,
                    [f"binance:{s}" for s in fx.symbols],
                    backfill=0,
                    capacity=50_000,
                    block_ms=100,
                    count=1000,
                )
                c.on_record(on_record)
                async with c:
                    t0 = (await fx.call("play"))["t_ns"]
                    await fx.call("wait_done", timeout=duration + 60)
                    sent = await fx.call("trades")
                    n = len(sent["trades"])
                    await wait_until(lambda: len(got) >= n, 30, "trades at the consumer")
                pstats = await pub.stats()
    sent_ns = {(s, str(a)): ns for s, a, ns in sent["trades"]}
    e2e, hop1, hop2 = [], [], []
    for sym, tid, recv_ns, cb_ns in got:
        s_ns = sent_ns.get((sym, tid))
        if s_ns is None or s_ns - t0 < WARMUP_NS:
            continue
        e2e.append(cb_ns - s_ns)
        hop1.append(recv_ns - s_ns)
        hop2.append(cb_ns - recv_ns)
    return {
        "e2e": _stats(e2e),
        "exchange_to_publisher": _stats(hop1),
        "publisher_to_consumer": _stats(hop2),
        "ticker_publisher_to_consumer": _stats(tick_lat),
        "trades": n,
        "publisher": pstats,
    }


async def reader_session(rate: float, duration: float) -> dict[str, float]:
    spec = {"symbols": SYMBOLS, "rate": rate, "duration": duration}
    async with FakeProc(spec) as fx:
        streams = streams_for(fx.symbols)
        ws = fx.base_url.replace("http://", "ws://") + "/stream?streams=" + "/".join(streams)
        reader = BareReader(ws, stamps=True)
        await reader.start()
        try:
            await fx.call("wait_subscribed", streams=streams, timeout=30)
            t0 = (await fx.call("play"))["t_ns"]
            await fx.call("wait_done", timeout=duration + 60)
            sent = (await fx.call("trades"))["trades"]
            stamps = reader.stamps or {}
            await wait_until(lambda: len(stamps) >= len(sent), 30, "reader trades")
        finally:
            await reader.close()
    lat = []
    for sym, a, ns in sent:
        got = stamps.get((sym.replace("/", ""), a))
        if got is not None and ns - t0 >= WARMUP_NS:
            lat.append(got - ns)
    return _stats(lat)


async def run(ctx: Context) -> list[Figure]:
    duration = 2.0 if ctx.quick else 3.0
    figs: list[Figure] = []
    refs_by_rate: dict[float, list[dict[str, Any]]] = {}
    for rate, parser in ((1_000.0, "ccxt"), (10_000.0, "ccxt"), (10_000.0, "native")):
        runs = [await pipeline_session(rate, duration, parser) for _ in range(ctx.repeats)]
        if rate not in refs_by_rate:
            refs_by_rate[rate] = [await reader_session(rate, duration) for _ in range(ctx.repeats)]
        refs = refs_by_rate[rate]
        label = f"{rate / 1000:g}k/s" + (", native parser" if parser == "native" else "")
        for q in ("p50", "p99", "max"):
            vals = [r["e2e"][q] for r in runs]
            target = met = None
            if q == "p99" and rate == 10_000.0:
                target, met = "< 5 ms", sorted(vals)[len(vals) // 2] < 5.0
            figs.append(
                Figure(
                    name=f"5 e2e latency {q} @{label} (exchange->callback)",
                    unit="ms",
                    runs=vals,
                    better="lower",
                    reference="bare reader, exchange->reader",
                    reference_runs=[r[q] for r in refs],
                    target=target,
                    met=met,
                    notes={
                        "exchange_to_publisher": [r["exchange_to_publisher"] for r in runs],
                        "publisher_to_consumer": [r["publisher_to_consumer"] for r in runs],
                        "ticker_publisher_to_consumer": [
                            r["ticker_publisher_to_consumer"] for r in runs
                        ],
                        "publisher_counters": [r["publisher"] for r in runs],
                    }
                    if q == "p99"
                    else {},
                )
            )
    return figs
