"""Group ``history``: the archive (issue #11), each figure next to a reference of the same run.

- **H1 ingest**, Redis -> Parquet: ``bench.history_ingest.session``: synthetic trades (1M on
  10 markets; ``--quick`` 200k) in a private Redis, an archiver from an empty directory until
  every entry is committed and acknowledged. Reference: a bare ``XREADGROUP`` + ``XACK`` loop
  over the same entries, nothing decoded or written (what any archiver needs at least).
- **H2 bytes on disk** per trade and per ticker: the bundled recordings through the real path
  (``bench.history_recorded``: fake exchanges -> publisher -> Redis -> archiver), and synthetic
  data (the trades of H1 as the archiver wrote them; synthetic tickers committed the same way).
  References: gzip CSV of the same rows, and the raw JSON frames (in the reference's label and
  the extra table, with the bytes of the data pages alone, footers left out).
- **H3 ``History.read()``** of one symbol-hour out of a day of trades (10M rows on 100 markets;
  ``--quick`` 1M), as committed in 24 hourly rolls and, where ``archive.compact`` exists, after
  compaction into one file: each read by a new ``History`` (the file checks included), five
  symbol-hours. Reference: the naive reader, every row group of the day's files scanned with
  ``pyarrow.dataset`` and filtered. The day is built once and cached under bench-results/
  (``bench.history_day``); its build and compaction times are rows of their own.
- **H4 SQL 1m OHLCV** of the whole day, every market (``archive.sql.connect`` + the query + the
  result as Arrow, as ``marketbus sql`` runs it). Reference: the same OHLCV with pyarrow (read
  the four columns, sort, ``group_by``).
- **H5 replay at max speed** into Redis: ``bench.history_replay``'s measurement (another
  module, called as it is). Reference: the publisher's sink writing the same records.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from bench import history_bytes as hb
from bench.common import Context, Figure, quiet_logs
from bench.history_day import EXCHANGE, Day, build
from bench.history_ingest import session, synthetic
from bench.history_math import DaySpec, per_record, picks
from bench.history_recorded import recorded_archive
from consumers.history import History
from marketbus.models import Channel, Trade
from tests.redis_server import running_redis

CACHE_ENV = "MARKETBUS_BENCH_CACHE"  # where the built day is kept (default: bench-results)
MARKETS = 10
READS = 5  # symbol-hours read per layout

OHLCV_SQL = (
    "SELECT symbol, time_bucket(INTERVAL 1 MINUTE, epoch_ms(ts_ms)) AS minute, "
    "first(price ORDER BY ts_ms) AS open, max(price) AS high, min(price) AS low, "
    "last(price ORDER BY ts_ms) AS close, sum(amount) AS volume, count(*) AS trades "
    "FROM trades GROUP BY 1, 2"
)
OHLCV_SQL_ARG = (
    "SELECT symbol, time_bucket(INTERVAL 1 MINUTE, epoch_ms(ts_ms)) AS minute, "
    "arg_min(price, ts_ms) AS open, max(price) AS high, min(price) AS low, "
    "arg_max(price, ts_ms) AS close, sum(amount) AS volume, count(*) AS trades "
    "FROM trades GROUP BY 1, 2"
)


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or "bench-results")


async def _guard(
    name: str, figs: list[Figure], step: Callable[[], Awaitable[list[Figure]]]
) -> None:
    """One part of the group: its figures, or one failed figure naming it (the rest runs)."""
    try:
        figs.extend(await step())
    except Exception as e:
        traceback.print_exc()
        figs.append(Figure(name=f"{name}: crashed", unit="-", runs=[], failed=repr(e)[:300]))


async def run(ctx: Context) -> list[Figure]:
    quiet_logs()
    figs: list[Figure] = []
    await _on_synthetic_trades(ctx, figs)
    with tempfile.TemporaryDirectory() as tmp:
        await _guard("H2 bytes/ticker", figs, lambda: ticker_figures(ctx, Path(tmp)))
    with running_redis() as rs, tempfile.TemporaryDirectory() as tmp:
        await _guard("H2 recordings", figs, lambda: recorded_figures(rs.url, Path(tmp)))
    spec = DaySpec(rows=ctx.pick(10_000_000, 1_000_000))
    await _guard("H3/H4 day", figs, lambda: day_figures(ctx, spec))
    return _with_bytes_table(figs)


# -- H1 ingest, H2 synthetic trades ---------------------------------------------------------


async def _on_synthetic_trades(ctx: Context, figs: list[Figure]) -> None:
    """H1, H2 for synthetic trades and H5 on the same trades (one Redis; freed after)."""
    trades = synthetic(ctx.pick(1_000_000, 200_000), MARKETS)
    with running_redis() as rs, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        await _guard("H1 ingest", figs, lambda: ingest_figures(ctx, rs.url, trades, work))
        await _guard("H5 replay", figs, lambda: replay_figures(ctx, rs.url, trades, work))


async def ingest_figures(ctx: Context, url: str, trades: list[Trade], work: Path) -> list[Figure]:
    s = await session(url, trades, work / "ingest", runs=ctx.repeats)
    n = len(trades)
    bad = [r for r in s.runs if r.records != n] + [e for e in s.reference_entries if e != n]
    failed = f"records archived/read differ from {n}: {bad[:3]}" if bad else None
    rates = [r.rate for r in s.runs]
    ingest = Figure(
        name=f"H1 ingest Redis -> Parquet ({n // 1000}k trades, {MARKETS} mkts)",
        unit="records/s",
        runs=rates,
        reference="bare XREADGROUP+XACK, no decode/write",
        reference_runs=s.reference,
        target=">= 300k/s",
        met=statistics.median(rates) >= 300_000 and not failed,
        failed=failed,
        notes={
            "records": n,
            "fill_s": s.fill_s,
            "commits": [r.commits for r in s.runs],
            "files": [r.files for r in s.runs],
            "seconds": [r.seconds for r in s.runs],
        },
    )
    root = work / "ingest" / f"run-{len(s.runs) - 1}"
    sizes = hb.total(hb.archive_sizes(root).values())
    table = hb.archive_rows(root, Channel.TRADES)
    csv_gz = hb.csv_gz_bytes(table, hb.record_columns(Channel.TRADES))
    json = hb.trade_frames_bytes(trades)
    return [ingest, bytes_figure("synthetic", "trade", sizes, json, csv_gz, _id_bytes(root))]


def _id_bytes(root: Path) -> int:
    """Bytes of the trades' ``id`` column chunks (data pages), over every file."""
    import pyarrow.parquet as pq

    out = 0
    for f in hb.part_files(root):
        if f.parts[-4] != "channel=trades":
            continue
        meta = pq.ParquetFile(f).metadata
        names = [meta.schema.column(j).name for j in range(meta.num_columns)]
        j = names.index("id")
        out += sum(
            meta.row_group(i).column(j).total_compressed_size for i in range(meta.num_row_groups)
        )
    return out


def bytes_figure(
    data: str, what: str, sizes: hb.Sizes, json: int, csv_gz: int, id_bytes: int | None = None
) -> Figure:
    """Bytes on disk per record of one data set, against gzip CSV (JSON in the label)."""
    n = sizes.records
    disk = per_record(sizes.disk_bytes, n)
    return Figure(
        name=f"H2 bytes/{what} on disk, {data} ({n:,} {what}s, {_files(sizes.files)})",
        unit="bytes",
        runs=[disk],
        better="lower",
        reference=f"gzip CSV of the rows (raw JSON frames: {per_record(json, n):.0f} B)",
        reference_runs=[per_record(csv_gz, n)],
        target="<= 20 B" if what == "trade" else None,
        met=(disk <= 20) if what == "trade" else None,
        notes={
            "data": data,
            "what": what,
            "records": n,
            "files": sizes.files,
            "disk_bytes": sizes.disk_bytes,
            "data_page_bytes": sizes.data_bytes,
            "json_bytes": json,
            "csv_gz_bytes": csv_gz,
            "data_pages_per_record": per_record(sizes.data_bytes, n),
            "json_per_record": per_record(json, n),
            "csv_gz_per_record": per_record(csv_gz, n),
            "id_bytes": id_bytes,
        },
    )


# -- H2 synthetic tickers, recordings -------------------------------------------------------


async def ticker_figures(ctx: Context, work: Path) -> list[Figure]:
    tickers = hb.synthetic_tickers(ctx.pick(200_000, 50_000), MARKETS)
    await asyncio.to_thread(hb.commit_synthetic, work, list(tickers), 100_000)
    sizes = hb.total(hb.archive_sizes(work).values())
    table = hb.archive_rows(work, Channel.TICKER)
    csv_gz = hb.csv_gz_bytes(table, hb.record_columns(Channel.TICKER))
    return [bytes_figure("synthetic", "ticker", sizes, hb.ticker_frames_bytes(tickers), csv_gz)]


async def recorded_figures(url: str, work: Path) -> list[Figure]:
    rec = await recorded_archive(url, work)
    sizes = hb.archive_sizes(work)
    ids = hb.column_bytes(work, Channel.TRADES, "id")
    figs = []
    for channel, what in ((Channel.TRADES, "trade"), (Channel.TICKER, "ticker")):
        mine = {ex: s for (ch, ex), s in sizes.items() if ch == channel.value}
        json = sum(v for (ex, ch), v in rec.json_bytes.items() if ch == channel.value)
        csv_gz = hb.csv_gz_bytes(hb.archive_rows(work, channel), hb.record_columns(channel))
        trades = channel is Channel.TRADES
        fig = bytes_figure(
            "recordings", what, hb.total(mine.values()), json, csv_gz,
            sum(ids.values()) if trades else None,
        )  # fmt: skip
        entries = []
        for ex, s in sorted(mine.items()):
            rows = hb.archive_rows(work, channel, ex)
            ex_csv = hb.csv_gz_bytes(rows, hb.record_columns(channel))
            ex_json = rec.json_bytes.get((ex, channel.value), 0)
            entries.append(size_entry(ex, s, ex_json, ex_csv, ids.get(ex) if trades else None))
        fig.notes["exchanges"] = entries
        fig.notes["path"] = "fake exchange replay -> publisher -> Redis -> archiver"
        fig.notes["seconds"] = rec.seconds
        figs.append(fig)
    if not all(f.notes["records"] for f in figs):
        for f in figs:
            f.failed = "a channel of the recordings reached the archive empty"
    return figs


def size_entry(
    label: str, sizes: hb.Sizes, json: int, csv_gz: int, id_bytes: int | None
) -> dict[str, Any]:
    return {
        "exchange": label,
        "records": sizes.records,
        "disk_bytes": sizes.disk_bytes,
        "data_page_bytes": sizes.data_bytes,
        "json_bytes": json,
        "csv_gz_bytes": csv_gz,
        "id_bytes": id_bytes,
    }


def size_row(data: str, what: str, e: dict[str, Any]) -> list[str]:
    """One line of the bytes table: bytes per record of each kind."""
    n = e["records"]

    def each(key: str) -> str:
        return "-" if e.get(key) is None else f"{per_record(e[key], n):.1f}"

    keys = ("disk_bytes", "data_page_bytes", "id_bytes", "json_bytes", "csv_gz_bytes")
    return [f"{data}, {e['exchange']}", what, f"{n:,}", *map(each, keys)]


BYTES_COLUMNS = [
    "data", "what", "records", "on disk", "data pages", "of which id", "JSON frames", "gzip CSV",
]  # fmt: skip


def _with_bytes_table(figs: list[Figure]) -> list[Figure]:
    """The bytes figures' details as an extra table, kept on the first of them."""
    mine = [f for f in figs if f.name.startswith("H2") and not f.failed]
    rows = []
    for f in mine:
        n = f.notes
        entries = n.get("exchanges") or [
            {"exchange": "all", "records": n["records"], "disk_bytes": n["disk_bytes"],
             "data_page_bytes": n["data_page_bytes"], "json_bytes": n["json_bytes"],
             "csv_gz_bytes": n["csv_gz_bytes"], "id_bytes": n.get("id_bytes")}
        ]  # fmt: skip
        rows += [size_row(n["data"], n["what"], e) for e in entries]
    if rows:
        mine[0].notes["table"] = {
            "title": "history: bytes per record (on disk: whole files; data pages: "
            "footers left out; of which id: the trade id column's pages)",
            "columns": BYTES_COLUMNS,
            "rows": rows,
        }
    return figs


# -- H3 read, H4 SQL ------------------------------------------------------------------------


def _ms(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return (time.perf_counter() - t) * 1000, out


def full_scan(root: Path, symbol: str, start_ms: int, end_ms: int) -> int:
    """The naive reader: every row group of the channel's files decoded, then filtered."""
    dataset = ds.dataset(str(root / "channel=trades"), format="parquet", partitioning="hive")
    cond = (pc.field("symbol") == symbol) & (pc.field("ts_ms") >= start_ms)
    cond &= pc.field("ts_ms") < end_ms
    return sum(b.filter(cond).num_rows for b in dataset.to_batches())


def pushdown(root: Path, symbol: str, start_ms: int, end_ms: int) -> int:
    """pyarrow.dataset with the filter given to the scan (row-group statistics used)."""
    dataset = ds.dataset(str(root / "channel=trades"), format="parquet", partitioning="hive")
    cond = (pc.field("symbol") == symbol) & (pc.field("ts_ms") >= start_ms)
    return int(dataset.to_table(filter=cond & (pc.field("ts_ms") < end_ms)).num_rows)


def read_figure(ctx: Context, day: Day, root: Path, layout: str) -> Figure:
    spec = day.spec
    cells = picks(spec, max(READS, ctx.repeats))
    cold, warm, rows = [], [], []
    for symbol, hour in cells:
        lo, hi = spec.hour(hour)
        h = History(root)
        ms, t = _ms(lambda: h.read(EXCHANGE, symbol, "trades", lo, hi))  # noqa: B023
        cold.append(ms)
        rows.append(t.num_rows)
        warm.append(_ms(lambda: h.read(EXCHANGE, symbol, "trades", lo, hi))[0])  # noqa: B023
    refs, naive_rows, pushed = [], [], []
    for symbol, hour in cells[: ctx.repeats]:
        lo, hi = spec.hour(hour)
        ms, got = _ms(lambda: full_scan(root, symbol, lo, hi))  # noqa: B023
        refs.append(ms)
        naive_rows.append(got)
        pushed.append(_ms(lambda: pushdown(root, symbol, lo, hi))[0])  # noqa: B023
    wrong = [(a, b) for a, b in zip(rows, naive_rows, strict=False) if a != b]
    failed = f"History.read rows != full scan rows: {wrong[:3]}" if wrong or not all(rows) else None
    return Figure(
        name=f"H3 History.read() 1 symbol-hour of a {_m(spec.rows)}-row day, {layout}",
        unit="ms",
        runs=cold,
        better="lower",
        reference="full scan of the day (pyarrow.dataset, filter per batch)",
        reference_runs=refs,
        target="< 50 ms",
        met=statistics.median(cold) < 50 and not failed,
        failed=failed,
        notes={
            "reads": [f"{s} hour {h}" for s, h in cells],
            "rows": rows,
            "warm_history_ms": warm,
            "pyarrow_pushdown_ms": pushed,
            "symbols": spec.symbols,
            "day_rows": spec.rows,
        },
    )


def ohlcv_sql(root: Path, sql: str = OHLCV_SQL) -> pa.Table:
    from archive.sql import connect

    con = connect(root)
    try:
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def ohlcv_pyarrow(root: Path) -> pa.Table:
    """The reference: the day's four columns read, sorted, grouped by symbol and minute."""
    dataset = ds.dataset(str(root / "channel=trades"), format="parquet", partitioning="hive")
    t = dataset.to_table(columns=["symbol", "ts_ms", "price", "amount"])
    t = t.append_column("minute", pc.divide(t.column("ts_ms"), 60_000))
    t = t.sort_by([("symbol", "ascending"), ("ts_ms", "ascending")])
    aggs = [("price", "first"), ("price", "max"), ("price", "min"), ("price", "last"),
            ("amount", "sum"), ("price", "count")]  # fmt: skip
    return t.group_by(["symbol", "minute"], use_threads=False).aggregate(aggs)


def sql_figure(ctx: Context, day: Day, root: Path, layout: str) -> Figure:
    runs, refs = [], []
    sql_rows = ref_rows = counted = 0
    for _ in range(ctx.repeats):
        ms, t = _ms(lambda: ohlcv_sql(root))
        runs.append(ms / 1000)
        sql_rows, counted = t.num_rows, int(pc.sum(t.column("trades")).as_py())
        ms, r = _ms(lambda: ohlcv_pyarrow(root))
        refs.append(ms / 1000)
        ref_rows = r.num_rows
        del t, r
    arg_s = _ms(lambda: ohlcv_sql(root, OHLCV_SQL_ARG))[0] / 1000
    spec = day.spec
    bad = sql_rows != ref_rows or counted != spec.rows
    failed = f"candles {sql_rows} vs {ref_rows}, trades {counted} of {spec.rows}" if bad else None
    return Figure(
        name=f"H4 SQL 1m OHLCV of a {_m(spec.rows)}-row day ({spec.symbols} mkts), {layout}",
        unit="s",
        runs=runs,
        better="lower",
        reference="pyarrow: read 4 columns, sort, group_by",
        reference_runs=refs,
        target="< 1 s",
        met=statistics.median(runs) < 1 and not failed,
        failed=failed,
        notes={"candles": sql_rows, "query": OHLCV_SQL, "arg_min_max_query_s": arg_s},
    )


def _files(n: int) -> str:
    return "1 file" if n == 1 else f"{n} files"


def _m(rows: int) -> str:
    return f"{rows / 1e6:g}M"


async def day_figures(ctx: Context, spec: DaySpec) -> list[Figure]:
    day = await asyncio.to_thread(build, spec, cache_dir())
    info = day.info
    cached = " (cached)" if info.get("cached") else ""
    figs = [
        Figure(
            name=f"H3 build the {_m(spec.rows)}-row day: {spec.rolls} commits{cached}",
            unit="s",
            runs=[info["build_s"]],
            better="lower",
            notes={"key": spec.key, **info},
        )
    ]
    layouts = [(day.rolled, f"{info['files']} files")]
    if day.compacted is not None:
        figs.append(
            Figure(
                name=f"H3 compact the day: {info['files']} files -> "
                f"{info['compacted_files']}{cached}",
                unit="s",
                runs=[info["compact_s"]],
                better="lower",
                notes={"bytes_in": info["bytes"], "bytes_out": info["compacted_bytes"]},
            )
        )
        layouts.append((day.compacted, "compacted"))
    else:
        figs[0].notes["compaction"] = "archive.compact not in this tree: not measured"
    for root, layout in layouts:
        figs.append(await asyncio.to_thread(read_figure, ctx, day, root, layout))
    for root, layout in layouts:
        figs.append(await asyncio.to_thread(sql_figure, ctx, day, root, layout))
    return figs


# -- H5 replay (bench.history_replay: another module's measurement, called as it is) --------


async def replay_figures(ctx: Context, url: str, trades: list[Trade], work: Path) -> list[Figure]:
    """Hook for ``bench.history_replay``: its archive builder, its reference (the sink writing
    the same records) and its max-speed replay, ``ctx.repeats`` times."""
    try:
        from bench import history_replay as hr
    except ImportError as e:
        return [Figure(name="H5 replay max speed: bench.history_replay missing", unit="-",
                       runs=[], failed=repr(e)[:200])]  # fmt: skip
    root = work / "replay"
    t = time.perf_counter()
    await asyncio.to_thread(hr.build_archive, root, trades, 100_000)
    build_s = time.perf_counter() - t
    n = len(trades)
    refs, runs, memory = [], [], []
    for _ in range(ctx.repeats):
        refs.append(await hr.sink_reference(url, trades))
        r = await hr.replay(url, root)
        runs.append(r.stats.rate)
        memory.append(r.memory_mb)
        if r.stats.records != n:
            break
    records = r.stats.records
    failed = f"replayed {records} records of {n}" if records != n else None
    return [
        Figure(
            name=f"H5 replay max speed -> Redis ({n // 1000}k trades, {MARKETS} mkts)",
            unit="records/s",
            runs=runs,
            reference="publisher's StreamSink, same records",
            reference_runs=refs,
            target=">= 200k/s",
            met=statistics.median(runs) >= 200_000 and not failed,
            failed=failed,
            notes={"archive_build_s": build_s, "memory_mb": memory, "records": n},
        )
    ]
