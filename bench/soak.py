"""Figure 6 (``make soak``): publisher and consumer RSS over time at a steady 5k records/s.

    python -m bench.soak [--minutes 10] [--rate 5000] [--interval 10]

Four processes: the fake exchange (endless synthetic source, 50 markets, aggTrade + ticker),
the publisher, the consumer (ring buffers of 5,000 rows per stream, so they fill within the
first ~2 minutes and the rest of the run shows steady state), and redis-server. RSS of the
publisher and the consumer is sampled every ``--interval`` seconds, printed, and saved to
``bench-results/soak-<UTC timestamp>.json``. Verdict: growth over the second half of the run,
in MB per minute (flat = under 0.5 MB/min for each process).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.common import SYMBOLS, quiet_logs, rss_bytes
from bench.fakeproc import FakeProc, streams_for
from bench.pubproc import Proc
from tests.redis_server import running_redis

FLAT_MB_PER_MIN = 0.5


def slope_mb_per_min(samples: list[dict[str, Any]], key: str) -> float:
    """Least-squares slope of ``key`` (bytes) over the second half of the samples."""
    half = samples[len(samples) // 2 :]
    if len(half) < 2:
        return 0.0
    xs = [s["t_s"] / 60 for s in half]
    ys = [s[key] / 1e6 for s in half]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


async def soak(minutes: float, rate: float, interval: float, console: Console) -> dict[str, Any]:
    samples: list[dict[str, Any]] = []
    with running_redis() as rs:
        spec = {"symbols": SYMBOLS, "rate": rate, "sent_limit": 100_000}
        async with FakeProc(spec) as fx:
            pspec = {"redis": rs.url, "base_url": fx.base_url, "symbols": fx.symbols}
            async with Proc("publisher", pspec) as pub:
                await fx.call("wait_subscribed", streams=streams_for(fx.symbols), timeout=60)
                cspec = {
                    "redis": rs.url,
                    "symbols": fx.symbols,
                    "capacity": 5_000,
                    "callback": True,
                }
                async with Proc("consumer", cspec) as con:
                    await fx.call("play")
                    t0 = time.monotonic()
                    end = t0 + minutes * 60
                    while True:
                        ps, cs = await pub.stats(), await con.stats()
                        s = {
                            "t_s": round(time.monotonic() - t0, 1),
                            "publisher_rss": rss_bytes(pub.pid),
                            "consumer_rss": rss_bytes(con.pid),
                            "written": ps["written"],
                            "received": cs["received"],
                            "consumer_backlog": ps["written"] - cs["received"],
                            # the source is clocked: what it offered by now, less what is stored
                            "publisher_behind": round(rate * (time.monotonic() - t0))
                            - ps["written"],
                        }
                        samples.append(s)
                        console.print(
                            f"t={s['t_s']:>6.0f}s  publisher {s['publisher_rss'] / 1e6:7.1f} MB"
                            f"  consumer {s['consumer_rss'] / 1e6:7.1f} MB  written"
                            f" {s['written']:>9}  received {s['received']:>9}"
                            f"  publisher behind {s['publisher_behind']:>8}"
                        )
                        if time.monotonic() >= end:
                            break
                        await asyncio.sleep(min(interval, max(0.0, end - time.monotonic())))
    first, last = samples[0], samples[-1]
    elapsed = max(last["t_s"], 1e-9)
    result = {
        "minutes": minutes,
        "rate": rate,
        "interval_s": interval,
        "achieved_records_per_s": last["written"] / elapsed,
        "publisher_rss_mb": [first["publisher_rss"] / 1e6, last["publisher_rss"] / 1e6],
        "consumer_rss_mb": [first["consumer_rss"] / 1e6, last["consumer_rss"] / 1e6],
        "publisher_slope_mb_per_min": slope_mb_per_min(samples, "publisher_rss"),
        "consumer_slope_mb_per_min": slope_mb_per_min(samples, "consumer_rss"),
        "samples": samples,
    }
    result["flat"] = all(
        abs(result[k]) < FLAT_MB_PER_MIN
        for k in ("publisher_slope_mb_per_min", "consumer_slope_mb_per_min")
    )
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=5_000.0, help="frames/s (records/s) offered")
    ap.add_argument("--interval", type=float, default=10.0, help="seconds between RSS samples")
    ap.add_argument("--out", default="bench-results")
    args = ap.parse_args(argv)
    quiet_logs()
    console = Console()
    res = asyncio.run(soak(args.minutes, args.rate, args.interval, console))
    t = Table(title=f"soak: {args.minutes:g} min at {args.rate:g} records/s")
    for col in ("process", "RSS first (MB)", "RSS last (MB)", "slope 2nd half (MB/min)"):
        t.add_column(col)
    for p in ("publisher", "consumer"):
        a, b = res[f"{p}_rss_mb"]
        t.add_row(p, f"{a:.1f}", f"{b:.1f}", f"{res[f'{p}_slope_mb_per_min']:+.2f}")
    console.print(t)
    console.print(
        f"achieved {res['achieved_records_per_s']:.0f} records/s; "
        f"{'FLAT' if res['flat'] else 'GROWING'} (threshold {FLAT_MB_PER_MIN} MB/min)"
    )
    os.makedirs(args.out, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = os.path.join(args.out, f"soak-{stamp}.json")
    with open(path, "w") as f:
        json.dump(res, f, indent=1)
    console.print(f"saved {path}")


if __name__ == "__main__":
    main()
