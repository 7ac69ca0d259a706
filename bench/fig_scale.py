"""Group ``scale``: a thousand markets in one publisher, against a fake as strict as Binance.

Sessions (``bench.scale_session``), each with its own redis-server, fake and publisher:

- **B1** Binance, 1,000 markets, trades + ticker: 19,000 frames/s of aggTrade and ticker
  round-robin (19 a second per market);
- **B2** the same with ``book`` (top 20): plus a depth diff per market a second, so 20,000
  frames/s in total, 3,000 streams; the two bots (plain, then group) follow all of them;
- **B3** (full run only) B2 with every book moving every 100 ms: 10,000 depth diffs/s more;
- **O1** OKX, 300 markets, trades + ticker + book, 3,000 frames/s (a third each).

The Binance fake enforces Binance's limits (``fake_exchange.limits``: 6,000 weight a minute
with 429 then 418, 1,024 streams and 5 messages a second per connection); the OKX fake
enforces OKX's (``fake_exchange.okx.limits``: REST requests per endpoint and 2 s with 429
code 50011, 3 new connections a second, 480 subscribe requests an hour per connection, then
60014 and a closed connection). Targets of issue #13: all streams publishing within 60 s,
RSS <= 350 MB, nothing dropped, every trade id in Redis. One run per session (``--repeats``
does not apply: a session is the repeat). A table per session and one per bot.
"""

from __future__ import annotations

import math
from typing import Any

from bench.common import Context, Figure
from bench.scale_session import ScalePlan, session

TARGET_ALL_S = 60.0
TARGET_RSS_MB = 350.0
TTB = ("trades", "ticker", "book")


def plans(ctx: Context) -> list[ScalePlan]:
    window = ctx.pick(15, 6)
    out = [
        ScalePlan("B1 binance 1,000 mkts trades+ticker", ("trades", "ticker"), rate=19_000,
                  window=window),
        ScalePlan("B2 binance 1,000 mkts trades+ticker+book", TTB, rate=19_000,
                  depth_interval=1.0, window=window, consumers=True,
                  consumer_window=ctx.pick(10, 5)),
    ]  # fmt: skip
    if not ctx.quick:
        out.append(
            ScalePlan("B3 binance 1,000 mkts, books every 100 ms", TTB, rate=19_000,
                      depth_interval=0.1, window=window)
        )  # fmt: skip
    out.append(
        ScalePlan("O1 okx 300 mkts trades+ticker+book", TTB, markets=300, rate=3_000,
                  limits={}, window=window, exchange="okx")
    )  # fmt: skip
    return out


def _offered(p: ScalePlan) -> float:
    depth = p.markets / p.depth_interval if "book" in p.channels and p.exchange == "binance" else 0
    return p.rate + depth


def _fmt(v: Any, digits: int = 0) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _limit(row: dict[str, Any], key: str) -> int | None:
    lim = (row.get("fake") or {}).get("limits")
    return None if lim is None else int(lim.get(key, 0))


def _rss_per_market_kb(row: dict[str, Any], p: ScalePlan) -> float | None:
    """RSS at the window's end over the process with everything imported, per market."""
    base = (row.get("publisher") or {}).get("rss_empty_mb")
    if base is None or "rss_end_mb" not in row:
        return None
    return float(row["rss_end_mb"] - base) * 1024 / p.markets


SESSION_COLUMNS = (
    "session", "streams", "offered frames/s", "all publishing s", "frames/s read", "records/s",
    "pub µs/record", "pub cores", "peak RSS MB", "RSS KB/market", "trades lost",
    "sink overflow", "read paused s", "429", "418", "books awaiting snapshot",
)  # fmt: skip
BOT_COLUMNS = ("session", "bot", "records/s", "µs/record", "cores", "lag p50 ms",
               "lag p99 ms", "lag max ms", "peak RSS MB", "reads/s", "Redis µs/read",
               "Redis cores")  # fmt: skip


def session_cells(row: dict[str, Any], p: ScalePlan) -> list[str]:
    if row.get("error") and "records_s" not in row:
        return [p.label, _fmt(p.streams), "error: " + row["error"][:80]] + [""] * 13
    pub = row.get("publisher") or {}
    t_all = row.get("t_all_s")
    return [
        p.label,
        _fmt(p.streams),
        _fmt(_offered(p)),
        _fmt(t_all, 1) if t_all is not None else f"> {p.wait_max:g} ({row.get('publishing')})",
        _fmt(row.get("frames_s")),
        _fmt(row.get("records_s")),
        _fmt(row.get("pub_us"), 1),
        _fmt(row.get("pub_cores"), 2),
        _fmt(row.get("peak_rss_mb"), 0),
        _fmt(_rss_per_market_kb(row, p), 0),
        _fmt(row.get("lost")),
        _fmt(pub.get("sink_overflow")),
        _fmt(pub.get("sink_paused_s"), 1),
        _fmt(_limit(row, "limited")),
        _fmt(_limit(row, "banned")),
        _fmt((pub.get("pacer") or {}).get("books_awaiting_snapshot")),
    ]


def bot_cells(row: dict[str, Any], p: ScalePlan) -> list[list[str]]:
    out = []
    window = p.consumer_window
    for b in row.get("bots") or []:
        lag = b["lag_ms"]
        read = (b.get("redis") or {}).get("xreadgroup" if b["mode"] == "group" else "xread", {})
        out.append([
            p.label, b["mode"], _fmt(b["records_s"]), _fmt(b["cpu_us"], 1),
            _fmt(b["cores"], 2), _fmt(lag.get("p50")), _fmt(lag.get("p99")),
            _fmt(lag.get("max")), _fmt(b["peak_rss_mb"], 0),
            _fmt(read.get("calls", 0) / window, 1), _fmt(read.get("usec_per_call"), 0),
            _fmt(b.get("redis_cores"), 2),
        ])  # fmt: skip
    return out


def _fig(
    name: str, unit: str, value: float | None, target: str, ok: bool | None,
    better: str = "lower", reference: str | None = None, **notes: Any,
) -> Figure:  # fmt: skip
    if value is None:
        return Figure(name=name, unit=unit, runs=[], target=target, failed="no result",
                      notes=notes)  # fmt: skip
    return Figure(name=name, unit=unit, runs=[float(value)], better=better, target=target,
                  met=ok, reference=reference, notes=notes)  # fmt: skip


def figures_of(row: dict[str, Any], p: ScalePlan) -> list[Figure]:
    tag = p.label.split()[0]
    if row.get("error") and "records_s" not in row:
        return [Figure(name=f"{p.label}: session", unit="-", runs=[], failed=row["error"][:300])]
    pub = row.get("publisher") or {}
    t_all = row.get("t_all_s")
    figs = [
        _fig(f"{tag} time to all {p.streams:,} streams publishing", "s", t_all,
             f"<= {TARGET_ALL_S:g} s", t_all is not None and t_all <= TARGET_ALL_S,
             reference=f"{p.label}; publisher spawned at 0", timeline=row.get("timeline")),
        _fig(f"{tag} publisher peak RSS", "MB", row.get("peak_rss_mb"),
             f"<= {TARGET_RSS_MB:g} MB", (row.get("peak_rss_mb") or 1e9) <= TARGET_RSS_MB,
             reference=f"{_fmt(_rss_per_market_kb(row, p), 0)} KB per market over the "
             "empty process", memory=row.get("memory"), rss=row.get("rss_samples")),
        _fig(f"{tag} publisher CPU per record", "µs", row.get("pub_us"), "-", None,
             reference=f"{_fmt(row.get('records_s'))} records/s, "
             f"{_fmt(row.get('pub_cores'), 2)} cores"),
        _fig(f"{tag} trade ids lost", "records", row.get("lost"), "0",
             row.get("lost") == 0 and bool(row.get("sent")),
             reference=f"of {_fmt(row.get('sent'))} written by the fake",
             worst=row.get("worst_markets"), duplicates=row.get("duplicates")),
        _fig(f"{tag} sink overflow (dropped)", "records", pub.get("sink_overflow"), "0",
             pub.get("sink_overflow") == 0,
             reference=f"read paused {_fmt(pub.get('sink_paused_s'), 1)} s "
             f"({pub.get('sink_pauses')} times)"),
    ]  # fmt: skip
    banned = _limit(row, "banned")
    if banned is not None:
        limited = _limit(row, "limited") or 0
        closed = _limit(row, "closed_for_subscribes") or 0  # OKX: 60014, connection closed
        total = banned + limited + closed
        figs.append(
            _fig(f"{tag} refusals from the fake (429, 418, 60014)", "responses",
                 total, "0", total == 0,
                 reference=f"429: {limited}, 418: {banned}, 60014: {closed}; fake limits "
                 f"{row['fake']['limits']}", pacer=pub.get("pacer"))
        )  # fmt: skip
    for b in row.get("bots") or []:
        lag = b["lag_ms"]
        figs.append(
            _fig(f"{tag} bot ({b['mode']}) following {p.streams:,} streams: lag p99", "ms",
                 lag.get("p99"), "-", None,
                 reference=f"p50 {_fmt(lag.get('p50'))} ms, {_fmt(b['records_s'])} records/s, "
                 f"{_fmt(b['cpu_us'], 1)} µs/record", bot=b)
        )  # fmt: skip
    return figs


async def run(ctx: Context) -> list[Figure]:
    rows: list[tuple[ScalePlan, dict[str, Any]]] = []
    for p in plans(ctx):
        rows.append((p, await session(p)))
    figs: list[Figure] = []
    for p, row in rows:
        figs += figures_of(row, p)
    if figs:
        figs[0].notes.update(
            scale_rows=[row for _, row in rows],
            table={
                "title": "scale: one publisher, every market (strict fake; targets of #13: "
                f"all publishing <= {TARGET_ALL_S:g} s, RSS <= {TARGET_RSS_MB:g} MB, 0 lost)",
                "columns": list(SESSION_COLUMNS),
                "rows": [session_cells(row, p) for p, row in rows],
            },
        )
        bot_rows = [cells for p, row in rows for cells in bot_cells(row, p)]
        if bot_rows and len(figs) > 1:
            figs[1].notes["table"] = {
                "title": "scale: one bot (consumers.Consumer) following every stream; lag = "
                "receipt - Redis entry time",
                "columns": list(BOT_COLUMNS),
                "rows": bot_rows,
            }
    return figs
