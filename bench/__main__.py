"""``python -m bench`` (``make bench``): every figure, a table, and JSON under bench-results/.

    python -m bench                 full run (< 5 minutes)
    python -m bench --quick         smoke run (~1 minute): smaller counts, 1 repeat
    python -m bench --only latency  one figure group: publisher, write, consumer, ringbuffer,
                                    latency, peer, scale (``make soak`` runs
                                    ``python -m bench.soak``)
    python -m bench --profile DIR   also write pyinstrument profiles (if installed) to DIR

Each figure is repeated (3 times by default, ``--repeats``), min and median reported, next to
the reference measured in the same run and the ratio median / reference median.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import math
import os
import platform
import signal
import sys
import time
import traceback
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.table import Table

from bench import (
    fig_consumer,
    fig_cost,
    fig_history,
    fig_latency,
    fig_peer,
    fig_publisher,
    fig_ringbuffer,
    fig_scale,
    fig_write,
)
from bench.common import Context, Figure, quiet_logs, use_loop

GROUPS: dict[str, Callable[[Context], Awaitable[list[Figure]]]] = {
    "publisher": fig_publisher.run,
    "write": fig_write.run,
    "consumer": fig_consumer.run,
    "ringbuffer": fig_ringbuffer.run,
    "latency": fig_latency.run,
    "peer": fig_peer.run,
    "scale": fig_scale.run,
    "cost": fig_cost.run,
    "history": fig_history.run,
}


def _fmt(v: float | None, unit: str = "") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if unit.endswith("/s") or abs(v) >= 10_000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def table(figs: list[Figure], title: str) -> Table:
    t = Table(title=title, show_lines=False)
    for col, just in (
        ("figure", "left"),
        ("min", "right"),
        ("median", "right"),
        ("unit", "left"),
        ("reference (same run)", "left"),
        ("ref median", "right"),
        ("ratio", "right"),
        ("target", "left"),
        ("met", "left"),
    ):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for f in figs:
        worst = f.min
        ref = f.ref_median
        ref_s = _fmt(ref, f.unit)
        ratio = f.ratio
        met = "FAILED" if f.failed else ("yes" if f.met else ("no" if f.met is False else "-"))
        t.add_row(
            f.name,
            _fmt(worst, f.unit),
            _fmt(f.median, f.unit),
            f.unit,
            f.reference or "-",
            ref_s,
            "-" if ratio is None else f"{ratio:.2f}x",
            f.target or "-",
            met,
        )
    return t


def extra_tables(figs: list[Figure]) -> list[Table]:
    """Tables a group keeps in a figure's ``notes["table"]`` (title, columns, rows of text),
    printed after the main table (the peer group's one row per load and publisher)."""
    out = []
    for f in figs:
        spec = f.notes.get("table")
        if not spec:
            continue
        t = Table(title=spec["title"])
        for i, col in enumerate(spec["columns"]):
            t.add_column(col, justify="left" if i < 2 else "right")
        for row in spec["rows"]:
            t.add_row(*row)
        out.append(t)
    return out


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("ccxt", "redis", "hiredis", "aiohttp", "orjson", "msgpack", "pyarrow", "numpy"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "-"
    return out


async def run_all(ctx: Context, names: list[str], console: Console) -> list[Figure]:
    figs: list[Figure] = []
    for name in names:
        t = time.monotonic()
        console.print(f"[bold]running {name}[/] ...")
        try:
            got = await GROUPS[name](ctx)
        except Exception as e:
            traceback.print_exc()
            got = [Figure(name=f"{name}: crashed", unit="-", runs=[], failed=repr(e)[:300])]
        figs.extend(got)
        console.print(f"  {name} done in {time.monotonic() - t:.1f} s")
    return figs


def _on_sigterm(signum: int, frame: object) -> None:
    # unwind like Ctrl-C, so redis-servers and child processes are stopped on the way out
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, _on_sigterm)
    ap = argparse.ArgumentParser(prog="python -m bench", description="marketbus benchmarks")
    ap.add_argument("--quick", action="store_true", help="smoke run: smaller counts, 1 repeat")
    ap.add_argument("--only", action="append", choices=sorted(GROUPS), help="run one group")
    ap.add_argument("--repeats", type=int, default=None, help="runs per figure (default 3)")
    ap.add_argument("--profile", metavar="DIR", default=None, help="pyinstrument profiles")
    ap.add_argument("--out", default="bench-results", help="where the JSON goes")
    ap.add_argument(
        "--loop",
        choices=("asyncio", "uvloop"),
        default=None,
        help="every process on this loop (default: publishers on uvloop as the product runs, "
        "the rest on asyncio)",
    )
    args = ap.parse_args(argv)
    loop_name = use_loop(args.loop)
    if args.loop is None:
        loop_name = (
            f"publishers on {use_loop(publisher=True)} (as marketbus publish), the rest {loop_name}"
        )
        use_loop()  # this process (bare readers, consumers) stays on asyncio
    repeats = args.repeats or (1 if args.quick else 3)
    ctx = Context(quick=args.quick, repeats=repeats, profile_dir=args.profile)
    quiet_logs()
    console = Console(width=None if sys.stdout.isatty() else 220)
    names = args.only or list(GROUPS)
    load_before = os.getloadavg()
    t0 = time.monotonic()
    figs = asyncio.run(run_all(ctx, names, console))
    elapsed = time.monotonic() - t0
    load_after = os.getloadavg()
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    title = (
        f"marketbus bench {stamp} ({'quick, ' if args.quick else ''}{repeats} runs/figure, "
        f"{elapsed:.0f} s, {loop_name}, load {load_before[0]:.1f} -> {load_after[0]:.1f}, "
        f"{os.cpu_count()} cpus)"
    )
    console.print(table(figs, title))
    for extra in extra_tables(figs):
        console.print(extra)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"{stamp}.json")
    doc: dict[str, Any] = {
        "timestamp": stamp,
        "quick": args.quick,
        "repeats": repeats,
        "elapsed_s": elapsed,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "argv": sys.argv,
        "loop": loop_name,
        "figures": [f.to_json() for f in figs],
    }
    with open(path, "w") as f:
        json.dump(doc, f, indent=1, default=str)
    console.print(f"saved {path}")
    failed = [f.name for f in figs if f.failed]
    if failed:
        console.print(f"[red]FAILED: {', '.join(failed)}[/]")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
