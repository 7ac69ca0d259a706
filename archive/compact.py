"""Compaction and retention of an archive directory, beside running writers.

``compact``: the files of one ``channel/exchange/date`` partition (one per commit that touched
it) are merged into one file sorted by ``(symbol, ts_ms)`` (then entry id), the archive's
file layout. The merge is written under a hidden temporary name, outside the commit lock
(archivers and backfill keep committing meanwhile); then one commit (:meth:`Store.swap`)
renames it to ``part-<commit>.parquet`` and lists the files it replaces as ``gone`` in the
same atomic manifest write, so a reader sees the day's old files or the new one, never both
and never neither. The replaced files are deleted afterwards (after ``grace_s``, for readers
that listed them just before). Files a later commit added to the same day are not in the merge
and stay. A crash at any point leaves a directory readers read correctly, and the next run
finishes the work: a merge not committed is deleted, replaced files not yet deleted are.

``prune``: whole date partitions older than ``keep_days`` are listed as gone in one commit,
then deleted, the same way.

A truncated or foreign Parquet file is reported by name (:attr:`Report.skipped`) and left in
place, out of the merge; it never stops the run. One maintenance run at a time per directory
(``_archive/maintenance.lock``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import structlog

from archive.store import ANONYMOUS, Store, fsync_dir
from consumers.archive_catalog import STATE_DIR, Catalog, file_meta, id_key, relative
from consumers.archive_layout import (
    ARCHIVE_VERSION,
    DAY_MS,
    META_KEY,
    commit_of,
    day_of,
    file_schema,
    parquet_options,
)
from marketbus.errors import FatalError
from marketbus.models import Channel

log = structlog.get_logger("marketbus.archive")

MAINTENANCE_LOCK = "maintenance.lock"
_TMP_PREFIX = ".compact-"
_SORT = [("symbol", "ascending"), ("ts_ms", "ascending"),
         ("entry_ms", "ascending"), ("entry_seq", "ascending")]  # fmt: skip


@dataclass
class Report:
    """What a compaction or retention run did."""

    partitions: int = 0  # compacted (or, for prune, dropped)
    files_in: int = 0  # files merged (or listed as gone)
    files_out: int = 0
    rows: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    deleted: int = 0  # files deleted from disk (this run's and earlier runs' leftovers)
    raced: int = 0  # partitions another writer changed first: left for the next run
    skipped: dict[str, str] = field(default_factory=dict)  # bad file -> why (left in place)


class MaintenanceBusyError(FatalError):
    """Another compaction or retention run holds the directory."""


@contextlib.contextmanager
def maintenance(root: Path) -> Iterator[None]:
    """One compaction or retention run at a time: they decide from the same listings."""
    state = root / STATE_DIR
    state.mkdir(parents=True, exist_ok=True)
    fd = os.open(state / MAINTENANCE_LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise MaintenanceBusyError(
                f"another compaction or prune is running on {root} "
                f"(it holds {state / MAINTENANCE_LOCK})"
            ) from None
        yield
    finally:
        os.close(fd)


def partitions(root: Path) -> Iterator[tuple[str, str, str, Path]]:
    """(channel, exchange, date, directory) of every partition, in order."""
    for ch_dir in sorted(root.glob("channel=*")):
        for ex_dir in sorted(ch_dir.glob("exchange=*")):
            for date_dir in sorted(ex_dir.glob("date=*")):
                if date_dir.is_dir():
                    yield (
                        ch_dir.name.partition("=")[2],
                        ex_dir.name.partition("=")[2],
                        date_dir.name.partition("=")[2],
                        date_dir,
                    )


def _day(date: str) -> int | None:
    try:
        return day_of(date)
    except ValueError:
        return None


def compact(
    root: str | Path,
    *,
    date: str | None = None,
    older_than_s: float = 3600.0,
    now_ms: int | None = None,
    grace_s: float = 0.0,
    zstd_level: int = 3,
    row_group_rows: int = 65_536,
    chunk_rows: int = 1_000_000,
    stop: threading.Event | None = None,
) -> Report:
    """Merge the files of each partition of ``date`` (``YYYY-MM-DD``), or of every date whose
    day ended more than ``older_than_s`` ago, into one file. ``chunk_rows`` bounds the rows
    held in memory (symbols are merged a range at a time). ``stop``: checked between
    partitions (a stopping archiver that runs compaction does not wait for every day)."""
    path = Path(root)
    now = time.time() * 1000 if now_ms is None else now_ms
    report = Report()
    with maintenance(path):
        store = Store(path, zstd_level=zstd_level, row_group_rows=row_group_rows)
        store.open()
        _remove_leftovers(path)
        report.deleted += store.collect()  # a run that stopped before deleting what it replaced
        catalog = Catalog(path)
        for channel, exchange, day, date_dir in partitions(path):
            if stop is not None and stop.is_set():
                break
            n = _day(day)
            if n is None or (date is not None and day != date):
                continue
            if date is None and (n + 1) * DAY_MS > now - older_than_s * 1000:
                continue  # the day is not over long enough: late records may still come
            try:
                ch = Channel(channel)
            except ValueError:
                continue  # a channel this version does not know: left as it is
            files = catalog.files(channel, exchange, day, day)
            if len(files) > 1:
                _compact_partition(store, ch, date_dir, files, report, catalog, chunk_rows)
        report.skipped.update(catalog.skipped)
        if report.files_in:
            time.sleep(grace_s)
            report.deleted += store.collect()
    log.info("archive_compacted", dir=str(path), **_summary(report))
    return report


def _compact_partition(
    store: Store,
    ch: Channel,
    date_dir: Path,
    files: list[Path],
    report: Report,
    catalog: Catalog,
    chunk_rows: int,
) -> None:
    for _ in range(len(files)):  # each round leaves out a file found damaged
        if len(files) < 2:
            return
        tmp = date_dir / f"{_TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.parquet.tmp"
        try:
            rows = _merge(store, ch, files, tmp, chunk_rows)
        except (OSError, pa.ArrowException) as e:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            bad = _damaged(ch, files)
            if not bad:
                raise  # not a file's fault (disk full...): the run stops, nothing changed
            for f, why in bad.items():
                catalog.forget(f, why)
            files = [f for f in files if f not in bad]
            log.debug("archive_compact_retry", error=str(e)[:200], left_out=len(bad))
            continue
        size_in = sum(f.stat().st_size for f in files)
        size_out = tmp.stat().st_size
        commit = store.swap([(tmp, date_dir)], files)
        if commit is None:
            report.raced += 1
            log.info("archive_compact_raced", partition=relative(store.root, date_dir))
            return
        report.partitions += 1
        report.files_in += len(files)
        report.files_out += 1
        report.rows += rows
        report.bytes_in += size_in
        report.bytes_out += size_out
        log.info(
            "archive_partition_compacted", partition=relative(store.root, date_dir),
            commit=commit, files=len(files), rows=rows, bytes_in=size_in, bytes_out=size_out,
        )  # fmt: skip
        return


def _merge(store: Store, ch: Channel, files: list[Path], tmp: Path, chunk_rows: int) -> int:
    """``files`` into ``tmp``, sorted, a range of symbols at a time; fsynced. Returns the
    rows written, which must be every row of ``files``."""
    schema = file_schema(ch)
    counts: dict[str, int] = {}
    expected = 0
    meta = _merged_meta(store.root, files)
    for f in files:
        expected += pq.ParquetFile(f).metadata.num_rows
        symbols = pq.read_table(f, columns=["symbol"]).column("symbol")
        for item in pc.value_counts(symbols).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    options = parquet_options(ch, store.zstd_level, store.row_group_rows)
    row_group = options.pop("row_group_size")
    dataset = ds.dataset([str(f) for f in files], schema=schema, format="parquet")
    written = 0
    out_schema = schema.with_metadata({META_KEY: orjson.dumps(meta)})
    with pq.ParquetWriter(tmp, out_schema, **options) as writer:
        for lo, hi in _ranges(counts, chunk_rows):
            sym = pc.field("symbol")
            table = dataset.to_table(filter=(sym >= lo) & (sym <= hi)).sort_by(_SORT)
            writer.write_table(table.cast(out_schema), row_group_size=row_group)
            written += table.num_rows
    if written != expected:
        tmp.unlink()
        raise pa.ArrowInvalid(f"merged {written} rows out of {expected}")
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return written


def _ranges(counts: dict[str, int], chunk_rows: int) -> Iterator[tuple[str, str]]:
    """Consecutive symbol ranges (both ends included) of at most ``chunk_rows`` rows each
    (a symbol with more is a range of its own)."""
    lo: str | None = None
    hi = ""
    held = 0
    for symbol in sorted(counts):
        if lo is not None and held + counts[symbol] > chunk_rows:
            yield lo, hi
            lo, held = None, 0
        if lo is None:
            lo = symbol
        hi = symbol
        held += counts[symbol]
    if lo is not None:
        yield lo, hi


def _merged_meta(root: Path, files: list[Path]) -> dict[str, Any]:
    """The footer of a merged file: the sources' marks (per writer, legacy floors, highest
    per stream), so a manifest rebuilt from footers still knows them, and the files it
    replaces, so such a rebuild hides them again."""
    streams: dict[str, str] = {}
    writers: dict[str, dict[str, str]] = {}
    floor: dict[str, str] = {}
    commit = 0
    for f in files:
        meta = file_meta(pq.read_schema(f)) or {}
        commit = max(commit, int(meta.get("commit") or 0), commit_of(f.name) or 0)
        marks = {str(k): str(v) for k, v in dict(meta.get("streams") or {}).items()}
        _raise(streams, marks)
        if meta.get("compacted"):
            for w, m in dict(meta.get("writers") or {}).items():
                _raise(writers.setdefault(str(w), {}), dict(m))
            _raise(floor, dict(meta.get("floor") or {}))
        elif "writer" in meta:
            w = meta["writer"] if meta["writer"] is not None else ANONYMOUS
            _raise(writers.setdefault(str(w), {}), marks)
        else:
            _raise(floor, marks)
    return {
        "version": ARCHIVE_VERSION, "commit": commit, "compacted": True,
        "replaces": [relative(root, f) for f in files], "streams": streams,
        "writers": writers, "floor": floor,
    }  # fmt: skip


def _raise(marks: dict[str, str], new: dict[Any, Any]) -> None:
    for k, v in new.items():
        if id_key(str(v)) > id_key(marks.get(str(k))):
            marks[str(k)] = str(v)


def _damaged(ch: Channel, files: list[Path]) -> dict[Path, str]:
    """The files whose data does not read (their footer did: the catalog checked it)."""
    schema = file_schema(ch)
    bad: dict[Path, str] = {}
    for f in files:
        try:
            ds.dataset([str(f)], schema=schema, format="parquet").to_table()
        except (OSError, pa.ArrowException) as e:
            bad[f] = f"data unreadable: {str(e)[:200]}"
    return bad


def _remove_leftovers(root: Path) -> None:
    """Merges a stopped run left behind (hidden: no reader looks at them)."""
    for *_, date_dir in partitions(root):
        for tmp in date_dir.glob(f"{_TMP_PREFIX}*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                log.info("archive_compact_leftover_removed", path=str(tmp))
                fsync_dir(date_dir)


def prune(
    root: str | Path, keep_days: int, *, now_ms: int | None = None, grace_s: float = 0.0
) -> Report:
    """Drop every date partition before ``today - keep_days`` (UTC): ``keep_days=7`` on
    2026-12-04 keeps 2026-11-27 to 2026-12-04. Files not written by marketbus are reported
    and left in place (and so is their directory)."""
    if keep_days < 1:
        raise ValueError("keep_days must be at least 1")
    path = Path(root)
    now = time.time() * 1000 if now_ms is None else now_ms
    first_kept = int(now // DAY_MS) - keep_days
    report = Report()
    with maintenance(path):
        store = Store(path)
        store.open()
        report.deleted += store.collect()
        manifest = store.manifest
        catalog = Catalog(path)
        drop: list[Path] = []
        for _, _, day, date_dir in partitions(path):
            n = _day(day)
            if n is None or n >= first_kept:
                continue
            report.partitions += 1
            for f in sorted(date_dir.glob("*.parquet")):
                c = commit_of(f.name)
                if c is not None and (c > manifest.commit or relative(path, f) in manifest.gone):
                    continue  # a commit in flight (late records for that day): next run
                if c is None:
                    report.skipped[str(f)] = "not written by the marketbus archiver: kept"
                    catalog.report(f, report.skipped[str(f)])
                    continue
                drop.append(f)
        if drop:
            if store.swap([], drop) is None:
                report.raced += 1  # a compaction of one of them, a moment ago: next run
            else:
                report.files_in = len(drop)
                time.sleep(grace_s)
                report.deleted += store.collect()
    log.info("archive_pruned", dir=str(path), keep_days=keep_days, **_summary(report))
    return report


async def maintain(
    root: Path,
    *,
    keep_days: int | None,
    compact_days: bool,
    every_s: float = 3600.0,
    grace_s: float = 30.0,
    zstd_level: int = 3,
    row_group_rows: int = 65_536,
) -> None:
    """Retention and compaction from a running archiver (``[archive] keep_days``,
    ``compact``), at start and every ``every_s``, in a thread, until cancelled. Several
    archivers may run it: one at a time works (the maintenance lock), the others skip."""
    stop = threading.Event()

    def once() -> None:
        if keep_days is not None:
            prune(root, keep_days, grace_s=grace_s)
        if compact_days and not stop.is_set():
            compact(
                root, grace_s=grace_s, zstd_level=zstd_level, row_group_rows=row_group_rows,
                stop=stop,
            )  # fmt: skip

    try:
        while True:
            try:
                await asyncio.to_thread(once)
            except MaintenanceBusyError:
                pass  # another archiver's turn
            except Exception as e:  # a disk error: the archiver's own commits say more
                log.warning("archive_maintenance_failed", error=f"{type(e).__name__}: {e}"[:300])
            await asyncio.sleep(every_s)
    finally:
        stop.set()


def _summary(r: Report) -> dict[str, Any]:
    return {
        "partitions": r.partitions, "files_in": r.files_in, "files_out": r.files_out,
        "rows": r.rows, "bytes_in": r.bytes_in, "bytes_out": r.bytes_out,
        "deleted": r.deleted, "raced": r.raced, "skipped": len(r.skipped),
    }  # fmt: skip
