"""Group ``peer``: marketbus side by side with cryptofeed, same fake, same loads, same run.

Four publishers, each in its own session (``bench.peer_session``): cryptofeed (pinned in
``bench.peer_venv``, its Binance feed and Redis Streams ``TradeStream`` backend) with its
default settings and with its lossless setting (``overflow='block'``: the backend queue
waits instead of dropping its oldest entry when full), marketbus through CCXT's parser and
through the native parser. Three loads on 4 Binance markets: the steady 4k trades/s replay,
the 50k burst, and a sustained overload (150k trades/s offered, one frame per socket write).

The peer table (one row per load and publisher, ratios to cryptofeed's defaults) is printed
after the main table and kept in the JSON (``notes.peer_rows`` of figure P1); the figures
below carry the targets of issue #13, each met or missed.
"""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from bench import peer_venv
from bench.common import Context, Figure
from bench.peer_session import Plan, Publisher, session
from bench.peer_table import COLUMNS, cells
from marketbus.settings import ExchangeSettings

CF = f"cryptofeed {peer_venv.CRYPTOFEED_VERSION}"
CF_DEFAULT = Publisher(f"{CF} (defaults)", "cryptofeed", "")
CF_LOSSLESS = Publisher(f"{CF} (overflow=block)", "cryptofeed", "block")
MB_CCXT = Publisher("marketbus --parser ccxt", "marketbus", "ccxt")
MB_NATIVE = Publisher("marketbus --parser native", "marketbus", "native")
MB_LINGER = Publisher("marketbus --parser native, linger_ms=1", "marketbus", "native", 1.0)
PUBLISHERS = (CF_DEFAULT, CF_LOSSLESS, MB_CCXT, MB_NATIVE, MB_LINGER)
FLAT_MB = 5.0
"""RSS is flat when it grew at most this much over the second half of the overload window."""


def plan(ctx: Context) -> Plan:
    return Plan(
        markets=4,
        steady_rate=4_000,
        warm=ctx.pick(3, 2),
        window=ctx.pick(8, 4),
        burst=ctx.pick(50_000, 10_000),
        flood_rate=150_000,
        per_write=1,
    )


def _find(rows: list[dict[str, Any]], load: str, pub: Publisher) -> dict[str, Any] | None:
    for r in rows:
        if r["load_key"] == load and r["publisher"] == pub.label and not r.get("error"):
            return r
    return None


def add_ratios(rows: list[dict[str, Any]]) -> None:
    """records/s and CPU per record of each row over cryptofeed's (defaults), same load."""
    for r in rows:
        ref = _find(rows, r["load_key"], CF_DEFAULT)
        if r.get("error") or ref is None:
            continue
        if r["records_s"] and ref["records_s"]:
            r["ratio_rate"] = r["records_s"] / ref["records_s"]
        if r["pub_us"] == r["pub_us"] and ref["pub_us"]:  # not nan
            r["ratio_cpu"] = r["pub_us"] / ref["pub_us"]


def _versus(
    rows: list[dict[str, Any]], name: str, load: str, pub: Publisher, key: str, unit: str,
    target: str, ok: Any, better: str = "higher",
) -> Figure:  # fmt: skip
    """A figure of ``pub``'s ``key`` on ``load`` against cryptofeed's defaults, same run."""
    row, ref = _find(rows, load, pub), _find(rows, load, CF_DEFAULT)
    if row is None or ref is None:
        return Figure(name=name, unit=unit, runs=[], target=target, failed="no result")
    fig = Figure(
        name=name,
        unit=unit,
        runs=[row[key]],
        better=better,
        reference=f"{CF_DEFAULT.label}, same load",
        reference_runs=[ref[key]],
        target=target,
    )
    fig.met = fig.ratio is not None and bool(ok(fig.ratio))
    fig.notes = {k: row.get(k) for k in ("fake_rate", "fake_waited_share", "lost", "sent")}
    return fig


def _lost(rows: list[dict[str, Any]], pub: Publisher, label: str) -> Figure:
    name = f"P4 peer overload: records lost, {pub.label}"
    row = _find(rows, "overload", pub)
    if row is None:
        return Figure(name=name, unit="records", runs=[], failed="no result")
    return Figure(
        name=name,
        unit="records",
        runs=[row["lost"]],
        better="lower",
        reference=f"of {row['sent']:,} sent ({label})",
        target="0 while Redis is up",
        met=row["lost"] == 0,
        notes={"per_market": row["lost_per_market"], "stats": row.get("publisher_stats")},
    )


def _rss(rows: list[dict[str, Any]], pub: Publisher) -> Figure:
    name = f"P5 peer overload: publisher peak RSS, {pub.label}"
    row = _find(rows, "overload", pub)
    if row is None:
        return Figure(name=name, unit="MB", runs=[], failed="no result")
    samples = [mb for _, mb in row["rss_samples"]]
    start, mid, end = samples[0], samples[len(samples) // 2], samples[-1]
    return Figure(
        name=name,
        unit="MB",
        runs=[row["peak_rss_mb"]],
        better="lower",
        reference=f"RSS start {start:.0f} -> mid {mid:.0f} -> end {end:.0f} MB",
        target=f"flat: <= +{FLAT_MB:g} MB over the window's 2nd half",
        met=end - mid <= FLAT_MB,
        notes={"rss_samples": row["rss_samples"]},
    )


def figures(rows: list[dict[str, Any]], p: Plan, env: peer_venv.PeerEnv) -> list[Figure]:
    default = ExchangeSettings.model_fields["parser"].default
    native = MB_NATIVE.label + (" (default)" if default == "native" else "")
    figs = [
        _versus(rows, f"P1 peer overload: records/s, {native}", "overload", MB_NATIVE,
                "records_s", "records/s", ">= 2x cryptofeed (default path)", lambda x: x >= 2),
        _versus(rows, f"P2 peer overload: records/s, {MB_CCXT.label}", "overload", MB_CCXT,
                "records_s", "records/s", ">= 1x cryptofeed", lambda x: x >= 1),
        _versus(rows, f"P3 peer steady {p.steady_rate / 1000:g}k/s: CPU/record, {native}",
                "steady", MB_NATIVE, "pub_us", "µs", "<= 0.5x cryptofeed", lambda x: x <= 0.5,
                better="lower"),
        _versus(rows, f"P3b peer steady {p.steady_rate / 1000:g}k/s: CPU/record, {MB_LINGER.label}",
                "steady", MB_LINGER, "pub_us", "µs", "<= 0.5x cryptofeed", lambda x: x <= 0.5,
                better="lower"),
        _lost(rows, MB_NATIVE, "native"),
        _lost(rows, MB_CCXT, "ccxt"),
        _rss(rows, MB_NATIVE),
        _rss(rows, MB_CCXT),
    ]  # fmt: skip
    figs[0].notes.update(
        peer_rows=rows,
        table={
            "title": f"peer: marketbus vs {CF} (same fake, same loads, same run; "
            f"ratios to {CF_DEFAULT.label})",
            "columns": list(COLUMNS),
            "rows": [cells(r) for r in rows],
        },
        plan=dataclasses.asdict(p),
        cryptofeed=env.cryptofeed,
        cryptofeed_python=env.python_version,
        cryptofeed_packages=env.packages,
        cryptofeed_lossless="TradeStream(overflow='block') (default: max_depth=10_000, "
        "overflow='drop_oldest')",
        settings_default_parser=default,
    )
    return figs


async def run(ctx: Context) -> list[Figure]:
    env = await asyncio.to_thread(peer_venv.ensure)
    p = plan(ctx)
    rows: list[dict[str, Any]] = []
    for pub in PUBLISHERS:
        try:
            rows += await session(pub, p, env)
        except Exception as e:  # one publisher failing to start leaves the others measured
            err = f"{type(e).__name__}: {e}"[-500:]
            for key, label in p.labels().items():
                rows.append({"load": label, "load_key": key, "publisher": pub.label, "error": err})
    add_ratios(rows)
    return figures(rows, p, env)
