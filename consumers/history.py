"""Reading the archive back: one market's records of a time range, and candles from trades.

::

    h = History("/data/archive")
    trades = h.read("binance", "BTC/USDT", "trades", start_ms, end_ms)   # pyarrow.Table
    m1 = h.candles("binance", "BTC/USDT", "1m", start_ms, end_ms)

A read lists only the directories of its channel, exchange and dates (partition pruning),
then scans their files with a filter on ``symbol`` and ``ts_ms`` that Parquet's row-group
statistics answer (files are sorted by symbol, then time), so one symbol and hour is read
without a scan of the day. Rows come back ordered by ``ts_ms`` then entry id, each entry id
once. Bad files are reported by name and skipped (:mod:`consumers.archive_catalog`). A file
listed but deleted before it is read (compacted or pruned meanwhile) makes the read list the
partitions again and start over.

:meth:`History.read_ids` reads by entry id instead (what a consumer fills a trimmed range
with): the same pruning, on the ``entry_ms`` column, whose row-group statistics are as tight
as ``ts_ms``'s (the Redis time of an entry follows its exchange time).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from consumers.archive_catalog import Catalog
from consumers.archive_layout import DAY_MS, date_of, file_schema, result_schema
from consumers.candles import CANDLE_SCHEMA, CandleBuilder, interval_ms
from consumers.consumer_parts import id_tuple
from marketbus.errors import ConfigError
from marketbus.models import Channel
from marketbus.symbols import normalize_symbol

_RELISTS = 5  # listings whose files vanished before a read gives up (a clear error)


class _Vanished(Exception):
    """A listed file was deleted before it was read: the listing is stale."""


class History:
    """Time-range reads over an archive directory written by :class:`archive.Archiver`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.catalog = Catalog(self.path)

    @property
    def skipped(self) -> dict[str, str]:
        """Files left out so far (path -> why): truncated, foreign, unreadable."""
        return dict(self.catalog.skipped)

    def read(
        self,
        exchange: str,
        symbol: str,
        channel: Channel | str,
        start_ms: int,
        end_ms: int,
    ) -> pa.Table:
        """Records of one market and channel with ``start_ms <= ts_ms < end_ms`` (exchange
        time), ordered by ``ts_ms`` then entry id, each entry once. Columns:
        :func:`consumers.archive_layout.result_schema` (the ring buffer's, plus ``exchange``,
        ``symbol``, ``entry_id``, ``entry_seq`` and, for books, ``bids``/``asks``)."""
        ch = _channel(channel)
        sym = normalize_symbol(symbol)
        if start_ms >= end_ms:
            return result_schema(ch).empty_table()
        dates = (date_of(start_ms), date_of(end_ms - 1))
        ts = pc.field("ts_ms")
        condition = (pc.field("symbol") == sym) & (ts >= start_ms) & (ts < end_ms)
        table = self._scan(ch, exchange, dates, condition)
        return _finish(ch, exchange, table)

    def read_ids(
        self,
        exchange: str,
        symbol: str,
        channel: Channel | str,
        after_id: str,
        before_id: str | None = None,
    ) -> pa.Table:
        """Records of one market and channel whose Redis entry id is after ``after_id`` and
        before ``before_id`` (both excluded; None: no upper bound), ordered by entry id, each
        once. Columns as :meth:`read`.

        Partitions are by exchange time, so the dates listed are those of the id range
        widened by a day on each side: a record whose exchange time is more than a day away
        from the time Redis wrote it is not found here."""
        ch = _channel(channel)
        sym = normalize_symbol(symbol)
        lo = id_tuple(after_id)
        hi = None if before_id is None else id_tuple(before_id)
        if hi is not None and hi <= lo:
            return result_schema(ch).empty_table()
        first = date_of(max(lo[0] - DAY_MS, 0))
        last = None if hi is None else date_of(hi[0] + DAY_MS)
        ms_field = pc.field("entry_ms")
        condition = (pc.field("symbol") == sym) & (ms_field >= lo[0])
        if hi is not None:
            condition = condition & (ms_field <= hi[0])
        table = self._scan(ch, exchange, (first, last), condition)
        if table.num_rows:
            ms = table.column("entry_ms").to_numpy()
            seq = table.column("entry_seq").to_numpy()
            keep = (ms > lo[0]) | ((ms == lo[0]) & (seq > lo[1]))
            if hi is not None:
                keep &= (ms < hi[0]) | ((ms == hi[0]) & (seq < hi[1]))
            table = table.filter(pa.array(keep))
        return _finish(ch, exchange, table, by_id=True)

    def _scan(
        self,
        ch: Channel,
        exchange: str,
        dates: tuple[str | None, str | None],
        condition: ds.Expression,
    ) -> pa.Table:
        """The matching rows of the usable files of ``dates`` (listed here).

        A listed file deleted before it is read (compaction replaced it, or retention
        dropped it, and its grace period ran out meanwhile) means the listing is stale:
        everything read is dropped and the partitions listed again, which finds the
        compacted file instead (or the day gone): never a day twice, nor not at all."""
        for _ in range(_RELISTS):
            files = self.catalog.files(ch.value, exchange, *dates)
            try:
                return self._read_files(ch, files, condition)
            except _Vanished:
                continue
        raise FileNotFoundError(
            f"the files of {ch.value}/{exchange} {dates[0]}..{dates[1]} in {self.path} were "
            f"replaced while being read, {_RELISTS} times in a row (compactions running "
            "with no grace period?)"
        )

    def _read_files(self, ch: Channel, files: list[Path], condition: ds.Expression) -> pa.Table:
        """The matching rows of ``files``; a file whose data fails to read (a valid footer
        over damaged pages) is reported, left out from now on, and the rest read file by
        file. :class:`_Vanished` when one of them is no longer there."""
        schema = file_schema(ch)
        if not files:
            return schema.empty_table()
        try:
            return _dataset(files, schema).to_table(filter=condition)
        except (OSError, pa.ArrowException):
            pass
        parts = []
        for f in files:
            try:
                parts.append(_dataset([f], schema).to_table(filter=condition))
            except (OSError, pa.ArrowException) as e:
                if not f.exists():
                    raise _Vanished(f) from e
                self.catalog.forget(f, f"data unreadable: {str(e)[:200]}")
        return pa.concat_tables(parts) if parts else schema.empty_table()

    def candles(
        self,
        exchange: str,
        symbol: str,
        interval: str,
        start_ms: int,
        end_ms: int,
    ) -> pa.Table:
        """OHLCV candles of ``interval`` from archived trades: those starting in
        ``[start_ms rounded down to the interval, end_ms)``, built from every trade of those
        intervals (the last one may still be growing if the archive is at the live edge).

        The consumer's own builder (:class:`consumers.candles.CandleBuilder`) makes them,
        fed in arrival (entry id) order, so the rules are the live ones: a candle is opened
        by its first trade, closed by a trade of a later interval, a trade arriving after
        its candle closed is late and left out, quiet intervals are not invented. Only the
        wall-clock close (``GRACE_MS`` after an interval with no newer trade) has no
        counterpart: history knows when trades stop; and a trade arriving after one two or
        more intervals past the range's end is not seen as late. Columns: ``CANDLE_SCHEMA``."""
        width = interval_ms(interval)
        if start_ms >= end_ms:
            return CANDLE_SCHEMA.empty_table()
        first = start_ms - start_ms % width
        # the last candle's trades to its end, and the next interval's: a trade there that
        # arrived before a late one closed the candle for it, live (candles past end dropped)
        last = end_ms + (-end_ms) % width + width
        trades = self.read(exchange, symbol, Channel.TRADES, first, last)
        if trades.num_rows == 0:
            return CANDLE_SCHEMA.empty_table()
        # arrival order: the entry id; a row from REST (backfill, entry_ms 0) has none and
        # takes its exchange time, so a filled gap sits between the live rows around it
        ts_all = trades.column("ts_ms").to_numpy()
        entry_ms = trades.column("entry_ms").to_numpy()
        seq = trades.column("entry_seq").to_numpy()
        arrival = np.lexsort((seq, np.where(entry_ms > 0, entry_ms, ts_all)))
        ts = ts_all[arrival].tolist()
        price = trades.column("price").to_numpy()[arrival].tolist()
        amount = trades.column("amount").to_numpy()[arrival].tolist()
        builder = CandleBuilder([interval], keep=(last - first) // width + 1, grace_ms=0)
        builder.add_trades(zip(ts, price, amount, strict=True))
        table = builder.table(interval, include_open=True)
        return table.filter(pc.field("start_ms") < end_ms)


def _channel(channel: Channel | str) -> Channel:
    try:
        return Channel(channel)
    except ValueError:
        known = ", ".join(c.value for c in Channel)
        raise ConfigError(f"unknown channel {channel!r} (use {known})") from None


def _dataset(files: list[Path], schema: pa.Schema) -> ds.Dataset:
    return ds.dataset([str(f) for f in files], schema=schema, format="parquet")


def _finish(ch: Channel, exchange: str, table: pa.Table, *, by_id: bool = False) -> pa.Table:
    """Ordered by (ts_ms, entry id), or by entry id alone, duplicates of an entry id dropped,
    the result columns."""
    if table.num_rows == 0:
        return result_schema(ch).empty_table()
    keys = [("entry_ms", "ascending"), ("entry_seq", "ascending")]
    order = pc.sort_indices(table, keys if by_id else [("ts_ms", "ascending"), *keys])
    table = table.take(order)
    ms = table.column("entry_ms").to_numpy()
    seq = table.column("entry_seq").to_numpy()
    if len(ms) > 1:  # one entry's copies share ts_ms too, so they are neighbours now
        repeat = (ms[1:] == ms[:-1]) & (seq[1:] == seq[:-1])
        if repeat.any():
            table = table.filter(pa.array(np.concatenate([[True], ~repeat])))
    entry_id = pc.binary_join_element_wise(
        pc.cast(table.column("entry_ms"), pa.string()),
        pc.cast(table.column("entry_seq"), pa.string()),
        "-",
    )
    n = table.num_rows
    cols = {
        "exchange": pa.repeat(pa.scalar(exchange, pa.string()), n),
        "entry_id": entry_id,
        **{name: table.column(name) for name in table.column_names},
    }
    schema = result_schema(ch)
    return pa.table([cols[f.name] for f in schema], schema=schema)
