"""An archive read back for replay: time slices in one fixed order, memory bounded.

- The row groups of the selected channels, exchanges and dates are indexed once (their
  ``ts_ms`` statistics and row counts, from the footers): a slice ``[a, b)`` reads only the
  row groups that overlap it, and its end ``b`` is chosen so that it holds about
  ``slice_rows`` rows (rows assumed spread evenly within a row group). A row group is
  decoded once and kept while it spans later slices (a compacted day, sorted by symbol, has
  row groups covering hours of one symbol): memory holds the slice and the row groups
  crossing its end, never a 10M-row day.
- **Order**: by ``ts_ms`` (exchange time), then entry id, then exchange, symbol and channel:
  a total order, so the same archive and range always replay the same records in the same
  order, across markets and channels. An entry id found twice for one stream (two files
  holding one entry) is replayed once.
- **Entry ids are kept**: each record is written with the id Redis gave it live, so a
  consumer of the replay can compare with the archive, and the ring buffers' ``entry_ms``
  is the original. Redis needs rising ids per stream; a record whose exchange time orders it
  after a record that arrived later (its id is not above the last one given to its stream)
  gets the smallest id Redis takes next (the last id's ms, seq + 1), counted as
  ``renumbered``: rare, since a stream's exchange times rise with its arrival order.
- Files the catalog refuses (truncated, foreign, another schema) are reported by name and
  left out (:class:`consumers.archive_catalog.Catalog`); so is a file whose pages fail to read.

Synchronous: :class:`archive.replay.Replay` calls it from a thread.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from consumers.archive_catalog import Catalog
from consumers.archive_layout import DAY_MS, date_of, day_of, file_schema
from marketbus.models import Channel

Market = tuple[str, str]  # exchange, symbol
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Selection:
    """What to replay: ``start_ms <= ts_ms < end_ms``; None: every channel / market found."""

    start_ms: int
    end_ms: int
    channels: tuple[Channel, ...] | None = None
    markets: frozenset[Market] | None = None


@dataclass
class Part:
    """One channel and exchange of a slice: its rows in replay order, with their ids."""

    channel: Channel
    exchange: str
    table: pa.Table  # the archive's file schema
    ms: I64
    seq: I64


@dataclass
class Slice:
    start_ms: int
    end_ms: int
    parts: list[Part]
    which: npt.NDArray[np.int32]  # the part of each row, in replay order
    ts_ms: I64  # in replay order

    @property
    def rows(self) -> int:
        return len(self.which)


@dataclass
class _RowGroups:
    """The row groups of one channel and exchange in the range (from the files' footers)."""

    channel: Channel
    exchange: str
    files: list[Path]
    file: npt.NDArray[np.int32]  # per row group: its file
    group: npt.NDArray[np.int32]  # per row group: its number in the file
    lo: I64  # smallest ts_ms
    hi: I64  # largest ts_ms
    rows: I64
    bad: set[int] = field(default_factory=set)  # files whose data failed to read
    cache: dict[int, pa.Table] = field(default_factory=dict)  # decoded, still needed


@dataclass
class SourceStats:
    slices: int = 0
    rows: int = 0
    renumbered: int = 0
    duplicates: int = 0
    max_slice_rows: int = 0


class ArchiveSource:
    """Slices of an archive in replay order (see the module docstring)."""

    def __init__(self, root: str | Path, selection: Selection, slice_rows: int = 100_000) -> None:
        if selection.start_ms >= selection.end_ms:
            raise ValueError("start must be before end")
        self.root = Path(root)
        self.selection = selection
        self.slice_rows = max(1, slice_rows)
        self.catalog = Catalog(self.root)
        self.stats = SourceStats()
        self._groups: list[_RowGroups] | None = None
        self._cursor = selection.start_ms
        self._last: dict[tuple[str, str, Channel], tuple[int, int]] = {}  # stream -> last id

    @property
    def skipped(self) -> dict[str, str]:
        """Files left out (path -> why)."""
        return dict(self.catalog.skipped)

    def index(self) -> int:
        """Read the footers of the files in range; the number of rows they hold in range
        (estimated; 0: nothing to replay). Called by :meth:`next_slice` when needed."""
        if self._groups is None:
            self._groups = [g for g in map(self._row_groups, self._targets()) if len(g.rows)]
        return int(self._estimate(self.selection.start_ms, self.selection.end_ms))

    def channels(self) -> list[Channel]:
        """The channels replayed: those asked for, or every known channel with a directory."""
        if self.selection.channels is not None:
            return list(self.selection.channels)
        known = {c.value: c for c in Channel}
        return [known[c] for c in self.catalog.channels() if c in known]

    def _targets(self) -> list[tuple[Channel, str]]:
        wanted = self.selection.markets
        out = []
        for ch in self.channels():
            base = self.root / f"channel={ch.value}"
            for d in sorted(base.glob("exchange=*")):
                exchange = d.name.partition("=")[2]
                if wanted is None or any(ex == exchange for ex, _ in wanted):
                    out.append((ch, exchange))
        return out

    def _row_groups(self, target: tuple[Channel, str]) -> _RowGroups:
        ch, exchange = target
        sel = self.selection
        files = self.catalog.files(
            ch.value, exchange, date_of(sel.start_ms), date_of(sel.end_ms - 1)
        )
        kept: list[Path] = []
        file_ix: list[int] = []
        group: list[int] = []
        lo: list[int] = []
        hi: list[int] = []
        rows: list[int] = []
        for path in files:
            try:
                groups = _footer_ranges(path)
            except (OSError, pa.ArrowException, ValueError) as e:
                self.catalog.forget(path, f"footer unreadable: {str(e)[:200]}")
                continue
            n = len(kept)
            kept.append(path)
            for k, (a, b, r) in enumerate(groups):
                if r and a < sel.end_ms and b >= sel.start_ms:
                    file_ix.append(n)
                    group.append(k)
                    lo.append(a)
                    hi.append(b)
                    rows.append(r)
        return _RowGroups(
            ch, exchange, kept, np.array(file_ix, dtype=np.int32),
            np.array(group, dtype=np.int32), np.array(lo, dtype=np.int64), np.array(hi, dtype=np.int64),
            np.array(rows, dtype=np.int64),
        )  # fmt: skip

    def _live(self, g: _RowGroups) -> npt.NDArray[np.bool_]:
        if not g.bad:
            return np.ones(len(g.rows), dtype=bool)
        return ~np.isin(g.file, list(g.bad))

    def _estimate(self, a: int, b: int) -> float:
        """Rows of the row groups overlapping ``[a, b)``, each counted by the overlap's share
        of its time span."""
        total = 0.0
        for g in self._groups or ():
            span = (g.hi + 1 - g.lo).astype(np.float64)
            overlap = np.clip(np.minimum(b, g.hi + 1) - np.maximum(a, g.lo), 0, None)
            total += float((g.rows * (overlap / span) * self._live(g)).sum())
        return total

    def _first_at_or_after(self, a: int) -> int | None:
        """The earliest time >= ``a`` some row group still covers."""
        best: int | None = None
        for g in self._groups or ():
            ahead = (g.hi >= a) & self._live(g)
            if ahead.any():
                t = max(a, int(g.lo[ahead].min()))
                best = t if best is None else min(best, t)
        return best

    def _slice_end(self, a: int) -> int:
        end = self.selection.end_ms
        if self._estimate(a, end) <= self.slice_rows:
            return end
        lo, hi = a + 1, end  # the largest b with estimate(a, b) <= slice_rows, at least a + 1
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self._estimate(a, mid) <= self.slice_rows:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def next_slice(self) -> Slice | None:
        """The next slice in replay order (possibly with no rows), or None at the end."""
        self.index()
        a = self._first_at_or_after(self._cursor)
        if a is None or a >= self.selection.end_ms:
            self._cursor = self.selection.end_ms
            return None
        b = self._slice_end(a)
        self._cursor = b
        parts = [p for g in self._groups or () if (p := self._read(g, a, b)) is not None]
        out = self._order(a, b, parts)
        self.stats.slices += 1
        self.stats.rows += out.rows
        self.stats.max_slice_rows = max(self.stats.max_slice_rows, out.rows)
        return out

    def _read(self, g: _RowGroups, a: int, b: int) -> tuple[_RowGroups, pa.Table] | None:
        """The rows of ``[a, b)`` in ``g``: from the row groups overlapping it, each decoded
        once and kept while later slices still need it (its time span goes past ``b``)."""
        hit = (g.lo < b) & (g.hi >= a) & self._live(g)
        pieces = []
        for j in np.flatnonzero(hit).tolist():
            table = self._row_group(g, j)
            if table is None:
                continue
            ts = table.column("ts_ms")
            pieces.append(table.filter(pc.and_(pc.greater_equal(ts, a), pc.less(ts, b))))
            if g.hi[j] < b:  # no later slice needs it
                g.cache.pop(j, None)
        rows = [p for p in pieces if p.num_rows]
        return (g, pa.concat_tables(rows) if len(rows) > 1 else rows[0]) if rows else None

    def _row_group(self, g: _RowGroups, j: int) -> pa.Table | None:
        """Row group ``j`` of ``g`` (only the markets asked for), or None if its file's data
        does not read: then the file is reported by name and left out from now on."""
        table = g.cache.get(j)
        if table is not None:
            return table
        i = int(g.file[j])
        path = g.files[i]
        schema = file_schema(g.channel)
        try:
            table = pq.ParquetFile(path).read_row_group(int(g.group[j]))
            if not table.schema.equals(schema):
                table = table.select(schema.names).cast(schema)
        except (OSError, pa.ArrowException, KeyError, ValueError) as e:
            g.bad.add(i)
            for k in [k for k in g.cache if int(g.file[k]) == i]:
                del g.cache[k]
            self.catalog.forget(path, f"data unreadable: {str(e)[:200]}")
            return None
        wanted = self.selection.markets
        if wanted is not None:
            symbols = pa.array(sorted(s for ex, s in wanted if ex == g.exchange), pa.string())
            table = table.filter(pc.is_in(table.column("symbol"), value_set=symbols))
        g.cache[j] = table
        return table

    def _order(self, a: int, b: int, parts: list[tuple[_RowGroups, pa.Table]]) -> Slice:
        if not parts:
            empty = np.zeros(0, dtype=np.int64)
            return Slice(a, b, [], np.zeros(0, dtype=np.int32), empty)
        streams: list[tuple[str, str, Channel]] = []
        local: list[npt.NDArray[np.int64]] = []
        for g, table in parts:
            enc = pc.dictionary_encode(table.column("symbol")).combine_chunks()
            base = len(streams)
            streams += [(g.exchange, s, g.channel) for s in enc.dictionary.to_pylist()]
            local.append(enc.indices.to_numpy().astype(np.int64) + base)
        # rank of each stream by (exchange, symbol, channel): the last tie-break
        by_name = sorted(range(len(streams)), key=streams.__getitem__)
        rank_of = np.empty(len(streams), dtype=np.int64)
        rank_of[by_name] = np.arange(len(streams))
        stream = np.concatenate(local)
        rank = rank_of[stream]
        ts = _cat(t.column("ts_ms") for _, t in parts)
        ms = _cat(t.column("entry_ms") for _, t in parts)
        seq = _cat(t.column("entry_seq") for _, t in parts)
        which = np.concatenate(
            [np.full(t.num_rows, i, dtype=np.int32) for i, (_, t) in enumerate(parts)]
        )
        order = np.lexsort((rank, seq, ms, ts))
        order = self._drop_repeats(order, ts, ms, seq, rank)
        out_ms, out_seq = ms[order], seq[order]
        self._renumber(stream[order], out_ms, out_seq, streams)
        which = which[order]
        offsets = np.cumsum([0] + [t.num_rows for _, t in parts])
        out_parts = []
        for i, (g, table) in enumerate(parts):
            mine = which == i
            rows = order[mine] - offsets[i]
            out_parts.append(
                Part(g.channel, g.exchange, table.take(rows), out_ms[mine], out_seq[mine])
            )
        return Slice(a, b, out_parts, which, ts[order])

    def _drop_repeats(self, order: I64, *keys: I64) -> I64:
        """``order`` without an entry's second copy (equal in every key: neighbours)."""
        if len(order) < 2:
            return order
        same = np.ones(len(order) - 1, dtype=bool)
        for k in keys:
            s = k[order]
            same &= s[1:] == s[:-1]
        if not same.any():
            return order
        self.stats.duplicates += int(same.sum())
        kept: I64 = order[np.concatenate([[True], ~same])]
        return kept

    def _renumber(
        self, stream: I64, ms: I64, seq: I64, streams: list[tuple[str, str, Channel]]
    ) -> None:
        """Make each stream's ids rise (in place), continuing from its last id so far."""
        by = np.argsort(stream, kind="stable")
        s, m, q = stream[by], ms[by], seq[by]
        first = np.concatenate([[True], s[1:] != s[:-1]])
        prev_m = np.concatenate([[0], m[:-1]])
        prev_q = np.concatenate([[0], q[:-1]])
        for i in np.flatnonzero(first).tolist():  # a stream's first row: its last id so far
            prev_m[i], prev_q[i] = self._last.get(streams[s[i]], (0, 0))
        rising = (m > prev_m) | ((m == prev_m) & (q > prev_q))
        if not rising.all():
            last = (0, 0)
            for j in range(len(by)):  # rare: only when some stream's ids fall back
                if first[j]:
                    last = self._last.get(streams[s[j]], (0, 0))
                cur = (int(m[j]), int(q[j]))
                if cur <= last:
                    cur = (last[0], last[1] + 1)
                    ms[by[j]], seq[by[j]] = cur
                    self.stats.renumbered += 1
                last = cur
        ends = np.concatenate([s[1:] != s[:-1], [True]])
        for j in np.flatnonzero(ends).tolist():
            k = by[j]
            self._last[streams[s[j]]] = (int(ms[k]), int(seq[k]))


def _cat(columns: Any) -> I64:
    out: I64 = np.concatenate([c.to_numpy() for c in columns]).astype(np.int64, copy=False)
    return out


def _footer_ranges(path: Path) -> list[tuple[int, int, int]]:
    """``(min ts_ms, max ts_ms, rows)`` of each row group of a file; a row group without
    statistics spans its partition's day."""
    meta = pq.read_metadata(path)
    col = next(i for i in range(meta.num_columns) if meta.schema.column(i).path == "ts_ms")
    out = []
    for r in range(meta.num_row_groups):
        rg = meta.row_group(r)
        stats = rg.column(col).statistics
        if stats is not None and stats.has_min_max:
            out.append((int(stats.min), int(stats.max), rg.num_rows))
        else:
            day = day_of(path.parent.name.partition("=")[2]) * DAY_MS
            out.append((day, day + DAY_MS - 1, rg.num_rows))
    return out
