"""Group ``cost``: CPU microseconds per record at a steady 5,000 records/s, every component.

What an operator sizes, measured in one run (``bench.cost_session``): the publisher with
the native parser and through CCXT's (each its own session, own process, uvloop as
``marketbus publish``), redis-server's write side (the publisher alone) and its read side
per consumer kind (Redis' CPU while one reader follows, less the write side's share), and
the consumer library in its own process: plain ``XREAD`` into ring buffers, the same with
an ``on_record`` callback, a group (``XREADGROUP`` + ``XACK``), plain with ``linger_ms=2``
(fewer, larger reads). References in the same run:
figure 1's bare websocket reader for the publisher, a raw redis-py ``XREAD`` without
decoding for the consumer (and for Redis' read side). Each window is cut into ``--repeats``
parts: one run each (min, median). Lossless: the fake's writes against ``entries-added``
at the end, each reader's window entry by entry. Besides the figures, a sizing table
(records/s and markets per core), the Redis memory table and the checks table.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from bench import cost_math as cm
from bench.common import Context, Figure
from bench.cost_session import READERS, CostPlan, publisher_session, reader_session
from marketbus.capacity import ENTRY_BYTES
from marketbus.models import Channel
from marketbus.settings import RedisSettings

UNIT = "µs/record"
TARGET = "lossless, 5k/s delivered"
REF_READER = "bare aiohttp+orjson reader, same fake and rate (own process)"
REF_RAW = "raw redis-py XREAD, no decoding (own process)"
REF_RAW_REDIS = "Redis read side under the raw XREAD reader"
DEFAULT_MAXLEN = int(RedisSettings.model_fields["maxlen"].default)


def plan_of(ctx: Context) -> CostPlan:
    return CostPlan(
        warm=ctx.pick(5, 3),
        window=ctx.pick(20, 6),
        parts=max(1, ctx.repeats),
        consumer_warm=ctx.pick(3, 2),
    )


def _parts(snaps: Sequence[cm.Snap], role: str, records: str) -> list[dict[str, float]]:
    return [cm.part_values(a, b, role, records) for a, b in itertools.pairwise(snaps)]


def _med(values: Sequence[float]) -> float:
    ok = [v for v in values if math.isfinite(v)]
    return statistics.median(ok) if ok else math.nan


def _min(values: Sequence[float]) -> float:
    ok = [v for v in values if math.isfinite(v)]
    return min(ok) if ok else math.nan


def _phase(row: dict[str, Any], kind: str) -> dict[str, Any] | None:
    for ph in row.get("phases") or []:
        if ph["kind"] == kind and "snaps" in ph:
            return dict(ph)
    return None


def session_problem(row: dict[str, Any]) -> str | None:
    """Why a session's figures cannot stand: its error, or a record the end check missed."""
    if row.get("error"):
        return str(row["error"])[:300]
    fin = row.get("final")
    if fin is None:
        return "no end check"
    if not fin.get("lossless"):
        return (
            f"LOST {fin.get('lost')} records: the fake wrote {fin.get('frames_sent')}, "
            f"Redis added {fin.get('entries_added')}"
        )
    return None


def balance_problem(phase: dict[str, Any]) -> str | None:
    """A reader that missed (or doubled) an entry in its window, or a check that failed."""
    for part in phase.get("balance") or [{"error": "not checked"}]:
        if "error" in part:
            return f"{phase['kind']}: {part['error']}"
        if not part["lossless"]:
            return f"{phase['kind']}: LOST {part['lost']} records in its window ({part})"
    return None


def _fig(
    name: str,
    runs: list[float],
    *,
    reference: str | None = None,
    ref_runs: Sequence[float] = (),
    ok: bool,
    failed: str | None,
    notes: dict[str, Any],
) -> Figure:
    if not runs and failed is None:
        failed = "no result"
    return Figure(
        name=name,
        unit=UNIT,
        runs=runs,
        better="lower",
        reference=reference,
        reference_runs=list(ref_runs),
        target=TARGET,
        met=ok and failed is None,
        failed=failed,
        notes=notes,
    )


def write_side(snaps: Sequence[cm.Snap]) -> list[dict[str, float]]:
    """Redis' write side per part, the publisher alone: its CPU per entry added (the
    bench's own ``XINFO`` / ``INFO`` of each snapshot are in it: ~0.3 ms of Redis time)."""
    out = []
    for a, b in itertools.pairwise(snaps):
        part = cm.part_values(a, b, "redis", "added")
        part.update(cm.redis_split(a, b))
        out.append(part)
    return out


def read_parts(snaps: Sequence[cm.Snap], write_alone_us: float) -> list[dict[str, float]]:
    """Redis' read side per part while a reader follows, by difference: its CPU less the
    write side measured alone (µs per entry) times the entries added, per record the reader
    received. Beside it: Redis' whole CPU per record, commandstats' proportional share
    (``split_us``, biased towards the reads), reads a second, records per read, and µs
    Redis spent executing each read."""
    out = []
    for a, b in itertools.pairwise(snaps):
        part = cm.part_values(a, b, "redis", "received")
        split = cm.redis_split(a, b)
        added = int(b.added or 0) - int(a.added or 0)
        calls = split["read_calls"]
        part.update(
            split,
            redis_total_us=part["us"],
            us=cm.read_side_us(part["cpu_s"], write_alone_us, added, int(part["records"])),
            split_us=cm.us_per_record(split["read_s"], part["records"]),
            reads_s=calls / part["seconds"],
            records_per_read=part["records"] / calls if calls else math.nan,
            exec_us_per_read=split["exec_read_s"] * 1e6 / calls if calls else math.nan,
        )
        out.append(part)
    return out


def _keeps_up(parts: Sequence[dict[str, float]], rate: float) -> bool:
    return bool(parts) and all(p["records_s"] >= rate * (1 - cm.RATE_TOLERANCE) for p in parts)


def publisher_figure(
    name: str, row: dict[str, Any], ref: dict[str, Any], plan: CostPlan
) -> tuple[Figure, list[dict[str, float]]]:
    problem = session_problem(row)
    snaps = row.get("snaps") or []
    parts = _parts(snaps, "publisher", "written")
    ref_parts = _parts(ref.get("snaps") or [], "reader", "received")
    offered = cm.offered_check(snaps, plan.rate) if snaps else {"delivered": False}
    fig = _fig(
        name,
        [p["us"] for p in parts],
        reference=REF_READER,
        ref_runs=[p["us"] for p in ref_parts],
        ok=offered["delivered"] and _keeps_up(parts, plan.rate),
        failed=problem,
        notes={"parts": parts, "offered": offered, "final": row.get("final"),
               "reference_parts": ref_parts, "reference_final": ref.get("final")},
    )  # fmt: skip
    return fig, parts


def figures(
    plan: CostPlan, native: dict[str, Any], ccxt: dict[str, Any], ref: dict[str, Any]
) -> list[Figure]:
    figs: list[Figure] = []
    sizing: list[cm.SizingRow] = []

    def size(label: str, how: str, parts: Sequence[dict[str, float]], us: Sequence[float],
             rss: float | None) -> None:  # fmt: skip
        if us:
            rate = _med([p["records_s"] for p in parts])
            sizing.append(cm.SizingRow(label, how, _med(us), _min(us), rate, rss))

    # -- the publisher, both parsers, against the bare reader
    ref_parts = _parts(ref.get("snaps") or [], "reader", "received")
    for tag, label, row in (("C1", "native parser (default)", native), ("C2", "CCXT path", ccxt)):
        fig, parts = publisher_figure(f"{tag} publisher, {label} @5k/s", row, ref, plan)
        figs.append(fig)
        size(f"publisher, {label}", "own process, uvloop; / records its sink wrote", parts,
             fig.runs, (row.get("rss_mb") or {}).get("publisher"))  # fmt: skip
    size("bare websocket reader (reference)", "aiohttp + orjson, own process, same loop",
         ref_parts, [p["us"] for p in ref_parts], (ref.get("rss_mb") or {}).get("reader"))  # fmt: skip

    # -- Redis: the write side with the publisher alone, the read side per reader
    problem = session_problem(native)
    snaps = native.get("snaps") or []
    w_parts = write_side(snaps)
    ccxt_w = write_side(ccxt.get("snaps") or [])
    write_us = _med([p["us"] for p in w_parts])
    figs.append(
        _fig("C3 redis-server write side (XADD from the publisher) @5k/s",
             [p["us"] for p in w_parts], ok=bool(figs[0].met), failed=problem,
             notes={"parts": w_parts, "ccxt_session_parts": ccxt_w})
    )  # fmt: skip
    redis_rss = (native.get("rss_mb") or {}).get("redis")
    size("redis-server, write side", "publisher alone: Redis CPU / entries added",
         w_parts, [p["us"] for p in w_parts], redis_rss)  # fmt: skip
    size("redis-server, write side (CCXT session)", "the same, CCXT publisher", ccxt_w,
         [p["us"] for p in ccxt_w], (ccxt.get("rss_mb") or {}).get("redis"))  # fmt: skip

    def read_side(phase: dict[str, Any] | None) -> list[dict[str, float]]:
        return [] if phase is None else read_parts(phase["snaps"], write_us)

    def consumer_parts(phase: dict[str, Any] | None) -> list[dict[str, float]]:
        return [] if phase is None else _parts(phase["snaps"], "consumer", "received")

    raw = _phase(native, "rawxread")
    raw_parts, raw_read = consumer_parts(raw), read_side(raw)
    tags = {"plain": "a", "callback": "b", "group": "c", "linger": "d"}
    consumer_figs: list[Figure] = []
    for rd in READERS:
        phase = _phase(native, rd.kind)
        cparts, rparts = consumer_parts(phase), read_side(phase)
        failed = problem or ("no result" if phase is None else balance_problem(phase))
        ok = (
            phase is not None
            and _keeps_up(cparts, plan.rate)
            and cm.offered_check(phase["snaps"], plan.rate)["delivered"]
        )
        notes = {} if phase is None else {
            "parts": cparts, "balance": phase.get("balance"), "stats": phase.get("stats"),
            "rss_mb": phase.get("rss_mb"), "peak_rss_mb": phase.get("consumer_peak_rss_mb"),
        }  # fmt: skip
        if rd.kind != "rawxread":
            tag = tags[rd.kind]
            figs.append(
                _fig(f"C4{tag} redis-server read side, {rd.label} @5k/s",
                     [p["us"] for p in rparts], reference=REF_RAW_REDIS,
                     ref_runs=[p["us"] for p in raw_read], ok=ok, failed=failed,
                     notes={"parts": rparts, "write_side_alone_us": write_us})
            )  # fmt: skip
            consumer_figs.append(
                _fig(f"C5{tag} {rd.label} @5k/s", [p["us"] for p in cparts],
                     reference=REF_RAW, ref_runs=[p["us"] for p in raw_parts], ok=ok,
                     failed=failed, notes=notes)
            )  # fmt: skip
        elif failed and failed != problem:  # the reference lost an entry: say so
            for f in consumer_figs:
                f.notes["reference_problem"] = failed
        size(f"redis-server, read side: {rd.label}",
             "Redis CPU - write side x entries added, / records received", rparts,
             [p["us"] for p in rparts], redis_rss)  # fmt: skip
    for rd in READERS:
        phase = _phase(native, rd.kind)
        cparts = consumer_parts(phase)
        rss = None if phase is None else phase["rss_mb"].get("consumer")
        size(rd.label, "own process; / records received (ring buffers filled)", cparts,
             [p["us"] for p in cparts], rss)  # fmt: skip
    figs += consumer_figs

    # -- Redis memory per entry, trades and ticker, against capacity.py's constants
    bpe = native.get("bytes_per_entry") or {}
    mem_rows = []
    for tag, kind, channel in (("a", "trades", Channel.TRADES), ("b", "ticker", Channel.TICKER)):
        value, constant = bpe.get(kind), ENTRY_BYTES[channel]
        figs.append(
            Figure(name=f"C6{tag} Redis bytes per entry ({kind}, MEMORY USAGE)", unit="bytes",
                   runs=[] if value is None else [float(value)], better="lower",
                   reference="marketbus.capacity constant (doctor's estimate)",
                   reference_runs=[float(constant)], target="<= the constant",
                   met=None if value is None else value <= constant,
                   failed=None if value is not None else (problem or "no result"))
        )  # fmt: skip
        mem_rows.append(cm.memory_cells(kind, value, constant, DEFAULT_MAXLEN))

    per_market = cm.per_market_rate()
    figs[0].notes.update(
        plan=asdict(plan),
        sessions=_json_sessions(native, ccxt, ref),
        table={
            "title": f"cost: CPU per record at {plan.rate:,.0f} records/s ({plan.markets} "
            "markets, aggTrade + ticker round-robin); records/s per core = 1e6 / µs; markets "
            f"per core at {cm.PER_MARKET_TRADES:g} trades/s + {cm.PER_MARKET_TICKERS:g} "
            f"ticker/s a market ({per_market:g} records/s)",
            "columns": list(cm.SIZING_COLUMNS),
            "rows": [cm.sizing_cells(s, per_market) for s in sizing],
        },
    )
    figs[1].notes["table"] = {
        "title": "cost: checks (the fake delivered the rate; nothing lost, entry by entry)",
        "columns": list(CHECK_COLUMNS),
        "rows": check_rows(plan, native, ccxt, ref),
    }
    mem_fig = next(f for f in figs if f.name.startswith("C6a"))
    mem_fig.notes["table"] = {
        "title": "cost: Redis memory per entry (MEMORY USAGE SAMPLES 0 / XLEN; MB = 10^6 B)",
        "columns": ["stream", "bytes/entry", "MB per 1M entries", "capacity.py constant B",
                    f"MB per stream at MAXLEN {DEFAULT_MAXLEN:,}"],
        "rows": mem_rows,
    }  # fmt: skip
    return figs


CHECK_COLUMNS = (
    "session", "phase", "fake offered/s (min part)", "publisher wrote/s", "Redis added/s",
    "reader took/s", "reads/s (records/read)", "lost in window", "in flight at edges (max)",
    "fake cores", "end check",
)  # fmt: skip


def _n(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:,.{digits}f}"


def _rate(snaps: Sequence[cm.Snap], name: str) -> float | None:
    if len(snaps) < 2 or getattr(snaps[0], name) is None:
        return None
    return float(getattr(snaps[-1], name) - getattr(snaps[0], name)) / (snaps[-1].t - snaps[0].t)


def _check_row(session: str, phase: str, snaps: Sequence[cm.Snap], plan: CostPlan,
               lost: str, in_flight: int | None, end: str) -> list[str]:  # fmt: skip
    if len(snaps) < 2:
        return [session, phase, "no window"] + [""] * (len(CHECK_COLUMNS) - 3)
    offered = cm.offered_check(snaps, plan.rate, "added" if snaps[0].added is not None
                               else "received")  # fmt: skip
    fake = cm.part_values(snaps[0], snaps[-1], "fake", "frames")["cores"]
    reads = "-"
    if snaps[0].redis_cmds and snaps[0].received is not None:
        calls = cm.redis_split(snaps[0], snaps[-1])["read_calls"]
        took = int(snaps[-1].received or 0) - int(snaps[0].received)
        per_s = calls / (snaps[-1].t - snaps[0].t)
        reads = f"{per_s:,.0f} ({took / calls:,.1f})" if calls else "0"
    return [
        session, phase, _n(min(offered["offered_s"])), _n(_rate(snaps, "written")),
        _n(_rate(snaps, "added")), _n(_rate(snaps, "received")), reads, lost,
        _n(in_flight if in_flight is not None else max(offered["in_flight"])),
        _n(fake, 2), end,
    ]  # fmt: skip


def check_rows(
    plan: CostPlan, native: dict[str, Any], ccxt: dict[str, Any], ref: dict[str, Any]
) -> list[list[str]]:
    rows = []
    for name, row in (("native", native), ("ccxt", ccxt)):
        fin = row.get("final") or {}
        end = (row.get("error") or "")[:60] or (
            f"{fin.get('entries_added', 0):,} of {fin.get('frames_sent', 0):,} stored"
            if fin else "-"
        )  # fmt: skip
        rows.append(_check_row(name, "publisher alone", row.get("snaps") or [], plan, "-",
                               None, end))  # fmt: skip
        for ph in row.get("phases") or []:
            bal = [b for b in ph.get("balance") or [] if "error" not in b]
            lost = str(sum(b["lost"] for b in bal)) if bal else "not checked"
            flight = max((max(b["in_flight_start"], b["in_flight_end"]) for b in bal), default=None)
            rows.append(_check_row(name, f"+ {ph['kind']}", ph.get("snaps") or [], plan, lost,
                                   flight, "-"))  # fmt: skip
    fin = ref.get("final") or {}
    end = (ref.get("error") or "")[:60] or (
        f"{fin.get('received', 0):,} of {fin.get('frames_sent', 0):,} read" if fin else "-"
    )
    rows.append(_check_row("reference", "bare reader", ref.get("snaps") or [], plan, "-", None,
                           end))  # fmt: skip
    return rows


def _json_sessions(*rows: dict[str, Any]) -> list[dict[str, Any]]:
    """The sessions as JSON: snapshots as dicts, positions and last ids left out (bulk)."""

    def snap(s: cm.Snap) -> dict[str, Any]:
        d = asdict(s)
        d.pop("positions")
        d.pop("last_gen")
        return d

    out = []
    for row in rows:
        r = {k: v for k, v in row.items() if k not in ("snaps", "phases")}
        r["snaps"] = [snap(s) for s in row.get("snaps") or []]
        r["phases"] = [
            {**{k: v for k, v in ph.items() if k != "snaps"},
             "snaps": [snap(s) for s in ph.get("snaps") or []]}
            for ph in row.get("phases") or []
        ]  # fmt: skip
        out.append(r)
    return out


async def run(ctx: Context) -> list[Figure]:
    plan = plan_of(ctx)
    native = await publisher_session(plan, "native", READERS)
    ccxt = await publisher_session(plan, "ccxt")
    ref = await reader_session(plan)
    return figures(plan, native, ccxt, ref)
